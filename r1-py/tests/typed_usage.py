"""Typed use of the whole API: checked by ``mypy --strict`` (scripts/test-python.sh)
and run by test_typed_usage.py, so the stubs are exercised both ways."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import r1


def use_everything(home: str, workdir: Path) -> dict[str, Any]:
    """Drives each public name once; returns facts for the test to check."""
    facts: dict[str, Any] = {"version": r1.__version__}
    with r1.Daemon.start(home=home, fsync_interval_ms=20.0) as daemon:
        disc: r1.Discovery = r1.discover(home=daemon.home)
        facts["same_instance"] = disc.instance_id == daemon.instance_id
        port: int | None = daemon.port
        sock: str | None = daemon.sock_path
        facts["listeners"] = (port is not None, sock is not None)
        as_dict: dict[str, Any] = disc.to_dict()
        facts["dict_pid"] = as_dict["pid"]

        with r1.dial(home=daemon.home, spawn=False, timeout=2.0) as client:
            info: dict[str, Any] = client.info()
            facts["pid"] = info["pid"]
            session = client.start(workdir, driver="shell", name="typed")
            sid: str = session["session_id"]
            seq: int = client.send(sid, "echo typed")
            output: list[str] = []
            sub: r1.Subscription = client.follow(sid, since_seq=seq, timeout=20.0)
            with sub:
                for event in sub:
                    if event["kind"] == "session.delta":
                        output.append(str(event["data"]["text"]))
                    if event["kind"] == "tool.end":
                        break
            facts["output"] = "".join(output)
            records: list[dict[str, Any]] = client.read(sid, since_seq=0, limit=100)
            facts["read_kinds"] = [r["kind"] for r in records]
            client.pause(sid)
            client.resume(sid)
            client.cancel(sid, reason="typed usage")
            sessions: list[dict[str, Any]] = client.sessions(state="ended")
            facts["ended"] = [s["id"] for s in sessions]
            result: object = client.call("session.get", {"session_id": sid}, timeout=5.0)
            facts["call_ok"] = isinstance(result, dict)
            try:
                client.get("sess_00000000-0000-4000-8000-000000000000")
            except r1.RpcError as e:
                code: int = e.code
                facts["rpc_code"] = code
            journal_path = os.path.join(daemon.home, "sessions", sid, "journal.ndjson")
            with r1.Journal(journal_path) as journal:
                facts["journal_seqs"] = [rec["seq"] for rec in journal.since(0)]
                report: dict[str, Any] = journal.verify()
                facts["verified"] = report["damage"] is None
                follow: r1.JournalFollow = journal.follow(timeout=0.05)
                facts["tail"] = len(list(follow))
            client.delete(sid)
    facts["stopped"] = not daemon.running
    try:
        r1.discover(home=home)
    except r1.DaemonNotFound as e:
        facts["after_stop"] = e.kind
    return facts
