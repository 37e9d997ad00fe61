//! `imgrep reproduce` and `imgrep publish` on small real packages: a root
//! made of Debian's static busybox (/bin/busybox, package busybox-static),
//! built and rebuilt in the real sandbox. Covers: a deterministic package
//! reproduces (exit 0); a non-deterministic one is caught and the diff names
//! the file and its differing line; every varied condition really reaches
//! the build; comparisons against published statements; the flow publish ->
//! sign -> verify with a minisign key.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_imgrep");

/// A recipe tree and a store in one temporary directory.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn root(&self) -> PathBuf {
        self.dir.path().join("tree")
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn imgrep(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("-C")
            .arg(self.root())
            .arg("--store")
            .arg(self.store())
            .args(args)
            .env("IMGREP_CONFIG", self.dir.path().join("no-config.toml"))
            .env_remove("IMGREP_SOURCE_DIRS")
            .env("IMGREP_OFFLINE", "1")
            .output()
            .expect("imgrep runs")
    }

    fn package(&self, name: &str, script: &str) {
        let dir = self.root().join("packages").join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("package.toml"),
            format!(
                "[package]\nname = \"{name}\"\nversion = \"1\"\n\n[build]\ndeps = [\"base\"]\nscript = '''\n{script}\n'''\n"
            ),
        )
        .unwrap();
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited")
}

/// A tree whose package `base` is busybox with the applets the tests use,
/// or None (test skipped) without /bin/busybox.
fn tree() -> Option<Tree> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        eprintln!("SKIPPED: /bin/busybox missing (apt-get install busybox-static)");
        return None;
    }
    let t = Tree {
        dir: tempfile::tempdir().unwrap(),
    };
    fs::write(t.dir.path().join("no-config.toml"), "").unwrap();
    let dir = t.root().join("packages/base");
    fs::create_dir_all(&dir).unwrap();
    fs::copy(busybox, dir.join("busybox")).unwrap();
    let bytes = fs::read(busybox).unwrap();
    let sha = imgrep::digest::Digest::of(&bytes).hex();
    let applets = "sh mkdir cat echo od head printf hostname ln env nproc umask stat";
    fs::write(
        dir.join("package.toml"),
        format!(
            r#"[package]
name = "base"
version = "1"

[[source]]
path = "busybox"
sha256 = "{sha}"
executable = true

[build]
steps = [["/build/busybox", "sh", "-c", "mkdir -p $OUT/bin && cp /build/busybox $OUT/bin/ && for a in {applets}; do ln -s busybox $OUT/bin/$a; done"]]
"#
        ),
    )
    .unwrap();
    fs::set_permissions(dir.join("busybox"), fs::Permissions::from_mode(0o755)).unwrap();
    t.package(
        "det",
        r#"mkdir -p $OUT/usr/share/det
printf 'one\ntwo\nthree\n' > $OUT/usr/share/det/text
ln -s text $OUT/usr/share/det/link"#,
    );
    t.package(
        "nondet",
        r#"mkdir -p $OUT/usr/share/nondet
printf 'line 1\nline 2\nline 3\n' > $OUT/usr/share/nondet/stamp
head -c 16 /dev/urandom | od -An -tx1 >> $OUT/usr/share/nondet/stamp
printf 'line 5\n' >> $OUT/usr/share/nondet/stamp
echo constant > $OUT/usr/share/nondet/same"#,
    );
    Some(t)
}

fn build(t: &Tree, pkgs: &[&str]) {
    let mut args = vec!["build"];
    args.extend(pkgs);
    let o = t.imgrep(&args);
    assert_eq!(code(&o), 0, "build failed: {}", stderr(&o));
}

fn reproduce_json(t: &Tree, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["--json", "reproduce"];
    all.extend(args);
    let o = t.imgrep(&all);
    let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (code(&o), v, stderr(&o))
}

fn statuses(v: &Value) -> Vec<(String, String)> {
    v["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn deterministic_package_reproduces() {
    let Some(t) = tree() else { return };
    build(&t, &["det"]);
    let o = t.imgrep(&["reproduce", "det"]);
    let err = stderr(&o);
    assert_eq!(code(&o), 0, "{err}");
    let line = |name: &str| {
        err.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}: {err}"))
            .to_owned()
    };
    assert!(line("base").ends_with(" OK"), "{err}");
    assert!(line("det").contains(" local "), "{err}");
    assert!(line("det").ends_with(" OK"), "{err}");
    // Every condition is stated, and the rebuild's directory is gone.
    for what in [
        "uid/gid map",
        "umask: 077",
        "hostname: reproduce",
        "reversed",
        "JOBS",
        "build directory",
    ] {
        assert!(err.contains(what), "condition {what:?} not reported: {err}");
    }
    let leftovers: Vec<_> = fs::read_dir(t.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("imgrep-reproduce-")
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "the rebuild directory was not removed"
    );
}

#[test]
fn nondeterministic_package_is_caught_and_the_file_named() {
    let Some(t) = tree() else { return };
    build(&t, &["nondet"]);
    let o = t.imgrep(&["reproduce", "nondet", "--keep"]);
    let err = stderr(&o);
    assert_eq!(code(&o), 1, "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("nondet ") && l.ends_with(" MISMATCH")),
        "{err}"
    );
    assert!(
        err.contains("~ usr/share/nondet/stamp: content sha256:"),
        "{err}"
    );
    // The first differing line, with its context, unified-diff style.
    assert!(err.contains("@@ -1,5 +1,5 @@"), "{err}");
    assert!(err.contains("         line 3\n        - "), "{err}");
    assert!(err.contains("\n        + "), "{err}");
    assert!(
        !err.contains("nondet/same"),
        "an equal file was reported: {err}"
    );
    // --keep leaves the rebuild's store and images for inspection.
    let kept = err
        .lines()
        .find_map(|l| l.strip_prefix("the rebuild is kept in "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("kept directory not reported: {err}"));
    assert!(Path::new(kept).join("out/index.json").is_file());
    imgrep::store::remove_tree(Path::new(kept)).unwrap();

    // The same as JSON on stdout.
    let (c, v, err) = reproduce_json(&t, &["nondet"]);
    assert_eq!(c, 1, "{err}");
    let st = statuses(&v);
    assert!(st.contains(&("base".into(), "OK".into())), "{st:?}");
    assert!(st.contains(&("nondet".into(), "MISMATCH".into())), "{st:?}");
    let row = v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "nondet")
        .unwrap();
    let changes = row["layers"][0]["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0]["path"], "usr/share/nondet/stamp");
}

/// Each condition `reproduce` varies reaches the build: a package that
/// records them differs in exactly those files.
#[test]
fn varied_conditions_reach_the_build() {
    let Some(t) = tree() else { return };
    t.package(
        "leaky",
        r#"mkdir -p $OUT/leak
hostname > $OUT/leak/hostname
umask > $OUT/leak/umask
echo "$JOBS" > $OUT/leak/jobs
nproc > $OUT/leak/nproc
env > $OUT/leak/env
cat /proc/self/uid_map > $OUT/leak/uid_map
stat -f -c %t /build > $OUT/leak/build_fs
echo fixed > $OUT/leak/fixed"#,
    );
    build(&t, &["leaky"]);
    let (c, v, err) = reproduce_json(&t, &["leaky"]);
    assert_eq!(c, 1, "{err}");
    let row = v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "leaky")
        .unwrap()
        .clone();
    let changed: Vec<String> = row["layers"][0]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap().to_owned())
        .collect();
    let mut expected = vec![
        "leak/build_fs",
        "leak/env",
        "leak/hostname",
        "leak/umask",
        "leak/uid_map",
    ];
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores > 1 {
        expected.extend(["leak/jobs", "leak/nproc"]);
    } else {
        expected.push("leak/jobs");
    }
    expected.sort();
    assert_eq!(changed, expected, "{err}");
    let text = |p: &str| {
        row["layers"][0]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"] == p)
            .unwrap()["text"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        text("leak/hostname").contains("-imgrep\n") && text("leak/hostname").contains("+reproduce")
    );
    assert!(text("leak/umask").contains("-0022\n") && text("leak/umask").contains("+0077"));
    // Built on disk (no tree source: the work directory itself, whatever
    // its file system), rebuilt on a tmpfs (TMPFS_MAGIC).
    assert!(
        text("leak/build_fs").contains("+1021994"),
        "{}",
        text("leak/build_fs")
    );
}

#[test]
fn against_published_statements() {
    let Some(t) = tree() else { return };
    build(&t, &["det", "nondet"]);
    // Nothing published yet: asking for statements is an input error.
    let (c, _, err) = reproduce_json(&t, &["det", "--against", "manifests"]);
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("det:1: nothing to compare with"), "{err}");

    let o = t.imgrep(&["publish", "det", "nondet"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // The local layout no longer counts: only the statements do.
    fs::remove_dir_all(t.root().join("out")).unwrap();
    let (c, v, err) = reproduce_json(&t, &["det", "--against", "manifests"]);
    assert_eq!(c, 0, "{err}");
    let det = v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "det")
        .unwrap();
    assert_eq!(det["status"], "OK");
    assert_eq!(det["reference"]["kind"], "statement");
    assert!(det["reference"]["path"]
        .as_str()
        .unwrap()
        .ends_with("manifests/packages/det/1/statement.json"));
    // base has no statement: rebuilt, not compared, not a failure.
    assert!(statuses(&v).contains(&("base".into(), "NO REFERENCE".into())));

    // The statement's image is gone with out/, but the store still has its
    // blobs, so the mismatch is still explained file by file.
    let o = t.imgrep(&["reproduce", "nondet"]);
    let err = stderr(&o);
    assert_eq!(code(&o), 1, "{err}");
    assert!(err.contains("~ usr/share/nondet/stamp"), "{err}");
}

#[test]
fn reuse_deps_rebuilds_only_the_named_packages_and_verifies_what_it_takes() {
    let Some(t) = tree() else { return };
    build(&t, &["det", "nondet"]);
    let (c, v, err) = reproduce_json(&t, &["det", "--reuse-deps"]);
    assert_eq!(c, 0, "{err}");
    assert_eq!(
        statuses(&v),
        [
            ("base".into(), "REUSED".into()),
            ("det".into(), "OK".into())
        ],
        "{err}"
    );
    assert!(err.contains("base 1 taken from"), "{err}");
    assert!(!err.contains("building base"), "base was rebuilt: {err}");
    assert!(err.contains("building det"), "{err}");
    // The named package is still rebuilt and compared.
    let (c, v, err) = reproduce_json(&t, &["nondet", "--reuse-deps"]);
    assert_eq!(c, 1, "{err}");
    assert!(statuses(&v).contains(&("nondet".into(), "MISMATCH".into())));

    // A dependency's blob altered in the user's store is refused, not used.
    let manifest = v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "base")
        .unwrap()["got"]["manifest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let manifest = t.store().join("blobs/sha256").join(&manifest);
    let m: Value = serde_json::from_slice(&fs::read(&manifest).unwrap()).unwrap();
    let blob = t.store().join("blobs/sha256").join(
        m["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    let mut bytes = fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&blob, bytes).unwrap();
    let o = t.imgrep(&["reproduce", "det", "--reuse-deps"]);
    let err = stderr(&o);
    assert_ne!(code(&o), 0, "a corrupt dependency was reused: {err}");
    assert!(err.contains("base"), "the package is not named: {err}");
}

#[test]
fn no_reference_is_an_input_error() {
    let Some(t) = tree() else { return };
    let o = t.imgrep(&["reproduce", "det"]);
    let err = stderr(&o);
    assert_eq!(code(&o), 2, "{err}");
    assert!(err.contains("det:1: nothing to compare with"), "{err}");
    assert!(err.contains("run `imgrep build` first"), "{err}");
    let o = t.imgrep(&["reproduce", "nosuch"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = t.imgrep(&["publish", "det"]);
    let err = stderr(&o);
    assert_eq!(code(&o), 2, "{err}");
    assert!(err.contains("run `imgrep build det` first"), "{err}");
}

/// A maintainer publishes from a local build, a rebuilder reproduces and
/// signs, a user verifies with the signer's key.
#[test]
fn publish_sign_verify() {
    let Some(t) = tree() else { return };
    build(&t, &["det"]);
    let o = t.imgrep(&["publish", "det"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let statement = t.root().join("manifests/packages/det/1/statement.json");
    let st = imgrep::statement::Statement::from_bytes(&fs::read(&statement).unwrap()).unwrap();
    let local = imgrep::sign::image::local_image(&t.root().join("out"), "det", "1").unwrap();
    assert_eq!(st.image, local);
    // Publishing again changes nothing.
    let before = fs::read(&statement).unwrap();
    assert_eq!(code(&t.imgrep(&["publish", "det"])), 0);
    assert_eq!(fs::read(&statement).unwrap(), before);

    let (c, _, err) = reproduce_json(&t, &["det", "--against", "manifests"]);
    assert_eq!(c, 0, "{err}");
    let keys = t.dir.path().join("keys");
    fs::create_dir_all(&keys).unwrap();
    let prefix = keys.join("rebuilder");
    let o = t.imgrep(&["keygen", "--no-password", "--out", prefix.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let key = keys.join("rebuilder.key");
    let o = t.imgrep(&["sign", "det:1", "--key", key.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    fs::remove_file(&key).unwrap();
    let o = t.imgrep(&[
        "verify",
        "det",
        "--keyring",
        keys.to_str().unwrap(),
        "--threshold",
        "1",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = t.imgrep(&[
        "verify",
        "det",
        "--keyring",
        keys.to_str().unwrap(),
        "--threshold",
        "2",
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
}

/// CI auto-signing: `reproduce --sign KEY --role ci` signs the statement of
/// each named package whose rebuild matched it, never one that did not,
/// and a verifier counts the ci signer toward a `ci` role minimum.
#[test]
fn reproduce_signs_only_what_reproduced() {
    let Some(t) = tree() else { return };
    build(&t, &["det", "nondet"]);
    let o = t.imgrep(&["publish", "det", "nondet"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let keys = t.dir.path().join("keys");
    fs::create_dir_all(&keys).unwrap();
    let prefix = keys.join("ci");
    let o = t.imgrep(&["keygen", "--no-password", "--out", prefix.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    fs::write(keys.join("roles.toml"), "ci = \"ci\"\n").unwrap();
    let secret = t.dir.path().join("ci.key");
    fs::rename(keys.join("ci.key"), &secret).unwrap();
    let key = secret.to_str().unwrap();
    let sigs = |name: &str| -> Vec<PathBuf> {
        fs::read_dir(t.root().join(format!("manifests/packages/{name}/1/sigs")))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    };

    // A package without a statement cannot be signed: refused before building.
    let o = t.imgrep(&["reproduce", "base", "--sign", key, "--role", "ci"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("base:1: --sign signs published statements"));

    let (c, v, err) = reproduce_json(
        &t,
        &[
            "det",
            "nondet",
            "--against",
            "manifests",
            "--sign",
            key,
            "--role",
            "ci",
        ],
    );
    assert_eq!(c, 1, "{err}");
    let signed = v["signing"]["signed"].as_array().unwrap();
    assert_eq!(signed.len(), 1, "{v}");
    assert_eq!(signed[0]["package"], "det:1");
    assert_eq!(signed[0]["role"], "ci");
    assert_eq!(signed[0]["written"], true);
    let refused = v["signing"]["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{v}");
    assert_eq!(refused[0]["package"], "nondet:1");
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap()
            .contains("did not reproduce"),
        "{v}"
    );
    assert!(
        sigs("nondet").is_empty(),
        "an unreproduced package was signed"
    );
    let det_sigs = sigs("det");
    assert_eq!(det_sigs.len(), 1);
    let sig = fs::read_to_string(&det_sigs[0]).unwrap();
    assert!(sig.contains(" role=ci\n"), "{sig}");

    let verify = |pkg: &str| {
        t.imgrep(&[
            "--json",
            "verify",
            pkg,
            "--keyring",
            keys.to_str().unwrap(),
            "--threshold",
            "1",
            "--require-role",
            "ci=1",
        ])
    };
    let o = verify("det");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let det = &v["packages"][0];
    assert_eq!(det["signatures"]["roles"]["ci"]["counted"], 1, "{v}");
    assert_eq!(det["signers"][0]["signer"], "ci");
    assert_eq!(code(&verify("nondet")), 1);

    // Signing again leaves the signature as it is; the human report says so.
    let o = t.imgrep(&[
        "reproduce",
        "det",
        "--against",
        "manifests",
        "--sign",
        key,
        "--role",
        "ci",
    ]);
    let err = stderr(&o);
    assert_eq!(code(&o), 0, "{err}");
    assert!(err.contains("already signed det:1 ("), "{err}");
    assert_eq!(fs::read_to_string(&det_sigs[0]).unwrap(), sig);

    // The non-reproducing package alone: named, not signed, exit 1.
    let o = t.imgrep(&["reproduce", "nondet", "--sign", key, "--role", "ci"]);
    let err = stderr(&o);
    assert_eq!(code(&o), 1, "{err}");
    assert!(
        err.contains("NOT SIGNED nondet:1: the rebuild did not reproduce"),
        "{err}"
    );
    assert!(sigs("nondet").is_empty());
}
