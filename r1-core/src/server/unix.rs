//! The unix socket transport: newline-delimited JSON-RPC 2.0, peer uid checked.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead};

use super::auth::Scope;
use super::state::{Caller, Transport};
use crate::rpc::codes;
use crate::rpc::dispatch::{CallCtx, Dispatcher};
use crate::rpc::envelope;

/// Longest line accepted (DESIGN §4).
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// Accepts connections until shutdown.
pub async fn serve(listener: UnixListener, rpc: Dispatcher) {
    let shutdown = rpc.state().shutdown.clone();
    let our_uid = crate::paths::current_uid();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "unix accept failed");
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == our_uid => {}
            Ok(cred) => {
                tracing::warn!(peer_uid = cred.uid(), peer_pid = ?cred.pid(), "refused a unix connection from another user");
                drop(stream);
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "refused a unix connection whose peer cannot be identified");
                continue;
            }
        }
        tokio::spawn(handle(stream, rpc.clone()));
    }
}

/// The call a connection is running: its answer (none for a notification) and the
/// context to release once the answer is written. One at a time: the next line is
/// read once this one is answered.
type Call<'a> = super::RunningCall<'a, (Option<String>, CallCtx<'a>)>;

/// Serves one connection in one task that reads, runs calls and writes.
///
/// One task, not a reader and a writer: with two, each answer went through the
/// queue to wake the writer, which tokio could run on the other worker thread (a
/// wake-up and a hand-off per call), and every connection cost two tasks. The
/// answer is written by the task that read the request, as the echo floor does
/// and as the WebSocket loop does; queued events (subscriptions, notices) are
/// written by the same task between calls. (Row 1 of the benchmark did not move
/// measurably with this; see docs/benchmarks.md.)
async fn handle(stream: UnixStream, rpc: Dispatcher) {
    let state = Arc::clone(rpc.state());
    let caller = Caller {
        transport: Transport::Unix,
        scope: Scope::Full,
    };
    let (conn, mut outbound) = state.register(caller.clone());
    let (rd, wr) = stream.into_split();
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, wr);
    if let Some(notice) = state.reloaded_notice() {
        // The queue is new and empty: this cannot wait.
        let _ = conn.out.send(notice).await;
    }
    let mut lines = FramedRead::new(
        rd,
        AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), MAX_LINE),
    );
    let closed = conn.closed.clone();
    let mut closed = std::pin::pin!(closed.cancelled_owned());
    let mut call: Option<Call<'_>> = None;

    loop {
        tokio::select! {
            // Closes first; then the call's answer; then requests before queued
            // events, so a busy subscription cannot starve the peer's requests.
            biased;
            _ = &mut closed => {
                // Daemon stopping: flush what is queued (`daemon.stopping`) first.
                let _ = write_queued(&mut out, &mut outbound, None).await;
                break;
            }
            (answer, ctx) = super::running(&mut call), if call.is_some() => {
                call = None;
                if write_reply(&mut out, &mut outbound, answer).await.is_err() {
                    break;
                }
                ctx.replied();
            }
            next = lines.next(), if call.is_none() => {
                let line: Bytes = match next {
                    None => break,
                    Some(Ok(l)) => l,
                    Some(Err(AnyDelimiterCodecError::MaxChunkLengthExceeded)) => {
                        let e = crate::Error::new(
                            crate::ErrorKind::TooLarge,
                            format!("message over {MAX_LINE} bytes"),
                        );
                        let answer = envelope::failure(&serde_json::Value::Null, &codes::error_object(&e));
                        let _ = write_reply(&mut out, &mut outbound, Some(answer)).await;
                        break;
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "unix read failed");
                        break;
                    }
                };
                call = start(&rpc, &caller, &conn, line);
            }
            first = outbound.recv() => {
                let Some(first) = first else { break };
                if write_queued(&mut out, &mut outbound, Some(first)).await.is_err() {
                    break;
                }
            }
        }
    }
    // A call still running finishes (its answer has nowhere to go): calls are not
    // cancelled half-way, whatever ended the connection.
    if let Some(running) = call.take() {
        let _ = running.await;
    }
    drop(call);
    state.unregister(&conn);
    conn.closed.cancel();
    drop(conn);
    let _ = out.shutdown().await;
    // What this connection freed (its buffers, and what its calls tore down, such
    // as deleted sessions) goes back to the system.
    super::memory::release_soon();
}

/// Bytes of answers and events gathered before a write: a burst of events goes
/// out in few syscalls.
const WRITE_BUFFER: usize = 64 * 1024;

/// The call for one line, or none for a blank one.
fn start<'a>(
    rpc: &'a Dispatcher,
    caller: &'a Caller,
    conn: &'a Arc<super::state::Conn>,
    line: Bytes,
) -> Option<Call<'a>> {
    let trimmed: &[u8] = line.strip_suffix(b"\r").unwrap_or(&line);
    if trimmed.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    // Boxed: the dispatcher's future is large, and lives only while a call runs.
    Some(Box::pin(async move {
        let mut ctx = CallCtx::new(caller, Some(conn));
        let trimmed: &[u8] = line.strip_suffix(b"\r").unwrap_or(&line);
        let answer = rpc.handle(&mut ctx, trimmed).await;
        (answer, ctx)
    }))
}

/// Writes a call's answer after every line queued before it (events of
/// subscriptions, notices), so the order is the one the queue would have given,
/// then flushes.
async fn write_reply<W: AsyncWrite + Unpin>(
    out: &mut BufWriter<W>,
    outbound: &mut mpsc::Receiver<String>,
    answer: Option<String>,
) -> std::io::Result<()> {
    // Only what is queued now: a busy subscription must not hold the answer back.
    for _ in 0..outbound.len() {
        let Ok(line) = outbound.try_recv() else { break };
        write_line(out, &line).await?;
    }
    if let Some(answer) = answer {
        write_line(out, &answer).await?;
    }
    out.flush().await
}

/// Writes `first` and whatever else is queued, then flushes.
async fn write_queued<W: AsyncWrite + Unpin>(
    out: &mut BufWriter<W>,
    outbound: &mut mpsc::Receiver<String>,
    first: Option<String>,
) -> std::io::Result<()> {
    if let Some(first) = first {
        write_line(out, &first).await?;
    }
    while let Ok(more) = outbound.try_recv() {
        write_line(out, &more).await?;
    }
    out.flush().await
}

async fn write_line<W: AsyncWrite + Unpin>(
    out: &mut BufWriter<W>,
    line: &str,
) -> std::io::Result<()> {
    out.write_all(line.as_bytes()).await?;
    out.write_all(b"\n").await
}
