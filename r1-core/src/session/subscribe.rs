//! Delivering a journal to a subscriber: replay from disk, then live, with no gap
//! and no duplicate (DESIGN §7).
//!
//! The live side is the journal's bounded broadcast channel, registered under the
//! append lock together with `current_seq`. Whatever the subscriber misses — the
//! replay range, or records dropped because it lagged — is read back from the file,
//! so a slow subscriber never blocks its session and never holds more than one
//! channel's worth of records in memory.

use std::path::PathBuf;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::error::{Error, Result};
use crate::journal::{RawRecord, Reader};

/// How many records one disk read hands over at a time.
const DISK_CHUNK: usize = 512;

/// Turns a record into the frame a transport sends (`$/event` line, SSE event …).
pub type Formatter = Box<dyn Fn(&RawRecord) -> String + Send + Sync>;

/// Where a pump reads from.
pub struct Source {
    /// The journal file (for replay and catch-up).
    pub path: PathBuf,
    /// The live receiver, registered together with `current_seq`.
    pub live: broadcast::Receiver<RawRecord>,
    /// The last seq when `live` was registered.
    pub current_seq: u64,
    /// Fires when the session is deleted.
    pub gone: Option<watch::Receiver<bool>>,
}

/// Runs until the sink closes, the session is deleted, or the journal is closed
/// and fully delivered. Sends nothing before `go` fires (the subscribe reply goes
/// first). Records with seq ≤ `after` are never sent.
pub async fn pump(
    mut src: Source,
    after: u64,
    go: oneshot::Receiver<()>,
    sink: mpsc::Sender<String>,
    format: Formatter,
) {
    if go.await.is_err() {
        return;
    }
    let mut last = after;
    let mut reader: Option<(Reader, u64)> = None;
    if last < src.current_seq {
        match catch_up(
            &src.path,
            &mut reader,
            &mut last,
            src.current_seq,
            &sink,
            &format,
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(path = %src.path.display(), error = %e, "subscription replay stopped");
                return;
            }
        }
    }
    loop {
        let next = match &mut src.gone {
            Some(gone) => tokio::select! {
                r = src.live.recv() => r,
                _ = gone.wait_for(|g| *g) => return,
            },
            None => src.live.recv().await,
        };
        match next {
            Ok(rec) => {
                if rec.seq <= last {
                    continue;
                }
                if rec.seq > last + 1 {
                    // Records we missed (lagged): they are on disk, before `rec`.
                    match catch_up(
                        &src.path,
                        &mut reader,
                        &mut last,
                        rec.seq - 1,
                        &sink,
                        &format,
                    )
                    .await
                    {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) => {
                            tracing::warn!(path = %src.path.display(), error = %e, "subscription catch-up stopped");
                            return;
                        }
                    }
                }
                if sink.send(format(&rec)).await.is_err() {
                    return;
                }
                last = rec.seq;
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::debug!(skipped = n, "subscriber lagged; reading from the journal");
            }
            Err(broadcast::error::RecvError::Closed) => {
                // The journal was closed: deliver whatever is left on disk, then stop.
                let _ = catch_up(&src.path, &mut reader, &mut last, u64::MAX, &sink, &format).await;
                return;
            }
        }
    }
}

/// Sends records (last, upto] from the file. Returns false when the sink closed.
async fn catch_up(
    path: &std::path::Path,
    reader: &mut Option<(Reader, u64)>,
    last: &mut u64,
    upto: u64,
    sink: &mpsc::Sender<String>,
    format: &Formatter,
) -> Result<bool> {
    while *last < upto {
        let from = *last;
        let (mut r, at) = match reader.take() {
            Some(pair) => pair,
            None => (Reader::open(path)?, u64::MAX),
        };
        let (r, pos, chunk) =
            tokio::task::spawn_blocking(move || -> Result<(Reader, u64, Vec<RawRecord>)> {
                // Reuse the reader's position when it is exactly where we need it.
                if at != from {
                    r.seek(from)?;
                }
                let mut out: Vec<RawRecord> = Vec::new();
                let mut pos = from;
                while out.len() < DISK_CHUNK {
                    match r.next_record()? {
                        Some(rec) if rec.seq > upto => {
                            // Consumed one record too many: the position is no longer known.
                            pos = u64::MAX;
                            break;
                        }
                        Some(rec) if rec.seq <= from => continue,
                        Some(rec) => {
                            pos = rec.seq;
                            out.push(rec);
                        }
                        None => break,
                    }
                }
                Ok((r, pos, out))
            })
            .await
            .map_err(|e| Error::internal(format!("journal read task failed: {e}")))??;
        *reader = Some((r, pos));
        if chunk.is_empty() {
            break;
        }
        for rec in chunk {
            if rec.seq != *last + 1 {
                // A hole on disk would be damage; never paper over it.
                return Err(Error::new(
                    crate::ErrorKind::JournalDamaged,
                    format!(
                        "journal {} jumps from seq {} to {}",
                        path.display(),
                        last,
                        rec.seq
                    ),
                ));
            }
            if sink.send(format(&rec)).await.is_err() {
                return Ok(false);
            }
            *last = rec.seq;
        }
    }
    Ok(true)
}
