//! The real packages of packages/ end to end (issues 7 and 16): a fresh
//! store fetches every source through `mirror://debian/` from the host's apt
//! configuration (the upstream URLs come first and fail where only the
//! Debian archive is reachable, as in CI), builds the packages that build in
//! minutes on the Debian root (bookworm-cc -> linux-headers and cross-musl,
//! the cross stage's sysroot: musl 1.2.5 and the Linux 6.12 UAPI headers),
//! rebuilds them all with `imgrep reproduce` under varied conditions
//! asserting identical digests, runs cross-musl's image with podman and reads
//! linux-headers' layer. The packages built on the native toolchain (bzip2,
//! gzip, m4) need GCC built twice first: tests/toolchain.rs, opt-in.
//!
//! Long: run it with a release binary,
//! `cargo test --release --test e2e_packages -- --nocapture`; it prints the
//! time of each phase. When neither the store nor the Debian archive can
//! provide the sources it prints SKIPPED and why.

#[path = "oci_support/mod.rs"]
mod oci_support;

#[path = "e2e_support/mod.rs"]
mod e2e_support;
use e2e_support::debian_archive;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_imgrep");
const PACKAGES: [&str; 2] = ["cross-musl", "linux-headers"];

fn imgrep(store: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("imgrep runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn phase<T>(name: &str, times: &mut Vec<(String, Duration)>, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let r = f();
    let took = start.elapsed();
    eprintln!("e2e: {name}: {:.1} s", took.as_secs_f64());
    times.push((name.to_owned(), took));
    r
}

#[test]
fn real_packages_build_reproduce_and_run() {
    let started = Instant::now();
    let mut times = Vec::new();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let out = tmp.path().join("out");
    let out_arg = out.to_str().unwrap();

    let mut args = vec!["fetch"];
    args.extend(PACKAGES);
    let fetched = phase("fetch", &mut times, || imgrep(&store, &args));
    if !fetched.status.success() {
        match debian_archive() {
            Err(why) => {
                eprintln!(
                    "SKIPPED: the sources are not in the store and the Debian archive of the host's apt configuration is unreachable ({why}); fetch said:\n{}",
                    text(&fetched.stderr)
                );
                return;
            }
            Ok(url) => panic!(
                "fetch failed although the Debian archive answers at {url}:\n{}",
                text(&fetched.stderr)
            ),
        }
    }

    let mut args = vec!["build", "-j", "2", "--out", out_arg];
    args.extend(PACKAGES);
    let built = phase("build", &mut times, || imgrep(&store, &args));
    assert!(built.status.success(), "build: {}", text(&built.stderr));

    let mut args = vec![
        "--json",
        "reproduce",
        "--against",
        "local",
        "--layout",
        out_arg,
        "-j",
        "2",
    ];
    args.extend(PACKAGES);
    let reproduced = phase("reproduce", &mut times, || imgrep(&store, &args));
    let report: Value = serde_json::from_slice(&reproduced.stdout).unwrap_or(Value::Null);
    assert_eq!(
        reproduced.status.code(),
        Some(0),
        "reproduce: {}\n{}",
        text(&reproduced.stderr),
        text(&reproduced.stdout)
    );
    let rows = report["packages"].as_array().expect("packages");
    let mut names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["bookworm-cc", "cross-musl", "linux-headers"]);
    for r in rows {
        assert_eq!(r["status"], "OK", "{r}");
        assert_eq!(r["got"], r["reference"]["image"], "{r}");
        eprintln!(
            "e2e: {} {} reproduced: {}",
            r["name"].as_str().unwrap(),
            r["version"].as_str().unwrap(),
            r["got"]["manifest"].as_str().unwrap()
        );
    }

    // The sysroot's musl runs and says its version (argv from the recipe's
    // comment); the headers are data, read from the layer as built.
    phase("podman run", &mut times, || {
        let (image, argv, expect) = (
            "cross-musl:1.2.5",
            ["/usr/x86_64-linux-musl/lib/libc.so"],
            "Version 1.2.5",
        );
        let Some(o) = oci_support::podman_run(&out, image, &argv) else {
            eprintln!("SKIPPED: podman run {image}: podman or runc missing");
            return;
        };
        let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
        assert!(all.contains(expect), "{image} {argv:?}: {all}");
        eprintln!(
            "e2e: podman run {image} {argv:?}: {}",
            all.lines().find(|l| l.contains(expect)).unwrap_or("")
        );
    });
    let version = file_in_layer(
        &out,
        "linux-headers:6.12.107",
        "usr/include/linux/version.h",
    )
    .expect("linux-headers holds usr/include/linux/version.h");
    // 6.12.107: (6 << 16) + (12 << 8) + 107.
    assert!(
        text(&version).contains("#define LINUX_VERSION_CODE 396395"),
        "{}",
        text(&version)
    );
    for header in ["usr/include/asm/unistd_64.h", "usr/include/linux/futex.h"] {
        assert!(
            file_in_layer(&out, "linux-headers:6.12.107", header).is_some(),
            "{header}"
        );
    }
    eprintln!(
        "e2e: total {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        times
            .iter()
            .map(|(n, d)| format!("{n} {:.0} s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// The contents of `path` in the one layer of the image `reference` of the
/// OCI layout `layout`, every digest verified on the way.
fn file_in_layer(layout: &Path, reference: &str, path: &str) -> Option<Vec<u8>> {
    let image = imgrep::oci::Layout::open(layout)
        .unwrap()
        .read_image(reference, true)
        .unwrap_or_else(|e| panic!("{reference}: {e}"));
    let [layer] = image.manifest.layers().as_slice() else {
        panic!("{reference}: expected one layer");
    };
    let digest: imgrep::digest::Digest = layer.digest().to_string().parse().unwrap();
    let blob = std::fs::File::open(layout.join("blobs/sha256").join(digest.hex())).unwrap();
    let (_, reader) = imgrep::archive::decompress(std::io::BufReader::new(blob)).unwrap();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap() == Path::new(path) {
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut body).unwrap();
            return Some(body);
        }
    }
    None
}
