#!/usr/bin/env python3
"""Bounded, seeded chaos test of brokerd against two mock backends.

Setup: one brokerd (2 workers) in front of two mockd processes, "alpha" (the
default backend, one connection) and "beta" (1-2 connections), each on its
own Unix socket, a moderate max_queue (16-32), request deadlines of at most
1 s in the chaos phase (timeout_ms capped at 2.5 s), small
max_request_bytes / max_client_output_bytes / max_inflight_per_client so the
back-pressure paths are hit all the time, shutdown_grace_ms 1000. beta
also has health checks (ping, every 150-400 ms) and retries reads, with
fault_close and fault_partial declared read_only so that dropped connections
are retried (issue 9); both backends queue fairly (the default).

Phases (one case, "chaos"; every problem found is collected, the case fails
at the end with all of them, each message starting with the seed):
  1. warm-up, then a baseline of the broker's fds (backend connections, as
     counted by the mocks themselves, are not part of it);
  2. chaos: THREADS client threads each run a pre-planned list of sessions.
     A session is one connection that pipelines bursts of request lines (echo,
     get_scene_info, ping, every mockd fault mode with its parameters, both
     backends, an unknown backend, random timeout_ms, invalid and over-long
     lines, blank lines) and then, by its kind:
       reader     reads everything (with pauses in reading while it keeps
                  sending), then closes (sometimes with SO_LINGER 0);
       halfclose  shutdown(SHUT_WR) after the last line (which sometimes has
                  no trailing newline), then reads to EOF;
       reset      reads a few answers, then closes with SO_LINGER 0 while
                  requests are in flight;
       noread     never reads, holds the connection a while, then closes.
     Checks: every answer is a JSON object with an id and a status; its code
     is one the request type allows (success payloads are checked too: echo
     params, fault_huge length...); never an unknown id or a duplicate; for
     reader and halfclose sessions exactly one answer per request line
     (id null answers counted per code), and EOF only after all of them;
  3. settle: the broker's non-backend fd count returns to the baseline, each
     mock holds at most pool_size broker connections, mock_stats overlaps == 0
     (asked directly to each mock);
  4. probes on the calm system: (a) after max_queue waiters timed out behind
     busy connections, a new request is queued, not refused as overloaded;
     (b) rounds of two clients (one per worker) pipelining 60 echoes each
     on one backend: all succeed, promptly (no slot handoff left waiting for
     a timer, no complete line of a paused client refused as too_large; in
     the last round an unterminated last line before SHUT_WR is answered);
     (c) when loadgen is built, 2 closed-loop connections on the pool-1
     backend for 3 s: no timeout, no answer slower than 200 ms x SLOW in two
     runs in a row (the same race at a rate Python cannot reach);
  5. SIGTERM at a random moment while bursts (slow, hanging, dripping...)
     are in flight, with a client that never reads: brokerd exits 0 within
     shutdown_grace_ms + 2 s * SLOW; the reading clients get an answer
     (the type's usual outcome or shutting_down) to every line sent before
     the signal, EOF only after all of them (lines sent after it get
     shutting_down or nothing, never twice); the mocks then see no broker
     connection left and no overlap.
  Sanitizer reports in any stderr fail the case (Env.finish()).

Determinism: every choice (configuration, request mix, session plans, read
counts, pauses, the SIGTERM moment) is drawn from the seed before the
traffic starts, each client thread from its own generator, so a replay makes
the same choices; only the timing differs.

Replay a seed (printed at the start and in every failure message):
    python3 tests/integration/test_chaos.py --bin build/bin --seed 12345
    BROKER_CHAOS_SEED=12345 ctest --test-dir build -R integ_test_chaos -V
--rounds N sets the sessions per client thread (default 16 on a release
build, 8 when SLOW=3 so a sanitizer build also stays in bounds; the plans of
a shorter run are a prefix of the longer one's).
Other options (--bin, -k, --keep, -v) as in brokertest.run_cases.
"""
import json
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokertest as bt  # noqa: E402
from brokertest import t  # noqa: E402


def _take_opt(flag):
    """Remove `flag VALUE` / `flag=VALUE` from sys.argv (run_cases parses the
    rest) and return VALUE, or None."""
    argv = sys.argv
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            v = argv[i + 1]
            del argv[i:i + 2]
            return v
        if a.startswith(flag + "="):
            del argv[i]
            return a.split("=", 1)[1]
    return None


_seed_text = _take_opt("--seed") or os.environ.get("BROKER_CHAOS_SEED")
SEED = int(_seed_text) if _seed_text else random.SystemRandom().randrange(1, 2 ** 31)
_rounds_text = _take_opt("--rounds")
ROUNDS = int(_rounds_text) if _rounds_text else None

# ------------------------------------------------------------ configuration

THREADS = 6             # concurrent client threads in the chaos phase
CHAOS_BUDGET = 30       # s (release): no session starts later (a bound for broken brokers)
BASE_SESSIONS = 16      # sessions per thread on a release build
GRACE_MS = 1000         # shutdown_grace_ms
REQ_TIMEOUT_MS = 1000   # request_timeout_ms (a request without timeout_ms)
CHAOS_MAX_MS = 1000     # longest deadline of a chaos request: an answer is due by then
CAP_MS = 2500           # max_request_timeout_ms (timeout_ms 3000 is capped to it)
IDLE_MS = 900           # idle_timeout_ms: cuts a hang without timeout_ms before the
                        # request timeout; far longer than any drip interval used
MAX_REQ = 2048          # max_request_bytes
MAX_OUT = 65536         # max_client_output_bytes
INFLIGHT_CAP = 8        # rate_limit.max_inflight_per_client
CONTENTION_ROUNDS = 6   # rounds of the two-client contention probe
MAX_RESP = 200000       # max_response_bytes
BACKENDS = ("alpha", "beta")

GENERIC = frozenset(("overloaded", "timeout"))  # any queued request may get these
DOCUMENTED = frozenset(("bad_request", "invalid_params", "too_large", "rate_limited",
                        "overloaded", "unavailable", "timeout", "backend_error",
                        "bad_backend_response", "forbidden", "unknown_backend",
                        "shutting_down", "internal"))


# ------------------------------------------------------------ expectations


class Exp:
    """What one request line may get back. codes: allowed outcomes
    ("success" or an error code); check(result) -> None or a complaint."""
    __slots__ = ("rid", "typ", "codes", "check", "line")

    def __init__(self, rid, typ, codes, check=None):
        self.rid, self.typ, self.codes, self.check = rid, typ, frozenset(codes), check
        self.line = b""

    def key(self):
        return json.dumps(self.rid)

    def with_shutdown(self):
        if self.codes <= {"bad_request", "unknown_backend"}:
            return self  # refused while parsing, before the draining check
        e = Exp(self.rid, self.typ, self.codes | {"shutting_down"}, self.check)
        e.line = self.line
        return e


class NullExp:
    """An invalid line answered with "id": null and this code."""
    __slots__ = ("code",)

    def __init__(self, code):
        self.code = code


def _ok_equal(want):
    return lambda res: None if res == want else "result %r, expected %r" % (_short(res), want)


def _ok_type(typ):
    def check(res):
        if not isinstance(res, dict) or res.get("type") != typ or res.get("executed") is not True:
            return "result %r is not the %s answer" % (_short(res), typ)
        return None
    return check


def _short(v, n=160):
    s = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v
    return s if len(s) <= n else s[:n] + "...(%d)" % len(s)


TEXTS = ("plain", "with \"quotes\" and \\ back", "\u00e9t\u00e9 \u65e5\u672c",
         "\U0001f389 party", "tab\there", "x" * 90)


def gen_line(rng, rid, final=False):
    """One request line and what it expects: (bytes, Exp | NullExp | None)."""
    kinds = [("echo", 24), ("get_scene_info", 7), ("ping", 3), ("fault_hang", 4),
             ("fault_close", 4), ("fault_partial", 4), ("fault_garbage", 4),
             ("fault_drip", 4), ("fault_slow", 8), ("fault_huge", 0 if final else 5),
             ("fault_error", 4), ("fault_array", 3), ("fault_empty", 3), ("fault_extra", 3),
             ("fault_nonascii", 3), ("unknown_backend", 1), ("invalid_id", 2),
             ("invalid_null", 3), ("too_long", 1), ("blank", 1)]
    kind = rng.choices([k for k, _ in kinds], [w for _, w in kinds])[0]
    ascii_only = rng.random() < 0.7
    if kind == "blank":
        return rng.choice([b"\n", b"   \n", b"\t\r\n"]), None
    if kind == "invalid_null":
        return rng.choice([b"not json at all\n", b"[1,2,3]\n", b'{"type":"echo"}\n',
                           b'{"id":true,"type":"echo"}\n', b"{\n"]), NullExp("bad_request")
    if kind == "too_long":
        n = rng.randint(MAX_REQ + 10, 3 * MAX_REQ)
        return b'{"id":"long","type":"echo","params":{"p":"' + b"z" * n + b'"}}\n', \
            NullExp("too_large")
    if kind == "invalid_id":
        bad = rng.choice([{"type": "Echo!"}, {"type": "echo", "timeout_ms": 0},
                          {"type": "echo", "params": [1]}, {"type": "echo", "timeout_ms": 600001}])
        req = dict({"id": rid}, **bad)
        e = Exp(rid, "invalid", ("bad_request",))
        e.line = bt.line(req)
        return e.line, e
    req = {"id": rid}
    if kind == "unknown_backend":
        req.update(type="echo", params={}, backend="nope")
        e = Exp(rid, kind, ("unknown_backend",))
        e.line = bt.line(req)
        return e.line, e
    req["type"] = kind
    be = rng.choice([None, None, "alpha", "beta"])
    if be:
        req["backend"] = be
    if kind == "fault_hang":
        req["timeout_ms"] = rng.choice([30, 80, 150, 300, 600] if not final else [600, 3000])
        if rng.random() < 0.1 and not final:
            del req["timeout_ms"]  # cut by idle_timeout_ms
    elif rng.random() < 0.4:
        req["timeout_ms"] = rng.choice([20, 50, 100, 300, 1000] if not final else
                                       [20, 100, 1000, 3000])
    codes = set(GENERIC)
    check = None
    params = None
    if kind == "echo":
        params = {"tok": "%s" % rid, "s": rng.choice(TEXTS), "n": rng.randint(-5, 10 ** 9),
                  "pad": "p" * rng.randint(0, 200)}
        codes.add("success")

        def check(res, want=params):
            if not isinstance(res, dict) or res.get("params") != want:
                return "echo result %r, sent params %r" % (_short(res), _short(want, 80))
            return None
    elif kind == "get_scene_info":
        codes.add("success")

        def check(res):
            return None if isinstance(res, dict) and res.get("name") == "Scene" else \
                "scene result %r" % _short(res)
    elif kind == "ping":
        codes.add("success")
        check = _ok_equal({"pong": True})
    elif kind == "fault_hang":
        pass  # never answered by the backend: timeout (or overloaded)
    elif kind == "fault_close":
        codes.add("unavailable")
    elif kind in ("fault_partial", "fault_garbage", "fault_array", "fault_empty"):
        codes.add("bad_backend_response")
    elif kind == "fault_drip":
        params = {"interval_ms": rng.randint(1, 4)}
        codes.add("success")
        check = _ok_type(kind)
    elif kind == "fault_slow":
        params = {"ms": rng.randint(1, 150) if not final else rng.randint(100, 800)}
        codes.add("success")
        check = _ok_type(kind)
    elif kind == "fault_huge":
        size = rng.choice([1000, 20000, 60000, 120000, 150000, 300000])
        params = {"bytes": size}
        if size + 64 <= MAX_RESP:
            codes.add("success")

            def check(res, size=size):
                return None if isinstance(res, str) and len(res) == size else \
                    "huge result of %s, expected %d chars" % (
                        len(res) if isinstance(res, str) else type(res).__name__, size)
        else:
            codes.add("bad_backend_response")
    elif kind == "fault_error":
        params = {"message": rng.choice(TEXTS)}
        codes.add("backend_error")
    elif kind == "fault_extra":
        codes.add("success")
        check = _ok_type(kind)
    elif kind == "fault_nonascii":
        params = {"s": rng.choice(TEXTS[2:4]), "k": ["\u2603", {"\u00e9": 1}]}
        codes.add("success")
        check = _ok_equal({"ok": True})
    if params is not None:
        req["params"] = params
    e = Exp(rid, kind, codes, check)
    e.line = bt.line(req, ascii_only=ascii_only)
    return e.line, e


# ------------------------------------------------------------ bookkeeping


class Ctx:
    """Shared by every thread: problems found and an outcome histogram."""

    def __init__(self):
        self.lock = threading.Lock()
        self.problems = []
        self.hist = Counter()
        self.notes = []

    def problem(self, msg):
        with self.lock:
            self.problems.append(msg)

    def count(self, typ, outcome):
        with self.lock:
            self.hist[(typ, outcome)] += 1


class Tracker:
    """Expected and received answers of one connection."""

    def __init__(self, ctx, label):
        self.ctx, self.label = ctx, label
        self.exp = {}
        self.got = {}
        self.null_exp = Counter()
        self.null_got = Counter()
        self.extra_null_reported = False
        self.n_answers = 0
        self.optional = set()  # keys that may stay unanswered (sent after SIGTERM)

    def register(self, e):
        if isinstance(e, Exp):
            self.exp[e.key()] = e
        elif isinstance(e, NullExp):
            self.null_exp[e.code] += 1

    def on_line(self, raw):
        self.n_answers += 1
        try:
            r = json.loads(raw)
        except ValueError:
            self.ctx.problem("%s: answer line is not JSON: %r" % (self.label, raw[:200]))
            return
        if not isinstance(r, dict) or "id" not in r or r.get("status") not in ("success", "error"):
            self.ctx.problem("%s: malformed answer %r" % (self.label, raw[:200]))
            return
        if r["status"] == "success":
            outcome = "success"
            if "result" not in r:
                self.ctx.problem("%s: success without result: %r" % (self.label, raw[:200]))
        else:
            err = r.get("error")
            outcome = err.get("code") if isinstance(err, dict) else None
            if outcome not in DOCUMENTED or not isinstance(err.get("message"), str):
                self.ctx.problem("%s: undocumented error %r" % (self.label, raw[:200]))
                return
        rid = r["id"]
        if rid is None:
            self.null_got[outcome] += 1
            self.ctx.count("(null id)", outcome)
            if self.null_got[outcome] > self.null_exp[outcome] and not self.extra_null_reported:
                self.extra_null_reported = True
                self.ctx.problem("%s: unexpected id-null answer %s (%d such lines sent): %s"
                                 % (self.label, outcome, self.null_exp[outcome],
                                    _short(r.get("error"), 200)))
            return
        k = json.dumps(rid)
        e = self.exp.get(k)
        if e is None:
            self.ctx.problem("%s: answer for an id never sent: %s" % (self.label, raw[:200]))
            return
        if k in self.got:
            self.ctx.problem("%s: duplicate answer for id %s: first %s, then %s"
                             % (self.label, k, _short(self.got[k], 150), raw[:150]))
            return
        self.got[k] = r
        self.ctx.count(e.typ, outcome)
        if outcome not in e.codes:
            self.ctx.problem("%s: %s id %s got %s (allowed: %s): %s; line %r"
                             % (self.label, e.typ, k, outcome, ",".join(sorted(e.codes)),
                                _short(r.get("error") or r.get("result"), 200), e.line[:160]))
        elif outcome == "success" and e.check:
            why = e.check(r["result"])
            if why:
                self.ctx.problem("%s: %s id %s: %s" % (self.label, e.typ, k, why))

    def missing(self):
        return [e for k, e in self.exp.items() if k not in self.got and k not in self.optional]

    def complete(self):
        return not self.missing() and all(
            self.null_got[c] >= n for c, n in self.null_exp.items())

    def report_missing(self, why):
        miss = self.missing()
        nulls = {c: (self.null_got[c], n) for c, n in self.null_exp.items()
                 if self.null_got[c] < n}
        self.ctx.problem("%s: %s: %d of %d requests unanswered (%s)%s" % (
            self.label, why, len(miss), len(self.exp),
            ", ".join("%s %s" % (e.typ, e.key()) for e in miss[:6]),
            "; id-null answers (got, sent): %r" % nulls if nulls else ""))


class Peer:
    """One non-blocking client connection: sends what is queued, parses what
    arrives into its tracker."""

    def __init__(self, path, tracker):
        self.tr = tracker
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(t(5))
        self.sock.connect(path)
        self.sock.setblocking(False)
        self.out = bytearray()
        self.inbuf = b""
        self.eof = False
        self.read_error = None
        self.write_error = None
        self.closed = False
        self.eof_at = None

    def fileno(self):
        return self.sock.fileno()

    def queue(self, data):
        self.out += data

    def on_writable(self):
        try:
            n = self.sock.send(self.out[:262144])
            del self.out[:n]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            self.write_error = e
            self.out.clear()

    def on_readable(self):
        try:
            chunk = self.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.read_error = e
            chunk = b""
        if not chunk:
            self.eof = True
            self.eof_at = time.monotonic()
            if self.inbuf:
                self.tr.ctx.problem("%s: connection ended inside an answer line: %r"
                                    % (self.tr.label, self.inbuf[:200]))
                self.inbuf = b""
            return
        self.inbuf += chunk
        while True:
            i = self.inbuf.find(b"\n")
            if i < 0:
                break
            raw, self.inbuf = self.inbuf[:i], self.inbuf[i + 1:]
            self.tr.on_line(raw)

    def shut_wr(self):
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            self.write_error = e

    def close(self, linger0=False):
        if self.closed:
            return
        if linger0:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.sock.close()
        self.closed = True


def pump(peers, timeout, read=True):
    """One select round over peers (reading only those given in `read`, which
    is a bool for all or a set of peers)."""
    rl = [p for p in peers if not p.eof and not p.closed and (read is True or
                                                                (read and p in read))]
    wl = [p for p in peers if p.out and not p.closed and p.write_error is None]
    if not rl and not wl:
        time.sleep(max(0.0, min(timeout, 0.02)))
        return
    r, w, _ = select.select(rl, wl, [], max(0.0, timeout))
    for p in w:
        p.on_writable()
    for p in r:
        p.on_readable()


def pump_for(peers, seconds, read=True):
    end = time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return
        pump(peers, min(left, 0.05), read)


def pump_until(peers, cond, quiet, hard, read=True):
    """Pump until cond(); give up after `quiet` seconds without a new answer
    or at the absolute time `hard`. Returns cond()."""
    last_n = sum(p.tr.n_answers for p in peers)
    last_t = time.monotonic()
    while not cond():
        now = time.monotonic()
        n = sum(p.tr.n_answers for p in peers)
        if n != last_n:
            last_n, last_t = n, now
        if now - last_t > quiet or now > hard:
            return cond()
        pump(peers, 0.05, read)
    return True


QUIET = None  # set in chaos(): longest silence a reading client may see


# ------------------------------------------------------------ sessions


def plan_session(rng, tid, sno):
    kind = rng.choices(["reader", "halfclose", "reset", "noread"], [50, 18, 18, 14])[0]
    bursts = []
    n = 0
    for _ in range(rng.randint(1, 4)):
        lines = []
        for _ in range(rng.randint(1, 30)):
            rid = "t%d.s%d.%d" % (tid, sno, n) if rng.random() < 0.7 else \
                tid * 10 ** 7 + sno * 10 ** 4 + n
            if rng.random() < 0.05:
                rid = "\u00e9-" + str(rid)
            lines.append(gen_line(rng, rid))
            n += 1
        bursts.append({"lines": lines,
                       "pause": rng.choice([0, 0, 0, 50, 200, 500]),
                       "drain": rng.random() < 0.5})
    plan = {"kind": kind, "bursts": bursts, "linger0": rng.random() < 0.3,
            "read_k": rng.randint(0, 5), "hold_ms": rng.randint(0, 600),
            "gap_ms": rng.randint(0, 40)}
    if kind == "halfclose" and rng.random() < 0.5:
        # The last line has no trailing newline: EOF ends it.
        last = bursts[-1]["lines"]
        rid = "t%d.s%d.last" % (tid, sno)
        data, e = gen_line(rng, rid)
        while not isinstance(e, Exp):  # a request, not a blank or id-null line
            data, e = gen_line(rng, rid)
        last.append((data.rstrip(b"\n"), e))
    return plan


def run_session(ctx, path, plan, label, stop_at):
    kind = plan["kind"]
    tr = Tracker(ctx, "%s [%s]" % (label, kind))
    try:
        p = Peer(path, tr)
    except OSError as e:
        ctx.problem("%s: cannot connect: %s" % (tr.label, e))
        return
    hard = time.monotonic() + 10 + 5 * bt.SLOW  # its own bound; stop_at only stops new ones
    try:
        reading = kind in ("reader", "halfclose")
        for b in plan["bursts"]:
            for data, e in b["lines"]:
                tr.register(e)
                p.queue(data)
            if kind == "noread":
                continue
            if b["pause"]:
                pump_for([p], b["pause"] / 1000.0, read=False)  # keeps sending
            if reading and b["drain"]:
                pump_until([p], lambda: tr.complete() and not p.out, QUIET, hard)
        if kind == "reader":
            if not pump_until([p], lambda: tr.complete() and not p.out, QUIET, hard):
                tr.report_missing("no answer %s" % ("(EOF)" if p.eof else
                                                    "within %.1f s of silence" % QUIET))
            p.close(plan["linger0"])
        elif kind == "halfclose":
            pump_until([p], lambda: not p.out, QUIET, hard, read=True)
            p.shut_wr()
            pump_until([p], lambda: p.eof, QUIET, hard)
            if not tr.complete():
                tr.report_missing("EOF before every answer" if p.eof else
                                  "no EOF nor answer within %.1f s of silence after SHUT_WR"
                                  % QUIET)
            elif not p.eof:
                ctx.problem("%s: every answer arrived but no EOF within %.1f s after SHUT_WR"
                            % (tr.label, QUIET))
            p.close()
        elif kind == "reset":
            want = plan["read_k"]
            pump_until([p], lambda: tr.n_answers >= want and not p.out, t(0.5),
                       time.monotonic() + t(1))
            p.close(linger0=True)
        else:  # noread
            pump_for([p], plan["hold_ms"] / 1000.0, read=False)
            p.close(plan["linger0"])
    except Exception as e:  # noqa: BLE001 - a test bug must not hang the thread
        ctx.problem("%s: %s: %s" % (tr.label, type(e).__name__, e))
        p.close(True)


def client_thread(ctx, path, tid, plans, stop_at):
    for sno, plan in enumerate(plans):
        if time.monotonic() > stop_at:
            ctx.notes.append("thread %d stopped after %d of %d sessions (time bound)"
                             % (tid, sno, len(plans)))
            return
        run_session(ctx, path, plan, "thread %d session %d" % (tid, sno), stop_at)
        time.sleep(plan["gap_ms"] / 1000.0)


# ------------------------------------------------------------ helpers


def backend_conns(mocks):
    """Broker connections each mock sees (its stats connection excluded)."""
    return [m.stats()["connections_open"] - 1 for m in mocks]


def nonbackend_fds(b, mocks):
    return len(b.fds()) - sum(backend_conns(mocks))


def stable_nonbackend_fds(b, mocks):
    prev = None
    for _ in range(20):
        cur = nonbackend_fds(b, mocks)
        if cur == prev:
            return cur
        prev = cur
        time.sleep(0.05)
    return prev


def quick_session(ctx, path, label, lines):
    tr = Tracker(ctx, label)
    p = Peer(path, tr)
    for data, e in lines:
        tr.register(e)
        p.queue(data)
    return p


def echo_line(rid, be, timeout_ms=None, newline=True):
    """An echo that must succeed (probes on a calm system)."""
    req = {"id": rid, "type": "echo", "params": {"tok": rid}, "backend": be}
    if timeout_ms:
        req["timeout_ms"] = timeout_ms
    want = {"tok": rid}
    e = Exp(rid, "echo", ("success",),
            lambda res: None if isinstance(res, dict) and res.get("params") == want else
            "echo result %r, sent %r" % (_short(res), want))
    e.line = bt.line(req)
    return (e.line if newline else e.line.rstrip(b"\n")), e


# ------------------------------------------------------------ the case


def chaos(env):
    ctx = Ctx()
    try:
        run_chaos(env, ctx)
    except AssertionError:
        raise
    except Exception as e:  # noqa: BLE001 - a crash of the test still names the seed
        tb = traceback.extract_tb(e.__traceback__)[-1]
        ctx.problem("test error %s: %s (at line %d: %s)" % (type(e).__name__, e, tb.lineno,
                                                             tb.line))
    raise_problems(ctx)


def run_chaos(env, ctx):
    global QUIET
    rng = random.Random(SEED)
    slow = bt.SLOW
    QUIET = CHAOS_MAX_MS / 1000.0 + t(1)
    # alpha (the default backend, which loadgen uses) has one connection.
    pools = {be: 1 if be == "alpha" else rng.choice([1, 2]) for be in BACKENDS}
    queues = {be: rng.randint(16, 32) for be in BACKENDS}
    # Fewer rounds on a slow (sanitizer) build: 16 on release, 8 with SLOW=3.
    sessions = ROUNDS if ROUNDS is not None else max(3, int(round(BASE_SESSIONS * 2 / (slow + 1))))
    mocks = {be: env.mockd(os.path.join(env.tmp, "%s.sock" % be), name="mockd-" + be)
             for be in BACKENDS}
    backends = [bt.backend(env, name=be, address=mocks[be].addr, pool_size=pools[be],
                           max_queue=queues[be], request_timeout_ms=REQ_TIMEOUT_MS,
                           max_request_timeout_ms=CAP_MS, idle_timeout_ms=IDLE_MS,
                           max_response_bytes=MAX_RESP) for be in BACKENDS]
    # beta also runs health checks and retries reads, with the faults that
    # drop a connection counted as reads, so retries meet coalescing,
    # deadlines, dropped clients and the SIGTERM; its breaker stays closed
    # (the probes below need both backends answering; the breaker's own
    # races have their tests).
    backends[1].update(
        health={"command": "ping", "interval_ms": rng.randint(150, 400), "timeout_ms": 300,
                "rise": 1, "fall": 2},
        retry={"max": 2, "backoff_ms": rng.choice([0, 5, 20])},
        read_only=["get_*", "fault_close", "fault_partial"])
    cfg = bt.broker_config(env, backends=backends, workers=2, shutdown_grace_ms=GRACE_MS,
                           max_request_bytes=MAX_REQ, max_client_output_bytes=MAX_OUT,
                           rate_limit={"max_inflight_per_client": INFLIGHT_CAP})
    print("chaos: seed=%d (replay: --seed %d or BROKER_CHAOS_SEED=%d) pools=%r "
          "max_queue=%r threads=%d sessions=%d SLOW=%g"
          % (SEED, SEED, SEED, pools, queues, THREADS, sessions, slow), flush=True)
    b = env.broker(cfg)
    mlist = [mocks[be] for be in BACKENDS]

    # Every choice is made before any traffic.
    plans = []
    for tid in range(THREADS):
        trng = random.Random("%d/%d" % (SEED, tid))
        plans.append([plan_session(trng, tid, s) for s in range(sessions)])
    probe_backend_order = list(BACKENDS)
    rng.shuffle(probe_backend_order)
    final_rng = random.Random("%d/final" % SEED)
    sigterm_delay = final_rng.uniform(0.05, 0.5)

    # ---- 1. warm-up and fd baseline
    warm = []
    for i, be in enumerate(BACKENDS * 2):
        warm.append(echo_line("warm%d" % i, be))
    p = quick_session(ctx, b.path, "warm-up", warm)
    if not pump_until([p], lambda: p.tr.complete(), t(5), time.monotonic() + t(10)):
        p.tr.report_missing("warm-up")
    p.close()
    time.sleep(0.2)
    base = stable_nonbackend_fds(b, mlist)
    t_chaos = time.monotonic()

    # ---- 2. chaos
    stop_at = time.monotonic() + CHAOS_BUDGET + 10 * (slow - 1)
    threads = [threading.Thread(target=client_thread, args=(ctx, b.path, tid, plans[tid], stop_at),
                                daemon=True) for tid in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(max(1.0, stop_at + t(25) - time.monotonic()))
    if any(th.is_alive() for th in threads):
        ctx.problem("client threads still running %.0f s after the chaos bound"
                    % (time.monotonic() - stop_at))
    t_settle = time.monotonic()
    if not b.alive():
        ctx.problem("brokerd died during the chaos phase (exit %r): %s"
                    % (b.proc.poll(), b.stderr()[-1500:]))
        return

    # ---- 3. settle: fds back to the baseline, pools bounded, no overlap
    after = bt.wait_for(lambda: (lambda n: n if n <= base else None)(nonbackend_fds(b, mlist)),
                        t(5)) or nonbackend_fds(b, mlist)
    if after > base:
        time.sleep(0.2)
        after = stable_nonbackend_fds(b, mlist)
        if after > base:
            ctx.problem("broker fds (backend connections excluded) grew from %d to %d and "
                        "stayed there %.0f s after the last client left: %r"
                        % (base, after, t(5), sorted(b.fds().values())[-12:]))
    for be, n in zip(BACKENDS, backend_conns(mlist)):
        if n > pools[be] + (be == "beta"):  # + a health check's own connection
            ctx.problem("mock %s sees %d broker connections, pool_size %d" % (be, n, pools[be]))
    for be in BACKENDS:
        st = mocks[be].stats()
        if st["overlaps"]:
            ctx.problem("mock %s: %d overlapping requests after the chaos phase: %r"
                        % (be, st["overlaps"], st))
    # ---- 4a. probe: timed-out waiters must not hold places in max_queue
    t_probe = time.monotonic()
    busy_ms = CAP_MS
    busy = []
    for be in BACKENDS:
        for i in range(pools[be]):
            # A drip (a byte every 100 ms, under idle_timeout_ms) holds the
            # connection until its own deadline.
            rid = "qp-busy-%s-%d" % (be, i)
            e = Exp(rid, "fault_drip", ("timeout",))
            e.line = bt.line({"id": rid, "type": "fault_drip", "backend": be,
                              "params": {"interval_ms": 100}, "timeout_ms": busy_ms})
            busy.append((e.line, e))
    hp = quick_session(ctx, b.path, "queue probe (busy connections)", busy)
    pump_until([hp], lambda: not hp.out, t(1), time.monotonic() + t(2))
    pump_for([hp], t(0.2))  # the drips hold every connection now
    fillers = []
    for be in BACKENDS:
        lines = []
        for i in range(queues[be]):
            rid = "qp-wait-%s-%d" % (be, i)
            e = Exp(rid, "echo", ("timeout",))
            e.line = bt.line({"id": rid, "type": "echo", "backend": be, "timeout_ms": 100})
            lines.append((e.line, e))
        for k in range(0, len(lines), INFLIGHT_CAP):  # one client per in-flight cap
            fillers.append(quick_session(ctx, b.path, "queue probe (waiters %s)" % be,
                                         lines[k:k + INFLIGHT_CAP]))
    if not pump_until(fillers, lambda: all(f.tr.complete() for f in fillers), t(2),
                      time.monotonic() + t(3)):
        for f in fillers:
            if not f.tr.complete():
                f.tr.report_missing("waiters behind busy connections")
    elapsed_ms = (time.monotonic() - t_probe) * 1000
    if elapsed_ms < busy_ms - 300 * slow:
        probes = []
        for be in BACKENDS:
            data, e = echo_line("qp-probe-%s" % be, be, timeout_ms=CAP_MS)
            e.codes = frozenset(("success", "overloaded"))  # overloaded: diagnosed below
            probes.append((data, e))
        pp = quick_session(ctx, b.path, "queue probe (after the waiters timed out)", probes)
        # No refusal at once: the queue holds only timed-out waiters.
        pump_until([pp, hp], lambda: pp.tr.complete() and hp.tr.complete(), t(3),
                   time.monotonic() + t(5))
        for be in BACKENDS:
            r = pp.tr.got.get(json.dumps("qp-probe-%s" % be))
            if r and bt.err_code(r) == "overloaded":
                ctx.problem("queue probe: a request to %s refused overloaded although its "
                            "queue held only its %d (max_queue) timed-out waiters (they still "
                            "count against max_queue?): %s"
                            % (be, queues[be], r["error"].get("message")))
        if not pp.tr.complete():
            pp.tr.report_missing("queue probe")
        pp.close()
    else:
        ctx.notes.append("queue probe skipped: the waiters took %.0f ms" % elapsed_ms)
    if not pump_until([hp], lambda: hp.tr.complete(), t(3), time.monotonic() + t(5)):
        hp.tr.report_missing("queue probe busy connections")
    if os.environ.get("BROKER_TEST_DEBUG"):
        print("queue probe: %.2fs after start: busy %r" % (time.monotonic() - t_probe, hp.tr.got))
    for f in fillers + [hp]:
        f.close()

    # ---- 4b. probe: two clients (accepted one after the other, so on both
    # workers) pipeline echoes on one backend at a time: a slot released on
    # one worker while the other parses lines is handed on at once, never
    # left waiting for a timer (each would then time out); lines of a paused
    # client are not refused as too_large; the unterminated last line of the
    # half-closed client is answered.
    for rnd in range(CONTENTION_ROUNDS):
        be = probe_backend_order[rnd % 2]
        last = rnd == CONTENTION_ROUNDS - 1
        t0 = time.monotonic()
        cps = []
        for ci in range(2):
            half = last and ci == 1
            n = 60
            lines = [echo_line("cp%d.%d-%d" % (rnd, ci, i), be, timeout_ms=CAP_MS,
                               newline=not (half and i == n - 1)) for i in range(n)]
            cps.append(quick_session(ctx, b.path, "contention probe %d client %d (%s%s)" % (
                rnd, ci, be, ", half-closed, last line unterminated" if half else ""), lines))
        if last:
            pump_until(cps, lambda: not cps[1].out, t(2), time.monotonic() + t(3))
            cps[1].shut_wr()
        ok = pump_until(cps, lambda: all(c.tr.complete() for c in cps) and (cps[1].eof or not last),
                        t(3), time.monotonic() + t(6))
        dt = time.monotonic() - t0
        if not ok:
            for c in cps:
                if not c.tr.complete():
                    c.tr.report_missing("contention probe")
            if last and not cps[1].eof and cps[1].tr.complete():
                ctx.problem("contention probe: no EOF after SHUT_WR and every answer")
            for c in cps:
                c.close()
            break  # one failed round says it; the next ones would only repeat it
        elif dt > t(1.5):
            ctx.problem("contention probe %d (%s): 120 pipelined echoes took %.2f s (a stall "
                        "until a timer?)" % (rnd, be, dt))
        for c in cps:
            c.close()
    # ---- 4c. probe: the same race at a rate Python cannot reach: loadgen
    # (when built) with two closed-loop connections on the pool-1 backend.
    loadgen_probe(ctx, env, b)
    t_final = time.monotonic()

    # ---- 5. SIGTERM while bursts are in flight
    finals = []
    for ci in range(4):
        lines = []
        for i in range(final_rng.randint(6, 15)):
            data, e = gen_line(final_rng, "fin%d-%d" % (ci, i), final=True)
            if isinstance(e, Exp):
                e = e.with_shutdown()
            lines.append((data, e))
        label = "final client %d (%s)" % (ci, "half-closed" if ci == 3 else "reader")
        finals.append(quick_session(ctx, b.path, label, lines))
    noread = quick_session(ctx, b.path, "final client that never reads", [
        (bt.line({"id": "nr%d" % i, "type": "fault_huge", "params": {"bytes": 30000},
                  "backend": BACKENDS[i % 2]}), None) for i in range(24)])
    pump_until(finals, lambda: not any(f.out for f in finals), t(2), time.monotonic() + t(3))
    finals[3].shut_wr()
    pump_for(finals + [noread], sigterm_delay, read=set(finals))
    sent_out = [bool(f.out) for f in finals]
    t_term = time.monotonic()
    b.signal(signal.SIGTERM)
    # Lines sent after the signal: each answered at most once (shutting_down),
    # or not at all if the connection is closed first.
    time.sleep(0.02)
    for ci, f in enumerate(finals[:3]):
        for i in range(3):
            data, e = echo_line("late-%d-%d" % (ci, i), BACKENDS[i % 2])
            e = Exp(e.rid, "echo (after SIGTERM)", ("shutting_down",))
            f.tr.register(e)
            f.tr.optional.add(e.key())
            f.queue(data)
    bound = GRACE_MS / 1000.0 + 2.0 * slow
    pump_until(finals, lambda: all(f.eof for f in finals), bound + 0.5, t_term + bound + 0.5)
    rc = b.wait(max(0.0, t_term + bound - time.monotonic()))
    exit_s = time.monotonic() - t_term
    for f, pending in zip(finals, sent_out):
        if pending:
            continue  # not all its bytes were out before the signal
        if not f.tr.complete():
            f.tr.report_missing("after SIGTERM %s" % ("EOF before every answer" if f.eof
                                                      else "no EOF"))
    if rc is None:
        ctx.problem("brokerd still running %.1f s after SIGTERM (grace %d ms, bound %.1f s; "
                    "a client that does not read holds the shutdown?)"
                    % (exit_s, GRACE_MS, bound))
        b.kill()
    elif rc != 0:
        ctx.problem("brokerd exited %d after SIGTERM: %s" % (rc, b.stderr()[-1500:]))
    else:
        # What the non-reading client got before the end is still checked.
        noread.tr.exp = {json.dumps("nr%d" % i): Exp("nr%d" % i, "fault_huge",
                                                     ("success", "shutting_down", "timeout",
                                                      "overloaded"))
                         for i in range(24)}
        pump_until([noread], lambda: noread.eof, t(1), time.monotonic() + t(2))
        for f in finals:
            if not f.eof:
                ctx.problem("%s: no EOF although brokerd exited" % f.tr.label)
    for f in finals + [noread]:
        f.close()
    for be in BACKENDS:
        st = bt.wait_for(lambda: (lambda s: s if s["connections_open"] == 1 else None)(
            mocks[be].stats()), t(2)) or mocks[be].stats()
        if st["overlaps"]:
            ctx.problem("mock %s: %d overlapping requests: %r" % (be, st["overlaps"], st))
        if rc is not None and st["connections_open"] != 1:
            ctx.problem("mock %s: %d broker connections left open after brokerd exited"
                        % (be, st["connections_open"] - 1))
    t_end = time.monotonic()

    hist = Counter()
    for (typ, outcome), n in ctx.hist.items():
        hist[outcome] += n
    print("chaos: seed=%d phases: chaos %.1fs, settle %.1fs, probes %.1fs, sigterm %.1fs "
          "(exit %.2fs after SIGTERM, delay %.2fs); answers %s" % (
              SEED, t_settle - t_chaos, t_probe - t_settle, t_final - t_probe, t_end - t_final,
              exit_s, sigterm_delay, dict(hist.most_common())), flush=True)
    if os.environ.get("BROKER_TEST_DEBUG"):
        for (typ, outcome), n in sorted(ctx.hist.items()):
            print("  %-16s %-22s %d" % (typ, outcome, n))
    for n in ctx.notes:
        print("chaos: note: " + n, flush=True)


def loadgen_probe(ctx, env, b, seconds=3, again=None):
    """Two connections, one request in flight each, on the one-connection
    default backend: every slot release races with the other worker's
    acquire. A slot handed to a waiter of the worker that is parsing lines
    must not wait for the next timer: none may time out, and a run with an
    answer slower than 200 ms (x SLOW) is repeated once; both slow fails.
    Skipped when loadgen is not built."""
    exe = os.path.join(env.bindir, "loadgen")
    if not os.access(exe, os.X_OK):
        ctx.notes.append("loadgen not built in %s: stall probe skipped" % env.bindir)
        return
    argv = [exe, "--unix", b.path, "--connections", "2", "--depth", "1", "--threads", "1",
            "--duration", str(seconds), "--drain", str(int(t(3))), "--type", "echo"]
    try:
        p = subprocess.run(argv, capture_output=True, timeout=seconds + t(10))
    except subprocess.TimeoutExpired:
        ctx.problem("loadgen stall probe did not finish within %.0f s" % (seconds + t(10)))
        return
    out = p.stdout.decode("utf-8", "replace").strip()
    try:
        res = json.loads(out.splitlines()[-1])
    except (ValueError, IndexError):
        ctx.problem("loadgen stall probe: exit %d, output %r, stderr %r"
                    % (p.returncode, out[-300:], p.stderr[-300:]))
        return
    bound_us = 200000 * bt.SLOW
    desc = "exit %d, %s requests, errors %s %s, lost %s, duplicates %s, max latency %.0f ms" % (
        p.returncode, res.get("requests"), res.get("errors"), res.get("error_codes"),
        res.get("lost"), res.get("duplicates"), res.get("max_us", 0) / 1000.0)
    if p.returncode != 0 or res.get("errors"):
        ctx.problem("loadgen stall probe (2 connections, depth 1, pool 1, %d s): %s"
                    % (seconds, desc))
    elif res.get("max_us", 0) > bound_us:
        # One slow answer may be the host (a busy 2-vCPU box stalls a thread
        # for 200 ms now and then); two runs in a row are not.
        if not again:
            loadgen_probe(ctx, env, b, seconds, again=desc)
            return
        ctx.problem("loadgen stall probe (2 connections, depth 1, pool 1, %d s, twice): %s; "
                    "then %s (bound %.0f ms: a slot handoff waiting for a timer?)"
                    % (seconds, again, desc, bound_us / 1000.0))


def raise_problems(ctx):
    for i, p in enumerate(ctx.problems[:60]):
        print("chaos: problem %d: %s" % (i + 1, p), flush=True)
    if ctx.problems:
        shown = ctx.problems[:12]
        more = len(ctx.problems) - len(shown)
        raise AssertionError("seed=%d (replay: --seed %d): %d problem(s): %s%s" % (
            SEED, SEED, len(ctx.problems), " || ".join(shown),
            " || ... %d more" % more if more else ""))


if __name__ == "__main__":
    sys.exit(bt.run_cases([chaos], "brokerd randomized chaos test; this run's seed is %d. "
                          "Also: --seed N (or BROKER_CHAOS_SEED=N) replays a seed, --rounds N "
                          "sets the sessions per client thread." % SEED))
