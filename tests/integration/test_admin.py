#!/usr/bin/env python3
"""The admin socket and brokerctl (issue 11), against the real brokerd and
mockd.

  admin_commands_answer            every command answers with its figures; ids echoed, in order
  stats_count_requests             answers_ok / errors by code / per-backend counts follow traffic
  admin_errors_are_answers         not JSON, no cmd, unknown command: one error line each; reload
  metrics_parse_strictly           the Prometheus text passes a strict parser of the format
  admin_socket_mode_and_cleanup    mode 0600, removed at exit; shutdown command = SIGTERM
  drain_stops_accepting            drain (admin or SIGUSR1): no new clients, connected ones served
  brokerctl_human_and_json         tables, --json, call, exit codes (1 error, 3 no broker)
  stuck_admin_client_harmless      an admin client that never reads does not slow clients

Usage: test_admin.py --bin BUILD/bin [-k NAME] [--keep] [-v]
"""
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokertest as bt  # noqa: E402
from brokertest import t, line, request, short, assert_success, assert_code  # noqa: E402,F401

CASES, case = bt.case_list()


class Admin:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(t(5))
        self.s.connect(path)
        self.buf = b""

    def send_raw(self, data):
        self.s.sendall(data)

    def recv(self):
        while b"\n" not in self.buf:
            chunk = self.s.recv(1 << 20)
            assert chunk, "admin socket closed"
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\n", 1)
        return json.loads(raw)

    def cmd(self, cmd, rid=1):
        self.send_raw(json.dumps({"id": rid, "cmd": cmd}).encode() + b"\n")
        r = self.recv()
        assert r["id"] == rid, r
        return r

    def result(self, cmd):
        r = self.cmd(cmd)
        assert r["status"] == "success", "%s: %s" % (cmd, short(r))
        return r["result"]

    def close(self):
        self.s.close()


def admin_path(b):
    return b.cfg["admin_listen"]


def ctl(env, *args, timeout=None):
    return subprocess.run([os.path.join(env.bindir, "brokerctl"), *args], capture_output=True,
                          text=True, timeout=timeout or t(10))


@case
def admin_commands_answer(env):
    env.mockd()
    b = env.broker()
    a = Admin(admin_path(b))
    st = a.result("stats")
    for k in ("uptime_ms", "clients", "inflight", "answers_ok", "errors", "backends"):
        assert k in st, "stats lacks %s: %s" % (k, short(st))
    assert set(st["errors"]) >= {"bad_request", "timeout", "rate_limited", "unavailable"}
    h = a.result("health")["backends"][0]
    assert h["name"] == "blender" and h["state"] == "up" and h["breaker"]["state"] == "closed", h
    p = a.result("pool")["backends"][0]
    assert p["size"] == 2 and p["waiting"] == 0 and p["max_queue"] == 256, p
    c = a.result("cache")
    assert c["enabled"] is True and "hit_ratio" in c and "evictions" in c, c
    m = a.result("memory")
    assert m["allocated"] > 0 and m["rss"] > 0 and m["resident"] > 0, m
    cfg = a.result("config")
    assert cfg["listen"] == b.cfg["listen"] and cfg["backends"][0]["pool_size"] == 2, short(cfg)
    assert "# TYPE brokerd_clients gauge" in a.result("metrics")["text"]
    # Pipelined commands: one answer each, in order, ids echoed (any JSON).
    a.send_raw(b'{"id":"x","cmd":"pool"}\n{"id":[1,2],"cmd":"cache"}\n{"cmd":"stats"}\n')
    rs = [a.recv() for _ in range(3)]
    assert [r["id"] for r in rs] == ["x", [1, 2], None], rs
    a.close()


@case
def stats_count_requests(env):
    env.mockd()
    b = env.broker()
    a = Admin(admin_path(b))
    s0 = a.result("stats")
    with b.connect() as c:
        for i in range(10):
            assert_success(c.call(i, "echo", {"i": i}))
        for i in range(3):
            assert_success(c.call(100 + i, "get_scene_info"))
        c.send(b"not json\n")
        assert_code(c.recv_one(), "bad_request")
        assert_code(c.call(200, "echo", {}, backend="nope"), "unknown_backend")
        st = a.result("stats")
        assert st["clients"] == 1, st["clients"]
    assert st["answers_ok"] - s0["answers_ok"] == 13, st
    assert st["errors"]["bad_request"] - s0["errors"]["bad_request"] == 1, st["errors"]
    assert st["errors"]["unknown_backend"] - s0["errors"]["unknown_backend"] == 1
    be = st["backends"]["blender"]
    assert be["ok"] == 13 and be["cache_hits"] == 2, be  # get_scene_info: 1 miss, 2 hits
    cache = a.result("cache")
    assert cache["hits"] >= 2 and cache["entries"] >= 1, cache
    pool = a.result("pool")["backends"][0]
    assert pool["open"] >= 1 and pool["connects"] >= 1, pool
    a.close()


@case
def admin_errors_are_answers(env):
    b = env.broker()
    a = Admin(admin_path(b))
    a.send_raw(b"garbage\n")
    r = a.recv()
    assert r["status"] == "error" and r["error"]["code"] == "bad_request" and r["id"] is None, r
    a.send_raw(b'{"id":5}\n')
    r = a.recv()
    assert r["error"]["code"] == "bad_request" and r["id"] == 5, r
    r = a.cmd("frobnicate")
    assert r["error"]["code"] == "unknown_command" and "stats" in r["error"]["message"], r
    r = a.cmd("reload")  # the file is unchanged: a reload that changes nothing
    assert r["status"] == "success" and r["result"]["generation"] == 2, r
    assert a.result("stats")["uptime_ms"] >= 0  # still usable
    a.close()


# --- a strict reader of the Prometheus text format (0.0.4) ----------------
METRIC = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
SAMPLE = re.compile(r"^(%s)(\{(?:%s)(?:,%s)*\})? (\S+)$" % (METRIC, LABEL, LABEL))


def parse_prometheus(text):
    """Return {family: {"type": T, "samples": [(labels, value)]}}; raise on any
    deviation: HELP/TYPE once each and before the samples, known types,
    counters named *_total, float values, no duplicate series, final newline."""
    assert text.endswith("\n"), "exposition must end with a newline"
    fams, seen, last = {}, set(), None
    for n, ln in enumerate(text.split("\n")[:-1], 1):
        if ln.startswith("# HELP "):
            name = ln.split(" ")[2]
            assert re.fullmatch(METRIC, name), "line %d: bad name" % n
            assert name not in fams or "help" not in fams[name], "line %d: second HELP" % n
            fams.setdefault(name, {"samples": []})["help"] = True
        elif ln.startswith("# TYPE "):
            parts = ln.split(" ")
            assert len(parts) == 4 and parts[3] in ("counter", "gauge", "histogram",
                                                    "summary", "untyped"), "line %d: %r" % (n, ln)
            f = fams.setdefault(parts[2], {"samples": []})
            assert "type" not in f and not f["samples"], "line %d: TYPE late or twice" % n
            f["type"] = parts[3]
        else:
            m = SAMPLE.match(ln)
            assert m, "line %d: not a sample: %r" % (n, ln)
            name, labels, value = m.group(1), m.group(2) or "", m.group(3)
            float(value)
            fam = name
            for suffix in ("_bucket", "_sum", "_count"):
                base = name[:-len(suffix)]
                if name.endswith(suffix) and fams.get(base, {}).get("type") == "histogram":
                    fam = base
            assert fam in fams and "type" in fams[fam], "line %d: %s without TYPE" % (n, name)
            if fams[fam]["type"] == "histogram":
                assert fam != name, "line %d: histogram sample without suffix" % n
                if name.endswith("_bucket"):
                    assert 'le="' in labels, "line %d: bucket without le" % n
            assert (name, labels) not in seen, "line %d: duplicate series" % n
            assert fam == last or not fams[fam]["samples"], \
                "line %d: %s's samples are not one group" % (n, fam)
            last = fam
            seen.add((name, labels))
            fams[fam]["samples"].append((name + labels, float(value)))
    for name, f in fams.items():
        if f.get("type") == "counter":
            assert name.endswith("_total"), "counter %s does not end in _total" % name
        if f.get("type") == "histogram":
            check_histogram(name, f["samples"])
    return fams


def check_histogram(name, samples):
    """Per series: buckets cumulative in le order, +Inf bucket == _count."""
    series = {}
    for key, v in samples:
        m = re.match(r"^(%s)(?:\{(.*)\})?$" % METRIC, key)
        sname, labels = m.group(1), m.group(2) or ""
        le = re.search(r'le="([^"]*)"', labels)
        rest = re.sub(r',?le="[^"]*"', "", labels)
        s = series.setdefault(rest, {"buckets": [], "count": None})
        if sname.endswith("_bucket"):
            s["buckets"].append((float(le.group(1)), v))
        elif sname.endswith("_count"):
            s["count"] = v
    for rest, s in series.items():
        b = s["buckets"]
        assert b and b[-1][0] == float("inf"), "%s{%s}: no +Inf bucket" % (name, rest)
        assert [x[0] for x in b] == sorted(x[0] for x in b), "%s: le out of order" % name
        assert all(b[i][1] <= b[i + 1][1] for i in range(len(b) - 1)), \
            "%s{%s}: buckets not cumulative" % (name, rest)
        assert s["count"] == b[-1][1], "%s{%s}: +Inf %s != count %s" % (
            name, rest, b[-1][1], s["count"])


@case
def metrics_parse_strictly(env):
    """Two backends, so that every per-backend family has several series
    (each family's samples must be one group)."""
    m = env.mockd()
    b = env.broker(bt.broker_config(env, backends=[bt.backend(env),
                                                   bt.backend(env, name="two", address=m.addr)]))
    with b.connect() as c:
        for i in range(5):
            assert_success(c.call(i, "echo", {}))
    a = Admin(admin_path(b))
    fams = parse_prometheus(a.result("metrics")["text"])
    ok = dict(fams["brokerd_backend_ok_total"]["samples"])
    assert ok['brokerd_backend_ok_total{backend="blender"}'] == 5, ok
    lat = dict(fams["brokerd_request_duration_seconds"]["samples"])
    key = 'brokerd_request_duration_seconds_count{backend="blender",command="echo"}'
    assert lat.get(key) == 5, "latency count for echo: %s" % short(lat)
    for fam in ("brokerd_error_answers_total", "brokerd_pool_connections", "brokerd_queue_waiting",
                "brokerd_breaker_state", "brokerd_backend_up", "brokerd_cache_hit_ratio",
                "brokerd_memory_bytes", "brokerd_uptime_seconds", "brokerd_clients"):
        assert fam in fams and fams[fam]["samples"], "missing %s" % fam
    states = dict(fams["brokerd_breaker_state"]["samples"])
    assert states['brokerd_breaker_state{backend="blender",state="closed"}'] == 1, states
    # the parser itself refuses what it must
    for bad in ("x 1", "# TYPE x counter\nx 1\n", "# TYPE x_total counter\nx_total one\n",
                "# TYPE y gauge\ny{a=b} 1\n",
                '# TYPE h histogram\nh_bucket{le="1"} 3\nh_bucket{le="+Inf"} 2\nh_count 2\n',
                '# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_count 3\n',
                '# TYPE a gauge\n# TYPE b gauge\na{x="1"} 1\nb 1\na{x="2"} 1\n'):
        try:
            parse_prometheus(bad if bad.endswith("\n") else bad)
        except (AssertionError, ValueError):
            continue
        raise AssertionError("the parser accepted %r" % bad)
    a.close()


@case
def admin_socket_mode_and_cleanup(env):
    b = env.broker()
    path = admin_path(b)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode == 0o600, "admin socket mode %o" % mode
    a = Admin(path)
    r = a.result("shutdown")
    assert r["shutting_down"] is True
    assert b.wait(t(10)) == 0, "brokerd exit after the shutdown command"
    assert not os.path.exists(path), "admin socket file left behind"


@case
def drain_stops_accepting(env):
    """drain: the client socket goes away at once (new clients get ENOENT,
    not a hang in a backlog), clients already connected keep being served,
    stats say accepting false; SIGTERM then ends it as usual. SIGUSR1 does
    the same (a second broker)."""
    env.mockd()
    b = env.broker()
    with b.connect() as c:
        a = Admin(admin_path(b))
        assert a.result("stats")["accepting"] is True
        assert a.result("drain")["draining"] is True
        assert bt.wait_for(lambda: not os.path.exists(b.path), t(5)), "socket file still there"
        assert a.result("stats")["accepting"] is False
        try:
            bt.Client(b.path, timeout=t(1))
            raise AssertionError("a new client was accepted while draining")
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        for i in range(5):
            assert_success(c.call(i, "echo", {"i": i}), "a connected client while draining")
        a.close()
    assert "draining: no new clients" in b.stderr()
    assert b.stop(t(10)) == 0
    cfg2 = bt.broker_config(env, listen=os.path.join(env.tmp, "b2.sock"),
                            admin_listen=os.path.join(env.tmp, "b2.admin.sock"))
    b2 = env.broker(cfg2)
    with b2.connect() as c:
        b2.signal(signal.SIGUSR1)
        assert bt.wait_for(lambda: not os.path.exists(b2.path), t(5)), "SIGUSR1 did not drain"
        assert_success(c.call(1, "echo", {}), "connected client after SIGUSR1")


@case
def brokerctl_human_and_json(env):
    env.mockd()
    b = env.broker()
    sock = ["--socket", admin_path(b)]
    p = ctl(env, *sock, "health")
    assert p.returncode == 0, p.stderr
    head = p.stdout.splitlines()[0].split()
    assert head[:2] == ["name", "state"] and "breaker.state" in head, p.stdout
    assert p.stdout.splitlines()[1].split()[:2] == ["blender", "up"], p.stdout
    p = ctl(env, *sock, "--json", "pool")
    assert p.returncode == 0 and json.loads(p.stdout)["backends"][0]["size"] == 2, p.stdout
    p = ctl(env, *sock, "stats")
    assert p.returncode == 0 and re.search(r"^uptime_ms\s+\d+$", p.stdout, re.M), p.stdout
    p = ctl(env, *sock, "metrics")
    assert p.returncode == 0 and "# TYPE brokerd_clients gauge" in p.stdout
    p = ctl(env, "--listen", b.path, "call", "echo", '{"a":1}')
    assert p.returncode == 0 and re.search(r"^params\.a\s+1$", p.stdout, re.M), p.stdout
    p = ctl(env, "--listen", b.path, "--json", "call", "get_scene_info")
    assert p.returncode == 0 and json.loads(p.stdout)["status"] == "success", p.stdout
    # numbers travel and print as written: 4.08, never 4.0800000000000001
    p = ctl(env, "--listen", b.path, "--json", "call", "echo", '{"x": 4.08,\n "n": 1e2}')
    assert p.returncode == 0 and "4.08" in p.stdout and "4.0800" not in p.stdout, p.stdout
    assert json.loads(p.stdout)["result"]["params"] == {"x": 4.08, "n": 100.0}, p.stdout
    p = ctl(env, "--listen", b.path, "call", "echo", '{"x": 4.08}')
    assert re.search(r"^params\.x\s+4\.08$", p.stdout, re.M), p.stdout
    p = ctl(env, "--listen", b.path, "call", "echo", "[1]")
    assert p.returncode == 2 and "must be a JSON object" in p.stderr, p.stderr
    p = ctl(env, *sock, "frobnicate")
    assert p.returncode == 1 and "unknown_command" in p.stderr, (p.returncode, p.stderr)
    p = ctl(env, "--socket", os.path.join(env.tmp, "nothing.sock"), "stats")
    assert p.returncode == 3 and "is brokerd running" in p.stderr, (p.returncode, p.stderr)
    p = ctl(env)
    assert p.returncode == 2 and "usage" in p.stderr
    p = ctl(env, "--help")
    assert p.returncode == 0 and "call TYPE" in p.stdout


@case
def stuck_admin_client_harmless(env):
    """An admin client asking for metrics in a loop and never reading: the
    clients are served as fast as ever, and it is cut off, not the broker."""
    env.mockd()
    b = env.broker()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(admin_path(b))
    s.setblocking(False)
    req = b'{"id":1,"cmd":"metrics"}\n' * 200
    sent = 0
    cut_off = False
    t0 = time.monotonic()
    while time.monotonic() - t0 < t(10):
        try:
            sent += s.send(req)
        except BlockingIOError:
            time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            cut_off = True
            break
        with b.connect() as c:
            assert_success(c.call(1, "echo", {}), "a client while the admin client is stuck")
    assert cut_off, "an admin client that never reads was not cut off (%d bytes sent)" % sent
    assert "not reading its answers" in b.stderr()
    a = Admin(admin_path(b))
    assert bt.wait_for(lambda: a.result("stats")["clients"] == 0, t(5)), "clients left"
    a.close()
    s.close()


if __name__ == "__main__":
    sys.exit(bt.run_cases(CASES, "brokerd admin socket and brokerctl (issue 11)"))
