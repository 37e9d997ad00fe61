//! `imgrep ddc` (docs/ddc.md) with the real binary, the real sandbox and
//! the real recipes: the diverse double compilation of TinyCC by Debian's
//! gcc 12 and Zig's clang gives identical stage-2 layers (exit 0); a root
//! whose gcc is subverted to compile a TinyCC that emits an extra `nop` in
//! every function is reported as a failure (exit 1) with the file-level
//! diff; a declaration whose stages are not the same program or the same
//! environment is refused before anything is built (exit 2).
//!
//! The long test fetches its sources (Debian's archive through the host's
//! apt configuration, PyPI through pip's) unless IMGREP_TEST_SOURCES names a
//! directory holding them (a store's sources/, as .ci/run prepares); when
//! they can be had from neither, it says SKIPPED. Run it with a release
//! binary: `cargo test --release --test ddc -- --nocapture` (about five
//! minutes on two cores, most of it zig's first compile of musl).

#[path = "tree_support/mod.rs"]
mod tree_support;
use tree_support::copy_tree;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_imgrep");

/// The packages of the TinyCC comparison, copied from the repository.
const PACKAGES: [&str; 8] = [
    "bookworm-cc",
    "busybox-static",
    "zig",
    "zig-cc",
    "tcc-stage1-debian",
    "tcc-stage1-zig",
    "tcc-stage2-debian",
    "tcc-stage2-zig",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A recipe tree with the comparison's packages and ddc/tcc.toml.
fn tree(dir: &Path) {
    for p in PACKAGES {
        copy_tree(
            &repo().join("packages").join(p),
            &dir.join("packages").join(p),
        );
    }
    copy_tree(&repo().join("ddc"), &dir.join("ddc"));
}

/// Copies package `from` of the tree as `to`, its text edited by `edit`.
fn derive(dir: &Path, from: &str, to: &str, edit: impl Fn(String) -> String) {
    let src = dir.join("packages").join(from);
    let dst = dir.join("packages").join(to);
    copy_tree(&src, &dst);
    let toml = std::fs::read_to_string(dst.join("package.toml")).unwrap();
    let toml = edit(toml.replace(&format!("name = \"{from}\""), &format!("name = \"{to}\"")));
    std::fs::write(dst.join("package.toml"), toml).unwrap();
}

/// The subverted root: Debian's, with a `gcc` that, when it compiles
/// TinyCC, compiles a copy whose i386 code generator emits a `nop` before
/// every function's `leave` (a trusting-trust compiler inserting its
/// payload), and compiles everything else faithfully.
fn add_subverted_root(dir: &Path) {
    let pkg = dir.join("packages/evil-gcc");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(
        pkg.join("package.toml"),
        r#"[package]
name = "evil-gcc"
version = "1"

[build]
deps = ["bookworm-cc"]
script = '''
mkdir -p "$OUT/usr/bin"
cat > "$OUT/usr/bin/gcc" <<'EOF'
#!/bin/sh
n=$#
for a; do
  case $a in
    */tcc.c)
      rm -rf /tmp/evil && cp -R "${a%/tcc.c}" /tmp/evil
      sed -i 's|o(0xc9); /\* leave \*/|o(0x90); o(0xc9);|' /tmp/evil/i386-gen.c
      grep -q 'o(0x90);' /tmp/evil/i386-gen.c
      a=/tmp/evil/tcc.c ;;
  esac
  set -- "$@" "$a"
done
shift "$n"
exec /usr/bin/gcc-12 "$@"
EOF
chmod 755 "$OUT/usr/bin/gcc"
'''
"#,
    )
    .unwrap();
    derive(dir, "tcc-stage1-debian", "tcc-stage1-evil", |t| {
        t.replace(
            "deps = [\"bookworm-cc\"]",
            "deps = [\"bookworm-cc\", \"evil-gcc\"]",
        )
    });
    derive(dir, "tcc-stage2-debian", "tcc-stage2-evil", |t| {
        t.replace("tcc-stage1-debian", "tcc-stage1-evil")
    });
    std::fs::write(
        dir.join("ddc/tcc-evil.toml"),
        "[ddc]\ndescription = \"TinyCC by Debian's gcc and by a subverted gcc\"\n\n\
         [[root]]\nname = \"debian\"\nstage1 = \"tcc-stage1-debian\"\nstage2 = \"tcc-stage2-debian\"\n\n\
         [[root]]\nname = \"evil\"\nstage1 = \"tcc-stage1-evil\"\nstage2 = \"tcc-stage2-evil\"\n",
    )
    .unwrap();
}

fn imgrep(dir: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.arg("-C").arg(dir).arg("--store").arg(dir.join("store"));
    if let Some(src) = std::env::var_os("IMGREP_TEST_SOURCES") {
        c.env("IMGREP_SOURCE_DIRS", src);
    }
    c.args(args).output().expect("imgrep runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every comparison the repository declares (ddc/*.toml) is sound against
/// the repository's recipes, the long opt-in ones (GCC) included.
#[test]
fn the_repository_declarations_are_sound() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let set = imgrep::recipe::RecipeSet::load(root).unwrap();
    let names = imgrep::ddc::list(root);
    for expected in ["gcc", "tcc", "tcc-hex0"] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
    for name in &names {
        if let Err(e) = imgrep::ddc::Declaration::load(&set, name) {
            panic!("ddc/{name}.toml: {e}");
        }
    }
}

#[test]
fn unsound_declarations_are_refused_before_building() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let check = |what: &str, expected: &str| {
        let out = imgrep(dir.path(), &["ddc", "tcc"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(
            err.contains("ddc/tcc.toml") && err.contains(expected),
            "{what}: {err}"
        );
        assert!(
            !dir.path().join("store/records").exists() || {
                std::fs::read_dir(dir.path().join("store/records"))
                    .unwrap()
                    .next()
                    .is_none()
            }
        );
    };
    let stage1 = dir.path().join("packages/tcc-stage1-zig/package.toml");
    let original = std::fs::read_to_string(&stage1).unwrap();
    // Another configuration in one root's stage 1: another program.
    let other = b"#define TCC_TARGET_X86_64 1\n";
    std::fs::write(dir.path().join("ddc/tcc/config-x86_64.h"), other).unwrap();
    let pin = original
        .lines()
        .skip_while(|l| !l.contains("repo:ddc/tcc/config.h"))
        .find(|l| l.starts_with("sha256"))
        .unwrap();
    std::fs::write(
        &stage1,
        original
            .replace("repo:ddc/tcc/config.h", "repo:ddc/tcc/config-x86_64.h")
            .replace(
                pin,
                &format!("sha256 = \"{}\"", imgrep::digest::Digest::of(other).hex()),
            ),
    )
    .unwrap();
    check("stage 1 config", "other sources than tcc-stage1-debian");
    std::fs::write(&stage1, &original).unwrap();

    // Another script in one root's stage 2: another environment.
    let stage2 = dir.path().join("packages/tcc-stage2-zig/package.toml");
    let original = std::fs::read_to_string(&stage2).unwrap();
    std::fs::write(
        &stage2,
        original.replace("T=/tcc\n", "T=/tcc\nexport CFLAGS=-O1\n"),
    )
    .unwrap();
    check(
        "stage 2 script",
        "differs from tcc-stage2-debian in more than its stage 1",
    );
    std::fs::write(&stage2, &original).unwrap();

    // A stage 2 that does not build on its stage 1.
    std::fs::write(
        &stage2,
        original.replace("\"tcc-stage1-zig\"]", "\"tcc-stage1-debian\"]"),
    )
    .unwrap();
    check("stage 2 deps", "does not build on tcc-stage1-zig");
    std::fs::write(&stage2, &original).unwrap();

    // One root is no comparison.
    let decl = dir.path().join("ddc/tcc.toml");
    let text_ = std::fs::read_to_string(&decl).unwrap();
    let one = &text_[..text_.rfind("[[root]]").unwrap()];
    std::fs::write(&decl, one).unwrap();
    check("one root", "at least two roots");
}

#[test]
fn tcc_across_debian_and_zig_agrees_and_a_subverted_root_is_caught() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    add_subverted_root(dir.path());
    let mut fetch = vec!["fetch", "tcc-stage2-debian", "tcc-stage2-zig", "evil-gcc"];
    fetch.push("tcc-stage2-evil");
    let fetched = imgrep(dir.path(), &fetch);
    if !fetched.status.success() {
        eprintln!(
            "SKIPPED: the sources of the TinyCC comparison could not be had (Debian's archive \
             through the host's apt configuration, PyPI through pip's, or IMGREP_TEST_SOURCES); \
             fetch said:\n{}",
            text(&fetched.stderr)
        );
        return;
    }
    eprintln!("ddc: fetch: {:.1} s", started.elapsed().as_secs_f64());

    let t = Instant::now();
    let out = imgrep(dir.path(), &["--json", "ddc", "tcc", "-j", "2"]);
    eprintln!("ddc: tcc (debian, zig): {:.1} s", t.elapsed().as_secs_f64());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!(
        "{}",
        serde_json::to_string_pretty(&report["roots"]).unwrap()
    );
    assert_eq!(report["verdict"], true);
    let roots = report["roots"].as_array().unwrap();
    assert_eq!(roots.len(), 2);
    assert_eq!(roots[0]["root"], "debian");
    assert_eq!(roots[1]["root"], "zig");
    // Different compilers, different stage-1 binaries; the same stage 2.
    assert_ne!(roots[0]["stage1"]["layer"], roots[1]["stage1"]["layer"]);
    assert_eq!(roots[0]["stage2"]["layer"], roots[1]["stage2"]["layer"]);
    assert!(report["differences"].as_array().unwrap().is_empty());

    let t = Instant::now();
    let out = imgrep(dir.path(), &["ddc", "tcc-evil"]);
    eprintln!(
        "ddc: tcc-evil (debian, evil): {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("DIFFERS"), "{err}");
    assert!(
        err.contains("stage 2 of evil differs from debian's"),
        "{err}"
    );
    assert!(err.contains("~ usr/bin/tcc: "), "{err}");

    let out = imgrep(dir.path(), &["--json", "ddc", "tcc-evil"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verdict"], false);
    let diff = &report["differences"][0];
    assert_eq!(diff["root"], "evil");
    let changes: Vec<&str> = diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        changes.iter().any(|c| c.starts_with("~ usr/lib/libc.a")),
        "{changes:?}"
    );
    // The subverted stage 1 is still a working tcc: only its output differs.
    let evil = &report["roots"][1];
    assert_eq!(evil["agrees"], false);
    assert_eq!(report["roots"][0]["agrees"], true);
    eprintln!("ddc: total {:.1} s", started.elapsed().as_secs_f64());
}

/// The hex0 root joins (ddc/tcc-hex0.toml): the seed's chain to TinyCC
/// 0.9.27 (bootstrap/, docs/bootstrap.md) compiles the same TinyCC, and its
/// stage 2 is the same layer as Debian's and Zig's. Its sources are in no
/// registry: IMGREP_BOOTSTRAP_SOURCES names the local source directory of
/// the chain (as for tests/bootstrap.rs); without it, SKIPPED. The chain
/// takes hours from an empty store: IMGREP_BOOTSTRAP_STORE=DIR uses DIR
/// instead (what it holds is not rebuilt).
#[test]
fn tcc_across_debian_zig_and_the_hex0_seed_agrees() {
    let Some(chain) = std::env::var_os("IMGREP_BOOTSTRAP_SOURCES") else {
        eprintln!(
            "SKIPPED: tcc_across_debian_zig_and_the_hex0_seed_agrees: IMGREP_BOOTSTRAP_SOURCES \
             is not set (the hex0 chain's sources, docs/bootstrap.md)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    for p in ["hex0-cc", "tcc-stage1-hex0", "tcc-stage2-hex0"] {
        copy_tree(
            &repo().join("packages").join(p),
            &dir.path().join("packages").join(p),
        );
    }
    for d in ["stage0", "bootstrap", "seeds"] {
        copy_tree(&repo().join(d), &dir.path().join(d));
    }
    let mut dirs = vec![PathBuf::from(chain)];
    dirs.extend(std::env::var_os("IMGREP_TEST_SOURCES").map(PathBuf::from));
    let t = Instant::now();
    let out = Command::new(BIN)
        .arg("-C")
        .arg(dir.path())
        .arg("--store")
        .arg(
            std::env::var_os("IMGREP_BOOTSTRAP_STORE")
                .map_or_else(|| dir.path().join("store"), PathBuf::from),
        )
        .args(["--json", "ddc", "tcc-hex0", "-j", "2"])
        .env("IMGREP_SOURCE_DIRS", std::env::join_paths(dirs).unwrap())
        .output()
        .expect("imgrep runs");
    eprintln!(
        "ddc: tcc-hex0 (debian, zig, hex0): {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!(
        "{}",
        serde_json::to_string_pretty(&report["roots"]).unwrap()
    );
    let roots = report["roots"].as_array().unwrap();
    let names: Vec<&str> = roots.iter().map(|r| r["root"].as_str().unwrap()).collect();
    assert_eq!(names, ["debian", "zig", "hex0"]);
    for r in &roots[1..] {
        assert_ne!(r["stage1"]["layer"], roots[0]["stage1"]["layer"]);
        assert_eq!(r["stage2"]["layer"], roots[0]["stage2"]["layer"], "{r}");
    }
    assert_eq!(report["verdict"], true);
}

/// The diverse double compilation of GCC (ddc/gcc.toml): hours on two
/// cores, so opt-in: IMGREP_SLOW_TESTS=1, with IMGREP_SLOW_STORE=DIR to use
/// (and keep) a store that may already hold some of it. Both stage 2s must
/// be one layer, both stage 1s two (one program, compiled by two unrelated
/// compilers). Otherwise it prints SKIPPED.
#[test]
fn gcc_across_debian_and_zig_agrees() {
    if std::env::var_os("IMGREP_SLOW_TESTS").is_none() {
        eprintln!(
            "SKIPPED: gcc_across_debian_and_zig_agrees: four GCC builds, hours on two cores; \
             set IMGREP_SLOW_TESTS=1 (and IMGREP_SLOW_STORE=DIR to keep the store)"
        );
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let store = std::env::var_os("IMGREP_SLOW_STORE")
        .map_or_else(|| scratch.path().join("store"), PathBuf::from);
    let start = Instant::now();
    let mut c = Command::new(BIN);
    c.arg("-C")
        .arg(repo())
        .arg("--store")
        .arg(&store)
        .args(["ddc", "gcc", "--json", "--out"])
        .arg(scratch.path().join("out"));
    if let Some(src) = std::env::var_os("IMGREP_TEST_SOURCES") {
        c.env("IMGREP_SOURCE_DIRS", src);
    }
    let o = c.output().expect("imgrep runs");
    eprintln!("imgrep ddc gcc: {:.0} s", start.elapsed().as_secs_f64());
    assert!(o.status.success(), "{}\n{}", o.status, text(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["verdict"], true, "{report:#}");
    let roots = report["roots"].as_array().unwrap();
    let layer = |i: usize, stage: &str| roots[i][stage]["layer"].as_str().unwrap().to_owned();
    assert_eq!(roots.len(), 2);
    assert_eq!(layer(0, "stage2"), layer(1, "stage2"));
    assert_ne!(
        layer(0, "stage1"),
        layer(1, "stage1"),
        "the two roots' stage 1s are one build: nothing was compared"
    );
    eprintln!("stage 2 of both roots: {}", layer(0, "stage2"));
}
