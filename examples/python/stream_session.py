#!/usr/bin/env python3
"""Start an r1 session in a directory, run a command, stream its output as it
arrives, then replay the session's journal straight from disk with r1.Journal.

    python examples/python/stream_session.py [--workdir DIR] [--home HOME]
                                             [--embedded] [COMMAND]

By default it talks to your r1 daemon (``r1.dial`` starts one if none runs; set
``R1_BIN`` if ``r1`` is not on PATH). ``--embedded`` runs a private daemon inside
this process, in a throwaway home, so the example needs nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

import r1

DEFAULT_COMMAND = "for i in 1 2 3; do echo \"line $i from $(basename \"$PWD\")\"; sleep 0.2; done"


@contextlib.contextmanager
def connect(home: str | None, embedded: bool) -> Iterator[r1.Client]:
    """A client of the user's daemon, or of a private embedded one."""
    if not embedded:
        with r1.dial(home=home, timeout=10.0) as client:
            yield client
        return
    with tempfile.TemporaryDirectory(prefix="r1-example-") as tmp:
        with r1.Daemon.start(home=home or os.path.join(tmp, "home")) as daemon:
            with r1.dial(home=daemon.home, spawn=False) as client:
                yield client


def run(client: r1.Client, workdir: str, command: str) -> tuple[str, int]:
    """Runs ``command`` in a new session, printing output as it streams.

    Returns the session id and the command's exit code.
    """
    session = client.start(workdir, name="python-example")
    sid: str = session["session_id"]
    print(f"session {sid} in {session['workdir']}")
    seq = client.send(sid, command)
    exit_code = -1
    # since_seq=seq: everything after our input. The shell driver tags the run's
    # records with lane_id = the input's seq.
    for event in client.follow(sid, since_seq=seq, timeout=60.0):
        if event["type"] != "record" or event["data"].get("lane_id") != seq:
            continue
        if event["kind"] == "session.delta":
            stream = sys.stdout if event["data"]["stream"] == "stdout" else sys.stderr
            stream.write(event["data"]["text"])
            stream.flush()
        elif event["kind"] == "tool.end":
            exit_code = int(event["data"]["exit_code"])
            print(f"exit {exit_code} after {event['data']['duration_ms']} ms")
            break
    client.cancel(sid)
    return sid, exit_code


def replay(journal_path: str) -> None:
    """Prints every record of a journal, read from disk with no daemon involved."""
    print(f"\njournal {journal_path}:")
    with r1.Journal(journal_path) as journal:
        for record in journal:
            detail = record["data"].get("text") or record["data"].get("reason") or ""
            print(f"  {record['seq']:>3} {record['kind']:<16} {str(detail).strip()}")
        report = journal.verify()
    print(f"verified: {report['records']} records, last seq {report['last_seq']}, "
          f"damage: {report['damage']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", nargs="?", default=DEFAULT_COMMAND)
    parser.add_argument("--workdir", default=None, help="directory to run in (default: a temporary one)")
    parser.add_argument("--home", default=None, help="R1_HOME of the daemon")
    parser.add_argument("--embedded", action="store_true", help="run a private daemon in-process")
    args = parser.parse_args(argv)
    code = 1
    with tempfile.TemporaryDirectory(prefix="r1-work-") as scratch:
        workdir = args.workdir or scratch
        try:
            with connect(args.home, args.embedded) as client:
                home = str(client.info()["home"])
                sid, code = run(client, workdir, args.command)
                replay(os.path.join(home, "sessions", sid, "journal.ndjson"))
        except r1.R1Error as e:
            print(f"r1: {e}", file=sys.stderr)
            return 1
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
