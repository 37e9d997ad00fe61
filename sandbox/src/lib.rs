//! Run one process tree in fresh user, mount, pid, network, uts, ipc and
//! cgroup namespaces, pivot_root'ed into a root assembled from read-only lower
//! directories and a writable scratch directory, with limits, a timeout and
//! the whole tree killed at the end. docs/sandbox.md explains every mount, the
//! id mapping and the cgroup strategy.
//!
//! clone() from a multithreaded process can deadlock the child, so [`run`]
//! builds the sandbox in the calling process only when it has one thread;
//! otherwise it re-executes the current executable (`/proc/self/exe`) as a
//! small single-threaded helper. Every binary that calls [`run`] must call
//! [`dispatch_helper`] first thing in `main`.

pub mod beneath;
mod cgroup;
mod child;
mod copy;
mod error;
mod fill;
mod helper;
mod hostids;
mod idmap;
mod launch;
mod mounts;
mod proto;
mod seccomp;
mod spec;
mod terminal;

pub use error::{Error, Result};
pub use fill::Fill;
pub use hostids::HostIds;
pub use launch::{run, run_filling};
pub use spec::{
    Bind, Enforcement, IdMap, IdRange, Limits, MemoryDir, Overlay, Report, RootFs, SeccompGroup,
    Spec, Stats, Status, Stdio, Step, Trees,
};

/// argv[1] that turns the current executable into the sandbox helper.
const HELPER_MARKER: &str = "__imgrep_sandbox_helper__";

/// If this process was started as the sandbox helper, act as it and exit;
/// otherwise return at once. Call it first thing in `main`, before any thread
/// is started.
pub fn dispatch_helper() {
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() != Some(std::ffi::OsStr::new(HELPER_MARKER)) {
        return;
    }
    let fd = args
        .next()
        .and_then(|a| a.to_str().and_then(|s| s.parse().ok()));
    let code = match fd {
        Some(fd) => helper::main(fd),
        None => {
            eprintln!("{HELPER_MARKER}: expected a socket descriptor");
            2
        }
    };
    std::process::exit(code);
}
