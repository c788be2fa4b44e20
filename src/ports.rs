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
    Ok(listening_sockets()?.into_iter().map(|(p, _)| p).collect())
}

/// (port, socket inode) of every LISTEN socket in /proc/net/tcp and tcp6.
fn listening_sockets() -> Result<Vec<(u16, String)>> {
    let mut sockets = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match std::fs::read_to_string(f) {
            Ok(t) => sockets.extend(listening_inodes(&t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {f}")),
        }
    }
    Ok(sockets)
}

/// The ports in LISTEN state (`st` 0A) in the text of a /proc/net/tcp or tcp6 file.
pub fn listening_in(text: &str) -> impl Iterator<Item = u16> {
    listening_inodes(text).into_iter().map(|(p, _)| p)
}

/// The TCP ports sshd itself listens on: LISTEN sockets held by a process named `sshd`, or by
/// PID 1 (systemd holding `ssh.socket`'s listener) when the port is one of `socket_ports`. Read
/// from the kernel (the sockets' inodes in /proc/net/tcp{,6} against /proc/PID/fd), so no rule
/// of the firewall can hide a port from it - unlike a banner probe, which the loaded rules can
/// drop even on the loopback interface.
pub(crate) fn sshd_listening_ports(socket_ports: &[u16]) -> Result<Vec<u16>> {
    let listening = listening_sockets()?;
    let mut ports = Vec::new();
    let procs = std::fs::read_dir("/proc").context("reading /proc")?;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let sshd = comm.trim_end() == "sshd";
        if !sshd && pid != 1 {
            continue;
        }
        // A process can exit under us: what cannot be read is not listening.
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
            else {
                continue;
            };
            for (port, _) in listening.iter().filter(|(_, i)| i == inode) {
                if sshd || socket_ports.contains(port) {
                    ports.push(*port);
                }
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}

/// (port, socket inode) of each LISTEN line (`st` 0A) of a /proc/net/tcp or tcp6 text.
fn listening_inodes(text: &str) -> Vec<(u16, String)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9 && cols[3] == "0A" {
                let port = u16::from_str_radix(cols[1].rsplit(':').next()?, 16).ok()?;
                Some((port, cols[9].to_string()))
            } else {
                None
            }
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_lines_give_port_and_inode() {
        // Shaped like /proc/net/tcp (proc(5)): a listener on 0.0.0.0:2222 (0x08AE), one on
        // 127.0.0.1:631, and an established connection, which is not a listener.
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41234 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555 1 0000000000000000 100 0 0 10 0
   2: 0F02000A:08AE 0202000A:CE2C 01 00000000:00000000 02:000A7B1A 00000000     0        0 41300 4 0000000000000000 20 4 29 10 -1
";
        assert_eq!(
            listening_inodes(text),
            vec![(2222, "41234".to_string()), (631, "555".to_string())]
        );
        assert_eq!(listening_in(text).collect::<Vec<_>>(), vec![2222, 631]);
    }
}
