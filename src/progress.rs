//! Progress of a transfer (downloads of sources, blobs to and from
//! registries): one bar style on stderr, which indicatif hides when stderr
//! is not a terminal, and one copy loop that feeds it.

use std::io::{self, Read, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar labelled `label` for `len` bytes (unknown: a byte counter), or a
/// hidden one when `shown` is false.
pub fn bar(label: &str, len: Option<u64>, shown: bool) -> ProgressBar {
    if !shown {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    let template = if len.is_some() {
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}"
    } else {
        "{msg} {bytes} {bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label.to_owned());
    bar
}

/// Why [`copy`] stopped: the reader failed (after `read` bytes), or the writer.
#[derive(Debug)]
pub enum CopyError {
    Read { read: u64, error: io::Error },
    Write(io::Error),
}

/// Copies `reader` to `out` until the end, advancing `bar`; returns the
/// number of bytes. The bar is cleared at the end, left as it was on error.
pub fn copy(
    reader: &mut dyn Read,
    out: &mut dyn Write,
    bar: &ProgressBar,
) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                bar.abandon();
                return Err(CopyError::Read { read: total, error });
            }
        };
        if let Err(e) = out.write_all(&buf[..n]) {
            bar.abandon();
            return Err(CopyError::Write(e));
        }
        total += n as u64;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(total)
}
