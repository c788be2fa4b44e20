//! The lockout invariant as a property over configs, host firewalls and faults, on live roots
//! (tests/common/live.rs): after any `brickup apply` - success or failure, exit 0, 2 or 3 - the
//! owner can log in. Judged from outside, with one real `ssh` key login from the host side of the
//! veth (a login proves at once that sshd listens with key auth, that the active packet filters
//! let it through and that the key is in a file the effective sshd config reads for the user);
//! while every apply so far was refused before any change (so the owner's key was never
//! installed), the provider's root password on 22 - the owner's way in before brickup - counts.
//!
//! Each case boots a fresh root, leaves a provider's packet filter in it (drawn: none; plain
//! iptables, nft backend, INPUT policy DROP with 22 open; the same in iptables-legacy's tables;
//! a native nftables `table inet provider`, input hook, policy drop, 22 open - ufw and firewalld
//! are not in the test apt repository), then runs 1-3 applies whose configs proptest draws (SSH
//! port: a fresh high port, 22, or the previous apply's; masternode ports; IPv6; password logins;
//! an extra package that installs, or one that the repo lacks so apt fails after sshd moved; a
//! right or wrong csf sha256; 0-3 `ssh.settings` from sshd's own keyword list, [`SSHD_KEYWORDS`],
//! values from each keyword's documented range, the ones brickup owns or refuses included) and
//! whose faults it injects (csftest FATAL, a failing `csf -r`, one failing restart of
//! `ssh.service`, a crashing lfd). Once an apply has completed the sshd step with password logins
//! off, a password login must be refused; a last plain apply with a good config must converge
//! (`check` exits 0). [`the_keyword_table_is_sshds`] keeps the keyword table equal to what the
//! root's sshd prints and judges.
//!
//! Bounded for CI: `LIVE_INVARIANT_CASES` cases (default 8, each a first boot plus its applies),
//! a fixed seed (`LIVE_INVARIANT_SEED` varies it), no shrinking (`LIVE_INVARIANT_SHRINK=N`
//! allows N shrink iterations; each re-runs whole roots). `LIVE_INVARIANT_CASE=K` runs only
//! case K of the seed's sequence (to reproduce one); `LIVE_INVARIANT_DRY_RUN=1` lists the seed's
//! cases without running them (filter on `no_apply_locks_the_owner_out` to skip the keyword
//! table's root). Every case prints one line; the last line is `invariant: N cases, N applies, N
//! lockouts, N drawn settings (N keywords), N foreign firewalls (...)`. Needs root, like
//! tests/live_root.rs.

mod common;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use common::live::{LiveConfig, LiveRoot};
use common::text;

/// Chosen (LIVE_INVARIANT_DRY_RUN=1 lists a seed's cases) so the default run has every fault; a
/// port move after csf enforces that apt then fails; a failed sshd restart during a move; each
/// provider filter (nftables and iptables-legacy refused on a move, plain iptables replaced once
/// csf enforces); drawn settings sshd refuses the owner with (ChrootDirectory /run/sshd, which
/// only a session shows, and KexAlgorithms diffie-hellman-group1-sha1), harmless ones that
/// converge (DenyGroups nogroup, ...), and ones brickup refuses up front (AuthorizedKeysFile,
/// AuthorizedKeysCommand, PasswordAuthentication).
const DEFAULT_SEED: u64 = 13171;
const DEFAULT_CASES: u32 = 8;
const FATAL: &str =
    "csf will not function on this server due to FATAL errors from missing modules [ip_tables]";
/// In the local apt repository, not a csf prerequisite.
const LOCAL_PACKAGE: &str = "xz-utils";
const MISSING_PACKAGE: &str = "brickup-no-such-package";
const DASH: u16 = 9999;
const PIVX: u16 = 51472;

/// The values the invariant draws for one sshd keyword, from sshd_config(5)'s range for it:
/// `ok` ones sshd takes (`sshd -T -f FILE` exits 0 with the line `KEYWORD VALUE` as FILE), `bad`
/// ones it will not start with (a typo, a file that is not there). `$ADDR4` is the root's own
/// address.
#[derive(Debug, Clone, Copy)]
struct Draw {
    ok: &'static [&'static str],
    bad: &'static [&'static str],
}

const fn ok(ok: &'static [&'static str]) -> Draw {
    Draw { ok, bad: &[] }
}

const fn ok_bad(ok: &'static [&'static str], bad: &'static [&'static str]) -> Draw {
    Draw { ok, bad }
}

const YN: Draw = ok(&["yes", "no"]);
const OWN4: &str = "$ADDR4";

/// sshd's keywords as the test root's sshd (Debian 12, OpenSSH 9.2p1) knows them: every one
/// `sshd -T` prints there, lower case, plus those it prints only when set and the ones brickup
/// owns or refuses (brickup then refuses the config, exit 2). Kept complete by
/// [`the_keyword_table_is_sshds`]. Every keyword is drawn: none models the harness rather than an
/// operator (the systemctl shim runs ssh.service as Type=notify, so PidFile is fair; the test's
/// client pins no host key, so HostKey and HostKeyAlgorithms are). Values include ones that lock
/// the owner out unless brickup sees it: groups and users root is not, algorithm lists without
/// ed25519 or without what a default client offers, AuthenticationMethods brickup cannot prove,
/// MaxSessions 0, ChrootDirectory or ForceCommand that leave no shell, loopback or IPv6-only
/// listeners, a RevokedKeys file that is not there, a second `Subsystem sftp`.
const SSHD_KEYWORDS: &[(&str, Draw)] = &[
    ("acceptenv", ok(&["LANG LC_*", "*", "BRICKUP_TEST"])),
    ("addressfamily", ok(&["any", "inet", "inet6"])),
    ("allowagentforwarding", YN),
    (
        "allowgroups",
        ok(&["root", "sshusers", "root sshusers", "r*t", "*", "nogroup"]),
    ),
    (
        "allowstreamlocalforwarding",
        ok(&["yes", "all", "no", "local", "remote"]),
    ),
    (
        "allowtcpforwarding",
        ok(&["yes", "all", "no", "local", "remote"]),
    ),
    (
        "allowusers",
        ok(&[
            "root",
            "admin",
            "root admin",
            "r?ot",
            "root@192.0.2.0/24",
            "root@*",
        ]),
    ),
    (
        "authenticationmethods",
        ok(&[
            "any",
            "publickey",
            "password",
            "publickey,password",
            "keyboard-interactive",
            "publickey password",
        ]),
    ),
    ("authorizedkeyscommand", ok_bad(&["none"], &["/bin/true"])),
    ("authorizedkeyscommanduser", ok(&["nobody", "root"])),
    (
        "authorizedkeysfile",
        ok(&[
            ".ssh/authorized_keys",
            ".ssh/authorized_keys .ssh/authorized_keys2",
            "/etc/ssh/keys/%u",
        ]),
    ),
    (
        "authorizedprincipalscommand",
        ok_bad(&["none"], &["/bin/true"]),
    ),
    ("authorizedprincipalscommanduser", ok(&["nobody", "root"])),
    (
        "authorizedprincipalsfile",
        ok(&["none", "/etc/ssh/principals/%u"]),
    ),
    (
        "banner",
        ok(&["none", "/etc/issue.net", "/etc/no-such-banner"]),
    ),
    (
        "casignaturealgorithms",
        ok(&["ssh-ed25519", "rsa-sha2-512,rsa-sha2-256", "-ssh-ed25519"]),
    ),
    ("challengeresponseauthentication", YN),
    (
        "channeltimeout",
        ok(&["session=5m", "agent-connection=1h", "none"]),
    ),
    ("chrootdirectory", ok(&["none", "/run/sshd", "%h"])),
    (
        "ciphers",
        ok(&[
            "aes256-gcm@openssh.com",
            "chacha20-poly1305@openssh.com,aes128-ctr",
            "+aes128-cbc",
            "-chacha20-poly1305@openssh.com",
            "3des-cbc",
        ]),
    ),
    ("clientalivecountmax", ok(&["0", "3", "10"])),
    ("clientaliveinterval", ok(&["0", "15", "300"])),
    ("compression", ok(&["yes", "no", "delayed"])),
    ("debianbanner", YN),
    ("denygroups", ok(&["root", "sshusers", "nogroup"])),
    (
        "denyusers",
        ok(&["root", "admin", "nobody admin", "root@192.0.2.0/24"]),
    ),
    ("disableforwarding", YN),
    ("exposeauthinfo", YN),
    ("fingerprinthash", ok(&["md5", "sha256"])),
    (
        "forcecommand",
        ok(&["none", "internal-sftp", "/bin/true", "echo forced"]),
    ),
    ("gatewayports", ok(&["no", "yes", "clientspecified"])),
    ("gssapiauthentication", YN),
    ("gssapicleanupcredentials", YN),
    (
        "gssapikexalgorithms",
        ok(&[
            "gss-curve25519-sha256-",
            "gss-group14-sha256-,gss-gex-sha1-",
        ]),
    ),
    ("gssapikeyexchange", YN),
    ("gssapistorecredentialsonrekey", YN),
    ("gssapistrictacceptorcheck", YN),
    (
        "hostbasedacceptedalgorithms",
        ok(&["ssh-ed25519", "rsa-sha2-512,rsa-sha2-256"]),
    ),
    ("hostbasedauthentication", YN),
    ("hostbasedusesnamefrompacketonly", YN),
    ("hostcertificate", ok(&["/etc/ssh/no-such-cert.pub"])),
    (
        "hostkey",
        ok_bad(
            &["/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_rsa_key"],
            &["/etc/ssh/no-such-host-key"],
        ),
    ),
    (
        "hostkeyagent",
        ok(&["none", "SSH_AUTH_SOCK", "/run/no-such-agent.sock"]),
    ),
    (
        "hostkeyalgorithms",
        ok(&[
            "ssh-ed25519",
            "rsa-sha2-512,rsa-sha2-256",
            "ecdsa-sha2-nistp521",
            "-ssh-ed25519",
        ]),
    ),
    ("ignorerhosts", ok(&["yes", "no", "shosts-only"])),
    ("ignoreuserknownhosts", YN),
    ("include", ok(&["/etc/ssh/no-such-extra.conf"])),
    (
        "ipqos",
        ok(&["af21 cs1", "lowdelay throughput", "none", "ef"]),
    ),
    ("kbdinteractiveauthentication", YN),
    ("kerberosauthentication", YN),
    ("kerberosorlocalpasswd", YN),
    ("kerberosticketcleanup", YN),
    (
        "kexalgorithms",
        ok(&[
            "curve25519-sha256",
            "sntrup761x25519-sha512@openssh.com,curve25519-sha256",
            "diffie-hellman-group14-sha256",
            "diffie-hellman-group1-sha1",
            "-curve25519-sha256,curve25519-sha256@libssh.org",
        ]),
    ),
    (
        "listenaddress",
        ok(&["0.0.0.0", "127.0.0.1", OWN4, "::", "0.0.0.0:22"]),
    ),
    ("logingracetime", ok(&["0", "30", "2m", "600"])),
    (
        "loglevel",
        ok(&[
            "QUIET", "FATAL", "ERROR", "INFO", "VERBOSE", "DEBUG", "DEBUG2", "DEBUG3",
        ]),
    ),
    (
        "macs",
        ok(&[
            "hmac-sha2-256-etm@openssh.com",
            "umac-128-etm@openssh.com,hmac-sha2-512",
            "hmac-md5",
            "-hmac-sha1",
        ]),
    ),
    ("match", ok(&["User nobody", "Address 192.0.2.0/24"])),
    ("maxauthtries", ok(&["1", "2", "3", "4", "5", "6"])),
    ("maxsessions", ok(&["0", "1", "10"])),
    ("maxstartups", ok(&["10:30:100", "1", "3:50:10"])),
    (
        "modulifile",
        ok(&["/etc/ssh/moduli", "/etc/ssh/no-such-moduli"]),
    ),
    ("passwordauthentication", YN),
    ("permitemptypasswords", YN),
    ("permitlisten", ok(&["any", "none", "localhost:8080"])),
    ("permitopen", ok(&["any", "none", "localhost:8080"])),
    (
        "permitrootlogin",
        ok(&[
            "yes",
            "prohibit-password",
            "without-password",
            "forced-commands-only",
            "no",
        ]),
    ),
    ("permittty", YN),
    (
        "permittunnel",
        ok(&["yes", "no", "point-to-point", "ethernet"]),
    ),
    ("permituserenvironment", ok(&["yes", "no", "LANG,LC_*"])),
    ("permituserrc", YN),
    ("persourcemaxstartups", ok(&["none", "1", "10"])),
    ("persourcenetblocksize", ok(&["32", "24:56", "32:128"])),
    (
        "pidfile",
        ok(&["/run/sshd.pid", "none", "/run/sshd-other.pid"]),
    ),
    ("port", ok(&["22", "2222"])),
    ("printlastlog", YN),
    ("printmotd", YN),
    (
        "pubkeyacceptedalgorithms",
        ok(&[
            "ssh-ed25519",
            "ssh-ed25519,rsa-sha2-512",
            "rsa-sha2-512,rsa-sha2-256",
            "-ssh-ed25519",
            "+ssh-rsa",
            "ssh-ed25519-cert-v01@openssh.com",
            "sk-ssh-ed25519@openssh.com",
        ]),
    ),
    ("pubkeyauthentication", YN),
    (
        "pubkeyauthoptions",
        ok(&["none", "touch-required", "verify-required"]),
    ),
    ("rekeylimit", ok(&["default none", "1G 1h", "512M"])),
    ("requiredrsasize", ok(&["1024", "2048", "4096"])),
    (
        "revokedkeys",
        ok(&["none", "/etc/ssh/no-such-revoked-keys", "/dev/null"]),
    ),
    ("securitykeyprovider", ok(&["internal"])),
    ("setenv", ok(&["BRICKUP=1", "LANG=C"])),
    ("streamlocalbindmask", ok(&["0177", "0000"])),
    ("streamlocalbindunlink", YN),
    ("strictmodes", YN),
    ("subsystem", ok(&["sftp internal-sftp", "backup /bin/true"])),
    (
        "syslogfacility",
        ok(&["AUTH", "AUTHPRIV", "DAEMON", "USER", "LOCAL0", "LOCAL7"]),
    ),
    ("tcpkeepalive", YN),
    (
        "trustedusercakeys",
        ok(&["none", "/etc/ssh/no-such-ca.pub"]),
    ),
    ("unusedconnectiontimeout", ok(&["none", "10m", "30s"])),
    ("usedns", YN),
    ("usepam", YN),
    ("versionaddendum", ok(&["none", "brickup-test"])),
    ("x11displayoffset", ok(&["10", "50"])),
    ("x11forwarding", YN),
    ("x11uselocalhost", YN),
    ("xauthlocation", ok(&["/usr/bin/xauth", "none"])),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum PortChoice {
    Fresh(u16),
    Default,
    Previous,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Extra {
    None,
    Local,
    Missing,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    CsftestFatal,
    FailReload,
    SshRestartOnce,
    LfdCrash,
}

/// A packet filter a provider left before brickup's first apply (issue 20's list; ufw and
/// firewalld are not in the test apt repository). Each lets 22 in and drops the rest.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Provider {
    None,
    /// `iptables` (the nft backend): INPUT policy DROP, 22 accepted.
    Iptables,
    /// The same rules in iptables-legacy's tables, beside the nft backend csf loads.
    Legacy,
    /// A native nftables `table inet provider` with an input hook, policy drop, 22 accepted (and
    /// ICMPv6, without which the host would have no IPv6 at all).
    Nftables,
}

const DROP_BUT_22: &str = "{T} -A INPUT -i lo -j ACCEPT && \
     {T} -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT && \
     {T} -A INPUT -p tcp --dport 22 -j ACCEPT && {T} -P INPUT DROP";
const PROVIDER_NFT: &str = "table inet provider {\n  chain input {\n    \
     type filter hook input priority 0; policy drop;\n    iif lo accept\n    \
     ct state established,related accept\n    meta l4proto ipv6-icmp accept\n    \
     tcp dport 22 accept\n  }\n}\n";
/// A port the provider's filter does not open: the control that it drops.
const CLOSED: u16 = 2999;

#[derive(Debug, Clone)]
struct Step {
    port: PortChoice,
    masternode: Vec<u16>,
    ipv6: bool,
    password: bool,
    extra: Extra,
    good_sha: bool,
    fault: Fault,
    /// `ssh.settings`, drawn from [`SSHD_KEYWORDS`] (values before `$ADDR4` is filled in).
    settings: Vec<(&'static str, &'static str)>,
}

/// One apply as run: the drawn step with its port resolved.
struct Resolved<'a>(&'a Step, u16);

impl fmt::Display for Resolved<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Resolved(s, port) = self;
        let onoff = |b: bool| if b { "on" } else { "off" };
        write!(
            f,
            "{{port {port} ({:?}), mn {:?}, v6 {}, pw {}, extra {:?}, sha {}, fault {:?}",
            s.port,
            s.masternode,
            onoff(s.ipv6),
            onoff(s.password),
            s.extra,
            if s.good_sha { "ok" } else { "WRONG" },
            s.fault
        )?;
        if !s.settings.is_empty() {
            let set: Vec<String> = s.settings.iter().map(|(k, v)| format!("{k} {v}")).collect();
            write!(f, ", set [{}]", set.join("; "))?;
        }
        write!(f, "}}")
    }
}

/// One `ssh.settings` entry: a keyword of [`SSHD_KEYWORDS`] and one of its values.
fn setting_strategy() -> impl Strategy<Value = (&'static str, &'static str)> {
    let rows: Vec<(&'static str, Vec<&'static str>)> = SSHD_KEYWORDS
        .iter()
        .map(|(k, Draw { ok, bad })| (*k, ok.iter().chain(bad.iter()).copied().collect()))
        .collect();
    prop::sample::select(rows)
        .prop_flat_map(|(k, values)| prop::sample::select(values).prop_map(move |v| (k, v)))
}

/// 0-3 settings, one value per keyword (`ssh.settings` is a map).
fn settings_strategy() -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
    prop::collection::vec(setting_strategy(), 0..=3).prop_map(|mut v| {
        let mut seen = Vec::new();
        v.retain(|(k, _)| {
            let first = !seen.contains(k);
            seen.push(*k);
            first
        });
        v
    })
}

fn provider_strategy() -> impl Strategy<Value = Provider> {
    prop_oneof![
        2 => Just(Provider::None),
        1 => Just(Provider::Iptables),
        1 => Just(Provider::Legacy),
        1 => Just(Provider::Nftables),
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    let port = prop_oneof![
        3 => (1025u16..65000).prop_map(PortChoice::Fresh),
        1 => Just(PortChoice::Default),
        1 => Just(PortChoice::Previous),
    ];
    let masternode = prop_oneof![
        1 => Just(vec![]),
        2 => Just(vec![DASH]),
        1 => Just(vec![PIVX]),
    ];
    let extra = prop_oneof![
        3 => Just(Extra::None),
        1 => Just(Extra::Local),
        1 => Just(Extra::Missing),
    ];
    let fault = prop_oneof![
        3 => Just(Fault::None),
        1 => Just(Fault::CsftestFatal),
        1 => Just(Fault::FailReload),
        1 => Just(Fault::SshRestartOnce),
        1 => Just(Fault::LfdCrash),
    ];
    (
        port,
        masternode,
        any::<bool>(),
        prop::bool::weighted(0.15),
        extra,
        prop::bool::weighted(0.8),
        fault,
        settings_strategy(),
    )
        .prop_map(
            |(port, masternode, ipv6, password, extra, good_sha, fault, settings)| Step {
                port,
                masternode,
                ipv6,
                password,
                extra,
                good_sha,
                fault,
                settings,
            },
        )
}

fn env_num<T: std::str::FromStr>(name: &str) -> Option<T> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
    )
}

/// What the whole run found; a case adds to it.
#[derive(Default)]
struct Tally {
    cases: u32,
    applies: u32,
    lockouts: u32,
    /// `ssh.settings` entries drawn, and the keywords among them.
    settings: u32,
    keywords: std::collections::BTreeSet<&'static str>,
    /// Cases with each provider's filter (iptables, iptables-legacy, nftables).
    providers: [u32; 3],
    /// Every violation (lockout or other), with its reproduction.
    violations: Vec<String>,
}

impl Tally {
    fn count(&mut self, provider: Provider, steps: &[Step]) {
        self.cases += 1;
        match provider {
            Provider::None => {}
            Provider::Iptables => self.providers[0] += 1,
            Provider::Legacy => self.providers[1] += 1,
            Provider::Nftables => self.providers[2] += 1,
        }
        for (k, _) in steps.iter().flat_map(|s| &s.settings) {
            self.settings += 1;
            self.keywords.insert(k);
        }
    }
}

/// A port that is not 22, a masternode port or one the case used already: brickup refuses an
/// SSH port that is also a masternode port, and "fresh" should mean a move.
fn fresh(mut p: u16, used: &[u16]) -> u16 {
    while [22, DASH, PIVX].contains(&p) || used.contains(&p) {
        p = if p >= 64999 { 1025 } else { p + 1 };
    }
    p
}

fn resolve(choice: PortChoice, previous: Option<u16>, used: &[u16]) -> u16 {
    match (choice, previous) {
        (PortChoice::Fresh(p), _) => fresh(p, used),
        (PortChoice::Default, _) | (PortChoice::Previous, None) => 22,
        (PortChoice::Previous, Some(p)) => p,
    }
}

fn live_config(s: &Step, port: u16, lr: &LiveRoot) -> LiveConfig {
    let mut c = LiveConfig::new(port);
    c.masternode_ports = s.masternode.clone();
    c.ssh_settings = s
        .settings
        .iter()
        .map(|(k, v)| (*k, in_root(lr, v)))
        .collect();
    c.ipv6 = s.ipv6;
    c.password_authentication = s.password;
    c.extra_packages = match s.extra {
        Extra::None => vec![],
        Extra::Local => vec![LOCAL_PACKAGE.into()],
        Extra::Missing => vec![MISSING_PACKAGE.into()],
    };
    if !s.good_sha {
        // Not the tarball's hash (sha256 of nothing).
        c.sha256 =
            Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_string());
        assert_ne!(c.sha256.as_deref(), Some(lr.tarball_sha256.as_str()));
    }
    c
}

/// A drawn value as written for this root: `$ADDR4` becomes its address (leaked: the config
/// takes `&'static str`, and a case draws a handful).
fn in_root(lr: &LiveRoot, v: &'static str) -> &'static str {
    if v.contains(OWN4) {
        Box::leak(v.replace(OWN4, &lr.addr4().to_string()).into_boxed_str())
    } else {
        v
    }
}

/// Leaves the provider's filter in the root before brickup's first apply, and checks that it
/// lets 22 in (the provider's password: no key is installed yet) and drops another port.
fn install_provider(lr: &LiveRoot, p: Provider) {
    let (package, rules) = match p {
        Provider::None => return,
        Provider::Iptables => ("iptables", DROP_BUT_22.replace("{T}", "iptables")),
        Provider::Legacy => ("iptables", DROP_BUT_22.replace("{T}", "iptables-legacy")),
        Provider::Nftables => {
            lr.write("/etc/provider.nft", PROVIDER_NFT);
            ("nftables", "nft -f /etc/provider.nft".to_string())
        }
    };
    lr.must_sh(&format!(
        "apt-get update -q >/dev/null && apt-get install -y -q {package} >/dev/null && {rules}"
    ));
    let o = lr.host_password_ssh(lr.addr4(), 22);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("password-login-ok"),
        "control: the {p:?} filter lets 22 in\n{}",
        text(&o)
    );
    let _listener = lr.listen_inside(CLOSED, false);
    assert!(
        !lr.connects(lr.addr4(), CLOSED, Duration::from_secs(1)),
        "control: the {p:?} filter drops port {CLOSED}"
    );
}

/// Sets the fault up before the apply; returns the environment the apply runs with.
fn inject(lr: &LiveRoot, fault: Fault) -> Vec<(&'static str, &'static str)> {
    match fault {
        Fault::None => vec![],
        Fault::CsftestFatal => vec![("CSF_FIXTURE_CSFTEST_RESULT", FATAL)],
        Fault::FailReload => {
            lr.write("/etc/csf/fixture-fail-reload", "");
            vec![]
        }
        Fault::SshRestartOnce => {
            lr.fail_next("restart", "ssh.service", 1);
            vec![]
        }
        Fault::LfdCrash => {
            lr.write("/etc/csf/fixture-lfd-crash", "1\n");
            vec![]
        }
    }
}

/// Takes every fault away again (the next apply sees a healthy machine unless it injects one).
fn clear_faults(lr: &LiveRoot) {
    lr.must_sh(
        "rm -f /etc/csf/fixture-fail-reload /etc/csf/fixture-lfd-crash /run/shim/fail.*.* \
         /etc/csf/fixture-csftest-result",
    );
}

/// The ports to try a key login on: the expected ones first, then whatever else listens.
fn candidates(lr: &LiveRoot, first: &[u16]) -> Vec<u16> {
    let mut ports: Vec<u16> = first.to_vec();
    for p in lr.listening_ports() {
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    ports.dedup();
    ports
}

/// The first port on which a real key login from the host side works.
fn way_in(lr: &LiveRoot, first: &[u16]) -> Option<u16> {
    let a = lr.addr4();
    candidates(lr, first)
        .into_iter()
        .find(|p| lr.key_login_works(a, *p))
}

/// The owner's way in while brickup has not installed their key (every apply so far was refused
/// before any change): the provider's password on 22, as before brickup.
fn provider_way_in(lr: &LiveRoot) -> bool {
    let blob = lr.public_key.split_whitespace().nth(1).expect("a key line");
    let installed = std::fs::read_to_string(lr.path("/root/.ssh/authorized_keys"))
        .is_ok_and(|keys| keys.contains(blob));
    let o = lr.host_password_ssh(lr.addr4(), 22);
    !installed && String::from_utf8_lossy(&o.stdout).contains("password-login-ok")
}

/// Whether a password login on `port` is refused by sshd ("Permission denied").
fn password_refused(lr: &LiveRoot, port: u16) -> Result<(), String> {
    let o = lr.host_password_ssh(lr.addr4(), port);
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success()
        && !out.contains("password-login-ok")
        && err.contains("Permission denied")
    {
        Ok(())
    } else {
        Err(format!(
            "a password login on port {port} was not refused:\n{}",
            text(&o)
        ))
    }
}

/// The outcome of a named step in `apply --json`'s summary.
fn outcome<'v>(summary: &'v serde_json::Value, step: &str) -> Option<&'v str> {
    summary["steps"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == step)?["outcome"]
        .as_str()
}

fn short_error(o: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    let line = err
        .lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .unwrap_or("");
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= 200 {
        return line.to_string();
    }
    let head: String = chars[..110].iter().collect();
    let tail: String = chars[chars.len() - 80..].iter().collect();
    format!("{head} ... {tail}")
}

/// The case's applies with their ports resolved as [`run_case`] would (when none is refused).
fn describe(steps: &[Step]) -> String {
    let mut used = Vec::new();
    let mut previous = None;
    let mut out = Vec::new();
    for s in steps {
        let port = resolve(s.port, previous, &used);
        used.push(port);
        previous = Some(port);
        out.push(Resolved(s, port).to_string());
    }
    out.join(" ; ")
}

/// Runs one case on a fresh root. Returns the case's line and any violations.
fn run_case(
    k: u32,
    provider: Provider,
    steps: &[Step],
    tally: &mut Tally,
) -> (String, Vec<String>) {
    let lr = LiveRoot::new("live_invariant");
    install_provider(&lr, provider);
    tally.count(provider, steps);
    let mut line = vec![format!("provider {provider:?}")];
    let mut violations = Vec::new();
    let mut previous: Option<u16> = None;
    let mut used: Vec<u16> = Vec::new();
    // Some(true): password logins must be refused (an apply completed sshd with them off).
    let mut password_off: Option<bool> = None;
    let mut repro = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let port = resolve(s.port, previous, &used);
        used.push(port);
        let what = Resolved(s, port).to_string();
        repro.push(what.clone());
        lr.configure(&live_config(s, port, &lr));
        let env = inject(&lr, s.fault);
        let (o, summary) = lr.apply_env(&env);
        tally.applies += 1;
        let code = o.status.code();
        clear_faults(&lr);
        if let Some(sshd) = outcome(&summary, "sshd") {
            if matches!(sshd, "changed" | "unchanged") {
                password_off = Some(!s.password);
            }
        }
        let mut first = vec![port];
        first.extend(previous);
        first.push(22);
        let got_in = way_in(&lr, &first);
        let provider_in = got_in.is_none() && provider_way_in(&lr);
        let mut verdict = format!("apply {} {what} -> exit {code:?}", i + 1);
        if code != Some(0) {
            verdict.push_str(&format!(" [{}]", short_error(&o)));
        }
        match got_in {
            Some(p) => {
                verdict.push_str(&format!(", key login on {p}"));
                if password_off == Some(true) {
                    if let Err(e) = password_refused(&lr, p) {
                        verdict.push_str(", PASSWORD ACCEPTED");
                        violations.push(format!(
                            "case {k}, apply {}: {e}\napplies: {}\n{}",
                            i + 1,
                            repro.join(" ; "),
                            text(&o)
                        ));
                    } else {
                        verdict.push_str(", password refused");
                    }
                }
            }
            None if provider_in => verdict.push_str(", no key yet: the provider's password on 22"),
            None => {
                verdict.push_str(", LOCKED OUT");
                tally.lockouts += 1;
                violations.push(format!(
                    "LOCKOUT in case {k} after apply {} (exit {code:?}): no port of {:?} takes a \
                     key login from outside\napplies: {}\n--- brickup:\n{}\n--- root:\n{}",
                    i + 1,
                    candidates(&lr, &first),
                    repro.join(" ; "),
                    text(&o),
                    lr.diagnostics()
                ));
            }
        }
        if !matches!(code, Some(0 | 2 | 3)) {
            verdict.push_str(", UNEXPECTED EXIT");
            violations.push(format!(
                "case {k}, apply {}: exit {code:?} is none of 0, 2, 3\napplies: {}\n{}",
                i + 1,
                repro.join(" ; "),
                text(&o)
            ));
        }
        line.push(verdict);
        if got_in.is_none() && !provider_in {
            // A locked-out root tells nothing more.
            return (line.join("; "), violations);
        }
        // A refused config (exit 2) changed nothing: sshd stays where it was.
        if code != Some(2) {
            previous = Some(port);
        }
    }

    // The faults gone and the config good, a plain apply converges. A provider's filter is still
    // there, but sshd is on a port it was let through on: every move across a filter brickup
    // does not manage is refused (exit 2, `previous` stays).
    let last = steps.last().expect("1-3 applies");
    let port = previous.unwrap_or(22);
    let mut good = LiveConfig::new(port);
    good.ipv6 = last.ipv6;
    lr.configure(&good);
    let (o, _) = lr.apply();
    tally.applies += 1;
    let check = lr.check();
    let mut verdict = format!(
        "final {{port {port}}} -> exit {:?}, check {:?}",
        o.status.code(),
        check.status.code()
    );
    let converged = o.status.code() == Some(0) && check.status.code() == Some(0);
    let key = lr.key_login_works(lr.addr4(), port);
    if !key {
        verdict.push_str(&format!(", NO KEY LOGIN ON {port}"));
        if way_in(&lr, &[port, 22]).is_none() {
            verdict.push_str(", LOCKED OUT");
            tally.lockouts += 1;
        }
    }
    let pw = password_refused(&lr, port);
    verdict.push_str(match pw {
        Ok(()) => ", password refused",
        Err(_) => ", PASSWORD ACCEPTED",
    });
    if !converged || !key || pw.is_err() {
        violations.push(format!(
            "case {k}: the final plain apply on port {port} did not converge with key login and \
             password refusal\napplies: {}\n--- apply:\n{}\n--- check:\n{}\n{}\n--- root:\n{}",
            repro.join(" ; "),
            text(&o),
            text(&check),
            pw.err().unwrap_or_default(),
            lr.diagnostics()
        ));
    }
    line.push(verdict);
    (line.join("; "), violations)
}

#[test]
fn no_apply_locks_the_owner_out() {
    let started = Instant::now();
    let seed: u64 = env_num("LIVE_INVARIANT_SEED").unwrap_or(DEFAULT_SEED);
    let cases: u32 = env_num("LIVE_INVARIANT_CASES").unwrap_or(DEFAULT_CASES);
    let shrink: u32 = env_num("LIVE_INVARIANT_SHRINK").unwrap_or(0);
    let only: Option<u32> = env_num("LIVE_INVARIANT_CASE");
    let dry = std::env::var_os("LIVE_INVARIANT_DRY_RUN").is_some();
    eprintln!(
        "invariant: seed {seed} (LIVE_INVARIANT_SEED), {cases} cases (LIVE_INVARIANT_CASES){}",
        only.map(|k| format!(", only case {k}")).unwrap_or_default()
    );
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&seed.to_le_bytes());
    }
    let config = Config {
        cases,
        max_shrink_iters: shrink,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let tally = RefCell::new(Tally::default());
    let seq = Cell::new(0u32);
    let cases_strategy = (
        provider_strategy(),
        prop::collection::vec(step_strategy(), 1..=3),
    );
    let result = runner.run(&cases_strategy, |(provider, steps)| {
        let k = seq.get() + 1;
        seq.set(k);
        if only.is_some_and(|o| o != k) {
            return Ok(());
        }
        if dry {
            eprintln!("case {k}: provider {provider:?}; {}", describe(&steps));
            return Ok(());
        }
        let t0 = Instant::now();
        let mut t = tally.borrow_mut();
        let (line, violations) = run_case(k, provider, &steps, &mut t);
        eprintln!("case {k} [{:.0} s]: {line}", t0.elapsed().as_secs_f64());
        let failed = !violations.is_empty();
        t.violations.extend(violations);
        // Without shrinking every case runs and all violations are listed at the end; with
        // it, proptest gets the failure to minimise.
        if failed && shrink > 0 {
            return Err(TestCaseError::fail(format!(
                "case {k} violated the invariant"
            )));
        }
        Ok(())
    });
    let t = tally.into_inner();
    let [ipt, legacy, nft] = t.providers;
    eprintln!(
        "invariant: {} cases, {} applies, {} lockouts, {} drawn settings ({} keywords), {} foreign \
         firewalls (iptables {ipt}, iptables-legacy {legacy}, nftables {nft}) ({} violations, seed \
         {seed}, {:.0} s wall)",
        t.cases,
        t.applies,
        t.lockouts,
        t.settings,
        t.keywords.len(),
        ipt + legacy + nft,
        t.violations.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        t.violations.is_empty(),
        "{} violation(s):\n\n{}",
        t.violations.len(),
        t.violations.join("\n\n")
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The table is sshd's: every keyword the root's sshd prints with `sshd -T` is in it, and sshd
/// judges every drawn value as the table says (`ok` starts, `bad` does not). Fails when the
/// test root's OpenSSH changes under the table.
#[test]
fn the_keyword_table_is_sshds() {
    let lr = LiveRoot::new("live_invariant_keywords");
    let printed = lr.must_sh("/usr/sbin/sshd -T | cut -d' ' -f1 | sort -u");
    let missing: Vec<&str> = printed
        .lines()
        .filter(|k| !SSHD_KEYWORDS.iter().any(|(t, _)| t == k))
        .collect();
    assert!(
        missing.is_empty(),
        "`sshd -T` in the root prints keywords SSHD_KEYWORDS lacks: {missing:?}"
    );
    let mut names: Vec<&str> = SSHD_KEYWORDS.iter().map(|(k, _)| *k).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names.len(),
        SSHD_KEYWORDS.len(),
        "a keyword is listed twice"
    );

    // One sshd -T per drawn value, each with a config file of that one line (Match and Include
    // are not taken as -o options); sshd's first stderr line explains a surprise.
    let mut drawn = Vec::new();
    let mut script = String::from("set -u\n");
    for (k, d) in SSHD_KEYWORDS {
        for (v, want) in
            d.ok.iter()
                .map(|v| (v, true))
                .chain(d.bad.iter().map(|v| (v, false)))
        {
            let v = in_root(&lr, v);
            assert!(!v.contains('\''), "{k} {v}: no quotes in drawn values");
            script.push_str(&format!(
                "echo '{k} {v}' >/tmp/kw.conf; if /usr/sbin/sshd -T -f /tmp/kw.conf >/dev/null \
                 2>/tmp/kw.err; then echo ok; else echo \"bad $(head -n 1 /tmp/kw.err)\"; fi\n"
            ));
            drawn.push((*k, v, want));
        }
    }
    let verdicts = lr.must_sh(&script);
    let verdicts: Vec<&str> = verdicts.lines().collect();
    assert_eq!(verdicts.len(), drawn.len(), "{verdicts:?}");
    let wrong: Vec<String> = drawn
        .iter()
        .zip(&verdicts)
        .filter(|((_, _, want), got)| *want != (**got == "ok"))
        .map(|((k, v, want), got)| {
            let table = if *want { "ok" } else { "bad" };
            format!("{k} {v}: the table says {table}, sshd: {got}")
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "sshd judges drawn values otherwise than SSHD_KEYWORDS:\n{}",
        wrong.join("\n")
    );
    eprintln!(
        "keywords: {} in the table, {} printed by sshd -T, {} values judged by sshd",
        SSHD_KEYWORDS.len(),
        printed.lines().count(),
        drawn.len()
    );
}
