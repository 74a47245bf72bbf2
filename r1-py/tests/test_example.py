"""The Python example runs end to end (embedded daemon, and against a daemon found by dial)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import r1

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "python" / "stream_session.py"


def run_example(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        capture_output=True, text=True, timeout=60, env=env,
    )


def test_example_embedded(workdir: str) -> None:
    p = run_example("--embedded", "--workdir", workdir, "echo one; sleep 0.1; echo two")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("session sess_") and os.path.realpath(workdir) in lines[0]
    assert lines[1:3] == ["one", "two"]
    assert lines[3].startswith("exit 0 after")
    assert any("session.ended" in line and "cancelled" in line for line in lines)
    assert "damage: None" in lines[-1]


def test_example_against_a_running_daemon(daemon: r1.Daemon, workdir: str) -> None:
    env = dict(os.environ, R1_HOME=daemon.home)
    p = run_example("--workdir", workdir, "exit 4", env=env)
    assert p.returncode == 1
    assert "exit 4 after" in p.stdout
    with r1.dial(home=daemon.home, spawn=False) as c:
        assert len(c.sessions()) == 1


def test_example_reports_errors(tmp_path: Path) -> None:
    env = dict(os.environ, R1_HOME=str(tmp_path / "h"), R1_BIN=str(tmp_path / "missing-r1"))
    p = run_example("true", env=env)
    assert p.returncode == 1 and p.stderr.startswith("r1: ")
