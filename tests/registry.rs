//! `imgrep push` and `imgrep pull` against Debian's docker-registry started
//! on loopback by each test, with skopeo as the second client: digests
//! agree both ways, chunked uploads, basic auth, and a registry killed in
//! the middle of a transfer.

#[path = "registry_support/mod.rs"]
mod registry_support;
#[path = "sign_support/mod.rs"]
mod sign_support;

use registry_support::Registry;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use imgrep::digest::Digest;

fn have_skopeo(test: &str) -> bool {
    let ok = Command::new("skopeo")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: {test}: skopeo is not installed (apt-get install skopeo)");
    }
    ok
}

fn imgrep(args: &[&str], env: &[(&str, &str)]) -> Output {
    imgrep_stdin(args, env, None)
}

fn imgrep_stdin(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgrep"));
    cmd.args(args)
        .env_remove("IMGREP_REGISTRY_USER")
        .env_remove("IMGREP_REGISTRY_PASSWORD")
        .env_remove("IMGREP_OFFLINE")
        .env("DOCKER_CONFIG", "/nonexistent")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("running imgrep");
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("running a tool");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `imgrep pack` of a tree holding `marker` and `random` bytes of noise
/// (incompressible, so the layer is about that large) into `layout` as
/// `tag`, gzip-compressed (what skopeo copies unchanged) or not (`none`:
/// fast for large layers); returns the manifest digest.
fn pack(work: &Path, layout: &Path, tag: &str, marker: &str, random: usize) -> Digest {
    pack_with(work, layout, tag, marker, random, "gzip")
}

fn pack_with(
    work: &Path,
    layout: &Path,
    tag: &str,
    marker: &str,
    random: usize,
    compression: &str,
) -> Digest {
    let tree = work.join(format!("tree-{marker}"));
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/marker"), marker).unwrap();
    let mut noise = vec![0u8; random];
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut noise)
        .unwrap();
    fs::write(tree.join("noise"), noise).unwrap();
    let out = imgrep(
        &[
            "pack",
            tree.to_str().unwrap(),
            "--out",
            layout.to_str().unwrap(),
            "--tag",
            tag,
            "--compression",
            compression,
        ],
        &[],
    );
    ok(&out).trim().parse().unwrap()
}

/// `skopeo inspect --raw` of a registry image: the sha256 of the manifest
/// bytes the registry serves, and the manifest.
fn skopeo_manifest(reference: &str) -> (Digest, serde_json::Value) {
    let raw = run_ok(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]));
    (
        Digest::of(raw.as_bytes()),
        serde_json::from_str(&raw).unwrap(),
    )
}

fn blob_paths(layout: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(layout.join("blobs/sha256"))
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn skopeo_reads_what_imgrep_pushed() {
    let test = "skopeo_reads_what_imgrep_pushed";
    let Some(reg) = Registry::start(test, None) else {
        return;
    };
    if !have_skopeo(test) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("out");
    let digest = pack(work.path(), &layout, "demo:1.0", "a", 100_000);
    let target = format!("{}/imgrep/demo", reg.host());
    let out = imgrep(
        &[
            "push",
            "--layout",
            layout.to_str().unwrap(),
            "demo:1.0",
            &target,
        ],
        &[],
    );
    assert_eq!(ok(&out).trim(), digest.to_string());
    assert!(stderr(&out).contains(&format!("pushed demo:1.0 to {target}:1.0@{digest}")));
    let (served, manifest) = skopeo_manifest(&format!("{target}:1.0"));
    assert_eq!(served, digest);
    let image = imgrep::oci::Layout::open(&layout)
        .unwrap()
        .read_image("demo:1.0", false)
        .unwrap();
    assert_eq!(
        manifest["config"]["digest"].as_str().unwrap(),
        image.config_digest.to_string()
    );
    let inspect: serde_json::Value = serde_json::from_str(&run_ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{target}:1.0"),
    ])))
    .unwrap();
    assert_eq!(inspect["Digest"].as_str().unwrap(), digest.to_string());
    assert_eq!(
        inspect["Layers"][0].as_str().unwrap(),
        image.manifest.layers()[0].digest().to_string()
    );
    // A second push finds every blob present (HEAD) and uploads none.
    let posts = reg.requests("POST", "/v2/imgrep/demo/blobs/uploads/");
    assert_eq!(posts, 2, "config and layer uploaded once:\n{}", reg.log());
    let out = imgrep(
        &[
            "--json",
            "push",
            "--layout",
            layout.to_str().unwrap(),
            "demo:1.0",
            &format!("{target}:again"),
        ],
        &[],
    );
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v["digest"], digest.to_string());
    assert_eq!(v["reference"], format!("{target}:again"));
    assert_eq!(reg.requests("POST", "/v2/imgrep/demo/blobs/uploads/"), 2);
    // A digest in the target must be the image's; with a tag it is checked,
    // and the tag is what the manifest is put under.
    let layout_arg = layout.to_str().unwrap();
    let pinned = format!("{target}:pinned@{digest}");
    let out = imgrep(&["push", "--layout", layout_arg, "demo:1.0", &pinned], &[]);
    assert_eq!(ok(&out).trim(), digest.to_string());
    assert_eq!(skopeo_manifest(&format!("{target}:pinned")).0, digest);
    let other = Digest::of(b"other");
    let out = imgrep(
        &[
            "push",
            "--layout",
            layout_arg,
            "demo:1.0",
            &format!("{target}@{other}"),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("has manifest digest {digest}, not {other}")),
        "{}",
        stderr(&out)
    );
    // Into another repository, mounting the blobs from the first: no upload.
    let out = imgrep(
        &[
            "push",
            "--layout",
            layout.to_str().unwrap(),
            "--mount-from",
            "imgrep/demo",
            "demo:1.0",
            &format!("{}/mirror/demo", reg.host()),
        ],
        &[],
    );
    assert_eq!(ok(&out).trim(), digest.to_string());
    let log = reg.log();
    let mounted = log
        .lines()
        .filter(|l| {
            l.contains("\"POST /v2/mirror/demo/blobs/uploads/?mount=sha256:")
                && l.contains("&from=imgrep%2Fdemo HTTP/1.1\" 201")
        })
        .count();
    assert_eq!(mounted, 2, "{log}");
    assert_eq!(reg.requests("PUT", "/v2/mirror/demo/blobs/uploads/"), 0);
    assert_eq!(
        skopeo_manifest(&format!("{}/mirror/demo:1.0", reg.host())).0,
        digest
    );
}

#[test]
fn imgrep_pulls_what_skopeo_pushed() {
    let test = "imgrep_pulls_what_skopeo_pushed";
    let Some(reg) = Registry::start(test, None) else {
        return;
    };
    if !have_skopeo(test) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("src");
    pack(work.path(), &layout, "demo:2.0", "b", 50_000);
    for (repo, format) in [("oci/demo", "oci"), ("docker/demo", "v2s2")] {
        let target = format!("{}/{repo}:2.0", reg.host());
        run_ok(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--format",
            format,
            &format!("oci:{}:demo:2.0", layout.display()),
            &format!("docker://{target}"),
        ]));
        let (served, manifest) = skopeo_manifest(&target);
        let dest = work.path().join(format!("pulled-{format}"));
        let out = imgrep(&["pull", &target, "--layout", dest.to_str().unwrap()], &[]);
        assert_eq!(ok(&out).trim(), served.to_string(), "{format}");
        // Stored as served: the manifest blob is the registry's bytes, the
        // ref (NAME:TAG from the reference) points at it with its media type.
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(dest.join("index.json")).unwrap()).unwrap();
        let entry = &index["manifests"][0];
        assert_eq!(entry["digest"], served.to_string());
        assert_eq!(entry["mediaType"], manifest["mediaType"]);
        assert_eq!(
            entry["annotations"]["org.opencontainers.image.ref.name"],
            "demo:2.0"
        );
        let report = imgrep::oci::check(&dest).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.blobs_verified, 3);
        // Pinned by digest, into another ref name.
        let out = imgrep(
            &[
                "pull",
                &format!("{}/{repo}@{served}", reg.host()),
                "--layout",
                dest.to_str().unwrap(),
                "--tag",
                "pinned:1",
            ],
            &[],
        );
        assert_eq!(ok(&out).trim(), served.to_string());
    }
    // The OCI copy is byte for byte what imgrep packed.
    let (served, _) = skopeo_manifest(&format!("{}/oci/demo:2.0", reg.host()));
    let packed = imgrep::oci::Layout::open(&layout)
        .unwrap()
        .read_image("demo:2.0", false)
        .unwrap();
    assert_eq!(served, packed.manifest_digest);
    // A digest that is not the tag's: refused, nothing stored under the ref.
    let wrong = Digest::of(b"not this manifest");
    let dest = work.path().join("wrong");
    let out = imgrep(
        &[
            "pull",
            &format!("{}/oci/demo@{wrong}", reg.host()),
            "--layout",
            dest.to_str().unwrap(),
            "--tag",
            "x:1",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("has no manifest"), "{}", stderr(&out));
}

#[test]
fn index_pull_picks_linux_amd64() {
    let test = "index_pull_picks_linux_amd64";
    let Some(reg) = Registry::start(test, None) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let layout_path = work.path().join("out");
    let digest = pack(work.path(), &layout_path, "multi:1", "c", 1000);
    let arm = pack(work.path(), &layout_path, "multi:arm", "arm", 1000);
    let layout = imgrep::oci::Layout::open(&layout_path).unwrap();
    let client = imgrep::registry::Client::new(imgrep::registry::Options::default()).unwrap();
    let target: imgrep::registry::Reference =
        format!("{}/multi/img:amd64", reg.host()).parse().unwrap();
    assert_eq!(
        client.push_image(&layout, "multi:1", &target).unwrap(),
        digest
    );
    let arm_target = target.with_tag("arm64").unwrap();
    assert_eq!(
        client
            .push_image(&layout, "multi:arm", &arm_target)
            .unwrap(),
        arm
    );
    let size = fs::metadata(layout.blob_path(&digest)).unwrap().len();
    let arm_size = fs::metadata(layout.blob_path(&arm)).unwrap().len();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": imgrep::registry::OCI_INDEX,
        "manifests": [
            {"mediaType": imgrep::registry::OCI_MANIFEST, "digest": arm, "size": arm_size,
             "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": imgrep::registry::OCI_MANIFEST, "digest": digest, "size": size,
             "platform": {"os": "linux", "architecture": "amd64"}},
        ],
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    let repo = &target.repo;
    let index_digest = client
        .put_manifest(repo, "multi", &bytes, imgrep::registry::OCI_INDEX)
        .unwrap();
    let (got, got_digest, media_type) = client.get_manifest(repo, "multi").unwrap();
    assert_eq!((got, got_digest), (bytes, index_digest));
    assert_eq!(media_type, imgrep::registry::OCI_INDEX);
    let dest = imgrep::oci::Layout::create(&work.path().join("pulled")).unwrap();
    let source = target.with_tag("multi").unwrap();
    assert_eq!(
        client.pull_image(&source, &dest, "multi:1").unwrap(),
        digest
    );
    assert_eq!(dest.refs().unwrap(), vec!["multi:1".to_owned()]);
    let config = dest.read_image("multi:1", true).unwrap().config_digest;
    assert!(client.blob_exists(repo, &config).unwrap());
    assert!(!client.blob_exists(repo, &Digest::of(b"absent")).unwrap());
    let e = client.get_manifest(repo, "no-such-tag").unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[test]
fn chunked_upload_sends_patches_with_content_range() {
    let test = "chunked_upload_sends_patches_with_content_range";
    let Some(reg) = Registry::start(test, None) else {
        return;
    };
    if !have_skopeo(test) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("out");
    let digest = pack(work.path(), &layout, "big:1", "d", 300_000);
    let image = imgrep::oci::Layout::open(&layout)
        .unwrap()
        .read_image("big:1", false)
        .unwrap();
    let layer_size = image.manifest.layers()[0].size();
    let config_size = image.manifest.config().size();
    let target = format!("{}/chunked/big:1", reg.host());
    let out = imgrep(
        &[
            "push",
            "--layout",
            layout.to_str().unwrap(),
            "--chunk-size",
            "64K",
            "big:1",
            &target,
        ],
        &[],
    );
    assert_eq!(ok(&out).trim(), digest.to_string());
    let chunks = |n: u64| n.div_ceil(64 << 10) as usize;
    assert_eq!(
        reg.requests("PATCH", "/v2/chunked/big/blobs/uploads/"),
        chunks(layer_size) + chunks(config_size),
        "{}",
        reg.log()
    );
    assert_eq!(skopeo_manifest(&target).0, digest);
    // skopeo copies it back out byte for byte.
    let back = work.path().join("back");
    run_ok(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{target}"),
        &format!("oci:{}:big:1", back.display()),
    ]));
    let copied = imgrep::oci::Layout::open(&back)
        .unwrap()
        .read_image("big:1", true)
        .unwrap();
    assert_eq!(copied.manifest_digest, digest);
}

/// A bcrypt htpasswd line: htpasswd (apache2-utils) if installed, else
/// python3's crypt module (libxcrypt's bcrypt).
fn htpasswd(user: &str, password: &str) -> Option<String> {
    if let Ok(out) = Command::new("htpasswd")
        .args(["-nbB", user, password])
        .output()
    {
        if out.status.success() {
            return Some(String::from_utf8(out.stdout).unwrap().trim().to_owned());
        }
    }
    let out = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))",
            password,
        ])
        .output()
        .ok()?;
    let hash = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && hash.starts_with("$2")).then(|| format!("{user}:{}", hash.trim()))
}

#[test]
fn basic_auth_and_wrong_credentials() {
    let test = "basic_auth_and_wrong_credentials";
    let Some(line) = htpasswd("alice", "s3cret") else {
        eprintln!("SKIPPED: {test}: neither htpasswd (apache2-utils) nor python3 with crypt can make a bcrypt htpasswd");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    fs::write(&file, format!("{line}\n")).unwrap();
    let auth = format!(
        "  htpasswd:\n    realm: imgrep-test\n    path: {}\n",
        file.display()
    );
    let Some(reg) = Registry::start(test, Some(&auth)) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("out");
    let digest = pack(work.path(), &layout, "sec:1", "e", 1000);
    let layout = layout.to_str().unwrap();
    let target = format!("{}/private/sec:1", reg.host());
    let host = reg.host();

    let out = imgrep(&["push", "--layout", layout, "sec:1", &target], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!(
            "registry {host} requires credentials for private/sec"
        )),
        "{}",
        stderr(&out)
    );

    let wrong = [
        ("IMGREP_REGISTRY_USER", "alice"),
        ("IMGREP_REGISTRY_PASSWORD", "wrong"),
    ];
    let out = imgrep(&["push", "--layout", layout, "sec:1", &target], &wrong);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!(
            "registry {host} refused the credentials for private/sec: 401"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(reg.requests("POST", "/blobs/uploads/"), 0);

    let right = [
        ("IMGREP_REGISTRY_USER", "alice"),
        ("IMGREP_REGISTRY_PASSWORD", "s3cret"),
    ];
    let out = imgrep(&["push", "--layout", layout, "sec:1", &target], &right);
    assert_eq!(ok(&out).trim(), digest.to_string());

    // --username with --password-stdin.
    let dest = work.path().join("pulled");
    let out = imgrep_stdin(
        &[
            "pull",
            &target,
            "--layout",
            dest.to_str().unwrap(),
            "--username",
            "alice",
            "--password-stdin",
        ],
        &[],
        Some("s3cret\n"),
    );
    assert_eq!(ok(&out).trim(), digest.to_string());
    let out = imgrep_stdin(
        &[
            "pull",
            &target,
            "--layout",
            dest.to_str().unwrap(),
            "--username",
            "alice",
            "--password-stdin",
        ],
        &[],
        Some("nope\n"),
    );
    assert!(
        stderr(&out).contains("refused the credentials"),
        "{}",
        stderr(&out)
    );

    // docker's config.json auths.
    use base64::Engine as _;
    let docker = work.path().join("docker");
    fs::create_dir_all(&docker).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    fs::write(
        docker.join("config.json"),
        format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    let dest2 = work.path().join("pulled2");
    let out = imgrep(
        &["pull", &target, "--layout", dest2.to_str().unwrap()],
        &[("DOCKER_CONFIG", docker.to_str().unwrap())],
    );
    assert_eq!(ok(&out).trim(), digest.to_string());
}

/// Waits until `cond` holds (polling), at most `limit`.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

#[test]
fn registry_killed_mid_upload_gives_a_clear_error() {
    let test = "registry_killed_mid_upload_gives_a_clear_error";
    let Some(mut reg) = Registry::start(test, None) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("out");
    pack_with(work.path(), &layout, "huge:1", "f", 16 << 20, "none");
    let before = blob_paths(&layout);
    let child = Command::new(env!("CARGO_BIN_EXE_imgrep"))
        .args([
            "push",
            "--layout",
            layout.to_str().unwrap(),
            "--chunk-size",
            "256K",
            "huge:1",
            &format!("{}/gone/huge:1", reg.host()),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the registry once a few chunks of the layer went through.
    let started = wait_for(Duration::from_secs(120), || {
        reg.requests("PATCH", "/v2/gone/huge/blobs/uploads/") >= 3
    });
    reg.kill();
    let out = child.wait_with_output().unwrap();
    assert!(started, "no PATCH seen:\n{}", reg.log());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    eprintln!("push with the registry killed: {err}");
    assert!(
        err.contains(&format!("registry {}", reg.host()))
            && (err.contains("lost the connection") || err.contains("cannot reach"))
            && err.contains("of layer sha256:"),
        "{err}"
    );
    assert_eq!(blob_paths(&layout), before, "the local layout changed");
}

#[test]
fn registry_killed_mid_download_leaves_nothing_half_written() {
    let test = "registry_killed_mid_download_leaves_nothing_half_written";
    let Some(mut reg) = Registry::start(test, None) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("out");
    let digest = pack_with(work.path(), &layout, "huge:2", "g", 64 << 20, "none");
    let target = format!("{}/gone/huge:2", reg.host());
    let out = imgrep(
        &[
            "push",
            "--layout",
            layout.to_str().unwrap(),
            "huge:2",
            &target,
        ],
        &[],
    );
    assert_eq!(ok(&out).trim(), digest.to_string());
    let dest = work.path().join("pulled");
    let child = Command::new(env!("CARGO_BIN_EXE_imgrep"))
        .args(["pull", &target, "--layout", dest.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The layer download has begun once its temporary file exists.
    let big = |p: &PathBuf| fs::metadata(p).is_ok_and(|m| m.len() > 1 << 20);
    let started = wait_for(Duration::from_secs(120), || {
        blob_paths(&dest).iter().any(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".tmp-")
                && big(p)
        })
    });
    reg.kill();
    let out = child.wait_with_output().unwrap();
    if !started {
        eprintln!("SKIPPED: {test}: the pull finished before the registry could be killed");
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    eprintln!("pull with the registry killed: {err}");
    assert!(
        err.contains(&format!("registry {}", reg.host())) && err.contains("layer sha256:"),
        "{err}"
    );
    // Only complete, verified blobs (the config) remain; no temporary file,
    // no ref.
    for p in blob_paths(&dest) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let hex = Digest::from_hex(&name).unwrap_or_else(|_| panic!("left behind: {name}"));
        assert_eq!(Digest::of(&fs::read(&p).unwrap()), hex);
    }
    let layout = imgrep::oci::Layout::open(&dest).unwrap();
    assert!(layout.refs().unwrap().is_empty());
}

#[test]
fn unreachable_and_plain_http_refused() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("out");
    let out = imgrep(
        &[
            "pull",
            &format!("127.0.0.1:{port}/x/y:1"),
            "--layout",
            dest.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("cannot reach registry 127.0.0.1:{port}")),
        "{}",
        stderr(&out)
    );
    let out = imgrep(
        &[
            "pull",
            "http://registry.invalid/x/y:1",
            "--layout",
            dest.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("refusing plain HTTP to registry registry.invalid"),
        "{}",
        stderr(&out)
    );
    let out = imgrep(
        &[
            "pull",
            &format!("127.0.0.1:{port}/x/y:1"),
            "--layout",
            dest.to_str().unwrap(),
        ],
        &[("IMGREP_OFFLINE", "1")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("needs the network"),
        "{}",
        stderr(&out)
    );
    let out = imgrep(&["pull", "Registry.invalid/X", "--layout", "out"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid registry reference"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn verify_checks_the_images_in_a_registry() {
    let test = "verify_checks_the_images_in_a_registry";
    let Some(reg) = Registry::start(test, None) else {
        return;
    };
    let work = sign_support::Work::new();
    work.publish(b"hello\n");
    let key = work.keygen("alice");
    let out = work.sign(&key, "rebuilder");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let name = format!("{}:{}", sign_support::PKG, sign_support::VERSION);
    let prefix = format!("{}/pub", reg.host());
    let target = format!("{prefix}/{}", sign_support::PKG);
    let out = work.imgrep(&["push", &name, &target]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    let out = work.verify(&["--threshold", "1", "--registry", &prefix]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("(registry image)"), "{}", out.stderr);
    let out = work.verify(&["--threshold", "1", "--registry", &prefix, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["packages"][0]["image"]["status"], "ok");
    assert_eq!(
        v["packages"][0]["image_ref"],
        format!("{target}:{}", sign_support::VERSION)
    );

    // Another image under the signed tag fails verification.
    let other = work.path("other");
    sign_support::write_layout(&other, &name, b"tampered\n");
    let out = work.imgrep(&["push", "--layout", "other", &name, &target]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = work.verify(&["--threshold", "1", "--registry", &prefix]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "registry image {target}:{}: manifest digest: signed sha256:",
            sign_support::VERSION
        )) && out.stderr.contains(", registry sha256:"),
        "{}",
        out.stderr
    );

    // A prefix with no such repository fails too, naming what is missing.
    let out = work.verify(&[
        "--threshold",
        "1",
        "--registry",
        &format!("{}/elsewhere", reg.host()),
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("has no manifest"), "{}", out.stderr);
}

/// `openssl ARGS` in `dir`; false (with the reason printed) if it fails.
fn openssl(dir: &Path, args: &[&str]) -> bool {
    match Command::new("openssl").current_dir(dir).args(args).output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => panic!("openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            eprintln!("SKIPPED: openssl cannot run ({e}): apt-get install openssl");
            false
        }
    }
}

#[test]
fn tls_with_a_private_ca() {
    let test = "tls_with_a_private_ca";
    let pki = tempfile::tempdir().unwrap();
    let p = pki.path();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca = [
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=imgrep test CA",
        ],
    ]
    .concat();
    let csr = [
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat();
    fs::write(
        p.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let sign = [
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ];
    if !(openssl(p, &ca) && openssl(p, &csr) && openssl(p, &sign)) {
        return;
    }
    let http = format!(
        "  tls:\n    certificate: {}\n    key: {}\n",
        p.join("leaf.pem").display(),
        p.join("leaf.key").display()
    );
    let Some(reg) = Registry::start_with(test, None, &http) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("out");
    let digest = pack(work.path(), &layout, "tls:1", "t", 1000);
    let layout = layout.to_str().unwrap();
    let target = format!("https://{}/secure/tls:1", reg.host());

    // The private CA is not among the built-in roots.
    let out = imgrep(&["push", "--layout", layout, "tls:1", &target], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("TLS with registry {} failed", reg.host()))
            && stderr(&out).contains("--ca-file"),
        "{}",
        stderr(&out)
    );
    let ca_file = p.join("ca.pem");
    let ca_file = ca_file.to_str().unwrap();
    let out = imgrep(
        &[
            "push",
            "--layout",
            layout,
            "--ca-file",
            ca_file,
            "tls:1",
            &target,
        ],
        &[],
    );
    assert_eq!(ok(&out).trim(), digest.to_string());
    let dest = work.path().join("pulled");
    let out = imgrep(
        &["pull", &target, "--layout", dest.to_str().unwrap()],
        &[("IMGREP_REGISTRY_CA", ca_file)],
    );
    assert_eq!(ok(&out).trim(), digest.to_string());
    // A scheme-less loopback reference speaks plain HTTP, which a TLS
    // registry answers with 400.
    let out = imgrep(
        &[
            "pull",
            &format!("{}/secure/tls:1", reg.host()),
            "--layout",
            dest.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
