//! Every fuzz target over its committed corpus (`fuzz/corpus/TARGET/`:
//! seeds and the input of every crash found, kept as a regression case),
//! then over pseudo-random inputs: the properties hold on the stable
//! toolchain, without instrumentation, in every test run. Coverage-guided
//! runs are `cargo xtask fuzz` (docs/fuzzing.md).
//!
//! `IMGREP_FUZZ_SMOKE=N` sets the number of random inputs per target
//! (default 100).

use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Files under `dir`, recursively, in sorted order.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// xorshift64*: reproducible inputs without another dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn replay(name: &str) {
    let target = imgrep_fuzz::target(name).expect("a target of that name");
    let root = root();
    let mut inputs = Vec::new();
    files(&root.join("fuzz/corpus").join(name), &mut inputs);
    if name == "recipe" {
        let mut recipes = Vec::new();
        for dir in ["packages", "stage0", "tests/recipes-build"] {
            files(&root.join(dir), &mut recipes);
        }
        inputs.extend(recipes.into_iter().filter(|p| p.ends_with("package.toml")));
    }
    for path in &inputs {
        let data = fs::read(path).unwrap();
        eprintln!("{name}: {}", path.display());
        (target.run)(&data);
    }
    let n: u64 = std::env::var("IMGREP_FUZZ_SMOKE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut rng = Rng(0x1234_5678_9abc_def1 ^ name.len() as u64);
    for i in 0..n {
        let len = (rng.next() % 4096) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let catch = std::panic::catch_unwind(|| (target.run)(&data));
        if let Err(e) = catch {
            let file = std::env::temp_dir().join(format!("imgrep-fuzz-{name}-{i}"));
            fs::write(&file, &data).unwrap();
            eprintln!(
                "{name}: random input {i} failed; saved as {}",
                file.display()
            );
            std::panic::resume_unwind(e);
        }
    }
    println!(
        "fuzz corpus {name}: {} corpus inputs, {n} random inputs",
        inputs.len()
    );
}

macro_rules! targets {
    ($($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name));
            }
        )*

        #[test]
        fn every_target_is_replayed() {
            let tested = [$(stringify!($name)),*];
            for t in imgrep_fuzz::TARGETS {
                assert!(tested.contains(&t.name), "no replay test for target {}", t.name);
            }
        }
    };
}

targets!(recipe, tar, unpack, deb, nar, statement, signature, keys, policy, manifest, reference);
