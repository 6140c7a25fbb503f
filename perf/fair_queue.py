#!/usr/bin/env python3
"""A light client's latency while a heavy client keeps the queue full, FIFO against fair.

One mockd (--delay-us 2000: every answer 2 ms late, timer based, as Blender's
get_scene_info costs a few ms) behind one brokerd per mode, both modes in the
same run (interleaved when --rounds > 1):
  fair   backends[].queue_order "fair": a client holds one place in the
         backend's queue at a time, its other requests wait parked beside it
  fifo   backends[].queue_order "fifo": arrival order, one token per request
brokerd: workers 2, one backend with pool_size POOL (default 1), max_queue
4096, rate limit far above the load, cache off, health checks once a day (so
none lands in the measured window), shutdown grace 1 s.

Two clients on the broker's socket, same uid:
  heavy  a thread with its own connection keeps DEPTH (default 200) "echo"
         requests in flight: it sends DEPTH, then one more per answer (ids
         unique). It holds POOL connections busy and the queue ~DEPTH deep.
  light  another connection, in the main thread: one "echo", wait for the
         answer, sleep 20 ms, repeat, for --duration seconds, after the heavy
         client has had --warmup seconds to fill the queue.
Latency is measured in this process (perf_counter around send and answer),
so it includes Python's few tens of us; irrelevant against 2 ms round trips.

Expected: fifo, the light request waits behind the whole backlog
(DEPTH x 2 ms / POOL = 400 ms with the defaults); fair, behind one heavy turn:
the rest of the request in flight, one heavy request, its own (~4-6 ms).
The backend is the bottleneck: total_rps (heavy + light answers) is about
POOL x 450/s (2 ms + the round trip) in both modes; heavy_rps is lower in
fair only by the light client's share (~40/s there, ~2/s in fifo).

Prints one JSON line per mode and round, then one summary line (medians over
rounds); a table on stderr.

usage: perf/fair_queue.py [--bin build/bin] [--duration 10] [--pool 1]
       [--depth 200] [--delay-us 2000] [--warmup 1] [--rounds 1]
"""
import argparse, json, os, signal, socket, statistics, subprocess, sys, tempfile, threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from broker_vs_direct import stop_all, wait_for, read  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lines(sock, buf):
    """Yield answer objects from sock; buf is a one-element list kept across calls."""
    while True:
        while b"\n" in buf[0]:
            ln, buf[0] = buf[0].split(b"\n", 1)
            if ln.strip():
                yield json.loads(ln)
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf[0] += chunk


class Heavy(threading.Thread):
    def __init__(self, path, depth):
        super().__init__(daemon=True)
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.depth, self.stop, self.answers, self.errors, self.fatal = depth, False, 0, 0, None
        self.next_id = 0

    def send(self, n):
        out = []
        for _ in range(n):
            out.append('{"id":"h%d","type":"echo","params":{"n":%d}}\n' % (self.next_id,
                                                                          self.next_id))
            self.next_id += 1
        self.s.sendall("".join(out).encode())

    def run(self):
        try:
            self.send(self.depth)
            for r in lines(self.s, [b""]):
                self.answers += 1
                if r.get("status") != "success":
                    self.errors += 1
                    if self.errors == 1:
                        sys.stderr.write("heavy client: first error: %s\n" % json.dumps(r))
                if self.stop:
                    return
                self.send(1)
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            if not self.stop:
                self.fatal = e


def start_broker(a, tmp, mode, backend, procs):
    sock = os.path.join(tmp, mode + ".sock")
    cfg = {"listen": sock, "workers": 2, "log": {"level": "warn"}, "shutdown_grace_ms": 1000,
           "cache": {"max_bytes": 0},
           "rate_limit": {"rate": 10000000, "burst": 100000000},
           "backends": [{"name": "mock", "address": backend, "pool_size": a.pool,
                         "max_queue": 4096, "queue_order": mode,
                         "health": {"interval_ms": 86400000}}]}
    path = os.path.join(tmp, mode + ".json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    err = os.path.join(tmp, mode + ".err")
    p = subprocess.Popen([os.path.join(a.bin, "brokerd"), "--config", path],
                         stderr=open(err, "w"))
    procs.append(p)
    if not wait_for(lambda: os.path.exists(sock) or p.poll() is not None, 5) or \
            p.poll() is not None:
        raise RuntimeError("brokerd (%s) did not start: %s" % (mode, read(err)[-2000:]))
    return p, sock


def run_mode(a, tmp, mode, backend, procs):
    broker, sock = start_broker(a, tmp, mode, backend, procs)
    heavy = Heavy(sock, a.depth)
    light = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    light.connect(sock)
    try:
        heavy.start()
        time.sleep(a.warmup)
        lat, buf, i = [], [b""], 0
        h0, t0 = heavy.answers, time.monotonic()
        end = t0 + a.duration
        while time.monotonic() < end:
            if heavy.fatal:
                raise RuntimeError("heavy client failed: %r" % heavy.fatal)
            ts = time.perf_counter()
            light.sendall(('{"id":"l%d","type":"echo","params":{}}\n' % i).encode())
            r = next(lines(light, buf))
            lat.append((time.perf_counter() - ts) * 1000.0)
            if r.get("status") != "success" or r.get("id") != "l%d" % i:
                raise RuntimeError("light client: unexpected answer %s" % json.dumps(r))
            i += 1
            time.sleep(0.020)
        wall = time.monotonic() - t0
        heavy_n = heavy.answers - h0
    finally:
        heavy.stop = True
        light.close()
        try:  # wakes the heavy thread's recv; the broker drops its queued requests
            heavy.s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        heavy.s.close()
        heavy.join(2)
        broker.send_signal(signal.SIGTERM)
        try:
            broker.wait(10)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait()
        procs.remove(broker)
    lat.sort()
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else lat * 99
    return {"bench": "fair_queue", "mode": mode, "pool_size": a.pool, "depth": a.depth,
            "delay_us": a.delay_us, "duration_s": a.duration,
            "light_p50_ms": round(statistics.median(lat), 2), "light_p99_ms": round(q[98], 2),
            "light_max_ms": round(lat[-1], 2), "light_n": len(lat),
            "heavy_rps": round(heavy_n / wall, 1), "heavy_errors": heavy.errors,
            "total_rps": round((heavy_n + len(lat)) / wall, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "bin"))
    ap.add_argument("--duration", type=float, default=10, help="measured seconds per mode")
    ap.add_argument("--warmup", type=float, default=1, help="seconds the heavy client runs first")
    ap.add_argument("--pool", type=int, default=1, help="backend pool_size")
    ap.add_argument("--depth", type=int, default=200, help="heavy client's requests in flight")
    ap.add_argument("--delay-us", type=int, default=2000, help="mockd --delay-us")
    ap.add_argument("--rounds", type=int, default=1, help="fair,fifo pairs, interleaved")
    a = ap.parse_args()
    for exe in ("mockd", "brokerd"):
        if not os.access(os.path.join(a.bin, exe), os.X_OK):
            sys.exit("fair_queue.py: %s not found or not executable in %s (build first, or "
                     "pass --bin DIR)" % (exe, a.bin))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("fair_queue.py: terminated"))
    tmp = tempfile.mkdtemp(prefix="fairqueue.")
    procs = []
    try:
        mpath = os.path.join(tmp, "m.sock")
        merr = os.path.join(tmp, "mockd.err")
        mockd = subprocess.Popen([os.path.join(a.bin, "mockd"), "--listen", "unix:" + mpath,
                                  "--delay-us", str(a.delay_us), "--quiet"],
                                 stdout=subprocess.DEVNULL, stderr=open(merr, "w"))
        procs.append(mockd)
        if not wait_for(lambda: "listening on" in read(merr), 5):
            raise RuntimeError("mockd did not start: " + read(merr))
        runs = {"fair": [], "fifo": []}
        for rnd in range(a.rounds):
            for mode in runs:
                r = run_mode(a, tmp, mode, "unix:" + mpath, procs)
                r["round"] = rnd
                print(json.dumps(r), flush=True)
                runs[mode].append(r)
        keys = ("light_p50_ms", "light_p99_ms", "light_max_ms", "light_n", "heavy_rps")
        med = {m: {k: round(statistics.median(x[k] for x in rs), 2) for k in keys}
               for m, rs in runs.items()}
        print(json.dumps({"bench": "fair_queue_summary", "rounds": a.rounds, "pool_size": a.pool,
                          "depth": a.depth, "delay_us": a.delay_us, "median": med,
                          "fifo_over_fair_p99": round(med["fifo"]["light_p99_ms"] /
                                                      max(med["fair"]["light_p99_ms"], 1e-3), 1)}),
              flush=True)
        sys.stderr.write("\nfair_queue: light client behind %d pipelined requests, pool %d, "
                         "%.1f ms backend (medians of %d round(s))\n"
                         % (a.depth, a.pool, a.delay_us / 1000, a.rounds))
        sys.stderr.write("%-5s %9s %9s %9s %8s %10s\n" % ("mode", "p50 ms", "p99 ms", "max ms",
                                                          "light n", "heavy/s"))
        for m, s in med.items():
            sys.stderr.write("%-5s %9.2f %9.2f %9.2f %8d %10.1f\n" % (
                m, s["light_p50_ms"], s["light_p99_ms"], s["light_max_ms"], s["light_n"],
                s["heavy_rps"]))
    finally:
        stop_all(procs, tmp)


if __name__ == "__main__":
    sys.exit(main())
