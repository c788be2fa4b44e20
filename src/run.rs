//! A whole brickup run, as the CLI drives it: the steps in their order, loading the config (an
//! invalid one is still recorded, and reported when its report section is usable), gathering the facts once,
//! applying under the engine, and the `started`/`finished` reports. The CLI only parses
//! arguments and prints.
//!
//! The order shrinks the window in which the VPS is exposed: the admin user, SSH key, sshd, then the csf download
//! (verified before anything is installed), prerequisites, security updates, csf install,
//! firewall policy, and the log files lfd watches.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::config::{self, Loaded};
use crate::engine::{self, Context, RunResult, Step};
use crate::report::{self, RunFacts};
use crate::root::Root;
use crate::runner::SystemRunner;

/// The steps, in order.
pub(crate) fn steps() -> Vec<Box<dyn Step>> {
    vec![
        Box::new(crate::account::UserStep),
        Box::new(crate::keys::KeysStep),
        Box::new(crate::sshd::SshdStep),
        Box::new(crate::csf::DownloadStep),
        Box::new(crate::packages::PackagesStep),
        Box::new(crate::updates::UpdatesStep),
        Box::new(crate::csf::InstallStep),
        Box::new(crate::csf::FirewallStep),
        Box::new(crate::csf::LogStep),
    ]
}

/// The steps `firstboot --early` runs before sshd first starts: the admin user, the SSH key and
/// sshd.
pub(crate) fn early_steps() -> Vec<Box<dyn Step>> {
    vec![
        Box::new(crate::account::UserStep),
        Box::new(crate::keys::KeysStep),
        Box::new(crate::sshd::SshdStep),
    ]
}

/// Load and validate the config (`path`, else `/etc/brickup/brickup.yaml` under the root);
/// nothing is written before this succeeds.
pub(crate) fn load(root: &Root, path: Option<&Path>) -> Result<Loaded> {
    let path = config_path(root, path);
    let loaded = config::load(&path)?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    node_files_readable(root, &loaded.config)?;
    Ok(loaded)
}

/// Every file the config names for this host can be read (a secret also non-empty), or the run
/// is refused before any change: a report that can never be signed or authenticated would
/// otherwise be kept pending in silence while the run exits 0.
fn node_files_readable(root: &Root, config: &config::Config) -> Result<()> {
    for (field, p) in config.node_files() {
        let host = root.path(p);
        let read = match field.starts_with("report.") {
            true => report::Secret::from_file(&host).map(drop),
            false => std::fs::read(&host)
                .map(drop)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", host.display())),
        };
        if let Err(e) = read {
            return Err(engine::Refused::error(
                field,
                format!(
                    "{e:#}: the node needs {} (render-userdata carries it in the user-data; \
                     on a host set up by hand, put it there, root-owned and 0600)",
                    p.display()
                ),
            ));
        }
    }
    Ok(())
}

fn config_path(root: &Root, path: Option<&Path>) -> PathBuf {
    path.map(Path::to_path_buf)
        .unwrap_or_else(|| root.path(config::DEFAULT_PATH))
}

/// Like [`load`], but a config that fails validation is still recorded for `brickup status` (as
/// `failed`, with the reasons) and sent when its `report` section alone is usable: the owner
/// learns why nothing happened.
pub(crate) fn load_or_report(
    root: &Root,
    path: Option<&Path>,
    send_report: bool,
) -> Result<Loaded> {
    load(root, path).inspect_err(|e| {
        if send_report && e.chain().any(|c| c.is::<config::ConfigError>()) {
            report_invalid_config(root, &config_path(root, path), e);
        }
    })
}

fn report_invalid_config(root: &Root, path: &std::path::Path, e: &anyhow::Error) {
    // A ConfigError means the file was read; text the YAML parser refused leaves no section.
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let doc = serde_norway::from_str::<serde_norway::Value>(&text).ok();
    let port = doc
        .as_ref()
        .and_then(|d| d.get("ssh"))
        .and_then(|s| s.get("port"))
        .and_then(|p| p.as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(0);
    let facts = RunFacts::gather(root, text.as_bytes(), port);
    let failed = facts.finished(
        Vec::new(),
        crate::csf::firewall_state(root),
        Some(e),
        time::OffsetDateTime::now_utc(),
    );
    match usable_report_section(doc.as_ref()) {
        Ok(cfg) => {
            report::deliver(root, &cfg, &failed);
        }
        Err(why) => {
            tracing::warn!("the failure is recorded for `brickup status` only: {why}");
            report::record(root, &failed);
        }
    }
}

/// The `report` section of a config that failed validation, if it can be used by itself.
fn usable_report_section(
    doc: Option<&serde_norway::Value>,
) -> std::result::Result<report::ReportConfig, String> {
    let doc = doc.ok_or("the config is not YAML, so no report can be sent")?;
    let section = doc
        .get("report")
        .ok_or("the config has no report section, so no report is sent")?;
    let cfg = serde_norway::from_value::<report::ReportConfig>(section.clone())
        .map_err(|e| format!("its report section is unusable too ({e}), so no report is sent"))?;
    let problems = cfg.validate();
    if !problems.is_empty() {
        return Err(format!(
            "its report section is unusable too ({}), so no report is sent",
            problems
                .iter()
                .map(|(field, msg)| format!("{field}: {msg}"))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    Ok(cfg)
}

/// Converge under the run lock, reporting `started` and `finished`; used by `apply` and
/// `firstboot`. A report that cannot be delivered never changes the run's outcome.
pub(crate) fn converge(root: &Root, loaded: &Loaded, send_report: bool) -> Result<RunResult> {
    let cx = Context::new(root.clone(), &loaded.config, &SystemRunner).with_facts()?;
    // The run is recorded for `brickup status` whenever it is reported, and sent when there is
    // a report section to send it to.
    let reporting = loaded.config.report.as_ref().filter(|_| send_report);
    let facts = send_report
        .then(|| RunFacts::gather(root, loaded.text.as_bytes(), loaded.config.ssh.port.get()));
    if let Some(facts) = &facts {
        let started = facts.started(crate::csf::firewall_state(root));
        match reporting {
            // `started` is news, not a record: a receiver that is down must not hold the
            // hardening up for the whole retry budget (one attempt's time at most). An earlier
            // run's pending report is resent after the work, for the same reason.
            Some(cfg) => {
                let quick = report::ReportConfig {
                    total_timeout_secs: cfg.attempt_timeout_secs,
                    ..cfg.clone()
                };
                report::deliver(root, &quick, &started);
            }
            None => {
                tracing::info!("no report section: no status report will be sent");
                report::record(root, &started);
            }
        }
    }
    let result = engine::apply(&cx, &steps());
    if let Some(facts) = &facts {
        if let Some(cfg) = reporting {
            report::resend_pending(root, cfg);
        }
        let mut doc = facts.finished(
            result.steps.clone(),
            crate::csf::firewall_state(root),
            result.error.as_ref(),
            time::OffsetDateTime::now_utc(),
        );
        // The run may have changed which keys sshd serves (HostKey lines, a regenerated key).
        doc.host_keys = report::served_host_keys(root);
        doc.ssh_hardened = ssh_hardened(root, &facts.instance_id, &result);
        match reporting {
            Some(cfg) => {
                report::deliver(root, cfg, &doc);
            }
            None => report::record(root, &doc),
        }
    }
    Ok(result)
}

/// When sshd was hardened: by `firstboot --early` on this instance if it did, else by this run.
fn ssh_hardened(root: &Root, instance: &str, result: &RunResult) -> Option<report::SshHardened> {
    if let Some(early) = crate::firstboot::early_record(root, instance) {
        return Some(early);
    }
    result.sshd_done.map(|d| report::SshHardened {
        by: "run".into(),
        after_start_ms: d.as_millis() as u64,
        uptime_ms: report::uptime_ms(root),
    })
}
