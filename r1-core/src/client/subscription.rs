//! [`Subscription`]: a session's (or the bus's) records as a stream that survives
//! reconnects and daemon restarts with no gap and no duplicate.
//!
//! A driver task owns the subscription's state — the cursor `(epoch, last seq
//! delivered)` — and is the only one to touch it, so [`Subscription::next`] is just
//! a channel receive (cancel-safe: a timed-out `next` loses nothing). When the
//! connection's queue for this subscription ends, the driver resumes:
//!
//! * connection down (daemon stopped or restarted): dial again with the client's
//!   options (backoff 5 ms doubling to 250 ms, for up to
//!   [`DialOptions::reconnect_for`](super::DialOptions::reconnect_for)), then
//!   subscribe with `since_seq` = last seq delivered and `epoch` = its epoch. The
//!   daemon replays exactly what follows; anything at or below the cursor is
//!   dropped. The new daemon's `daemon.reloaded` notice is surfaced as an item.
//! * consumer too slow (the connection's bounded queue for it overflowed): the same
//!   re-subscribe on the same connection, so memory stays bounded and nothing is
//!   lost.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::api::Client;
use super::conn::{Conn, SubMsg};
use super::types::{Event, SubEvent, SubscribeReply};
use crate::error::{Error, ErrorKind, Result};

/// Items buffered for the consumer.
const OUT_QUEUE: usize = 64;
/// First delay between resume attempts; doubles up to [`RESUME_BACKOFF_MAX`].
const RESUME_BACKOFF_START: Duration = Duration::from_millis(5);
/// Longest delay between resume attempts.
const RESUME_BACKOFF_MAX: Duration = Duration::from_millis(250);

/// What is subscribed to.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// A session's journal (`session.subscribe`).
    Session(String),
    /// The daemon's bus (`daemon.subscribe`).
    Bus,
}

impl Target {
    fn request(&self, since_seq: Option<u64>, epoch: Option<&str>) -> (&'static str, Value) {
        match self {
            Target::Session(id) => {
                let mut p = json!({"session_id": id});
                if let Some(s) = since_seq {
                    p["since_seq"] = json!(s);
                }
                if let Some(e) = epoch {
                    p["epoch"] = json!(e);
                }
                ("session.subscribe", p)
            }
            Target::Bus => {
                let mut p = json!({});
                if let Some(s) = since_seq {
                    p["since_seq"] = json!(s);
                }
                ("daemon.subscribe", p)
            }
        }
    }
}

/// The position of what has been delivered.
#[derive(Debug, Clone)]
struct Cursor {
    last: u64,
    epoch: Option<String>,
}

impl Cursor {
    /// True when `ev` is new (and moves the cursor to it).
    fn accept(&mut self, ev: &Event) -> bool {
        if let Some(e) = &self.epoch
            && !ev.epoch.is_empty()
            && *e != ev.epoch
        {
            // A different epoch only follows a cut the daemon reported; its
            // records are new even where seq numbers repeat.
            self.epoch = Some(ev.epoch.clone());
            self.last = ev.seq;
            return true;
        }
        if ev.seq <= self.last {
            return false;
        }
        self.last = ev.seq;
        if self.epoch.is_none() && !ev.epoch.is_empty() {
            self.epoch = Some(ev.epoch.clone());
        }
        true
    }
}

/// A stream of [`SubEvent`]s. Use [`next`](Self::next) or, as a
/// `futures_util::Stream`, any stream combinator.
///
/// * Records arrive in seq order, each once, across reconnects and restarts.
/// * A session subscription **ends** (`None`) right after delivering the
///   `session.ended` record. A bus subscription ends only when dropped.
/// * `Some(Err(_))` is final (the session was deleted, or the daemon could not be
///   reached again within `reconnect_for`); `None` follows.
/// * Dropping it (or [`unsubscribe`](Self::unsubscribe)) stops the daemon's side.
/// * A live-only subscription (`since_seq: None`) to a session that has already
///   ended receives nothing; pass a `since_seq` to replay.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Result<SubEvent>>,
    stop: CancellationToken,
    first: SubscribeReply,
    task: Option<JoinHandle<()>>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Subscription {
    pub(crate) async fn start(
        client: Client,
        target: Target,
        since_seq: Option<u64>,
        epoch: Option<String>,
    ) -> Result<Subscription> {
        let conn = client.live_conn().await?;
        let (method, params) = target.request(since_seq, epoch.as_deref());
        let (reply, rx_in) = client.subscribe_on(&conn, method, params, false).await?;
        let mut cursor = Cursor {
            last: since_seq.unwrap_or(reply.current_seq),
            epoch: reply.epoch.clone().or(epoch),
        };
        let mut first_items = Vec::new();
        if let Some(r) = &reply.reset {
            cursor.last = cursor.last.min(r.last_good_seq);
            cursor.epoch = Some(r.epoch.clone());
            first_items.push(SubEvent::Reset(r.clone()));
        }
        let (tx, rx) = mpsc::channel(OUT_QUEUE);
        let stop = CancellationToken::new();
        let driver = Driver {
            client,
            target,
            conn,
            sub: reply.sub,
            rx_in,
            tx,
            stop: stop.clone(),
            cursor,
        };
        let task = tokio::spawn(driver.run(first_items));
        Ok(Subscription {
            rx,
            stop,
            first: reply,
            task: Some(task),
        })
    }

    /// The next item; `None` once the stream has ended. Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<SubEvent>> {
        self.rx.recv().await
    }

    /// The daemon's reply to the first subscribe (`sub`, `current_seq`, `epoch`).
    pub fn reply(&self) -> &SubscribeReply {
        &self.first
    }

    /// Stops the subscription (the daemon's side too) and waits for it to wind down.
    pub async fn unsubscribe(mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// A token that stops the subscription from anywhere (used by the blocking
    /// facade's `close`).
    pub(crate) fn stopper(&self) -> CancellationToken {
        self.stop.clone()
    }
}

impl futures_util::Stream for Subscription {
    type Item = Result<SubEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

struct Driver {
    client: Client,
    target: Target,
    conn: Arc<Conn>,
    sub: u64,
    rx_in: mpsc::Receiver<SubMsg>,
    tx: mpsc::Sender<Result<SubEvent>>,
    stop: CancellationToken,
    cursor: Cursor,
}

/// Errors a later attempt may not repeat (the daemon is away, or busy).
fn retriable(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Closed
            | ErrorKind::Timeout
            | ErrorKind::DaemonNotFound
            | ErrorKind::Io
            | ErrorKind::Protocol
    )
}

impl Driver {
    async fn run(mut self, first_items: Vec<SubEvent>) {
        for item in first_items {
            if !self.emit(Ok(item)).await {
                return self.finish();
            }
        }
        loop {
            let msg = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return self.finish(),
                m = self.rx_in.recv() => m,
            };
            match msg {
                Some(SubMsg::Event(params)) => {
                    let ev: Event = match serde_json::from_value(params) {
                        Ok(ev) => ev,
                        Err(e) => {
                            let err = Error::new(
                                ErrorKind::Protocol,
                                format!("the daemon sent a malformed $/event: {e}"),
                            );
                            let _ = self.emit(Err(err)).await;
                            return self.finish();
                        }
                    };
                    if !self.cursor.accept(&ev) {
                        continue;
                    }
                    let ended =
                        matches!(self.target, Target::Session(_)) && ev.kind == "session.ended";
                    if !self.emit(Ok(SubEvent::Record(ev))).await || ended {
                        return self.finish();
                    }
                }
                Some(SubMsg::Daemon(n)) => {
                    if !self.emit(Ok(SubEvent::Daemon(n))).await {
                        return self.finish();
                    }
                }
                None => match self.resume().await {
                    Ok(true) => {}
                    Ok(false) => return self.finish(),
                    Err(e) => {
                        let _ = self.emit(Err(e)).await;
                        return self.finish();
                    }
                },
            }
        }
    }

    /// Hands an item to the consumer; false when the consumer is gone or stopped.
    async fn emit(&self, item: Result<SubEvent>) -> bool {
        tokio::select! {
            r = self.tx.send(item) => r.is_ok(),
            _ = self.stop.cancelled() => false,
        }
    }

    /// Stops the daemon's side (best effort; the answer is not awaited).
    fn finish(&self) {
        self.conn.forget_sub(self.sub);
        if !self.conn.is_closed() {
            self.conn
                .send_detached("session.unsubscribe", json!({"sub": self.sub}));
        }
    }

    /// Re-subscribes after the queue ended. `Ok(false)`: stopped meanwhile.
    async fn resume(&mut self) -> Result<bool> {
        let give_up = Instant::now() + self.client.dialer().reconnect_for();
        let mut wait = RESUME_BACKOFF_START;
        if !self.conn.is_closed() {
            // We fell behind and the reader dropped us: stop the old feed first.
            self.finish();
        }
        let mut last_err: Option<Error>;
        loop {
            if self.stop.is_cancelled() {
                return Ok(false);
            }
            let attempt = async {
                let conn = self.client.live_conn().await?;
                let (method, params) = self
                    .target
                    .request(Some(self.cursor.last), self.cursor.epoch.as_deref());
                let fresh = !Arc::ptr_eq(&conn, &self.conn);
                let (reply, rx) = self
                    .client
                    .subscribe_on(&conn, method, params, fresh)
                    .await?;
                Ok::<_, Error>((conn, reply, rx))
            };
            match attempt.await {
                Ok((conn, reply, rx)) => {
                    tracing::debug!(
                        sub = reply.sub,
                        since_seq = self.cursor.last,
                        "subscription resumed"
                    );
                    self.conn = conn;
                    self.sub = reply.sub;
                    self.rx_in = rx;
                    if let Some(r) = reply.reset {
                        self.cursor.last = self.cursor.last.min(r.last_good_seq);
                        self.cursor.epoch = Some(r.epoch.clone());
                        if !self.emit(Ok(SubEvent::Reset(r))).await {
                            return Ok(false);
                        }
                    } else if let Some(ep) = reply.epoch {
                        self.cursor.epoch = Some(ep);
                    }
                    return Ok(true);
                }
                Err(e) if retriable(&e) => last_err = Some(e),
                Err(e) => return Err(e),
            }
            if Instant::now() >= give_up {
                let why = last_err.map_or_else(String::new, |e| format!(": {}", e.message()));
                return Err(Error::new(
                    ErrorKind::Closed,
                    format!(
                        "lost the daemon and could not resume the subscription within {:.0}s{why}",
                        self.client.dialer().reconnect_for().as_secs_f64()
                    ),
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.cancelled() => return Ok(false),
            }
            wait = (wait * 2).min(RESUME_BACKOFF_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, epoch: &str) -> Event {
        Event {
            seq,
            epoch: epoch.into(),
            kind: "k".into(),
            at: String::new(),
            data: Value::Null,
        }
    }

    #[test]
    fn cursor_drops_duplicates_and_follows_epochs() {
        let mut c = Cursor {
            last: 3,
            epoch: Some("a".into()),
        };
        assert!(!c.accept(&ev(2, "a")));
        assert!(!c.accept(&ev(3, "a")));
        assert!(c.accept(&ev(4, "a")));
        assert!(!c.accept(&ev(4, "a")));
        // After a reported cut, the new epoch's records are new even at lower seqs.
        assert!(c.accept(&ev(3, "b")));
        assert_eq!(c.last, 3);
        assert!(c.accept(&ev(4, "b")));
    }
}
