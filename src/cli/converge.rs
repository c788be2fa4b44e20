//! `plan`, `apply` and `check`: load the config, take the run lock, drive the engine.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use super::{Exit, Target};
use crate::config::{self, Loaded};
use crate::engine::{self, Context, Outcome, StepResult};
use crate::root::Root;
use crate::runner::SystemRunner;

/// Load and validate the config for a target; nothing is written before this succeeds.
pub fn load(t: &Target) -> Result<(Root, Loaded)> {
    let root = Root::new(&t.root);
    let path = t
        .config
        .clone()
        .unwrap_or_else(|| root.path(config::DEFAULT_PATH));
    let loaded = config::load(&path)?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    Ok((root, loaded))
}

#[derive(Debug, clap::Args)]
pub struct Plan {
    #[command(flatten)]
    target: Target,
}

impl Plan {
    pub fn run(self) -> Result<Exit> {
        let (root, loaded) = load(&self.target)?;
        let cx = Context::new(root, &loaded.config, &SystemRunner);
        let mut failed = false;
        for (name, r) in engine::plan(&cx, &engine::steps()) {
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
        Ok(if failed { Exit::Failed } else { Exit::Ok })
    }
}

#[derive(Debug, clap::Args)]
pub struct Apply {
    #[command(flatten)]
    pub target: Target,
    /// Print a machine-readable summary on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The `apply --json` document.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub status: &'static str,
    pub changed: bool,
    pub steps: &'a [StepResult],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a [String]>,
}

pub fn status_word(steps: &[StepResult], failed: bool) -> &'static str {
    if failed {
        if steps.iter().any(|s| s.outcome == Outcome::Changed) {
            "partial"
        } else {
            "failed"
        }
    } else {
        "succeeded"
    }
}

/// Converge under the run lock and print the result; used by `apply` and `firstboot`.
pub fn converge(target: &Target, json: bool) -> Result<(Loaded, engine::RunResult)> {
    let (root, loaded) = load(target)?;
    let _lock = crate::lock::acquire(&root, Duration::from_secs(target.lock_wait))?;
    let cx = Context::new(root, &loaded.config, &SystemRunner);
    let result = engine::apply(&cx, &engine::steps());
    print_result(&result, json)?;
    Ok((loaded, result))
}

fn print_result(result: &engine::RunResult, json: bool) -> Result<()> {
    for s in &result.steps {
        eprintln!(
            "{:<13} {:<9} {:>6}ms  {}",
            s.name,
            format!("{:?}", s.outcome).to_lowercase(),
            s.duration_ms,
            s.message
        );
    }
    let changed = result.steps.iter().any(|s| s.outcome == Outcome::Changed);
    if !result.failed() {
        eprintln!(
            "{}",
            if changed {
                "brickup: converged (changes made)"
            } else {
                "brickup: nothing to change"
            }
        );
    }
    if json {
        let doc = Summary {
            status: status_word(&result.steps, result.failed()),
            changed,
            steps: &result.steps,
            error: result.error.as_deref(),
        };
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(())
}

impl Apply {
    pub fn run(self) -> Result<Exit> {
        let (_, result) = converge(&self.target, self.json)?;
        if let Some(chain) = &result.error {
            eprintln!("error: {}", chain.join(": "));
            return Ok(Exit::Failed);
        }
        Ok(Exit::Ok)
    }
}

#[derive(Debug, clap::Args)]
pub struct Check {
    #[command(flatten)]
    target: Target,
    /// Print the drift as JSON on stdout.
    #[arg(long)]
    json: bool,
}

impl Check {
    pub fn run(self) -> Result<Exit> {
        let (root, loaded) = load(&self.target)?;
        let cx = Context::new(root, &loaded.config, &SystemRunner);
        let results = engine::check(&cx, &engine::steps());
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
                println!(
                    "note: live checks (listening ports, firewall rules) deferred: --root is not /"
                );
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
