//! Image signatures in cosign's layout, which podman and skopeo check with
//! a `sigstoreSigned` policy (containers-policy.json(5)): a "simple
//! signing" payload naming the image reference and manifest digest, signed
//! with the signer's Ed25519 key, stored in a manifest tagged
//! `sha256-<hex>.sig` beside the image in its repository.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::json;

use crate::digest::Digest;
use crate::sign::keys::SigningKey;
use crate::sign::raw;

pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const SIGNATURE_TYPE: &str = "cosign container image signature";

/// The tag cosign's layout stores the signatures of `manifest` under.
pub fn signature_tag(manifest: &Digest) -> String {
    format!("sha256-{}.sig", manifest.hex())
}

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

/// The blobs and manifest of a signature: (config, payload, manifest).
pub struct SignatureImage {
    pub config: Vec<u8>,
    pub payload: Vec<u8>,
    pub manifest: Vec<u8>,
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
