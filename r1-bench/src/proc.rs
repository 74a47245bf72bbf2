//! Child processes: a daemon under test (`r1 serve` or the embedded bench daemon)
//! and floor servers. Every child is killed when its handle drops.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// A daemon process and what its `daemon.json` says.
pub struct DaemonProc {
    child: Option<Child>,
    /// Its pid.
    pub pid: u32,
    /// The unix socket.
    pub sock: PathBuf,
    /// The loopback port, if it listens on one.
    pub port: Option<u16>,
    /// The bearer token.
    pub token: String,
    /// Spawn → `daemon.json` written (with our pid).
    pub ready_after: Duration,
}

impl DaemonProc {
    /// `r1 serve` with `R1_HOME=home`, socket at `sock`.
    pub fn r1_serve(r1: &Path, home: &Path, sock: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let mut cmd = Command::new(r1);
        cmd.arg("serve").arg("--socket").arg(sock).args(extra);
        DaemonProc::spawn(cmd, home, sock)
    }

    /// This binary's embedded daemon (with the `burst` and `sink` drivers).
    ///
    /// `R1_BENCH_DAEMON_WRAP` (e.g. `valgrind --tool=callgrind --dump-instr=no`)
    /// runs it under a profiler: docs/benchmarks.md shows how.
    pub fn bench_daemon(
        bench: &Path,
        home: &Path,
        sock: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let wrap = std::env::var("R1_BENCH_DAEMON_WRAP").unwrap_or_default();
        let mut words = wrap.split_whitespace();
        let mut cmd = match words.next() {
            Some(prog) => {
                let mut c = Command::new(prog);
                c.args(words).arg(bench);
                c
            }
            None => Command::new(bench),
        };
        cmd.arg("daemon").arg("--socket").arg(sock).args(extra);
        DaemonProc::spawn(cmd, home, sock)
    }

    fn spawn(mut cmd: Command, home: &Path, sock: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(home)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(home.with_extension("stderr"))?;
        cmd.env("R1_HOME", home)
            .env("R1_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let t0 = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        let pid = child.id();
        let mut me = DaemonProc {
            child: Some(child),
            pid,
            sock: sock.to_path_buf(),
            port: None,
            token: String::new(),
            ready_after: Duration::ZERO,
        };
        let disc = wait_for_discovery(home, pid, Duration::from_secs(120), me.child.as_mut())?;
        me.ready_after = t0.elapsed();
        me.port = disc
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok());
        me.token = disc
            .get("token")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok(me)
    }

    /// VmRSS in KiB.
    pub fn rss_kb(&self) -> anyhow::Result<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .context("no VmRSS")
    }

    /// Open descriptors.
    pub fn fd_count(&self) -> anyhow::Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", self.pid))?.count())
    }

    /// Graceful stop (SIGTERM), waiting for exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.signal_and_wait(libc::SIGTERM, Duration::from_secs(60))
    }

    /// SIGKILL (a crash), waiting for exit.
    pub fn crash(mut self) -> anyhow::Result<()> {
        self.signal_and_wait(libc::SIGKILL, Duration::from_secs(10))
    }

    fn signal_and_wait(&mut self, sig: i32, limit: Duration) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = libc::pid_t::try_from(child.id())?;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid, sig) };
        let t0 = Instant::now();
        loop {
            if let Some(st) = child.try_wait()? {
                if sig == libc::SIGTERM && !st.success() {
                    bail!("daemon exited with {st} after SIGTERM");
                }
                return Ok(());
            }
            if t0.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                bail!("daemon did not exit within {limit:?} of signal {sig}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `home/daemon.json` until it names `pid` (a file left by a crashed daemon
/// names another). Returns the parsed file.
pub fn wait_for_discovery(
    home: &Path,
    pid: u32,
    limit: Duration,
    mut child: Option<&mut Child>,
) -> anyhow::Result<Value> {
    let path = home.join("daemon.json");
    let t0 = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(v) = serde_json::from_str::<Value>(&text)
            && v.get("pid").and_then(Value::as_u64) == Some(u64::from(pid))
        {
            return Ok(v);
        }
        if let Some(c) = child.as_deref_mut()
            && let Some(st) = c.try_wait()?
        {
            let log = std::fs::read_to_string(home.with_extension("stderr")).unwrap_or_default();
            bail!(
                "daemon exited ({st}) before writing {}: {}",
                path.display(),
                log.lines().rev().take(5).collect::<Vec<_>>().join(" / ")
            );
        }
        if t0.elapsed() > limit {
            bail!("no {} after {limit:?}", path.display());
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// `home/daemon.json`, parsed, if there is one.
pub fn read_discovery(home: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(home.join("daemon.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// A floor server: this binary's `floor …` subcommand. It prints one line when it
/// listens (e.g. its port); the handle kills it on drop.
pub struct FloorProc {
    child: Child,
    /// The line the floor printed when ready.
    pub ready: String,
}

impl FloorProc {
    /// Starts `bench floor <args…>` and waits for its ready line.
    pub fn start(bench: &Path, args: &[&str]) -> anyhow::Result<FloorProc> {
        let mut child = Command::new(bench)
            .arg("floor")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start a floor server")?;
        let out = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        if line.is_empty() {
            let _ = child.kill();
            bail!("floor server {args:?} exited before it was ready");
        }
        Ok(FloorProc {
            child,
            ready: line.trim().to_owned(),
        })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The ready line as a port.
    pub fn port(&self) -> anyhow::Result<u16> {
        self.ready
            .parse()
            .with_context(|| format!("floor said {:?}", self.ready))
    }
}

impl Drop for FloorProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command to completion, timing it; fails on a non-zero exit.
pub fn time_command(cmd: &mut Command) -> anyhow::Result<(Duration, Vec<u8>)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let took = t0.elapsed();
    if !out.status.success() {
        bail!(
            "{cmd:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((took, out.stdout))
}
