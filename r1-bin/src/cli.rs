//! Command-line flags (clap derive). Validation that clap cannot express lives in
//! the subcommand that uses the flag.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// r1: a per-user session daemon and its clients.
#[derive(Debug, Parser)]
#[command(
    name = "r1",
    version,
    about,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// The r1 home (default: $R1_HOME, else ~/.r1).
    #[arg(long, global = true, env = "R1_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (foreground by default), or install it as a user service.
    Serve(ServeArgs),
}

/// `r1 serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Bearer token for HTTP/WebSocket (visible in `ps`: prefer --token-file).
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    pub token: Option<String>,
    /// Read the bearer token from this file (first line).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Do not listen on loopback HTTP/WebSocket.
    #[arg(long)]
    pub no_tcp: bool,
    /// Do not listen on the unix socket.
    #[arg(long)]
    pub no_unix: bool,
    /// Loopback port (default: an ephemeral one).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub port: u16,
    /// Unix socket path (default: chosen per the operator guide).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Refuse to start a second unfinished session.
    #[arg(long)]
    pub single_session: bool,
    /// Also allow this browser Origin (repeatable), e.g. chrome-extension://<id>.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origin: Vec<String>,
    /// Group-commit window for non-durable journal records, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub fsync_interval: u64,
    /// Exit after this long with no session running and no client (e.g. 10m).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub idle_exit: Option<std::time::Duration>,
    /// Seconds drivers get to stop at shutdown.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub grace: f64,
    /// Run in the background; return once the daemon is reachable.
    #[arg(long)]
    pub detach: bool,
    /// Install as a user service (systemd user unit / launchd agent) and start it.
    #[arg(long, conflicts_with_all = ["uninstall", "status", "detach"])]
    pub install: bool,
    /// Stop and remove the user service.
    #[arg(long, conflicts_with_all = ["status", "detach"])]
    pub uninstall: bool,
    /// Show whether the user service is running (exit 0 running, 3 stopped, 4 not installed).
    #[arg(long, conflicts_with = "detach")]
    pub status: bool,
}
