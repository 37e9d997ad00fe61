//! `imgrep::deb` against packages written by the real `dpkg-deb`: the data
//! stream must be byte for byte what `dpkg-deb --fsys-tarfile` extracts.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use imgrep::deb::{Compression, Deb};

fn have_dpkg_deb() -> bool {
    let found = Command::new("dpkg-deb").arg("--version").output().is_ok();
    if !found {
        eprintln!("SKIPPED: dpkg-deb is not installed (apt-get install dpkg)");
    }
    found
}

fn data_of(deb: &Path) -> (Vec<u8>, String, Compression) {
    let mut deb = Deb::open(deb).unwrap();
    let mut data = deb.data().unwrap();
    let mut out = Vec::new();
    data.read_to_end(&mut out).unwrap();
    (out, data.member().to_owned(), data.compression())
}

fn fsys_tarfile(deb: &Path) -> Vec<u8> {
    let out = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dpkg-deb --fsys-tarfile {}",
        deb.display()
    );
    out.stdout
}

/// A small package tree: a directory, an executable, a data file, a symlink.
fn package_tree(root: &Path) {
    fs::create_dir_all(root.join("DEBIAN")).unwrap();
    fs::write(
        root.join("DEBIAN/control"),
        "Package: imgrep-test\nVersion: 1.0\nArchitecture: amd64\n\
         Maintainer: imgrep tests <tests@invalid>\nDescription: test package\n",
    )
    .unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("usr/share/imgrep-test")).unwrap();
    fs::write(root.join("usr/bin/hello"), "#!/bin/sh\necho hello\n").unwrap();
    fs::set_permissions(
        root.join("usr/bin/hello"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    // Compressible but not trivial, so each compressor does real work.
    let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    fs::write(root.join("usr/share/imgrep-test/data.txt"), text).unwrap();
    symlink("hello", root.join("usr/bin/hi")).unwrap();
}

fn entries(tar_bytes: &[u8]) -> Vec<(String, tar::EntryType)> {
    let mut archive = tar::Archive::new(tar_bytes);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                e.header().entry_type(),
            )
        })
        .collect()
}

#[test]
fn reads_dpkg_deb_output_in_every_compression() {
    if !have_dpkg_deb() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    package_tree(&tree);
    for (flag, member, compression) in [
        ("none", "data.tar", Compression::None),
        ("gzip", "data.tar.gz", Compression::Gzip),
        ("xz", "data.tar.xz", Compression::Xz),
        ("zstd", "data.tar.zst", Compression::Zstd),
    ] {
        let deb = dir.path().join(format!("imgrep-test_{flag}.deb"));
        let status = Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Z", flag, "--build"])
            .arg(&tree)
            .arg(&deb)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "dpkg-deb -Z {flag} --build");

        let (data, found_member, found_compression) = data_of(&deb);
        assert_eq!(found_member, member);
        assert_eq!(found_compression, compression);
        assert_eq!(
            data,
            fsys_tarfile(&deb),
            "{flag}: stream differs from dpkg-deb's"
        );
        let listing = entries(&data);
        for (path, kind) in [
            ("./usr/bin/hello", tar::EntryType::Regular),
            ("./usr/bin/hi", tar::EntryType::Symlink),
            ("./usr/share/imgrep-test/data.txt", tar::EntryType::Regular),
        ] {
            assert!(
                listing.contains(&(path.to_owned(), kind)),
                "{flag}: {path} missing from {listing:?}"
            );
        }
    }
}

#[test]
fn names_the_package_when_the_file_is_not_a_deb() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bogus_1.0_amd64.deb");
    fs::write(&path, "<html>404 Not Found</html>\n").unwrap();
    let err = Deb::open(&path).unwrap().data().err().unwrap().to_string();
    assert!(
        err.starts_with(&format!("{}: not a Debian binary package", path.display())),
        "{err}"
    );
}

/// Real Debian packages: those apt has cached, or a directory named by
/// IMGREP_TEST_DEBS (e.g. the .debs of packages/bookworm-cc in a store).
#[test]
fn reads_real_debian_packages_like_dpkg_deb() {
    if !have_dpkg_deb() {
        return;
    }
    let dirs: Vec<PathBuf> = match std::env::var_os("IMGREP_TEST_DEBS") {
        Some(dir) => vec![dir.into()],
        None => vec!["/var/cache/apt/archives".into()],
    };
    let mut debs: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| fs::read_dir(d).ok())
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort();
    if debs.is_empty() {
        eprintln!(
            "SKIPPED: no .deb in {dirs:?} (run `apt-get download busybox-static` there, \
             or set IMGREP_TEST_DEBS to a directory of .debs)"
        );
        return;
    }
    for deb in &debs {
        let (data, _, _) = data_of(deb);
        assert_eq!(data, fsys_tarfile(deb), "{}", deb.display());
    }
    eprintln!("checked {} real .debs against dpkg-deb", debs.len());
}
