//! The canonical form of a recipe and the input digest built on it: the
//! cache key of a package (docs/recipes.md, "Input digest").

use serde_json::{json, Map, Value};

use super::{Action, Pin, Recipe};
use crate::digest::Digest;

/// Names the schema of the input document, so a future change of what goes
/// into it can never collide with today's digests.
const INPUT_SCHEMA: &str = "imgrep-input-v1";

impl Recipe {
    /// The parsed recipe as JSON shaped like the TOML (`package`, `source`,
    /// `build`, `debs`), every default resolved, without the file's path.
    /// Comments, formatting, key order and spelled-out defaults do not show.
    pub fn canonical_value(&self) -> Value {
        let mut package = Map::new();
        package.insert("name".into(), json!(self.name));
        package.insert("version".into(), json!(self.version));
        package.insert("kind".into(), json!(self.kind.as_str()));
        package.insert("runtime".into(), json!(self.runtime));
        for (key, value) in [
            ("description", &self.description),
            ("license", &self.license),
            ("homepage", &self.homepage),
        ] {
            if let Some(v) = value {
                package.insert(key.into(), json!(v));
            }
        }

        let sources: Vec<Value> = self
            .sources
            .iter()
            .map(|s| {
                let mut m = Map::new();
                m.insert("urls".into(), json!(s.urls));
                if let Some(p) = &s.path {
                    m.insert("path".into(), json!(p));
                }
                let (key, pin) = match s.pin {
                    Pin::Sha256(_) => ("sha256", s.pin.to_recipe_string()),
                    Pin::Tree(_) => ("tree", s.pin.to_recipe_string()),
                };
                m.insert(key.into(), json!(pin));
                m.insert("unpack".into(), json!(s.unpack));
                m.insert("dest".into(), json!(s.dest));
                if let Some(f) = &s.file {
                    m.insert("file".into(), json!(f));
                }
                m.insert("executable".into(), json!(s.executable));
                // Written only when present, so recipes without one keep
                // their input digests.
                if let Some(sub) = &s.subtree {
                    m.insert("subtree".into(), json!(sub.path));
                    if let Some(a) = &sub.archive {
                        m.insert("sha256".into(), json!(a.hex()));
                    }
                }
                Value::Object(m)
            })
            .collect();

        let mut doc = Map::new();
        doc.insert("package".into(), Value::Object(package));
        doc.insert("source".into(), Value::Array(sources));
        if let Some(b) = &self.build {
            let mut m = Map::new();
            m.insert("deps".into(), json!(b.deps));
            m.insert("workdir".into(), json!(b.workdir));
            m.insert("env".into(), json!(b.env));
            m.insert("jobs".into(), json!(b.jobs));
            m.insert("source_date_epoch".into(), json!(b.source_date_epoch));
            // `build_dir` is left out: it says how the steps run, not what
            // they produce, and `imgrep reproduce` checks that by running
            // each recipe with the other one.
            // The default seccomp filter adds nothing, so that every recipe
            // that keeps it keeps its digest.
            if !b.seccomp_allow.is_empty() {
                let names: Vec<&str> = b.seccomp_allow.iter().map(|g| g.name()).collect();
                m.insert("seccomp_allow".into(), json!(names));
            }
            match &b.action {
                Action::Script(s) => m.insert("script".into(), json!(s)),
                Action::Steps(steps) => m.insert(
                    "steps".into(),
                    steps
                        .iter()
                        .map(|st| match &st.workdir {
                            Some(w) => json!({ "argv": st.argv, "workdir": w }),
                            None => json!({ "argv": st.argv }),
                        })
                        .collect(),
                ),
            };
            doc.insert("build".into(), Value::Object(m));
        }
        if let Some(d) = &self.debs {
            doc.insert(
                self.kind.as_str().into(),
                json!({ "symlinks": d.symlinks, "dirs": d.dirs }),
            );
        }
        let i = &self.image;
        if *i != crate::recipe::Image::default() {
            doc.insert(
                "image".into(),
                json!({ "entrypoint": i.entrypoint, "cmd": i.cmd, "env": i.env, "workdir": i.workdir }),
            );
        }
        if let Some(o) = &self.output {
            doc.insert(
                "output".into(),
                json!({ "image": o.image, "diff_id": o.diff_id.to_string() }),
            );
        }
        Value::Object(doc)
    }

    /// [`Recipe::canonical_value`] as canonical JSON bytes.
    pub fn canonical_json(&self) -> Vec<u8> {
        to_canonical(&self.canonical_value())
    }

    /// The document the input digest hashes: the canonical recipe (its
    /// sources' pins included), the image digest of every package in the
    /// build root in layer order, and the layer format version. Keep it
    /// beside a build to explain later what changed ([`diff_inputs`]).
    pub fn input_json<S: AsRef<str>>(
        &self,
        dep_image_digests: &[(S, Digest)],
        layer_format_version: u32,
    ) -> Vec<u8> {
        let deps: Vec<Value> = dep_image_digests
            .iter()
            .map(|(name, digest)| json!([name.as_ref(), digest]))
            .collect();
        to_canonical(&json!({
            "schema": INPUT_SCHEMA,
            "recipe": self.canonical_value(),
            "deps": deps,
            "layer_format_version": layer_format_version,
        }))
    }

    /// The cache key: sha256 of [`Recipe::input_json`].
    pub fn input_digest<S: AsRef<str>>(
        &self,
        dep_image_digests: &[(S, Digest)],
        layer_format_version: u32,
    ) -> Digest {
        Digest::of(&self.input_json(dep_image_digests, layer_format_version))
    }
}

fn to_canonical(v: &Value) -> Vec<u8> {
    crate::canonical::to_vec(v).expect("a JSON value always serialises")
}

/// What differs between two input documents ([`Recipe::input_json`]) or two
/// canonical recipes ([`Recipe::canonical_json`]), as one human line each,
/// e.g. `build.script changed`, `source[0].sha256: 7d5b… -> 1f2e…`,
/// `dependency gcc: image sha256:… -> sha256:…`. Empty when they are equal;
/// one line saying so when either side is not JSON.
pub fn diff_inputs(old: &[u8], new: &[u8]) -> Vec<String> {
    let (Ok(old), Ok(new)) = (
        serde_json::from_slice::<Value>(old),
        serde_json::from_slice::<Value>(new),
    ) else {
        return vec!["the previous input record is unreadable".into()];
    };
    let mut out = Vec::new();
    let input = |v: &Value| v.get("schema").is_some_and(|s| s == INPUT_SCHEMA);
    if input(&old) && input(&new) {
        diff_value("", &old["recipe"], &new["recipe"], &mut out);
        diff_deps(&old["deps"], &new["deps"], &mut out);
        diff_value(
            "layer_format_version",
            &old["layer_format_version"],
            &new["layer_format_version"],
            &mut out,
        );
    } else {
        diff_value("", &old, &new, &mut out);
    }
    out
}

fn diff_deps(old: &Value, new: &Value, out: &mut Vec<String>) {
    let pairs = |v: &Value| -> Vec<(String, String)> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p[0].as_str()?.to_owned(), p[1].as_str()?.to_owned())))
            .collect()
    };
    let (old, new) = (pairs(old), pairs(new));
    for (name, digest) in &new {
        match old.iter().find(|(n, _)| n == name) {
            None => out.push(format!("dependency {name} added")),
            Some((_, d)) if d != digest => {
                out.push(format!("dependency {name}: image {d} -> {digest}"))
            }
            Some(_) => {}
        }
    }
    for (name, _) in &old {
        if !new.iter().any(|(n, _)| n == name) {
            out.push(format!("dependency {name} removed"));
        }
    }
    let names = |v: &[(String, String)]| v.iter().map(|p| p.0.clone()).collect::<Vec<_>>();
    let (on, nn) = (names(&old), names(&new));
    if on != nn && on.len() == nn.len() && on.iter().all(|n| nn.contains(n)) {
        out.push(format!(
            "build root layer order: {} -> {}",
            on.join(", "),
            nn.join(", ")
        ));
    }
}

/// Descends through objects, and arrays of equal length; reports leaves.
fn diff_value(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    if old == new {
        return;
    }
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => diff_value(&join(key), x, y, out),
                    (None, Some(_)) => out.push(format!("{} added", join(key))),
                    (Some(_), None) => out.push(format!("{} removed", join(key))),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_value(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (Value::String(a), Value::String(b)) if a.contains('\n') || b.contains('\n') => {
            let line = a
                .lines()
                .zip(b.lines())
                .position(|(x, y)| x != y)
                .unwrap_or_else(|| a.lines().count().min(b.lines().count()));
            out.push(format!("{path} changed (from line {})", line + 1))
        }
        (Value::Array(a), Value::Array(b)) if a.iter().chain(b).any(Value::is_object) => {
            out.push(format!("{path}: {} -> {} entries", a.len(), b.len()))
        }
        _ => out.push(format!("{path}: {} -> {}", short(old), short(new))),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(79).collect::<String>())
    } else {
        s
    }
}
