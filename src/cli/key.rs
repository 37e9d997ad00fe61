//! `imgrep key pem FILE.pub`: a minisign public key in the forms other
//! tools read.

use std::path::PathBuf;

use anyhow::Result;

use super::{Global, Outcome};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: KeyCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Print the Ed25519 public key as PEM (SubjectPublicKeyInfo), for
    /// containers-policy.json's sigstoreSigned `keyPath` and cosign.
    Pem {
        /// A minisign public key file (imgrep keygen's or minisign's .pub).
        #[arg(value_name = "FILE")]
        public_key: PathBuf,
    },
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    match args.command {
        KeyCommand::Pem { public_key } => {
            let path = super::tree_root(global).join(public_key);
            let key = crate::sign::keys::read_public_key(&path)?;
            super::print(&crate::sign::raw::public_pem(&key))
        }
    }
}
