//! The client and its options, manifests, and whole images: a push (blobs
//! the registry lacks, then the manifest) and a pull (manifest, blobs, then
//! the ref), with every digest checked.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::ProgressBar;
use oci_spec::image::{Descriptor, DescriptorBuilder};
use ureq::http::Method;

use super::auth::CredentialSource;
use super::manifest::{self, Document};
use super::transport::{header, Body, Req};
use super::{Error, Reference, Repository, Result};
use crate::digest::Digest;
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
    pub(super) agent: ureq::Agent,
    pub(super) options: Options,
    /// Authorization header values by (host, scope).
    pub(super) auth: Mutex<HashMap<(String, String), String>>,
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
    /// under the target's tag (or, with none, its digest, which must be the
    /// image's). Returns the manifest digest, which
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
        // A push names the manifest by its tag; a digest in the target only
        // states what is expected.
        let reference = target
            .tag
            .clone()
            .or_else(|| target.digest.map(|d| d.to_string()))
            .ok_or_else(|| Error::NoTag {
                reference: target.to_string(),
                action: "push to".into(),
            })?;
        let image = layout.read_image(ref_name, false)?;
        if let Some(expected) = target.digest.filter(|d| *d != image.manifest_digest) {
            return Err(Error::PushDigest {
                reference: target.to_string(),
                image: ref_name.to_owned(),
                expected,
                actual: image.manifest_digest,
            });
        }
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
            error: source,
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

    /// The manifest digest and the config's diff_ids of `repo:reference`
    /// (which `imgrep verify --registry` compares with a signed statement).
    pub fn image_digests(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<(Digest, Vec<Digest>)> {
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
        Ok((digest, parsed.rootfs.diff_ids))
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

    pub(super) fn bar(&self, label: &str, len: u64) -> ProgressBar {
        crate::progress::bar(label, Some(len), self.options.progress)
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
pub(super) fn has_blob(layout: &Layout, digest: &Digest, size: u64) -> bool {
    File::open(layout.blob_path(digest))
        .and_then(|f| crate::digest::hash_reader(io::BufReader::new(f)))
        .is_ok_and(|(d, n)| d == *digest && n == size)
}

/// The certificates of a PEM file, as the only TLS roots.
fn read_ca_file(path: &Path) -> Result<ureq::tls::RootCerts> {
    let bad = |reason: String| Error::Io {
        path: path.to_owned(),
        error: io::Error::new(io::ErrorKind::InvalidData, reason),
    };
    let pem = fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        error: source,
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
