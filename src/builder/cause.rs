//! Why a step failed, beyond its exit status: what a gcc-sized build most
//! often runs into is the memory limit or a full disk, and the user should
//! read that in the error rather than in a compiler's last words.

use std::path::Path;

/// Free space under which the file system of the work directory counts as
/// full when a step failed: a compiler that hit ENOSPC leaves a few
/// kilobytes at most, and a step needing less than this much is not the
/// kind that fails for space.
const FULL_BELOW: u64 = 4 << 20;

/// The cause to append to a failed step's status, if one is known: the
/// memory cgroup's OOM kills, or the file system of the work directory (in
/// the store `store`) left (nearly) full.
pub(super) fn of_failure(
    report: &sandbox::Report,
    spec: &sandbox::Spec,
    work: &Path,
    store: &Path,
) -> Option<String> {
    if let Some(kills) = report.stats.oom_kills.filter(|&k| k > 0) {
        let limit = spec
            .limits
            .memory
            .map_or("the memory limit".to_owned(), |m| {
                format!("--memory {} MiB", m >> 20)
            });
        return Some(format!(
            "out of memory: the kernel's OOM killer killed {kills} process{} under {limit}; \
             raise --memory",
            if kills == 1 { "" } else { "es" }
        ));
    }
    let fs = nix::sys::statvfs::statvfs(work).ok()?;
    let free = fs.blocks_available() as u64 * fs.fragment_size() as u64;
    (free < FULL_BELOW).then(|| {
        format!(
            "no space left: the file system of the store {} is full ({} KiB left); \
             free space or use a store elsewhere (--store)",
            store.display(),
            free >> 10
        )
    })
}
