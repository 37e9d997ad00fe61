//! Bad input to `imgrep run`: one clear line, exit code 2, and nothing left
//! behind: no mount, no cgroup, no process. Runs serially (one lock) so the
//! before/after snapshots see only the run under test.

mod sandbox_support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Mutex;

use sandbox_support::*;

static SERIAL: Mutex<()> = Mutex::new(());

struct Snapshot {
    mountinfo: String,
    cgroups: Vec<std::path::PathBuf>,
    helpers: Vec<u32>,
}

/// Helpers of this fixture's runs are recognised by their working directory
/// (imgrep runs in the fixture's directory): other imgrep processes on the
/// machine do not count.
fn snapshot(fx: &Fixture) -> Snapshot {
    let helpers = processes_matching("__imgrep_sandbox_helper__")
        .into_iter()
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == fx.dir.path())
        })
        .collect();
    // A cgroup directory names its helper's pid: one of a live helper running
    // elsewhere is not ours; one of a dead helper is a leftover.
    let ours = |pid: &str| match std::fs::read_link(format!("/proc/{pid}/cwd")) {
        Ok(cwd) => cwd == fx.dir.path(),
        Err(_) => true,
    };
    let cgroups = sandbox_cgroups()
        .into_iter()
        .filter(|d| {
            let name = d.file_name().unwrap().to_string_lossy().into_owned();
            ours(name.trim_start_matches("imgrep-sandbox-"))
        })
        .collect();
    Snapshot {
        // Every path a run mounts on has "imgrep" in it (scratch and fixture
        // directories); other mounts on the machine come and go on their own.
        mountinfo: std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains("imgrep"))
            .collect::<Vec<_>>()
            .join("\n"),
        cgroups,
        helpers,
    }
}

/// Run imgrep with `args` and check the bad-input contract; `expect` must
/// appear in the one line it prints.
fn rejects(fx: &Fixture, who: &Who, args: &[&str], expect: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let before = snapshot(fx);
    let o = fx.run(who, args);
    let after = snapshot(fx);
    // A warning that limits cannot be enforced may come first; the error is one line.
    let err: String = stderr(&o)
        .lines()
        .filter(|l| !l.starts_with("imgrep: warning: "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}: {args:?}: {}",
        who.label(),
        describe(&o)
    );
    assert_eq!(
        err.lines().count(),
        1,
        "{}: {args:?}: one line: {}",
        who.label(),
        describe(&o)
    );
    assert!(
        err.contains(expect),
        "{}: {args:?}: expected {expect:?} in: {err}",
        who.label()
    );
    assert_eq!(
        before.mountinfo,
        after.mountinfo,
        "{}: {args:?}: mounts changed",
        who.label()
    );
    // Only new ones count: a cgroup of another process that was ending when
    // the first snapshot was taken may be gone by the second.
    let left: Vec<_> = after
        .cgroups
        .iter()
        .filter(|c| !before.cgroups.contains(c))
        .collect();
    assert!(
        left.is_empty(),
        "{}: {args:?}: cgroups left behind: {left:?}",
        who.label()
    );
    assert_eq!(
        before.helpers,
        after.helpers,
        "{}: {args:?}: helper processes left behind",
        who.label()
    );
}

/// Limits make every run create cgroups (where it can), so the checks see
/// them removed again after a late failure.
const LIMITS: [&str; 4] = ["--pids", "50", "--memory", "256M"];

#[test]
fn missing_root() {
    if !ready("missing_root") {
        return;
    }
    let fx = Fixture::new();
    for who in identities("noroot") {
        let mut cmd = imgrep(&who);
        let o = cmd
            .args(["run", "--root", "/nonexistent/imgrep-root", "--", "true"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
        rejects(
            &fx,
            &who,
            &["--ro", "/nonexistent/imgrep-layer", "--", "true"],
            "/nonexistent/imgrep-layer",
        );
        let file = fx.dir.path().join("plain-file");
        std::fs::write(&file, "").unwrap();
        rejects(
            &fx,
            &who,
            &["--ro", file.to_str().unwrap(), "--", "true"],
            "not a directory",
        );
    }
}

#[test]
fn missing_or_non_executable_command() {
    if !ready("missing_or_non_executable_command") {
        return;
    }
    let fx = Fixture::new();
    let layer = fx.dir.path().join("layer");
    std::fs::create_dir_all(layer.join("usr/bin")).unwrap();
    let script = layer.join("usr/bin/not-executable");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let garbage = layer.join("usr/bin/garbage");
    std::fs::write(&garbage, "\x01\x02 not a program").unwrap();
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ro = layer.to_str().unwrap();
    for who in identities("nocmd") {
        let with = |extra: &[&'static str]| -> Vec<&str> {
            [&LIMITS[..], &["--ro", ro, "--"], extra].concat()
        };
        rejects(&fx, &who, &with(&["no-such-command"]), "no-such-command");
        rejects(&fx, &who, &with(&["/usr/bin/no-such-command"]), "not found");
        rejects(
            &fx,
            &who,
            &with(&["/usr/bin/not-executable"]),
            "permission denied",
        );
        rejects(&fx, &who, &with(&["/usr/bin/garbage"]), "not an executable");
        let cwd = [&LIMITS[..], &["--cwd", "/nonexistent", "--", "true"]].concat();
        rejects(&fx, &who, &cwd, "working directory /nonexistent");
    }
}

#[test]
fn unwritable_scratch() {
    if !ready("unwritable_scratch") {
        return;
    }
    let fx = Fixture::new();
    for who in identities("scratch") {
        let locked = fx.dir.path().join(format!("locked-{}", who.uid()));
        std::fs::create_dir(&locked).unwrap();
        let immutable = match who {
            // root writes anywhere but into an immutable directory.
            Who::Me if is_root() => Command::new("chattr")
                .arg("+i")
                .arg(&locked)
                .status()
                .is_ok_and(|s| s.success()),
            _ => {
                std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
                false
            }
        };
        if is_root() && matches!(who, Who::Me) && !immutable {
            eprintln!(
                "SKIPPED: unwritable_scratch as root: chattr +i unavailable on this file system"
            );
            continue;
        }
        let scratch = locked.join("scratch");
        let args = [
            &LIMITS[..],
            &["--scratch", scratch.to_str().unwrap(), "--", "true"],
        ]
        .concat();
        rejects(&fx, &who, &args, "scratch directory");
        if immutable {
            Command::new("chattr")
                .arg("-i")
                .arg(&locked)
                .status()
                .unwrap();
        }
        assert!(!scratch.exists());
    }
}

#[test]
fn invalid_limits() {
    if !ready("invalid_limits") {
        return;
    }
    let fx = Fixture::new();
    for who in identities("limits") {
        for (args, expect) in [
            (["--memory", "12QB"], "--memory"),
            (["--memory", "0"], "--memory"),
            (["--pids", "0"], "--pids"),
            (["--pids", "many"], "--pids"),
            (["--cpus", "-1"], "--cpus"),
            (["--timeout", "5days"], "--timeout"),
            (["--bind", "/tmp"], "--bind"),
            (["--env", "NOVALUE"], "--env"),
        ] {
            rejects(&fx, &who, &[&args[..], &["--", "true"]].concat(), expect);
        }
    }
}

#[test]
fn strict_limits_without_cgroups_refuse_to_run() {
    if !ready("strict_limits_without_cgroups_refuse_to_run") {
        return;
    }
    let fx = Fixture::new();
    for who in identities("strict") {
        let mark = fx.owned_dir(&format!("mark-{}", who.uid()), &who);
        let bind = format!("{}:/mark", mark.display());
        let args = [
            "--strict-limits",
            "--pids",
            "50",
            "--bind",
            &bind,
            "--",
            "touch",
            "/mark/ran",
        ];
        let can_cgroup = {
            let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
            let o = fx.run(&who, &args);
            if o.status.success() {
                true
            } else {
                assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
                assert!(
                    stderr(&o).contains("limits cannot be enforced"),
                    "{}",
                    describe(&o)
                );
                false
            }
        };
        let ran = mark.join("ran").exists();
        assert_eq!(
            ran,
            can_cgroup,
            "{}: ran iff limits could be enforced",
            who.label()
        );
        if !can_cgroup {
            rejects(&fx, &who, &args, "limits cannot be enforced");
        }
    }
}
