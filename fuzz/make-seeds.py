#!/usr/bin/env python3
"""Writes the checked-in seed corpora under fuzz/corpus/<target>/ (small, meaningful
inputs: valid lines, requests and near misses). Run it again after changing it; the
files are committed. `$SID` in rpc_dispatch and http_conn seeds is replaced by the
harness with the id of a live session of the fuzzed daemon; the token and port are
the harness's fixed ones (fuzz/src/lib.rs)."""

import json
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN = "f0" * 32
HOST = "127.0.0.1:8080"


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def line(seq, kind, data, at="2026-05-02T18:30:00.123Z", v=1, crc=None):
    body = ('"at":%s,"kind":%s,"data":%s}' % (
        json.dumps(at), json.dumps(kind), json.dumps(data, separators=(",", ":")))).encode()
    c = crc32c(body) if crc is None else crc
    return b'{"v":%d,"seq":%d,"crc":"%08x",' % (v, seq, c) + body


def journal(*lines, tail=b""):
    return b"".join(l + b"\n" for l in lines) + tail


def write(target, name, data: bytes):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


created = line(1, "session.created", {"session_id": "sess_1", "workdir": "/w", "driver": "shell",
                                       "epoch": "0123456789abcdef", "r1_version": "0.1.0"})
user = line(2, "user.input", {"text": "ls"})
delta = line(3, "session.delta", {"stream": "stdout", "text": "a\nb"})
end = line(4, "tool.end", {"lane_id": 2, "ok": True, "exit_code": 0, "duration_ms": 3})
repaired = line(5, "journal.repaired", {"dropped_bytes": 10, "dropped_lines": 1,
                                         "last_good_seq": 4, "epoch": "fedcba9876543210"})

# journal_line: one line (no newline); also "kind\0data" for the writer round trip.
for d in ("journal_line", "journal_open"):
    shutil.rmtree(os.path.join(HERE, "corpus", d), ignore_errors=True)
write("journal_line", "valid-created", created)
write("journal_line", "valid-delta", delta)
write("journal_line", "valid-unicode", line(9, "agent.say", {"text": "héllo ✓ \u0000"}))
write("journal_line", "bad-crc", line(3, "session.delta", {"text": "x"}, crc=0x12345678))
write("journal_line", "newer-version", line(1, "session.created", {}, v=2))
write("journal_line", "leading-zero-seq", created.replace(b'"seq":1,', b'"seq":01,'))
write("journal_line", "torn", delta[: len(delta) // 2])
write("journal_line", "prefix-only", b'{"v":1,"seq":1,"crc":"00000000",')
write("journal_line", "body-not-object", line(1, "k", None).replace(b'"at"', b'"at" '))
write("journal_line", "emit-kind-data", b'agent.echo\x00{"a":[1,2,{"b":null}]}')
write("journal_line", "emit-unicode-kind", 'agent.é\x00"text"'.encode())
# Regressions: what the fuzzer found (kept so every smoke run replays them).
write("journal_line", "regression-escaped-kind", b'{"v":1,"seq":1,"crc":"00000000",')
write("journal_line", "regression-duplicate-seq-field",
      b'{"v":1,"seq":1,"crc":"00000000","at":"2026-05-02T18:30:00.123Z","kind":"k","data":{},"seq":999}')

# journal_open: one flag byte (bit 0: clean marker, bit 1: append after open,
# high nibble: a seq to seek to), then the file.
write("journal_open", "intact", b"\x00" + journal(created, user, delta, end))
write("journal_open", "torn-tail", b"\x00" + journal(created, user, tail=delta[:20]))
write("journal_open", "torn-tail-complete-bad-line", b"\x00" + journal(created, user, delta[:30]))
write("journal_open", "damage-in-middle", b"\x00" + journal(created, user[:-3] + b"xx}", delta, end))
write("journal_open", "seq-gap", b"\x20" + journal(created, user, end))
write("journal_open", "duplicate-seq", b"\x00" + journal(created, user, user))
write("journal_open", "newer-version-tail", b"\x00" + journal(created, line(2, "x", {}, v=2)))
write("journal_open", "clean-marker", b"\x01" + journal(created, user))
write("journal_open", "append-after-repair", b"\x32" + journal(created, user, delta, end, repaired))
write("journal_open", "empty", b"\x00")
write("journal_open", "only-garbage", b"\x02" + b"not a journal\n")
# Bit 3: the harness recomputes every CRC, so these stale ones do not matter.
write("journal_open", "crc-fixed-seq-gap", b"\x08" + journal(created, line(3, "k", {}, crc=0)))
write("journal_open", "crc-fixed-shape", b"\x08" + journal(created, b'{"v":1,"seq":2,"crc":"00000000","at":1,"kind":"k"}'))


# rpc_dispatch: one message, as a unix line or an HTTP body.
def rpc(method, params=None, id=1):
    m = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        m["params"] = params
    if id is not None:
        m["id"] = id
    return json.dumps(m, separators=(",", ":")).encode()


shutil.rmtree(os.path.join(HERE, "corpus", "rpc_dispatch"), ignore_errors=True)
seeds = {
    "hello": rpc("daemon.hello", {"protocol_version": 1, "client": "fuzz"}),
    "hello-wrong-version": rpc("daemon.hello", {"protocol_version": 2}),
    "info": rpc("daemon.info"),
    "discover": rpc("rpc.discover", id="d"),
    "list": rpc("session.list", {"state": "running"}),
    "start": rpc("session.start", {"workdir": "/tmp", "name": "f"}),
    "start-relative": rpc("session.start", {"workdir": "tmp"}),
    "get": rpc("session.get", {"session_id": "$SID"}),
    "get-traversal": rpc("session.get", {"session_id": "../../etc"}),
    "send": rpc("session.send", {"session_id": "$SID", "text": "hello"}),
    "pause": rpc("session.pause", {"session_id": "$SID"}),
    "resume": rpc("session.resume", {"session_id": "$SID"}),
    "subscribe": rpc("session.subscribe", {"session_id": "$SID", "since_seq": 0}),
    "subscribe-epoch": rpc("session.subscribe", {"session_id": "$SID", "since_seq": 1, "epoch": "x"}),
    "unsubscribe": rpc("session.unsubscribe", {"sub": 1}),
    "bus": rpc("daemon.subscribe", {"since_seq": 0}),
    "read": rpc("journal.read", {"session_id": "$SID", "since_seq": 0, "limit": 2}),
    "mint": rpc("daemon.mint_token", {"scope": "session:$SID", "ttl_s": 60}),
    "unknown-field": rpc("daemon.info", {"x": 1}),
    "params-array": rpc("session.list", [1]),
    "notification": rpc("session.list", None, id=None),
    "unknown-method": rpc("no.such", id=None) + b" ",
    "batch": b"[" + rpc("daemon.info") + b"," + rpc("session.list", id=2) + b",1," + rpc("x", id=None) + b"]",
    "empty-batch": b"[]",
    "parse-error": b'{"jsonrpc":"2.0","method":"foobar, "params":"bar", "baz]',
    "bad-id": b'{"jsonrpc":"2.0","method":"daemon.info","id":{}}',
    "deep": b"[" * 200 + b"]" * 200,
}
for name, data in seeds.items():
    write("rpc_dispatch", name, data)


# http_conn: bytes on one connection.
def req(method, path, headers=(), body=b"", host=HOST, auth=True):
    h = [f"{method} {path} HTTP/1.1"]
    if host is not None:
        h.append(f"Host: {host}")
    if auth:
        h.append(f"Authorization: Bearer {TOKEN}")
    h.extend(headers)
    if body or method in ("POST", "PUT"):
        h.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(h) + "\r\n\r\n").encode() + body


def ws_frame(payload: bytes, opcode=1):
    mask = b"\x01\x02\x03\x04"
    n = len(payload)
    head = bytes([0x80 | opcode])
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


WS = ["Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", f"Sec-WebSocket-Protocol: r1.bearer, {TOKEN}"]
shutil.rmtree(os.path.join(HERE, "corpus", "http_conn"), ignore_errors=True)
seeds = {
    "health": req("GET", "/v1/health", auth=False),
    "discover": req("GET", "/v1/discover", auth=False),
    "hello": req("GET", "/v1/hello?nonce=00112233445566778899aabbccddeeff", auth=False),
    "rpc": req("POST", "/v1/rpc", ["Content-Type: application/json"], rpc("daemon.info")),
    "rpc-batch": req("POST", "/v1/rpc", [], b"[" + rpc("session.list") + b"," + rpc("x", id=2) + b"]"),
    "list": req("GET", "/v1/sessions?state=running"),
    "start": req("POST", "/v1/sessions", [], b'{"workdir":"/tmp"}'),
    "get": req("GET", "/v1/sessions/$SID"),
    "send": req("POST", "/v1/sessions/$SID/send", [], b'{"text":"hi"}'),
    "pause-resume": req("POST", "/v1/sessions/$SID/pause") + req("POST", "/v1/sessions/$SID/resume"),
    "journal": req("GET", "/v1/sessions/$SID/journal?since_seq=0&epoch=abc"),
    "ticket": req("POST", "/v1/sse-ticket", [], b'{"session_id":"$SID"}'),
    "sse-bad-ticket": req("GET", "/v1/sessions/$SID/sse?ticket=nope&since_seq=0", ["Last-Event-ID: x:1"], auth=False),
    "preflight": req("OPTIONS", "/v1/rpc", ["Origin: http://localhost:8080",
                                           "Access-Control-Request-Method: POST"], auth=False),
    "foreign-origin": req("POST", "/v1/rpc", ["Origin: http://evil.example"], rpc("daemon.info")),
    "rebinding-host": req("GET", "/v1/health", host="evil.example:8080", auth=False),
    "no-host": req("GET", "/v1/health", host=None, auth=False),
    "wrong-method": req("PUT", "/v1/rpc"),
    "not-found": req("GET", "/v1/nope/../health"),
    "chunked": req("POST", "/v1/rpc", ["Transfer-Encoding: chunked"], b"")[:-len(b"Content-Length: 0\r\n\r\n")]
               + b"\r\n" + b"5\r\n[1,2]\r\n0\r\n\r\n",
    "pipelined": req("GET", "/v1/health", auth=False) + req("GET", "/v1/sessions") + req("DELETE", "/v1/sessions/x"),
    "ws": req("GET", "/v1/ws", WS, auth=False) + ws_frame(rpc("daemon.info")) + ws_frame(rpc("session.subscribe", {"session_id": "$SID", "since_seq": 0}, id=2)) + ws_frame(b"\x03\xe8", opcode=8),
    "ws-session": req("GET", "/v1/sessions/$SID/ws?since_seq=0", WS, auth=False) + ws_frame(b"[]", opcode=2),
    "ws-old-proto": req("GET", "/v1/ws", WS[:-1] + [f"Sec-WebSocket-Protocol: r1.bearer, {TOKEN}, r1.proto.v9"], auth=False),
    "ws-no-token": req("GET", "/v1/ws", WS[:-1] + ["Sec-WebSocket-Protocol: r1.bearer"], auth=False),
    "http10": b"GET /v1/health HTTP/1.0\r\nHost: 127.0.0.1:8080\r\n\r\n",
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
}
for name, data in seeds.items():
    write("http_conn", name, data)
