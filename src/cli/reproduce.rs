//! `imgrep reproduce PKG...`: rebuild from sources in a fresh store under
//! varied conditions and compare with the signed statements or the local
//! builds (docs/reproduce.md).

use std::path::PathBuf;

use anyhow::Result;

use super::{Global, Outcome};
use crate::reproduce::{self, Against, Report, Status};

/// Rebuild packages from source, with no cache, under varied conditions
/// (store path, uid map, umask, hostname, environment order, CPUs) and
/// compare each image of their closure with its reference.
///
/// With `--sign KEY`, the statement of each named package is signed when
/// (and only when) its rebuild matched it: how a CI signs as a role of its
/// own without ever signing an unreproduced build.
///
/// Exit 0 when every compared image matches (and, with `--sign`, every named
/// package was signed), 1 on any mismatch (with a file-level diff of the
/// differing layers; nothing unreproduced is signed), 2 on an input error,
/// 3 when a build step of the rebuild failed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Packages to reproduce (with everything they need).
    #[arg(required = true, value_name = "PKG")]
    pub packages: Vec<String>,
    /// What to compare with: the statements under manifests/, the local
    /// builds in out/, or (auto) the statement where there is one.
    #[arg(long, value_enum, default_value_t = Against::Auto)]
    pub against: Against,
    /// Keep the rebuild's directory (its store, logs and out/ layout).
    #[arg(long)]
    pub keep: bool,
    /// Rebuild only the named packages: their dependencies' images are
    /// taken from the store (the same input digests; every blob verified on
    /// the way in) and reported as REUSED. This checks that each named
    /// package's own build reproduces from the same inputs, not that its
    /// dependencies do (e.g. the native gcc, without rebuilding the cross
    /// compiler that builds it).
    #[arg(long)]
    pub reuse_deps: bool,
    /// The manifests directory (default: manifests/ of the recipe tree).
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// The OCI layout of the local builds (default: out/ of the recipe tree).
    #[arg(long, value_name = "DIR")]
    pub layout: Option<PathBuf>,
    /// Where the rebuild's directory is made (default: beside the store).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Sign each named package's statement with this minisign secret key
    /// when its rebuild matched it (manifest digest, every diff_id, input
    /// digest); a package that did not reproduce is never signed.
    #[arg(long, value_name = "KEY")]
    pub sign: Option<PathBuf>,
    /// The role to sign as with --sign (e.g. `ci` for a CI's key).
    #[arg(long, default_value = "rebuilder", requires = "sign")]
    pub role: String,
    /// Read --sign's key password from the first line of FILE instead of
    /// the environment variable IMGREP_KEY_PASSWORD or the terminal.
    #[arg(long, value_name = "FILE", requires = "sign")]
    pub password_file: Option<PathBuf>,
    #[command(flatten)]
    pub steps: super::args::StepArgs,
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    let set = super::load_recipes(global)?;
    let store = super::open_store(global)?;
    let mut fetch = crate::fetch::FetchConfig::load()?;
    fetch.offline |= global.offline;
    let tree = super::tree_root(global);
    let work_parent = match args.work_dir {
        Some(d) => d,
        None => store
            .root()
            .parent()
            .map_or_else(std::env::temp_dir, |p| p.to_owned()),
    };
    let opts = reproduce::Options {
        against: args.against,
        manifests: args.manifests.unwrap_or_else(|| tree.join("manifests")),
        layout: args.layout.unwrap_or_else(|| tree.join("out")),
        work_parent,
        keep: args.keep,
        jobs: args.steps.jobs,
        limits: args.steps.limits(),
        timeout: args.steps.timeout,
        reuse_deps: args.reuse_deps,
    };
    // The key is unlocked before the rebuild, which may take hours.
    let key = match &args.sign {
        Some(path) => {
            if !crate::sign::signature::valid_role(&args.role) {
                return Err(crate::sign::SignError::Role(args.role).into());
            }
            Some(crate::sign::keys::load_secret_key(
                path,
                &crate::sign::keys::PasswordSource {
                    file: args.password_file.clone(),
                },
            )?)
        }
        None => None,
    };
    let sign = key.as_ref().map(|key| reproduce::SignWith {
        key,
        role: &args.role,
    });
    let roots: Vec<&str> = args.packages.iter().map(String::as_str).collect();
    let report = match reproduce::reproduce(&set, &store, fetch, &roots, &opts, sign.as_ref()) {
        Ok(r) => r,
        Err(reproduce::ReproduceError::Build(e)) => return Err(super::build::into_cli_error(*e)),
        Err(e) => return Err(e.into()),
    };
    if global.json {
        super::print(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        super::report(&table(&report), !report.all_match());
    }
    Ok(if report.all_match() {
        Outcome::Success
    } else {
        Outcome::CheckFailed
    })
}

/// The human report: one line per package, then the explanation of each
/// mismatch.
fn table(report: &Report) -> String {
    let short = |d: &crate::digest::Digest| crate::builder::short(d);
    let nw = super::column_width(report.packages.iter().map(|r| r.name.len()), 20);
    let vw = super::column_width(report.packages.iter().map(|r| r.version.len()), 10);
    let mut s = format!(
        "\n{:<nw$} {:<vw$} {:<10} {:<20} {:<20} RESULT\n",
        "PACKAGE", "VERSION", "AGAINST", "EXPECTED", "GOT"
    );
    for r in &report.packages {
        let (against, expected) = match &r.reference {
            Some(reference) => (reference.kind, short(&reference.image.manifest)),
            None => ("-", "-".to_owned()),
        };
        s.push_str(&format!(
            "{:<nw$} {:<vw$} {:<10} {:<20} {:<20} {}\n",
            r.name,
            r.version,
            against,
            expected,
            short(&r.got.manifest),
            r.status
        ));
    }
    for r in report
        .packages
        .iter()
        .filter(|r| r.status == Status::Mismatch)
    {
        s.push_str(&format!("\n{} {} differs:\n", r.name, r.version));
        if let Some(reference) = &r.reference {
            s.push_str(&format!("  reference: {}\n", reference.path.display()));
        }
        for reason in &r.reasons {
            s.push_str(&format!("  {reason}\n"));
        }
        for l in &r.layers {
            if !l.changes.is_empty() {
                s.push_str(&format!("  layer {}, file by file:\n", l.index));
            }
            if let Some(note) = &l.note {
                s.push_str(&format!("  {note}\n"));
            }
            for c in &l.changes {
                for line in c.to_string().lines() {
                    s.push_str(&format!("    {line}\n"));
                }
            }
        }
    }
    if let Some(signing) = &report.signing {
        s.push('\n');
        for signed in &signing.signed {
            s.push_str(&format!("{}\n", super::sign::signed_line(signed)));
        }
        for r in &signing.refused {
            s.push_str(&format!("NOT SIGNED {}: {}\n", r.package, r.reason));
        }
    }
    if let Some(k) = &report.kept {
        s.push_str(&format!(
            "\nthe rebuild is kept in {} (store: {}/store, images: {}/out)\n",
            k.display(),
            k.display(),
            k.display()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::reproduce::Row;
    use crate::statement::ImageDigests;

    fn row(name: &str, version: &str) -> Row {
        Row {
            name: name.into(),
            version: version.into(),
            status: Status::Ok,
            reference: None,
            got: ImageDigests {
                manifest: Digest::of(name.as_bytes()),
                diff_ids: Vec::new(),
            },
            input: Digest::of(version.as_bytes()),
            reasons: Vec::new(),
            layers: Vec::new(),
        }
    }

    #[test]
    fn table_keeps_its_columns_for_long_names_and_versions() {
        let report = Report {
            conditions: Vec::new(),
            packages: vec![
                row("zig", "0.17.1"),
                row("busybox-static", "1.35.0-4+deb12u1+b1"),
                row("tcc-stage2-debian-long-name", "0.9.27+git20200814.62c30a4a"),
            ],
            kept: None,
            signing: None,
        };
        let text = table(&report);
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        let version = lines[0].find("VERSION").unwrap();
        let against = lines[0].find("AGAINST").unwrap();
        for (line, v) in lines[1..].iter().zip(["0.17.1", "1.35.0", "0.9.27"]) {
            assert_eq!(line.find(v), Some(version), "{text}");
            assert_eq!(line[against..].chars().next(), Some('-'), "{text}");
            assert!(line[..against].ends_with(' '), "{text}");
        }
    }
}
