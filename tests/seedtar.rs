//! The air-gapped bootstrap, end to end with the real binary and the real
//! sandbox: a small recipe tree whose sources a loopback HTTP server serves
//! (Debian's static busybox as the shell, pinned by the hash this test
//! computes; an archive; a tree pin with chosen modes and mtimes; a patch
//! beside package.toml; a `repo:` file), built normally, with statements
//! signed by a minisign key; exported twice (identical bytes); bootstrapped
//! inside a network namespace with nothing but loopback (identical
//! digests, no request to the server); and damaged tarballs refused before
//! anything is built.
//!
//! Needs root (for `unshare -n`) and /bin/busybox (Debian's busybox-static).

mod fetch_support;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use fetch_support::{Route, Server};
use imgrep::compress::{Compression, Encoder};
use imgrep::digest::{hash_reader, Digest};
use imgrep::sign::manifests::Manifests;
use imgrep::statement::{ImageDigests, SourceHash, Statement};

const BIN: &str = env!("CARGO_BIN_EXE_imgrep");

/// What a build reported for one package.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Image {
    input: String,
    manifest: String,
    diff_ids: Vec<String>,
}

struct Fixture {
    dir: PathBuf,
    tree: PathBuf,
    store: PathBuf,
    server: Server,
    seed: PathBuf,
    seed_sha256: String,
    normal: BTreeMap<String, Image>,
}

fn imgrep(args: &[&str], cwd: &Path) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("IMGREP_STORE")
        .env_remove("IMGREP_SOURCE_DIRS")
        .env_remove("IMGREP_OFFLINE")
        .env_remove("IMGREP_CONFIG")
        .output()
        .unwrap();
    eprintln!(
        "$ imgrep {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn images(json: &[u8]) -> BTreeMap<String, Image> {
    let v: serde_json::Value = serde_json::from_slice(json).unwrap();
    let list = v.get("packages").unwrap_or(&v).as_array().unwrap().clone();
    list.iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap().to_owned();
            (
                s("name"),
                Image {
                    input: s("input_digest"),
                    manifest: s("manifest_digest"),
                    diff_ids: p["diff_ids"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|d| d.as_str().unwrap().to_owned())
                        .collect(),
                },
            )
        })
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    Digest::of(bytes).hex()
}

/// One archive entry: path (directories end in `/`), mode, mtime, and the
/// content or (Err) a symbolic link's target.
type Entry<'a> = (&'a str, u32, u64, Result<&'a [u8], &'a str>);

/// A gzipped tar of `entries`.
fn targz(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (path, mode, mtime, content) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mode(*mode);
        h.set_mtime(*mtime);
        match content {
            Ok(data) if path.ends_with('/') => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, path, *data).unwrap();
            }
            Ok(data) => {
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, *data).unwrap();
            }
            Err(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, path, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap().finish().unwrap()
}

fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(make_fixture).as_ref()
}

/// The fixture's directory, removed when the test process exits (statics
/// are never dropped; stores hold read-only directories).
static SCRATCH: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_scratch() {
    if let Some(dir) = SCRATCH.get() {
        let _ = imgrep::store::remove_tree(dir);
    }
}

fn make_fixture() -> Option<Fixture> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root (the bootstrap runs under `unshare -n`)");
        return None;
    }
    let Ok(busybox) = fs::read("/bin/busybox") else {
        eprintln!("SKIPPED: /bin/busybox missing (apt-get install busybox-static)");
        return None;
    };
    let dir = tempfile::tempdir().unwrap().keep();
    SCRATCH.set(dir.clone()).unwrap();
    // SAFETY: registers a plain function with no preconditions.
    unsafe { libc::atexit(remove_scratch) };
    let tree = dir.join("tree");
    let store = dir.join("store");
    let server = Server::start();

    let hello = targz(&[
        ("hello-1.0/", 0o755, 1_500_000_000, Ok(b"")),
        (
            "hello-1.0/hello.txt",
            0o644,
            1_500_000_000,
            Ok(b"hello from a tarball\n"),
        ),
    ]);
    let tool: &[u8] = b"#!/bin/sh\necho tool ran\n";
    let data: &[u8] = b"data of the tree\n";
    let tree_tgz = targz(&[
        ("tree-1.0/", 0o755, 1_000_000_000, Ok(b"")),
        ("tree-1.0/bin/", 0o750, 1_000_000_001, Ok(b"")),
        ("tree-1.0/bin/tool", 0o755, 1_234_567_890, Ok(tool)),
        ("tree-1.0/data.txt", 0o640, 1_111_111_111, Ok(data)),
        ("tree-1.0/link", 0o777, 1_222_222_222, Err("data.txt")),
    ]);
    // The tree pin, from the same tree laid out by hand.
    let plain = dir.join("plain");
    fs::create_dir_all(plain.join("bin")).unwrap();
    fs::write(plain.join("bin/tool"), tool).unwrap();
    fs::set_permissions(plain.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(plain.join("data.txt"), data).unwrap();
    symlink("data.txt", plain.join("link")).unwrap();
    let nar = imgrep::nar::hash_path(&plain).unwrap();

    let bb_url = server.route("/busybox", Route::Bytes(busybox.clone()));
    let hello_url = server.route("/hello-1.0.tar.gz", Route::Bytes(hello.clone()));
    let tree_url = server.route("/tree-1.0.tar.gz", Route::Bytes(tree_tgz));

    fs::create_dir_all(tree.join("packages/bbox")).unwrap();
    fs::create_dir_all(tree.join("packages/hello/patches")).unwrap();
    fs::create_dir_all(tree.join("seeds")).unwrap();
    let patch = b"--- a\n+++ b\n+patched\n";
    fs::write(tree.join("packages/hello/patches/fix.patch"), patch).unwrap();
    let greeting = b"greetings from seeds/\n";
    fs::write(tree.join("seeds/greeting"), greeting).unwrap();
    fs::write(
        tree.join("packages/bbox/package.toml"),
        format!(
            r#"[package]
name = "bbox"
version = "1.35.0"
description = "Debian's static busybox as /bin/sh"

[[source]]
url = "{bb_url}"
sha256 = "{}"
executable = true

[build]
steps = [["/build/busybox", "sh", "-euc", "mkdir -p /out/bin && cp /build/busybox /out/bin/ && for a in sh cat stat readlink; do ln -s busybox /out/bin/$a; done"]]
"#,
            sha256(&busybox)
        ),
    )
    .unwrap();
    fs::write(
        tree.join("packages/hello/package.toml"),
        format!(
            r#"[package]
name = "hello"
version = "1.0"

[[source]]
url = "{hello_url}"
sha256 = "{}"

[[source]]
url = "{tree_url}"
tree = "{nar}"
dest = "tree"

[[source]]
path = "patches/fix.patch"
sha256 = "{}"

[[source]]
url = "repo:seeds/greeting"
sha256 = "{}"

[build]
deps = ["bbox"]
script = """
cat hello.txt fix.patch greeting > "$OUT/hello.txt"
./tree/bin/tool >> "$OUT/hello.txt"
# The tree's modes and mtimes as the build sees them.
stat -c '%n %a %Y' tree/bin tree/bin/tool tree/data.txt >> "$OUT/hello.txt"
readlink tree/link >> "$OUT/hello.txt"
"""
"#,
            sha256(&hello),
            sha256(patch),
            sha256(greeting)
        ),
    )
    .unwrap();

    let s = store.to_str().unwrap();
    let t = tree.to_str().unwrap();
    let out = imgrep(&["-C", t, "--store", s, "--json", "build", "hello"], &dir);
    assert!(out.status.success(), "the normal build failed");
    let normal = images(&out.stdout);
    assert_eq!(normal.len(), 2);

    // Statements of what was built, signed by one key; policy threshold 1.
    let manifests = Manifests::new(tree.join("manifests"));
    let sources = BTreeMap::from([
        ("bbox", vec![SourceHash::File(Digest::of(&busybox))]),
        (
            "hello",
            vec![
                SourceHash::File(Digest::of(&hello)),
                SourceHash::Tree(nar.to_string()),
                SourceHash::File(Digest::of(patch)),
                SourceHash::File(Digest::of(greeting)),
            ],
        ),
    ]);
    for (name, img) in &normal {
        let version = if name == "bbox" { "1.35.0" } else { "1.0" };
        let st = Statement::new(
            name,
            version,
            img.input.parse().unwrap(),
            ImageDigests {
                manifest: img.manifest.parse().unwrap(),
                diff_ids: img.diff_ids.iter().map(|d| d.parse().unwrap()).collect(),
            },
            sources[name.as_str()].clone(),
        )
        .unwrap();
        manifests.write_statement(&st).unwrap();
    }
    let key = dir.join("alice");
    let k = key.to_str().unwrap();
    assert!(imgrep(&["keygen", "--out", k, "--no-password"], &dir)
        .status
        .success());
    fs::create_dir_all(tree.join("manifests/keys")).unwrap();
    fs::copy(dir.join("alice.pub"), tree.join("manifests/keys/alice.pub")).unwrap();
    // A secret key left there by mistake must not be exported.
    fs::copy(dir.join("alice.key"), tree.join("manifests/keys/alice.key")).unwrap();
    fs::write(tree.join("manifests/policy.toml"), "threshold = 1\n").unwrap();
    let key_file = format!("{k}.key");
    assert!(imgrep(&["-C", t, "sign", "--key", &key_file], &dir)
        .status
        .success());

    let seed = dir.join("seed.tar.gz");
    let out = imgrep(
        &[
            "-C",
            t,
            "--store",
            s,
            "seed",
            "export",
            seed.to_str().unwrap(),
        ],
        &dir,
    );
    assert!(out.status.success(), "export failed");
    let printed = String::from_utf8(out.stdout).unwrap();
    let seed_sha256 = printed.split_whitespace().next().unwrap().to_owned();
    assert_eq!(
        seed_sha256,
        hash_reader(fs::File::open(&seed).unwrap()).unwrap().0.hex(),
        "export prints the tarball's sha256"
    );
    Some(Fixture {
        dir,
        tree,
        store,
        server,
        seed,
        seed_sha256,
        normal,
    })
}

/// Every member of the tarball, uncompressed: (path, data offset, size).
fn members(tar_bytes: &[u8]) -> Vec<(String, u64, u64)> {
    let mut a = tar::Archive::new(tar_bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                e.raw_file_position(),
                e.size(),
            )
        })
        .collect()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Compressed as imgrep compresses, so only the change made shows.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = Encoder::new(Compression::Gzip, 1, Vec::new()).unwrap();
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn export_is_deterministic() {
    let Some(f) = fixture() else { return };
    let again = f.dir.join("again.tar.gz");
    // Another copy of the same tree, elsewhere: the path must not matter.
    let copy = f.dir.join("tree-copy");
    let cp = Command::new("cp")
        .args(["-a", f.tree.to_str().unwrap(), copy.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(cp.success());
    let out = imgrep(
        &[
            "-C",
            copy.to_str().unwrap(),
            "--store",
            f.store.to_str().unwrap(),
            "seed",
            "export",
            again.to_str().unwrap(),
        ],
        &f.dir,
    );
    assert!(out.status.success());
    assert!(
        fs::read(&f.seed).unwrap() == fs::read(&again).unwrap(),
        "two exports of the same inputs differ"
    );

    // What is inside: recipes, patch, seeds, sources by pin, trees, manifests.
    let tar_bytes = gunzip(&fs::read(&f.seed).unwrap());
    let names: Vec<String> = members(&tar_bytes).into_iter().map(|m| m.0).collect();
    for want in [
        "README",
        "index.json",
        "index.json.sha256",
        "packages/bbox/package.toml",
        "packages/hello/package.toml",
        "packages/hello/patches/fix.patch",
        "seeds/greeting",
        "manifests/policy.toml",
        "manifests/keys/alice.pub",
        "manifests/packages/hello/1.0/statement.json",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.ends_with(".key")),
        "a secret key went in"
    );
    assert!(names.iter().any(|n| n.starts_with("sources/sha256/")));
    assert!(names
        .iter()
        .any(|n| n.starts_with("trees/nar-sha256/") && n.ends_with("/bin/tool")));
    assert!(names
        .iter()
        .any(|n| n.starts_with("manifests/packages/hello/1.0/sigs/") && n.ends_with(".minisig")));
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        names
            .iter()
            .map(|n| n.trim_end_matches('/'))
            .collect::<Vec<_>>(),
        sorted
            .iter()
            .map(|n| n.trim_end_matches('/'))
            .collect::<Vec<_>>(),
        "members in path order"
    );
}

#[test]
fn bootstrap_without_network_reproduces_the_normal_build() {
    let Some(f) = fixture() else { return };
    let work = f.dir.join("airgap");
    fs::create_dir_all(&work).unwrap();
    let hits = f.server.total_hits();
    // A network namespace with nothing but loopback, brought up.
    let out = Command::new("unshare")
        .args([
            "-n",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$@\"",
            "sh",
        ])
        .args([
            BIN,
            "--store",
            "store",
            "--json",
            "bootstrap",
            "--seed",
            f.seed.to_str().unwrap(),
            "--sha256",
            &f.seed_sha256,
            "--out",
            "out",
        ])
        .current_dir(&work)
        .env_remove("IMGREP_STORE")
        .env_remove("IMGREP_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert_eq!(out.status.code(), Some(0), "bootstrap failed");
    assert_eq!(
        f.server.total_hits(),
        hits,
        "the bootstrap reached the server"
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["signatures_checked"], true);
    let boot = images(&out.stdout);
    assert_eq!(boot, f.normal, "the bootstrap built other images");
    for p in doc["packages"].as_array().unwrap() {
        assert_eq!(p["statement"]["status"], "match", "{p}");
        assert_eq!(p["signatures"]["ok"], true, "{p}");
        assert_eq!(p["cached"], false, "a fresh store builds everything");
    }
    // The images are tagged in out/ and pass `imgrep verify` there too.
    let verify = imgrep(
        &[
            "verify",
            "--keyring",
            f.tree.join("manifests/keys").to_str().unwrap(),
            "--threshold",
            "1",
            "--manifests",
            f.tree.join("manifests").to_str().unwrap(),
            "--layout",
            "out",
        ],
        &work,
    );
    assert!(verify.status.success());
}

/// Bootstraps a damaged tarball: refused with exit 2 and `expect` in the
/// message, and nothing built (no record, no image layout).
fn refused(f: &Fixture, name: &str, bytes: &[u8], expect: &str) {
    let dir = f.dir.join(format!("refused-{name}"));
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("seed.tar.gz"), bytes).unwrap();
    let out = imgrep(
        &[
            "--store",
            "store",
            "bootstrap",
            "--seed",
            "seed.tar.gz",
            "--out",
            "out",
        ],
        &dir,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
    assert!(
        stderr.contains("refused, nothing was built") && stderr.contains(expect),
        "{name}: expected {expect:?} in: {stderr}"
    );
    let records = fs::read_dir(dir.join("store/records"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(records, 0, "{name}: a build record exists");
    assert!(!dir.join("out").exists(), "{name}: images were written");
}

#[test]
fn damaged_or_truncated_tarballs_are_refused_before_building() {
    let Some(f) = fixture() else { return };
    let gz = fs::read(&f.seed).unwrap();
    let tar_bytes = gunzip(&gz);
    let all = members(&tar_bytes);
    let find = |pred: &dyn Fn(&str) -> bool| {
        all.iter()
            .find(|(p, _, size)| pred(p) && *size > 0)
            .cloned()
            .unwrap_or_else(|| panic!("no such member in {all:?}"))
    };
    // One flipped byte inside a member, the tarball otherwise well formed.
    let cases = [
        ("source", find(&|p| p.starts_with("sources/sha256/"))),
        ("tree", find(&|p| p.ends_with("/bin/tool"))),
        ("recipe", find(&|p| p == "packages/hello/package.toml")),
        ("index", find(&|p| p == "index.json")),
    ];
    for (name, (path, offset, size)) in cases {
        let mut t = tar_bytes.clone();
        t[(offset + size / 2) as usize] ^= 0x20;
        let expect = if name == "index" {
            "index.json: its sha256 is".to_owned()
        } else {
            format!("member {path}: index.json lists")
        };
        refused(f, name, &gzip(&t), &expect);
    }
    // Flipped bytes in the compressed file: the header, the deflate data,
    // the CRC trailer.
    for (name, at) in [
        ("gz-head", 3),
        ("gz-data", gz.len() / 2),
        ("gz-crc", gz.len() - 6),
    ] {
        let mut g = gz.clone();
        g[at] ^= 0x01;
        refused(f, name, &g, "");
    }
    // Truncated: the compressed file cut short, and a complete gzip of a
    // tar cut at a member boundary (no end-of-archive marker, members lost).
    refused(f, "truncated", &gz[..gz.len() * 2 / 3], "unpacking");
    let (_, offset, _) = find(&|p| p == "index.json");
    let header = offset as usize - 512;
    refused(
        f,
        "tar-cut",
        &gzip(&tar_bytes[..header]),
        "no end-of-archive marker",
    );
    // Bytes after the gzip stream.
    let mut tail = gz.clone();
    tail.extend_from_slice(b"junk");
    refused(
        f,
        "trailing",
        &tail,
        "bytes follow the end of the gzip stream",
    );
    // A tarball that is intact but not the one the publisher named.
    let dir = f.dir.join("refused-sha");
    fs::create_dir_all(&dir).unwrap();
    let out = imgrep(
        &[
            "--store",
            "store",
            "bootstrap",
            "--seed",
            f.seed.to_str().unwrap(),
            "--sha256",
            &"0".repeat(64),
        ],
        &dir,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--sha256 expects"));
    assert!(!dir.join("out").exists());
    assert!(
        !dir.join("store").exists(),
        "checked before anything is unpacked"
    );
}

#[test]
fn a_statement_the_build_does_not_match_exits_1() {
    let Some(f) = fixture() else { return };
    let tree = f.dir.join("tree-wrong");
    let cp = Command::new("cp")
        .args(["-a", f.tree.to_str().unwrap(), tree.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(cp.success());
    let manifests = Manifests::new(tree.join("manifests"));
    let pv = imgrep::sign::manifests::PackageVersion {
        name: "hello".into(),
        version: "1.0".into(),
    };
    let mut st = manifests.read_statement(&pv).unwrap().statement;
    let wrong = Digest::of(b"another image");
    st.image.manifest = wrong;
    manifests.write_statement(&st).unwrap();
    let seed = f.dir.join("wrong.tar.gz");
    let s = f.store.to_str().unwrap();
    let export = imgrep(
        &[
            "-C",
            tree.to_str().unwrap(),
            "--store",
            s,
            "seed",
            "export",
            seed.to_str().unwrap(),
        ],
        &f.dir,
    );
    assert!(export.status.success());
    // The store already holds these builds: the check is what is tested.
    let out = imgrep(
        &[
            "--store",
            s,
            "bootstrap",
            "--seed",
            seed.to_str().unwrap(),
            "--out",
            "out-wrong",
        ],
        &f.dir,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "MISMATCH: manifest digest: statement {wrong}, built"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("signatures: FAIL"), "{stderr}");
}
