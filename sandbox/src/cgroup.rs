//! One cgroup per run, nested under the helper's own cgroup in every hierarchy
//! it uses (never under a hierarchy's root: that would escape the host's own
//! limits on imgrep), removed again at the end. cgroup v2 when the unified
//! hierarchy has the controllers, v1 otherwise (legacy and hybrid layouts).

use std::path::{Path, PathBuf};
use std::time::Duration;

use libcgroups::common::{get_cgroup_setup, read_cgroup_file, write_cgroup_file_str, CgroupSetup};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::spec::{Enforcement, Limits};

const PERIOD_US: u64 = 100_000;

pub(crate) struct Cgroup {
    pub(crate) kind: Enforcement,
    /// Every directory created, in creation order.
    dirs: Vec<PathBuf>,
    memory: Option<PathBuf>,
    freezer: Option<PathBuf>,
}

impl Cgroup {
    /// Create the cgroup(s) of this run with `limits` applied, or say why not.
    pub(crate) fn create(limits: &Limits) -> Result<Cgroup, String> {
        let own = own_cgroups().map_err(|e| format!("/proc/self/cgroup: {e}"))?;
        let name = format!("imgrep-sandbox-{}", std::process::id());
        let setup = get_cgroup_setup().map_err(|e| format!("cgroup layout: {e}"))?;
        let mut cg = Cgroup {
            kind: Enforcement::CgroupV1,
            dirs: Vec::new(),
            memory: None,
            freezer: None,
        };
        match setup {
            CgroupSetup::Unified => {
                cg.kind = Enforcement::CgroupV2;
                cg.create_v2(&own, &name, limits)?;
            }
            CgroupSetup::Legacy | CgroupSetup::Hybrid => cg.create_v1(&own, &name, limits)?,
        }
        Ok(cg)
    }

    fn create_v2(
        &mut self,
        own: &[(String, String)],
        name: &str,
        l: &Limits,
    ) -> Result<(), String> {
        let mount = libcgroups::v2::util::get_unified_mount_point().map_err(|e| e.to_string())?;
        let path = own_path(own, "").ok_or("no cgroup v2 entry in /proc/self/cgroup")?;
        let parent = mount.join(path.trim_start_matches('/'));
        let mut needed = Vec::new();
        if l.memory.is_some() {
            needed.push("memory");
        }
        if l.pids.is_some() {
            needed.push("pids");
        }
        if l.cpus.is_some() {
            needed.push("cpu");
        }
        let enabled = read(&parent.join("cgroup.subtree_control"))?;
        for c in &needed {
            if !enabled.split_whitespace().any(|e| e == *c) {
                // Fails with EBUSY when our own cgroup holds processes (the
                // no-internal-process rule): then the caller must delegate.
                write(&parent.join("cgroup.subtree_control"), &format!("+{c}"))?;
            }
        }
        remove_stale(&parent);
        let dir = self.mkdir(&parent, name)?;
        if let Some(m) = l.memory {
            write(&dir.join("memory.max"), &m.to_string())?;
            if dir.join("memory.swap.max").exists() {
                write(&dir.join("memory.swap.max"), "0")?;
            }
            self.memory = Some(dir.clone());
        }
        if let Some(p) = l.pids {
            write(&dir.join("pids.max"), &p.to_string())?;
        }
        if let Some(c) = l.cpus {
            write(
                &dir.join("cpu.max"),
                &format!("{} {PERIOD_US}", quota_us(c)),
            )?;
        }
        Ok(())
    }

    /// Legacy and hybrid layouts: a directory in every hierarchy this
    /// process is in (controllers, named ones such as name=systemd, and the
    /// v2 mount of a hybrid layout), so that the cgroup namespace the
    /// sandbox unshares has the run's own directory as its root in each:
    /// a nested namespace that mounts any hierarchy finds only that, owned
    /// by the helper. Limits go into their controllers' directories; a
    /// hierarchy without a limit that refuses a directory is left out.
    fn create_v1(
        &mut self,
        own: &[(String, String)],
        name: &str,
        l: &Limits,
    ) -> Result<(), String> {
        let mounts = cgroup_mounts().map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
        let mut limited = Vec::new();
        if l.memory.is_some() {
            limited.push("memory");
        }
        if l.pids.is_some() {
            limited.push("pids");
        }
        if l.cpus.is_some() {
            limited.push("cpu");
        }
        let mut enforced = Vec::new();
        for (ctrls, path) in own {
            let Some(parent) = hierarchy_dir(&mounts, ctrls, path) else {
                continue;
            };
            let names: Vec<&str> = ctrls.split(',').collect();
            let needed: Vec<&str> = limited
                .iter()
                .copied()
                .filter(|c| names.contains(c))
                .collect();
            remove_stale(&parent);
            let dir = match self.mkdir(&parent, name) {
                Ok(dir) => dir,
                Err(e) if !needed.is_empty() => return Err(e),
                Err(_) => continue,
            };
            // A new v1 cpuset has no CPU and no memory node: nothing could
            // join it. It gets its parent's.
            if names.contains(&"cpuset") {
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let from = read(&parent.join(f))?;
                    write(&dir.join(f), from.trim())?;
                }
            }
            for c in needed {
                match c {
                    "memory" => {
                        let m = l.memory.unwrap_or_default().to_string();
                        write(&dir.join("memory.limit_in_bytes"), &m)?;
                        if dir.join("memory.memsw.limit_in_bytes").exists() {
                            write(&dir.join("memory.memsw.limit_in_bytes"), &m)?;
                        }
                        self.memory = Some(dir.clone());
                    }
                    "pids" => write(
                        &dir.join("pids.max"),
                        &l.pids.unwrap_or_default().to_string(),
                    )?,
                    _ => {
                        write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                        let q = quota_us(l.cpus.unwrap_or(1.0)).to_string();
                        write(&dir.join("cpu.cfs_quota_us"), &q)?;
                    }
                }
                enforced.push(c);
            }
            // The freezer kills the tree atomically; without it the pid
            // namespace still takes every process down.
            if names.contains(&"freezer") {
                self.freezer = Some(dir);
            }
        }
        match limited.iter().find(|c| !enforced.contains(c)) {
            Some(c) => Err(format!("no {c} cgroup hierarchy for this process")),
            None => Ok(()),
        }
    }

    fn mkdir(&mut self, parent: &Path, name: &str) -> Result<PathBuf, String> {
        let dir = parent.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            // A stale directory of a previous helper with our pid.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create cgroup {}: {e}", dir.display())),
        }
        self.dirs.push(dir.clone());
        Ok(dir)
    }

    /// Move `pid` (and so everything it starts) into every directory.
    pub(crate) fn add(&self, pid: Pid) -> Result<(), String> {
        self.dirs
            .iter()
            .try_for_each(|d| write(&d.join("cgroup.procs"), &pid.to_string()))
    }

    /// Kill every process left in the cgroup(s): cgroup.kill on v2, freeze,
    /// kill and thaw on v1.
    pub(crate) fn kill_all(&self) {
        if self.kind == Enforcement::CgroupV2 {
            for d in &self.dirs {
                if write(&d.join("cgroup.kill"), "1").is_ok() {
                    return;
                }
            }
        }
        if let Some(f) = &self.freezer {
            let _ = write(&f.join("freezer.state"), "FROZEN");
        }
        for d in &self.dirs {
            for pid in procs(d) {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        if let Some(f) = &self.freezer {
            let _ = write(&f.join("freezer.state"), "THAWED");
        }
    }

    /// Peak memory use of the tree, bytes.
    pub(crate) fn memory_peak(&self) -> Option<u64> {
        let dir = self.memory.as_ref()?;
        let file = match self.kind {
            Enforcement::CgroupV2 => "memory.peak",
            _ => "memory.max_usage_in_bytes",
        };
        read(&dir.join(file)).ok()?.trim().parse().ok()
    }
}

impl Cgroup {
    /// How many processes the kernel's OOM killer killed in the tree.
    pub(crate) fn oom_kills(&self) -> Option<u64> {
        let dir = self.memory.as_ref()?;
        let file = match self.kind {
            Enforcement::CgroupV2 => "memory.events",
            _ => "memory.oom_control",
        };
        read(&dir.join(file))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
    }
}

impl Drop for Cgroup {
    /// Remove every directory, killing stragglers; a directory is busy for a
    /// moment after its last process exited.
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            for attempt in 0..2000 {
                match std::fs::remove_dir(dir) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        if attempt % 100 == 0 {
                            self.kill_all();
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    _ => break,
                }
            }
        }
    }
}

fn quota_us(cpus: f64) -> u64 {
    ((cpus * PERIOD_US as f64).round() as u64).max(1000)
}

/// (controllers, path) of every line of /proc/self/cgroup; "" is cgroup v2.
fn own_cgroups() -> std::io::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            Some((it.next()?.to_owned(), it.next()?.to_owned()))
        })
        .collect())
}

/// A mounted cgroup hierarchy: where, the cgroup path its root shows, and
/// its controllers (none for cgroup v2; "name=systemd" for a named one).
struct Mount {
    point: PathBuf,
    root: String,
    ctrls: Vec<String>,
}

/// Every cgroup and cgroup2 mount of this mount namespace.
fn cgroup_mounts() -> std::io::Result<Vec<Mount>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text.lines().filter_map(parse_mountinfo).collect())
}

fn parse_mountinfo(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let f: Vec<&str> = left.split(' ').collect();
    let r: Vec<&str> = right.split(' ').collect();
    let (root, point) = (*f.get(3)?, *f.get(4)?);
    let ctrls = match *r.first()? {
        "cgroup2" => Vec::new(),
        "cgroup" => r
            .get(2)?
            .split(',')
            .filter(|o| {
                !matches!(
                    *o,
                    "rw" | "ro" | "noprefix" | "clone_children" | "xattr" | "cpuset_v2_mode"
                ) && !o.starts_with("release_agent=")
            })
            .map(str::to_owned)
            .collect(),
        _ => return None,
    };
    Some(Mount {
        // mountinfo writes a space in a path as \040.
        point: PathBuf::from(point.replace("\\040", " ")),
        root: root.to_owned(),
        ctrls,
    })
}

/// The directory of cgroup `path` in the hierarchy with controllers
/// `ctrls` (both from a line of /proc/self/cgroup), if that hierarchy is
/// mounted here with its root at or above `path`.
fn hierarchy_dir(mounts: &[Mount], ctrls: &str, path: &str) -> Option<PathBuf> {
    let want: Vec<&str> = ctrls.split(',').filter(|c| !c.is_empty()).collect();
    let m = mounts.iter().find(|m| {
        m.ctrls.len() == want.len() && want.iter().all(|c| m.ctrls.iter().any(|have| have == c))
    })?;
    let rel = if m.root == "/" {
        path
    } else {
        path.strip_prefix(m.root.as_str())?
    };
    Some(m.point.join(rel.trim_start_matches('/')))
}

fn own_path<'a>(own: &'a [(String, String)], controller: &str) -> Option<&'a str> {
    own.iter()
        .find(|(ctrls, _)| {
            if controller.is_empty() {
                ctrls.is_empty()
            } else {
                ctrls.split(',').any(|c| c == controller)
            }
        })
        .map(|(_, p)| p.as_str())
}

/// Remove directories of helpers that were killed before they could clean up.
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("imgrep-sandbox-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

fn procs(dir: &Path) -> Vec<Pid> {
    read(&dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok().map(Pid::from_raw))
        .collect()
}

fn read(path: &Path) -> Result<String, String> {
    read_cgroup_file(path).map_err(|e| e.to_string())
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    write_cgroup_file_str(path, value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_paths_per_hierarchy() {
        let own: Vec<(String, String)> =
            [("cpu,cpuacct", "/a"), ("memory", "/m/x"), ("", "/unified")]
                .iter()
                .map(|(c, p)| (c.to_string(), p.to_string()))
                .collect();
        assert_eq!(own_path(&own, "cpu"), Some("/a"));
        assert_eq!(own_path(&own, "cpuacct"), Some("/a"));
        assert_eq!(own_path(&own, "memory"), Some("/m/x"));
        assert_eq!(own_path(&own, ""), Some("/unified"));
        assert_eq!(own_path(&own, "pids"), None);
        assert_eq!(quota_us(1.5), 150_000);
        let mounts: Vec<Mount> = [
            "33 25 0:28 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu",
            "40 25 0:35 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd",
            "41 25 0:36 /sub /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate",
            "42 25 0:37 / /proc rw - proc proc rw",
        ]
        .iter()
        .filter_map(|l| parse_mountinfo(l))
        .collect();
        assert_eq!(mounts.len(), 3);
        assert_eq!(
            hierarchy_dir(&mounts, "cpu", "/a/b"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu/a/b"))
        );
        assert_eq!(
            hierarchy_dir(&mounts, "name=systemd", "/"),
            Some(PathBuf::from("/sys/fs/cgroup/systemd/"))
        );
        assert_eq!(
            hierarchy_dir(&mounts, "", "/sub/x"),
            Some(PathBuf::from("/sys/fs/cgroup/unified/x"))
        );
        assert_eq!(hierarchy_dir(&mounts, "memory", "/"), None);

        assert_eq!(quota_us(0.001), 1000);
    }
}
