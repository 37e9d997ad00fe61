//! The helper: the single-threaded process that builds and supervises one
//! sandbox. It is either the caller itself, when the caller has one thread
//! (`imgrep run`: no extra process at all), or the current executable re-run
//! with the marker argument for a multithreaded caller, which then reads the
//! spec from its socket. It creates the cgroup, clones the sandbox's init
//! into new namespaces, writes its id maps, then supervises it: timeout,
//! signals, the caller going away. It removes what it created and reports.

use std::fs::{DirBuilder, File};
use std::io::{BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::{fchdir, pipe2, Pid};

use crate::cgroup::Cgroup;
use crate::child;
use crate::copy::{self, Specials};
use crate::error::{Error, Result};
use crate::idmap::Maps;
use crate::proto::{recv, send, HelperMsg, InitMsg};
use crate::seccomp::Program;
use crate::spec::{Enforcement, MemoryDir, Report, Spec, Stats, Status};

pub(crate) fn main(fd: RawFd) -> i32 {
    // SAFETY: the caller passed us this socket and nothing else here owns it.
    let sock = unsafe { UnixStream::from_raw_fd(fd) };
    let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    let spec: Spec = match recv(BufReader::new(&sock)) {
        Ok(Some(spec)) => spec,
        Ok(None) => return 2,
        Err(e) => {
            let err = Error::Helper(format!("unreadable spec: {e}"));
            let _ = send(&sock, &HelperMsg::Done(Err(err)));
            return 2;
        }
    };
    serve(&spec, &sock)
}

/// Run `spec` and send the report over `sock`; the helper's exit code.
fn serve(spec: &Spec, sock: &UnixStream) -> i32 {
    let result = run(spec, &Caller::Remote(sock));
    let _ = send(sock, &HelperMsg::Done(result));
    0
}

/// Who asked for the sandbox.
pub(crate) enum Caller<'a> {
    /// Another process (this one is the exec'd helper): the socket closing
    /// means the caller is gone.
    Remote(&'a UnixStream),
    /// This very process. The sandbox's init puts these descriptors (the
    /// spec's stdio, None: keep ours) on 0-2.
    Local([Option<RawFd>; 3]),
}

/// Builds the sandbox, runs it to the end and cleans up. The calling process
/// must be single-threaded: it clones the sandbox's init.
pub(crate) fn run(spec: &Spec, caller: &Caller) -> Result<Report> {
    let maps = Maps::resolve(&spec.idmap)?;
    let filter = Program::compile(&spec.seccomp_allow)?;
    let _mount_point = prepare_scratch(spec)?;
    let mut warnings = Vec::new();
    let (cgroup, enforcement) = if spec.limits.any() {
        match Cgroup::create(&spec.limits) {
            Ok(cg) => {
                let kind = cg.kind;
                (Some(cg), kind)
            }
            Err(why) if spec.strict_limits => return Err(Error::Limits(why)),
            Err(why) => {
                warnings.push(format!(
                    "resource limits are not enforced by a cgroup ({why}); running with \
                     per-process rlimits only (processes, address space; no CPU quota)"
                ));
                (None, Enforcement::Rlimits)
            }
        }
    } else {
        (None, Enforcement::NotRequested)
    };

    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        mask.add(s);
    }
    // Restored when the run ends: a local caller keeps its own signal handling.
    let _restore_mask = mask
        .thread_swap_mask(SigmaskHow::SIG_BLOCK)
        .map(RestoreMask)
        .map_err(|e| Error::setup("block signals", e))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| Error::setup("signalfd", e))?;
    let (sync_r, sync_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::setup("pipe", e))?;
    let (report_r, report_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::setup("pipe", e))?;

    let flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    let start = Instant::now();
    // SAFETY: this process is single-threaded (see the module docs).
    // Without a cgroup to join and with maps it may write itself, the child
    // need not wait for us.
    // Nor when its namespaces must be opened through /proc/PID before init
    // makes itself non-dumpable.
    let saves = spec.memory_dirs.iter().any(|m| m.save.is_some());
    let on_its_own = cgroup.is_none() && maps.self_writable() && !saves;
    let pid = match unsafe { fork_into(flags) }.map_err(|e| Error::setup("clone", e))? {
        None => {
            drop(sync_w);
            drop(report_r);
            let rlimits = enforcement == Enforcement::Rlimits;
            let stdio = match caller {
                Caller::Local(stdio) => *stdio,
                Caller::Remote(_) => [None; 3],
            };
            let start = if on_its_own {
                drop(sync_r);
                child::Start::OwnMaps(&maps)
            } else {
                child::Start::AfterHelper(sync_r)
            };
            child::main(spec, &filter, start, report_w, rlimits, stdio)
        }
        Some(pid) => pid,
    };
    drop(sync_r);
    drop(report_w);
    // In-memory directories to save on failure must outlive the sandbox's
    // processes: holding its namespaces keeps its mounts.
    let held = if saves {
        match Namespaces::of(pid) {
            Ok(ns) => Some(ns),
            Err(e) => {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = wait4(pid, 0);
                return Err(e);
            }
        }
    } else {
        None
    };

    if !on_its_own {
        let ready = maps.apply(pid).and_then(|()| match &cgroup {
            Some(cg) => cg.add(pid).map_err(|e| Error::setup("join cgroup", e)),
            None => Ok(()),
        });
        if let Err(e) = ready {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = wait4(pid, 0);
            return Err(e);
        }
        nix::unistd::write(&sync_w, &[1]).map_err(|e| Error::setup("start sandbox", e))?;
    }
    drop(sync_w);

    let (ended_by, rusage) = supervise(
        pid,
        spec.timeout.map(|t| start + t),
        &signals,
        match caller {
            Caller::Remote(sock) => Some(*sock),
            Caller::Local(_) => None,
        },
        cgroup.as_ref(),
    )?;
    let wall = start.elapsed();
    let mut command = 0;
    let mut report = None;
    let mut reader = BufReader::new(std::fs::File::from(report_r));
    while let Ok(Some(msg)) = recv::<InitMsg>(&mut reader) {
        match msg {
            InitMsg::Started(k) => command = k,
            InitMsg::Ended(status) => report = Some(Ok(status)),
            InitMsg::Failed(err) => report = Some(Err(err)),
        }
    }
    if let Some(cg) = &cgroup {
        cg.kill_all();
    }
    let succeeded = matches!(&report, Some(Ok(status)) if status.success());
    if let (Some(ns), false) = (&held, succeeded) {
        for m in &spec.memory_dirs {
            if let Some(to) = &m.save {
                // At most what the directory could hold: hard links would
                // otherwise multiply it on the host's disk.
                let limit = m.mounted_size(&spec.limits);
                if let Err(e) = ns.save(m, to, limit) {
                    warnings.push(e.to_string());
                }
            }
        }
    }
    drop(held);
    // overlayfs leaves directories of mode 000 in its work directories, all
    // ours: make them deletable by the caller.
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    let root_work = (!spec.scratch_in_memory).then(|| spec.scratch.join("work"));
    for work in root_work
        .iter()
        .chain(spec.overlays.iter().map(|o| &o.work))
    {
        let _ = crate::copy::reclaim_tree(work, uid, gid);
    }
    let memory_peak = cgroup.as_ref().and_then(Cgroup::memory_peak);
    let oom_kills = cgroup.as_ref().and_then(Cgroup::oom_kills);
    drop(cgroup);
    if spec.reclaim {
        if let Err(e) = reclaim(spec, &maps) {
            warnings.push(format!("reclaiming the run's files failed: {e}"));
        }
    }
    let status = match (report, ended_by) {
        (Some(Ok(status)), _) => status,
        (Some(Err(err)), _) => return Err(err),
        (None, Some(status)) => status,
        (None, None) => {
            return Err(Error::Helper(format!(
                "the sandbox's init ended without a report (wait status {:#x})",
                rusage.0
            )))
        }
    };
    let ru = rusage.1;
    Ok(Report {
        status,
        command,
        stats: Stats {
            wall,
            user: timeval(ru.ru_utime),
            system: timeval(ru.ru_stime),
            max_rss: (ru.ru_maxrss as u64) * 1024,
            memory_peak,
            oom_kills,
        },
        enforcement,
        warnings,
    })
}

/// Wait for init to end; kill it at the deadline, on SIGINT/SIGTERM/SIGHUP/
/// SIGQUIT or when a remote caller's end of the socket closes. Killing init kills
/// every process of its pid namespace. Returns why we killed it, if we did,
/// with init's wait status and resource use.
fn supervise(
    pid: Pid,
    deadline: Option<Instant>,
    signals: &SignalFd,
    sock: Option<&UnixStream>,
    cgroup: Option<&Cgroup>,
) -> Result<(Option<Status>, (i32, libc::rusage))> {
    let mut ended_by = None;
    loop {
        if let Some(done) = wait4(pid, libc::WNOHANG)? {
            return Ok((ended_by, done));
        }
        if ended_by.is_some() {
            return Ok((
                ended_by,
                wait4(pid, 0)?.expect("blocking wait4 returns a child"),
            ));
        }
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    ended_by = Some(Status::TimedOut);
                    terminate(pid, cgroup);
                    continue;
                }
                PollTimeout::try_from(left.as_millis().clamp(1, i32::MAX as u128) as i32)
                    .unwrap_or(PollTimeout::MAX)
            }
        };
        // The caller never writes after the spec: readable means its end closed.
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if let Some(sock) = sock {
            fds.push(PollFd::new(sock.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::setup("poll", e)),
        }
        let gone = fds
            .get(1)
            .is_some_and(|fd| fd.revents().is_none_or(|r| !r.is_empty()));
        while let Ok(Some(info)) = signals.read_signal() {
            let sig = info.ssi_signo as i32;
            if sig != libc::SIGCHLD && ended_by.is_none() {
                ended_by = Some(Status::Interrupted(sig));
            }
        }
        if gone && ended_by.is_none() {
            ended_by = Some(Status::Interrupted(libc::SIGHUP));
        }
        if ended_by.is_some() {
            terminate(pid, cgroup);
        }
    }
}

fn terminate(pid: Pid, cgroup: Option<&Cgroup>) {
    let _ = kill(pid, Signal::SIGKILL);
    if let Some(cg) = cgroup {
        cg.kill_all();
    }
}

/// wait4(2) on one child: its wait status and rusage, None if still running.
fn wait4(pid: Pid, options: i32) -> Result<Option<(i32, libc::rusage)>> {
    let mut status = 0;
    // SAFETY: rusage is plain old data; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals.
        let r = unsafe { libc::wait4(pid.as_raw(), &mut status, options, &mut ru) };
        match r {
            0 => return Ok(None),
            r if r > 0 => return Ok(Some((status, ru))),
            _ if nix::errno::Errno::last() == nix::errno::Errno::EINTR => continue,
            _ => return Err(Error::setup("wait4", nix::errno::Errno::last())),
        }
    }
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

/// fork(2) with namespace flags: clone(2) without a new stack, so the child
/// continues here with a copy of this (single-threaded) process. Some(pid)
/// in the parent, None in the child.
///
/// # Safety
/// The calling process must be single-threaded.
pub(crate) unsafe fn fork_into(flags: CloneFlags) -> nix::Result<Option<Pid>> {
    let raw = (flags.bits() | libc::SIGCHLD) as libc::c_ulong;
    let r = libc::syscall(libc::SYS_clone, raw, 0usize, 0usize, 0usize, 0usize);
    match r {
        -1 => Err(nix::errno::Errno::last()),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
}

/// Create the scratch directory's layout. An in-memory scratch that did not
/// exist is only a mount point: the returned guard removes it again, even when
/// the caller died meanwhile.
fn prepare_scratch(spec: &Spec) -> Result<Option<MountPoint>> {
    let fail = |e: &dyn std::fmt::Display| Error::path("scratch directory", &spec.scratch, e);
    if spec.scratch_in_memory {
        let created = match std::fs::create_dir(&spec.scratch) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && spec.scratch.is_dir() => {
                false
            }
            Err(e) => return Err(fail(&e)),
        };
        return Ok(created.then(|| MountPoint(spec.scratch.clone())));
    }
    for sub in ["upper", "work", "root"] {
        std::fs::create_dir_all(spec.scratch.join(sub)).map_err(|e| fail(&e))?;
    }
    nix::unistd::access(&spec.scratch.join("upper"), nix::unistd::AccessFlags::W_OK)
        .map_err(|e| fail(&e.desc()))?;
    Ok(None)
}

/// Puts a signal mask back when dropped.
struct RestoreMask(SigSet);

impl Drop for RestoreMask {
    fn drop(&mut self) {
        let _ = self.0.thread_set_mask();
    }
}

/// An empty directory the helper made to mount the in-memory scratch on.
struct MountPoint(std::path::PathBuf);

impl Drop for MountPoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Give the caller back everything the run wrote: in a user namespace with the
/// run's maps, chown every entry under the writable binds and the scratch
/// directory to the inside ids that stand for the caller, and add u+rwX.
fn reclaim(spec: &Spec, maps: &Maps) -> Result<()> {
    let (uid, gid) = maps
        .caller_inside()
        .ok_or_else(|| Error::InvalidSpec("reclaim needs the caller's ids mapped inside".into()))?;
    let mut roots: Vec<_> = spec
        .binds
        .iter()
        .filter(|b| !b.readonly)
        .map(|b| b.src.clone())
        .chain(spec.overlays.iter().map(|o| o.upper.clone()))
        .chain(spec.memory_dirs.iter().filter_map(|m| m.save.clone()))
        .filter(|p| p.exists())
        .collect();
    if !spec.scratch_in_memory {
        roots.push(spec.scratch.clone());
    }
    let (sync_r, sync_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::setup("pipe", e))?;
    // SAFETY: single-threaded helper.
    match unsafe { fork_into(CloneFlags::CLONE_NEWUSER) }.map_err(|e| Error::setup("clone", e))? {
        None => {
            drop(sync_w);
            let mut byte = [0u8];
            let ok = nix::unistd::read(sync_r.as_raw_fd(), &mut byte) == Ok(1)
                && roots
                    .iter()
                    .all(|r| crate::copy::reclaim_tree(r, uid, gid).is_ok());
            // SAFETY: leave the forked copy without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        Some(pid) => {
            drop(sync_r);
            let applied = maps.apply(pid);
            if applied.is_ok() {
                let _ = nix::unistd::write(&sync_w, &[1]);
            }
            drop(sync_w);
            let waited = wait4(pid, 0)?;
            applied?;
            match waited {
                Some((0, _)) => Ok(()),
                _ => Err(Error::setup("reclaim", "some entries could not be changed")),
            }
        }
    }
}

/// The user and mount namespaces of a sandbox, held open: its mounts (the
/// in-memory directories among them) live on after its last process, until
/// this is dropped.
struct Namespaces {
    user: File,
    mnt: File,
}

impl Namespaces {
    fn of(pid: Pid) -> Result<Namespaces> {
        let open = |ns: &str| {
            let path = format!("/proc/{pid}/ns/{ns}");
            File::open(&path).map_err(|e| Error::path("namespace", path, e))
        };
        Ok(Namespaces {
            user: open("user")?,
            mnt: open("mnt")?,
        })
    }

    /// Copy what the in-memory directory `m` holds now to the new host
    /// directory `to`: in a child that joins the sandbox's namespaces
    /// (where it may read every file, whatever its owner and mode) with
    /// `to` as its working directory, the one host path it can reach. On
    /// failure `to` is removed again.
    fn save(&self, m: &MemoryDir, to: &Path, limit: u64) -> Result<()> {
        let what = || {
            format!(
                "saving the in-memory {} to {}",
                m.dst.display(),
                to.display()
            )
        };
        DirBuilder::new()
            .mode(0o700)
            .create(to)
            .map_err(|e| Error::setup(what(), e))?;
        let dir = File::open(to).map_err(|e| Error::setup(what(), e))?;
        let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::setup("pipe", e))?;
        // SAFETY: the helper is single-threaded.
        match unsafe { fork_into(CloneFlags::empty()) }.map_err(|e| Error::setup("fork", e))? {
            None => {
                drop(err_r);
                let copied = setns(&self.user, CloneFlags::CLONE_NEWUSER)
                    .and_then(|()| setns(&self.mnt, CloneFlags::CLONE_NEWNS))
                    .and_then(|()| fchdir(dir.as_raw_fd()))
                    .map_err(std::io::Error::from)
                    .and_then(|()| {
                        copy::merge_tree_capped(&m.dst, Path::new("."), Specials::Skip, limit)
                    });
                let code = match copied {
                    Ok(()) => 0,
                    Err(e) => {
                        let _ = nix::unistd::write(&err_w, e.to_string().as_bytes());
                        1
                    }
                };
                // SAFETY: leave the forked copy without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            Some(pid) => {
                drop(err_w);
                let mut reason = String::new();
                let _ = File::from(err_r).read_to_string(&mut reason);
                match wait4(pid, 0)? {
                    Some((0, _)) => Ok(()),
                    // A partial copy would pass for the whole directory.
                    _ => {
                        let _ = std::fs::remove_dir_all(to);
                        Err(Error::setup(what(), reason))
                    }
                }
            }
        }
    }
}
