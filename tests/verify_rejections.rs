//! `imgrep verify`: what counts toward the policy and what is rejected, each
//! case on its own. Keys are made with `imgrep keygen`, signatures with
//! `imgrep sign`, images are real OCI layouts written by the test.

mod sign_support;

use base64::Engine as _;
use sign_support::Work;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A published statement signed by `signers` (name, role); each signer's
/// key is in the keyring with that role.
fn signed_by(signers: &[(&str, &str)]) -> Work {
    let work = Work::new();
    work.publish(b"hello\n");
    let mut roles = String::new();
    for (name, role) in signers {
        let key = work.keygen(name);
        let out = work.sign(&key, role);
        assert_eq!(out.code, 0, "{}", out.stderr);
        roles.push_str(&format!("{name} = \"{role}\"\n"));
    }
    std::fs::write(work.path("keyring/roles.toml"), roles).unwrap();
    work
}

fn sig_path(work: &Work, name: &str) -> std::path::PathBuf {
    let pubkey = std::fs::read_to_string(work.path(&format!("keys/{name}.pub"))).unwrap();
    let id = pubkey
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    work.sigs_dir().join(format!("{id}.minisig"))
}

fn assert_fails(out: &sign_support::Output, needle: &str) {
    assert_eq!(out.code, 1, "expected exit 1\n{}", out.stderr);
    assert!(
        out.stderr.contains(needle),
        "expected {needle:?} in:\n{}",
        out.stderr
    );
}

#[test]
fn two_signers_meet_threshold_and_roles() {
    let work = signed_by(&[("alice", "maintainer"), ("bob", "rebuilder")]);
    let out = work.verify(&[
        "--threshold",
        "2",
        "--require-role",
        "maintainer=1",
        "--require-role",
        "rebuilder=1",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("=> OK: 2 trusted signatures (threshold 2)"),
        "{}",
        out.stderr
    );
    // Quiet: nothing on stderr when the check holds, the reasons when not.
    let quiet = work.imgrep(&["-q", "verify", "--keyring", "keyring", "--threshold", "2"]);
    assert_eq!(quiet.code, 0, "{}", quiet.stderr);
    assert_eq!(quiet.stderr, "");
    let quiet = work.imgrep(&["-q", "verify", "--keyring", "keyring", "--threshold", "3"]);
    assert_eq!(quiet.code, 1);
    assert!(
        quiet.stderr.contains("threshold not met: 2 of 3"),
        "{}",
        quiet.stderr
    );
    let out = work.verify(&["--threshold", "2", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    let p = &v["packages"][0];
    assert_eq!(p["trusted_signatures"], 2);
    assert_eq!(p["image"]["status"], "ok");
    let signers: Vec<_> = p["signers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["signer"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert!(
        signers.contains(&("alice", "ok")) && signers.contains(&("bob", "ok")),
        "{signers:?}"
    );
}

#[test]
fn wrong_key_with_the_same_key_id_is_rejected() {
    let work = signed_by(&[("alice", "rebuilder")]);
    // The keyring holds another key under alice's key id: key ids are not
    // fingerprints, the signature must be checked with the key itself.
    let out = work.imgrep(&["keygen", "--no-password", "--out", "keys/mallory"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let decode = |name: &str| {
        let text = std::fs::read_to_string(work.path(&format!("keys/{name}.pub"))).unwrap();
        B64.decode(text.lines().nth(1).unwrap()).unwrap()
    };
    let (alice, mut mallory) = (decode("alice"), decode("mallory"));
    mallory[2..10].copy_from_slice(&alice[2..10]);
    let forged = format!("untrusted comment: forged\n{}\n", B64.encode(&mallory));
    std::fs::write(work.path("keyring/alice.pub"), forged).unwrap();
    assert_fails(&work.verify(&["--threshold", "1"]), "FAIL: bad signature");
}

#[test]
fn unknown_key_is_ignored_and_reported() {
    let work = signed_by(&[("alice", "rebuilder")]);
    let key = work.keygen("stranger");
    std::fs::remove_file(work.path("keyring/stranger.pub")).unwrap();
    assert_eq!(work.sign(&key, "rebuilder").code, 0);
    let out = work.verify(&["--threshold", "1"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("IGNORED: unknown key (not among the trusted keys)"),
        "{}",
        out.stderr
    );
    assert_fails(
        &work.verify(&["--threshold", "2"]),
        "threshold not met: 1 of 2",
    );
}

#[test]
fn same_key_twice_counts_once_toward_a_threshold_of_two() {
    let work = signed_by(&[("alice", "rebuilder")]);
    std::fs::copy(
        sig_path(&work, "alice"),
        work.sigs_dir().join("again.minisig"),
    )
    .unwrap();
    let out = work.verify(&["--threshold", "2"]);
    assert_fails(&out, "threshold not met: 1 of 2");
    assert!(
        out.stderr.contains("NOT COUNTED: key already counted"),
        "{}",
        out.stderr
    );
}

/// Rewrites the key id (bytes 2..10 of the decoded line 2) of a minisign
/// public key or signature file's text.
fn with_key_id(text: &str, id: [u8; 8]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut raw = B64.decode(&lines[1]).unwrap();
    raw[2..10].copy_from_slice(&id);
    lines[1] = B64.encode(&raw);
    lines.join("\n") + "\n"
}

#[test]
fn one_key_under_two_key_ids_counts_once() {
    // GHSA-pwqf-9h7j-7mv8's class: the keyring lists alice's public key a
    // second time under another key id and name, and her one signature is
    // filed a second time under that id. Key ids are 8 arbitrary bytes; the
    // key bytes are the same, so this is one signer.
    let work = signed_by(&[("alice", "rebuilder")]);
    let alias_id = [0x42; 8];
    let key = std::fs::read_to_string(work.path("keys/alice.pub")).unwrap();
    std::fs::write(work.path("keyring/alias.pub"), with_key_id(&key, alias_id)).unwrap();
    let roles = work.path("keyring/roles.toml");
    let mut text = std::fs::read_to_string(&roles).unwrap();
    text.push_str("alias = \"rebuilder\"\n");
    std::fs::write(&roles, &text).unwrap();
    let sig = std::fs::read_to_string(sig_path(&work, "alice")).unwrap();
    std::fs::write(
        work.sigs_dir().join("4242424242424242.minisig"),
        with_key_id(&sig, alias_id),
    )
    .unwrap();
    // Each signature holds on its own: the copy is only a second vote.
    let out = work.verify(&["--threshold", "1"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = work.verify(&["--threshold", "2"]);
    assert_fails(&out, "threshold not met: 1 of 2");
    assert!(
        out.stderr.contains(
            "NOT COUNTED: key already counted for this statement: the same public key as signer"
        ),
        "{}",
        out.stderr
    );
    let out = work.verify(&["--threshold", "2", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["packages"][0]["trusted_signatures"], 1, "{}", out.stdout);
    // The same key given two roles would let one key meet two role
    // minimums: refused as an input error, naming both files.
    std::fs::write(
        &roles,
        text.replace("alias = \"rebuilder\"", "alias = \"maintainer\""),
    )
    .unwrap();
    let out = work.verify(&["--threshold", "1"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("one key is one signer with one role")
            && out.stderr.contains("alias.pub")
            && out.stderr.contains("alice.pub"),
        "{}",
        out.stderr
    );
}

#[test]
fn statement_changed_by_one_byte_is_rejected() {
    let work = signed_by(&[("alice", "rebuilder")]);
    let mut bytes = std::fs::read(work.statement_path()).unwrap();
    let at = bytes
        .windows(13)
        .position(|w| w == b"input_digest\"")
        .unwrap()
        + 22;
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    std::fs::write(work.statement_path(), bytes).unwrap();
    let out = work.verify(&["--threshold", "1", "--signatures-only"]);
    assert_fails(&out, "FAIL: bad signature");
}

#[test]
fn signature_changed_is_rejected() {
    let work = signed_by(&[("alice", "rebuilder")]);
    let path = sig_path(&work, "alice");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut raw = B64.decode(&lines[1]).unwrap();
    raw[20] ^= 1; // inside the Ed25519 signature, after algorithm and key id
    lines[1] = B64.encode(raw);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    assert_fails(&work.verify(&["--threshold", "1"]), "FAIL: bad signature");
}

#[test]
fn trusted_comment_changed_is_rejected() {
    let work = signed_by(&[("alice", "rebuilder")]);
    let path = sig_path(&work, "alice");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("role=rebuilder", "role=maintainer")).unwrap();
    let out = work.verify(&["--threshold", "1"]);
    assert_fails(
        &out,
        "FAIL: bad signature: Comment signature verification failed",
    );
}

#[test]
fn local_image_that_differs_is_rejected() {
    let work = signed_by(&[("alice", "rebuilder")]);
    work.build_image(b"hello, rebuilt differently\n");
    let out = work.verify(&["--threshold", "1"]);
    assert_fails(&out, "FAIL: manifest digest: signed sha256:");
    assert!(
        out.stderr.contains("layer 0 diff_id: signed sha256:"),
        "{}",
        out.stderr
    );
    let out = work.verify(&["--threshold", "1", "--signatures-only"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("not checked"), "{}", out.stderr);
}

#[test]
fn threshold_not_met_fails() {
    let work = signed_by(&[("alice", "rebuilder"), ("bob", "rebuilder")]);
    assert_fails(
        &work.verify(&["--threshold", "3"]),
        "threshold not met: 2 of 3",
    );
    let out = work.verify(&["--threshold", "3", "--json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(
        v["packages"][0]["failures"][0],
        "threshold not met: 2 of 3 trusted signatures"
    );
}

#[test]
fn role_minimum_not_met_fails() {
    let work = signed_by(&[("alice", "rebuilder"), ("bob", "rebuilder")]);
    std::fs::write(
        work.path("policy.toml"),
        "threshold = 2\n[roles]\nmaintainer = 1\n",
    )
    .unwrap();
    let out = work.verify(&["--policy", "policy.toml"]);
    assert_fails(&out, "role maintainer: 0 of 1 required signatures");
}

#[test]
fn role_claimed_in_the_signature_must_match_the_keyring() {
    let work = signed_by(&[("alice", "rebuilder")]);
    let out = work.sign(&work.path("keys/alice.key"), "maintainer");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = work.verify(&["--threshold", "1", "--require-role", "maintainer=1"]);
    assert_fails(&out, "signed as role maintainer, but");
}

#[test]
fn malformed_key_file_is_an_input_error() {
    let work = signed_by(&[("alice", "rebuilder")]);
    std::fs::write(
        work.path("keyring/broken.pub"),
        "untrusted comment: x\nnot base64!\n",
    )
    .unwrap();
    let out = work.verify(&["--threshold", "1"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("broken.pub: not a minisign public key: line 2"),
        "{}",
        out.stderr
    );
}

#[test]
fn malformed_signature_file_is_an_input_error() {
    let work = signed_by(&[("alice", "rebuilder")]);
    let bad = work.sigs_dir().join("junk.minisig");
    std::fs::write(&bad, "untrusted comment: x\nRWQ=\n").unwrap();
    let out = work.verify(&["--threshold", "1"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("junk.minisig: not a minisign signature"),
        "{}",
        out.stderr
    );
}

#[test]
fn malformed_statement_is_an_input_error() {
    let work = signed_by(&[("alice", "rebuilder")]);
    let mut bytes = std::fs::read(work.statement_path()).unwrap();
    bytes.push(b'\n');
    std::fs::write(work.statement_path(), bytes).unwrap();
    let out = work.verify(&["--threshold", "1"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("statement.json: statement is not in canonical form"),
        "{}",
        out.stderr
    );
}

#[test]
fn malformed_policy_file_is_an_input_error() {
    let work = signed_by(&[("alice", "rebuilder")]);
    std::fs::write(work.path("policy.toml"), "threshold = 1\nthreshhold = 2\n").unwrap();
    let out = work.verify(&["--policy", "policy.toml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("policy.toml: TOML parse error at line 2"),
        "{}",
        out.stderr
    );
    std::fs::write(work.path("policy.toml"), "threshold = 0\n").unwrap();
    let out = work.verify(&["--policy", "policy.toml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("threshold = 0"), "{}", out.stderr);
}

#[test]
fn repository_keys_only_on_request_and_with_a_warning() {
    let work = signed_by(&[("alice", "rebuilder")]);
    let keys = work.manifests().keys_dir();
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::copy(work.path("keys/alice.pub"), keys.join("alice.pub")).unwrap();
    let out = work.imgrep(&["verify", "--threshold", "1"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("no trusted keys"), "{}", out.stderr);
    let out = work.imgrep(&["verify", "--threshold", "1", "--repo-keys"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("warning: trusting the keys in"),
        "{}",
        out.stderr
    );
}

#[test]
fn pinned_key_ids_and_keys_given_on_the_command_line() {
    let work = signed_by(&[("alice", "maintainer"), ("bob", "rebuilder")]);
    let pubkey = |name: &str| {
        let text = std::fs::read_to_string(work.path(&format!("keys/{name}.pub"))).unwrap();
        let id = text
            .lines()
            .next()
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .to_owned();
        (id, text.lines().nth(1).unwrap().to_owned())
    };
    let (alice_id, _) = pubkey("alice");
    let (_, bob_key) = pubkey("bob");
    // Pinning alice's id leaves bob's keyring entry untrusted.
    let out = work.verify(&["--threshold", "2", "--trust", &alice_id]);
    assert_fails(&out, "threshold not met: 1 of 2");
    // bob's key given whole, with its role, and no keyring at all.
    let out = work.imgrep(&[
        "verify",
        "--threshold",
        "1",
        "--require-role",
        "rebuilder=1",
        "--trust",
        &format!("rebuilder:{bob_key}"),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = work.verify(&["--threshold", "1", "--trust", "0123456789ABCDEF"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("pinned key 0123456789ABCDEF is in none of the keyrings"),
        "{}",
        out.stderr
    );
}
