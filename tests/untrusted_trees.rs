//! Untrusted trees written on the host, outside any sandbox, attacked as an
//! attacker who controls one source archive or one .deb would (issue 14,
//! docs/threat-model.md "Attack classes and what stops them"): the source
//! layout of a build, a `tree` pin, and `kind = "debs"` assembly. Each
//! attack is mounted with the real binary against a scratch store; the test
//! fails if anything appears outside the tree being written. As root, each
//! attack runs a second time as an unprivileged user (nobody, through
//! setpriv), since the code paths differ in what the kernel allows.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use imgrep::digest::Digest;
use imgrep::nar;

/// An unprivileged user to repeat each attack as.
const NOBODY: u32 = 65534;

/// Who the attacks run as: the caller, and nobody too when the caller is
/// root and setpriv exists (said, with the reason, when it does not).
fn users() -> Vec<Option<u32>> {
    let mut out = vec![None];
    if nix::unistd::geteuid().is_root() {
        match Command::new("setpriv").arg("--version").output() {
            Ok(o) if o.status.success() => out.push(Some(NOBODY)),
            _ => eprintln!("SKIPPED: the unprivileged half of the attack: setpriv not found"),
        }
    }
    out
}

/// A scratch directory: `store/` (the store), `tree/` (a recipe tree) and
/// whatever an attack targets beside them. Owned by `user` when one is given.
struct Scratch {
    dir: tempfile::TempDir,
    user: Option<u32>,
}

impl Scratch {
    fn new(user: Option<u32>) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("imgrep-attack-")
            .tempdir_in("/var/tmp")
            .unwrap();
        fs::create_dir(dir.path().join("store")).unwrap();
        fs::create_dir(dir.path().join("tree")).unwrap();
        Scratch { dir, user }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes `packages/NAME/package.toml` and the files beside it.
    fn package(&self, name: &str, toml: &str, files: &[(&str, &[u8])]) {
        let dir = self.path("tree/packages").join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("package.toml"), toml).unwrap();
        for (f, bytes) in files {
            fs::write(dir.join(f), bytes).unwrap();
        }
    }

    /// Names in the scratch directory besides `store` and `tree`: what an
    /// escape left.
    fn strays(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "store" && n != "tree")
            .collect();
        names.sort();
        names
    }

    /// `imgrep -C tree ARGS` on the scratch store, as this scratch's user,
    /// with nothing of the host's configuration.
    fn imgrep(&self, args: &[&str], env: &[(&str, &Path)]) -> Output {
        if let Some(uid) = self.user {
            chown_tree(self.dir.path(), uid);
        }
        let bin = env!("CARGO_BIN_EXE_imgrep");
        let mut cmd = match self.user {
            None => Command::new(bin),
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups")
                    .arg(bin);
                c
            }
        };
        cmd.arg("-C").arg(self.path("tree")).args(args);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("IMGREP_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("IMGREP_STORE", self.path("store"))
            .env("IMGREP_CONFIG", "/dev/null")
            .env("IMGREP_APT_DIR", self.path("tree"))
            .env("IMGREP_OFFLINE", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }
}

fn chown_tree(path: &Path, uid: u32) {
    let _ = std::os::unix::fs::lchown(path, Some(uid), Some(uid));
    if fs::symlink_metadata(path).unwrap().is_dir() {
        for e in fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn who(user: Option<u32>) -> &'static str {
    if user.is_some() {
        "as nobody"
    } else {
        "as the caller"
    }
}

/// A plain tar of `entries`: (path, kind, link target or contents).
fn tar_of(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(if *kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(1_000_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match *kind {
            tar::EntryType::Symlink => {
                h.set_size(0);
                b.append_link(&mut h, path, Path::new(std::str::from_utf8(data).unwrap()))
                    .unwrap();
            }
            tar::EntryType::Regular => {
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, *data).unwrap();
            }
            _ => {
                if *kind == tar::EntryType::Char {
                    h.set_device_major(1).unwrap();
                    h.set_device_minor(3).unwrap();
                }
                h.set_size(0);
                b.append_data(&mut h, path, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

use tar::EntryType::{Directory as D, Regular as F, Symlink as L};

/// One `[[source]]` of a local archive beside package.toml.
fn source(file: &str, bytes: &[u8], dest: &str) -> String {
    format!(
        "[[source]]\npath = \"{file}\"\nsha256 = \"{}\"\ndest = \"{dest}\"\n\n",
        Digest::of(bytes).hex()
    )
}

/// A recipe of `sources` with `/build` in `build_dir`: on disk the
/// sources are laid out in the work directory, in memory straight into the
/// sandbox's tmpfs, by the same code. Its one step does not exist.
fn build_recipe(name: &str, sources: &str, build_dir: &str) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"1\"\ndescription = \"an attack\"\n\
         license = \"MIT\"\nhomepage = \"https://example.org\"\n\n{sources}\
         [build]\nbuild_dir = \"{build_dir}\"\nsteps = [[\"/nothing\"]]\n"
    )
}

/// Who each attack runs as, and where `/build` lives.
fn cases() -> Vec<(Option<u32>, &'static str)> {
    users()
        .into_iter()
        .flat_map(|u| [(u, "disk"), (u, "memory")])
        .collect()
}

/// Issue 14, defect 1: archive sources each holding `top/upN -> ..` at
/// dests `.`, `up1`, `up1/up2`, ... and a last one holding a file. Before
/// the fix, laying them out followed each link left by the one before and
/// the file landed beside the store. Variants: links that each stay inside
/// their own source but climb out together, and a plain file source written
/// over a link an earlier source left.
#[test]
fn source_layout_never_writes_outside_build() {
    for (user, build_dir) in cases() {
        let who = |user| format!("{} in {build_dir}", who(user));
        // The chain: from store/tmp/d-*/build, four levels up is
        // the scratch directory that holds the store.
        let s = Scratch::new(user);
        let mut sources = String::new();
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        let mut dest = String::from(".");
        for n in 1..=4 {
            let link = format!("top/up{n}");
            let tar = tar_of(&[("top/", D, b""), (&link, L, b"..")]);
            let file = format!("s{n}.tar");
            sources.push_str(&source(&file, &tar, &dest));
            files.push((file, tar));
            dest = if n == 1 {
                "up1".into()
            } else {
                format!("{dest}/up{n}")
            };
        }
        let last = tar_of(&[("top/", D, b""), ("top/PWNED", F, b"escaped\n")]);
        sources.push_str(&source("last.tar", &last, &dest));
        files.push(("last.tar".into(), last));
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(f, b)| (f.as_str(), &b[..])).collect();
        s.package("climb", &build_recipe("climb", &sources, build_dir), &refs);
        let out = s.imgrep(&["build", "climb"], &[]);
        let err = stderr(&out);
        assert_eq!(s.strays(), Vec::<String>::new(), "{}: {err}", who(user));
        assert_ne!(out.status.code(), Some(0), "{}: {err}", who(user));
        assert!(
            err.contains("source 1 (s1.tar)")
                && err.contains("up1 -> .. resolves outside the tree"),
            "{}: {err}",
            who(user)
        );

        // Links that each stay inside their own source: `b -> .`, then
        // `a -> b/..`, which only climbs out once `b` is there. The next
        // source's dest goes through `a`: refused, never followed.
        let s = Scratch::new(user);
        let one = tar_of(&[("top/", D, b""), ("top/b", L, b".")]);
        let two = tar_of(&[("top/", D, b""), ("top/a", L, b"b/..")]);
        let three = tar_of(&[("top/", D, b""), ("top/PWNED", F, b"escaped\n")]);
        let sources = [
            source("one.tar", &one, "."),
            source("two.tar", &two, "."),
            source("three.tar", &three, "a"),
        ]
        .concat();
        s.package(
            "combine",
            &build_recipe("combine", &sources, build_dir),
            &[("one.tar", &one), ("two.tar", &two), ("three.tar", &three)],
        );
        let out = s.imgrep(&["build", "combine"], &[]);
        let err = stderr(&out);
        assert_ne!(out.status.code(), Some(0), "{}: {err}", who(user));
        assert!(
            err.contains("source 3 (three.tar)") && err.contains("a is a symbolic link"),
            "{}: {err}",
            who(user)
        );
        assert!(
            !has_entry_named(&s.path("store"), "PWNED") && s.strays().is_empty(),
            "{}: PWNED escaped /build: {err}",
            who(user)
        );

        // A plain file source named like a link an earlier source left
        // (`f -> b/../PWNED`, out of /build once `b -> .` is there).
        let s = Scratch::new(user);
        let two = tar_of(&[("top/", D, b""), ("top/f", L, b"b/../PWNED")]);
        let payload = b"escaped\n";
        let sources = [
            source("one.tar", &one, "."),
            source("two.tar", &two, "."),
            format!(
                "[[source]]\npath = \"payload\"\nsha256 = \"{}\"\nfile = \"f\"\n\n",
                Digest::of(payload).hex()
            ),
        ]
        .concat();
        s.package(
            "overwrite",
            &build_recipe("overwrite", &sources, build_dir),
            &[("one.tar", &one), ("two.tar", &two), ("payload", payload)],
        );
        let out = s.imgrep(&["build", "overwrite"], &[]);
        let err = stderr(&out);
        assert_ne!(out.status.code(), Some(0), "{}: {err}", who(user));
        assert!(
            err.contains("source 3 (payload)") && err.contains("f exists already"),
            "{}: {err}",
            who(user)
        );
        assert!(
            !has_entry_named(&s.path("store"), "PWNED") && s.strays().is_empty(),
            "{}: PWNED written through the link: {err}",
            who(user)
        );
    }
}

/// A source may hold any name, the staging directory's own included
/// (`.imgrep-source-0`, where the first source laid out apart is unpacked
/// before it is moved in), and the layout in memory is the layout on disk:
/// the kept failure's `build/` (the work directory, or the in-memory
/// `/build` saved when the step could not start) holds the same entries.
#[test]
fn a_source_named_like_the_staging_directory_is_laid_out_whole() {
    for (user, build_dir) in cases() {
        let s = Scratch::new(user);
        let tar = tar_of(&[
            ("top/", D, b""),
            ("top/.imgrep-source-0/", D, b""),
            ("top/.imgrep-source-0/f", F, b"inside\n"),
            ("top/g", F, b"beside\n"),
        ]);
        let sources = [source("a.tar", &tar, "."), source("b.tar", &tar, "again")].concat();
        s.package(
            "names",
            &build_recipe("names", &sources, build_dir),
            &[("a.tar", &tar), ("b.tar", &tar)],
        );
        let out = s.imgrep(&["build", "names"], &[]);
        let err = stderr(&out);
        let label = format!("{} in {build_dir}: {err}", who(user));
        // Laid out, then the step that does not exist is refused.
        assert_ne!(out.status.code(), Some(0), "{label}");
        assert!(err.contains("command \"/nothing\""), "{label}");
        let kept = s.path("store/failed/names/build");
        assert_eq!(
            listing(&kept),
            [
                ".home",
                ".imgrep-source-0",
                ".imgrep-source-0/f",
                "again",
                "again/.imgrep-source-0",
                "again/.imgrep-source-0/f",
                "again/g",
                "g",
            ],
            "{label}"
        );
        assert_eq!(
            fs::read(kept.join(".imgrep-source-0/f")).unwrap(),
            b"inside\n"
        );
        assert!(s.strays().is_empty(), "{label}");
    }
}

/// Every path under `dir`, relative, sorted.
fn listing(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let path = format!("{rel}{}", e.file_name().to_string_lossy());
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), &format!("{path}/"), out);
            }
            out.push(path);
        }
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out);
    out.sort();
    out
}

/// Whether any directory under `root` (links not followed) holds `name`.
fn has_entry_named(root: &Path, name: &str) -> bool {
    let Ok(rd) = fs::read_dir(root) else {
        return false;
    };
    rd.map(|e| e.unwrap()).any(|e| {
        e.file_name() == name
            || (e.file_type().unwrap().is_dir() && has_entry_named(&e.path(), name))
    })
}

/// Issue 14, defect 2: a `tree` pin whose archive holds `top/up -> ..`
/// (inside the archive, out of the tree once `top/` is stripped) was
/// stored. Refused now, from an archive and from an unpacked directory,
/// and nothing is kept.
#[test]
fn tree_pin_with_a_link_out_of_the_tree_is_refused() {
    // The pin is the tree's true NAR hash, so only the link check stops it.
    let model = tempfile::tempdir().unwrap();
    fs::write(model.path().join("README"), b"hi\n").unwrap();
    symlink("..", model.path().join("up")).unwrap();
    let pin = nar::hash_path(model.path()).unwrap();
    let tar = tar_of(&[
        ("top/", D, b""),
        ("top/README", F, b"hi\n"),
        ("top/up", L, b".."),
    ]);
    for user in users() {
        for from_dir in [false, true] {
            let s = Scratch::new(user);
            let local = s.path("tree/local");
            fs::create_dir_all(&local).unwrap();
            if from_dir {
                let unpacked = local.join(pin.hex());
                fs::create_dir(&unpacked).unwrap();
                fs::write(unpacked.join("README"), b"hi\n").unwrap();
                symlink("..", unpacked.join("up")).unwrap();
            } else {
                fs::write(local.join("evil-1.tar"), &tar).unwrap();
            }
            let toml = format!(
                "[package]\nname = \"evil\"\nversion = \"1\"\ndescription = \"an attack\"\n\
                 license = \"MIT\"\nhomepage = \"https://example.org\"\n\n\
                 [[source]]\nurl = \"https://example.invalid/evil-1.tar\"\ntree = \"{pin}\"\n\n\
                 [build]\nsteps = [[\"/nothing\"]]\n"
            );
            s.package("evil", &toml, &[]);
            let out = s.imgrep(&["fetch", "evil"], &[("IMGREP_SOURCE_DIRS", &local)]);
            let err = stderr(&out);
            let what = format!(
                "{} from {}",
                who(user),
                if from_dir {
                    "a directory"
                } else {
                    "an archive"
                }
            );
            assert_ne!(out.status.code(), Some(0), "{what}: {err}");
            assert!(
                err.contains("up -> .. resolves outside the tree"),
                "{what}: {err}"
            );
            let trees = s.path("store/trees/nar-sha256");
            let kept = fs::read_dir(&trees).map(|d| d.count()).unwrap_or(0);
            assert_eq!(kept, 0, "{what}: a tree was stored: {err}");
        }
    }
}

/// A .deb (deb(5): ar of debian-binary, control.tar, data.tar) whose
/// data.tar holds `entries`.
fn deb_of(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
    let control = tar_of(&[("./", D, b""), ("./control", F, b"Package: evil\n")]);
    let data = tar_of(entries);
    let mut ar = ar::Builder::new(Vec::new());
    for (name, bytes) in [
        ("debian-binary", &b"2.0\n"[..]),
        ("control.tar", &control[..]),
        ("data.tar", &data[..]),
    ] {
        let header = ar::Header::new(name.as_bytes().to_vec(), bytes.len() as u64);
        ar.append(&header, bytes).unwrap();
    }
    ar.into_inner().unwrap()
}

fn debs_recipe(name: &str, deb: &[u8], debs: &str) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"1\"\nkind = \"debs\"\n\
         description = \"an attack\"\nlicense = \"MIT\"\nhomepage = \"https://example.org\"\n\n\
         [[source]]\npath = \"evil.deb\"\nsha256 = \"{}\"\n\n[debs]\n{debs}",
        Digest::of(deb).hex()
    )
}

/// Issue 14, defect 3: a .deb whose data holds `./bin -> HOSTDIR`, with
/// `[debs] dirs` and `symlinks` under bin/: assembling the image created
/// them in the host's directory. Refused now, naming the link. And a device
/// node in a .deb is left out with a line on stderr, not silently.
#[test]
fn debs_assembly_never_writes_through_a_link_of_a_package() {
    for user in users() {
        let s = Scratch::new(user);
        let host = s.path("host-dir");
        fs::create_dir(&host).unwrap();
        let deb = deb_of(&[
            ("./", D, b""),
            ("./bin", L, host.to_str().unwrap().as_bytes()),
        ]);
        for (name, debs) in [
            ("evil-dirs", "dirs = [\"bin/planted\"]\n"),
            ("evil-links", "[debs.symlinks]\n\"bin/sh\" = \"/tmp/x\"\n"),
        ] {
            s.package(name, &debs_recipe(name, &deb, debs), &[("evil.deb", &deb)]);
            let out = s.imgrep(&["build", name], &[]);
            let err = stderr(&out);
            assert_ne!(out.status.code(), Some(0), "{} {name}: {err}", who(user));
            assert!(
                err.contains("bin is a symbolic link"),
                "{} {name}: {err}",
                who(user)
            );
            let planted: Vec<_> = fs::read_dir(&host).unwrap().collect();
            assert!(
                planted.is_empty(),
                "{} {name}: wrote into the host directory: {err}",
                who(user)
            );
        }

        let deb = deb_of(&[
            ("./", D, b""),
            ("./dev/", D, b""),
            ("./dev/null", tar::EntryType::Char, b""),
            ("./etc/", D, b""),
            ("./etc/motd", F, b"hi\n"),
        ]);
        s.package(
            "with-device",
            &debs_recipe("with-device", &deb, "dirs = [\"tmp\"]\n"),
            &[("evil.deb", &deb)],
        );
        let out = s.imgrep(&["build", "with-device"], &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{}: {err}", who(user));
        assert!(
            err.contains("left out dev/null: device nodes are not allowed"),
            "{}: {err}",
            who(user)
        );
        assert!(
            s.strays() == ["host-dir"],
            "{}: {:?}",
            who(user),
            s.strays()
        );
    }
}
