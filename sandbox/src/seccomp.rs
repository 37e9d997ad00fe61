//! The system-call filter every sandboxed command runs under: a deny list
//! modelled on the default profiles of Docker/podman and Flatpak, written as
//! a libseccomp policy for the x86_64 and i386 ABIs (the bootstrap runs i386
//! binaries), compiled to BPF once per run and installed as the last thing
//! before execve. docs/sandbox.md explains each rule.

use std::io::{Read, Seek};
use std::os::fd::{FromRawFd, OwnedFd};

use libseccomp::error::SeccompError;
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterAttr, ScmpFilterContext,
    ScmpSyscall,
};

use crate::error::{Error, Result};
use crate::spec::SeccompGroup;

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

/// What each relaxable group denies by name (`Userns` and `Personality`
/// filter arguments instead, below).
fn group_syscalls(group: SeccompGroup) -> &'static [&'static str] {
    match group {
        SeccompGroup::Keyring => &["keyctl", "add_key", "request_key"],
        SeccompGroup::IoUring => &["io_uring_setup", "io_uring_enter", "io_uring_register"],
        SeccompGroup::Perf => &["perf_event_open"],
        SeccompGroup::Userfaultfd => &["userfaultfd"],
        SeccompGroup::Userns | SeccompGroup::Personality => &[],
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

/// The compiled filter of one run, ready to be installed in each command's
/// process with one system call.
pub(crate) struct Program(Vec<libc::sock_filter>);

impl Program {
    /// Compile the policy with the groups in `allow` relaxed.
    pub(crate) fn compile(allow: &[SeccompGroup]) -> Result<Program> {
        let ctx = policy(allow).map_err(|e| Error::setup("seccomp policy", e))?;
        export(&ctx).map_err(|e| Error::setup("seccomp policy", e))
    }

    /// Install the filter on the calling thread. Call it last before
    /// execve, after PR_SET_NO_NEW_PRIVS: only raw system calls, safe
    /// between fork and exec.
    pub(crate) fn install(&self) -> Result<()> {
        let prog = libc::sock_fprog {
            len: self.0.len() as u16,
            filter: self.0.as_ptr().cast_mut(),
        };
        // SAFETY: prog points to a valid BPF program that outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if r != 0 {
            return Err(Error::setup(
                "install the seccomp filter",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
}

fn policy(allow: &[SeccompGroup]) -> std::result::Result<ScmpFilterContext, SeccompError> {
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

    let deny = |ctx: &mut ScmpFilterContext, name: &str| -> std::result::Result<(), SeccompError> {
        ctx.add_rule(eperm, ScmpSyscall::from_name(name)?)?;
        Ok(())
    };
    for name in ALWAYS_DENIED {
        deny(&mut ctx, name)?;
    }
    for group in SeccompGroup::ALL {
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
    if !allow.contains(&SeccompGroup::Userns) {
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

    if !allow.contains(&SeccompGroup::Personality) {
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

/// The BPF program libseccomp generates for `ctx`, read back through a
/// memfd (libseccomp 2.5 exports only to a descriptor).
fn export(ctx: &ScmpFilterContext) -> std::io::Result<Program> {
    // SAFETY: memfd_create with a valid name; the descriptor is ours.
    let fd = unsafe { libc::memfd_create(c"imgrep-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned by nobody else.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    ctx.export_bpf(&file).map_err(std::io::Error::other)?;
    file.rewind()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let size = std::mem::size_of::<libc::sock_filter>();
    if bytes.is_empty() || bytes.len() % size != 0 || bytes.len() / size > u16::MAX as usize {
        return Err(std::io::Error::other(format!(
            "libseccomp exported {} bytes, not a BPF program",
            bytes.len()
        )));
    }
    let insns = bytes
        .chunks_exact(size)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    Ok(Program(insns))
}
