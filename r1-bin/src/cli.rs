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
    /// Talk to the running daemon (starting one when needed, unless --no-spawn).
    Ctl(CtlArgs),
    /// Attach to (or start) a session and type commands into it; Ctrl-D detaches.
    Chat(ChatArgs),
}

/// `r1 ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Print the result as JSON (one value per line) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Never start a daemon: fail when none is running.
    #[arg(long, global = true)]
    pub no_spawn: bool,
    /// How long to wait for the daemon to answer (or to start), e.g. 2s, 500ms.
    #[arg(long, global = true, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    #[command(subcommand)]
    pub verb: CtlVerb,
}

/// `r1 ctl` verbs.
#[derive(Debug, Subcommand)]
pub enum CtlVerb {
    /// Show where the daemon is (reads daemon.json; never starts a daemon).
    Discover,
    /// Show the running daemon's facts.
    Info,
    /// Stop the daemon gracefully and wait until it has exited (never starts one).
    Shutdown {
        /// Seconds running drivers get to stop.
        #[arg(long, value_name = "SECONDS")]
        grace: Option<f64>,
    },
    /// Replace the loopback bearer token (never starts a daemon).
    RotateToken,
    /// Print (and open, where a browser exists) the web console URL with the token.
    Open,
    /// Check the home, files, lock, discovery, socket, port, service and versions.
    Doctor,
    /// Work with sessions.
    Sessions {
        #[command(subcommand)]
        verb: SessionsVerb,
    },
    /// Print a session's journal (works with no daemon running).
    Journal(JournalArgs),
}

/// `r1 ctl sessions` verbs.
#[derive(Debug, Subcommand)]
pub enum SessionsVerb {
    /// List sessions.
    List {
        /// Only sessions in this state (running, paused, ended, paused-reattachable, damaged).
        #[arg(long)]
        state: Option<String>,
    },
    /// Show one session.
    Get {
        /// The session id.
        id: String,
    },
    /// Start a session in a directory. With a command after `--`, use the exec driver.
    Start {
        /// The working directory (default: the current directory).
        #[arg(long, value_name = "DIR")]
        workdir: Option<PathBuf>,
        /// The driver (default: shell, or exec when a command is given).
        #[arg(long)]
        driver: Option<String>,
        /// A name for the session.
        #[arg(long)]
        name: Option<String>,
        /// Extra environment for the session's commands (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// The exec driver's command (after `--`).
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Send input (for the shell driver: a command line).
    Send {
        /// The session id.
        id: String,
        /// The text (words are joined with spaces).
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Pause a running session.
    Pause {
        /// The session id.
        id: String,
    },
    /// Resume a paused (or restart-interrupted) session.
    Resume {
        /// The session id.
        id: String,
    },
    /// End a session.
    Cancel {
        /// The session id.
        id: String,
        /// Why, for the record.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Cancel if needed and delete a session's journal.
    Delete {
        /// The session id.
        id: String,
    },
    /// Print a session's output live until it ends (Ctrl-C stops following).
    Follow {
        /// The session id.
        id: String,
        /// Replay records after this seq first (default: from the start).
        #[arg(long, value_name = "SEQ")]
        since: Option<u64>,
    },
}

/// `r1 ctl journal`.
#[derive(Debug, Args)]
pub struct JournalArgs {
    /// A session id (in the home) or a path to a journal file.
    pub target: String,
    /// Only records after this seq.
    #[arg(long, value_name = "SEQ")]
    pub since: Option<u64>,
    /// Check every line; exit 1 and name the first bad line if any.
    #[arg(long, conflicts_with = "follow")]
    pub verify: bool,
    /// Keep printing records as they are appended (Ctrl-C stops).
    #[arg(long)]
    pub follow: bool,
}

/// `r1 chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Start a new session in this directory (default: the current directory).
    #[arg(long, value_name = "DIR", conflicts_with = "session")]
    pub workdir: Option<PathBuf>,
    /// Attach to this existing session instead.
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
    /// Never start a daemon: fail when none is running.
    #[arg(long)]
    pub no_spawn: bool,
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
