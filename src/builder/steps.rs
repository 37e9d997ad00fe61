//! A package's steps in the sandbox: the read-only trees its root is made
//! of, the sandbox spec of its steps (the fixed environment, `/build`, `$OUT`,
//! limits), one sandbox running every step, and how a failure is described.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::failed::SAVED_BUILD_DIR;
use super::sources::{self, Ready};
use super::{env, to_digest, BuildError, Builder, Built, Options, StepFailure};
use crate::digest::Digest;
use crate::recipe::{Action, BuildDir, Recipe};

/// The sandbox spec of one step of `recipe` in the work directory
/// `work`, with `/build` in `build_dir` (`imgrep shell` enters a kept
/// failure on disk, whatever the recipe asks for).
pub fn step_spec(
    recipe: &Recipe,
    lowers: &Lowers,
    work: &Path,
    argv: Vec<String>,
    cwd: &str,
    build_dir: BuildDir,
    opts: &Options,
) -> sandbox::Spec {
    let build = recipe.build.as_ref().expect("build recipes have [build]");
    let v = &opts.variation;
    let mut spec = sandbox::Spec::new(work.join("scratch"), argv);
    spec.lowers = lowers.root.clone();
    let placed = work.join("build");
    match build_dir {
        // Empty: the builder lays the sources out in it through
        // sandbox::run_filling (sources::place), nothing on the disk.
        BuildDir::Memory => spec.memory_dirs.push(sandbox::MemoryDir {
            sources: Vec::new(),
            dst: env::BUILD_DIR.into(),
            size: None,
            save: Some(work.join(SAVED_BUILD_DIR)),
            fill: true,
        }),
        BuildDir::Disk if lowers.build.is_empty() => spec.binds.push(sandbox::Bind {
            src: placed,
            dst: env::BUILD_DIR.into(),
            readonly: false,
        }),
        BuildDir::Disk => spec.overlays.push(sandbox::Overlay {
            lowers: lowers.build.clone(),
            upper: placed,
            work: work.join("build-work"),
            dst: env::BUILD_DIR.into(),
        }),
    }
    spec.binds.push(sandbox::Bind {
        src: work.join("out"),
        dst: env::OUT_DIR.into(),
        readonly: false,
    });
    spec.tmpfs = vec!["/tmp".into()];
    spec.env = env::environment(recipe, build, v);
    spec.cwd = cwd.into();
    spec.hostname = v.hostname.clone();
    spec.umask = v.umask;
    spec.idmap = v.idmap.clone();
    spec.root_ids = v.root_ids;
    // Real root reads and changes every file on the host as it is.
    spec.reclaim = v.idmap != sandbox::IdMap::Caller && !nix::unistd::geteuid().is_root();
    spec.limits = opts.limits;
    spec.timeout = opts.timeout;
    spec.seccomp_allow = build.seccomp_allow.clone();
    spec
}

/// The read-only trees a package's sandbox is assembled from; kept beside a
/// failed build (`lowers.json`) for `imgrep shell`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Lowers {
    /// The build root: the dependencies' unpacked layers, bottom first.
    pub root: Vec<PathBuf>,
    /// Verified source trees under the build directory, below what the
    /// other sources and the steps write there ([`sources::place`]); on
    /// disk only: in memory, every source is copied into `/build`.
    pub build: Vec<PathBuf>,
}

impl Builder<'_> {
    /// The unpacked layers of `recipe`'s build root, bottom first.
    pub(super) fn build_root(
        &self,
        recipe: &Recipe,
        done: &BTreeMap<String, Built>,
    ) -> Result<Vec<PathBuf>, BuildError> {
        let mut lowers = Vec::new();
        for dep in self.graph.build_root(&recipe.name) {
            let built = &done[dep];
            let manifest = self
                .layout
                .read_manifest(&built.manifest_digest(), built.manifest.size(), dep, false)
                .map_err(|source| BuildError::Oci {
                    package: recipe.name.clone(),
                    error: source,
                })?;
            for (layer, diff_id) in manifest.manifest.layers().iter().zip(&built.diff_ids) {
                let blob = self.store.blob_path(
                    &to_digest(layer.digest()).expect("read_manifest verified the digest"),
                );
                let dir = self
                    .store
                    .cached_layer(diff_id, || File::open(&blob))
                    .map_err(|error| BuildError::Unpack {
                        package: recipe.name.clone(),
                        error,
                    })?;
                lowers.push(dir);
            }
        }
        Ok(lowers)
    }

    /// Runs `recipe`'s steps in one sandbox; with `fill`, `/build` is in
    /// memory and these sources are laid out straight into it.
    pub(super) fn run_steps(
        &self,
        recipe: &Recipe,
        input: &Digest,
        lowers: &Lowers,
        work: &Path,
        fill: Option<&[Ready]>,
    ) -> Result<(), BuildError> {
        let build = recipe.build.as_ref().expect("build recipes have [build]");
        let steps: Vec<(Vec<String>, String)> = match &build.action {
            Action::Script(script) => vec![(
                vec!["/bin/sh".into(), "-euc".into(), script.clone()],
                build.workdir.clone(),
            )],
            Action::Steps(steps) => steps
                .iter()
                .map(|s| {
                    (
                        s.argv.clone(),
                        s.workdir.clone().unwrap_or_else(|| build.workdir.clone()),
                    )
                })
                .collect(),
        };
        let log = self.store.log_path(&recipe.name, input);
        if let Some(dir) = log.parent() {
            fs::create_dir_all(dir).map_err(|source| BuildError::Io {
                package: recipe.name.clone(),
                what: format!("creating {}", dir.display()),
                error: source,
            })?;
        }
        // A fresh log per build attempt: the tail shown on failure is this run's.
        File::create(&log).map_err(|source| BuildError::Io {
            package: recipe.name.clone(),
            what: format!("creating {}", log.display()),
            error: source,
        })?;
        // One sandbox runs every step in order (sandbox::Spec::then): steps
        // share /build, /out, the root and /tmp anyway, and a sandbox per
        // step cost ~50 ms each, 5 s over stage0's hundred steps.
        let (first, rest) = steps.split_first().expect("a recipe has a step");
        let build_dir = env::build_dir(build, &self.opts.variation);
        let mut spec = step_spec(
            recipe,
            lowers,
            work,
            first.0.clone(),
            &first.1,
            build_dir,
            &self.opts,
        );
        spec.then = rest
            .iter()
            .map(|(argv, cwd)| sandbox::Step {
                argv: argv.clone(),
                cwd: cwd.into(),
            })
            .collect();
        spec.stdin = sandbox::Stdio::Null;
        spec.stdout = sandbox::Stdio::File(log.clone());
        spec.stderr = sandbox::Stdio::File(log.clone());
        let sandbox_err = |error| BuildError::Sandbox {
            package: recipe.name.clone(),
            error,
        };
        // As root, the step runs as an unprivileged range (docs/sandbox.md).
        spec.give_trees(sandbox::Trees::All).map_err(sandbox_err)?;
        let mut unplaced = None;
        let report = match fill {
            Some(ready) => sandbox::run_filling(&spec, &mut |dirs| {
                let build = dirs.first().expect("one in-memory /build");
                sources::place(recipe, ready, build, false)
                    .map(drop)
                    .map_err(|e| {
                        let reason = e.to_string();
                        unplaced = Some(e);
                        reason
                    })
            }),
            None => sandbox::run(&spec),
        };
        if let Some(e) = unplaced {
            return Err(e);
        }
        let report = report.map_err(sandbox_err)?;
        report.warnings.iter().for_each(|w| crate::warn::once(w));
        if !report.status.success() {
            return Err(BuildError::StepFailed(Box::new(StepFailure {
                package: recipe.name.clone(),
                version: recipe.version.clone(),
                step: report.command + 1,
                steps: steps.len(),
                command: show_argv(&steps[report.command].0),
                status: match (
                    report.status,
                    super::cause::of_failure(&report, &spec, work, self.store.root()),
                ) {
                    (sandbox::Status::Full(i), _) => describe_full(&spec, i),
                    (other, None) => describe_status(&other),
                    (other, Some(cause)) => format!("{}: {cause}", describe_status(&other)),
                },
                log: log.clone(),
                tail: tail(&log, 20),
            })));
        }
        Ok(())
    }
}

fn show_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let first = a.lines().next().unwrap_or_default();
            let shown = if a.contains('\n') {
                format!("{first} …")
            } else {
                a.clone()
            };
            if shown.contains(' ') || shown.is_empty() {
                format!("{shown:?}")
            } else {
                shown
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A step that filled the in-memory `/build`: its size and what to do.
fn describe_full(spec: &sandbox::Spec, dir: usize) -> String {
    let size = match spec.memory_dirs[dir].size_under(&spec.limits) {
        Some(n) => format!(
            "{} MiB, 1/{} of the memory limit",
            n >> 20,
            sandbox::MemoryDir::DEFAULT_SHARE
        ),
        None => "the kernel's tmpfs default, half the RAM".to_owned(),
    };
    format!(
        "the in-memory {} ({size}) ran out of space, so its writes may be incomplete; \
         raise --memory or set build_dir = \"disk\" in [build]",
        env::BUILD_DIR
    )
}

pub fn describe_status(status: &sandbox::Status) -> String {
    match status {
        sandbox::Status::Exited(c) => format!("exit status {c}"),
        sandbox::Status::Signaled(s) => format!("killed by signal {s}"),
        sandbox::Status::TimedOut => "timed out".to_owned(),
        sandbox::Status::Interrupted(s) => format!("interrupted by signal {s}"),
        sandbox::Status::Full(i) => format!("in-memory directory {i} ran out of space"),
    }
}

/// The last `n` lines of a log file.
fn tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(f) = File::open(path) else {
        return Vec::new();
    };
    let mut lines: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    for line in BufReader::new(f).split(b'\n').map_while(Result::ok) {
        if lines.len() == n {
            lines.pop_front();
        }
        lines.push_back(String::from_utf8_lossy(&line).into_owned());
    }
    lines.into()
}
