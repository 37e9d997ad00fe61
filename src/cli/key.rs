//! `imgrep key pem FILE.pub` and `imgrep key pgp FILE.key`: a signer's
//! minisign key in the forms other tools read.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;

use anyhow::{bail, Result};

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
    /// Print the key as an OpenPGP public key (ASCII-armored), for
    /// containers-policy.json's signedBy `keyPath` and `gpg --import`.
    ///
    /// The same Ed25519 key as a v4 EdDSA OpenPGP key created at the Unix
    /// epoch, so its fingerprint is the same every time. It takes the
    /// secret key because an OpenPGP key carries a user ID signed by the
    /// key itself (GnuPG imports none without one). `imgrep push
    /// --lookaside` signs with it (docs/attest.md). `--json` prints the
    /// fingerprint, user ID and armored key.
    Pgp {
        /// A minisign secret key file (imgrep keygen's or minisign's .key).
        #[arg(value_name = "FILE")]
        secret_key: PathBuf,
        /// The user ID the key is certified under (default: `imgrep signer
        /// KEYID`, the minisign key id). It does not change the fingerprint.
        #[arg(long, value_name = "TEXT")]
        user_id: Option<String>,
        /// Write binary OpenPGP packets (`gpg --export`) instead of armor;
        /// refused when standard output is a terminal.
        #[arg(long)]
        binary: bool,
        /// Read the key's password from the first line of FILE.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    let root = super::tree_root(global);
    match args.command {
        KeyCommand::Pem { public_key } => {
            let key = crate::sign::keys::read_public_key(&root.join(public_key))?;
            super::print(&crate::sign::raw::public_pem(&key))
        }
        KeyCommand::Pgp {
            secret_key,
            user_id,
            binary,
            password_file,
        } => {
            if binary && global.json {
                bail!("--binary and --json exclude each other");
            }
            let key = crate::sign::keys::load_secret_key(
                &root.join(secret_key),
                &crate::sign::keys::PasswordSource {
                    file: password_file.map(|f| root.join(f)),
                },
            )?;
            let user_id = user_id.unwrap_or_else(|| crate::attest::pgp::default_user_id(&key));
            let pgp = crate::attest::pgp::PgpKey::new(&key, &user_id)?;
            if global.json {
                let out = serde_json::json!({
                    "key_id": key.id.to_string(),
                    "fingerprint": pgp.fingerprint(),
                    "user_id": user_id,
                    "public_key": pgp.public_armored(),
                });
                return super::print(&format!("{out}\n"));
            }
            crate::progress::info(format_args!(
                "OpenPGP key {} ({user_id})",
                pgp.fingerprint()
            ));
            if !binary {
                return super::print(&pgp.public_armored());
            }
            let mut out = std::io::stdout().lock();
            if out.is_terminal() {
                bail!("--binary writes OpenPGP packets: redirect standard output to a file");
            }
            out.write_all(&pgp.public_binary())?;
            out.flush()?;
            Ok(Outcome::Success)
        }
    }
}
