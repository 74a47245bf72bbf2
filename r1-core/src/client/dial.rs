//! Finding and reaching the daemon over its unix socket: [`discover`], [`dial`]
//! and [`DialOptions`] (DESIGN §3, §8).
//!
//! `dial` trusts nothing it reads: a discovery file is only believed once the
//! process it names is alive, its socket answers `daemon.hello`, and the answer's
//! `instance_id` is the file's (a reused pid or a squatter on the socket is never
//! mistaken for the daemon). Anything else is *stale*, and — when spawning is
//! allowed — a fresh daemon is started (`spawn.rs`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};

use super::api::{Client, Dialer};
use super::conn::{Conn, Link};
use super::spawn;
use super::types::Hello;
use crate::discovery::{self, Discovery, PROTOCOL_VERSION};
use crate::error::{Error, ErrorKind, Result};
use crate::paths::Home;
use crate::server::unix::MAX_LINE;

/// The default [`DialOptions::timeout`].
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// The default [`DialOptions::call_timeout`].
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The default [`DialOptions::reconnect_for`].
pub const DEFAULT_RECONNECT_FOR: Duration = Duration::from_secs(60);

/// How [`dial`] finds and reaches the daemon. Build with [`DialOptions::new`] and the
/// setters; every field has a default.
///
/// ```
/// use std::time::Duration;
/// let opts = r1_core::DialOptions::new()
///     .home("/tmp/r1-home")
///     .spawn(false)
///     .timeout(Duration::from_secs(5));
/// assert!(!opts.spawn);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DialOptions {
    /// The home whose `daemon.json` to read (`None`: `R1_HOME`, else `~/.r1`).
    pub home: Option<PathBuf>,
    /// Connect exactly to this socket, skipping discovery (and never spawning).
    pub sock_path: Option<PathBuf>,
    /// Start `r1 serve --detach` when no daemon answers. **Default `true`**, as in the
    /// CLI and the bindings; embedders that run their own daemon set it to `false`.
    pub spawn: bool,
    /// The whole dial's budget, spawning included (default 2 s).
    pub timeout: Duration,
    /// Each call's default timeout (default 30 s; see [`Client::call_with_timeout`]).
    pub call_timeout: Duration,
    /// How long a [`Subscription`](super::Subscription) or a call keeps trying to
    /// reach the daemon again after the connection is lost (default 60 s).
    pub reconnect_for: Duration,
    /// The binary to spawn (`None`: `R1_BIN`, else `r1` beside the current
    /// executable, else `r1` on `PATH`).
    pub r1_bin: Option<PathBuf>,
    /// A name for the daemon's log (`daemon.hello` `client`).
    pub client_name: Option<String>,
}

impl Default for DialOptions {
    fn default() -> Self {
        DialOptions {
            home: None,
            sock_path: None,
            spawn: true,
            timeout: DEFAULT_DIAL_TIMEOUT,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            reconnect_for: DEFAULT_RECONNECT_FOR,
            r1_bin: None,
            client_name: None,
        }
    }
}

impl DialOptions {
    /// The defaults: discovery in the default home, spawning allowed, 2 s.
    pub fn new() -> DialOptions {
        DialOptions::default()
    }
    /// Sets [`home`](Self::home).
    pub fn home(mut self, home: impl Into<PathBuf>) -> Self {
        self.home = Some(home.into());
        self
    }
    /// Sets [`sock_path`](Self::sock_path).
    pub fn sock_path(mut self, sock: impl Into<PathBuf>) -> Self {
        self.sock_path = Some(sock.into());
        self
    }
    /// Sets [`spawn`](Self::spawn).
    pub fn spawn(mut self, spawn: bool) -> Self {
        self.spawn = spawn;
        self
    }
    /// Sets [`timeout`](Self::timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Sets [`call_timeout`](Self::call_timeout).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }
    /// Sets [`reconnect_for`](Self::reconnect_for).
    pub fn reconnect_for(mut self, window: Duration) -> Self {
        self.reconnect_for = window;
        self
    }
    /// Sets [`r1_bin`](Self::r1_bin).
    pub fn r1_bin(mut self, bin: impl Into<PathBuf>) -> Self {
        self.r1_bin = Some(bin.into());
        self
    }
    /// Sets [`client_name`](Self::client_name).
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = Some(name.into());
        self
    }
}

/// Reads and validates `daemon.json` in `home` (`None`: `R1_HOME`, else `~/.r1`).
/// Never spawns, never connects.
///
/// Errors: missing (or malformed) → [`ErrorKind::DaemonNotFound`]; a symlink, another
/// owner or group/other mode bits → [`ErrorKind::Unsafe`]; a file whose pid is not
/// running → [`ErrorKind::DaemonNotFound`] with a message saying the file is stale.
/// (A live pid can still be stale — reused, or not the daemon; [`dial`] checks.)
pub fn discover(home: Option<&Path>) -> Result<Discovery> {
    let home = Home::resolve(home)?;
    let d = discovery::read(&home).map_err(Error::from)?;
    if discovery::is_stale_by_pid(&d) {
        return Err(stale_pid(&home, &d));
    }
    Ok(d)
}

fn stale_pid(home: &Home, d: &Discovery) -> Error {
    Error::new(
        ErrorKind::DaemonNotFound,
        format!(
            "the discovery file {} is stale: pid {} is not running (the daemon died without cleaning up); start one with `r1 serve` — it replaces the file",
            home.discovery_path().display(),
            d.pid
        ),
    )
}

/// Finds the daemon, starting one if allowed, and returns a connected [`Client`].
///
/// Order: discovery → unix socket → `daemon.hello` (protocol version and
/// `instance_id` checked). When there is no daemon, or the discovery file is stale
/// (pid dead, socket not answering, instance mismatch), and `opts.spawn` is true:
/// take `spawn.lock`, check again, start `<r1> serve --detach` in its own session
/// with stdio appended to `log/r1.log`, and retry with backoff until the handshake
/// succeeds or `opts.timeout` passes. Racing clients start one daemon.
///
/// Errors: no daemon and `spawn == false` → [`ErrorKind::DaemonNotFound`] (the
/// message says why: missing, stale pid, not answering, instance mismatch); an
/// unsafe discovery file → [`ErrorKind::Unsafe`]; a daemon of another protocol
/// version → [`ErrorKind::UnsupportedVersion`]; a failed spawn → one line naming
/// the cause, the log and `docs/operator-guide.md`.
pub async fn dial(opts: DialOptions) -> Result<Client> {
    let conn = connect(&opts).await?;
    Ok(Client::from_conn(conn, Dialer::Unix(opts)))
}

/// Dials once per the options (also used to reconnect).
pub(crate) async fn connect(opts: &DialOptions) -> Result<Conn> {
    let deadline = Instant::now() + opts.timeout;
    let name = opts.client_name.as_deref();
    if let Some(sock) = &opts.sock_path {
        return connect_sock(sock, opts.timeout, name)
            .await
            .map(|(link, hello)| link.finish(hello, None));
    }
    let home = Home::resolve(opts.home.as_deref())?;
    // With spawning allowed, a squatter that never answers must not eat the whole
    // budget: a real daemon answers hello in microseconds.
    let probe_budget = if opts.spawn {
        (opts.timeout / 4).min(Duration::from_millis(500))
    } else {
        opts.timeout
    };
    match probe(&home, probe_budget, name, None).await {
        Probe::Ready(conn) => Ok(*conn),
        Probe::Fatal(e) => Err(e),
        Probe::Absent { error, .. } if !opts.spawn => Err(error),
        Probe::Absent {
            error,
            stale_instance,
        } => spawn::spawn_and_connect(&home, opts, deadline, error, stale_instance).await,
    }
}

/// What a look at the discovery file and its socket found.
pub(crate) enum Probe {
    /// A checked connection to the daemon.
    Ready(Box<Conn>),
    /// No usable daemon: missing or stale. Spawning may fix it.
    Absent {
        /// Why (a `DaemonNotFound` error naming the file and the reason).
        error: Error,
        /// The stale file's `instance_id`, so later probes skip it without
        /// connecting to whatever squats its socket again.
        stale_instance: Option<String>,
    },
    /// Something spawning would not fix (unsafe file, version skew, I/O).
    Fatal(Error),
}

/// Reads discovery and, if it names a live process, connects and says hello.
pub(crate) async fn probe(
    home: &Home,
    budget: Duration,
    client_name: Option<&str>,
    skip_instance: Option<&str>,
) -> Probe {
    // Read inline, not on the blocking pool: one open/fstat/read of a sub-KiB
    // private file and a kill(pid, 0) cost microseconds, far less than starting a
    // pool thread and handing over to it, which dominated `r1 ctl info`.
    let read = discovery::read(home);
    let alive = read
        .as_ref()
        .map(|d| discovery::pid_alive(d.pid))
        .unwrap_or(false);
    let d = match read {
        Ok(d) => d,
        Err(e @ (discovery::Error::Missing { .. } | discovery::Error::Malformed { .. })) => {
            return Probe::Absent {
                error: e.into(),
                stale_instance: None,
            };
        }
        Err(e) => return Probe::Fatal(e.into()),
    };
    let absent = |why: String| Probe::Absent {
        error: Error::new(ErrorKind::DaemonNotFound, why),
        stale_instance: Some(d.instance_id.clone()),
    };
    let file = home.discovery_path();
    if !alive {
        return Probe::Absent {
            error: stale_pid(home, &d),
            stale_instance: Some(d.instance_id.clone()),
        };
    }
    if d.protocol_version != PROTOCOL_VERSION {
        return Probe::Fatal(version_skew(d.protocol_version, &d.version));
    }
    if skip_instance == Some(d.instance_id.as_str()) {
        return Probe::Absent {
            error: Error::new(
                ErrorKind::DaemonNotFound,
                format!(
                    "the discovery file {} is stale (already checked)",
                    file.display()
                ),
            )
            .with_data(json!({"skipped": true})),
            stale_instance: Some(d.instance_id.clone()),
        };
    }
    let Some(sock) = d.sock_path.clone() else {
        return Probe::Fatal(Error::new(
            ErrorKind::DaemonNotFound,
            format!(
                "the daemon (pid {}) runs without a unix socket (--no-unix); reach it over WebSocket with dial_ws, port {}",
                d.pid,
                d.port
                    .map_or_else(|| "unknown".to_owned(), |p| p.to_string())
            ),
        ));
    };
    match connect_sock(&sock, budget, client_name).await {
        Ok((link, hello)) => {
            if hello.instance_id != d.instance_id {
                return absent(format!(
                    "the discovery file {} is stale: it names instance {} but the daemon on {} is instance {} (pid {}); another daemon owns this home, or the file was replaced",
                    file.display(),
                    d.instance_id,
                    sock.display(),
                    hello.instance_id,
                    hello.pid
                ));
            }
            Probe::Ready(Box::new(link.finish(hello, Some(d))))
        }
        Err(e) if e.kind() == ErrorKind::UnsupportedVersion => Probe::Fatal(e),
        Err(e) => absent(format!(
            "the discovery file {} is stale: pid {} is alive but {}",
            file.display(),
            d.pid,
            e.message()
        )),
    }
}

/// "daemon speaks v2, this client v1: …"
fn version_skew(theirs: u32, their_version: &str) -> Error {
    Error::new(
        ErrorKind::UnsupportedVersion,
        format!(
            "the daemon (r1 {their_version}) speaks protocol v{theirs}, this client (r1 {}) v{PROTOCOL_VERSION}: upgrade r1 so both match, or restart the daemon with this r1 (`r1 ctl shutdown`, then any r1 command)",
            crate::VERSION
        ),
    )
    .with_data(json!({"daemon": theirs, "client": PROTOCOL_VERSION}))
}

/// Connects to `sock` and performs the handshake within `budget`.
pub(crate) async fn connect_sock(
    sock: &Path,
    budget: Duration,
    client_name: Option<&str>,
) -> Result<(Link, Hello)> {
    let deadline = Instant::now() + budget;
    let stream = match tokio::time::timeout(budget, UnixStream::connect(sock)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(Error::new(
                ErrorKind::DaemonNotFound,
                format!("nothing answers on {}: {e}", sock.display()),
            ));
        }
        Err(_) => {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!("connecting to {} timed out", sock.display()),
            ));
        }
    };
    let framed = Framed::new(stream, LinesCodec::new_with_max_length(MAX_LINE));
    let (sink, stream) = framed.split();
    let peer = format!("unix socket {}", sock.display());
    let peer2 = peer.clone();
    let reader = stream.map(move |r| {
        r.map_err(|e| match e {
            LinesCodecError::MaxLineLengthExceeded => Error::new(
                ErrorKind::TooLarge,
                format!("the daemon ({peer2}) sent a line over {MAX_LINE} bytes"),
            ),
            LinesCodecError::Io(e) => Error::new(
                ErrorKind::Closed,
                format!("the connection to the daemon ({peer2}) failed: {e}"),
            ),
        })
    });
    let writer = sink.sink_map_err(|e| Error::new(ErrorKind::Closed, e.to_string()));
    let link = Link::start(reader, writer, peer);
    let remaining = deadline.saturating_duration_since(Instant::now());
    let hello = handshake(&link, remaining, client_name).await?;
    Ok((link, hello))
}

/// `daemon.hello`: checks the protocol version; the caller checks the instance.
pub(crate) async fn handshake(
    link: &Link,
    budget: Duration,
    client_name: Option<&str>,
) -> Result<Hello> {
    let mut params = json!({"protocol_version": PROTOCOL_VERSION});
    if let Some(n) = client_name {
        params["client"] = json!(n);
    }
    let answer = match link.call("daemon.hello", params, budget).await {
        Ok(v) => v,
        Err(e) if e.kind() == ErrorKind::Timeout => {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "{} did not answer daemon.hello within {:.1}s (not the r1 daemon, or hung)",
                    link.peer(),
                    budget.as_secs_f64()
                ),
            ));
        }
        Err(e) => {
            if let Some(rpc) = e.rpc()
                && rpc.code == crate::rpc::codes::UNSUPPORTED_VERSION
            {
                let theirs = rpc
                    .data
                    .as_ref()
                    .and_then(|d| d.get("supported"))
                    .and_then(|s| s.get(0))
                    .and_then(serde_json::Value::as_u64)
                    .and_then(|v| u32::try_from(v).ok())
                    .unwrap_or(0);
                return Err(version_skew(theirs, "unknown"));
            }
            if e.kind() == ErrorKind::Rpc {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!(
                        "{} is not an r1 daemon: daemon.hello failed with {e}",
                        link.peer()
                    ),
                ));
            }
            return Err(e);
        }
    };
    let hello: Hello = serde_json::from_value(answer).map_err(|e| {
        Error::new(
            ErrorKind::Protocol,
            format!(
                "{} is not an r1 daemon: unexpected daemon.hello answer ({e})",
                link.peer()
            ),
        )
    })?;
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(version_skew(hello.protocol_version, &hello.version));
    }
    Ok(hello)
}
