//! The remote build cache: a package built on one machine (store A) and
//! pushed with `--cache-to` is reused by another (store B, `--cache-from`)
//! without running any step; an image under the right tag but labelled with
//! another input digest is refused. A real docker-registry on loopback.

#[path = "registry_support/mod.rs"]
mod registry_support;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use registry_support::Registry;

/// A recipe tree whose one package runs our hex0 seed in an empty root:
/// a real sandbox step with no shell and no libc.
fn tree(dir: &Path) {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/hex0-amd64");
    fs::create_dir_all(dir.join("seeds")).unwrap();
    fs::copy(&seed, dir.join("seeds/hex0-amd64")).unwrap();
    fs::write(dir.join("hello.hex0"), "48 65 6c 6c 6f 0a # Hello\\n\n").unwrap();
    let sha = |p: &Path| imgrep::digest::Digest::of(&fs::read(p).unwrap()).hex();
    fs::create_dir_all(dir.join("packages/hello")).unwrap();
    fs::write(
        dir.join("packages/hello/package.toml"),
        format!(
            r#"[package]
name = "hello"
version = "1"

[[source]]
urls = ["repo:seeds/hex0-amd64"]
sha256 = "{}"
unpack = false
file = "hex0"
executable = true

[[source]]
urls = ["repo:hello.hex0"]
sha256 = "{}"
unpack = false

[build]
steps = [["/build/hex0", "/build/hello.hex0", "/out/hello"]]
"#,
            sha(&dir.join("seeds/hex0-amd64")),
            sha(&dir.join("hello.hex0"))
        ),
    )
    .unwrap();
}

fn imgrep(tree: &Path, store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgrep"))
        .arg("-C")
        .arg(tree)
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("IMGREP_CACHE_FROM")
        .env_remove("IMGREP_CACHE_TO")
        .env_remove("IMGREP_REGISTRY_USER")
        .env_remove("IMGREP_REGISTRY_PASSWORD")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "imgrep failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A registry, a work directory holding the recipe tree `tree`, and the
/// cache prefix in the registry; None (SKIPPED) without docker-registry.
fn setup(test: &str) -> Option<(Registry, tempfile::TempDir, std::path::PathBuf, String)> {
    let registry = Registry::start(test, None)?;
    let work = tempfile::tempdir().unwrap();
    let t = work.path().join("tree");
    tree(&t);
    let prefix = format!("{}/cache", registry.host());
    Some((registry, work, t, prefix))
}

#[test]
fn remote_cache_skips_the_build_on_a_second_store() {
    let Some((mut registry, work, t, prefix)) =
        setup("remote_cache_skips_the_build_on_a_second_store")
    else {
        return;
    };

    let a = ok(&imgrep(
        &t,
        &work.path().join("store-a"),
        &["--json", "build", "hello", "--cache-to", &prefix],
    ));
    assert_eq!(a[0]["cached"], false);
    let input = a[0]["input_digest"].as_str().unwrap().to_owned();
    let tag = format!("input-{}", input.trim_start_matches("sha256:"));
    assert_eq!(registry.requests("PUT", &format!("/manifests/{tag}")), 1);

    // A second machine: another store and another copy of the tree.
    let t2 = work.path().join("tree2");
    tree(&t2);
    let store_b = work.path().join("store-b");
    let b = ok(&imgrep(
        &t2,
        &store_b,
        &["--json", "build", "hello", "--cache-from", &prefix],
    ));
    assert_eq!(b[0]["cached"], true, "{b}");
    assert_eq!(b[0]["manifest_digest"], a[0]["manifest_digest"]);
    assert_eq!(b[0]["diff_ids"], a[0]["diff_ids"]);
    assert!(
        !store_b.join("logs/hello").exists(),
        "a step ran in store B: its log exists"
    );
    // The record is local now: a third build needs no registry at all.
    registry.kill();
    let c = ok(&imgrep(&t2, &store_b, &["--json", "build", "hello"]));
    assert_eq!(c[0]["cached"], true);
    assert_eq!(c[0]["manifest_digest"], a[0]["manifest_digest"]);
}

#[test]
fn remote_cache_refuses_an_image_of_another_input() {
    let Some((_registry, work, t, prefix)) =
        setup("remote_cache_refuses_an_image_of_another_input")
    else {
        return;
    };
    let plan = ok(&imgrep(
        &t,
        &work.path().join("s"),
        &["--json", "plan", "hello"],
    ));
    let input = plan[0]["input_digest"].as_str().unwrap().to_owned();
    let tag = format!("input-{}", input.trim_start_matches("sha256:"));

    // Someone else's image, pushed under this input's tag.
    let other = work.path().join("other");
    fs::create_dir_all(other.join("etc")).unwrap();
    fs::write(other.join("etc/evil"), "not hello\n").unwrap();
    let layout = work.path().join("layout");
    let packed = imgrep(
        &t,
        &work.path().join("s"),
        &[
            "pack",
            other.to_str().unwrap(),
            "--out",
            layout.to_str().unwrap(),
            "--tag",
            "hello:1",
        ],
    );
    assert!(
        packed.status.success(),
        "{}",
        String::from_utf8_lossy(&packed.stderr)
    );
    let target = format!("{prefix}/hello:{tag}");
    let pushed = imgrep(
        &t,
        &work.path().join("s"),
        &[
            "push",
            "--layout",
            layout.to_str().unwrap(),
            "hello:1",
            &target,
        ],
    );
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );

    let store = work.path().join("victim");
    let out = imgrep(&t, &store, &["build", "hello", "--cache-from", &prefix]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("labelled with input digest") && err.contains(&input),
        "{err}"
    );
    assert!(fs::read_dir(store.join("records"))
        .unwrap()
        .next()
        .is_none());
}
