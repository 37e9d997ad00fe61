//! `imgrep seed export`: stage everything a bootstrap of the closure needs
//! in a directory, each source verified against its pin on the way in, then
//! pack it with the layer packer.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::index::{self, Index, SourceEntry};
use super::{SeedError, INDEX, INDEX_SHA256, INDEX_TYPE, README, SOURCES_DIR, TREES_DIR};
use crate::builder::sources;
use crate::digest::{Digest, HashingWriter};
use crate::fetch::{copy_tree, Fetcher};
use crate::graph::Graph;
use crate::layer::{self, PackOptions};
use crate::nar::{self, NarHash};
use crate::recipe::{Pin, Recipe, RecipeSet};
use crate::sign::manifests::Manifests;
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Compression workers; the bytes do not depend on it.
    pub threads: usize,
}

/// A written seed tarball.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Exported {
    pub path: PathBuf,
    /// sha256 of the tarball file: what to publish beside it.
    pub digest: Digest,
    pub size: u64,
    /// Every package it holds a recipe for, in build order.
    pub packages: Vec<String>,
    pub sources: usize,
    pub statements: usize,
    pub members: usize,
}

/// Writes the seed tarball of `roots` (every package when empty) to `file`,
/// atomically. Missing sources are fetched with `fetcher` first.
pub fn export(
    set: &RecipeSet,
    roots: &[&str],
    store: &Store,
    fetcher: &Fetcher,
    file: &Path,
    opts: &ExportOptions,
) -> Result<Exported, SeedError> {
    let staging = store.temp_dir()?.keep();
    let result = stage_and_pack(set, roots, store, fetcher, file, opts, &staging);
    // Staged trees keep their read-only directories, which TempDir cannot remove.
    let _ = crate::store::remove_tree(&staging);
    result
}

fn stage_and_pack(
    set: &RecipeSet,
    roots: &[&str],
    store: &Store,
    fetcher: &Fetcher,
    file: &Path,
    opts: &ExportOptions,
    staging: &Path,
) -> Result<Exported, SeedError> {
    let graph = Graph::new(set);
    let closure = graph.closure(roots)?;
    let root = set.root();

    let seeds = root.join("seeds");
    if seeds.is_dir() {
        copy_dir(&seeds, &staging.join("seeds"))?;
    }
    let mut entries = Vec::new();
    for recipe in &closure {
        copy_dir(recipe.dir(), &staging.join(relative(root, recipe.dir())))?;
        entries.extend(stage_sources(recipe, root, store, fetcher, staging)?);
    }
    let statements = stage_manifests(root, &closure, staging)?;

    let packages: Vec<String> = closure.iter().map(|r| r.name.clone()).collect();
    write(&staging.join(README), readme(roots, &packages).as_bytes())?;
    let members = index::scan(staging)?;
    let idx = Index {
        kind: INDEX_TYPE.to_owned(),
        packages: roots.iter().map(|s| (*s).to_owned()).collect(),
        closure: packages.clone(),
        sources: entries,
        members,
    };
    let bytes = crate::canonical::to_vec(&idx).expect("an index always serializes");
    write(&staging.join(INDEX), &bytes)?;
    write(
        &staging.join(INDEX_SHA256),
        format!("{}  {INDEX}\n", Digest::of(&bytes).hex()).as_bytes(),
    )?;

    let (digest, size) = pack(staging, file, opts)?;
    Ok(Exported {
        path: file.to_owned(),
        digest,
        size,
        packages,
        sources: idx.sources.len(),
        statements,
        members: idx.members.len() + 2,
    })
}

/// Fetches (if needed), verifies and stages every source of `recipe`.
fn stage_sources(
    recipe: &Recipe,
    root: &Path,
    store: &Store,
    fetcher: &Fetcher,
    staging: &Path,
) -> Result<Vec<SourceEntry>, SeedError> {
    let ready = sources::fetch_all(recipe, root, store, fetcher)?;
    let mut entries = Vec::new();
    for (i, (source, got)) in recipe.sources.iter().zip(&ready).enumerate() {
        let fail = |message: String| SeedError::Source {
            package: recipe.name.clone(),
            message: format!("source {} ({}): {message}", i + 1, source.file_name()),
        };
        let repo_path = source.urls.first().and_then(|u| u.strip_prefix("repo:"));
        let rel = match (source.pin, &source.path, repo_path) {
            // Beside package.toml: staged with the package's directory.
            (Pin::Sha256(d), Some(p), _) => {
                let rel = relative(root, recipe.dir()).join(p);
                check_file(&staging.join(&rel), &d).map_err(fail)?;
                rel.to_string_lossy().into_owned()
            }
            (Pin::Sha256(d), None, Some(p)) => {
                copy_verified(&got.path, &staging.join(p), &d).map_err(fail)?;
                p.to_owned()
            }
            (Pin::Sha256(d), None, None) => {
                let rel = format!("{SOURCES_DIR}/sha256/{}", d.hex());
                copy_verified(&got.path, &staging.join(&rel), &d).map_err(fail)?;
                rel
            }
            (Pin::Tree(h), _, _) => {
                let hash = NarHash::from_bytes(h);
                let rel = format!("{TREES_DIR}/{}", hash.hex());
                stage_tree(&got.path, &staging.join(&rel), &hash).map_err(fail)?;
                rel
            }
        };
        entries.push(SourceEntry {
            package: recipe.name.clone(),
            pin: source.pin.to_recipe_string(),
            path: rel,
        });
    }
    Ok(entries)
}

/// Copies a source file, hashing the bytes copied; a mismatch keeps nothing.
fn copy_verified(from: &Path, to: &Path, pin: &Digest) -> Result<(), String> {
    let parent = to.parent().expect("staged paths have a parent");
    fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let tmp = tempfile::NamedTempFile::new_in(parent).map_err(|e| e.to_string())?;
    let mut w = HashingWriter::new(tmp);
    File::open(from)
        .and_then(|mut f| io::copy(&mut f, &mut w))
        .map_err(|e| format!("{}: {e}", from.display()))?;
    let (tmp, got, _) = w.finish();
    if got != *pin {
        return Err(format!(
            "{}: sha256 mismatch: pinned {pin}, the file has {got}; not exported",
            from.display()
        ));
    }
    tmp.persist(to).map_err(|e| e.error.to_string())?;
    Ok(())
}

/// Checks a staged file against its pin.
fn check_file(path: &Path, pin: &Digest) -> Result<(), String> {
    let (got, _) = File::open(path)
        .and_then(crate::digest::hash_reader)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if got != *pin {
        return Err(format!(
            "{}: sha256 mismatch: pinned {pin}, the file has {got}; not exported",
            path.display()
        ));
    }
    Ok(())
}

/// Copies a source tree and checks the copy's NAR hash against the pin.
fn stage_tree(from: &Path, to: &Path, pin: &NarHash) -> Result<(), String> {
    if to.exists() {
        return Ok(());
    }
    fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    copy_tree(from, to).map_err(|e| format!("{}: {e}", from.display()))?;
    let got = nar::hash_path(to).map_err(|e| e.to_string())?;
    if got != *pin {
        return Err(format!(
            "{}: tree hash mismatch: pinned {pin}, the tree has {got}; not exported",
            from.display()
        ));
    }
    Ok(())
}

/// manifests/: policy, keys, and the statements (with signatures) of the
/// closure's package versions. Returns how many statements went in.
fn stage_manifests(root: &Path, closure: &[&Recipe], staging: &Path) -> Result<usize, SeedError> {
    let manifests = Manifests::new(root.join("manifests"));
    if !manifests.root().is_dir() {
        return Ok(0);
    }
    let dest = Manifests::new(staging.join("manifests"));
    let policy = manifests.policy_path();
    if policy.is_file() {
        fs::create_dir_all(dest.root()).map_err(SeedError::io(dest.root(), "creating"))?;
        fs::copy(&policy, dest.policy_path()).map_err(SeedError::io(&policy, "copying"))?;
    }
    let keys = manifests.keys_dir();
    if keys.is_dir() {
        // Public keys and roles only: whatever else lies there (a secret key
        // put there by mistake) stays home.
        fs::create_dir_all(dest.keys_dir()).map_err(SeedError::io(dest.keys_dir(), "creating"))?;
        for entry in fs::read_dir(&keys).map_err(SeedError::io(&keys, "reading"))? {
            let path = entry.map_err(SeedError::io(&keys, "reading"))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if path.is_file() && (name.ends_with(".pub") || name == "roles.toml") {
                fs::copy(&path, dest.keys_dir().join(name))
                    .map_err(SeedError::io(&path, "copying"))?;
            }
        }
    }
    let mut statements = 0;
    for recipe in closure {
        let pv = crate::sign::manifests::PackageVersion {
            name: recipe.name.clone(),
            version: recipe.version.clone(),
        };
        let dir = manifests.statement_path(&pv);
        let Some(dir) = dir.parent().filter(|d| d.is_dir()) else {
            continue;
        };
        let to = dest
            .statement_path(&pv)
            .parent()
            .expect("statements live in a directory")
            .to_owned();
        copy_dir(dir, &to)?;
        statements += 1;
    }
    Ok(statements)
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), SeedError> {
    fs::create_dir_all(to).map_err(SeedError::io(to, "creating"))?;
    copy_tree(from, to).map_err(SeedError::io(from, "copying into the seed tarball"))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), SeedError> {
    fs::write(path, bytes).map_err(SeedError::io(path, "writing"))
}

/// `path` relative to the recipe tree's root (which may be `.`).
fn relative(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root).unwrap_or(path).to_owned()
}

/// Packs `staging` into `file` (via a temporary file beside it).
fn pack(staging: &Path, file: &Path, opts: &ExportOptions) -> Result<(Digest, u64), SeedError> {
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".imgrep-seed-")
        .tempfile_in(dir)
        .map_err(SeedError::io(dir, "creating a temporary file"))?;
    let pack_opts = PackOptions {
        threads: opts.threads.max(1),
        ..PackOptions::default()
    };
    let mut out = io::BufWriter::new(tmp.as_file());
    let info = layer::pack(staging, &pack_opts, &mut out)?;
    out.flush().map_err(SeedError::io(file, "writing"))?;
    drop(out);
    tmp.as_file()
        .sync_all()
        .map_err(SeedError::io(file, "syncing"))?;
    fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .map_err(SeedError::io(file, "setting the mode"))?;
    tmp.persist(file)
        .map_err(|e| SeedError::io(file, "renaming into place")(e.error))?;
    crate::fsutil::sync_dir(dir).map_err(SeedError::io(dir, "syncing"))?;
    Ok((info.digest, info.size))
}

fn readme(roots: &[&str], packages: &[String]) -> String {
    let asked = if roots.is_empty() {
        "every package of the recipe tree".to_owned()
    } else {
        roots.join(" ")
    };
    format!(
        "imgrep seed tarball ({INDEX_TYPE})

Everything needed to build {asked} on a machine with no network:
the recipes (packages/, stage0/), the binary seeds (seeds/), every pinned
source (sources/sha256/<sha256>, trees/nar-sha256/<NAR sha256 in hex>/ for
unpacked trees), and manifests/ (statements, signatures, keys, policy) as
the exporter had them.

Packages, in build order: {}

Build and check, with no network:

    imgrep bootstrap --seed THIS-FILE [PKG...] [--store DIR] [--out DIR]

imgrep first checks every member against index.json and index.json against
index.json.sha256, and refuses a damaged or truncated tarball before it
builds anything. It then builds offline, with sources only from here, and
compares each image with its statement under manifests/ (and the
signatures with manifests/policy.toml when keys and a policy are present).
Exit status: 0 all match, 1 a mismatch, 2 bad input, 3 a build step failed.

By hand: `sha256sum -c index.json.sha256`; index.json holds the sha256 of
every other member. Compare the sha256 of the tarball itself with the one
its publisher printed (imgrep seed export prints it).
",
        packages.join(" ")
    )
}
