//! The hub and its drivers: emit order, seqs and lane records, scheduling, and inputs racing a driver exit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::driver::{
    BoxFuture, Control, DriverContext, DriverExit, DriverFactory, DriverSpec, SessionDriver,
};

/// Emits 1,000 `probe.tick` records in a tight loop per input, with a lane record and
/// a delta in between, and notes when a task spawned before the loop first ran.
#[derive(Default)]
struct Probe {
    /// 1-based index of the tick before which the spawned task had run (0: never).
    other_task_ran_at: AtomicU64,
    /// The seqs `emit` returned, in order.
    seqs: std::sync::Mutex<Vec<u64>>,
}

struct ProbeFactory(Arc<Probe>);

impl DriverFactory for ProbeFactory {
    fn create(&self, _spec: &DriverSpec) -> Result<Box<dyn SessionDriver>> {
        Ok(Box::new(ProbeDriver(Arc::clone(&self.0))))
    }
}

struct ProbeDriver(Arc<Probe>);

impl SessionDriver for ProbeDriver {
    fn run(self: Box<Self>, mut ctx: DriverContext) -> BoxFuture<'static, Result<DriverExit>> {
        let probe = self.0;
        Box::pin(async move {
            let Some(input) = ctx.inbox.recv().await else {
                return Ok(DriverExit::Stopped);
            };
            let ran = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&ran);
            tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
            let mut seqs = Vec::new();
            for i in 1..=1000u64 {
                if ran.load(Ordering::SeqCst) && probe.other_task_ran_at.load(Ordering::SeqCst) == 0
                {
                    probe.other_task_ran_at.store(i, Ordering::SeqCst);
                }
                seqs.push(ctx.emitter.emit("probe.tick", json!({"i": i})).await?);
                if i == 500 {
                    seqs.push(
                        ctx.emitter
                            .emit("tool.start", json!({"tool": "probe", "lane_id": input.seq}))
                            .await?,
                    );
                    seqs.push(
                        ctx.emitter
                            .emit("session.delta", json!({"stream": "stdout", "text": "half"}))
                            .await?,
                    );
                }
            }
            seqs.push(
                ctx.emitter
                    .emit(
                        "tool.end",
                        json!({"lane_id": input.seq, "ok": true, "exit_code": 0, "duration_ms": 0}),
                    )
                    .await?,
            );
            *probe.seqs.lock().unwrap() = seqs;
            // Stay until the hub stops or cancels the session.
            while ctx.control.changed().await.is_ok() {
                if matches!(*ctx.control.borrow(), Control::Stop | Control::Cancel) {
                    break;
                }
            }
            Ok(DriverExit::Stopped)
        })
    }
}

/// A hub in `dir/home` with the built-in drivers plus `driver` as `name`, and the
/// session workdir `dir/work`; the ring holds 4,096 records, so a test can follow a
/// whole run on the raw ring.
fn test_hub(
    dir: &std::path::Path,
    name: &str,
    driver: Arc<dyn DriverFactory>,
) -> (Arc<Hub>, String) {
    let home = crate::paths::Home::at(dir.join("home")).unwrap();
    home.ensure().unwrap();
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut drivers = crate::driver::builtin_factories();
    drivers.insert(name.to_owned(), driver);
    let hub = Hub::open(HubConfig {
        home,
        drivers,
        writer: WriterOptions {
            broadcast_capacity: 4096,
            ..WriterOptions::default()
        },
        single_session: false,
        instance_id: "test".to_owned(),
    })
    .unwrap();
    (hub, work.to_string_lossy().into_owned())
}

/// Starts a session on `driver` in `workdir`; its id.
async fn start_on(hub: &Arc<Hub>, workdir: &str, driver: &str) -> String {
    let started = hub
        .start(StartParams {
            workdir: workdir.to_owned(),
            driver: Some(driver.to_owned()),
            ..StartParams::default()
        })
        .await
        .unwrap();
    started["session_id"].as_str().unwrap().to_owned()
}

async fn probe_hub(dir: &std::path::Path, probe: &Arc<Probe>) -> (Arc<Hub>, String) {
    let (hub, work) = test_hub(dir, "probe", Arc::new(ProbeFactory(Arc::clone(probe))));
    let id = start_on(&hub, &work, "probe").await;
    (hub, id)
}

/// Every record a driver emitted, output and lane records mixed, is in the journal
/// under the seq `emit` returned, in emit order with no gap; live subscribers get
/// exactly those records once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_records_land_in_emit_order_under_their_seqs() {
    let t = tempfile::tempdir().unwrap();
    let probe = Arc::new(Probe::default());
    let (hub, id) = probe_hub(t.path(), &probe).await;
    let session = hub.get(&id).unwrap();
    let journal = Arc::clone(session.journal().unwrap());
    let (current, mut live) = journal.subscribe();
    let sent = hub.send(&id, "go".to_owned()).await.unwrap();
    let input_seq = sent["seq"].as_u64().unwrap();
    let last = input_seq + 1003;
    let mut live_seqs = Vec::new();
    while live_seqs.last() != Some(&last) {
        let rec = tokio::time::timeout(Duration::from_secs(10), live.recv())
            .await
            .expect("records keep coming")
            .expect("the ring holds a whole run");
        live_seqs.push(rec.seq);
    }
    assert_eq!(live_seqs, (current + 1..=last).collect::<Vec<u64>>());
    // The driver stores its seqs once its last `emit` has returned, which is just
    // after subscribers got that record.
    let emitted = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let seqs = probe.seqs.lock().unwrap().clone();
            if !seqs.is_empty() {
                break seqs;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the driver finishes its run");
    assert_eq!(emitted, (input_seq + 1..=last).collect::<Vec<u64>>());
    let mut reader = Reader::open(session.journal_path()).unwrap();
    let mut kinds = Vec::new();
    while let Some(rec) = reader.next_record().unwrap() {
        assert_eq!(rec.seq, kinds.len() as u64 + 1, "contiguous");
        kinds.push(rec.kind().unwrap());
    }
    let tail: Vec<&str> = kinds[input_seq as usize..]
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(tail.len(), 1003);
    assert_eq!(
        &tail[499..503],
        ["probe.tick", "tool.start", "session.delta", "probe.tick"]
    );
    assert_eq!(tail.last(), Some(&"tool.end"));
    assert!(session.inner().open_lanes.is_empty(), "the lane closed");
    hub.shutdown(Duration::from_secs(5)).await;
}

/// A driver emitting in a loop lets other tasks on its worker run (here a
/// single-threaded runtime): otherwise subscribers' pumps would wait for the whole
/// loop, fall behind the live ring and re-read every record from disk.
#[tokio::test(flavor = "current_thread")]
async fn a_driver_emitting_in_a_loop_lets_other_tasks_run() {
    let t = tempfile::tempdir().unwrap();
    let probe = Arc::new(Probe::default());
    let (hub, id) = probe_hub(t.path(), &probe).await;
    let sent = hub.send(&id, "go".to_owned()).await.unwrap();
    let last = sent["seq"].as_u64().unwrap() + 1003;
    let session = hub.get(&id).unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while session.last_seq() < last {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("every record written");
    let ran_at = probe.other_task_ran_at.load(Ordering::SeqCst);
    assert!(
        (1..=200).contains(&ran_at),
        "the spawned task ran before tick {ran_at} (0: not during the loop)"
    );
    hub.shutdown(Duration::from_secs(5)).await;
}

/// Closes the lane of each input it takes and finishes after its second input.
struct QuitterFactory;

impl DriverFactory for QuitterFactory {
    fn create(&self, _spec: &DriverSpec) -> Result<Box<dyn SessionDriver>> {
        Ok(Box::new(Quitter))
    }
}

struct Quitter;

impl SessionDriver for Quitter {
    fn run(self: Box<Self>, mut ctx: DriverContext) -> BoxFuture<'static, Result<DriverExit>> {
        Box::pin(async move {
            for _ in 0..2 {
                let Some(input) = ctx.inbox.recv().await else {
                    break;
                };
                ctx.emitter
                    .emit(
                        "tool.end",
                        json!({"lane_id": input.seq, "ok": true, "exit_code": 0, "duration_ms": 0}),
                    )
                    .await?;
            }
            Ok(DriverExit::Finished {
                ok: true,
                exit_code: Some(0),
                message: None,
            })
        })
    }
}

/// Inputs sent while the driver exits: every `user.input` that was journaled gets a
/// `tool.end` (from the driver, or from the hub as interrupted), and every send
/// either succeeds or is refused — never an input left without its lane's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_racing_a_driver_exit_all_get_their_tool_end() {
    let t = tempfile::tempdir().unwrap();
    let (hub, work) = test_hub(t.path(), "quitter", Arc::new(QuitterFactory));
    // The window is a few microseconds wide: enough rounds that the unfixed hub
    // failed this in most runs.
    for _ in 0..100 {
        let id = start_on(&hub, &work, "quitter").await;
        let senders: Vec<_> = (0..6)
            .map(|n| {
                let hub = Arc::clone(&hub);
                let id = id.clone();
                tokio::spawn(async move { hub.send(&id, format!("input {n}")).await })
            })
            .collect();
        for s in senders {
            if let Err(e) = s.await.unwrap() {
                assert_eq!(e.kind(), crate::ErrorKind::InvalidState, "{e}");
            }
        }
        let session = hub.get(&id).unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while session.state() != SessionState::Ended {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("the session ends");
        let mut reader = Reader::open(session.journal_path()).unwrap();
        let mut open = std::collections::BTreeSet::new();
        while let Some(rec) = reader.next_record().unwrap() {
            match rec.kind().as_deref() {
                Some("user.input") => {
                    open.insert(rec.seq);
                }
                Some("tool.end") => {
                    let data = rec.to_record().unwrap().data;
                    open.remove(&data["lane_id"].as_u64().unwrap());
                }
                _ => {}
            }
        }
        assert!(open.is_empty(), "{id}: inputs without tool.end: {open:?}");
    }
    hub.shutdown(Duration::from_secs(5)).await;
}

/// What [`BatchDriver`] got back from its two batches.
#[derive(Default)]
struct BatchOutcome {
    /// The batch holding a lifecycle kind: its error.
    refused: std::sync::Mutex<Option<Error>>,
    /// The good batch: its seqs.
    seqs: std::sync::Mutex<Vec<u64>>,
}

struct BatchFactory(Arc<BatchOutcome>);

impl DriverFactory for BatchFactory {
    fn create(&self, _spec: &DriverSpec) -> Result<Box<dyn SessionDriver>> {
        Ok(Box::new(BatchDriver(Arc::clone(&self.0))))
    }
}

/// For its input, first emits a batch with a lifecycle kind hidden in the middle,
/// then a lane's worth of records as one batch.
struct BatchDriver(Arc<BatchOutcome>);

impl SessionDriver for BatchDriver {
    fn run(self: Box<Self>, mut ctx: DriverContext) -> BoxFuture<'static, Result<DriverExit>> {
        let outcome = self.0;
        Box::pin(async move {
            let Some(input) = ctx.inbox.recv().await else {
                return Ok(DriverExit::Stopped);
            };
            let lane = input.seq;
            let refused = ctx
                .emitter
                .emit_batch(vec![
                    ("batch.tick".to_owned(), json!({"i": 0})),
                    ("session.ended".to_owned(), json!({})),
                ])
                .await;
            *outcome.refused.lock().unwrap() = refused.err();
            let mut records = vec![(
                "tool.start".to_owned(),
                json!({"tool": "batch", "lane_id": lane}),
            )];
            records.extend((1..=3).map(|i| ("batch.tick".to_owned(), json!({"i": i}))));
            records.push((
                "tool.end".to_owned(),
                json!({"lane_id": lane, "ok": true, "exit_code": 0, "duration_ms": 0}),
            ));
            *outcome.seqs.lock().unwrap() = ctx.emitter.emit_batch(records).await?;
            while ctx.control.changed().await.is_ok() {
                if matches!(*ctx.control.borrow(), Control::Stop | Control::Cancel) {
                    break;
                }
            }
            Ok(DriverExit::Stopped)
        })
    }
}

/// A batch lands whole, in order, under consecutive seqs, closes the lane its
/// `tool.end` names and reaches live subscribers; a batch holding a kind drivers may
/// not write is refused whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_batch_lands_whole_or_not_at_all() {
    let t = tempfile::tempdir().unwrap();
    let outcome = Arc::new(BatchOutcome::default());
    let (hub, work) = test_hub(
        t.path(),
        "batch",
        Arc::new(BatchFactory(Arc::clone(&outcome))),
    );
    let id = start_on(&hub, &work, "batch").await;
    let session = hub.get(&id).unwrap();
    let (_, mut live) = Arc::clone(session.journal().unwrap()).subscribe();
    let sent = hub.send(&id, "go".to_owned()).await.unwrap();
    let input_seq = sent["seq"].as_u64().unwrap();
    let want: Vec<u64> = (input_seq + 1..=input_seq + 5).collect();
    let mut live_kinds = Vec::new();
    while live_kinds.len() < 6 {
        let rec = tokio::time::timeout(Duration::from_secs(10), live.recv())
            .await
            .expect("records keep coming")
            .unwrap();
        live_kinds.push((rec.seq, rec.to_record().unwrap().kind));
    }
    assert_eq!(live_kinds[0], (input_seq, "user.input".to_owned()));
    let kinds: Vec<&str> = live_kinds[1..].iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "tool.start",
            "batch.tick",
            "batch.tick",
            "batch.tick",
            "tool.end"
        ]
    );
    let seqs: Vec<u64> = live_kinds[1..].iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, want);
    tokio::time::timeout(Duration::from_secs(10), async {
        while outcome.seqs.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the driver got its seqs");
    assert_eq!(*outcome.seqs.lock().unwrap(), want);
    let refused = outcome.refused.lock().unwrap().take().expect("refused");
    assert_eq!(refused.kind(), ErrorKind::InvalidParams, "{refused}");
    assert!(refused.to_string().contains("session.ended"), "{refused}");
    assert!(session.inner().open_lanes.is_empty(), "the lane closed");
    // Nothing of the refused batch is in the journal: `batch.tick` 0 never landed.
    let mut reader = Reader::open(session.journal_path()).unwrap();
    let mut ticks = Vec::new();
    while let Some(rec) = reader.next_record().unwrap() {
        if rec.kind().unwrap() == "batch.tick" {
            ticks.push(rec.to_record().unwrap().data["i"].as_u64().unwrap());
        }
    }
    assert_eq!(ticks, [1, 2, 3]);
    hub.shutdown(Duration::from_secs(5)).await;
}
