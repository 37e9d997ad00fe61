//! `imgrep pack DIR --out LAYOUT --tag NAME:VERSION`: a reproducible
//! single-layer image from a directory.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};

use super::{Global, Outcome};
use crate::layer::{Compression, PackOptions};
use crate::oci::{ImageLayer, ImageSpec, Layout};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory whose contents become the layer.
    pub dir: PathBuf,
    /// OCI image layout to write into (created if missing).
    #[arg(long, value_name = "LAYOUT")]
    pub out: PathBuf,
    /// Ref name in the layout's index.json, NAME:VERSION.
    #[arg(long, value_name = "NAME:VERSION")]
    pub tag: String,
    #[arg(long, default_value = "gzip", value_name = "gzip|zstd|none")]
    pub compression: Compression,
    /// Compression threads (default: the CPUs imgrep may use); the output
    /// bytes do not depend on it.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// mtime of every entry and the image's creation time.
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = crate::DEFAULT_SOURCE_DATE_EPOCH)]
    pub source_date_epoch: i64,
    /// Keep setuid/setgid/sticky bits on PATH: PATH=MODE, MODE octal within 7000 (repeatable).
    #[arg(long = "special-mode", value_name = "PATH=MODE")]
    pub special_modes: Vec<String>,
    /// Config Entrypoint, one argument per flag (repeatable).
    #[arg(long, value_name = "ARG")]
    pub entrypoint: Vec<String>,
    /// Config Cmd, one argument per flag (repeatable).
    #[arg(long, value_name = "ARG")]
    pub cmd: Vec<String>,
    /// Config Env entry KEY=VALUE (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Config WorkingDir.
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Config label and manifest annotation KEY=VALUE (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
}

#[derive(serde::Serialize)]
struct Output<'a> {
    layout: &'a std::path::Path,
    r#ref: &'a str,
    manifest: String,
    layer: &'a crate::layer::LayerInfo,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<Outcome> {
    let Some((name, version)) = args.tag.split_once(':') else {
        bail!("--tag {:?}: expected NAME:VERSION", args.tag);
    };
    crate::oci::validate_ref_name(&args.tag).with_context(|| format!("--tag {:?}", args.tag))?;
    let mut special_modes = BTreeMap::new();
    for s in &args.special_modes {
        let (path, mode) = s
            .split_once('=')
            .with_context(|| format!("--special-mode {s:?}: expected PATH=MODE"))?;
        let mode = u32::from_str_radix(mode, 8)
            .with_context(|| format!("--special-mode {s:?}: MODE must be octal, e.g. 4000"))?;
        special_modes.insert(path.trim_matches('/').to_owned(), mode);
    }
    let mut labels = BTreeMap::new();
    for s in &args.label {
        let (k, v) = s
            .split_once('=')
            .with_context(|| format!("--label {s:?}: expected KEY=VALUE"))?;
        labels.insert(k.to_owned(), v.to_owned());
    }
    for e in &args.env {
        if !e.contains('=') {
            bail!("--env {e:?}: expected KEY=VALUE");
        }
    }
    let opts = PackOptions {
        source_date_epoch: args.source_date_epoch,
        compression: args.compression,
        // Counted only here: clap would count them for every command line
        // it parses (cgroup files read), `imgrep run` included.
        threads: args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
            .max(1),
        special_modes,
    };
    let layout = Layout::create(&args.out)
        .with_context(|| format!("creating layout {}", args.out.display()))?;
    let spinner = crate::progress::Spinner::new(&format!("packing {}", args.dir.display()));
    let layer = layout
        .add_layer(&args.dir, &opts)
        .with_context(|| format!("packing {}", args.dir.display()))?;
    drop(spinner);
    let spec = ImageSpec {
        name: name.to_owned(),
        version: version.to_owned(),
        source_date_epoch: args.source_date_epoch,
        entrypoint: (!args.entrypoint.is_empty()).then_some(args.entrypoint),
        cmd: (!args.cmd.is_empty()).then_some(args.cmd),
        env: args.env,
        working_dir: args.workdir,
        labels,
        ..ImageSpec::default()
    };
    let created_by = format!("imgrep pack {}", args.tag);
    let manifest = layout.write_image(
        &spec,
        &[ImageLayer {
            layer: layer.clone(),
            created_by,
        }],
    )?;
    if global.json {
        let out = Output {
            layout: &args.out,
            r#ref: &args.tag,
            manifest: manifest.digest().to_string(),
            layer: &layer,
        };
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!("{}", manifest.digest());
        crate::progress::info(format_args!(
            "packed {} into {}:{} (layer {}, diff_id {}, {} bytes)",
            args.dir.display(),
            args.out.display(),
            args.tag,
            layer.digest,
            layer.diff_id,
            layer.size
        ));
    }
    Ok(Outcome::Success)
}
