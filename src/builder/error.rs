//! What a build reports when it fails: one typed error per cause, and the
//! two failures a user acts on (a step that failed, a fixed output that
//! differs) with what to run next. Each message names its cause itself,
//! which is therefore not also chained as `source()` (printed once).

use std::io;
use std::path::PathBuf;

use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Graph(#[from] crate::graph::GraphError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Fetch(#[from] crate::fetch::FetchError),
    #[error("{package}: {message}")]
    Source { package: String, message: String },
    #[error("{package}: {error}")]
    Oci {
        package: String,
        error: crate::oci::Error,
    },
    #[error("{package}: unpacking the build root: {error}")]
    Unpack {
        package: String,
        error: crate::store::StoreError,
    },
    #[error("{package}: {what}: {error}")]
    Io {
        package: String,
        what: String,
        error: io::Error,
    },
    #[error("{package}: the sandbox refused the step: {error}")]
    Sandbox {
        package: String,
        error: sandbox::Error,
    },
    #[error("{0}")]
    StepFailed(Box<StepFailure>),
    #[error("{0}")]
    FixedOutput(Box<OutputMismatch>),
    #[error("{package}: remote cache: {message}")]
    RemoteCache { package: String, message: String },
    #[error("{package}: not built: its dependency {dependency} failed")]
    Cancelled { package: String, dependency: String },
}

/// A build step that did not exit 0: what ran, how it ended, where its log is.
#[derive(Debug)]
pub struct StepFailure {
    pub package: String,
    pub version: String,
    pub step: usize,
    pub steps: usize,
    pub command: String,
    pub status: String,
    pub log: PathBuf,
    pub tail: Vec<String>,
}

impl std::fmt::Display for StepFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: step {} of {} failed ({})\n  command: {}\n  log: {}\n  shell: imgrep shell {}",
            self.package,
            self.version,
            self.step,
            self.steps,
            self.status,
            self.command,
            self.log.display(),
            self.package
        )?;
        if !self.tail.is_empty() {
            write!(f, "\n  last lines of the log:")?;
            for l in &self.tail {
                write!(f, "\n  | {l}")?;
            }
        }
        Ok(())
    }
}

/// A fixed-output recipe whose build produced another layer than it declares.
#[derive(Debug)]
pub struct OutputMismatch {
    pub package: String,
    /// The recipe's package.toml.
    pub path: PathBuf,
    pub expected: Digest,
    pub got: Digest,
    /// The work directory was kept for `imgrep shell`.
    pub kept: bool,
}

impl std::fmt::Display for OutputMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: [output] diff_id: {} is a fixed-output recipe, and its build produced a \
             different layer\n  expected: {}\n  got:      {}",
            self.path.display(),
            self.package,
            self.expected,
            self.got
        )?;
        if self.kept {
            write!(f, "\n  shell: imgrep shell {}", self.package)?;
        }
        Ok(())
    }
}
