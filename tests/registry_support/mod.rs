//! Debian's docker-registry on loopback, started and stopped by a test.
#![allow(dead_code)]

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REGISTRY: &str = "/usr/bin/docker-registry";

/// A docker-registry serving from a temporary directory on 127.0.0.1.
pub struct Registry {
    child: Option<Child>,
    port: u16,
    pub dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry; `auth` is extra YAML under `auth:` (None: open).
    /// None, with a SKIPPED line, when docker-registry is not installed.
    pub fn start(test: &str, auth: Option<&str>) -> Option<Registry> {
        Registry::start_with(test, auth, "")
    }

    /// As [`Registry::start`], with `http` extra YAML under `http:`.
    pub fn start_with(test: &str, auth: Option<&str>, http: &str) -> Option<Registry> {
        if !Path::new(REGISTRY).exists() {
            eprintln!("SKIPPED: {test}: {REGISTRY} is missing (apt-get install docker-registry)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        config.push_str(http);
        if let Some(auth) = auth {
            config.push_str("auth:\n");
            config.push_str(auth);
        }
        fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let reg = Registry {
            child: Some(child),
            port,
            dir,
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "docker-registry did not listen on port {port}:\n{}",
                reg.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(reg)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Access-log lines of completed requests with this method and path part.
    pub fn requests(&self, method: &str, path_part: &str) -> usize {
        let needle = format!("\"{method} ");
        self.log()
            .lines()
            .filter(|l| l.contains(&needle) && l.contains(path_part))
            .count()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}
