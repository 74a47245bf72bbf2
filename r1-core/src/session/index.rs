//! `sessions-index.json`: every session the home has known, rewritten atomically.
//!
//! ```json
//! {"v":1,"sessions":[{"id":"sess_…","name":null,"workdir":"/src/app","driver":"shell",
//!   "started_at":"…","state":"running","last_seq":12,"epoch":"…"}]}
//! ```
//! Deleted sessions stay as tombstones (`deleted_at`) so ids are never reused.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
    store_with(path, tombstones, live, |w, e| {
        serde_json::to_writer(w, e).map_err(std::io::Error::from)
    })
}

/// Writes the index atomically from entries already encoded (live ones from an
/// [`EntryCache`]): the same bytes [`store_parts`] writes for the same entries.
pub fn store_encoded(path: &Path, tombstones: &Tombstones, live: &[Arc<[u8]>]) -> Result<()> {
    store_with(path, tombstones, live, |w, e| w.write_all(e))
}

/// The index file's layout, one place for both writers: the tombstones' encoded
/// JSON, then each live entry as `write_entry` puts it.
fn store_with<T>(
    path: &Path,
    tombstones: &Tombstones,
    live: &[T],
    write_entry: impl Fn(&mut dyn std::io::Write, &T) -> std::io::Result<()>,
) -> Result<()> {
    paths::atomic_write_with(path, |w| {
        w.write_all(b"{\"v\":1,\"sessions\":[")?;
        w.write_all(&tombstones.json)?;
        for (i, e) in live.iter().enumerate() {
            if i > 0 || !tombstones.is_empty() {
                w.write_all(b",")?;
            }
            write_entry(&mut *w, e)?;
        }
        w.write_all(b"]}\n")
    })
}

/// A live session as the index sees it: what can change (state, last seq) cheaply,
/// and its whole entry when that has changed.
pub trait LiveEntry {
    /// The session id (never changes).
    fn id(&self) -> &str;
    /// The state now.
    fn state(&self) -> SessionState;
    /// The last seq now.
    fn last_seq(&self) -> u64;
    /// The whole entry now.
    fn entry(&self) -> IndexEntry;
}

/// Live sessions' encoded entries, reused while a session's state and last seq stay
/// the same (the other fields of a live entry never change): a rewrite of the index
/// with a thousand idle sessions copies their bytes instead of cloning and encoding
/// every entry again.
#[derive(Debug, Default)]
pub struct EntryCache {
    by_id: HashMap<String, CachedEntry>,
    /// Bumped by every [`EntryCache::encode_all`]; entries it did not see are stale.
    round: u64,
}

#[derive(Debug)]
struct CachedEntry {
    state: SessionState,
    last_seq: u64,
    json: Arc<[u8]>,
    round: u64,
}

impl EntryCache {
    /// The encodings of `live`, in order. Entries of sessions not in `live` (deleted)
    /// are forgotten.
    pub fn encode_all<S: LiveEntry>(&mut self, live: &[S]) -> Result<Vec<Arc<[u8]>>> {
        self.round += 1;
        let round = self.round;
        let mut out = Vec::with_capacity(live.len());
        for session in live {
            if let Some(cached) = self.by_id.get_mut(session.id())
                && cached.state == session.state()
                && cached.last_seq == session.last_seq()
            {
                cached.round = round;
                out.push(Arc::clone(&cached.json));
                continue;
            }
            // The key comes from the entry itself, so it always describes the bytes
            // (the session may move on while this runs).
            let entry = session.entry();
            let json: Arc<[u8]> = Arc::from(serde_json::to_vec(&entry)?);
            out.push(Arc::clone(&json));
            let fresh = CachedEntry {
                state: entry.state,
                last_seq: entry.last_seq,
                json,
                round,
            };
            self.by_id.insert(entry.id, fresh);
        }
        if self.by_id.len() > live.len() {
            self.by_id.retain(|_, cached| cached.round == round);
        }
        Ok(out)
    }
}

/// Group commit for index rewrites: a change is made in memory, then
/// [`IndexCommits::announce`]d; one rewrite that starts after the announcement covers
/// it, so concurrent changes share one write (and its two fsyncs) instead of
/// queueing a full rewrite each.
#[derive(Debug, Default)]
pub struct IndexCommits {
    announced: AtomicU64,
    writer: tokio::sync::Mutex<CommitState>,
}

/// What the holder of the writer's turn owns: the generation on disk, the cache.
#[derive(Debug, Default)]
pub struct CommitState {
    written: u64,
    /// Encoded live entries (see [`EntryCache`]).
    pub cache: EntryCache,
}

/// The writer's turn, from [`IndexCommits::turn`].
pub struct CommitTurn<'a> {
    state: tokio::sync::MutexGuard<'a, CommitState>,
    generation: u64,
}

impl CommitTurn<'_> {
    /// The cache, to encode the live entries for this write.
    pub fn cache(&mut self) -> &mut EntryCache {
        &mut self.state.cache
    }

    /// Records that the write succeeded: every change announced before the turn was
    /// taken is on disk.
    pub fn written(mut self) {
        let generation = self.generation;
        self.state.written = self.state.written.max(generation);
    }
}

impl IndexCommits {
    /// Announces a change already made in memory; the ticket is what must be written.
    pub fn announce(&self) -> u64 {
        self.announced.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Waits until `ticket` is on disk (`None`: someone else's write covered it) or it
    /// is this caller's turn to write. The in-memory state must be read *after*
    /// this returns: the turn covers every change announced before it was taken.
    pub async fn turn(&self, ticket: u64) -> Option<CommitTurn<'_>> {
        let state = self.writer.lock().await;
        if state.written >= ticket {
            return None;
        }
        let generation = self.announced.load(Ordering::SeqCst);
        Some(CommitTurn { state, generation })
    }
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

    struct Fake(IndexEntry);

    impl LiveEntry for Fake {
        fn id(&self) -> &str {
            &self.0.id
        }
        fn state(&self) -> SessionState {
            self.0.state
        }
        fn last_seq(&self) -> u64 {
            self.0.last_seq
        }
        fn entry(&self) -> IndexEntry {
            self.0.clone()
        }
    }

    /// Cached encodings are reused while state and last seq are unchanged, encoded
    /// again when either changes, forgotten with their session, and the file is
    /// byte-for-byte what `store` writes.
    #[test]
    fn cached_entries_are_reused_until_they_change_and_keep_the_format() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a.json"), t.path().join("b.json"));
        let mut cache = EntryCache::default();
        let mut live: Vec<Fake> = (0..4).map(|n| Fake(entry(n, false))).collect();
        let first = cache.encode_all(&live).unwrap();
        let again = cache.encode_all(&live).unwrap();
        assert!(first.iter().zip(&again).all(|(x, y)| Arc::ptr_eq(x, y)));

        live[1].0.last_seq += 1;
        live[2].0.state = SessionState::Running;
        live.remove(3);
        let changed = cache.encode_all(&live).unwrap();
        assert!(Arc::ptr_eq(&changed[0], &first[0]));
        assert!(!Arc::ptr_eq(&changed[1], &first[1]));
        assert!(!Arc::ptr_eq(&changed[2], &first[2]));
        assert_eq!(cache.by_id.len(), 3, "the removed session is forgotten");

        let dead: Vec<IndexEntry> = (10..12).map(|n| entry(n, true)).collect();
        let mut tombs = Tombstones::default();
        for d in &dead {
            tombs.push(d).unwrap();
        }
        store_encoded(&a, &tombs, &changed).unwrap();
        let all: Vec<IndexEntry> = dead
            .into_iter()
            .chain(live.iter().map(|f| f.0.clone()))
            .collect();
        store(&b, &all).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(load(&a).unwrap(), all);
        store_encoded(&a, &Tombstones::default(), &[]).unwrap();
        assert_eq!(load(&a).unwrap(), Vec::new());
    }

    /// Group commit: a change announced while a write is under way is covered by the
    /// next write, which also covers every change announced before it began: two
    /// waiting callers share one write. A write that did not finish covers nothing.
    #[tokio::test]
    async fn one_write_covers_every_change_announced_before_it() {
        let commits = Arc::new(IndexCommits::default());
        let first = commits.announce();
        let turn = commits.turn(first).await.expect("nothing written yet");
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let commits = Arc::clone(&commits);
                let ticket = commits.announce();
                tokio::spawn(async move {
                    match commits.turn(ticket).await {
                        Some(turn) => {
                            turn.written();
                            true
                        }
                        None => false,
                    }
                })
            })
            .collect();
        tokio::task::yield_now().await;
        turn.written();
        let mut writes = 0;
        for w in waiters {
            writes += usize::from(w.await.unwrap());
        }
        assert_eq!(
            writes, 1,
            "the second waiter was covered by the first's write"
        );
        assert!(commits.turn(first).await.is_none());

        // A write that failed (the turn dropped without `written`) covers nothing.
        let ticket = commits.announce();
        drop(commits.turn(ticket).await.expect("not yet written"));
        assert!(commits.turn(ticket).await.is_some());
    }
}
