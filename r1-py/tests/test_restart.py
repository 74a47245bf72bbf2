"""Subscriptions resume across daemon restarts; dial auto-spawns `r1 serve`."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

import r1
from conftest import run_command, wait_until


def test_follow_resumes_across_a_daemon_restart(home: str, workdir: str) -> None:
    d1 = r1.Daemon.start(home=home)
    c = r1.dial(home=home, spawn=False, reconnect_for=20.0)
    sid = c.start(workdir)["session_id"]
    run_command(c, sid, "echo before")
    items: list[dict[str, Any]] = []
    failures: list[BaseException] = []

    def follower() -> None:
        try:
            for ev in c.follow(sid, timeout=20.0):
                items.append(ev)
                if ev.get("kind") == "session.delta" and ev["data"]["text"] == "after\n":
                    return
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            failures.append(e)

    t = threading.Thread(target=follower)
    t.start()
    wait_until(lambda: any(e.get("kind") == "tool.end" for e in items), 10, "replay")
    d1.stop()
    d2 = r1.Daemon.start(home=home)
    try:
        # The first call after the restart reconnects by itself.
        assert c.get(sid)["state"] == "paused-reattachable"
        c.resume(sid)
        c.send(sid, "echo after")
        t.join(20)
        assert not t.is_alive() and not failures, failures
    finally:
        c.close()
        d2.stop()
    records = [e for e in items if e["type"] == "record"]
    seqs = [e["seq"] for e in records]
    assert seqs == list(range(1, len(seqs) + 1)), "a gap or a duplicate across the restart"
    kinds = [e["kind"] for e in records]
    assert "session.reattached" in kinds and "session.resumed" in kinds
    texts = [e["data"]["text"] for e in records if e["kind"] == "session.delta"]
    assert texts == ["before\n", "after\n"]
    notices = [e for e in items if e["type"] == "daemon"]
    assert any(n["kind"] == "daemon.reloaded" for n in notices), notices


def test_dial_spawns_a_daemon(home: str, r1_bin: str) -> None:
    with r1.dial(home=home, timeout=15.0) as c:
        info = c.info()
        try:
            assert info["pid"] != os.getpid()
            assert info["home"] == home
            d = r1.discover(home=home)
            assert d.pid == info["pid"] and c.handshake["instance_id"] == d.instance_id
            # A second dial finds it instead of spawning another.
            with r1.dial(home=home, timeout=5.0) as c2:
                assert c2.info()["pid"] == info["pid"]
        finally:
            c.shutdown()
    wait_until(lambda: not os.path.exists(os.path.join(home, "daemon.json")), 15, "spawned daemon to exit")


def test_racing_dialers_start_one_daemon(home: str, r1_bin: str) -> None:
    pids: list[int] = []
    clients: list[r1.Client] = []
    lock = threading.Lock()
    gate = threading.Barrier(3)

    def dialer() -> None:
        gate.wait()
        c = r1.dial(home=home, timeout=20.0)
        with lock:
            clients.append(c)
            pids.append(c.info()["pid"])

    threads = [threading.Thread(target=dialer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert len(pids) == 3 and len(set(pids)) == 1, pids
    finally:
        if clients:
            clients[0].shutdown()
        for c in clients:
            c.close()
    wait_until(lambda: not os.path.exists(os.path.join(home, "daemon.json")), 15, "daemon to exit")


def test_a_failed_spawn_names_the_log(home: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("R1_BIN", str(tmp_path / "no-such-r1"))
    t0 = time.monotonic()
    with pytest.raises(r1.DaemonNotFound) as info:
        r1.dial(home=home, timeout=3.0)
    assert time.monotonic() - t0 < 10
    msg = str(info.value)
    assert "no-such-r1" in msg and os.path.join(home, "log", "r1.log") in msg
    assert "operator-guide" in msg


def test_spawn_false_never_spawns(home: str, r1_bin: str) -> None:
    with pytest.raises(r1.DaemonNotFound):
        r1.dial(home=home, spawn=False)
    assert not os.path.exists(os.path.join(home, "daemon.json"))
