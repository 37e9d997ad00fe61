//! What the sandbox's ids can reach on the host (docs/sandbox.md "Ids",
//! docs/threat-model.md "Attack classes and what stops them"): root inside is
//! never host root, nothing a step writes becomes a privileged program on the
//! host, a nested namespace cannot reach host cgroups, and the process limit
//! holds across uids. Each as root and as a throwaway unprivileged user
//! where it applies.

mod build_support;
mod sandbox_support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sandbox_support::{
    describe, eventually, identities, is_root, processes_running, ready, stdout, Fixture, Who,
};

/// The range of docs/sandbox.md for root, as the sandbox crate defines it.
const DEFAULT_ROOT_UID: u32 = sandbox::HostIds::DEFAULT.uid;

/// A static test program in `tools/usr/bin/probe` of the fixture, for what
/// busybox cannot do: switch to a uid (`as UID CMD...`), give a file a
/// capability (`cap FILE`) and try cgroups from a nested user, mount and
/// cgroup namespace (`cgroups NAME`). `None` after saying why the calling
/// test is skipped.
fn probe(fx: &Fixture, test: &str) -> Option<PathBuf> {
    let tools = fx.dir.path().join("tools");
    let bin = tools.join("usr/bin/probe");
    if bin.exists() {
        return Some(tools);
    }
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    let src = fx.dir.path().join("probe.c");
    std::fs::write(&src, PROBE_C).unwrap();
    match Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
    {
        Ok(o) if o.status.success() => Some(tools),
        Ok(o) => {
            eprintln!(
                "SKIPPED: {test}: cc -static failed (install gcc and libc6-dev): {}",
                String::from_utf8_lossy(&o.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("SKIPPED: {test}: no C compiler (install gcc and libc6-dev): {e}");
            None
        }
    }
}

const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

static void put(const char *path, const char *s) {
    int fd = open(path, O_WRONLY);
    if (fd >= 0) { if (write(fd, s, strlen(s)) < 0) perror(path); close(fd); }
}

static void try_hierarchy(const char *dir, const char *what, const char *name) {
    static const char *files[] = {"cgroup.procs", "tasks", "freezer.state", "cgroup.freeze",
        "pids.max", "memory.limit_in_bytes", "memory.max", "cpu.cfs_quota_us",
        "notify_on_release", "release_agent", "cgroup.subtree_control", 0};
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if (mkdir(p, 0755) == 0) printf("CREATED %s/%s\n", what, name);
    for (int i = 0; files[i]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        int fd = open(p, O_WRONLY);
        if (fd >= 0) { printf("WRITABLE %s/%s\n", what, files[i]); close(fd); }
    }
}

int main(int c, char **v) {
    if (c >= 4 && !strcmp(v[1], "as")) {
        int id = atoi(v[2]);
        if (setgroups(0, 0) || setgid(id) || setuid(id)) { printf("switch: %s\n", strerror(errno)); return 111; }
        execv(v[3], v + 3);
        perror("exec");
        return 112;
    }
    if (c == 3 && !strcmp(v[1], "cap")) {
        /* vfs_cap_data revision 2, effective: CAP_SETUID permitted. */
        unsigned int data[5] = {0x02000001, 1u << 7, 0, 0, 0};
        if (setxattr(v[2], "security.capability", data, sizeof data, 0)) { printf("setxattr: %s\n", strerror(errno)); return 1; }
        return 0;
    }
    if (c == 3 && !strcmp(v[1], "cgroups")) {
        char map[64];
        unsigned u = getuid(), g = getgid();
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWCGROUP)) { printf("unshare: %s\n", strerror(errno)); return 0; }
        put("/proc/self/setgroups", "deny");
        snprintf(map, sizeof map, "0 %u 1", u); put("/proc/self/uid_map", map);
        snprintf(map, sizeof map, "0 %u 1", g); put("/proc/self/gid_map", map);
        static const char *v1[] = {"freezer", "pids", "memory", "cpu", "cpuacct", "cpu,cpuacct",
            "cpuset", "devices", "blkio", "net_cls", "net_prio", "net_cls,net_prio", "perf_event",
            "hugetlb", "rdma", "misc", "none,name=systemd", 0};
        for (int i = 0; v1[i]; i++) {
            char dir[64];
            snprintf(dir, sizeof dir, "/tmp/cg%d", i);
            mkdir(dir, 0755);
            if (mount("cgroup", dir, "cgroup", 0, v1[i])) continue;
            printf("MOUNTED %s\n", v1[i]);
            try_hierarchy(dir, v1[i], v[2]);
        }
        mkdir("/tmp/cg2", 0755);
        if (mount("cgroup2", "/tmp/cg2", "cgroup2", 0, 0) == 0) {
            printf("MOUNTED cgroup2\n");
            try_hierarchy("/tmp/cg2", "cgroup2", v[2]);
        }
        return 0;
    }
    fprintf(stderr, "usage: probe as UID CMD... | cap FILE | cgroups NAME\n");
    return 2;
}
"#;

/// Uid and gid lines of a host process's /proc status: (real, effective).
fn host_ids(pid: u32) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        let f: Vec<u32> = line[name.len()..]
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        (f[0], f[1])
    };
    field("Uid:")
}

/// The host pid of the one process running exactly `cmdline`, waiting for it.
fn host_pid(cmdline: &str) -> u32 {
    let mut found = Vec::new();
    assert!(
        eventually(Duration::from_secs(10), || {
            found = processes_running(cmdline);
            found.len() == 1
        }),
        "{cmdline}: {found:?}"
    );
    found[0]
}

#[test]
fn root_inside_is_never_root_outside() {
    if !ready("root_inside_is_never_root_outside") {
        return;
    }
    let fx = Fixture::new();
    let tools = probe(&fx, "root_inside_is_never_root_outside");
    for (i, who) in identities("hostuid").into_iter().enumerate() {
        let sleeper = format!("46.1{i}");
        let mut child = fx
            .command(&who, &["--tmpfs", "/tmp", "--", "sleep", &sleeper])
            .spawn()
            .unwrap();
        let pid = host_pid(&format!("sleep {sleeper}"));
        let (real, effective) = host_ids(pid);
        child.kill().unwrap();
        child.wait().unwrap();
        let expected = match &who {
            Who::Me if is_root() => DEFAULT_ROOT_UID,
            other => other.uid(),
        };
        assert_eq!((real, effective), (expected, expected), "{}", who.label());
        assert_ne!(real, 0, "{}", who.label());

        // --subids: other inside ids land in the range (root) or the
        // user's /etc/subuid range, never on real users such as uid 1000.
        let Some(tools) = &tools else { continue };
        let sleeper = format!("46.2{i}");
        let mut child = fx
            .command(
                &who,
                &[
                    "--subids",
                    "--ro",
                    tools.to_str().unwrap(),
                    "--",
                    "/usr/bin/probe",
                    "as",
                    "1000",
                    "/bin/sleep",
                    &sleeper,
                ],
            )
            .spawn()
            .unwrap();
        let pid = host_pid(&format!("/bin/sleep {sleeper}"));
        let (real, _) = host_ids(pid);
        child.kill().unwrap();
        child.wait().unwrap();
        if who.ids().is_none() && is_root() {
            assert_eq!(real, DEFAULT_ROOT_UID + 1000, "{}", who.label());
        } else {
            assert!(real >= 100_000, "{}: uid {real}", who.label());
        }
    }
}

#[test]
fn a_root_range_holding_root_or_a_real_user_is_refused() {
    if !ready("a_root_range_holding_root_or_a_real_user_is_refused") {
        return;
    }
    if !is_root() {
        eprintln!("SKIPPED: a_root_range_holding_root_or_a_real_user_is_refused: only root uses the range");
        return;
    }
    let fx = Fixture::new();
    let me = Who::Me;
    for (range, says) in [
        ("0:65536", "holds host root"),
        (
            "65000:1000",
            "/etc/passwd has user \"nobody\" with id 65534",
        ),
    ] {
        let o = fx
            .command(&me, &["--", "true"])
            .env("IMGREP_ROOT_IDS", range)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{range}: {}", describe(&o));
        assert!(
            sandbox_support::stderr(&o).contains(says),
            "{range}: {}",
            describe(&o)
        );
    }
    // A range of one's own choosing is used as it is.
    let mut child = fx
        .command(&me, &["--root-ids", "1500000000:10", "--", "sleep", "46.3"])
        .spawn()
        .unwrap();
    let pid = host_pid("sleep 46.3");
    let ids = host_ids(pid);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(ids, (1_500_000_000, 1_500_000_000));
}

fn special_bits(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7000
}

fn has_capability_xattr(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: NUL-terminated strings; a null buffer of size 0 asks for the size.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    n >= 0
}

#[test]
fn setuid_files_and_capabilities_never_reach_the_host() {
    if !ready("setuid_files_and_capabilities_never_reach_the_host") {
        return;
    }
    let fx = Fixture::new();
    let Some(tools) = probe(&fx, "setuid_files_and_capabilities_never_reach_the_host") else {
        return;
    };
    for who in identities("suid") {
        let out = fx.owned_dir(&format!("out-{}", who.uid()), &who);
        let scratch = fx.owned_dir(&format!("scratch-{}", who.uid()), &who);
        let bind = format!("{}:/out", out.display());
        let script = "for d in /out /made; do mkdir -p $d; cp /bin/busybox $d/suid; cp /bin/busybox $d/sgid; \
                      cp /bin/busybox $d/capped; chmod 4755 $d/suid; chmod 2755 $d/sgid; \
                      probe cap $d/capped; done; ls -l /out /made";
        let o = fx.run(
            &who,
            &[
                "--scratch",
                scratch.to_str().unwrap(),
                "--ro",
                tools.to_str().unwrap(),
                "--bind",
                &bind,
                "--",
                "sh",
                "-c",
                script,
            ],
        );
        assert!(o.status.success(), "{}: {}", who.label(), describe(&o));
        assert!(
            stdout(&o).contains("-rwsr-xr-x"),
            "{}: {}",
            who.label(),
            describe(&o)
        );
        for dir in [out.clone(), scratch.join("upper/made")] {
            for f in ["suid", "sgid", "capped"] {
                let p = dir.join(f);
                assert_eq!(special_bits(&p), 0, "{}: {}", who.label(), p.display());
                assert!(
                    !has_capability_xattr(&p),
                    "{}: {}",
                    who.label(),
                    p.display()
                );
            }
        }
    }
}

#[test]
fn a_nested_namespace_cannot_reach_host_cgroups() {
    if !ready("a_nested_namespace_cannot_reach_host_cgroups") {
        return;
    }
    let fx = Fixture::new();
    let Some(tools) = probe(&fx, "a_nested_namespace_cannot_reach_host_cgroups") else {
        return;
    };
    let name = format!("imgrep-escape-{}", std::process::id());
    for who in identities("cgroups") {
        for limits in [&[][..], &["--pids", "200", "--memory", "512M"][..]] {
            let mut args = vec!["--tmpfs", "/tmp", "--ro", tools.to_str().unwrap()];
            args.extend_from_slice(limits);
            args.extend_from_slice(&["--", "/usr/bin/probe", "cgroups", &name]);
            let o = fx.run(&who, &args);
            let made = host_cgroups_named(&name);
            for dir in &made {
                let _ = std::fs::remove_dir(dir);
            }
            assert!(o.status.success(), "{}: {}", who.label(), describe(&o));
            assert!(
                made.is_empty(),
                "{} {limits:?}: created {made:?}\n{}",
                who.label(),
                describe(&o)
            );
            assert!(
                !stdout(&o).contains("CREATED") && !stdout(&o).contains("WRITABLE"),
                "{} {limits:?}: {}",
                who.label(),
                describe(&o)
            );
        }
    }
}

/// Directories called `name` anywhere in the host's cgroup hierarchies.
fn host_cgroups_named(name: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, name: &str, depth: usize, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if e.file_name() == name {
                out.push(e.path());
            } else if depth > 0 {
                walk(&e.path(), name, depth - 1, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), name, 6, &mut out);
    out
}

#[test]
fn the_process_limit_holds_across_uids() {
    if !ready("the_process_limit_holds_across_uids") {
        return;
    }
    let fx = Fixture::new();
    let Some(tools) = probe(&fx, "the_process_limit_holds_across_uids") else {
        return;
    };
    // Four uids, each starting 12 sleepers: 48 at most, under a limit of 20.
    let script = "for u in 1 2 3 4; do probe as $u /bin/sh -c 'i=0; while [ $i -lt 12 ]; do sleep 45.7 & i=$((i+1)); done; wait' & done; wait";
    for who in identities("pidsuid") {
        let mut child = fx
            .command(
                &who,
                &[
                    "--subids",
                    "--pids",
                    "20",
                    "--timeout",
                    "20",
                    "--ro",
                    tools.to_str().unwrap(),
                    "--",
                    "sh",
                    "-c",
                    script,
                ],
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Let them spawn what they can, then count from the host.
        let mut most = 0;
        for _ in 0..30 {
            std::thread::sleep(Duration::from_millis(100));
            most = most.max(processes_running("sleep 45.7").len());
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            most < 20,
            "{}: {most} sleepers under --pids 20",
            who.label()
        );
        assert!(
            eventually(Duration::from_secs(5), || processes_running("sleep 45.7")
                .is_empty()),
            "{}: leftovers",
            who.label()
        );
    }
}

/// A step's log is a pipe imgrep reads, and what a failed build keeps (its
/// on-disk /build, its /out, a saved in-memory /build) holds no setuid,
/// setgid or capability: a build step cannot leave a privileged program in
/// the store.
#[test]
fn a_build_leaves_no_privileged_file_in_the_store() {
    let Some(fx) = build_support::Fixture::new(&[]) else {
        return;
    };
    let step = "ls -l /proc/self/fd/1; chmod 4755 /proc/self/fd/1 /proc/self/fd/2 2>&1; \
                for d in /out /build; do cp /bin/busybox $d/suid; chmod 4755 $d/suid; \
                cp /bin/busybox $d/sgid; chmod 2755 $d/sgid; done; exit 5";
    for (name, build_dir) in [("suid-disk", "disk"), ("suid-mem", "memory")] {
        let dir = fx.tree.path().join("packages").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("package.toml"),
            format!(
                "[package]\nname = \"{name}\"\nversion = \"1.0\"\ndescription = \"leaves setuid files\"\n\
                 license = \"MIT\"\nhomepage = \"https://example.org/suid\"\n\n[build]\ndeps = [\"busybox\"]\n\
                 build_dir = \"{build_dir}\"\nsteps = [[\"/bin/sh\", \"-c\", \"{step}\"]]\n"
            ),
        )
        .unwrap();
        let o = fx.run(&["build", name]);
        assert_eq!(
            o.status.code(),
            Some(3),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let logs = fx.store_path(&format!("logs/{name}"));
        let log = std::fs::read_dir(&logs)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("pipe:["),
            "{name}: stdout is not a pipe:\n{text}"
        );
        assert_eq!(
            std::fs::metadata(&log).unwrap().permissions().mode() & 0o7777,
            0o644,
            "{name}: {text}"
        );
        let kept = fx.store_path(&format!("failed/{name}"));
        for f in ["out/suid", "out/sgid", "build/suid", "build/sgid"] {
            let p = kept.join(f);
            assert!(p.exists(), "{name}: {} missing", p.display());
            assert_eq!(special_bits(&p), 0, "{name}: {}", p.display());
            let owner = std::fs::metadata(&p).unwrap().uid();
            if is_root() {
                assert_eq!(owner, DEFAULT_ROOT_UID, "{name}: {}", p.display());
            }
        }
    }
}
