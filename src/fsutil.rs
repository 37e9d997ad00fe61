//! File-system helpers shared by the store, the layout writer and fetching.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, fsync, rename over the target, fsync of the directory. A reader
/// sees either the old file or the complete new one, never a prefix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// fsyncs a directory so that a rename inside it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Bytes after which [`Writeback`] hands written data to the disk.
const WRITEBACK_CHUNK: u64 = 8 << 20;

/// A file writer that starts the kernel's writeback of every
/// [`WRITEBACK_CHUNK`] as soon as it is written, and waits for the chunk
/// before it. The fsync that makes the file durable then finds at most two
/// chunks left, instead of the whole file: writing a 680 MB layer to disk
/// overlaps its compression rather than following it. Dirty page-cache memory
/// stays bounded by two chunks as a side effect. Durability still comes from
/// the caller's fsync; these hints change nothing on failure.
pub struct Writeback<W> {
    inner: W,
    written: u64,
    /// Start of the range whose writeback has not been started yet.
    pending: u64,
    /// Start of the range whose writeback was started last.
    started: u64,
}

impl<W: Write + AsFd> Writeback<W> {
    pub fn new(inner: W) -> Self {
        Writeback {
            inner,
            written: 0,
            pending: 0,
            started: 0,
        }
    }

    pub fn into_inner(self) -> W {
        self.inner
    }

    fn start_writeback(&mut self) {
        let fd = self.inner.as_fd().as_raw_fd();
        let range = |from: u64, to: u64| {
            (
                libc::off64_t::try_from(from).unwrap_or(libc::off64_t::MAX),
                libc::off64_t::try_from(to - from).unwrap_or(libc::off64_t::MAX),
            )
        };
        // SAFETY: sync_file_range only reads the descriptor and the numbers.
        // Failures are ignored on purpose: an unsupported file system just
        // leaves all the work to the final fsync, which reports real errors.
        unsafe {
            let (off, len) = range(self.started, self.pending);
            if len > 0 {
                libc::sync_file_range(fd, off, len, libc::SYNC_FILE_RANGE_WAIT_BEFORE);
            }
            let (off, len) = range(self.pending, self.written);
            libc::sync_file_range(fd, off, len, libc::SYNC_FILE_RANGE_WRITE);
        }
        self.started = self.pending;
        self.pending = self.written;
    }
}

impl<W: Write + AsFd> Write for Writeback<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        if self.written - self.pending >= WRITEBACK_CHUNK {
            self.start_writeback();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writeback_passes_every_byte_through() {
        let tmp = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..3 * WRITEBACK_CHUNK as usize + 12_345)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let mut w = Writeback::new(&tmp);
        for chunk in data.chunks(1_000_003) {
            w.write_all(chunk).unwrap();
        }
        assert_eq!(w.written, data.len() as u64);
        // Writeback was started chunk by chunk and only a tail is left.
        assert!(w.started < w.pending && w.pending >= 2 * WRITEBACK_CHUNK);
        assert!(w.written - w.pending < WRITEBACK_CHUNK);
        let back = std::fs::read(format!("/proc/self/fd/{}", tmp.as_raw_fd())).unwrap();
        assert!(back == data);
    }
}
