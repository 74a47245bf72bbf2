//! The shapes of method results and subscription items, as the client sees them.
//!
//! Fields follow DESIGN §7 exactly (snake_case JSON). Unknown fields from a newer
//! daemon are ignored, so adding a result field is not a breaking change.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::session::state::SessionState;
use crate::token::Token;

/// The `daemon.hello` result: who answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the daemon speaks.
    pub protocol_version: u32,
    /// The daemon's r1 version.
    pub version: String,
    /// This daemon start's id (matches `daemon.json`).
    pub instance_id: String,
    /// The daemon's pid.
    pub pid: u32,
}

/// The `daemon.info` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// The daemon's r1 version.
    pub version: String,
    /// The daemon's pid.
    pub pid: u32,
    /// This daemon start's id.
    pub instance_id: String,
    /// RFC 3339 start time.
    pub started_at: String,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Number of sessions (any state).
    pub sessions: u64,
    /// The unix socket, if on.
    #[serde(default)]
    pub sock_path: Option<PathBuf>,
    /// The loopback port, if on.
    #[serde(default)]
    pub port: Option<u16>,
    /// The daemon's home.
    pub home: PathBuf,
    /// The daemon's log file.
    pub log_path: PathBuf,
}

/// The `daemon.mint_token` result. `Debug` redacts the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MintedToken {
    /// The scoped bearer token.
    pub token: Token,
    /// RFC 3339 expiry.
    pub expires_at: String,
}

/// `session.start` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartOptions {
    /// Absolute path of an existing, writable directory outside the r1 home.
    pub workdir: PathBuf,
    /// Driver name (`shell` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// `exec`: the argv of the long-lived child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Extra environment for children.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// A human name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl StartOptions {
    /// A `shell` session in `workdir`.
    pub fn new(workdir: impl Into<PathBuf>) -> StartOptions {
        StartOptions {
            workdir: workdir.into(),
            ..StartOptions::default()
        }
    }

    /// Sets the driver.
    pub fn driver(mut self, driver: impl Into<String>) -> Self {
        self.driver = Some(driver.into());
        self
    }

    /// Sets the `exec` argv.
    pub fn command<I, S>(mut self, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.command = Some(argv.into_iter().map(Into::into).collect());
        self
    }

    /// Adds one environment variable for children.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), value.into());
        self
    }

    /// Sets the name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// The `session.start` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartResult {
    /// `sess_<uuid>`.
    pub session_id: String,
    /// The name, if given.
    #[serde(default)]
    pub name: Option<String>,
    /// The canonical workdir.
    pub workdir: PathBuf,
    /// The driver.
    pub driver: String,
    /// Always `running` for a new session.
    pub state: SessionState,
    /// RFC 3339.
    pub started_at: String,
    /// The journal's epoch (a cursor is `(epoch, seq)`).
    pub epoch: String,
}

/// One session as `session.list` and `session.get` describe it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// `sess_<uuid>`.
    pub id: String,
    /// The name, if given.
    #[serde(default)]
    pub name: Option<String>,
    /// The canonical workdir.
    pub workdir: PathBuf,
    /// The driver.
    pub driver: String,
    /// Where the session is in its life.
    pub state: SessionState,
    /// RFC 3339.
    pub started_at: String,
    /// The last journal seq.
    pub last_seq: u64,
    /// The journal's current epoch.
    pub epoch: String,
    /// Records in the journal (`session.get`; the daemon may add it to list items).
    #[serde(default)]
    pub record_count: Option<u64>,
    /// `exec` argv (`session.get`).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// What the daemon found at its start (`session.get`, after a restart).
    #[serde(default)]
    pub reload: Option<Value>,
}

/// One journal record: a `journal.read` item or a `$/event` of a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The journal seq (1, 2, …).
    pub seq: u64,
    /// The epoch the seq belongs to (a cursor is `(epoch, seq)`).
    #[serde(default)]
    pub epoch: String,
    /// `session.created`, `user.input`, `session.delta`, `tool.end`, …
    pub kind: String,
    /// RFC 3339 with milliseconds.
    pub at: String,
    /// The record's data.
    #[serde(default)]
    pub data: Value,
}

/// The journal was cut by recovery: the client's cursor's epoch is gone, and
/// records after `last_good_seq` are new ones (re-using seq numbers) in `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reset {
    /// The journal's current epoch.
    pub epoch: String,
    /// The last seq shared with the client's epoch.
    pub last_good_seq: u64,
}

/// A `$/daemon` notice (`daemon.reloaded`, `daemon.stopping`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonNotice {
    /// `daemon.reloaded` or `daemon.stopping`.
    pub kind: String,
    /// RFC 3339.
    #[serde(default)]
    pub at: String,
    /// `daemon.reloaded`: `{at, version, sessions, repaired, damaged}`.
    #[serde(default)]
    pub data: Value,
}

/// The `journal.read` result: one page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadPage {
    /// The records, in seq order (each with the page's epoch).
    pub records: Vec<Event>,
    /// The seq to pass as `since_seq` for the next page.
    pub next_seq: u64,
    /// The journal's current epoch.
    pub epoch: String,
    /// More records follow (the page hit its limit).
    #[serde(default)]
    pub more: bool,
    /// Set when the requested epoch was cut by recovery.
    #[serde(default)]
    pub reset: Option<Reset>,
    /// Set when reading stopped at damage (why, where).
    #[serde(default)]
    pub damage: Option<String>,
}

/// The reply to `session.subscribe` / `daemon.subscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeReply {
    /// The subscription id on this connection.
    pub sub: u64,
    /// The journal's last seq when the subscription was registered.
    pub current_seq: u64,
    /// The journal's epoch (session subscriptions).
    #[serde(default)]
    pub epoch: Option<String>,
    /// Set when the requested epoch was cut by recovery.
    #[serde(default)]
    pub reset: Option<Reset>,
}

/// One item of a [`Subscription`](super::Subscription).
///
/// Serialised (for the C and Python bindings) with a `type` tag:
/// `{"type":"record","seq":…,"epoch":…,"kind":…,"at":…,"data":…}`,
/// `{"type":"daemon","kind":"daemon.reloaded","at":…,"data":…}`,
/// `{"type":"reset","epoch":…,"last_good_seq":…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SubEvent {
    /// A journal record, delivered once, in seq order.
    Record(Event),
    /// A `$/daemon` notice: `daemon.stopping` before a daemon goes away,
    /// `daemon.reloaded` from the daemon a subscription resumed on.
    Daemon(DaemonNotice),
    /// The daemon cut the journal after the client's cursor (DESIGN §5): records
    /// after `last_good_seq` that follow are new ones.
    Reset(Reset),
}
