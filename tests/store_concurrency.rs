//! The store under real concurrent processes and SIGKILL. Each test that
//! needs other processes re-runs this test binary on itself (`--exact
//! <test>`) with IMGREP_STORE_TEST_CHILD naming the child's role; in the
//! parent the same test function spawns, kills and checks.

mod fetch_support;

use std::collections::BTreeMap;
use std::env;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fetch_support::{Route, Server};
use imgrep::digest::Digest;
use imgrep::fetch::{FetchConfig, Fetcher, Pin, SourceRequest};
use imgrep::nar::{self, NarHash};
use imgrep::store::{GcRoots, Store};

const CHILD_ENV: &str = "IMGREP_STORE_TEST_CHILD";

/// The child side: reads its job from the environment, prints one result
/// line, and panics (exit 101) on any error.
fn run_child(role: &str) {
    let store = Store::open(Path::new(&env::var("STORE").unwrap())).unwrap();
    match role {
        "fetch" => {
            let pin = env::var("PIN").unwrap();
            let pin = match pin.parse::<Digest>() {
                Ok(d) => Pin::File(d),
                Err(_) => Pin::Tree(pin.parse::<NarHash>().unwrap()),
            };
            let cfg = FetchConfig {
                source_dirs: env::var("SOURCE_DIRS")
                    .ok()
                    .into_iter()
                    .map(PathBuf::from)
                    .collect(),
                progress: false,
                timeout: Duration::from_secs(20),
                ..FetchConfig::default()
            };
            let req = SourceRequest {
                name: "child".into(),
                urls: env::var("URLS")
                    .unwrap()
                    .split(' ')
                    .map(str::to_owned)
                    .collect(),
                pin,
                subtree: None,
            };
            let got = Fetcher::new(cfg).fetch(&store, &req).unwrap();
            println!("FETCHED {}", got.from.as_deref().unwrap_or("store"));
        }
        "layer" => {
            let blob = PathBuf::from(env::var("BLOB").unwrap());
            let diff_id: Digest = env::var("DIFF_ID").unwrap().parse().unwrap();
            let mut opened = false;
            store
                .cached_layer(&diff_id, || {
                    opened = true;
                    // Slow enough that the other process arrives meanwhile.
                    std::thread::sleep(Duration::from_millis(300));
                    fs::File::open(&blob)
                })
                .unwrap();
            println!("LAYER opened={opened}");
        }
        "hold" => {
            println!("OPEN");
            std::io::stdout().flush().unwrap();
            std::thread::sleep(Duration::from_millis(1500));
        }
        other => panic!("unknown child role {other}"),
    }
}

fn child(test: &str, role: &str, store: &Path, envs: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(env::current_exe().unwrap());
    cmd.args([
        "--exact",
        test,
        "--nocapture",
        "--test-threads=1",
        "--quiet",
    ])
    .env(CHILD_ENV, role)
    .env("STORE", store)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// The child's result lines (those starting with `prefix`); asserts success.
fn result_line(child: Child, prefix: &str) -> String {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} line in {stdout}"))
        .to_owned()
}

fn tmp_entries(store_dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(store_dir.join("tmp"))
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

#[test]
fn two_processes_racing_on_one_source() {
    if let Ok(role) = env::var(CHILD_ENV) {
        return run_child(&role);
    }
    let server = Server::start();
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let url = server.route(
        "/race.tar",
        Route::Slow {
            body: body.clone(),
            chunk: 64 * 1024,
            pause: Duration::from_millis(30),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let envs = [
        ("PIN", Digest::of(&body).to_string()),
        ("URLS", url.clone()),
    ];
    let a = child(
        "two_processes_racing_on_one_source",
        "fetch",
        dir.path(),
        &envs,
    );
    let b = child(
        "two_processes_racing_on_one_source",
        "fetch",
        dir.path(),
        &envs,
    );
    let mut results = vec![result_line(a, "FETCHED"), result_line(b, "FETCHED")];
    results.sort();
    assert_eq!(
        results,
        [format!("FETCHED {url}"), "FETCHED store".to_owned()]
    );
    assert_eq!(server.hits("/race.tar"), 1, "both processes downloaded");
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        fs::read(store.source_path(&Digest::of(&body))).unwrap(),
        body
    );
    assert!(tmp_entries(dir.path()).is_empty());
}

#[test]
fn two_processes_racing_on_one_layer() {
    if let Ok(role) = env::var(CHILD_ENV) {
        return run_child(&role);
    }
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("t");
    for i in 0..200 {
        fs::create_dir_all(tree.join(format!("d{}", i % 10))).unwrap();
        fs::write(tree.join(format!("d{}/f{i}", i % 10)), format!("{i}\n")).unwrap();
    }
    let blob = work.path().join("layer.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&tree)
        .arg("-cf")
        .arg(&blob)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let diff_id = Digest::of(&fs::read(&blob).unwrap());
    let store_dir = work.path().join("store");
    let envs = [
        ("BLOB", blob.display().to_string()),
        ("DIFF_ID", diff_id.to_string()),
    ];
    let test = "two_processes_racing_on_one_layer";
    let a = child(test, "layer", &store_dir, &envs);
    let b = child(test, "layer", &store_dir, &envs);
    let mut results = vec![result_line(a, "LAYER"), result_line(b, "LAYER")];
    results.sort();
    assert_eq!(results, ["LAYER opened=false", "LAYER opened=true"]);
    let store = Store::open(&store_dir).unwrap();
    assert_eq!(
        nar::hash_path(&store.layer_path(&diff_id)).unwrap(),
        nar::hash_path(&tree).unwrap()
    );
}

#[test]
fn sigkill_in_the_middle_of_a_large_source_write() {
    if let Ok(role) = env::var(CHILD_ENV) {
        return run_child(&role);
    }
    let server = Server::start();
    let body: Vec<u8> = (0..8_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let digest = Digest::of(&body);
    let url = server.route(
        "/big.tar.xz",
        Route::Slow {
            body: body.clone(),
            chunk: 256 * 1024,
            pause: Duration::from_millis(50),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let envs = [("PIN", digest.to_string()), ("URLS", url.clone())];
    let mut victim = child(
        "sigkill_in_the_middle_of_a_large_source_write",
        "fetch",
        dir.path(),
        &envs,
    );
    // Kill it once the temporary file holds part of the download.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let partial = tmp_entries(dir.path()).iter().any(|p| {
            fs::metadata(p)
                .map(|m| m.len() > 1_000_000)
                .unwrap_or(false)
        });
        if partial {
            break;
        }
        assert!(Instant::now() < deadline, "the download never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    victim.kill().unwrap();
    let status = victim.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(
        !tmp_entries(dir.path()).is_empty(),
        "the kill left no partial file"
    );
    assert!(!dir
        .path()
        .join("sources/sha256")
        .join(digest.hex())
        .exists());

    // The next run: opening alone cleans tmp/, the fetch completes, and
    // the result is the same as a clean fetch's.
    let store = Store::open(dir.path()).unwrap();
    assert!(tmp_entries(dir.path()).is_empty());
    let cfg = FetchConfig {
        progress: false,
        ..FetchConfig::default()
    };
    let req = SourceRequest {
        name: "rerun".into(),
        urls: vec![url],
        pin: Pin::File(digest),
        subtree: None,
    };
    let got = Fetcher::new(cfg.clone()).fetch(&store, &req).unwrap();
    let clean_dir = tempfile::tempdir().unwrap();
    let clean = Store::open(clean_dir.path()).unwrap();
    let want = Fetcher::new(cfg).fetch(&clean, &req).unwrap();
    assert_eq!(fs::read(&got.path).unwrap(), fs::read(&want.path).unwrap());
    assert_eq!(
        got.path.strip_prefix(store.root()).unwrap(),
        want.path.strip_prefix(clean.root()).unwrap()
    );
}

#[test]
fn sigkill_at_many_moments_of_a_tree_fetch() {
    if let Ok(role) = env::var(CHILD_ENV) {
        return run_child(&role);
    }
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("src/pkg-1.0");
    for i in 0..200 {
        let d = tree.join(format!("dir{}", i % 20));
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join(format!("file{i}.c")),
            format!("int f{i}(void) {{ return {i}; }}\n").repeat(20),
        )
        .unwrap();
    }
    let pin = nar::hash_path(&tree).unwrap();
    let local = work.path().join("local");
    fs::create_dir(&local).unwrap();
    let status = Command::new("tar")
        .arg("-C")
        .arg(work.path().join("src"))
        .arg("-czf")
        .arg(local.join("pkg-1.0.tar.gz"))
        .arg("pkg-1.0")
        .status()
        .unwrap();
    assert!(status.success());
    let store_dir = work.path().join("store");
    let envs = [
        ("PIN", pin.to_string()),
        (
            "URLS",
            "https://unreachable.invalid/pkg-1.0.tar.gz".to_owned(),
        ),
        ("SOURCE_DIRS", local.display().to_string()),
    ];
    let test = "sigkill_at_many_moments_of_a_tree_fetch";
    // How long a whole fetch takes here, so the kills spread over all of it.
    let started = Instant::now();
    result_line(
        child(test, "fetch", &work.path().join("probe"), &envs),
        "FETCHED",
    );
    let whole = started.elapsed();
    let entry = store_dir.join("trees/nar-sha256").join(pin.hex());
    let mut killed = 0;
    let mut outcomes = BTreeMap::new();
    for tenth in 0..14u32 {
        let mut c = child(
            "sigkill_at_many_moments_of_a_tree_fetch",
            "fetch",
            &store_dir,
            &envs,
        );
        std::thread::sleep(whole * tenth / 10);
        c.kill().unwrap();
        let status = c.wait().unwrap();
        if status.signal() == Some(libc::SIGKILL) {
            killed += 1;
        } else {
            assert!(status.success(), "child failed on its own: {status}");
        }
        // Whatever the moment: the entry is absent or complete.
        if entry.exists() {
            assert_eq!(
                nar::hash_path(&entry).unwrap(),
                pin,
                "a partial tree was trusted"
            );
        }
        *outcomes.entry(entry.exists()).or_insert(0) += 1;
    }
    assert!(killed > 0, "no child was killed before it finished");
    eprintln!(
        "a whole tree fetch took {whole:?}; killed {killed} of 14 times; entry present after: {outcomes:?}"
    );

    let store = Store::open(&store_dir).unwrap();
    assert!(tmp_entries(&store_dir).is_empty());
    let req = SourceRequest {
        name: "rerun".into(),
        urls: vec!["https://unreachable.invalid/pkg-1.0.tar.gz".to_owned()],
        pin: Pin::Tree(pin),
        subtree: None,
    };
    let cfg = FetchConfig {
        source_dirs: vec![local],
        offline: true,
        progress: false,
        ..FetchConfig::default()
    };
    let got = Fetcher::new(cfg).fetch(&store, &req).unwrap();
    assert_eq!(nar::hash_path(&got.path).unwrap(), pin);
}

#[test]
fn gc_waits_for_other_processes() {
    if let Ok(role) = env::var(CHILD_ENV) {
        return run_child(&role);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut holder = child("gc_waits_for_other_processes", "hold", dir.path(), &[]);
    // libtest may print before the child's own line; read until OPEN.
    let mut reader = BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("OPEN") {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "child never opened the store"
        );
    }
    let store = Store::open(dir.path()).unwrap();
    let start = Instant::now();
    store.gc(&GcRoots::default()).unwrap();
    let waited = start.elapsed();
    let status = holder.wait().unwrap();
    assert!(status.success());
    assert!(
        waited >= Duration::from_millis(700),
        "gc ran while another process had the store open (waited {waited:?})"
    );
}
