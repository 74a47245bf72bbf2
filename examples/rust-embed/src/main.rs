//! Embedding the r1 daemon in a Rust program, with a driver of your own.
//!
//! Starts a daemon in a temporary home with an `upper` driver that answers each
//! input with an `example.upper` record, starts a session, sends two inputs, prints
//! the records as they stream, then shuts the daemon down. Run it with
//! `cargo run -p r1-example-embed`.

use std::sync::Arc;
use std::time::Duration;

use r1_core::client::{DialOptions, StartOptions, SubEvent};
use r1_core::driver::{
    BoxFuture, Control, DriverContext, DriverExit, DriverFactory, DriverSpec, SessionDriver,
};
use r1_core::{Daemon, DaemonConfig};
use serde_json::json;

/// Makes `Upper` drivers.
struct UpperFactory;

impl DriverFactory for UpperFactory {
    fn create(&self, _spec: &DriverSpec) -> r1_core::Result<Box<dyn SessionDriver>> {
        Ok(Box::new(Upper))
    }
}

/// Answers each input with its text in upper case; ends on "bye".
struct Upper;

impl SessionDriver for Upper {
    fn run(
        self: Box<Self>,
        mut ctx: DriverContext,
    ) -> BoxFuture<'static, r1_core::Result<DriverExit>> {
        Box::pin(async move {
            loop {
                tokio::select! {
                    input = ctx.inbox.recv() => {
                        let Some(input) = input else { return Ok(DriverExit::Stopped) };
                        // The answer and the end of its lane, journaled together (one
                        // write; `emit` writes one record).
                        ctx.emitter.emit_batch(vec![
                            ("example.upper".to_owned(), json!({"text": input.text.to_uppercase()})),
                            ("tool.end".to_owned(), json!({"lane_id": input.seq, "ok": true, "exit_code": 0, "duration_ms": 0})),
                        ]).await?;
                        if input.text == "bye" {
                            return Ok(DriverExit::Finished { ok: true, exit_code: Some(0), message: None });
                        }
                    }
                    changed = ctx.control.changed() => {
                        let control = if changed.is_ok() { *ctx.control.borrow() } else { Control::Stop };
                        match control {
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work)?;
    let daemon = Daemon::start(
        DaemonConfig {
            home: Some(dir.path().join("home")),
            tcp: false,
            ..Default::default()
        }
        .with_driver("upper", Arc::new(UpperFactory)),
    )
    .await?;
    println!(
        "daemon up: pid {}, socket {:?}",
        std::process::id(),
        daemon.sock_path()
    );

    let client = r1_core::client::dial(DialOptions::new().home(daemon.home()).spawn(false)).await?;
    let session = client
        .start(StartOptions::new(&work).driver("upper"))
        .await?;
    println!(
        "session {} in {}",
        session.session_id,
        session.workdir.display()
    );
    let mut events = client.subscribe(&session.session_id, Some(0), None).await?;
    client.send(&session.session_id, "hello").await?;
    client.send(&session.session_id, "bye").await?;

    let mut uppers = Vec::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(10), events.next()).await? {
        if let SubEvent::Record(ev) = item? {
            println!("#{:<3} {:<16} {}", ev.seq, ev.kind, ev.data);
            if ev.kind == "example.upper" {
                uppers.push(ev.data["text"].as_str().unwrap_or_default().to_owned());
            }
            if ev.kind == "session.ended" {
                break;
            }
        }
    }
    assert_eq!(
        uppers,
        ["HELLO", "BYE"],
        "the custom driver answered each input"
    );
    daemon.stop().await?;
    println!("daemon stopped");
    Ok(())
}
