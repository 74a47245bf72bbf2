//! Every command in docs/operator-guide.md, run as written and in order.
//!
//! The `sh` blocks are joined into one bash script (so `$id` set in one block is
//! seen by the next) and run in a fresh `$HOME` with this build's `r1` first on
//! `PATH`. Blocks fenced `sh systemd` need a systemd user instance: where none
//! answers, each of their commands must fail with exactly one line of output and
//! leave no unit file behind.

use std::path::Path;
use std::process::Command;

const R1: &str = env!("CARGO_BIN_EXE_r1");
const GUIDE: &str = include_str!("../../docs/operator-guide.md");

struct Block {
    systemd: bool,
    text: String,
}

fn blocks() -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Option<Block> = None;
    for line in GUIDE.lines() {
        match (&mut current, line.trim_end()) {
            (None, fence) if fence.starts_with("```sh") => {
                let systemd = fence.trim_start_matches("```sh").trim() == "systemd";
                current = Some(Block {
                    systemd,
                    text: String::new(),
                });
            }
            (Some(_), "```") => out.extend(current.take()),
            (Some(b), l) => {
                b.text.push_str(l);
                b.text.push('\n');
            }
            (None, _) => {}
        }
    }
    out
}

fn systemd_user_available() -> bool {
    Command::new("systemctl")
        .args(["--user", "show", "--property=Version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Shuts the guide's daemon down whatever happens.
struct Cleanup<'a>(&'a Path, &'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = Command::new(R1)
            .args(["ctl", "shutdown", "--grace", "0"])
            .env("HOME", self.0)
            .env("XDG_RUNTIME_DIR", self.1)
            .env_remove("R1_HOME")
            .output();
    }
}

#[test]
fn every_guide_command_works_as_written() {
    let blocks = blocks();
    assert!(
        blocks.len() >= 10,
        "the guide's sh blocks were found ({})",
        blocks.len()
    );
    let systemd = systemd_user_available();
    let mut script = String::from("set -euo pipefail\n");
    for b in &blocks {
        if b.systemd && !systemd {
            for cmd in b.text.lines().filter(|l| !l.trim().is_empty()) {
                let must_fail = cmd.contains("--install");
                script.push_str(&format!(
                    "if out=$({cmd} 2>&1); then ok=1; else ok=0; fi\n\
                     if [ {must_fail} = true ] && [ $ok = 1 ]; then echo \"expected '{cmd}' to fail without systemd: $out\"; exit 1; fi\n\
                     if [ \"$(printf '%s\\n' \"$out\" | wc -l)\" -ne 1 ]; then echo \"'{cmd}' said more than one line: $out\"; exit 1; fi\n"
                ));
            }
        } else {
            script.push_str(&b.text);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let run = dir.path().join("run");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&run).unwrap();
    let _cleanup = Cleanup(&home, &run);
    let bin_dir = Path::new(R1).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("HOME", &home)
        .env("PATH", path)
        .env("XDG_RUNTIME_DIR", &run)
        .env_remove("R1_HOME")
        .env_remove("R1_BIN")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the guide's commands failed:\n--- script\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    // Spot checks that the commands did what the guide says.
    assert!(stdout.contains("hello from r1"), "{stdout}");
    assert!(stdout.contains("piped"), "{stdout}");
    assert!(stdout.contains("token rotated at"), "{stdout}");
    assert!(stdout.contains("#token="), "{stdout}");
    if !systemd {
        assert!(
            !home.join(".config/systemd/user/r1.service").exists(),
            "nothing half-installed"
        );
    }
}
