#!/usr/bin/env python3
"""Deployment: systemd socket activation and readiness, the HTTP metrics
endpoint, and the installed tree, against the real brokerd.

  activation_by_path             inherited client and admin sockets matched by path; served; not unlinked
  activation_by_name             LISTEN_FDNAMES wins over paths; a socket brokerd binds itself is still its own
  activation_refuses_wrong_fds   a TCP socket, a non-listening one, a datagram one, a left-over one: exit 2 naming the fd
  activation_not_for_us          LISTEN_PID of another process: the fds are ignored, brokerd binds
  notify_ready_and_stopping      READY=1 then STOPPING=1 on NOTIFY_SOCKET, a path and an abstract name
  metrics_http_serves            GET /metrics (urllib, strict parse), HEAD, 404, 405, 400, 431
  metrics_http_slow_clients      silent clients get 408 after the timeout and block neither scrapes nor the admin socket
  metrics_http_activated         a TCP socket passed as "metrics" is served; metrics_listen must be host:port
  install_tree                   cmake --install: binaries run, example config loads, man pages, units verify

Usage: test_deploy.py --bin BUILD/bin [-k NAME] [--keep] [-v]
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokertest as bt  # noqa: E402
from brokertest import t, assert_success  # noqa: E402
from test_admin import Admin, parse_prometheus  # noqa: E402

CASES, case = bt.case_list()
SRC = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def unix_listener(path, listen=True, kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_UNIX, kind)
    s.bind(path)
    if listen:
        s.listen(16)
    return s


def tcp_listener(port=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(16)
    return s


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def activation(socks, names=None, pid_of_child=True):
    """Popen keywords that start the child as systemd does: socks at fds 3,
    4, ...; LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID (the child's own pid,
    set after fork) in its environment."""
    fds = [s.fileno() for s in socks]
    n = len(fds)

    def pre():
        tmp = [os.dup(f) for f in fds]  # above every target: no clobbering
        for i, f in enumerate(tmp):
            os.dup2(f, 3 + i)  # dup2 clears close-on-exec on the target
            os.close(f)
        os.environ["LISTEN_FDS"] = str(n)
        os.environ["LISTEN_PID"] = str(os.getpid() if pid_of_child else 1)
        if names is not None:
            os.environ["LISTEN_FDNAMES"] = ":".join(names)
    return {"preexec_fn": pre, "pass_fds": tuple(range(3, 3 + n))}


def start_refused(env, cfg, kw, name):
    """brokerd that must refuse to start: (exit code, stderr)."""
    b = bt.Broker(env, cfg, name=name, wait_ready=False, popen_kw=kw)
    b.expect_exit0 = False
    rc = b.wait(t(10))
    assert rc is not None, "%s did not exit: %s" % (name, b.stderr()[-500:])
    return rc, b.stderr()


@case
def activation_by_path(env):
    env.mockd()
    cfg = bt.broker_config(env)
    client = unix_listener(cfg["listen"])
    admin = unix_listener(cfg["admin_listen"])
    os.chmod(cfg["listen"], 0o600)
    b = env.broker(cfg, popen_kw=activation([client, admin]))
    st = b.stderr()
    assert st.count('"msg":"using the socket systemd passed"') == 2, st
    with b.connect() as c:
        assert_success(c.call(1, "echo", {"x": 1}), "a client on the inherited socket")
    a = Admin(cfg["admin_listen"])
    # the client above just closed: the broker counts it gone once it sees EOF
    assert bt.wait_for(lambda: a.result("stats")["clients"] == 0, t(5)), a.result("stats")
    a.close()
    # The fds are close-on-exec in brokerd, and it keeps no fd 3/4 twice.
    fds = b.fds()
    assert sum(1 for v in fds.values() if v.startswith("socket:")) >= 2, fds
    assert b.stop() == 0
    for p in (cfg["listen"], cfg["admin_listen"]):
        assert os.path.exists(p), "brokerd unlinked %s, a socket it did not create" % p
    # systemd's copy still works: a client connects (and waits in its backlog).
    s = socket.socket(socket.AF_UNIX)
    s.connect(cfg["listen"])
    s.close()
    client.close()
    admin.close()


@case
def activation_by_name(env):
    """Names beat paths: the client socket named "client" sits elsewhere than
    `listen` says; the admin socket is not passed, so brokerd binds it and
    removes it at exit, as always."""
    env.mockd()
    cfg = bt.broker_config(env)
    real = os.path.join(env.tmp, "elsewhere.sock")
    client = unix_listener(real)
    b = env.broker(cfg, popen_kw=activation([client], names=["client"]))
    with bt.Client(real) as c:
        assert_success(c.call(1, "echo", {}), "a client on the named socket")
    assert not os.path.exists(cfg["listen"]), "brokerd bound listen although systemd passed it"
    a = Admin(cfg["admin_listen"])
    assert a.result("stats")["accepting"] is True
    a.close()
    assert b.stop() == 0
    assert os.path.exists(real), "brokerd unlinked the named socket systemd passed"
    assert not os.path.exists(cfg["admin_listen"]), "brokerd left its own admin socket behind"
    client.close()


@case
def activation_refuses_wrong_fds(env):
    cfg = bt.broker_config(env)
    tcp = tcp_listener()
    rc, err = start_refused(env, cfg, activation([tcp], names=["client"]), "tcp")
    assert rc == 2 and "fd 3" in err and "TCP" in err and "needs a Unix socket" in err, (rc, err)
    assert not os.path.exists(cfg["listen"]), "socket file left after a refused start"
    tcp.close()
    idle = unix_listener(cfg["listen"], listen=False)  # bound, not listening
    rc, err = start_refused(env, cfg, activation([idle]), "idle")
    assert rc == 2 and "fd 3" in err and "not listening" in err, (rc, err)
    idle.close()
    os.unlink(cfg["listen"])
    dgram = unix_listener(cfg["listen"], listen=False, kind=socket.SOCK_DGRAM)
    rc, err = start_refused(env, cfg, activation([dgram]), "dgram")
    assert rc == 2 and "fd 3" in err and "not a stream socket" in err, (rc, err)
    dgram.close()
    os.unlink(cfg["listen"])
    client = unix_listener(cfg["listen"])
    stray = unix_listener(os.path.join(env.tmp, "stray.sock"))
    rc, err = start_refused(env, cfg, activation([client, stray]), "stray")
    assert rc == 2 and "fd 4" in err and "stray.sock" in err and "no listener" in err, (rc, err)
    assert os.path.exists(cfg["listen"]), "a refused start unlinked the inherited socket"
    assert not os.path.exists(cfg["admin_listen"]), "admin socket left after a refused start"
    with open(os.path.join(env.tmp, "plain.txt"), "w") as f:
        rc, err = start_refused(env, cfg, activation([f]), "file")
    assert rc == 2 and "fd 3" in err and "not a socket" in err, (rc, err)
    client.close()
    stray.close()


@case
def activation_not_for_us(env):
    """LISTEN_PID names another process (the variables leaked through a
    parent): brokerd leaves the fds alone and binds its own sockets."""
    env.mockd()
    cfg = bt.broker_config(env)
    other = unix_listener(os.path.join(env.tmp, "other.sock"))
    b = env.broker(cfg, popen_kw=activation([other], names=["client"], pid_of_child=False))
    assert "systemd passed" not in b.stderr()
    with b.connect() as c:
        assert_success(c.call(1, "echo", {}))
    assert b.stop() == 0
    assert not os.path.exists(cfg["listen"]), "brokerd's own socket file not removed"
    other.close()


def notify_listener(addr):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(addr)
    s.settimeout(t(10))
    return s


@case
def notify_ready_and_stopping(env):
    env.mockd()
    for label, addr, var in (("path", os.path.join(env.tmp, "notify"), None),
                             ("abstract", "\0brokerd-test-%d" % os.getpid(),
                              "@brokerd-test-%d" % os.getpid())):
        n = notify_listener(addr)
        cfg = bt.broker_config(env, listen=os.path.join(env.tmp, "%s.sock" % label),
                               admin_listen=os.path.join(env.tmp, "%s.admin.sock" % label))
        environ = dict(os.environ, NOTIFY_SOCKET=var or addr)
        b = bt.Broker(env, cfg, name="notify-" + label, wait_ready=False,
                      popen_kw={"env": environ})
        msg = n.recv(4096)
        assert msg == b"READY=1", "%s: %r" % (label, msg)
        # ready means ready: a client is served at once
        with b.connect() as c:
            assert_success(c.call(1, "echo", {}), label + ": a client right after READY=1")
        b.signal(signal.SIGTERM)
        msg = n.recv(4096)
        assert msg == b"STOPPING=1", "%s: %r" % (label, msg)
        assert b.wait(t(10)) == 0
        n.close()


def http(port, raw, timeout=None):
    """Send raw bytes, read to EOF: (status, headers dict, body bytes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout or t(10))
    s.sendall(raw)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    assert lines[0].startswith("HTTP/1.1 "), lines[0]
    hdrs = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    assert int(hdrs["content-length"]) == len(body) or raw.startswith(b"HEAD"), (hdrs, body)
    assert hdrs.get("connection") == "close", hdrs
    return status, hdrs, body


def metrics_broker(env, port, **kw):
    env.mockd()
    cfg = bt.broker_config(env, metrics_listen="127.0.0.1:%d" % port)
    return env.broker(cfg, **kw)


@case
def metrics_http_serves(env):
    port = free_port()
    b = metrics_broker(env, port)
    with b.connect() as c:
        for i in range(3):
            assert_success(c.call(i, "echo", {}))
    url = "http://127.0.0.1:%d/metrics" % port
    with urllib.request.urlopen(url, timeout=t(10)) as r:
        assert r.status == 200
        ctype = r.headers["Content-Type"]
        assert ctype.startswith("text/plain; version=0.0.4"), ctype
        text = r.read().decode()
    fams = parse_prometheus(text)
    ok = dict(fams["brokerd_backend_ok_total"]["samples"])
    assert ok['brokerd_backend_ok_total{backend="blender"}'] == 3, ok
    a = Admin(b.cfg["admin_listen"])
    admin_fams = parse_prometheus(a.result("metrics")["text"])
    a.close()
    assert set(fams) == set(admin_fams), "HTTP and admin metrics differ in families"
    with urllib.request.urlopen(url + "?x=1", timeout=t(10)) as r:
        assert r.status == 200
    for path, want in (("/", 404), ("/metricsx", 404), ("/metrics/", 404)):
        try:
            urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=t(10))
            raise AssertionError("%s answered 200" % path)
        except urllib.error.HTTPError as e:
            assert e.code == want, (path, e.code)
    try:
        urllib.request.urlopen(urllib.request.Request(url, data=b"x", method="POST"),
                               timeout=t(10))
        raise AssertionError("POST answered 200")
    except urllib.error.HTTPError as e:
        assert e.code == 405 and "GET" in e.headers.get("Allow", ""), (e.code, e.headers)
    st, h, body = http(port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert st == 200 and body == b"" and int(h["content-length"]) > 1000, (st, h, body[:100])
    st, h, body = http(port, b"GET /metrics HTTP/1.0\n\n")
    assert st == 200 and b"brokerd_uptime_seconds" in body, st
    for bad in (b"GET /metrics\r\n\r\n", b"GET  /metrics HTTP/1.1\r\n\r\n",
                b"GET metrics HTTP/1.1\r\n\r\n", b"GET /metrics HTTP/2.0\r\n\r\n",
                b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
                b"GET /metrics HTTP/1.1\r\n folded: x\r\n\r\n",
                b"G(T /metrics HTTP/1.1\r\n\r\n", b"\r\n\r\n",
                b"GET /metrics HTTP/1.1\r\nHost: x"):  # cut short (then EOF)
        s = socket.create_connection(("127.0.0.1", port), timeout=t(10))
        s.sendall(bad)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        assert data.startswith(b"HTTP/1.1 400 "), (bad, data[:80])
    st, _, _ = http(port, b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n")
    assert st == 431, st
    st, _, _ = http(port, b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 7000 + b"\r\n\r\n")
    assert st == 200, st


@case
def metrics_http_slow_clients(env):
    """Silent HTTP clients (half a request, then nothing): scrapes and the
    admin socket are served meanwhile, each silent one gets 408 once the
    5 s read timeout is over, and the slots come back."""
    port = free_port()
    b = metrics_broker(env, port)
    slow = []
    for _ in range(4):
        s = socket.create_connection(("127.0.0.1", port), timeout=t(15))
        s.sendall(b"GET /metr")
        slow.append(s)
    t0 = time.monotonic()
    a = Admin(b.cfg["admin_listen"])
    for _ in range(5):
        t1 = time.monotonic()
        assert a.result("stats")["uptime_ms"] >= 0
        st, _, _ = http(port, b"GET /metrics HTTP/1.1\r\n\r\n", timeout=t(2))
        assert st == 200 and time.monotonic() - t1 < t(1), "a scrape waited behind slow clients"
    a.close()
    for s in slow:
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        assert data.startswith(b"HTTP/1.1 408 "), data[:80]
    waited = time.monotonic() - t0
    assert 4.0 < waited < t(10), "408 after %.1f s, want ~5 s" % waited
    # more clients than slots: the extra one is told so, the rest served
    many = [socket.create_connection(("127.0.0.1", port), timeout=t(15)) for _ in range(17)]
    time.sleep(0.3)
    got = []
    for s in many:
        # The one refused got its 503 at accept: writing to it now could
        # reset the connection before its answer is read.
        s.setblocking(False)
        try:
            early = s.recv(64, socket.MSG_PEEK)
        except BlockingIOError:
            early = b""
        s.settimeout(t(15))
        if not early:
            s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
    for s in many:
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        s.close()
        got.append(data[:12])
    assert got.count(b"HTTP/1.1 200") == 16 and got.count(b"HTTP/1.1 503") == 1, got


@case
def metrics_http_activated(env):
    port = free_port()
    m = tcp_listener(port)
    b = metrics_broker(env, free_port(), popen_kw=activation([m], names=["metrics"]))
    st, h, body = http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert st == 200 and b"brokerd_clients" in body, st
    assert b.stop() == 0
    m.close()
    cfgp = os.path.join(env.tmp, "unix-metrics.json")
    with open(cfgp, "w") as f:
        json.dump({"metrics_listen": "unix:/tmp/m.sock"}, f)
    p = subprocess.run([os.path.join(env.bindir, "brokerd"), "--config", cfgp, "--check-config"],
                       capture_output=True, text=True, timeout=t(10))
    assert p.returncode == 2 and "metrics_listen" in p.stderr and "host:port" in p.stderr, \
        (p.returncode, p.stderr)


@case
def install_tree(env):
    """cmake --install into a temp prefix: every file in place, the installed
    brokerd runs and accepts the installed example config, the man pages
    format without a warning, the units pass systemd-analyze verify."""
    build = os.path.dirname(env.bindir)
    prefix = os.path.join(env.tmp, "prefix")
    p = subprocess.run(["cmake", "--install", build, "--prefix", prefix], capture_output=True,
                       text=True, timeout=t(120))
    assert p.returncode == 0, p.stdout + p.stderr
    want = ["bin/brokerd", "bin/brokerctl", "lib/systemd/system/brokerd.service",
            "lib/systemd/system/brokerd.socket", "lib/systemd/system/brokerd-admin.socket",
            "lib/sysusers.d/brokerd.conf", "share/doc/brokerd/brokerd.example.json",
            "etc/brokerd/brokerd.json", "share/man/man8/brokerd.8", "share/man/man1/brokerctl.1"]
    missing = [w for w in want if not os.path.isfile(os.path.join(prefix, w))]
    assert not missing, "not installed: %s" % missing
    brokerd = os.path.join(prefix, "bin", "brokerd")
    p = subprocess.run([brokerd, "--version"], capture_output=True, text=True, timeout=t(10))
    assert p.returncode == 0 and p.stdout.startswith("brokerd "), (p.returncode, p.stdout)
    p = subprocess.run([os.path.join(prefix, "bin", "brokerctl"), "--help"],
                       capture_output=True, text=True, timeout=t(10))
    assert p.returncode == 0, p.stderr
    for cfg in ("share/doc/brokerd/brokerd.example.json", "etc/brokerd/brokerd.json"):
        p = subprocess.run([brokerd, "--config", os.path.join(prefix, cfg), "--check-config"],
                           capture_output=True, text=True, timeout=t(10))
        assert p.returncode == 0 and "is valid" in p.stdout, (cfg, p.stdout, p.stderr)
    unitdir = os.path.join(prefix, "lib", "systemd", "system")
    with open(os.path.join(unitdir, "brokerd.service")) as f:
        svc = f.read()
    assert "ExecStart=%s --config %s" % (brokerd, os.path.join(prefix, "etc/brokerd/brokerd.json")) \
        in svc, "ExecStart does not name the installed binary and config:\n" + svc
    for page in ("share/man/man8/brokerd.8", "share/man/man1/brokerctl.1"):
        p = subprocess.run(["groff", "-man", "-ww", "-z", os.path.join(prefix, page)],
                           capture_output=True, text=True, timeout=t(20))
        assert p.returncode == 0 and p.stderr == "", "%s: %s" % (page, p.stderr)
        p = subprocess.run(["man", "--warnings", "-l", os.path.join(prefix, page)],
                           capture_output=True, text=True, timeout=t(20),
                           env=dict(os.environ, MANPAGER="cat", MANWIDTH="80"))
        assert p.returncode == 0 and p.stderr == "", "%s: %s" % (page, p.stderr)
    units = [os.path.join(unitdir, u) for u in ("brokerd.service", "brokerd.socket",
                                                 "brokerd-admin.socket")]
    p = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True,
                       text=True, timeout=t(60), env=dict(os.environ, SYSTEMD_LOG_COLOR="0"))
    problems = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.strip()]
    assert p.returncode == 0 and not problems, "systemd-analyze verify:\n" + "\n".join(problems)


if __name__ == "__main__":
    sys.exit(bt.run_cases(CASES, "brokerd deployment: systemd, metrics over HTTP, install"))
