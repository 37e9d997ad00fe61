//! The seed tarball (docs/air-gap.md): one deterministic `.tar.gz` holding
//! everything a bootstrap on a machine without network needs, and the
//! strict reading of one.
//!
//! Named `seedtar` because "seed" already names the hex0 seed of seeds/,
//! which a seed tarball carries, and "bundle" names runtime-closure images.
//!
//! The tarball is packed by the layer packer (src/layer/: byte-wise path
//! order, fixed modes and mtime, pinned gzip), so the same recipes, sources
//! and manifests always give the same bytes. `index.json` lists every other
//! member with its sha256; `index.json.sha256` holds the index's own sha256,
//! in `sha256sum -c` format. A reader accepts the tarball only when all of it
//! holds (module [`open`]).

mod bootstrap;
mod check;
mod export;
mod index;
mod open;

pub use bootstrap::{bootstrap, BootstrapOptions, Bootstrapped, PackageResult};
pub use check::{check_statement, StatementCheck};
pub use export::{export, ExportOptions, Exported};
pub use index::{Index, Member, MemberKind, SourceEntry, INDEX, INDEX_SHA256, INDEX_TYPE};
pub use open::{open, Opened};

use std::path::PathBuf;

/// Where the members live inside the tarball, relative to its root.
pub const README: &str = "README";
/// Verified source files, by sha256: `sources/sha256/<hex>`.
pub const SOURCES_DIR: &str = "sources";
/// Verified source trees, unpacked, by NAR sha256: `trees/nar-sha256/<hex>/`.
pub const TREES_DIR: &str = "trees/nar-sha256";

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The I/O error is shown in the message, not chained, so that it is
    /// printed once.
    #[error("{}: {what}: {error}", path.display())]
    Io {
        path: PathBuf,
        what: String,
        error: std::io::Error,
    },
    #[error(transparent)]
    Recipe(#[from] crate::recipe::RecipeError),
    #[error(transparent)]
    Graph(#[from] crate::graph::GraphError),
    /// Boxed: a build error carries a log tail.
    #[error(transparent)]
    Build(Box<crate::builder::BuildError>),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{package}: {message}")]
    Source { package: String, message: String },
    #[error("packing the seed tarball: {0}")]
    Pack(crate::layer::Error),
    #[error("the seed tarball's recipes: {0}")]
    Recipes(crate::recipe::RecipeError),
    #[error("{package}: not in the seed tarball (it holds: {closure})")]
    NotInSeed { package: String, closure: String },
    #[error(transparent)]
    Manifest(#[from] crate::sign::manifests::ManifestError),
    #[error(transparent)]
    Trust(#[from] crate::sign::trust::TrustError),
    #[error(transparent)]
    Policy(#[from] crate::sign::policy::PolicyError),
    #[error(transparent)]
    Verify(#[from] crate::sign::verify::VerifyError),
    /// The tarball is not what its index says: nothing from it may be used.
    #[error("{}: refused, nothing was built: {reason}", file.display())]
    Corrupt { file: PathBuf, reason: String },
}

impl From<crate::layer::Error> for SeedError {
    fn from(e: crate::layer::Error) -> Self {
        SeedError::Pack(e)
    }
}

impl From<crate::builder::BuildError> for SeedError {
    fn from(e: crate::builder::BuildError) -> Self {
        SeedError::Build(Box::new(e))
    }
}

impl SeedError {
    fn io(
        path: impl Into<PathBuf>,
        what: impl Into<String>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let (path, what) = (path.into(), what.into());
        move |error| SeedError::Io { path, what, error }
    }
}
