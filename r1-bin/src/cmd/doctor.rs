//! `r1 ctl doctor`: every check of DESIGN §9, each finding with what to do.
//!
//! The doctor only looks: it never starts a daemon, never chmods, never deletes.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use r1_core::client::{BlockingClient, DialOptions};
use r1_core::discovery::{self, Discovery};
use r1_core::paths::{self, Home};
use r1_core::service;
use serde::Serialize;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
struct Finding {
    check: &'static str,
    level: Level,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

fn ok(check: &'static str, detail: impl Into<String>) -> Finding {
    Finding {
        check,
        level: Level::Ok,
        detail: detail.into(),
        fix: None,
    }
}
fn warn(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        check,
        level: Level::Warn,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}
fn fail(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        check,
        level: Level::Fail,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

/// Runs every check and prints the findings; exit 1 when any check failed.
pub fn run(home: &Home, json: bool) -> anyhow::Result<ExitCode> {
    let mut findings = Vec::new();
    let home_ok = check_home(home, &mut findings);
    if home_ok {
        check_files(home, &mut findings);
    }
    let lock_held = if home_ok {
        check_lock(home, &mut findings)
    } else {
        None
    };
    let disc = check_discovery(home, lock_held, &mut findings);
    if let Some(d) = &disc {
        check_socket(home, d, &mut findings);
        check_port(d, &mut findings);
        check_versions(d, &mut findings);
    }
    check_service(home, &mut findings);

    let failed = findings.iter().any(|f| f.level == Level::Fail);
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({"ok": !failed, "findings": findings}),
        )?;
        writeln!(out)?;
    } else {
        for f in &findings {
            let tag = match f.level {
                Level::Ok => "ok  ",
                Level::Warn => "WARN",
                Level::Fail => "FAIL",
            };
            writeln!(out, "{tag}  {:<10} {}", f.check, f.detail)?;
            if let Some(fix) = &f.fix {
                writeln!(out, "      {:<10} fix: {fix}", "")?;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn mode_of(meta: &std::fs::Metadata) -> u32 {
    meta.mode() & 0o777
}

fn check_home(home: &Home, out: &mut Vec<Finding>) -> bool {
    let root = home.root();
    match std::fs::symlink_metadata(root) {
        Err(_) => {
            out.push(warn(
                "home",
                format!("{} does not exist yet", root.display()),
                "it is created (0700) by the first `r1 serve`",
            ));
            false
        }
        Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
            out.push(fail(
                "home",
                format!("{} is not a directory (or is a symlink)", root.display()),
                "remove it, or set R1_HOME to a directory you own".to_string(),
            ));
            false
        }
        Ok(m) if m.uid() != paths::current_uid() => {
            out.push(fail(
                "home",
                format!(
                    "{} is owned by uid {}, not by you (uid {})",
                    root.display(),
                    m.uid(),
                    paths::current_uid()
                ),
                "set R1_HOME to a directory you own",
            ));
            false
        }
        Ok(m) if mode_of(&m) & 0o077 != 0 => {
            out.push(fail(
                "home",
                format!("{} has mode {:04o}", root.display(), mode_of(&m)),
                format!("chmod 700 {}", root.display()),
            ));
            true
        }
        Ok(_) => {
            out.push(ok("home", format!("{} is 0700 and yours", root.display())));
            true
        }
    }
}

/// Every file r1 keeps must be 0600 and every directory 0700, all ours.
fn check_files(home: &Home, out: &mut Vec<Finding>) {
    let mut bad = Vec::new();
    let mut count = 0usize;
    let mut walk = vec![home.root().to_path_buf()];
    while let Some(dir) = walk.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            count += 1;
            let want = if m.is_dir() { 0o700 } else { 0o600 };
            if m.file_type().is_symlink() {
                bad.push(fail(
                    "files",
                    format!("{} is a symlink", p.display()),
                    format!(
                        "remove it: r1 never follows symlinks in its home ({})",
                        p.display()
                    ),
                ));
            } else if m.uid() != paths::current_uid() {
                bad.push(fail(
                    "files",
                    format!("{} is owned by uid {}", p.display(), m.uid()),
                    format!("chown it to yourself or remove it: {}", p.display()),
                ));
            } else if mode_of(&m) & 0o077 != 0 {
                bad.push(fail(
                    "files",
                    format!(
                        "{} has mode {:04o}, want {want:04o}",
                        p.display(),
                        mode_of(&m)
                    ),
                    format!("chmod {want:o} {}", p.display()),
                ));
            }
            if m.is_dir() {
                walk.push(p);
            }
        }
    }
    if bad.is_empty() {
        out.push(ok(
            "files",
            format!("{count} files and directories, all private"),
        ));
    } else {
        out.extend(bad);
    }
}

/// `Some(true)` when a daemon holds the lock.
fn check_lock(home: &Home, out: &mut Vec<Finding>) -> Option<bool> {
    if !home.lock_path().exists() {
        out.push(ok("lock", "no daemon.lock: no daemon has run here"));
        return Some(false);
    }
    match r1_core::lock::FileLock::try_acquire(&home.lock_path()) {
        Ok(Some(_free)) => {
            out.push(ok(
                "lock",
                "free: no daemon is running (a lock file left by a dead daemon is harmless)",
            ));
            Some(false)
        }
        Ok(None) => {
            let h = r1_core::lock::holder(home);
            out.push(ok(
                "lock",
                format!(
                    "held by pid {}",
                    h.pid
                        .map_or_else(|| "unknown".to_owned(), |p| p.to_string())
                ),
            ));
            Some(true)
        }
        Err(e) => {
            out.push(fail(
                "lock",
                format!("cannot inspect {}: {e}", home.lock_path().display()),
                "check the file's owner and mode",
            ));
            None
        }
    }
}

fn check_discovery(
    home: &Home,
    lock_held: Option<bool>,
    out: &mut Vec<Finding>,
) -> Option<Discovery> {
    match discovery::read(home) {
        Ok(d) if !discovery::pid_alive(d.pid) => {
            out.push(warn(
                "discovery",
                format!("{} is stale: pid {} is gone", home.discovery_path().display(), d.pid),
                "harmless: clients ignore it and the next daemon replaces it (`r1 ctl info` starts one)",
            ));
            None
        }
        Ok(d) => {
            if lock_held == Some(false) {
                out.push(warn(
                    "discovery",
                    format!("daemon.json names pid {} but the daemon lock is free", d.pid),
                    "the pid may belong to another program now; `r1 ctl info` starts a fresh daemon",
                ));
                return None;
            }
            out.push(ok(
                "discovery",
                format!(
                    "pid {}, version {}, started {}",
                    d.pid, d.version, d.started_at
                ),
            ));
            Some(d)
        }
        Err(discovery::Error::Missing { .. }) => {
            if lock_held == Some(true) {
                out.push(fail(
                    "discovery",
                    "a daemon holds the lock but daemon.json is missing",
                    "it may still be starting; otherwise restart it: kill the pid in daemon.lock, then `r1 serve`",
                ));
            } else {
                out.push(ok("discovery", "no daemon is running (no daemon.json)"));
            }
            None
        }
        Err(e) => {
            out.push(fail(
                "discovery",
                e.to_string(),
                "follow the message, then restart the daemon",
            ));
            None
        }
    }
}

fn check_socket(home: &Home, d: &Discovery, out: &mut Vec<Finding>) {
    let Some(sock) = &d.sock_path else {
        out.push(ok("socket", "off (--no-unix)"));
        return;
    };
    let opts = DialOptions::new()
        .home(home.root())
        .spawn(false)
        .timeout(Duration::from_secs(2))
        .client_name("r1 ctl doctor");
    match BlockingClient::dial(opts) {
        Ok(c) => out.push(ok(
            "socket",
            format!(
                "{} answers (instance {})",
                sock.display(),
                c.handshake().instance_id
            ),
        )),
        Err(e) => out.push(fail(
            "socket",
            format!("{} does not answer: {e}", sock.display()),
            format!(
                "see {}; restart with `r1 ctl shutdown && r1 serve --detach`",
                home.log_path().display()
            ),
        )),
    }
}

fn check_port(d: &Discovery, out: &mut Vec<Finding>) {
    let Some(port) = d.port else {
        out.push(ok("port", "off (--no-tcp)"));
        return;
    };
    match health(port) {
        Ok(200) => out.push(ok("port", format!("127.0.0.1:{port} answers /v1/health"))),
        Ok(status) => out.push(fail(
            "port",
            format!("127.0.0.1:{port} answered /v1/health with HTTP {status}"),
            "another program may own the port: restart the daemon",
        )),
        Err(e) => out.push(fail(
            "port",
            format!("127.0.0.1:{port} does not answer: {e}"),
            "restart the daemon; if it persists, run with --no-tcp and report the log",
        )),
    }
}

/// `GET /v1/health` with hyper (status code only).
fn health(port: u16) -> anyhow::Result<u16> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let fut = async move {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let req = hyper::Request::get("/v1/health")
                .header(hyper::header::HOST, format!("127.0.0.1:{port}"))
                .body(http_body_util::Empty::<bytes::Bytes>::new())?;
            let resp = sender.send_request(req).await?;
            anyhow::Ok(resp.status().as_u16())
        };
        tokio::time::timeout(Duration::from_secs(2), fut)
            .await
            .map_err(|_| anyhow::anyhow!("timed out after 2s"))?
    })
}

fn check_versions(d: &Discovery, out: &mut Vec<Finding>) {
    if d.version == r1_core::VERSION && d.protocol_version == discovery::PROTOCOL_VERSION {
        out.push(ok(
            "versions",
            format!("daemon and this binary are both r1 {}", d.version),
        ));
    } else {
        out.push(warn(
            "versions",
            format!(
                "the daemon runs r1 {} (protocol v{}), this binary is r1 {} (protocol v{})",
                d.version,
                d.protocol_version,
                r1_core::VERSION,
                discovery::PROTOCOL_VERSION
            ),
            "restart the daemon so it runs this version: `r1 ctl shutdown && r1 serve --detach`",
        ));
    }
}

fn check_service(home: &Home, out: &mut Vec<Finding>) {
    let exe = std::env::current_exe().unwrap_or_else(|_| Path::new("r1").to_path_buf());
    let opts = service::ServiceOptions::new(home.root().to_path_buf(), exe);
    match service::status(&opts) {
        Ok(s) => out.push(ok(
            "service",
            s.line(opts.platform).trim_start_matches("r1: ").to_owned(),
        )),
        Err(e) => out.push(ok("service", format!("not checked: {e}"))),
    }
}
