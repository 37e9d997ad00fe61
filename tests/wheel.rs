//! `kind = "wheel"` and `mirror://pypi/` end to end, with the real imgrep
//! binary and a package index on loopback (docs/ddc.md, docs/recipes.md):
//! a wheel found through the index's project page is assembled into an
//! image (modes, `dest`, links); a tampered wheel is refused before it is
//! stored; zip members that would escape, link, or collide are refused by
//! the safe unpacker with their name.

#[path = "fetch_support/mod.rs"]
mod fetch_support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output};

use fetch_support::{Route, Server};
use sha2::{Digest as _, Sha256};
use zip::write::SimpleFileOptions;

const BIN: &str = env!("CARGO_BIN_EXE_imgrep");
const WHEEL: &str = "my_pkg-1.0-py3-none-any.whl";

/// A zip of `(name, unix mode, contents)`; a name ending in `/` is a
/// directory.
fn zip_of(members: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, mode, data) in members {
        let opts = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .unix_permissions(*mode);
        if name.ends_with('/') {
            w.add_directory(*name, opts).unwrap();
        } else if mode & 0o170000 == 0o120000 {
            w.add_symlink(*name, std::str::from_utf8(data).unwrap(), opts)
                .unwrap();
        } else {
            w.start_file(*name, opts).unwrap();
            w.write_all(data).unwrap();
        }
    }
    w.finish().unwrap().into_inner()
}

fn good_wheel() -> Vec<u8> {
    zip_of(&[
        ("pkg/", 0o40755, b""),
        ("pkg/tool", 0o100755, b"#!/bin/sh\necho tool\n"),
        ("pkg/data.txt", 0o100644, b"data\n"),
        ("my_pkg-1.0.dist-info/RECORD", 0o100644, b"pkg/tool,,\n"),
    ])
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn tree(dir: &Path, source: &str, sha: &str) {
    let pkg = dir.join("packages/my-pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(
        pkg.join("package.toml"),
        format!(
            "[package]\nname = \"my-pkg\"\nversion = \"1.0\"\nkind = \"wheel\"\n\n\
             [[source]]\n{source}\nsha256 = \"{sha}\"\ndest = \"opt\"\n\n\
             [wheel]\ndirs = [\"tmp\"]\nsymlinks = {{ \"usr/bin/tool\" = \"/opt/pkg/tool\" }}\n"
        ),
    )
    .unwrap();
}

fn imgrep(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.arg("-C")
        .arg(dir)
        .arg("--store")
        .arg(dir.join("store"))
        .args(args)
        .env_remove("IMGREP_MIRROR_PYPI")
        .env("IMGREP_CONFIG", dir.join("no-config.toml"));
    std::fs::write(dir.join("no-config.toml"), "").unwrap();
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("imgrep runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// (path, mode, link target or contents) of each member of the image's
/// one layer.
fn layer_of(dir: &Path, built: &Output) -> Vec<(String, u32, String)> {
    let json: serde_json::Value = serde_json::from_slice(&built.stdout).unwrap();
    let manifest = json[0]["manifest_digest"].as_str().unwrap();
    let blob = |d: &str| {
        dir.join("store/blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(manifest)).unwrap()).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(blob(layer)).unwrap());
    let mut out = Vec::new();
    for e in tar::Archive::new(gz).entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mode = e.header().mode().unwrap();
        let what = match e.link_name().unwrap() {
            Some(l) => l.to_string_lossy().into_owned(),
            None => {
                let mut s = String::new();
                let _ = e.read_to_string(&mut s);
                s
            }
        };
        out.push((path, mode, what));
    }
    out
}

#[test]
fn wheel_from_the_index_page_becomes_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let wheel = good_wheel();
    let server = Server::start();
    server.route(&format!("/files/ab/{WHEEL}"), Route::Bytes(wheel.clone()));
    let page = format!(
        "<!DOCTYPE html><html><body>\n<a href=\"../../files/ab/{WHEEL}#sha256={}\">{WHEEL}</a><br/>\n</body></html>\n",
        sha256_hex(&wheel)
    );
    server.route("/simple/my-pkg/", Route::Bytes(page.into_bytes()));
    // The project's name is normalised as PEP 503 says: My_Pkg -> my-pkg.
    tree(
        dir.path(),
        &format!("urls = [\"mirror://pypi/My_Pkg/{WHEEL}\"]"),
        &sha256_hex(&wheel),
    );
    let index = server.url("/simple");
    let built = imgrep(
        dir.path(),
        &[("IMGREP_MIRROR_PYPI", &index)],
        &["--json", "build", "my-pkg"],
    );
    assert!(built.status.success(), "{}", text(&built.stderr));
    assert_eq!(server.hits("/simple/my-pkg/"), 1);
    let layer = layer_of(dir.path(), &built);
    let find = |p: &str| {
        layer
            .iter()
            .find(|(path, _, _)| path.trim_end_matches('/') == p)
            .unwrap_or_else(|| panic!("{p} not in the layer: {layer:?}"))
    };
    assert_eq!(find("opt/pkg/tool").1, 0o755);
    assert_eq!(find("opt/pkg/tool").2, "#!/bin/sh\necho tool\n");
    assert_eq!(find("opt/pkg/data.txt").1, 0o644);
    assert_eq!(find("opt/my_pkg-1.0.dist-info/RECORD").2, "pkg/tool,,\n");
    assert_eq!(find("usr/bin/tool").2, "/opt/pkg/tool");
    find("tmp");

    // Unconfigured: no mirror, and pip's configuration points nowhere
    // reachable; the error says how to configure it.
    let dir2 = tempfile::tempdir().unwrap();
    tree(
        dir2.path(),
        &format!("urls = [\"mirror://pypi/my-pkg/{WHEEL}\"]"),
        &sha256_hex(&wheel),
    );
    let missing = format!("{}/nowhere", server.base);
    let out = imgrep(
        dir2.path(),
        &[("PIP_INDEX_URL", &missing)],
        &["build", "my-pkg"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("nowhere/my-pkg/") && err.contains("404"),
        "{err}"
    );
}

#[test]
fn a_tampered_wheel_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let wheel = good_wheel();
    let mut tampered = wheel.clone();
    // One byte of a member's data: still a readable zip with a bad CRC,
    // which the pin catches before any zip reader sees it.
    let at = tampered.windows(5).position(|w| w == b"data\n").unwrap();
    tampered[at] = b'D';
    let server = Server::start();
    server.route(&format!("/files/{WHEEL}"), Route::Bytes(tampered.clone()));
    server.route(
        "/simple/my-pkg/",
        Route::Bytes(format!("<a href=\"/files/{WHEEL}\">{WHEEL}</a>").into_bytes()),
    );
    tree(
        dir.path(),
        &format!("urls = [\"mirror://pypi/my-pkg/{WHEEL}\"]"),
        &sha256_hex(&wheel),
    );
    let index = server.url("/simple/");
    let out = imgrep(
        dir.path(),
        &[("IMGREP_MIRROR_PYPI", &index)],
        &["build", "my-pkg"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("hash mismatch")
            && err.contains(&sha256_hex(&wheel))
            && err.contains(&sha256_hex(&tampered)),
        "{err}"
    );
    assert_eq!(server.hits(&format!("/files/{WHEEL}")), 1);
    let sources = dir.path().join("store/sources/sha256");
    let kept: Vec<_> = std::fs::read_dir(&sources)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(kept.is_empty(), "stored: {kept:?}");
}

#[test]
fn hostile_zip_members_are_refused() {
    let cases: [(&str, Vec<u8>, &str); 5] = [
        (
            "traversal",
            zip_of(&[("pkg/../../escape", 0o100644, b"x")]),
            "`..`",
        ),
        (
            "absolute",
            zip_of(&[("/etc/escape", 0o100644, b"x")]),
            "absolute",
        ),
        (
            "symlink",
            zip_of(&[("pkg/link", 0o120777, b"/etc/passwd")]),
            "only regular files and directories",
        ),
        (
            "backslash",
            zip_of(&[("pkg\\..\\..\\escape", 0o100644, b"x")]),
            "backslash",
        ),
        (
            "duplicate",
            {
                // The zip crate refuses to write a duplicate name: rename
                // the second member's bytes in place (same length).
                let mut z = zip_of(&[("pkg/a", 0o100644, b"1"), ("pkg/b", 0o100644, b"2")]);
                for i in 0..z.len() - 5 {
                    if &z[i..i + 5] == b"pkg/b" {
                        z[i + 4] = b'a';
                    }
                }
                z
            },
            "duplicate",
        ),
    ];
    for (what, zip, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path(), "path = \"pkg.whl\"", &sha256_hex(&zip));
        std::fs::write(dir.path().join("packages/my-pkg/pkg.whl"), &zip).unwrap();
        let out = imgrep(dir.path(), &[], &["build", "my-pkg"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(
            err.contains("refused") && err.contains(expected),
            "{what}: {err}"
        );
        assert!(!dir.path().join("escape").exists());
    }
}
