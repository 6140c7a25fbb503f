#!/usr/bin/env python3
"""Integration tests of brokerd against the mock backend (bin/mockd).

Each case starts fresh processes in a fresh temp dir and kills everything at
the end. After each case every brokerd still running gets SIGTERM and must
exit 0, and no child's stderr may hold a sanitizer report (AddressSanitizer,
LeakSanitizer, UBSan "runtime error:").

Cases and the seed bugs they guard (SPEC.md, "Seed traceability"):
  pipelined_32x100                 pipelining, every id answered once, no overlap;
                                   worker threads named brokerd-wN
  pool_bound_and_no_overlap        RACE_CONDITION_001 (a slot never held twice)
  faults_map_to_codes              TYPE_SAFETY_002, error truncation, dead conns replaced
  idle_timeout_resets_on_chunks    BUG-009
  bad_input                        validation, too_large skip, blank lines
  unknown_backend_and_backend_down stub functions / unknown backend, backend down
  overloaded_queue                 bounded FIFO queue, overloaded
  gone_client_queue_dropped        a vanished client's queued commands never reach Blender;
                                   a half-closed one still gets every answer
  reconnects_after_backend_restart dead connection replaced, not reused
  dead_idle_connection_not_used    a connection that died idle costs no request
  no_fd_leak                       ASYNC_RACE_003, ASYNC_CLEANUP_001
  sigterm_drains                   shutdown drains in-flight requests
  sigterm_grace_expires            shutting_down after shutdown_grace_ms
  stale_socket_replaced            stale socket file replaced, live one refused
  listen_path_regular_file_kept    only a *socket* file is ever replaced
  config_errors                    unknown / out-of-range keys named, --help
  backpressure                     a client that does not read is not buffered without bound
  nonascii_params_escaped          ASCII-only backend writes (add-on UTF-8 split bug)

Usage: test_broker.py --bin BUILD/bin [-k NAME] [--keep] [-v]
(stdlib only; prints PASS/FAIL per case and "N passed, M failed"; exits
non-zero on any failure. BROKER_TEST_SLOW=3 scales every wait.)
"""
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokertest as bt  # noqa: E402
from brokertest import t, line, request, err_code  # noqa: E402
from brokertest import short, assert_success, assert_code  # noqa: E402,F401

CASES, case = bt.case_list()


def broker_stats(c, rid="stats"):
    """mockd's counters asked through the broker (on a pooled connection, so
    the figures are not disturbed by a connection of our own)."""
    return assert_success(c.call(rid, "mock_stats", {}, timeout=t(5)), "mock_stats")


def check_echo(r, params, what=""):
    res = assert_success(r, what)
    assert res.get("params") == params, "%s: echoed %r, sent %r" % (what, res.get("params"), params)
    return res


# --------------------------------------------------------------- throughput


@case
def pipelined_32x100(env):
    env.mockd()
    pool = 4
    b = env.broker(bt.broker_config(env, backends=[bt.backend(env, pool_size=pool,
                                                                max_queue=4096)]))
    clients = [b.connect(timeout=t(10)) for _ in range(32)]
    for ci, c in enumerate(clients):
        c.send(b"".join(line(request(ci * 1000 + i, "echo", {"k": "%d-%d" % (ci, i)}))
                        for i in range(100)))
    conns = set()
    for ci, c in enumerate(clients):
        rs = c.recv(100, timeout=t(30))
        ids = [r["id"] for r in rs]
        assert sorted(ids) == [ci * 1000 + i for i in range(100)], \
            "client %d: ids answered %r" % (ci, sorted(ids)[:20])
        for r in rs:
            res = check_echo(r, {"k": "%d-%d" % (ci, r["id"] - ci * 1000)}, "id %r" % r["id"])
            conns.add(res["conn"])
    for c in clients:
        c.expect_silence(0.05)
    assert len(conns) <= pool, "answers came from %d backend connections (pool %d)" \
        % (len(conns), pool)
    st = broker_stats(clients[0])
    assert st["overlaps"] == 0, "backend saw overlapping requests: %r" % st
    assert st["max_connections_open"] <= pool, st
    assert st["connections_total"] <= pool, st
    assert st["requests"] >= 3200, st
    # Worker threads carry their names (top -H, perf, gdb tell them apart).
    task = "/proc/%d/task" % b.proc.pid
    names = set()
    for tid in os.listdir(task):
        with open(os.path.join(task, tid, "comm")) as f:
            names.add(f.read().strip())
    assert {"brokerd-w0", "brokerd-w1"} <= names, names
    for c in clients:
        c.close()


def hammer(path, tid, nreq, window, errors):
    """One client connection: nreq requests in pipelined windows; any
    mismatch goes to errors."""
    try:
        with bt.Client(path, timeout=t(20)) as c:
            i = 0
            while i < nreq:
                batch = []
                for j in range(i, min(nreq, i + window)):
                    rid = "%d:%d" % (tid, j)
                    if j % 20 == 7:
                        batch.append((rid, None, request(rid, "fault_slow",
                                                         {"ms": 1 + (j // 20) % 3})))
                    else:
                        p = {"t": tid, "j": j}
                        batch.append((rid, p, request(rid, "echo", p)))
                c.send(b"".join(line(x[2]) for x in batch))
                rs = {r["id"]: r for r in c.recv(len(batch), timeout=t(20))}
                for rid, p, _ in batch:
                    r = rs.get(rid)
                    if r is None:
                        errors.append("no answer for %s (got %r)" % (rid, sorted(rs)))
                        return
                    if r.get("status") != "success" or (p is not None and
                                                         r["result"].get("params") != p):
                        errors.append("bad answer for %s: %r" % (rid, r))
                        return
                i += len(batch)
    except Exception as e:  # noqa: BLE001
        errors.append("thread %d: %s: %s" % (tid, type(e).__name__, e))


@case
def pool_bound_and_no_overlap(env):
    for pool in (1, 2):
        m = env.mockd(os.path.join(env.tmp, "m%d.sock" % pool))
        cfg = bt.broker_config(env, listen=os.path.join(env.tmp, "b%d.sock" % pool),
                               admin_listen=os.path.join(env.tmp, "a%d.sock" % pool),
                               backends=[bt.backend(env, address=m.addr, pool_size=pool,
                                                    max_queue=1024)])
        b = env.broker(cfg)
        errors = []
        threads = [threading.Thread(target=hammer, args=(b.path, tid, 200, 8, errors))
                   for tid in range(16)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(t(60))
        assert not any(th.is_alive() for th in threads), "pool %d: threads still running" % pool
        assert not errors, "pool %d: %s" % (pool, errors[:3])
        with b.connect() as c:
            st = broker_stats(c)
        assert st["overlaps"] == 0, "pool %d: overlapping requests on one connection: %r" \
            % (pool, st)
        assert st["max_connections_open"] <= pool, "pool %d: %r" % (pool, st)
        assert st["connections_total"] <= pool, "pool %d: %r" % (pool, st)
        assert st["requests"] >= 16 * 200, st
        rc = b.stop()
        assert rc == 0, "pool %d: brokerd exit %r" % (pool, rc)
        assert m.stop() == 0


# --------------------------------------------------------------- faults


@case
def faults_map_to_codes(env):
    env.mockd()
    # pool_size 1: the echo after each fault shows (by its "conn") whether the
    # backend connection was kept or replaced.
    b = env.broker(bt.broker_config(env, backends=[bt.backend(
        env, pool_size=1, max_response_bytes=200000)]))
    long_msg = "\u00e9" * 300 + "x" * 1000 + "END"
    # (type, params, extra request keys, expected code or None, connection fate, check)
    faults = [
        ("fault_hang", {}, {"timeout_ms": 300}, "timeout", "replaced",
         lambda m: "300 ms" in m),
        ("fault_close", {}, {}, "unavailable", "replaced", None),
        ("fault_partial", {}, {}, "bad_backend_response", "replaced", None),
        ("fault_garbage", {}, {}, "bad_backend_response", "replaced", None),
        ("fault_empty", {}, {}, "bad_backend_response", None, None),
        ("fault_array", {}, {}, "bad_backend_response", None, None),
        ("fault_error", {"message": 'boom "quoted"'}, {}, "backend_error", "kept",
         lambda m: 'boom "quoted"' in m),
        ("fault_error", {"message": long_msg}, {}, "backend_error", "kept",
         lambda m: len(m.encode("utf-8")) <= 500 and m.startswith("\u00e9" * 100)
         and "END" not in m),
        ("fault_error", {"message": "ctl\u0001\u001b[31m"}, {}, "backend_error", "kept",
         lambda m: not any(ord(ch) < 0x20 for ch in m) and "ctl" in m),
        ("fault_huge", {"bytes": 300000}, {}, "bad_backend_response", "replaced", None),
        ("fault_huge", {"bytes": 100000}, {}, None, "kept", None),
        ("fault_extra", {}, {}, None, "replaced", None),
        ("fault_slow", {"ms": 50}, {}, None, "kept", None),
        ("fault_drip", {"interval_ms": 2}, {}, None, "kept", None),
    ]
    with b.connect(timeout=t(10)) as c:
        prev = check_echo(c.call(1, "echo", {"n": 1}), {"n": 1})["conn"]
        rid = 100
        for typ, params, extra, code, fate, check in faults:
            what = "%s %s" % (typ, json.dumps(params)[:60])
            rid += 1
            t0 = time.monotonic()
            r = c.call(rid, typ, params, timeout=t(10), **extra)
            dt = time.monotonic() - t0
            if code is None:
                res = assert_success(r, what)
                if typ == "fault_huge":
                    assert isinstance(res, str) and len(res) == params["bytes"], \
                        "%s: result of %d bytes" % (what, len(res))
            else:
                msg = assert_code(r, code, what)
                assert isinstance(msg, str) and msg, r
                assert check is None or check(msg), "%s: message %r" % (what, msg)
            if typ == "fault_hang":
                assert 0.28 <= dt < 0.3 + t(2), "%s answered after %.2f s" % (what, dt)
            rid += 1
            p = {"after": typ, "rid": rid}
            now = check_echo(c.call(rid, "echo", p, timeout=t(5)), p,
                             "echo after %s" % what)["conn"]
            if fate == "kept":
                assert now == prev, "%s: backend connection %r replaced by %r" \
                    % (what, prev, now)
            elif fate == "replaced":
                assert now != prev, "%s: backend connection %r reused" % (what, prev)
            prev = now
        st = broker_stats(c)
        assert st["overlaps"] == 0, st
        assert st["connections_open"] == 1, st


@case
def ndjson_backend_and_timeout_cap(env):
    """framing "ndjson": requests end with a newline and replies are framed by
    theirs (mockd in ndjson mode answers nothing for an unterminated one);
    a client's timeout_ms is capped by max_request_timeout_ms."""
    path = os.path.join(env.tmp, "n.sock")
    env.mockd(path, "--framing", "ndjson")
    cap_ms = int(400 * bt.SLOW)
    b = env.broker(bt.broker_config(env, backends=[bt.backend(
        env, address="unix:" + path, framing="ndjson", pool_size=1,
        request_timeout_ms=cap_ms, max_request_timeout_ms=cap_ms)]))
    with b.connect(timeout=t(10)) as c:
        conns = set()
        for i in range(20):  # many on one connection: each reply framed exactly
            conns.add(check_echo(c.call(i, "echo", {"i": i, "s": "{\"}"}), {"i": i, "s": "{\"}"})["conn"])
        assert len(conns) == 1, "ndjson connection not reused: %r" % conns
        t0 = time.monotonic()
        r = c.call(99, "fault_hang", {}, timeout=t(10), timeout_ms=600000)
        dt = time.monotonic() - t0
        msg = assert_code(r, "timeout", "timeout_ms above the cap")
        assert "%d ms" % cap_ms in msg, msg
        assert cap_ms / 1000.0 - 0.05 <= dt < cap_ms / 1000.0 + t(2), \
            "timeout after %.2f s, cap %d ms" % (dt, cap_ms)


@case
def idle_timeout_resets_on_chunks(env):
    env.mockd()
    b = env.broker(bt.broker_config(env, backends=[bt.backend(
        env, idle_timeout_ms=200, request_timeout_ms=int(20000 * bt.SLOW))]))
    with b.connect(timeout=t(20)) as c:
        # A dripping backend (one byte every 40 ms) that keeps sending for far
        # longer than the 200 ms idle timeout is not cut off.
        t0 = time.monotonic()
        r = c.call(1, "fault_drip", {"interval_ms": 40}, timeout=t(20))
        dt = time.monotonic() - t0
        assert_success(r, "fault_drip interval 40")
        assert dt >= 0.4, "drip reply took only %.2f s: not a test of the idle timer" % dt
        # A silent one is cut off after the idle timeout, not the request timeout.
        t0 = time.monotonic()
        r = c.call(2, "fault_hang", {}, timeout=t(10))
        dt = time.monotonic() - t0
        msg = assert_code(r, "timeout", "fault_hang")
        assert "sent nothing for 200 ms" in msg, msg
        assert 0.18 <= dt < 0.2 + t(1), "idle timeout fired after %.2f s" % dt
        # A drip slower than the idle timeout is cut off after its first byte.
        t0 = time.monotonic()
        r = c.call(3, "fault_drip", {"interval_ms": 600}, timeout=t(10))
        dt = time.monotonic() - t0
        msg = assert_code(r, "timeout", "fault_drip interval 600")
        assert "sent nothing for 200 ms" in msg, msg
        assert 0.18 <= dt < 0.2 + t(1), "slow drip cut after %.2f s" % dt
        check_echo(c.call(4, "echo", {"x": 1}), {"x": 1}, "echo after timeouts")


# --------------------------------------------------------------- input


@case
def bad_input(env):
    env.mockd()
    b = env.broker(bt.broker_config(env, max_request_bytes=4096))
    cases = [
        (b"not json at all\n", None, "bad_request"),
        (b"{}\n", None, "bad_request"),
        (b'{"type":"echo"}\n', None, "bad_request"),
        (b"[1,2]\n", None, "bad_request"),
        (b'{"id":5,"type":"Echo!"}\n', 5, "bad_request"),
        (b'{"id":6,"type":"9echo"}\n', 6, "bad_request"),
        (b'{"id":7,"type":"' + b"a" * 65 + b'"}\n', 7, "bad_request"),
        (b'{"id":"' + b"a" * 129 + b'","type":"echo"}\n', None, "bad_request"),
        (b'{"id":true,"type":"echo"}\n', None, "bad_request"),
        (b'{"id":8,"type":"echo","timeout_ms":0}\n', 8, "bad_request"),
        (b'{"id":9,"type":"echo","timeout_ms":600001}\n', 9, "bad_request"),
        (b'{"id":10,"type":"echo","params":[1]}\n', 10, "bad_request"),
        (b'{"id":11,"type":"echo","params":"x"}\n', 11, "bad_request"),
        (b'{"id":"s12","type":"echo","params":null}\n', "s12", "bad_request"),
        (b'{"id":13,"type":"echo"} trailing\n', None, "bad_request"),
        (b'{"id":14,"type":"echo","params":{"a":' + b"[" * 70 + b"]" * 70 + b"}}\n",
         14, "bad_request"),  # the id came before the deep part: echoed
        (b'{"type":"echo","params":{"a":' + b"[" * 70 + b"]" * 70 + b'},"id":16}\n',
         None, "bad_request"),  # the id after it was never read
        (b'{"id":15,"type":"echo","params":{"a":"x\x01"}}\n', None, "bad_request"),
    ]
    with b.connect() as c:
        for i, (raw, rid, code) in enumerate(cases):
            c.send(raw)
            r = c.recv_one()
            assert_code(r, code, "line %r" % raw[:50])
            assert r["id"] == rid, "line %r: id %r, expected %r" % (raw[:50], r["id"], rid)
            # The connection stays usable after every refusal.
            p = {"after": i}
            r = c.call(1000 + i, "echo", p)
            check_echo(r, p, "echo after %r" % raw[:50])
        # A 128-byte string id is still fine and echoed verbatim.
        for sid in ("\u00e9" * 64, "i" * 128):
            assert len(sid.encode()) == 128
            c.send(line(request(sid, "echo", {}), ascii_only=False))
            r = c.recv_one()
            assert r["id"] == sid, "128-byte id %r came back as %r" % (sid[:8], r)
            assert_success(r, "128-byte id")

        # Request size: exactly max_request_bytes is accepted, one more byte is too_large.
        for n in (4096, 4097):
            base = line(request(n, "echo", {"pad": ""}))
            req = line(request(n, "echo", {"pad": "x" * (n - (len(base) - 1))}))
            assert len(req) == n + 1
            c.send(req)
            r = c.recv_one()
            if n == 4096:
                assert_success(r, "line of exactly 4096 bytes")
                assert r["id"] == n
            else:
                assert_code(r, "too_large", "line of 4097 bytes")
                assert r["id"] is None, r
        # An over-long line followed by a valid one in the same write.
        c.send(b'{"id":50,"type":"echo","params":{"pad":"' + b"y" * 6000 + b'"}}\n'
               + line(request(51, "echo", {"ok": 51})))
        r1, r2 = c.recv(2)
        assert_code(r1, "too_large", "6000-byte line")
        assert r1["id"] is None, r1
        assert r2["id"] == 51, r2
        check_echo(r2, {"ok": 51}, "request after the too_large line")
        # An over-long line arriving in pieces (with braces and newline-free
        # junk) is skipped up to its newline, whatever it contains.
        c.send(b'{"id":52,"type":"echo","params":{"pad":"' + b"z" * 3000)
        time.sleep(0.05)
        c.send(b'{"id":53,"type":"echo"}' * 100)
        time.sleep(0.05)
        c.send(b"}}\n" + line(request(54, "echo", {"ok": 54})))
        r1, r2 = c.recv(2)
        assert_code(r1, "too_large", "line in pieces")
        assert r1["id"] is None
        check_echo(r2, {"ok": 54}, "request after the skipped line")
        assert r2["id"] == 54
        # Blank lines get no answer at all.
        c.send(b"\n\n\r\n   \n\t\n" + line(request(60, "echo", {"ok": 60})) + b"\n\n")
        check_echo(c.recv_one(), {"ok": 60}, "after blank lines")
        c.expect_silence(0.3)


@case
def unknown_backend_and_backend_down(env):
    m = env.mockd()
    # A socket file with nobody behind it (connect: ECONNREFUSED).
    stale = os.path.join(env.tmp, "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)
    s.close()
    # A TCP port with nobody listening.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    b = env.broker(bt.broker_config(env, backends=[
        bt.backend(env, address=m.addr),
        bt.backend(env, name="down", address="unix:" + os.path.join(env.tmp, "nobody.sock")),
        bt.backend(env, name="refused", address="unix:" + stale),
        bt.backend(env, name="tcpdown", address="127.0.0.1:%d" % port),
    ]))
    with b.connect() as c:
        for rid, name in ((1, "down"), (2, "refused"), (3, "tcpdown"), (4, "down")):
            t0 = time.monotonic()
            r = c.call(rid, "echo", {"n": rid}, backend=name)
            assert_code(r, "unavailable", "backend %s" % name)
            assert time.monotonic() - t0 < t(2), "unavailable took %.2f s" \
                % (time.monotonic() - t0)
        r = c.call(5, "echo", {}, backend="nope")
        msg = assert_code(r, "unknown_backend", "backend nope")
        assert "nope" in msg, msg
        r = c.call("six", "get_scene_info", {}, backend="Blender")
        assert_code(r, "unknown_backend", "backend names are case-sensitive")
        # The default backend (the first one) and the named one both work.
        check_echo(c.call(7, "echo", {"n": 7}), {"n": 7}, "default backend")
        check_echo(c.call(8, "echo", {"n": 8}, backend="blender"), {"n": 8}, "named backend")


@case
def overloaded_queue(env):
    env.mockd()
    b = env.broker(bt.broker_config(env, backends=[bt.backend(env, pool_size=1,
                                                                max_queue=2)]))
    slow = b.connect()
    # The pool's single connection is opened and warm before the test.
    check_echo(slow.call(0, "echo", {}), {}, "warm-up")
    t0 = time.monotonic()
    slow.send(request(1, "fault_slow", {"ms": 1000}))
    time.sleep(0.15)
    others = [b.connect() for _ in range(5)]
    for i, c in enumerate(others):
        c.send(request(10 + i, "echo", {"i": i}))
    sent = time.monotonic() - t0
    assert sent < 0.8, "sending took %.2f s: the slow request may be over" % sent
    # Collect the five answers as they arrive (a refusal must come at once,
    # not when the slow request is over).
    answers = {}
    pending = dict(enumerate(others))
    deadline = time.monotonic() + t(5)
    while pending and time.monotonic() < deadline:
        ready, _, _ = select.select([c.sock for c in pending.values()], [], [],
                                    max(0.0, deadline - time.monotonic()))
        for i, c in list(pending.items()):
            if c.sock in ready:
                answers[i] = (c.recv_one(timeout=t(1)), time.monotonic() - t0)
                del pending[i]
    assert not pending, "no answer for requests %r" % sorted(pending)
    codes = []
    for i in range(5):
        r, at = answers[i]
        assert r["id"] == 10 + i, r
        if r["status"] == "success":
            check_echo(r, {"i": i})
            codes.append("success")
        else:
            assert_code(r, "overloaded", "request %d" % i)
            assert at < 0.9, "overloaded answered only after %.2f s" % at
            codes.append("overloaded")
    assert_success(slow.recv_one(timeout=t(5)), "fault_slow")
    assert codes.count("overloaded") == 3 and codes.count("success") == 2, \
        "max_queue 2 behind one busy connection: %r" % codes
    for c in others + [slow]:
        c.expect_silence(0.05)
        c.close()


@case
def gone_client_queue_dropped(env):
    """A client queues 12 slow commands behind one connection and vanishes
    (with an answer unread, which resets the socket, then with nothing
    unread). Its queued commands must not run on the
    backend: nobody can read their answers, and a command may change the
    scene. Another client must not wait behind them either."""
    m = env.mockd()
    b = env.broker(bt.broker_config(env, backends=[bt.backend(env, pool_size=1)]))
    c = b.connect()
    check_echo(c.call(0, "echo", {}), {}, "warm-up")
    c.close()
    for how in ("reset", "close"):
        before = m.stats()["requests"]
        gone = b.connect()
        if how == "reset":
            # An answer left unread when the socket closes makes the kernel
            # report ECONNRESET to the broker at once (on a Unix socket, that
            # is what a reset is); without one the broker sees a plain EOF
            # (the client may only have finished writing) and learns that
            # the client is gone when an answer cannot be written.
            gone.send(request(99, "echo", {}))
            time.sleep(0.1)
            before = m.stats()["requests"]  # the echo ran; it is not counted
        for i in range(12):
            gone.send(request(100 + i, "fault_slow", {"ms": 300}))
        time.sleep(0.1)  # the first is at the backend, 11 wait in the queue
        gone.close()
        t0 = time.monotonic()
        with b.connect() as other:
            check_echo(other.call(1, "echo", {"after": how}, timeout=t(5)), {"after": how}, how)
        waited = time.monotonic() - t0
        # reset: only the command at the backend runs (<= 0.3 s); close: the
        # broker learns it when the first answer cannot be written, by which
        # time the second has the connection (<= 0.6 s). 12 would be 3.6 s.
        assert waited < 1.2 + 0.3 * (bt.SLOW - 1), \
            "%s: the other client waited %.2f s behind a gone client's queue" % (how, waited)
        ran = m.stats()["requests"] - before - 2  # minus the echo and this stats call
        assert ran <= (1 if how == "reset" else 2), \
            "%s: %d of 12 queued commands of a gone client ran on the backend" % (how, ran)
    # Only finished writing (shutdown SHUT_WR, as `socat` does at the end of
    # its input): still here, so every queued command runs and is answered.
    with b.connect() as half:
        for i in range(4):
            half.send(request(200 + i, "fault_slow", {"ms": 50}))
        half.sock.shutdown(socket.SHUT_WR)
        got = sorted(half.recv_one(timeout=t(5))["id"] for _ in range(4))
        assert got == [200, 201, 202, 203], got
    assert b.alive()


@case
def reconnects_after_backend_restart(env):
    m = env.mockd()
    pool = 2
    b = env.broker(bt.broker_config(env, backends=[bt.backend(env, pool_size=pool)]))
    a, c = b.connect(), b.connect()
    debug = os.environ.get("BROKER_TEST_DEBUG")

    def fill_pool(rid):
        # Two concurrent requests open (or reuse) both pooled connections.
        a.send(request(rid, "fault_slow", {"ms": 100}))
        c.send(request(rid + 1, "fault_slow", {"ms": 100}))
        assert_success(a.recv_one(), "fill the pool")
        assert_success(c.recv_one(), "fill the pool")

    def restart(old):
        if os.path.exists(old.path):
            os.unlink(old.path)  # SIGKILL leaves the socket file behind
        return env.mockd(old.path)

    def after_restart(base, max_failures, what):
        results = [c.call(base + i, "echo", {"i": i}) for i in range(10)]
        if debug:
            print("%s: %r" % (what, [err_code(r) or "ok" for r in results]))
        failed = [r for r in results if r["status"] != "success"]
        assert len(failed) <= max_failures, "%s: %d failures: %r" % (what, len(failed), failed)
        for r in failed:
            assert_code(r, "unavailable", what)
        first_ok = next(i for i, r in enumerate(results) if r["status"] == "success")
        for i, r in enumerate(results[first_ok:], first_ok):
            check_echo(r, {"i": i}, "%s: request %d" % (what, i))

    # Phase 1: the backend dies with a request in flight and comes straight
    # back. The in-flight request fails at once; the other pooled connection
    # is dead too and may cost at most one more failure, never a hang or a
    # wrong answer; then everything works again.
    fill_pool(1)
    st = broker_stats(a)
    assert st["connections_total"] == pool, st
    a.send(request(3, "fault_slow", {"ms": int(5000 * bt.SLOW)}))
    time.sleep(0.1)
    m.kill()
    t0 = time.monotonic()
    r = a.recv_one(timeout=t(3))
    assert r["id"] == 3, r
    assert_code(r, "unavailable", "request in flight when the backend died")
    assert time.monotonic() - t0 < t(1), "answered %.2f s after the crash" \
        % (time.monotonic() - t0)
    m = restart(m)
    after_restart(100, pool - 1, "straight after the restart")

    # Phase 2: the backend dies and stays down for a while: requests fail
    # with unavailable quickly (each dead connection is found and dropped,
    # then connects are refused); after the restart nothing dead is left.
    fill_pool(200)
    m.kill()
    time.sleep(0.05)
    for i in range(pool + 2):
        t0 = time.monotonic()
        r = c.call(300 + i, "echo", {})
        assert_code(r, "unavailable", "backend down (request %d)" % i)
        assert time.monotonic() - t0 < t(1), "unavailable took %.2f s" \
            % (time.monotonic() - t0)
    m = restart(m)
    after_restart(400, 0, "after a restart following downtime")
    st = m.stats()
    assert st["connections_total"] <= pool + 1, st  # + this stats connection
    assert st["overlaps"] == 0, st
    a.close()
    c.close()


@case
def dead_idle_connection_not_used(env):
    """A pooled connection whose backend died while it sat idle is not used
    for the next request: that request gets a fresh connection and succeeds
    (nothing was in flight, and a write that fails with EPIPE sent no byte,
    so even a mutating command may go out on a new connection)."""
    m = env.mockd()
    b = env.broker(bt.broker_config(env, backends=[bt.backend(env, pool_size=1)]))
    with b.connect() as c:
        check_echo(c.call(1, "echo", {"n": 1}), {"n": 1})
        m.kill()
        os.unlink(m.path)
        m = env.mockd(m.path)
        time.sleep(0.2)
        for rid, typ in ((2, "echo"), (3, "get_scene_info"), (4, "echo")):
            r = c.call(rid, typ, {"n": rid} if typ == "echo" else {})
            assert_success(r, "%s after the backend restarted (its old connection sat idle "
                              "in the pool)" % typ)
        st = m.stats()
        assert st["connections_total"] <= 2, st  # one pooled + this stats connection


@case
def no_fd_leak(env):
    m = env.mockd()
    pool = 2
    # Blackhole: a TCP listener whose accept queue is full, so connects hang
    # (half-open connections must be closed on connect timeout).
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    filler = socket.create_connection(hole.getsockname())
    stale = os.path.join(env.tmp, "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)
    s.close()
    try:
        b = env.broker(bt.broker_config(env, backends=[
            bt.backend(env, address=m.addr, pool_size=pool, max_queue=1024),
            bt.backend(env, name="down", address="unix:" + os.path.join(env.tmp, "no.sock"),
                       max_queue=1024),
            bt.backend(env, name="refused", address="unix:" + stale, max_queue=1024),
            bt.backend(env, name="hole", address="127.0.0.1:%d" % hole.getsockname()[1],
                       connect_timeout_ms=100, max_queue=1024),
        ]))
        mix = [
            ("fault_close", {}, {}, ("unavailable",)),
            ("fault_partial", {}, {}, ("bad_backend_response",)),
            ("fault_garbage", {}, {}, ("bad_backend_response",)),
            ("fault_extra", {}, {}, (None,)),
            ("fault_hang", {}, {"timeout_ms": 60}, ("timeout",)),
            ("echo", {}, {"backend": "down"}, ("unavailable",)),
            ("echo", {}, {"backend": "refused"}, ("unavailable",)),
            ("echo", {}, {"backend": "hole"}, ("unavailable", "timeout")),
            ("fault_error", {"message": "x"}, {}, ("backend_error",)),
            ("fault_empty", {}, {}, ("bad_backend_response",)),
        ]

        def run(n, nclients, tag):
            clients = [b.connect(timeout=t(30)) for _ in range(nclients)]
            want = {}
            for i in range(n):
                typ, params, extra, codes = mix[i % len(mix)]
                rid = "%s%d" % (tag, i)
                want[rid] = (typ, extra, codes)
                clients[i % nclients].send(request(rid, typ, params, **extra))
            got = []
            for k, c in enumerate(clients):
                got += c.recv(len([i for i in range(n) if i % nclients == k]), timeout=t(30))
            for r in got:
                typ, extra, codes = want.pop(r["id"])
                assert err_code(r) in codes, "%s %r: %r" % (typ, extra, r)
            assert not want, "unanswered: %r" % sorted(want)[:5]
            for c in clients:
                c.close()

        # Warm-up: every path once, and both pooled connections open.
        run(20, 2, "w")
        with b.connect() as c1, b.connect() as c2:
            c1.send(request(1, "fault_slow", {"ms": 100}))
            c2.send(request(2, "fault_slow", {"ms": 100}))
            assert_success(c1.recv_one())
            assert_success(c2.recv_one())
        time.sleep(0.3)
        before = b.fds()
        if os.environ.get("BROKER_TEST_DEBUG"):
            print("fds before: %d %r" % (len(before), sorted(before.values())))
        run(200, 4, "r")
        # Settle: no client left, no request in flight.
        after = bt.wait_for(lambda: (lambda f: f if len(f) <= len(before) else None)(b.fds()),
                            t(3)) or b.fds()
        assert len(after) <= len(before), \
            "fds grew from %d to %d; new: %r" % (len(before), len(after),
                                                 sorted(set(after.items()) -
                                                        set(before.items()))[:20])
        st = m.stats()
        assert st["connections_open"] - 1 <= pool, "mockd sees %d open connections" \
            % (st["connections_open"] - 1)
        assert st["overlaps"] == 0, st
    finally:
        filler.close()
        hole.close()


# --------------------------------------------------------------- shutdown


def no_error_logs(b):
    text = b.stderr()
    bad = [ln for ln in text.splitlines()
           if "ERROR" in ln or '"level":"error"' in ln or "level=error" in ln]
    assert not bad, "error lines in brokerd stderr: %r" % bad[:5]


@case
def sigterm_drains(env):
    m = env.mockd()
    b = env.broker(bt.broker_config(env, shutdown_grace_ms=5000, backends=[
        bt.backend(env, pool_size=4, max_queue=64)]))
    clients = [b.connect(timeout=t(15)) for _ in range(4)]
    for i in range(20):
        clients[i % 4].send(request(i, "fault_slow", {"ms": 300}))
    time.sleep(0.1)
    t0 = time.monotonic()
    b.signal(signal.SIGTERM)
    # New connections are no longer served.
    time.sleep(0.05)
    try:
        with bt.Client(b.path, timeout=t(2)) as late:
            late.send(request("late", "echo", {}))
            try:
                r = late.recv_one(timeout=t(2))
                assert_code(r, "shutting_down", "request sent after SIGTERM")
            except AssertionError as e:
                assert late.eof, "request after SIGTERM: %s" % e
    except (ConnectionRefusedError, FileNotFoundError):
        pass
    for k, c in enumerate(clients):
        rs = c.recv(5, timeout=t(10))
        assert sorted(r["id"] for r in rs) == list(range(k, 20, 4)), rs
        for r in rs:
            assert_success(r, "fault_slow %r drained" % r["id"])
    rc = b.wait(t(10))
    dt = time.monotonic() - t0
    assert rc == 0, "brokerd exit %r after SIGTERM: %s" % (rc, b.stderr()[-1000:])
    # 20 x 300 ms on 4 connections: 1.5 s of work.
    assert dt < 1.5 + t(3), "exit %.2f s after SIGTERM" % dt
    assert not os.path.exists(b.path), "socket file left behind"
    for c in clients:
        c.expect_silence(0.1)
        assert c.eof, "client connection left open"
        c.close()
    no_error_logs(b)
    st = m.stats()
    assert st["connections_open"] == 1, "broker left backend connections open: %r" % st


@case
def sigterm_grace_expires(env):
    m = env.mockd()
    b = env.broker(bt.broker_config(env, shutdown_grace_ms=300, backends=[
        bt.backend(env, pool_size=2, max_queue=8)]))
    clients = [b.connect(timeout=t(10)) for _ in range(2)]
    for i in range(4):  # two on the backend, two queued
        clients[i % 2].send(request(i, "fault_hang", {}, timeout_ms=10000))
    time.sleep(0.2)
    t0 = time.monotonic()
    b.signal(signal.SIGTERM)
    for k, c in enumerate(clients):
        rs = c.recv(2, timeout=t(5))
        assert sorted(r["id"] for r in rs) == [k, k + 2], rs
        for r in rs:
            assert_code(r, "shutting_down", "request %r at grace expiry" % r["id"])
    dt = time.monotonic() - t0
    assert 0.25 <= dt < 0.3 + t(2), "answered %.2f s after SIGTERM (grace 300 ms)" % dt
    rc = b.wait(t(5))
    assert rc == 0, "brokerd exit %r: %s" % (rc, b.stderr()[-1000:])
    assert not os.path.exists(b.path), "socket file left behind"
    for c in clients:
        c.close()
    st = bt.wait_for(lambda: (lambda s: s if s["connections_open"] == 1 else None)(m.stats()),
                     t(2)) or m.stats()
    assert st["connections_open"] == 1, "backend connections left open: %r" % st


@case
def stale_socket_replaced(env):
    env.mockd()
    cfg = bt.broker_config(env)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(cfg["listen"])
    s.close()
    assert os.path.exists(cfg["listen"])
    b = env.broker(cfg)
    with b.connect() as c:
        check_echo(c.call(1, "echo", {"a": 1}), {"a": 1}, "through the replaced socket")
    assert "stale" in b.stderr(), "no log line about the stale socket"
    mode = os.stat(cfg["listen"]).st_mode & 0o777
    assert mode == 0o600, "socket mode %o" % mode
    # A second broker on the live path refuses to start and leaves it alone.
    cfg2 = dict(cfg, admin_listen=os.path.join(env.tmp, "b2.admin.sock"))
    b2 = env.broker(cfg2, name="brokerd-second", wait_ready=False)
    b2.expect_exit0 = False
    rc = b2.wait(t(5))
    assert rc is not None and rc != 0, "second brokerd: exit %r" % rc
    err = b2.stderr()
    assert "in use" in err and cfg["listen"] in err, "second brokerd said: %r" % err[-500:]
    assert os.path.exists(cfg["listen"]), "the live broker's socket file was removed"
    with b.connect() as c:
        check_echo(c.call(2, "echo", {"a": 2}), {"a": 2}, "first broker after the attempt")
    assert b.stop() == 0
    assert not os.path.exists(cfg["listen"])


@case
def listen_path_regular_file_kept(env):
    """A path that exists but is not a socket is never deleted."""
    env.mockd()
    cfg = bt.broker_config(env)
    with open(cfg["listen"], "w") as f:
        f.write("precious\n")
    b = env.broker(cfg, wait_ready=False)
    b.expect_exit0 = False
    bt.wait_for(lambda: not b.alive() or "brokerd ready" in b.stderr(), t(5))
    rc = b.wait(0.2)
    if rc is None:
        b.stop()
    assert os.path.isfile(cfg["listen"]) and open(cfg["listen"]).read() == "precious\n", \
        "brokerd replaced the regular file %s with its socket (exit %r)" % (cfg["listen"], rc)
    assert rc is not None and rc != 0, "brokerd exit %r" % rc


# --------------------------------------------------------------- config


@case
def config_errors(env):
    brokerd = os.path.join(env.bindir, "brokerd")

    def run(cfg, *args):
        path = os.path.join(env.tmp, "cfg-%d.json" % time.monotonic_ns())
        with open(path, "w") as f:
            f.write(cfg if isinstance(cfg, str) else json.dumps(cfg))
        return subprocess.run([brokerd, "--config", path, *args], capture_output=True,
                              timeout=t(10), cwd=env.tmp)

    good = bt.broker_config(env)
    p = run(good, "--check-config")
    assert p.returncode == 0, (p.returncode, p.stderr)
    assert not os.path.exists(good["listen"]), "--check-config created the socket"

    bad_top = dict(good, bogus_key=1)
    bad_nested = dict(good, backends=[dict(good["backends"][0], helth={})])
    bad_pool = dict(good, backends=[dict(good["backends"][0], pool_size=0)])
    bad_pool2 = dict(good, backends=[good["backends"][0],
                                     dict(good["backends"][0], name="b2", pool_size=5000)])
    for cfg, key in ((bad_top, "bogus_key"), (bad_nested, "helth"),
                     (bad_pool, "backends[0].pool_size"), (bad_pool2, "backends[1].pool_size"),
                     ('{"listen": "x.sock", ', None)):
        for args in ((), ("--check-config",)):
            p = run(cfg, *args)
            err = p.stderr.decode("utf-8", "replace")
            what = "%s %s" % (key or "truncated JSON", " ".join(args))
            assert p.returncode == 2, "%s: exit %d, stderr %r" % (what, p.returncode, err)
            assert key is None or key in err, "%s: stderr does not name the key: %r" \
                % (what, err)
            assert err.strip(), what
    assert not os.path.exists(good["listen"]), "a refused config created the socket"
    p = subprocess.run([brokerd, "--config", os.path.join(env.tmp, "missing.json")],
                       capture_output=True, timeout=t(10))
    assert p.returncode == 2 and b"missing.json" in p.stderr, (p.returncode, p.stderr)
    p = subprocess.run([brokerd, "--help"], capture_output=True, timeout=t(10))
    assert p.returncode == 0 and b"pool_size" in p.stdout, (p.returncode, p.stdout[:200])
    p = subprocess.run([brokerd, "--no-such-flag"], capture_output=True, timeout=t(10))
    assert p.returncode == 2 and b"--no-such-flag" in p.stderr, (p.returncode, p.stderr)


@case
def command_line_flags(env):
    """--listen, --backend, --workers and --log-level on top of --config: the
    broker serves on the flag's socket and backend, and a bad flag is refused
    (exit 2) with the key it sets named, as a bad file would be."""
    brokerd = os.path.join(env.bindir, "brokerd")
    m = env.mockd()
    cfg = bt.broker_config(env, backends=[bt.backend(env, address="unix:/nonexistent.sock")])
    path = os.path.join(env.tmp, "flags.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    sock = os.path.join(env.tmp, "flag.sock")
    b = bt.Proc(env, "brokerd-flags", [brokerd, "--config", path, "--listen", sock,
                                       "--backend", "mock=" + m.addr, "--workers", "1",
                                       "--log-level", "debug"])
    assert bt.wait_for(lambda: "brokerd ready" in b.stderr() or not b.alive(), t(10)), \
        b.stderr()[-500:]
    assert '"workers":1' in b.stderr() and '"backend":"mock"' in b.stderr(), b.stderr()[-800:]
    a = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    a.settimeout(t(5))
    a.connect(cfg["admin_listen"])
    a.sendall(b'{"id":1,"cmd":"config"}\n')
    buf = b""
    while not buf.endswith(b"\n"):
        buf += a.recv(1 << 20)
    a.close()
    eff = json.loads(buf)["result"]
    assert eff["log"]["level"] == "debug" and eff["listen"] == sock and eff["workers"] == 1, eff
    assert [x["name"] for x in eff["backends"]] == ["mock"], eff["backends"]
    with bt.Client(sock) as c:
        assert_success(c.call(1, "echo", {"x": 1}), "through --listen and --backend")
        assert_success(c.call(2, "echo", {}, backend="mock"))
    b.signal(signal.SIGTERM)
    assert b.wait(t(10)) == 0
    for args, key in ((["--workers", "many"], "--workers"),
                      (["--workers", "999"], "workers"),
                      (["--backend", "nohost"], "backends[0].address"),
                      (["--log-level", "loud"], "log.level"),
                      (["--listen", "x" * 200], "listen")):
        p = subprocess.run([brokerd, "--config", path, *args, "--check-config"],
                           capture_output=True, text=True, timeout=t(10))
        assert p.returncode == 2 and key in p.stderr, (args, p.returncode, p.stderr)
    p = subprocess.run([brokerd, "--backend", "127.0.0.1:1", "--backend", "b=unix:/x.sock",
                        "--check-config"], capture_output=True, text=True, timeout=t(10))
    assert p.returncode == 0 and "command-line flags" in p.stdout, (p.stdout, p.stderr)


# --------------------------------------------------------------- flow control


@case
def backpressure(env):
    m = env.mockd()
    b = env.broker(bt.broker_config(env, max_client_output_bytes=262144, backends=[
        bt.backend(env, pool_size=4, max_queue=4096)]))
    n, size = 2000, 20000
    rss0 = b.rss_kb()
    greedy = b.connect(timeout=t(30))
    # Nothing is read from `greedy` until the end; its requests go out from a
    # thread so that a full socket buffer cannot block the test itself.
    payload = b"".join(line(request(i, "fault_huge", {"bytes": size})) for i in range(n))
    send_err = []

    def sender():
        try:
            greedy.sock.settimeout(t(60))
            greedy.sock.sendall(payload)
        except OSError as e:
            send_err.append(e)
    th = threading.Thread(target=sender)
    th.start()
    # The broker stops forwarding the greedy client's requests: the backend's
    # request count settles (two looks 0.3 s apart differ only by the stats
    # request itself) well below n.
    time.sleep(0.5)
    prev = m.stats()["requests"]
    settled = None
    deadline = time.monotonic() + t(5)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        cur = m.stats()["requests"]
        if cur - prev <= 1:
            settled = cur
            break
        prev = cur
    assert settled is not None, "the backend kept getting requests (%d) from a client " \
        "that reads nothing" % prev
    assert settled < n // 2, "forwarded %d of %d requests of a client that reads " \
        "nothing (max_client_output_bytes 262144)" % (settled, n)
    if os.environ.get("BROKER_TEST_DEBUG"):
        print("backpressure: %d requests forwarded, rss +%d KiB"
              % (settled, b.rss_kb() - rss0))
    if bt.SLOW == 1:
        grown = b.rss_kb() - rss0
        assert grown < 30 * 1024, "brokerd grew by %d KiB for a client that reads nothing" \
            % grown
    # ...and others are still served promptly.
    with b.connect() as other:
        for i in range(5):
            t0 = time.monotonic()
            check_echo(other.call(i, "echo", {"i": i}, timeout=t(2)), {"i": i}, "other client")
            assert time.monotonic() - t0 < t(0.5), "other client waited %.2f s" \
                % (time.monotonic() - t0)
    # Now the greedy client reads everything: each answer exactly once.
    rs = greedy.recv(n, timeout=t(60))
    th.join(t(10))
    assert not send_err, send_err
    ids = sorted(r["id"] for r in rs)
    assert ids == list(range(n)), "ids: missing %r" % sorted(set(range(n)) - set(ids))[:10]
    for r in rs:
        res = assert_success(r, "fault_huge %r" % r["id"])
        assert isinstance(res, str) and len(res) == size, (r["id"], len(res))
    greedy.expect_silence(0.1)
    greedy.close()


@case
def nonascii_params_escaped(env):
    env.mockd()
    b = env.broker(bt.broker_config(env))
    p = {"s": "\u00e9\u65e5\u672c\U0001f389", "\u00e9\u00e8": ["\u2603", {"k": "\u00ff"}],
         "ascii": "plain", "esc": "tab\tquote\"back\\"}
    with b.connect() as c:
        # Raw UTF-8 on the client side and \\u escapes both round-trip.
        for rid, ascii_only in ((1, False), (2, True)):
            c.send(line(request(rid, "echo", p), ascii_only=ascii_only))
            r = c.recv_one()
            assert r["id"] == rid, r
            check_echo(r, p, "echo of non-ASCII params (ascii_only=%s)" % ascii_only)
        # fault_nonascii errors unless every byte the backend got is ASCII.
        for rid, ascii_only in ((3, False), (4, True)):
            c.send(line(request(rid, "fault_nonascii", p), ascii_only=ascii_only))
            r = c.recv_one()
            assert r["id"] == rid, r
            res = assert_success(r, "fault_nonascii (client ascii_only=%s)" % ascii_only)
            assert res == {"ok": True}, res
        # A non-ASCII string id is echoed verbatim.
        r = c.call("\u00e9-\U0001f389", "echo", {})
        assert_success(r, "non-ASCII id")


if __name__ == "__main__":
    sys.exit(bt.run_cases(CASES, "brokerd integration tests"))
