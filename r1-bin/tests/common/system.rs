//! Things only root can set up (a small tmpfs, an unprivileged user), each undone by a
//! guard, and the rule for skipping: a test that needs root and does not have it prints
//! `SKIPPED: <test>: <why>` on stderr and passes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// True when running as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Prints the skip line for `test`.
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED: {test}: {why}");
}

/// A tmpfs mounted for one test; unmounted (lazily, so a leftover process cannot keep
/// it busy) when dropped, even on panic.
pub struct Tmpfs {
    /// The mount point.
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `"2m"`) at `path` (created if missing), mode 0700.
    pub fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Fills the file system holding `dir` with `<dir>/filler` until a write fails with
/// ENOSPC; returns the filler's path and size.
pub fn fill_disk(dir: &Path) -> (PathBuf, u64) {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("create filler");
    let chunk = vec![0x5au8; 4096];
    let mut size = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => size += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Byte-sized leftovers too, so not even a short record fits.
    while let Ok(1) = f.write(&chunk[..1]) {
        size += 1;
    }
    (path, size)
}

/// The unprivileged user foreign-user tests act as.
pub const FOREIGN_USER: &str = "r1-foreign-test";

/// An unprivileged local user (created once, reused).
#[derive(Debug, Clone, Copy)]
pub struct ForeignUser {
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

impl ForeignUser {
    /// Creates `r1-foreign-test` if missing (`useradd -M -r -s /usr/sbin/nologin`).
    pub fn ensure() -> Result<ForeignUser, String> {
        if let Some(u) = ForeignUser::lookup() {
            return Ok(u);
        }
        let out = Command::new("useradd")
            .args(["-M", "-r", "-s", "/usr/sbin/nologin", FOREIGN_USER])
            .output()
            .map_err(|e| format!("cannot run useradd: {e}"))?;
        // A concurrent test may have created it first (exit 9: already exists).
        if let Some(u) = ForeignUser::lookup() {
            return Ok(u);
        }
        Err(format!(
            "useradd {FOREIGN_USER} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }

    fn lookup() -> Option<ForeignUser> {
        let u = nix::unistd::User::from_name(FOREIGN_USER).ok()??;
        Some(ForeignUser {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        })
    }

    /// Runs `argv` as this user (setpriv: real and effective uid/gid, no groups).
    pub fn run(&self, argv: &[&str]) -> Output {
        Command::new("setpriv")
            .arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg("--")
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C")
            .output()
            .expect("run setpriv")
    }
}

/// A python3 any user can run (the shims of per-user installs are not), if any.
pub fn system_python() -> Option<&'static str> {
    ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}
