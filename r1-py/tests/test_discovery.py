"""r1.discover and r1.Discovery."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import r1


def test_discover_reads_the_running_daemon(daemon: r1.Daemon) -> None:
    d = r1.discover(home=daemon.home)
    assert d.pid == os.getpid()
    assert d.version == r1.__version__
    assert d.protocol_version == 1
    assert d.instance_id == daemon.instance_id and len(d.instance_id) == 32
    assert d.sock_path == daemon.sock_path and d.sock_path is not None
    assert os.path.exists(d.sock_path)
    assert d.host == "127.0.0.1" and d.port == daemon.port
    assert len(d.token) == 64 and int(d.token, 16) >= 0
    assert d.started_at.endswith("Z")
    assert d == daemon.discovery
    on_disk = json.loads(Path(daemon.home, "daemon.json").read_text())
    assert {k: on_disk[k] for k in d.to_dict()} == d.to_dict()


def test_to_dict_has_every_attribute(daemon: r1.Daemon) -> None:
    d = r1.discover(home=daemon.home)
    assert d.to_dict() == {
        "pid": d.pid, "version": d.version, "protocol_version": d.protocol_version,
        "instance_id": d.instance_id, "sock_path": d.sock_path, "host": d.host,
        "port": d.port, "token": d.token, "started_at": d.started_at,
    }


def test_repr_never_shows_the_token(daemon: r1.Daemon) -> None:
    d = r1.discover(home=daemon.home)
    text = repr(d)
    assert d.token not in text and d.token[:8] not in text
    assert "token=<redacted>" in text
    assert f"pid={d.pid}" in text and repr(d.instance_id) in text
    assert d.token not in str(d)


def test_discovery_is_read_only(daemon: r1.Daemon) -> None:
    d = r1.discover(home=daemon.home)
    with pytest.raises(AttributeError):
        d.pid = 1  # type: ignore[misc]


def test_default_home_is_r1_home(daemon: r1.Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R1_HOME", daemon.home)
    assert r1.discover().instance_id == daemon.instance_id


def test_missing_discovery(home: str) -> None:
    with pytest.raises(r1.DaemonNotFound, match="does not exist"):
        r1.discover(home=home)


def test_stale_discovery_names_the_dead_pid(daemon: r1.Daemon, tmp_path: Path) -> None:
    stale_home = tmp_path / "stale"
    stale_home.mkdir(mode=0o700)
    body = json.loads(Path(daemon.home, "daemon.json").read_text())
    body["pid"] = 2**31 - 5
    f = stale_home / "daemon.json"
    f.write_text(json.dumps(body))
    os.chmod(f, 0o600)
    with pytest.raises(r1.DaemonNotFound) as info:
        r1.discover(home=str(stale_home))
    assert "stale" in str(info.value) and str(2**31 - 5) in str(info.value)
    # dial ignores it and, not allowed to spawn, says so.
    with pytest.raises(r1.DaemonNotFound):
        r1.dial(home=str(stale_home), spawn=False)


def test_group_readable_discovery_is_unsafe(daemon: r1.Daemon, tmp_path: Path) -> None:
    h = tmp_path / "loose"
    h.mkdir(mode=0o700)
    f = h / "daemon.json"
    f.write_text(Path(daemon.home, "daemon.json").read_text())
    os.chmod(f, 0o644)
    with pytest.raises(r1.UnsafeDiscovery) as info:
        r1.discover(home=str(h))
    assert "0644" in str(info.value) and "chmod 600" in str(info.value)
    assert info.value.kind == "unsafe"
    with pytest.raises(r1.UnsafeDiscovery):
        r1.dial(home=str(h), spawn=False)


def test_malformed_discovery(tmp_path: Path) -> None:
    h = tmp_path / "bad"
    h.mkdir(mode=0o700)
    f = h / "daemon.json"
    f.write_text("{not json")
    os.chmod(f, 0o600)
    with pytest.raises(r1.DaemonNotFound, match="malformed"):
        r1.discover(home=str(h))


def test_discover_accepts_pathlike(daemon: r1.Daemon) -> None:
    assert r1.discover(home=Path(daemon.home)).pid == os.getpid()
