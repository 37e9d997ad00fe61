//! The conditions `imgrep reproduce` changes against an ordinary build
//! (docs/reproduce.md). Each one is something a build could leak into its
//! output if the sandbox or the layer normalisation let it.

use std::path::Path;

use sandbox::{HostIds, IdMap, IdRange};

use crate::builder::Variation;

/// The hostname of every rebuilt step (an ordinary build uses `imgrep`).
pub const HOSTNAME: &str = "reproduce";
/// Ids mapped inside the rebuild's user namespace onto an unused outside range.
const MAPPED: u32 = 65536;
/// Where the search for an unused outside range starts when running as root.
const HIGH_BASE: u32 = 0x7000_0000;

/// The varied conditions and how each differs from an ordinary build.
#[derive(Debug, Clone)]
pub struct Conditions {
    pub variation: Variation,
    /// Pin the rebuild to this one CPU (only when `JOBS` goes down to 1).
    pub cpu: Option<usize>,
    /// `(condition, what the rebuild uses)`, for the report.
    pub described: Vec<(String, String)>,
}

/// Every condition changed from `standard`. `work` is the rebuild's own
/// directory, holding its store and build directories.
pub fn varied(standard: &Variation, work: &Path, reference_store: &Path) -> Conditions {
    let mut described = vec![(
        "store and build directories".to_owned(),
        format!(
            "{} (the reference store is {})",
            work.display(),
            reference_store.display()
        ),
    )];
    let (idmap, map_text) = id_map(&standard.root_ids);
    described.push(("uid/gid map".into(), map_text));
    described.push((
        "umask".into(),
        format!(
            "077, of the build steps and of imgrep itself (ordinary builds: {:03o})",
            standard.umask
        ),
    ));
    described.push((
        "hostname".into(),
        format!("{HOSTNAME} (ordinary builds: {})", standard.hostname),
    ));
    described.push((
        "environment order".into(),
        "reversed (ordinary builds: fixed order)".into(),
    ));
    let (cores, cpu) = if standard.cores > 1 {
        (1, first_allowed_cpu())
    } else {
        (2, None)
    };
    described.push((
        "JOBS / CPUs".into(),
        match cpu {
            Some(c) => format!(
                "JOBS=1, pinned to CPU {c} (ordinary builds: JOBS={})",
                standard.cores
            ),
            None => format!("JOBS={cores} (ordinary builds: JOBS={})", standard.cores),
        },
    ));
    described.push((
        "build directory".into(),
        "each recipe's other build_dir: in memory for \"disk\", on disk for \"memory\"".into(),
    ));
    described.push((
        "time".into(),
        "the moment of this run; the clock is not faked, the reference was built at another time"
            .into(),
    ));
    Conditions {
        variation: Variation {
            hostname: HOSTNAME.to_owned(),
            umask: 0o077,
            idmap,
            root_ids: standard.root_ids,
            reverse_env: true,
            cores,
            other_build_dir: true,
        },
        cpu,
        described,
    }
}

/// As root: ids 0..65535 inside map onto an unused high outside range, not
/// the one ordinary builds use (`standard`: inside root alone). Unprivileged:
/// the caller's /etc/subuid range when newuidmap can apply it, else the
/// caller alone (said so: that condition is then not varied).
fn id_map(standard: &HostIds) -> (IdMap, String) {
    if nix::unistd::geteuid().is_root() {
        let base = unused_range(standard);
        let ranges = vec![IdRange {
            inside: 0,
            outside: base,
            count: MAPPED,
        }];
        let map = IdMap::Custom {
            uid: ranges.clone(),
            gid: ranges,
        };
        let text = format!(
            "inside 0-{} -> outside {base}-{} (ordinary builds: inside 0 -> outside {})",
            MAPPED - 1,
            base + MAPPED - 1,
            standard.uid
        );
        return (map, text);
    }
    let has_sub = has_subordinate_ids("/etc/subuid") && has_subordinate_ids("/etc/subgid");
    let helpers = ["newuidmap", "newgidmap"]
        .iter()
        .all(|p| which(p).is_some());
    if has_sub && helpers {
        (
            IdMap::Subordinate,
            "inside 0 -> you, 1.. -> your /etc/subuid range (ordinary builds: you alone)".into(),
        )
    } else {
        (
            IdMap::Caller,
            "NOT VARIED: no /etc/subuid range or no newuidmap for this user; inside 0 -> you"
                .into(),
        )
    }
}

/// The first 65536-id block from `HIGH_BASE` up that holds no id of a user,
/// a group or a subordinate range (`HostIds::check`) and is not `standard`.
fn unused_range(standard: &HostIds) -> u32 {
    let mut base = HIGH_BASE;
    loop {
        let candidate = HostIds {
            uid: base,
            gid: base,
            count: MAPPED,
        };
        let clash = |start: u32| {
            u64::from(start) < u64::from(base) + u64::from(MAPPED)
                && u64::from(base) < u64::from(start) + u64::from(standard.count)
        };
        if !clash(standard.uid) && !clash(standard.gid) && candidate.check().is_ok() {
            return base;
        }
        match base.checked_add(MAPPED) {
            Some(next) if next < u32::MAX - MAPPED => base = next,
            _ => return HIGH_BASE,
        }
    }
}

fn has_subordinate_ids(file: &str) -> bool {
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten();
    let uid = nix::unistd::geteuid().as_raw().to_string();
    std::fs::read_to_string(file).is_ok_and(|text| {
        text.lines().any(|l| {
            let owner = l.split(':').next().unwrap_or_default();
            owner == uid || user.as_ref().is_some_and(|u| u.name == owner)
        })
    })
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

fn first_allowed_cpu() -> Option<usize> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
    (0..nix::sched::CpuSet::count()).find(|&c| set.is_set(c).unwrap_or(false))
}

/// Restricts the calling thread, and every thread and process it starts
/// afterwards, to `cpu`; the guard restores the previous set.
pub struct Pinned(Option<nix::sched::CpuSet>);

pub fn pin(cpu: Option<usize>) -> nix::Result<Pinned> {
    let Some(cpu) = cpu else {
        return Ok(Pinned(None));
    };
    let me = nix::unistd::Pid::from_raw(0);
    let before = nix::sched::sched_getaffinity(me)?;
    let mut one = nix::sched::CpuSet::new();
    one.set(cpu)?;
    nix::sched::sched_setaffinity(me, &one)?;
    Ok(Pinned(Some(before)))
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(before) = &self.0 {
            let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), before);
        }
    }
}

/// Sets the process umask (what imgrep itself writes: unpacked sources, the
/// debs images, the unpacked build roots) until dropped.
pub struct ProcessUmask(nix::sys::stat::Mode);

pub fn process_umask(mask: u32) -> ProcessUmask {
    let mode = nix::sys::stat::Mode::from_bits_truncate(mask as libc::mode_t);
    ProcessUmask(nix::sys::stat::umask(mode))
}

impl Drop for ProcessUmask {
    fn drop(&mut self) {
        nix::sys::stat::umask(self.0);
    }
}
