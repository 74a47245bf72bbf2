//! `r1`: the thin command-line front of r1-core — `serve`, `ctl`, `chat`.
//!
//! Exit codes: 0 success, 1 failure (one `r1: …` line on stderr), 2 usage error.

mod cli;
mod cmd;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cmd::run(cli) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("r1: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// Writing to a closed pipe (`r1 ctl … | head`) is not a failure.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
