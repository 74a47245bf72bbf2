"""Every method rpc.discover lists is reachable through a Client method."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import r1

# method name → the Client method that calls it.
CLIENT_METHOD = {
    "daemon.hello": "hello",
    "daemon.info": "info",
    "daemon.shutdown": "shutdown",
    "daemon.subscribe": "events",
    "daemon.rotate_token": "rotate_token",
    "daemon.mint_token": "mint_token",
    "rpc.discover": "discover_methods",
    "session.start": "start",
    "session.list": "sessions",
    "session.get": "get",
    "session.send": "send",
    "session.pause": "pause",
    "session.resume": "resume",
    "session.cancel": "cancel",
    "session.delete": "delete",
    "session.subscribe": "follow",
    "session.unsubscribe": "unsubscribe",
    "journal.read": "read",
}


def test_every_discovered_method_has_a_client_method(client: r1.Client) -> None:
    names = {m["name"] for m in client.discover_methods()["methods"]}
    assert names == set(CLIENT_METHOD), names ^ set(CLIENT_METHOD)
    for method, attr in CLIENT_METHOD.items():
        fn = getattr(r1.Client, attr)
        assert f"``{method}``" in (fn.__doc__ or ""), f"Client.{attr} does not document {method}"


def test_every_method_is_called_through_the_client(daemon: r1.Daemon, workdir: str) -> None:
    c = r1.dial(home=daemon.home, spawn=False)
    state: dict[str, Any] = {}

    def start() -> Any:
        state["sid"] = c.start(workdir)["session_id"]
        return state["sid"]

    def follow() -> Any:
        sub = c.follow(state["sid"], timeout=0.2)
        state["sub"] = sub.reply["sub"]
        return list(sub)

    calls: list[tuple[str, Callable[[], Any]]] = [
        ("daemon.hello", c.hello),
        ("daemon.info", c.info),
        ("rpc.discover", c.discover_methods),
        ("daemon.mint_token", lambda: c.mint_token("read", ttl_s=30)),
        ("daemon.rotate_token", c.rotate_token),
        ("daemon.subscribe", lambda: list(c.events(since_seq=0, timeout=0.2))),
        ("session.start", start),
        ("session.list", c.sessions),
        ("session.get", lambda: c.get(state["sid"])),
        ("session.send", lambda: c.send(state["sid"], "true")),
        ("session.subscribe", follow),
        ("session.unsubscribe", lambda: _unsubscribe(c, state)),
        ("journal.read", lambda: c.read(state["sid"])),
        ("session.pause", lambda: c.pause(state["sid"])),
        ("session.resume", lambda: c.resume(state["sid"])),
        ("session.cancel", lambda: c.cancel(state["sid"])),
        ("session.delete", lambda: c.delete(state["sid"])),
        ("daemon.shutdown", c.shutdown),
    ]
    assert {m for m, _ in calls} == set(CLIENT_METHOD)
    for method, call in calls:
        try:
            result = call()
        except r1.RpcError as e:
            assert e.code != -32601, f"{method}: the daemon does not know it"
            raise
        assert result is not None, method
    c.close()


def _unsubscribe(c: r1.Client, state: dict[str, Any]) -> Any:
    # A live subscription of this connection, stopped by id.
    sub = c.follow(state["sid"], since_seq=None)
    result = c.unsubscribe(sub.reply["sub"])
    sub.close()
    return result
