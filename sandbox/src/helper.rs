//! The helper: the single-threaded process that builds and supervises one
//! sandbox. It is either the caller itself, when the caller has one thread
//! (`imgrep run`: no extra process at all), or the current executable re-run
//! with the marker argument for a multithreaded caller, which then reads the
//! spec from its socket. It creates the cgroup, clones the sandbox's init
//! into new namespaces, writes its id maps, then supervises it: timeout,
//! signals, the caller going away. It removes what it created and reports.

use std::fs::{DirBuilder, File};
use std::io::{BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::{fchdir, pipe2, Pid};
use serde::{Deserialize, Serialize};

use crate::cgroup::Cgroup;
use crate::child;
use crate::copy::{self, Specials};
use crate::error::{Error, Result};
use crate::idmap::Maps;
use crate::proto::{recv, send, HelperMsg, InitMsg};
use crate::seccomp::Program;
use crate::spec::{Enforcement, MemoryDir, Report, Spec, Stats, Status};
use crate::terminal::Relay;

pub(crate) fn main(fd: RawFd) -> i32 {
    // SAFETY: the caller passed us this socket and nothing else here owns it.
    let sock = unsafe { UnixStream::from_raw_fd(fd) };
    let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    let (spec, streams, init_end): (Spec, [Stream; 3], Option<RawFd>) =
        match recv(BufReader::new(&sock)) {
            Ok(Some(request)) => request,
            Ok(None) => return 2,
            Err(e) => {
                let err = Error::Helper(format!("unreadable spec: {e}"));
                let _ = send(&sock, &HelperMsg::Done(Err(err)));
                return 2;
            }
        };
    let fill = init_end.map(|fd| {
        let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        Filling {
            // SAFETY: the caller passed us init's end of the channel.
            init: unsafe { OwnedFd::from_raw_fd(fd) },
            local: None,
        }
    });
    let result = run(&spec, &Caller::Remote(&sock, streams), fill);
    let _ = send(&sock, &HelperMsg::Done(result));
    0
}

/// Where a standard stream of the command goes, as the helper sees it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum Stream {
    /// The helper's own descriptor (0, 1 or 2) as it is.
    Keep,
    /// This descriptor of the helper, as it is.
    Direct(RawFd),
    /// A pipe whose other end the helper reads and appends to this file
    /// descriptor; streams naming one file share one pipe.
    Log(RawFd),
}

/// Who asked for the sandbox, and where the command's stdio goes.
pub(crate) enum Caller<'a> {
    /// Another process (this one is the exec'd helper): the socket closing
    /// means the caller is gone.
    Remote(&'a UnixStream, [Stream; 3]),
    /// This very process.
    Local([Stream; 3]),
}

/// The in-memory directories the caller fills: init's end of their
/// channel, and when the sandbox is built in this very process, the
/// caller's end and its callback, which the helper serves itself.
pub(crate) struct Filling<'a, 'f> {
    pub(crate) init: OwnedFd,
    pub(crate) local: Option<(OwnedFd, &'a mut crate::Fill<'f>)>,
}

/// Builds the sandbox, runs it to the end and cleans up. The calling process
/// must be single-threaded: it clones the sandbox's init. With `fill`, init
/// hands its in-memory directories over before any command starts, to this
/// process when it is the caller (`fill.local`), else to the caller.
pub(crate) fn run(spec: &Spec, caller: &Caller, fill: Option<Filling>) -> Result<Report> {
    if nix::unistd::geteuid().is_root() && !matches!(spec.idmap, crate::IdMap::Custom { .. }) {
        spec.root_ids.check()?;
    }
    let maps = Maps::resolve(&spec.idmap, &spec.root_ids)?;
    let owner = spec.host_root()?;
    let filter = Program::for_groups(&spec.seccomp_allow);
    let _mount_point = prepare_scratch(spec, owner)?;
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
    if spec.terminal {
        mask.add(Signal::SIGWINCH);
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
    let (mut stdio, mut pumps) = match caller {
        Caller::Remote(_, streams) | Caller::Local(streams) => Pump::plumb(streams)?,
    };
    // With a terminal, init's own stdio is /dev/null: the caller's terminal
    // never enters the sandbox. Declared after the signal mask: the
    // caller's terminal leaves raw mode while signals are still blocked.
    let (mut relay, console, _null) = if spec.terminal {
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/null")
            .map_err(|e| Error::path("standard stream", "/dev/null", e))?;
        stdio = [Some(null.as_raw_fd()); 3];
        let (relay, console) = Relay::new()?;
        (Some(relay), Some(console), Some(null))
    } else {
        (None, None, None)
    };

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
            let start = if on_its_own {
                drop(sync_r);
                child::Start::OwnMaps(&maps)
            } else {
                child::Start::AfterHelper {
                    sync: sync_r,
                    joins_cgroup: cgroup.is_some(),
                }
            };
            let fill = fill.as_ref().map(|f| f.init.as_raw_fd());
            child::main(
                spec, &filter, start, report_w, rlimits, stdio, console, fill,
            )
        }
        Some(pid) => pid,
    };
    drop(console);
    // Init's end is init's alone: its end of file says init is gone.
    let fill = fill.and_then(|f| f.local);
    drop(sync_r);
    drop(report_w);
    // Only the sandbox may hold the pipes' write ends: their end of file
    // says its last process is gone.
    for p in &mut pumps {
        p.write = None;
    }
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
    let filled = match fill {
        Some((ours, f)) => crate::fill::serve(ours, spec, f),
        None => Ok(()),
    };

    let (ended_by, rusage) = supervise(
        pid,
        spec.timeout.map(|t| start + t),
        &signals,
        match caller {
            Caller::Remote(sock, _) => Some(*sock),
            Caller::Local(_) => None,
        },
        cgroup.as_ref(),
        &mut pumps,
        relay.as_mut(),
    )?;
    // Init is gone, and with it every process of its namespace: what they
    // wrote last is still in the pipes and the pty.
    for p in &mut pumps {
        p.drain(true);
    }
    if let Some(mut relay) = relay.take() {
        relay.finish();
    }
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
                if let Err(e) = ns.save(m, to, limit, owner) {
                    warnings.push(e.to_string());
                }
            }
        }
    }
    drop(held);
    // overlayfs leaves directories of mode 000 in its work directories:
    // make them usable by inside root's host ids (the caller's, unless real
    // root started us), so the next run and the caller can remove them.
    let root_work = (!spec.scratch_in_memory).then(|| spec.scratch.join("work"));
    for work in root_work
        .iter()
        .chain(spec.overlays.iter().map(|o| &o.work))
    {
        let _ = crate::copy::reclaim_tree(work, owner.0, owner.1);
    }
    let memory_peak = cgroup.as_ref().and_then(Cgroup::memory_peak);
    let oom_kills = cgroup.as_ref().and_then(Cgroup::oom_kills);
    drop(cgroup);
    let reclaimed = if spec.reclaim {
        Reclaim::ToCaller
    } else {
        Reclaim::StripOnly
    };
    if let Err(e) = reclaim(spec, &maps, reclaimed) {
        warnings.push(format!("reclaiming the run's files failed: {e}"));
    }
    // The caller's own reason, rather than init's "the caller did not finish".
    filled?;
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
    pumps: &mut [Pump],
    mut relay: Option<&mut Relay>,
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
        let first_pump = fds.len();
        let open: Vec<usize> = (0..pumps.len()).filter(|&i| !pumps[i].ended).collect();
        for &i in &open {
            fds.push(PollFd::new(pumps[i].read.as_fd(), PollFlags::POLLIN));
        }
        let first_relay = fds.len();
        let slots: Vec<_> = relay.as_deref().map_or_else(Vec::new, |r| {
            let (slots, relay_fds): (Vec<_>, Vec<_>) = r.poll_fds().into_iter().unzip();
            fds.extend(relay_fds);
            slots
        });
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::setup("poll", e)),
        }
        let gone = sock.is_some()
            && fds
                .get(1)
                .is_some_and(|fd| fd.revents().is_none_or(|r| !r.is_empty()));
        let ready: Vec<usize> = open
            .iter()
            .zip(&fds[first_pump..])
            .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(&i, _)| i)
            .collect();
        let relay_ready: Vec<_> = slots
            .into_iter()
            .zip(&fds[first_relay..])
            .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(slot, _)| slot)
            .collect();
        drop(fds);
        for i in ready {
            pumps[i].drain(false);
        }
        if let Some(relay) = relay.as_deref_mut() {
            for slot in relay_ready {
                relay.ready(slot);
            }
        }
        while let Ok(Some(info)) = signals.read_signal() {
            let sig = info.ssi_signo as i32;
            if sig == libc::SIGWINCH {
                if let Some(relay) = relay.as_deref() {
                    relay.resize();
                }
            } else if sig != libc::SIGCHLD && ended_by.is_none() {
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
fn prepare_scratch(spec: &Spec, owner: (u32, u32)) -> Result<Option<MountPoint>> {
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
    // 0755 whatever the caller's umask: as real root, the run's ids are an
    // unprivileged range that must pass through the scratch directory.
    // Modes and owners are changed only where they differ: a kept scratch
    // serves run after run, and each change is a metadata write to disk.
    let mode_755 = |d: &Path| -> Result<()> {
        let meta = std::fs::metadata(d).map_err(|e| fail(&e))?;
        if meta.permissions().mode() & 0o7777 != 0o755 {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| fail(&e))?;
        }
        Ok(())
    };
    for sub in ["upper", "work", "root"] {
        let dir = spec.scratch.join(sub);
        std::fs::create_dir_all(&dir).map_err(|e| fail(&e))?;
        mode_755(&dir)?;
        if nix::unistd::geteuid().is_root() {
            // Real root's sandbox runs as the range's ids: they write here.
            let meta = dir.symlink_metadata().map_err(|e| fail(&e))?;
            if (meta.uid(), meta.gid()) != owner {
                std::os::unix::fs::lchown(&dir, Some(owner.0), Some(owner.1))
                    .map_err(|e| fail(&e))?;
            }
        }
    }
    mode_755(&spec.scratch)?;
    if !nix::unistd::geteuid().is_root() {
        nix::unistd::access(&spec.scratch.join("upper"), nix::unistd::AccessFlags::W_OK)
            .map_err(|e| fail(&e.desc()))?;
    }
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

/// What [`reclaim`] does to the trees a run wrote.
#[derive(Clone, Copy)]
enum Reclaim {
    /// Give every entry to the caller, u+rwX, with no setuid, setgid or
    /// file capability left ([`crate::copy::reclaim_tree`]).
    ToCaller,
    /// Owners stay; setuid, setgid and file capabilities go
    /// ([`crate::copy::strip_tree`]).
    StripOnly,
}

/// After the tree ended: walk every tree the run could write on the host
/// (writable bind sources, overlay uppers, saved in-memory directories, an
/// on-disk scratch) and apply `what`, so that nothing the run made is a
/// privileged program on the host. Real root, and a caller whose own id is
/// all the mapping has, walk directly; otherwise the walk runs in a new user
/// namespace with the run's maps, where the caller may change every entry.
fn reclaim(spec: &Spec, maps: &Maps, what: Reclaim) -> Result<()> {
    let root = nix::unistd::geteuid().is_root();
    let given = spec
        .binds
        .iter()
        .filter(|b| !b.readonly)
        .map(|b| b.src.clone())
        .chain(spec.memory_dirs.iter().filter_map(|m| m.save.clone()));
    let layers = spec
        .overlays
        .iter()
        .map(|o| o.upper.clone())
        .chain((!spec.scratch_in_memory).then(|| spec.scratch.join("upper")));
    // Real root keeps writable layers with the range that writes them:
    // the next run on them needs that, and root reaches them anyway.
    let roots: Vec<(std::path::PathBuf, Reclaim)> = given
        .map(|p| (p, what))
        .chain(layers.map(|p| (p, if root { Reclaim::StripOnly } else { what })))
        .filter(|(p, _)| p.exists())
        .collect();
    if roots.is_empty() {
        return Ok(());
    }
    let ids = match what {
        Reclaim::ToCaller if root => (0, 0),
        Reclaim::ToCaller => maps.caller_inside().ok_or_else(|| {
            Error::InvalidSpec("reclaim needs the caller's ids mapped inside".into())
        })?,
        Reclaim::StripOnly => (0, 0),
    };
    // Every root, even after one failed: strip what can be stripped.
    let walk = move || {
        roots
            .iter()
            .map(|(r, what)| match what {
                Reclaim::ToCaller => crate::copy::reclaim_tree(r, ids.0, ids.1).is_ok(),
                Reclaim::StripOnly => crate::copy::strip_tree(r).is_ok(),
            })
            .filter(|ok| !ok)
            .count()
            == 0
    };
    // An unprivileged caller removes file capabilities only where it holds
    // CAP_SETFCAP: in a user namespace of its own, even for its own files.
    if root {
        return if walk() {
            Ok(())
        } else {
            Err(Error::setup("reclaim", "some entries could not be changed"))
        };
    }
    let (sync_r, sync_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::setup("pipe", e))?;
    // SAFETY: single-threaded helper.
    match unsafe { fork_into(CloneFlags::CLONE_NEWUSER) }.map_err(|e| Error::setup("clone", e))? {
        None => {
            drop(sync_w);
            let mut byte = [0u8];
            let ok = nix::unistd::read(sync_r.as_raw_fd(), &mut byte) == Ok(1) && walk();
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

/// A log stream: the command writes into a pipe, the helper appends what
/// comes out to the caller's file.
pub(crate) struct Pump {
    read: OwnedFd,
    /// Until the sandbox is cloned.
    write: Option<OwnedFd>,
    file: RawFd,
    ended: bool,
}

impl Pump {
    /// The descriptors init puts on 0-2 (None: keep the one there) and the
    /// pumps behind the log streams.
    fn plumb(streams: &[Stream; 3]) -> Result<([Option<RawFd>; 3], Vec<Pump>)> {
        let mut pumps: Vec<Pump> = Vec::new();
        let mut stdio = [None; 3];
        for (slot, stream) in stdio.iter_mut().zip(streams) {
            *slot = match *stream {
                Stream::Keep => None,
                Stream::Direct(fd) => Some(fd),
                Stream::Log(file) => {
                    if let Some(p) = pumps.iter().find(|p| p.file == file) {
                        p.write.as_ref().map(|w| w.as_raw_fd())
                    } else {
                        let (read, write) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
                            .map_err(|e| Error::setup("pipe", e))?;
                        // Only the read end is ours to poll; the command
                        // gets a blocking pipe, as a file would be.
                        fcntl(write.as_raw_fd(), FcntlArg::F_SETFL(OFlag::empty()))
                            .map_err(|e| Error::setup("pipe", e))?;
                        let raw = write.as_raw_fd();
                        pumps.push(Pump {
                            read,
                            write: Some(write),
                            file,
                            ended: false,
                        });
                        Some(raw)
                    }
                }
            };
        }
        Ok((stdio, pumps))
    }

    /// Copy what the pipe holds to the file (a bounded amount, so that a
    /// chatty command cannot keep the helper from its signals); with
    /// `to_end`, everything until every writer has closed it.
    fn drain(&mut self, to_end: bool) {
        let mut buf = [0u8; 65536];
        let mut rounds = 0;
        while !self.ended && (to_end || rounds < 16) {
            rounds += 1;
            match nix::unistd::read(self.read.as_raw_fd(), &mut buf) {
                Ok(0) => self.ended = true,
                Ok(n) => {
                    // SAFETY: the caller's open file, borrowed for this call.
                    let file = unsafe { BorrowedFd::borrow_raw(self.file) };
                    let mut rest = &buf[..n];
                    while !rest.is_empty() {
                        match nix::unistd::write(file, rest) {
                            Ok(k) => rest = &rest[k..],
                            Err(nix::errno::Errno::EINTR) => {}
                            // A full disk loses the log, not the run.
                            Err(_) => break,
                        }
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) if to_end => {
                    let mut fd = [PollFd::new(self.read.as_fd(), PollFlags::POLLIN)];
                    let _ = poll(&mut fd, PollTimeout::NONE);
                }
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(_) => self.ended = true,
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
    fn save(&self, m: &MemoryDir, to: &Path, limit: u64, owner: (u32, u32)) -> Result<()> {
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
        if nix::unistd::geteuid().is_root() {
            // The copy runs as inside root: the range's ids on the host.
            std::os::unix::fs::lchown(to, Some(owner.0), Some(owner.1))
                .map_err(|e| Error::setup(what(), e))?;
        }
        let dir = File::open(to).map_err(|e| Error::setup(what(), e))?;
        let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::setup("pipe", e))?;
        // SAFETY: the helper is single-threaded.
        match unsafe { fork_into(CloneFlags::empty()) }.map_err(|e| Error::setup("fork", e))? {
            None => {
                drop(err_r);
                let copied = setns(&self.user, CloneFlags::CLONE_NEWUSER)
                    .and_then(|()| setns(&self.mnt, CloneFlags::CLONE_NEWNS))
                    .map_err(std::io::Error::from)
                    .and_then(|()| child::become_inside_root().map_err(std::io::Error::other))
                    .and_then(|()| fchdir(dir.as_raw_fd()).map_err(std::io::Error::from))
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
