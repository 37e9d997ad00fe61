//! `cargo xtask bench build [--package NAME] [--runs N] [--imgrep BINARY]`:
//! what `imgrep build` adds to a real compilation. The package (default
//! `cross-binutils`, GNU binutils 2.44 on the Debian root) is built by
//! `imgrep build` from a store that already holds its sources and its
//! unpacked build root, and the same steps are run directly in a plain
//! `unshare` + `chroot` over a copy of the same unpacked root: its sources
//! unpacked into `/build` by GNU tar, then its script by the root's
//! `/bin/sh`, with the same environment and the same `JOBS`. The ratio of
//! the medians is the figure (docs/toolchain.md).
//!
//! The package must build on one dependency (its root is then one layer,
//! which both sides use as it is); the recipes are read from the
//! workspace's packages/, sources come through the usual fetch (the store
//! named by IMGREP_STORE is used as a source directory first, so a warm
//! development store saves the download).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::bench_stage0::{cp_a, list, load_average, median, parse_runs, timed};

const TARGET_RATIO: f64 = 1.03;
/// imgrep's default SOURCE_DATE_EPOCH (docs/recipes.md).
const SOURCE_DATE_EPOCH: i64 = 315_532_800;

pub fn run(args: &[String]) -> Result<()> {
    let mut runs = 3;
    let mut binary = None;
    let mut package = "cross-binutils".to_owned();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match (arg.as_str(), rest.next()) {
            ("--runs", Some(n)) => runs = parse_runs(n)?,
            ("--imgrep", Some(path)) => binary = Some(PathBuf::from(path)),
            ("--package", Some(name)) => package = name.clone(),
            _ => bail!(
                "usage: cargo xtask bench build [--package NAME] [--runs N] [--imgrep BINARY]"
            ),
        }
    }
    let root = crate::workspace_root();
    let imgrep = match binary {
        Some(path) => std::path::absolute(&path)?,
        None => crate::release_imgrep()?,
    };
    let recipe = Recipe::read(&root, &package)?;
    let tmp = tempfile::Builder::new()
        .prefix("imgrep-bench-build.")
        .tempdir_in("/var/tmp")
        .context("creating a scratch directory in /var/tmp")?;
    let bench = Bench::prepare(tmp.path(), &root, &recipe, imgrep)?;
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());

    let mut raw = Vec::new();
    let mut ours = Vec::new();
    // Alternate, and swap which goes first each round, so that a change in
    // the machine's load hits both sides alike.
    for round in 0..runs {
        for side in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            if side == 0 {
                let t = bench.raw(&recipe, jobs, round)?;
                eprintln!(
                    "xtask: run {}/{runs}: the steps in unshare + chroot: {:.1} s",
                    round + 1,
                    t.as_secs_f64()
                );
                raw.push(t);
            } else {
                let t = bench.imgrep(&recipe, round)?;
                eprintln!(
                    "xtask: run {}/{runs}: imgrep build: {:.1} s",
                    round + 1,
                    t.as_secs_f64()
                );
                ours.push(t);
            }
        }
    }
    // Every run's tree stays until all are timed: ext4 skips, at a cost per
    // inode, the inodes deleted in the last minutes when it allocates new
    // ones, and the 30,000 files of a run removed before the next made that
    // run's unpacking three to four times slower (perf: recently_deleted
    // under ext4_create).
    remove_all(tmp.path())?;
    let (raw_median, ours_median) = (median(&mut raw), median(&mut ours));
    let ratio = ours_median / raw_median;
    println!(
        "{package} {}, JOBS={jobs}, {runs} alternating runs each (load average now {})",
        recipe.version,
        load_average()
    );
    println!(
        "  steps in unshare + chroot: median {raw_median:.1} s  {}",
        list(&raw)
    );
    println!(
        "  imgrep build:              median {ours_median:.1} s  {}",
        list(&ours)
    );
    println!(
        "  ratio of medians: {ratio:.3} (target <= {TARGET_RATIO}: {})",
        if ratio <= TARGET_RATIO {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}

/// What the raw side needs of the recipe.
struct Recipe {
    name: String,
    version: String,
    dep: String,
    script: String,
    /// sha256 and dest of each source (all unpacked archives).
    sources: Vec<(String, String)>,
}

impl Recipe {
    fn read(root: &Path, name: &str) -> Result<Recipe> {
        let path = root.join("packages").join(name).join("package.toml");
        let text = fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
        let doc: toml::Table = text
            .parse()
            .with_context(|| format!("{}", path.display()))?;
        let str_at =
            |t: &toml::Table, k: &str| t.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let build = doc
            .get("build")
            .and_then(|b| b.as_table())
            .with_context(|| format!("{}: no [build]", path.display()))?;
        let deps: Vec<String> = build
            .get("deps")
            .and_then(|d| d.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        ensure!(
            deps.len() == 1,
            "{}: bench build needs a package built on exactly one dependency, not {deps:?}",
            path.display()
        );
        ensure!(
            build.get("env").is_none() && build.get("jobs").is_none(),
            "{}: bench build does not reproduce [build] env or jobs",
            path.display()
        );
        let script = str_at(build, "script")
            .with_context(|| format!("{}: bench build needs a script", path.display()))?;
        let package = doc
            .get("package")
            .and_then(|p| p.as_table())
            .context("no [package]")?;
        let mut sources = Vec::new();
        for s in doc
            .get("source")
            .and_then(|s| s.as_array())
            .into_iter()
            .flatten()
        {
            let s = s.as_table().context("[[source]] is a table")?;
            let sha = str_at(s, "sha256")
                .with_context(|| format!("{}: bench build needs sha256 pins", path.display()))?;
            ensure!(
                s.get("unpack").is_none() && s.get("file").is_none(),
                "{}: bench build unpacks every source as an archive",
                path.display()
            );
            sources.push((sha, str_at(s, "dest").unwrap_or_else(|| ".".into())));
        }
        Ok(Recipe {
            name: name.to_owned(),
            version: str_at(package, "version").context("no version")?,
            dep: deps[0].clone(),
            script,
            sources,
        })
    }
}

/// A recipe tree, a store template holding the sources, the dependency's
/// image and its unpacked layer, and that layer's directory.
struct Bench {
    dir: PathBuf,
    recipes: PathBuf,
    store_template: PathBuf,
    layer: PathBuf,
    imgrep: PathBuf,
}

impl Bench {
    fn prepare(dir: &Path, repo: &Path, recipe: &Recipe, imgrep: PathBuf) -> Result<Bench> {
        let recipes = dir.join("recipes");
        let store_template = dir.join("store-template");
        let packages = recipes.join("packages");
        fs::create_dir_all(&packages)?;
        for name in [&recipe.name, &recipe.dep] {
            cp_a(&repo.join("packages").join(name), &packages.join(name))?;
        }
        // A recipe that only unpacks the dependency's layer into the
        // template's cache, which both sides then start from.
        let warm = packages.join("bench-warm");
        fs::create_dir(&warm)?;
        fs::write(
            warm.join("package.toml"),
            format!(
                "[package]\nname = \"bench-warm\"\nversion = \"0\"\n\n[build]\n\
                 deps = [\"{}\"]\nscript = \"true\"\n",
                recipe.dep
            ),
        )?;
        let mut sources = std::ffi::OsString::new();
        if let Some(dev) = std::env::var_os("IMGREP_STORE") {
            sources.push(Path::new(&dev).join("sources"));
        }
        for (what, args) in [
            ("fetch", vec!["fetch", recipe.name.as_str()]),
            ("build", vec!["build", "bench-warm"]),
        ] {
            let status = Command::new(&imgrep)
                .arg("-C")
                .arg(&recipes)
                .args(&args)
                .env("IMGREP_STORE", &store_template)
                .env("IMGREP_SOURCE_DIRS", &sources)
                .stdout(Stdio::null())
                .status()
                .with_context(|| format!("running imgrep {what}"))?;
            ensure!(status.success(), "imgrep {}: {status}", args.join(" "));
        }
        let layers: Vec<PathBuf> = fs::read_dir(store_template.join("layers/sha256"))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        ensure!(
            layers.len() == 1,
            "expected the one unpacked layer of {} in the template store, found {}",
            recipe.dep,
            layers.len()
        );
        // The warm-up's own image is of no use to either side.
        fs::remove_dir_all(recipes.join("out")).ok();
        Ok(Bench {
            dir: dir.to_owned(),
            recipes,
            store_template: store_template.clone(),
            layer: layers[0].clone(),
            imgrep,
        })
    }

    /// The sources unpacked into `/build` by tar, then the script run by the
    /// root's `/bin/sh` in `unshare` + `chroot`, over a copy of the unpacked
    /// root; the copy is not timed.
    fn raw(&self, recipe: &Recipe, jobs: usize, round: usize) -> Result<Duration> {
        let root = self.dir.join(format!("raw-{round}"));
        cp_a(&self.layer, &root)?;
        let mode = |p: &Path| -> Result<()> {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(p, fs::Permissions::from_mode(0o755))?;
            Ok(())
        };
        mode(&root)?;
        // /tmp: the root's own belongs to the store's id range, unmapped
        // here; a fresh tmpfs, as the sandbox gives a step.
        for d in ["build/.home", "out", "tmp", "dev", "proc"] {
            fs::create_dir_all(root.join(d))?;
        }
        // Unpacked inside the timed command, as imgrep unpacks them inside
        // its build: both sides start from the store's verified files.
        let mut unpack = String::new();
        for (sha, dest) in &recipe.sources {
            let into = root.join("build").join(dest);
            fs::create_dir_all(&into)?;
            let file = self.store_template.join("sources/sha256").join(sha);
            unpack.push_str(&format!(
                "tar --no-same-owner -xf '{}' --strip-components=1 -C '{}' && ",
                file.display(),
                into.display()
            ));
        }
        let script = recipe.script.replace('\'', r"'\''");
        let inner = format!(
            "{unpack}mount --rbind /dev '{root}/dev' && mount -t proc proc '{root}/proc' && \
             mount -t tmpfs -o mode=1777 tmpfs '{root}/tmp' && \
             exec chroot '{root}' /usr/bin/env -i \
             PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin \
             HOME=/build/.home TZ=UTC LC_ALL=C SOURCE_DATE_EPOCH={SOURCE_DATE_EPOCH} \
             JOBS={jobs} TARGET=x86_64-linux-musl OUT=/out TMPDIR=/tmp \
             /bin/sh -euc 'cd /build && {{\n{script}\n}}'",
            root = root.display()
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["-r", "-m", "-p", "-f", "-n", "--propagation", "private"])
            .args(["/bin/sh", "-c", &inner]);
        timed(cmd, "the steps in unshare + chroot")
    }

    /// `imgrep build NAME` with a fresh copy of the template store; the copy
    /// is not timed.
    fn imgrep(&self, recipe: &Recipe, round: usize) -> Result<Duration> {
        let store = self.dir.join(format!("store-{round}"));
        cp_a(&self.store_template, &store)?;
        let out = self.recipes.join("out");
        if out.exists() {
            fs::remove_dir_all(&out)?;
        }
        let mut cmd = Command::new(&self.imgrep);
        cmd.args(["build", "-C"])
            .arg(&self.recipes)
            .arg(&recipe.name)
            .env("IMGREP_STORE", &store)
            .env("IMGREP_OFFLINE", "1")
            .env_remove("IMGREP_SOURCE_DIRS");
        timed(cmd, "imgrep build")
    }
}

/// `rm -rf`, which also clears the read-only directories a store holds.
fn remove_all(path: &Path) -> Result<()> {
    let status = Command::new("sh")
        .args(["-c", "chmod -R u+w \"$1\" && rm -rf \"$1\"", "sh"])
        .arg(path)
        .status()
        .context("cannot start sh")?;
    ensure!(status.success(), "removing {}: {status}", path.display());
    Ok(())
}
