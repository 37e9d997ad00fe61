//! `imgrep list` and `imgrep graph` on generated recipe trees, run through the
//! real binary: output on valid trees, and for malformed ones exit code 2 with
//! every problem at its exact `file:line:column`.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use tempfile::TempDir;

const SHA: &str = "7d5b0b6062521e4627e099e4c9dc8248d32a30285e959b7eecaa780cf8cfd4a4";

/// A recipe tree from `(relative path, contents)` pairs.
fn tree(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let p = dir.path().join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    dir
}

fn imgrep(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgrep"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// Runs `imgrep list` in `dir`, expects exit 2, returns the problem lines.
fn problems(dir: &Path) -> Vec<String> {
    let out = imgrep(dir, &["list"]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(out.stdout.is_empty());
    let body = err.strip_prefix("imgrep: error: ").expect(&err);
    let mut lines: Vec<String> = body.lines().map(str::to_owned).collect();
    if lines.len() > 1 {
        let header = lines.remove(0);
        assert_eq!(header, format!("{} problems in recipes:", lines.len()));
    }
    lines
}

/// One malformed packages/x/package.toml beside a valid `base` package;
/// exactly the expected problems, all in that file.
#[track_caller]
fn case(recipe: &str, expected: &[&str]) {
    let dir = tree(&[
        ("packages/base/package.toml", BASE),
        ("packages/x/package.toml", recipe),
    ]);
    let want: Vec<String> = expected
        .iter()
        .map(|e| format!("packages/x/package.toml:{e}"))
        .collect();
    assert_eq!(problems(dir.path()), want, "recipe:\n{recipe}");
}

const BASE: &str = r#"[package]
name = "base"
version = "1"
kind = "debs"
"#;

#[test]
fn unknown_keys_at_every_level() {
    case(
        "[package]\nname = \"x\"\nversion = \"1\"\nnmae = \"y\"\n[build]\nscript = \"true\"\n",
        &["4:1: unknown key `nmae` in [package]; did you mean `name`?"],
    );
    case(
        "[package]\nname = \"x\"\nversion = \"1\"\n[biuld]\nscript = \"true\"\n",
        // One typo, one error: not also "missing [build]".
        &["4:2: unknown key `biuld` in the top level; did you mean `build`?"],
    );
    case(
        &format!("[package]\nname = \"x\"\nversion = \"1\"\n[[source]]\nurl = \"https://h/x.tar\"\nsha256 = \"{SHA}\"\nstrip = 1\n[build]\nscript = \"true\"\n"),
        &["7:1: unknown key `strip` in [[source]] (source[0]); expected one of: url, urls, path, sha256, tree, unpack, dest, file, executable, subtree"],
    );
    case(
        "[package]\nname = \"x\"\nversion = \"1\"\n[build]\nscript = \"true\"\nshell = \"bash\"\n",
        &["6:1: unknown key `shell` in [build]; expected one of: deps, workdir, env, jobs, source_date_epoch, build_dir, seccomp, script, steps"],
    );
    case(
        "[package]\nname = \"x\"\nversion = \"1\"\n[build]\nsteps = [{ argv = [\"/x\"], cwd = \"/\" }]\n",
        &["5:27: unknown key `cwd` in build.steps[0]; expected one of: argv, workdir"],
    );
    // Dotted keys and inline tables are the same tables, with positions.
    case(
        "package.name = \"x\"\npackage.version = \"1\"\npackage.nam = 1\nbuild = { script = \"true\", dep = [] }\n",
        &[
            "3:9: unknown key `nam` in [package]; did you mean `name`?",
            "4:28: unknown key `dep` in [build]; did you mean `deps`?",
        ],
    );
    case(
        "[package]\nname = \"x\"\nversion = \"1\"\nkind = \"debs\"\n[debs]\nlinks = {}\n",
        &["6:1: unknown key `links` in [debs]; expected one of: symlinks, dirs"],
    );
}

#[test]
fn a_misspelled_required_key_is_one_error_with_a_suggestion() {
    // Each would also have been reported missing: the typo is the one problem.
    case(
        "[package]\nname = \"x\"\nverison = \"1\"\n[build]\nscript = \"true\"\n",
        &["3:1: unknown key `verison` in [package]; did you mean `version`?"],
    );
    case(
        "[package]\nname = \"x\"\nversion = \"1\"\n[build]\nscritp = \"true\"\n",
        &["5:1: unknown key `scritp` in [build]; did you mean `script`?"],
    );
    case(
        &format!("[package]\nname = \"x\"\nversion = \"1\"\n[[source]]\nurl = \"https://h/x.tar\"\nsha265 = \"{SHA}\"\n[build]\nscript = \"true\"\n"),
        &["6:1: unknown key `sha265` in [[source]] (source[0]); did you mean `sha256`?"],
    );
    // A key missing with no typo of it is still reported missing
    // (hashes_missing_malformed_or_both, and `version` below).
}

#[test]
fn subtree_sources_are_pinned_by_their_tree() {
    const TREE: &str = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    let head = "[package]\nname = \"x\"\nversion = \"1\"\n[build]\nscript = \"true\"\n[[source]]\nurl = \"https://h/x_1_all.deb\"\n";
    case(
        &format!("{head}subtree = \"usr/share\"\nsha256 = \"{SHA}\"\n"),
        &["9:10: source[0]: a `subtree` is pinned by its `tree` (NAR sha256); `sha256` may pin the archive file beside it"],
    );
    case(
        &format!("{head}subtree = \"./\"\ntree = \"{TREE}\"\n"),
        &["8:11: source[0].subtree: names the whole archive; leave `subtree` out to unpack all of it"],
    );
    case(
        &format!("{head}subtree = \"../etc\"\ntree = \"{TREE}\"\n"),
        &["8:11: source[0].subtree: `../etc`: `..` is not allowed"],
    );
    case(
        &format!("{head}subtree = \"usr\"\ntree = \"{TREE}\"\nunpack = false\n"),
        &[
            "8:11: source[0].subtree: only for a source that is unpacked",
            "9:8: source[0]: a `tree` hash pins an unpacked tree, but this source is not unpacked; pin the file by `sha256`",
        ],
    );
    case(
        &format!("[package]\nname = \"x\"\nversion = \"1\"\n[build]\nscript = \"true\"\n[[source]]\nurl = \"https://h/x.zip\"\nsubtree = \"a\"\ntree = \"{TREE}\"\n"),
        &["6:1: source[0]: cannot unpack `x.zip`: not a known archive (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz, .tar.zst, .deb)"],
    );
    case(
        &format!("[package]\nname = \"x\"\nversion = \"1\"\nkind = \"debs\"\n[[source]]\nurl = \"https://h/x_1_all.deb\"\nsha256 = \"{SHA}\"\nsubtree = \"usr\"\n"),
        &["8:1: source[0]: `subtree` does not apply to a kind = \"debs\" recipe, whose .deb files imgrep unpacks itself"],
    );
}

#[test]
fn hashes_missing_malformed_or_both() {
    let head = "[package]\nname = \"x\"\nversion = \"1\"\n[build]\nscript = \"true\"\n[[source]]\nurl = \"https://h/x.tar.gz\"\n";
    case(
        head,
        &["6:1: source[0]: missing `sha256` or `tree`: every source is pinned by a hash"],
    );
    case(
        &format!("{head}sha256 = \"{}\"\n", SHA.to_uppercase()),
        &[&format!(
            "8:10: source[0].sha256: malformed sha256 `{}`: expected 64 lowercase hex digits",
            SHA.to_uppercase()
        )],
    );
    case(
        &format!("{head}sha256 = \"{}\"\n", &SHA[2..]),
        &[&format!(
            "8:10: source[0].sha256: malformed sha256 `{}`: expected 64 lowercase hex digits",
            &SHA[2..]
        )],
    );
    case(
        &format!("{head}sha256 = \"{SHA}\"\ntree = \"sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\"\n"),
        &["8:10: source[0]: both `sha256` and `tree` given; pin the source by exactly one"],
    );
    for bad in [
        "sha256-AAAA",
        "sha512-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
        "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
    ] {
        case(
            &format!("{head}tree = \"{bad}\"\n"),
            &[&format!("8:8: source[0].tree: malformed tree hash `{bad}`: expected SRI `sha256-` followed by the base64 of 32 bytes (44 characters)")],
        );
    }
    case(
        &format!("{head}sha256 = 7\n"),
        &["8:10: source[0].sha256: expected a string, found an integer"],
    );
}

#[test]
fn script_and_steps() {
    let head = "[package]\nname = \"x\"\nversion = \"1\"\n[build]\n";
    case(
        &format!("{head}deps = []\n"),
        &["4:1: [build]: missing `script` or `steps`: a build recipe says what runs"],
    );
    case(
        &format!("{head}script = \"true\"\nsteps = [[\"/x\"]]\n"),
        &["5:10: [build]: `script` and `steps` both given; use one of them"],
    );
    case(
        &format!("{head}steps = [[\"/x\"], [], [\"\"], {{ workdir = \"/b\" }}, {{ argv = [] }}, 3]\n"),
        &[
            "5:18: build.steps[1]: empty argv: a step needs a program to run",
            "5:22: build.steps[2]: empty argv: a step needs a program to run",
            "5:28: build.steps[3]: missing `argv`",
            "5:57: build.steps[4]: empty argv: a step needs a program to run",
            "5:63: build.steps[5]: expected an argv array or a table { argv = [...], workdir = \"...\" }, found an integer",
        ],
    );
    case(
        &format!("{head}steps = []\n"),
        &["5:9: build.steps: empty list; give at least one step"],
    );
    case(
        &format!("{head}script = \"  \\n\"\n"),
        &["5:10: build.script: empty script"],
    );
    case(
        "[package]\nname = \"x\"\nversion = \"1\"\n",
        &["1:1: missing [build] section: a kind = \"build\" recipe needs `script` or `steps`"],
    );
}

#[test]
fn names_and_versions() {
    case(
        "[package]\nname = \"X\"\nversion = \"1\"\n[build]\nscript = \"true\"\n",
        &["2:8: package.name: invalid package name `X`: expected a lowercase letter or digit, then letters, digits, `+`, `.`, `_` or `-`"],
    );
    case(
        "[package]\nname = \"y\"\nversion = \"1\"\n[build]\nscript = \"true\"\n",
        &["2:8: package name `y` does not match its directory `x`"],
    );
    case(
        "[package]\nname = \"x\"\nversion = \"1:2\"\n[build]\nscript = \"true\"\n",
        &["3:11: package.version: invalid version `1:2`: ':' is not allowed (no whitespace, `:`, `/`, `{` or `}`)"],
    );
    case(
        "[package]\nname = \"x\"\nversion = 2024-01-01\n[build]\nscript = \"true\"\n",
        &["3:11: package.version: expected a string, found a datetime"],
    );
    case(
        "[package]\nname = \"x\"\n[build]\nscript = \"true\"\n",
        &["1:2: missing key `version` in [package]"],
    );
    case(
        "[package]\nname = \"x\"\nversion = \"1\"\nkind = \"image\"\n",
        &["4:8: package.kind: unknown kind `image`; expected \"build\", \"debs\" or \"wheel\""],
    );
    case(
        "[package\nname = \"x\"\n",
        &["1:9: TOML syntax: invalid table header; expected `.`, `]`"],
    );
    case(
        "[package]\nname = \"x\"\nname = \"x\"\n",
        &["3:1: TOML syntax: duplicate key `name` in table `package`"],
    );
}

#[test]
fn urls_are_expanded_and_checked() {
    let src = |urls: &str| {
        format!("[package]\nname = \"x\"\nversion = \"1.2\"\n[build]\nscript = \"true\"\n[[source]]\nurls = [{urls}]\nsha256 = \"{SHA}\"\n")
    };
    case(
        &src("\"https://h/x-{ver}.tar\""),
        &["7:9: source[0].urls[0]: unknown placeholder `{ver}` in URL `https://h/x-{ver}.tar`: only `{version}` expands"],
    );
    case(
        &src("\"https://h/x.tar\", \"mirror://debian\""),
        &["7:28: source[0].urls[1]: malformed mirror URL `mirror://debian`: expected mirror://NAME/path"],
    );
    case(
        &src("\"mirror://debian/../x.tar\""),
        &["7:9: source[0].urls[0]: mirror URL `mirror://debian/../x.tar`: `..` is not allowed in the path"],
    );
    case(
        &src("\"ftp://h/x-{version}.tar\""),
        &["7:9: source[0].urls[0]: unsupported URL `ftp://h/x-1.2.tar`: expected https://, http://, mirror://NAME/path or repo:PATH"],
    );
    case(
        &src("\"repo:../seeds/hex0\""),
        &["7:9: source[0].urls[0]: repo URL `repo:../seeds/hex0`: `../seeds/hex0`: `..` is not allowed"],
    );
    case(&src(""), &["7:8: source[0].urls: empty list"]);
    case(
        &format!("[package]\nname = \"x\"\nversion = \"1\"\n[build]\nscript = \"true\"\n[[source]]\nurl = \"https://h/{{version\"\nsha256 = \"{SHA}\"\n"),
        &["7:7: source[0].url: unbalanced `{` in URL `https://h/{version`"],
    );
    case(
        &format!("[package]\nname = \"x\"\nversion = \"1\"\n[build]\nscript = \"true\"\n[[source]]\nurl = \"https://h/a\"\nurls = [\"https://h/a\"]\nsha256 = \"{SHA}\"\n"),
        &["7:7: source[0]: give `url` or `urls`, not both"],
    );
}

#[test]
fn paths_must_stay_inside() {
    let head = "[package]\nname = \"x\"\nversion = \"1\"\n";
    case(
        &format!("{head}[[source]]\nurl = \"https://h/x.tar\"\nsha256 = \"{SHA}\"\ndest = \"/usr\"\n[build]\nscript = \"true\"\n"),
        &["7:8: source[0].dest: `/usr` must be a relative path"],
    );
    case(
        &format!("{head}[[source]]\nurl = \"https://h/x.tar\"\nsha256 = \"{SHA}\"\ndest = \"a/../../b\"\n[build]\nscript = \"true\"\n"),
        &["7:8: source[0].dest: `a/../../b`: `..` is not allowed"],
    );
    case(
        &format!("{head}[build]\nscript = \"true\"\nworkdir = \"build\"\n"),
        &["6:11: build.workdir: `build` must be an absolute path"],
    );
    case(
        &format!("{head}[build]\nsteps = [{{ argv = [\"/x\"], workdir = \"/build/..\" }}]\n"),
        &["5:37: build.steps[0].workdir: `/build/..`: `..` is not allowed"],
    );
    case(
        &format!("{head}[[source]]\npath = \"../secret\"\nsha256 = \"{SHA}\"\n[build]\nscript = \"true\"\n"),
        &["5:8: source[0].path: `../secret`: `..` is not allowed"],
    );
    case(
        &format!("{head}[[source]]\nurl = \"https://h/seed\"\nsha256 = \"{SHA}\"\nfile = \"bin/seed\"\n[build]\nscript = \"true\"\n"),
        &["7:8: source[0].file: `bin/seed` must be a single file name (no `/`, not `.` or `..`)"],
    );
}

#[test]
fn sources_and_unpacking() {
    let head = "[package]\nname = \"x\"\nversion = \"1\"\n[build]\nscript = \"true\"\n[[source]]\n";
    case(
        &format!("{head}sha256 = \"{SHA}\"\n"),
        &["6:1: source[0]: missing `urls` (or `path` for a file beside package.toml)"],
    );
    case(
        &format!("{head}url = \"https://h/x.bin\"\nsha256 = \"{SHA}\"\nunpack = true\n"),
        &["9:10: source[0]: cannot unpack `x.bin`: not a known archive (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz, .tar.zst, .deb)"],
    );
    case(
        &format!("{head}url = \"https://h/x.bin\"\ntree = \"sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\"\n"),
        &["8:8: source[0]: a `tree` hash pins an unpacked tree, but this source is not unpacked; pin the file by `sha256`"],
    );
    case(
        &format!("{head}url = \"https://h/x.tar.xz\"\nsha256 = \"{SHA}\"\nexecutable = true\nfile = \"y\"\n"),
        &[
            "9:14: source[0].executable: only for a source with unpack = false",
            "10:8: source[0].file: only for a source with unpack = false",
        ],
    );
    case(
        &format!("{head}url = \"https://h/x.tar\"\npath = \"x.tar\"\nsha256 = \"{SHA}\"\n"),
        &["8:8: source[0]: give `path` or URLs, not both"],
    );
    case(
        &format!("{head}url = \"https://h/dl/\"\nsha256 = \"{SHA}\"\n"),
        &["6:1: source[0]: cannot name the file from its URL; set `file`"],
    );
}

#[test]
fn debs_recipes() {
    let head = "[package]\nname = \"x\"\nversion = \"1\"\nkind = \"debs\"\n";
    case(
        &format!("{head}[[source]]\nurl = \"https://h/x.tar.gz\"\nsha256 = \"{SHA}\"\n"),
        &["6:7: source[0]: `https://h/x.tar.gz` is not a .deb; a kind = \"debs\" recipe takes only .deb sources"],
    );
    case(
        &format!("{head}[build]\nscript = \"true\"\n"),
        &["5:1: [build] in a kind = \"debs\" recipe: no step runs for debs; remove [build] or drop kind = \"debs\""],
    );
    case(
        &format!("{head}[[source]]\nurl = \"https://h/x.deb\"\nsha256 = \"{SHA}\"\ndest = \"x\"\n"),
        &["8:1: source[0]: `dest` does not apply to a kind = \"debs\" recipe, whose .deb files imgrep unpacks itself"],
    );
    case(
        &format!("{head}[debs]\nsymlinks = {{ \"/bin/sh\" = \"busybox\", \"bin/cc\" = \"\" }}\ndirs = [\"tmp\", \"../x\"]\n"),
        &[
            "6:14: debs.symlinks.\"/bin/sh\": `/bin/sh` must be a relative path",
            "6:48: debs.symlinks.\"bin/cc\": empty link target",
            "7:16: debs.dirs[1]: `../x`: `..` is not allowed",
        ],
    );
    case(
        "[package]\nname = \"x\"\nversion = \"1\"\n[build]\nscript = \"true\"\n[debs]\ndirs = []\n",
        &["6:1: [debs] is only for kind = \"debs\" recipes (set package.kind = \"debs\")"],
    );
}

#[test]
fn build_settings() {
    let head = "[package]\nname = \"x\"\nversion = \"1\"\n[build]\nscript = \"true\"\n";
    case(
        &format!("{head}env = {{ PATH = \"/x\", \"2X\" = \"y\", N = 1 }}\n"),
        &[
            "6:9: build.env.PATH: `PATH` belongs to the fixed build environment and cannot be overridden (PATH, HOME, TZ, LC_ALL, SOURCE_DATE_EPOCH, JOBS, TARGET, OUT, TMPDIR)",
            "6:22: build.env.2X: invalid environment variable name `2X`: expected [A-Za-z_][A-Za-z0-9_]*",
            "6:38: build.env.N: expected a string, found an integer",
        ],
    );
    case(
        &format!("{head}jobs = -2\n"),
        &["6:8: build.jobs: expected 0 (one job per core) or a positive number of jobs"],
    );
    case(
        &format!("{head}source_date_epoch = -1\n"),
        &["6:21: build.source_date_epoch: expected seconds since 1970-01-01, not negative"],
    );
    case(
        &format!("{head}deps = [\"base\", \"base\"]\n"),
        &["6:17: build.deps[1]: `base` is listed twice"],
    );
    case(
        &format!("{head}build_dir = \"ram\"\n"),
        &["6:13: build.build_dir: unknown build directory `ram`; expected \"disk\" or \"memory\""],
    );
    case(
        &format!("{head}build_dir = true\n"),
        &["6:13: build.build_dir: expected a string, found a boolean"],
    );
    case(
        &format!("{head}seccomp = \"off\"\n"),
        &["6:11: build.seccomp: unknown policy `off`; expected \"default\", \"relaxed\" or a list of groups (userns, io_uring, perf, userfaultfd, keyring, personality)"],
    );
    case(
        &format!("{head}seccomp = [\"userns\", \"bpf\"]\n"),
        &["6:22: build.seccomp: unknown group `bpf`; expected one of userns, io_uring, perf, userfaultfd, keyring, personality"],
    );
}

#[test]
fn dependencies_unknown_and_cyclic() {
    case(
        "[package]\nname = \"x\"\nversion = \"1\"\nruntime = [\"bsae\"]\n[build]\ndeps = [\"base\", \"gcc\"]\nscript = \"true\"\n",
        &[
            "4:12: package.runtime[0]: unknown package `bsae` (did you mean `base`?)",
            "6:17: build.deps[1]: unknown package `gcc`",
        ],
    );
    let pkg = |name: &str, deps: &str, runtime: &str| {
        format!("[package]\nname = \"{name}\"\nversion = \"1\"\nruntime = [{runtime}]\n[build]\ndeps = [{deps}]\nscript = \"true\"\n")
    };
    let (c, a, b, s) = (
        pkg("c", "\"a\"", ""),
        pkg("a", "\"b\"", ""),
        pkg("b", "", "\"c\""),
        pkg("s", "\"s\"", ""),
    );
    let dir = tree(&[
        ("packages/c/package.toml", &c),
        ("packages/a/package.toml", &a),
        ("stage0/b/package.toml", &b),
        ("packages/s/package.toml", &s),
    ]);
    assert_eq!(
        problems(dir.path()),
        [
            "packages/a/package.toml:6:9: cyclic dependency: a -> b -> c -> a",
            "packages/s/package.toml:6:9: cyclic dependency: s -> s",
        ]
    );
}

#[test]
fn every_problem_of_the_tree_is_reported() {
    let dir = tree(&[
        ("packages/base/package.toml", BASE),
        (
            "packages/a/package.toml",
            "[package]\nname = \"a\"\nversion = \"1\"\ncolor = 1\n[build]\ndeps = [\"nope\"]\nscript = \"\"\n",
        ),
        ("stage0/base/package.toml", BASE),
        ("packages/empty/README", "no recipe here"),
        ("packages/broken/package.toml", "[package\n"),
    ]);
    assert_eq!(
        problems(dir.path()),
        [
            "packages/a/package.toml:4:1: unknown key `color` in [package]; expected one of: name, version, description, license, homepage, kind, runtime",
            "packages/a/package.toml:6:9: build.deps[0]: unknown package `nope`",
            "packages/a/package.toml:7:10: build.script: empty script",
            "packages/base/package.toml:2:8: duplicate package `base`: also defined at stage0/base/package.toml:2:8",
            "packages/broken/package.toml:1:9: TOML syntax: invalid table header; expected `.`, `]`",
            "packages/empty: package directory without a package.toml",
            "stage0/base/package.toml:2:8: duplicate package `base`: also defined at packages/base/package.toml:2:8",
        ]
    );
}

#[test]
fn directory_option_and_missing_tree() {
    let dir = tree(&[("packages/x/package.toml", "[package]\nname = \"x\"\n")]);
    let root = dir.path().display().to_string();
    let out = imgrep(Path::new("/"), &["-C", &root, "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!("imgrep: error: 2 problems in recipes:\n{root}/packages/x/package.toml:1:1: missing [build] section: a kind = \"build\" recipe needs `script` or `steps`\n{root}/packages/x/package.toml:1:2: missing key `version` in [package]\n")
    );

    let empty = tempfile::tempdir().unwrap();
    let out = imgrep(empty.path(), &["graph"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "imgrep: error: .: no recipe tree here: none of packages/, stage0/ and bootstrap/ exists\n"
    );
}

/// A valid tree: a debs base, a compiler on it, a library, an app.
fn valid_tree() -> TempDir {
    let cc = "[package]\nname = \"cc\"\nversion = \"12.2\"\nruntime = [\"base\"]\n[build]\ndeps = [\"base\"]\nscript = \"true\"\n";
    let lib = format!("[package]\nname = \"lib\"\nversion = \"1.2.3\"\ndescription = \"a library\"\n[[source]]\nurls = [\"https://h/lib-{{version}}.tar.gz\"]\nsha256 = \"{SHA}\"\n[build]\ndeps = [\"cc\"]\nscript = \"make\"\n");
    let app = "[package]\nname = \"app\"\nversion = \"0.1\"\nruntime = [\"lib\"]\n[build]\ndeps = [\"cc\", \"lib\"]\nsteps = [[\"/bin/true\"]]\n";
    let seed = format!("[package]\nname = \"seed\"\nversion = \"1\"\n[[source]]\nurl = \"https://h/hex0-seed\"\nsha256 = \"{SHA}\"\nexecutable = true\n[build]\nsteps = [[\"/build/hex0-seed\", \"in\", \"/out/hex0\"]]\n");
    tree(&[
        ("packages/base/package.toml", BASE),
        ("packages/cc/package.toml", cc),
        ("packages/lib/package.toml", &lib),
        ("packages/app/package.toml", app),
        ("stage0/seed/package.toml", &seed),
    ])
}

#[test]
fn list_text_and_json() {
    let dir = valid_tree();
    let out = imgrep(dir.path(), &["list"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        "NAME  VERSION  KIND   DEPS\n\
         app   0.1      build  cc,lib\n\
         base  1        debs\n\
         cc    12.2     build  base\n\
         lib   1.2.3    build  cc\n\
         seed  1        build\n"
    );
    let out = imgrep(dir.path(), &["list", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 5);
    assert_eq!(v[3]["name"], "lib");
    assert_eq!(v[3]["description"], "a library");
    assert_eq!(v[3]["deps"], serde_json::json!(["cc"]));
    assert_eq!(v[4]["path"], "stage0/seed/package.toml");
    assert_eq!(v[0]["runtime"], serde_json::json!(["lib"]));
}

#[test]
fn graph_tree_dot_and_json() {
    let dir = valid_tree();
    let out = imgrep(dir.path(), &["graph"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        "app 0.1\n\
         ├── cc 12.2\n\
         │   └── base 1 [build, runtime]\n\
         └── lib 1.2.3 [build, runtime]\n    \
             └── cc 12.2 (*)\n\
         seed 1\n"
    );

    let out = imgrep(dir.path(), &["graph", "--dot", "lib"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        "digraph imgrep {\n  node [shape=box];\n  \"base\" [label=\"base\\n1\"];\n  \"cc\" [label=\"cc\\n12.2\"];\n  \"lib\" [label=\"lib\\n1.2.3\"];\n  \"cc\" -> \"base\";\n  \"lib\" -> \"cc\";\n}\n"
    );

    let out = imgrep(dir.path(), &["graph", "--json", "app", "seed"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["order"],
        serde_json::json!(["base", "cc", "lib", "app", "seed"])
    );
    assert_eq!(
        v["levels"],
        serde_json::json!([["base", "seed"], ["cc"], ["lib"], ["app"]])
    );

    // Same tree, same bytes: the output is a function of the tree.
    assert_eq!(
        imgrep(dir.path(), &["graph", "--dot"]).stdout,
        imgrep(dir.path(), &["graph", "--dot"]).stdout
    );
}

#[test]
fn graph_of_unknown_package() {
    let dir = valid_tree();
    let out = imgrep(dir.path(), &["graph", "lb"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "imgrep: error: unknown package `lb` (did you mean `lib`?)\n"
    );
}

#[test]
fn image_section_is_checked() {
    let r = |image: &str| {
        format!("[package]\nname = \"x\"\nversion = \"1\"\n[build]\nscript = \"true\"\n[image]\n{image}\n")
    };
    case(&r("cmd = []"), &["7:7: image.cmd: empty argv"]);
    case(
        &r("workdir = \"rel\""),
        &["7:11: image.workdir: `rel` must be an absolute path"],
    );
    case(
        &r("entry = [\"/bin/x\"]"),
        &["7:1: unknown key `entry` in [image]; expected one of: entrypoint, cmd, env, workdir"],
    );
}
