#!/usr/bin/env python3
"""Idle client connections cost (almost) nothing (issue 12): no receive or
answer buffer is held by a connection that waits, and a burst from many
connections at once, more than the worker's shared receive buffers, still
gets every answer.

  idle_connections_hold_no_buffers  2000 connected clients: jemalloc's allocated bytes grow
                                    by under 512 B per connection while they never sent,
                                    under 4 KiB once each made a request (the target)
  burst_past_the_shared_buffers     600 clients send at once: every one is answered, and
                                    the shortage path (own buffer that time) was taken
  huge_answers_not_kept             six 4 MB cacheable reads: memory outside the cache
                                    arena does not keep a buffer of their size

Usage: test_idle.py --bin BUILD/bin [-k NAME] [--keep] [-v]
"""
import json
import os
import resource
import signal
import socket
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokertest as bt  # noqa: E402
from brokertest import t  # noqa: E402

CASES, case = bt.case_list()


admin = bt.admin_result


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


def connect_many(path, n):
    out = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(t(10))
        s.connect(path)
        out.append(s)
    return out


def read_line(s):
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        assert chunk, "closed before the answer"
        buf += chunk
    return json.loads(buf)


@case
def idle_connections_hold_no_buffers(env):
    raise_nofile(8000)
    env.mockd()
    b = env.broker(bt.broker_config(env, max_clients=5000))
    with b.connect() as c:  # warm up: lazily built state of the request path
        for i in range(20):
            bt.assert_success(c.call(i, "get_scene_info", cache=False))
    time.sleep(0.2)
    base = admin(b, "memory")["allocated"]
    n = 2000
    socks = connect_many(b.path, n)
    assert bt.wait_for(lambda: admin(b, "stats")["clients"] >= n, t(10))
    time.sleep(0.3)
    fresh = (admin(b, "memory")["allocated"] - base) / n
    # connected, never sent: the struct client alone (a buffer would be KiBs)
    assert fresh < 512, "%.0f bytes allocated per fresh idle connection" % fresh
    for i, s in enumerate(socks):
        s.sendall(b'{"id":%d,"type":"get_scene_info"}\n' % i)
    for s in socks:
        assert read_line(s)["status"] == "success"
    time.sleep(0.3)
    quiet = (admin(b, "memory")["allocated"] - base) / n
    # after one request each: at most the small read buffer armed for the
    # next one; the target is 4 KiB per idle connection
    assert quiet < 4096, "%.0f bytes allocated per idle connection after a request" % quiet
    for s in socks:
        s.close()


@case
def burst_past_the_shared_buffers(env):
    raise_nofile(4000)
    env.mockd()
    # 4 shared buffers: the kernel hands the worker its completions in
    # batches of a few dozen, so 64 would seldom all be taken at once
    b = env.broker(bt.broker_config(env, workers=1, max_clients=3000, client_rx_buffers=4))
    n = 600
    socks = connect_many(b.path, n)
    assert bt.wait_for(lambda: admin(b, "stats")["clients"] >= n, t(10))
    msg = [b'{"id":%d,"type":"get_scene_info","params":{"pad":"%s"}}\n' % (i, b"x" * 200)
           for i in range(n)]
    # Stopped, brokerd cannot take the bytes as they come: when it runs
    # again every connection has data at once, and its one worker's recvs
    # all want a shared buffer in the same batch.
    b.signal(signal.SIGSTOP)
    try:
        for i, s in enumerate(socks):
            s.sendall(msg[i])
    finally:
        b.signal(signal.SIGCONT)
    for i, s in enumerate(socks):
        r = read_line(s)
        assert r["status"] == "success" and r["id"] == i, r
    assert admin(b, "stats")["rx_buffer_shortages"] > 0, \
        "the burst never ran the shared buffers dry: the fallback path was not exercised"
    for s in socks:
        s.close()


@case
def huge_answers_not_kept(env):
    env.mockd()
    b = env.broker(bt.broker_config(
        env, workers=2, backends=[bt.backend(env, read_only=["get_*", "fault_*"],
                                             max_response_bytes=16 << 20)]))

    def outside_cache():
        m = admin(b, "memory")
        return m["allocated"] - m["cache_arena_bytes"]
    with b.connect(timeout=t(20)) as c:
        bt.assert_success(c.call(0, "get_scene_info"))
        base = outside_cache()
        for i in range(6):  # each a distinct key: a miss, a coalescing leader
            r = c.call(i + 1, "fault_huge", {"bytes": 4000000, "n": i}, timeout=t(20))
            bt.assert_success(r)
    time.sleep(0.2)
    grown = outside_cache() - base
    assert grown < 2 * 1000000, "%d bytes kept outside the cache after six 4 MB reads" % grown


if __name__ == "__main__":
    sys.exit(bt.run_cases(CASES, "brokerd idle connections and shared receive buffers"))
