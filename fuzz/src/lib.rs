//! What the fuzz targets share: one tokio runtime per process and a real daemon in a
//! temporary home, started on first use and replaced when a fuzz input has worn it
//! out (too many sessions) or stopped it.
//!
//! The daemon is an ordinary [`r1_core::Daemon`] with two differences that keep the
//! fuzzer from doing harm: its only driver is [`Echo`] (registered as `shell`, so
//! `session.start` and `session.send` work without spawning `sh -c <fuzz bytes>`),
//! and its token is the fixed [`TOKEN`] so seed requests can carry it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use r1_core::driver::{
    BoxFuture, Control, DriverContext, DriverExit, DriverFactory, DriverSpec, SessionDriver,
};
use r1_core::rpc::dispatch::Dispatcher;
use r1_core::server::http::HttpConfig;
use r1_core::session::hub::StartParams;
use r1_core::session::state::SessionState;
use r1_core::token::Token;
use r1_core::{Daemon, DaemonConfig, DaemonHandle};
use serde_json::json;
use tokio::runtime::Runtime;

/// The bearer token of the fuzzed daemon (seeds send it).
pub const TOKEN: &str = "f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0";

/// The port the in-memory HTTP connections claim to have arrived on (seeds send
/// `Host: 127.0.0.1:8080`).
pub const PORT: u16 = 8080;

/// Sessions a daemon may collect before it is replaced by a fresh one.
const MAX_SESSIONS: usize = 48;

/// The process-wide runtime (two workers, like a small daemon).
pub fn runtime() -> &'static Runtime {
    static RT: LazyLock<Runtime> = LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    });
    &RT
}

/// A running daemon and the directory it lives in.
pub struct Harness {
    /// The daemon.
    pub handle: DaemonHandle,
    /// A dispatcher over its state.
    pub rpc: Dispatcher,
    /// An existing directory sessions may use (the seeds use `/tmp`; this is another).
    pub work: PathBuf,
    /// A session that is running when an input starts (`$SID` in inputs).
    pub sid: String,
    /// Home, socket and work directory (removed when the daemon is replaced, and
    /// at exit).
    dir: PathBuf,
}

impl Harness {
    /// `data` with every `$SID` replaced by [`Harness::sid`], so seeds and the
    /// fuzzer can reach a live session (ids are random uuids otherwise).
    pub fn substitute<'a>(&self, data: &'a [u8]) -> Cow<'a, [u8]> {
        const MARK: &[u8] = b"$SID";
        if !data.windows(MARK.len()).any(|w| w == MARK) {
            return Cow::Borrowed(data);
        }
        let mut out = Vec::with_capacity(data.len() + 64);
        let mut i = 0;
        while i < data.len() {
            if data[i..].starts_with(MARK) {
                out.extend_from_slice(self.sid.as_bytes());
                i += MARK.len();
            } else {
                out.push(data[i]);
                i += 1;
            }
        }
        Cow::Owned(out)
    }

    fn ensure_session(&mut self) {
        let hub = &self.handle.state().hub;
        let live = hub
            .get(&self.sid)
            .is_ok_and(|s| s.state() == SessionState::Running);
        if live {
            return;
        }
        let params = StartParams {
            workdir: self.work.to_string_lossy().into_owned(),
            driver: None,
            command: None,
            env: None,
            name: Some("fuzz".into()),
        };
        let started = runtime()
            .block_on(hub.start(params))
            .expect("the harness session starts");
        self.sid = started["session_id"]
            .as_str()
            .expect("session_id")
            .to_owned();
    }
}

static DAEMON: Mutex<Option<Harness>> = Mutex::new(None);

/// Where the targets make their temporary directories: `R1_FUZZ_SCRATCH` (the smoke
/// script sets it to a directory it removes), else `/dev/shm` (the daemon fsyncs,
/// and fsync on tmpfs is free), else the system temp dir.
pub fn scratch_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("R1_FUZZ_SCRATCH") {
        return PathBuf::from(dir);
    }
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

/// A temporary directory under [`scratch_root`] that is removed when the process
/// exits normally (libFuzzer ends with `exit()`, which skips Rust destructors of
/// statics, so the removal is registered with `atexit`).
pub fn scratch_dir(prefix: &str) -> PathBuf {
    static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    extern "C" fn remove_all() {
        for d in DIRS.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    static REGISTER: std::sync::Once = std::sync::Once::new();
    // SAFETY: registering a plain `extern "C" fn` with no arguments is what atexit
    // expects; it runs once, on the thread calling exit().
    REGISTER.call_once(|| unsafe {
        libc::atexit(remove_all);
    });
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(scratch_root())
        .expect("temp dir")
        .keep();
    DIRS.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(dir.clone());
    dir
}

fn start() -> Harness {
    let dir = scratch_dir("r1-fuzz-");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    let mut drivers: BTreeMap<String, Arc<dyn DriverFactory>> = BTreeMap::new();
    drivers.insert("shell".into(), Arc::new(EchoFactory));
    let cfg = DaemonConfig {
        home: Some(dir.join("home")),
        sock_path: Some(dir.join("s.sock")),
        token: Some(Token::parse(TOKEN).expect("token")),
        tcp: false,
        fsync_interval: Duration::from_millis(100),
        shutdown_grace: Duration::from_millis(200),
        drivers,
        ..Default::default()
    };
    let handle = runtime()
        .block_on(Daemon::start(cfg))
        .expect("the fuzzed daemon starts");
    handle.state().set_http_config(HttpConfig {
        header_read_timeout: Duration::from_secs(2),
        ws_ping_interval: Duration::from_secs(20),
        ws_pong_timeout: Duration::from_secs(60),
        ws_close_timeout: Duration::from_millis(100),
        sse_keepalive: Duration::from_secs(20),
        ..HttpConfig::default()
    });
    let rpc = Dispatcher::new(Arc::clone(handle.state()));
    Harness {
        handle,
        rpc,
        work,
        sid: String::new(),
        dir,
    }
}

/// The daemon, started (again) when needed. Hold the guard only for one input.
pub fn daemon() -> MutexGuard<'static, Option<Harness>> {
    let mut guard = DAEMON.lock().unwrap_or_else(|p| p.into_inner());
    let worn = match guard.as_ref() {
        None => true,
        Some(h) => {
            h.handle.state().shutdown.is_cancelled()
                || h.handle.state().hub.all().len() > MAX_SESSIONS
        }
    };
    if worn {
        if let Some(old) = guard.take() {
            let _ = runtime().block_on(old.handle.stop());
            let _ = std::fs::remove_dir_all(&old.dir);
        }
        *guard = Some(start());
    }
    if let Some(h) = guard.as_mut() {
        h.ensure_session();
    }
    guard
}

/// `line` (no newline) with the CRC its prefix names recomputed over its body, when
/// the prefix parses (`None` otherwise or when it was already right).
pub fn fix_crc(line: &[u8]) -> Option<Vec<u8>> {
    let (_, _, crc, body_start) = r1_core::journal::record::parse_prefix(line).ok()?;
    let computed = crc32c::crc32c(&line[body_start..]);
    if computed == crc {
        return None;
    }
    // The 8 hex digits end two bytes (`",`) before the body.
    let at = body_start - 10;
    let mut out = line.to_vec();
    out[at..at + 8].copy_from_slice(format!("{computed:08x}").as_bytes());
    Some(out)
}

/// Every line of `bytes` (split at `\n`, the last one may be unfinished) with its
/// CRC recomputed where its prefix parses.
pub fn fix_all_crcs(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        match fix_crc(line) {
            Some(fixed) => out.extend_from_slice(&fixed),
            None => out.extend_from_slice(line),
        }
    }
    out
}

/// True when `bytes` would ask the daemon to shut down (any element of a batch):
/// the fuzz targets skip those, as a stopped daemon would only be restarted.
pub fn asks_shutdown(bytes: &[u8]) -> bool {
    use r1_core::rpc::envelope::{Incoming, Item, parse};
    let shutdown = |i: &Item| matches!(i, Item::Request(r) if r.method == "daemon.shutdown");
    match parse(bytes) {
        Incoming::Single(i) => shutdown(&i),
        Incoming::Batch(items) => items.iter().any(shutdown),
        Incoming::Reject(_) => false,
    }
}

/// Checks that `answer` is a JSON-RPC 2.0 response (or a batch of them) as the
/// specification shapes it; panics otherwise.
pub fn check_rpc_answer(answer: &str) {
    let v: serde_json::Value = match serde_json::from_str(answer) {
        Ok(v) => v,
        Err(e) => panic!("the answer is not JSON ({e}): {answer}"),
    };
    match &v {
        serde_json::Value::Array(items) => {
            assert!(!items.is_empty(), "an empty batch answer: {answer}");
            for i in items {
                check_response(i);
            }
        }
        other => check_response(other),
    }
}

fn check_response(v: &serde_json::Value) {
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("a response that is not an object: {v}"));
    assert_eq!(o.get("jsonrpc"), Some(&json!("2.0")), "{v}");
    let id = o
        .get("id")
        .unwrap_or_else(|| panic!("a response without id: {v}"));
    assert!(
        id.is_string() || id.is_number() || id.is_null(),
        "a response id that is neither string, number nor null: {v}"
    );
    match (o.get("result"), o.get("error")) {
        (Some(_), None) => {}
        (None, Some(e)) => {
            assert!(e["code"].is_i64(), "an error without an integer code: {v}");
            assert!(e["message"].is_string(), "an error without a message: {v}");
        }
        _ => panic!("a response needs exactly one of result and error: {v}"),
    }
    assert_eq!(
        o.len(),
        3,
        "a response has jsonrpc, id and result|error only: {v}"
    );
}

/// Makes [`Echo`] drivers.
struct EchoFactory;

impl DriverFactory for EchoFactory {
    fn create(&self, _spec: &DriverSpec) -> r1_core::Result<Box<dyn SessionDriver>> {
        Ok(Box::new(Echo))
    }
}

/// Answers each input with a `session.delta` of its text and a `tool.end`; never
/// runs anything.
struct Echo;

impl SessionDriver for Echo {
    fn run(
        self: Box<Self>,
        mut ctx: DriverContext,
    ) -> BoxFuture<'static, r1_core::Result<DriverExit>> {
        Box::pin(async move {
            loop {
                tokio::select! {
                    input = ctx.inbox.recv() => {
                        let Some(input) = input else { return Ok(DriverExit::Stopped) };
                        ctx.emitter.emit("session.delta", json!({"stream": "stdout", "text": input.text})).await?;
                        ctx.emitter.emit("tool.end", json!({"lane_id": input.seq, "ok": true, "exit_code": 0, "duration_ms": 0})).await?;
                    }
                    changed = ctx.control.changed() => {
                        let control = if changed.is_ok() { *ctx.control.borrow() } else { Control::Stop };
                        match control {
                            Control::Cancel => return Ok(DriverExit::Cancelled),
                            Control::Stop => return Ok(DriverExit::Stopped),
                            Control::Run | Control::Pause => {}
                        }
                    }
                }
            }
        })
    }
}
