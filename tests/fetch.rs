//! Fetching against a real HTTP server on loopback (tests/fetch_support):
//! verification, mismatches, mirrors, local source directories, offline
//! mode, and tree pins accepted from different archive formats.

mod fetch_support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fetch_support::{Route, Server};
use imgrep::digest::Digest;
use imgrep::fetch::{FetchConfig, FetchError, Fetcher, Pin, SourceRequest, Subtree};
use imgrep::mirror::Mirrors;
use imgrep::nar::{self, NarHash};
use imgrep::store::Store;

fn config() -> FetchConfig {
    FetchConfig {
        timeout: Duration::from_secs(10),
        progress: false,
        ..FetchConfig::default()
    }
}

fn request(urls: &[String], pin: Pin) -> SourceRequest {
    SourceRequest {
        name: "testpkg: source 0".into(),
        urls: urls.to_vec(),
        pin,
        subtree: None,
    }
}

fn tmp_is_empty(store: &Store) -> bool {
    fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .next()
        .is_none()
}

fn sources_count(store: &Store) -> usize {
    fs::read_dir(store.root().join("sources/sha256"))
        .unwrap()
        .count()
}

#[test]
fn fetch_verifies_and_reuses() {
    let server = Server::start();
    let body = b"int main(void) { return 0; }\n".repeat(1000);
    let url = server.route("/src/hello-1.0.tar", Route::Bytes(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let fetcher = Fetcher::new(config());
    let req = request(std::slice::from_ref(&url), Pin::File(Digest::of(&body)));

    let got = fetcher.fetch(&store, &req).unwrap();
    assert_eq!(got.from.as_deref(), Some(url.as_str()));
    assert_eq!(got.path, store.source_path(&Digest::of(&body)));
    assert_eq!(fs::read(&got.path).unwrap(), body);
    assert!(tmp_is_empty(&store));

    let again = fetcher.fetch(&store, &req).unwrap();
    assert_eq!(again.from, None, "second fetch must come from the store");
    assert_eq!(server.hits("/src/hello-1.0.tar"), 1);
}

#[test]
fn mismatch_stores_nothing_and_says_what_and_where() {
    let server = Server::start();
    let served = b"tampered bytes".to_vec();
    let url = server.route("/evil.tar.gz", Route::Bytes(served.clone()));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let expected = Digest::of(b"the real bytes");
    let err = Fetcher::new(config())
        .fetch(
            &store,
            &request(std::slice::from_ref(&url), Pin::File(expected)),
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&url), "{msg}");
    assert!(msg.contains(&format!("expected {expected}")), "{msg}");
    assert!(
        msg.contains(&format!("got {}", Digest::of(&served))),
        "{msg}"
    );
    assert!(msg.contains("testpkg: source 0"), "{msg}");
    assert_eq!(sources_count(&store), 0);
    assert!(tmp_is_empty(&store));
}

#[test]
fn mirror_fallback_lists_every_failed_attempt() {
    let server = Server::start();
    let body = b"mirrored content\n".to_vec();
    server.route("/broken/pkg.tar", Route::Status(500));
    server.route("/m2/gnu/pkg/pkg.tar", Route::Bytes(body.clone()));
    let env = [(
        "IMGREP_MIRROR_GNU".to_owned(),
        format!("{} {}", server.url("/m1"), server.url("/m2/gnu")),
    )];
    let cfg = FetchConfig {
        mirrors: Mirrors::new(env, BTreeMap::new(), None),
        ..config()
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let fetcher = Fetcher::new(cfg);
    let urls = vec![
        server.url("/broken/pkg.tar"),
        "mirror://gnu/pkg/pkg.tar".to_owned(),
    ];
    let got = fetcher
        .fetch(&store, &request(&urls, Pin::File(Digest::of(&body))))
        .unwrap();
    assert_eq!(got.from.unwrap(), server.url("/m2/gnu/pkg/pkg.tar"));
    assert_eq!(server.hits("/broken/pkg.tar"), 1);
    assert_eq!(server.hits("/m1/pkg/pkg.tar"), 1);

    // Every attempt failing: each is listed with its reason.
    let urls = vec![
        server.url("/broken/pkg.tar"),
        "mirror://gnu/pkg/missing.tar".to_owned(),
        "mirror://nowhere/x.tar".to_owned(),
    ];
    let err = fetcher
        .fetch(&store, &request(&urls, Pin::File(Digest::of(b"other"))))
        .unwrap_err();
    let FetchError::Exhausted { attempts, .. } = &err else {
        panic!("{err}")
    };
    let listed: Vec<&str> = attempts.iter().map(|a| a.from.as_str()).collect();
    assert_eq!(
        listed,
        [
            server.url("/broken/pkg.tar"),
            server.url("/m1/pkg/missing.tar"),
            server.url("/m2/gnu/pkg/missing.tar"),
            "mirror://nowhere/x.tar".to_owned(),
        ]
    );
    let msg = err.to_string();
    assert!(msg.contains("HTTP status 500"), "{msg}");
    assert!(msg.contains("HTTP status 404"), "{msg}");
    assert!(msg.contains("IMGREP_MIRROR_NOWHERE"), "{msg}");
}

#[test]
fn content_addressed_fallback_mirror_and_redirects() {
    let server = Server::start();
    let body = b"only the cache has this\n".to_vec();
    let d = Digest::of(&body);
    server.route(
        &format!("/cache/sha256/{}", d.hex()),
        Route::Redirect(server.url("/blobs/1")),
    );
    server.route("/blobs/1", Route::Bytes(body.clone()));
    let cfg = FetchConfig {
        fallback_mirrors: vec![server.url("/cache/")],
        ..config()
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let got = Fetcher::new(cfg)
        .fetch(&store, &request(&[server.url("/gone.tar")], Pin::File(d)))
        .unwrap();
    assert_eq!(fs::read(got.path).unwrap(), body);
    assert_eq!(server.hits("/gone.tar"), 1);
    assert_eq!(server.hits("/blobs/1"), 1);
}

#[test]
fn debian_mirror_from_the_hosts_apt_configuration() {
    let server = Server::start();
    let body = b"!<arch>\nnot really a deb\n".to_vec();
    server.route(
        "/debian/pool/main/h/hello/hello_1_amd64.deb",
        Route::Bytes(body.clone()),
    );
    let apt = tempfile::tempdir().unwrap();
    fs::create_dir(apt.path().join("sources.list.d")).unwrap();
    fs::write(
        apt.path().join("sources.list.d/debian.sources"),
        format!(
            "Types: deb\nURIs: {}\nSuites: bookworm-security\nComponents: main\n\n\
             Types: deb\nURIs: {}\nSuites: bookworm bookworm-updates\nComponents: main\n",
            server.url("/security"),
            server.url("/debian")
        ),
    )
    .unwrap();
    let mut env = BTreeMap::new();
    env.insert(
        "IMGREP_APT_DIR".to_owned(),
        apt.path().display().to_string(),
    );
    env.insert("IMGREP_CONFIG".to_owned(), "/dev/null".to_owned());
    let cfg = FetchConfig {
        progress: false,
        ..FetchConfig::load_from(env).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let url = "mirror://debian/pool/main/h/hello/hello_1_amd64.deb".to_owned();
    let got = Fetcher::new(cfg)
        .fetch(&store, &request(&[url], Pin::File(Digest::of(&body))))
        .unwrap();
    assert_eq!(
        got.from.unwrap(),
        server.url("/debian/pool/main/h/hello/hello_1_amd64.deb")
    );
    assert_eq!(
        server.hits("/security/pool/main/h/hello/hello_1_amd64.deb"),
        0
    );
}

#[test]
fn local_source_directories_come_first_and_are_verified() {
    let server = Server::start();
    let body = b"local copy\n".to_vec();
    let d = Digest::of(&body);
    let url = server.route("/dl/pkg-2.0.tar.gz", Route::Bytes(body.clone()));
    let by_hash = tempfile::tempdir().unwrap();
    let by_name = tempfile::tempdir().unwrap();
    let wrong = tempfile::tempdir().unwrap();
    fs::write(by_hash.path().join(d.hex()), &body).unwrap();
    fs::write(by_name.path().join("pkg-2.0.tar.gz"), &body).unwrap();
    fs::write(wrong.path().join("pkg-2.0.tar.gz"), b"stale").unwrap();

    for (dirs, from) in [
        (
            vec![by_hash.path().to_owned()],
            by_hash.path().join(d.hex()),
        ),
        (
            vec![by_name.path().to_owned()],
            by_name.path().join("pkg-2.0.tar.gz"),
        ),
    ] {
        let sdir = tempfile::tempdir().unwrap();
        let store = Store::open(sdir.path()).unwrap();
        let cfg = FetchConfig {
            source_dirs: dirs,
            ..config()
        };
        let got = Fetcher::new(cfg)
            .fetch(&store, &request(std::slice::from_ref(&url), Pin::File(d)))
            .unwrap();
        assert_eq!(got.from.unwrap(), from.display().to_string());
    }
    assert_eq!(server.total_hits(), 0);

    // A local file with the right name but wrong bytes is an attempt that
    // failed; the URL is tried next.
    let sdir = tempfile::tempdir().unwrap();
    let store = Store::open(sdir.path()).unwrap();
    let cfg = FetchConfig {
        source_dirs: vec![wrong.path().to_owned()],
        ..config()
    };
    let got = Fetcher::new(cfg)
        .fetch(&store, &request(std::slice::from_ref(&url), Pin::File(d)))
        .unwrap();
    assert_eq!(got.from.unwrap(), url);
}

#[test]
fn offline_mode_never_touches_the_network() {
    let server = Server::start();
    let body = b"network only\n".to_vec();
    let d = Digest::of(&body);
    let url = server.route("/net.tar", Route::Bytes(body.clone()));
    let sdir = tempfile::tempdir().unwrap();
    let store = Store::open(sdir.path()).unwrap();
    let offline = FetchConfig {
        offline: true,
        fallback_mirrors: vec![server.url("/cache")],
        ..config()
    };
    let err = Fetcher::new(offline.clone())
        .fetch(&store, &request(std::slice::from_ref(&url), Pin::File(d)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("{url}: not tried: offline mode")),
        "{err}"
    );
    assert_eq!(server.total_hits(), 0);

    let local = tempfile::tempdir().unwrap();
    fs::write(local.path().join("net.tar"), &body).unwrap();
    let cfg = FetchConfig {
        source_dirs: vec![local.path().to_owned()],
        ..offline
    };
    Fetcher::new(cfg)
        .fetch(&store, &request(&[url], Pin::File(d)))
        .unwrap();
    assert_eq!(server.total_hits(), 0);

    // IMGREP_OFFLINE=1 reaches the same setting.
    let mut env = BTreeMap::new();
    env.insert("IMGREP_OFFLINE".to_owned(), "1".to_owned());
    env.insert("IMGREP_CONFIG".to_owned(), "/dev/null".to_owned());
    assert!(FetchConfig::load_from(env).unwrap().offline);
}

/// A small source tree with what NAR records: executable bits, symlinks,
/// nesting, an empty file and an empty directory.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("src/sub")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::write(root.join("README"), b"hello\n").unwrap();
    fs::write(root.join("configure"), b"#!/bin/sh\necho ok\n").unwrap();
    fs::set_permissions(root.join("configure"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("src/sub/empty"), b"").unwrap();
    fs::write(
        root.join("src/main.c"),
        b"int main(void){return 0;}\n".repeat(300),
    )
    .unwrap();
    symlink("../README", root.join("src/README.link")).unwrap();
}

/// Packs `parent/top` with the system's GNU tar, in `flag`'s compression.
fn pack(parent: &Path, top: &str, out: &Path, flag: &str) {
    let mut cmd = Command::new("tar");
    cmd.arg("-C").arg(parent);
    if !flag.is_empty() {
        cmd.arg(flag);
    }
    let status = cmd.arg("-cf").arg(out).arg(top).status().unwrap();
    assert!(status.success(), "tar {flag} failed");
}

fn expected_tree_hash(tree: &Path) -> NarHash {
    let ours = nar::hash_path(tree).unwrap();
    match Command::new("nix-hash")
        .args(["--type", "sha256"])
        .arg(tree)
        .output()
    {
        Ok(out) if out.status.success() => {
            let hex = String::from_utf8(out.stdout).unwrap();
            assert_eq!(hex.trim(), ours.hex(), "nix-hash disagrees with imgrep");
        }
        _ => eprintln!("SKIPPED: cross-check with nix-hash (nix-bin not installed)"),
    }
    ours
}

#[test]
fn tree_pin_accepts_the_same_tree_in_any_archive_format() {
    let work = tempfile::tempdir().unwrap();
    let a = work.path().join("a");
    let b = work.path().join("b");
    make_tree(&a.join("pkg-1.0"));
    // The same tree under another top-level name: stripping makes it equal.
    make_tree(&b.join("pkg"));
    let pin = expected_tree_hash(&a.join("pkg-1.0"));

    let server = Server::start();
    let archives: [(&Path, &str, &str, &str); 4] = [
        (&a, "pkg-1.0", "pkg-1.0.tar.gz", "-z"),
        (&b, "pkg", "pkg-1.0.tar.xz", "-J"),
        (&a, "pkg-1.0", "pkg-1.0.tar.zst", "--zstd"),
        (&b, "pkg", "pkg-1.0.tar", ""),
    ];
    for (parent, top, name, flag) in archives {
        let file = work.path().join(name);
        pack(parent, top, &file, flag);
        let url = server.route(&format!("/{name}"), Route::Bytes(fs::read(&file).unwrap()));
        let sdir = tempfile::tempdir().unwrap();
        let store = Store::open(sdir.path()).unwrap();
        let got = Fetcher::new(config())
            .fetch(&store, &request(&[url], Pin::Tree(pin)))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.path, store.tree_path(&pin));
        assert_eq!(nar::hash_path(&got.path).unwrap(), pin, "{name}");
        assert!(
            got.path.join("configure").exists(),
            "{name}: top dir not stripped"
        );
        let mode = fs::metadata(&got.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o555, "{name}: store trees are read-only");
        assert!(tmp_is_empty(&store), "{name}");
    }
}

#[test]
fn tree_pin_mismatch_and_hostile_archive_keep_nothing() {
    let work = tempfile::tempdir().unwrap();
    make_tree(&work.path().join("t/pkg"));
    let pin = nar::hash_path(&work.path().join("t/pkg")).unwrap();
    fs::write(work.path().join("t/pkg/README"), b"changed\n").unwrap();
    let file = work.path().join("pkg.tar.gz");
    pack(&work.path().join("t"), "pkg", &file, "-z");
    let server = Server::start();
    let url = server.route("/pkg.tar.gz", Route::Bytes(fs::read(&file).unwrap()));

    let sdir = tempfile::tempdir().unwrap();
    let store = Store::open(sdir.path()).unwrap();
    let err = Fetcher::new(config())
        .fetch(&store, &request(std::slice::from_ref(&url), Pin::Tree(pin)))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("expected {pin}")), "{err}");
    assert!(err.contains(&url), "{err}");
    assert!(!store.tree_path(&pin).exists());
    assert!(tmp_is_empty(&store));

    // An archive with a link out of the tree is refused before hashing.
    let evil = work.path().join("evil");
    fs::create_dir_all(evil.join("pkg")).unwrap();
    symlink("/etc/passwd", evil.join("pkg/passwd")).unwrap();
    let file = work.path().join("evil.tar");
    pack(&evil, "pkg", &file, "");
    let url = server.route("/evil.tar", Route::Bytes(fs::read(&file).unwrap()));
    let err = Fetcher::new(config())
        .fetch(&store, &request(&[url], Pin::Tree(pin)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pkg/passwd") && err.contains("outside"),
        "{err}"
    );
    assert!(tmp_is_empty(&store));
}

#[test]
fn tree_pin_from_a_local_unpacked_directory() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("t");
    make_tree(&tree);
    let old = std::time::UNIX_EPOCH + Duration::from_secs(315_532_800);
    fs::File::options()
        .write(true)
        .open(tree.join("configure"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let pin = nar::hash_path(&tree).unwrap();
    let local = work.path().join("sources");
    fs::create_dir(&local).unwrap();
    fs::rename(&tree, local.join(pin.hex())).unwrap();
    let sdir = tempfile::tempdir().unwrap();
    let store = Store::open(sdir.path()).unwrap();
    let cfg = FetchConfig {
        source_dirs: vec![local.clone()],
        offline: true,
        ..config()
    };
    let urls = vec!["https://unreachable.invalid/pkg.tar.gz".to_owned()];
    let got = Fetcher::new(cfg)
        .fetch(&store, &request(&urls, Pin::Tree(pin)))
        .unwrap();
    assert_eq!(
        got.from.unwrap(),
        local.join(pin.hex()).display().to_string()
    );
    assert_eq!(nar::hash_path(&got.path).unwrap(), pin);
    let mtime = fs::metadata(got.path.join("configure"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(mtime, old, "copied trees keep modification times");
}

/// HTTPS is real TLS with certificate verification: a server on loopback
/// with a self-signed certificate (openssl + python3's http.server) is
/// refused, and the refusal is listed as the attempt's reason.
#[test]
fn https_refuses_an_untrusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    if !made.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: https_refuses_an_untrusted_certificate: openssl not available");
        return;
    }
    fs::write(dir.path().join("file.tar"), b"served over TLS").unwrap();
    let script = "import http.server, ssl, sys\n\
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
        ctx.load_cert_chain(sys.argv[1], sys.argv[2])\n\
        srv = http.server.HTTPServer(('127.0.0.1', 0), http.server.SimpleHTTPRequestHandler)\n\
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n\
        print(srv.server_address[1], flush=True)\n\
        srv.serve_forever()\n";
    let spawned = Command::new("python3")
        .args(["-c", script])
        .arg(&cert)
        .arg(&key)
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(mut server) = spawned else {
        eprintln!("SKIPPED: https_refuses_an_untrusted_certificate: python3 not available");
        return;
    };
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut port,
    )
    .unwrap();
    let url = format!("https://127.0.0.1:{}/file.tar", port.trim());
    let sdir = tempfile::tempdir().unwrap();
    let store = Store::open(sdir.path()).unwrap();
    let result = Fetcher::new(config()).fetch(
        &store,
        &request(
            std::slice::from_ref(&url),
            Pin::File(Digest::of(b"served over TLS")),
        ),
    );
    server.kill().unwrap();
    server.wait().unwrap();
    let err = result.unwrap_err().to_string();
    assert!(err.contains(&url), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert_eq!(sources_count(&store), 0);
}

/// A synthetic .deb made by the real dpkg-deb: modules under
/// usr/share/guile/site/3.0, documentation beside them.
fn synthetic_deb(work: &Path) -> Option<(Vec<u8>, NarHash)> {
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        eprintln!("SKIPPED: dpkg-deb is not installed (apt-get install dpkg)");
        return None;
    }
    let root = work.join("pkg");
    fs::create_dir_all(root.join("DEBIAN")).unwrap();
    fs::write(
        root.join("DEBIAN/control"),
        "Package: imgrep-subtree\nVersion: 1.0\nArchitecture: all\n\
         Maintainer: imgrep tests <tests@invalid>\nDescription: test package\n",
    )
    .unwrap();
    let modules = root.join("usr/share/guile/site/3.0");
    fs::create_dir_all(modules.join("nyacc/lang")).unwrap();
    fs::write(
        modules.join("nyacc/lalr.scm"),
        "(define-module (nyacc lalr))\n",
    )
    .unwrap();
    fs::write(
        modules.join("nyacc/lang/util.scm"),
        "(define x 1)\n".repeat(100),
    )
    .unwrap();
    symlink("../lalr.scm", modules.join("nyacc/lang/lalr.scm")).unwrap();
    fs::create_dir_all(root.join("usr/share/doc/imgrep-subtree")).unwrap();
    fs::write(
        root.join("usr/share/doc/imgrep-subtree/README"),
        "not a module\n",
    )
    .unwrap();
    let out = work.join("imgrep-subtree_1.0_all.deb");
    let status = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&root)
        .arg(&out)
        .output()
        .unwrap();
    assert!(status.status.success(), "dpkg-deb: {status:?}");
    let expected = expected_tree_hash(&modules);
    Some((fs::read(&out).unwrap(), expected))
}

#[test]
fn subtree_of_a_deb_is_pinned_by_its_tree_and_the_deb_by_its_sha256() {
    let work = tempfile::tempdir().unwrap();
    let Some((deb, tree)) = synthetic_deb(work.path()) else {
        return;
    };
    let server = Server::start();
    let url = server.route(
        "/pool/imgrep-subtree_1.0_all.deb",
        Route::Bytes(deb.clone()),
    );
    let sub = |archive| {
        Some(Subtree {
            path: "usr/share/guile/site/3.0".into(),
            archive,
        })
    };

    let sdir = tempfile::tempdir().unwrap();
    let store = Store::open(sdir.path()).unwrap();
    let mut req = request(std::slice::from_ref(&url), Pin::Tree(tree));
    req.subtree = sub(Some(Digest::of(&deb)));
    let got = Fetcher::new(config()).fetch(&store, &req).unwrap();
    assert_eq!(got.path, store.tree_path(&tree));
    assert_eq!(
        fs::read(got.path.join("nyacc/lalr.scm")).unwrap(),
        b"(define-module (nyacc lalr))\n"
    );
    assert_eq!(
        fs::read_link(got.path.join("nyacc/lang/lalr.scm")).unwrap(),
        Path::new("../lalr.scm")
    );
    assert!(!got.path.join("usr").exists() && !got.path.join("share").exists());
    assert!(tmp_is_empty(&store));

    // The .deb's own pin is checked before anything is unpacked.
    let sdir = tempfile::tempdir().unwrap();
    let store = Store::open(sdir.path()).unwrap();
    req.subtree = sub(Some(Digest::of(b"another deb")));
    let err = Fetcher::new(config())
        .fetch(&store, &req)
        .unwrap_err()
        .to_string();
    assert!(err.contains("archive hash mismatch"), "{err}");
    assert!(err.contains(&Digest::of(&deb).to_string()), "{err}");
    assert!(!store.tree_path(&tree).exists() && tmp_is_empty(&store));

    // Without it the tree alone decides; a subtree the .deb lacks keeps nothing.
    req.subtree = sub(None);
    Fetcher::new(config()).fetch(&store, &req).unwrap();
    let sdir = tempfile::tempdir().unwrap();
    let store = Store::open(sdir.path()).unwrap();
    req.subtree = Some(Subtree {
        path: "usr/lib/nothing".into(),
        archive: None,
    });
    let err = Fetcher::new(config())
        .fetch(&store, &req)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nothing under the subtree \"usr/lib/nothing\""),
        "{err}"
    );
    assert!(tmp_is_empty(&store));

    // The same subtree, another part of the tree, gives another tree: the
    // documentation is not the modules.
    req.subtree = Some(Subtree {
        path: "usr/share/doc".into(),
        archive: None,
    });
    let err = Fetcher::new(config())
        .fetch(&store, &req)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tree hash mismatch"), "{err}");
}

#[test]
fn subtree_of_a_tarball_names_members_as_the_archive_does() {
    let work = tempfile::tempdir().unwrap();
    make_tree(&work.path().join("t/pkg-1.0"));
    let file = work.path().join("pkg-1.0.tar.gz");
    pack(&work.path().join("t"), "pkg-1.0", &file, "-z");
    let bytes = fs::read(&file).unwrap();
    let server = Server::start();
    let url = server.route("/pkg-1.0.tar.gz", Route::Bytes(bytes.clone()));
    let pin = nar::hash_path(&work.path().join("t/pkg-1.0/src/sub")).unwrap();
    let sdir = tempfile::tempdir().unwrap();
    let store = Store::open(sdir.path()).unwrap();
    let mut req = request(&[url], Pin::Tree(pin));
    req.subtree = Some(Subtree {
        path: "pkg-1.0/src/sub".into(),
        archive: Some(Digest::of(&bytes)),
    });
    let got = Fetcher::new(config()).fetch(&store, &req).unwrap();
    assert!(got.path.join("empty").is_file());

    // src/README.link -> ../README leaves src: refused in that subtree.
    let pin = nar::hash_path(&work.path().join("t/pkg-1.0/src")).unwrap();
    req.pin = Pin::Tree(pin);
    req.subtree = Some(Subtree {
        path: "pkg-1.0/src".into(),
        archive: None,
    });
    let err = Fetcher::new(config())
        .fetch(&store, &req)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("README.link") && err.contains("outside"),
        "{err}"
    );
    assert!(tmp_is_empty(&store));
}
