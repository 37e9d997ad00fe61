//! The full-source chain after stage0 (bootstrap/, docs/bootstrap.md): the
//! x86 stage0-posix chain rooted on our AMD64 seed, M2-Planet 1.11.0, GNU Mes
//! 0.24.2 and MesCC, janneke's TinyCC 0.9.26 bootstrapped on itself and
//! TinyCC 0.9.27 compiled by it, each image checked against live-bootstrap's
//! published sha256; then musl 1.2.5 compiled by that TinyCC and TinyCC
//! rebuilt on musl, checked by its own fixed point and a program it
//! compiles and runs.
//!
//! Without sources (CI) the recipes are checked as data: they validate, the
//! chain plans in order, and every external check is wired the same way.
//! With IMGREP_STAGE0_SOURCES (the stage0-posix 1.9.1 tree) the two x86
//! seeds are compared; with IMGREP_BOOTSTRAP_SOURCES (a local source
//! directory holding every source of the chain, docs/bootstrap.md) the
//! chain is built, a tampered expected checksum fails with exit 3, and
//! `imgrep reproduce` rebuilds the last image. Without them those tests
//! print SKIPPED and return.

#[path = "tree_support/mod.rs"]
mod tree_support;
use tree_support::copy_tree;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The chain in build order, ending at the last image built so far.
const CHAIN: [&str; 12] = [
    "stage0-x86-hex0",
    "stage0-x86-seed-tools",
    "stage0-x86-m2",
    "stage0-x86-mescc-tools-extra",
    "m2-planet",
    "mes-m2",
    "mescc",
    "tcc-mescc",
    "tcc-boot",
    "tcc-mes",
    "musl-tcc",
    "tcc",
];
/// Recipes checked against live-bootstrap, with how many of its sha256 each
/// compares (28: mes-0.24.2.checksums, tcc-0.9.26.checksums and
/// tcc-0.9.27.checksums, whole).
const CHECKED: [(&str, usize); 5] = [
    ("mes-m2", 1),
    ("mescc", 13),
    ("tcc-mescc", 1),
    ("tcc-boot", 12),
    ("tcc-mes", 1),
];
const LAST: &str = "tcc";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn imgrep(root: &Path, store: &Path, sources: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgrep"));
    cmd.arg("-C").arg(root).args(args);
    cmd.env("IMGREP_STORE", store).env("IMGREP_OFFLINE", "1");
    match sources {
        Some(dir) => cmd.env("IMGREP_SOURCE_DIRS", dir),
        None => cmd.env_remove("IMGREP_SOURCE_DIRS"),
    };
    cmd.output().expect("run imgrep")
}

fn text(out: &Output) -> String {
    format!(
        "{:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A scratch copy of the recipe tree (stage0/, bootstrap/, seeds/).
fn scratch() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("repo");
    for dir in ["stage0", "bootstrap", "seeds"] {
        copy_tree(&repo(dir), &root.join(dir));
    }
    let store = tmp.path().join("store");
    fs::create_dir_all(&store).unwrap();
    (tmp, root, store)
}

#[test]
fn chain_validates_and_plans_in_order_without_sources() {
    let (_tmp, root, store) = scratch();
    let out = imgrep(&root, &store, None, &["--json", "graph", LAST]);
    assert!(out.status.success(), "{}", text(&out));
    let graph: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let order: Vec<&str> = graph["order"]
        .as_array()
        .expect("order")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(order, CHAIN, "the chain, dependencies first");

    // Planning reads recipes and the store only: nothing is fetched.
    let out = imgrep(&root, &store, None, &["plan", LAST]);
    assert!(out.status.success(), "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stdout);
    let mut at = 0;
    for name in CHAIN {
        let line = format!("build   {name} ");
        let found = plan[at..]
            .find(&line)
            .unwrap_or_else(|| panic!("{name} not planned in order:\n{plan}"));
        at += found + line.len();
    }
}

#[test]
fn every_external_check_is_wired_the_same_way() {
    let mut total = 0;
    for (name, count) in CHECKED {
        let dir = repo("bootstrap").join(name);
        let recipe: toml::Value =
            toml::from_str(&fs::read_to_string(dir.join("package.toml")).unwrap()).unwrap();
        // The checksum file is a source of the recipe, pinned like any other.
        let sources = recipe["source"].as_array().unwrap();
        let check = sources
            .iter()
            .find(|s| s.get("path").and_then(|p| p.as_str()) == Some("live-bootstrap.sha256"))
            .unwrap_or_else(|| panic!("{name}: no live-bootstrap.sha256 source"));
        assert_eq!(check["dest"].as_str(), Some("check"), "{name}");
        let file = fs::read(dir.join("live-bootstrap.sha256")).unwrap();
        let pin = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&file));
        assert_eq!(
            check["sha256"].as_str(),
            Some(pin.as_str()),
            "{name}: stale pin"
        );
        let lines: Vec<&str> = std::str::from_utf8(&file).unwrap().lines().collect();
        assert_eq!(lines.len(), count, "{name}");
        for line in &lines {
            let (hash, path) = line.split_once("  ").expect("sha256sum format");
            assert!(
                hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
                "{name}: {line}"
            );
            assert!(
                path.starts_with("usr/"),
                "{name}: {line}: relative to the image root"
            );
        }
        total += lines.len();
        // ... and checked by the last step, from the image root.
        let steps = recipe["build"]["steps"].as_array().unwrap();
        let last = steps.last().unwrap();
        assert_eq!(last["workdir"].as_str(), Some("/out"), "{name}");
        let argv: Vec<&str> = last["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            argv,
            ["/bin/sha256sum", "-c", "/build/check/live-bootstrap.sha256"],
            "{name}"
        );
    }
    assert_eq!(total, 28);
}

fn recipe(name: &str) -> toml::Value {
    let file = repo("bootstrap").join(name).join("package.toml");
    toml::from_str(&fs::read_to_string(file).unwrap()).unwrap()
}

fn argv(step: &toml::Value) -> Vec<&str> {
    step.get("argv")
        .unwrap_or(step)
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

#[test]
fn musl_is_compiled_twice_from_one_list_and_archived_whole() {
    let recipe = recipe("musl-tcc");
    let steps: Vec<Vec<&str>> = recipe["build"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(argv)
        .collect();
    // The sources each pass's compiler compiles (`tcc -c FLAGS FILES...`).
    let sources = |tcc: &str| -> Vec<&str> {
        let mut all: Vec<&str> = steps
            .iter()
            .filter(|a| a[0] == tcc && a[1] == "-c")
            .flat_map(|a| a.iter().copied())
            .filter(|x| [".c", ".s", ".S"].iter().any(|e| x.ends_with(e)))
            .collect();
        all.sort_unstable();
        all
    };
    let pass1 = sources("/usr/bin/tcc");
    assert_eq!(pass1.len(), 1345);
    assert_eq!(
        pass1,
        sources("/build/pass1/tcc"),
        "both passes compile one list"
    );
    assert!(!pass1.iter().any(|s| s.contains("/src/complex/")));
    assert!(!pass1
        .iter()
        .any(|s| s.contains("/src/math/i386/") && s.ends_with(".c")));
    // Both archives hold the objects those steps write, crt files aside.
    let mut objects: Vec<String> = pass1
        .iter()
        .filter(|s| !s.contains("/crt/"))
        .map(|s| {
            let rel = s
                .trim_start_matches("/build/musl-1.2.5/")
                .replace("/i386/", "/");
            format!("{}.o", rel.rsplit_once('.').unwrap().0)
        })
        .collect();
    objects.sort_unstable();
    let archives: Vec<&Vec<&str>> = steps.iter().filter(|a| a[1] == "-ar").collect();
    assert_eq!(archives.len(), 2);
    for archive in archives {
        let mut members = archive[4..].to_vec();
        members.sort_unstable();
        assert_eq!(members, objects);
    }
}

#[test]
fn tcc_on_musl_checks_its_fixed_point_and_a_program_it_runs() {
    let recipe = recipe("tcc");
    let dir = repo("bootstrap/tcc");
    for source in recipe["source"].as_array().unwrap() {
        let Some(path) = source.get("path").and_then(|p| p.as_str()) else {
            continue;
        };
        let file = fs::read(dir.join(path)).unwrap();
        let pin = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&file));
        assert_eq!(
            source["sha256"].as_str(),
            Some(pin.as_str()),
            "{path}: stale pin"
        );
    }
    // The expected output is the line hello.c writes, named as it is run.
    let line = "hello, 42 3.25 1.41421 musl\n";
    let expected = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(line.as_bytes()));
    assert_eq!(
        fs::read_to_string(dir.join("hello.sha256")).unwrap(),
        format!("{expected}  hello.out\n")
    );
    let steps: Vec<Vec<&str>> = recipe["build"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(argv)
        .collect();
    let n = steps.len();
    assert_eq!(
        steps[n - 3][0],
        "/out/usr/bin/tcc",
        "the installed tcc compiles hello"
    );
    assert_eq!(steps[n - 2], ["/build/hello", "/build/hello.out"]);
    assert_eq!(
        steps[n - 1],
        ["/bin/sha256sum", "-c", "/build/check/hello.sha256"]
    );
    assert!(steps.contains(&vec!["/bin/sha256sum", "-c", "/build/tcc-3.sha256"]));
}

fn env_dir(var: &str, test: &str, what: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(dir) => Some(PathBuf::from(dir)),
        None => {
            eprintln!("SKIPPED: {test}: {var} is not set ({what}, docs/bootstrap.md)");
            None
        }
    }
}

fn manifest_digests(out: &Output) -> Vec<(String, String)> {
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    report
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_owned(),
                b["manifest_digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn x86_hex0_from_our_amd64_seed_and_upstreams_x86_seed_is_one_image() {
    let test = "x86_hex0_from_our_amd64_seed_and_upstreams_x86_seed_is_one_image";
    let Some(tree) = env_dir("IMGREP_STAGE0_SOURCES", test, "the stage0-posix 1.9.1 tree") else {
        return;
    };
    let (tmp, root, store) = scratch();
    let sources = tmp.path().join("sources");
    fs::create_dir_all(&sources).unwrap();
    std::os::unix::fs::symlink(
        &tree,
        sources.join("eedb65918580b1566e4299b10eb731be7a4891a786604166518ecf76606d34e2"),
    )
    .unwrap();
    // Both seeds are called hex0-seed upstream: offer the x86 one by sha256.
    let seed = fs::read(tree.join("bootstrap-seeds/POSIX/x86/hex0-seed")).unwrap();
    let hex = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&seed));
    fs::write(sources.join(hex), &seed).unwrap();
    let out = imgrep(
        &root,
        &store,
        Some(&sources),
        &[
            "--json",
            "build",
            "stage0-x86-hex0",
            "stage0-x86-hex0-upstream",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let built = manifest_digests(&out);
    assert_eq!(built.len(), 2, "{built:?}");
    assert_eq!(built[0].1, built[1].1, "two seeds, one image: {built:?}");
}

#[test]
fn chain_builds_matches_live_bootstrap_rejects_tampering_and_reproduces() {
    let test = "chain_builds_matches_live_bootstrap_rejects_tampering_and_reproduces";
    let Some(sources) = env_dir(
        "IMGREP_BOOTSTRAP_SOURCES",
        test,
        "a source directory with every source of the chain",
    ) else {
        return;
    };
    let (_tmp, root, store) = scratch();
    // Every image, each checked against live-bootstrap inside its build.
    let out = imgrep(&root, &store, Some(&sources), &["--json", "build", LAST]);
    assert!(out.status.success(), "{}", text(&out));
    let built = manifest_digests(&out);
    let names: Vec<&str> = built.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, CHAIN);

    // A tampered expected checksum fails the build that checks it (exit 3).
    let dir = root.join("bootstrap/mes-m2");
    let file = fs::read_to_string(dir.join("live-bootstrap.sha256")).unwrap();
    let tampered = file.replacen("148ce096", "148ce097", 1);
    assert_ne!(file, tampered);
    fs::write(dir.join("live-bootstrap.sha256"), &tampered).unwrap();
    let pin = |t: &str| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(t.as_bytes()));
    let recipe = fs::read_to_string(dir.join("package.toml")).unwrap();
    fs::write(
        dir.join("package.toml"),
        recipe.replace(&pin(&file), &pin(&tampered)),
    )
    .unwrap();
    let out = imgrep(&root, &store, Some(&sources), &["build", "mes-m2"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sha256sum -c /build/check/live-bootstrap.sha256"),
        "{err}"
    );
    fs::write(dir.join("live-bootstrap.sha256"), &file).unwrap();
    fs::write(dir.join("package.toml"), &recipe).unwrap();

    // An independent rebuild in a fresh store gives the same digests.
    let out = imgrep(&root, &store, Some(&sources), &["reproduce", LAST]);
    assert!(out.status.success(), "{}", text(&out));
}
