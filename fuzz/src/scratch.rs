//! A scratch directory per fuzzing thread, emptied before each input.
//!
//! Under `IMGREP_FUZZ_SCRATCH` (which `cargo xtask fuzz` points at a tmpfs
//! when it can), else the system's temporary directory. Directories of
//! processes that died are removed when the next one starts.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

const PREFIX: &str = "imgrep-fuzz-";

fn base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let parent = std::env::var_os("IMGREP_FUZZ_SCRATCH")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        remove_dead(&parent);
        let dir = parent.join(format!("{PREFIX}{}", std::process::id()));
        fs::create_dir_all(&dir).expect("creating the fuzz scratch directory");
        dir
    })
}

/// Removes `imgrep-fuzz-<pid>` directories whose process is gone.
fn remove_dead(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|p| p.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = imgrep::store::remove_tree(&entry.path());
        }
    }
}

/// A fresh, empty directory named `name` in this thread's scratch space
/// (whatever an earlier input left there is removed first).
pub fn fresh(name: &str) -> PathBuf {
    static THREADS: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static THREAD: usize = THREADS.fetch_add(1, Ordering::Relaxed);
    }
    let dir = base().join(THREAD.with(|t| t.to_string())).join(name);
    imgrep::store::remove_tree(&dir).expect("emptying the fuzz scratch directory");
    fs::create_dir_all(&dir).expect("creating a fuzz scratch directory");
    dir
}
