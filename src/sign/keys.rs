//! minisign key pairs: generating them, reading public keys, and unlocking
//! secret keys made by imgrep or by the `minisign` command-line tool.
//!
//! Two facts shape this file. Secret keys made by `minisign -G -W` carry an
//! all-zero checksum, which the minisign crate rejects as corrupted: such
//! keys are decoded and loaded without the check, and every signature is
//! verified against the public half before it is written. And the crate
//! prompts on the terminal when it is given no password: it is always given
//! one here, read from a file, the environment, or a prompt that is only
//! shown when stdin is a terminal.

use std::fmt;
use std::fs;
use std::io::IsTerminal;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine as _;

/// The environment variable a secret key's password is read from.
pub const PASSWORD_ENV: &str = "IMGREP_KEY_PASSWORD";

/// The key id minisign writes into keys and signatures: 8 bytes, shown as
/// minisign shows it (16 uppercase hex digits of the little-endian number).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 8]);

impl KeyId {
    pub fn from_keynum(keynum: &[u8]) -> Self {
        let mut b = [0u8; 8];
        b.copy_from_slice(&keynum[..8]);
        KeyId(b)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for KeyId {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        if s.len() != 16 {
            return Err(KeyError::KeyIdSyntax(s.to_owned()));
        }
        u64::from_str_radix(s, 16)
            .map(|n| KeyId(n.to_le_bytes()))
            .map_err(|_| KeyError::KeyIdSyntax(s.to_owned()))
    }
}

impl serde::Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: not a minisign public key: {reason}")]
    MalformedPublic { path: String, reason: String },
    #[error("{path}: not a minisign secret key: {reason}")]
    MalformedSecret { path: PathBuf, reason: String },
    #[error("{path}: wrong password for this secret key")]
    WrongPassword { path: PathBuf },
    #[error(
        "{path}: the secret key is encrypted and no password was given: stdin is not a \
         terminal, so set {PASSWORD_ENV} or pass --password-file"
    )]
    NoPassword { path: PathBuf },
    #[error("{path}: {reason}")]
    Password { path: PathBuf, reason: String },
    #[error("{0} already exists (pass --force to replace it)")]
    Exists(PathBuf),
    #[error("invalid key id {0:?}: expected 16 hex digits, as minisign prints it")]
    KeyIdSyntax(String),
    #[error("minisign: {0}")]
    Minisign(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        error: source,
    }
}

fn minisign_err(e: minisign::PError) -> KeyError {
    KeyError::Minisign(e.to_string())
}

/// Where a secret key's password comes from, in this order: a file named by
/// the user, the environment variable [`PASSWORD_ENV`], a terminal prompt.
#[derive(Debug, Clone, Default)]
pub struct PasswordSource {
    pub file: Option<PathBuf>,
}

impl PasswordSource {
    /// The password, or `None` when there is no file, no variable and stdin
    /// is not a terminal. `confirm` asks twice at a prompt (new keys).
    fn get(&self, key: &Path, confirm: bool) -> Result<Option<String>, KeyError> {
        if let Some(file) = &self.file {
            let text = fs::read_to_string(file).map_err(io_err(file))?;
            return Ok(Some(text.lines().next().unwrap_or_default().to_owned()));
        }
        if let Ok(pw) = std::env::var(PASSWORD_ENV) {
            return Ok(Some(pw));
        }
        if !std::io::stdin().is_terminal() {
            return Ok(None);
        }
        let prompt = |p: &str| {
            rpassword::prompt_password(p).map_err(|e| KeyError::Password {
                path: key.to_owned(),
                reason: format!("reading the password from the terminal: {e}"),
            })
        };
        let pw = prompt(&format!("Password for {}: ", key.display()))?;
        if confirm && prompt("Password (again): ")? != pw {
            return Err(KeyError::Password {
                path: key.to_owned(),
                reason: "the two passwords differ".into(),
            });
        }
        Ok(Some(pw))
    }
}

/// A secret key ready to sign, with its public half.
pub struct SigningKey {
    pub id: KeyId,
    pub secret: minisign::SecretKey,
    pub public: minisign::PublicKey,
}

// Offsets in a decoded minisign secret key: sig_alg(2) kdf_alg(2) chk_alg(2)
// salt(32) opslimit(8) memlimit(8) keynum(8) sk(64) chk(32).
const SECRET_KEY_LEN: usize = 158;
const KDF_ALG: std::ops::Range<usize> = 2..4;
const CHECKSUM: std::ops::Range<usize> = 126..158;

/// Reads and unlocks a minisign secret key file (imgrep's or the minisign
/// CLI's, encrypted or not). Asks for a password only if the key is encrypted.
pub fn load_secret_key(path: &Path, password: &PasswordSource) -> Result<SigningKey, KeyError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let malformed = |reason: &str| KeyError::MalformedSecret {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let encoded = key_line(&text).map_err(malformed)?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| malformed(&format!("line 2: not base64: {e}")))?;
    if raw.len() != SECRET_KEY_LEN || &raw[..2] != b"Ed" {
        return Err(malformed(&format!(
            "line 2: expected {SECRET_KEY_LEN} bytes starting with the Ed25519 algorithm id, \
             got {} bytes",
            raw.len()
        )));
    }
    let secret = match &raw[KDF_ALG] {
        [0, 0] if raw[CHECKSUM].iter().all(|&b| b == 0) => {
            minisign::SecretKey::from_bytes(&raw).map_err(|e| malformed(&e.to_string()))?
        }
        [0, 0] => minisign::SecretKey::from_unencrypted_box(text.clone().into())
            .map_err(|e| malformed(&e.to_string()))?,
        b"Sc" => {
            let pw = password
                .get(path, false)?
                .ok_or_else(|| KeyError::NoPassword {
                    path: path.to_owned(),
                })?;
            minisign::SecretKey::from_box(text.clone().into(), Some(pw)).map_err(|e| {
                match e.kind() {
                    minisign::ErrorKind::Verify => KeyError::WrongPassword {
                        path: path.to_owned(),
                    },
                    _ => malformed(&e.to_string()),
                }
            })?
        }
        _ => return Err(malformed("unsupported key derivation algorithm")),
    };
    let public = minisign::PublicKey::from_secret_key(&secret).map_err(minisign_err)?;
    Ok(SigningKey {
        id: KeyId::from_keynum(public.keynum()),
        secret,
        public,
    })
}

/// Reads a minisign public key file.
pub fn read_public_key(path: &Path) -> Result<minisign::PublicKey, KeyError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let malformed = |reason: &str| KeyError::MalformedPublic {
        path: path.display().to_string(),
        reason: reason.to_owned(),
    };
    let encoded = key_line(&text).map_err(malformed)?;
    parse_public_key(encoded).map_err(|reason| malformed(&format!("line 2: {reason}")))
}

/// The encoded key of a minisign key file (secret or public): line 1
/// `untrusted comment: ...`, line 2 the key in base64.
fn key_line(text: &str) -> Result<&str, &'static str> {
    let mut lines = text.lines();
    if !lines
        .next()
        .is_some_and(|l| l.starts_with("untrusted comment:"))
    {
        return Err("line 1: expected `untrusted comment: ...`");
    }
    lines
        .next()
        .map(str::trim)
        .ok_or("line 2: missing the encoded key")
}

/// Parses a public key as `minisign -P` takes it (base64, `RW...`).
pub fn parse_public_key(encoded: &str) -> Result<minisign::PublicKey, String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("not base64: {e}"))?;
    if raw.len() != 42 || &raw[..2] != b"Ed" {
        return Err(format!(
            "expected 42 bytes starting with the Ed25519 algorithm id, got {} bytes",
            raw.len()
        ));
    }
    minisign::PublicKey::from_bytes(&raw).map_err(|e| e.to_string())
}

/// The Ed25519 public key itself: what makes two keys the same signer. The
/// key id beside it is 8 bytes anyone can copy or change.
pub fn public_key_bytes(key: &minisign::PublicKey) -> [u8; 32] {
    let raw = key.to_bytes();
    raw[raw.len() - 32..]
        .try_into()
        .expect("a minisign public key ends with 32 key bytes")
}

/// The files [`generate`] wrote.
#[derive(Debug, serde::Serialize)]
pub struct Generated {
    pub key_id: KeyId,
    pub public_key: PathBuf,
    pub secret_key: PathBuf,
    pub encrypted: bool,
}

/// Makes a key pair and writes PREFIX.pub and PREFIX.key (mode 0600) in
/// minisign's format. `encrypt` asks for a password through `password`.
pub fn generate(
    prefix: &Path,
    encrypt: bool,
    password: &PasswordSource,
    force: bool,
) -> Result<Generated, KeyError> {
    let with_ext = |ext: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    let (pub_path, key_path) = (with_ext(".pub"), with_ext(".key"));
    for p in [&pub_path, &key_path] {
        if !force && p.exists() {
            return Err(KeyError::Exists(p.clone()));
        }
    }
    let pair = if encrypt {
        let pw = password
            .get(&key_path, true)?
            .ok_or_else(|| KeyError::Password {
                path: key_path.clone(),
                reason: format!(
                    "no password for the new key: stdin is not a terminal, so set \
                     {PASSWORD_ENV}, pass --password-file, or pass --no-password"
                ),
            })?;
        minisign::KeyPair::generate_encrypted_keypair(Some(pw)).map_err(minisign_err)?
    } else {
        minisign::KeyPair::generate_unencrypted_keypair().map_err(minisign_err)?
    };
    let comment = if encrypt {
        "imgrep encrypted secret key"
    } else {
        "imgrep unencrypted secret key"
    };
    let sk_box = pair.sk.to_box(Some(comment)).map_err(minisign_err)?;
    let pk_box = pair.pk.to_box().map_err(minisign_err)?;
    // write_atomic's temporary file is created 0600, so the secret never
    // exists with wider permissions.
    crate::fsutil::write_atomic(&key_path, &sk_box.to_bytes()).map_err(io_err(&key_path))?;
    crate::fsutil::write_atomic(&pub_path, &pk_box.to_bytes()).map_err(io_err(&pub_path))?;
    fs::set_permissions(&pub_path, fs::Permissions::from_mode(0o644)).map_err(io_err(&pub_path))?;
    Ok(Generated {
        key_id: KeyId::from_keynum(pair.pk.keynum()),
        public_key: pub_path,
        secret_key: key_path,
        encrypted: encrypt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_matches_minisign_display() {
        let id = KeyId::from_keynum(&[0x80, 0xb8, 0x80, 0xf8, 0x42, 0xca, 0x35, 0x91]);
        assert_eq!(id.to_string(), "9135CA42F880B880");
        assert_eq!("9135CA42F880B880".parse::<KeyId>().unwrap(), id);
        assert!("9135CA42".parse::<KeyId>().is_err());
    }

    #[test]
    fn generated_unencrypted_key_loads_and_matches() {
        let dir = tempfile::tempdir().unwrap();
        let g = generate(
            &dir.path().join("k"),
            false,
            &PasswordSource::default(),
            false,
        )
        .unwrap();
        let sk = load_secret_key(&g.secret_key, &PasswordSource::default()).unwrap();
        assert_eq!(sk.id, g.key_id);
        let pk = read_public_key(&g.public_key).unwrap();
        assert_eq!(KeyId::from_keynum(pk.keynum()), g.key_id);
        let mode = fs::metadata(&g.secret_key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            generate(
                &dir.path().join("k"),
                false,
                &PasswordSource::default(),
                false
            ),
            Err(KeyError::Exists(_))
        ));
    }
}
