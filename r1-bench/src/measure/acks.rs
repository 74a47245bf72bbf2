//! 6: durable acks — 64 concurrent senders each calling `session.send` (acknowledged
//! only after the `user.input` record is fsync'd), beside one thread doing one
//! `write` + `fdatasync` per ack.

use std::fs::File;
use std::io::Write;

use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as TokioBufReader};

use serde_json::json;

use super::journal::sync_all;
use super::{Ctx, client_rt, workdir};
use crate::client::Rpc;
use crate::proc::DaemonProc;
use crate::report::Row;

const SENDERS: usize = 64;

/// 6.
pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    // Slices alternate the floor and r1; the best slice of each counts.
    let slice = ctx.size(Duration::from_secs(2), Duration::from_millis(400));
    let rounds = ctx.size(3, 1);
    let dir = ctx.fresh_dir("m6")?;
    let home = dir.join("home");
    let floor_path = dir.join("floor.ndjson");
    let mut floor_file = File::create(&floor_path)?;

    let daemon = DaemonProc::bench_daemon(&ctx.bench, &home, &ctx.sock("m6"), &["--no-tcp"])?;
    let work = workdir(ctx)?;
    let sock = daemon.sock.clone();
    let rt = client_rt()?;
    let (best, best_floor, total) = rt.block_on(async move {
        let mut c = Rpc::connect(&sock).await?;
        let r = c
            .call("session.start", json!({"workdir": work, "driver": "sink"}))
            .await?;
        let id = r["session_id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no session_id in {r}"))?
            .to_owned();
        let params = json!({"session_id": id, "text": "x".repeat(100)}).to_string();
        let mut senders = Vec::new();
        for _ in 0..SENDERS {
            senders.push(Sender::new(Rpc::connect(&sock).await?));
        }
        let (mut best, mut best_floor, mut total) = (0f64, 0f64, 0u64);
        for _ in 0..rounds {
            sync_all();
            best_floor = best_floor.max(floor_slice(&mut floor_file, slice)?);
            sync_all();
            let (acks, back) = r1_slice(senders, &params, slice).await?;
            senders = back;
            total += acks;
            best = best.max(acks as f64 / slice.as_secs_f64());
        }
        Ok::<_, anyhow::Error>((best, best_floor, total))
    })?;
    daemon.stop()?;
    anyhow::ensure!(total > 0, "no session.send was acknowledged");
    let row = Row::new(
        "6",
        "durable acks: 64 concurrent `session.send` callers",
        best,
        "acks/s",
    )
    .floor("1 thread: write + fdatasync per ack", best_floor);
    let ok = row.ratio.is_some_and(|r| r >= 10.0);
    Ok(vec![row.target("≥ 10× floor", ok).note(format!(
        "best of {rounds} alternating {:.1} s slices; {total} acks over the unix socket (bench daemon, `sink` driver; requests pre-encoded, answers checked by bytes)",
        slice.as_secs_f64()
    ))])
}

/// One thread, one `write` + `fdatasync` per ack, for `slice`: acks/s.
fn floor_slice(f: &mut File, slice: Duration) -> anyhow::Result<f64> {
    let line = [b'x'; 199];
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < slice {
        f.write_all(&line)?;
        f.write_all(b"\n")?;
        f.sync_data()?;
        n += 1;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// One sender's connection, driven with pre-encoded requests: the benchmark client
/// shares the machine's two cores with the daemon, so a client that builds and
/// parses JSON values per call takes CPU time the daemon's acks would otherwise get.
struct Sender {
    rd: TokioBufReader<tokio::net::unix::OwnedReadHalf>,
    wr: tokio::net::unix::OwnedWriteHalf,
    next_id: u64,
    request: Vec<u8>,
    answer: Vec<u8>,
}

impl Sender {
    fn new(c: Rpc) -> Sender {
        let (rd, wr) = c.into_parts();
        Sender {
            rd,
            wr,
            next_id: 1_000_000,
            request: Vec::with_capacity(256),
            answer: Vec::with_capacity(256),
        }
    }

    /// One `session.send`, checked for `"accepted":true` under its own id.
    async fn send(&mut self, params: &str) -> anyhow::Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        self.request.clear();
        write!(
            self.request,
            r#"{{"jsonrpc":"2.0","id":{id},"method":"session.send","params":{params}}}"#
        )?;
        self.request.push(b'\n');
        self.wr.write_all(&self.request).await?;
        self.answer.clear();
        if self.rd.read_until(b'\n', &mut self.answer).await? == 0 {
            anyhow::bail!("session.send: connection closed");
        }
        let answer = &self.answer[..];
        let ours = memmem(answer, format!(r#""id":{id},"#).as_bytes())
            || memmem(answer, format!(r#""id":{id}}}"#).as_bytes());
        anyhow::ensure!(
            ours && memmem(answer, br#""accepted":true"#),
            "session.send not accepted: {}",
            String::from_utf8_lossy(answer)
        );
        Ok(())
    }
}

fn memmem(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every sender calls `session.send` back to back until the slice ends: acks counted.
async fn r1_slice(
    senders: Vec<Sender>,
    params: &str,
    slice: Duration,
) -> anyhow::Result<(u64, Vec<Sender>)> {
    let count = Rc::new(std::cell::Cell::new(0u64));
    let deadline = Instant::now() + slice;
    let local = tokio::task::LocalSet::new();
    let back = local
        .run_until(async {
            let mut tasks = Vec::new();
            for mut c in senders {
                let (params, count) = (params.to_owned(), Rc::clone(&count));
                tasks.push(tokio::task::spawn_local(async move {
                    while Instant::now() < deadline {
                        c.send(&params).await?;
                        count.set(count.get() + 1);
                    }
                    Ok::<_, anyhow::Error>(c)
                }));
            }
            let mut back = Vec::new();
            for t in tasks {
                back.push(t.await??);
            }
            Ok::<_, anyhow::Error>(back)
        })
        .await?;
    Ok((count.get(), back))
}
