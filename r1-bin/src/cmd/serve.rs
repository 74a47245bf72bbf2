//! `r1 serve`: run the daemon, detach it, or manage it as a user service.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use r1_core::paths::{self, Home, OpenMode};
use r1_core::token::Token;
use r1_core::{Daemon, DaemonConfig, ErrorKind, service};

use crate::cli::ServeArgs;

/// Set in the environment of the background child of `--detach`.
const CHILD_ENV: &str = "R1_SERVE_CHILD";
/// How long `--detach` waits for the child to be reachable.
const DETACH_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `r1 serve`.
pub fn run(home: Option<PathBuf>, args: ServeArgs) -> anyhow::Result<ExitCode> {
    if args.install || args.uninstall || args.status {
        return manage_service(home, &args);
    }
    if args.no_tcp && args.no_unix {
        eprintln!("r1: --no-tcp and --no-unix together leave no way to reach the daemon");
        return Ok(ExitCode::from(2));
    }
    if !(0.0..=600.0).contains(&args.grace) {
        eprintln!("r1: --grace must be between 0 and 600 seconds");
        return Ok(ExitCode::from(2));
    }
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Some(Token::parse(t).context("invalid --token")?),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read --token-file {}", f.display()))?;
            let first = text.lines().next().unwrap_or_default();
            Some(Token::parse(first).with_context(|| format!("invalid token in {}", f.display()))?)
        }
        (None, None) => None,
    };
    let is_child = std::env::var_os(CHILD_ENV).is_some_and(|v| v == "1");
    if args.detach && !is_child {
        return detach(home.as_deref());
    }
    if is_child {
        // Leave the terminal's session so hang-ups and job control never reach us.
        let _ = nix::unistd::setsid();
    }

    let home = Home::resolve(home.as_deref())?;
    home.ensure()?;
    paths::ensure_private_dir(&home.log_dir())?;
    init_logging(&home, !is_child)?;

    let cfg = DaemonConfig {
        home: Some(home.root().to_path_buf()),
        sock_path: args.socket.clone(),
        token,
        unix: !args.no_unix,
        tcp: !args.no_tcp,
        port: args.port,
        single_session: args.single_session,
        allow_origins: args.allow_origin.clone(),
        fsync_interval: Duration::from_millis(args.fsync_interval),
        idle_exit: args.idle_exit,
        shutdown_grace: Duration::from_secs_f64(args.grace),
        handle_signals: true,
        ..Default::default()
    };
    limit_malloc_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = runtime.block_on(async move {
        let handle = match Daemon::start(cfg).await {
            Ok(h) => h,
            Err(e) => return Err(e),
        };
        if is_child {
            // Tell the waiting parent we are reachable; stdout is its pipe.
            let mut out = std::io::stdout();
            let _ = writeln!(out, "ready {}", std::process::id());
            let _ = out.flush();
        }
        handle.wait().await
    });
    match outcome {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            // The "already running" message is exactly two lines, without a prefix.
            let text = if e.kind() == ErrorKind::Conflict
                && e.message().starts_with("daemon already running")
            {
                e.message().to_owned()
            } else {
                format!("r1: {e}")
            };
            if is_child {
                println!("error {}", text.replace('\n', "\u{1f}"));
            }
            eprintln!("{text}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Logs go to `log/r1.log` (0600, appended) and, in the foreground, to stderr too.
fn init_logging(home: &Home, to_stderr: bool) -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, fmt};

    let file = paths::open_private(&home.log_path(), OpenMode::AppendCreate)?;
    let filter = EnvFilter::try_from_env("R1_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let file_layer = fmt::layer()
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file));
    let stderr_layer = to_stderr.then(|| fmt::layer().with_writer(std::io::stderr));
    tracing_subscriber::registry()
        .with(filter)
        .with(file_layer)
        .with(stderr_layer)
        .try_init()
        .ok();
    Ok(())
}

/// `--detach`: start the same command in the background and return once it is
/// reachable (its `daemon.json` is written), or relay why it could not start.
fn detach(home: Option<&Path>) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find the r1 executable")?;
    let resolved = Home::resolve(home)?;
    resolved.ensure()?;
    paths::ensure_private_dir(&resolved.log_dir())?;
    let log = paths::open_private(&resolved.log_path(), OpenMode::AppendCreate)?;
    let args: Vec<std::ffi::OsString> = std::env::args_os()
        .skip(1)
        .filter(|a| a != "--detach")
        .collect();
    let mut child = Command::new(exe)
        .args(args)
        .env(CHILD_ENV, "1")
        .env("R1_HOME", resolved.root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .context("cannot start the background daemon")?;
    let Some(stdout) = child.stdout.take() else {
        bail!("cannot read from the background daemon")
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = BufReader::new(stdout).read_line(&mut first);
        let _ = tx.send(first);
    });
    match rx.recv_timeout(DETACH_TIMEOUT) {
        Ok(line) if line.starts_with("ready") => Ok(ExitCode::SUCCESS),
        Ok(line) => {
            let _ = child.wait();
            match line.strip_prefix("error ") {
                Some(msg) => eprintln!("{}", msg.trim_end().replace('\u{1f}', "\n")),
                None => eprintln!(
                    "r1: the background daemon exited before it was ready; see {}",
                    resolved.log_path().display()
                ),
            }
            Ok(ExitCode::from(1))
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the background daemon did not become ready within {}s; see {}",
                DETACH_TIMEOUT.as_secs(),
                resolved.log_path().display()
            )
        }
    }
}

/// `--install`, `--uninstall`, `--status`.
fn manage_service(home: Option<PathBuf>, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(home.as_deref())?;
    let exe = std::env::current_exe().context("cannot find the r1 executable")?;
    let opts = service::ServiceOptions::new(home.root().to_path_buf(), exe);
    if args.status {
        let status = service::status(&opts)?;
        println!("{}", status.line(opts.platform));
        return Ok(ExitCode::from(status.exit_code()));
    }
    if args.uninstall {
        println!("{}", service::uninstall(&opts)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut stop = || crate::cmd::stop_running_daemon(&home);
    let report = service::install(&opts, &mut stop)?;
    for line in report.lines {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// glibc gives threads that allocate at the same time their own malloc arenas (up to
/// 8 per core) and seldom returns their free memory: with the runtime's workers and
/// blocking threads churning through sessions, subscriptions and connections, the
/// daemon's RSS climbed from ~20 to ~100 MiB in a 10-minute soak while its heap held
/// ~25 MiB. Two arenas keep it near the heap's size (docs/hardening.md). A
/// `MALLOC_ARENA_MAX` set by the user wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if let Some(n) = arena_limit(std::env::var_os("MALLOC_ARENA_MAX").as_deref()) {
        // SAFETY: mallopt only changes a malloc tunable; it is called before the
        // runtime starts its threads.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, n);
        }
    }
}

/// The arena limit to set, given the user's `MALLOC_ARENA_MAX` (`None`: leave it).
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn arena_limit(user: Option<&std::ffi::OsStr>) -> Option<i32> {
    match user {
        Some(_) => None,
        None => Some(2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (soak: RSS tripled under churn from malloc arena growth).
    #[test]
    fn malloc_arenas_are_limited_unless_the_user_chose() {
        assert_eq!(arena_limit(None), Some(2));
        assert_eq!(arena_limit(Some(std::ffi::OsStr::new("8"))), None);
    }
}
