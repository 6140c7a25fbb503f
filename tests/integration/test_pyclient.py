#!/usr/bin/env python3
"""examples/python/brokerclient.py against the real brokerd and mockd.

  sync_call                 call(): result, raw answer with "cached", CLI round trip
  pipelined_futures         100 futures on one connection, answers out of order,
                            each matched to its own request by id
  asyncio_concurrent        100 concurrent AsyncBrokerClient.call on one connection
  errors_carry_code         unknown_backend, timeout (fault_slow + timeout_ms),
                            bad params, backend_error, rate_limited with
                            retry_after_ms, "id": null answers (too_large, depth)
                            raised on the right call; the connection stays usable
  drop_fails_pending        brokerd killed mid-request: every pending future and
                            async call fails promptly with ConnectionLost
  client_timeout            client-side deadline: TimeoutError, the late answer is
                            dropped and the next call gets its own answer
  close_fails_pending       close() with requests in flight fails them; submit after
                            close fails at once; no descriptor left open

Usage: test_pyclient.py --bin BUILD/bin [-k NAME] [--keep] [-v]
"""
import asyncio
import json
import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "python"))
import brokertest as bt  # noqa: E402
from brokertest import t  # noqa: E402
import brokerclient as bc  # noqa: E402

CASES, case = bt.case_list()
def wide_broker(env):
    """A broker with 8 backend connections: slow requests do not hold up the rest."""
    return env.broker(bt.broker_config(env, backends=[bt.backend(env, pool_size=8)]))


CLIENT = os.path.join(HERE, "..", "..", "examples", "python", "brokerclient.py")


def mixed(i):
    """Request i of a batch: every 10th is slow, so answers overtake each other."""
    if i % 10 == 0:
        return "fault_slow", {"ms": 150}
    return "echo", {"i": i, "s": "r%d" % i}


def check_mixed(i, r):
    typ, params = mixed(i)
    if typ == "echo":
        assert r.get("params") == params, "request %d got %s" % (i, bt.short(r))
    else:
        assert r == {"type": "fault_slow", "executed": True}, \
            "request %d got %s" % (i, bt.short(r))


@case
def sync_call(env):
    env.mockd()
    b = env.broker()
    with bc.BrokerClient(b.path, timeout=t(5)) as c:
        r = c.call("echo", {"a": [1, 2], "u": "\u00e9"})
        assert r["params"] == {"a": [1, 2], "u": "\u00e9"}, r
        scene = c.call("get_scene_info")
        assert isinstance(scene, dict) and scene, scene
        full = c.call("get_scene_info", raw=True)
        assert full["status"] == "success" and full["cached"] is True, full
        full = c.call("get_scene_info", cache=False, backend="blender", timeout_ms=1000, raw=True)
        assert full["cached"] is False, full
    p = subprocess.run([sys.executable, CLIENT, "--socket", b.path, "echo", '{"x": 1}'],
                       capture_output=True, text=True, timeout=t(10))
    assert p.returncode == 0 and json.loads(p.stdout)["params"] == {"x": 1}, p
    p = subprocess.run([sys.executable, CLIENT, "--socket", b.path, "--backend", "nope", "ping"],
                       capture_output=True, text=True, timeout=t(10))
    assert p.returncode == 1 and "unknown_backend" in p.stderr, p


@case
def pipelined_futures(env):
    env.mockd()
    b = wide_broker(env)
    with bc.BrokerClient(b.path, timeout=t(20)) as c:
        t0 = time.monotonic()
        futs = [c.submit(*mixed(i)) for i in range(100)]
        order = []
        for i, f in enumerate(futs):
            f.add_done_callback(lambda _f, i=i: order.append(i))
        for i, f in enumerate(futs):
            check_mixed(i, f.result(t(20)))
        # All on one connection, answered out of order: a slow one does not
        # hold back the fast ones sent after it.
        assert order != sorted(order), "answers came back in request order: %s" % order[:20]
        assert time.monotonic() - t0 < t(10)


@case
def asyncio_concurrent(env):
    env.mockd()
    b = wide_broker(env)

    async def run():
        async with bc.AsyncBrokerClient(b.path, timeout=t(20)) as c:
            done = []

            async def one(i):
                r = await c.call(*mixed(i))
                done.append(i)
                return r
            rs = await asyncio.gather(*(one(i) for i in range(100)))
            for i, r in enumerate(rs):
                check_mixed(i, r)
            assert done != sorted(done), "answers came back in request order"
            with_err = await asyncio.gather(c.call("echo", backend="nope"),
                                            c.call("echo", {"k": 1}), return_exceptions=True)
            assert isinstance(with_err[0], bc.BrokerError) and with_err[0].code == "unknown_backend"
            assert with_err[1]["params"] == {"k": 1}, with_err
    asyncio.run(run())


def expect_error(fn, code):
    try:
        r = fn()
    except bc.BrokerError as e:
        assert e.code == code, "expected %s, got %s: %s" % (code, e.code, e.message)
        return e
    raise AssertionError("expected BrokerError %s, got result %s" % (code, bt.short(r)))


@case
def errors_carry_code(env):
    env.mockd()
    rl = env.broker(bt.broker_config(env, listen=os.path.join(env.tmp, "rl.sock"),
                                     admin_listen=os.path.join(env.tmp, "rl.admin.sock"),
                                     rate_limit={"rate": 1, "burst": 1}), name="brokerd-rl")
    b = env.broker()
    with bc.BrokerClient(b.path, timeout=t(10)) as c:
        e = expect_error(lambda: c.call("echo", backend="nope"), "unknown_backend")
        assert isinstance(e.id, int) and "nope" in e.message, vars(e)
        e = expect_error(lambda: c.call("fault_slow", {"ms": 2000}, timeout_ms=100), "timeout")
        assert "100 ms" in e.message, e.message
        e = expect_error(lambda: c.call("echo", [1, 2]), "bad_request")
        assert "params" in e.message and e.id is not None, vars(e)
        e = expect_error(lambda: c.call("fault_error", {"message": "boom"}), "backend_error")
        assert e.message == "boom" and e.response["status"] == "error", vars(e)
        # "id": null answers, with other requests in flight: each goes to the
        # request it is about, the slow one still gets its own answer.
        slow = c.submit("fault_slow", {"ms": 300})
        big = c.submit("echo", {"big": "x" * 70000})
        deep = c.submit("echo", {"a": json.loads("[" * 80 + "1" + "]" * 80)})
        ok = c.submit("echo", {"n": 3})
        e = expect_error(lambda: big.result(t(5)), "too_large")
        assert e.id is None, vars(e)
        e = expect_error(lambda: deep.result(t(5)), "bad_request")
        assert "max_json_depth" in e.message, e.message
        assert ok.result(t(5))["params"] == {"n": 3}
        assert slow.result(t(5)) == {"type": "fault_slow", "executed": True}
        assert c.call("echo", {"after": True})["params"] == {"after": True}
    with bc.BrokerClient(rl.path, timeout=t(10)) as c:
        c.call("echo")
        e = expect_error(lambda: c.call("echo"), "rate_limited")
        assert isinstance(e.retry_after_ms, int) and e.retry_after_ms > 0, vars(e)


@case
def drop_fails_pending(env):
    env.mockd()
    b = wide_broker(env)
    c = bc.BrokerClient(b.path)  # no client deadline: only the drop can end them
    futs = [c.submit("fault_slow", {"ms": 5000}) for _ in range(3)]
    assert c.call("echo", {"x": 1}, timeout=t(5))["params"] == {"x": 1}

    async def run():
        ac = await bc.AsyncBrokerClient(b.path).connect()
        tasks = [asyncio.ensure_future(ac.call("fault_slow", {"ms": 5000})) for _ in range(3)]
        await asyncio.sleep(0.2)
        b.kill()
        t0 = time.monotonic()
        res = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), t(3))
        assert all(isinstance(r, bc.ConnectionLost) for r in res), res
        try:
            await ac.call("echo")
            raise AssertionError("call after the drop succeeded")
        except bc.ConnectionLost:
            pass
        await ac.close()
        return time.monotonic() - t0
    dt = asyncio.run(run())
    assert dt < t(2), "async calls failed %.2f s after the drop" % dt
    for f in futs:
        try:
            f.result(t(3))
            raise AssertionError("a pending future succeeded after brokerd was killed")
        except bc.ConnectionLost as e:
            assert e.code == "connection_lost" and "closed" in e.message, e.message
    try:
        c.call("echo", timeout=t(3))
        raise AssertionError("call after the drop succeeded")
    except bc.ConnectionLost:
        pass
    c.close()


@case
def client_timeout(env):
    env.mockd()
    b = env.broker()
    with bc.BrokerClient(b.path) as c:
        t0 = time.monotonic()
        try:
            c.call("fault_slow", {"ms": 1500}, timeout=0.3)
            raise AssertionError("no TimeoutError")
        except TimeoutError:
            pass
        dt = time.monotonic() - t0
        assert 0.25 < dt < t(1.2), "client timeout took %.2f s" % dt
        f1 = c.submit("fault_slow", {"ms": 1500}, timeout=t(5))
        f2 = c.submit("fault_slow", {"ms": 1000}, timeout=0.2)
        try:
            f2.result(t(2))
            raise AssertionError("no TimeoutError")
        except TimeoutError:
            pass
        assert f1.result(t(5)) == {"type": "fault_slow", "executed": True}
        time.sleep(0.5)  # both late answers have arrived and been dropped
        assert c.call("echo", {"next": 1}, timeout=t(5))["params"] == {"next": 1}

    async def run():
        async with bc.AsyncBrokerClient(b.path, timeout=0.3) as ac:
            t0 = time.monotonic()
            try:
                await ac.call("fault_slow", {"ms": 1500})
                raise AssertionError("no TimeoutError")
            except TimeoutError:
                pass
            assert time.monotonic() - t0 < t(1.2)
            r = await ac.call("echo", {"next": 2}, timeout=t(5))
            assert r["params"] == {"next": 2}, r
    asyncio.run(run())


@case
def close_fails_pending(env):
    env.mockd()
    b = env.broker()
    fds = len(os.listdir("/proc/self/fd"))
    c = bc.BrokerClient(b.path)
    f = c.submit("fault_slow", {"ms": 1000})
    t0 = time.monotonic()
    c.close()
    try:
        f.result(t(2))
        raise AssertionError("pending future succeeded after close")
    except bc.ConnectionLost as e:
        assert "client closed" in e.message, e.message
    assert time.monotonic() - t0 < t(1)
    g = c.submit("echo")
    assert g.done() and isinstance(g.exception(), bc.ConnectionLost)
    c.close()  # twice: harmless
    assert len(os.listdir("/proc/self/fd")) == fds, "the client left descriptors open"


if __name__ == "__main__":
    sys.exit(bt.run_cases(CASES, "examples/python/brokerclient.py against brokerd"))
