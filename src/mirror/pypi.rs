//! `mirror://pypi/PROJECT/FILE`: a file of a Python package index (PEP 503
//! "simple" API), found through the index that pip is configured with.
//!
//! The index URLs come, first to last, from `IMGREP_MIRROR_PYPI` or the
//! config file's `[mirrors] pypi` (each an index root, like pip's
//! `index-url`), else from pip's own configuration: `PIP_INDEX_URL`, then
//! `index-url` of the `[install]`, `[download]` or `[global]` section of
//! pip's configuration files (the later file wins, as in pip), else the
//! default index of the pip installed on the host, asked of pip itself. No
//! index host is built into imgrep.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

/// Environment variables pip's configuration depends on.
pub const PIP_ENV: &[&str] = &[
    "PIP_INDEX_URL",
    "PIP_CONFIG_FILE",
    "HOME",
    "XDG_CONFIG_HOME",
    "XDG_CONFIG_DIRS",
    "VIRTUAL_ENV",
];

/// pip's index URLs from its configuration, or from its built-in default.
pub fn pip_index_urls(env: &BTreeMap<String, String>) -> Vec<String> {
    if let Some(u) = env.get("PIP_INDEX_URL").filter(|u| !u.trim().is_empty()) {
        return u.split_whitespace().map(str::to_owned).collect();
    }
    let mut found = None;
    for file in pip_config_files(env) {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let sections = parse_ini(&text);
        for section in ["global", "download", "install"] {
            let value = sections.get(section).and_then(|s| {
                s.get("index-url")
                    .or_else(|| s.get("index_url"))
                    .filter(|v| !v.is_empty())
            });
            if let Some(v) = value {
                found = Some(v.clone());
            }
        }
    }
    match found {
        Some(v) => v.split_whitespace().map(str::to_owned).collect(),
        None => pip_default_index().into_iter().collect(),
    }
}

/// pip's configuration files in the order pip reads them (a later one
/// overrides an earlier one): site-wide, user, virtualenv, then the file
/// `PIP_CONFIG_FILE` names.
fn pip_config_files(env: &BTreeMap<String, String>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let xdg_dirs = env
        .get("XDG_CONFIG_DIRS")
        .cloned()
        .unwrap_or_else(|| "/etc/xdg".to_owned());
    for dir in xdg_dirs.split(':').filter(|d| !d.is_empty()) {
        files.push(PathBuf::from(dir).join("pip/pip.conf"));
    }
    files.push(PathBuf::from("/etc/pip.conf"));
    if let Some(home) = env.get("HOME") {
        files.push(PathBuf::from(home).join(".pip/pip.conf"));
    }
    let config_home = env
        .get("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| env.get("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(dir) = config_home {
        files.push(dir.join("pip/pip.conf"));
    }
    if let Some(venv) = env.get("VIRTUAL_ENV") {
        files.push(PathBuf::from(venv).join("pip.conf"));
    }
    if let Some(f) = env.get("PIP_CONFIG_FILE") {
        files.push(PathBuf::from(f));
    }
    files
}

/// The default index of the host's pip (what `pip download` uses when
/// nothing is configured), from pip itself; None without a pip.
fn pip_default_index() -> Option<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "from pip._internal.models.index import PyPI; print(PyPI.simple_url)",
        ])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let url = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && url.starts_with("http")).then_some(url)
}

/// Sections of an INI file as pip (configparser) reads it: `[name]`,
/// `key = value` or `key: value`, indented continuation lines, `#` and `;`
/// comment lines. Keys are lower-cased.
fn parse_ini(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = String::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with(['#', ';']) {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(v) = last
                .as_ref()
                .and_then(|k| out.get_mut(&section)?.get_mut(k))
            {
                v.push(' ');
                v.push_str(trimmed);
            }
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = name.trim().to_owned();
            last = None;
            continue;
        }
        if let Some(i) = trimmed.find(['=', ':']) {
            let key = trimmed[..i].trim().to_ascii_lowercase();
            let value = trimmed[i + 1..].trim().to_owned();
            out.entry(section.clone())
                .or_default()
                .insert(key.clone(), value);
            last = Some(key);
        }
    }
    out
}

/// PEP 503's normalised project name: lower case, runs of `-`, `_`, `.`
/// as one `-`.
pub fn normalize_project(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
            continue;
        }
        if sep && !out.is_empty() {
            out.push('-');
        }
        sep = false;
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The URL of `file` on a PEP 503 project page (HTML) fetched from
/// `page_url`: the `href` of the anchor whose text is `file`, without its
/// fragment (`#sha256=...`; the recipe's pin decides), made absolute.
pub fn find_file(page_url: &str, html: &str, file: &str) -> Option<String> {
    let mut rest = html;
    while let Some(start) = find_ci(rest, "<a") {
        rest = &rest[start + 2..];
        let tag_end = rest.find('>')?;
        let attrs = &rest[..tag_end];
        let after = &rest[tag_end + 1..];
        let close = find_ci(after, "</a>")?;
        let text = after[..close].trim();
        rest = &after[close..];
        if unescape(text) != file {
            continue;
        }
        let href = attribute(attrs, "href")?;
        let href = unescape(&href);
        let href = href.split('#').next().unwrap_or_default();
        return Some(join_href(page_url, href));
    }
    None
}

fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    hay.to_ascii_lowercase().find(needle)
}

/// The value of `name="..."` (or single quotes) in a tag's attributes.
fn attribute(attrs: &str, name: &str) -> Option<String> {
    let lower = attrs.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(name) {
        let at = from + i;
        from = at + name.len();
        let before_ok = at == 0 || lower.as_bytes()[at - 1].is_ascii_whitespace();
        let rest = attrs[from..].trim_start();
        if !before_ok || !rest.starts_with('=') {
            continue;
        }
        let rest = rest[1..].trim_start();
        let quote = rest.chars().next()?;
        if quote == '"' || quote == '\'' {
            let end = rest[1..].find(quote)?;
            return Some(rest[1..1 + end].to_owned());
        }
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        return Some(rest[..end].to_owned());
    }
    None
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// `href` resolved against the page it appears on (RFC 3986 for the forms
/// index pages use: absolute, scheme-relative, host-absolute, relative).
fn join_href(page: &str, href: &str) -> String {
    if href.contains("://") {
        return href.to_owned();
    }
    let (scheme, rest) = page.split_once("://").unwrap_or(("https", page));
    let host_end = rest.find('/').unwrap_or(rest.len());
    let host = &rest[..host_end];
    if let Some(h) = href.strip_prefix("//") {
        return format!("{scheme}://{h}");
    }
    let mut parts: Vec<&str> = if href.starts_with('/') {
        Vec::new()
    } else {
        let path = &rest[host_end..];
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        dir.split('/').filter(|p| !p.is_empty()).collect()
    };
    for seg in href.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let trailing = if href.ends_with('/') { "/" } else { "" };
    format!("{scheme}://{host}/{}{trailing}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_configuration_order() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".config/pip")).unwrap();
        std::fs::create_dir_all(dir.path().join("xdg/pip")).unwrap();
        std::fs::write(
            dir.path().join("xdg/pip/pip.conf"),
            "[global]\nindex-url = http://127.0.0.1:9/site/simple\n",
        )
        .unwrap();
        let mut env = BTreeMap::new();
        env.insert("HOME".to_owned(), home.display().to_string());
        env.insert(
            "XDG_CONFIG_DIRS".to_owned(),
            dir.path().join("xdg").display().to_string(),
        );
        assert_eq!(pip_index_urls(&env), ["http://127.0.0.1:9/site/simple"]);
        std::fs::write(
            home.join(".config/pip/pip.conf"),
            "# user\n[global]\ntimeout = 60\n\n[install]\nindex_url =\n  http://127.0.0.1:9/user/simple\n",
        )
        .unwrap();
        assert_eq!(pip_index_urls(&env), ["http://127.0.0.1:9/user/simple"]);
        env.insert(
            "PIP_INDEX_URL".to_owned(),
            "http://127.0.0.1:9/env/simple".to_owned(),
        );
        assert_eq!(pip_index_urls(&env), ["http://127.0.0.1:9/env/simple"]);
    }

    #[test]
    fn project_page_links() {
        let page = "http://127.0.0.1:9/simple/ziglang/";
        let html = r#"<!DOCTYPE html><html><body>
            <a href="../../packages/aa/x-0.1.whl#sha256=00">x-0.1.whl</a><br/>
            <A data-requires-python="&gt;=3" HREF='https://127.0.0.1:8/f/y-0.2.whl#sha256=11'>y-0.2.whl</A>
            <a href="/abs/z.whl?a=1&amp;b=2">z.whl</a>
            </body></html>"#;
        assert_eq!(
            find_file(page, html, "x-0.1.whl").unwrap(),
            "http://127.0.0.1:9/packages/aa/x-0.1.whl"
        );
        assert_eq!(
            find_file(page, html, "y-0.2.whl").unwrap(),
            "https://127.0.0.1:8/f/y-0.2.whl"
        );
        assert_eq!(
            find_file(page, html, "z.whl").unwrap(),
            "http://127.0.0.1:9/abs/z.whl?a=1&b=2"
        );
        assert_eq!(find_file(page, html, "w.whl"), None);
        assert_eq!(normalize_project("Zig_Lang.x"), "zig-lang-x");
    }
}
