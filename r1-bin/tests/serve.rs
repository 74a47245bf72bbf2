//! `r1 serve` as a real process: lock contention, --detach, SIGKILL and restart.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const R1: &str = env!("CARGO_BIN_EXE_r1");

/// A daemon process that is killed when the test ends, whatever happens.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Home {
    _dir: tempfile::TempDir,
    home: PathBuf,
    work: PathBuf,
    sock: PathBuf,
}

fn home() -> Home {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let sock = dir.path().join("s.sock");
    Home {
        _dir: dir,
        home,
        work,
        sock,
    }
}

fn serve(h: &Home) -> Proc {
    let child = Command::new(R1)
        .args(["serve", "--socket"])
        .arg(&h.sock)
        .env("R1_HOME", &h.home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let p = Proc(child);
    wait_for_discovery(&h.home, p.0.id());
    p
}

/// `daemon.json` naming `pid` is the readiness signal.
fn wait_for_discovery(home: &Path, pid: u32) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(home.join("daemon.json"))
            && let Ok(v) = serde_json::from_str::<Value>(&text)
            && v["pid"] == json!(pid)
        {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "daemon {pid} did not write daemon.json"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Status of an authenticated `GET /v1/sessions` (a raw request: what any HTTP
/// client sends).
fn http_status(port: u16, token: &str) -> u16 {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

struct Conn {
    rd: BufReader<UnixStream>,
    wr: UnixStream,
    id: u64,
    notes: Vec<Value>,
}

impl Conn {
    fn open(sock: &Path) -> Conn {
        let s = UnixStream::connect(sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn {
            rd: BufReader::new(s.try_clone().unwrap()),
            wr: s,
            id: 0,
            notes: Vec::new(),
        }
    }
    fn recv(&mut self) -> Value {
        let mut line = String::new();
        self.rd.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"))
    }
    /// The next notification, including ones that arrived while waiting for a response.
    fn note(&mut self) -> Value {
        if !self.notes.is_empty() {
            return self.notes.remove(0);
        }
        self.recv()
    }
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.id += 1;
        let req = json!({"jsonrpc":"2.0","id":self.id,"method":method,"params":params});
        writeln!(self.wr, "{req}").unwrap();
        loop {
            let v = self.recv();
            if v["id"] == json!(self.id) {
                return v;
            }
            self.notes.push(v);
        }
    }
    fn ok(&mut self, method: &str, params: Value) -> Value {
        let v = self.call(method, params);
        v.get("result")
            .cloned()
            .unwrap_or_else(|| panic!("{method}: {v}"))
    }
}

#[test]
fn second_serve_prints_two_lines_and_exits_1() {
    let h = home();
    let first = serve(&h);
    let out = Command::new(R1)
        .args(["serve", "--no-tcp"])
        .env("R1_HOME", &h.home)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr,
        format!(
            "daemon already running, pid={}, sock={}\nuse 'r1 ctl' to talk to it.\n",
            first.0.id(),
            h.sock.display()
        )
    );
}

#[test]
fn detach_returns_once_reachable_and_usage_errors_exit_2() {
    let h = home();
    let out = Command::new(R1)
        .args(["serve", "--detach", "--socket"])
        .arg(&h.sock)
        .env("R1_HOME", &h.home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let disc: Value =
        serde_json::from_str(&std::fs::read_to_string(h.home.join("daemon.json")).unwrap())
            .unwrap();
    let pid = disc["pid"].as_u64().unwrap() as i32;
    let mut c = Conn::open(&h.sock);
    assert_eq!(c.ok("daemon.info", json!({}))["pid"], json!(pid));
    c.ok("daemon.shutdown", json!({}));
    let deadline = Instant::now() + Duration::from_secs(10);
    while nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok() {
        assert!(Instant::now() < deadline, "detached daemon did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!h.home.join("daemon.json").exists());
    let out = Command::new(R1)
        .args(["serve", "--no-tcp", "--no-unix"])
        .env("R1_HOME", &h.home)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(R1)
        .args(["serve", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn sigkill_mid_work_then_restart_reattaches() {
    let h = home();
    let d1 = serve(&h);
    let old = wait_for_discovery(&h.home, d1.0.id());
    let mut c = Conn::open(&h.sock);
    let id = c.ok("session.start", json!({"workdir": h.work}))["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let marker = h.work.join("ran-late");
    // A command that would leave a mark if it ever ran to completion (or ran again).
    let cmd = format!("sleep 30; touch {}", marker.display());
    c.ok("session.subscribe", json!({"session_id": id}));
    c.ok("session.send", json!({"session_id": id, "text": cmd}));
    // Wait until it is running, then kill the daemon without warning.
    loop {
        let v = c.note();
        if v["params"]["kind"] == "tool.start" {
            break;
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d1.0.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    drop(d1);

    let d2 = serve(&h);
    let new = wait_for_discovery(&h.home, d2.0.id());
    assert_ne!(old["token"], new["token"], "a new token per start");
    let port = new["port"].as_u64().unwrap() as u16;
    assert_eq!(
        http_status(port, old["token"].as_str().unwrap()),
        401,
        "the old token is refused"
    );
    assert_eq!(http_status(port, new["token"].as_str().unwrap()), 200);
    let mut c = Conn::open(&h.sock);
    let first = c.recv();
    assert_eq!(
        first["method"], "$/daemon",
        "daemon.reloaded comes first: {first}"
    );
    assert_eq!(first["params"]["kind"], "daemon.reloaded");
    let got = c.ok("session.get", json!({"session_id": id}));
    assert_eq!(got["state"], "paused-reattachable");
    let recs = c.ok("journal.read", json!({"session_id": id}))["records"]
        .as_array()
        .unwrap()
        .clone();
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["seq"], json!(i as u64 + 1), "contiguous seqs");
    }
    let end = recs
        .iter()
        .find(|r| r["kind"] == "tool.end")
        .expect("the interrupted command has a tool.end");
    assert_eq!(end["data"]["interrupted"], true);
    assert_eq!(recs.last().unwrap()["kind"], "session.reattached");
    c.ok("session.resume", json!({"session_id": id}));
    c.ok("session.subscribe", json!({"session_id": id}));
    c.ok(
        "session.send",
        json!({"session_id": id, "text": "echo resumed"}),
    );
    loop {
        let v = c.note();
        if v["params"]["kind"] == "tool.end" {
            assert_eq!(v["params"]["data"]["exit_code"], 0);
            break;
        }
    }
    assert!(
        !marker.exists(),
        "the interrupted command never ran to completion or again"
    );
    // The surviving `sleep` of the killed daemon was killed by the new one.
    let survivors = Command::new("pgrep")
        .args(["-f", &format!("touch {}", marker.display())])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&survivors.stdout).trim().is_empty(),
        "leftover command still running"
    );
    drop(d2);
}
