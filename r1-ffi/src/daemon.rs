//! `r1_daemon_start` / `r1_daemon_stop`: run the daemon inside the calling process.
//!
//! `Daemon::start` is async; C has no runtime, so each `R1Daemon` owns a tokio
//! multi-thread runtime that lives exactly as long as the daemon.

use std::ffi::c_char;
use std::path::PathBuf;
use std::time::Duration;

use r1_core::{DaemonConfig, DaemonHandle};
use serde::Deserialize;

use crate::boundary::{self, Failure, FfiResult, json_arg, out_arg, str_arg};
use crate::handle;
use crate::status::R1Status;

/// An embedded daemon and the runtime it runs on. Opaque to C.
pub struct R1Daemon {
    runtime: tokio::runtime::Runtime,
    handle: DaemonHandle,
}

/// How long `r1_daemon_stop` lets runtime threads finish after the daemon stopped
/// (blocking file work in flight) before it stops waiting for them.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(5);

/// The JSON accepted by `r1_daemon_start`. Every field is optional; unknown fields are
/// refused so a misspelt option is not silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    home: Option<PathBuf>,
    sock_path: Option<PathBuf>,
    unix: Option<bool>,
    tcp: Option<bool>,
    port: Option<u16>,
    single_session: Option<bool>,
    #[serde(default)]
    allow_origins: Vec<String>,
    fsync_interval_ms: Option<u64>,
    idle_exit_ms: Option<u64>,
    shutdown_grace_ms: Option<u64>,
    worker_threads: Option<usize>,
}

impl Config {
    fn into_daemon_config(self) -> DaemonConfig {
        let d = DaemonConfig::default();
        DaemonConfig {
            home: self.home,
            sock_path: self.sock_path,
            unix: self.unix.unwrap_or(d.unix),
            tcp: self.tcp.unwrap_or(d.tcp),
            port: self.port.unwrap_or(d.port),
            single_session: self.single_session.unwrap_or(d.single_session),
            allow_origins: self.allow_origins,
            fsync_interval: self
                .fsync_interval_ms
                .map(Duration::from_millis)
                .unwrap_or(d.fsync_interval),
            idle_exit: self.idle_exit_ms.map(Duration::from_millis).or(d.idle_exit),
            shutdown_grace: self
                .shutdown_grace_ms
                .map(Duration::from_millis)
                .unwrap_or(d.shutdown_grace),
            // The host process owns its signals; an embedded daemon never takes them.
            handle_signals: false,
            ..d
        }
    }
}

/// Starts a daemon inside this process and returns once it accepts connections and
/// its `daemon.json` is written (clients in this or any process of the same user can
/// then `r1_client_dial` it).
///
/// `config_json`: a JSON object, every field optional — `home` (string; default
/// `$R1_HOME`, else `~/.r1`), `sock_path`, `unix` (bool, default true), `tcp` (bool,
/// default true: loopback HTTP), `port` (0 = ephemeral), `single_session`,
/// `allow_origins` (array of strings), `fsync_interval_ms` (default 100),
/// `idle_exit_ms`, `shutdown_grace_ms` (default 5000), `worker_threads` (the
/// runtime's, default 2). Unknown fields are refused. NULL means `{}`.
///
/// On success `*out` receives a handle that must be passed to `r1_daemon_stop`
/// exactly once; on error it is set to NULL. The daemon does not install signal
/// handlers: the embedding program decides when to stop it.
///
/// Thread-safe. Returns `R1_STATUS_OK`, `R1_STATUS_NULL_ARGUMENT` (`out`),
/// `R1_STATUS_INVALID_ARGUMENT` (bad JSON or option; or a daemon already running in
/// that home — the last error says `daemon already running, pid=…`),
/// `R1_STATUS_UNSAFE` (home or socket directory with an unsafe owner or mode),
/// `R1_STATUS_IO`.
///
/// # Safety
/// `config_json` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn r1_daemon_start(
    config_json: *const c_char,
    out: *mut *mut R1Daemon,
) -> R1Status {
    boundary::status(|| {
        // SAFETY: the caller's contract above.
        let out = unsafe { out_arg(out, "out") }?;
        let text = if config_json.is_null() {
            "{}"
        } else {
            // SAFETY: the caller's contract above.
            unsafe { str_arg(config_json, "config_json") }?
        };
        let daemon = start(text)?;
        *out = handle::into_raw(daemon);
        Ok(())
    })
}

fn start(text: &str) -> FfiResult<R1Daemon> {
    let value = json_arg(text, "config_json")?;
    let cfg: Config =
        serde_json::from_value(value).map_err(|e| Failure::invalid(format!("config_json: {e}")))?;
    let threads = cfg.worker_threads.unwrap_or(2).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("r1-daemon")
        .enable_all()
        .build()
        .map_err(|e| Failure::new(R1Status::Io, format!("cannot start a tokio runtime: {e}")))?;
    let cfg = cfg.into_daemon_config();
    let handle = outside_runtime(|| runtime.block_on(r1_core::Daemon::start(cfg)));
    match handle {
        Ok(handle) => Ok(R1Daemon { runtime, handle }),
        Err(e) => {
            runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
            Err(e.into())
        }
    }
}

/// Runs `f` (which blocks on or drops a runtime) on this thread, or — when this
/// thread is itself inside a tokio runtime, as a Rust program calling through the C
/// ABI may be — on a helper thread, since tokio panics on blocking inside a runtime.
fn outside_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        // Re-raise on this thread: the export's boundary turns it into R1_STATUS_PANIC.
        Err(payload) => std::panic::resume_unwind(payload),
    })
}

/// Stops an embedded daemon gracefully (DESIGN §6: sessions paused, journals synced,
/// discovery and socket removed, lock released), waits for it, and frees `d`.
///
/// `d` is freed whatever the status; it must not be used afterwards. NULL returns
/// `R1_STATUS_NULL_ARGUMENT`.
///
/// Thread-safe with respect to other handles; call it once per daemon, not
/// concurrently with itself. Blocks for up to the shutdown grace period (default 5 s)
/// plus a few seconds. Returns `R1_STATUS_OK`, `R1_STATUS_NULL_ARGUMENT`,
/// `R1_STATUS_PANIC` (the daemon task vanished: a bug).
///
/// # Safety
/// `d` is NULL or a live handle from `r1_daemon_start`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn r1_daemon_stop(d: *mut R1Daemon) -> R1Status {
    boundary::status(|| {
        // SAFETY: the caller's contract above.
        let d = unsafe { handle::take(d) }.ok_or_else(|| Failure::null("d"))?;
        let R1Daemon { runtime, handle } = *d;
        outside_runtime(move || {
            let stopped = runtime.block_on(handle.stop());
            drop(handle);
            runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
            stopped
        })?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starting and stopping from a thread that is inside a tokio runtime works
    /// (through the helper thread) instead of panicking.
    #[test]
    fn start_and_stop_inside_a_runtime() {
        let home = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let cfg =
            serde_json::json!({"home": home.path(), "tcp": false, "worker_threads": 1}).to_string();
        rt.block_on(async {
            let d = start(&cfg).unwrap_or_else(|f| panic!("start: {}", f.message));
            let handle = handle::into_raw(d);
            // SAFETY: `handle` was just created and is stopped exactly once.
            assert_eq!(unsafe { r1_daemon_stop(handle) }, R1Status::Ok);
        });
    }

    #[test]
    fn config_refuses_unknown_fields() {
        match start(r#"{"hmoe":"/tmp"}"#) {
            Err(f) => {
                assert_eq!(f.status, R1Status::InvalidArgument);
                assert!(f.message.contains("hmoe"), "{}", f.message);
            }
            Ok(_) => panic!("an unknown field was accepted"),
        }
    }
}
