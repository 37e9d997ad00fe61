//! HTTP and HTTPS downloads (ureq with rustls), streamed to a writer, with
//! a progress bar that indicatif hides when stderr is not a terminal.

use std::io::{self, Read, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Http {
    agent: ureq::Agent,
    progress: bool,
}

impl Http {
    pub fn new(timeout: Duration, progress: bool) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .timeout_per_read(Some(timeout))
            .max_redirects(10)
            .user_agent(concat!("imgrep/", env!("CARGO_PKG_VERSION")))
            .build();
        Http {
            agent: config.into(),
            progress,
        }
    }

    /// Streams the body of `url` into `out`; returns its length. The error
    /// is a sentence for the list of failed attempts.
    pub fn download(&self, url: &str, label: &str, out: &mut dyn Write) -> Result<u64, String> {
        let response = self.agent.get(url).call().map_err(|e| match e {
            ureq::Error::StatusCode(code) => format!("HTTP status {code}"),
            other => other.to_string(),
        })?;
        let mut body = response.into_body();
        let bar = self.bar(label, body.content_length());
        let mut reader = body.as_reader();
        let mut buf = vec![0u8; 128 * 1024];
        let mut total = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    bar.abandon();
                    return Err(format!("reading the body after {total} bytes: {e}"));
                }
            };
            out.write_all(&buf[..n])
                .map_err(|e| format!("writing to the store: {e}"))?;
            total += n as u64;
            bar.inc(n as u64);
        }
        bar.finish_and_clear();
        Ok(total)
    }

    fn bar(&self, label: &str, len: Option<u64>) -> ProgressBar {
        if !self.progress {
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
}
