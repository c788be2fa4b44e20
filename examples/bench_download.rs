//! Serves <MB> MiB of generated data from a 127.0.0.1 server thread, fetches it with
//! `fetch_verified` and prints wall time and peak RSS: memory must stay flat whatever the size.
//!
//! `cargo run --release --example bench_download -- <MB>`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use brickup::download::{fetch_verified, FetchOptions, Sha256Digest};
use sha2::{Digest as _, Sha256};

const CHUNK: usize = 64 * 1024;
const SEED: u64 = 0x0062_7269_636b_7570;

/// Feeds `bytes` of seeded pseudo-random data to `sink` chunk by chunk, never all at once.
fn generate(bytes: u64, mut sink: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let mut rng = fastrand::Rng::with_seed(SEED);
    let mut buf = vec![0u8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        rng.fill(&mut buf[..n]);
        sink(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

fn serve_one(listener: TcpListener, bytes: u64) -> Result<()> {
    let (mut stream, _) = listener.accept().context("accepting")?;
    skip_request_head(&mut stream)?;
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {bytes}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;
    generate(bytes, |chunk| Ok(stream.write_all(chunk)?))
}

fn skip_request_head(stream: &mut TcpStream) -> Result<()> {
    let mut tail = [0u8; 4];
    let mut byte = [0u8; 1];
    while &tail != b"\r\n\r\n" {
        stream
            .read_exact(&mut byte)
            .context("reading the request")?;
        tail.rotate_left(1);
        tail[3] = byte[0];
    }
    Ok(())
}

fn peak_rss_kb() -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?;
    let kb = line
        .split_whitespace()
        .nth(1)
        .context("malformed VmHWM line")?;
    kb.parse().with_context(|| format!("parsing {line:?}"))
}

fn main() -> Result<()> {
    let mb: u64 = std::env::args()
        .nth(1)
        .context("usage: bench_download <MB>")?
        .parse()
        .context("MB must be a whole number")?;
    let bytes = mb * 1024 * 1024;

    let mut hasher = Sha256::new();
    generate(bytes, |chunk| {
        hasher.update(chunk);
        Ok(())
    })?;
    let expected = Sha256Digest(hasher.finalize().into());

    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1")?;
    let url = format!("http://{}/blob", listener.local_addr()?);
    let server = std::thread::spawn(move || serve_one(listener, bytes));

    let cache = tempfile::tempdir().context("creating a temp cache dir")?;
    let opts = FetchOptions {
        allow_http: true,
        max_size: bytes,
        attempts: 1,
        backoff: Duration::from_millis(10),
        ..FetchOptions::default()
    };
    let start = Instant::now();
    let path = fetch_verified(&url, &expected, cache.path(), &opts)?;
    let wall = start.elapsed().as_secs_f64();
    server.join().expect("server thread panicked")?;

    let size = std::fs::metadata(&path)?.len();
    anyhow::ensure!(size == bytes, "stored {size} bytes, expected {bytes}");
    println!(
        "size_mb={mb} wall_s={wall:.3} peak_rss_kb={}",
        peak_rss_kb()?
    );
    Ok(())
}
