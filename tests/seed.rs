//! The hex0 seed (seeds/): its source, its binary and its behaviour.
//!
//! Everything here runs everywhere (CI included): it needs only the committed
//! seed and an x86_64 Linux kernel. The checks against upstream's seed and
//! source run when IMGREP_STAGE0_SOURCES names the stage0-posix release tree.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use proptest::prelude::*;
use sha2::{Digest as _, Sha256};

const SEED: &str = "seeds/hex0-amd64";
const SEED_SOURCE: &str = "seeds/hex0-amd64.hex0";
const DESCRIPTOR: &str = "seeds/seeds.toml";
const UPSTREAM_SEED_SHA256: &str =
    "66c95985e668f20f2465c2b876f83fef066fd7c8c2dd3adb51a969f2d7120c8b";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// hex0 as stage0-posix's reference (High Level Prototypes/hex0.c) defines it,
/// written independently of the seed: pairs of hex digits become bytes, `#`
/// and `;` start a comment up to a line feed or carriage return, everything
/// else is ignored, a dangling last digit is dropped.
fn reference_hex0(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut high: Option<u8> = None;
    let mut bytes = input.iter();
    while let Some(&c) = bytes.next() {
        let digit = match c {
            b'#' | b';' => {
                for &d in bytes.by_ref() {
                    if d == b'\n' || d == b'\r' {
                        break;
                    }
                }
                continue;
            }
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => continue,
        };
        match high.take() {
            Some(h) => out.push(h << 4 | digit),
            None => high = Some(digit),
        }
    }
    out
}

/// A private copy of the committed seed, executable whatever the checkout did
/// to its mode, in its own temporary directory.
struct Seed {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Seed {
    fn new() -> Seed {
        let dir = tempfile::tempdir().expect("temporary directory");
        let bin = dir.path().join("hex0");
        fs::copy(repo(SEED), &bin).expect("copy the seed");
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod the seed");
        Seed { dir, bin }
    }

    fn run(&self, args: &[&Path]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .env_clear()
            .current_dir(self.dir.path())
            .output()
            .expect("run the seed")
    }

    /// Assembles `input` with the seed and returns what it wrote.
    fn assemble(&self, input: &[u8]) -> Vec<u8> {
        let src = self.dir.path().join("in.hex0");
        let dst = self.dir.path().join("out");
        fs::write(&src, input).unwrap();
        let _ = fs::remove_file(&dst);
        let out = self.run(&[&src, &dst]);
        assert!(
            out.status.success(),
            "hex0 failed on {:?}: {:?}",
            String::from_utf8_lossy(input),
            out.status
        );
        fs::read(&dst).unwrap()
    }
}

#[test]
fn source_read_by_an_independent_reader_is_the_committed_binary() {
    let source = fs::read(repo(SEED_SOURCE)).unwrap();
    let binary = fs::read(repo(SEED)).unwrap();
    assert_eq!(reference_hex0(&source), binary);
}

#[test]
fn seed_assembles_its_own_source_into_itself() {
    let seed = Seed::new();
    let out = seed.dir.path().join("hex0-again");
    let status = seed.run(&[&repo(SEED_SOURCE), &out]).status;
    assert!(status.success(), "{status:?}");
    assert_eq!(fs::read(&out).unwrap(), fs::read(repo(SEED)).unwrap());
    // Created 0700 as upstream's hex0 does, so the next stage can run it.
    let mode = fs::metadata(&out).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700);
    // The output runs, and is itself a working hex0.
    let third = seed.dir.path().join("hex0-third");
    let status = Command::new(&out)
        .arg(repo(SEED_SOURCE))
        .arg(&third)
        .status()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(fs::read(&third).unwrap(), fs::read(repo(SEED)).unwrap());
}

#[test]
fn seed_needs_nothing_but_the_kernel() {
    // An empty root: no libc, no loader, no /dev, no /proc, no shell.
    let root = tempfile::tempdir().unwrap();
    fs::copy(repo(SEED), root.path().join("hex0")).unwrap();
    fs::set_permissions(root.path().join("hex0"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.path().join("in"), "48 69 0A  # \"Hi\\n\"\n").unwrap();
    let out = Command::new("unshare")
        .args(["-r", "-m", "-p", "-f", "-n", "--root"])
        .arg(root.path())
        .args(["--wd=/", "/hex0", "in", "out"])
        .env_clear()
        .output();
    let out = match out {
        Ok(out) => out,
        Err(err) => {
            eprintln!("SKIPPED: seed_needs_nothing_but_the_kernel: cannot run unshare(1): {err}");
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.starts_with("unshare:") {
        eprintln!("SKIPPED: seed_needs_nothing_but_the_kernel: no user namespaces here: {stderr}");
        return;
    }
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert_eq!(fs::read(root.path().join("out")).unwrap(), b"Hi\n");
    assert_eq!(
        fs::read_dir(root.path()).unwrap().count(),
        3,
        "only hex0, in, out"
    );
}

#[test]
fn comments_case_and_other_characters() {
    let seed = Seed::new();
    let cases: &[(&str, &[u8])] = &[
        ("", b""),
        ("\n\n  \t\n", b""),
        ("00 ff FF 7f 80", &[0x00, 0xff, 0xff, 0x7f, 0x80]),
        ("aBcD eF", &[0xab, 0xcd, 0xef]),
        ("41 # 42 43\n44", &[0x41, 0x44]),
        ("41 ; 42 43\n44", &[0x41, 0x44]),
        ("41 ;; ## ;\n42", &[0x41, 0x42]),
        // A carriage return ends a comment too (CRLF sources).
        ("41 # x\r\n42 ; y\r43", &[0x41, 0x42, 0x43]),
        // A comment running to the end of input, without a newline.
        ("41 # 42", &[0x41]),
        // The two digits of a byte pair up across anything else.
        ("4\n1 4 # c\n2 :4=3.", &[0x41, 0x42, 0x43]),
        // Not hex digits: ignored, including letters past f and punctuation.
        ("gGhHzZ xX-+=:!@$%^&*()[]{}<>'\"\\|/?,.~`_ 4g1", &[0x41]),
        // A dangling last digit is dropped.
        ("41 4", &[0x41]),
        ("\u{e9}41\u{ff}", &[0x41]),
    ];
    for (input, expected) in cases {
        assert_eq!(
            reference_hex0(input.as_bytes()),
            *expected,
            "reference on {input:?}"
        );
        assert_eq!(
            seed.assemble(input.as_bytes()),
            *expected,
            "seed on {input:?}"
        );
    }
}

#[test]
fn every_byte_value_is_handled() {
    // Each byte 0..=255 around a known pair: only hex digits may change the output.
    let seed = Seed::new();
    let mut input = Vec::new();
    for b in 0..=255u8 {
        input.extend_from_slice(&[b'4', b, b'2', b'\n']);
    }
    assert_eq!(seed.assemble(&input), reference_hex0(&input));
}

#[test]
fn seed_fails_clearly_on_bad_files() {
    let seed = Seed::new();
    let missing = seed.dir.path().join("missing.hex0");
    let out = seed.dir.path().join("never");
    let status = seed.run(&[&missing, &out]).status;
    assert_ne!(status.code(), Some(0), "a missing input must fail");
    assert!(!out.exists(), "no output when the input cannot be opened");

    let input = seed.dir.path().join("in.hex0");
    fs::write(&input, "41").unwrap();
    let status = seed
        .run(&[&input, &seed.dir.path().join("no/such/dir/out")])
        .status;
    assert_ne!(
        status.code(),
        Some(0),
        "an output that cannot be created must fail"
    );

    if Path::new("/dev/full").exists() {
        let status = seed.run(&[&input, Path::new("/dev/full")]).status;
        assert_ne!(status.code(), Some(0), "a failed write must fail");
    }

    let status = seed.run(&[]).status;
    assert_ne!(status.code(), Some(0), "no arguments must fail");
    let status = seed.run(&[&input]).status;
    assert_ne!(
        status.code(),
        Some(0),
        "a missing output argument must fail"
    );
}

#[test]
fn seed_is_small_and_matches_its_descriptor() {
    let binary = fs::read(repo(SEED)).unwrap();
    assert!(binary.len() <= 256, "{} bytes", binary.len());

    let text = fs::read_to_string(repo(DESCRIPTOR)).unwrap();
    let doc: toml::Table = toml::from_str(&text).unwrap();
    let seeds = doc["seed"].as_array().expect("[[seed]] entries");
    let ours = seeds
        .iter()
        .find(|s| s["name"].as_str() == Some("hex0-amd64"))
        .expect("hex0-amd64 in seeds.toml");
    assert_eq!(ours["path"].as_str(), Some(SEED));
    assert_eq!(ours["source"].as_str(), Some(SEED_SOURCE));
    assert_eq!(ours["size"].as_integer(), Some(binary.len() as i64));
    assert_eq!(ours["sha256"].as_str(), Some(sha256_hex(&binary).as_str()));
    let upstream = seeds
        .iter()
        .find(|s| s["name"].as_str() == Some("stage0-posix-hex0-seed-amd64"))
        .expect("upstream seed in seeds.toml");
    assert_eq!(upstream["sha256"].as_str(), Some(UPSTREAM_SEED_SHA256));
    assert_eq!(upstream["size"].as_integer(), Some(229));

    // The recipe that uses our seed pins the same bytes.
    let recipe = fs::read_to_string(repo("stage0/stage0-hex0/package.toml")).unwrap();
    assert!(recipe.contains(&format!("sha256 = \"{}\"", sha256_hex(&binary))));
}

#[test]
fn elf_header_describes_the_file() {
    let b = fs::read(repo(SEED)).unwrap();
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    assert_eq!(&b[..4], b"\x7fELF");
    assert_eq!((b[4], b[5]), (2, 1), "64-bit little endian");
    assert_eq!(u16_at(16), 2, "ET_EXEC");
    assert_eq!(u16_at(18), 0x3e, "x86_64");
    assert_eq!(u16_at(56), 1, "one program header");
    let (phoff, entry) = (u64_at(32) as usize, u64_at(24));
    let (vaddr, filesz, memsz) = (u64_at(phoff + 16), u64_at(phoff + 32), u64_at(phoff + 40));
    assert_eq!(filesz as usize, b.len(), "the segment is the whole file");
    assert_eq!(memsz, filesz);
    assert!(
        entry >= vaddr + 120 && entry < vaddr + filesz,
        "entry inside the code"
    );
}

/// The release tree named by IMGREP_STAGE0_SOURCES, or None after saying why.
fn upstream_tree(test: &str) -> Option<PathBuf> {
    match std::env::var_os("IMGREP_STAGE0_SOURCES") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => {
            eprintln!(
                "SKIPPED: {test}: IMGREP_STAGE0_SOURCES is not set \
                 (the stage0-posix 1.9.1 release tree, see docs/bootstrap.md)"
            );
            None
        }
    }
}

#[test]
fn seed_assembles_upstream_hex0_into_upstream_seed() {
    let Some(tree) = upstream_tree("seed_assembles_upstream_hex0_into_upstream_seed") else {
        return;
    };
    let seed = Seed::new();
    let out = seed.dir.path().join("upstream-hex0");
    let status = seed
        .run(&[&tree.join("AMD64/hex0_AMD64.hex0"), &out])
        .status;
    assert!(status.success(), "{status:?}");
    let built = fs::read(&out).unwrap();
    assert_eq!(sha256_hex(&built), UPSTREAM_SEED_SHA256);
    assert_eq!(
        built,
        fs::read(tree.join("bootstrap-seeds/POSIX/AMD64/hex0-seed")).unwrap()
    );
}

#[test]
fn upstream_seed_assembles_our_source_into_our_seed() {
    let Some(tree) = upstream_tree("upstream_seed_assembles_our_source_into_our_seed") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let upstream = dir.path().join("hex0-seed");
    fs::copy(
        tree.join("bootstrap-seeds/POSIX/AMD64/hex0-seed"),
        &upstream,
    )
    .unwrap();
    fs::set_permissions(&upstream, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        sha256_hex(&fs::read(&upstream).unwrap()),
        UPSTREAM_SEED_SHA256
    );
    let out = dir.path().join("ours");
    let status = Command::new(&upstream)
        .arg(repo(SEED_SOURCE))
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(fs::read(&out).unwrap(), fs::read(repo(SEED)).unwrap());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// On any input, the seed agrees with the reference reader.
    #[test]
    fn seed_agrees_with_the_reference(input in proptest::collection::vec(
        prop_oneof![
            4 => proptest::sample::select(b"0123456789abcdefABCDEF".to_vec()),
            1 => proptest::sample::select(b"#;\n\r \tgGxX".to_vec()),
            1 => any::<u8>(),
        ],
        0..300,
    )) {
        let seed = Seed::new();
        prop_assert_eq!(seed.assemble(&input), reference_hex0(&input));
    }
}
