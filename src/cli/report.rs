//! `brickup status` (the last run's report) and `brickup receive` (the reference receiver).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use super::Exit;
use crate::report::receive::{self, ReceiveOptions, Receiver};
use crate::report::{self, Secret};
use crate::root::Root;

#[derive(Debug, clap::Args)]
pub(crate) struct Status {
    /// Read the report under DIR instead of this machine.
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// Print the raw report document.
    #[arg(long)]
    json: bool,
}

impl Status {
    pub(crate) fn run(self) -> Result<Exit> {
        let root = Root::new(&self.root);
        if !root.path(report::LAST_REPORT).exists() {
            println!("no run recorded yet: brickup has not finished a run on this host");
            return Ok(Exit::Drift);
        }
        let doc = report::status(&root)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&doc)?);
        } else {
            println!("{}", report::summary_line(&doc));
            for s in &doc.steps {
                println!(
                    "  {:<13} {:<9} {}",
                    s.name,
                    format!("{:?}", s.outcome).to_lowercase(),
                    s.message
                );
            }
        }
        Ok(match doc.status {
            report::Status::Succeeded => Exit::Ok,
            // Still running, or a step deferred (a restart left to first boot): not there yet.
            report::Status::Running | report::Status::Partial => Exit::Drift,
            report::Status::Failed => Exit::Failed,
        })
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct Receive {
    /// Address to listen on (put a TLS proxy in front for anything but loopback).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// File holding the HMAC secret; reports must carry a valid fresh signature.
    #[arg(long, value_name = "FILE")]
    hmac_secret_file: Option<PathBuf>,
    /// File holding the bearer token reports must present.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// JSON-lines file good reports are appended to.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Seconds a connection may take to send its whole request before it is answered 408.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = receive::DEFAULT_READ_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    read_timeout: u64,
    /// Connections served at once (more wait in a bounded queue; past it, 503).
    #[arg(long, value_name = "N", default_value_t = receive::DEFAULT_WORKERS)]
    workers: usize,
}

impl Receive {
    pub(crate) fn run(self) -> Result<Exit> {
        let secret = self
            .hmac_secret_file
            .as_deref()
            .map(Secret::from_file)
            .transpose()?;
        let token = self
            .token_file
            .as_deref()
            .map(Secret::from_file)
            .transpose()?;
        if secret.is_none() && token.is_none() {
            tracing::warn!(
                "no --hmac-secret-file or --token-file: accepting unauthenticated reports"
            );
        }
        let opts = ReceiveOptions {
            secret,
            token,
            read_timeout: Duration::from_secs(self.read_timeout),
            workers: self.workers,
            ..ReceiveOptions::new(self.out)
        };
        Receiver::bind(self.listen)?.run(&opts, None)?;
        Ok(Exit::Ok)
    }
}
