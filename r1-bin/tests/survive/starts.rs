//! Concurrent `session.start` and a crash: the index is written by group commit (one
//! rewrite covers every start waiting on it), so a start must still be on disk when
//! its answer arrives. Clients start sessions as fast as the daemon answers, the
//! daemon is SIGKILLed while starts are in flight, and after a restart every
//! acknowledged session is listed, `paused-reattachable`, with a sound journal.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{DaemonProc, Rpc, ServeOpts, assert_journal_sound};

/// Concurrent clients.
const CLIENTS: usize = 8;
/// Acknowledged starts to wait for before the kill (a few rounds of group commits).
const ACKED_BEFORE_KILL: usize = 48;

fn start_daemon(dir: &Path, n: usize) -> DaemonProc {
    let mut opts = ServeOpts::in_dir(dir);
    opts.stderr_path = dir.join(format!("serve-{n}.stderr"));
    DaemonProc::start(&opts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrently_started_sessions_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("workdir");
    let mut daemon = start_daemon(dir.path(), 0);
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (sock, acked, work) = (daemon.sock.clone(), Arc::clone(&acked), work.clone());
        clients.push(tokio::spawn(async move {
            let Ok(mut c) = Rpc::try_connect(&sock).await else {
                return;
            };
            // Until the daemon dies under us.
            while let Ok(r) = c.try_call("session.start", json!({"workdir": work})).await {
                let id = r["session_id"].as_str().expect("session_id").to_owned();
                acked.lock().expect("acked").push(id);
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.lock().expect("acked").len() < ACKED_BEFORE_KILL {
        assert!(
            Instant::now() < deadline,
            "too few starts acknowledged\n{}",
            daemon.stderr()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    daemon.kill9();
    for c in clients {
        c.await.expect("client task");
    }
    let acked = acked.lock().expect("acked").clone();

    let daemon = start_daemon(dir.path(), 1);
    let mut c = Rpc::connect(&daemon.sock).await;
    let listed = c.session_states().await;
    for id in &acked {
        assert_eq!(
            listed.get(id).map(String::as_str),
            Some("paused-reattachable"),
            "acknowledged session {id} after SIGKILL and restart ({} acknowledged, {} listed)\n{}",
            acked.len(),
            listed.len(),
            daemon.stderr()
        );
        let journal = daemon.home.join("sessions").join(id).join("journal.ndjson");
        assert_journal_sound(&journal);
    }
}
