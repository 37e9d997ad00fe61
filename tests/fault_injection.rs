//! Fault injection (docs/store.md, "Crashes and full disks"): imgrep is
//! SIGKILLed at random points of `build`, `fetch`, `pull` (the remote build
//! cache and `imgrep pull`), `push` and `gc`, and builds run out of disk on
//! a small tmpfs store. After each fault the store passes `imgrep store
//! verify`, and the next build gives the reference digests.
//!
//! The CI-sized run does 24 operations (most of them killed). `IMGREP_FAULT_ITERATIONS=N`
//! runs N operations instead (the long run of docs/store.md);
//! `IMGREP_FAULT_SEED=S` replays a run (each run prints its seed).

#[path = "build_support/mod.rs"]
mod build_support;
#[path = "registry_support/mod.rs"]
mod registry_support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use build_support::{digests, noise, parse_built, Fixture, Route};
use imgrep::digest::Digest;
use registry_support::Registry;

/// The packages every build asks for: a shell, a dependency chain and a
/// source fetched over HTTP and unpacked.
const PACKAGES: &[&str] = &["app", "greet"];

/// xorshift64*, seeded per run and printed, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn seed() -> u64 {
    std::env::var("IMGREP_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

fn ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cmd` in its own process group and SIGKILLs imgrep (the process
/// itself, as the OOM killer or a power cut would stop it) after `delay`,
/// unless it finished first. Then waits for every process of the group
/// (sandbox helpers and steps must die with it). Returns whether it was
/// killed.
fn run_killed(mut cmd: Command, delay: Duration) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let start = Instant::now();
    let mut killed = false;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() >= delay {
            // SAFETY: kill(2) of our own, not yet reaped, child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            child.wait().unwrap();
            killed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // What imgrep started must go with it: wait for its process group.
    let gone = Instant::now();
    // SAFETY: signal 0 only asks whether the group still has members.
    while unsafe { libc::kill(-pid, 0) } == 0 {
        assert!(
            gone.elapsed() < Duration::from_secs(20),
            "processes of the killed imgrep (group {pid}) still run 20 s later"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    killed
}

/// `imgrep store verify --json` must find nothing wrong.
fn assert_consistent(fx: &Fixture, store: &Path, after: &str) {
    let out = fx
        .command(&["--json", "store", "verify"])
        .env("IMGREP_STORE", store)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "store verify after {after}: {e}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success() && report["ok"] == true,
        "store inconsistent after {after}: {}",
        serde_json::to_string_pretty(&report["problems"]).unwrap()
    );
}

/// The world the faults happen in: the fixture (recipe tree, store,
/// source server), the reference digests and input digests, and a
/// registry when docker-registry is installed.
struct World {
    fx: Fixture,
    reference: BTreeMap<String, Digest>,
    inputs: BTreeMap<String, Digest>,
    registry: Option<Registry>,
    work: tempfile::TempDir,
}

impl World {
    fn new(test: &str) -> Option<World> {
        let fx = Fixture::new(&[])?;
        // The reference: a build in a store of its own, never interrupted.
        let reference_store = tempfile::tempdir().unwrap();
        let mut args = vec!["--json", "build"];
        args.extend_from_slice(PACKAGES);
        let out = fx
            .command(&args)
            .env("IMGREP_STORE", reference_store.path())
            .output()
            .unwrap();
        ok("reference build", &out);
        let built = parse_built(&out.stdout);
        let registry = Registry::start(test, None);
        Some(World {
            reference: digests(&built),
            inputs: built.iter().map(|b| (b.name.clone(), b.input)).collect(),
            fx,
            registry,
            work: tempfile::tempdir().unwrap(),
        })
    }

    fn cache_prefix(&self) -> Option<String> {
        self.registry
            .as_ref()
            .map(|r| format!("{}/cache", r.host()))
    }

    /// A complete build in `store`; its digests must be the reference's.
    fn build_matches(&self, store: &Path, extra: &[&str], after: &str) {
        let mut args = vec!["--json", "build"];
        args.extend_from_slice(extra);
        args.extend_from_slice(PACKAGES);
        let out = self
            .fx
            .command(&args)
            .env("IMGREP_STORE", store)
            .output()
            .unwrap();
        ok(&format!("build after {after}"), &out);
        let got = digests(&parse_built(&out.stdout));
        assert_eq!(got, self.reference, "digests after {after}");
    }

    /// Operation `op` killed after a random delay, then the checks. Returns
    /// the operation's name and whether the kill came before it finished.
    fn fault(
        &self,
        op: u64,
        rng: &mut Rng,
        timing: &mut BTreeMap<&'static str, Duration>,
    ) -> (&'static str, bool) {
        let fx = &self.fx;
        let store = fx.store.path().to_owned();
        let prefix = self.cache_prefix();
        let all = |first: &[&str]| -> Vec<String> {
            first
                .iter()
                .chain(PACKAGES)
                .map(|s| s.to_string())
                .collect()
        };
        let command = |args: &[String], store: &Path| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut cmd = fx.command(&args);
            cmd.env("IMGREP_STORE", store);
            cmd
        };
        let parked = self.work.path().join("app-parked");
        let pull_store = self.work.path().join("pull-store");
        let layout = self.work.path().join("pulled");
        let (name, cmd, checked): (&'static str, Command, &Path) = match (op, &prefix) {
            (1, _) => {
                // Sources and trees gone (as on a new machine): fetch has work.
                for dir in ["sources/sha256", "trees/nar-sha256"] {
                    imgrep::store::remove_tree(&store.join(dir)).unwrap();
                }
                ("fetch", command(&all(&["fetch"]), &store), &store)
            }
            (2, _) => {
                // gc of the tree without `app`: its record, blobs and layers go.
                self.build_matches(&store, &[], "nothing");
                fs::rename(fx.tree.path().join("packages/app"), &parked).unwrap();
                ("gc", command(&["gc".to_owned()], &store), &store)
            }
            (3, Some(p)) => {
                // A second machine builds from the remote cache: pulls.
                let _ = imgrep::store::remove_tree(&pull_store);
                let args = all(&["--json", "build", "--cache-from", p]);
                ("pull", command(&args, &pull_store), &pull_store)
            }
            (4, Some(p)) => {
                let args = all(&["--json", "build", "--rebuild", "--cache-to", p]);
                ("push", command(&args, &store), &store)
            }
            (5, Some(p)) => {
                // `imgrep pull` into a layout of its own.
                let _ = imgrep::store::remove_tree(&layout);
                let source = format!("{p}/app:input-{}", self.inputs["app"].hex());
                let args = [
                    "pull".to_owned(),
                    source,
                    "--tag".to_owned(),
                    "app:1.0".to_owned(),
                    "--layout".to_owned(),
                    layout.display().to_string(),
                ];
                ("pull-layout", command(&args, &store), &store)
            }
            _ => (
                "build",
                command(&all(&["--json", "build", "--rebuild"]), &store),
                &store,
            ),
        };
        // Delays spread over the time the operation took when it last ran
        // to the end (up to 0.3 s until then).
        let span = timing
            .get(name)
            .copied()
            .unwrap_or(Duration::from_millis(300));
        let delay = Duration::from_micros(rng.below(span.as_micros() as u64 + 1));
        let start = Instant::now();
        let killed = run_killed(cmd, delay);
        if !killed {
            timing.insert(name, start.elapsed());
        }
        let after = format!("{name} killed after {delay:?}");
        if name == "gc" {
            fs::rename(&parked, fx.tree.path().join("packages/app")).unwrap();
        }
        // The layouts written: out/ of the tree (builds tag images there)
        // and the one `imgrep pull` fills.
        for l in [fx.tree.path().join("out"), layout.clone()] {
            if l.join("oci-layout").exists() {
                let out = command(&["check".to_owned(), l.display().to_string()], &store)
                    .output()
                    .unwrap();
                ok(&format!("imgrep check {} after {after}", l.display()), &out);
            }
        }
        assert_consistent(fx, checked, &after);
        // The next run finishes the work, with the reference digests.
        match (name, &prefix) {
            ("pull", Some(p)) => self.build_matches(checked, &["--cache-from", p], &after),
            ("pull-layout", Some(p)) => {
                let source = format!("{p}/app:input-{}", self.inputs["app"].hex());
                let layout_arg = layout.display().to_string();
                let args = [
                    "--json",
                    "pull",
                    &source,
                    "--tag",
                    "app:1.0",
                    "--layout",
                    &layout_arg,
                ];
                let out = fx.command(&args).output().unwrap();
                ok(&format!("pull after {after}"), &out);
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(v["digest"], self.reference["app"].to_string(), "{after}");
            }
            _ => self.build_matches(checked, &[], &after),
        }
        (name, killed)
    }
}

fn iterations() -> Option<u64> {
    std::env::var("IMGREP_FAULT_ITERATIONS")
        .ok()
        .map(|v| v.parse().expect("IMGREP_FAULT_ITERATIONS is a number"))
}

#[test]
fn sigkill_at_random_points_leaves_a_consistent_store() {
    let test = "sigkill_at_random_points_leaves_a_consistent_store";
    let Some(world) = World::new(test) else {
        return;
    };
    if world.registry.is_none() {
        eprintln!("SKIPPED (in part): {test}: no docker-registry, so no push or pull is killed");
    } else {
        // The remote cache the pulls read from.
        let prefix = world.cache_prefix().unwrap();
        world.build_matches(
            world.fx.store.path(),
            &["--cache-to", &prefix],
            "seeding the cache",
        );
    }
    let seed = seed();
    eprintln!("{test}: IMGREP_FAULT_SEED={seed}");
    let mut rng = Rng(seed);
    let n = iterations().unwrap_or(24);
    let mut timing = BTreeMap::new();
    let mut kills: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for i in 0..n {
        // Every operation in turn first, so that a short run covers them all.
        let op = if i < 6 { i } else { rng.below(6) };
        let (name, killed) = world.fault(op, &mut rng, &mut timing);
        let e = kills.entry(name).or_default();
        e.0 += 1;
        e.1 += u64::from(killed);
    }
    let total: u64 = kills.values().map(|k| k.1).sum();
    for (name, (runs, killed)) in &kills {
        eprintln!("{test}: {name}: {runs} runs, {killed} killed before the end");
    }
    println!(
        "fault injection: {n} operations, {total} killed, 0 inconsistent stores (seed {seed})"
    );
    assert!(
        total * 3 >= n,
        "too few kills landed before the end: {kills:?}"
    );
}

/// A tmpfs mounted on a temporary directory (root only), unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(mib: u64) -> Tmpfs {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mount -t tmpfs on {}",
            dir.path().display()
        );
        Tmpfs(dir)
    }

    fn resize(&self, mib: u64) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(self.0.path())
            .status()
            .unwrap();
        assert!(status.success(), "remount {}", self.0.path().display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn full_disk_fails_cleanly_and_the_next_build_matches() {
    let test = "full_disk_fails_cleanly_and_the_next_build_matches";
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("SKIPPED: {test}: mounting a size-limited tmpfs store needs root");
        return;
    }
    // A package with 6 MiB of incompressible data, beside the usual set.
    let bulk = noise(6 << 20);
    let Some(fx) = Fixture::new(&[]) else {
        return;
    };
    fx.server.route("/bulk.bin", Route::Bytes(bulk.clone()));
    let dir = fx.tree.path().join("packages/bulk");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("package.toml"),
        format!(
            r#"[package]
name = "bulk"
version = "1"

[[source]]
url = "{}/bulk.bin"
sha256 = "{}"
unpack = false

[build]
deps = ["busybox"]
script = """
mkdir -p "$OUT/share"
cp bulk.bin "$OUT/share/bulk.bin"
"""
"#,
            fx.server.base,
            Digest::of(&bulk).hex()
        ),
    )
    .unwrap();
    let packages = ["app", "greet", "bulk"];
    let reference_store = tempfile::tempdir().unwrap();
    let mut args = vec!["--json", "build"];
    args.extend_from_slice(&packages);
    let out = fx
        .command(&args)
        .env("IMGREP_STORE", reference_store.path())
        .output()
        .unwrap();
    ok("reference build", &out);
    let reference = digests(&parse_built(&out.stdout));

    let mut failures = 0;
    // Sizes that run out while placing a source, in a step, writing a
    // layer and fetching (measured: docs/fuzzing.md).
    const SIZES: [u64; 6] = [2, 4, 6, 12, 18, 24];
    for mib in SIZES {
        let mnt = Tmpfs::mount(mib);
        let store = mnt.0.path().join("store");
        let out = fx
            .command(&args)
            .env("IMGREP_STORE", &store)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let first_error = stderr.lines().find(|l| l.contains("error")).unwrap_or("");
        eprintln!("{mib} MiB: {}: {first_error}", out.status);
        if !out.status.success() {
            failures += 1;
            // imgrep's own writes fail with an error naming the full disk
            // (exit 2); a step that cannot write $OUT fails as a step (3).
            match out.status.code() {
                Some(2) => assert!(
                    stderr.contains("No space left on device"),
                    "{mib} MiB: the error names the full disk:\n{stderr}"
                ),
                Some(3) => {}
                _ => panic!(
                    "{mib} MiB: a full disk is an error, not a crash: {}\n{stderr}",
                    out.status
                ),
            }
        }
        assert_consistent(&fx, &store, &format!("a build on a {mib} MiB store"));
        mnt.resize(256);
        let out = fx
            .command(&args)
            .env("IMGREP_STORE", &store)
            .output()
            .unwrap();
        ok(
            &format!("build after the {mib} MiB store was enlarged"),
            &out,
        );
        assert_eq!(digests(&parse_built(&out.stdout)), reference, "{mib} MiB");
        assert_consistent(&fx, &store, &format!("the build after {mib} MiB"));
    }
    println!(
        "full disk: {failures} of {} store sizes ran out of space; 0 inconsistent stores",
        SIZES.len()
    );
    assert!(
        failures >= 3,
        "only {failures} sizes ran out of space: the test needs smaller ones"
    );
}

/// `imgrep store verify --json` of `store`: exit code and problem paths.
fn verify_problems(fx: &Fixture, store: &Path) -> (Option<i32>, Vec<String>) {
    let out = fx
        .command(&["--json", "store", "verify"])
        .env("IMGREP_STORE", store)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "store verify: {e}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let paths = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap().to_owned())
        .collect();
    (out.status.code(), paths)
}

#[test]
fn store_verify_finds_each_kind_of_damage() {
    // greet-tree's pin: the NAR hash of greet's files.
    let files = tempfile::tempdir().unwrap();
    for (path, body, mode) in build_support::GREET_FILES {
        let p = files.path().join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, body).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
    }
    let pin = imgrep::nar::hash_path(files.path()).unwrap().to_string();
    let Some(fx) = Fixture::new(&[("GREET_TREE", pin)]) else {
        return;
    };
    let built = fx.build(&["app", "greet", "greet-tree"]);
    let clean = fx.store.path();
    assert_eq!(verify_problems(&fx, clean), (Some(0), vec![]));
    let lib = built.iter().find(|b| b.name == "lib").unwrap();
    let first = |dir: &str| fx.entries(dir).into_iter().next().unwrap();

    type Damage = Box<dyn Fn(&Path) -> String>;
    let cases: Vec<(&str, Damage)> = vec![
        ("a source file changed", {
            let name = first("sources/sha256");
            Box::new(move |s: &Path| {
                let p = format!("sources/sha256/{name}");
                fs::write(s.join(&p), b"other bytes").unwrap();
                p
            })
        }),
        ("a blob truncated", {
            Box::new(move |s: &Path| {
                // The largest blob: busybox's layer.
                let name = fs::read_dir(s.join("blobs/sha256"))
                    .unwrap()
                    .map(|e| e.unwrap())
                    .max_by_key(|e| e.metadata().unwrap().len())
                    .unwrap()
                    .file_name()
                    .into_string()
                    .unwrap();
                let p = format!("blobs/sha256/{name}");
                let f = fs::OpenOptions::new().write(true).open(s.join(&p)).unwrap();
                f.set_len(10).unwrap();
                p
            })
        }),
        ("a record naming a missing image", {
            let input = lib.input;
            Box::new(move |s: &Path| {
                let p = format!("records/{}", input.hex());
                fs::write(s.join(&p), format!("{}\n", Digest::of(b"nothing"))).unwrap();
                p
            })
        }),
        ("a file of an unpacked layer changed", {
            let diff_id = built.iter().find(|b| b.name == "busybox").unwrap().diff_ids[0];
            Box::new(move |s: &Path| {
                let p = format!("layers/sha256/{}", diff_id.hex());
                let dir = s.join(&p);
                std::process::Command::new("chmod")
                    .arg("-R")
                    .arg("u+w")
                    .arg(&dir)
                    .status()
                    .unwrap();
                fs::write(dir.join("bin/busybox"), b"not busybox").unwrap();
                p
            })
        }),
        ("a tree changed", {
            let name = first("trees/nar-sha256");
            Box::new(move |s: &Path| {
                let p = format!("trees/nar-sha256/{name}");
                let dir = s.join(&p);
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
                fs::write(dir.join("extra"), b"x").unwrap();
                p
            })
        }),
        ("a stray blob name", {
            Box::new(move |s: &Path| {
                fs::write(s.join("blobs/sha256/junk"), b"x").unwrap();
                "blobs/sha256/junk".into()
            })
        }),
        ("a temporary outside tmp/", {
            Box::new(move |s: &Path| {
                fs::write(s.join("sources/sha256/tmpXYZ"), b"half").unwrap();
                "sources/sha256/tmpXYZ".into()
            })
        }),
    ];
    for (what, damage) in cases {
        let copy = tempfile::tempdir().unwrap();
        let store = copy.path().join("store");
        let status = Command::new("cp")
            .arg("-a")
            .arg(clean)
            .arg(&store)
            .status()
            .unwrap();
        assert!(status.success());
        let path = damage(&store);
        let (code, problems) = verify_problems(&fx, &store);
        assert_eq!(code, Some(1), "{what}: exit code ({problems:?})");
        assert!(
            problems.contains(&path),
            "{what}: {path} not among the problems {problems:?}"
        );
    }
}
