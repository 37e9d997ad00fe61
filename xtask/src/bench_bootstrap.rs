//! `cargo xtask bench bootstrap [PKG...] [--runs N] [--imgrep BINARY]`: for
//! each recipe of the x86 chain, `imgrep build PKG` with its dependencies
//! cached against the same exec-form steps run raw, in a plain `unshare` and
//! a chroot over the same root (docs/bootstrap.md, "Measuring it"). Needs a
//! store holding the chain, built: IMGREP_BOOTSTRAP_STORE.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use imgrep::beneath::Dir;
use imgrep::builder::{env, sources};
use imgrep::digest::Digest;
use imgrep::fetch::{FetchConfig, Fetcher};
use imgrep::graph::Graph;
use imgrep::recipe::{Action, BuildDir, Recipe, RecipeSet};
use imgrep::store::Store;
use serde_json::{json, Value};

use crate::bench_stage0::{
    cp, cp_a, interleave, list, load_average, median, parse_runs, timed, verdict,
};

/// The chain measured by default: everything the `tcc` image needs but
/// MesCC's two steps, which take tens of minutes each (5666 s and 456 s
/// here): name them to measure them.
const LAST: &str = "tcc";
const SLOW: &[&str] = &["mescc", "tcc-mescc"];
const USAGE: &str = "usage: cargo xtask bench bootstrap [PKG...] [--runs N] [--imgrep BINARY]";

pub fn run(args: &[String]) -> Result<()> {
    if let [flag, spec] = args {
        if flag == "--raw-steps" {
            return raw_steps(Path::new(spec));
        }
    }
    let (mut runs, mut binary, mut chosen) = (3, None, Vec::new());
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--runs" => {
                let n = rest.next().context(USAGE)?;
                runs = parse_runs(n)?
            }
            "--imgrep" => binary = Some(PathBuf::from(rest.next().context(USAGE)?)),
            name if !name.starts_with('-') => chosen.push(name.to_owned()),
            _ => bail!(USAGE),
        }
    }
    let Some(from) = std::env::var_os("IMGREP_BOOTSTRAP_STORE").map(PathBuf::from) else {
        bail!(
            "bench bootstrap needs a store holding the x86 chain, built: set \
             IMGREP_BOOTSTRAP_STORE to it (docs/bootstrap.md)"
        );
    };
    let repo = crate::workspace_root();
    let set = RecipeSet::load(&repo).map_err(|e| anyhow::anyhow!("{e}"))?;
    if chosen.is_empty() {
        chosen = Graph::new(&set)
            .closure(&[LAST])?
            .into_iter()
            .map(|r| r.name.clone())
            .filter(|n| !SLOW.contains(&n.as_str()))
            .collect();
    }
    for name in &chosen {
        let recipe = set
            .get(name)
            .with_context(|| format!("no recipe {name:?} in {}", repo.display()))?;
        ensure!(
            matches!(
                recipe.build.as_ref().map(|b| &b.action),
                Some(Action::Steps(_))
            ),
            "{name}: not a recipe of exec-form steps, which this benchmark runs raw"
        );
    }
    let imgrep = match binary {
        Some(path) => std::path::absolute(&path)?,
        None => crate::release_imgrep()?,
    };
    // Beside the store: the template is copied from it.
    let tmp = tempfile::Builder::new()
        .prefix("imgrep-bench-bootstrap.")
        .tempdir_in(from.parent().unwrap_or(Path::new("/var/tmp")))
        .context("creating a scratch directory")?;
    // The raw side's runner is this program; a copy, since a build of the
    // workspace may replace the file while the benchmark runs.
    fs::copy("/proc/self/exe", tmp.path().join("runner")).context("copying xtask")?;
    let bench = Bench::prepare(tmp.path(), &repo, &set, &from, &chosen, imgrep)?;

    let mut rows = Vec::new();
    for name in &chosen {
        eprintln!("xtask: {name}");
        let (mut raw, mut ours) = interleave(
            runs,
            ("steps in unshare", &mut |round| bench.raw(name, round)),
            ("imgrep build", &mut |round| bench.imgrep(name, round)),
        )?;
        rows.push((name, median(&mut raw), median(&mut ours), raw, ours));
    }
    println!(
        "x86 chain, one recipe at a time with its dependencies cached, {runs} alternating \
         runs each (load average now {})",
        load_average()
    );
    println!(
        "  {:<30} {:>10} {:>10} {:>7}  runs (raw; imgrep)",
        "recipe", "raw", "imgrep", "ratio"
    );
    let (mut raw_total, mut ours_total) = (0.0, 0.0);
    for (name, raw_median, ours_median, raw, ours) in &rows {
        println!(
            "  {name:<30} {raw_median:>8.2} s {ours_median:>8.2} s {:>7.3}  {}; {}",
            ours_median / raw_median,
            list(raw),
            list(ours)
        );
        raw_total += raw_median;
        ours_total += ours_median;
    }
    let ratio = ours_total / raw_total;
    println!(
        "  {:<30} {raw_total:>8.2} s {ours_total:>8.2} s {ratio:>7.3}  (sums of the medians)",
        "total"
    );
    println!(
        "  ratio of the totals: {ratio:.3} (target <= {}: {})",
        crate::bench_stage0::TARGET_RATIO,
        verdict(ratio)
    );
    Ok(())
}

/// What the raw side of one recipe needs, written as JSON for the
/// `--raw-steps` process that runs inside `unshare`.
struct Raw {
    /// The build root's layers, bottom first.
    layers: Vec<PathBuf>,
    memory: bool,
    env: Vec<(String, String)>,
    steps: Vec<(Vec<String>, String)>,
}

/// A store template holding the chain's images (blobs and unpacked layers)
/// and the chosen recipes' sources, but no build records: each timed build
/// starts from a copy of it in which every package but the measured one is
/// recorded as built.
struct Bench<'a> {
    dir: PathBuf,
    repo: PathBuf,
    set: &'a RecipeSet,
    template: PathBuf,
    /// Every package of the closure: input digest and manifest digest.
    built: BTreeMap<String, (Digest, Digest)>,
    raw: BTreeMap<String, Raw>,
    imgrep: PathBuf,
}

impl<'a> Bench<'a> {
    fn prepare(
        dir: &Path,
        repo: &Path,
        set: &'a RecipeSet,
        from: &Path,
        chosen: &[String],
        imgrep: PathBuf,
    ) -> Result<Bench<'a>> {
        let out = Command::new(&imgrep)
            .args(["--json", "--offline", "-q", "plan", "-C"])
            .arg(repo)
            .args(chosen)
            .env("IMGREP_STORE", from)
            .stderr(Stdio::inherit())
            .output()
            .context("running imgrep plan")?;
        ensure!(out.status.success(), "imgrep plan: {}", out.status);
        let mut built = BTreeMap::new();
        for p in serde_json::from_slice::<Vec<Value>>(&out.stdout)? {
            let name = p["name"].as_str().context("plan: a name")?;
            let Some(manifest) = p["cached"].as_str() else {
                bail!(
                    "{name} is not built in IMGREP_BOOTSTRAP_STORE={}: build the chain there \
                     first (imgrep build {})",
                    from.display(),
                    chosen.join(" ")
                );
            };
            let input = p["input_digest"]
                .as_str()
                .context("plan: an input digest")?;
            built.insert(name.to_owned(), (input.parse()?, manifest.parse()?));
        }

        let template = dir.join("store-template");
        let (src, dst) = (open(from)?, open(&template)?);
        // A copy that keeps owners: imgrep running as root has given the
        // store's trees to its sandboxes' ids, and would again on a fresh one.
        let copy = |path: &Path| -> Result<()> {
            let to = dst.root().join(path.strip_prefix(src.root())?);
            if !to.exists() {
                fs::create_dir_all(to.parent().context("a store entry has a parent")?)?;
                cp_a(path, &to)?;
            }
            Ok(())
        };
        let mut diff_ids = BTreeMap::new();
        for (name, (_, manifest)) in &built {
            let (blobs, layers) = image(&src, manifest)?;
            for d in &blobs {
                copy(&src.blob_path(d))?;
            }
            for d in &layers {
                let layer = src.layer_path(d);
                if layer.is_dir() {
                    copy(&layer)?;
                }
            }
            let blobs = blobs[2..].to_vec();
            diff_ids.insert(
                name.clone(),
                layers.into_iter().zip(blobs).collect::<Vec<_>>(),
            );
        }
        let fetcher = Fetcher::new(FetchConfig {
            offline: true,
            progress: false,
            ..FetchConfig::default()
        });
        let graph = Graph::new(set);
        let mut raw = BTreeMap::new();
        for name in chosen {
            let recipe = set.get(name).expect("checked");
            for got in sources::fetch_all(recipe, repo, &src, &fetcher)? {
                if got.path.starts_with(src.root()) {
                    copy(&got.path)?;
                }
            }
            let build = recipe.build.as_ref().expect("checked");
            let Action::Steps(steps) = &build.action else {
                unreachable!("checked")
            };
            // Those never a dependency there are unpacked as imgrep would.
            let layers = graph
                .build_root(name)
                .iter()
                .flat_map(|dep| &diff_ids[*dep])
                .map(|(d, blob)| dst.cached_layer(d, || fs::File::open(dst.blob_path(blob))))
                .collect::<Result<_, _>>()?;
            let variation = env::Variation::standard();
            raw.insert(
                name.clone(),
                Raw {
                    layers,
                    memory: build.build_dir == BuildDir::Memory,
                    env: env::environment(recipe, build, &variation),
                    steps: steps
                        .iter()
                        .map(|s| {
                            let wd = s.workdir.as_ref().unwrap_or(&build.workdir);
                            (s.argv.clone(), wd.clone())
                        })
                        .collect(),
                },
            );
        }
        Ok(Bench {
            dir: dir.to_owned(),
            repo: repo.to_owned(),
            set,
            template,
            built,
            raw,
            imgrep,
        })
    }

    /// `imgrep build NAME` in a copy of the template where every other
    /// package of the closure is recorded as built; the copy is not timed.
    fn imgrep(&self, name: &str, round: usize) -> Result<Duration> {
        let round_dir = self.dir.join(format!("imgrep-{name}-{round}"));
        let store = round_dir.join("store");
        fs::create_dir(&round_dir)?;
        cp_a(&self.template, &store)?;
        let opened = open(&store)?;
        for (other, (input, manifest)) in &self.built {
            if other != name {
                opened.write_record(input, manifest)?;
            }
        }
        drop(opened);
        let mut cmd = Command::new(&self.imgrep);
        cmd.args(["--offline", "-q", "build", "-C"])
            .arg(&self.repo)
            .arg("--store")
            .arg(&store)
            .arg("--out")
            .arg(round_dir.join("out"))
            .arg(name)
            .env_remove("IMGREP_SOURCE_DIRS");
        let t = timed(cmd, &format!("imgrep build {name}"))?;
        // A build that gives another image than the chain's measured
        // something else.
        let (input, manifest) = &self.built[name];
        let got = open(&store)?.record(input)?;
        ensure!(
            got.as_ref() == Some(manifest),
            "imgrep build {name} gave {got:?}, the chain's image is {manifest}"
        );
        fs::remove_dir_all(&round_dir)?;
        Ok(t)
    }

    /// The recipe's steps, with its environment and working directories,
    /// run by `--raw-steps` in `unshare --user --map-root-user --mount
    /// --pid --fork` and a chroot into a root made (untimed) of copies of
    /// the build root's layers and the sources laid out in /build by
    /// imgrep's own code.
    fn raw(&self, name: &str, round: usize) -> Result<Duration> {
        let raw = &self.raw[name];
        let round_dir = self.dir.join(format!("raw-{name}-{round}"));
        let root = round_dir.join("root");
        fs::create_dir_all(&root)?;
        for layer in &raw.layers {
            // Owned by whoever runs this, so that root in the namespace
            // (the caller, mapped) may write where the steps write.
            cp(&["-a", "--no-preserve=ownership"], &layer.join("."), &root)?;
            chmod_writable(&root)?;
        }
        for sub in ["build", "out", "tmp"] {
            fs::create_dir_all(root.join(sub))?;
        }
        // With `build_dir = "memory"` the runner copies /build into a tmpfs
        // (timed, as imgrep's copy is).
        let build = if raw.memory {
            round_dir.join("build")
        } else {
            root.join("build")
        };
        fs::create_dir_all(&build)?;
        let store = open(&self.template)?;
        let recipe: &Recipe = self.set.get(name).expect("checked");
        let fetcher = Fetcher::new(FetchConfig {
            offline: true,
            progress: false,
            ..FetchConfig::default()
        });
        let ready = sources::fetch_all(recipe, &self.repo, &store, &fetcher)?;
        // Every source copied, trees imgrep mounts on disk included.
        sources::place(recipe, &ready, &Dir::open(&build)?, false)?;
        chmod_writable(&build)?;
        drop(store);
        let spec = round_dir.join("spec.json");
        fs::write(
            &spec,
            serde_json::to_vec(&json!({
                "root": root,
                "memory_build": raw.memory.then_some(&build),
                "log": round_dir.join("log"),
                "env": raw.env,
                "steps": raw.steps,
            }))?,
        )?;
        let mut cmd = Command::new("unshare");
        cmd.env_clear()
            .args(["--user", "--map-root-user", "--mount", "--pid", "--fork"])
            .arg(self.dir.join("runner"))
            .args(["bench", "bootstrap", "--raw-steps"])
            .arg(&spec);
        let t = timed(cmd, &format!("the steps of {name} in unshare"))?;
        fs::remove_dir_all(&round_dir)?;
        Ok(t)
    }
}

fn open(store: &Path) -> Result<Store> {
    Store::open(store).with_context(|| format!("opening the store {}", store.display()))
}

/// The blobs of an image (manifest, config, layers) and its diff_ids.
fn image(store: &Store, manifest: &Digest) -> Result<(Vec<Digest>, Vec<Digest>)> {
    let read = |d: &Digest| -> Result<Value> {
        let path = store.blob_path(d);
        Ok(serde_json::from_slice(
            &fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )?)
    };
    let m = read(manifest)?;
    let config: Digest = m["config"]["digest"]
        .as_str()
        .context("a config")?
        .parse()?;
    let mut blobs = vec![*manifest, config];
    for l in m["layers"].as_array().context("layers")? {
        blobs.push(l["digest"].as_str().context("a layer digest")?.parse()?);
    }
    let diff_ids = read(&config)?["rootfs"]["diff_ids"]
        .as_array()
        .context("diff_ids")?
        .iter()
        .map(|d| Ok(d.as_str().context("a diff_id")?.parse()?))
        .collect::<Result<_>>()?;
    Ok((blobs, diff_ids))
}

/// Layers and store trees are read-only; the copies are written to.
fn chmod_writable(dir: &Path) -> Result<()> {
    let status = Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(dir)
        .status()
        .context("cannot start chmod")?;
    ensure!(status.success(), "chmod -R u+w {}: {status}", dir.display());
    Ok(())
}

/// Inside `unshare`: the tmpfs /build if asked, chroot, then each step with
/// the recipe's environment and working directory, output to the log.
fn raw_steps(spec: &Path) -> Result<()> {
    let spec: Value = serde_json::from_slice(&fs::read(spec)?)?;
    let path = |key: &str| spec[key].as_str().map(PathBuf::from);
    let root = path("root").context("root")?;
    let log = fs::File::create(path("log").context("log")?)?;
    // The root has no /dev: stdin is opened before the chroot.
    let null = fs::File::open("/dev/null")?;
    if let Some(staged) = path("memory_build") {
        let target = CString::new(root.join("build").as_os_str().as_bytes())?;
        // SAFETY: plain C strings; a mount in this process's own namespace.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        ensure!(
            rc == 0,
            "mounting a tmpfs at /build: {}",
            std::io::Error::last_os_error()
        );
        cp_a(&staged.join("."), &root.join("build"))?;
    }
    std::os::unix::fs::chroot(&root).context("chroot")?;
    std::env::set_current_dir("/")?;
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o022) };
    let env: Vec<(String, String)> = serde_json::from_value(spec["env"].clone())?;
    let steps: Vec<(Vec<String>, String)> = serde_json::from_value(spec["steps"].clone())?;
    for (i, (argv, workdir)) in steps.iter().enumerate() {
        let status = Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(workdir)
            .stdin(null.try_clone()?)
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?)
            .status()
            .with_context(|| format!("step {}: cannot start {}", i + 1, argv[0]))?;
        ensure!(
            status.success(),
            "step {} ({}) failed: {status}",
            i + 1,
            argv.join(" ")
        );
    }
    Ok(())
}
