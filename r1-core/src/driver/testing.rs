//! Test support: run a driver without a daemon or a journal.
//!
//! [`MemorySink`] is an [`EmitSink`] that keeps every record in memory with increasing
//! seqs; [`DriverHarness`] plays the hub (journals `user.input` into the sink to get a
//! seq, then hands the input to the driver; sets the control state; joins the run).
//! Waiting is by polling for an expected record with a deadline, never by sleeping.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{
    BoxFuture, Control, DriverContext, DriverExit, DriverSpec, EmitSink, Emitter, Input,
    SessionDriver,
};
use crate::error::{Error, ErrorKind, Result};

/// One record an [`EmitSink`] received.
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    /// Its seq (1, 2, 3 … by default).
    pub seq: u64,
    /// Its kind.
    pub kind: String,
    /// Its data.
    pub data: Value,
}

/// An in-memory [`EmitSink`].
#[derive(Debug)]
pub struct MemorySink {
    state: Mutex<SinkState>,
    /// Bumped after every record, for waiters.
    count: watch::Sender<usize>,
}

#[derive(Debug)]
struct SinkState {
    next_seq: u64,
    records: Vec<Emitted>,
    fail_kinds: Vec<String>,
    /// How many records each `emit_batch` carried, in order.
    batches: Vec<usize>,
}

impl MemorySink {
    /// A sink whose first record gets seq 1.
    pub fn new() -> Arc<MemorySink> {
        MemorySink::starting_at(1)
    }

    /// A sink whose first record gets `seq`.
    pub fn starting_at(seq: u64) -> Arc<MemorySink> {
        Arc::new(MemorySink {
            state: Mutex::new(SinkState {
                next_seq: seq,
                records: Vec::new(),
                fail_kinds: Vec::new(),
                batches: Vec::new(),
            }),
            count: watch::channel(0).0,
        })
    }

    /// An [`Emitter`] writing here.
    pub fn emitter(self: &Arc<Self>) -> Emitter {
        Emitter::new(self.clone())
    }

    /// Makes every later emit of `kind` fail with an I/O error (as a full disk would).
    pub fn fail_kind(&self, kind: &str) {
        self.lock().fail_kinds.push(kind.to_owned());
    }

    /// Everything received so far, in order.
    pub fn records(&self) -> Vec<Emitted> {
        self.lock().records.clone()
    }

    /// How many records each `emit_batch` carried, in order (`emit` is not counted).
    pub fn batch_sizes(&self) -> Vec<usize> {
        self.lock().batches.clone()
    }

    /// The records of `kind`, in order.
    pub fn of_kind(&self, kind: &str) -> Vec<Emitted> {
        self.lock()
            .records
            .iter()
            .filter(|r| r.kind == kind)
            .cloned()
            .collect()
    }

    /// Waits until `pred` holds for the records so far and returns them; after
    /// `timeout`, a [`ErrorKind::Timeout`] error listing what was received.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&[Emitted]) -> bool,
    ) -> Result<Vec<Emitted>> {
        let mut rx = self.count.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            let records = self.records();
            if pred(&records) {
                return Ok(records);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                // The sender lives in `self`: it cannot be dropped while we borrow it.
                Ok(Err(_)) => return Err(Error::internal("memory sink closed")),
                Err(_) => {
                    let dump: Vec<String> = records
                        .iter()
                        .map(|r| format!("{} {} {}", r.seq, r.kind, r.data))
                        .collect();
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "expected record not seen within {timeout:?}; got:\n{}",
                            dump.join("\n")
                        ),
                    ));
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, SinkState> {
        // A panic elsewhere while holding the lock leaves the data usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl EmitSink for MemorySink {
    fn emit(&self, kind: String, data: Value) -> BoxFuture<'static, Result<u64>> {
        let result = {
            let mut st = self.lock();
            if st.fail_kinds.contains(&kind) {
                Err(Error::new(
                    ErrorKind::Io,
                    format!("memory sink refuses {kind} (fail_kind)"),
                ))
            } else {
                let seq = st.next_seq;
                st.next_seq += 1;
                st.records.push(Emitted { seq, kind, data });
                Ok(seq)
            }
        };
        if result.is_ok() {
            self.count.send_modify(|c| *c += 1);
        }
        Box::pin(std::future::ready(result))
    }

    /// All or none, as the hub's: a refused kind anywhere refuses the whole batch.
    fn emit_batch(
        self: Arc<Self>,
        records: Vec<(String, Value)>,
    ) -> BoxFuture<'static, Result<Vec<u64>>> {
        let result = {
            let mut st = self.lock();
            if let Some((kind, _)) = records.iter().find(|(k, _)| st.fail_kinds.contains(k)) {
                Err(Error::new(
                    ErrorKind::Io,
                    format!("memory sink refuses {kind} (fail_kind)"),
                ))
            } else {
                st.batches.push(records.len());
                let first = st.next_seq;
                st.next_seq += records.len() as u64;
                st.records.extend(
                    records
                        .into_iter()
                        .zip(first..)
                        .map(|((kind, data), seq)| Emitted { seq, kind, data }),
                );
                Ok((first..st.next_seq).collect::<Vec<u64>>())
            }
        };
        if let Ok(seqs) = &result {
            let n = seqs.len();
            self.count.send_modify(|c| *c += n);
        }
        Box::pin(std::future::ready(result))
    }
}

/// A driver running on a task, fed like the hub feeds it.
#[derive(Debug)]
pub struct DriverHarness {
    /// Where the driver's records (and the harness's `user.input`s) go.
    pub sink: Arc<MemorySink>,
    inbox: Option<mpsc::UnboundedSender<Input>>,
    control: watch::Sender<Control>,
    task: JoinHandle<Result<DriverExit>>,
}

impl DriverHarness {
    /// Starts `driver` for `spec` on a new task, in the [`Control::Run`] state.
    pub fn start(driver: Box<dyn SessionDriver>, spec: DriverSpec) -> DriverHarness {
        DriverHarness::start_with(driver, spec, Control::Run)
    }

    /// Starts `driver` for `spec` with the control state `initial`.
    pub fn start_with(
        driver: Box<dyn SessionDriver>,
        spec: DriverSpec,
        initial: Control,
    ) -> DriverHarness {
        let sink = MemorySink::new();
        let (inbox_tx, inbox) = mpsc::unbounded_channel();
        let (control_tx, control) = watch::channel(initial);
        let ctx = DriverContext {
            spec,
            inbox,
            control,
            emitter: sink.emitter(),
        };
        let task = tokio::spawn(driver.run(ctx));
        DriverHarness {
            sink,
            inbox: Some(inbox_tx),
            control: control_tx,
            task,
        }
    }

    /// Journals `user.input {text}` in the sink, then gives the input to the driver;
    /// returns its seq (the lane id).
    pub async fn send(&self, text: &str) -> Result<u64> {
        let seq = self
            .sink
            .emitter()
            .emit("user.input", json!({ "text": text }))
            .await?;
        let tx = self
            .inbox
            .as_ref()
            .ok_or_else(|| Error::invalid_state("the harness inbox is closed"))?;
        tx.send(Input {
            seq,
            text: text.to_owned(),
        })
        .map_err(|_| Error::new(ErrorKind::Closed, "the driver dropped its inbox"))?;
        Ok(seq)
    }

    /// Sets the control state.
    pub fn control(&self, c: Control) {
        self.control.send_replace(c);
    }

    /// Drops the inbox sender (as a hub tearing down would).
    pub fn close_inbox(&mut self) {
        self.inbox = None;
    }

    /// Drops the driver's run mid-flight (as a hub aborting its task would) and waits
    /// until the task is gone.
    pub async fn abort(self) {
        self.task.abort();
        // Cancelled (or finished first): either way nothing of the run is left.
        let _ = self.task.await;
    }

    /// True once the driver's run returned.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits until `pred` holds for the records (see [`MemorySink::wait_for`]).
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl FnMut(&[Emitted]) -> bool,
    ) -> Result<Vec<Emitted>> {
        self.sink.wait_for(timeout, pred).await
    }

    /// Waits for the run to return, at most `timeout` (then the task is aborted). The
    /// inbox and control stay open meanwhile, so the driver ends on its own terms.
    pub async fn join(self, timeout: Duration) -> Result<DriverExit> {
        let DriverHarness {
            task,
            inbox: _inbox,
            control: _control,
            ..
        } = self;
        let abort = task.abort_handle();
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(Error::internal(format!("driver task failed: {e}"))),
            Err(_) => {
                abort.abort();
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!("driver did not return within {timeout:?}"),
                ))
            }
        }
    }
}

/// The records of `kind`.
pub fn of_kind<'a>(records: &'a [Emitted], kind: &str) -> Vec<&'a Emitted> {
    records.iter().filter(|r| r.kind == kind).collect()
}

/// The `tool.end` of lane `lane`, if recorded.
pub fn tool_end(records: &[Emitted], lane: u64) -> Option<&Emitted> {
    records
        .iter()
        .find(|r| r.kind == "tool.end" && r.data.get("lane_id") == Some(&json!(lane)))
}

/// The concatenated `session.delta` text of `stream` (optionally of one lane only).
pub fn delta_text(records: &[Emitted], stream: &str, lane: Option<u64>) -> String {
    records
        .iter()
        .filter(|r| {
            r.kind == "session.delta"
                && r.data.get("stream").and_then(Value::as_str) == Some(stream)
                && lane.is_none_or(|l| r.data.get("lane_id") == Some(&json!(l)))
        })
        .filter_map(|r| r.data.get("text").and_then(Value::as_str))
        .collect()
}
