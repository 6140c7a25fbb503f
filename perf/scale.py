#!/usr/bin/env python3
"""scale.py - what an idle client connection costs brokerd, and whether the
idle ones get in the way of the busy ones (run through perf/scale.sh).

Opens --idle connections (10,000 by default) that connect and never send,
waits until brokerd counts them all, and reads brokerd's own figures before
and after: RSS (/proc/PID/status) and jemalloc's allocated bytes (the admin
`memory` command). The difference divided by the connections is the cost
per idle connection; the target is 4 KiB (no receive buffer held while
idle: io_uring provided buffers, front/rxbuf.c). Then loadgen drives
traffic over a few more connections while the idle ones stay, and the
figures are read again.

Prints one JSON line per measurement:
  {"bench":"scale","phase":"idle","idle_conns":10000,"rss_bytes_per_conn":...,
   "allocated_bytes_per_conn":...}
  {"bench":"scale","phase":"traffic","idle_conns":10000,"clients":32,"req_per_s":...,...}

Usage: scale.py [--bin build/bin] [--idle 10000] [--workers 2] [--seconds 5]
"""
import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def admin(path, cmd):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    s.sendall(json.dumps({"id": 1, "cmd": cmd}).encode() + b"\n")
    buf = b""
    while b"\n" not in buf:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
    s.close()
    r = json.loads(buf.split(b"\n", 1)[0])
    assert r["status"] == "success", r
    return r["result"]


def wait_until(pred, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def figures(pid, admin_path):
    mem = admin(admin_path, "memory")
    return rss_bytes(pid), mem["allocated"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--bin", default=os.path.join(here, "..", "build", "bin"))
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--clients", type=int, default=32, help="busy connections (loadgen)")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--label", default="", help="added to every JSON line (e.g. a build name)")
    a = ap.parse_args()
    binp = os.path.abspath(a.bin)
    need = a.idle + 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < need:
        sys.exit("scale.py: RLIMIT_NOFILE hard limit %d < %d (run as root or raise it)" % (hard, need))
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    tmp = tempfile.mkdtemp(prefix="brokerd-scale-")
    procs = []
    socks = []
    try:
        msock = os.path.join(tmp, "m.sock")
        procs.append(subprocess.Popen([os.path.join(binp, "mockd"), "--listen", "unix:" + msock],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_until(lambda: os.path.exists(msock), 5)
        cfg = {
            "listen": os.path.join(tmp, "b.sock"),
            "admin_listen": os.path.join(tmp, "a.sock"),
            "workers": a.workers,
            "max_clients": a.idle + 1000,
            "log": {"level": "warn"},
            "rate_limit": {"rate": 10000000, "burst": 100000000},
            "backends": [{"name": "blender", "address": "unix:" + msock, "pool_size": 4,
                          "health": {"interval_ms": 86400000}}],
        }
        with open(os.path.join(tmp, "b.json"), "w") as f:
            json.dump(cfg, f)
        b = subprocess.Popen([os.path.join(binp, "brokerd"), "--config",
                              os.path.join(tmp, "b.json")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(b)
        if not wait_until(lambda: os.path.exists(cfg["admin_listen"]), 10):
            sys.exit("scale.py: brokerd did not start")
        # warm up: one request per worker so lazily built state exists
        for _ in range(a.workers * 2):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(cfg["listen"])
            s.sendall(b'{"id":1,"type":"get_scene_info"}\n')
            s.recv(65536)
            s.close()
        wait_until(lambda: admin(cfg["admin_listen"], "stats")["clients"] == 0, 5)
        time.sleep(0.3)
        rss0, alloc0 = figures(b.pid, cfg["admin_listen"])
        t0 = time.monotonic()
        for _ in range(a.idle):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(cfg["listen"])
            socks.append(s)
        ok = wait_until(lambda: admin(cfg["admin_listen"], "stats")["clients"] >= a.idle, 60)
        opened_s = time.monotonic() - t0
        time.sleep(0.5)
        rss1, alloc1 = figures(b.pid, cfg["admin_listen"])
        line = {"bench": "scale", "phase": "idle", "idle_conns": a.idle, "all_counted": ok,
                "open_seconds": round(opened_s, 2), "rss_before": rss0, "rss_after": rss1,
                "allocated_before": alloc0, "allocated_after": alloc1,
                "rss_bytes_per_conn": round((rss1 - rss0) / a.idle, 1),
                "allocated_bytes_per_conn": round((alloc1 - alloc0) / a.idle, 1)}
        if a.label:
            line["label"] = a.label
        print(json.dumps(line), flush=True)
        # traffic over a few connections while the idle ones stay
        out = subprocess.run([os.path.join(binp, "loadgen"), "--unix", cfg["listen"],
                              "--connections", str(a.clients), "--duration", str(a.seconds),
                              "--depth", "4"], capture_output=True, text=True)
        lg = {}
        for ln in out.stdout.splitlines():
            try:
                lg = json.loads(ln)
            except ValueError:
                pass
        rss2, alloc2 = figures(b.pid, cfg["admin_listen"])
        line = {"bench": "scale", "phase": "traffic", "idle_conns": a.idle,
                "clients": a.clients, "req_per_s": lg.get("req_per_s", lg.get("rps")),
                "p99_us": lg.get("p99_us"), "errors": lg.get("errors"),
                "rss_after": rss2, "allocated_after": alloc2,
                "rss_bytes_per_conn": round((rss2 - rss0) / a.idle, 1),
                "allocated_bytes_per_conn": round((alloc2 - alloc0) / a.idle, 1),
                "loadgen_rc": out.returncode}
        if a.label:
            line["label"] = a.label
        print(json.dumps(line), flush=True)
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
    finally:
        for s in socks:
            s.close()
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
