//! The caller's side of [`run`]: check the spec, then build the sandbox in
//! this process when it has one thread (`imgrep run`), or start the helper
//! (`/proc/self/exe` with the marker argument) and wait for its report when
//! it has more: clone() with namespace flags from a multithreaded process can
//! deadlock the child.

use std::fs::{File, OpenOptions};
use std::io::BufReader;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path};
use std::process::Command;

use crate::error::{Error, Result};
use crate::helper::{Caller, Filling, Stream};
use crate::proto::{recv, send, HelperMsg};
use crate::spec::{Report, Spec, Stdio};
use crate::HELPER_MARKER;

/// Run `spec` to the end and report how it ended. Blocks the calling thread;
/// safe to call from any thread of a multithreaded program.
pub fn run(spec: &Spec) -> Result<Report> {
    run_with(spec, None)
}

/// [`run`] a spec with in-memory directories the caller lays out
/// ([`crate::MemoryDir::fill`]): `fill` gets them, mounted and empty but for
/// their `sources`, on the calling thread before any command starts, and
/// writes with inside root's ids (as real root, this thread's fsuid and
/// fsgid are the range's for the call). No timeout runs meanwhile when the
/// calling process has one thread. When `fill` fails, so does the run,
/// with its reason ([`Error::Fill`]).
pub fn run_filling(spec: &Spec, fill: &mut crate::Fill) -> Result<Report> {
    run_with(spec, Some(fill))
}

fn run_with(spec: &Spec, fill: Option<&mut crate::Fill>) -> Result<Report> {
    validate(spec)?;
    let filled = spec.memory_dirs.iter().any(|m| m.fill);
    if filled != fill.is_some() {
        return Err(Error::InvalidSpec(
            "in-memory directories the caller fills need sandbox::run_filling, and only they"
                .into(),
        ));
    }
    let stdin = open_stdio(&spec.stdin, false)?;
    let stdout = open_stdio(&spec.stdout, true)?;
    // One file for both streams: one descriptor, so the helper pumps both
    // through one pipe and the file keeps the order they were written in.
    let stderr = match (&spec.stdout, &stdout) {
        (Stdio::File(a), StdioFd::Log(fd)) if spec.stderr == Stdio::File(a.clone()) => {
            StdioFd::SameLog(fd.as_raw_fd())
        }
        _ => open_stdio(&spec.stderr, true)?,
    };
    let stdio = [stdin, stdout, stderr];
    let channel = fill
        .map(|f| crate::fill::channel().map(|ends| (ends, f)))
        .transpose()?;
    if single_threaded() {
        let streams = [0, 1, 2].map(|i| stdio[i].stream());
        let fill = channel.map(|((ours, init), f)| Filling {
            init,
            local: Some((ours, f)),
        });
        return crate::helper::run(spec, &Caller::Local(streams), fill);
    }
    let (ours, theirs) =
        UnixStream::pair().map_err(|e| Error::Helper(format!("socketpair: {e}")))?;
    let streams = [0, 1, 2].map(|i| match stdio[i].stream() {
        // The exec'd helper gets these as its own stdio.
        Stream::Direct(_) => Stream::Keep,
        other => other,
    });
    let (fill, init_end) = match channel {
        Some(((ours, init), f)) => (Some((ours, f)), Some(init)),
        None => (None, None),
    };
    let mut helper = exec_helper(
        spec,
        theirs,
        stdio,
        init_end.as_ref().map(AsRawFd::as_raw_fd),
    )?;
    // Only init may hold its end once the helper has passed it on: the
    // end of file says init is gone.
    let init_fd = init_end.as_ref().map(AsRawFd::as_raw_fd);
    drop(init_end);
    let result = converse(&ours, spec, streams, init_fd, fill);
    drop(ours);
    let exit = helper.wait();
    match result {
        Ok((Some(done), filled)) => filled.and(done),
        Ok((None, _)) => Err(Error::Helper(format!(
            "exited without a report ({})",
            exit.map_or_else(|e| e.to_string(), |s| s.to_string())
        ))),
        Err(e) => Err(Error::Helper(format!("protocol: {e}"))),
    }
}

/// Whether this process has one thread: only that thread could start
/// another, and it is here.
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|tasks| tasks.count() == 1)
}

fn exec_helper(
    spec: &Spec,
    theirs: UnixStream,
    stdio: [StdioFd; 3],
    init_end: Option<RawFd>,
) -> Result<std::process::Child> {
    let mut keep: Vec<RawFd> = spec.fds.clone();
    keep.push(theirs.as_raw_fd());
    keep.extend(init_end);
    keep.extend(stdio.iter().filter_map(StdioFd::log_fd));
    // Log files stay open here until the helper has inherited them.
    let mut logs = Vec::new();
    let [stdin, stdout, stderr] = stdio.map(|s| match s {
        StdioFd::Fd(fd) => fd.into(),
        StdioFd::Log(fd) => {
            logs.push(fd);
            std::process::Stdio::inherit()
        }
        StdioFd::Inherit | StdioFd::SameLog(_) => std::process::Stdio::inherit(),
    });
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("imgrep-sandbox")
        .arg(HELPER_MARKER)
        .arg(theirs.as_raw_fd().to_string())
        .env_clear()
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr);
    // SAFETY: the closure only calls fcntl(2), which is async-signal-safe, on
    // descriptors that are open in the parent.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &keep {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| Error::Helper(format!("cannot start /proc/self/exe: {e}")))
}

/// Send the spec to the exec'd helper, lay out the in-memory directories
/// init hands over (`init_fd`: the number of init's end in the helper),
/// and wait for the report. Returns it, and how the laying out went.
fn converse(
    sock: &UnixStream,
    spec: &Spec,
    streams: [Stream; 3],
    init_fd: Option<RawFd>,
    fill: Option<(OwnedFd, &mut crate::Fill)>,
) -> std::io::Result<(Option<Result<Report>>, Result<()>)> {
    send(sock, &(spec, streams, init_fd))?;
    let filled = match fill {
        Some((ours, f)) => crate::fill::serve(ours, spec, f),
        None => Ok(()),
    };
    let done = recv::<HelperMsg>(BufReader::new(sock))?.map(|HelperMsg::Done(done)| done);
    Ok((done, filled))
}

/// A standard stream of the command as the caller opened it.
enum StdioFd {
    /// The caller's own.
    Inherit,
    /// Given to the command as it is (/dev/null, an input file).
    Fd(OwnedFd),
    /// A log file: the command gets a pipe, the helper writes what comes
    /// out of it here. The command never holds the file itself, so it can
    /// neither chmod it (`chmod 4755 /proc/self/fd/1`) nor seek in it.
    Log(OwnedFd),
    /// The same log file as stdout.
    SameLog(RawFd),
}

impl StdioFd {
    fn stream(&self) -> Stream {
        match self {
            StdioFd::Inherit => Stream::Keep,
            StdioFd::Fd(fd) => Stream::Direct(fd.as_raw_fd()),
            StdioFd::Log(fd) => Stream::Log(fd.as_raw_fd()),
            StdioFd::SameLog(fd) => Stream::Log(*fd),
        }
    }

    fn log_fd(&self) -> Option<RawFd> {
        match self {
            StdioFd::Log(fd) => Some(fd.as_raw_fd()),
            _ => None,
        }
    }
}

fn open_stdio(stdio: &Stdio, write: bool) -> Result<StdioFd> {
    let open = |path: &Path| {
        if write {
            OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o644)
                .open(path)
        } else {
            File::open(path)
        }
    };
    Ok(match stdio {
        Stdio::Inherit => StdioFd::Inherit,
        Stdio::Null => StdioFd::Fd(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map_err(|e| Error::path("standard stream", Path::new("/dev/null"), e))?
                .into(),
        ),
        Stdio::File(path) => {
            let file = open(path).map_err(|e| Error::path("output file", path, e))?;
            if write {
                StdioFd::Log(file.into())
            } else {
                StdioFd::Fd(file.into())
            }
        }
    })
}

/// Reject what can be rejected without starting anything, naming the field.
fn validate(spec: &Spec) -> Result<()> {
    let argvs = std::iter::once(&spec.argv).chain(spec.then.iter().map(|s| &s.argv));
    for argv in argvs {
        if argv.is_empty() || argv[0].is_empty() {
            return Err(Error::InvalidSpec("no command given".into()));
        }
        if argv.iter().any(|a| a.contains('\0')) {
            return Err(Error::InvalidSpec("argv contains a NUL byte".into()));
        }
    }
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(Error::InvalidSpec(format!(
                "environment variable {k:?}: name must be non-empty without '=' or NUL"
            )));
        }
    }
    if !spec.scratch.is_absolute() {
        return Err(Error::path(
            "scratch directory",
            &spec.scratch,
            "must be absolute",
        ));
    }
    for lower in &spec.lowers {
        host_dir("root directory", lower)?;
        let s = lower.to_string_lossy();
        if s.contains(':') || s.contains(',') {
            return Err(Error::path(
                "root directory",
                lower,
                "overlayfs cannot take a path containing ':' or ','",
            ));
        }
    }
    for bind in &spec.binds {
        if !bind.src.is_absolute() {
            return Err(Error::path("bind source", &bind.src, "must be absolute"));
        }
        std::fs::metadata(&bind.src).map_err(|e| Error::path("bind source", &bind.src, e))?;
        inside_path("bind destination", &bind.dst)?;
    }
    for o in &spec.overlays {
        for dir in o.lowers.iter().chain([&o.upper, &o.work]) {
            host_dir("overlay directory", dir)?;
            let s = dir.to_string_lossy();
            if s.contains(':') || s.contains(',') {
                return Err(Error::path(
                    "overlay directory",
                    dir,
                    "overlayfs cannot take a path containing ':' or ','",
                ));
            }
        }
        inside_path("overlay mount point", &o.dst)?;
    }
    for m in &spec.memory_dirs {
        for src in &m.sources {
            host_dir("in-memory directory source", src)?;
        }
        inside_path("in-memory directory", &m.dst)?;
        if m.size == Some(0) {
            return Err(Error::path(
                "in-memory directory",
                &m.dst,
                "size must be positive",
            ));
        }
        if let Some(save) = &m.save {
            if !save.is_absolute() {
                return Err(Error::path("save directory", save, "must be absolute"));
            }
            if save.symlink_metadata().is_ok() {
                return Err(Error::path("save directory", save, "exists already"));
            }
        }
    }
    for t in &spec.tmpfs {
        inside_path("tmpfs mount point", t)?;
    }
    inside_path("working directory", &spec.cwd)?;
    for step in &spec.then {
        inside_path("working directory", &step.cwd)?;
    }
    if spec.hostname.is_empty() || spec.hostname.len() > 64 || spec.hostname.contains('\0') {
        return Err(Error::InvalidSpec(format!(
            "hostname {:?}: must be 1 to 64 bytes",
            spec.hostname
        )));
    }
    if spec.umask > 0o777 {
        return Err(Error::InvalidSpec(format!(
            "umask {:o}: must be at most 777",
            spec.umask
        )));
    }
    let l = &spec.limits;
    if l.memory == Some(0) || l.pids == Some(0) {
        return Err(Error::InvalidSpec(
            "memory and pids limits must be positive".into(),
        ));
    }
    if let Some(c) = l.cpus {
        if !(c.is_finite() && c >= 0.01) {
            return Err(Error::InvalidSpec(format!(
                "cpu limit {c}: must be at least 0.01"
            )));
        }
    }
    if spec.timeout.is_some_and(|t| t.is_zero()) {
        return Err(Error::InvalidSpec("timeout must be positive".into()));
    }
    let inherited = [&spec.stdin, &spec.stdout, &spec.stderr]
        .iter()
        .all(|s| **s == Stdio::Inherit);
    if spec.terminal && !inherited {
        return Err(Error::InvalidSpec(
            "a terminal replaces stdin, stdout and stderr: they must be inherited".into(),
        ));
    }
    Ok(())
}

fn host_dir(what: &str, path: &Path) -> Result<()> {
    if !path.is_absolute() {
        return Err(Error::path(what, path, "must be absolute"));
    }
    let meta = std::fs::metadata(path).map_err(|e| Error::path(what, path, e))?;
    if !meta.is_dir() {
        return Err(Error::path(what, path, "not a directory"));
    }
    Ok(())
}

/// A path inside the sandbox: absolute, without `.` or `..`.
fn inside_path(what: &str, path: &Path) -> Result<()> {
    let ok = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(Error::path(
            what,
            path,
            "must be absolute, without '.' or '..'",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Bind;

    fn spec() -> Spec {
        Spec::new("/tmp/scratch", vec!["true".into()])
    }

    fn rejected(s: &Spec) -> String {
        validate(s).unwrap_err().to_string()
    }

    #[test]
    fn rejects_what_cannot_work_naming_it() {
        assert!(validate(&spec()).is_ok());
        let mut s = spec();
        s.argv.clear();
        assert!(rejected(&s).contains("no command"));
        let mut s = spec();
        s.scratch = "relative".into();
        assert!(rejected(&s).contains("scratch directory relative"));
        let mut s = spec();
        s.lowers.push("/nonexistent/layer".into());
        assert!(rejected(&s).contains("root directory /nonexistent/layer"));
        let mut s = spec();
        s.binds.push(Bind {
            src: "/".into(),
            dst: "/a/../b".into(),
            readonly: true,
        });
        assert!(rejected(&s).contains("bind destination /a/../b"));
        let mut s = spec();
        s.env.push(("A=B".into(), "c".into()));
        assert!(rejected(&s).contains("\"A=B\""));
        let mut s = spec();
        s.cwd = "build".into();
        assert!(rejected(&s).contains("working directory build"));
        let with_memory_dir = |sources: &[&str], size, save: Option<&str>| {
            let mut s = spec();
            s.memory_dirs.push(crate::spec::MemoryDir {
                sources: sources.iter().map(std::path::PathBuf::from).collect(),
                dst: "/build".into(),
                size,
                save: save.map(std::path::PathBuf::from),
                fill: false,
            });
            s
        };
        let s = with_memory_dir(&["/nonexistent/tree"], None, None);
        assert!(rejected(&s).contains("in-memory directory source /nonexistent/tree"));
        let s = with_memory_dir(&[], Some(0), None);
        assert!(rejected(&s).contains("size must be positive"));
        let s = with_memory_dir(&[], None, Some("/"));
        assert!(rejected(&s).contains("save directory /: exists already"));
        let mut s = spec();
        s.limits.pids = Some(0);
        assert!(rejected(&s).contains("pids"));
        let mut s = spec();
        s.limits.cpus = Some(f64::NAN);
        assert!(rejected(&s).contains("cpu limit"));
        let mut s = spec();
        s.terminal = true;
        assert!(validate(&s).is_ok());
        s.stdout = Stdio::Null;
        assert!(rejected(&s).contains("a terminal replaces stdin, stdout and stderr"));
    }
}
