//! Bearer-token auth end to end: docker-registry configured with
//! `auth: token:` trusts a certificate made here; a token server in this
//! test (std TCP, ES256 JWTs signed with ring) hands out tokens for basic
//! credentials. imgrep must follow the challenge to the realm, present the
//! token, and report refused credentials clearly.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

const REGISTRY: &str = "/usr/bin/docker-registry";
const SERVICE: &str = "imgrep-test-registry";
const ISSUER: &str = "imgrep-test-issuer";
const USER: &str = "bob";
const PASSWORD: &str = "token-pw";
/// DER prefix of a P-256 SubjectPublicKeyInfo, before the 65-byte point.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// libtrust's key id, which docker-registry looks a JWT's `kid` up by:
/// base32 of the first 240 bits of the SPKI's sha256, in groups of four.
fn libtrust_key_id(spki: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hash = imgrep::digest::Digest::of(spki);
    let bits = &hash.as_bytes()[..30];
    let mut out = String::new();
    for chunk in bits.chunks(5) {
        let v = chunk.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b));
        for i in (0..8).rev() {
            out.push(ALPHABET[(v >> (i * 5)) as usize & 31] as char);
        }
    }
    out.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":")
}

struct TokenServer {
    port: u16,
    issued: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

/// Serves `GET /token?service=...&scope=repository:NAME:ACTIONS` with a JWT
/// granting what the scope asks, to basic credentials USER:PASSWORD only.
fn token_server(key: EcdsaKeyPair, kid: String) -> TokenServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let issued = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let (i, r) = (issued.clone(), refused.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            serve_token(stream, &key, &kid, &i, &r);
        }
    });
    TokenServer {
        port,
        issued,
        refused,
    }
}

fn serve_token(
    mut stream: TcpStream,
    key: &EcdsaKeyPair,
    kid: &str,
    issued: &AtomicUsize,
    refused: &AtomicUsize,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                authorization = Some(v.trim().to_owned());
            }
        }
    }
    let path = request_line.split(' ').nth(1).unwrap_or("");
    let query = path.split_once('?').map_or("", |(_, q)| q);
    let param = |name: &str| {
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| percent_decode(v))
        })
    };
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    let (status, body) = if authorization.as_deref() != Some(expected.as_str()) {
        refused.fetch_add(1, Ordering::SeqCst);
        (
            "401 Unauthorized",
            r#"{"details":"wrong credentials"}"#.to_owned(),
        )
    } else {
        issued.fetch_add(1, Ordering::SeqCst);
        let mut access = Vec::new();
        if let Some(scope) = param("scope") {
            let mut parts = scope.splitn(3, ':');
            if let (Some(typ), Some(name), Some(actions)) =
                (parts.next(), parts.next(), parts.next())
            {
                access.push(serde_json::json!({
                    "type": typ, "name": name,
                    "actions": actions.split(',').collect::<Vec<_>>(),
                }));
            }
        }
        assert_eq!(param("service").as_deref(), Some(SERVICE));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "kid": kid});
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": USER, "aud": SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now,
            "jti": format!("{now}-{}", issued.load(Ordering::SeqCst)),
            "access": access,
        });
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let rng = ring::rand::SystemRandom::new();
        let sig = key.sign(&rng, input.as_bytes()).unwrap();
        let token = format!("{input}.{}", b64url(sig.as_ref()));
        ("200 OK", serde_json::json!({ "token": token }).to_string())
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

struct Registry(Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn imgrep(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgrep"))
        .args(args)
        .env_remove("IMGREP_REGISTRY_USER")
        .env_remove("IMGREP_REGISTRY_PASSWORD")
        .env_remove("IMGREP_OFFLINE")
        .env("DOCKER_CONFIG", "/nonexistent")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bearer_tokens_from_the_challenged_realm() {
    let test = "bearer_tokens_from_the_challenged_realm";
    if !Path::new(REGISTRY).exists() {
        eprintln!("SKIPPED: {test}: {REGISTRY} is missing (apt-get install docker-registry)");
        return;
    }
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIPPED: {test}: openssl is missing to make the token certificate (apt-get install openssl)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    fs::write(dir.path().join("key.p8"), pkcs8.as_ref()).unwrap();
    let cert = dir.path().join("cert.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-x509",
            "-days",
            "2",
            "-subj",
            "/CN=imgrep-test-token",
        ])
        .arg("-keyform")
        .arg("DER")
        .arg("-key")
        .arg(dir.path().join("key.p8"))
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let spki = [P256_SPKI_PREFIX, key.public_key().as_ref()].concat();
    let kid = libtrust_key_id(&spki);
    let tokens = token_server(key, kid);

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        dir.path().join("data").display(),
        tokens.port,
        cert.display()
    );
    fs::write(dir.path().join("config.yml"), config).unwrap();
    let log = fs::File::create(dir.path().join("registry.log")).unwrap();
    let _registry = Registry(
        Command::new(REGISTRY)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "registry did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let registry_log = || fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default();

    let tree = dir.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("file"), b"token test\n").unwrap();
    let layout = dir.path().join("out");
    let layout = layout.to_str().unwrap();
    let out = imgrep(
        &[
            "pack",
            tree.to_str().unwrap(),
            "--out",
            layout,
            "--tag",
            "tok:1",
        ],
        &[],
    );
    let (digest, err) = text(&out);
    assert!(out.status.success(), "{err}");
    let digest = digest.trim().to_owned();
    let target = format!("127.0.0.1:{port}/tok/img:1");

    // Anonymous: the token service refuses, and the message says how to
    // give credentials.
    let out = imgrep(&["push", "--layout", layout, "tok:1", &target], &[]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "registry 127.0.0.1:{port} requires credentials for tok/img (401"
        )) && err.contains("IMGREP_REGISTRY_USER"),
        "{err}"
    );
    assert_eq!(tokens.refused.load(Ordering::SeqCst), 1);

    let wrong = [
        ("IMGREP_REGISTRY_USER", USER),
        ("IMGREP_REGISTRY_PASSWORD", "wrong"),
    ];
    let out = imgrep(&["push", "--layout", layout, "tok:1", &target], &wrong);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "registry 127.0.0.1:{port} refused the credentials for tok/img: 401"
        )) && err.contains("token service"),
        "{err}"
    );
    assert_eq!(tokens.refused.load(Ordering::SeqCst), 2);

    let right = [
        ("IMGREP_REGISTRY_USER", USER),
        ("IMGREP_REGISTRY_PASSWORD", PASSWORD),
    ];
    let out = imgrep(&["push", "--layout", layout, "tok:1", &target], &right);
    let (stdout, err) = text(&out);
    assert!(out.status.success(), "{err}\n{}", registry_log());
    assert_eq!(stdout.trim(), digest);
    // One token for the push scope serves every request of the push.
    assert_eq!(tokens.issued.load(Ordering::SeqCst), 1);

    let pulled = dir.path().join("pulled");
    let out = imgrep(
        &["pull", &target, "--layout", pulled.to_str().unwrap()],
        &right,
    );
    let (stdout, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(stdout.trim(), digest);
    assert_eq!(tokens.issued.load(Ordering::SeqCst), 2);
    let mut index = String::new();
    fs::File::open(pulled.join("index.json"))
        .unwrap()
        .read_to_string(&mut index)
        .unwrap();
    assert!(index.contains(&digest), "{index}");
}
