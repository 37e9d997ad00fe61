//! Registry credentials and authentication challenges: basic auth, and
//! bearer tokens fetched from the realm a `WWW-Authenticate: Bearer`
//! challenge names (the distribution token protocol).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;

/// A user name and password for basic auth (and for token realms).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <password>)", self.username)
    }
}

impl Credentials {
    /// The value of an `Authorization: Basic ...` header.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Where credentials for a registry host come from, first match wins:
/// the explicit ones (flags or IMGREP_REGISTRY_USER/PASSWORD), then the
/// `auths` of docker's config.json ($DOCKER_CONFIG/config.json or
/// ~/.docker/config.json).
#[derive(Debug, Clone, Default)]
pub struct CredentialSource {
    pub explicit: Option<Credentials>,
    pub docker_config: Option<PathBuf>,
}

impl CredentialSource {
    /// Explicit credentials from the environment, and docker's config file.
    pub fn from_env() -> Self {
        let user = std::env::var("IMGREP_REGISTRY_USER").ok();
        let password = std::env::var("IMGREP_REGISTRY_PASSWORD").ok();
        let explicit = match (user, password) {
            (Some(username), Some(password)) => Some(Credentials { username, password }),
            _ => None,
        };
        let docker_config = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| dirs::home_dir().map(|h| h.join(".docker")))
            .map(|d| d.join("config.json"));
        CredentialSource {
            explicit,
            docker_config,
        }
    }

    /// Credentials for `host` (`HOST[:PORT]`); an unreadable docker config
    /// is an error that names the file.
    pub fn lookup(&self, host: &str) -> Result<Option<Credentials>, String> {
        if let Some(c) = &self.explicit {
            return Ok(Some(c.clone()));
        }
        match &self.docker_config {
            Some(path) if path.is_file() => docker_auth(path, host),
            _ => Ok(None),
        }
    }
}

#[derive(serde::Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(serde::Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// `auths` entries are keyed by `HOST[:PORT]`, sometimes written as a URL
/// (`https://HOST/v1/`); `auth` is base64 of `USER:PASSWORD`.
fn docker_auth(path: &Path, host: &str) -> Result<Option<Credentials>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let config: DockerConfig =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let entry = config.auths.iter().find(|(key, _)| {
        let k = key
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        k.split('/').next() == Some(host)
    });
    let Some((key, auth)) = entry else {
        return Ok(None);
    };
    if let Some(encoded) = &auth.auth {
        let bad = || {
            format!(
                "{}: auths.{key:?}.auth is not base64 of USER:PASSWORD",
                path.display()
            )
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let (u, p) = raw.split_once(':').ok_or_else(bad)?;
        return Ok(Some(Credentials {
            username: u.to_owned(),
            password: p.to_owned(),
        }));
    }
    Ok(match (&auth.username, &auth.password) {
        (Some(u), Some(p)) => Some(Credentials {
            username: u.clone(),
            password: p.clone(),
        }),
        _ => None,
    })
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    /// `Bearer realm="...",service="...",scope="..."`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` value (RFC 7235: a scheme, then
/// comma-separated `key=value` or `key="quoted value"` parameters). Returns
/// the first challenge imgrep can answer, bearer before basic.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let mut challenges = Vec::new();
    let mut rest = header.trim();
    while !rest.is_empty() {
        let end = rest.find([' ', ',']).unwrap_or(rest.len());
        let scheme = rest[..end].to_ascii_lowercase();
        rest = rest[end..].trim_start_matches([' ', ',']);
        let mut params = BTreeMap::new();
        // Parameters until the next token that is not followed by `=`.
        while let Some(eq) = rest.find('=') {
            let key = &rest[..eq];
            if key.contains([' ', ',']) || key.is_empty() {
                break;
            }
            let after = &rest[eq + 1..];
            let (value, remaining) = if let Some(q) = after.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = q.char_indices();
                let mut end = q.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &q[end.min(q.len())..])
            } else {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_owned(), &after[end..])
            };
            params.insert(key.to_ascii_lowercase(), value);
            rest = remaining.trim_start_matches([' ', ',']);
        }
        challenges.push((scheme, params));
    }
    let bearer = challenges.iter().find_map(|(scheme, p)| {
        (scheme == "bearer").then(|| {
            p.get("realm").map(|realm| Challenge::Bearer {
                realm: realm.clone(),
                service: p.get("service").cloned(),
                scope: p.get("scope").cloned(),
            })
        })?
    });
    bearer.or_else(|| {
        challenges
            .iter()
            .any(|(s, _)| s == "basic")
            .then_some(Challenge::Basic)
    })
}

/// A token endpoint's answer: `token` or, OAuth2-style, `access_token`.
#[derive(serde::Deserialize)]
pub(super) struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
}

impl TokenResponse {
    pub(super) fn into_token(self) -> Option<String> {
        self.token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge() {
        let h = r#"Bearer realm="https://auth.example.org/token",service="registry.example.org",scope="repository:a/b:pull,push""#;
        assert_eq!(
            parse_challenge(h),
            Some(Challenge::Bearer {
                realm: "https://auth.example.org/token".into(),
                service: Some("registry.example.org".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        // Unquoted values, spaces after commas, case-insensitive scheme and keys.
        assert_eq!(
            parse_challenge("bearer Realm=http://127.0.0.1:1/t, service=reg"),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: Some("reg".into()),
                scope: None,
            })
        );
        // Escaped quote inside a quoted value.
        assert_eq!(
            parse_challenge(r#"Bearer realm="a\"b""#),
            Some(Challenge::Bearer {
                realm: "a\"b".into(),
                service: None,
                scope: None
            })
        );
    }

    #[test]
    fn basic_and_multiple_challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="r", Bearer realm="https://t/x",service="s""#),
            Some(Challenge::Bearer {
                realm: "https://t/x".into(),
                service: Some("s".into()),
                scope: None
            })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge(""), None);
        // A bearer challenge without a realm cannot be answered.
        assert_eq!(parse_challenge(r#"Bearer service="s""#), None);
    }

    #[test]
    fn docker_config_auths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://reg.example:5000/v1/":{"auth":"dXNlcjpwYTpzcw=="},"other":{"username":"u","password":"p"}}}"#,
        )
        .unwrap();
        let src = CredentialSource {
            explicit: None,
            docker_config: Some(path.clone()),
        };
        let c = src.lookup("reg.example:5000").unwrap().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("user", "pa:ss")
        );
        assert_eq!(src.lookup("other").unwrap().unwrap().username, "u");
        assert_eq!(src.lookup("reg.example").unwrap(), None);
        std::fs::write(&path, r#"{"auths":{"h":{"auth":"!!"}}}"#).unwrap();
        let e = src.lookup("h").unwrap_err();
        assert!(e.contains("auths.\"h\".auth is not base64"), "{e}");
        assert_eq!(
            c.basic_header(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("user:pa:ss")
            )
        );
    }
}
