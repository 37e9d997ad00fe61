//! The whole musl toolchain from an empty store (issue 16, docs/toolchain.md):
//! bookworm-cc -> the cross stage -> the native stage -> the bundle image
//! `gcc:14.2.0-bundle`; C and C++ programs compiled by the bundle under
//! podman, static, run on the host; no glibc in the bundle; bzip2 built on
//! the native root and run; `imgrep reproduce` of the native binutils and
//! gcc with identical digests. Prints the wall time of each package, the
//! largest resident set of a build process, the store's size and the digests.
//!
//! Hours on a 2-core machine, so opt-in: IMGREP_SLOW_TESTS=1 (run it with a
//! release binary: `IMGREP_SLOW_TESTS=1 cargo test --release --test
//! toolchain -- --nocapture`). IMGREP_SLOW_STORE=DIR uses DIR as the store
//! instead of an empty one (what it already built is then not rebuilt), and
//! IMGREP_SLOW_NO_REPRODUCE=1 leaves out the reproduce step. That step
//! rebuilds binutils and gcc under reproduce's varied conditions (JOBS=1:
//! gcc alone takes hours) with their dependencies reused from the store
//! (`--reuse-deps`); IMGREP_SLOW_FULL_REPRODUCE=1 rebuilds the whole closure
//! instead, the cross stage included. Otherwise it prints SKIPPED.

#[path = "oci_support/mod.rs"]
mod oci_support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_imgrep");
const BUNDLE: &str = "gcc:14.2.0-bundle";

const HELLO_C: &str = r#"#include <stdio.h>
int main(void) { printf("hello from musl gcc\n"); return 0; }
"#;

const HELLO_CC: &str = r#"#include <iostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>
int main() {
    std::vector<std::thread> threads;
    std::vector<int> done(4);
    for (int i = 0; i < 4; i++) threads.emplace_back([&done, i] { done[i] = i * i; });
    for (auto &t : threads) t.join();
    try {
        throw std::runtime_error("thrown and caught");
    } catch (const std::exception &e) {
        std::cout << "c++17: " << e.what() << ", " << done[3] << std::endl;
    }
    return 0;
}
"#;

fn imgrep(store: &Path, args: &[&str]) -> Output {
    let start = Instant::now();
    let o = Command::new(BIN)
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("imgrep runs");
    eprintln!(
        "toolchain: imgrep {}: {:.0} s",
        args.join(" "),
        start.elapsed().as_secs_f64()
    );
    o
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Whether an ELF file asks for a program interpreter (is dynamic).
fn has_interp(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let p = phoff + i * phentsize;
        u32::from_le_bytes(elf[p..p + 4].try_into().unwrap()) == 3 // PT_INTERP
    })
}

/// `podman run` of the bundle in `dir` mounted at /src.
fn in_bundle(out: &Path, dir: &Path, argv: &[&str]) -> Option<Output> {
    let volume = format!("{}:/src", dir.display());
    oci_support::podman_run_with(&["-v", &volume, "-w", "/src"], out, BUNDLE, argv)
}

#[test]
fn the_whole_toolchain_from_an_empty_store() {
    if std::env::var("IMGREP_SLOW_TESTS").as_deref() != Ok("1") {
        eprintln!(
            "SKIPPED: the whole toolchain takes hours (GCC twice); set IMGREP_SLOW_TESTS=1 to run it"
        );
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("imgrep-toolchain-test.")
        .tempdir_in("/var/tmp")
        .unwrap();
    let store = match std::env::var_os("IMGREP_SLOW_STORE") {
        Some(dir) => Path::new(&dir).to_owned(),
        None => tmp.path().join("store"),
    };
    let out = tmp.path().join("out");
    let out_arg = out.to_str().unwrap();

    let built = imgrep(
        &store,
        &["--json", "build", "--out", out_arg, "gcc", "bzip2"],
    );
    eprintln!("{}", text(&built.stderr));
    assert!(built.status.success(), "build: {}", text(&built.stderr));
    let rows: Value = serde_json::from_slice(&built.stdout).unwrap();
    for r in rows.as_array().unwrap() {
        eprintln!(
            "toolchain: {} {}: {} {:.0} s{}",
            r["name"].as_str().unwrap(),
            r["version"].as_str().unwrap(),
            r["manifest_digest"].as_str().unwrap(),
            r["seconds"].as_f64().unwrap_or(f64::NAN),
            if r["cached"].as_bool() == Some(true) {
                " (cached)"
            } else {
                ""
            }
        );
    }
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut u = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u
    };
    eprintln!(
        "toolchain: largest resident set of a waited-for process: {} MiB",
        usage.ru_maxrss / 1024
    );
    let du = Command::new("du").arg("-sh").arg(&store).output().unwrap();
    eprintln!("toolchain: store size: {}", text(&du.stdout).trim());

    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("hello.c"), HELLO_C).unwrap();
    std::fs::write(src.join("hello.cc"), HELLO_CC).unwrap();
    let Some(cc) = in_bundle(
        &out,
        &src,
        &["gcc", "-O2", "-static", "hello.c", "-o", "hello"],
    ) else {
        eprintln!("SKIPPED (in part): podman or runc missing; the images were not run");
        return;
    };
    assert!(cc.status.success(), "gcc: {}", text(&cc.stderr));
    let cxx = in_bundle(
        &out,
        &src,
        &[
            "g++",
            "-std=c++17",
            "-O2",
            "-static",
            "-pthread",
            "hello.cc",
            "-o",
            "hello++",
        ],
    )
    .unwrap();
    assert!(cxx.status.success(), "g++: {}", text(&cxx.stderr));
    for (program, expect) in [
        ("hello", "hello from musl gcc\n"),
        ("hello++", "c++17: thrown and caught, 9\n"),
    ] {
        let path = src.join(program);
        assert!(
            !has_interp(&std::fs::read(&path).unwrap()),
            "{program} is static"
        );
        let run = Command::new(&path).output().unwrap();
        assert_eq!(text(&run.stdout), expect, "{program} on the host");
    }
    // make and /bin/sh (busybox) are there; nothing of glibc is.
    let tools = in_bundle(
        &out,
        &src,
        &[
            "/bin/sh",
            "-c",
            "make --version | head -1; readlink /bin/sh; \
             find / -xdev \\( -name 'libc.so.6' -o -name 'ld-linux*' \\) -print",
        ],
    )
    .unwrap();
    let said = text(&tools.stdout);
    assert!(tools.status.success(), "{said}{}", text(&tools.stderr));
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines.len(), 2, "no glibc file may be listed: {said}");
    assert_eq!(lines[0], "GNU Make 4.4.1");
    assert!(lines[1].ends_with("busybox"), "/bin/sh -> {}", lines[1]);
    let bzip2 =
        oci_support::podman_run(&out, "bzip2:1.0.8", &["/usr/bin/bzip2", "--help"]).unwrap();
    assert!(
        text(&bzip2.stderr).contains("Version 1.0.8"),
        "{}",
        text(&bzip2.stderr)
    );

    if std::env::var("IMGREP_SLOW_NO_REPRODUCE").as_deref() == Ok("1") {
        eprintln!("SKIPPED (in part): IMGREP_SLOW_NO_REPRODUCE=1: reproduce not run");
    } else {
        let mut args = vec![
            "--json",
            "reproduce",
            "--against",
            "local",
            "--layout",
            out_arg,
            "binutils",
            "gcc",
        ];
        let full = std::env::var("IMGREP_SLOW_FULL_REPRODUCE").as_deref() == Ok("1");
        if !full {
            args.push("--reuse-deps");
        }
        let reproduced = imgrep(&store, &args);
        assert_eq!(
            reproduced.status.code(),
            Some(0),
            "reproduce: {}\n{}",
            text(&reproduced.stderr),
            text(&reproduced.stdout)
        );
        let report: Value = serde_json::from_slice(&reproduced.stdout).unwrap();
        for r in report["packages"].as_array().unwrap() {
            let named = ["binutils", "gcc"].contains(&r["name"].as_str().unwrap());
            let expected = if named || full { "OK" } else { "REUSED" };
            assert_eq!(r["status"], expected, "{r}");
            eprintln!(
                "toolchain: reproduced {} {}: {}",
                r["name"].as_str().unwrap(),
                r["version"].as_str().unwrap(),
                r["got"]["manifest"].as_str().unwrap()
            );
        }
    }
    eprintln!("toolchain: total {:.0} s", started.elapsed().as_secs_f64());
}
