//! Developer tasks: `cargo xtask ci`, `cargo xtask tidy`, `cargo xtask bench <name>`,
//! `cargo xtask fuzz`.

mod bench_bootstrap;
mod bench_build;
mod bench_cache;
mod fuzz;

use std::process::Command;

use anyhow::{bail, Context, Result};

mod bench_layers;
mod bench_sandbox;
mod bench_stage0;
mod tidy;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("tidy") => tidy::run(&workspace_root()),
        Some("bench") => bench(&args[1..]),
        Some("man") => man(),
        Some("fuzz") => fuzz::run(&args[1..]),
        _ => bail!(
            "usage: cargo xtask ci | cargo xtask tidy | cargo xtask man | cargo xtask bench <sandbox|layers|cache|stage0|bootstrap|build> | cargo xtask fuzz [TARGET...] [--seconds N]"
        ),
    }
}

/// `program` without the variables in which `cargo run` describes xtask's
/// own package: passed on to cargo, they reach build scripts (ring's
/// watches CARGO_MANIFEST_DIR), which then rebuild what a plain `cargo
/// build` had built already.
fn cargo_safe(program: &str) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let own = [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
        ];
        if key.starts_with("CARGO_PKG_") || own.contains(&&*key) {
            cmd.env_remove(&*key);
        }
    }
    cmd
}

/// Runs `program args...` from the workspace root, failing if it fails.
fn run(program: &str, args: &[&str]) -> Result<()> {
    eprintln!("xtask: {program} {}", args.join(" "));
    let status = cargo_safe(program)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("cannot start {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed: {status}", args.join(" "));
    }
    Ok(())
}

/// Builds the release imgrep that the benchmarks measure; returns its path.
fn release_imgrep() -> Result<std::path::PathBuf> {
    run("cargo", &["build", "--release", "--bin", "imgrep"])?;
    // .cargo/config.toml names the target, so cargo puts it under it.
    Ok(workspace_root().join("target/x86_64-unknown-linux-gnu/release/imgrep"))
}

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Man pages generated from the CLI's clap definitions into target/man/
/// (`man -l target/man/imgrep-build.1`).
fn man() -> Result<()> {
    let imgrep = release_imgrep()?;
    let dir = workspace_root().join("target/man");
    run(
        imgrep.to_str().context("a UTF-8 path")?,
        &["man", dir.to_str().context("a UTF-8 path")?],
    )?;
    eprintln!("xtask: man pages in {}", dir.display());
    Ok(())
}

/// The gate every change passes: the layering and error-message checks,
/// formatting, lints as errors, the whole test suite (real sandbox, real
/// OCI consumers; see README.md), a short fuzzing run.
fn ci() -> Result<()> {
    tidy::run(&workspace_root())?;
    run("cargo", &["fmt", "--all", "--", "--check"])?;
    run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    run("cargo", &["build", "--release", "--bin", "imgrep"])?;
    test_summarised()?;
    // A short coverage-guided run of every fuzz target (docs/fuzzing.md).
    fuzz::run(&["--seconds".into(), "8".into(), "--nice".into(), "0".into()])
}

/// `cargo test --workspace`, with each test's output shown so that a test
/// that skipped (it prints a line with `SKIPPED`) is seen, not hidden by
/// the harness; ends with the skipped lines and one total line.
fn test_summarised() -> Result<()> {
    use std::io::{BufRead, BufReader};
    let args = [
        "test",
        "--workspace",
        "--no-fail-fast",
        "--",
        "--show-output",
    ];
    eprintln!("xtask: cargo {}", args.join(" "));
    let mut child = cargo_safe("cargo")
        .args(args)
        .current_dir(workspace_root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot start cargo test")?;
    let (mut passed, mut failed, mut skipped) = (0u64, 0u64, Vec::new());
    let stdout = child.stdout.take().expect("piped");
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += count(rest, " passed");
            failed += count(rest, " failed");
        } else if line.contains("SKIPPED") {
            skipped.push(line);
        }
    }
    let status = child.wait()?;
    println!();
    for s in &skipped {
        println!("skipped: {s}");
    }
    println!(
        "ci: {passed} passed, {failed} failed, {} skipped",
        skipped.len()
    );
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    Ok(())
}

/// The number before `what` in a `test result:` line (`ok. 5 passed; ...`).
fn count(line: &str, what: &str) -> u64 {
    line.find(what)
        .and_then(|end| line[..end].rsplit([' ', '.']).next()?.parse().ok())
        .unwrap_or(0)
}

fn bench(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("sandbox") => bench_sandbox::run(&args[1..]),
        Some("layers") => bench_layers::run(&args[1..]),
        Some("cache") => bench_cache::run(&args[1..]),
        Some("stage0") => bench_stage0::run(&args[1..]),
        Some("bootstrap") => bench_bootstrap::run(&args[1..]),
        Some("build") => bench_build::run(&args[1..]),
        other => {
            bail!("unknown benchmark {other:?}: expected sandbox, layers, cache, stage0, bootstrap or build")
        }
    }
}
