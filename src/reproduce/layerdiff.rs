//! A file-level diff of two layer tarballs (docs/reproduce.md): what
//! `imgrep reproduce` prints when a rebuild's layer differs from the
//! expected one. Both layers are read entry by entry (gzip, zstd or plain
//! tar, told apart by their magic bytes), indexed by path and compared field
//! by field; regular files by the sha256 of their contents. For text files
//! whose contents differ, a second pass reads both versions and shows the
//! first differing lines with a few lines of context, unified-diff style.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

/// Text files larger than this are compared by hash only.
const MAX_TEXT: u64 = 1 << 20;
/// Lines of context around a differing region.
const CONTEXT: usize = 3;
/// Differing lines shown per side of one file.
const MAX_SHOWN: usize = 12;

#[derive(Debug, thiserror::Error)]
#[error("{path}: reading the layer: {error}")]
pub struct LayerDiffError {
    pub path: PathBuf,
    pub error: io::Error,
}

/// What the tar header and contents of one path say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub size: u64,
    /// Symbolic or hard link target.
    pub link: Option<String>,
    /// Regular files: the sha256 of the contents.
    pub content: Option<Digest>,
    /// Regular files with no NUL byte: shown line by line when they differ.
    pub text: bool,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:04o}", self.kind, self.mode)?;
        match (&self.link, &self.content) {
            (Some(l), _) => write!(f, " -> {l}"),
            (None, Some(_)) => write!(f, ", {} bytes", self.size),
            (None, None) => Ok(()),
        }
    }
}

/// One path that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added {
        path: String,
        entry: Entry,
    },
    Removed {
        path: String,
        entry: Entry,
    },
    Changed {
        path: String,
        /// `field: expected -> got`, one per differing field.
        fields: Vec<String>,
        /// For text files: a unified-style excerpt of the first difference.
        lines: Vec<String>,
    },
}

impl Change {
    pub fn path(&self) -> &str {
        match self {
            Change::Added { path, .. }
            | Change::Removed { path, .. }
            | Change::Changed { path, .. } => path,
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Added { path, entry } => write!(f, "+ {path}: only in the rebuild ({entry})"),
            Change::Removed { path, entry } => {
                write!(f, "- {path}: only in the expected layer ({entry})")
            }
            Change::Changed {
                path,
                fields,
                lines,
            } => {
                write!(f, "~ {path}: {}", fields.join(", "))?;
                for l in lines {
                    write!(f, "\n    {l}")?;
                }
                Ok(())
            }
        }
    }
}

/// The differences between an expected layer and a rebuilt one, by path in
/// byte order.
pub fn diff_layers(expected: &Path, got: &Path) -> Result<Vec<Change>, LayerDiffError> {
    let old = index(expected)?;
    let new = index(got)?;
    let paths: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let mut changes = Vec::new();
    let mut texts = Vec::new();
    for path in paths {
        match (old.get(path), new.get(path)) {
            (Some(a), None) => changes.push(Change::Removed {
                path: path.clone(),
                entry: a.clone(),
            }),
            (None, Some(b)) => changes.push(Change::Added {
                path: path.clone(),
                entry: b.clone(),
            }),
            (Some(a), Some(b)) if a != b => {
                if a.content != b.content
                    && a.text
                    && b.text
                    && a.size <= MAX_TEXT
                    && b.size <= MAX_TEXT
                {
                    texts.push(path.clone());
                }
                changes.push(Change::Changed {
                    path: path.clone(),
                    fields: fields(a, b),
                    lines: Vec::new(),
                });
            }
            _ => {}
        }
    }
    if !texts.is_empty() {
        let wanted: BTreeSet<String> = texts.into_iter().collect();
        let old_text = contents(expected, &wanted)?;
        let new_text = contents(got, &wanted)?;
        for c in &mut changes {
            if let Change::Changed { path, lines, .. } = c {
                if let (Some(a), Some(b)) = (old_text.get(path), new_text.get(path)) {
                    *lines = line_diff(a, b);
                }
            }
        }
    }
    Ok(changes)
}

fn fields(a: &Entry, b: &Entry) -> Vec<String> {
    let mut out = Vec::new();
    if a.kind != b.kind {
        out.push(format!("type {} -> {}", a.kind, b.kind));
    }
    if a.mode != b.mode {
        out.push(format!("mode {:04o} -> {:04o}", a.mode, b.mode));
    }
    if a.uid != b.uid {
        out.push(format!("uid {} -> {}", a.uid, b.uid));
    }
    if a.gid != b.gid {
        out.push(format!("gid {} -> {}", a.gid, b.gid));
    }
    if a.mtime != b.mtime {
        out.push(format!("mtime {} -> {}", a.mtime, b.mtime));
    }
    if a.size != b.size {
        out.push(format!("size {} -> {}", a.size, b.size));
    }
    if a.link != b.link {
        let show = |l: &Option<String>| l.clone().unwrap_or_else(|| "(none)".into());
        out.push(format!("link {} -> {}", show(&a.link), show(&b.link)));
    }
    if a.content != b.content {
        let show = |d: &Option<Digest>| d.map_or_else(|| "(none)".into(), |d| d.to_string());
        out.push(format!(
            "content {} -> {}",
            show(&a.content),
            show(&b.content)
        ));
    }
    out
}

/// Opens a layer blob, decompressing it by its magic bytes.
fn open(path: &Path) -> io::Result<Box<dyn Read>> {
    let mut f = File::open(path)?;
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut f, &mut magic)?;
    let head = io::Cursor::new(magic[..n].to_vec());
    let stream = BufReader::new(head.chain(f));
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        [0x28, 0xb5, 0x2f, 0xfd] => Box::new(zstd::stream::read::Decoder::with_buffer(stream)?),
        _ => Box::new(stream),
    })
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Every entry of a layer by path (a later duplicate wins, as on unpacking).
fn index(path: &Path) -> Result<BTreeMap<String, Entry>, LayerDiffError> {
    let err = |source| LayerDiffError {
        path: path.to_owned(),
        error: source,
    };
    let mut archive = tar::Archive::new(open(path).map_err(err)?);
    let mut out = BTreeMap::new();
    for entry in archive.entries().map_err(err)? {
        let mut entry = entry.map_err(err)?;
        let name = entry_path(&entry).map_err(err)?;
        let header = entry.header();
        let kind = kind_of(header.entry_type());
        let link = entry
            .link_name()
            .map_err(err)?
            .map(|l| l.to_string_lossy().into_owned());
        let e = Entry {
            kind,
            mode: header.mode().map_err(err)? & 0o7777,
            uid: header.uid().map_err(err)?,
            gid: header.gid().map_err(err)?,
            mtime: header.mtime().map_err(err)?,
            size: entry.size(),
            link,
            content: None,
            text: false,
        };
        let e = if kind == "file" {
            let (digest, text) = hash_contents(&mut entry).map_err(err)?;
            Entry {
                content: Some(digest),
                text,
                ..e
            }
        } else {
            e
        };
        out.insert(name, e);
    }
    Ok(out)
}

fn entry_path<R: Read>(entry: &tar::Entry<'_, R>) -> io::Result<String> {
    let p = entry.path()?;
    let s = p.to_string_lossy();
    let s = s.strip_prefix("./").unwrap_or(&s);
    Ok(s.trim_end_matches('/').to_owned())
}

fn kind_of(t: tar::EntryType) -> &'static str {
    match t {
        tar::EntryType::Regular | tar::EntryType::Continuous => "file",
        tar::EntryType::Directory => "dir",
        tar::EntryType::Symlink => "symlink",
        tar::EntryType::Link => "hardlink",
        tar::EntryType::Char => "char device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "fifo",
        _ => "other",
    }
}

/// The sha256 of a file's contents and whether it looks like text (no NUL).
fn hash_contents(r: &mut impl Read) -> io::Result<(Digest, bool)> {
    let mut hasher = Sha256::new();
    let mut text = true;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        text &= !buf[..n].contains(&0);
        hasher.update(&buf[..n]);
    }
    let digest: [u8; 32] = hasher.finalize().into();
    Ok((Digest::from_bytes(digest), text))
}

/// The contents of the `wanted` regular files of a layer.
fn contents(
    path: &Path,
    wanted: &BTreeSet<String>,
) -> Result<BTreeMap<String, String>, LayerDiffError> {
    let err = |source| LayerDiffError {
        path: path.to_owned(),
        error: source,
    };
    let mut archive = tar::Archive::new(open(path).map_err(err)?);
    let mut out = BTreeMap::new();
    for entry in archive.entries().map_err(err)? {
        let mut entry = entry.map_err(err)?;
        let name = entry_path(&entry).map_err(err)?;
        if wanted.contains(&name) && kind_of(entry.header().entry_type()) == "file" {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(err)?;
            out.insert(name, String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    Ok(out)
}

/// The first region where `a` and `b` differ, as one unified-diff hunk:
/// the common prefix and suffix of lines are cut to `CONTEXT` lines, and at
/// most `MAX_SHOWN` lines of each side are shown.
pub fn line_diff(a: &str, b: &str) -> Vec<String> {
    let old: Vec<&str> = a.lines().collect();
    let new: Vec<&str> = b.lines().collect();
    let prefix = old.iter().zip(&new).take_while(|(x, y)| x == y).count();
    let suffix = old[prefix..]
        .iter()
        .rev()
        .zip(new[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (old_end, new_end) = (old.len() - suffix, new.len() - suffix);
    if prefix == old_end && prefix == new_end {
        // Same lines: only line endings or a final newline differ.
        return vec!["(the lines are equal; line endings or the final newline differ)".into()];
    }
    let start = prefix.saturating_sub(CONTEXT);
    let old_stop = (old_end + CONTEXT).min(old.len());
    let new_stop = (new_end + CONTEXT).min(new.len());
    let mut out = vec![format!(
        "@@ -{} +{} @@",
        range(start, old_stop),
        range(start, new_stop)
    )];
    out.extend(old[start..prefix].iter().map(|l| format!(" {l}")));
    let side = |lines: &[&str], sign: char, out: &mut Vec<String>| {
        out.extend(lines.iter().take(MAX_SHOWN).map(|l| format!("{sign}{l}")));
        if lines.len() > MAX_SHOWN {
            out.push(format!("{sign}… ({} more lines)", lines.len() - MAX_SHOWN));
        }
    };
    side(&old[prefix..old_end], '-', &mut out);
    side(&new[prefix..new_end], '+', &mut out);
    out.extend(old[old_end..old_stop].iter().map(|l| format!(" {l}")));
    out
}

/// A hunk range as unified diffs write it: 1-based start, and a count
/// unless it is 1.
fn range(start: usize, stop: usize) -> String {
    match stop - start {
        1 => format!("{}", start + 1),
        0 => format!("{start},0"),
        n => format!("{},{n}", start + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_diff_shows_context_and_both_sides() {
        let a = "1\n2\n3\n4\n5\n6\n7\n8\n";
        let b = "1\n2\n3\n4\nfive\n6\n7\n8\n";
        assert_eq!(
            line_diff(a, b),
            [
                "@@ -2,7 +2,7 @@",
                " 2",
                " 3",
                " 4",
                "-5",
                "+five",
                " 6",
                " 7",
                " 8"
            ]
        );
    }

    #[test]
    fn line_diff_of_appended_lines() {
        assert_eq!(line_diff("a\n", "a\nb\n"), ["@@ -1 +1,2 @@", " a", "+b"]);
        assert_eq!(
            line_diff("a", "a\n"),
            ["(the lines are equal; line endings or the final newline differ)"]
        );
    }

    #[test]
    fn line_diff_caps_long_regions() {
        let a: String = (0..40).map(|i| format!("{i}\n")).collect();
        let d = line_diff(&a, "");
        assert_eq!(d[0], "@@ -1,40 +0,0 @@");
        assert_eq!(d.len(), 1 + MAX_SHOWN + 1);
        assert_eq!(d.last().unwrap(), "-… (28 more lines)");
    }
}
