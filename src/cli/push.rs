//! `imgrep push NAME:VERSION REF`: an image of the local layout to an OCI
//! registry (docs/registry.md).

use std::io::BufRead as _;
use std::path::PathBuf;

use anyhow::{bail, Context};

use super::{Global, Outcome};
use crate::oci::Layout;
use crate::registry::{Client, CredentialSource, Credentials, Options, Reference};

/// How to reach and log in to registries; shared by push, pull and verify.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Allow plain HTTP to registries that are not on a loopback address
    /// (anyone on the path can then read and change the images).
    #[arg(long)]
    pub insecure_http: bool,
    /// User name for the registry (its password: --password-stdin, else
    /// prompted). Default: IMGREP_REGISTRY_USER and IMGREP_REGISTRY_PASSWORD,
    /// then the auths of docker's config.json.
    #[arg(long, value_name = "USER")]
    pub username: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// Trust only the CA certificates in this PEM file for registry TLS
    /// (default: the Mozilla roots built into imgrep).
    #[arg(long, value_name = "FILE", env = "IMGREP_REGISTRY_CA")]
    pub ca_file: Option<PathBuf>,
}

impl RegistryArgs {
    /// A client for these options; `chunk_size` forces chunked uploads.
    /// Refused under `--offline` / IMGREP_OFFLINE=1: registries are network.
    pub fn client(&self, global: &Global, chunk_size: Option<u64>) -> anyhow::Result<Client> {
        let env = std::env::var(crate::fetch::OFFLINE_ENV).unwrap_or_default();
        if global.offline || env == "1" {
            bail!(
                "talking to a registry needs the network, and --offline (or {}=1) forbids it",
                crate::fetch::OFFLINE_ENV
            );
        }
        let mut credentials = CredentialSource::from_env();
        if let Some(username) = &self.username {
            let password = if self.password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .context("reading the password from standard input")?;
                line.trim_end_matches(['\n', '\r']).to_owned()
            } else {
                rpassword::prompt_password(format!("Password for {username}: "))
                    .context("reading the password from the terminal (or pass --password-stdin)")?
            };
            credentials.explicit = Some(Credentials {
                username: username.clone(),
                password,
            });
        }
        let mut options = Options {
            credentials,
            insecure_http: self.insecure_http,
            progress: true,
            ca_file: self.ca_file.clone(),
            ..Options::default()
        };
        if let Some(size) = chunk_size {
            options.chunk_size = size;
            options.chunk_threshold = 0;
        }
        Ok(Client::new(options)?)
    }
}

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("signing").args(["cosign_key", "lookaside_key"]).multiple(true))]
pub struct Args {
    /// The image to push: its ref name NAME:VERSION in the layout.
    #[arg(value_name = "NAME:VERSION")]
    pub image: String,
    /// Destination, [http://|https://]HOST[:PORT]/REPO[:TAG]; without a tag,
    /// the version made a tag (`+` and other characters a tag cannot hold become `_`).
    #[arg(value_name = "REF")]
    pub target: String,
    /// The OCI image layout holding the image.
    #[arg(long, value_name = "DIR", default_value = "out")]
    pub layout: PathBuf,
    /// Upload every blob in chunks of this many bytes (suffixes K, M, G, T);
    /// by default only blobs above 64 MiB go in 16 MiB chunks.
    #[arg(long, value_name = "BYTES", value_parser = super::args::parse_size)]
    pub chunk_size: Option<u64>,
    /// Ask the registry to mount missing blobs from this repository of the
    /// same registry (e.g. `imgrep/musl`) before uploading them.
    #[arg(long, value_name = "REPO")]
    pub mount_from: Option<String>,
    /// Also push a cosign-layout signature of the image (tag
    /// `sha256-<hex>.sig`) made with this minisign secret key, for podman's
    /// `sigstoreSigned` policy (docs/attest.md).
    #[arg(long, value_name = "FILE")]
    pub cosign_key: Option<PathBuf>,
    /// Also write an OpenPGP "simple signing" signature of the image into
    /// this lookaside directory (`DIR/REPO@sha256=HEX/signature-N`), for
    /// podman's `signedBy` policy with a registries.d `lookaside:
    /// file:///DIR` entry (docs/attest.md). Needs --lookaside-key.
    #[arg(long, value_name = "DIR", requires = "lookaside_key")]
    pub lookaside: Option<PathBuf>,
    /// The minisign secret key that signs for --lookaside, in its OpenPGP
    /// form (`imgrep key pgp FILE` prints the public key to trust).
    #[arg(long, value_name = "FILE", requires = "lookaside")]
    pub lookaside_key: Option<PathBuf>,
    /// Read the signing keys' password from the first line of FILE.
    #[arg(long, value_name = "FILE", requires = "signing")]
    pub password_file: Option<PathBuf>,
    /// The manifests directory: the signatures of the image's statement
    /// (`packages/NAME/VERSION/sigs/`) are attached to the image and pushed
    /// with it, when the statement signs this image.
    #[arg(long, value_name = "DIR", default_value = "manifests")]
    pub manifests: PathBuf,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<Outcome> {
    let Some((name, version)) = args.image.split_once(':') else {
        bail!("{:?}: expected NAME:VERSION", args.image);
    };
    let mut target: Reference = args.target.parse()?;
    if target.tag.is_none() && target.digest.is_none() {
        target = target.with_tag(&crate::registry::version_tag(version))?;
    }
    let base = global.directory.clone().unwrap_or_default();
    let layout_path = base.join(&args.layout);
    let layout = Layout::open(&layout_path)
        .with_context(|| format!("opening the layout {}", layout_path.display()))?;
    let load = |key: &Option<PathBuf>| {
        key.as_ref()
            .map(|k| {
                crate::sign::keys::load_secret_key(
                    &base.join(k),
                    &crate::sign::keys::PasswordSource {
                        file: args.password_file.as_ref().map(|f| base.join(f)),
                    },
                )
            })
            .transpose()
    };
    let cosign_key = load(&args.cosign_key)?;
    let lookaside_key = load(&args.lookaside_key)?
        .map(|key| {
            let user_id = crate::attest::pgp::default_user_id(&key);
            crate::attest::pgp::PgpKey::new(&key, &user_id)
        })
        .transpose()?;
    let attached = attach_signatures(
        &layout,
        &base.join(&args.manifests),
        name,
        version,
        &args.image,
    )?;
    let client = args.registry.client(global, args.chunk_size)?;
    let digest = client
        .push_image_mounting(&layout, &args.image, &target, args.mount_from.as_deref())
        .with_context(|| format!("pushing {} to {target}", args.image))?;
    let (referrers, mode) = client
        .push_referrers(&layout, &target.repo, &digest)
        .with_context(|| format!("pushing the artifacts attached to {}", args.image))?;
    // What the signatures name: the image as users pull it.
    let identity = {
        let tag = target.tag.clone().unwrap_or_else(|| digest.to_string());
        let sep = if target.tag.is_some() { ':' } else { '@' };
        format!("{}{sep}{tag}", target.repo)
    };
    let mut signature = None;
    if let Some(key) = &cosign_key {
        let payload = crate::attest::cosign::payload(&identity, &digest);
        let image = crate::attest::cosign::signature_image(payload, key);
        signature = Some(
            client
                .push_cosign_signature(&target.repo, &digest, &image)
                .with_context(|| format!("pushing the cosign signature of {}", args.image))?,
        );
    }
    let mut lookaside = None;
    if let (Some(key), Some(dir)) = (&lookaside_key, &args.lookaside) {
        let payload = crate::attest::pgp::payload(&identity, &digest);
        let stored = crate::oci::lookaside::store(
            &base.join(dir),
            &target.repo.name,
            &digest,
            &key.sign(&payload)?,
        )?;
        if !global.json {
            crate::progress::info(format_args!(
                "{} the OpenPGP signature by {} as {}",
                if stored.existed { "kept" } else { "wrote" },
                key.fingerprint(),
                stored.path.display()
            ));
        }
        lookaside = Some(serde_json::json!({
            "path": stored.path,
            "existed": stored.existed,
            "fingerprint": key.fingerprint(),
        }));
    }
    let pushed = format!("{target}@{digest}");
    if !global.json && !attached.is_empty() {
        crate::progress::info(format_args!(
            "attached the statement signatures of {} by {}",
            args.image,
            attached.join(", ")
        ));
    }
    if !global.json && !referrers.is_empty() {
        crate::progress::info(format_args!(
            "pushed {} attached artifact(s) ({})",
            referrers.len(),
            match mode {
                crate::registry::ReferrersMode::Api => "the registry indexes them",
                crate::registry::ReferrersMode::TagSchema => "listed under the fallback tag",
            }
        ));
    }
    if global.json {
        let out = serde_json::json!({
            "image": args.image,
            "reference": target.to_string(),
            "digest": digest,
            "referrers": referrers,
            "referrers_mode": mode,
            "cosign_signature": signature,
            "lookaside_signature": lookaside,
            "statement_signatures": attached,
        });
        super::print(&format!("{out}\n"))
    } else {
        crate::progress::info(format_args!("pushed {} to {pushed}", args.image));
        super::print(&format!("{digest}\n"))
    }
}

/// Attaches the signatures of the image's statement in `manifests` to the
/// image `ref_name` of `layout` (docs/signing.md "Signatures attached to
/// the image"); returns the signers' key ids.
fn attach_signatures(
    layout: &Layout,
    manifests: &std::path::Path,
    name: &str,
    version: &str,
    ref_name: &str,
) -> anyhow::Result<Vec<String>> {
    use crate::sign::attached::{attach, Attached};
    let pv = crate::sign::manifests::PackageVersion {
        name: name.to_owned(),
        version: version.to_owned(),
    };
    let index = layout.index()?;
    let Some(subject) = index
        .manifests()
        .iter()
        .find(|d| crate::oci::ref_of(d) == Some(ref_name))
    else {
        // push_image says which image is missing.
        return Ok(Vec::new());
    };
    let manifests = crate::sign::manifests::Manifests::new(manifests);
    match attach(layout, &manifests, &pv, subject)
        .with_context(|| format!("attaching the signatures of {pv}"))?
    {
        Attached::NoStatement => Ok(Vec::new()),
        Attached::OtherImage { manifest } => {
            eprintln!(
                "imgrep: warning: {} signs image {manifest}, not this one ({}): its signatures are not attached",
                manifests.statement_path(&pv).display(),
                subject.digest()
            );
            Ok(Vec::new())
        }
        Attached::Signatures(ids) => Ok(ids.iter().map(|i| i.to_string()).collect()),
    }
}
