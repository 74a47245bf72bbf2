//! `r1 ctl` and `r1 chat` against real daemons (auto-spawned by the CLI itself).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const R1: &str = env!("CARGO_BIN_EXE_r1");

/// A temporary home; the daemon it spawned is shut down (or killed) on drop.
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

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(R1);
        c.args(args)
            .env("R1_HOME", &self.home)
            .env("R1_BIN", R1)
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs and expects exit 0; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "r1 {args:?} failed ({:?}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.insert(1, "--json");
        let out = self.ok(&a);
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("r1 {a:?} printed {out:?}: {e}"))
    }

    fn discovery(&self) -> Option<Value> {
        std::fs::read_to_string(self.home.join("daemon.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(d) = self.discovery() {
            let _ = self.run(&["ctl", "shutdown", "--grace", "0"]);
            if let Some(pid) = d["pid"].as_i64() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

fn pid_alive(pid: i64) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// Daemon processes whose environment names this home.
fn daemons_for(home: &Path) -> Vec<i64> {
    let mut pids = Vec::new();
    let marker = format!("R1_HOME={}", home.display());
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i64>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.len() < 2 || args[1] != b"serve" {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()) {
            // Skip zombies.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if !stat.contains(") Z") {
                pids.push(pid);
            }
        }
    }
    pids
}

#[test]
fn auto_spawn_info_discover_and_json() {
    let e = Env::new();
    let t0 = Instant::now();
    let info = e.json(&["ctl", "info"]);
    let spawn_time = t0.elapsed();
    eprintln!("auto-spawn `r1 ctl info` with no daemon: {spawn_time:?}");
    assert!(
        spawn_time < Duration::from_secs(2),
        "within the dial timeout"
    );
    let d = e.discovery().expect("daemon.json written");
    assert_eq!(info["pid"], d["pid"]);
    assert_eq!(info["home"], json!(e.home));
    let text = e.ok(&["ctl", "info"]);
    assert!(text.contains(&format!("pid: {}", d["pid"])), "{text}");
    assert!(text.contains("uptime: "), "{text}");

    let disc = e.ok(&["ctl", "discover"]);
    let lines: Vec<&str> = disc.lines().collect();
    assert_eq!(lines.len(), 6, "{disc}");
    assert_eq!(lines[0], format!("pid: {}", d["pid"]));
    assert_eq!(
        lines[1],
        format!("sock: {}", d["sock_path"].as_str().unwrap())
    );
    assert_eq!(lines[2], format!("loopback: 127.0.0.1:{}", d["port"]));
    assert_eq!(
        lines[3],
        format!(
            "token: <redacted; see {}>",
            e.home.join("daemon.json").display()
        )
    );
    assert!(
        lines[4].starts_with(&format!("started: {} (", d["started_at"].as_str().unwrap())),
        "{}",
        lines[4]
    );
    assert!(
        lines[4].ends_with("ago)") || lines[4].ends_with("(just now)"),
        "{}",
        lines[4]
    );
    assert_eq!(lines[5], "version: 0.1.0");
    assert!(
        !disc.contains(d["token"].as_str().unwrap()),
        "token never printed"
    );
    let dj = e.json(&["ctl", "discover"]);
    assert_eq!(dj["token"], "<redacted>");
    assert_eq!(dj["pid"], d["pid"]);
}

#[test]
fn discover_and_shutdown_never_spawn() {
    let e = Env::new();
    let o = e.run(&["ctl", "discover"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("r1: no daemon is running"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    let o = e.run(&["ctl", "shutdown"]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout), "no daemon is running\n");
    let o = e.run(&["ctl", "rotate-token"]);
    assert_eq!(o.status.code(), Some(1));
    let o = e.run(&["ctl", "--no-spawn", "info"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(e.discovery().is_none(), "nothing spawned");
    assert!(daemons_for(&e.home).is_empty());
    // Usage errors exit 2.
    assert_eq!(e.run(&["ctl", "sessions", "get"]).status.code(), Some(2));
    assert_eq!(e.run(&["ctl", "frobnicate"]).status.code(), Some(2));
}

#[test]
fn sessions_verbs_text_and_json() {
    let e = Env::new();
    let work = e.work.to_str().unwrap();
    let id = e
        .ok(&[
            "ctl",
            "sessions",
            "start",
            "--workdir",
            work,
            "--name",
            "demo",
        ])
        .trim()
        .to_owned();
    assert!(id.starts_with("sess_"), "{id}");
    let sent = e.ok(&[
        "ctl", "sessions", "send", &id, "echo", "one;", "echo", "two", ">&2",
    ]);
    assert!(sent.starts_with("sent (seq "), "{sent}");
    let followed = e
        .cmd(&["ctl", "sessions", "follow", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the command ran, cancel so follow ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let j = e.ok(&["ctl", "journal", &id]);
        if j.contains("\"kind\":\"tool.end\"") {
            break;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let list = e.ok(&["ctl", "sessions", "list"]);
    let mut lines = list.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("ID") && header.contains("STATE") && header.contains("WORKDIR"),
        "{header}"
    );
    let row = lines.next().unwrap();
    assert!(
        row.starts_with(&id) && row.contains("running") && row.contains("demo"),
        "{row}"
    );
    let lj = e.json(&["ctl", "sessions", "list"]);
    assert_eq!(lj["sessions"][0]["id"], json!(id));
    let get = e.ok(&["ctl", "sessions", "get", &id]);
    assert!(
        get.contains(&format!("id: {id}"))
            && get.contains("state: running")
            && get.contains("name: demo"),
        "{get}"
    );
    let gj = e.json(&["ctl", "sessions", "get", &id]);
    assert_eq!(gj["state"], "running");
    assert_eq!(
        e.ok(&["ctl", "sessions", "pause", &id]),
        format!("paused {id}\n")
    );
    assert_eq!(
        e.json(&["ctl", "sessions", "list", "--state", "paused"])["sessions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let rj = e.json(&["ctl", "sessions", "resume", &id]);
    assert!(rj["resumed_at"].is_string());
    assert_eq!(
        e.ok(&["ctl", "sessions", "cancel", &id, "--reason", "done"]),
        format!("cancelled {id}\n")
    );
    let out = followed.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("$ echo one; echo two >&2\none\n[exit 0 · "),
        "{stdout}"
    );
    assert!(stdout.ends_with("[session ended: cancelled]\n"), "{stdout}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "two\n");
    // Errors: one line, exit 1, JSON-RPC message.
    let o = e.run(&["ctl", "sessions", "send", &id, "echo late"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("r1: ") && err.contains("ended"), "{err}");
    let o = e.run(&["ctl", "sessions", "get", "sess_../../etc"]);
    assert_eq!(o.status.code(), Some(1));
    let o = e.run(&[
        "ctl",
        "sessions",
        "start",
        "--workdir",
        "/definitely/missing",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("workdir"));
    assert_eq!(
        e.ok(&["ctl", "sessions", "delete", &id]),
        format!("deleted {id}\n")
    );
    assert_eq!(e.ok(&["ctl", "sessions", "list"]), "no sessions\n");
}

#[test]
fn exec_start_follow_json_and_journal_without_daemon() {
    let e = Env::new();
    let work = e.work.to_str().unwrap();
    let agent = e.work.join("agent.sh");
    std::fs::write(&agent, "#!/bin/sh\nread line\necho \"got: $line\"\n").unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = e.json(&[
        "ctl",
        "sessions",
        "start",
        "--workdir",
        work,
        "--",
        agent.to_str().unwrap(),
    ]);
    let id = r["session_id"].as_str().unwrap().to_owned();
    assert_eq!(r["driver"], "exec");
    e.ok(&["ctl", "sessions", "send", &id, "hello"]);
    let out = e.ok(&["ctl", "--json", "sessions", "follow", &id]);
    let recs: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs[0]["kind"], "session.created");
    assert!(recs.iter().any(|r| {
        r["kind"] == "session.delta"
            && r["data"]["text"]
                .as_str()
                .unwrap()
                .starts_with("got: {\"kind\":\"user.input\"")
    }));
    assert_eq!(recs.last().unwrap()["kind"], "session.ended");
    // With the daemon gone, the journal is still readable and verifiable.
    e.ok(&["ctl", "shutdown"]);
    let all = e.ok(&["ctl", "journal", &id]);
    assert_eq!(all.lines().count(), recs.len());
    let since = e.ok(&["ctl", "journal", &id, "--since", "2"]);
    assert!(
        since
            .lines()
            .next()
            .unwrap()
            .starts_with("{\"v\":1,\"seq\":3,")
    );
    let v = e.ok(&["ctl", "journal", &id, "--verify"]);
    assert_eq!(
        v,
        format!("ok: {n} records, last seq {n}\n", n = recs.len())
    );
    let path = e.home.join("sessions").join(&id).join("journal.ndjson");
    let copy = e.dir.path().join("copy.ndjson");
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x20;
    std::fs::write(&copy, &bytes).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = e.run(&["ctl", "journal", copy.to_str().unwrap(), "--verify"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("damaged: line "),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        daemons_for(&e.home).is_empty(),
        "journal never spawns a daemon"
    );
}

#[test]
fn chat_piped_stdin_and_attach() {
    let e = Env::new();
    let mut child = e
        .cmd(&["chat", "--workdir", e.work.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"echo first\nexit 3\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("$ echo first\nfirst\n[exit 0 · "),
        "{stdout}"
    );
    assert!(stdout.contains("$ exit 3\n[exit 3 · "), "{stdout}");
    // Detached: the session keeps running; attach to it by id.
    let list = e.json(&["ctl", "sessions", "list"]);
    let id = list["sessions"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list["sessions"][0]["state"], "running");
    let mut child = e
        .cmd(&["chat", "--session", &id])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"echo again\n")
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("again\n"));
    let o = e.run(&[
        "chat",
        "--session",
        "sess_00000000-0000-4000-8000-000000000000",
    ]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn twenty_concurrent_clients_start_one_daemon() {
    let e = Env::new();
    let children: Vec<_> = (0..20)
        .map(|_| {
            e.cmd(&["ctl", "--json", "--timeout", "10s", "info"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut pids = std::collections::BTreeSet::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        pids.insert(v["pid"].as_i64().unwrap());
    }
    assert_eq!(pids.len(), 1, "every client saw the same daemon");
    assert_eq!(
        daemons_for(&e.home),
        pids.into_iter().collect::<Vec<_>>(),
        "exactly one daemon process"
    );
}

#[test]
fn stale_discovery_is_not_trusted() {
    let e = Env::new();
    std::fs::create_dir_all(&e.home).unwrap();
    std::fs::set_permissions(&e.home, std::fs::Permissions::from_mode(0o700)).unwrap();
    // A live unrelated listener where daemon.json says the socket is, and a live pid.
    let fake_sock = e.dir.path().join("fake.sock");
    let listener = std::os::unix::net::UnixListener::bind(&fake_sock).unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fake = json!({"pid": std::process::id(), "version": "0.1.0", "protocol_version": 1, "instance_id": "00".repeat(16),
        "sock_path": fake_sock, "host": "127.0.0.1", "port": tcp.local_addr().unwrap().port(), "token": "ab".repeat(32),
        "cert_fingerprint": null, "started_at": "2026-01-01T00:00:00Z"});
    let p = e.home.join("daemon.json");
    std::fs::write(&p, fake.to_string()).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    let info = e.json(&["ctl", "--timeout", "5s", "info"]);
    assert_ne!(
        info["pid"],
        json!(std::process::id()),
        "the impostor was not trusted"
    );
    assert_ne!(info["instance_id"], fake["instance_id"]);
    drop(listener);
    // A daemon.json with a dead pid is replaced too.
    e.ok(&["ctl", "shutdown"]);
    let mut dead = fake.clone();
    dead["pid"] = json!(0x7fff_fff0u32);
    std::fs::write(&p, dead.to_string()).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    let info = e.json(&["ctl", "info"]);
    assert!(pid_alive(info["pid"].as_i64().unwrap()));
}

#[test]
fn broken_r1_bin_gives_one_line_and_no_orphan() {
    let e = Env::new();
    for bin in ["/bin/false", "/nonexistent/r1"] {
        let t0 = Instant::now();
        let o = e
            .cmd(&["ctl", "info"])
            .env("R1_BIN", bin)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let took = t0.elapsed();
        assert_eq!(o.status.code(), Some(1), "{bin}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.contains("r1.log") && err.contains("docs/operator-guide.md"),
            "{err}"
        );
        assert!(took < Duration::from_secs(4), "{bin}: {took:?}");
        assert!(daemons_for(&e.home).is_empty(), "no orphan");
    }
}

#[test]
fn shutdown_then_serve_back_to_back_and_rotate_and_open() {
    let e = Env::new();
    let first = e.json(&["ctl", "info"]);
    let old_token = e.discovery().unwrap()["token"].clone();
    let r = e.ok(&["ctl", "rotate-token"]);
    assert!(r.starts_with("token rotated at "), "{r}");
    assert_ne!(e.discovery().unwrap()["token"], old_token);
    let url = e.ok(&["ctl", "open"]);
    let d = e.discovery().unwrap();
    assert_eq!(
        url,
        format!(
            "http://127.0.0.1:{}/#token={}\n",
            d["port"],
            d["token"].as_str().unwrap()
        )
    );
    let o = e.cmd(&["ctl", "shutdown"]).output().unwrap();
    assert!(o.status.success());
    assert!(
        !pid_alive(first["pid"].as_i64().unwrap()),
        "shutdown waits for the exit"
    );
    let o = e.cmd(&["serve", "--detach"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let second = e.json(&["ctl", "--no-spawn", "info"]);
    assert_ne!(first["pid"], second["pid"]);
}

#[test]
fn doctor_names_each_problem() {
    let e = Env::new();
    e.ok(&["ctl", "info"]);
    let healthy = e.run(&["ctl", "doctor"]);
    let text = String::from_utf8_lossy(&healthy.stdout);
    for check in [
        "home",
        "files",
        "lock",
        "discovery",
        "socket",
        "port",
        "versions",
        "service",
    ] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(check)),
            "{check} missing: {text}"
        );
    }
    assert!(!text.contains("FAIL"), "{text}");
    let j = e.json(&["ctl", "doctor"]);
    assert_eq!(j["ok"], true);

    // Wrong mode on a file.
    let idx = e.home.join("sessions-index.json");
    std::fs::set_permissions(&idx, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = e.run(&["ctl", "doctor"]);
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!(
            "FAIL  files      {} has mode 0644, want 0600",
            idx.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("fix: chmod 600 {}", idx.display())),
        "{text}"
    );
    std::fs::set_permissions(&idx, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A dead daemon (SIGKILL): stale discovery, free lock.
    let pid = e.discovery().unwrap()["pid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = e.run(&["ctl", "doctor"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("ok    lock       free"), "{text}");
    assert!(
        text.contains(&format!(
            "WARN  discovery  {} is stale: pid {pid} is gone",
            e.home.join("daemon.json").display()
        )),
        "{text}"
    );

    // Wrong mode on the home itself.
    std::fs::set_permissions(&e.home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = e.run(&["ctl", "doctor"]);
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!(
            "FAIL  home       {} has mode 0755",
            e.home.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("fix: chmod 700 {}", e.home.display())),
        "{text}"
    );
}
