use super::*;
use crate::journal::reader::Reader;
use crate::journal::record::encode_line;
use serde_json::json;
use std::time::Duration;

fn opts() -> WriterOptions {
    WriterOptions::default()
}

fn created(dir: &Path) -> (PathBuf, Arc<Journal>) {
    let path = dir.join("journal.ndjson");
    let j = Journal::create(
        &path,
        "ep1",
        "session.created",
        &json!({"session_id": "s1"}),
        opts(),
    )
    .unwrap();
    (path, j)
}

#[test]
fn encode_into_matches_encode_line() {
    let cases = [
        json!(null),
        json!({"text": "héllo \"quoted\" \n tab\t \u{1F600} \u{0007}"}),
        json!({"n": u64::MAX, "f": 1.5, "neg": -3, "arr": [1, {"a": null}], "e": {}}),
        json!("just a string"),
    ];
    let mut buf = Vec::new();
    for (i, data) in cases.iter().enumerate() {
        for seq in [1u64, 9, 10, 12345, u64::MAX] {
            let kind = format!("k\"ind.{i}");
            for at in ["2026-05-02T18:30:00.123Z", "we\"ird\\ \u{1}"] {
                let body = encode_into(&mut buf, seq, at, &kind, data).unwrap();
                let want = encode_line(seq, at, &kind, data).unwrap();
                assert_eq!(std::str::from_utf8(&buf).unwrap(), want);
                assert!(buf[body..].starts_with(b"\"at\":"));
                // Readable back, escapes included.
                let raw = crate::journal::record::parse_line(&buf[..buf.len() - 1]).unwrap();
                assert_eq!(raw.kind().as_deref(), Some(kind.as_str()));
                assert_eq!(
                    raw.body(),
                    std::str::from_utf8(&buf[body..buf.len() - 1]).unwrap()
                );
            }
        }
    }
}

#[test]
fn at_clock_matches_time_fmt() {
    use time::format_description::well_known::Rfc3339;
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    for secs in [
        0u64,
        1,
        59,
        86_399,
        951_782_400,
        1_777_746_600,
        4_102_444_799,
    ] {
        let t = time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap();
        let want = t.format(&fmt).unwrap();
        assert_eq!(format!("{}000Z", format_seconds_prefix(secs)), want);
        assert!(time::OffsetDateTime::parse(&want, &Rfc3339).is_ok());
    }
    let mut c = AtClock::default();
    for _ in 0..3 {
        let before = crate::time_fmt::now_millis();
        let got = c.now().to_owned();
        let after = crate::time_fmt::now_millis();
        assert_eq!(got.len(), 24);
        assert!(before <= got && got <= after, "{before} {got} {after}");
        std::thread::sleep(Duration::from_millis(3));
    }
}

#[test]
fn create_writes_epoch_and_reopen_continues() {
    let t = tempfile::tempdir().unwrap();
    let (path, j) = created(t.path());
    assert_eq!(j.last_seq(), 1);
    assert_eq!(j.epoch(), "ep1");
    assert_eq!(j.synced_seq(), 1, "create fsyncs its first record");
    let r = j
        .append("session.delta", &json!({"stream": "stdout", "text": "hi"}))
        .unwrap();
    assert_eq!(r.seq, 2);
    assert_eq!(r.kind().as_deref(), Some("session.delta"));
    let size = j.size();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    drop(j);

    // No clean marker: the tail check reopens it and finds the epoch in data.epoch.
    let out = Journal::open(&path, opts()).unwrap();
    assert!(!out.report.clean);
    assert_eq!(out.report.last_seq, 2);
    assert_eq!(out.report.epoch, "ep1");
    assert_eq!(out.report.repaired, None);
    assert_eq!(out.report.damage, None);
    let j = out.journal.unwrap();
    assert_eq!(
        j.append("user.input", &json!({"text": "x"})).unwrap().seq,
        3
    );

    let mut rd = Reader::open(&path).unwrap();
    let first = rd.next_record().unwrap().unwrap();
    assert_eq!(first.to_value().unwrap()["data"]["epoch"], "ep1");
    assert_eq!(first.to_value().unwrap()["data"]["session_id"], "s1");
}

#[test]
fn create_refuses_existing_and_mismatched_epoch() {
    let t = tempfile::tempdir().unwrap();
    let (path, _j) = created(t.path());
    let e = Journal::create(&path, "ep1", "session.created", &json!({}), opts()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);

    let p2 = t.path().join("other.ndjson");
    let e =
        Journal::create(&p2, "a", "session.created", &json!({"epoch": "b"}), opts()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidParams);
    assert!(!p2.exists(), "nothing left behind");
    let e = Journal::create(&p2, "a", "session.created", &json!([1]), opts()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidParams);

    // The bus log: no epoch anywhere.
    let bus = Journal::create(&p2, "", "daemon.started", &json!({"pid": 1}), opts()).unwrap();
    assert_eq!(bus.epoch(), "");
    drop(bus);
    let out = Journal::open(&p2, opts()).unwrap();
    assert_eq!(out.report.epoch, "");
    assert_eq!(out.report.last_seq, 1);
}

#[test]
fn close_writes_marker_and_refuses_appends() {
    let t = tempfile::tempdir().unwrap();
    let (path, j) = created(t.path());
    j.append("session.delta", &json!({"text": "a"})).unwrap();
    let (_, mut rx) = j.subscribe();
    j.close().unwrap();
    j.close().unwrap();
    assert!(j.is_closed());
    let e = j.append("session.delta", &json!({})).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed);
    assert!(matches!(
        rx.try_recv(),
        Err(broadcast::error::TryRecvError::Closed)
    ));
    assert_eq!(j.synced_seq(), 2);

    let marker_path = t.path().join("clean");
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&marker_path).unwrap()).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    assert_eq!(marker, json!({"size": size, "last_seq": 2, "epoch": "ep1"}));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&marker_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    drop(j);

    let out = Journal::open(&path, opts()).unwrap();
    assert!(out.report.clean);
    assert_eq!(out.report.last_seq, 2);
    assert_eq!(out.report.record_count, 2);
    assert_eq!(out.report.epoch, "ep1");
    assert!(!marker_path.exists(), "open removes the marker");
    let j = out.journal.unwrap();
    assert_eq!(j.append("user.input", &json!({})).unwrap().seq, 3);
}

#[test]
fn trusted_marker_epoch_is_used_without_scanning() {
    // A matching marker is trusted as is: its epoch wins over the file's.
    let t = tempfile::tempdir().unwrap();
    let (path, j) = created(t.path());
    j.close().unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    std::fs::write(
        t.path().join("clean"),
        json!({"size": size, "last_seq": 1, "epoch": "from-marker"}).to_string(),
    )
    .unwrap();
    let out = Journal::open(&path, opts()).unwrap();
    assert!(out.report.clean);
    assert_eq!(out.report.epoch, "from-marker");
}

#[test]
fn subscribers_see_every_record_in_order() {
    let t = tempfile::tempdir().unwrap();
    let (_path, j) = created(t.path());
    let threads = 4;
    let per = 200;
    std::thread::scope(|s| {
        for w in 0..threads {
            let j = &j;
            s.spawn(move || {
                for i in 0..per {
                    j.append("session.delta", &json!({"w": w, "i": i})).unwrap();
                }
            });
        }
        // Subscribe while the writers run: the receiver starts right after `last`.
        for _ in 0..3 {
            let (last, mut rx) = j.subscribe();
            s.spawn(move || {
                let mut want = last + 1;
                while want <= 1 + threads * per {
                    match rx.blocking_recv() {
                        Ok(rec) => {
                            assert_eq!(rec.seq, want);
                            want += 1;
                        }
                        // The ring (256 records) may overrun a subscriber on a loaded
                        // machine: tokio says how many, and the next is exactly after.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => want += n,
                        Err(e) => panic!("{e:?} at {want}"),
                    }
                }
            });
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    assert_eq!(j.last_seq(), 1 + threads * per);
}

#[test]
fn concurrent_durable_appends_share_fsyncs() {
    let t = tempfile::tempdir().unwrap();
    let (path, j) = created(t.path());
    let before = j.fsync_count();
    let threads = 64;
    let per = 10;
    std::thread::scope(|s| {
        for _ in 0..threads {
            let j = &j;
            s.spawn(move || {
                for _ in 0..per {
                    let r = j.append("user.input", &json!({"text": "hi"})).unwrap();
                    // Durable: acknowledged only once an fsync covers it.
                    assert!(j.synced_seq() >= r.seq);
                }
            });
        }
    });
    let appends = (threads * per) as u64;
    let fsyncs = j.fsync_count() - before;
    assert!(
        fsyncs < appends,
        "group commit: {fsyncs} fsyncs for {appends} durable appends"
    );
    assert!(fsyncs >= 1);
    assert_eq!(j.synced_seq(), 1 + appends);
    drop(j);
    let v = Reader::open(&path).unwrap().verify().unwrap();
    assert_eq!(v.records, 1 + appends);
    assert_eq!(v.damage, None);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn concurrent_async_durable_appends_share_fsyncs() {
    let t = tempfile::tempdir().unwrap();
    let (path, j) = created(t.path());
    let before = j.fsync_count();
    let (tasks, per) = (64u64, 10u64);
    let j2 = Arc::clone(&j);
    runtime().block_on(async move {
        let mut all = Vec::new();
        for _ in 0..tasks {
            let j = Arc::clone(&j2);
            all.push(tokio::spawn(async move {
                for _ in 0..per {
                    let r = j
                        .append_async("user.input", &json!({"text": "hi"}))
                        .await
                        .unwrap();
                    // Durable: acknowledged only once an fsync covers it.
                    assert!(j.synced_seq() >= r.seq);
                }
            }));
        }
        for t in all {
            t.await.unwrap();
        }
    });
    let appends = tasks * per;
    let fsyncs = j.fsync_count() - before;
    assert!(
        (1..appends).contains(&fsyncs),
        "group commit: {fsyncs} fsyncs for {appends} durable appends"
    );
    assert_eq!(j.synced_seq(), 1 + appends);
    drop(j);
    let v = Reader::open(&path).unwrap().verify().unwrap();
    assert_eq!((v.records, v.damage), (1 + appends, None));
}

#[test]
fn async_non_durable_append_does_not_wait_for_an_fsync() {
    let t = tempfile::tempdir().unwrap();
    let (_path, j) = created(t.path());
    let before = j.fsync_count();
    let j2 = Arc::clone(&j);
    let seq = runtime().block_on(async move {
        j2.append_async("session.delta", &json!({"text": "x"}))
            .await
            .unwrap()
            .seq
    });
    assert_eq!(j.fsync_count(), before, "left to the flusher");
    assert!(j.synced_seq() < seq);
}

/// Claims the next fsync as a leader would, so a test decides how it ends.
fn claim_fsync(j: &Journal) -> u64 {
    match j.next_turn(&mut j.lock_sync(), j.last_seq()) {
        SyncTurn::Lead { generation } => generation,
        _ => panic!("expected to lead an fsync"),
    }
}

/// A journal with one durable record not yet synced and the fsync that would cover
/// it claimed: (dir, journal, the record's seq, the claimed fsync's number).
fn with_claimed_fsync() -> (tempfile::TempDir, Arc<Journal>, u64, u64) {
    let t = tempfile::tempdir().unwrap();
    let (_path, j) = created(t.path());
    let seq = j
        .append_deferred("user.input", &json!({"text": "a"}))
        .unwrap()
        .seq;
    let generation = claim_fsync(&j);
    (t, j, seq, generation)
}

#[test]
fn a_failed_shared_fsync_fails_every_waiter_it_covered() {
    let (_dir, j, seq, generation) = with_claimed_fsync();
    let rt = runtime();
    let waiters: Vec<_> = (0..8)
        .map(|_| {
            let j = Arc::clone(&j);
            rt.spawn(async move { j.sync_through_async(seq).await })
        })
        .collect();
    // Every waiter has joined the claimed fsync before it ends.
    while j.fsync_finished.receiver_count() < 8 {
        std::thread::yield_now();
    }
    let e = j
        .finish_fsync(generation, seq, Err(std::io::Error::other("injected")))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(e.to_string().contains("injected"), "{e}");
    for w in waiters {
        let e = rt.block_on(w).unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io);
        assert!(e.to_string().contains("a shared fsync failed"), "{e}");
    }
    assert!(j.synced_seq() < seq, "a failed fsync makes nothing durable");
    // The next caller starts a fresh fsync, which succeeds.
    let j2 = Arc::clone(&j);
    rt.block_on(async move { j2.sync_through_async(seq).await })
        .unwrap();
    assert_eq!(j.synced_seq(), seq);
}

#[test]
fn a_claimed_fsync_dropped_unrun_still_runs_and_wakes_its_waiters() {
    let (_dir, j, seq, generation) = with_claimed_fsync();
    let rt = runtime();
    let waiter = {
        let j = Arc::clone(&j);
        rt.spawn(async move { j.sync_through_async(seq).await })
    };
    let before = j.fsync_count();
    // What a runtime shutting down does to a blocking task it never started.
    drop(ClaimedFsync {
        journal: Some(Arc::clone(&j)),
        generation,
    });
    assert_eq!(j.fsync_count(), before + 1);
    rt.block_on(waiter).unwrap().unwrap();
    assert_eq!(j.synced_seq(), seq);
}

#[test]
fn non_durable_append_is_synced_by_the_flusher() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("j.ndjson");
    let o = WriterOptions {
        fsync_interval: Duration::from_millis(20),
        ..WriterOptions::default()
    };
    let j = Journal::create(&path, "e", "session.created", &json!({}), o).unwrap();
    let before = j.fsync_count();
    let r = j.append("session.delta", &json!({"text": "x"})).unwrap();
    assert_eq!(j.fsync_count(), before, "not synced inline");
    let start = std::time::Instant::now();
    while j.synced_seq() < r.seq {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "flusher never synced"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(j.fsync_count(), before + 1);
    // A burst of non-durable appends within one interval shares one fsync.
    let before = j.fsync_count();
    for i in 0..50 {
        j.append("session.delta", &json!({"i": i})).unwrap();
    }
    let last = j.last_seq();
    while j.synced_seq() < last {
        assert!(start.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        j.fsync_count() - before <= 2,
        "{}",
        j.fsync_count() - before
    );
}

#[cfg(target_os = "linux")]
#[test]
fn one_flusher_thread_serves_many_journals() {
    let t = tempfile::tempdir().unwrap();
    let o = WriterOptions {
        fsync_interval: Duration::from_millis(5),
        ..WriterOptions::default()
    };
    let journals: Vec<_> = (0..40)
        .map(|i| {
            Journal::create(
                &t.path().join(format!("{i}.ndjson")),
                "e",
                "session.created",
                &json!({}),
                o.clone(),
            )
            .unwrap()
        })
        .collect();
    for j in &journals {
        j.append("session.delta", &json!({})).unwrap();
    }
    let start = std::time::Instant::now();
    for j in &journals {
        while j.synced_seq() < 2 {
            assert!(start.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let flushers = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .filter(|c| c.trim() == "r1-jrnl-flush")
        .count();
    assert_eq!(flushers, 1);
}

#[test]
fn oversized_record_is_refused_and_nothing_written() {
    let t = tempfile::tempdir().unwrap();
    let (path, j) = created(t.path());
    assert_eq!(j.lock_state().max_line, MAX_LINE_BYTES);
    // The real limit is 32 MiB; a small one keeps the test fast in debug builds.
    let limit = 1000;
    j.lock_state().max_line = limit;
    let probe = j.append("session.delta", &json!({"text": ""})).unwrap();
    let fixed = probe.line().len();
    // Exactly at the limit: accepted. More: refused, nothing written.
    let at_limit = j
        .append("session.delta", &json!({"text": "x".repeat(limit - fixed)}))
        .unwrap();
    assert_eq!(at_limit.line().len(), limit);
    let size = j.size();
    for over in [limit - fixed + 1, 10 * limit] {
        let e = j
            .append("session.delta", &json!({"text": "x".repeat(over)}))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    }
    assert_eq!(j.append("session.delta", &json!({})).unwrap().seq, 4);
}

#[test]
fn a_batch_takes_consecutive_seqs_and_reaches_subscribers_in_order() {
    let t = tempfile::tempdir().unwrap();
    let (path, j) = created(t.path());
    let (_, mut live) = j.subscribe();
    let datas: Vec<serde_json::Value> = (0..5).map(|i| json!({"i": i})).collect();
    let batch: Vec<(&str, &serde_json::Value)> =
        datas.iter().map(|d| ("session.delta", d)).collect();
    let recs = j.append_batch(&batch).unwrap();
    assert_eq!(
        recs.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [2, 3, 4, 5, 6]
    );
    assert_eq!(
        (j.last_seq(), j.size()),
        (6, std::fs::metadata(&path).unwrap().len())
    );
    for (i, rec) in recs.iter().enumerate() {
        let got = live.try_recv().unwrap();
        assert_eq!((got.seq, got.line()), (rec.seq, rec.line()));
        assert_eq!(got.to_record().unwrap().data, json!({"i": i}));
    }
    assert!(live.try_recv().is_err(), "nothing more");
    // Not durable kinds: left to the flusher. An empty batch is nothing at all.
    assert!(j.synced_seq() < 6);
    assert!(j.append_batch(&[]).unwrap().is_empty());
    assert_eq!(j.append("session.delta", &json!({})).unwrap().seq, 7);
    drop(j);
    let v = Reader::open(&path).unwrap().verify().unwrap();
    assert_eq!((v.records, v.last_seq, v.damage), (7, 7, None));
}

#[test]
fn a_batch_with_a_durable_kind_is_synced_before_it_returns() {
    let t = tempfile::tempdir().unwrap();
    let (_path, j) = created(t.path());
    let (delta, input) = (json!({"text": "a"}), json!({"text": "b"}));
    let recs = j
        .append_batch(&[("session.delta", &delta), ("user.input", &input)])
        .unwrap();
    assert_eq!(j.synced_seq(), recs[1].seq);
    let j2 = Arc::clone(&j);
    let last = runtime().block_on(async move {
        let (a, b) = (json!({"text": "c"}), json!({"text": "d"}));
        let recs = j2
            .append_batch_async(&[("user.input", &a), ("session.delta", &b)])
            .await
            .unwrap();
        recs[1].seq
    });
    assert_eq!(j.synced_seq(), last);
}

#[test]
fn a_batch_with_a_record_over_the_limit_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (path, j) = created(t.path());
    j.lock_state().max_line = 1000;
    let (small, big) = (json!({"text": "ok"}), json!({"text": "x".repeat(2000)}));
    let size = j.size();
    let e = j
        .append_batch(&[("session.delta", &small), ("session.delta", &big)])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
    assert_eq!((j.size(), j.last_seq()), (size, 1));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    assert_eq!(
        j.append_batch(&[("session.delta", &small)]).unwrap()[0].seq,
        2
    );
}

/// Set in the child process of [`failed_write_truncates_back`].
const EFBIG_CHILD: &str = "R1_JOURNAL_TEST_EFBIG_DIR";

/// A write that fails part-way (here EFBIG from `RLIMIT_FSIZE`, as ENOSPC would) is
/// cut back to the last good offset, reported as `Io`, and the next append works.
/// The limit is process-wide, so the scenario runs in a child test process.
#[test]
fn failed_write_truncates_back() {
    if let Some(dir) = std::env::var_os(EFBIG_CHILD) {
        efbig_child(Path::new(&dir));
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "journal::writer::tests::failed_write_truncates_back",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(EFBIG_CHILD, t.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("efbig child ok"),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And the file the child left behind is a clean journal.
    let v = Reader::open(&t.path().join("journal.ndjson"))
        .unwrap()
        .verify()
        .unwrap();
    assert_eq!((v.records, v.last_seq, v.damage), (4, 4, None));
}

fn efbig_child(dir: &Path) {
    // SAFETY: test-only process setup: ignore SIGXFSZ so an over-limit write fails
    // with EFBIG instead of killing the process, then cap the file size.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let set_limit = |soft: libc::rlim_t| {
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain syscalls on a valid struct.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut cur), 0);
            cur.rlim_cur = soft;
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &cur), 0);
        }
    };
    let (path, j) = created(dir);
    j.append("session.delta", &json!({"text": "before"}))
        .unwrap();
    let good = j.size();
    set_limit(good + 40);
    let e = j
        .append("session.delta", &json!({"text": "y".repeat(200)}))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good, "cut back");
    assert_eq!(j.size(), good);
    assert_eq!(j.last_seq(), 2);
    // Still failing while the limit holds, and still cut back.
    let e = j
        .append("user.input", &json!({"text": "z".repeat(100)}))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
    // A batch whose write fails is cut back whole.
    let (a, b) = (
        json!({"text": "y".repeat(30)}),
        json!({"text": "z".repeat(30)}),
    );
    let e = j
        .append_batch(&[("session.delta", &a), ("session.delta", &b)])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
    assert_eq!(j.last_seq(), 2);
    set_limit(libc::RLIM_INFINITY);
    assert_eq!(
        j.append("user.input", &json!({"text": "ok"})).unwrap().seq,
        3
    );
    assert_eq!(j.append("session.delta", &json!({})).unwrap().seq, 4);
    j.close().unwrap();
    println!("efbig child ok");
}

#[test]
fn a_claimed_fsync_covers_what_was_written_before_it_started() {
    let t = tempfile::tempdir().unwrap();
    let (_path, j) = created(t.path());
    j.append_deferred("user.input", &json!({"text": "a"}))
        .unwrap();
    let generation = claim_fsync(&j);
    // Written after the claim, while its fsync waits for a thread.
    let later = j
        .append_deferred("user.input", &json!({"text": "b"}))
        .unwrap()
        .seq;
    j.run_fsync(generation).unwrap();
    assert_eq!(j.synced_seq(), later);
}
