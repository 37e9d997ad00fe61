//! Errors of the sandbox. They cross the process boundary between the helper
//! and its caller as JSON, so they carry rendered reasons, not `io::Error`s.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Error {
    /// The spec itself is unusable (a relative path, an empty argv, ...).
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    /// A host path named in the spec is missing or unusable.
    #[error("{what} {path}: {reason}")]
    Path {
        what: String,
        path: PathBuf,
        reason: String,
    },
    /// The command cannot be started inside the root.
    #[error("command {command:?}: {reason}")]
    Command { command: String, reason: String },
    /// Limits were required (`strict_limits`) but cannot be enforced.
    #[error("limits cannot be enforced: {0}")]
    Limits(String),
    /// A step of building the sandbox failed.
    #[error("sandbox setup: {step}: {reason}")]
    Setup { step: String, reason: String },
    /// The helper process could not be started or broke its protocol.
    #[error("sandbox helper: {0}")]
    Helper(String),
    /// The caller's [`crate::Fill`] could not lay out an in-memory
    /// directory: its own reason.
    #[error("{0}")]
    Fill(String),
}

impl Error {
    pub(crate) fn setup(step: impl Into<String>, err: impl std::fmt::Display) -> Error {
        Error::Setup {
            step: step.into(),
            reason: err.to_string(),
        }
    }

    pub(crate) fn path(
        what: impl Into<String>,
        path: impl Into<PathBuf>,
        reason: impl std::fmt::Display,
    ) -> Error {
        Error::Path {
            what: what.into(),
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
