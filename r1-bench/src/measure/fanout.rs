//! 7: fan-out — one session's events, written by a real driver through the daemon
//! (`burst N`: N `bench.tick` records as fast as the hub takes them), measured at
//! 1, 10 and 100 subscribers over the unix socket and over WebSocket. The floor
//! is a server that writes the very bytes a subscriber received (captured in the
//! first run) to the same number of raw connections.

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio_tungstenite::tungstenite::Message;

use super::rpc::path_str;
use super::{Ctx, client_rt, workdir};
use crate::client::{self, Rpc, count_lines};
use crate::proc::{DaemonProc, FloorProc};
use crate::report::Row;

/// One run: how long each subscriber took to get every event (from the send).
struct Run {
    per_sub: Vec<Duration>,
    events: u64,
}

impl Run {
    fn aggregate(&self) -> f64 {
        let slowest = self.per_sub.iter().max().copied().unwrap_or_default();
        (self.events * self.per_sub.len() as u64) as f64 / slowest.as_secs_f64()
    }
}

/// Records per `emit_batch` in row 7g.
const BATCH: usize = 64;

/// 7.
pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let plan: Vec<(usize, u64)> = ctx.size(
        vec![(1, 200_000), (10, 50_000), (100, 10_000)],
        vec![(1, 2_000), (10, 500), (100, 100)],
    );
    let dir = ctx.fresh_dir("m7")?;
    let daemon = DaemonProc::bench_daemon(&ctx.bench, &dir.join("home"), &ctx.sock("m7"), &[])?;
    let work = workdir(ctx)?;
    let sock = daemon.sock.clone();
    let port = daemon.port;
    let token = daemon.token.clone();
    let rt = client_rt()?;
    let mut rows = Vec::new();
    rt.block_on(async {
        let mut ctl = Rpc::connect(&sock).await?;
        let r = ctl
            .call("session.start", json!({"workdir": work, "driver": "burst"}))
            .await?;
        let id = r["session_id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no session_id in {r}"))?
            .to_owned();
        // Warm up (and capture the bytes one subscriber receives, for the floor).
        let (_, captured) = unix_run(&sock, &mut ctl, &id, (1, plan[0].1, 1), true).await?;
        let captured = captured.unwrap_or_default();
        let mut lines: Vec<&[u8]> = captured.split_inclusive(|b| *b == b'\n').collect();
        // The first line is the subscribe answer; the rest are `$/event`s.
        lines.remove(0);

        // Unix socket.
        for (i, &(n, m)) in plan.iter().enumerate() {
            let got = unix_run(&sock, &mut ctl, &id, (n, m, 1), false).await?.0;
            let file = dir.join(format!("floor-{n}.ndjson"));
            std::fs::write(&file, floor_bytes(&lines, got.events)?)?;
            let fsock = ctx.sock(&format!("m7-floor-{n}"));
            let floor = floor_unix(ctx, &fsock, &file, n, got.events).await?;
            rows.push(row(
                ["7a", "7b", "7c"][i],
                "unix socket",
                n,
                &got,
                &floor,
                "raw unix socket writes of the same bytes",
            ));
        }

        // The same producer emitting through `Emitter::emit_batch`.
        let (n, m) = plan[0];
        let got = unix_run(&sock, &mut ctl, &id, (n, m, BATCH), false).await?.0;
        let v = got.aggregate();
        let one_by_one = rows.first().and_then(|r| r.value).unwrap_or(f64::NAN);
        rows.push(
            Row::new(
                "7g",
                &format!("fan-out to 1 subscriber, unix socket, driver emitting {BATCH} records per `emit_batch`"),
                v,
                "events/s",
            )
            .note(format!(
                "{} events; {:.2}× 7a (one `emit` per record): one write(2) per batch instead of one per record",
                got.events,
                v / one_by_one
            )),
        );

        // WebSocket.
        let ws_ok = match port {
            None => Err(anyhow::anyhow!("the daemon has no loopback port")),
            Some(p) => ws_probe(p, &token, &id).await,
        };
        for (i, &(n, m)) in plan.iter().enumerate() {
            let rid = ["7d", "7e", "7f"][i];
            let name = format!(
                "fan-out to {n} subscriber{}, WebSocket",
                if n == 1 { "" } else { "s" }
            );
            let target = if n == 1 { "≥ 300k events/s" } else { "" };
            let (Ok(()), Some(p)) = (&ws_ok, port) else {
                let why = ws_ok
                    .as_ref()
                    .err()
                    .map_or_else(String::new, |e| format!("{e:#}"));
                rows.push(Row::not_measured(
                    rid,
                    &name,
                    target,
                    &format!(
                        "the loopback WebSocket server does not answer /v1/ws in this build ({why})"
                    ),
                ));
                continue;
            };
            let got = ws_run(p, &token, &mut ctl, &id, n, m).await?;
            let file = dir.join(format!("wsfloor-{n}.ndjson"));
            std::fs::write(&file, floor_bytes(&lines, got.events)?)?;
            let floor = floor_ws(ctx, &file, n, got.events).await?;
            rows.push(row(
                rid,
                "WebSocket",
                n,
                &got,
                &floor,
                "tungstenite writes of the same messages",
            ));
        }
        ctl.call("session.cancel", json!({"session_id": id}))
            .await?;
        Ok::<_, anyhow::Error>(())
    })?;
    daemon.stop()?;
    rows.sort_by(|x, y| x.id.cmp(&y.id));
    Ok(rows)
}

/// The floor's stream for `events` events: the first captured events, ending with the
/// captured `tool.end` (as the real stream does).
fn floor_bytes(lines: &[&[u8]], events: u64) -> anyhow::Result<Vec<u8>> {
    let want = usize::try_from(events)?;
    anyhow::ensure!(
        want >= 1 && lines.len() >= want,
        "captured {} events, need {want}",
        lines.len()
    );
    let mut out = lines[..want - 1].concat();
    out.extend_from_slice(lines[lines.len() - 1]);
    Ok(out)
}

fn row(id: &str, transport: &str, n: usize, got: &Run, floor: &Run, floor_name: &str) -> Row {
    if n == 1 {
        let v = got.aggregate();
        let r = Row::new(
            id,
            &format!("fan-out to 1 subscriber, {transport}"),
            v,
            "events/s",
        )
        .floor(floor_name, floor.aggregate());
        r.target("≥ 300k events/s", v >= 300_000.0)
            .note(format!("{} events", got.events))
    } else {
        let slowest = got
            .per_sub
            .iter()
            .max()
            .copied()
            .unwrap_or_default()
            .as_secs_f64();
        let fastest = got
            .per_sub
            .iter()
            .min()
            .copied()
            .unwrap_or_default()
            .as_secs_f64();
        Row::new(
            id,
            &format!("fan-out to {n} subscribers, {transport}, events delivered/s (all)"),
            got.aggregate(),
            "events/s",
        )
        .floor(floor_name, floor.aggregate())
        .note(format!(
            "{} events each; per subscriber {:.0}k–{:.0}k events/s",
            got.events,
            got.events as f64 / slowest / 1e3,
            got.events as f64 / fastest / 1e3
        ))
    }
}

/// `n` unix subscribers, then `burst m` (emitted `batch` records at a time); each
/// counts `m + 2` events (the `user.input`, the ticks, the `tool.end`).
async fn unix_run(
    sock: &Path,
    ctl: &mut Rpc,
    id: &str,
    (n, m, batch): (usize, u64, usize),
    capture: bool,
) -> anyhow::Result<(Run, Option<Vec<u8>>)> {
    let events = m + 2;
    let mut readers = Vec::new();
    for _ in 0..n {
        let mut c = Rpc::connect(sock).await?;
        c.call("session.subscribe", json!({"session_id": id}))
            .await?;
        readers.push(c.into_parts());
    }
    let local = tokio::task::LocalSet::new();
    let t0 = Instant::now();
    let (per_sub, cap) = local
        .run_until(async {
            let mut tasks = Vec::new();
            for (i, (mut rd, wr)) in readers.into_iter().enumerate() {
                let keep = capture && i == 0;
                let progress = Rc::new(Cell::new(0u64));
                let seen = Rc::clone(&progress);
                tasks.push((
                    seen,
                    tokio::task::spawn_local(async move {
                        let mut bytes = Vec::new();
                        if keep {
                            // The floor replays what follows the subscribe answer; add a
                            // placeholder first line so the split below stays uniform.
                            bytes.extend_from_slice(b"{}\n");
                        }
                        let last =
                            count_lines(&mut rd, events, keep.then_some(&mut bytes), &progress)
                                .await?;
                        let took = t0.elapsed();
                        anyhow::ensure!(
                            String::from_utf8_lossy(&last).contains("\"tool.end\""),
                            "the last event is not tool.end: {}",
                            String::from_utf8_lossy(&last)
                        );
                        drop(wr);
                        Ok::<_, anyhow::Error>((took, keep.then_some(bytes)))
                    }),
                ));
            }
            ctl.call(
                "session.send",
                json!({"session_id": id, "text": format!("burst {m} 100 {batch}")}),
            )
            .await?;
            let mut per_sub = Vec::new();
            let mut cap = None;
            for (seen, t) in tasks {
                let (took, bytes) = wait_sub(t, &seen, events).await?;
                per_sub.push(took);
                if bytes.is_some() {
                    cap = bytes;
                }
            }
            Ok::<_, anyhow::Error>((per_sub, cap))
        })
        .await?;
    Ok((Run { per_sub, events }, cap))
}

/// Waits for a subscriber task; on a timeout says how far it got.
async fn wait_sub<T>(
    t: tokio::task::JoinHandle<anyhow::Result<T>>,
    seen: &Cell<u64>,
    events: u64,
) -> anyhow::Result<T> {
    match tokio::time::timeout(Duration::from_secs(120), t).await {
        Ok(r) => r?,
        Err(_) => anyhow::bail!(
            "a subscriber got {} of {events} events in 120 s",
            seen.get()
        ),
    }
}

async fn floor_unix(
    ctx: &Ctx,
    sock: &Path,
    file: &Path,
    n: usize,
    events: u64,
) -> anyhow::Result<Run> {
    let _f = FloorProc::start(
        &ctx.bench,
        &[
            "fanout",
            "--socket",
            path_str(sock)?,
            "--file",
            path_str(file)?,
        ],
    )?;
    let mut subs = Vec::new();
    for _ in 0..n {
        let s = UnixStream::connect(sock).await?;
        let (r, mut w) = s.into_split();
        w.write_all(b"sub\n").await?;
        let mut r = BufReader::with_capacity(64 * 1024, r);
        let mut ok = String::new();
        r.read_line(&mut ok).await?;
        anyhow::ensure!(ok == "ok\n", "floor said {ok:?}");
        subs.push((r, w));
    }
    let mut go = UnixStream::connect(sock).await?;
    let local = tokio::task::LocalSet::new();
    let t0 = Instant::now();
    let per_sub = local
        .run_until(async {
            let mut tasks = Vec::new();
            for (mut r, w) in subs {
                let progress = Rc::new(Cell::new(0u64));
                let seen = Rc::clone(&progress);
                tasks.push((
                    seen,
                    tokio::task::spawn_local(async move {
                        count_lines(&mut r, events, None, &progress).await?;
                        drop(w);
                        Ok::<_, anyhow::Error>(t0.elapsed())
                    }),
                ));
            }
            go.write_all(format!("go {n}\n").as_bytes()).await?;
            let mut per_sub = Vec::new();
            for (seen, t) in tasks {
                per_sub.push(wait_sub(t, &seen, events).await?);
            }
            Ok::<_, anyhow::Error>(per_sub)
        })
        .await?;
    Ok(Run { per_sub, events })
}

async fn ws_probe(port: u16, token: &str, id: &str) -> anyhow::Result<()> {
    let mut ws = tokio::time::timeout(
        Duration::from_secs(5),
        client::ws_connect(port, "/v1/ws", Some(token)),
    )
    .await??;
    tokio::time::timeout(
        Duration::from_secs(5),
        client::ws_call(&mut ws, 1, "session.get", json!({"session_id": id})),
    )
    .await??;
    Ok(())
}

async fn ws_run(
    port: u16,
    token: &str,
    ctl: &mut Rpc,
    id: &str,
    n: usize,
    m: u64,
) -> anyhow::Result<Run> {
    let events = m + 2;
    let mut subs = Vec::new();
    for _ in 0..n {
        let mut ws = client::ws_connect(port, "/v1/ws", Some(token)).await?;
        client::ws_call(&mut ws, 1, "session.subscribe", json!({"session_id": id})).await?;
        subs.push(ws);
    }
    let local = tokio::task::LocalSet::new();
    let t0 = Instant::now();
    let per_sub = local
        .run_until(async {
            let mut tasks = Vec::new();
            for ws in subs {
                tasks.push(tokio::task::spawn_local(count_ws(ws, events, t0)));
            }
            ctl.call(
                "session.send",
                json!({"session_id": id, "text": format!("burst {m}")}),
            )
            .await?;
            let mut per_sub = Vec::new();
            for t in tasks {
                per_sub.push(tokio::time::timeout(Duration::from_secs(300), t).await???);
            }
            Ok::<_, anyhow::Error>(per_sub)
        })
        .await?;
    Ok(Run { per_sub, events })
}

async fn count_ws(mut ws: client::Ws, events: u64, t0: Instant) -> anyhow::Result<Duration> {
    let mut seen = 0u64;
    let mut last = String::new();
    let mut first = String::new();
    while seen < events {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                seen += 1;
                if seen == 1 {
                    first = t.chars().take(160).collect();
                }
                if seen == events {
                    last = t.to_string();
                }
            }
            Some(Ok(Message::Close(c))) => anyhow::bail!("closed after {seen} events: {c:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("ended after {seen} events"),
        }
    }
    let took = t0.elapsed();
    anyhow::ensure!(
        last.contains("\"tool.end\""),
        "the last of {events} WebSocket messages is not tool.end: {last} (the first was {first})"
    );
    let _ = ws.close(None).await;
    Ok(took)
}

async fn floor_ws(ctx: &Ctx, file: &Path, n: usize, events: u64) -> anyhow::Result<Run> {
    let f = FloorProc::start(&ctx.bench, &["ws-fanout", "--file", path_str(file)?])?;
    let port = f.port()?;
    let mut subs = Vec::new();
    for _ in 0..n {
        let mut ws = client::ws_connect(port, "/", None).await?;
        let ok = client::ws_round_trip(&mut ws, "sub").await?;
        anyhow::ensure!(ok == "ok", "floor said {ok:?}");
        subs.push(ws);
    }
    let mut go = client::ws_connect(port, "/", None).await?;
    let local = tokio::task::LocalSet::new();
    let t0 = Instant::now();
    let per_sub = local
        .run_until(async {
            let mut tasks = Vec::new();
            for ws in subs {
                tasks.push(tokio::task::spawn_local(count_ws(ws, events, t0)));
            }
            go.send(Message::text(format!("go {n}"))).await?;
            let mut per_sub = Vec::new();
            for t in tasks {
                per_sub.push(tokio::time::timeout(Duration::from_secs(300), t).await???);
            }
            Ok::<_, anyhow::Error>(per_sub)
        })
        .await?;
    drop(f);
    Ok(Run { per_sub, events })
}
