"""r1.Journal: read, seek, verify and follow a journal with no daemon."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import r1
from conftest import run_command


@pytest.fixture
def journal_path(client: r1.Client, daemon: r1.Daemon, workdir: str) -> tuple[str, str]:
    """A session with a few records; returns (session id, journal path)."""
    sid = client.start(workdir)["session_id"]
    for i in range(3):
        out, end = run_command(client, sid, f"echo line{i}")
        assert out == f"line{i}\n" and end["exit_code"] == 0
    return sid, os.path.join(daemon.home, "sessions", sid, "journal.ndjson")


def test_iterates_every_record(client: r1.Client, journal_path: tuple[str, str]) -> None:
    sid, path = journal_path
    records = list(r1.Journal(path))
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert records[0]["kind"] == "session.created"
    assert records[0]["data"]["session_id"] == sid
    assert set(records[0]) == {"v", "seq", "crc", "at", "kind", "data"}
    # The same records the daemon serves.
    served = client.read(sid)
    assert [(r["seq"], r["kind"], r["data"]) for r in records] == [
        (r["seq"], r["kind"], r["data"]) for r in served
    ]
    texts = [r["data"]["text"] for r in records if r["kind"] == "session.delta"]
    assert texts == ["line0\n", "line1\n", "line2\n"]


def test_iteration_is_file_like(journal_path: tuple[str, str]) -> None:
    _, path = journal_path
    j = r1.Journal(Path(path))
    assert j.path == path
    first = next(j)
    assert first["seq"] == 1
    rest = list(j)
    assert rest[0]["seq"] == 2
    assert list(j) == []  # at the end, like a file
    assert repr(j) == f"r1.Journal({path!r})"


def test_since_seeks(journal_path: tuple[str, str]) -> None:
    _, path = journal_path
    j = r1.Journal(path)
    total = len(list(j))
    assert [r["seq"] for r in j.since(4)] == list(range(5, total + 1))
    assert [r["seq"] for r in r1.Journal(path).since(0)][0] == 1
    assert list(r1.Journal(path).since(total)) == []
    assert list(r1.Journal(path).since(10**9)) == []
    with pytest.raises(r1.InvalidArgument, match="seq must be between 0"):
        r1.Journal(path).since(-1)


def test_verify_reports_a_good_journal(journal_path: tuple[str, str]) -> None:
    _, path = journal_path
    j = r1.Journal(path)
    n = len(list(r1.Journal(path)))
    report = j.verify()
    assert report == {"records": n, "last_seq": n, "pending_bytes": 0, "damage": None}


def copy_journal(path: str, tmp_path: Path) -> Path:
    dst = tmp_path / "copy.ndjson"
    dst.write_bytes(Path(path).read_bytes())
    os.chmod(dst, 0o600)
    return dst


def test_a_flipped_byte_is_journal_corrupt(journal_path: tuple[str, str], tmp_path: Path) -> None:
    _, path = journal_path
    dst = copy_journal(path, tmp_path)
    lines = dst.read_bytes().split(b"\n")
    # Damage line 3 (a crc mismatch), leaving later good lines: damage, not a torn tail.
    lines[2] = lines[2].replace(b'"kind"', b'"kinD"')
    dst.write_bytes(b"\n".join(lines))
    with pytest.raises(r1.JournalCorrupt) as info:
        r1.Journal(dst).verify()
    report = info.value.report
    assert report is not None
    assert report["records"] == 2 and report["last_seq"] == 2
    assert report["damage"]["line"] == 3
    assert "crc" in report["damage"]["reason"]
    assert "line 3" in str(info.value)
    assert info.value.kind == "journal_damaged"
    # Iterating stops at the damage with the same exception, after the good lines.
    j = r1.Journal(dst)
    assert [next(j)["seq"], next(j)["seq"]] == [1, 2]
    with pytest.raises(r1.JournalCorrupt, match="line 3"):
        next(j)


def test_an_incomplete_last_line_is_pending_not_damage(
    journal_path: tuple[str, str], tmp_path: Path
) -> None:
    _, path = journal_path
    dst = copy_journal(path, tmp_path)
    n = len(list(r1.Journal(dst)))
    with open(dst, "ab") as f:
        f.write(b'{"v":1,"seq":')
    assert len(list(r1.Journal(dst))) == n
    report = r1.Journal(dst).verify()
    assert report["damage"] is None and report["pending_bytes"] == len(b'{"v":1,"seq":')


def test_a_newer_format_is_a_protocol_error(tmp_path: Path) -> None:
    f = tmp_path / "future.ndjson"
    f.write_bytes(b'{"v":9,"seq":1,"crc":"00000000","at":"x","kind":"k","data":{}}\n')
    os.chmod(f, 0o600)
    with pytest.raises(r1.ProtocolError, match="newer"):
        next(r1.Journal(f))
    with pytest.raises(r1.JournalCorrupt) as info:
        r1.Journal(f).verify()
    assert info.value.report is not None and "newer" in info.value.report["damage"]["reason"]


def test_missing_and_unreadable_paths(tmp_path: Path) -> None:
    with pytest.raises(r1.NotFoundError) as info:
        r1.Journal(tmp_path / "nope.ndjson")
    assert isinstance(info.value, FileNotFoundError)
    assert "nope.ndjson" in str(info.value)
    # Not a regular file: refused before reading, like any file r1 opens.
    with pytest.raises(r1.UnsafeDiscovery, match="not a regular file"):
        r1.Journal(tmp_path)
    # A read the kernel fails (EIO): our own /proc/self/mem at offset 0 is unmapped.
    if os.path.exists("/proc/self/mem"):
        j = r1.Journal("/proc/self/mem")
        with pytest.raises(r1.IoError) as info2:
            next(j)
        assert isinstance(info2.value, OSError) and info2.value.kind == "io"
        assert "Input/output error" in str(info2.value)


def test_close_and_context_manager(journal_path: tuple[str, str]) -> None:
    _, path = journal_path
    with r1.Journal(path) as j:
        assert not j.closed
        assert next(j)["seq"] == 1
    assert j.closed
    for op in (lambda: next(j), j.verify, lambda: j.since(1), lambda: next(j.follow(0.1))):
        with pytest.raises(r1.ClosedError, match="closed"):
            op()
    j.close()  # idempotent


def test_follow_sees_records_as_they_land(
    client: r1.Client, journal_path: tuple[str, str]
) -> None:
    sid, path = journal_path
    j = r1.Journal(path)
    existing = len(list(j))
    got: list[dict[str, Any]] = []

    def follower() -> None:
        for rec in j.follow(timeout=5.0):
            got.append(rec)
            if rec["kind"] == "tool.end":
                return

    t = threading.Thread(target=follower)
    t.start()
    time.sleep(0.2)
    client.send(sid, "echo followed")
    t.join(10)
    assert not t.is_alive()
    assert got[0]["seq"] == existing + 1 and got[0]["kind"] == "user.input"
    assert any(r["kind"] == "session.delta" and r["data"]["text"] == "followed\n" for r in got)


def test_follow_timeout_is_silence(journal_path: tuple[str, str]) -> None:
    _, path = journal_path
    j = r1.Journal(path)
    t0 = time.monotonic()
    n = len(list(j.follow(timeout=0.3)))  # replays the rest, then 0.3 s of silence
    elapsed = time.monotonic() - t0
    assert n > 0
    assert 0.25 < elapsed < 2.0
    t0 = time.monotonic()
    assert list(j.follow(timeout=0.0)) == []
    assert time.monotonic() - t0 < 0.5
    with pytest.raises(r1.InvalidArgument, match="timeout"):
        j.follow(timeout=-1)


def test_follow_reports_a_replaced_file(journal_path: tuple[str, str], tmp_path: Path) -> None:
    _, path = journal_path
    dst = copy_journal(path, tmp_path)
    j = r1.Journal(dst)
    list(j)
    other = tmp_path / "other.ndjson"
    other.write_bytes(dst.read_bytes())
    os.chmod(other, 0o600)
    os.replace(other, dst)
    with pytest.raises(r1.ClosedError, match="replaced"):
        next(j.follow(timeout=2.0))
