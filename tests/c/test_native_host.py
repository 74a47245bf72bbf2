#!/usr/bin/env python3
"""Drives examples/native-messaging-host with real framed messages, as a browser would.

Usage: test_native_host.py HOST_BINARY [--valgrind] [TEST ...]

Environment: R1_BIN (the r1 binary the host auto-spawns). Every run uses a fresh
R1_HOME under /tmp; the daemon the first host starts is shut down at the end.

With --valgrind each host runs under valgrind (definite leaks and invalid accesses
fail the test through valgrind's exit code 99) and only the tests marked for it run.

Prints one ok/FAIL line per test and `native host: N passed, M failed`; exits 1 on
any failure.
"""

import json
import os
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

MAX_OUT = 1024 * 1024
VALGRIND_RC = 99


class Host:
    """One host process with framed stdin/stdout."""

    def __init__(self, ctx, name):
        self.ctx = ctx
        self.log_path = os.path.join(ctx.tmp, f"host-{name}.log")
        self.vg_log = os.path.join(ctx.tmp, f"valgrind-{name}.log")
        cmd = [ctx.host_bin, "chrome-extension://testextensionid/"]
        if ctx.valgrind:
            cmd = [
                "valgrind", "--quiet", "--read-inline-info=no", "--leak-check=full",
                "--errors-for-leak-kinds=definite",
                f"--error-exitcode={VALGRIND_RC}", f"--log-file={self.vg_log}",
            ] + cmd
        env = dict(os.environ, R1_HOME=ctx.home, R1_NMH_LOG=self.log_path)
        if ctx.valgrind:
            # The daemon is already up (see main); a client slowed down by valgrind
            # gets a generous handshake budget instead of spawn's short probes.
            env["R1_NMH_DIAL"] = '{"spawn":false,"timeout_ms":30000}'
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env)
        self.buf = b""
        self.next_id = 1

    def send_raw(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, obj):
        body = json.dumps(obj).encode()
        self.send_raw(struct.pack("=I", len(body)) + body)

    def _fill(self, n, deadline):
        fd = self.proc.stdout.fileno()
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no frame within the timeout (have {len(self.buf)} bytes)")
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise EOFError("host closed stdout")
            self.buf += chunk

    def recv(self, timeout=20.0):
        """The next frame as a parsed object; checks the 1 MB limit and that stdout
        holds nothing but frames."""
        deadline = time.monotonic() + timeout * self.ctx.slow
        self._fill(4, deadline)
        (n,) = struct.unpack("=I", self.buf[:4])
        assert n <= MAX_OUT, f"frame of {n} bytes is over the 1 MB limit"
        self._fill(4 + n, deadline)
        body, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
        obj = json.loads(body.decode("utf-8"))
        obj["_len"] = n
        return obj

    def call(self, method, params=None, timeout=20.0):
        """Sends a request; returns its response (skipping notifications, which are
        collected in self.notes)."""
        rid = self.next_id
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        while True:
            f = self.recv(timeout)
            if f.get("id") == rid:
                return f
            self.ctx.notes.append(f)

    def result(self, method, params=None):
        f = self.call(method, params)
        assert "result" in f, f"{method}: {f.get('error')}"
        return f["result"]

    def close(self, expect_rc=0, timeout=30.0):
        """EOF on stdin; the host must exit with expect_rc and write nothing more
        than whole frames."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        rest = self.proc.stdout.read()
        rc = self.proc.wait(timeout=timeout * self.ctx.slow)
        self.buf += rest
        while len(self.buf) >= 4:
            (n,) = struct.unpack("=I", self.buf[:4])
            assert len(self.buf) >= 4 + n, "stdout ends inside a frame"
            json.loads(self.buf[4:4 + n])
            self.buf = self.buf[4 + n:]
        assert not self.buf, f"stray bytes on stdout: {self.buf[:40]!r}"
        if rc == VALGRIND_RC:
            with open(self.vg_log) as f:
                raise AssertionError("valgrind found errors:\n" + f.read()[-4000:])
        assert rc == expect_rc, f"host exited {rc}, expected {expect_rc}; log: {self.log_tail()}"

    def log_tail(self):
        try:
            with open(self.log_path) as f:
                return f.read()[-2000:]
        except OSError:
            return "(no log)"


class Ctx:
    def __init__(self, host_bin, valgrind):
        self.host_bin = host_bin
        self.valgrind = valgrind
        self.slow = 6.0 if valgrind else 1.0
        self.tmp = tempfile.mkdtemp(prefix="r1nmh-")
        self.home = os.path.join(self.tmp, "home")
        os.mkdir(self.home, 0o700)
        self.notes = []

    def workdir(self, name):
        d = os.path.join(self.tmp, "work-" + name)
        os.makedirs(d, exist_ok=True)
        return d

    def discovery(self):
        with open(os.path.join(self.home, "daemon.json")) as f:
            return json.load(f)


def wait_events(h, sub, until_kind, timeout=30.0):
    """$/event params of subscription `sub` up to and including one of until_kind."""
    got = []
    deadline = time.monotonic() + timeout * h.ctx.slow
    pending = [n for n in h.ctx.notes if n.get("params", {}).get("sub") == sub]
    h.ctx.notes = [n for n in h.ctx.notes if n.get("params", {}).get("sub") != sub]
    while True:
        f = pending.pop(0) if pending else h.recv(max(0.1, deadline - time.monotonic()) / h.ctx.slow)
        if f.get("params", {}).get("sub") != sub:
            h.ctx.notes.append(f)
            continue
        assert f["method"] == "$/event", f
        got.append(f["params"])
        if f["params"].get("kind") == until_kind:
            return got


def start_session(h, name, **extra):
    params = {"workdir": h.ctx.workdir(name)}
    params.update(extra)
    r = h.result("session.start", params)
    return r["session_id"]


# ---- tests -------------------------------------------------------------------------


def t_call_round_trip(ctx):
    h = Host(ctx, "call")
    r = h.result("daemon.info")  # auto-spawns the daemon on first use
    assert r["pid"] == ctx.discovery()["pid"]
    h.send({"jsonrpc": "2.0", "id": "str-id", "method": "session.list"})
    f = h.recv()
    assert f["id"] == "str-id" and "sessions" in f["result"], f
    h.close()


def t_rpc_error_passthrough(ctx):
    h = Host(ctx, "rpcerr")
    f = h.call("session.get", {"session_id": "sess_00000000-0000-4000-8000-000000000000"})
    assert f["error"]["code"] == -32001 and f["error"]["data"]["kind"] == "not_found", f
    f = h.call("no.such_method")
    assert f["error"]["code"] == -32601, f
    h.close()


def t_subscription_events(ctx):
    h = Host(ctx, "sub")
    sid = start_session(h, "sub")
    r = h.result("session.subscribe", {"session_id": sid, "since_seq": 0})
    sub = r["sub"]
    assert r["current_seq"] >= 1 and r["epoch"], r
    h.result("session.send", {"session_id": sid, "text": "echo hello-native-host"})
    events = wait_events(h, sub, "tool.end")
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "session.created", kinds
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    out = "".join(e["data"].get("text", "") for e in events if e["kind"] == "session.delta")
    assert "hello-native-host" in out, events
    # Unsubscribe: no more events for that sub.
    assert h.result("session.unsubscribe", {"sub": sub}) == {}
    f = h.call("session.unsubscribe", {"sub": sub})
    assert f["error"]["code"] == -32001, f
    h.result("session.send", {"session_id": sid, "text": "echo after-unsubscribe"})
    time.sleep(0.3)
    # A second subscription left open: EOF must still exit cleanly.
    h.result("session.subscribe", {"session_id": sid})
    h.close()
    assert not [n for n in ctx.notes if n.get("params", {}).get("sub") == sub]


def t_bus_subscription(ctx):
    h = Host(ctx, "bus")
    sub = h.result("daemon.subscribe", {"since_seq": 0})["sub"]
    events = wait_events(h, sub, "daemon.started")
    assert events[-1]["kind"] == "daemon.started"
    h.close()


def t_discover_scoped_token(ctx):
    h = Host(ctx, "discover")
    h.result("daemon.info")  # the daemon is up (started by this host if need be)
    disc = ctx.discovery()
    r = h.result("r1.discover")
    assert r["scope"] == "read" and r["port"] == disc["port"] and r["host"] == "127.0.0.1", r
    assert r["token"] and r["token"] != disc["token"], "the host handed out the master token"
    assert r["expires_at"], r
    sid = start_session(h, "discover")
    r2 = h.result("r1.discover", {"scope": "session:" + sid})
    assert r2["scope"] == "session:" + sid and r2["token"] != disc["token"], r2
    f = h.call("r1.discover", {"scope": "admin"})
    assert f["error"]["code"] == -32602, f
    for m in ("daemon.mint_token", "daemon.rotate_token"):
        f = h.call(m, {"scope": "read"})
        assert f["error"]["code"] == -32004, f
    h.close()
    ctx.scoped = (disc["port"], r["token"])


def t_scoped_token_over_http(ctx):
    """The scoped token from r1.discover reads over HTTP and is refused for writing."""
    if not getattr(ctx, "scoped", None):
        t_discover_scoped_token(ctx)
    port, token = ctx.scoped
    def http(method, path, body=None, bearer=token):
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": "Bearer " + bearer, "Content-Type": "application/json"},
            method=method)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, (json.loads(raw) if raw else None)

    def rpc(method, params):
        return http("POST", "/v1/rpc", {"jsonrpc": "2.0", "id": 1, "method": method, "params": params})

    # Reading: JSON-RPC and the REST mirror.
    status, body = rpc("session.list", {})
    assert status == 200 and "sessions" in body["result"], (status, body)
    status, body = http("GET", "/v1/sessions")
    assert status == 200, (status, body)
    # Writing is refused for the read scope (-32004 / 403), not for bad params.
    status, body = rpc("session.start", {"workdir": ctx.workdir("http-write")})
    assert (status == 403 or (body or {}).get("error", {}).get("code") == -32004), (status, body)
    status, body = http("POST", "/v1/sessions", {"workdir": ctx.workdir("http-write")})
    assert status == 403, (status, body)
    # And a made-up token is not a token at all.
    status, _ = http("GET", "/v1/sessions", bearer="0" * 64)
    assert status == 401, status


def t_malformed_frames(ctx):
    h = Host(ctx, "malformed")
    h.send_raw(struct.pack("=I", 9) + b"{not json")
    f = h.recv()
    assert f["id"] is None and f["error"]["code"] == -32700, f
    h.send_raw(struct.pack("=I", 5) + b"[1,2]")
    f = h.recv()
    assert f["error"]["code"] == -32600, f
    h.send({"jsonrpc": "2.0", "id": 3, "params": {}})  # no method
    f = h.recv()
    assert f["id"] == 3 and f["error"]["code"] == -32600, f
    h.send_raw(struct.pack("=I", 0))  # empty frame
    f = h.recv()
    assert f["error"]["code"] == -32700, f
    # A notification is acted on but never answered: the next frame answers id 9.
    h.send({"jsonrpc": "2.0", "method": "daemon.info"})
    h.send({"jsonrpc": "2.0", "id": 9, "method": "daemon.info"})
    f = h.recv()
    assert f["id"] == 9 and "result" in f, f
    h.close()


def t_length_over_limit(ctx):
    h = Host(ctx, "oversize")
    h.send_raw(struct.pack("=I", 64 * 1024 * 1024 + 1))
    f = h.recv()
    assert f["error"]["code"] == -32005 and f["error"]["data"]["kind"] == "too_large", f
    h.close(expect_rc=1)


def t_truncated_frame(ctx):
    h = Host(ctx, "truncated")
    h.send_raw(struct.pack("=I", 100) + b'{"jsonrpc"')
    h.close(expect_rc=1)


def t_eof_clean_exit(ctx):
    h = Host(ctx, "eof")
    h.close(expect_rc=0)


BIG_AGENT = r"""
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    n = int(msg["text"])
    print(json.dumps({"kind": "agent.blob", "data": {"text": "b" * n}}), flush=True)
    print(json.dumps({"kind": "agent.done", "data": {}}), flush=True)
"""


def t_paged_journal_read(ctx):
    h = Host(ctx, "paged")
    sid = start_session(h, "paged")
    sub = h.result("session.subscribe", {"session_id": sid, "since_seq": 0})["sub"]
    # 3 MB of output in 64 KiB delta records: three pages or more.
    size = 3000000
    h.result("session.send", {"session_id": sid,
                              "text": f"head -c {size} /dev/zero | tr '\\0' a"})
    wait_events(h, sub, "tool.end", timeout=60)
    h.send({"jsonrpc": "2.0", "id": 77, "method": "journal.read",
            "params": {"session_id": sid, "since_seq": 0}})
    frames = []
    while True:
        f = h.recv(30)
        if f.get("id") != 77:
            ctx.notes.append(f)
            continue
        frames.append(f)
        page = f["result"]["page"]
        if page["index"] + 1 == page["count"]:
            break
    assert len(frames) >= 3, len(frames)
    assert all(f["_len"] <= MAX_OUT for f in frames)
    assert [f["result"]["page"]["index"] for f in frames] == list(range(len(frames)))
    records = [r for f in frames for r in f["result"]["records"]]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    text = "".join(r["data"].get("text", "") for r in records
                   if r["kind"] == "session.delta" and r["data"].get("stream") == "stdout")
    assert len(text) == size, len(text)
    for f in frames[:-1]:
        res = f["result"]
        assert res["more"] is True and res["next_seq"] == res["records"][-1]["seq"], res["page"]
    assert frames[-1]["result"]["next_seq"] == records[-1]["seq"]
    h.close()


def t_too_large_event(ctx):
    h = Host(ctx, "toolarge")
    sid = start_session(h, "toolarge", driver="exec",
                        command=[sys.executable, "-c", BIG_AGENT])
    sub = h.result("session.subscribe", {"session_id": sid, "since_seq": 0})["sub"]
    h.result("session.send", {"session_id": sid, "text": "2000000"})
    events = wait_events(h, sub, "agent.done", timeout=60)
    blob = [e for e in events if e["kind"] == "agent.blob"]
    assert len(blob) == 1, events
    assert blob[0]["too_large"] is True and "data" not in blob[0] and blob[0]["seq"] > 0, blob
    # journal.read replaces the record the same way.
    res = h.result("journal.read", {"session_id": sid, "since_seq": 0})
    stub = [r for r in res["records"] if r["kind"] == "agent.blob"]
    assert stub and stub[0].get("too_large") is True and "data" not in stub[0], stub
    h.close()


def t_valgrind_tour(ctx):
    """One host through every path worth checking for memory errors (each valgrind
    start costs seconds): a call, a malformed frame, a subscription with events, a
    paged journal.read of > 1 MB, an unsubscribe, and EOF with a subscription open."""
    h = Host(ctx, "tour")
    assert h.result("daemon.info")["pid"] == ctx.discovery()["pid"]
    h.send_raw(struct.pack("=I", 3) + b"{x]")
    assert h.recv()["error"]["code"] == -32700
    sid = start_session(h, "tour")
    sub = h.result("session.subscribe", {"session_id": sid, "since_seq": 0})["sub"]
    h.result("session.send", {"session_id": sid,
                              "text": "head -c 1100000 /dev/zero | tr '\\0' a"})
    wait_events(h, sub, "tool.end", timeout=60)
    h.send({"jsonrpc": "2.0", "id": 5, "method": "journal.read", "params": {"session_id": sid}})
    pages = []
    while not pages or pages[-1]["result"]["page"]["index"] + 1 < pages[-1]["result"]["page"]["count"]:
        f = h.recv(30)
        if f.get("id") == 5:
            pages.append(f)
    assert len(pages) >= 2, len(pages)
    assert h.result("session.unsubscribe", {"sub": sub}) == {}
    h.result("session.subscribe", {"session_id": sid})
    h.close()


TESTS = [
    ("call_round_trip", t_call_round_trip, False),
    ("rpc_error_passthrough", t_rpc_error_passthrough, False),
    ("subscription_events", t_subscription_events, False),
    ("bus_subscription", t_bus_subscription, False),
    ("discover_scoped_token", t_discover_scoped_token, False),
    ("scoped_token_over_http", t_scoped_token_over_http, False),
    ("malformed_frames", t_malformed_frames, False),
    ("length_over_limit", t_length_over_limit, True),
    ("truncated_frame", t_truncated_frame, False),
    ("eof_clean_exit", t_eof_clean_exit, False),
    ("paged_journal_read", t_paged_journal_read, False),
    ("too_large_event", t_too_large_event, False),
    ("valgrind_tour", t_valgrind_tour, True),
]


def shutdown_daemon(ctx):
    if not os.path.exists(os.path.join(ctx.home, "daemon.json")):
        return
    saved = ctx.valgrind
    ctx.valgrind = False
    try:
        h = Host(ctx, "shutdown")
        h.call("daemon.shutdown", {"grace_s": 1})
        h.close()
    finally:
        ctx.valgrind = saved
    deadline = time.monotonic() + 15
    while os.path.exists(os.path.join(ctx.home, "daemon.json")) and time.monotonic() < deadline:
        time.sleep(0.05)


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    host_bin = os.path.abspath(args.pop(0))
    valgrind = "--valgrind" in args
    wanted = [a for a in args if not a.startswith("--")]
    ctx = Ctx(host_bin, valgrind)
    passed = failed = 0
    try:
        if valgrind:
            # Auto-spawn is tested without valgrind. Under valgrind the client is too
            # slow for the spawn path's short handshake probes (at most 500 ms), so the
            # daemon is started first and the hosts dial without spawning.
            env = dict(os.environ, R1_HOME=ctx.home)
            subprocess.run([os.environ["R1_BIN"], "serve", "--detach"], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        for name, fn, vg in TESTS:
            if wanted and name not in wanted:
                continue
            if valgrind and not vg:
                continue
            ctx.notes = []
            label = name + (" (valgrind)" if valgrind else "")
            t0 = time.monotonic()
            try:
                fn(ctx)
                print(f"ok   {label} ({time.monotonic() - t0:.1f}s)", flush=True)
                passed += 1
            except Exception:  # noqa: BLE001 - any failure of a test is reported
                print(f"FAIL {label}", flush=True)
                traceback.print_exc()
                failed += 1
    finally:
        shutdown_daemon(ctx)
        shutil.rmtree(ctx.tmp, ignore_errors=True)
    print(f"native host: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
