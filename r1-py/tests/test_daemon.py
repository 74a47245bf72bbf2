"""r1.Daemon: the embedded daemon."""

from __future__ import annotations

import gc
import os
import stat
from pathlib import Path

import pytest

import r1
from conftest import run_command, wait_until


def test_start_attributes_and_stop(home: str) -> None:
    d = r1.Daemon.start(home=home)
    try:
        assert d.running
        assert d.home == home
        assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
        assert d.sock_path is not None and os.path.exists(d.sock_path)
        assert isinstance(d.port, int) and d.port > 0
        assert len(d.instance_id) == 32
        assert isinstance(d.discovery, r1.Discovery)
        assert d.discovery.instance_id == d.instance_id
        assert d.discovery.sock_path == d.sock_path and d.discovery.port == d.port
        assert "running=True" in repr(d) and repr(home) in repr(d)
        assert d.discovery.token not in repr(d)
    finally:
        d.stop()
    assert not d.running
    assert not os.path.exists(os.path.join(home, "daemon.json"))
    assert not os.path.exists(d.sock_path)
    d.stop()  # idempotent
    with pytest.raises(r1.DaemonNotFound):
        r1.discover(home=home)


def test_context_manager_stops(home: str) -> None:
    with r1.Daemon.start(home=Path(home)) as d:
        assert r1.discover(home=home).instance_id == d.instance_id
    assert not d.running
    with pytest.raises(r1.DaemonNotFound):
        r1.discover(home=home)
    # The home can be reused at once: the lock is released.
    with r1.Daemon.start(home=home) as d2:
        assert d2.instance_id != d.instance_id


def test_a_forgotten_daemon_is_stopped_when_collected(home: str) -> None:
    d = r1.Daemon.start(home=home)
    del d
    gc.collect()
    with pytest.raises(r1.DaemonNotFound):
        r1.discover(home=home)
    with r1.Daemon.start(home=home):
        pass


def test_options(home: str, tmp_path: Path, workdir: str) -> None:
    sock = str(tmp_path / "custom.sock")
    with r1.Daemon.start(
        home=home,
        sock_path=sock,
        tcp=False,
        single_session=True,
        fsync_interval_ms=5,
        shutdown_grace_s=1.0,
        allow_origins=["chrome-extension://abcdefghijklmnop"],
        token="t" * 64,
    ) as d:
        assert d.sock_path == sock and d.port is None and d.discovery.host is None
        assert d.discovery.token == "t" * 64
        with r1.dial(sock_path=sock) as c:
            sid = c.start(workdir)["session_id"]
            other = tmp_path / "second"
            other.mkdir()
            with pytest.raises(r1.RpcError) as info:
                c.start(str(other))
            assert info.value.code == -32002  # conflict: single session
            c.cancel(sid)
            c.start(str(other))


def test_unix_false_leaves_no_socket(home: str) -> None:
    with r1.Daemon.start(home=home, unix=False) as d:
        assert d.sock_path is None and d.discovery.sock_path is None
        assert d.port is not None


def test_no_listener_at_all_is_refused(home: str) -> None:
    with pytest.raises(r1.InvalidArgument, match="no way to reach"):
        r1.Daemon.start(home=home, unix=False, tcp=False)


def test_bad_options(home: str) -> None:
    with pytest.raises(r1.InvalidArgument, match="token must be"):
        r1.Daemon.start(home=home, token="short")
    with pytest.raises(r1.InvalidArgument, match="fsync_interval_ms"):
        r1.Daemon.start(home=home, fsync_interval_ms=-5)
    with pytest.raises(r1.InvalidArgument, match="idle_exit_s"):
        r1.Daemon.start(home=home, idle_exit_s=float("nan"))
    with pytest.raises(TypeError):
        r1.Daemon.start(home=home, allow_origins="not-a-list")


def test_idle_exit(home: str) -> None:
    d = r1.Daemon.start(home=home, idle_exit_s=0.2)
    wait_until(lambda: not d.running, 10, "idle exit")
    d.stop()
    wait_until(lambda: not os.path.exists(os.path.join(home, "daemon.json")), 5, "cleanup")


def test_shutdown_from_a_client_stops_it(daemon: r1.Daemon) -> None:
    with r1.dial(home=daemon.home, spawn=False) as c:
        assert c.shutdown(grace_s=1.0) == {"accepted": True}
    wait_until(lambda: not daemon.running, 10, "shutdown")
    daemon.stop()


def test_sessions_survive_a_restart_of_the_embedded_daemon(home: str, workdir: str) -> None:
    with r1.Daemon.start(home=home) as d:
        with r1.dial(home=home, spawn=False) as c:
            sid = c.start(workdir)["session_id"]
            run_command(c, sid, "echo before")
    with r1.Daemon.start(home=home) as d2:
        assert d2.instance_id != d.instance_id
        with r1.dial(home=home, spawn=False) as c:
            s = c.get(sid)
            assert s["state"] == "paused-reattachable"
            c.resume(sid)
            out, _ = run_command(c, sid, "echo after")
            assert out == "after\n"
            texts = [r["data"]["text"] for r in c.read(sid) if r["kind"] == "session.delta"]
            assert texts == ["before\n", "after\n"]


def test_daemons_alive_at_exit_are_stopped_gracefully(home: str, workdir: str) -> None:
    import subprocess
    import sys

    script = f"""
import threading, r1
d = r1.Daemon.start(home={home!r})
c = r1.dial(home={home!r}, spawn=False)
sid = c.start({workdir!r})["session_id"]
c.send(sid, "echo hi")
# A thread still blocked in follow keeps everything referenced at exit.
threading.Thread(target=lambda: list(c.follow(sid)), daemon=True).start()
print(sid)
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    sid = p.stdout.strip()
    assert not os.path.exists(os.path.join(home, "daemon.json"))
    # Stopped gracefully: the session was paused by the shutdown and marked clean.
    assert os.path.exists(os.path.join(home, "sessions", sid, "clean"))
    kinds = [r["kind"] for r in r1.Journal(os.path.join(home, "sessions", sid, "journal.ndjson"))]
    assert "session.paused" in kinds
