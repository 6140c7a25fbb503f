#!/usr/bin/env python3
"""The compat listener against the native protocol, side by side in one run.

Starts build/bin/mockd (1 thread, Unix socket) and one build/bin/brokerd
with both its client socket and compat_listen, then runs loadgen ROUNDS
times per case, alternating the order every round (native first, then
compat first) so this VM's drift lands on both:
  native   loadgen --mode broker --depth 1 on the client socket (NDJSON)
  compat   loadgen --mode compat on compat_listen (the add-on protocol: one
           JSON object per request, no delimiter, 1 in flight per connection)
Same client program and event loop, same client count, same broker process,
same backend, 1 request in flight per connection in both. The response
cache is off (cache.max_bytes 0): every request goes to mockd, so this
measures the relay, not cache hits. --compat-transport tcp puts
compat_listen on 127.0.0.1 instead of a Unix path (the native socket is
Unix only).

For every run it prints loadgen's JSON line tagged with case and round,
plus brokerd's CPU per request (/proc/PID/stat over the run); then one
summary line with medians, the ratio of the medians (compat / native) and
the median of the per-round ratios.

usage: perf/compat_vs_native.py [--bin build/bin] [--rounds 5] [--seconds 3]
       [--connections 16] [--pool 4] [--workers 1] [--type get_scene_info]
       [--compat-transport unix|tcp] [--work-us 0]
"""
import argparse, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


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


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def measure(bindir, args, seconds, broker):
    """One loadgen run (1 s warm-up, 1 thread): its JSON line and brokerd's
    CPU microseconds per answered request."""
    b0, t0 = cpu_s(broker.pid), time.monotonic()
    out = subprocess.run([os.path.join(bindir, "loadgen"), *args, "--duration", str(seconds),
                          "--warmup", "1", "--threads", "1"],
                         capture_output=True, text=True, check=True).stdout
    wall = time.monotonic() - t0
    r = json.loads(out)
    # the warm-up second is in the CPU figure too: per request over the
    # requests of the whole run (rps covers the measured window)
    reqs = max(r["rps"] * wall, 1)
    r["broker_cores"] = round((cpu_s(broker.pid) - b0) / wall, 3)
    r["broker_cpu_us_per_req"] = round((cpu_s(broker.pid) - b0) * 1e6 / reqs, 2)
    return r


def stop_all(procs, tmp):
    for p in reversed(procs):
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
    shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--pool", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--type", default="get_scene_info")
    ap.add_argument("--compat-transport", choices=("unix", "tcp"), default="unix")
    ap.add_argument("--work-us", type=int, default=0)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="compatbench.")
    procs = []
    try:
        msock = os.path.join(tmp, "m.sock")
        merr = os.path.join(tmp, "mockd.err")
        mockd = subprocess.Popen([os.path.join(a.bin, "mockd"), "--listen", "unix:" + msock,
                                  "--threads", "1", "--work-us", str(a.work_us), "--quiet"],
                                 stdout=subprocess.DEVNULL, stderr=open(merr, "w"))
        procs.append(mockd)
        assert wait_for(lambda: "listening on" in read(merr), 5), "mockd did not start"
        sock = os.path.join(tmp, "b.sock")
        if a.compat_transport == "tcp":
            port = free_port()
            compat = "127.0.0.1:%d" % port
            compat_args = ["--tcp", compat]
        else:
            compat = os.path.join(tmp, "compat.sock")
            compat_args = ["--unix", compat]
        # The rate limit stays on (its bucket runs per request) but far above
        # any load this host can offer; the cache is off (see above).
        cfg = {"listen": sock, "admin_listen": os.path.join(tmp, "a.sock"),
               "compat_listen": compat, "workers": a.workers, "log": {"level": "warn"},
               "cache": {"max_bytes": 0},
               "rate_limit": {"rate": 10000000, "burst": 100000000},
               "backends": [{"name": "mock", "address": "unix:" + msock, "pool_size": a.pool,
                             "health": {"interval_ms": 86400000}}]}
        cfg_path = os.path.join(tmp, "b.json")
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        berr = os.path.join(tmp, "b.err")
        broker = subprocess.Popen([os.path.join(a.bin, "brokerd"), "--config", cfg_path],
                                  stderr=open(berr, "w"))
        procs.append(broker)
        assert wait_for(lambda: os.path.exists(sock), 5), "brokerd did not start: " + read(berr)
        common = ["--connections", str(a.connections), "--type", a.type]
        cases = {"native": ["--unix", sock, "--mode", "broker", "--depth", "1", *common],
                 "compat": [*compat_args, "--mode", "compat", *common]}
        runs = {k: [] for k in cases}
        for rnd in range(a.rounds):
            order = list(cases) if rnd % 2 == 0 else list(reversed(list(cases)))
            for case in order:
                r = measure(a.bin, cases[case], a.seconds, broker)
                r.update(case=case, round=rnd, compat_transport=a.compat_transport,
                         work_us=a.work_us, loadavg=os.getloadavg()[0])
                print(json.dumps(r), flush=True)
                runs[case].append(r)
        bad = [r for rs in runs.values() for r in rs
               if r["errors"] or r["lost"] or r["duplicates"] or r["unknown_ids"]]

        def med(rs, key):
            return round(statistics.median(x[key] for x in rs), 2)
        summary = {c: {k: med(rs, k) for k in ("rps", "p50_us", "p99_us",
                                                 "broker_cpu_us_per_req")}
                   for c, rs in runs.items()}
        per_round = [c["rps"] / max(n["rps"], 1) for c, n in zip(runs["compat"], runs["native"])]
        print(json.dumps({
            "bench": "compat_vs_native", "connections": a.connections, "depth": 1,
            "pool_size": a.pool, "workers": a.workers, "type": a.type,
            "compat_transport": a.compat_transport, "work_us": a.work_us, "rounds": a.rounds,
            "seconds": a.seconds, "cpus": os.cpu_count(), "median": summary,
            "ratio_of_medians": round(summary["compat"]["rps"] / max(summary["native"]["rps"], 1),
                                      3),
            "median_round_ratio": round(statistics.median(per_round), 3),
            "runs_with_errors": len(bad)}), flush=True)
        return 1 if bad else 0
    finally:
        stop_all(procs, tmp)


if __name__ == "__main__":
    sys.exit(main())
