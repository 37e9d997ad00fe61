//! `index.json`: what a seed tarball holds, member by member, with the
//! sha256 of every file, so that a reader can tell a complete, intact tarball
//! from anything else before using any of it.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sys::stat::{FchmodatFlags, Mode};
use nix::sys::time::TimeSpec;
use serde::{Deserialize, Serialize};

use super::{SeedError, TREES_DIR};
use crate::beneath::Dir;
use crate::digest::{hash_reader, Digest};

/// The index member's name at the tarball's root.
pub const INDEX: &str = "index.json";
/// The index's own sha256, as `sha256sum` writes it: `<hex>  index.json\n`.
pub const INDEX_SHA256: &str = "index.json.sha256";
/// Bumped on any change of the tarball's layout or of the index's fields.
pub const INDEX_TYPE: &str = "imgrep.seed-tarball/v1";

/// The index: canonical JSON (src/canonical.rs), so one tarball content has
/// exactly one index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    #[serde(rename = "type")]
    pub kind: String,
    /// The packages asked for at export; empty: every package of the tree.
    pub packages: Vec<String>,
    /// Every package the tarball has a recipe for, in build order.
    pub closure: Vec<String>,
    /// Each pinned source of the closure and where it is in the tarball.
    pub sources: Vec<SourceEntry>,
    /// Every member but the index and its checksum, in byte-wise path order.
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceEntry {
    pub package: String,
    /// As written in the recipe: 64 hex digits (file) or `sha256-<base64>` (tree).
    pub pin: String,
    /// The member holding it: a file, or the top of an unpacked tree.
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberKind {
    File,
    Dir,
    Symlink,
}

/// One member. Modes and mtimes are recorded only inside source trees: the
/// packer normalises both, and a build sees a tree's modes and times exactly
/// as they were in the exporting store (make compares mtimes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: MemberKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub executable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_nsec: Option<i64>,
}

fn is_false(b: &bool) -> bool {
    !b
}

impl Member {
    /// The member without what the packer normalises (modes, times).
    fn content(&self) -> Member {
        Member {
            mode: None,
            mtime: None,
            mtime_nsec: None,
            ..self.clone()
        }
    }

    fn describe(&self) -> String {
        match self.kind {
            MemberKind::Dir => "a directory".into(),
            MemberKind::Symlink => format!(
                "a symbolic link to {:?}",
                self.target.as_deref().unwrap_or_default()
            ),
            MemberKind::File => format!(
                "a {}file of {} bytes with {}",
                if self.executable { "executable " } else { "" },
                self.size.unwrap_or_default(),
                self.sha256.map(|d| d.to_string()).unwrap_or_default()
            ),
        }
    }
}

/// Every entry under `root` except the index files, sorted by path bytes,
/// files hashed. Entries inside source trees keep their mode and mtime.
pub fn scan(root: &Path) -> Result<Vec<Member>, SeedError> {
    let mut out = Vec::new();
    walk(root, "", &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<Member>) -> Result<(), SeedError> {
    for entry in fs::read_dir(dir).map_err(SeedError::io(dir, "reading the directory"))? {
        let entry = entry.map_err(SeedError::io(dir, "reading the directory"))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(SeedError::Io {
                path,
                what: "file name".into(),
                error: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not UTF-8 (an index names every member in JSON)",
                ),
            });
        };
        let rel = format!("{prefix}{name}");
        if rel == super::INDEX || rel == super::INDEX_SHA256 {
            continue;
        }
        let meta = fs::symlink_metadata(&path).map_err(SeedError::io(&path, "reading"))?;
        let mut m = Member {
            path: rel.clone(),
            kind: MemberKind::Dir,
            sha256: None,
            size: None,
            executable: false,
            target: None,
            mode: None,
            mtime: None,
            mtime_nsec: None,
        };
        if in_tree(&rel) {
            if !meta.file_type().is_symlink() {
                m.mode = Some(meta.mode() & 0o7777);
            }
            m.mtime = Some(meta.mtime());
            m.mtime_nsec = Some(meta.mtime_nsec()).filter(|&n| n != 0);
        }
        let ft = meta.file_type();
        if ft.is_dir() {
            out.push(m);
            walk(&path, &format!("{rel}/"), out)?;
            continue;
        }
        if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(SeedError::io(&path, "reading the link"))?;
            m.kind = MemberKind::Symlink;
            m.target = Some(target.to_string_lossy().into_owned());
        } else if ft.is_file() {
            let (digest, size) = fs::File::open(&path)
                .and_then(hash_reader)
                .map_err(SeedError::io(&path, "hashing"))?;
            m.kind = MemberKind::File;
            m.sha256 = Some(digest);
            m.size = Some(size);
            m.executable = meta.mode() & 0o100 != 0;
        } else {
            return Err(SeedError::Io {
                path,
                what: "scanning".into(),
                error: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not a regular file, directory or symbolic link",
                ),
            });
        }
        out.push(m);
    }
    Ok(())
}

/// Strictly inside a source tree (not the tree's top directory itself).
fn in_tree(rel: &str) -> bool {
    rel.strip_prefix(TREES_DIR)
        .and_then(|r| r.strip_prefix('/'))
        .is_some_and(|r| r.contains('/'))
}

/// The first differences between what the index lists and what `found`
/// holds (both sorted), one line each; empty when they agree.
pub fn differences(listed: &[Member], found: &[Member]) -> Vec<String> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < listed.len() || j < found.len() {
        let (l, f) = (listed.get(i), found.get(j));
        match (l, f) {
            (Some(l), Some(f)) if l.path == f.path => {
                if l.content() != f.content() {
                    out.push(format!(
                        "member {}: index.json lists {}, the tarball holds {}",
                        l.path,
                        l.describe(),
                        f.describe()
                    ));
                }
                i += 1;
                j += 1;
            }
            (Some(l), None) => {
                out.push(missing(l));
                i += 1;
            }
            (Some(l), Some(f)) if l.path < f.path => {
                out.push(missing(l));
                i += 1;
            }
            (_, Some(f)) => {
                out.push(format!(
                    "member {}: in the tarball, not listed in index.json",
                    f.path
                ));
                j += 1;
            }
            (None, None) => unreachable!("the loop runs while one side has members"),
        }
    }
    out
}

fn missing(m: &Member) -> String {
    format!(
        "member {}: listed in index.json, missing from the tarball",
        m.path
    )
}

/// Gives the members of trees under `root` their recorded modes and mtimes,
/// deepest first, so a directory's own time is set after its contents.
/// Paths are resolved beneath `root` and never through a link
/// (`crate::beneath`); files never get setuid or setgid back (sources drop
/// them, docs/store.md).
pub fn restore_times(root: &Path, members: &[Member]) -> Result<(), SeedError> {
    let top = Dir::open(root).map_err(SeedError::io(root, "opening"))?;
    for m in members.iter().rev() {
        let path = root.join(&m.path);
        let fail = |what: &str, e: io::Error| SeedError::Io {
            path: path.clone(),
            what: what.into(),
            error: e,
        };
        let rel = Path::new(&m.path);
        let (parent, name) = match (rel.parent(), rel.file_name()) {
            (Some(p), Some(n)) => (p, n.as_bytes()),
            _ => continue,
        };
        let dir = top
            .open_dir(parent)
            .map_err(|e| fail("setting the recorded mode", e.into()))?;
        if let Some(mode) = m.mode {
            let mode = match m.kind {
                MemberKind::Dir => mode,
                _ => mode & !0o6000,
            };
            // The member is the file or directory the index lists (checked
            // against an lstat walk of the same tree): not a link.
            nix::sys::stat::fchmodat(
                Some(dir.as_fd().as_raw_fd()),
                name,
                Mode::from_bits_truncate(mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| fail("setting the recorded mode", e.into()))?;
        }
        if let Some(secs) = m.mtime {
            let mtime = TimeSpec::new(secs, m.mtime_nsec.unwrap_or(0));
            dir.set_mtime(name, &mtime)
                .map_err(|e| fail("setting the recorded mtime", e.into()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, byte: u8) -> Member {
        Member {
            path: path.into(),
            kind: MemberKind::File,
            sha256: Some(Digest::of(&[byte])),
            size: Some(1),
            executable: false,
            target: None,
            mode: None,
            mtime: None,
            mtime_nsec: None,
        }
    }

    #[test]
    fn differences_name_each_member() {
        let listed = [file("a", 1), file("b", 2), file("c", 3)];
        let found = [file("a", 1), file("b", 9), file("d", 4)];
        let d = differences(&listed, &found);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].starts_with("member b: index.json lists a file of 1 bytes with sha256:"));
        assert_eq!(
            d[1],
            "member c: listed in index.json, missing from the tarball"
        );
        assert_eq!(d[2], "member d: in the tarball, not listed in index.json");
        let mut timed = file("a", 1);
        timed.mtime = Some(5);
        assert!(differences(&[timed], &[file("a", 1)]).is_empty());
    }

    #[test]
    fn only_entries_inside_trees_keep_times() {
        assert!(in_tree("trees/nar-sha256/ab/x"));
        assert!(!in_tree("trees/nar-sha256/ab"));
        assert!(!in_tree("trees/nar-sha256"));
        assert!(!in_tree("sources/sha256/ab"));
    }
}
