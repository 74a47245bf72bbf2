//! Starting and stopping the daemon: [`Daemon::start`] → [`DaemonHandle`].
//!
//! Start order (DESIGN §3): home check → lock → recover sessions → bind the unix
//! socket and the loopback port → write `daemon.json` → serve. Nothing is advertised
//! before it accepts connections.
//!
//! ```no_run
//! # async fn demo() -> r1_core::Result<()> {
//! let handle = r1_core::Daemon::start(r1_core::DaemonConfig {
//!     home: Some("/tmp/r1-demo".into()),
//!     ..Default::default()
//! })
//! .await?;
//! println!("listening on {:?}", handle.discovery().sock_path);
//! handle.stop().await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::discovery::{self, Discovery, PROTOCOL_VERSION};
use crate::driver::{DriverFactory, builtin_factories};
use crate::error::{Error, ErrorKind, Result};
use crate::journal::WriterOptions;
use crate::lock;
use crate::paths::{self, Home};
use crate::rpc::dispatch::Dispatcher;
use crate::server::auth::Auth;
use crate::server::state::{DaemonInfo, DaemonState};
use crate::server::{http, unix};
use crate::session::hub::{Hub, HubConfig};
use crate::time_fmt;
use crate::token::{self, Token};

/// How a daemon is started. `Default` is what `r1 serve` does with no flags.
#[derive(Clone)]
pub struct DaemonConfig {
    /// The home (`None`: `R1_HOME`, else `~/.r1`).
    pub home: Option<PathBuf>,
    /// Socket path override (`None`: chosen per DESIGN §2).
    pub sock_path: Option<PathBuf>,
    /// Bearer token (`None`: a fresh random one).
    pub token: Option<Token>,
    /// Listen on the unix socket.
    pub unix: bool,
    /// Listen on loopback HTTP/WebSocket.
    pub tcp: bool,
    /// Loopback port (0 = ephemeral).
    pub port: u16,
    /// Refuse a second unfinished session.
    pub single_session: bool,
    /// Extra allowed Origins (`chrome-extension://<id>`, `null` …).
    pub allow_origins: Vec<String>,
    /// Group-commit window for non-durable records.
    pub fsync_interval: Duration,
    /// Shut down after this long with no session running and no client connected.
    pub idle_exit: Option<Duration>,
    /// How long drivers get to stop at shutdown.
    pub shutdown_grace: Duration,
    /// Handle SIGTERM/SIGINT (the `r1 serve` process; off for embedders).
    pub handle_signals: bool,
    /// Drivers by name (`shell` and `exec` are built in).
    pub drivers: BTreeMap<String, Arc<dyn DriverFactory>>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            home: None,
            sock_path: None,
            token: None,
            unix: true,
            tcp: true,
            port: 0,
            single_session: false,
            allow_origins: Vec::new(),
            fsync_interval: Duration::from_millis(100),
            idle_exit: None,
            shutdown_grace: Duration::from_secs(5),
            handle_signals: false,
            drivers: builtin_factories(),
        }
    }
}

impl std::fmt::Debug for DaemonConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonConfig")
            .field("home", &self.home)
            .field("sock_path", &self.sock_path)
            .field("unix", &self.unix)
            .field("tcp", &self.tcp)
            .field("drivers", &self.drivers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl DaemonConfig {
    /// Registers a custom driver under `name`.
    pub fn with_driver(mut self, name: impl Into<String>, factory: Arc<dyn DriverFactory>) -> Self {
        self.drivers.insert(name.into(), factory);
        self
    }
}

/// The daemon type; see [`Daemon::start`].
#[derive(Debug)]
pub struct Daemon;

/// A running daemon. Dropping it does not stop the daemon; call [`DaemonHandle::stop`].
#[derive(Debug, Clone)]
pub struct DaemonHandle {
    state: Arc<DaemonState>,
    discovery: Discovery,
    done: watch::Receiver<bool>,
}

impl Daemon {
    /// Starts a daemon on the current tokio runtime and returns once `daemon.json` is
    /// written. Lock contention is an error of kind `Conflict` whose message is the
    /// two lines of DESIGN §3.
    pub async fn start(cfg: DaemonConfig) -> Result<DaemonHandle> {
        if !cfg.unix && !cfg.tcp {
            return Err(Error::invalid_params(
                "--no-unix and --no-tcp together leave no way to reach the daemon",
            ));
        }
        let home = Home::resolve(cfg.home.as_deref())?;
        let home2 = home.clone();
        let lock = tokio::task::spawn_blocking(move || -> Result<lock::FileLock> {
            home2.ensure()?;
            paths::ensure_private_dir(&home2.log_dir())?;
            Ok(lock::acquire_daemon_lock(&home2)?)
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))??;

        let instance_id = token::random_hex(16);
        let master = match cfg.token.clone() {
            Some(t) => t,
            None => Token::generate()?,
        };
        let hub_cfg = HubConfig {
            home: home.clone(),
            drivers: cfg.drivers.clone(),
            writer: WriterOptions {
                fsync_interval: cfg.fsync_interval,
                ..WriterOptions::default()
            },
            single_session: cfg.single_session,
            instance_id: instance_id.clone(),
        };
        let hub = tokio::task::spawn_blocking(move || Hub::open(hub_cfg))
            .await
            .map_err(|e| Error::internal(e.to_string()))??;

        let unix_listener = if cfg.unix {
            let sock = match &cfg.sock_path {
                Some(p) => p.clone(),
                None => home.socket_path()?,
            };
            Some((bind_unix(&sock)?, sock))
        } else {
            None
        };
        let tcp_listener = if cfg.tcp {
            let l = TcpListener::bind(("127.0.0.1", cfg.port)).await.map_err(|e| {
                Error::new(ErrorKind::Io, format!("cannot listen on 127.0.0.1:{}: {e}; pass --no-tcp to run on the unix socket only", cfg.port))
            })?;
            let port = l
                .local_addr()
                .map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?
                .port();
            Some((l, port))
        } else {
            None
        };

        let started_at = time_fmt::now_seconds();
        let info = DaemonInfo {
            pid: std::process::id(),
            instance_id: instance_id.clone(),
            started_at: started_at.clone(),
            started: Instant::now(),
            sock_path: unix_listener.as_ref().map(|(_, p)| p.clone()),
            port: tcp_listener.as_ref().map(|(_, p)| *p),
            home: home.root().to_path_buf(),
            log_path: home.log_path(),
        };
        let shutdown = CancellationToken::new();
        let state = Arc::new(DaemonState::new(
            Arc::clone(&hub),
            Auth::new(master.clone(), cfg.allow_origins.clone()),
            info.clone(),
            shutdown.clone(),
            cfg.shutdown_grace,
        ));
        let rpc = Dispatcher::new(Arc::clone(&state));
        let mut servers = Vec::new();
        if let Some((l, _)) = unix_listener {
            servers.push(tokio::spawn(unix::serve(l, rpc.clone())));
        }
        if let Some((l, _)) = tcp_listener {
            servers.push(tokio::spawn(http::serve(l, rpc.clone())));
        }

        let disc = Discovery {
            pid: info.pid,
            version: crate::VERSION.to_owned(),
            protocol_version: PROTOCOL_VERSION,
            instance_id: instance_id.clone(),
            sock_path: info.sock_path.clone(),
            host: info.port.map(|_| "127.0.0.1".to_owned()),
            port: info.port,
            token: master,
            cert_fingerprint: None,
            started_at,
        };
        // Signals are watched before discovery is written: a service manager (or a
        // script) that sends SIGTERM as soon as `daemon.json` appears must get a
        // graceful shutdown, not the default action.
        if cfg.handle_signals
            && let Err(e) = spawn_signal_watch(shutdown.clone())
        {
            shutdown.cancel();
            return Err(e);
        }
        let (d2, h2) = (disc.clone(), home.clone());
        let written = tokio::task::spawn_blocking(move || d2.write(&h2))
            .await
            .map_err(|e| Error::internal(e.to_string()))?;
        if let Err(e) = written {
            shutdown.cancel();
            return Err(e);
        }
        tracing::info!(pid = info.pid, sock = ?info.sock_path, port = ?info.port, instance_id = %instance_id, "daemon started");

        let (done_tx, done_rx) = watch::channel(false);
        if let Some(idle) = cfg.idle_exit {
            spawn_idle_watch(Arc::clone(&state), idle);
        }
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            st.shutdown.cancelled().await;
            run_shutdown(&st, servers, lock).await;
            let _ = done_tx.send(true);
        });
        Ok(DaemonHandle {
            state,
            discovery: disc,
            done: done_rx,
        })
    }
}

async fn run_shutdown(
    state: &Arc<DaemonState>,
    servers: Vec<tokio::task::JoinHandle<()>>,
    lock: lock::FileLock,
) {
    tracing::info!("shutting down");
    for s in servers {
        let _ = s.await;
    }
    let grace = Duration::from_millis(state.grace_ms.load(std::sync::atomic::Ordering::Relaxed));
    state.hub.shutdown(grace).await;
    state.broadcast_notice("daemon.stopping", serde_json::json!({}));
    state.closing.cancel();
    // Let connection writers flush the notice.
    let deadline = Instant::now() + Duration::from_secs(1);
    while state.connection_count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let home = state.hub.home().clone();
    let instance = state.info.instance_id.clone();
    let sock = state.info.sock_path.clone();
    let _ = tokio::task::spawn_blocking(move || {
        discovery::remove_if_ours(&home, &instance);
        if let Some(s) = sock {
            let _ = std::fs::remove_file(s);
        }
        drop(lock);
    })
    .await;
    tracing::info!("daemon stopped");
}

fn spawn_signal_watch(shutdown: CancellationToken) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot watch SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot watch SIGINT: {e}")))?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
            _ = shutdown.cancelled() => return,
        }
        shutdown.cancel();
    });
    Ok(())
}

fn spawn_idle_watch(state: Arc<DaemonState>, idle: Duration) {
    tokio::spawn(async move {
        let tick = idle
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = state.shutdown.cancelled() => return,
            }
            if state.idle_for().is_some_and(|d| d >= idle) {
                tracing::info!(idle_s = idle.as_secs_f64(), "idle: shutting down");
                state.shutdown.cancel();
                return;
            }
        }
    });
}

/// Binds the socket. A socket file already there is probed first (we hold the daemon
/// lock, so nobody else is about to bind it): live → refuse; dead → unlink.
fn bind_unix(sock: &Path) -> Result<UnixListener> {
    if !paths::fits_sun_path(sock) {
        return Err(Error::invalid_params(format!(
            "socket path {} is longer than the {}-byte sun_path limit",
            sock.display(),
            paths::SUN_PATH_MAX
        )));
    }
    if let Some(dir) = sock.parent() {
        paths::ensure_private_dir(dir)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(sock) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(Error::new(
                ErrorKind::Unsafe,
                format!("{} exists and is not a socket; remove it", sock.display()),
            ));
        }
        if std::os::unix::net::UnixStream::connect(sock).is_ok() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "another process is listening on {}; stop it or choose another socket",
                    sock.display()
                ),
            ));
        }
        std::fs::remove_file(sock).map_err(|e| Error::io("cannot remove stale socket", sock, e))?;
    }
    let l = UnixListener::bind(sock).map_err(|e| Error::io("cannot bind", sock, e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io("cannot chmod", sock, e))?;
    Ok(l)
}

impl DaemonHandle {
    /// What `daemon.json` says.
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// The unix socket, if on.
    pub fn sock_path(&self) -> Option<&Path> {
        self.discovery.sock_path.as_deref()
    }

    /// The loopback port, if on.
    pub fn port(&self) -> Option<u16> {
        self.discovery.port
    }

    /// The current master token.
    pub fn token(&self) -> Token {
        self.state.auth.master()
    }

    /// The home.
    pub fn home(&self) -> &Path {
        &self.state.info.home
    }

    /// This start's instance id.
    pub fn instance_id(&self) -> &str {
        &self.state.info.instance_id
    }

    /// Shared state (tests and embedders that need the hub directly).
    #[doc(hidden)]
    pub fn state(&self) -> &Arc<DaemonState> {
        &self.state
    }

    /// Begins graceful shutdown (returns at once).
    pub fn shutdown(&self) {
        self.state.shutdown.cancel();
    }

    /// Waits until the daemon has fully stopped.
    pub async fn wait(&self) -> Result<()> {
        let mut d = self.done.clone();
        d.wait_for(|v| *v)
            .await
            .map_err(|_| Error::internal("daemon task vanished"))?;
        Ok(())
    }

    /// [`shutdown`](Self::shutdown) then [`wait`](Self::wait).
    pub async fn stop(&self) -> Result<()> {
        self.shutdown();
        self.wait().await
    }
}
