//! The content-addressed store (DESIGN 5b, docs/store.md).
//!
//! ```text
//! <root>/lock                      store-wide lock: shared by every process, exclusive for gc
//! <root>/sources/sha256/<hex>      verified source files
//! <root>/trees/nar-sha256/<hex>/   verified unpacked source trees, by NAR hash
//! <root>/blobs/sha256/<hex>        OCI blobs (layers, configs, manifests)
//! <root>/layers/sha256/<hex>/      unpacked layers by diff_id, top directory read-only
//! <root>/records/<hex>             build records: input digest -> image manifest digest
//! <root>/logs/<package>/<hex>.log  build logs by package and input digest
//! <root>/locks/<kind>-<key>        per-entry lock files
//! <root>/tmp/                      everything being written; never trusted
//! <root>/trash/                    what is being removed in the background
//! ```
//!
//! An entry exists only once complete: it is written under tmp/ (same file
//! system), synced, then renamed to its final name. A killed process leaves
//! at most garbage under tmp/, which the next process that finds the store
//! otherwise unused deletes.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::{NamedTempFile, TempDir};

use crate::digest::Digest;
use crate::fsutil::sync_dir;
use crate::nar::NarHash;

mod layers;
mod trash;
mod verify;

pub use verify::{Checked, Problem, VerifyReport};

/// Environment variable naming the store directory (same as `--store`).
pub const STORE_ENV: &str = "IMGREP_STORE";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("no store directory: pass --store DIR or set {STORE_ENV} (no cache directory is known for this user)")]
    NoDefault,
    #[error("{path}: malformed build record: expected one `sha256:<64 hex>` line")]
    BadRecord { path: PathBuf },
    #[error("layer {diff_id}: {error}")]
    Layer {
        diff_id: Digest,
        error: crate::unpack::UnpackError,
    },
    #[error(
        "layer diff_id mismatch: expected {expected}, got {got} (the uncompressed stream's sha256)"
    )]
    DiffId { expected: Digest, got: Digest },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        error: source,
    }
}

/// An open store. Holds the store-wide lock shared for as long as it lives.
pub struct Store {
    root: PathBuf,
    lock: File,
    trash: trash::Trash,
}

/// An exclusive lock on one store entry, released on drop.
pub struct EntryLock {
    _file: File,
}

/// What `gc` keeps. Everything else (and all of tmp/) is deleted.
#[derive(Debug, Default, Clone)]
pub struct GcRoots {
    pub sources: HashSet<Digest>,
    pub trees: HashSet<NarHash>,
    pub blobs: HashSet<Digest>,
    pub layers: HashSet<Digest>,
    /// Input digests whose build records (and logs) are kept.
    pub records: HashSet<Digest>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub removed: u64,
    pub bytes: u64,
}

const SUBDIRS: [&str; 9] = [
    "sources/sha256",
    "trees/nar-sha256",
    "blobs/sha256",
    "layers/sha256",
    "records",
    "logs",
    "locks",
    "tmp",
    "trash",
];

impl Store {
    /// The store directory: `flag` (from `--store` or `IMGREP_STORE`, which
    /// clap folds together), else `<user cache dir>/imgrep`.
    pub fn default_root(flag: Option<&Path>) -> Result<PathBuf, StoreError> {
        if let Some(p) = flag {
            return Ok(p.to_owned());
        }
        if let Some(p) = std::env::var_os(STORE_ENV).filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        dirs::cache_dir()
            .map(|d| d.join("imgrep"))
            .ok_or(StoreError::NoDefault)
    }

    /// Opens (creating if needed) the store at `root`. Waits while a gc runs.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        for sub in SUBDIRS {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        let root = fs::canonicalize(root).map_err(io_err(root))?;
        let lock_path = root.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        let dup = lock.try_clone().map_err(io_err(&lock_path))?;
        let trash = trash::Trash::new(root.join("trash"), dup);
        let store = Store { root, lock, trash };
        // Alone with the store: what tmp/ holds is a dead process's garbage.
        if flock(&store.lock, libc::LOCK_EX | libc::LOCK_NB).map_err(io_err(&lock_path))? {
            store.clean_tmp()?;
        }
        flock(&store.lock, libc::LOCK_SH).map_err(io_err(&lock_path))?;
        if fs::read_dir(store.trash.dir()).is_ok_and(|mut d| d.next().is_some()) {
            store.trash.wake();
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a verified source file with this sha256 lives.
    pub fn source_path(&self, d: &Digest) -> PathBuf {
        self.root.join("sources/sha256").join(d.hex())
    }

    /// Where a verified unpacked source tree with this NAR hash lives.
    pub fn tree_path(&self, h: &NarHash) -> PathBuf {
        self.root.join("trees/nar-sha256").join(h.hex())
    }

    /// Where an OCI blob lives (image blobs are written here by `oci`).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// Stores `bytes` as a blob (a no-op if present); returns its digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::of(bytes);
        let dest = self.blob_path(&digest);
        if dest.exists() {
            return Ok(digest);
        }
        let mut tmp = self.temp_file()?;
        let tmp_path = tmp.path().to_owned();
        tmp.write_all(bytes).map_err(io_err(&tmp_path))?;
        self.commit_file(tmp, &dest)?;
        Ok(digest)
    }

    /// Where the unpacked layer with this diff_id lives.
    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers/sha256").join(diff_id.hex())
    }

    /// The build log of `package` for one input digest. Logs are written
    /// while a build runs, so they are not atomic; they are never trusted.
    pub fn log_path(&self, package: &str, input: &Digest) -> PathBuf {
        self.root
            .join("logs")
            .join(package)
            .join(format!("{}.log", input.hex()))
    }

    fn record_path(&self, input: &Digest) -> PathBuf {
        self.root.join("records").join(input.hex())
    }

    /// The image manifest digest recorded for an input digest, if built.
    pub fn record(&self, input: &Digest) -> Result<Option<Digest>, StoreError> {
        let path = self.record_path(input);
        match fs::read_to_string(&path) {
            Ok(s) => s
                .trim_end()
                .parse()
                .map(Some)
                .map_err(|_| StoreError::BadRecord { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Records that `input` built the image `manifest`. Call it last, after
    /// every blob the manifest names is in the store.
    pub fn write_record(&self, input: &Digest, manifest: &Digest) -> Result<(), StoreError> {
        let mut tmp = self.temp_file()?;
        let tmp_path = tmp.path().to_owned();
        writeln!(tmp, "{manifest}").map_err(io_err(&tmp_path))?;
        self.commit_file(tmp, &self.record_path(input))
    }

    /// Takes the exclusive lock of one entry, waiting for another process
    /// that holds it. `kind` and `key` name the entry (e.g. "source", hex).
    /// Check again for the entry after locking: the other process may have
    /// written it.
    pub fn lock_entry(&self, kind: &str, key: &str) -> Result<EntryLock, StoreError> {
        let path = self.root.join("locks").join(format!("{kind}-{key}"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        flock(&file, libc::LOCK_EX).map_err(io_err(&path))?;
        Ok(EntryLock { _file: file })
    }

    /// A new temporary file under tmp/, for `commit_file`.
    pub fn temp_file(&self) -> Result<NamedTempFile, StoreError> {
        let dir = self.root.join("tmp");
        tempfile::Builder::new()
            .prefix("f-")
            .tempfile_in(&dir)
            .map_err(io_err(&dir))
    }

    /// A new temporary directory under tmp/, for `commit_dir`.
    pub fn temp_dir(&self) -> Result<TempDir, StoreError> {
        let dir = self.root.join("tmp");
        tempfile::Builder::new()
            .prefix("d-")
            .tempdir_in(&dir)
            .map_err(io_err(&dir))
    }

    /// Gives a temporary directory that is no longer needed (a finished
    /// build's work) to the background remover: one rename now, the removal
    /// while imgrep goes on (src/store/trash.rs).
    pub fn discard(&self, tmp: TempDir) {
        let path = tmp.keep();
        if self.trash.discard(&path).is_err() {
            let _ = remove_tree(&path);
        }
    }

    /// Makes a complete temporary file the entry `dest`: fsync, rename,
    /// fsync of the directory. Hold the entry's lock.
    pub fn commit_file(&self, tmp: NamedTempFile, dest: &Path) -> Result<(), StoreError> {
        tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
        let dir = dest.parent().expect("store entries have a parent");
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        tmp.persist(dest).map_err(|e| io_err(dest)(e.error))?;
        sync_dir(dir).map_err(io_err(dir))
    }

    /// Makes a complete temporary directory the entry `dest`: syncs its
    /// contents, renames, syncs the parent. With `read_only`, the entry's top
    /// directory loses its write bits so nothing adds to a tree that others
    /// share.
    pub fn commit_dir(&self, tmp: TempDir, dest: &Path, read_only: bool) -> Result<(), StoreError> {
        let src = tmp.keep();
        // A small tree gets an fsync per entry; a large one one syncfs,
        // cheaper than thousands of fsyncs. syncfs also waits for everything
        // else dirty on the file system, which on a shared build machine
        // cost about a second per call for a 20-file layer.
        // An entry it cannot open (mode 000 to a non-root owner) falls back
        // to syncfs too.
        if !sync_entries(&src, SYNC_EACH_UP_TO).unwrap_or(false) {
            nix::unistd::syncfs(self.lock.as_raw_fd())
                .map_err(|e| io_err(&self.root)(io::Error::from(e)))?;
        }
        let dir = dest.parent().expect("store entries have a parent");
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        fs::rename(&src, dest).map_err(io_err(dest))?;
        sync_dir(dir).map_err(io_err(dir))?;
        if read_only {
            fs::set_permissions(dest, fs::Permissions::from_mode(0o555)).map_err(io_err(dest))?;
        }
        Ok(())
    }

    /// Deletes everything no root references, and all of tmp/ and locks/.
    /// Waits until no other imgrep process has the store open.
    pub fn gc(&self, roots: &GcRoots) -> Result<GcReport, StoreError> {
        let lock_path = self.root.join("lock");
        flock(&self.lock, libc::LOCK_EX).map_err(io_err(&lock_path))?;
        let result = self.gc_locked(roots);
        flock(&self.lock, libc::LOCK_SH).map_err(io_err(&lock_path))?;
        result
    }

    fn gc_locked(&self, roots: &GcRoots) -> Result<GcReport, StoreError> {
        let mut report = GcReport::default();
        // The sweep of trash/ below removes what the remover has not.
        self.trash.wait();
        let keep_digest = |set: &HashSet<Digest>, name: &str| {
            Digest::from_hex(name).is_ok_and(|d| set.contains(&d))
        };
        let keep_tree = |name: &str| roots.trees.iter().any(|h| h.hex() == name);
        // Records first, then what they name, unpacked layers before their
        // blobs: a gc killed halfway never leaves a record naming a blob it
        // deleted, nor a layer whose blob is gone (`imgrep store verify`).
        self.sweep("records", &mut report, |n| keep_digest(&roots.records, n))?;
        self.sweep("layers/sha256", &mut report, |n| {
            keep_digest(&roots.layers, n)
        })?;
        self.sweep("blobs/sha256", &mut report, |n| {
            keep_digest(&roots.blobs, n)
        })?;
        self.sweep("sources/sha256", &mut report, |n| {
            keep_digest(&roots.sources, n)
        })?;
        self.sweep("trees/nar-sha256", &mut report, keep_tree)?;
        let logs = self.root.join("logs");
        for pkg in fs::read_dir(&logs).map_err(io_err(&logs))? {
            let pkg = pkg.map_err(io_err(&logs))?.file_name();
            let rel = Path::new("logs").join(&pkg);
            self.sweep(rel.to_str().unwrap_or("logs/?"), &mut report, |n| {
                n.strip_suffix(".log")
                    .is_some_and(|h| keep_digest(&roots.records, h))
            })?;
            // Empty package directories go too; a full one stays.
            let _ = fs::remove_dir(logs.join(&pkg));
        }
        // Lock files are not entries: nobody holds one now; not counted.
        self.sweep("locks", &mut GcReport::default(), |_| false)?;
        self.sweep("tmp", &mut report, |_| false)?;
        self.sweep("trash", &mut report, |_| false)?;
        Ok(report)
    }

    /// Removes what killed processes left: all of tmp/ (moved into the
    /// trash, which the remover empties in the background: a killed gcc
    /// build leaves over 140,000 files), and the `.tmp-*` files that image
    /// writing (the store is also an OCI layout) puts beside blobs and
    /// index.json before renaming them.
    fn clean_tmp(&self) -> Result<(), StoreError> {
        let stray = |n: &str| !n.starts_with(".tmp-");
        self.sweep("blobs/sha256", &mut GcReport::default(), stray)?;
        self.sweep(".", &mut GcReport::default(), stray)?;
        let tmp = self.root.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(io_err(&tmp))? {
            let path = entry.map_err(io_err(&tmp))?.path();
            if self.trash.discard(&path).is_err() {
                remove_tree(&path).map_err(io_err(&path))?;
            }
        }
        Ok(())
    }

    /// Removes every child of `<root>/<rel>` whose name `keep` rejects.
    fn sweep(
        &self,
        rel: &str,
        report: &mut GcReport,
        keep: impl Fn(&str) -> bool,
    ) -> Result<(), StoreError> {
        let dir = self.root.join(rel);
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name();
            if name.to_str().is_some_and(&keep) {
                continue;
            }
            let mut path = entry.path();
            if !["tmp", "trash"].contains(&rel)
                && entry.file_type().map_err(io_err(&path))?.is_dir()
            {
                // A tree removed in place and killed halfway would stay
                // under its entry name, trusted: move it into tmp/ first.
                // The whole temporary directory goes, not only the entry in
                // it, so that the sweep of tmp/ does not count it again.
                let doomed = self.temp_dir()?.keep();
                fs::rename(&path, doomed.join("entry")).map_err(io_err(&path))?;
                path = doomed;
            }
            report.bytes += remove_tree(&path).map_err(io_err(&path))?;
            report.removed += 1;
        }
        Ok(())
    }
}

/// Trees with at most this many entries are synced entry by entry.
const SYNC_EACH_UP_TO: usize = 256;

/// fsyncs every file and directory under `dir` (contents first) if there
/// are at most `limit` entries, and says whether it did. Symbolic links need
/// no sync of their own: their directory's holds them.
fn sync_entries(dir: &Path, limit: usize) -> io::Result<bool> {
    let mut entries = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            let ft = entry.file_type()?;
            if ft.is_dir() {
                pending.push(entry.path());
            } else if ft.is_file() {
                entries.push(entry.path());
            }
            if entries.len() + pending.len() > limit {
                return Ok(false);
            }
        }
        entries.push(d);
    }
    for path in &entries {
        File::open(path)?.sync_all()?;
    }
    Ok(true)
}

/// Removes a file or a whole tree, making read-only directories writable
/// first (unpacked trees and layers keep their modes). Returns the bytes
/// freed (file sizes). Never follows symbolic links: the tree is removed
/// beneath a descriptor of its parent (`crate::beneath`).
pub fn remove_tree(path: &Path) -> io::Result<u64> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a removable path", path.display()),
        ));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let dir = match crate::beneath::Dir::open(parent) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        other => other?,
    };
    Ok(dir.remove_all(name.as_bytes())?)
}

/// flock(2), retried on EINTR. With LOCK_NB, returns false if the lock is
/// held elsewhere; otherwise true once it is held.
fn flock(file: &File, op: libc::c_int) -> io::Result<bool> {
    loop {
        // SAFETY: flock on a valid descriptor that `file` owns.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if op & libc::LOCK_NB != 0 => return Ok(false),
            _ => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_trees_are_synced_entry_by_entry() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/b/f"), b"x").unwrap();
        fs::write(dir.path().join("g"), b"y").unwrap();
        std::os::unix::fs::symlink("g", dir.path().join("l")).unwrap();
        // 5 entries to sync: the top, a, a/b, a/b/f, g.
        assert!(sync_entries(dir.path(), 5).unwrap());
        assert!(!sync_entries(dir.path(), 3).unwrap());
    }

    #[test]
    fn entries_commit_and_gc_keeps_roots() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let keep = Digest::of(b"keep");
        let drop = Digest::of(b"drop");
        for d in [keep, drop] {
            let mut t = store.temp_file().unwrap();
            t.write_all(d.hex().as_bytes()).unwrap();
            store.commit_file(t, &store.source_path(&d)).unwrap();
            let t = store.temp_dir().unwrap();
            fs::write(t.path().join("f"), b"x").unwrap();
            store.commit_dir(t, &store.layer_path(&d), true).unwrap();
        }
        store.write_record(&keep, &drop).unwrap();
        let blob = store.put_blob(b"{}").unwrap();
        assert_eq!(fs::read(store.blob_path(&blob)).unwrap(), b"{}");
        assert_eq!(store.put_blob(b"{}").unwrap(), blob);
        assert_eq!(store.record(&keep).unwrap(), Some(drop));
        assert_eq!(store.record(&drop).unwrap(), None);
        let junk = store.root().join("tmp/f-stale");
        fs::write(&junk, b"half").unwrap();

        let mut roots = GcRoots::default();
        roots.sources.insert(keep);
        roots.layers.insert(keep);
        let report = store.gc(&roots).unwrap();
        // drop's source and layer, keep's record (not a root), the blob, the junk.
        assert_eq!(report.removed, 5, "{report:?}");
        assert!(!store.blob_path(&blob).exists());
        assert!(store.source_path(&keep).exists());
        assert!(!store.source_path(&drop).exists());
        assert!(store.layer_path(&keep).join("f").exists());
        assert!(!store.layer_path(&drop).exists());
        assert!(!junk.exists());
        assert_eq!(store.record(&keep).unwrap(), None);
    }

    #[test]
    fn stale_tmp_cleaned_only_when_alone() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).unwrap();
        let junk = first.root().join("tmp/d-killed");
        fs::create_dir(&junk).unwrap();
        fs::set_permissions(&junk, fs::Permissions::from_mode(0o500)).unwrap();
        // Another process (here: another open) is using the store: keep it.
        let second = Store::open(dir.path()).unwrap();
        assert!(junk.exists());
        drop((first, second));
        let third = Store::open(dir.path()).unwrap();
        assert!(!junk.exists());
        // Moved into the trash, where the remover takes it.
        third.trash.wait();
        assert_eq!(fs::read_dir(third.root().join("trash")).unwrap().count(), 0);
    }

    /// A tree like a build's work: a read-only directory, many files.
    fn work_tree(store: &Store) -> TempDir {
        let work = store.temp_dir().unwrap();
        let sub = work.path().join("build/obj");
        fs::create_dir_all(&sub).unwrap();
        for i in 0..200 {
            fs::write(sub.join(format!("f{i}.o")), b"obj").unwrap();
        }
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o555)).unwrap();
        work
    }

    #[test]
    fn discarded_work_leaves_tmp_at_once_and_the_trash_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (work_tree(&store), work_tree(&store));
        store.discard(a);
        store.discard(b);
        assert_eq!(fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);
        store.trash.wait();
        assert_eq!(fs::read_dir(store.root().join("trash")).unwrap().count(), 0);
        // The remover stopped; the next discard starts it again.
        store.discard(work_tree(&store));
        store.trash.wait();
        assert_eq!(fs::read_dir(store.root().join("trash")).unwrap().count(), 0);
    }

    #[test]
    fn gc_empties_the_trash_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // A process that exited with the remover halfway left this.
        let left = store.root().join("trash/d-left");
        fs::create_dir_all(left.join("a")).unwrap();
        fs::write(left.join("a/f"), b"x").unwrap();
        let report = store.gc(&GcRoots::default()).unwrap();
        assert!(!left.exists());
        assert!(store.root().join("trash").is_dir(), "{report:?}");
        store.discard(work_tree(&store));
        store.trash.wait();
        assert_eq!(fs::read_dir(store.root().join("trash")).unwrap().count(), 0);
    }
}
