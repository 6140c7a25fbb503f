#!/usr/bin/env python3
"""Descriptor exhaustion (issue 9): brokerd keeps a reserve of descriptors for
its backend connections and caps its clients at what RLIMIT_NOFILE leaves,
re-reading the limit once per round of new clients and before refusing one. Each case starts the real brokerd
and mockd and changes the running broker's soft limit with prlimit(2)
(resource.prlimit on its pid, as `prlimit --pid` does), then fills it to the
cap: clients are opened until one is refused.

  reserve_holds                the cap is limit - fds_kept, the client over it
                               gets one overloaded line naming descriptors, and
                               a connected client still gets 4 new backend
                               connections at once
  raised_limit_recovers        prlimit raising the limit: the next client is
                               served within a second
  refusal_flood_does_not_spin  200 refused connection attempts: little CPU, a
                               rate-limited log
  flood_leaves_fds_at_baseline the broker's descriptor count after a flood of
                               refused clients is what it was before
  flood_keeps_backends_reachable  clients flooding in while a connected client
                               needs a new backend connection for every
                               request: every request is answered success
  emfile_backs_off_and_recovers  the limit lowered under what is open: EMFILE
                               at accept backs off without spinning, and
                               serving resumes once the limit is raised

Usage: test_fds.py --bin BUILD/bin [-k NAME] [--keep] [-v]
"""
import json
import os
import resource
import socket
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokertest as bt  # noqa: E402
from brokertest import t, line, request  # noqa: E402
from brokertest import short, assert_success, assert_code  # noqa: E402

CASES, case = bt.case_list()
POOL = 4
ROOM = 3  # clients the lowered limit leaves room for



def set_nofile(pid, soft):
    """Change pid's soft RLIMIT_NOFILE, leaving the hard one (so raising it
    again needs no privilege)."""
    _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))


def ready_fields(b):
    for rec in b.log_lines():
        if rec.get("msg") == "brokerd ready":
            return rec
    raise AssertionError("no brokerd ready line: %s" % b.stderr()[-1000:])


def first_line(sock, timeout):
    """The first response line on sock (dict), or None if nothing came within
    timeout; raises on EOF without a line."""
    sock.settimeout(timeout)
    buf = b""
    while b"\n" not in buf:
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            if buf:
                raise AssertionError("partial line %r" % buf[:300])
            return None
        if not chunk:
            raise AssertionError("EOF after %r" % buf[:300])
        buf += chunk
    return json.loads(buf.split(b"\n", 1)[0])


def try_client(path):
    """Connect one client: ("accepted", sock) when the broker reads it (a
    line that is not JSON gets bad_request, which needs no backend), or
    ("refused", response line) when it was refused at accept."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(t(5))
    s.connect(path)
    r = first_line(s, 0.25 * bt.SLOW)
    if r is None:
        s.sendall(b"not json\n")
        r = first_line(s, t(5))
        if bt.err_code(r) == "bad_request":
            return "accepted", s
    s.close()
    assert bt.err_code(r) == "overloaded", "unexpected first line %s" % short(r)
    return "refused", r


def readme_kept(cfg):
    """The descriptors kept besides clients, as README (Operations, File
    descriptors) gives them: every pool connection and one health-check
    connection per backend; stdio, the client listener, the signalfd, one
    io_uring per worker plus the listener's, the spare descriptor, the admin
    and compat listeners; a margin of 16."""
    backends = cfg["backends"]
    return (sum(be["pool_size"] + 1 for be in backends)
            + 3 + 1 + 1 + cfg["workers"] + 1 + 1 + 2 + 16)


def fill_to_cap(env, **backend_kw):
    """mockd, a broker (2 workers, one backend with POOL connections, none
    open yet) and its soft limit lowered to fds_kept + ROOM; clients opened
    until one is refused. Returns (broker, mockd, accepted sockets, the
    refusal line, fds_kept, limit)."""
    m = env.mockd()
    b = env.broker(bt.broker_config(env, workers=2, backends=[
        bt.backend(env, pool_size=POOL, max_queue=64, **backend_kw)]))
    ready = ready_fields(b)
    kept = readme_kept(b.cfg)
    assert ready.get("fds_kept", kept) == kept, \
        "brokerd keeps %r descriptors, README says %d" % (ready.get("fds_kept"), kept)
    # What is kept covers what is really open now plus every pool connection.
    assert b.fd_count() + POOL <= kept, \
        "%d descriptors open, pool %d, but only %d kept: %s" % (b.fd_count(), POOL, kept,
                                                                sorted(b.fds().values()))
    limit = kept + ROOM
    set_nofile(b.pid, limit)
    accepted, refusal = [], None
    for _ in range(ROOM + 40):
        what, v = try_client(b.path)
        if what == "refused":
            refusal = v
            break
        accepted.append(v)
    assert refusal is not None, "%d clients accepted at a limit of %d, %d kept" \
        % (len(accepted), limit, kept)
    return b, m, accepted, refusal, kept, limit


def slow_burst(c, base, n=POOL, ms=200):
    """n concurrent slow requests on client c; asserts all succeed, returns
    the wall time."""
    t0 = time.monotonic()
    for i in range(n):
        c.sendall(line(request(base + i, "fault_slow", {"ms": ms})))
    c.settimeout(t(5))
    rs = []
    buf = b""
    while len(rs) < n:
        chunk = c.recv(65536)
        assert chunk, "EOF after %d of %d answers" % (len(rs), n)
        buf += chunk
        while b"\n" in buf:
            raw, buf = buf.split(b"\n", 1)
            rs.append(json.loads(raw))
    for r in rs:
        assert_success(r, "slow request %r with the client cap reached" % r.get("id"))
    return time.monotonic() - t0


@case
def reserve_holds(env):
    """At a limit of fds_kept + 3 exactly 3 clients are admitted; the 4th gets
    the overloaded line naming descriptors and the numbers. A connected client
    then needs all 4 pool connections at once: every request succeeds.
    Without the cap, clients were accepted until EMFILE and the backend
    sockets could not be opened (unavailable: Too many open files)."""
    b, m, accepted, refusal, kept, limit = fill_to_cap(env)
    c = accepted[0]
    dt = slow_burst(c, 1)
    assert dt < 0.2 * POOL, "4 requests of 200 ms took %.2f s: not run at once" % dt
    st = m.stats()
    assert st["max_connections_open"] >= POOL, short(st)
    assert len(accepted) == ROOM, "%d clients admitted at limit %d with %d kept, expected %d" \
        % (len(accepted), limit, kept, ROOM)
    msg = assert_code(refusal, "overloaded", "client over the descriptor cap")
    assert refusal["id"] is None, short(refusal)
    want = "out of file descriptors for new clients: %d of the limit %d are kept for " \
        "backend connections" % (kept, limit)
    assert want in msg and "LimitNOFILE" in msg, msg
    # More clients are refused the same way.
    for _ in range(3):
        what, v = try_client(b.path)
        assert what == "refused" and "out of file descriptors" in v["error"]["message"], short(v)
    assert "descriptor limit changed" in b.stderr(), b.stderr()[-1000:]


@case
def raised_limit_recovers(env):
    """Raising the limit with prlimit: the next client is admitted and served
    within a second, and the clients already there keep working."""
    b, m, accepted, refusal, kept, limit = fill_to_cap(env)
    set_nofile(b.pid, limit + 64)
    t0 = time.monotonic()
    with b.connect(timeout=t(2)) as c:
        assert_success(c.call(1, "echo", {"after": "raise"}, timeout=1.0),
                       "new client after the limit was raised")
    dt = time.monotonic() - t0
    assert dt < 1.0 * bt.SLOW, "served %.2f s after the limit was raised" % dt
    # Room for 64 more: another four are all admitted.
    more = [try_client(b.path) for _ in range(4)]
    assert all(w == "accepted" for w, _ in more), [short(v) for w, v in more if w != "accepted"]
    for _, s in more:
        s.close()
    for s in accepted:
        s.sendall(line(request(7, "echo", {"still": True})))
        assert_success(first_line(s, t(5)), "a client from before the raise")


def flood(path, n):
    """n connection attempts as fast as possible; returns the sockets, left
    open for the caller to read and close."""
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(t(5))
        s.connect(path)
        socks.append(s)
    return socks


def _as_client(sock):
    """An accepted raw socket as a bt.Client."""
    c = bt.Client.__new__(bt.Client)
    c.sock, c.buf, c.eof = sock, b"", False
    return c


def count_refused(socks, timeout):
    refused = 0
    deadline = time.monotonic() + timeout
    for s in socks:
        r = first_line(s, max(0.01, deadline - time.monotonic()))
        if r is not None and "out of file descriptors" in r["error"]["message"]:
            refused += 1
    return refused


@case
def refusal_flood_does_not_spin(env):
    """200 connection attempts at the cap: each is accepted, told and closed;
    the broker spends little CPU on it and its log stays small. The clients
    already there are still served."""
    b, m, accepted, refusal, kept, limit = fill_to_cap(env)
    log0 = len(b.stderr())
    cpu0 = bt.cpu_seconds(b.pid)
    t0 = time.monotonic()
    socks = flood(b.path, 200)
    refused = count_refused(socks, t(5))
    time.sleep(max(0.0, 2.0 - (time.monotonic() - t0)))
    cpu = bt.cpu_seconds(b.pid) - cpu0
    for s in socks:
        s.close()
    assert refused == 200, "%d of 200 flood clients got the refusal line" % refused
    assert cpu < min(0.5 * bt.SLOW, 1.0), \
        "brokerd used %.2f s of CPU in 2 s refusing 200 clients" % cpu
    log = b.stderr()[log0:]
    lines = [x for x in log.splitlines() if "refusing client" in x]
    assert len(log) < 10000 and len(lines) <= 10, \
        "%d bytes, %d refusal lines of log for 200 refused clients" % (len(log), len(lines))
    assert_success(_as_client(accepted[0]).call(9, "echo", {"after": "flood"}),
                   "connected client after the flood")


@case
def flood_leaves_fds_at_baseline(env):
    """A flood of refused clients, then every one of them closed: the broker
    holds exactly the descriptors it held before."""
    b, m, accepted, refusal, kept, limit = fill_to_cap(env)
    slow_burst(accepted[0], 1)  # the pool connections exist before and after
    before = b.fds()
    socks = flood(b.path, 200)
    count_refused(socks, t(5))
    for s in socks:
        s.close()
    bt.wait_for(lambda: len(b.fds()) == len(before), t(3))
    after = b.fds()
    assert len(after) == len(before), "descriptors before the flood %d, after %d: %s" \
        % (len(before), len(after), sorted(set(after.items()) ^ set(before.items())))


@case
def flood_keeps_backends_reachable(env):
    """Clients flood in (from another process, so the flood and the requests
    really overlap) while a connected client sends requests whose backend
    connection is closed after every answer (mockd fault_extra: extra bytes
    after the reply), so each one needs a new backend socket: every request
    succeeds. A multishot accept took every waiting client at once, up to the
    descriptor limit, and a socket() at that instant failed with EMFILE
    (unavailable: Too many open files)."""
    b, m, accepted, refusal, kept, limit = fill_to_cap(env)
    c = _as_client(accepted[0])
    flooder = bt.Proc(env, "flooder", [sys.executable, "-c", FLOODER, b.path, "2.5"])
    answers = []
    deadline = time.monotonic() + 2.0
    i = 0
    while time.monotonic() < deadline:
        i += 1
        answers.append(c.call(i, "fault_extra", {"i": i}, timeout=t(5)))
    rc = flooder.wait(t(10))
    assert rc == 0, "flooder exit %r: %s" % (rc, flooder.stderr()[-500:])
    rounds = int(flooder.stdout().split()[0])
    bad = [r for r in answers if r.get("status") != "success"]
    assert not bad, "%d of %d requests failed during %d flood rounds, first %s" \
        % (len(bad), len(answers), rounds, short(bad[0]))
    assert len(answers) >= 20 and rounds >= 5, \
        "only %d requests and %d flood rounds in 2 s" % (len(answers), rounds)


# argv: socket path, seconds. Rounds of 100 connection attempts, all held
# open until the round is over; a full backlog (EAGAIN: the clients wait)
# ends the round early. Prints the number of rounds.
FLOODER = """
import socket, sys, time
path, end = sys.argv[1], time.monotonic() + float(sys.argv[2])
rounds = 0
while time.monotonic() < end:
    socks = []
    for _ in range(100):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        socks.append(s)
        s.setblocking(False)
        try:
            s.connect(path)
        except BlockingIOError:
            time.sleep(0.001)
            break
    for s in socks:
        s.close()
    rounds += 1
print(rounds)
"""

@case
def emfile_backs_off_and_recovers(env):
    """The limit lowered under the descriptors already open (so EMFILE at
    accept, the cap notwithstanding): 40 clients wait or are told, the broker
    neither spins nor floods its log, and a client is served again soon after
    the limit is raised (the accept back-off tops out at 1 s). Health checks
    run every 100 ms meanwhile: a check that cannot get a socket is our
    shortage, not the backend's, so the backend is never marked down."""
    b, m, accepted, refusal, kept, limit = fill_to_cap(
        env, health={"command": "ping", "interval_ms": 100, "timeout_ms": 500, "fall": 2,
                     "rise": 1})
    set_nofile(b.pid, b.fd_count() - 1)
    log0 = len(b.stderr())
    cpu0 = bt.cpu_seconds(b.pid)
    socks = flood(b.path, 40)
    time.sleep(2.0)
    cpu = bt.cpu_seconds(b.pid) - cpu0
    log = b.stderr()[log0:]
    assert cpu < min(0.5 * bt.SLOW, 1.0), \
        "brokerd used %.2f s of CPU in 2 s while out of descriptors" % cpu
    assert len(log) < 10000, "%d bytes of log in 2 s out of descriptors" % len(log)
    assert "out of file descriptors" in log, log[-1000:]
    assert "health check skipped" in log, log[-1000:]
    assert "backend is down" not in b.stderr(), "EMFILE on our side marked the backend down"
    set_nofile(b.pid, limit + 64)
    t0 = time.monotonic()
    for s in socks:
        s.close()

    def served():
        try:
            with bt.Client(b.path, timeout=t(2)) as c:
                return c.call(1, "echo", {"after": "emfile"}).get("status") == "success"
        except (OSError, AssertionError):
            return False
    assert bt.wait_for(served, t(5), step=0.05), "not serving after the limit was raised"
    dt = time.monotonic() - t0
    assert dt < 1.5 * bt.SLOW, "served %.2f s after the limit was raised" % dt
    c = _as_client(accepted[0])
    assert_success(c.call(2, "echo", {"still": True}), "a client from before")


if __name__ == "__main__":
    sys.exit(bt.run_cases(CASES, "brokerd descriptor exhaustion tests (issue 9)"))
