//! `imgrep keygen`: a minisign key pair for signing statements.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{Global, Outcome};
use crate::sign::keys::{self, PasswordSource};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write PREFIX.pub and PREFIX.key (minisign format, the secret key mode 0600).
    #[arg(long, value_name = "PREFIX")]
    pub out: PathBuf,
    /// Leave the secret key unencrypted (like `minisign -G -W`).
    #[arg(long)]
    pub no_password: bool,
    /// Read the new key's password from the first line of FILE instead of
    /// the environment variable IMGREP_KEY_PASSWORD or the terminal.
    #[arg(long, value_name = "FILE", conflicts_with = "no_password")]
    pub password_file: Option<PathBuf>,
    /// Replace existing key files.
    #[arg(long)]
    pub force: bool,
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    let base = global.directory.as_deref().unwrap_or(Path::new(""));
    let out = base.join(&args.out);
    let password = PasswordSource {
        file: args.password_file.map(|f| base.join(f)),
    };
    let generated = keys::generate(&out, !args.no_password, &password, args.force)?;
    if global.json {
        println!("{}", serde_json::to_string(&generated)?);
    } else {
        crate::progress::info(format_args!(
            "key {}: public key {}, secret key {} ({})",
            generated.key_id,
            generated.public_key.display(),
            generated.secret_key.display(),
            if generated.encrypted {
                "encrypted"
            } else {
                "not encrypted"
            }
        ));
    }
    Ok(Outcome::Success)
}
