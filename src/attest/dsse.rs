//! DSSE envelopes (Dead Simple Signing Envelope, v1.0), the signature format
//! of in-toto attestations: the signature covers PAE(payloadType, payload),
//! never the JSON around it.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::sign::keys::{KeyId, SigningKey};
use crate::sign::raw;

/// The payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD: &str = "application/vnd.in-toto+json";

/// An envelope as it is stored and pushed (`application/vnd.dsse.envelope.v1+json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Envelope {
    pub payload_type: String,
    /// base64 of the payload bytes.
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeSignature {
    /// The signer's minisign key id (16 uppercase hex digits): a hint only;
    /// verification tries the key the verifier trusts.
    pub keyid: String,
    /// base64 of the Ed25519 signature of PAE(payloadType, payload).
    pub sig: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DsseError {
    #[error("not a DSSE envelope")]
    Json(#[from] serde_json::Error),
    #[error("envelope payload is not base64")]
    Payload(#[from] base64::DecodeError),
    #[error("payload type is {found:?}, expected {expected:?}")]
    PayloadType { found: String, expected: String },
    #[error("no signature in the envelope verifies with key {0}")]
    NoValidSignature(KeyId),
}

/// The pre-authentication encoding: what is signed.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

impl Envelope {
    /// An envelope holding `payload`, signed by `key`.
    pub fn sign(payload_type: &str, payload: &[u8], key: &SigningKey) -> Envelope {
        let sig = raw::sign(key, &pae(payload_type, payload));
        Envelope {
            payload_type: payload_type.to_owned(),
            payload: B64.encode(payload),
            signatures: vec![EnvelopeSignature {
                keyid: key.id.to_string(),
                sig: B64.encode(sig),
            }],
        }
    }

    /// Canonical JSON bytes, so that the envelope's digest is stable.
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::canonical::to_vec(self).expect("an envelope always serializes")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Envelope, DsseError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// The payload, if a signature in the envelope verifies with `key` and
    /// the payload type is `payload_type`.
    pub fn verify(
        &self,
        payload_type: &str,
        key: &minisign::PublicKey,
    ) -> Result<Vec<u8>, DsseError> {
        if self.payload_type != payload_type {
            return Err(DsseError::PayloadType {
                found: self.payload_type.clone(),
                expected: payload_type.to_owned(),
            });
        }
        let payload = B64.decode(&self.payload)?;
        let message = pae(&self.payload_type, &payload);
        let ok = self.signatures.iter().any(|s| {
            B64.decode(&s.sig)
                .is_ok_and(|sig| raw::verify(key, &message, &sig))
        });
        if ok {
            Ok(payload)
        } else {
            Err(DsseError::NoValidSignature(KeyId::from_keynum(
                key.keynum(),
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_the_specs_encoding() {
        // The example of the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }
}
