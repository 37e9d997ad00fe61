//! `imgrep attest PKG...`: attach an SPDX SBOM and, with `--key`, a signed
//! SLSA provenance statement to the images of local builds in `out/`, as
//! OCI 1.1 artifacts that `imgrep push` carries to registries
//! (docs/attest.md).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{Global, Outcome};
use crate::attest::provenance::{self, BuildRoot, Builder as ProvenanceBuilder};
use crate::attest::{self, dsse::Envelope, Part, Subject};
use crate::builder::{Builder, Options};
use crate::digest::Digest;
use crate::graph::Graph;
use crate::oci::{Artifact, ArtifactLayer, Layout, ANNOTATION_ATTACHMENT, ANNOTATION_SIGNER};
use crate::sign::keys::{self, PasswordSource};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Packages whose images (tagged NAME:VERSION in the layout) to attest.
    #[arg(required = true, value_name = "PKG")]
    pub packages: Vec<String>,
    /// Sign a SLSA provenance statement (DSSE envelope) with this minisign
    /// secret key. Without it only the SBOM is attached.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Read the key's password from the first line of FILE.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub password_file: Option<PathBuf>,
    /// The builder's identity in the provenance (a URI); default
    /// `urn:imgrep:signer:<KEYID>`.
    #[arg(long, value_name = "URI", requires = "key")]
    pub builder_id: Option<String>,
    /// The OCI layout holding the images.
    #[arg(long, value_name = "DIR", default_value = "out")]
    pub layout: PathBuf,
    /// Write the SBOM of each package to DIR/NAME-VERSION.spdx.json too.
    #[arg(long, value_name = "DIR")]
    pub sbom_dir: Option<PathBuf>,
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    let set = super::load_recipes(global)?;
    let store = super::open_store(global)?;
    let fetcher = super::fetcher(global)?;
    let builder = Builder::new(&set, &store, &fetcher, Options::default())?;
    let base = super::tree_root(global);
    let layout_path = base.join(&args.layout);
    let layout = Layout::open(&layout_path)
        .with_context(|| format!("opening the layout {}", layout_path.display()))?;
    let key = args
        .key
        .as_ref()
        .map(|k| {
            keys::load_secret_key(
                &base.join(k),
                &PasswordSource {
                    file: args.password_file.as_ref().map(|f| base.join(f)),
                },
            )
        })
        .transpose()?;
    let graph = Graph::new(&set);
    let roots: Vec<&str> = args.packages.iter().map(String::as_str).collect();
    let plan = builder.plan(&roots)?;
    let built: HashMap<&str, &crate::builder::Built> = plan
        .iter()
        .filter_map(|i| i.cached.as_ref().map(|b| (i.name.as_str(), b)))
        .collect();
    let mut report = Vec::new();
    for name in &args.packages {
        let recipe = set.get(name).expect("planned packages are in the tree");
        let Some(own) = built.get(name.as_str()) else {
            bail!(
                "{name} {}: not built with its current inputs in the store: run `imgrep build {name}` first",
                recipe.version
            );
        };
        let ref_name = format!("{name}:{}", recipe.version);
        let image = layout
            .read_image(&ref_name, false)
            .with_context(|| format!("{name}: reading its image from {}", layout_path.display()))?;
        if image.manifest_digest != own.manifest_digest() {
            bail!(
                "{ref_name}: the image in {} is {}, but the current build is {}: run `imgrep build {name}` to tag it",
                layout_path.display(),
                image.manifest_digest,
                own.manifest_digest()
            );
        }
        // The packages whose layers the image holds, in layer order.
        let layers: Vec<Digest> = image
            .config
            .rootfs()
            .diff_ids()
            .iter()
            .filter_map(|d| d.parse().ok())
            .collect();
        let parts: Vec<Part> = graph
            .runtime_closure(name)
            .into_iter()
            .filter_map(|n| {
                let b = built.get(n)?;
                b.diff_ids.iter().all(|d| layers.contains(d)).then(|| Part {
                    recipe: set.get(n).expect("closure members are in the tree"),
                    input: b.input,
                    manifest: b.manifest_digest(),
                    diff_ids: b.diff_ids.clone(),
                })
            })
            .collect();
        let subject = Subject {
            name: name.clone(),
            version: recipe.version.clone(),
            manifest: image.manifest_digest,
        };
        let subject_desc = crate::oci::descriptor(
            "application/vnd.oci.image.manifest.v1+json",
            &image.manifest_digest,
            image.manifest_size,
            None,
        );
        let sbom = attest::spdx::document(&subject, &parts, recipe.source_date_epoch());
        if let Some(dir) = &args.sbom_dir {
            let dir = base.join(dir);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = dir.join(format!("{name}-{}.spdx.json", recipe.version));
            std::fs::write(&path, &sbom).with_context(|| format!("writing {}", path.display()))?;
        }
        let sbom_desc = layout.attach(
            &subject_desc,
            &Artifact {
                artifact_type: attest::SPDX_MEDIA_TYPE,
                layers: vec![ArtifactLayer {
                    media_type: attest::SPDX_MEDIA_TYPE,
                    bytes: &sbom,
                    title: None,
                }],
                annotations: HashMap::from([(ANNOTATION_ATTACHMENT.to_owned(), "sbom".to_owned())]),
            },
            Some(ANNOTATION_ATTACHMENT),
        )?;
        let mut entry = serde_json::json!({
            "image": ref_name,
            "manifest": image.manifest_digest,
            "sbom": sbom_desc.digest().to_string(),
        });
        if let Some(key) = &key {
            let own_part = Part {
                recipe,
                input: own.input,
                manifest: own.manifest_digest(),
                diff_ids: own.diff_ids.clone(),
            };
            let roots: Vec<BuildRoot> = recipe
                .deps()
                .iter()
                .filter_map(|d| {
                    let b = built.get(d.as_str())?;
                    Some(BuildRoot {
                        name: b.name.clone(),
                        version: b.version.clone(),
                        manifest: b.manifest_digest(),
                    })
                })
                .collect();
            let (recipe_path, recipe_sha256) = recipe_file(&recipe.path)?;
            let statement = provenance::statement(
                &subject,
                &own_part,
                &recipe_path,
                &recipe_sha256,
                &roots,
                &ProvenanceBuilder {
                    id: args
                        .builder_id
                        .clone()
                        .unwrap_or_else(|| format!("urn:imgrep:signer:{}", key.id)),
                    conditions: None::<BTreeMap<String, String>>,
                },
            );
            let envelope = Envelope::sign(attest::dsse::IN_TOTO_PAYLOAD, &statement, key);
            let desc = layout.attach(
                &subject_desc,
                &Artifact {
                    artifact_type: attest::PROVENANCE_ARTIFACT_TYPE,
                    layers: vec![ArtifactLayer {
                        media_type: attest::DSSE_MEDIA_TYPE,
                        bytes: &envelope.to_bytes(),
                        title: None,
                    }],
                    annotations: HashMap::from([
                        (ANNOTATION_ATTACHMENT.to_owned(), "provenance".to_owned()),
                        (ANNOTATION_SIGNER.to_owned(), key.id.to_string()),
                    ]),
                },
                Some(ANNOTATION_SIGNER),
            )?;
            entry["provenance"] = serde_json::json!(desc.digest().to_string());
            entry["signer"] = serde_json::json!(key.id.to_string());
        }
        if !global.json {
            crate::progress::info(format_args!(
                "{ref_name}: SBOM {}{}",
                entry["sbom"].as_str().unwrap_or_default(),
                entry["provenance"]
                    .as_str()
                    .map(|p| format!(", provenance {p} signed by {}", entry["signer"]))
                    .unwrap_or_default()
            ));
        }
        report.push(entry);
    }
    if global.json {
        return super::print(&format!("{}\n", serde_json::to_string_pretty(&report)?));
    }
    Ok(Outcome::Success)
}

/// The recipe file as the tree names it (`packages/NAME/package.toml`: its
/// last three components, the same on every machine) and its sha256.
fn recipe_file(path: &Path) -> Result<(String, Digest)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let parts: Vec<String> = path
        .components()
        .rev()
        .take(3)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let rel = parts.into_iter().rev().collect::<Vec<_>>().join("/");
    Ok((rel, Digest::of(&bytes)))
}
