//! The `exec` driver (DESIGN §6): one long-lived child (an agent in any language)
//! speaking lines on stdin/stdout.
//!
//! The child runs `spec.command` in the workdir (`current_dir` and `PWD`), leads its
//! own process group, and gets `spec.env` plus `R1_SESSION_ID` and
//! `R1_SESSION_JOURNAL` (the journal path, so it can read its own history).
//!
//! * Each input is written to its stdin as one line:
//!   `{"kind":"user.input","seq":N,"text":"…"}\n`.
//! * Each stdout line that is a JSON object with a string `kind` becomes a record of
//!   that kind with its `data` (`null` when missing). A reserved kind (`session.*`,
//!   `user.*`, `journal.*`, `daemon.*`) or an empty one is not trusted: the line is
//!   recorded as `driver.invalid {line, reason}`. Such lines that arrive together
//!   (already read into one buffer) are journaled as one batch, in order.
//! * Any other stdout line becomes `session.delta {stream:"stdout", text}` and each
//!   stderr line `session.delta {stream:"stderr", text}`; `text` keeps the line's
//!   `\n` (the last line may lack one), so concatenating deltas gives the stream back.
//!   Text is lossy UTF-8 in records of at most 64 KiB; a line longer than
//!   [`MAX_EVENT_LINE`] is never an event and comes as several deltas.
//! * The child's exit returns [`DriverExit::Finished`] (`ok` on exit 0) once both
//!   pipes are drained (a group member still holding one 200 ms after the exit is
//!   killed). A child that cannot be spawned returns `Finished {ok:false,
//!   exit_code:None, message:"cannot start …"}`.
//! * [`Control::Pause`] / [`Control::Run`]: SIGSTOP / SIGCONT the group.
//!   [`Control::Cancel`] / [`Control::Stop`] (and a closed inbox or control channel,
//!   which count as Stop): close stdin, SIGTERM + SIGCONT, SIGKILL after the
//!   [`KillGrace`]; output until the child is gone is still recorded; returns
//!   [`DriverExit::Cancelled`] / [`DriverExit::Stopped`].

use std::process::{ExitStatus, Stdio};

use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::ChildStdin;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::output::{LineReader, Utf8Decoder, emit_text, sleep_until_opt};
use super::process::{self, DrainStep, ExitDrain, GroupGuard, KillGrace, ProcessGroup};
use super::{
    BoxFuture, Control, DriverContext, DriverExit, DriverFactory, DriverSpec, Emitter, Input,
    SessionDriver,
};
use crate::error::{Error, ErrorKind, Result};
use crate::journal::is_reserved_kind;

/// Longest stdout line that can be an event (DESIGN §4 caps messages at 16 MiB).
pub const MAX_EVENT_LINE: usize = 16 * 1024 * 1024;

/// Builds [`ExecDriver`]s with the default [`KillGrace`].
#[derive(Debug, Default, Clone, Copy)]
pub struct ExecFactory;

impl DriverFactory for ExecFactory {
    fn create(&self, spec: &DriverSpec) -> Result<Box<dyn SessionDriver>> {
        argv(spec)?;
        Ok(Box::new(ExecDriver::new()))
    }
}

/// The validated argv of `spec`.
fn argv(spec: &DriverSpec) -> Result<(&str, &[String])> {
    match spec.command.as_deref() {
        Some([program, args @ ..]) if !program.is_empty() => Ok((program, args)),
        Some([_, ..]) => Err(Error::invalid_params(
            "the exec driver's `command` starts with an empty program name",
        )),
        _ => Err(Error::invalid_params(
            "the exec driver needs a non-empty `command` (argv array)",
        )),
    }
}

/// Runs one long-lived child speaking the stdin/stdout protocol.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExecDriver {
    grace: KillGrace,
}

impl ExecDriver {
    /// A driver with the default kill graces (5 s cancel, 2 s stop).
    pub fn new() -> ExecDriver {
        ExecDriver::default()
    }

    /// A driver with other kill graces.
    pub fn with_grace(grace: KillGrace) -> ExecDriver {
        ExecDriver { grace }
    }
}

impl SessionDriver for ExecDriver {
    fn run(self: Box<Self>, ctx: DriverContext) -> BoxFuture<'static, Result<DriverExit>> {
        Box::pin(run(self.grace, ctx))
    }
}

/// One output stream of the child and what is left of a line split for length.
struct Stream {
    name: &'static str,
    lines: LineReader<BufReader<Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>>>,
    decoder: Utf8Decoder,
    /// Inside a line longer than [`MAX_EVENT_LINE`].
    long: bool,
    eof: bool,
}

impl Stream {
    fn new(name: &'static str, r: Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>) -> Stream {
        Stream {
            name,
            lines: LineReader::new(BufReader::new(r), MAX_EVENT_LINE),
            decoder: Utf8Decoder::default(),
            long: false,
            eof: false,
        }
    }

    /// Handles one line (or piece of one): an event for whole stdout lines that are
    /// one, otherwise deltas.
    ///
    /// Event lines that arrived together (already in the read buffer) are journaled
    /// as one batch, with one `write(2)`, in their order: a chatty agent costs the
    /// daemon a write per pipe read, not per line.
    async fn handle(&mut self, emitter: &Emitter, bytes: Vec<u8>, whole: bool) -> Result<()> {
        let mut text_line = (bytes, whole);
        if whole && !self.long && self.name == "stdout" {
            let Some(first) = record_of(&text_line.0) else {
                return self.text(emitter, text_line).await;
            };
            let mut batch = vec![first];
            let mut rest = None;
            while let Some(line) = self.lines.buffered_line() {
                match record_of(&line.bytes) {
                    Some(record) => batch.push(record),
                    None => {
                        rest = Some(line);
                        break;
                    }
                }
            }
            // A lone line (the usual case) skips the batch path's buffers.
            if batch.len() == 1 {
                let (kind, data) = batch.remove(0);
                emitter.emit(&kind, data).await?;
            } else {
                emitter.emit_batch(batch).await?;
            }
            let Some(line) = rest else { return Ok(()) };
            text_line = (line.bytes, true);
        }
        self.text(emitter, text_line).await
    }

    /// A line (or piece of one) that is not an event: deltas.
    async fn text(&mut self, emitter: &Emitter, (bytes, whole): (Vec<u8>, bool)) -> Result<()> {
        let mut text = String::new();
        self.decoder.push(&bytes, &mut text);
        if whole {
            self.decoder.finish(&mut text);
        }
        self.long = !whole;
        self.flush_text(emitter, text).await
    }

    /// EOF (or giving up on the pipe): an unterminated line read so far becomes text,
    /// a held partial character U+FFFD.
    async fn end(&mut self, emitter: &Emitter) -> Result<()> {
        self.eof = true;
        let mut text = String::new();
        self.decoder.push(&self.lines.take_pending(), &mut text);
        self.decoder.finish(&mut text);
        self.flush_text(emitter, text).await
    }

    async fn flush_text(&self, emitter: &Emitter, mut text: String) -> Result<()> {
        emit_text(emitter, self.name, None, &mut text).await
    }
}

/// The record a whole stdout line becomes when it is not text: its event, or
/// `driver.invalid` for a kind the child may not write.
fn record_of(line: &[u8]) -> Option<(String, Value)> {
    match classify(line) {
        Parsed::Event { kind, data } => Some((kind, data)),
        Parsed::Invalid { reason } => {
            let line = String::from_utf8_lossy(trim_eol(line)).into_owned();
            tracing::warn!(reason, "untrusted line from the exec child");
            Some((
                "driver.invalid".to_owned(),
                json!({"line": line, "reason": reason}),
            ))
        }
        Parsed::Text => None,
    }
}

/// What a whole stdout line is.
#[derive(Debug, PartialEq)]
enum Parsed {
    /// A JSON object with a usable string `kind`.
    Event { kind: String, data: Value },
    /// A JSON object whose `kind` the child may not write.
    Invalid { reason: &'static str },
    /// Anything else.
    Text,
}

fn trim_eol(bytes: &[u8]) -> &[u8] {
    let b = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    b.strip_suffix(b"\r").unwrap_or(b)
}

fn classify(line: &[u8]) -> Parsed {
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(trim_eol(line)) else {
        return Parsed::Text;
    };
    let kind = match obj.get("kind") {
        Some(Value::String(k)) => k.clone(),
        _ => return Parsed::Text,
    };
    if kind.is_empty() {
        return Parsed::Invalid {
            reason: "empty kind",
        };
    }
    if is_reserved_kind(&kind) {
        return Parsed::Invalid {
            reason: "reserved kind",
        };
    }
    let data = obj.remove("data").unwrap_or(Value::Null);
    Parsed::Event { kind, data }
}

/// The stdin line for one input.
fn input_line(input: &Input) -> Result<Vec<u8>> {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        kind: &'static str,
        seq: u64,
        text: &'a str,
    }
    let mut v = serde_json::to_vec(&Line {
        kind: "user.input",
        seq: input.seq,
        text: &input.text,
    })?;
    v.push(b'\n');
    Ok(v)
}

/// Writes queued input lines to the child's stdin until the queue closes or a write
/// fails (the child closed its stdin or exited).
async fn write_inputs(
    mut stdin: ChildStdin,
    mut lines: mpsc::UnboundedReceiver<Vec<u8>>,
) -> std::io::Result<()> {
    while let Some(line) = lines.recv().await {
        stdin.write_all(&line).await?;
        stdin.flush().await?;
    }
    Ok(())
}

async fn wait_writer(
    writer: &mut Option<BoxFuture<'static, std::io::Result<()>>>,
) -> std::io::Result<()> {
    match writer {
        Some(w) => w.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn run(grace: KillGrace, ctx: DriverContext) -> Result<DriverExit> {
    let DriverContext {
        spec,
        mut inbox,
        mut control,
        emitter,
    } = ctx;
    let (program, args) = argv(&spec)?;

    let initial = *control.borrow_and_update();
    match initial {
        Control::Run | Control::Pause => {}
        Control::Cancel => return Ok(DriverExit::Cancelled),
        Control::Stop => return Ok(DriverExit::Stopped),
    }

    let mut cmd = process::command(program, args, &spec);
    cmd.env("R1_SESSION_ID", &spec.session_id)
        .env("R1_SESSION_JOURNAL", &spec.journal_path)
        .stdin(Stdio::piped());
    let spawned = cmd.spawn().and_then(|mut child| {
        let group = ProcessGroup::of_child(&child);
        match (
            group,
            child.stdin.take(),
            child.stdout.take(),
            child.stderr.take(),
        ) {
            (Some(g), Some(i), Some(o), Some(e)) => Ok((child, g, i, o, e)),
            // Dropping `child` kills it (kill_on_drop).
            _ => Err(std::io::Error::other("the child has no pid or pipes")),
        }
    });
    let (mut child, group, stdin, stdout, stderr) = match spawned {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(program, %error, "cannot start the exec child");
            return Ok(DriverExit::Finished {
                ok: false,
                exit_code: None,
                message: Some(format!("cannot start {program}: {error}")),
            });
        }
    };
    let mut guard = GroupGuard::new(group);
    tracing::info!(program, pgid = group.pgid(), "exec child started");
    let mut paused = false;
    if initial == Control::Pause {
        paused = true;
        group.stop();
    }

    let (line_tx, line_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let mut writer: Option<BoxFuture<'static, std::io::Result<()>>> =
        Some(Box::pin(write_inputs(stdin, line_rx)));
    let mut out = Stream::new("stdout", Box::new(stdout));
    let mut err = Stream::new("stderr", Box::new(stderr));
    let mut status: Option<ExitStatus> = None;
    let mut drain = ExitDrain::default();
    let mut ending: Option<DriverExit> = None;
    let mut kill_at: Option<Instant> = None;
    let mut inbox_open = true;
    let mut control_open = true;

    loop {
        if status.is_some() && out.eof && err.eof {
            break;
        }
        let live = status.is_none() && ending.is_none();
        let mut end_with: Option<(DriverExit, std::time::Duration)> = None;
        tokio::select! {
            line = out.lines.next_line(), if !out.eof => match line {
                Ok(Some(l)) => out.handle(&emitter, l.bytes, l.whole).await?,
                Ok(None) => out.end(&emitter).await?,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the exec child's stdout");
                    out.end(&emitter).await?;
                }
            },
            line = err.lines.next_line(), if !err.eof => match line {
                Ok(Some(l)) => err.handle(&emitter, l.bytes, l.whole).await?,
                Ok(None) => err.end(&emitter).await?,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the exec child's stderr");
                    err.end(&emitter).await?;
                }
            },
            s = child.wait(), if status.is_none() => {
                let s = s.map_err(|e| Error::new(ErrorKind::Io, format!("cannot wait for {program}: {e}")))?;
                tracing::info!(program, status = %s, "exec child exited");
                status = Some(s);
                writer = None;
                drain.start();
            }
            input = inbox.recv(), if inbox_open && live => match input {
                Some(input) => {
                    if line_tx.send(input_line(&input)?).is_err() {
                        tracing::warn!(seq = input.seq, "the exec child no longer reads stdin; input not delivered");
                    }
                }
                None => {
                    inbox_open = false;
                    end_with = Some((DriverExit::Stopped, grace.stop));
                }
            },
            changed = control.changed(), if control_open && live => {
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
                            group.cont();
                        }
                    }
                    Control::Pause => {
                        if !paused {
                            paused = true;
                            group.stop();
                        }
                    }
                    Control::Cancel => end_with = Some((DriverExit::Cancelled, grace.cancel)),
                    Control::Stop => end_with = Some((DriverExit::Stopped, grace.stop)),
                }
            }
            w = wait_writer(&mut writer) => {
                writer = None;
                if let Err(error) = w {
                    tracing::debug!(%error, "stopped writing to the exec child's stdin");
                }
            }
            _ = sleep_until_opt(kill_at) => {
                tracing::info!(pgid = group.pgid(), "grace over; killing the exec child");
                group.kill();
                kill_at = None;
            }
            _ = sleep_until_opt(drain.deadline()) => {
                if drain.expire(&group) == DrainStep::GiveUp {
                    tracing::warn!(pgid = group.pgid(), "a process outside the group holds the output open; not reading it further");
                    if !out.eof {
                        out.end(&emitter).await?;
                    }
                    if !err.eof {
                        err.end(&emitter).await?;
                    }
                }
            }
        }
        if let Some((exit, grace)) = end_with {
            // Closing stdin first lets a well-behaved agent exit on its own.
            writer = None;
            group.terminate();
            kill_at = Some(Instant::now() + grace);
            ending = Some(exit);
        }
    }
    guard.disarm();
    if let Some(exit) = ending {
        return Ok(exit);
    }
    let status = status.ok_or_else(|| Error::internal("exec child status missing"))?;
    Ok(DriverExit::Finished {
        ok: status.success(),
        exit_code: status.code(),
        message: process::failure_message(&status),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_lines() {
        assert_eq!(
            classify(b"{\"kind\":\"agent.echo\",\"data\":{\"a\":1}}\n"),
            Parsed::Event {
                kind: "agent.echo".into(),
                data: json!({"a": 1})
            }
        );
        assert_eq!(
            classify(b"{\"kind\":\"agent.x\"}\r\n"),
            Parsed::Event {
                kind: "agent.x".into(),
                data: Value::Null
            }
        );
        assert_eq!(
            classify(b"{\"kind\":\"session.ended\"}"),
            Parsed::Invalid {
                reason: "reserved kind"
            }
        );
        assert_eq!(
            classify(b"{\"kind\":\"\"}"),
            Parsed::Invalid {
                reason: "empty kind"
            }
        );
        assert_eq!(classify(b"{\"kind\":3}\n"), Parsed::Text);
        assert_eq!(classify(b"[1,2]\n"), Parsed::Text);
        assert_eq!(classify(b"hello\n"), Parsed::Text);
        assert_eq!(classify(b"\xff{\n"), Parsed::Text);
    }

    #[test]
    fn input_lines_have_the_documented_shape() {
        let line = input_line(&Input {
            seq: 7,
            text: "hi \"there\"\n".into(),
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"kind\":\"user.input\",\"seq\":7,\"text\":\"hi \\\"there\\\"\\n\"}\n"
        );
    }

    fn spec(command: Option<Vec<&str>>) -> DriverSpec {
        DriverSpec {
            session_id: "sess_x".into(),
            workdir: "/".into(),
            driver: "exec".into(),
            command: command.map(|c| c.into_iter().map(String::from).collect()),
            env: Default::default(),
            journal_path: "/nonexistent/journal.ndjson".into(),
        }
    }

    #[test]
    fn factory_validates_the_command() {
        for bad in [None, Some(vec![]), Some(vec![""]), Some(vec!["", "x"])] {
            let e = ExecFactory.create(&spec(bad.clone())).err();
            assert_eq!(
                e.map(|e| e.kind()),
                Some(ErrorKind::InvalidParams),
                "{bad:?}"
            );
        }
        assert!(ExecFactory.create(&spec(Some(vec!["agent"]))).is_ok());
    }
}
