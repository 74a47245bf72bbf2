//! The bench daemon: `r1_core::Daemon` embedded in this binary, with two drivers
//! registered through `DaemonConfig::with_driver`, run as its own process so the
//! client side never shares its CPU time or memory accounting.
//!
//! * `burst`: input `burst N [PAD [BATCH]]` emits N `bench.tick {i, pad}` records as
//!   fast as the hub takes them (PAD bytes of padding, default 100 → ~230-byte
//!   lines; BATCH records per `emit_batch`, default 1: one `emit` each), then
//!   `tool.end` for the input's lane. Input `finish` ends the session.
//! * `sink`: takes inputs and does nothing (the durable-ack measurement).

use std::path::PathBuf;
use std::sync::Arc;

use r1_core::driver::{
    BoxFuture, Control, DriverContext, DriverExit, DriverFactory, DriverSpec, SessionDriver,
};
use serde_json::json;

/// `r1-bench daemon`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Unix socket path.
    #[arg(long)]
    socket: PathBuf,
    /// Do not listen on loopback HTTP/WebSocket.
    #[arg(long)]
    no_tcp: bool,
}

/// Runs until SIGTERM/SIGINT or `daemon.shutdown`. `R1_HOME` names the home.
pub fn run(a: Args) -> anyhow::Result<()> {
    // Warnings and errors to stderr (the bench keeps it beside the home).
    let filter = tracing_subscriber::EnvFilter::try_from_env("R1_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let cfg = r1_core::DaemonConfig {
            sock_path: Some(a.socket),
            tcp: !a.no_tcp,
            handle_signals: true,
            ..Default::default()
        }
        .with_driver("burst", Arc::new(Burst))
        .with_driver("sink", Arc::new(Sink));
        let handle = r1_core::Daemon::start(cfg).await?;
        handle.wait().await?;
        Ok(())
    })
}

struct Burst;

impl DriverFactory for Burst {
    fn create(&self, _spec: &DriverSpec) -> r1_core::Result<Box<dyn SessionDriver>> {
        Ok(Box::new(Burst))
    }
}

impl SessionDriver for Burst {
    fn run(
        self: Box<Self>,
        mut ctx: DriverContext,
    ) -> BoxFuture<'static, r1_core::Result<DriverExit>> {
        Box::pin(async move {
            loop {
                tokio::select! {
                    input = ctx.inbox.recv() => {
                        let Some(input) = input else { return Ok(DriverExit::Stopped) };
                        if input.text == "finish" {
                            return Ok(DriverExit::Finished { ok: true, exit_code: Some(0), message: None });
                        }
                        let mut words = input.text.split_whitespace();
                        let n: u64 = match (words.next(), words.next()) {
                            (Some("burst"), Some(n)) => n.parse().unwrap_or(0),
                            _ => 0,
                        };
                        let pad_len: usize = words.next().and_then(|p| p.parse().ok()).unwrap_or(100);
                        let batch: u64 = words.next().and_then(|b| b.parse().ok()).unwrap_or(1).max(1);
                        let pad = "x".repeat(pad_len);
                        let mut i = 0;
                        while i < n {
                            let upto = n.min(i + batch);
                            if batch == 1 {
                                ctx.emitter.emit("bench.tick", json!({"i": i, "pad": pad})).await?;
                            } else {
                                let records = (i..upto)
                                    .map(|i| ("bench.tick".to_owned(), json!({"i": i, "pad": pad})))
                                    .collect();
                                ctx.emitter.emit_batch(records).await?;
                            }
                            i = upto;
                        }
                        ctx.emitter.emit("tool.end", json!({"lane_id": input.seq, "ok": true, "exit_code": 0, "duration_ms": 0})).await?;
                    }
                    changed = ctx.control.changed() => {
                        if changed.is_err() { return Ok(DriverExit::Stopped) }
                        let c = *ctx.control.borrow();
                        match c {
                            Control::Cancel => return Ok(DriverExit::Cancelled),
                            Control::Stop => return Ok(DriverExit::Stopped),
                            Control::Run | Control::Pause => {}
                        }
                    }
                }
            }
        })
    }
}

struct Sink;

impl DriverFactory for Sink {
    fn create(&self, _spec: &DriverSpec) -> r1_core::Result<Box<dyn SessionDriver>> {
        Ok(Box::new(Sink))
    }
}

impl SessionDriver for Sink {
    fn run(
        self: Box<Self>,
        mut ctx: DriverContext,
    ) -> BoxFuture<'static, r1_core::Result<DriverExit>> {
        Box::pin(async move {
            loop {
                tokio::select! {
                    input = ctx.inbox.recv() => {
                        if input.is_none() { return Ok(DriverExit::Stopped) }
                    }
                    changed = ctx.control.changed() => {
                        if changed.is_err() { return Ok(DriverExit::Stopped) }
                        let c = *ctx.control.borrow();
                        match c {
                            Control::Cancel => return Ok(DriverExit::Cancelled),
                            Control::Stop => return Ok(DriverExit::Stopped),
                            Control::Run | Control::Pause => {}
                        }
                    }
                }
            }
        })
    }
}
