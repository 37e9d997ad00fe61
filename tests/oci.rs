//! OCI layouts written by imgrep: round trips, canonical JSON, refs, and the
//! real consumers (umoci, skopeo, podman) accepting them.

#[path = "oci_support/mod.rs"]
mod oci_support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use imgrep::digest::Digest;
use imgrep::layer::{Compression, PackOptions};
use imgrep::oci::{ImageLayer, ImageSpec, Layout};
use oci_support::{have, podman_run, run_ok};

fn tree(root: &Path, marker: &str) {
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("usr/share")).unwrap();
    fs::write(root.join("etc/marker"), marker).unwrap();
    fs::write(root.join(format!("usr/share/{marker}")), b"data\n").unwrap();
}

fn spec(name: &str, version: &str) -> ImageSpec {
    ImageSpec {
        name: name.into(),
        version: version.into(),
        source_date_epoch: imgrep::DEFAULT_SOURCE_DATE_EPOCH,
        entrypoint: Some(vec!["/bin/sh".into()]),
        env: vec!["PATH=/usr/bin:/bin".into()],
        working_dir: Some("/".into()),
        input_digest: Some(Digest::of(b"input")),
        sources: vec![format!(
            "{} https://example.org/src.tar.gz",
            Digest::of(b"src")
        )],
        labels: BTreeMap::from([("org.opencontainers.image.licenses".into(), "MIT".into())]),
        ..ImageSpec::default()
    }
}

fn one_layer_image(layout: &Layout, dir: &Path, s: &ImageSpec, c: Compression) -> Digest {
    let opts = PackOptions {
        compression: c,
        threads: 2,
        ..PackOptions::default()
    };
    let layer = layout.add_layer(dir, &opts).unwrap();
    let desc = layout
        .write_image(
            s,
            &[ImageLayer {
                layer,
                created_by: format!("test {}", s.ref_name()),
            }],
        )
        .unwrap();
    desc.digest().to_string().parse().unwrap()
}

#[test]
fn write_read_round_trip_with_canonical_json() {
    let tmp = tempfile::tempdir().unwrap();
    tree(&tmp.path().join("root"), "a");
    let layout = Layout::create(&tmp.path().join("layout")).unwrap();
    let s = spec("pkg", "1.0");
    let m = one_layer_image(&layout, &tmp.path().join("root"), &s, Compression::Gzip);

    let image = layout.read_image("pkg:1.0", true).unwrap();
    assert_eq!(image.manifest_digest, m);
    let cfg = image.config.config().as_ref().unwrap();
    assert_eq!(
        cfg.entrypoint().as_deref(),
        Some(&["/bin/sh".to_owned()][..])
    );
    assert_eq!(
        image.config.created().as_deref(),
        Some("1980-01-01T00:00:00Z")
    );
    let labels = cfg.labels().as_ref().unwrap();
    assert_eq!(labels["org.opencontainers.image.version"], "1.0");
    assert_eq!(
        labels["dev.imgrep.input-digest"],
        Digest::of(b"input").to_string()
    );
    let ann = image.manifest.annotations().as_ref().unwrap();
    assert_eq!(
        ann["org.opencontainers.image.created"],
        "1980-01-01T00:00:00Z"
    );
    assert_eq!(
        ann["dev.imgrep.sources"],
        format!(
            "[\"{} https://example.org/src.tar.gz\"]",
            Digest::of(b"src")
        )
    );

    // Every JSON file is canonical: re-serialising its parse gives the same bytes.
    let mut files = vec![
        layout.path().join("index.json"),
        layout.path().join("oci-layout"),
    ];
    files.push(layout.blob_path(&m));
    files.push(layout.blob_path(&image.config_digest));
    for f in files {
        let bytes = fs::read(&f).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            imgrep::canonical::to_vec(&v).unwrap(),
            bytes,
            "{}",
            f.display()
        );
    }
}

#[test]
fn refs_are_replaced_and_sorted() {
    let tmp = tempfile::tempdir().unwrap();
    tree(&tmp.path().join("a"), "a");
    tree(&tmp.path().join("b"), "b");
    let layout = Layout::create(&tmp.path().join("layout")).unwrap();
    one_layer_image(
        &layout,
        &tmp.path().join("b"),
        &spec("zlib", "1.3"),
        Compression::Gzip,
    );
    one_layer_image(
        &layout,
        &tmp.path().join("a"),
        &spec("musl", "1.2.5"),
        Compression::Gzip,
    );
    let second = one_layer_image(
        &layout,
        &tmp.path().join("b"),
        &spec("musl", "1.2.5"),
        Compression::Zstd,
    );
    assert_eq!(layout.refs().unwrap(), vec!["musl:1.2.5", "zlib:1.3"]);
    assert_eq!(
        layout
            .read_image("musl:1.2.5", true)
            .unwrap()
            .manifest_digest,
        second
    );
    let err = layout.read_image("musl:9", false).unwrap_err().to_string();
    assert!(err.contains("no image with ref name \"musl:9\""), "{err}");
    let err = layout
        .write_image(&spec("bad name", "1"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid ref name"), "{err}");
    let report = imgrep::oci::check(layout.path()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn a_copied_blob_is_a_file_of_its_own() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let store = Layout::create(&tmp.path().join("store")).unwrap();
    let out = Layout::create(&tmp.path().join("out")).unwrap();
    let (d, _) = store.put_blob(b"layer bytes").unwrap();
    out.copy_blob(&store, &d).unwrap();
    let (src, dst) = (store.blob_path(&d), out.blob_path(&d));
    let (ms, md) = (fs::metadata(&src).unwrap(), fs::metadata(&dst).unwrap());
    assert_ne!(
        (ms.dev(), ms.ino()),
        (md.dev(), md.ino()),
        "not a hard link"
    );
    assert_eq!((ms.nlink(), md.nlink()), (1, 1));
    assert_eq!(md.mode() & 0o777, 0o644);
    // Editing out/ in place leaves the store's blob as it was.
    fs::OpenOptions::new()
        .append(true)
        .open(&dst)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b" edited"))
        .unwrap();
    assert_eq!(Digest::of(&fs::read(&src).unwrap()), d);
    // A blob already there is kept (it is complete, or the user's business)...
    out.copy_blob(&store, &d).unwrap();
    assert_eq!(fs::read(&dst).unwrap(), b"layer bytes edited");
    // ...unless it is the store's own file, linked by an older imgrep.
    fs::remove_file(&dst).unwrap();
    fs::hard_link(&src, &dst).unwrap();
    out.copy_blob(&store, &d).unwrap();
    let md = fs::metadata(&dst).unwrap();
    assert_ne!(fs::metadata(&src).unwrap().ino(), md.ino());
    assert_eq!(fs::metadata(&src).unwrap().nlink(), 1);
    assert_eq!(Digest::of(&fs::read(&dst).unwrap()), d);
}

#[test]
fn same_inputs_give_same_layout_bytes_anywhere() {
    let tmp = tempfile::tempdir().unwrap();
    tree(&tmp.path().join("x/root"), "same");
    tree(&tmp.path().join("y/other/root"), "same");
    let mut digests = Vec::new();
    let mut indexes = Vec::new();
    for (dir, out) in [("x/root", "l1"), ("y/other/root", "deep/l2")] {
        let layout = Layout::create(&tmp.path().join(out)).unwrap();
        digests.push(one_layer_image(
            &layout,
            &tmp.path().join(dir),
            &spec("p", "1"),
            Compression::Gzip,
        ));
        indexes.push(fs::read(layout.path().join("index.json")).unwrap());
    }
    assert_eq!(digests[0], digests[1]);
    assert_eq!(indexes[0], indexes[1]);
}

/// A bundle stacks several packages' layers; umoci applies them in order.
#[test]
fn bundle_image_stacks_layers_for_umoci() {
    if !have("umoci") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    tree(&tmp.path().join("base"), "base");
    tree(&tmp.path().join("top"), "top");
    let layout = Layout::create(&tmp.path().join("layout")).unwrap();
    let opts = PackOptions::default();
    let layers = ["base", "top"]
        .iter()
        .map(|d| ImageLayer {
            layer: layout.add_layer(&tmp.path().join(d), &opts).unwrap(),
            created_by: format!("imgrep build {d}"),
        })
        .collect::<Vec<_>>();
    layout.write_image(&spec("bundle", "1"), &layers).unwrap();
    let image = layout.read_image("bundle:1", true).unwrap();
    assert_eq!(image.manifest.layers().len(), 2);
    assert_eq!(image.config.history().as_ref().unwrap().len(), 2);

    let bundle = tmp.path().join("bundle");
    let mut cmd = Command::new("umoci");
    cmd.arg("unpack");
    if !nix::unistd::geteuid().is_root() {
        cmd.arg("--rootless");
    }
    run_ok(
        cmd.arg("--image")
            .arg(format!("{}:bundle:1", layout.path().display()))
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        fs::read_to_string(rootfs.join("etc/marker")).unwrap(),
        "top"
    );
    assert!(rootfs.join("usr/share/base").is_file() && rootfs.join("usr/share/top").is_file());
}

/// umoci checks blob digests and diff_ids (it does not read zstd layers).
#[test]
fn umoci_unpacks_gzip_and_plain_layers() {
    if !have("umoci") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    tree(&tmp.path().join("root"), "m");
    let layout = Layout::create(&tmp.path().join("layout")).unwrap();
    for (c, r) in [(Compression::Gzip, "1-gzip"), (Compression::None, "1-none")] {
        one_layer_image(&layout, &tmp.path().join("root"), &spec("p", r), c);
        let bundle = tmp.path().join(r);
        let mut cmd = Command::new("umoci");
        cmd.arg("unpack");
        if !nix::unistd::geteuid().is_root() {
            cmd.arg("--rootless");
        }
        run_ok(
            cmd.arg("--image")
                .arg(format!("{}:p:{r}", layout.path().display()))
                .arg(&bundle),
        );
        assert_eq!(
            fs::read_to_string(bundle.join("rootfs/etc/marker")).unwrap(),
            "m"
        );
    }
}

/// skopeo parses `oci:LAYOUT:NAME:VERSION` (path up to the first colon) and
/// checks blob digests when copying, zstd included.
#[test]
fn skopeo_inspects_and_copies() {
    if !have("skopeo") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    tree(&tmp.path().join("root"), "s");
    let layout = Layout::create(&tmp.path().join("layout")).unwrap();
    for (c, v) in [(Compression::Gzip, "2.0"), (Compression::Zstd, "2.0-zstd")] {
        let m = one_layer_image(&layout, &tmp.path().join("root"), &spec("tool", v), c);
        let image = format!("oci:{}:tool:{v}", layout.path().display());
        let out = run_ok(Command::new("skopeo").args(["inspect", &image]));
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["Digest"], m.to_string());
        assert_eq!(j["Created"], "1980-01-01T00:00:00Z");
        assert_eq!(j["Labels"]["org.opencontainers.image.version"], v);
        let dir = tmp.path().join(format!("copy-{v}"));
        run_ok(
            Command::new("skopeo")
                .args(["copy", &image])
                .arg(format!("dir:{}", dir.display())),
        );
        let manifest = fs::read(dir.join("manifest.json")).unwrap();
        assert_eq!(Digest::of(&manifest), m, "skopeo kept the manifest bytes");
    }
}

/// podman runs an image built around Debian's static busybox.
#[test]
fn podman_runs_busybox_image() {
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        eprintln!("SKIPPED: /bin/busybox missing (apt-get install busybox-static)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy(busybox, root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    for d in ["proc", "dev", "sys", "tmp", "etc"] {
        fs::create_dir(root.join(d)).unwrap();
    }
    let layout = tmp.path().join("layout");
    let out = run_ok(
        Command::new(env!("CARGO_BIN_EXE_imgrep"))
            .args(["pack"])
            .arg(&root)
            .arg("--out")
            .arg(&layout)
            .args(["--tag", "busybox:1.35.0", "--entrypoint", "/bin/busybox"])
            .args(["--cmd", "echo", "--cmd", "hello from an imgrep layer"]),
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sha256:"));
    let Some(out) = podman_run(&layout, "busybox:1.35.0", &[]) else {
        return;
    };
    assert!(
        out.status.success(),
        "podman: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from an imgrep layer\n"
    );
}

fn imgrep(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_imgrep"))
        .args(args)
        .arg(dir)
        .output()
        .unwrap()
}

fn check_lines(layout: &Path) -> (i32, String) {
    let out = imgrep(&["check"], layout);
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

#[test]
fn check_names_each_corrupted_blob() {
    let tmp = tempfile::tempdir().unwrap();
    tree(&tmp.path().join("root"), "c");
    let layout = Layout::create(&tmp.path().join("layout")).unwrap();
    let m = one_layer_image(
        &layout,
        &tmp.path().join("root"),
        &spec("c", "1"),
        Compression::Gzip,
    );
    let image = layout.read_image("c:1", true).unwrap();
    let layer: Digest = image.manifest.layers()[0]
        .digest()
        .to_string()
        .parse()
        .unwrap();
    assert_eq!(check_lines(layout.path()), (0, String::new()));
    let json = imgrep(&["check", "--json"], layout.path());
    let j: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(j["problems"], serde_json::json!([]));
    assert_eq!(j["blobs_verified"], 3);

    // One flipped byte in the layer blob.
    let lp = layout.blob_path(&layer);
    let original = fs::read(&lp).unwrap();
    let mut bytes = original.clone();
    bytes[original.len() / 2] ^= 0x20;
    fs::write(&lp, &bytes).unwrap();
    let (code, out) = check_lines(layout.path());
    assert_eq!(code, 1);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with(&format!(
            "blobs/sha256/{}: content has digest sha256:",
            layer.hex()
        )),
        "{out}"
    );
    assert!(out.contains("layer 0 of \"c:1\""), "{out}");
    let err = layout.read_image("c:1", false).unwrap_err().to_string();
    assert!(err.contains(&layer.hex()), "{err}");

    // A wrong size: one byte appended to the config.
    fs::write(&lp, &original).unwrap();
    let cp = layout.blob_path(&image.config_digest);
    let mut cfg = fs::read(&cp).unwrap();
    let cfg_len = cfg.len();
    cfg.push(b'\n');
    fs::write(&cp, &cfg).unwrap();
    let (code, out) = check_lines(layout.path());
    assert_eq!(code, 1);
    assert_eq!(
        out.lines().next().unwrap(),
        format!(
            "blobs/sha256/{}: size {}, expected {cfg_len} (referenced by manifest {m})",
            image.config_digest.hex(),
            cfg_len + 1
        )
    );
    cfg.pop();
    fs::write(&cp, &cfg).unwrap();

    // A missing manifest.
    fs::remove_file(layout.blob_path(&m)).unwrap();
    let (code, out) = check_lines(layout.path());
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!("blobs/sha256/{}: missing", m.hex())),
        "{out}"
    );

    // Not a layout at all: an input error.
    let out = imgrep(&["check"], &tmp.path().join("root"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an OCI image layout"));
}

#[test]
fn check_verifies_diff_ids() {
    let tmp = tempfile::tempdir().unwrap();
    tree(&tmp.path().join("root"), "d");
    let layout = Layout::create(&tmp.path().join("layout")).unwrap();
    let mut layer = layout
        .add_layer(&tmp.path().join("root"), &PackOptions::default())
        .unwrap();
    layer.diff_id = Digest::of(b"not the tar stream");
    layout
        .write_image(
            &spec("d", "1"),
            &[ImageLayer {
                layer: layer.clone(),
                created_by: "x".into(),
            }],
        )
        .unwrap();
    assert!(
        layout.read_image("d:1", false).is_ok(),
        "blobs themselves are intact"
    );
    let err = layout.read_image("d:1", true).unwrap_err().to_string();
    assert!(err.contains("config says diff_id"), "{err}");
    let (code, out) = check_lines(layout.path());
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!(
            "blobs/sha256/{}: uncompressed content has digest",
            layer.digest.hex()
        )),
        "{out}"
    );
}

#[test]
fn pack_is_reproducible_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    tree(&tmp.path().join("root"), "cli");
    let mut outs = Vec::new();
    for (layout, threads) in [("one", "1"), ("two", "4")] {
        let out = run_ok(
            Command::new(env!("CARGO_BIN_EXE_imgrep"))
                .args(["--json", "pack"])
                .arg(tmp.path().join("root"))
                .arg("--out")
                .arg(tmp.path().join(layout))
                .args([
                    "--tag",
                    "cli:0.1",
                    "--threads",
                    threads,
                    "--compression",
                    "zstd",
                ]),
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            j["layer"]["media_type"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
        outs.push(j["manifest"].clone());
    }
    assert_eq!(outs[0], outs[1]);
    let bad = Command::new(env!("CARGO_BIN_EXE_imgrep"))
        .args(["pack"])
        .arg(tmp.path().join("root"))
        .arg("--out")
        .arg(tmp.path().join("bad"))
        .args(["--tag", "no-version"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected NAME:VERSION"));
}
