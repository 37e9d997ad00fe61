//! Shared fixtures of the sandbox tests: a busybox root, the imgrep binary run
//! as root and as a throwaway unprivileged user, and snapshots of what a run
//! could leave behind on the host.

#![allow(dead_code)]

use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const BUSYBOX: &str = "/bin/busybox";

/// Who runs imgrep.
pub enum Who {
    /// The test's own user (root, or an unprivileged user in CI).
    Me,
    /// A user created for this test (when the test runs as root), with
    /// /etc/subuid and /etc/subgid ranges; deleted on drop.
    Throwaway(Throwaway),
}

impl Who {
    pub fn label(&self) -> String {
        match self {
            Who::Me if is_root() => "root".into(),
            Who::Me => "current user".into(),
            Who::Throwaway(t) => format!("throwaway user {}", t.name),
        }
    }

    pub fn ids(&self) -> Option<(u32, u32)> {
        match self {
            Who::Me => None,
            Who::Throwaway(t) => Some((t.uid, t.gid)),
        }
    }

    pub fn uid(&self) -> u32 {
        self.ids()
            .map_or_else(|| nix::unistd::geteuid().as_raw(), |(u, _)| u)
    }
}

pub struct Throwaway {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl Throwaway {
    fn create(tag: &str) -> Throwaway {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "imgt{}{}{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            &tag[..tag.len().min(4)]
        );
        retry_locked(|| {
            Command::new("useradd")
                .args(["--no-create-home", "--shell", "/usr/sbin/nologin", &name])
                .output()
        })
        .unwrap();
        let user = nix::unistd::User::from_name(&name)
            .unwrap()
            .expect("user just created");
        let has_range = |file: &str| {
            std::fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with(&format!("{name}:")))
        };
        if !(has_range("/etc/subuid") && has_range("/etc/subgid")) {
            let base = 300_000 + (user.uid.as_raw() % 1000) * 65_536;
            let range = format!("{base}-{}", base + 65_535);
            retry_locked(|| {
                Command::new("usermod")
                    .args(["--add-subuids", &range, "--add-subgids", &range, &name])
                    .output()
            })
            .unwrap();
        }
        Throwaway {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        // userdel refuses while the user has processes: none may be left.
        if let Err(e) = retry_locked(|| Command::new("userdel").arg(&self.name).output()) {
            eprintln!("cannot delete throwaway user {}: {e}", self.name);
        }
    }
}

/// useradd/usermod/userdel fail while another one holds /etc/passwd's lock.
fn retry_locked(mut f: impl FnMut() -> std::io::Result<Output>) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..100 {
        let out = f().map_err(|e| format!("shadow-utils (useradd, usermod, userdel): {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        if !last.contains("lock") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last)
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The identities every behaviour is checked as: root and a throwaway user
/// when the tests run as root, else the current user only.
pub fn identities(tag: &str) -> Vec<Who> {
    if is_root() {
        vec![Who::Me, Who::Throwaway(Throwaway::create(tag))]
    } else {
        eprintln!("SKIPPED: the root variant of {tag}: the tests do not run as root; running as the current user only");
        vec![Who::Me]
    }
}

/// Whether the prerequisites are here; prints why not.
pub fn ready(test: &str) -> bool {
    if !Path::new(BUSYBOX).exists() {
        eprintln!("SKIPPED: {test}: {BUSYBOX} missing (install the Debian package busybox-static)");
        return false;
    }
    true
}

/// A temporary directory readable by everyone with a busybox root in `root/`,
/// and per-identity writable places.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("imgrep-sbx-test-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().join("root");
        busybox_root(&root);
        Fixture { dir, root }
    }

    /// A fresh directory owned by `who`.
    pub fn owned_dir(&self, name: &str, who: &Who) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir(&p).unwrap();
        if let Some((u, g)) = who.ids() {
            std::os::unix::fs::chown(&p, Some(u), Some(g)).unwrap();
        }
        p
    }

    /// `imgrep run --root ROOT ARGS...` as `who`.
    pub fn run(&self, who: &Who, args: &[&str]) -> Output {
        let mut cmd = self.command(who, args);
        cmd.output().unwrap()
    }

    pub fn command(&self, who: &Who, args: &[&str]) -> Command {
        let mut cmd = imgrep(who);
        cmd.current_dir(self.dir.path())
            .arg("run")
            .arg("--root")
            .arg(&self.root)
            .args(args);
        cmd
    }
}

/// The imgrep binary run as `who`, with a minimal environment.
pub fn imgrep(who: &Who) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgrep"));
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .env("TMPDIR", "/tmp");
    if let Some((u, g)) = who.ids() {
        cmd.uid(u).gid(g);
    }
    cmd
}

/// /bin/busybox with a symbolic link per applet, and the empty directories a
/// root needs to mount onto.
pub fn busybox_root(root: &Path) {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            symlink("busybox", bin.join(applet)).unwrap();
        }
    }
    for d in ["proc", "dev", "tmp", "etc", "mnt"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn describe(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        stdout(o),
        stderr(o)
    )
}

/// pids of host processes whose command line (arguments joined by spaces)
/// is exactly `cmdline`.
pub fn processes_running(cmdline: &str) -> Vec<u32> {
    processes_where(|c| c == cmdline)
}

/// pids of host processes whose command line contains `needle`.
pub fn processes_matching(needle: &str) -> Vec<u32> {
    processes_where(|c| c.contains(needle))
}

fn processes_where(pred: impl Fn(&str) -> bool) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if pred(cmdline.trim_end()) {
            found.push(pid);
        }
    }
    found
}

/// Wait up to `limit` for `cond`.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Every cgroup directory made by a sandbox helper, in every hierarchy.
pub fn sandbox_cgroups() -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            if e.file_name()
                .to_string_lossy()
                .starts_with("imgrep-sandbox-")
            {
                out.push(e.path());
            } else if depth > 0 {
                walk(&e.path(), depth - 1, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), 5, &mut out);
    out.sort();
    out
}

/// pids of the processes whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name may hold spaces: fields start after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(parent) {
            found.push(pid);
        }
    }
    found
}
