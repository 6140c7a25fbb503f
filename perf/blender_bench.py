#!/usr/bin/env python3
"""Real Blender, direct and through brokerd, in one run (issue 13).

Design note. Blender 3.4 runs tests/blender/addon_server.py (the add-on
protocol; bpy work on Blender's main thread) in each mode asked for:
  background  blender -b: the script's own main-thread loop takes each
              command as soon as it is queued (faster than the add-on can be);
  gui         xvfb-run blender: a bpy.app.timers callback takes them, as the
              add-on does; Blender's event loop runs it about every 5 ms, so
              this is the add-on's real latency floor.
Two brokers in front of it (workers 1, pool_size 4 or --pool, health checks off, rate
limit raised): one with the cache off ("uncached": every request is a trip
to Blender) and one with it on ("cached": every request is the same
get_scene_info, so all but the first are hits). loadgen (closed loop, depth
1) drives, for 1 and for 16 clients:
  direct          loadgen --tcp straight to Blender (the add-on protocol;
                  16 clients = 16 connections to Blender)
  native          the broker's NDJSON socket, uncached and cached
  compat          the broker's compat_listen (the add-on protocol), uncached
                  and cached
Rounds are interleaved (every case once per round, in a rotating order) so
drift in the machine's load spreads over all cases; each row is one JSON
line: the case, requests/s, p50/p99 latency (µs), and the CPU that Blender
and brokerd used per request (µs; /proc/PID/stat over the run). The last
line is the summary: medians per case, ratios to direct, and what a cached
get_scene_info costs against Blender's own answer (latency and CPU).

usage: perf/blender_bench.py [--bin build/bin] [--modes background,gui]
       [--seconds 3] [--rounds 2] [--clients 1,16] [--pool 4] [--cases direct,...]
"""
import argparse, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "..", "tests", "blender", "addon_server.py")
TICK = os.sysconf("SC_CLK_TCK")
READY = re.compile(r"addon_server: ready host=\S+ port=(\d+) pid=(\d+)")


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def call(port, obj, timeout=30):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(json.dumps(obj).encode())
    buf, dec = b"", json.JSONDecoder()
    while True:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("closed")
        buf += chunk
        try:
            v, _ = dec.raw_decode(buf.decode())
            s.close()
            return v
        except ValueError:
            pass


def start_blender(mode, tmp, procs):
    argv = ["blender", "--factory-startup", "--python", SERVER, "--", "--port", "0"]
    if mode == "background":
        argv.insert(1, "-b")
    else:
        argv = ["xvfb-run", "-a", "-s", "-screen 0 1280x720x24"] + argv
    out = os.path.join(tmp, "blender-%s.out" % mode)
    p = subprocess.Popen(argv, stdout=open(out, "w"), stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, env=dict(os.environ, TMPDIR=tmp))
    procs.append(p)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        m = READY.search(open(out).read())
        if m:
            port, pid = int(m.group(1)), int(m.group(2))
            # warm: a GUI Blender takes hundreds of ms per command at first
            while time.monotonic() < end:
                t0 = time.monotonic()
                call(port, {"type": "get_scene_info"})
                if time.monotonic() - t0 < 0.05:
                    break
            return p, port, pid
        if p.poll() is not None:
            sys.exit("blender (%s) exited: %s" % (mode, open(out).read()[-1500:]))
        time.sleep(0.05)
    sys.exit("blender (%s) not ready in 60 s" % mode)


def start_broker(bindir, tmp, name, port, cache_on, procs, pool=4):
    cfg = {
        "listen": os.path.join(tmp, name + ".sock"),
        "admin_listen": os.path.join(tmp, name + ".admin.sock"),
        "compat_listen": "127.0.0.1:%d" % free_port(),
        "workers": 1,
        "log": {"level": "warn"},
        "rate_limit": {"rate": 10000000, "burst": 100000000},
        "backends": [{"name": "blender", "address": "127.0.0.1:%d" % port, "framing": "json",
                      "pool_size": pool, "health": {"interval_ms": 86400000}}],
        "cache": {"ttl_ms": 600000} if cache_on else {"max_entries": 0},
    }
    path = os.path.join(tmp, name + ".json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    err = os.path.join(tmp, name + ".err")
    p = subprocess.Popen([os.path.join(bindir, "brokerd"), "--config", path],
                         stdout=subprocess.DEVNULL, stderr=open(err, "w"))
    procs.append(p)
    end = time.monotonic() + 10
    while not os.path.exists(cfg["listen"]):
        if p.poll() is not None or time.monotonic() > end:
            sys.exit("brokerd %s did not start: %s" % (name, open(err).read()[-1000:]))
        time.sleep(0.02)
    return p, cfg["listen"], cfg["compat_listen"]


def loadgen(bindir, args, clients, seconds, watch):
    c0 = {k: cpu_s(pid) for k, pid in watch.items()}
    t0 = time.monotonic()
    out = subprocess.run([os.path.join(bindir, "loadgen"), *args,
                          "--connections", str(clients), "--depth", "1",
                          "--threads", "1" if clients == 1 else "2",
                          "--duration", str(seconds), "--warmup", "0.5",
                          "--type", "get_scene_info"],
                         capture_output=True, text=True)
    wall = time.monotonic() - t0
    if out.returncode != 0:
        sys.exit("loadgen %s failed: %s %s" % (args, out.stdout, out.stderr))
    r = json.loads(out.stdout)
    cpu = {k: cpu_s(pid) - c0[k] for k, pid in watch.items()}
    return r, cpu, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "build", "bin"))
    ap.add_argument("--modes", default="background,gui")
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", default="1,16")
    ap.add_argument("--pool", type=int, default=4, help="the brokers' pool_size")
    ap.add_argument("--cases", default="direct,native_uncached,native_cached,compat_uncached,"
                    "compat_cached")
    a = ap.parse_args()
    bindir = os.path.abspath(a.bin)
    clients = [int(x) for x in a.clients.split(",")]
    summary = {"load_average": os.getloadavg(), "cpus": os.cpu_count(), "pool_size": a.pool}
    for mode in a.modes.split(","):
        tmp = tempfile.mkdtemp(prefix="blbench-")
        procs = []
        try:
            bl, port, bpid = start_blender(mode, tmp, procs)
            bu, usock, ucompat = start_broker(bindir, tmp, "uncached", port, False, procs, a.pool)
            bc, csock, ccompat = start_broker(bindir, tmp, "cached", port, True, procs, a.pool)
            cases = {
                "direct": (["--tcp", "127.0.0.1:%d" % port, "--mode", "direct"], None),
                "native_uncached": (["--unix", usock, "--mode", "broker"], bu),
                "native_cached": (["--unix", csock, "--mode", "broker"], bc),
                "compat_uncached": (["--tcp", ucompat, "--mode", "compat"], bu),
                "compat_cached": (["--tcp", ccompat, "--mode", "compat"], bc),
            }
            rows = {}
            names = [c for c in cases if c in a.cases.split(",")]
            for rnd in range(a.rounds):
                order = names[rnd % len(names):] + names[:rnd % len(names)]
                for n in clients:
                    for case in order:
                        args, broker = cases[case]
                        watch = {"blender": bpid}
                        if broker:
                            watch["brokerd"] = broker.pid
                        r, cpu, _ = loadgen(bindir, args, n, a.seconds, watch)
                        # CPU is read over the whole run: warm-up and measurement
                        done = max(1.0, r["rps"] * (a.seconds + 0.5))
                        row = {"mode": mode, "case": case, "clients": n, "round": rnd,
                               "rps": round(r["rps"], 1), "p50_us": r["p50_us"],
                               "p99_us": r["p99_us"],
                               "errors": r.get("errors", 0),
                               "blender_cpu_us_per_req": round(cpu["blender"] / done * 1e6, 1),
                               "brokerd_cpu_us_per_req":
                                   round(cpu["brokerd"] / done * 1e6, 2) if broker else None}
                        print(json.dumps(row), flush=True)
                        rows.setdefault((case, n), []).append(row)
            med = {}
            for (case, n), rs in rows.items():
                med["%s/%d" % (case, n)] = {
                    k: statistics.median(x[k] for x in rs)
                    for k in ("rps", "p50_us", "p99_us", "blender_cpu_us_per_req")
                }
                if rs[0]["brokerd_cpu_us_per_req"] is not None:
                    med["%s/%d" % (case, n)]["brokerd_cpu_us_per_req"] = \
                        statistics.median(x["brokerd_cpu_us_per_req"] for x in rs)
            for key, m in med.items():
                d = med.get("direct/" + key.split("/")[1])
                if d and d["rps"]:
                    m["rps_vs_direct"] = round(m["rps"] / d["rps"], 2)
            one = med.get("native_cached/1"), med.get("direct/1")
            s = {"mode": mode, "medians": med}
            if all(one):
                s["cached_get_scene_info"] = {
                    "p50_us": one[0]["p50_us"], "blender_p50_us": one[1]["p50_us"],
                    "latency_ratio": round(one[0]["p50_us"] / one[1]["p50_us"], 4),
                    "brokerd_cpu_us": one[0]["brokerd_cpu_us_per_req"],
                    "blender_cpu_us": one[1]["blender_cpu_us_per_req"],
                }
            summary[mode] = s
        finally:
            for p in reversed(procs[1:]):
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
            if procs:
                try:
                    call(port, {"type": "server_quit"}, timeout=5)
                    procs[0].wait(20)
                except Exception:  # noqa: BLE001
                    try:
                        os.kill(bpid, signal.SIGKILL)
                    except (OSError, NameError):
                        pass
                    procs[0].wait(20)
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"summary": summary}), flush=True)


if __name__ == "__main__":
    main()
