"""Runs the mypy-checked usage module against a real daemon."""

from __future__ import annotations

import os
from pathlib import Path

import r1
from typed_usage import use_everything


def test_typed_usage(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    facts = use_everything(str(tmp_path / "home"), work)
    assert facts["version"] == r1.__version__
    assert facts["same_instance"] and facts["listeners"] == (True, True)
    assert facts["pid"] == facts["dict_pid"] == os.getpid()
    assert facts["output"] == "typed\n"
    assert facts["read_kinds"][:2] == ["session.created", "user.input"]
    assert len(facts["ended"]) == 1
    assert facts["call_ok"] and facts["rpc_code"] == -32001
    seqs = facts["journal_seqs"]
    assert seqs == list(range(1, len(seqs) + 1)) and facts["verified"] and facts["tail"] == 0
    assert facts["stopped"] and facts["after_stop"] == "daemon_not_found"
