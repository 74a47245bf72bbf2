"""Fixtures: every test runs against real daemons in temporary homes.

``R1_HOME`` is pointed at a throwaway directory before anything imports r1, so even
a call that falls back to the default home never touches the real ``~/.r1``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_SANDBOX = tempfile.mkdtemp(prefix="r1-py-tests-")
os.environ["R1_HOME"] = os.path.join(_SANDBOX, "default-home")

import r1  # noqa: E402  (after R1_HOME is set)

REPO = Path(__file__).resolve().parents[2]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_SANDBOX, ignore_errors=True)


@pytest.fixture
def home(tmp_path: Path) -> str:
    """A fresh R1_HOME (not created: the daemon creates it with mode 0700)."""
    return str(tmp_path / "home")


@pytest.fixture
def workdir(tmp_path: Path) -> str:
    """A directory for a session to work in."""
    d = tmp_path / "work"
    d.mkdir()
    return str(d)


@pytest.fixture
def daemon(home: str) -> Iterator[r1.Daemon]:
    """An embedded daemon in its own home, stopped after the test."""
    with r1.Daemon.start(home=home) as d:
        yield d


@pytest.fixture
def client(daemon: r1.Daemon) -> Iterator[r1.Client]:
    """A client of ``daemon`` (never spawns)."""
    with r1.dial(home=daemon.home, spawn=False) as c:
        yield c


@pytest.fixture
def r1_bin() -> str:
    """The ``r1`` binary for auto-spawn (scripts/test-python.sh builds it)."""
    path = os.environ.get("R1_BIN") or str(
        Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug" / "r1"
    )
    if not os.access(path, os.X_OK):
        pytest.fail(f"no r1 binary at {path}: run `cargo build -p r1-bin` or set R1_BIN")
    os.environ["R1_BIN"] = path
    return path


def run_command(
    client: r1.Client, session_id: str, cmd: str, timeout: float = 20.0
) -> tuple[str, dict[str, Any]]:
    """Sends ``cmd`` to a shell session and follows it to its ``tool.end``.

    Returns (stdout+stderr text, the tool.end data).
    """
    seq = client.send(session_id, cmd)
    out = []
    # The shell driver's lane id is the seq of the input that started the run.
    with client.follow(session_id, since_seq=seq, timeout=timeout) as events:
        for ev in events:
            if ev["type"] != "record" or ev["data"].get("lane_id") != seq:
                continue
            if ev["kind"] == "session.delta":
                out.append(ev["data"]["text"])
            elif ev["kind"] == "tool.end":
                return "".join(out), ev["data"]
    raise AssertionError(f"no tool.end for {cmd!r} within {timeout}s; got {''.join(out)!r}")


def wait_until(pred: Any, timeout: float = 10.0, what: str = "condition") -> None:
    """Polls ``pred`` until true (state changes the daemon makes asynchronously)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def loopback_http_served(port: int | None) -> bool:
    """Whether the daemon answers ``GET /v1/health`` (the WebSocket transport needs
    the loopback HTTP listener; the tests that use it skip where it is absent)."""
    import urllib.request

    if port is None:
        return False
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=1.0) as r:
            return bool(r.status == 200)
    except Exception:
        return False
