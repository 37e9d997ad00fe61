//! `imgrep pull REF`: an image from an OCI registry into a local layout,
//! every byte verified before it is stored (docs/registry.md).

use std::path::PathBuf;

use anyhow::{bail, Context};

use super::push::RegistryArgs;
use super::{Global, Outcome};
use crate::oci::Layout;
use crate::registry::Reference;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Source, [http://|https://]HOST[:PORT]/REPO[:TAG][@sha256:HEX]; a
    /// digest pins the content, a tag alone takes what the registry serves.
    #[arg(value_name = "REF")]
    pub source: String,
    /// The OCI image layout to store the image in (created if missing).
    #[arg(long, value_name = "DIR", default_value = "out")]
    pub layout: PathBuf,
    /// Ref name in the layout's index.json (default: the repository's last
    /// path component and the tag, NAME:TAG).
    #[arg(long, value_name = "NAME:VERSION")]
    pub tag: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<Outcome> {
    let source: Reference = args.source.parse()?;
    let ref_name = match (&args.tag, &source.tag) {
        (Some(t), _) => t.clone(),
        (None, Some(tag)) => {
            let name = source
                .repo
                .name
                .rsplit('/')
                .next()
                .unwrap_or(&source.repo.name);
            format!("{name}:{tag}")
        }
        (None, None) => bail!("{source}: no tag to name the image after; pass --tag NAME:VERSION"),
    };
    crate::oci::validate_ref_name(&ref_name).with_context(|| format!("--tag {ref_name:?}"))?;
    if source.tag.is_none() && source.digest.is_none() {
        bail!("{source}: give a tag (REPO:TAG) or a digest (REPO@sha256:...) to pull");
    }
    let base = global.directory.clone().unwrap_or_default();
    let layout_path = base.join(&args.layout);
    let client = args.registry.client(global, None)?;
    let layout = Layout::create(&layout_path)
        .with_context(|| format!("creating the layout {}", layout_path.display()))?;
    let digest = client
        .pull_image(&source, &layout, &ref_name)
        .with_context(|| format!("pulling {source}"))?;
    let referrers = client
        .pull_referrers(&source.repo, &digest, &layout)
        .with_context(|| format!("pulling the artifacts attached to {source}"))?;
    if !global.json && !referrers.is_empty() {
        crate::progress::info(format_args!(
            "pulled {} attached artifact(s)",
            referrers.len()
        ));
    }
    if global.json {
        let out = serde_json::json!({
            "reference": source.to_string(),
            "layout": layout_path,
            "ref": ref_name,
            "digest": digest,
            "referrers": referrers,
        });
        super::print(&format!("{out}\n"))
    } else {
        crate::progress::info(format_args!(
            "pulled {source} into {}:{ref_name}",
            layout_path.display()
        ));
        super::print(&format!("{digest}\n"))
    }
}
