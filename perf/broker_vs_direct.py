#!/usr/bin/env python3
"""Broker vs direct, side by side in one run (issue: the data path figures).

Starts build/bin/mockd (1 thread) and build/bin/brokerd (pool_size N), then
runs loadgen ROUNDS times in interleaved order:
  direct     loadgen straight to mockd with N persistent connections
  broker_d1  through brokerd, 64 client connections, 1 request in flight each
  broker_d4  through brokerd, 64 client connections, 4 pipelined each
Interleaving spreads this VM's large run-to-run drift over all cases. Prints
one JSON line per run (loadgen's, tagged with case and round, plus the CPU
the broker and mockd used per request) and a summary line with medians and
the broker/direct throughput ratios.

usage: perf/broker_vs_direct.py [--bin build/bin] [--pool 8] [--seconds 3]
       [--rounds 3] [--workers 2] [--transport tcp|unix]
"""
import argparse, json, os, re, signal, statistics, subprocess, sys, tempfile, time

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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--pool", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--transport", choices=("tcp", "unix"), default="tcp")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="brokerbench.")
    procs = []
    try:
        listen = "127.0.0.1:0" if a.transport == "tcp" else "unix:" + os.path.join(tmp, "m.sock")
        merr = open(os.path.join(tmp, "mockd.err"), "w+")
        mockd = subprocess.Popen([os.path.join(a.bin, "mockd"), "--listen", listen, "--threads", "1",
                                  "--quiet"], stdout=subprocess.DEVNULL, stderr=merr)
        procs.append(mockd)
        assert wait_for(lambda: "listening on" in open(merr.name).read(), 5), "mockd did not start"
        addr = re.search(r"listening on (\S+)", open(merr.name).read()).group(1)
        backend = addr if a.transport == "tcp" else listen
        sock = os.path.join(tmp, "b.sock")
        cfg = {"listen": sock, "admin_listen": os.path.join(tmp, "a.sock"), "workers": a.workers,
               "log": {"level": "warn"},
               "backends": [{"name": "mock", "address": backend, "pool_size": a.pool}]}
        with open(os.path.join(tmp, "b.json"), "w") as f:
            json.dump(cfg, f)
        broker = subprocess.Popen([os.path.join(a.bin, "brokerd"), "--config", f.name],
                                  stderr=open(os.path.join(tmp, "brokerd.err"), "w"))
        procs.append(broker)
        assert wait_for(lambda: os.path.exists(sock), 5), "brokerd did not start"
        direct = (["--tcp", addr] if a.transport == "tcp" else ["--unix", addr[5:]]) + \
            ["--mode", "direct", "--connections", str(a.pool)]
        cases = {"direct": direct,
                 "broker_d1": ["--unix", sock, "--connections", "64", "--depth", "1"],
                 "broker_d4": ["--unix", sock, "--connections", "64", "--depth", "4"]}
        runs = {k: [] for k in cases}
        for rnd in range(a.rounds):
            for case, args in cases.items():
                b0, m0 = cpu_s(broker.pid), cpu_s(mockd.pid)
                out = subprocess.run([os.path.join(a.bin, "loadgen"), *args, "--duration",
                                      str(a.seconds), "--warmup", "1", "--threads", "1"],
                                     capture_output=True, text=True, check=True).stdout
                r = json.loads(out)
                n = max(r["requests"], 1)
                r.update(case=case, round=rnd, transport=a.transport, workers=a.workers,
                         broker_cpu_us_per_req=round((cpu_s(broker.pid) - b0) * 1e6 / n, 2)
                         if case != "direct" else 0.0,
                         mockd_cpu_us_per_req=round((cpu_s(mockd.pid) - m0) * 1e6 / n, 2))
                print(json.dumps(r), flush=True)
                runs[case].append(r)
        med = {c: {k: statistics.median(x[k] for x in rs)
                   for k in ("rps", "p50_us", "p99_us", "broker_cpu_us_per_req")}
               for c, rs in runs.items()}
        print(json.dumps({
            "bench": "broker_vs_direct", "pool_size": a.pool, "workers": a.workers,
            "transport": a.transport, "rounds": a.rounds, "seconds": a.seconds,
            "median": med,
            "ratio_d1": round(med["broker_d1"]["rps"] / med["direct"]["rps"], 3),
            "ratio_d4": round(med["broker_d4"]["rps"] / med["direct"]["rps"], 3)}))
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
