//! Process groups for driver children (DESIGN §6).
//!
//! Every child a driver starts leads its own process group (`process_group(0)`), so
//! pause, resume and cancel reach everything the child started, not just the child:
//! [`ProcessGroup`] sends the signals, [`GroupGuard`] kills a group whose driver went
//! away without reaping it, and [`ExitDrain`] bounds how long a driver waits for the
//! pipes of a child that exited while something it left behind still holds them.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::time::Instant;

use super::DriverSpec;

/// How long [`Control::Cancel`](super::Control::Cancel) waits after SIGTERM before
/// SIGKILL (DESIGN §6).
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// How long [`Control::Stop`](super::Control::Stop) waits after SIGTERM before SIGKILL.
/// Shorter than [`CANCEL_GRACE`] so a driver can still record the interrupted
/// `tool.end` within the daemon's own shutdown grace (5 s by default).
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// How long a driver keeps reading a child's pipes after the child exited before it
/// kills the group (a background grandchild holding them open), and again after that
/// before it stops reading (a process that left the group holds them).
pub const DRAIN_WINDOW: Duration = Duration::from_millis(200);

/// The kill graces of a driver; [`Default`] is [`CANCEL_GRACE`] / [`STOP_GRACE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KillGrace {
    /// SIGTERM → SIGKILL delay for [`Control::Cancel`](super::Control::Cancel).
    pub cancel: Duration,
    /// SIGTERM → SIGKILL delay for [`Control::Stop`](super::Control::Stop).
    pub stop: Duration,
}

impl Default for KillGrace {
    fn default() -> Self {
        KillGrace {
            cancel: CANCEL_GRACE,
            stop: STOP_GRACE,
        }
    }
}

/// A process group a driver started; the pgid is the leader's pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessGroup {
    pgid: i32,
}

impl ProcessGroup {
    /// The group `pgid`; `None` for values that do not name one group (`0` means the
    /// caller's own group to `killpg`, `1` is init, negatives are not pgids).
    pub fn from_pgid(pgid: i32) -> Option<ProcessGroup> {
        (pgid > 1).then_some(ProcessGroup { pgid })
    }

    /// The group of a child spawned with `process_group(0)` (`None` once it is reaped).
    pub fn of_child(child: &tokio::process::Child) -> Option<ProcessGroup> {
        child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .and_then(ProcessGroup::from_pgid)
    }

    /// The process group id.
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// Sends `signal` to every process in the group. A group that is already gone is
    /// not an error (`Ok(false)`).
    pub fn signal(&self, signal: Signal) -> std::io::Result<bool> {
        match killpg(Pid::from_raw(self.pgid), signal) {
            Ok(()) => Ok(true),
            Err(Errno::ESRCH) => Ok(false),
            Err(e) => Err(std::io::Error::from(e)),
        }
    }

    /// True while some process is in the group (signal 0 probe).
    pub fn exists(&self) -> bool {
        // EPERM: a member exists but is not ours to signal; still "exists".
        !matches!(killpg(Pid::from_raw(self.pgid), None), Err(Errno::ESRCH))
    }

    /// SIGSTOP: pause everything in the group.
    pub fn stop(&self) {
        self.send(Signal::SIGSTOP);
    }

    /// SIGCONT: continue a stopped group.
    pub fn cont(&self) {
        self.send(Signal::SIGCONT);
    }

    /// SIGTERM then SIGCONT, so a stopped group wakes up and can act on the TERM.
    pub fn terminate(&self) {
        self.send(Signal::SIGTERM);
        self.send(Signal::SIGCONT);
    }

    /// SIGKILL: end everything in the group now.
    pub fn kill(&self) {
        self.send(Signal::SIGKILL);
    }

    fn send(&self, signal: Signal) {
        if let Err(error) = self.signal(signal) {
            tracing::warn!(pgid = self.pgid, signal = signal.as_str(), %error, "cannot signal process group");
        }
    }
}

/// Kills its group on drop unless disarmed: a driver future dropped mid-command (or
/// returning an error) must not leave the command running. The child itself is
/// spawned with `kill_on_drop`, so tokio reaps it.
#[derive(Debug)]
pub struct GroupGuard {
    group: ProcessGroup,
    armed: bool,
}

impl GroupGuard {
    /// Guards `group`.
    pub fn new(group: ProcessGroup) -> GroupGuard {
        GroupGuard { group, armed: true }
    }

    /// The leader was reaped and its pipes drained: leave the group alone.
    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            self.group.kill();
        }
    }
}

/// The pipe-drain clock that starts when a child exits (see [`DRAIN_WINDOW`]).
#[derive(Debug, Default)]
pub struct ExitDrain {
    deadline: Option<Instant>,
    killed: bool,
}

/// What to do when an [`ExitDrain`] deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainStep {
    /// The group was killed; keep reading a little longer.
    Killed,
    /// Still open after the kill: stop reading.
    GiveUp,
}

impl ExitDrain {
    /// The child exited: start the window.
    pub fn start(&mut self) {
        if self.deadline.is_none() && !self.killed {
            self.deadline = Some(Instant::now() + DRAIN_WINDOW);
        }
    }

    /// When the current window ends, if one is running.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The window ended with a pipe still open: the first time kill `group` and open a
    /// second window, the second time give up.
    pub fn expire(&mut self, group: &ProcessGroup) -> DrainStep {
        if self.killed {
            self.deadline = None;
            DrainStep::GiveUp
        } else {
            tracing::debug!(
                pgid = group.pgid(),
                "pipes still open after exit; killing the group"
            );
            group.kill();
            self.killed = true;
            self.deadline = Some(Instant::now() + DRAIN_WINDOW);
            DrainStep::Killed
        }
    }
}

/// A `tokio` command for a driver child: the workdir as `current_dir` and `PWD` (never
/// the daemon's cwd), `spec.env` added, its own process group, piped stdout/stderr,
/// killed if dropped unreaped.
pub fn command(program: &str, args: &[String], spec: &DriverSpec) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(&spec.workdir)
        .envs(&spec.env)
        // After `spec.env`: PWD always names the workdir.
        .env("PWD", &spec.workdir)
        // Lets a restarted daemon recognise (and only then kill) a group this
        // session left running when the previous daemon died.
        .env("R1_SESSION_ID", &spec.session_id)
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// The name of the signal that ended `status` (`"SIGKILL"`), if one did.
pub fn signal_name(status: &ExitStatus) -> Option<String> {
    status.signal().map(|n| match Signal::try_from(n) {
        Ok(s) => s.as_str().to_owned(),
        Err(_) => format!("signal {n}"),
    })
}

/// A short description of a non-successful `status` (`exited with code 3`,
/// `killed by SIGKILL`); `None` on success.
pub fn failure_message(status: &ExitStatus) -> Option<String> {
    if status.success() {
        None
    } else if let Some(code) = status.code() {
        Some(format!("exited with code {code}"))
    } else if let Some(sig) = signal_name(status) {
        Some(format!("killed by {sig}"))
    } else {
        Some(format!("ended with {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgid_zero_and_one_are_refused() {
        assert_eq!(ProcessGroup::from_pgid(0), None);
        assert_eq!(ProcessGroup::from_pgid(1), None);
        assert_eq!(ProcessGroup::from_pgid(-5), None);
        assert_eq!(ProcessGroup::from_pgid(42).map(|g| g.pgid()), Some(42));
    }

    #[test]
    fn messages_name_code_and_signal() {
        let ok = ExitStatus::from_raw(0);
        let three = ExitStatus::from_raw(3 << 8);
        let killed = ExitStatus::from_raw(libc::SIGKILL);
        assert_eq!(failure_message(&ok), None);
        assert_eq!(
            failure_message(&three).as_deref(),
            Some("exited with code 3")
        );
        assert_eq!(
            failure_message(&killed).as_deref(),
            Some("killed by SIGKILL")
        );
        assert_eq!(signal_name(&killed).as_deref(), Some("SIGKILL"));
        assert_eq!(signal_name(&three), None);
    }
}
