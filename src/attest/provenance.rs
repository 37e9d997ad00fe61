//! Provenance: an in-toto Statement v1 whose predicate is SLSA provenance
//! v1 (docs/attest.md). `buildDefinition` is everything that decides the
//! image (the recipe's bytes, the input digest, the resolved source pins,
//! the build-root images), so every honest rebuilder writes the same bytes
//! there; `runDetails.builder` says who built it, and, for `imgrep
//! reproduce`, under which varied conditions.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{download_location, pin_digest, Part, Subject};
use crate::digest::Digest;

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// What `buildDefinition` means: a package built by imgrep from its recipe
/// (documented in docs/attest.md).
pub const BUILD_TYPE: &str = "urn:imgrep:build-type:package:v1";

/// The image a package was built on: one of its build dependencies.
#[derive(Debug, Clone)]
pub struct BuildRoot {
    pub name: String,
    pub version: String,
    pub manifest: Digest,
}

/// Who made the statement and how.
#[derive(Debug, Clone)]
pub struct Builder {
    /// A URI naming the builder, e.g. `urn:imgrep:signer:<KEYID>`.
    pub id: String,
    /// The conditions `imgrep reproduce` varied, when it made the build.
    pub conditions: Option<BTreeMap<String, String>>,
}

/// The statement's canonical bytes. `recipe_path` is the recipe file
/// relative to the recipe tree and `recipe_sha256` the digest of its bytes.
pub fn statement(
    subject: &Subject,
    part: &Part,
    recipe_path: &str,
    recipe_sha256: &Digest,
    roots: &[BuildRoot],
    builder: &Builder,
) -> Vec<u8> {
    let r = part.recipe;
    let mut resolved: Vec<Value> = vec![json!({
        "uri": format!("file:{recipe_path}"),
        "digest": { "sha256": recipe_sha256.hex() },
    })];
    for s in &r.sources {
        let (alg, hex) = pin_digest(&s.pin);
        let mut d = json!({ "name": s.file_name(), "digest": { alg: hex } });
        if let Some(url) = download_location(s) {
            d["uri"] = json!(url);
        }
        resolved.push(d);
    }
    for root in roots {
        resolved.push(json!({
            "name": format!("{}:{}", root.name, root.version),
            "uri": format!("pkg:oci/{}@sha256%3A{}?tag={}", root.name, root.manifest.hex(), root.version),
            "digest": { "sha256": root.manifest.hex() },
            "annotations": { "role": "build-root" },
        }));
    }
    let mut builder_value = json!({
        "id": builder.id,
        "version": { "imgrep": env!("CARGO_PKG_VERSION") },
    });
    let mut run = json!({
        "builder": builder_value.take(),
        "byproducts": part.diff_ids.iter().enumerate().map(|(i, d)| json!({
            "name": format!("layer-{i}"),
            "digest": { "sha256": d.hex() },
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
        })).collect::<Vec<_>>(),
    });
    if let Some(c) = &builder.conditions {
        run["metadata"] = json!({ "invocationId": format!("imgrep-reproduce:{}", part.input) });
        run["builder"]["builderDependencies"] = json!([{
            "name": "varied-conditions",
            "annotations": c,
        }]);
    }
    let doc = json!({
        "_type": STATEMENT_TYPE,
        "subject": [{
            "name": format!("{}:{}", subject.name, subject.version),
            "digest": { "sha256": subject.manifest.hex() },
        }],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "package": r.name,
                    "version": r.version,
                    "recipe": recipe_path,
                },
                "internalParameters": {
                    "inputDigest": part.input.to_string(),
                    "layerFormat": crate::layer::FORMAT_VERSION,
                    "sourceDateEpoch": r.source_date_epoch(),
                },
                "resolvedDependencies": resolved,
            },
            "runDetails": run,
        },
    });
    crate::canonical::to_vec(&doc).expect("a provenance statement serializes")
}
