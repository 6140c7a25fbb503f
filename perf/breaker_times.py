#!/usr/bin/env python3
"""Circuit breaker timings: backend death to fast failure, and return to the first success.

One mockd on a Unix socket, one brokerd (workers 1, cache off, rate limit far
above the load, shutdown grace 1 s) with, by default:
  breaker {"failures":5,"open_ms":1000,"max_open_ms":30000}
  retry   {"max":2,"backoff_ms":20}
  health  {"interval_ms":1000,"timeout_ms":1000,"rise":2,"fall":3}
(each an option; --health-interval-ms 86400000 leaves the breaker alone).
A client thread sends --type (default "echo") in a closed loop: one request,
wait for its answer, sleep --sleep-ms (default 1 ms, so fast failures do not
spin a vCPU), repeat. Each answer is logged with its send and answer times.
"echo" is not read_only, so it is never retried: the retry settings only
matter with --type get_scene_info (a read; the cache is off).

Each cycle: --up-s (2 s) + uniform(0, --jitter-s (1 s)) of successes;
SIGKILL mockd at T0 (its socket file stays, so connects are refused at
once); --down-s (4 s) later start mockd on the same path, T1 = when it
prints its ready line; wait for the first success; next cycle. Without the
jitter the schedule locks onto the health check timer (a return is seen at
a check, the next kill and restart come a fixed time later), so every cycle
would measure the same phase. Per cycle:
  death_to_fast_fail_ms  T0 to the first `unavailable` answer whose message
                         says "circuit open"
  slow_failures          failed answers after T0 before that one (the request
                         cut at the kill, then refused connects, until
                         `failures` of them open the circuit)
  fast_fail_us_p50       answer time of the "circuit open" answers, as seen
                         by this Python client (includes its own overhead)
  probe_failures         other failures while the circuit was open: the
                         half-open probes, one per open period
  return_to_success_ms   T1 to the first success
Then median and max over --cycles (default 5).

What bounds return_to_success: the broker sends one probe per open period.
The first period is open_ms; each failed probe doubles it (plus up to a
quarter of jitter) up to max_open_ms. With the defaults and a 4 s outage:
opened at ~T0, probes fail at ~T0+1..1.25 s and ~T0+3..3.75 s, so the
period in force at T1 is 4 s (+0..1 s jitter) and the next probe comes at
~T0+7..8.75 s, i.e. 3..4.75 s after T1: the probe alone returns within the
open period in force + jitter. Health checks can close it sooner: after
`fall` failed checks (~2-3 s) the backend is marked down, and `rise` passed
checks after T1 (one every interval_ms: ~1-2 s) mark it up and close the
circuit. An outage shorter than ~fall x interval_ms never marks it down,
and then only the probe brings it back.

usage: perf/breaker_times.py [--bin build/bin] [--cycles 5] [--up-s 2]
       [--jitter-s 1] [--down-s 4] [--sleep-ms 1] [--type echo] [--failures 5]
       [--open-ms 1000] [--max-open-ms 30000] [--health-interval-ms 1000]
       [--health-timeout-ms 1000] [--health-rise 2] [--health-fall 3]
       [--retry-max 2] [--retry-backoff-ms 20] [--return-timeout-s 60]
"""
import argparse, json, os, random, signal, socket, statistics, subprocess, sys, tempfile, threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from broker_vs_direct import stop_all, wait_for, read  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Client(threading.Thread):
    """Closed loop; log entries (t_send, t_answer, status, message)."""

    def __init__(self, path, typ, sleep_s):
        super().__init__(daemon=True)
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.typ, self.sleep_s, self.stop, self.fatal, self.log = typ, sleep_s, False, None, []

    def run(self):
        buf, i = b"", 0
        try:
            while not self.stop:
                ts = time.monotonic()
                self.s.sendall(('{"id":%d,"type":"%s","params":{}}\n' % (i, self.typ)).encode())
                while b"\n" not in buf:
                    chunk = self.s.recv(65536)
                    if not chunk:
                        raise ConnectionError("broker closed the connection")
                    buf += chunk
                ln, buf = buf.split(b"\n", 1)
                te = time.monotonic()
                r = json.loads(ln)
                if r.get("id") != i:
                    raise RuntimeError("answer for another id: %s" % ln[:300])
                err = r.get("error") or {}
                self.log.append((ts, te, r.get("status") == "success", err.get("code"),
                                 err.get("message", "")))
                i += 1
                if self.sleep_s:
                    time.sleep(self.sleep_s)
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            if not self.stop:
                self.fatal = e


def start_mockd(a, mpath, merr):
    p = subprocess.Popen([os.path.join(a.bin, "mockd"), "--listen", "unix:" + mpath, "--quiet"],
                         stdout=subprocess.DEVNULL, stderr=open(merr, "w"))
    end = time.monotonic() + 5
    while "listening on" not in read(merr):  # 1 ms polling: T1 is the ready time
        if time.monotonic() > end or p.poll() is not None:
            p.kill()
            raise RuntimeError("mockd did not start: " + read(merr))
        time.sleep(0.001)
    return p, time.monotonic()


def cycle_figures(log, t0, t1, t_ok):
    after = [e for e in log if e[1] >= t0 and e[1] <= t_ok]
    fast = [e for e in after if not e[2] and "circuit open" in e[4]]
    if not fast:
        return {"error": "no circuit-open answer between the kill and the return"}
    first_fast = fast[0][1]
    slow = [e for e in after if not e[2] and e[1] < first_fast]
    probes = [e for e in after if not e[2] and e[1] > first_fast and "circuit open" not in e[4]]
    ok_down = [e for e in after if e[2] and e[1] < t1]
    first_ok = next(e for e in log if e[2] and e[1] >= t1)
    return {"death_to_fast_fail_ms": round((first_fast - t0) * 1e3, 2),
            "slow_failures": len(slow),
            "slow_failure_codes": sorted({e[3] for e in slow}),
            "fast_fail_us_p50": round(statistics.median(e[1] - e[0] for e in fast) * 1e6, 1),
            "fast_failures": len(fast), "probe_failures": len(probes),
            "successes_while_down": len(ok_down),
            "return_to_success_ms": round((first_ok[1] - t1) * 1e3, 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "bin"))
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--up-s", type=float, default=2, help="successes before each kill")
    ap.add_argument("--jitter-s", type=float, default=1,
                    help="add uniform 0..J s to each up phase (unlocks the health check phase)")
    ap.add_argument("--down-s", type=float, default=4, help="outage length")
    ap.add_argument("--sleep-ms", type=float, default=1, help="client pause between requests")
    ap.add_argument("--type", default="echo", help="command (get_scene_info: a retried read)")
    ap.add_argument("--return-timeout-s", type=float, default=60)
    for k, v in (("failures", 5), ("open-ms", 1000), ("max-open-ms", 30000),
                 ("health-interval-ms", 1000), ("health-timeout-ms", 1000),
                 ("health-rise", 2), ("health-fall", 3), ("retry-max", 2),
                 ("retry-backoff-ms", 20)):
        ap.add_argument("--" + k, type=int, default=v)
    a = ap.parse_args()
    for exe in ("mockd", "brokerd"):
        if not os.access(os.path.join(a.bin, exe), os.X_OK):
            sys.exit("breaker_times.py: %s not found or not executable in %s (build first, or "
                     "pass --bin DIR)" % (exe, a.bin))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("breaker_times.py: terminated"))
    tmp = tempfile.mkdtemp(prefix="breakertimes.")
    procs, client = [], None
    try:
        mpath, merr = os.path.join(tmp, "m.sock"), os.path.join(tmp, "mockd.err")
        mockd, _ = start_mockd(a, mpath, merr)
        procs.append(mockd)
        sock = os.path.join(tmp, "b.sock")
        cfg = {"listen": sock, "workers": 1, "log": {"level": "warn"}, "shutdown_grace_ms": 1000,
               "cache": {"max_bytes": 0}, "rate_limit": {"rate": 10000000, "burst": 100000000},
               "backends": [{"name": "mock", "address": "unix:" + mpath,
                             "breaker": {"failures": a.failures, "open_ms": a.open_ms,
                                         "max_open_ms": a.max_open_ms},
                             "retry": {"max": a.retry_max, "backoff_ms": a.retry_backoff_ms},
                             "health": {"interval_ms": a.health_interval_ms,
                                        "timeout_ms": a.health_timeout_ms,
                                        "rise": a.health_rise, "fall": a.health_fall}}]}
        with open(os.path.join(tmp, "b.json"), "w") as f:
            json.dump(cfg, f)
        berr = os.path.join(tmp, "brokerd.err")
        broker = subprocess.Popen([os.path.join(a.bin, "brokerd"), "--config",
                                   os.path.join(tmp, "b.json")], stderr=open(berr, "w"))
        procs.insert(0, broker)  # stopped last: stop_all goes in reverse
        if not wait_for(lambda: os.path.exists(sock) or broker.poll() is not None, 5) or \
                broker.poll() is not None:
            raise RuntimeError("brokerd did not start: " + read(berr)[-2000:])
        client = Client(sock, a.type, a.sleep_ms / 1000.0)
        client.start()
        rows = []
        for cyc in range(a.cycles):
            time.sleep(a.up_s + random.uniform(0, a.jitter_s))
            if client.fatal:
                raise RuntimeError("client failed: %r" % client.fatal)
            if not any(e[2] for e in client.log[-50:]):
                raise RuntimeError("no success before the kill: %s" % (client.log[-1:],))
            t0 = time.monotonic()
            mockd.kill()
            mockd.wait()
            procs.remove(mockd)
            time.sleep(a.down_s)
            mockd, t1 = start_mockd(a, mpath, merr)
            procs.append(mockd)
            if not wait_for(lambda: any(e[2] for e in client.log[-5:]) and
                            client.log[-1][1] >= t1, a.return_timeout_s):
                raise RuntimeError("no success within %g s of mockd's return" %
                                   a.return_timeout_s)
            r = cycle_figures(list(client.log), t0, t1, time.monotonic())
            r.update(bench="breaker_cycle", cycle=cyc, type=a.type, sleep_ms=a.sleep_ms,
                     down_s=a.down_s)
            print(json.dumps(r), flush=True)
            rows.append(r)
        good = [r for r in rows if "error" not in r]
        keys = ("death_to_fast_fail_ms", "slow_failures", "fast_fail_us_p50", "probe_failures",
                "return_to_success_ms")
        summary = {"bench": "breaker", "cycles": len(rows), "cycles_ok": len(good),
                   "type": a.type, "sleep_ms": a.sleep_ms, "down_s": a.down_s,
                   "breaker": cfg["backends"][0]["breaker"],
                   "health": cfg["backends"][0]["health"]}
        for k in keys:
            vals = [r[k] for r in good] or [float("nan")]
            summary[k] = round(statistics.median(vals), 2)
            summary[k + "_max"] = round(max(vals), 2)
        print(json.dumps(summary), flush=True)
        sys.stderr.write("\nbreaker_times: %d kill/restart cycles (%d ok), outage %g s, %s, "
                         "client sleep %g ms\n%-24s %10s %10s\n"
                         % (len(rows), len(good), a.down_s, a.type, a.sleep_ms, "figure",
                            "median", "max"))
        for k in keys:
            sys.stderr.write("%-24s %10.2f %10.2f\n" % (k, summary[k], summary[k + "_max"]))
    finally:
        if client:
            client.stop = True
            try:
                client.s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            client.join(2)
            client.s.close()
        stop_all(procs, tmp)


if __name__ == "__main__":
    sys.exit(main())
