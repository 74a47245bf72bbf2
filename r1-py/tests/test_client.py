"""r1.dial and every r1.Client method against a real daemon."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

import r1
from conftest import loopback_http_served, run_command, wait_until


def test_dial_and_handshake(daemon: r1.Daemon) -> None:
    with r1.dial(home=daemon.home, spawn=False, timeout=2.0) as c:
        assert c.handshake == {
            "protocol_version": 1, "version": r1.__version__,
            "instance_id": daemon.instance_id, "pid": os.getpid(),
        }
        assert c.discovery == daemon.discovery
        assert repr(c).startswith("r1.Client(pid=")
    assert c.closed


def test_dial_by_socket_path(daemon: r1.Daemon) -> None:
    assert daemon.sock_path is not None
    with r1.dial(sock_path=daemon.sock_path) as c:
        assert c.info()["instance_id"] == daemon.instance_id
        assert c.discovery is None


def test_hello_and_info(client: r1.Client, daemon: r1.Daemon) -> None:
    h = client.hello()
    assert h["instance_id"] == daemon.instance_id and h["protocol_version"] == 1
    info = client.info()
    assert info["pid"] == os.getpid() and info["home"] == daemon.home
    assert info["sock_path"] == daemon.sock_path and info["port"] == daemon.port
    assert info["log_path"].startswith(daemon.home)
    assert info["sessions"] == 0


def test_call_reaches_any_method(client: r1.Client) -> None:
    assert client.call("daemon.info")["pid"] == os.getpid()
    assert client.call("session.list", {}) == {"sessions": []}
    assert client.call("session.list", {"state": "running"}, timeout=5.0) == {"sessions": []}


def test_session_lifecycle(client: r1.Client, workdir: str) -> None:
    s = client.start(workdir, name="build")
    sid = s["session_id"]
    assert sid.startswith("sess_")
    assert s["workdir"] == os.path.realpath(workdir)
    assert s["driver"] == "shell" and s["state"] == "running" and s["name"] == "build"
    assert s["epoch"] and s["started_at"]

    out, end = run_command(client, sid, "pwd; echo err >&2; exit 3")
    # stdout and stderr are separate pipes: their relative order is not kept.
    assert sorted(out.splitlines()) == sorted([os.path.realpath(workdir), "err"])
    assert end["exit_code"] == 3 and end["ok"] is False

    listed = client.sessions()
    assert [x["id"] for x in listed] == [sid]
    assert client.sessions(state="running")[0]["id"] == sid
    assert client.sessions(state="ended") == []

    got = client.get(sid)
    assert got["id"] == sid and got["record_count"] == got["last_seq"] >= 5

    assert "paused_at" in client.pause(sid)
    assert client.get(sid)["state"] == "paused"
    assert "resumed_at" in client.resume(sid)
    assert client.get(sid)["state"] == "running"

    assert "ended_at" in client.cancel(sid, reason="done here")
    assert client.get(sid)["state"] == "ended"
    ended = [r for r in client.read(sid) if r["kind"] == "session.ended"]
    assert ended and ended[0]["data"]["reason"] == "cancelled"

    assert "deleted_at" in client.delete(sid)
    assert client.sessions() == [] or all(x["id"] != sid for x in client.sessions())
    with pytest.raises(r1.RpcError):
        client.read(sid)


def test_send_returns_the_seq_once_durable(client: r1.Client, workdir: str) -> None:
    sid = client.start(workdir)["session_id"]
    seq = client.send(sid, "true")
    assert isinstance(seq, int) and seq == 2  # after session.created
    rec = client.read(sid, since_seq=seq - 1, limit=1)[0]
    assert rec["kind"] == "user.input" and rec["data"]["text"] == "true"
    assert client.send(sid, "true") > seq


def test_relative_workdir_is_taken_from_the_cwd(
    client: r1.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "rel").mkdir()
    monkeypatch.chdir(tmp_path)
    s = client.start("rel")
    assert s["workdir"] == os.path.realpath(tmp_path / "rel")
    s2 = client.start(Path("rel"))
    assert s2["workdir"] == s["workdir"]


def test_exec_driver_with_command_and_env(client: r1.Client, workdir: str) -> None:
    agent = (
        "import json, os, sys\n"
        "print(json.dumps({'kind': 'agent.ready', 'data': {'x': os.environ['X_TEST']}}), flush=True)\n"
        "for line in sys.stdin:\n"
        "    msg = json.loads(line)\n"
        "    print(json.dumps({'kind': 'agent.echo', 'data': {'text': msg['text']}}), flush=True)\n"
        "    break\n"
    )
    s = client.start(workdir, driver="exec", command=[sys.executable, "-c", agent],
                     env={"X_TEST": "ok ✓"})
    sid = s["session_id"]
    assert s["driver"] == "exec"
    client.send(sid, "hello agent")
    kinds: dict[str, Any] = {}
    for ev in client.follow(sid, timeout=20):
        if ev["type"] == "record":
            kinds[ev["kind"]] = ev["data"]
    # The stream ended by itself after session.ended (the child exited 0).
    assert kinds["agent.ready"] == {"x": "ok ✓"}
    assert kinds["agent.echo"] == {"text": "hello agent"}
    assert kinds["session.ended"]["reason"] == "ok"
    assert client.get(sid)["command"] == [sys.executable, "-c", agent]


def test_unknown_driver_is_refused(client: r1.Client, workdir: str) -> None:
    with pytest.raises(r1.RpcError) as info:
        client.start(workdir, driver="no-such-driver")
    assert info.value.code == -32602 and "no-such-driver" in str(info.value)


def test_read_pages_and_limits(client: r1.Client, workdir: str) -> None:
    sid = client.start(workdir)["session_id"]
    run_command(client, sid, "for i in $(seq 1 5); do echo $i; done")
    records = client.read(sid)
    n = len(records)
    assert [r["seq"] for r in records] == list(range(1, n + 1))
    assert [r["seq"] for r in client.read(sid, since_seq=2, limit=3)] == [3, 4, 5]
    assert client.read(sid, since_seq=n) == []
    assert client.read(sid, limit=0) == []


def test_follow_streams_then_ends_after_session_ended(client: r1.Client, workdir: str) -> None:
    sid = client.start(workdir)["session_id"]
    client.send(sid, "echo one; echo two")
    seen: list[dict[str, Any]] = []
    with client.follow(sid) as events:
        assert events.reply["current_seq"] >= 1 and events.reply["epoch"]
        for ev in events:
            seen.append(ev)
            if ev["kind"] == "tool.end":
                client.cancel(sid)
    kinds = [e["kind"] for e in seen]
    assert kinds[0] == "session.created" and kinds[-1] == "session.ended"
    assert all(e["type"] == "record" for e in seen)
    assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1))
    out = "".join(e["data"]["text"] for e in seen if e["kind"] == "session.delta")
    assert out == "one\ntwo\n"
    # Following an ended session replays it and ends; live-only gets nothing.
    assert [e["seq"] for e in client.follow(sid, since_seq=len(seen) - 2)] == [
        len(seen) - 1, len(seen)]
    assert list(client.follow(sid, since_seq=None, timeout=0.3)) == []


def test_follow_timeout_ends_on_silence(client: r1.Client, workdir: str) -> None:
    sid = client.start(workdir)["session_id"]
    import time

    t0 = time.monotonic()
    got = list(client.follow(sid, timeout=0.4))
    assert [e["kind"] for e in got] == ["session.created"]
    assert 0.35 < time.monotonic() - t0 < 3.0


def test_events_is_the_bus(client: r1.Client, workdir: str) -> None:
    with client.events(since_seq=0, timeout=2.0) as bus:
        first = next(bus)
        assert first["type"] == "record" and first["seq"] == 1
        assert any(e["kind"] == "daemon.started" for e in [first, next(bus)])
        sid = client.start(workdir)["session_id"]
        for ev in bus:
            if ev["kind"] == "session.created":
                assert ev["data"]["session_id"] == sid
                break
        else:
            raise AssertionError("no session.created on the bus")
        client.cancel(sid)
        for ev in bus:
            if ev["kind"] == "session.ended":
                break
        else:
            raise AssertionError("no session.ended on the bus")
    # Closed by the with block: iteration ends at once.
    assert list(bus) == []


def test_live_only_events(client: r1.Client, workdir: str) -> None:
    bus = client.events(timeout=2.0)
    sid = client.start(workdir)["session_id"]
    ev = next(bus)
    assert ev["kind"] == "session.created" and ev["data"]["session_id"] == sid
    bus.close()
    bus.close()


def test_unsubscribe(client: r1.Client, workdir: str) -> None:
    sid = client.start(workdir)["session_id"]
    sub = client.follow(sid, timeout=1.0)
    assert client.unsubscribe(sub.reply["sub"]) == {}
    with pytest.raises(r1.RpcError) as info:
        client.unsubscribe(987654)
    assert info.value.code == -32001


def test_tokens(client: r1.Client, daemon: r1.Daemon) -> None:
    minted = client.mint_token("read", ttl_s=60)
    assert len(minted["token"]) >= 32 and minted["token"] != daemon.discovery.token
    assert minted["expires_at"].endswith("Z")
    with pytest.raises(r1.RpcError) as info:
        client.mint_token("everything")
    assert info.value.code == -32602
    before = r1.discover(home=daemon.home).token
    rotated = client.rotate_token()
    assert "rotated_at" in rotated
    after = r1.discover(home=daemon.home).token
    assert after != before
    # Still talking over the unix socket (no token there).
    assert client.info()["pid"] == os.getpid()


def test_websocket_transport(client: r1.Client, daemon: r1.Daemon, workdir: str) -> None:
    if not loopback_http_served(daemon.port):
        pytest.skip("this daemon build does not serve loopback HTTP (/v1/hello) yet")
    sid = client.start(workdir)["session_id"]
    # The master token from discovery; the client checks /v1/hello's proof first.
    # (A scoped token from mint_token cannot pass that check today: the proof is
    # keyed with the master token. Reported to the client library.)
    token = r1.discover(home=daemon.home).token
    with r1.dial(port=daemon.port, token=token, timeout=5.0) as ws:
        assert ws.handshake["instance_id"] == daemon.instance_id
        assert ws.get(sid)["id"] == sid
        out, end = run_command(ws, sid, "echo over-ws")
        assert out == "over-ws\n" and end["exit_code"] == 0
        with pytest.raises(r1.RpcError) as info:
            ws.rotate_token()  # unix socket only
        assert info.value.code in (-32004, -32601)


def test_discover_methods(client: r1.Client) -> None:
    doc = client.discover_methods()
    assert doc["openrpc"].startswith("1.")
    names = {m["name"] for m in doc["methods"]}
    assert {"session.start", "journal.read", "rpc.discover"} <= names


def test_shutdown(daemon: r1.Daemon) -> None:
    c = r1.dial(home=daemon.home, spawn=False)
    assert c.shutdown() == {"accepted": True}
    wait_until(lambda: not daemon.running, 10, "daemon to stop")
    wait_until(lambda: not os.path.exists(os.path.join(daemon.home, "daemon.json")), 10,
               "discovery to be removed")
    # The connection is gone and, dialed with spawn=False, nothing replaces it.
    with pytest.raises((r1.DaemonNotFound, r1.ClosedError)):
        c.info()
    c.close()
