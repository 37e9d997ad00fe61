//! Image references: `[http://|https://]HOST[:PORT]/REPO[:TAG|@sha256:HEX]`.
//! Without a scheme, loopback hosts speak plain HTTP and others TLS; plain
//! HTTP to any other host needs `--insecure-http` (docs/registry.md).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::digest::Digest;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid registry reference {input:?}: {reason} (expected [http://|https://]HOST[:PORT]/REPO[:TAG|@sha256:HEX])")]
pub struct ReferenceError {
    pub input: String,
    pub reason: String,
}

/// A registry's address: scheme and `HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Registry {
    /// Plain HTTP: `http://` given, or no scheme and a loopback host.
    pub plain_http: bool,
    /// The reference named its scheme (`http://` or `https://`).
    pub scheme_given: bool,
    /// `HOST[:PORT]` as written (IPv6 hosts in brackets).
    pub host: String,
}

impl Registry {
    /// `https://HOST` or `http://HOST`, without a trailing slash.
    pub fn base_url(&self) -> String {
        let scheme = if self.plain_http { "http" } else { "https" };
        format!("{scheme}://{}", self.host)
    }

    /// The host name without port or brackets.
    pub fn hostname(&self) -> &str {
        let h = &self.host;
        if let Some(rest) = h.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        h.rsplit_once(':').map_or(h.as_str(), |(name, _)| name)
    }

    /// 127.0.0.0/8, ::1 or `localhost`: where plain HTTP cannot be
    /// intercepted by anyone but this machine.
    pub fn is_loopback(&self) -> bool {
        let name = self.hostname();
        name.eq_ignore_ascii_case("localhost")
            || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// A repository in a registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repository {
    pub registry: Registry,
    /// e.g. `imgrep/musl`: lowercase components separated by `/`.
    pub name: String,
}

/// `HOST[:PORT]/NAME`, never a scheme: this is the repository's identity
/// (what cosign signs and podman's policy matches), the transport is not.
impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry.host, self.name)
    }
}

/// A repository plus a tag, a digest, or both (`REPO:TAG@DIGEST`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub repo: Repository,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// The same repository with `tag` and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        check_tag(tag).map_err(|reason| ReferenceError {
            input: format!("{}:{tag}", self.repo),
            reason,
        })?;
        Ok(Reference {
            repo: self.repo.clone(),
            tag: Some(tag.to_owned()),
            digest: None,
        })
    }

    /// What goes after `/manifests/`: the digest when there is one (it pins
    /// the content), else the tag.
    pub fn manifest_reference(&self) -> Option<String> {
        self.digest
            .map(|d| d.to_string())
            .or_else(|| self.tag.clone())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let registry = &self.repo.registry;
        if registry.scheme_given {
            write!(
                f,
                "{}://",
                if registry.plain_http { "http" } else { "https" }
            )?;
        }
        write!(f, "{}", self.repo)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| ReferenceError {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = if let Some(r) = input.strip_prefix("http://") {
            (Some(true), r)
        } else if let Some(r) = input.strip_prefix("https://") {
            (Some(false), r)
        } else if input.contains("://") {
            return Err(err("the only schemes are http:// and https://"));
        } else {
            (None, input)
        };
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| err("no repository after the host"))?;
        check_host(host).map_err(|r| err(&r))?;
        let (path, digest) = match path.split_once('@') {
            Some((p, d)) => (
                p,
                Some(d.parse::<Digest>().map_err(|_| {
                    err("a digest must be sha256: followed by 64 lowercase hex digits")
                })?),
            ),
            None => (path, None),
        };
        // A tag follows the last `:` after the last `/`.
        let last = path.rsplit('/').next().unwrap_or(path);
        let (name, tag) = match last.split_once(':') {
            Some((_, t)) => (&path[..path.len() - t.len() - 1], Some(t.to_owned())),
            None => (path, None),
        };
        check_repository(name).map_err(|r| err(&r))?;
        if let Some(t) = &tag {
            check_tag(t).map_err(|r| err(&r))?;
        }
        let mut registry = Registry {
            plain_http: scheme == Some(true),
            scheme_given: scheme.is_some(),
            host: host.to_owned(),
        };
        registry.plain_http |= scheme.is_none() && registry.is_loopback();
        Ok(Reference {
            repo: Repository {
                registry,
                name: name.to_owned(),
            },
            tag,
            digest,
        })
    }
}

impl FromStr for Repository {
    type Err = ReferenceError;

    /// `[http://|https://]HOST[:PORT]/REPO` with neither tag nor digest.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let r: Reference = input.parse()?;
        if r.tag.is_some() || r.digest.is_some() {
            return Err(ReferenceError {
                input: input.to_owned(),
                reason: "expected a repository without :TAG or @DIGEST".into(),
            });
        }
        Ok(r.repo)
    }
}

fn check_host(host: &str) -> Result<(), String> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or("an IPv6 host needs a closing `]`")?;
        ip.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{ip:?} is not an IPv6 address"))?;
        (None, after.strip_prefix(':'))
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (Some(n), Some(p)),
            None => (Some(host), None),
        }
    };
    if let Some(name) = name {
        let ok = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            return Err(format!("{name:?} is not a host name"));
        }
    }
    if let Some(p) = port {
        p.parse::<u16>()
            .map_err(|_| format!("port {p:?} is not a number from 0 to 65535"))?;
    }
    Ok(())
}

/// The distribution spec's repository name grammar: lowercase alphanumeric
/// components joined by `.`, `_`, `__` or runs of `-`, separated by `/`.
fn check_repository(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.split('/').all(|c| {
            let b = c.as_bytes();
            let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
            let mut i = 0;
            if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
                return false;
            }
            while i < b.len() {
                if alnum(b[i]) {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < b.len() && !alnum(b[i]) {
                    i += 1;
                }
                let sep = &c[start..i];
                if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
                    return false;
                }
            }
            true
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "repository {name:?} must be lowercase [a-z0-9] components joined by . _ __ or -, separated by /"
        ))
    }
}

/// `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub(crate) fn check_tag(tag: &str) -> Result<(), String> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} must be 1 to 128 of [A-Za-z0-9_.-], not starting with . or -"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn forms() {
        let r = parse("127.0.0.1:5000/imgrep/musl:1.2.5");
        assert_eq!(r.repo.registry.host, "127.0.0.1:5000");
        assert!(r.repo.registry.plain_http && !r.repo.registry.scheme_given);
        assert!(r.repo.registry.is_loopback());
        assert_eq!(r.repo.name, "imgrep/musl");
        assert_eq!(r.tag.as_deref(), Some("1.2.5"));
        assert_eq!(r.digest, None);
        assert_eq!(r.to_string(), "127.0.0.1:5000/imgrep/musl:1.2.5");

        let d = Digest::of(b"x");
        let r = parse(&format!("http://localhost/a/b@{d}"));
        assert!(r.repo.registry.plain_http);
        assert_eq!((r.tag, r.digest), (None, Some(d)));
        assert_eq!(r.repo.registry.base_url(), "http://localhost");

        let r = parse(&format!("https://[::1]:443/x:t@{d}"));
        assert!(!r.repo.registry.plain_http);
        assert_eq!(r.to_string(), format!("https://[::1]:443/x:t@{d}"));
        assert_eq!(r.repo.registry.hostname(), "::1");
        assert!(r.repo.registry.is_loopback());
        assert_eq!(r.manifest_reference(), Some(d.to_string()));

        let r = parse("registry.example.org/x/y");
        assert!(!r.repo.registry.is_loopback() && !r.repo.registry.plain_http);
        assert_eq!(r.manifest_reference(), None);
        assert!(parse("127.1.2.3:1/a").repo.registry.is_loopback());
        assert!(!parse("128.0.0.1/a").repo.registry.is_loopback());
    }

    #[test]
    fn rejections() {
        for bad in [
            "",
            "host",
            "host/",
            "ftp://host/a",
            "host:99999/a",
            "host/A",
            "host/a//b",
            "host/a:",
            "host/a:.x",
            "host/a@sha256:00",
            "[::1/a",
            "ho st/a",
            "host/a-",
        ] {
            let e = bad.parse::<Reference>().unwrap_err();
            assert_eq!(e.input, bad);
        }
        assert!("host/a:t".parse::<Repository>().is_err());
        assert_eq!(
            "host:5000/a/b".parse::<Repository>().unwrap().to_string(),
            "host:5000/a/b"
        );
    }
}
