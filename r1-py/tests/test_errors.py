"""The ErrorKind → exception table, the panic boundary, and bad input from Python."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

import r1
import r1._r1
from conftest import Handler, hello_then_silence, loopback_http_served

# Every ErrorKind of r1-core and the class it must raise (DESIGN §7: one table).
TABLE = {
    "not_found": r1.NotFoundError,
    "conflict": r1.R1Error,
    "invalid_state": r1.R1Error,
    "unauthorized": r1.AuthError,
    "too_large": r1.R1Error,
    "journal_damaged": r1.JournalCorrupt,
    "unsupported_version": r1.ProtocolError,
    "io": r1.IoError,
    "invalid_params": r1.InvalidArgument,
    "invalid_request": r1.ProtocolError,
    "method_not_found": r1.ProtocolError,
    "parse": r1.ProtocolError,
    "unsafe": r1.UnsafeDiscovery,
    "daemon_not_found": r1.DaemonNotFound,
    "timeout": r1.Timeout,
    "closed": r1.ClosedError,
    "protocol": r1.ProtocolError,
    "rpc": r1.RpcError,
    "internal": r1.R1Error,
}


@pytest.mark.parametrize("kind", sorted(TABLE))
def test_every_kind_maps_to_its_class(kind: str) -> None:
    e = r1._r1._error_for_kind(kind, f"a {kind} failure")
    assert type(e) is TABLE[kind]
    assert isinstance(e, r1.R1Error)
    assert f"a {kind} failure" in str(e)
    if kind != "rpc":
        assert e.kind == kind


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(r1.InvalidArgument, match="unknown error kind"):
        r1._r1._error_for_kind("no_such_kind", "x")


def test_rpc_errors_carry_code_message_data() -> None:
    e = r1._r1._error_for_kind("rpc", "no session sess_x", code=-32001)
    assert isinstance(e, r1.RpcError)
    assert e.code == -32001
    assert e.message == "no session sess_x"
    assert e.data == {"kind": "not_found"}
    assert e.kind == "not_found"
    assert "-32001" in str(e)


def test_a_rust_panic_is_an_r1error_not_a_panicexception() -> None:
    with pytest.raises(r1.R1Error) as info:
        r1._r1._panic("invariant broken")
    assert type(info.value) is r1.R1Error
    assert info.value.kind == "internal"
    assert "invariant broken" in str(info.value)
    assert "bug in r1" in str(info.value)


# ------------------------------------------------------------ bad input, real calls


def test_wrong_argument_types_are_typeerrors(client: r1.Client) -> None:
    with pytest.raises(TypeError, match="session_id"):
        client.get(123)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text"):
        client.send("sess_x", b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="method"):
        client.call(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        r1.Journal(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        client.read("sess_x", since_seq="0")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unexpected keyword"):
        r1.Daemon.start(home="/tmp/x", no_such_option=True)  # type: ignore[call-arg]


def test_out_of_range_numbers_are_invalid_argument(client: r1.Client, daemon: r1.Daemon) -> None:
    with pytest.raises(r1.InvalidArgument, match="since_seq must be between 0"):
        client.read("sess_x", since_seq=-1)
    with pytest.raises(r1.InvalidArgument, match="limit"):
        client.read("sess_x", limit=-5)
    with pytest.raises(r1.InvalidArgument, match="since_seq"):
        client.follow("sess_x", since_seq=-3)
    with pytest.raises(r1.InvalidArgument, match="timeout"):
        client.call("daemon.info", timeout=-1.0)
    with pytest.raises(r1.InvalidArgument, match="timeout"):
        client.follow("sess_x", timeout=float("nan"))
    with pytest.raises(r1.InvalidArgument, match="ttl_s"):
        client.mint_token("read", ttl_s=-1)
    with pytest.raises(r1.InvalidArgument, match="port"):
        r1.Daemon.start(home=daemon.home + "-other", port=70000)
    with pytest.raises(r1.InvalidArgument, match="timeout"):
        r1.dial(home=daemon.home, timeout=float("inf"))


class Opaque:
    pass


@pytest.mark.parametrize(
    "params, where",
    [
        ({"x": {1, 2}}, 'params["x"]: object of type set'),
        ({"a": [1, Opaque()]}, 'params["a"][1]: object of type Opaque'),
        ({1: "int key"}, "key 1 is a int"),
        ({"n": float("nan")}, "NaN is not a JSON number"),
        ({"big": 2**70}, "does not fit in 64 bits"),
        ("a string", "params must be a dict, a list or None"),
        (b"bytes", "object of type bytes"),
    ],
)
def test_non_json_params_are_invalid_argument(
    client: r1.Client, params: object, where: str
) -> None:
    with pytest.raises(r1.InvalidArgument) as info:
        client.call("daemon.info", params)  # type: ignore[arg-type]
    assert where in str(info.value)
    assert isinstance(info.value, ValueError)


def test_self_referencing_params_do_not_crash(client: r1.Client) -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(r1.InvalidArgument, match="refers to itself"):
        client.call("daemon.info", {"loop": loop})


def test_json_round_trip_of_every_type(client: r1.Client, workdir: str) -> None:
    text = "echo 'é ✓ \\n tab\there' # 中文"
    sid = client.start(workdir, name="round-trip ✓")["session_id"]
    seq = client.send(sid, text)
    rec = client.read(sid, since_seq=seq - 1, limit=1)[0]
    assert rec["seq"] == seq and rec["data"]["text"] == text
    assert client.get(sid)["name"] == "round-trip ✓"
    # Every Python type JSON holds goes out; a tuple is an array (refused by the
    # daemon only because params must be an object).
    with pytest.raises(r1.RpcError) as info:
        client.call("daemon.info", (1, -2, 2**63, 1.5, True, None, "é", {"k": []}))
    assert info.value.code == -32602


def test_unknown_session_is_an_rpc_error(client: r1.Client) -> None:
    missing = "sess_00000000-0000-4000-8000-000000000000"
    for call in (
        lambda: client.get(missing),
        lambda: client.send(missing, "echo"),
        lambda: client.pause(missing),
        lambda: client.resume(missing),
        lambda: client.cancel(missing),
        lambda: client.delete(missing),
        lambda: client.read(missing),
    ):
        with pytest.raises(r1.RpcError) as info:
            call()
        assert info.value.code == -32001, info.value
        assert info.value.kind == "not_found"
        assert missing in str(info.value)
    with pytest.raises(r1.RpcError) as info2:
        client.get("not-an-id")
    assert info2.value.code == -32602


def test_follow_of_an_unknown_session_raises(client: r1.Client) -> None:
    with pytest.raises(r1.RpcError) as info:
        client.follow("sess_00000000-0000-4000-8000-000000000000")
    assert info.value.code == -32001


@pytest.mark.parametrize("bad", ["relative-but-missing", "/definitely/not/here", "FILE"])
def test_bad_workdir_is_an_rpc_error_naming_it(
    client: r1.Client, tmp_path: Path, bad: str
) -> None:
    if bad == "FILE":
        f = tmp_path / "a-file"
        f.write_text("x")
        bad = str(f)
    with pytest.raises(r1.RpcError) as info:
        client.start(bad)
    assert info.value.code == -32602
    assert os.path.basename(bad) in str(info.value)


def test_workdir_inside_home_is_refused(client: r1.Client, daemon: r1.Daemon) -> None:
    with pytest.raises(r1.RpcError) as info:
        client.start(daemon.home)
    assert info.value.code == -32602


def test_unknown_method_is_an_rpc_error(client: r1.Client) -> None:
    with pytest.raises(r1.RpcError) as info:
        client.call("no.such_method")
    assert info.value.code == -32601
    assert info.value.data == {"kind": "method_not_found"}


def test_closed_client_raises_closed_error(daemon: r1.Daemon) -> None:
    c = r1.dial(home=daemon.home, spawn=False)
    assert not c.closed
    c.close()
    c.close()  # idempotent
    assert c.closed
    for call in (c.info, c.hello, lambda: c.call("daemon.info"), lambda: c.follow("s"),
                 c.events, lambda: c.handshake, lambda: c.discovery):
        with pytest.raises(r1.ClosedError, match="closed"):
            call()
    assert repr(c) == "r1.Client(closed)"


def test_a_call_with_no_answer_times_out(fake_daemon: tuple[str, list[Handler]]) -> None:
    path, handlers = fake_daemon
    handlers.append(hello_then_silence)
    with r1.dial(sock_path=path, timeout=2.0) as c:
        assert c.handshake["instance_id"] == "ab" * 16
        t0 = time.monotonic()
        with pytest.raises(r1.Timeout) as info:
            c.call("daemon.info", timeout=0.3)
        assert 0.25 < time.monotonic() - t0 < 2.0
        assert isinstance(info.value, TimeoutError)
        assert "daemon.info" in str(info.value)
        with pytest.raises(r1.Timeout):
            c.call("session.list", {}, 0.2)


def test_a_silent_peer_times_out_the_dial(fake_daemon: tuple[str, list[Handler]]) -> None:
    path, _ = fake_daemon
    with pytest.raises(r1.Timeout):
        r1.dial(sock_path=path, timeout=0.3)


def test_a_peer_speaking_garbage_is_a_protocol_error(
    fake_daemon: tuple[str, list[Handler]],
) -> None:
    path, handlers = fake_daemon
    handlers.append(lambda req: b"this is not json\n")
    with pytest.raises(r1.ProtocolError):
        r1.dial(sock_path=path, timeout=2.0)


def test_a_daemon_of_another_protocol_is_a_protocol_error(
    fake_daemon: tuple[str, list[Handler]],
) -> None:
    path, handlers = fake_daemon

    def future(req: dict[str, Any]) -> bytes:
        err = {"code": -32007, "message": "protocol 1 is not spoken here (speaks 9)",
               "data": {"kind": "unsupported_version"}}
        return json.dumps({"jsonrpc": "2.0", "id": req["id"], "error": err}).encode() + b"\n"

    handlers.append(future)
    with pytest.raises(r1.R1Error) as info:
        r1.dial(sock_path=path, timeout=2.0)
    assert info.value.kind == "unsupported_version"


def test_no_daemon_is_daemon_not_found(home: str) -> None:
    with pytest.raises(r1.DaemonNotFound) as info:
        r1.dial(home=home, spawn=False)
    assert isinstance(info.value, ConnectionError)
    assert info.value.kind == "daemon_not_found"
    with pytest.raises(r1.DaemonNotFound):
        r1.dial(sock_path=os.path.join(home, "nothing.sock"), timeout=0.5)


def test_websocket_dial_with_a_wrong_token_is_auth_error(daemon: r1.Daemon) -> None:
    if not loopback_http_served(daemon.port):
        pytest.skip("this daemon build does not serve loopback HTTP (/v1/hello) yet")
    with pytest.raises(r1.AuthError) as info:
        r1.dial(port=daemon.port, token="f" * 64, timeout=2.0)
    assert info.value.kind == "unauthorized"


def test_websocket_dial_needs_port_and_token_together(daemon: r1.Daemon) -> None:
    with pytest.raises(r1.InvalidArgument, match="together"):
        r1.dial(port=daemon.port)
    with pytest.raises(r1.InvalidArgument, match="together"):
        r1.dial(token="a" * 64)
    with pytest.raises(r1.InvalidArgument, match="token must be"):
        r1.dial(port=daemon.port, token="short")
    with pytest.raises(r1.InvalidArgument, match="either sock_path"):
        r1.dial(sock_path="/x", port=daemon.port, token="a" * 64)


def test_second_daemon_on_a_home_is_a_conflict(daemon: r1.Daemon) -> None:
    with pytest.raises(r1.R1Error) as info:
        r1.Daemon.start(home=daemon.home)
    assert type(info.value) is r1.R1Error
    assert info.value.kind == "conflict"
    assert f"pid={os.getpid()}" in str(info.value)


def test_unsafe_home_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "shared-home"
    home.mkdir(mode=0o700)
    # A symlinked discovery file must be refused, whoever we are.
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    os.chmod(target, 0o600)
    os.symlink(target, home / "daemon.json")
    with pytest.raises(r1.UnsafeDiscovery, match="symlink"):
        r1.discover(home=str(home))
