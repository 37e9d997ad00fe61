//! The raw Ed25519 halves of minisign keys, for signature formats other than
//! minisign's own: DSSE envelopes (in-toto) and cosign-style image
//! signatures (podman's `sigstoreSigned` policy). A minisign key is an
//! Ed25519 key pair plus an 8-byte id, so one key signs every format and a
//! signer has one identity everywhere.

use base64::Engine as _;
use ed25519_dalek::{Signer as _, Verifier as _};

use crate::sign::keys::SigningKey;

/// The Ed25519 signing key inside an unlocked minisign secret key.
pub fn signing_key(key: &SigningKey) -> ed25519_dalek::SigningKey {
    // Decoded secret key: sig_alg(2) kdf_alg(2) chk_alg(2) salt(32)
    // opslimit(8) memlimit(8) keynum(8), then libsodium's sk = seed(32) ||
    // public(32). `load_secret_key` has decrypted it already.
    const SEED: std::ops::Range<usize> = 62..94;
    let bytes = key.secret.to_bytes();
    let seed: [u8; 32] = bytes[SEED]
        .try_into()
        .expect("a decoded key holds 32 seed bytes");
    ed25519_dalek::SigningKey::from_bytes(&seed)
}

/// The Ed25519 public key inside a minisign public key ("Ed", keynum, pk).
pub fn verifying_key(
    key: &minisign::PublicKey,
) -> Result<ed25519_dalek::VerifyingKey, ed25519_dalek::SignatureError> {
    let bytes = key.to_bytes();
    let pk: [u8; 32] = bytes[10..42]
        .try_into()
        .expect("a public key holds 32 bytes");
    ed25519_dalek::VerifyingKey::from_bytes(&pk)
}

/// A plain Ed25519 signature of `message`.
pub fn sign(key: &SigningKey, message: &[u8]) -> [u8; 64] {
    signing_key(key).sign(message).to_bytes()
}

/// Checks a plain Ed25519 signature of `message`.
pub fn verify(key: &minisign::PublicKey, message: &[u8], signature: &[u8]) -> bool {
    let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
        return false;
    };
    verifying_key(key).is_ok_and(|k| k.verify(message, &sig).is_ok())
}

/// The public key as a PEM `PUBLIC KEY` (SubjectPublicKeyInfo, RFC 8410),
/// the form cosign, sigstore and containers-policy.json's `keyPath` read.
pub fn public_pem(key: &minisign::PublicKey) -> String {
    // SEQUENCE { SEQUENCE { OID 1.3.101.112 (Ed25519) } BIT STRING (32 bytes) }:
    // for Ed25519 this prefix is fixed, so no ASN.1 library is needed.
    const SPKI_PREFIX: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(&key.to_bytes()[10..42]);
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n")
}
