//! `brickup receive` end to end on 127.0.0.1: a real sender's report is appended and answered
//! 200; bad tokens, bad or stale signatures and malformed bodies are refused and not stored.

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

use brickup::receive::{self, ReceiveOptions, Receiver};
use brickup::report::{self, Firewall, ReportConfig, RunFacts, Secret, Sender};
use brickup::root::Root;
use serde_json::Value;

const TOKEN: &str = "rx-token-1";
const HMAC: &str = "rx-hmac-2";

/// Collects the summary lines the receiver prints.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Running {
    addr: SocketAddr,
    printed: Sink,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    fn start(out: &Path) -> Running {
        let receiver = Receiver::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = receiver.local_addr();
        let opts = ReceiveOptions {
            secret: Some(Secret::new(HMAC)),
            token: Some(Secret::new(TOKEN)),
            out: out.to_path_buf(),
            max_skew: receive::DEFAULT_MAX_SKEW,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let printed = Sink::default();
        let mut sink = printed.clone();
        let thread = thread::spawn(move || receiver.run_with(&opts, Some(flag), &mut sink));
        Running {
            addr,
            printed,
            stop,
            thread: Some(thread),
        }
    }

    fn printed(&self) -> String {
        String::from_utf8(self.printed.0.lock().unwrap().clone()).unwrap()
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap().unwrap();
    }
}

fn sample_report(root_dir: &Path) -> report::Report {
    let root = Root::new(root_dir);
    for (path, text) in [
        ("/etc/machine-id", "m-42\n"),
        ("/etc/hostname", "rx-host\n"),
        ("/etc/os-release", "ID=ubuntu\nVERSION_ID=\"24.04\"\n"),
    ] {
        let p = root.path(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    RunFacts::gather(&root, b"cfg", 2222).finished(
        Vec::new(),
        Firewall::Enforcing,
        None,
        time::OffsetDateTime::now_utc(),
    )
}

fn lines(out: &Path) -> Vec<Value> {
    let text = fs::read_to_string(out).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A plain client for hand-made requests (the crate's own client brings its TLS provider; this
/// one needs the process default).
fn client() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
}

/// A raw POST with chosen headers, answered status code returned.
fn post(addr: SocketAddr, headers: &[(&str, String)], body: &[u8]) -> u16 {
    let client = client();
    let mut req = client.post(format!("http://{addr}/")).body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.send().unwrap().status().as_u16()
}

fn signed(secret: &str, ts: u64, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("Content-Type", "application/json".into()),
        ("Authorization", format!("Bearer {TOKEN}")),
        ("X-Brickup-Timestamp", ts.to_string()),
        (
            "X-Brickup-Signature",
            report::sign(&Secret::new(secret), ts, body),
        ),
    ]
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn accepts_a_signed_report_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("reports.jsonl");
    let rx = Running::start(&out);
    let doc = sample_report(&dir.path().join("root"));

    let mut cfg = ReportConfig::new(format!("http://{}/hook", rx.addr));
    cfg.token = Some(Secret::new(TOKEN));
    cfg.hmac_secret = Some(Secret::new(HMAC));
    let root = Root::new(dir.path());
    Sender::new(&root, &cfg).unwrap().send(&doc).unwrap();
    let stored = lines(&out);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["instanceId"], "m-42");
    assert_eq!(stored[0]["status"], "succeeded");
    assert_eq!(stored[0], serde_json::to_value(&doc).unwrap());
    let summary = "m-42 rx-host finished succeeded ssh=2222 firewall=enforcing\n";
    assert_eq!(rx.printed(), summary);

    let body = doc.to_json();
    let ts = now();
    assert_eq!(
        post(rx.addr, &signed("wrong", ts, &body), &body),
        401,
        "bad signature"
    );
    assert_eq!(
        post(rx.addr, &signed(HMAC, ts - 400, &body), &body),
        401,
        "stale timestamp"
    );
    assert_eq!(
        post(rx.addr, &signed(HMAC, ts + 400, &body), &body),
        401,
        "future timestamp"
    );
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    assert_eq!(
        post(rx.addr, &signed(HMAC, ts, &body), &tampered),
        401,
        "body changed"
    );
    let mut no_token = signed(HMAC, ts, &body);
    no_token.remove(1);
    assert_eq!(post(rx.addr, &no_token, &body), 401, "missing token");
    let mut bad_token = signed(HMAC, ts, &body);
    bad_token[1].1 = "Bearer nope".into();
    assert_eq!(post(rx.addr, &bad_token, &body), 401, "wrong token");
    let mut unsigned = signed(HMAC, ts, &body);
    unsigned.truncate(2);
    assert_eq!(post(rx.addr, &unsigned, &body), 401, "no signature");

    let junk = b"{not json".to_vec();
    assert_eq!(
        post(rx.addr, &signed(HMAC, ts, &junk), &junk),
        400,
        "malformed"
    );
    let other = br#"{"apiVersion":"x/v9","kind":"Other"}"#.to_vec();
    assert_eq!(
        post(rx.addr, &signed(HMAC, ts, &other), &other),
        400,
        "not a report"
    );
    let mut text = signed(HMAC, ts, &body);
    text[0].1 = "text/plain".into();
    assert_eq!(post(rx.addr, &text, &body), 415, "wrong content type");
    let client = client();
    let get = client.get(format!("http://{}/", rx.addr)).send().unwrap();
    assert_eq!(get.status().as_u16(), 405);

    assert_eq!(lines(&out).len(), 1, "nothing refused was appended");
    // A second good report is appended as its own line.
    assert_eq!(post(rx.addr, &signed(HMAC, ts, &body), &body), 200);
    assert_eq!(lines(&out).len(), 2);
    assert_eq!(
        rx.printed(),
        summary.repeat(2),
        "one line per accepted report"
    );
    rx.finish();
}

#[test]
fn serve_runs_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.jsonl");
    // serve() binds by itself: pick a free port first.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, out2) = (stop.clone(), out.clone());
    let t = thread::spawn(move || {
        let token = Some(Secret::new(TOKEN));
        receive::serve(
            addr,
            None,
            token,
            &out2,
            receive::DEFAULT_MAX_SKEW,
            Some(flag),
        )
    });
    let body = sample_report(&dir.path().join("root")).to_json();
    let headers = [
        ("Content-Type", "application/json".to_string()),
        ("Authorization", format!("Bearer {TOKEN}")),
    ];
    let mut code = 0;
    for _ in 0..50 {
        // The listener may not be up yet.
        let client = client();
        let mut req = client.post(format!("http://{addr}/")).body(body.clone());
        for (k, v) in &headers {
            req = req.header(*k, v);
        }
        match req.send() {
            Ok(resp) => {
                code = resp.status().as_u16();
                break;
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
    assert_eq!(code, 200);
    assert_eq!(post(addr, &headers[..1], &body), 401, "token required");
    stop.store(true, Ordering::SeqCst);
    t.join().unwrap().unwrap();
    assert_eq!(lines(&out).len(), 1);
}
