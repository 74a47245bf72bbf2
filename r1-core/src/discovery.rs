//! `daemon.json`: how clients find the daemon (DESIGN §3).
//!
//! Written atomically, only after every listener accepts connections. Readers refuse
//! a file that is a symlink, owned by someone else, or has any group/other bit.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error as CoreError, ErrorKind};
use crate::paths::{self, Home};
use crate::token::Token;

/// The wire protocol version spoken by this build.
pub const PROTOCOL_VERSION: u32 = 1;

/// The contents of `daemon.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Discovery {
    /// The daemon's process id.
    pub pid: u32,
    /// The daemon's r1 version.
    pub version: String,
    /// The JSON-RPC protocol version it speaks.
    pub protocol_version: u32,
    /// A fresh 128-bit hex id per daemon start, checked in `daemon.hello`.
    pub instance_id: String,
    /// The unix socket, unless started with `--no-unix`.
    pub sock_path: Option<PathBuf>,
    /// Loopback host (`127.0.0.1`), unless `--no-tcp`.
    pub host: Option<String>,
    /// Loopback port, unless `--no-tcp`.
    pub port: Option<u16>,
    /// The master bearer token for HTTP/WebSocket.
    pub token: Token,
    /// Reserved for TLS; always null today.
    pub cert_fingerprint: Option<String>,
    /// RFC 3339 UTC start time.
    pub started_at: String,
}

/// Why a discovery file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No `daemon.json`: no daemon has started (or it exited cleanly).
    #[error("no daemon is running: {path} does not exist; start one with `r1 serve`")]
    Missing {
        /// The path looked at.
        path: PathBuf,
    },
    /// The path is a symlink.
    #[error("refusing discovery file {path}: it is a symlink; remove it and restart the daemon")]
    Symlink {
        /// The path looked at.
        path: PathBuf,
    },
    /// Owned by another uid.
    #[error(
        "refusing discovery file {path}: owned by uid {owner}, not by you (uid {uid}); remove it"
    )]
    WrongOwner {
        /// The path looked at.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our uid.
        uid: u32,
    },
    /// Group or other permission bits set.
    #[error(
        "refusing discovery file {path}: mode {mode:04o} lets others read the token; run `chmod 600 {path}` and `r1 ctl rotate-token`"
    )]
    UnsafeMode {
        /// The path looked at.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Not valid JSON of the expected shape.
    #[error(
        "discovery file {path} is malformed: {reason}; remove it (the next daemon rewrites it)"
    )]
    Malformed {
        /// The path looked at.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },
    /// Any other I/O failure.
    #[error("cannot read discovery file {path}: {source}")]
    Io {
        /// The path looked at.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl From<Error> for CoreError {
    fn from(e: Error) -> CoreError {
        let kind = match &e {
            Error::Missing { .. } => ErrorKind::DaemonNotFound,
            Error::Symlink { .. } | Error::WrongOwner { .. } | Error::UnsafeMode { .. } => {
                ErrorKind::Unsafe
            }
            Error::Malformed { .. } => ErrorKind::DaemonNotFound,
            Error::Io { .. } => ErrorKind::Io,
        };
        CoreError::new(kind, e.to_string())
    }
}

impl Discovery {
    /// Writes `daemon.json` atomically (0600).
    pub fn write(&self, home: &Home) -> crate::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        paths::atomic_write(&home.discovery_path(), &bytes)
    }

    /// `http://127.0.0.1:<port>` when the loopback listener is on.
    pub fn base_url(&self) -> Option<String> {
        Some(format!("http://{}:{}", self.host.as_deref()?, self.port?))
    }
}

/// Reads and validates `daemon.json` in `home`. Never spawns, never connects.
pub fn read(home: &Home) -> Result<Discovery, Error> {
    read_path(&home.discovery_path())
}

/// Reads and validates a discovery file at `path`.
pub fn read_path(path: &Path) -> Result<Discovery, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Missing { path: path.into() });
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Error::Symlink { path: path.into() });
        }
        Err(e) => {
            return Err(Error::Io {
                path: path.into(),
                source: e,
            });
        }
    };
    let meta = file.metadata().map_err(|e| Error::Io {
        path: path.into(),
        source: e,
    })?;
    let uid = paths::current_uid();
    if meta.uid() != uid {
        return Err(Error::WrongOwner {
            path: path.into(),
            owner: meta.uid(),
            uid,
        });
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::UnsafeMode {
            path: path.into(),
            mode,
        });
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(|e| Error::Io {
        path: path.into(),
        source: e,
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Malformed {
        path: path.into(),
        reason: e.to_string(),
    })
}

/// True when a process with `pid` exists (EPERM counts as alive: it exists, it is
/// just not ours).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// True when the file names a process that no longer exists. (A live pid may still
/// be stale — reused, or not answering; `dial()` confirms with `daemon.hello`.)
pub fn is_stale_by_pid(d: &Discovery) -> bool {
    !pid_alive(d.pid)
}

/// Removes `daemon.json` only if it still holds `instance_id` (a newer daemon's file
/// is left alone). Returns whether it removed it.
pub fn remove_if_ours(home: &Home, instance_id: &str) -> bool {
    match read(home) {
        Ok(d) if d.instance_id == instance_id => {
            std::fs::remove_file(home.discovery_path()).is_ok()
        }
        _ => false,
    }
}

/// The current time as RFC 3339 UTC with seconds (`2026-05-02T18:30:00Z`).
pub fn now_rfc3339() -> String {
    crate::time_fmt::now_seconds()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sample() -> Discovery {
        Discovery {
            pid: std::process::id(),
            version: "0.1.0".into(),
            protocol_version: PROTOCOL_VERSION,
            instance_id: "00".repeat(16),
            sock_path: Some("/tmp/x.sock".into()),
            host: Some("127.0.0.1".into()),
            port: Some(4000),
            token: Token::generate().unwrap(),
            cert_fingerprint: None,
            started_at: now_rfc3339(),
        }
    }

    fn home() -> (tempfile::TempDir, Home) {
        let t = tempfile::tempdir().unwrap();
        let h = Home::at(t.path().join("home")).unwrap();
        h.ensure().unwrap();
        (t, h)
    }

    #[test]
    fn round_trip_all_fields() {
        let (_t, h) = home();
        let d = sample();
        d.write(&h).unwrap();
        let text = std::fs::read_to_string(h.discovery_path()).unwrap();
        for field in [
            "pid",
            "version",
            "protocol_version",
            "instance_id",
            "sock_path",
            "host",
            "port",
            "token",
            "cert_fingerprint",
            "started_at",
        ] {
            assert!(text.contains(&format!("\"{field}\"")), "missing {field}");
        }
        assert_eq!(read(&h).unwrap(), d);
    }

    #[test]
    fn missing_is_typed() {
        let (_t, h) = home();
        assert!(matches!(read(&h), Err(Error::Missing { .. })));
    }

    #[test]
    fn modes_0644_and_0640_refused() {
        let (_t, h) = home();
        sample().write(&h).unwrap();
        for mode in [0o644, 0o640, 0o604] {
            std::fs::set_permissions(h.discovery_path(), std::fs::Permissions::from_mode(mode))
                .unwrap();
            match read(&h) {
                Err(Error::UnsafeMode { mode: m, .. }) => assert_eq!(m, mode),
                other => panic!("expected UnsafeMode for {mode:o}, got {other:?}"),
            }
        }
    }

    #[test]
    fn symlink_refused() {
        let (t, h) = home();
        let real = t.path().join("real.json");
        std::fs::write(&real, serde_json::to_vec(&sample()).unwrap()).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&real, h.discovery_path()).unwrap();
        assert!(matches!(read(&h), Err(Error::Symlink { .. })));
    }

    #[test]
    fn wrong_owner_refused_when_root() {
        if paths::current_uid() != 0 {
            eprintln!("skipped: chown to another uid needs root");
            return;
        }
        let (_t, h) = home();
        sample().write(&h).unwrap();
        std::os::unix::fs::chown(h.discovery_path(), Some(65534), Some(65534)).unwrap();
        match read(&h) {
            Err(Error::WrongOwner { owner, .. }) => assert_eq!(owner, 65534),
            other => panic!("expected WrongOwner, got {other:?}"),
        }
    }

    #[test]
    fn malformed_is_typed() {
        let (_t, h) = home();
        paths::atomic_write(&h.discovery_path(), b"{not json").unwrap();
        assert!(matches!(read(&h), Err(Error::Malformed { .. })));
    }

    #[test]
    fn stale_pid_and_remove_if_ours() {
        let (_t, h) = home();
        let mut d = sample();
        assert!(!is_stale_by_pid(&d));
        d.pid = 0x7fff_fff0;
        assert!(is_stale_by_pid(&d));
        d.write(&h).unwrap();
        assert!(!remove_if_ours(&h, "someone-else"));
        assert!(h.discovery_path().exists());
        assert!(remove_if_ours(&h, &d.instance_id));
        assert!(!h.discovery_path().exists());
    }
}
