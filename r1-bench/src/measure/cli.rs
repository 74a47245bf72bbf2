//! 3 and 4: the CLI as a user runs it — a fresh process per question.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::Ctx;
use crate::proc::{DaemonProc, read_discovery, time_command};
use crate::report::Row;
use crate::stats::median_ms;

/// Why `r1 ctl …` cannot be measured with this binary, if it cannot.
fn ctl_missing(r1: &Path) -> anyhow::Result<Option<String>> {
    let out = Command::new(r1)
        .args(["ctl", "--help"])
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        return Ok(None);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Ok(Some(format!(
        "this r1 has no `ctl` subcommand yet ({})",
        err.lines().next().unwrap_or("").trim()
    )))
}

fn r1_ctl(r1: &Path, home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(r1);
    c.arg("ctl").args(args).env("R1_HOME", home);
    c
}

/// 3: `r1 ctl info --json` against a running daemon, beside `watchman version` and
/// `tmux list-sessions` against theirs.
pub fn ctl_info(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    const NAME: &str = "`r1 ctl info --json` against a running daemon, median";
    const TARGET: &str = "faster than the peer (median)";
    if let Some(why) = ctl_missing(&ctx.r1)? {
        return Ok(vec![
            Row::not_measured("3a", NAME, TARGET, &why),
            Row::not_measured("3b", NAME, TARGET, &why),
        ]);
    }
    let dir = ctx.fresh_dir("m3")?;
    let home = dir.join("home");
    let daemon = DaemonProc::r1_serve(&ctx.r1, &home, &ctx.sock("m3"), &[])?;
    let runs = ctx.size(50, 5);

    let watchman = Watchman::start(&dir).ok();
    let tmux = Tmux::start(&dir).ok();
    let (mut r, mut w, mut t) = (Vec::new(), Vec::new(), Vec::new());
    // Warm the page cache for each binary once.
    let (_, out) = time_command(&mut r1_ctl(&ctx.r1, &home, &["info", "--json"]))?;
    let v: serde_json::Value = serde_json::from_slice(&out)?;
    anyhow::ensure!(
        v.get("pid").and_then(serde_json::Value::as_u64) == Some(u64::from(daemon.pid)),
        "r1 ctl info answered for another daemon: {v}"
    );
    if let Some(wm) = &watchman {
        time_command(&mut wm.version())?;
    }
    if let Some(tm) = &tmux {
        time_command(&mut tm.list())?;
    }
    for _ in 0..runs {
        r.push(time_command(&mut r1_ctl(&ctx.r1, &home, &["info", "--json"]))?.0);
        if let Some(wm) = &watchman {
            w.push(time_command(&mut wm.version())?.0);
        }
        if let Some(tm) = &tmux {
            t.push(time_command(&mut tm.list())?.0);
        }
    }
    drop(watchman);
    drop(tmux);
    daemon.stop()?;
    let value = median_ms(&r);
    let mut rows = Vec::new();
    for (id, peer, samples, missing) in [
        (
            "3a",
            "`watchman version`",
            &w,
            "watchman is not installed (apt-get install watchman)",
        ),
        (
            "3b",
            "`tmux list-sessions`",
            &t,
            "tmux is not installed (apt-get install tmux)",
        ),
    ] {
        if samples.is_empty() {
            rows.push(Row::not_measured(id, NAME, TARGET, missing));
            continue;
        }
        let row = Row::new(id, NAME, value, "ms").floor(peer, median_ms(samples));
        let ok = row.ratio.is_some_and(|x| x < 1.0);
        rows.push(
            row.target(TARGET, ok)
                .note(format!("{runs} runs each, interleaved")),
        );
    }
    Ok(rows)
}

/// A private watchman server (`--foreground`, own socket, state and log).
struct Watchman {
    child: std::process::Child,
    sock: std::path::PathBuf,
}

impl Watchman {
    fn start(dir: &Path) -> anyhow::Result<Watchman> {
        let sock = dir.join("watchman.sock");
        let child = Command::new("watchman")
            .arg("--foreground")
            .arg(format!("--sockname={}", sock.display()))
            .arg(format!(
                "--statefile={}",
                dir.join("watchman.state").display()
            ))
            .arg(format!("--logfile={}", dir.join("watchman.log").display()))
            .arg(format!("--pidfile={}", dir.join("watchman.pid").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let w = Watchman { child, sock };
        for _ in 0..500 {
            if w.sock.exists() && time_command(&mut w.version()).is_ok() {
                return Ok(w);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        anyhow::bail!("watchman did not come up")
    }

    fn version(&self) -> Command {
        let mut c = Command::new("watchman");
        c.arg(format!("--sockname={}", self.sock.display()))
            .arg("--no-spawn")
            .arg("version");
        c
    }
}

impl Drop for Watchman {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private tmux server with one detached session.
struct Tmux {
    sock: std::path::PathBuf,
}

impl Tmux {
    fn start(dir: &Path) -> anyhow::Result<Tmux> {
        let sock = dir.join("tmux.sock");
        let t = Tmux { sock };
        time_command(
            Command::new("tmux")
                .env_remove("TMUX")
                .arg("-S")
                .arg(&t.sock)
                .args(["new-session", "-d", "-s", "bench"]),
        )?;
        Ok(t)
    }

    fn list(&self) -> Command {
        let mut c = Command::new("tmux");
        c.env_remove("TMUX")
            .arg("-S")
            .arg(&self.sock)
            .arg("list-sessions");
        c
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.sock)
            .arg("kill-server")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// 4: `r1 ctl info` with no daemon running, until its answer (it spawns one).
pub fn auto_spawn(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    const NAME: &str = "auto-spawn: `r1 ctl info` with no daemon, until its answer, median";
    const TARGET: &str = "≤ 150 ms";
    if let Some(why) = ctl_missing(&ctx.r1)? {
        return Ok(vec![Row::not_measured("4", NAME, TARGET, &why)]);
    }
    let runs = ctx.size(10, 2);
    let (mut spawn, mut floor) = (Vec::new(), Vec::new());
    let mut version = Command::new(&ctx.r1);
    version.arg("--version");
    time_command(&mut version)?;
    for i in 0..runs {
        let home = ctx.fresh_dir(&format!("m4-{i}"))?.join("home");
        floor.push(time_command(&mut version)?.0);
        let took = time_command(&mut r1_ctl(&ctx.r1, &home, &["info"]));
        // Whatever happened, stop the daemon it may have started.
        let stopped = time_command(&mut r1_ctl(&ctx.r1, &home, &["shutdown"]));
        if stopped.is_err()
            && let Some(d) = read_discovery(&home)
            && let Some(pid) = d.get("pid").and_then(serde_json::Value::as_i64)
        {
            // SAFETY: kill(2) of the daemon this run started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        spawn.push(took?.0);
        stopped?;
    }
    let value = median_ms(&spawn);
    let row = Row::new("4", NAME, value, "ms").floor("`r1 --version` process", median_ms(&floor));
    Ok(vec![
        row.target(TARGET, value <= 150.0)
            .note(format!("{runs} runs, a fresh R1_HOME each")),
    ])
}
