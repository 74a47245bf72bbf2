//! Delivering a journal to a subscriber: replay from disk, then live, with no gap
//! and no duplicate (DESIGN §7).
//!
//! The live side is the journal's bounded broadcast channel, registered under the
//! append lock together with `current_seq`. Whatever the subscriber misses — the
//! replay range, or records dropped because it lagged — is read back from the file,
//! so a slow subscriber never blocks its session.
//!
//! Memory: the ring keeps a record until every receiver has taken it, so a pump
//! stuck on a full sink (a client that stopped reading) would pin up to a whole ring
//! of the session's output (4,096 records of up to 64 KiB of shell output each). While
//! it waits for room, the pump therefore keeps taking live records and drops them
//! ("shedding"); once the sink has room it reads them back from the file.

use std::path::PathBuf;

use tokio::sync::mpsc::error::TrySendError;
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
    let mut shed = Shed::default();
    if last < src.current_seq {
        match catch_up(
            &src.path,
            &mut reader,
            &mut last,
            src.current_seq,
            &sink,
            &format,
            (&mut src.live, &mut shed),
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
                        (&mut src.live, &mut shed),
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
                    // A catch-up that shed live records read on to the end of the
                    // file, past `rec`: it was sent from disk already.
                    if rec.seq <= last {
                        continue;
                    }
                }
                if !send_shedding(&sink, format(&rec), &mut src.live, &mut shed).await {
                    return;
                }
                last = rec.seq;
                if shed.pending || shed.closed {
                    // Records taken off the ring while the sink was full: from disk.
                    match catch_up(
                        &src.path,
                        &mut reader,
                        &mut last,
                        u64::MAX,
                        &sink,
                        &format,
                        (&mut src.live, &mut shed),
                    )
                    .await
                    {
                        Ok(true) if !shed.closed => {}
                        Ok(_) => return,
                        Err(e) => {
                            tracing::warn!(path = %src.path.display(), error = %e, "subscription catch-up stopped");
                            return;
                        }
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::debug!(skipped = n, "subscriber lagged; reading from the journal");
            }
            Err(broadcast::error::RecvError::Closed) => {
                // The journal was closed: deliver whatever is left on disk, then stop.
                shed.closed = true;
                let _ = catch_up(
                    &src.path,
                    &mut reader,
                    &mut last,
                    u64::MAX,
                    &sink,
                    &format,
                    (&mut src.live, &mut shed),
                )
                .await;
                return;
            }
        }
    }
}

/// Live records the pump took off the ring (and dropped) while its sink was full.
#[derive(Debug, Default)]
struct Shed {
    /// Some were dropped: read the file to its end once the sink has room.
    pending: bool,
    /// The ring closed (the journal was closed) while shedding.
    closed: bool,
}

/// Sends `frame`, waiting for room in the sink; meanwhile takes live records off the
/// ring and drops them, noting in `shed` that they must be read from disk (see the
/// module docs). Returns false when the sink closed.
async fn send_shedding(
    sink: &mpsc::Sender<String>,
    frame: String,
    live: &mut broadcast::Receiver<RawRecord>,
    shed: &mut Shed,
) -> bool {
    match sink.try_reserve() {
        Ok(permit) => {
            permit.send(frame);
            return true;
        }
        Err(TrySendError::Closed(())) => return false,
        Err(TrySendError::Full(())) => {}
    }
    loop {
        tokio::select! {
            biased;
            permit = sink.reserve() => {
                return match permit {
                    Ok(p) => {
                        p.send(frame);
                        true
                    }
                    Err(_) => false,
                };
            }
            r = live.recv(), if !shed.closed => match r {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => shed.pending = true,
                Err(broadcast::error::RecvError::Closed) => shed.closed = true,
            },
        }
    }
}

/// Sends records (last, upto] from the file, then — if live records were shed while
/// it sent — the rest of the file. Returns false when the sink closed.
async fn catch_up(
    path: &std::path::Path,
    reader: &mut Option<(Reader, u64)>,
    last: &mut u64,
    mut upto: u64,
    sink: &mpsc::Sender<String>,
    format: &Formatter,
    (live, shed): (&mut broadcast::Receiver<RawRecord>, &mut Shed),
) -> Result<bool> {
    loop {
        if !catch_up_to(path, reader, last, upto, sink, format, live, shed).await? {
            return Ok(false);
        }
        if !shed.pending {
            return Ok(true);
        }
        shed.pending = false;
        upto = u64::MAX;
    }
}

#[allow(clippy::too_many_arguments)]
async fn catch_up_to(
    path: &std::path::Path,
    reader: &mut Option<(Reader, u64)>,
    last: &mut u64,
    upto: u64,
    sink: &mpsc::Sender<String>,
    format: &Formatter,
    live: &mut broadcast::Receiver<RawRecord>,
    shed: &mut Shed,
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
            if !send_shedding(sink, format(&rec), live, shed).await {
                return Ok(false);
            }
            *last = rec.seq;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Journal, WriterOptions};
    use serde_json::json;

    /// Regression: after the ring overran the pump (`Lagged`), the catch-up up to the
    /// next live record shed further live records, read on to the end of the file —
    /// past that record — and the pump then sent the record a second time.
    #[tokio::test(flavor = "current_thread")]
    async fn shedding_catch_up_after_lag_never_resends_a_record() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("journal.ndjson");
        let opts = WriterOptions {
            broadcast_capacity: 4,
            ..WriterOptions::default()
        };
        let j = Journal::create(&path, "e", "session.created", &json!({}), opts).unwrap();
        let (current, live) = j.subscribe();
        assert_eq!(current, 1);
        let (sink, mut out) = mpsc::channel::<String>(2);
        let (go, wait) = oneshot::channel();
        let format: Formatter = Box::new(|r: &RawRecord| r.seq.to_string());
        let source = Source {
            path: path.clone(),
            live,
            current_seq: current,
            gone: None,
        };
        let pump = tokio::spawn(pump(source, 1, wait, sink, format));
        // Ten records before the pump runs: the 4-slot ring overruns (Lagged), and
        // the 2-slot sink fills during the catch-up while live records wait.
        for i in 0..10 {
            j.append("session.delta", &json!({"i": i})).unwrap();
        }
        go.send(()).unwrap();
        let mut got = Vec::new();
        while got.last() != Some(&11u64) {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(5), out.recv())
                .await
                .expect("frames keep coming")
                .expect("pump alive");
            got.push(frame.parse::<u64>().unwrap());
            // Let the pump fill the sink again before reading on.
            tokio::task::yield_now().await;
        }
        j.append("session.delta", &json!({"i": "last"})).unwrap();
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), out.recv())
            .await
            .expect("the next record")
            .expect("pump alive");
        got.push(next.parse().unwrap());
        assert_eq!(
            got,
            (2..=12).collect::<Vec<u64>>(),
            "each record once, in order"
        );
        pump.abort();
    }
}
