//! The coverage-guided fuzzing binary: libFuzzer drives the target named by
//! `IMGREP_FUZZ_TARGET`. Built and run by `cargo xtask fuzz`, which adds
//! the sanitizer-coverage instrumentation (docs/fuzzing.md). With
//! `IMGREP_FUZZ_LIST=1` it lists the targets and exits.

#![no_main]

use std::sync::OnceLock;

static TARGET: OnceLock<&'static imgrep_fuzz::Target> = OnceLock::new();

fn init() {
    if std::env::var_os("IMGREP_FUZZ_LIST").is_some() {
        for t in imgrep_fuzz::TARGETS {
            println!("{}\t{}", t.name, t.about);
        }
        std::process::exit(0);
    }
    let name = std::env::var("IMGREP_FUZZ_TARGET").unwrap_or_default();
    let Some(target) = imgrep_fuzz::target(&name) else {
        eprintln!(
            "IMGREP_FUZZ_TARGET={name:?} names no fuzz target (IMGREP_FUZZ_LIST=1 lists them)"
        );
        std::process::exit(2)
    };
    TARGET.set(target).ok();
}

libfuzzer_sys::fuzz_target!(init: init(), |data: &[u8]| {
    (TARGET.get().expect("set by init").run)(data)
});
