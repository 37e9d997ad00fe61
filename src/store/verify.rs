//! `Store::verify`: the store's consistency check (docs/store.md,
//! "Verifying the store"), as `imgrep store verify` runs it.
//!
//! Every entry is checked against its name, never trusted for it: source
//! files and blobs hash to their names, trees have their NAR hash, build
//! records name image manifests whose config, layers and diff_ids are all
//! present and verified, and every unpacked layer equals the tree a layer
//! blob of its diff_id describes (read from the stream: nothing is written,
//! so the check also runs on a full disk). Anything under an entry directory whose
//! name is not an entry's (a temporary that escaped `tmp/`) is a problem
//! too. `tmp/`, `locks/`, `logs/` and `failed/` are never trusted and not
//! checked.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageManifest};

use super::{io_err, Store, StoreError};
use crate::digest::{hash_reader, Digest};
use crate::nar::NarHash;
use crate::oci::Layout;
use crate::unpack::tarstream::{Kind, TarError, TarStream};

/// One thing wrong in the store: the entry (relative to the store root)
/// and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// How many entries of each kind were checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Checked {
    pub sources: usize,
    pub trees: usize,
    pub blobs: usize,
    pub layers: usize,
    pub records: usize,
}

/// What [`Store::verify`] found; consistent when `problems` is empty.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    pub checked: Checked,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// The layer blobs (files under blobs/sha256) of each diff_id that the
/// manifests in the store name.
type LayerBlobs = HashMap<Digest, Vec<Digest>>;

impl Store {
    /// Checks every entry of the store (see the module documentation).
    /// Errors only when the store itself cannot be read; everything wrong
    /// with an entry is a [`Problem`] in the report.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        self.verify_blobs(&mut report)?;
        let layer_blobs = self.verify_records(&mut report)?;
        self.verify_layers(&layer_blobs, &mut report)?;
        for (rel, name) in self.entries("sources/sha256", &mut report)? {
            report.checked.sources += 1;
            let path = self.root.join(&rel);
            match File::open(&path).and_then(|f| hash_reader(BufReader::new(f))) {
                Ok((d, _)) if d == name => {}
                Ok((d, _)) => report.problem(rel, format!("content has sha256 {}", d.hex())),
                Err(e) => report.problem(rel, e.to_string()),
            }
        }
        for (rel, name) in self.tree_entries(&mut report)? {
            report.checked.trees += 1;
            match crate::nar::hash_path(&self.root.join(&rel)) {
                Ok(h) if h == name => {}
                Ok(h) => report.problem(rel, format!("tree has NAR hash {h}")),
                Err(e) => report.problem(rel, e.to_string()),
            }
        }
        Ok(report)
    }

    /// The children of an entry directory named by a sha256 digest; any
    /// other name is a problem.
    fn entries(
        &self,
        dir: &str,
        report: &mut VerifyReport,
    ) -> Result<Vec<(String, Digest)>, StoreError> {
        let mut out = Vec::new();
        for name in self.names(dir)? {
            let rel = format!("{dir}/{name}");
            match Digest::from_hex(&name) {
                Ok(d) => out.push((rel, d)),
                Err(_) => report.problem(rel, "not an entry name (a temporary outside tmp/?)"),
            }
        }
        Ok(out)
    }

    fn tree_entries(
        &self,
        report: &mut VerifyReport,
    ) -> Result<Vec<(String, NarHash)>, StoreError> {
        let dir = "trees/nar-sha256";
        let mut out = Vec::new();
        for name in self.names(dir)? {
            let rel = format!("{dir}/{name}");
            match Digest::from_hex(&name) {
                Ok(d) => out.push((rel, NarHash::from_bytes(*d.as_bytes()))),
                Err(_) => report.problem(rel, "not an entry name (a temporary outside tmp/?)"),
            }
        }
        Ok(out)
    }

    /// The sorted names in `<root>/<dir>` (none if it does not exist).
    fn names(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        let path = self.root.join(dir);
        let entries = match fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut names = Vec::new();
        for e in entries {
            let e = e.map_err(io_err(&path))?;
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// The store root as an OCI layout: index.json's images and every blob
    /// against its name (`oci::check`).
    fn verify_blobs(&self, report: &mut VerifyReport) -> Result<(), StoreError> {
        if !self.root.join("oci-layout").exists() {
            // No image was ever written: blobs are checked by name alone.
            for (rel, name) in self.entries("blobs/sha256", report)? {
                report.checked.blobs += 1;
                match File::open(self.root.join(&rel)).and_then(|f| hash_reader(BufReader::new(f)))
                {
                    Ok((d, _)) if d == name => {}
                    Ok((d, _)) => report.problem(rel, format!("content has digest {d}")),
                    Err(e) => report.problem(rel, e.to_string()),
                }
            }
            return Ok(());
        }
        match crate::oci::check(&self.root) {
            Ok(r) => {
                report.checked.blobs = r.blobs_verified;
                for p in r.problems {
                    report.problem(p.path, p.message);
                }
            }
            Err(e) => report.problem("oci-layout", e.to_string()),
        }
        Ok(())
    }

    /// Each build record names an image whose manifest, config and layers
    /// are present, with every digest, size and diff_id verified. Returns
    /// the layer blob of every diff_id that a manifest in the store names.
    fn verify_records(&self, report: &mut VerifyReport) -> Result<LayerBlobs, StoreError> {
        let layout = Layout::open(&self.root).ok();
        for (rel, input) in self.entries("records", report)? {
            report.checked.records += 1;
            let manifest = match self.record(&input) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    report.problem(rel, e.to_string());
                    continue;
                }
            };
            let Some(layout) = &layout else {
                report.problem(
                    rel,
                    format!("names image {manifest}, but the store holds no image"),
                );
                continue;
            };
            let size = match fs::metadata(self.blob_path(&manifest)) {
                Ok(m) => m.len(),
                Err(e) => {
                    report.problem(
                        rel,
                        format!("names image {manifest}, whose manifest blob is missing: {e}"),
                    );
                    continue;
                }
            };
            if let Err(e) = layout.read_manifest(&manifest, size, &rel, true) {
                report.problem(rel, format!("names image {manifest}: {e}"));
            }
        }
        // Manifests anywhere among the blobs (records', images pulled or
        // packed), to find the blob an unpacked layer came from.
        let mut layer_blobs = LayerBlobs::new();
        for (rel, _) in self.entries("blobs/sha256", &mut VerifyReport::default())? {
            let path = self.root.join(&rel);
            if !fs::metadata(&path).is_ok_and(|m| m.len() <= crate::oci::MAX_JSON_BLOB) {
                continue;
            }
            let Ok(manifest) = ImageManifest::from_file(&path) else {
                continue;
            };
            let config = self.blob_path(&oci_digest(manifest.config().digest()));
            let Ok(config) = ImageConfiguration::from_file(config) else {
                continue;
            };
            for (layer, diff_id) in manifest.layers().iter().zip(config.rootfs().diff_ids()) {
                if let Ok(d) = diff_id.parse::<Digest>() {
                    layer_blobs
                        .entry(d)
                        .or_default()
                        .push(oci_digest(layer.digest()));
                }
            }
        }
        Ok(layer_blobs)
    }

    /// Every unpacked layer equals the tree its layer blob describes.
    fn verify_layers(
        &self,
        layer_blobs: &LayerBlobs,
        report: &mut VerifyReport,
    ) -> Result<(), StoreError> {
        for (rel, diff_id) in self.entries("layers/sha256", report)? {
            report.checked.layers += 1;
            let mut blobs = layer_blobs.get(&diff_id).into_iter().flatten();
            let Some(blob) = blobs.find(|b| self.blob_path(b).exists()) else {
                report.problem(
                    rel,
                    "no image in the store has a layer with this diff_id: cannot be verified",
                );
                continue;
            };
            match layer_facts(&self.blob_path(blob)) {
                Err(e) => report.problem(rel, format!("cannot read its blob {blob}: {e}")),
                Ok((got, _)) if got != diff_id => {
                    report.problem(rel, format!("its blob {blob} has diff_id {got}"))
                }
                Ok((_, expected)) => {
                    if let Some(d) = first_difference(&self.root.join(&rel), &expected) {
                        report.problem(rel, format!("differs from its blob {blob}: {d}"));
                    }
                }
            }
        }
        Ok(())
    }
}

fn oci_digest(d: &oci_spec::image::Digest) -> Digest {
    d.to_string()
        .parse()
        .unwrap_or_else(|_| Digest::from_bytes([0; 32]))
}

/// What a tree entry is: kind, permission bits, mtime, and content (a
/// file's sha256, a link's target). A directory the layer does not list
/// (the unpacker makes it for a deeper entry) has no mode or mtime to
/// compare; neither has a symbolic link a mode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Facts {
    kind: &'static str,
    mode: Option<u32>,
    mtime: Option<i64>,
    content: String,
}

type Tree = BTreeMap<PathBuf, Facts>;

fn implicit_dir() -> Facts {
    Facts {
        kind: "directory",
        mode: None,
        mtime: None,
        content: String::new(),
    }
}

/// The diff_id of a layer blob and the tree it unpacks to, read from the
/// stream (nothing is written: this works on a full disk).
fn layer_facts(blob: &Path) -> io::Result<(Digest, Tree)> {
    let bad = |e: TarError| io::Error::other(e.to_string());
    let (_, reader) = crate::archive::decompress(BufReader::new(File::open(blob)?))?;
    let mut tar = TarStream::new(reader);
    let mut tree = Tree::new();
    let mut buf = vec![0u8; 64 * 1024];
    while let Some(h) = tar.next_header().map_err(bad)? {
        let Some(path) = normal(&h.path) else {
            continue;
        };
        let mut parent = path.parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            tree.entry(p.to_owned()).or_insert_with(implicit_dir);
            parent = p.parent();
        }
        let facts = match h.kind {
            Kind::Regular => {
                let mut hasher = crate::digest::HashingWriter::new(io::sink());
                loop {
                    let n = tar.read_data(&mut buf).map_err(bad)?;
                    if n == 0 {
                        break;
                    }
                    io::Write::write_all(&mut hasher, &buf[..n])?;
                }
                let (_, digest, _) = hasher.finish();
                Facts {
                    kind: "file",
                    mode: Some(h.mode),
                    mtime: Some(h.mtime),
                    content: digest.to_string(),
                }
            }
            Kind::Directory => Facts {
                kind: "directory",
                mode: Some(h.mode),
                mtime: Some(h.mtime),
                content: String::new(),
            },
            Kind::Symlink => Facts {
                kind: "symlink",
                mode: None,
                mtime: Some(h.mtime),
                content: String::from_utf8_lossy(&h.link).into_owned(),
            },
            Kind::HardLink => normal(&h.link)
                .and_then(|t| tree.get(&t).cloned())
                .ok_or_else(|| io::Error::other("hard link to a file the layer does not have"))?,
            other => return Err(io::Error::other(format!("{other:?} in a layer"))),
        };
        tree.insert(path, facts);
    }
    let (diff_id, _) = tar.finish().map_err(bad)?;
    Ok((diff_id, tree))
}

/// An archive path as a relative path without `.` or empty components;
/// None for the top directory itself.
fn normal(path: &[u8]) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let p: PathBuf = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(std::ffi::OsStr::from_bytes)
        .collect();
    (!p.as_os_str().is_empty()).then_some(p)
}

/// The tree under `dir` (not `dir` itself), as [`Facts`].
fn tree_facts(dir: &Path) -> io::Result<Tree> {
    let mut out = Tree::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        for e in fs::read_dir(dir.join(&rel))? {
            let rel = rel.join(e?.file_name());
            let path = dir.join(&rel);
            let meta = fs::symlink_metadata(&path)?;
            let ft = meta.file_type();
            let mode = Some(meta.mode() & 0o7777);
            let mtime = Some(meta.mtime());
            let facts = if ft.is_dir() {
                pending.push(rel.clone());
                Facts {
                    kind: "directory",
                    mode,
                    mtime,
                    content: String::new(),
                }
            } else if ft.is_symlink() {
                Facts {
                    kind: "symlink",
                    mode: None,
                    mtime,
                    content: fs::read_link(&path)?.to_string_lossy().into_owned(),
                }
            } else if ft.is_file() {
                let (d, _) = hash_reader(BufReader::new(File::open(&path)?))?;
                Facts {
                    kind: "file",
                    mode,
                    mtime,
                    content: d.to_string(),
                }
            } else {
                Facts {
                    kind: "special file",
                    mode,
                    mtime,
                    content: String::new(),
                }
            };
            out.insert(rel, facts);
        }
    }
    Ok(out)
}

/// The first difference between the stored tree at `dir` and the tree its
/// layer describes, if any.
fn first_difference(dir: &Path, expected: &Tree) -> Option<String> {
    let stored = match tree_facts(dir) {
        Ok(t) => t,
        Err(e) => return Some(format!("cannot read it: {e}")),
    };
    for (path, want) in expected {
        let Some(got) = stored.get(path) else {
            return Some(format!("{} is missing", path.display()));
        };
        let same = got.kind == want.kind
            && got.content == want.content
            && (want.mode.is_none() || got.mode == want.mode)
            && (want.mtime.is_none() || got.mtime == want.mtime);
        if !same {
            return Some(format!(
                "{}: stored {got:?}, the layer has {want:?}",
                path.display()
            ));
        }
    }
    stored
        .keys()
        .find(|p| !expected.contains_key(*p))
        .map(|p| format!("{} is not in the layer", p.display()))
}
