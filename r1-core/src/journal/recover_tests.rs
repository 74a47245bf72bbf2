use super::*;
use crate::journal::record::encode_line;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;

const AT: &str = "2026-05-02T18:30:00.123Z";

fn line(seq: u64, kind: &str, data: serde_json::Value) -> String {
    encode_line(seq, AT, kind, &data).unwrap()
}

fn file_with(dir: &Path, content: &[u8]) -> (PathBuf, File) {
    let p = dir.join("journal.ndjson");
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    let f = File::open(&p).unwrap();
    (p, f)
}

#[test]
fn find_all_finds_every_occurrence() {
    assert_eq!(find_all(b"abcabcab", b"abc"), vec![0, 3]);
    assert_eq!(find_all(b"aaaa", b"aa"), vec![0, 1, 2]);
    assert_eq!(find_all(b"xyz", b"xyzw"), Vec::<usize>::new());
    assert_eq!(find_all(b"", b"a"), Vec::<usize>::new());
    assert_eq!(find_all(b"abc", b""), Vec::<usize>::new());
    let hay = format!("{}\"kind\":\"journal.repaired\"", "q".repeat(1000));
    assert_eq!(
        find_all(hay.as_bytes(), br#""kind":"journal.repaired""#),
        vec![1000]
    );
}

#[test]
fn prefix_version_reads_only_the_v() {
    assert_eq!(prefix_version(b"{\"v\":1,\"seq\":"), Some(1));
    assert_eq!(prefix_version(b"{\"v\":12,"), Some(12));
    assert_eq!(prefix_version(b"{\"v\":2"), None, "torn before the comma");
    assert_eq!(prefix_version(b"{\"v\":,"), None);
    assert_eq!(prefix_version(b"\0\0\0"), None);
}

#[test]
fn record_kind_fast_path_and_escaped_fallback() {
    let plain = parse_line(line(1, "journal.repaired", json!({})).trim_end().as_bytes()).unwrap();
    assert_eq!(record_kind(&plain).as_deref(), Some("journal.repaired"));
    let escaped = parse_line(line(1, "we\"ird\\kind", json!({})).trim_end().as_bytes()).unwrap();
    assert_eq!(record_kind(&escaped).as_deref(), Some("we\"ird\\kind"));
    let odd_at = parse_line(
        encode_line(1, "a\"t", "k", &json!(null))
            .unwrap()
            .trim_end()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(record_kind(&odd_at).as_deref(), Some("k"));
}

#[test]
fn epoch_search_skips_lookalikes_and_crosses_chunks() {
    let t = tempfile::tempdir().unwrap();
    let mut s = line(1, "session.created", json!({"epoch": "first"}));
    s += &line(2, "journal.repaired", json!({"epoch": "second"}));
    // Filler over one search chunk (256 KiB), so the next hits straddle chunk edges.
    let mut seq = 3;
    while s.len() < 300 * 1024 {
        s += &line(seq, "session.delta", json!({"text": "f".repeat(1000)}));
        seq += 1;
    }
    // Lookalikes: the pattern inside data, near a line start and deep in a line.
    s += &line(
        seq,
        "driver.x",
        json!({"kind": "journal.repaired", "epoch": "fake1"}),
    );
    s += &line(
        seq + 1,
        "driver.y",
        json!({"pad": "p".repeat(500), "inner": {"kind": "journal.repaired", "epoch": "fake2"}}),
    );
    let (_, f) = file_with(t.path(), s.as_bytes());
    assert_eq!(find_epoch(&f, s.len() as u64).unwrap(), "second");

    // No repair at all: the first record's data.epoch; none there: "".
    let s = line(1, "session.created", json!({"epoch": "only"}))
        + &line(2, "x", json!({"kind": "journal.repaired", "epoch": "fake"}));
    let (_, f) = file_with(t.path(), s.as_bytes());
    assert_eq!(find_epoch(&f, s.len() as u64).unwrap(), "only");
    let s = line(1, "daemon.started", json!({"pid": 1}));
    let (_, f) = file_with(t.path(), s.as_bytes());
    assert_eq!(find_epoch(&f, s.len() as u64).unwrap(), "");

    // A repair record placed so the pattern straddles the 256 KiB chunk boundary: its
    // distance from the end is set by the length of the record after it.
    let pat_len = br#""kind":"journal.repaired""#.len();
    for shift in [0, 10, pat_len - 1, pat_len + 5] {
        let head = line(1, "session.created", json!({"epoch": "a"}));
        let repaired = line(2, "journal.repaired", json!({"epoch": "b"}));
        let pat_in_line = repaired.find("\"kind\"").unwrap();
        // end - pattern_start = 256 KiB + shift
        let tail_len = 256 * 1024 + shift - (repaired.len() - pat_in_line);
        let tail_base = line(3, "session.delta", json!({"text": ""})).len();
        let tail = line(
            3,
            "session.delta",
            json!({"text": "t".repeat(tail_len - tail_base)}),
        );
        let s = head + &repaired + &tail;
        let pat_at = s.find("\"kind\":\"journal.repaired\"").unwrap();
        assert_eq!(s.len() - pat_at, 256 * 1024 + shift);
        let (_, f) = file_with(t.path(), s.as_bytes());
        assert_eq!(
            find_epoch(&f, s.len() as u64).unwrap(),
            "b",
            "shift {shift}"
        );
    }
}

#[test]
fn tail_check_widens_for_a_long_last_line_and_checks_the_first() {
    let t = tempfile::tempdir().unwrap();
    let mut s = String::new();
    for seq in 1..=50 {
        s += &line(seq, "k", json!({"i": seq}));
    }
    s += &line(51, "k", json!({"text": "L".repeat(100 * 1024)}));
    let (_, f) = file_with(t.path(), s.as_bytes());
    assert_eq!(tail_check(&f, s.len() as u64).unwrap(), Some(51));

    // First line with seq 2: not a journal that starts at 1.
    let mut s = String::new();
    for seq in 2..=400 {
        s += &line(seq, "k", json!({"text": "x".repeat(100)}));
    }
    let (_, f) = file_with(t.path(), s.as_bytes());
    assert_eq!(tail_check(&f, s.len() as u64).unwrap(), None);

    // A gap inside the window.
    let s = line(1, "k", json!({})) + &line(2, "k", json!({})) + &line(4, "k", json!({}));
    let (_, f) = file_with(t.path(), s.as_bytes());
    assert_eq!(tail_check(&f, s.len() as u64).unwrap(), None);
}

#[test]
fn full_scan_classifies() {
    let t = tempfile::tempdir().unwrap();
    let good = line(1, "session.created", json!({"epoch": "e"})) + &line(2, "k", json!({}));
    // Torn: garbage lines only after the last good line.
    let s = good.clone() + "junk\n{\"v\":1,\"seq\":3,\"crc\":\"0";
    let (_, f) = file_with(t.path(), s.as_bytes());
    let scan = full_scan(&f).unwrap();
    assert_eq!((scan.records, scan.last_seq), (2, 2));
    assert_eq!(scan.good_end, good.len() as u64);
    assert_eq!(scan.bad_lines, 2);
    assert!(!scan.bad_has_crc && !scan.crc_after_bad);
    assert_eq!(scan.epoch, "e");
    assert_eq!(scan.first_bad.unwrap().line, 3);

    // Damage: a good line after the bad one.
    let s = good.clone() + "junk\n" + &line(3, "k", json!({}));
    let (_, f) = file_with(t.path(), s.as_bytes());
    let scan = full_scan(&f).unwrap();
    assert!(scan.crc_after_bad);

    // A record with a valid crc but a bad shape is never cut.
    let body = r#""notat":1}"#;
    let crc = crc32c::crc32c(body.as_bytes());
    let s = good + &format!("{{\"v\":1,\"seq\":3,\"crc\":\"{crc:08x}\",{body}\n");
    let (_, f) = file_with(t.path(), s.as_bytes());
    let scan = full_scan(&f).unwrap();
    assert!(scan.bad_has_crc);
    assert!(
        scan.first_bad
            .unwrap()
            .reason
            .contains("not a valid record")
    );
}

#[test]
fn damage_errors_carry_kind_and_place() {
    let d = Damage {
        line: 4,
        offset: 300,
        reason: "crc mismatch: the line says 00000000, its bytes hash to 12345678".into(),
    };
    let e = d.to_error(Path::new("/x/journal.ndjson"));
    assert_eq!(e.kind(), ErrorKind::JournalDamaged);
    assert!(e.message().contains("line 4 (byte offset 300)"), "{e}");
    assert_eq!(e.data().unwrap()["line"], 4);
    let v = Damage {
        line: 1,
        offset: 0,
        reason: LineError::NewerVersion {
            found: 2,
            supported: 1,
        }
        .to_string(),
    };
    assert_eq!(v.error_kind(), ErrorKind::UnsupportedVersion);
}

#[test]
fn markers_round_trip_and_tolerate_old_shape() {
    let t = tempfile::tempdir().unwrap();
    let j = t.path().join("journal.ndjson");
    let m = CleanMarker {
        size: 10,
        last_seq: 2,
        epoch: Some("e".into()),
    };
    write_marker(&j, &m).unwrap();
    assert_eq!(read_marker(&j), Some(m));
    // The first DESIGN draft's `{size, last_seq}`.
    std::fs::write(clean_marker_path(&j), br#"{"size":1,"last_seq":1}"#).unwrap();
    assert_eq!(read_marker(&j).unwrap().epoch, None);
    remove_marker(&j).unwrap();
    assert!(!clean_marker_path(&j).exists());
    remove_marker(&j).unwrap();
}
