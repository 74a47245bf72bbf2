//! `sessions-index.json`: every session the home has known, rewritten atomically.
//!
//! ```json
//! {"v":1,"sessions":[{"id":"sess_…","name":null,"workdir":"/src/app","driver":"shell",
//!   "started_at":"…","state":"running","last_seq":12,"epoch":"…"}]}
//! ```
//! Deleted sessions stay as tombstones (`deleted_at`) so ids are never reused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::state::SessionState;
use crate::error::{Error, ErrorKind, Result};
use crate::paths;

/// One session's entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// `sess_<uuid>`.
    pub id: String,
    /// Optional human name.
    pub name: Option<String>,
    /// Canonical workdir.
    pub workdir: PathBuf,
    /// Driver name.
    pub driver: String,
    /// `exec` argv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Extra child environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// RFC 3339 start time.
    pub started_at: String,
    /// Last known state.
    pub state: SessionState,
    /// Last seq known when the entry was written.
    pub last_seq: u64,
    /// Current epoch.
    pub epoch: String,
    /// Set when deleted (tombstone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct IndexFile {
    v: u32,
    sessions: Vec<IndexEntry>,
}

/// Reads the index; a missing file is an empty index.
pub fn load(path: &Path) -> Result<Vec<IndexEntry>> {
    let file = match paths::open_private(path, paths::OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let parsed: IndexFile = serde_json::from_reader(std::io::BufReader::new(file)).map_err(|e| {
        Error::new(
            ErrorKind::Io,
            format!("{} is not a valid sessions index: {e}; move it aside to start with an empty list", path.display()),
        )
    })?;
    if parsed.v != 1 {
        return Err(Error::new(
            ErrorKind::UnsupportedVersion,
            format!(
                "{} is index v{} but this r1 reads v1; upgrade r1",
                path.display(),
                parsed.v
            ),
        ));
    }
    Ok(parsed.sessions)
}

/// Writes the index atomically (entries in the given order).
pub fn store(path: &Path, entries: &[IndexEntry]) -> Result<()> {
    store_parts(path, &Tombstones::default(), entries)
}

/// Deleted sessions' entries, encoded once. A tombstone never changes again, but the
/// index is rewritten on every session change: re-cloning and re-encoding thousands of
/// them each time made every write cost (in CPU and in heap churn the allocator does
/// not give back) grow with all the sessions the home has ever had. Cloning this is
/// cheap (the encoding is shared).
#[derive(Debug, Clone, Default)]
pub struct Tombstones {
    /// The entries' JSON, comma-separated, in the order they were added.
    json: Arc<Vec<u8>>,
    count: usize,
}

impl Tombstones {
    /// Adds a deleted session's entry (after those already there).
    pub fn push(&mut self, entry: &IndexEntry) -> Result<()> {
        let json = Arc::make_mut(&mut self.json);
        if self.count > 0 {
            json.push(b',');
        }
        serde_json::to_writer(&mut *json, entry)?;
        self.count += 1;
        Ok(())
    }

    /// Number of tombstones.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Writes the index atomically: `tombstones` first, then `live`, byte-for-byte what
/// [`store`] writes for the same entries.
pub fn store_parts(path: &Path, tombstones: &Tombstones, live: &[IndexEntry]) -> Result<()> {
    paths::atomic_write_with(path, |w| {
        w.write_all(b"{\"v\":1,\"sessions\":[")?;
        w.write_all(&tombstones.json)?;
        for (i, e) in live.iter().enumerate() {
            if i > 0 || !tombstones.is_empty() {
                w.write_all(b",")?;
            }
            serde_json::to_writer(&mut *w, e)?;
        }
        w.write_all(b"]}\n")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u32, deleted: bool) -> IndexEntry {
        IndexEntry {
            id: format!("sess_00000000-0000-4000-8000-{n:012}"),
            name: n.is_multiple_of(2).then(|| format!("n\"{n}")),
            workdir: PathBuf::from(format!("/w/{n}")),
            driver: "shell".into(),
            command: None,
            env: BTreeMap::new(),
            started_at: "2026-05-02T18:30:00Z".into(),
            state: SessionState::Ended,
            last_seq: u64::from(n),
            epoch: "e".into(),
            deleted_at: deleted.then(|| "2026-05-02T18:31:00Z".into()),
        }
    }

    /// Regression (soak: RSS grew ~10 KB per session ever deleted): tombstones are
    /// encoded once, and the file is still exactly the classic encoding.
    #[test]
    fn index_writes_reuse_encoded_tombstones_and_keep_the_format() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a.json"), t.path().join("b.json"));
        for (dead_n, live_n) in [(0, 0), (0, 3), (3, 0), (5, 2)] {
            let dead: Vec<IndexEntry> = (0..dead_n).map(|n| entry(n, true)).collect();
            let live: Vec<IndexEntry> = (100..100 + live_n).map(|n| entry(n, false)).collect();
            let mut tombs = Tombstones::default();
            for d in &dead {
                tombs.push(d).unwrap();
            }
            let snapshot = tombs.clone();
            assert!(
                Arc::ptr_eq(&snapshot.json, &tombs.json),
                "clones share the encoding"
            );
            store_parts(&a, &tombs, &live).unwrap();
            let all: Vec<IndexEntry> = dead.iter().chain(&live).cloned().collect();
            let classic = {
                let mut v = serde_json::to_vec(&IndexFile {
                    v: 1,
                    sessions: all.clone(),
                })
                .unwrap();
                v.push(b'\n');
                v
            };
            store(&b, &all).unwrap();
            assert_eq!(std::fs::read(&a).unwrap(), classic);
            assert_eq!(std::fs::read(&b).unwrap(), classic);
            assert_eq!(load(&a).unwrap(), all);
            assert_eq!(tombs.len(), dead_n as usize);
        }
    }
}
