//! Shared by the signing and verification tests: a workspace with a
//! manifests/ directory and a local OCI layout written here (the smallest
//! valid one: one uncompressed tar layer), and running imgrep with a timeout
//! and no terminal.

#![allow(dead_code)] // each test binary uses a different part of this file

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imgrep::digest::Digest;
use imgrep::sign::manifests::Manifests;
use imgrep::statement::{ImageDigests, SourceHash, Statement};
use serde_json::json;

pub const PKG: &str = "hello";
pub const VERSION: &str = "1.0";

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command with stdin from /dev/null; panics if it runs longer than
/// `timeout` (a hang waiting for a password is a failure, not a wait).
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the command");
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            r.read_to_string(&mut s).unwrap();
            s
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > timeout {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{cmd:?} still running after {timeout:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        code: status.code().expect("killed by a signal"),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A scratch workspace: `manifests/`, `out/` (the local OCI layout), keys.
pub struct Work {
    pub dir: tempfile::TempDir,
}

impl Work {
    pub fn new() -> Self {
        Work {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn manifests(&self) -> Manifests {
        Manifests::new(self.path("manifests"))
    }

    /// `imgrep ARGS` run in the workspace (`-C`), without a terminal and
    /// without a password in the environment.
    pub fn imgrep(&self, args: &[&str]) -> Output {
        self.imgrep_env(args, &[])
    }

    pub fn imgrep_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgrep"));
        cmd.arg("-C").arg(self.dir.path()).args(args);
        cmd.env_remove("IMGREP_KEY_PASSWORD");
        cmd.envs(env.iter().copied());
        run_with_timeout(cmd, Duration::from_secs(60))
    }

    /// Writes an image tagged `PKG:VERSION` into out/ whose one layer holds
    /// `content`, replacing what was there; returns its digests.
    pub fn build_image(&self, content: &[u8]) -> ImageDigests {
        write_layout(&self.path("out"), &format!("{PKG}:{VERSION}"), content)
    }

    /// Builds the image and publishes a statement for it; returns the
    /// statement's path.
    pub fn publish(&self, content: &[u8]) -> PathBuf {
        let image = self.build_image(content);
        let st = Statement::new(
            PKG,
            VERSION,
            Digest::of(b"recipe"),
            image,
            vec![SourceHash::File(Digest::of(b"source tarball"))],
        )
        .unwrap();
        self.manifests().write_statement(&st).unwrap()
    }

    pub fn statement_path(&self) -> PathBuf {
        self.path(&format!(
            "manifests/packages/{PKG}/{VERSION}/statement.json"
        ))
    }

    pub fn sigs_dir(&self) -> PathBuf {
        self.path(&format!("manifests/packages/{PKG}/{VERSION}/sigs"))
    }

    pub fn sig_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.sigs_dir())
            .map(|rd| rd.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// `imgrep keygen --no-password` into keys/NAME.{pub,key}; the public
    /// key is also copied into keyring/ (the verifier's trust anchors).
    pub fn keygen(&self, name: &str) -> PathBuf {
        let prefix = format!("keys/{name}");
        let out = self.imgrep(&["keygen", "--no-password", "--out", &prefix]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        self.trust(name);
        self.path(&format!("{prefix}.key"))
    }

    /// Copies keys/NAME.pub into keyring/.
    pub fn trust(&self, name: &str) {
        std::fs::create_dir_all(self.path("keyring")).unwrap();
        std::fs::copy(
            self.path(&format!("keys/{name}.pub")),
            self.path(&format!("keyring/{name}.pub")),
        )
        .unwrap();
    }

    pub fn sign(&self, key: &Path, role: &str) -> Output {
        let key = key.to_str().unwrap();
        self.imgrep(&["sign", "--key", key, "--role", role])
    }

    /// `imgrep verify --keyring keyring EXTRA...`
    pub fn verify(&self, extra: &[&str]) -> Output {
        let mut args = vec!["verify", "--keyring", "keyring"];
        args.extend_from_slice(extra);
        self.imgrep(&args)
    }
}

/// Whether the `minisign` command-line tool is installed; prints why a test
/// is skipped if not.
pub fn have_minisign(test: &str) -> bool {
    let ok = Command::new("minisign")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        eprintln!("SKIPPED: {test}: the minisign command-line tool is not installed (apt-get install minisign)");
    }
    ok
}

/// Writes a one-layer image tagged `reference` into the OCI layout at
/// `layout` (created or replaced): the layer is an uncompressed tar holding
/// `hello.txt` with `content`.
pub fn write_layout(layout: &Path, reference: &str, content: &[u8]) -> ImageDigests {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(imgrep::DEFAULT_SOURCE_DATE_EPOCH as u64);
    header.set_cksum();
    tar.append_data(&mut header, "hello.txt", content).unwrap();
    let layer = tar.into_inner().unwrap();
    let blob = |bytes: &[u8]| {
        let d = Digest::of(bytes);
        let path = layout.join("blobs/sha256").join(d.hex());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        d
    };
    let diff_id = blob(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": blob(&config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": diff_id,
            "size": layer.len(),
        }],
    }))
    .unwrap();
    let manifest_digest = blob(&manifest);
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": reference},
        }],
    });
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    ImageDigests {
        manifest: manifest_digest,
        diff_ids: vec![diff_id],
    }
}
