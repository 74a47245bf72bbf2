//! `r1 serve --install | --uninstall | --status`: r1 as a per-user service (DESIGN §9).
//!
//! r1 renders the unit text itself ([`render_systemd_unit`], [`render_launchd_plist`])
//! because the `service-manager` crate mis-quotes arguments and cannot give the units
//! the names DESIGN fixes (`r1.service`, `dev.relayone.r1`, `r1.daemon`). Loading goes
//! through `systemctl --user` / `launchctl`, run by a [`CommandRunner`] so tests can
//! check the exact command sequence without a service manager.
//!
//! Install order, chosen so a failure leaves nothing behind:
//! 1. validate and render (no side effects);
//! 2. check the service manager answers (else one-line error, nothing touched);
//! 3. stop a running auto-spawned daemon through the caller's callback (the client
//!    lives in `r1_core::client`, and a spawned daemon would otherwise hold the lock
//!    the service wants);
//! 4. write the unit, then load, enable and start it; if any of these fails the
//!    unit file (and any directory created for it) is removed again, or the previous
//!    unit restored.
//!
//! The token never goes into a unit: the daemon makes a fresh one at every start and
//! publishes it only in `daemon.json` (DESIGN §3).
//!
//! ```
//! use r1_core::service::{ServiceOptions, Status, Platform, render_systemd_unit};
//! let opts = ServiceOptions::new("/home/ann/.r1".into(), "/usr/local/bin/r1".into());
//! let unit = render_systemd_unit(&opts).unwrap();
//! assert!(unit.contains("\nExecStart=/usr/local/bin/r1 serve\n"));
//! assert!(unit.contains("\nEnvironment=R1_HOME=/home/ann/.r1\n"));
//! assert_eq!(Status::NotInstalled.line(Platform::Systemd), "r1: not-installed (systemd)");
//! assert_eq!(Status::NotInstalled.exit_code(), 4);
//! ```

mod launchd;
mod render;
mod runner;
mod systemd;
mod unit_file;

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

pub use render::{render_launchd_plist, render_systemd_unit};
pub use runner::{CommandOutput, CommandRunner, SystemRunner};

/// The systemd user unit's name.
pub const SYSTEMD_UNIT_NAME: &str = "r1.service";
/// The launchd agent's label (and the plist's base name).
pub const LAUNCHD_LABEL: &str = "dev.relayone.r1";
/// The Windows service's name. Not built in this version: see [`Platform::WindowsService`].
pub const WINDOWS_SERVICE_NAME: &str = "r1.daemon";
/// The launchd log file under `<R1_HOME>/log/` that takes the agent's stdout and
/// stderr. Separate from `r1.log`, which the daemon writes itself.
pub const LAUNCHD_LOG_FILE: &str = "launchd.log";

/// The service manager r1 installs itself into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// A systemd user unit (Linux).
    Systemd,
    /// A launchd agent (macOS).
    Launchd,
    /// A Windows service named [`WINDOWS_SERVICE_NAME`] (not built in this version).
    WindowsService,
    /// No supported service manager.
    Unsupported,
}

impl Platform {
    /// The name used in `--status` output: `systemd`, `launchd`, `windows-service`,
    /// `unsupported`.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Systemd => "systemd",
            Platform::Launchd => "launchd",
            Platform::WindowsService => "windows-service",
            Platform::Unsupported => "unsupported",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The service manager of the platform this was built for: systemd on Linux, launchd
/// on macOS, the Windows service manager on Windows, otherwise [`Platform::Unsupported`].
/// Whether the manager is actually running is checked by [`install`] and friends.
pub fn detect_platform() -> Platform {
    if cfg!(target_os = "linux") {
        Platform::Systemd
    } else if cfg!(target_os = "macos") {
        Platform::Launchd
    } else if cfg!(windows) {
        Platform::WindowsService
    } else {
        Platform::Unsupported
    }
}

/// What `--status` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The unit is installed and the service manager says it is running.
    Running,
    /// The unit is installed but not running (inactive, failed, restarting, or the
    /// service manager is not running).
    Stopped,
    /// No unit file at the expected path.
    NotInstalled,
}

impl Status {
    /// `running`, `stopped`, `not-installed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Stopped => "stopped",
            Status::NotInstalled => "not-installed",
        }
    }

    /// The process exit code of `r1 serve --status`: 0 running, 3 stopped, 4 not
    /// installed (the LSB `status` codes, as `systemctl is-active` uses them).
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Running => 0,
            Status::Stopped => 3,
            Status::NotInstalled => 4,
        }
    }

    /// The line `r1 serve --status` prints: `r1: <status> (<platform>)`.
    pub fn line(self, platform: Platform) -> String {
        format!("r1: {} ({platform})", self.as_str())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything install, uninstall and status need. [`ServiceOptions::new`] fills the
/// fields from the process; tests and embedders may change any of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceOptions {
    /// The r1 home the service runs with (`R1_HOME` in the unit). Must be absolute.
    pub home: PathBuf,
    /// The r1 executable the unit starts (`<r1> serve`). Must be absolute; install
    /// also requires it to be an executable file (usually `std::env::current_exe()`).
    pub r1_binary: PathBuf,
    /// Which service manager to use (default: [`detect_platform`]).
    pub platform: Platform,
    /// Where to write the unit instead of the platform's directory
    /// (`~/.config/systemd/user`, `~/Library/LaunchAgents`). For tests.
    pub unit_dir_override: Option<PathBuf>,
    /// The login name, for the `loginctl enable-linger` hint.
    pub user: String,
    /// The uid, for the launchd domain `gui/<uid>`.
    pub uid: u32,
    /// `$XDG_RUNTIME_DIR`, named in the error when no systemd user instance answers.
    pub xdg_runtime_dir: Option<PathBuf>,
    /// systemd's linger flag directory (`/var/lib/systemd/linger`): a file named after
    /// the user means lingering is on.
    pub linger_dir: PathBuf,
}

impl ServiceOptions {
    /// Options for `home` and `r1_binary` on this machine: the detected platform, the
    /// current user (from the password database, else `$USER`), `$XDG_RUNTIME_DIR`.
    pub fn new(home: PathBuf, r1_binary: PathBuf) -> ServiceOptions {
        let uid = crate::paths::current_uid();
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
            .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| uid.to_string());
        ServiceOptions {
            home,
            r1_binary,
            platform: detect_platform(),
            unit_dir_override: None,
            user,
            uid,
            xdg_runtime_dir: std::env::var_os("XDG_RUNTIME_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            linger_dir: PathBuf::from("/var/lib/systemd/linger"),
        }
    }

    /// The directory the unit goes in: the override, else `~/.config/systemd/user`
    /// (`$XDG_CONFIG_HOME` honoured) or `~/Library/LaunchAgents`.
    pub fn unit_dir(&self) -> Result<PathBuf> {
        if let Some(dir) = &self.unit_dir_override {
            return Ok(dir.clone());
        }
        match self.platform {
            Platform::Systemd => dirs::config_dir()
                .map(|c| c.join("systemd").join("user"))
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::NotFound,
                        "cannot find the config directory for the systemd user unit: set HOME or XDG_CONFIG_HOME",
                    )
                }),
            Platform::Launchd => dirs::home_dir()
                .map(|h| h.join("Library").join("LaunchAgents"))
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::NotFound,
                        "cannot find the home directory for ~/Library/LaunchAgents: set HOME",
                    )
                }),
            Platform::WindowsService | Platform::Unsupported => Err(unsupported(self.platform)),
        }
    }

    /// The unit file: `<unit dir>/r1.service` or `<unit dir>/dev.relayone.r1.plist`.
    pub fn unit_path(&self) -> Result<PathBuf> {
        let name = match self.platform {
            Platform::Systemd => SYSTEMD_UNIT_NAME.to_owned(),
            Platform::Launchd => format!("{LAUNCHD_LABEL}.plist"),
            Platform::WindowsService | Platform::Unsupported => {
                return Err(unsupported(self.platform));
            }
        };
        Ok(self.unit_dir()?.join(name))
    }

    /// `<home>/log/`, where the launchd agent's output goes.
    pub fn log_dir(&self) -> PathBuf {
        self.home.join("log")
    }
}

/// What [`install`] did, as lines for the CLI to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    /// The service manager used.
    pub platform: Platform,
    /// The unit file written.
    pub unit_path: PathBuf,
    /// systemd only: whether lingering is on for the user (`None` elsewhere).
    pub linger: Option<bool>,
    /// Human lines, in order: what was written, what was started, and the
    /// `loginctl enable-linger` hint when lingering is off.
    pub lines: Vec<String>,
}

/// Installs, enables and starts the service with the real `systemctl`/`launchctl`.
/// See [`install_with`].
pub fn install(
    opts: &ServiceOptions,
    stop_running: &mut dyn FnMut() -> Result<()>,
) -> Result<InstallReport> {
    install_with(opts, &mut SystemRunner, stop_running)
}

/// Installs, enables and starts the service, running the service manager's commands
/// through `runner`. `stop_running` is called once the service manager has answered
/// and before anything is written; it should stop an auto-spawned daemon gracefully
/// (and do nothing when none runs). On error nothing is left behind: the unit file is
/// removed (or the previous one restored). The error message is one line.
pub fn install_with(
    opts: &ServiceOptions,
    runner: &mut dyn CommandRunner,
    stop_running: &mut dyn FnMut() -> Result<()>,
) -> Result<InstallReport> {
    match opts.platform {
        Platform::Systemd => systemd::install(opts, runner, stop_running),
        Platform::Launchd => launchd::install(opts, runner, stop_running),
        Platform::WindowsService | Platform::Unsupported => Err(unsupported(opts.platform)),
    }
}

/// Stops, disables and removes the service with the real `systemctl`/`launchctl`.
/// See [`uninstall_with`].
pub fn uninstall(opts: &ServiceOptions) -> Result<String> {
    uninstall_with(opts, &mut SystemRunner)
}

/// Stops, disables and removes the service and reloads the service manager. A
/// service that is not installed is not an error: the returned line says there was
/// nothing to do.
pub fn uninstall_with(opts: &ServiceOptions, runner: &mut dyn CommandRunner) -> Result<String> {
    match opts.platform {
        Platform::Systemd => systemd::uninstall(opts, runner),
        Platform::Launchd => launchd::uninstall(opts, runner),
        Platform::WindowsService | Platform::Unsupported => Err(unsupported(opts.platform)),
    }
}

/// The service's status from the real `systemctl`/`launchctl`. See [`status_with`].
pub fn status(opts: &ServiceOptions) -> Result<Status> {
    status_with(opts, &mut SystemRunner)
}

/// The service's status: [`Status::NotInstalled`] when the unit file is missing,
/// else what the service manager says (`systemctl --user is-active`, `launchctl
/// print`). Errors only on unsupported platforms.
pub fn status_with(opts: &ServiceOptions, runner: &mut dyn CommandRunner) -> Result<Status> {
    match opts.platform {
        Platform::Systemd => systemd::status(opts, runner),
        Platform::Launchd => launchd::status(opts, runner),
        Platform::WindowsService | Platform::Unsupported => Err(unsupported(opts.platform)),
    }
}

/// The error for a platform this build cannot install into. `data.reason` is
/// `unsupported` so the CLI can tell it apart.
fn unsupported(platform: Platform) -> Error {
    let message = match platform {
        Platform::WindowsService => format!(
            "the windows service {WINDOWS_SERVICE_NAME} is not supported by this build of r1; run `r1 serve` in the foreground"
        ),
        _ => "r1 serve --install/--uninstall/--status supports systemd (linux) and launchd (macos) only; run `r1 serve` in the foreground".to_owned(),
    };
    Error::new(ErrorKind::InvalidState, message).with_data(serde_json::json!({
        "reason": "unsupported",
        "platform": platform.as_str(),
    }))
}

/// The error for a service manager that does not answer. `data.reason` is
/// `manager_unavailable`.
fn manager_unavailable(platform: Platform, message: String) -> Error {
    Error::new(ErrorKind::InvalidState, message).with_data(serde_json::json!({
        "reason": "manager_unavailable",
        "platform": platform.as_str(),
    }))
}

/// The error for a service-manager command that failed. `data.reason` is
/// `command_failed`.
fn command_failed(platform: Platform, message: String) -> Error {
    Error::new(ErrorKind::Io, message).with_data(serde_json::json!({
        "reason": "command_failed",
        "platform": platform.as_str(),
    }))
}

/// Checks the binary the unit will start is an executable file, so the service
/// manager does not fail later with a less helpful exec error.
fn check_binary(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io("cannot use r1 binary", path, e))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(Error::invalid_params(format!(
            "{} is not an executable file; pass the absolute path of the r1 binary",
            path.display()
        )));
    }
    Ok(())
}

/// A command line for messages: `systemctl --user start r1.service`.
fn show_command(program: &str, args: &[&str]) -> String {
    let mut s = program.to_owned();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// Collapses a command's stderr (or stdout) into one line for an error message.
fn one_line(text: &str) -> String {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    const MAX: usize = 300;
    if joined.len() > MAX {
        let mut end = MAX;
        while !joined.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &joined[..end])
    } else {
        joined
    }
}

/// Describes why a command did not succeed: spawn error, exit status and output.
fn describe_failure(output: &std::io::Result<CommandOutput>) -> String {
    match output {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "not found on PATH".to_owned(),
        Err(e) => format!("could not run: {e}"),
        Ok(o) => {
            let status = match o.code {
                Some(c) => format!("exit {c}"),
                None => "killed by a signal".to_owned(),
            };
            let text = if o.stderr.trim().is_empty() {
                one_line(&o.stdout)
            } else {
                one_line(&o.stderr)
            };
            if text.is_empty() {
                status
            } else {
                format!("{status}: {text}")
            }
        }
    }
}
