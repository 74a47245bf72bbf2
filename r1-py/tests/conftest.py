"""Fixtures: every test runs against real daemons in temporary homes.

``R1_HOME`` is pointed at a throwaway directory before anything imports r1, so even
a call that falls back to the default home never touches the real ``~/.r1``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

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


Handler = Callable[[dict[str, Any]], Optional[bytes]]


@pytest.fixture
def fake_daemon(tmp_path: Path) -> Iterator[tuple[str, list[Handler]]]:
    """A unix socket served by a scripted peer: each request line is handed to
    ``handlers[0]``, whose bytes (if any) are sent back; ``None`` = stay silent."""
    path = str(tmp_path / "fake.sock")
    handlers: list[Handler] = []
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)
    srv.settimeout(0.1)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def talk(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                reply = handlers[0](json.loads(line)) if handlers else None
                if reply is not None:
                    conn.sendall(reply)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conns.append(conn)
            threading.Thread(target=talk, args=(conn,), daemon=True).start()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield path, handlers
    stop.set()
    t.join()
    for c in conns:
        try:
            c.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    srv.close()


def hello_then_silence(req: dict[str, Any]) -> Optional[bytes]:
    if req.get("method") != "daemon.hello":
        return None
    result = {"protocol_version": 1, "version": r1.__version__,
              "instance_id": "ab" * 16, "pid": os.getpid()}
    return json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": result}).encode() + b"\n"
