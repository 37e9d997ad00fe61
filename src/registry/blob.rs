//! Blob transfers: uploads (monolithic, chunked, or mounted from another
//! repository) and downloads into a layout through a temporary file that is
//! renamed only once digest and size match.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use indicatif::ProgressBar;
use ureq::http::{Method, Response};

use super::transport::{query_escape, Body, Req};
use super::{Client, Error, Repository, Result};
use crate::digest::{Digest, HashingWriter};
use crate::oci::{Layout, MAX_JSON_BLOB};
use crate::progress::CopyError;

impl Client {
    /// Uploads the blob at `path` (digest and size already verified):
    /// POST to open an upload session, then one PUT with the whole blob, or
    /// PATCHes of `chunk_size` bytes with Content-Range and a closing PUT
    /// when the blob is above `chunk_threshold`.
    pub fn upload_blob(
        &self,
        repo: &Repository,
        path: &Path,
        digest: &Digest,
        size: u64,
        kind: &str,
    ) -> Result<()> {
        self.upload_blob_mounting(repo, path, digest, size, kind, None)
    }

    pub(super) fn upload_blob_mounting(
        &self,
        repo: &Repository,
        path: &Path,
        digest: &Digest,
        size: u64,
        kind: &str,
        mount_from: Option<&str>,
    ) -> Result<()> {
        let label = format!("{kind} {digest}");
        let mount = mount_from.filter(|from| *from != repo.name);
        let mut url = format!("{}/blobs/uploads/", self.repo_url(repo)?);
        if let Some(from) = mount {
            url.push_str(&format!("?mount={digest}&from={}", query_escape(from)));
        }
        let resp = self.execute(Req {
            method: Method::POST,
            url,
            repo,
            push: true,
            mount_from: mount,
            headers: Vec::new(),
            body: Body::Bytes(&[]),
            what: format!("starting the upload of {label}"),
        })?;
        // 201: mounted from the other repository; 202: a session to upload to.
        if mount.is_some() && resp.status() == 201 {
            return Ok(());
        }
        if resp.status() != 202 {
            return Err(self.status_error(
                repo,
                &format!("POST to start the upload of {label}"),
                resp,
            ));
        }
        let location = self.location(repo, &resp, &label)?;
        let bar = self.bar(&format!("pushing {kind} {}", &digest.hex()[..12]), size);
        let result = self.send_blob(repo, path, digest, size, &label, location, &bar);
        match &result {
            Ok(()) => bar.finish_and_clear(),
            Err(_) => bar.abandon(),
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn send_blob(
        &self,
        repo: &Repository,
        path: &Path,
        digest: &Digest,
        size: u64,
        label: &str,
        mut location: String,
        bar: &ProgressBar,
    ) -> Result<()> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            error: source,
        };
        let mut file = File::open(path).map_err(io)?;
        let chunked = size > self.options.chunk_threshold;
        let chunk_size = self.options.chunk_size.max(1);
        let mut buf = Vec::new();
        if chunked {
            let mut offset = 0u64;
            while offset < size {
                let n = chunk_size.min(size - offset);
                buf.clear();
                (&mut file).take(n).read_to_end(&mut buf).map_err(io)?;
                if buf.len() as u64 != n {
                    return Err(io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "file ends at {} bytes, expected {size}",
                            offset + buf.len() as u64
                        ),
                    )));
                }
                let range = format!("{offset}-{}", offset + n - 1);
                let resp = self.execute(Req {
                    method: Method::PATCH,
                    url: location.clone(),
                    repo,
                    push: true,
                    mount_from: None,
                    headers: vec![
                        ("Content-Type", "application/octet-stream".into()),
                        ("Content-Range", range.clone()),
                    ],
                    body: Body::Bytes(&buf),
                    what: format!("uploading bytes {range} of {label} (PATCH)"),
                })?;
                if resp.status() != 202 {
                    return Err(self.status_error(
                        repo,
                        &format!("PATCH of bytes {range} of {label}"),
                        resp,
                    ));
                }
                location = self.location(repo, &resp, label)?;
                offset += n;
                bar.inc(n);
            }
            buf.clear();
        } else {
            file.read_to_end(&mut buf).map_err(io)?;
            if buf.len() as u64 != size {
                return Err(io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("file has {} bytes, expected {size}", buf.len()),
                )));
            }
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        let resp = self.execute(Req {
            method: Method::PUT,
            url: format!("{location}{sep}digest={digest}"),
            repo,
            push: true,
            mount_from: None,
            headers: vec![("Content-Type", "application/octet-stream".into())],
            body: Body::Bytes(&buf),
            what: format!("uploading {label} (PUT)"),
        })?;
        if resp.status() != 201 {
            return Err(self.status_error(
                repo,
                &format!("PUT completing the upload of {label}"),
                resp,
            ));
        }
        if !chunked {
            bar.inc(size);
        }
        Ok(())
    }

    /// Downloads a blob into the layout: a temporary file next to the
    /// blobs, renamed to its digest only after digest and size match.
    pub(super) fn download_blob(
        &self,
        repo: &Repository,
        layout: &Layout,
        digest: &Digest,
        size: u64,
        kind: &str,
    ) -> Result<()> {
        let what = format!("{kind} {digest} of {repo}");
        let resp = self.get_blob(repo, digest)?;
        let dir = layout.blobs_dir();
        let io = |source| Error::Io {
            path: dir.clone(),
            error: source,
        };
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .permissions(fs::Permissions::from_mode(0o644))
            .tempfile_in(&dir)
            .map_err(io)?;
        let mut out = HashingWriter::new(tmp);
        let bar = self.bar(&format!("pulling {kind} {}", &digest.hex()[..12]), size);
        let mut reader = resp.into_body().into_reader().take(size + 1);
        crate::progress::copy(&mut reader, &mut out, &bar).map_err(|e| match e {
            CopyError::Read { error, .. } => Error::Connection {
                host: repo.registry.host.clone(),
                what: format!("downloading {what}"),
                detail: error.to_string(),
            },
            CopyError::Write(e) => io(e),
        })?;
        let (tmp, actual, actual_size) = out.finish();
        if actual_size != size {
            return Err(Error::SizeMismatch {
                host: repo.registry.host.clone(),
                what,
                expected: size,
                actual: actual_size,
            });
        }
        if actual != *digest {
            return Err(Error::DigestMismatch {
                host: repo.registry.host.clone(),
                what,
                expected: *digest,
                actual,
            });
        }
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(layout.blob_path(digest))
            .map_err(|e| io(e.error))?;
        crate::fsutil::sync_dir(&dir).map_err(io)
    }

    /// A small blob (a config) read into memory and verified.
    pub(super) fn get_blob_bytes(
        &self,
        repo: &Repository,
        digest: &Digest,
        size: u64,
    ) -> Result<Vec<u8>> {
        let what = format!("blob {digest} of {repo}");
        if size > MAX_JSON_BLOB {
            return Err(Error::Protocol {
                host: repo.registry.host.clone(),
                what,
                reason: format!("{size} bytes exceed the {MAX_JSON_BLOB} byte limit for JSON"),
            });
        }
        let resp = self.get_blob(repo, digest)?;
        let bytes = resp
            .into_body()
            .with_config()
            .limit(size + 1)
            .read_to_vec()
            .map_err(|e| self.transport(&repo.registry, &format!("reading {what}"), e))?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(Error::DigestMismatch {
                host: repo.registry.host.clone(),
                what,
                expected: *digest,
                actual,
            });
        }
        Ok(bytes)
    }

    fn get_blob(&self, repo: &Repository, digest: &Digest) -> Result<Response<ureq::Body>> {
        let resp = self.execute(Req {
            method: Method::GET,
            url: format!("{}/blobs/{digest}", self.repo_url(repo)?),
            repo,
            push: false,
            mount_from: None,
            headers: Vec::new(),
            body: Body::None,
            what: format!("fetching blob {digest} of {repo}"),
        })?;
        if resp.status() != 200 {
            return Err(self.status_error(repo, &format!("GET of blob {digest}"), resp));
        }
        Ok(resp)
    }
}
