#!/usr/bin/env python3
"""brokerd in front of a real Blender (issue 13, "Real Blender in the test suite").

Design note. Blender runs tests/blender/addon_server.py, the project's own
add-on-protocol server (TCP 127.0.0.1, one JSON object in, one out, bpy work
on Blender's main thread), in two modes, each a suite of its own:
  background  `blender -b --factory-startup --python addon_server.py`: the
              script's main body drains the command queue (timers never fire
              under -b);
  gui         `xvfb-run -a blender --factory-startup --python ...`: the
              command queue is drained by a bpy.app.timers callback, as the
              add-on does; Blender's event loop picks it up about every 5 ms.
One Blender and one brokerd per mode (Blender starts in 1-2 s; a GUI one
then needs a few seconds of warm-up before a command takes milliseconds),
cases in order, the kill/restart case last. brokerd gets Blender as its only
backend ("127.0.0.1:PORT", framing json, pool_size 2, health checks every
300 ms) and a compat_listen on TCP; every case checks the native NDJSON
socket and the compat listener (a raw add-on-protocol client) against
Blender's own direct answer.

What "byte for byte" means here: brokerd forwards the backend's `result`
value as the bytes it read (it scans, never re-serialises it), on both
sockets and from the cache; so the result's bytes through the broker equal
the result's bytes in Blender's own reply exactly, escapes included
(Blender's json.dumps writes non-ASCII as \\uXXXX; a case with a non-ASCII
object name checks that). The envelope is the broker's: compact
separators, plus "id" and "cached" on the native socket. What brokerd does
re-serialise is the request's params (non-ASCII as \\uXXXX escapes, so the
add-on's 8192-byte reads cannot split a character): Blender decodes them to
the same value, which the non-ASCII case also shows.

Cases (each mode):
  scene_info_matches_direct     result bytes = Blender's, native (uncached, cached) and compat
  object_info_and_errors        get_object_info("Cube") bytes; Blender's own errors -> backend_error
  non_ascii_names               a non-ASCII object name both ways: params escaped, result verbatim
  write_invalidates_cache       a cached scene, execute_code adds an object, the next read shows it
  dangerous_script_forbidden    os.system & co: forbidden, and Blender never received them
  sixteen_clients_pool_of_two   16 concurrent clients (8 native, 8 compat) over pool_size 2
  kill_mid_request_and_recover  SIGKILL Blender during a slow execute_code: unavailable, brokerd
                                stays up; Blender restarted on the same port: served again

Exit 77 (ctest SKIP) when blender cannot be run at all; a mode that cannot
run here (no xvfb-run, no X display) is reported as SKIP and the other mode
still has to pass.

Usage: test_blender.py --bin BUILD/bin [--mode both|background|gui] [-k NAME] [--keep] [-v]
Mutant checks (each must make cases fail, not skip): --backend-port 1 (the
broker pointed at a wrong port), --override '{"scripts": {"policy": "allow"}}',
--override '{"backend": {"read_only": ["get_*", "execute_code"]}}'.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import brokertest as bt  # noqa: E402
from brokertest import t, short, assert_success, assert_code  # noqa: E402
from test_compat import AddonClient, free_port  # noqa: E402

SERVER = os.path.join(HERE, "..", "blender", "addon_server.py")
SKIP = 77
READY = re.compile(r"addon_server: ready host=(\S+) port=(\d+) pid=(\d+) mode=(\w+)")


# ---------------------------------------------------------------- Blender

class Blender:
    """Blender running addon_server.py; pid is Blender's own (under
    xvfb-run, the Proc is the xvfb-run script)."""

    def __init__(self, env, mode, port=0, name=None):
        self.env = env
        self.mode = mode
        argv = ["blender", "--factory-startup"]
        if mode == "background":
            argv = ["blender", "-b", "--factory-startup"]
        argv += ["--python", os.path.abspath(SERVER), "--", "--port", str(port)]
        if mode == "gui":
            argv = ["xvfb-run", "-a", "-s", "-screen 0 1280x720x24"] + argv
        penv = dict(os.environ, TMPDIR=env.tmp)  # quit.blend and Blender's temp files
        self.proc = bt.Proc(env, name or "blender-%s-%d" % (mode, len(env.procs)), argv,
                            popen_kw={"env": penv})
        self.pid = None
        self.port = None
        self._wait_ready()

    def _wait_ready(self):
        deadline = time.monotonic() + t(60)
        while time.monotonic() < deadline:
            m = READY.search(self.proc.stdout())
            if m:
                self.port = int(m.group(2))
                self.pid = int(m.group(3))
                return
            if not self.proc.alive():
                raise BlenderDidNotStart(self)
            time.sleep(0.05)
        raise AssertionError("blender not ready within %.0f s: %s"
                             % (t(60), self.output()[-1500:]))

    def output(self):
        return self.proc.stdout() + self.proc.stderr()

    def call_raw(self, typ, params=None, timeout=None):
        """Blender's own answer, bytes, on a fresh direct connection."""
        c = AddonClient(("127.0.0.1", self.port), timeout or t(10))
        try:
            req = {"type": typ}
            if params is not None:
                req["params"] = params
            c.send(req)
            return c.recv_raw(timeout or t(10))
        finally:
            c.close()

    def call(self, typ, params=None, timeout=None):
        return json.loads(self.call_raw(typ, params, timeout))

    def stats(self):
        return assert_success(self.call("server_stats"), "server_stats")

    def received(self, typ):
        return self.stats()["by_type"].get(typ, 0)

    def warm_up(self):
        """A GUI Blender answers in hundreds of ms in its first seconds
        (drawing its first frames in software); wait until it is warm."""
        deadline = time.monotonic() + t(40)
        while True:
            t0 = time.monotonic()
            assert_success(self.call("get_scene_info", timeout=t(20)), "warm-up")
            if time.monotonic() - t0 < 0.05 or time.monotonic() > deadline:
                return

    def blender_alive(self):
        try:
            with open("/proc/%d/cmdline" % self.pid, "rb") as f:
                return b"blender" in f.read()
        except OSError:
            return False

    def kill(self):
        """SIGKILL Blender itself (only the pid its own ready line named)."""
        if self.pid and self.blender_alive():
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(t(15))  # xvfb-run then stops its Xvfb

    def quit(self):
        if self.proc.alive() and self.pid and self.blender_alive():
            try:
                self.call("server_quit", timeout=t(5))
            except (OSError, AssertionError):
                pass
            if self.proc.wait(t(20)) is not None:
                return
        self.kill()
        if self.proc.alive():
            self.proc.kill()


class BlenderDidNotStart(Exception):
    def __init__(self, b):
        self.output = b.output()
        super().__init__("blender (%s) exited %s before ready: %s"
                         % (b.mode, b.proc.proc.returncode, self.output.strip()[-1500:]))


# ---------------------------------------------------------------- broker

def broker_for(env, port, compat_port, override=None):
    """override: {"backend": {...}, KEY: ...} merged into the config (mutant checks)."""
    override = dict(override or {})
    be = bt.backend(env, address="127.0.0.1:%d" % port, framing="json", pool_size=2,
                    max_queue=256, request_timeout_ms=int(15000 * bt.SLOW),
                    idle_timeout_ms=int(15000 * bt.SLOW),
                    health={"interval_ms": 300, "timeout_ms": int(3000 * bt.SLOW),
                            "rise": 1, "fall": 2},
                    breaker={"failures": 3, "open_ms": 200, "max_open_ms": 1000},
                    retry={"max": 1, "backoff_ms": 20})
    be.update(override.pop("backend", {}))
    cfg = bt.broker_config(env, backends=[be], compat_listen="127.0.0.1:%d" % compat_port,
                           cache={"ttl_ms": 30000})
    cfg.update(override)
    b = env.broker(cfg)
    b.compat_addr = ("127.0.0.1", compat_port)
    return b


admin = bt.admin_result


def native_raw(b, req, timeout=None):
    """One request on a fresh native connection: (raw line bytes, parsed)."""
    with b.connect(t(20)) as c:
        c.send(req)
        deadline = time.monotonic() + (timeout or t(20))
        while b"\n" not in c.buf:
            assert c._fill(deadline), "no answer line for %s; have %r" % (short(req), c.buf)
        raw = c.buf.split(b"\n", 1)[0]
    return raw, json.loads(raw)


def compat_raw(b, req, timeout=None):
    c = AddonClient(b.compat_addr, timeout or t(20))
    try:
        c.send(req)
        return c.recv_raw(timeout or t(20))
    finally:
        c.close()


def members(raw):
    """The raw text of each top-level member of a JSON object, as written."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    dec = json.JSONDecoder()
    ws = " \t\r\n"
    i = 0
    while text[i] in ws:
        i += 1
    assert text[i] == "{", text[:100]
    i += 1
    out = {}
    while True:
        while text[i] in ws:
            i += 1
        if text[i] == "}":
            return out
        key, i = dec.raw_decode(text, i)
        while text[i] in ws:
            i += 1
        assert text[i] == ":"
        i += 1
        while text[i] in ws:
            i += 1
        start = i
        _, i = dec.raw_decode(text, i)
        out[key] = text[start:i].encode("utf-8")
        while text[i] in ws:
            i += 1
        if text[i] == ",":
            i += 1


def same_result(direct_raw, via_raw, what):
    """The result member's bytes and value through the broker are Blender's."""
    d, v = members(direct_raw), members(via_raw)
    assert "result" in d, "%s: Blender did not succeed: %s" % (what, short(direct_raw))
    assert "result" in v, "%s: no result through the broker: %s" % (what, short(via_raw))
    assert json.loads(v["result"]) == json.loads(d["result"]), \
        "%s: values differ:\n  direct %s\n  broker %s" % (what, short(d["result"]), short(v["result"]))
    assert v["result"] == d["result"], \
        "%s: same value, other bytes:\n  direct %r\n  broker %r" % (what, d["result"][:300],
                                                                   v["result"][:300])
    return d["result"]


# ---------------------------------------------------------------- cases

CASES = []


def case(fn):
    CASES.append(fn)
    return fn


@case
def scene_info_matches_direct(ctx):
    b, bl = ctx.broker, ctx.blender
    direct = bl.call_raw("get_scene_info")
    assert json.loads(direct)["result"]["object_count"] >= 3, short(direct)
    # uncached: the broker asks Blender
    raw, r = native_raw(b, {"id": 1, "type": "get_scene_info", "cache": False})
    assert_success(r, "get_scene_info through the broker")
    assert r["cached"] is False and r["id"] == 1, short(r)
    same_result(direct, raw, "native uncached")
    # fill the cache, then a hit: still Blender's bytes
    native_raw(b, {"id": 2, "type": "get_scene_info"})
    raw, r = native_raw(b, {"id": 3, "type": "get_scene_info"})
    assert_success(r, "cached get_scene_info")
    assert r["cached"] is True, "second read is a cache hit: %s" % short(r)
    same_result(direct, raw, "native cached")
    # the compat listener: the add-on's envelope (compact), Blender's result bytes
    raw = compat_raw(b, {"type": "get_scene_info"})
    assert set(json.loads(raw)) == {"status", "result"}, short(raw)
    same_result(direct, raw, "compat")
    assert json.loads(raw) == json.loads(direct), "compat answer = Blender's answer, as values"


@case
def object_info_and_errors(ctx):
    b, bl = ctx.broker, ctx.blender
    direct = bl.call_raw("get_object_info", {"name": "Cube"})
    info = json.loads(direct)["result"]
    assert info["name"] == "Cube" and info["type"] == "MESH" and \
        info["mesh"] == {"vertices": 8, "edges": 12, "polygons": 6}, short(info)
    raw, _ = native_raw(b, {"id": "c", "type": "get_object_info", "params": {"name": "Cube"},
                            "cache": False})
    same_result(direct, raw, "native get_object_info")
    same_result(direct, compat_raw(b, {"type": "get_object_info", "params": {"name": "Cube"}}),
                "compat get_object_info")
    # Blender's own errors: backend_error with its message; compat: its answer
    for typ, params, msg in (("get_object_info", {"name": "NoSuchObject"},
                              "Object not found: NoSuchObject"),
                             ("frobnicate", {}, "Unknown command type: frobnicate")):
        direct = bl.call(typ, params)
        assert direct == {"status": "error", "message": msg}, short(direct)
        _, r = native_raw(b, {"id": 9, "type": typ, "params": params})
        assert assert_code(r, "backend_error", typ) == msg, short(r)
        assert json.loads(compat_raw(b, {"type": typ, "params": params})) == direct


@case
def non_ascii_names(ctx):
    b, bl = ctx.broker, ctx.blender
    name = "W\u00fcrfel \u2603 " + ctx.mode
    code = ("m = bpy.data.meshes.new(%r)\no = bpy.data.objects.new(%r, m)\n"
            "bpy.context.scene.collection.objects.link(o)\nprint(o.name)\n") % (name, name)
    # the client writes UTF-8; brokerd sends Blender \\uXXXX escapes; same value
    with b.connect(t(20)) as c:
        c.send(bt.line({"id": 1, "type": "execute_code", "params": {"code": code}},
                       ascii_only=False))
        r = c.recv_one(t(20))
    assert assert_success(r, "execute_code") == {"executed": True, "result": name + "\n"}, short(r)
    direct = bl.call_raw("get_object_info", {"name": name})
    assert b"\\u2603" in direct, "Blender escapes non-ASCII: %r" % direct[:200]
    with b.connect(t(20)) as c:
        c.send(bt.line({"id": 2, "type": "get_object_info", "params": {"name": name}},
                       ascii_only=False))
        deadline = time.monotonic() + t(20)
        while b"\n" not in c.buf:
            assert c._fill(deadline)
        raw = c.buf.split(b"\n", 1)[0]
    same_result(direct, raw, "non-ASCII name, native")
    c = AddonClient(b.compat_addr, t(20))
    c.send(json.dumps({"type": "get_object_info", "params": {"name": name}},
                      ensure_ascii=False).encode())
    same_result(direct, c.recv_raw(t(20)), "non-ASCII name, compat")
    c.close()


def _scene(b, rid, **kw):
    _, r = native_raw(b, dict({"id": rid, "type": "get_scene_info"}, **kw))
    assert_success(r, "get_scene_info")
    return r


@case
def write_invalidates_cache(ctx):
    b, bl = ctx.broker, ctx.blender
    for via in ("native", "compat"):
        probe = "Probe_%s_%s" % (via, ctx.mode)
        code = ("m = bpy.data.meshes.new(%r)\nbpy.context.scene.collection.objects.link("
                "bpy.data.objects.new(%r, m))\nprint(len(bpy.context.scene.objects))") % (probe, probe)
        if via == "native":
            _scene(b, 1)
            before = _scene(b, 2)
            assert before["cached"] is True, "the read is cached: %s" % short(before)
            n0 = before["result"]["object_count"]
            _, r = native_raw(b, {"id": 3, "type": "execute_code", "params": {"code": code}})
            assert assert_success(r)["result"] == "%d\n" % (n0 + 1), short(r)
            after = _scene(b, 4)
            assert after["cached"] is False, "a write invalidated the entry: %s" % short(after)
            scene = after["result"]
        else:
            compat_raw(b, {"type": "get_scene_info"})
            hits0 = admin(b, "cache")["hits"]
            n0 = json.loads(compat_raw(b, {"type": "get_scene_info"}))["result"]["object_count"]
            assert admin(b, "cache")["hits"] == hits0 + 1, "compat read served from the cache"
            r = json.loads(compat_raw(b, {"type": "execute_code", "params": {"code": code}}))
            assert assert_success(r)["result"] == "%d\n" % (n0 + 1), short(r)
            scene = assert_success(json.loads(compat_raw(b, {"type": "get_scene_info"})))
        assert scene["object_count"] == n0 + 1, "%s: %s" % (via, short(scene))
        if n0 < 10:
            assert probe in [o["name"] for o in scene["objects"]], short(scene)
        assert scene == bl.call("get_scene_info")["result"], "the read is Blender's scene now"


@case
def dangerous_script_forbidden(ctx):
    b, bl = ctx.broker, ctx.blender
    marker = os.path.join(ctx.env.tmp, "pwned")
    scripts = [
        "import os\nos.system('touch %s')" % marker,
        "import os\nos . system ('touch %s')" % marker,
        "__import__('os').system('touch %s')" % marker,
        "import subprocess\nsubprocess.run(['touch', %r])" % marker,
        "open(%r, 'w').write('x')" % marker,
    ]
    seen0 = bl.received("execute_code")
    for i, code in enumerate(scripts):
        _, r = native_raw(b, {"id": i, "type": "execute_code", "params": {"code": code}})
        assert_code(r, "forbidden", code)
        r = json.loads(compat_raw(b, {"type": "execute_code", "params": {"code": code}}))
        assert r["status"] == "error" and r["message"].startswith("forbidden: "), short(r)
    assert bl.received("execute_code") == seen0, "Blender never received a refused script"
    assert not os.path.exists(marker), "a refused script ran"
    # the control: a harmless script does reach Blender
    _, r = native_raw(b, {"id": 99, "type": "execute_code", "params": {"code": "print(6*7)"}})
    assert assert_success(r)["result"] == "42\n", short(r)
    assert bl.received("execute_code") == seen0 + 1


@case
def sixteen_clients_pool_of_two(ctx):
    b, bl = ctx.broker, ctx.blender
    seen0 = bl.received("execute_code")
    n, rounds = 16, 3
    barrier = threading.Barrier(n)
    errors = []
    answered = [0] * n

    def client(i):
        try:
            barrier.wait(t(20))
            for k in range(rounds):
                code = "import time\ntime.sleep(0.01)\nprint(%d)" % (i * 100 + k)
                want = "%d\n" % (i * 100 + k)
                if i % 2 == 0:
                    _, r = native_raw(b, {"id": k, "type": "execute_code",
                                          "params": {"code": code}}, t(60))
                    assert r["id"] == k and assert_success(r)["result"] == want, short(r)
                    _, r = native_raw(b, {"id": "o", "type": "get_object_info",
                                          "params": {"name": "Cube"}, "cache": False}, t(60))
                    assert assert_success(r)["name"] == "Cube", short(r)
                else:
                    r = json.loads(compat_raw(b, {"type": "execute_code",
                                                  "params": {"code": code}}, t(60)))
                    assert assert_success(r)["result"] == want, short(r)
                    r = json.loads(compat_raw(b, {"type": "get_object_info",
                                                  "params": {"name": "Cube"}}, t(60)))
                    assert assert_success(r)["name"] == "Cube", short(r)
                answered[i] += 1
        except Exception as e:  # noqa: BLE001
            errors.append("client %d: %s" % (i, e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(t(120))
    assert not errors, "; ".join(errors[:4])
    assert answered == [rounds] * n, answered
    assert bl.received("execute_code") == seen0 + n * rounds, "each write reached Blender once"
    pool = admin(b, "pool")["backends"][0]
    assert pool["peak_open"] <= 2, "pool_size 2 held: %s" % short(pool)


@case
def kill_mid_request_and_recover(ctx):
    b, bl = ctx.broker, ctx.blender
    seen0 = bl.received("execute_code")
    failures0 = admin(b, "health")["backends"][0]["failures"]
    slow = "import time\ntime.sleep(2)\nprint('late')"
    out = {}

    def native():
        out["native"] = native_raw(b, {"id": "slow", "type": "execute_code",
                                       "params": {"code": slow}}, t(30))[1]

    def compat():
        out["compat"] = json.loads(compat_raw(b, {"type": "execute_code",
                                                   "params": {"code": slow}}, t(30)))
    threads = [threading.Thread(target=native), threading.Thread(target=compat)]
    for th in threads:
        th.start()
    # both reached Blender (one runs, one waits for the main thread)
    assert bt.wait_for(lambda: bl.received("execute_code") >= seen0 + 2, t(10)), \
        "the slow scripts reached Blender"
    time.sleep(0.2)
    t_kill = time.monotonic()
    bl.kill()
    for th in threads:
        th.join(t(30))
    assert "native" in out and "compat" in out, "both answered: %s" % short(out)
    msg = assert_code(out["native"], "unavailable", "native request when Blender died")
    assert out["native"]["id"] == "slow", short(out["native"])
    assert "blender" in msg, msg
    assert out["compat"]["status"] == "error" and \
        out["compat"]["message"].startswith("unavailable: "), short(out["compat"])
    took = time.monotonic() - t_kill
    assert took < t(3), "answered %.2f s after the kill" % took
    # brokerd stays up and answers at once while Blender is down
    assert b.alive(), "brokerd died with Blender: %s" % b.stderr()[-1000:]
    _, r = native_raw(b, {"id": "down", "type": "get_object_info", "params": {"name": "Cube"},
                          "cache": False})
    assert_code(r, "unavailable", "while Blender is down")
    # the same port again: the broker finds it by itself (health checks)
    t_start = time.monotonic()
    ctx.blender = bl = Blender(ctx.env, ctx.mode, port=bl.port)
    if ctx.mode == "gui":
        bl.warm_up()
    t_up = time.monotonic()
    deadline = t_up + t(20)
    while True:
        _, r = native_raw(b, {"id": "up", "type": "get_object_info", "params": {"name": "Cube"},
                              "cache": False})
        if r["status"] == "success" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert assert_success(r, "after Blender came back")["name"] == "Cube"
    ctx.note("Blender up in %.1f s; brokerd serving %.2f s after that"
             % (t_up - t_start, time.monotonic() - t_up))
    # the failed write invalidated the old scene: a cached read is the new Blender's
    same_result(bl.call_raw("get_scene_info"),
                native_raw(b, {"id": "s", "type": "get_scene_info"})[0], "after restart")
    same_result(bl.call_raw("get_object_info", {"name": "Cube"}),
                compat_raw(b, {"type": "get_object_info", "params": {"name": "Cube"}}),
                "compat after restart")
    assert bt.wait_for(lambda: admin(b, "health")["backends"][0]["state"] == "up", t(5)), \
        "health says up again: %s" % short(admin(b, "health"))
    h = admin(b, "health")["backends"][0]
    assert h["failures"] > failures0, "the health checks saw Blender down: %s" % short(h)
    assert b.alive()


# ---------------------------------------------------------------- runner

class Ctx:
    def __init__(self, env, mode):
        self.env = env
        self.mode = mode
        self.blender = None
        self.broker = None
        self.notes = []

    def note(self, s):
        self.notes.append(s)


def can_run_blender():
    """None, or why blender cannot be run here."""
    if not shutil.which("blender"):
        return "blender not found (scripts/deps.sh test installs Debian's blender)"
    try:
        p = subprocess.run(["blender", "-b", "--factory-startup", "--python-expr",
                            "import bpy; print('BPY-OK', bpy.app.version_string)"],
                           capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "blender -b does not run: %s" % e
    if "BPY-OK" not in p.stdout:
        return "blender -b does not run: exit %d: %s" % (p.returncode,
                                                          (p.stdout + p.stderr)[-500:])
    return None


GUI_CANNOT_RUN = ("cannot open display", "Unable to open a display", "GLX", "OpenGL",
                  "xvfb-run: error", "Xvfb failed")


def run_mode(args, mode):
    """(passed, failed, skipped_reason)."""
    if mode == "gui" and not shutil.which("xvfb-run"):
        return 0, 0, "xvfb-run not found (scripts/deps.sh test installs xvfb and xauth)"
    env = bt.Env(args.bin, "blender-" + mode, keep=args.keep)
    ctx = Ctx(env, mode)
    passed = failed = 0
    failed_any = False
    try:
        t0 = time.monotonic()
        try:
            ctx.blender = Blender(env, mode)
        except BlenderDidNotStart as e:
            if mode == "gui" and any(s in e.output for s in GUI_CANNOT_RUN):
                return 0, 0, "Blender's GUI cannot run under xvfb-run here: %s" \
                    % e.output.strip()[-300:]
            raise
        if mode == "gui":
            ctx.blender.warm_up()
        port = args.backend_port or ctx.blender.port
        ctx.broker = broker_for(env, port, free_port(), args.override)
        print("%s: Blender %s on port %d ready in %.1f s" % (mode, mode, ctx.blender.port,
                                                             time.monotonic() - t0), flush=True)
        for fn in CASES:
            if args.k and not any(k in fn.__name__ for k in args.k):
                continue
            t1 = time.monotonic()
            ctx.notes = []
            try:
                fn(ctx)
                passed += 1
                print("PASS %s[%s] (%.2fs)%s" % (fn.__name__, mode, time.monotonic() - t1,
                                                  "".join("; " + n for n in ctx.notes)),
                      flush=True)
            except Exception as e:  # noqa: BLE001 - report every failure, keep going
                failed += 1
                failed_any = True
                if args.v:
                    traceback.print_exc()
                reason = ("%s: %s" % (type(e).__name__, e)).replace("\n", " | ")[:3000]
                print("FAIL %s[%s]: %s (%.2fs)" % (fn.__name__, mode, reason,
                                                    time.monotonic() - t1), flush=True)
                if not ctx.blender.proc.alive():  # a case killed it and failed to restart
                    ctx.blender = Blender(env, mode, port=ctx.blender.port)
        ctx.blender.quit()
        env.finish()
    except Exception as e:  # noqa: BLE001
        failed += 1
        failed_any = True
        if args.v:
            traceback.print_exc()
        print("FAIL setup[%s]: %s: %s" % (mode, type(e).__name__,
                                          str(e).replace("\n", " | ")[:3000]), flush=True)
    finally:
        if ctx.blender:
            ctx.blender.quit()
        kept = env.cleanup(failed_any)
        if kept:
            print("%s: files kept in %s" % (mode, kept), flush=True)
    return passed, failed, None


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "..", "build", "bin"))
    ap.add_argument("--mode", choices=("both", "background", "gui"), default="both")
    ap.add_argument("-k", action="append", help="run only cases whose name contains this")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs")
    ap.add_argument("-v", action="store_true", help="print tracebacks of failures")
    # mutant checks: Blender's port given to the broker; a config override
    ap.add_argument("--backend-port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--override", type=json.loads, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    bt.configure(args.bin)
    if not os.access(os.path.join(args.bin, "brokerd"), os.X_OK):
        print("FAIL setup: brokerd not built in %s" % args.bin)
        return 1
    why = can_run_blender()
    if why:
        print("SKIP: %s" % why, flush=True)
        return SKIP
    modes = ["background", "gui"] if args.mode == "both" else [args.mode]
    passed = failed = 0
    skipped = []
    t0 = time.monotonic()
    for mode in modes:
        p, f, why = run_mode(args, mode)
        passed += p
        failed += f
        if why:
            skipped.append(mode)
            print("SKIP %s mode: %s" % (mode, why), flush=True)
    print("total %.1fs, SLOW=%g" % (time.monotonic() - t0, bt.SLOW), flush=True)
    print("%d passed, %d failed%s" % (passed, failed,
                                      ", skipped: " + " ".join(skipped) if skipped else ""),
          flush=True)
    if failed:
        return 1
    if len(skipped) == len(modes):
        return SKIP
    return 0


if __name__ == "__main__":
    sys.exit(main())
