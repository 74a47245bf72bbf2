//! 1 and 2: `daemon.info` round trips on one persistent connection, alternating
//! blocks with an echo floor so both see the same machine state.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Ctx, client_rt};
use crate::client::{self, BlockingLine, HttpConn};
use crate::proc::{DaemonProc, FloorProc};
use crate::report::{Row, human};
use crate::stats::Samples;

const INFO: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"daemon.info"}"#;

/// (rounds, per round, warm-up)
fn sizes(ctx: &Ctx) -> (usize, usize, usize) {
    ctx.size((10, 2000, 2000), (2, 200, 100))
}

/// 1: over the unix socket, against a raw NDJSON echo server.
pub fn unix(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let home = ctx.fresh_dir("m1")?.join("home");
    let daemon = DaemonProc::r1_serve(&ctx.r1, &home, &ctx.sock("m1"), &["--no-tcp"])?;
    let floor_sock = ctx.sock("m1-floor");
    let _floor = FloorProc::start(
        &ctx.bench,
        &["unix-echo", "--socket", path_str(&floor_sock)?],
    )?;
    let mut r1 = BlockingLine::connect(&daemon.sock)?;
    let mut fl = BlockingLine::connect(&floor_sock)?;
    let first = String::from_utf8_lossy(r1.round_trip(INFO)?).into_owned();
    anyhow::ensure!(first.contains("\"result\""), "daemon.info failed: {first}");

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
    drop(r1);
    daemon.stop()?;
    let (a, b) = (Samples::from_durations(&a), Samples::from_durations(&b));
    let n = a.len();
    let p50 = Row::new(
        "1a",
        "daemon.info round trip, unix socket, p50",
        a.p50(),
        "µs",
    )
    .floor("NDJSON echo (unix)", b.p50());
    let ok50 = p50.ratio.is_some_and(|r| r <= 2.0);
    let p99 = Row::new(
        "1b",
        "daemon.info round trip, unix socket, p99",
        a.p99(),
        "µs",
    )
    .floor("NDJSON echo (unix)", b.p99());
    let ok99 = a.p99() <= 250.0;
    Ok(vec![
        p50.target("p50 ≤ 2× floor", ok50)
            .note(format!("{n} calls on one connection")),
        p99.target("p99 ≤ 250 µs", ok99),
    ])
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
