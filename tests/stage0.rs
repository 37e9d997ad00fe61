//! The stage0 recipes (stage0/) built by `imgrep build`, for real.
//!
//! What these tests rely on (docs/cli.md, docs/fetch.md, docs/recipes.md):
//! - `imgrep --json build -C DIR NAME...` builds the named packages of
//!   DIR/stage0, prints each built image's name, input digest, manifest digest
//!   and layer diff_ids on stdout, and tags every image NAME:VERSION in the one
//!   OCI layout DIR/out;
//! - `IMGREP_STORE` moves the store (a fresh one per test), `IMGREP_OFFLINE=1`
//!   keeps imgrep off the network;
//! - `IMGREP_SOURCE_DIRS` names local source directories: a file pin is found
//!   by the file name of its URL, a `tree` pin as a directory named after the
//!   NAR hash in hex; the hash decides either way;
//! - a source URL `repo:PATH` is the file PATH of the recipe tree (the -C DIR).
//!
//! The chain needs the stage0-posix 1.9.1 release tree: point
//! IMGREP_STAGE0_SOURCES at it (docs/bootstrap.md says how to rebuild it from
//! public git history). Without it those tests print SKIPPED and return.

#[path = "tree_support/mod.rs"]
mod tree_support;
use tree_support::copy_tree;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const VERSION: &str = "1.9.1";
/// The NAR sha256 of the release tree in hex (the recipes' `tree` pin).
const RELEASE_NAR_HEX: &str = "eedb65918580b1566e4299b10eb731be7a4891a786604166518ecf76606d34e2";
const UPSTREAM_SEED: &str = "bootstrap-seeds/POSIX/AMD64/hex0-seed";
/// The images built after hex0, in chain order.
const CHAIN: [&str; 3] = ["stage0-seed-tools", "stage0-m2", "stage0-mescc-tools-extra"];

/// The tools of stage0-m2 and of stage0-mescc-tools-extra: the 19 binaries of
/// amd64.answers, and wrap, which upstream builds but does not list.
const STAGE0_M2_TOOLS: [&str; 7] = [
    "M1",
    "M2-Mesoplanet",
    "M2-Planet",
    "blood-elf",
    "get_machine",
    "hex2",
    "kaem",
];
const EXTRA_TOOLS: [&str; 13] = [
    "catm",
    "chmod",
    "cp",
    "match",
    "mkdir",
    "replace",
    "rm",
    "sha256sum",
    "unbz2",
    "ungz",
    "untar",
    "unxz",
    "wrap",
];

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
}

/// What `imgrep --json build` reports for one image.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Built {
    input_digest: String,
    manifest_digest: String,
    diff_ids: Vec<String>,
    cached: bool,
}

/// A scratch recipe tree (a copy of stage0/ and seeds/), its store and its
/// local source directory.
struct Workspace {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    store: PathBuf,
    sources: PathBuf,
}

impl Workspace {
    fn new() -> Workspace {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let root = tmp.path().join("repo");
        let store = tmp.path().join("store");
        let sources = tmp.path().join("sources");
        for dir in [&root, &store, &sources] {
            fs::create_dir_all(dir).unwrap();
        }
        copy_tree(&repo("stage0"), &root.join("stage0"));
        copy_tree(&repo("seeds"), &root.join("seeds"));
        Workspace {
            _tmp: tmp,
            root,
            store,
            sources,
        }
    }

    /// Offers the release tree (under its NAR hash) and upstream's seed (under
    /// its URL's file name) as local sources.
    fn with_release(self, tree: &Path) -> Workspace {
        std::os::unix::fs::symlink(tree, self.sources.join(RELEASE_NAR_HEX)).unwrap();
        fs::copy(tree.join(UPSTREAM_SEED), self.sources.join("hex0-seed")).unwrap();
        self
    }

    fn build(&self, names: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_imgrep"))
            .arg("--json")
            .arg("build")
            .arg("-C")
            .arg(&self.root)
            .args(names)
            .env("IMGREP_STORE", &self.store)
            .env("IMGREP_SOURCE_DIRS", &self.sources)
            .env("IMGREP_OFFLINE", "1")
            .output()
            .expect("run imgrep")
    }

    /// Builds `names` and returns what imgrep reports, by package name.
    fn build_ok(&self, names: &[&str]) -> BTreeMap<String, Built> {
        let out = self.build(names);
        assert!(
            out.status.success(),
            "imgrep build {names:?}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "build --json: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        let text = |v: &serde_json::Value| v.as_str().expect("a string").to_owned();
        report
            .as_array()
            .expect("a list of images")
            .iter()
            .map(|b| {
                let built = Built {
                    input_digest: text(&b["input_digest"]),
                    manifest_digest: text(&b["manifest_digest"]),
                    diff_ids: b["diff_ids"].as_array().unwrap().iter().map(text).collect(),
                    cached: b["cached"].as_bool().unwrap(),
                };
                (text(&b["name"]), built)
            })
            .collect()
    }

    fn recipe(&self, name: &str) -> PathBuf {
        self.root.join("stage0").join(name).join("package.toml")
    }

    /// Rewrites a recipe of the scratch tree, insisting that `from` is there.
    fn edit_recipe(&self, name: &str, from: &str, to: &str) -> String {
        let path = self.recipe(name);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{name}: {from:?} not in the recipe");
        fs::write(&path, text.replace(from, to)).unwrap();
        text
    }

    /// The one OCI layout every image is tagged in.
    fn layout(&self) -> PathBuf {
        self.root.join("out")
    }
}

fn json(path: &Path) -> serde_json::Value {
    let text = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    layout.join("blobs/sha256").join(hex)
}

/// The manifest of the image tagged `reference` in an OCI image layout.
fn manifest(layout: &Path, reference: &str) -> serde_json::Value {
    let index = json(&layout.join("index.json"));
    let entry = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == reference)
        .unwrap_or_else(|| panic!("no image tagged {reference} in {}", layout.display()));
    json(&blob(layout, entry["digest"].as_str().unwrap()))
}

/// The compressed layer digests of the image tagged `reference`.
fn layer_digests(layout: &Path, reference: &str) -> Vec<String> {
    manifest(layout, reference)["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// Regular files of the package image tagged `reference` (one layer):
/// path -> (mode, contents).
fn layer_files(layout: &Path, reference: &str) -> BTreeMap<String, (u32, Vec<u8>)> {
    let layers = layer_digests(layout, reference);
    assert_eq!(layers.len(), 1, "{reference}: a package image is one layer");
    let file = fs::File::open(blob(layout, &layers[0])).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut files = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mode = entry.header().mode().unwrap();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            files.insert(path, (mode, data));
        }
    }
    files
}

fn release_tree(test: &str) -> Option<PathBuf> {
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

/// A recipe with only `repo:` sources and exec-form steps, no dependency.
fn empty_root_recipe(name: &str, sources: &str, steps: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "1"
description = "exec-form steps in an empty root"
license = "GPL-3.0-or-later"
homepage = "https://example.invalid"
{sources}
[build]
deps = []
steps = {steps}
"#
    )
}

/// `[[source]]` tables: the seed as /build/seed/hex0 and its source as
/// /build/seed/hex0.hex0, both `repo:` files of the recipe tree.
fn seed_sources() -> String {
    let seed = fs::read(repo("seeds/hex0-amd64")).unwrap();
    let source = fs::read(repo("seeds/hex0-amd64.hex0")).unwrap();
    format!(
        r#"
[[source]]
urls = ["repo:seeds/hex0-amd64"]
sha256 = "{}"
unpack = false
dest = "seed"
file = "hex0"
executable = true

[[source]]
urls = ["repo:seeds/hex0-amd64.hex0"]
sha256 = "{}"
unpack = false
dest = "seed"
file = "hex0.hex0"
"#,
        sha256_hex(&seed),
        sha256_hex(&source)
    )
}

#[test]
fn seed_rebuilds_itself_in_an_empty_root() {
    // No upstream source: an exec-form step in a root with no shell, no libc
    // and no dependency, the seed being both the tool and (as source) the input.
    let ws = Workspace::new();
    let seed = fs::read(repo("seeds/hex0-amd64")).unwrap();
    let sources = seed_sources();
    let dir = ws.root.join("stage0/seed-selfhost");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("package.toml"),
        empty_root_recipe(
            "seed-selfhost",
            &sources,
            r#"[["/build/seed/hex0", "/build/seed/hex0.hex0", "/out/hex0"]]"#,
        ),
    )
    .unwrap();
    let built = ws.build_ok(&["seed-selfhost"]);
    assert!(!built["seed-selfhost"].cached, "a fresh store builds");
    let files = layer_files(&ws.layout(), "seed-selfhost:1");
    assert_eq!(files.keys().collect::<Vec<_>>(), ["hex0"]);
    let (mode, data) = &files["hex0"];
    assert_eq!(data, &seed, "the seed assembled its own source into itself");
    assert_eq!(mode & 0o111, 0o111, "hex0 stays executable: {mode:o}");

    // The same root holds no shell: the sandbox refuses a step that needs one
    // before starting it (a recipe error, exit 2) and names the program.
    let dir = ws.root.join("stage0/needs-a-shell");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("package.toml"),
        empty_root_recipe("needs-a-shell", "", r#"[["/bin/sh", "-c", "true"]]"#),
    )
    .unwrap();
    let out = ws.build(&["needs-a-shell"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("needs-a-shell") && stderr.contains("/bin/sh or its interpreter not found"),
        "the package and the missing program are named: {stderr}"
    );
}

#[test]
fn a_failing_step_stops_the_package_and_is_named() {
    // All steps of a package run in one sandbox; the one that fails is still
    // named, and the steps after it do not run.
    let ws = Workspace::new();
    let dir = ws.root.join("stage0/fails-midway");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("package.toml"),
        empty_root_recipe(
            "fails-midway",
            &seed_sources(),
            r#"[
  ["/build/seed/hex0", "/build/seed/hex0.hex0", "/out/first"],
  ["/build/seed/hex0", "/build/no-such-input", "/out/second"],
  ["/build/seed/hex0", "/build/seed/hex0.hex0", "/out/third"],
]"#,
        ),
    )
    .unwrap();
    let out = ws.build(&["fails-midway"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("fails-midway 1: step 2 of 3 failed")
            && stderr.contains("command: /build/seed/hex0 /build/no-such-input /out/second"),
        "the failing step is named: {stderr}"
    );
    // The failed build is kept for `imgrep shell`: the first step's output is
    // there, the third step never ran.
    let kept = ws.store.join("failed/fails-midway/out");
    assert!(kept.join("first").is_file(), "{}", kept.display());
    assert!(!kept.join("third").exists());
}

#[test]
fn two_seeds_give_one_hex0_image() {
    let Some(tree) = release_tree("two_seeds_give_one_hex0_image") else {
        return;
    };
    let ws = Workspace::new().with_release(&tree);
    let built = ws.build_ok(&["stage0-hex0", "stage0-hex0-upstream"]);
    let (ours, theirs) = (&built["stage0-hex0"], &built["stage0-hex0-upstream"]);
    // The seeds differ (252 and 229 bytes); what they make does not: both
    // recipes are fixed outputs of the image stage0-hex0.
    assert_eq!(ours.diff_ids, theirs.diff_ids);
    assert_eq!(ours.manifest_digest, theirs.manifest_digest, "one image");
    assert_ne!(ours.input_digest, theirs.input_digest, "two recipes");
    let layout = ws.layout();
    let files = layer_files(&layout, &format!("stage0-hex0:{VERSION}"));
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["hex0"],
        "the seed is not an output"
    );
    assert_eq!(files["hex0"].1, fs::read(tree.join(UPSTREAM_SEED)).unwrap());
    // Which seed made it is recorded beside the image, not in it.
    for (name, built) in [("stage0-hex0", ours), ("stage0-hex0-upstream", theirs)] {
        let entry = index_entry(&layout, &format!("{name}:{VERSION}"));
        assert_eq!(entry["annotations"]["dev.imgrep.recipe"], name);
        assert_eq!(
            entry["annotations"]["dev.imgrep.input-digest"],
            built.input_digest.as_str()
        );
    }
    let sources = |name: &str| {
        index_entry(&layout, &format!("{name}:{VERSION}"))["annotations"]["dev.imgrep.sources"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(sources("stage0-hex0").contains("repo:seeds/hex0-amd64"));
    assert!(sources("stage0-hex0-upstream").contains("bootstrap-seeds"));

    // A seed that assembles something else is caught by the declared output.
    ws.edit_recipe(
        "stage0-hex0-upstream",
        r#""./AMD64/hex0_AMD64.hex0""#,
        r#""./AMD64/hex1_AMD64.hex0""#,
    );
    let out = ws.build(&["stage0-hex0-upstream"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("stage0/stage0-hex0-upstream/package.toml: [output] diff_id")
            && stderr.contains(&format!("expected: {}", ours.diff_ids[0])),
        "the recipe and the expected layer are named: {stderr}"
    );
}

#[test]
fn chain_checks_answers_does_not_depend_on_the_seed_and_rejects_a_mismatch() {
    let Some(tree) =
        release_tree("chain_checks_answers_does_not_depend_on_the_seed_and_rejects_a_mismatch")
    else {
        return;
    };
    let ws = Workspace::new().with_release(&tree);
    let layout = ws.layout();

    // 1. The chain on our seed. The last check step of stage0-mescc-tools-extra
    // is `sha256sum -c amd64.answers`: a successful build means all 19 binaries
    // matched the release's answers.
    let ours = ws.build_ok(&["stage0-mescc-tools-extra"]);
    for name in CHAIN {
        assert!(!ours[name].cached, "{name}: a fresh store builds");
    }
    let m2 = layer_files(&layout, &format!("stage0-m2:{VERSION}"));
    let extra = layer_files(&layout, &format!("stage0-mescc-tools-extra:{VERSION}"));
    let names =
        |files: &BTreeMap<String, (u32, Vec<u8>)>| files.keys().cloned().collect::<Vec<_>>();
    let expect = |tools: &[&str]| {
        let mut v: Vec<String> = tools.iter().map(|t| format!("bin/{t}")).collect();
        v.sort();
        v
    };
    assert_eq!(names(&m2), expect(&STAGE0_M2_TOOLS));
    assert_eq!(names(&extra), expect(&EXTRA_TOOLS));
    for (path, (mode, _)) in m2.iter().chain(extra.iter()) {
        assert_eq!(mode & 0o111, 0o111, "{path} is executable: {mode:o}");
    }
    // The same bytes as the answers, checked here too, outside the build.
    let answers = fs::read_to_string(tree.join("amd64.answers")).unwrap();
    assert_eq!(answers.lines().count(), 19);
    for line in answers.lines() {
        let (sum, path) = line.split_once("  ").expect("sha256sum line");
        let name = path.strip_prefix("AMD64/").expect("AMD64/bin/...");
        let (_, data) = m2.get(name).or_else(|| extra.get(name)).expect(name);
        assert_eq!(sha256_hex(data), sum, "{name}");
    }

    // 2. The chain rooted on upstream's seed, in the same store: its hex0
    // recipe runs and gives the same image, so every image above it has the
    // same input digest and is the cached one.
    let original = ws.edit_recipe(
        "stage0-seed-tools",
        r#"deps = ["stage0-hex0"]"#,
        r#"deps = ["stage0-hex0-upstream"]"#,
    );
    let theirs = ws.build_ok(&["stage0-mescc-tools-extra"]);
    assert!(!theirs.contains_key("stage0-hex0"));
    let hex0 = &theirs["stage0-hex0-upstream"];
    assert!(!hex0.cached, "upstream's seed ran");
    assert_eq!(hex0.manifest_digest, ours["stage0-hex0"].manifest_digest);
    for name in CHAIN {
        assert!(theirs[name].cached, "{name}: the same inputs, cached");
        assert_eq!(
            ours[name],
            Built {
                cached: false,
                ..theirs[name].clone()
            },
            "{name}"
        );
    }

    // 3. The same chain on upstream's seed in a fresh store: built from
    // scratch, every image comes out byte for byte the same.
    let fresh = Workspace::new().with_release(&tree);
    fresh.edit_recipe(
        "stage0-seed-tools",
        r#"deps = ["stage0-hex0"]"#,
        r#"deps = ["stage0-hex0-upstream"]"#,
    );
    let rebuilt = fresh.build_ok(&["stage0-mescc-tools-extra"]);
    assert_eq!(
        rebuilt["stage0-hex0-upstream"].manifest_digest,
        ours["stage0-hex0"].manifest_digest
    );
    for name in CHAIN {
        assert!(!rebuilt[name].cached, "{name}: a fresh store builds");
        assert_eq!(
            ours[name],
            Built {
                cached: false,
                ..rebuilt[name].clone()
            },
            "{name}"
        );
    }
    fs::write(ws.recipe("stage0-seed-tools"), original).unwrap();

    // 4. Swap two tools before the check: the build must fail, with exit code
    // 3, in the answers step. stage0-seed-tools and stage0-m2 come from the
    // store; only mescc-tools-extra runs again.
    ws.edit_recipe(
        "stage0-mescc-tools-extra",
        r#""/bin/M1", "./AMD64/bin/M1""#,
        r#""/bin/M1", "./AMD64/bin/hex2""#,
    );
    ws.edit_recipe(
        "stage0-mescc-tools-extra",
        r#""/bin/hex2", "./AMD64/bin/hex2""#,
        r#""/bin/hex2", "./AMD64/bin/M1""#,
    );
    let out = ws.build(&["stage0-mescc-tools-extra"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("sha256sum -c amd64.answers"),
        "the failing step is named: {stderr}"
    );
}

/// A fixed-output recipe in an empty root: the seed assembles the `repo:`
/// file `input` (holding `text`) into /out/hex0, which must be the layer
/// `diff_id`; the image it provides is `hex0`.
fn fixed_hex0_recipe(name: &str, input: &str, text: &[u8], diff_id: &str) -> String {
    let seed = fs::read(repo("seeds/hex0-amd64")).unwrap();
    let sources = format!(
        r#"
[[source]]
urls = ["repo:seeds/hex0-amd64"]
sha256 = "{}"
unpack = false
dest = "seed"
file = "hex0"
executable = true

[[source]]
urls = ["repo:{input}"]
sha256 = "{}"
unpack = false
dest = "in"
file = "hex0.hex0"
"#,
        sha256_hex(&seed),
        sha256_hex(text)
    );
    let recipe = empty_root_recipe(
        name,
        &sources,
        r#"[["/build/seed/hex0", "/build/in/hex0.hex0", "/out/hex0"]]"#,
    );
    format!("{recipe}\n[output]\nimage = \"hex0\"\ndiff_id = \"{diff_id}\"\n")
}

/// The hex digits of a hex0 source, without its comments: another text
/// that assembles into the same bytes.
fn bare_hex0(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let code = line.split(['#', ';']).next().unwrap_or_default();
        out.extend(code.chars().filter(char::is_ascii_hexdigit));
        out.push('\n');
    }
    out
}

/// The manifest descriptor index.json holds for `reference`.
fn index_entry(layout: &Path, reference: &str) -> serde_json::Value {
    let index = json(&layout.join("index.json"));
    index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == reference)
        .unwrap_or_else(|| panic!("no image tagged {reference} in {}", layout.display()))
        .clone()
}

fn write_recipe(ws: &Workspace, name: &str, text: &str) {
    let dir = ws.root.join("stage0").join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("package.toml"), text).unwrap();
}

#[test]
fn fixed_outputs_of_one_image_are_one_image_and_one_cache_key() {
    // No upstream source: two recipes reach the seed's bytes from two
    // different texts (its annotated source, and the bare digits of it).
    let ws = Workspace::new();
    let annotated = fs::read_to_string(repo("seeds/hex0-amd64.hex0")).unwrap();
    let bare = bare_hex0(&annotated);
    fs::write(ws.root.join("seeds/bare.hex0"), &bare).unwrap();
    let recipe_a = |diff_id: &str| {
        let input = "seeds/hex0-amd64.hex0";
        fixed_hex0_recipe("hex0-annotated", input, annotated.as_bytes(), diff_id)
    };
    let placeholder = format!("sha256:{}", "0".repeat(64));
    write_recipe(&ws, "hex0-annotated", &recipe_a(&placeholder));

    // As with Nix's fake hashes: a wrong declaration fails the build with
    // exit 3, naming the recipe, what it declares and what came out.
    let out = ws.build(&["hex0-annotated"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("stage0/hex0-annotated/package.toml: [output] diff_id")
            && stderr.contains(&format!("expected: {placeholder}")),
        "{stderr}"
    );
    let got = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("got:"))
        .unwrap_or_else(|| panic!("no `got:` line: {stderr}"))
        .trim()
        .to_owned();
    assert!(got.starts_with("sha256:") && got != placeholder, "{got}");
    let index = fs::read_to_string(ws.layout().join("index.json")).unwrap_or_default();
    assert!(
        !index.contains("hex0-annotated"),
        "a mismatch is never tagged"
    );
    assert!(
        ws.store.join("failed/hex0-annotated/out/hex0").is_file(),
        "the mismatching output is kept to look at"
    );

    write_recipe(&ws, "hex0-annotated", &recipe_a(&got));
    let recipe_b = fixed_hex0_recipe("hex0-bare", "seeds/bare.hex0", bare.as_bytes(), &got);
    write_recipe(&ws, "hex0-bare", &recipe_b);
    let user = |dep: &str| {
        let seed = fs::read(repo("seeds/hex0-amd64.hex0")).unwrap();
        empty_root_recipe(
            "uses-hex0",
            &format!(
                "\n[[source]]\nurls = [\"repo:seeds/hex0-amd64.hex0\"]\nsha256 = \"{}\"\nunpack = false\n",
                sha256_hex(&seed)
            ),
            r#"[["/hex0", "/build/hex0-amd64.hex0", "/out/again"]]"#,
        )
        .replace("deps = []", &format!("deps = [\"{dep}\"]"))
    };
    write_recipe(&ws, "uses-hex0", &user("hex0-annotated"));

    let built = ws.build_ok(&["hex0-annotated", "uses-hex0"]);
    let files = layer_files(&ws.layout(), "uses-hex0:1");
    assert_eq!(
        files["again"].1,
        fs::read(repo("seeds/hex0-amd64")).unwrap()
    );

    // The dependant, re-pointed at the other recipe of the same image, keeps
    // its cache key: `plan` says so before anything runs, and the build runs
    // only the other recipe.
    write_recipe(&ws, "uses-hex0", &user("hex0-bare"));
    let plan = Command::new(env!("CARGO_BIN_EXE_imgrep"))
        .args(["plan", "-C"])
        .arg(&ws.root)
        .arg("uses-hex0")
        .env("IMGREP_STORE", &ws.store)
        .env("IMGREP_OFFLINE", "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&plan.stdout).into_owned() + &String::from_utf8_lossy(&plan.stderr);
    assert!(plan.status.success(), "{text}");
    assert!(
        text.contains("build   hex0-bare")
            && text.contains("its declared output")
            && text.contains("cached  uses-hex0"),
        "{text}"
    );
    let again = ws.build_ok(&["uses-hex0"]);
    let (a, b) = (&built["hex0-annotated"], &again["hex0-bare"]);
    assert!(!b.cached, "the other recipe ran");
    assert_eq!(a.diff_ids, vec![got.clone()]);
    assert_eq!(a.manifest_digest, b.manifest_digest, "one image");
    assert_ne!(
        a.input_digest, b.input_digest,
        "two recipes, two cache entries"
    );
    assert!(again["uses-hex0"].cached);
    assert_eq!(
        again["uses-hex0"].input_digest,
        built["uses-hex0"].input_digest
    );
    assert_eq!(
        again["uses-hex0"].manifest_digest,
        built["uses-hex0"].manifest_digest
    );
    // The image says what it is, not how it was made.
    let manifest = json(&blob(&ws.layout(), &a.manifest_digest));
    let config = json(&blob(
        &ws.layout(),
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    let labels = &config["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "hex0");
    assert_eq!(labels["dev.imgrep.fixed-output"], got.as_str());
    assert!(labels.get("dev.imgrep.input-digest").is_none(), "{labels}");
    assert!(labels.get("dev.imgrep.sources").is_none(), "{labels}");
    // How it was made is recorded beside it, per recipe.
    for (name, built) in [("hex0-annotated", a), ("hex0-bare", b)] {
        let entry = index_entry(&ws.layout(), &format!("{name}:1"));
        assert_eq!(entry["digest"], built.manifest_digest.as_str());
        assert_eq!(entry["annotations"]["dev.imgrep.recipe"], name);
        assert_eq!(
            entry["annotations"]["dev.imgrep.input-digest"],
            built.input_digest.as_str()
        );
    }
}

#[test]
fn recipes_providing_one_image_must_declare_one_output() {
    let ws = Workspace::new();
    let one = format!("sha256:{}", "1".repeat(64));
    let two = format!("sha256:{}", "2".repeat(64));
    let input = "seeds/hex0-amd64.hex0";
    let text = fs::read(repo(input)).unwrap();
    write_recipe(
        &ws,
        "hex0-a",
        &fixed_hex0_recipe("hex0-a", input, &text, &one),
    );
    write_recipe(
        &ws,
        "hex0-b",
        &fixed_hex0_recipe("hex0-b", input, &text, &two),
    );
    // A plain recipe named like the image cannot be claimed by others.
    write_recipe(&ws, "plain", &empty_root_recipe("plain", "", r#"[["/x"]]"#));
    let claims_plain = fixed_hex0_recipe("claims-plain", input, &text, &one)
        .replace("image = \"hex0\"", "image = \"plain\"");
    write_recipe(&ws, "claims-plain", &claims_plain);
    let out = Command::new(env!("CARGO_BIN_EXE_imgrep"))
        .args(["list", "-C"])
        .arg(&ws.root)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let line = |file: &str| -> String {
        stderr
            .lines()
            .find(|l| l.contains(file))
            .unwrap_or_else(|| panic!("nothing about {file}: {stderr}"))
            .to_owned()
    };
    let b = line("stage0/hex0-b/package.toml:");
    assert!(
        b.contains("[output]") && b.contains("provides image `hex0`") && b.contains("in: diff_id"),
        "{b}"
    );
    let claims = line("stage0/claims-plain/package.toml:");
    assert!(
        claims.contains("output.image `plain`") && claims.contains("not a fixed-output recipe"),
        "{claims}"
    );
}
#[test]
fn release_tree_has_what_the_recipes_read() {
    // Runs without `imgrep build`: every file a step reads from the tree exists
    // in the release, and every program a step runs was built before it, by an
    // earlier step or by a dependency image (whose /out is the root).
    let Some(tree) = release_tree("release_tree_has_what_the_recipes_read") else {
        return;
    };
    let mut images: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in [
        "stage0-hex0",
        "stage0-hex0-upstream",
        "stage0-seed-tools",
        "stage0-m2",
        "stage0-mescc-tools-extra",
    ] {
        let path = repo(&format!("stage0/{name}/package.toml"));
        let recipe: toml::Table = toml::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        let build = recipe["build"].as_table().unwrap();
        // Seeds come as sources; everything else from the dependency images.
        let mut available = vec!["/build/seed/hex0".to_owned()];
        for dep in build["deps"].as_array().unwrap() {
            let dep = dep.as_str().unwrap();
            let outputs = images
                .get(dep)
                .unwrap_or_else(|| panic!("{name}: {dep} comes later"));
            available.extend(outputs.iter().map(|p| p["/out".len()..].to_owned()));
        }
        let mut outputs = Vec::new();
        for (i, step) in build["steps"].as_array().unwrap().iter().enumerate() {
            let (argv, workdir) = match step {
                toml::Value::Array(a) => (a, "/build"),
                toml::Value::Table(t) => (
                    t["argv"].as_array().unwrap(),
                    t["workdir"].as_str().unwrap(),
                ),
                other => panic!("{name}: step {i} is {other}"),
            };
            let argv: Vec<String> = argv
                .iter()
                .map(|a| {
                    let a = a.as_str().unwrap();
                    if a.starts_with('-')
                        || a.starts_with('/')
                        || !a.contains('.') && !a.contains('/')
                    {
                        a.to_owned()
                    } else {
                        normalize(&format!("{workdir}/{a}"))
                    }
                })
                .collect();
            assert!(
                available.contains(&argv[0]),
                "{name}: step {i} runs {} before anything built it",
                argv[0]
            );
            for arg in &argv[1..] {
                let made_here = arg.starts_with("/out/")
                    || arg.starts_with("/build/AMD64/artifact/")
                    || arg.starts_with("/build/AMD64/bin/");
                if made_here {
                    // An output, or an input an earlier step made: either way
                    // later steps may run or read it.
                    available.push(arg.clone());
                    if arg.starts_with("/out/") && !outputs.contains(arg) {
                        outputs.push(arg.clone());
                    }
                } else if let Some(rel) = arg.strip_prefix("/build/") {
                    assert!(
                        tree.join(rel).exists(),
                        "{name}: step {i} reads {rel}, which is not in the release"
                    );
                }
            }
        }
        images.insert(name.to_owned(), outputs);
    }
    assert_eq!(images["stage0-hex0"], images["stage0-hex0-upstream"]);
}

fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The Nix archive (NAR) serialisation of a directory tree of regular
/// files and directories, whose sha256 is a `tree` pin.
fn nar(path: &Path) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s);
        out.resize(out.len().next_multiple_of(8), 0);
    }
    fn node(out: &mut Vec<u8>, path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        string(out, b"(");
        string(out, b"type");
        let meta = fs::symlink_metadata(path).unwrap();
        if meta.is_dir() {
            string(out, b"directory");
            let mut names: Vec<_> = fs::read_dir(path)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for name in names {
                for s in [
                    &b"entry"[..],
                    b"(",
                    b"name",
                    name.as_encoded_bytes(),
                    b"node",
                ] {
                    string(out, s);
                }
                node(out, &path.join(&name));
                string(out, b")");
            }
        } else {
            string(out, b"regular");
            if meta.permissions().mode() & 0o100 != 0 {
                string(out, b"executable");
                string(out, b"");
            }
            string(out, b"contents");
            string(out, &fs::read(path).unwrap());
        }
        string(out, b")");
    }
    let mut out = Vec::new();
    string(&mut out, b"nix-archive-1");
    node(&mut out, path);
    out
}

#[test]
fn tree_sources_are_mounted_writable_and_the_store_copy_never_changes() {
    // A `tree` source at /build is the store's tree under an overlay: steps
    // create and overwrite files there, the store's copy stays as verified.
    let ws = Workspace::new();
    let tree = ws.sources.join("tree");
    fs::create_dir_all(tree.join("src")).unwrap();
    let source = fs::read(repo("seeds/hex0-amd64.hex0")).unwrap();
    fs::write(tree.join("src/hex0.hex0"), &source).unwrap();
    fs::write(tree.join("victim.hex0"), &source).unwrap();
    let digest = <sha2::Sha256 as sha2::Digest>::digest(nar(&tree));
    fs::rename(&tree, ws.sources.join(hex::encode(digest))).unwrap();
    use base64::Engine as _;
    let pin = base64::engine::general_purpose::STANDARD.encode(digest);
    let sources = format!(
        "{}\n[[source]]\nurls = [\"https://example.invalid/tree.tar.gz\"]\ntree = \"sha256-{pin}\"\n",
        seed_sources()
    );
    let steps = r#"[
  ["/build/seed/hex0", "/build/src/hex0.hex0", "/build/src/new"],
  ["/build/seed/hex0", "/build/victim.hex0", "/build/victim.hex0"],
  ["/build/seed/hex0", "/build/src/hex0.hex0", "/out/hex0"],
]"#;
    write_recipe(
        &ws,
        "mounted",
        &empty_root_recipe("mounted", &sources, steps),
    );
    ws.build_ok(&["mounted"]);
    let files = layer_files(&ws.layout(), "mounted:1");
    assert_eq!(files["hex0"].1, fs::read(repo("seeds/hex0-amd64")).unwrap());
    // The second step truncated victim.hex0 in /build (its own input): the
    // store's tree is untouched.
    let stored = ws.store.join("trees/nar-sha256").join(hex::encode(digest));
    assert_eq!(fs::read(stored.join("victim.hex0")).unwrap(), source);
    assert!(!stored.join("src/new").exists());
    assert_eq!(<sha2::Sha256 as sha2::Digest>::digest(nar(&stored)), digest);

    // A failed build keeps its /build: `imgrep shell` sees the tree and what
    // the steps wrote on top of it.
    let failing = r#"[
  ["/build/seed/hex0", "/build/src/hex0.hex0", "/build/src/new"],
  ["/build/seed/hex0", "/build/no-such-input", "/out/never"],
]"#;
    write_recipe(
        &ws,
        "mounted-fails",
        &empty_root_recipe("mounted-fails", &sources, failing),
    );
    assert_eq!(ws.build(&["mounted-fails"]).status.code(), Some(3));
    let shell = Command::new(env!("CARGO_BIN_EXE_imgrep"))
        .args(["shell", "-C"])
        .arg(&ws.root)
        .args([
            "mounted-fails",
            "--",
            "/build/seed/hex0",
            "/build/src/hex0.hex0",
        ])
        .arg("/out/from-shell")
        .env("IMGREP_STORE", &ws.store)
        .output()
        .unwrap();
    assert!(
        shell.status.success(),
        "{}",
        String::from_utf8_lossy(&shell.stderr)
    );
    let kept = ws.store.join("failed/mounted-fails");
    let seed = fs::read(repo("seeds/hex0-amd64")).unwrap();
    assert_eq!(fs::read(kept.join("out/from-shell")).unwrap(), seed);
    assert_eq!(fs::read(kept.join("build/src/new")).unwrap(), seed);

    // A file source landing on a path of the mounted tree is refused, as
    // overlapping sources always were.
    let clash = format!(
        "{sources}\n[[source]]\nurls = [\"repo:seeds/hex0-amd64.hex0\"]\nsha256 = \"{}\"\nunpack = false\ndest = \"src\"\nfile = \"hex0.hex0\"\n",
        sha256_hex(&source)
    );
    write_recipe(&ws, "clash", &empty_root_recipe("clash", &clash, steps));
    let out = ws.build(&["clash"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("/build/src/hex0.hex0 is also provided by another source"),
        "{stderr}"
    );
}
