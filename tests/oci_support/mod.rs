//! Running real OCI consumers against layouts imgrep wrote. Shared by test
//! files with `#[path = "oci_support/mod.rs"] mod oci_support;`.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Whether `tool` runs here; prints why a test is skipped when it does not.
pub fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: `{tool}` is not installed (apt-get install {tool})");
    }
    ok
}

/// The caller's memory cgroup (cgroup v1) from /proc/self/cgroup, if any.
fn own_memory_cgroup() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.to_owned())
    })
}

/// `podman run --rm oci:LAYOUT:REF ARGS...` with what these machines need:
/// runc (crun refuses the hybrid cgroup layout), bounded ulimits, no network
/// and, as root on cgroup v1, the caller's own memory cgroup as parent. The
/// image podman copies into its storage is removed afterwards.
/// Used as `podman run oci:/tmp/imgrep-podman/layout-<hash>:NAME:VERSION`. None (with a
/// SKIPPED line) if podman or runc is missing.
pub fn podman_run(layout: &Path, reference: &str, args: &[&str]) -> Option<Output> {
    podman_run_with(&[], layout, reference, args)
}

/// [`podman_run`] with further `podman run` options (`-v`, `-w`, ...).
pub fn podman_run_with(
    options: &[&str],
    layout: &Path,
    reference: &str,
    args: &[&str],
) -> Option<Output> {
    if !have("podman") || !have("runc") {
        return None;
    }
    let layout = layout.canonicalize().expect("layout path");
    // podman 4.3 names the image it copies after the layout path, which
    // must then be a valid lowercase repository name: go through a symlink.
    let links = Path::new("/tmp/imgrep-podman");
    std::fs::create_dir_all(links).expect("creating /tmp/imgrep-podman");
    let key = imgrep::digest::Digest::of(layout.as_os_str().as_encoded_bytes()).hex();
    let link = links.join(format!("layout-{}", &key[..16]));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&layout, &link).expect("symlink to the layout");
    let image = format!("oci:{}:{reference}", link.display());
    let mut cmd = Command::new("podman");
    cmd.args(["run", "--rm", "--runtime", "runc", "--network", "none"])
        .args([
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=4096:4096",
        ]);
    if nix::unistd::geteuid().is_root() {
        if let Some(cg) = own_memory_cgroup() {
            cmd.arg("--cgroup-parent").arg(cg);
        }
    }
    let out = cmd
        .args(options)
        .arg(&image)
        .args(args)
        .output()
        .expect("running podman");
    if let Ok(config) = config_digest(&layout, reference) {
        let _ = Command::new("podman")
            .args(["rmi", "--force", &config])
            .output();
    }
    let _ = std::fs::remove_file(&link);
    Some(out)
}

/// The image ID podman gives an image: its config digest's hex.
fn config_digest(layout: &Path, reference: &str) -> Result<String, String> {
    let image = imgrep::oci::Layout::open(layout)
        .and_then(|l| l.read_image(reference, false))
        .map_err(|e| e.to_string())?;
    Ok(image.config_digest.hex())
}

/// Runs a command, returning its output; panics with stderr on failure.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
