//! The engine: runs the steps in their fixed order for `plan`, `apply` and `check`, each apply in
//! its own [`Transaction`] so a failed step restores what it changed, and later steps are skipped.
//!
//! The order shrinks the window in which the VPS is exposed: SSH key, sshd, then the csf download
//! (verified before anything is installed), prerequisites, csf install, firewall policy, and the
//! log files lfd watches.

use std::time::Instant;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::fsops::Transaction;
use crate::root::Root;
use crate::runner::Runner;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Unchanged,
    Changed,
    Failed,
    Skipped,
    Deferred,
}

/// One step's result, as printed by `apply --json` and sent in the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StepResult {
    pub name: String,
    pub outcome: Outcome,
    pub duration_ms: u64,
    pub message: String,
}

/// Everything a step may look at.
pub struct Context<'a> {
    pub root: Root,
    pub config: &'a Config,
    pub runner: &'a dyn Runner,
    /// Working on the running machine: services may be restarted and live checks run. True
    /// exactly when the root is `/`, except in tests that pair a temp root with a recording runner.
    pub live: bool,
}

impl<'a> Context<'a> {
    pub fn new(root: Root, config: &'a Config, runner: &'a dyn Runner) -> Self {
        let live = root.is_live();
        Context {
            root,
            config,
            runner,
            live,
        }
    }

    pub fn live(&self) -> bool {
        self.live
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
    /// Unified diff for files, `$ cmd` for commands.
    pub fn render(&self) -> String {
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
    pub deferred: bool,
    pub message: String,
}

impl Applied {
    pub fn changed(message: impl Into<String>) -> Self {
        Applied {
            changed: true,
            deferred: false,
            message: message.into(),
        }
    }
    pub fn unchanged(message: impl Into<String>) -> Self {
        Applied {
            changed: false,
            deferred: false,
            message: message.into(),
        }
    }
    pub fn deferring(mut self, what: impl AsRef<str>) -> Self {
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
    /// Drift of the effective state, one line each. Read-only.
    fn check(&self, cx: &Context) -> Result<Vec<String>>;
}

/// The steps, in order.
pub fn steps() -> Vec<Box<dyn Step>> {
    vec![
        Box::new(crate::keys::KeysStep),
        Box::new(crate::sshd::SshdStep),
        Box::new(crate::csf::DownloadStep),
        Box::new(crate::packages::PackagesStep),
        Box::new(crate::csf::InstallStep),
        Box::new(crate::csf::FirewallStep),
        Box::new(crate::csf::LogStep),
    ]
}

/// The result of a whole apply.
#[derive(Debug)]
pub struct RunResult {
    pub steps: Vec<StepResult>,
    /// The first failure, if any.
    pub error: Option<anyhow::Error>,
}

impl RunResult {
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// The error chain, outermost first.
    pub fn error_chain(&self) -> Option<Vec<String>> {
        self.error
            .as_ref()
            .map(|e| e.chain().map(|c| c.to_string()).collect())
    }

    pub fn changed(&self) -> bool {
        self.steps.iter().any(|s| s.outcome == Outcome::Changed)
    }

    /// The run's status as the report states it.
    pub fn status(&self) -> crate::report::Status {
        crate::report::Status::of(&self.steps, self.failed())
    }
}

fn ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// Apply every step; stop at the first failure (its changes rolled back, later steps skipped).
pub fn apply(cx: &Context, steps: &[Box<dyn Step>]) -> RunResult {
    let mut results = Vec::new();
    let mut error = None;
    for step in steps.iter().filter(|s| s.skip_reason(cx).is_none()) {
        if let Err(e) = step.preflight(cx) {
            tracing::error!(step = step.name(), "preflight failed: {e:#}");
            let steps = steps
                .iter()
                .map(|s| StepResult {
                    name: s.name().to_string(),
                    outcome: if s.name() == step.name() {
                        Outcome::Failed
                    } else {
                        Outcome::Skipped
                    },
                    duration_ms: 0,
                    message: if s.name() == step.name() {
                        format!("{e:#}")
                    } else {
                        "not run: a preflight check failed, nothing was changed".into()
                    },
                })
                .collect();
            return RunResult {
                steps,
                error: Some(e),
            };
        }
    }
    for step in steps {
        let start = Instant::now();
        let name = step.name().to_string();
        if error.is_some() {
            results.push(StepResult {
                name,
                outcome: Outcome::Skipped,
                duration_ms: 0,
                message: "not run: an earlier step failed".into(),
            });
            continue;
        }
        if let Some(reason) = step.skip_reason(cx) {
            tracing::info!(step = %name, "skipped: {reason}");
            results.push(StepResult {
                name,
                outcome: Outcome::Skipped,
                duration_ms: 0,
                message: reason,
            });
            continue;
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
                results.push(StepResult {
                    name,
                    outcome,
                    duration_ms: ms(start),
                    message: a.message,
                });
            }
            Err(e) => {
                let e = match tx.rollback() {
                    Ok(()) => e,
                    Err(r) => e.context(format!("and restoring the step's files failed: {r:#}")),
                };
                tracing::error!(step = %name, "failed: {e:#}");
                results.push(StepResult {
                    name,
                    outcome: Outcome::Failed,
                    duration_ms: ms(start),
                    message: format!("{e:#}"),
                });
                error = Some(e);
            }
        }
    }
    RunResult {
        steps: results,
        error,
    }
}

/// Plan every step: (step name, actions or the error that stopped planning it).
pub fn plan(cx: &Context, steps: &[Box<dyn Step>]) -> Vec<(String, Result<Vec<Action>>)> {
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
pub fn check(cx: &Context, steps: &[Box<dyn Step>]) -> Vec<(String, Vec<String>)> {
    steps
        .iter()
        .filter(|s| s.skip_reason(cx).is_none())
        .map(|s| {
            let drift = s
                .check(cx)
                .unwrap_or_else(|e| vec![format!("could not check: {e:#}")]);
            (s.name().to_string(), drift)
        })
        .collect()
}
