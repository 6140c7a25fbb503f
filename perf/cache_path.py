#!/usr/bin/env python3
"""The response cache in the request path, side by side in one run (issue 8).

Part 1, throughput and CPU: one mockd (--threads 1 --work-us W: one thread
spends W us of CPU per request, as Blender's main thread does), then in
interleaved rounds:
  direct     loadgen straight to mockd, POOL connections (add-on protocol)
  uncached   loadgen -> brokerd (cache off) -> mockd, 64 clients, depth 1
  cached     loadgen -> brokerd (cache on)  -> mockd, 64 clients, depth 1:
             every request the same read, so all but the first few are hits
Each row: requests/s, latency, and the CPU each process used per request
(utime+stime from /proc/PID/stat over the run). A summary line gives the
medians and the ratios to direct.

Part 2, coalescing: C clients send the same read at the same moment, then
one client sends a write (which invalidates the entry), B bursts in all;
mockd's per-command counter gives the backend calls of that read per 1,000
requests, for brokerd with coalescing and for the same burst with
"cache": false (no lookup, no coalescing) as the control.

usage: perf/cache_path.py [--bin build/bin] [--work-us 85] [--pool 4]
       [--seconds 3] [--rounds 3] [--workers 2] [--bursts 100] [--burst 64]
"""
import argparse, json, os, socket, statistics, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from broker_vs_direct import measure, stop_all, wait_for, read  # noqa: E402


def start_broker(bindir, tmp, name, backend, pool, workers, cache_on, procs):
    sock = os.path.join(tmp, name + ".sock")
    cfg = {"listen": sock, "workers": workers, "log": {"level": "warn"},
           "cache": {} if cache_on else {"max_bytes": 0},
           "rate_limit": {"rate": 10000000, "burst": 100000000},
           "backends": [{"name": "mock", "address": backend, "pool_size": pool,
                         "max_queue": 65536}]}
    path = os.path.join(tmp, name + ".json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    p = subprocess.Popen([os.path.join(bindir, "brokerd"), "--config", path],
                         stderr=open(os.path.join(tmp, name + ".err"), "w"))
    procs.append(p)
    assert wait_for(lambda: os.path.exists(sock), 5), "brokerd did not start"
    return p, sock


def mock_calls(path, typ):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(json.dumps({"type": "mock_stats", "params": {"type": typ}}).encode())
    buf = b""
    dec = json.JSONDecoder()
    while True:
        buf += s.recv(65536)
        try:
            v, _ = dec.raw_decode(buf.decode())
            s.close()
            return v["result"]["calls"]
        except ValueError:
            continue


def recv_lines(sock, n):
    buf = b""
    while buf.count(b"\n") < n:
        chunk = sock.recv(1 << 16)
        assert chunk, "broker closed the connection"
        buf += chunk
    return [json.loads(x) for x in buf.split(b"\n") if x]


def bursts(sock_path, mock_path, nclients, nbursts, cache_flag):
    typ = "get_object_info"
    params = {"name": "Cube"}
    clients = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(nclients)]
    for c in clients:
        c.connect(sock_path)
    before = mock_calls(mock_path, typ)
    req = {"type": typ, "params": params}
    if not cache_flag:
        req["cache"] = False
    for b in range(nbursts):
        lines = [(json.dumps(dict(req, id=i)) + "\n").encode() for i in range(nclients)]
        for c, ln in zip(clients, lines):
            c.sendall(ln)
        for c in clients:
            r = recv_lines(c, 1)[0]
            assert r["status"] == "success", r
        clients[0].sendall((json.dumps({"id": "w", "type": "create_object",
                                        "params": {"type": "CUBE"}}) + "\n").encode())
        assert recv_lines(clients[0], 1)[0]["status"] == "success"
    calls = mock_calls(mock_path, typ) - before
    for c in clients:
        c.close()
    total = nclients * nbursts
    return {"requests": total, "backend_calls": calls,
            "calls_per_1000": round(calls * 1000.0 / total, 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--work-us", type=int, default=85)
    ap.add_argument("--pool", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--bursts", type=int, default=100)
    ap.add_argument("--burst", type=int, default=64)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="cachepath.")
    procs = []
    try:
        mpath = os.path.join(tmp, "m.sock")
        merr = os.path.join(tmp, "mockd.err")
        mockd = subprocess.Popen([os.path.join(a.bin, "mockd"), "--listen", "unix:" + mpath,
                                  "--threads", "1", "--work-us", str(a.work_us), "--quiet"],
                                 stdout=subprocess.DEVNULL, stderr=open(merr, "w"))
        procs.append(mockd)
        assert wait_for(lambda: "listening on" in read(merr), 5), "mockd did not start"
        backend = "unix:" + mpath
        unc, unc_sock = start_broker(a.bin, tmp, "uncached", backend, a.pool, a.workers, False,
                                     procs)
        cac, cac_sock = start_broker(a.bin, tmp, "cached", backend, a.pool, a.workers, True,
                                     procs)
        cases = {
            "direct": (["--unix", mpath, "--mode", "direct", "--connections", str(a.pool)], None),
            "uncached": (["--unix", unc_sock, "--connections", "64", "--depth", "1"], unc),
            "cached": (["--unix", cac_sock, "--connections", "64", "--depth", "1"], cac),
        }
        runs = {k: [] for k in cases}
        for rnd in range(a.rounds):
            for case, (args, proxy) in cases.items():
                r, cores = measure(a.bin, args + ["--type", "get_scene_info"], a.seconds,
                                   proxy, mockd)
                cores["broker"] = cores.pop("proxy")
                rps = max(r["rps"], 1)
                r.update(case=case, round=rnd, work_us=a.work_us,
                         cpu_us_per_req={k: round(v * 1e6 / rps, 2) for k, v in cores.items()})
                print(json.dumps(r), flush=True)
                runs[case].append(r)

        def med(rs, get):
            return round(statistics.median(get(x) for x in rs), 2)
        summary = {c: {"rps": med(rs, lambda x: x["rps"]),
                       "p50_us": med(rs, lambda x: x["p50_us"]),
                       "p99_us": med(rs, lambda x: x["p99_us"]),
                       "broker_cpu_us_per_req": med(rs, lambda x: x["cpu_us_per_req"]["broker"]),
                       "mockd_cpu_us_per_req": med(rs, lambda x: x["cpu_us_per_req"]["mockd"])}
                   for c, rs in runs.items()}
        print(json.dumps({"bench": "cache_path", "work_us": a.work_us, "pool_size": a.pool,
                          "workers": a.workers, "rounds": a.rounds, "seconds": a.seconds,
                          "median": summary,
                          "ratio_to_direct": {c: round(s["rps"] / summary["direct"]["rps"], 3)
                                              for c, s in summary.items() if c != "direct"}}),
              flush=True)
        for flag in (True, False):
            r = bursts(cac_sock, mpath, a.burst, a.bursts, flag)
            r.update(bench="coalescing", coalescing=flag, burst=a.burst, bursts=a.bursts,
                     work_us=a.work_us)
            print(json.dumps(r), flush=True)
    finally:
        stop_all(procs, tmp)


if __name__ == "__main__":
    sys.exit(main())
