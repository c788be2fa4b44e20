//! The receiver under the load on 127.0.0.1: slow clients (a large Content-Length, one
//! byte of body, held open) connect first, then concurrent senders post signed reports; prints
//! throughput and p50/p99 latency of the valid reports and how many were stored (asserts
//! nothing). The receiver runs with its defaults (64 workers, 10 s read timeout).
//!
//! `cargo run --release --example bench_receive -- [REPORTS=200] [SENDERS=20] [SLOW=50]`

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use brickup::report::receive::{ReceiveOptions, Receiver};
use brickup::report::{self, Firewall, Report, RunFacts, Secret};
use brickup::root::Root;

const KEY: &str = "bench-hmac";

fn arg(n: usize, default: usize) -> Result<usize> {
    std::env::args().nth(n).map_or(Ok(default), |a| {
        a.parse()
            .with_context(|| format!("argument {n} ({a:?}) is not a number"))
    })
}

/// A report like a node's (facts of an empty root read as `unknown`).
fn template(dir: &Path) -> Report {
    let facts = RunFacts::gather(&Root::new(dir), b"bench", 2222);
    facts.finished(
        Vec::new(),
        Firewall::Enforcing,
        None,
        time::OffsetDateTime::now_utc(),
    )
}

/// Announces a 1,000,000-byte body, sends one byte and is kept open by the caller.
fn slow_client(addr: SocketAddr) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).context("connecting a slow client")?;
    let head = "POST / HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\n\
                Content-Length: 1000000\r\n\r\n{";
    stream.write_all(head.as_bytes())?;
    Ok(stream)
}

/// One signed POST of `body` on a new connection; the status code answered.
fn post(addr: SocketAddr, body: &[u8]) -> Result<u16> {
    let ts = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let signature = report::sign(&Secret::new(KEY), ts, body);
    let mut stream = TcpStream::connect(addr).context("connecting a sender")?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: rx\r\nContent-Type: application/json\r\n\
         X-Brickup-Timestamp: {ts}\r\nX-Brickup-Signature: {signature}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .context("reading the answer")?;
    let code = answer.get(9..12).and_then(|c| c.parse().ok());
    code.with_context(|| format!("no status line in {answer:?}"))
}

/// Sends `count` distinct reports one after another: latencies of the 200s, and the refusals.
fn sender(addr: SocketAddr, base: Report, id: usize, count: usize) -> Result<(Vec<f64>, usize)> {
    let (mut latencies, mut refused) = (Vec::with_capacity(count), 0);
    for i in 0..count {
        let mut doc = base.clone();
        doc.instance_id = format!("bench-{id}-{i}");
        let body = doc.to_json();
        let start = Instant::now();
        if post(addr, &body)? == 200 {
            latencies.push(start.elapsed().as_secs_f64() * 1000.0);
        } else {
            refused += 1;
        }
    }
    Ok((latencies, refused))
}

fn percentile(sorted: &[f64], p: usize) -> f64 {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted.get(rank - 1).copied().unwrap_or(f64::NAN)
}

fn main() -> Result<()> {
    let (reports, senders, slow) = (arg(1, 200)?, arg(2, 20)?, arg(3, 50)?);
    let dir = tempfile::tempdir().context("creating a temp dir")?;
    let out = dir.path().join("reports.jsonl");
    let receiver = Receiver::bind("127.0.0.1:0".parse()?)?;
    let addr = receiver.local_addr();
    let opts = ReceiveOptions {
        secret: Some(Secret::new(KEY)),
        ..ReceiveOptions::new(&out)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let server = thread::spawn(move || receiver.run_with(&opts, Some(flag), &mut std::io::sink()));

    let held = (0..slow)
        .map(|_| slow_client(addr))
        .collect::<Result<Vec<_>>>()?;
    let base = template(dir.path());
    let start = Instant::now();
    let threads: Vec<_> = (0..senders)
        .map(|s| {
            let count = reports / senders + usize::from(s < reports % senders);
            let base = base.clone();
            thread::spawn(move || sender(addr, base, s, count))
        })
        .collect();
    let (mut latencies, mut refused) = (Vec::new(), 0);
    for t in threads {
        let (l, r) = t.join().expect("sender thread panicked")?;
        latencies.extend(l);
        refused += r;
    }
    let wall = start.elapsed().as_secs_f64();
    drop(held);
    stop.store(true, Ordering::SeqCst);
    server.join().expect("receiver thread panicked")?;

    let stored = std::fs::read_to_string(&out).map_or(0, |t| t.lines().count());
    latencies.sort_by(f64::total_cmp);
    println!(
        "receive (signed, {slow} slow clients held open): reports={reports} senders={senders} \
         stored={stored} refused={refused} wall_s={wall:.3} reports_per_s={:.0} \
         p50_ms={:.2} p99_ms={:.2}",
        latencies.len() as f64 / wall,
        percentile(&latencies, 50),
        percentile(&latencies, 99)
    );
    Ok(())
}
