//! The session hub: every session of one daemon, their drivers and their journals.
//!
//! Locks: the session map and each session's `inner` are `std::sync::Mutex`es held
//! only for short, non-blocking sections (never across `.await`); journal fsyncs run
//! on the blocking pool. `send_lock` (async) orders a session's inputs so the driver
//! receives them in journal order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::index::{self, IndexEntry};
use super::state::SessionState;
use crate::driver::{
    Control, DriverContext, DriverExit, DriverFactory, DriverSpec, EmitSink, Emitter, Input,
};
use crate::error::{Error, ErrorKind, Result};
use crate::journal::{self, Journal, Reader, RecoveryReport, WriterOptions};
use crate::paths::{self, Home};
use crate::time_fmt;

/// How long `session.cancel` waits for a driver to wind down (its own SIGKILL comes
/// after 5 s).
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// Hub settings (from `DaemonConfig`).
#[derive(Clone)]
pub struct HubConfig {
    /// The r1 home.
    pub home: Home,
    /// Drivers by name.
    pub drivers: BTreeMap<String, Arc<dyn DriverFactory>>,
    /// Journal options (fsync interval …).
    pub writer: WriterOptions,
    /// `--single-session`: refuse a second unfinished session.
    pub single_session: bool,
    /// This daemon start's instance id (recorded in `session.reattached`).
    pub instance_id: String,
}

impl std::fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubConfig")
            .field("home", &self.home)
            .field("drivers", &self.drivers.keys().collect::<Vec<_>>())
            .field("single_session", &self.single_session)
            .finish()
    }
}

/// What `session.start` takes.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartParams {
    /// Absolute path of an existing, writable directory outside `R1_HOME`.
    pub workdir: String,
    /// Driver name; default `shell`.
    #[serde(default)]
    pub driver: Option<String>,
    /// `exec` argv.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Extra environment for children.
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// Optional human name.
    #[serde(default)]
    pub name: Option<String>,
}

/// What the reattach pass found for a session at daemon start (`session.get` → `reload`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReloadInfo {
    /// Records readable.
    pub record_count: u64,
    /// Last valid seq.
    pub last_seq: u64,
    /// A torn tail that was cut, if any.
    pub repaired: Option<journal::Repair>,
    /// Damage that keeps the session read-only, if any.
    pub damage: Option<journal::Damage>,
}

/// One session.
pub struct Session {
    /// `sess_<uuid>`.
    pub id: String,
    /// Optional human name.
    pub name: Option<String>,
    /// Canonical workdir.
    pub workdir: PathBuf,
    /// Driver name.
    pub driver: String,
    /// `exec` argv.
    pub command: Option<Vec<String>>,
    /// Extra child environment.
    pub env: BTreeMap<String, String>,
    /// RFC 3339.
    pub started_at: String,
    journal_path: PathBuf,
    journal: Option<Arc<Journal>>,
    epoch: String,
    reload: Option<ReloadInfo>,
    inner: Mutex<SessionInner>,
    send_lock: tokio::sync::Mutex<()>,
    gone: watch::Sender<bool>,
}

struct SessionInner {
    state: SessionState,
    inbox: Option<mpsc::UnboundedSender<Input>>,
    control: Option<watch::Sender<Control>>,
    driver_done: Option<watch::Receiver<bool>>,
    /// Inputs (by seq) that have no `tool.end` yet: marked interrupted if the driver
    /// goes away before finishing them.
    open_lanes: BTreeSet<u64>,
    last_seq_hint: u64,
    last_activity: String,
    /// Why the session is paused after a failed journal write (DESIGN §5); cleared by
    /// a successful resume.
    error: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("state", &self.state())
            .finish()
    }
}

impl Session {
    fn inner(&self) -> MutexGuard<'_, SessionInner> {
        // A panic while holding this lock would be a bug; keep serving with the data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current state.
    pub fn state(&self) -> SessionState {
        self.inner().state
    }

    /// The journal writer (`None` for damaged sessions).
    pub fn journal(&self) -> Option<&Arc<Journal>> {
        self.journal.as_ref()
    }

    /// The journal file.
    pub fn journal_path(&self) -> &Path {
        &self.journal_path
    }

    /// The current epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The last seq written.
    pub fn last_seq(&self) -> u64 {
        match &self.journal {
            Some(j) => j.last_seq(),
            None => self.inner().last_seq_hint,
        }
    }

    /// Resolves when the session is deleted.
    pub fn gone(&self) -> watch::Receiver<bool> {
        self.gone.subscribe()
    }

    /// The `session.list` item.
    pub fn summary(&self) -> Value {
        let inner = self.inner();
        let last_seq = match &self.journal {
            Some(j) => j.last_seq(),
            None => inner.last_seq_hint,
        };
        json!({
            "id": self.id,
            "name": self.name,
            "workdir": self.workdir,
            "driver": self.driver,
            "state": inner.state.as_str(),
            "started_at": self.started_at,
            "last_seq": last_seq,
            "record_count": last_seq,
            "last_activity": inner.last_activity,
            "epoch": self.epoch,
            "error": inner.error,
        })
    }

    fn index_entry(&self) -> IndexEntry {
        IndexEntry {
            id: self.id.clone(),
            name: self.name.clone(),
            workdir: self.workdir.clone(),
            driver: self.driver.clone(),
            command: self.command.clone(),
            env: self.env.clone(),
            started_at: self.started_at.clone(),
            state: self.state(),
            last_seq: self.last_seq(),
            epoch: self.epoch.clone(),
            deleted_at: None,
        }
    }

    fn writable(&self) -> Result<&Arc<Journal>> {
        self.journal.as_ref().ok_or_else(|| {
            Error::new(ErrorKind::JournalDamaged, format!("session {} is damaged and read-only; inspect it with `r1 ctl journal {} --verify`", self.id, self.id))
        })
    }

    fn spec(&self) -> DriverSpec {
        DriverSpec {
            session_id: self.id.clone(),
            workdir: self.workdir.clone(),
            driver: self.driver.clone(),
            command: self.command.clone(),
            env: self.env.clone(),
            journal_path: self.journal_path.clone(),
        }
    }

    /// A journal write failed (ENOSPC, EIO …; the journal already cut back to its last
    /// good offset). DESIGN §5: the session is paused with the error, so nothing more
    /// is attempted until someone resumes it, and the daemon serves everyone else.
    /// Returns the error for the caller, with what to do added.
    fn pause_on_write_error(&self, e: Error) -> Error {
        if e.kind() != ErrorKind::Io {
            return e;
        }
        let mut inner = self.inner();
        if matches!(inner.state, SessionState::Running | SessionState::Paused) {
            inner.state = SessionState::Paused;
            inner.error = Some(e.message().to_owned());
            if let Some(c) = &inner.control {
                let _ = c.send(Control::Pause);
            }
        }
        drop(inner);
        tracing::error!(session_id = %self.id, error = %e, "journal write failed; session paused");
        Error::new(
            ErrorKind::Io,
            format!(
                "{}; session {} is paused: free disk space, then resume it",
                e.message(),
                self.id
            ),
        )
    }

    /// What the driver's records just written change: a `tool.end` closes its lane,
    /// and the session was active now.
    fn emitted<'a>(&self, records: impl IntoIterator<Item = (&'a str, &'a Value)>) {
        let mut inner = self.inner();
        for (kind, data) in records {
            if kind == "tool.end"
                && let Some(lane) = data.get("lane_id").and_then(Value::as_u64)
            {
                inner.open_lanes.remove(&lane);
            }
        }
        inner.last_activity = time_fmt::now_millis();
    }

    /// Inputs are lanes for drivers that bracket work with `tool.start`/`tool.end`;
    /// `exec` children receive inputs as they arrive, so they leave no lane open.
    fn tracks_lanes(&self) -> bool {
        self.driver != "exec"
    }
}

/// The daemon's sessions.
pub struct Hub {
    cfg: HubConfig,
    home_canonical: PathBuf,
    sessions: Mutex<BTreeMap<String, Arc<Session>>>,
    tombstones: Mutex<index::Tombstones>,
    index_commits: index::IndexCommits,
    bus: Arc<Journal>,
    reloaded: Option<Value>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("cfg", &self.cfg).finish()
    }
}

/// Checks a session id's shape before it is used anywhere near the file system.
pub fn validate_session_id(id: &str) -> Result<()> {
    let ok = id
        .strip_prefix("sess_")
        .and_then(|u| uuid::Uuid::parse_str(u).ok())
        .is_some_and(|u| format!("sess_{}", u.hyphenated()) == id);
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_params(format!(
            "{} is not a session id (expected sess_<uuid>)",
            serde_json::to_string(id).unwrap_or_default()
        )))
    }
}

impl Hub {
    /// Opens the bus log and every session in the index: journals are recovered,
    /// unfinished sessions become `paused-reattachable` with their interrupted work
    /// recorded, damaged ones `damaged`. Blocking: call from the blocking pool.
    pub fn open(cfg: HubConfig) -> Result<Arc<Hub>> {
        let home = &cfg.home;
        paths::ensure_private_dir(&home.sessions_dir())?;
        paths::ensure_private_dir(&home.bus_dir())?;
        let home_canonical = std::fs::canonicalize(home.root())
            .map_err(|e| Error::io("cannot resolve", home.root(), e))?;

        let bus = open_bus(home, &cfg.writer)?;
        let entries = index::load(&home.index_path())?;
        let mut sessions = BTreeMap::new();
        let mut tombstones = index::Tombstones::default();
        let (mut reattached, mut repaired, mut damaged) = (0u64, 0u64, 0u64);
        let (dead, live): (Vec<IndexEntry>, Vec<IndexEntry>) =
            entries.into_iter().partition(|e| e.deleted_at.is_some());
        for d in &dead {
            tombstones.push(d)?;
        }
        // Each reopen fsyncs (marker removal, reattach records): overlap them, or
        // a thousand sessions take seconds to come back.
        let reopened =
            crate::journal::writer::run_parallel(&live, |entry| reopen_session(&cfg, entry));
        for session in reopened {
            let session = session?;
            match session.state() {
                SessionState::PausedReattachable => reattached += 1,
                SessionState::Damaged => damaged += 1,
                _ => {}
            }
            if session
                .reload
                .as_ref()
                .is_some_and(|r| r.repaired.is_some())
            {
                repaired += 1;
            }
            sessions.insert(session.id.clone(), Arc::new(session));
        }
        let reloaded = if reattached + damaged + repaired > 0 {
            Some(json!({
                "at": time_fmt::now_seconds(),
                "version": crate::VERSION,
                "sessions": reattached,
                "repaired": repaired,
                "damaged": damaged,
            }))
        } else {
            None
        };
        let hub = Hub {
            cfg,
            home_canonical,
            sessions: Mutex::new(sessions),
            tombstones: Mutex::new(tombstones),
            index_commits: index::IndexCommits::default(),
            bus,
            reloaded,
        };
        hub.store_index_blocking()?;
        hub.bus.append("daemon.started", &json!({"instance_id": hub.cfg.instance_id, "version": crate::VERSION, "pid": std::process::id()}))?;
        if let Some(r) = &hub.reloaded {
            hub.bus.append("daemon.reloaded", r)?;
        }
        Ok(Arc::new(hub))
    }

    /// `daemon.reloaded` data when this start reattached, repaired or found damaged
    /// sessions (sent first to every new connection).
    pub fn reloaded(&self) -> Option<&Value> {
        self.reloaded.as_ref()
    }

    /// The daemon-wide event log.
    pub fn bus(&self) -> &Arc<Journal> {
        &self.bus
    }

    /// The home.
    pub fn home(&self) -> &Home {
        &self.cfg.home
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session with `id`.
    pub fn get(&self, id: &str) -> Result<Arc<Session>> {
        validate_session_id(id)?;
        self.map()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("no session {id}")))
    }

    /// Every session (not deleted), oldest first.
    pub fn all(&self) -> Vec<Arc<Session>> {
        let mut v: Vec<_> = self.map().values().cloned().collect();
        v.sort_by(|a, b| {
            a.started_at
                .cmp(&b.started_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        v
    }

    /// Number of sessions that are `running`.
    pub fn running_count(&self) -> usize {
        self.map()
            .values()
            .filter(|s| s.state() == SessionState::Running)
            .count()
    }

    /// `session.list`.
    pub fn list(&self, state: Option<SessionState>) -> Value {
        let items: Vec<Value> = self
            .all()
            .iter()
            .filter(|s| state.is_none_or(|st| s.state() == st))
            .map(|s| s.summary())
            .collect();
        json!({ "sessions": items })
    }

    /// `session.get`.
    pub fn describe(&self, id: &str) -> Result<Value> {
        let s = self.get(id)?;
        let mut v = s.summary();
        if let Some(obj) = v.as_object_mut() {
            if let Some(r) = &s.reload {
                obj.insert("reload".into(), serde_json::to_value(r)?);
            }
            if let Some(c) = &s.command {
                obj.insert("command".into(), json!(c));
            }
        }
        Ok(v)
    }

    fn validate_workdir(&self, raw: &str) -> Result<PathBuf> {
        if raw.contains('\0') {
            return Err(Error::invalid_params("workdir contains a NUL byte"));
        }
        let p = Path::new(raw);
        if !p.is_absolute() {
            return Err(Error::invalid_params(format!(
                "workdir {raw:?} must be an absolute path"
            )));
        }
        let canon = std::fs::canonicalize(p)
            .map_err(|e| Error::invalid_params(format!("workdir {raw:?} cannot be used: {e}")))?;
        if !canon.is_dir() {
            return Err(Error::invalid_params(format!(
                "workdir {} is not a directory",
                canon.display()
            )));
        }
        if nix::unistd::access(
            &canon,
            nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        )
        .is_err()
        {
            return Err(Error::invalid_params(format!(
                "workdir {} is not writable by you",
                canon.display()
            )));
        }
        if canon.starts_with(&self.home_canonical) {
            return Err(Error::invalid_params(format!(
                "workdir {} is inside the r1 home {}; sessions cannot work on r1's own files",
                canon.display(),
                self.home_canonical.display()
            )));
        }
        Ok(canon)
    }

    /// `session.start`.
    pub async fn start(self: &Arc<Self>, params: StartParams) -> Result<Value> {
        let workdir = self.validate_workdir(&params.workdir)?;
        let driver = params.driver.clone().unwrap_or_else(|| "shell".to_owned());
        let factory = self.cfg.drivers.get(&driver).cloned().ok_or_else(|| {
            Error::invalid_params(format!(
                "unknown driver {driver:?}; this daemon has: {}",
                self.cfg
                    .drivers
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        if let Some(name) = &params.name
            && (name.len() > 200 || name.chars().any(char::is_control))
        {
            return Err(Error::invalid_params(
                "name must be at most 200 printable characters",
            ));
        }
        let id = format!("sess_{}", uuid::Uuid::new_v4().hyphenated());
        let journal_path = self.cfg.home.journal_path(&id);
        let spec = DriverSpec {
            session_id: id.clone(),
            workdir: workdir.clone(),
            driver: driver.clone(),
            command: params.command.clone(),
            env: params.env.clone().unwrap_or_default(),
            journal_path: journal_path.clone(),
        };
        let drv = factory.create(&spec)?;
        if self.cfg.single_session && self.map().values().any(|s| s.state().is_unfinished()) {
            return Err(Error::new(
                ErrorKind::Conflict,
                "this daemon runs with --single-session and already has an unfinished session; cancel it first",
            ));
        }

        let epoch = crate::token::random_hex(8);
        let started_at = time_fmt::now_seconds();
        let created = json!({
            "session_id": id,
            "workdir": workdir,
            "driver": driver,
            "epoch": epoch,
            "r1_version": crate::VERSION,
            "name": params.name,
        });
        let home = self.cfg.home.clone();
        let writer = self.cfg.writer.clone();
        let (id2, epoch2, jp) = (id.clone(), epoch.clone(), journal_path.clone());
        let journal = tokio::task::spawn_blocking(move || -> Result<Arc<Journal>> {
            let dir = home.session_dir(&id2);
            paths::ensure_private_dir(&dir)?;
            // DESIGN §5: the journal, its directory and `sessions/` are fsync'd.
            // `Journal::create` syncs the first two; the new directory's entry in
            // `sessions/` is synced at the same time (all three must be on disk
            // before the index names the session, in no particular order).
            let made = std::thread::scope(|scope| {
                let sessions_dir = home.sessions_dir();
                let entry_synced = scope.spawn(move || paths::fsync_dir(&sessions_dir));
                let made = Journal::create(&jp, &epoch2, "session.created", &created, writer);
                let synced = entry_synced.join().unwrap_or_else(|_| {
                    Err(Error::internal("the sessions/ fsync thread panicked"))
                });
                made.and_then(|j| synced.map(|()| j))
            });
            if made.is_err() {
                // A failed create (disk full …) leaves no session directory behind
                // (the journal file is already gone, so the directory is empty).
                let _ = std::fs::remove_dir(&dir);
            }
            made
        })
        .await
        .map_err(|e| Error::internal(format!("session create task failed: {e}")))??;

        let session = Arc::new(Session {
            id: id.clone(),
            name: params.name.clone(),
            workdir: workdir.clone(),
            driver: driver.clone(),
            command: params.command.clone(),
            env: spec.env.clone(),
            started_at: started_at.clone(),
            journal_path,
            journal: Some(journal),
            epoch: epoch.clone(),
            reload: None,
            inner: Mutex::new(SessionInner {
                state: SessionState::Running,
                inbox: None,
                control: None,
                driver_done: None,
                open_lanes: BTreeSet::new(),
                last_seq_hint: 1,
                last_activity: time_fmt::now_millis(),
                error: None,
            }),
            send_lock: tokio::sync::Mutex::new(()),
            gone: watch::channel(false).0,
        });
        self.map().insert(id.clone(), Arc::clone(&session));
        self.spawn_driver(&session, drv);
        // The session is durable once its journal is (above) and the index names it;
        // the bus record's fsync overlaps the index's.
        let (stored, ()) = tokio::join!(
            self.store_index(),
            self.bus_event(
                "session.created",
                json!({"session_id": id, "workdir": workdir, "driver": driver, "name": params.name}),
            )
        );
        stored?;
        tracing::info!(session_id = %id, workdir = %workdir.display(), driver = %driver, "session started");
        Ok(json!({
            "session_id": id,
            "name": params.name,
            "workdir": workdir,
            "driver": driver,
            "state": "running",
            "started_at": started_at,
            "epoch": epoch,
        }))
    }

    fn spawn_driver(
        self: &Arc<Self>,
        session: &Arc<Session>,
        driver: Box<dyn crate::driver::SessionDriver>,
    ) {
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let (ctl_tx, ctl_rx) = watch::channel(Control::Run);
        let (done_tx, done_rx) = watch::channel(false);
        {
            let mut inner = session.inner();
            inner.inbox = Some(in_tx);
            inner.control = Some(ctl_tx);
            inner.driver_done = Some(done_rx);
        }
        let ctx = DriverContext {
            spec: session.spec(),
            inbox: in_rx,
            control: ctl_rx,
            emitter: Emitter::new(Arc::new(SessionSink {
                session: Arc::clone(session),
            })),
        };
        let hub = Arc::clone(self);
        let session = Arc::clone(session);
        tokio::spawn(async move {
            let exit = driver.run(ctx).await;
            hub.driver_exited(&session, exit).await;
            let _ = done_tx.send(true);
        });
    }

    async fn driver_exited(self: &Arc<Self>, session: &Arc<Session>, exit: Result<DriverExit>) {
        // Under the send lock: a `session.send` that saw the inbox open has journaled
        // its input and registered its lane before the lanes are taken here, and
        // every later one finds no inbox. Without it, an input journaled as the
        // driver exited got no `tool.end` (found by the crash trials).
        let order = session.send_lock.lock().await;
        let open: Vec<u64> = {
            let mut inner = session.inner();
            inner.inbox = None;
            inner.control = None;
            if exit.is_err() && inner.error.is_some() && inner.state == SessionState::Paused {
                // The driver gave up because the journal could not be written: the
                // session stays paused (not ended); resume restarts the driver and
                // first records the unfinished inputs as interrupted.
                tracing::warn!(session_id = %session.id, "driver stopped after a journal write failure; the session stays paused");
                return;
            }
            std::mem::take(&mut inner.open_lanes).into_iter().collect()
        };
        drop(order);
        let Some(journal) = session.journal.clone() else {
            return;
        };
        for lane in open {
            let data = json!({"lane_id": lane, "ok": false, "exit_code": null, "duration_ms": 0, "interrupted": true});
            if let Err(e) = journal.append_async("tool.end", &data).await {
                tracing::error!(session_id = %session.id, error = %e, "cannot record interrupted input");
            }
        }
        let ended = match exit {
            Ok(DriverExit::Stopped) => None,
            Ok(DriverExit::Cancelled) => Some(json!({"reason": "cancelled"})),
            Ok(DriverExit::Finished {
                ok: true,
                exit_code,
                ..
            }) => Some(json!({"reason": "ok", "exit_code": exit_code})),
            Ok(DriverExit::Finished {
                ok: false,
                exit_code,
                message,
            }) => Some(json!({"reason": "error", "exit_code": exit_code, "message": message})),
            Err(e) => Some(json!({"reason": "error", "message": e.to_string()})),
        };
        if let Some(data) = ended {
            {
                // Flip the state before the record is visible, so anyone who sees
                // `session.ended` also sees the state `ended`.
                let mut inner = session.inner();
                if inner.state == SessionState::Ended {
                    return;
                }
                inner.state = SessionState::Ended;
            }
            if let Err(e) = journal.append_async("session.ended", &data).await {
                tracing::error!(session_id = %session.id, error = %e, "cannot record session end");
            }
            if let Err(e) = self.store_index().await {
                tracing::error!(error = %e, "cannot update the sessions index");
            }
            let mut bus = json!({"session_id": session.id});
            if let (Some(b), Some(d)) = (bus.as_object_mut(), data.as_object()) {
                b.extend(d.clone());
            }
            self.bus_event("session.ended", bus).await;
            tracing::info!(session_id = %session.id, "session ended");
        }
    }

    /// `session.send`: journals `user.input` (fsync'd before this returns) and hands
    /// it to the driver. Inputs to a paused session wait in its queue.
    pub async fn send(self: &Arc<Self>, id: &str, text: String) -> Result<Value> {
        let session = self.get(id)?;
        let journal = Arc::clone(session.writable()?);
        let record = {
            let _order = session.send_lock.lock().await;
            let inbox = {
                let inner = session.inner();
                match inner.state {
                    SessionState::Running | SessionState::Paused => {}
                    SessionState::PausedReattachable => {
                        return Err(Error::invalid_state(format!(
                            "session {id} was interrupted by a daemon restart; resume it first (`r1 ctl sessions resume {id}`)"
                        )));
                    }
                    s => {
                        return Err(Error::invalid_state(format!(
                            "session {id} is {s}; it takes no more input"
                        )));
                    }
                }
                inner.inbox.clone()
            };
            let Some(inbox) = inbox else {
                if let Some(why) = session.inner().error.clone() {
                    // Still the I/O failure's fault: same code as the failed write.
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!("{why}; session {id} is paused: free disk space, then resume it"),
                    ));
                }
                return Err(Error::invalid_state(format!(
                    "session {id} has no running driver"
                )));
            };
            let record = journal
                .append_deferred("user.input", &json!({ "text": text }))
                .map_err(|e| session.pause_on_write_error(e))?;
            if session.tracks_lanes() {
                session.inner().open_lanes.insert(record.seq);
            }
            if inbox
                .send(Input {
                    seq: record.seq,
                    text,
                })
                .is_err()
            {
                tracing::warn!(session_id = %id, seq = record.seq, "driver stopped before taking the input");
            }
            record
        };
        let seq = record.seq;
        journal
            .sync_through_async(seq)
            .await
            .map_err(|e| session.pause_on_write_error(e))?;
        session.inner().last_activity = time_fmt::now_millis();
        Ok(json!({"accepted": true, "seq": seq}))
    }

    /// `session.pause`.
    pub async fn pause(self: &Arc<Self>, id: &str) -> Result<Value> {
        let session = self.get(id)?;
        let journal = Arc::clone(session.writable()?);
        let _order = session.send_lock.lock().await;
        match session.state() {
            SessionState::Running => {}
            s => {
                return Err(Error::invalid_state(format!(
                    "session {id} is {s}; only a running session can be paused"
                )));
            }
        }
        journal
            .append_async("session.paused", &json!({"by": "user"}))
            .await?;
        {
            let mut inner = session.inner();
            inner.state = SessionState::Paused;
            if let Some(c) = &inner.control {
                let _ = c.send(Control::Pause);
            }
        }
        self.store_index().await?;
        Ok(json!({"paused_at": time_fmt::now_seconds()}))
    }

    /// `session.resume`: continues a paused session, or restarts the driver of one
    /// interrupted by a daemon restart.
    pub async fn resume(self: &Arc<Self>, id: &str) -> Result<Value> {
        let session = self.get(id)?;
        let journal = Arc::clone(session.writable()?);
        let _order = session.send_lock.lock().await;
        let has_driver = session.inner().control.is_some();
        match session.state() {
            SessionState::Paused if has_driver => {
                journal
                    .append_async("session.resumed", &json!({}))
                    .await
                    .map_err(|e| session.pause_on_write_error(e))?;
                let mut inner = session.inner();
                inner.state = SessionState::Running;
                inner.error = None;
                if let Some(c) = &inner.control {
                    let _ = c.send(Control::Run);
                }
            }
            SessionState::Paused => {
                // The driver stopped after a journal write failed: restart it, once
                // the inputs it left unfinished are recorded as interrupted.
                let factory = self.factory_for(&session)?;
                let driver = factory.create(&session.spec())?;
                let open: Vec<u64> = session.inner().open_lanes.iter().copied().collect();
                for lane in open {
                    let data = json!({"lane_id": lane, "ok": false, "exit_code": null, "duration_ms": 0, "interrupted": true});
                    journal
                        .append_async("tool.end", &data)
                        .await
                        .map_err(|e| session.pause_on_write_error(e))?;
                    session.inner().open_lanes.remove(&lane);
                }
                journal
                    .append_async("session.resumed", &json!({"restarted": true}))
                    .await
                    .map_err(|e| session.pause_on_write_error(e))?;
                {
                    let mut inner = session.inner();
                    inner.state = SessionState::Running;
                    inner.error = None;
                }
                self.spawn_driver(&session, driver);
            }
            SessionState::PausedReattachable => {
                let factory = self.factory_for(&session)?;
                let driver = factory.create(&session.spec())?;
                journal
                    .append_async("session.resumed", &json!({"restarted": true}))
                    .await?;
                session.inner().state = SessionState::Running;
                self.spawn_driver(&session, driver);
            }
            s => {
                return Err(Error::invalid_state(format!(
                    "session {id} is {s}; only a paused session can be resumed"
                )));
            }
        }
        drop(_order);
        self.store_index().await?;
        Ok(json!({"resumed_at": time_fmt::now_seconds()}))
    }

    fn factory_for(&self, session: &Session) -> Result<Arc<dyn DriverFactory>> {
        self.cfg
            .drivers
            .get(&session.driver)
            .cloned()
            .ok_or_else(|| {
                Error::invalid_state(format!(
                    "session {} needs driver {:?}, which this daemon does not have",
                    session.id, session.driver
                ))
            })
    }

    /// `session.cancel`: ends the session (its driver stops running work first).
    pub async fn cancel(self: &Arc<Self>, id: &str, reason: Option<String>) -> Result<Value> {
        let session = self.get(id)?;
        let journal = Arc::clone(session.writable()?);
        let (control, done) = {
            let inner = session.inner();
            match inner.state {
                SessionState::Running | SessionState::Paused | SessionState::PausedReattachable => {
                }
                s => {
                    return Err(Error::invalid_state(format!(
                        "session {id} is {s}; nothing to cancel"
                    )));
                }
            }
            (inner.control.clone(), inner.driver_done.clone())
        };
        match (control, done) {
            (Some(control), Some(mut done)) => {
                let _ = control.send(Control::Cancel);
                let waited = tokio::time::timeout(CANCEL_WAIT, done.wait_for(|d| *d)).await;
                if waited.is_err() {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "session {id}'s driver did not stop within {}s",
                            CANCEL_WAIT.as_secs()
                        ),
                    ));
                }
            }
            _ => {
                // No driver (interrupted by a restart): end it here.
                let before = std::mem::replace(&mut session.inner().state, SessionState::Ended);
                let data = json!({"reason": "cancelled", "detail": reason});
                if let Err(e) = journal.append_async("session.ended", &data).await {
                    session.inner().state = before;
                    return Err(e);
                }
                self.store_index().await?;
                self.bus_event(
                    "session.ended",
                    json!({"session_id": id, "reason": "cancelled"}),
                )
                .await;
            }
        }
        Ok(json!({"ended_at": time_fmt::now_seconds()}))
    }

    /// `session.delete`: cancels if needed, tombstones the index entry, removes the
    /// journal directory.
    pub async fn delete(self: &Arc<Self>, id: &str) -> Result<Value> {
        let session = self.get(id)?;
        if session.state().is_unfinished() && session.journal.is_some() {
            self.cancel(id, Some("deleted".into())).await?;
        }
        let deleted_at = time_fmt::now_seconds();
        let mut entry = session.index_entry();
        entry.deleted_at = Some(deleted_at.clone());
        self.map().remove(id);
        self.tombstones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(&entry)?;
        self.store_index().await?;
        if let Some(j) = &session.journal {
            let j = Arc::clone(j);
            let _ = tokio::task::spawn_blocking(move || j.close()).await;
        }
        let dir = self.cfg.home.session_dir(id);
        let sessions_dir = self.cfg.home.sessions_dir();
        tokio::task::spawn_blocking(move || -> Result<()> {
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io("cannot remove", &dir, e))?;
            paths::fsync_dir(&sessions_dir)
        })
        .await
        .map_err(|e| Error::internal(format!("delete task failed: {e}")))??;
        let _ = session.gone.send(true);
        self.bus_event("session.deleted", json!({"session_id": id}))
            .await;
        tracing::info!(session_id = %id, "session deleted");
        Ok(json!({"deleted_at": deleted_at}))
    }

    /// Graceful shutdown: stop every driver (running work is recorded interrupted),
    /// record `session.paused {by: shutdown}` for running sessions, write clean
    /// markers and close every journal.
    pub async fn shutdown(self: &Arc<Self>, grace: Duration) {
        let sessions = self.all();
        let mut waits = Vec::new();
        let mut was_running = Vec::new();
        for s in &sessions {
            let inner = s.inner();
            if inner.state == SessionState::Running {
                was_running.push(Arc::clone(s));
            }
            if let (Some(c), Some(d)) = (&inner.control, &inner.driver_done) {
                let _ = c.send(Control::Stop);
                waits.push(d.clone());
            }
        }
        let all_done = async {
            for mut d in waits {
                let _ = d.wait_for(|v| *v).await;
            }
        };
        if tokio::time::timeout(grace, all_done).await.is_err() {
            tracing::warn!(
                grace_s = grace.as_secs_f64(),
                "some drivers did not stop within the grace period"
            );
        }
        for s in was_running {
            if let Some(j) = &s.journal
                && let Err(e) = j
                    .append_async("session.paused", &json!({"by": "shutdown"}))
                    .await
            {
                tracing::error!(session_id = %s.id, error = %e, "cannot record shutdown pause");
            }
            s.inner().state = SessionState::Paused;
        }
        if let Err(e) = self.store_index().await {
            tracing::error!(error = %e, "cannot write the sessions index at shutdown");
        }
        self.bus_event("daemon.stopping", json!({"at": time_fmt::now_seconds()}))
            .await;
        let journals: Vec<Arc<Journal>> = sessions
            .iter()
            .filter_map(|s| s.journal.clone())
            .chain(std::iter::once(Arc::clone(&self.bus)))
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for (j, r) in journals.iter().zip(Journal::close_many(&journals)) {
                if let Err(e) = r {
                    tracing::error!(path = %j.path().display(), error = %e, "cannot close journal");
                }
            }
        })
        .await;
    }

    async fn bus_event(&self, kind: &str, data: Value) {
        if let Err(e) = self.bus.append_async(kind, &data).await {
            tracing::error!(kind, error = %e, "cannot append to the bus log");
        }
    }

    /// The tombstones (shared, already encoded) and the live sessions' entries.
    fn index_entries(&self) -> (index::Tombstones, Vec<IndexEntry>) {
        let tombstones = self
            .tombstones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let live = self.all().iter().map(|s| s.index_entry()).collect();
        (tombstones, live)
    }

    fn store_index_blocking(&self) -> Result<()> {
        let (tombstones, live) = self.index_entries();
        index::store_parts(&self.cfg.home.index_path(), &tombstones, &live)
    }

    /// Rewrites `sessions-index.json` (atomically) so that it holds every change made
    /// before this call. Concurrent callers share one rewrite (group commit), and
    /// unchanged live entries are not encoded again.
    pub async fn store_index(&self) -> Result<()> {
        let ticket = self.index_commits.announce();
        let Some(mut turn) = self.index_commits.turn(ticket).await else {
            return Ok(());
        };
        let tombstones = self
            .tombstones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let live = turn.cache().encode_all(&self.all())?;
        let path = self.cfg.home.index_path();
        tokio::task::spawn_blocking(move || index::store_encoded(&path, &tombstones, &live))
            .await
            .map_err(|e| Error::internal(format!("index task failed: {e}")))??;
        turn.written();
        Ok(())
    }

    /// The epoch history of a session's journal: for a client holding `epoch`, the
    /// last seq both histories share (DESIGN §7 `reset`). `None` if `epoch` is current.
    pub async fn reset_point(&self, session: &Arc<Session>, epoch: &str) -> Result<Option<u64>> {
        if epoch == session.epoch {
            return Ok(None);
        }
        let path = session.journal_path.clone();
        let epoch = epoch.to_owned();
        tokio::task::spawn_blocking(move || -> Result<Option<u64>> {
            // Each `journal.repaired` starts a new epoch that shares records up to its
            // `last_good_seq` with the one before. A client on epoch k shares history up
            // to the minimum cut made after k; an unknown epoch shares nothing.
            let mut reader = Reader::open(&path)?;
            let mut seen_client_epoch = false;
            let mut cut: Option<u64> = None;
            while let Some(rec) = reader.next_record()? {
                let body = rec.body();
                if !(body.contains("\"kind\":\"session.created\"")
                    || body.contains("\"kind\":\"journal.repaired\""))
                {
                    continue;
                }
                let Ok(r) = rec.to_record() else { continue };
                let rec_epoch = r
                    .data
                    .get("epoch")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if r.kind == "journal.repaired" && seen_client_epoch {
                    let lg = r
                        .data
                        .get("last_good_seq")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    cut = Some(cut.map_or(lg, |c| c.min(lg)));
                }
                if rec_epoch == epoch {
                    seen_client_epoch = true;
                }
            }
            Ok(Some(if seen_client_epoch {
                cut.unwrap_or(0)
            } else {
                0
            }))
        })
        .await
        .map_err(|e| Error::internal(format!("epoch scan failed: {e}")))?
    }
}

struct SessionSink {
    session: Arc<Session>,
}

impl EmitSink for SessionSink {
    fn emit(&self, kind: String, data: Value) -> crate::driver::BoxFuture<'static, Result<u64>> {
        let session = Arc::clone(&self.session);
        Box::pin(async move {
            check_driver_kind(&kind)?;
            let journal = Arc::clone(session.writable()?);
            let rec = journal
                .append_async(&kind, &data)
                .await
                .map_err(|e| session.pause_on_write_error(e))?;
            session.emitted([(kind.as_str(), &data)]);
            // A driver emitting in a loop never waits on anything (the write is
            // synchronous): without this it holds its worker for the whole loop, the
            // subscribers' pumps it wakes cannot run on that worker meanwhile, they
            // fall behind the live ring and re-read every record from disk.
            tokio::task::coop::consume_budget().await;
            Ok(rec.seq)
        })
    }

    fn emit_batch(
        self: Arc<Self>,
        records: Vec<(String, Value)>,
    ) -> crate::driver::BoxFuture<'static, Result<Vec<u64>>> {
        let session = Arc::clone(&self.session);
        Box::pin(async move {
            for (kind, _) in &records {
                check_driver_kind(kind)?;
            }
            let journal = Arc::clone(session.writable()?);
            let refs: Vec<(&str, &Value)> = records.iter().map(|(k, d)| (k.as_str(), d)).collect();
            let recs = journal
                .append_batch_async(&refs)
                .await
                .map_err(|e| session.pause_on_write_error(e))?;
            session.emitted(refs);
            // As in `emit`.
            tokio::task::coop::consume_budget().await;
            Ok(recs.iter().map(|r| r.seq).collect())
        })
    }
}

/// The hub owns the lifecycle records; a driver writes its output (`session.delta`,
/// `tool.*`) and its own kinds.
fn check_driver_kind(kind: &str) -> Result<()> {
    if journal::is_durable_kind(kind) || kind.starts_with("daemon.") || kind.starts_with("journal.")
    {
        return Err(Error::invalid_params(format!(
            "drivers may not write the lifecycle kind {kind:?}"
        )));
    }
    Ok(())
}

fn open_bus(home: &Home, writer: &WriterOptions) -> Result<Arc<Journal>> {
    let path = home.bus_path();
    if path.exists() {
        let out = Journal::open(&path, writer.clone())?;
        if let Some(j) = out.journal {
            return Ok(j);
        }
        // A damaged bus log is history only: keep it aside, start a new one.
        let aside = home
            .bus_dir()
            .join(format!("events.ndjson.damaged-{}", time_fmt::unix_now()));
        std::fs::rename(&path, &aside).map_err(|e| Error::io("cannot move aside", &path, e))?;
        tracing::warn!(path = %aside.display(), "the bus log was damaged; moved aside");
    }
    Journal::create(
        &path,
        "",
        "bus.created",
        &json!({"version": crate::VERSION}),
        writer.clone(),
    )
}

impl index::LiveEntry for Arc<Session> {
    fn id(&self) -> &str {
        &self.id
    }

    fn state(&self) -> SessionState {
        Session::state(self)
    }

    fn last_seq(&self) -> u64 {
        Session::last_seq(self)
    }

    fn entry(&self) -> IndexEntry {
        self.index_entry()
    }
}

/// Reopens one session from its index entry (daemon start).
fn reopen_session(cfg: &HubConfig, entry: &IndexEntry) -> Result<Session> {
    let journal_path = cfg.home.journal_path(&entry.id);
    let (mut journal, report, mut damaged): (
        Option<Arc<Journal>>,
        Option<RecoveryReport>,
        Option<journal::Damage>,
    ) = match Journal::open(&journal_path, cfg.writer.clone()) {
        Ok(out) => {
            let dmg = out.report.damage.clone();
            (out.journal, Some(out.report), dmg)
        }
        Err(e) => {
            tracing::error!(session_id = %entry.id, error = %e, "cannot open journal; session is damaged");
            (
                None,
                None,
                Some(journal::Damage {
                    line: 0,
                    offset: 0,
                    reason: e.to_string(),
                }),
            )
        }
    };
    let epoch = report
        .as_ref()
        .map_or_else(|| entry.epoch.clone(), |r| r.epoch.clone());
    let mut last_seq = report.as_ref().map_or(entry.last_seq, |r| r.last_seq);
    let mut record_count = report.as_ref().map_or(0, |r| r.record_count);
    let mut state = entry.state;
    let mut open_lanes: BTreeMap<u64, Option<i32>> = BTreeMap::new();
    if let Some(j) = &journal {
        let clean = report.as_ref().is_some_and(|r| r.clean);
        match scan_for_reattach(j.path(), clean, last_seq, entry.driver != "exec") {
            Ok((true, _)) => state = SessionState::Ended,
            Ok((false, lanes)) => {
                state = SessionState::PausedReattachable;
                open_lanes = lanes;
            }
            // Damage before the part recovery's tail check reads (DESIGN §5: a bad
            // line with good ones after it): this session is read-only; the others,
            // and the daemon, carry on.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::JournalDamaged | ErrorKind::UnsupportedVersion
                ) =>
            {
                let verified = Reader::open(j.path()).and_then(|mut r| r.verify()).ok();
                let d = verified
                    .as_ref()
                    .and_then(|v| v.damage.clone())
                    .unwrap_or_else(|| journal::Damage {
                        line: 0,
                        offset: 0,
                        reason: e.message().to_owned(),
                    });
                if let Some(v) = &verified {
                    (last_seq, record_count) = (v.last_seq, v.records);
                }
                tracing::warn!(session_id = %entry.id, line = d.line, offset = d.offset, reason = %d.reason, "journal damaged; session is read-only");
                damaged = Some(d);
                journal = None;
            }
            Err(e) => return Err(e),
        }
    }
    if journal.is_none() {
        state = SessionState::Damaged;
    }
    let reload = ReloadInfo {
        record_count,
        last_seq,
        repaired: report.as_ref().and_then(|r| r.repaired.clone()),
        damage: damaged.clone(),
    };
    if state == SessionState::PausedReattachable
        && let Some(j) = &journal
    {
        for (lane, pgid) in open_lanes.iter() {
            if let Some(pgid) = pgid {
                kill_surviving_group(*pgid, &entry.id);
            }
            j.append("tool.end", &json!({"lane_id": lane, "ok": false, "exit_code": null, "duration_ms": 0, "interrupted": true}))?;
        }
        j.append(
            "session.reattached",
            &json!({"instance_id": cfg.instance_id}),
        )?;
    }
    let last_activity = time_fmt::now_millis();
    Ok(Session {
        id: entry.id.clone(),
        name: entry.name.clone(),
        workdir: entry.workdir.clone(),
        driver: entry.driver.clone(),
        command: entry.command.clone(),
        env: entry.env.clone(),
        started_at: entry.started_at.clone(),
        journal_path,
        journal,
        epoch,
        reload: Some(reload),
        inner: Mutex::new(SessionInner {
            state,
            inbox: None,
            control: None,
            driver_done: None,
            open_lanes: BTreeSet::new(),
            last_seq_hint: last_seq,
            last_activity,
            error: None,
        }),
        send_lock: tokio::sync::Mutex::new(()),
        gone: watch::channel(false).0,
    })
}

/// Reads a journal to decide how it ended: whether its last meaningful record is
/// `session.ended`, and which inputs (lanes) never got a `tool.end` (with the pgid
/// their `tool.start` recorded). A journal closed cleanly has no open lanes (the
/// shutdown recorded them), so only its last record is read.
#[allow(clippy::type_complexity)]
fn scan_for_reattach(
    path: &Path,
    clean: bool,
    last_seq: u64,
    track_inputs: bool,
) -> Result<(bool, BTreeMap<u64, Option<i32>>)> {
    let mut lanes: BTreeMap<u64, Option<i32>> = BTreeMap::new();
    if clean {
        // Only the last record matters: seek straight to it.
        let mut reader = Reader::open(path)?;
        reader.seek(last_seq.saturating_sub(1))?;
        let mut last = None;
        while let Some(r) = reader.next_record()? {
            last = Some(r);
        }
        let ended = last
            .and_then(|r| r.kind())
            .is_some_and(|k| k == "session.ended");
        return Ok((ended, lanes));
    }
    // A crashed daemon's restart reads every journal whole: walk the lines in place
    // (verified as a reader verifies them, nothing copied) and parse only the lane
    // records' data.
    let file = paths::open_private(path, paths::OpenMode::Read)?;
    let size = file
        .metadata()
        .map_err(|e| Error::io("cannot fstat", path, e))?
        .len();
    let mut ended = false;
    let walked = journal::reader::walk_verified(&file, size, |rec| {
        let kind = rec.kind.as_ref();
        ended = kind == "session.ended";
        match kind {
            "user.input" if track_inputs => {
                lanes.insert(rec.seq, None);
            }
            "tool.start" => {
                if let Some((lane, pgid)) = lane_fields(rec) {
                    lanes.insert(lane, pgid);
                }
            }
            "tool.end" => {
                if let Some((lane, _)) = lane_fields(rec) {
                    lanes.remove(&lane);
                }
            }
            _ => {}
        }
    })
    .map_err(|e| Error::io("cannot read", path, e))?;
    match walked {
        journal::reader::WalkEnd::Intact => Ok((ended, lanes)),
        journal::reader::WalkEnd::Damaged(damage) => Err(damage.to_error(path)),
    }
}

/// `data.lane_id` of a lane record and the `data.pgid` that fits an `i32`, read as
/// `Value::as_u64` / `Value::as_i64` read them from the parsed `data`, without
/// building the whole value when `data` is a plain object (the common case).
fn lane_fields(rec: &journal::record::CheckedLine<'_>) -> Option<(u64, Option<i32>)> {
    fn from_value(data: &Value) -> Option<(u64, Option<i32>)> {
        let lane = data.get("lane_id").and_then(Value::as_u64)?;
        let pgid = data
            .get("pgid")
            .and_then(Value::as_i64)
            .and_then(|p| i32::try_from(p).ok());
        Some((lane, pgid))
    }
    /// Only the two fields; a repeated one is an error here (where a `Value`
    /// keeps the last), so any error falls back to the `Value`.
    #[derive(serde::Deserialize)]
    struct LaneFields {
        #[serde(default)]
        lane_id: Option<Value>,
        #[serde(default)]
        pgid: Option<Value>,
    }
    let Some(data) = rec.data else {
        return from_value(&rec.to_raw().to_record().ok()?.data);
    };
    // A struct also deserializes from a JSON array: only objects take the short cut.
    let is_object = data
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{');
    match serde_json::from_str::<LaneFields>(data) {
        Ok(fields) if is_object => {
            let lane = fields.lane_id.as_ref().and_then(Value::as_u64)?;
            let pgid = fields
                .pgid
                .as_ref()
                .and_then(Value::as_i64)
                .and_then(|p| i32::try_from(p).ok());
            Some((lane, pgid))
        }
        _ => from_value(&serde_json::from_str::<Value>(data).ok()?),
    }
}

/// Kills a process group left running by a daemon that died, but only if its leader
/// still carries this session's id in its environment (a recycled pgid belongs to
/// someone else and is left alone).
fn kill_surviving_group(pgid: i32, session_id: &str) {
    if pgid <= 1 {
        return;
    }
    let environ = match std::fs::read(format!("/proc/{pgid}/environ")) {
        Ok(b) => b,
        Err(_) => return,
    };
    let marker = format!("R1_SESSION_ID={session_id}");
    if environ.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
        tracing::warn!(
            pgid,
            session_id,
            "killed a command left running by the previous daemon"
        );
    }
}

#[cfg(test)]
#[path = "emit_tests.rs"]
mod emit_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::record::{check_line, encode_line};

    /// The restart scan's lane fields agree with reading them off the parsed `data`
    /// (`Value::as_u64` / `as_i64`), whatever shape `data` has.
    #[test]
    fn lane_fields_agree_with_the_parsed_value() {
        let datas = [
            json!({"tool": "sh", "args": {"cmd": "x"}, "lane_id": 7, "pgid": 4242}),
            json!({"lane_id": 7, "pgid": null}),
            json!({"lane_id": 7}),
            json!({"lane_id": 7, "pgid": 1u64 << 40}),
            json!({"lane_id": 7, "pgid": -3}),
            json!({"lane_id": 7, "pgid": "12"}),
            json!({"lane_id": -7}),
            json!({"lane_id": 7.0}),
            json!({"lane_id": "7"}),
            json!({"lane_id": null}),
            json!({"pgid": 5}),
            json!([7, 4242]),
            json!(7),
            json!(null),
            json!({"lane_id": u64::MAX, "pgid": i64::from(i32::MIN)}),
        ];
        let mut lines: Vec<String> = datas
            .iter()
            .map(|d| encode_line(3, "2026-05-02T18:30:00.123Z", "tool.start", d).unwrap())
            .collect();
        // Not encode_line's layout (the slow path), and a repeated field (a `Value`
        // keeps the last).
        for body in [
            r#""kind":"tool.start","at":"t","data":{"lane_id":9,"pgid":8}}"#,
            r#""at":"t","kind":"tool.start","data":{"lane_id":1,"lane_id":2,"pgid":3,"pgid":4}}"#,
            r#""at":"t","kind":"tool.start","data": [1,2]}"#,
        ] {
            let crc = crc32c::crc32c(body.as_bytes());
            lines.push(format!(
                "{{\"v\":1,\"seq\":3,\"crc\":\"{crc:08x}\",{body}\n"
            ));
        }
        for line in &lines {
            let rec = check_line(line.trim_end().as_bytes()).unwrap();
            let data = rec.to_raw().to_record().unwrap().data;
            let expected = data.get("lane_id").and_then(Value::as_u64).map(|lane| {
                let pgid = data
                    .get("pgid")
                    .and_then(Value::as_i64)
                    .and_then(|p| i32::try_from(p).ok());
                (lane, pgid)
            });
            assert_eq!(lane_fields(&rec), expected, "{line}");
        }
    }
}
