#!/usr/bin/env python3
"""The compat listener (compat_listen): the Blender add-on's own protocol,
one JSON object per request and per answer, no delimiter, one request at a
time, against the real brokerd and mockd.

  tcp_roundtrip_matches_backend      over TCP: answers are the backend's (status, result), no newline
  unix_listener_mode_and_cleanup     over a Unix path: listen_mode, stale file replaced, removed at exit
  one_byte_writes                    a request split into 1-byte writes is framed, once
  two_requests_in_one_write          the second is answered after the first, never alongside it
  errors_are_addon_shaped            bad JSON (then closed), not an object, no type, too large (closed)
  backend_down_and_breaker           unavailable / circuit open as {"status":"error","message":"unavailable: ..."}
  timeout_is_an_error_answer         a silent backend: "timeout: ..." within the deadline
  cached_reads_served                a repeated read is answered from the cache (mockd sees one call)
  native_socket_alongside            NDJSON clients and compat clients at once, each its own shape
  disconnect_mid_request_harmless    clients that leave mid-request or mid-answer disturb nobody

Usage: test_compat.py --bin BUILD/bin [-k NAME] [--keep] [-v]
"""
import json
import os
import socket
import stat
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokertest as bt  # noqa: E402
from brokertest import t, short, assert_success  # noqa: E402

CASES, case = bt.case_list()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class AddonClient:
    """A client as the add-on's MCP server is: one JSON object out, then
    read until the bytes parse as one JSON value. Asserts nothing follows
    the value (no newline, no second answer)."""

    def __init__(self, addr, timeout=None):
        if isinstance(addr, tuple):
            self.sock = socket.create_connection(addr, timeout=timeout or t(5))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout or t(5))
            self.sock.connect(addr)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, data):
        if isinstance(data, dict):
            data = json.dumps(data).encode()
        self.sock.sendall(data)

    def recv_raw(self, timeout=None):
        """The bytes of exactly one JSON answer (AssertionError on EOF/timeout)."""
        deadline = time.monotonic() + (timeout or t(5))
        dec = json.JSONDecoder()
        while True:
            text = self.buf.decode("utf-8", "replace")
            if text.strip():
                try:
                    _, end = dec.raw_decode(text)
                    raw = self.buf[:end]
                    self.buf = self.buf[end:]
                    return raw
                except ValueError:
                    pass
            left = deadline - time.monotonic()
            assert left > 0, "no complete answer within the time; have %r" % self.buf[:300]
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                raise AssertionError("no complete answer in time; have %r" % self.buf[:300])
            assert chunk, "connection closed before an answer; have %r" % self.buf[:300]
            self.buf += chunk

    def recv(self, timeout=None):
        raw = self.recv_raw(timeout)
        v = json.loads(raw)
        assert isinstance(v, dict) and v.get("status") in ("success", "error"), short(v)
        if v["status"] == "error":
            assert set(v) == {"status", "message"}, "error shape: %s" % short(v)
        else:
            assert set(v) == {"status", "result"}, "success shape: %s" % short(v)
        return v

    def call(self, typ, params=None, **kw):
        req = {"type": typ}
        if params is not None:
            req["params"] = params
        req.update(kw)
        self.send(req)
        return self.recv()

    def expect_closed(self, timeout=None):
        """Nothing more arrives, then EOF (or a reset)."""
        self.sock.settimeout(timeout or t(5))
        try:
            chunk = self.sock.recv(4096)
        except ConnectionResetError:
            return
        assert chunk == b"" and self.buf == b"", "expected EOF, got %r" % (self.buf + chunk)

    def expect_silence(self, window):
        self.sock.settimeout(window)
        try:
            chunk = self.sock.recv(4096)
        except socket.timeout:
            return
        raise AssertionError("unexpected bytes: %r" % chunk[:300])


def error_message(r, prefix, what=""):
    assert r.get("status") == "error", "%s: expected an error, got %s" % (what, short(r))
    assert r["message"].startswith(prefix), "%s: expected %r..., got %s" % (what, prefix, short(r))
    return r["message"]


def compat_broker(env, m=None, compat=None, backend_kw=None, **kw):
    addr = m.addr if m else "unix:" + os.path.join(env.tmp, "m.sock")
    if compat is None:
        compat = "127.0.0.1:%d" % free_port()
    cfg = bt.broker_config(env, backends=[bt.backend(env, address=addr, **(backend_kw or {}))],
                           compat_listen=compat, **kw)
    b = env.broker(cfg)
    if compat.startswith("/"):
        b.compat_addr = compat
    else:
        host, port = compat.rsplit(":", 1)
        b.compat_addr = (host, int(port))
    return b


@case
def tcp_roundtrip_matches_backend(env):
    m = env.mockd()
    b = compat_broker(env, m)
    assert any("compat listener on 127.0.0.1:" in ln.get("msg", "") for ln in b.log_lines()), \
        "start log line"
    c = AddonClient(b.compat_addr)
    direct = m.call("get_object_info", {"name": "Cube"})
    raw = None
    c.send({"type": "get_object_info", "params": {"name": "Cube"}})
    raw = c.recv_raw()
    assert not raw.endswith(b"\n"), "an answer has no delimiter: %r" % raw[-20:]
    r = json.loads(raw)
    assert r == {"status": "success", "result": direct["result"]}, short(r)
    # a write, and a command the mock does not know: answered, as the add-on would
    r = c.call("create_object", {"type": "CUBE", "location": [0, 0, 1]})
    assert r["result"] == {"type": "create_object", "executed": True}, short(r)
    # the backend's own error: its message, no code prefix
    r = c.call("fault_error", {"message": "no such object"})
    assert r == {"status": "error", "message": "no such object"}, short(r)
    # a success reply that reports failure inside passes untouched
    r = c.call("echo", {"error": "x"})
    assert assert_success(r)["params"] == {"error": "x"}, short(r)
    c.expect_silence(0.2)
    c.close()
    assert m.stats()["overlaps"] == 0


@case
def unix_listener_mode_and_cleanup(env):
    m = env.mockd()
    path = os.path.join(env.tmp, "compat.sock")
    # a stale socket file (nothing listens) is replaced
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()
    b = compat_broker(env, m, compat=path, listen_mode="0660")
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode == 0o660, "compat socket mode %o, want listen_mode 0660" % mode
    c = AddonClient(path)
    assert assert_success(c.call("get_scene_info"))["name"] == "Scene"
    c.close()
    assert b.stop() == 0
    assert not os.path.exists(path), "compat socket file removed at exit"
    # a file that is not a socket is never replaced
    with open(path, "w") as f:
        f.write("x")
    cfg = bt.broker_config(env, backends=[bt.backend(env, address=m.addr)], compat_listen=path)
    bad = env.broker(cfg, wait_ready=False)
    bad.expect_exit0 = False
    assert bad.wait(t(10)) not in (0, None), "refused: %s" % bad.stderr()[-500:]
    assert "compat_listen" in bad.stderr() and "not a socket" in bad.stderr(), bad.stderr()[-500:]


@case
def one_byte_writes(env):
    m = env.mockd()
    b = compat_broker(env, m)
    c = AddonClient(b.compat_addr)
    req = json.dumps({"type": "echo", "params": {"text": "h\u00e9llo \u2603", "v": [1, 2.5, -3e2],
                                                  "nested": {"a": [{}, []]}}}).encode()
    for i in range(len(req)):
        c.send(req[i:i + 1])
        time.sleep(0.002)
    r = assert_success(c.recv())
    assert r["params"]["text"] == "h\u00e9llo \u2603" and r["params"]["v"] == [1, 2.5, -300.0], \
        short(r)
    c.expect_silence(0.2)
    assert m.calls("echo") == 1


@case
def two_requests_in_one_write(env):
    m = env.mockd()
    # two backend connections: were both requests taken at once, the fast
    # one would be answered first
    b = compat_broker(env, m, backend_kw={"pool_size": 2})
    c = AddonClient(b.compat_addr)
    c.send(b'{"type": "fault_slow", "params": {"ms": 300}}\n{"type": "echo", "params": {"n": 2}}')
    t0 = time.monotonic()
    first = c.recv()
    assert first["status"] == "success" and "params" not in first["result"], short(first)
    second = assert_success(c.recv())
    assert second["params"] == {"n": 2}, short(second)
    assert time.monotonic() - t0 >= 0.28, "the slow one came first"
    c.expect_silence(0.2)
    st = m.stats()
    assert st["overlaps"] == 0


@case
def errors_are_addon_shaped(env):
    m = env.mockd()
    b = compat_broker(env, m)
    c = AddonClient(b.compat_addr)
    # valid JSON, not a valid request: answered, connection kept
    error_message(_send_recv(c, b'[1, 2]'), "bad_request: request must be a JSON object")
    error_message(_send_recv(c, b'{"params": {}}'), "bad_request: \"type\" is required")
    error_message(_send_recv(c, b'{"type": "Bad Type"}'), "bad_request: \"type\" must be")
    error_message(_send_recv(c, b'{"type": "echo", "params": [1]}'),
                  "bad_request: \"params\" must be an object")
    assert assert_success(c.call("ping")) is not None, "still usable"
    # not JSON: answered, then closed (no delimiter to resume at)
    c.send(b'{"type": nope}')
    error_message(c.recv(), "bad_request: request is not valid JSON")
    c.expect_closed()
    c.close()
    # a bare string at the top cannot be framed either
    c = AddonClient(b.compat_addr)
    c.send(b'"get_scene_info"')
    error_message(c.recv(), "bad_request:")
    c.expect_closed()
    c.close()
    # over max_request_bytes (65536 in these tests): too_large, then closed
    c = AddonClient(b.compat_addr)
    c.send(b'{"type": "echo", "params": {"s": "' + b"x" * 70000 + b'"}}')
    msg = error_message(c.recv(), "too_large: request exceeds max_request_bytes")
    assert "closing the connection" in msg, msg
    c.expect_closed()
    c.close()
    # a request cut short by the client's EOF is answered too
    c = AddonClient(b.compat_addr)
    c.send(b'{"type": "echo", "params": {')
    c.sock.shutdown(socket.SHUT_WR)
    error_message(c.recv(), "bad_request: the connection ended inside a request")
    c.close()
    assert m.calls("echo") == 0, "no bad request reached the backend"


def _send_recv(c, data):
    c.send(data)
    return c.recv()


@case
def backend_down_and_breaker(env):
    # nothing listens at the backend's address
    b = compat_broker(env, None, backend_kw={"breaker": {"failures": 2, "open_ms": 30000}})
    c = AddonClient(b.compat_addr)
    for _ in range(2):
        msg = error_message(c.call("create_object"), "unavailable: ")
        assert "blender" in msg, msg
    msg = error_message(c.call("create_object"), "unavailable: ")
    assert "circuit open" in msg and "refuses connections" in msg, msg


@case
def timeout_is_an_error_answer(env):
    m = env.mockd()
    b = compat_broker(env, m, backend_kw={"request_timeout_ms": 300})
    c = AddonClient(b.compat_addr)
    t0 = time.monotonic()
    msg = error_message(c.call("fault_hang"), "timeout: ")
    assert "300 ms" in msg, msg
    assert time.monotonic() - t0 < t(3)
    # the deadline is the request's own with timeout_ms (a native key, honoured)
    msg = error_message(c.call("fault_hang", timeout_ms=100), "timeout: ")
    assert "100 ms" in msg, msg
    assert assert_success(c.call("ping")) is not None, "usable after a timeout"


@case
def cached_reads_served(env):
    m = env.mockd()
    b = compat_broker(env, m)
    c = AddonClient(b.compat_addr)
    c.send({"type": "get_object_info", "params": {"name": "Camera"}})
    first = c.recv_raw()
    for _ in range(3):
        c.send({"type": "get_object_info", "params": {"name": "Camera"}})
        assert c.recv_raw() == first, "a cached answer is the same bytes"
    assert m.calls("get_object_info") == 1, "served from the cache"
    # a native client's read is answered from the entry the compat one filled
    with b.connect() as n:
        # the key is the params' bytes as written: the same spacing
        n.send(b'{"id": 1, "type": "get_object_info", "params": {"name": "Camera"}}\n')
        r = n.recv_one()
        assert r["cached"] is True and r["result"] == json.loads(first)["result"], short(r)
    assert m.calls("get_object_info") == 1


@case
def native_socket_alongside(env):
    m = env.mockd(None, "--delay-us", "2000")
    b = compat_broker(env, m, backend_kw={"pool_size": 4})
    cs = [AddonClient(b.compat_addr) for _ in range(4)]
    ns = [b.connect() for _ in range(4)]
    for rnd in range(20):
        for i, c in enumerate(cs):
            c.send({"type": "echo", "params": {"c": i, "r": rnd}})
        for i, n in enumerate(ns):
            n.send(bt.request(rnd * 10 + i, "echo", {"n": i, "r": rnd}))
        for i, c in enumerate(cs):
            assert assert_success(c.recv())["params"] == {"c": i, "r": rnd}
        for i, n in enumerate(ns):
            r = n.recv_one()
            assert r["id"] == rnd * 10 + i and r["result"]["params"] == {"n": i, "r": rnd}, short(r)
    for c in cs:
        c.expect_silence(0.05)
        c.close()
    for n in ns:
        n.close()
    assert m.stats()["overlaps"] == 0


@case
def disconnect_mid_request_harmless(env):
    m = env.mockd()
    b = compat_broker(env, m, backend_kw={"pool_size": 2})
    steady = AddonClient(b.compat_addr)
    steady.send({"type": "fault_slow", "params": {"ms": 400}})
    for _ in range(5):
        # half a request, then gone
        a = AddonClient(b.compat_addr)
        a.send(b'{"type": "echo", "par')
        a.close()
        # a whole request, gone before its answer
        a = AddonClient(b.compat_addr)
        a.send({"type": "fault_slow", "params": {"ms": 100}})
        a.close()
        # a reset (SO_LINGER 0) while the answer is on its way
        a = AddonClient(b.compat_addr)
        a.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        a.send({"type": "echo", "params": {"big": "y" * 10000}})
        a.close()
    assert_success(steady.recv())
    assert assert_success(steady.call("echo", {"after": 1}))["params"] == {"after": 1}
    steady.close()
    # every one of them was closed by the broker: what is left are the
    # listeners and the backend connections
    def settled():
        return sum(1 for v in b.fds().values() if v.startswith("socket:")) <= 3 + 2 + 1
    assert bt.wait_for(settled, t(5)), "client sockets closed: %r" % b.fds()


if __name__ == "__main__":
    sys.exit(bt.run_cases(CASES, __doc__))
