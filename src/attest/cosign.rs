//! Image signatures in cosign's layout, which podman and skopeo check with
//! a `sigstoreSigned` policy (containers-policy.json(5)): a "simple
//! signing" payload naming the image reference and manifest digest, signed
//! with the signer's Ed25519 key, stored in a manifest tagged
//! `sha256-<hex>.sig` beside the image in its repository.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::json;

use crate::digest::Digest;
// Where cosign keeps signatures is the layout's and the registry's business
// too: they live in oci, below both this module and the registry client.
pub use crate::oci::{signature_tag, SignatureImage};
use crate::sign::keys::SigningKey;
use crate::sign::raw;

pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const SIGNATURE_TYPE: &str = "cosign container image signature";

/// The payload: `reference` is the image as users name it
/// (`HOST/REPO:TAG`), which the policy's `signedIdentity` compares.
pub fn payload(reference: &str, manifest: &Digest) -> Vec<u8> {
    let doc = json!({
        "critical": {
            "identity": { "docker-reference": reference },
            "image": { "docker-manifest-digest": manifest.to_string() },
            "type": SIGNATURE_TYPE,
        },
        "optional": null,
    });
    crate::canonical::to_vec(&doc).expect("a payload serializes")
}

/// Signs `payload` with `key` and lays it out as cosign does.
pub fn signature_image(payload: Vec<u8>, key: &SigningKey) -> SignatureImage {
    let sig = B64.encode(raw::sign(key, &payload));
    let payload_digest = Digest::of(&payload);
    let config = crate::canonical::to_vec(&json!({
        "architecture": "",
        "os": "",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [payload_digest.to_string()] },
    }))
    .expect("a config serializes");
    let manifest = crate::canonical::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": Digest::of(&config).to_string(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": PAYLOAD_MEDIA_TYPE,
            "digest": payload_digest.to_string(),
            "size": payload.len(),
            "annotations": { SIGNATURE_ANNOTATION: sig },
        }],
    }))
    .expect("a manifest serializes");
    SignatureImage {
        config,
        payload,
        manifest,
    }
}
