//! Shared by the tests that fetch real packages' sources: whether the
//! Debian archive behind `mirror://debian/` answers.

use std::time::Duration;

/// Whether the Debian archive that `mirror://debian/` resolves to answers
/// at all (any HTTP status counts), and where it is, for the message.
pub fn debian_archive() -> Result<String, String> {
    let config = imgrep::fetch::FetchConfig::load().map_err(|e| e.to_string())?;
    let urls = config
        .mirrors
        .resolve("mirror://debian/dists/")
        .map_err(|e| e.to_string())?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(20)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut errors = Vec::new();
    for url in urls {
        match agent.get(&url).call() {
            Ok(_) => return Ok(url),
            Err(e) => errors.push(format!("{url}: {e}")),
        }
    }
    Err(errors.join("; "))
}
