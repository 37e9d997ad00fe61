//! uid/gid maps of the sandbox's user namespace: written directly when the
//! kernel lets the caller (root, or one id onto itself), through
//! newuidmap/newgidmap (package uidmap, /etc/subuid) otherwise.

use std::path::Path;
use std::process::Command;

use nix::unistd::{getegid, geteuid, Pid, User};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hostids::HostIds;

#[derive(Debug, Clone)]
pub(crate) struct Maps {
    pub(crate) uid: Vec<IdRange>,
    pub(crate) gid: Vec<IdRange>,
}

impl Maps {
    /// The maps `idmap` stands for when this process starts the sandbox.
    /// Real root never maps host root: it maps onto `root_ids` instead.
    pub(crate) fn resolve(idmap: &IdMap, root_ids: &HostIds) -> Result<Maps> {
        let (uid, gid) = (geteuid().as_raw(), getegid().as_raw());
        let one = |inside, outside, count| IdRange {
            inside,
            outside,
            count,
        };
        let root = geteuid().is_root();
        if root
            && !matches!(idmap, IdMap::Custom { .. })
            && (root_ids.uid == 0 || root_ids.gid == 0)
        {
            // Say why in the range's own terms.
            root_ids.check()?;
        }
        let maps = match idmap {
            IdMap::Caller if root => Maps {
                uid: vec![one(0, root_ids.uid, 1)],
                gid: vec![one(0, root_ids.gid, 1)],
            },
            IdMap::Subordinate if root => Maps {
                uid: vec![one(0, root_ids.uid, root_ids.count)],
                gid: vec![one(0, root_ids.gid, root_ids.count)],
            },
            IdMap::Caller => Maps {
                uid: vec![one(0, uid, 1)],
                gid: vec![one(0, gid, 1)],
            },
            IdMap::Subordinate => {
                let name = User::from_uid(geteuid())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_default();
                let sub = |file: &str, id: u32| -> Result<IdRange> {
                    let (outside, count) = subordinate(Path::new(file), &name, id)?;
                    Ok(one(1, outside, count))
                };
                Maps {
                    uid: vec![one(0, uid, 1), sub("/etc/subuid", uid)?],
                    gid: vec![one(0, gid, 1), sub("/etc/subgid", gid)?],
                }
            }
            IdMap::Custom { uid, gid } => {
                if uid.is_empty() || gid.is_empty() {
                    return Err(Error::InvalidSpec(
                        "a custom id map needs uid and gid ranges".into(),
                    ));
                }
                Maps {
                    uid: uid.clone(),
                    gid: gid.clone(),
                }
            }
        };
        // Ranges do not wrap (the kernel refuses that): one holds 0 by starting there.
        let holds_root = |ranges: &[IdRange]| ranges.iter().any(|r| r.outside == 0);
        if holds_root(&maps.uid) || holds_root(&maps.gid) {
            return Err(Error::InvalidSpec(
                "the id map holds host uid or gid 0: root inside must not be root outside".into(),
            ));
        }
        Ok(maps)
    }

    /// The inside uid and gid that stand for the caller, if mapped.
    pub(crate) fn caller_inside(&self) -> Option<(u32, u32)> {
        let find = |ranges: &[IdRange], id: u32| {
            ranges
                .iter()
                .find(|r| id >= r.outside && id - r.outside < r.count)
                .map(|r| r.inside + (id - r.outside))
        };
        Some((
            find(&self.uid, geteuid().as_raw())?,
            find(&self.gid, getegid().as_raw())?,
        ))
    }

    /// Whether the namespace's first process may write these maps itself:
    /// one id onto the caller's own, no newuidmap, no help from outside.
    pub(crate) fn self_writable(&self) -> bool {
        let single = |r: &[IdRange], id: u32| r.len() == 1 && r[0].outside == id && r[0].count == 1;
        single(&self.uid, geteuid().as_raw()) && single(&self.gid, getegid().as_raw())
    }

    /// Write the maps of `pid`'s user namespace.
    pub(crate) fn apply(&self, pid: Pid) -> Result<()> {
        if geteuid().is_root() || self.self_writable() {
            self.write_direct(&pid.to_string())
        } else {
            helper_tool("newgidmap", pid, &self.gid)?;
            helper_tool("newuidmap", pid, &self.uid)
        }
    }

    /// Write the maps of this process's own (new) user namespace; only when
    /// [`Maps::self_writable`].
    pub(crate) fn apply_own(&self) -> Result<()> {
        self.write_direct("self")
    }

    fn write_direct(&self, proc_entry: &str) -> Result<()> {
        if !geteuid().is_root() {
            // The kernel wants setgroups denied before an unprivileged gid_map.
            write_proc(proc_entry, "setgroups", "deny")?;
        }
        write_proc(proc_entry, "gid_map", &render(&self.gid))?;
        write_proc(proc_entry, "uid_map", &render(&self.uid))
    }
}

fn render(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count))
        .collect()
}

fn write_proc(pid: &str, file: &str, content: &str) -> Result<()> {
    let path = format!("/proc/{pid}/{file}");
    std::fs::write(&path, content).map_err(|e| Error::setup(format!("write {path}"), e))
}

fn helper_tool(tool: &str, pid: Pid, ranges: &[IdRange]) -> Result<()> {
    let exe = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.exists())
        .ok_or_else(|| {
            Error::setup(
                format!("{tool} for a multi-id mapping"),
                "not found (install the package uidmap)",
            )
        })?;
    let mut cmd = Command::new(&exe);
    cmd.arg(pid.to_string());
    for r in ranges {
        cmd.args([r.inside, r.outside, r.count].map(|n| n.to_string()));
    }
    let out = cmd
        .output()
        .map_err(|e| Error::setup(format!("run {}", exe.display()), e))?;
    if !out.status.success() {
        return Err(Error::setup(
            format!(
                "{} {}",
                exe.display(),
                render(ranges).trim().replace('\n', ", ")
            ),
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    Ok(())
}

/// The first range of `name` (or of the numeric `id`) in /etc/subuid-style `file`.
fn subordinate(file: &Path, name: &str, id: u32) -> Result<(u32, u32)> {
    let text =
        std::fs::read_to_string(file).map_err(|e| Error::path("subordinate id file", file, e))?;
    let id = id.to_string();
    for line in text.lines() {
        let mut f = line.split(':');
        let (Some(owner), Some(start), Some(count)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if owner == name || owner == id {
            if let (Ok(s), Ok(c)) = (start.trim().parse(), count.trim().parse()) {
                return Ok((s, c));
            }
        }
    }
    Err(Error::path(
        "subordinate id file",
        file,
        format!("no range for user {name:?} (uid/gid {id}); add one with usermod --add-subuids/--add-subgids"),
    ))
}

/// Which host ids the ids inside map to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdMap {
    /// uid/gid 0 inside = the caller's uid/gid; no other id exists inside.
    /// Real root: uid/gid 0 inside = [`crate::Spec::root_ids`]'s first ids.
    Caller,
    /// 0 inside = the caller; 1..=N inside = the caller's first /etc/subuid
    /// and /etc/subgid ranges (through newuidmap/newgidmap).
    /// Real root: 0..N inside = all of [`crate::Spec::root_ids`].
    Subordinate,
    /// Exact maps, e.g. so `imgrep reproduce` can vary them. Unprivileged
    /// callers are limited to what newuidmap/newgidmap allow; a map that
    /// holds host uid or gid 0 is refused.
    Custom {
        uid: Vec<IdRange>,
        gid: Vec<IdRange>,
    },
}

/// `count` ids starting at `inside` map to ids starting at `outside`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_by_name_or_id() {
        let t = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            t.path(),
            "alice:100000:65536\n# comment\n1234:200000:1000\n",
        )
        .unwrap();
        assert_eq!(
            subordinate(t.path(), "alice", 1000).unwrap(),
            (100000, 65536)
        );
        assert_eq!(subordinate(t.path(), "bob", 1234).unwrap(), (200000, 1000));
        let err = subordinate(t.path(), "carol", 42).unwrap_err().to_string();
        assert!(err.contains("no range for user \"carol\""), "{err}");
    }

    #[test]
    fn caller_is_found_inside() {
        let (uid, gid) = (geteuid().as_raw(), getegid().as_raw());
        let maps = Maps {
            uid: vec![
                IdRange {
                    inside: 0,
                    outside: 100_000,
                    count: 10,
                },
                IdRange {
                    inside: 10,
                    outside: uid,
                    count: 1,
                },
            ],
            gid: vec![IdRange {
                inside: 5,
                outside: gid,
                count: 1,
            }],
        };
        assert_eq!(maps.caller_inside(), Some((10, 5)));
        let own = Maps::resolve(&IdMap::Caller, &HostIds::DEFAULT).unwrap();
        if geteuid().is_root() {
            // Real root is not mapped at all: inside root is the range's first id.
            assert_eq!(own.caller_inside(), None);
            assert_eq!(own.uid[0].outside, HostIds::DEFAULT.uid);
        } else {
            assert_eq!(own.caller_inside(), Some((0, 0)));
        }
    }

    #[test]
    fn maps_holding_host_root_are_refused() {
        let root = IdRange {
            inside: 0,
            outside: 0,
            count: 1,
        };
        let err = Maps::resolve(
            &IdMap::Custom {
                uid: vec![root],
                gid: vec![root],
            },
            &HostIds::DEFAULT,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("host uid or gid 0"), "{err}");
    }
}
