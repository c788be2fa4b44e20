//! The engine: runs the steps in their fixed order for `plan`, `apply` and `check`, each apply in
//! its own [`Transaction`] so a failed step restores what it changed, and later steps are skipped.
//!
//! The steps themselves and their order live in [`crate::run`].

use std::time::Instant;

use anyhow::Result;

use crate::config::Config;
pub use crate::drift::Drift;
use crate::facts::Facts;
use crate::fsops::Transaction;
pub use crate::outcome::{Outcome, Status, StepResult};
use crate::root::Root;
use crate::runner::Runner;

/// Everything a step may look at.
#[derive(Clone)]
pub struct Context<'a> {
    pub root: Root,
    pub(crate) config: &'a Config,
    pub(crate) runner: &'a dyn Runner,
    /// Working on the running machine: services may be restarted and live checks run. True
    /// exactly when the root is `/`, except in tests that pair a temp root with a recording runner
    /// ([`Context::set_live`], built only for tests).
    live: bool,
    /// The host as found before the run: the root's files read by [`Context::new`], the running
    /// system asked by [`Context::with_facts`].
    pub facts: Facts,
    /// Set by [`apply`] while the run is in progress: sshd and the firewalls keep
    /// `facts.old_ssh_ports` open beside `ssh.port`. `plan` and `check` see the final state.
    pub(crate) keep_old_ports: bool,
    /// `firstboot --early`: sshd has not started yet (this runs before ssh.service/ssh.socket),
    /// so its config is written and validated but sshd is never restarted.
    pub(crate) early: bool,
}

impl<'a> Context<'a> {
    pub fn new(root: Root, config: &'a Config, runner: &'a dyn Runner) -> Self {
        let live = root.is_live();
        let facts = Facts::read(&root, config);
        Context {
            root,
            config,
            runner,
            live,
            facts,
            keep_old_ports: false,
            early: false,
        }
    }

    /// Ask the running system for the rest of the host's facts, once, before planning,
    /// applying or checking (those the root's files give were read by [`Context::new`]).
    pub(crate) fn with_facts(mut self) -> Result<Self> {
        let probe = crate::sshd::effective::Probe {
            root: &self.root,
            runner: self.runner,
            ssh: &self.config.ssh,
            kept: &[],
        };
        self.facts.ask(&probe, self.live, self.early)?;
        Ok(self)
    }

    pub(crate) fn live(&self) -> bool {
        self.live
    }

    /// Tests only: act as on the running machine under a temp root, with a recording runner.
    #[cfg(any(test, feature = "testing"))]
    pub fn set_live(&mut self, live: bool) {
        self.live = live;
    }

    /// Ports sshd must keep listening on (and the firewalls keep open) besides `ssh.port`.
    /// Every port sshd is to listen on in this run: `ssh.port` first, then the kept ones.
    pub(crate) fn ssh_ports(&self) -> Vec<u16> {
        std::iter::once(self.config.ssh.port.get())
            .chain(self.kept_ssh_ports().iter().copied())
            .collect()
    }

    pub(crate) fn kept_ssh_ports(&self) -> &[u16] {
        if self.keep_old_ports {
            &self.facts.old_ssh_ports
        } else {
            &[]
        }
    }
}

/// A preflight refusal: the config asks for something this host cannot do safely. Nothing was
/// changed; the CLI exits 2, like for an invalid config.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}; nothing was changed")]
pub struct Refused {
    pub field: String,
    pub message: String,
}

impl Refused {
    pub(crate) fn error(field: impl Into<String>, message: impl Into<String>) -> anyhow::Error {
        Refused {
            field: field.into(),
            message: message.into(),
        }
        .into()
    }
}

/// One thing `apply` would do, for `plan`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A file write: host path, old content (empty when new), new content.
    File {
        path: String,
        old: String,
        new: String,
    },
    /// A command apply would run.
    Command(String),
    /// Anything else worth saying.
    Note(String),
}

impl Action {
    /// File actions for (host path, current, wanted) triples, as the steps' `desired` give them.
    pub(crate) fn files(files: Vec<(std::path::PathBuf, String, String)>) -> Vec<Action> {
        files
            .into_iter()
            .map(|(p, old, new)| Action::File {
                path: p.display().to_string(),
                old,
                new,
            })
            .collect()
    }

    /// Unified diff for files, `$ cmd` for commands.
    pub(crate) fn render(&self) -> String {
        match self {
            Action::File { path, old, new } => {
                let diff = similar::TextDiff::from_lines(old, new);
                diff.unified_diff()
                    .context_radius(3)
                    .header(&format!("a{path}"), &format!("b{path}"))
                    .to_string()
            }
            Action::Command(c) => format!("$ {c}\n"),
            Action::Note(n) => format!("# {n}\n"),
        }
    }
}

/// What an apply did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub changed: bool,
    /// Live work left for a run on the machine itself (under a root other than `/`).
    pub(crate) deferred: bool,
    pub message: String,
}

impl Applied {
    pub(crate) fn changed(message: impl Into<String>) -> Self {
        Applied {
            changed: true,
            deferred: false,
            message: message.into(),
        }
    }
    pub(crate) fn unchanged(message: impl Into<String>) -> Self {
        Applied {
            changed: false,
            deferred: false,
            message: message.into(),
        }
    }
    pub(crate) fn deferring(mut self, what: impl AsRef<str>) -> Self {
        self.deferred = true;
        if !self.message.is_empty() {
            self.message.push_str("; ");
        }
        self.message.push_str(what.as_ref());
        self
    }
}

/// A capability brickup converges.
pub trait Step {
    fn name(&self) -> &'static str;
    /// `Some(reason)` when the config leaves this step out.
    fn skip_reason(&self, _cx: &Context) -> Option<String> {
        None
    }
    /// Checks that must pass before anything at all is changed (e.g. a supported OS).
    fn preflight(&self, _cx: &Context) -> Result<()> {
        Ok(())
    }
    /// What apply would do. Read-only; empty when converged.
    fn plan(&self, cx: &Context) -> Result<Vec<Action>>;
    /// Converge. File writes go through `tx`, which the engine rolls back if this fails.
    fn apply(&self, cx: &Context, tx: &mut Transaction) -> Result<Applied>;
    /// Drift of the effective state, one entry each. Read-only.
    fn check(&self, cx: &Context) -> Result<Vec<Drift>>;
    /// Does this step's desired state hold sshd's ports (so a port move's last pass reruns it)?
    /// Whether applying it can change what [`Facts`] read of `ssh.user` (the user step creates
    /// the user): the engine reads the user again after it.
    fn changes_user(&self) -> bool {
        false
    }

    fn holds_ssh_ports(&self) -> bool {
        false
    }
    /// Called by the engine after it rolled back this step's files for `error`: bring running
    /// services back onto the restored files. Some(what was done) when anything was.
    fn recover(&self, _cx: &Context, _error: &anyhow::Error) -> Result<Option<String>> {
        Ok(None)
    }
    /// Called by the engine before the first step and after the last of every apply (success or
    /// failure, whether this step ran or not): when what this step holds keeps the owner from
    /// every port sshd listens on (a firewall someone else reloaded or flushed half-way), put it
    /// right. Some(what was found and done) when anything was; the engine records it.
    fn keep_access(&self, _cx: &Context) -> Result<Option<String>> {
        Ok(None)
    }
}

/// When this brickup process started (the first call; the CLI makes it first thing).
pub fn process_start() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// The result of a whole apply.
#[derive(Debug)]
pub struct RunResult {
    pub steps: Vec<StepResult>,
    /// The first failure, if any.
    pub error: Option<anyhow::Error>,
    /// From [`process_start`] to the end of a successful sshd step, when one ran.
    pub(crate) sshd_done: Option<std::time::Duration>,
    /// Whether a step wrote something, deferred or not (a deferred step that wrote its files
    /// and left the restart to first boot changed the system all the same).
    pub(crate) wrote: bool,
}

impl RunResult {
    pub(crate) fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// The error chain, outermost first.
    pub fn error_chain(&self) -> Option<Vec<String>> {
        self.error
            .as_ref()
            .map(|e| e.chain().map(|c| c.to_string()).collect())
    }

    /// Whether the run changed anything: a step changed, or a deferred step wrote its files.
    pub(crate) fn changed(&self) -> bool {
        self.wrote || self.steps.iter().any(|s| s.outcome == Outcome::Changed)
    }

    /// The steps that left work to do on the live system.
    pub(crate) fn deferred(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|s| s.outcome == Outcome::Deferred)
            .map(|s| s.name.as_str())
            .collect()
    }

    /// The run's status as the report states it.
    pub fn status(&self) -> Status {
        Status::of(&self.steps, self.failed())
    }
}

fn ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// Apply every step; stop at the first failure (its changes rolled back, later steps skipped).
///
/// A port move runs in two passes: the steps run with sshd and the firewalls keeping the old
/// port(s) beside the new one, and only when every step succeeded does a last pass ("port-move")
/// rerun the steps that hold sshd's ports with the final state, closing the old ones. Any failure
/// before that leaves the old port working with keys.
///
/// Before the first step and after the last, every step's [`Step::keep_access`] holds the
/// lockout invariant (the private `keep_access` below).
pub fn apply(cx: &Context, steps: &[Box<dyn Step>]) -> RunResult {
    // First the way in: a node that arrives with rules dropping every sshd port is put right
    // before anything else (they would also fool the preflight's probes on the loopback).
    let mut arrived = Vec::new();
    let mut error = None;
    let acted = keep_access(cx, steps, When::Before, &mut arrived, &mut error);
    if error.is_some() {
        return RunResult {
            steps: arrived,
            error,
            sshd_done: None,
            wrote: false,
        };
    }
    // What the facts saw through those rules (sshd's old ports, by their banners) is stale.
    let refreshed = match acted.then(|| cx.clone().with_facts()).transpose() {
        Ok(c) => c,
        Err(e) => {
            return RunResult {
                steps: arrived,
                error: Some(e.context("asking the host's facts again")),
                sshd_done: None,
                wrote: false,
            }
        }
    };
    let mut run = apply_steps(refreshed.as_ref().unwrap_or(cx), steps);
    arrived.append(&mut run.steps);
    run.steps = arrived;
    run
}

fn apply_steps(cx: &Context, steps: &[Box<dyn Step>]) -> RunResult {
    if let Some(refused) = preflight(cx, steps) {
        return refused;
    }
    // Refreshed below when a step creates the user: the port move and the closing access check
    // log in as the user as it now is.
    let mut cx = cx.clone();
    let mut moving = cx.clone();
    moving.keep_old_ports = true;
    let mut results = Vec::new();
    let mut error = None;
    let mut sshd_done = None;
    let mut wrote = false;
    for step in steps {
        if error.is_some() {
            results.push(not_run(step.name(), "not run: an earlier step failed"));
            continue;
        }
        let (result, w, e) = apply_one(&moving, step.as_ref());
        wrote |= w;
        if step.changes_user() {
            moving.facts.reread_user(&cx.root, cx.config);
            cx.facts.user = moving.facts.user.clone();
        }
        if step.name() == "sshd" && e.is_none() && result.outcome != Outcome::Skipped {
            sshd_done = Some(process_start().elapsed());
        }
        results.push(result);
        error = e;
    }
    if error.is_none() && !cx.facts.old_ssh_ports.is_empty() {
        let (result, w, e) = finish_port_move(&cx, steps);
        wrote |= w;
        results.push(result);
        error = e;
    }
    keep_access(&cx, steps, When::After, &mut results, &mut error);
    RunResult {
        steps: results,
        error,
        sshd_done,
        wrote,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum When {
    Before,
    After,
}

/// The lockout invariant ("some port sshd listens on is accepted by the active firewall"), as
/// every step's [`Step::keep_access`], before the first step and after the last. What one had
/// to do is an "access" entry: before the run a repair (changed), after it a failure that is
/// part of the run's error - never hidden, even after a run that otherwise succeeded. True when
/// anything was done.
fn keep_access(
    cx: &Context,
    steps: &[Box<dyn Step>],
    when: When,
    results: &mut Vec<StepResult>,
    error: &mut Option<anyhow::Error>,
) -> bool {
    let mut acted = false;
    for step in steps {
        let start = Instant::now();
        let (found, failed) = match step.keep_access(cx) {
            Ok(None) => continue,
            Ok(Some(done)) if when == When::Before => (format!("before the run: {done}"), false),
            Ok(Some(done)) => (done, true),
            Err(e) => (
                format!("keeping SSH reachable ({}) failed: {e:#}", step.name()),
                true,
            ),
        };
        acted = true;
        let outcome = if failed {
            tracing::error!(step = step.name(), "access: {found}");
            Outcome::Failed
        } else {
            tracing::warn!(step = step.name(), "access: {found}");
            Outcome::Changed
        };
        results.push(StepResult {
            name: "access".into(),
            outcome,
            duration_ms: ms(start),
            message: found.clone(),
        });
        if failed {
            *error = Some(match error.take() {
                Some(e) => e.context(found),
                None => anyhow::anyhow!(found),
            });
        }
    }
    acted
}

/// Every step's preflight, before anything changes; a refusal fails that step, skips the rest.
pub(crate) fn preflight(cx: &Context, steps: &[Box<dyn Step>]) -> Option<RunResult> {
    let (failed, e) = steps
        .iter()
        .filter(|s| s.skip_reason(cx).is_none())
        .find_map(|s| s.preflight(cx).err().map(|e| (s.name(), e)))?;
    tracing::error!(step = failed, "preflight failed: {e:#}");
    let steps = steps
        .iter()
        .map(|s| match s.name() == failed {
            true => StepResult {
                name: failed.to_string(),
                outcome: Outcome::Failed,
                duration_ms: 0,
                message: format!("{e:#}"),
            },
            false => not_run(
                s.name(),
                "not run: a preflight check failed, nothing was changed",
            ),
        })
        .collect();
    Some(RunResult {
        steps,
        error: Some(e),
        sshd_done: None,
        wrote: false,
    })
}

fn not_run(name: &str, why: &str) -> StepResult {
    StepResult {
        name: name.to_string(),
        outcome: Outcome::Skipped,
        duration_ms: 0,
        message: why.into(),
    }
}

/// One step in its own transaction: committed on success, rolled back on failure.
/// Also whether the step wrote anything (deferred or not).
fn apply_one(cx: &Context, step: &dyn Step) -> (StepResult, bool, Option<anyhow::Error>) {
    let start = Instant::now();
    let name = step.name().to_string();
    if let Some(reason) = step.skip_reason(cx) {
        tracing::info!(step = %name, "skipped: {reason}");
        return (not_run(&name, &reason), false, None);
    }
    tracing::info!(step = %name, "applying");
    let mut tx = Transaction::new(&cx.root);
    match step.apply(cx, &mut tx) {
        Ok(a) => {
            tx.commit();
            let outcome = match (a.changed, a.deferred) {
                (_, true) => Outcome::Deferred,
                (true, false) => Outcome::Changed,
                (false, false) => Outcome::Unchanged,
            };
            tracing::info!(step = %name, ?outcome, "{}", a.message);
            let r = StepResult {
                name,
                outcome,
                duration_ms: ms(start),
                message: a.message,
            };
            (r, a.changed, None)
        }
        Err(e) => {
            let e = match tx.rollback() {
                Ok(()) => match step.recover(cx, &e) {
                    Ok(None) => e,
                    Ok(Some(done)) => e.context(done),
                    Err(r) => e.context(format!("{r:#}")),
                },
                Err(r) => e.context(format!("and restoring the step's files failed: {r:#}")),
            };
            tracing::error!(step = %name, "failed: {e:#}");
            let r = StepResult {
                name,
                outcome: Outcome::Failed,
                duration_ms: ms(start),
                message: format!("{e:#}"),
            };
            (r, false, Some(e))
        }
    }
}

/// The last pass of a port move: the port-holding steps converge to the final state.
fn finish_port_move(
    cx: &Context,
    steps: &[Box<dyn Step>],
) -> (StepResult, bool, Option<anyhow::Error>) {
    let start = Instant::now();
    let old = cx.facts.old_ssh_ports.clone();
    tracing::info!(?old, "applying step=port-move: closing the old SSH port(s)");
    let mut messages = Vec::new();
    let mut outcome = Outcome::Unchanged;
    let mut wrote = false;
    for step in steps.iter().filter(|s| s.holds_ssh_ports()) {
        let (r, w, e) = apply_one(cx, step.as_ref());
        wrote |= w;
        if let Some(e) = e {
            let e = e.context(format!(
                "closing the old SSH port(s) {old:?}: they stay open with key logins"
            ));
            let failed = StepResult {
                name: "port-move".into(),
                outcome: Outcome::Failed,
                duration_ms: ms(start),
                message: format!("{e:#}"),
            };
            return (failed, wrote, Some(e));
        }
        outcome = match (outcome, r.outcome) {
            (Outcome::Deferred, _) | (_, Outcome::Deferred) => Outcome::Deferred,
            (Outcome::Changed, _) | (_, Outcome::Changed) => Outcome::Changed,
            _ => Outcome::Unchanged,
        };
        messages.push(format!("{}: {}", r.name, r.message));
    }
    let done = StepResult {
        name: "port-move".into(),
        outcome,
        duration_ms: ms(start),
        message: format!("old SSH port(s) {old:?} closed; {}", messages.join("; ")),
    };
    (done, wrote, None)
}

/// Plan every step: (step name, actions or the error that stopped planning it).
pub(crate) fn plan(cx: &Context, steps: &[Box<dyn Step>]) -> Vec<(String, Result<Vec<Action>>)> {
    steps
        .iter()
        .map(|s| {
            let r = match s.skip_reason(cx) {
                Some(reason) => Ok(vec![Action::Note(format!("skipped: {reason}"))]),
                None => s.plan(cx),
            };
            (s.name().to_string(), r)
        })
        .collect()
}

/// Check every step: (step name, drift lines). An error reading the state is drift too.
pub(crate) fn check(cx: &Context, steps: &[Box<dyn Step>]) -> Vec<(String, Vec<Drift>)> {
    steps
        .iter()
        .filter(|s| s.skip_reason(cx).is_none())
        .map(|s| {
            let drift = s
                .check(cx)
                .unwrap_or_else(|e| vec![Drift::new(s.name(), format!("could not check: {e:#}"))]);
            (s.name().to_string(), drift)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;
    use std::path::Path;
    use std::rc::Rc;

    use super::*;

    /// A step that counts its applies and answers the access check from a script.
    struct Scripted {
        access: RefCell<VecDeque<Result<Option<String>>>>,
        applies: Rc<Cell<usize>>,
    }

    impl Step for Scripted {
        fn name(&self) -> &'static str {
            "firewall"
        }
        fn plan(&self, _cx: &Context) -> Result<Vec<Action>> {
            Ok(Vec::new())
        }
        fn apply(&self, _cx: &Context, _tx: &mut Transaction) -> Result<Applied> {
            self.applies.set(self.applies.get() + 1);
            Ok(Applied::unchanged("converged"))
        }
        fn check(&self, _cx: &Context) -> Result<Vec<Drift>> {
            Ok(Vec::new())
        }
        fn keep_access(&self, _cx: &Context) -> Result<Option<String>> {
            let next = self.access.borrow_mut().pop_front();
            next.expect("an access check nobody scripted")
        }
    }

    /// apply with one scripted step on a temp root: the run, and how often the step applied.
    fn run(access: Vec<Result<Option<String>>>) -> (RunResult, usize) {
        let root = tempfile::tempdir().unwrap();
        let config = crate::config::parse(crate::config::EXAMPLE, Path::new("e.yaml")).unwrap();
        let runner = crate::runner::RecordingRunner::new();
        let cx = Context::new(Root::new(root.path()), &config, &runner);
        let applies = Rc::new(Cell::new(0));
        let steps: Vec<Box<dyn Step>> = vec![Box::new(Scripted {
            access: RefCell::new(access.into()),
            applies: applies.clone(),
        })];
        let r = apply(&cx, &steps);
        (r, applies.get())
    }

    /// An access check that cannot even be made before the run (say iptables-save fails) stops
    /// the run before any step: a failed "access" entry and the run's error, never a run that
    /// goes on blind (its changes could not be judged against a firewall nobody could read).
    #[test]
    fn an_access_check_that_errors_before_the_run_stops_it() {
        let (r, applies) = run(vec![Err(anyhow::anyhow!("iptables-save: exit 4"))]);
        assert_eq!(applies, 0);
        assert_eq!(r.steps.len(), 1, "{:?}", r.steps);
        assert_eq!(r.steps[0].name, "access");
        assert_eq!(r.steps[0].outcome, Outcome::Failed);
        assert_eq!(r.status(), Status::Failed);
        let e = format!("{:#}", r.error.expect("the run fails"));
        assert!(
            e.contains("keeping SSH reachable (firewall) failed: iptables-save: exit 4"),
            "{e}"
        );
    }

    /// After a run whose every step succeeded, an access check that had to act (or could not
    /// check) fails the run: the owner hears of it, it is not a success.
    #[test]
    fn an_access_check_that_acts_after_the_run_fails_it() {
        for after in [
            Ok(Some(
                "rules dropped every sshd port: csf -sf restored".to_string(),
            )),
            Err(anyhow::anyhow!("iptables-save: exit 4")),
        ] {
            let (r, applies) = run(vec![Ok(None), after]);
            assert_eq!(applies, 1);
            let names: Vec<_> = r.steps.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(names, ["firewall", "access"]);
            assert_eq!(r.steps[1].outcome, Outcome::Failed);
            assert!(r.failed(), "{:?}", r.steps);
        }
        // Nothing found either time: the run succeeds, with no access entry.
        let (r, applies) = run(vec![Ok(None), Ok(None)]);
        assert_eq!(applies, 1);
        assert!(!r.failed(), "{:?}", r.error);
        assert_eq!(r.steps.len(), 1, "{:?}", r.steps);
    }
}
