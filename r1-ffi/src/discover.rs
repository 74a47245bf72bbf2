//! `r1_discover`: read and validate `daemon.json` without connecting or spawning.

use std::ffi::c_char;
use std::path::Path;

use crate::boundary::{self, Failure, FfiResult, opt_str_arg, out_arg, string_to_c};
use crate::status::R1Status;

/// Reads the discovery file (`daemon.json`) of a home and returns it as JSON.
///
/// `home`: the r1 home directory, or NULL for the default (`$R1_HOME`, else `~/.r1`).
/// On success `*discovery_json_out` receives a new string the caller frees with
/// `r1_string_free`: `{"pid", "version", "protocol_version", "instance_id",
/// "sock_path", "host", "port", "token", "cert_fingerprint", "started_at"}`. It holds
/// the master token: do not log it or hand it to a less trusted party.
/// On error `*discovery_json_out` is set to NULL.
///
/// Never connects and never starts a daemon. A file whose pid is not running is stale
/// and reported as `R1_STATUS_NOT_FOUND` (a live pid may still be stale; only
/// `r1_client_dial` can tell).
///
/// Thread-safe. Returns `R1_STATUS_OK`, `R1_STATUS_NULL_ARGUMENT`
/// (`discovery_json_out`), `R1_STATUS_INVALID_ARGUMENT` (home not UTF-8),
/// `R1_STATUS_NOT_FOUND` (missing, malformed or stale file),
/// `R1_STATUS_UNSAFE` (symlink, other owner, group/other mode bits), `R1_STATUS_IO`.
///
/// # Safety
/// `home` is NULL or a NUL-terminated string; `discovery_json_out` is NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn r1_discover(
    home: *const c_char,
    discovery_json_out: *mut *mut c_char,
) -> R1Status {
    boundary::status(|| {
        // SAFETY: the caller's contract above.
        let out = unsafe { out_arg(discovery_json_out, "discovery_json_out") }?;
        // SAFETY: the caller's contract above.
        let home = unsafe { opt_str_arg(home, "home") }?;
        let json = discover_json(home.map(Path::new))?;
        *out = string_to_c(json)?;
        Ok(())
    })
}

fn discover_json(home: Option<&Path>) -> FfiResult<String> {
    let d = r1_core::client::discover(home)?;
    serde_json::to_string(&d).map_err(|e| Failure::new(R1Status::Panic, e.to_string()))
}
