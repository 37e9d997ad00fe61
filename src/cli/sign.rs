//! `imgrep sign`: sign the statements of packages this signer rebuilt.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{Global, Outcome};
use crate::sign::image::{self, ImageError};
use crate::sign::keys::{self, PasswordSource};
use crate::sign::manifests::{Manifests, PackageSpec};
use crate::sign::{sign_package, SignError};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Packages to sign, as NAME:VERSION, or NAME (its versions built
    /// locally). None: every statement whose image is in the layout.
    #[arg(value_name = "PKG")]
    pub packages: Vec<PackageSpec>,
    /// The minisign secret key (made by `imgrep keygen` or `minisign -G`).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The role to sign as, bound into the signature's trusted comment.
    #[arg(long, default_value = "rebuilder")]
    pub role: String,
    /// The OCI layout holding this signer's own builds, tagged NAME:VERSION.
    #[arg(long, value_name = "DIR", default_value = "out")]
    pub layout: PathBuf,
    /// The manifests directory holding statements and signatures.
    #[arg(long, value_name = "DIR", default_value = "manifests")]
    pub manifests: PathBuf,
    /// Read the key's password from the first line of FILE instead of the
    /// environment variable IMGREP_KEY_PASSWORD or the terminal.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    let base = global.directory.as_deref().unwrap_or(Path::new(""));
    let manifests = Manifests::new(base.join(&args.manifests));
    let layout = base.join(&args.layout);
    if !crate::sign::signature::valid_role(&args.role) {
        return Err(SignError::Role(args.role).into());
    }
    if !layout.join("index.json").is_file() {
        bail!(
            "{}: not an OCI image layout (no index.json); pass --layout DIR with your own builds",
            layout.display()
        );
    }
    // A version named on the command line must be built locally (or it is
    // an error below); otherwise versions without a local image are skipped.
    let mut packages = manifests.resolve(&args.packages)?;
    packages.retain(|pv| {
        let named = args
            .packages
            .iter()
            .any(|s| s.name == pv.name && s.version.as_ref() == Some(&pv.version));
        let local = !matches!(
            image::local_image(&layout, &pv.name, &pv.version),
            Err(ImageError::NotFound { .. })
        );
        if !named && !local {
            crate::progress::info(format_args!(
                "skipping {pv}: not built locally (no image tagged {pv} in {})",
                layout.display()
            ));
        }
        named || local
    });
    if packages.is_empty() {
        bail!(
            "nothing to sign: no statement under {} has an image in {}",
            manifests.root().display(),
            layout.display()
        );
    }
    let key = keys::load_secret_key(
        &base.join(&args.key),
        &PasswordSource {
            file: args.password_file.map(|f| base.join(f)),
        },
    )?;
    let (mut signed, mut refused, mut errors) = (Vec::new(), Vec::new(), 0);
    for pv in &packages {
        match sign_package(&manifests, pv, &key, &args.role, &layout) {
            Ok(s) => {
                if !global.json {
                    crate::progress::info(format_args!("{}", signed_line(&s)));
                }
                signed.push(s);
            }
            Err(e @ SignError::Mismatch { .. }) => {
                eprintln!("imgrep: {e}");
                refused
                    .push(serde_json::json!({"package": pv.to_string(), "reason": e.to_string()}));
            }
            Err(e) => {
                eprintln!("imgrep: error: {pv}: {e}");
                errors += 1;
            }
        }
    }
    if global.json {
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({"signed": signed, "refused": refused}))
                .context("serializing the result")?
        );
    }
    if errors > 0 {
        bail!(
            "{errors} of {} packages could not be signed",
            packages.len()
        );
    }
    Ok(if refused.is_empty() {
        Outcome::Success
    } else {
        Outcome::CheckFailed
    })
}

/// The line that says what became of one signature.
pub(super) fn signed_line(s: &crate::sign::Signed) -> String {
    format!(
        "{} {} ({}) as {} with key {}: {}",
        if s.written {
            "signed"
        } else {
            "already signed"
        },
        s.package,
        s.statement,
        s.role,
        s.key_id,
        s.signature.display()
    )
}
