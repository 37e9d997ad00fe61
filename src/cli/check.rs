//! `imgrep check LAYOUT`: verify every digest and size in an OCI image layout.

use std::path::PathBuf;

use anyhow::Context;

use super::{Global, Outcome};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// OCI image layout directory.
    pub layout: PathBuf,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<Outcome> {
    let report = crate::oci::check(&args.layout)
        .with_context(|| format!("checking {}", args.layout.display()))?;
    if global.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for p in &report.problems {
            println!("{}", p);
        }
        super::report(
            &format!(
                "{}: {} image(s), {} blob(s) verified, {} problem(s)\n",
                args.layout.display(),
                report.images.len(),
                report.blobs_verified,
                report.problems.len()
            ),
            !report.problems.is_empty(),
        );
    }
    Ok(if report.problems.is_empty() {
        Outcome::Success
    } else {
        Outcome::CheckFailed
    })
}
