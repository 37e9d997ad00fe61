//! `imgrep reproduce`: rebuild packages from their sources in a fresh store,
//! with no cache, under changed conditions (conditions.rs), and compare
//! every image of the closure with a reference: the signed statement in
//! manifests/ or the local build tagged `NAME:VERSION` in `out/`. A layer
//! that differs is explained file by file (layerdiff.rs). docs/reproduce.md
//! is the contract.

pub mod conditions;
pub mod layerdiff;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::builder::{self, BuildError, Builder, Built};
use crate::digest::Digest;
use crate::fetch::{FetchConfig, Fetcher};
use crate::graph::Graph;
use crate::oci::Layout;
use crate::recipe::RecipeSet;
use crate::sign::keys::SigningKey;
use crate::sign::manifests::{Manifests, PackageVersion};
use crate::sign::{Checked, SignError, Signed};
use crate::statement::ImageDigests;
use crate::store::Store;

pub use layerdiff::{diff_layers, Change};

/// Which reference each rebuilt image is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Against {
    /// The statement under manifests/ where there is one, else the local build.
    Auto,
    /// Only statements under manifests/.
    Manifests,
    /// Only the local builds tagged in the OCI layout (`out/`).
    Local,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub against: Against,
    /// The manifests/ directory of statements.
    pub manifests: PathBuf,
    /// The OCI layout of the local builds (`out/` of the recipe tree).
    pub layout: PathBuf,
    /// Where the rebuild's own directory is created.
    pub work_parent: PathBuf,
    /// Leave the rebuild's directory (its store and `out/`) for inspection.
    pub keep: bool,
    /// Packages rebuilt at the same time.
    pub jobs: usize,
    pub limits: sandbox::Limits,
    pub timeout: Option<Duration>,
    /// Rebuild only the named packages; take their dependencies' images
    /// from the user's store (same input digests) instead.
    pub reuse_deps: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReproduceError {
    /// Boxed: a failed step carries its log's tail.
    #[error(transparent)]
    Build(Box<BuildError>),
    #[error(transparent)]
    Graph(#[from] crate::graph::GraphError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Statement(#[from] crate::sign::manifests::ManifestError),
    #[error("{layout}: {error}")]
    Layout {
        layout: PathBuf,
        error: crate::oci::Error,
    },
    #[error("{layout}: image {reference}: diff_id: {error}")]
    DiffId {
        layout: PathBuf,
        reference: String,
        error: crate::digest::DigestParseError,
    },
    #[error(
        "{package}: nothing to compare with: no statement {statement} and no image tagged {package} in {layout}{hint}"
    )]
    NoReference {
        package: String,
        statement: String,
        layout: String,
        hint: &'static str,
    },
    #[error(
        "{package}: --sign signs published statements, and there is no statement {statement}{hint}"
    )]
    NothingToSign {
        package: String,
        statement: String,
        hint: &'static str,
    },
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("pinning the rebuild to CPU {cpu}: {error}")]
    Pin { cpu: usize, error: nix::Error },
}

impl From<BuildError> for ReproduceError {
    fn from(e: BuildError) -> Self {
        ReproduceError::Build(Box::new(e))
    }
}

/// [`Reference::kind`] of a published statement.
const STATEMENT: &str = "statement";

/// Where an expected image came from.
#[derive(Debug, Clone, Serialize)]
pub struct Reference {
    /// `statement` or `local`.
    pub kind: &'static str,
    /// The statement file or the layout.
    pub path: PathBuf,
    pub image: ImageDigests,
    /// The input digest the reference was built from, when it records one.
    pub input: Option<Digest>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    #[serde(rename = "OK")]
    Ok,
    #[serde(rename = "MISMATCH")]
    Mismatch,
    /// A dependency without a reference: rebuilt, not compared.
    #[serde(rename = "NO REFERENCE")]
    NoReference,
    /// A dependency taken from the user's store (`--reuse-deps`): not
    /// rebuilt, so not compared.
    #[serde(rename = "REUSED")]
    Reused,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Ok => "OK",
            Status::Mismatch => "MISMATCH",
            Status::NoReference => "NO REFERENCE",
            Status::Reused => "REUSED",
        })
    }
}

/// The file-level explanation of one differing layer.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    pub index: usize,
    pub expected: Option<Digest>,
    pub got: Option<Digest>,
    /// Differing paths; empty with `note` when no diff could be made.
    #[serde(serialize_with = "changes_as_text")]
    pub changes: Vec<Change>,
    pub note: Option<String>,
}

fn changes_as_text<S: serde::Serializer>(c: &[Change], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(c.len()))?;
    for change in c {
        seq.serialize_element(&serde_json::json!({
            "path": change.path(),
            "text": change.to_string(),
        }))?;
    }
    seq.end()
}

/// One package of the closure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub version: String,
    pub status: Status,
    pub reference: Option<Reference>,
    pub got: ImageDigests,
    pub input: Digest,
    /// Why it mismatched, one line per differing field.
    pub reasons: Vec<String>,
    pub layers: Vec<LayerReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `(condition, value)` pairs of the rebuild.
    pub conditions: Vec<(String, String)>,
    pub packages: Vec<Row>,
    /// The rebuild's directory, when kept.
    pub kept: Option<PathBuf>,
    /// What `--sign` signed and refused to sign.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing: Option<Signing>,
}

impl Report {
    /// Every compared image matched and, with `--sign`, every named
    /// package's statement is signed.
    pub fn all_match(&self) -> bool {
        self.packages.iter().all(|r| r.status != Status::Mismatch)
            && self.signing.as_ref().is_none_or(|s| s.refused.is_empty())
    }
}

/// Signing after the rebuild (`reproduce --sign KEY --role ROLE`).
pub struct SignWith<'a> {
    pub key: &'a SigningKey,
    pub role: &'a str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Signing {
    pub signed: Vec<Signed>,
    pub refused: Vec<Refused>,
}

/// A named package whose statement was not signed, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Refused {
    pub package: String,
    pub reason: String,
}

/// Rebuilds `roots` and their closure in a fresh store under varied
/// conditions and compares each image with its reference. Sources are
/// taken from `user_store` when it has them (verified again on the way in:
/// the hash decides), else fetched as `fetch` says. With `sign`, each root
/// must have a statement, and the statement of each root whose rebuild
/// matched it (image and input digest) is signed; no other is.
pub fn reproduce(
    set: &RecipeSet,
    user_store: &Store,
    mut fetch: FetchConfig,
    roots: &[&str],
    opts: &Options,
    sign: Option<&SignWith<'_>>,
) -> Result<Report, ReproduceError> {
    let graph = Graph::new(set);
    let closure: Vec<(String, String)> = graph
        .closure(roots)?
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    let manifests = Manifests::new(&opts.manifests);
    let mut references = BTreeMap::new();
    for (name, version) in &closure {
        let found = reference(&manifests, &opts.layout, opts.against, name, version)?;
        if found.is_none() && roots.contains(&name.as_str()) {
            return Err(ReproduceError::NoReference {
                package: format!("{name}:{version}"),
                statement: manifests
                    .statement_path(&PackageVersion {
                        name: name.clone(),
                        version: version.clone(),
                    })
                    .display()
                    .to_string(),
                layout: opts.layout.display().to_string(),
                hint: match opts.against {
                    Against::Manifests => " (--against manifests: publish a statement first)",
                    Against::Local => " (--against local: run `imgrep build` first)",
                    Against::Auto => " (run `imgrep build` first, or publish a statement)",
                },
            });
        }
        let root = roots.contains(&name.as_str());
        if sign.is_some() && root && found.as_ref().is_some_and(|r| r.kind != STATEMENT) {
            return Err(ReproduceError::NothingToSign {
                package: format!("{name}:{version}"),
                statement: manifests
                    .statement_path(&PackageVersion {
                        name: name.clone(),
                        version: version.clone(),
                    })
                    .display()
                    .to_string(),
                hint: if opts.against == Against::Local {
                    " (--against local compares with local builds: use --against manifests)"
                } else {
                    " (the maintainer writes it with `imgrep publish`)"
                },
            });
        }
        references.insert(name.clone(), found);
    }

    fs::create_dir_all(&opts.work_parent).map_err(|source| ReproduceError::Io {
        path: opts.work_parent.clone(),
        error: source,
    })?;
    let work = tempfile::Builder::new()
        .prefix("imgrep-reproduce-")
        .tempdir_in(&opts.work_parent)
        .map_err(|source| ReproduceError::Io {
            path: opts.work_parent.clone(),
            error: source,
        })?
        .keep();
    let result = rebuild_and_compare(
        set,
        user_store,
        &mut fetch,
        roots,
        opts,
        &work,
        &mut references,
    );
    let kept = if opts.keep {
        Some(work)
    } else {
        let _ = crate::store::remove_tree(&work);
        None
    };
    if let (Err(_), Some(k)) = (&result, &kept) {
        eprintln!("imgrep: the rebuild is kept in {}", k.display());
    }
    let (conditions, packages) = result?;
    let signing = match sign {
        Some(with) => Some(sign_matched(&manifests, roots, &packages, with)?),
        None => None,
    };
    Ok(Report {
        conditions,
        packages,
        kept,
        signing,
    })
}

/// Signs the statement of each root whose rebuild matched it; the others
/// are refused with the reason.
fn sign_matched(
    manifests: &Manifests,
    roots: &[&str],
    rows: &[Row],
    with: &SignWith<'_>,
) -> Result<Signing, ReproduceError> {
    let mut signing = Signing {
        signed: Vec::new(),
        refused: Vec::new(),
    };
    for row in rows.iter().filter(|r| roots.contains(&r.name.as_str())) {
        let pv = PackageVersion {
            name: row.name.clone(),
            version: row.version.clone(),
        };
        let statement = row.reference.as_ref().filter(|r| r.kind == STATEMENT);
        if row.status != Status::Ok || statement.is_none() {
            let why = if row.reasons.is_empty() {
                row.status.to_string()
            } else {
                row.reasons.join("; ")
            };
            signing.refused.push(Refused {
                package: pv.to_string(),
                reason: format!("the rebuild did not reproduce the statement: {why}"),
            });
            continue;
        }
        let checked = Checked {
            image: &row.got,
            input: Some(&row.input),
            what: "rebuilt",
        };
        match crate::sign::sign_checked(manifests, &pv, with.key, with.role, checked) {
            Ok(s) => signing.signed.push(s),
            // The statement changed on disk during the rebuild.
            Err(e @ SignError::Mismatch { .. }) => signing.refused.push(Refused {
                package: pv.to_string(),
                reason: e.to_string(),
            }),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(signing)
}

type Compared = (Vec<(String, String)>, Vec<Row>);

fn rebuild_and_compare(
    set: &RecipeSet,
    user_store: &Store,
    fetch: &mut FetchConfig,
    roots: &[&str],
    opts: &Options,
    work: &Path,
    references: &mut BTreeMap<String, Option<Reference>>,
) -> Result<Compared, ReproduceError> {
    let store = Store::open(&work.join("store"))?;
    let mut dirs = vec![
        user_store.root().join("sources"),
        user_store.root().join("trees/nar-sha256"),
    ];
    dirs.append(&mut fetch.source_dirs);
    fetch.source_dirs = dirs;
    let fetcher = Fetcher::new(fetch.clone());
    let cond = conditions::varied(&builder::Variation::standard(), work, user_store.root());
    for (what, value) in &cond.described {
        crate::progress::info(format_args!("imgrep: reproduce: {what}: {value}"));
    }
    let build_opts = builder::Options {
        jobs: opts.jobs.max(1),
        rebuild: true,
        limits: opts.limits,
        timeout: opts.timeout,
        variation: cond.variation.clone(),
        out: Some(work.join("out")),
        verbose: true,
        cache_from: Vec::new(),
        cache_to: None,
        reuse: opts.reuse_deps.then(|| builder::Reuse {
            store: user_store.root().to_owned(),
            except: roots.iter().map(|r| (*r).to_owned()).collect(),
        }),
    };
    let builder = Builder::new(set, &store, &fetcher, build_opts)?;
    let built = {
        let _pinned = conditions::pin(cond.cpu).map_err(|source| ReproduceError::Pin {
            cpu: cond.cpu.unwrap_or_default(),
            error: source,
        })?;
        let _umask = conditions::process_umask(cond.variation.umask);
        builder.build(roots)?
    };
    let mut rows = Vec::new();
    for b in &built {
        let reference = references.remove(&b.name).flatten();
        let mut row = compare(&builder, user_store, &opts.layout, b, reference)?;
        // The fresh store caches nothing: a cached image here was reused.
        if opts.reuse_deps && b.cached {
            row.status = Status::Reused;
            row.reasons.clear();
            row.layers.clear();
        }
        rows.push(row);
    }
    Ok((cond.described, rows))
}

/// The reference of one package, as `against` chooses it.
fn reference(
    manifests: &Manifests,
    layout: &Path,
    against: Against,
    name: &str,
    version: &str,
) -> Result<Option<Reference>, ReproduceError> {
    let pv = PackageVersion {
        name: name.to_owned(),
        version: version.to_owned(),
    };
    if against != Against::Local && manifests.statement_path(&pv).is_file() {
        let st = manifests.read_statement(&pv)?;
        return Ok(Some(Reference {
            kind: STATEMENT,
            path: st.path,
            image: st.statement.image,
            input: Some(st.statement.input_digest),
        }));
    }
    if against == Against::Manifests || !layout.join("index.json").is_file() {
        return Ok(None);
    }
    let ref_name = format!("{name}:{version}");
    let layout_err = |source| ReproduceError::Layout {
        layout: layout.to_owned(),
        error: source,
    };
    let l = Layout::open(layout).map_err(layout_err)?;
    let image = match l.read_image(&ref_name, false) {
        Ok(i) => i,
        Err(crate::oci::Error::RefNotFound { .. }) => return Ok(None),
        Err(e) => return Err(layout_err(e)),
    };
    let diff_ids = image
        .config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| d.parse::<Digest>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ReproduceError::DiffId {
            layout: layout.to_owned(),
            reference: ref_name.clone(),
            error: source,
        })?;
    let input = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.labels().as_ref())
        .and_then(|l| l.get(crate::oci::ANNOTATION_INPUT_DIGEST))
        .and_then(|d| d.parse().ok());
    Ok(Some(Reference {
        kind: "local",
        path: layout.to_owned(),
        image: ImageDigests {
            manifest: image.manifest_digest,
            diff_ids,
        },
        input,
    }))
}

fn compare(
    builder: &Builder<'_>,
    user_store: &Store,
    layout: &Path,
    built: &Built,
    reference: Option<Reference>,
) -> Result<Row, ReproduceError> {
    let got = ImageDigests {
        manifest: built.manifest_digest(),
        diff_ids: built.diff_ids.clone(),
    };
    let mut row = Row {
        name: built.name.clone(),
        version: built.version.clone(),
        status: Status::NoReference,
        reference: None,
        got,
        input: built.input,
        reasons: Vec::new(),
        layers: Vec::new(),
    };
    let Some(reference) = reference else {
        return Ok(row);
    };
    row.reasons = reference.image.differences(&row.got, "expected", "got");
    if let Some(input) = reference.input.filter(|i| *i != built.input) {
        row.reasons.push(format!(
            "input digest: expected {input}, got {}: the reference was built from another recipe tree or other dependency images",
            built.input
        ));
    }
    row.status = if row.reasons.is_empty() {
        Status::Ok
    } else {
        Status::Mismatch
    };
    if row.status == Status::Mismatch {
        row.layers = explain(builder, user_store, layout, &reference.image, built)?;
    }
    row.reference = Some(reference);
    Ok(row)
}

/// A file-level diff of each differing layer, when the expected layer's
/// blob is on this machine (in the layout or the user's store).
fn explain(
    builder: &Builder<'_>,
    user_store: &Store,
    layout: &Path,
    expected: &ImageDigests,
    built: &Built,
) -> Result<Vec<LayerReport>, ReproduceError> {
    let blobs = builder.image_blobs(built)?;
    let got_layers = &blobs[2..];
    let homes = [
        layout.join("blobs/sha256"),
        user_store.root().join("blobs/sha256"),
    ];
    let expected_layers = homes
        .iter()
        .find_map(|dir| layers_of(&dir.join(expected.manifest.hex())))
        .map(|layers| {
            layers
                .into_iter()
                .map(|d| homes.iter().map(|h| h.join(d.hex())).find(|p| p.is_file()))
                .collect::<Vec<_>>()
        });
    let count = expected.diff_ids.len().max(built.diff_ids.len());
    let mut out = Vec::new();
    for i in 0..count {
        let (e, g) = (expected.diff_ids.get(i), built.diff_ids.get(i));
        if e == g {
            continue;
        }
        let mut report = LayerReport {
            index: i,
            expected: e.copied(),
            got: g.copied(),
            changes: Vec::new(),
            note: None,
        };
        let expected_blob = expected_layers
            .as_ref()
            .and_then(|l| l.get(i).cloned().flatten());
        let got_blob = got_layers.get(i).map(|d| builder.store().blob_path(d));
        match (expected_blob, got_blob) {
            (Some(a), Some(b)) => {
                report.changes = diff_layers(&a, &b).map_err(|e| ReproduceError::Io {
                    path: e.path,
                    error: e.error,
                })?;
            }
            (None, _) => {
                report.note = Some(format!(
                    "the expected layer is not on this machine (image {} is in neither {} nor the store): no file diff",
                    expected.manifest,
                    layout.display()
                ))
            }
            (_, None) => report.note = Some("the rebuild has no such layer".into()),
        }
        out.push(report);
    }
    if out.is_empty() && expected.manifest != built.manifest_digest() {
        out.push(LayerReport {
            index: 0,
            expected: None,
            got: None,
            changes: Vec::new(),
            note: Some(
                "the layers are identical; the image config or manifest differs (labels, annotations or history)"
                    .into(),
            ),
        });
    }
    Ok(out)
}

/// The layer digests of a manifest blob, if it is there and parses.
fn layers_of(manifest: &Path) -> Option<Vec<Digest>> {
    let bytes = fs::read(manifest).ok()?;
    if Digest::of(&bytes).hex() != manifest.file_name()?.to_str()? {
        return None;
    }
    let m: oci_spec::image::ImageManifest = serde_json::from_slice(&bytes).ok()?;
    m.layers()
        .iter()
        .map(|l| l.digest().to_string().parse().ok())
        .collect()
}
