//! Fixtures for the `imgrep build` tests: the test package set of
//! tests/recipes-build/ written into a fresh recipe tree with its
//! placeholders filled, a fresh store, the real binary, and the loopback
//! HTTP server of tests/fetch_support serving the sources the test generates.

#![allow(dead_code)] // each test crate uses a different part of it

#[path = "../fetch_support/mod.rs"]
mod fetch_support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub use fetch_support::{Route, Server};
use imgrep::digest::Digest;
use tempfile::TempDir;

/// Debian's static busybox (package busybox-static), the shell of the test
/// recipes.
pub const BUSYBOX: &str = "/bin/busybox";

/// The bytes of the host's static busybox, or `None` after saying why the
/// calling test is skipped.
pub fn busybox() -> Option<Vec<u8>> {
    match fs::read(BUSYBOX) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            eprintln!("SKIPPED: {BUSYBOX} unreadable ({e}); install busybox-static");
            None
        }
    }
}

/// A deterministic gzip'ed tarball of `files` (path, contents, mode) under
/// the top-level directory `top`.
pub fn tarball(top: &str, files: &[(&str, &[u8], u32)], compress: Compression) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (path, _, _) in files {
        let mut p = Path::new(path).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_owned());
            p = d.parent();
        }
    }
    let header = |path: String, size: u64, mode: u32, kind: tar::EntryType| {
        let mut h = tar::Header::new_ustar();
        h.set_path(path).unwrap();
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(1_000_000_000);
        h.set_entry_type(kind);
        h.set_cksum();
        h
    };
    let top_header = header(format!("{top}/"), 0, 0o755, tar::EntryType::Directory);
    tar.append(&top_header, &[][..]).unwrap();
    for d in &dirs {
        let h = header(
            format!("{top}/{}/", d.display()),
            0,
            0o755,
            tar::EntryType::Directory,
        );
        tar.append(&h, &[][..]).unwrap();
    }
    for (path, body, mode) in files {
        let h = header(
            format!("{top}/{path}"),
            body.len() as u64,
            *mode,
            tar::EntryType::Regular,
        );
        tar.append(&h, *body).unwrap();
    }
    let raw = tar.into_inner().unwrap();
    match compress {
        Compression::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            gz.write_all(&raw).unwrap();
            gz.finish().unwrap()
        }
        Compression::Xz => {
            let mut xz = xz2::write::XzEncoder::new(Vec::new(), 6);
            xz.write_all(&raw).unwrap();
            xz.finish().unwrap()
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Compression {
    Gzip,
    Xz,
}

/// The files of the `greet` source tarball.
pub const GREET_FILES: &[(&str, &[u8], u32)] = &[
    ("greeting.txt", b"hello from a loopback server\n", 0o644),
    (
        "bin/greet",
        b"#!/bin/sh\ncat /share/greet/GREETING\n",
        0o755,
    ),
];

/// `n` bytes that do not compress, the same on every run.
pub fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A recipe tree from tests/recipes-build, a store, and the server its
/// recipes fetch from.
pub struct Fixture {
    pub tree: TempDir,
    pub store: TempDir,
    pub server: Server,
    /// Extra environment of every imgrep run.
    pub env: BTreeMap<String, String>,
    empty_apt: TempDir,
}

impl Fixture {
    /// Serves busybox and greet's tarball and writes every recipe of the
    /// set, with `vars` overriding the default placeholder values. `None`
    /// when busybox is missing (the test is skipped, said on stderr).
    pub fn new(vars: &[(&str, String)]) -> Option<Fixture> {
        Fixture::with_server(Server::start(), vars)
    }

    /// As [`Fixture::new`], on a server the caller already set up.
    pub fn with_server(server: Server, vars: &[(&str, String)]) -> Option<Fixture> {
        let busybox = busybox()?;
        let greet = tarball("greet-1.0", GREET_FILES, Compression::Gzip);
        let mut values: BTreeMap<&str, String> = BTreeMap::from([
            ("BASE", server.base.clone()),
            ("BUSYBOX_SHA256", Digest::of(&busybox).hex()),
            ("GREET_SHA256", Digest::of(&greet).hex()),
            // Placeholders of recipes a test leaves alone: valid, never fetched.
            ("GREET_TREE_FILE", "greet-1.0.tar.gz".to_owned()),
            ("GREET_TREE", format!("sha256-{}", "A".repeat(43) + "=")),
            ("BIG_SHA256", Digest::of(b"").hex()),
        ]);
        for (k, v) in vars {
            values.insert(k, v.clone());
        }
        server.route("/busybox/busybox", Route::Bytes(busybox));
        server.route("/greet-1.0.tar.gz", Route::Bytes(greet));
        let tree = tempfile::tempdir().unwrap();
        write_tree(tree.path(), &values);
        Some(Fixture {
            tree,
            store: tempfile::tempdir().unwrap(),
            server,
            env: BTreeMap::new(),
            empty_apt: tempfile::tempdir().unwrap(),
        })
    }

    pub fn recipe_path(&self, name: &str) -> PathBuf {
        self.tree
            .path()
            .join("packages")
            .join(name)
            .join("package.toml")
    }

    /// `imgrep -C TREE ARGS...` with this fixture's store and environment,
    /// and nothing of the host's configuration.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgrep"));
        cmd.arg("-C").arg(self.tree.path()).args(args);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("IMGREP_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("IMGREP_STORE", self.store.path())
            .env("IMGREP_CONFIG", "/dev/null")
            .env("IMGREP_APT_DIR", self.empty_apt.path())
            .envs(&self.env);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// `imgrep build --json ARGS...`, which must succeed.
    pub fn build(&self, args: &[&str]) -> Vec<BuiltPkg> {
        let mut all = vec!["--json", "build"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert_eq!(
            out.status.code(),
            Some(0),
            "imgrep {}\nstderr:\n{}",
            all.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        parse_built(&out.stdout)
    }

    /// `imgrep build ARGS...` in the background, stderr to a file.
    pub fn spawn(&self, args: &[&str], stderr: &Path) -> Child {
        let mut all = vec!["--json", "build"];
        all.extend_from_slice(args);
        self.command(&all)
            .stdout(Stdio::null())
            .stderr(fs::File::create(stderr).unwrap())
            .spawn()
            .unwrap()
    }

    pub fn store_path(&self, rel: &str) -> PathBuf {
        self.store.path().join(rel)
    }

    /// The log of the build of `pkg` with input digest `input`.
    pub fn log(&self, pkg: &BuiltPkg) -> PathBuf {
        self.store
            .path()
            .join("logs")
            .join(&pkg.name)
            .join(format!("{}.log", pkg.input.hex()))
    }

    /// Names of the entries of a store directory, sorted.
    pub fn entries(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = match fs::read_dir(self.store_path(rel)) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names
    }
}

/// Copies tests/recipes-build into `root/packages`, filling `@NAME@`
/// placeholders; a placeholder without a value is a bug of the test.
fn write_tree(root: &Path, values: &BTreeMap<&str, String>) {
    let set = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/recipes-build");
    for entry in fs::read_dir(&set).unwrap() {
        let entry = entry.unwrap();
        let mut text = fs::read_to_string(entry.path().join("package.toml")).unwrap();
        for (k, v) in values {
            text = text.replace(&format!("@{k}@"), v);
        }
        if let Some(left) = unfilled(&text) {
            panic!("{}: no value for {left}", entry.path().display());
        }
        let dir = root.join("packages").join(entry.file_name());
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("package.toml"), text).unwrap();
    }
}

/// The first `@NAME@` left in `text`.
fn unfilled(text: &str) -> Option<&str> {
    text.split('@')
        .skip(1)
        .step_by(2)
        .find(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
}

/// One entry of `imgrep build --json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltPkg {
    pub name: String,
    pub input: Digest,
    pub manifest: Digest,
    pub diff_ids: Vec<Digest>,
    pub cached: bool,
}

pub fn parse_built(stdout: &[u8]) -> Vec<BuiltPkg> {
    let v: serde_json::Value = serde_json::from_slice(stdout)
        .unwrap_or_else(|e| panic!("build --json: {e}: {}", String::from_utf8_lossy(stdout)));
    v.as_array()
        .expect("build --json prints an array")
        .iter()
        .map(|p| BuiltPkg {
            name: p["name"].as_str().unwrap().to_owned(),
            input: p["input_digest"].as_str().unwrap().parse().unwrap(),
            manifest: p["manifest_digest"].as_str().unwrap().parse().unwrap(),
            diff_ids: p["diff_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_str().unwrap().parse().unwrap())
                .collect(),
            cached: p["cached"].as_bool().unwrap(),
        })
        .collect()
}

/// The entry of `name` in a build result.
pub fn find<'a>(built: &'a [BuiltPkg], name: &str) -> &'a BuiltPkg {
    built
        .iter()
        .find(|b| b.name == name)
        .unwrap_or_else(|| panic!("{name} not in the build result: {built:?}"))
}

/// `name -> manifest digest` of a build result.
pub fn digests(built: &[BuiltPkg]) -> BTreeMap<String, Digest> {
    built.iter().map(|b| (b.name.clone(), b.manifest)).collect()
}

/// The contents of `path` in the single-layer image tagged `reference` in the
/// OCI layout `layout`, read through the layout's index and blobs; a hard
/// link gives its target's contents.
pub fn file_in_image(layout: &Path, reference: &str, path: &str) -> Option<Vec<u8>> {
    let image = imgrep::oci::Layout::open(layout)
        .unwrap()
        .read_image(reference, true)
        .unwrap_or_else(|e| panic!("{reference} in {}: {e}", layout.display()));
    let layer = image.manifest.layers().last().expect("one layer");
    let digest: Digest = layer.digest().to_string().parse().unwrap();
    let blob = fs::File::open(layout.join("blobs/sha256").join(digest.hex())).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(blob));
    let mut files: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
    let mut wanted = PathBuf::from(path);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().into_owned();
        if entry.header().entry_type() == tar::EntryType::Link && name == wanted {
            wanted = entry.link_name().unwrap().unwrap().into_owned();
            return files.remove(&wanted);
        }
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut body).unwrap();
        if name == wanted {
            return Some(body);
        }
        files.insert(name, body);
    }
    None
}
