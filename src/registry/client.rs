//! The HTTP side of the distribution spec: one ureq agent (rustls), auth
//! negotiated per registry and scope, and the blob and manifest operations
//! push and pull are made of.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use oci_spec::image::{Descriptor, DescriptorBuilder};
use ureq::http::{self, Method, Response};

use super::auth::{parse_challenge, Challenge, CredentialSource, TokenResponse};
use super::manifest::{self, Document};
use super::{Error, Reference, Registry, Repository, Result};
use crate::digest::{Digest, HashingWriter};
use crate::oci::{self, Layout, MAX_JSON_BLOB};

/// How a [`Client`] talks to registries.
#[derive(Debug, Clone)]
pub struct Options {
    pub credentials: CredentialSource,
    /// Allow plain HTTP to hosts that are not loopback addresses.
    pub insecure_http: bool,
    /// Blobs larger than this are uploaded in chunks.
    pub chunk_threshold: u64,
    /// Size of each PATCH of a chunked upload.
    pub chunk_size: u64,
    /// Connect timeout, and the longest wait for any response or read.
    pub timeout: Duration,
    /// Progress bars on stderr (hidden when it is not a terminal).
    pub progress: bool,
    /// PEM file of the CA certificates to trust for TLS instead of the
    /// Mozilla roots built into imgrep (a private registry's own CA).
    pub ca_file: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            credentials: CredentialSource::default(),
            insecure_http: false,
            chunk_threshold: 64 << 20,
            chunk_size: 16 << 20,
            timeout: Duration::from_secs(120),
            progress: false,
            ca_file: None,
        }
    }
}

/// A distribution-spec client. Auth headers (basic, or bearer tokens per
/// scope) are remembered across calls, so one challenge serves a whole push.
pub struct Client {
    agent: ureq::Agent,
    options: Options,
    auth: Mutex<HashMap<(String, String), String>>,
}

/// What a request sends.
enum Body<'a> {
    None,
    Bytes(&'a [u8]),
}

/// One request, described well enough to be retried after a challenge and
/// to name itself in errors.
struct Req<'a> {
    method: Method,
    url: String,
    repo: &'a Repository,
    push: bool,
    /// A repository the request also needs pull rights on (a mount's source).
    mount_from: Option<&'a str>,
    headers: Vec<(&'static str, String)>,
    body: Body<'a>,
    what: String,
}

impl Client {
    /// A client; fails only on an unreadable `ca_file`.
    pub fn new(options: Options) -> Result<Client> {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = &options.ca_file {
            tls = tls.root_certs(read_ca_file(path)?);
        }
        let config = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .timeout_connect(Some(options.timeout))
            .timeout_recv_response(Some(options.timeout))
            .timeout_per_read(Some(options.timeout))
            .timeout_per_write(Some(options.timeout))
            .max_redirects(10)
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .accept_encoding("identity")
            .user_agent(concat!("imgrep/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client {
            agent: config.into(),
            options,
            auth: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `repo` holds the blob `digest` (HEAD, no download).
    pub fn blob_exists(&self, repo: &Repository, digest: &Digest) -> Result<bool> {
        self.head_blob(repo, digest, false)
    }

    /// HEAD of a blob; `push` asks for push rights from the start, so one
    /// token serves the whole of a push.
    fn head_blob(&self, repo: &Repository, digest: &Digest, push: bool) -> Result<bool> {
        let url = format!("{}/blobs/{digest}", self.repo_url(repo)?);
        let resp = self.execute(Req {
            method: Method::HEAD,
            url,
            repo,
            push,
            mount_from: None,
            headers: Vec::new(),
            body: Body::None,
            what: format!("HEAD of blob {digest} in {repo}"),
        })?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.status_error(repo, &format!("HEAD of blob {digest}"), resp)),
        }
    }

    /// The manifest `reference` (a tag or a digest) of `repo`: its bytes as
    /// served, their digest (checked against `reference` when it is a
    /// digest, and against the registry's Docker-Content-Digest), and its
    /// media type.
    pub fn get_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<(Vec<u8>, Digest, String)> {
        let url = format!("{}/manifests/{reference}", self.repo_url(repo)?);
        let what = format!("manifest {repo}:{reference}");
        let resp = self.execute(Req {
            method: Method::GET,
            url,
            repo,
            push: false,
            mount_from: None,
            headers: vec![("Accept", manifest::MANIFEST_ACCEPT.to_owned())],
            body: Body::None,
            what: format!("fetching {what}"),
        })?;
        if resp.status() != 200 {
            return Err(self.status_error(repo, &format!("GET of {what}"), resp));
        }
        let content_type = header(&resp, "content-type");
        let served = header(&resp, "docker-content-digest").and_then(|d| d.parse::<Digest>().ok());
        let bytes = resp
            .into_body()
            .with_config()
            .limit(MAX_JSON_BLOB)
            .read_to_vec()
            .map_err(|e| self.transport(&repo.registry, &format!("reading {what}"), e))?;
        let digest = Digest::of(&bytes);
        let expected = reference.parse::<Digest>().ok().or(served);
        if let Some(expected) = expected.filter(|e| *e != digest) {
            return Err(Error::DigestMismatch {
                host: repo.registry.host.clone(),
                what,
                expected,
                actual: digest,
            });
        }
        let doc: Document = serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
            host: repo.registry.host.clone(),
            what: what.clone(),
            reason: format!("invalid JSON: {e}"),
        })?;
        let media_type =
            manifest::media_type(content_type.as_deref(), &doc).ok_or_else(|| Error::Protocol {
                host: repo.registry.host.clone(),
                what,
                reason: "neither the Content-Type nor the document names a manifest media type"
                    .into(),
            })?;
        Ok((bytes, digest, media_type))
    }

    /// Pushes the image `ref_name` of `layout` (every blob verified first)
    /// to `target`: each blob unless the registry has it, then the manifest
    /// under the target's tag (or digest). Returns the manifest digest, which
    /// the registry must confirm.
    pub fn push_image(
        &self,
        layout: &Layout,
        ref_name: &str,
        target: &Reference,
    ) -> Result<Digest> {
        self.push_image_mounting(layout, ref_name, target, None)
    }

    /// [`Client::push_image`], first asking the registry to mount each
    /// missing blob from the repository `mount_from` of the same registry
    /// (`POST .../uploads/?mount=DIGEST&from=REPO`), which costs no upload
    /// when that repository has it.
    pub fn push_image_mounting(
        &self,
        layout: &Layout,
        ref_name: &str,
        target: &Reference,
        mount_from: Option<&str>,
    ) -> Result<Digest> {
        let reference = target.manifest_reference().ok_or_else(|| Error::NoTag {
            reference: target.to_string(),
            action: "push to".into(),
        })?;
        let image = layout.read_image(ref_name, false)?;
        let repo = &target.repo;
        let mut blobs = vec![(
            image.config_digest,
            image.manifest.config().size(),
            "config",
        )];
        for l in image.manifest.layers() {
            let d = l
                .digest()
                .to_string()
                .parse::<Digest>()
                .map_err(|_| Error::Protocol {
                    host: repo.registry.host.clone(),
                    what: format!("layer of {ref_name}"),
                    reason: format!("unsupported digest {}", l.digest()),
                })?;
            blobs.push((d, l.size(), "layer"));
        }
        for (digest, size, kind) in blobs {
            if self.head_blob(repo, &digest, true)? {
                continue;
            }
            let path = layout.blob_path(&digest);
            self.upload_blob_mounting(repo, &path, &digest, size, kind, mount_from)?;
        }
        let manifest_path = layout.blob_path(&image.manifest_digest);
        let bytes = fs::read(&manifest_path).map_err(|source| Error::Io {
            path: manifest_path,
            source,
        })?;
        let media_type = serde_json::from_slice::<Document>(&bytes)
            .ok()
            .and_then(|d| d.media_type)
            .unwrap_or_else(|| manifest::OCI_MANIFEST.to_owned());
        self.put_manifest(repo, &reference, &bytes, &media_type)?;
        Ok(image.manifest_digest)
    }

    /// Pulls `source` into `layout` and points `ref_name` at it (see
    /// [`Client::fetch_image`]); the ref is set last. Returns the manifest
    /// digest.
    pub fn pull_image(
        &self,
        source: &Reference,
        layout: &Layout,
        ref_name: &str,
    ) -> Result<Digest> {
        oci::validate_ref_name(ref_name)?;
        let desc = self.fetch_image(source, layout)?;
        layout.set_ref(ref_name, &desc)?;
        Ok(desc
            .digest()
            .to_string()
            .parse()
            .expect("fetch_image made this digest"))
    }

    /// Fetches the image `source` names into `layout` without naming it in
    /// index.json (for a store that keeps images by input digest): the
    /// manifest (from an index, its linux/amd64 entry), then its config and
    /// layers, each written through a temporary file and renamed only once
    /// its digest and size match, the manifest last. Bytes are stored as
    /// served. Returns the manifest's descriptor.
    pub fn fetch_image(&self, source: &Reference, layout: &Layout) -> Result<Descriptor> {
        let reference = source.manifest_reference().ok_or_else(|| Error::NoTag {
            reference: source.to_string(),
            action: "pull".into(),
        })?;
        let repo = &source.repo;
        let host = || repo.registry.host.clone();
        let (mut bytes, mut digest, mut media_type) = self.get_manifest(repo, &reference)?;
        if manifest::is_index(&media_type) {
            let doc: Document = parse_doc(&bytes, repo, &reference)?;
            let entry = manifest::pick_platform(&doc).ok_or_else(|| Error::Protocol {
                host: host(),
                what: format!("index {repo}:{reference}"),
                reason: "no linux/amd64 manifest".into(),
            })?;
            let child = entry.digest.to_string();
            (bytes, digest, media_type) = self.get_manifest(repo, &child)?;
            if bytes.len() as u64 != entry.size {
                return Err(Error::SizeMismatch {
                    host: host(),
                    what: format!("manifest {repo}@{child}"),
                    expected: entry.size,
                    actual: bytes.len() as u64,
                });
            }
        }
        if !manifest::is_image(&media_type) {
            return Err(Error::Protocol {
                host: host(),
                what: format!("manifest {repo}:{reference}"),
                reason: format!(
                    "media type {media_type} is neither an OCI image manifest nor a Docker v2 schema 2 manifest"
                ),
            });
        }
        let doc = parse_doc(&bytes, repo, &reference)?;
        let config = doc.config.as_ref().ok_or_else(|| Error::Protocol {
            host: host(),
            what: format!("manifest {repo}@{digest}"),
            reason: "no config descriptor".into(),
        })?;
        if config.size > MAX_JSON_BLOB {
            return Err(Error::Protocol {
                host: host(),
                what: format!("manifest {repo}@{digest}"),
                reason: format!(
                    "config of {} bytes exceeds the {MAX_JSON_BLOB} byte limit",
                    config.size
                ),
            });
        }
        let blobs =
            std::iter::once((config, "config")).chain(doc.layers.iter().map(|l| (l, "layer")));
        for (desc, kind) in blobs {
            if has_blob(layout, &desc.digest, desc.size) {
                continue;
            }
            self.download_blob(repo, layout, &desc.digest, desc.size, kind)?;
        }
        let (stored, size) = layout.put_blob(&bytes)?;
        debug_assert_eq!(stored, digest);
        let desc = DescriptorBuilder::default()
            .media_type(oci_spec::image::MediaType::from(media_type.as_str()))
            .digest(
                digest
                    .to_string()
                    .parse::<oci_spec::image::Digest>()
                    .expect("a sha256 digest is a valid OCI digest"),
            )
            .size(size)
            .build()
            .expect("descriptor fields set");
        Ok(desc)
    }

    /// The manifest digest and the config's diff_ids of `repo:reference`,
    /// as `imgrep verify --registry` compares them with a signed statement.
    pub fn image_digests(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<crate::statement::ImageDigests> {
        let (bytes, digest, media_type) = self.get_manifest(repo, reference)?;
        let what = format!("manifest {repo}:{reference}");
        if !manifest::is_image(&media_type) {
            return Err(Error::Protocol {
                host: repo.registry.host.clone(),
                what,
                reason: format!("media type {media_type} is not an image manifest"),
            });
        }
        let doc = parse_doc(&bytes, repo, reference)?;
        let config = doc.config.ok_or_else(|| Error::Protocol {
            host: repo.registry.host.clone(),
            what: what.clone(),
            reason: "no config descriptor".into(),
        })?;
        let config_bytes = self.get_blob_bytes(repo, &config.digest, config.size)?;
        let parsed: manifest::Config =
            serde_json::from_slice(&config_bytes).map_err(|e| Error::Protocol {
                host: repo.registry.host.clone(),
                what: format!("config {} of {what}", config.digest),
                reason: format!("no readable rootfs.diff_ids: {e}"),
            })?;
        Ok(crate::statement::ImageDigests {
            manifest: digest,
            diff_ids: parsed.rootfs.diff_ids,
        })
    }

    /// PUTs a manifest under a tag or digest; the registry's
    /// Docker-Content-Digest, when sent, must be the digest of `bytes`.
    pub fn put_manifest(
        &self,
        repo: &Repository,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest> {
        let digest = Digest::of(bytes);
        let what = format!("PUT of manifest {repo}:{reference}");
        let resp = self.execute(Req {
            method: Method::PUT,
            url: format!("{}/manifests/{reference}", self.repo_url(repo)?),
            repo,
            push: true,
            mount_from: None,
            headers: vec![("Content-Type", media_type.to_owned())],
            body: Body::Bytes(bytes),
            what: format!("pushing manifest {repo}:{reference}"),
        })?;
        if resp.status() != 201 && resp.status() != 200 {
            return Err(self.status_error(repo, &what, resp));
        }
        if let Some(served) = header(&resp, "docker-content-digest") {
            if served != digest.to_string() {
                return Err(Error::Protocol {
                    host: repo.registry.host.clone(),
                    what: format!("answer to {what}"),
                    reason: format!("the registry stored digest {served}, imgrep sent {digest}"),
                });
            }
        }
        Ok(digest)
    }

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

    fn upload_blob_mounting(
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
            source,
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
    fn download_blob(
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
            source,
        };
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .permissions(fs::Permissions::from_mode(0o644))
            .tempfile_in(&dir)
            .map_err(io)?;
        let mut out = HashingWriter::new(tmp);
        let bar = self.bar(&format!("pulling {kind} {}", &digest.hex()[..12]), size);
        let mut reader = resp.into_body().into_reader().take(size + 1);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    bar.abandon();
                    return Err(Error::Connection {
                        host: repo.registry.host.clone(),
                        what: format!("downloading {what}"),
                        detail: e.to_string(),
                    });
                }
            };
            out.write_all(&buf[..n]).map_err(io)?;
            bar.inc(n as u64);
        }
        bar.finish_and_clear();
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
    fn get_blob_bytes(&self, repo: &Repository, digest: &Digest, size: u64) -> Result<Vec<u8>> {
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

    /// `SCHEME://HOST/v2/REPO`, refusing plain HTTP where it is not allowed.
    fn repo_url(&self, repo: &Repository) -> Result<String> {
        Ok(format!(
            "{}/v2/{}",
            self.base_url(&repo.registry)?,
            repo.name
        ))
    }

    fn base_url(&self, registry: &Registry) -> Result<String> {
        let plain = registry.plain_http || (!registry.scheme_given && self.options.insecure_http);
        if plain && !registry.is_loopback() && !self.options.insecure_http {
            return Err(Error::InsecureHttp {
                host: registry.host.clone(),
            });
        }
        let scheme = if plain { "http" } else { "https" };
        Ok(format!("{scheme}://{}", registry.host))
    }

    /// Sends a request with the remembered auth for its registry and scope;
    /// on 401 answers the challenge (basic credentials, or a bearer token
    /// from the realm) and sends it once more.
    fn execute(&self, req: Req<'_>) -> Result<Response<ureq::Body>> {
        let registry = &req.repo.registry;
        let mut scope = format!(
            "repository:{}:{}",
            req.repo.name,
            if req.push { "pull,push" } else { "pull" }
        );
        if let Some(from) = req.mount_from {
            scope.push_str(&format!(" repository:{from}:pull"));
        }
        let key = (registry.host.clone(), scope.clone());
        let mut answered = false;
        loop {
            let auth = self.remembered(&key);
            let resp = self.send(&req, auth.as_deref())?;
            if resp.status() != 401 {
                return Ok(resp);
            }
            let challenge = header(&resp, "www-authenticate").and_then(|h| parse_challenge(&h));
            let status = resp.status().as_u16();
            let detail = error_detail(resp);
            let credentials = self
                .options
                .credentials
                .lookup(&registry.host)
                .map_err(|credentials| Error::Credentials { credentials })?;
            let refused = |detail: String| match &credentials {
                Some(_) => Error::Refused {
                    host: registry.host.clone(),
                    repo: req.repo.name.clone(),
                    status,
                    detail,
                },
                None => Error::NoCredentials {
                    host: registry.host.clone(),
                    repo: req.repo.name.clone(),
                    status,
                    detail,
                },
            };
            if answered {
                return Err(refused(detail));
            }
            answered = true;
            let header_value = match challenge {
                Some(Challenge::Basic) => match &credentials {
                    Some(c) => c.basic_header(),
                    None => return Err(refused(detail)),
                },
                Some(Challenge::Bearer {
                    realm,
                    service,
                    scope: challenged,
                }) => {
                    // Ask for everything this operation needs (a push's
                    // HEAD is challenged for pull only), and what the
                    // registry named if that differs.
                    let mut scopes: Vec<&str> = scope.split(' ').collect();
                    if let Some(c) = challenged.as_deref().filter(|c| !scopes.contains(c)) {
                        scopes.push(c);
                    }
                    let token = self.token(
                        req.repo,
                        &realm,
                        service.as_deref(),
                        &scopes,
                        credentials.as_ref(),
                        status,
                    )?;
                    format!("Bearer {token}")
                }
                None => return Err(refused(detail)),
            };
            self.auth
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.clone(), header_value);
        }
    }

    /// The auth header for a registry and scope: the scope's own, or basic
    /// credentials learned for the registry under any scope.
    fn remembered(&self, key: &(String, String)) -> Option<String> {
        let map = self.auth.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).cloned().or_else(|| {
            map.iter()
                .find(|((host, _), v)| *host == key.0 && v.starts_with("Basic "))
                .map(|(_, v)| v.clone())
        })
    }

    /// Fetches a bearer token from `realm` (with basic credentials when there
    /// are any): `GET realm?service=...&scope=...` -> `{"token": ...}`.
    #[allow(clippy::too_many_arguments)]
    fn token(
        &self,
        repo: &Repository,
        realm: &str,
        service: Option<&str>,
        scopes: &[&str],
        credentials: Option<&super::Credentials>,
        status: u16,
    ) -> Result<String> {
        let host = repo.registry.host.clone();
        let mut url = realm.to_owned();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        let params = service
            .map(|s| ("service", s))
            .into_iter()
            .chain(scopes.iter().map(|s| ("scope", *s)));
        for (k, v) in params {
            url.push(sep);
            url.push_str(&format!("{k}={}", query_escape(v)));
            sep = '&';
        }
        let mut builder = http::Request::builder().method(Method::GET).uri(&url);
        if let Some(c) = credentials {
            builder = builder.header("Authorization", c.basic_header());
        }
        let request = builder.body(()).map_err(|e| Error::Protocol {
            host: host.clone(),
            what: format!("token realm {realm:?}"),
            reason: e.to_string(),
        })?;
        let what = format!("fetching a token for {repo} from {realm}");
        let resp = self
            .agent
            .run(request)
            .map_err(|e| self.transport(&repo.registry, &what, e))?;
        match resp.status().as_u16() {
            200 => {}
            401 | 403 => {
                let detail = format!("token service {realm}: {}", error_detail(resp));
                return Err(match credentials {
                    Some(_) => Error::Refused {
                        host,
                        repo: repo.name.clone(),
                        status,
                        detail,
                    },
                    None => Error::NoCredentials {
                        host,
                        repo: repo.name.clone(),
                        status,
                        detail,
                    },
                });
            }
            _ => return Err(self.status_error(repo, &what, resp)),
        }
        let bytes = resp
            .into_body()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| self.transport(&repo.registry, &what, e))?;
        serde_json::from_slice::<TokenResponse>(&bytes)
            .ok()
            .and_then(TokenResponse::into_token)
            .ok_or_else(|| Error::Protocol {
                host,
                what,
                reason: "the answer holds no `token` or `access_token`".into(),
            })
    }

    fn send(&self, req: &Req<'_>, auth: Option<&str>) -> Result<Response<ureq::Body>> {
        let mut builder = http::Request::builder()
            .method(req.method.clone())
            .uri(&req.url);
        for (k, v) in &req.headers {
            builder = builder.header(*k, v);
        }
        if let Some(a) = auth {
            builder = builder.header("Authorization", a);
        }
        let bad = |e: http::Error| Error::Protocol {
            host: req.repo.registry.host.clone(),
            what: format!("request URL {:?}", req.url),
            reason: e.to_string(),
        };
        let result = match req.body {
            Body::None => self.agent.run(builder.body(()).map_err(bad)?),
            Body::Bytes(b) => self.agent.run(builder.body(b).map_err(bad)?),
        };
        result.map_err(|e| self.transport(&req.repo.registry, &req.what, e))
    }

    /// A transport failure: the registry could not be reached at all, or
    /// the connection broke during `what`.
    fn transport(&self, registry: &Registry, what: &str, e: ureq::Error) -> Error {
        let host = registry.host.clone();
        let unreachable = match &e {
            ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => true,
            ureq::Error::Io(io) => matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::AddrNotAvailable
            ),
            _ => false,
        };
        // rustls reports a failed handshake (an untrusted certificate, say)
        // as an InvalidData I/O error.
        let tls = match &e {
            ureq::Error::Tls(_) | ureq::Error::Rustls(_) => true,
            ureq::Error::Io(io) => io.kind() == io::ErrorKind::InvalidData,
            _ => false,
        };
        if tls {
            return Error::Tls {
                host,
                what: what.to_owned(),
                detail: e.to_string(),
            };
        }
        if unreachable {
            Error::Unreachable {
                host,
                what: what.to_owned(),
                detail: e.to_string(),
            }
        } else {
            Error::Connection {
                host,
                what: what.to_owned(),
                detail: e.to_string(),
            }
        }
    }

    fn status_error(&self, repo: &Repository, what: &str, resp: Response<ureq::Body>) -> Error {
        let status = resp.status().as_u16();
        let detail = error_detail(resp);
        let host = repo.registry.host.clone();
        if status == 404 {
            Error::NotFound {
                host,
                what: what
                    .trim_start_matches("GET of ")
                    .trim_start_matches("HEAD of ")
                    .to_owned(),
                status,
                detail,
            }
        } else {
            Error::Status {
                host,
                what: what.to_owned(),
                status,
                detail,
            }
        }
    }

    /// The `Location` of an upload session, made absolute.
    fn location(
        &self,
        repo: &Repository,
        resp: &Response<ureq::Body>,
        label: &str,
    ) -> Result<String> {
        let loc = header(resp, "location").ok_or_else(|| Error::Status {
            host: repo.registry.host.clone(),
            what: format!("upload of {label}"),
            status: resp.status().as_u16(),
            detail: "no Location header for the upload session".into(),
        })?;
        if loc.starts_with("http://") || loc.starts_with("https://") {
            Ok(loc)
        } else {
            let base = self.base_url(&repo.registry)?;
            Ok(format!("{base}/{}", loc.trim_start_matches('/')))
        }
    }

    fn bar(&self, label: &str, len: u64) -> ProgressBar {
        if !self.options.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_owned());
        bar
    }
}

fn parse_doc(bytes: &[u8], repo: &Repository, reference: &str) -> Result<Document> {
    serde_json::from_slice(bytes).map_err(|e| Error::Protocol {
        host: repo.registry.host.clone(),
        what: format!("manifest {repo}:{reference}"),
        reason: format!("invalid JSON: {e}"),
    })
}

/// Whether the layout already holds a blob with this digest and size
/// (hashed, not trusted by name).
fn has_blob(layout: &Layout, digest: &Digest, size: u64) -> bool {
    File::open(layout.blob_path(digest))
        .and_then(|f| crate::digest::hash_reader(io::BufReader::new(f)))
        .is_ok_and(|(d, n)| d == *digest && n == size)
}

fn header(resp: &Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The distribution spec's error body (`{"errors":[{"code","message"}]}`)
/// in one line, else the start of whatever the body says.
fn error_detail(resp: Response<ureq::Body>) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        code: Option<String>,
        message: Option<String>,
    }
    let reason = resp.status().canonical_reason().unwrap_or("").to_owned();
    let bytes = resp
        .into_body()
        .with_config()
        .limit(64 << 10)
        .read_to_vec()
        .unwrap_or_default();
    if let Ok(e) = serde_json::from_slice::<Errors>(&bytes) {
        let parts: Vec<String> = e
            .errors
            .iter()
            .map(|x| {
                format!(
                    "{}: {}",
                    x.code.as_deref().unwrap_or("ERROR"),
                    x.message.as_deref().unwrap_or("")
                )
            })
            .collect();
        if !parts.is_empty() {
            return format!("{reason} ({})", parts.join("; "));
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    if text.is_empty() {
        reason
    } else {
        let short: String = text.chars().take(200).collect();
        format!("{reason} ({short})")
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The certificates of a PEM file, as the only TLS roots.
fn read_ca_file(path: &Path) -> Result<ureq::tls::RootCerts> {
    let bad = |reason: String| Error::Io {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidData, reason),
    };
    let pem = fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item.map_err(|e| bad(format!("not PEM: {e}")))? {
            ureq::tls::PemItem::Certificate(c) => certs.push(c),
            _ => {
                return Err(bad(
                    "holds a private key; expected only CA certificates".into()
                ))
            }
        }
    }
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}
