//! Auto-spawn (DESIGN §8): start `<r1> serve --detach` when no daemon answers, so
//! that N racing clients start exactly one daemon and a failure is one line that
//! names the cause, the log and the operator guide — with no process left behind.
//!
//! Single flight: `spawn.lock` is held from before the re-check until the new
//! daemon answers, so a client that waited for the lock finds the daemon ready.
//! While waiting, clients keep probing, so they return as soon as it answers.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::conn::Conn;
use super::dial::{DialOptions, Probe, probe};
use crate::error::{Error, ErrorKind, Result};
use crate::lock::FileLock;
use crate::paths::{self, Home, OpenMode};

/// First retry delay after spawning; doubles up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(5);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_millis(100);
/// At most this much of the log is quoted in an error.
const LOG_TAIL_MAX: u64 = 2048;
/// The operator guide every spawn failure points to.
const GUIDE: &str = "docs/operator-guide.md";

/// The one-line spawn failure: cause, log path, guide.
fn failure(kind: ErrorKind, home: &Home, cause: &str) -> Error {
    let cause = one_line(cause);
    Error::new(
        kind,
        format!(
            "cannot start the r1 daemon: {cause}; see {} and {GUIDE}",
            home.log_path().display()
        ),
    )
}

/// Joins lines with "; " so a message stays on one line.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Probes with a budget that fits what is left, never below a few ms.
fn probe_budget(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .min(Duration::from_millis(500))
        .max(Duration::from_millis(20))
}

/// Takes `spawn.lock`, re-checks, spawns, and waits for the handshake.
///
/// `stale` is the instance the first probe judged stale; later probes skip it
/// without connecting (its socket may be a squatter that never answers). Only that
/// first judgement is remembered: a daemon that appears later is always probed, so
/// a slow first answer never gets a fresh daemon written off.
pub(crate) async fn spawn_and_connect(
    home: &Home,
    opts: &DialOptions,
    deadline: Instant,
    first_reason: Error,
    stale: Option<String>,
) -> Result<Conn> {
    let mut reason = first_reason;
    let name = opts.client_name.as_deref();
    let h = home.clone();
    let prepared = tokio::task::spawn_blocking(move || -> Result<()> {
        h.ensure()?;
        paths::ensure_private_dir(&h.log_dir())
    })
    .await
    .map_err(|e| Error::internal(format!("spawn preparation task failed: {e}")))?;
    if let Err(e) = prepared {
        // An unsafe home stays unsafe: say so with its own kind.
        let kind = if e.kind() == ErrorKind::Unsafe {
            ErrorKind::Unsafe
        } else {
            ErrorKind::DaemonNotFound
        };
        return Err(failure(kind, home, e.message()));
    }

    // 1. The lock, bounded by the deadline; meanwhile another client may finish
    //    spawning, so keep probing.
    let lock_path = home.spawn_lock_path();
    let mut wait = BACKOFF_START;
    let _lock = loop {
        let p = lock_path.clone();
        let got = tokio::task::spawn_blocking(move || FileLock::try_acquire(&p))
            .await
            .map_err(|e| Error::internal(format!("spawn lock task failed: {e}")))?;
        match got {
            Ok(Some(lock)) => break lock,
            Ok(None) => {}
            Err(e) => return Err(failure(ErrorKind::DaemonNotFound, home, e.message())),
        }
        match probe(home, probe_budget(deadline), name, stale.as_deref()).await {
            Probe::Ready(conn) => return Ok(*conn),
            Probe::Fatal(e) => return Err(e),
            Probe::Absent { error, .. } => note(&mut reason, error, stale.as_deref()),
        }
        if Instant::now() >= deadline {
            return Err(failure(
                ErrorKind::Timeout,
                home,
                &format!(
                    "another client holds {} and no daemon answered within {:.1}s",
                    lock_path.display(),
                    opts.timeout.as_secs_f64()
                ),
            ));
        }
        tokio::time::sleep(wait.min(deadline.saturating_duration_since(Instant::now()))).await;
        wait = (wait * 2).min(BACKOFF_MAX);
    };

    // 2. Re-check under the lock: the previous holder may have started it.
    match probe(home, probe_budget(deadline), name, stale.as_deref()).await {
        Probe::Ready(conn) => return Ok(*conn),
        Probe::Fatal(e) => return Err(e),
        Probe::Absent { error, .. } => note(&mut reason, error, stale.as_deref()),
    }

    // 3. Spawn.
    let bin = resolve_bin(opts.r1_bin.as_deref())
        .map_err(|cause| failure(ErrorKind::DaemonNotFound, home, &cause))?;
    let log_path = home.log_path();
    let (log, log_start) =
        open_log(&log_path).map_err(|e| failure(ErrorKind::DaemonNotFound, home, e.message()))?;
    let mut child = start_child(&bin, home, log).map_err(|e| {
        failure(
            ErrorKind::DaemonNotFound,
            home,
            &format!("cannot run {}: {e}", bin.display()),
        )
    })?;
    let child_pid = child.id();
    tracing::info!(bin = %bin.display(), pid = ?child_pid, "spawned the r1 daemon");
    let started = Instant::now();

    // 4. Retry the handshake with backoff until the deadline.
    let mut wait = BACKOFF_START;
    let mut exited: Option<ExitStatus> = None;
    let mut last = reason;
    loop {
        if exited.is_none() {
            match child.try_wait() {
                Ok(Some(status)) if !status.success() => {
                    let tail = log_tail(&log_path, log_start);
                    let mut cause =
                        format!("`{} serve --detach` exited with {status}", bin.display());
                    if !tail.is_empty() {
                        cause.push_str(&format!(": {tail}"));
                    }
                    cause.push_str(&format!(" (dialing found: {})", last.message()));
                    return Err(failure(ErrorKind::DaemonNotFound, home, &cause));
                }
                Ok(Some(status)) => exited = Some(status),
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "cannot poll the spawned daemon"),
            }
        }
        match probe(home, probe_budget(deadline), name, stale.as_deref()).await {
            Probe::Ready(conn) => {
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "spawned daemon answered"
                );
                if exited.is_none() {
                    // `--detach` exits right after daemon.json is written: reap it
                    // now (briefly), else in the background, so no zombie stays.
                    let reaped =
                        tokio::time::timeout(Duration::from_millis(100), child.wait()).await;
                    if reaped.is_err() {
                        tokio::spawn(async move {
                            let _ = child.wait().await;
                        });
                    }
                }
                return Ok(*conn);
            }
            Probe::Fatal(e) => {
                kill_and_reap(&mut child, exited.is_none()).await;
                return Err(e);
            }
            Probe::Absent { error, .. } => note(&mut last, error, stale.as_deref()),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(wait.min(left)).await;
        wait = (wait * 2).min(BACKOFF_MAX);
    }
    // Timed out: leave nothing behind that we started and that is still starting.
    kill_and_reap(&mut child, exited.is_none()).await;
    let tail = log_tail(&log_path, log_start);
    let mut cause = format!(
        "`{} serve --detach` did not answer within {:.1}s",
        bin.display(),
        opts.timeout.as_secs_f64()
    );
    if exited.is_none() {
        cause.push_str(" and was killed");
    }
    cause.push_str(&format!(" (last: {})", last.message()));
    if !tail.is_empty() {
        cause.push_str(&format!("; log: {tail}"));
    }
    Err(failure(ErrorKind::Timeout, home, &cause))
}

/// Keeps the most telling reason: a probe that skipped the already-judged stale
/// file says less than the probe that judged it.
fn note(reason: &mut Error, error: Error, stale: Option<&str>) {
    if stale.is_some() && error.data().and_then(|d| d.get("skipped")).is_some() {
        return;
    }
    *reason = error;
}

/// The binary to spawn: the option, else `R1_BIN`, else `r1` beside the current
/// executable, else `r1` on `PATH`.
pub(crate) fn resolve_bin(explicit: Option<&Path>) -> std::result::Result<PathBuf, String> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("R1_BIN").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let beside = dir.join("r1");
        if is_executable(&beside) {
            return Ok(beside);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let cand = dir.join("r1");
            if is_executable(&cand) {
                return Ok(cand);
            }
        }
    }
    Err("no r1 binary found: set R1_BIN, or install r1 beside this program or on PATH".to_owned())
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Opens the log for appending (0600, no symlinks) and returns its current size,
/// so a failure can quote only what the spawned process wrote.
fn open_log(path: &Path) -> Result<(std::fs::File, u64)> {
    let mut f = paths::open_private(path, OpenMode::AppendCreate)?;
    let start = f
        .seek(SeekFrom::End(0))
        .map_err(|e| Error::io("cannot seek", path, e))?;
    Ok((f, start))
}

/// Starts `<bin> serve --detach` with `R1_HOME`, in its own session, stdin null and
/// stdout/stderr appended to the log.
fn start_child(
    bin: &Path,
    home: &Home,
    log: std::fs::File,
) -> std::io::Result<tokio::process::Child> {
    let err = log.try_clone()?;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("serve")
        .arg("--detach")
        .env("R1_HOME", home.root())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err));
    // SAFETY: `setsid` is async-signal-safe and touches no memory of the parent; it
    // runs in the forked child before exec. Its own session keeps the daemon out of
    // the caller's terminal job control (Ctrl-C in the shell that ran the client).
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn()
}

/// Kills the spawned process's group (it leads its own session, so the group holds
/// what it forked before detaching) and reaps it.
async fn kill_and_reap(child: &mut tokio::process::Child, running: bool) {
    if !running {
        return;
    }
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
}

/// What the spawned process wrote to the log, on one line (at most the last
/// [`LOG_TAIL_MAX`] bytes).
fn log_tail(path: &Path, from: u64) -> String {
    let Ok(mut f) = paths::open_private(path, OpenMode::Read) else {
        return String::new();
    };
    let end = f.seek(SeekFrom::End(0)).unwrap_or(from);
    let start = from.max(end.saturating_sub(LOG_TAIL_MAX));
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(LOG_TAIL_MAX).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let keep = lines.len().saturating_sub(4);
    one_line(&lines[keep..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_joins() {
        assert_eq!(one_line("a\n\n b \nc"), "a; b; c");
    }

    #[test]
    fn explicit_bin_wins() {
        assert_eq!(
            resolve_bin(Some(Path::new("/x/r1"))),
            Ok(PathBuf::from("/x/r1"))
        );
    }

    #[test]
    fn log_tail_quotes_only_new_lines() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("log");
        std::fs::write(&p, "old line\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let from = std::fs::metadata(&p).unwrap().len();
        std::fs::write(&p, "old line\nfirst\nsecond\n").unwrap();
        assert_eq!(log_tail(&p, from), "first; second");
    }
}
