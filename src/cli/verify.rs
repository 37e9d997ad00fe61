//! `imgrep verify`: statements against the trust anchors and policy the user
//! chooses, and local images against the signed digests.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{Global, Outcome};
use crate::sign::keys::KeyId;
use crate::sign::manifests::{Manifests, PackageSpec, PackageVersion};
use crate::sign::policy::Policy;
use crate::sign::trust::Trust;
use crate::sign::verify::{verify_package, ImageCheck, PackageReport, SignerReport, SignerStatus};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Packages to verify, as NAME (every version) or NAME:VERSION. None: every statement.
    #[arg(value_name = "PKG")]
    pub packages: Vec<PackageSpec>,
    /// Trust the public keys in DIR (`<signer>.pub`, roles in `roles.toml`).
    #[arg(long, value_name = "DIR")]
    pub keyring: Vec<PathBuf>,
    /// Trust a public key given as `minisign -P` takes it, optionally with a
    /// role (`[ROLE:]RW...`); or, given a key id (16 hex digits), keep only
    /// the pinned ids of the keyrings.
    #[arg(long, value_name = "KEY")]
    pub trust: Vec<String>,
    /// Also trust the repository's own manifests/keys. They come with what
    /// is being verified, so whoever controls the repository controls them.
    #[arg(long)]
    pub repo_keys: bool,
    /// The policy file (threshold, per-role minimums).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Distinct trusted keys required (overrides the policy file's).
    #[arg(long, value_name = "N")]
    pub threshold: Option<usize>,
    /// At least N signatures by keys of ROLE (adds to the policy file's).
    #[arg(long, value_name = "ROLE=N", value_parser = parse_role_min)]
    pub require_role: Vec<(String, usize)>,
    /// The OCI layout whose images (tagged NAME:VERSION) must have the signed digests.
    #[arg(long, value_name = "DIR", default_value = "out")]
    pub layout: PathBuf,
    /// Check signatures and policy only, not local images.
    #[arg(long, conflicts_with = "layout")]
    pub signatures_only: bool,
    /// Check the images in a registry instead of the local layout: each
    /// package at HOST/PREFIX/NAME:VERSION (docs/registry.md).
    #[arg(long, value_name = "HOST/PREFIX", conflicts_with_all = ["signatures_only", "layout"])]
    pub registry: Option<crate::registry::Repository>,
    /// With --registry: take the statements and signatures from the
    /// artifacts attached to each registry image (`imgrep push` attaches
    /// them) instead of the manifests directory. PKG must be NAME:VERSION.
    #[arg(long, requires = "registry")]
    pub attached: bool,
    #[command(flatten)]
    pub registry_args: super::push::RegistryArgs,
    /// The manifests directory holding statements and signatures.
    #[arg(long, value_name = "DIR", default_value = "manifests")]
    pub manifests: PathBuf,
}

fn parse_role_min(s: &str) -> Result<(String, usize), String> {
    let (role, n) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected ROLE=N"))?;
    let n = n
        .parse()
        .map_err(|_| format!("{s:?}: expected ROLE=N with N a number"))?;
    Ok((role.to_owned(), n))
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    let base = global.directory.as_deref().unwrap_or(Path::new(""));
    let manifests = Manifests::new(base.join(&args.manifests));
    if let (true, Some(prefix)) = (args.attached, &args.registry) {
        return attached(global, &args, base, &manifests, prefix);
    }
    // What the user asked about first: a package with no statement is the
    // real problem, whatever else is missing.
    let packages = manifests.resolve(&args.packages)?;
    if packages.is_empty() {
        bail!(
            "no statements under {}",
            manifests.root().join("packages").display()
        );
    }
    let policy = policy(&args, base, &manifests)?;
    let trust = trust(&args, base, &manifests)?;
    let layout =
        (!args.signatures_only && args.registry.is_none()).then(|| base.join(&args.layout));
    let client = match &args.registry {
        Some(_) => Some(args.registry_args.client(global, None)?),
        None => None,
    };
    if let Some(layout) = &layout {
        if !layout.join("index.json").is_file() {
            bail!(
                "{}: not an OCI image layout (no index.json); pass --layout DIR, or \
                 --signatures-only to check signatures without images",
                layout.display()
            );
        }
    }
    let mut reports = Vec::new();
    for pv in &packages {
        reports.push(verify_package(
            &manifests,
            pv,
            &trust,
            &policy,
            layout.as_deref(),
        )?);
        if let (Some(client), Some(prefix), Some(report)) =
            (&client, &args.registry, reports.last_mut())
        {
            let signed = manifests.read_statement(pv)?.statement.image;
            crate::sign::remote::check_registry(report, &signed, pv, client, prefix);
        }
    }
    finish(global, &reports, &policy)
}

/// `verify --registry PREFIX --attached NAME:VERSION...`: statements and
/// signatures from the artifacts attached to the registry's images.
fn attached(
    global: &Global,
    args: &Args,
    base: &Path,
    manifests: &Manifests,
    prefix: &crate::registry::Repository,
) -> Result<Outcome> {
    let mut packages = Vec::new();
    for spec in &args.packages {
        let Some(version) = &spec.version else {
            bail!(
                "{}: --attached needs NAME:VERSION (the registry is asked for that image, \
                 not for a list of versions)",
                spec.name
            );
        };
        packages.push(PackageVersion {
            name: spec.name.clone(),
            version: version.clone(),
        });
    }
    if packages.is_empty() {
        bail!("--attached needs the packages to verify, as NAME:VERSION");
    }
    let policy = policy(args, base, manifests)?;
    let trust = trust(args, base, manifests)?;
    let client = args.registry_args.client(global, None)?;
    let reports: Vec<PackageReport> = packages
        .iter()
        .map(|pv| crate::sign::remote::verify_attached(&client, prefix, pv, &trust, &policy))
        .collect();
    finish(global, &reports, &policy)
}

/// Prints the reports; exit 0 when every package passes, else 1.
fn finish(global: &Global, reports: &[PackageReport], policy: &Policy) -> Result<Outcome> {
    if global.json {
        let out = serde_json::json!({"ok": reports.iter().all(|r| r.ok), "packages": reports});
        println!(
            "{}",
            serde_json::to_string(&out).context("serializing the report")?
        );
    } else {
        super::report(&table(reports, policy), !reports.iter().all(|r| r.ok));
    }
    Ok(if reports.iter().all(|r| r.ok) {
        Outcome::Success
    } else {
        Outcome::CheckFailed
    })
}

fn policy(args: &Args, base: &Path, manifests: &Manifests) -> Result<Policy> {
    let mut policy = match (&args.policy, args.threshold) {
        (Some(path), _) => Policy::load(&base.join(path))?,
        (None, Some(threshold)) => Policy {
            threshold,
            roles: Default::default(),
        },
        (None, None) => bail!(
            "no policy: pass --threshold N (and --require-role ROLE=N), or --policy FILE \
             (e.g. the publisher's {}, once you have reviewed it)",
            manifests.policy_path().display()
        ),
    };
    if let Some(t) = args.threshold {
        policy.threshold = t;
    }
    policy.roles.extend(args.require_role.iter().cloned());
    policy.check("command line")?;
    Ok(policy)
}

fn trust(args: &Args, base: &Path, manifests: &Manifests) -> Result<Trust> {
    let mut trust = Trust::default();
    for dir in &args.keyring {
        trust.add_keyring(&base.join(dir))?;
    }
    if args.repo_keys {
        eprintln!(
            "imgrep: warning: trusting the keys in {}, which come with the repository being \
             verified: whoever can change the repository can change them",
            manifests.keys_dir().display()
        );
        trust.add_keyring(&manifests.keys_dir())?;
    }
    let mut pins = Vec::new();
    for t in &args.trust {
        match t.parse::<KeyId>() {
            Ok(id) => pins.push(id),
            Err(_) => trust.add_key_spec(t)?,
        }
    }
    trust.pin(&pins)?;
    if trust.is_empty() {
        bail!("no trusted keys: pass --keyring DIR, --trust [ROLE:]PUBKEY, or --repo-keys");
    }
    Ok(trust)
}

/// A signer as the table names it: its name and key id, or the key id of
/// a key the verifier does not know.
fn signer_label(s: &SignerReport) -> String {
    match &s.signer {
        Some(name) if *name != s.key_id.to_string() => format!("{name} ({})", s.key_id),
        _ => s.key_id.to_string(),
    }
}

fn table(reports: &[PackageReport], policy: &Policy) -> String {
    let mut out = String::new();
    let w = super::column_width(
        reports.iter().map(|r| r.name.len() + 1 + r.version.len()),
        28,
    );
    let sw = super::column_width(
        reports
            .iter()
            .flat_map(|r| &r.signers)
            .map(|s| signer_label(s).len()),
        34,
    );
    let _ = writeln!(
        out,
        "{:<w$} {:<sw$} {:<12} RESULT",
        "PACKAGE", "SIGNER", "ROLE"
    );
    for r in reports {
        let mut package = format!("{}:{}", r.name, r.version);
        for s in &r.signers {
            let signer = signer_label(s);
            let result = match s.status {
                SignerStatus::Ok => "OK",
                SignerStatus::Fail => "FAIL",
                SignerStatus::Unknown => "IGNORED",
                SignerStatus::Duplicate => "NOT COUNTED",
            };
            let _ = write!(
                out,
                "{package:<w$} {signer:<sw$} {:<12} {result}",
                s.role.as_deref().unwrap_or("-")
            );
            if let Some(reason) = &s.reason {
                let _ = write!(out, ": {reason}");
            }
            out.push('\n');
            package.clear();
        }
        let image = match (&r.image, &r.manifest) {
            (ImageCheck::NotChecked, None) => "not checked (no statement)".to_owned(),
            (ImageCheck::NotChecked, Some(_)) => "not checked (--signatures-only)".to_owned(),
            (ImageCheck::Ok, m) => format!("OK: {}", m.map(|m| m.to_string()).unwrap_or_default()),
            (ImageCheck::Fail(reasons), _) => format!("FAIL: {}", reasons.join("; ")),
        };
        let source = if r.image_ref.is_some() {
            "(registry image)"
        } else {
            "(local image)"
        };
        let _ = writeln!(out, "{package:<w$} {source:<sw$} {:<12} {image}", "");
        for note in &r.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        let _ = writeln!(out, "  {} {}: {}", r.name, r.version, r.signatures);
        let _ = if r.ok {
            writeln!(
                out,
                "  => OK: {} trusted signatures (threshold {})",
                r.trusted_signatures, policy.threshold
            )
        } else {
            writeln!(out, "  => FAIL: {}", r.failures.join("; "))
        };
    }
    out
}
