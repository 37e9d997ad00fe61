//! `cargo xtask bench layers`: throughput and peak RSS of `imgrep pack`
//! (release build) beside `tar --sort=name ... | gzip/pigz/zstd` on the same
//! trees: a ~700 MB copy of /usr/lib and a generated tree with large files.
//!
//! Options: `--keep DIR` builds the trees in DIR and keeps them (reused when
//! present); `--lib-mb N` sizes the /usr/lib copy (default 700); `--rounds N`
//! measures every pair N times (default 3), imgrep and its baseline
//! alternating, and reports medians: on these shared virtual machines the
//! same command varies by a third from one minute to the next. `--tree
//! usrlib|generated` and `--compression gzip|zstd` measure a part only.
//!
//! Ratios are baseline / imgrep: above 1.0 imgrep is faster. The wall ratio
//! is the target; the CPU ratio (user + system of all threads and pipeline
//! processes) stays meaningful on a machine shared with other work.

use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub fn run(args: &[String]) -> Result<()> {
    let mut keep = None;
    let mut lib_mb = 700u64;
    let mut rounds = 3usize;
    let mut only_tree = None;
    let mut only_compression = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--keep" => keep = Some(PathBuf::from(it.next().context("--keep DIR")?)),
            "--lib-mb" => lib_mb = it.next().context("--lib-mb N")?.parse()?,
            "--rounds" => rounds = it.next().context("--rounds N")?.parse::<usize>()?.max(1),
            "--tree" => only_tree = Some(it.next().context("--tree usrlib|generated")?.clone()),
            "--compression" => {
                only_compression = Some(it.next().context("--compression gzip|zstd")?.clone())
            }
            other => bail!(
                "bench layers: unknown argument {other:?} (--keep DIR, --lib-mb N, --rounds N, --tree usrlib|generated, --compression gzip|zstd)"
            ),
        }
    }
    if let Some(t) = only_tree
        .as_deref()
        .filter(|t| !["usrlib", "generated"].contains(t))
    {
        bail!("bench layers: --tree {t:?}: expected usrlib or generated");
    }
    if let Some(c) = only_compression
        .as_deref()
        .filter(|c| !["gzip", "zstd"].contains(c))
    {
        bail!("bench layers: --compression {c:?}: expected gzip or zstd");
    }
    for tool in ["tar", "gzip", "pigz", "zstd"] {
        if Command::new(tool).arg("--version").output().is_err() {
            bail!("bench layers needs `{tool}` (apt-get install {tool})");
        }
    }
    let imgrep = crate::release_imgrep()?;

    let tmp;
    let base = match keep {
        Some(k) => k,
        None => {
            tmp = tempfile::Builder::new()
                .prefix("imgrep-bench-layers")
                .tempdir()?;
            tmp.path().to_owned()
        }
    };
    let wanted = |name: &str| only_tree.as_deref().is_none_or(|t| t == name);
    let lib = base.join("usrlib");
    if wanted("usrlib") && !lib.exists() {
        eprintln!("copying about {lib_mb} MB of /usr/lib to {}", lib.display());
        let mut budget = lib_mb << 20;
        copy_tree(Path::new("/usr/lib"), &lib, &mut budget)?;
    }
    let generated = base.join("generated");
    if wanted("generated") && !generated.exists() {
        eprintln!("generating {}", generated.display());
        generate(&generated)?;
    }
    let out = base.join("out");
    for (name, tree) in [("usrlib", &lib), ("generated", &generated)] {
        if wanted(name) {
            bench_tree(&imgrep, tree, &out, rounds, only_compression.as_deref())?;
        }
    }
    Ok(())
}

/// Copies files, directories and symlinks in sorted order until `budget`
/// bytes of file content are copied; other file types are skipped.
fn copy_tree(from: &Path, to: &Path, budget: &mut u64) -> Result<()> {
    fs::create_dir_all(to)?;
    let mut entries: Vec<_> = fs::read_dir(from)?.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if *budget == 0 {
            break;
        }
        let src = e.path();
        let dst = to.join(e.file_name());
        let Ok(meta) = fs::symlink_metadata(&src) else {
            continue;
        };
        if meta.is_dir() {
            copy_tree(&src, &dst, budget)?;
        } else if meta.file_type().is_symlink() {
            symlink(fs::read_link(&src)?, &dst)?;
        } else if meta.is_file() && fs::copy(&src, &dst).is_ok() {
            *budget = budget.saturating_sub(meta.len());
        }
    }
    Ok(())
}

/// A tree of 6 large files (64-160 MB, half noise, half text-like) and
/// 4000 small files.
fn generate(root: &Path) -> Result<()> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    fs::create_dir_all(root.join("big"))?;
    let words: Vec<&[u8]> = vec![b"layer ", b"image ", b"digest ", b"tar ", b"0x1f8b ", b"\n"];
    for (i, mb) in [64u64, 96, 128, 160, 64, 96].into_iter().enumerate() {
        let mut f = std::io::BufWriter::new(fs::File::create(root.join(format!("big/blob{i}")))?);
        let mut chunk = vec![0u8; 1 << 16];
        for n in 0..(mb << 20) / chunk.len() as u64 {
            if n % 2 == 0 {
                for b in chunk.chunks_mut(8) {
                    b.copy_from_slice(&next().to_le_bytes()[..b.len()]);
                }
            } else {
                let mut pos = 0;
                while pos < chunk.len() {
                    let w = words[(next() % words.len() as u64) as usize];
                    let n = w.len().min(chunk.len() - pos);
                    chunk[pos..pos + n].copy_from_slice(&w[..n]);
                    pos += n;
                }
            }
            f.write_all(&chunk)?;
        }
    }
    for d in 0..40 {
        let dir = root.join(format!("small/d{d:02}"));
        fs::create_dir_all(&dir)?;
        for i in 0..100 {
            let len = (next() % 20_000) as usize;
            let body: Vec<u8> = (0..len).map(|j| b"abcdefgh\n"[(j + i) % 9]).collect();
            fs::write(dir.join(format!("f{i:03}.txt")), body)?;
        }
    }
    Ok(())
}

struct Measure {
    wall: Duration,
    /// User plus system time of every process and thread involved.
    cpu: Duration,
    max_rss_kb: i64,
    out_bytes: u64,
}

/// Runs `sh -c script`, returning wall time and peak RSS (the largest process
/// of the pipeline, from wait4's rusage).
fn measure(script: &str, out: &Path) -> Result<Measure> {
    let _ = fs::remove_dir_all(out);
    let _ = fs::remove_file(out);
    let start = Instant::now();
    let child = Command::new("sh").args(["-c", script]).spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value; wait4 reaps our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } != pid {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    let wall = start.elapsed();
    if !std::process::ExitStatus::from_raw(status).success() {
        bail!("`{script}` failed");
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(Measure {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_kb: usage.ru_maxrss,
        out_bytes: du(out),
    })
}

fn du(p: &Path) -> u64 {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::read_dir(p)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| du(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

/// The median run of `runs` by wall time, with the largest peak RSS of all.
fn median(mut runs: Vec<Measure>) -> Measure {
    let max_rss_kb = runs.iter().map(|m| m.max_rss_kb).max().unwrap_or(0);
    runs.sort_by_key(|m| m.wall);
    let mut mid = runs.swap_remove(runs.len() / 2);
    mid.max_rss_kb = max_rss_kb;
    mid
}

fn bench_tree(
    imgrep: &Path,
    tree: &Path,
    out: &Path,
    rounds: usize,
    only_compression: Option<&str>,
) -> Result<()> {
    let t = tree.display();
    let o = out.display();
    let tar =
        format!("tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C {t} -cf - .");
    // Warm the page cache (GNU tar skips reading contents into /dev/null).
    measure(&format!("{tar} | cat > /dev/null"), out)?;
    let tar_bytes = measure(&format!("{tar} > {o}"), out)?.out_bytes;
    let pack = |c: &str, n: u32| {
        format!("{} pack {t} --out {o} --tag bench:1 --compression {c} --threads {n} 2>/dev/null >/dev/null", imgrep.display())
    };
    let pairs = [
        (
            "imgrep gzip -t1",
            pack("gzip", 1),
            "tar | gzip -n -6",
            format!("{tar} | gzip -n -6 > {o}"),
        ),
        (
            "imgrep gzip -t2",
            pack("gzip", 2),
            "tar | pigz -n -6 -p 2",
            format!("{tar} | pigz -n -6 -p 2 > {o}"),
        ),
        (
            "imgrep zstd -t1",
            pack("zstd", 1),
            "tar | zstd -3",
            format!("{tar} | zstd -q -3 > {o}"),
        ),
        // The pipeline above runs on two cores too (tar and zstd); this is
        // imgrep's default on a 2-core machine against it.
        (
            "imgrep zstd -t2",
            pack("zstd", 2),
            "tar | zstd -3",
            format!("{tar} | zstd -q -3 > {o}"),
        ),
        // imgrep fsyncs every blob before naming it by its digest; the
        // pipelines leave their output to the kernel's writeback, after the
        // clock stops. Where compression is fast, that is visible: the same
        // pipeline made durable, for comparison (`sync FILE` is fsync).
        (
            "imgrep zstd -t2",
            pack("zstd", 2),
            "tar | zstd -3; sync",
            format!("{tar} | zstd -q -3 > {o} && sync {o}"),
        ),
    ];
    println!(
        "\n{} ({:.0} MB as tar; median of {rounds} alternating rounds, RSS the largest)\n{:<16} {:>7} {:>7} {:>7} {:>8} {:>7}  vs {:<21} {:>7} {:>7} {:>8} {:>7}  wall ratio  cpu ratio",
        t,
        tar_bytes as f64 / 1e6,
        "mode", "wall s", "cpu s", "MB/s", "out MB", "RSS MB", "baseline", "wall s", "cpu s", "out MB", "RSS MB"
    );
    for (name, ours, base_name, base) in pairs {
        if only_compression.is_some_and(|c| !name.contains(c)) {
            continue;
        }
        let mut a = Vec::with_capacity(rounds);
        let mut b = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            a.push(measure(&ours, out)?);
            b.push(measure(&base, out)?);
        }
        let (a, b) = (median(a), median(b));
        let mbps = tar_bytes as f64 / 1e6 / a.wall.as_secs_f64();
        println!(
            "{:<16} {:>7.2} {:>7.2} {:>7.1} {:>8.1} {:>7.1}  vs {:<21} {:>7.2} {:>7.2} {:>8.1} {:>7.1}  {:>9.2}x  {:>8.2}x",
            name,
            a.wall.as_secs_f64(),
            a.cpu.as_secs_f64(),
            mbps,
            a.out_bytes as f64 / 1e6,
            a.max_rss_kb as f64 / 1024.0,
            base_name,
            b.wall.as_secs_f64(),
            b.cpu.as_secs_f64(),
            b.out_bytes as f64 / 1e6,
            b.max_rss_kb as f64 / 1024.0,
            b.wall.as_secs_f64() / a.wall.as_secs_f64(),
            b.cpu.as_secs_f64() / a.cpu.as_secs_f64(),
        );
    }
    let _ = fs::remove_dir_all(out);
    let _ = fs::remove_file(out);
    Ok(())
}
