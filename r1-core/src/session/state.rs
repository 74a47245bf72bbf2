//! Session states (DESIGN §6).

use serde::{Deserialize, Serialize};

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionState {
    /// The driver is running (possibly idle, waiting for input).
    Running,
    /// Paused by a user (or by shutdown, until the daemon exits).
    Paused,
    /// Finished: `session.ended` is its last record.
    Ended,
    /// Unfinished when the daemon started; `session.resume` restarts its driver.
    PausedReattachable,
    /// The journal has damage recovery must not cut; read-only.
    Damaged,
}

impl SessionState {
    /// The wire name (`running`, `paused-reattachable`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Running => "running",
            SessionState::Paused => "paused",
            SessionState::Ended => "ended",
            SessionState::PausedReattachable => "paused-reattachable",
            SessionState::Damaged => "damaged",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<SessionState> {
        Some(match s {
            "running" => SessionState::Running,
            "paused" => SessionState::Paused,
            "ended" => SessionState::Ended,
            "paused-reattachable" => SessionState::PausedReattachable,
            "damaged" => SessionState::Damaged,
            _ => return None,
        })
    }

    /// True while the session can still do work after a resume.
    pub fn is_unfinished(self) -> bool {
        matches!(
            self,
            SessionState::Running | SessionState::Paused | SessionState::PausedReattachable
        )
    }
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
