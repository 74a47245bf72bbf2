//! The client side against real daemons (DESIGN §3, §4, §7, §8): discovery errors,
//! dial and its stale rules, auto-spawn (single flight, one-line failures, no
//! orphans), every typed helper, JSON-RPC error mapping, subscriptions that resume
//! across a daemon restart, the blocking facade, and the WebSocket hello proof.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use r1_core::client::{DaemonNotice, Event};
use r1_core::discovery::Discovery;
use r1_core::paths::Home;
use r1_core::session::state::SessionState;
use r1_core::token::Token;
use r1_core::{
    BlockingClient, Client, Daemon, DaemonConfig, DaemonHandle, DialOptions, ErrorKind,
    StartOptions, SubEvent, Subscription, WsOptions, dial, dial_ws, discover,
};
use serde_json::json;

/// The spawnable daemon (`serve --detach`); to be replaced by `r1` from r1-bin.
fn daemon_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_r1-test-daemon"))
}

/// A pid no process can have (above any `pid_max`).
const DEAD_PID: u32 = 0x7fff_fff0;

/// A temp dir with a home and a workdir; on drop, stops any daemon spawned there.
struct Env {
    dir: tempfile::TempDir,
    home: PathBuf,
    work: PathBuf,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        Env { dir, home, work }
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("s.sock")
    }

    fn config(&self) -> DaemonConfig {
        DaemonConfig {
            home: Some(self.home.clone()),
            sock_path: Some(self.sock()),
            ..Default::default()
        }
    }

    async fn start(&self) -> DaemonHandle {
        Daemon::start(self.config()).await.expect("daemon starts")
    }

    /// Dial options for this home, no spawning.
    fn opts(&self) -> DialOptions {
        DialOptions::new()
            .home(&self.home)
            .spawn(false)
            .client_name("client-tests")
    }

    /// Dial options that may spawn the test daemon.
    fn spawn_opts(&self) -> DialOptions {
        self.opts()
            .spawn(true)
            .r1_bin(daemon_bin())
            .timeout(Duration::from_secs(10))
    }

    fn home(&self) -> Home {
        Home::at(&self.home).unwrap()
    }

    fn write_discovery(&self, d: &Discovery) {
        let h = self.home();
        h.ensure().unwrap();
        d.write(&h).unwrap();
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Never leave a spawned daemon behind, even when a test fails.
        for pid in procs_with_home(&self.home) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A discovery file naming `pid` and `sock` with a fresh instance id.
fn fake_discovery(pid: u32, sock: &Path) -> Discovery {
    Discovery {
        pid,
        version: r1_core::VERSION.into(),
        protocol_version: 1,
        instance_id: r1_core::token::random_hex(16),
        sock_path: Some(sock.to_path_buf()),
        host: None,
        port: None,
        token: Token::generate().unwrap(),
        cert_fingerprint: None,
        started_at: "2026-01-01T00:00:00Z".into(),
    }
}

/// Processes whose environment says `R1_HOME=<home>`: what auto-spawn started there.
fn procs_with_home(home: &Path) -> Vec<u32> {
    let needle = format!("R1_HOME={}", home.display()).into_bytes();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|kv| kv == needle.as_slice()) && !is_zombie(pid) {
            out.push(pid);
        }
    }
    out
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Waits (up to 5 s) until the processes started with this home are exactly
/// `expected`: a detaching parent or a killed child takes a moment to go.
fn settle_procs(home: &Path, expected: &[u32]) -> Vec<u32> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let now = procs_with_home(home);
        if now == expected || Instant::now() >= until {
            return now;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn alive(pid: u32) -> bool {
    r1_core::discovery::pid_alive(pid) && !is_zombie(pid)
}

async fn wait_gone(pid: u32) {
    let until = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < until, "pid {pid} still running");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts `seqs` is exactly `1..=last`, with a short message when not.
fn assert_contiguous(seqs: &[u64], last: u64) {
    if seqs.iter().copied().eq(1..=last) {
        return;
    }
    let mut missing = Vec::new();
    let mut dups = Vec::new();
    let mut seen = BTreeSet::new();
    for s in seqs {
        if !seen.insert(*s) {
            dups.push(*s);
        }
    }
    for s in 1..=last {
        if !seen.contains(&s) {
            missing.push(s);
        }
    }
    panic!(
        "expected seqs 1..={last} once each: got {} items, first {:?}, last {:?}, missing {missing:?}, duplicated {dups:?}",
        seqs.len(),
        seqs.first(),
        seqs.last()
    );
}

/// Asserts a spawn failure is the one line DESIGN §8 asks for.
fn assert_one_line_spawn_error(msg: &str, home: &Path) {
    assert!(!msg.contains('\n'), "one line: {msg:?}");
    assert!(msg.starts_with("cannot start the r1 daemon: "), "{msg}");
    let log = home.join("log").join("r1.log");
    assert!(
        msg.contains(&log.display().to_string()),
        "names the log: {msg}"
    );
    assert!(
        msg.contains("docs/operator-guide.md"),
        "names the guide: {msg}"
    );
}

/// Next item within 10 s.
async fn next_item(sub: &mut Subscription) -> SubEvent {
    match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
        Ok(Some(Ok(item))) => item,
        Ok(Some(Err(e))) => panic!("subscription failed: {e}"),
        Ok(None) => panic!("subscription ended early"),
        Err(_) => panic!("no subscription item within 10 s"),
    }
}

/// Items until a record matching `stop` (inclusive).
async fn items_until(sub: &mut Subscription, stop: impl Fn(&Event) -> bool) -> Vec<SubEvent> {
    let mut out = Vec::new();
    loop {
        let item = next_item(sub).await;
        let done = matches!(&item, SubEvent::Record(ev) if stop(ev));
        out.push(item);
        if done {
            return out;
        }
    }
}

fn records(items: &[SubEvent]) -> Vec<&Event> {
    items
        .iter()
        .filter_map(|i| match i {
            SubEvent::Record(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn notices(items: &[SubEvent]) -> Vec<&DaemonNotice> {
    items
        .iter()
        .filter_map(|i| match i {
            SubEvent::Daemon(n) => Some(n),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// discover()

#[tokio::test]
async fn discover_reports_missing_unsafe_stale_and_parses_healthy() {
    let env = Env::new();
    let e = discover(Some(&env.home)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DaemonNotFound);
    assert!(e.message().contains("does not exist"), "{e}");

    let d = env.start().await;
    let found = discover(Some(&env.home)).unwrap();
    assert_eq!(found.pid, std::process::id());
    assert_eq!(found.instance_id, d.instance_id());
    assert_eq!(found.sock_path.as_deref(), Some(env.sock().as_path()));
    assert_eq!(found.protocol_version, 1);

    let file = env.home.join("daemon.json");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = discover(Some(&env.home)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsafe);
    assert!(e.message().contains("0644"), "{e}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    d.stop().await.unwrap();
    assert_eq!(
        discover(Some(&env.home)).unwrap_err().kind(),
        ErrorKind::DaemonNotFound,
        "a clean exit removes daemon.json"
    );

    env.write_discovery(&fake_discovery(DEAD_PID, &env.sock()));
    let e = discover(Some(&env.home)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DaemonNotFound);
    assert!(e.message().contains("is stale"), "{e}");
    assert!(
        e.message()
            .contains(&format!("pid {DEAD_PID} is not running")),
        "{e}"
    );
}

// ---------------------------------------------------------------------------
// dial() without spawning

#[tokio::test]
async fn dial_without_spawn_finds_or_refuses() {
    let env = Env::new();
    let e = dial(env.opts()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DaemonNotFound);

    let d = env.start().await;
    let c = dial(env.opts()).await.unwrap();
    assert_eq!(c.handshake().instance_id, d.instance_id());
    assert_eq!(c.handshake().pid, std::process::id());
    assert_eq!(c.discovery().unwrap().instance_id, d.instance_id());

    // By socket path, skipping discovery.
    let by_sock = dial(DialOptions::new().sock_path(env.sock()).spawn(false))
        .await
        .unwrap();
    assert_eq!(by_sock.handshake().instance_id, d.instance_id());
    assert!(by_sock.discovery().is_none());

    // A discovery file whose instance is not the one answering is stale.
    let mut forged = d.discovery().clone();
    forged.instance_id = "f".repeat(32);
    env.write_discovery(&forged);
    let e = dial(env.opts()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DaemonNotFound);
    assert!(
        e.message().contains(&format!(
            "names instance {} but the daemon on {} is instance {}",
            "f".repeat(32),
            env.sock().display(),
            d.instance_id()
        )),
        "{e}"
    );

    // Spawning cannot help: the real daemon holds the lock, so the spawned one
    // reports "already running", and the error names the mismatch too.
    let started = Instant::now();
    let e = dial(env.spawn_opts()).await.unwrap_err();
    let msg = e.message();
    assert_one_line_spawn_error(msg, &env.home);
    assert!(msg.contains("exited with exit status: 1"), "{msg}");
    assert!(
        msg.contains(&format!(
            "daemon already running, pid={}, sock={}",
            std::process::id(),
            env.sock().display()
        )),
        "{msg}"
    );
    assert!(msg.contains("use 'r1 ctl' to talk to it."), "{msg}");
    assert!(msg.contains("names instance"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(settle_procs(&env.home, &[]).is_empty(), "no orphan");
    d.stop().await.unwrap();
}

#[tokio::test]
async fn dial_never_trusts_a_dead_pid_or_a_squatter() {
    let env = Env::new();
    let timeout = Duration::from_secs(1);

    env.write_discovery(&fake_discovery(DEAD_PID, &env.sock()));
    let e = dial(env.opts().timeout(timeout)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DaemonNotFound);
    assert!(e.message().contains("is stale"), "{e}");

    // A live pid (ours) and a socket held by something that never answers.
    let squat = env.dir.path().join("squat.sock");
    let _silent = std::os::unix::net::UnixListener::bind(&squat).unwrap();
    env.write_discovery(&fake_discovery(std::process::id(), &squat));
    let started = Instant::now();
    let e = dial(env.opts().timeout(timeout)).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.kind(), ErrorKind::DaemonNotFound);
    assert!(e.message().contains("is stale"), "{e}");
    assert!(e.message().contains("did not answer daemon.hello"), "{e}");
    assert!(
        took >= timeout && took < timeout + Duration::from_millis(500),
        "{took:?}"
    );

    // One that answers garbage.
    let noisy = env.dir.path().join("noisy.sock");
    let listener = std::os::unix::net::UnixListener::bind(&noisy).unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            // Read the hello, answer garbage, keep the connection open until the
            // client leaves.
            let mut lines =
                std::io::BufRead::lines(std::io::BufReader::new(s.try_clone().unwrap()));
            let _ = lines.next();
            let mut w = s;
            let _ = w.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
            for _ in lines {}
        }
    });
    env.write_discovery(&fake_discovery(std::process::id(), &noisy));
    let e = dial(env.opts().timeout(timeout)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DaemonNotFound);
    assert!(e.message().contains("is not an r1 daemon"), "{e}");
}

#[tokio::test]
async fn dial_spawns_over_a_stale_file() {
    for squatter in [false, true] {
        let env = Env::new();
        let squat = env.dir.path().join("squat.sock");
        let _hold = std::os::unix::net::UnixListener::bind(&squat).unwrap();
        let stale = if squatter {
            fake_discovery(std::process::id(), &squat)
        } else {
            fake_discovery(DEAD_PID, &squat)
        };
        env.write_discovery(&stale);
        let c = dial(env.spawn_opts()).await.unwrap();
        let hello = c.handshake();
        assert_ne!(hello.instance_id, stale.instance_id);
        assert_ne!(hello.pid, std::process::id());
        let now = discover(Some(&env.home)).unwrap();
        assert_eq!(
            now.instance_id, hello.instance_id,
            "the new daemon replaced the file"
        );
        assert_eq!(settle_procs(&env.home, &[hello.pid]), vec![hello.pid]);
        c.shutdown(None).await.unwrap();
        wait_gone(hello.pid).await;
    }
}

// ---------------------------------------------------------------------------
// auto-spawn

#[tokio::test]
async fn auto_spawn_starts_the_daemon() {
    let env = Env::new();
    let started = Instant::now();
    let c = dial(env.spawn_opts().timeout(Duration::from_secs(2)))
        .await
        .unwrap();
    let took = started.elapsed();
    eprintln!(
        "auto-spawn: dial answered in {:.1} ms",
        took.as_secs_f64() * 1e3
    );
    let hello = c.handshake();
    assert_eq!(settle_procs(&env.home, &[hello.pid]), vec![hello.pid]);
    let info = c.info().await.unwrap();
    assert_eq!(info.pid, hello.pid);
    assert_eq!(info.home, env.home);
    // The daemon lives in its own session, away from our terminal.
    let sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(hello.pid as i32))).unwrap();
    assert_eq!(
        sid.as_raw() as u32,
        hello.pid,
        "the daemon leads its own session"
    );
    // A second dial finds it without spawning.
    let again = dial(env.opts()).await.unwrap();
    assert_eq!(again.handshake().instance_id, hello.instance_id);
    c.shutdown(None).await.unwrap();
    wait_gone(hello.pid).await;
}

#[test]
fn twenty_racing_dials_start_exactly_one_daemon() {
    let env = Env::new();
    let opts = env.spawn_opts();
    let gate = Arc::new(std::sync::Barrier::new(20));
    let started = Instant::now();
    let threads: Vec<_> = (0..20)
        .map(|_| {
            let opts = opts.clone();
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || {
                gate.wait();
                let c = BlockingClient::dial(opts).expect("every racer connects");
                let h = c.handshake();
                (h.instance_id, h.pid, c)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    eprintln!(
        "20 racing dials answered in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let instances: BTreeSet<_> = results.iter().map(|r| r.0.clone()).collect();
    let pids: BTreeSet<_> = results.iter().map(|r| r.1).collect();
    assert_eq!(instances.len(), 1, "{instances:?}");
    assert_eq!(pids.len(), 1, "{pids:?}");
    let pid = *pids.iter().next().unwrap();
    assert_eq!(
        settle_procs(&env.home, &[pid]),
        vec![pid],
        "one daemon process"
    );
    assert_eq!(discover(Some(&env.home)).unwrap().pid, pid);
    results[0].2.shutdown(None).unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < until, "daemon did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn broken_r1_bin_fails_in_one_line_without_orphans() {
    let env = Env::new();
    let timeout = Duration::from_secs(2);

    let started = Instant::now();
    let e = dial(env.opts().spawn(true).r1_bin("/bin/false").timeout(timeout))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < timeout,
        "fails fast: {:?}",
        started.elapsed()
    );
    assert_eq!(e.kind(), ErrorKind::DaemonNotFound);
    assert_one_line_spawn_error(e.message(), &env.home);
    assert!(
        e.message()
            .contains("`/bin/false serve --detach` exited with exit status: 1"),
        "{e}"
    );
    assert!(settle_procs(&env.home, &[]).is_empty());

    let missing = env.dir.path().join("no-such-r1");
    let e = dial(env.opts().spawn(true).r1_bin(&missing).timeout(timeout))
        .await
        .unwrap_err();
    assert_one_line_spawn_error(e.message(), &env.home);
    assert!(
        e.message()
            .contains(&format!("cannot run {}", missing.display())),
        "{e}"
    );
    assert!(settle_procs(&env.home, &[]).is_empty());

    // A binary that never detaches (nor answers) is killed at the timeout, with
    // whatever it forked.
    let hang = env.dir.path().join("hang.sh");
    std::fs::write(&hang, "#!/bin/sh\necho starting-up\nsleep 30 &\nsleep 30\n").unwrap();
    std::fs::set_permissions(&hang, std::fs::Permissions::from_mode(0o755)).unwrap();
    let started = Instant::now();
    let e = dial(env.opts().spawn(true).r1_bin(&hang).timeout(timeout))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(1),
        "{took:?}"
    );
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert_one_line_spawn_error(e.message(), &env.home);
    assert!(
        e.message()
            .contains("did not answer within 2.0s and was killed"),
        "{e}"
    );
    assert!(e.message().contains("starting-up"), "quotes the log: {e}");
    assert!(settle_procs(&env.home, &[]).is_empty(), "no orphan");
}

// ---------------------------------------------------------------------------
// Client: every typed helper, error mapping

#[tokio::test]
async fn every_typed_helper_and_rpc_errors() {
    let env = Env::new();
    let d = env.start().await;
    let c = dial(env.opts()).await.unwrap();

    let hello = c.hello().await.unwrap();
    assert_eq!(hello.protocol_version, 1);
    assert_eq!(hello.instance_id, d.instance_id());
    assert_eq!(hello.version, r1_core::VERSION);

    let info = c.info().await.unwrap();
    assert_eq!(info.pid, std::process::id());
    assert_eq!(info.instance_id, d.instance_id());
    assert_eq!(info.sock_path.as_deref(), Some(env.sock().as_path()));
    assert_eq!(info.home, env.home);
    assert_eq!(info.log_path, env.home.join("log").join("r1.log"));
    assert_eq!(info.sessions, 0);

    let doc = c.discover_methods().await.unwrap();
    let names: Vec<&str> = doc["methods"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    let table: Vec<&str> = r1_core::rpc::methods::METHODS
        .iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, table);

    let mut bus_events = c.subscribe_bus(None).await.unwrap();
    let started = c
        .start(
            StartOptions::new(&env.work)
                .name("helpers")
                .env("R1_TEST_VAR", "x"),
        )
        .await
        .unwrap();
    let id = started.session_id.clone();
    assert!(id.starts_with("sess_"), "{id}");
    assert_eq!(started.name.as_deref(), Some("helpers"));
    assert_eq!(started.driver, "shell");
    assert_eq!(started.state, SessionState::Running);
    assert_eq!(started.workdir, std::fs::canonicalize(&env.work).unwrap());
    assert!(!started.epoch.is_empty());
    let bus_items = items_until(&mut bus_events, |e| e.kind == "session.created").await;
    let created = records(&bus_items).pop().unwrap().clone();
    assert_eq!(created.data["session_id"], id.as_str());
    assert!(created.seq > bus_events.reply().current_seq, "live only");
    drop(bus_events);

    let all = c.list(None).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, id);
    assert!(c.list(Some(SessionState::Ended)).await.unwrap().is_empty());
    assert_eq!(c.list(Some(SessionState::Running)).await.unwrap().len(), 1);

    let got = c.get(&id).await.unwrap();
    assert_eq!(got.id, id);
    assert_eq!(got.name.as_deref(), Some("helpers"));
    assert_eq!(got.epoch, started.epoch);
    assert_eq!(got.last_seq, 1);

    let mut follow = c.subscribe(&id, Some(0), None).await.unwrap();
    assert_eq!(
        follow.reply().epoch.as_deref(),
        Some(started.epoch.as_str())
    );
    let seq = c.send(&id, "echo $R1_TEST_VAR-ok").await.unwrap();
    assert_eq!(seq, 2);
    let items = items_until(&mut follow, |e| e.kind == "tool.end").await;
    let recs = records(&items);
    assert_eq!(recs[0].seq, 1);
    assert_eq!(recs[0].kind, "session.created");
    assert_eq!(recs[1].kind, "user.input");
    assert_eq!(recs[1].data["text"], "echo $R1_TEST_VAR-ok");
    let out: String = recs
        .iter()
        .filter(|e| e.kind == "session.delta")
        .filter_map(|e| e.data["text"].as_str())
        .collect();
    assert_eq!(out, "x-ok\n");
    assert_eq!(recs.last().unwrap().data["exit_code"], 0);
    assert!(recs.iter().all(|e| e.epoch == started.epoch));

    let page = c.read(&id, 0, None, Some(2)).await.unwrap();
    assert_eq!(page.records.len(), 2);
    assert_eq!(page.records[0].seq, 1);
    assert_eq!(page.records[1].kind, "user.input");
    assert_eq!(page.records[1].epoch, started.epoch);
    assert_eq!(page.next_seq, 2);
    assert!(page.more);
    assert_eq!(page.epoch, started.epoch);
    let rest = c
        .read(&id, page.next_seq, Some(&page.epoch), None)
        .await
        .unwrap();
    assert_eq!(rest.records[0].seq, 3);
    assert!(!rest.more);

    assert!(!c.pause(&id).await.unwrap().is_empty());
    assert_eq!(c.get(&id).await.unwrap().state, SessionState::Paused);
    assert!(!c.resume(&id).await.unwrap().is_empty());
    assert_eq!(c.get(&id).await.unwrap().state, SessionState::Running);

    // Raw subscription ids: unsubscribe once is fine, twice is not_found.
    let bus = c.subscribe_bus(None).await.unwrap();
    let sub = bus.reply().sub;
    c.unsubscribe(sub).await.unwrap();
    let e = c.unsubscribe(sub).await.unwrap_err();
    assert_eq!(e.rpc().unwrap().code, -32001);
    drop(bus);

    let minted = c.mint_token("read", Duration::from_secs(60)).await.unwrap();
    assert_eq!(minted.token.expose().len(), 64);
    assert!(!minted.expires_at.is_empty());
    assert!(
        !format!("{minted:?}").contains(minted.token.expose()),
        "Debug redacts"
    );
    let before = discover(Some(&env.home)).unwrap().token;
    assert!(!c.rotate_token().await.unwrap().is_empty());
    let after = discover(Some(&env.home)).unwrap().token;
    assert_ne!(before, after);

    assert!(!c.cancel(&id, Some("done")).await.unwrap().is_empty());
    let items = items_until(&mut follow, |e| e.kind == "session.ended").await;
    assert_eq!(records(&items).last().unwrap().data["reason"], "cancelled");
    assert!(
        follow.next().await.is_none(),
        "the stream ends after session.ended"
    );
    assert_eq!(c.get(&id).await.unwrap().state, SessionState::Ended);
    assert!(!c.delete(&id).await.unwrap().is_empty());

    // JSON-RPC errors map to kind Rpc with the object.
    for missing in [id.as_str(), "sess_00000000-0000-4000-8000-000000000000"] {
        let e = c.get(missing).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Rpc);
        let rpc = e.rpc().unwrap();
        assert_eq!(rpc.code, -32001);
        assert_eq!(rpc.data.as_ref().unwrap()["kind"], "not_found");
        assert_eq!(r1_core::rpc::codes::kind_for(rpc.code), ErrorKind::NotFound);
    }
    let e = c.call("no.such_method", json!({})).await.unwrap_err();
    assert_eq!(e.rpc().unwrap().code, -32601);
    let e = c
        .call("session.send", json!({"session_id": 5}))
        .await
        .unwrap_err();
    assert_eq!(e.rpc().unwrap().code, -32602);
    // The connection survives all of that (and the deleted session is gone).
    assert_eq!(c.info().await.unwrap().sessions, 0);

    c.shutdown(Some(Duration::from_secs(1))).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), d.wait())
        .await
        .unwrap()
        .unwrap();
}

/// A fake daemon on a unix socket: answers hello, ignores the next request, and
/// closes the connection when a third arrives.
#[tokio::test]
async fn calls_time_out_and_fail_closed_when_the_connection_drops() {
    let env = Env::new();
    let sock = env.sock();
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        let Ok((s, _)) = listener.accept() else {
            return;
        };
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(s.try_clone().unwrap()));
        let mut w = s;
        let hello: serde_json::Value =
            serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        let answer = json!({"jsonrpc":"2.0","id":hello["id"],"result":{
            "protocol_version":1,"version":"0.1.0","instance_id":"abc","pid":1}});
        writeln!(w, "{answer}").unwrap();
        let _ignored = lines.next();
        let _closes = lines.next();
    });
    let c = dial(DialOptions::new().sock_path(&sock).spawn(false))
        .await
        .unwrap();
    assert_eq!(c.handshake().instance_id, "abc");
    let started = Instant::now();
    let e = c
        .call_with_timeout("daemon.info", json!({}), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(c.is_connected(), "a timeout does not close the connection");
    let e = c.info().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
    assert!(!c.is_connected());
}

/// A fake daemon that answers `daemon.hello` with `answer(id)` on every connection.
fn fake_hello_daemon(sock: &Path, answer: fn(&serde_json::Value) -> serde_json::Value) {
    let listener = std::os::unix::net::UnixListener::bind(sock).unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let mut lines =
                std::io::BufRead::lines(std::io::BufReader::new(s.try_clone().unwrap()));
            let mut w = s;
            if let Some(Ok(line)) = lines.next() {
                let req: serde_json::Value = serde_json::from_str(&line).unwrap();
                let _ = writeln!(w, "{}", answer(&req["id"]));
            }
            for _ in lines {}
        }
    });
}

#[tokio::test]
async fn protocol_version_skew_says_which_versions_and_what_to_do() {
    let env = Env::new();
    // A newer daemon that answers hello with v2.
    let v2 = env.dir.path().join("v2.sock");
    fake_hello_daemon(&v2, |id| {
        json!({"jsonrpc":"2.0","id":id,"result":{
            "protocol_version":2,"version":"9.0.0","instance_id":"abc","pid":1}})
    });
    let e = dial(DialOptions::new().sock_path(&v2).spawn(false))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnsupportedVersion);
    assert!(
        e.message()
            .contains("(r1 9.0.0) speaks protocol v2, this client"),
        "{e}"
    );
    assert!(e.message().contains(" v1: upgrade r1"), "{e}");
    assert!(e.message().contains("restart the daemon"), "{e}");

    // An older daemon that refuses our v1 hello with -32007.
    let v0 = env.dir.path().join("v0.sock");
    fake_hello_daemon(&v0, |id| {
        json!({"jsonrpc":"2.0","id":id,"error":{"code":-32007,"message":"no",
            "data":{"kind":"unsupported_version","supported":[0],"requested":1}}})
    });
    let e = dial(DialOptions::new().sock_path(&v0).spawn(false))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnsupportedVersion);
    assert!(e.message().contains("speaks protocol v0"), "{e}");

    // A discovery file of another protocol version is not "stale": no spawn.
    let mut newer = fake_discovery(std::process::id(), &v2);
    newer.protocol_version = 2;
    env.write_discovery(&newer);
    let e = dial(env.spawn_opts()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnsupportedVersion);
    assert!(procs_with_home(&env.home).is_empty(), "nothing spawned");
}

// ---------------------------------------------------------------------------
// Subscriptions across a daemon restart

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscription_resumes_across_a_daemon_restart_without_gap_or_duplicate() {
    let env = Env::new();
    let d1 = env.start().await;
    let c = dial(env.opts()).await.unwrap();
    let s = c.start(StartOptions::new(&env.work)).await.unwrap();
    let id = s.session_id;
    let mut sub = c.subscribe(&id, Some(0), None).await.unwrap();
    c.send(&id, "echo before").await.unwrap();
    let mut items = items_until(&mut sub, |e| e.kind == "tool.end").await;

    d1.stop().await.unwrap();
    let d2 = env.start().await;
    assert_ne!(d1.instance_id(), d2.instance_id());

    // The stream carries the old daemon's goodbye and the new one's reload notice.
    loop {
        let item = next_item(&mut sub).await;
        let reloaded = matches!(&item, SubEvent::Daemon(n) if n.kind == "daemon.reloaded");
        items.push(item);
        if reloaded {
            break;
        }
    }
    // The same client dials the new daemon by itself.
    c.resume(&id).await.unwrap();
    assert_eq!(c.handshake().instance_id, d2.instance_id());
    c.send(&id, "echo after").await.unwrap();
    loop {
        let item = next_item(&mut sub).await;
        let done = matches!(&item, SubEvent::Record(e) if e.kind == "tool.end"
            && items.iter().any(|i| matches!(i, SubEvent::Record(u) if u.kind == "user.input" && u.data["text"] == "echo after")));
        items.push(item);
        if done {
            break;
        }
    }

    let kinds: Vec<&str> = notices(&items).iter().map(|n| n.kind.as_str()).collect();
    assert_eq!(kinds, ["daemon.stopping", "daemon.reloaded"]);
    let recs = records(&items);
    let seqs: Vec<u64> = recs.iter().map(|e| e.seq).collect();
    let last = c.get(&id).await.unwrap().last_seq;
    assert_eq!(
        seqs,
        (1..=last).collect::<Vec<_>>(),
        "every seq once, in order"
    );
    let out: String = recs
        .iter()
        .filter(|e| e.kind == "session.delta")
        .filter_map(|e| e.data["text"].as_str())
        .collect();
    assert_eq!(out, "before\nafter\n");
    for kind in ["session.paused", "session.reattached", "session.resumed"] {
        assert!(
            recs.iter().any(|e| e.kind == kind),
            "missing {kind}: {seqs:?}"
        );
    }
    d2.stop().await.unwrap();
}

/// A consumer that does not read while thousands of records land: the client's
/// bounded queue overflows, the subscription re-subscribes from its cursor, and
/// the consumer still sees every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_consumer_loses_nothing_and_sees_no_duplicate() {
    let env = Env::new();
    let d = env.start().await;
    let c = dial(env.opts()).await.unwrap();
    let n = 5000;
    let script = format!(
        "i=0; while [ $i -lt {n} ]; do echo '{{\"kind\":\"agent.tick\",\"data\":{{\"i\":'$i'}}}}'; i=$((i+1)); done"
    );
    let s = c
        .start(
            StartOptions::new(&env.work)
                .driver("exec")
                .command(["sh", "-c", script.as_str()]),
        )
        .await
        .unwrap();
    let mut sub = c.subscribe(&s.session_id, Some(0), None).await.unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while c.get(&s.session_id).await.unwrap().state != SessionState::Ended {
        assert!(Instant::now() < until, "the agent did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut seqs = Vec::new();
    let mut ticks = 0;
    while let Some(item) = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("items keep coming")
    {
        match item.unwrap() {
            SubEvent::Record(e) => {
                if e.kind == "agent.tick" {
                    assert_eq!(e.data["i"], ticks);
                    ticks += 1;
                }
                seqs.push(e.seq);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Read after the stream ended (it ends after session.ended, the last record).
    let last = c.get(&s.session_id).await.unwrap().last_seq;
    assert!(last > n, "{last}");
    assert_contiguous(&seqs, last);
    assert_eq!(ticks, n);
    d.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// BlockingClient

#[test]
fn blocking_client_and_subscription_close_from_another_thread() {
    let env = Env::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let d = rt.block_on(env.start());
    let c = BlockingClient::dial(env.opts()).unwrap();
    let s = c.start(StartOptions::new(&env.work)).unwrap();
    let sub = Arc::new(c.subscribe(&s.session_id, Some(0), None).unwrap());
    match sub.next_timeout(Duration::from_secs(10)).unwrap() {
        Some(SubEvent::Record(e)) => assert_eq!((e.seq, e.kind.as_str()), (1, "session.created")),
        other => panic!("expected session.created, got {other:?}"),
    }
    assert_eq!(
        sub.next_timeout(Duration::from_millis(50)).unwrap(),
        None,
        "times out"
    );

    let closer = Arc::clone(&sub);
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        closer.close();
    });
    let started = Instant::now();
    let e = sub.next_timeout(Duration::from_secs(30)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed);
    assert!(started.elapsed() < Duration::from_secs(5));
    t.join().unwrap();

    // The iterator form ends after session.ended.
    let it = c.subscribe(&s.session_id, Some(0), None).unwrap();
    c.cancel(&s.session_id, None).unwrap();
    assert_runs_created_to_ended(it);

    // Usable from anywhere, even a thread inside another runtime (no panic).
    let c2 = c.clone();
    let info = rt.block_on(async move { c2.info() }).unwrap();
    assert_eq!(info.instance_id, d.instance_id());
    let c3 = c.clone();
    let pid = rt
        .block_on(
            async move { tokio::task::spawn_blocking(move || c3.info().map(|i| i.pid)).await },
        )
        .unwrap()
        .unwrap();
    assert_eq!(pid, std::process::id());
    rt.block_on(d.stop()).unwrap();
}

/// A blocking subscription's records run from `session.created` to
/// `session.ended`, where the iterator ends.
fn assert_runs_created_to_ended(sub: impl Iterator<Item = r1_core::Result<SubEvent>>) {
    let kinds: Vec<String> = sub
        .map(|i| match i.unwrap() {
            SubEvent::Record(e) => e.kind,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("session.created"));
    assert_eq!(kinds.last().map(String::as_str), Some("session.ended"));
}

/// The CLI's client: the calling thread drives the connection, so a call, a
/// subscription and a session's records all make progress with no worker thread,
/// and a call from inside a runtime is refused instead of panicking.
#[test]
fn caller_thread_client_calls_and_follows_without_a_worker() {
    let env = Env::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let d = rt.block_on(env.start());
    let c = BlockingClient::dial_on_caller_thread(env.opts()).unwrap();
    assert_eq!(c.info().unwrap().instance_id, d.instance_id());
    let s = c.start(StartOptions::new(&env.work)).unwrap();
    let sub = c.subscribe(&s.session_id, Some(0), None).unwrap();
    c.cancel(&s.session_id, None).unwrap();
    assert_runs_created_to_ended(sub);

    let c2 = c.clone();
    let err = rt.block_on(async move { c2.info() }).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidState);
    assert!(err.to_string().contains("inside an async runtime"), "{err}");
    // Still usable from a plain thread afterwards.
    assert_eq!(c.info().unwrap().pid, std::process::id());
    drop(c);
    rt.block_on(d.stop()).unwrap();
}

// ---------------------------------------------------------------------------
// WebSocket

/// What a fake loopback server saw.
#[derive(Debug, Default, Clone)]
struct Seen {
    requests: Vec<(String, Vec<(String, String)>)>,
}

/// A hyper server that answers `/v1/hello` with a wrong proof and records every
/// request it gets.
async fn fake_hello_server() -> (u16, Arc<Mutex<Seen>>) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = Arc::clone(&seen2);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = Arc::clone(&seen);
                        async move {
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (
                                        k.as_str().to_owned(),
                                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                    )
                                })
                                .collect();
                            seen.lock()
                                .unwrap()
                                .requests
                                .push((req.uri().to_string(), headers));
                            let body =
                                json!({"instance_id": "1".repeat(32), "proof": "0".repeat(64)});
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from(body.to_string()),
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn websocket_refuses_an_impostor_without_sending_the_token() {
    let (port, seen) = fake_hello_server().await;
    let token = Token::generate().unwrap();
    let secret = token.expose().to_owned();
    let e = dial_ws(WsOptions::new("127.0.0.1", port, token))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    assert!(e.message().contains("failed the /v1/hello proof"), "{e}");
    assert!(e.message().contains("the token was not sent"), "{e}");
    assert!(!e.message().contains(&secret));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.requests.len(), 1, "{seen:?}");
    let (uri, headers) = &seen.requests[0];
    assert!(uri.starts_with("/v1/hello?nonce="), "{uri}");
    let query = uri.trim_start_matches("/v1/hello?nonce=");
    let (nonce, key) = query.split_once("&key=").expect("nonce and key id");
    assert_eq!(nonce.len(), 32);
    assert!(nonce.bytes().all(|b| b.is_ascii_hexdigit()));
    // The key id names the token without revealing it.
    assert_eq!(key, r1_core::server::auth::key_id(&secret));
    assert!(!uri.contains(&secret));
    for (k, v) in headers {
        assert!(
            k != "authorization" && k != "sec-websocket-protocol",
            "credential header {k} sent"
        );
        assert!(!v.contains(&secret), "token in header {k}");
    }
    assert!(!uri.contains(&secret));
    assert_eq!(
        headers
            .iter()
            .find(|(k, _)| k == "host")
            .map(|(_, v)| v.clone()),
        Some(format!("127.0.0.1:{port}"))
    );
}

#[tokio::test]
async fn websocket_dials_only_loopback() {
    let token = Token::generate().unwrap();
    for host in ["192.0.2.1", "example.com"] {
        let e = dial_ws(WsOptions::new(host, 1, token.clone()))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidParams, "{host}: {e}");
    }
    // Nothing listening: a plain not-found, quickly.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let e = dial_ws(WsOptions::new("127.0.0.1", port, token))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DaemonNotFound);
}

#[allow(dead_code)]
fn _client_is_send_sync(c: Client, b: BlockingClient) -> impl Send + Sync {
    (c, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websocket_to_the_real_daemon() {
    let env = Env::new();
    let d = env.start().await;
    let opts = WsOptions::from_discovery(d.discovery())
        .unwrap()
        .client_name("ws-test");
    let ws = dial_ws(opts).await.unwrap();
    assert_eq!(ws.handshake().instance_id, d.instance_id());
    assert_eq!(ws.hello().await.unwrap().instance_id, d.instance_id());
    assert_eq!(ws.info().await.unwrap().pid, std::process::id());

    // Sessions and a subscription over the WebSocket.
    let s = ws.start(StartOptions::new(&env.work)).await.unwrap();
    let mut sub = ws.subscribe(&s.session_id, Some(0), None).await.unwrap();
    ws.send(&s.session_id, "echo over-ws").await.unwrap();
    let items = items_until(&mut sub, |e| e.kind == "tool.end").await;
    let seqs: Vec<u64> = records(&items).iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let out: String = records(&items)
        .iter()
        .filter(|e| e.kind == "session.delta")
        .filter_map(|e| e.data["text"].as_str())
        .collect();
    assert_eq!(out, "over-ws\n");

    // Privileged methods exist only on the unix socket.
    let e = ws.rotate_token().await.unwrap_err();
    assert_eq!(e.rpc().unwrap().code, -32004);

    // A scoped token reads but cannot write.
    let unix = dial(env.opts()).await.unwrap();
    let minted = unix
        .mint_token("read", Duration::from_secs(60))
        .await
        .unwrap();
    let scoped = WsOptions::new("127.0.0.1", d.port().unwrap(), minted.token);
    // The daemon proves it knows the scoped token too (the hello names it by key id).
    let reader = dial_ws(scoped.clone()).await.unwrap();
    assert_eq!(reader.list(None).await.unwrap().len(), 1);
    let e = reader
        .start(StartOptions::new(&env.work))
        .await
        .unwrap_err();
    assert_eq!(e.rpc().unwrap().code, -32004);

    // A wrong token fails the hello proof before anything is sent.
    let e = dial_ws(WsOptions::new(
        "127.0.0.1",
        d.port().unwrap(),
        Token::generate().unwrap(),
    ))
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    assert!(e.message().contains("knows no such token"), "{e}");
    assert!(e.message().contains("the token was not sent"), "{e}");

    // After a restart (new port, new token) the old options cannot reach it: the
    // subscription reports that instead of hanging.
    drop(sub);
    d.stop().await.unwrap();
    let e = ws.info().await.unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::DaemonNotFound | ErrorKind::Closed),
        "{e}"
    );
}
