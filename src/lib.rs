//! imgrep: reproducible, bootstrappable OCI images, published under an M-of-N
//! signature threshold. See docs/ARCHITECTURE.md for where each contract lives.

pub mod archive;
pub mod attest;
/// Writing untrusted trees beneath a root (it lives in the sandbox crate so
/// that the sandbox's own tree walks can use the same API).
pub use sandbox::beneath;
pub mod builder;
pub mod canonical;
pub mod cli;
pub mod compress;
pub mod ddc;
pub mod deb;
pub mod digest;
pub mod doctor;
pub mod fetch;
pub mod fsutil;
pub mod graph;
pub mod hostids;
pub mod layer;
pub mod mirror;
pub mod nar;
pub mod oci;
pub mod progress;
pub mod recipe;
pub mod registry;
pub mod reproduce;
pub mod seedtar;
pub mod sign;
pub mod statement;
pub mod store;
pub mod unpack;
pub mod warn;

/// SOURCE_DATE_EPOCH of every build unless a recipe overrides it:
/// 1980-01-01T00:00:00Z, the earliest time every archive format (zip
/// included) can store, and never the current time.
pub const DEFAULT_SOURCE_DATE_EPOCH: i64 = 315_532_800;
