//! Signature files and trusted comments (`src/sign/signature.rs`).
//!
//! A key pair is made once per process and signs a fixed statement; inputs
//! either are a whole signature file or edit that genuine one. Whatever
//! parses and verifies must carry the genuine signature bytes and trusted
//! comment: nothing else may verify.

use std::fs;
use std::sync::OnceLock;

use base64::Engine as _;
use imgrep::sign::keys::{KeyId, SigningKey};
use imgrep::sign::signature::{sign_statement, SignatureFile, TrustedComment};

use crate::scratch;

const STATEMENT: &[u8] = br#"{"image":{"diff_ids":[],"manifest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"input_digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","name":"fuzz","sources":[],"type":"imgrep.statement/v1","version":"1"}"#;

struct Genuine {
    public: minisign::PublicKey,
    text: String,
}

fn genuine() -> &'static Genuine {
    static G: OnceLock<Genuine> = OnceLock::new();
    G.get_or_init(|| {
        let pair = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        let key = SigningKey {
            id: KeyId::from_keynum(pair.pk.keynum()),
            secret: pair.sk,
            public: pair.pk.clone(),
        };
        let text = sign_statement(&key, STATEMENT, "rebuilder", "fuzz").unwrap();
        Genuine {
            public: pair.pk,
            text,
        }
    })
}

fn line(text: &str, n: usize) -> Option<Vec<u8>> {
    let l = text.lines().nth(n)?;
    base64::engine::general_purpose::STANDARD
        .decode(l.trim())
        .ok()
}

pub fn run(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    if let Ok(s) = std::str::from_utf8(rest) {
        if let Ok(c) = s.parse::<TrustedComment>() {
            assert_eq!(c.to_string(), s, "trusted comment does not print as read");
        }
    }
    let g = genuine();
    let text: Vec<u8> = if sel % 2 == 0 {
        rest.to_vec()
    } else {
        // Replace a range of the genuine file with the input.
        let t = g.text.as_bytes();
        let at = usize::from(sel >> 1) * t.len() / 128;
        let len = rest.first().map_or(0, |&b| usize::from(b) % 8);
        let end = (at + len).min(t.len());
        [&t[..at], rest.get(1..).unwrap_or_default(), &t[end..]].concat()
    };
    let path = scratch::fresh("signature").join("sig.minisig");
    fs::write(&path, &text).unwrap();
    let Ok(sig) = SignatureFile::read(&path) else {
        return;
    };
    if sig.verify(&g.public, STATEMENT).is_ok() {
        let text = String::from_utf8(text).expect("a verified signature file is UTF-8");
        assert_eq!(
            line(&text, 1),
            line(&g.text, 1),
            "a signature other than the genuine one verified:\n{text}"
        );
        assert_eq!(
            line(&text, 3),
            line(&g.text, 3),
            "a global signature other than the genuine one verified:\n{text}"
        );
        assert_eq!(
            text.lines().nth(2).map(str::trim_end),
            g.text.lines().nth(2).map(str::trim_end),
            "a trusted comment other than the genuine one verified"
        );
    }
}
