//! Image signatures for podman's `signedBy` policy (containers "simple
//! signing", containers-signature(5)): an OpenPGP rendering of the signer's
//! minisign key, and OpenPGP signed messages over the simple-signing
//! payload, which podman reads from a lookaside directory
//! (containers-registries.d(5)).
//!
//! One key, several formats: the OpenPGP key is a v4 EdDSA (Ed25519,
//! "EdDSALegacy") key made of the same 32 key bytes, created at the Unix
//! epoch (timestamp 0), so its fingerprint (a hash of the creation time and
//! the public key only) is the same every time and on every machine. Every
//! signature also carries that time, and Ed25519 is deterministic: signing
//! again gives the same bytes, as with the DSSE and cosign formats. Version
//! 4 and EdDSALegacy because that is what GnuPG 2.2 (Debian 12), which
//! podman's gpgme runs, verifies; RFC 9580's v6 keys and native Ed25519
//! need GnuPG 2.4+ or Sequoia.

use std::time::UNIX_EPOCH;

use pgp::composed::{
    ArmorOptions, MessageBuilder, SignedKeyDetails, SignedPublicKey, SubpacketConfig,
};
use pgp::crypto::ed25519::{Mode, SecretKey as Ed25519Secret};
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::public_key::PublicKeyAlgorithm;
use pgp::packet::{
    KeyFlags, PubKeyInner, PublicKey, SecretKey, SignatureConfig, SignatureType, Subpacket,
    SubpacketData, UserId,
};
use pgp::ser::Serialize as _;
use pgp::types::{
    KeyDetails as _, KeyVersion, PacketHeaderVersion, Password, PlainSecretParams, PublicParams,
    SecretParams, Tag,
};
use serde_json::json;

use crate::digest::Digest;
use crate::sign::keys::SigningKey;

/// What containers/image requires as the payload's `critical.type`.
const SIGNATURE_TYPE: &str = "atomic container signature";

#[derive(Debug, thiserror::Error)]
#[error("{what} the OpenPGP form of key {key}")]
pub struct PgpError {
    /// "making" or "signing with".
    pub what: &'static str,
    pub key: String,
    #[source]
    pub source: pgp::errors::Error,
}

/// A signer's minisign key in OpenPGP form, ready to sign.
pub struct PgpKey {
    secret: SecretKey,
    /// The transferable public key (key, user ID, self-signature) that
    /// `keyPath` of a `signedBy` requirement names.
    pub certificate: SignedPublicKey,
}

/// The user ID given when none is: the minisign key id, which is how
/// imgrep names the signer everywhere else.
pub fn default_user_id(key: &SigningKey) -> String {
    format!("imgrep signer {}", key.id)
}

impl PgpKey {
    /// The OpenPGP key made of `key`'s Ed25519 pair, certified for signing
    /// under `user_id` (GnuPG imports no key without a self-signed user ID,
    /// which is why this needs the secret key, unlike `imgrep key pem`).
    pub fn new(key: &SigningKey, user_id: &str) -> Result<PgpKey, PgpError> {
        let wrap = |source| PgpError {
            what: "making",
            key: key.id.to_string(),
            source,
        };
        let seed = crate::sign::raw::signing_key(key).to_bytes();
        let plain = PlainSecretParams::Ed25519Legacy(
            Ed25519Secret::try_from_bytes(seed, Mode::EdDSALegacy).map_err(wrap)?,
        );
        let public = PublicParams::try_from(&plain).map_err(wrap)?;
        let inner = PubKeyInner::new(
            KeyVersion::V4,
            PublicKeyAlgorithm::EdDSALegacy,
            UNIX_EPOCH.into(),
            None,
            public,
        )
        .map_err(wrap)?;
        let primary = PublicKey::from_inner(inner).map_err(wrap)?;
        let secret = SecretKey::new(primary.clone(), SecretParams::Plain(plain)).map_err(wrap)?;

        let mut flags = KeyFlags::default();
        flags.set_certify(true);
        flags.set_sign(true);
        let mut config = SignatureConfig::v4(
            SignatureType::CertPositive,
            PublicKeyAlgorithm::EdDSALegacy,
            HashAlgorithm::Sha256,
        );
        config.hashed_subpackets = vec![
            Subpacket::regular(SubpacketData::SignatureCreationTime(UNIX_EPOCH.into()))
                .map_err(wrap)?,
            Subpacket::regular(SubpacketData::IssuerFingerprint(secret.fingerprint()))
                .map_err(wrap)?,
            Subpacket::regular(SubpacketData::KeyFlags(flags)).map_err(wrap)?,
            Subpacket::regular(SubpacketData::PreferredHashAlgorithms(
                [HashAlgorithm::Sha256, HashAlgorithm::Sha512]
                    .into_iter()
                    .collect(),
            ))
            .map_err(wrap)?,
            Subpacket::regular(SubpacketData::IsPrimary(true)).map_err(wrap)?,
        ];
        config.unhashed_subpackets =
            vec![Subpacket::regular(SubpacketData::Issuer(secret.key_id())).map_err(wrap)?];
        let uid = UserId::from_str(PacketHeaderVersion::New, user_id).map_err(wrap)?;
        let self_sig = config
            .sign_certification(&secret, &primary, &Password::empty(), Tag::UserId, &uid)
            .map_err(wrap)?;
        let details =
            SignedKeyDetails::new(vec![], vec![], vec![uid.into_signed(self_sig)], vec![]);
        Ok(PgpKey {
            secret,
            certificate: SignedPublicKey::new(primary, details, vec![]),
        })
    }

    /// The fingerprint, 40 uppercase hex digits, as gpg prints it.
    pub fn fingerprint(&self) -> String {
        hex::encode_upper(self.secret.fingerprint().as_bytes())
    }

    /// The certificate in binary OpenPGP packets (`gpg --export`).
    pub fn public_binary(&self) -> Vec<u8> {
        self.certificate
            .to_bytes()
            .expect("a certificate built here serializes")
    }

    /// The certificate ASCII-armored (`gpg --armor --export`).
    pub fn public_armored(&self) -> String {
        self.certificate
            .to_armored_string(ArmorOptions::default())
            .expect("a certificate built here serializes")
    }

    /// `payload` as an OpenPGP signed message (one-pass signature, literal
    /// data, signature), what `gpg --sign` writes and containers/image
    /// stores as a lookaside `signature-N`.
    pub fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, PgpError> {
        let wrap = |source| PgpError {
            what: "signing with",
            key: self.fingerprint(),
            source,
        };
        let hashed = vec![
            Subpacket::regular(SubpacketData::IssuerFingerprint(self.secret.fingerprint()))
                .map_err(wrap)?,
            Subpacket::regular(SubpacketData::SignatureCreationTime(UNIX_EPOCH.into()))
                .map_err(wrap)?,
        ];
        let unhashed =
            vec![Subpacket::regular(SubpacketData::Issuer(self.secret.key_id())).map_err(wrap)?];
        // The literal data packet's own name and date stay empty and the
        // epoch (rPGP's defaults for a builder), so nothing varies.
        let mut builder = MessageBuilder::from_bytes("", payload.to_vec());
        builder.sign_with_subpackets(
            &self.secret,
            Password::empty(),
            HashAlgorithm::Sha256,
            SubpacketConfig::UserDefined { hashed, unhashed },
        );
        // A v4 Ed25519 signature draws nothing from the rng.
        builder.to_vec(rand::rngs::OsRng).map_err(wrap)
    }
}

/// The simple-signing payload (containers-signature(5)): `reference` is the
/// image as users pull it (`HOST/REPO:TAG`), which the policy's
/// `signedIdentity` compares.
pub fn payload(reference: &str, manifest: &Digest) -> Vec<u8> {
    let doc = json!({
        "critical": {
            "identity": { "docker-reference": reference },
            "image": { "docker-manifest-digest": manifest.to_string() },
            "type": SIGNATURE_TYPE,
        },
        // containers/image requires an object here (cosign's null is refused).
        "optional": {},
    });
    crate::canonical::to_vec(&doc).expect("a payload serializes")
}
