//! Package definitions (docs/recipes.md): the model, its validation with
//! `file:line:column` errors, discovery of a recipe tree, and the input digest
//! that keys the build cache.

mod check;
mod cycles;
mod diag;
mod input;
mod node;
mod output;
mod parse;
mod set;
mod suggest;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::digest::Digest;

pub use diag::{Diagnostic, Position, RecipeError};
pub use input::diff_inputs;
pub use set::RecipeSet;

/// Names of every top-level section a recipe may hold.
pub const SECTIONS: &[&str] = &[
    "package", "source", "build", "debs", "wheel", "image", "output",
];

/// One package definition, with every default resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub license: Option<String>,
    pub homepage: Option<String>,
    pub kind: Kind,
    /// Packages whose layers a bundle image stacks under this one.
    pub runtime: Vec<String>,
    pub sources: Vec<Source>,
    /// Present exactly when `kind` is `Build`.
    pub build: Option<Build>,
    /// `[debs]` or `[wheel]`: present exactly when `kind` is `Debs` or
    /// `Wheel`.
    pub debs: Option<Debs>,
    /// How the image runs: `[image]` (entrypoint, cmd, env, workdir).
    pub image: Image,
    /// `[output]`: set for a fixed-output recipe (docs/recipes.md).
    pub output: Option<Output>,
    /// The package.toml this came from, for messages (not part of the digest).
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Sandbox steps produce `$OUT`.
    Build,
    /// The image is a set of pinned .deb files, unpacked by imgrep itself.
    Debs,
    /// The image is a set of pinned Python wheels (zip), unpacked by imgrep
    /// itself.
    Wheel,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Build => "build",
            Kind::Debs => "debs",
            Kind::Wheel => "wheel",
        }
    }

    /// Assembled by imgrep from pinned binary archives, with no step.
    pub fn assembled(self) -> bool {
        matches!(self, Kind::Debs | Kind::Wheel)
    }

    /// The file name suffix of its sources, for an assembled kind.
    pub fn archive_suffix(self) -> &'static str {
        match self {
            Kind::Build => "",
            Kind::Debs => ".deb",
            Kind::Wheel => ".whl",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Where the bytes may be downloaded, `{version}` expanded, in order:
    /// `https://`, `http://` or `mirror://NAME/path`.
    pub urls: Vec<String>,
    /// A file in the package's directory (e.g. `patches/fix.patch`), relative
    /// to it; excludes `urls`. See [`Recipe::dir`].
    pub path: Option<String>,
    pub pin: Pin,
    /// Unpack the archive (resolved from the name when not given).
    pub unpack: bool,
    /// Where under /build it lands: a normalised relative path, `.` for /build.
    pub dest: String,
    /// For `unpack = false`: the file name under `dest` (defaults to the last
    /// segment of the first URL or of `path`).
    pub file: Option<String>,
    /// For `unpack = false`: mode 0755 instead of 0644.
    pub executable: bool,
    /// Only this part of the archive is the source (its `pin` is then the
    /// `tree` of that part): files from a `.deb`, a directory of a tarball.
    pub subtree: Option<Subtree>,
}

/// `subtree` (docs/recipes.md): the members of an archive under a path, as
/// if that path were the archive's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subtree {
    /// Normalised relative path as the archive's members name it (for a
    /// `.deb`, inside its data.tar); never `.`.
    pub path: String,
    /// `sha256` given beside `tree`: the archive file's own hash.
    pub archive: Option<Digest>,
}

impl Source {
    /// The name the source is known by: the last segment of its first URL or
    /// of its path.
    pub fn file_name(&self) -> &str {
        let s = self
            .path
            .as_deref()
            .or_else(|| self.urls.first().map(String::as_str))
            .unwrap_or_default();
        check::last_segment(s)
    }
}

/// How a source's bytes are pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pin {
    /// sha256 of the file as downloaded.
    Sha256(Digest),
    /// sha256 of the Nix NAR serialisation of the unpacked tree.
    Tree([u8; 32]),
}

impl Pin {
    /// The pin as written in a recipe: 64 hex digits or SRI `sha256-<base64>`.
    pub fn to_recipe_string(&self) -> String {
        match self {
            Pin::Sha256(d) => d.hex(),
            Pin::Tree(bytes) => format!(
                "sha256-{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// Images whose layers form the root, in this order (later layers win).
    pub deps: Vec<String>,
    /// Absolute, normalised; `/build` unless given.
    pub workdir: String,
    pub env: BTreeMap<String, String>,
    /// 0: JOBS = number of cores; n: JOBS = n.
    pub jobs: u32,
    /// Resolved: the recipe's value or [`crate::DEFAULT_SOURCE_DATE_EPOCH`].
    pub source_date_epoch: i64,
    /// Where `/build` lives while the steps run. Not part of the input
    /// digest: it changes how a build runs, never what it produces.
    pub build_dir: BuildDir,
    /// Groups of system calls the sandbox's default filter denies that the
    /// steps may use (`[build].seccomp`), sorted; empty: the default filter.
    /// Part of the input digest when not empty: it widens what a build can do.
    pub seccomp_allow: Vec<sandbox::SeccompGroup>,
    pub action: Action,
}

/// `[build].build_dir`: where the steps' `/build` lives (docs/recipes.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BuildDir {
    /// The package's work directory on disk, a verified source tree mounted
    /// under it by overlayfs.
    #[default]
    Disk,
    /// A tmpfs holding a copy of the sources: no overlayfs on the way of
    /// each file operation, no disk writes; bounded by memory.
    Memory,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run as `/bin/sh -euc SCRIPT`.
    Script(String),
    /// Exec-form steps, run in order, no shell.
    Steps(Vec<Step>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Never empty.
    pub argv: Vec<String>,
    /// Absolute, normalised; the build's workdir when `None`.
    pub workdir: Option<String>,
}

/// `[image]`: what the image's config says about running it. Empty by
/// default: users give the command (`podman run IMAGE /usr/bin/tool`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Image {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `KEY=VALUE` entries in key order.
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
}

/// `[output]`: what a fixed-output recipe must produce. Its image is a
/// function of this declaration (and the package's version, SOURCE_DATE_EPOCH,
/// `[image]` and `runtime`), not of its sources or steps, so recipes that
/// reach one output by different means give one image (src/recipe/output.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The image it provides; the package's name unless given.
    pub image: String,
    /// The uncompressed digest of the one layer the build must produce.
    pub diff_id: Digest,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Debs {
    /// Link path (relative, normalised) -> link target (as written).
    pub symlinks: BTreeMap<String, String>,
    /// Empty directories to create (relative, normalised).
    pub dirs: Vec<String>,
}

impl Recipe {
    /// Parses and validates one package.toml on its own: everything but the
    /// checks that need the whole tree (directory name, unknown or cyclic
    /// dependencies, duplicates). `path` is used in messages only.
    pub fn parse(path: &Path, text: &str) -> Result<Recipe, RecipeError> {
        let parsed = parse::parse(path, text);
        parsed
            .recipe
            .ok_or_else(|| RecipeError::new(parsed.diagnostics))
    }

    /// The packages whose images form the build root (empty for `debs`).
    pub fn deps(&self) -> &[String] {
        self.build.as_ref().map_or(&[], |b| &b.deps)
    }

    /// SOURCE_DATE_EPOCH of the package's layer: `[build].source_date_epoch`,
    /// else the repository constant (always the constant for `debs`).
    pub fn source_date_epoch(&self) -> i64 {
        self.build
            .as_ref()
            .map_or(crate::DEFAULT_SOURCE_DATE_EPOCH, |b| b.source_date_epoch)
    }

    /// The directory holding package.toml; local `path` sources are relative
    /// to it.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}
