//! HTTP and HTTPS downloads (ureq with rustls), streamed to a writer, with
//! a progress bar (`crate::progress`).

use std::io::Write;
use std::time::Duration;

use crate::progress::CopyError;

/// The host's trust store, as curl, apt and pip use it: the PEM bundle
/// that `SSL_CERT_FILE` names, else the system bundle that
/// update-ca-certificates maintains; the certificates built into imgrep
/// (Mozilla's, through webpki-roots) only when neither has any.
fn system_roots() -> ureq::tls::RootCerts {
    let path = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| SYSTEM_BUNDLE.into());
    let certs: Vec<_> = std::fs::read(&path)
        .map(|pem| {
            ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if certs.is_empty() {
        ureq::tls::RootCerts::WebPki
    } else {
        ureq::tls::RootCerts::new_with_certs(&certs)
    }
}

const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

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
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(system_roots())
                    .build(),
            )
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
