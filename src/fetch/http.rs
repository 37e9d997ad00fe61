//! HTTP and HTTPS downloads (ureq with rustls), streamed to a writer, with
//! a progress bar (`crate::progress`).

use std::io::Write;
use std::time::Duration;

use crate::progress::CopyError;

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
        let bar = crate::progress::bar(label, body.content_length(), self.progress);
        crate::progress::copy(&mut body.as_reader(), out, &bar).map_err(|e| match e {
            CopyError::Read { read, error } => {
                format!("reading the body after {read} bytes: {error}")
            }
            CopyError::Write(e) => format!("writing to the store: {e}"),
        })
    }
}
