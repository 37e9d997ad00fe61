//! The pins of packages/bookworm-cc against the Packages indexes that apt has
//! verified against Debian's signed InRelease files on this machine: every
//! .deb listed there must carry the SHA256 Debian publishes, and the set must
//! be closed under Depends/Pre-Depends but for the documented exclusions.
//! Where apt's indexes are absent or come from another snapshot, the test says
//! so and checks what it can.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

/// Depends that the root leaves out on purpose (docs/distro.md).
const EXCLUDED: &[&str] = &["libnsl-dev", "rpcsvc-proto", "debianutils", "dpkg"];

fn recipe(name: &str) -> toml::Table {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("packages/{name}/package.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    text.parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `(pool path, sha256)` of each source of bookworm-cc.
fn pinned_debs() -> Vec<(String, String)> {
    recipe("bookworm-cc")["source"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let urls = s["urls"].as_array().unwrap();
            assert_eq!(urls.len(), 1, "{s:?}");
            let url = urls[0].as_str().unwrap();
            let path = url
                .strip_prefix("mirror://debian/")
                .unwrap_or_else(|| panic!("{url}: expected a mirror://debian/ URL"));
            assert!(
                path.starts_with("pool/main/") && path.ends_with(".deb"),
                "{url}"
            );
            (path.to_owned(), s["sha256"].as_str().unwrap().to_owned())
        })
        .collect()
}

struct Stanza {
    package: String,
    sha256: String,
    depends: Vec<Vec<String>>,
}

/// The Packages indexes apt has fetched and verified, by `Filename`.
fn apt_index() -> Option<BTreeMap<String, Stanza>> {
    let targets = Command::new("apt-get")
        .args([
            "indextargets",
            "--format",
            "$(FILENAME)",
            "Identifier: Packages",
        ])
        .output()
        .ok()?;
    let mut index = BTreeMap::new();
    for file in String::from_utf8(targets.stdout).ok()?.lines() {
        // apt-helper reads the index in whatever compression apt stored it.
        let out = Command::new("/usr/lib/apt/apt-helper")
            .args(["cat-file", file])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
                    .map(str::to_owned)
            };
            let (Some(package), Some(filename), Some(sha256)) =
                (field("Package"), field("Filename"), field("SHA256"))
            else {
                continue;
            };
            let depends = ["Pre-Depends", "Depends"]
                .iter()
                .filter_map(|f| field(f))
                .flat_map(|list| {
                    list.split(',')
                        .map(|alts| {
                            alts.split('|')
                                .map(|a| {
                                    let name = a.trim().split([' ', '(', ':']).next().unwrap();
                                    name.to_owned()
                                })
                                .collect()
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            index.insert(
                filename,
                Stanza {
                    package,
                    sha256,
                    depends,
                },
            );
        }
    }
    (!index.is_empty()).then_some(index)
}

#[test]
fn bookworm_cc_pins_are_those_of_debians_signed_index_and_closed() {
    let pins = pinned_debs();
    let Some(index) = apt_index() else {
        eprintln!("SKIPPED: no apt Packages index on this machine (not Debian, or `apt-get update` never ran)");
        return;
    };
    let mut found = BTreeSet::new();
    let mut unlisted = Vec::new();
    for (path, sha256) in &pins {
        match index.get(path) {
            Some(stanza) => {
                assert_eq!(
                    &stanza.sha256, sha256,
                    "{path}: pinned sha256 differs from Debian's index"
                );
                found.insert(stanza.package.clone());
            }
            None => unlisted.push(path.as_str()),
        }
    }
    if !unlisted.is_empty() {
        eprintln!(
            "SKIPPED (in part): apt's index here is another snapshot and does not list {} of {} pinned .debs, e.g. {}; \
             their hashes and the closure are not checked",
            unlisted.len(),
            pins.len(),
            unlisted[0]
        );
        return;
    }
    for path in pins.iter().map(|(p, _)| p) {
        let stanza = &index[path];
        for alternatives in &stanza.depends {
            assert!(
                alternatives
                    .iter()
                    .any(|a| found.contains(a) || EXCLUDED.contains(&a.as_str())),
                "{}: dependency {} is neither pinned nor excluded",
                stanza.package,
                alternatives.join(" | ")
            );
        }
    }
    eprintln!(
        "checked {} pins against apt's verified index; closure complete",
        pins.len()
    );
}

#[test]
fn bookworm_cc_symlinks_stay_inside_the_image() {
    let recipe = recipe("bookworm-cc");
    let debs = recipe["debs"].as_table().unwrap();
    let links = debs["symlinks"].as_table().unwrap();
    assert_eq!(links["usr/bin/gcc"].as_str(), Some("gcc-12"));
    assert_eq!(links["usr/bin/cc"].as_str(), Some("gcc-12"));
    // dash provides /bin/sh; a busybox link there would bring back ash.
    assert!(!links.contains_key("bin/sh"));
    for (link, target) in links {
        let target = target.as_str().unwrap();
        assert!(!link.starts_with('/') && !link.contains(".."), "{link}");
        assert!(
            !target.starts_with('/'),
            "{link} -> {target}: expected a relative target"
        );
        // Resolve the relative target from the link's directory; it must not
        // climb above the image root.
        let mut depth = link.matches('/').count() as isize;
        for part in target.split('/') {
            match part {
                ".." => depth -= 1,
                "." | "" => {}
                _ => depth += 1,
            }
            assert!(depth >= 0, "{link} -> {target} leaves the image");
        }
    }
    let dirs: Vec<_> = debs["dirs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(dirs, ["dev", "proc", "tmp"]);
}
