use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The report measures from here to the end of the sshd step.
    brickup::engine::process_start();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info".into())
                // ureq prints request paths with their query at trace level (masked at debug):
                // presigned URLs carry secrets there.
                .add_directive("ureq=debug".parse().expect("a valid directive"))
                .add_directive("ureq_proto=debug".parse().expect("a valid directive")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = brickup::cli::Cli::parse();
    match cli.run() {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            brickup::cli::exit_for(&e).into()
        }
    }
}
