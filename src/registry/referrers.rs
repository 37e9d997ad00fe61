//! Artifacts attached to an image (OCI 1.1 `subject`) on a registry: pushed
//! after the image and found again through the referrers API
//! (`GET /v2/REPO/referrers/DIGEST`) or, on registries without it, the
//! distribution spec's tag schema fallback: an image index tagged
//! `sha256-<hex>` listing them. Also cosign-layout signatures, tagged
//! `sha256-<hex>.sig`, which podman's sigstoreSigned policy reads.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use ureq::http::Method;

use super::manifest::{OCI_INDEX, OCI_MANIFEST};
use super::transport::{header, Body, Req};
use super::{Client, Error, Repository, Result};
use crate::digest::Digest;
use crate::oci::{signature_tag, Layout, SignatureImage};

/// How the registry came to list the artifacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReferrersMode {
    /// The registry's referrers API (it answered with an `OCI-Subject`
    /// header or lists them at /referrers/).
    Api,
    /// The `sha256-<hex>` tag holding an index of them.
    TagSchema,
}

/// An artifact read from a registry: its manifest digest and its layers
/// (media type, bytes), each verified.
#[derive(Debug, Clone)]
pub struct Referrer {
    pub digest: Digest,
    pub layers: Vec<(String, Vec<u8>)>,
}

/// The fallback tag of `subject`'s referrers index.
pub fn fallback_tag(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

fn digest_of(d: &oci_spec::image::Digest) -> Result<Digest> {
    d.to_string().parse().map_err(|_| Error::Protocol {
        host: String::new(),
        what: "a referrer".into(),
        reason: format!("unsupported digest {d}"),
    })
}

impl Client {
    /// Pushes the artifacts of `layout` whose subject is `subject` (already
    /// pushed to `repo`): their blobs, then each manifest by digest. Where
    /// the registry does not answer with `OCI-Subject` (no referrers API),
    /// the `sha256-<hex>` index is updated too, keeping what it listed.
    pub fn push_referrers(
        &self,
        layout: &Layout,
        repo: &Repository,
        subject: &Digest,
    ) -> Result<(Vec<Digest>, ReferrersMode)> {
        let referrers = layout.referrers(subject)?;
        let mut pushed = Vec::new();
        let mut api = true;
        for (desc, manifest) in &referrers {
            let mut blobs = vec![(
                digest_of(manifest.config().digest())?,
                manifest.config().size(),
            )];
            for l in manifest.layers() {
                blobs.push((digest_of(l.digest())?, l.size()));
            }
            for (digest, size) in blobs {
                if !self.blob_exists(repo, &digest)? {
                    self.upload_blob(repo, &layout.blob_path(&digest), &digest, size, "artifact")?;
                }
            }
            let digest = digest_of(desc.digest())?;
            let bytes = layout.read_blob(&digest)?;
            let (_, has_subject_header) =
                self.put_manifest_seeing_subject(repo, &digest, &bytes)?;
            api &= has_subject_header;
            pushed.push(digest);
        }
        if referrers.is_empty() || api {
            return Ok((pushed, ReferrersMode::Api));
        }
        let tag = fallback_tag(subject);
        let mut entries: Vec<Descriptor> = match self.get_manifest(repo, &tag) {
            Ok((bytes, _, _)) => serde_json::from_slice::<ImageIndex>(&bytes)
                .map(|i| i.manifests().clone())
                .unwrap_or_default(),
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e),
        };
        for (desc, _) in &referrers {
            if !entries.iter().any(|e| e.digest() == desc.digest()) {
                let mut d = desc.clone();
                d.set_annotations(desc.annotations().clone());
                entries.push(d);
            }
        }
        entries.sort_by_key(|d| d.digest().to_string());
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": entries,
        });
        let bytes = crate::canonical::to_vec(&index).expect("an index serializes");
        self.put_manifest(repo, &tag, &bytes, OCI_INDEX)?;
        Ok((pushed, ReferrersMode::TagSchema))
    }

    /// Lists the artifacts `repo` holds about `subject`: the referrers API,
    /// else the tag schema (an empty list when neither has any).
    pub fn list_referrers(
        &self,
        repo: &Repository,
        subject: &Digest,
    ) -> Result<(Vec<Descriptor>, ReferrersMode)> {
        let what = format!("referrers of {repo}@{subject}");
        let resp = self.execute(Req {
            method: Method::GET,
            url: format!("{}/referrers/{subject}", self.repo_url(repo)?),
            repo,
            push: false,
            mount_from: None,
            headers: vec![("Accept", OCI_INDEX.to_owned())],
            body: Body::None,
            what: format!("listing the {what}"),
        })?;
        if resp.status() == 200 {
            let bytes = resp
                .into_body()
                .with_config()
                .limit(crate::oci::MAX_JSON_BLOB)
                .read_to_vec()
                .map_err(|e| self.transport(&repo.registry, &format!("reading the {what}"), e))?;
            let index: ImageIndex =
                serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
                    host: repo.registry.host.clone(),
                    what: what.clone(),
                    reason: format!("invalid index: {e}"),
                })?;
            return Ok((index.manifests().clone(), ReferrersMode::Api));
        }
        if resp.status() != 404 {
            return Err(self.status_error(repo, &format!("GET of the {what}"), resp));
        }
        match self.get_manifest(repo, &fallback_tag(subject)) {
            Ok((bytes, _, _)) => {
                let index: ImageIndex =
                    serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
                        host: repo.registry.host.clone(),
                        what,
                        reason: format!("the fallback tag holds no index: {e}"),
                    })?;
                Ok((index.manifests().clone(), ReferrersMode::TagSchema))
            }
            Err(e) if e.is_not_found() => Ok((Vec::new(), ReferrersMode::TagSchema)),
            Err(e) => Err(e),
        }
    }

    /// Pulls every artifact `repo` holds about `subject` into `layout`
    /// (blobs verified, each manifest's subject checked), listing each in
    /// index.json. Returns their manifest digests.
    pub fn pull_referrers(
        &self,
        repo: &Repository,
        subject: &Digest,
        layout: &Layout,
    ) -> Result<Vec<Digest>> {
        let (descs, _) = self.list_referrers(repo, subject)?;
        let mut pulled = Vec::new();
        for desc in descs {
            let (digest, bytes, manifest) = self.referrer_manifest(repo, subject, &desc)?;
            let mut blobs = vec![(
                digest_of(manifest.config().digest())?,
                manifest.config().size(),
            )];
            for l in manifest.layers() {
                blobs.push((digest_of(l.digest())?, l.size()));
            }
            for (d, size) in blobs {
                if !super::client::has_blob(layout, &d, size) {
                    self.download_blob(repo, layout, &d, size, "artifact")?;
                }
            }
            layout.put_blob(&bytes)?;
            layout.add_referrer(desc)?;
            pulled.push(digest);
        }
        Ok(pulled)
    }

    /// The artifacts of type `artifact_type` that `repo` holds about
    /// `subject`, each with its layers' bytes (small documents: read into
    /// memory, each verified against its digest), in listing order.
    pub fn fetch_referrers(
        &self,
        repo: &Repository,
        subject: &Digest,
        artifact_type: &str,
    ) -> Result<Vec<Referrer>> {
        let (descs, _) = self.list_referrers(repo, subject)?;
        let mut out = Vec::new();
        for desc in descs {
            let listed = desc.artifact_type().as_ref().map(|t| t.to_string());
            if listed.as_deref().is_some_and(|t| t != artifact_type) {
                continue;
            }
            let (digest, _, manifest) = self.referrer_manifest(repo, subject, &desc)?;
            let own = manifest.artifact_type().as_ref().map(|t| t.to_string());
            if own.as_deref() != Some(artifact_type) {
                continue;
            }
            let mut layers = Vec::new();
            for l in manifest.layers() {
                let bytes = self.get_blob_bytes(repo, &digest_of(l.digest())?, l.size())?;
                layers.push((l.media_type().to_string(), bytes));
            }
            out.push(Referrer { digest, layers });
        }
        Ok(out)
    }

    /// The manifest a referrers listing names, verified against its digest,
    /// whose subject must be `subject`.
    fn referrer_manifest(
        &self,
        repo: &Repository,
        subject: &Digest,
        desc: &Descriptor,
    ) -> Result<(Digest, Vec<u8>, ImageManifest)> {
        let digest = digest_of(desc.digest())?;
        let (bytes, _, _) = self.get_manifest(repo, &digest.to_string())?;
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
                host: repo.registry.host.clone(),
                what: format!("referrer {digest}"),
                reason: format!("not an image manifest: {e}"),
            })?;
        let about = manifest.subject().as_ref().map(|s| s.digest().to_string());
        if about.as_deref() != Some(subject.to_string().as_str()) {
            return Err(Error::Protocol {
                host: repo.registry.host.clone(),
                what: format!("referrer {digest}"),
                reason: format!("its subject is {about:?}, not {subject}"),
            });
        }
        Ok((digest, bytes, manifest))
    }

    /// Pushes a cosign-layout signature of `subject` to `repo`.
    pub fn push_cosign_signature(
        &self,
        repo: &Repository,
        subject: &Digest,
        sig: &SignatureImage,
    ) -> Result<Digest> {
        for blob in [&sig.config, &sig.payload] {
            let digest = Digest::of(blob);
            if !self.blob_exists(repo, &digest)? {
                let tmp = tempfile::NamedTempFile::new().map_err(|source| Error::Io {
                    path: std::env::temp_dir(),
                    error: source,
                })?;
                std::fs::write(tmp.path(), blob).map_err(|source| Error::Io {
                    path: tmp.path().to_owned(),
                    error: source,
                })?;
                self.upload_blob(repo, tmp.path(), &digest, blob.len() as u64, "signature")?;
            }
        }
        self.put_manifest(repo, &signature_tag(subject), &sig.manifest, OCI_MANIFEST)
    }

    /// PUTs a manifest by its digest; true when the registry answered with
    /// `OCI-Subject` (it indexes referrers itself).
    fn put_manifest_seeing_subject(
        &self,
        repo: &Repository,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<(Digest, bool)> {
        let what = format!("PUT of manifest {repo}@{digest}");
        let resp = self.execute(Req {
            method: Method::PUT,
            url: format!("{}/manifests/{digest}", self.repo_url(repo)?),
            repo,
            push: true,
            mount_from: None,
            headers: vec![("Content-Type", OCI_MANIFEST.to_owned())],
            body: Body::Bytes(bytes),
            what: format!("pushing artifact {repo}@{digest}"),
        })?;
        if resp.status() != 201 && resp.status() != 200 {
            return Err(self.status_error(repo, &what, resp));
        }
        Ok((*digest, header(&resp, "oci-subject").is_some()))
    }
}
