//! Running `systemctl`, `loginctl` and `launchctl`, behind a trait so tests can
//! record the command sequence and script the answers.

use std::io;
use std::process::{Command, Stdio};

/// What a finished command reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
}

impl CommandOutput {
    /// Exit 0 with `stdout`.
    pub fn ok(stdout: impl Into<String>) -> CommandOutput {
        CommandOutput {
            code: Some(0),
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    /// Exit `code` with `stderr`.
    pub fn failed(code: i32, stderr: impl Into<String>) -> CommandOutput {
        CommandOutput {
            code: Some(code),
            stdout: String::new(),
            stderr: stderr.into(),
        }
    }

    /// True on exit status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs a service-manager command to completion. `Err` means it could not be run at
/// all (`ErrorKind::NotFound`: not installed); a non-zero exit is an `Ok` output.
///
/// Closures `FnMut(&str, &[&str]) -> io::Result<CommandOutput>` implement it, which is
/// what tests use.
pub trait CommandRunner {
    /// Runs `program` with `args` and waits for it.
    fn run(&mut self, program: &str, args: &[&str]) -> io::Result<CommandOutput>;
}

impl<F> CommandRunner for F
where
    F: FnMut(&str, &[&str]) -> io::Result<CommandOutput>,
{
    fn run(&mut self, program: &str, args: &[&str]) -> io::Result<CommandOutput> {
        self(program, args)
    }
}

/// Runs commands for real, found on `PATH`, with stdin closed and the C locale (r1
/// parses `is-active` and `Linger=` output, and its error lines are read by people
/// who may not share the locale of the messages anyway).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run(&mut self, program: &str, args: &[&str]) -> io::Result<CommandOutput> {
        let out = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .env("LC_ALL", "C")
            // Never page or prompt: r1 reads the output itself.
            .env("SYSTEMD_PAGER", "")
            .output()?;
        Ok(CommandOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}
