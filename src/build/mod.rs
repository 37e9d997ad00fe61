//! `imgrep build`: the dependency closure of the requested packages, each
//! package's input digest, the cache, and for what is not cached: sources
//! fetched and verified, steps run in the sandbox on a root made of the
//! dependencies' layers, `$OUT` packed into one normalised layer and an OCI
//! image. Data flows one way: recipe -> plan -> sandbox -> layer -> image.
//!
//! The store doubles as an OCI image layout: its `blobs/sha256/` holds every
//! layer, config and manifest, and `records/` maps input digests to manifest
//! digests. `out/` of the recipe tree gets a copy of each image under the ref
//! `NAME:VERSION`.

pub mod debs;
pub mod env;
pub mod sources;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use oci_spec::image::{Descriptor, ImageManifest, MediaType};

use crate::digest::Digest;
use crate::fetch::Fetcher;
use crate::graph::Graph;
use crate::layer::{self, PackOptions};
use crate::oci::{self, ImageLayer, ImageSpec, Layout};
use crate::recipe::{Action, BuildDir, Kind, Recipe, RecipeSet};
use crate::store::Store;
use crate::unpack;

pub use env::Variation;

/// Where, in a package's work directory, the sandbox saves an in-memory
/// `/build` when a step fails.
const SAVED_BUILD_DIR: &str = "build-saved";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Graph(#[from] crate::graph::GraphError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Fetch(#[from] crate::fetch::FetchError),
    #[error("{package}: {message}")]
    Source { package: String, message: String },
    #[error("{package}: {source}")]
    Oci {
        package: String,
        source: crate::oci::Error,
    },
    #[error("{package}: unpacking the build root: {source}")]
    Unpack {
        package: String,
        source: crate::unpack::UnpackError,
    },
    #[error("{package}: {what}: {source}")]
    Io {
        package: String,
        what: String,
        source: io::Error,
    },
    #[error("{package}: the sandbox refused the step: {source}")]
    Sandbox {
        package: String,
        source: sandbox::Error,
    },
    #[error("{0}")]
    StepFailed(Box<StepFailure>),
    #[error("{0}")]
    FixedOutput(Box<OutputMismatch>),
    #[error("{package}: remote cache: {message}")]
    RemoteCache { package: String, message: String },
    #[error("{package}: not built: its dependency {dependency} failed")]
    Cancelled { package: String, dependency: String },
}

/// A build step that did not exit 0: what ran, how it ended, where its log is.
#[derive(Debug)]
pub struct StepFailure {
    pub package: String,
    pub version: String,
    pub step: usize,
    pub steps: usize,
    pub command: String,
    pub status: String,
    pub log: PathBuf,
    pub tail: Vec<String>,
}

impl std::fmt::Display for StepFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: step {} of {} failed ({})\n  command: {}\n  log: {}\n  shell: imgrep shell {}",
            self.package,
            self.version,
            self.step,
            self.steps,
            self.status,
            self.command,
            self.log.display(),
            self.package
        )?;
        if !self.tail.is_empty() {
            write!(f, "\n  last lines of the log:")?;
            for l in &self.tail {
                write!(f, "\n  | {l}")?;
            }
        }
        Ok(())
    }
}

/// A fixed-output recipe whose build produced another layer than it declares.
#[derive(Debug)]
pub struct OutputMismatch {
    pub package: String,
    /// The recipe's package.toml.
    pub path: PathBuf,
    pub expected: Digest,
    pub got: Digest,
    /// The work directory was kept for `imgrep shell`.
    pub kept: bool,
}

impl std::fmt::Display for OutputMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: [output] diff_id: {} is a fixed-output recipe, and its build produced a \
             different layer\n  expected: {}\n  got:      {}",
            self.path.display(),
            self.package,
            self.expected,
            self.got
        )?;
        if self.kept {
            write!(f, "\n  shell: imgrep shell {}", self.package)?;
        }
        Ok(())
    }
}

/// How to build.
#[derive(Debug, Clone)]
pub struct Options {
    /// Packages built at the same time.
    pub jobs: usize,
    /// Build even when the store has a record for the input digest.
    pub rebuild: bool,
    pub limits: sandbox::Limits,
    pub timeout: Option<Duration>,
    pub variation: Variation,
    /// Where each image is tagged `NAME:VERSION`; `None`: only the store.
    pub out: Option<PathBuf>,
    /// Print per-package progress lines on stderr.
    pub verbose: bool,
    /// Registry repository prefixes (`HOST/PREFIX`) to look up an image of
    /// the same input digest in before building (docs/registry.md).
    pub cache_from: Vec<String>,
    /// Registry repository prefix to push each built image to, tagged by
    /// its input digest.
    pub cache_to: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            jobs: 1,
            rebuild: false,
            limits: sandbox::Limits::default(),
            timeout: None,
            variation: Variation::standard(),
            out: None,
            verbose: true,
            cache_from: Vec::new(),
            cache_to: None,
        }
    }
}

/// The read-only trees a package's sandbox is assembled from; kept beside a
/// failed build (`lowers.json`) for `imgrep shell`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Lowers {
    /// The build root: the dependencies' unpacked layers, bottom first.
    pub root: Vec<PathBuf>,
    /// Verified source trees under the build directory, below what the
    /// other sources and the steps write there ([`sources::place`]).
    pub build: Vec<PathBuf>,
}

/// One package's result.
#[derive(Debug, Clone)]
pub struct Built {
    pub name: String,
    pub version: String,
    pub input: Digest,
    /// The image manifest, in the store (and in `out/` when asked).
    pub manifest: Descriptor,
    /// Layers of the image, bottom first (one for a package image).
    pub diff_ids: Vec<Digest>,
    pub cached: bool,
    pub duration: Duration,
}

/// What a ref of `out/` points at: a manifest digest and, for a fixed
/// output, the input digest of the recipe that made it.
type Tag = (String, Option<String>);

/// Builds packages of one recipe tree into one store.
pub struct Builder<'a> {
    /// `out/`'s tags (ref -> manifest digest), read once per run: re-reading
    /// its index for each of N packages made a no-op build O(N²).
    tags: Mutex<Option<BTreeMap<String, Tag>>>,
    graph: Graph<'a>,
    store: &'a Store,
    layout: Layout,
    fetcher: &'a Fetcher,
    opts: Options,
    /// Set when a remote cache is configured.
    registry: Option<crate::registry::Client>,
}

impl<'a> Builder<'a> {
    pub fn new(
        set: &'a RecipeSet,
        store: &'a Store,
        fetcher: &'a Fetcher,
        opts: Options,
    ) -> Result<Self, BuildError> {
        let layout = Layout::create(store.root()).map_err(|source| BuildError::Oci {
            package: "(store)".into(),
            source,
        })?;
        let registry = if opts.cache_from.is_empty() && opts.cache_to.is_none() {
            None
        } else {
            let client = crate::registry::Client::new(crate::registry::Options {
                credentials: crate::registry::CredentialSource::from_env(),
                ..crate::registry::Options::default()
            })
            .map_err(|e| BuildError::RemoteCache {
                package: "(all)".into(),
                message: e.to_string(),
            })?;
            Some(client)
        };
        Ok(Builder {
            registry,
            tags: Mutex::new(None),
            graph: Graph::new(set),
            store,
            layout,
            fetcher,
            opts,
        })
    }

    pub fn store(&self) -> &Store {
        self.store
    }

    /// Builds `roots` and everything they need, up to `opts.jobs` packages at
    /// once. Returns every package of the closure in build order; on failure,
    /// the first error after running packages finished (independent
    /// packages still complete, so their work is kept).
    pub fn build(&self, roots: &[&str]) -> Result<Vec<Built>, BuildError> {
        let order: Vec<String> = self
            .graph
            .closure(roots)?
            .iter()
            .map(|r| r.name.clone())
            .collect();
        let schedule = Mutex::new(self.graph.schedule(roots)?);
        let done: Mutex<BTreeMap<String, Built>> = Mutex::new(BTreeMap::new());
        let errors: Mutex<Vec<BuildError>> = Mutex::new(Vec::new());
        let wake = Condvar::new();
        let jobs = self.opts.jobs.max(1);
        std::thread::scope(|s| {
            for _ in 0..jobs {
                s.spawn(|| loop {
                    let name = {
                        let mut sched = schedule.lock().expect("scheduler lock");
                        loop {
                            if let Some(n) = sched.next_ready() {
                                break Some(n);
                            }
                            if sched.running() == 0 {
                                break None;
                            }
                            sched = wake.wait(sched).expect("scheduler lock");
                        }
                    };
                    let Some(name) = name else {
                        wake.notify_all();
                        return;
                    };
                    let deps = done.lock().expect("results lock").clone();
                    let result = self.package(&name, &deps);
                    let mut sched = schedule.lock().expect("scheduler lock");
                    match result {
                        Ok(b) => {
                            done.lock().expect("results lock").insert(name.clone(), b);
                            sched.complete(&name);
                        }
                        Err(e) => {
                            let mut errs = errors.lock().expect("errors lock");
                            for c in sched.fail(&name) {
                                errs.push(BuildError::Cancelled {
                                    package: c,
                                    dependency: name.clone(),
                                });
                            }
                            errs.insert(0, e);
                        }
                    }
                    wake.notify_all();
                });
            }
        });
        let mut errors = errors.into_inner().expect("errors lock");
        if !errors.is_empty() {
            return Err(errors.remove(0));
        }
        let mut done = done.into_inner().expect("results lock");
        Ok(order.iter().filter_map(|n| done.remove(n)).collect())
    }

    /// The input digest of `name` given its build root's images, and the
    /// document it hashes.
    pub fn input_of(
        &self,
        recipe: &Recipe,
        done: &BTreeMap<String, Built>,
    ) -> Option<(Digest, Vec<u8>)> {
        // A dependency counts as the image it provides, whichever recipe made
        // it (src/recipe/output.rs).
        let provides = |name: &str| {
            self.graph
                .recipe(name)
                .map_or_else(|_| name.to_owned(), |r| r.provides().to_owned())
        };
        let mut deps = Vec::new();
        for dep in self.graph.build_root(&recipe.name) {
            deps.push((provides(dep), done.get(dep)?.manifest_digest()));
        }
        let json = recipe
            .keyed_by_images(provides)
            .input_json(&deps, layer::FORMAT_VERSION);
        Some((Digest::of(&json), json))
    }

    /// The cached image of an input digest, if the store has it whole.
    pub fn cached(&self, input: &Digest, name: &str) -> Option<(Descriptor, Vec<Digest>)> {
        let manifest = self.store.record(input).ok()??;
        let image = self.read_image(&manifest, name).ok()?;
        Some(image)
    }

    fn read_image(&self, manifest: &Digest, name: &str) -> io::Result<(Descriptor, Vec<Digest>)> {
        let path = self.store.blob_path(manifest);
        let bytes = fs::read(&path)?;
        let parsed: ImageManifest = serde_json::from_slice(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let config_path = self
            .store
            .blob_path(&to_digest(parsed.config().digest()).map_err(invalid)?);
        let config: oci_spec::image::ImageConfiguration =
            serde_json::from_slice(&fs::read(config_path)?)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        for l in parsed.layers() {
            let d = to_digest(l.digest()).map_err(invalid)?;
            if !self.store.blob_path(&d).is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{name}: layer blob {d} missing"),
                ));
            }
        }
        let diff_ids = config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| d.parse::<Digest>().map_err(invalid))
            .collect::<io::Result<Vec<_>>>()?;
        let desc = oci::descriptor(
            MediaType::ImageManifest.as_ref(),
            manifest,
            bytes.len() as u64,
            None,
        );
        Ok((desc, diff_ids))
    }

    /// Builds (or finds cached) one package whose build root is in `done`.
    fn package(&self, name: &str, done: &BTreeMap<String, Built>) -> Result<Built, BuildError> {
        let recipe = self.graph.recipe(name)?;
        let start = Instant::now();
        let (input, input_json) = self
            .input_of(recipe, done)
            .expect("the scheduler starts a package after its build root");
        let found = |(manifest, diff_ids): (Descriptor, Vec<Digest>)| -> Result<Built, BuildError> {
            let built = Built::new(recipe, input, (manifest, diff_ids), true, start.elapsed());
            self.publish(&built)?;
            Ok(built)
        };
        let local = || {
            (!self.opts.rebuild)
                .then(|| self.cached(&input, name))
                .flatten()
        };
        if let Some(hit) = local() {
            return found(hit);
        }
        let _lock = self.store.lock_entry("build", &input.hex())?;
        // Another process may have built it while we waited for the lock.
        if let Some(hit) = local() {
            return found(hit);
        }
        if let Some(hit) = self.lookup_remote_cache(recipe, &input)? {
            return found(hit);
        }
        if self.opts.verbose {
            eprintln!(
                "imgrep: building {} {} (input {})",
                recipe.name,
                recipe.version,
                short(&input)
            );
        }
        let (manifest, diff_ids) = self.run_recipe(recipe, &input, done)?;
        let inputs_path = self.inputs_path(&recipe.name);
        crate::fsutil::write_atomic(&inputs_path, &input_json).map_err(|source| {
            BuildError::Io {
                package: recipe.name.clone(),
                what: format!("writing {}", inputs_path.display()),
                source,
            }
        })?;
        self.store.write_record(
            &input,
            &to_digest(manifest.digest()).map_err(|e| BuildError::Io {
                package: recipe.name.clone(),
                what: "reading the manifest digest".into(),
                source: invalid(e),
            })?,
        )?;
        let built = Built::new(recipe, input, (manifest, diff_ids), false, start.elapsed());
        if self.opts.verbose {
            eprintln!(
                "imgrep: built {} {} -> {} in {:.1}s",
                built.name,
                built.version,
                built.manifest_digest(),
                built.duration.as_secs_f64()
            );
        }
        self.publish(&built)?;
        self.push_remote_cache(&built)?;
        Ok(built)
    }

    /// `PREFIX/NAME:input-<hex>`: where a remote cache keeps an input's image.
    fn cache_ref(
        prefix: &str,
        name: &str,
        input: &Digest,
    ) -> Result<crate::registry::Reference, BuildError> {
        let r = format!("{prefix}/{name}:{}", crate::registry::input_tag(input));
        r.parse().map_err(
            |e: crate::registry::ReferenceError| BuildError::RemoteCache {
                package: name.to_owned(),
                message: e.to_string(),
            },
        )
    }

    /// Looks the input digest up in each `cache_from` registry; a hit is
    /// fetched into the store (every blob verified by digest and size, every
    /// layer by diff_id), checked to carry this input digest, and recorded.
    fn lookup_remote_cache(
        &self,
        recipe: &Recipe,
        input: &Digest,
    ) -> Result<Option<(Descriptor, Vec<Digest>)>, BuildError> {
        let Some(client) = &self.registry else {
            return Ok(None);
        };
        let fail = |message: String| BuildError::RemoteCache {
            package: recipe.name.clone(),
            message,
        };
        for prefix in &self.opts.cache_from {
            let reference = Self::cache_ref(prefix, &recipe.name, input)?;
            let desc = match client.fetch_image(&reference, &self.layout) {
                Ok(d) => d,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(fail(e.to_string())),
            };
            let digest = to_digest(desc.digest()).map_err(|e| fail(e.to_string()))?;
            let image = self
                .layout
                .read_manifest(&digest, desc.size(), &reference.to_string(), true)
                .map_err(|e| fail(e.to_string()))?;
            // A fixed output's image carries its declared diff_id instead
            // of an input digest; its layer was verified against its diff_id.
            let (label, what, want) = match &recipe.output {
                Some(o) => (
                    oci::ANNOTATION_FIXED_OUTPUT,
                    "fixed output",
                    o.diff_id.to_string(),
                ),
                None => (
                    oci::ANNOTATION_INPUT_DIGEST,
                    "input digest",
                    input.to_string(),
                ),
            };
            let labelled = image
                .config
                .config()
                .as_ref()
                .and_then(|c| c.labels().as_ref())
                .and_then(|l| l.get(label).cloned());
            let layers = image.config.rootfs().diff_ids();
            let fixed_ok = recipe.output.is_none() || layers.as_slice() == [want.clone()];
            if labelled.as_deref() != Some(want.as_str()) || !fixed_ok {
                return Err(fail(format!(
                    "{reference} is labelled with {what} {}, expected {want}: refusing it",
                    labelled.as_deref().unwrap_or("(none)")
                )));
            }
            self.store.write_record(input, &digest)?;
            if self.opts.verbose {
                eprintln!(
                    "imgrep: {} {} from the remote cache {reference}",
                    recipe.name, recipe.version
                );
            }
            let (desc, diff_ids) = self
                .read_image(&digest, &recipe.name)
                .map_err(|e| fail(e.to_string()))?;
            return Ok(Some((desc, diff_ids)));
        }
        Ok(None)
    }

    /// Pushes a freshly built image to the `cache_to` registry.
    fn push_remote_cache(&self, built: &Built) -> Result<(), BuildError> {
        let (Some(client), Some(prefix), Some(out)) =
            (&self.registry, &self.opts.cache_to, &self.opts.out)
        else {
            return Ok(());
        };
        let fail = |message: String| BuildError::RemoteCache {
            package: built.name.clone(),
            message,
        };
        let reference = Self::cache_ref(prefix, &built.name, &built.input)?;
        let layout = Layout::open(out).map_err(|e| fail(e.to_string()))?;
        let ref_name = format!("{}:{}", built.name, built.version);
        client
            .push_image(&layout, &ref_name, &reference)
            .map_err(|e| fail(e.to_string()))?;
        if self.opts.verbose {
            eprintln!("imgrep: pushed {ref_name} to the remote cache {reference}");
        }
        Ok(())
    }

    /// The input document of the last build of `name` (for `imgrep plan`).
    pub fn inputs_path(&self, name: &str) -> PathBuf {
        self.store
            .root()
            .join("inputs")
            .join(format!("{name}.json"))
    }

    /// The directory a failed build of `name` is kept in, for `imgrep shell`.
    pub fn failed_dir(&self, name: &str) -> PathBuf {
        self.store.root().join("failed").join(name)
    }

    fn run_recipe(
        &self,
        recipe: &Recipe,
        input: &Digest,
        done: &BTreeMap<String, Built>,
    ) -> Result<(Descriptor, Vec<Digest>), BuildError> {
        let io_err = |what: &str| {
            let what = what.to_owned();
            let package = recipe.name.clone();
            move |source| BuildError::Io {
                package,
                what,
                source,
            }
        };
        let ready = sources::fetch_all(recipe, self.graph.set().root(), self.store, self.fetcher)?;
        let work = self.store.temp_dir()?;
        let out = work.path().join("out");
        fs::create_dir(&out).map_err(io_err("creating $OUT"))?;
        let mut kept_lowers = None;
        match recipe.kind {
            Kind::Debs => debs::assemble(recipe, &ready, &out)?,
            Kind::Build => {
                let build_dir = work.path().join("build");
                fs::create_dir_all(build_dir.join(".home")).map_err(io_err("creating /build"))?;
                // overlayfs' work directory when a source tree is mounted at /build.
                fs::create_dir(work.path().join("build-work"))
                    .map_err(io_err("creating /build"))?;
                let lowers = Lowers {
                    build: sources::place(recipe, &ready, &build_dir, work.path())?,
                    root: self.build_root(recipe, done)?,
                };
                if let Err(e) = self.run_steps(recipe, input, &lowers, work.path()) {
                    self.keep_failed(recipe, work, &lowers);
                    return Err(e);
                }
                kept_lowers = Some(lowers);
            }
        }
        let opts = PackOptions {
            source_date_epoch: recipe.source_date_epoch(),
            threads: self.opts.variation.cores,
            ..PackOptions::default()
        };
        let oci_err = |source| BuildError::Oci {
            package: recipe.name.clone(),
            source,
        };
        let info = self.layout.add_layer(&out, &opts).map_err(oci_err)?;
        if let Some(o) = recipe.output.as_ref().filter(|o| o.diff_id != info.diff_id) {
            if let Some(lowers) = &kept_lowers {
                self.keep_failed(recipe, work, lowers);
            }
            return Err(BuildError::FixedOutput(Box::new(OutputMismatch {
                package: recipe.name.clone(),
                path: recipe.path.clone(),
                expected: o.diff_id,
                got: info.diff_id,
                kept: kept_lowers.is_some(),
            })));
        }
        // A fixed output's image records its declaration only: its name,
        // version and layer, never the sources or input digest that differ
        // between the recipes providing it (src/recipe/output.rs).
        let fixed = recipe.output.as_ref();
        let spec = ImageSpec {
            name: fixed.map_or(&recipe.name, |o| &o.image).clone(),
            version: recipe.version.clone(),
            source_date_epoch: recipe.source_date_epoch(),
            input_digest: fixed.is_none().then_some(*input),
            sources: if fixed.is_some() {
                Vec::new()
            } else {
                sources::describe(recipe)
            },
            labels: fixed
                .map(|o| {
                    [(
                        oci::ANNOTATION_FIXED_OUTPUT.to_owned(),
                        o.diff_id.to_string(),
                    )]
                    .into()
                })
                .unwrap_or_default(),
            entrypoint: recipe.image.entrypoint.clone(),
            cmd: recipe.image.cmd.clone(),
            env: recipe
                .image
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            working_dir: recipe.image.workdir.clone(),
            ..ImageSpec::default()
        };
        let diff_ids = vec![info.diff_id];
        let layers = [ImageLayer {
            layer: info,
            created_by: match fixed {
                Some(o) => format!("imgrep build {} {} (fixed output)", o.image, recipe.version),
                None => format!("imgrep build {} {}", recipe.name, recipe.version),
            },
        }];
        let manifest = self
            .layout
            .write_image_blobs(&spec, &layers)
            .map_err(oci_err)?;
        Ok((manifest, diff_ids))
    }

    /// The unpacked layers of `recipe`'s build root, bottom first.
    fn build_root(
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
                    source,
                })?;
            for (layer, diff_id) in manifest.manifest.layers().iter().zip(&built.diff_ids) {
                let blob = self.store.blob_path(
                    &to_digest(layer.digest()).expect("read_manifest verified the digest"),
                );
                let dir = unpack::cached_layer(self.store, diff_id, || File::open(&blob)).map_err(
                    |source| BuildError::Unpack {
                        package: recipe.name.clone(),
                        source,
                    },
                )?;
                lowers.push(dir);
            }
        }
        Ok(lowers)
    }

    /// The sandbox spec of one step of `recipe` in the work directory
    /// `work`, with `/build` in `build_dir` (`imgrep shell` enters a kept
    /// failure on disk, whatever the recipe asks for).
    pub fn step_spec(
        &self,
        recipe: &Recipe,
        lowers: &Lowers,
        work: &Path,
        argv: Vec<String>,
        cwd: &str,
        build_dir: BuildDir,
    ) -> sandbox::Spec {
        let build = recipe.build.as_ref().expect("build recipes have [build]");
        let v = &self.opts.variation;
        let mut spec = sandbox::Spec::new(work.join("scratch"), argv);
        spec.lowers = lowers.root.clone();
        let placed = work.join("build");
        match build_dir {
            // The trees below, then what place() put in the work directory
            // on top: the overlay's order, so the same file wins.
            BuildDir::Memory => spec.memory_dirs.push(sandbox::MemoryDir {
                sources: lowers.build.iter().cloned().chain([placed]).collect(),
                dst: env::BUILD_DIR.into(),
                size: None,
                save: Some(work.join(SAVED_BUILD_DIR)),
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
        spec.reclaim = v.idmap != sandbox::IdMap::Caller;
        spec.limits = self.opts.limits;
        spec.timeout = self.opts.timeout;
        spec
    }

    fn run_steps(
        &self,
        recipe: &Recipe,
        input: &Digest,
        lowers: &Lowers,
        work: &Path,
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
                source,
            })?;
        }
        // A fresh log per build attempt: the tail shown on failure is this run's.
        File::create(&log).map_err(|source| BuildError::Io {
            package: recipe.name.clone(),
            what: format!("creating {}", log.display()),
            source,
        })?;
        // One sandbox runs every step in order (sandbox::Spec::then): steps
        // share /build, /out, the root and /tmp anyway, and a sandbox per
        // step cost ~50 ms each, 5 s over stage0's hundred steps.
        let (first, rest) = steps.split_first().expect("a recipe has a step");
        let build_dir = env::build_dir(build, &self.opts.variation);
        let mut spec = self.step_spec(recipe, lowers, work, first.0.clone(), &first.1, build_dir);
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
        let report = sandbox::run(&spec).map_err(|source| BuildError::Sandbox {
            package: recipe.name.clone(),
            source,
        })?;
        if !report.status.success() {
            return Err(BuildError::StepFailed(Box::new(StepFailure {
                package: recipe.name.clone(),
                version: recipe.version.clone(),
                step: report.command + 1,
                steps: steps.len(),
                command: show_argv(&steps[report.command].0),
                status: match report.status {
                    sandbox::Status::Full(i) => describe_full(&spec, i),
                    other => describe_status(&other),
                },
                log: log.clone(),
                tail: tail(&log, 20),
            })));
        }
        Ok(())
    }

    /// Keeps a failed build's work directory for `imgrep shell`, replacing
    /// the previous failure of the same package. An in-memory `/build` the
    /// sandbox saved when a step failed replaces the work directory's
    /// `build/`: it is the whole of `/build`, with no tree below it.
    fn keep_failed(&self, recipe: &Recipe, work: tempfile::TempDir, lowers: &Lowers) {
        let dest = self.failed_dir(&recipe.name);
        let _ = crate::store::remove_tree(&dest);
        let _ = fs::create_dir_all(dest.parent().expect("failed/ has a parent"));
        let kept = work.keep();
        let mut lowers = lowers.clone();
        let saved = kept.join(SAVED_BUILD_DIR);
        if saved.is_dir() {
            let build = kept.join("build");
            if crate::store::remove_tree(&build).is_ok() && fs::rename(&saved, &build).is_ok() {
                lowers.build.clear();
            }
        }
        if fs::rename(&kept, &dest).is_ok() {
            let _ = fs::write(
                dest.join("lowers.json"),
                serde_json::to_vec(&lowers).expect("paths serialize"),
            );
        } else {
            let _ = crate::store::remove_tree(&kept);
        }
    }

    /// Digests of every blob of `built`'s image: manifest, config, layers.
    pub fn image_blobs(&self, built: &Built) -> Result<Vec<Digest>, BuildError> {
        let manifest_digest = built.manifest_digest();
        let image = self
            .layout
            .read_manifest(&manifest_digest, built.manifest.size(), &built.name, false)
            .map_err(|source| BuildError::Oci {
                package: built.name.clone(),
                source,
            })?;
        let mut blobs = vec![manifest_digest, image.config_digest];
        for l in image.manifest.layers() {
            blobs.push(to_digest(l.digest()).expect("read_manifest verified the digest"));
        }
        Ok(blobs)
    }

    /// Copies `built`'s blobs into `out/` and tags it `NAME:VERSION` there.
    fn publish(&self, built: &Built) -> Result<(), BuildError> {
        let Some(out) = &self.opts.out else {
            return Ok(());
        };
        let oci_err = |source| BuildError::Oci {
            package: built.name.clone(),
            source,
        };
        let layout = Layout::create(out).map_err(oci_err)?;
        let ref_name = format!("{}:{}", built.name, built.version);
        let mut manifest = built.manifest.clone();
        // Which recipe made a fixed-output image is recorded beside it, in
        // index.json, where it changes no digest.
        let recipe = self.graph.recipe(&built.name)?;
        let recorded = recipe.output.is_some().then(|| built.input.to_string());
        if let Some(input) = &recorded {
            let sources =
                crate::canonical::to_vec(&sources::describe(recipe)).expect("strings serialize");
            manifest.set_annotations(Some(
                [
                    (oci::ANNOTATION_RECIPE.to_owned(), built.name.clone()),
                    (oci::ANNOTATION_INPUT_DIGEST.to_owned(), input.clone()),
                    (
                        oci::ANNOTATION_SOURCES.to_owned(),
                        String::from_utf8(sources).expect("JSON is UTF-8"),
                    ),
                ]
                .into(),
            ));
        }
        let wanted = (built.manifest.digest().to_string(), recorded);
        if self.tagged(&layout, &ref_name).map_err(oci_err)?.as_ref() == Some(&wanted) {
            return Ok(());
        }
        for d in self.image_blobs(built)? {
            copy_blob(&self.store.blob_path(&d), &layout.blob_path(&d)).map_err(|source| {
                BuildError::Io {
                    package: built.name.clone(),
                    what: format!("copying blob {d} to {}", out.display()),
                    source,
                }
            })?;
        }
        layout.set_ref(&ref_name, &manifest).map_err(oci_err)?;
        if let Some(tags) = self.tags.lock().expect("tags lock").as_mut() {
            tags.insert(ref_name, wanted);
        }
        Ok(())
    }

    /// The manifest digest `ref_name` is tagged with in `layout` (`out/`),
    /// and the input digest recorded beside it (fixed outputs).
    fn tagged(&self, layout: &Layout, ref_name: &str) -> Result<Option<Tag>, oci::Error> {
        let mut tags = self.tags.lock().expect("tags lock");
        if tags.is_none() {
            let index = layout.index()?;
            let refs = index.manifests().iter().filter_map(|d| {
                let input = d
                    .annotations()
                    .as_ref()
                    .and_then(|a| a.get(oci::ANNOTATION_INPUT_DIGEST).cloned());
                Some((oci::ref_of(d)?.to_owned(), (d.digest().to_string(), input)))
            });
            *tags = Some(refs.collect());
        }
        Ok(tags.as_ref().and_then(|t| t.get(ref_name).cloned()))
    }
}

impl Built {
    fn new(
        recipe: &Recipe,
        input: Digest,
        (manifest, diff_ids): (Descriptor, Vec<Digest>),
        cached: bool,
        duration: Duration,
    ) -> Built {
        Built {
            name: recipe.name.clone(),
            version: recipe.version.clone(),
            input,
            manifest,
            diff_ids,
            cached,
            duration,
        }
    }

    pub fn manifest_digest(&self) -> Digest {
        to_digest(self.manifest.digest()).expect("imgrep writes sha256 descriptors")
    }
}

/// Hard-links (or, across file systems, copies through a temporary file)
/// a verified blob; an existing blob is complete (blobs are written atomically).
fn copy_blob(from: &Path, to: &Path) -> io::Result<()> {
    if to.exists() {
        return Ok(());
    }
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    let dir = to.parent().expect("blob paths have a parent");
    let tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    fs::copy(from, tmp.path())?;
    tmp.as_file().sync_all()?;
    fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    tmp.persist(to).map_err(|e| e.error)?;
    Ok(())
}

fn to_digest(d: &oci_spec::image::Digest) -> Result<Digest, crate::digest::DigestParseError> {
    d.to_string().parse()
}

fn invalid<E: std::error::Error + Send + Sync + 'static>(e: E) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// `sha256:` and the first 12 hex digits.
pub fn short(d: &Digest) -> String {
    format!("sha256:{}", &d.hex()[..12])
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

/// What `imgrep build` would do for one package.
#[derive(Debug, Clone)]
pub struct PlanItem {
    pub name: String,
    pub version: String,
    /// Known when every package of the build root is cached.
    pub input: Option<Digest>,
    /// The cached image, if any.
    pub cached: Option<Built>,
    /// Why it will be built: which inputs changed since the last build.
    pub reasons: Vec<String>,
}

impl Builder<'_> {
    /// The closure of `roots` in build order, each package cached or not and
    /// why, without building or fetching anything.
    pub fn plan(&self, roots: &[&str]) -> Result<Vec<PlanItem>, BuildError> {
        let mut done: BTreeMap<String, Built> = BTreeMap::new();
        let mut items = Vec::new();
        for recipe in self.graph.closure(roots)? {
            let rebuilt_deps: Vec<&str> = self
                .graph
                .build_root(&recipe.name)
                .into_iter()
                .filter(|d| !done.contains_key(*d))
                .collect();
            let mut item = PlanItem {
                name: recipe.name.clone(),
                version: recipe.version.clone(),
                input: None,
                cached: None,
                reasons: Vec::new(),
            };
            if !rebuilt_deps.is_empty() {
                item.reasons.push(format!(
                    "its build root is rebuilt first: {}",
                    rebuilt_deps.join(", ")
                ));
            } else if let Some((input, json)) = self.input_of(recipe, &done) {
                item.input = Some(input);
                match self.cached(&input, &recipe.name) {
                    Some((manifest, diff_ids)) if !self.opts.rebuild => {
                        let built =
                            Built::new(recipe, input, (manifest, diff_ids), true, Duration::ZERO);
                        done.insert(recipe.name.clone(), built.clone());
                        item.cached = Some(built);
                    }
                    _ => {
                        item.reasons = self.why(&recipe.name, &json);
                        // Another recipe of the same fixed output already
                        // built its image: a build that passes the output
                        // check gives that image, so the plan goes on with it.
                        if let Some((provider, manifest, diff_ids)) =
                            self.built_output(recipe, &done)
                        {
                            item.reasons.push(format!(
                                "its declared output, image {} as {provider} built it, is in the store: what depends on it stays cached if this build reproduces it",
                                short(&to_digest(manifest.digest()).expect("sha256 descriptor"))
                            ));
                            let built = Built::new(
                                recipe,
                                input,
                                (manifest, diff_ids),
                                false,
                                Duration::ZERO,
                            );
                            done.insert(recipe.name.clone(), built);
                        }
                    }
                }
            }
            items.push(item);
        }
        Ok(items)
    }

    /// For a fixed-output recipe: the cached image of another recipe that
    /// provides the same image, and that recipe's name.
    fn built_output(
        &self,
        recipe: &Recipe,
        done: &BTreeMap<String, Built>,
    ) -> Option<(String, Descriptor, Vec<Digest>)> {
        recipe.output.as_ref()?;
        self.graph
            .set()
            .iter()
            .filter(|r| r.name != recipe.name && r.output.is_some())
            .filter(|r| r.provides() == recipe.provides())
            .find_map(|r| {
                let (input, _) = self.input_of(r, done)?;
                let (manifest, diff_ids) = self.cached(&input, &r.name)?;
                Some((r.name.clone(), manifest, diff_ids))
            })
    }

    /// What changed since the last build of `name` in this store.
    fn why(&self, name: &str, input_json: &[u8]) -> Vec<String> {
        if self.opts.rebuild {
            return vec!["--rebuild".to_owned()];
        }
        match fs::read(self.inputs_path(name)) {
            Ok(old) => {
                let diff = crate::recipe::diff_inputs(&old, input_json);
                if diff.is_empty() {
                    vec![
                        "same inputs as the last build, whose image is no longer in the store"
                            .to_owned(),
                    ]
                } else {
                    diff
                }
            }
            Err(_) => vec!["never built in this store".to_owned()],
        }
    }
}
