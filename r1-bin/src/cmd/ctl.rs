//! `r1 ctl`: talk to the running daemon.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use r1_core::client::{BlockingClient, DialOptions, SessionInfo, StartOptions, SubEvent};
use r1_core::paths::Home;
use r1_core::session::state::SessionState;
use serde_json::{Value, json};

use crate::cli::{CtlArgs, CtlVerb, JournalArgs, SessionsVerb};
use crate::cmd::doctor;
use crate::output;

/// Runs `r1 ctl`.
pub fn run(home: Option<PathBuf>, args: CtlArgs) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(home.as_deref())?;
    let ctx = Ctx {
        home,
        json: args.json,
        no_spawn: args.no_spawn,
        timeout: args.timeout,
    };
    match args.verb {
        CtlVerb::Discover => discover(&ctx),
        CtlVerb::Info => info(&ctx),
        CtlVerb::Shutdown { grace } => shutdown(&ctx, grace),
        CtlVerb::RotateToken => rotate_token(&ctx),
        CtlVerb::Open => open(&ctx),
        CtlVerb::Doctor => doctor::run(&ctx.home, ctx.json),
        CtlVerb::Sessions { verb } => sessions(&ctx, verb),
        CtlVerb::Journal(j) => journal(&ctx, j),
    }
}

struct Ctx {
    home: Home,
    json: bool,
    no_spawn: bool,
    timeout: Duration,
}

impl Ctx {
    /// Dials the daemon; `may_spawn` is false for verbs that must never start one.
    fn dial(&self, may_spawn: bool) -> anyhow::Result<BlockingClient> {
        let opts = DialOptions::new()
            .home(self.home.root())
            .spawn(may_spawn && !self.no_spawn)
            .timeout(self.timeout)
            .client_name("r1 ctl");
        Ok(BlockingClient::dial_on_caller_thread(opts)?)
    }

    fn print_json(&self, v: &impl serde::Serialize) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, v)?;
        writeln!(out)?;
        Ok(())
    }
}

fn discover(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let d = r1_core::client::discover(Some(ctx.home.root()))?;
    if ctx.json {
        let mut v = serde_json::to_value(&d)?;
        v["token"] = Value::from("<redacted>");
        ctx.print_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "pid: {}", d.pid)?;
    writeln!(
        out,
        "sock: {}",
        d.sock_path.as_deref().map_or_else(
            || "(none: --no-unix)".to_owned(),
            |p| p.display().to_string()
        )
    )?;
    match (&d.host, d.port) {
        (Some(h), Some(p)) => writeln!(out, "loopback: {h}:{p}")?,
        _ => writeln!(out, "loopback: (none: --no-tcp)")?,
    }
    writeln!(
        out,
        "token: <redacted; see {}>",
        output::tilde(&ctx.home.discovery_path())
    )?;
    writeln!(
        out,
        "started: {} ({})",
        d.started_at,
        output::ago(&d.started_at)
    )?;
    writeln!(out, "version: {}", d.version)?;
    Ok(ExitCode::SUCCESS)
}

fn info(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let c = ctx.dial(true)?;
    let i = c.info()?;
    if ctx.json {
        ctx.print_json(&i)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "version: {}", i.version)?;
    writeln!(out, "pid: {}", i.pid)?;
    writeln!(out, "instance: {}", i.instance_id)?;
    writeln!(
        out,
        "started: {} ({})",
        i.started_at,
        output::ago(&i.started_at)
    )?;
    writeln!(out, "uptime: {}", output::duration(i.uptime_s))?;
    writeln!(out, "sessions: {}", i.sessions)?;
    writeln!(
        out,
        "sock: {}",
        i.sock_path
            .as_deref()
            .map_or_else(|| "(none)".to_owned(), |p| p.display().to_string())
    )?;
    writeln!(
        out,
        "loopback: {}",
        i.port
            .map_or_else(|| "(none)".to_owned(), |p| format!("127.0.0.1:{p}"))
    )?;
    writeln!(out, "home: {}", i.home.display())?;
    writeln!(out, "log: {}", i.log_path.display())?;
    Ok(ExitCode::SUCCESS)
}

fn shutdown(ctx: &Ctx, grace: Option<f64>) -> anyhow::Result<ExitCode> {
    let c = match ctx.dial(false) {
        Ok(c) => c,
        Err(e)
            if e.downcast_ref::<r1_core::Error>()
                .is_some_and(|e| e.kind() == r1_core::ErrorKind::DaemonNotFound) =>
        {
            if ctx.json {
                ctx.print_json(&json!({"stopped": false, "running": false}))?;
            } else {
                println!("no daemon is running");
            }
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e),
    };
    let pid = c.handshake().pid;
    let grace = match grace {
        Some(g) if !(0.0..=600.0).contains(&g) => {
            bail!("--grace must be between 0 and 600 seconds")
        }
        Some(g) => Some(Duration::from_secs_f64(g)),
        None => None,
    };
    c.shutdown(grace)?;
    drop(c);
    // "r1 ctl shutdown && r1 serve" must work: wait until the process is gone.
    let wait = grace.unwrap_or(Duration::from_secs(5)) + Duration::from_secs(10);
    let deadline = Instant::now() + wait;
    while r1_core::discovery::pid_alive(pid) {
        if Instant::now() > deadline {
            bail!(
                "the daemon (pid {pid}) did not exit within {}s; see {}",
                wait.as_secs(),
                ctx.home.log_path().display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if ctx.json {
        ctx.print_json(&json!({"stopped": true, "pid": pid}))?;
    } else {
        println!("daemon stopped (pid {pid})");
    }
    Ok(ExitCode::SUCCESS)
}

fn rotate_token(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let c = ctx.dial(false)?;
    let at = c.rotate_token()?;
    if ctx.json {
        ctx.print_json(&json!({"rotated_at": at}))?;
    } else {
        println!(
            "token rotated at {at}; HTTP/WebSocket clients must read the new one from {}",
            output::tilde(&ctx.home.discovery_path())
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn open(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    // Dialing makes sure a daemon runs (and is the one daemon.json names).
    let c = ctx.dial(true)?;
    let d = c
        .as_async()
        .discovery()
        .ok_or_else(|| anyhow!("the daemon's discovery file is unreadable"))?;
    let port = d
        .port
        .ok_or_else(|| anyhow!("the daemon runs with --no-tcp: there is no web console"))?;
    let url = format!("http://127.0.0.1:{port}/#token={}", d.token.expose());
    if ctx.json {
        ctx.print_json(&json!({"url": url}))?;
    } else {
        println!("{url}");
    }
    let opener = if cfg!(target_os = "macos") {
        Some("open")
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    {
        Some("xdg-open")
    } else {
        None
    };
    if let Some(cmd) = opener {
        // Best effort: a missing opener is not an error, the URL is printed.
        let _ = std::process::Command::new(cmd)
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    Ok(ExitCode::SUCCESS)
}

fn session_row(s: &SessionInfo) -> Vec<String> {
    vec![
        s.id.clone(),
        s.state.to_string(),
        s.driver.clone(),
        s.last_seq.to_string(),
        output::ago(&s.started_at),
        s.name.clone().unwrap_or_default(),
        s.workdir.display().to_string(),
    ]
}

fn sessions(ctx: &Ctx, verb: SessionsVerb) -> anyhow::Result<ExitCode> {
    let c = ctx.dial(true)?;
    match verb {
        SessionsVerb::List { state } => {
            let state = match state {
                Some(s) => Some(SessionState::parse(&s).ok_or_else(|| {
                    anyhow!("unknown state {s:?}; one of running, paused, ended, paused-reattachable, damaged")
                })?),
                None => None,
            };
            let list = c.list(state)?;
            if ctx.json {
                ctx.print_json(&json!({"sessions": list}))?;
            } else if list.is_empty() {
                println!("no sessions");
            } else {
                let rows: Vec<Vec<String>> = list.iter().map(session_row).collect();
                output::table(
                    &mut std::io::stdout().lock(),
                    &["ID", "STATE", "DRIVER", "SEQ", "STARTED", "NAME", "WORKDIR"],
                    &rows,
                )?;
            }
        }
        SessionsVerb::Get { id } => {
            let v = c.call("session.get", json!({"session_id": id}))?;
            if ctx.json {
                ctx.print_json(&v)?;
            } else {
                let s: SessionInfo = serde_json::from_value(v.clone())?;
                let mut out = std::io::stdout().lock();
                writeln!(out, "id: {}", s.id)?;
                if let Some(n) = &s.name {
                    writeln!(out, "name: {n}")?;
                }
                writeln!(out, "state: {}", s.state)?;
                writeln!(out, "driver: {}", s.driver)?;
                if let Some(cmd) = &s.command {
                    writeln!(out, "command: {}", cmd.join(" "))?;
                }
                writeln!(out, "workdir: {}", s.workdir.display())?;
                writeln!(
                    out,
                    "started: {} ({})",
                    s.started_at,
                    output::ago(&s.started_at)
                )?;
                writeln!(
                    out,
                    "records: {} (last seq {}, epoch {})",
                    s.record_count.unwrap_or(s.last_seq),
                    s.last_seq,
                    s.epoch
                )?;
                if let Some(r) = v.get("reload").filter(|r| !r.is_null()) {
                    if let Some(rep) = r.get("repaired").filter(|x| !x.is_null()) {
                        writeln!(
                            out,
                            "repaired at restart: dropped {} bytes after seq {}",
                            rep["dropped_bytes"], rep["last_good_seq"]
                        )?;
                    }
                    if let Some(dmg) = r.get("damage").filter(|x| !x.is_null()) {
                        writeln!(
                            out,
                            "damage: line {}: {}",
                            dmg["line"],
                            dmg["reason"].as_str().unwrap_or_default()
                        )?;
                    }
                }
            }
        }
        SessionsVerb::Start {
            workdir,
            driver,
            name,
            env,
            command,
        } => {
            let workdir = match workdir {
                Some(w) => w,
                #[allow(clippy::disallowed_methods)]
                // the CLI's default workdir is where the user is
                None => std::env::current_dir()
                    .context("cannot read the current directory; pass --workdir")?,
            };
            let workdir = std::path::absolute(&workdir)
                .with_context(|| format!("cannot resolve {}", workdir.display()))?;
            let mut opts = StartOptions::new(workdir);
            if let Some(n) = name {
                opts = opts.name(n);
            }
            for kv in env {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--env takes KEY=VALUE, got {kv:?}"))?;
                opts = opts.env(k, v);
            }
            let driver = driver.or_else(|| (!command.is_empty()).then(|| "exec".to_owned()));
            if let Some(d) = driver {
                opts = opts.driver(d);
            }
            if !command.is_empty() {
                opts = opts.command(command);
            }
            let r = c.start(opts)?;
            if ctx.json {
                ctx.print_json(&r)?;
            } else {
                println!("{}", r.session_id);
            }
        }
        SessionsVerb::Send { id, text } => {
            let seq = c.send(&id, &text.join(" "))?;
            if ctx.json {
                ctx.print_json(&json!({"accepted": true, "seq": seq}))?;
            } else {
                println!("sent (seq {seq})");
            }
        }
        SessionsVerb::Pause { id } => {
            let at = c.pause(&id)?;
            done(ctx, json!({"paused_at": at}), &format!("paused {id}"))?;
        }
        SessionsVerb::Resume { id } => {
            let at = c.resume(&id)?;
            done(ctx, json!({"resumed_at": at}), &format!("resumed {id}"))?;
        }
        SessionsVerb::Cancel { id, reason } => {
            let at = c.cancel(&id, reason.as_deref())?;
            done(ctx, json!({"ended_at": at}), &format!("cancelled {id}"))?;
        }
        SessionsVerb::Delete { id } => {
            let at = c.delete(&id)?;
            done(ctx, json!({"deleted_at": at}), &format!("deleted {id}"))?;
        }
        SessionsVerb::Follow { id, since } => return follow(ctx, &c, &id, since.unwrap_or(0)),
    }
    Ok(ExitCode::SUCCESS)
}

fn done(ctx: &Ctx, v: Value, text: &str) -> anyhow::Result<()> {
    if ctx.json {
        ctx.print_json(&v)
    } else {
        println!("{text}");
        Ok(())
    }
}

/// Prints a session's records as they come; returns when the session has ended.
fn follow(ctx: &Ctx, c: &BlockingClient, id: &str, since: u64) -> anyhow::Result<ExitCode> {
    let sub = c.subscribe(id, Some(since), None)?;
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    loop {
        let Some(item) = sub.next_timeout(Duration::from_secs(3600))? else {
            continue;
        };
        match item {
            SubEvent::Record(ev) => {
                if ctx.json {
                    serde_json::to_writer(&mut out, &ev)?;
                    writeln!(out)?;
                    out.flush()?;
                    if ev.kind == "session.ended" {
                        break;
                    }
                } else if output::render_event(&mut out, &mut err, &ev)? {
                    break;
                }
            }
            SubEvent::Daemon(n) => {
                if !ctx.json {
                    writeln!(err, "r1: {}", n.kind)?;
                }
            }
            SubEvent::Reset(r) => {
                if !ctx.json {
                    writeln!(
                        err,
                        "r1: the journal was repaired; continuing after seq {} in epoch {}",
                        r.last_good_seq, r.epoch
                    )?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `r1 ctl journal`: reads the file directly, so it works with no daemon.
fn journal(ctx: &Ctx, args: JournalArgs) -> anyhow::Result<ExitCode> {
    let path = journal_path(&ctx.home, &args.target)?;
    let mut reader = r1_core::journal::Reader::open(&path)?;
    if args.verify {
        let report = reader.verify()?;
        if ctx.json {
            ctx.print_json(&report)?;
        } else if let Some(d) = &report.damage {
            println!("damaged: line {} (byte {}): {}", d.line, d.offset, d.reason);
            println!(
                "{} good records before it, last seq {}",
                report.records, report.last_seq
            );
        } else {
            let pending = if report.pending_bytes > 0 {
                format!(
                    ", {} bytes of an unfinished last line",
                    report.pending_bytes
                )
            } else {
                String::new()
            };
            println!(
                "ok: {} records, last seq {}{pending}",
                report.records, report.last_seq
            );
        }
        return Ok(if report.damage.is_some() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        });
    }
    if let Some(since) = args.since {
        reader.seek(since)?;
    }
    let mut out = std::io::stdout().lock();
    loop {
        let next = if args.follow {
            reader.next_wait(Duration::from_secs(3600))?
        } else {
            reader.next_record()?
        };
        match next {
            Some(rec) => {
                if args.since.is_some_and(|s| rec.seq <= s) {
                    continue;
                }
                writeln!(out, "{}", rec.line())?;
                if args.follow {
                    out.flush()?;
                }
            }
            None if args.follow => continue,
            None => break,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A session id names `sessions/<id>/journal.ndjson` in the home; anything else is
/// a path.
fn journal_path(home: &Home, target: &str) -> anyhow::Result<PathBuf> {
    if target.starts_with("sess_") && !target.contains('/') {
        r1_core::session::hub::validate_session_id(target)?;
        let p = home.journal_path(target);
        if !p.exists() {
            bail!("no journal for {target} in {}", home.root().display());
        }
        return Ok(p);
    }
    let p = Path::new(target);
    if !p.exists() {
        bail!("{target} is neither a session id nor an existing journal file");
    }
    Ok(p.to_path_buf())
}
