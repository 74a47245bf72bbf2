//! Shared helpers of the r1-bin integration tests: real `r1 serve` processes
//! ([`daemon`]), a raw NDJSON JSON-RPC client ([`rpc`]), root-only fixtures
//! ([`system`]) and journal checks (below).
#![allow(dead_code)]

pub mod daemon;
pub mod rpc;
pub mod system;

use std::path::Path;

use serde_json::Value;

pub use daemon::{DaemonProc, ServeOpts};
pub use rpc::{CallError, Rpc};

/// Every valid record of the journal at `path`, in order, as JSON; panics on damage.
pub fn journal_records(path: &Path) -> Vec<Value> {
    let mut r = r1_core::journal::Reader::open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut out = Vec::new();
    loop {
        match r.next_record() {
            Ok(Some(rec)) => out.push(rec.to_value().expect("record JSON")),
            Ok(None) => return out,
            Err(e) => panic!("reading {}: {e}", path.display()),
        }
    }
}

/// Full verification of the journal at `path`: no damage, no pending bytes, seqs
/// 1..=n contiguous. Returns the records.
pub fn assert_journal_sound(path: &Path) -> Vec<Value> {
    let report = r1_core::journal::Reader::open(path)
        .and_then(|mut r| r.verify())
        .unwrap_or_else(|e| panic!("verify {}: {e}", path.display()));
    assert_eq!(report.damage, None, "{} is damaged", path.display());
    assert_eq!(
        report.pending_bytes,
        0,
        "{} ends in a half-written record",
        path.display()
    );
    let recs = journal_records(path);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(
            r["seq"].as_u64(),
            Some(i as u64 + 1),
            "{}: seqs must be contiguous from 1",
            path.display()
        );
    }
    assert_eq!(report.records, recs.len() as u64);
    recs
}

/// A small deterministic PRNG (xorshift64*), seeded per test so a failure can be
/// replayed with the seed it prints.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// `seed` 0 is replaced by a fixed non-zero constant.
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// A seed from the clock and pid.
    pub fn clock_seed() -> u64 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        t ^ (u64::from(std::process::id()) << 32)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
}
