//! The safe unpacker (`src/unpack.rs`), under each preset, into a root
//! that (for layers and .deb data) already holds links out of it, as a
//! lower layer or a hostile earlier member would leave them.
//!
//! Properties, whatever the archive and whether it is accepted:
//! - nothing outside the root changes (names, kinds, modes, sizes,
//!   contents, link targets, inode numbers, mtimes): no write, chmod,
//!   utimes, unlink or rename through a link;
//! - the root holds no device node, fifo or socket;
//! - no file in the root is a hard link to a file outside;
//! - for sources (`Symlinks::Contained`), an accepted archive leaves only
//!   links that resolve inside the root, and so does a tree that passes
//!   `check_links` after its single top directory is stripped.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

use arbitrary::Unstructured;
use imgrep::beneath;
use imgrep::digest::Digest;
use imgrep::unpack::{self as up, Symlinks, UnpackOptions};

use crate::{gen, scratch};

const PRESETS: [UnpackOptions; 4] = [
    UnpackOptions::SOURCE,
    UnpackOptions::DEB,
    UnpackOptions::LAYER,
    UnpackOptions::LAYER_ALONE,
];

pub fn run(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let opts = PRESETS[usize::from(sel % 4)];
    let generated = sel & 4 != 0;
    let case = Case::new(opts);
    if generated {
        let mut u = Unstructured::new(rest);
        let outside = case.outside.as_os_str().as_bytes().to_vec();
        let extra: [&[u8]; 4] = [&outside, b"../outside", b"../../outside/sub", b"out/canary"];
        let Ok(members) = gen::members(&mut u, &extra) else {
            return;
        };
        let mut bytes = gen::tar(&members, true);
        let _ = gen::corrupt(&mut u, &mut bytes);
        case.unpack(&bytes);
    } else {
        case.unpack(rest);
    }
}

/// A scratch directory holding `root/` (the target) and `outside/` (what
/// must never change), with links from the root to outside planted for
/// presets that unpack onto an existing root file system.
pub struct Case {
    base: PathBuf,
    pub root: PathBuf,
    outside: PathBuf,
    opts: UnpackOptions,
}

impl Case {
    pub fn new(opts: UnpackOptions) -> Case {
        let base = scratch::fresh("unpack");
        let outside = base.join("outside");
        let root = base.join("root");
        fs::create_dir_all(outside.join("sub")).unwrap();
        fs::write(outside.join("canary"), b"canary").unwrap();
        fs::write(outside.join("sub/f"), b"f").unwrap();
        fs::create_dir_all(root.join("dir")).unwrap();
        fs::write(root.join("file"), b"y").unwrap();
        fs::write(root.join("dir/file"), b"x").unwrap();
        if opts.symlinks == Symlinks::RootFs {
            symlink("..", root.join("up")).unwrap();
            symlink("../outside", root.join("out")).unwrap();
            symlink(&outside, root.join("abs")).unwrap();
            symlink("../../outside/sub", root.join("dir/lnk")).unwrap();
            symlink(outside.join("canary"), root.join("dir/canary")).unwrap();
        }
        Case {
            base,
            root,
            outside,
            opts,
        }
    }

    /// Unpacks `bytes` and checks every property; returns whether the
    /// unpacker accepted the archive.
    pub fn unpack(&self, bytes: &[u8]) -> bool {
        let before = snapshot(&self.base, &self.root);
        let result = up::unpack(bytes, &self.root, &self.opts);
        self.check(&before, result.is_ok(), "unpacking");
        if result.is_ok() && self.opts.symlinks == Symlinks::Contained {
            // Fetching strips a single top directory after unpacking, then
            // refuses the tree if a link now leaves it.
            let dir = beneath::Dir::open(&self.root).expect("opening the unpacked tree");
            beneath::strip_single_top_dir(&dir).expect("stripping an unpacked tree");
            let kept = dir.check_links().is_ok();
            self.check(&before, kept, "stripping the top directory");
        }
        result.is_ok()
    }

    fn check(&self, before: &Snapshot, accepted: bool, when: &str) {
        let after = snapshot(&self.base, &self.root);
        for (path, old) in before {
            match after.get(path) {
                Some(new) => assert_eq!(old, new, "{when} changed {}", path.display()),
                None => panic!("{when} removed {}", path.display()),
            }
        }
        for path in after.keys() {
            assert!(
                before.contains_key(path),
                "{when} created {} outside the root",
                path.display()
            );
        }
        let outside_inodes: HashSet<(u64, u64)> = before.values().map(|e| e.inode).collect();
        for (path, meta) in walk(&self.root) {
            let ft = meta.file_type();
            assert!(
                ft.is_dir() || ft.is_file() || ft.is_symlink(),
                "{when} made {} a special file ({ft:?})",
                path.display()
            );
            assert!(
                !outside_inodes.contains(&(meta.dev(), meta.ino())),
                "{} is a hard link to a file outside the root",
                path.display()
            );
            if accepted && ft.is_symlink() && self.opts.symlinks == Symlinks::Contained {
                let rel = path.strip_prefix(&self.root).unwrap();
                assert!(
                    resolves_inside(&self.root, rel),
                    "accepted source tree has link {} -> {:?} resolving outside",
                    rel.display(),
                    fs::read_link(&path).unwrap()
                );
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    size: u64,
    mtime: (i64, i64),
    inode: (u64, u64),
    content: Option<Digest>,
    link: Option<PathBuf>,
}

type Snapshot = BTreeMap<PathBuf, Entry>;

/// Everything under `base` but the subtree `skip`, without following links.
fn snapshot(base: &Path, skip: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    for (path, meta) in walk(base) {
        if path.starts_with(skip) {
            continue;
        }
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else {
            "special"
        };
        out.insert(
            path.clone(),
            Entry {
                kind,
                mode: meta.mode(),
                size: meta.len(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                inode: (meta.dev(), meta.ino()),
                content: ft.is_file().then(|| Digest::of(&fs::read(&path).unwrap())),
                link: ft.is_symlink().then(|| fs::read_link(&path).unwrap()),
            },
        );
    }
    out
}

/// `dir` and everything below it, never following a link.
fn walk(dir: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(p) = pending.pop() {
        let meta = fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                pending.push(e.unwrap().path());
            }
        }
        out.push((p, meta));
    }
    out
}

/// Whether the link at `rel` (relative to `root`) resolves inside `root`,
/// following links inside as the kernel would. Conservative: an absolute
/// target or a `..` above the root is outside even where the kernel would
/// stop earlier (a missing or non-directory component).
fn resolves_inside(root: &Path, rel: &Path) -> bool {
    let mut stack: Vec<Vec<u8>> = rel
        .parent()
        .map(|p| p.iter().map(|c| c.as_bytes().to_vec()).collect())
        .unwrap_or_default();
    // Components still to walk, in reverse order: first the link itself.
    let mut pending: Vec<Vec<u8>> = rel
        .file_name()
        .map(|n| vec![n.as_bytes().to_vec()])
        .unwrap_or_default();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        match c.as_slice() {
            b"" | b"." => continue,
            b".." => {
                if stack.pop().is_none() {
                    return false;
                }
                continue;
            }
            _ => {}
        }
        stack.push(c);
        let here: PathBuf = stack.iter().map(|c| OsStr::from_bytes(c)).collect();
        let is_link =
            fs::symlink_metadata(root.join(&here)).is_ok_and(|m| m.file_type().is_symlink());
        if !is_link {
            continue;
        }
        hops += 1;
        if hops > 40 {
            // The kernel gives ELOOP: nothing is reached.
            return true;
        }
        let target = fs::read_link(root.join(&here)).unwrap();
        let target = target.as_os_str().as_bytes();
        if target.starts_with(b"/") {
            return false;
        }
        stack.pop();
        pending.extend(target.split(|&b| b == b'/').rev().map(<[u8]>::to_vec));
    }
    true
}
