//! 1 and 2: `daemon.info` round trips on one persistent connection, alternating
//! blocks with an echo floor so both see the same machine state.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Ctx, client_rt};
use crate::client::{self, BlockingLine, HttpConn};
use crate::placement;
use crate::proc::{DaemonProc, FloorProc};
use crate::report::{Row, human};
use crate::stats::Samples;

const INFO: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"daemon.info"}"#;

/// (rounds, per round, warm-up)
fn sizes(ctx: &Ctx) -> (usize, usize, usize) {
    ctx.size((10, 2000, 2000), (2, 200, 100))
}

/// Where the client thread and both servers' threads run during one series.
#[derive(Clone, Copy)]
enum Placement {
    /// All on the first allowed CPU: wake-ups stay on one vCPU.
    OneCpu,
    /// The client on the first CPU, both servers on the others: every message
    /// wakes a thread on another vCPU.
    OtherCpus,
    /// Wherever the scheduler puts them.
    Unpinned,
}

/// 1: over the unix socket, against a raw NDJSON echo server, in three placements
/// (`crate::placement` says why placement decides this row).
pub fn unix(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let home = ctx.fresh_dir("m1")?.join("home");
    let daemon = DaemonProc::r1_serve(&ctx.r1, &home, &ctx.sock("m1"), &["--no-tcp"])?;
    let floor_sock = ctx.sock("m1-floor");
    let floor = FloorProc::start(
        &ctx.bench,
        &["unix-echo", "--socket", path_str(&floor_sock)?],
    )?;
    let mut r1 = BlockingLine::connect(&daemon.sock)?;
    let mut fl = BlockingLine::connect(&floor_sock)?;
    let first = String::from_utf8_lossy(r1.round_trip(INFO)?).into_owned();
    anyhow::ensure!(first.contains("\"result\""), "daemon.info failed: {first}");

    let all = placement::allowed_cpus()?;
    let _restore = RestoreAffinity(all.clone());
    let mut series = |at: Placement| -> anyhow::Result<(Samples, Samples)> {
        let (client, servers): (&[usize], &[usize]) = match at {
            Placement::OneCpu => (&all[..1], &all[..1]),
            Placement::OtherCpus => (&all[..1], &all[1..]),
            Placement::Unpinned => (&all, &all),
        };
        placement::pin_current_thread(client)?;
        placement::pin_process(daemon.pid, servers)?;
        placement::pin_process(floor.pid(), servers)?;
        round_trips(ctx, &mut r1, &mut fl)
    };
    let (one_r1, one_fl) = series(Placement::OneCpu)?;
    let other = if all.len() > 1 {
        Some(series(Placement::OtherCpus)?)
    } else {
        None
    };
    let (any_r1, any_fl) = series(Placement::Unpinned)?;
    drop(r1);
    daemon.stop()?;

    let p50_row = |id: &str, where_: &str, r1: &Samples, fl: &Samples| {
        let row = Row::new(
            id,
            &format!("daemon.info round trip, unix socket, p50, {where_}"),
            r1.p50(),
            "µs",
        )
        .floor("NDJSON echo (unix)", fl.p50());
        let ok = row.ratio.is_some_and(|r| r <= 2.0);
        row.target("p50 ≤ 2× floor", ok)
            .note(format!("{} calls on one connection", r1.len()))
    };
    let mut rows = vec![p50_row(
        "1a",
        "client and servers on one vCPU",
        &one_r1,
        &one_fl,
    )];
    let p99 = Row::new(
        "1b",
        "daemon.info round trip, unix socket, p99, scheduler's placement",
        any_r1.p99(),
        "µs",
    )
    .floor("NDJSON echo (unix)", any_fl.p99());
    let ok99 = any_r1.p99() <= 250.0;
    rows.push(p99.target("p99 ≤ 250 µs", ok99));
    rows.push(match &other {
        Some((r1, fl)) => p50_row("1c", "client and servers on different vCPUs", r1, fl),
        None => Row::not_measured(
            "1c",
            "daemon.info round trip, unix socket, p50, client and servers on different vCPUs",
            "p50 ≤ 2× floor",
            "this machine has one CPU",
        ),
    });
    rows.push(
        Row::new(
            "1d",
            "daemon.info round trip, unix socket, p50, scheduler's placement",
            any_r1.p50(),
            "µs",
        )
        .floor("NDJSON echo (unix)", any_fl.p50())
        .note(
            "no target: unpinned, r1 and its floor may land on different vCPU layouts, \
             and a wake-up on another vCPU costs tens of µs here (1a vs 1c)",
        ),
    );
    Ok(rows)
}

/// Puts the calling thread back on every CPU when a measurement ends, however it ends.
struct RestoreAffinity(Vec<usize>);

impl Drop for RestoreAffinity {
    fn drop(&mut self) {
        let _ = placement::pin_current_thread(&self.0);
    }
}

/// Round trips on both connections, alternating blocks so both see the same
/// machine state: (r1, floor).
fn round_trips(
    ctx: &Ctx,
    r1: &mut BlockingLine,
    fl: &mut BlockingLine,
) -> anyhow::Result<(Samples, Samples)> {
    let (rounds, per, warm) = sizes(ctx);
    for _ in 0..warm {
        r1.round_trip(INFO)?;
        fl.round_trip(INFO)?;
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for _ in 0..per {
            let t = Instant::now();
            fl.round_trip(INFO)?;
            b.push(t.elapsed());
        }
        for _ in 0..per {
            let t = Instant::now();
            r1.round_trip(INFO)?;
            a.push(t.elapsed());
        }
    }
    Ok((Samples::from_durations(&a), Samples::from_durations(&b)))
}

/// 2: over `POST /v1/rpc` (keep-alive) and WebSocket.
pub fn http_ws(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let home = ctx.fresh_dir("m2")?.join("home");
    let daemon = DaemonProc::r1_serve(&ctx.r1, &home, &ctx.sock("m2"), &[])?;
    let Some(port) = daemon.port else {
        anyhow::bail!("r1 serve wrote no port to daemon.json");
    };
    let http_floor = FloorProc::start(&ctx.bench, &["http-echo"])?;
    let ws_floor = FloorProc::start(&ctx.bench, &["ws-echo"])?;
    let (hport, wport) = (http_floor.port()?, ws_floor.port()?);
    let token = daemon.token.clone();
    let (rounds, per, warm) = sizes(ctx);
    let rt = client_rt()?;
    let rows = rt.block_on(async move {
        let mut rows = Vec::new();
        // HTTP.
        let probe = async {
            let mut c = HttpConn::connect(port, "/v1/rpc", Some(&token)).await?;
            let (st, body) =
                tokio::time::timeout(Duration::from_secs(5), c.post(Bytes::from_static(INFO)))
                    .await??;
            anyhow::ensure!(
                st == 200 && body.windows(8).any(|w| w == b"\"result\""),
                "HTTP {st}: {}",
                String::from_utf8_lossy(&body)
            );
            Ok::<_, anyhow::Error>(c)
        };
        let mut hf = HttpConn::connect(hport, "/v1/rpc", None).await?;
        let mut hfloor = Vec::new();
        match probe.await {
            Err(e) => {
                rows.push(Row::not_measured(
                    "2a",
                    "daemon.info round trip, POST /v1/rpc, p50",
                    "p50 ≤ 2× floor",
                    &format!(
                        "the loopback HTTP server does not answer /v1/rpc in this build ({e:#})"
                    ),
                ));
            }
            Ok(mut c) => {
                for _ in 0..warm {
                    c.post(Bytes::from_static(INFO)).await?;
                    hf.post(Bytes::from_static(INFO)).await?;
                }
                let mut a = Vec::new();
                for _ in 0..rounds {
                    for _ in 0..per {
                        let t = Instant::now();
                        hf.post(Bytes::from_static(INFO)).await?;
                        hfloor.push(t.elapsed());
                    }
                    for _ in 0..per {
                        let t = Instant::now();
                        c.post(Bytes::from_static(INFO)).await?;
                        a.push(t.elapsed());
                    }
                }
                let (a, b) = (
                    Samples::from_durations(&a),
                    Samples::from_durations(&hfloor),
                );
                let row = Row::new(
                    "2a",
                    "daemon.info round trip, POST /v1/rpc, p50",
                    a.p50(),
                    "µs",
                )
                .floor("hyper HTTP/1.1 keep-alive echo", b.p50());
                let ok = row.ratio.is_some_and(|r| r <= 2.0);
                rows.push(row.target("p50 ≤ 2× floor", ok).note(format!(
                    "p99 {} µs vs floor {} µs",
                    human(a.p99()),
                    human(b.p99())
                )));
            }
        }
        // WebSocket.
        let probe = async {
            let mut ws = tokio::time::timeout(
                Duration::from_secs(5),
                client::ws_connect(port, "/v1/ws", Some(&token)),
            )
            .await??;
            let text = std::str::from_utf8(INFO)?;
            let got =
                tokio::time::timeout(Duration::from_secs(5), client::ws_round_trip(&mut ws, text))
                    .await??;
            anyhow::ensure!(
                got.contains("\"result\""),
                "daemon.info over WebSocket: {got}"
            );
            Ok::<_, anyhow::Error>(ws)
        };
        match probe.await {
            Err(e) => rows.push(Row::not_measured(
                "2b",
                "daemon.info round trip, WebSocket /v1/ws, p50",
                "p50 ≤ 2× floor",
                &format!(
                    "the loopback WebSocket server does not answer /v1/ws in this build ({e:#})"
                ),
            )),
            Ok(mut ws) => {
                let mut wf = client::ws_connect(wport, "/", None).await?;
                let text = std::str::from_utf8(INFO)?;
                for _ in 0..warm {
                    client::ws_round_trip(&mut ws, text).await?;
                    client::ws_round_trip(&mut wf, text).await?;
                }
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for _ in 0..rounds {
                    for _ in 0..per {
                        let t = Instant::now();
                        client::ws_round_trip(&mut wf, text).await?;
                        b.push(t.elapsed());
                    }
                    for _ in 0..per {
                        let t = Instant::now();
                        client::ws_round_trip(&mut ws, text).await?;
                        a.push(t.elapsed());
                    }
                }
                let (a, b) = (Samples::from_durations(&a), Samples::from_durations(&b));
                let hyper_p50 = if hfloor.is_empty() {
                    f64::NAN
                } else {
                    Samples::from_durations(&hfloor).p50()
                };
                let row = Row::new(
                    "2b",
                    "daemon.info round trip, WebSocket /v1/ws, p50",
                    a.p50(),
                    "µs",
                )
                .floor("tungstenite WebSocket echo", b.p50());
                let ok = row.ratio.is_some_and(|r| r <= 2.0);
                rows.push(row.target("p50 ≤ 2× floor", ok).note(format!(
                    "p99 {} µs vs floor {} µs; vs the hyper HTTP echo floor {:.2}×",
                    human(a.p99()),
                    human(b.p99()),
                    a.p50() / hyper_p50
                )));
            }
        }
        Ok::<_, anyhow::Error>(rows)
    })?;
    daemon.stop()?;
    Ok(rows)
}

/// A path as UTF-8 (for argv).
pub fn path_str(p: &std::path::Path) -> anyhow::Result<&str> {
    p.to_str()
        .ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", p.display()))
}
