//! Proxies from the environment: downloads go through an HTTP CONNECT proxy named by
//! `HTTP_PROXY`, the status report never does (it is POSTed to exactly the configured URL).
//! Its own test binary because it sets process-wide environment variables. 127.0.0.1 only.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use brickup::download::{fetch_verified, FetchOptions, Sha256Digest};
use brickup::report::{ReportConfig, Sender};
use brickup::root::Root;
use sha2::{Digest as _, Sha256};

/// Reads one request head and, when it announces one, its body; returns the head.
fn read_request(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    let _ = stream.read_exact(&mut body);
    head
}

fn respond(stream: &mut TcpStream, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

/// Listens on 127.0.0.1, records each connection's request heads, answers with `serve`.
fn start(serve: fn(&mut TcpStream, &Mutex<Vec<String>>)) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            serve(&mut stream, &log);
        }
    });
    (port, seen)
}

/// A CONNECT proxy that plays the origin itself once the tunnel is "open".
fn proxy(stream: &mut TcpStream, seen: &Mutex<Vec<String>>) {
    seen.lock().unwrap().push(read_request(stream));
    let _ = stream.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
    seen.lock().unwrap().push(read_request(stream));
    respond(stream, b"through the proxy");
}

fn origin(stream: &mut TcpStream, seen: &Mutex<Vec<String>>) {
    seen.lock().unwrap().push(read_request(stream));
    respond(stream, b"direct");
}

#[test]
fn downloads_use_the_environment_proxy_and_reports_do_not() {
    let (proxy_port, via_proxy) = start(proxy);
    let (origin_port, direct) = start(origin);
    for name in [
        "ALL_PROXY",
        "all_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "http_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        std::env::remove_var(name);
    }
    std::env::set_var("HTTP_PROXY", format!("http://127.0.0.1:{proxy_port}"));

    let want = Sha256Digest(Sha256::digest(b"through the proxy").into());
    let cache = tempfile::tempdir().unwrap();
    let opts = FetchOptions {
        allow_http: true,
        attempts: 1,
        backoff: Duration::from_millis(10),
        ..FetchOptions::default()
    };
    let url = format!("http://127.0.0.1:{origin_port}/csf.tgz");
    fetch_verified(&url, &want, cache.path(), &opts).unwrap();
    {
        let heads = via_proxy.lock().unwrap();
        assert_eq!(heads.len(), 2, "{heads:?}");
        assert!(
            heads[0].starts_with(&format!("CONNECT 127.0.0.1:{origin_port} HTTP/1.1\r\n")),
            "{heads:?}"
        );
        assert!(
            heads[1].starts_with("GET /csf.tgz HTTP/1.1\r\n"),
            "{heads:?}"
        );
    }
    assert!(direct.lock().unwrap().is_empty());

    let root_dir = tempfile::tempdir().unwrap();
    let cfg = ReportConfig::new(format!("http://127.0.0.1:{origin_port}/hook"));
    Sender::new(&Root::new(root_dir.path()), &cfg)
        .unwrap()
        .send_body(b"{}")
        .unwrap();
    let heads = direct.lock().unwrap();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(heads[0].starts_with("POST /hook HTTP/1.1\r\n"), "{heads:?}");
    assert_eq!(
        via_proxy.lock().unwrap().len(),
        2,
        "the report bypassed the proxy"
    );
}
