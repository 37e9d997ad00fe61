//! The hashing stages of the packing pipeline, each on a thread of its own.
//!
//! A layer needs two sha256 passes, over the tar stream (diff_id) and over
//! the compressed blob (digest): for 680 MB of half-incompressible data that
//! is about 1 GB of hashing, 0.7 s of one core here, over half of what
//! libzstd needs for the same data. Done inline, both passes sat on the thread that reads
//! the tree and feeds the compressor, and the compressor waited for them.
//! Here the reading thread hands 256 KiB chunks to the tar stage (feed the
//! compressor, then hash) and the compressor's output goes to the blob stage
//! (write the file, then hash). Every stage sees the stream in order, so the
//! bytes are those of a single thread. Memory: [`CHUNKS`] chunks per stage.

use std::io::{self, Write};
use std::panic::resume_unwind;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::{Scope, ScopedJoinHandle};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

/// Bytes handed from one thread to the next at a time: small enough to be
/// in a cache still when the next stage reads them (on the generated tree of
/// `bench layers` the blob stage took 0.72 s of CPU with 1 MiB chunks, 0.55 s
/// with these).
const CHUNK: usize = 256 << 10;
/// Chunks a stage owns: one being filled, the rest queued or being hashed.
const CHUNKS: usize = 8;

struct Chunk {
    data: Box<[u8]>,
    len: usize,
}

impl Chunk {
    fn new() -> Chunk {
        Chunk {
            data: vec![0; CHUNK].into_boxed_slice(),
            len: 0,
        }
    }
}

/// What a stage's thread returns: its sink, the sha256 and the length of
/// everything that went through it.
type Finished<S> = io::Result<(S, Digest, u64)>;

/// The writing end of a stage whose thread writes every byte to the sink `S`
/// and hashes it. Call [`HashStage::finish`] to get the sink and digest
/// back; a stage dropped unfinished stops its thread once the queue drains.
pub(super) struct HashStage<'scope, S> {
    chunk: Chunk,
    allocated: usize,
    queue: Option<SyncSender<Chunk>>,
    returned: Receiver<Chunk>,
    thread: Option<ScopedJoinHandle<'scope, Finished<S>>>,
}

impl<'scope, S: Write + Send + 'scope> HashStage<'scope, S> {
    pub(super) fn spawn(scope: &'scope Scope<'scope, '_>, sink: S) -> Self {
        let (queue, chunks) = mpsc::sync_channel::<Chunk>(CHUNKS);
        // Unbounded, but never holds more than the CHUNKS that exist.
        let (give_back, returned) = mpsc::channel();
        let thread = scope.spawn(move || {
            let mut sink = sink;
            let mut hasher = Sha256::new();
            let mut len = 0u64;
            for mut chunk in chunks {
                let bytes = &chunk.data[..chunk.len];
                // Downstream first: the compressor's workers get the data sooner.
                sink.write_all(bytes)?;
                hasher.update(bytes);
                len += bytes.len() as u64;
                chunk.len = 0;
                // The writing end may be gone already (it failed elsewhere).
                let _ = give_back.send(chunk);
            }
            Ok((sink, Digest::from_bytes(hasher.finalize().into()), len))
        });
        HashStage {
            chunk: Chunk::new(),
            allocated: 1,
            queue: Some(queue),
            returned,
            thread: Some(thread),
        }
    }

    /// The free part of the current chunk: read into it, then [`Self::commit`].
    /// Saves copying file contents through a buffer of the caller's.
    pub(super) fn spare(&mut self) -> &mut [u8] {
        &mut self.chunk.data[self.chunk.len..]
    }

    /// Adds the first `n` bytes of [`Self::spare`] to the stream.
    pub(super) fn commit(&mut self, n: usize) -> io::Result<()> {
        assert!(n <= CHUNK - self.chunk.len, "committed more than was spare");
        self.chunk.len += n;
        if self.chunk.len == CHUNK {
            self.send()?;
        }
        Ok(())
    }

    /// Queues the current chunk and starts a free one.
    fn send(&mut self) -> io::Result<()> {
        let next = if self.allocated < CHUNKS {
            self.allocated += 1;
            Chunk::new()
        } else {
            match self.returned.recv() {
                Ok(chunk) => chunk,
                Err(_) => return Err(self.stopped()),
            }
        };
        let full = std::mem::replace(&mut self.chunk, next);
        self.queue_chunk(full)
    }

    fn queue_chunk(&mut self, chunk: Chunk) -> io::Result<()> {
        let sent = match &self.queue {
            Some(queue) => queue.send(chunk).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.stopped())
        }
    }

    /// The stage's thread ended before it was told to: its error.
    fn stopped(&mut self) -> io::Error {
        self.queue = None;
        match self.thread.take().map(ScopedJoinHandle::join) {
            Some(Ok(Err(e))) => e,
            Some(Err(panic)) => resume_unwind(panic),
            Some(Ok(Ok(_))) | None => io::Error::other("a hashing stage of the layer stopped"),
        }
    }

    /// Sends what is left, waits for the thread and returns its sink, the
    /// digest and the length of the stream.
    pub(super) fn finish(mut self) -> Finished<S> {
        if self.chunk.len > 0 {
            let last = std::mem::replace(
                &mut self.chunk,
                Chunk {
                    data: Box::new([]),
                    len: 0,
                },
            );
            self.queue_chunk(last)?;
        }
        self.queue = None;
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or_else(|panic| resume_unwind(panic)),
            None => Err(io::Error::other("a hashing stage of the layer stopped")),
        }
    }
}

impl<'scope, S: Write + Send + 'scope> Write for HashStage<'scope, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let spare = self.spare();
        let n = spare.len().min(buf.len());
        spare[..n].copy_from_slice(&buf[..n]);
        self.commit(n)?;
        Ok(n)
    }

    /// Chunks move on when full and at [`HashStage::finish`]; the bytes of
    /// the stream do not depend on when, so there is nothing to force here.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// Accepts `limit` bytes, then fails every write.
    struct Full {
        taken: Vec<u8>,
        limit: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.taken.len() + buf.len() > self.limit {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
            }
            self.taken.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn passes_every_byte_on_in_order_and_hashes_them() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, (CHUNKS + 2) * CHUNK + 3] {
            let data = bytes(len);
            let (sink, digest, n) = std::thread::scope(|scope| {
                let mut stage = HashStage::spawn(scope, Vec::new());
                // Writes of odd sizes and reads into the spare room, mixed.
                let mut rest = &data[..];
                while !rest.is_empty() {
                    let take = rest.len().min(70_001);
                    stage.write_all(&rest[..take / 2]).unwrap();
                    let spare = stage.spare();
                    let n = spare.len().min(take - take / 2);
                    spare[..n].copy_from_slice(&rest[take / 2..take / 2 + n]);
                    stage.commit(n).unwrap();
                    rest = &rest[take / 2 + n..];
                }
                stage.finish().unwrap()
            });
            assert!(sink == data, "len {len}: bytes differ");
            assert_eq!(digest, Digest::of(&data), "len {len}");
            assert_eq!(n, len as u64);
        }
    }

    #[test]
    fn a_failing_sink_fails_the_writer_with_its_error() {
        let data = bytes((CHUNKS + 4) * CHUNK);
        let err = std::thread::scope(|scope| {
            let sink = Full {
                taken: Vec::new(),
                limit: 2 * CHUNK,
            };
            let mut stage = HashStage::spawn(scope, sink);
            // Everything fits in the queue only if the thread kept taking it.
            match stage.write_all(&data) {
                Err(e) => e,
                Ok(()) => stage.finish().err().expect("the sink refused bytes"),
            }
        });
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(err.to_string(), "disk full");
    }

    #[test]
    fn a_failure_seen_only_at_the_end_is_reported_by_finish() {
        let err = std::thread::scope(|scope| {
            let sink = Full {
                taken: Vec::new(),
                limit: 10,
            };
            let mut stage = HashStage::spawn(scope, sink);
            stage.write_all(&bytes(100)).unwrap();
            stage.finish().err().expect("the sink refused bytes")
        });
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    }
}
