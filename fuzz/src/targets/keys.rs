//! Public keys (`src/sign/keys.rs`) and the trust anchors built from them
//! (`src/sign/trust.rs`): key files, `--trust [ROLE:]KEY` specs, keyring
//! directories with `roles.toml`.

use std::fs;
use std::sync::OnceLock;

use base64::Engine as _;
use imgrep::sign::keys::{parse_public_key, read_public_key};
use imgrep::sign::signature::valid_role;
use imgrep::sign::trust::Trust;

use crate::scratch;

/// The public key must be exactly the bytes the text encodes, and encode
/// back to a key that parses equal.
fn check_key(encoded: &str, key: &minisign::PublicKey) {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .expect("an accepted key is base64");
    assert_eq!(raw, key.to_bytes(), "key bytes differ from the text's");
    let again = parse_public_key(&key.to_base64()).expect("a key's own encoding parses");
    assert_eq!(again.to_bytes(), key.to_bytes());
}

fn keys() -> &'static [String; 2] {
    static KEYS: OnceLock<[String; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        [0, 1].map(|_| {
            let pair = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
            pair.pk.to_box().unwrap().into_string()
        })
    })
}

pub fn run(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match sel % 4 {
        0 => {
            if let Ok(key) = parse_public_key(text) {
                check_key(text, &key);
            }
        }
        1 => {
            let path = scratch::fresh("keys").join("k.pub");
            fs::write(&path, text).unwrap();
            if let Ok(key) = read_public_key(&path) {
                check_key(text.lines().nth(1).unwrap(), &key);
            }
        }
        2 => {
            let mut trust = Trust::default();
            if trust.add_key_spec(text).is_ok() {
                let keys: Vec<_> = trust.keys().collect();
                assert_eq!(keys.len(), 1);
                assert!(keys[0].role.as_deref().is_none_or(valid_role));
            }
        }
        _ => {
            let dir = scratch::fresh("keys");
            let [a, b] = keys();
            fs::write(dir.join("alice.pub"), a).unwrap();
            fs::write(dir.join("bob.pub"), b).unwrap();
            fs::write(dir.join("roles.toml"), text).unwrap();
            let mut trust = Trust::default();
            if trust.add_keyring(&dir).is_ok() {
                assert_eq!(trust.keys().count(), 2);
                for k in trust.keys() {
                    assert!(
                        k.role.as_deref().is_none_or(valid_role),
                        "role {:?}",
                        k.role
                    );
                }
            }
        }
    }
}
