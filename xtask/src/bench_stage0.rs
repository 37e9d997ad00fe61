//! `cargo xtask bench stage0 [--runs N] [--imgrep BINARY]`: wall time of
//! `imgrep build stage0-mescc-tools-extra` against the same chain run by
//! upstream's own driver in a plain `unshare` (docs/bootstrap.md, "Measuring
//! it"). Needs the stage0-posix 1.9.1 release tree in IMGREP_STAGE0_SOURCES.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

/// The recipes' `tree` pin of the release, as a local source directory name
/// (docs/fetch.md: a tree pin is found as `<dir>/<NAR sha256 in hex>/`).
const RELEASE_NAR_HEX: &str = "eedb65918580b1566e4299b10eb731be7a4891a786604166518ecf76606d34e2";
const UPSTREAM_SEED: &str = "bootstrap-seeds/POSIX/AMD64/hex0-seed";
pub(crate) const TARGET_RATIO: f64 = 1.05;

pub fn run(args: &[String]) -> Result<()> {
    let mut runs = 3;
    let mut binary = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match (arg.as_str(), rest.next()) {
            ("--runs", Some(n)) => runs = parse_runs(n)?,
            ("--imgrep", Some(path)) => binary = Some(PathBuf::from(path)),
            _ => bail!("usage: cargo xtask bench stage0 [--runs N] [--imgrep BINARY]"),
        }
    }
    let Some(given) = std::env::var_os("IMGREP_STAGE0_SOURCES").map(PathBuf::from) else {
        bail!(
            "bench stage0 needs the stage0-posix 1.9.1 release tree: set \
             IMGREP_STAGE0_SOURCES to it (docs/bootstrap.md says how to rebuild it)"
        );
    };
    // The tree itself, not a link to it: `cp -a` of a link copies the link.
    let tree = fs::canonicalize(&given)
        .with_context(|| format!("IMGREP_STAGE0_SOURCES={}", given.display()))?;
    ensure!(
        tree.join("kaem.amd64").is_file(),
        "IMGREP_STAGE0_SOURCES={}: no kaem.amd64 there, not the release tree",
        tree.display()
    );
    let root = crate::workspace_root();
    // The release binary by default; --imgrep measures another build of it.
    let imgrep = match binary {
        Some(path) => std::path::absolute(&path)?,
        None => crate::release_imgrep()?,
    };

    let tmp = tempfile::Builder::new()
        .prefix("imgrep-bench-stage0.")
        .tempdir()
        .context("creating a scratch directory")?;
    let bench = Bench::prepare(tmp.path(), &root, &tree, imgrep)?;

    let (mut raw, mut ours) = interleave(
        runs,
        ("upstream's kaem in unshare", &mut |round| {
            bench.raw(&tree, round)
        }),
        ("imgrep build", &mut |round| bench.imgrep(round)),
    )?;
    let (raw_median, ours_median) = (median(&mut raw), median(&mut ours));
    let ratio = ours_median / raw_median;
    println!(
        "stage0 chain, {runs} alternating runs each (load average now {})",
        load_average()
    );
    println!(
        "  upstream's kaem in unshare: median {raw_median:.2} s  {}",
        list(&raw)
    );
    println!(
        "  imgrep build:               median {ours_median:.2} s  {}",
        list(&ours)
    );
    println!(
        "  ratio of medians: {ratio:.3} (target <= {TARGET_RATIO}: {})",
        verdict(ratio)
    );
    Ok(())
}

/// One side of a comparison: its name and one timed run (given the round).
pub(crate) type Side<'a> = (&'a str, &'a mut dyn FnMut(usize) -> Result<Duration>);

/// `runs` rounds of the two sides, alternating, the first of each round
/// swapping, so that a change in the machine's load hits both alike.
pub(crate) fn interleave<'a>(
    runs: usize,
    raw: Side<'a>,
    ours: Side<'a>,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let mut sides = [(raw, Vec::new()), (ours, Vec::new())];
    for round in 0..runs {
        for i in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            let ((name, run), times) = &mut sides[i];
            let t = run(round)?;
            eprintln!(
                "xtask: run {}/{runs}: {name}: {:.2} s",
                round + 1,
                t.as_secs_f64()
            );
            times.push(t);
        }
    }
    let [(_, raw), (_, ours)] = sides;
    Ok((raw, ours))
}

pub(crate) fn verdict(ratio: f64) -> &'static str {
    if ratio <= TARGET_RATIO {
        "met"
    } else {
        "NOT met"
    }
}

/// A recipe tree and a store template holding the fetched sources, so each
/// timed build starts from a fresh store with nothing built.
struct Bench {
    dir: PathBuf,
    recipes: PathBuf,
    store_template: PathBuf,
    imgrep: PathBuf,
}

impl Bench {
    fn prepare(dir: &Path, repo: &Path, tree: &Path, imgrep: PathBuf) -> Result<Bench> {
        let recipes = dir.join("recipes");
        let sources = dir.join("sources");
        let store_template = dir.join("store-template");
        fs::create_dir_all(&recipes)?;
        fs::create_dir_all(&sources)?;
        for sub in ["stage0", "seeds"] {
            cp_a(&repo.join(sub), &recipes.join(sub))?;
        }
        std::os::unix::fs::symlink(tree, sources.join(RELEASE_NAR_HEX))?;
        fs::copy(tree.join(UPSTREAM_SEED), sources.join("hex0-seed"))
            .with_context(|| format!("{}: no {UPSTREAM_SEED}", tree.display()))?;
        // Fetching is not building: the sources go into the template once.
        let status = Command::new(&imgrep)
            .args(["fetch", "-C"])
            .arg(&recipes)
            .arg("stage0-mescc-tools-extra")
            .env("IMGREP_STORE", &store_template)
            .env("IMGREP_SOURCE_DIRS", &sources)
            .env("IMGREP_OFFLINE", "1")
            .stdout(Stdio::null())
            .status()
            .context("running imgrep fetch")?;
        ensure!(
            status.success(),
            "imgrep fetch stage0-mescc-tools-extra: {status}"
        );
        Ok(Bench {
            dir: dir.to_owned(),
            recipes,
            store_template,
            imgrep,
        })
    }

    /// `kaem-optional-seed ./kaem.amd64` on a fresh copy of the tree, in a
    /// plain `unshare`, with an empty environment; the copy is not timed.
    fn raw(&self, tree: &Path, round: usize) -> Result<Duration> {
        let copy = self.dir.join(format!("raw-{round}"));
        cp_a(tree, &copy)?;
        let mut root = std::ffi::OsString::from("--root=");
        root.push(&copy);
        let mut cmd = Command::new("unshare");
        cmd.env_clear()
            .args(["-r", "-m", "-p", "-f", "-n"])
            .arg(root)
            .args([
                "--wd=/",
                "./bootstrap-seeds/POSIX/AMD64/kaem-optional-seed",
                "./kaem.amd64",
            ]);
        let t = timed(cmd, "upstream's kaem.amd64 in unshare")?;
        fs::remove_dir_all(&copy)?;
        Ok(t)
    }

    /// `imgrep build stage0-mescc-tools-extra` with a fresh store holding only
    /// the sources; copying the store template is not timed.
    fn imgrep(&self, round: usize) -> Result<Duration> {
        let store = self.dir.join(format!("store-{round}"));
        cp_a(&self.store_template, &store)?;
        let out = self.recipes.join("out");
        if out.exists() {
            fs::remove_dir_all(&out)?;
        }
        let mut cmd = Command::new(&self.imgrep);
        cmd.args(["build", "-C"])
            .arg(&self.recipes)
            .arg("stage0-mescc-tools-extra")
            .env("IMGREP_STORE", &store)
            .env("IMGREP_OFFLINE", "1")
            .env_remove("IMGREP_SOURCE_DIRS");
        let t = timed(cmd, "imgrep build stage0-mescc-tools-extra")?;
        fs::remove_dir_all(&store)?;
        Ok(t)
    }
}

/// Runs `cmd` with its output discarded (shown on failure) and times it.
pub(crate) fn timed(mut cmd: Command, what: &str) -> Result<Duration> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {what}"))?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        bail!(
            "{what} failed: {}\n{}{}",
            out.status,
            tail(&out.stdout),
            tail(&out.stderr)
        );
    }
    Ok(elapsed)
}

pub(crate) fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    let mut shown = lines[lines.len().saturating_sub(20)..].join("\n");
    if !shown.is_empty() {
        shown.push('\n');
    }
    shown
}

/// `cp -a`: modes, links and times as they are.
pub(crate) fn cp_a(from: &Path, to: &Path) -> Result<()> {
    cp(&["-a"], from, to)
}

/// `cp FLAGS... FROM TO`.
pub(crate) fn cp(flags: &[&str], from: &Path, to: &Path) -> Result<()> {
    let status = Command::new("cp")
        .args(flags)
        .arg(from)
        .arg(to)
        .status()
        .context("cannot start cp")?;
    ensure!(
        status.success(),
        "cp {} {} {}: {status}",
        flags.join(" "),
        from.display(),
        to.display()
    );
    Ok(())
}

/// The value of `--runs`: a positive number of rounds.
pub(crate) fn parse_runs(n: &str) -> Result<usize> {
    n.parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .with_context(|| format!("--runs {n:?}: expected a positive number"))
}

pub(crate) fn median(times: &mut [Duration]) -> f64 {
    times.sort();
    let n = times.len();
    let mid = |i: usize| times[i].as_secs_f64();
    if n % 2 == 1 {
        mid(n / 2)
    } else {
        (mid(n / 2 - 1) + mid(n / 2)) / 2.0
    }
}

pub(crate) fn list(times: &[Duration]) -> String {
    let all: Vec<String> = times
        .iter()
        .map(|t| format!("{:.2}", t.as_secs_f64()))
        .collect();
    format!("[{}]", all.join(", "))
}

pub(crate) fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}
