//! The host ids a sandbox started by real root runs as: a range of its own,
//! never host root, never ids that belong to real users (docs/sandbox.md,
//! "Running as real root").

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `count` host uids from `uid` and gids from `gid`, given to sandboxes that
/// real root starts: root inside is `uid`/`gid` on the host. As root,
/// [`crate::IdMap::Caller`] maps inside 0 onto `uid`/`gid` alone and
/// [`crate::IdMap::Subordinate`] maps inside `0..count` onto the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostIds {
    pub uid: u32,
    pub gid: u32,
    pub count: u32,
}

impl HostIds {
    /// 0x7F000000 (2130706432) and the 65535 ids above it: in the block
    /// systemd leaves unused (0x70000000-0x7FFDFFFF: above the ranges
    /// `systemd-nspawn --private-users=pick` allocates, below its "foreign"
    /// range and below 2^31, where software that keeps ids in signed
    /// integers goes wrong), and far above what `useradd` hands out as
    /// /etc/subuid ranges (100000 + 65536 n).
    pub const DEFAULT: HostIds = HostIds {
        uid: 0x7F00_0000,
        gid: 0x7F00_0000,
        count: 65536,
    };

    /// The owner name whose /etc/subuid and /etc/subgid entries, when both
    /// exist, replace [`HostIds::DEFAULT`] (as podman's `containers`).
    pub const SUBID_OWNER: &'static str = "imgrep";

    /// The `imgrep` entries of /etc/subuid and /etc/subgid if both exist,
    /// else [`HostIds::DEFAULT`]. Not checked: see [`HostIds::check`].
    pub fn system() -> HostIds {
        let first = |file: &str| {
            subid_entries(Path::new(file))
                .into_iter()
                .find(|(owner, _, _)| owner == Self::SUBID_OWNER)
                .map(|(_, start, count)| (start, count))
        };
        match (first("/etc/subuid"), first("/etc/subgid")) {
            (Some((uid, uc)), Some((gid, gc))) => HostIds {
                uid,
                gid,
                count: uc.min(gc),
            },
            _ => HostIds::DEFAULT,
        }
    }

    /// Refuse a range that holds host root, overflows, or overlaps an id of
    /// /etc/passwd or /etc/group or another owner's /etc/subuid or
    /// /etc/subgid range: files the sandbox writes would belong to them.
    pub fn check(&self) -> Result<()> {
        self.check_against(
            Path::new("/etc/passwd"),
            Path::new("/etc/group"),
            Path::new("/etc/subuid"),
            Path::new("/etc/subgid"),
        )
    }

    fn check_against(
        &self,
        passwd: &Path,
        group: &Path,
        subuid: &Path,
        subgid: &Path,
    ) -> Result<()> {
        let bad = |why: String| {
            Err(Error::InvalidSpec(format!(
                "host id range {self} for sandboxes started by root: {why} (choose another \
                 with --root-ids or IMGREP_ROOT_IDS, or give user {:?} one range in \
                 /etc/subuid and /etc/subgid)",
                Self::SUBID_OWNER
            )))
        };
        if self.count == 0 {
            return bad("it is empty".into());
        }
        for (what, start) in [("uid", self.uid), ("gid", self.gid)] {
            if start == 0 {
                return bad(format!("it holds host root ({what} 0)"));
            }
            // u32::MAX is (uid_t)-1, "no id", in every id system call.
            if u64::from(start) + u64::from(self.count) > u64::from(u32::MAX) {
                return bad(format!("the {what}s run past 4294967294"));
            }
        }
        let holds = |start: u32, id: u64| {
            id >= u64::from(start) && id < u64::from(start) + u64::from(self.count)
        };
        for (file, start, what) in [(passwd, self.uid, "user"), (group, self.gid, "group")] {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            for line in text.lines() {
                let f: Vec<&str> = line.split(':').collect();
                if let Some(id) = f.get(2).and_then(|s| s.trim().parse::<u64>().ok()) {
                    if holds(start, id) {
                        return bad(format!(
                            "{} has {what} {:?} with id {id}",
                            file.display(),
                            f[0]
                        ));
                    }
                }
            }
        }
        for (file, start) in [(subuid, self.uid), (subgid, self.gid)] {
            for (owner, s, c) in subid_entries(file) {
                let overlaps = u64::from(s) < u64::from(start) + u64::from(self.count)
                    && u64::from(start) < u64::from(s) + u64::from(c);
                if overlaps && owner != Self::SUBID_OWNER {
                    return bad(format!(
                        "it overlaps {}'s entry {owner}:{s}:{c}",
                        file.display()
                    ));
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for HostIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.uid == self.gid {
            write!(f, "{}:{}", self.uid, self.count)
        } else {
            write!(f, "{}:{}:{}", self.uid, self.gid, self.count)
        }
    }
}

impl FromStr for HostIds {
    type Err = String;

    /// `START:COUNT` (uids and gids alike) or `UID:GID:COUNT`.
    fn from_str(s: &str) -> std::result::Result<HostIds, String> {
        let nums: Vec<u32> = s
            .split(':')
            .map(|n| n.trim().parse::<u32>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| format!("{s:?}: {e} (expected START:COUNT or UID:GID:COUNT)"))?;
        match nums[..] {
            [start, count] => Ok(HostIds {
                uid: start,
                gid: start,
                count,
            }),
            [uid, gid, count] => Ok(HostIds { uid, gid, count }),
            _ => Err(format!("{s:?}: expected START:COUNT or UID:GID:COUNT")),
        }
    }
}

/// `(owner, start, count)` of every well-formed line of an /etc/subuid-style file.
pub(crate) fn subid_entries(file: &Path) -> Vec<(String, u32, u32)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((
                f.next()?.trim().to_owned(),
                f.next()?.trim().parse().ok()?,
                f.next()?.trim().parse().ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_both_forms() {
        let one: HostIds = "100:5".parse().unwrap();
        assert_eq!(
            one,
            HostIds {
                uid: 100,
                gid: 100,
                count: 5
            }
        );
        assert_eq!(one.to_string(), "100:5");
        let two: HostIds = "100:200:5".parse().unwrap();
        assert_eq!(two.to_string(), "100:200:5");
        assert!("100".parse::<HostIds>().is_err());
        assert!("a:5".parse::<HostIds>().is_err());
    }

    #[test]
    fn refuses_root_real_users_and_others_ranges() {
        let t = tempfile::tempdir().unwrap();
        let p = |n: &str| t.path().join(n);
        std::fs::write(
            p("passwd"),
            "root:x:0:0::/:/bin/sh\nbig:x:3000000:3000000::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(p("group"), "root:x:0:\nbig:x:3000000:\n").unwrap();
        std::fs::write(p("subuid"), "alice:100000:65536\nimgrep:5000000:65536\n").unwrap();
        std::fs::write(p("subgid"), "alice:100000:65536\n").unwrap();
        let check = |ids: &str| {
            ids.parse::<HostIds>()
                .unwrap()
                .check_against(&p("passwd"), &p("group"), &p("subuid"), &p("subgid"))
                .map_err(|e| e.to_string())
        };
        assert!(check(&HostIds::DEFAULT.to_string()).is_ok());
        assert!(check("5000000:65536").is_ok(), "imgrep's own range");
        assert!(check("0:65536").unwrap_err().contains("host root"));
        assert!(check("2999999:2")
            .unwrap_err()
            .contains("\"big\" with id 3000000"));
        assert!(check("160000:10")
            .unwrap_err()
            .contains("alice:100000:65536"));
        assert!(check("4294967290:10").unwrap_err().contains("run past"));
        assert!(check("7:0").unwrap_err().contains("empty"));
    }
}
