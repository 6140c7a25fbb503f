"""Shared helpers for the integration tests that start the real binaries
(bin/brokerd, bin/mockd): process wrappers whose output goes to files, a
broker config builder, an NDJSON client, and a small case runner.

Python 3 standard library only. Every wait is derived from SLOW, the slowness
factor of the build under test (3 for sanitizer builds: a bin dir whose path
contains "address", "thread" or "sanitize", or BROKER_TEST_SLOW=N in the environment).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

SLOW = 1.0

SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                     "ThreadSanitizer", "UndefinedBehaviorSanitizer")


def configure(bindir):
    """Set SLOW from the bin dir name and BROKER_TEST_SLOW."""
    global SLOW
    env = os.environ.get("BROKER_TEST_SLOW")
    if env:
        try:
            SLOW = max(1.0, float(env))
        except ValueError:
            SLOW = 3.0
    elif any(k in os.path.abspath(bindir)
             for k in ("address", "thread", "sanitize", "asan", "tsan")):
        SLOW = 3.0
    else:
        SLOW = 1.0
    return SLOW


def t(seconds):
    """A timeout scaled by SLOW."""
    return seconds * SLOW


def wait_for(pred, timeout, step=0.01):
    """Poll pred() until it returns a truthy value or timeout; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


def cpu_seconds(pid):
    """utime + stime of every thread of pid, from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


class Proc:
    """A child process with stdout and stderr in files (it can never block on
    a full pipe)."""

    def __init__(self, env, name, argv, popen_kw=None):
        self.env = env
        self.name = name
        self.argv = argv
        self.out_path = os.path.join(env.tmp, "%s.out" % name)
        self.err_path = os.path.join(env.tmp, "%s.err" % name)
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=self._err,
                                     stdin=subprocess.DEVNULL, **(popen_kw or {}))
        self.pid = self.proc.pid
        self.rc = None
        self.killed = False
        env.procs.append(self)

    def stderr(self):
        return read_text(self.err_path)

    def stdout(self):
        return read_text(self.out_path)

    def alive(self):
        return self.proc.poll() is None

    def signal(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout):
        """Exit code, or None if still running after timeout."""
        try:
            self.rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._close_files()
        return self.rc

    def stop(self, timeout=None):
        """SIGTERM and wait; SIGKILL after the timeout (then returns None)."""
        if timeout is None:
            timeout = t(10)
        self.signal(signal.SIGTERM)
        rc = self.wait(timeout)
        if rc is None:
            self.kill()
            return None
        return rc

    def kill(self):
        self.killed = True
        if self.proc.poll() is None:
            self.proc.kill()
        self.rc = self.proc.wait()
        self._close_files()
        return self.rc

    def _close_files(self):
        for f in (self._out, self._err):
            if not f.closed:
                f.close()

    def sanitizer_report(self):
        text = self.stderr()
        for m in SANITIZER_MARKERS:
            i = text.find(m)
            if i >= 0:
                return text[max(0, i - 200):i + 1500]
        return None


class Mockd(Proc):
    def __init__(self, env, path=None, *extra, name=None):
        if path is None:
            path = os.path.join(env.tmp, "m.sock")
        self.path = path
        self.addr = "unix:" + path
        name = name or "mockd-%d" % len(env.procs)
        super().__init__(env, name, [os.path.join(env.bindir, "mockd"), "--listen",
                                     self.addr, *extra])
        self._wait_ready()

    def _wait_ready(self):
        def ready():
            if "mockd: listening on " in self.stderr():
                return True
            if self.proc.poll() is not None:
                raise AssertionError("mockd exited %s before ready: %s"
                                     % (self.proc.returncode, self.stderr().strip()))
            return False
        if not wait_for(ready, t(5)):
            raise AssertionError("mockd not ready within %.0f s" % t(5))

    def call(self, typ, params=None, timeout=None):
        """One request on a fresh direct connection (counts as one extra
        connection in mockd's own stats)."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout or t(5))
        try:
            s.connect(self.path)
            req = {"type": typ}
            if params is not None:
                req["params"] = params
            s.sendall(json.dumps(req).encode())
            dec = json.JSONDecoder()
            buf = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    raise AssertionError("mockd closed before answering %s" % typ)
                buf += chunk
                try:
                    val, _ = dec.raw_decode(buf.decode())
                    return val
                except ValueError:
                    continue
        finally:
            s.close()

    def calls(self, typ):
        """How many requests of type typ reached this mockd so far."""
        return self.call("mock_stats", {"type": typ})["result"]["calls"]

    def stats(self):
        """mock_stats asked directly; connections_open and max_connections_open
        include this very connection."""
        r = self.call("mock_stats")
        assert r.get("status") == "success", r
        return r["result"]


def backend(env, name="blender", address=None, **kw):
    """A backend entry with test-friendly defaults: no health checks, a
    breaker that never opens, no retries (so counts stay exact)."""
    b = {
        "name": name,
        "address": address or "unix:" + os.path.join(env.tmp, "m.sock"),
        "pool_size": 2,
        "max_queue": 256,
        "request_timeout_ms": int(5000 * SLOW),
        "idle_timeout_ms": int(5000 * SLOW),
        "connect_timeout_ms": int(1000 * SLOW),
        "health": {"interval_ms": 86400000},
        "breaker": {"failures": 100000},
        "retry": {"max": 0},
    }
    b.update(kw)
    return b


def broker_config(env, backends=None, **kw):
    cfg = {
        "listen": os.path.join(env.tmp, "b.sock"),
        "admin_listen": os.path.join(env.tmp, "b.admin.sock"),
        "workers": 2,
        "shutdown_grace_ms": int(5000 * SLOW),
        "max_request_bytes": 65536,
        "rate_limit": {"rate": 10000000, "burst": 100000000},
        "backends": backends if backends is not None else [backend(env)],
    }
    for k, v in kw.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = dict(cfg[k], **v)
        else:
            cfg[k] = v
    return cfg


class Broker(Proc):
    def __init__(self, env, cfg=None, name=None, wait_ready=True, args=(), popen_kw=None):
        self.cfg = cfg if cfg is not None else broker_config(env)
        self.path = self.cfg.get("listen")
        name = name or "brokerd-%d" % len(env.procs)
        self.config_path = os.path.join(env.tmp, "%s.json" % name)
        with open(self.config_path, "w") as f:
            json.dump(self.cfg, f, indent=1)
        super().__init__(env, name, [os.path.join(env.bindir, "brokerd"), "--config",
                                     self.config_path, *args], popen_kw=popen_kw)
        self.expect_exit0 = True
        if wait_ready:
            self._wait_ready()

    def _wait_ready(self):
        def ready():
            if '"msg":"brokerd ready"' in self.stderr() or "msg=\"brokerd ready\"" in self.stderr():
                return True
            if self.proc.poll() is not None:
                raise AssertionError("brokerd exited %s before ready: %s"
                                     % (self.proc.returncode, self.stderr().strip()[-2000:]))
            return False
        if not wait_for(ready, t(10)):
            raise AssertionError("brokerd not ready within %.0f s: %s"
                                 % (t(10), self.stderr()[-2000:]))

    def connect(self, timeout=None):
        return Client(self.path, timeout)

    def fd_count(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def fds(self):
        out = {}
        d = "/proc/%d/fd" % self.pid
        for n in os.listdir(d):
            try:
                out[int(n)] = os.readlink(os.path.join(d, n))
            except OSError:
                pass
        return out

    def rss_kb(self):
        for line in read_text("/proc/%d/status" % self.pid).splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def log_lines(self):
        out = []
        for line in self.stderr().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out


class Client:
    """An NDJSON client of the broker. Responses are parsed as they arrive;
    every line must be one JSON object with id and status."""

    def __init__(self, path, timeout=None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout or t(5))
        self.sock.connect(path)
        self.buf = b""
        self.eof = False

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        if isinstance(data, (dict, list)):
            data = line(data)
        elif isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            return False
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _pop_line(self):
        i = self.buf.find(b"\n")
        if i < 0:
            return None
        raw, self.buf = self.buf[:i], self.buf[i + 1:]
        try:
            v = json.loads(raw)
        except ValueError:
            raise AssertionError("response line is not JSON: %r" % raw[:300])
        assert isinstance(v, dict) and "id" in v and v.get("status") in ("success", "error"), \
            "malformed response line: %r" % raw[:300]
        return v

    def recv(self, n=1, timeout=None):
        """Exactly n response lines (list), or AssertionError on timeout/EOF."""
        timeout = t(5) if timeout is None else timeout
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            v = self._pop_line()
            if v is not None:
                out.append(v)
                continue
            if self.eof or not self._fill(deadline):
                raise AssertionError("got %d of %d responses within %.1f s%s; last: %r"
                                     % (len(out), n, timeout, " (EOF)" if self.eof else "",
                                        out[-3:]))
        return out

    def recv_one(self, timeout=None):
        return self.recv(1, timeout)[0]

    def expect_silence(self, window):
        """Assert nothing arrives within window seconds."""
        deadline = time.monotonic() + window
        while True:
            v = self._pop_line()
            assert v is None, "unexpected response: %r" % (v,)
            if not self._fill(deadline):
                break
        assert self.buf == b"", "unexpected bytes: %r" % self.buf[:300]

    def call(self, rid, typ, params=None, timeout=None, **kw):
        """Send one request, return its response (asserts the id)."""
        self.send(request(rid, typ, params, **kw))
        r = self.recv_one(timeout)
        assert r["id"] == rid, "response for id %r, expected %r: %r" % (r["id"], rid, r)
        return r


def admin_answer(b, cmd):
    """One admin command on a fresh connection to b's admin socket: the
    whole answer (status, result or error)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(t(10))
    try:
        s.connect(b.cfg["admin_listen"])
        s.sendall(json.dumps({"id": 1, "cmd": cmd}).encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(1 << 20)
            assert chunk, "admin socket closed before answering %s" % cmd
            buf += chunk
    finally:
        s.close()
    return json.loads(buf.split(b"\n", 1)[0])


def admin_result(b, cmd):
    """An admin command that must succeed: its result."""
    r = admin_answer(b, cmd)
    assert r["status"] == "success", "%s: %s" % (cmd, short(r))
    return r["result"]


def request(rid, typ, params=None, **kw):
    r = {"id": rid, "type": typ}
    if params is not None:
        r["params"] = params
    r.update(kw)
    return r


def line(obj, ascii_only=True):
    return json.dumps(obj, ensure_ascii=ascii_only, separators=(",", ":")).encode("utf-8") + b"\n"


def err_code(resp):
    if resp.get("status") != "error":
        return None
    return (resp.get("error") or {}).get("code")


def short(v):
    """repr(v) cut to 300 characters, for assertion messages."""
    s = repr(v)
    return s if len(s) <= 300 else s[:300] + "..."


def assert_success(r, what=""):
    """r is a success answer; returns its result."""
    assert r.get("status") == "success", "%s: expected success, got %s" % (what, short(r))
    return r["result"]


def assert_code(r, code, what=""):
    """r is an error answer with this code; returns its message."""
    assert err_code(r) == code, "%s: expected error %s, got %s" % (what, code, short(r))
    return r["error"]["message"]


class Env:
    """One case's temp dir and child processes. finish() checks every
    broker's exit code and every child's stderr for sanitizer reports;
    cleanup() kills whatever still runs and removes the dir."""

    def __init__(self, bindir, name, keep=False):
        self.bindir = bindir
        self.tmp = tempfile.mkdtemp(prefix="bt-%s-" % name[:12])
        self.procs = []
        self.keep = keep

    def mockd(self, path=None, *extra, **kw):
        return Mockd(self, path, *extra, **kw)

    def broker(self, cfg=None, **kw):
        return Broker(self, cfg, **kw)

    def finish(self):
        problems = []
        for p in self.procs:
            if isinstance(p, Broker) and p.rc is None and p.alive():
                rc = p.stop(t(15))
                if rc is None:
                    problems.append("%s did not exit within %.0f s of SIGTERM"
                                    % (p.name, t(15)))
                elif rc != 0 and p.expect_exit0:
                    problems.append("%s exited %d after SIGTERM" % (p.name, rc))
            elif isinstance(p, Broker) and p.expect_exit0 and p.rc not in (None, 0) \
                    and not p.killed:
                problems.append("%s exited %d" % (p.name, p.rc))
        for p in self.procs:
            if isinstance(p, Mockd) and p.alive():
                rc = p.stop(t(5))
                if rc not in (0,):
                    problems.append("%s exited %s after SIGTERM" % (p.name, rc))
        for p in self.procs:
            rep = p.sanitizer_report()
            if rep:
                problems.append("sanitizer report in %s stderr: %s" % (p.name, rep))
        if problems:
            raise AssertionError("; ".join(problems))

    def cleanup(self, failed):
        for p in self.procs:
            if p.alive():
                p.kill()
            p._close_files()
        if failed or self.keep:
            return self.tmp
        shutil.rmtree(self.tmp, ignore_errors=True)
        return None


def case_list():
    """(CASES, case): the list a test file's cases go in, in file order, and
    the decorator that puts them there."""
    cases = []

    def case(fn):
        cases.append(fn)
        return fn
    return cases, case


def run_cases(cases, description):
    """Parse --bin/-k/--keep, run every case with a fresh Env, print one line
    per case and the summary; returns the exit code."""
    ap = argparse.ArgumentParser(description=description)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--bin", default=os.path.join(here, "..", "..", "build", "bin"))
    ap.add_argument("-k", action="append", help="run only cases whose name contains this")
    ap.add_argument("--keep", action="store_true", help="keep every temp dir")
    ap.add_argument("-v", action="store_true", help="print tracebacks of failures")
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    configure(args.bin)
    missing = [p for p in ("brokerd", "mockd")
               if not os.access(os.path.join(args.bin, p), os.X_OK)]
    if missing:
        print("FAIL setup: %s not built in %s" % (", ".join(missing), args.bin))
        print("0 passed, 1 failed")
        return 1
    passed = failed = 0
    t_start = time.monotonic()
    for fn in cases:
        name = fn.__name__
        if args.k and not any(k in name for k in args.k):
            continue
        env = Env(args.bin, name, keep=args.keep)
        t0 = time.monotonic()
        ok = False
        reason = ""
        try:
            fn(env)
            env.finish()
            ok = True
        except Exception as e:  # noqa: BLE001 - report every failure, keep going
            reason = "%s: %s" % (type(e).__name__, e)
            if args.v:
                traceback.print_exc()
        finally:
            kept = env.cleanup(not ok)
        dt = time.monotonic() - t0
        if ok:
            passed += 1
            print("PASS %s (%.2fs)" % (name, dt), flush=True)
        else:
            failed += 1
            reason = reason.replace("\n", " | ")
            if len(reason) > 3000:
                reason = reason[:3000] + "..."
            print("FAIL %s: %s (%.2fs; files kept in %s)" % (name, reason, dt, kept), flush=True)
    print("total %.1fs, SLOW=%g" % (time.monotonic() - t_start, SLOW), flush=True)
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed else 0
