//! Drivers: the thing a session runs (DESIGN §6).
//!
//! The hub owns the session's journal and state; a driver only sees a
//! [`DriverContext`]: the workdir and spec, an inbox of user inputs (already
//! journaled as `user.input`), a control channel (run / pause / cancel / stop), and an
//! [`Emitter`] whose `emit(kind, data)` journals a record and then broadcasts it.
//!
//! Contract every driver keeps:
//! * never change the process cwd: children get `current_dir(workdir)` and `PWD`;
//! * lanes: work caused by input seq `N` is bracketed by `tool.start {lane_id: N, …}`
//!   and `tool.end {lane_id: N, ok, exit_code, duration_ms, interrupted?}`;
//! * [`Control::Pause`] holds queued work and stops running work; [`Control::Run`]
//!   continues it; [`Control::Cancel`] ends the session ([`DriverExit::Cancelled`]);
//!   [`Control::Stop`] (daemon shutdown) ends running work, records its `tool.end`
//!   with `interrupted: true`, and returns [`DriverExit::Stopped`];
//! * the hub writes `session.ended` from the [`DriverExit`]; drivers never write
//!   reserved kinds (`session.*`, `user.*`, `journal.*`, `daemon.*`).

pub mod exec;
pub mod output;
pub mod process;
pub mod shell;
#[doc(hidden)]
pub mod testing;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::error::Result;

/// A boxed, sendable future (drivers are trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the hub knows about the session a driver runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverSpec {
    /// `sess_<uuid>`.
    pub session_id: String,
    /// Canonical, existing, writable directory.
    pub workdir: PathBuf,
    /// The driver name (`shell`, `exec`, or a registered custom one).
    pub driver: String,
    /// `exec`: the argv of the child.
    pub command: Option<Vec<String>>,
    /// Extra environment for children.
    pub env: BTreeMap<String, String>,
    /// The session's journal file (exported to `exec` children as `R1_SESSION_JOURNAL`).
    pub journal_path: PathBuf,
}

/// One user input, already in the journal as `user.input` with this seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// The journal seq of the `user.input` record (also the lane id).
    pub seq: u64,
    /// What the user sent.
    pub text: String,
}

/// What the hub asks of a running driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Work normally.
    Run,
    /// Hold queued inputs and stop (SIGSTOP) running work.
    Pause,
    /// End the session: stop running work (SIGTERM+SIGCONT, SIGKILL after 5 s).
    Cancel,
    /// Daemon shutdown: end running work, record it interrupted, return `Stopped`.
    Stop,
}

/// How a driver's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverExit {
    /// The driver's work is done (e.g. the `exec` child exited).
    Finished {
        /// True for success (exit 0).
        ok: bool,
        /// The child's exit code, if it had one.
        exit_code: Option<i32>,
        /// A short reason when not ok (signal name, spawn error …).
        message: Option<String>,
    },
    /// Ended by [`Control::Cancel`].
    Cancelled,
    /// Ended by [`Control::Stop`]; the session is resumable after restart.
    Stopped,
}

/// Journals then broadcasts a record for the session. Cheap to clone.
#[derive(Clone)]
pub struct Emitter {
    sink: Arc<dyn EmitSink>,
}

/// The hub's side of an [`Emitter`].
pub trait EmitSink: Send + Sync + 'static {
    /// Appends `kind`/`data` to the session's journal and broadcasts it; returns its seq.
    fn emit(&self, kind: String, data: serde_json::Value) -> BoxFuture<'static, Result<u64>>;

    /// Appends several records in order, all or none, and broadcasts them; returns
    /// their seqs. The hub writes them with one `write(2)`; this default (for sinks
    /// that have no batch write) emits them one at a time and stops at the first
    /// error, so the ones before it stay written.
    fn emit_batch(
        self: Arc<Self>,
        records: Vec<(String, serde_json::Value)>,
    ) -> BoxFuture<'static, Result<Vec<u64>>> {
        Box::pin(async move {
            let mut seqs = Vec::with_capacity(records.len());
            for (kind, data) in records {
                seqs.push(self.emit(kind, data).await?);
            }
            Ok(seqs)
        })
    }
}

impl Emitter {
    /// Wraps a sink.
    pub fn new(sink: Arc<dyn EmitSink>) -> Emitter {
        Emitter { sink }
    }

    /// Journals then broadcasts one record; returns its seq.
    pub async fn emit(&self, kind: &str, data: serde_json::Value) -> Result<u64> {
        self.sink.emit(kind.to_owned(), data).await
    }

    /// Journals then broadcasts several records at once, in order; returns their
    /// seqs (consecutive). For a driver that has several records ready: the daemon
    /// writes them with one `write(2)` instead of one each, and like
    /// [`Emitter::emit`] they have reached the kernel when this returns. All of
    /// them are written or, on an error (a refused kind, a record over the line
    /// limit, a failed write), none.
    pub async fn emit_batch(&self, records: Vec<(String, serde_json::Value)>) -> Result<Vec<u64>> {
        Arc::clone(&self.sink).emit_batch(records).await
    }
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Emitter")
    }
}

/// Everything a driver gets for one run.
#[derive(Debug)]
pub struct DriverContext {
    /// The session.
    pub spec: DriverSpec,
    /// User inputs in order.
    pub inbox: mpsc::UnboundedReceiver<Input>,
    /// The current control state; drivers watch it for changes.
    pub control: watch::Receiver<Control>,
    /// Where records go.
    pub emitter: Emitter,
}

/// A running driver.
pub trait SessionDriver: Send + 'static {
    /// Runs until the work is finished, cancelled or stopped.
    fn run(self: Box<Self>, ctx: DriverContext) -> BoxFuture<'static, Result<DriverExit>>;
}

/// Makes drivers of one kind; registered by name in `DaemonConfig`.
pub trait DriverFactory: Send + Sync + 'static {
    /// Validates `spec` (e.g. `exec` needs a non-empty `command`) and builds a driver.
    /// Errors here fail `session.start` with invalid params.
    fn create(&self, spec: &DriverSpec) -> Result<Box<dyn SessionDriver>>;
}

/// The drivers every daemon has: `shell` and `exec`.
pub fn builtin_factories() -> BTreeMap<String, Arc<dyn DriverFactory>> {
    let mut m: BTreeMap<String, Arc<dyn DriverFactory>> = BTreeMap::new();
    m.insert("shell".to_owned(), Arc::new(shell::ShellFactory));
    m.insert("exec".to_owned(), Arc::new(exec::ExecFactory));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A sink with only `emit`: it numbers records and refuses the kind `bad`.
    #[derive(Default)]
    struct OneByOne {
        kinds: Mutex<Vec<String>>,
    }

    impl EmitSink for OneByOne {
        fn emit(&self, kind: String, _data: serde_json::Value) -> BoxFuture<'static, Result<u64>> {
            let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
            let result = if kind == "bad" {
                Err(crate::Error::invalid_params("bad kind"))
            } else {
                kinds.push(kind);
                Ok(kinds.len() as u64)
            };
            Box::pin(std::future::ready(result))
        }
    }

    fn batch(kinds: &[&str]) -> Vec<(String, serde_json::Value)> {
        kinds
            .iter()
            .map(|k| ((*k).to_owned(), serde_json::Value::Null))
            .collect()
    }

    #[tokio::test]
    async fn the_default_batch_emits_one_at_a_time_and_stops_at_the_first_error() {
        let sink = Arc::new(OneByOne::default());
        let emitter = Emitter::new(sink.clone());
        assert_eq!(
            emitter.emit_batch(batch(&["a", "b", "c"])).await.unwrap(),
            [1, 2, 3]
        );
        let e = emitter
            .emit_batch(batch(&["d", "bad", "e"]))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidParams);
        // `d` stays written; nothing after the refused record is.
        assert_eq!(*sink.kinds.lock().unwrap(), ["a", "b", "c", "d"]);
        assert!(emitter.emit_batch(Vec::new()).await.unwrap().is_empty());
    }
}
