//! The command line: one file per command, errors given context here, at the
//! edge. Exit codes (docs/cli.md): 0 success, 1 the thing checked is false,
//! 2 usage or input error, 3 a build step failed, 130 interrupted.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};

pub mod args;
pub mod attest;
pub mod bootstrap;
pub mod build;
pub mod check;
pub mod completions;
pub mod ddc;
pub mod doctor;
pub mod fetch;
pub mod gc;
pub mod graph;
pub mod key;
pub mod keygen;
pub mod list;
pub mod pack;
pub mod plan;
pub mod publish;
pub mod pull;
pub mod push;
pub mod reproduce;
pub mod run;
pub mod seed;
pub mod shell;
pub mod sign;
pub mod store;
pub mod verify;

/// What a command reports when it ran to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything asked for holds: exit 0.
    Success,
    /// The thing checked is false (verify failed, reproduce mismatched): exit 1.
    CheckFailed,
    /// Pass an exact code through (e.g. `imgrep run` reports the command's status).
    Code(u8),
}

/// An error whose exit code is not the default 2. Attach it with
/// `anyhow::Error::from(Failure::...)` or return it from a command.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    BuildFailed(String),
    #[error("interrupted")]
    Interrupted,
}

impl Failure {
    fn code(&self) -> u8 {
        match self {
            Failure::BuildFailed(_) => 3,
            Failure::Interrupted => 130,
        }
    }
}

#[derive(Debug, Parser)]
#[command(name = "imgrep", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command understands.
#[derive(Debug, clap::Args)]
pub struct Global {
    /// Run as if started in DIR: recipes are read from DIR/packages, DIR/stage0 and DIR/bootstrap.
    #[arg(short = 'C', long = "directory", global = true, value_name = "DIR")]
    pub directory: Option<std::path::PathBuf>,
    /// Machine-readable JSON on stdout where the output is data.
    #[arg(long, global = true)]
    pub json: bool,
    /// Quiet, for scripts: no progress bars and no informational lines on
    /// stderr; errors, warnings and the reasons a check failed still print,
    /// and stdout (--json included) is unchanged.
    #[arg(short = 'q', long, global = true)]
    pub quiet: bool,
    /// The store directory (default: <user cache dir>/imgrep).
    #[arg(long, global = true, value_name = "DIR", env = "IMGREP_STORE")]
    pub store: Option<std::path::PathBuf>,
    /// Never touch the network (also IMGREP_OFFLINE=1): sources come from the store or local source directories.
    #[arg(long, global = true)]
    pub offline: bool,
    /// As root: the host ids sandboxes run as, START:COUNT or UID:GID:COUNT
    /// (default: user imgrep's /etc/subuid and /etc/subgid ranges, else
    /// 2130706432:65536). Never host root, never a real user's ids.
    #[arg(long, global = true, value_name = "RANGE", env = "IMGREP_ROOT_IDS")]
    pub root_ids: Option<sandbox::HostIds>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build packages and their dependencies into OCI images (the main job).
    Build(build::Args),
    /// Show what `build` would run, what is cached, and why.
    Plan(plan::Args),
    /// Fetch and verify pinned sources without building.
    Fetch(fetch::Args),
    /// Enter the sandbox of a failed build, for debugging.
    ///
    /// When stdin is a terminal, the shell gets a terminal of the sandbox's
    /// own (job control, the window size), relayed to imgrep's; -T for none.
    Shell(shell::Args),
    /// Remove from the store what the recipe tree no longer needs.
    Gc(gc::Args),
    /// Run a command in the sandbox: fresh namespaces, a root of read-only layers, limits.
    Run(run::Args),
    /// Pack a directory into a reproducible single-layer OCI image.
    Pack(Box<pack::Args>),
    /// Verify every digest and size of an OCI image layout.
    Check(check::Args),
    /// List the packages of the recipe tree (name, version, kind, deps).
    List(list::Args),
    /// Show the dependency graph as a tree, Graphviz dot (--dot) or JSON.
    Graph(graph::Args),
    /// Make a minisign key pair for signing statements.
    Keygen(keygen::Args),
    /// Sign the statements of packages this signer has rebuilt locally.
    Sign(sign::Args),
    /// Check statements' signatures against trusted keys, a policy and local images.
    Verify(verify::Args),
    /// Push an image of the local layout to an OCI registry.
    Push(push::Args),
    /// Pull an image from an OCI registry into the local layout.
    Pull(pull::Args),
    /// Write a seed tarball for an air-gapped bootstrap (`seed export FILE [PKG...]`).
    Seed(seed::Args),
    /// Build from a seed tarball with no network and check the images against its statements.
    Bootstrap(bootstrap::Args),
    /// Rebuild from source in a fresh store under varied conditions and compare.
    Reproduce(reproduce::Args),
    /// Write the statements of local builds under manifests/, for signing.
    Publish(publish::Args),
    /// Attach an SBOM and signed SLSA provenance to images of local builds.
    Attest(attest::Args),
    /// Show a signing key in other tools' formats (`key pem FILE.pub`, `key pgp FILE.key`).
    Key(key::Args),
    /// Say what this host supports (namespaces, ids, cgroups, overlayfs, i386, space).
    Doctor(doctor::Args),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions(completions::Args),
    /// Write man pages into DIR (used by `cargo xtask man`).
    #[command(hide = true)]
    Man(completions::ManArgs),
    /// Diverse double compilation: each root builds a compiler, each result rebuilds it; stage 2 must agree.
    Ddc(ddc::Args),
    /// Inspect the store: `store verify` checks every entry against its name.
    Store(store::Args),
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A bad value (`--memory 12QB`) is one line, like every other
        // input error; usage errors keep clap's usage and hint.
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ValueValidation | ErrorKind::InvalidValue
            ) =>
        {
            let text = e.to_string();
            let line = text.lines().next().unwrap_or_default();
            eprintln!("imgrep: {line}");
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    let result = run(cli);
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::CheckFailed) => ExitCode::from(1),
        Ok(Outcome::Code(c)) => ExitCode::from(c),
        Err(err) => {
            eprintln!("imgrep: error: {err:#}");
            let code = err
                .chain()
                .find_map(|e| e.downcast_ref::<Failure>())
                .map_or(2, Failure::code);
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Outcome> {
    crate::progress::set_quiet(cli.global.quiet);
    if let Some(ids) = cli.global.root_ids {
        crate::hostids::choose(ids);
    }
    match cli.command {
        Command::Build(args) => build::run(&cli.global, args),
        Command::Plan(args) => plan::run(&cli.global, args),
        Command::Fetch(args) => fetch::run(&cli.global, args),
        Command::Shell(args) => shell::run(&cli.global, args),
        Command::Gc(args) => gc::run(&cli.global, args),
        Command::Run(args) => run::run(&cli.global, args),
        Command::Pack(args) => pack::run(&cli.global, *args),
        Command::Check(args) => check::run(&cli.global, args),
        Command::List(args) => list::run(&cli.global, args),
        Command::Graph(args) => graph::run(&cli.global, args),
        Command::Keygen(args) => keygen::run(&cli.global, args),
        Command::Sign(args) => sign::run(&cli.global, args),
        Command::Verify(args) => verify::run(&cli.global, args),
        Command::Push(args) => push::run(&cli.global, args),
        Command::Pull(args) => pull::run(&cli.global, args),
        Command::Seed(args) => seed::run(&cli.global, args),
        Command::Bootstrap(args) => bootstrap::run(&cli.global, args),
        Command::Reproduce(args) => reproduce::run(&cli.global, args),
        Command::Publish(args) => publish::run(&cli.global, args),
        Command::Attest(args) => attest::run(&cli.global, args),
        Command::Key(args) => key::run(&cli.global, args),
        Command::Doctor(args) => doctor::run(&cli.global, args),
        Command::Completions(args) => completions::run(&cli.global, args),
        Command::Man(args) => completions::man(&cli.global, args),
        Command::Ddc(args) => ddc::run(&cli.global, args),
        Command::Store(args) => store::run(&cli.global, args),
    }
}

/// The directory of the recipe tree: `-C DIR` or the current directory.
pub fn tree_root(global: &Global) -> std::path::PathBuf {
    global
        .directory
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("."))
}

/// The store of `--store` / IMGREP_STORE / the user's cache directory.
pub fn open_store(global: &Global) -> anyhow::Result<crate::store::Store> {
    let root = crate::store::Store::default_root(global.store.as_deref())?;
    Ok(crate::store::Store::open(&root)?)
}

/// The fetcher of the config file and environment, offline with `--offline`.
pub fn fetcher(global: &Global) -> anyhow::Result<crate::fetch::Fetcher> {
    let mut config = crate::fetch::FetchConfig::load()?;
    config.offline |= global.offline;
    Ok(crate::fetch::Fetcher::new(config))
}

/// The recipe tree of `-C DIR` (or the current directory), validated.
pub fn load_recipes(global: &Global) -> anyhow::Result<crate::recipe::RecipeSet> {
    let root = global
        .directory
        .as_deref()
        .unwrap_or(std::path::Path::new("."));
    Ok(crate::recipe::RecipeSet::load(root)?)
}

/// The width of a column of a human report's table: its widest cell, and at
/// least `min`, so that rows stay aligned for long names and versions
/// (busybox-static's 1.35.0-4+deb12u1+b1, tcc's 0.9.27+git20200814.62c30a4a).
pub fn column_width(cells: impl IntoIterator<Item = usize>, min: usize) -> usize {
    cells.into_iter().fold(min, usize::max)
}

/// Prints a command's human report on stderr: always when `failed` (it
/// says why), else unless quiet.
pub fn report(text: &str, failed: bool) {
    if failed || !crate::progress::quiet() {
        eprint!("{text}");
    }
}

/// Writes a command's data to stdout; a reader that went away (`| head`)
/// ends the command quietly, as it does for other Unix tools.
pub fn print(text: &str) -> anyhow::Result<Outcome> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(Outcome::Success),
    }
}
