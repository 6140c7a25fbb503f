#!/usr/bin/env python3
"""Configuration reload (issue 11): SIGHUP and the admin reload command,
against the real brokerd and mockd, while clients stay connected.

  reload_applies_and_keeps_clients  admin reload: backend added, limits changed; in-flight
                                    requests and the connection survive
  sighup_reloads_and_removes        SIGHUP: a removed backend finishes its in-flight request,
                                    then is unknown; its connections close
  bad_file_keeps_old_config         syntax error, unknown key, a key that needs a restart:
                                    refused naming the cause, old config stays in effect
  pool_grows_and_shrinks            pool_size 2 -> 4 lets 4 requests run at once; 4 -> 1
                                    closes the surplus connections
  address_change_moves_backend      a new address: the next requests go there, the old
                                    connections close
  removed_and_readded_backend       a name that comes back works again, counters kept
  brokerctl_reload                  brokerctl reload: table or --json on success, exit 1 and
                                    the reason on a refused file

Usage: test_reload.py --bin BUILD/bin [-k NAME] [--keep] [-v]
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
from brokertest import t, request, short, assert_success, assert_code  # noqa: E402,F401

CASES, case = bt.case_list()


admin = bt.admin_answer


def rewrite(b, cfg):
    b.cfg = cfg
    with open(b.config_path + ".new", "w") as f:
        json.dump(cfg, f, indent=1)
    os.replace(b.config_path + ".new", b.config_path)


def reload_ok(b, cfg):
    rewrite(b, cfg)
    r = admin(b, "reload")
    assert r["status"] == "success", short(r)
    return r["result"]


def pool_of(b, name):
    for p in admin(b, "pool")["result"]["backends"]:
        if p["name"] == name:
            return p
    raise AssertionError("no backend %s in pool" % name)


def reload_lines(b):
    return [ln for ln in b.log_lines() if ln.get("msg") in ("configuration reloaded",
                                                              "configuration not reloaded")]


def wait_reload_logged(b, n):
    assert bt.wait_for(lambda: len(reload_lines(b)) >= n, t(10)), \
        "no reload logged: %s" % b.stderr()[-1500:]
    return reload_lines(b)[n - 1]


def mock_at(env, name):
    return env.mockd(os.path.join(env.tmp, name + ".sock"), name=name)


@case
def reload_applies_and_keeps_clients(env):
    ma = mock_at(env, "ma")
    mb = mock_at(env, "mb")
    cfg = bt.broker_config(env, backends=[bt.backend(env, "alpha", ma.addr)])
    b = env.broker(cfg)
    c = b.connect(timeout=t(10))
    assert_success(c.call(1, "get_scene_info"))
    # two requests in flight across the reload
    c.send(request(2, "fault_slow", {"ms": int(600 * bt.SLOW)}))
    c.send(request(3, "fault_slow", {"ms": int(600 * bt.SLOW)}))
    time.sleep(0.1)
    r = c.call(4, "get_scene_info", backend="beta")
    assert_code(r, "unknown_backend")
    new = bt.broker_config(env, backends=[bt.backend(env, "alpha", ma.addr),
                                          bt.backend(env, "beta", mb.addr)],
                           rate_limit={"max_inflight_per_client": 3})
    res = reload_ok(b, new)
    assert res["reloaded"] and res["generation"] == 2, res
    assert "1 added" in res["message"], res
    got = {r["id"]: r for r in c.recv(2, timeout=t(10))}
    assert_success(got[2], "in flight across the reload")
    assert_success(got[3], "in flight across the reload")
    assert_success(c.call(5, "get_scene_info", backend="beta"), "the added backend")
    assert mb.calls("get_scene_info") == 1
    # a changed limit is in effect: alpha's request timeout
    r = c.call(6, "fault_slow", {"ms": int(1500 * bt.SLOW)}, timeout=t(10))
    assert_success(r, "before the timeout is lowered")
    new["backends"][0]["request_timeout_ms"] = int(200 * bt.SLOW)
    reload_ok(b, new)
    r = c.call(7, "fault_slow", {"ms": int(1500 * bt.SLOW)}, timeout=t(10))
    assert_code(r, "timeout", "after the timeout is lowered")
    assert str(int(200 * bt.SLOW)) in r["error"]["message"], r
    # the effective config says so too, and pool lists the new backend
    conf = admin(b, "config")["result"]
    assert [x["name"] for x in conf["backends"]] == ["alpha", "beta"], conf["backends"]
    assert conf["rate_limit"]["max_inflight_per_client"] == 3
    assert pool_of(b, "beta")["removed"] is False
    c.close()


@case
def sighup_reloads_and_removes(env):
    ma = mock_at(env, "ma")
    mb = mock_at(env, "mb")
    cfg = bt.broker_config(env, backends=[bt.backend(env, "alpha", ma.addr),
                                          bt.backend(env, "beta", mb.addr)])
    b = env.broker(cfg)
    c = b.connect(timeout=t(10))
    assert_success(c.call(1, "get_scene_info", backend="beta"))
    c.send(request(2, "fault_slow", {"ms": int(800 * bt.SLOW)}, backend="beta"))
    time.sleep(0.15)
    rewrite(b, bt.broker_config(env, backends=[bt.backend(env, "alpha", ma.addr)]))
    b.signal(signal.SIGHUP)
    line = wait_reload_logged(b, 1)
    assert line["msg"] == "configuration reloaded" and "1 removed" in line["summary"], line
    assert_code(c.call(3, "get_scene_info", backend="beta"), "unknown_backend")
    assert_success(c.call(4, "get_scene_info"), "the kept backend")
    assert pool_of(b, "beta")["removed"] is True
    r = c.recv_one(timeout=t(10))
    assert r["id"] == 2, r
    assert_success(r, "the removed backend finishes what it had")
    # its connections close once free (mock_stats counts its own connection)
    assert bt.wait_for(lambda: mb.stats()["connections_open"] == 1, t(5)), mb.stats()
    c.close()


@case
def bad_file_keeps_old_config(env):
    env.mockd()
    b = env.broker()
    c = b.connect()
    good = dict(b.cfg)
    with open(b.config_path, "w") as f:
        f.write('{"workers": 2,\n "backends": [}')
    r = admin(b, "reload")
    assert r["status"] == "error" and r["error"]["code"] == "reload_failed", r
    msg = r["error"]["message"]
    assert "stays in effect" in msg and "line 2" in msg, msg
    rewrite(b, dict(good, max_clientz=5))
    r = admin(b, "reload")
    assert "max_clientz: unknown key" in r["error"]["message"], r
    rewrite(b, dict(good, max_request_bytes=4096))
    r = admin(b, "reload")
    assert "max_request_bytes: changed, but it cannot be reloaded" in r["error"]["message"], r
    # SIGHUP with the bad file: logged, broker still up, old config in effect
    b.signal(signal.SIGHUP)
    line = wait_reload_logged(b, 4)
    assert line["msg"] == "configuration not reloaded" and "max_request_bytes" in line["reason"], \
        line
    assert b.alive()
    assert admin(b, "config")["result"]["max_request_bytes"] == good["max_request_bytes"]
    assert_success(c.call(1, "get_scene_info"), "same connection after refused reloads")
    # and a good file afterwards applies
    res = reload_ok(b, dict(good, max_clients=77))
    assert res["generation"] == 2, res
    assert admin(b, "config")["result"]["max_clients"] == 77
    c.close()


def run_parallel(b, n, ms, backend=None):
    """n clients each send one slow request at once; returns the answers."""
    out = [None] * n

    def one(i):
        with b.connect(timeout=t(15)) as c:
            kw = {"backend": backend} if backend else {}
            out[i] = c.call(i + 1, "fault_slow", {"ms": ms}, timeout=t(15), **kw)
    th = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for x in th:
        x.start()
    for x in th:
        x.join()
    return out


@case
def pool_grows_and_shrinks(env):
    m = env.mockd()
    cfg = bt.broker_config(env, backends=[bt.backend(env, pool_size=2)])
    b = env.broker(cfg)
    for r in run_parallel(b, 4, int(300 * bt.SLOW)):
        assert_success(r)
    assert m.stats()["max_connections_open"] - 1 <= 2, m.stats()  # minus the stats conn
    res = reload_ok(b, bt.broker_config(env, backends=[bt.backend(env, pool_size=4)]))
    assert "1 resized" in res["message"], res
    for r in run_parallel(b, 4, int(500 * bt.SLOW)):
        assert_success(r)
    st = m.stats()
    assert st["max_connections_open"] - 1 >= 4, st
    assert pool_of(b, "blender")["size"] == 4
    reload_ok(b, bt.broker_config(env, backends=[bt.backend(env, pool_size=1)]))
    # the idle surplus is closed by the reload; what is left serves on
    assert bt.wait_for(lambda: m.stats()["connections_open"] - 1 <= 1, t(5)), m.stats()
    for r in run_parallel(b, 3, int(100 * bt.SLOW)):
        assert_success(r)
    assert m.stats()["connections_open"] - 1 <= 1, m.stats()
    assert pool_of(b, "blender")["size"] == 1


@case
def address_change_moves_backend(env):
    ma = mock_at(env, "ma")
    mb = mock_at(env, "mb")
    b = env.broker(bt.broker_config(env, backends=[bt.backend(env, "alpha", ma.addr)]))
    c = b.connect()
    for i in range(3):
        assert_success(c.call(i + 1, "get_scene_info", cache=False))
    assert ma.calls("get_scene_info") == 3
    assert ma.stats()["connections_open"] >= 2  # ours + the stats one
    reload_ok(b, bt.broker_config(env, backends=[bt.backend(env, "alpha", mb.addr)]))
    for i in range(3):
        assert_success(c.call(10 + i, "get_scene_info", cache=False))
    assert mb.calls("get_scene_info") == 3, "requests after the reload go to the new address"
    assert ma.calls("get_scene_info") == 3, "none to the old one"
    assert bt.wait_for(lambda: ma.stats()["connections_open"] == 1, t(5)), ma.stats()
    c.close()


@case
def removed_and_readded_backend(env):
    ma = mock_at(env, "ma")
    mb = mock_at(env, "mb")
    both = bt.broker_config(env, backends=[bt.backend(env, "alpha", ma.addr),
                                           bt.backend(env, "beta", mb.addr)])
    b = env.broker(both)
    c = b.connect()
    assert_success(c.call(1, "get_scene_info", backend="beta", cache=False))
    reload_ok(b, bt.broker_config(env, backends=[bt.backend(env, "alpha", ma.addr)]))
    assert_code(c.call(2, "get_scene_info", backend="beta"), "unknown_backend")
    res = reload_ok(b, both)
    assert "1 back" in res["message"], res
    assert_success(c.call(3, "get_scene_info", backend="beta", cache=False))
    assert mb.calls("get_scene_info") == 2
    stats = admin(b, "stats")["result"]
    assert stats["backends"]["beta"]["ok"] == 2, short(stats["backends"]["beta"])
    c.close()


@case
def brokerctl_reload(env):
    import subprocess
    env.mockd()
    b = env.broker()
    ctl = [os.path.join(env.bindir, "brokerctl"), "--socket", b.cfg["admin_listen"]]
    r = subprocess.run(ctl + ["reload"], capture_output=True, text=True, timeout=t(20))
    assert r.returncode == 0, r
    assert "generation" in r.stdout and "configuration reloaded" in r.stdout, r.stdout
    r = subprocess.run(ctl + ["--json", "reload"], capture_output=True, text=True, timeout=t(20))
    assert r.returncode == 0 and json.loads(r.stdout)["generation"] == 3, r
    rewrite(b, dict(b.cfg, workers=1))
    r = subprocess.run(ctl + ["reload"], capture_output=True, text=True, timeout=t(20))
    assert r.returncode == 1, r
    assert "workers: changed, but it cannot be reloaded" in r.stderr, r.stderr


if __name__ == "__main__":
    sys.exit(bt.run_cases(CASES, "brokerd configuration reload (issue 11)"))
