//! Recovery of a journal at open (DESIGN §5).
//!
//! [`super::Journal::open`] asks `plan` what the file needs, then carries it out:
//!
//! 1. **Clean marker** (`clean` beside the journal, `{size, last_seq, epoch}`) whose
//!    `size` equals the file's: trusted, no scan. Only the first line's `v` is read
//!    (a few bytes), so a file a newer r1 wrote is never appended to.
//! 2. **Tail check** otherwise: the file must end in `\n`; the complete lines in its last
//!    16 KiB (at least the last line) must verify (prefix, CRC, shape) with contiguous
//!    seqs, and the first line must verify with seq 1. If so the journal opens as is.
//!    This reads O(16 KiB) plus the epoch search below, so restarting 1,000 journals of
//!    1,000 records takes well under a second.
//! 3. **Full scan** when the tail check is not satisfied (something must be decided):
//!    every line is verified in order. Then:
//!    * a line of a newer `v` anywhere (even in the torn tail) → refused: file untouched,
//!      read-only, [`Damage`] naming both versions;
//!    * a bad line followed by any line with a valid CRC, or a line with a valid CRC
//!      but a wrong seq (gap, duplicate) or shape → **damage**: nothing is cut,
//!      read-only, [`Damage`] names the first bad line and why;
//!    * otherwise everything after the last good line is a **torn tail**: it is copied
//!      to `journal.ndjson.corrupt-<unix-ts>` (fsync file, fsync dir), the journal is
//!      truncated (fsync), and `journal.repaired {dropped_bytes, dropped_lines,
//!      last_good_seq, epoch}` is appended with a new epoch (fsync), in that order.
//!      Only lines without a valid CRC (or without their `\n`) are ever cut.
//!
//! What open does **not** detect: damage strictly inside a journal whose tail check
//! passes (a flipped byte in the middle of a large file, with a correct last 16 KiB and
//! first line), and damage in a journal with a matching clean marker. Those are found
//! by [`super::Reader::verify`] (full scan) and by any reader that reaches the bad line
//! (`JournalDamaged`); the journal itself is only ever appended to, so it cannot make
//! such damage worse.
//!
//! Edge cases: an empty file (0 bytes) needs nothing and opens with `last_seq` 0 and
//! epoch `""`. A file with no good line at all (for example one torn first line, left by
//! a crash inside [`super::Journal::create`], which had not returned yet) is a torn
//! tail like any other: its bytes are saved to `.corrupt-*` and the journal restarts
//! with `journal.repaired` as seq 1, under a new epoch.
//!
//! **Epoch** (the current one, for cursors): from the clean marker when it matched;
//! otherwise the `data.epoch` of the last `journal.repaired` record, found by searching
//! *backward* from the end for the bytes `"kind":"journal.repaired"` (a skip search
//! reading the file once at worst, with no per-line parsing; each hit is confirmed by
//! parsing its line), else the first record's `data.epoch`. A journal whose first
//! record has no string `data.epoch` (the daemon's bus log) has epoch `""` until a
//! repair gives it one.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::reader::{LineScanner, Next, find_newline, read_at_full, seq_reason};
use super::record::{
    JOURNAL_VERSION, LineError, MAX_LINE_BYTES, RawRecord, parse_line, parse_prefix,
};
use crate::error::{Error, ErrorKind, Result};
use crate::paths::{OpenMode, atomic_write, fsync_dir, open_private};

/// A torn tail that recovery cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repair {
    /// Bytes removed from the end.
    pub dropped_bytes: u64,
    /// Lines (complete or not) removed.
    pub dropped_lines: u64,
    /// The last record kept.
    pub last_good_seq: u64,
    /// The epoch recorded in the `journal.repaired` record.
    pub epoch: String,
    /// Where the removed bytes were saved.
    pub corrupt_path: PathBuf,
}

/// Damage recovery must not cut: a bad line followed by a good one, or a newer `v`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Damage {
    /// 1-based line number of the first bad line.
    pub line: u64,
    /// Byte offset of that line.
    pub offset: u64,
    /// Why it is bad (crc mismatch, seq gap, duplicate seq, bad prefix, newer version …).
    pub reason: String,
}

impl Damage {
    /// [`ErrorKind::UnsupportedVersion`] when the line is of a newer format version,
    /// else [`ErrorKind::JournalDamaged`].
    pub fn error_kind(&self) -> ErrorKind {
        if self.reason.starts_with(NEWER_VERSION_PREFIX) && self.reason.contains(NEWER_VERSION_MID)
        {
            ErrorKind::UnsupportedVersion
        } else {
            ErrorKind::JournalDamaged
        }
    }

    /// This damage as an [`Error`] about the journal at `path` (kind from
    /// [`Damage::error_kind`]; `data` carries `{line, offset, reason}`).
    pub fn to_error(&self, path: &Path) -> Error {
        let at = if self.line > 0 {
            format!("line {} (byte offset {})", self.line, self.offset)
        } else {
            format!("byte offset {}", self.offset)
        };
        Error::new(
            self.error_kind(),
            format!(
                "journal {} is damaged at {at}: {}",
                path.display(),
                self.reason
            ),
        )
        .with_data(serde_json::json!({
            "line": self.line,
            "offset": self.offset,
            "reason": self.reason,
        }))
    }
}

/// The start and middle of [`LineError::NewerVersion`]'s message, which is the reason
/// recorded for a newer `v`.
const NEWER_VERSION_PREFIX: &str = "journal format v";
const NEWER_VERSION_MID: &str = " is newer than this r1";

/// What opening a journal found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecoveryReport {
    /// Records readable (for an intact journal, equals `last_seq`).
    pub record_count: u64,
    /// The last valid seq.
    pub last_seq: u64,
    /// The current epoch.
    pub epoch: String,
    /// True when a matching clean marker let open skip the tail check.
    pub clean: bool,
    /// A torn tail was cut.
    pub repaired: Option<Repair>,
    /// Damage was found; the journal is read-only.
    pub damage: Option<Damage>,
}

/// The kind recovery appends after cutting a torn tail.
pub const REPAIRED_KIND: &str = "journal.repaired";

/// The clean marker's file name, in the journal's directory.
pub const CLEAN_MARKER_NAME: &str = "clean";

/// The clean marker of the journal at `journal_path`: `clean` in the same directory.
pub fn clean_marker_path(journal_path: &Path) -> PathBuf {
    dir_of(journal_path).join(CLEAN_MARKER_NAME)
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The clean marker's content, written by [`super::Journal::close`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanMarker {
    /// The journal's size in bytes at close.
    pub size: u64,
    /// The last seq at close.
    pub last_seq: u64,
    /// The epoch at close (absent in markers of the first DESIGN draft: then the epoch
    /// is searched for as when there is no marker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// Reads the clean marker; anything unreadable or malformed counts as no marker (the
/// tail check then decides), because a marker is only ever an optimisation.
pub(crate) fn read_marker(journal_path: &Path) -> Option<CleanMarker> {
    let path = clean_marker_path(journal_path);
    let file = open_private(&path, OpenMode::Read).ok()?;
    let mut buf = vec![0u8; 4096];
    let n = read_at_full(&file, &mut buf, 0).ok()?;
    serde_json::from_slice(&buf[..n]).ok()
}

/// Writes the clean marker atomically (temp, fsync, rename, fsync dir).
pub(crate) fn write_marker(journal_path: &Path, marker: &CleanMarker) -> Result<()> {
    let bytes = serde_json::to_vec(marker)?;
    atomic_write(&clean_marker_path(journal_path), &bytes)
}

/// Removes the clean marker durably (unlink, fsync dir), so a crash after this open
/// can never trust a marker that no longer describes the file.
pub(crate) fn remove_marker(journal_path: &Path) -> Result<()> {
    let path = clean_marker_path(journal_path);
    match std::fs::remove_file(&path) {
        Ok(()) => fsync_dir(dir_of(journal_path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("cannot remove the clean marker", &path, e)),
    }
}

/// What [`plan`] decided.
#[derive(Debug)]
pub(crate) enum Plan {
    /// Open for appending as is.
    Ready {
        size: u64,
        last_seq: u64,
        epoch: String,
        clean: bool,
    },
    /// Cut everything from `keep` on, then append `journal.repaired`.
    Repair {
        keep: u64,
        size: u64,
        last_good_seq: u64,
        dropped_lines: u64,
    },
    /// Damaged or newer: read-only, file untouched.
    ReadOnly(RecoveryReport),
}

/// Decides what opening `file` (the journal at `path`) needs. Reads only; see the
/// module docs for what is checked when.
pub(crate) fn plan(path: &Path, file: &File) -> Result<Plan> {
    let io = |e| Error::io("cannot read", path, e);
    let size = file
        .metadata()
        .map_err(|e| Error::io("cannot fstat", path, e))?
        .len();
    if let Some(m) = read_marker(path).filter(|m| m.size == size) {
        if !first_line_is_newer(file).map_err(io)? {
            let epoch = match m.epoch {
                Some(e) => e,
                None => find_epoch(file, size).map_err(io)?,
            };
            return Ok(Plan::Ready {
                size,
                last_seq: m.last_seq,
                epoch,
                clean: true,
            });
        }
        // A newer r1's file: the full scan below names the version.
    } else if size == 0 {
        return Ok(Plan::Ready {
            size,
            last_seq: 0,
            epoch: String::new(),
            clean: false,
        });
    } else if let Some(last_seq) = tail_check(file, size).map_err(io)? {
        return Ok(Plan::Ready {
            size,
            last_seq,
            epoch: find_epoch(file, size).map_err(io)?,
            clean: false,
        });
    }
    let scan = full_scan(file).map_err(io)?;
    let read_only = |damage: Damage| {
        Plan::ReadOnly(RecoveryReport {
            record_count: scan.records,
            last_seq: scan.last_seq,
            epoch: scan.epoch.clone(),
            clean: false,
            repaired: None,
            damage: Some(damage),
        })
    };
    if let Some(d) = &scan.newer {
        return Ok(read_only(d.clone()));
    }
    if let Some(d) = &scan.first_bad
        && (scan.bad_has_crc || scan.crc_after_bad)
    {
        return Ok(read_only(d.clone()));
    }
    if scan.good_end < scan.size {
        return Ok(Plan::Repair {
            keep: scan.good_end,
            size: scan.size,
            last_good_seq: scan.last_seq,
            dropped_lines: scan.bad_lines,
        });
    }
    Ok(Plan::Ready {
        size: scan.size,
        last_seq: scan.last_seq,
        epoch: scan.epoch,
        clean: false,
    })
}

/// Copies `[keep, size)` of the journal to `journal.ndjson.corrupt-<unix-ts>` beside it
/// (a `-N` suffix if that exists), fsyncs the copy and the directory.
pub(crate) fn save_tail(path: &Path, file: &File, keep: u64, size: u64) -> Result<PathBuf> {
    let dir = dir_of(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "journal.ndjson".to_owned());
    let ts = crate::time_fmt::unix_now();
    let mut target = dir.join(format!("{name}.corrupt-{ts}"));
    let mut n = 1;
    while std::fs::symlink_metadata(&target).is_ok() {
        n += 1;
        target = dir.join(format!("{name}.corrupt-{ts}-{n}"));
    }
    let mut out = open_private(&target, OpenMode::CreateNew)?;
    let mut buf = vec![0u8; (size - keep).min(1 << 20) as usize];
    let mut at = keep;
    while at < size {
        let want = ((size - at) as usize).min(buf.len());
        let got = read_at_full(file, &mut buf[..want], at)
            .map_err(|e| Error::io("cannot read", path, e))?;
        if got == 0 {
            break;
        }
        out.write_all(&buf[..got])
            .map_err(|e| Error::io("cannot write", &target, e))?;
        at += got as u64;
    }
    out.sync_all()
        .map_err(|e| Error::io("cannot fsync", &target, e))?;
    fsync_dir(dir)?;
    Ok(target)
}

/// A fresh random epoch: 16 lowercase hex digits.
pub fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The reason text for a line that does not parse.
pub(crate) fn line_error_reason(e: &LineError) -> String {
    e.to_string()
}

/// Bytes the tail check verifies at the end of the file (at least the last line).
const TAIL_WINDOW: u64 = 16 * 1024;

/// `Some(last_seq)` when the tail is fine: the file ends with `\n`, the complete lines
/// in the last [`TAIL_WINDOW`] bytes verify with contiguous seqs, and the first line
/// verifies with seq 1. `None` when a full scan must decide.
fn tail_check(file: &File, size: u64) -> std::io::Result<Option<u64>> {
    let mut window = TAIL_WINDOW.min(size);
    loop {
        let start = size - window;
        let mut buf = vec![0u8; window as usize];
        let n = read_at_full(file, &mut buf, start)?;
        if n as u64 != window || buf.last() != Some(&b'\n') {
            return Ok(None);
        }
        let first = if start == 0 {
            Some(0)
        } else {
            find_newline(&buf).map(|k| k + 1)
        };
        let first = match first {
            Some(f) if f < buf.len() => f,
            _ => {
                // The last line starts before the window: widen it, up to one longest
                // line (anything longer is bad anyway and needs the full scan).
                if window >= size || window > MAX_LINE_BYTES as u64 + 2 {
                    return Ok(None);
                }
                window = (window * 2).min(size);
                continue;
            }
        };
        let mut prev: Option<u64> = if start == 0 { Some(0) } else { None };
        let mut i = first;
        while let Some(k) = find_newline(&buf[i..]) {
            let Ok(raw) = parse_line(&buf[i..i + k]) else {
                return Ok(None);
            };
            if prev.is_some_and(|p| raw.seq != p + 1) {
                return Ok(None);
            }
            prev = Some(raw.seq);
            i += k + 1;
        }
        let Some(last_seq) = prev else {
            return Ok(None);
        };
        if start > 0 {
            match read_first_line(file)? {
                Some(line) if parse_line(&line).is_ok_and(|r| r.seq == 1) => {}
                _ => return Ok(None),
            }
        }
        return Ok(Some(last_seq));
    }
}

/// True when the file's first bytes carry a prefix with a `v` newer than ours.
fn first_line_is_newer(file: &File) -> std::io::Result<bool> {
    let mut buf = [0u8; 64];
    let n = read_at_full(file, &mut buf, 0)?;
    Ok(prefix_version(&buf[..n]).is_some_and(|v| v > JOURNAL_VERSION))
}

/// The `v` of a line from its first bytes alone (`{"v":N,`), so even a torn line of a
/// newer format is recognised.
fn prefix_version(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"v\":")?;
    let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 19 || rest.get(n) != Some(&b',') {
        return None;
    }
    std::str::from_utf8(&rest[..n]).ok()?.parse().ok()
}

/// The first complete line (without `\n`), if there is one within [`MAX_LINE_BYTES`].
fn read_first_line(file: &File) -> std::io::Result<Option<Vec<u8>>> {
    read_line_at(file, 0, u64::MAX)
}

/// The complete line starting at `offset` and ending (its `\n`) before `end`.
fn read_line_at(file: &File, offset: u64, end: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 4096];
    let mut at = offset;
    loop {
        let n = read_at_full(file, &mut chunk, at)?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(k) = find_newline(&chunk[..n]) {
            if at + k as u64 >= end {
                return Ok(None);
            }
            out.extend_from_slice(&chunk[..k]);
            return Ok(Some(out));
        }
        out.extend_from_slice(&chunk[..n]);
        at += n as u64;
        if out.len() > MAX_LINE_BYTES || at >= end {
            return Ok(None);
        }
        // Long lines: read bigger pieces.
        if chunk.len() < (1 << 20) {
            chunk.resize(chunk.len() * 2, 0);
        }
    }
}

/// The current epoch of the valid journal `[0, end)` (see the module docs).
pub(crate) fn find_epoch(file: &File, end: u64) -> std::io::Result<String> {
    if let Some(epoch) = last_repaired_epoch(file, end)? {
        return Ok(epoch);
    }
    Ok(match read_first_line(file)? {
        Some(line) => parse_line(&line)
            .ok()
            .and_then(|raw| data_epoch(&raw))
            .unwrap_or_default(),
        None => String::new(),
    })
}

/// `data.epoch` of a record, when it is a string.
fn data_epoch(raw: &RawRecord) -> Option<String> {
    let v = raw.to_value().ok()?;
    v.get("data")?.get("epoch")?.as_str().map(str::to_owned)
}

/// The epoch of the last `journal.repaired` record before `end`, searching backward.
fn last_repaired_epoch(file: &File, end: u64) -> std::io::Result<Option<String>> {
    const PAT: &[u8] = br#""kind":"journal.repaired""#;
    const CHUNK: u64 = 256 * 1024;
    let overlap = PAT.len() as u64 - 1;
    let mut buf = Vec::with_capacity(end.min(CHUNK + overlap) as usize);
    let mut hi = end;
    while hi > 0 {
        let lo = hi.saturating_sub(CHUNK);
        // Read a little past `hi` so a match that starts before `hi` is whole.
        let read_hi = (hi + overlap).min(end);
        buf.resize((read_hi - lo) as usize, 0);
        let n = read_at_full(file, &mut buf, lo)?;
        buf.truncate(n);
        let hits = find_all(&buf, PAT);
        for &p in hits.iter().rev() {
            let abs = lo + p as u64;
            if abs >= hi {
                continue;
            }
            if let Some(epoch) = repaired_epoch_at(file, abs, end)? {
                return Ok(Some(epoch));
            }
        }
        hi = lo;
    }
    Ok(None)
}

/// Confirms that the `"kind":"journal.repaired"` at `abs` is the kind of a valid
/// record (not text nested in some other record's data) and returns its epoch.
fn repaired_epoch_at(file: &File, abs: u64, end: u64) -> std::io::Result<Option<String>> {
    // A record's kind follows its prefix and `at` (~80 bytes); a hit further into a
    // line is inside `data`.
    const NEAR: u64 = 256;
    let from = abs.saturating_sub(NEAR);
    let mut back = vec![0u8; (abs - from) as usize];
    let n = read_at_full(file, &mut back, from)?;
    back.truncate(n);
    let start = match back.iter().rposition(|&b| b == b'\n') {
        Some(i) => from + i as u64 + 1,
        None if from == 0 => 0,
        None => return Ok(None),
    };
    let Some(line) = read_line_at(file, start, end)? else {
        return Ok(None);
    };
    let Ok(raw) = parse_line(&line) else {
        return Ok(None);
    };
    if record_kind(&raw).as_deref() != Some(REPAIRED_KIND) {
        return Ok(None);
    }
    Ok(data_epoch(&raw))
}

/// Every start index of `pat` in `hay`, overlapping ones included (the `memchr`
/// crate's vectorised substring search: searching a whole journal costs far less
/// than reading its lines).
fn find_all(hay: &[u8], pat: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    if pat.is_empty() {
        return out;
    }
    let finder = memchr::memmem::Finder::new(pat);
    let mut from = 0;
    while let Some(k) = hay.get(from..).and_then(|rest| finder.find(rest)) {
        out.push(from + k);
        from += k + 1;
    }
    out
}

/// A record's kind, read from its body without parsing `data` when the `at` and kind
/// strings carry no escapes (always, for lines r1 writes).
fn record_kind(raw: &RawRecord) -> Option<String> {
    let body = raw.body().as_bytes();
    let fast = (|| {
        let rest = body.strip_prefix(b"\"at\":\"")?;
        let q = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
        if rest[q] != b'"' {
            return None;
        }
        let rest = rest[q + 1..].strip_prefix(b",\"kind\":\"")?;
        let q = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
        if rest[q] != b'"' {
            return None;
        }
        std::str::from_utf8(&rest[..q]).ok().map(str::to_owned)
    })();
    fast.or_else(|| raw.kind())
}

/// True when `line` has a parseable prefix and its CRC matches its body: a record a
/// writer produced in full, which recovery must never cut.
fn crc_ok(line: &[u8]) -> bool {
    match parse_prefix(line) {
        Ok((_, _, crc, body_start)) => crc32c::crc32c(&line[body_start..]) == crc,
        Err(_) => false,
    }
}

/// What a full scan found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Bytes scanned (the file size).
    pub size: u64,
    /// Valid, contiguous records before the first bad line.
    pub records: u64,
    /// The last of them.
    pub last_seq: u64,
    /// The offset just after the last of them.
    pub good_end: u64,
    /// The epoch of that valid prefix.
    pub epoch: String,
    /// The first bad line.
    pub first_bad: Option<Damage>,
    /// The first bad line itself has a valid CRC (wrong seq or shape).
    pub bad_has_crc: bool,
    /// A line with a valid CRC follows the first bad line.
    pub crc_after_bad: bool,
    /// The first line (complete or not) of a newer `v`.
    pub newer: Option<Damage>,
    /// Lines from the first bad one (or the pending one) to the end.
    pub bad_lines: u64,
    /// Bytes of an incomplete final line.
    pub pending_bytes: u64,
}

/// Reads the whole file in order and classifies every line (see [`Scan`]).
pub(crate) fn full_scan(file: &File) -> std::io::Result<Scan> {
    let mut scan = Scan::default();
    let mut sc = LineScanner::new(0, 1 << 20);
    let mut line_no: u64 = 0;
    loop {
        let item = sc.next(file)?;
        match item {
            Next::Line { offset, line } => {
                line_no += 1;
                let len = line.len() as u64 + 1;
                scan.size = offset + len;
                if scan.first_bad.is_some() {
                    scan.bad_lines += 1;
                    if crc_ok(line) {
                        scan.crc_after_bad = true;
                    }
                    note_newer(&mut scan, line, line_no, offset);
                    continue;
                }
                let reason = match parse_line(line) {
                    Ok(raw) if raw.seq == scan.last_seq + 1 => {
                        scan.records += 1;
                        scan.last_seq = raw.seq;
                        scan.good_end = offset + len;
                        if raw.seq == 1 {
                            scan.epoch = data_epoch(&raw).unwrap_or_default();
                        }
                        if record_kind(&raw).as_deref() == Some(REPAIRED_KIND)
                            && let Some(e) = data_epoch(&raw)
                        {
                            scan.epoch = e;
                        }
                        continue;
                    }
                    Ok(raw) => seq_reason(scan.last_seq + 1, raw.seq),
                    Err(e) => line_error_reason(&e),
                };
                scan.bad_has_crc = crc_ok(line);
                scan.bad_lines = 1;
                scan.first_bad = Some(Damage {
                    line: line_no,
                    offset,
                    reason,
                });
                note_newer(&mut scan, line, line_no, offset);
            }
            Next::TooLong { offset, len } => {
                line_no += 1;
                scan.size = offset + len;
                scan.bad_lines += 1;
                if scan.first_bad.is_none() {
                    scan.first_bad = Some(Damage {
                        line: line_no,
                        offset,
                        reason: line_error_reason(&LineError::TooLong),
                    });
                }
            }
            Next::Pending { offset, len } => {
                line_no += 1;
                scan.size = offset + len;
                scan.pending_bytes = len;
                scan.bad_lines += 1;
                // Its bytes were not kept; a torn line of a newer format still counts.
                let mut head = [0u8; 64];
                let n = read_at_full(file, &mut head, offset)?;
                let n = n.min(len as usize);
                note_newer(&mut scan, &head[..n], line_no, offset);
                break;
            }
            Next::Eof => break,
        }
    }
    Ok(scan)
}

fn note_newer(scan: &mut Scan, line: &[u8], line_no: u64, offset: u64) {
    if scan.newer.is_some() {
        return;
    }
    if let Some(v) = prefix_version(line)
        && v > JOURNAL_VERSION
    {
        scan.newer = Some(Damage {
            line: line_no,
            offset,
            reason: line_error_reason(&LineError::NewerVersion {
                found: v,
                supported: JOURNAL_VERSION,
            }),
        });
    }
}

#[cfg(test)]
#[path = "recover_tests.rs"]
mod tests;
