//! Journal integration tests: the corruption corpus (torn tails are cut and saved,
//! damage is left alone and named), version refusal, clean markers, long lines, a
//! crash/reopen property test, seek, and reader follow.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use r1_core::ErrorKind;
use r1_core::journal::record::encode_line;
use r1_core::journal::{Journal, OpenOutcome, Reader, WriterOptions};
use serde_json::json;

// ---------------------------------------------------------------- helpers

/// A journal of `n` records (seq 1 `session.created`, then deltas of varied length),
/// dropped without `close` as a crash would leave it. Returns its path and epoch.
fn journal_with(dir: &Path, n: u64) -> (PathBuf, String) {
    let path = dir.join("journal.ndjson");
    let j = Journal::create(
        &path,
        "epoch-0",
        "session.created",
        &json!({"session_id": "s", "workdir": "/w", "driver": "shell", "r1_version": "0"}),
        WriterOptions::default(),
    )
    .unwrap();
    for i in 2..=n {
        j.append(
            "session.delta",
            &json!({"stream": "stdout", "text": "é".repeat((i as usize * 7) % 50)}),
        )
        .unwrap();
    }
    j.sync_through(n).unwrap();
    (path, "epoch-0".to_owned())
}

/// Byte offsets where each line starts, plus the file length.
fn line_starts(bytes: &[u8]) -> Vec<usize> {
    let mut v = vec![0];
    v.extend(
        bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i + 1),
    );
    v
}

fn corrupt_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".corrupt-"))
        .collect();
    v.sort();
    v
}

fn open(path: &Path) -> OpenOutcome {
    Journal::open(path, WriterOptions::default()).unwrap()
}

/// Writes `bytes` as the journal (0600) and opens it expecting a torn-tail repair that
/// keeps exactly `keep` bytes and saves exactly the rest.
fn assert_torn(path: &Path, bytes: &[u8], keep: usize, dropped_lines: u64, last_good_seq: u64) {
    let dir = path.parent().unwrap();
    write_private(path, bytes);
    let out = open(path);
    let rep = out.report.repaired.clone().expect("a repair");
    assert_eq!(out.report.damage, None);
    assert!(!out.report.clean);
    assert_eq!(rep.dropped_bytes, (bytes.len() - keep) as u64);
    assert_eq!(rep.dropped_lines, dropped_lines);
    assert_eq!(rep.last_good_seq, last_good_seq);
    assert_ne!(rep.epoch, "epoch-0", "a new epoch");
    assert_eq!(rep.epoch.len(), 16);
    assert_eq!(out.report.epoch, rep.epoch);
    assert_eq!(out.report.last_seq, last_good_seq + 1);
    assert_eq!(out.report.record_count, last_good_seq + 1);
    // The torn bytes are saved, beside the journal, 0600.
    assert_eq!(corrupt_files(dir), vec![rep.corrupt_path.clone()]);
    assert_eq!(fs::read(&rep.corrupt_path).unwrap(), &bytes[keep..]);
    assert_eq!(
        fs::metadata(&rep.corrupt_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // The kept prefix is byte-identical, then one journal.repaired record.
    let now = fs::read(path).unwrap();
    assert_eq!(&now[..keep], &bytes[..keep]);
    let mut rd = Reader::open(path).unwrap();
    rd.seek(last_good_seq).unwrap();
    assert_eq!(rd.offset(), keep as u64);
    let rec = rd.next_record().unwrap().unwrap();
    assert_eq!(rec.seq, last_good_seq + 1);
    let v = rec.to_value().unwrap();
    assert_eq!(v["kind"], "journal.repaired");
    assert_eq!(
        v["data"],
        json!({
            "dropped_bytes": bytes.len() - keep,
            "dropped_lines": dropped_lines,
            "last_good_seq": last_good_seq,
            "epoch": rep.epoch,
        })
    );
    assert!(rd.next_record().unwrap().is_none());
    let ver = Reader::open(path).unwrap().verify().unwrap();
    assert_eq!(ver.damage, None);
    assert_eq!(ver.records, last_good_seq + 1);
    // Usable, and the new epoch survives a crash (found again without a marker).
    let j = out.journal.expect("writable");
    assert_eq!(
        j.append("user.input", &json!({"text": "after"}))
            .unwrap()
            .seq,
        last_good_seq + 2
    );
    drop(j);
    let again = open(path);
    assert_eq!(again.report.epoch, rep.epoch);
    assert_eq!(again.report.repaired, None);
    assert_eq!(again.report.last_seq, last_good_seq + 2);
}

/// Writes `bytes` as the journal and opens it expecting damage at `line`: read-only,
/// nothing changed, nothing saved, reason containing `why`.
fn assert_damaged(path: &Path, bytes: &[u8], line: u64, why: &str) {
    let dir = path.parent().unwrap();
    write_private(path, bytes);
    let out = open(path);
    assert!(out.journal.is_none(), "damaged journals open read-only");
    assert_eq!(out.report.repaired, None);
    let d = out.report.damage.clone().expect("damage");
    let starts = line_starts(bytes);
    assert_eq!(d.line, line, "{d:?}");
    assert_eq!(d.offset, starts[line as usize - 1] as u64, "{d:?}");
    assert!(
        d.reason.contains(why),
        "reason {:?} lacks {why:?}",
        d.reason
    );
    assert_eq!(d.error_kind(), ErrorKind::JournalDamaged);
    assert_eq!(out.report.record_count, line - 1);
    assert_eq!(out.report.last_seq, line - 1);
    assert_eq!(fs::read(path).unwrap(), bytes, "nothing cut");
    assert!(corrupt_files(dir).is_empty());
    // verify() names the same line; a reader reads up to it, then reports it.
    let ver = Reader::open(path).unwrap().verify().unwrap();
    assert_eq!(ver.damage.as_ref(), Some(&d));
    assert_eq!(ver.records, line - 1);
    let mut rd = Reader::open(path).unwrap();
    for seq in 1..line {
        assert_eq!(rd.next_record().unwrap().unwrap().seq, seq);
    }
    let e = rd.next_record().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::JournalDamaged);
    assert!(e.message().contains(&format!("line {line}")), "{e}");
    // Opening again changes nothing either.
    assert!(open(path).journal.is_none());
    assert_eq!(fs::read(path).unwrap(), bytes);
}

fn write_private(path: &Path, bytes: &[u8]) {
    let _ = fs::remove_file(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

fn read_all(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap()
}

// ---------------------------------------------------------------- torn tails

#[test]
fn torn_truncated_last_line() {
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 6);
    let b = read_all(&path);
    let s = line_starts(&b);
    let cut = s[5] + (s[6] - s[5]) / 2;
    assert_torn(&path, &b[..cut], s[5], 1, 5);
}

#[test]
fn torn_no_final_newline() {
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 6);
    let b = read_all(&path);
    let s = line_starts(&b);
    // A complete record minus its `\n`: not a good line (DESIGN §5), so it is cut.
    assert_torn(&path, &b[..b.len() - 1], s[5], 1, 5);
}

#[test]
fn torn_garbage_after_last_valid_line() {
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 6);
    let mut b = read_all(&path);
    let keep = b.len();
    b.extend_from_slice(b"garbage\n{\"v\":1,\"seq\":7,\"crc\":\"00000000\",\"at\":\"x\"}\npartial");
    assert_torn(&path, &b, keep, 3, 6);
}

#[test]
fn torn_zero_filled_tail() {
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 6);
    let mut b = read_all(&path);
    let keep = b.len();
    b.extend(std::iter::repeat_n(0u8, 8192));
    assert_torn(&path, &b, keep, 1, 6);
}

#[test]
fn torn_zeros_over_the_last_lines() {
    // Power loss on some file systems: the size grew, the last blocks read as zeros.
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 8);
    let mut b = read_all(&path);
    let s = line_starts(&b);
    for x in &mut b[s[5] + 3..] {
        *x = 0;
    }
    assert_torn(&path, &b, s[5], 1, 5);
}

#[test]
fn torn_invalid_utf8_in_tail() {
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 6);
    let b = read_all(&path);
    let s = line_starts(&b);
    // Cut inside a two-byte "é": the torn line ends in half a character.
    let line6 = &b[s[5]..s[6]];
    let e_at = line6.windows(2).rposition(|w| w == "é".as_bytes()).unwrap();
    assert_torn(&path, &b[..s[5] + e_at + 1], s[5], 1, 5);
}

#[test]
fn torn_complete_line_of_invalid_utf8() {
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 6);
    let mut b = read_all(&path);
    let keep = b.len();
    b.extend_from_slice(b"{\"v\":1,\"seq\":7,\"crc\":\"12345678\",\"at\":\"\xff\xfe\xfd\"}\n");
    assert_torn(&path, &b, keep, 1, 6);
}

#[test]
fn torn_only_line_is_cut_and_journal_restarts() {
    // A crash inside create, before its first record was whole.
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("journal.ndjson");
    let line = encode_line(
        1,
        "2026-05-02T18:30:00.123Z",
        "session.created",
        &json!({"epoch": "e"}),
    )
    .unwrap();
    let torn = &line.as_bytes()[..line.len() / 2];
    assert_torn(&path, torn, 0, 1, 0);
}

#[test]
fn empty_file_needs_nothing() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("journal.ndjson");
    write_private(&path, b"");
    let out = open(&path);
    assert_eq!(out.report.last_seq, 0);
    assert_eq!(out.report.epoch, "");
    assert_eq!(out.report.repaired, None);
    assert_eq!(out.report.damage, None);
    let j = out.journal.unwrap();
    assert_eq!(j.append("session.delta", &json!({})).unwrap().seq, 1);
}

#[test]
fn missing_file_is_not_found() {
    let t = tempfile::tempdir().unwrap();
    let e = Journal::open(&t.path().join("nope.ndjson"), WriterOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

// ---------------------------------------------------------------- damage

#[test]
fn damage_bad_crc_in_the_middle() {
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 8);
    let mut b = read_all(&path);
    let s = line_starts(&b);
    let i = s[3] + (s[4] - s[3]) - 5; // inside line 4's body
    b[i] ^= 0x02;
    assert_damaged(&path, &b, 4, "crc mismatch");
}

#[test]
fn damage_bad_crc_in_the_last_line_before_a_torn_tail() {
    // Damage, even with a torn tail after it: nothing is cut.
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 8);
    let mut b = read_all(&path);
    let s = line_starts(&b);
    b[s[2] + 60] ^= 0x02;
    b.extend_from_slice(b"{\"v\":1,\"se");
    assert_damaged(&path, &b, 3, "crc mismatch");
}

#[test]
fn damage_seq_gap() {
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 8);
    let b = read_all(&path);
    let s = line_starts(&b);
    let mut g = b[..s[3]].to_vec(); // lines 1..=3
    g.extend_from_slice(&b[s[4]..]); // lines 5..=8
    assert_damaged(&path, &g, 4, "seq gap: expected 4, found 5");
}

#[test]
fn damage_duplicated_seq() {
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 8);
    let b = read_all(&path);
    let s = line_starts(&b);
    let mut g = b[..s[4]].to_vec(); // lines 1..=4
    g.extend_from_slice(&b[s[3]..]); // line 4 again, then 5..=8
    assert_damaged(&path, &g, 5, "duplicated seq: expected 5, found 4");
}

#[test]
fn damage_duplicated_last_line_is_not_cut() {
    // A line with a valid crc is never cut, even at the very end.
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 5);
    let mut b = read_all(&path);
    let s = line_starts(&b);
    let last = b[s[4]..].to_vec();
    b.extend_from_slice(&last);
    assert_damaged(&path, &b, 6, "duplicated seq");
}

#[test]
fn damage_prefix_edited_by_one_byte() {
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 8);
    let mut b = read_all(&path);
    let s = line_starts(&b);
    // `{"v":1,"seq":` → `{"v":1,"sEq":`
    b[s[5] + 9] = b'E';
    assert_damaged(&path, &b, 6, "prefix");
}

#[test]
fn damage_in_the_first_line() {
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 4);
    let mut b = read_all(&path);
    b[40] ^= 0x01;
    assert_damaged(&path, &b, 1, "crc mismatch");
}

#[test]
fn damage_hidden_in_a_large_journal_is_found_by_verify() {
    // Documented limit: open checks the tail (16 KiB) and the first line only, so a
    // bad line in the middle of a large journal with a good tail opens writable;
    // verify() and readers find it.
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 400);
    let mut b = read_all(&path);
    let s = line_starts(&b);
    b[s[99] + 50] ^= 0x04;
    write_private(&path, &b);
    let out = open(&path);
    assert!(out.journal.is_some());
    assert_eq!(out.report.last_seq, 400);
    let d = Reader::open(&path)
        .unwrap()
        .verify()
        .unwrap()
        .damage
        .unwrap();
    assert_eq!((d.line, d.offset), (100, s[99] as u64));
    assert!(d.reason.contains("crc mismatch"));
}

// ---------------------------------------------------------------- versions, markers

#[test]
fn newer_version_is_refused_untouched() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("journal.ndjson");
    let mut b = Vec::new();
    for seq in 1..=3 {
        let l = encode_line(seq, "2026-05-02T18:30:00.123Z", "k", &json!({})).unwrap();
        b.extend_from_slice(l.replacen("{\"v\":1", "{\"v\":2", 1).as_bytes());
    }
    b.extend_from_slice(b"{\"v\":2,\"seq\":4,\"cr"); // even with a torn tail
    write_private(&path, &b);
    let out = open(&path);
    assert!(out.journal.is_none());
    let d = out.report.damage.unwrap();
    assert_eq!((d.line, d.offset), (1, 0));
    assert!(
        d.reason.contains("v2") && d.reason.contains("v1"),
        "{}",
        d.reason
    );
    assert_eq!(d.error_kind(), ErrorKind::UnsupportedVersion);
    assert_eq!(d.to_error(&path).kind(), ErrorKind::UnsupportedVersion);
    assert_eq!(read_all(&path), b);
    assert!(corrupt_files(t.path()).is_empty());
    let e = Reader::open(&path).unwrap().next_record().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnsupportedVersion);
}

#[test]
fn newer_version_appended_by_a_newer_r1_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 4);
    let mut b = read_all(&path);
    let l = encode_line(5, "2026-05-02T18:30:00.123Z", "k", &json!({})).unwrap();
    b.extend_from_slice(l.replacen("{\"v\":1", "{\"v\":3", 1).as_bytes());
    write_private(&path, &b);
    let out = open(&path);
    assert!(out.journal.is_none());
    let d = out.report.damage.unwrap();
    assert_eq!(d.line, 5);
    assert!(d.reason.contains("v3") && d.reason.contains("v1"));
    assert_eq!(read_all(&path), b);
}

#[test]
fn newer_version_torn_line_is_not_cut() {
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 4);
    let mut b = read_all(&path);
    b.extend_from_slice(b"{\"v\":2,\"seq\":5,\"crc\":\"0000");
    write_private(&path, &b);
    let out = open(&path);
    assert!(out.journal.is_none());
    assert_eq!(out.report.damage.unwrap().line, 5);
    assert_eq!(read_all(&path), b);
}

#[test]
fn mismatched_clean_marker_falls_back_to_the_tail_check() {
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 5);
    let out = open(&path);
    out.journal.unwrap().close().unwrap();
    let marker = t.path().join("clean");
    assert!(marker.exists());
    // The file changed after the marker was written: a torn tail.
    let mut b = read_all(&path);
    let keep = b.len();
    b.extend_from_slice(b"{\"v\":1,\"seq\":6,\"crc\":\"deadbeef\",\"at\":");
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&b[keep..]).unwrap();
    drop(f);
    let out = open(&path);
    assert!(!out.report.clean, "marker size does not match: not trusted");
    let rep = out.report.repaired.unwrap();
    assert_eq!((rep.last_good_seq, rep.dropped_lines), (5, 1));
    assert_eq!(fs::read(&rep.corrupt_path).unwrap(), &b[keep..]);
    assert!(!marker.exists(), "stale marker removed");
}

#[test]
fn garbage_clean_marker_is_ignored_and_removed() {
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 3);
    let marker = t.path().join("clean");
    write_private(&marker, b"not json");
    let out = open(&path);
    assert!(!out.report.clean);
    assert_eq!(out.report.last_seq, 3);
    assert_eq!(out.report.epoch, "epoch-0");
    assert!(!marker.exists());
}

#[test]
fn open_many_and_close_many_keep_order_and_outcomes() {
    let t = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for i in 0..40u64 {
        let dir = t.path().join(format!("s{i}"));
        fs::create_dir(&dir).unwrap();
        let (p, _) = journal_with(&dir, 2 + i % 5);
        paths.push(p);
    }
    // One damaged (a bad first line, good lines after it), one torn, one missing.
    let mut b = read_all(&paths[7]);
    b[40] ^= 1;
    write_private(&paths[7], &b);
    OpenOptions::new()
        .append(true)
        .open(&paths[9])
        .unwrap()
        .write_all(b"{\"v\":1,")
        .unwrap();
    paths.push(t.path().join("missing.ndjson"));

    let outs = Journal::open_many(&paths, &WriterOptions::default());
    assert_eq!(outs.len(), 41);
    let mut open = Vec::new();
    for (i, r) in outs.into_iter().enumerate() {
        match i {
            7 => assert!(r.unwrap().report.damage.is_some()),
            9 => {
                let o = r.unwrap();
                assert_eq!(o.report.repaired.unwrap().last_good_seq, 2 + 9 % 5);
                open.push(o.journal.unwrap());
            }
            40 => assert_eq!(r.unwrap_err().kind(), ErrorKind::NotFound),
            _ => {
                let o = r.unwrap();
                assert_eq!(o.report.last_seq, 2 + i as u64 % 5, "journal {i}");
                assert!(!o.report.clean);
                open.push(o.journal.unwrap());
            }
        }
    }
    assert!(Journal::close_many(&open).into_iter().all(|r| r.is_ok()));
    assert!(open.iter().all(|j| j.is_closed()));
    let again = Journal::open_many(&paths[..7], &WriterOptions::default());
    for (i, r) in again.into_iter().enumerate() {
        let o = r.unwrap();
        assert!(o.report.clean);
        assert_eq!(o.report.last_seq, 2 + i as u64 % 5);
    }
}

// ---------------------------------------------------------------- long lines

#[test]
fn twenty_mib_line_round_trips() {
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 3);
    // The 20 MiB record is built by hand (its text needs no escaping): serde's escaper
    // takes seconds over 20 MiB in a debug build, and what is under test here is that
    // recovery, the writer and the reader handle a line this long.
    let text: String = "0123456789abcdef".repeat(20 * 1024 * 1024 / 16);
    let body = format!(
        r#""at":"2026-05-02T18:30:00.123Z","kind":"session.delta","data":{{"stream":"stdout","text":"{text}"}}}}"#
    );
    let crc = crc32c::crc32c(body.as_bytes());
    let big = format!("{{\"v\":1,\"seq\":4,\"crc\":\"{crc:08x}\",{body}\n");
    assert!(big.len() > 20 * 1024 * 1024);
    let big_at = fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(big.as_bytes())
        .unwrap();

    // Open: the tail check widens its window past the long last line; the writer
    // continues after it.
    let out = open(&path);
    assert_eq!(out.report.last_seq, 4);
    assert_eq!(out.report.damage, None);
    assert_eq!(out.report.repaired, None);
    let j = out.journal.unwrap();
    assert_eq!(
        j.append("session.delta", &json!({"text": "after"}))
            .unwrap()
            .seq,
        5
    );
    drop(j);

    let mut rd = Reader::open(&path).unwrap();
    rd.seek(3).unwrap();
    let rec = rd.next_record().unwrap().unwrap();
    assert_eq!(rec.seq, 4);
    assert_eq!(rec.line(), big.trim_end());
    assert_eq!(
        rec.to_value().unwrap()["data"]["text"].as_str(),
        Some(text.as_str())
    );
    assert_eq!(rd.next_record().unwrap().unwrap().seq, 5);
    let v = Reader::open(&path).unwrap().verify().unwrap();
    assert_eq!((v.records, v.damage), (5, None));
    // And a cut inside it is a torn tail like any other.
    let cut = big_at + big.len() as u64 / 2;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let rep = open(&path).report.repaired.unwrap();
    assert_eq!(rep.last_good_seq, 3);
    assert_eq!(rep.dropped_lines, 1);
    assert_eq!(rep.dropped_bytes, cut - big_at);
    assert_eq!(
        fs::metadata(&rep.corrupt_path).unwrap().len(),
        rep.dropped_bytes
    );
}

// ---------------------------------------------------------------- property test

#[derive(Debug, Clone)]
enum Op {
    Append {
        durable: bool,
        len: usize,
    },
    /// Crash and cut the file at this fraction of the bytes after the last durable
    /// append's end (everything before it was fsync'd).
    Crash {
        at: f64,
    },
    /// Clean close and reopen.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<bool>(), 0usize..300).prop_map(|(durable, len)| Op::Append { durable, len }),
        2 => (0.0f64..=1.0).prop_map(|at| Op::Crash { at }),
        1 => Just(Op::Reopen),
    ]
}

/// One record the model expects: seq, kind, data, and its end offset in the file.
struct Expect {
    seq: u64,
    kind: String,
    data: serde_json::Value,
    end: u64,
}

/// A scratch dir on tmpfs when there is one: the property is about which bytes
/// survive a cut, not about the disk, and real fsyncs would make 64 cases slow.
fn fast_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(t) = tempfile::tempdir_in(shm)
    {
        return t;
    }
    tempfile::tempdir().unwrap()
}

fn run_ops(ops: &[Op]) -> Result<(), TestCaseError> {
    let t = fast_tempdir();
    let path = t.path().join("journal.ndjson");
    // A long interval: the property is about what survives a cut, not the flusher.
    let o = WriterOptions {
        fsync_interval: Duration::from_secs(60),
        ..WriterOptions::default()
    };
    let mut j = Journal::create(&path, "e0", "session.created", &json!({}), o.clone()).unwrap();
    let mut epoch = "e0".to_owned();
    let mut model = vec![Expect {
        seq: 1,
        kind: "session.created".into(),
        data: json!({"epoch": "e0"}),
        end: j.size(),
    }];
    let mut durable_end = j.size();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Append { durable, len } => {
                let kind = if *durable {
                    "user.input"
                } else {
                    "session.delta"
                };
                let data = json!({"i": i, "text": "x\"é\n".repeat(*len / 4)});
                let r = j.append(kind, &data).unwrap();
                prop_assert_eq!(r.seq, model.len() as u64 + 1);
                if *durable {
                    prop_assert!(j.synced_seq() >= r.seq);
                    durable_end = j.size();
                }
                model.push(Expect {
                    seq: r.seq,
                    kind: kind.into(),
                    data,
                    end: j.size(),
                });
            }
            Op::Crash { at } => {
                let size = j.size();
                drop(j);
                let cut = durable_end + ((size - durable_end) as f64 * at) as u64;
                let f = OpenOptions::new().write(true).open(&path).unwrap();
                f.set_len(cut).unwrap();
                drop(f);
                let kept = model.iter().take_while(|e| e.end <= cut).count();
                let last_end = model[..kept].last().map_or(0, |e| e.end);
                model.truncate(kept);
                prop_assert!(kept >= 1, "the durable first record survives");
                let out = Journal::open(&path, o.clone()).unwrap();
                prop_assert_eq!(&out.report.damage, &None);
                j = out.journal.unwrap();
                if cut > last_end {
                    let rep = out.report.repaired.clone().unwrap();
                    prop_assert_eq!(rep.last_good_seq, kept as u64);
                    prop_assert_eq!(rep.dropped_bytes, cut - last_end);
                    prop_assert_ne!(&rep.epoch, &epoch);
                    epoch = rep.epoch.clone();
                    model.push(Expect {
                        seq: kept as u64 + 1,
                        kind: "journal.repaired".into(),
                        data: json!({
                            "dropped_bytes": rep.dropped_bytes,
                            "dropped_lines": 1,
                            "last_good_seq": rep.last_good_seq,
                            "epoch": rep.epoch,
                        }),
                        end: j.size(),
                    });
                } else {
                    prop_assert_eq!(&out.report.repaired, &None);
                }
                prop_assert_eq!(&out.report.epoch, &epoch);
                prop_assert_eq!(out.report.last_seq, model.len() as u64);
                durable_end = j.size();
            }
            Op::Reopen => {
                j.close().unwrap();
                drop(j);
                let out = Journal::open(&path, o.clone()).unwrap();
                prop_assert!(out.report.clean);
                prop_assert_eq!(&out.report.epoch, &epoch);
                prop_assert_eq!(out.report.last_seq, model.len() as u64);
                j = out.journal.unwrap();
                durable_end = j.size();
            }
        }
    }
    drop(j);
    let v = Reader::open(&path).unwrap().verify().unwrap();
    prop_assert_eq!(&v.damage, &None);
    prop_assert_eq!(v.pending_bytes, 0);
    prop_assert_eq!(v.records, model.len() as u64);
    let mut rd = Reader::open(&path).unwrap();
    for e in &model {
        let r = rd.next_record().unwrap().unwrap();
        prop_assert_eq!(r.seq, e.seq);
        let val = r.to_value().unwrap();
        prop_assert_eq!(val["kind"].as_str(), Some(e.kind.as_str()));
        prop_assert_eq!(&val["data"], &e.data);
    }
    prop_assert!(rd.next_record().unwrap().is_none());
    for since in 0..=model.len() as u64 {
        rd.seek(since).unwrap();
        let got = rd.next_record().unwrap().map(|r| r.seq);
        let want = (since < model.len() as u64).then_some(since + 1);
        prop_assert_eq!(got, want, "seek({})", since);
    }
    let reopened = Journal::open(&path, o).unwrap();
    prop_assert_eq!(&reopened.report.epoch, &epoch);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn crashes_recover_to_a_valid_prefix_with_every_durable_append(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        run_ops(&ops)?;
    }
}

// ---------------------------------------------------------------- seek

#[test]
fn seek_lands_on_every_seq_with_varied_line_lengths() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("journal.ndjson");
    let j = Journal::create(
        &path,
        "e",
        "session.created",
        &json!({}),
        WriterOptions::default(),
    )
    .unwrap();
    let n = 3000u64;
    for i in 2..=n {
        // Mostly short lines, some of 1-70 KiB, so bisection probes land mid-line.
        let len = if i % 97 == 0 {
            (i as usize * 31) % 70_000
        } else {
            (i as usize) % 40
        };
        j.append("session.delta", &json!({"text": "z".repeat(len)}))
            .unwrap();
    }
    let mut rd = Reader::open(&path).unwrap();
    for since in (0..=n).step_by(7).chain([n - 1, n, n + 5]) {
        rd.seek(since).unwrap();
        let got = rd.next_record().unwrap().map(|r| r.seq);
        assert_eq!(got, (since < n).then_some(since + 1), "seek({since})");
    }
    // At the end, the reader yields what is appended next.
    rd.seek(n).unwrap();
    assert!(rd.next_record().unwrap().is_none());
    j.append("session.delta", &json!({})).unwrap();
    assert_eq!(rd.next_record().unwrap().unwrap().seq, n + 1);
}

/// Writes `n` valid records quickly: the body (and so the crc) is the same for every
/// line; only the seq in the prefix differs.
fn synthetic_journal(path: &Path, n: u64) {
    let template = encode_line(1, "2026-05-02T18:30:00.123Z", "session.delta", &json!({"text": "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz"})).unwrap();
    let body_at = template.find(",\"crc\"").unwrap();
    let rest = &template[body_at..];
    let mut out = std::io::BufWriter::with_capacity(1 << 20, fs::File::create(path).unwrap());
    for seq in 1..=n {
        write!(out, "{{\"v\":1,\"seq\":{seq}{rest}").unwrap();
    }
    out.flush().unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn seek_near_the_end_of_a_large_journal_is_fast() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("journal.ndjson");
    let n = 200_000;
    synthetic_journal(&path, n);
    let mut rd = Reader::open(&path).unwrap();
    let start = Instant::now();
    rd.seek(n - 10).unwrap();
    let rec = rd.next_record().unwrap().unwrap();
    let took = start.elapsed();
    assert_eq!(rec.seq, n - 9);
    // A full scan of this 40 MB file takes far longer even in an optimised build;
    // the bound is loose for unoptimised 2-core CI.
    assert!(took < Duration::from_millis(100), "seek took {took:?}");
    rd.seek(n / 3).unwrap();
    assert_eq!(rd.next_record().unwrap().unwrap().seq, n / 3 + 1);
}

/// The DESIGN target: ≤5 ms near the end of a 1,000,000-record journal. Ignored by
/// default (writes ~190 MB); run with `cargo test --release -- --ignored seek_1m`.
#[test]
#[ignore]
fn seek_1m_records_timing() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("journal.ndjson");
    let n = 1_000_000;
    synthetic_journal(&path, n);
    // Open (tail check + epoch search) on the same file, for the restart budget.
    let start = Instant::now();
    let out = open(&path);
    let open_took = start.elapsed();
    assert_eq!(out.report.last_seq, n);
    drop(out);
    let mut rd = Reader::open(&path).unwrap();
    let mut worst = Duration::ZERO;
    for since in [n - 1, n - 100, n - 5000, n / 2, 10] {
        let start = Instant::now();
        rd.seek(since).unwrap();
        let rec = rd.next_record().unwrap().unwrap();
        worst = worst.max(start.elapsed());
        assert_eq!(rec.seq, since + 1);
    }
    let start = Instant::now();
    let v = Reader::open(&path).unwrap().verify().unwrap();
    let verify_took = start.elapsed();
    assert_eq!(v.records, n);
    println!("1M records: worst seek {worst:?}, open {open_took:?}, verify {verify_took:?}");
    assert!(worst <= Duration::from_millis(5), "{worst:?}");
}

/// Restart budget: 1,000 journals × 1,000 records, opened after a crash (no clean
/// markers) in well under a second. Ignored by default (writes ~200 MB); run in
/// release with `-- --ignored restart_1000`.
#[test]
#[ignore]
fn restart_1000_journals_timing() {
    let t = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for i in 0..1000 {
        let dir = t.path().join(format!("s{i}"));
        fs::create_dir(&dir).unwrap();
        let p = dir.join("journal.ndjson");
        synthetic_journal(&p, 1000);
        paths.push(p);
    }
    let start = Instant::now();
    let mut journals = Vec::new();
    for p in &paths {
        let out = open(p);
        assert_eq!(out.report.last_seq, 1000);
        journals.push(out.journal.unwrap());
    }
    let took = start.elapsed();
    println!("reopened 1000 journals x 1000 records (no markers) in {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // After a clean shutdown: each open trusts its marker, then unlinks it durably
    // (an fsync of its directory), which costs what the disk charges for that.
    let start = Instant::now();
    for r in Journal::close_many(&journals) {
        r.unwrap();
    }
    println!(
        "close_many: 1000 journals (fsync + marker) in {:?}",
        start.elapsed()
    );
    drop(journals);
    let start = Instant::now();
    let reopened: Vec<_> = Journal::open_many(&paths, &WriterOptions::default())
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    println!(
        "open_many: 1000 journals with clean markers in {:?}",
        start.elapsed()
    );
    assert!(reopened.iter().all(|o| o.report.clean));
    let journals: Vec<_> = reopened.into_iter().map(|o| o.journal.unwrap()).collect();
    let start = Instant::now();
    for j in &journals {
        j.close().unwrap();
    }
    println!("close one by one: 1000 journals in {:?}", start.elapsed());
    drop(journals);
    let start = Instant::now();
    for p in &paths {
        assert!(open(p).report.clean);
    }
    println!(
        "open one by one: 1000 journals with clean markers in {:?}",
        start.elapsed()
    );
}

// ---------------------------------------------------------------- follow

#[test]
fn follow_sees_appends_from_another_thread() {
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 3);
    let j = open(&path).journal.unwrap();
    let mut rd = Reader::open(&path).unwrap();
    rd.seek(3).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..50 {
                j.append("session.delta", &json!({"i": i})).unwrap();
                if i % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(15));
                }
            }
        });
        for want in 4..=53 {
            let rec = rd
                .next_wait(Duration::from_secs(5))
                .unwrap()
                .expect("a record");
            assert_eq!(rec.seq, want);
        }
    });
    assert!(rd.next_wait(Duration::from_millis(30)).unwrap().is_none());
}

#[test]
fn follow_incomplete_line_is_pending_then_delivered() {
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 3);
    let mut rd = Reader::open(&path).unwrap();
    rd.seek(3).unwrap();
    let line = encode_line(
        4,
        "2026-05-02T18:30:00.123Z",
        "session.delta",
        &json!({"t": "half"}),
    )
    .unwrap();
    let (a, b) = line.as_bytes().split_at(line.len() / 2);
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(a).unwrap();
    assert!(rd.next_wait(Duration::from_millis(40)).unwrap().is_none());
    assert!(rd.next_record().unwrap().is_none(), "pending, not damage");
    let v = Reader::open(&path).unwrap().verify().unwrap();
    assert_eq!(
        (v.records, v.pending_bytes, v.damage),
        (3, a.len() as u64, None)
    );
    f.write_all(b).unwrap();
    let rec = rd.next_wait(Duration::from_secs(2)).unwrap().unwrap();
    assert_eq!(rec.seq, 4);
    assert_eq!(rec.line(), line.trim_end());
}

#[test]
fn follow_reports_truncation() {
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 5);
    let mut rd = Reader::open(&path).unwrap();
    rd.seek(5).unwrap();
    let s = line_starts(&read_all(&path));
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(s[2] as u64)
        .unwrap();
    let e = rd.next_wait(Duration::from_millis(200)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed);
    assert!(e.message().contains("truncated"), "{e}");
}

#[test]
fn follow_reports_replacement_and_removal() {
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 2);
    let mut rd = Reader::open(&path).unwrap();
    assert_eq!(rd.next_record().unwrap().unwrap().seq, 1);
    let other = t.path().join("other.ndjson");
    fs::copy(&path, &other).unwrap();
    fs::rename(&other, &path).unwrap();
    // Records left in the file we opened come first, then the replacement is named.
    assert_eq!(
        rd.next_wait(Duration::from_millis(50))
            .unwrap()
            .unwrap()
            .seq,
        2
    );
    let e = rd.next_wait(Duration::from_millis(200)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed);
    assert!(e.message().contains("replaced"), "{e}");

    let mut rd = Reader::open(&path).unwrap();
    rd.seek(2).unwrap();
    fs::remove_file(&path).unwrap();
    let e = rd.next_wait(Duration::from_millis(200)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed);
    assert!(e.message().contains("removed"), "{e}");
}

#[test]
fn follow_sees_a_recovery_after_a_pending_torn_line() {
    // A follower parked on a torn line sees the writer's repair, not garbage.
    let t = tempfile::tempdir().unwrap();
    let (path, _) = journal_with(t.path(), 3);
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(b"{\"v\":1,\"seq\":4,\"crc\":\"0").unwrap();
    let mut rd = Reader::open(&path).unwrap();
    rd.seek(3).unwrap();
    assert!(rd.next_wait(Duration::from_millis(20)).unwrap().is_none());
    let out = open(&path);
    assert!(out.report.repaired.is_some());
    let rec = rd.next_wait(Duration::from_secs(1)).unwrap().unwrap();
    assert_eq!(rec.seq, 4);
    assert_eq!(rec.kind().as_deref(), Some("journal.repaired"));
}
