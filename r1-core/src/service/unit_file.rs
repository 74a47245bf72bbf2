//! Writing a unit file so that it can be taken back: remember what was there before
//! (nothing, or the previous unit's bytes) and which directories were created for it.
//!
//! Unit files are 0644, not r1's usual 0600: they hold no secret, and service
//! managers and tools such as `systemd-analyze` read them as ordinary config.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::paths::fsync_dir;

/// The mode of a written unit file.
pub(super) const UNIT_MODE: u32 = 0o644;

/// What was at the unit path before install.
#[derive(Debug)]
pub(super) struct Prior {
    path: PathBuf,
    bytes: Option<Vec<u8>>,
}

impl Prior {
    /// Looks at `path` before anything is changed. A symlink or non-file there is
    /// refused: replacing it would silently break whatever it pointed into.
    pub(super) fn inspect(path: &Path) -> Result<Prior> {
        let bytes = match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("cannot inspect", path, e)),
            Ok(m) if !m.file_type().is_file() => {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "{} exists and is not a regular file (a symlink or directory); move it away, then install again",
                        path.display()
                    ),
                ));
            }
            Ok(_) => Some(fs::read(path).map_err(|e| Error::io("cannot read", path, e))?),
        };
        Ok(Prior {
            path: path.to_path_buf(),
            bytes,
        })
    }

    /// True when a unit was there already (a re-install).
    pub(super) fn existed(&self) -> bool {
        self.bytes.is_some()
    }
}

/// A unit file written by [`write`]; [`Written::undo`] takes it back.
#[derive(Debug)]
pub(super) struct Written {
    prior: Prior,
    /// Directories created for the unit, outermost first.
    created_dirs: Vec<PathBuf>,
}

/// Writes `bytes` to the path `prior` inspected, creating missing parent directories,
/// atomically (temp file, fsync, rename, fsync dir) and with mode 0644 whatever the
/// umask.
pub(super) fn write(prior: Prior, bytes: &[u8]) -> Result<Written> {
    let path = prior.path.clone();
    let dir = path
        .parent()
        .ok_or_else(|| {
            Error::invalid_params(format!("{} has no parent directory", path.display()))
        })?
        .to_path_buf();
    let created_dirs = create_dirs(&dir, None)?;
    let written = Written {
        prior,
        created_dirs,
    };
    match replace_file(&dir, &path, bytes) {
        Ok(()) => Ok(written),
        Err(e) => {
            // Best effort: the write error is the one to report.
            let _ = written.undo();
            Err(e)
        }
    }
}

impl Written {
    /// The unit file's path.
    pub(super) fn path(&self) -> &Path {
        &self.prior.path
    }

    /// True when a unit was there before this write.
    pub(super) fn replaced_existing(&self) -> bool {
        self.prior.existed()
    }

    /// Restores the previous unit, or removes the new one and the directories
    /// created for it (only if empty: something else may have appeared in them).
    pub(super) fn undo(self) -> Result<()> {
        let path = &self.prior.path;
        let dir = path.parent().unwrap_or(Path::new("/"));
        match &self.prior.bytes {
            Some(old) => replace_file(dir, path, old)?,
            None => match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("cannot remove", path, e)),
            },
        }
        remove_created_dirs(&self.created_dirs);
        Ok(())
    }
}

/// Creates `dir` and its missing parents (mode `mode`, else the default 0777 & umask:
/// unit directories are ordinary config directories) and returns those created,
/// outermost first.
pub(super) fn create_dirs(dir: &Path, mode: Option<u32>) -> Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        match fs::symlink_metadata(d) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(d.to_path_buf()),
            Err(e) => return Err(Error::io("cannot inspect", d, e)),
        }
        cur = d.parent();
    }
    missing.reverse();
    let mut created = Vec::new();
    for d in missing {
        let mut b = fs::DirBuilder::new();
        if let Some(m) = mode {
            std::os::unix::fs::DirBuilderExt::mode(&mut b, m);
        }
        match b.create(&d) {
            Ok(()) => created.push(d),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                remove_created_dirs(&created);
                return Err(Error::io("cannot create directory", &d, e));
            }
        }
    }
    Ok(created)
}

/// Removes directories [`create_dirs`] made, innermost first, each only if empty.
pub(super) fn remove_created_dirs(created: &[PathBuf]) {
    for d in created.iter().rev() {
        // Not empty means someone else put something there: leave it.
        let _ = fs::remove_dir(d);
    }
}

/// Removes the unit file at `path` and fsyncs its directory.
pub(super) fn remove(path: &Path) -> Result<()> {
    fs::remove_file(path).map_err(|e| Error::io("cannot remove", path, e))?;
    if let Some(dir) = path.parent() {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// True when a unit file (or anything else) is at `path`.
pub(super) fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

fn replace_file(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix: u64 = rand::random();
    let tmp = dir.join(format!(".{name}.tmp-{}-{suffix:016x}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(UNIT_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| Error::io("cannot create", &tmp, e))?;
        // The umask may have narrowed the mode at creation; the unit must be readable.
        f.set_permissions(fs::Permissions::from_mode(UNIT_MODE))
            .map_err(|e| Error::io("cannot chmod 0644", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| Error::io("cannot write", &tmp, e))?;
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
