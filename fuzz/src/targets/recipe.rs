//! The recipe parser (`src/recipe/`): untrusted package.toml text.
//!
//! An accepted recipe's canonical form (the JSON its input digest hashes,
//! shaped like the TOML) is written back as TOML and parsed again: the
//! canonical form and the input digest must not change. Comments, key
//! order, spelled-out defaults and `{version}` templates must not matter.

use std::path::Path;

use imgrep::digest::Digest;
use imgrep::recipe::Recipe;
use serde_json::Value;

/// A canonical JSON value as TOML; nulls (absent optional fields) dropped.
fn to_toml(v: &Value) -> Option<toml::Value> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => toml::Value::Integer(n.as_i64().expect("recipes hold integers")),
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(a) => toml::Value::Array(a.iter().filter_map(to_toml).collect()),
        Value::Object(o) => toml::Value::Table(
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), to_toml(v)?)))
                .collect(),
        ),
    })
}

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("packages/fuzz/package.toml");
    let Ok(recipe) = Recipe::parse(path, text) else {
        return;
    };
    let canonical = recipe.canonical_value();
    let deps = [("dep", Digest::of(b"dep"))];
    let digest = recipe.input_digest(&deps, 1);
    // The canonical form resolves every source default, also those a
    // recipe may not spell out: `executable` of an unpacked source, and
    // `dest`, `unpack`, `executable` of a debs recipe's .debs, and `unpack`,
    // `executable` of a wheel recipe's wheels (they may set `dest`).
    let mut written = canonical.clone();
    let resolved: &[&str] = match canonical["package"]["kind"].as_str() {
        Some("debs") => &["dest", "unpack", "executable"],
        Some("wheel") => &["unpack", "executable"],
        _ => &[],
    };
    for s in written["source"].as_array_mut().into_iter().flatten() {
        let Some(o) = s.as_object_mut() else { continue };
        // A `path` source has no URLs; a recipe may not write `urls = []`.
        if o.get("urls")
            .and_then(Value::as_array)
            .is_some_and(|u| u.is_empty())
        {
            o.remove("urls");
        }
        if !resolved.is_empty() {
            for key in resolved {
                o.remove(*key);
            }
        } else if o.get("unpack") == Some(&Value::Bool(true)) {
            o.remove("executable");
        }
    }
    let toml_text = toml::to_string(&to_toml(&written).expect("a recipe is an object")).unwrap();
    let again = Recipe::parse(path, &toml_text).unwrap_or_else(|e| {
        panic!("the canonical form of\n{text}\nis\n{toml_text}\nwhich does not parse:\n{e}")
    });
    assert_eq!(
        again.canonical_value(),
        canonical,
        "canonical form changed through TOML:\n{toml_text}"
    );
    assert_eq!(again.input_digest(&deps, 1), digest);
}
