//! The real sandbox, driven through `imgrep run`: escape attempts, limits,
//! timeouts, status propagation and the environment, each as root and as a
//! throwaway unprivileged user (or as the current user when not root).

mod sandbox_support;

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use sandbox_support::*;

#[test]
fn exit_code_and_signal_propagate() {
    if !ready("exit_code_and_signal_propagate") {
        return;
    }
    let fx = Fixture::new();
    for who in identities("exit") {
        let o = fx.run(&who, &["--", "sh", "-c", "exit 7"]);
        assert_eq!(
            o.status.code(),
            Some(7),
            "{}: {}",
            who.label(),
            describe(&o)
        );
        let o = fx.run(&who, &["--", "true"]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}: {}",
            who.label(),
            describe(&o)
        );
        let o = fx.run(&who, &["--", "sh", "-c", "kill -SEGV $$"]);
        assert_eq!(
            o.status.code(),
            Some(128 + 11),
            "{}: {}",
            who.label(),
            describe(&o)
        );
        assert!(
            stderr(&o).contains("signal 11 (SIGSEGV)"),
            "{}: {}",
            who.label(),
            describe(&o)
        );
    }
}

#[test]
fn environment_is_exactly_the_fixed_set() {
    if !ready("environment_is_exactly_the_fixed_set") {
        return;
    }
    let fx = Fixture::new();
    for who in identities("env") {
        let o = fx
            .command(&who, &["--env", "JOBS=3", "--", "env"])
            .env("LEAK_ME", "1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}: {}", who.label(), describe(&o));
        let mut got: Vec<&str> = std::str::from_utf8(&o.stdout).unwrap().lines().collect();
        got.sort();
        assert_eq!(
            got,
            [
                "HOME=/",
                "JOBS=3",
                "LC_ALL=C",
                "PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
                "TZ=UTC"
            ],
            "{}",
            who.label()
        );
        let o = fx.run(
            &who,
            &[
                "--hostname",
                "builder",
                "--",
                "sh",
                "-c",
                "id -u; id -g; hostname; umask; pwd",
            ],
        );
        assert_eq!(
            stdout(&o),
            "0\n0\nbuilder\n0022\n/\n",
            "{}: {}",
            who.label(),
            describe(&o)
        );
    }
}

#[test]
fn cannot_reach_the_host_network() {
    if !ready("cannot_reach_the_host_network") {
        return;
    }
    let fx = Fixture::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let script = format!(
        "nc -w 2 127.0.0.1 {port} </dev/null && echo CONNECTED; \
         wget -q -T 2 -O- http://127.0.0.1:{port}/ && echo CONNECTED; \
         cat /proc/net/dev; ip -o link"
    );
    for who in identities("net") {
        let o = fx.run(&who, &["--", "sh", "-c", &script]);
        let out = stdout(&o);
        assert!(
            !out.contains("CONNECTED"),
            "{}: {}",
            who.label(),
            describe(&o)
        );
        let links: Vec<&str> = out
            .lines()
            .filter(|l| l.contains(": ") && l.contains("link/"))
            .collect();
        assert_eq!(links.len(), 1, "only lo: {}", describe(&o));
        assert!(
            links[0].contains("lo:") && links[0].contains("UP"),
            "lo is up: {}",
            describe(&o)
        );
        assert!(
            listener.accept().is_err(),
            "{}: the host listener saw a connection",
            who.label()
        );
    }
}

#[test]
fn cannot_read_host_files_outside_the_root() {
    if !ready("cannot_read_host_files_outside_the_root") {
        return;
    }
    let fx = Fixture::new();
    let secret = fx.dir.path().join("secret.txt");
    std::fs::write(&secret, "TOP-SECRET-HOST-DATA").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = secret.display();
    let script = format!(
        "cat {s}; cat /proc/1/root{s}; cat ../../../..{s}; cat /proc/self/root{s}; \
         ls /proc/1/cwd/; cat /proc/1/environ; find / -name secret.txt 2>/dev/null; true"
    );
    for who in identities("file") {
        let o = fx.run(&who, &["--", "sh", "-c", &script]);
        assert!(o.status.success(), "{}: {}", who.label(), describe(&o));
        assert!(
            !stdout(&o).contains("TOP-SECRET"),
            "{}: {}",
            who.label(),
            describe(&o)
        );
        assert!(
            !stdout(&o).contains("secret.txt"),
            "{}: {}",
            who.label(),
            describe(&o)
        );
    }
}

#[test]
fn cannot_see_or_signal_host_processes() {
    if !ready("cannot_see_or_signal_host_processes") {
        return;
    }
    let fx = Fixture::new();
    let mut host = Command::new("sleep").arg("46.6").spawn().unwrap();
    let pid = host.id();
    let script = format!(
        "kill -0 {pid} && echo SIGNALLED; test -e /proc/{pid} && echo VISIBLE; \
         ls /proc | grep -c '^[0-9]'; ps -o pid,args"
    );
    for who in identities("pid") {
        let o = fx.run(&who, &["--", "sh", "-c", &script]);
        let out = stdout(&o);
        assert!(
            !out.lines().any(|l| l == "SIGNALLED" || l == "VISIBLE"),
            "{}: {}",
            who.label(),
            describe(&o)
        );
        assert!(
            !out.contains("46.6"),
            "{}: host process listed: {}",
            who.label(),
            describe(&o)
        );
        let count: usize = out.lines().next().unwrap_or("99").trim().parse().unwrap();
        assert!(
            count <= 4,
            "{}: only the sandbox's processes: {}",
            who.label(),
            describe(&o)
        );
    }
    assert!(
        host.try_wait().unwrap().is_none(),
        "the host process survived"
    );
    host.kill().unwrap();
    host.wait().unwrap();
}

#[test]
fn cannot_mount_or_mknod() {
    if !ready("cannot_mount_or_mknod") {
        return;
    }
    let fx = Fixture::new();
    let before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let script =
        "mount -t tmpfs none /mnt && echo MOUNTED; mount --bind /bin /mnt && echo MOUNTED; \
                  mount -o remount,rw /proc/sys && echo MOUNTED; umount /proc && echo UNMOUNTED; \
                  mknod /tmp/null c 1 3 && echo MKNOD; mknod /tmp/sda b 8 0 && echo MKNOD; \
                  grep -c . /proc/self/mountinfo";
    for who in identities("mount") {
        let o = fx.run(&who, &["--", "sh", "-c", script]);
        let out = stdout(&o);
        for word in ["MOUNTED", "MKNOD"] {
            assert!(!out.contains(word), "{}: {}", who.label(), describe(&o));
        }
        assert!(
            stderr(&o).contains("mount"),
            "{}: mount must have failed: {}",
            who.label(),
            describe(&o)
        );
    }
    let after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let ours = |s: &str| {
        s.lines()
            .filter(|l| l.contains(fx.dir.path().to_str().unwrap()))
            .count()
    };
    assert_eq!(ours(&before), ours(&after));
    assert_eq!(ours(&after), 0, "no mount of the sandbox shows on the host");
}

#[test]
fn read_only_layers_and_binds_stay_untouched() {
    if !ready("read_only_layers_and_binds_stay_untouched") {
        return;
    }
    let fx = Fixture::new();
    let robind = fx.dir.path().join("robind");
    std::fs::create_dir(&robind).unwrap();
    std::fs::write(robind.join("file"), "original").unwrap();
    let script = "echo evil > /data/file; cat /data/file; rm /data/file; \
                  echo evil > /ro/file && echo WROTE; rm /ro/file && echo REMOVED; \
                  mount -o remount,rw /ro && echo REMOUNTED; touch /ro/new && echo CREATED; \
                  echo evil > /bin/busybox; true";
    for mode in ["auto", "copy"] {
        for who in identities("layer") {
            // The layer belongs to inside root's host ids, as an unpacked
            // layer in the caller's store does (root's store gives its layers
            // to root's range): inside it is root's, so writes are allowed.
            let layer = fx.owned_dir(&format!("layer-{mode}-{}", who.uid()), &who);
            std::fs::create_dir_all(layer.join("data")).unwrap();
            std::fs::write(layer.join("data/file"), "original").unwrap();
            let range = sandbox::HostIds::DEFAULT;
            let owner = who.ids().or(is_root().then_some((range.uid, range.gid)));
            if let Some((u, g)) = owner {
                for p in [layer.join("data"), layer.join("data/file")] {
                    std::os::unix::fs::chown(p, Some(u), Some(g)).unwrap();
                }
            }
            let bind = format!("{}:/ro:ro", robind.display());
            let o = fx.run(
                &who,
                &[
                    "--rootfs",
                    mode,
                    "--ro",
                    layer.to_str().unwrap(),
                    "--bind",
                    &bind,
                    "--",
                    "sh",
                    "-c",
                    script,
                ],
            );
            let out = stdout(&o);
            assert!(
                out.starts_with("evil\n"),
                "{mode} {}: the root is writable: {}",
                who.label(),
                describe(&o)
            );
            for word in ["WROTE", "REMOVED", "REMOUNTED", "CREATED"] {
                assert!(
                    !out.contains(word),
                    "{mode} {}: {}",
                    who.label(),
                    describe(&o)
                );
            }
            assert_eq!(
                std::fs::read_to_string(layer.join("data/file")).unwrap(),
                "original"
            );
            assert_eq!(
                std::fs::read_to_string(robind.join("file")).unwrap(),
                "original"
            );
            assert!(!robind.join("new").exists());
            assert_eq!(
                std::fs::read(fx.root.join("bin/busybox")).unwrap().len(),
                std::fs::metadata(BUSYBOX).unwrap().len() as usize
            );
        }
    }
}

#[test]
fn later_layers_win_and_writes_land_in_scratch() {
    if !ready("later_layers_win_and_writes_land_in_scratch") {
        return;
    }
    let fx = Fixture::new();
    let (a, b) = (fx.dir.path().join("a"), fx.dir.path().join("b"));
    for (d, v) in [(&a, "a"), (&b, "b")] {
        std::fs::create_dir_all(d.join("etc")).unwrap();
        std::fs::write(d.join("etc/which"), v).unwrap();
    }
    for mode in ["auto", "copy"] {
        for who in identities("order") {
            let scratch = fx.owned_dir(&format!("scratch-{mode}-{}", who.uid()), &who);
            let o = fx.run(
                &who,
                &[
                    "--rootfs",
                    mode,
                    "--ro",
                    a.to_str().unwrap(),
                    "--ro",
                    b.to_str().unwrap(),
                    "--scratch",
                    scratch.to_str().unwrap(),
                    "--",
                    "sh",
                    "-c",
                    "cat /etc/which; echo made > /made",
                ],
            );
            assert_eq!(stdout(&o), "b", "{mode} {}: {}", who.label(), describe(&o));
            assert_eq!(
                std::fs::read_to_string(scratch.join("upper/made")).unwrap(),
                "made\n"
            );
            // The caller can delete the whole scratch, overlayfs' work directory included.
            let mut rm = Command::new("rm");
            rm.arg("-rf")
                .args(["upper", "work", "root"].map(|d| scratch.join(d)));
            if let Some((u, g)) = who.ids() {
                use std::os::unix::process::CommandExt;
                rm.uid(u).gid(g);
            }
            assert!(
                rm.status().unwrap().success(),
                "{mode} {}: scratch not deletable",
                who.label()
            );
        }
    }
}

/// Every entry under `dir`: relative path, mode and contents (link target
/// for a symbolic link), sorted.
fn snapshot(dir: &std::path::Path) -> Vec<(String, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let body = if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            Vec::new()
        } else if meta.file_type().is_symlink() {
            std::fs::read_link(&p)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else {
            std::fs::read(&p).unwrap()
        };
        let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        out.push((rel, meta.permissions().mode(), body));
    }
    out.sort();
    out
}

#[test]
fn copies_are_a_writable_tmpfs_where_later_trees_win() {
    if !ready("copies_are_a_writable_tmpfs_where_later_trees_win") {
        return;
    }
    let fx = Fixture::new();
    let (a, b) = (fx.dir.path().join("copy-a"), fx.dir.path().join("copy-b"));
    std::fs::create_dir_all(a.join("etc")).unwrap();
    std::fs::create_dir_all(a.join("ro")).unwrap();
    std::fs::write(a.join("etc/which"), "a").unwrap();
    std::fs::write(a.join("a-only"), "a").unwrap();
    std::fs::set_permissions(a.join("ro"), std::fs::Permissions::from_mode(0o555)).unwrap();
    std::fs::create_dir_all(b.join("etc")).unwrap();
    std::fs::write(b.join("etc/which"), "b").unwrap();
    std::fs::write(b.join("exe"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(b.join("exe"), std::fs::Permissions::from_mode(0o754)).unwrap();
    std::os::unix::fs::symlink("etc/which", b.join("link")).unwrap();
    let before = (snapshot(&a), snapshot(&b));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let (ca, cb) = (format!("{}:/m", a.display()), format!("{}:/m", b.display()));
    let script = "cat /m/etc/which /m/a-only; echo; readlink /m/link; stat -f -c %T /m; \
                  stat -c '%a %u' /m/exe /m/ro; echo new > /m/ro/new && cat /m/ro/new; \
                  echo changed > /m/etc/which; rm /m/a-only; cat /m/etc/which /m/a-only";
    for who in identities("copy") {
        // The run's in-memory scratch is mounted over /tmp in its own
        // mount namespace: nothing is left under TMPDIR (nor /tmp).
        let tmp = fx.owned_dir(&format!("copy-tmp-{}", who.uid()), &who);
        let o = fx
            .command(
                &who,
                &["--copy", &ca, "--copy", &cb, "--", "sh", "-c", script],
            )
            .env("TMPDIR", &tmp)
            .output()
            .unwrap();
        // The last cat fails on the removed file: the status passes through.
        assert_eq!(
            o.status.code(),
            Some(1),
            "{}: {}",
            who.label(),
            describe(&o)
        );
        assert_eq!(
            stdout(&o),
            "ba\netc/which\ntmpfs\n754 0\n555 0\nnew\nchanged\n",
            "{}: {}",
            who.label(),
            describe(&o)
        );
        assert_eq!((snapshot(&a), snapshot(&b)), before, "{}", who.label());
        assert_eq!(
            std::fs::read_dir(&tmp).unwrap().count(),
            0,
            "{}",
            who.label()
        );
        assert_eq!(
            std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
            mounts,
            "{}",
            who.label()
        );
    }
}

#[test]
fn a_full_copy_stops_the_run_and_says_so() {
    if !ready("a_full_copy_stops_the_run_and_says_so") {
        return;
    }
    let fx = Fixture::new();
    let src = fx.dir.path().join("full-src");
    std::fs::create_dir(&src).unwrap();
    let copy = format!("{}:/m", src.display());
    for who in identities("full") {
        // Half of the memory limit: 48 MiB do not fit in 32. dd fails, the
        // command still exits 0, and the run reports the full directory.
        let o = fx.run(
            &who,
            &[
                "--memory",
                "64M",
                "--copy",
                &copy,
                "--",
                "sh",
                "-c",
                "dd if=/dev/zero of=/m/big bs=1M count=48 2>/dev/null; echo done",
            ],
        );
        assert_eq!(
            o.status.code(),
            Some(1),
            "{}: {}",
            who.label(),
            describe(&o)
        );
        assert_eq!(stdout(&o), "done\n", "{}", who.label());
        assert!(
            stderr(&o).contains("the in-memory directory /m (33554432 bytes) is full"),
            "{}: {}",
            who.label(),
            describe(&o)
        );
        assert_eq!(std::fs::read_dir(&src).unwrap().count(), 0);
    }
}

#[test]
fn outputs_belong_to_the_caller() {
    if !ready("outputs_belong_to_the_caller") {
        return;
    }
    let fx = Fixture::new();
    for who in identities("owner") {
        let out = fx.owned_dir(&format!("out-{}", who.uid()), &who);
        let bind = format!("{}:/out", out.display());
        let script = "mkdir -p /out/d/locked && echo x > /out/d/f && chown 1000:1000 /out/d/f && chmod 000 /out/d/locked /out/d/f; \
                      ls -ln /out/d";
        let o = fx.run(
            &who,
            &["--subids", "--bind", &bind, "--", "sh", "-c", script],
        );
        assert!(o.status.success(), "{}: {}", who.label(), describe(&o));
        for entry in ["d", "d/f", "d/locked"] {
            let meta = std::fs::symlink_metadata(out.join(entry)).unwrap();
            assert_eq!(
                std::os::unix::fs::MetadataExt::uid(&meta),
                who.uid(),
                "{}: {entry}",
                who.label()
            );
        }
        // The caller itself can delete everything.
        let rm = match who.ids() {
            Some((u, g)) => {
                use std::os::unix::process::CommandExt;
                Command::new("rm")
                    .arg("-rf")
                    .arg(out.join("d"))
                    .uid(u)
                    .gid(g)
                    .status()
                    .unwrap()
            }
            None => Command::new("rm")
                .arg("-rf")
                .arg(out.join("d"))
                .status()
                .unwrap(),
        };
        assert!(rm.success() && !out.join("d").exists(), "{}", who.label());
    }
}

#[test]
fn no_inherited_descriptors() {
    if !ready("no_inherited_descriptors") {
        return;
    }
    let fx = Fixture::new();
    let secret = fx.dir.path().join("fd-secret");
    std::fs::write(&secret, "FD-SECRET").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file = std::fs::File::open(&secret).unwrap();
    let fd = file.as_raw_fd();
    // SAFETY: clearing close-on-exec on a descriptor this test owns, so the
    // imgrep process inherits it as a careless parent's would.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
    let script = format!("cat <&{fd}; cat /proc/self/fd/{fd}; ls /proc/self/fd | tr '\\n' ' '");
    for who in identities("fd") {
        let o = fx.run(&who, &["--", "sh", "-c", &script]);
        assert!(
            !stdout(&o).contains("FD-SECRET"),
            "{}: {}",
            who.label(),
            describe(&o)
        );
        assert_eq!(
            stdout(&o).trim(),
            "0 1 2 3",
            "{}: only stdio (and ls's own directory)",
            who.label()
        );
        // Passed on purpose, the same descriptor is readable as fd 3 (its
        // offset is shared with ours: rewind it for each identity).
        std::io::Seek::rewind(&mut &file).unwrap();
        let fd_arg = fd.to_string();
        let o = fx.run(
            &who,
            &[
                "--fd",
                &fd_arg,
                "--",
                "sh",
                "-c",
                "cat <&3; ls /proc/self/fd | tr '\\n' ' '",
            ],
        );
        assert_eq!(
            stdout(&o),
            "FD-SECRET0 1 2 3 4 ",
            "{}: {}",
            who.label(),
            describe(&o)
        );
    }
    drop(file);
}

#[test]
fn proc_sys_and_hostname_are_protected() {
    if !ready("proc_sys_and_hostname_are_protected") {
        return;
    }
    let fx = Fixture::new();
    let host_name = nix::unistd::gethostname().unwrap();
    let host_domain = std::fs::read_to_string("/proc/sys/kernel/domainname").unwrap();
    let script = "echo evil > /proc/sys/kernel/hostname && echo WROTE; echo evil > /proc/sys/kernel/domainname && echo WROTE; \
                  echo 3 > /proc/sys/vm/drop_caches && echo WROTE; echo h > /proc/sysrq-trigger && echo WROTE; \
                  hostname evil && echo RENAMED; cat /proc/kcore 2>/dev/null | head -c 1 | grep -q . && echo KCORE; hostname";
    for who in identities("sys") {
        let o = fx.run(&who, &["--", "sh", "-c", script]);
        let out = stdout(&o);
        for word in ["WROTE", "RENAMED", "KCORE"] {
            assert!(!out.contains(word), "{}: {}", who.label(), describe(&o));
        }
        assert_eq!(out.trim(), "imgrep", "{}: {}", who.label(), describe(&o));
    }
    assert_eq!(nix::unistd::gethostname().unwrap(), host_name);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/domainname").unwrap(),
        host_domain
    );
}

/// ptrace needs a program: a static C one, compiled now, when a compiler is here.
#[test]
fn cannot_ptrace() {
    if !ready("cannot_ptrace") {
        return;
    }
    let fx = Fixture::new();
    let tools = fx.dir.path().join("tools");
    std::fs::create_dir_all(tools.join("usr/bin")).unwrap();
    let src = fx.dir.path().join("trace.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include <stdlib.h>\n#include <errno.h>\n#include <string.h>\n#include <sys/ptrace.h>\n\
         int main(int c, char **v) { for (int i = 1; i < c; i++) { int pid = atoi(v[i]);\n\
         if (ptrace(PTRACE_ATTACH, pid, 0, 0) == 0) printf(\"ATTACHED %d\\n\", pid);\n\
         else printf(\"%d: %s\\n\", pid, strerror(errno)); } return 0; }\n",
    )
    .unwrap();
    let built = Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(tools.join("usr/bin/trace"))
        .arg(&src)
        .output();
    match built {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!(
                "SKIPPED: cannot_ptrace: cc -static failed (install gcc and libc6-dev): {}",
                stderr(&o)
            );
            return;
        }
        Err(e) => {
            eprintln!("SKIPPED: cannot_ptrace: no C compiler (install gcc and libc6-dev): {e}");
            return;
        }
    }
    let mut host = Command::new("sleep").arg("47.7").spawn().unwrap();
    let pid = host.id().to_string();
    for who in identities("trace") {
        let o = fx.run(
            &who,
            &[
                "--ro",
                tools.to_str().unwrap(),
                "--",
                "/usr/bin/trace",
                &pid,
                "1",
            ],
        );
        assert!(o.status.success(), "{}: {}", who.label(), describe(&o));
        assert!(
            !stdout(&o).contains("ATTACHED"),
            "{}: {}",
            who.label(),
            describe(&o)
        );
        assert!(
            stdout(&o).contains(&format!("{pid}: No such process")),
            "{}: {}",
            who.label(),
            describe(&o)
        );
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.lines().any(|l| l == "TracerPid:\t0"),
        "host process untraced"
    );
    host.kill().unwrap();
    host.wait().unwrap();
}

#[test]
fn fork_bomb_is_stopped_by_the_process_limit() {
    if !ready("fork_bomb_is_stopped_by_the_process_limit") {
        return;
    }
    let fx = Fixture::new();
    let script = "i=0; while [ $i -lt 1000 ]; do sleep 48.8 & i=$((i+1)); done; echo SPAWNED-ALL";
    for who in identities("bomb") {
        let start = Instant::now();
        let o = fx.run(
            &who,
            &["--pids", "32", "--timeout", "60", "--", "sh", "-c", script],
        );
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}: {}",
            who.label(),
            describe(&o)
        );
        assert!(
            !stdout(&o).contains("SPAWNED-ALL"),
            "{}: {}",
            who.label(),
            describe(&o)
        );
        assert!(
            stderr(&o).contains("can't fork"),
            "{}: {}",
            who.label(),
            describe(&o)
        );
        assert_ne!(o.status.code(), Some(0));
        assert!(
            eventually(Duration::from_secs(2), || processes_running("sleep 48.8")
                .is_empty()),
            "{}: leftovers",
            who.label()
        );
        // A real fork bomb ends by the timeout, and nothing of it survives.
        let start = Instant::now();
        let o = fx.run(
            &who,
            &[
                "--pids",
                "64",
                "--timeout",
                "2",
                "--",
                "sh",
                "-c",
                "b() { b | b & }; b; sleep 49.9",
            ],
        );
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{}: {}",
            who.label(),
            describe(&o)
        );
        assert!(
            eventually(Duration::from_secs(2), || processes_running("sleep 49.9")
                .is_empty()),
            "{}: leftovers",
            who.label()
        );
    }
}

#[test]
fn memory_hog_is_stopped_by_the_memory_limit() {
    if !ready("memory_hog_is_stopped_by_the_memory_limit") {
        return;
    }
    let fx = Fixture::new();
    let hog = "x=0123456789abcdef; while :; do x=\"$x$x\"; done";
    for who in identities("hog") {
        let start = Instant::now();
        let o = fx.run(
            &who,
            &["--memory", "64M", "--timeout", "60", "--", "sh", "-c", hog],
        );
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}: {}",
            who.label(),
            describe(&o)
        );
        assert_ne!(
            o.status.code(),
            Some(0),
            "{}: {}",
            who.label(),
            describe(&o)
        );
        assert_ne!(
            o.status.code(),
            Some(124),
            "{}: stopped by the limit, not the timeout",
            who.label()
        );
        if !stderr(&o).contains("not enforced by a cgroup") {
            assert!(
                stderr(&o).contains("out of memory"),
                "{}: {}",
                who.label(),
                describe(&o)
            );
        }
        // The same shell stays well under the limit when it stops early.
        let fine = "x=0123456789abcdef; i=0; while [ $i -lt 10 ]; do x=\"$x$x\"; i=$((i+1)); done; echo ${#x}";
        let o = fx.run(&who, &["--memory", "64M", "--", "sh", "-c", fine]);
        assert_eq!(stdout(&o), "16384\n", "{}: {}", who.label(), describe(&o));
    }
}

#[test]
fn timeout_kills_the_tree_with_a_daemonised_grandchild() {
    if !ready("timeout_kills_the_tree_with_a_daemonised_grandchild") {
        return;
    }
    let fx = Fixture::new();
    for who in identities("timeout") {
        let start = Instant::now();
        let o = fx.run(
            &who,
            &[
                "--timeout",
                "1",
                "--",
                "sh",
                "-c",
                "(setsid sleep 42.2 &); sleep 43.3",
            ],
        );
        let took = start.elapsed();
        assert_eq!(
            o.status.code(),
            Some(124),
            "{}: {}",
            who.label(),
            describe(&o)
        );
        assert!(
            stderr(&o).contains("timed out"),
            "{}: {}",
            who.label(),
            describe(&o)
        );
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(10),
            "{}: {took:?}",
            who.label()
        );
        assert!(
            processes_running("sleep 42.2").is_empty(),
            "{}: the daemon survived",
            who.label()
        );
        assert!(
            processes_running("sleep 43.3").is_empty(),
            "{}: the child survived",
            who.label()
        );
    }
}

#[test]
fn sigterm_to_imgrep_kills_the_tree() {
    if !ready("sigterm_to_imgrep_kills_the_tree") {
        return;
    }
    let fx = Fixture::new();
    for (i, who) in identities("sigterm").into_iter().enumerate() {
        let (daemon, child) = (format!("sleep 44.{i}"), format!("sleep 45.{i}"));
        let script = format!("({daemon} &); {child}");
        let tmp = fx.owned_dir(&format!("tmp-{}", who.uid()), &who);
        let mut run = fx
            .command(&who, &["--pids", "100", "--", "sh", "-c", &script])
            .env("TMPDIR", &tmp)
            .spawn()
            .unwrap();
        assert!(
            eventually(Duration::from_secs(10), || !processes_running(&child)
                .is_empty()),
            "{}: the command did not start",
            who.label()
        );
        let helpers = children_of(run.id());
        assert_eq!(helpers.len(), 1, "{}: one helper process", who.label());
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(run.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = run.wait().unwrap();
        assert!(!status.success(), "{}", who.label());
        let gone = || processes_running(&daemon).is_empty() && processes_running(&child).is_empty();
        assert!(
            eventually(Duration::from_secs(3), gone),
            "{}: processes survived",
            who.label()
        );
        let alive = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
        };
        assert!(
            eventually(Duration::from_secs(3), || !alive(helpers[0])),
            "{}: the helper survived",
            who.label()
        );
        let leftovers: Vec<_> = std::fs::read_dir(&tmp)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(
            leftovers.is_empty(),
            "{}: left behind {leftovers:?}",
            who.label()
        );
    }
}

/// tests/sandbox_support/probe.c, built static into `DIR/tools/usr/bin/probe`
/// (a layer to add with `--ro`); None (with SKIPPED printed) without a C
/// compiler.
fn probe_layer(fx: &Fixture, test: &str) -> Option<std::path::PathBuf> {
    let tools = fx.dir.path().join("tools");
    std::fs::create_dir_all(tools.join("usr/bin")).unwrap();
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sandbox_support/probe.c");
    match Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(tools.join("usr/bin/probe"))
        .arg(src)
        .output()
    {
        Ok(o) if o.status.success() => Some(tools),
        Ok(o) => {
            eprintln!(
                "SKIPPED: {test}: cc -static failed (install gcc and libc6-dev): {}",
                stderr(&o)
            );
            None
        }
        Err(e) => {
            eprintln!("SKIPPED: {test}: no C compiler (install gcc and libc6-dev): {e}");
            None
        }
    }
}

/// The probe's "NAME/ABI RESULT" lines.
fn probe_results(o: &std::process::Output) -> std::collections::BTreeMap<String, String> {
    stdout(o)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn seccomp_denies_shared_kernel_state_under_both_abis() {
    let test = "seccomp_denies_shared_kernel_state_under_both_abis";
    if !ready(test) {
        return;
    }
    let fx = Fixture::new();
    let Some(tools) = probe_layer(&fx, test) else {
        return;
    };
    let tools = tools.to_str().unwrap();
    // What the default filter answers, under the x86_64 and the i386 ABI.
    let denied = [
        ("keyctl", "EPERM"),
        ("add_key", "EPERM"),
        ("request_key", "EPERM"),
        ("bpf", "EPERM"),
        ("perf_event_open", "EPERM"),
        ("userfaultfd", "EPERM"),
        ("io_uring_setup", "EPERM"),
        ("mount", "EPERM"),
        ("open_tree", "EPERM"),
        ("fsopen", "EPERM"),
        ("personality_addr_no_randomize", "EPERM"),
        ("socket_vsock", "EAFNOSUPPORT"),
        ("socket_alg", "EAFNOSUPPORT"),
        ("socket_packet", "EAFNOSUPPORT"),
        ("ioctl_tiocsti", "EPERM"),
        ("ioctl_tioclinux", "EPERM"),
        ("clone3", "ENOSYS"),
        ("unshare_newuser", "EPERM"),
        ("clone_newuser", "EPERM"),
    ];
    let allowed = [
        "getpid",
        "personality_query",
        "personality_linux32",
        "personality_linux",
        "socket_unix",
        "socket_inet",
    ];
    for who in identities("seccomp") {
        let o = fx.run(&who, &["--ro", tools, "--", "/usr/bin/probe"]);
        assert!(o.status.success(), "{}: {}", who.label(), describe(&o));
        let got = probe_results(&o);
        let mut want = std::collections::BTreeMap::new();
        for abi in ["x86_64", "i386"] {
            for (name, errno) in &denied {
                want.insert(format!("{name}/{abi}"), errno.to_string());
            }
            for name in allowed {
                want.insert(format!("{name}/{abi}"), "ok".to_owned());
            }
        }
        // A request with bits above the 32 the kernel reads is the same request.
        want.insert("ioctl_tiocsti_high/x86_64".into(), "EPERM".into());
        // i386 socket() through socketcall(2), whose arguments no filter reads.
        want.insert("socketcall_vsock/i386".into(), "EAFNOSUPPORT".into());
        // x32 is refused, not killed.
        want.insert("getpid_x32/x86_64".into(), "ENOSYS".into());
        assert_eq!(got, want, "{}: {}", who.label(), describe(&o));

        // Relaxed: every group allowed; what no group covers stays denied.
        let o = fx.run(
            &who,
            &[
                "--seccomp-allow",
                "relaxed",
                "--ro",
                tools,
                "--",
                "/usr/bin/probe",
            ],
        );
        assert!(o.status.success(), "{}: {}", who.label(), describe(&o));
        let got = probe_results(&o);
        for abi in ["x86_64", "i386"] {
            for name in [
                "userfaultfd",
                "personality_addr_no_randomize",
                "unshare_newuser",
                "clone_newuser",
                "keyctl",
            ] {
                assert_eq!(
                    got[&format!("{name}/{abi}")],
                    "ok",
                    "{}: {name}/{abi}: {}",
                    who.label(),
                    describe(&o)
                );
            }
            // Unfiltered, the kernel reads the null pointers.
            for name in ["io_uring_setup", "perf_event_open", "add_key"] {
                assert_eq!(
                    got[&format!("{name}/{abi}")],
                    "EFAULT",
                    "{}: {name}/{abi}: {}",
                    who.label(),
                    describe(&o)
                );
            }
            for name in ["bpf", "ioctl_tiocsti"] {
                assert_eq!(
                    got[&format!("{name}/{abi}")],
                    "EPERM",
                    "{}: {name}/{abi}: {}",
                    who.label(),
                    describe(&o)
                );
            }
            assert_eq!(
                got[&format!("socket_vsock/{abi}")],
                "EAFNOSUPPORT",
                "{}",
                describe(&o)
            );
            assert_eq!(got[&format!("clone3/{abi}")], "ENOSYS", "{}", describe(&o));
        }
    }
    let o = fx.run(&Who::Me, &["--seccomp-allow", "everything", "--", "true"]);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    assert!(
        stderr(&o).contains("unknown group \"everything\""),
        "{}",
        describe(&o)
    );
}

#[test]
fn each_sandbox_has_a_fresh_session_keyring() {
    let test = "each_sandbox_has_a_fresh_session_keyring";
    if !ready(test) {
        return;
    }
    let fx = Fixture::new();
    let Some(tools) = probe_layer(&fx, test) else {
        return;
    };
    let probe = tools.join("usr/bin/probe");
    for who in identities("keys") {
        // The caller's own session keyring holds a secret; the step may use
        // keyctl (relaxed) and still sees neither keyring nor secret.
        let mut cmd = Command::new(&probe);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
            .env("TMPDIR", "/tmp")
            .current_dir(fx.dir.path())
            .arg("plant")
            .arg(env!("CARGO_BIN_EXE_imgrep"))
            .args(["run", "--root"])
            .arg(&fx.root)
            .args(["--seccomp-allow", "keyring", "--ro"])
            .arg(&tools)
            .args(["--", "/usr/bin/probe", "keyring"]);
        if let Some((u, g)) = who.ids() {
            std::os::unix::process::CommandExt::uid(&mut cmd, u);
            std::os::unix::process::CommandExt::gid(&mut cmd, g);
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}: {}", who.label(), describe(&o));
        let out = stdout(&o);
        let host = out
            .lines()
            .find_map(|l| l.strip_prefix("host session "))
            .unwrap_or_else(|| panic!("{}: {}", who.label(), describe(&o)));
        let inside = out
            .lines()
            .find_map(|l| l.strip_prefix("session ok "))
            .unwrap_or_else(|| panic!("{}: {}", who.label(), describe(&o)));
        assert_ne!(host, inside, "{}: {}", who.label(), describe(&o));
        assert!(
            out.contains("secret ENOKEY"),
            "{}: {}",
            who.label(),
            describe(&o)
        );
    }
}

#[test]
fn fd_refuses_a_directory() {
    if !ready("fd_refuses_a_directory") {
        return;
    }
    let fx = Fixture::new();
    let dir = std::fs::File::open(&fx.root).unwrap();
    let fd = dir.as_raw_fd();
    // SAFETY: clearing close-on-exec on a descriptor this test owns.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
    let fd_arg = fd.to_string();
    for who in identities("fddir") {
        let o = fx.run(&who, &["--fd", &fd_arg, "--", "ls", "/proc/self/fd/3/.."]);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{}: {}",
            who.label(),
            describe(&o)
        );
        assert!(
            stderr(&o).contains("a directory"),
            "{}: {}",
            who.label(),
            describe(&o)
        );
        assert!(
            !stdout(&o).contains("root"),
            "{}: {}",
            who.label(),
            describe(&o)
        );
    }
    drop(dir);
}

#[test]
fn init_shows_nothing_of_the_host() {
    if !ready("init_shows_nothing_of_the_host") {
        return;
    }
    let fx = Fixture::new();
    let host_path = fx.dir.path().to_str().unwrap().to_owned();
    let script = "tr '\\0' '\\n' < /proc/1/cmdline; echo; cat /proc/1/environ; \
                  readlink /proc/1/exe; head -c 16 /proc/1/mem && echo MEM; echo done";
    for who in identities("init") {
        let o = fx
            .command(&who, &["--", "sh", "-c", script])
            .env("IMGREP_TEST_SECRET", "HOST-ENV-SECRET")
            .output()
            .unwrap();
        let out = stdout(&o);
        assert!(
            out.starts_with("imgrep-init\n"),
            "{}: {}",
            who.label(),
            describe(&o)
        );
        assert!(out.ends_with("done\n"), "{}: {}", who.label(), describe(&o));
        for leak in [
            host_path.as_str(),
            "--root",
            "HOST-ENV-SECRET",
            "imgrep run",
            "MEM",
        ] {
            assert!(
                !out.contains(leak),
                "{}: {leak}: {}",
                who.label(),
                describe(&o)
            );
        }
    }
}

#[test]
fn dev_nodes_and_proc_masks_are_read_only() {
    if !ready("dev_nodes_and_proc_masks_are_read_only") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let fx = Fixture::new();
    let paths = [
        "/dev/null",
        "/dev/zero",
        "/dev/urandom",
        "/proc/kcore",
        "/proc/timer_list",
    ];
    let modes = |ps: &[&str]| -> Vec<u32> {
        ps.iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.mode()))
            .collect()
    };
    let before = modes(&paths);
    // o+x is harmless on the host if it lands there, and visible.
    let script = "for p in /dev/null /dev/zero /dev/urandom /proc/kcore /proc/timer_list /proc/kmsg; do \
                  chmod o+x $p && echo CHANGED $p; done; \
                  head -c 1 /proc/kmsg | wc -c; head -c 1 /proc/timer_list | wc -c; echo x > /dev/null && echo WRITES";
    for who in identities("devro") {
        let o = fx.run(&who, &["--", "sh", "-c", script]);
        let out = stdout(&o);
        let after = modes(&paths);
        // Put back anything a failing run changed before asserting.
        for (p, (b, a)) in paths.iter().zip(before.iter().zip(&after)) {
            if a != b {
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(*b & 0o7777));
            }
        }
        assert_eq!(
            after,
            before,
            "{}: host modes changed: {}",
            who.label(),
            describe(&o)
        );
        assert!(
            !out.contains("CHANGED"),
            "{}: {}",
            who.label(),
            describe(&o)
        );
        assert_eq!(out, "0\n0\nWRITES\n", "{}: {}", who.label(), describe(&o));
        if who.ids().is_none() && is_root() {
            assert!(
                stderr(&o).contains("Read-only file system"),
                "{}",
                describe(&o)
            );
        }
    }
}
