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
//!
//! This file is the orchestration of one package (cache, then build, then
//! record and publish); each contract it calls lives in a file of its own:
//! `error.rs`, `cache.rs` (local records), `remote.rs` (registry cache),
//! `steps.rs` (the sandbox spec and running the steps), `failed.rs` (kept
//! failures), `publish.rs` (`out/`), `plan.rs`, `schedule.rs` (`-j N`).

pub mod bundle;
mod cache;
mod cause;
pub mod debs;
pub mod env;
mod error;
mod failed;
mod plan;
mod publish;
mod remote;
mod schedule;
pub mod sources;
mod steps;
pub mod wheel;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use oci_spec::image::Descriptor;

use crate::digest::Digest;
use crate::fetch::Fetcher;
use crate::graph::Graph;
use crate::layer::PackOptions;
use crate::oci::{self, ImageLayer, ImageSpec, Layout};
use crate::progress::Spinner;
use crate::recipe::{BuildDir, Kind, Recipe, RecipeSet};
use crate::store::Store;

pub use env::Variation;
pub use error::{BuildError, OutputMismatch, StepFailure};
pub use failed::{failed_dir, kept_failure};
pub use plan::PlanItem;
pub use steps::{describe_status, step_spec, Lowers};

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
    /// Another store whose images are taken, for the same input digest,
    /// instead of building (`reproduce --reuse-deps`).
    pub reuse: Option<Reuse>,
}

/// Images taken from another store instead of built: every package but
/// `except` whose input digest that store has a whole image for.
#[derive(Debug, Clone)]
pub struct Reuse {
    pub store: PathBuf,
    pub except: BTreeSet<String>,
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
            reuse: None,
        }
    }
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

/// Builds packages of one recipe tree into one store.
pub struct Builder<'a> {
    /// `out/`'s tags (ref -> manifest digest), read once per run: re-reading
    /// its index for each of N packages made a no-op build O(N²).
    tags: Mutex<Option<BTreeMap<String, oci::Tag>>>,
    graph: Graph<'a>,
    store: &'a Store,
    layout: Layout,
    fetcher: &'a Fetcher,
    opts: Options,
    /// Set when a remote cache is configured.
    registry: Option<crate::registry::Client>,
    /// The store `opts.reuse` names and its layout, opened once.
    reused: Option<(Store, Layout)>,
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
            error: source,
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
        let reused = match &opts.reuse {
            Some(r) => {
                let store = Store::open(&r.store)?;
                let layout = Layout::open(store.root()).map_err(|source| BuildError::Oci {
                    package: "(reused store)".into(),
                    error: source,
                })?;
                Some((store, layout))
            }
            None => None,
        };
        Ok(Builder {
            registry,
            reused,
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
            self.publish_bundle(&built, done)?;
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
        let reusable = self
            .opts
            .reuse
            .as_ref()
            .is_some_and(|r| !r.except.contains(name));
        if reusable {
            if let Some(hit) = self.import_cached(recipe, &input)? {
                return found(hit);
            }
        }
        if self.opts.verbose {
            // The log path, so that a build of an hour can be followed.
            crate::progress::info(format_args!(
                "imgrep: building {} {} (input {}, log {})",
                recipe.name,
                recipe.version,
                short(&input),
                self.store.log_path(&recipe.name, &input).display()
            ));
        }
        let spinner = if self.opts.verbose {
            Spinner::new(&format!("{} {}", recipe.name, recipe.version))
        } else {
            Spinner::hidden()
        };
        let (manifest, diff_ids) = self.run_recipe(recipe, &input, done, &spinner)?;
        drop(spinner);
        let inputs_path = self.inputs_path(&recipe.name);
        crate::fsutil::write_atomic(&inputs_path, &input_json).map_err(|source| {
            BuildError::Io {
                package: recipe.name.clone(),
                what: format!("writing {}", inputs_path.display()),
                error: source,
            }
        })?;
        self.store.write_record(
            &input,
            &to_digest(manifest.digest()).map_err(|e| BuildError::Io {
                package: recipe.name.clone(),
                what: "reading the manifest digest".into(),
                error: invalid(e),
            })?,
        )?;
        let built = Built::new(recipe, input, (manifest, diff_ids), false, start.elapsed());
        if self.opts.verbose {
            crate::progress::info(format_args!(
                "imgrep: built {} {} -> {} in {:.1}s",
                built.name,
                built.version,
                built.manifest_digest(),
                built.duration.as_secs_f64()
            ));
        }
        self.publish(&built)?;
        self.publish_bundle(&built, done)?;
        self.push_remote_cache(&built)?;
        Ok(built)
    }

    fn run_recipe(
        &self,
        recipe: &Recipe,
        input: &Digest,
        done: &BTreeMap<String, Built>,
        spinner: &Spinner,
    ) -> Result<(Descriptor, Vec<Digest>), BuildError> {
        let io_err = |what: &str| {
            let what = what.to_owned();
            let package = recipe.name.clone();
            move |source| BuildError::Io {
                package,
                what,
                error: source,
            }
        };
        spinner.say("fetching sources");
        let ready = sources::fetch_all(recipe, self.graph.set().root(), self.store, self.fetcher)?;
        let work = self.store.temp_dir()?;
        let out = work.path().join("out");
        fs::create_dir(&out).map_err(io_err("creating $OUT"))?;
        let mut kept_lowers = None;
        // In memory, the sources go straight into the sandbox's tmpfs
        // (run_steps); on disk, into the work directory.
        let in_memory = recipe
            .build
            .as_ref()
            .is_some_and(|b| env::build_dir(b, &self.opts.variation) == BuildDir::Memory);
        let build_dir = work.path().join("build");
        match recipe.kind {
            Kind::Debs => {
                spinner.say("assembling the .debs");
                debs::assemble(recipe, &ready, &out)?
            }
            Kind::Wheel => {
                spinner.say("assembling the wheel");
                wheel::assemble(recipe, &ready, &out)?
            }
            Kind::Build => {
                fs::create_dir(&build_dir).map_err(io_err("creating /build"))?;
                // overlayfs' work directory when a source tree is mounted at /build.
                fs::create_dir(work.path().join("build-work"))
                    .map_err(io_err("creating /build"))?;
                let mounted = if in_memory {
                    Vec::new()
                } else {
                    spinner.say("laying out the sources in /build");
                    let root =
                        crate::beneath::Dir::open(&build_dir).map_err(io_err("opening /build"))?;
                    sources::place(recipe, &ready, &root, true)?
                };
                spinner.say("unpacking the build root");
                let lowers = Lowers {
                    build: mounted,
                    root: self.build_root(recipe, done)?,
                };
                // The "building" line above names the log.
                spinner.say("running the build steps");
                let fill = in_memory.then_some(ready.as_slice());
                if let Err(e) = self.run_steps(recipe, input, &lowers, work.path(), fill) {
                    // Sources that could not be laid out left nothing to enter.
                    if !matches!(e, BuildError::Source { .. }) {
                        self.keep_failed(recipe, work, &lowers);
                    }
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
            error: source,
        };
        spinner.say("packing $OUT into a layer");
        let info = self.layout.add_layer(&out, &opts).map_err(oci_err)?;
        if let Some(o) = recipe.output.as_ref().filter(|o| o.diff_id != info.diff_id) {
            if let Some(mut lowers) = kept_lowers.clone() {
                // Laid out in memory only: again on disk, for imgrep shell.
                if in_memory {
                    let placed = crate::beneath::Dir::open(&build_dir)
                        .ok()
                        .and_then(|root| sources::place(recipe, &ready, &root, true).ok());
                    lowers.build = placed.unwrap_or_default();
                }
                self.keep_failed(recipe, work, &lowers);
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
            ..run_config(recipe)
        };
        let diff_ids = vec![info.diff_id];
        let layers = [ImageLayer {
            layer: info,
            created_by: bundle::created_by(recipe),
        }];
        let manifest = self
            .layout
            .write_image_blobs(&spec, &layers)
            .map_err(oci_err)?;
        // Removed in the background: /build of a gcc holds over 140,000 files.
        self.store.discard(work);
        Ok((manifest, diff_ids))
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

/// The image config a recipe's `[image]` asks for (entrypoint, cmd, env,
/// working directory): the package's own image and its bundle alike.
pub(super) fn run_config(recipe: &Recipe) -> ImageSpec {
    ImageSpec {
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
    }
}
