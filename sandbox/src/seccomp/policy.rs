//! The system-call filter's policy, written for libseccomp. Compiled by the
//! build script (`build.rs`), not at run time: every combination of relaxed
//! groups becomes one BPF program embedded in the binary, so a sandbox start
//! spends nothing on it (libseccomp took about a millisecond of CPU per
//! compile). docs/sandbox.md explains each rule.

use libseccomp::error::SeccompError;
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterAttr, ScmpFilterContext,
    ScmpSyscall,
};

/// The groups a run may relax, by the names of `SeccompGroup::ALL`, in its
/// order: bit i of a program's index stands for `GROUPS[i]` allowed.
pub const GROUPS: [&str; 6] = [
    "userns",
    "io_uring",
    "perf",
    "userfaultfd",
    "keyring",
    "personality",
];

/// Denied outright, whatever the policy: kernel state shared with the
/// host (modules, kexec, the kernel log, swap, accounting, quotas), eBPF,
/// file handles that reach past the mount namespace (open_by_handle_at),
/// vm86 mode, and mounting after the sandbox's own setup (only a nested user
/// namespace could use it, and the `userns` group re-allows both).
const ALWAYS_DENIED: &[&str] = &[
    "bpf",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "syslog",
    "uselib",
    "acct",
    "quotactl",
    "quotactl_fd",
    "swapon",
    "swapoff",
    "reboot",
    "lookup_dcookie",
    "nfsservctl",
    "open_by_handle_at",
    "vm86",
    "vm86old",
];

/// The mount API: denied unless nested user namespaces are allowed (a
/// nested sandbox mounts in its own namespace; without one the command has
/// no CAP_SYS_ADMIN anyway).
const MOUNT_API: &[&str] = &[
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
];

/// What each relaxable group denies by name (`userns` and `personality`
/// filter arguments instead, below).
fn group_syscalls(group: &str) -> &'static [&'static str] {
    match group {
        "keyring" => &["keyctl", "add_key", "request_key"],
        "io_uring" => &["io_uring_setup", "io_uring_enter", "io_uring_register"],
        "perf" => &["perf_event_open"],
        "userfaultfd" => &["userfaultfd"],
        _ => &[],
    }
}

/// Socket families a command may create: local, IPv4, IPv6 (loopback only,
/// the network namespace is empty) and netlink (`ip`, glibc's
/// getaddrinfo). AF_VSOCK in particular reaches the hypervisor and other VMs
/// whatever the network namespace.
const SOCKET_FAMILIES: [u64; 4] = [
    libc::AF_UNIX as u64,
    libc::AF_INET as u64,
    libc::AF_INET6 as u64,
    libc::AF_NETLINK as u64,
];

/// The policy with the groups in `allow` (names of [`GROUPS`]) relaxed.
pub fn policy(allow: &[&str]) -> Result<ScmpFilterContext, SeccompError> {
    let eperm = ScmpAction::Errno(libc::EPERM);
    let mut ctx = ScmpFilterContext::new(ScmpAction::Allow)?;
    // Every ABI a process on x86_64 can use is either filtered (x86_64,
    // i386) or refused with ENOSYS (x32, anything else): never killed for
    // its ABI alone.
    ctx.add_arch(ScmpArch::X86)?;
    ctx.set_act_badarch(ScmpAction::Errno(libc::ENOSYS))?;
    // The caller sets PR_SET_NO_NEW_PRIVS itself; a binary tree of syscall
    // numbers keeps the filter's cost independent of the rule count.
    ctx.set_ctl_nnp(false)?;
    ctx.set_filter_attr(ScmpFilterAttr::CtlOptimize, 2)?;

    let deny = |ctx: &mut ScmpFilterContext, name: &str| -> Result<(), SeccompError> {
        ctx.add_rule(eperm, ScmpSyscall::from_name(name)?)?;
        Ok(())
    };
    for name in ALWAYS_DENIED {
        deny(&mut ctx, name)?;
    }
    for group in GROUPS {
        if !allow.contains(&group) {
            for name in group_syscalls(group) {
                deny(&mut ctx, name)?;
            }
        }
    }

    // clone3 passes its flags in memory, where no filter can read them:
    // ENOSYS makes libc fall back to clone, whose flags are filtered.
    ctx.add_rule(
        ScmpAction::Errno(libc::ENOSYS),
        ScmpSyscall::from_name("clone3")?,
    )?;
    if !allow.contains(&"userns") {
        let newuser = libc::CLONE_NEWUSER as u64;
        for name in ["clone", "unshare"] {
            ctx.add_rule_conditional(
                eperm,
                ScmpSyscall::from_name(name)?,
                &[ScmpArgCompare::new(
                    0,
                    ScmpCompareOp::MaskedEqual(newuser),
                    newuser,
                )],
            )?;
        }
        for name in MOUNT_API {
            deny(&mut ctx, name)?;
        }
    }

    if !allow.contains(&"personality") {
        // The kernel reads the low 32 bits. One comparison per argument and
        // rule (libseccomp) cannot express "not one of these values", so
        // the complement is spelled out bit by bit: with bit 31 clear, any
        // bit but 3 (PER_LINUX32) and 17 (UNAME26) set; with bit 31 set, any
        // bit clear (only the query 0xffffffff has none).
        let personality = ScmpSyscall::from_name("personality")?;
        let bits = |mask: u64, value: u64| {
            [ScmpArgCompare::new(
                0,
                ScmpCompareOp::MaskedEqual(mask),
                value,
            )]
        };
        const TOP: u64 = 1 << 31;
        for b in (0..31).filter(|b| ![3, 17].contains(b)) {
            ctx.add_rule_conditional(eperm, personality, &bits((1 << b) | TOP, 1 << b))?;
        }
        for b in 0..31 {
            ctx.add_rule_conditional(eperm, personality, &bits((1 << b) | TOP, TOP))?;
        }
    }

    // Sockets: the families above only. On i386, libseccomp also denies
    // socketcall(SYS_SOCKET), whose arguments sit in memory: i386 programs
    // must use the socket system call (Linux 4.3+; musl does, glibc
    // does not).
    let socket = ScmpSyscall::from_name("socket")?;
    let mut next = 0;
    for &family in &SOCKET_FAMILIES {
        for other in next..family {
            ctx.add_rule_conditional(
                ScmpAction::Errno(libc::EAFNOSUPPORT),
                socket,
                &[ScmpArgCompare::new(0, ScmpCompareOp::Equal, other)],
            )?;
        }
        next = family + 1;
    }
    ctx.add_rule_conditional(
        ScmpAction::Errno(libc::EAFNOSUPPORT),
        socket,
        &[ScmpArgCompare::new(0, ScmpCompareOp::GreaterEqual, next)],
    )?;

    // Terminal input injection and the Linux console's own ioctls. The
    // request is 32 bits: compare those only, or a value with high bits
    // set would slip past (Flatpak's CVE-2019-10063).
    let ioctl = ScmpSyscall::from_name("ioctl")?;
    for request in [libc::TIOCSTI, libc::TIOCLINUX] {
        ctx.add_rule_conditional(
            eperm,
            ioctl,
            &[ScmpArgCompare::new(
                1,
                ScmpCompareOp::MaskedEqual(0xffff_ffff),
                request,
            )],
        )?;
    }

    Ok(ctx)
}
