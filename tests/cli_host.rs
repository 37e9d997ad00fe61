//! `imgrep doctor`, `imgrep completions` and the man pages: what users get
//! besides the build itself.

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_imgrep");

#[test]
fn doctor_probes_the_host_for_real() {
    let out = Command::new(BIN)
        .args(["--json", "doctor"])
        .output()
        .unwrap();
    let findings: Value = serde_json::from_slice(&out.stdout).unwrap();
    let features: Vec<&str> = findings
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["feature"].as_str().unwrap())
        .collect();
    assert_eq!(
        features,
        [
            "user namespaces",
            "subordinate ids",
            "cgroups",
            "overlayfs in a user namespace",
            "i386 programs",
            "store free space"
        ]
    );
    // The rest of this suite runs sandboxes: user namespaces must be there,
    // and doctor's own probe (a forked unshare) must say so.
    let userns = &findings[0];
    assert_eq!(userns["ok"], true, "{userns}");
    assert_eq!(out.status.code(), Some(0));
    // What the sandbox does on this host agrees with what doctor says
    // about i386: the probe really executes an i386 program.
    let i386 = findings[4]["ok"].as_bool().unwrap();
    let emulation = std::fs::read_to_string("/proc/cmdline")
        .map(|c| !c.contains("ia32_emulation=0"))
        .unwrap_or(true);
    if !emulation {
        assert!(!i386);
    }
    let human = Command::new(BIN).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("user namespaces") && text.contains("GiB free"),
        "{text}"
    );
}

#[test]
fn completions_and_man_pages_come_from_the_cli_definition() {
    let bash = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(bash.status.success());
    let script = String::from_utf8_lossy(&bash.stdout);
    for word in ["_imgrep()", "attest", "reproduce", "--cosign-key"] {
        assert!(script.contains(word), "bash completion lacks {word}");
    }
    let bad = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let man = Command::new(BIN)
        .arg("man")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        man.status.success(),
        "{}",
        String::from_utf8_lossy(&man.stderr)
    );
    let page = std::fs::read_to_string(dir.path().join("imgrep-build.1")).unwrap();
    assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
    assert!(
        page.contains("--timeout") || page.contains("timeout"),
        "build's options are documented"
    );
    assert!(dir.path().join("imgrep.1").exists());
}
