//! Journal recovery: bytes written as a journal file → `Journal::open` (recovery),
//! then `Reader::verify`, iteration and `seek`. Never a panic, and recovery never
//! deletes a line with a valid CRC: every complete line whose CRC matches its body is
//! still in the file, byte for byte at its offset, after the open. What recovery cut
//! is in the `.corrupt-*` file, and a journal opened read-only is left untouched.
//!
//! The first input byte picks options: bit 0 writes a clean marker whose size matches
//! the file (so open trusts it), bit 1 appends a record after a writable open, bit 3
//! recomputes the CRC of every line whose prefix parses (a fuzzer cannot guess
//! CRC-32C values; this lets it reach the seq, shape and damage rules).
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use r1_core::journal::record::parse_prefix;
use r1_core::journal::{Journal, Reader, WriterOptions};

static DIR: LazyLock<PathBuf> = LazyLock::new(|| r1_fuzz::scratch_dir("r1-fuzz-journal-"));

/// What recovery's tail check reads (`recover::TAIL_WINDOW`): below it, open checks
/// every line.
const TAIL_WINDOW: u64 = 16 * 1024;

fn write_private(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create");
    f.write_all(bytes).expect("write");
}

/// `(offset, length without the newline)` of every complete line whose CRC matches.
fn crc_valid_lines(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(k) = bytes[start..].iter().position(|&b| b == b'\n') {
        let line = &bytes[start..start + k];
        if let Ok((_, _, crc, body_start)) = parse_prefix(line)
            && crc32c::crc32c(&line[body_start..]) == crc
        {
            out.push((start, k));
        }
        start += k + 1;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let fixed;
    let bytes = if flags & 8 != 0 {
        fixed = r1_fuzz::fix_all_crcs(bytes);
        &fixed[..]
    } else {
        bytes
    };
    let dir = DIR.as_path();
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    let path = dir.join("journal.ndjson");
    write_private(&path, bytes);
    if flags & 1 != 0 {
        let marker = serde_json::json!({"size": bytes.len(), "last_seq": flags >> 2, "epoch": "e"});
        write_private(&dir.join("clean"), marker.to_string().as_bytes());
    }

    let outcome = Journal::open(
        &path,
        WriterOptions {
            fsync_interval: std::time::Duration::from_millis(100),
            ..WriterOptions::default()
        },
    );
    let after = std::fs::read(&path).expect("the journal is still there");
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            // Refusing to open is allowed; damaging the file while refusing is not.
            assert_eq!(after, bytes, "a failed open changed the file: {e}");
            return;
        }
    };

    // Recovery never deletes a record with a valid CRC.
    for (off, len) in crc_valid_lines(bytes) {
        assert!(
            after.len() > off + len && after[off..=off + len] == bytes[off..=off + len],
            "recovery removed the valid line at offset {off}: {:?}",
            String::from_utf8_lossy(&bytes[off..off + len])
        );
    }
    match (&outcome.journal, &outcome.report.repaired) {
        (None, _) => {
            assert!(outcome.report.damage.is_some(), "read-only without damage");
            assert_eq!(after, bytes, "a read-only open changed the file");
        }
        (Some(_), Some(rep)) => {
            let keep = bytes.len() as u64 - rep.dropped_bytes;
            let saved = std::fs::read(&rep.corrupt_path).expect("the cut tail was saved");
            assert_eq!(
                saved,
                &bytes[keep as usize..],
                "the saved tail is not what was cut"
            );
            assert_eq!(&after[..keep as usize], &bytes[..keep as usize]);
        }
        (Some(_), None) => {
            assert_eq!(after, bytes, "an open without repair changed the file");
        }
    }

    if let Some(j) = &outcome.journal {
        if flags & 2 != 0 {
            let _ = j.append("fuzz.after", &serde_json::json!({"n": 1}));
        }
        let _ = j.close();
    }

    // Readers on whatever is there now.
    let mut r = Reader::open(&path).expect("reader opens");
    let report = r.verify().expect("verify reads");
    if outcome.journal.is_some() && flags & 1 == 0 && (bytes.len() as u64) < TAIL_WINDOW {
        // Recovery (without a marker to trust) checked every line of a file this
        // small, so what it opened for writing verifies.
        assert!(
            report.damage.is_none(),
            "recovery opened a journal for writing that verify calls damaged: {report:?}"
        );
    }
    let mut n = 0u64;
    while let Ok(Some(rec)) = r.next_record() {
        n += 1;
        let _ = rec.to_value();
    }
    assert_eq!(
        n, report.records,
        "iteration and verify disagree on the records"
    );
    let mut r = Reader::open(&path).expect("reader opens");
    let target = u64::from(flags >> 4);
    if r.seek(target).is_ok()
        && let Ok(Some(rec)) = r.next_record()
    {
        assert!(rec.seq > target, "seek({target}) landed on seq {}", rec.seq);
    }
});
