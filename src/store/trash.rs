//! `trash/`: work directories of finished builds, removed by a thread in
//! the background (docs/store.md, "Removal in the background").
//!
//! A gcc build leaves over 140,000 files behind (its source alone); on a
//! file system mounted with `discard` each removal waits for the device
//! (about 3 ms here), so removing them in line held a finished build back:
//! cross-binutils' 28,762 source entries and its objects by over a
//! minute. A move into the trash is one rename; the thread then removes
//! what the trash holds while imgrep goes on. What an exiting process leaves there is removed by
//! the next one that opens the store (or by gc): like tmp/, the trash is
//! garbage, trusted by nobody.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::remove_tree;

pub(super) struct Trash {
    dir: PathBuf,
    /// A duplicate of the store lock's descriptor, moved into the thread:
    /// the shared lock lives while the thread runs, so a gc of another
    /// process waits for it even when the Store itself is gone.
    lock: File,
    state: Arc<Mutex<Remover>>,
}

#[derive(Default)]
struct Remover {
    handle: Option<JoinHandle<()>>,
    running: bool,
}

impl Trash {
    /// The trash at `dir` (a directory the store has made).
    pub(super) fn new(dir: PathBuf, lock: File) -> Trash {
        Trash {
            dir,
            lock,
            state: Arc::default(),
        }
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves `path` (on the store's file system) into the trash and makes
    /// sure the remover runs.
    pub(super) fn discard(&self, path: &Path) -> io::Result<()> {
        let name = path.file_name().unwrap_or(path.as_os_str());
        let mut to = self.dir.join(name);
        let mut n = 0;
        while to.symlink_metadata().is_ok() {
            n += 1;
            let mut unique = OsString::from(name);
            unique.push(format!(".{n}"));
            to = self.dir.join(unique);
        }
        fs::rename(path, &to)?;
        self.wake();
        Ok(())
    }

    /// Starts the remover unless it runs. It stops once the trash is empty
    /// or holds only what it failed to remove; the emptiness is checked
    /// under the state's lock, which `wake` takes after its rename, so an
    /// entry is never left behind by a remover on its way out.
    pub(super) fn wake(&self) {
        let mut state = lock(&self.state);
        if state.running {
            return;
        }
        let Ok(fd) = self.lock.try_clone() else {
            return;
        };
        // A remover that stopped has returned, or is returning: reap it.
        if let Some(old) = state.handle.take() {
            let _ = old.join();
        }
        let dir = self.dir.clone();
        let shared = Arc::clone(&self.state);
        let spawned = std::thread::Builder::new()
            .name("imgrep-trash".into())
            .spawn(move || {
                let _lock = fd;
                let mut failed = HashSet::new();
                loop {
                    let left = pending(&dir, &failed);
                    if left.is_empty() {
                        let mut state = lock(&shared);
                        if pending(&dir, &failed).is_empty() {
                            state.running = false;
                            return;
                        }
                        continue;
                    }
                    for name in left {
                        // Best effort: another process may be removing the
                        // same entry; what stays is tried again by the next.
                        if remove_tree(&dir.join(&name)).is_err() {
                            failed.insert(name);
                        }
                    }
                }
            });
        if let Ok(handle) = spawned {
            state.running = true;
            state.handle = Some(handle);
        }
    }

    /// Waits until the remover has stopped (gc removes what is left itself).
    pub(super) fn wait(&self) {
        let handle = lock(&self.state).handle.take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

fn lock(state: &Mutex<Remover>) -> MutexGuard<'_, Remover> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn pending(dir: &Path, failed: &HashSet<OsString>) -> Vec<OsString> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| Some(e.ok()?.file_name()))
        .filter(|n| !failed.contains(n))
        .collect()
}
