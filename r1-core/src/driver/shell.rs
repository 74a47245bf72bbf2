//! The `shell` driver (DESIGN §6): each input runs as `sh -c <text>` in the workdir.
//!
//! Records, per input `seq` (the lane):
//!
//! ```text
//! tool.start    {tool:"sh", args:{cmd}, lane_id, pgid}
//! session.delta {stream:"stdout"|"stderr", text, lane_id}        (0 or more)
//! tool.end      {lane_id, ok, exit_code, duration_ms, signal?, interrupted?}
//! ```
//!
//! * One command at a time, inputs in FIFO order; each command leads its own process
//!   group, stdin is `/dev/null`, cwd and `PWD` are the workdir, `spec.env` is added.
//! * Deltas carry lossy UTF-8, at most 64 KiB each, small writes coalesced for
//!   ≤ 10 ms ([`super::output`]). `tool.end` comes after both pipes reached EOF and
//!   the shell was reaped; a group member still holding a pipe 200 ms after the shell
//!   exited is killed ([`super::process::ExitDrain`]).
//! * `exit_code` is null and `signal` names the signal when one ended the shell. A
//!   command that could not be started (workdir gone, NUL byte in the text …) gets a
//!   `tool.start` without `pgid` and a `tool.end` with `ok:false`, `exit_code:null`
//!   and an `error` message; the session goes on.
//! * [`Control::Pause`] holds the queue and SIGSTOPs the running group;
//!   [`Control::Run`] SIGCONTs it. [`Control::Cancel`] / [`Control::Stop`] send SIGTERM
//!   and SIGCONT, then SIGKILL after the [`KillGrace`]; the running command's
//!   `tool.end` gets `interrupted: true`, queued inputs are not run (the hub records
//!   them), and the run returns [`DriverExit::Cancelled`] / [`DriverExit::Stopped`].
//!   A closed inbox or control channel counts as Stop. The driver never finishes on
//!   its own: an idle session stays running.

use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};

use serde_json::{Map, Value, json};
use tokio::process::{Child, ChildStderr, ChildStdout};
use tokio::sync::watch;
use tokio::time::Instant;

use super::output::{pump_deltas, sleep_until_opt};
use super::process::{self, DrainStep, ExitDrain, GroupGuard, KillGrace, ProcessGroup};
use super::{
    BoxFuture, Control, DriverContext, DriverExit, DriverFactory, DriverSpec, Emitter, Input,
    SessionDriver,
};
use crate::error::{Error, Result};

/// The shell every input runs in.
const SHELL: &str = "/bin/sh";

/// Builds [`ShellDriver`]s with the default [`KillGrace`].
#[derive(Debug, Default, Clone, Copy)]
pub struct ShellFactory;

impl DriverFactory for ShellFactory {
    fn create(&self, _spec: &DriverSpec) -> Result<Box<dyn SessionDriver>> {
        Ok(Box::new(ShellDriver::new()))
    }
}

/// Runs each input as `sh -c <text>` in the workdir.
#[derive(Debug, Default, Clone, Copy)]
pub struct ShellDriver {
    grace: KillGrace,
}

impl ShellDriver {
    /// A driver with the default kill graces (5 s cancel, 2 s stop).
    pub fn new() -> ShellDriver {
        ShellDriver::default()
    }

    /// A driver with other kill graces (tests, embedders with slow-to-exit tools).
    pub fn with_grace(grace: KillGrace) -> ShellDriver {
        ShellDriver { grace }
    }
}

impl SessionDriver for ShellDriver {
    fn run(self: Box<Self>, ctx: DriverContext) -> BoxFuture<'static, Result<DriverExit>> {
        Box::pin(run(self.grace, ctx))
    }
}

/// The command in progress.
struct Running {
    lane: u64,
    group: ProcessGroup,
    started: Instant,
    /// Pumps both pipes and reaps the shell; owns the child and its group guard.
    done: BoxFuture<'static, Result<ExitStatus>>,
}

/// Cancel or stop in progress: waiting for the running command to go.
struct Ending {
    exit: DriverExit,
    kill_at: Option<Instant>,
}

async fn run(grace: KillGrace, ctx: DriverContext) -> Result<DriverExit> {
    let DriverContext {
        spec,
        mut inbox,
        mut control,
        emitter,
    } = ctx;
    let mut queue: VecDeque<Input> = VecDeque::new();
    let mut paused = false;
    let mut running: Option<Running> = None;
    let mut ending: Option<Ending> = None;
    let mut inbox_open = true;
    let mut control_open = true;

    let initial = *control.borrow_and_update();
    match initial {
        Control::Run => {}
        Control::Pause => paused = true,
        Control::Cancel => return Ok(DriverExit::Cancelled),
        Control::Stop => return Ok(DriverExit::Stopped),
    }

    loop {
        if running.is_none() {
            if let Some(end) = ending.take() {
                return Ok(end.exit);
            }
            if !paused && let Some(input) = queue.pop_front() {
                running = start(&spec, &emitter, input).await?;
                continue;
            }
        }

        let kill_at = ending.as_ref().and_then(|e| e.kill_at);
        tokio::select! {
            input = inbox.recv(), if inbox_open && ending.is_none() => match input {
                Some(input) => queue.push_back(input),
                None => {
                    inbox_open = false;
                    let end = begin_end(DriverExit::Stopped, grace.stop, &mut queue, &running);
                    ending = Some(end);
                }
            },
            changed = control.changed(), if control_open && ending.is_none() => {
                let c = if changed.is_ok() {
                    *control.borrow_and_update()
                } else {
                    control_open = false;
                    Control::Stop
                };
                match c {
                    Control::Run => {
                        if paused {
                            paused = false;
                            if let Some(r) = &running {
                                r.group.cont();
                            }
                        }
                    }
                    Control::Pause => {
                        if !paused {
                            paused = true;
                            if let Some(r) = &running {
                                r.group.stop();
                            }
                        }
                    }
                    Control::Cancel => {
                        let end = begin_end(DriverExit::Cancelled, grace.cancel, &mut queue, &running);
                        ending = Some(end);
                    }
                    Control::Stop => {
                        let end = begin_end(DriverExit::Stopped, grace.stop, &mut queue, &running);
                        ending = Some(end);
                    }
                }
            }
            status = wait_running(&mut running) => {
                let status = status?;
                if let Some(r) = running.take() {
                    emit_end(&emitter, r.lane, r.started, &status, ending.is_some()).await?;
                }
            }
            _ = sleep_until_opt(kill_at) => {
                if let (Some(r), Some(e)) = (&running, &mut ending) {
                    tracing::info!(pgid = r.group.pgid(), "grace over; killing the command");
                    r.group.kill();
                    e.kill_at = None;
                }
            }
        }
    }
}

/// Cancel/stop: drop the queue and start ending the running command, if any.
fn begin_end(
    exit: DriverExit,
    grace: std::time::Duration,
    queue: &mut VecDeque<Input>,
    running: &Option<Running>,
) -> Ending {
    if !queue.is_empty() {
        tracing::debug!(dropped = queue.len(), "queued inputs not run");
        queue.clear();
    }
    let kill_at = running.as_ref().map(|r| {
        r.group.terminate();
        Instant::now() + grace
    });
    Ending { exit, kill_at }
}

async fn wait_running(running: &mut Option<Running>) -> Result<ExitStatus> {
    match running {
        Some(r) => r.done.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Spawns `sh -c <text>` for `input` and records `tool.start`. `None` when the shell
/// could not be started (its lane is then closed already).
async fn start(spec: &DriverSpec, emitter: &Emitter, input: Input) -> Result<Option<Running>> {
    let args = ["-c".to_owned(), input.text.clone()];
    let mut cmd = process::command(SHELL, &args, spec);
    cmd.stdin(Stdio::null());
    let started = Instant::now();
    let spawned = cmd.spawn().and_then(|mut child| {
        let group = ProcessGroup::of_child(&child);
        match (group, child.stdout.take(), child.stderr.take()) {
            (Some(g), Some(o), Some(e)) => Ok((child, g, o, e)),
            // Dropping `child` kills it (kill_on_drop).
            _ => Err(std::io::Error::other("the child has no pid or pipes")),
        }
    });
    let (child, group, stdout, stderr) = match spawned {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(lane_id = input.seq, %error, "cannot start sh");
            emitter
                .emit(
                    "tool.start",
                    json!({"tool": "sh", "args": {"cmd": input.text}, "lane_id": input.seq}),
                )
                .await?;
            emitter
                .emit(
                    "tool.end",
                    json!({
                        "lane_id": input.seq,
                        "ok": false,
                        "exit_code": null,
                        "duration_ms": 0,
                        "error": format!("cannot start {SHELL}: {error}"),
                    }),
                )
                .await?;
            return Ok(None);
        }
    };
    let guard = GroupGuard::new(group);
    emitter
        .emit(
            "tool.start",
            json!({
                "tool": "sh",
                "args": {"cmd": input.text},
                "lane_id": input.seq,
                "pgid": group.pgid(),
            }),
        )
        .await?;
    let done = Box::pin(finish(
        child,
        group,
        guard,
        (stdout, stderr),
        input.seq,
        emitter.clone(),
    ));
    Ok(Some(Running {
        lane: input.seq,
        group,
        started,
        done,
    }))
}

/// Pumps both pipes to EOF and reaps the shell; returns its status once all its
/// output has been emitted.
async fn finish(
    mut child: Child,
    group: ProcessGroup,
    mut guard: GroupGuard,
    (stdout, stderr): (ChildStdout, ChildStderr),
    lane: u64,
    emitter: Emitter,
) -> Result<ExitStatus> {
    let (give_up_tx, give_up) = watch::channel(false);
    let out = pump_deltas(
        stdout,
        "stdout",
        Some(lane),
        emitter.clone(),
        give_up.clone(),
    );
    let err = pump_deltas(stderr, "stderr", Some(lane), emitter, give_up);
    tokio::pin!(out, err);
    let (mut out_done, mut err_done) = (false, false);
    let mut status: Option<ExitStatus> = None;
    let mut drain = ExitDrain::default();
    loop {
        if let Some(s) = status
            && out_done
            && err_done
        {
            guard.disarm();
            return Ok(s);
        }
        tokio::select! {
            r = &mut out, if !out_done => {
                out_done = true;
                r?;
            }
            r = &mut err, if !err_done => {
                err_done = true;
                r?;
            }
            s = child.wait(), if status.is_none() => {
                let s = s.map_err(|e| Error::new(crate::ErrorKind::Io, format!("cannot wait for sh: {e}")))?;
                status = Some(s);
                drain.start();
            }
            _ = sleep_until_opt(drain.deadline()) => {
                if drain.expire(&group) == DrainStep::GiveUp {
                    tracing::warn!(pgid = group.pgid(), "a process outside the group holds the output open; not reading it further");
                    give_up_tx.send_replace(true);
                }
            }
        }
    }
}

/// Records the lane's `tool.end`.
async fn emit_end(
    emitter: &Emitter,
    lane: u64,
    started: Instant,
    status: &ExitStatus,
    interrupted: bool,
) -> Result<()> {
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut d = Map::new();
    d.insert("lane_id".to_owned(), json!(lane));
    d.insert("ok".to_owned(), json!(status.success() && !interrupted));
    d.insert("exit_code".to_owned(), json!(status.code()));
    d.insert("duration_ms".to_owned(), json!(duration_ms));
    if let Some(sig) = process::signal_name(status) {
        d.insert("signal".to_owned(), json!(sig));
    }
    if interrupted {
        d.insert("interrupted".to_owned(), json!(true));
    }
    emitter.emit("tool.end", Value::Object(d)).await?;
    Ok(())
}
