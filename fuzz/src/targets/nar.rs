//! The NAR hasher (`src/nar.rs`) over generated trees: its hash must equal
//! the sha256 of a NAR serialised here from the generated model (written
//! from the format's definition, independently of `src/nar.rs`), the
//! sha256 of its own `write_nar` output, and `nix hash path` when Nix is
//! installed (`IMGREP_FUZZ_NIX=0` skips Nix, for speed).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use arbitrary::Unstructured;
use imgrep::digest::Digest;
use imgrep::nar;

use crate::gen::{self, Node};
use crate::scratch;

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
    out.resize(out.len() + (8 - s.len() % 8) % 8, 0);
}

fn put_node(out: &mut Vec<u8>, node: &Node) {
    put_str(out, b"(");
    put_str(out, b"type");
    match node {
        Node::File { executable, data } => {
            put_str(out, b"regular");
            if *executable {
                put_str(out, b"executable");
                put_str(out, b"");
            }
            put_str(out, b"contents");
            put_str(out, data);
        }
        Node::Symlink(target) => {
            put_str(out, b"symlink");
            put_str(out, b"target");
            put_str(out, target);
        }
        Node::Dir(entries) => {
            put_str(out, b"directory");
            let mut sorted: Vec<_> = entries.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, child) in sorted {
                put_str(out, b"entry");
                put_str(out, b"(");
                put_str(out, b"name");
                put_str(out, name);
                put_str(out, b"node");
                put_node(out, child);
                put_str(out, b")");
            }
        }
    }
    put_str(out, b")");
}

/// The NAR serialisation of a generated tree.
pub fn reference_nar(node: &Node) -> Vec<u8> {
    let mut out = Vec::new();
    put_str(&mut out, b"nix-archive-1");
    put_node(&mut out, node);
    out
}

fn materialise(path: &Path, node: &Node) {
    match node {
        Node::File { executable, data } => {
            fs::write(path, data).unwrap();
            let mode = if *executable { 0o755 } else { 0o644 };
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        }
        Node::Symlink(target) => symlink(OsStr::from_bytes(target), path).unwrap(),
        Node::Dir(entries) => {
            fs::create_dir(path).unwrap();
            for (name, child) in entries {
                materialise(&path.join(OsStr::from_bytes(name)), child);
            }
        }
    }
}

fn nix_available() -> bool {
    static NIX: OnceLock<bool> = OnceLock::new();
    *NIX.get_or_init(|| {
        std::env::var_os("IMGREP_FUZZ_NIX").is_none_or(|v| v != "0")
            && Command::new("nix")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
    })
}

/// `nix hash path` of `path`, if Nix is installed.
pub fn nix_hash(path: &Path) -> Option<String> {
    if !nix_available() {
        return None;
    }
    let out = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "hash",
            "path",
            "--type",
            "sha256",
        ])
        .arg(path)
        .output()
        .expect("running nix hash path");
    assert!(
        out.status.success(),
        "nix hash path {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap().trim().to_owned())
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let top = match u.int_in_range(0..=7u8) {
        Ok(0) => Node::File {
            executable: u.arbitrary().unwrap_or(false),
            data: gen::bytes(&mut u, 3000).unwrap_or_default().to_vec(),
        },
        Ok(1) => Node::Symlink(b"target".to_vec()),
        _ => match gen::tree(&mut u, 3) {
            Ok(t) => t,
            Err(_) => return,
        },
    };
    let path = scratch::fresh("nar").join("top");
    materialise(&path, &top);
    let reference = reference_nar(&top);
    let ours = nar::hash_path(&path).expect("hashing a generated tree");
    let mut written = Vec::new();
    nar::write_nar(&path, &mut written).unwrap();
    if written != reference {
        let at = written
            .iter()
            .zip(&reference)
            .position(|(a, b)| a != b)
            .unwrap_or(written.len().min(reference.len()));
        panic!("write_nar differs from the reference NAR at byte {at} for {top:?}");
    }
    assert_eq!(
        ours.as_bytes(),
        Digest::of(&reference).as_bytes(),
        "hash_path is not the sha256 of the NAR"
    );
    if let Some(nix) = nix_hash(&path) {
        assert_eq!(nix, ours.to_string(), "nix hash path differs for {top:?}");
    }
}
