//! A stand-in for `r1 serve [--detach]`, used by r1-core's client tests to exercise
//! auto-spawn until the real `r1` binary (r1-bin) exists; replace it with
//! `CARGO_BIN_EXE_r1` then. It is a real daemon (`Daemon::start` with signal
//! handling) and follows the `--detach` contract of DESIGN §9:
//!
//! * `serve`: run in the foreground until SIGTERM/SIGINT or `daemon.shutdown`.
//! * `serve --detach`: fork; the child starts its own session (setsid), points its
//!   stdio at `<home>/log/r1.log` and starts the daemon; the parent exits 0 once
//!   `daemon.json` is written, or 1 with the daemon's error (on lock contention the
//!   two "daemon already running" lines) on stderr.
//!
//! The home is `R1_HOME` (else `~/.r1`).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitCode;

use r1_core::paths::{self, Home, OpenMode};
use r1_core::{Daemon, DaemonConfig};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let detach = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["serve"] => false,
        ["serve", "--detach"] => true,
        _ => {
            eprintln!("usage: r1-test-daemon serve [--detach]");
            return ExitCode::from(2);
        }
    };
    if detach {
        detach_and_serve()
    } else {
        serve(None)
    }
}

fn detach_and_serve() -> ExitCode {
    let (rd, wr) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("r1: cannot create a pipe: {e}");
            return ExitCode::FAILURE;
        }
    };
    // SAFETY: the process is single-threaded here (no runtime, no threads started
    // yet), so the child may run arbitrary code after fork.
    match unsafe { nix::unistd::fork() } {
        Err(e) => {
            eprintln!("r1: cannot fork: {e}");
            ExitCode::FAILURE
        }
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            drop(wr);
            let mut report = String::new();
            let _ = std::fs::File::from(rd).read_to_string(&mut report);
            match report.strip_prefix("ok\n") {
                Some(_) => ExitCode::SUCCESS,
                None => {
                    let msg = report.strip_prefix("err\n").unwrap_or(
                        "the daemon exited during startup; see its log (log/r1.log in the r1 home)",
                    );
                    eprintln!("{}", msg.trim_end());
                    ExitCode::FAILURE
                }
            }
        }
        Ok(nix::unistd::ForkResult::Child) => {
            drop(rd);
            let _ = nix::unistd::setsid();
            if let Err(msg) = redirect_stdio() {
                let _ = std::fs::File::from(wr).write_all(format!("err\n{msg}\n").as_bytes());
                return ExitCode::FAILURE;
            }
            serve(Some(wr))
        }
    }
}

/// stdin from /dev/null, stdout and stderr appended to the home's log.
fn redirect_stdio() -> Result<(), String> {
    let home = Home::resolve(None).map_err(|e| e.to_string())?;
    home.ensure().map_err(|e| e.to_string())?;
    paths::ensure_private_dir(&home.log_dir()).map_err(|e| e.to_string())?;
    let log =
        paths::open_private(&home.log_path(), OpenMode::AppendCreate).map_err(|e| e.to_string())?;
    let null =
        std::fs::File::open("/dev/null").map_err(|e| format!("cannot open /dev/null: {e}"))?;
    for (from, to) in [
        (null.as_raw_fd(), 0),
        (log.as_raw_fd(), 1),
        (log.as_raw_fd(), 2),
    ] {
        // SAFETY: dup2 on descriptors we own onto the standard ones.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(format!(
                "cannot redirect stdio: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn serve(notify: Option<OwnedFd>) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("R1_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report(notify, Err(format!("r1: cannot start the runtime: {e}")));
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let cfg = DaemonConfig {
            handle_signals: true,
            ..DaemonConfig::default()
        };
        match Daemon::start(cfg).await {
            Ok(handle) => {
                report(notify, Ok(()));
                match handle.wait().await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("r1: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Err(e) => {
                report(notify, Err(e.message().to_owned()));
                ExitCode::FAILURE
            }
        }
    })
}

/// Tells the waiting parent how startup went (or prints it when not detached).
fn report(notify: Option<OwnedFd>, outcome: Result<(), String>) {
    match (notify, outcome) {
        (Some(fd), Ok(())) => {
            let _ = std::fs::File::from(fd).write_all(b"ok\n");
        }
        (Some(fd), Err(msg)) => {
            let _ = std::fs::File::from(fd).write_all(format!("err\n{msg}\n").as_bytes());
        }
        (None, Ok(())) => {}
        (None, Err(msg)) => eprintln!("{msg}"),
    }
}
