//! Requests to a registry: URLs and the plain-HTTP rule, auth negotiated
//! per registry and scope (basic, or bearer tokens from the challenged
//! realm), and transport failures and error answers turned into errors that
//! say which registry failed doing what.

use std::io;

use ureq::http::{self, Method, Response};

use super::auth::{parse_challenge, Challenge, Credentials, TokenResponse};
use super::{Client, Error, Registry, Repository, Result};

/// What a request sends.
pub(super) enum Body<'a> {
    None,
    Bytes(&'a [u8]),
}

/// One request, described well enough to be retried after a challenge and
/// to name itself in errors.
pub(super) struct Req<'a> {
    pub(super) method: Method,
    pub(super) url: String,
    pub(super) repo: &'a Repository,
    pub(super) push: bool,
    /// A repository the request also needs pull rights on (a mount's source).
    pub(super) mount_from: Option<&'a str>,
    pub(super) headers: Vec<(&'static str, String)>,
    pub(super) body: Body<'a>,
    pub(super) what: String,
}

impl Client {
    /// `SCHEME://HOST/v2/REPO`, refusing plain HTTP where it is not allowed.
    pub(super) fn repo_url(&self, repo: &Repository) -> Result<String> {
        Ok(format!(
            "{}/v2/{}",
            self.base_url(&repo.registry)?,
            repo.name
        ))
    }

    pub(super) fn base_url(&self, registry: &Registry) -> Result<String> {
        let plain = registry.plain_http || (!registry.scheme_given && self.options.insecure_http);
        if plain && !registry.is_loopback() && !self.options.insecure_http {
            return Err(Error::InsecureHttp {
                host: registry.host.clone(),
            });
        }
        let scheme = if plain { "http" } else { "https" };
        Ok(format!("{scheme}://{}", registry.host))
    }

    /// Sends a request with the remembered auth for its registry and scope;
    /// on 401 answers the challenge (basic credentials, or a bearer token
    /// from the realm) and sends it once more.
    pub(super) fn execute(&self, req: Req<'_>) -> Result<Response<ureq::Body>> {
        let registry = &req.repo.registry;
        let mut scope = format!(
            "repository:{}:{}",
            req.repo.name,
            if req.push { "pull,push" } else { "pull" }
        );
        if let Some(from) = req.mount_from {
            scope.push_str(&format!(" repository:{from}:pull"));
        }
        let key = (registry.host.clone(), scope.clone());
        let mut answered = false;
        loop {
            let auth = self.remembered(&key);
            let resp = self.send(&req, auth.as_deref())?;
            if resp.status() != 401 {
                return Ok(resp);
            }
            let challenge = header(&resp, "www-authenticate").and_then(|h| parse_challenge(&h));
            let status = resp.status().as_u16();
            let detail = error_detail(resp);
            let credentials = self
                .options
                .credentials
                .lookup(&registry.host)
                .map_err(|credentials| Error::Credentials { credentials })?;
            let refused = |detail: String| match &credentials {
                Some(_) => Error::Refused {
                    host: registry.host.clone(),
                    repo: req.repo.name.clone(),
                    status,
                    detail,
                },
                None => Error::NoCredentials {
                    host: registry.host.clone(),
                    repo: req.repo.name.clone(),
                    status,
                    detail,
                },
            };
            if answered {
                return Err(refused(detail));
            }
            answered = true;
            let header_value = match challenge {
                Some(Challenge::Basic) => match &credentials {
                    Some(c) => c.basic_header(),
                    None => return Err(refused(detail)),
                },
                Some(Challenge::Bearer {
                    realm,
                    service,
                    scope: challenged,
                }) => {
                    // Ask for everything this operation needs (a push's
                    // HEAD is challenged for pull only), and what the
                    // registry named if that differs.
                    let mut scopes: Vec<&str> = scope.split(' ').collect();
                    if let Some(c) = challenged.as_deref().filter(|c| !scopes.contains(c)) {
                        scopes.push(c);
                    }
                    let token = self.token(
                        req.repo,
                        &realm,
                        service.as_deref(),
                        &scopes,
                        credentials.as_ref(),
                        status,
                    )?;
                    format!("Bearer {token}")
                }
                None => return Err(refused(detail)),
            };
            self.auth
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.clone(), header_value);
        }
    }

    /// The auth header for a registry and scope: the scope's own, or basic
    /// credentials learned for the registry under any scope.
    fn remembered(&self, key: &(String, String)) -> Option<String> {
        let map = self.auth.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).cloned().or_else(|| {
            map.iter()
                .find(|((host, _), v)| *host == key.0 && v.starts_with("Basic "))
                .map(|(_, v)| v.clone())
        })
    }

    /// Fetches a bearer token from `realm` (with basic credentials when there
    /// are any): `GET realm?service=...&scope=...` -> `{"token": ...}`.
    #[allow(clippy::too_many_arguments)]
    fn token(
        &self,
        repo: &Repository,
        realm: &str,
        service: Option<&str>,
        scopes: &[&str],
        credentials: Option<&Credentials>,
        status: u16,
    ) -> Result<String> {
        let host = repo.registry.host.clone();
        let mut url = realm.to_owned();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        let params = service
            .map(|s| ("service", s))
            .into_iter()
            .chain(scopes.iter().map(|s| ("scope", *s)));
        for (k, v) in params {
            url.push(sep);
            url.push_str(&format!("{k}={}", query_escape(v)));
            sep = '&';
        }
        let mut builder = http::Request::builder().method(Method::GET).uri(&url);
        if let Some(c) = credentials {
            builder = builder.header("Authorization", c.basic_header());
        }
        let request = builder.body(()).map_err(|e| Error::Protocol {
            host: host.clone(),
            what: format!("token realm {realm:?}"),
            reason: e.to_string(),
        })?;
        let what = format!("fetching a token for {repo} from {realm}");
        let resp = self
            .agent
            .run(request)
            .map_err(|e| self.transport(&repo.registry, &what, e))?;
        match resp.status().as_u16() {
            200 => {}
            401 | 403 => {
                let detail = format!("token service {realm}: {}", error_detail(resp));
                return Err(match credentials {
                    Some(_) => Error::Refused {
                        host,
                        repo: repo.name.clone(),
                        status,
                        detail,
                    },
                    None => Error::NoCredentials {
                        host,
                        repo: repo.name.clone(),
                        status,
                        detail,
                    },
                });
            }
            _ => return Err(self.status_error(repo, &what, resp)),
        }
        let bytes = resp
            .into_body()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| self.transport(&repo.registry, &what, e))?;
        serde_json::from_slice::<TokenResponse>(&bytes)
            .ok()
            .and_then(TokenResponse::into_token)
            .ok_or_else(|| Error::Protocol {
                host,
                what,
                reason: "the answer holds no `token` or `access_token`".into(),
            })
    }

    fn send(&self, req: &Req<'_>, auth: Option<&str>) -> Result<Response<ureq::Body>> {
        let mut builder = http::Request::builder()
            .method(req.method.clone())
            .uri(&req.url);
        for (k, v) in &req.headers {
            builder = builder.header(*k, v);
        }
        if let Some(a) = auth {
            builder = builder.header("Authorization", a);
        }
        let bad = |e: http::Error| Error::Protocol {
            host: req.repo.registry.host.clone(),
            what: format!("request URL {:?}", req.url),
            reason: e.to_string(),
        };
        let result = match req.body {
            Body::None => self.agent.run(builder.body(()).map_err(bad)?),
            Body::Bytes(b) => self.agent.run(builder.body(b).map_err(bad)?),
        };
        result.map_err(|e| self.transport(&req.repo.registry, &req.what, e))
    }

    /// A transport failure: the registry could not be reached at all, or
    /// the connection broke during `what`.
    pub(super) fn transport(&self, registry: &Registry, what: &str, e: ureq::Error) -> Error {
        let host = registry.host.clone();
        let unreachable = match &e {
            ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => true,
            ureq::Error::Io(io) => matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::AddrNotAvailable
            ),
            _ => false,
        };
        // rustls reports a failed handshake (an untrusted certificate, say)
        // as an InvalidData I/O error.
        let tls = match &e {
            ureq::Error::Tls(_) | ureq::Error::Rustls(_) => true,
            ureq::Error::Io(io) => io.kind() == io::ErrorKind::InvalidData,
            _ => false,
        };
        if tls {
            return Error::Tls {
                host,
                what: what.to_owned(),
                detail: e.to_string(),
            };
        }
        if unreachable {
            Error::Unreachable {
                host,
                what: what.to_owned(),
                detail: e.to_string(),
            }
        } else {
            Error::Connection {
                host,
                what: what.to_owned(),
                detail: e.to_string(),
            }
        }
    }

    pub(super) fn status_error(
        &self,
        repo: &Repository,
        what: &str,
        resp: Response<ureq::Body>,
    ) -> Error {
        let status = resp.status().as_u16();
        let detail = error_detail(resp);
        let host = repo.registry.host.clone();
        if status == 404 {
            Error::NotFound {
                host,
                what: what
                    .trim_start_matches("GET of ")
                    .trim_start_matches("HEAD of ")
                    .to_owned(),
                status,
                detail,
            }
        } else {
            Error::Status {
                host,
                what: what.to_owned(),
                status,
                detail,
            }
        }
    }

    /// The `Location` of an upload session, made absolute.
    pub(super) fn location(
        &self,
        repo: &Repository,
        resp: &Response<ureq::Body>,
        label: &str,
    ) -> Result<String> {
        let loc = header(resp, "location").ok_or_else(|| Error::Status {
            host: repo.registry.host.clone(),
            what: format!("upload of {label}"),
            status: resp.status().as_u16(),
            detail: "no Location header for the upload session".into(),
        })?;
        if loc.starts_with("http://") || loc.starts_with("https://") {
            Ok(loc)
        } else {
            let base = self.base_url(&repo.registry)?;
            Ok(format!("{base}/{}", loc.trim_start_matches('/')))
        }
    }
}

pub(super) fn header(resp: &Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The distribution spec's error body (`{"errors":[{"code","message"}]}`)
/// in one line, else the start of whatever the body says.
pub(super) fn error_detail(resp: Response<ureq::Body>) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        code: Option<String>,
        message: Option<String>,
    }
    let reason = resp.status().canonical_reason().unwrap_or("").to_owned();
    let bytes = resp
        .into_body()
        .with_config()
        .limit(64 << 10)
        .read_to_vec()
        .unwrap_or_default();
    if let Ok(e) = serde_json::from_slice::<Errors>(&bytes) {
        let parts: Vec<String> = e
            .errors
            .iter()
            .map(|x| {
                format!(
                    "{}: {}",
                    x.code.as_deref().unwrap_or("ERROR"),
                    x.message.as_deref().unwrap_or("")
                )
            })
            .collect();
        if !parts.is_empty() {
            return format!("{reason} ({})", parts.join("; "));
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    if text.is_empty() {
        reason
    } else {
        let short: String = text.chars().take(200).collect();
        format!("{reason} ({short})")
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
pub(super) fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
