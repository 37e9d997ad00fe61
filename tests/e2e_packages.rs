//! The real packages of packages/ end to end (issue 7): a fresh store
//! fetches every source through `mirror://debian/` from the host's apt
//! configuration (the upstream URLs come first and fail where only the
//! Debian archive is reachable, as in CI), builds bookworm-cc -> musl ->
//! bzip2 and gzip, rebuilds them all with `imgrep reproduce` under varied
//! conditions asserting identical digests, and runs each image with podman.
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
const PACKAGES: [&str; 2] = ["bzip2", "gzip"];

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
    assert_eq!(names, ["bookworm-cc", "bzip2", "gzip", "musl"]);
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

    // Each image runs and says its version (argv from the recipes' comments).
    let runs: [(&str, &[&str], &str); 3] = [
        (
            "bzip2:1.0.8",
            &["/usr/bin/bzip2", "--help"],
            "Version 1.0.8",
        ),
        ("gzip:1.12", &["/usr/bin/gzip", "--version"], "gzip 1.12"),
        ("musl:1.2.3", &["/lib/ld-musl-x86_64.so.1"], "Version 1.2.3"),
    ];
    phase("podman run", &mut times, || {
        for (image, argv, expect) in runs {
            let Some(o) = oci_support::podman_run(&out, image, argv) else {
                return;
            };
            let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
            assert!(all.contains(expect), "{image} {argv:?}: {all}");
            eprintln!(
                "e2e: podman run {image} {argv:?}: {}",
                all.lines().find(|l| l.contains(expect)).unwrap_or("")
            );
        }
    });
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
