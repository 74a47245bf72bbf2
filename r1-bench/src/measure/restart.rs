//! 9: daemon restart with 1,000 sessions × 1,000 records — process start until
//! `daemon.json` is written, after a graceful stop and after a crash (SIGKILL),
//! beside reading every journal's bytes once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use r1_core::journal::{Journal, WriterOptions};
use r1_core::session::index::{self, IndexEntry};
use r1_core::session::state::SessionState;
use serde_json::json;

use super::{Ctx, files_named, workdir};
use crate::proc::DaemonProc;
use crate::report::Row;
use crate::stats::median_ms;

/// Writes a home holding `sessions` sessions of `records` records each, with the real
/// journal writer: lanes of `user.input`, `tool.start`, 7 × `session.delta`,
/// `tool.end`, every journal closed cleanly, and the sessions index (all `running`,
/// as after a daemon that was stopped with its sessions open).
pub fn generate_home(
    home: &Path,
    work: &Path,
    sessions: usize,
    records: u64,
) -> anyhow::Result<()> {
    r1_core::paths::ensure_private_dir(home)?;
    let sessions_dir = home.join("sessions");
    r1_core::paths::ensure_private_dir(&sessions_dir)?;
    let text = "y".repeat(70);
    let mut entries = Vec::new();
    for _ in 0..sessions {
        let id = format!("sess_{}", uuid::Uuid::new_v4().hyphenated());
        let dir = sessions_dir.join(&id);
        r1_core::paths::ensure_private_dir(&dir)?;
        let epoch = r1_core::journal::writer::new_epoch();
        let j = Journal::create(
            &dir.join("journal.ndjson"),
            &epoch,
            "session.created",
            &json!({"session_id": id, "workdir": work, "driver": "shell", "r1_version": r1_core::VERSION}),
            WriterOptions::default(),
        )?;
        let mut lane = 0u64;
        while j.last_seq() < records {
            let left = records - j.last_seq();
            if left >= 10 {
                lane = j
                    .append_deferred("user.input", &json!({"text": "make test"}))?
                    .seq;
                j.append_deferred(
                    "tool.start",
                    &json!({"tool": "sh", "args": {"cmd": "make test"}, "lane_id": lane, "pgid": null}),
                )?;
                for _ in 0..7 {
                    j.append_deferred("session.delta", &json!({"stream": "stdout", "text": text}))?;
                }
                j.append_deferred(
                    "tool.end",
                    &json!({"lane_id": lane, "ok": true, "exit_code": 0, "duration_ms": 12}),
                )?;
            } else {
                j.append_deferred("session.delta", &json!({"stream": "stdout", "text": text}))?;
            }
        }
        let _ = lane;
        j.close()?;
        entries.push(IndexEntry {
            id,
            name: None,
            workdir: work.to_path_buf(),
            driver: "shell".into(),
            command: None,
            env: BTreeMap::new(),
            started_at: r1_core::time_fmt::now_seconds(),
            state: SessionState::Running,
            last_seq: records,
            epoch,
            deleted_at: None,
        });
    }
    r1_core::paths::fsync_dir(&sessions_dir)?;
    index::store(&home.join("sessions-index.json"), &entries)?;
    Ok(())
}

/// Reads every journal under `home` once; returns the time and bytes.
fn read_all(home: &Path) -> anyhow::Result<(Duration, u64)> {
    let mut files: Vec<PathBuf> = Vec::new();
    files_named(&home.join("sessions"), "journal.ndjson", &mut files)?;
    let t = Instant::now();
    let mut bytes = 0u64;
    for f in &files {
        bytes += std::fs::read(f)?.len() as u64;
    }
    Ok((t.elapsed(), bytes))
}

/// 9.
pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let (sessions, records) = ctx.size((1000usize, 1000u64), (20, 200));
    let reps = ctx.size(3, 1);
    let dir = ctx.fresh_dir("m9")?;
    let home = dir.join("home");
    let work = workdir(ctx)?;
    let t = Instant::now();
    generate_home(&home, &work, sessions, records)?;
    let gen_s = t.elapsed().as_secs_f64();
    let sock = ctx.sock("m9");

    // The first start reattaches the sessions; from then on every start is a restart
    // of a home a daemon stopped gracefully.
    DaemonProc::r1_serve(&ctx.r1, &home, &sock, &[])?.stop()?;
    let mut graceful = Vec::new();
    let mut floor = Vec::new();
    let mut bytes = 0;
    for _ in 0..reps {
        let (f, b) = read_all(&home)?;
        floor.push(f);
        bytes = b;
        let d = DaemonProc::r1_serve(&ctx.r1, &home, &sock, &[])?;
        graceful.push(d.ready_after);
        d.stop()?;
    }
    // Crash: SIGKILL a running daemon, then start again (no clean markers: every
    // journal's tail is checked and scanned for unfinished work).
    let mut crash = Vec::new();
    for _ in 0..reps {
        DaemonProc::r1_serve(&ctx.r1, &home, &sock, &[])?.crash()?;
        let d = DaemonProc::r1_serve(&ctx.r1, &home, &sock, &[])?;
        crash.push(d.ready_after);
        d.stop()?;
    }
    let fl = median_ms(&floor);
    let g = median_ms(&graceful);
    let c = median_ms(&crash);
    let what = format!("{sessions} sessions × {records} records");
    Ok(vec![
        Row::new(
            "9a",
            &format!("restart after a graceful stop, {what}: start → `daemon.json`"),
            g,
            "ms",
        )
        .floor("read every journal once", fl)
        .target("≤ 1 s", g <= 1000.0)
        .note(format!(
            "median of {reps}; {:.0} MB of journals (generated in {gen_s:.1} s); page cache warm",
            bytes as f64 / 1e6
        )),
        Row::new(
            "9b",
            &format!("restart after SIGKILL, {what}: start → `daemon.json`"),
            c,
            "ms",
        )
        .floor("read every journal once", fl)
        .target("≤ 1 s", c <= 1000.0)
        .note(format!(
            "median of {reps}; no clean markers: tails checked, journals scanned"
        )),
    ])
}
