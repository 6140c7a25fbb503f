#!/usr/bin/env python3
"""Broker vs direct, side by side in one run (issue: the data path figures).

Starts build/bin/mockd (1 thread) and build/bin/brokerd (pool_size N), and
HAProxy in TCP mode as a control when it is installed, then runs loadgen
ROUNDS times in interleaved order:
  direct       loadgen straight to mockd with N persistent connections
  broker_d1    through brokerd, 64 client connections, 1 request in flight each
  broker_d4    through brokerd, 64 client connections, 4 pipelined each
               (--workers 1,2: one brokerd per value, cases broker_w1_d1 ...)
  haproxy_c64  through HAProxy (mode tcp), 64 clients, so 64 backend
               connections: HAProxy cannot share a connection between clients
  haproxy_cN   through HAProxy, N clients on N backend connections
  base_d1/d4   with --baseline-bin DIR: the same through DIR/brokerd (an
               earlier build), to compare two versions in one run
Interleaving spreads this VM's large run-to-run drift over all cases.

For every run it prints loadgen's JSON line tagged with the case and round,
plus the CPU each process used, as cores (CPU seconds per wall second of the
run) and microseconds per request. When loadgen, mockd and the proxy share
all CPUs, total CPU per request decides throughput; those columns show it.
A summary line follows with medians and the ratios to direct.

--work-us W makes mockd spend W us of CPU per request on its one thread, as
Blender's main thread does while it executes a command.

usage: perf/broker_vs_direct.py [--bin build/bin] [--pool 8] [--seconds 3]
       [--rounds 3] [--workers 2|1,2] [--transport tcp|unix] [--work-us 0]
       [--haproxy auto|off|PATH] [--baseline-bin OTHER/bin]
"""
import argparse, json, os, re, resource, shutil, signal, statistics, subprocess, sys, tempfile, time

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def children_cpu_s():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def wait_for(pred, secs):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def read(path):
    with open(path) as f:
        return f.read()


def measure(bindir, args, seconds, proxy, mockd):
    """One loadgen run (1 s warm-up, 1 thread): its JSON line, and the cores
    (CPU seconds per wall second) the proxy, mockd and loadgen used."""
    p0 = cpu_s(proxy.pid) if proxy else 0.0
    m0, l0, t0 = cpu_s(mockd.pid), children_cpu_s(), time.monotonic()
    out = subprocess.run([os.path.join(bindir, "loadgen"), *args, "--duration", str(seconds),
                          "--warmup", "1", "--threads", "1"],
                         capture_output=True, text=True, check=True).stdout
    wall = time.monotonic() - t0
    cores = {"proxy": (cpu_s(proxy.pid) - p0) / wall if proxy else 0.0,
             "mockd": (cpu_s(mockd.pid) - m0) / wall,
             "loadgen": (children_cpu_s() - l0) / wall}
    return json.loads(out), cores


def stop_all(procs, tmp):
    for p in reversed(procs):
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
    shutil.rmtree(tmp, ignore_errors=True)


def start_haproxy(exe, tmp, backend, threads, procs):
    sock = os.path.join(tmp, "h.sock")
    if backend.startswith("unix:"):
        server = backend[5:]
    else:
        server = backend
    cfg = os.path.join(tmp, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write("global\n    maxconn 4096\n    nbthread %d\n"
                "defaults\n    mode tcp\n    timeout connect 5s\n"
                "    timeout client 60s\n    timeout server 60s\n"
                "frontend f\n    bind unix@%s\n    default_backend b\n"
                "backend b\n    server m %s\n" % (threads, sock, server))
    p = subprocess.Popen([exe, "-f", cfg, "-db"], stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(tmp, "haproxy.err"), "w"))
    procs.append(p)
    assert wait_for(lambda: os.path.exists(sock), 5), "haproxy did not start: " + \
        read(os.path.join(tmp, "haproxy.err"))
    return p, sock


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--pool", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", default="2",
                    help="brokerd worker threads; a comma list runs one brokerd per value")
    ap.add_argument("--transport", choices=("tcp", "unix"), default="tcp")
    ap.add_argument("--work-us", type=int, default=0)
    ap.add_argument("--haproxy", default="auto", help="auto (if installed), off, or a path")
    ap.add_argument("--queue-order", choices=("fair", "fifo"), default="fair",
                    help="backends[].queue_order of the brokerd under test (the baseline "
                         "keeps its default)")
    ap.add_argument("--baseline-bin", default=None,
                    help="also run DIR/brokerd (cases base_...), e.g. a build of the last release")
    a = ap.parse_args()
    hap_exe = None
    if a.haproxy == "auto":
        hap_exe = shutil.which("haproxy")
    elif a.haproxy != "off":
        hap_exe = a.haproxy
    tmp = tempfile.mkdtemp(prefix="brokerbench.")
    procs = []
    try:
        listen = "127.0.0.1:0" if a.transport == "tcp" else "unix:" + os.path.join(tmp, "m.sock")
        merr = os.path.join(tmp, "mockd.err")
        mockd = subprocess.Popen([os.path.join(a.bin, "mockd"), "--listen", listen, "--threads", "1",
                                  "--work-us", str(a.work_us), "--quiet"],
                                 stdout=subprocess.DEVNULL, stderr=open(merr, "w"))
        procs.append(mockd)
        assert wait_for(lambda: "listening on" in read(merr), 5), "mockd did not start"
        addr = re.search(r"listening on (\S+)", read(merr)).group(1)
        backend = addr if a.transport == "tcp" else listen
        direct = (["--tcp", addr] if a.transport == "tcp" else ["--unix", addr[5:]]) + \
            ["--mode", "direct", "--connections", str(a.pool)]
        cases = {"direct": (direct, None)}
        workers = [int(x) for x in str(a.workers).split(",")]
        builds = [("broker", a.bin)]
        if a.baseline_bin:
            builds.append(("base", a.baseline_bin))
        for name, bindir in builds:
            for nw in workers:
                sock = os.path.join(tmp, "%s%d.sock" % (name, nw))
                # No response cache: these cases measure the relay (the cache
                # has its own benchmark, perf/cache_path.py).
                # The rate limit stays on (its bucket runs per request) but
                # far above any load this host can offer.
                cfg = {"listen": sock, "workers": nw, "log": {"level": "warn"},
                       "admin_listen": os.path.join(tmp, "%s%d.admin.sock" % (name, nw)),
                       "cache": {"max_bytes": 0},
                       "rate_limit": {"rate": 10000000, "burst": 100000000},
                       "backends": [{"name": "mock", "address": backend, "pool_size": a.pool}]}
                if name != "base":
                    cfg["backends"][0]["queue_order"] = a.queue_order
                cfg_path = os.path.join(tmp, "%s%d.json" % (name, nw))
                with open(cfg_path, "w") as f:
                    json.dump(cfg, f)
                broker = subprocess.Popen(
                    [os.path.join(bindir, "brokerd"), "--config", cfg_path],
                    stderr=open(os.path.join(tmp, "%s%d.err" % (name, nw)), "w"))
                procs.append(broker)
                assert wait_for(lambda: os.path.exists(sock), 5), "brokerd did not start"
                tag = name if len(workers) == 1 else "%s_w%d" % (name, nw)
                for depth in (1, 4):
                    cases["%s_d%d" % (tag, depth)] = (
                        ["--unix", sock, "--connections", "64", "--depth", str(depth)], broker)
        if hap_exe:
            hap, hsock = start_haproxy(hap_exe, tmp, backend, max(workers), procs)
            cases["haproxy_c64"] = (["--unix", hsock, "--mode", "direct", "--connections", "64"],
                                    hap)
            cases["haproxy_c%d" % a.pool] = (["--unix", hsock, "--mode", "direct",
                                              "--connections", str(a.pool)], hap)
        runs = {k: [] for k in cases}
        for rnd in range(a.rounds):
            for case, (args, proxy) in cases.items():
                r, cores = measure(a.bin, args, a.seconds, proxy, mockd)
                cores["total"] = sum(cores.values())
                rps = max(r["rps"], 1)
                r.update(case=case, round=rnd, transport=a.transport,
                         work_us=a.work_us,
                         cores={k: round(v, 3) for k, v in cores.items()},
                         cpu_us_per_req={k: round(v * 1e6 / rps, 2) for k, v in cores.items()})
                print(json.dumps(r), flush=True)
                runs[case].append(r)

        def med(rs, get):
            return round(statistics.median(get(x) for x in rs), 2)
        summary = {c: {"rps": med(rs, lambda x: x["rps"]),
                       "p50_us": med(rs, lambda x: x["p50_us"]),
                       "p99_us": med(rs, lambda x: x["p99_us"]),
                       "cores_total": med(rs, lambda x: x["cores"]["total"]),
                       "cpu_us_per_req": {k: med(rs, lambda x, k=k: x["cpu_us_per_req"][k])
                                          for k in ("proxy", "mockd", "loadgen", "total")}}
                   for c, rs in runs.items()}
        print(json.dumps({
            "bench": "broker_vs_direct", "pool_size": a.pool, "workers": workers,
            "transport": a.transport, "work_us": a.work_us, "rounds": a.rounds,
            "seconds": a.seconds, "cpus": os.cpu_count(), "median": summary,
            "ratio": {c: round(s["rps"] / summary["direct"]["rps"], 3)
                      for c, s in summary.items() if c != "direct"}}))
    finally:
        stop_all(procs, tmp)


if __name__ == "__main__":
    sys.exit(main())
