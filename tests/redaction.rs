//! URLs with credentials (userinfo, presigned query strings) never show their secret parts in a
//! plan, a failed download or a failed report delivery: not on stdout, stderr, in logs, errors
//! or the stored report. Servers run on 127.0.0.1 only.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

mod common;

use brickup::download::{fetch_verified, FetchOptions, Sha256Digest};
use brickup::report::{self, ReportConfig, RunFacts, Sender};
use brickup::root::Root;

const USER: &str = "user-Sx1";
const PASSWORD: &str = "pw-Sx2-SECRET";
const SIGNATURE: &str = "sig-Sx3-SECRET";

fn leaked(text: &str) -> bool {
    [USER, PASSWORD, SIGNATURE].iter().any(|s| text.contains(s))
}

fn assert_clean(what: &str, text: &str) {
    assert!(
        !leaked(text),
        "a secret part of a URL leaked in {what}:\n{text}"
    );
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

impl Sink {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Everything logged by this test binary (global subscriber: see tests/report.rs for why).
fn logs() -> Sink {
    static SINK: OnceLock<Sink> = OnceLock::new();
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

/// A server on 127.0.0.1 answering every request with the raw HTTP `response`.
fn serve(response: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            read_head(&mut s);
            let _ = s.write_all(response.as_bytes());
        }
    });
    port
}

fn read_head(s: &mut TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn credentialed(port: u16) -> String {
    format!("http://{USER}:{PASSWORD}@127.0.0.1:{port}/csf.tgz?X-Amz-Signature={SIGNATURE}&x=1")
}

#[test]
fn failed_downloads_show_no_credentials() {
    let sink = logs();
    let unavailable = serve("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
    let redirect: &'static str = Box::leak(
        format!(
            "HTTP/1.1 302 Found\r\nLocation: {}\r\nContent-Length: 0\r\n\r\n",
            credentialed(closed_port())
        )
        .into_boxed_str(),
    );
    let redirecting = serve(redirect);
    let opts = FetchOptions {
        allow_http: true,
        attempts: 2,
        backoff: Duration::from_millis(10),
        ..Default::default()
    };
    let digest: Sha256Digest = "00".repeat(32).parse().unwrap();
    for port in [unavailable, closed_port(), redirecting] {
        let cache = tempfile::tempdir().unwrap();
        let url = credentialed(port);
        let err = fetch_verified(&url, &digest, cache.path(), &opts).unwrap_err();
        let shown = format!("{err}\n{err:#}\n{err:?}");
        assert_clean("the download error", &shown);
        assert!(
            shown.contains(&format!("http://***@127.0.0.1:{port}/csf.tgz?***")),
            "the error still names the redacted URL: {shown}"
        );
    }
    let logged = sink.text();
    assert!(logged.contains("download failed, retrying"), "{logged}");
    assert_clean("the logs", &logged);
}

fn fixture_root() -> (tempfile::TempDir, Root) {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path());
    (dir, root)
}

#[test]
fn failed_report_deliveries_show_no_credentials() {
    let sink = logs();
    let (_dir, root) = fixture_root();
    let failing = serve("HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n");
    let redirect: &'static str = Box::leak(
        format!(
            "HTTP/1.1 307 Moved\r\nLocation: {}\r\nContent-Length: 0\r\n\r\n",
            credentialed(closed_port())
        )
        .into_boxed_str(),
    );
    let redirecting = serve(redirect);
    let facts = RunFacts::gather(&root, b"config", 2222);
    let doc = facts.finished(
        Vec::new(),
        report::Firewall::Off,
        None,
        time::OffsetDateTime::now_utc(),
    );
    for port in [failing, closed_port(), redirecting] {
        let mut cfg = ReportConfig::new(format!("http://127.0.0.1:{port}/hook?sig={SIGNATURE}"));
        cfg.total_timeout_secs = 1;
        cfg.attempt_timeout_secs = 1;
        let sender =
            || Sender::new(&root, &cfg).map(|s| s.with_backoff_base(Duration::from_millis(10)));
        let s = sender().unwrap();
        let err = s.send(&doc).unwrap_err();
        let outcome = report::deliver_with(&root, sender(), &doc);
        let shown = format!("{err}\n{err:#}\n{err:?}\n{outcome:?}\n{s:?}");
        assert_clean("the delivery error", &shown);
        assert!(
            shown.contains(&format!("http://127.0.0.1:{port}/hook?***")),
            "{shown}"
        );
        let pending = std::fs::read_to_string(root.path(report::PENDING_REPORT)).unwrap();
        assert_clean("the pending report", &pending);
    }
    // A URL that is refused before sending is not echoed either.
    let cfg = ReportConfig::new(format!("https://{USER}:{PASSWORD}@[::1/r?sig={SIGNATURE}"));
    let err = Sender::new(&root, &cfg).unwrap_err();
    assert_clean("the refused URL", &format!("{err:#}"));
    let logged = sink.text();
    assert!(logged.contains("status report not delivered"), "{logged}");
    assert_clean("the logs", &logged);
}

#[test]
fn plan_shows_no_credentials() {
    let root = tempfile::tempdir().unwrap();
    common::plan_root(root.path());
    let csf_url =
        format!("https://{USER}:{PASSWORD}@127.0.0.1:9/csf.tgz?X-Amz-Signature={SIGNATURE}");
    let text = format!(
        "version: 1\nupdates:\n  enabled: false\nssh:\n  port: 2222\n  password_authentication: true\n\
         csf:\n  url: \"{csf_url}\"\n  sha256: {}\n\
         report:\n  url: \"https://example.invalid/r?token={SIGNATURE}\"\n",
        "ab".repeat(32)
    );
    let cfg = root.path().join("brickup.yaml");
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_brickup"))
        .args(["plan", "--root"])
        .arg(root.path())
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("download https://***@127.0.0.1:9/csf.tgz?*** and verify")
            && stdout.contains("POST started/finished to https://example.invalid/r?***"),
        "the plan names the redacted URLs:\n{stdout}\n{stderr}"
    );
    assert_clean("plan's stdout", &stdout);
    assert_clean("plan's stderr", &stderr);
    assert!(!Path::new(&root.path().join("var/lib/brickup/cache")).exists());
}
