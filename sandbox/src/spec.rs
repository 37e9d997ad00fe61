//! What one sandboxed run is made of ([`Spec`]) and what it reports ([`Report`]).
//! A `Spec` travels to the helper process as JSON, so every field is plain data.

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hostids::HostIds;
use crate::idmap::Maps;
pub use crate::idmap::{IdMap, IdRange};

/// One process tree to run. Paths outside the sandbox are host paths; `dst`,
/// `cwd` and `tmpfs` are paths inside it. See docs/sandbox.md.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    /// Read-only lower directories forming the root, bottom first: a later
    /// directory wins over an earlier one, as layers do in an OCI image. Never
    /// written to. Empty: the root starts empty.
    pub lowers: Vec<PathBuf>,
    /// Writable host directory owned by the run: the root's writable layer lives
    /// in `scratch/upper` (plus `scratch/work` and the mount point `scratch/root`).
    /// Created if missing. The caller deletes it afterwards.
    pub scratch: PathBuf,
    /// Mount a tmpfs on `scratch` inside the sandbox's mount namespace and keep
    /// the writable layer there: nothing the run writes to its root reaches
    /// the disk or outlives it, and starting costs no file system writes. A
    /// missing `scratch` is then created and removed again by the helper.
    pub scratch_in_memory: bool,
    /// How the root is assembled from `lowers` and `scratch`.
    pub rootfs: RootFs,
    /// Host paths mounted inside, in order, after the root and `overlays`.
    pub binds: Vec<Bind>,
    /// Writable overlays mounted inside, in order, after the root is
    /// assembled: read-only host trees presented writable without copying.
    #[serde(default)]
    pub overlays: Vec<Overlay>,
    /// In-memory directories mounted inside, in order, after `overlays`:
    /// a tmpfs holding a copy of host trees and what the caller lays out
    /// in it, so the command's file I/O never goes through overlayfs or
    /// touches the disk.
    #[serde(default)]
    pub memory_dirs: Vec<MemoryDir>,
    /// Fresh, empty tmpfs mounts (mode 1777) inside, e.g. `/tmp`.
    pub tmpfs: Vec<PathBuf>,
    /// The size of each of `tmpfs` and of the in-memory scratch, in bytes;
    /// `None`: [`Spec::DEFAULT_TMPFS_SIZE`], or half the memory limit if
    /// that is smaller. /dev/shm gets [`Spec::SHM_SIZE`] or this if smaller.
    #[serde(default)]
    pub tmpfs_size: Option<u64>,
    /// argv; `argv[0]` without a `/` is looked up in `PATH` of `env` inside the root.
    pub argv: Vec<String>,
    /// The complete environment of the command, in order; nothing is inherited.
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    pub cwd: PathBuf,
    /// Further commands, run in order after `argv` exits 0, in the same
    /// namespaces, root and mounts: a chain of build steps pays for one
    /// sandbox instead of one each. The run stops at the first command that
    /// does not exit 0; processes a command leaves behind are killed before
    /// the next starts. `timeout` covers the whole run.
    pub then: Vec<Step>,
    pub hostname: String,
    pub umask: u32,
    pub limits: Limits,
    /// Refuse to run (error) unless every requested limit is enforced by a cgroup.
    pub strict_limits: bool,
    /// Wall-clock limit; the whole tree is killed when it expires.
    pub timeout: Option<Duration>,
    pub idmap: IdMap,
    /// The host ids [`IdMap::Caller`] and [`IdMap::Subordinate`] map onto
    /// when the caller is real root: root inside is never root outside.
    /// Unused by unprivileged callers. See [`HostIds`].
    #[serde(default = "default_root_ids")]
    pub root_ids: HostIds,
    /// After the run (however it ended), make everything under the writable
    /// bind sources and `scratch` owned by the caller and u+rwX. Only needed
    /// when the mapping gives the tree more ids than the caller's own.
    pub reclaim: bool,
    /// Where the command's stdio goes. Opened by the caller's process.
    #[serde(skip)]
    pub stdin: Stdio,
    #[serde(skip)]
    pub stdout: Stdio,
    #[serde(skip)]
    pub stderr: Stdio,
    /// Give the commands a terminal of the sandbox's own instead of the
    /// caller's stdio: a pseudo-terminal of its devpts (`/dev/pts/0`) on
    /// 0-2 and as their controlling terminal, so an interactive shell has
    /// job control. The helper relays the caller's stdin to it and its
    /// output to the caller's stdout; when stdin is a terminal, it is put in
    /// raw mode for the run (and back afterwards, however the run ends) and
    /// its size is the pty's, also when it changes (SIGWINCH). The caller's
    /// terminal itself never enters the sandbox. Needs `stdin`, `stdout`
    /// and `stderr` inherited (the pty replaces them: stderr comes out on
    /// stdout). See docs/sandbox.md.
    #[serde(default)]
    pub terminal: bool,
    /// Open descriptors of the caller passed to the command as fds 3, 4, ...
    /// in this order. Every other descriptor is closed. (The helper inherits
    /// them under the same numbers.)
    pub fds: Vec<RawFd>,
    /// Groups of system calls the default seccomp filter denies that this
    /// run may use after all (docs/sandbox.md). Empty: the default filter.
    #[serde(default)]
    pub seccomp_allow: Vec<SeccompGroup>,
}

impl Spec {
    /// A spec with the documented defaults: no lowers, no binds, hostname
    /// `imgrep`, umask 022, cwd `/`, an empty environment, no limits, no
    /// timeout, the caller mapped to root, stdio inherited, no terminal.
    pub fn new(scratch: impl Into<PathBuf>, argv: Vec<String>) -> Spec {
        Spec {
            lowers: Vec::new(),
            scratch: scratch.into(),
            scratch_in_memory: false,
            rootfs: RootFs::Auto,
            binds: Vec::new(),
            overlays: Vec::new(),
            memory_dirs: Vec::new(),
            tmpfs: Vec::new(),
            tmpfs_size: None,
            argv,
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            then: Vec::new(),
            hostname: "imgrep".to_owned(),
            umask: 0o022,
            limits: Limits::default(),
            strict_limits: false,
            timeout: None,
            idmap: IdMap::Caller,
            root_ids: HostIds::DEFAULT,
            reclaim: false,
            stdin: Stdio::Inherit,
            stdout: Stdio::Inherit,
            stderr: Stdio::Inherit,
            terminal: false,
            fds: Vec::new(),
            seccomp_allow: Vec::new(),
        }
    }
}

/// A group of system calls the default seccomp filter denies and a run may
/// allow ([`Spec::seccomp_allow`]). What is never allowed (kernel modules,
/// kexec, eBPF, AF_VSOCK and other socket families, TIOCSTI, ...) has no
/// group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SeccompGroup {
    /// Nested user namespaces (clone/unshare with CLONE_NEWUSER) and the
    /// mount system calls a nested sandbox makes in them.
    Userns,
    /// io_uring_setup, io_uring_enter, io_uring_register.
    IoUring,
    /// perf_event_open.
    Perf,
    /// userfaultfd.
    Userfaultfd,
    /// keyctl, add_key, request_key (on the run's own session keyring).
    Keyring,
    /// Every personality(2) value, e.g. ADDR_NO_RANDOMIZE (`setarch -R`).
    Personality,
}

impl SeccompGroup {
    pub const ALL: [SeccompGroup; 6] = [
        SeccompGroup::Userns,
        SeccompGroup::IoUring,
        SeccompGroup::Perf,
        SeccompGroup::Userfaultfd,
        SeccompGroup::Keyring,
        SeccompGroup::Personality,
    ];

    /// The name recipes and `imgrep run --seccomp-allow` use.
    pub fn name(self) -> &'static str {
        match self {
            SeccompGroup::Userns => "userns",
            SeccompGroup::IoUring => "io_uring",
            SeccompGroup::Perf => "perf",
            SeccompGroup::Userfaultfd => "userfaultfd",
            SeccompGroup::Keyring => "keyring",
            SeccompGroup::Personality => "personality",
        }
    }

    pub fn from_name(name: &str) -> Option<SeccompGroup> {
        SeccompGroup::ALL.into_iter().find(|g| g.name() == name)
    }
}

impl Spec {
    /// The default size of each tmpfs a run asks for (`tmpfs`, the
    /// in-memory scratch): not the kernel's half of the RAM, which several
    /// mounts could each fill.
    pub const DEFAULT_TMPFS_SIZE: u64 = 1 << 30;
    /// The size of /dev/shm, as Docker and podman give it.
    pub const SHM_SIZE: u64 = 64 << 20;

    /// The size `tmpfs` entries and the in-memory scratch are mounted with.
    pub fn tmpfs_size(&self) -> u64 {
        self.tmpfs_size.unwrap_or_else(|| {
            let half = self.limits.memory.map_or(u64::MAX, |m| (m / 2).max(1));
            Spec::DEFAULT_TMPFS_SIZE.min(half)
        })
    }
}

fn default_root_ids() -> HostIds {
    HostIds::DEFAULT
}

impl Spec {
    /// The host uid and gid that stand for root inside under this spec's
    /// mapping: the owner that writable trees handed to the run (bind
    /// sources, overlay uppers and work directories) and trees read through
    /// overlayfs (lowers, which it copies up with their owner) must have.
    /// For an unprivileged caller with [`IdMap::Caller`]: the caller.
    pub fn host_root(&self) -> Result<(u32, u32)> {
        let maps = Maps::resolve(&self.idmap, &self.root_ids)?;
        let outside = |ranges: &[IdRange]| {
            ranges
                .iter()
                .find(|r| r.inside == 0)
                .map(|r| r.outside)
                .ok_or_else(|| Error::InvalidSpec("the id map does not map root inside".into()))
        };
        Ok((outside(&maps.uid)?, outside(&maps.gid)?))
    }

    /// Give host trees this spec names to [`Spec::host_root`], each unless
    /// its top already has that owner. As real root, inside root is an
    /// unprivileged range, which must own the directories the run writes
    /// and the trees overlayfs copies up from. Only for trees that are the
    /// caller's to give (imgrep's store, directories the user bound
    /// writable): it changes owners on the host. chown(2) drops the setuid
    /// and setgid bits and file capabilities of what it changes.
    pub fn give_trees(&self, which: Trees) -> Result<()> {
        let (uid, gid) = self.host_root()?;
        let writable = self.binds.iter().filter(|b| !b.readonly).map(|b| &b.src);
        let trees: Vec<&PathBuf> = match which {
            Trees::WritableBinds => writable.collect(),
            Trees::All => self
                .lowers
                .iter()
                .chain(
                    self.overlays
                        .iter()
                        .flat_map(|o| o.lowers.iter().chain([&o.upper, &o.work])),
                )
                .chain(self.binds.iter().map(|b| &b.src))
                .chain(self.memory_dirs.iter().flat_map(|m| &m.sources))
                .chain((!self.scratch_in_memory).then_some(&self.scratch))
                .collect(),
        };
        for tree in trees.into_iter().filter(|t| t.exists()) {
            crate::copy::own_tree(tree, uid, gid)
                .map_err(|e| Error::path("giving to the sandbox's ids", tree, e))?;
        }
        Ok(())
    }
}

/// Which trees [`Spec::give_trees`] gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trees {
    /// Every host tree of the spec.
    All,
    /// The sources of writable binds only.
    WritableBinds,
}

/// A command of [`Spec::then`]: its argv (looked up like [`Spec::argv`]) and
/// working directory; the environment is the spec's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub argv: Vec<String>,
    pub cwd: PathBuf,
}

/// How the root file system is assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootFs {
    /// overlayfs when the kernel allows it in a user namespace, else [`RootFs::Copy`].
    Auto,
    /// overlayfs or an error.
    Overlay,
    /// Copy every lower, in order, into `scratch/upper` and use that directory.
    Copy,
}

/// A host path mounted inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    pub src: PathBuf,
    pub dst: PathBuf,
    pub readonly: bool,
}

/// An overlay mounted at `dst` inside: `lowers` (host directories, bottom
/// first, never written to) under the writable host directory `upper`, which
/// wins over them and receives every write. `work` is overlayfs' work
/// directory: empty, on the same file system as `upper`. Where overlayfs is
/// unavailable and [`Spec::rootfs`] allows it, what `upper` lacks is copied
/// into it from the lowers instead, so the result is the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overlay {
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub dst: PathBuf,
}

/// A tmpfs mounted at `dst` inside, filled before the command starts with a
/// copy of `sources` (host directories, bottom first): directories merge, a
/// later source's file replaces an earlier one's, as layers do. Modes,
/// mtimes and owners (where mapped) are kept; hard links become separate
/// files. Nothing written there reaches the host, except through `save`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryDir {
    pub sources: Vec<PathBuf>,
    pub dst: PathBuf,
    /// Size limit in bytes; `None`: [`MemoryDir::DEFAULT_SHARE`] of the
    /// memory limit, or without one the kernel's tmpfs default (half the
    /// RAM). Its pages count against the memory limit.
    pub size: Option<u64>,
    /// When the run does not succeed, the directory's contents are copied
    /// to this host directory (created by the run; it must not exist), so
    /// the failure can be examined after the sandbox is gone. It exists
    /// afterwards only if the copy is complete (else a warning says why).
    pub save: Option<PathBuf>,
    /// The caller lays out what the directory holds (after `sources` are
    /// copied): [`crate::run_filling`] hands the mounted tmpfs to its
    /// callback, which writes beneath it with inside root's ids, before
    /// any command starts. A tree the caller would otherwise write to the
    /// host's disk, only to have it copied in, is written once.
    #[serde(default)]
    pub fill: bool,
}

impl MemoryDir {
    /// The share of [`Limits::memory`] an in-memory directory gets unless
    /// sized explicitly: its pages are charged to the run's memory cgroup,
    /// so the whole limit would let the OOM killer strike before the file
    /// system reports that it is full.
    pub const DEFAULT_SHARE: u64 = 2;

    /// The size the tmpfs is mounted with under `limits`; `None`: the
    /// kernel's default.
    pub fn size_under(&self, limits: &Limits) -> Option<u64> {
        self.size
            .or(limits.memory.map(|m| (m / Self::DEFAULT_SHARE).max(1)))
    }

    /// [`MemoryDir::size_under`], or the kernel's default made explicit:
    /// half the RAM. Also the most a failed run's save may write.
    pub(crate) fn mounted_size(&self, limits: &Limits) -> u64 {
        self.size_under(limits).unwrap_or_else(|| {
            // SAFETY: sysinfo fills a plain struct.
            let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
            if unsafe { libc::sysinfo(&mut info) } != 0 {
                return u64::MAX;
            }
            (info.totalram as u64).saturating_mul(info.mem_unit as u64) / 2
        })
    }
}

/// Resource limits. `None`: unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory (and memory+swap) in bytes.
    pub memory: Option<u64>,
    /// Maximum number of processes (tasks) in the tree.
    pub pids: Option<u64>,
    /// CPU quota in CPUs (1.5 = one and a half cores' worth of time).
    pub cpus: Option<f64>,
}

impl Limits {
    pub fn any(&self) -> bool {
        self.memory.is_some() || self.pids.is_some() || self.cpus.is_some()
    }
}

/// Where a standard stream of the command goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Stdio {
    #[default]
    Inherit,
    /// /dev/null.
    Null,
    /// A host file, created if missing and appended to, so stdout and stderr
    /// may share one log. For stdout and stderr the command gets a pipe and
    /// the helper appends what comes out of it: the command never holds the
    /// file, so it cannot chmod, seek in or truncate it.
    File(PathBuf),
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// It exited with this code.
    Exited(i32),
    /// It was killed by this signal (e.g. 9 from the OOM killer).
    Signaled(i32),
    /// The timeout expired; the tree was killed.
    TimedOut,
    /// The helper received this signal (SIGINT, SIGTERM, SIGHUP) or its
    /// caller went away; the tree was killed.
    Interrupted(i32),
    /// When the command ended, this entry of [`Spec::memory_dirs`] had no
    /// space left: whatever the command's exit status, its writes may be
    /// incomplete, so the run stopped there.
    Full(usize),
}

impl Status {
    pub fn success(&self) -> bool {
        *self == Status::Exited(0)
    }
}

/// Which mechanism enforced the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Enforcement {
    /// No limit was asked for.
    NotRequested,
    /// cgroup v2 (unified).
    CgroupV2,
    /// cgroup v1 controllers (legacy or hybrid layout).
    CgroupV1,
    /// No cgroup could be created: per-process rlimits (RLIMIT_NPROC for pids,
    /// RLIMIT_AS for memory), no CPU quota.
    Rlimits,
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// How the last command started ended (or the run, if it was killed).
    pub status: Status,
    /// Which command that was: 0 for `argv`, k for `then[k - 1]`.
    pub command: usize,
    pub stats: Stats,
    pub enforcement: Enforcement,
    /// Human-readable warnings (e.g. limits not enforced, a failed save),
    /// for the caller to show: the library prints nothing itself.
    pub warnings: Vec<String>,
}

/// Cheap figures about a run.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Stats {
    /// From clone to the end of the tree.
    pub wall: Duration,
    /// CPU time of every reaped process of the tree.
    pub user: Duration,
    pub system: Duration,
    /// Largest resident set of one process, bytes.
    pub max_rss: u64,
    /// Peak memory of the whole tree from the memory cgroup, when one was used.
    pub memory_peak: Option<u64>,
    /// Processes the OOM killer killed under the memory limit (memory cgroup only).
    pub oom_kills: Option<u64>,
}
