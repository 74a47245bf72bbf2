//! The launchd agent: `~/Library/LaunchAgents/dev.relayone.r1.plist`, driven by
//! `launchctl` in the user's `gui/<uid>` domain.
//!
//! Nothing here is macOS-only code (it only runs commands through the
//! [`CommandRunner`]), so it compiles and is tested with a fake runner everywhere.
//! It has not been run against a real launchd in this project's CI.

use std::io;

use super::unit_file::{self, Prior};
use super::{
    CommandOutput, CommandRunner, InstallReport, LAUNCHD_LABEL, LAUNCHD_LOG_FILE, Platform,
    ServiceOptions, Status, check_binary, command_failed, describe_failure, manager_unavailable,
    render_launchd_plist, show_command,
};
use crate::error::Result;

const LAUNCHCTL: &str = "launchctl";

/// launchctl's exit statuses for "not loaded": ESRCH and "could not find service".
const NOT_LOADED: [i32; 2] = [3, 113];

fn launchctl(runner: &mut dyn CommandRunner, args: &[&str]) -> (String, io::Result<CommandOutput>) {
    (show_command(LAUNCHCTL, args), runner.run(LAUNCHCTL, args))
}

fn succeeded(out: &io::Result<CommandOutput>) -> bool {
    matches!(out, Ok(o) if o.success())
}

fn domain(opts: &ServiceOptions) -> String {
    format!("gui/{}", opts.uid)
}

fn target(opts: &ServiceOptions) -> String {
    format!("gui/{}/{LAUNCHD_LABEL}", opts.uid)
}

/// Checks the user's GUI launchd domain answers (it does not over a plain SSH login).
fn probe(
    opts: &ServiceOptions,
    runner: &mut dyn CommandRunner,
    consequence: &str,
    fix: &str,
) -> Result<()> {
    let domain = domain(opts);
    let (shown, out) = launchctl(runner, &["print", &domain]);
    if succeeded(&out) {
        return Ok(());
    }
    Err(manager_unavailable(
        Platform::Launchd,
        format!(
            "no launchd session for uid {} (`{shown}`: {}); {consequence}; {fix}",
            opts.uid,
            describe_failure(&out)
        ),
    ))
}

pub(super) fn install(
    opts: &ServiceOptions,
    runner: &mut dyn CommandRunner,
    stop_running: &mut dyn FnMut() -> Result<()>,
) -> Result<InstallReport> {
    let text = render_launchd_plist(opts)?;
    check_binary(&opts.r1_binary)?;
    let path = opts.unit_path()?;
    let prior = Prior::inspect(&path)?;
    probe(
        opts,
        runner,
        "nothing was installed",
        "log in to the desktop as this user, or run `r1 serve` in the foreground instead",
    )?;
    stop_running()?;
    // launchd opens StandardOutPath itself and fails if its directory is missing.
    let log_dirs = unit_file::create_dirs(&opts.log_dir(), Some(0o700))?;
    let domain = domain(opts);
    let target = target(opts);
    if prior.existed() {
        // An old definition stays loaded until booted out; bootstrap would refuse.
        let _ = launchctl(runner, &["bootout", &target]);
    }
    let written = match unit_file::write(prior, text.as_bytes()) {
        Ok(w) => w,
        Err(e) => {
            unit_file::remove_created_dirs(&log_dirs);
            return Err(e);
        }
    };
    let path_str = path.to_string_lossy().into_owned();
    for step in [
        &["enable", target.as_str()][..],
        &["bootstrap", &domain, &path_str],
    ] {
        let (shown, out) = launchctl(runner, step);
        if !succeeded(&out) {
            let replaced = written.replaced_existing();
            let undone = match written.undo() {
                Ok(()) if replaced => format!("restored the previous {}", path.display()),
                Ok(()) => format!("removed {} again", path.display()),
                Err(e) => format!("could not take back {}: {e}", path.display()),
            };
            unit_file::remove_created_dirs(&log_dirs);
            return Err(command_failed(
                Platform::Launchd,
                format!("`{shown}` failed ({}); {undone}", describe_failure(&out)),
            ));
        }
    }
    Ok(InstallReport {
        platform: Platform::Launchd,
        unit_path: path.clone(),
        linger: None,
        lines: vec![
            format!("wrote {}", path.display()),
            format!(
                "loaded {LAUNCHD_LABEL} into launchd ({domain}): it runs now and at each login; its output goes to {}",
                opts.log_dir().join(LAUNCHD_LOG_FILE).display()
            ),
        ],
    })
}

pub(super) fn uninstall(opts: &ServiceOptions, runner: &mut dyn CommandRunner) -> Result<String> {
    let path = opts.unit_path()?;
    if !unit_file::exists(&path) {
        return Ok(format!(
            "r1: not installed (launchd): nothing to uninstall ({} does not exist)",
            path.display()
        ));
    }
    probe(
        opts,
        runner,
        "nothing was changed",
        &format!("to remove the agent by hand, delete {}", path.display()),
    )?;
    let target = target(opts);
    let (shown, out) = launchctl(runner, &["bootout", &target]);
    let not_loaded = matches!(&out, Ok(o) if o.code.is_some_and(|c| NOT_LOADED.contains(&c)));
    if !succeeded(&out) && !not_loaded {
        return Err(command_failed(
            Platform::Launchd,
            format!(
                "`{shown}` failed ({}); {} is still installed",
                describe_failure(&out),
                path.display()
            ),
        ));
    }
    unit_file::remove(&path)?;
    Ok(format!(
        "r1: uninstalled (launchd): unloaded {LAUNCHD_LABEL}, removed {}",
        path.display()
    ))
}

pub(super) fn status(opts: &ServiceOptions, runner: &mut dyn CommandRunner) -> Result<Status> {
    let path = opts.unit_path()?;
    if !unit_file::exists(&path) {
        return Ok(Status::NotInstalled);
    }
    let target = target(opts);
    let (_, out) = launchctl(runner, &["print", &target]);
    Ok(match out {
        Ok(o) if o.success() && o.stdout.lines().any(|l| l.trim() == "state = running") => {
            Status::Running
        }
        _ => Status::Stopped,
    })
}
