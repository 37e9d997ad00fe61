//! Inside the new namespaces. The cloned child waits until the helper has
//! written its id maps, builds the file system (mounts.rs), becomes the pid
//! namespace's init, starts the command and reports how it ended. When init
//! exits, the kernel kills everything left in the namespace.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::stat::{umask, Mode};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{chdir, execve, fork, pipe2, sethostname, setsid, ForkResult, Pid};

use crate::error::{Error, Result};
use crate::idmap::Maps;
use crate::mounts;
use crate::proto::{send, InitMsg};
use crate::seccomp::Program;
use crate::spec::{Spec, Status};
use crate::terminal::Console;

/// Capabilities the command keeps in its bounding set: what a build running
/// as root needs to own, chmod and switch ids of its own files. Everything
/// else (mount, ptrace, network administration, raw I/O, ...) is cut.
const KEPT_CAPS: [caps::Capability; 11] = [
    caps::Capability::CAP_CHOWN,
    caps::Capability::CAP_DAC_OVERRIDE,
    caps::Capability::CAP_DAC_READ_SEARCH,
    caps::Capability::CAP_FOWNER,
    caps::Capability::CAP_FSETID,
    caps::Capability::CAP_KILL,
    caps::Capability::CAP_SETGID,
    caps::Capability::CAP_SETUID,
    caps::Capability::CAP_SETPCAP,
    caps::Capability::CAP_SETFCAP,
    caps::Capability::CAP_NET_BIND_SERVICE,
];

/// How the cloned child may start.
pub(crate) enum Start<'a> {
    /// When the helper, having written the maps and set up the cgroup, writes
    /// a byte to this pipe. With `joins_cgroup` false, what needs no ids
    /// mapped (namespaces' own settings) is done meanwhile.
    AfterHelper { sync: OwnedFd, joins_cgroup: bool },
    /// At once, writing its own maps: saves a round trip through the helper.
    OwnMaps(&'a Maps),
}

/// The sandbox's init, in the child of the namespace clone. `stdio`: the
/// descriptors to put on 0-2 (None: keep the one there). `console`: open a
/// terminal of the sandbox's own for the commands ([`Spec::terminal`]).
/// `fill`: init's end of the channel the in-memory directories the caller
/// lays out go through (`crate::fill`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn main(
    spec: &Spec,
    filter: &Program,
    start: Start,
    report: OwnedFd,
    rlimits: bool,
    stdio: [Option<RawFd>; 3],
    console: Option<Console>,
    fill: Option<RawFd>,
) -> ! {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let mut keep = spec.fds.clone();
    keep.push(report.as_raw_fd());
    keep.extend(console.as_ref().map(Console::sock));
    keep.extend(fill);
    // SAFETY: this forked copy owns its copy of the helper's descriptor.
    let fill = fill.map(|fd| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    if let Start::AfterHelper { sync, .. } = &start {
        keep.push(sync.as_raw_fd());
    }
    if let Err(e) = inherit_only(stdio, keep) {
        let err = Error::setup("set up standard streams and descriptors", e);
        let _ = send(std::fs::File::from(report), &InitMsg::Failed(err));
        // SAFETY: leave the forked copy without running the helper's destructors.
        unsafe { libc::_exit(1) }
    }
    let mut early = None;
    let started = match start {
        Start::AfterHelper { sync, joins_cgroup } => {
            if !joins_cgroup {
                early = Some(own_namespaces(spec));
            }
            let mut go = [0u8];
            std::fs::File::from(sync)
                .read(&mut go)
                .is_ok_and(|n| n == 1)
        }
        Start::OwnMaps(maps) => {
            if let Err(e) = maps.apply_own() {
                let _ = send(std::fs::File::from(report), &InitMsg::Failed(e));
                // SAFETY: leave the forked copy without running the helper's destructors.
                unsafe { libc::_exit(1) }
            }
            true
        }
    };
    if !started {
        // SAFETY: as above.
        unsafe { libc::_exit(1) }
    }
    let report = std::fs::File::from(report);
    let msg = match early
        .unwrap_or_else(|| own_namespaces(spec))
        .and_then(|()| HostPaths::open(spec))
        .and_then(|host| {
            become_inside_root()?;
            // A change of ids clears the parent-death signal: set it again,
            // and leave if the helper is gone already.
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            if helper_gone(&report) {
                return Err(Error::setup("start sandbox", "the helper is gone"));
            }
            // Only now: the helper has written our maps (and opened our
            // namespaces) through /proc/PID, which a non-dumpable process
            // keeps from it.
            hide_init()?;
            new_session_keyring()?;
            mounts::build(&host.spec, fill)?;
            // Nothing of the host may stay reachable through init's
            // descriptors (/proc/1/fd) once commands run.
            drop(host);
            // Opened inside the root: a pty of the sandbox's devpts.
            let tty = console.map(Console::open).transpose()?;
            init(
                spec,
                filter,
                rlimits,
                &report,
                tty.as_ref().map(AsRawFd::as_raw_fd),
            )
        }) {
        Ok(status) => InitMsg::Ended(status),
        Err(e) => InitMsg::Failed(e),
    };
    let _ = send(&report, &msg);
    // SAFETY: as above.
    unsafe { libc::_exit(0) }
}

/// What the namespaces need that no id mapping does: a cgroup namespace
/// (only once the helper moved us into our cgroups, which become its root),
/// the hostname, `lo` up.
fn own_namespaces(spec: &Spec) -> Result<()> {
    unshare(CloneFlags::CLONE_NEWCGROUP).map_err(|e| Error::setup("cgroup namespace", e))?;
    sethostname(&spec.hostname).map_err(|e| Error::setup("sethostname", e))?;
    loopback_up().map_err(|e| Error::setup("bring up lo", e))
}

/// The host directories and files the mounts are made from, opened
/// (O_PATH) while this process still has the ids it was cloned with, and a
/// copy of the spec that names them as `/proc/self/fd/N`: as real root,
/// inside root is the range's unprivileged ids, which need not be able to
/// search the directories above them (a store under /root, a 0700 work
/// directory). What lies beneath each is reached with the range's ids.
struct HostPaths {
    spec: Spec,
    _fds: Vec<OwnedFd>,
}

impl HostPaths {
    fn open(spec: &Spec) -> Result<HostPaths> {
        let mut fds = Vec::new();
        let mut open = |path: &mut PathBuf, what: &str| -> Result<()> {
            let fd = nix::fcntl::open(
                path.as_path(),
                OFlag::O_PATH | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| Error::path(what, path.clone(), e.desc()))?;
            // SAFETY: open just returned this descriptor.
            let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            let dir = nix::sys::stat::fstat(fd.as_raw_fd())
                .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
            // "/." makes every use follow the link to the directory itself,
            // lstat and read_dir included.
            *path = PathBuf::from(format!(
                "/proc/self/fd/{}{}",
                fd.as_raw_fd(),
                if dir { "/." } else { "" }
            ));
            fds.push(fd);
            Ok(())
        };
        let mut s = spec.clone();
        for l in &mut s.lowers {
            open(l, "root directory")?;
        }
        for o in &mut s.overlays {
            for l in &mut o.lowers {
                open(l, "overlay directory")?;
            }
            open(&mut o.upper, "overlay directory")?;
            open(&mut o.work, "overlay directory")?;
        }
        for m in &mut s.memory_dirs {
            for src in &mut m.sources {
                open(src, "in-memory directory source")?;
            }
        }
        for b in &mut s.binds {
            open(&mut b.src, "bind source")?;
        }
        // An in-memory scratch is mounted on its directory: paths below it
        // must cross that mount, which a jump through /proc/self/fd does
        // not. The helper made it under $TMPDIR, which everyone can search.
        if !s.scratch_in_memory {
            open(&mut s.scratch, "scratch directory")?;
        }
        Ok(HostPaths { spec: s, _fds: fds })
    }
}

/// Whether nobody reads the report pipe any more: the helper died (from
/// inside a new pid namespace, the parent's pid is not to be seen).
fn helper_gone(report: &std::fs::File) -> bool {
    use std::os::fd::AsFd;
    let mut fd = [nix::poll::PollFd::new(
        report.as_fd(),
        nix::poll::PollFlags::POLLOUT,
    )];
    nix::poll::poll(&mut fd, nix::poll::PollTimeout::ZERO).is_ok()
        && fd[0]
            .revents()
            .is_some_and(|r| r.contains(nix::poll::PollFlags::POLLERR))
}

/// Take the ids root has inside. Until now this process kept the host ids
/// it was cloned with (as real root: host root's, with no capability over
/// anything of the host); from now on, everything it and the command create
/// belongs to inside root's host ids. Supplementary groups (host root's
/// group, unmapped but still checked against group permissions) are dropped
/// where the kernel lets us (not after an unprivileged `setgroups deny`).
pub(crate) fn become_inside_root() -> Result<()> {
    // SAFETY: setgroups with an empty list.
    if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 && Errno::last() != Errno::EPERM {
        return Err(Error::setup("drop supplementary groups", Errno::last()));
    }
    let root_g = nix::unistd::Gid::from_raw(0);
    let root_u = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresgid(root_g, root_g, root_g)
        .map_err(|e| Error::setup("take inside root's gid", e))?;
    nix::unistd::setresuid(root_u, root_u, root_u)
        .map_err(|e| Error::setup("take inside root's uid", e))
}

fn init(
    spec: &Spec,
    filter: &Program,
    rlimits: bool,
    report: &std::fs::File,
    tty: Option<RawFd>,
) -> Result<Status> {
    let commands =
        std::iter::once((&spec.argv, &spec.cwd)).chain(spec.then.iter().map(|s| (&s.argv, &s.cwd)));
    let mut status = Status::Exited(0);
    for (k, (argv, cwd)) in commands.enumerate() {
        if k > 0 {
            kill_leftovers();
        }
        let _ = send(report, &InitMsg::Started(k));
        status = run_command(spec, filter, argv, cwd, rlimits, tty)?;
        if let Some(i) = mounts::full_memory_dir(spec) {
            status = Status::Full(i);
        }
        if !status.success() {
            break;
        }
    }
    Ok(status)
}

/// Kill every process of the namespace but init, and reap them: the next
/// command starts with no process of the previous one around.
fn kill_leftovers() {
    let _ = nix::sys::signal::kill(Pid::from_raw(-1), Signal::SIGKILL);
    while let Ok(_) | Err(Errno::EINTR) = waitpid(None, None) {}
}

/// Starts one command and waits for it, reaping orphans meanwhile.
fn run_command(
    spec: &Spec,
    filter: &Program,
    argv: &[String],
    cwd: &Path,
    rlimits: bool,
    tty: Option<RawFd>,
) -> Result<Status> {
    let program = resolve(spec, &argv[0])?;

    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::setup("pipe", e))?;
    // SAFETY: init is single-threaded.
    let cmd = match unsafe { fork() }.map_err(|e| Error::setup("fork", e))? {
        ForkResult::Child => {
            drop(err_r);
            let mut err_fd = err_w.as_raw_fd();
            let err = exec_command(spec, filter, argv, cwd, &program, rlimits, tty, &mut err_fd);
            let mut line = serde_json::to_vec(&err).unwrap_or_default();
            line.push(b'\n');
            // SAFETY: err_fd is the error pipe's write end; then leave without
            // running destructors of the copied process.
            unsafe {
                libc::write(err_fd, line.as_ptr().cast(), line.len());
                libc::_exit(127)
            }
        }
        ForkResult::Parent { child } => child,
    };
    drop(err_w);
    let mut text = String::new();
    let _ = std::fs::File::from(err_r).read_to_string(&mut text);
    if let Ok(err) = serde_json::from_str::<Error>(text.trim()) {
        let _ = waitpid(cmd, None);
        return Err(err);
    }
    reap_until(cmd)
}

/// Reap every process that ends (orphans are re-parented to init) until the
/// command itself ends.
fn reap_until(cmd: Pid) -> Result<Status> {
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == cmd => return Ok(Status::Exited(code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == cmd => {
                return Ok(Status::Signaled(sig as i32))
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(Error::setup("waitpid", e)),
        }
    }
}

/// In the command's process: everything between fork and execve. Returns
/// only on failure.
#[allow(clippy::too_many_arguments)]
fn exec_command(
    spec: &Spec,
    filter: &Program,
    args: &[String],
    cwd: &Path,
    program: &Path,
    rlimits: bool,
    tty: Option<RawFd>,
    err_fd: &mut RawFd,
) -> Error {
    let argv: Vec<CString> = args.iter().map(|a| cstring(a)).collect();
    let envp: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| cstring(&format!("{k}={v}")))
        .collect();
    let path = cstring(&program.to_string_lossy());
    if let Err(e) = prepare_process(spec, cwd, rlimits, tty, err_fd).and_then(|()| filter.install())
    {
        return e;
    }
    let e = execve(&path, &argv, &envp).unwrap_err();
    let reason = match e {
        Errno::EACCES => "permission denied (not executable, or on a noexec mount)".to_owned(),
        Errno::ENOEXEC => "not an executable format the kernel knows".to_owned(),
        Errno::ENOENT => format!(
            "{} or its interpreter not found inside the root",
            program.display()
        ),
        e => e.desc().to_owned(),
    };
    Error::Command {
        command: args[0].clone(),
        reason,
    }
}

fn prepare_process(
    spec: &Spec,
    cwd: &Path,
    rlimits: bool,
    tty: Option<RawFd>,
    err_fd: &mut RawFd,
) -> Result<()> {
    // A new session: the caller's terminal is not the command's controlling
    // terminal. With a terminal of the sandbox's own, it becomes that.
    setsid().map_err(|e| Error::setup("setsid", e))?;
    if let Some(tty) = tty {
        crate::terminal::take(tty).map_err(|e| Error::setup("controlling terminal", e))?;
    }
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator().filter(|s| !matches!(s, Signal::SIGKILL | Signal::SIGSTOP)) {
        // SAFETY: restoring default dispositions.
        let _ = unsafe { sigaction(sig, &default) };
    }
    SigSet::empty()
        .thread_set_mask()
        .map_err(|e| Error::setup("signal mask", e))?;
    if rlimits {
        use nix::sys::resource::{setrlimit, Resource};
        if let Some(p) = spec.limits.pids {
            setrlimit(Resource::RLIMIT_NPROC, p, p).map_err(|e| Error::setup("RLIMIT_NPROC", e))?;
        }
        if let Some(m) = spec.limits.memory {
            setrlimit(Resource::RLIMIT_AS, m, m).map_err(|e| Error::setup("RLIMIT_AS", e))?;
        }
    }
    umask(Mode::from_bits_truncate(spec.umask as libc::mode_t));
    chdir(cwd).map_err(|e| Error::path("working directory", cwd, e.desc()))?;
    // RLIMIT_NPROC counts the processes of one uid: with several ids mapped,
    // a tree switching uids would get the limit once per uid. Without a
    // pids cgroup, the tree keeps the uid it starts with.
    let one_uid = rlimits && spec.limits.pids.is_some();
    for cap in caps::all() {
        let switches_ids = matches!(
            cap,
            caps::Capability::CAP_SETUID | caps::Capability::CAP_SETGID
        );
        if !KEPT_CAPS.contains(&cap) || (one_uid && switches_ids) {
            caps::drop(None, caps::CapSet::Bounding, cap)
                .map_err(|e| Error::setup("drop capabilities", e))?;
        }
    }
    caps::clear(None, caps::CapSet::Ambient)
        .map_err(|e| Error::setup("clear ambient capabilities", e))?;
    caps::clear(None, caps::CapSet::Inheritable)
        .map_err(|e| Error::setup("clear inheritable capabilities", e))?;
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(Error::setup("no_new_privs", Errno::last()));
    }
    *err_fd =
        remap_fds(&spec.fds, *err_fd).map_err(|e| Error::setup("pass file descriptors", e))?;
    Ok(())
}

/// Put the passed descriptors at 3, 4, ... and close every other one except
/// the (close-on-exec) error pipe, whose new number is returned.
fn remap_fds(fds: &[RawFd], err_fd: RawFd) -> nix::Result<RawFd> {
    use nix::fcntl::{fcntl, FcntlArg};
    let first_free = 3 + fds.len() as RawFd;
    let above = fds
        .iter()
        .copied()
        .chain([err_fd, first_free])
        .max()
        .unwrap_or(first_free)
        + 1;
    let mut temps = Vec::with_capacity(fds.len());
    for &fd in fds {
        temps.push(fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(above))?);
    }
    let err_tmp = fcntl(err_fd, FcntlArg::F_DUPFD_CLOEXEC(above))?;
    for (i, &t) in temps.iter().enumerate() {
        // SAFETY: dup2 on descriptors we own; the target loses close-on-exec.
        if unsafe { libc::dup2(t, 3 + i as RawFd) } < 0 {
            return Err(Errno::last());
        }
    }
    let err_final = fcntl(err_tmp, FcntlArg::F_DUPFD_CLOEXEC(first_free))?;
    close_range(first_free, err_final - 1)?;
    close_range(err_final + 1, RawFd::MAX)?;
    Ok(err_final)
}

/// Puts `stdio` on 0-2 and closes every descriptor but 0-2 and `keep`: init
/// holds only what it passes on or reports through, whatever the process it
/// was cloned from had open.
fn inherit_only(stdio: [Option<RawFd>; 3], mut keep: Vec<RawFd>) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg};
    let above = keep
        .iter()
        .copied()
        .chain(stdio.iter().flatten().copied())
        .max()
        .unwrap_or(2)
        + 1;
    // Copies above everything first, so no dup2 overwrites a source still needed.
    let mut temps = [None; 3];
    for (temp, src) in temps.iter_mut().zip(stdio) {
        if let Some(src) = src {
            *temp = Some(fcntl(src, FcntlArg::F_DUPFD_CLOEXEC(above))?);
        }
    }
    for (target, temp) in temps.iter().enumerate() {
        if let Some(temp) = *temp {
            // SAFETY: dup2 onto 0-2 of this process; the copy loses close-on-exec.
            if unsafe { libc::dup2(temp, target as RawFd) } < 0 {
                return Err(Errno::last());
            }
        }
    }
    keep.extend([0, 1, 2]);
    keep.sort_unstable();
    keep.dedup();
    let mut next = 0;
    for fd in keep.into_iter().chain([RawFd::MAX]) {
        if fd > next {
            close_range(next, fd - 1)?;
        }
        next = fd.saturating_add(1);
    }
    Ok(())
}

fn close_range(first: RawFd, last: RawFd) -> nix::Result<()> {
    if first > last {
        return Ok(());
    }
    // SAFETY: closes descriptors of this process only.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32) };
    Errno::result(r).map(drop)
}

/// The program to execute: `name` (argv[0]) itself if it has a '/', else the
/// first match in the PATH of the command's environment.
fn resolve(spec: &Spec, name: &str) -> Result<PathBuf> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let path = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str());
    let Some(path) = path else {
        return Err(Error::Command {
            command: name.to_owned(),
            reason: "no '/' in the name and no PATH in the environment to search".into(),
        });
    };
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.metadata().is_ok_and(|m| m.is_file()))
        .ok_or_else(|| Error::Command {
            command: name.to_owned(),
            reason: format!("not found in PATH={path} inside the root"),
        })
}

fn cstring(s: &str) -> CString {
    // NUL bytes were rejected when the spec was checked.
    CString::new(s).unwrap_or_default()
}

/// pid 1 of the sandbox is a copy of the process that cloned it: imgrep's
/// own command line and environment would show in /proc/1/cmdline and
/// /proc/1/environ, and the command, with init's uid, could read init's
/// memory or ptrace it. Non-dumpable, init's /proc files other than
/// cmdline and stat need CAP_SYS_PTRACE over the host's user namespace;
/// its argument and environment areas are overwritten (`imgrep-init`, then
/// zeros) for what stays readable.
fn hide_init() -> Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(Error::setup("make init non-dumpable", Errno::last()));
    }
    let stat = std::fs::read_to_string("/proc/self/stat")
        .map_err(|e| Error::setup("read /proc/self/stat", e))?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let fields: Vec<usize> = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).copied().unwrap_or(0);
    for (start, end, name) in [
        (field(48), field(49), &b"imgrep-init"[..]),
        (field(50), field(51), &b""[..]),
    ] {
        if start == 0 || end <= start {
            continue;
        }
        // SAFETY: [start, end) is this process's own argument or
        // environment area on its stack, as the kernel reports it; nothing
        // in init reads argv or the environment strings any more.
        unsafe {
            let area = std::slice::from_raw_parts_mut(start as *mut u8, end - start);
            area.fill(0);
            let n = name.len().min(area.len().saturating_sub(1));
            area[..n].copy_from_slice(&name[..n]);
        }
    }
    Ok(())
}

/// A new, empty session keyring for init and everything it starts:
/// otherwise the command would share the caller's (read its keys, plant
/// keys the host uses). The user keyrings are per user namespace already.
fn new_session_keyring() -> Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl with a null name: join a new anonymous keyring.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    match Errno::result(r) {
        Ok(_) => Ok(()),
        // A kernel without keys has no keyring to share.
        Err(Errno::ENOSYS) => Ok(()),
        Err(e) => Err(Error::setup("join a new session keyring", e)),
    }
}

/// lo starts down in a new network namespace.
fn loopback_up() -> nix::Result<()> {
    // SAFETY: socket/ioctl on a zeroed ifreq naming "lo".
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(Errno::last());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        let mut r = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut ifr);
        if r == 0 {
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            r = libc::ioctl(sock, libc::SIOCSIFFLAGS, &ifr);
        }
        let err = Errno::last();
        libc::close(sock);
        if r == 0 {
            Ok(())
        } else {
            Err(err)
        }
    }
}
