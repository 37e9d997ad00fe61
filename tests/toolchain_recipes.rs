//! The recipes of packages/ as a toolchain repository (issue 16,
//! docs/toolchain.md): each says what it builds, how to run its image and
//! whose bytes each source is; a repack names upstream's hash; the stages
//! depend on each other as documented; scripts never name the root they are
//! compiled on; and `imgrep plan` accepts the whole tree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The toolchain's recipes and the packages built on it (the ddc and
/// stage0/bootstrap recipes document their own sources).
const TOOLCHAIN: [&str; 12] = [
    "cross-binutils",
    "cross-musl",
    "cross-gcc",
    "linux-headers",
    "musl",
    "binutils",
    "make",
    "busybox",
    "gcc",
    "bzip2",
    "gzip",
    "m4",
];

fn packages_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packages")
}

/// Every recipe of packages/: name -> (text, parsed).
fn recipes() -> BTreeMap<String, (String, toml::Table)> {
    let mut all = BTreeMap::new();
    for entry in std::fs::read_dir(packages_dir()).unwrap() {
        let dir = entry.unwrap().path();
        let path = dir.join("package.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed: toml::Table = text
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = dir.file_name().unwrap().to_str().unwrap().to_owned();
        all.insert(name, (text, parsed));
    }
    all
}

fn strings(v: Option<&toml::Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

fn deps(recipe: &toml::Table) -> Vec<String> {
    strings(recipe.get("build").and_then(|b| b.get("deps")))
}

/// The comment lines right above each `[[source]]`, in order.
fn source_comments(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines: Vec<&str> = Vec::new();
    let mut in_source = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("[[source]]") {
            in_source = true;
            lines.clear();
            // A trailing comment on the table line counts (bookworm-cc's).
            if let Some((_, c)) = t.split_once('#') {
                lines.push(c);
            }
        } else if in_source && t.starts_with('#') {
            lines.push(t.trim_start_matches('#'));
        } else if in_source && !t.is_empty() {
            out.push(lines.join(" "));
            in_source = false;
        }
    }
    out
}

#[test]
fn every_recipe_says_what_it_builds_how_to_run_it_and_whose_bytes_it_pins() {
    let all = recipes();
    assert!(all.len() >= 9, "{:?}", all.keys());
    for (name, (text, recipe)) in &all {
        if !TOOLCHAIN.contains(&name.as_str()) {
            continue;
        }
        let header: String = text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            header.len() > 80,
            "{name}: the header comment says what it builds"
        );
        assert!(
            header.contains("Run:"),
            "{name}: the header says how to run the image"
        );
        let sources = recipe["source"].as_array().unwrap();
        let comments = source_comments(text);
        assert_eq!(comments.len(), sources.len(), "{name}");
        for (source, comment) in sources.iter().zip(&comments) {
            let urls = strings(source.get("urls"));
            assert!(!urls.is_empty(), "{name}: {source:?}");
            let debian: Vec<_> = urls
                .iter()
                .filter(|u| u.starts_with("mirror://debian/pool/main/"))
                .collect();
            assert_eq!(debian.len(), 1, "{name}: one Debian pool URL: {urls:?}");
            let upstreams =
                comment.contains("Upstream's bytes") || comment.contains("is the upstream release");
            let repack = comment.contains("Debian's repack");
            let own = comment.contains("Debian's own orig");
            assert_eq!(
                [upstreams, repack, own].iter().filter(|&&b| b).count(),
                1,
                "{name}: the comment of each source says whose bytes it is: {comment:?}"
            );
            if upstreams {
                // Upstream's URL first, the Debian orig as the alternate.
                assert_eq!(urls.len(), 2, "{name}: {urls:?}");
                assert!(urls[0].starts_with("https://"), "{name}: {urls:?}");
                assert_eq!(urls[1], *debian[0], "{name}: {urls:?}");
                let ext = |u: &str| u.rsplit('.').next().unwrap().to_owned();
                assert_eq!(ext(&urls[0]), ext(&urls[1]), "{name}: one hash fits both");
            } else {
                // A repack is pinned as what it is, never under an upstream URL.
                assert_eq!(urls.len(), 1, "{name}: {urls:?}");
            }
            if repack {
                let hash = comment
                    .split_once("is sha256")
                    .map(|(_, rest)| rest.split_whitespace().next().unwrap_or(""))
                    .unwrap_or("");
                let hash = hash.trim_end_matches('.');
                assert!(
                    hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{name}: a repack records upstream's sha256: {comment:?}"
                );
                assert_ne!(Some(hash), source["sha256"].as_str(), "{name}");
            }
        }
    }
}

#[test]
fn the_stages_depend_on_each_other_as_documented() {
    let all = recipes();
    let get = |n: &str| &all.get(n).unwrap_or_else(|| panic!("no package {n}")).1;
    // Cross stage: on the Debian root.
    assert_eq!(deps(get("cross-binutils")), ["bookworm-cc"]);
    assert_eq!(deps(get("cross-musl")), ["bookworm-cc"]);
    assert_eq!(
        deps(get("cross-gcc")),
        ["bookworm-cc", "cross-binutils", "cross-musl"]
    );
    assert_eq!(
        strings(get("cross-gcc")["package"].get("runtime")),
        ["cross-binutils", "cross-musl"]
    );
    // Data only: built on the Debian root, the same whatever compiles unifdef.
    assert_eq!(deps(get("linux-headers")), ["bookworm-cc"]);
    // Native stage: compiled by the cross stage (its bundle on the Debian root).
    for native in ["musl", "binutils", "make", "busybox", "gcc"] {
        assert_eq!(deps(get(native)), ["bookworm-cc", "cross-gcc"], "{native}");
    }
    assert_eq!(
        strings(get("gcc")["package"].get("runtime")),
        ["busybox", "linux-headers", "musl", "binutils", "make"]
    );
    // The rest of the tree builds on the native toolchain's bundle alone.
    for leaf in ["bzip2", "gzip", "m4"] {
        assert_eq!(deps(get(leaf)), ["gcc"], "{leaf}");
    }
}

#[test]
fn scripts_do_not_name_the_root_they_are_compiled_on() {
    // Swapping `deps` (another root, e.g. a clang one for diverse double
    // compilation) must be all it takes to build a recipe on another root.
    for (name, (_, recipe)) in recipes() {
        if !TOOLCHAIN.contains(&name.as_str()) {
            continue;
        }
        let Some(script) = recipe
            .get("build")
            .and_then(|b| b.get("script"))
            .and_then(|s| s.as_str())
        else {
            continue;
        };
        for word in [
            "bookworm",
            "gcc-12",
            "x86_64-linux-gnu",
            "musl-gcc",
            "/usr/lib/musl",
        ] {
            assert!(!script.contains(word), "{name}: script names {word:?}");
        }
    }
}

#[test]
fn plan_accepts_the_whole_tree() {
    let store = tempfile::tempdir().unwrap();
    let names: Vec<String> = recipes().into_keys().collect();
    let out = Command::new(env!("CARGO_BIN_EXE_imgrep"))
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .arg("--store")
        .arg(store.path())
        .args(["--offline", "--json", "plan"])
        .args(&names)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "imgrep plan: {stderr}");
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut planned: Vec<&str> = plan
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    planned.sort();
    // Every package, plus what they build on from stage0/ and bootstrap/
    // (the hex0 DDC root stands on the seed's chain), nothing else.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (ours, chain): (Vec<&str>, Vec<&str>) =
        planned.iter().partition(|n| names.iter().any(|m| m == *n));
    assert_eq!(
        ours.len(),
        names.len(),
        "every package planned: {planned:?}"
    );
    for n in chain {
        assert!(
            ["stage0", "bootstrap"].iter().any(|d| repo
                .join(d)
                .join(n)
                .join("package.toml")
                .is_file()),
            "{n} planned but neither a package nor a stage of the seed's chain"
        );
    }
    // Nothing is built in an empty store; the bottom of each chain has a key.
    for p in plan.as_array().unwrap() {
        assert!(p["cached"].is_null(), "{p}");
    }
    let at = |name: &str| {
        plan.as_array()
            .unwrap()
            .iter()
            .position(|p| p["name"] == name)
            .unwrap()
    };
    assert!(at("cross-binutils") < at("cross-gcc") && at("cross-musl") < at("cross-gcc"));
    assert!(at("cross-gcc") < at("musl") && at("musl") < at("gcc") && at("gcc") < at("bzip2"));
}
