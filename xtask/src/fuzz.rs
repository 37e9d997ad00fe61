//! `cargo xtask fuzz [TARGET...] [--seconds N]`: coverage-guided fuzzing of
//! the targets in `fuzz/` (docs/fuzzing.md), each for a fixed CPU budget.
//!
//! The stable toolchain has everything libFuzzer needs: LLVM's
//! sanitizer-coverage pass (`-C passes=sancov-module`, the flags cargo-fuzz
//! passes) and libfuzzer-sys, which compiles libFuzzer itself. No
//! sanitizer runtime (that would need nightly): Rust code is memory-safe,
//! and a violated property panics, which libFuzzer reports as a crash.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: cargo xtask fuzz [TARGET...] [--seconds N] [--nice N] [--list]

Runs each fuzz target (all of them if none is named) under libFuzzer for
N CPU-seconds (default 60), at nice level 10 unless --nice says otherwise.
New inputs go to target/fuzz/corpus/TARGET; a crash stops the run, leaves
the input in target/fuzz/artifacts/TARGET/ and fails. Reproduce one with
  target/fuzz/x86_64-unknown-linux-gnu/release/imgrep-fuzz FILE
with IMGREP_FUZZ_TARGET=TARGET; add it to fuzz/corpus/TARGET/ once fixed.";

/// The instrumentation cargo-fuzz adds (libFuzzer's inline 8-bit counters,
/// comparison tracing), plus checks a release build leaves out.
const RUSTFLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "--cfg=fuzzing",
    "-Cdebug-assertions",
    "-Coverflow-checks",
];

/// libFuzzer's exit status when interrupted (SIGINT): the budget ran out.
const INTERRUPTED: i32 = 72;

struct Args {
    targets: Vec<String>,
    seconds: f64,
    nice: i32,
    list: bool,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut out = Args {
        targets: Vec::new(),
        seconds: 60.0,
        nice: 10,
        list: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))
                .cloned()
        };
        match a.as_str() {
            "--seconds" => {
                out.seconds = value("--seconds")?
                    .parse()
                    .context("--seconds takes a number")?
            }
            "--nice" => out.nice = value("--nice")?.parse().context("--nice takes a number")?,
            "--list" => out.list = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            s if s.starts_with('-') => bail!("unknown option {s}\n{USAGE}"),
            s => out.targets.push(s.to_owned()),
        }
    }
    Ok(out)
}

/// The names and descriptions the fuzz binary lists.
fn list_targets(binary: &Path) -> Result<Vec<(String, String)>> {
    let out = Command::new(binary)
        .env("IMGREP_FUZZ_LIST", "1")
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let targets: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, a)| (n.to_owned(), a.to_owned()))
        .collect();
    if targets.is_empty() {
        bail!("{} listed no targets", binary.display());
    }
    Ok(targets)
}

fn build(root: &Path) -> Result<PathBuf> {
    let target_dir = root.join("target/fuzz");
    eprintln!(
        "xtask: building the instrumented fuzz binary in {}",
        target_dir.display()
    );
    let status = super::cargo_safe("cargo")
        .args([
            "build",
            "--release",
            "--package",
            "imgrep-fuzz",
            "--features",
            "libfuzzer",
            "--bin",
            "imgrep-fuzz",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        // Replaces .cargo/config.toml's static linking: libFuzzer is C++.
        .env("RUSTFLAGS", RUSTFLAGS.join(" "))
        .current_dir(root)
        .status()
        .context("cannot start cargo")?;
    if !status.success() {
        bail!("building the fuzz binary failed: {status}");
    }
    Ok(target_dir.join("x86_64-unknown-linux-gnu/release/imgrep-fuzz"))
}

/// CPU time (user + system, of the process and its waited-for children)
/// of `pid`, from /proc/PID/stat.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name, which may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime, stime, cutime, cstime are fields 14-17 (11-14 after the name).
    let ticks: u64 = fields
        .get(11..15)?
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_millis(ticks * 1000 / hz))
}

struct Outcome {
    name: String,
    cpu: Duration,
    execs: Option<u64>,
    corpus: usize,
    crash: Option<String>,
}

/// A scratch directory on a tmpfs when there is one (the unpack targets
/// create and remove a tree per input).
fn scratch_dir(root: &Path) -> Result<PathBuf> {
    let shm = Path::new("/dev/shm");
    let base = if fs::metadata(shm).is_ok_and(|m| m.is_dir()) {
        shm.join(format!("imgrep-fuzz-xtask-{}", std::process::id()))
    } else {
        root.join("target/fuzz/scratch")
    };
    fs::create_dir_all(&base)?;
    Ok(base)
}

fn run_target(
    binary: &Path,
    root: &Path,
    name: &str,
    args: &Args,
    scratch: &Path,
) -> Result<Outcome> {
    let work = root.join("target/fuzz/corpus").join(name);
    let artifacts = root.join("target/fuzz/artifacts").join(name);
    fs::create_dir_all(&work)?;
    fs::create_dir_all(&artifacts)?;
    let mut cmd = Command::new(binary);
    cmd.arg(&work);
    let seeds = root.join("fuzz/corpus").join(name);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    if name == "recipe" {
        // Every recipe of the tree seeds the recipe parser.
        for dir in ["packages", "stage0", "tests/recipes-build"] {
            cmd.arg(root.join(dir));
        }
    }
    let nice = args.nice;
    cmd.arg(format!("-artifact_prefix={}/", artifacts.display()))
        .args([
            "-print_final_stats=1",
            "-max_len=65536",
            "-timeout=30",
            "-rss_limit_mb=4096",
        ])
        .env("IMGREP_FUZZ_TARGET", name)
        .env("IMGREP_FUZZ_SCRATCH", scratch)
        .stderr(std::process::Stdio::piped());
    // SAFETY: setpriority is async-signal-safe; nothing else runs in the child.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            libc::setpriority(libc::PRIO_PROCESS, 0, nice);
            Ok(())
        });
    }
    let before = fs::read_dir(&artifacts)?.count();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let mut stderr = child.stderr.take().expect("piped");
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let budget = Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let mut cpu = Duration::ZERO;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        cpu = cpu_time(child.id()).unwrap_or(cpu);
        if cpu >= budget {
            // SAFETY: signalling our own child, which has not been reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = log.join().unwrap_or_default();
    let execs = log
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|v| v.trim().parse().ok());
    let crashed = fs::read_dir(&artifacts)?.count() > before;
    let code = status.code();
    let crash = if crashed || !(code == Some(0) || code == Some(INTERRUPTED)) {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Some(format!(
            "{status} after {:.0} s wall; artifacts in {}\n{}",
            started.elapsed().as_secs_f64(),
            artifacts.display(),
            tail.join("\n")
        ))
    } else {
        None
    };
    Ok(Outcome {
        name: name.to_owned(),
        cpu,
        execs,
        corpus: fs::read_dir(&work)?.count(),
        crash,
    })
}

pub fn run(args: &[String]) -> Result<()> {
    let args = parse(args)?;
    let root = super::workspace_root();
    let binary = build(&root)?;
    let all = list_targets(&binary)?;
    if args.list {
        for (name, about) in &all {
            println!("{name:10} {about}");
        }
        return Ok(());
    }
    let names: Vec<String> = if args.targets.is_empty() {
        all.iter().map(|(n, _)| n.clone()).collect()
    } else {
        for t in &args.targets {
            if !all.iter().any(|(n, _)| n == t) {
                bail!(
                    "no fuzz target {t}; targets: {}",
                    all.iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        args.targets.clone()
    };
    let scratch = scratch_dir(&root)?;
    let mut outcomes = Vec::new();
    for name in &names {
        eprintln!("xtask: fuzzing {name} for {} CPU-seconds", args.seconds);
        let o = run_target(&binary, &root, name, &args, &scratch);
        let stop = !matches!(&o, Ok(o) if o.crash.is_none());
        outcomes.push(o?);
        if stop {
            break;
        }
    }
    let _ = fs::remove_dir_all(&scratch);
    println!(
        "{:10} {:>9} {:>11} {:>7}  result",
        "target", "CPU-s", "inputs", "corpus"
    );
    for o in &outcomes {
        println!(
            "{:10} {:>9.1} {:>11} {:>7}  {}",
            o.name,
            o.cpu.as_secs_f64(),
            o.execs.map_or("?".into(), |e| e.to_string()),
            o.corpus,
            if o.crash.is_some() { "CRASH" } else { "ok" }
        );
    }
    if let Some(o) = outcomes.iter().find(|o| o.crash.is_some()) {
        bail!(
            "fuzz target {} failed: {}",
            o.name,
            o.crash.as_deref().unwrap_or("")
        );
    }
    Ok(())
}
