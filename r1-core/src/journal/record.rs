//! One journal line (DESIGN §5).
//!
//! ```text
//! {"v":1,"seq":7,"crc":"1a2b3c4d","at":"2026-05-02T18:30:00.123Z","kind":"tool.end","data":{...}}\n
//! ```
//!
//! Every line starts with exactly `{"v":1,"seq":<decimal>,"crc":"<8 lowercase hex>",`.
//! The CRC-32C covers the bytes after that prefix up to, not including, the `\n` (the
//! *body*). A reader verifies a line without re-serialising it and finds a seq by
//! looking at the start of a line. The body is also exactly what `$/event` carries
//! after `"seq":…,"epoch":…,`, so fan-out never re-serialises a record.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The journal format version this build writes and reads.
pub const JOURNAL_VERSION: u64 = 1;

/// Longest accepted line (DESIGN §4 caps messages at 16 MiB; a record carrying one
/// plus its envelope must fit).
pub const MAX_LINE_BYTES: usize = 32 * 1024 * 1024;

/// Kinds that are fsync'd before the call that caused them returns.
pub const DURABLE_KINDS: &[&str] = &[
    "session.created",
    "user.input",
    "session.paused",
    "session.resumed",
    "session.reattached",
    "session.ended",
    "journal.repaired",
];

/// True for the kinds of [`DURABLE_KINDS`].
pub fn is_durable_kind(kind: &str) -> bool {
    DURABLE_KINDS.contains(&kind)
}

/// Kinds a driver child may not write itself (DESIGN §6).
pub fn is_reserved_kind(kind: &str) -> bool {
    ["session.", "user.", "journal.", "daemon."]
        .iter()
        .any(|p| kind.starts_with(p))
}

/// A parsed record, for APIs that hand out structured values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Format version (`1`).
    pub v: u64,
    /// 1-based, contiguous.
    pub seq: u64,
    /// CRC-32C of the body, 8 lowercase hex digits.
    pub crc: String,
    /// RFC 3339 UTC with milliseconds.
    pub at: String,
    /// What happened (`session.delta`, `tool.end`, …).
    pub kind: String,
    /// Kind-specific payload.
    #[serde(default)]
    pub data: serde_json::Value,
}

/// A verified line as stored, shared cheaply between the writer, subscribers and
/// readers. `line` excludes the trailing `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// The record's seq.
    pub seq: u64,
    line: Arc<str>,
    body_start: usize,
}

impl RawRecord {
    /// A record from a line the writer just encoded itself (prefix, CRC and shape are
    /// right by construction), without re-parsing it on the append hot path.
    pub(crate) fn from_encoded(seq: u64, line: &str, body_start: usize) -> RawRecord {
        RawRecord {
            seq,
            line: Arc::from(line),
            body_start,
        }
    }

    /// The whole line without its newline.
    pub fn line(&self) -> &str {
        &self.line
    }

    /// The bytes after the fixed prefix: `"at":…,"kind":…,"data":…}`.
    pub fn body(&self) -> &str {
        &self.line[self.body_start..]
    }

    /// Parses the line into a [`Record`].
    pub fn to_record(&self) -> crate::Result<Record> {
        Ok(serde_json::from_str(&self.line)?)
    }

    /// The line as a JSON value.
    pub fn to_value(&self) -> crate::Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.line)?)
    }

    /// The record's kind, read from the body without parsing `data`.
    pub fn kind(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct KindOnly {
            kind: String,
        }
        serde_json::from_str::<KindOnly>(&self.line)
            .ok()
            .map(|k| k.kind)
    }

    /// The record's kind without parsing the line when it can be read off the body's
    /// fixed shape (`"at":"…","kind":"…"`, as r1 writes it, with no escapes); parsed
    /// otherwise. For scans over whole journals (recovery, reattach).
    pub fn kind_ref(&self) -> Option<std::borrow::Cow<'_, str>> {
        const KIND_KEY: &str = "\",\"kind\":\"";
        let fast = self.body().strip_prefix("\"at\":\"").and_then(|rest| {
            // r1's timestamps are 24 bytes: look there before searching.
            let i = if rest.get(24..24 + KIND_KEY.len()) == Some(KIND_KEY) {
                24
            } else {
                rest.find(KIND_KEY)?
            };
            if rest[..i].contains(['\\', '"']) {
                return None;
            }
            let after = &rest[i + KIND_KEY.len()..];
            let k = &after[..after.find('"')?];
            (!k.contains('\\')).then_some(k)
        });
        match fast {
            Some(k) => Some(std::borrow::Cow::Borrowed(k)),
            None => self.kind().map(std::borrow::Cow::Owned),
        }
    }

    /// The `params` of a `$/event` notification minus the leading `{"sub":N,`:
    /// `"seq":S,"epoch":"E",<body>` (the body closes the params object).
    pub fn event_params_tail(&self, epoch: &str) -> String {
        let body = self.body();
        let mut s = String::with_capacity(body.len() + epoch.len() + 40);
        s.push_str("\"seq\":");
        s.push_str(itoa_u64(self.seq).as_str());
        s.push_str(",\"epoch\":");
        push_json_str(&mut s, epoch);
        s.push(',');
        s.push_str(body);
        s
    }
}

fn itoa_u64(n: u64) -> String {
    n.to_string()
}

fn push_json_str(out: &mut String, s: &str) {
    match serde_json::to_string(s) {
        Ok(q) => out.push_str(&q),
        Err(_) => out.push_str("\"\""),
    }
}

/// Why a line is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The line does not start with the fixed prefix.
    #[error("the line does not start with the {{\"v\":1,\"seq\":N,\"crc\":\"…\", prefix")]
    BadPrefix,
    /// A `v` newer than this build understands.
    #[error("journal format v{found} is newer than this r1 (reads v{supported}); upgrade r1")]
    NewerVersion {
        /// The version found.
        found: u64,
        /// The version this build reads.
        supported: u64,
    },
    /// The CRC does not match the body.
    #[error("crc mismatch: the line says {stored}, its bytes hash to {computed}")]
    CrcMismatch {
        /// The crc written in the line.
        stored: String,
        /// The crc of the bytes.
        computed: String,
    },
    /// The body is not valid UTF-8 / JSON of the record shape.
    #[error("the line is not a valid record: {0}")]
    BadBody(String),
    /// Longer than [`MAX_LINE_BYTES`].
    #[error("the line is longer than {MAX_LINE_BYTES} bytes")]
    TooLong,
}

/// Encodes one record line, including its trailing `\n`.
pub fn encode_line(
    seq: u64,
    at: &str,
    kind: &str,
    data: &serde_json::Value,
) -> crate::Result<String> {
    #[derive(Serialize)]
    struct Body<'a> {
        at: &'a str,
        kind: &'a str,
        data: &'a serde_json::Value,
    }
    let body_obj = serde_json::to_string(&Body { at, kind, data })?;
    // `{"at":…}` → `"at":…}`: the body is everything after the prefix's comma.
    let body = &body_obj[1..];
    let crc = crc32c::crc32c(body.as_bytes());
    let mut line = String::with_capacity(body.len() + 48);
    line.push_str("{\"v\":");
    line.push_str(&JOURNAL_VERSION.to_string());
    line.push_str(",\"seq\":");
    line.push_str(&seq.to_string());
    line.push_str(",\"crc\":\"");
    line.push_str(&format!("{crc:08x}"));
    line.push_str("\",");
    line.push_str(body);
    line.push('\n');
    Ok(line)
}

/// Parses the fixed prefix of `line` (no trailing newline): `(v, seq, crc, body_start)`.
pub fn parse_prefix(line: &[u8]) -> Result<(u64, u64, u32, usize), LineError> {
    // `?` on Options, not `ok_or(LineError::…)`: that builds (and drops) an error
    // value on every good line, and every journal line passes here.
    let parsed = (|| {
        let rest = line.strip_prefix(b"{\"v\":")?;
        let (v, used_v) = parse_decimal(rest)?;
        let rest = rest[used_v..].strip_prefix(b",\"seq\":")?;
        let (seq, used_s) = parse_decimal(rest)?;
        let rest = rest[used_s..].strip_prefix(b",\"crc\":\"")?;
        if rest.len() < 10 || &rest[8..10] != b"\"," {
            return None;
        }
        let crc = parse_crc_hex(&rest[..8])?;
        let body_start = line.len() - (rest.len() - 10);
        Some((v, seq, crc, body_start))
    })();
    match parsed {
        Some(prefix) => Ok(prefix),
        None => Err(LineError::BadPrefix),
    }
}

/// Eight lowercase hex digits as a `u32` (uppercase is refused: the prefix is fixed).
fn parse_crc_hex(hex: &[u8]) -> Option<u32> {
    hex.iter().try_fold(0u32, |acc, &b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        Some((acc << 4) | u32::from(digit))
    })
}

/// A JSON natural number at the start of `b` (1 to 20 digits, no leading zero) that
/// fits a `u64`, and how many bytes it took. Every journal line passes here twice,
/// so the digits are folded directly rather than through `str::parse`.
fn parse_decimal(b: &[u8]) -> Option<(u64, usize)> {
    let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 || n > 20 || (n > 1 && b[0] == b'0') {
        return None;
    }
    let value = b[..n].iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })?;
    Some((value, n))
}

/// A line that passed [`check_line`], borrowed from the bytes it was read from (for
/// scans over whole journals that need no [`RawRecord`] per line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckedLine<'a> {
    /// The record's seq.
    pub seq: u64,
    /// The whole line without its newline.
    pub text: &'a str,
    /// Where the body starts in `text`.
    pub body_start: usize,
    /// The record's kind.
    pub kind: std::borrow::Cow<'a, str>,
    /// The `data` value's text, when the body has the layout [`encode_line`] writes.
    pub data: Option<&'a str>,
}

impl CheckedLine<'_> {
    /// The shared, owned form of this line.
    pub(crate) fn to_raw(&self) -> RawRecord {
        RawRecord {
            seq: self.seq,
            line: Arc::from(self.text),
            body_start: self.body_start,
        }
    }
}

/// The pieces of a body with exactly the layout [`encode_line`] writes:
/// `"at":"…","kind":"…","data":<value>}` where the `at` and `kind` strings hold no
/// quote, backslash or control character: `(kind, data)`. `None` for anything else
/// (escapes, other key orders, whitespace, missing or extra keys …), which then goes
/// through the full serde check.
///
/// For a body of this layout (in a line that is valid UTF-8 behind a well-formed
/// prefix), the record shape check below accepts the line exactly when `data` is one
/// JSON value: the keys are the six record fields once each, and `at` and `kind` are
/// strings with nothing to unescape. `data` is checked by serde_json's own value
/// skipper, the same code the full check runs on it (`IgnoredAny`), so the fast path
/// never accepts a line the full check refuses (the differential tests in this
/// module and in `reader_tests.rs` hold it to that).
fn canonical_body(body: &str) -> Option<(&str, &str)> {
    fn plain_string(s: &str) -> Option<(&str, &str)> {
        let end = s
            .bytes()
            .position(|b| b == b'"' || b == b'\\' || b < 0x20)?;
        (s.as_bytes()[end] == b'"').then(|| (&s[..end], &s[end + 1..]))
    }
    let rest = body.strip_prefix("\"at\":\"")?;
    let (_at, rest) = plain_string(rest)?;
    let rest = rest.strip_prefix(",\"kind\":\"")?;
    let (kind, rest) = plain_string(rest)?;
    let data = rest.strip_prefix(",\"data\":")?.strip_suffix('}')?;
    serde_json::from_str::<serde::de::IgnoredAny>(data).ok()?;
    Some((kind, data))
}

/// Verifies one line (without its `\n`): prefix, version, CRC, UTF-8 and JSON shape.
pub fn parse_line(line: &[u8]) -> Result<RawRecord, LineError> {
    check_line(line).map(|checked| checked.to_raw())
}

/// [`parse_line`] without copying the line: the checks are the same.
pub(crate) fn check_line(line: &[u8]) -> Result<CheckedLine<'_>, LineError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(LineError::TooLong);
    }
    let (v, seq, crc, body_start) = parse_prefix(line)?;
    if v > JOURNAL_VERSION {
        return Err(LineError::NewerVersion {
            found: v,
            supported: JOURNAL_VERSION,
        });
    }
    if v != JOURNAL_VERSION {
        return Err(LineError::BadPrefix);
    }
    let body = &line[body_start..];
    let computed = crc32c::crc32c(body);
    if computed != crc {
        return Err(LineError::CrcMismatch {
            stored: format!("{crc:08x}"),
            computed: format!("{computed:08x}"),
        });
    }
    let text = std::str::from_utf8(line).map_err(|e| LineError::BadBody(e.to_string()))?;
    // The prefix is ASCII, so `body_start` is a char boundary.
    if let Some((kind, data)) = text.get(body_start..).and_then(canonical_body) {
        return Ok(CheckedLine {
            seq,
            text,
            body_start,
            kind: std::borrow::Cow::Borrowed(kind),
            data: Some(data),
        });
    }
    let kind = full_shape_check(text)?;
    Ok(CheckedLine {
        seq,
        text,
        body_start,
        kind,
        data: None,
    })
}

/// The record shape check by serde, for any line: returns the kind.
fn full_shape_check(text: &str) -> Result<std::borrow::Cow<'_, str>, LineError> {
    // The CRC matched, so these bytes are what a writer produced; still check the
    // shape so a hand-made line with a correct crc cannot smuggle in garbage.
    // Every field of a record is named, so one that appears twice is refused: a
    // body repeating `"seq":…` would otherwise show readers (the last key wins) a
    // seq other than the one the prefix, the CRC and the contiguity check vouch for.
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Shape<'a> {
        v: serde::de::IgnoredAny,
        seq: serde::de::IgnoredAny,
        crc: serde::de::IgnoredAny,
        // Cow, not &str: a string with an escape (a kind with `"` in it) cannot be
        // borrowed, and encode_line does write such lines.
        #[serde(borrow)]
        at: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        kind: std::borrow::Cow<'a, str>,
        #[serde(default)]
        data: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_str::<Shape<'_>>(text)
        .map(|shape| shape.kind)
        .map_err(|e| LineError::BadBody(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kind_ref_reads_the_kind_without_parsing_and_agrees_with_kind() {
        for kind in ["tool.end", "session.delta", "x", "we\"ird\\kind", "é.kind"] {
            let line =
                encode_line(3, "2026-05-02T18:30:00.123Z", kind, &json!({"kind": "no"})).unwrap();
            let raw = parse_line(line.trim_end_matches('\n').as_bytes()).unwrap();
            assert_eq!(raw.kind_ref().as_deref(), Some(kind), "{line}");
            assert_eq!(raw.kind_ref().map(|k| k.into_owned()), raw.kind());
        }
    }

    #[test]
    fn encode_parse_round_trip() {
        let line = encode_line(
            7,
            "2026-05-02T18:30:00.123Z",
            "tool.end",
            &json!({"ok": true, "exit_code": 0}),
        )
        .unwrap();
        assert!(line.starts_with("{\"v\":1,\"seq\":7,\"crc\":\""));
        assert!(line.ends_with("}\n"));
        let raw = parse_line(line.trim_end_matches('\n').as_bytes()).unwrap();
        assert_eq!(raw.seq, 7);
        let rec = raw.to_record().unwrap();
        assert_eq!(rec.kind, "tool.end");
        assert_eq!(rec.data["exit_code"], 0);
        assert_eq!(raw.kind().as_deref(), Some("tool.end"));
        let crc = crc32c::crc32c(raw.body().as_bytes());
        assert_eq!(rec.crc, format!("{crc:08x}"));
    }

    #[test]
    fn one_byte_edits_are_caught() {
        let line = encode_line(
            3,
            "2026-05-02T18:30:00.123Z",
            "session.delta",
            &json!({"stream":"stdout","text":"hi"}),
        )
        .unwrap();
        let bytes = line.trim_end_matches('\n').as_bytes().to_vec();
        // The seq digits are outside the CRC by design (DESIGN §5): an edited seq is
        // caught by contiguity (gap / duplicate) in the reader, not here.
        let seq_at = "{\"v\":1,\"seq\":".len();
        for i in (0..bytes.len()).filter(|&i| i != seq_at) {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(
                parse_line(&b).is_err(),
                "flip at {i} accepted: {}",
                String::from_utf8_lossy(&b)
            );
        }
    }

    /// The journal_line fuzzer's first find: a kind the encoder escapes was refused
    /// by the parser ("expected a borrowed string").
    #[test]
    fn regression_kind_with_escapes_round_trips() {
        for kind in [
            "{\"v\":1,\"seq\":1,\"crc\":\"00000000\",",
            "agent.\"q\"\\x\u{1}",
            "tab\there",
        ] {
            let line = encode_line(7, "2026-05-02T18:30:00.123Z", kind, &json!("")).unwrap();
            let raw = parse_line(line.trim_end_matches('\n').as_bytes())
                .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
            assert_eq!(raw.kind().as_deref(), Some(kind));
            assert_eq!(raw.to_record().unwrap().kind, kind);
        }
    }

    /// A line whose body repeats a prefix field, with a correct CRC, was accepted:
    /// `journal.read` and `$/event` then showed the body's seq (the last key wins in
    /// JSON readers), not the prefix's. Found by the journal_line fuzz target's
    /// "an accepted line is a Record" check.
    #[test]
    fn regression_duplicate_record_field_is_refused() {
        let prefixed = |body: &str| {
            let crc = crc32c::crc32c(body.as_bytes());
            format!("{{\"v\":1,\"seq\":1,\"crc\":\"{crc:08x}\",{body}")
        };
        for body in [
            r#""at":"t","kind":"k","data":{},"seq":999}"#,
            r#""at":"t","kind":"k","v":2}"#,
            r#""at":"t","kind":"k","kind":"session.ended"}"#,
            r#""at":"t","kind":"k","data":1,"data":2}"#,
        ] {
            let line = prefixed(body);
            assert!(
                matches!(parse_line(line.as_bytes()), Err(LineError::BadBody(_))),
                "accepted {line}"
            );
        }
        // Fields a later version may add are still fine.
        let line = prefixed(r#""at":"t","kind":"k","data":{},"extra":[1]}"#);
        assert_eq!(
            parse_line(line.as_bytes())
                .unwrap()
                .to_record()
                .unwrap()
                .kind,
            "k"
        );
    }

    #[test]
    fn newer_version_is_named() {
        let line = encode_line(1, "x", "k", &json!(null))
            .unwrap()
            .replacen("{\"v\":1", "{\"v\":2", 1);
        match parse_line(line.trim_end().as_bytes()) {
            Err(LineError::NewerVersion {
                found: 2,
                supported: 1,
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    /// The checks `parse_line` made before the layout short cut, kept as the
    /// reference the short cut is held to: prefix, version, CRC, UTF-8, then the
    /// serde shape pass over the whole line.
    fn reference_check(line: &[u8]) -> Result<(u64, String), LineError> {
        if line.len() > MAX_LINE_BYTES {
            return Err(LineError::TooLong);
        }
        let (v, seq, crc, body_start) = parse_prefix(line)?;
        if v > JOURNAL_VERSION {
            return Err(LineError::NewerVersion {
                found: v,
                supported: JOURNAL_VERSION,
            });
        }
        if v != JOURNAL_VERSION {
            return Err(LineError::BadPrefix);
        }
        let computed = crc32c::crc32c(&line[body_start..]);
        if computed != crc {
            return Err(LineError::CrcMismatch {
                stored: format!("{crc:08x}"),
                computed: format!("{computed:08x}"),
            });
        }
        let text = std::str::from_utf8(line).map_err(|e| LineError::BadBody(e.to_string()))?;
        Ok((seq, full_shape_check(text)?.into_owned()))
    }

    /// `body` behind a prefix whose CRC matches it, so the shape checks decide.
    fn with_good_crc(seq: u64, body: &[u8]) -> Vec<u8> {
        let crc = crc32c::crc32c(body);
        let mut line = format!("{{\"v\":1,\"seq\":{seq},\"crc\":\"{crc:08x}\",").into_bytes();
        line.extend_from_slice(body);
        line
    }

    fn assert_same_verdict(line: &[u8]) {
        let fast = check_line(line).map(|c| (c.seq, c.kind.into_owned()));
        let reference = reference_check(line);
        assert_eq!(
            fast,
            reference,
            "verdicts differ for {}",
            String::from_utf8_lossy(line)
        );
        // And the shared form agrees with the borrowed one.
        if let Ok(raw) = parse_line(line) {
            assert_eq!(raw.line().as_bytes(), line);
            assert_eq!(Some(raw.seq), fast.as_ref().ok().map(|f| f.0));
        }
    }

    /// Bodies at the edge of the layout the short cut recognises: each is decided
    /// exactly as the full serde pass decides it.
    #[test]
    fn layout_short_cut_agrees_with_the_full_check_on_edge_cases() {
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        let bodies: Vec<String> = vec![
            r#""at":"t","kind":"k","data":{}}"#.into(),
            r#""at":"t","kind":"k","data":null}"#.into(),
            r#""at":"t","kind":"k","data":nul}"#.into(),
            r#""at":"t","kind":"k","data": 1 }"#.into(),
            r#""at":"t","kind":"k","data":1}  "#.into(),
            r#""at":"t","kind":"k","data":1}x"#.into(),
            r#""at":"t","kind":"k","data":{}"#.into(),
            r#""at":"t","kind":"k","data":}"#.into(),
            r#""at":"t","kind":"k","data":1,"seq":2}"#.into(),
            r#""at":"t","kind":"k","data":{},"data":{}}"#.into(),
            r#""at":"t","kind":"k","data":{"a":1}},"x":{"b":2}"#.into(),
            r#""at":"t","kind":"k","data":"\ud800"}"#.into(),
            r#""at":"t","kind":"k","data":"\u00e9\n"}"#.into(),
            r#""at":"t","kind":"k","data":[1,]}"#.into(),
            r#""at":"t","kind":"k","data":01}"#.into(),
            r#""at":"t","kind":"k","data":1e999}"#.into(),
            r#""at":"t","kind":"k"}"#.into(),
            r#""at":"t","kind":"k","extra":1,"data":2}"#.into(),
            r#""kind":"k","at":"t","data":2}"#.into(),
            r#""at":"t","kind":"k\"q","data":2}"#.into(),
            r#""at":"t\\","kind":"k","data":2}"#.into(),
            r#""at":5,"kind":"k","data":2}"#.into(),
            r#""at":"t","kind":null,"data":2}"#.into(),
            "\"at\":\"t\u{1}\",\"kind\":\"k\",\"data\":2}".into(),
            "\"at\":\"t\",\"kind\":\"k\t\",\"data\":2}".into(),
            "\"at\":\"t\",\"kind\":\"é\",\"data\":\"\u{7f}\"}".into(),
            "\"at\":\"t\",\"kind\":\"k\",\"data\":\"a\u{1f}b\"}".into(),
            format!(r#""at":"t","kind":"k","data":{deep}}}"#),
            format!(r#""at":"t","kind":"k","data":{}}}"#, "[".repeat(300)),
        ];
        for body in &bodies {
            assert_same_verdict(&with_good_crc(9, body.as_bytes()));
        }
        // Bytes that are not UTF-8, inside and outside the strings.
        let not_utf8: [&[u8]; 2] = [
            b"\"at\":\"t\",\"kind\":\"\xff\",\"data\":1}",
            b"\"at\":\"t\",\"kind\":\"k\",\"data\":\"\xc3\"}",
        ];
        for body in not_utf8 {
            assert_same_verdict(&with_good_crc(9, body));
        }
    }

    /// JSON-ish pieces for mutating bodies where the layout is decided.
    const PIECES: &[&str] = &[
        "}",
        "{",
        "[",
        "]",
        "\"",
        "\\",
        ",",
        ":",
        " ",
        "\n",
        "\t",
        "\u{0}",
        "\u{1f}",
        "null",
        "1",
        "-0",
        "1.5e3",
        "\"data\":",
        "\"kind\":\"x\"",
        ",\"seq\":3",
        "\\u0041",
        "\\ud800",
        "é",
        "\u{7f}",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Differential test: lines r1 writes, then mutated (pieces inserted, bytes
        /// replaced or removed, cut short) and given a matching CRC so the shape
        /// checks decide: the short cut and the full serde pass agree on each.
        #[test]
        fn layout_short_cut_rejects_exactly_what_the_full_check_rejects(
            kind in proptest::prop_oneof![
                proptest::prelude::Just("session.delta".to_owned()),
                proptest::prelude::Just("tool.end".to_owned()),
                "[a-z.\"\\\\é\u{1}]{0,8}",
            ],
            text in "[a-z\"\\\\{}\\[\\],:é\u{1}]{0,12}",
            edits in proptest::collection::vec(
                (0usize..1000, 0usize..PIECES.len(), 0u8..4, proptest::num::u8::ANY),
                0..4,
            ),
        ) {
            let data = json!({"stream": "stdout", "text": text, "n": [1, {"k": null}]});
            let line = encode_line(5, "2026-05-02T18:30:00.123Z", &kind, &data).unwrap();
            let (_, _, _, body_start) = parse_prefix(line.as_bytes()).unwrap();
            let mut body = line.trim_end_matches('\n').as_bytes()[body_start..].to_vec();
            for (at, piece, op, byte) in edits {
                let at = at % (body.len() + 1);
                match op {
                    0 => {
                        body.splice(at..at, PIECES[piece].bytes());
                    }
                    1 if at < body.len() => body[at] = byte,
                    2 if at < body.len() => {
                        body.remove(at);
                    }
                    _ => body.truncate(at),
                }
            }
            let mutated = with_good_crc(5, &body);
            let fast = check_line(&mutated).map(|c| (c.seq, c.kind.into_owned()));
            proptest::prop_assert_eq!(fast, reference_check(&mutated));
        }

        /// The prefix numbers read digit by digit agree with `str::parse`.
        #[test]
        fn prefix_numbers_agree_with_str_parse(digits in "[0-9]{0,22}[,x]?") {
            let reference = (|| {
                let b = digits.as_bytes();
                let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
                if n == 0 || n > 20 || (n > 1 && b[0] == b'0') {
                    return None;
                }
                Some((std::str::from_utf8(&b[..n]).ok()?.parse::<u64>().ok()?, n))
            })();
            proptest::prop_assert_eq!(parse_decimal(digits.as_bytes()), reference);
        }

        #[test]
        fn crc_hex_agrees_with_from_str_radix(hex in "[0-9a-fA-FgG ]{8}") {
            let lowercase_hex = hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            let reference = if lowercase_hex {
                u32::from_str_radix(&hex, 16).ok()
            } else {
                None
            };
            proptest::prop_assert_eq!(parse_crc_hex(hex.as_bytes()), reference);
        }
    }

    #[test]
    fn event_tail_is_valid_json() {
        let line = encode_line(42, "2026-05-02T18:30:00.123Z", "k", &json!({"a":[1,2]})).unwrap();
        let raw = parse_line(line.trim_end().as_bytes()).unwrap();
        let ev = format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"$/event\",\"params\":{{\"sub\":3,{}}}",
            raw.event_params_tail("ep")
        );
        let v: serde_json::Value = serde_json::from_str(&ev).unwrap();
        assert_eq!(v["params"]["seq"], 42);
        assert_eq!(v["params"]["epoch"], "ep");
        assert_eq!(v["params"]["data"]["a"][1], 2);
        assert_eq!(v["params"]["kind"], "k");
    }
}
