//! Other users (DESIGN §2 modes, §3 discovery checks, §4 peer uid). Root only: an
//! unprivileged user `r1-foreign-test` is created (or reused) and every check runs a
//! real process as that user (`setpriv --reuid/--regid --clear-groups`).
//!
//! * It cannot use the daemon's socket: the socket dir is 0700 (EACCES), and when the
//!   socket is made reachable on purpose (0711 dir, 0777 socket) the daemon's peer-uid
//!   check refuses the connection and logs it.
//! * A `daemon.json` owned by it is refused by readers (`WrongOwner`), and an
//!   `R1_HOME` owned by it is refused by `r1 serve` (exit 1, path and owner named).
//! * It can read nothing r1 creates: after activity (sessions, journals, a repaired
//!   torn tail, index, bus, log, lock, discovery, clean markers) every file is 0600,
//!   every dir 0700, all owned by us; reading each file as that user fails with
//!   "Permission denied" — through the 0700 dirs, and again with every dir opened to
//!   0711 so each file's own mode is what stops it.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::system::{ForeignUser, is_root, skip, system_python};
use crate::common::{DaemonProc, Rpc, ServeOpts};

/// Connects to a unix socket, sends `daemon.info`, prints `ERR <errno>` if connect
/// fails, else `GOT <answer>` / `GOT EOF` / `RECVERR <errno>` (EPIPE when the daemon
/// closed the connection before the request went out).
const CONNECT_PY: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("ERR", e.errno); sys.exit(0)
s.settimeout(10)
try:
    s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"daemon.info"}\n')
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
except OSError as e:
    print("RECVERR", e.errno); sys.exit(0)
print("GOT", data.decode(errors="replace").strip() or "EOF")
"#;

/// Everything root-only tests need, or why they skip.
fn setup(test: &str) -> Option<ForeignUser> {
    if !is_root() {
        skip(test, "needs root to create and act as another user");
        return None;
    }
    if !Path::new("/usr/bin/setpriv").exists() && !Path::new("/bin/setpriv").exists() {
        skip(test, "setpriv (util-linux) is not installed");
        return None;
    }
    match ForeignUser::ensure() {
        Ok(u) => Some(u),
        Err(e) => {
            skip(test, &e);
            None
        }
    }
}

/// A tempdir the foreign user may traverse (tempfile makes them 0700).
fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    dir
}

fn connect_as(user: &ForeignUser, sock: &Path) -> Option<String> {
    let py = system_python()?;
    let out = user.run(&[py, "-c", CONNECT_PY, &sock.to_string_lossy()]);
    assert!(
        out.status.success(),
        "python as {}: {}",
        user.uid,
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_user_cannot_use_the_socket_and_is_logged() {
    const TEST: &str = "foreign_user_cannot_use_the_socket_and_is_logged";
    let Some(user) = setup(TEST) else { return };
    if system_python().is_none() {
        skip(TEST, "no system python3 the foreign user can run");
        return;
    }
    let dir = open_tempdir();

    // 1. As r1 sets it up: the socket dir is 0700, so connect() is refused (EACCES).
    let mut opts = ServeOpts::in_dir(dir.path());
    opts.sock = dir.path().join("sockdir").join("s.sock");
    let daemon = DaemonProc::start(&opts);
    let mode = std::fs::metadata(dir.path().join("sockdir"))
        .expect("sockdir")
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    assert_eq!(
        connect_as(&user, &daemon.sock).as_deref(),
        Some(format!("ERR {}", libc::EACCES).as_str())
    );
    drop(daemon);

    // 2. Made reachable on purpose: the connection gets to the daemon, whose peer-uid
    //    check closes it unanswered and logs the refusal.
    let mut opts = ServeOpts::in_dir(dir.path());
    opts.home = dir.path().join("home2");
    opts.sock = dir.path().join("open").join("s.sock");
    opts.stderr_path = dir.path().join("serve-2.stderr");
    let daemon = DaemonProc::start(&opts);
    std::fs::set_permissions(
        dir.path().join("open"),
        std::fs::Permissions::from_mode(0o711),
    )
    .expect("chmod dir");
    std::fs::set_permissions(&daemon.sock, std::fs::Permissions::from_mode(0o777))
        .expect("chmod socket");
    let got = connect_as(&user, &daemon.sock).expect("python");
    assert!(
        got == "GOT EOF"
            || got == format!("RECVERR {}", libc::ECONNRESET)
            || got == format!("RECVERR {}", libc::EPIPE),
        "the daemon answered another user: {got}"
    );
    let log = daemon.home.join("log").join("r1.log");
    let want = format!("peer_uid={}", user.uid);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.contains("refused a unix connection from another user") && l.contains(&want))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no refusal logged in {}:\n{text}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // We are still served.
    let mut c = Rpc::connect(&daemon.sock).await;
    let info = c.call("daemon.info", json!({})).await;
    assert_eq!(info["pid"], json!(daemon.pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_owned_discovery_and_home_are_refused() {
    const TEST: &str = "foreign_owned_discovery_and_home_are_refused";
    let Some(user) = setup(TEST) else { return };
    let dir = open_tempdir();
    let opts = ServeOpts::in_dir(dir.path());
    let mut daemon = DaemonProc::start(&opts);
    let disc = daemon.home.join("daemon.json");
    let home = r1_core::paths::Home::at(&daemon.home).expect("home");
    assert!(r1_core::discovery::read(&home).is_ok());
    nix::unistd::chown(
        &disc,
        Some(nix::unistd::Uid::from_raw(user.uid)),
        Some(nix::unistd::Gid::from_raw(user.gid)),
    )
    .expect("chown daemon.json");
    match r1_core::discovery::read(&home) {
        Err(r1_core::discovery::Error::WrongOwner { path, owner, uid }) => {
            assert_eq!((path, owner, uid), (disc.clone(), user.uid, 0));
        }
        other => panic!("a foreign daemon.json was accepted: {other:?}"),
    }
    // The CLI refuses it too (and does not spawn a second daemon over it).
    let out = std::process::Command::new(crate::common::daemon::r1_bin())
        .args(["ctl", "discover"])
        .env("R1_HOME", &daemon.home)
        .output()
        .expect("r1 ctl discover");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("owned by uid {}", user.uid)), "{err}");
    nix::unistd::chown(
        &disc,
        Some(nix::unistd::Uid::from_raw(0)),
        Some(nix::unistd::Gid::from_raw(0)),
    )
    .expect("chown back");
    let s = daemon.terminate(Duration::from_secs(20)).expect("stop");
    assert!(s.success());

    // A home owned by someone else: refused at start, naming the path and the owner.
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).expect("mkdir");
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    nix::unistd::chown(
        &theirs,
        Some(nix::unistd::Uid::from_raw(user.uid)),
        Some(nix::unistd::Gid::from_raw(user.gid)),
    )
    .expect("chown home");
    let mut opts2 = ServeOpts::in_dir(dir.path());
    opts2.home = theirs.clone();
    opts2.sock = dir.path().join("s2.sock");
    opts2.stderr_path = dir.path().join("serve-theirs.stderr");
    let mut refused = DaemonProc::spawn(&opts2);
    let status = refused
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("r1 serve started on a foreign home"));
    let err = refused.stderr();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains(&theirs.display().to_string()), "{err}");
    assert!(err.contains(&format!("owned by uid {}", user.uid)), "{err}");
    // Nothing was created in it.
    assert_eq!(std::fs::read_dir(&theirs).expect("read").count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_user_can_read_nothing_r1_creates() {
    const TEST: &str = "foreign_user_can_read_nothing_r1_creates";
    let Some(user) = setup(TEST) else { return };
    let dir = open_tempdir();
    let mut opts = ServeOpts::in_dir(dir.path());
    opts.sock = dir.path().join("sockdir").join("s.sock");
    let mut daemon = DaemonProc::start(&opts);
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("workdir");
    let mut c = Rpc::connect(&daemon.sock).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = c.call("session.start", json!({"workdir": work})).await;
        let id = r["session_id"].as_str().expect("id").to_owned();
        let s = c
            .call(
                "session.send",
                json!({"session_id": id, "text": "echo secret"}),
            )
            .await;
        assert!(s["seq"].is_u64());
        ids.push(id);
    }
    drop(c);
    // A torn tail, so recovery writes a `.corrupt-*` copy.
    daemon.kill9();
    let j0 = daemon
        .home
        .join("sessions")
        .join(&ids[0])
        .join("journal.ndjson");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&j0)
            .expect("journal");
        f.write_all(b"{\"v\":1,\"seq\":99,\"crc\":\"0000")
            .expect("tear");
    }
    opts.stderr_path = dir.path().join("serve-2.stderr");
    let mut daemon = DaemonProc::start(&opts);
    let mut c = Rpc::connect(&daemon.sock).await;
    let got = c.call("session.get", json!({"session_id": ids[0]})).await;
    assert!(got["reload"]["repaired"].is_object(), "{got:#}");
    c.call("session.resume", json!({"session_id": ids[1]}))
        .await;
    drop(c);

    // While running: discovery, lock, socket, log, index, bus, journals, .corrupt-*.
    let running = check_tree(&user, &daemon.home, &daemon.sock);
    for name in [
        "daemon.json",
        "daemon.lock",
        "sessions-index.json",
        "r1.log",
        "events.ndjson",
        "journal.ndjson",
    ] {
        assert!(
            running.iter().any(|p| p.ends_with(name)),
            "{name} not checked: {running:?}"
        );
    }
    assert!(
        running
            .iter()
            .any(|p| p.to_string_lossy().contains(".corrupt-"))
    );

    // Stopped: clean markers.
    let s = daemon.terminate(Duration::from_secs(20)).expect("stop");
    assert!(s.success());
    let stopped = check_tree(&user, &daemon.home, &daemon.sock);
    assert!(stopped.iter().any(|p| p.ends_with("clean")), "{stopped:?}");
}

/// Checks owner and mode of everything under `home` and the socket's dir, then tries
/// to read each file as `user`: first as laid out, then with every dir opened to 0711
/// (restored after). Returns the files checked.
fn check_tree(user: &ForeignUser, home: &Path, sock: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let mut sockets = Vec::new();
    walk(home, &mut dirs, &mut files, &mut sockets);
    let sock_dir = sock.parent().expect("sock dir").to_path_buf();
    walk(&sock_dir, &mut dirs, &mut files, &mut sockets);
    for d in &dirs {
        let m = std::fs::symlink_metadata(d).expect("meta");
        assert_eq!(m.uid(), 0, "{} not ours", d.display());
        assert_eq!(m.mode() & 0o7777, 0o700, "dir {}", d.display());
    }
    for f in files.iter().chain(&sockets) {
        let m = std::fs::symlink_metadata(f).expect("meta");
        assert_eq!(m.uid(), 0, "{} not ours", f.display());
        assert_eq!(m.mode() & 0o7777, 0o600, "file {}", f.display());
    }
    try_reads(user, &files, &sockets, "through 0700 dirs");
    for d in &dirs {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).expect("open dir");
    }
    try_reads(user, &files, &sockets, "with every dir 0711");
    for d in &dirs {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).expect("close dir");
    }
    files.extend(sockets);
    files
}

fn walk(dir: &Path, dirs: &mut Vec<PathBuf>, files: &mut Vec<PathBuf>, sockets: &mut Vec<PathBuf>) {
    dirs.push(dir.to_path_buf());
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        let t = std::fs::symlink_metadata(&p).expect("meta").file_type();
        if t.is_dir() {
            walk(&p, dirs, files, sockets);
        } else if t.is_socket() {
            sockets.push(p);
        } else {
            assert!(
                t.is_file(),
                "{} is neither file, dir nor socket",
                p.display()
            );
            files.push(p);
        }
    }
}

/// `cat` of every file, and a connect to every socket, as `user`: all must be denied.
fn try_reads(user: &ForeignUser, files: &[PathBuf], sockets: &[PathBuf], how: &str) {
    const SCRIPT: &str = r#"for f; do if out=$(cat -- "$f" 2>&1 >/dev/null); then echo "READ $f"; else echo "DENIED $f: $out"; fi; done"#;
    let mut argv: Vec<String> = vec!["/bin/sh".into(), "-c".into(), SCRIPT.into(), "sh".into()];
    argv.extend(files.iter().map(|p| p.to_string_lossy().into_owned()));
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = user.run(&refs);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), files.len(), "{how}: {text}");
    for l in &lines {
        assert!(
            l.starts_with("DENIED ") && l.ends_with("Permission denied"),
            "{how}: the other user could read: {l}"
        );
    }
    for s in sockets {
        if let Some(got) = connect_as(user, s) {
            assert_eq!(
                got,
                format!("ERR {}", libc::EACCES),
                "{how}: socket {}",
                s.display()
            );
        }
    }
}
