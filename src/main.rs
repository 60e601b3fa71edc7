//! `telemetry-hunt`: parse, resolve, run, map to an exit code. Nothing else.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use telemetry_hunt::cli::{execute, Cli, LogFormat};
use telemetry_hunt::redact::{self, Redacting};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_logging(cli: &Cli) {
    let g = &cli.global;
    let level = match (g.quiet, g.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let json = match g.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    // A log reader that goes away (a closed pipe, a dead shipper) must not stop the run: with
    // internal errors logged, the failed write's own report panics on the same closed stderr.
    // Every line is scrubbed of secrets on its way out (see `telemetry_hunt::redact`).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Redacting::new(std::io::stderr()))
        .log_internal_errors(false);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.compact().without_time().init();
    }
}

fn main() -> ExitCode {
    telemetry_hunt::cli::forget_empty_variables();
    let cli = Cli::parse();
    redact::register_environment();
    init_logging(&cli);
    match execute(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = error.exit_code();
            let message = one_line(&error);
            let _ = writeln!(std::io::stderr(), "error: {}", redact::redact(&message));
            ExitCode::from(code)
        }
    }
}

/// The error and its causes on one line. Many messages already quote their cause
/// (``cannot read `x`: No such file or directory``); such a cause is not said twice.
fn one_line(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let text = next.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = next.source();
    }
    message
}
