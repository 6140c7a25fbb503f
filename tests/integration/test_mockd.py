#!/usr/bin/env python3
"""Integration test for the mock backend (bin/mockd) and the load generator
(bin/loadgen).

The broker's own integration tests and benchmarks trust these two programs to
judge it, so they are checked here on their own, with raw sockets: every
command and fault mode of mockd (JSON-completeness framing, echo ids, hang,
close, partial, garbage, drip, slow, huge, error, array, empty, extra,
nonascii), its overlap counter, ndjson framing, --fault, --delay-us, --work-us, refusal of
an address in use, and SIGTERM handling; then loadgen in direct mode against
mockd, and in broker mode against a small fake broker written here that answers
out of order, with error codes, twice, or not at all.

Usage: test_mockd.py --bin BUILD/bin     (stdlib only; exits non-zero on failure)
"""
import argparse
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


class Mockd:
    """A running mockd; stdout and stderr go to files so it can never block on
    a full pipe."""

    def __init__(self, bindir, tmp, listen, *extra):
        self.tmp = tmp
        self.out_path = os.path.join(tmp, "mockd-%d.out" % id(self))
        self.err_path = os.path.join(tmp, "mockd-%d.err" % id(self))
        self.out = open(self.out_path, "wb")
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(
            [os.path.join(bindir, "mockd"), "--listen", listen, *extra],
            stdout=self.out, stderr=self.err)
        self.addr = self._wait_ready()

    def _wait_ready(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stderr()
            for line in text.splitlines():
                if line.startswith("mockd: listening on "):
                    return line[len("mockd: listening on "):].split(" ")[0]
            if self.proc.poll() is not None:
                raise AssertionError("mockd exited %d before ready: %s"
                                     % (self.proc.returncode, text.strip()))
            time.sleep(0.01)
        raise AssertionError("mockd not ready within %.0f s" % timeout)

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def connect(self, timeout=2.0):
        if self.addr.startswith("unix:"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(self.addr[5:])
            return s
        host, port = self.addr.rsplit(":", 1)
        return socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)

    def stop(self, timeout=5.0):
        """SIGTERM; returns (exit code, stdout text)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.out.close()
        self.err.close()
        with open(self.out_path, "rb") as f:
            return rc, f.read().decode("utf-8", "replace")


def read_value(s, timeout=2.0, buf=b""):
    """Read until buf holds one complete JSON value; returns (value, rest)."""
    dec = json.JSONDecoder()
    deadline = time.monotonic() + timeout
    while True:
        text = buf.decode("utf-8", "replace").lstrip()
        if text:
            try:
                val, end = dec.raw_decode(text)
                return val, text[end:].encode()
            except ValueError:
                pass
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no complete JSON value within %.1f s: %r" % (timeout, buf[:200]))
        s.settimeout(left)
        chunk = s.recv(1 << 20)
        if not chunk:
            raise AssertionError("EOF before a complete JSON value: %r" % buf[:200])
        buf += chunk


def call(s, typ, params=None, timeout=2.0):
    req = {"type": typ}
    if params is not None:
        req["params"] = params
    s.sendall(json.dumps(req).encode())
    val, rest = read_value(s, timeout)
    assert rest.strip() == b"", "unexpected bytes after the answer: %r" % rest[:100]
    return val


def read_all(s, window):
    """Everything received within `window` seconds: (bytes, eof)."""
    data = b""
    deadline = time.monotonic() + window
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, False
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            return data, False
        if not chunk:
            return data, True
        data += chunk


def is_json(b):
    try:
        json.loads(b)
        return True
    except ValueError:
        return False


def stats(m):
    with m.connect() as s:
        r = call(s, "mock_stats")
    assert r["status"] == "success", r
    return r["result"]


def run_loadgen(ctx, *args, timeout=20):
    p = subprocess.run([os.path.join(ctx.bindir, "loadgen"), *args], capture_output=True,
                       timeout=timeout)
    out = p.stdout.decode().strip()
    lines = out.splitlines()
    res = json.loads(lines[-1]) if lines else None
    if lines:
        assert len(lines) == 1, "loadgen printed more than one stdout line: %r" % out
    return p.returncode, res, p.stderr.decode()


# ------------------------------------------------------------------ commands

@test
def basic_commands_unix_and_tcp(ctx):
    for m in (ctx.unix, ctx.tcp):
        with m.connect() as s:
            assert call(s, "ping") == {"status": "success", "result": {"pong": True}}
            scene = call(s, "get_scene_info", {})
            assert scene["status"] == "success", scene
            assert scene["result"]["object_count"] == len(scene["result"]["objects"]) >= 1
            obj = call(s, "get_object_info", {"name": "Cube"})
            assert obj["result"]["name"] == "Cube" and len(obj["result"]["location"]) == 3
            miss = call(s, "get_object_info", {"name": "Nope"})
            assert miss == {"status": "error", "message": "Object not found: Nope"}, miss
            other = call(s, "create_object", {"type": "CUBE"})
            assert other == {"status": "success",
                             "result": {"type": "create_object", "executed": True}}, other
            bad = call(s, "fault_nosuchmode")
            assert bad["status"] == "error", bad


@test
def calls_counted_per_type(ctx):
    """mock_stats {"type": T} reports how many requests of type T arrived,
    over every connection and every mockd thread (what the broker's cache
    tests count)."""
    m = Mockd(ctx.bindir, ctx.tmp, "unix:" + os.path.join(ctx.tmp, "calls.sock"),
              "--threads", "2")

    def calls(typ):
        with m.connect() as s:
            return call(s, "mock_stats", {"type": typ})["result"]["calls"]
    before = {t: calls(t) for t in ("get_object_info", "ping", "never_sent_type")}
    # Connections go round-robin to the two threads: both tables are summed.
    with m.connect() as a, m.connect() as b:
        for _ in range(3):
            call(a, "get_object_info", {"name": "Cube"})
        call(b, "get_object_info", {"name": "Camera"})
        call(b, "ping")
    assert calls("get_object_info") - before["get_object_info"] == 4
    assert calls("ping") - before["ping"] == 1
    assert calls("never_sent_type") == 0
    with m.connect() as s:
        assert "calls" not in call(s, "mock_stats")["result"], "only when params.type is given"
    assert m.stop()[0] == 0


@test
def echo_params_conn_and_seq(ctx):
    with ctx.unix.connect() as a, ctx.unix.connect() as b:
        conns = set()
        for i in range(1, 6):
            p = {"i": i, "s": "x" * i, "nested": {"a": [1, {"b": None}]}}
            r = call(a, "echo", p)["result"]
            assert r["params"] == p and r["seq"] == i, r
            conns.add(r["conn"])
        assert len(conns) == 1
        rb = call(b, "echo", {"k": 1})["result"]
        assert rb["seq"] == 1 and rb["conn"] not in conns, rb
        assert call(a, "echo")["result"]["params"] == {}


@test
def framing_by_json_completeness(ctx):
    # Braces and quotes inside strings, escapes, nesting, sent one byte at a time.
    p = {"s": "}{][\"\\", "t": "a\\\"}", "n": [[{"x": "}"}]], "u": "\u00e9"}
    req = json.dumps({"type": "echo", "params": p}).encode()
    with ctx.tcp.connect() as s:
        for i in range(len(req)):
            s.sendall(req[i:i + 1])
            if i % 16 == 0:
                time.sleep(0.002)
        val, rest = read_value(s)
        assert val["result"]["params"] == p and rest == b"", (val, rest)


@test
def non_json_request_is_refused(ctx):
    with ctx.unix.connect() as s:
        s.sendall(b"@@ hello")
        val, _ = read_value(s)
        assert val["status"] == "error", val
        _, eof = read_all(s, 1.0)
        assert eof, "connection left open after a request that cannot be framed"


# ------------------------------------------------------------------ faults

@test
def fault_hang(ctx):
    with ctx.unix.connect() as s:
        s.sendall(b'{"type":"fault_hang","params":{}}')
        data, eof = read_all(s, 0.3)
        assert data == b"" and not eof, (data, eof)


@test
def fault_close(ctx):
    with ctx.tcp.connect() as s:
        s.sendall(b'{"type":"fault_close"}')
        data, eof = read_all(s, 2.0)
        assert data == b"" and eof, (data, eof)


@test
def fault_partial(ctx):
    with ctx.unix.connect() as s:
        s.sendall(b'{"type":"fault_partial"}')
        data, eof = read_all(s, 2.0)
        assert eof and data and not is_json(data), (data, eof)
        assert data.startswith(b'{"status"'), data


@test
def fault_garbage(ctx):
    with ctx.unix.connect() as s:
        s.sendall(b'{"type":"fault_garbage"}')
        data, eof = read_all(s, 0.3)
        assert data.startswith(b"@@") and not is_json(data) and not eof, (data, eof)


@test
def fault_drip(ctx):
    with ctx.tcp.connect() as s:
        s.sendall(b'{"type":"fault_drip","params":{"interval_ms":15}}')
        data, arrivals = b"", []
        t0 = time.monotonic()
        while not is_json(data):
            s.settimeout(5.0)
            chunk = s.recv(4096)
            assert chunk, "EOF during drip after %r" % data
            data += chunk
            arrivals.append(time.monotonic() - t0)
        val = json.loads(data)
        assert val["status"] == "success", val
        n = len(data)
        # One byte per 15 ms: the whole answer takes about (n - 1) * 15 ms and
        # arrives in many separate reads.
        assert arrivals[-1] >= (n - 1) * 0.015 * 0.7, (n, arrivals[-1])
        assert len(arrivals) >= n // 4, (n, len(arrivals))


@test
def fault_slow_does_not_block_others(ctx):
    with ctx.unix.connect() as a, ctx.unix.connect() as b:
        t0 = time.monotonic()
        a.sendall(b'{"type":"fault_slow","params":{"ms":500}}')
        time.sleep(0.02)
        assert call(b, "ping")["status"] == "success"
        t_ping = time.monotonic() - t0
        val, _ = read_value(a, 3.0)
        t_slow = time.monotonic() - t0
        assert val["status"] == "success", val
        assert t_ping < 0.4, "another connection waited %.3f s behind slow" % t_ping
        assert 0.49 <= t_slow < 3.0, t_slow


@test
def fault_huge(ctx):
    with ctx.tcp.connect() as s:
        val = call(s, "fault_huge", {"bytes": 300000}, timeout=5.0)
        assert val["status"] == "success" and len(val["result"]) == 300000
        val = call(s, "fault_huge", timeout=5.0)
        assert len(val["result"]) == 1 << 20


@test
def fault_error_array_empty(ctx):
    with ctx.unix.connect() as s:
        assert call(s, "fault_error") == {"status": "error", "message": "mock error"}
        assert call(s, "fault_error", {"message": "boom \"x\""}) == \
            {"status": "error", "message": "boom \"x\""}
        assert call(s, "fault_array") == [1, 2, 3]
        assert call(s, "fault_empty") == {}
        assert call(s, "ping")["status"] == "success"  # connection still usable


@test
def fault_extra(ctx):
    with ctx.unix.connect() as s:
        s.sendall(b'{"type":"fault_extra"}')
        val, rest = read_value(s)
        assert val["status"] == "success", val
        more, _ = read_all(s, 0.2)
        rest += more
        assert rest == b'{"status":"success","result":{}}', rest


@test
def fault_nonascii_both_ways(ctx):
    with ctx.tcp.connect() as s:
        ascii_req = json.dumps({"type": "fault_nonascii", "params": {"name": "caf\u00e9"}},
                               ensure_ascii=True).encode()
        s.sendall(ascii_req)
        assert read_value(s)[0] == {"status": "success", "result": {"ok": True}}
        raw_req = json.dumps({"type": "fault_nonascii", "params": {"name": "caf\u00e9"}},
                             ensure_ascii=False).encode("utf-8")
        assert any(b >= 0x80 for b in raw_req)
        s.sendall(raw_req)
        assert read_value(s)[0] == {"status": "error", "message": "non-ascii byte received"}


@test
def overlap_counter(ctx):
    before = stats(ctx.tcp)["overlaps"]
    with ctx.tcp.connect() as s:
        # Two requests in one write: what the real add-on chokes on.
        s.sendall(b'{"type":"echo","params":{"n":1}}{"type":"echo","params":{"n":2}}')
        v1, rest = read_value(s)
        v2, rest = read_value(s, buf=rest)
        assert v1["result"]["params"] == {"n": 1} and v1["result"]["seq"] == 1, v1
        assert v2["result"]["params"] == {"n": 2} and v2["result"]["seq"] == 2, v2
    after = stats(ctx.tcp)["overlaps"]
    assert after == before + 1, (before, after)
    # A request sent while a slow one is pending is an overlap too.
    with ctx.tcp.connect() as s:
        s.sendall(b'{"type":"fault_slow","params":{"ms":100}}')
        time.sleep(0.02)
        s.sendall(b'{"type":"ping"}')
        v1, rest = read_value(s)
        v2, rest = read_value(s, buf=rest)
        assert v1["status"] == v2["status"] == "success" and rest == b"", (v1, v2, rest)
    assert stats(ctx.tcp)["overlaps"] == before + 2


@test
def stats_counters(ctx):
    st = stats(ctx.unix)
    for k in ("connections_total", "connections_open", "max_connections_open", "requests",
              "overlaps", "bytes_in", "bytes_out"):
        assert isinstance(st[k], int) and st[k] >= 0, (k, st)
    assert st["connections_open"] >= 1 and st["max_connections_open"] >= 2, st
    assert st["requests"] > 10 and st["bytes_in"] > 0 and st["bytes_out"] > 0, st


# ------------------------------------------------------------------ options

@test
def ndjson_threads_and_delay(ctx):
    m = Mockd(ctx.bindir, ctx.tmp, "127.0.0.1:0", "--framing", "ndjson", "--threads", "2",
              "--delay-us", "30000")
    try:
        socks = [m.connect() for _ in range(4)]
        for i, s in enumerate(socks):
            t0 = time.monotonic()
            s.sendall(b'{"type":"echo","params":{"i":%d}}\n' % i)
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(4096)
                assert chunk, "EOF"
                data += chunk
            dt = time.monotonic() - t0
            assert json.loads(data)["result"]["params"] == {"i": i}
            assert data.count(b"\n") == 1 and dt >= 0.029, (data, dt)
        for s in socks:
            s.close()
    finally:
        rc, out = m.stop()
    assert rc == 0 and json.loads(out.strip().splitlines()[-1])["requests"] == 4, (rc, out)


def thread_states(pid):
    """{tid: state letter} of every thread of pid but the main one (mockd's
    main thread only waits for signals). 'R' is running or runnable, i.e.
    wanting a CPU whether or not it has one; 'S' is asleep."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        if int(tid) == pid:
            continue
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                out[int(tid)] = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            pass  # the thread went away between listdir and open
    return out


def two_at_once(m, timeout=10.0):
    """One echo on each of two connections, sent back to back; until both
    answers are in, sample the state of mockd's threads every 5 ms.
    Returns (seconds from the send to each answer, in arrival order; the
    largest fraction of samples in which one thread was runnable; samples)."""
    socks = [m.connect(timeout=timeout) for _ in range(2)]
    bufs = {s: b"" for s in socks}
    arrivals, runnable, samples = [], {}, 0
    try:
        t0 = time.monotonic()
        for i, s in enumerate(socks):
            s.sendall(b'{"type":"echo","params":{"i":%d}}' % i)
        pending = list(socks)
        while pending:
            assert time.monotonic() - t0 < timeout, "no answers within %.0f s" % timeout
            ready, _, _ = select.select(pending, [], [], 0.005)
            for s in ready:
                chunk = s.recv(65536)
                assert chunk, "EOF before the answer"
                bufs[s] += chunk
                if is_json(bufs[s]):
                    arrivals.append(time.monotonic() - t0)
                    pending.remove(s)
            if pending:
                samples += 1
                for tid, st in thread_states(m.proc.pid).items():
                    runnable[tid] = runnable.get(tid, 0) + (st == "R")
    finally:
        for s in socks:
            s.close()
    for i, s in enumerate(socks):
        assert json.loads(bufs[s])["result"]["params"] == {"i": i}, bufs[s][:200]
    return arrivals, max(runnable.values(), default=0) / max(samples, 1), samples


@test
def work_us_burns_cpu_on_the_serving_thread(ctx):
    """--work-us occupies the serving thread for W per request, as Blender's
    main thread is while it runs a command; --delay-us W leaves it free.

    Asserted as behaviour, not as a CPU-time figure: the spin ends at a
    wall-clock deadline whether or not it had a CPU, so on a loaded machine
    the CPU it gets can be any fraction of W (an earlier "CPU >= 75% of
    requests x W" check failed that way). Instead, with --threads 1 and two
    requests sent at once on two connections:
    - the later answer arrives at least 2 W after the send: the second
      request waits for the first one's W. A lower bound, which load can only
      make easier to meet; a timer-based wait answers both after W.
    - while answers are outstanding, the serving thread is runnable (R) in
      most samples. R means it wants a CPU, on one or not, so load does not
      change it; a sleep on the serving thread would serialise too but shows
      S. The same run with --delay-us W shows the thread asleep in most
      samples, which also proves the sampling can tell the two apart."""
    w = 0.15
    runs = {}
    for opt in ("--work-us", "--delay-us"):
        m = Mockd(ctx.bindir, ctx.tmp, "127.0.0.1:0", "--threads", "1", opt,
                  str(int(w * 1e6)), "--quiet")
        try:
            runs[opt] = two_at_once(m)
        finally:
            rc, out = m.stop()
        assert rc == 0, (opt, rc, out)
    arrivals, busy, n = runs["--work-us"]
    assert arrivals[0] >= w and arrivals[1] >= 2 * w, \
        "--work-us: answers at %s s, want the second >= %.2f s (serialised)" % (arrivals, 2 * w)
    assert n >= 10 and busy >= 0.75, \
        "--work-us: serving thread runnable in %.0f%% of %d samples, want >= 75%%" % (busy * 100, n)
    arrivals, busy, n = runs["--delay-us"]
    assert arrivals[0] >= w, "--delay-us: answered at %s s, before %.2f s" % (arrivals, w)
    assert n >= 10 and busy <= 0.25, \
        "--delay-us: a thread runnable in %.0f%% of %d samples, want <= 25%%" % (busy * 100, n)


@test
def global_fault_spares_mock_stats(ctx):
    m = Mockd(ctx.bindir, ctx.tmp, "unix:" + os.path.join(ctx.tmp, "hang.sock"),
              "--fault", "hang", "--quiet")
    try:
        with m.connect() as s:
            s.sendall(b'{"type":"get_scene_info","params":{}}')
            data, eof = read_all(s, 0.3)
            assert data == b"" and not eof
        assert stats(m)["requests"] == 2
    finally:
        assert m.stop()[0] == 0


@test
def address_in_use_is_refused(ctx):
    for addr in (ctx.tcp.addr, ctx.unix.addr):
        p = subprocess.run([os.path.join(ctx.bindir, "mockd"), "--listen", addr],
                           capture_output=True, timeout=5)
        err = p.stderr.decode()
        assert p.returncode != 0 and "in use" in err and addr.split(":", 1)[-1] in err, \
            (addr, p.returncode, err)
    # The live server's socket file survived the attempt.
    with ctx.unix.connect() as s:
        assert call(s, "ping")["status"] == "success"


@test
def usage_errors(ctx):
    mockd = os.path.join(ctx.bindir, "mockd")
    p = subprocess.run([mockd, "--help"], capture_output=True, timeout=5)
    assert p.returncode == 0 and b"--listen" in p.stdout
    p = subprocess.run([mockd], capture_output=True, timeout=5)
    assert p.returncode == 2 and b"--listen" in p.stderr
    p = subprocess.run([mockd, "--listen", "127.0.0.1:0", "--fault", "bogus"],
                       capture_output=True, timeout=5)
    assert p.returncode == 2 and b"bogus" in p.stderr


@test
def sigterm_prints_stats_and_removes_socket(ctx):
    path = os.path.join(ctx.tmp, "term.sock")
    m = Mockd(ctx.bindir, ctx.tmp, "unix:" + path)
    with m.connect() as s:
        call(s, "ping")
    with m.connect() as held:
        call(held, "ping")  # answered, so accepted; still open at SIGTERM
        rc, out = m.stop()
    assert rc == 0, rc
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    st = json.loads(lines[0])
    assert st["requests"] == 2 and st["connections_total"] == 2, st
    assert not os.path.exists(path), "socket file left behind"


# ------------------------------------------------------------------ loadgen

LOADGEN_KEYS = ("bench", "mode", "connections", "depth", "threads", "duration_s", "requests",
                "ok", "errors", "lost", "duplicates", "rps", "p50_us", "p90_us", "p99_us",
                "p999_us", "max_us", "error_codes")


@test
def loadgen_direct_against_mockd(ctx):
    before = stats(ctx.tcp)
    rc, res, err = run_loadgen(ctx, "--tcp", ctx.tcp.addr, "--mode", "direct",
                               "--connections", "4", "--duration", "1")
    assert rc == 0, (rc, err)
    for k in LOADGEN_KEYS:
        assert k in res, (k, res)
    assert res["bench"] == "loadgen" and res["mode"] == "direct", res
    assert res["connections"] == 4 and res["depth"] == 1, res
    assert res["rps"] > 0 and res["requests"] > 0, res
    assert res["lost"] == 0 and res["errors"] == 0 and res["duplicates"] == 0, res
    assert res["ok"] == res["requests"], res
    assert 0 < res["p50_us"] <= res["p90_us"] <= res["p99_us"] <= res["p999_us"] <= res["max_us"]
    after = stats(ctx.tcp)
    assert after["overlaps"] == before["overlaps"], "loadgen pipelined in direct mode"
    assert after["requests"] - before["requests"] >= res["requests"], (before, after, res)


@test
def loadgen_direct_forces_depth_one_and_counts_errors(ctx):
    rc, res, err = run_loadgen(ctx, "--unix", ctx.unix.addr[5:], "--mode", "direct",
                               "--connections", "2", "--depth", "4", "--duration", "0.3",
                               "--type", "fault_error")
    assert rc == 0 and "ignored" in err, (rc, err)
    assert res["depth"] == 1 and res["ok"] == 0 and res["errors"] == res["requests"] > 0, res
    assert res["error_codes"] == {"backend_error": res["errors"]}, res


@test
def loadgen_direct_flags_unsolicited_bytes(ctx):
    rc, res, err = run_loadgen(ctx, "--unix", ctx.unix.addr[5:], "--mode", "direct",
                               "--connections", "1", "--duration", "0.3",
                               "--type", "fault_extra", "--drain", "1")
    assert rc == 1 and res["unknown_ids"] > 0, (rc, res, err)


@test
def loadgen_cannot_connect(ctx):
    rc, res, err = run_loadgen(ctx, "--unix", os.path.join(ctx.tmp, "nobody.sock"),
                               "--duration", "0.2")
    assert rc == 2 and res is None and "cannot connect" in err, (rc, err)


class FakeBroker:
    """Answers the broker's client protocol like a broker would, but answers
    each batch of lines in reverse order; `behaviour` adds one fault."""

    def __init__(self, path, behaviour):
        self.behaviour = behaviour
        self.seen = 0
        self.lock = threading.Lock()
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(64)
        self.threads = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            t.start()

    def _answer(self, req):
        with self.lock:
            self.seen += 1
            n = self.seen
        rid = req["id"]
        if req["id"] % 5 == 0:
            ans = {"id": rid, "status": "error",
                   "error": {"code": "rate_limited", "message": "slow down",
                             "retry_after_ms": 5}}
        else:
            ans = {"id": rid, "status": "success", "result": {"type": req["type"]},
                   "cached": False}
        line = json.dumps(ans).encode() + b"\n"
        if n == 10 and self.behaviour == "dup":
            return line + line
        if n == 10 and self.behaviour == "drop":
            return b""
        return line

    def _serve(self, c):
        buf = b""
        with c:
            while True:
                try:
                    chunk = c.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                *lines, buf = buf.split(b"\n")
                out = [self._answer(json.loads(x)) for x in lines if x.strip()]
                try:
                    c.sendall(b"".join(reversed(out)))
                except OSError:
                    return

    def close(self):
        self.srv.close()


def broker_run(ctx, behaviour, *extra):
    path = os.path.join(ctx.tmp, "fake-%s.sock" % behaviour)
    fb = FakeBroker(path, behaviour)
    try:
        return run_loadgen(ctx, "--unix", path, "--connections", "3", "--depth", "8",
                           "--duration", "0.4", "--threads", "2", "--type", "get_scene_info",
                           *extra)
    finally:
        fb.close()


@test
def loadgen_broker_mode_out_of_order(ctx):
    rc, res, err = broker_run(ctx, "reorder")
    assert rc == 0, (rc, res, err)
    assert res["mode"] == "broker" and res["depth"] == 8 and res["connections"] == 3, res
    assert res["requests"] > 0 and res["lost"] == 0 and res["duplicates"] == 0, res
    assert res["unknown_ids"] == 0, res
    assert res["errors"] > 0 and res["error_codes"] == {"rate_limited": res["errors"]}, res
    assert res["ok"] + res["errors"] == res["requests"], res


@test
def loadgen_broker_mode_duplicate(ctx):
    rc, res, err = broker_run(ctx, "dup")
    assert rc == 1 and res["duplicates"] == 1 and res["lost"] == 0, (rc, res, err)
    assert "duplicate" in err, err


@test
def loadgen_broker_mode_lost(ctx):
    rc, res, err = broker_run(ctx, "drop", "--drain", "0.5")
    assert rc == 1 and res["lost"] == 1 and res["duplicates"] == 0, (rc, res, err)


# ------------------------------------------------------------------ main

class Ctx:
    pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--bin", default=os.path.join(here, "..", "..", "build", "bin"))
    ap.add_argument("-k", help="run only tests whose name contains this")
    args = ap.parse_args()
    for prog in ("mockd", "loadgen"):
        if not os.access(os.path.join(args.bin, prog), os.X_OK):
            print("FAIL: %s not built in %s" % (prog, args.bin))
            print("0 passed, 1 failed")
            return 1
    ctx = Ctx()
    ctx.bindir = args.bin
    ctx.tmp = tempfile.mkdtemp(prefix="mockd-test-")
    passed = failed = 0
    t_start = time.monotonic()
    ctx.unix = Mockd(ctx.bindir, ctx.tmp, "unix:" + os.path.join(ctx.tmp, "m.sock"))
    ctx.tcp = Mockd(ctx.bindir, ctx.tmp, "127.0.0.1:0")
    try:
        for fn in TESTS:
            if args.k and args.k not in fn.__name__:
                continue
            t0 = time.monotonic()
            try:
                fn(ctx)
                passed += 1
                print("PASS %-50s %.2fs" % (fn.__name__, time.monotonic() - t0), flush=True)
            except Exception as e:  # noqa: BLE001 - report every failure, keep going
                failed += 1
                print("FAIL %-50s %s: %s" % (fn.__name__, type(e).__name__, e), flush=True)
    finally:
        for m in (ctx.unix, ctx.tcp):
            rc, out = m.stop()
            if rc != 0:
                failed += 1
                print("FAIL mockd %s exited %d at shutdown: %s" % (m.addr, rc, m.stderr()))
    shutil.rmtree(ctx.tmp, ignore_errors=True)
    print("total %.1fs" % (time.monotonic() - t_start))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
