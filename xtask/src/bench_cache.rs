//! `cargo xtask bench cache [RUNS]`: a no-op `imgrep build` of 200 generated
//! packages, all cached, against `make` on a Makefile of the same graph with
//! every target up to date. Median of RUNS runs each (default 21), printed
//! with the ratio; the target is under 100 ms for imgrep.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

const PACKAGES: usize = 200;
const RUNS: usize = 21;
const TARGET: Duration = Duration::from_millis(100);
const BUSYBOX: &str = "/bin/busybox";

pub fn run(args: &[String]) -> Result<()> {
    let runs: usize = match args.first() {
        Some(n) => n
            .parse()
            .with_context(|| format!("run count {n:?}: expected a number"))?,
        None => RUNS,
    };
    ensure!(runs > 0, "run count must be at least 1");
    ensure!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} missing: install the Debian package busybox-static"
    );
    let imgrep = super::release_imgrep()?;

    let dir = tempfile::Builder::new()
        .prefix("imgrep-bench-cache-")
        .tempdir()?;
    let tree = dir.path().join("tree");
    let store = dir.path().join("store");
    write_tree(&tree)?;
    let names: Vec<String> = (0..PACKAGES).map(name).collect();
    let build = |quiet: bool| -> Result<std::process::Output> {
        let mut cmd = Command::new(&imgrep);
        cmd.arg("-C")
            .arg(&tree)
            .args(["--json", "build", "-j", "2"])
            .args(&names)
            .env("IMGREP_STORE", &store)
            .env("IMGREP_CONFIG", "/dev/null")
            .stdout(Stdio::piped());
        if quiet {
            cmd.stderr(Stdio::null());
        }
        cmd.output().context("running imgrep build")
    };

    eprintln!("bench cache: building {PACKAGES} packages once (release imgrep, -j 2)...");
    let start = Instant::now();
    let out = build(false)?;
    ensure!(
        out.status.success(),
        "the first build failed: {}",
        out.status
    );
    eprintln!(
        "bench cache: first build took {:.1} s",
        start.elapsed().as_secs_f64()
    );

    // The no-op build must be one: every package cached.
    let out = build(true)?;
    ensure!(
        out.status.success(),
        "the no-op build failed: {}",
        out.status
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("build --json")?;
    let entries = v.as_array().context("build --json prints an array")?;
    ensure!(
        entries.len() == PACKAGES + 1,
        "{} packages in the result",
        entries.len()
    );
    let rebuilt: Vec<&str> = entries
        .iter()
        .filter(|e| e["cached"] != serde_json::Value::Bool(true))
        .filter_map(|e| e["name"].as_str())
        .collect();
    ensure!(rebuilt.is_empty(), "the no-op build rebuilt {rebuilt:?}");

    let imgrep_times = time(runs, || {
        let out = build(true)?;
        ensure!(out.status.success(), "imgrep build failed: {}", out.status);
        Ok(())
    })?;

    let mk = dir.path().join("make");
    fs::create_dir(&mk)?;
    fs::write(mk.join("Makefile"), makefile())?;
    let make = |args: &[&str]| -> Result<()> {
        let status = Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(&mk)
            .args(args)
            .stdout(Stdio::null())
            .status()
            .context("running make (install the Debian package make)")?;
        ensure!(status.success(), "make failed: {status}");
        Ok(())
    };
    make(&["all"])?;
    let make_times = time(runs, || make(&["all"]))?;

    let (i, m) = (median(&imgrep_times), median(&make_times));
    println!("no-op build of {PACKAGES} cached packages, median of {runs} runs:");
    println!(
        "  imgrep build  {:>8.1} ms  (min {:.1}, max {:.1})",
        ms(i),
        ms(imgrep_times[0]),
        ms(imgrep_times[runs - 1])
    );
    println!(
        "  make          {:>8.1} ms  (min {:.1}, max {:.1})",
        ms(m),
        ms(make_times[0]),
        ms(make_times[runs - 1])
    );
    println!(
        "  ratio imgrep/make: {:.2}",
        i.as_secs_f64() / m.as_secs_f64()
    );
    println!(
        "  target under {} ms: {}",
        TARGET.as_millis(),
        if i < TARGET { "met" } else { "MISSED" }
    );
    Ok(())
}

/// `p000`..`p199`.
fn name(i: usize) -> String {
    format!("p{i:03}")
}

/// The parent of package `i` (> 0): a binary tree, so the graph has both
/// chains (depth 8) and independent siblings.
fn parent(i: usize) -> usize {
    (i - 1) / 2
}

/// busybox (the shell, from a file beside its recipe) and 200 packages that
/// each need busybox and their parent.
fn write_tree(tree: &Path) -> Result<()> {
    let dir = tree.join("packages/busybox");
    fs::create_dir_all(&dir)?;
    fs::copy(BUSYBOX, dir.join("busybox")).with_context(|| format!("copying {BUSYBOX}"))?;
    let out = Command::new("sha256sum")
        .arg(dir.join("busybox"))
        .output()?;
    ensure!(out.status.success(), "sha256sum failed");
    let sum = String::from_utf8(out.stdout)?;
    let sha = sum
        .split_whitespace()
        .next()
        .context("sha256sum printed nothing")?;
    fs::write(
        dir.join("package.toml"),
        format!(
            r#"[package]
name = "busybox"
version = "static"
description = "Debian's static busybox with its applet links"
license = "GPL-2.0-only"
homepage = "https://busybox.net"

[[source]]
path = "busybox"
sha256 = "{sha}"
executable = true

[build]
steps = [
  ["/build/busybox", "mkdir", "-p", "/out/bin"],
  ["/build/busybox", "cp", "/build/busybox", "/out/bin/busybox"],
  ["/out/bin/busybox", "--install", "/out/bin"],
]
"#
        ),
    )?;
    for i in 0..PACKAGES {
        let n = name(i);
        let deps = if i == 0 {
            r#""busybox""#.to_owned()
        } else {
            format!(r#""busybox", "{}""#, name(parent(i)))
        };
        let dir = tree.join("packages").join(&n);
        fs::create_dir_all(&dir)?;
        fs::write(
            dir.join("package.toml"),
            format!(
                r#"[package]
name = "{n}"
version = "1.0"
description = "Generated for the no-op build benchmark"
license = "MIT"
homepage = "https://example.org/{n}"

[build]
deps = [{deps}]
steps = [["/bin/sh", "-c", "mkdir -p /out/share && echo {n} > /out/share/{n}"]]
"#
            ),
        )?;
    }
    Ok(())
}

/// The same graph for make: one file per package, made from its parent's.
fn makefile() -> String {
    let mut mk = String::from(".PHONY: all\nall:");
    for i in 0..PACKAGES {
        write!(mk, " {}", name(i)).unwrap();
    }
    mk.push_str("\n\nbusybox:\n\ttouch $@\n");
    for i in 0..PACKAGES {
        let deps = if i == 0 {
            "busybox".to_owned()
        } else {
            format!("busybox {}", name(parent(i)))
        };
        write!(mk, "{}: {deps}\n\techo {} > $@\n", name(i), name(i)).unwrap();
    }
    mk
}

/// Wall times of `runs` calls of `f`, sorted, after one warm-up call.
fn time(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<Duration>> {
    f()?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times)
}

fn median(sorted: &[Duration]) -> Duration {
    sorted[sorted.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
