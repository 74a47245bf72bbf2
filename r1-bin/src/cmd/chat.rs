//! `r1 chat`: attach to (or start) a session, send each line typed, stream its
//! output with exit statuses; Ctrl-D detaches and the session goes on.

use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use r1_core::client::{BlockingClient, DialOptions, StartOptions, SubEvent};
use r1_core::paths::Home;
use r1_core::session::state::SessionState;
use serde_json::Value;

use crate::cli::ChatArgs;
use crate::output;

/// After stdin ends, how long a session without lanes (e.g. `exec`) must stay quiet
/// before chat detaches.
const QUIET_AFTER_EOF: Duration = Duration::from_millis(500);

enum FromStdin {
    Sent(u64),
    Failed(String),
    Eof,
}

/// Runs `r1 chat`.
pub fn run(home: Option<PathBuf>, args: ChatArgs) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(home.as_deref())?;
    let opts = DialOptions::new()
        .home(home.root())
        .spawn(!args.no_spawn)
        .client_name("r1 chat");
    let client = BlockingClient::dial(opts)?;
    let interactive = std::io::stdin().is_terminal();

    let (id, driver) = match args.session {
        Some(id) => {
            let s = client.get(&id)?;
            match s.state {
                SessionState::Ended | SessionState::Damaged => {
                    bail!("session {id} is {}; it takes no more input", s.state)
                }
                SessionState::PausedReattachable | SessionState::Paused => {
                    client.resume(&id)?;
                    eprintln!("r1: resumed {id}");
                }
                SessionState::Running => {}
            }
            (id, s.driver)
        }
        None => {
            let workdir = match args.workdir {
                Some(w) => w,
                #[allow(clippy::disallowed_methods)]
                // the CLI's default workdir is where the user is
                None => std::env::current_dir()
                    .context("cannot read the current directory; pass --workdir")?,
            };
            let workdir = std::path::absolute(&workdir)
                .with_context(|| format!("cannot resolve {}", workdir.display()))?;
            let r = client.start(StartOptions::new(workdir))?;
            (r.session_id, r.driver)
        }
    };
    if interactive {
        eprintln!(
            "r1: attached to {id}; type commands, Ctrl-D detaches (the session keeps running)"
        );
    }

    // Live only: an attach shows what happens from now on.
    let sub = client.subscribe(&id, None, None)?;
    let (tx, rx) = mpsc::channel::<FromStdin>();
    let sender = client.clone();
    let sid = id.clone();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            let msg = match sender.send(&sid, &line) {
                Ok(seq) => FromStdin::Sent(seq),
                Err(e) => FromStdin::Failed(e.to_string()),
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
        let _ = tx.send(FromStdin::Eof);
    });

    let uses_lanes = driver != "exec";
    let mut open_lanes: BTreeSet<u64> = BTreeSet::new();
    // A command can finish before its send's answer reaches this loop.
    let mut finished_lanes: BTreeSet<u64> = BTreeSet::new();
    let mut eof = false;
    let mut last_activity = Instant::now();
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    loop {
        while let Ok(msg) = rx.try_recv() {
            match msg {
                FromStdin::Sent(seq) => {
                    if uses_lanes && !finished_lanes.contains(&seq) {
                        open_lanes.insert(seq);
                    }
                }
                FromStdin::Failed(e) => writeln!(err, "r1: {e}")?,
                FromStdin::Eof => eof = true,
            }
        }
        if eof
            && open_lanes.is_empty()
            && (uses_lanes || last_activity.elapsed() >= QUIET_AFTER_EOF)
        {
            break;
        }
        match sub.next_timeout(Duration::from_millis(50)) {
            Ok(Some(SubEvent::Record(ev))) => {
                last_activity = Instant::now();
                if ev.kind == "tool.end"
                    && let Some(lane) = ev.data.get("lane_id").and_then(Value::as_u64)
                {
                    open_lanes.remove(&lane);
                    finished_lanes.insert(lane);
                }
                if output::render_event(&mut out, &mut err, &ev)? {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            Ok(Some(SubEvent::Daemon(n))) => writeln!(err, "r1: {}", n.kind)?,
            Ok(Some(SubEvent::Reset(_))) | Ok(None) => {}
            Err(e) if e.kind() == r1_core::ErrorKind::Closed => break,
            Err(e) => return Err(e.into()),
        }
    }
    if interactive {
        eprintln!("r1: detached; {id} keeps running (r1 chat --session {id} to come back)");
    }
    Ok(ExitCode::SUCCESS)
}
