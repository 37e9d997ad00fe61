//! The NAR tree hash against the real Nix (Debian's nix-bin): the same
//! bytes as `nix-store --dump`, the same hash as `nix-hash --type sha256`
//! and the same SRI string as `nix hash path`. Skipped, saying so, where
//! nix-bin is not installed.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use imgrep::nar;

fn run_nix(args: &[&str], path: &Path) -> Option<Vec<u8>> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .arg(path)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "{args:?} {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out.stdout)
}

/// A tree with every case NAR distinguishes: names sorted by bytes (case,
/// punctuation, UTF-8), executable bits (only the owner's counts), empty
/// files and directories, a file larger than the copy buffer and not a
/// multiple of 8, symbolic links (to files, directories, nowhere).
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("dir/nested/deeper")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    for name in ["a", "a.b", "a-b", "A", "B", "é", "with space", "_", "~"] {
        fs::write(root.join(name), name.as_bytes()).unwrap();
    }
    fs::write(root.join("dir/nested/deeper/empty-file"), b"").unwrap();
    let big: Vec<u8> = (0..1_234_567u32).map(|i| (i % 253) as u8).collect();
    fs::write(root.join("dir/big"), &big).unwrap();
    for (name, mode) in [
        ("x-owner", 0o744),
        ("x-group-only", 0o654),
        ("x-all", 0o755),
        ("ro", 0o444),
    ] {
        fs::write(root.join(name), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(root.join(name), fs::Permissions::from_mode(mode)).unwrap();
    }
    symlink("a", root.join("link-file")).unwrap();
    symlink("dir/nested", root.join("link-dir")).unwrap();
    symlink("does/not/exist", root.join("link-dangling")).unwrap();
    symlink("x".repeat(300), root.join("link-long")).unwrap();
}

#[test]
fn nar_matches_nix() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    make_tree(&tree);

    let Some(dump) = run_nix(&["nix-store", "--dump"], &tree) else {
        eprintln!("SKIPPED: nar_matches_nix: nix-store not found (apt-get install nix-bin)");
        return;
    };
    let mut ours = Vec::new();
    nar::write_nar(&tree, &mut ours).unwrap();
    assert!(ours == dump, "NAR bytes differ from nix-store --dump");

    let hash = nar::hash_path(&tree).unwrap();
    let hex = run_nix(&["nix-hash", "--type", "sha256"], &tree).unwrap();
    assert_eq!(String::from_utf8(hex).unwrap().trim(), hash.hex());
    let sri = run_nix(
        &[
            "nix",
            "--extra-experimental-features",
            "nix-command",
            "hash",
            "path",
            "--type",
            "sha256",
        ],
        &tree,
    )
    .unwrap();
    assert_eq!(String::from_utf8(sri).unwrap().trim(), hash.to_string());

    // A single file and a single symlink at the top, as Nix serialises them.
    for p in [
        tree.join("dir/big"),
        tree.join("x-owner"),
        tree.join("link-dir"),
    ] {
        let hex = run_nix(&["nix-hash", "--type", "sha256"], &p).unwrap();
        let ours = nar::hash_path(&p).unwrap();
        assert_eq!(
            String::from_utf8(hex).unwrap().trim(),
            ours.hex(),
            "{}",
            p.display()
        );
    }
}

#[test]
fn nar_refuses_special_files() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let err = nar::hash_path(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("fifo") && err.contains("unsupported file type"),
        "{err}"
    );
}
