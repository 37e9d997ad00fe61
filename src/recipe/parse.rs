//! One package.toml: the spanned TOML tree checked against the format of
//! docs/recipes.md, collecting every problem with its position.

use std::collections::BTreeMap;
use std::path::Path;

use super::check;
use super::diag::{Diagnostic, Position};
use super::node::{self, LineIndex, Node, Span, Spanned};
use super::suggest::suggest;
use super::{
    Action, Build, BuildDir, Debs, Image, Kind, Output, Pin, Recipe, Source, Step, Subtree,
    SECTIONS,
};

const PACKAGE_KEYS: &[&str] = &[
    "name",
    "version",
    "description",
    "license",
    "homepage",
    "kind",
    "runtime",
];
const SOURCE_KEYS: &[&str] = &[
    "url",
    "urls",
    "path",
    "sha256",
    "tree",
    "unpack",
    "dest",
    "file",
    "executable",
    "subtree",
];
const BUILD_KEYS: &[&str] = &[
    "deps",
    "workdir",
    "env",
    "jobs",
    "source_date_epoch",
    "build_dir",
    "seccomp",
    "script",
    "steps",
];
const STEP_KEYS: &[&str] = &["argv", "workdir"];
const DEBS_KEYS: &[&str] = &["symlinks", "dirs"];
const IMAGE_KEYS: &[&str] = &["entrypoint", "cmd", "env", "workdir"];
const OUTPUT_KEYS: &[&str] = &["image", "diff_id"];

/// Whether an unknown key of `entries` is a typo of one of `keys`: then
/// [`Cx::known_keys`] said so, and "missing `key`" would say it twice.
fn misspelled(entries: &Entries, allowed: &[&str], keys: &[&str]) -> bool {
    entries.iter().any(|(k, _)| {
        let k = k.get_ref().as_str();
        !allowed.contains(&k)
            && suggest(k, allowed.iter().copied()).is_some_and(|s| keys.contains(&s))
    })
}

type Entries = [(Spanned<String>, Spanned<Node>)];

/// An entry of `build.deps` or `package.runtime`.
pub struct Reference {
    /// Where it is, e.g. `build.deps[1]`.
    pub what: String,
    pub name: String,
    pub position: Position,
}

/// What one file yielded. The name and references are kept even when other
/// checks failed, so cross-file checks still see the package.
pub struct Parsed {
    pub name: Option<(String, Position)>,
    /// Build deps, then runtime packages.
    pub refs: Vec<Reference>,
    /// Where `[output]` is, for the checks across recipes that provide one image.
    pub output: Option<Position>,
    /// Valid only when `diagnostics` is empty.
    pub recipe: Option<Recipe>,
    pub diagnostics: Vec<Diagnostic>,
}

pub fn parse(path: &Path, text: &str) -> Parsed {
    let mut cx = Cx {
        path,
        index: LineIndex::new(text),
        diags: Vec::new(),
        name: None,
        deps: Vec::new(),
        runtime: Vec::new(),
        output: None,
    };
    let doc = match node::parse(text) {
        Ok(doc) => doc,
        Err(err) => {
            let span = err.span;
            let lines: Vec<&str> = err
                .message
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let message = format!("TOML syntax: {}", lines.join("; "));
            cx.error(&span, message);
            return Parsed {
                name: None,
                refs: Vec::new(),
                output: None,
                recipe: None,
                diagnostics: cx.diags,
            };
        }
    };
    let recipe = cx.recipe(&doc);
    Parsed {
        name: cx.name,
        refs: cx.deps.into_iter().chain(cx.runtime).collect(),
        output: cx.output,
        recipe: recipe.filter(|_| cx.diags.is_empty()),
        diagnostics: cx.diags,
    }
}

struct Cx<'a> {
    path: &'a Path,
    index: LineIndex<'a>,
    diags: Vec<Diagnostic>,
    name: Option<(String, Position)>,
    deps: Vec<Reference>,
    runtime: Vec<Reference>,
    output: Option<Position>,
}

impl Cx<'_> {
    fn pos(&self, span: &Span) -> Position {
        self.index.position(span.start)
    }

    fn error(&mut self, span: &Span, message: impl Into<String>) {
        self.diags.push(Diagnostic {
            path: self.path.to_path_buf(),
            position: Some(self.pos(span)),
            message: message.into(),
        });
    }

    fn expected(&mut self, node: &Spanned<Node>, what: &str, expected: &str) {
        let found = node.get_ref().kind();
        self.error(
            &node.span(),
            format!("{what}: expected {expected}, found {found}"),
        );
    }

    fn table<'n>(&mut self, node: &'n Spanned<Node>, what: &str) -> Option<&'n Entries> {
        match node.get_ref() {
            Node::Table(entries) => Some(entries),
            _ => {
                self.expected(node, what, "a table");
                None
            }
        }
    }

    /// Reports every key not in `allowed`: the allowed key it is a typo
    /// of, else every allowed key.
    fn known_keys(&mut self, entries: &Entries, allowed: &[&str], section: &str) {
        for (key, _) in entries {
            let key_str = key.get_ref().as_str();
            if allowed.contains(&key_str) {
                continue;
            }
            let message = match suggest(key_str, allowed.iter().copied()) {
                Some(s) => format!("unknown key `{key_str}` in {section}; did you mean `{s}`?"),
                None => format!(
                    "unknown key `{key_str}` in {section}; expected one of: {}",
                    allowed.join(", ")
                ),
            };
            self.error(&key.span(), message);
        }
    }

    fn string<'n>(&mut self, node: &'n Spanned<Node>, what: &str) -> Option<&'n str> {
        match node.get_ref() {
            Node::String(s) => Some(s),
            _ => {
                self.expected(node, what, "a string");
                None
            }
        }
    }

    fn opt_string(&mut self, entries: &Entries, key: &str, what: &str) -> Option<String> {
        get(entries, key).and_then(|n| self.string(n, what).map(str::to_owned))
    }

    fn boolean(&mut self, node: &Spanned<Node>, what: &str) -> Option<bool> {
        match node.get_ref() {
            Node::Boolean(b) => Some(*b),
            _ => {
                self.expected(node, what, "true or false");
                None
            }
        }
    }

    fn integer(&mut self, node: &Spanned<Node>, what: &str) -> Option<i64> {
        match node.get_ref() {
            Node::Integer(i) => Some(*i),
            _ => {
                self.expected(node, what, "an integer");
                None
            }
        }
    }

    /// An array of strings, each with its span.
    fn strings<'n>(&mut self, node: &'n Spanned<Node>, what: &str) -> Option<Vec<(&'n str, Span)>> {
        let Node::Array(items) = node.get_ref() else {
            self.expected(node, what, "an array of strings");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.string(item, &format!("{what}[{i}]")) {
                Some(s) => out.push((s, item.span())),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// Runs a value check; reports its message at `span` on failure.
    fn check<T>(&mut self, span: &Span, what: &str, r: Result<T, String>) -> Option<T> {
        r.map_err(|msg| self.error(span, format!("{what}: {msg}")))
            .ok()
    }

    fn recipe(&mut self, doc: &Spanned<Node>) -> Option<Recipe> {
        let top = self.table(doc, "the document")?;
        self.known_keys(top, SECTIONS, "the top level");

        let Some(package) = get(top, "package") else {
            if !misspelled(top, SECTIONS, &["package"]) {
                self.error(&(0..0), "missing [package] section");
            }
            return None;
        };
        let package = self.table(package, "[package]")?;
        self.known_keys(package, PACKAGE_KEYS, "[package]");

        let name = match get(package, "name") {
            Some(n) => {
                let name = self.string(n, "package.name")?.to_owned();
                self.check(&n.span(), "package.name", check::package_name(&name))?;
                let pos = self.pos(&n.span());
                self.name = Some((name.clone(), pos));
                name
            }
            None => {
                if !misspelled(package, PACKAGE_KEYS, &["name"]) {
                    self.error(&header(doc, "package"), "missing key `name` in [package]");
                }
                return None;
            }
        };
        let version = match get(package, "version") {
            Some(v) => {
                let version = self.string(v, "package.version").map(str::to_owned);
                if let Some(ver) = &version {
                    self.check(&v.span(), "package.version", check::version(ver));
                }
                version
            }
            None => {
                if !misspelled(package, PACKAGE_KEYS, &["version"]) {
                    self.error(
                        &header(doc, "package"),
                        "missing key `version` in [package]",
                    );
                }
                None
            }
        };
        let runtime = match self.names(package, "runtime", "package.runtime") {
            Some(refs) => {
                let names = refs.iter().map(|r| r.name.clone()).collect();
                self.runtime = refs;
                names
            }
            None => Vec::new(),
        };
        let kind = match get(package, "kind") {
            None => Kind::Build,
            Some(k) => {
                match self.string(k, "package.kind") {
                    Some("build") => Kind::Build,
                    Some("debs") => Kind::Debs,
                    Some("wheel") => Kind::Wheel,
                    Some(other) => {
                        let msg = format!(
                            "package.kind: unknown kind `{other}`; expected \"build\", \"debs\" or \"wheel\""
                        );
                        self.error(&k.span(), msg);
                        // What else is valid depends on the kind.
                        return None;
                    }
                    None => return None,
                }
            }
        };

        let sources = self.sources(top, version.as_deref().unwrap_or_default(), kind);

        let build = match (kind, get(top, "build")) {
            (Kind::Build, Some(b)) => self.build(b),
            (Kind::Build, None) => {
                if !misspelled(top, SECTIONS, &["build"]) {
                    self.error(
                        &(0..0),
                        "missing [build] section: a kind = \"build\" recipe needs `script` or `steps`",
                    );
                }
                None
            }
            (k, Some(b)) => {
                let k = k.as_str();
                self.error(
                    &b.span(),
                    format!(
                        "[build] in a kind = \"{k}\" recipe: no step runs for {k}; \
                         remove [build] or drop kind = \"{k}\""
                    ),
                );
                None
            }
            (_, None) => None,
        };
        let mut debs = None;
        for table in [Kind::Debs, Kind::Wheel] {
            let t = table.as_str();
            match (kind == table, get(top, t)) {
                (true, Some(d)) => debs = self.debs(d, t),
                (true, None) => debs = Some(Debs::default()),
                (false, Some(d)) => self.error(
                    &d.span(),
                    format!(
                        "[{t}] is only for kind = \"{t}\" recipes (set package.kind = \"{t}\")"
                    ),
                ),
                (false, None) => {}
            }
        }
        if kind.assembled() && debs.is_none() {
            return None;
        }

        let image = match get(top, "image") {
            Some(i) => self.image(i),
            None => Some(Image::default()),
        };

        let output = match get(top, "output") {
            Some(o) => {
                self.output = Some(self.pos(&header(doc, "output")));
                self.output(o, &name).map(Some)
            }
            None => Some(None),
        };

        let description = self.opt_string(package, "description", "package.description");
        let license = self.opt_string(package, "license", "package.license");
        let homepage = self.opt_string(package, "homepage", "package.homepage");
        Some(Recipe {
            name,
            version: version?,
            description,
            license,
            homepage,
            kind,
            runtime,
            sources: sources?,
            build,
            debs,
            image: image?,
            output: output?,
            path: self.path.to_path_buf(),
        })
    }

    /// A list of distinct package names, as references.
    fn names(&mut self, entries: &Entries, key: &str, what: &str) -> Option<Vec<Reference>> {
        let items = self.strings(get(entries, key)?, what)?;
        let mut refs: Vec<Reference> = Vec::new();
        for (i, (name, span)) in items.into_iter().enumerate() {
            let what = format!("{what}[{i}]");
            if self
                .check(&span, &what, check::package_name(name))
                .is_none()
            {
                continue;
            }
            if refs.iter().any(|r| r.name == name) {
                self.error(&span, format!("{what}: `{name}` is listed twice"));
                continue;
            }
            refs.push(Reference {
                what,
                name: name.to_owned(),
                position: self.pos(&span),
            });
        }
        Some(refs)
    }

    fn sources(&mut self, top: &Entries, version: &str, kind: Kind) -> Option<Vec<Source>> {
        let Some(node) = get(top, "source") else {
            return Some(Vec::new());
        };
        let Node::Array(items) = node.get_ref() else {
            self.expected(node, "source", "an array of tables ([[source]])");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.source(item, &format!("source[{i}]"), version, kind) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn source(
        &mut self,
        node: &Spanned<Node>,
        what: &str,
        version: &str,
        kind: Kind,
    ) -> Option<Source> {
        let entries = self.table(node, what)?;
        self.known_keys(entries, SOURCE_KEYS, &format!("[[source]] ({what})"));
        let start = node.span();
        let mut ok = true;

        let mut urls = Vec::new();
        let mut url_spans = Vec::new();
        if let Some(u) = get(entries, "url") {
            if get(entries, "urls").is_some() {
                self.error(&u.span(), format!("{what}: give `url` or `urls`, not both"));
                ok = false;
            }
            let w = format!("{what}.url");
            match self.string(u, &w) {
                Some(s) => url_spans.push((s, u.span(), w)),
                None => ok = false,
            }
        }
        if let Some(u) = get(entries, "urls") {
            match self.strings(u, &format!("{what}.urls")) {
                Some(list) if list.is_empty() => {
                    self.error(&u.span(), format!("{what}.urls: empty list"));
                    ok = false;
                }
                Some(list) => url_spans.extend(
                    list.into_iter()
                        .enumerate()
                        .map(|(i, (s, span))| (s, span, format!("{what}.urls[{i}]"))),
                ),
                None => ok = false,
            }
        }
        for (raw, span, w) in &url_spans {
            match self.check(span, w, check::url(raw, version)) {
                Some(u) => urls.push(u),
                None => ok = false,
            }
        }

        let path = match get(entries, "path") {
            Some(p) => {
                let w = format!("{what}.path");
                let s = self.string(p, &w);
                let norm = s.and_then(|s| self.check(&p.span(), &w, check::relative_path(s)));
                match norm {
                    Some(n) if n == "." => {
                        self.error(
                            &p.span(),
                            format!("{w}: must name a file in the package directory"),
                        );
                        ok = false;
                        None
                    }
                    Some(n) => {
                        if !url_spans.is_empty() {
                            self.error(&p.span(), format!("{what}: give `path` or URLs, not both"));
                            ok = false;
                        }
                        Some(n)
                    }
                    None => {
                        ok = false;
                        None
                    }
                }
            }
            None => None,
        };
        if ["url", "urls", "path"]
            .iter()
            .all(|k| get(entries, k).is_none())
            && !misspelled(entries, SOURCE_KEYS, &["url", "urls", "path"])
        {
            self.error(
                &start,
                format!("{what}: missing `urls` (or `path` for a file beside package.toml)"),
            );
            ok = false;
        }

        // A kind = "debs" recipe refuses the key itself (below).
        let has_subtree = kind == Kind::Build && get(entries, "subtree").is_some();
        let subtree = match get(entries, "subtree").filter(|_| has_subtree) {
            Some(t) => {
                let w = format!("{what}.subtree");
                let v = self
                    .string(t, &w)
                    .and_then(|s| self.check(&t.span(), &w, check::relative_path(s)));
                match v {
                    Some(p) if p == "." => {
                        let msg = format!(
                            "{w}: names the whole archive; leave `subtree` out to unpack all of it"
                        );
                        self.error(&t.span(), msg);
                        ok = false;
                        None
                    }
                    Some(p) => Some((p, t.span())),
                    None => {
                        ok = false;
                        None
                    }
                }
            }
            None => None,
        };
        let mut archive_pin = None;
        let pin = match (get(entries, "sha256"), get(entries, "tree")) {
            (Some(s), Some(t)) if has_subtree => {
                // With a subtree both pins have a job: `sha256` the archive
                // file, `tree` the part of it that lands in /build.
                let w = format!("{what}.sha256");
                archive_pin = self
                    .string(s, &w)
                    .and_then(|v| self.check(&s.span(), &w, check::sha256(v)));
                ok &= archive_pin.is_some();
                let w = format!("{what}.tree");
                self.string(t, &w)
                    .and_then(|v| self.check(&t.span(), &w, check::tree(v)))
                    .map(Pin::Tree)
            }
            (Some(s), None) if has_subtree => {
                self.error(
                    &s.span(),
                    format!(
                        "{what}: a `subtree` is pinned by its `tree` (NAR sha256); \
                         `sha256` may pin the archive file beside it"
                    ),
                );
                None
            }
            (Some(s), Some(_)) => {
                self.error(
                    &s.span(),
                    format!(
                        "{what}: both `sha256` and `tree` given; pin the source by exactly one"
                    ),
                );
                None
            }
            (None, None) => {
                if !misspelled(entries, SOURCE_KEYS, &["sha256", "tree"]) {
                    self.error(
                        &start,
                        format!(
                            "{what}: missing `sha256` or `tree`: every source is pinned by a hash"
                        ),
                    );
                }
                None
            }
            (Some(s), None) => {
                let w = format!("{what}.sha256");
                self.string(s, &w)
                    .and_then(|v| self.check(&s.span(), &w, check::sha256(v)))
                    .map(Pin::Sha256)
            }
            (None, Some(t)) => {
                let w = format!("{what}.tree");
                self.string(t, &w)
                    .and_then(|v| self.check(&t.span(), &w, check::tree(v)))
                    .map(Pin::Tree)
            }
        };

        // Defaults derive from the file's name; without a valid URL or path
        // there is none, and that was reported already.
        let named = urls.len() == url_spans.len() && (path.is_some() || !urls.is_empty());
        let name = path
            .as_deref()
            .or(urls.first().map(String::as_str))
            .map(check::last_segment)
            .unwrap_or_default()
            .to_owned();

        if kind.assembled() {
            // A wheel's files land under `dest`; a .deb's own paths are
            // absolute in the image.
            let fixed: &[&str] = if kind == Kind::Wheel {
                &["unpack", "file", "executable", "subtree"]
            } else {
                &["unpack", "dest", "file", "executable", "subtree"]
            };
            for key in fixed {
                if let Some((k, _)) = entries.iter().find(|(k, _)| k.get_ref() == *key) {
                    let msg = format!(
                        "{what}: `{key}` does not apply to a kind = \"{}\" recipe, \
                         whose {} files imgrep unpacks itself",
                        kind.as_str(),
                        kind.archive_suffix()
                    );
                    self.error(&k.span(), msg);
                    ok = false;
                }
            }
            for ((_, span, _), url) in url_spans.iter().zip(&urls) {
                if !check::last_segment(url).ends_with(kind.archive_suffix()) {
                    self.error(span, not_an_archive(what, url, kind));
                    ok = false;
                }
            }
            if let (Some(p), Some(n)) = (get(entries, "path"), &path) {
                if !n.ends_with(kind.archive_suffix()) {
                    self.error(&p.span(), not_an_archive(what, n, kind));
                    ok = false;
                }
            }
            if let Some(t) = get(entries, "tree") {
                let msg = format!(
                    "{what}: a {} is pinned by the `sha256` of the file that the \
                     distribution's index lists, not by `tree`",
                    kind.archive_suffix()
                );
                self.error(&t.span(), msg);
                ok = false;
            }
        }

        let unpack = match get(entries, "unpack") {
            Some(u) => self.boolean(u, &format!("{what}.unpack")),
            None => Some(kind == Kind::Build && (check::is_archive(&name) || has_subtree)),
        };
        // A .deb unpacks to the files it installs, only when asked to.
        let unpackable = check::is_archive(&name) || name.ends_with(".deb");
        let unpack = match unpack {
            Some(true) if named && kind == Kind::Build && !unpackable => {
                let span = get(entries, "unpack").map_or(start.clone(), |u| u.span());
                self.error(
                    &span,
                    format!(
                        "{what}: cannot unpack `{name}`: not a known archive ({}, .deb)",
                        check::ARCHIVES.join(", ")
                    ),
                );
                ok = false;
                true
            }
            Some(u) => u,
            None => {
                ok = false;
                false
            }
        };
        if let (Some(Pin::Tree(_)), false, Kind::Build) = (&pin, unpack, kind) {
            let span = get(entries, "tree").map_or(start.clone(), |t| t.span());
            let msg = format!(
                "{what}: a `tree` hash pins an unpacked tree, but this source is not \
                 unpacked; pin the file by `sha256`"
            );
            self.error(&span, msg);
            ok = false;
        }

        let dest = match get(entries, "dest") {
            Some(d) => {
                let w = format!("{what}.dest");
                let v = self
                    .string(d, &w)
                    .and_then(|s| self.check(&d.span(), &w, check::relative_path(s)));
                ok &= v.is_some();
                v.unwrap_or_default()
            }
            None => ".".to_owned(),
        };

        let file = match get(entries, "file") {
            Some(f) if unpack => {
                self.error(
                    &f.span(),
                    format!("{what}.file: only for a source with unpack = false"),
                );
                ok = false;
                None
            }
            Some(f) => {
                let w = format!("{what}.file");
                let v = self.string(f, &w).and_then(|s| {
                    self.check(&f.span(), &w, check::file_name(s))
                        .map(|()| s.to_owned())
                });
                ok &= v.is_some();
                v
            }
            None if unpack || kind.assembled() || !named => None,
            None => match check::file_name(&name) {
                Ok(()) => Some(name.clone()),
                Err(_) => {
                    self.error(
                        &start,
                        format!("{what}: cannot name the file from its URL; set `file`"),
                    );
                    ok = false;
                    None
                }
            },
        };

        let executable = match get(entries, "executable") {
            Some(x) if unpack => {
                self.error(
                    &x.span(),
                    format!("{what}.executable: only for a source with unpack = false"),
                );
                ok = false;
                false
            }
            Some(x) => {
                let v = self.boolean(x, &format!("{what}.executable"));
                ok &= v.is_some();
                v.unwrap_or_default()
            }
            None => false,
        };

        if let (Some((_, span)), false) = (&subtree, unpack) {
            let msg = format!("{what}.subtree: only for a source that is unpacked");
            self.error(span, msg);
            ok = false;
        }
        let pin = pin?;
        ok.then_some(Source {
            urls,
            path,
            pin,
            unpack,
            dest,
            file,
            executable,
            subtree: subtree.map(|(path, _)| Subtree {
                path,
                archive: archive_pin,
            }),
        })
    }

    fn build(&mut self, node: &Spanned<Node>) -> Option<Build> {
        let entries = self.table(node, "[build]")?;
        self.known_keys(entries, BUILD_KEYS, "[build]");
        let mut ok = true;

        let deps = match get(entries, "deps") {
            Some(_) => match self.names(entries, "deps", "build.deps") {
                Some(refs) => {
                    let names = refs.iter().map(|r| r.name.clone()).collect();
                    self.deps = refs;
                    names
                }
                None => {
                    ok = false;
                    Vec::new()
                }
            },
            None => Vec::new(),
        };

        let workdir = match get(entries, "workdir") {
            Some(w) => {
                let v = self
                    .string(w, "build.workdir")
                    .and_then(|s| self.check(&w.span(), "build.workdir", check::absolute_path(s)));
                ok &= v.is_some();
                v.unwrap_or_default()
            }
            None => "/build".to_owned(),
        };

        let mut env = BTreeMap::new();
        if let Some(e) = get(entries, "env") {
            match self.table(e, "build.env") {
                Some(vars) => {
                    for (key, value) in vars {
                        let w = format!("build.env.{}", key.get_ref());
                        let name_ok = self
                            .check(&key.span(), &w, check::env_name(key.get_ref()))
                            .is_some();
                        match self.string(value, &w) {
                            Some(v) if name_ok => {
                                env.insert(key.get_ref().clone(), v.to_owned());
                            }
                            _ => ok = false,
                        }
                    }
                }
                None => ok = false,
            }
        }

        let jobs = match get(entries, "jobs") {
            Some(j) => match self.integer(j, "build.jobs").map(u32::try_from) {
                Some(Ok(n)) => n,
                Some(Err(_)) => {
                    let msg = "build.jobs: expected 0 (one job per core) \
                                   or a positive number of jobs";
                    self.error(&j.span(), msg);
                    ok = false;
                    0
                }
                None => {
                    ok = false;
                    0
                }
            },
            None => 0,
        };

        let source_date_epoch = match get(entries, "source_date_epoch") {
            Some(s) => match self.integer(s, "build.source_date_epoch") {
                Some(n) if n >= 0 => n,
                Some(_) => {
                    let msg = "build.source_date_epoch: \
                                   expected seconds since 1970-01-01, not negative";
                    self.error(&s.span(), msg);
                    ok = false;
                    0
                }
                None => {
                    ok = false;
                    0
                }
            },
            None => crate::DEFAULT_SOURCE_DATE_EPOCH,
        };

        let build_dir = match get(entries, "build_dir") {
            Some(d) => match self.string(d, "build.build_dir") {
                Some("disk") => BuildDir::Disk,
                Some("memory") => BuildDir::Memory,
                Some(other) => {
                    let msg = format!(
                        "build.build_dir: unknown build directory `{other}`; expected \"disk\" or \"memory\""
                    );
                    self.error(&d.span(), msg);
                    ok = false;
                    BuildDir::Disk
                }
                None => {
                    ok = false;
                    BuildDir::Disk
                }
            },
            None => BuildDir::Disk,
        };

        let seccomp_allow = match get(entries, "seccomp") {
            Some(node) => match self.seccomp(node) {
                Some(groups) => groups,
                None => {
                    ok = false;
                    Vec::new()
                }
            },
            None => Vec::new(),
        };

        let action = match (get(entries, "script"), get(entries, "steps")) {
            (Some(s), Some(_)) => {
                self.error(
                    &s.span(),
                    "[build]: `script` and `steps` both given; use one of them",
                );
                None
            }
            (None, None) => {
                if !misspelled(entries, BUILD_KEYS, &["script", "steps"]) {
                    self.error(
                        &node.span(),
                        "[build]: missing `script` or `steps`: a build recipe says what runs",
                    );
                }
                None
            }
            (Some(s), None) => match self.string(s, "build.script") {
                Some(text) if text.trim().is_empty() => {
                    self.error(&s.span(), "build.script: empty script");
                    None
                }
                Some(text) => Some(Action::Script(text.to_owned())),
                None => None,
            },
            (None, Some(s)) => self.steps(s).map(Action::Steps),
        };

        let action = action?;
        ok.then_some(Build {
            deps,
            workdir,
            env,
            jobs,
            source_date_epoch,
            build_dir,
            seccomp_allow,
            action,
        })
    }

    /// `build.seccomp`: "default", "relaxed" (every group) or a list of the
    /// groups of system calls to allow (docs/recipes.md); sorted, once each.
    fn seccomp(&mut self, node: &Spanned<Node>) -> Option<Vec<sandbox::SeccompGroup>> {
        let names: Vec<&str> = sandbox::SeccompGroup::ALL
            .iter()
            .map(|g| g.name())
            .collect();
        let mut groups = match node.get_ref() {
            Node::String(s) if s == "default" => Vec::new(),
            Node::String(s) if s == "relaxed" => sandbox::SeccompGroup::ALL.to_vec(),
            Node::String(other) => {
                let msg = format!(
                    "build.seccomp: unknown policy `{other}`; expected \"default\", \"relaxed\" or a list of groups ({})",
                    names.join(", ")
                );
                self.error(&node.span(), msg);
                return None;
            }
            Node::Array(_) => {
                let mut groups = Vec::new();
                let mut ok = true;
                for (name, span) in self.strings(node, "build.seccomp")? {
                    match sandbox::SeccompGroup::from_name(name) {
                        Some(g) => groups.push(g),
                        None => {
                            let msg = format!(
                                "build.seccomp: unknown group `{name}`; expected one of {}",
                                names.join(", ")
                            );
                            self.error(&span, msg);
                            ok = false;
                        }
                    }
                }
                if !ok {
                    return None;
                }
                groups
            }
            _ => {
                self.expected(
                    node,
                    "build.seccomp",
                    "\"default\", \"relaxed\" or an array of group names",
                );
                return None;
            }
        };
        groups.sort();
        groups.dedup();
        Some(groups)
    }

    fn steps(&mut self, node: &Spanned<Node>) -> Option<Vec<Step>> {
        let Node::Array(items) = node.get_ref() else {
            self.expected(node, "build.steps", "an array of steps");
            return None;
        };
        if items.is_empty() {
            self.error(
                &node.span(),
                "build.steps: empty list; give at least one step",
            );
            return None;
        }
        let mut steps = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let what = format!("build.steps[{i}]");
            let (argv_node, workdir) = match item.get_ref() {
                Node::Array(_) => (item, None),
                Node::Table(entries) => {
                    self.known_keys(entries, STEP_KEYS, &what);
                    let workdir = match get(entries, "workdir") {
                        Some(w) => {
                            let ww = format!("{what}.workdir");
                            let v = self
                                .string(w, &ww)
                                .and_then(|s| self.check(&w.span(), &ww, check::absolute_path(s)));
                            if v.is_none() {
                                ok = false;
                            }
                            v
                        }
                        None => None,
                    };
                    match get(entries, "argv") {
                        Some(a) => (a, workdir),
                        None => {
                            if !misspelled(entries, STEP_KEYS, &["argv"]) {
                                self.error(&item.span(), format!("{what}: missing `argv`"));
                            }
                            ok = false;
                            continue;
                        }
                    }
                }
                _ => {
                    self.expected(
                        item,
                        &what,
                        "an argv array or a table { argv = [...], workdir = \"...\" }",
                    );
                    ok = false;
                    continue;
                }
            };
            let Some(argv) = self.strings(argv_node, &format!("{what}.argv")) else {
                ok = false;
                continue;
            };
            if argv.first().is_none_or(|(a, _)| a.is_empty()) {
                self.error(
                    &argv_node.span(),
                    format!("{what}: empty argv: a step needs a program to run"),
                );
                ok = false;
                continue;
            }
            steps.push(Step {
                argv: argv.into_iter().map(|(a, _)| a.to_owned()).collect(),
                workdir,
            });
        }
        ok.then_some(steps)
    }

    /// `[debs]` or `[wheel]` (`table`): the same keys.
    fn debs(&mut self, node: &Spanned<Node>, table: &str) -> Option<Debs> {
        let entries = self.table(node, &format!("[{table}]"))?;
        self.known_keys(entries, DEBS_KEYS, &format!("[{table}]"));
        let mut debs = Debs::default();
        let mut ok = true;
        if let Some(s) = get(entries, "symlinks") {
            match self.table(s, &format!("{table}.symlinks")) {
                Some(links) => {
                    for (link, target) in links {
                        let w = format!("{table}.symlinks.\"{}\"", link.get_ref());
                        let l = self.check(&link.span(), &w, check::relative_path(link.get_ref()));
                        let t = self.string(target, &w);
                        match (l, t) {
                            (Some(l), _) if l == "." => {
                                self.error(&link.span(), format!("{w}: a link needs a path"));
                                ok = false;
                            }
                            (Some(_), Some("")) => {
                                self.error(&target.span(), format!("{w}: empty link target"));
                                ok = false;
                            }
                            (Some(l), Some(t)) => {
                                debs.symlinks.insert(l, t.to_owned());
                            }
                            _ => ok = false,
                        }
                    }
                }
                None => ok = false,
            }
        }
        if let Some(d) = get(entries, "dirs") {
            match self.strings(d, &format!("{table}.dirs")) {
                Some(dirs) => {
                    for (i, (dir, span)) in dirs.into_iter().enumerate() {
                        let w = format!("{table}.dirs[{i}]");
                        match self.check(&span, &w, check::relative_path(dir)) {
                            Some(p) if p != "." => debs.dirs.push(p),
                            Some(_) => {
                                self.error(&span, format!("{w}: a directory needs a path"));
                                ok = false;
                            }
                            None => ok = false,
                        }
                    }
                }
                None => ok = false,
            }
        }
        ok.then_some(debs)
    }
}

impl Cx<'_> {
    fn image(&mut self, node: &Spanned<Node>) -> Option<Image> {
        let entries = self.table(node, "[image]")?;
        self.known_keys(entries, IMAGE_KEYS, "[image]");
        let mut image = Image::default();
        let mut ok = true;
        for (key, slot) in [
            ("entrypoint", &mut image.entrypoint),
            ("cmd", &mut image.cmd),
        ] {
            if let Some(n) = get(entries, key) {
                let what = format!("image.{key}");
                match self.strings(n, &what) {
                    Some(v) if !v.is_empty() => {
                        *slot = Some(v.into_iter().map(|(a, _)| a.to_owned()).collect())
                    }
                    Some(_) => {
                        self.error(&n.span(), format!("{what}: empty argv"));
                        ok = false;
                    }
                    None => ok = false,
                }
            }
        }
        if let Some(e) = get(entries, "env") {
            match self.table(e, "image.env") {
                Some(vars) => {
                    for (k, v) in vars {
                        let w = format!("image.env.{}", k.get_ref());
                        let name = self.check(&k.span(), &w, check::env_name(k.get_ref()));
                        match (name, self.string(v, &w)) {
                            (Some(()), Some(v)) => {
                                image.env.insert(k.get_ref().to_owned(), v.to_owned());
                            }
                            _ => ok = false,
                        }
                    }
                }
                None => ok = false,
            }
        }
        if let Some(w) = get(entries, "workdir") {
            match self.string(w, "image.workdir") {
                Some(d) => match self.check(&w.span(), "image.workdir", check::absolute_path(d)) {
                    Some(d) => image.workdir = Some(d),
                    None => ok = false,
                },
                None => ok = false,
            }
        }
        ok.then_some(image)
    }
}

impl Cx<'_> {
    /// `[output]`: `diff_id` required, `image` defaulting to the package name.
    fn output(&mut self, node: &Spanned<Node>, name: &str) -> Option<Output> {
        let entries = self.table(node, "[output]")?;
        self.known_keys(entries, OUTPUT_KEYS, "[output]");
        let image = match get(entries, "image") {
            Some(n) => {
                let image = self.string(n, "output.image")?;
                self.check(&n.span(), "output.image", check::package_name(image))?;
                image.to_owned()
            }
            None => name.to_owned(),
        };
        let Some(d) = get(entries, "diff_id") else {
            if !misspelled(entries, OUTPUT_KEYS, &["diff_id"]) {
                self.error(
                    &node.span(),
                    "missing key `diff_id` in [output]: the `sha256:<hex>` of the layer the build must produce",
                );
            }
            return None;
        };
        let text = self.string(d, "output.diff_id")?;
        let diff_id = self.check(&d.span(), "output.diff_id", check::diff_id(text))?;
        Some(Output { image, diff_id })
    }
}

fn not_an_archive(what: &str, name: &str, kind: Kind) -> String {
    let suffix = kind.archive_suffix();
    format!(
        "{what}: `{name}` is not a {suffix}; a kind = \"{}\" recipe takes only {suffix} sources",
        kind.as_str()
    )
}

fn get<'n>(entries: &'n Entries, key: &str) -> Option<&'n Spanned<Node>> {
    entries
        .iter()
        .find(|(k, _)| k.get_ref() == key)
        .map(|(_, v)| v)
}

/// The span of a top-level section's key (its `[name]` header), for problems
/// with the section as a whole.
fn header(doc: &Spanned<Node>, section: &str) -> Span {
    match doc.get_ref() {
        Node::Table(entries) => entries
            .iter()
            .find(|(k, _)| k.get_ref() == section)
            .map_or(0..0, |(k, _)| k.span()),
        _ => 0..0,
    }
}
