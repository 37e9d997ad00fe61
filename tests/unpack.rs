//! The safe unpacker against hostile archives (one test per case, raw tar
//! headers written here since well-behaved tar writers refuse to make
//! them), and against well-formed ones: GNU tar's output, OCI whiteouts,
//! .deb-style `./` paths, and the store's layer cache.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use imgrep::beneath;
use imgrep::digest::Digest;
use imgrep::nar;
use imgrep::store::{Store, StoreError};
use imgrep::unpack::{self, UnpackError, UnpackOptions};

/// A tar stream built block by block.
#[derive(Default)]
struct Tar(Vec<u8>);

fn octal(field: &mut [u8], n: u64) {
    let s = format!("{:0w$o}", n, w = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
    field[s.len()] = 0;
}

fn header(name: &[u8], typeflag: u8, size: u64, link: &[u8], mode: u32) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], mode as u64);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_600_000_000);
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    seal(&mut h);
    h
}

/// Writes the checksum field for the header's current contents.
fn seal(h: &mut [u8; 512]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| b as u64).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
}

impl Tar {
    fn block(mut self, h: [u8; 512]) -> Self {
        self.0.extend_from_slice(&h);
        self
    }

    fn data(mut self, data: &[u8]) -> Self {
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Self {
        self.block(header(name.as_bytes(), b'0', data.len() as u64, b"", 0o644))
            .data(data)
    }

    fn dir(self, name: &str) -> Self {
        self.block(header(name.as_bytes(), b'5', 0, b"", 0o755))
    }

    fn symlink(self, name: &str, target: &str) -> Self {
        self.block(header(name.as_bytes(), b'2', 0, target.as_bytes(), 0o777))
    }

    fn hardlink(self, name: &str, target: &str) -> Self {
        self.block(header(name.as_bytes(), b'1', 0, target.as_bytes(), 0o644))
    }

    fn special(self, name: &str, typeflag: u8) -> Self {
        self.block(header(name.as_bytes(), typeflag, 0, b"", 0o644))
    }

    fn pax(self, records: &[(&str, &str)]) -> Self {
        let mut body = String::new();
        for (k, v) in records {
            let rest = format!(" {k}={v}\n");
            let mut len = rest.len() + 1;
            while format!("{len}{rest}").len() != len {
                len += 1;
            }
            body.push_str(&format!("{len}{rest}"));
        }
        self.block(header(b"PaxHeader", b'x', body.len() as u64, b"", 0o644))
            .data(body.as_bytes())
    }

    fn end(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }
}

/// `base/target` to unpack into, `base/outside` holding one file that no
/// archive may touch.
struct Sandbox {
    _dir: tempfile::TempDir,
    base: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_owned();
        fs::create_dir(base.join("target")).unwrap();
        fs::create_dir(base.join("outside")).unwrap();
        fs::write(base.join("outside/secret"), b"secret\n").unwrap();
        Sandbox { _dir: dir, base }
    }

    fn target(&self) -> PathBuf {
        self.base.join("target")
    }

    fn outside(&self) -> String {
        self.base.join("outside").display().to_string()
    }

    fn unpack(
        &self,
        tar: &[u8],
        opts: &UnpackOptions,
    ) -> Result<unpack::UnpackReport, UnpackError> {
        unpack::unpack(tar, &self.target(), opts)
    }

    /// Unpacking must fail naming `entry` and saying `why`, with nothing
    /// written outside the target.
    fn refused(&self, tar: &[u8], opts: &UnpackOptions, entry: &str, why: &str) {
        let err = self
            .unpack(tar, opts)
            .expect_err("hostile archive accepted");
        let msg = err.to_string();
        assert!(msg.contains(entry), "error does not name {entry:?}: {msg}");
        assert!(msg.contains(why), "error does not say {why:?}: {msg}");
        self.assert_outside_untouched();
    }

    fn assert_outside_untouched(&self) {
        let mut names: Vec<_> = fs::read_dir(&self.base)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["outside", "target"]);
        let outside: Vec<_> = fs::read_dir(self.base.join("outside")).unwrap().collect();
        assert_eq!(outside.len(), 1, "something was written outside");
        let secret = self.base.join("outside/secret");
        assert_eq!(fs::read(&secret).unwrap(), b"secret\n");
        assert_eq!(
            fs::metadata(&secret).unwrap().nlink(),
            1,
            "hard-linked from inside"
        );
    }
}

const SRC: UnpackOptions = UnpackOptions::SOURCE;
const LAYER: UnpackOptions = UnpackOptions::LAYER;

#[test]
fn refuses_dotdot() {
    let s = Sandbox::new();
    let tar = Tar::default().file("a/../../outside/x", b"x").end();
    s.refused(&tar, &SRC, "a/../../outside/x", "`..`");
}

#[test]
fn refuses_absolute_path() {
    let s = Sandbox::new();
    let name = format!("{}/x", s.outside());
    let tar = Tar::default().file(&name, b"x").end();
    s.refused(&tar, &LAYER, &name, "absolute");
}

#[test]
fn refuses_dotdot_smuggled_in_pax_path() {
    let s = Sandbox::new();
    let tar = Tar::default()
        .pax(&[("path", "../outside/x")])
        .file("harmless", b"x")
        .end();
    s.refused(&tar, &SRC, "../outside/x", "`..`");
}

#[test]
fn refuses_dotdot_smuggled_in_gnu_long_name() {
    let s = Sandbox::new();
    let long = format!("{}../../outside/x", "d/".repeat(60));
    let tar = Tar::default()
        .block(header(
            b"././@LongLink",
            b'L',
            long.len() as u64 + 1,
            b"",
            0o644,
        ))
        .data(format!("{long}\0").as_bytes())
        .file("harmless", b"x")
        .end();
    s.refused(&tar, &SRC, "outside/x", "`..`");
}

#[test]
fn refuses_absolute_symlink_in_sources() {
    let s = Sandbox::new();
    let tar = Tar::default().symlink("link", &s.outside()).end();
    s.refused(&tar, &SRC, "link", "outside the target");
}

#[test]
fn refuses_relative_symlink_climbing_out() {
    let s = Sandbox::new();
    let tar = Tar::default()
        .dir("sub/")
        .symlink("sub/link", "../../outside/secret")
        .end();
    s.refused(&tar, &SRC, "sub/link", "outside the target");
}

#[test]
fn refuses_symlink_escaping_through_a_later_symlink() {
    // sub/esc looks contained when written (sub/up does not exist yet);
    // once sub/up -> .. exists, sub/esc resolves to the target's parent.
    let s = Sandbox::new();
    let tar = Tar::default()
        .dir("sub/")
        .symlink("sub/esc", "up/../..")
        .symlink("sub/up", "..")
        .end();
    s.refused(&tar, &SRC, "sub/esc", "outside the target");
}

#[test]
fn refuses_writing_through_a_symlinked_directory() {
    let s = Sandbox::new();
    // Allowed as a link in a root file system, but never followed.
    let tar = Tar::default()
        .symlink("evil", &s.outside())
        .file("evil/pwned", b"x")
        .end();
    s.refused(&tar, &LAYER, "evil/pwned", "is a symbolic link");
}

#[test]
fn refuses_writing_through_a_symlink_from_an_earlier_layer() {
    let s = Sandbox::new();
    let lower = Tar::default().symlink("usr", &s.outside()).end();
    s.unpack(&lower, &LAYER).unwrap();
    let upper = Tar::default().file("usr/secret", b"overwritten").end();
    s.refused(&upper, &LAYER, "usr/secret", "is a symbolic link");
}

#[test]
fn refuses_hard_link_to_outside() {
    let s = Sandbox::new();
    let tar = Tar::default().hardlink("h", "../outside/secret").end();
    s.refused(&tar, &SRC, "h", "leaves the target directory");
    let abs = format!("{}/secret", s.outside());
    let tar = Tar::default().hardlink("h", &abs).end();
    s.refused(&tar, &LAYER, "h", "leaves the target directory");
}

#[test]
fn refuses_hard_link_through_a_symlink() {
    let s = Sandbox::new();
    let tar = Tar::default()
        .symlink("l", &s.outside())
        .hardlink("h", "l/secret")
        .end();
    s.refused(&tar, &LAYER, "\"h\"", "lies behind a symbolic link");
}

#[test]
fn refuses_hard_link_to_missing_target() {
    let s = Sandbox::new();
    let tar = Tar::default().hardlink("h", "nothing/here").end();
    s.refused(&tar, &SRC, "h", "does not exist");
}

#[test]
fn refuses_character_device() {
    let s = Sandbox::new();
    let tar = Tar::default().special("dev/null", b'3').end();
    s.refused(&tar, &LAYER, "dev/null", "device nodes are not allowed");
}

#[test]
fn refuses_block_device() {
    let s = Sandbox::new();
    let tar = Tar::default().special("dev/sda", b'4').end();
    s.refused(&tar, &SRC, "dev/sda", "device nodes are not allowed");
}

#[test]
fn refuses_fifo() {
    let s = Sandbox::new();
    let tar = Tar::default().special("run/pipe", b'6').end();
    s.refused(&tar, &LAYER, "run/pipe", "fifos are not allowed");
}

#[test]
fn deb_data_skips_special_files_and_says_so() {
    let s = Sandbox::new();
    let tar = Tar::default()
        .dir("./")
        .dir("./dev/")
        .special("./dev/null", b'3')
        .file("./usr/bin/x", b"x")
        .end();
    let report = s.unpack(&tar, &UnpackOptions::DEB).unwrap();
    assert_eq!(report.skipped, ["./dev/null: device nodes are not allowed"]);
    assert!(!s.target().join("dev/null").exists());
    assert_eq!(fs::read(s.target().join("usr/bin/x")).unwrap(), b"x");
}

#[test]
fn refuses_duplicate_entries() {
    let s = Sandbox::new();
    let tar = Tar::default().file("a", b"1").file("./a", b"2").end();
    s.refused(&tar, &SRC, "./a", "duplicate entry");
}

#[test]
fn refuses_replacing_a_populated_directory() {
    let s = Sandbox::new();
    let tar = Tar::default().file("d/f", b"1").file("d", b"2").end();
    s.refused(&tar, &SRC, "\"d\"", "would replace a directory");
    assert_eq!(fs::read(s.target().join("d/f")).unwrap(), b"1");
}

#[test]
fn refuses_bad_checksum() {
    let s = Sandbox::new();
    let mut h = header(b"a", b'0', 1, b"", 0o644);
    h[0] = b'b'; // changed after sealing
    let tar = Tar::default().block(h).data(b"x").end();
    s.refused(&tar, &SRC, "\"b\"", "checksum mismatch");
    assert!(!s.target().join("b").exists());
}

#[test]
fn refuses_size_beyond_the_stream() {
    let s = Sandbox::new();
    let mut tar = Tar::default()
        .block(header(b"big", b'0', 1 << 30, b"", 0o644))
        .0;
    tar.extend_from_slice(&[b'x'; 4096]);
    s.refused(&tar, &SRC, "big", "stream ends with");
}

#[test]
fn refuses_truncated_header() {
    let s = Sandbox::new();
    let mut tar = Tar::default().file("a", b"x").0;
    tar.extend_from_slice(&header(b"b", b'0', 0, b"", 0o644)[..300]);
    s.refused(&tar, &SRC, "byte 1024", "stream ends after 300 bytes");
}

#[test]
fn refuses_malformed_pax_record() {
    let s = Sandbox::new();
    let body = b"99 path=x\n";
    let tar = Tar::default()
        .block(header(b"PaxHeader/f", b'x', body.len() as u64, b"", 0o644))
        .data(body)
        .file("f", b"x")
        .end();
    s.refused(&tar, &SRC, "PaxHeader/f", "PAX record length 99");
}

#[test]
fn refuses_oversized_extended_header() {
    let s = Sandbox::new();
    let tar = Tar::default()
        .block(header(b"././@LongLink", b'L', 64 << 20, b"", 0o644))
        .end();
    s.refused(&tar, &SRC, "@LongLink", "extended header of 67108864 bytes");
}

#[test]
fn refuses_non_numeric_size() {
    let s = Sandbox::new();
    let mut h = header(b"f", b'0', 0, b"", 0o644);
    h[124..136].copy_from_slice(b"12345678z01\0");
    seal(&mut h);
    let tar = Tar::default().block(h).end();
    s.refused(&tar, &SRC, "\"f\"", "size field is not a number");
}

#[test]
fn refuses_sparse_files() {
    let s = Sandbox::new();
    let tar = Tar::default().special("sparse", b'S').end();
    s.refused(&tar, &SRC, "sparse", "unsupported entry type 'S'");
}

#[test]
fn gnu_tar_output_round_trips() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let deep = format!("{}/file-with-a-long-name", "long-directory-name-".repeat(8));
    fs::create_dir_all(tree.join(&deep).parent().unwrap()).unwrap();
    fs::write(tree.join(&deep), b"deep\n").unwrap();
    fs::create_dir(tree.join("ro")).unwrap();
    fs::write(tree.join("ro/f"), b"in a read-only dir\n").unwrap();
    fs::write(tree.join("run.sh"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(tree.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::hard_link(tree.join("run.sh"), tree.join("run-again.sh")).unwrap();
    std::os::unix::fs::symlink("run.sh", tree.join("link")).unwrap();
    fs::set_permissions(tree.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    let want = nar::hash_path(&tree).unwrap();

    for format in ["gnu", "pax"] {
        let archive = work.path().join(format!("t-{format}.tar"));
        let status = Command::new("tar")
            .arg(format!("--format={format}"))
            .arg("-C")
            .arg(&tree)
            .arg("-cf")
            .arg(&archive)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        let out = work.path().join(format!("out-{format}"));
        fs::create_dir(&out).unwrap();
        let bytes = fs::read(&archive).unwrap();
        let report = unpack::unpack(&bytes[..], &out, &SRC).unwrap();
        assert_eq!(report.diff_id, Digest::of(&bytes), "{format}");
        assert_eq!(report.size, bytes.len() as u64);
        assert_eq!(nar::hash_path(&out).unwrap(), want, "{format}");
        let a = fs::metadata(out.join("run.sh")).unwrap();
        let b = fs::metadata(out.join("run-again.sh")).unwrap();
        assert_eq!(a.ino(), b.ino(), "{format}: hard link not kept");
        assert_eq!(
            a.mtime(),
            fs::metadata(tree.join("run.sh")).unwrap().mtime()
        );
        let ro = fs::metadata(out.join("ro")).unwrap();
        assert_eq!(ro.permissions().mode() & 0o777, 0o555, "{format}");
        fs::set_permissions(out.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::set_permissions(tree.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
}

fn listing(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.symlink_metadata().unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[test]
fn whiteouts_apply_to_lower_layers() {
    let s = Sandbox::new();
    let lower = Tar::default()
        .file("a/x", b"x")
        .file("a/sub/y", b"y")
        .file("b/z", b"z")
        .file("c", b"c")
        .file("keep", b"k")
        .end();
    s.unpack(&lower, &LAYER).unwrap();
    let upper = Tar::default()
        .file("a/new", b"n")
        .file("a/.wh..wh..opq", b"")
        .file(".wh.b", b"")
        .file(".wh.c", b"")
        .file(".wh.never-existed", b"")
        .file("keep", b"k2")
        .end();
    s.unpack(&upper, &LAYER).unwrap();
    assert_eq!(listing(&s.target()), ["a", "a/new", "keep"]);
    assert_eq!(fs::read(s.target().join("keep")).unwrap(), b"k2");
}

#[test]
fn whiteout_of_a_path_the_same_layer_creates_is_refused() {
    let s = Sandbox::new();
    let tar = Tar::default().file("a/f", b"1").file("a/.wh.f", b"").end();
    s.refused(
        &tar,
        &LAYER,
        "a/.wh.f",
        "whiteout of a path that this same layer creates",
    );
}

#[test]
fn whiteouts_are_refused_in_a_layer_unpacked_alone() {
    let s = Sandbox::new();
    let tar = Tar::default().file(".wh.x", b"").end();
    s.refused(
        &tar,
        &UnpackOptions::LAYER_ALONE,
        ".wh.x",
        "whiteouts are not allowed",
    );
    // For sources they are ordinary names.
    s.unpack(&tar, &SRC).unwrap();
    assert!(s.target().join(".wh.x").exists());
}

#[test]
fn layer_cache_verifies_diff_id_and_is_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let layer = Tar::default()
        .dir("etc/")
        .file("etc/hostname", b"imgrep\n")
        .end();
    let diff_id = Digest::of(&layer);
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&layer).unwrap();
        e.finish().unwrap()
    };

    let wrong = Digest::of(b"another layer");
    let err = store.cached_layer(&wrong, || Ok(&gz[..])).unwrap_err();
    assert!(matches!(err, StoreError::DiffId { .. }), "{err}");
    assert!(err.to_string().contains(&wrong.to_string()));
    assert!(!store.layer_path(&wrong).exists());

    let path = store.cached_layer(&diff_id, || Ok(&gz[..])).unwrap();
    assert_eq!(path, store.layer_path(&diff_id));
    assert_eq!(fs::read(path.join("etc/hostname")).unwrap(), b"imgrep\n");
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o555);
    let again = store
        .cached_layer(&diff_id, || -> std::io::Result<&[u8]> {
            panic!("a cached layer must not be read again")
        })
        .unwrap();
    assert_eq!(again, path);
    assert!(fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn sources_lose_setuid_and_setgid_layers_keep_them() {
    let tar = Tar::default()
        .block(header(b"su", b'0', 0, b"", 0o4755))
        .block(header(b"wall", b'0', 0, b"", 0o2755))
        .end();
    for (opts, want) in [(SRC, [0o755, 0o755]), (LAYER, [0o4755, 0o2755])] {
        let s = Sandbox::new();
        s.unpack(&tar, &opts).unwrap();
        let mode = |n: &str| fs::metadata(s.target().join(n)).unwrap().mode() & 0o7777;
        assert_eq!([mode("su"), mode("wall")], want, "{opts:?}");
    }
}

#[test]
fn strips_a_single_top_directory_only() {
    let s = Sandbox::new();
    let tar = Tar::default()
        .file("pkg-1.0/.imgrep-strip-0", b"name clash")
        .file("pkg-1.0/src/a.c", b"a")
        .end();
    s.unpack(&tar, &SRC).unwrap();
    let dir = beneath::Dir::open(&s.target()).unwrap();
    assert!(beneath::strip_single_top_dir(&dir).unwrap());
    assert_eq!(listing(&s.target()), [".imgrep-strip-0", "src", "src/a.c"]);
    assert!(!beneath::strip_single_top_dir(&dir).unwrap());
}

/// A .deb built by the real dpkg-deb, in each compression it offers,
/// unpacked through `deb::Deb` and the unpacker (DEB rules): the
/// same tree as `dpkg-deb -x` gives, absolute symlinks included.
#[test]
fn deb_packages_unpack_like_dpkg() {
    let work = tempfile::tempdir().unwrap();
    let pkg = work.path().join("pkg");
    fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    fs::write(
        pkg.join("DEBIAN/control"),
        "Package: imgrep-test\nVersion: 1.0\nArchitecture: amd64\n\
         Maintainer: imgrep tests <tests@invalid>\nDescription: test package\n",
    )
    .unwrap();
    fs::create_dir_all(pkg.join("usr/bin")).unwrap();
    fs::create_dir_all(pkg.join("lib64")).unwrap();
    fs::write(pkg.join("usr/bin/tool"), b"#!/bin/sh\necho tool\n").unwrap();
    fs::set_permissions(pkg.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("/usr/bin/tool", pkg.join("lib64/abs-link")).unwrap();
    for z in ["xz", "gzip", "zstd"] {
        let deb = work.path().join(format!("t-{z}.deb"));
        let built = Command::new("dpkg-deb")
            .arg(format!("-Z{z}"))
            .args(["--root-owner-group", "--build"])
            .arg(&pkg)
            .arg(&deb)
            .output();
        let Ok(built) = built else {
            eprintln!("SKIPPED: deb_packages_unpack_like_dpkg: dpkg-deb not available");
            return;
        };
        assert!(
            built.status.success(),
            "dpkg-deb -Z{z}: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        let want = work.path().join(format!("want-{z}"));
        let status = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&want)
            .status()
            .unwrap();
        assert!(status.success());

        let got = work.path().join(format!("got-{z}"));
        fs::create_dir(&got).unwrap();
        let mut package = imgrep::deb::Deb::open(&deb).unwrap();
        let data = package.data().unwrap();
        let kind = format!("{:?}", data.compression()).to_lowercase();
        assert_eq!(kind, if z == "gzip" { "gzip" } else { z });
        unpack::unpack(data, &got, &UnpackOptions::DEB).unwrap();
        assert_eq!(
            nar::hash_path(&got).unwrap(),
            nar::hash_path(&want).unwrap(),
            "{z}"
        );
        assert_eq!(
            fs::read_link(got.join("lib64/abs-link")).unwrap(),
            Path::new("/usr/bin/tool")
        );
    }
    let not_deb = work.path().join("pkg/usr/bin/tool");
    let err = imgrep::deb::Deb::open(&not_deb)
        .and_then(|mut d| d.data().map(|_| ()))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("usr/bin/tool") && err.contains("not a Debian binary package"),
        "{err}"
    );
}

/// `unpack_subtree`: only the members under the subtree land, rebased to
/// the target's root; every rule holds against the subtree, not the archive.
#[test]
fn subtree_unpacks_only_its_members_rebased() {
    let s = Sandbox::new();
    let tar = Tar::default()
        .dir("./")
        .dir("./usr/")
        .file("./usr/doc", b"not taken\n")
        .dir("./usr/share/mod/")
        .file("./usr/share/mod/a.scm", b"(a)\n")
        .dir("./usr/share/mod/lang/")
        .file("./usr/share/mod/lang/b.scm", b"(b)\n")
        .symlink("./usr/share/mod/lang/c.scm", "b.scm")
        .hardlink("./usr/share/mod/d.scm", "./usr/share/mod/a.scm")
        .file(
            "./usr/share/modx",
            b"a sibling whose name extends the subtree's\n",
        )
        .end();
    let report = unpack::unpack_subtree(&tar[..], &s.target(), &SRC, "usr/share/mod").unwrap();
    assert_eq!(
        report.entries, 5,
        "a.scm, lang/, lang/b.scm, lang/c.scm, d.scm"
    );
    let t = s.target();
    assert_eq!(fs::read(t.join("a.scm")).unwrap(), b"(a)\n");
    assert_eq!(fs::read(t.join("lang/b.scm")).unwrap(), b"(b)\n");
    assert_eq!(
        fs::read_link(t.join("lang/c.scm")).unwrap(),
        Path::new("b.scm")
    );
    assert_eq!(fs::metadata(t.join("d.scm")).unwrap().nlink(), 2);
    let mut top: Vec<_> = fs::read_dir(&t)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, ["a.scm", "d.scm", "lang"]);
    s.assert_outside_untouched();
}

#[test]
fn subtree_with_nothing_in_it_unpacks_nothing() {
    let s = Sandbox::new();
    let tar = Tar::default().file("usr/doc", b"x").end();
    let report = unpack::unpack_subtree(&tar[..], &s.target(), &SRC, "usr/share").unwrap();
    assert_eq!(report.entries, 0);
    assert_eq!(fs::read_dir(s.target()).unwrap().count(), 0);
}

#[test]
fn subtree_refuses_links_out_of_the_subtree_that_stay_in_the_archive() {
    // Contained in the archive, but not in the part unpacked.
    let s = Sandbox::new();
    let tar = Tar::default()
        .file("pkg/README", b"x")
        .dir("pkg/src/")
        .symlink("pkg/src/README", "../README")
        .end();
    let err = unpack::unpack_subtree(&tar[..], &s.target(), &SRC, "pkg/src").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("pkg/src/README") && msg.contains("outside the target"),
        "{msg}"
    );

    let s = Sandbox::new();
    let tar = Tar::default()
        .file("pkg/README", b"x")
        .hardlink("pkg/src/README", "pkg/README")
        .end();
    let err = unpack::unpack_subtree(&tar[..], &s.target(), &SRC, "pkg/src").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("outside the subtree"), "{msg}");
    s.assert_outside_untouched();
}

#[test]
fn subtree_path_may_not_climb() {
    let s = Sandbox::new();
    let tar = Tar::default().file("a", b"x").end();
    for bad in ["../outside", "/etc"] {
        let err = unpack::unpack_subtree(&tar[..], &s.target(), &SRC, bad).unwrap_err();
        assert!(err.to_string().contains("subtree"), "{bad}: {err}");
    }
    s.assert_outside_untouched();
}
