//! Fetching pinned sources into the store (docs/fetch.md).
//!
//! Order of attempts: local source directories, the recipe's URLs in order
//! (`mirror://` ones expanded through their mirrors), then the fallback
//! mirrors. The hash decides, never the origin: a file is hashed while it
//! streams into a temporary file of the store and kept only if it matches;
//! a tree is unpacked with the safe unpacker, stripped of a single
//! top-level directory (or cut to the subtree the recipe names, for which
//! a `.deb` is its data.tar), refused if a link leaves it, NAR-hashed and
//! kept only if that matches.

mod config;
mod http;
pub mod local;

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub use config::{
    ConfigError, FetchConfig, CONFIG_ENV, FALLBACK_MIRRORS_ENV, OFFLINE_ENV, SOURCE_DIRS_ENV,
};
pub use local::{copy_tree, file_name_of};

use crate::deb::Deb;
use crate::digest::{Digest, HashingWriter};
use crate::mirror::{join_url, Resolved};
use crate::nar::{self, NarHash};
use crate::store::{Store, StoreError};
use crate::unpack::{self, UnpackOptions};

/// What a source is pinned by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pin {
    /// sha256 of the file.
    File(Digest),
    /// NAR sha256 of the unpacked tree (single top directory stripped).
    Tree(NarHash),
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pin::File(d) => write!(f, "{d}"),
            Pin::Tree(h) => write!(f, "tree {h}"),
        }
    }
}

/// One source to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRequest {
    /// Names the source in messages, e.g. `musl: source 1`.
    pub name: String,
    /// The recipe's URLs in order, `{version}` already expanded.
    pub urls: Vec<String>,
    pub pin: Pin,
    /// For a tree pin: the tree is this part of the archive, not all of it.
    pub subtree: Option<Subtree>,
}

/// The part of an archive that a tree pin names (docs/fetch.md): the
/// members under `path`, as if `path` were the archive's root. For a `.deb`
/// the archive is its `data.tar`, the files it installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subtree {
    /// A relative path as the archive's members name it.
    pub path: String,
    /// sha256 of the archive file itself, checked before it is unpacked.
    pub archive: Option<Digest>,
}

/// A verified source in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The store entry: a file for `Pin::File`, a read-only tree for `Pin::Tree`.
    pub path: PathBuf,
    /// Where it came from; None if the store already had it.
    pub from: Option<String>,
}

/// One failed attempt: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub from: String,
    pub error: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{name}: no source matched {pin}; every attempt failed:{}", list(.attempts))]
    Exhausted {
        name: String,
        pin: Pin,
        attempts: Vec<Attempt>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn list(attempts: &[Attempt]) -> String {
    if attempts.is_empty() {
        return "\n  (nothing to try: no source directory has it and there are no URLs)".into();
    }
    attempts
        .iter()
        .map(|a| format!("\n  {}: {}", a.from, a.error))
        .collect()
}

enum Origin {
    Local(PathBuf),
    Url(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Local(p) => write!(f, "{}", p.display()),
            Origin::Url(u) => f.write_str(u),
        }
    }
}

/// Fetches sources into a store; holds one HTTP agent for all of them.
pub struct Fetcher {
    config: FetchConfig,
    http: http::Http,
}

impl Fetcher {
    pub fn new(config: FetchConfig) -> Self {
        let http = http::Http::new(config.timeout, config.progress);
        Fetcher { config, http }
    }

    pub fn config(&self) -> &FetchConfig {
        &self.config
    }

    /// Makes the pinned source present in the store, or says why not. Two
    /// processes fetching the same pin: one fetches, the other waits and
    /// then uses its result.
    pub fn fetch(&self, store: &Store, req: &SourceRequest) -> Result<Fetched, FetchError> {
        let (dest, kind, key) = match &req.pin {
            Pin::File(d) => (store.source_path(d), "source", d.hex()),
            Pin::Tree(h) => (store.tree_path(h), "tree", h.hex()),
        };
        let present = || dest.symlink_metadata().is_ok();
        if present() {
            return Ok(Fetched {
                path: dest,
                from: None,
            });
        }
        let _lock = store.lock_entry(kind, &key)?;
        if present() {
            return Ok(Fetched {
                path: dest,
                from: None,
            });
        }
        let mut attempts = Vec::new();
        for origin in self.origins(req) {
            let origin = match origin {
                Ok(o) => o,
                Err(untried) => {
                    attempts.push(untried);
                    continue;
                }
            };
            let result = match (&req.pin, &origin) {
                (Pin::File(d), _) => self.try_file(store, req, &origin, d, &dest),
                (Pin::Tree(h), Origin::Local(p)) if p.is_dir() => {
                    self.try_tree_dir(store, p, h, &dest)
                }
                (Pin::Tree(h), _) => self.try_tree_archive(store, req, &origin, h, &dest),
            };
            match result {
                Ok(()) => {
                    return Ok(Fetched {
                        path: dest,
                        from: Some(origin.to_string()),
                    })
                }
                Err(error) => attempts.push(Attempt {
                    from: origin.to_string(),
                    error,
                }),
            }
        }
        Err(FetchError::Exhausted {
            name: req.name.clone(),
            pin: req.pin,
            attempts,
        })
    }

    /// Every origin to try, in order. One that cannot be tried (offline,
    /// unconfigured mirror) is already a failed attempt, kept in its place.
    fn origins(&self, req: &SourceRequest) -> Vec<Result<Origin, Attempt>> {
        let dirs = &self.config.source_dirs;
        let local = match &req.pin {
            Pin::File(d) => local::file_candidates(dirs, d, &req.urls),
            Pin::Tree(h) => local::tree_candidates(dirs, h, &req.urls),
        };
        let mut out: Vec<Result<Origin, Attempt>> =
            local.into_iter().map(|p| Ok(Origin::Local(p))).collect();
        let mut urls = Vec::new();
        for url in &req.urls {
            match self.config.mirrors.resolve_all(url) {
                Ok(resolved) => urls.extend(resolved.into_iter().map(|r| match r {
                    Resolved::Url(u) => Ok(u),
                    Resolved::Index { page, file } => self.index_lookup(&page, &file),
                })),
                Err(e) => urls.push(Err(Attempt {
                    from: url.clone(),
                    error: e.to_string(),
                })),
            }
        }
        for base in &self.config.fallback_mirrors {
            match &req.pin {
                Pin::File(d) => urls.push(Ok(join_url(base, &format!("sha256/{}", d.hex())))),
                Pin::Tree(_) => urls.extend(
                    req.urls
                        .iter()
                        .filter_map(|u| local::file_name_of(u))
                        .map(|n| Ok(join_url(base, n))),
                ),
            }
        }
        let offline = self.config.offline;
        out.extend(urls.into_iter().map(|u| match u {
            Ok(u) if offline => Err(Attempt {
                from: u,
                error: "not tried: offline mode".into(),
            }),
            Ok(u) => Ok(Origin::Url(u)),
            Err(a) => Err(a),
        }));
        out
    }

    /// The URL of `file` as a package index's project page lists it
    /// (`mirror://pypi/`), read now unless offline; the page is only a
    /// pointer: what it points at is accepted by the pin alone.
    fn index_lookup(&self, page: &str, file: &str) -> Result<String, Attempt> {
        let fail = |error: String| Attempt {
            from: page.to_owned(),
            error,
        };
        if self.config.offline {
            return Err(fail("not tried: offline mode".into()));
        }
        let mut html = Vec::new();
        self.http
            .download(page, "package index", &mut html)
            .map_err(fail)?;
        let html = String::from_utf8_lossy(&html);
        crate::mirror::pypi::find_file(page, &html, file)
            .ok_or_else(|| fail(format!("the project page lists no {file}")))
    }

    /// Streams `origin` into a temporary file, hashing; keeps it if it matches.
    fn try_file(
        &self,
        store: &Store,
        req: &SourceRequest,
        origin: &Origin,
        expected: &Digest,
        dest: &Path,
    ) -> Result<(), String> {
        let (tmp, got, len) = self.download(store, req, origin)?;
        if got != *expected {
            return Err(format!(
                "hash mismatch: expected {expected}, got {got} ({len} bytes); nothing kept"
            ));
        }
        store.commit_file(tmp, dest).map_err(|e| e.to_string())
    }

    fn download(
        &self,
        store: &Store,
        req: &SourceRequest,
        origin: &Origin,
    ) -> Result<(tempfile::NamedTempFile, Digest, u64), String> {
        let tmp = store.temp_file().map_err(|e| e.to_string())?;
        let mut w = HashingWriter::new(tmp);
        match origin {
            Origin::Local(p) => {
                let mut f = File::open(p).map_err(|e| e.to_string())?;
                io::copy(&mut f, &mut w).map_err(|e| e.to_string())?;
            }
            Origin::Url(u) => {
                self.http.download(u, &req.name, &mut w)?;
            }
        }
        Ok(w.finish())
    }

    /// Downloads an archive, unpacks it, strips a single top directory (or
    /// keeps only the requested subtree), and keeps the tree if its NAR hash
    /// matches.
    fn try_tree_archive(
        &self,
        store: &Store,
        req: &SourceRequest,
        origin: &Origin,
        expected: &NarHash,
        dest: &Path,
    ) -> Result<(), String> {
        let (archive, got, len) = self.download(store, req, origin)?;
        if let Some(want) = req.subtree.as_ref().and_then(|s| s.archive) {
            if got != want {
                return Err(format!(
                    "archive hash mismatch: expected {want}, got {got} ({len} bytes); nothing kept"
                ));
            }
        }
        let tree = store.temp_dir().map_err(|e| e.to_string())?;
        let unpacked = match &req.subtree {
            None => unpack::unpack_file(archive.path(), tree.path(), &UnpackOptions::SOURCE)
                .map_err(|e| format!("unpacking: {e}"))
                .and_then(|_| {
                    crate::beneath::Dir::open(tree.path())
                        .and_then(|d| local::strip_and_check(&d))
                        .map_err(|e| format!("unpacking: {e}"))
                }),
            Some(sub) => unpack_subtree(archive.path(), tree.path(), &sub.path),
        };
        drop(archive);
        if let Err(e) = unpacked {
            discard(tree);
            return Err(e);
        }
        self.accept_tree(store, tree, expected, dest)
    }

    fn try_tree_dir(
        &self,
        store: &Store,
        src: &Path,
        expected: &NarHash,
        dest: &Path,
    ) -> Result<(), String> {
        let tree = store.temp_dir().map_err(|e| e.to_string())?;
        if let Err(e) = local::copy_tree(src, tree.path()) {
            discard(tree);
            return Err(format!("copying: {e}"));
        }
        self.accept_tree(store, tree, expected, dest)
    }

    fn accept_tree(
        &self,
        store: &Store,
        tree: tempfile::TempDir,
        expected: &NarHash,
        dest: &Path,
    ) -> Result<(), String> {
        match nar::hash_path(tree.path()) {
            Ok(got) if got == *expected => {}
            Ok(got) => {
                discard(tree);
                return Err(format!(
                    "tree hash mismatch: expected {expected}, got {got}; nothing kept"
                ));
            }
            Err(e) => {
                discard(tree);
                return Err(e.to_string());
            }
        }
        store
            .commit_dir(tree, dest, true)
            .map_err(|e| e.to_string())
    }
}

/// Unpacks the members of the archive at `path` under `subtree` into
/// `target` with the source rules (no link leaves the subtree). A `.deb`
/// (recognised by its `ar` magic) contributes its data.tar.
fn unpack_subtree(path: &Path, target: &Path, subtree: &str) -> Result<(), String> {
    let mut magic = [0u8; 8];
    let is_deb = File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"!<arch>\n";
    let report = if is_deb {
        let mut deb = Deb::open(path).map_err(|e| format!("unpacking: {e}"))?;
        let data = deb.data().map_err(|e| format!("unpacking: {e}"))?;
        unpack::unpack_subtree(data, target, &UnpackOptions::SOURCE, subtree)
    } else {
        let (_, reader) = crate::archive::open(path).map_err(|e| format!("unpacking: {e}"))?;
        unpack::unpack_subtree(reader, target, &UnpackOptions::SOURCE, subtree)
    }
    .map_err(|e| format!("unpacking: {e}"))?;
    if report.entries == 0 {
        return Err(format!(
            "unpacking: the archive has nothing under the subtree {subtree:?}"
        ));
    }
    local::check_links(target).map_err(|e| format!("unpacking: {e}"))
}

/// Removes a rejected tree now (it may hold read-only directories, which
/// TempDir's own cleanup cannot remove); a leftover is tmp/ garbage anyway.
fn discard(tree: tempfile::TempDir) {
    let path = tree.keep();
    let _ = crate::store::remove_tree(&path);
}
