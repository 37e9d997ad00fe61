//! The store's cache of unpacked layers, `layers/sha256/<diff_id>/`: each
//! unpacked once (safely, docs/store.md), verified against its diff_id,
//! then shared read-only by every sandbox that needs it.

use std::io::{self, BufReader, Read};
use std::path::PathBuf;

use super::{Store, StoreError};
use crate::digest::Digest;
use crate::unpack::{unpack, UnpackOptions};

impl Store {
    /// The unpacked layer with this diff_id, from the cache or unpacked
    /// now from the (compressed or not) blob that `open_blob` opens. The
    /// diff_id is verified while unpacking; on a mismatch nothing is stored.
    /// The entry's top directory is read-only: mount it read-only (e.g. as
    /// an overlay lower directory) and never write into it.
    pub fn cached_layer<F, R>(&self, diff_id: &Digest, open_blob: F) -> Result<PathBuf, StoreError>
    where
        F: FnOnce() -> io::Result<R>,
        R: Read + Send,
    {
        let dest = self.layer_path(diff_id);
        if dest.is_dir() {
            return Ok(dest);
        }
        let _lock = self.lock_entry("layer", &diff_id.hex())?;
        if dest.is_dir() {
            return Ok(dest);
        }
        let tmp = self.temp_dir()?;
        let blob_err = |error| StoreError::Io {
            path: dest.clone(),
            error,
        };
        let blob = open_blob().map_err(blob_err)?;
        let label = format!("unpacking layer {}", &diff_id.hex()[..12]);
        let bar = crate::progress::bar(&label, None, true);
        let buffered = BufReader::with_capacity(128 * 1024, bar.wrap_read(blob));
        let (_, reader) = crate::archive::decompress(buffered).map_err(blob_err)?;
        let report = unpack(reader, tmp.path(), &UnpackOptions::LAYER_ALONE).map_err(|error| {
            StoreError::Layer {
                diff_id: *diff_id,
                error,
            }
        })?;
        bar.finish_and_clear();
        if report.diff_id != *diff_id {
            return Err(StoreError::DiffId {
                expected: *diff_id,
                got: report.diff_id,
            });
        }
        self.commit_dir(tmp, &dest, true)?;
        Ok(dest)
    }
}
