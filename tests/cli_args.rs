//! One grammar for sizes and durations across commands (src/cli/args.rs),
//! and `verify` naming what the user asked about first: the real binary,
//! on throwaway directories, with no sandbox and no network.

use std::path::Path;
use std::process::{Command, Output};

fn imgrep(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgrep"))
        .args(args)
        .current_dir(cwd)
        .env("IMGREP_STORE", cwd.join("store"))
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A recipe tree with one package, `a`.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("packages/a");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(
        p.join("package.toml"),
        "[package]\nname = \"a\"\nversion = \"1\"\n[build]\nscript = \"true\"\n",
    )
    .unwrap();
    dir
}

#[test]
fn build_push_and_run_read_sizes_and_durations_alike() {
    let dir = tree();
    // Accepted: the command goes on to the package name, which is unknown.
    for args in [
        &["build", "--timeout", "10m", "--memory", "1T", "nosuchpkg"][..],
        &[
            "build",
            "--timeout",
            "1.5",
            "--memory",
            "512k",
            "--pids",
            "64",
            "nosuchpkg",
        ],
        &["build", "--timeout", "250ms", "nosuchpkg"],
    ] {
        let o = imgrep(dir.path(), args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("unknown package `nosuchpkg`"),
            "{args:?}: {err}"
        );
    }
    // Refused by the same grammar, naming the option, before anything runs.
    for (args, option, why) in [
        (
            &["build", "--timeout", "5days", "a"][..],
            "--timeout",
            "unknown unit \"days\"",
        ),
        (
            &["build", "--memory", "12QB", "a"],
            "--memory",
            "invalid size \"12QB\"",
        ),
        (
            &["build", "--pids", "0", "a"],
            "--pids",
            "invalid count \"0\"",
        ),
        (
            &["push", "--chunk-size", "1.5G", "a:1", "localhost/a"],
            "--chunk-size",
            "invalid size",
        ),
        (
            &["run", "--root", "/", "--timeout", "5days", "--", "true"],
            "--timeout",
            "unknown unit \"days\"",
        ),
        (
            &["run", "--root", "/", "--memory", "12QB", "--", "true"],
            "--memory",
            "invalid size",
        ),
    ] {
        let o = imgrep(dir.path(), args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(option) && err.contains(why), "{args:?}: {err}");
    }
    // push accepts what build accepts (it then fails on the missing layout).
    let o = imgrep(
        dir.path(),
        &["push", "--chunk-size", "1T", "a:1", "localhost/a"],
    );
    assert!(!stderr(&o).contains("invalid"), "{}", stderr(&o));
}

#[test]
fn verify_of_a_package_without_statement_says_so_first() {
    // No policy, no trusted key, no out/ layout either: the statement that
    // does not exist is what the user needs to hear about.
    let dir = tempfile::tempdir().unwrap();
    let o = imgrep(dir.path(), &["verify", "nosuchpkg"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("no statement for nosuchpkg"), "{err}");
    assert!(
        !err.contains("policy") && !err.contains("trusted keys"),
        "{err}"
    );
}
