//! The host ids sandboxes started by real root run as (docs/sandbox.md,
//! "Running as real root"): `--root-ids`, else `IMGREP_ROOT_IDS`, else the
//! `imgrep` entries of /etc/subuid and /etc/subgid, else
//! [`sandbox::HostIds::DEFAULT`]. The sandbox checks the range against the
//! host's users and subordinate ranges before every run.

use std::sync::OnceLock;

use sandbox::HostIds;

static CHOSEN: OnceLock<HostIds> = OnceLock::new();

/// Use `ids` (from `--root-ids` or `IMGREP_ROOT_IDS`) for this process.
/// Only the first choice counts.
pub fn choose(ids: HostIds) {
    let _ = CHOSEN.set(ids);
}

/// The range chosen for this process, else the system's.
pub fn root_ids() -> HostIds {
    *CHOSEN.get_or_init(HostIds::system)
}
