//! `brickup receive` end to end on 127.0.0.1: a real sender's report is appended and answered
//! 200; bad tokens, bad or stale signatures, replays and malformed requests are refused and not
//! stored; slow clients hold neither the receiver nor other senders up; printed fields are
//! escaped.

use std::collections::BTreeSet;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

use brickup::report::receive::{self, ReceiveOptions, Receiver};
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

/// Token and HMAC required, the default limits.
fn options(out: &Path) -> ReceiveOptions {
    ReceiveOptions {
        secret: Some(Secret::new(HMAC)),
        token: Some(Secret::new(TOKEN)),
        ..ReceiveOptions::new(out)
    }
}

impl Running {
    fn start(out: &Path) -> Running {
        Running::start_with(options(out))
    }

    fn start_with(opts: ReceiveOptions) -> Running {
        let receiver = Receiver::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = receiver.local_addr();
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

/// The report `body` with another `finishedAt`: another report, as the receiver sees it.
fn finished_later(body: &[u8]) -> Vec<u8> {
    let mut doc: Value = serde_json::from_slice(body).unwrap();
    doc["finishedAt"] = Value::String("2026-12-04T00:00:01Z".into());
    serde_json::to_vec(&doc).unwrap()
}

fn lines(out: &Path) -> Vec<Value> {
    let text = fs::read_to_string(out).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A plain http:// client for hand-made requests: every status comes back as a response.
fn client() -> ureq::Agent {
    let config = ureq::config::Config::builder()
        .http_status_as_error(false)
        .proxy(None)
        .build();
    ureq::Agent::new_with_config(config)
}

/// A raw POST with chosen headers, answered status code returned.
fn post(addr: SocketAddr, headers: &[(&str, String)], body: &[u8]) -> u16 {
    let client = client();
    let mut req = client.post(format!("http://{addr}/"));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.send(body).unwrap().status().as_u16()
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
    let get = client.get(format!("http://{}/", rx.addr)).call().unwrap();
    assert_eq!(get.status().as_u16(), 405);

    assert_eq!(lines(&out).len(), 1, "nothing refused was appended");
    // A second good report (another body: the same one is stored once) is appended as its own
    // line.
    let second = finished_later(&body);
    assert_eq!(post(rx.addr, &signed(HMAC, ts, &second), &second), 200);
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
        let mut req = client.post(format!("http://{addr}/"));
        for (k, v) in &headers {
            req = req.header(*k, v);
        }
        match req.send(&body) {
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

/// Read timeout of the raw clients below. Not a speed check: it turns a request the receiver
/// never serves into a failure instead of a test that never ends.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// Sends `head` (request line and headers, no blank line) and `body` on a new connection and
/// returns the answer's status code and whole text (the receiver closes after answering).
fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(HANG_GUARD)).unwrap();
    stream
        .write_all(format!("{head}\r\n\r\n").as_bytes())
        .unwrap();
    stream.write_all(body).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    (status_of(&answer), answer)
}

fn status_of(answer: &str) -> u16 {
    let code = answer.strip_prefix("HTTP/1.1 ").and_then(|a| a.get(..3));
    code.and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

/// The head of a signed POST of `body` with timestamp text `ts`.
fn signed_head(ts: &str, signature: &str, body: &[u8]) -> String {
    format!(
        "POST /hook HTTP/1.1\r\nHost: rx\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {TOKEN}\r\nX-Brickup-Timestamp: {ts}\r\n\
         X-Brickup-Signature: {signature}\r\nContent-Length: {}",
        body.len()
    )
}

/// A correctly signed raw POST of `body`, signed now.
fn send_signed(addr: SocketAddr, body: &[u8]) -> (u16, String) {
    let ts = now();
    let signature = report::sign(&Secret::new(HMAC), ts, body);
    raw(addr, &signed_head(&ts.to_string(), &signature, body), body)
}

/// A client that announces a large body, sends one byte of it and holds the connection.
fn slow_client(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    let head = "POST / HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\n\
                Content-Length: 1000000\r\n\r\n{";
    stream.write_all(head.as_bytes()).unwrap();
    stream
}

/// Whether the receiver has neither answered nor closed `stream` yet (looked at without waiting).
fn unanswered(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let result = (&*stream).read(&mut byte);
    stream.set_nonblocking(false).unwrap();
    matches!(result, Err(e) if e.kind() == ErrorKind::WouldBlock)
}

#[test]
fn framing_is_checked_before_the_body_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.jsonl");
    let rx = Running::start(&out);
    let json = "Content-Type: application/json";
    let chunked = format!("POST / HTTP/1.1\r\n{json}\r\nTransfer-Encoding: chunked");
    let (code, text) = raw(rx.addr, &chunked, b"2\r\n{}\r\n0\r\n\r\n");
    assert_eq!(code, 411, "{text}");
    assert_eq!(
        raw(rx.addr, &format!("POST / HTTP/1.1\r\n{json}"), b"").0,
        411
    );
    let huge = format!("POST / HTTP/1.1\r\n{json}\r\nContent-Length: 2000000");
    assert_eq!(raw(rx.addr, &huge, b"").0, 413, "announced body over 1 MiB");
    let twice = format!("POST / HTTP/1.1\r\n{json}\r\nContent-Length: 2\r\nContent-Length: 3");
    assert_eq!(raw(rx.addr, &twice, b"{}").0, 400, "conflicting lengths");
    assert_eq!(
        raw(rx.addr, "POST / HTTP/2\r\nContent-Length: 0", b"").0,
        400
    );
    let (code, text) = raw(rx.addr, "PUT / HTTP/1.1\r\nContent-Length: 0", b"");
    assert_eq!(code, 405);
    assert!(text.contains("\r\nAllow: POST\r\n"), "{text}");
    assert!(lines(&out).is_empty());
    rx.finish();
}

#[test]
fn expect_100_continue_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.jsonl");
    let rx = Running::start(&out);
    let body = sample_report(&dir.path().join("root")).to_json();
    let ts = now();
    let signature = report::sign(&Secret::new(HMAC), ts, &body);
    let head = signed_head(&ts.to_string(), &signature, &body);
    let mut stream = TcpStream::connect(rx.addr).unwrap();
    stream.set_read_timeout(Some(HANG_GUARD)).unwrap();
    write!(stream, "{head}\r\nExpect: 100-continue\r\n\r\n").unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(&body).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(lines(&out).len(), 1);
    rx.finish();
}

#[test]
fn a_slow_client_holds_one_worker_not_the_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.jsonl");
    // The deadline is out of the way here: only the worker pool lets the report through.
    let opts = ReceiveOptions {
        read_timeout: Duration::from_secs(3600),
        ..options(&out)
    };
    let rx = Running::start_with(opts);
    let slow = slow_client(rx.addr);
    let body = sample_report(&dir.path().join("root")).to_json();
    assert_eq!(send_signed(rx.addr, &body).0, 200);
    assert_eq!(lines(&out).len(), 1);
    assert!(unanswered(&slow), "the slow client is still being read");
    drop(slow);
    rx.finish();
}

#[test]
fn a_slow_client_is_cut_off_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.jsonl");
    // One worker: the slow client takes it first, and only its deadline frees it.
    let opts = ReceiveOptions {
        workers: 1,
        read_timeout: Duration::from_millis(300),
        ..options(&out)
    };
    let rx = Running::start_with(opts);
    let mut slow = slow_client(rx.addr);
    let body = sample_report(&dir.path().join("root")).to_json();
    assert_eq!(send_signed(rx.addr, &body).0, 200);
    assert_eq!(lines(&out).len(), 1);
    slow.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    assert_eq!(status_of(&answer), 408, "{answer}");
    rx.finish();
}

#[test]
fn a_replayed_signature_is_refused_and_a_retried_body_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.jsonl");
    let rx = Running::start(&out);
    let body = sample_report(&dir.path().join("root")).to_json();
    let ts = now();
    let signature = report::sign(&Secret::new(HMAC), ts, &body);
    let head = signed_head(&ts.to_string(), &signature, &body);
    assert_eq!(raw(rx.addr, &head, &body).0, 200);
    let (code, text) = raw(rx.addr, &head, &body);
    assert_eq!(code, 409, "{text}");
    assert!(text.contains("replayed report"), "{text}");
    // Spelling the same signature differently does not make it new.
    let upper = format!("sha256={}", signature[7..].to_uppercase());
    let respelled = signed_head(&ts.to_string(), &upper, &body);
    assert_eq!(raw(rx.addr, &respelled, &body).0, 409, "upper-case hex");
    let padded = signed_head(&format!("0{ts}"), &signature, &body);
    assert_eq!(raw(rx.addr, &padded, &body).0, 409, "zero-padded timestamp");
    assert_eq!(lines(&out).len(), 1, "the replays were not stored");
    // The same report signed anew (as the sender does on each retry, when an answer was lost)
    // is answered as delivered and stored once.
    let again = report::sign(&Secret::new(HMAC), ts - 1, &body);
    let fresh = signed_head(&(ts - 1).to_string(), &again, &body);
    assert_eq!(raw(rx.addr, &fresh, &body).0, 200);
    assert_eq!(lines(&out).len(), 1, "a retried body is one line");
    // Another report is a second line.
    assert_eq!(send_signed(rx.addr, &finished_later(&body)).0, 200);
    assert_eq!(lines(&out).len(), 2, "another body is stored");
    rx.finish();
}

#[test]
fn printed_fields_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.jsonl");
    let rx = Running::start(&out);
    let mut doc = sample_report(&dir.path().join("root"));
    doc.hostname = "evil\n\x1b[31mred".into();
    doc.instance_id = "i-\x07\u{202e}1".into();
    assert_eq!(send_signed(rx.addr, &doc.to_json()).0, 200);
    let printed = rx.printed();
    let want =
        "i-\\x07\\u{202e}1 evil\\n\\x1b[31mred finished succeeded ssh=2222 firewall=enforcing\n";
    assert_eq!(printed, want);
    assert!(
        !printed.trim_end().chars().any(char::is_control),
        "{printed:?}"
    );
    // The stored report keeps what was sent.
    assert_eq!(lines(&out)[0]["hostname"], "evil\n\x1b[31mred");

    let mut value = serde_json::to_value(&doc).unwrap();
    value["status"] = "\x1b[2J".into();
    let (code, text) = send_signed(rx.addr, &serde_json::to_vec(&value).unwrap());
    assert_eq!(code, 400);
    assert!(
        text.contains("\\x1b[2J") && !text.contains('\x1b'),
        "{text:?}"
    );
    assert_eq!(rx.printed(), want, "nothing printed for the refused one");
    rx.finish();
}

#[test]
fn fifty_slow_clients_do_not_starve_twenty_senders() {
    const SENDERS: usize = 20;
    const EACH: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.jsonl");
    // The deadline is out of the way: the slow clients hold their workers throughout, and
    // only the pool's size keeps the senders going.
    let opts = ReceiveOptions {
        read_timeout: Duration::from_secs(3600),
        ..options(&out)
    };
    let rx = Running::start_with(opts);
    // Connected first, so they are ahead of every sender in the accept queue.
    let slow: Vec<TcpStream> = (0..50).map(|_| slow_client(rx.addr)).collect();
    let base = sample_report(&dir.path().join("root"));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (base, addr) = (base.clone(), rx.addr);
            thread::spawn(move || {
                let mut refused = Vec::new();
                for i in 0..EACH {
                    let mut doc = base.clone();
                    doc.instance_id = format!("load-{s}-{i}");
                    let (code, text) = send_signed(addr, &doc.to_json());
                    if code != 200 {
                        refused.push(format!("{}: {text}", doc.instance_id));
                    }
                }
                refused
            })
        })
        .collect();
    let refused: Vec<String> = senders
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(refused, Vec::<String>::new(), "valid reports refused");
    assert!(
        slow.iter().all(unanswered),
        "the slow clients held on throughout"
    );

    let stored: Vec<String> = lines(&out)
        .iter()
        .map(|v| v["instanceId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(stored.len(), SENDERS * EACH, "each report stored once");
    let wanted: BTreeSet<String> = (0..SENDERS)
        .flat_map(|s| (0..EACH).map(move |i| format!("load-{s}-{i}")))
        .collect();
    assert_eq!(stored.into_iter().collect::<BTreeSet<_>>(), wanted);
    assert_eq!(rx.printed().lines().count(), SENDERS * EACH);
    drop(slow);
    rx.finish();
}

/// The real sender through a relay that loses the receiver's first answer (the connection is
/// closed once the request went through, as when an attempt times out while the receiver syncs
/// its file): the sender retries, signed anew, and the report is one line, not two.
#[test]
fn a_retry_after_a_lost_answer_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.jsonl");
    let rx = Running::start(&out);
    let relay = TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let target = rx.addr;
    let relayed = thread::spawn(move || {
        let mut lost = 0;
        for n in 0..2 {
            let (mut client, _) = relay.accept().unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut upstream = TcpStream::connect(target).unwrap();
            let request = read_request(&mut client);
            upstream.write_all(&request).unwrap();
            let mut answer = Vec::new();
            upstream.read_to_end(&mut answer).unwrap();
            assert_eq!(status_of(&String::from_utf8_lossy(&answer)), 200);
            if n == 0 {
                // The receiver stored it and answered; the client never hears.
                lost += 1;
                drop(client);
            } else {
                client.write_all(&answer).unwrap();
            }
        }
        lost
    });
    let mut cfg = ReportConfig::new(format!("http://{relay_addr}/hook"));
    cfg.token = Some(Secret::new(TOKEN));
    cfg.hmac_secret = Some(Secret::new(HMAC));
    let root = Root::new(dir.path());
    // The retry waits at least 1.1 s (half the base, the jitter's least), so it is signed in
    // another second: a new signature, not a replay the receiver would refuse with 409.
    let sender = Sender::new(&root, &cfg)
        .unwrap()
        .with_backoff_base(Duration::from_millis(2200));
    sender
        .send(&sample_report(&dir.path().join("root")))
        .unwrap();
    assert_eq!(relayed.join().unwrap(), 1, "the first answer was lost");
    assert_eq!(lines(&out).len(), 1, "{:?}", lines(&out));
    rx.finish();
}

/// One HTTP request with a Content-Length body, as the client sent it.
fn read_request(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the client closed before a whole request");
        got.extend_from_slice(&buf[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        if got.len() >= end + 4 + length {
            return got;
        }
    }
}
