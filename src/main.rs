use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

/// Escape codes only on a terminal, and never when NO_COLOR is set to anything (no-color.org).
fn colour(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn main() -> ExitCode {
    // The report measures from here to the end of the sshd step.
    brickup::engine::process_start();
    let cli = brickup::cli::Cli::parse();
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| cli.default_log_filter().into());
    if filter.max_level_hint() == Some(tracing::level_filters::LevelFilter::TRACE) {
        // ureq prints request paths with their query at trace level (masked at debug):
        // presigned URLs carry secrets there.
        for crate_name in ["ureq", "ureq_proto"] {
            filter = filter.add_directive(
                format!("{crate_name}=debug")
                    .parse()
                    .expect("a valid directive"),
            );
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(colour(std::io::stderr().is_terminal()))
        .init();
    match cli.run() {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            brickup::cli::exit_for(&e).into()
        }
    }
}
