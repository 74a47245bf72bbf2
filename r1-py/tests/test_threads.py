"""The GIL is released while r1 waits: threads run in parallel, Ctrl-C works."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import r1
from conftest import Handler, hello_then_silence, run_command

WAIT = 0.8


def in_threads(n: int, fn: Callable[[int], Any]) -> tuple[float, list[Any]]:
    """Runs ``fn(i)`` in ``n`` threads released together; (wall seconds, results)."""
    results: list[Any] = [None] * n
    errors: list[BaseException] = []
    gate = threading.Barrier(n + 1)

    def body(i: int) -> None:
        gate.wait()
        try:
            results[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    gate.wait()
    t0 = time.monotonic()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - t0
    if errors:
        raise errors[0]
    return elapsed, results


def test_four_followers_wait_in_parallel(client: r1.Client, workdir: str) -> None:
    sid = client.start(workdir)["session_id"]
    last = client.get(sid)["last_seq"]
    # Each follow blocks in Rust for WAIT seconds of silence; holding the GIL would
    # serialise them (4 × WAIT).
    elapsed, results = in_threads(4, lambda i: list(client.follow(sid, since_seq=last, timeout=WAIT)))
    assert results == [[], [], [], []]
    assert WAIT * 0.9 < elapsed < WAIT * 2, f"4 parallel waits took {elapsed:.2f}s"


def test_four_blocked_calls_run_in_parallel(fake_daemon: tuple[str, list[Handler]]) -> None:
    path, handlers = fake_daemon
    handlers.append(hello_then_silence)  # answers the handshake, then never again
    with r1.dial(sock_path=path) as c:

        def blocked(i: int) -> str:
            with pytest.raises(r1.Timeout):
                c.call("daemon.info", timeout=WAIT)
            return "timed out"

        elapsed, results = in_threads(4, blocked)
    assert results == ["timed out"] * 4
    assert WAIT * 0.9 < elapsed < WAIT * 2, f"4 blocked calls took {elapsed:.2f}s"


def test_four_journal_followers_in_parallel(client: r1.Client, daemon: r1.Daemon, workdir: str) -> None:
    sid = client.start(workdir)["session_id"]
    path = os.path.join(daemon.home, "sessions", sid, "journal.ndjson")

    def follow(i: int) -> int:
        j = r1.Journal(path)
        list(j)
        return len(list(j.follow(timeout=WAIT)))

    elapsed, results = in_threads(4, follow)
    assert results == [0, 0, 0, 0]
    assert WAIT * 0.9 < elapsed < WAIT * 2, f"4 journal follows took {elapsed:.2f}s"


def test_many_threads_share_one_client(client: r1.Client, workdir: str) -> None:
    sids = [client.start(workdir)["session_id"] for _ in range(4)]

    def work(i: int) -> list[int]:
        seqs = [client.send(sids[i], f"echo {i}-{k}") for k in range(5)]
        assert client.get(sids[i])["id"] == sids[i]
        return seqs

    _, results = in_threads(4, work)
    for seqs in results:
        assert seqs == sorted(seqs) and len(set(seqs)) == 5
    for i, sid in enumerate(sids):
        inputs = [r["data"]["text"] for r in client.read(sid) if r["kind"] == "user.input"]
        assert inputs == [f"echo {i}-{k}" for k in range(5)]


def test_a_follow_does_not_block_calls(client: r1.Client, workdir: str) -> None:
    sid = client.start(workdir)["session_id"]
    seen: list[dict[str, Any]] = []
    sub = client.follow(sid)  # no timeout: waits until closed or the session ends
    t = threading.Thread(target=lambda: seen.extend(sub))
    t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    for _ in range(20):
        assert client.info()["pid"] == os.getpid()
    assert time.monotonic() - t0 < 2.0
    out, _ = run_command(client, sid, "echo while-followed")
    assert out == "while-followed\n"
    t1 = time.monotonic()
    sub.close()  # from another thread: wakes the follower
    t.join(5)
    assert not t.is_alive() and time.monotonic() - t1 < 1.0
    assert any(e.get("kind") == "session.delta" and e["data"]["text"] == "while-followed\n"
               for e in seen)


def test_closing_the_client_ends_its_followers(daemon: r1.Daemon, workdir: str) -> None:
    c = r1.dial(home=daemon.home, spawn=False)
    sid = c.start(workdir)["session_id"]
    done = threading.Event()

    def follower() -> None:
        list(c.follow(sid))
        done.set()

    t = threading.Thread(target=follower)
    t.start()
    time.sleep(0.2)
    c.close()
    assert done.wait(5)


def interrupt_main_after(delay: float) -> threading.Timer:
    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(delay, lambda: signal.pthread_kill(main, signal.SIGINT))
    timer.start()
    return timer


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals are delivered to the main thread")
def test_ctrl_c_interrupts_a_follow(client: r1.Client, workdir: str) -> None:
    sid = client.start(workdir)["session_id"]
    interrupt_main_after(0.3)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        for _ in client.follow(sid):
            pass
    assert time.monotonic() - t0 < 1.5
    assert client.info()["pid"] == os.getpid()  # the client is still usable


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals are delivered to the main thread")
def test_ctrl_c_interrupts_a_journal_follow(client: r1.Client, daemon: r1.Daemon, workdir: str) -> None:
    sid = client.start(workdir)["session_id"]
    j = r1.Journal(os.path.join(daemon.home, "sessions", sid, "journal.ndjson"))
    interrupt_main_after(0.3)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        for _ in j.follow():
            pass
    assert time.monotonic() - t0 < 1.5
