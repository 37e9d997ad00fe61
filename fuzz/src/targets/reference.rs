//! Image references and registry challenges (`src/registry/reference.rs`,
//! `src/registry/auth.rs`), and the tags derived from package versions.

use imgrep::registry::{self, parse_challenge, Reference, Repository};

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = text.parse::<Reference>() {
        let printed = r.to_string();
        let back: Reference = printed.parse().unwrap_or_else(|e| {
            panic!("{text:?} printed as {printed:?}, which does not parse: {e}")
        });
        assert_eq!(back, r, "{text:?} printed as {printed:?}");
        let tag = registry::version_tag(text);
        r.with_tag(&tag)
            .unwrap_or_else(|e| panic!("version_tag({text:?}) = {tag:?} is not a valid tag: {e}"));
    }
    if let Ok(r) = text.parse::<Repository>() {
        let printed = r.to_string();
        let back: Repository = printed.parse().unwrap_or_else(|e| {
            panic!("{text:?} printed as {printed:?}, which does not parse: {e}")
        });
        // A repository prints as its identity, without the scheme.
        assert_eq!(
            (&back.registry.host, &back.name),
            (&r.registry.host, &r.name),
            "{text:?} printed as {printed:?}"
        );
        assert_eq!(back.to_string(), printed, "{text:?} printed as {printed:?}");
    }
    let _ = parse_challenge(text);
}
