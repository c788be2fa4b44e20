//! What a run needs to know about the host, gathered once before any step changes anything;
//! steps plan from the config and these facts. What the files under the root say is read when
//! the [`Context`] is made ([`Facts::read`]); what only the running system can answer (commands,
//! sockets) is asked once after that ([`Facts::ask`], through `Context::with_facts`).
//!
//! Only what cannot change during a run is a fact. What a step changes stays a live read where
//! it is used: csf's running state and TESTING flag (csf is installed and enabled by steps),
//! ufw's and firewalld's (csf's installer masks firewalld, the install step disables both), the
//! sshd config and the ports sshd listens on (the sshd step rewrites and restarts it), and whether
//! ssh.service is running (restarts stop and start it).

use std::time::Duration;

use anyhow::{anyhow, Result};

use crate::config::Config;
use crate::os::Os;
use crate::passwd::{passwd_user, User};
use crate::root::Root;
use crate::sshd::crypto::OpensshVersion;
use crate::sshd::effective::Probe;

/// The host as found at the start of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// Ports other than `ssh.port` on which sshd answers now. A port move keeps sshd (and every
    /// active firewall) on them until the whole run has succeeded, so no failure in between can
    /// leave the owner without a way in.
    pub old_ssh_ports: Vec<u16>,
    /// A global IPv6 address is configured (`firewall.ipv6: auto` turns csf's IPv6 on then).
    pub(crate) global_ipv6: bool,
    /// OS family and package tool, or why there is none (unsupported, unreadable): the steps
    /// that need it fail with that.
    pub(crate) os: Result<Os, String>,
    /// The target's OpenSSH (`sshd -V` of the root's own sshd): the SSH crypto is chosen by it.
    pub(crate) openssh: Option<OpensshVersion>,
    /// `ssh.user`'s passwd entry (uid, gid, home, shell), or why it could not be found.
    pub(crate) user: Result<User, String>,
    /// The `AuthorizedKeysFile` entry sshd's config names first (outside Match blocks), as
    /// found: where the key step installs the key.
    pub(crate) authorized_keys_file: Result<String, String>,
    /// sshd's service unit: `ssh` (Debian, Ubuntu) when `ssh.service` is installed, else `sshd`.
    pub(crate) sshd_service: &'static str,
    /// sshd is socket-activated: `ssh.socket` is active (in `firstboot --early`, before sshd's
    /// first start: enabled). Asked only on the running machine; Err: systemctl could not be asked
    /// (the sshd step fails with it when it needs the answer).
    pub sshd_socket: Result<bool, String>,
    /// TCP ports of the package sources configured under the root: an enforcing csf keeps them
    /// open in TCP_OUT (no step changes the sources).
    pub(crate) mirror_ports: Vec<u16>,
    /// The csf version installed before the run (`/etc/csf/version.txt` beside `/usr/sbin/csf`).
    pub(crate) csf_version: Option<String>,
}

impl Facts {
    /// What the files under the root say; never runs a command or opens a socket.
    pub(crate) fn read(root: &Root, config: &Config) -> Facts {
        let sshd_service = if crate::systemd::unit_exists(root, "ssh.service") {
            "ssh"
        } else {
            "sshd"
        };
        Facts {
            old_ssh_ports: Vec::new(),
            global_ipv6: false,
            os: crate::os::detect(root).map_err(flat),
            openssh: None,
            user: wanted_user(root, config),
            authorized_keys_file: crate::sshd::files::authorized_keys_file(root).map_err(flat),
            sshd_service,
            sshd_socket: Ok(false),
            mirror_ports: crate::mirrors::mirror_ports(root),
            csf_version: crate::csf::installed::installed_version(root),
        }
    }

    /// Ask the running system. Under a root other than `/` nothing is running to ask: only the
    /// installed sshd is. Early at boot (before sshd first starts) no port is asked.
    pub(crate) fn ask(&mut self, probe: &Probe, live: bool, early: bool) -> Result<()> {
        self.openssh = openssh_version(probe);
        if live {
            self.sshd_socket = sshd_socket(probe, early).map_err(flat);
            self.global_ipv6 = std::fs::read_to_string("/proc/net/if_inet6")
                .map(|t| crate::csf::installed::has_global_ipv6(&t))
                .unwrap_or(false);
            if !early {
                self.old_ssh_ports = old_ssh_ports(probe);
            }
        }
        Ok(())
    }

    pub(crate) fn os(&self) -> Result<Os> {
        self.os.clone().map_err(|e| anyhow!(e))
    }

    /// Read `ssh.user` again (the user step may just have created it).
    pub(crate) fn reread_user(&mut self, root: &Root, config: &Config) {
        self.user = wanted_user(root, config);
    }

    pub(crate) fn user(&self) -> Result<&User> {
        self.user.as_ref().map_err(|e| anyhow!(e.clone()))
    }

    pub(crate) fn sshd_socket(&self) -> Result<bool> {
        self.sshd_socket.clone().map_err(|e| anyhow!(e))
    }

    pub(crate) fn authorized_keys_file(&self) -> Result<&str> {
        self.authorized_keys_file
            .as_deref()
            .map_err(|e| anyhow!(e.clone()))
    }
}

/// An error as one line (its whole chain), to keep in a fact that is reported later.
fn flat(e: anyhow::Error) -> String {
    format!("{e:#}")
}

/// `ssh.user` as found, or as `ssh.create_user` will make it.
fn wanted_user(root: &Root, config: &Config) -> Result<User, String> {
    let name = &config.ssh.user;
    match passwd_user(root, name) {
        Ok(Some(u)) => Ok(u),
        Ok(None) => match &config.ssh.create_user {
            Some(create) => Ok(User::planned(name, &create.shell)),
            None => Err(format!("user {name:?} not found in /etc/passwd")),
        },
        Err(e) => Err(flat(e)),
    }
}

/// Is sshd socket-activated? Before its first start (`--early`) the socket is not active yet:
/// whether it is enabled says how sshd will start.
fn sshd_socket(probe: &Probe, early: bool) -> Result<bool> {
    if !crate::systemd::unit_exists(probe.root, "ssh.socket") {
        return Ok(false);
    }
    Ok(if early {
        crate::systemd::is_enabled(probe.runner, "ssh.socket")?
    } else {
        crate::systemd::is_active(probe.runner, "ssh.socket")?
    })
}

/// `sshd -V` of the target's sshd (older releases print the version in their usage text).
fn openssh_version(probe: &Probe) -> Option<OpensshVersion> {
    let cmd = crate::sshd::files::sshd_cmd(probe.root)?;
    match probe.runner.run(&cmd.arg("-V")) {
        Ok(out) => OpensshVersion::parse(&format!("{}\n{}", out.stderr, out.stdout)),
        Err(e) => {
            tracing::warn!("asking sshd for its version: {e:#}");
            None
        }
    }
}

/// sshd's ports now (its effective config, the socket override, and the default 22) that answer
/// with an SSH banner, other than the configured one.
fn old_ssh_ports(probe: &Probe) -> Vec<u16> {
    let wanted = probe.ssh.port.get();
    let mut candidates = crate::sshd::effective::current_ports(probe);
    candidates.push(22);
    candidates.sort_unstable();
    candidates.dedup();
    candidates
        .into_iter()
        .filter(|p| *p != wanted)
        .filter(|p| crate::ports::answers(*p, Duration::from_millis(500)))
        .collect()
}
