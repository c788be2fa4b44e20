//! `plan`, `apply` and `check`: parse the arguments, hand the run to [`crate::run`], print.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use super::{Exit, Target};
use crate::config::Loaded;
use crate::engine::{self, Context, RunResult, StepResult};
use crate::report;
use crate::root::Root;
use crate::run;
use crate::runner::SystemRunner;

/// Load and validate the config for a target; nothing is written before this succeeds.
pub(crate) fn load(t: &Target) -> Result<(Root, Loaded)> {
    let root = Root::new(&t.root);
    let loaded = run::load(&root, t.config.as_deref())?;
    Ok((root, loaded))
}

/// Like [`load`], but an invalid config is still reported when its report section is usable.
pub(crate) fn load_or_report(t: &Target, send_report: bool) -> Result<(Root, Loaded)> {
    let root = Root::new(&t.root);
    let loaded = run::load_or_report(&root, t.config.as_deref(), send_report)?;
    Ok((root, loaded))
}

/// `plan` and `check` wait, as `apply` does, for a run that is changing what they look at. Under
/// `--root` they write nothing, not even the lock file: they wait on the root's lock file when
/// there is one.
fn read_lock(t: &Target, root: &Root) -> Result<Option<crate::lock::RunLock>> {
    let wait = Duration::from_secs(t.lock_wait);
    match root.is_live() {
        true => crate::lock::acquire(root, wait).map(Some),
        false => crate::lock::wait_read_only(root, wait),
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct Plan {
    #[command(flatten)]
    target: Target,
}

impl Plan {
    pub(crate) fn run(self) -> Result<Exit> {
        let (root, loaded) = load(&self.target)?;
        let _lock = read_lock(&self.target, &root)?;
        let cx = Context::new(root, &loaded.config, &SystemRunner).with_facts()?;
        // What apply would refuse before any change, plan refuses the same way (exit 2).
        if let Some(refused) = engine::preflight(&cx, &run::steps()) {
            if let Some(e) = refused.error {
                return Err(e);
            }
        }
        let mut failed = false;
        for (name, r) in engine::plan(&cx, &run::steps()) {
            match r {
                Ok(actions) if actions.is_empty() => println!("== {name}: nothing to do"),
                Ok(actions) => {
                    println!("== {name}:");
                    for a in actions {
                        print!("{}", a.render());
                    }
                }
                Err(e) => {
                    failed = true;
                    println!("== {name}: cannot plan: {e:#}");
                }
            }
        }
        if let Some(r) = &loaded.config.report {
            println!(
                "== report: POST started/finished to {}",
                crate::redact::url(&r.url)
            );
        }
        Ok(if failed { Exit::Failed } else { Exit::Ok })
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct Apply {
    #[command(flatten)]
    pub(crate) target: Target,
    /// Print a machine-readable summary on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// Send the status report even under a --root other than / (it always goes when live).
    #[arg(long)]
    pub(crate) report: bool,
}

/// The `apply --json` document.
#[derive(Debug, Serialize)]
pub(crate) struct Summary<'a> {
    pub(crate) status: report::Status,
    pub(crate) changed: bool,
    pub(crate) steps: &'a [StepResult],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<Vec<String>>,
}

/// Print the step table on stderr and, with `json`, the summary on stdout.
pub(crate) fn print_result(result: &RunResult, json: bool) -> Result<()> {
    for s in &result.steps {
        eprintln!(
            "{:<13} {:<9} {:>6}ms  {}",
            s.name,
            format!("{:?}", s.outcome).to_lowercase(),
            s.duration_ms,
            s.message
        );
    }
    let deferred = result.deferred();
    let left = match deferred.is_empty() {
        true => String::new(),
        false => format!("; left to the live system: {}", deferred.join(", ")),
    };
    match &result.error {
        Some(e) => eprintln!("error: {e:#}"),
        None if result.changed() && deferred.is_empty() => {
            eprintln!("brickup: converged (changes made)")
        }
        None if result.changed() => eprintln!("brickup: changes made{left}"),
        None => eprintln!("brickup: nothing to change{left}"),
    }
    if json {
        let doc = Summary {
            status: result.status(),
            changed: result.changed(),
            steps: &result.steps,
            error: result.error_chain(),
        };
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(())
}

impl Apply {
    pub(crate) fn run(self) -> Result<Exit> {
        let send = self.target.root == std::path::Path::new("/") || self.report;
        let (root, loaded) = load_or_report(&self.target, send)?;
        let _lock = crate::lock::acquire(&root, Duration::from_secs(self.target.lock_wait))?;
        let result = run::converge(&root, &loaded, send)?;
        print_result(&result, self.json)?;
        Ok(result.error.as_ref().map_or(Exit::Ok, super::exit_for))
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct Check {
    #[command(flatten)]
    target: Target,
    /// Print the drift as JSON on stdout.
    #[arg(long)]
    json: bool,
}

impl Check {
    pub(crate) fn run(self) -> Result<Exit> {
        let (root, loaded) = load(&self.target)?;
        let _lock = read_lock(&self.target, &root)?;
        let cx = Context::new(root, &loaded.config, &SystemRunner).with_facts()?;
        let results = engine::check(&cx, &run::steps());
        let drift: usize = results.iter().map(|(_, d)| d.len()).sum();
        if self.json {
            let map: serde_json::Map<String, serde_json::Value> = results
                .iter()
                .map(|(n, d)| (n.clone(), serde_json::json!(d)))
                .collect();
            println!(
                "{}",
                serde_json::json!({ "converged": drift == 0, "drift": map })
            );
        } else {
            for (name, lines) in &results {
                for l in lines {
                    println!("drift: {name}: {l}");
                }
            }
            if !cx.live() {
                println!("note: live checks (listening ports, firewall rules, services) deferred: --root is not /");
            }
            println!(
                "{}",
                if drift == 0 {
                    "converged".to_string()
                } else {
                    format!("{drift} drift item(s)")
                }
            );
        }
        Ok(if drift == 0 { Exit::Ok } else { Exit::Drift })
    }
}
