//! `imgrep run`: one command in the sandbox, for people and tests.
//! Exit codes (docs/sandbox.md): the command's own; 128+N when it was killed
//! by signal N; 124 when the timeout expired; 2 for bad input.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use sandbox::{Bind, Limits, MemoryDir, SeccompGroup, Spec, Status};

use super::{args, Global, Outcome};

/// The environment of `imgrep run` unless --env adds to or overrides it.
const DEFAULT_ENV: [(&str, &str); 4] = [
    (
        "PATH",
        "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
    ),
    ("HOME", "/"),
    ("TZ", "UTC"),
    ("LC_ALL", "C"),
];

/// Run a command in a fresh sandbox: new user, mount, pid, network, uts, ipc
/// and cgroup namespaces, a root made of read-only directories plus a
/// writable scratch layer, limits and a timeout.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bottom read-only directory of the root.
    #[arg(long, value_name = "DIR", required_unless_present = "image")]
    root: Option<PathBuf>,
    /// An image of an OCI layout as the root instead: its layers, bottom
    /// first, unpacked (digests verified) into the store's layer cache,
    /// e.g. `--image out:gcc:14.2.0-bundle`. --ro stacks more above.
    #[arg(long, value_name = "LAYOUT:NAME:VERSION", conflicts_with = "root")]
    image: Option<String>,
    /// Further read-only directories stacked on the root, later ones on top.
    #[arg(long = "ro", value_name = "DIR")]
    ro: Vec<PathBuf>,
    /// Mount host path SRC at DST inside; `:ro` makes it read-only.
    #[arg(long = "bind", value_name = "SRC:DST[:ro]")]
    binds: Vec<String>,
    /// Fresh tmpfs at DIR inside.
    #[arg(long, value_name = "DIR")]
    tmpfs: Vec<PathBuf>,
    /// Size of each --tmpfs and of the in-memory scratch (K, M, G, T
    /// suffixes); default 1G, or half the --memory limit if smaller.
    #[arg(long, value_name = "SIZE", value_parser = args::parse_size)]
    tmpfs_size: Option<u64>,
    /// A tmpfs at DST inside holding a copy of host directory SRC; several
    /// SRC for one DST merge in order, later ones winning. Sized half the
    /// --memory limit, else the kernel's default (half the RAM).
    #[arg(long = "copy", value_name = "SRC:DST")]
    copies: Vec<String>,
    /// How the root is assembled: overlayfs, a copy of the layers, or
    /// overlayfs falling back to a copy.
    #[arg(long, value_enum, default_value_t = RootFsArg::Auto)]
    rootfs: RootFsArg,
    /// Keep the root's writable layer in DIR/upper (on disk, kept afterwards);
    /// default: a tmpfs that disappears with the sandbox.
    #[arg(long, value_name = "DIR")]
    scratch: Option<PathBuf>,
    /// Memory limit: bytes, or with a K, M, G suffix (powers of 1024).
    #[arg(long, allow_hyphen_values = true, value_name = "SIZE", value_parser = args::parse_size)]
    memory: Option<u64>,
    /// Maximum number of processes.
    #[arg(long, allow_hyphen_values = true, value_name = "N", value_parser = args::parse_count)]
    pids: Option<u64>,
    /// CPU quota in CPUs, e.g. 0.5 or 2.
    #[arg(long, allow_hyphen_values = true, value_name = "CPUS", value_parser = args::parse_cpus)]
    cpus: Option<f64>,
    /// Kill the whole tree after this long: seconds, or with ms, s, m, h.
    #[arg(long, allow_hyphen_values = true, value_name = "DURATION", value_parser = args::parse_duration)]
    timeout: Option<Duration>,
    /// Refuse to run unless a cgroup enforces every limit.
    #[arg(long)]
    strict_limits: bool,
    /// Hostname inside.
    #[arg(long, default_value = "imgrep")]
    hostname: String,
    /// Set (or override) a variable of the otherwise fixed environment.
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Working directory inside.
    #[arg(long, default_value = "/")]
    cwd: PathBuf,
    /// Pass imgrep's open descriptor N to the command, as 3, 4, ... in order.
    #[arg(long = "fd", value_name = "N")]
    fds: Vec<i32>,
    /// Map ids 1..65536 inside to the caller's /etc/subuid and /etc/subgid
    /// range (as root: ids 0..COUNT onto the whole --root-ids range).
    #[arg(long)]
    subids: bool,
    /// Allow a group of system calls the default seccomp filter denies:
    /// userns (nested user namespaces and mounting in them), io_uring,
    /// perf, userfaultfd, keyring, personality; `relaxed` allows them all.
    /// What no group covers (kernel modules, kexec, eBPF, socket families
    /// other than unix, inet, inet6 and netlink, TIOCSTI) stays denied.
    #[arg(long = "seccomp-allow", value_name = "GROUP", value_parser = parse_seccomp_group)]
    seccomp_allow: Vec<Vec<SeccompGroup>>,
    /// Give the command a terminal of the sandbox's own (a pty as its
    /// controlling terminal, for an interactive shell with job control),
    /// relayed to imgrep's terminal in raw mode, window size included.
    /// Only when stdin is a terminal; stderr then comes out on stdout.
    /// imgrep's TERM is passed on unless --env sets one.
    #[arg(short = 't', long)]
    tty: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RootFsArg {
    Auto,
    Overlay,
    Copy,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<Outcome> {
    let limits = Limits {
        memory: args.memory,
        pids: args.pids,
        cpus: args.cpus,
    };
    let timeout = args.timeout;
    let binds = args
        .binds
        .iter()
        .map(|b| parse_bind(b))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut env: Vec<(String, String)> = DEFAULT_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for kv in &args.env {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--env {kv:?}: expected NAME=VALUE");
        };
        env.retain(|(old, _)| old != k);
        env.push((k.to_owned(), v.to_owned()));
    }
    let absolute = |p: &PathBuf| std::path::absolute(p).with_context(|| format!("{}", p.display()));
    let mut lowers = match (&args.root, &args.image) {
        (Some(root), _) => vec![absolute(root)?],
        (None, Some(image)) => image_layers(global, image)?,
        (None, None) => unreachable!("clap requires --root or --image"),
    };
    for d in &args.ro {
        lowers.push(absolute(d)?);
    }
    // Without --scratch, the in-memory scratch is mounted over /tmp in the
    // sandbox's own mount namespace (as bwrap mounts its base there): the
    // host's /tmp is neither seen nor written, and no directory is made
    // and removed per run. Where /tmp is missing, the helper creates it for
    // the run and removes it again.
    let scratch = match &args.scratch {
        Some(s) => absolute(s)?,
        None => PathBuf::from("/tmp"),
    };
    let mut spec = Spec::new(scratch, args.command);
    spec.scratch_in_memory = args.scratch.is_none();
    spec.lowers = lowers;
    spec.binds = binds;
    spec.tmpfs = args.tmpfs;
    spec.tmpfs_size = args.tmpfs_size;
    for c in &args.copies {
        let (src, dst) = parse_copy(c)?;
        match spec.memory_dirs.iter_mut().find(|m| m.dst == dst) {
            Some(m) => m.sources.push(src),
            None => spec.memory_dirs.push(MemoryDir {
                sources: vec![src],
                dst,
                size: None,
                save: None,
                fill: false,
            }),
        }
    }
    spec.rootfs = match args.rootfs {
        RootFsArg::Auto => sandbox::RootFs::Auto,
        RootFsArg::Overlay => sandbox::RootFs::Overlay,
        RootFsArg::Copy => sandbox::RootFs::Copy,
    };
    spec.env = env;
    spec.cwd = args.cwd;
    spec.hostname = args.hostname;
    spec.limits = limits;
    spec.strict_limits = args.strict_limits;
    spec.timeout = timeout;
    for &fd in &args.fds {
        // SAFETY: fstat fills a plain struct about a descriptor number.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut st) } == -1 {
            bail!("--fd {fd}: not an open file descriptor of imgrep");
        }
        // A directory descriptor is a way out of the root: `..` from
        // /proc/self/fd/N walks the host's tree above it.
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            bail!("--fd {fd}: a directory; pass a directory with --bind instead");
        }
    }
    spec.fds = args.fds;
    let mut allow: Vec<SeccompGroup> = args.seccomp_allow.into_iter().flatten().collect();
    allow.sort();
    allow.dedup();
    spec.seccomp_allow = allow;
    // As `ssh -t` does: without a terminal to relay, run as without -t.
    let stdin_terminal = std::io::stdin().is_terminal();
    if args.tty && !stdin_terminal {
        crate::warn::once("-t: stdin is not a terminal; the command runs without one");
    }
    spec.terminal = args.tty && stdin_terminal;
    pass_term(&mut spec);
    spec.root_ids = crate::hostids::root_ids();
    if args.subids {
        spec.idmap = sandbox::IdMap::Subordinate;
        spec.reclaim = true;
    }
    if nix::unistd::geteuid().is_root() {
        // The command runs as an unprivileged range (docs/sandbox.md): it
        // gets the writable binds for the run, and root gets them back.
        spec.give_trees(sandbox::Trees::WritableBinds)?;
        spec.reclaim = true;
    }
    let report = sandbox::run(&spec)?;
    report.warnings.iter().for_each(|w| crate::warn::once(w));
    Ok(match report.status {
        Status::Exited(code) => Outcome::Code((code & 0xff) as u8),
        Status::Signaled(sig) => {
            let oom = if report.stats.oom_kills.unwrap_or(0) > 0 {
                ", out of memory under the --memory limit"
            } else {
                ""
            };
            eprintln!(
                "imgrep: command killed by signal {sig} ({}){oom}",
                signal_name(sig)
            );
            Outcome::Code((128 + sig) as u8)
        }
        Status::TimedOut => {
            eprintln!(
                "imgrep: timed out after {:?}; the process tree was killed",
                timeout.unwrap_or_default()
            );
            Outcome::Code(124)
        }
        Status::Interrupted(sig) => {
            eprintln!(
                "imgrep: interrupted by signal {sig} ({}); the process tree was killed",
                signal_name(sig)
            );
            Outcome::Code((128 + sig) as u8)
        }
        Status::Full(i) => {
            let m = &spec.memory_dirs[i];
            let size = m.size_under(&spec.limits).map_or_else(
                || "the kernel's default size".to_owned(),
                |n| format!("{n} bytes"),
            );
            eprintln!(
                "imgrep: the in-memory directory {} ({size}) is full: the command's writes may be incomplete",
                m.dst.display()
            );
            Outcome::Code(1)
        }
    })
}

/// With a terminal, the command learns what displays its output from
/// imgrep's own TERM, as ssh passes it on, unless its environment sets one.
pub(super) fn pass_term(spec: &mut Spec) {
    if !spec.terminal || spec.env.iter().any(|(k, _)| k == "TERM") {
        return;
    }
    if let Some(term) = std::env::var("TERM").ok().filter(|t| !t.is_empty()) {
        spec.env.push(("TERM".to_owned(), term));
    }
}

fn signal_name(sig: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(sig).map_or("unknown", |s| s.as_str())
}

/// One `--seccomp-allow` value: a group name or `relaxed` (all groups).
fn parse_seccomp_group(s: &str) -> Result<Vec<SeccompGroup>, String> {
    if s == "relaxed" {
        return Ok(SeccompGroup::ALL.to_vec());
    }
    SeccompGroup::from_name(s).map(|g| vec![g]).ok_or_else(|| {
        let names: Vec<&str> = SeccompGroup::ALL.iter().map(|g| g.name()).collect();
        format!(
            "unknown group {s:?}; expected relaxed or one of {}",
            names.join(", ")
        )
    })
}

fn parse_bind(s: &str) -> anyhow::Result<Bind> {
    let mut parts = s.split(':');
    let (Some(src), Some(dst)) = (parts.next(), parts.next()) else {
        bail!("--bind {s:?}: expected SRC:DST or SRC:DST:ro");
    };
    let readonly = match parts.next() {
        None => false,
        Some("ro") => true,
        Some("rw") => false,
        Some(other) => bail!("--bind {s:?}: unknown option {other:?} (expected ro or rw)"),
    };
    if src.is_empty() || dst.is_empty() || parts.next().is_some() {
        bail!("--bind {s:?}: expected SRC:DST or SRC:DST:ro");
    }
    let src = std::path::absolute(src).with_context(|| format!("--bind {s:?}"))?;
    Ok(Bind {
        src,
        dst: PathBuf::from(dst),
        readonly,
    })
}

fn parse_copy(s: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    match s.split_once(':') {
        Some((src, dst)) if !src.is_empty() && !dst.is_empty() && !dst.contains(':') => Ok((
            std::path::absolute(src).with_context(|| format!("--copy {s:?}"))?,
            PathBuf::from(dst),
        )),
        _ => bail!("--copy {s:?}: expected SRC:DST"),
    }
}

/// The unpacked layers of `LAYOUT:NAME:VERSION`, bottom first, from the
/// store's layer cache (each unpacked once, its diff_id checked).
fn image_layers(global: &Global, image: &str) -> anyhow::Result<Vec<PathBuf>> {
    let Some((layout, reference)) = image.split_once(':') else {
        bail!("--image {image:?}: expected LAYOUT:NAME:VERSION, e.g. out:gcc:14.2.0-bundle");
    };
    let layout = crate::oci::Layout::open(std::path::Path::new(layout))
        .with_context(|| format!("--image {image}: opening the layout {layout}"))?;
    // Each layer's diff_id, which the verified config names, is checked
    // while it is unpacked.
    let found = layout
        .read_image(reference, false)
        .with_context(|| format!("--image {image}"))?;
    let diff_ids = found.config.rootfs().diff_ids();
    let store = super::open_store(global)?;
    let mut dirs = Vec::new();
    for (layer, diff_id) in found.manifest.layers().iter().zip(diff_ids) {
        let diff_id: crate::digest::Digest = diff_id
            .parse()
            .with_context(|| format!("--image {image}: diff_id {diff_id}"))?;
        let blob = layout.blob_path(&layer.digest().to_string().parse()?);
        let dir = store
            .cached_layer(&diff_id, || std::fs::File::open(&blob))
            .with_context(|| format!("--image {image}: unpacking layer {diff_id}"))?;
        dirs.push(dir);
    }
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds() {
        let b = parse_bind("/src:/dst:ro").unwrap();
        assert_eq!(
            (b.src, b.dst, b.readonly),
            (PathBuf::from("/src"), PathBuf::from("/dst"), true)
        );
        assert!(!parse_bind("/a:/b").unwrap().readonly);
        assert!(parse_bind("/a").is_err());
        assert!(parse_bind("/a:/b:rx").is_err());
    }
}
