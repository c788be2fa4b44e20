//! This machine's TCP ports as the kernel and a client see them: which are in LISTEN state
//! (`/proc/net/tcp`, `/proc/net/tcp6`, proc(5)) and whether an SSH server answers on one (its
//! banner, RFC 4253 section 4.2). Always the running system, never a root: what listens changes
//! during a run (sshd moves), so callers ask when they need to know.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

/// TCP ports in LISTEN state, from /proc/net/tcp and tcp6.
pub fn listening_ports() -> Result<Vec<u16>> {
    let mut ports = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {f}")),
        };
        ports.extend(listening_in(&text));
    }
    Ok(ports)
}

/// The ports in LISTEN state (`st` 0A) in the text of a /proc/net/tcp or tcp6 file.
pub fn listening_in(text: &str) -> impl Iterator<Item = u16> + '_ {
    text.lines().skip(1).filter_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() > 3 && cols[3] == "0A" {
            let port = cols[1].rsplit(':').next()?;
            u16::from_str_radix(port, 16).ok()
        } else {
            None
        }
    })
}

/// Wait for an SSH banner on 127.0.0.1:port.
pub(crate) fn answers(port: u16, within: Duration) -> bool {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let start = Instant::now();
    while start.elapsed() < within {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
            let mut buf = [0u8; 4];
            if s.read_exact(&mut buf).is_ok() && &buf == b"SSH-" {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    false
}
