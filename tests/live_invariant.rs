//! The lockout invariant as a property over configs and faults, on live roots
//! (tests/common/live.rs): after any `brickup apply` - success or failure, exit 0, 2 or 3 - some
//! port on which sshd listens with key auth is accepted by the active firewall, and the
//! configured key is in a file the effective sshd config reads for the user.
//!
//! The invariant is judged from outside, with one real `ssh` key login from the host side of the
//! veth: a login proves all three parts at once. Each case boots a fresh root and runs 1-3
//! applies whose configs proptest draws (SSH port: a fresh high port, 22, or the previous apply's;
//! masternode ports; IPv6; password logins; an extra package that installs, or one that the repo
//! lacks so apt fails after sshd moved; a right or wrong csf sha256) and whose faults it injects
//! (csftest FATAL, a failing `csf -r`, one failing restart of `ssh.service`, a crashing lfd).
//! Once an apply has completed the sshd step with password logins off, a password login must be
//! refused; a last plain apply with a good config must converge (`check` exits 0).
//!
//! Bounded for CI: `LIVE_INVARIANT_CASES` cases (default 7, each a first boot plus its applies),
//! a fixed seed (`LIVE_INVARIANT_SEED` varies it), no shrinking (`LIVE_INVARIANT_SHRINK=N`
//! allows N shrink iterations; each re-runs whole roots). `LIVE_INVARIANT_CASE=K` runs only
//! case K of the seed's sequence (to reproduce one). Every case prints one line; the last line is
//! `invariant: N cases, N applies, N lockouts`. Needs root, like tests/live_root.rs.

mod common;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use common::live::{LiveConfig, LiveRoot};
use common::text;

/// Chosen (LIVE_INVARIANT_DRY_RUN=1 lists a seed's cases) so the default run has every fault, a
/// port move after csf enforces that apt then fails, and a failed sshd restart during a move.
const DEFAULT_SEED: u64 = 199;
const DEFAULT_CASES: u32 = 8;
const FATAL: &str =
    "csf will not function on this server due to FATAL errors from missing modules [ip_tables]";
/// In the local apt repository, not a csf prerequisite.
const LOCAL_PACKAGE: &str = "xz-utils";
const MISSING_PACKAGE: &str = "brickup-no-such-package";
const DASH: u16 = 9999;
const PIVX: u16 = 51472;

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

#[derive(Debug, Clone)]
struct Step {
    port: PortChoice,
    masternode: Vec<u16>,
    ipv6: bool,
    password: bool,
    extra: Extra,
    good_sha: bool,
    fault: Fault,
}

/// One apply as run: the drawn step with its port resolved.
struct Resolved<'a>(&'a Step, u16);

impl fmt::Display for Resolved<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Resolved(s, port) = self;
        let onoff = |b: bool| if b { "on" } else { "off" };
        write!(
            f,
            "{{port {port} ({:?}), mn {:?}, v6 {}, pw {}, extra {:?}, sha {}, fault {:?}}}",
            s.port,
            s.masternode,
            onoff(s.ipv6),
            onoff(s.password),
            s.extra,
            if s.good_sha { "ok" } else { "WRONG" },
            s.fault
        )
    }
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
    )
        .prop_map(
            |(port, masternode, ipv6, password, extra, good_sha, fault)| Step {
                port,
                masternode,
                ipv6,
                password,
                extra,
                good_sha,
                fault,
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
    /// Every violation (lockout or other), with its reproduction.
    violations: Vec<String>,
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
fn run_case(k: u32, steps: &[Step], tally: &mut Tally) -> (String, Vec<String>) {
    let lr = LiveRoot::new("live_invariant");
    let mut line = Vec::new();
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
        if got_in.is_none() {
            // A locked-out root tells nothing more.
            return (line.join("; "), violations);
        }
        // A refused config (exit 2) changed nothing: sshd stays where it was.
        if code != Some(2) {
            previous = Some(port);
        }
    }

    // The faults gone and the config good, a plain apply converges.
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
    let result = runner.run(&prop::collection::vec(step_strategy(), 1..=3), |steps| {
        let k = seq.get() + 1;
        seq.set(k);
        if only.is_some_and(|o| o != k) {
            return Ok(());
        }
        if dry {
            eprintln!("case {k}: {}", describe(&steps));
            return Ok(());
        }
        let t0 = Instant::now();
        let mut t = tally.borrow_mut();
        t.cases += 1;
        let (line, violations) = run_case(k, &steps, &mut t);
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
    eprintln!(
        "invariant: {} cases, {} applies, {} lockouts ({} violations, seed {seed}, {:.0} s wall)",
        t.cases,
        t.applies,
        t.lockouts,
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
