//! `mirror://NAME/path` URLs and where they point (docs/fetch.md).
//!
//! The mirrors of NAME come from, first to last: the environment
//! (`IMGREP_MIRROR_<NAME>="url1 url2"`, NAME upper-cased with `-` as `_`),
//! the config file's `[mirrors]` table, and for `debian` alone, when nothing
//! else names it, the main archive that the host's own apt configuration
//! uses; for `pypi`, the package index that pip is configured with
//! (`mirror://pypi/PROJECT/FILE`, src/mirror/pypi.rs). No mirror host is
//! built in.

pub mod pypi;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Environment variable naming the apt configuration directory read for
/// `mirror://debian/` (default `/etc/apt`).
pub const APT_DIR_ENV: &str = "IMGREP_APT_DIR";
/// Prefix of the per-name mirror environment variables.
pub const MIRROR_ENV_PREFIX: &str = "IMGREP_MIRROR_";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MirrorError {
    #[error("{url}: no mirror configured for {name:?} (set {MIRROR_ENV_PREFIX}{env} or [mirrors] {name} in the config file)")]
    Unconfigured {
        url: String,
        name: String,
        env: String,
    },
    #[error("{url}: malformed mirror URL: expected mirror://NAME/path")]
    Malformed { url: String },
}

/// Resolves `mirror://` URLs.
#[derive(Debug, Clone, Default)]
pub struct Mirrors {
    env: BTreeMap<String, Vec<String>>,
    /// The variables pip's configuration depends on, for `mirror://pypi/`.
    pip_env: BTreeMap<String, String>,
    config: BTreeMap<String, Vec<String>>,
    apt_dir: Option<PathBuf>,
}

impl Mirrors {
    /// `env` holds the process environment (or a test's), `config` the
    /// config file's `[mirrors]` table; `apt_dir` is read only when
    /// `mirror://debian/` needs it and neither names `debian`.
    pub fn new<I>(env: I, config: BTreeMap<String, Vec<String>>, apt_dir: Option<PathBuf>) -> Self
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let pip_env = env
            .iter()
            .filter(|(k, _)| pypi::PIP_ENV.contains(&k.as_str()))
            .cloned()
            .collect();
        let env = env
            .into_iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix(MIRROR_ENV_PREFIX)?.to_owned();
                Some((name, split_urls(&v)))
            })
            .filter(|(_, urls)| !urls.is_empty())
            .collect();
        Mirrors {
            env,
            pip_env,
            config,
            apt_dir,
        }
    }

    /// Where to look for `url`: plain URLs, or for `mirror://pypi/PROJECT/FILE`
    /// the project page of each configured index, to be read for FILE's URL.
    pub fn resolve_all(&self, url: &str) -> Result<Vec<Resolved>, MirrorError> {
        let Some(rest) = url.strip_prefix("mirror://pypi/") else {
            return Ok(self.resolve(url)?.into_iter().map(Resolved::Url).collect());
        };
        let (project, file) = match rest.split_once('/') {
            Some((p, f)) if !p.is_empty() && !f.is_empty() && !f.contains('/') => (p, f),
            _ => {
                return Err(MirrorError::Malformed {
                    url: url.to_owned(),
                })
            }
        };
        let indexes = match (self.env.get("PYPI"), self.config.get("pypi")) {
            (Some(b), _) => b.clone(),
            (None, Some(b)) if !b.is_empty() => b.clone(),
            _ => pypi::pip_index_urls(&self.pip_env),
        };
        if indexes.is_empty() {
            return Err(MirrorError::Unconfigured {
                url: url.to_owned(),
                name: "pypi".to_owned(),
                env: "PYPI".to_owned(),
            });
        }
        let project = pypi::normalize_project(project);
        Ok(indexes
            .iter()
            .map(|i| Resolved::Index {
                page: format!("{}/{project}/", i.trim_end_matches('/')),
                file: file.to_owned(),
            })
            .collect())
    }

    /// The URLs to try for `url`, in order: itself unless it is a
    /// `mirror://` URL, else each mirror of its name joined with its path.
    pub fn resolve(&self, url: &str) -> Result<Vec<String>, MirrorError> {
        let Some(rest) = url.strip_prefix("mirror://") else {
            return Ok(vec![url.to_owned()]);
        };
        let (name, path) = rest.split_once('/').ok_or_else(|| MirrorError::Malformed {
            url: url.to_owned(),
        })?;
        if name.is_empty() || path.is_empty() {
            return Err(MirrorError::Malformed {
                url: url.to_owned(),
            });
        }
        let env_name = name.to_ascii_uppercase().replace('-', "_");
        let bases = match (self.env.get(&env_name), self.config.get(name)) {
            (Some(b), _) => b.clone(),
            (None, Some(b)) if !b.is_empty() => b.clone(),
            _ if name == "debian" => {
                let dir = self.apt_dir.as_deref().unwrap_or(Path::new("/etc/apt"));
                debian_archive_from_apt(dir)
            }
            _ => Vec::new(),
        };
        if bases.is_empty() {
            return Err(MirrorError::Unconfigured {
                url: url.to_owned(),
                name: name.to_owned(),
                env: env_name,
            });
        }
        Ok(bases.iter().map(|b| join_url(b, path)).collect())
    }
}

/// One place to fetch from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Url(String),
    /// A package index's project page (PEP 503) that links to `file`.
    Index {
        page: String,
        file: String,
    },
}

fn split_urls(v: &str) -> Vec<String> {
    v.split_whitespace().map(str::to_owned).collect()
}

/// `base` and `path` with exactly one `/` between them.
pub fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// One apt source entry (either syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
struct AptEntry {
    uris: Vec<String>,
    suites: Vec<String>,
    components: Vec<String>,
}

/// The URIs of the Debian main archive in the apt configuration under
/// `apt_dir` (`sources.list`, `sources.list.d/*.list` one-line entries,
/// `sources.list.d/*.sources` deb822 stanzas): the `deb` entries with a
/// plain release suite (no `-security`, `-updates`, ... suffix) and the
/// `main` component, in file order. Only http and https URIs count.
pub fn debian_archive_from_apt(apt_dir: &Path) -> Vec<String> {
    let mut entries = Vec::new();
    if let Ok(text) = fs::read_to_string(apt_dir.join("sources.list")) {
        entries.extend(parse_one_line(&text));
    }
    let mut files: Vec<PathBuf> = fs::read_dir(apt_dir.join("sources.list.d"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    for f in files {
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("list") => entries.extend(parse_one_line(&text)),
            Some("sources") => entries.extend(parse_deb822(&text)),
            _ => {}
        }
    }
    let mut out: Vec<String> = Vec::new();
    for e in entries {
        let main_suite = e
            .suites
            .iter()
            .any(|s| !s.contains('-') && !s.contains('/'));
        if !main_suite || !e.components.iter().any(|c| c == "main") {
            continue;
        }
        for u in e.uris {
            if (u.starts_with("http://") || u.starts_with("https://")) && !out.contains(&u) {
                out.push(u);
            }
        }
    }
    out
}

/// `deb [options] uri suite [component...]`; `deb-src` and comments skipped.
fn parse_one_line(text: &str) -> Vec<AptEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace().peekable();
        if words.next() != Some("deb") {
            continue;
        }
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(AptEntry {
            uris: vec![uri.to_owned()],
            suites: vec![suite.to_owned()],
            components: words.map(str::to_owned).collect(),
        });
    }
    out
}

/// deb822 stanzas: `Field: value` with continuation lines, blank lines
/// between stanzas, `#` comment lines; `Enabled: no` stanzas skipped.
fn parse_deb822(text: &str) -> Vec<AptEntry> {
    let mut out = Vec::new();
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    let mut flush = |fields: &mut BTreeMap<String, String>| {
        let get =
            |k: &str| -> Vec<String> { fields.get(k).map(|v| split_urls(v)).unwrap_or_default() };
        let enabled = fields
            .get("enabled")
            .is_none_or(|v| !v.trim().eq_ignore_ascii_case("no"));
        if enabled && get("types").iter().any(|t| t == "deb") {
            out.push(AptEntry {
                uris: get("uris"),
                suites: get("suites"),
                components: get("components"),
            });
        }
        fields.clear();
    };
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut fields);
            last = None;
        } else if line.starts_with([' ', '\t']) {
            if let Some(v) = last.as_ref().and_then(|k| fields.get_mut(k)) {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            fields.insert(k.clone(), v.trim().to_owned());
            last = Some(k);
        }
    }
    flush(&mut fields);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apt_fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sources.list.d")).unwrap();
        fs::write(
            dir.path().join("sources.list"),
            "# a comment\n\
             deb-src http://127.0.0.1:9/src bookworm main\n\
             deb [arch=amd64 signed-by=/k.gpg] http://127.0.0.1:9/one bookworm main contrib # trailing\n\
             deb http://127.0.0.1:9/sec bookworm-security main\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("sources.list.d/b.sources"),
            "Types: deb\n\
             # comment inside\n\
             URIs: http://127.0.0.1:9/two\n\
             \x20 https://127.0.0.1:9/three\n\
             Suites: bookworm bookworm-updates\n\
             Components: main\n\
             \n\
             Types: deb\n\
             URIs: http://127.0.0.1:9/security\n\
             Suites: bookworm-security\n\
             Components: main\n\
             \n\
             Types: deb\n\
             URIs: http://127.0.0.1:9/disabled\n\
             Suites: bookworm\n\
             Components: main\n\
             Enabled: no\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("sources.list.d/ignored.txt"),
            "deb http://x/ y main\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn apt_main_archive_from_both_syntaxes() {
        let dir = apt_fixture();
        assert_eq!(
            debian_archive_from_apt(dir.path()),
            [
                "http://127.0.0.1:9/one",
                "http://127.0.0.1:9/two",
                "https://127.0.0.1:9/three"
            ]
        );
    }

    #[test]
    fn resolution_order() {
        let dir = apt_fixture();
        let mut config = BTreeMap::new();
        config.insert(
            "gnu".to_owned(),
            vec!["http://127.0.0.1:9/cfg-gnu/".to_owned()],
        );
        config.insert(
            "my-src".to_owned(),
            vec!["http://127.0.0.1:9/cfg".to_owned()],
        );
        let env = [(
            "IMGREP_MIRROR_MY_SRC".to_owned(),
            "http://127.0.0.1:9/e1 http://127.0.0.1:9/e2".to_owned(),
        )];
        let m = Mirrors::new(env, config, Some(dir.path().to_owned()));
        assert_eq!(m.resolve("https://h/x.tar").unwrap(), ["https://h/x.tar"]);
        assert_eq!(
            m.resolve("mirror://my-src/a/b.tar").unwrap(),
            [
                "http://127.0.0.1:9/e1/a/b.tar",
                "http://127.0.0.1:9/e2/a/b.tar"
            ]
        );
        assert_eq!(
            m.resolve("mirror://gnu/make/make.tar.gz").unwrap(),
            ["http://127.0.0.1:9/cfg-gnu/make/make.tar.gz"]
        );
        assert_eq!(
            m.resolve("mirror://debian/pool/main/m/musl/x.deb").unwrap()[0],
            "http://127.0.0.1:9/one/pool/main/m/musl/x.deb"
        );
        let err = m.resolve("mirror://nope/x").unwrap_err();
        assert!(err.to_string().contains("IMGREP_MIRROR_NOPE"), "{err}");
        assert!(matches!(
            m.resolve("mirror://gnu").unwrap_err(),
            MirrorError::Malformed { .. }
        ));
    }
}
