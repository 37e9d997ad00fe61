//! The recipe model through the library: resolved defaults, the input digest
//! (stable under reformatting, sensitive to every semantic change, including a
//! property test over random renderings), `diff_inputs`, and the graph orders
//! on trees written to disk.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use imgrep::digest::Digest;
use imgrep::graph::Graph;
use imgrep::recipe::{diff_inputs, Action, BuildDir, Kind, Pin, Recipe, RecipeSet};
use proptest::prelude::*;

const SHA: &str = "7d5b0b6062521e4627e099e4c9dc8248d32a30285e959b7eecaa780cf8cfd4a4";

fn parse(text: &str) -> Recipe {
    Recipe::parse(Path::new("package.toml"), text)
        .unwrap_or_else(|e| panic!("{e}\n--- recipe:\n{text}"))
}

fn digest(r: &Recipe) -> Digest {
    r.input_digest(&[("cc", Digest::of(b"cc image"))], 1)
}

const MUSL: &str = r#"
# The C library.
[package]
name = "musl"
version = "1.2.3"
license = "MIT"

[[source]]
urls = ["https://musl.libc.org/releases/musl-{version}.tar.gz"]
sha256 = "7d5b0b6062521e4627e099e4c9dc8248d32a30285e959b7eecaa780cf8cfd4a4"

[[source]]
path = "patches/fix.patch"
sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

[build]
deps = ["cc"]
env = { CFLAGS = "-O2" }
script = """
./configure --prefix=/usr
make -j"$JOBS"
make DESTDIR="$OUT" install
"""
"#;

#[test]
fn defaults_are_resolved() {
    let r = parse(MUSL);
    assert_eq!((r.name.as_str(), r.version.as_str()), ("musl", "1.2.3"));
    assert_eq!(r.kind, Kind::Build);
    let [tarball, patch] = &r.sources[..] else {
        panic!("two sources")
    };
    assert_eq!(
        tarball.urls,
        ["https://musl.libc.org/releases/musl-1.2.3.tar.gz"]
    );
    assert_eq!(tarball.pin, Pin::Sha256(Digest::from_hex(SHA).unwrap()));
    assert!(tarball.unpack);
    assert_eq!(
        (tarball.dest.as_str(), tarball.file.as_deref()),
        (".", None)
    );
    assert_eq!(tarball.file_name(), "musl-1.2.3.tar.gz");
    assert_eq!(patch.path.as_deref(), Some("patches/fix.patch"));
    assert!(!patch.unpack);
    assert_eq!(patch.file.as_deref(), Some("fix.patch"));
    let b = r.build.as_ref().unwrap();
    assert_eq!(b.workdir, "/build");
    assert_eq!(b.jobs, 0);
    assert_eq!(b.source_date_epoch, imgrep::DEFAULT_SOURCE_DATE_EPOCH);
    assert_eq!(b.build_dir, BuildDir::Disk);
    assert_eq!(b.env["CFLAGS"], "-O2");
    assert!(matches!(&b.action, Action::Script(s) if s.starts_with("./configure")));
    assert_eq!(r.deps(), ["cc"]);
}

#[test]
fn exec_steps_and_seed_files() {
    let r = parse(&format!(
        r#"[package]
name = "hex0"
version = "1"
[[source]]
url = "https://example.org/seeds/hex0-seed?raw=1"
sha256 = "{SHA}"
executable = true
dest = "./seed/"
[build]
source_date_epoch = 0
workdir = "/build/./seed"
steps = [["/build/seed/hex0-seed", "hex0.hex0", "/out/hex0"], {{ argv = ["/out/hex0"], workdir = "/out" }}]
"#
    ));
    let s = &r.sources[0];
    assert_eq!((s.unpack, s.executable), (false, true));
    assert_eq!(
        (s.dest.as_str(), s.file.as_deref()),
        ("seed", Some("hex0-seed"))
    );
    assert_eq!(r.source_date_epoch(), 0);
    let b = r.build.unwrap();
    assert_eq!(b.workdir, "/build/seed");
    let Action::Steps(steps) = b.action else {
        panic!("steps")
    };
    assert_eq!(
        steps[0].argv,
        ["/build/seed/hex0-seed", "hex0.hex0", "/out/hex0"]
    );
    assert_eq!(steps[0].workdir, None);
    assert_eq!(steps[1].workdir.as_deref(), Some("/out"));
}

#[test]
fn subtree_of_a_deb_and_its_two_pins() {
    let text = |subtree: &str| {
        format!(
            r#"[package]
name = "mescc"
version = "1"
[[source]]
urls = ["mirror://debian/pool/main/n/nyacc/nyacc_1.00.2-5_amd64.deb"]
sha256 = "{SHA}"
{subtree}
tree = "sha256-5jq0R8BWW0PuwvvQtk/fz66VqXBXS6eLm3pd4UjLBUU="
dest = "nyacc/module"
[build]
steps = [["/bin/true"]]
"#
        )
    };
    let r = parse(&text("subtree = \"./usr/share/guile/site/3.0/\""));
    let s = &r.sources[0];
    assert!(s.unpack, "a subtree is unpacked without saying so");
    let sub = s.subtree.as_ref().unwrap();
    assert_eq!(sub.path, "usr/share/guile/site/3.0");
    assert_eq!(sub.archive.unwrap().hex(), SHA);
    assert!(matches!(s.pin, Pin::Tree(_)));
    let json = String::from_utf8(r.input_json(&[("cc", Digest::of(b"cc"))], 1)).unwrap();
    assert!(
        json.contains(r#""subtree":"usr/share/guile/site/3.0""#),
        "{json}"
    );
    assert!(json.contains(&format!(r#""sha256":"{SHA}""#)), "{json}");
    // Another subtree of the same archive is another input.
    let other = parse(&text("subtree = \"usr/share/guile\""));
    assert_ne!(digest(&r), digest(&other));
}

#[test]
fn debs_recipe() {
    let r = parse(&format!(
        r#"[package]
name = "busybox"
version = "1.35.0-4"
kind = "debs"
[[source]]
urls = ["mirror://debian/pool/main/b/busybox/busybox-static_1.35.0-4+b3_amd64.deb"]
sha256 = "{SHA}"
[debs]
symlinks = {{ "./bin/sh" = "busybox" }}
dirs = ["tmp", "proc/"]
"#
    ));
    assert_eq!(r.kind, Kind::Debs);
    assert_eq!(r.source_date_epoch(), imgrep::DEFAULT_SOURCE_DATE_EPOCH);
    assert!(r.build.is_none());
    assert!(!r.sources[0].unpack);
    let d = r.debs.unwrap();
    assert_eq!(d.symlinks["bin/sh"], "busybox");
    assert_eq!(d.dirs, ["tmp", "proc"]);
}

#[test]
fn formatting_does_not_change_the_input_digest() {
    let base = digest(&parse(MUSL));
    let same = [
        // Comments, blank lines, key order, quoting, inline vs. sub-tables,
        // `url` for a single URL, spelled-out defaults.
        r#"[build]
script = "./configure --prefix=/usr\nmake -j\"$JOBS\"\nmake DESTDIR=\"$OUT\" install\n"
deps = [ "cc" ]   # the compiler
workdir = "/build/"
jobs = 0
source_date_epoch = 315532800

[build.env]
CFLAGS = '-O2'

[package]
license = "MIT"
version = "1.2.3"
name = 'musl'
kind = "build"
runtime = []

[[source]]
sha256 = "7d5b0b6062521e4627e099e4c9dc8248d32a30285e959b7eecaa780cf8cfd4a4"
url = "https://musl.libc.org/releases/musl-{version}.tar.gz"
unpack = true
dest = "./"

[[source]]
sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
path = "./patches//fix.patch"
file = "fix.patch"
executable = false
"#,
    ];
    for text in same {
        assert_eq!(digest(&parse(text)), base, "{text}");
        assert_eq!(parse(text).canonical_json(), parse(MUSL).canonical_json());
    }
}

#[test]
fn the_build_directory_is_not_an_input() {
    // It says where /build lives while the steps run, not what they
    // produce: `imgrep reproduce` runs each recipe with the other one.
    let base = parse(MUSL);
    for (value, want) in [("disk", BuildDir::Disk), ("memory", BuildDir::Memory)] {
        let r = parse(&MUSL.replace("[build]", &format!("[build]\nbuild_dir = \"{value}\"")));
        assert_eq!(r.build.as_ref().unwrap().build_dir, want);
        assert_eq!(digest(&r), digest(&base), "{value}");
        assert_eq!(r.canonical_json(), base.canonical_json());
    }
}

#[test]
fn a_relaxed_seccomp_filter_is_an_input_the_default_is_not() {
    // The default filter adds nothing: every existing digest stays.
    let base = parse(MUSL);
    let default = parse(&MUSL.replace("[build]", "[build]\nseccomp = \"default\""));
    assert!(default.build.as_ref().unwrap().seccomp_allow.is_empty());
    assert_eq!(digest(&default), digest(&base));
    assert_eq!(default.canonical_json(), base.canonical_json());
    // A relaxation widens what the build can do: another build. The same
    // groups however spelled give one digest.
    let with = |v: &str| parse(&MUSL.replace("[build]", &format!("[build]\nseccomp = {v}")));
    let userns = with(r#"["userns"]"#);
    assert_eq!(
        userns.build.as_ref().unwrap().seccomp_allow,
        [sandbox::SeccompGroup::Userns]
    );
    assert_ne!(digest(&userns), digest(&base));
    assert_eq!(digest(&with(r#"["userns", "userns"]"#)), digest(&userns));
    let all = r#"["personality", "keyring", "userfaultfd", "perf", "io_uring", "userns"]"#;
    assert_eq!(digest(&with("\"relaxed\"")), digest(&with(all)));
    assert_ne!(digest(&with("\"relaxed\"")), digest(&userns));
    let err = Recipe::parse(
        Path::new("package.toml"),
        &MUSL.replace("[build]", "[build]\nseccomp = [\"usern\"]"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("build.seccomp: unknown group `usern`; expected one of userns, io_uring"),
        "{err}"
    );
}

#[test]
fn every_semantic_change_changes_the_input_digest() {
    let r = parse(MUSL);
    let cc = Digest::of(b"cc image");
    let base = r.input_digest(&[("cc", cc)], 1);
    let changed = [
        MUSL.replace("--prefix=/usr", "--prefix=/usr "),
        MUSL.replace(
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            SHA,
        ),
        MUSL.replace("version = \"1.2.3\"", "version = \"1.2.4\""),
        MUSL.replace("-O2", "-O3"),
        MUSL.replace("license = \"MIT\"", "license = \"MIT-0\""),
        MUSL.replace("patches/fix.patch", "patches/other.patch"),
        MUSL.replace("[build]", "[build]\njobs = 1"),
        MUSL.replace("[build]", "[build]\nsource_date_epoch = 0"),
        MUSL.replace("[build]", "[build]\nworkdir = \"/build/src\""),
        MUSL.replace("musl.libc.org", "www.musl-libc.org"),
        MUSL.replace("sha256 = \"7d5b", "dest = \"src\"\nsha256 = \"7d5b"),
    ];
    let mut seen = vec![base];
    for text in &changed {
        let d = parse(text).input_digest(&[("cc", cc)], 1);
        assert!(!seen.contains(&d), "no change for:\n{text}");
        seen.push(d);
    }
    for d in [
        r.input_digest(&[("cc", Digest::of(b"other cc"))], 1),
        r.input_digest(&[("cc", cc)], 2),
        r.input_digest::<&str>(&[], 1),
        r.input_digest(&[("cc", cc), ("busybox", cc)], 1),
        r.input_digest(&[("busybox", cc), ("cc", cc)], 1),
    ] {
        assert!(!seen.contains(&d));
        seen.push(d);
    }
    // Owned names give the same key as borrowed ones.
    assert_eq!(r.input_digest(&[("cc".to_string(), cc)], 1), base);
}

#[test]
fn diff_names_what_changed() {
    let old = parse(MUSL);
    let new = parse(
        &MUSL
            .replace("-O2", "-O3")
            .replace("make -j", "make V=1 -j")
            .replace("license = \"MIT\"\n", ""),
    );
    let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
    let lines = diff_inputs(
        &old.input_json(&[("cc", a), ("ld", a)], 1),
        &new.input_json(&[("cc", b), ("as", a)], 2),
    );
    assert_eq!(
        lines,
        [
            "build.env.CFLAGS: \"-O2\" -> \"-O3\"".to_string(),
            "build.script changed (from line 2)".to_string(),
            "package.license removed".to_string(),
            format!("dependency cc: image {a} -> {b}"),
            "dependency as added".to_string(),
            "dependency ld removed".to_string(),
            "layer_format_version: 1 -> 2".to_string(),
        ]
    );
    assert!(diff_inputs(
        &old.input_json(&[("cc", a)], 1),
        &old.input_json(&[("cc", a)], 1)
    )
    .is_empty());
    assert_eq!(
        diff_inputs(&old.canonical_json(), &new.canonical_json()).len(),
        3
    );
    assert_eq!(
        diff_inputs(
            &old.input_json(&[("cc", a), ("ld", a)], 1),
            &old.input_json(&[("ld", a), ("cc", a)], 1)
        ),
        ["build root layer order: cc, ld -> ld, cc"]
    );
    let one_source = parse(&MUSL.replace(
        "[[source]]\npath = \"patches/fix.patch\"\nsha256 = \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"\n",
        "",
    ));
    assert_eq!(one_source.sources.len(), 1);
    assert_eq!(
        diff_inputs(&old.canonical_json(), &one_source.canonical_json()),
        ["source: 2 -> 1 entries"]
    );
    assert_eq!(
        diff_inputs(b"not json", &old.canonical_json()),
        ["the previous input record is unreadable"]
    );
}

// ---- property: any rendering of the same recipe has the same digest ----

#[derive(Debug, Clone)]
struct Spec {
    name: String,
    version: String,
    script: String,
    env: BTreeMap<String, String>,
    deps: Vec<String>,
    sha: [u8; 32],
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        "[a-z][a-z0-9-]{0,8}",
        "[0-9]{1,2}\\.[0-9]{1,2}[a-z]?",
        "[ -~\n\t]{0,40}[!-~]",
        prop::collection::btree_map("[A-Z][A-Z0-9_]{0,5}", "[ -~\n]{0,12}", 0..4),
        prop::collection::btree_set("[a-z][a-z0-9]{0,5}", 0..4),
        any::<[u8; 32]>(),
    )
        .prop_map(|(name, version, script, env, deps, sha)| Spec {
            name,
            version,
            script,
            env: env
                .into_iter()
                .filter(|(k, _)| {
                    ![
                        "PATH", "HOME", "TZ", "LC_ALL", "JOBS", "OUT", "TMPDIR", "TARGET",
                    ]
                    .contains(&k.as_str())
                })
                .collect(),
            deps: deps.into_iter().collect(),
            sha,
        })
}

/// A tiny deterministic generator for rendering choices.
struct Choices(u64);

impl Choices {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.next(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// A TOML string in one of its spellings: basic, literal or multi-line.
fn string(s: &str, c: &mut Choices) -> String {
    let plain = !s.chars().any(|ch| ch.is_control() || ch == '\'');
    match c.next(3) {
        1 if plain => format!("'{s}'"),
        2 if !s.contains("\"\"\"") && !s.ends_with('"') && !s.ends_with('\\') => {
            let mut out = String::from("\"\"\"\n");
            for ch in s.chars() {
                match ch {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push('\n'),
                    '\t' => out.push_str("\\t"),
                    c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
                    c => out.push(c),
                }
            }
            out + "\"\"\""
        }
        _ => {
            let mut out = String::from("\"");
            for ch in s.chars() {
                match ch {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
                    c => out.push(c),
                }
            }
            out + "\""
        }
    }
}

fn render(s: &Spec, seed: u64) -> String {
    let c = &mut Choices(seed | 1);
    let comment = |c: &mut Choices| if c.next(2) == 0 { "" } else { "  # note" };
    let mut pkg = vec![
        format!("name = {}", string(&s.name, c)),
        format!("version = {}", string(&s.version, c)),
    ];
    if c.next(2) == 0 {
        pkg.push("kind = \"build\"".into());
    }
    c.shuffle(&mut pkg);
    let deps: Vec<String> = s.deps.iter().map(|d| string(d, c)).collect();
    let mut build = vec![
        format!("deps = [{}]", deps.join(", ")),
        format!("script = {}", string(&s.script, c)),
    ];
    if c.next(2) == 0 {
        build.push("jobs = 0".into());
        build.push("workdir = \"/build/.\"".into());
    }
    let env_table = c.next(2) == 0;
    let env: Vec<String> = s
        .env
        .iter()
        .map(|(k, v)| format!("{k} = {}", string(v, c)))
        .collect();
    if !env_table {
        build.push(format!("env = {{ {} }}", env.join(", ")));
    }
    c.shuffle(&mut build);
    let mut source = vec![
        format!("url = \"https://h/{}-{{version}}.tar.gz\"", s.name),
        format!("sha256 = \"{}\"", hex::encode(s.sha)),
    ];
    if c.next(2) == 0 {
        source.push("unpack = true".into());
        source.push("dest = \".\"".into());
    }
    c.shuffle(&mut source);

    let table = |header: &str, keys: &[String], c: &mut Choices| {
        let mut t = format!("{header}{}\n", comment(c));
        for k in keys {
            t += &format!("{k}{}\n", comment(c));
        }
        t
    };
    let mut sections = vec![
        table("[package]", &pkg, c),
        table("[[source]]", &source, c),
        table("[build]", &build, c)
            + &if env_table {
                table("[build.env]", &env, c)
            } else {
                String::new()
            },
    ];
    c.shuffle(&mut sections);
    sections.join(if c.next(2) == 0 {
        "\n"
    } else {
        "\n# section\n\n"
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn input_digest_ignores_formatting(s in spec(), a in any::<u64>(), b in any::<u64>()) {
        let (ta, tb) = (render(&s, a), render(&s, b));
        let (ra, rb) = (parse(&ta), parse(&tb));
        prop_assert_eq!(ra.canonical_json(), rb.canonical_json(), "\n{}\n---\n{}", ta, tb);
        prop_assert_eq!(digest(&ra), digest(&rb));
        prop_assert_eq!(&ra.name, &s.name);
        let script_ok = matches!(&ra.build.as_ref().unwrap().action, Action::Script(x) if *x == s.script);
        prop_assert!(script_ok);
        prop_assert_eq!(&ra.build.as_ref().unwrap().env, &s.env);
    }

    #[test]
    fn input_digest_sees_a_changed_script_byte(s in spec(), seed in any::<u64>(), at in any::<prop::sample::Index>()) {
        let mut t = s.clone();
        let i = at.index(t.script.len());
        let old = t.script.as_bytes()[i];
        let new = if old == b'~' { b'!' } else { old + 1 };
        t.script.replace_range(i..i + 1, &(new as char).to_string());
        prop_assert_ne!(digest(&parse(&render(&s, seed))), digest(&parse(&render(&t, seed))));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any text, and any one-character corruption of a valid recipe, gives a
    /// recipe or positioned problems inside the text: never a panic.
    #[test]
    fn malformed_text_gives_positioned_problems(
        text in prop_oneof![
            "[ -~\n\\[\\]=\"'{}é]{0,200}",
            (any::<prop::sample::Index>(), "[ -~\n]").prop_map(|(at, ch)| {
                let mut t = MUSL.to_string();
                let i = at.index(t.len());
                t.replace_range(i..i + 1, &ch);
                t
            }),
        ]
    ) {
        let lines = text.split('\n').count();
        if let Err(e) = Recipe::parse(Path::new("p.toml"), &text) {
            prop_assert!(!e.diagnostics.is_empty());
            for d in &e.diagnostics {
                let (line, column) = d.position.expect("a position");
                prop_assert!(line >= 1 && line <= lines && column >= 1, "{} in\n{}", d, text);
            }
        }
    }
}

// ---- the graph, on trees written to disk ----

/// `(name, deps, runtime)` recipes under packages/.
fn set(pkgs: &[(&str, &[&str], &[&str])]) -> (tempfile::TempDir, RecipeSet) {
    let dir = tempfile::tempdir().unwrap();
    for (name, deps, runtime) in pkgs {
        let quote = |v: &[&str]| {
            v.iter()
                .map(|d| format!("\"{d}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let p = dir.path().join("packages").join(name);
        fs::create_dir_all(&p).unwrap();
        fs::write(
            p.join("package.toml"),
            format!(
                "[package]\nname = \"{name}\"\nversion = \"1\"\nruntime = [{}]\n[build]\ndeps = [{}]\nscript = \"true\"\n",
                quote(runtime),
                quote(deps)
            ),
        )
        .unwrap();
    }
    let set = RecipeSet::load(dir.path()).unwrap();
    (dir, set)
}

fn names(v: &[&Recipe]) -> Vec<String> {
    v.iter().map(|r| r.name.clone()).collect()
}

#[test]
fn closure_in_dependency_order_with_name_ties() {
    let (_d, s) = set(&[
        ("sh", &[], &[]),
        ("libc", &["sh"], &[]),
        ("cc", &["sh"], &["libc"]),
        ("zlib", &["cc"], &[]),
        ("app", &["cc", "zlib"], &["zlib"]),
        ("other", &["sh"], &[]),
    ]);
    let g = Graph::new(&s);
    assert_eq!(
        names(&g.closure(&["app"]).unwrap()),
        ["sh", "libc", "cc", "zlib", "app"]
    );
    assert_eq!(
        names(&g.closure(&[]).unwrap()),
        ["sh", "libc", "cc", "other", "zlib", "app"]
    );
    assert_eq!(
        g.levels(&["app", "other"]).unwrap(),
        vec![
            vec!["sh"],
            vec!["libc", "other"],
            vec!["cc"],
            vec!["zlib"],
            vec!["app"]
        ]
    );
    assert_eq!(g.roots(), ["app", "other"]);
    assert_eq!(g.dependants("sh"), ["cc", "libc", "other"]);
    assert_eq!(
        g.closure(&["ap"]).map(|_| ()).unwrap_err().to_string(),
        "unknown package `ap` (did you mean `app`?)"
    );
}

#[test]
fn build_roots_and_bundles_stack_runtime_closures() {
    let (_d, s) = set(&[
        ("base", &[], &[]),
        ("libc", &["base"], &["base"]),
        ("libz", &["base"], &["libc"]),
        ("gcc", &["base"], &["libc", "binutils"]),
        ("binutils", &["base"], &["libz"]),
        ("app", &["gcc", "libz"], &["libz"]),
    ]);
    let g = Graph::new(&s);
    assert_eq!(
        g.runtime_closure("gcc"),
        ["base", "libc", "libz", "binutils", "gcc"]
    );
    assert_eq!(g.runtime_closure("app"), ["base", "libc", "libz", "app"]);
    assert_eq!(
        g.build_root("app"),
        ["base", "libc", "libz", "binutils", "gcc"]
    );
    assert_eq!(g.build_root("base"), Vec::<&str>::new());
}

#[test]
fn schedule_hands_out_ready_packages_longest_chain_first() {
    let (_d, s) = set(&[
        ("a", &[], &[]),
        ("b", &[], &[]),
        ("c", &["b"], &[]),
        ("d", &["c"], &[]),
        ("e", &["a"], &[]),
        ("f", &["e", "d"], &[]),
        ("g", &["a"], &[]),
    ]);
    let g = Graph::new(&s);
    let mut sched = g.schedule(&[]).unwrap();
    // b heads the longest chain (b c d f), so it starts before a.
    assert_eq!(sched.next_ready().as_deref(), Some("b"));
    assert_eq!(sched.next_ready().as_deref(), Some("a"));
    assert_eq!(sched.next_ready(), None);
    assert_eq!(sched.running(), 2);
    sched.complete("a");
    assert_eq!(sched.next_ready().as_deref(), Some("e"));
    assert_eq!(sched.next_ready().as_deref(), Some("g"));
    sched.complete("b");
    assert_eq!(sched.next_ready().as_deref(), Some("c"));
    assert_eq!(sched.fail("c"), ["d", "f"]);
    sched.complete("e");
    sched.complete("g");
    assert_eq!(sched.next_ready(), None);
    assert!(sched.is_finished());

    // With every build succeeding, -j 1 visits the whole closure once, each
    // package after its dependencies.
    let mut sched = g.schedule(&["f"]).unwrap();
    let mut done: Vec<String> = Vec::new();
    while let Some(n) = sched.next_ready() {
        for dep in g.edges(&n) {
            assert!(done.iter().any(|d| d == dep), "{n} before {dep}");
        }
        sched.complete(&n);
        done.push(n);
    }
    assert!(sched.is_finished());
    assert_eq!(done, ["b", "a", "c", "d", "e", "f"]);
}
