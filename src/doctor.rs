//! What this host offers the sandbox and the bootstrap, probed for real
//! (a forked child tries each kernel feature), for `imgrep doctor`.
//! Each finding says what imgrep does when the feature is missing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use serde::Serialize;

/// One probed feature.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub feature: &'static str,
    pub ok: bool,
    /// What was found, e.g. `hybrid (v1 controllers, v2 mounted)`.
    pub detail: String,
    /// What imgrep does about it (empty when nothing is missing).
    pub consequence: String,
    /// Builds cannot run at all without it.
    pub required: bool,
}

/// Every probe, in a fixed order. `store` is the store root (it may not
/// exist yet: its nearest existing ancestor is measured).
pub fn probe(store: &Path) -> Vec<Finding> {
    vec![
        user_namespaces(),
        subordinate_ids(),
        cgroups(),
        overlay_in_userns(),
        i386(),
        free_space(store),
    ]
}

/// Runs `f` in a forked child; true when it returned true. The child only
/// makes system calls and exits, so forking a threaded process is safe.
fn in_child(f: impl FnOnce() -> bool) -> bool {
    // SAFETY: the child calls only async-signal-safe functions (unshare,
    // open/write/mount/mkdir through nix and std's thin wrappers) and exits
    // with _exit.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(false);
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        Ok(ForkResult::Parent { child }) => {
            matches!(waitpid(child, None), Ok(WaitStatus::Exited(_, 0)))
        }
        Err(_) => false,
    }
}

fn finding(
    feature: &'static str,
    ok: bool,
    detail: String,
    missing: &str,
    required: bool,
) -> Finding {
    Finding {
        feature,
        ok,
        detail,
        consequence: if ok {
            String::new()
        } else {
            missing.to_owned()
        },
        required,
    }
}

fn user_namespaces() -> Finding {
    let max = fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let ok = in_child(|| unshare(CloneFlags::CLONE_NEWUSER).is_ok());
    finding(
        "user namespaces",
        ok,
        format!("unshare(CLONE_NEWUSER) {}; max_user_namespaces = {max}", if ok { "works" } else { "refused" }),
        "no build can run: every step needs its own user namespace (enable kernel.unprivileged_userns_clone / user.max_user_namespaces)",
        true,
    )
}

fn subordinate_ids() -> Finding {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let count = |file: &str| {
        fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.split(':');
                let (who, _, n) = (f.next()?, f.next()?, f.next()?);
                (who == user || who == uid.to_string()).then(|| n.trim().parse::<u64>().ok())?
            })
            .sum::<u64>()
    };
    let (u, g) = (count("/etc/subuid"), count("/etc/subgid"));
    let range = crate::hostids::root_ids();
    let checked = range.check();
    let ok = if uid.is_root() {
        checked.is_ok()
    } else {
        u >= 65536 && g >= 65536
    };
    let detail = if uid.is_root() {
        match checked {
            Ok(()) => format!("running as root: steps run as host ids {range}, never host root (docs/sandbox.md, \"Running as real root\")"),
            Err(e) => e.to_string(),
        }
    } else {
        format!("{user}: {u} subordinate uids, {g} subordinate gids")
    };
    let missing = if uid.is_root() {
        "no step can run as root: choose a free range with --root-ids or IMGREP_ROOT_IDS"
    } else {
        "steps see one uid (0) only: `--subids` is unavailable and packages that chown files to other users fail"
    };
    finding("subordinate ids", ok, detail, missing, uid.is_root())
}

fn cgroups() -> Finding {
    // The same distinction the sandbox makes: v2 alone (unified), v2 beside
    // v1 controllers (hybrid: the v1 controllers are used), v1 alone.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let fstype = |l: &str| {
        l.split(" - ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .map(str::to_owned)
    };
    let v2 = mounts
        .lines()
        .any(|l| fstype(l).as_deref() == Some("cgroup2"));
    let v1 = mounts
        .lines()
        .any(|l| fstype(l).as_deref() == Some("cgroup"));
    let (ok, detail) = match (v1, v2) {
        (false, true) => (true, "cgroup v2 (unified)"),
        (true, true) => (
            true,
            "hybrid: v1 controllers beside a v2 mount; imgrep uses the v1 controllers",
        ),
        (true, false) => (true, "cgroup v1 (legacy)"),
        (false, false) => (false, "no cgroup file system mounted"),
    };
    finding(
        "cgroups",
        ok,
        detail.to_owned(),
        "limits fall back to rlimits (memory and processes per step, not per tree); imgrep warns once per run",
        false,
    )
}

fn overlay_in_userns() -> Finding {
    let ok = in_child(|| {
        let uid = nix::unistd::getuid();
        let gid = nix::unistd::getgid();
        if unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS).is_err() {
            return false;
        }
        let _ = fs::write("/proc/self/setgroups", "deny");
        if fs::write("/proc/self/uid_map", format!("0 {uid} 1")).is_err()
            || fs::write("/proc/self/gid_map", format!("0 {gid} 1")).is_err()
        {
            return false;
        }
        use nix::mount::{mount, MsFlags};
        let none: Option<&str> = None;
        if mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none).is_err() {
            return false;
        }
        let base = std::env::temp_dir();
        if mount(
            Some("tmpfs"),
            &base,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=1m"),
        )
        .is_err()
        {
            return false;
        }
        for d in ["l", "u", "w", "m"] {
            if fs::create_dir(base.join(d)).is_err() {
                return false;
            }
        }
        let opts = format!(
            "lowerdir={0}/l,upperdir={0}/u,workdir={0}/w",
            base.display()
        );
        mount(
            Some("overlay"),
            &base.join("m"),
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
        .is_ok()
    });
    finding(
        "overlayfs in a user namespace",
        ok,
        format!("mounting overlay inside a user namespace {}", if ok { "works" } else { "is refused" }),
        "build roots are copied instead of stacked as overlays: slower starts and more disk per step",
        false,
    )
}

/// A minimal static i386 ELF: `exit(42)` through `int 0x80`, written at
/// run time (imgrep's own bytes; nothing upstream).
fn i386_exit42() -> Vec<u8> {
    let mut elf = vec![
        0x7f, b'E', b'L', b'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, // ident: 32-bit, LE
        2, 0, 3, 0, 1, 0, 0, 0, // ET_EXEC, EM_386, version
        0x54, 0x80, 0x04, 0x08, // entry 0x08048054
        0x34, 0, 0, 0, 0, 0, 0, 0, // phoff 52, shoff 0
        0, 0, 0, 0, 0x34, 0, 0x20, 0, 1, 0, 0, 0, 0, 0, 0, 0, // flags, sizes, 1 phdr
        1, 0, 0, 0, 0, 0, 0, 0, // PT_LOAD, offset 0
        0, 0x80, 0x04, 0x08, 0, 0x80, 0x04, 0x08, // vaddr, paddr
        0x60, 0, 0, 0, 0x60, 0, 0, 0, // filesz, memsz
        5, 0, 0, 0, 0, 0x10, 0, 0, // R+X, align
    ];
    // mov eax, 1; mov ebx, 42; int 0x80
    elf.extend_from_slice(&[0xb8, 1, 0, 0, 0, 0xbb, 42, 0, 0, 0, 0xcd, 0x80]);
    elf
}

fn i386() -> Finding {
    let dir = tempfile::tempdir();
    let status = dir.ok().and_then(|dir| {
        let path = dir.path().join("exit42");
        fs::write(&path, i386_exit42()).ok()?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).ok()?;
        std::process::Command::new(&path).status().ok()
    });
    let ok = status.is_some_and(|s| s.code() == Some(42));
    finding(
        "i386 programs",
        ok,
        format!(
            "a static i386 ELF {}",
            if ok { "runs" } else { "does not run (CONFIG_IA32_EMULATION off, or ia32_emulation=0)" }
        ),
        "the hex0-to-TinyCC chain (x86 binaries, docs/bootstrap.md) cannot run here; the AMD64 stage0 and everything else can",
        false,
    )
}

fn free_space(store: &Path) -> Finding {
    let mut at = store.to_path_buf();
    while !at.exists() {
        if !at.pop() {
            break;
        }
    }
    let stat = nix::sys::statvfs::statvfs(&at);
    let free = stat
        .as_ref()
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap_or(0);
    // A GCC toolchain build holds a few GiB of sources, trees and layers.
    let ok = free >= 10 << 30;
    finding(
        "store free space",
        ok,
        format!("{:.1} GiB free at {} (store {})", free as f64 / (1u64 << 30) as f64, at.display(), store.display()),
        "below 10 GiB: the GCC toolchain may not fit; a build that runs out of space fails naming the step, and the store stays consistent",
        false,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_i386_probe_is_a_well_formed_elf() {
        let elf = super::i386_exit42();
        assert_eq!(elf.len(), 0x60);
        assert_eq!(&elf[..4], b"\x7fELF");
    }
}
