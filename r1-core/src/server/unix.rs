//! The unix socket transport: newline-delimited JSON-RPC 2.0, peer uid checked.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{UnixListener, UnixStream};
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

async fn handle(stream: UnixStream, rpc: Dispatcher) {
    let state = Arc::clone(rpc.state());
    let caller = Caller {
        transport: Transport::Unix,
        scope: Scope::Full,
    };
    let (conn, mut outbound) = state.register(caller.clone());
    let (rd, wr) = stream.into_split();

    // Writer: drains the connection's queue, flushing when it runs dry so bursts of
    // events go out in few syscalls.
    let closed = conn.closed.clone();
    let writer = tokio::spawn(async move {
        let mut w = BufWriter::with_capacity(64 * 1024, wr);
        loop {
            let first = tokio::select! {
                f = outbound.recv() => f,
                _ = closed.cancelled() => {
                    // Flush what is queued (e.g. daemon.stopping) before closing.
                    while let Ok(line) = outbound.try_recv() {
                        if w.write_all(line.as_bytes()).await.is_err() || w.write_all(b"\n").await.is_err() { break; }
                    }
                    let _ = w.flush().await;
                    return;
                }
            };
            let Some(line) = first else { break };
            if w.write_all(line.as_bytes()).await.is_err() || w.write_all(b"\n").await.is_err() {
                break;
            }
            while let Ok(more) = outbound.try_recv() {
                if w.write_all(more.as_bytes()).await.is_err() || w.write_all(b"\n").await.is_err()
                {
                    return;
                }
            }
            if w.flush().await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    });

    if let Some(notice) = state.reloaded_notice() {
        let _ = conn.out.send(notice).await;
    }

    let mut lines = FramedRead::new(
        rd,
        AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), MAX_LINE),
    );
    loop {
        let next = tokio::select! {
            n = lines.next() => n,
            _ = conn.closed.cancelled() => break,
        };
        let line: Bytes = match next {
            None => break,
            Some(Ok(l)) => l,
            Some(Err(AnyDelimiterCodecError::MaxChunkLengthExceeded)) => {
                let e = crate::Error::new(
                    crate::ErrorKind::TooLarge,
                    format!("message over {MAX_LINE} bytes"),
                );
                let _ = conn
                    .out
                    .send(envelope::failure(
                        &serde_json::Value::Null,
                        &codes::error_object(&e),
                    ))
                    .await;
                break;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "unix read failed");
                break;
            }
        };
        let trimmed: &[u8] = line.strip_suffix(b"\r").unwrap_or(&line);
        if trimmed.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let mut ctx = CallCtx::new(&caller, Some(&conn));
        if let Some(answer) = rpc.handle(&mut ctx, trimmed).await
            && conn.out.send(answer).await.is_err()
        {
            break;
        }
        ctx.replied();
    }
    state.unregister(&conn);
    conn.closed.cancel();
    drop(conn);
    let _ = writer.await;
    // What this connection freed (its buffers, and what its calls tore down, such
    // as deleted sessions) goes back to the system.
    super::memory::release_soon();
}
