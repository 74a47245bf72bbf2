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

/// Where the client thread and the servers' threads run during one series.
#[derive(Clone, Copy)]
enum Placement {
    /// All on the first allowed CPU: wake-ups stay on one vCPU.
    OneCpu,
    /// The client on the first CPU, the servers on the others: every message
    /// wakes a thread on another vCPU.
    OtherCpus,
    /// Wherever the scheduler puts them.
    Unpinned,
}

/// Each placement with the words its rows use.
const PLACEMENTS: [(Placement, &str); 3] = [
    (Placement::OneCpu, "client and servers on one vCPU"),
    (
        Placement::OtherCpus,
        "client and servers on different vCPUs",
    ),
    (Placement::Unpinned, "scheduler's placement"),
];

/// Pins the calling (client) thread and every thread of `servers` for `at`, or
/// says why this machine cannot give that placement (the rows then say so rather
/// than fail the run).
fn place(at: Placement, all: &[usize], servers: &[u32]) -> Result<(), String> {
    let (client, theirs): (&[usize], &[usize]) = match at {
        Placement::OneCpu => (&all[..1], &all[..1]),
        Placement::OtherCpus if all.len() < 2 => {
            return Err("this machine has one CPU".into());
        }
        Placement::OtherCpus => (&all[..1], &all[1..]),
        Placement::Unpinned => (all, all),
    };
    placement::pin_current_thread(client)
        .map_err(|e| format!("cannot pin the client thread: {e:#}"))?;
    for &pid in servers {
        placement::pin_process(pid, theirs)
            .map_err(|e| format!("cannot pin server {pid}: {e:#}"))?;
    }
    Ok(())
}

/// Puts the calling thread back on every CPU when a measurement ends, however it ends.
struct RestoreAffinity(Vec<usize>);

impl Drop for RestoreAffinity {
    fn drop(&mut self) {
        let _ = placement::pin_current_thread(&self.0);
    }
}

/// A p50 row: with a target when client and servers were pinned; information only
/// when unpinned, where r1 and its floor may have run in different layouts.
fn p50_row(
    id: &str,
    what: &str,
    at: (Placement, &str),
    r1: &Samples,
    floor: (&str, &Samples),
) -> Row {
    let row = Row::new(id, &format!("{what}, p50, {}", at.1), r1.p50(), "µs")
        .floor(floor.0, floor.1.p50());
    let p99 = format!(
        "{} calls; p99 {} µs vs floor {} µs",
        r1.len(),
        human(r1.p99()),
        human(floor.1.p99())
    );
    match at.0 {
        Placement::Unpinned => row.note(format!(
            "no target: unpinned, r1 and its floor may land on different vCPU layouts, and \
             a wake-up on another vCPU costs tens of µs here; {p99}"
        )),
        Placement::OneCpu | Placement::OtherCpus => {
            let ok = row.ratio.is_some_and(|r| r <= 2.0);
            row.target("p50 ≤ 2× floor", ok).note(p99)
        }
    }
}

/// A p50 row that could not be measured (the placement or the transport), and why.
fn p50_not_measured(id: &str, what: &str, at: (Placement, &str), why: &str) -> Row {
    Row::not_measured(id, &format!("{what}, p50, {}", at.1), "p50 ≤ 2× floor", why)
}

/// 1: over the unix socket, against a raw NDJSON echo server, in each placement
/// (`crate::placement` says why placement decides this row).
pub fn unix(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    const WHAT: &str = "daemon.info round trip, unix socket";
    const FLOOR: &str = "NDJSON echo (unix)";
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
    let mut rows = Vec::new();
    for (at, id) in PLACEMENTS.into_iter().zip(["1a", "1c", "1d"]) {
        if let Err(why) = place(at.0, &all, &[daemon.pid, floor.pid()]) {
            rows.push(p50_not_measured(id, WHAT, at, &why));
            if let Placement::Unpinned = at.0 {
                rows.push(Row::not_measured(
                    "1b",
                    &format!("{WHAT}, p99, {}", at.1),
                    "p99 ≤ 250 µs",
                    &why,
                ));
            }
            continue;
        }
        let (a, b) = alternate_blocking(ctx, &mut r1, &mut fl)?;
        rows.push(p50_row(id, WHAT, at, &a, (FLOOR, &b)));
        if let Placement::Unpinned = at.0 {
            let p99 = Row::new("1b", &format!("{WHAT}, p99, {}", at.1), a.p99(), "µs")
                .floor(FLOOR, b.p99());
            rows.push(p99.target("p99 ≤ 250 µs", a.p99() <= 250.0));
        }
    }
    drop(r1);
    daemon.stop()?;
    rows.sort_by(|x, y| x.id.cmp(&y.id));
    Ok(rows)
}

/// Round trips on both connections, alternating blocks so both see the same
/// machine state: (r1, floor).
fn alternate_blocking(
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

/// [`alternate_blocking`] for async clients.
async fn alternate(
    ctx: &Ctx,
    r1: &mut impl AsyncFnMut() -> anyhow::Result<()>,
    fl: &mut impl AsyncFnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(Samples, Samples)> {
    let (rounds, per, warm) = sizes(ctx);
    for _ in 0..warm {
        r1().await?;
        fl().await?;
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for _ in 0..per {
            let t = Instant::now();
            fl().await?;
            b.push(t.elapsed());
        }
        for _ in 0..per {
            let t = Instant::now();
            r1().await?;
            a.push(t.elapsed());
        }
    }
    Ok((Samples::from_durations(&a), Samples::from_durations(&b)))
}

/// 2: over `POST /v1/rpc` (keep-alive) and WebSocket, in each placement.
pub fn http_ws(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    const HTTP: &str = "daemon.info round trip, POST /v1/rpc";
    const HTTP_FLOOR: &str = "hyper HTTP/1.1 keep-alive echo";
    const WS: &str = "daemon.info round trip, WebSocket /v1/ws";
    const WS_FLOOR: &str = "tungstenite WebSocket echo";
    let home = ctx.fresh_dir("m2")?.join("home");
    let daemon = DaemonProc::r1_serve(&ctx.r1, &home, &ctx.sock("m2"), &[])?;
    let Some(port) = daemon.port else {
        anyhow::bail!("r1 serve wrote no port to daemon.json");
    };
    let http_floor = FloorProc::start(&ctx.bench, &["http-echo"])?;
    let ws_floor = FloorProc::start(&ctx.bench, &["ws-echo"])?;
    let (hport, wport) = (http_floor.port()?, ws_floor.port()?);
    let servers = [daemon.pid, http_floor.pid(), ws_floor.pid()];
    let token = daemon.token.clone();
    let all = placement::allowed_cpus()?;
    let _restore = RestoreAffinity(all.clone());
    let rt = client_rt()?;
    let mut rows = rt.block_on(async move {
        let text = std::str::from_utf8(INFO)?;
        let mut http = async {
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
        }
        .await
        .map_err(|e| {
            format!("the loopback HTTP server does not answer /v1/rpc in this build ({e:#})")
        });
        let mut ws = async {
            let mut ws = tokio::time::timeout(
                Duration::from_secs(5),
                client::ws_connect(port, "/v1/ws", Some(&token)),
            )
            .await??;
            let got =
                tokio::time::timeout(Duration::from_secs(5), client::ws_round_trip(&mut ws, text))
                    .await??;
            anyhow::ensure!(
                got.contains("\"result\""),
                "daemon.info over WebSocket: {got}"
            );
            Ok::<_, anyhow::Error>(ws)
        }
        .await
        .map_err(|e| {
            format!("the loopback WebSocket server does not answer /v1/ws in this build ({e:#})")
        });
        let mut hf = HttpConn::connect(hport, "/v1/rpc", None).await?;
        let mut wf = client::ws_connect(wport, "/", None).await?;

        let mut rows = Vec::new();
        for (at, ids) in PLACEMENTS
            .into_iter()
            .zip([("2a", "2b"), ("2c", "2d"), ("2e", "2f")])
        {
            if let Err(why) = place(at.0, &all, &servers) {
                rows.push(p50_not_measured(ids.0, HTTP, at, &why));
                rows.push(p50_not_measured(ids.1, WS, at, &why));
                continue;
            }
            match &mut http {
                Ok(c) => {
                    let (a, b) = alternate(
                        ctx,
                        &mut async || c.post(Bytes::from_static(INFO)).await.map(drop),
                        &mut async || hf.post(Bytes::from_static(INFO)).await.map(drop),
                    )
                    .await?;
                    rows.push(p50_row(ids.0, HTTP, at, &a, (HTTP_FLOOR, &b)));
                }
                Err(why) => rows.push(p50_not_measured(ids.0, HTTP, at, why)),
            }
            match &mut ws {
                Ok(c) => {
                    let (a, b) = alternate(
                        ctx,
                        &mut async || client::ws_round_trip(c, text).await.map(drop),
                        &mut async || client::ws_round_trip(&mut wf, text).await.map(drop),
                    )
                    .await?;
                    rows.push(p50_row(ids.1, WS, at, &a, (WS_FLOOR, &b)));
                }
                Err(why) => rows.push(p50_not_measured(ids.1, WS, at, why)),
            }
        }
        Ok::<_, anyhow::Error>(rows)
    })?;
    daemon.stop()?;
    rows.sort_by(|x, y| x.id.cmp(&y.id));
    Ok(rows)
}

/// A path as UTF-8 (for argv).
pub fn path_str(p: &std::path::Path) -> anyhow::Result<&str> {
    p.to_str()
        .ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placement_that_cannot_be_had_says_why() {
        let all = placement::allowed_cpus().unwrap();
        std::thread::spawn(move || {
            let one = &all[..1];
            assert_eq!(
                place(Placement::OtherCpus, one, &[]),
                Err("this machine has one CPU".to_owned())
            );
            // No such process: the rows say so instead of failing the run.
            let why = place(Placement::OneCpu, &all, &[u32::MAX]).unwrap_err();
            assert!(why.contains("cannot pin server"), "{why}");
            // (No server here: pinning this test process would race the other tests.)
            assert_eq!(place(Placement::Unpinned, &all, &[]), Ok(()));
            assert_eq!(placement::allowed_cpus().unwrap(), all);
        })
        .join()
        .unwrap();
    }
}
