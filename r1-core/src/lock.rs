//! `daemon.lock`: one daemon per home (DESIGN §3).
//!
//! An fs4 exclusive lock held for the daemon's life, the pid written inside. The
//! kernel drops the lock when the process dies, so a lock file left behind by a dead
//! daemon is never an obstacle.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::discovery;
use crate::error::{Error, ErrorKind, Result};
use crate::paths::{self, Home, OpenMode};

/// A held exclusive lock on a file; released on drop.
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

/// Who holds the daemon lock, for the "already running" message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The running daemon's pid (from `daemon.json`, else the lock body).
    pub pid: Option<u32>,
    /// Its socket path (from `daemon.json`).
    pub sock: Option<PathBuf>,
}

impl Holder {
    /// Exactly the two lines of DESIGN §3.
    pub fn message(&self) -> String {
        let pid = self
            .pid
            .map_or_else(|| "unknown".to_owned(), |p| p.to_string());
        let sock = self
            .sock
            .as_ref()
            .map_or_else(|| "unknown".to_owned(), |s| s.display().to_string());
        format!("daemon already running, pid={pid}, sock={sock}\nuse 'r1 ctl' to talk to it.")
    }
}

/// Failure to take the daemon lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process holds it.
    #[error("{}", .0.message())]
    Held(Holder),
    /// Anything else (I/O, unsafe file, the file replaced under us twice).
    #[error("{0}")]
    Other(#[from] Error),
}

impl From<LockError> for Error {
    fn from(e: LockError) -> Error {
        match e {
            LockError::Held(h) => Error::new(ErrorKind::Conflict, h.message()),
            LockError::Other(e) => e,
        }
    }
}

impl FileLock {
    /// Takes the lock on `path` without waiting; `Ok(None)` when someone else holds it.
    /// After locking, checks the descriptor still is the file at `path` (someone may
    /// have removed or replaced it); a mismatch is retried once, then refused.
    pub fn try_acquire(path: &Path) -> Result<Option<FileLock>> {
        for attempt in 0..2 {
            let file = paths::open_private(path, OpenMode::ReadWriteCreate)?;
            match fs4::FileExt::try_lock(&file) {
                Ok(()) => {}
                Err(fs4::TryLockError::WouldBlock) => return Ok(None),
                Err(fs4::TryLockError::Error(e)) => return Err(Error::io("cannot lock", path, e)),
            }
            let held = file
                .metadata()
                .map_err(|e| Error::io("cannot fstat", path, e))?;
            match std::fs::symlink_metadata(path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(Some(FileLock {
                        file,
                        path: path.to_path_buf(),
                    }));
                }
                _ if attempt == 0 => continue,
                _ => {}
            }
        }
        Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "{} was replaced while locking it (twice); is another program removing r1's files?",
                path.display()
            ),
        ))
    }

    /// Waits for the lock on `path` (used for `spawn.lock`).
    pub fn acquire_blocking(path: &Path) -> Result<FileLock> {
        let file = paths::open_private(path, OpenMode::ReadWriteCreate)?;
        fs4::FileExt::lock(&file).map_err(|e| Error::io("cannot lock", path, e))?;
        Ok(FileLock {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The locked file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the lock file's body (e.g. with our pid) and fsyncs it.
    pub fn write_body(&mut self, body: &str) -> Result<()> {
        let path = self.path.clone();
        let f = &mut self.file;
        f.set_len(0)
            .map_err(|e| Error::io("cannot truncate", &path, e))?;
        f.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("cannot seek", &path, e))?;
        f.write_all(body.as_bytes())
            .map_err(|e| Error::io("cannot write", &path, e))?;
        f.sync_all()
            .map_err(|e| Error::io("cannot fsync", &path, e))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = fs4::FileExt::unlock(&self.file);
    }
}

/// Takes `daemon.lock` for the daemon in `home` and writes our pid into it. On
/// contention, [`LockError::Held`] says who holds it.
pub fn acquire_daemon_lock(home: &Home) -> std::result::Result<FileLock, LockError> {
    let path = home.lock_path();
    match FileLock::try_acquire(&path)? {
        Some(mut lock) => {
            lock.write_body(&format!("{}\n", std::process::id()))?;
            Ok(lock)
        }
        None => Err(LockError::Held(holder(home))),
    }
}

/// Who holds the lock: `daemon.json` if it is readable, else the pid in the lock body.
pub fn holder(home: &Home) -> Holder {
    if let Ok(d) = discovery::read(home) {
        return Holder {
            pid: Some(d.pid),
            sock: d.sock_path,
        };
    }
    let mut body = String::new();
    let pid = File::open(home.lock_path())
        .and_then(|mut f| f.read_to_string(&mut body))
        .ok()
        .and_then(|_| body.trim().parse().ok());
    Holder { pid, sock: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_in_process_is_held() {
        let t = tempfile::tempdir().unwrap();
        let h = Home::at(t.path().join("h")).unwrap();
        h.ensure().unwrap();
        let lock = acquire_daemon_lock(&h).unwrap();
        let body = std::fs::read_to_string(h.lock_path()).unwrap();
        assert_eq!(body.trim(), std::process::id().to_string());
        match acquire_daemon_lock(&h) {
            Err(LockError::Held(holder)) => {
                assert_eq!(holder.pid, Some(std::process::id()));
                assert_eq!(
                    holder.message(),
                    format!(
                        "daemon already running, pid={}, sock=unknown\nuse 'r1 ctl' to talk to it.",
                        std::process::id()
                    )
                );
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(lock);
        assert!(acquire_daemon_lock(&h).is_ok());
    }
}
