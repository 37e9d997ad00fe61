//! Statements (`src/statement.rs`): the bytes signers sign.

use arbitrary::Unstructured;
use base64::Engine as _;
use imgrep::digest::Digest;
use imgrep::statement::{ImageDigests, SourceHash, Statement};

pub fn run(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    if sel % 2 == 0 {
        if let Ok(st) = Statement::from_bytes(rest) {
            assert_eq!(st.to_bytes(), rest, "accepted bytes are not canonical");
            assert_eq!(st.digest(), Digest::of(rest));
        }
        return;
    }
    let mut u = Unstructured::new(rest);
    let Ok(st) = generated(&mut u) else {
        return;
    };
    let Ok(st) = st else {
        return;
    };
    let bytes = st.to_bytes();
    let back = Statement::from_bytes(&bytes)
        .unwrap_or_else(|e| panic!("a statement Statement::new made does not read back: {e}"));
    assert_eq!(back, st);
}

fn digest(u: &mut Unstructured) -> arbitrary::Result<Digest> {
    Ok(Digest::from_bytes(u.arbitrary()?))
}

fn word(u: &mut Unstructured, common: &[&str]) -> arbitrary::Result<String> {
    if u.ratio(2, 3)? {
        Ok((*u.choose(common)?).to_owned())
    } else {
        u.arbitrary()
    }
}

type Made = Result<Statement, imgrep::statement::StatementError>;

fn generated(u: &mut Unstructured) -> arbitrary::Result<Made> {
    let name = word(u, &["musl", "gcc", "a", "x+y.z_-9", "0"])?;
    let version = word(u, &["1.2.5", "1.0+b1", "0", "2024-01-01~rc1"])?;
    let input = digest(u)?;
    let manifest = digest(u)?;
    let mut diff_ids = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        diff_ids.push(digest(u)?);
    }
    let mut sources = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        sources.push(match u.int_in_range(0..=2)? {
            0 => SourceHash::File(digest(u)?),
            1 => {
                let raw: [u8; 32] = u.arbitrary()?;
                SourceHash::Tree(format!(
                    "sha256-{}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                ))
            }
            _ => SourceHash::Tree(u.arbitrary()?),
        });
    }
    Ok(Statement::new(
        &name,
        &version,
        input,
        ImageDigests { manifest, diff_ids },
        sources,
    ))
}
