//! `r1.Daemon`: a daemon embedded in the Python process (tests, notebooks, tools
//! that want a private daemon), over [`r1_core::Daemon::start`].
//!
//! `Daemon::start` is async and its listeners and sessions are tokio tasks, so each
//! `r1.Daemon` owns a multi-threaded tokio runtime that lives until `stop()`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyType;
use r1_core::token::Token;
use r1_core::{Daemon as CoreDaemon, DaemonConfig, DaemonHandle};
use tokio::runtime::Runtime;

use crate::convert;
use crate::discovery::Discovery;
use crate::errors::{self, Result, guard, lock};
use crate::timeout;

/// How long `stop()` (and a forgotten daemon's finaliser) waits for runtime tasks
/// that ignore the shutdown to finish before abandoning them.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(5);

/// Worker threads of the daemon's runtime: the daemon is I/O bound, and the test
/// machines have two cores.
const WORKER_THREADS: usize = 2;

struct Running {
    rt: Runtime,
    handle: DaemonHandle,
}

/// One daemon's slot: `None` once stopped.
type Slot = Arc<Mutex<Option<Running>>>;

/// Every embedded daemon not yet stopped, for [`_stop_all_daemons`] at interpreter
/// exit: a daemon still referenced then (a global, a thread's frame) is never
/// dropped, and would leave its discovery file and unclean journals behind.
static LIVE: Mutex<Vec<Weak<Mutex<Option<Running>>>>> = Mutex::new(Vec::new());

/// Stops every embedded daemon still running. `r1/__init__.py` registers it with
/// `atexit`; not for other use.
#[pyfunction]
pub fn _stop_all_daemons(py: Python<'_>) {
    let slots = std::mem::take(&mut *lock(&LIVE));
    py.detach(|| {
        for slot in slots.iter().filter_map(Weak::upgrade) {
            let running = lock(&slot).take();
            if let Some(r) = running {
                // At exit there is no one to report to; the journals are safe
                // either way (every record reached the kernel before broadcast).
                let _ = r.stop();
            }
        }
    });
}

impl Running {
    /// Graceful stop: sessions paused, journals fsync'd, discovery and socket
    /// removed, lock released. Blocks; call without the GIL.
    fn stop(self) -> r1_core::Result<()> {
        let Running { rt, handle } = self;
        let result = rt.block_on(async move { handle.stop().await });
        rt.shutdown_timeout(RUNTIME_SHUTDOWN);
        result
    }
}

/// An r1 daemon running inside this Python process, in a home of its own.
///
/// Start one with :meth:`Daemon.start`; stop it with :meth:`stop` or by leaving
/// its ``with`` block. Clients reach it like any daemon (``r1.dial(home=...)``).
/// Attributes: ``home``, ``sock_path``, ``port``, ``instance_id``, ``discovery``.
#[pyclass(module = "r1", frozen)]
pub struct Daemon {
    running: Slot,
    home: String,
    sock_path: Option<String>,
    port: Option<u16>,
    instance_id: String,
    discovery: Py<Discovery>,
}

#[pymethods]
impl Daemon {
    /// Starts a daemon and returns once its discovery file is written (it accepts
    /// connections from then on).
    ///
    /// ``home``: its ``R1_HOME`` (default: ``$R1_HOME``, else ``~/.r1``). Options
    /// (keyword-only) mirror ``r1 serve``: ``sock_path``, ``unix`` / ``tcp``
    /// (listeners, both on by default), ``port`` (0 = ephemeral),
    /// ``single_session``, ``allow_origins``, ``fsync_interval_ms``,
    /// ``idle_exit_s``, ``shutdown_grace_s``, ``token``.
    ///
    /// Raises ``R1Error`` with ``kind == "conflict"`` when another daemon holds the
    /// home, ``UnsafeDiscovery`` when the home has unsafe modes or owner,
    /// ``InvalidArgument`` for options it cannot use, ``IoError`` when it cannot
    /// bind or write.
    #[staticmethod]
    #[pyo3(signature = (
        home = None,
        *,
        sock_path = None,
        unix = true,
        tcp = true,
        port = 0,
        single_session = false,
        allow_origins = None,
        fsync_interval_ms = 100.0,
        idle_exit_s = None,
        shutdown_grace_s = 5.0,
        token = None,
    ))]
    #[allow(clippy::too_many_arguments)] // one per `r1 serve` flag, as Python keywords
    fn start(
        py: Python<'_>,
        home: Option<PathBuf>,
        sock_path: Option<PathBuf>,
        unix: bool,
        tcp: bool,
        port: i128,
        single_session: bool,
        allow_origins: Option<Vec<String>>,
        fsync_interval_ms: f64,
        idle_exit_s: Option<f64>,
        shutdown_grace_s: f64,
        token: Option<String>,
    ) -> PyResult<Daemon> {
        guard(|| {
            let cfg = DaemonConfig {
                home,
                sock_path,
                token: token.as_deref().map(Token::parse).transpose()?,
                unix,
                tcp,
                port: convert::port(port, "port")?,
                single_session,
                allow_origins: allow_origins.unwrap_or_default(),
                fsync_interval: timeout::seconds(fsync_interval_ms / 1000.0, "fsync_interval_ms")?,
                idle_exit: timeout::optional(idle_exit_s, "idle_exit_s")?,
                shutdown_grace: timeout::seconds(shutdown_grace_s, "shutdown_grace_s")?,
                handle_signals: false,
                ..DaemonConfig::default()
            };
            let running = py.detach(|| -> Result<Running> {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(WORKER_THREADS)
                    .thread_name("r1-daemon")
                    .enable_all()
                    .build()
                    .map_err(|e| {
                        r1_core::Error::new(
                            r1_core::ErrorKind::Io,
                            format!("cannot start the daemon's runtime: {e}"),
                        )
                    })?;
                // Build the future inside the runtime's context: tokio resources
                // (listeners, timers) register with the reactor they are made in.
                let handle = rt.block_on(async move { CoreDaemon::start(cfg).await })?;
                Ok(Running { rt, handle })
            })?;
            let d = running.handle.discovery().clone();
            let discovery = Py::new(py, Discovery::from_core(&d))?;
            let home = running.handle.home().display().to_string();
            let slot: Slot = Arc::new(Mutex::new(Some(running)));
            {
                let mut live = lock(&LIVE);
                live.retain(|w| w.strong_count() > 0);
                live.push(Arc::downgrade(&slot));
            }
            Ok(Daemon {
                home,
                sock_path: d.sock_path.as_ref().map(|p| p.display().to_string()),
                port: d.port,
                instance_id: d.instance_id.clone(),
                discovery,
                running: slot,
            })
        })
    }

    /// Stops the daemon gracefully (running sessions are paused and can be resumed
    /// by the next daemon on this home). Idempotent.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        guard(|| {
            py.detach(|| match lock(&self.running).take() {
                Some(r) => r.stop().map_err(errors::Error::from),
                None => Ok(()),
            })
        })
    }

    /// Whether the daemon is running (it stops on :meth:`stop`, on
    /// ``daemon.shutdown`` from a client, or after ``idle_exit_s``).
    #[getter]
    fn running(&self) -> bool {
        match lock(&self.running).as_ref() {
            Some(r) => !r.handle.state().shutdown.is_cancelled(),
            None => false,
        }
    }

    /// The daemon's home directory.
    #[getter]
    fn home(&self) -> &str {
        &self.home
    }

    /// The unix socket path, or ``None`` with ``unix=False``.
    #[getter]
    fn sock_path(&self) -> Option<&str> {
        self.sock_path.as_deref()
    }

    /// The loopback HTTP port, or ``None`` with ``tcp=False``.
    #[getter]
    fn port(&self) -> Option<u16> {
        self.port
    }

    /// This start's instance id.
    #[getter]
    fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// What the daemon wrote to ``daemon.json``.
    #[getter]
    fn discovery(&self, py: Python<'_>) -> Py<Discovery> {
        self.discovery.clone_ref(py)
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (_exc_type = None, _exc = None, _tb = None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<Bound<'_, PyType>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.stop(py)?;
        Ok(false)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let home = self.home.clone().into_pyobject(py)?.repr()?;
        let sock = self.sock_path.clone().into_pyobject(py)?.repr()?;
        let port = self.port.into_pyobject(py)?.repr()?;
        let running = if self.running() { "True" } else { "False" };
        Ok(format!(
            "r1.Daemon(home={home}, sock_path={sock}, port={port}, running={running})"
        ))
    }
}

impl Drop for Daemon {
    /// A daemon dropped without `stop()` (garbage collected, interpreter exit) is
    /// still stopped gracefully: dropping the runtime alone would kill its tasks
    /// mid-write and leave the discovery file behind.
    fn drop(&mut self) {
        let running = lock(&self.running).take();
        if let Some(r) = running {
            // Nothing to report to: the object is gone. The journals are safe
            // either way (every record reached the kernel before broadcast).
            let _ = Python::attach(|py| py.detach(|| r.stop()));
        }
    }
}
