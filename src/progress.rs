//! What imgrep says on stderr while it works: progress bars of long
//! operations (one style, which indicatif draws only when stderr is a
//! terminal), the copy loop that feeds a transfer's bar, informational
//! lines, and the process-wide quiet mode (`-q`) that silences both.
//! Errors and warnings are never silenced.

use std::fmt::Display;
use std::io::{self, IsTerminal, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

static QUIET: AtomicBool = AtomicBool::new(false);

/// Quiet mode for the rest of the process (`imgrep -q`).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether quiet mode is on.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Every bar of the process, drawn together (builds of `-j N` run side by
/// side), so that lines printed meanwhile go above them.
fn multi() -> &'static MultiProgress {
    static MULTI: OnceLock<MultiProgress> = OnceLock::new();
    MULTI.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

/// Prints an informational line on stderr (above the bars), unless quiet.
pub fn info(text: impl Display) {
    if !quiet() {
        multi().suspend(|| eprintln!("{text}"));
    }
}

/// A bar labelled `label` for `len` bytes (unknown: a byte counter), or a
/// hidden one when `shown` is false or in quiet mode.
pub fn bar(label: &str, len: Option<u64>, shown: bool) -> ProgressBar {
    if !shown || quiet() {
        return ProgressBar::hidden();
    }
    let bar = multi().add(ProgressBar::with_draw_target(
        len,
        ProgressDrawTarget::hidden(),
    ));
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

/// A spinner for work of unknown length (a build, packing a layer): its
/// label, the time it has taken, and what [`Spinner::say`] last said.
/// Hidden in quiet mode and when stderr is not a terminal; cleared when
/// dropped.
pub struct Spinner(ProgressBar);

impl Spinner {
    pub fn new(label: &str) -> Spinner {
        // Not even the ticking thread where nothing would be drawn.
        if quiet() || !io::stderr().is_terminal() {
            return Spinner::hidden();
        }
        let bar = multi().add(ProgressBar::new_spinner());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {wide_msg}")
        {
            bar.set_style(style);
        }
        bar.set_prefix(label.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        Spinner(bar)
    }

    /// A spinner that is never drawn.
    pub fn hidden() -> Spinner {
        Spinner(ProgressBar::hidden())
    }

    /// What the work is doing now.
    pub fn say(&self, what: impl Into<std::borrow::Cow<'static, str>>) {
        self.0.set_message(what);
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
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
