//! The repository's published manifests/ (issue 20, docs/signing.md
//! "Published statements"): every statement reproduces on this machine,
//! the repository's keys (its maintainer's and a rebuilder's on another
//! machine) meet the publisher's policy for every statement, a test's own
//! second key does too, and a statement edited by one byte fails. Signing
//! and editing happen in scratch copies only, never in the repository.
//!
//! The rebuild needs the packages' sources: through `mirror://debian/` from
//! the host's apt configuration (or the store). A package whose sources
//! cannot be fetched (stage0's release tree is in no registry) is SKIPPED,
//! printed with the reason; when the Debian archive answers, bookworm-cc
//! must be among those rebuilt. A package built on one named in
//! .ci/long-rebuilds.toml (GCC: hours on CI's two cores) is SKIPPED with
//! that file's reason unless IMGREP_SLOW_TESTS=1.

#[path = "e2e_support/mod.rs"]
mod e2e_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_imgrep");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn imgrep(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("imgrep runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `NAME:VERSION` of every published statement, sorted.
fn published() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for pkg in std::fs::read_dir(repo().join("manifests/packages")).unwrap() {
        let pkg = pkg.unwrap().path();
        for version in std::fs::read_dir(&pkg).unwrap() {
            let version = version.unwrap().path();
            assert!(version.join("statement.json").is_file(), "{version:?}");
            out.push((
                pkg.file_name().unwrap().to_string_lossy().into_owned(),
                version.file_name().unwrap().to_string_lossy().into_owned(),
            ));
        }
    }
    out.sort();
    assert!(!out.is_empty(), "manifests/packages holds no statement");
    out
}

/// A scratch copy of the repository's manifests/, for what must never
/// touch the repository.
fn scratch_manifests() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(repo().join("manifests"))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

/// `imgrep verify --signatures-only` of every statement under `dir` with
/// the keys of `keyring` and the publisher's policy: the table on stderr,
/// or with `--json` among `extra` the report on stdout.
fn verify(dir: &Path, keyring: &Path, extra: &[&str]) -> Output {
    let keyring = keyring.to_str().unwrap();
    let mut args = vec![
        "verify",
        "--keyring",
        keyring,
        "--policy",
        "manifests/policy.toml",
        "--signatures-only",
    ];
    args.extend(extra);
    imgrep(dir, &args)
}

/// The packages of .ci/long-rebuilds.toml, with why each is not rebuilt.
fn long_rebuilds() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(repo().join(".ci/long-rebuilds.toml")).unwrap();
    toml::from_str(&text).expect(".ci/long-rebuilds.toml: name = \"why\" lines")
}

/// `name` and every package its build needs, from `imgrep graph --json`.
fn closure(name: &str) -> Vec<String> {
    let out = imgrep(repo(), &["--json", "graph", name]);
    assert!(out.status.success(), "{name}: {}", text(&out.stderr));
    let graph: Value = serde_json::from_slice(&out.stdout).unwrap();
    graph["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn long_rebuilds_name_packages_of_the_tree() {
    for name in long_rebuilds().keys() {
        let out = imgrep(repo(), &["graph", name]);
        assert!(
            out.status.success(),
            ".ci/long-rebuilds.toml names {name}, which is not a package of the tree: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn published_statements_reproduce_on_this_machine() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let store_arg = store.to_str().unwrap();
    let slow = std::env::var("IMGREP_SLOW_TESTS").as_deref() == Ok("1");
    let long = long_rebuilds();
    let mut buildable = Vec::new();
    for (name, version) in published() {
        let too_long = closure(&name)
            .into_iter()
            .find_map(|n| long.get(&n).map(|why| (n, why)));
        if let (Some((n, why)), false) = (too_long, slow) {
            let on = if n == name {
                String::new()
            } else {
                format!(" it builds on {n}:")
            };
            eprintln!(
                "SKIPPED: {name} {version}: beyond CI's budget:{on} {why} (.ci/long-rebuilds.toml); \
                 IMGREP_SLOW_TESTS=1 rebuilds it"
            );
            continue;
        }
        let fetched = imgrep(repo(), &["--store", store_arg, "fetch", &name]);
        if fetched.status.success() {
            buildable.push(name);
        } else {
            eprintln!(
                "SKIPPED: {name} {version}: its sources cannot be fetched here, so CI cannot \
                 rebuild it: {}",
                text(&fetched.stderr).trim_end()
            );
        }
    }
    if !buildable.iter().any(|n| n == "bookworm-cc") {
        match e2e_support::debian_archive() {
            Err(why) => {
                eprintln!(
                    "SKIPPED: the Debian archive of the host's apt configuration is \
                     unreachable ({why}): no published statement rebuilt"
                );
                return;
            }
            Ok(url) => panic!("bookworm-cc's sources could not be fetched although {url} answers"),
        }
    }
    eprintln!(
        "manifests: fetched in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let rebuild = Instant::now();
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let mut args = vec![
        "--store",
        store_arg,
        "--json",
        "reproduce",
        "--against",
        "manifests",
        "--work-dir",
        work.to_str().unwrap(),
        "-j",
        "2",
    ];
    args.extend(buildable.iter().map(String::as_str));
    let out = imgrep(repo(), &args);
    // On a mismatch, stderr holds imgrep's table and the file-level diff of
    // every differing layer.
    assert_eq!(
        out.status.code(),
        Some(0),
        "a published digest does not reproduce on this machine:\n{}",
        text(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for name in &buildable {
        let row = report["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} not in the report: {report}"));
        assert_eq!(row["status"], "OK", "{row}");
        eprintln!(
            "manifests: {name} {} reproduced: {}",
            row["version"].as_str().unwrap(),
            row["got"]["manifest"].as_str().unwrap()
        );
    }
    eprintln!(
        "manifests: {} published package(s) rebuilt and compared in {:.1} s ({:.1} s in all)",
        buildable.len(),
        rebuild.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn repository_keys_count_every_published_signature() {
    let keys = repo().join("manifests/keys");
    let roles = roles();
    let out = verify(repo(), &keys, &["--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = v["packages"].as_array().unwrap();
    assert_eq!(packages.len(), published().len());
    let table = text(&verify(repo(), &keys, &[]).stderr);
    let mut under_signed = Vec::new();
    for p in packages {
        // Every signature the repository publishes is valid and made by a
        // key of roles.toml under its own role: the maintainer who wrote
        // the statement, and a rebuilder who reproduced it on another
        // machine where one has.
        let signers = p["signers"].as_array().unwrap();
        for signer in signers {
            assert_eq!(signer["status"], "ok", "{p}");
            let name = signer["signer"].as_str().unwrap();
            assert_eq!(
                signer["role"].as_str(),
                roles.get(name).map(String::as_str),
                "{p}"
            );
        }
        let s = &p["signatures"];
        assert_eq!(s["roles"]["maintainer"]["counted"], 1, "{p}");
        let rebuilt = s["roles"]["rebuilder"]["counted"].as_u64().unwrap();
        assert_eq!(signers.len() as u64, 1 + rebuilt, "{p}");
        let (name, version) = (p["name"].as_str().unwrap(), p["version"].as_str().unwrap());
        let line = if rebuilt == 1 {
            assert_eq!(s["state"], "signed", "{p}");
            format!("{name} {version}: 2 of 2 required signatures (maintainer ok; rebuilder ok): policy met")
        } else {
            assert_eq!(s["state"], "under_signed", "{p}");
            under_signed.push(format!("{name} {version}"));
            format!("{name} {version}: 1 of 2 required signatures (maintainer ok; no rebuilder): under-signed")
        };
        assert!(table.contains(&line), "{table}");
    }
    // The policy passes exactly when no statement is under-signed.
    let expected = if under_signed.is_empty() { 0 } else { 1 };
    assert_eq!(out.status.code(), Some(expected), "{table}");
    assert_eq!(v["ok"], under_signed.is_empty());
    if !under_signed.is_empty() {
        eprintln!(
            "manifests: under-signed (no rebuilder yet): {}",
            under_signed.join(", ")
        );
    }
}

#[test]
fn verify_table_keeps_its_columns_for_long_versions_and_signers() {
    let table = text(&verify(repo(), &repo().join("manifests/keys"), &[]).stderr);
    let header = table
        .lines()
        .find(|l| l.starts_with("PACKAGE"))
        .unwrap_or_else(|| panic!("no header:\n{table}"));
    let signer_column = header.find("SIGNER").unwrap();
    let role_column = header.find("ROLE").unwrap();
    // Every signature's row: the signer exactly under SIGNER and its role
    // exactly under ROLE; a statement's first row also has its NAME:VERSION.
    let mut named = Vec::new();
    // (A package's summary lines are indented by two spaces and name roles
    // too: "(maintainer ok; rebuilder ok)".)
    let summary = |l: &str| l.starts_with("  ") && !l[2..].starts_with(' ');
    for row in table
        .lines()
        .filter(|l| !summary(l) && (l.contains(" maintainer ") || l.contains(" rebuilder ")))
    {
        let (package, _) = row.split_at(signer_column);
        assert!(package.ends_with(' '), "{row}\n{table}");
        assert!(!row[signer_column..].starts_with(' '), "{row}\n{table}");
        assert!(row[..role_column].ends_with(' '), "{row}\n{table}");
        let role = &row[role_column..];
        assert!(
            role.starts_with("maintainer ") || role.starts_with("rebuilder "),
            "{row}\n{table}"
        );
        if !package.trim().is_empty() {
            named.push(package.trim_end().to_owned());
        }
    }
    named.sort();
    let mut expected: Vec<String> = published()
        .into_iter()
        .map(|(n, v)| format!("{n}:{v}"))
        .collect();
    expected.sort();
    assert_eq!(named, expected, "{table}");
    for signer in roles().keys() {
        assert!(table.contains(&format!("{signer} (")), "{signer}\n{table}");
    }
}

/// The repository's signers and their roles (manifests/keys/roles.toml).
fn roles() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(repo().join("manifests/keys/roles.toml")).unwrap();
    toml::from_str(&text).expect("manifests/keys/roles.toml: name = \"role\" lines")
}

/// A keyring under `dir` that trusts the repository's maintainers only, so
/// that a test's own rebuilder is the only other key counted, whichever
/// rebuilders have signed the repository.
fn maintainers_only(dir: &Path) -> PathBuf {
    let keys = dir.join("maintainers");
    std::fs::create_dir(&keys).unwrap();
    let mut roles_toml = String::new();
    for (name, role) in roles().into_iter().filter(|(_, r)| r == "maintainer") {
        let file = format!("{name}.pub");
        std::fs::copy(repo().join("manifests/keys").join(&file), keys.join(&file)).unwrap();
        roles_toml.push_str(&format!("{name} = \"{role}\"\n"));
    }
    assert!(!roles_toml.is_empty(), "no maintainer in roles.toml");
    std::fs::write(keys.join("roles.toml"), roles_toml).unwrap();
    keys
}

/// Signs every statement of `manifests` with a fresh key (imgrep keygen) as
/// a rebuilder, adds that key to the keyring `keys` with its role.
fn sign_as_rebuilder(dir: &Path, keys: &Path) -> PathBuf {
    let prefix = dir.join("second-machine");
    let out = imgrep(
        dir,
        &["keygen", "--no-password", "--out", prefix.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = imgrep::sign::keys::load_secret_key(
        &prefix.with_extension("key"),
        &imgrep::sign::keys::PasswordSource { file: None },
    )
    .unwrap();
    let manifests = imgrep::sign::manifests::Manifests::new(dir.join("manifests"));
    for pv in manifests.list().unwrap() {
        let stored = manifests.read_statement(&pv).unwrap();
        let sig = imgrep::sign::signature::sign_statement(&key, &stored.bytes, "rebuilder", "test")
            .unwrap();
        std::fs::write(manifests.signature_path(&pv, key.id), sig).unwrap();
    }
    std::fs::copy(
        prefix.with_extension("pub"),
        keys.join("second-machine.pub"),
    )
    .unwrap();
    let mut roles = std::fs::read_to_string(keys.join("roles.toml")).unwrap();
    roles.push_str("second-machine = \"rebuilder\"\n");
    std::fs::write(keys.join("roles.toml"), roles).unwrap();
    prefix
}

#[test]
fn a_second_key_meets_the_policy_and_a_one_byte_edit_fails() {
    let scratch = scratch_manifests();
    let dir = scratch.path();
    let keys = maintainers_only(dir);
    sign_as_rebuilder(dir, &keys);
    let out = verify(dir, &keys, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for p in v["packages"].as_array().unwrap() {
        assert_eq!(p["signatures"]["state"], "signed", "{p}");
        assert_eq!(p["trusted_signatures"], 2, "{p}");
    }

    // One byte of one statement changed: a digit of its manifest digest,
    // so that the statement is still canonical JSON and only the
    // signatures can tell.
    let (name, version) = published().remove(0);
    let path = dir.join(format!(
        "manifests/packages/{name}/{version}/statement.json"
    ));
    let mut bytes = std::fs::read(&path).unwrap();
    let at = text(&bytes).find("\"manifest\":\"sha256:").unwrap() + 19;
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    std::fs::write(&path, &bytes).unwrap();
    let out = verify(dir, &keys, &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for p in v["packages"].as_array().unwrap() {
        let edited = p["name"] == name.as_str() && p["version"] == version.as_str();
        if !edited {
            assert_eq!(p["ok"], true, "{p}");
            continue;
        }
        assert_eq!(p["ok"], false, "{p}");
        assert_eq!(p["signatures"]["state"], "unsigned", "{p}");
        // Both trusted keys' signatures break; a key outside the keyring
        // (a rebuilder of the repository's) is not counted either way.
        let mut failed = 0;
        for s in p["signers"].as_array().unwrap() {
            let expected = if s["signer"].is_null() {
                "unknown"
            } else {
                "fail"
            };
            assert_eq!(s["status"], expected, "{p}");
            failed += usize::from(expected == "fail");
        }
        assert_eq!(failed, 2, "{p}");
    }
    // The repository itself was never touched.
    let original = std::fs::read(repo().join(format!(
        "manifests/packages/{name}/{version}/statement.json"
    )))
    .unwrap();
    assert_ne!(original, bytes);
}
