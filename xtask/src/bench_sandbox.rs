//! `cargo xtask bench sandbox`: start and exit of `true` in a prepared busybox
//! root, median of many runs, for the release imgrep beside bwrap and
//! unshare+chroot doing the same, printed as ratios to bwrap.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

const RUNS: usize = 200;
const WARMUP: usize = 10;
const BUSYBOX: &str = "/bin/busybox";

pub fn run(args: &[String]) -> Result<()> {
    let runs = match args.first() {
        Some(n) => n
            .parse()
            .with_context(|| format!("run count {n:?}: expected a number"))?,
        None => RUNS,
    };
    ensure!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} missing: install the Debian package busybox-static"
    );
    let imgrep = crate::release_imgrep()?;

    let dir = tempfile::Builder::new().prefix("imgrep-bench-").tempdir()?;
    let root = dir.path().join("root");
    busybox_root(&root)?;
    let root_s = root.to_str().context("temporary path is not UTF-8")?;
    let scratch = dir.path().join("scratch");

    let mut contenders: Vec<(&str, Vec<String>)> = vec![(
        "imgrep run",
        vec![
            imgrep.display().to_string(),
            "run".into(),
            "--root".into(),
            root_s.into(),
            "--".into(),
            "/bin/true".into(),
        ],
    )];
    let scratch_s = scratch.to_str().context("temporary path is not UTF-8")?;
    contenders.push((
        "imgrep run (kept scratch)",
        vec![
            imgrep.display().to_string(),
            "run".into(),
            "--root".into(),
            root_s.into(),
            "--scratch".into(),
            scratch_s.into(),
            "--".into(),
            "/bin/true".into(),
        ],
    ));
    contenders.push((
        "bwrap",
        [
            "bwrap",
            "--unshare-all",
            "--die-with-parent",
            "--ro-bind",
            root_s,
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--",
            "/bin/true",
        ]
        .map(String::from)
        .to_vec(),
    ));
    contenders.push((
        "unshare+chroot",
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "--pid",
            "--fork",
            "--net",
            "--uts",
            "--ipc",
            "chroot",
            root_s,
            "/bin/true",
        ]
        .map(String::from)
        .to_vec(),
    ));

    println!(
        "start and exit of /bin/true in a busybox root, median of {runs} runs ({WARMUP} warm-up), \
         contenders interleaved so load changes hit all alike"
    );
    let mut usable = Vec::new();
    for (name, argv) in &contenders {
        match once(argv) {
            Ok(_) => usable.push((*name, argv, Vec::with_capacity(runs))),
            Err(e) => println!("{name:>28}: unavailable ({e:#})"),
        }
    }
    for i in 0..runs + WARMUP {
        for (_, argv, times) in usable.iter_mut() {
            let took = once(argv)?;
            if i >= WARMUP {
                times.push(took);
            }
        }
    }
    let medians: Vec<(&str, Duration)> = usable
        .into_iter()
        .map(|(name, _, mut times)| {
            times.sort();
            (name, times[times.len() / 2])
        })
        .collect();
    let bwrap = medians.iter().find(|(n, _)| *n == "bwrap").map(|(_, m)| *m);
    for (name, m) in &medians {
        let ratio = bwrap.map_or_else(String::new, |b| {
            format!("  {:.2}x bwrap", m.as_secs_f64() / b.as_secs_f64())
        });
        println!("{name:>28}: {:7.2} ms{ratio}", m.as_secs_f64() * 1e3);
    }
    Ok(())
}

/// Wall time of one successful run of `argv`.
fn once(argv: &[String]) -> Result<Duration> {
    let start = Instant::now();
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run {}", argv[0]))?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            argv[0],
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(took)
}

fn busybox_root(root: &Path) -> Result<()> {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy(BUSYBOX, bin.join("busybox"))?;
    let list = Command::new(BUSYBOX).arg("--list").output()?;
    for applet in String::from_utf8(list.stdout)?
        .lines()
        .filter(|a| *a != "busybox")
    {
        symlink("busybox", bin.join(applet))?;
    }
    for d in ["proc", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    Ok(())
}
