//! packages/bookworm-cc against its real .debs, read with `imgrep::deb`: each
//! file matches its pin, no two packages ship the same path (so unpack order
//! cannot matter), every declared symlink lands on a path no package ships and
//! points at one that exists, and the busybox links are exactly the applets
//! the pinned busybox reports. Needs the 41 .debs in the directory named by
//! IMGREP_TEST_DEBS (any file names); skipped otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use imgrep::deb::Deb;
use imgrep::digest::{hash_reader, Digest};

struct Shipped {
    /// Non-directory paths, relative, by the package that ships them.
    files: BTreeMap<String, String>,
    dirs: BTreeSet<String>,
    busybox: Vec<u8>,
}

fn recipe() -> toml::Table {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packages/bookworm-cc/package.toml");
    std::fs::read_to_string(&path).unwrap().parse().unwrap()
}

fn read_debs(dir: &Path, recipe: &toml::Table) -> Option<Shipped> {
    let mut shipped = Shipped {
        files: BTreeMap::new(),
        dirs: BTreeSet::new(),
        busybox: Vec::new(),
    };
    // Found by content, so apt-get download's names (epochs as %3a) do too.
    let mut by_digest = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let (digest, _) = hash_reader(std::fs::File::open(&path).unwrap()).unwrap();
            by_digest.insert(digest, path);
        }
    }
    for source in recipe["source"].as_array().unwrap() {
        let url = source["urls"][0].as_str().unwrap();
        let name = url.rsplit('/').next().unwrap();
        let pinned: Digest = format!("sha256:{}", source["sha256"].as_str().unwrap())
            .parse()
            .unwrap();
        let Some(path) = by_digest.get(&pinned) else {
            eprintln!(
                "SKIPPED: no file in {} has the sha256 pinned for {name}",
                dir.display()
            );
            return None;
        };
        let mut deb = Deb::open(path).unwrap();
        let mut archive = tar::Archive::new(deb.data().unwrap());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let raw = entry.path().unwrap().to_string_lossy().into_owned();
            let rel = raw
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_owned();
            if rel.is_empty() {
                continue;
            }
            if entry.header().entry_type().is_dir() {
                shipped.dirs.insert(rel);
                continue;
            }
            if rel == "bin/busybox" {
                entry.read_to_end(&mut shipped.busybox).unwrap();
            }
            if let Some(other) = shipped.files.insert(rel.clone(), name.to_owned()) {
                panic!("{rel} is shipped by both {other} and {name}: unpack order would matter");
            }
        }
    }
    Some(shipped)
}

/// `target` read from the directory of `link`, as the kernel resolves it.
fn resolve(link: &str, target: &str) -> String {
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            ".." => {
                parts.pop();
            }
            "." | "" => {}
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[test]
fn bookworm_cc_debs_unpack_without_conflicts_and_links_resolve() {
    let Some(dir) = std::env::var_os("IMGREP_TEST_DEBS") else {
        eprintln!("SKIPPED: IMGREP_TEST_DEBS is not set (a directory holding the .debs of packages/bookworm-cc)");
        return;
    };
    let recipe = recipe();
    let Some(shipped) = read_debs(Path::new(&dir), &recipe) else {
        return;
    };
    let links = recipe["debs"]["symlinks"].as_table().unwrap();
    for (link, target) in links {
        let target = target.as_str().unwrap();
        assert!(
            !shipped.files.contains_key(link) && !shipped.dirs.contains(link),
            "symlink {link} would replace what {} ships",
            shipped.files.get(link).map_or("a package", String::as_str)
        );
        let resolved = resolve(link, target);
        assert!(
            shipped.files.contains_key(&resolved),
            "symlink {link} -> {target}: {resolved} is not in any package"
        );
    }

    // The busybox links are exactly its applets at their own paths, less
    // linuxrc and the paths packages ship.
    let tmp = tempfile::tempdir().unwrap();
    let busybox = tmp.path().join("busybox");
    std::fs::write(&busybox, &shipped.busybox).unwrap();
    std::fs::set_permissions(&busybox, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(&busybox).arg("--list-full").output().unwrap();
    assert!(out.status.success());
    let expected: BTreeSet<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|p| *p != "linuxrc" && !shipped.files.contains_key(*p))
        .map(str::to_owned)
        .collect();
    let declared: BTreeSet<String> = links
        .iter()
        .filter(|(_, t)| t.as_str().unwrap().ends_with("busybox"))
        .map(|(l, _)| l.clone())
        .collect();
    assert_eq!(
        declared, expected,
        "busybox applet links differ from `busybox --list-full`"
    );
    eprintln!(
        "checked {} .debs, {} files, {} symlinks",
        recipe["source"].as_array().unwrap().len(),
        shipped.files.len(),
        links.len()
    );
}
