//! Child output → records (DESIGN §6).
//!
//! * [`Utf8Decoder`]: bytes → lossy UTF-8 that holds back an incomplete trailing
//!   sequence, so a multi-byte character split across two reads is not mangled.
//! * [`pump_deltas`]: the `shell` driver's pipe reader — `session.delta {stream, text,
//!   lane_id}` records of at most [`MAX_DELTA_BYTES`], small writes coalesced for up to
//!   [`COALESCE`].
//! * [`LineReader`]: the `exec` driver's bounded line splitter.

use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Emitter;
use crate::error::Result;

/// Most text (UTF-8 bytes) in one `session.delta` record.
pub const MAX_DELTA_BYTES: usize = 64 * 1024;

/// How long small writes are held to be coalesced into one record.
pub const COALESCE: std::time::Duration = std::time::Duration::from_millis(10);

/// Lossy, incremental UTF-8 decoding.
#[derive(Debug, Default)]
pub struct Utf8Decoder {
    /// An incomplete sequence at the end of the last push (at most 3 bytes).
    partial: Vec<u8>,
}

impl Utf8Decoder {
    /// Decodes `bytes` onto `out`; invalid sequences become U+FFFD, an incomplete
    /// sequence at the end is kept for the next push.
    pub fn push(&mut self, bytes: &[u8], out: &mut String) {
        if self.partial.is_empty() {
            self.partial = decode_into(bytes, out).to_vec();
        } else {
            let mut joined = std::mem::take(&mut self.partial);
            joined.extend_from_slice(bytes);
            self.partial = decode_into(&joined, out).to_vec();
        }
    }

    /// End of input: a held incomplete sequence becomes U+FFFD.
    pub fn finish(&mut self, out: &mut String) {
        if !self.partial.is_empty() {
            out.push_str(&String::from_utf8_lossy(&self.partial));
            self.partial.clear();
        }
    }

    /// True when bytes are held back.
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty()
    }
}

/// Appends the lossy decoding of `bytes` to `out` and returns an incomplete trailing
/// sequence, which is not decoded.
fn decode_into<'a>(mut bytes: &'a [u8], out: &mut String) -> &'a [u8] {
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                return &[];
            }
            Err(e) => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                // `valid` is valid UTF-8 by construction; lossy costs nothing here.
                out.push_str(&String::from_utf8_lossy(valid));
                match e.error_len() {
                    Some(n) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        bytes = rest.get(n..).unwrap_or_default();
                    }
                    None => return rest,
                }
            }
        }
    }
}

/// Splits off and returns the longest prefix of `text` of at most `max` bytes that
/// ends on a character boundary (at least one character, so progress is certain).
pub fn take_chunk(text: &mut String, max: usize) -> String {
    if text.len() <= max {
        return std::mem::take(text);
    }
    let mut cut = max;
    while cut > 0 && !text.is_char_boundary(cut) {
        cut -= 1;
    }
    if cut == 0 {
        // `max` is smaller than the first character: take that character whole.
        cut = text.chars().next().map_or(text.len(), char::len_utf8);
    }
    let rest = text.split_off(cut);
    std::mem::replace(text, rest)
}

/// The data of a `session.delta` record.
pub fn delta_data(stream: &str, text: String, lane_id: Option<u64>) -> Value {
    let mut m = Map::new();
    m.insert("stream".to_owned(), json!(stream));
    m.insert("text".to_owned(), Value::String(text));
    if let Some(lane) = lane_id {
        m.insert("lane_id".to_owned(), json!(lane));
    }
    Value::Object(m)
}

/// Emits `text` as `session.delta` records of at most [`MAX_DELTA_BYTES`] each.
pub async fn emit_text(
    emitter: &Emitter,
    stream: &str,
    lane_id: Option<u64>,
    text: &mut String,
) -> Result<()> {
    while !text.is_empty() {
        let chunk = take_chunk(text, MAX_DELTA_BYTES);
        emitter
            .emit("session.delta", delta_data(stream, chunk, lane_id))
            .await?;
    }
    Ok(())
}

/// Reads `reader` to EOF (or until `give_up` turns true) and emits what it read as
/// `session.delta` records: at most [`MAX_DELTA_BYTES`] of text each, small writes
/// held for up to [`COALESCE`] to share a record, a multi-byte character never split
/// across records unless the stream ends inside it. Read errors end the stream (they
/// are logged); emit errors are returned.
pub async fn pump_deltas<R: AsyncRead + Unpin>(
    mut reader: R,
    stream: &str,
    lane_id: Option<u64>,
    emitter: Emitter,
    mut give_up: watch::Receiver<bool>,
) -> Result<()> {
    let mut buf = vec![0u8; MAX_DELTA_BYTES];
    let mut decoder = Utf8Decoder::default();
    let mut text = String::new();
    let mut flush_at: Option<Instant> = None;
    loop {
        if flush_at.is_some_and(|t| t <= Instant::now()) {
            emit_text(&emitter, stream, lane_id, &mut text).await?;
            flush_at = None;
        }
        let read = tokio::select! {
            biased;
            r = reader.read(&mut buf) => r,
            _ = sleep_until_opt(flush_at) => continue,
            _ = give_up.wait_for(|g| *g) => break,
        };
        match read {
            Ok(0) => break,
            Ok(n) => {
                decoder.push(buf.get(..n).unwrap_or_default(), &mut text);
                while text.len() >= MAX_DELTA_BYTES {
                    let mut chunk = take_chunk(&mut text, MAX_DELTA_BYTES);
                    emit_text(&emitter, stream, lane_id, &mut chunk).await?;
                }
                if text.is_empty() {
                    flush_at = None;
                } else if flush_at.is_none() {
                    flush_at = Some(Instant::now() + COALESCE);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => {
                tracing::warn!(stream, %error, "cannot read child output");
                break;
            }
        }
    }
    decoder.finish(&mut text);
    emit_text(&emitter, stream, lane_id, &mut text).await
}

/// Sleeps until `at`, or forever when `None` (for optional `select!` timers).
pub async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// One piece of a line-oriented stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The bytes, including the `\n` when there was one.
    pub bytes: Vec<u8>,
    /// False when the line was longer than the reader's limit and this is a piece of
    /// it (more pieces follow).
    pub whole: bool,
}

/// Splits a stream into lines of at most `max` bytes without holding more than that.
/// Cancel safe: a partial line survives a dropped [`next_line`](Self::next_line).
#[derive(Debug)]
pub struct LineReader<R> {
    reader: R,
    buf: Vec<u8>,
    max: usize,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    /// Reads lines of at most `max` bytes (longer ones come in pieces).
    pub fn new(reader: R, max: usize) -> LineReader<R> {
        LineReader {
            reader,
            buf: Vec::new(),
            max: max.max(1),
        }
    }

    /// Bytes read but not yet returned (an unterminated line), for a caller that
    /// stops reading before EOF.
    pub fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// The next line (with its `\n`), a piece of an over-long line, the unterminated
    /// last line, or `None` at EOF.
    pub async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            let avail = self.reader.fill_buf().await?;
            if avail.is_empty() {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(Line {
                    bytes: std::mem::take(&mut self.buf),
                    whole: true,
                }));
            }
            let room = self.max.saturating_sub(self.buf.len());
            let window = avail.get(..room.min(avail.len())).unwrap_or_default();
            if let Some(i) = window.iter().position(|&b| b == b'\n') {
                self.buf
                    .extend_from_slice(window.get(..=i).unwrap_or_default());
                self.reader.consume(i + 1);
                return Ok(Some(Line {
                    bytes: std::mem::take(&mut self.buf),
                    whole: true,
                }));
            }
            let n = window.len();
            self.buf.extend_from_slice(window);
            self.reader.consume(n);
            if self.buf.len() >= self.max {
                return Ok(Some(Line {
                    bytes: std::mem::take(&mut self.buf),
                    whole: false,
                }));
            }
        }
    }
}

impl<R: AsyncRead + Unpin> LineReader<tokio::io::BufReader<R>> {
    /// The next whole line if it is already in the read buffer, without reading: for
    /// a caller that gathers what arrived together (the batch is then bounded by the
    /// buffer's size). `None` when only part of a line is buffered, or while a line
    /// started by [`next_line`](Self::next_line) is pending.
    pub fn buffered_line(&mut self) -> Option<Line> {
        if !self.buf.is_empty() {
            return None;
        }
        let avail = self.reader.buffer();
        let window = avail.get(..self.max.min(avail.len())).unwrap_or_default();
        let end = window.iter().position(|&b| b == b'\n')? + 1;
        let bytes = window.get(..end).unwrap_or_default().to_vec();
        self.reader.consume(end);
        Some(Line { bytes, whole: true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(bytes: &[u8], piece: usize) -> String {
        let mut d = Utf8Decoder::default();
        let mut out = String::new();
        for p in bytes.chunks(piece) {
            d.push(p, &mut out);
        }
        d.finish(&mut out);
        out
    }

    #[test]
    fn decoder_joins_characters_split_across_pushes() {
        let s = "héllo wörld € 😀 done";
        for piece in 1..6 {
            assert_eq!(decode_in_pieces(s.as_bytes(), piece), s, "piece {piece}");
        }
    }

    #[test]
    fn decoder_replaces_invalid_bytes() {
        assert_eq!(decode_in_pieces(b"a\xffb\n", 1), "a\u{FFFD}b\n");
        assert_eq!(decode_in_pieces(b"a\xffb\n", 10), "a\u{FFFD}b\n");
        // A truncated sequence at the very end.
        assert_eq!(decode_in_pieces(b"ok\xe2\x82", 10), "ok\u{FFFD}");
        // A lead byte followed by a non-continuation.
        assert_eq!(decode_in_pieces(b"\xe2x", 1), "\u{FFFD}x");
    }

    #[test]
    fn decoder_holds_only_incomplete_tails() {
        let mut d = Utf8Decoder::default();
        let mut out = String::new();
        d.push("a€".as_bytes().get(..2).unwrap_or_default(), &mut out);
        assert_eq!(out, "a");
        assert!(d.has_partial());
        d.push("€".as_bytes().get(1..).unwrap_or_default(), &mut out);
        assert_eq!(out, "a€");
        assert!(!d.has_partial());
    }

    #[test]
    fn chunks_end_on_char_boundaries() {
        let mut t = "ééé".to_owned(); // 6 bytes
        assert_eq!(take_chunk(&mut t, 3), "é");
        assert_eq!(take_chunk(&mut t, 4), "éé");
        assert_eq!(t, "");
        let mut t = "€x".to_owned();
        assert_eq!(take_chunk(&mut t, 1), "€");
        assert_eq!(take_chunk(&mut t, 1), "x");
    }

    #[tokio::test]
    async fn pump_coalesces_small_writes_and_flushes_after_a_pause() {
        use crate::driver::testing::{MemorySink, delta_text};
        use tokio::io::AsyncWriteExt;

        let sink = MemorySink::new();
        let (mut w, r) = tokio::io::duplex(1024);
        let (_give_up_tx, give_up) = watch::channel(false);
        let pump = tokio::spawn(pump_deltas(r, "stdout", Some(4), sink.emitter(), give_up));
        // Two writes with no pause between them share a record ...
        w.write_all(b"a").await.unwrap();
        w.write_all(b"b").await.unwrap();
        sink.wait_for(std::time::Duration::from_secs(10), |r| r.len() == 1)
            .await
            .unwrap();
        // ... a write after the coalescing window gets its own.
        w.write_all(b"c").await.unwrap();
        drop(w);
        pump.await.unwrap().unwrap();
        let records = sink.records();
        assert_eq!(records.len(), 2, "{records:?}");
        assert_eq!(
            records[0].data,
            json!({"stream": "stdout", "text": "ab", "lane_id": 4})
        );
        assert_eq!(delta_text(&records, "stdout", Some(4)), "abc");
    }

    #[tokio::test]
    async fn pump_gives_up_on_request_and_keeps_what_it_read() {
        use crate::driver::testing::{MemorySink, delta_text};
        use tokio::io::AsyncWriteExt;

        let sink = MemorySink::new();
        let (mut w, r) = tokio::io::duplex(1024);
        let (give_up_tx, give_up) = watch::channel(false);
        let pump = tokio::spawn(pump_deltas(r, "stderr", None, sink.emitter(), give_up));
        // A character split at the give-up point comes out as U+FFFD.
        w.write_all("x\u{e9}".as_bytes().get(..2).unwrap())
            .await
            .unwrap();
        sink.wait_for(std::time::Duration::from_secs(10), |r| r.len() == 1)
            .await
            .unwrap();
        give_up_tx.send_replace(true);
        pump.await.unwrap().unwrap();
        assert_eq!(delta_text(&sink.records(), "stderr", None), "x\u{FFFD}");
        drop(w);
    }

    #[tokio::test]
    async fn line_reader_splits_and_bounds() {
        let data: &[u8] = b"one\ntwo-is-long\nlast";
        let mut r = LineReader::new(tokio::io::BufReader::with_capacity(3, data), 8);
        let mut got = Vec::new();
        while let Some(l) = r.next_line().await.unwrap() {
            got.push((String::from_utf8(l.bytes).unwrap(), l.whole));
        }
        assert_eq!(
            got,
            vec![
                ("one\n".to_owned(), true),
                ("two-is-l".to_owned(), false),
                ("ong\n".to_owned(), true),
                ("last".to_owned(), true),
            ]
        );
    }

    #[tokio::test]
    async fn buffered_line_takes_only_whole_lines_already_read() {
        let data: &[u8] = b"a\nbb\nccc\ndd-is-longer-than-max\ne\npartial";
        let mut r = LineReader::new(tokio::io::BufReader::with_capacity(64, data), 8);
        let take = |l: Option<Line>| l.map(|l| (String::from_utf8(l.bytes).unwrap(), l.whole));
        // Nothing is read yet.
        assert_eq!(take(r.buffered_line()), None);
        // One read fills the buffer with everything; the rest comes without reading.
        assert_eq!(
            take(r.next_line().await.unwrap()),
            Some(("a\n".into(), true))
        );
        assert_eq!(take(r.buffered_line()), Some(("bb\n".into(), true)));
        assert_eq!(take(r.buffered_line()), Some(("ccc\n".into(), true)));
        // A line over the limit is not whole within the window: left to next_line.
        assert_eq!(take(r.buffered_line()), None);
        assert_eq!(
            take(r.next_line().await.unwrap()),
            Some(("dd-is-lo".into(), false))
        );
        // While a line is pending in pieces, nothing is taken from the buffer.
        assert_eq!(take(r.buffered_line()), None);
        assert_eq!(
            take(r.next_line().await.unwrap()),
            Some(("nger-tha".into(), false))
        );
        assert_eq!(
            take(r.next_line().await.unwrap()),
            Some(("n-max\n".into(), true))
        );
        assert_eq!(take(r.buffered_line()), Some(("e\n".into(), true)));
        // An unterminated tail is not a whole line yet.
        assert_eq!(take(r.buffered_line()), None);
        assert_eq!(
            take(r.next_line().await.unwrap()),
            Some(("partial".into(), true))
        );
        assert_eq!(take(r.next_line().await.unwrap()), None);
    }
}
