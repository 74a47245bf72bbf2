//! The journal line parser: any bytes → `parse_line` (and the prefix parser) never
//! panics, and whatever it accepts is a record every other reader of the line agrees
//! with. Each input is checked as is and with its CRC recomputed (a fuzzer cannot
//! guess CRC-32C values, and the checks behind the CRC deserve fuzzing too). Also the
//! writer→reader round trip: a line `encode_line` writes for any kind and data is one
//! `parse_line` accepts, with the same seq and kind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use r1_core::journal::record::{encode_line, parse_line, parse_prefix};

fuzz_target!(|data: &[u8]| {
    // 1. Bytes as a line, as is and with a correct CRC.
    check_line(data);
    if let Some(fixed) = r1_fuzz::fix_crc(data) {
        check_line(&fixed);
    }
    round_trip(data);
});

fn check_line(data: &[u8]) {
    let prefix = parse_prefix(data);
    if let Ok(raw) = parse_line(data) {
        let (_, seq, crc, body_start) = prefix.expect("an accepted line has a prefix");
        assert_eq!(raw.seq, seq);
        assert_eq!(raw.line().as_bytes(), data);
        assert_eq!(raw.body().as_bytes(), &data[body_start..]);
        assert_eq!(crc32c::crc32c(raw.body().as_bytes()), crc);
        // Everyone who reads the line sees the same record.
        let rec = raw
            .to_record()
            .unwrap_or_else(|e| panic!("accepted line is not a record ({e}): {}", raw.line()));
        assert_eq!(rec.seq, raw.seq, "the body overrides the prefix's seq");
        assert_eq!(rec.v, 1);
        assert_eq!(raw.kind().as_deref(), Some(rec.kind.as_str()));
        let v = raw.to_value().expect("an accepted line is JSON");
        assert_eq!(
            v["seq"].as_u64(),
            Some(raw.seq),
            "the line's JSON seq differs"
        );
        // The `$/event` params built from the body without re-serialising.
        let ev = format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"$/event\",\"params\":{{\"sub\":1,{}}}",
            raw.event_params_tail("ep")
        );
        let ev: serde_json::Value = serde_json::from_str(&ev)
            .unwrap_or_else(|e| panic!("event params are not JSON ({e}): {ev}"));
        assert_eq!(ev["params"]["seq"].as_u64(), Some(raw.seq), "{ev}");
        assert_eq!(ev["params"]["epoch"], "ep", "{ev}");
        assert_eq!(ev["params"]["sub"], 1, "{ev}");
    }
}

fn round_trip(data: &[u8]) {
    // 2. Bytes as what a driver emits: kind = text up to the first NUL, data = the
    // rest as JSON if it is, else as a string.
    let (kind, rest) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let kind = String::from_utf8_lossy(kind);
    let value = serde_json::from_slice::<serde_json::Value>(rest)
        .unwrap_or_else(|_| serde_json::Value::from(String::from_utf8_lossy(rest).into_owned()));
    if let Ok(line) = encode_line(7, "2026-05-02T18:30:00.123Z", &kind, &value) {
        let body = line.strip_suffix('\n').expect("lines end in a newline");
        let raw = parse_line(body.as_bytes())
            .unwrap_or_else(|e| panic!("the reader refuses the writer's line ({e}): {body}"));
        assert_eq!(raw.seq, 7);
        assert_eq!(raw.kind().as_deref(), Some(&*kind));
    }
}
