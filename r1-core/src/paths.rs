//! Where r1 keeps its files, and the rules every one of them follows (DESIGN §2).
//!
//! * The home (`R1_HOME`, else `~/.r1`) is 0700 and ours, enforced fail-closed.
//! * Every file r1 owns is opened with `O_NOFOLLOW` and checked with `fstat` on the
//!   open descriptor ([`open_private`]), so there is no stat-then-open race.
//! * Every file r1 rewrites goes through [`atomic_write`].

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// The portable `sun_path` size (macOS/BSD: 104, Linux: 108), including the NUL.
pub const SUN_PATH_MAX: usize = 104;

/// The effective uid of this process.
pub fn current_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// The r1 home directory and the paths inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
    is_default: bool,
}

impl Home {
    /// `explicit`, else `R1_HOME`, else `~/.r1`. Relative paths are made absolute.
    /// Does not touch the file system; call [`Home::ensure`] before use.
    pub fn resolve(explicit: Option<&Path>) -> Result<Home> {
        let default = dirs::home_dir().map(|h| h.join(".r1"));
        let chosen: Option<PathBuf> = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => std::env::var_os("R1_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        };
        let root = match chosen {
            Some(p) => p,
            None => default.clone().ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    "cannot find the home directory: set R1_HOME",
                )
            })?,
        };
        let root = std::path::absolute(&root)
            .map_err(|e| Error::io("cannot resolve r1 home", &root, e))?;
        let is_default = default.as_deref() == Some(root.as_path());
        Ok(Home { root, is_default })
    }

    /// A home at exactly `root` (tests, embedders).
    pub fn at(root: impl Into<PathBuf>) -> Result<Home> {
        Home::resolve(Some(&root.into()))
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when this is `~/.r1` (it then shares the default socket dir).
    pub fn is_default(&self) -> bool {
        self.is_default
    }

    /// Creates the home (0700) if missing, narrows a wider mode, and refuses a home
    /// that is still too open or is owned by another user.
    pub fn ensure(&self) -> Result<()> {
        ensure_private_dir(&self.root)
    }

    /// `daemon.lock`
    pub fn lock_path(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }
    /// `daemon.json`
    pub fn discovery_path(&self) -> PathBuf {
        self.root.join("daemon.json")
    }
    /// `spawn.lock`
    pub fn spawn_lock_path(&self) -> PathBuf {
        self.root.join("spawn.lock")
    }
    /// `sessions-index.json`
    pub fn index_path(&self) -> PathBuf {
        self.root.join("sessions-index.json")
    }
    /// `sessions/`
    pub fn sessions_dir(&self) -> PathBuf {
        self.root.join("sessions")
    }
    /// `sessions/<id>/`
    pub fn session_dir(&self, id: &str) -> PathBuf {
        self.sessions_dir().join(id)
    }
    /// `sessions/<id>/journal.ndjson`
    pub fn journal_path(&self, id: &str) -> PathBuf {
        self.session_dir(id).join("journal.ndjson")
    }
    /// `bus/`
    pub fn bus_dir(&self) -> PathBuf {
        self.root.join("bus")
    }
    /// `bus/events.ndjson`
    pub fn bus_path(&self) -> PathBuf {
        self.bus_dir().join("events.ndjson")
    }
    /// `log/`
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }
    /// `log/r1.log`
    pub fn log_path(&self) -> PathBuf {
        self.log_dir().join("r1.log")
    }

    /// Chooses (and creates, 0700) the socket directory and returns the socket path.
    /// See [`socket_path_for`].
    pub fn socket_path(&self) -> Result<PathBuf> {
        socket_path_for(self, &SocketEnv::from_process())
    }
}

/// The environment that decides the socket directory (separated for tests).
#[derive(Debug, Clone, Default)]
pub struct SocketEnv {
    /// `$XDG_RUNTIME_DIR`
    pub xdg_runtime_dir: Option<PathBuf>,
    /// `$TMPDIR`
    pub tmpdir: Option<PathBuf>,
}

impl SocketEnv {
    /// Reads `XDG_RUNTIME_DIR` and `TMPDIR`.
    pub fn from_process() -> SocketEnv {
        let get = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        SocketEnv {
            xdg_runtime_dir: get("XDG_RUNTIME_DIR"),
            tmpdir: get("TMPDIR"),
        }
    }
}

/// A short, stable hash of the home path: non-default homes get their own socket dir.
pub fn home_hash(home: &Path) -> String {
    let digest = crc32c::crc32c(home.as_os_str().as_encoded_bytes());
    format!("{digest:08x}")
}

/// Picks the socket path (DESIGN §2): `$XDG_RUNTIME_DIR/r1/r1.sock`, else
/// `$TMPDIR/r1-$UID/r1.sock`, else `/tmp/r1-$UID/r1.sock`; a non-default home adds
/// `-<hash>` to the directory. A directory that exists but is not ours (or not 0700
/// and cannot be narrowed) is skipped for a fresh `mkdtemp` one. Candidates whose
/// path does not fit `sun_path` are skipped; if none fits, a clear error.
pub fn socket_path_for(home: &Home, env: &SocketEnv) -> Result<PathBuf> {
    let uid = current_uid();
    let suffix = if home.is_default() {
        String::new()
    } else {
        format!("-{}", home_hash(home.root()))
    };
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(x) = &env.xdg_runtime_dir {
        candidates.push(x.join(format!("r1{suffix}")));
    }
    if let Some(t) = &env.tmpdir {
        candidates.push(t.join(format!("r1-{uid}{suffix}")));
    }
    candidates.push(PathBuf::from(format!("/tmp/r1-{uid}{suffix}")));

    let mut last_err: Option<Error> = None;
    for dir in candidates {
        let sock = dir.join("r1.sock");
        if !fits_sun_path(&sock) {
            continue;
        }
        match ensure_private_dir(&dir) {
            Ok(()) => return Ok(sock),
            Err(e) if e.kind() == ErrorKind::Unsafe => {
                // Someone else's directory: never share it, make a fresh one beside it.
                let parent = dir.parent().unwrap_or(Path::new("/tmp"));
                let prefix = format!("r1-{uid}{suffix}-");
                match make_temp_dir(parent, &prefix) {
                    Ok(fresh) => {
                        let sock = fresh.join("r1.sock");
                        if fits_sun_path(&sock) {
                            return Ok(sock);
                        }
                        let _ = fs::remove_dir(&fresh);
                    }
                    Err(e2) => last_err = Some(e2),
                }
                last_err.get_or_insert(e);
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| {
        Error::new(
            ErrorKind::InvalidParams,
            format!(
                "no socket path fits the {SUN_PATH_MAX}-byte sun_path limit; set XDG_RUNTIME_DIR or TMPDIR to a shorter directory"
            ),
        )
    }))
}

/// True when `path` fits in `sun_path` with its NUL terminator.
pub fn fits_sun_path(path: &Path) -> bool {
    path.as_os_str().len() < SUN_PATH_MAX
}

fn make_temp_dir(parent: &Path, prefix: &str) -> Result<PathBuf> {
    let template: OsString = parent.join(format!("{prefix}XXXXXX")).into_os_string();
    nix::unistd::mkdtemp(Path::new(&template)).map_err(|e| {
        Error::io(
            "cannot create socket directory in",
            parent,
            io::Error::from(e),
        )
    })
}

/// Creates `path` as a 0700 directory if missing; if it exists, it must be a real
/// directory (not a symlink) owned by us: a wider mode is narrowed with chmod and
/// re-checked. Anything still unsafe is refused with [`ErrorKind::Unsafe`].
pub fn ensure_private_dir(path: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Parent missing: create parents (0700 each, only those we create).
            fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(path)
                .map_err(|e| Error::io("cannot create directory", path, e))?;
        }
        Err(e) => return Err(Error::io("cannot create directory", path, e)),
    }
    let meta = fs::symlink_metadata(path).map_err(|e| Error::io("cannot inspect", path, e))?;
    if meta.file_type().is_symlink() || !meta.is_dir() {
        return Err(Error::new(
            ErrorKind::Unsafe,
            format!(
                "{} is not a directory (or is a symlink); remove it or point R1_HOME elsewhere",
                path.display()
            ),
        ));
    }
    let uid = current_uid();
    if meta.uid() != uid {
        return Err(Error::new(
            ErrorKind::Unsafe,
            format!(
                "{} is owned by uid {}, not by you (uid {uid}); use a directory you own (set R1_HOME)",
                path.display(),
                meta.uid()
            ),
        ));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("cannot chmod 0700", path, e))?;
        let again = fs::symlink_metadata(path).map_err(|e| Error::io("cannot inspect", path, e))?;
        let now = again.mode() & 0o777;
        if now & 0o077 != 0 {
            return Err(Error::new(
                ErrorKind::Unsafe,
                format!(
                    "{} has mode {now:04o}, wider than 0700, and chmod did not narrow it; run `chmod 700 {}`",
                    path.display(),
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// How [`open_private`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read/write; created 0600 if missing.
    ReadWriteCreate,
    /// Append (plus read); created 0600 if missing.
    AppendCreate,
    /// Create a new file (0600); fails if it exists.
    CreateNew,
}

/// Opens a file r1 owns with `O_NOFOLLOW`, then checks on the open descriptor that it
/// is a regular file owned by us with no group/other bits (DESIGN §2).
pub fn open_private(path: &Path, mode: OpenMode) -> Result<File> {
    let mut o = OpenOptions::new();
    match mode {
        OpenMode::Read => {
            o.read(true);
        }
        OpenMode::ReadWriteCreate => {
            o.read(true).write(true).create(true);
        }
        OpenMode::AppendCreate => {
            o.read(true).append(true).create(true);
        }
        OpenMode::CreateNew => {
            o.read(true).write(true).create_new(true);
        }
    }
    o.mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    let file = o.open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            Error::new(
                ErrorKind::Unsafe,
                format!(
                    "{} is a symlink; r1 never follows symlinks for its own files; remove it",
                    path.display()
                ),
            )
        } else {
            Error::io("cannot open", path, e)
        }
    })?;
    check_private_file(&file, path)?;
    Ok(file)
}

/// Checks an open descriptor: regular file, owned by us, no group/other bits.
pub fn check_private_file(file: &File, path: &Path) -> Result<()> {
    let meta = file
        .metadata()
        .map_err(|e| Error::io("cannot fstat", path, e))?;
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::Unsafe,
            format!("{} is not a regular file", path.display()),
        ));
    }
    let uid = current_uid();
    if meta.uid() != uid {
        return Err(Error::new(
            ErrorKind::Unsafe,
            format!(
                "{} is owned by uid {}, not by you (uid {uid}); remove it",
                path.display(),
                meta.uid()
            ),
        ));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::new(
            ErrorKind::Unsafe,
            format!(
                "{} has mode {mode:04o}; r1 files must be 0600: run `chmod 600 {}`",
                path.display(),
                path.display()
            ),
        ));
    }
    Ok(())
}

/// fsyncs a directory so a create, rename or unlink inside it is durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| Error::io("cannot open directory", dir, e))?;
    d.sync_all()
        .map_err(|e| Error::io("cannot fsync directory", dir, e))
}

/// Replaces `path` with `bytes` atomically: a temp file in the same directory, 0600
/// from creation, write, fsync, rename over `path`, fsync the directory. Readers see
/// the old or the new content, never a mix; a crash leaves at worst a temp file.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write_with(path, |w| w.write_all(bytes))
}

/// [`atomic_write`] for content produced piecewise: `write` fills the temp file
/// (through a buffer), so a large file never has to exist as one allocation.
pub fn atomic_write_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<()> {
    let dir = path.parent().ok_or_else(|| {
        Error::invalid_params(format!("{} has no parent directory", path.display()))
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix: u64 = rand::random();
    let tmp = dir.join(format!(".{name}.tmp-{}-{suffix:016x}", std::process::id()));
    let result = (|| {
        let f = open_private(&tmp, OpenMode::CreateNew)?;
        let mut w = io::BufWriter::with_capacity(64 * 1024, f);
        write(&mut w)
            .and_then(|()| w.flush())
            .map_err(|e| Error::io("cannot write", &tmp, e))?;
        let f = w
            .into_inner()
            .map_err(|e| Error::io("cannot write", &tmp, e.into_error()))?;
        f.sync_all()
            .map_err(|e| Error::io("cannot fsync", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io("cannot rename into", path, e))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_is_created_0700_and_narrowed() {
        let t = tempfile::tempdir().unwrap();
        let h = Home::at(t.path().join("h")).unwrap();
        h.ensure().unwrap();
        let m = fs::metadata(h.root()).unwrap().mode() & 0o777;
        assert_eq!(m, 0o700);
        fs::set_permissions(h.root(), fs::Permissions::from_mode(0o755)).unwrap();
        h.ensure().unwrap();
        assert_eq!(fs::metadata(h.root()).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn home_symlink_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = Home::at(&link).unwrap().ensure().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsafe);
        assert!(e.message().contains("symlink"), "{e}");
    }

    #[test]
    fn atomic_write_is_0600_and_replaces() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let leftovers: Vec<_> = fs::read_dir(t.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp files left behind");
    }

    #[test]
    fn open_private_refuses_symlink_and_wide_mode() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("t");
        fs::write(&target, b"x").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
        let e = open_private(&target, OpenMode::Read).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsafe);
        assert!(e.message().contains("0644"), "{e}");
        let link = t.path().join("l");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = open_private(&link, OpenMode::Read).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsafe);
    }

    #[test]
    fn socket_dir_defaults_and_hash_suffix() {
        let t = tempfile::tempdir().unwrap();
        let home = Home::at(t.path().join("home")).unwrap();
        let env = SocketEnv {
            xdg_runtime_dir: Some(t.path().join("run")),
            tmpdir: None,
        };
        fs::create_dir(t.path().join("run")).unwrap();
        let s = socket_path_for(&home, &env).unwrap();
        assert_eq!(
            s,
            t.path()
                .join("run")
                .join(format!("r1-{}", home_hash(home.root())))
                .join("r1.sock")
        );
        let m = fs::metadata(s.parent().unwrap()).unwrap().mode() & 0o777;
        assert_eq!(m, 0o700);
    }

    #[test]
    fn socket_path_too_long_falls_back_to_tmp() {
        let t = tempfile::tempdir().unwrap();
        let home = Home::at(t.path().join("home")).unwrap();
        let long = t.path().join("x".repeat(120));
        let env = SocketEnv {
            xdg_runtime_dir: Some(long),
            tmpdir: None,
        };
        let s = socket_path_for(&home, &env).unwrap();
        assert!(s.starts_with("/tmp"), "{}", s.display());
        assert!(fits_sun_path(&s));
    }
}
