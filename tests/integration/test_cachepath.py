#!/usr/bin/env python3
"""Integration tests of the response cache in the request path: the real
brokerd in front of mockd, whose per-command call counter (mock_stats with
params.type) tells how many calls reached the backend.

  hit_serves_same_result             a read's second answer is "cached": true, same result, 1 call
  write_invalidates_before_answer    a write's answer is never followed by a stale read
  unknown_outcome_invalidates        a write that timed out or failed invalidates too
  read_before_write_not_cached       a read answered before a write but arriving after it is not stored
  cache_false_bypasses_and_refreshes "cache": false goes to the backend and refreshes the entry
  ttl_expiry                         an entry older than cache.ttl_ms is not served
  coalescing_16_to_1                 16 identical concurrent misses make 1 backend call
  coalesced_waiter_disconnects       a waiter that goes away cancels nobody
  serve_stale_when_backend_dies      expired entry served "stale": true while the backend is down
  no_stale_when_off                  serve_stale_ms 0: the error, not stale data
  bounded_under_distinct_flood       a flood of distinct reads keeps the cache within max_bytes

Usage: test_cachepath.py --bin BUILD/bin [-k NAME] [--keep] [-v]
"""
import json
import os
import signal
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokertest as bt  # noqa: E402
from brokertest import t, line, request, err_code  # noqa: E402
from brokertest import short, assert_success, assert_code  # noqa: E402,F401

CASES, case = bt.case_list()


def cache_broker(env, m, cache=None, **kw):
    bk = bt.backend(env, address=m.addr, read_only=["get_*", "echo"], **kw)
    return env.broker(bt.broker_config(env, backends=[bk], cache=dict(cache or {})))


def final_cache_line(b):
    """The 'cache' line brokerd logs when it stops (entries, bytes, ...)."""
    for rec in b.log_lines():
        if rec.get("msg") == "cache at exit":
            return rec
    raise AssertionError("no 'cache at exit' line in: %s" % b.stderr()[-1500:])


@case
def hit_serves_same_result(env):
    m = env.mockd()
    b = cache_broker(env, m)
    with b.connect() as c:
        r1 = c.call(1, "get_object_info", {"name": "Cube"})
        r2 = c.call(2, "get_object_info", {"name": "Cube"})
        r3 = c.call(3, "get_object_info", {"name": "Camera"})
        assert r1["cached"] is False and r2["cached"] is True, (r1, r2)
        assert assert_success(r2) == assert_success(r1), "a hit must give the same result"
        assert r3["cached"] is False, "another key is another entry: %s" % short(r3)
        # A read not in read_only is never cached.
        r4 = c.call(4, "mock_calls_probe", {})
        r5 = c.call(5, "mock_calls_probe", {})
        assert r4["cached"] is False and r5["cached"] is False, (r4, r5)
    assert m.calls("get_object_info") == 2, "Cube once, Camera once"
    assert m.calls("mock_calls_probe") == 2
    b.stop()
    rec = final_cache_line(b)
    assert rec["hits"] == 1 and rec["misses"] >= 2, rec


@case
def write_invalidates_before_answer(env):
    m = env.mockd()
    b = cache_broker(env, m)
    with b.connect() as c:
        for i in range(50):
            r = c.call(3 * i, "get_scene_info", {})
            assert_success(r, "read %d" % i)
            if i:
                assert r["cached"] is False, "read right after a write was a hit: %s" % short(r)
            assert c.call(3 * i + 1, "get_scene_info", {})["cached"] is True
            assert_success(c.call(3 * i + 2, "create_object", {"type": "CUBE", "n": i}))
    assert m.calls("get_scene_info") == 50


@case
def unknown_outcome_invalidates(env):
    m = env.mockd()
    b = cache_broker(env, m)
    with b.connect() as c:
        for rid, (typ, params, kw, code) in enumerate((
                ("fault_hang", {}, {"timeout_ms": 100}, "timeout"),
                ("fault_close", {}, {}, "unavailable"),
                ("fault_error", {"message": "no"}, {}, "backend_error"))):
            assert_success(c.call("r%d" % rid, "get_scene_info", {}))
            assert c.call("h%d" % rid, "get_scene_info", {})["cached"] is True
            assert_code(c.call("w%d" % rid, typ, params, **kw), code, typ)
            r = c.call("a%d" % rid, "get_scene_info", {})
            assert r["cached"] is False, "a read after %s (outcome unknown) was a hit" % typ


@case
def read_before_write_not_cached(env):
    """The generation read before a read is sent travels to its fill: a write
    that completes while the read is at the backend makes the fill stale."""
    m = env.mockd()
    bk = bt.backend(env, address=m.addr, read_only=["get_*", "fault_slow"], pool_size=2)
    b = env.broker(bt.broker_config(env, backends=[bk]))
    with b.connect(timeout=t(10)) as reader, b.connect(timeout=t(10)) as writer:
        reader.send(request(1, "fault_slow", {"ms": 600}))
        time.sleep(0.2)
        assert_success(writer.call(2, "create_object", {"type": "CUBE"}), "the write")
        assert_success(reader.recv_one(timeout=t(5)), "the slow read")
        r = reader.call(4, "fault_slow", {"ms": 600})
        assert r["cached"] is False, "a read that began before a write was cached after it"
        assert reader.call(5, "fault_slow", {"ms": 600})["cached"] is True, "fills work"
    assert m.calls("fault_slow") == 2


@case
def cache_false_bypasses_and_refreshes(env):
    m = env.mockd()
    b = cache_broker(env, m)
    with b.connect() as c:
        r1 = c.call(1, "echo", {"k": 1})
        r2 = c.call(2, "echo", {"k": 1}, cache=False)
        r3 = c.call(3, "echo", {"k": 1})
        assert r1["cached"] is False and r2["cached"] is False and r3["cached"] is True
        # echo's seq counts per backend connection: r3 is r2's answer (refreshed).
        assert assert_success(r3) == assert_success(r2), (r2, r3)
        assert assert_success(r2) != assert_success(r1), "cache:false must reach the backend"
    assert m.calls("echo") == 2


@case
def ttl_expiry(env):
    m = env.mockd()
    b = cache_broker(env, m, cache={"ttl_ms": 1000})
    with b.connect() as c:
        assert c.call(1, "get_scene_info", {})["cached"] is False
        assert c.call(2, "get_scene_info", {})["cached"] is True
        time.sleep(1.2)
        assert c.call(3, "get_scene_info", {})["cached"] is False, "expired entry served"
        assert c.call(4, "get_scene_info", {})["cached"] is True
    assert m.calls("get_scene_info") == 2


@case
def coalescing_16_to_1(env):
    m = env.mockd(None, "--delay-us", "300000")
    b = cache_broker(env, m, pool_size=4)
    clients = [b.connect(timeout=t(10)) for _ in range(16)]
    for i, c in enumerate(clients):
        c.send(request("c%d" % i, "get_object_info", {"name": "Light"}))
    answers = [c.recv_one(timeout=t(5)) for c in clients]
    for i, r in enumerate(answers):
        assert r["id"] == "c%d" % i, r
        assert assert_success(r, "waiter %d" % i)["name"] == "Light"
    assert m.calls("get_object_info") == 1, \
        "16 identical concurrent misses made %d backend calls" % m.calls("get_object_info")
    for c in clients:
        c.expect_silence(0.05)
        c.close()


@case
def coalesced_waiter_disconnects(env):
    m = env.mockd(None, "--delay-us", "400000")
    b = cache_broker(env, m)
    clients = [b.connect(timeout=t(10)) for _ in range(6)]
    for i, c in enumerate(clients):
        c.send(request(i, "get_object_info", {"name": "Cube"}))
    time.sleep(0.1)
    # The leader's client (the first to send) and a follower go away.
    for k in (0, 3):
        clients[k].sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        clients[k].close()
    for i, c in enumerate(clients):
        if i in (0, 3):
            continue
        r = c.recv_one(timeout=t(5))
        assert r["id"] == i and assert_success(r)["name"] == "Cube", r
        c.close()
    assert m.calls("get_object_info") == 1
    # The broker is fine afterwards and has the entry.
    with b.connect() as c:
        assert c.call(9, "get_object_info", {"name": "Cube"})["cached"] is True


def stale_case(env, serve_stale_ms):
    m = env.mockd()
    b = cache_broker(env, m, cache={"ttl_ms": 1000, "serve_stale_ms": serve_stale_ms})
    with b.connect(timeout=t(10)) as c:
        first = assert_success(c.call(1, "get_scene_info", {}))
        m.stop()
        time.sleep(1.2)  # the entry has expired
        return c.call(2, "get_scene_info", {}), first


@case
def serve_stale_when_backend_dies(env):
    r, first = stale_case(env, 5000)
    assert r.get("stale") is True and r.get("cached") is True, short(r)
    assert assert_success(r) == first


@case
def no_stale_when_off(env):
    r, _ = stale_case(env, 0)
    assert_code(r, "unavailable", "expired entry, backend down, serve_stale_ms 0")


@case
def bounded_under_distinct_flood(env):
    m = env.mockd()
    max_bytes = 1 << 20
    b = cache_broker(env, m, cache={"max_bytes": max_bytes, "max_object_bytes": 65536})
    pad = "x" * 2000
    with b.connect(timeout=t(30)) as c:
        n = 3000  # ~6 MB of distinct answers through a 1 MiB cache
        for start in range(0, n, 250):
            c.send(b"".join(line(request(i, "echo", {"i": i, "pad": pad}))
                            for i in range(start, start + 250)))
            for r in c.recv(250, timeout=t(10)):
                assert_success(r, "flood %r" % r["id"])
        # The most recent entries are still served.
        assert c.call("last", "echo", {"i": n - 1, "pad": pad})["cached"] is True
    b.stop()
    rec = final_cache_line(b)
    assert rec["bytes"] <= max_bytes, "cache holds %d bytes > max_bytes %d" % (rec["bytes"], max_bytes)
    assert rec["arena_bytes"] <= max_bytes + rec["overhead_bytes"] + (64 << 10), rec
    assert rec["evictions"] > 1000, rec
    assert rec["entries"] > 100, rec


if __name__ == "__main__":
    sys.exit(bt.run_cases(CASES, "brokerd cache path tests"))
