//! Checks of single values. Each returns the normalised value or the message
//! to show at the value's position.

use base64::Engine as _;

use crate::digest::Digest;

/// Variables of the fixed build environment that `[build].env` may not set.
pub const FIXED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "TZ",
    "LC_ALL",
    "SOURCE_DATE_EPOCH",
    "JOBS",
    "TARGET",
    "OUT",
    "TMPDIR",
];

/// File name endings that `unpack` recognises as archives.
pub const ARCHIVES: &[&str] = &[".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst"];

pub fn package_name(s: &str) -> Result<(), String> {
    let mut bytes = s.bytes();
    let ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid package name `{s}`: expected a lowercase letter or digit, \
             then letters, digits, `+`, `.`, `_` or `-`"
        ))
    }
}

pub fn version(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty version".into());
    }
    match s
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, ':' | '/' | '{' | '}'))
    {
        Some(c) => Err(format!(
            "invalid version `{s}`: {c:?} is not allowed (no whitespace, `:`, `/`, `{{` or `}}`)"
        )),
        None => Ok(()),
    }
}

pub fn sha256(s: &str) -> Result<Digest, String> {
    Digest::from_hex(s)
        .map_err(|_| format!("malformed sha256 `{s}`: expected 64 lowercase hex digits"))
}

/// A layer digest as OCI writes it: `sha256:` and 64 lowercase hex digits.
pub fn diff_id(s: &str) -> Result<Digest, String> {
    s.strip_prefix("sha256:")
        .and_then(|h| Digest::from_hex(h).ok())
        .ok_or_else(|| {
            format!("malformed diff_id `{s}`: expected `sha256:` and 64 lowercase hex digits")
        })
}

pub fn tree(s: &str) -> Result<[u8; 32], String> {
    let err = || {
        format!(
            "malformed tree hash `{s}`: expected SRI `sha256-` followed by the base64 \
             of 32 bytes (44 characters)"
        )
    };
    let b64 = s.strip_prefix("sha256-").ok_or_else(err)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| err())?;
    bytes.try_into().map_err(|_| err())
}

/// Expands `{version}` and checks the URL's syntax.
pub fn url(raw: &str, version: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(open) = rest.find(['{', '}']) {
        out.push_str(&rest[..open]);
        if rest[open..].starts_with('}') {
            return Err(format!("unbalanced `}}` in URL `{raw}`"));
        }
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("unbalanced `{{` in URL `{raw}`"));
        };
        let placeholder = &rest[open..open + close + 1];
        if placeholder != "{version}" {
            return Err(format!(
                "unknown placeholder `{placeholder}` in URL `{raw}`: only `{{version}}` expands"
            ));
        }
        out.push_str(version);
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);

    if let Some(c) = out.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("URL `{out}` contains {c:?}"));
    }
    if let Some(rest) = out.strip_prefix("mirror://") {
        let bad = || format!("malformed mirror URL `{out}`: expected mirror://NAME/path");
        let (name, path) = rest.split_once('/').ok_or_else(bad)?;
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !name_ok || path.is_empty() || path.starts_with('/') {
            return Err(bad());
        }
        if path.split('/').any(|seg| seg == "..") {
            return Err(format!(
                "mirror URL `{out}`: `..` is not allowed in the path"
            ));
        }
    } else if let Some(path) = out.strip_prefix("repo:") {
        relative_path(path).map_err(|e| format!("repo URL `{out}`: {e}"))?;
    } else if let Some(rest) = out
        .strip_prefix("https://")
        .or_else(|| out.strip_prefix("http://"))
    {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() {
            return Err(format!("URL `{out}` has no host"));
        }
    } else {
        return Err(format!(
            "unsupported URL `{out}`: expected https://, http://, mirror://NAME/path or repo:PATH"
        ));
    }
    Ok(out)
}

/// The last path segment of a URL or path, without query or fragment.
pub fn last_segment(s: &str) -> &str {
    let s = s.strip_prefix("repo:").unwrap_or(s);
    let s = s.split(['?', '#']).next().unwrap_or_default();
    s.rsplit('/').next().unwrap_or_default()
}

pub fn is_archive(name: &str) -> bool {
    ARCHIVES.iter().any(|ext| name.ends_with(ext))
}

/// A relative path inside the build directory or an image, normalised:
/// `.` and empty segments dropped, `.` for the directory itself.
pub fn relative_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') {
        return Err(format!("`{s}` must be a relative path"));
    }
    segments(s).map(|segs| {
        if segs.is_empty() {
            ".".into()
        } else {
            segs.join("/")
        }
    })
}

/// An absolute path inside the sandbox, normalised.
pub fn absolute_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("`{s}` must be an absolute path"));
    }
    segments(s).map(|segs| format!("/{}", segs.join("/")))
}

fn segments(s: &str) -> Result<Vec<&str>, String> {
    if s.contains('\0') {
        return Err(format!("{s:?} contains a NUL byte"));
    }
    let segs: Vec<&str> = s
        .split('/')
        .filter(|x| !x.is_empty() && *x != ".")
        .collect();
    if segs.contains(&"..") {
        return Err(format!("`{s}`: `..` is not allowed"));
    }
    Ok(segs)
}

/// A single file name (no `/`, not `.` or `..`).
pub fn file_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s == "." || s == ".." || s.contains('/') || s.contains('\0') {
        return Err(format!(
            "`{s}` must be a single file name (no `/`, not `.` or `..`)"
        ));
    }
    Ok(())
}

pub fn env_name(s: &str) -> Result<(), String> {
    let mut bytes = s.bytes();
    let ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        return Err(format!(
            "invalid environment variable name `{s}`: expected [A-Za-z_][A-Za-z0-9_]*"
        ));
    }
    if FIXED_ENV.contains(&s) {
        return Err(format!(
            "`{s}` belongs to the fixed build environment and cannot be overridden ({})",
            FIXED_ENV.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["musl", "gcc-12", "libstdc++6", "a", "0ad", "x.y_z"] {
            assert_eq!(package_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "Musl", "-x", ".x", "a b", "a/b", "é"] {
            assert!(package_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions() {
        assert!(version("1.2.3-r1+git~x").is_ok());
        for bad in ["", "1 2", "1:2", "a/b", "{x}", "1\t"] {
            assert!(version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hashes() {
        let hex = "7d5b0b6062521e4627e099e4c9dc8248d32a30285e959b7eecaa780cf8cfd4a4";
        assert_eq!(sha256(hex).unwrap().hex(), hex);
        assert!(sha256(&hex.to_uppercase()).is_err());
        assert!(sha256(&hex[1..]).is_err());
        let sri = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        assert_eq!(tree(sri).unwrap()[0], 0xe3);
        assert!(tree("sha256-AAAA").is_err());
        assert!(tree("sha512-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=").is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(
            url("https://x.org/m-{version}.tar.gz", "1.2").unwrap(),
            "https://x.org/m-1.2.tar.gz"
        );
        assert_eq!(
            url("mirror://debian/pool/m_{version}.orig.tar.gz", "1").unwrap(),
            "mirror://debian/pool/m_1.orig.tar.gz"
        );
        for (bad, msg) in [
            ("https://x/{ver}", "unknown placeholder `{ver}`"),
            ("https://x/{version", "unbalanced `{`"),
            ("https://x/}", "unbalanced `}`"),
            ("ftp://x/y", "unsupported URL"),
            ("mirror://debian", "malformed mirror URL"),
            ("mirror:///x", "malformed mirror URL"),
            ("mirror://d//x", "malformed mirror URL"),
            ("mirror://d/../x", "`..` is not allowed"),
            ("https:///x", "has no host"),
            ("https://x/a b", "contains ' '"),
        ] {
            let err = url(bad, "1").unwrap_err();
            assert!(err.contains(msg), "{bad}: {err}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(relative_path(".").unwrap(), ".");
        assert_eq!(relative_path("./a//b/").unwrap(), "a/b");
        assert!(relative_path("/a").is_err());
        assert!(relative_path("a/../b").is_err());
        assert_eq!(absolute_path("/build/./x/").unwrap(), "/build/x");
        assert_eq!(absolute_path("/").unwrap(), "/");
        assert!(absolute_path("build").is_err());
        assert!(absolute_path("/build/..").is_err());
        assert!(file_name("a/b").is_err());
        assert!(file_name("hex0-seed").is_ok());
        assert_eq!(last_segment("https://x/a/b.tar.gz?x=1"), "b.tar.gz");
    }

    #[test]
    fn env_names() {
        assert!(env_name("CFLAGS").is_ok());
        assert!(env_name("PATH")
            .unwrap_err()
            .contains("fixed build environment"));
        assert!(env_name("1X").is_err());
    }
}
