//! `r1 serve` as a real process: started with a temporary home and socket, ready when
//! its `daemon.json` names its pid, killed (SIGKILL) or stopped (SIGTERM) on demand and
//! always killed when the guard drops, even when the test panics.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a daemon may take to become ready (a debug build on a loaded 2-core box).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The `r1` binary under test.
pub fn r1_bin() -> &'static str {
    env!("CARGO_BIN_EXE_r1")
}

/// A running `r1 serve`.
pub struct DaemonProc {
    child: Option<Child>,
    /// Its pid.
    pub pid: u32,
    /// `R1_HOME`.
    pub home: PathBuf,
    /// The unix socket.
    pub sock: PathBuf,
    /// Where its stderr goes (shown when something fails).
    pub stderr_path: PathBuf,
}

/// How to start one.
#[derive(Debug, Clone)]
pub struct ServeOpts {
    /// `R1_HOME`.
    pub home: PathBuf,
    /// `--socket`.
    pub sock: PathBuf,
    /// Where stderr goes.
    pub stderr_path: PathBuf,
    /// Extra `r1 serve` flags (`--no-tcp` is added unless `tcp`).
    pub args: Vec<String>,
    /// Leave the loopback listener on.
    pub tcp: bool,
}

impl ServeOpts {
    /// Home `<dir>/home`, socket `<dir>/s.sock`, stderr `<dir>/serve-<n>.stderr`.
    pub fn in_dir(dir: &Path) -> ServeOpts {
        ServeOpts {
            home: dir.join("home"),
            sock: dir.join("s.sock"),
            stderr_path: dir.join("serve.stderr"),
            args: Vec::new(),
            tcp: false,
        }
    }
}

impl DaemonProc {
    /// Starts `r1 serve` and waits until it is ready.
    pub fn start(opts: &ServeOpts) -> DaemonProc {
        let mut d = DaemonProc::spawn(opts);
        if let Err(e) = d.wait_ready(READY_TIMEOUT) {
            let log = d.stderr();
            panic!("daemon did not become ready: {e}\n--- stderr ---\n{log}");
        }
        d
    }

    /// Starts `r1 serve` without waiting.
    pub fn spawn(opts: &ServeOpts) -> DaemonProc {
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(&opts.stderr_path)
            .expect("stderr file");
        // `R1_TEST_SERVE_WRAPPER` (diagnosis only, e.g. `heaptrack -o /tmp/r1`): run
        // `r1 serve` under a wrapper; the daemon's pid is then taken from discovery.
        let wrapper: Vec<String> = std::env::var("R1_TEST_SERVE_WRAPPER")
            .map(|w| w.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let mut cmd = match wrapper.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg(r1_bin());
                c
            }
            None => Command::new(r1_bin()),
        };
        cmd.arg("serve").arg("--socket").arg(&opts.sock);
        if !opts.tcp {
            cmd.arg("--no-tcp");
        }
        cmd.args(&opts.args)
            .env("R1_HOME", &opts.home)
            .env_remove("R1_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        let child = cmd.spawn().expect("spawn r1 serve");
        DaemonProc {
            pid: child.id(),
            child: Some(child),
            home: opts.home.clone(),
            sock: opts.sock.clone(),
            stderr_path: opts.stderr_path.clone(),
        }
    }

    /// Polls (with a deadline) until `daemon.json` exists, validates, and names this
    /// process: a file left by a killed predecessor names another pid.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let path = self.home.join("daemon.json");
        loop {
            if let Some(status) = self.try_wait() {
                return Err(format!("r1 serve exited with {status} before it was ready"));
            }
            if let Ok(d) = r1_core::discovery::read_path(&path) {
                if d.pid == self.pid {
                    return Ok(());
                }
                if std::env::var_os("R1_TEST_SERVE_WRAPPER").is_some()
                    && d.pid != 0
                    && Path::new(&format!("/proc/{}", d.pid)).exists()
                    && nix::unistd::getppid().as_raw() != d.pid as i32
                {
                    // Under a wrapper the daemon is its descendant: signal it directly.
                    self.pid = d.pid;
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no daemon.json naming pid {} within {timeout:?}",
                    self.pid
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (graceful shutdown), then wait up to `timeout`; SIGKILL after that.
    /// Returns the exit status of a graceful exit.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let Some(mut c) = self.child.take() else {
            return Err("already reaped".into());
        };
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                let _ = c.kill();
                let _ = c.wait();
                return Err(format!("no exit within {timeout:?} of SIGTERM; killed"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.try_wait() {
                self.child = None;
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// What it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        self.kill9();
    }
}
