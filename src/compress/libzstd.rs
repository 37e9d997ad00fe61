//! libzstd's streaming compressor, driven through its C API.
//!
//! The zstd crate's typed parameters stop short of
//! `ZSTD_c_blockSplitterLevel`, which layer format 4 fixes (module docs of
//! `compress`), so the context is created and fed here. Everything unsafe
//! in this file is a call into libzstd with a context this type owns and
//! buffers that outlive the call.

use std::ffi::CStr;
use std::io::{self, Write};
use std::ptr::NonNull;

use zstd_sys as sys;

/// `ZSTD_c_blockSplitterLevel` (zstd.h, experimental: `ZSTD_c_experimentalParam20`).
pub(super) const BLOCK_SPLITTER_LEVEL: sys::ZSTD_cParameter =
    sys::ZSTD_cParameter::ZSTD_c_experimentalParam20;

/// An owned `ZSTD_CCtx`.
struct Context(NonNull<sys::ZSTD_CCtx>);

// SAFETY: a compression context is plain memory plus, in multithreaded mode,
// a pool libzstd synchronises itself; it may be used from any one thread at a
// time, which `&mut` guarantees.
unsafe impl Send for Context {}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: created by ZSTD_createCCtx and freed only here.
        unsafe { sys::ZSTD_freeCCtx(self.0.as_ptr()) };
    }
}

/// libzstd's result convention: an error code, or a count.
fn check(code: usize) -> io::Result<usize> {
    // SAFETY: both functions only inspect the code; the name is a static string.
    if unsafe { sys::ZSTD_isError(code) } == 0 {
        return Ok(code);
    }
    let name = unsafe { CStr::from_ptr(sys::ZSTD_getErrorName(code)) };
    Err(io::Error::other(format!(
        "zstd: {}",
        name.to_string_lossy()
    )))
}

/// A writer that compresses into `W` as one zstd frame.
pub struct ZstdEncoder<W: Write> {
    cctx: Context,
    inner: W,
    out: Vec<u8>,
}

impl<W: Write> ZstdEncoder<W> {
    /// A frame with `params` set, in order, on a fresh context.
    pub fn new(inner: W, params: &[(sys::ZSTD_cParameter, i32)]) -> io::Result<Self> {
        // SAFETY: allocation only; a null result is handled.
        let cctx = NonNull::new(unsafe { sys::ZSTD_createCCtx() })
            .map(Context)
            .ok_or_else(|| io::Error::other("zstd: cannot allocate a compression context"))?;
        for &(param, value) in params {
            // SAFETY: the context is valid; libzstd checks the parameter and value.
            check(unsafe { sys::ZSTD_CCtx_setParameter(cctx.0.as_ptr(), param, value) })?;
        }
        // SAFETY: a constant of the library.
        let out_size = unsafe { sys::ZSTD_CStreamOutSize() };
        Ok(ZstdEncoder {
            cctx,
            inner,
            out: vec![0; out_size],
        })
    }

    /// One ZSTD_compressStream2 call; whatever it produced goes to `inner`.
    /// Returns the input consumed and libzstd's "bytes left to flush" hint.
    fn step(&mut self, input: &[u8], end: sys::ZSTD_EndDirective) -> io::Result<(usize, usize)> {
        let mut inb = sys::ZSTD_inBuffer {
            src: input.as_ptr().cast(),
            size: input.len(),
            pos: 0,
        };
        let mut outb = sys::ZSTD_outBuffer {
            dst: self.out.as_mut_ptr().cast(),
            size: self.out.len(),
            pos: 0,
        };
        // SAFETY: both buffers point into live slices of the stated sizes.
        let left = check(unsafe {
            sys::ZSTD_compressStream2(self.cctx.0.as_ptr(), &mut outb, &mut inb, end)
        })?;
        self.inner.write_all(&self.out[..outb.pos])?;
        Ok((inb.pos, left))
    }

    /// Ends the frame and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        while self.step(&[], sys::ZSTD_EndDirective::ZSTD_e_end)?.1 != 0 {}
        Ok(self.inner)
    }
}

impl<W: Write> Write for ZstdEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut done = 0;
        // libzstd may take less than offered while its job buffers are full.
        while done < buf.len() {
            done += self
                .step(&buf[done..], sys::ZSTD_EndDirective::ZSTD_e_continue)?
                .0;
        }
        Ok(done)
    }

    /// Frame boundaries and block cuts must not depend on when a caller
    /// flushes, so nothing is forced out here.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
