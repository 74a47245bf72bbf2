//! 10: scale — 1,000 live sessions and 1,000 WebSocket subscribers on one `r1 serve`
//! process: its RSS, p99 `daemon.info` latency under that load (a probe on its own
//! connection and thread while commands run in the sessions and their events reach
//! the subscribers), and its open descriptors before, during and after everyone leaves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use tokio::io::AsyncReadExt;

use super::{Ctx, client_rt, workdir};
use crate::client::{self, BlockingLine, Rpc};
use crate::proc::DaemonProc;
use crate::report::{Row, human};
use crate::stats::Samples;

const INFO: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"daemon.info"}"#;

// A thousand of these live at once; boxing the WebSocket keeps each slot small.
enum Sub {
    Ws(Box<client::Ws>),
    Unix(Rpc),
}

/// 10.
pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let n: usize = ctx.size(1000, 20);
    let probes: usize = ctx.size(3000, 200);
    let dir = ctx.fresh_dir("m10")?;
    let daemon = DaemonProc::r1_serve(&ctx.r1, &dir.join("home"), &ctx.sock("m10"), &[])?;
    let work = workdir(ctx)?;
    let sock = daemon.sock.clone();
    let (port, token) = (daemon.port, daemon.token.clone());
    std::thread::sleep(Duration::from_millis(200));
    let rss0 = daemon.rss_kb()?;
    let fds0 = daemon.fd_count()?;
    let rt = client_rt()?;

    // Sessions.
    let (mut ctl, ids, start_s) = rt.block_on(async {
        let mut ctl = Rpc::connect(&sock).await?;
        let t = Instant::now();
        let mut ids = Vec::new();
        for _ in 0..n {
            let r = ctl.call("session.start", json!({"workdir": work})).await?;
            ids.push(
                r["session_id"]
                    .as_str()
                    .ok_or_else(|| anyhow::anyhow!("no session_id in {r}"))?
                    .to_owned(),
            );
        }
        Ok::<_, anyhow::Error>((ctl, ids, t.elapsed().as_secs_f64()))
    })?;
    std::thread::sleep(Duration::from_millis(200));
    let rss_idle = daemon.rss_kb()?;
    let fds_idle = daemon.fd_count()?;

    // Subscribers: WebSocket when the daemon serves it, else the unix socket.
    let ws_why: Option<String> = rt.block_on(async {
        let Some(p) = port else {
            return Some("no loopback port".to_owned());
        };
        let probe = async {
            let mut ws = client::ws_connect(p, "/v1/ws", Some(&token)).await?;
            client::ws_call(&mut ws, 1, "daemon.hello", json!({"protocol_version": 1})).await?;
            Ok::<_, anyhow::Error>(())
        };
        match tokio::time::timeout(Duration::from_secs(5), probe).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(_) => Some("timed out".to_owned()),
        }
    });
    let subs: Vec<Sub> = rt.block_on(async {
        let mut subs = Vec::new();
        for id in &ids {
            let params = json!({"session_id": id});
            match (&ws_why, port) {
                (None, Some(p)) => {
                    let mut ws = client::ws_connect(p, "/v1/ws", Some(&token)).await?;
                    client::ws_call(&mut ws, 1, "session.subscribe", params).await?;
                    subs.push(Sub::Ws(Box::new(ws)));
                }
                _ => {
                    let mut c = Rpc::connect(&sock).await?;
                    c.call("session.subscribe", params).await?;
                    subs.push(Sub::Unix(c));
                }
            }
        }
        Ok::<_, anyhow::Error>(subs)
    })?;
    std::thread::sleep(Duration::from_millis(200));
    let rss_loaded = daemon.rss_kb()?;
    let fds_loaded = daemon.fd_count()?;

    // Latency under load: a probe thread, while the runtime thread keeps commands
    // running in the sessions and reads every subscriber's events.
    let done = Arc::new(AtomicBool::new(false));
    let probe_sock = sock.clone();
    let probe_done = Arc::clone(&done);
    let probe = std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
        let mut c = BlockingLine::connect(&probe_sock)?;
        let mut out = Vec::with_capacity(probes);
        for _ in 0..100 {
            c.round_trip(INFO)?;
        }
        for _ in 0..probes {
            let t = Instant::now();
            c.round_trip(INFO)?;
            out.push(t.elapsed());
            std::thread::sleep(Duration::from_micros(500));
        }
        probe_done.store(true, Ordering::SeqCst);
        Ok(out)
    });
    let sent = rt.block_on(async {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let mut readers = Vec::new();
                for s in subs {
                    readers.push(tokio::task::spawn_local(drain(s)));
                }
                let mut sent = 0usize;
                let mut tick = tokio::time::interval(Duration::from_millis(25));
                while !done.load(Ordering::SeqCst) {
                    tick.tick().await;
                    let id = &ids[sent % ids.len()];
                    ctl.call(
                        "session.send",
                        json!({"session_id": id, "text": "echo load"}),
                    )
                    .await?;
                    sent += 1;
                }
                for r in readers {
                    r.abort();
                }
                Ok::<_, anyhow::Error>(sent)
            })
            .await
    })?;
    let lat = probe
        .join()
        .map_err(|_| anyhow::anyhow!("probe thread panicked"))??;
    let lat = Samples::from_durations(&lat);
    let fds_busy = daemon.fd_count()?;

    // Everyone leaves: subscribers are gone (their tasks were aborted and dropped);
    // delete every session, then close the control connection.
    let fds_after_subs = {
        std::thread::sleep(Duration::from_millis(300));
        daemon.fd_count()?
    };
    let rss_subs_gone = settled_rss(&daemon)?;
    rt.block_on(async {
        for id in &ids {
            ctl.call("session.delete", json!({"session_id": id}))
                .await?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    drop(ctl);
    let mut fds_after = daemon.fd_count()?;
    for _ in 0..50 {
        if fds_after <= fds0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        fds_after = daemon.fd_count()?;
    }
    let rss_after = settled_rss(&daemon)?;
    daemon.stop()?;

    let subs_kind = if ws_why.is_none() {
        "WebSocket"
    } else {
        "unix-socket"
    };
    let budget_kb = 30 * 1024 + 20 * n as u64;
    let mut rows = vec![
        Row::new(
            "10a",
            &format!("RSS with {n} idle sessions"),
            rss_idle as f64 / 1024.0,
            "MiB",
        )
        .target(
            &format!(
                "≤ 30 MiB + 20 KiB × {n} = {:.1} MiB",
                budget_kb as f64 / 1024.0
            ),
            rss_idle <= budget_kb,
        )
        .note(format!(
            "fresh daemon {:.1} MiB; {:.1} KiB per session; {n} session.start in {start_s:.1} s",
            rss0 as f64 / 1024.0,
            (rss_idle.saturating_sub(rss0)) as f64 / n as f64
        )),
    ];
    let loaded = Row::new(
        "10b",
        &format!("RSS with {n} sessions and {n} {subs_kind} subscribers"),
        rss_loaded as f64 / 1024.0,
        "MiB",
    )
    .target(
        &format!("≤ {:.1} MiB", budget_kb as f64 / 1024.0),
        rss_loaded <= budget_kb,
    )
    .note(format!(
        "{:.1} KiB per subscriber; subscribers gone {:.1} MiB; after everyone left {:.1} MiB",
        (rss_loaded.saturating_sub(rss_idle)) as f64 / n as f64,
        rss_subs_gone as f64 / 1024.0,
        rss_after as f64 / 1024.0
    ));
    rows.push(loaded);
    rows.push(
        Row::new(
            "10c",
            "p99 `daemon.info` under that load",
            lat.p99() / 1000.0,
            "ms",
        )
        .target("≤ 5 ms", lat.p99() <= 5000.0)
        .note(format!(
            "{} probes, p50 {} µs; {sent} `session.send` (echo) ran meanwhile",
            lat.len(),
            human(lat.p50())
        )),
    );
    rows.push(
        Row::new("10d", "open fds after everyone left", fds_after as f64, "fds")
            .target(&format!("= baseline ({fds0})"), fds_after <= fds0)
            .note(format!(
                "idle sessions {fds_idle}, with subscribers {fds_loaded}, under load {fds_busy}, subscribers gone {fds_after_subs}"
            )),
    );
    if let Some(why) = ws_why {
        rows.push(Row::not_measured(
            "10e",
            &format!("{n} WebSocket subscribers"),
            "",
            &format!("the loopback WebSocket server does not answer /v1/ws in this build ({why}); 10b used unix-socket subscribers"),
        ));
    }
    Ok(rows)
}

/// The daemon's RSS once it stops falling: it hands freed memory back shortly after
/// connections leave (r1-core `server::memory`), not at the instant they do.
fn settled_rss(daemon: &DaemonProc) -> anyhow::Result<u64> {
    const POLL: Duration = Duration::from_millis(250);
    // Unchanged for this many polls in a row: settled.
    const STEADY: u32 = 4;
    let t = Instant::now();
    let mut last = daemon.rss_kb()?;
    let mut steady = 0;
    while steady < STEADY && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(POLL);
        let now = daemon.rss_kb()?;
        steady = if now < last { 0 } else { steady + 1 };
        last = now;
    }
    Ok(last)
}

/// Reads and discards a subscriber's events until aborted.
async fn drain(s: Sub) {
    match s {
        Sub::Ws(mut ws) => while let Some(Ok(_)) = ws.next().await {},
        Sub::Unix(c) => {
            let (mut rd, _wr) = c.into_parts();
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = rd.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        }
    }
}
