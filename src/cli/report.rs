//! `brickup status` (the last run's report) and `brickup receive` (the reference receiver).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;

use super::Exit;
use crate::report::{self, Secret};
use crate::root::Root;

#[derive(Debug, clap::Args)]
pub struct Status {
    /// Read the report under DIR instead of this machine.
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// Print the raw report document.
    #[arg(long)]
    json: bool,
}

impl Status {
    pub fn run(self) -> Result<Exit> {
        let doc = report::status(&Root::new(&self.root))?;
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
        Ok(Exit::Ok)
    }
}

#[derive(Debug, clap::Args)]
pub struct Receive {
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
}

impl Receive {
    pub fn run(self) -> Result<Exit> {
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
        crate::receive::serve(
            self.listen,
            secret,
            token,
            &self.out,
            crate::receive::DEFAULT_MAX_SKEW,
            None,
        )?;
        Ok(Exit::Ok)
    }
}
