//! The systemd user unit: `~/.config/systemd/user/r1.service`, driven by
//! `systemctl --user`.

use std::io;

use super::unit_file::{self, Prior, Written};
use super::{
    CommandOutput, CommandRunner, InstallReport, Platform, SYSTEMD_UNIT_NAME, ServiceOptions,
    Status, check_binary, command_failed, describe_failure, manager_unavailable,
    render_systemd_unit, show_command,
};
use crate::error::Result;

const SYSTEMCTL: &str = "systemctl";
const LOGINCTL: &str = "loginctl";
const UNIT: &str = SYSTEMD_UNIT_NAME;

/// `systemctl --user <args>`, returning the shown command line with the output.
fn systemctl(runner: &mut dyn CommandRunner, args: &[&str]) -> (String, io::Result<CommandOutput>) {
    let mut full = Vec::with_capacity(args.len() + 1);
    full.push("--user");
    full.extend_from_slice(args);
    (show_command(SYSTEMCTL, &full), runner.run(SYSTEMCTL, &full))
}

fn succeeded(out: &io::Result<CommandOutput>) -> bool {
    matches!(out, Ok(o) if o.success())
}

/// Checks that a systemd user instance answers, before anything is changed. The
/// error names what is missing (`XDG_RUNTIME_DIR`, the manager's private socket,
/// systemctl's own complaint), then `consequence`, then `fix`.
fn probe(
    opts: &ServiceOptions,
    runner: &mut dyn CommandRunner,
    consequence: &str,
    fix: &str,
) -> Result<()> {
    // Cheapest call that needs the manager: one property of the manager itself.
    let (shown, out) = systemctl(runner, &["show", "--property=Version"]);
    if succeeded(&out) {
        return Ok(());
    }
    let mut why = Vec::new();
    match &opts.xdg_runtime_dir {
        None => why.push("XDG_RUNTIME_DIR is not set".to_owned()),
        Some(dir) => {
            let private = dir.join("systemd").join("private");
            if !unit_file::exists(&private) {
                why.push(format!("{} is missing", private.display()));
            }
        }
    }
    why.push(format!("`{shown}`: {}", describe_failure(&out)));
    Err(manager_unavailable(
        Platform::Systemd,
        format!(
            "no systemd user instance is running ({}); {consequence}; {fix}",
            why.join("; ")
        ),
    ))
}

pub(super) fn install(
    opts: &ServiceOptions,
    runner: &mut dyn CommandRunner,
    stop_running: &mut dyn FnMut() -> Result<()>,
) -> Result<InstallReport> {
    let text = render_systemd_unit(opts)?;
    check_binary(&opts.r1_binary)?;
    let path = opts.unit_path()?;
    let prior = Prior::inspect(&path)?;
    probe(
        opts,
        runner,
        "nothing was installed",
        &format!(
            "log in through a session that starts `systemd --user` (or run `loginctl enable-linger {}`), or run `r1 serve` in the foreground instead",
            opts.user
        ),
    )?;
    stop_running()?;
    let written = unit_file::write(prior, text.as_bytes())?;
    // A re-install may find the old unit still active (if the callback found no
    // auto-spawned daemon to stop); `restart` makes the new unit take effect, where
    // `start` would be a no-op.
    let start = if written.replaced_existing() {
        "restart"
    } else {
        "start"
    };
    let mut enabled = false;
    for step in [&["daemon-reload"][..], &["enable", UNIT], &[start, UNIT]] {
        let (shown, out) = systemctl(runner, step);
        if !succeeded(&out) {
            let undone = rollback(runner, written, enabled);
            return Err(command_failed(
                Platform::Systemd,
                format!(
                    "`{shown}` failed ({}); {undone}; see `journalctl --user -u {UNIT}`",
                    describe_failure(&out)
                ),
            ));
        }
        enabled |= step[0] == "enable";
    }
    let linger = linger_enabled(opts, runner);
    let mut lines = vec![
        format!("wrote {}", path.display()),
        format!(
            "enabled and started {UNIT} (systemd user unit): `r1 serve --status` shows its state, `journalctl --user -u {UNIT}` its output"
        ),
    ];
    if !linger {
        lines.push(format!(
            "hint: lingering is off for {user}, so r1 stops when you log out; run `loginctl enable-linger {user}` to keep it running",
            user = opts.user
        ));
    }
    Ok(InstallReport {
        platform: Platform::Systemd,
        unit_path: path,
        linger: Some(linger),
        lines,
    })
}

/// Takes back a failed install; says what it did, for the error message.
fn rollback(runner: &mut dyn CommandRunner, written: Written, enabled: bool) -> String {
    let replaced = written.replaced_existing();
    if enabled && !replaced {
        // Best effort: the `default.target.wants` link must not outlive the unit.
        let _ = systemctl(runner, &["disable", UNIT]);
    }
    let path = written.path().to_path_buf();
    let undone = written.undo();
    // Best effort: make systemd forget the unit we removed (or see the restored one).
    let _ = systemctl(runner, &["daemon-reload"]);
    match (undone, replaced) {
        (Ok(()), false) => format!("removed {} again", path.display()),
        (Ok(()), true) => format!("restored the previous {}", path.display()),
        (Err(e), _) => format!("could not take back {}: {e}", path.display()),
    }
}

/// Lingering keeps the user's systemd instance (and so r1) running after logout.
/// The flag file is checked first (no process); `loginctl` is asked otherwise. An
/// unknown answer counts as off: the hint is harmless when wrong.
fn linger_enabled(opts: &ServiceOptions, runner: &mut dyn CommandRunner) -> bool {
    if unit_file::exists(&opts.linger_dir.join(&opts.user)) {
        return true;
    }
    match runner.run(LOGINCTL, &["show-user", &opts.user, "-p", "Linger"]) {
        Ok(o) if o.success() => o.stdout.lines().any(|l| l.trim() == "Linger=yes"),
        _ => false,
    }
}

pub(super) fn uninstall(opts: &ServiceOptions, runner: &mut dyn CommandRunner) -> Result<String> {
    let path = opts.unit_path()?;
    if !unit_file::exists(&path) {
        return Ok(format!(
            "r1: not installed (systemd): nothing to uninstall ({} does not exist)",
            path.display()
        ));
    }
    let wants = path
        .parent()
        .map(|d| d.join("default.target.wants").join(UNIT));
    probe(
        opts,
        runner,
        "nothing was changed",
        &match wants {
            Some(w) => format!(
                "to remove the unit by hand, delete {} and {}",
                path.display(),
                w.display()
            ),
            None => format!("to remove the unit by hand, delete {}", path.display()),
        },
    )?;
    for step in [["stop", UNIT], ["disable", UNIT]] {
        let (shown, out) = systemctl(runner, &step);
        if !succeeded(&out) {
            return Err(command_failed(
                Platform::Systemd,
                format!(
                    "`{shown}` failed ({}); {} is still installed",
                    describe_failure(&out),
                    path.display()
                ),
            ));
        }
    }
    unit_file::remove(&path)?;
    let (shown, out) = systemctl(runner, &["daemon-reload"]);
    let mut line = format!(
        "r1: uninstalled (systemd): stopped and disabled {UNIT}, removed {}",
        path.display()
    );
    if !succeeded(&out) {
        // The unit is gone; systemd will notice at its next reload.
        line.push_str(&format!(
            " (but `{shown}` failed: {})",
            describe_failure(&out)
        ));
    }
    Ok(line)
}

pub(super) fn status(opts: &ServiceOptions, runner: &mut dyn CommandRunner) -> Result<Status> {
    let path = opts.unit_path()?;
    if !unit_file::exists(&path) {
        return Ok(Status::NotInstalled);
    }
    let (_, out) = systemctl(runner, &["is-active", UNIT]);
    // `is-active` prints the state and exits non-zero for anything but active, so the
    // printed word decides; no answer at all (no manager) means not running.
    Ok(match out {
        Ok(o) => match o.stdout.trim() {
            "active" | "reloading" => Status::Running,
            _ => Status::Stopped,
        },
        Err(_) => Status::Stopped,
    })
}
