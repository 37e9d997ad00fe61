//! Statement signatures attached to the image they vouch for (docs/signing.md
//! "Signatures attached to the image"): one OCI 1.1 artifact per signer
//! whose `subject` is the image manifest and whose two layers are the
//! canonical statement and the signer's minisign signature of it, as in
//! manifests/. `imgrep push` writes them into the layout and pushes them
//! with the image; `imgrep verify --registry --attached` reads them back
//! and counts them as it counts manifests/.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use oci_spec::image::Descriptor;

use crate::digest::Digest;
use crate::oci::{Artifact, ArtifactLayer, Layout, ANNOTATION_ATTACHMENT, ANNOTATION_SIGNER};
use crate::registry::Referrer;
use crate::sign::keys::KeyId;
use crate::sign::manifests::{ManifestError, Manifests, PackageVersion};
use crate::sign::signature::{SignatureError, SignatureFile};
use crate::statement::Statement;

/// artifactType of a statement signature attachment.
pub const ARTIFACT_TYPE: &str = "application/vnd.imgrep.statement.signature.v1+json";
/// Media type of the statement layer (the canonical statement's bytes).
pub const STATEMENT_MEDIA_TYPE: &str = "application/vnd.imgrep.statement.v1+json";
/// Media type of the signature layer (a `.minisig` file's text).
pub const SIGNATURE_MEDIA_TYPE: &str = "application/vnd.imgrep.minisign.signature.v1";
/// Annotation with the digest of the signed statement.
pub const ANNOTATION_STATEMENT: &str = "dev.imgrep.statement";

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Oci(#[from] crate::oci::Error),
}

/// What [`attach`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attached {
    /// No statement for the package under manifests/.
    NoStatement,
    /// The statement signs another image (`manifest`): nothing attached.
    OtherImage { manifest: Digest },
    /// These signers' signatures are attached (none when `sigs/` is empty).
    Signatures(Vec<KeyId>),
}

/// Attaches each signature of `pv`'s statement under `manifests` to the
/// image `subject` in `layout`, if the statement signs that image. A
/// signer's earlier attachment to the image is replaced.
pub fn attach(
    layout: &Layout,
    manifests: &Manifests,
    pv: &PackageVersion,
    subject: &Descriptor,
) -> Result<Attached, AttachError> {
    if !manifests.statement_path(pv).is_file() {
        return Ok(Attached::NoStatement);
    }
    let stored = manifests.read_statement(pv)?;
    if stored.statement.image.manifest.to_string() != subject.digest().to_string() {
        return Ok(Attached::OtherImage {
            manifest: stored.statement.image.manifest,
        });
    }
    let statement_digest = Digest::of(&stored.bytes);
    let mut signers = Vec::new();
    for path in manifests.signature_files(pv)? {
        let sig = SignatureFile::read(&path)?;
        let text = std::fs::read(&path).map_err(|error| AttachError::Io {
            path: path.clone(),
            error,
        })?;
        let title = format!("{}.minisig", sig.key_id);
        layout.attach(
            subject,
            &Artifact {
                artifact_type: ARTIFACT_TYPE,
                layers: vec![
                    ArtifactLayer {
                        media_type: STATEMENT_MEDIA_TYPE,
                        bytes: &stored.bytes,
                        title: Some("statement.json"),
                    },
                    ArtifactLayer {
                        media_type: SIGNATURE_MEDIA_TYPE,
                        bytes: &text,
                        title: Some(&title),
                    },
                ],
                annotations: HashMap::from([
                    (ANNOTATION_ATTACHMENT.to_owned(), "signature".to_owned()),
                    (ANNOTATION_SIGNER.to_owned(), sig.key_id.to_string()),
                    (
                        ANNOTATION_STATEMENT.to_owned(),
                        statement_digest.to_string(),
                    ),
                ]),
            },
            Some(ANNOTATION_SIGNER),
        )?;
        signers.push(sig.key_id);
    }
    Ok(Attached::Signatures(signers))
}

/// One statement found attached to an image, with its signatures.
pub struct Found {
    pub bytes: Vec<u8>,
    pub statement: Statement,
    pub signatures: Vec<SignatureFile>,
}

/// The statements of `pv` about `subject` among `referrers` (artifacts of
/// [`ARTIFACT_TYPE`] read from `origin`, e.g. `HOST/REPO`), each with the
/// signatures attached with it, by statement digest; and a note for each
/// artifact that cannot count (malformed, or about another package or
/// image). Everything here came from the registry: nothing is trusted yet.
pub fn statements(
    referrers: &[Referrer],
    origin: &str,
    pv: &PackageVersion,
    subject: &Digest,
) -> (Vec<Found>, Vec<String>) {
    let mut found: BTreeMap<Digest, Found> = BTreeMap::new();
    let mut notes = Vec::new();
    for r in referrers {
        let at = format!("{origin}@{}", r.digest);
        let layer = |media_type: &str| {
            let mut of_type = r.layers.iter().filter(|(t, _)| t == media_type);
            match (of_type.next(), of_type.next()) {
                (Some((_, bytes)), None) => Some(bytes),
                _ => None,
            }
        };
        let (Some(bytes), Some(sig)) = (layer(STATEMENT_MEDIA_TYPE), layer(SIGNATURE_MEDIA_TYPE))
        else {
            notes.push(format!(
                "attached artifact {at}: expected one statement and one signature layer"
            ));
            continue;
        };
        let statement = match Statement::from_bytes(bytes) {
            Ok(s) => s,
            Err(e) => {
                notes.push(format!("attached artifact {at}: {e}"));
                continue;
            }
        };
        if statement.name != pv.name
            || statement.version != pv.version
            || statement.image.manifest != *subject
        {
            notes.push(format!(
                "attached artifact {at}: its statement is about {}:{} image {}, not {pv} image {subject}",
                statement.name, statement.version, statement.image.manifest
            ));
            continue;
        }
        let text = String::from_utf8_lossy(sig);
        let signature = match SignatureFile::parse(&text, Path::new(&at)) {
            Ok(s) => s,
            Err(e) => {
                notes.push(e.to_string());
                continue;
            }
        };
        found
            .entry(Digest::of(bytes))
            .or_insert_with(|| Found {
                bytes: bytes.clone(),
                statement,
                signatures: Vec::new(),
            })
            .signatures
            .push(signature);
    }
    (found.into_values().collect(), notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::keys::SigningKey;
    use crate::statement::ImageDigests;

    fn statement(input: &[u8], manifest: &[u8]) -> Vec<u8> {
        let image = ImageDigests {
            manifest: Digest::of(manifest),
            diff_ids: vec![Digest::of(b"layer")],
        };
        Statement::new("greet", "1.0", Digest::of(input), image, Vec::new())
            .unwrap()
            .to_bytes()
    }

    fn referrer(n: u8, layers: &[(&str, &[u8])]) -> Referrer {
        Referrer {
            digest: Digest::of(&[n]),
            layers: layers
                .iter()
                .map(|(t, b)| (t.to_string(), b.to_vec()))
                .collect(),
        }
    }

    /// Only well-formed artifacts about this package's image count; two
    /// statements about it are kept apart; the rest is a note each.
    #[test]
    fn statements_are_grouped_and_strangers_noted() {
        let pair = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        let key = SigningKey {
            id: KeyId::from_keynum(pair.pk.keynum()),
            secret: pair.sk,
            public: pair.pk,
        };
        let sign = |st: &[u8]| {
            crate::sign::signature::sign_statement(&key, st, "ci", "test")
                .unwrap()
                .into_bytes()
        };
        let (a, b) = (statement(b"in-a", b"img"), statement(b"in-b", b"img"));
        let other = statement(b"in-a", b"another image");
        let (s, g) = (STATEMENT_MEDIA_TYPE, SIGNATURE_MEDIA_TYPE);
        let referrers = vec![
            referrer(1, &[(s, &a), (g, &sign(&a))]),
            referrer(2, &[(s, &b), (g, &sign(&b))]),
            referrer(3, &[(s, &a), (g, &sign(&a))]),
            referrer(4, &[(s, &other), (g, &sign(&other))]),
            referrer(5, &[(s, &a)]),
            referrer(6, &[(s, b"{}"), (g, &sign(b"{}"))]),
            referrer(7, &[(s, &a), (g, b"not a signature")]),
        ];
        let pv = PackageVersion {
            name: "greet".into(),
            version: "1.0".into(),
        };
        let (found, notes) = statements(&referrers, "reg/greet", &pv, &Digest::of(b"img"));
        let mut groups: Vec<(Vec<u8>, usize)> = found
            .iter()
            .map(|f| (f.bytes.clone(), f.signatures.len()))
            .collect();
        groups.sort();
        let mut want = vec![(a.clone(), 2), (b.clone(), 1)];
        want.sort();
        assert_eq!(groups, want);
        for f in &found {
            for sig in &f.signatures {
                assert_eq!(sig.verify(&key.public, &f.bytes).as_deref(), Ok("ci"));
            }
        }
        assert_eq!(notes.len(), 4, "{notes:#?}");
        assert!(notes[0].contains("not greet:1.0 image"), "{}", notes[0]);
        assert!(notes[1].contains("one statement and one signature layer"));
        assert!(notes[2].contains("not a valid statement"), "{}", notes[2]);
        assert!(
            notes[3].contains("not a minisign signature"),
            "{}",
            notes[3]
        );
    }
}
