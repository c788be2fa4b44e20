//! `plan`, `apply` and `check`: load the config, take the run lock, drive the engine, report.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use super::{Exit, Target};
use crate::config::{self, Loaded};
use crate::engine::{self, Context, RunResult, StepResult};
use crate::report::{self, RunFacts};
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

/// Like [`load`], but a config that fails validation is still reported (as `failed`, with the
/// reasons) when its `report` section alone is usable: the owner learns why nothing happened.
pub fn load_or_report(t: &Target, send_report: bool) -> Result<(Root, Loaded)> {
    load(t).inspect_err(|e| {
        if send_report && e.chain().any(|c| c.is::<config::ConfigError>()) {
            let root = Root::new(&t.root);
            let path = t
                .config
                .clone()
                .unwrap_or_else(|| root.path(config::DEFAULT_PATH));
            report_invalid_config(&root, &path, e);
        }
    })
}

fn report_invalid_config(root: &Root, path: &std::path::Path, e: &anyhow::Error) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let Ok(doc) = serde_norway::from_str::<serde_norway::Value>(&text) else {
        return;
    };
    let Some(section) = doc.get("report") else {
        return;
    };
    let Ok(cfg) = serde_norway::from_value::<report::ReportConfig>(section.clone()) else {
        return;
    };
    if !cfg.validate().is_empty() {
        return;
    }
    let port = doc
        .get("ssh")
        .and_then(|s| s.get("port"))
        .and_then(|p| p.as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(0);
    let facts = RunFacts::gather(root, text.as_bytes(), port);
    let doc = facts.finished(
        Vec::new(),
        crate::csf::firewall_state(root),
        Some(e),
        time::OffsetDateTime::now_utc(),
    );
    report::deliver(root, &cfg, &doc);
}

#[derive(Debug, clap::Args)]
pub struct Plan {
    #[command(flatten)]
    target: Target,
}

impl Plan {
    pub fn run(self) -> Result<Exit> {
        let (root, loaded) = load(&self.target)?;
        let cx = Context::new(root, &loaded.config, &SystemRunner).with_facts()?;
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
pub struct Apply {
    #[command(flatten)]
    pub target: Target,
    /// Print a machine-readable summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// Send the status report even under a --root other than / (it always goes when live).
    #[arg(long)]
    pub report: bool,
}

/// The `apply --json` document.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub status: report::Status,
    pub changed: bool,
    pub steps: &'a [StepResult],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Vec<String>>,
}

/// Converge under the run lock, reporting `started` and `finished`; used by `apply` and
/// `firstboot`. A report that cannot be delivered never changes the run's outcome.
pub fn converge(root: &Root, loaded: &Loaded, send_report: bool) -> Result<RunResult> {
    let cx = Context::new(root.clone(), &loaded.config, &SystemRunner).with_facts()?;
    let reporting = loaded.config.report.as_ref().filter(|_| send_report);
    let facts = reporting
        .map(|_| RunFacts::gather(root, loaded.text.as_bytes(), loaded.config.ssh.port.get()));
    if let (Some(cfg), Some(facts)) = (reporting, &facts) {
        report::resend_pending(root, cfg);
        report::deliver(root, cfg, &facts.started(crate::csf::firewall_state(root)));
    } else if loaded.config.report.is_none() {
        tracing::info!("no report section: no status report will be sent");
    }
    let result = engine::apply(&cx, &engine::steps());
    if let (Some(cfg), Some(facts)) = (reporting, &facts) {
        let mut doc = facts.finished(
            result.steps.clone(),
            crate::csf::firewall_state(root),
            result.error.as_ref(),
            time::OffsetDateTime::now_utc(),
        );
        // The run may have changed which keys sshd serves (HostKey lines, a regenerated key).
        doc.host_keys = report::served_host_keys(root);
        doc.ssh_hardened = ssh_hardened(root, &facts.instance_id, &result);
        report::deliver(root, cfg, &doc);
    }
    Ok(result)
}

/// When sshd was hardened: by `firstboot --early` on this instance if it did, else by this run.
fn ssh_hardened(root: &Root, instance: &str, result: &RunResult) -> Option<report::SshHardened> {
    if let Some(early) = super::firstboot::early_record(root, instance) {
        return Some(early);
    }
    result.sshd_done.map(|d| report::SshHardened {
        by: "run".into(),
        after_start_ms: d.as_millis() as u64,
        uptime_ms: report::uptime_ms(root),
    })
}

/// Print the step table on stderr and, with `json`, the summary on stdout.
pub fn print_result(result: &RunResult, json: bool) -> Result<()> {
    for s in &result.steps {
        eprintln!(
            "{:<13} {:<9} {:>6}ms  {}",
            s.name,
            format!("{:?}", s.outcome).to_lowercase(),
            s.duration_ms,
            s.message
        );
    }
    match &result.error {
        Some(e) => eprintln!("error: {e:#}"),
        None if result.changed() => eprintln!("brickup: converged (changes made)"),
        None => eprintln!("brickup: nothing to change"),
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
    pub fn run(self) -> Result<Exit> {
        let send = self.target.root == std::path::Path::new("/") || self.report;
        let (root, loaded) = load_or_report(&self.target, send)?;
        let _lock = crate::lock::acquire(&root, Duration::from_secs(self.target.lock_wait))?;
        let result = converge(&root, &loaded, send)?;
        print_result(&result, self.json)?;
        Ok(result.error.as_ref().map_or(Exit::Ok, super::exit_for))
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
        let cx = Context::new(root, &loaded.config, &SystemRunner).with_facts()?;
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
