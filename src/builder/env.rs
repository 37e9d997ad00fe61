//! The fixed environment of a build step (docs/recipes.md), and the
//! conditions `imgrep reproduce` varies to prove that outputs do not depend
//! on them.

use sandbox::{HostIds, IdMap};

use crate::recipe::{Build, BuildDir, Recipe};

/// PATH inside every build step.
pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";
/// The target triple the repository builds for.
pub const TARGET: &str = "x86_64-linux-musl";
/// Where sources are unpacked and steps start, inside the sandbox.
pub const BUILD_DIR: &str = "/build";
/// `$OUT`: what the package installs, inside the sandbox.
pub const OUT_DIR: &str = "/out";
/// The hostname of every build step.
pub const HOSTNAME: &str = "imgrep";

/// Conditions that must not change any output. A normal build uses the
/// defaults; `imgrep reproduce` changes every one of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Variation {
    pub hostname: String,
    pub umask: u32,
    pub idmap: IdMap,
    /// The host ids [`IdMap::Caller`] maps onto when imgrep runs as root.
    pub root_ids: HostIds,
    /// Hand the environment to the step in reverse order.
    pub reverse_env: bool,
    /// `JOBS` (and so `make -j`) for recipes that leave `jobs` at 0.
    pub cores: usize,
    /// Run each recipe with the other `build_dir` than it asks for (it is
    /// not part of the input digest, so it must not change the output).
    pub other_build_dir: bool,
}

impl Variation {
    /// The conditions of an ordinary build on this machine.
    pub fn standard() -> Variation {
        Variation {
            hostname: HOSTNAME.to_owned(),
            umask: 0o022,
            idmap: IdMap::Caller,
            root_ids: crate::hostids::root_ids(),
            reverse_env: false,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            other_build_dir: false,
        }
    }
}

/// The complete environment of `recipe`'s steps, in the order handed to them.
pub fn environment(recipe: &Recipe, build: &Build, variation: &Variation) -> Vec<(String, String)> {
    let jobs = if build.jobs == 0 {
        variation.cores
    } else {
        build.jobs as usize
    };
    let mut env: Vec<(String, String)> = [
        ("PATH", PATH.to_owned()),
        ("HOME", format!("{BUILD_DIR}/.home")),
        ("TZ", "UTC".to_owned()),
        ("LC_ALL", "C".to_owned()),
        ("SOURCE_DATE_EPOCH", recipe.source_date_epoch().to_string()),
        ("JOBS", jobs.to_string()),
        ("TARGET", TARGET.to_owned()),
        ("OUT", OUT_DIR.to_owned()),
        ("TMPDIR", "/tmp".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(build.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    if variation.reverse_env {
        env.reverse();
    }
    env
}

/// Where `build`'s `/build` lives under `variation`.
pub fn build_dir(build: &Build, variation: &Variation) -> BuildDir {
    match (build.build_dir, variation.other_build_dir) {
        (d, false) => d,
        (BuildDir::Disk, true) => BuildDir::Memory,
        (BuildDir::Memory, true) => BuildDir::Disk,
    }
}
