//! OCI image layouts (`oci-layout`, `index.json`, `blobs/sha256/`): writing
//! blobs atomically, images with canonical JSON, ref names in index.json, and
//! reading images back with every digest and size verified (docs/oci.md).

mod check;
mod image;
pub mod lookaside;
mod referrers;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::de::DeserializeOwned;

use crate::compress::Compression;
use crate::digest::{Digest, HashingWriter};
use crate::fsutil::SyncBehind;
use crate::layer::{self, LayerInfo, PackOptions};

pub use check::{check, Problem, Report};
pub use image::{
    descriptor, rfc3339, ImageLayer, ImageSpec, ANNOTATION_CREATED, ANNOTATION_FIXED_OUTPUT,
    ANNOTATION_INPUT_DIGEST, ANNOTATION_RECIPE, ANNOTATION_REF_NAME, ANNOTATION_SOURCES,
    ANNOTATION_TITLE, ANNOTATION_VERSION,
};
pub use referrers::{
    artifact_manifest, signature_tag, Artifact, ArtifactLayer, SignatureImage,
    ANNOTATION_ATTACHMENT, ANNOTATION_SIGNER, EMPTY_MEDIA_TYPE,
};

const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// What a ref of a layout is tagged with: a manifest digest and, for a
/// fixed output, the input digest of the recipe that made it.
pub type Tag = (String, Option<String>);

/// Manifests, configs and indexes above this size are refused unread.
pub const MAX_JSON_BLOB: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    #[error("{}: invalid JSON: {error}", path.display())]
    Json {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error("{}: not an OCI image layout: {reason}", path.display())]
    NotALayout { path: PathBuf, reason: String },
    #[error("invalid ref name {0:?}: expected components of [A-Za-z0-9] joined by one of -._:@+ or --, separated by /")]
    InvalidRef(String),
    #[error("{}: no image with ref name {ref_name:?} in index.json", layout.display())]
    RefNotFound { layout: PathBuf, ref_name: String },
    #[error("{}: ref name {ref_name:?} appears {count} times in index.json", layout.display())]
    RefAmbiguous {
        layout: PathBuf,
        ref_name: String,
        count: usize,
    },
    #[error("{0}")]
    Invalid(Problem),
    #[error(transparent)]
    Layer(#[from] layer::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        error: source,
    }
}

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

/// An image read back from a layout, every blob verified.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest_digest: Digest,
    pub manifest_size: u64,
    pub manifest: ImageManifest,
    pub config_digest: Digest,
    pub config: ImageConfiguration,
}

/// A blob being written into a layout: a temporary file under
/// `blobs/sha256/`, renamed to its digest by [`BlobWriter::commit`].
pub struct BlobWriter {
    file: HashingWriter<SyncBehind<tempfile::NamedTempFile>>,
    dir: PathBuf,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    /// fsyncs the blob and renames it to `blobs/sha256/<hex>`.
    pub fn commit(self) -> Result<(Digest, u64)> {
        let (tmp, digest, size) = self.file.finish();
        let tmp = tmp.finish().map_err(io_err(&self.dir))?;
        let path = self.dir.join(digest.hex());
        tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
        tmp.persist(&path).map_err(|e| Error::Io {
            path: path.clone(),
            error: e.error,
        })?;
        crate::fsutil::sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        Ok((digest, size))
    }
}

/// Holds an exclusive flock on the layout directory while index.json changes.
struct IndexLock(File);

impl Drop for IndexLock {
    fn drop(&mut self) {
        // SAFETY: flock on a file descriptor this struct owns.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl Layout {
    /// Creates the layout at `path` (with missing parents) or opens the one there.
    pub fn create(path: &Path) -> Result<Layout> {
        let blobs = path.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
        let layout = Layout {
            root: path.to_owned(),
        };
        let _lock = layout.lock()?;
        // The marker last: a process killed in between leaves a directory
        // that is not yet a layout, never a layout without index.json.
        let index = layout.index_path();
        if !index.exists() {
            layout.write_index(&empty_index())?;
        }
        let marker = path.join(LAYOUT_FILE);
        if !marker.exists() {
            write_file(&marker, LAYOUT_CONTENT)?;
        }
        drop(_lock);
        Layout::open(path)
    }

    /// Opens an existing layout, checking its `oci-layout` marker.
    pub fn open(path: &Path) -> Result<Layout> {
        let marker = path.join(LAYOUT_FILE);
        let bytes = fs::read(&marker).map_err(|e| Error::NotALayout {
            path: path.to_owned(),
            reason: format!("cannot read {LAYOUT_FILE}: {e}"),
        })?;
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                path: marker.clone(),
                error: source,
            })?;
        if v.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
            return Err(Error::NotALayout {
                path: path.to_owned(),
                reason: format!("{LAYOUT_FILE} does not say imageLayoutVersion \"1.0.0\""),
            });
        }
        Ok(Layout {
            root: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Starts writing a blob of yet unknown digest.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let dir = self.blobs_dir();
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .permissions(fs::Permissions::from_mode(0o644))
            .tempfile_in(&dir)
            .map_err(io_err(&dir))?;
        Ok(BlobWriter {
            file: HashingWriter::new(SyncBehind::new(tmp)),
            dir,
        })
    }

    /// Writes `bytes` as a blob; returns its digest and size.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<(Digest, u64)> {
        let mut w = self.blob_writer()?;
        w.write_all(bytes).map_err(io_err(&w.dir))?;
        w.commit()
    }

    /// Copies the blob `digest` of `from` into this layout: a file of its
    /// own, never a hard link, so that editing one layout cannot change the
    /// other (the store's blobs are what every digest is checked against).
    /// A reflink where the file system shares extents (btrfs, XFS), else
    /// the kernel's copy (`copy_file_range`). A blob already here is
    /// complete (blobs are written atomically), unless it is `from`'s own
    /// file, hard-linked by an older imgrep: that one is replaced by a copy.
    pub fn copy_blob(&self, from: &Layout, digest: &Digest) -> io::Result<()> {
        self.copy_blobs(from, std::slice::from_ref(digest))
    }

    /// [`Layout::copy_blob`] of each of `digests`, made durable together:
    /// every copy is written to a temporary file first, their fsyncs run at
    /// once (a journaling file system commits them together, where one
    /// after the other each waited for a commit of its own), then each is
    /// renamed in and the directory synced once.
    pub fn copy_blobs(&self, from: &Layout, digests: &[Digest]) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let mut copies = Vec::new();
        for digest in digests {
            let (from, to) = (from.blob_path(digest), self.blob_path(digest));
            let src = File::open(&from)?;
            match fs::metadata(&to) {
                Ok(m) => {
                    let s = src.metadata()?;
                    if (m.dev(), m.ino()) != (s.dev(), s.ino()) {
                        continue;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let tmp = tempfile::Builder::new()
                .prefix(".tmp-")
                .permissions(fs::Permissions::from_mode(0o644))
                .tempfile_in(self.blobs_dir())?;
            // SAFETY: FICLONE on two descriptors this function owns; on any
            // error nothing was written and the copy below does the work.
            let cloned =
                unsafe { libc::ioctl(tmp.as_file().as_raw_fd(), libc::FICLONE, src.as_raw_fd()) }
                    == 0;
            if !cloned {
                io::copy(&mut &src, &mut tmp.as_file())?;
            }
            copies.push((tmp, to));
        }
        if copies.is_empty() {
            return Ok(());
        }
        std::thread::scope(|s| {
            let syncs: Vec<_> = copies
                .iter()
                .map(|(tmp, _)| s.spawn(|| tmp.as_file().sync_all()))
                .collect();
            syncs
                .into_iter()
                .try_for_each(|h| h.join().expect("fsync does not panic"))
        })?;
        for (tmp, to) in copies {
            tmp.persist(&to).map_err(|e| e.error)?;
        }
        crate::fsutil::sync_dir(&self.blobs_dir())
    }

    /// Packs `dir` as a layer straight into this layout's blobs.
    pub fn add_layer(&self, dir: &Path, opts: &PackOptions) -> Result<LayerInfo> {
        Ok(layer::pack_to_blob_dir(dir, opts, &self.blobs_dir())?)
    }

    /// Writes an image of `layers` (bottom first) described by `spec`, and
    /// points `spec.ref_name()` at it in index.json. Returns the manifest's
    /// descriptor (as index.json holds it, without the ref annotation).
    pub fn write_image(&self, spec: &ImageSpec, layers: &[ImageLayer]) -> Result<Descriptor> {
        let ref_name = spec.ref_name();
        validate_ref_name(&ref_name)?;
        let desc = self.write_image_blobs(spec, layers)?;
        self.set_ref(&ref_name, &desc)?;
        Ok(desc)
    }

    /// Writes the config and manifest blobs of an image without naming it in
    /// index.json (the store keeps images by input digest, not by ref).
    pub fn write_image_blobs(&self, spec: &ImageSpec, layers: &[ImageLayer]) -> Result<Descriptor> {
        let config = image::config(spec, layers);
        let config_bytes = crate::canonical::to_vec(&config).expect("config serializes");
        let (cd, cs) = self.put_blob(&config_bytes)?;
        let config_desc = image::descriptor(MediaType::ImageConfig.as_ref(), &cd, cs, None);
        let manifest = image::manifest(spec, config_desc, layers);
        let manifest_bytes = crate::canonical::to_vec(&manifest).expect("manifest serializes");
        let (md, ms) = self.put_blob(&manifest_bytes)?;
        Ok(image::descriptor(
            MediaType::ImageManifest.as_ref(),
            &md,
            ms,
            None,
        ))
    }

    /// Points `ref_name` at `manifest` in index.json, replacing any entry with
    /// the same ref name. Entries stay sorted by ref name, then digest.
    pub fn set_ref(&self, ref_name: &str, manifest: &Descriptor) -> Result<()> {
        self.set_refs(&[(ref_name.to_owned(), manifest.clone())])
    }

    /// [`Layout::set_ref`] of each `(ref_name, manifest)`, in one write of
    /// index.json (each write is a fsync of the file and one of its
    /// directory). A ref named twice points at its last manifest.
    pub fn set_refs(&self, refs: &[(String, Descriptor)]) -> Result<()> {
        for (ref_name, _) in refs {
            validate_ref_name(ref_name)?;
        }
        let _lock = self.lock()?;
        let mut index = self.index()?;
        let named = |d: &Descriptor| refs.iter().any(|(r, _)| ref_of(d) == Some(r.as_str()));
        let mut entries: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| !named(d))
            .cloned()
            .collect();
        for (i, (ref_name, manifest)) in refs.iter().enumerate() {
            if refs[i + 1..].iter().any(|(r, _)| r == ref_name) {
                continue;
            }
            let mut desc = manifest.clone();
            let mut ann = desc.annotations().clone().unwrap_or_default();
            ann.insert(ANNOTATION_REF_NAME.to_owned(), ref_name.clone());
            desc.set_annotations(Some(ann));
            entries.push(desc);
        }
        entries.sort_by(|a, b| {
            (ref_of(a), a.digest().to_string()).cmp(&(ref_of(b), b.digest().to_string()))
        });
        index.set_manifests(entries);
        self.write_index(&index)
    }

    /// The parsed index.json.
    pub fn index(&self) -> Result<ImageIndex> {
        let path = self.index_path();
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            path,
            error: source,
        })
    }

    /// The ref names in index.json, sorted.
    pub fn refs(&self) -> Result<Vec<String>> {
        let mut v: Vec<String> = self
            .index()?
            .manifests()
            .iter()
            .filter_map(|d| ref_of(d).map(str::to_owned))
            .collect();
        v.sort();
        Ok(v)
    }

    /// Every ref of index.json with what it is tagged with: the manifest
    /// digest, and the input digest recorded beside a fixed output.
    pub fn tags(&self) -> Result<BTreeMap<String, Tag>> {
        let index = self.index()?;
        let refs = index.manifests().iter().filter_map(|d| {
            let input = d
                .annotations()
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_INPUT_DIGEST).cloned());
            Some((ref_of(d)?.to_owned(), (d.digest().to_string(), input)))
        });
        Ok(refs.collect())
    }

    fn write_index(&self, index: &ImageIndex) -> Result<()> {
        let path = self.index_path();
        let bytes = crate::canonical::to_vec(index).expect("index serializes");
        write_file(&path, &bytes)
    }

    fn lock(&self) -> Result<IndexLock> {
        let f = File::open(&self.root).map_err(io_err(&self.root))?;
        // SAFETY: flock on a descriptor we own; blocks until other imgrep
        // processes are done with index.json.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::Io {
                path: self.root.clone(),
                error: io::Error::last_os_error(),
            });
        }
        Ok(IndexLock(f))
    }

    /// Reads the image `ref_name` points at, verifying the digest and size of
    /// its manifest, config and every layer blob; with `diff_ids`, also
    /// decompresses each layer and checks it against the config's diff_id.
    pub fn read_image(&self, ref_name: &str, diff_ids: bool) -> Result<Image> {
        let index = self.index()?;
        let matches: Vec<&Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| ref_of(d) == Some(ref_name))
            .collect();
        let desc = match matches.as_slice() {
            [d] => *d,
            [] => {
                return Err(Error::RefNotFound {
                    layout: self.root.clone(),
                    ref_name: ref_name.to_owned(),
                })
            }
            many => {
                return Err(Error::RefAmbiguous {
                    layout: self.root.clone(),
                    ref_name: ref_name.to_owned(),
                    count: many.len(),
                })
            }
        };
        self.read_manifest(&to_digest(desc.digest()), desc.size(), ref_name, diff_ids)
    }

    /// Reads the image whose manifest has this digest and size, verifying
    /// every blob as [`Layout::read_image`] does. `name` labels messages.
    pub fn read_manifest(
        &self,
        manifest_digest: &Digest,
        manifest_size: u64,
        name: &str,
        diff_ids: bool,
    ) -> Result<Image> {
        let ref_name = name;
        let (manifest_digest, manifest_size) = (*manifest_digest, manifest_size);
        let mut verifier = check::Verifier::new(self);
        let context = format!("manifest of {ref_name:?}");
        let manifest: ImageManifest = verifier
            .json(&manifest_digest, manifest_size, &context)
            .map_err(Error::Invalid)?;
        let config_desc = manifest.config();
        let config_digest = to_digest(config_desc.digest());
        let config: ImageConfiguration = verifier
            .json(
                &config_digest,
                config_desc.size(),
                &format!("config of {ref_name:?}"),
            )
            .map_err(Error::Invalid)?;
        if let Some(p) = verifier
            .layers(&manifest, &config, diff_ids, ref_name)
            .into_iter()
            .next()
        {
            return Err(Error::Invalid(p));
        }
        Ok(Image {
            manifest_digest,
            manifest_size,
            manifest,
            config_digest,
            config,
        })
    }

    /// The descriptor and diff_ids of the image whose manifest has this
    /// digest, read without hashing anything: for the store, whose blobs
    /// were verified when written. Fails when a layer blob is missing.
    pub fn stored_image(
        &self,
        manifest: &Digest,
        name: &str,
    ) -> io::Result<(Descriptor, Vec<Digest>)> {
        let invalid = |e| io::Error::new(io::ErrorKind::InvalidData, e);
        let parse = |d: &oci_spec::image::Digest| {
            d.to_string()
                .parse::<Digest>()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        };
        let bytes = fs::read(self.blob_path(manifest))?;
        let parsed: ImageManifest = serde_json::from_slice(&bytes).map_err(invalid)?;
        let config_path = self.blob_path(&parse(parsed.config().digest())?);
        let config: ImageConfiguration =
            serde_json::from_slice(&fs::read(config_path)?).map_err(invalid)?;
        for l in parsed.layers() {
            let d = parse(l.digest())?;
            if !self.blob_path(&d).is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{name}: layer blob {d} missing"),
                ));
            }
        }
        let diff_ids = config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| {
                d.parse::<Digest>()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let desc = descriptor(
            MediaType::ImageManifest.as_ref(),
            manifest,
            bytes.len() as u64,
            None,
        );
        Ok((desc, diff_ids))
    }

    fn read_json<T: DeserializeOwned>(&self, digest: &Digest) -> std::result::Result<T, String> {
        let path = self.blob_path(digest);
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|f| f.take(MAX_JSON_BLOB + 1).read_to_end(&mut bytes))
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| format!("invalid JSON: {e}"))
    }
}

/// Replaces `path` atomically with a world-readable file holding `bytes`
/// (layouts are served and shared, unlike fsutil's private temp files).
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    tmp.write_all(bytes).map_err(io_err(tmp.path()))?;
    tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
    tmp.persist(path).map_err(|e| Error::Io {
        path: path.to_owned(),
        error: e.error,
    })?;
    crate::fsutil::sync_dir(dir).map_err(io_err(dir))
}

/// A layout's `org.opencontainers.image.ref.name` of a descriptor.
pub fn ref_of(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_REF_NAME))
        .map(String::as_str)
}

fn empty_index() -> ImageIndex {
    oci_spec::image::ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::new())
        .build()
        .expect("index fields set")
}

/// imgrep digests are sha256; oci-spec has already checked the hex form.
fn to_digest(d: &oci_spec::image::Digest) -> Digest {
    d.to_string()
        .parse()
        .unwrap_or_else(|_| Digest::from_bytes([0; 32]))
}

/// Checks the OCI ref.name grammar: components of alphanumerics joined by
/// one of `-._:@+` (or `--`), separated by `/`.
pub fn validate_ref_name(r: &str) -> Result<()> {
    let ok = !r.is_empty()
        && r.split('/').all(|component| {
            let b = component.as_bytes();
            let sep = |c: u8| matches!(c, b'-' | b'.' | b'_' | b':' | b'@' | b'+');
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || sep(c))
                && b.windows(2)
                    .all(|w| !(sep(w[0]) && sep(w[1])) || w == b"--")
        });
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRef(r.to_owned()))
    }
}

/// Layer blob compression named by a media type (for diff_id checks).
fn layer_compression(d: &Descriptor) -> Option<Compression> {
    Compression::from_layer_media_type(d.media_type().as_ref())
}

/// Counts shared by check and read_image: blob path relative to the layout.
fn blob_rel(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

type BlobCache = HashMap<Digest, std::result::Result<(Digest, u64), String>>;

#[cfg(test)]
mod tests {
    use super::validate_ref_name;

    #[test]
    fn ref_names() {
        for ok in ["musl:1.2.5", "a", "gcc-12:12.2.0-14", "x/y:1.0+b1", "a--b"] {
            assert!(validate_ref_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ":1", "a:", "a b", "a::b", "a/", "/a", "a-.b", "ä"] {
            assert!(validate_ref_name(bad).is_err(), "{bad}");
        }
    }
}
