//! Errors of a recipe tree: every problem found, each at `file:line:column`.

use std::fmt;
use std::path::PathBuf;

/// 1-based line and column (columns count characters).
pub type Position = (usize, usize);

/// One problem in one recipe file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub path: PathBuf,
    /// `None` for file-level problems such as an unreadable file.
    pub position: Option<Position>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => {
                write!(
                    f,
                    "{}:{line}:{column}: {}",
                    self.path.display(),
                    self.message
                )
            }
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// A recipe tree or file that does not validate: all its problems, in file
/// and position order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RecipeError {
    pub diagnostics: Vec<Diagnostic>,
}

impl RecipeError {
    pub(crate) fn new(mut diagnostics: Vec<Diagnostic>) -> Self {
        diagnostics.sort();
        diagnostics.dedup();
        RecipeError { diagnostics }
    }
}

impl fmt::Display for RecipeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.diagnostics.as_slice() {
            [one] => write!(f, "{one}"),
            all => {
                write!(f, "{} problems in recipes:", all.len())?;
                for d in all {
                    write!(f, "\n{d}")?;
                }
                Ok(())
            }
        }
    }
}
