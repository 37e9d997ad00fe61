//! Layer packing: determinism across how a tree was made, golden digests,
//! the tar structure, and refusals. GNU tar reads what we write.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use imgrep::layer::{self, Compression, LayerInfo, PackOptions};
use proptest::prelude::*;

fn pack_bytes(dir: &Path, opts: &PackOptions) -> (LayerInfo, Vec<u8>) {
    let mut out = Vec::new();
    let info = layer::pack(dir, opts, &mut out).expect("pack");
    (info, out)
}

fn opts(compression: Compression, threads: usize) -> PackOptions {
    PackOptions {
        compression,
        threads,
        ..PackOptions::default()
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A tiny deterministic generator, so trees vary without another dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone)]
enum Node {
    Dir,
    File {
        content: Vec<u8>,
        exec: bool,
    },
    Symlink(String),
    /// Another name for the file at this path.
    HardLink(PathBuf),
}

type Tree = BTreeMap<PathBuf, Node>;

#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File(Vec<u8>, bool),
    Symlink(String),
    HardLink,
}

/// Turns generated (path, kind) pairs into a consistent tree: parents are
/// directories, hard links name an earlier file.
fn build_tree(items: Vec<(Vec<&'static str>, Kind)>) -> Tree {
    let mut tree = Tree::new();
    let mut files: Vec<PathBuf> = Vec::new();
    'items: for (components, kind) in items {
        let path: PathBuf = components.iter().collect();
        let mut parent = PathBuf::new();
        for c in &components[..components.len() - 1] {
            parent.push(c);
            match tree.get(&parent) {
                Some(Node::Dir) | None => {}
                Some(_) => continue 'items,
            }
        }
        if tree.contains_key(&path) {
            continue;
        }
        let mut parent = PathBuf::new();
        for c in &components[..components.len() - 1] {
            parent.push(c);
            tree.insert(parent.clone(), Node::Dir);
        }
        let node = match kind {
            Kind::Dir => Node::Dir,
            Kind::File(content, exec) => {
                files.push(path.clone());
                Node::File { content, exec }
            }
            Kind::Symlink(t) => Node::Symlink(t),
            Kind::HardLink => match files.first() {
                Some(f) => Node::HardLink(f.clone()),
                None => Node::File {
                    content: Vec::new(),
                    exec: false,
                },
            },
        };
        tree.insert(path, node);
    }
    tree
}

fn tree_strategy() -> impl Strategy<Value = Tree> {
    let name = prop::sample::select(vec![
        "a", "a-b", "a.b", "a0", "B", "b", "z", "\u{e4}", "x y",
    ]);
    let path = prop::collection::vec(name, 1..4);
    let kind = prop_oneof![
        Just(Kind::Dir),
        (prop::collection::vec(any::<u8>(), 0..3000), any::<bool>())
            .prop_map(|(c, x)| Kind::File(c, x)),
        "[a-z./]{1,30}".prop_map(Kind::Symlink),
        Just(Kind::HardLink),
    ];
    prop::collection::vec((path, kind), 1..30).prop_map(build_tree)
}

/// Creates `tree` under `root` in an order, with modes beyond the documented
/// rule, owners and mtimes all chosen by `seed`.
fn create(tree: &Tree, root: &Path, seed: u64) {
    let mut rng = Lcg(seed);
    fs::create_dir_all(root).unwrap();
    let mut order: Vec<(&PathBuf, &Node)> = tree.iter().collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    // Hard links last, so that their targets exist.
    order.sort_by_key(|(_, n)| matches!(n, Node::HardLink(_)));
    for (path, node) in &order {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        match node {
            Node::Dir => fs::create_dir_all(&p).unwrap(),
            Node::File { content, exec } => {
                fs::write(&p, content).unwrap();
                let noise = rng.below(0o100) as u32 & 0o077;
                let mode = 0o600 | noise | if *exec { 0o100 } else { 0 };
                fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            }
            Node::Symlink(t) => symlink(t, &p).unwrap(),
            Node::HardLink(target) => fs::hard_link(root.join(target), &p).unwrap(),
        }
    }
    for (path, node) in tree.iter().rev() {
        let p = root.join(path);
        if let Node::Dir = node {
            let mode = 0o700 | (rng.below(0o100) as u32 & 0o077);
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        }
        if is_root() {
            let (uid, gid) = (rng.below(70_000) as u32, rng.below(70_000) as u32);
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid)).unwrap();
        }
        let t = nix::sys::time::TimeSpec::new(
            rng.below(2_000_000_000) as i64,
            rng.below(1_000_000_000) as i64,
        );
        nix::sys::stat::utimensat(
            None,
            &p,
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn same_tree_packs_to_same_bytes(tree in tree_strategy(), s1 in any::<u64>(), s2 in any::<u64>()) {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("one"), tmp.path().join("two/deeper"));
        create(&tree, &a, s1);
        create(&tree, &b, s2);
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let (ia, ba) = pack_bytes(&a, &opts(compression, 1));
            let (ib, bb) = pack_bytes(&b, &opts(compression, 3));
            prop_assert_eq!(&ia, &ib);
            prop_assert!(ba == bb, "{:?} bytes differ", compression);
        }
    }
}

/// The fixed tree of the golden digests; every rule of docs/layers.md shows in it.
fn golden_tree(root: &Path) {
    let mut rng = Lcg(7);
    let w = |p: &str, c: &[u8], mode: u32| {
        let p = root.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, c).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    w("bin/tool", b"#!/bin/sh\necho tool\n", 0o750);
    symlink("tool", root.join("bin/sh")).unwrap();
    w("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o600);
    w("etc/a-b", b"sorts before etc/a/\n", 0o644);
    w("etc/a/c", b"inside etc/a/\n", 0o664);
    w("usr/bin/su", b"setuid by declaration\n", 0o755);
    fs::hard_link(root.join("usr/bin/su"), root.join("usr/bin/su2")).unwrap();
    fs::create_dir_all(root.join("var/empty")).unwrap();
    let long_name = format!("share/{}", "n".repeat(120));
    w(&long_name, b"a name longer than ustar's 100 bytes\n", 0o644);
    let deep = format!("{}/file", ["d"; 80].join("/"));
    w(&deep, b"fits ustar's prefix and name fields\n", 0o644);
    symlink("t".repeat(150), root.join("share/long-link")).unwrap();
    // Three and a half gzip blocks of mixed noise and text.
    let big: Vec<u8> = (0..3 * (1 << 20) + 500_000)
        .map(|i| {
            if i % 5 < 2 {
                rng.next() as u8
            } else {
                b"layer "[i % 6]
            }
        })
        .collect();
    w("lib/big.bin", &big, 0o644);
}

fn golden_opts(compression: Compression) -> PackOptions {
    PackOptions {
        compression,
        threads: 2,
        special_modes: BTreeMap::from([("usr/bin/su".to_owned(), 0o4000)]),
        ..PackOptions::default()
    }
}

/// Any change here is a change of the layer format: bump
/// layer::FORMAT_VERSION and docs/layers.md with it.
#[test]
fn golden_digests() {
    assert_eq!(layer::FORMAT_VERSION, 4);
    let tmp = tempfile::tempdir().unwrap();
    golden_tree(tmp.path());
    let got: Vec<(Compression, String, String, u64)> =
        [Compression::None, Compression::Gzip, Compression::Zstd]
            .into_iter()
            .map(|c| {
                let (info, _) = pack_bytes(tmp.path(), &golden_opts(c));
                (
                    c,
                    info.diff_id.to_string(),
                    info.digest.to_string(),
                    info.size,
                )
            })
            .collect();
    let diff_id = "sha256:9a4f86fcc3682929bccb194c7e2f59286c4c3049cde686ace0e3f6584f8ab1ce";
    let expected = [
        (
            Compression::None,
            diff_id.to_owned(),
            diff_id.to_owned(),
            3_703_808u64,
        ),
        (
            Compression::Gzip,
            diff_id.to_owned(),
            "sha256:c8372be196e64b77c886458d726bda7bfc2e0757f6f47840e01995f92378125a".to_owned(),
            2_216_195,
        ),
        (
            Compression::Zstd,
            diff_id.to_owned(),
            "sha256:f81b0236a0619363eb5b1287a7c4cb4f38d4e27f86b6a5ef166349848be635dd".to_owned(),
            2_498_711,
        ),
    ];
    assert_eq!(got, expected);
}

/// Every header as the format says, entries in byte-wise order, PAX only
/// where needed, exactly two zero blocks at the end.
#[test]
fn tar_structure() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    golden_tree(&root);
    let (info, bytes) = pack_bytes(&root, &golden_opts(Compression::None));
    assert_eq!(info.digest, info.diff_id);
    assert_eq!(info.size, bytes.len() as u64);

    let mut raw = tar::Archive::new(&bytes[..]);
    let mut pax_headers = 0;
    for e in raw.entries().unwrap().raw(true) {
        let e = e.unwrap();
        let h = e.header();
        assert!(h.as_ustar().is_some(), "ustar header");
        assert_eq!(h.mtime().unwrap(), imgrep::DEFAULT_SOURCE_DATE_EPOCH as u64);
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        assert_eq!(h.groupname_bytes(), Some(&b""[..]));
        if h.entry_type() == tar::EntryType::XHeader {
            pax_headers += 1;
        }
    }
    // The 125-byte name and the 150-byte link target; the 166-byte deep path fits ustar.
    assert_eq!(pax_headers, 2);

    let mut names = Vec::new();
    let mut end = 0;
    let mut archive = tar::Archive::new(&bytes[..]);
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        let path = e.path_bytes().into_owned();
        let h = e.header();
        let mode = h.mode().unwrap();
        let name = String::from_utf8(path.clone()).unwrap();
        let want = match h.entry_type() {
            tar::EntryType::Directory => 0o755,
            tar::EntryType::Symlink => 0o777,
            _ if name == "usr/bin/su" || name == "usr/bin/su2" => 0o4755,
            _ if name == "bin/tool" => 0o755,
            _ => 0o644,
        };
        assert_eq!(mode, want, "mode of {name}");
        if name == "usr/bin/su2" {
            assert_eq!(h.entry_type(), tar::EntryType::Link);
            assert_eq!(&*e.link_name_bytes().unwrap(), b"usr/bin/su");
        }
        end = e.raw_file_position() + e.size().div_ceil(512) * 512;
        names.push(path);
    }
    assert!(names.windows(2).all(|w| w[0] < w[1]), "byte-wise order");
    let name_strs: Vec<String> = names
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    let pos = |n: &str| {
        name_strs
            .iter()
            .position(|x| x == n)
            .unwrap_or_else(|| panic!("{n} missing"))
    };
    assert!(pos("etc/a-b") < pos("etc/a/") && pos("etc/a/") < pos("etc/a/c"));
    assert!(name_strs.contains(&"var/empty/".to_owned()));
    assert_eq!(
        bytes.len() as u64,
        end + 1024,
        "exactly two zero blocks after the last entry"
    );
    assert!(bytes[end as usize..].iter().all(|&b| b == 0));

    // GNU tar reads it back to the same contents.
    let out = tmp.path().join("gnu");
    fs::create_dir(&out).unwrap();
    let archive_path = tmp.path().join("layer.tar");
    fs::write(&archive_path, &bytes).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&archive_path)
        .arg("-C")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let diff = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(&root)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
}

#[test]
fn gzip_and_zstd_decompress_to_the_tar_stream() {
    let tmp = tempfile::tempdir().unwrap();
    golden_tree(tmp.path());
    let (plain, tar_bytes) = pack_bytes(tmp.path(), &golden_opts(Compression::None));
    let (gz, gz_bytes) = pack_bytes(tmp.path(), &golden_opts(Compression::Gzip));
    let (zs, zs_bytes) = pack_bytes(tmp.path(), &golden_opts(Compression::Zstd));
    assert_eq!((gz.diff_id, zs.diff_id), (plain.diff_id, plain.diff_id));
    assert_eq!(gz.media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
    assert_eq!(zs.media_type, "application/vnd.oci.image.layer.v1.tar+zstd");
    let mut back = Vec::new();
    flate2::read::GzDecoder::new(&gz_bytes[..])
        .read_to_end(&mut back)
        .unwrap();
    assert!(
        back == tar_bytes,
        "gzip is one member holding the whole stream"
    );
    assert!(zstd::decode_all(&zs_bytes[..]).unwrap() == tar_bytes);
    // GNU gzip and zstd agree (including gzip's CRC and length check).
    for (tool, bytes) in [("gzip", &gz_bytes), ("zstd", &zs_bytes)] {
        let f = tmp.path().join(format!("layer.{tool}"));
        fs::write(&f, bytes).unwrap();
        let out = Command::new(tool).arg("-dc").arg(&f).output().unwrap();
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == tar_bytes, "{tool} output differs");
    }
}

#[test]
fn hard_links_point_at_the_first_path_in_sorted_order() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("z"), b"same inode").unwrap();
    fs::hard_link(tmp.path().join("z"), tmp.path().join("a")).unwrap();
    fs::create_dir(tmp.path().join("m")).unwrap();
    fs::hard_link(tmp.path().join("z"), tmp.path().join("m/n")).unwrap();
    let (_, bytes) = pack_bytes(tmp.path(), &opts(Compression::None, 1));
    let mut archive = tar::Archive::new(&bytes[..]);
    let entries: Vec<(String, tar::EntryType, Option<String>, u64)> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                e.header().entry_type(),
                e.link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned()),
                e.size(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        vec![
            ("a".into(), tar::EntryType::Regular, None, 10),
            ("m/".into(), tar::EntryType::Directory, None, 0),
            ("m/n".into(), tar::EntryType::Link, Some("a".into()), 0),
            ("z".into(), tar::EntryType::Link, Some("a".into()), 0),
        ]
    );
}

fn pack_err(dir: &Path, o: &PackOptions) -> String {
    layer::pack(dir, o, std::io::sink())
        .unwrap_err()
        .to_string()
}

#[test]
fn special_files_are_refused_by_path() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("d/fifo");
    fs::create_dir(tmp.path().join("d")).unwrap();
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let msg = pack_err(tmp.path(), &PackOptions::default());
    assert!(
        msg.contains(&fifo.display().to_string()) && msg.contains("fifo"),
        "{msg}"
    );
    fs::remove_file(&fifo).unwrap();

    let sock = tmp.path().join("d/sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let msg = pack_err(tmp.path(), &PackOptions::default());
    assert!(
        msg.contains(&sock.display().to_string()) && msg.contains("socket"),
        "{msg}"
    );
    fs::remove_file(&sock).unwrap();

    if is_root() {
        let dev = tmp.path().join("d/null");
        nix::sys::stat::mknod(
            &dev,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        let msg = pack_err(tmp.path(), &PackOptions::default());
        assert!(
            msg.contains(&dev.display().to_string()) && msg.contains("character device"),
            "{msg}"
        );
    } else {
        eprintln!("SKIPPED: device node refusal needs root to mknod");
    }
}

#[test]
fn special_modes_only_where_declared() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    fs::write(p.join("undeclared"), b"x").unwrap();
    fs::set_permissions(p.join("undeclared"), fs::Permissions::from_mode(0o6755)).unwrap();
    fs::create_dir(p.join("tmp")).unwrap();
    fs::set_permissions(p.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    symlink("undeclared", p.join("link")).unwrap();
    let mut o = opts(Compression::None, 1);
    o.special_modes.insert("tmp".into(), 0o1000);
    let (_, bytes) = pack_bytes(p, &o);
    let modes: BTreeMap<String, u32> = tar::Archive::new(&bytes[..])
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                e.header().mode().unwrap(),
            )
        })
        .collect();
    assert_eq!(modes["undeclared"], 0o755);
    assert_eq!(modes["tmp/"], 0o1755);
    assert_eq!(modes["link"], 0o777);

    o.special_modes.insert("missing".into(), 0o4000);
    let msg = pack_err(p, &o);
    assert!(
        msg.contains("\"missing\"") && msg.contains("not in the tree"),
        "{msg}"
    );
    o.special_modes.remove("missing");
    o.special_modes.insert("link".into(), 0o4000);
    assert!(pack_err(p, &o).contains("symbolic link"));
    o.special_modes.clear();
    fs::hard_link(p.join("undeclared"), p.join("zlink")).unwrap();
    o.special_modes.insert("zlink".into(), 0o4000);
    assert!(pack_err(p, &o).contains("a hard link"));
    o.special_modes.clear();
    o.special_modes.insert("tmp".into(), 0o1644);
    assert!(pack_err(p, &o).contains("outside setuid/setgid/sticky"));
}

#[test]
fn epoch_is_every_mtime_and_must_fit_ustar() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("f"), b"x").unwrap();
    let mut o = opts(Compression::None, 1);
    o.source_date_epoch = 1_700_000_000;
    let (_, bytes) = pack_bytes(tmp.path(), &o);
    let mut archive = tar::Archive::new(&bytes[..]);
    let e = archive.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(e.header().mtime().unwrap(), 1_700_000_000);
    for bad in [-1, 1 << 33] {
        o.source_date_epoch = bad;
        assert!(pack_err(tmp.path(), &o).contains("SOURCE_DATE_EPOCH"));
    }
}

#[test]
fn empty_tree_is_two_zero_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let (info, bytes) = pack_bytes(tmp.path(), &opts(Compression::None, 1));
    assert_eq!(bytes, vec![0u8; 1024]);
    assert_eq!(info.size, 1024);
}

#[test]
fn pack_to_blob_dir_names_the_blob_by_its_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    fs::create_dir(&tree).unwrap();
    fs::write(tree.join("f"), b"blob").unwrap();
    let blobs = tmp.path().join("blobs/sha256");
    let info = layer::pack_to_blob_dir(&tree, &opts(Compression::Gzip, 2), &blobs).unwrap();
    let names: Vec<String> = fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec![info.digest.hex()]);
    let bytes = fs::read(blobs.join(info.digest.hex())).unwrap();
    assert_eq!(imgrep::digest::Digest::of(&bytes), info.digest);
    assert_eq!(bytes.len() as u64, info.size);
    let err = layer::pack_to_blob_dir(&tmp.path().join("absent"), &PackOptions::default(), &blobs)
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent"), "{err}");
    assert_eq!(
        fs::read_dir(&blobs).unwrap().count(),
        1,
        "no temporary file left"
    );
}

/// A destination that takes `room` bytes and then reports a full disk.
struct FullDisk {
    room: usize,
}

impl std::io::Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.room {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "no space left on the test's disk",
            ));
        }
        self.room -= buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failing_destination_fails_the_pack_with_its_error() {
    let tmp = tempfile::tempdir().unwrap();
    // Incompressible (xorshift64), and more than every pipeline stage can queue.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..40 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    fs::write(tmp.path().join("noise"), &noise).unwrap();
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        for threads in [1, 2] {
            let err = layer::pack(
                tmp.path(),
                &opts(compression, threads),
                FullDisk { room: 3 << 20 },
            )
            .unwrap_err();
            let shown = err.to_string();
            assert!(
                matches!(&err, layer::Error::Write(e) if e.kind() == std::io::ErrorKind::StorageFull),
                "{compression:?} x{threads}: {shown}"
            );
            assert!(
                shown.contains("no space left on the test's disk"),
                "{shown}"
            );
        }
    }
}
