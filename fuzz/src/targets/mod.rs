//! One module per target; each exposes `run(&[u8])`.

pub mod deb;
pub mod keys;
pub mod manifest;
pub mod nar;
pub mod policy;
pub mod recipe;
pub mod reference;
pub mod signature;
pub mod statement;
pub mod tar;
pub mod unpack;
