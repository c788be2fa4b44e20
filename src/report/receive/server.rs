//! The receiver's listener: one acceptor thread feeding a bounded queue of connections to a
//! fixed pool of worker threads, each of which reads its request within a deadline.
//!
//! Why threads with deadlines, and these numbers: a connection is served start to finish by one
//! worker, which must have the whole request (head and body) within `read_timeout` (10 s by
//! default) or answers 408 and drops it. So a client that sends slowly - or announces a large
//! body and sends one byte - holds one worker for at most that long. With 64 workers, the 50 such
//! connections of the attack in the issue leave 14 workers to real senders, and a report takes a
//! few milliseconds (HMAC, one fsync'd append). Idle workers sleep in read(2); each costs a thread
//! stack that is mostly untouched and a body of at most 1 MiB. Past 64 slow connections, later
//! ones wait in a FIFO queue of 256 and every worker frees itself within the deadline, so each is
//! served within ceil(place / 64) * 10 s; past the queue the acceptor answers 503 with
//! `Retry-After` at once (brickup's sender retries 5xx) instead of letting the backlog grow.
//! An event loop (epoll with per-connection buffers) would make a slow client cost only a socket,
//! but needs an async runtime or raw poll(2); tiny_http, used before, has no read timeouts and a
//! thread per connection without bound. A TLS proxy in front (as the README advises for a fleet)
//! buffers requests itself and takes the brunt of slow clients.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver as Queue, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::handle::Handler;
use super::{http, ReceiveOptions};

/// Connections accepted but not yet picked up by a worker.
const ACCEPT_QUEUE: usize = 256;
/// How often a stop flag is looked at.
const STOP_POLL: Duration = Duration::from_millis(200);

/// A bound receiver; [`Receiver::local_addr`] tells the port when bound to port 0.
pub struct Receiver {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Receiver {
    pub fn bind(listen: SocketAddr) -> Result<Receiver> {
        let listener =
            TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
        let addr = listener
            .local_addr()
            .with_context(|| format!("reading the address of {listen}"))?;
        Ok(Receiver { listener, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `stop` is set (checked at least every 200 ms), or forever, printing one
    /// summary line per accepted report to stdout.
    pub(crate) fn run(&self, opts: &ReceiveOptions, stop: Option<Arc<AtomicBool>>) -> Result<()> {
        self.run_with(opts, stop, &mut std::io::stdout())
    }

    /// [`Receiver::run`], writing the summary lines to `summaries`. Connections accepted before
    /// `stop` is set are still served.
    pub fn run_with(
        &self,
        opts: &ReceiveOptions,
        stop: Option<Arc<AtomicBool>>,
        summaries: &mut (dyn Write + Send),
    ) -> Result<()> {
        if opts.workers == 0 {
            bail!("the receiver needs at least one worker");
        }
        if opts.secret.is_none() && opts.token.is_none() {
            tracing::warn!("receiving reports without a token or HMAC secret: anyone can post");
        }
        tracing::info!("receiving reports on http://{}", self.addr);
        let handler = Handler::new(opts, summaries);
        let done = AtomicBool::new(false);
        let (queue, waiting) = mpsc::sync_channel::<TcpStream>(ACCEPT_QUEUE);
        let waiting = Mutex::new(waiting);
        // `queue` moves into the scope: however it returns, the workers see it gone and stop.
        thread::scope(|s| {
            for i in 0..opts.workers {
                let (waiting, handler) = (&waiting, &handler);
                thread::Builder::new()
                    .name(format!("receive-{i}"))
                    .spawn_scoped(s, move || work(waiting, handler))
                    .context("starting a receiver worker")?;
            }
            if let Some(stop) = stop.as_deref() {
                let (done, wake) = (&done, wake_addr(self.addr));
                s.spawn(move || watch(stop, done, wake));
            }
            let result = self.accept(queue, stop.as_deref());
            done.store(true, Ordering::SeqCst);
            result
        })
    }

    /// Hands accepted connections to the workers until `stop` is set; dropping `queue` on
    /// return lets the workers finish.
    fn accept(&self, queue: SyncSender<TcpStream>, stop: Option<&AtomicBool>) -> Result<()> {
        for conn in self.listener.incoming() {
            if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                break;
            }
            match conn {
                Ok(stream) => match queue.try_send(stream) {
                    Ok(()) => {}
                    Err(TrySendError::Full(stream)) => shed(stream),
                    Err(TrySendError::Disconnected(_)) => bail!("every receiver worker stopped"),
                },
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!("accepting a connection on {}: {e}", self.addr);
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Ok(())
    }
}

fn work(waiting: &Mutex<Queue<TcpStream>>, handler: &Handler) {
    loop {
        let next = waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        match next {
            Ok(stream) => handler.serve_connection(stream),
            Err(_) => return,
        }
    }
}

/// Answers 503 without blocking the acceptor: the answer fits in a new socket's send buffer.
fn shed(mut stream: TcpStream) {
    let peer = http::peer(&stream);
    tracing::warn!("{ACCEPT_QUEUE} connections waiting: answering 503 to {peer}");
    let sent = stream.set_nonblocking(true).and_then(|()| {
        let reason = "too many connections waiting, retry later";
        http::respond(&mut stream, 503, reason, &[("Retry-After", "1")])
    });
    if let Err(e) = sent {
        tracing::debug!("answering 503 to {peer}: {e}");
    }
}

/// Wakes the acceptor (blocked in accept) by connecting to it once `stop` is set.
fn watch(stop: &AtomicBool, done: &AtomicBool, wake: SocketAddr) {
    while !done.load(Ordering::SeqCst) {
        if stop.load(Ordering::SeqCst) {
            if let Err(e) = TcpStream::connect_timeout(&wake, Duration::from_secs(1)) {
                tracing::error!("waking the receiver at {wake} to stop it: {e}");
            }
            return;
        }
        thread::sleep(STOP_POLL);
    }
}

/// Where to connect to reach a listener: its own address, or loopback for a wildcard one.
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}
