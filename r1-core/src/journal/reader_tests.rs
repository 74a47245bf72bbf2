use super::*;
use crate::journal::record::encode_line;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;

fn line(seq: u64, data: serde_json::Value) -> String {
    encode_line(seq, "2026-05-02T18:30:00.123Z", "k", &data).unwrap()
}

fn file_with(dir: &Path, content: &[u8]) -> PathBuf {
    let p = dir.join("journal.ndjson");
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

#[test]
fn find_newline_positions() {
    assert_eq!(find_newline(b"ab\ncd\n"), Some(2));
    assert_eq!(find_newline(b"\n"), Some(0));
    assert_eq!(find_newline(b"abc"), None);
    assert_eq!(find_newline(b""), None);
}

#[test]
fn scanner_lines_pending_and_long_lines() {
    let t = tempfile::tempdir().unwrap();
    let long = "y".repeat(200_000);
    let content = format!("a\n\n{long}\ntail");
    let p = file_with(t.path(), content.as_bytes());
    let f = File::open(&p).unwrap();
    // A tiny chunk, so lines arrive in pieces.
    let mut sc = LineScanner::new(0, 16);
    assert!(matches!(
        sc.next(&f).unwrap(),
        Next::Line {
            offset: 0,
            line: b"a"
        }
    ));
    assert!(matches!(
        sc.next(&f).unwrap(),
        Next::Line {
            offset: 2,
            line: b""
        }
    ));
    match sc.next(&f).unwrap() {
        Next::Line { offset, line } => {
            assert_eq!(offset, 3);
            assert_eq!(line, long.as_bytes());
        }
        other => panic!("{other:?}"),
    }
    let tail_at = (4 + long.len()) as u64;
    assert!(matches!(sc.next(&f).unwrap(), Next::Pending { offset, len: 4 } if offset == tail_at));
    // Pending stays pending (re-read each time), and completes when the writer does.
    assert_eq!(sc.pos(), tail_at);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .unwrap()
        .write_all(b"!\n")
        .unwrap();
    assert!(matches!(
        sc.next(&f).unwrap(),
        Next::Line { line: b"tail!", .. }
    ));
    assert!(matches!(sc.next(&f).unwrap(), Next::Eof));
}

use std::io::Write;

#[test]
fn scanner_skips_a_line_over_the_limit() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("j");
    let mut f = std::fs::File::create(&p).unwrap();
    let chunk = vec![b'z'; 1 << 20];
    for _ in 0..33 {
        f.write_all(&chunk).unwrap();
    }
    f.write_all(b"\nok\n").unwrap();
    drop(f);
    let f = File::open(&p).unwrap();
    let mut sc = LineScanner::new(0, 1 << 20);
    match sc.next(&f).unwrap() {
        Next::TooLong { offset: 0, len } => assert_eq!(len, 33 * (1 << 20) + 1),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        sc.next(&f).unwrap(),
        Next::Line { line: b"ok", .. }
    ));
}

#[test]
fn next_line_start_skips_garbage() {
    let t = tempfile::tempdir().unwrap();
    let content = line(1, json!({})) + "garbage\n\n" + &line(2, json!({}));
    let p = file_with(t.path(), content.as_bytes());
    let f = File::open(&p).unwrap();
    let size = content.len() as u64;
    assert_eq!(next_line_start(&f, 0, size).unwrap(), Some((0, 1)));
    let second = content.rfind("{\"v\"").unwrap() as u64;
    assert_eq!(next_line_start(&f, 1, size).unwrap(), Some((second, 2)));
    assert_eq!(
        next_line_start(&f, second, size).unwrap(),
        Some((second, 2))
    );
    assert_eq!(next_line_start(&f, second + 1, size).unwrap(), None);
    assert_eq!(
        next_line_start(&f, 1, second).unwrap(),
        None,
        "limit respected"
    );
}

#[test]
fn seek_onto_a_gap_reports_it() {
    let t = tempfile::tempdir().unwrap();
    let mut content = String::new();
    for seq in (1..=20).filter(|s| *s != 11) {
        content += &line(seq, json!({"i": seq}));
    }
    let p = file_with(t.path(), content.as_bytes());
    let mut rd = Reader::open(&p).unwrap();
    rd.seek(10).unwrap();
    let e = rd.next_record().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::JournalDamaged);
    assert!(
        e.message().contains("seq gap: expected 11, found 12"),
        "{e}"
    );
    // Line numbers are known when the seek read from the start.
    assert!(e.message().contains("line 11"), "{e}");
    // From the start, iteration stops at the same place.
    let mut rd = Reader::open(&p).unwrap();
    for seq in 1..=10 {
        assert_eq!(rd.next_record().unwrap().unwrap().seq, seq);
    }
    assert!(rd.next_record().is_err());
    assert!(rd.next_record().is_err(), "stays on the bad line");
}

#[test]
fn first_line_must_be_seq_one() {
    let t = tempfile::tempdir().unwrap();
    let p = file_with(t.path(), line(3, json!({})).as_bytes());
    let e = Reader::open(&p).unwrap().next_record().unwrap_err();
    assert!(e.message().contains("seq gap: expected 1, found 3"), "{e}");
    let v = Reader::open(&p).unwrap().verify().unwrap();
    assert_eq!(v.damage.unwrap().line, 1);
}

/// What [`walk_verified`] sees of `content`: the seqs and kinds it visited, and the
/// damage it stopped at.
fn walk(content: &[u8]) -> (Vec<(u64, String)>, Option<Damage>) {
    let t = tempfile::tempdir().unwrap();
    let p = file_with(t.path(), content);
    let f = File::open(&p).unwrap();
    let mut seen = Vec::new();
    let end = walk_verified(&f, content.len() as u64, |rec| {
        seen.push((rec.seq, rec.kind.clone().into_owned()));
    })
    .unwrap();
    let damage = match end {
        WalkEnd::Intact => None,
        WalkEnd::Damaged(d) => Some(d),
    };
    (seen, damage)
}

/// What `Reader::next_record` yields from the start of `content`, in the same terms.
fn read_all(content: &[u8]) -> (Vec<(u64, String)>, Option<Damage>) {
    let t = tempfile::tempdir().unwrap();
    let p = file_with(t.path(), content);
    let mut rd = Reader::open(&p).unwrap();
    let mut seen = Vec::new();
    loop {
        match rd.next_record() {
            Ok(Some(r)) => seen.push((r.seq, r.kind().unwrap())),
            Ok(None) => return (seen, None),
            Err(e) => {
                let data = e.data().cloned().unwrap();
                let damage = Damage {
                    line: data["line"].as_u64().unwrap(),
                    offset: data["offset"].as_u64().unwrap(),
                    reason: data["reason"].as_str().unwrap().to_owned(),
                };
                return (seen, Some(damage));
            }
        }
    }
}

/// The restart scan stops where a reader stops, naming the same line and reason,
/// over journals damaged in every way the corpus knows (and intact ones, and a
/// pending last line, which is not damage).
#[test]
fn walk_verified_sees_exactly_what_the_reader_sees() {
    let good: Vec<String> = (1..=40)
        .map(|seq| {
            encode_line(
                seq,
                "2026-05-02T18:30:00.123Z",
                if seq % 3 == 0 { "tool.end" } else { "we\"ird" },
                &json!({"lane_id": seq, "text": "é".repeat(seq as usize % 9)}),
            )
            .unwrap()
        })
        .collect();
    let joined = |lines: &[String]| lines.concat().into_bytes();
    let mut cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        joined(&good),
        joined(&good[..1]),
        // Pending last line.
        [joined(&good[..5]), good[5].as_bytes()[..30].to_vec()].concat(),
    ];
    let all = joined(&good);
    // A flipped byte in every line in turn (prefix, CRC, body), and a cut anywhere.
    for (i, at) in [0usize, 5, 14, 22, 40, 70, 100].iter().enumerate() {
        let mut b = all.clone();
        let line_start: usize = good[..i * 5].iter().map(String::len).sum();
        b[line_start + at] ^= 0x20;
        cases.push(b);
    }
    for cut in [1usize, 50, 999, all.len() - 1] {
        cases.push(all[..cut].to_vec());
    }
    // Gap, duplicate, garbage line, an empty line, a newer version, a hand-made line
    // with a good CRC and a repeated field.
    let mut gap = good.clone();
    gap.remove(7);
    cases.push(joined(&gap));
    let mut dup = good.clone();
    dup.insert(9, good[8].clone());
    cases.push(joined(&dup));
    let mut garbage = good.clone();
    garbage.insert(12, "not json\n".to_owned());
    cases.push(joined(&garbage));
    let mut empty = good.clone();
    empty.insert(3, "\n".to_owned());
    cases.push(joined(&empty));
    let mut newer = good.clone();
    newer[20] = newer[20].replacen("{\"v\":1", "{\"v\":2", 1);
    cases.push(joined(&newer));
    let body = r#""at":"t","kind":"k","data":{},"seq":999}"#;
    let crafted = format!(
        "{{\"v\":1,\"seq\":4,\"crc\":\"{:08x}\",{body}\n",
        crc32c::crc32c(body.as_bytes())
    );
    let mut smuggled = good.clone();
    smuggled[3] = crafted;
    cases.push(joined(&smuggled));
    for content in &cases {
        assert_eq!(
            walk(content),
            read_all(content),
            "{}",
            String::from_utf8_lossy(content)
        );
    }
}
