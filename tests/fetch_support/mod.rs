//! A real HTTP/1.1 server on loopback for the fetch and store tests: plain
//! std::net, one thread per connection, `Connection: close`. It serves
//! fixed bytes (optionally slowly), redirects and error statuses, and counts
//! the requests per path so tests can prove what was (not) downloaded.

#![allow(dead_code)] // each test crate uses a different part of it

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Clone)]
pub enum Route {
    Bytes(Vec<u8>),
    /// The bytes in chunks of `chunk`, sleeping `pause` before each.
    Slow {
        body: Vec<u8>,
        chunk: usize,
        pause: Duration,
    },
    Redirect(String),
    Status(u16),
}

#[derive(Clone, Default)]
pub struct Server {
    pub base: String,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = Server {
            base,
            ..Server::default()
        };
        let s = server.clone();
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                thread::spawn(move || s.handle(conn));
            }
        });
        server
    }

    pub fn route(&self, path: &str, route: Route) -> String {
        self.routes.lock().unwrap().insert(path.to_owned(), route);
        self.url(path)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    pub fn total_hits(&self) -> usize {
        self.hits.lock().unwrap().values().sum()
    }

    fn handle(&self, mut conn: TcpStream) {
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        loop {
            let mut h = String::new();
            match reader.read_line(&mut h) {
                Ok(0) | Err(_) => break,
                Ok(_) if h == "\r\n" || h == "\n" => break,
                Ok(_) => {}
            }
        }
        *self.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
        let route = self.routes.lock().unwrap().get(&path).cloned();
        let _ = match route {
            None => respond(&mut conn, 404, &[], b"not found\n"),
            Some(Route::Status(code)) => respond(&mut conn, code, &[], b"error\n"),
            Some(Route::Redirect(to)) => respond(&mut conn, 302, &[("Location", to.as_str())], b""),
            Some(Route::Bytes(body)) => respond(&mut conn, 200, &[], &body),
            Some(Route::Slow { body, chunk, pause }) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                conn.write_all(head.as_bytes()).and_then(|_| {
                    for part in body.chunks(chunk) {
                        thread::sleep(pause);
                        conn.write_all(part)?;
                    }
                    Ok(())
                })
            }
        };
    }
}

fn respond(
    conn: &mut TcpStream,
    code: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)
}
