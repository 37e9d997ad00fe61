//! Signing, and interoperation with Debian's `minisign` command-line tool in
//! both directions: keys, signatures and verification.

mod sign_support;

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use imgrep::digest::Digest;
use sign_support::{have_minisign, run_with_timeout, Output, Work, PKG, VERSION};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn minisign(work: &Work, args: &[&str], stdin: Option<&str>) -> Output {
    if let Some(input) = stdin {
        // The CLI reads passwords from stdin when it is not a terminal.
        let script = "printf '%s' \"$PW\" | minisign \"$@\"";
        let mut cmd = Command::new("sh");
        cmd.current_dir(work.dir.path())
            .env("PW", input)
            .args(["-c", script, "sh"])
            .args(args);
        return run_with_timeout(cmd, Duration::from_secs(60));
    }
    let mut cmd = Command::new("minisign");
    cmd.current_dir(work.dir.path()).args(args);
    run_with_timeout(cmd, Duration::from_secs(60))
}

fn statement_digest(work: &Work) -> Digest {
    Digest::of(&std::fs::read(work.statement_path()).unwrap())
}

/// Makes keys/NAME.{pub,key} with `minisign -G`, unencrypted (-W) or with
/// `password`, and trusts the public key.
fn cli_keygen(work: &Work, name: &str, password: Option<&str>) {
    std::fs::create_dir_all(work.path("keys")).unwrap();
    let (p, s) = (format!("keys/{name}.pub"), format!("keys/{name}.key"));
    let out = match password {
        None => minisign(work, &["-G", "-W", "-p", &p, "-s", &s], None),
        Some(pw) => minisign(
            work,
            &["-G", "-p", &p, "-s", &s],
            Some(&format!("{pw}\n{pw}\n")),
        ),
    };
    assert_eq!(out.code, 0, "minisign -G: {}", out.stderr);
    work.trust(name);
}

fn only_sig(work: &Work) -> String {
    let files = work.sig_files();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].display().to_string()
}

#[test]
fn cli_unencrypted_key_signs_through_imgrep_and_cli_verifies() {
    if !have_minisign("cli_unencrypted_key_signs_through_imgrep_and_cli_verifies") {
        return;
    }
    let work = Work::new();
    work.publish(b"hello\n");
    cli_keygen(&work, "alice", None);
    let out = work.sign(&work.path("keys/alice.key"), "rebuilder");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let sig = only_sig(&work);
    let st = work.statement_path().display().to_string();
    let out = minisign(
        &work,
        &["-V", "-p", "keys/alice.pub", "-m", &st, "-x", &sig],
        None,
    );
    assert_eq!(out.code, 0, "minisign -V: {}{}", out.stdout, out.stderr);
    let expected = format!(
        "imgrep-statement {} role=rebuilder",
        statement_digest(&work)
    );
    assert!(
        out.stdout.contains(&expected) || out.stderr.contains(&expected),
        "{}",
        out.stdout
    );
    let out = work.verify(&["--threshold", "1"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn cli_encrypted_key_unlocks_from_a_file_and_rejects_a_wrong_password_from_env() {
    if !have_minisign("cli_encrypted_key_unlocks_from_a_file_and_rejects_a_wrong_password_from_env")
    {
        return;
    }
    let work = Work::new();
    work.publish(b"hello\n");
    cli_keygen(&work, "alice", Some("correct horse"));
    let key = work.path("keys/alice.key");
    let key = key.to_str().unwrap();
    // Each unlock of a CLI key runs scrypt with 1 GiB (minisign's default):
    // one good password from a file, one bad one from the environment.
    std::fs::write(work.path("pw"), "correct horse\n").unwrap();
    let out = work.imgrep(&["sign", "--key", key, "--password-file", "pw"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = work.imgrep_env(&["sign", "--key", key], &[("IMGREP_KEY_PASSWORD", "wrong")]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("wrong password"), "{}", out.stderr);
    assert!(out.stderr.contains("alice.key"), "{}", out.stderr);
    only_sig(&work);
    let out = work.verify(&["--threshold", "1"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn imgrep_signature_and_keys_work_with_the_cli() {
    if !have_minisign("imgrep_signature_and_keys_work_with_the_cli") {
        return;
    }
    let work = Work::new();
    work.publish(b"hello\n");
    std::fs::write(work.path("pw"), "s3cret\n").unwrap();
    let out = work.imgrep_env(
        &["keygen", "--out", "keys/bob"],
        &[("IMGREP_KEY_PASSWORD", "s3cret")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = work.imgrep(&["sign", "--key", "keys/bob.key", "--password-file", "pw"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let sig = only_sig(&work);
    // Prehashed: the signature algorithm is `ED`, not legacy `Ed`.
    let text = std::fs::read_to_string(&sig).unwrap();
    let raw = B64.decode(text.lines().nth(1).unwrap()).unwrap();
    assert_eq!(&raw[..2], b"ED");
    let st = work.statement_path().display().to_string();
    let out = minisign(
        &work,
        &["-V", "-p", "keys/bob.pub", "-m", &st, "-x", &sig],
        None,
    );
    assert_eq!(out.code, 0, "minisign -V: {}{}", out.stdout, out.stderr);
    // The CLI signs with imgrep's encrypted and unencrypted secret keys.
    std::fs::write(work.path("file"), "data").unwrap();
    let out = minisign(
        &work,
        &["-S", "-s", "keys/bob.key", "-m", "file"],
        Some("s3cret\n"),
    );
    assert_eq!(out.code, 0, "minisign -S: {}", out.stderr);
    let out = minisign(&work, &["-V", "-p", "keys/bob.pub", "-m", "file"], None);
    assert_eq!(out.code, 0, "minisign -V: {}", out.stderr);
    let out = work.imgrep(&["keygen", "--out", "keys/carol", "--no-password"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = minisign(&work, &["-S", "-s", "keys/carol.key", "-m", "file"], None);
    assert_eq!(out.code, 0, "minisign -S: {}", out.stderr);
    let out = minisign(&work, &["-V", "-p", "keys/carol.pub", "-m", "file"], None);
    assert_eq!(out.code, 0, "minisign -V: {}", out.stderr);
}

#[test]
fn cli_signature_of_a_statement_is_accepted_by_verify() {
    if !have_minisign("cli_signature_of_a_statement_is_accepted_by_verify") {
        return;
    }
    let work = Work::new();
    work.publish(b"hello\n");
    cli_keygen(&work, "dave", None);
    let comment = format!(
        "imgrep-statement {} role=maintainer",
        statement_digest(&work)
    );
    std::fs::create_dir_all(work.sigs_dir()).unwrap();
    let sig = work.sigs_dir().join("dave.minisig");
    let st = work.statement_path().display().to_string();
    let out = minisign(
        &work,
        &[
            "-S",
            "-s",
            "keys/dave.key",
            "-m",
            &st,
            "-x",
            sig.to_str().unwrap(),
            "-t",
            &comment,
        ],
        None,
    );
    assert_eq!(out.code, 0, "minisign -S: {}", out.stderr);
    std::fs::write(work.path("keyring/roles.toml"), "dave = \"maintainer\"\n").unwrap();
    let out = work.verify(&["--threshold", "1", "--require-role", "maintainer=1"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("dave ("), "{}", out.stderr);
}

#[test]
fn no_hang_without_a_terminal() {
    let work = Work::new();
    work.publish(b"hello\n");
    let out = work.imgrep_env(
        &["keygen", "--out", "keys/erin"],
        &[("IMGREP_KEY_PASSWORD", "pw")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    // stdin is /dev/null and no password is configured: a clear error, at once.
    let out = work.sign(&work.path("keys/erin.key"), "rebuilder");
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("erin.key"), "{}", out.stderr);
    assert!(out.stderr.contains("not a terminal"), "{}", out.stderr);
    assert!(out.stderr.contains("IMGREP_KEY_PASSWORD"), "{}", out.stderr);
    assert!(work.sig_files().is_empty());
    let out = work.imgrep(&["keygen", "--out", "keys/frank"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--no-password"), "{}", out.stderr);
    assert!(!work.path("keys/frank.key").exists());
}

#[test]
fn signing_twice_keeps_one_signature_per_key() {
    let work = Work::new();
    work.publish(b"hello\n");
    let key = work.keygen("alice");
    assert_eq!(work.sign(&key, "rebuilder").code, 0);
    let first = std::fs::read_to_string(only_sig(&work)).unwrap();
    // A copy under another name is this signer's too: removed, not kept.
    std::fs::copy(only_sig(&work), work.sigs_dir().join("copy.minisig")).unwrap();
    let out = work.sign(&key, "rebuilder");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("already signed hello:1.0"),
        "{}",
        out.stderr
    );
    // Idempotent: the valid signature is left as it is (a new one would
    // differ, minisign signatures being randomised).
    let second = std::fs::read_to_string(only_sig(&work)).unwrap();
    assert_eq!(first, second);
    let id = second
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    assert!(only_sig(&work).ends_with(&format!("{id}.minisig")));
    // Another role is another signature: replaced.
    let out = work.sign(&key, "maintainer");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let third = std::fs::read_to_string(only_sig(&work)).unwrap();
    assert_ne!(second, third);
    assert!(third.contains(" role=maintainer\n"), "{third}");
}

#[test]
fn sign_refuses_a_local_image_that_differs() {
    let work = Work::new();
    let published = work.publish(b"hello\n");
    let key = work.keygen("alice");
    let before = std::fs::read(&published).unwrap();
    work.build_image(b"hello, with the date in it\n");
    let out = work.sign(&key, "rebuilder");
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("refusing to sign hello:1.0"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("manifest digest: signed sha256:"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("layer 0 diff_id: signed sha256:"),
        "{}",
        out.stderr
    );
    assert!(work.sig_files().is_empty());
    assert_eq!(std::fs::read(&published).unwrap(), before);
}

#[test]
fn sign_refuses_a_package_not_built_locally() {
    let work = Work::new();
    work.publish(b"hello\n");
    let key = work.keygen("alice");
    sign_support::write_layout(&work.path("out"), "other:2.0", b"x");
    let key = key.to_str().unwrap();
    let out = work.imgrep(&["sign", "--key", key, &format!("{PKG}:{VERSION}")]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("no image tagged hello:1.0"),
        "{}",
        out.stderr
    );
    let out = work.imgrep(&["sign", "--key", key]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("not built locally"), "{}", out.stderr);
    assert!(work.sig_files().is_empty());
}

#[test]
fn test_layout_is_valid_for_skopeo() {
    let work = Work::new();
    let image = work.build_image(b"hello\n");
    let layout = format!("oci:{}:{PKG}:{VERSION}", work.path("out").display());
    let Ok(out) = Command::new("skopeo")
        .args(["inspect", "--raw", &layout])
        .output()
    else {
        eprintln!("SKIPPED: test_layout_is_valid_for_skopeo: skopeo is not installed");
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(Digest::of(&out.stdout), image.manifest);
}

#[test]
fn cli_legacy_signature_is_accepted() {
    if !have_minisign("cli_legacy_signature_is_accepted") {
        return;
    }
    let work = Work::new();
    work.publish(b"hello\n");
    cli_keygen(&work, "gina", None);
    let comment = format!(
        "imgrep-statement {} role=rebuilder",
        statement_digest(&work)
    );
    std::fs::create_dir_all(work.sigs_dir()).unwrap();
    let sig = work.sigs_dir().join("gina.minisig");
    let st = work.statement_path().display().to_string();
    let args = [
        "-S",
        "-l",
        "-s",
        "keys/gina.key",
        "-m",
        &st,
        "-x",
        sig.to_str().unwrap(),
        "-t",
        &comment,
    ];
    let out = minisign(&work, &args, None);
    assert_eq!(out.code, 0, "minisign -S -l: {}", out.stderr);
    let raw = B64
        .decode(
            std::fs::read_to_string(&sig)
                .unwrap()
                .lines()
                .nth(1)
                .unwrap(),
        )
        .unwrap();
    assert_eq!(&raw[..2], b"Ed", "a legacy signature");
    let out = work.verify(&["--threshold", "1"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}
