//! `r1 serve --install | --uninstall | --status` (r1_core::service).
//!
//! The unit texts are checked by the tools that read them: `systemd-analyze --user
//! verify` for the systemd unit and Python's `plistlib` for the launchd plist. The
//! command sequences are checked with a fake [`CommandRunner`]; the "no systemd user
//! instance" path is also run for real (this test machine has none).
//!
//! System packages: `systemd` (for `systemd-analyze`; `systemctl` for the real-path
//! test) and `python3`. Missing tools make the affected checks print why they were
//! skipped on stderr.

use std::cell::RefCell;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;

use r1_core::ErrorKind;
use r1_core::service::{
    CommandOutput, CommandRunner, LAUNCHD_LABEL, Platform, ServiceOptions, Status, SystemRunner,
    WINDOWS_SERVICE_NAME, install_with, render_launchd_plist, render_systemd_unit, status_with,
    uninstall_with,
};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------
// helpers

/// A tiny executable standing in for the r1 binary (systemd-analyze checks that the
/// ExecStart binary exists and is executable).
fn fake_exe(path: &Path) -> PathBuf {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

/// Options for a systemd install inside `t`: units in `t/config/systemd/user`, linger
/// flags in `t/linger`, user `ann`, uid 1000.
fn systemd_opts(t: &TempDir, home: PathBuf, bin: PathBuf) -> ServiceOptions {
    ServiceOptions {
        home,
        r1_binary: bin,
        platform: Platform::Systemd,
        unit_dir_override: Some(t.path().join("config/systemd/user")),
        user: "ann".into(),
        uid: 1000,
        xdg_runtime_dir: None,
        linger_dir: t.path().join("linger"),
    }
}

fn launchd_opts(t: &TempDir, home: PathBuf, bin: PathBuf) -> ServiceOptions {
    ServiceOptions {
        platform: Platform::Launchd,
        unit_dir_override: Some(t.path().join("Library/LaunchAgents")),
        uid: 501,
        ..systemd_opts(t, home, bin)
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A shared log of what happened, in order: commands and the stop callback.
type Log = Rc<RefCell<Vec<String>>>;

/// A scripted service manager: records every command, answers like the real tools.
struct Fake {
    log: Log,
    /// A command line that exits 1 (its stderr is `Job for r1.service failed.`).
    fail: Option<String>,
    /// What `is-active` prints.
    is_active: &'static str,
    /// What `loginctl show-user … -p Linger` prints.
    linger: &'static str,
    /// What `launchctl print gui/501/dev.relayone.r1` prints.
    launchd_print: &'static str,
}

impl Fake {
    fn new(log: &Log) -> Fake {
        Fake {
            log: log.clone(),
            fail: None,
            is_active: "active",
            linger: "Linger=no",
            launchd_print: "gui/501/dev.relayone.r1 = {\n\tstate = running\n}",
        }
    }
}

impl CommandRunner for Fake {
    fn run(&mut self, program: &str, args: &[&str]) -> io::Result<CommandOutput> {
        let line = format!("{program} {}", args.join(" "));
        self.log.borrow_mut().push(line.clone());
        if self.fail.as_deref() == Some(line.as_str()) {
            return Ok(CommandOutput::failed(
                1,
                "Job for r1.service failed.\nSee \"systemctl --user status r1.service\" for details.\n",
            ));
        }
        Ok(match line.as_str() {
            "systemctl --user show --property=Version" => CommandOutput::ok("Version=252\n"),
            "systemctl --user is-active r1.service" => CommandOutput {
                code: Some(if self.is_active == "active" { 0 } else { 3 }),
                stdout: format!("{}\n", self.is_active),
                stderr: String::new(),
            },
            "loginctl show-user ann -p Linger" => CommandOutput::ok(format!("{}\n", self.linger)),
            "launchctl print gui/501/dev.relayone.r1" => CommandOutput::ok(self.launchd_print),
            _ => CommandOutput::ok(""),
        })
    }
}

/// A stop callback that records itself in the log.
fn stopper(log: &Log) -> impl FnMut() -> r1_core::Result<()> + use<> {
    let log = log.clone();
    move || {
        log.borrow_mut().push("stop-running".into());
        Ok(())
    }
}

fn logged(log: &Log) -> Vec<String> {
    log.borrow().clone()
}

/// Runs `systemd-analyze --user verify` on `unit` with a private runtime dir.
/// Returns `None` (after saying so on stderr) when systemd-analyze is not installed.
fn systemd_verify(unit: &Path) -> Option<(bool, String)> {
    let runtime = tempfile::tempdir().unwrap();
    let out = match Command::new("systemd-analyze")
        .args(["--user", "verify"])
        .arg(unit)
        .env("XDG_RUNTIME_DIR", runtime.path())
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            eprintln!(
                "skipped systemd-analyze verify of {}: systemd-analyze is not installed (install the `systemd` package)",
                unit.display()
            );
            return None;
        }
        Err(e) => panic!("cannot run systemd-analyze: {e}"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

/// Writes `text` as `<dir>/r1.service` and asserts systemd-analyze accepts it: exit
/// 0 and no line about the unit (systemd only warns, exit 0, on bad `Environment=`).
fn assert_verifies(dir: &Path, text: &str) {
    fs::create_dir_all(dir).unwrap();
    let unit = dir.join("r1.service");
    fs::write(&unit, text).unwrap();
    if let Some((ok, out)) = systemd_verify(&unit) {
        assert!(ok, "systemd-analyze verify failed:\n{out}\nunit:\n{text}");
        let about_unit: Vec<&str> = out
            .lines()
            .filter(|l| l.contains("r1.service") || l.contains(&*unit.to_string_lossy()))
            .collect();
        assert!(
            about_unit.is_empty(),
            "systemd-analyze complained about the unit: {about_unit:?}\nunit:\n{text}"
        );
    }
}

fn line_starting<'a>(text: &'a str, prefix: &str) -> &'a str {
    let found: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(found.len(), 1, "exactly one {prefix} line in:\n{text}");
    found[0]
}

// ---------------------------------------------------------------------------------
// systemd unit text

#[test]
fn systemd_unit_exact_text() {
    let t = tempfile::tempdir().unwrap();
    let o = systemd_opts(&t, "/home/ann/.r1".into(), "/usr/local/bin/r1".into());
    assert_eq!(
        render_systemd_unit(&o).unwrap(),
        "\
# Written by `r1 serve --install`; remove it with `r1 serve --uninstall`.
# It holds no secret: the daemon makes a fresh token at each start.
[Unit]
Description=r1 per-user session daemon

[Service]
Type=simple
ExecStart=/usr/local/bin/r1 serve
Environment=R1_HOME=/home/ann/.r1
Restart=on-failure
RestartSec=5
# Exit status 1 means another r1 daemon holds the lock: restarting cannot help.
RestartPreventExitStatus=1

[Install]
WantedBy=default.target
"
    );
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let t = tempfile::tempdir().unwrap();
    let bin = fake_exe(&t.path().join("bin/r1"));
    let o = systemd_opts(&t, t.path().join("home/.r1"), bin);
    assert_verifies(&t.path().join("check"), &render_systemd_unit(&o).unwrap());
}

#[test]
fn systemd_unit_quotes_paths_with_spaces() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().to_str().unwrap();
    let bin = fake_exe(&t.path().join("my bin/r1"));
    let o = systemd_opts(&t, t.path().join("home with space"), bin);
    let unit = render_systemd_unit(&o).unwrap();
    assert_eq!(
        line_starting(&unit, "ExecStart="),
        format!("ExecStart=\"{root}/my bin/r1\" serve")
    );
    assert_eq!(
        line_starting(&unit, "Environment="),
        format!("Environment=\"R1_HOME={root}/home with space\"")
    );
    assert_verifies(&t.path().join("check"), &unit);
}

#[test]
fn systemd_unit_escapes_percent_dollar_quote_backslash() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().to_str().unwrap();
    // `$` is literal in the executable path and in Environment=; `%` is a specifier
    // everywhere; `"` and `\` are escaped inside the quotes.
    let bin = fake_exe(&t.path().join("bin 50% $x/r1"));
    let o = systemd_opts(&t, t.path().join("h 100% $HOME \"q\" \\b"), bin);
    let unit = render_systemd_unit(&o).unwrap();
    assert_eq!(
        line_starting(&unit, "ExecStart="),
        format!("ExecStart=\"{root}/bin 50%% $x/r1\" serve")
    );
    assert_eq!(
        line_starting(&unit, "Environment="),
        format!("Environment=\"R1_HOME={root}/h 100%% $HOME \\\"q\\\" \\\\b\"")
    );
    assert_verifies(&t.path().join("check"), &unit);

    // A home with `%` and `$` but nothing that needs quotes stays unquoted.
    let o = systemd_opts(&t, t.path().join("h%1$USER"), t.path().join("bin/r1"));
    let unit = render_systemd_unit(&o).unwrap();
    assert_eq!(
        line_starting(&unit, "Environment="),
        format!("Environment=R1_HOME={root}/h%%1$USER")
    );
}

#[test]
fn systemd_decodes_exec_start_to_exactly_the_binary_path() {
    // A binary that does not exist makes systemd-analyze print the path it decoded
    // from ExecStart=: it must be ours, byte for byte.
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("no such 7% $y dir/r1");
    let o = systemd_opts(&t, t.path().join("home"), missing.clone());
    let dir = t.path().join("check");
    fs::create_dir_all(&dir).unwrap();
    let unit = dir.join("r1.service");
    fs::write(&unit, render_systemd_unit(&o).unwrap()).unwrap();
    if let Some((ok, out)) = systemd_verify(&unit) {
        assert!(!ok, "a missing binary must fail verify:\n{out}");
        let expected = format!("Command {} is not executable", missing.display());
        assert!(out.contains(&expected), "want {expected:?} in:\n{out}");
    }
}

#[test]
fn systemd_unit_never_holds_the_token() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    fs::create_dir_all(&home).unwrap();
    let token = "a1b2c3d4".repeat(8);
    fs::write(
        home.join("daemon.json"),
        format!(r#"{{"pid":1,"version":"0.1.0","protocol_version":1,"instance_id":"00","sock_path":null,"host":"127.0.0.1","port":1,"token":"{token}","cert_fingerprint":null,"started_at":"2026-05-02T18:30:00Z"}}"#),
    )
    .unwrap();
    let bin = fake_exe(&t.path().join("bin/r1"));
    let o = systemd_opts(&t, home.clone(), bin.clone());
    assert!(!render_systemd_unit(&o).unwrap().contains(&token));
    assert!(!render_launchd_plist(&o).unwrap().contains(&token));

    // And what install actually writes.
    let log = Log::default();
    let report = install_with(&o, &mut Fake::new(&log), &mut stopper(&log)).unwrap();
    let written = fs::read_to_string(&report.unit_path).unwrap();
    assert!(!written.contains(&token));
    assert!(!written.to_lowercase().contains("token="));
}

#[test]
fn systemd_unit_refuses_paths_it_cannot_carry() {
    let t = tempfile::tempdir().unwrap();
    let cases: [(PathBuf, PathBuf, &str); 5] = [
        ("/h".into(), "bin/r1".into(), "is not absolute"),
        ("h".into(), "/bin/r1".into(), "is not absolute"),
        ("/h".into(), "/a/../r1".into(), "contains `..`"),
        ("/h".into(), "/bin/r\"1".into(), "quote or backslash"),
        ("/h\nx".into(), "/bin/r1".into(), "control character"),
    ];
    for (home, bin, want) in cases {
        let e = render_systemd_unit(&systemd_opts(&t, home.clone(), bin.clone())).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidParams, "{home:?} {bin:?}");
        assert!(e.message().contains(want), "{e}");
        assert!(!e.message().contains('\n'), "one line: {e:?}");
    }
}

// ---------------------------------------------------------------------------------
// launchd plist

#[test]
fn launchd_plist_parses_with_plistlib() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home & <co> \"q\" 'a' 50% $x");
    let bin = t.path().join("Applications/R1 & Co/r1");
    let o = launchd_opts(&t, home.clone(), bin.clone());
    let plist = render_launchd_plist(&o).unwrap();
    assert!(plist.contains("&amp;") && plist.contains("&lt;co&gt;"));
    assert!(plist.contains("&quot;q&quot;") && plist.contains("&apos;a&apos;"));
    let file = t.path().join("dev.relayone.r1.plist");
    fs::write(&file, &plist).unwrap();

    let script = "import json, plistlib, sys\nwith open(sys.argv[1], 'rb') as f:\n    print(json.dumps(plistlib.load(f)))";
    let out = match Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&file)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            eprintln!("skipped plistlib check: python3 is not installed (install `python3`)");
            return;
        }
        Err(e) => panic!("cannot run python3: {e}"),
    };
    assert!(
        out.status.success(),
        "plistlib rejected the plist: {}\n{plist}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let log = home.join("log/launchd.log");
    assert_eq!(
        parsed,
        serde_json::json!({
            "Label": LAUNCHD_LABEL,
            "ProgramArguments": [bin.to_str().unwrap(), "serve"],
            "EnvironmentVariables": {"R1_HOME": home.to_str().unwrap()},
            "RunAtLoad": true,
            "KeepAlive": {"SuccessfulExit": false},
            "StandardOutPath": log.to_str().unwrap(),
            "StandardErrorPath": log.to_str().unwrap(),
        })
    );
    assert_eq!(LAUNCHD_LABEL, "dev.relayone.r1");
}

// ---------------------------------------------------------------------------------
// install / uninstall / status against the real machine (no systemd user instance)

/// True when a systemd user instance answers here; the real-path tests then skip,
/// because they would talk to it.
fn user_manager_answers() -> bool {
    let out = SystemRunner.run("systemctl", &["--user", "show", "--property=Version"]);
    let answers = matches!(&out, Ok(o) if o.success());
    if answers {
        eprintln!(
            "skipped: a systemd user instance answers on this machine; this test covers machines without one"
        );
    }
    answers
}

#[test]
fn install_without_systemd_user_instance_fails_in_one_line_and_leaves_nothing() {
    if user_manager_answers() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let bin = fake_exe(&t.path().join("bin/r1"));
    let mut o = ServiceOptions::new(t.path().join("home"), bin);
    o.platform = Platform::Systemd;
    o.unit_dir_override = Some(t.path().join("config/systemd/user"));
    let mut stops = 0;
    let mut stop = || {
        stops += 1;
        Ok(())
    };
    let e = r1_core::service::install(&o, &mut stop).unwrap_err();
    assert_eq!(
        stops, 0,
        "the running daemon must not be stopped for nothing"
    );
    assert_eq!(e.kind(), ErrorKind::InvalidState);
    assert_eq!(
        e.data().unwrap()["reason"],
        serde_json::json!("manager_unavailable")
    );
    let msg = e.to_string();
    eprintln!("install said: {msg}");
    assert!(!msg.contains('\n'), "one line: {msg:?}");
    assert!(
        msg.starts_with("no systemd user instance is running ("),
        "{msg}"
    );
    assert!(
        msg.contains("`systemctl --user show --property=Version`: "),
        "{msg}"
    );
    assert!(msg.contains("; nothing was installed; "), "{msg}");
    assert!(
        msg.ends_with("or run `r1 serve` in the foreground instead"),
        "{msg}"
    );
    match &o.xdg_runtime_dir {
        None => assert!(msg.contains("XDG_RUNTIME_DIR is not set"), "{msg}"),
        Some(x) if !x.join("systemd/private").exists() => {
            assert!(msg.contains("/systemd/private is missing"), "{msg}")
        }
        Some(_) => {}
    }
    assert!(!t.path().join("config").exists(), "no unit dir created");
    assert!(!t.path().join("home").exists(), "home untouched");
}

#[test]
fn real_status_and_uninstall_without_systemd_user_instance() {
    if user_manager_answers() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let mut o = ServiceOptions::new(t.path().join("home"), "/usr/bin/r1".into());
    o.platform = Platform::Systemd;
    o.unit_dir_override = Some(t.path().join("units"));
    let unit = t.path().join("units/r1.service");

    assert_eq!(r1_core::service::status(&o).unwrap(), Status::NotInstalled);
    assert_eq!(
        r1_core::service::uninstall(&o).unwrap(),
        format!(
            "r1: not installed (systemd): nothing to uninstall ({} does not exist)",
            unit.display()
        )
    );

    fs::create_dir_all(unit.parent().unwrap()).unwrap();
    fs::write(&unit, "[Service]\n").unwrap();
    assert_eq!(r1_core::service::status(&o).unwrap(), Status::Stopped);
    let e = r1_core::service::uninstall(&o).unwrap_err();
    assert!(!e.message().contains('\n'), "{e}");
    assert!(e.message().contains("nothing was changed"), "{e}");
    assert!(
        e.message().contains(&format!("delete {}", unit.display())),
        "{e}"
    );
    assert!(
        unit.exists(),
        "uninstall that could not stop the unit keeps it"
    );
}

// ---------------------------------------------------------------------------------
// install with a fake systemctl

#[test]
fn install_checks_stops_writes_then_reloads_enables_starts() {
    let t = tempfile::tempdir().unwrap();
    let bin = fake_exe(&t.path().join("bin/r1"));
    let o = systemd_opts(&t, t.path().join("home"), bin);
    let unit = t.path().join("config/systemd/user/r1.service");
    let log = Log::default();
    let mut stop = {
        let log = log.clone();
        let unit = unit.clone();
        move || {
            assert!(!unit.exists(), "stop runs before the unit is written");
            log.borrow_mut().push("stop-running".into());
            Ok(())
        }
    };
    let report = install_with(&o, &mut Fake::new(&log), &mut stop).unwrap();
    assert_eq!(
        logged(&log),
        [
            "systemctl --user show --property=Version",
            "stop-running",
            "systemctl --user daemon-reload",
            "systemctl --user enable r1.service",
            "systemctl --user start r1.service",
            "loginctl show-user ann -p Linger",
        ]
    );
    assert_eq!(report.platform, Platform::Systemd);
    assert_eq!(report.unit_path, unit);
    assert_eq!(report.linger, Some(false));
    assert_eq!(
        report.lines,
        [
            format!("wrote {}", unit.display()),
            "enabled and started r1.service (systemd user unit): `r1 serve --status` shows its state, `journalctl --user -u r1.service` its output".to_owned(),
            "hint: lingering is off for ann, so r1 stops when you log out; run `loginctl enable-linger ann` to keep it running".to_owned(),
        ]
    );
    assert_eq!(mode(&unit), 0o644);
    let written = fs::read_to_string(&unit).unwrap();
    assert_eq!(written, render_systemd_unit(&o).unwrap());
    let leftovers: Vec<_> = fs::read_dir(unit.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["r1.service"], "no temp files left");
    assert_verifies(&t.path().join("check"), &written);
}

#[test]
fn install_with_linger_on_gives_no_hint() {
    let t = tempfile::tempdir().unwrap();
    let bin = fake_exe(&t.path().join("bin/r1"));
    let o = systemd_opts(&t, t.path().join("home"), bin);

    // loginctl says yes.
    let log = Log::default();
    let mut fake = Fake::new(&log);
    fake.linger = "Linger=yes";
    let report = install_with(&o, &mut fake, &mut stopper(&log)).unwrap();
    assert_eq!(report.linger, Some(true));
    assert_eq!(report.lines.len(), 2, "{:?}", report.lines);
    assert!(!report.lines.iter().any(|l| l.contains("linger")));

    // The flag file says yes: loginctl is not asked. (A re-install: `restart`.)
    fs::create_dir_all(t.path().join("linger")).unwrap();
    fs::write(t.path().join("linger/ann"), "").unwrap();
    let log = Log::default();
    let report = install_with(&o, &mut Fake::new(&log), &mut stopper(&log)).unwrap();
    assert_eq!(report.linger, Some(true));
    assert_eq!(report.lines.len(), 2, "{:?}", report.lines);
    assert_eq!(
        logged(&log),
        [
            "systemctl --user show --property=Version",
            "stop-running",
            "systemctl --user daemon-reload",
            "systemctl --user enable r1.service",
            "systemctl --user restart r1.service",
        ]
    );
}

#[test]
fn failing_start_removes_the_unit_again() {
    let t = tempfile::tempdir().unwrap();
    let bin = fake_exe(&t.path().join("bin/r1"));
    let o = systemd_opts(&t, t.path().join("home"), bin);
    let unit = t.path().join("config/systemd/user/r1.service");
    let log = Log::default();
    let mut fake = Fake::new(&log);
    fake.fail = Some("systemctl --user start r1.service".into());
    let e = install_with(&o, &mut fake, &mut stopper(&log)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert_eq!(
        e.data().unwrap()["reason"],
        serde_json::json!("command_failed")
    );
    assert_eq!(
        e.to_string(),
        format!(
            "`systemctl --user start r1.service` failed (exit 1: Job for r1.service failed.; See \"systemctl --user status r1.service\" for details.); removed {} again; see `journalctl --user -u r1.service`",
            unit.display()
        )
    );
    assert_eq!(
        logged(&log),
        [
            "systemctl --user show --property=Version",
            "stop-running",
            "systemctl --user daemon-reload",
            "systemctl --user enable r1.service",
            "systemctl --user start r1.service",
            "systemctl --user disable r1.service",
            "systemctl --user daemon-reload",
        ]
    );
    assert!(!unit.exists(), "unit removed");
    assert!(
        !t.path().join("config").exists(),
        "directories created for the unit removed too"
    );
}

#[test]
fn failing_enable_removes_the_unit_without_disable() {
    let t = tempfile::tempdir().unwrap();
    let bin = fake_exe(&t.path().join("bin/r1"));
    let o = systemd_opts(&t, t.path().join("home"), bin);
    // The unit dir exists already: it must stay.
    let dir = t.path().join("config/systemd/user");
    fs::create_dir_all(&dir).unwrap();
    let log = Log::default();
    let mut fake = Fake::new(&log);
    fake.fail = Some("systemctl --user enable r1.service".into());
    let e = install_with(&o, &mut fake, &mut stopper(&log)).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("`systemctl --user enable r1.service` failed (exit 1: "),
        "{e}"
    );
    assert_eq!(
        logged(&log),
        [
            "systemctl --user show --property=Version",
            "stop-running",
            "systemctl --user daemon-reload",
            "systemctl --user enable r1.service",
            "systemctl --user daemon-reload",
        ]
    );
    assert!(!dir.join("r1.service").exists());
    assert!(dir.is_dir(), "a directory that was there stays");
}

#[test]
fn failing_restart_on_reinstall_restores_the_previous_unit() {
    let t = tempfile::tempdir().unwrap();
    let bin = fake_exe(&t.path().join("bin/r1"));
    let o = systemd_opts(&t, t.path().join("home"), bin);
    let unit = t.path().join("config/systemd/user/r1.service");
    fs::create_dir_all(unit.parent().unwrap()).unwrap();
    fs::write(&unit, "[Service]\nExecStart=/old/r1 serve\n").unwrap();
    let log = Log::default();
    let mut fake = Fake::new(&log);
    fake.fail = Some("systemctl --user restart r1.service".into());
    let e = install_with(&o, &mut fake, &mut stopper(&log)).unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("; restored the previous {}; ", unit.display())),
        "{e}"
    );
    assert_eq!(
        fs::read_to_string(&unit).unwrap(),
        "[Service]\nExecStart=/old/r1 serve\n"
    );
    // The previous unit was enabled by its own install: not disabled here.
    assert!(
        !logged(&log).iter().any(|c| c.contains("disable")),
        "{:?}",
        logged(&log)
    );
}

#[test]
fn manager_not_answering_touches_nothing() {
    let t = tempfile::tempdir().unwrap();
    let bin = fake_exe(&t.path().join("bin/r1"));
    let mut o = systemd_opts(&t, t.path().join("home"), bin);
    let run = t.path().join("run");
    fs::create_dir(&run).unwrap();
    o.xdg_runtime_dir = Some(run.clone());
    let log = Log::default();
    let mut runner = {
        let log = log.clone();
        move |p: &str, a: &[&str]| -> io::Result<CommandOutput> {
            log.borrow_mut().push(format!("{p} {}", a.join(" ")));
            Ok(CommandOutput::failed(
                1,
                "Failed to connect to bus: No medium found\n",
            ))
        }
    };
    let e = install_with(&o, &mut runner, &mut stopper(&log)).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "no systemd user instance is running ({}/systemd/private is missing; `systemctl --user show --property=Version`: exit 1: Failed to connect to bus: No medium found); nothing was installed; log in through a session that starts `systemd --user` (or run `loginctl enable-linger ann`), or run `r1 serve` in the foreground instead",
            run.display()
        )
    );
    assert_eq!(logged(&log), ["systemctl --user show --property=Version"]);
    assert!(!t.path().join("config").exists());

    // systemctl missing altogether.
    let mut missing = |_: &str, _: &[&str]| -> io::Result<CommandOutput> {
        Err(io::Error::from(io::ErrorKind::NotFound))
    };
    o.xdg_runtime_dir = None;
    let e = install_with(&o, &mut missing, &mut || Ok(())).unwrap_err();
    assert!(
        e.to_string().starts_with(
            "no systemd user instance is running (XDG_RUNTIME_DIR is not set; `systemctl --user show --property=Version`: not found on PATH); nothing was installed; "
        ),
        "{e}"
    );
}

#[test]
fn stop_callback_error_aborts_before_writing() {
    let t = tempfile::tempdir().unwrap();
    let bin = fake_exe(&t.path().join("bin/r1"));
    let o = systemd_opts(&t, t.path().join("home"), bin);
    let log = Log::default();
    let mut stop = || {
        Err(r1_core::Error::new(
            ErrorKind::Timeout,
            "the running daemon did not exit within 10s",
        ))
    };
    let e = install_with(&o, &mut Fake::new(&log), &mut stop).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert_eq!(logged(&log), ["systemctl --user show --property=Version"]);
    assert!(!t.path().join("config").exists());
}

#[test]
fn install_refuses_a_missing_binary_before_anything_else() {
    let t = tempfile::tempdir().unwrap();
    let o = systemd_opts(&t, t.path().join("home"), t.path().join("nope/r1"));
    let log = Log::default();
    let e = install_with(&o, &mut Fake::new(&log), &mut stopper(&log)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.message().contains("nope/r1"), "{e}");
    assert!(logged(&log).is_empty());

    let not_exec = t.path().join("r1.txt");
    fs::write(&not_exec, "").unwrap();
    let o = systemd_opts(&t, t.path().join("home"), not_exec);
    let e = install_with(&o, &mut Fake::new(&log), &mut stopper(&log)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidParams);
    assert!(e.message().contains("is not an executable file"), "{e}");
    assert!(logged(&log).is_empty());
}

// ---------------------------------------------------------------------------------
// status and uninstall with a fake systemctl

#[test]
fn status_maps_is_active_to_running_stopped_not_installed() {
    let t = tempfile::tempdir().unwrap();
    let o = systemd_opts(&t, t.path().join("home"), "/usr/bin/r1".into());
    let log = Log::default();
    assert_eq!(
        status_with(&o, &mut Fake::new(&log)).unwrap(),
        Status::NotInstalled
    );
    assert!(
        logged(&log).is_empty(),
        "no unit file: no need to ask systemd"
    );

    let unit = o.unit_path().unwrap();
    fs::create_dir_all(unit.parent().unwrap()).unwrap();
    fs::write(&unit, "").unwrap();
    for (is_active, want) in [
        ("active", Status::Running),
        ("reloading", Status::Running),
        ("inactive", Status::Stopped),
        ("failed", Status::Stopped),
        ("activating", Status::Stopped),
        ("deactivating", Status::Stopped),
    ] {
        let log = Log::default();
        let mut fake = Fake::new(&log);
        fake.is_active = is_active;
        assert_eq!(status_with(&o, &mut fake).unwrap(), want, "{is_active}");
        assert_eq!(logged(&log), ["systemctl --user is-active r1.service"]);
    }
}

#[test]
fn status_lines_and_exit_codes() {
    assert_eq!(
        Status::Running.line(Platform::Systemd),
        "r1: running (systemd)"
    );
    assert_eq!(
        Status::Stopped.line(Platform::Launchd),
        "r1: stopped (launchd)"
    );
    assert_eq!(
        Status::NotInstalled.line(Platform::Systemd),
        "r1: not-installed (systemd)"
    );
    assert_eq!(Status::Running.exit_code(), 0);
    assert_eq!(Status::Stopped.exit_code(), 3);
    assert_eq!(Status::NotInstalled.exit_code(), 4);
    assert_eq!(Platform::WindowsService.as_str(), "windows-service");
}

#[test]
fn uninstall_stops_disables_removes_reloads() {
    let t = tempfile::tempdir().unwrap();
    let bin = fake_exe(&t.path().join("bin/r1"));
    let o = systemd_opts(&t, t.path().join("home"), bin);
    let log = Log::default();
    let report = install_with(&o, &mut Fake::new(&log), &mut stopper(&log)).unwrap();
    let log = Log::default();
    let line = uninstall_with(&o, &mut Fake::new(&log)).unwrap();
    assert_eq!(
        line,
        format!(
            "r1: uninstalled (systemd): stopped and disabled r1.service, removed {}",
            report.unit_path.display()
        )
    );
    assert_eq!(
        logged(&log),
        [
            "systemctl --user show --property=Version",
            "systemctl --user stop r1.service",
            "systemctl --user disable r1.service",
            "systemctl --user daemon-reload",
        ]
    );
    assert!(!report.unit_path.exists());

    // Again: nothing installed is a no-op, not an error, and asks systemd nothing.
    let log = Log::default();
    assert_eq!(
        uninstall_with(&o, &mut Fake::new(&log)).unwrap(),
        format!(
            "r1: not installed (systemd): nothing to uninstall ({} does not exist)",
            report.unit_path.display()
        )
    );
    assert!(logged(&log).is_empty());
}

#[test]
fn uninstall_keeps_the_unit_when_stop_fails() {
    let t = tempfile::tempdir().unwrap();
    let o = systemd_opts(&t, t.path().join("home"), "/usr/bin/r1".into());
    let unit = o.unit_path().unwrap();
    fs::create_dir_all(unit.parent().unwrap()).unwrap();
    fs::write(&unit, "x").unwrap();
    let log = Log::default();
    let mut fake = Fake::new(&log);
    fake.fail = Some("systemctl --user stop r1.service".into());
    let e = uninstall_with(&o, &mut fake).unwrap_err();
    assert!(
        e.to_string()
            .ends_with(&format!("; {} is still installed", unit.display())),
        "{e}"
    );
    assert!(unit.exists());
    assert_eq!(
        logged(&log),
        [
            "systemctl --user show --property=Version",
            "systemctl --user stop r1.service",
        ]
    );
}

// ---------------------------------------------------------------------------------
// launchd with a fake launchctl

#[test]
fn launchd_install_status_uninstall() {
    let t = tempfile::tempdir().unwrap();
    let bin = fake_exe(&t.path().join("bin/r1"));
    let home = t.path().join("home");
    let o = launchd_opts(&t, home.clone(), bin);
    let plist = t.path().join("Library/LaunchAgents/dev.relayone.r1.plist");
    assert_eq!(o.unit_path().unwrap(), plist);

    let log = Log::default();
    let report = install_with(&o, &mut Fake::new(&log), &mut stopper(&log)).unwrap();
    let p = plist.to_str().unwrap();
    assert_eq!(
        logged(&log),
        [
            "launchctl print gui/501".to_owned(),
            "stop-running".to_owned(),
            "launchctl enable gui/501/dev.relayone.r1".to_owned(),
            format!("launchctl bootstrap gui/501 {p}"),
        ]
    );
    assert_eq!(report.linger, None);
    assert_eq!(report.lines[0], format!("wrote {p}"));
    assert_eq!(mode(&plist), 0o644);
    assert_eq!(
        fs::read_to_string(&plist).unwrap(),
        render_launchd_plist(&o).unwrap()
    );
    assert_eq!(mode(&home.join("log")), 0o700, "launchd needs the log dir");
    assert_eq!(mode(&home), 0o700);

    let log = Log::default();
    assert_eq!(
        status_with(&o, &mut Fake::new(&log)).unwrap(),
        Status::Running
    );
    assert_eq!(logged(&log), ["launchctl print gui/501/dev.relayone.r1"]);
    let mut fake = Fake::new(&log);
    fake.launchd_print = "gui/501/dev.relayone.r1 = {\n\tstate = not running\n}";
    assert_eq!(status_with(&o, &mut fake).unwrap(), Status::Stopped);

    // bootout of an agent that is not loaded (exit 113) still uninstalls.
    let log = Log::default();
    let mut runner = {
        let log = log.clone();
        move |p: &str, a: &[&str]| -> io::Result<CommandOutput> {
            let line = format!("{p} {}", a.join(" "));
            log.borrow_mut().push(line.clone());
            Ok(if a[0] == "bootout" {
                CommandOutput::failed(
                    113,
                    "Boot-out failed: 113: Could not find specified service",
                )
            } else {
                CommandOutput::ok("")
            })
        }
    };
    assert_eq!(
        uninstall_with(&o, &mut runner).unwrap(),
        format!("r1: uninstalled (launchd): unloaded dev.relayone.r1, removed {p}")
    );
    assert_eq!(
        logged(&log),
        [
            "launchctl print gui/501",
            "launchctl bootout gui/501/dev.relayone.r1",
        ]
    );
    assert!(!plist.exists());
    let log = Log::default();
    assert_eq!(
        status_with(&o, &mut Fake::new(&log)).unwrap(),
        Status::NotInstalled
    );
}

#[test]
fn launchd_failing_bootstrap_removes_plist_and_created_dirs() {
    let t = tempfile::tempdir().unwrap();
    let bin = fake_exe(&t.path().join("bin/r1"));
    let o = launchd_opts(&t, t.path().join("home"), bin);
    let plist = o.unit_path().unwrap();
    let log = Log::default();
    let mut fake = Fake::new(&log);
    let bootstrap = format!("launchctl bootstrap gui/501 {}", plist.display());
    fake.fail = Some(bootstrap);
    let e = install_with(&o, &mut fake, &mut stopper(&log)).unwrap_err();
    assert!(
        e.to_string()
            .ends_with(&format!("; removed {} again", plist.display())),
        "{e}"
    );
    assert!(!plist.exists());
    assert!(!t.path().join("Library").exists());
    assert!(!t.path().join("home").exists(), "log dir and home removed");
}

// ---------------------------------------------------------------------------------
// unsupported platforms

#[test]
fn windows_and_unsupported_platforms_say_so() {
    let t = tempfile::tempdir().unwrap();
    for platform in [Platform::WindowsService, Platform::Unsupported] {
        let mut o = systemd_opts(&t, t.path().join("home"), "/usr/bin/r1".into());
        o.platform = platform;
        let log = Log::default();
        let errors = [
            install_with(&o, &mut Fake::new(&log), &mut stopper(&log)).unwrap_err(),
            uninstall_with(&o, &mut Fake::new(&log)).unwrap_err(),
            status_with(&o, &mut Fake::new(&log)).unwrap_err(),
        ];
        for e in errors {
            assert_eq!(
                e.data().unwrap()["reason"],
                serde_json::json!("unsupported")
            );
            assert!(!e.message().contains('\n'));
            if platform == Platform::WindowsService {
                assert!(e.message().contains(WINDOWS_SERVICE_NAME), "{e}");
            }
        }
        assert!(logged(&log).is_empty());
    }
    assert_eq!(WINDOWS_SERVICE_NAME, "r1.daemon");
}
