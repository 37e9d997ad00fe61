//! `imgrep attest`, push/pull of attached artifacts, cosign-layout and
//! OpenPGP simple-signing signatures, checked by independent
//! implementations: spdx-tools' validator, securesystemslib's DSSE
//! verifier, skopeo, gpg, a real docker-registry on loopback and podman's
//! sigstoreSigned and signedBy policies.

mod build_support;
#[path = "registry_support/mod.rs"]
mod registry_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use build_support::Fixture;
use registry_support::Registry;
use serde_json::Value;

const SPDX: &str = "application/spdx+json";
const IN_TOTO: &str = "application/vnd.in-toto+json";
const SIGNATURES: &str = "application/vnd.imgrep.statement.signature.v1+json";

/// The Python with spdx-tools and securesystemslib that .ci/run installs
/// (IMGREP_TEST_PYTHON), or None after saying why the test is skipped.
fn python(test: &str) -> Option<PathBuf> {
    let Some(py) = std::env::var_os("IMGREP_TEST_PYTHON") else {
        eprintln!(
            "SKIPPED: {test}: IMGREP_TEST_PYTHON is not set (.ci/run sets it to a venv with spdx-tools and securesystemslib)"
        );
        return None;
    };
    let ok = Command::new(&py)
        .args(["-c", "import spdx_tools, securesystemslib"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: {test}: {py:?} lacks spdx-tools or securesystemslib");
        return None;
    }
    Some(PathBuf::from(py))
}

fn ok(out: std::process::Output, what: &str) -> std::process::Output {
    assert!(
        out.status.success(),
        "{what}: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A key pair without password under the fixture's tree: (secret, public).
fn keygen(fx: &Fixture, name: &str) -> (PathBuf, PathBuf) {
    let prefix = fx.tree.path().join(name);
    ok(
        fx.run(&["keygen", "--no-password", "--out", prefix.to_str().unwrap()]),
        "keygen",
    );
    (prefix.with_extension("key"), prefix.with_extension("pub"))
}

/// The 32 raw bytes of a minisign public key file, in hex, and its key id.
fn raw_public(pubfile: &Path) -> (String, String) {
    let text = fs::read_to_string(pubfile).unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text.lines().nth(1).unwrap().trim())
        .unwrap();
    let id = u64::from_le_bytes(raw[2..10].try_into().unwrap());
    (hex::encode(&raw[10..42]), format!("{id:016X}"))
}

/// The attached artifacts of `layout` whose artifactType is `kind`: their
/// manifests and the bytes of their one blob.
fn attached(layout: &Path, kind: &str) -> Vec<(Value, Vec<u8>)> {
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| fs::read(layout.join("blobs/sha256").join(&d[7..])).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["artifactType"] == kind)
        .map(|d| {
            let m: Value = serde_json::from_slice(&blob(d["digest"].as_str().unwrap())).unwrap();
            let bytes = blob(m["layers"][0]["digest"].as_str().unwrap());
            (m, bytes)
        })
        .collect()
}

fn tagged_digest(layout: &Path, reference: &str) -> String {
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == reference)
        .map(|d| d["digest"].as_str().unwrap().to_owned())
        .unwrap()
}

const VERIFY_DSSE: &str = r#"
import json, sys
from securesystemslib.signer import SSlibKey
from securesystemslib.dsse import Envelope
env = Envelope.from_dict(json.load(open(sys.argv[1])))
key = SSlibKey(sys.argv[3], "ed25519", "ed25519", {"public": sys.argv[2]})
env.verify([key], 1)
print(env.payload.decode())
"#;

#[test]
fn sbom_and_provenance_pass_independent_validators_and_are_deterministic() {
    let test = "sbom_and_provenance_pass_independent_validators_and_are_deterministic";
    let Some(py) = python(test) else { return };
    let Some(fx) = Fixture::new(&[]) else { return };
    fx.build(&["greet"]);
    let out_dir = fx.tree.path().join("out");
    let (key, public) = keygen(&fx, "maintainer");
    let sboms = fx.tree.path().join("sboms");
    ok(
        fx.run(&[
            "attest",
            "greet",
            "--key",
            key.to_str().unwrap(),
            "--sbom-dir",
            sboms.to_str().unwrap(),
        ]),
        "attest",
    );
    let sbom_file = sboms.join("greet-1.0.spdx.json");
    // spdx-tools' own validator, as a user would run it.
    let pyspdx = py.parent().unwrap().join("pyspdxtools");
    ok(
        Command::new(&pyspdx)
            .arg("-i")
            .arg(&sbom_file)
            .output()
            .unwrap(),
        "pyspdxtools -i",
    );
    let sbom: Value = serde_json::from_slice(&fs::read(&sbom_file).unwrap()).unwrap();
    let manifest = tagged_digest(&out_dir, "greet:1.0");
    let names: Vec<&str> = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"greet") && names.contains(&"greet-1.0.tar.gz"),
        "{names:?}"
    );
    let greet_src = fs::read(fx.tree.path().join("packages/greet/package.toml")).unwrap();
    let source_sha = String::from_utf8_lossy(&greet_src)
        .lines()
        .find_map(|l| {
            l.strip_prefix("sha256 = \"")
                .map(|s| s.trim_end_matches('"').to_owned())
        })
        .unwrap();
    assert!(
        String::from_utf8_lossy(&fs::read(&sbom_file).unwrap()).contains(&source_sha),
        "the SBOM names the source pin"
    );
    assert_eq!(sbom["creationInfo"]["created"], "1980-01-01T00:00:00Z");
    // The attached SBOM is the same bytes, about the tagged image.
    let sbom_att = attached(&out_dir, SPDX);
    assert_eq!(sbom_att.len(), 1);
    assert_eq!(sbom_att[0].1, fs::read(&sbom_file).unwrap());
    assert_eq!(sbom_att[0].0["subject"]["digest"], manifest.as_str());

    // The DSSE envelope, verified by securesystemslib with the raw key.
    let prov = attached(&out_dir, IN_TOTO);
    assert_eq!(prov.len(), 1);
    let envelope = fx.tree.path().join("envelope.json");
    fs::write(&envelope, &prov[0].1).unwrap();
    let (pk_hex, key_id) = raw_public(&public);
    let verified = ok(
        Command::new(&py)
            .args(["-c", VERIFY_DSSE])
            .arg(&envelope)
            .args([&pk_hex, &key_id])
            .output()
            .unwrap(),
        "securesystemslib DSSE verify",
    );
    let statement: Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(
        format!(
            "sha256:{}",
            statement["subject"][0]["digest"]["sha256"]
                .as_str()
                .unwrap()
        ),
        manifest
    );
    let resolved = statement["predicate"]["buildDefinition"]["resolvedDependencies"].to_string();
    assert!(resolved.contains(&source_sha), "{resolved}");

    // One byte of the payload changed: the independent verifier refuses it.
    let mut env: Value = serde_json::from_slice(&prov[0].1).unwrap();
    let mut payload = base64::engine::general_purpose::STANDARD
        .decode(env["payload"].as_str().unwrap())
        .unwrap();
    let at = payload.len() / 2;
    payload[at] ^= 1;
    env["payload"] = base64::engine::general_purpose::STANDARD
        .encode(&payload)
        .into();
    fs::write(&envelope, env.to_string()).unwrap();
    let tampered = Command::new(&py)
        .args(["-c", VERIFY_DSSE])
        .arg(&envelope)
        .args([&pk_hex, &key_id])
        .output()
        .unwrap();
    assert!(!tampered.status.success(), "a tampered envelope verified");

    // A second signer rebuilding from scratch (a fresh store) writes the
    // same SBOM and the same provenance but for the builder's identity.
    let store2 = tempfile::tempdir().unwrap();
    let rebuilt = fx
        .command(&["--json", "build", "greet"])
        .env("IMGREP_STORE", store2.path())
        .output()
        .unwrap();
    ok(rebuilt, "rebuild in a fresh store");
    let (key2, _) = keygen(&fx, "rebuilder");
    ok(
        fx.command(&["attest", "greet", "--key", key2.to_str().unwrap()])
            .env("IMGREP_STORE", store2.path())
            .output()
            .unwrap(),
        "attest by a second signer",
    );
    let sboms_now = attached(&out_dir, SPDX);
    assert_eq!(sboms_now.len(), 1, "the same SBOM is attached once");
    assert_eq!(sboms_now[0].1, fs::read(&sbom_file).unwrap());
    let provs = attached(&out_dir, IN_TOTO);
    assert_eq!(provs.len(), 2, "one provenance per signer");
    let payloads: Vec<Value> = provs
        .iter()
        .map(|(_, bytes)| {
            let env: Value = serde_json::from_slice(bytes).unwrap();
            let mut st: Value = serde_json::from_slice(
                &base64::engine::general_purpose::STANDARD
                    .decode(env["payload"].as_str().unwrap())
                    .unwrap(),
            )
            .unwrap();
            let id = st["predicate"]["runDetails"]["builder"]["id"].take();
            assert!(id.as_str().unwrap().starts_with("urn:imgrep:signer:"));
            st
        })
        .collect();
    assert_eq!(payloads[0], payloads[1]);
}

/// `imgrep pull` of the pushed greet:1.0 into a fresh layout `pulled`.
fn pull_greet(fx: &Fixture, reg: &Registry) -> PathBuf {
    let pulled = fx.tree.path().join("pulled");
    ok(
        fx.run(&[
            "pull",
            &format!("{}/imgrep/greet:1.0", reg.host()),
            "--layout",
            pulled.to_str().unwrap(),
        ]),
        "pull",
    );
    pulled
}

/// Pushes greet with its attachments (and, with `cosign_key`, a cosign
/// signature) to `repo` of `reg`.
fn push(fx: &Fixture, reg: &Registry, repo: &str, extra: &[&str]) -> Value {
    let target = format!("{}/{repo}", reg.host());
    let mut args = vec!["--json", "push", "greet:1.0", target.as_str()];
    args.extend_from_slice(extra);
    let out = ok(fx.run(&args), "push");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn attached_artifacts_travel_with_push_and_pull() {
    let test = "attached_artifacts_travel_with_push_and_pull";
    let Some(fx) = Fixture::new(&[]) else { return };
    let Some(reg) = Registry::start(test, None) else {
        return;
    };
    fx.build(&["greet"]);
    let (key, _) = keygen(&fx, "maintainer");
    ok(
        fx.run(&["attest", "greet", "--key", key.to_str().unwrap()]),
        "attest",
    );
    let out_dir = fx.tree.path().join("out");
    let manifest = tagged_digest(&out_dir, "greet:1.0");
    let pushed = push(&fx, &reg, "imgrep/greet", &[]);
    // docker-registry 2.8 has no referrers API: the tag schema is used.
    assert_eq!(pushed["referrers_mode"], "tag-schema");
    assert_eq!(pushed["referrers"].as_array().unwrap().len(), 2);
    let fallback = format!(
        "docker://{}/imgrep/greet:sha256-{}",
        reg.host(),
        &manifest[7..]
    );
    if Path::new("/usr/bin/skopeo").exists() {
        let raw = ok(
            Command::new("skopeo")
                .args(["inspect", "--tls-verify=false", "--raw", &fallback])
                .output()
                .unwrap(),
            "skopeo inspect of the fallback tag",
        );
        let index: Value = serde_json::from_slice(&raw.stdout).unwrap();
        let types: Vec<&str> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["artifactType"].as_str().unwrap())
            .collect();
        assert!(
            types.contains(&SPDX) && types.contains(&IN_TOTO),
            "{types:?}"
        );
        // The image itself is untouched for skopeo.
        ok(
            Command::new("skopeo")
                .args(["inspect", "--tls-verify=false"])
                .arg(format!("docker://{}/imgrep/greet:1.0", reg.host()))
                .output()
                .unwrap(),
            "skopeo inspect of the image",
        );
    } else {
        eprintln!("SKIPPED (part): {test}: skopeo is not installed");
    }
    // Pulled into a fresh layout, the artifacts come along, bytes intact.
    let pulled = pull_greet(&fx, &reg);
    for kind in [SPDX, IN_TOTO] {
        let here: Vec<Vec<u8>> = attached(&out_dir, kind).into_iter().map(|a| a.1).collect();
        let there: Vec<Vec<u8>> = attached(&pulled, kind).into_iter().map(|a| a.1).collect();
        assert_eq!(here, there, "{kind}");
    }
    ok(
        fx.run(&["check", pulled.to_str().unwrap()]),
        "imgrep check of the pulled layout",
    );
    // A second push changes nothing in the fallback index.
    let again = push(&fx, &reg, "imgrep/greet", &[]);
    assert_eq!(again["referrers"], pushed["referrers"]);
}

/// containers-policy.json requiring a sigstore signature by `pem` for the
/// registry `host`, and the registries.d entry that reads attachments.
fn podman_policy(dir: &Path, host: &str, pem: &Path) -> PathBuf {
    let policy = dir.join("policy.json");
    fs::write(
        &policy,
        serde_json::json!({
            "default": [{"type": "reject"}],
            "transports": {"docker": {host: [{
                "type": "sigstoreSigned",
                "keyPath": pem,
                "signedIdentity": {"type": "matchRepoDigestOrExact"},
            }]}},
        })
        .to_string(),
    )
    .unwrap();
    let regd = dir.join("home/.config/containers/registries.d");
    fs::create_dir_all(&regd).unwrap();
    fs::write(
        regd.join("imgrep-test.yaml"),
        format!("docker:\n  {host}:\n    use-sigstore-attachments: true\n"),
    )
    .unwrap();
    policy
}

fn podman_pull(dir: &Path, policy: &Path, image: &str) -> std::process::Output {
    Command::new("podman")
        .env("HOME", dir.join("home"))
        .arg("--root")
        .arg(dir.join("storage"))
        .arg("--runroot")
        .arg(dir.join("run"))
        // vfs works in any directory, under any file system.
        .args(["--storage-driver", "vfs"])
        .args(["pull", "--tls-verify=false", "--signature-policy"])
        .arg(policy)
        .arg(image)
        .output()
        .unwrap()
}

const VERIFY_COSIGN: &str = r#"
import sys
from cryptography.hazmat.primitives.serialization import load_pem_public_key
key = load_pem_public_key(open(sys.argv[1], "rb").read())
key.verify(bytes.fromhex(sys.argv[2]), open(sys.argv[3], "rb").read())
"#;

/// The payload and decoded signature of the cosign-layout signature of
/// `manifest` in `repo`, read from the registry over plain HTTP.
fn cosign_signature(reg: &Registry, repo: &str, manifest: &str) -> (Vec<u8>, Vec<u8>) {
    let base = format!("http://{}/v2/{repo}", reg.host());
    let get = |url: String| {
        ureq::get(&url)
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .call()
            .unwrap()
            .into_body()
            .read_to_vec()
            .unwrap()
    };
    let m: Value = serde_json::from_slice(&get(format!(
        "{base}/manifests/sha256-{}.sig",
        &manifest[7..]
    )))
    .unwrap();
    let layer = &m["layers"][0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
    let sig = base64::engine::general_purpose::STANDARD
        .decode(
            layer["annotations"]["dev.cosignproject.cosign/signature"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    (
        get(format!(
            "{base}/blobs/{}",
            layer["digest"].as_str().unwrap()
        )),
        sig,
    )
}

#[test]
fn cosign_signatures_verify_with_the_pem_key_and_podman_policy() {
    let test = "cosign_signatures_verify_with_the_pem_key_and_podman_policy";
    let Some(py) = python(test) else { return };
    let Some(fx) = Fixture::new(&[]) else { return };
    let Some(reg) = Registry::start(test, None) else {
        return;
    };
    fx.build(&["greet"]);
    let (key, public) = keygen(&fx, "maintainer");
    let (other, _) = keygen(&fx, "stranger");
    let pem = fx.tree.path().join("maintainer.pem");
    let out = ok(fx.run(&["key", "pem", public.to_str().unwrap()]), "key pem");
    fs::write(&pem, &out.stdout).unwrap();
    let signed = push(
        &fx,
        &reg,
        "imgrep/signed",
        &["--cosign-key", key.to_str().unwrap()],
    );
    push(&fx, &reg, "imgrep/unsigned", &[]);
    push(
        &fx,
        &reg,
        "imgrep/wrongkey",
        &["--cosign-key", other.to_str().unwrap()],
    );
    let manifest = signed["digest"].as_str().unwrap();
    let host = reg.host();

    // An independent verifier (Python's cryptography) reads the PEM key and
    // checks the signature over the payload, which names the reference and
    // the manifest digest.
    for (repo, good) in [("imgrep/signed", true), ("imgrep/wrongkey", false)] {
        let (payload, sig) = cosign_signature(&reg, repo, manifest);
        let doc: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            doc["critical"]["identity"]["docker-reference"],
            format!("{host}/{repo}:1.0")
        );
        assert_eq!(doc["critical"]["image"]["docker-manifest-digest"], manifest);
        let file = fx.tree.path().join("payload");
        fs::write(&file, &payload).unwrap();
        let verified = Command::new(&py)
            .args(["-c", VERIFY_COSIGN])
            .arg(&pem)
            .arg(hex::encode(&sig))
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(
            verified.status.success(),
            good,
            "{repo}: {}",
            String::from_utf8_lossy(&verified.stderr)
        );
    }

    // podman's own policy check, where its containers/image has sigstore.
    if !Path::new("/usr/bin/podman").exists() {
        eprintln!("SKIPPED (part): {test}: podman is not installed");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let policy = podman_policy(work.path(), &host, &pem);
    let pulled = podman_pull(work.path(), &policy, &format!("{host}/imgrep/signed:1.0"));
    let err = String::from_utf8_lossy(&pulled.stderr);
    if err.contains("sigstore disabled") {
        eprintln!(
            "SKIPPED (part): {test}: this podman's containers/image is built without sigstore \
             support ({}); see docs/attest.md",
            err.lines().last().unwrap_or_default()
        );
        return;
    }
    assert!(
        pulled.status.success(),
        "podman refused the signed image: {err}"
    );
    for repo in ["unsigned", "wrongkey"] {
        let refused = podman_pull(work.path(), &policy, &format!("{host}/imgrep/{repo}:1.0"));
        assert!(!refused.status.success(), "podman accepted imgrep/{repo}");
    }
}

/// `imgrep verify --registry PREFIX --attached`: the statement signatures
/// `imgrep push` attached to the image are read back from the registry
/// (none from a local manifests/) and counted against the policy: distinct
/// trusted keys, roles; a threshold met and one not met.
#[test]
fn verify_counts_the_signatures_attached_in_the_registry() {
    let test = "verify_counts_the_signatures_attached_in_the_registry";
    let Some(fx) = Fixture::new(&[]) else { return };
    let Some(reg) = Registry::start(test, None) else {
        return;
    };
    fx.build(&["greet"]);
    ok(fx.run(&["publish", "greet"]), "publish");
    let keyring = fx.tree.path().join("keyring");
    fs::create_dir_all(&keyring).unwrap();
    let mut ids = Vec::new();
    for (name, role) in [("alice", "maintainer"), ("bob", "rebuilder")] {
        let (key, public) = keygen(&fx, name);
        ok(
            fx.run(&[
                "sign",
                "greet:1.0",
                "--key",
                key.to_str().unwrap(),
                "--role",
                role,
            ]),
            "sign",
        );
        fs::copy(&public, keyring.join(format!("{name}.pub"))).unwrap();
        ids.push(raw_public(&public).1);
    }
    fs::write(
        keyring.join("roles.toml"),
        "alice = \"maintainer\"\nbob = \"rebuilder\"\n",
    )
    .unwrap();
    let pushed = push(&fx, &reg, "imgrep/greet", &[]);
    let mut attached_ids: Vec<String> = pushed["statement_signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    attached_ids.sort();
    ids.sort();
    assert_eq!(attached_ids, ids, "{pushed}");
    // The signatures are listed among the image's referrers, one per signer.
    let out_dir = fx.tree.path().join("out");
    let sigs = attached(
        &out_dir,
        "application/vnd.imgrep.statement.signature.v1+json",
    );
    assert_eq!(sigs.len(), 2);
    let statement = fs::read(
        fx.tree
            .path()
            .join("manifests/packages/greet/1.0/statement.json"),
    )
    .unwrap();
    assert!(sigs.iter().all(|(_, first)| *first == statement));
    // They come along with `imgrep pull`, and skopeo sees them listed.
    let pulled = pull_greet(&fx, &reg);
    assert_eq!(attached(&pulled, SIGNATURES).len(), 2);
    ok(fx.run(&["check", pulled.to_str().unwrap()]), "imgrep check");
    if Path::new("/usr/bin/skopeo").exists() {
        let manifest = tagged_digest(&out_dir, "greet:1.0");
        let raw = ok(
            Command::new("skopeo")
                .args(["inspect", "--tls-verify=false", "--raw"])
                .arg(format!(
                    "docker://{}/imgrep/greet:sha256-{}",
                    reg.host(),
                    &manifest[7..]
                ))
                .output()
                .unwrap(),
            "skopeo inspect of the fallback tag",
        );
        let index: Value = serde_json::from_slice(&raw.stdout).unwrap();
        let listed = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["artifactType"] == SIGNATURES)
            .count();
        assert_eq!(listed, 2, "{index}");
    } else {
        eprintln!("SKIPPED (part): {test}: skopeo is not installed");
    }

    // From here on nothing local is read: the manifests are gone.
    fs::rename(
        fx.tree.path().join("manifests"),
        fx.tree.path().join("manifests.moved"),
    )
    .unwrap();
    let prefix = format!("{}/imgrep", reg.host());
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "--json",
            "verify",
            "greet:1.0",
            "--registry",
            prefix.as_str(),
            "--attached",
            "--keyring",
            keyring.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = fx.run(&args);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (
            out.status.code(),
            report,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let both = [
        "--threshold",
        "2",
        "--require-role",
        "maintainer=1",
        "--require-role",
        "rebuilder=1",
    ];
    let (code, report, err) = verify(&both);
    assert_eq!(code, Some(0), "{err}\n{report}");
    let p = &report["packages"][0];
    assert_eq!(p["trusted_signatures"], 2, "{p}");
    assert_eq!(p["signatures"]["state"], "signed", "{p}");
    assert_eq!(p["signatures"]["roles"]["rebuilder"]["counted"], 1, "{p}");
    assert_eq!(p["image"]["status"], "ok", "{p}");
    assert_eq!(p["image_ref"], format!("{prefix}/greet:1.0"));
    assert_eq!(
        p["statement"],
        format!("sha256:{}", imgrep::digest::Digest::of(&statement).hex())
    );

    // Not met: a threshold above the signers, or a signer not trusted.
    let (code, report, err) = verify(&["--threshold", "3"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(report["packages"][0]["signatures"]["state"], "under_signed");
    assert!(
        report["packages"][0]["failures"][0]
            .as_str()
            .unwrap()
            .contains("threshold not met: 2 of 3"),
        "{report}"
    );
    fs::remove_file(keyring.join("bob.pub")).unwrap();
    fs::write(keyring.join("roles.toml"), "alice = \"maintainer\"\n").unwrap();
    let (code, report, err) = verify(&both);
    assert_eq!(code, Some(1), "{err}");
    let p = &report["packages"][0];
    assert_eq!(p["trusted_signatures"], 1, "{p}");
    let statuses: Vec<&str> = p["signers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert!(
        statuses.contains(&"unknown") && statuses.contains(&"ok"),
        "{p}"
    );
    // The human table says where the image and signatures came from.
    let out = fx.run(&[
        "verify",
        "greet:1.0",
        "--registry",
        &prefix,
        "--attached",
        "--keyring",
        keyring.to_str().unwrap(),
        "--threshold",
        "1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("(registry image)"), "{err}");

    // An image pushed without signatures is unsigned (exit 1), not an
    // error: a copy of the layout without its attachments.
    let bare = fx.tree.path().join("bare");
    fs::create_dir_all(&bare).unwrap();
    fs::copy(out_dir.join("oci-layout"), bare.join("oci-layout")).unwrap();
    std::os::unix::fs::symlink(out_dir.join("blobs"), bare.join("blobs")).unwrap();
    let mut index: Value =
        serde_json::from_slice(&fs::read(out_dir.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .retain(|d| d["annotations"]["org.opencontainers.image.ref.name"].is_string());
    fs::write(bare.join("index.json"), index.to_string()).unwrap();
    let pushed = push(
        &fx,
        &reg,
        "bare/greet",
        &["--layout", bare.to_str().unwrap()],
    );
    assert!(
        pushed["referrers"].as_array().unwrap().is_empty(),
        "{pushed}"
    );
    let out = fx.run(&[
        "--json",
        "verify",
        "greet:1.0",
        "--registry",
        &format!("{}/bare", reg.host()),
        "--attached",
        "--keyring",
        keyring.to_str().unwrap(),
        "--threshold",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["packages"][0]["signatures"]["state"], "unsigned");
    assert!(
        report["packages"][0]["failures"][0]
            .as_str()
            .unwrap()
            .contains("no imgrep statement signatures are attached"),
        "{report}"
    );
}

/// containers-policy.json whose scope `host` demands one `signedBy`
/// signature per key of `keys` (requirements are ANDed), and the
/// registries.d entry naming `lookaside` as the registry's signature store.
fn signed_by_policy(
    dir: &Path,
    name: &str,
    host: &str,
    keys: &[&Path],
    lookaside: &Path,
) -> PathBuf {
    let policy = dir.join(name);
    let requirements: Vec<Value> = keys
        .iter()
        .map(|key| {
            serde_json::json!({
                "type": "signedBy",
                "keyType": "GPGKeys",
                "keyPath": key,
                "signedIdentity": {"type": "matchRepoDigestOrExact"},
            })
        })
        .collect();
    fs::write(
        &policy,
        serde_json::json!({
            "default": [{"type": "reject"}],
            "transports": {"docker": {host: requirements}},
        })
        .to_string(),
    )
    .unwrap();
    let regd = dir.join("home/.config/containers/registries.d");
    fs::create_dir_all(&regd).unwrap();
    fs::write(
        regd.join("imgrep-test.yaml"),
        format!(
            "docker:\n  {host}:\n    lookaside: file://{}\n",
            lookaside.display()
        ),
    )
    .unwrap();
    policy
}

/// gpg with a fresh home of its own, never starting an agent.
fn gpg(home: &Path) -> Command {
    let mut cmd = Command::new("gpg");
    cmd.arg("--homedir")
        .arg(home)
        .args(["--batch", "--no-autostart", "--status-fd", "1"]);
    cmd
}

#[test]
fn simple_signing_signatures_verify_with_gpg_and_podman_signed_by() {
    let test = "simple_signing_signatures_verify_with_gpg_and_podman_signed_by";
    let Some(fx) = Fixture::new(&[]) else { return };
    let Some(reg) = Registry::start(test, None) else {
        return;
    };
    fx.build(&["greet"]);
    let (key, public) = keygen(&fx, "maintainer");
    let (other, _) = keygen(&fx, "stranger");
    let host = reg.host();
    let work = tempfile::tempdir().unwrap();

    // The OpenPGP form of each key: deterministic, binary or armored.
    let export = |secret: &Path, extra: &[&str]| {
        let mut args = vec!["key", "pgp", secret.to_str().unwrap()];
        args.extend_from_slice(extra);
        ok(fx.run(&args), "key pgp").stdout
    };
    let armored = export(&key, &[]);
    assert_eq!(armored, export(&key, &[]), "the same key every time");
    let binary = export(&key, &["--binary"]);
    let info: Value = serde_json::from_slice(
        &ok(
            fx.run(&["--json", "key", "pgp", key.to_str().unwrap()]),
            "key pgp --json",
        )
        .stdout,
    )
    .unwrap();
    let fingerprint = info["fingerprint"].as_str().unwrap().to_owned();
    // The fingerprint, computed here from the minisign public key as RFC
    // 4880 12.2 defines it: SHA-1 of 0x99, the length (51) and the v4 key
    // packet body: version 4, created 0, algorithm 22 (EdDSA), the Ed25519
    // OID 1.3.6.1.4.1.11591.15.1 (length 9), the point 0x40 || key as an
    // MPI of 263 bits. Nothing but the key bytes varies.
    let mut packet = hex::decode("990033").unwrap();
    packet.extend(hex::decode("040000000016").unwrap());
    packet.extend(hex::decode("092b06010401da470f01").unwrap());
    packet.extend(hex::decode("010740").unwrap());
    packet.extend(hex::decode(raw_public(&public).0).unwrap());
    let body = work.path().join("key-packet");
    fs::write(&body, &packet).unwrap();
    let sha1 = ok(
        Command::new("sha1sum").arg(&body).output().unwrap(),
        "sha1sum",
    );
    assert_eq!(
        String::from_utf8_lossy(&sha1.stdout)[..40].to_uppercase(),
        fingerprint
    );
    assert_eq!(info["public_key"].as_str().unwrap().as_bytes(), armored);
    let maintainer_asc = work.path().join("maintainer.asc");
    let maintainer_gpg = work.path().join("maintainer.gpg");
    let stranger_gpg = work.path().join("stranger.gpg");
    fs::write(&maintainer_asc, &armored).unwrap();
    fs::write(&maintainer_gpg, &binary).unwrap();
    fs::write(&stranger_gpg, export(&other, &["--binary"])).unwrap();

    // Signed by the maintainer, unsigned, signed by a stranger, and signed
    // by both (two signatures of one image in the store).
    let lookaside = work.path().join("lookaside");
    let sign = |who: &Path| {
        vec![
            "--lookaside".to_owned(),
            lookaside.to_str().unwrap().to_owned(),
            "--lookaside-key".to_owned(),
            who.to_str().unwrap().to_owned(),
        ]
    };
    let push_with = |repo: &str, extra: Vec<String>| {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        push(&fx, &reg, repo, &extra)
    };
    let signed = push_with("imgrep/signed", sign(&key));
    push_with("imgrep/unsigned", vec![]);
    push_with("imgrep/wrongkey", sign(&other));
    push_with("imgrep/both", sign(&key));
    let second = push_with("imgrep/both", sign(&other));
    let again = push_with("imgrep/signed", sign(&key));
    let manifest = signed["digest"].as_str().unwrap();
    let sig_dir = |repo: &str| lookaside.join(format!("{repo}@sha256={}", &manifest[7..]));
    assert_eq!(
        signed["lookaside_signature"]["path"],
        sig_dir("imgrep/signed")
            .join("signature-1")
            .to_str()
            .unwrap()
    );
    assert_eq!(
        signed["lookaside_signature"]["fingerprint"],
        fingerprint.as_str()
    );
    assert_eq!(again["lookaside_signature"]["existed"], true, "{again}");
    assert_eq!(
        second["lookaside_signature"]["path"],
        sig_dir("imgrep/both").join("signature-2").to_str().unwrap()
    );
    // gpg, independently: the key imports with the fingerprint imgrep
    // printed, the signature is good and says what podman will compare;
    // the stranger's signature and a tampered one are refused.
    if Command::new("gpg").arg("--version").output().is_err() {
        eprintln!("SKIPPED (part): {test}: gpg is not installed");
    } else {
        let home = work.path().join("gnupg");
        fs::create_dir_all(&home).unwrap();
        fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        ok(
            gpg(&home)
                .arg("--import")
                .arg(&maintainer_asc)
                .output()
                .unwrap(),
            "gpg --import",
        );
        let listed = ok(
            gpg(&home)
                .args(["--with-colons", "--fingerprint", "--list-keys"])
                .output()
                .unwrap(),
            "gpg --list-keys",
        );
        let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
        assert!(
            listed.contains(&format!("fpr:::::::::{fingerprint}:")),
            "{listed}"
        );
        // pub:-:255:22:...: an Ed25519 EdDSA key created at the epoch (0).
        assert!(
            listed.contains(":255:22:") && listed.contains(":0:::"),
            "{listed}"
        );
        let signature = sig_dir("imgrep/signed").join("signature-1");
        let payload = work.path().join("payload.json");
        let verified = ok(
            gpg(&home)
                .arg("--output")
                .arg(&payload)
                .arg("--decrypt")
                .arg(&signature)
                .output()
                .unwrap(),
            "gpg --decrypt of the signature",
        );
        let status = String::from_utf8_lossy(&verified.stdout).into_owned();
        assert!(
            status.contains("[GNUPG:] GOODSIG")
                && status.contains(&format!("VALIDSIG {fingerprint}")),
            "{status}"
        );
        let doc: Value = serde_json::from_slice(&fs::read(&payload).unwrap()).unwrap();
        assert_eq!(doc["critical"]["type"], "atomic container signature");
        assert_eq!(
            doc["critical"]["identity"]["docker-reference"],
            format!("{host}/imgrep/signed:1.0")
        );
        assert_eq!(doc["critical"]["image"]["docker-manifest-digest"], manifest);
        let stranger = gpg(&home)
            .arg("--verify")
            .arg(sig_dir("imgrep/wrongkey").join("signature-1"))
            .output()
            .unwrap();
        assert!(!stranger.status.success());
        assert!(String::from_utf8_lossy(&stranger.stdout).contains("NO_PUBKEY"));
        let mut tampered = fs::read(&signature).unwrap();
        let at = tampered
            .windows(manifest.len())
            .position(|w| w == manifest.as_bytes())
            .unwrap();
        tampered[at + 10] ^= 1;
        let tampered_file = work.path().join("tampered");
        fs::write(&tampered_file, &tampered).unwrap();
        let bad = gpg(&home)
            .arg("--verify")
            .arg(&tampered_file)
            .output()
            .unwrap();
        assert!(!bad.status.success());
        assert!(String::from_utf8_lossy(&bad.stdout).contains("BADSIG"));
    }

    // skopeo (the same containers/image, its own --registries.d option)
    // copies what the key signed and refuses the rest.
    let maintainer = signed_by_policy(
        work.path(),
        "one.json",
        &host,
        &[&maintainer_gpg],
        &lookaside,
    );
    if Path::new("/usr/bin/skopeo").exists() {
        let copy = |repo: &str| {
            Command::new("skopeo")
                .arg("--policy")
                .arg(&maintainer)
                .arg("--registries.d")
                .arg(work.path().join("home/.config/containers/registries.d"))
                .args(["copy", "--src-tls-verify=false"])
                .arg(format!("docker://{host}/{repo}:1.0"))
                .arg(format!(
                    "dir:{}",
                    work.path().join(repo.replace('/', "-")).display()
                ))
                .output()
                .unwrap()
        };
        ok(copy("imgrep/signed"), "skopeo copy of the signed image");
        for repo in ["imgrep/unsigned", "imgrep/wrongkey"] {
            let refused = copy(repo);
            let err = String::from_utf8_lossy(&refused.stderr);
            assert!(!refused.status.success(), "skopeo accepted {repo}");
            assert!(err.contains("Source image rejected"), "{repo}: {err}");
        }
    } else {
        eprintln!("SKIPPED (part): {test}: skopeo is not installed");
    }

    // podman's own signedBy check, reading the lookaside store.
    if !Path::new("/usr/bin/podman").exists() {
        eprintln!("SKIPPED (part): {test}: podman is not installed");
        return;
    }
    let pull =
        |policy: &Path, repo: &str| podman_pull(work.path(), policy, &format!("{host}/{repo}:1.0"));
    let pulled = pull(&maintainer, "imgrep/signed");
    assert!(
        pulled.status.success(),
        "podman refused the signed image: {}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    for repo in ["imgrep/unsigned", "imgrep/wrongkey"] {
        let refused = pull(&maintainer, repo);
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "podman accepted {repo}");
        assert!(err.contains("Source image rejected"), "{repo}: {err}");
    }
    // Two requirements: both keys must have signed (AND, never M-of-N).
    let both = signed_by_policy(
        work.path(),
        "both.json",
        &host,
        &[&maintainer_gpg, &stranger_gpg],
        &lookaside,
    );
    let refused = pull(&both, "imgrep/signed");
    assert!(
        !refused.status.success(),
        "one signature met a policy of two"
    );
    let pulled = pull(&both, "imgrep/both");
    assert!(
        pulled.status.success(),
        "podman refused the image both signed: {}",
        String::from_utf8_lossy(&pulled.stderr)
    );
}
