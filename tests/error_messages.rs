//! Each cause printed once: an error's message names its cause, and the
//! same cause is not chained again as its `source()`, so `{err:#}` (how the
//! CLI prints errors) shows it once. The cases issue reports named, through
//! the library and through the binary.

use std::error::Error;
use std::path::Path;
use std::process::Command;

use imgrep::digest::Digest;
use imgrep::sign::manifests::{Manifests, PackageVersion};
use imgrep::sign::trust::Trust;
use imgrep::statement::{ImageDigests, Statement};

/// The error as the CLI prints it: each message of the chain, joined.
fn shown(err: &(dyn Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut cause = err.source();
    while let Some(c) = cause {
        parts.push(c.to_string());
        cause = c.source();
    }
    parts.join(": ")
}

#[track_caller]
fn once(text: &str, cause: &str) {
    assert_eq!(
        text.matches(cause).count(),
        1,
        "{cause:?} not once in: {text}"
    );
}

fn statement() -> Statement {
    Statement::new(
        "pkg",
        "1",
        Digest::of(b"input"),
        ImageDigests {
            manifest: Digest::of(b"manifest"),
            diff_ids: vec![Digest::of(b"layer")],
        },
        Vec::new(),
    )
    .unwrap()
}

#[test]
fn a_missing_keyring_names_the_os_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let err = Trust::default()
        .add_keyring(&dir.path().join("manifests/keys"))
        .unwrap_err();
    let text = shown(&err);
    assert!(text.contains("manifests/keys"), "{text}");
    once(&text, "No such file or directory");
}

#[test]
fn a_non_canonical_statement_says_so_once() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = Manifests::new(dir.path());
    let path = manifests.write_statement(&statement()).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.push(b'\n');
    std::fs::write(&path, bytes).unwrap();
    let pv = PackageVersion {
        name: "pkg".into(),
        version: "1".into(),
    };
    let err = manifests.read_statement(&pv).unwrap_err();
    let text = shown(&err);
    assert!(text.contains(&path.display().to_string()), "{text}");
    once(&text, "not in canonical form");
}

#[test]
fn store_and_layout_errors_name_their_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = imgrep::store::Store::open(&file.join("store"))
        .err()
        .unwrap();
    once(&shown(&err), "Not a directory");

    std::fs::write(dir.path().join("oci-layout"), b"{not json").unwrap();
    let err = imgrep::oci::Layout::open(dir.path()).unwrap_err();
    let text = shown(&err);
    assert!(text.contains("invalid JSON"), "{text}");
    once(&text, "key must be a string");
}

#[test]
fn the_cli_prints_the_cause_once() {
    // `verify --repo-keys` with no manifests/keys beside a real statement.
    let dir = tempfile::tempdir().unwrap();
    Manifests::new(dir.path().join("manifests"))
        .write_statement(&statement())
        .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_imgrep"))
        .args([
            "verify",
            "--repo-keys",
            "--threshold",
            "1",
            "--signatures-only",
            "pkg",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{}", Path::new("manifests/keys").display())),
        "{err}"
    );
    once(&err, "No such file or directory");
}
