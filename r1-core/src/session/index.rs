//! `sessions-index.json`: every session the home has known, rewritten atomically.
//!
//! ```json
//! {"v":1,"sessions":[{"id":"sess_…","name":null,"workdir":"/src/app","driver":"shell",
//!   "started_at":"…","state":"running","last_seq":12,"epoch":"…"}]}
//! ```
//! Deleted sessions stay as tombstones (`deleted_at`) so ids are never reused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    let file = IndexFile {
        v: 1,
        sessions: entries.to_vec(),
    };
    let mut bytes = serde_json::to_vec(&file)?;
    bytes.push(b'\n');
    paths::atomic_write(path, &bytes)
}
