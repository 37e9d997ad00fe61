//! Fuzz targets over everything imgrep reads from an untrusted party:
//! recipes, tar streams and the safe unpacker, .deb packages, trees hashed
//! as NAR, statements, signatures, keys, policies, registry manifests and
//! references (docs/fuzzing.md).
//!
//! Each target takes raw bytes and checks properties, not only that nothing
//! panics: the unpacker never writes outside its root nor through a link,
//! parse -> canonical -> parse round trips, a generated archive reads back
//! as written, a NAR hash equals an independent serialisation's (and `nix
//! hash path`'s when Nix is installed). A violated property panics, which
//! both drivers report as a crash: the coverage-guided libFuzzer binary
//! (`src/main.rs`, run by `cargo xtask fuzz`) and the corpus replay test
//! (`tests/corpus.rs`, part of the test suite).

pub mod gen;
pub mod scratch;
mod targets;

/// A fuzz target: raw bytes in, a panic when a property fails.
pub struct Target {
    pub name: &'static str,
    /// What it feeds and what it checks, for `cargo xtask fuzz --list`.
    pub about: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order `cargo xtask fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "recipe",
        about: "package.toml parser: no panic; parse -> canonical TOML -> parse keeps the canonical recipe and input digest",
        run: targets::recipe::run,
    },
    Target {
        name: "tar",
        about: "tar reader: no panic; a generated archive reads back entry by entry; the digest covers exactly the bytes read",
        run: targets::tar::run,
    },
    Target {
        name: "unpack",
        about: "safe unpacker, every preset, over a root holding links out: nothing outside the root changes, no link followed, no device made, source links stay inside",
        run: targets::unpack::run,
    },
    Target {
        name: "deb",
        about: ".deb reader: no panic; a generated .deb yields its data.tar byte for byte, which unpacks safely",
        run: targets::deb::run,
    },
    Target {
        name: "nar",
        about: "NAR hasher over generated trees: equals an independent NAR serialiser and `nix hash path` (when installed)",
        run: targets::nar::run,
    },
    Target {
        name: "statement",
        about: "statement parser: accepted bytes are canonical and round trip; generated statements read back equal",
        run: targets::statement::run,
    },
    Target {
        name: "signature",
        about: "signature files and trusted comments: no panic; only the genuine signature verifies; comments round trip",
        run: targets::signature::run,
    },
    Target {
        name: "keys",
        about: "public key files, --trust specs and keyrings with roles.toml: no panic; accepted keys re-encode to themselves",
        run: targets::keys::run,
    },
    Target {
        name: "policy",
        about: "policy.toml: no panic; an accepted policy is valid and round trips through TOML",
        run: targets::policy::run,
    },
    Target {
        name: "manifest",
        about: "registry manifests, indexes and configs: no panic; the platform chosen is linux/amd64",
        run: targets::manifest::run,
    },
    Target {
        name: "reference",
        about: "image references and WWW-Authenticate challenges: no panic; a reference prints to a string that parses back equal",
        run: targets::reference::run,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
