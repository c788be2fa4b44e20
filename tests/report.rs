//! The status report over real HTTP on 127.0.0.1: the snapshot of the report a real apply sends,
//! headers and signature, retries, time bounds, the pending store, and that no secret leaks into
//! any output.

mod common;

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use brickup::report::identity;
use brickup::report::receive::{self, VerifyError};
use brickup::report::{self, *};
use brickup::root::Root;
use serde_json::Value;

const HOST_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFqFjHsD54yytghYIhygTQoRcW+jDDxtOJoxTLReU1OU root@fixture\n";
const TOKEN: &str = "tok-7Hq2-never-print-me";
const HMAC: &str = "hmac-Zx91-never-print-me";
const FAST: Duration = Duration::from_millis(20);

/// A temp dir laid out like a freshly booted cloud VM.
fn fixture_root() -> (tempfile::TempDir, Root) {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path());
    let files = [
        ("/run/cloud-init/.instance-id", "i-0abc123def\n"),
        ("/etc/machine-id", "0123456789abcdef0123456789abcdef\n"),
        ("/etc/hostname", "mn-fixture-01\n"),
        (
            "/etc/os-release",
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
        ),
        ("/etc/ssh/ssh_host_ed25519_key.pub", HOST_KEY),
        ("/etc/ssh/ssh_host_ed25519_key", "private, not read\n"),
    ];
    for (path, text) in files {
        let p = root.path(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    (dir, root)
}

fn steps() -> Vec<StepResult> {
    let step = |name: &str, outcome, message: &str| StepResult {
        name: name.into(),
        outcome,
        duration_ms: 1234,
        message: message.into(),
    };
    vec![
        step("ssh-key", Outcome::Unchanged, "key already present"),
        step("sshd", Outcome::Changed, "wrote 00-brickup.conf"),
        step("csf-enable", Outcome::Deferred, "waiting for SSH proof"),
    ]
}

fn finished_report(root: &Root) -> Report {
    let facts = RunFacts::gather(root, b"ssh_port: 2222\n", 2222);
    facts.finished(
        steps(),
        Firewall::Testing,
        None,
        time::OffsetDateTime::now_utc(),
    )
}

fn config(url: &str) -> ReportConfig {
    let mut cfg = ReportConfig::new(url);
    cfg.token = Some(Secret::new(TOKEN));
    cfg.hmac_secret = Some(Secret::new(HMAC));
    cfg
}

fn sender(root: &Root, cfg: &ReportConfig) -> anyhow::Result<Sender> {
    Ok(Sender::new(root, cfg)?.with_backoff_base(FAST))
}

struct Captured {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Captured {
    fn header(&self, name: &str) -> Option<&str> {
        let found = self
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name));
        found.map(|(_, v)| v.as_str())
    }
}

/// A receiver answering each request with the next scripted status (500 once the script is
/// spent, so an extra request shows up as a failure) and recording what it got.
struct Scripted {
    url: String,
    seen: Arc<Mutex<Vec<Captured>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Scripted {
    fn start(script: &[u16]) -> Scripted {
        Self::start_with(script, false)
    }

    /// `echo`: answer with the request's headers in the body, like a careless receiver.
    fn start_with(script: &[u16], echo: bool) -> Scripted {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/hook?key=q",
            server.server_addr().to_ip().unwrap()
        );
        let (seen, stop) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(AtomicBool::new(false)),
        );
        let (seen2, stop2, mut script) = (seen.clone(), stop.clone(), script.to_vec());
        script.reverse();
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let Some(mut req) = server.recv_timeout(Duration::from_millis(20)).unwrap() else {
                    continue;
                };
                let mut body = Vec::new();
                req.as_reader().read_to_end(&mut body).unwrap();
                let headers: Vec<(String, String)> = req
                    .headers()
                    .iter()
                    .map(|h| (h.field.to_string(), h.value.to_string()))
                    .collect();
                let answer = if echo {
                    format!("{headers:?}")
                } else {
                    "answer".into()
                };
                seen2.lock().unwrap().push(Captured {
                    method: req.method().to_string(),
                    url: req.url().to_string(),
                    headers,
                    body,
                });
                let code = script.pop().unwrap_or(500);
                let resp = tiny_http::Response::from_string(answer).with_status_code(code);
                req.respond(resp).unwrap();
            }
        });
        Scripted {
            url,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Masks what changes from run to run, then compares with the stored snapshot as JSON.
/// `BRICKUP_UPDATE_SNAPSHOTS=1` rewrites a snapshot that differs (or is missing) and still fails:
/// a snapshot is never compared with itself.
fn assert_snapshot(name: &str, mut doc: Value) {
    doc["startedAt"] = "<time>".into();
    doc["finishedAt"] = "<time>".into();
    doc["brickupVersion"] = "<version>".into();
    for step in doc["steps"].as_array_mut().unwrap() {
        step["duration_ms"] = 0.into();
    }
    if let Some(h) = doc.get_mut("sshHardened").and_then(Value::as_object_mut) {
        for timing in ["afterStartMs", "uptimeMs"] {
            if h.contains_key(timing) {
                h.insert(timing.into(), "<ms>".into());
            }
        }
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    let actual = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    let update = std::env::var_os("BRICKUP_UPDATE_SNAPSHOTS").is_some();
    let expected_text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if update => {
            fs::write(&path, &actual).unwrap();
            panic!("{name}: no snapshot ({e}); written, check it and run again without BRICKUP_UPDATE_SNAPSHOTS");
        }
        Err(e) => panic!("{name}: reading the snapshot: {e}"),
    };
    let expected: Value = serde_json::from_str(&expected_text).unwrap();
    if expected != doc {
        let diff = similar::TextDiff::from_lines(&expected_text, &actual);
        // Updating writes the new snapshot but never passes: the run that wrote it compared
        // nothing.
        if update {
            fs::write(&path, &actual).unwrap();
        }
        panic!(
            "{name} differs{}:\n{}",
            if update {
                " (rewritten: run again without BRICKUP_UPDATE_SNAPSHOTS)"
            } else {
                ""
            },
            diff.unified_diff().header("snapshot", "actual")
        );
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn posts_signed_json() {
    let (_dir, root) = fixture_root();
    let rx = Scripted::start(&[200]);
    let doc = finished_report(&root);
    sender(&root, &config(&rx.url)).unwrap().send(&doc).unwrap();

    let seen = rx.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.url, "/hook?key=q");
    assert_eq!(req.header("Content-Type"), Some("application/json"));
    assert_eq!(
        req.header("Authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    let ts = req.header("X-Brickup-Timestamp").unwrap();
    assert!(
        now_secs().abs_diff(ts.parse().unwrap()) <= 5,
        "timestamp {ts}"
    );
    let sig = req.header("X-Brickup-Signature").unwrap();
    let max = receive::DEFAULT_MAX_SKEW;
    let now = SystemTime::now();
    receive::verify(&Secret::new(HMAC), ts, &req.body, sig, now, max).unwrap();
    let wrong = receive::verify(&Secret::new("wrong"), ts, &req.body, sig, now, max);
    assert_eq!(wrong, Err(VerifyError::Mismatch));
    let later = now + Duration::from_secs(301);
    let stale = receive::verify(&Secret::new(HMAC), ts, &req.body, sig, later, max);
    assert!(matches!(stale, Err(VerifyError::Stale { .. })), "{stale:?}");

    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert!(body["startedAt"].as_str().unwrap().ends_with('Z'));
    time::OffsetDateTime::parse(
        body["finishedAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(body["brickupVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        body,
        serde_json::to_value(&doc).unwrap(),
        "the body is the report"
    );
}

#[test]
fn failed_run_carries_the_error_chain_and_started_has_no_end() {
    let (_dir, root) = fixture_root();
    let facts = RunFacts::gather(&root, b"x", 22);
    let err = anyhow::anyhow!("csf -r exited 2").context("enabling the firewall");
    let doc = facts.finished(
        steps(),
        Firewall::Off,
        Some(&err),
        time::OffsetDateTime::now_utc(),
    );
    assert_eq!(doc.status, Status::Failed);
    let v: Value = serde_json::from_slice(&doc.to_json()).unwrap();
    assert_eq!(
        v["error"],
        serde_json::json!(["enabling the firewall", "csf -r exited 2"])
    );
    assert_eq!(
        summary_line(&doc),
        "i-0abc123def mn-fixture-01 finished failed ssh=22 firewall=off error=\"enabling the firewall\""
    );

    let ok = facts.finished(
        steps()[..2].to_vec(),
        Firewall::Enforcing,
        None,
        time::OffsetDateTime::now_utc(),
    );
    assert_eq!(ok.status, Status::Succeeded);
    let started = serde_json::to_value(facts.started(Firewall::Unknown)).unwrap();
    assert_eq!(started["event"], "started");
    assert_eq!(started["status"], "running");
    assert!(started.get("finishedAt").is_none() && started.get("error").is_none());
}

#[test]
fn retries_503_twice_then_delivers_exactly_once() {
    let (_dir, root) = fixture_root();
    let rx = Scripted::start(&[503, 503, 200]);
    let doc = finished_report(&root);
    let outcome = deliver_with(&root, sender(&root, &config(&rx.url)), &doc);
    assert_eq!(outcome, DeliveryOutcome::Delivered);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(rx.count(), 3);
    let bodies: Vec<Vec<u8>> = rx
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.body.clone())
        .collect();
    assert!(
        bodies.iter().all(|b| *b == bodies[0]),
        "every attempt sends the same report"
    );
    assert!(!root.path(PENDING_REPORT).exists());
    let last = report::status(&root).unwrap();
    assert_eq!(
        summary_line(&last),
        "i-0abc123def mn-fixture-01 finished partial ssh=2222 firewall=testing"
    );
}

#[test]
fn a_400_is_final() {
    let (_dir, root) = fixture_root();
    let rx = Scripted::start(&[400, 200]);
    let err = sender(&root, &config(&rx.url))
        .unwrap()
        .send(&finished_report(&root))
        .unwrap_err();
    thread::sleep(Duration::from_millis(100));
    assert_eq!(rx.count(), 1);
    let msg = format!("{err:#}");
    assert!(msg.contains("400") && msg.contains("answer"), "{msg}");
    assert!(
        !msg.contains("key=q"),
        "query strings stay out of messages: {msg}"
    );
}

/// brickup receive answers 409 to a signature it already stored: the report is delivered (an
/// earlier attempt's 200 was lost), so it is neither retried nor kept as pending.
#[test]
fn a_409_replay_refusal_counts_as_delivered() {
    let (_dir, root) = fixture_root();
    let rx = Scripted::start(&[409, 200]);
    let doc = finished_report(&root);
    let outcome = deliver_with(&root, sender(&root, &config(&rx.url)), &doc);
    assert_eq!(outcome, DeliveryOutcome::Delivered);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(rx.count(), 1);
    assert!(!root.path(PENDING_REPORT).exists());
}

fn bounded_config(url: &str) -> ReportConfig {
    let mut cfg = config(url);
    cfg.total_timeout_secs = 2;
    cfg.attempt_timeout_secs = 1;
    cfg
}

#[test]
fn a_closed_port_costs_at_most_the_bound() {
    let (_dir, root) = fixture_root();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = bounded_config(&format!("http://127.0.0.1:{port}/r"));
    let start = Instant::now();
    let err = sender(&root, &cfg)
        .unwrap()
        .send(&finished_report(&root))
        .unwrap_err();
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_millis(3000), "took {elapsed:?}");
    assert!(format!("{err:#}").contains("gave up after"), "{err:#}");
}

#[test]
fn a_hanging_receiver_costs_at_most_the_bound() {
    let (_dir, root) = fixture_root();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = bounded_config(&format!("http://{}/r", listener.local_addr().unwrap()));
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let held = accepted.clone();
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let t = thread::spawn(move || {
        while !stop2.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((conn, _)) => held.lock().unwrap().push(conn), // never answered
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    let start = Instant::now();
    let outcome = deliver_with(&root, sender(&root, &cfg), &finished_report(&root));
    let elapsed = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    t.join().unwrap();
    assert!(elapsed < Duration::from_millis(3000), "took {elapsed:?}");
    assert!(
        elapsed >= Duration::from_secs(1),
        "an attempt waits its timeout: {elapsed:?}"
    );
    assert!(accepted.lock().unwrap().len() >= 2, "timeouts are retried");
    assert!(
        matches!(outcome, DeliveryOutcome::StoredPending { .. }),
        "{outcome:?}"
    );
}

#[test]
fn undelivered_report_is_kept_then_resent_and_removed() {
    let (_dir, root) = fixture_root();
    let down = Scripted::start(&[500, 500, 500, 500, 500, 500]);
    let mut cfg = bounded_config(&down.url);
    cfg.total_timeout_secs = 1;
    let doc = finished_report(&root);
    let outcome = deliver_with(&root, sender(&root, &cfg), &doc);
    assert!(
        matches!(outcome, DeliveryOutcome::StoredPending { .. }),
        "{outcome:?}"
    );
    let pending = root.path(PENDING_REPORT);
    let stored = fs::read(&pending).unwrap();
    assert_eq!(stored, doc.to_json());
    assert_eq!(
        fs::metadata(&pending).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(fs::read(root.path(LAST_REPORT)).unwrap(), stored);
    drop(down);

    // A started report that fails is not kept.
    let started = RunFacts::gather(&root, b"", 22).started(Firewall::Unknown);
    let closed = bounded_config("http://127.0.0.1:9/r");
    let outcome = deliver_with(&root, sender(&root, &closed), &started);
    assert!(
        matches!(outcome, DeliveryOutcome::Undelivered { .. }),
        "{outcome:?}"
    );
    assert_eq!(
        fs::read(&pending).unwrap(),
        stored,
        "pending report untouched"
    );

    let still_down = Scripted::start(&[503, 503, 503, 503, 503, 503]);
    let mut cfg = bounded_config(&still_down.url);
    cfg.total_timeout_secs = 1;
    let outcome = resend_pending_with(&root, sender(&root, &cfg));
    assert!(
        matches!(outcome, ResendOutcome::StillPending { .. }),
        "{outcome:?}"
    );
    assert!(still_down.count() >= 2 && pending.exists());
    drop(still_down);
    let up = Scripted::start(&[200]);
    let cfg = config(&up.url);
    assert_eq!(
        resend_pending_with(&root, sender(&root, &cfg)),
        ResendOutcome::Resent
    );
    assert_eq!(up.seen.lock().unwrap()[0].body, stored);
    assert!(!pending.exists());
    assert_eq!(resend_pending(&root, &cfg), ResendOutcome::NothingPending);
    assert_eq!(up.count(), 1);
}

/// A `MakeWriter` collecting everything tracing prints.
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

/// Everything any test in this binary logs from the moment this is first called. A global
/// subscriber, not `with_default`: tracing caches per-callsite interest across threads, so a
/// thread-scoped subscriber can miss events that other tests' threads hit first.
fn global_log_sink() -> Sink {
    static SINK: std::sync::OnceLock<Sink> = std::sync::OnceLock::new();
    SINK.get_or_init(|| {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        sink
    })
    .clone()
}

#[test]
fn no_secret_in_any_output() {
    let (dir, root) = fixture_root();
    fs::write(root.path("/etc/brickup-token"), format!("{TOKEN}\n")).unwrap();
    let rx = Scripted::start_with(&[500, 500, 401], true);
    let mut cfg = bounded_config(&rx.url);
    cfg.total_timeout_secs = 1;
    cfg.token = None;
    cfg.token_file = Some("/etc/brickup-token".into());
    let sink = global_log_sink();
    let s = sender(&root, &cfg).unwrap();
    let sender_debug = format!("{s:?}");
    let doc = finished_report(&root);
    let err = s.send(&doc).unwrap_err();
    let outcome = deliver_with(&root, sender(&root, &cfg), &doc);
    assert!(
        rx.count() >= 4,
        "the receiver saw the secrets: {}",
        rx.count()
    );
    assert!(
        rx.seen.lock().unwrap()[0]
            .header("Authorization")
            .unwrap()
            .contains(TOKEN),
        "the token was really sent, so its absence below means something"
    );
    let logs = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let this_test = format!(
        "not delivered: sending the report to {}",
        rx.url.replace("?key=q", "")
    );
    assert!(logs.contains(&this_test), "captured logs: {logs}");
    let mut outputs = vec![
        logs,
        format!("{cfg:?}"),
        format!("{:?}", config("https://e.com")),
        sender_debug,
        format!("{err}"),
        format!("{err:#}"),
        format!("{err:?}"),
        format!("{outcome:?}"),
        format!("{}", Secret::new(TOKEN)),
    ];
    for file in [PENDING_REPORT, LAST_REPORT] {
        outputs.push(fs::read_to_string(root.path(file)).unwrap());
    }
    for out in &outputs {
        assert!(
            !out.contains(TOKEN) && !out.contains(HMAC),
            "secret leaked in: {out}"
        );
    }
    assert!(
        format!("{err:#}").contains("[redacted]"),
        "the echoed header was cut: {err:#}"
    );
    drop(dir);
}

#[test]
fn fingerprints_match_ssh_keygen() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path());
    let ssh = root.path("/etc/ssh");
    fs::create_dir_all(&ssh).unwrap();
    for kind in ["ed25519", "ecdsa", "rsa"] {
        let key = ssh.join(format!("ssh_host_{kind}_key"));
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-N", "", "-C", "test@host", "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen (Debian: openssh-client) is installed");
        assert!(st.success());
    }
    let keys = identity::host_key_fingerprints(&root).unwrap();
    assert_eq!(keys.len(), 3);
    let types: Vec<&str> = keys.iter().map(|k| k.key_type.as_str()).collect();
    assert_eq!(types, ["ecdsa-sha2-nistp256", "ssh-ed25519", "ssh-rsa"]);
    for (kind, key) in ["ecdsa", "ed25519", "rsa"].iter().zip(&keys) {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(ssh.join(format!("ssh_host_{kind}_key.pub")))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let expected = text.split_whitespace().nth(1).unwrap();
        assert_eq!(key.fingerprint, expected, "{kind}: ssh-keygen says {text}");
    }
}

#[test]
fn identity_sources_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path());
    assert!(identity::instance_id(&root).is_err());
    let layers = [
        ("/etc/machine-id", "machine\n"),
        ("/sys/class/dmi/id/product_uuid", "dmi-uuid\n"),
        ("/var/lib/cloud/data/instance-id", "cached-id\n"),
        ("/run/cloud-init/.instance-id", "  \n"),
    ];
    let mut expected = "";
    for (path, text) in layers {
        let p = root.path(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        if !text.trim().is_empty() {
            expected = text.trim();
        }
        assert_eq!(
            identity::instance_id(&root).unwrap(),
            expected,
            "after {path}"
        );
    }
    assert_eq!(expected, "cached-id", "a blank file is skipped");

    let p = root.path("/usr/lib/os-release");
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, "ID=arch\n").unwrap();
    assert_eq!(
        identity::os_release(&root).unwrap(),
        ("arch".into(), String::new())
    );
    assert!(identity::hostname(&root).is_err(), "no /etc/hostname");
    assert!(identity::host_key_fingerprints(&root).unwrap().is_empty());
}

/// `openssl s_server` with a fresh self-signed certificate on a free loopback port.
struct TlsServer {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    fn start() -> TlsServer {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let st = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl (Debian: openssl) is installed");
        assert!(st.success());
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let server = TlsServer {
            child,
            port,
            _dir: dir,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("openssl s_server did not start on port {port}");
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_untrusted_certificate_is_final_not_retried() {
    let (_dir, root) = fixture_root();
    let tls = TlsServer::start();
    let mut cfg = config(&format!("https://127.0.0.1:{}/r", tls.port));
    cfg.total_timeout_secs = 10;
    // A retry would sleep at least 1 s (2 s base, jitter down to half).
    let s = Sender::new(&root, &cfg)
        .unwrap()
        .with_backoff_base(Duration::from_secs(2));
    let start = Instant::now();
    let err = s.send(&finished_report(&root)).unwrap_err();
    let elapsed = start.elapsed();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("TLS handshake refused") && msg.contains("certificate"),
        "{msg}"
    );
    assert!(
        elapsed < Duration::from_secs(1),
        "retried? took {elapsed:?}: {msg}"
    );
}

/// `brickup receive` on a free loopback port, verifying signatures with `secret_file`.
fn receiver(secret_file: &Path, out: &Path) -> (common::Killer, u16) {
    let port = common::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_brickup"))
        .args(["receive", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--hmac-secret-file")
        .arg(secret_file)
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let killer = common::Killer(child);
    for _ in 0..250 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (killer, port);
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("brickup receive did not listen on {port}");
}

/// Replace every occurrence of `what` in the document's strings by `with`.
fn mask(doc: &mut Value, what: &str, with: &str) {
    match doc {
        Value::String(s) => *s = s.replace(what, with),
        Value::Array(a) => a.iter_mut().for_each(|v| mask(v, what, with)),
        Value::Object(o) => o.values_mut().for_each(|v| mask(v, what, with)),
        _ => {}
    }
}

/// A real apply on a copy of the test rootfs (real sshd -t/-T in the chroot, real apt-get from
/// the local repository, the fixture csf served on 127.0.0.1 and verified), reporting to a real
/// `brickup receive`: the finished report it stored is the snapshot. Only what must vary is
/// masked: times, durations, the version, the rootfs build's host key fingerprints, and the
/// values that carry the local ports (the config's hash, checked here first) or the fixture's
/// hash. A change to the step list, an outcome or a message changes the snapshot.
#[test]
fn the_report_of_a_real_apply_matches_the_snapshot() {
    let work = tempfile::tempdir().unwrap();
    let tarball = common::fixture_tarball(work.path());
    let csf_sha = common::sha256(&tarball);
    let csf_url = common::serve(tarball);
    let root = common::rootfs_with_local_repo();
    let r = root.path();
    // Looks like a cloud VM to brickup's identity lookups.
    let id = r.join("run/cloud-init/.instance-id");
    fs::create_dir_all(id.parent().unwrap()).unwrap();
    fs::write(&id, "i-0snapshot\n").unwrap();
    let key = r.join("etc/brickup/report.key");
    fs::create_dir_all(key.parent().unwrap()).unwrap();
    fs::write(&key, format!("{HMAC}\n")).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let stored = work.path().join("reports.jsonl");
    let (_rx, port) = receiver(&key, &stored);

    let cfg = work.path().join("brickup.yaml");
    let text = format!(
        "version: 1\nssh:\n  port: 2222\n  authorized_keys:\n    - {}\nfirewall:\n  masternode_ports: [pivx]\ncsf:\n  url: {csf_url}\n  sha256: {csf_sha}\n  allow_http: true\nreport:\n  url: http://127.0.0.1:{port}/brickup\n  allow_http: true\n  hmac_secret_file: /etc/brickup/report.key\n",
        HOST_KEY.trim().replace("root@fixture", "owner@laptop")
    );
    fs::write(&cfg, &text).unwrap();
    fs::set_permissions(&cfg, fs::Permissions::from_mode(0o600)).unwrap();
    let o = common::brickup(&[
        "apply",
        "--root",
        r.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--report",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();

    let lines = fs::read_to_string(&stored).unwrap();
    let reports: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events: Vec<&str> = reports
        .iter()
        .map(|d| d["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["started", "finished"], "{lines}");
    let mut doc = reports[1].clone();
    assert_eq!(
        doc["steps"], summary["steps"],
        "the report carries apply's steps"
    );
    assert_eq!(doc["status"], summary["status"]);
    assert_eq!(doc["configSha256"], common::sha256(&cfg));
    assert!(!lines.contains(HMAC), "the secret stays out of the report");

    doc["configSha256"] = "<sha256 of the config, which names the local ports>".into();
    for k in doc["hostKeys"].as_array_mut().unwrap() {
        assert!(k["fingerprint"].as_str().unwrap().starts_with("SHA256:"));
        k["fingerprint"] = "<the rootfs build's>".into();
    }
    mask(&mut doc, &csf_sha, "<fixture csf sha256>");
    mask(&mut doc, r.to_str().unwrap(), "<root>");
    assert_snapshot("report_finished.json", doc);
}

/// A secret the config names by file that the node lacks (an empty one, or none at all), and a
/// missing CA file: the run is refused before any change (exit 2, the field named), not run
/// with its reports kept pending in silence. `plan` and `check` refuse the same way.
#[test]
fn a_named_file_the_node_cannot_read_is_refused_before_any_change() {
    let root = common::copy_rootfs();
    let r = root.path();
    let before = fs::read_to_string(r.join("etc/ssh/sshd_config")).unwrap();
    fs::create_dir_all(r.join("etc/brickup")).unwrap();
    fs::write(r.join("etc/brickup/empty.key"), "\n").unwrap();
    let base = format!(
        "version: 1\nssh:\n  port: 2222\n  authorized_keys:\n    - {}\n",
        HOST_KEY.trim()
    );
    let cases = [
        (
            "report:\n  url: https://example.invalid/hook\n  hmac_secret_file: /etc/brickup/report.key\n",
            "report.hmac_secret_file",
            "No such file",
        ),
        (
            "report:\n  url: https://example.invalid/hook\n  token_file: /etc/brickup/empty.key\n",
            "report.token_file",
            "is empty",
        ),
        (
            "csf:\n  url: https://example.invalid/csf.tgz\n  sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n  ca_file: /etc/brickup/mirror-ca.pem\n",
            "csf.ca_file",
            "No such file",
        ),
    ];
    for (section, field, why) in cases {
        let cfg = r.join("etc/brickup/brickup.yaml");
        fs::write(&cfg, format!("{base}{section}")).unwrap();
        for cmd in ["apply", "plan", "check"] {
            let o = common::brickup(&[cmd, "--root", r.to_str().unwrap()]);
            let out = common::text(&o);
            assert_eq!(o.status.code(), Some(2), "{cmd} {field}: {out}");
            assert!(out.contains(field) && out.contains(why), "{cmd}: {out}");
            assert!(out.contains("nothing was changed"), "{cmd}: {out}");
        }
        assert_eq!(
            fs::read_to_string(r.join("etc/ssh/sshd_config")).unwrap(),
            before
        );
        assert!(!r.join("etc/ssh/sshd_config.d/00-brickup.conf").exists());
    }
}
