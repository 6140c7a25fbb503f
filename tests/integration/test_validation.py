#!/usr/bin/env python3
"""Parameter validation and script screening (issue 10), against the real
brokerd and mockd: each hostile input gets one clear error, never reaches
the backend, and does not disturb other clients.

  hostile_params_never_reach_backend  one row per rule: the code, the JSON path in the message,
                                      and mockd saw none of them; the same commands with good
                                      params go through
  scripts_follow_the_policy           deny_dangerous refuses os.system naming the rule, passes a
                                      bpy script; a reload to deny_all / allow changes that
  paths_stay_inside_allowed_roots     paths.allowed_roots bounds get_viewport_screenshot's filepath
  hostile_flood_does_not_disturb      one client's 2000 hostile lines, each answered once, while
                                      another client's requests are served

Usage: test_validation.py --bin BUILD/bin [-k NAME] [--keep] [-v]
"""
import json
import os
import socket
import sys
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokertest as bt  # noqa: E402
from brokertest import t, request, short, assert_success, assert_code  # noqa: E402,F401

CASES, case = bt.case_list()

HOSTILE = [
    ("create_object", {"location": [1, 2]}, "invalid_params", "params.location: 2 numbers"),
    ("create_object", {"scale": [1, 2, "x"]}, "invalid_params", "params.scale[2]: not a number"),
    ("set_material", {"object_name": "Cube", "color": [1.5, 0, 0]}, "invalid_params",
     "params.color[0]: 1.5 is outside [0, 1]"),
    ("get_object_info", {"name": "\x1b]0;pwned\x07Cube"}, "invalid_params",
     "params.name: control character at byte 0"),
    ("get_object_info", {"name": "x" * 64}, "invalid_params", "params.name: longer than 63"),
    ("get_object_info", {}, "invalid_params", "params.name: missing"),
    ("delete_object", {"name": 7}, "invalid_params", "params.name: a number, expected a string"),
    ("get_viewport_screenshot", {"filepath": "/tmp/../../etc/cron.d/x"}, "invalid_params",
     "params.filepath: a \"..\" segment"),
    ("get_viewport_screenshot", {"filepath": "/tmp/a\u0000.png"}, "invalid_params",
     "params.filepath: contains a NUL byte"),
    ("search_sketchfab_models", {"query": "car\"; DROP TABLE"}, "invalid_params",
     "params.query: '\"' is not allowed"),
    ("download_polyhaven_asset", {"asset_id": "../../x", "asset_type": "hdris"},
     "invalid_params", "params.asset_id: only letters"),
    ("execute_code", {"code": "import os\nos . system('id')"}, "forbidden", "execute_code refused"),
    ("execute_code", {"code": "getattr(__import__('o'+'s'), 'system')('id')"}, "forbidden",
     "execute_code refused"),
    ("execute_code", {"code": "__builtins__['ex'+'ec']('1')"}, "forbidden", "execute_code refused"),
]

GOOD = [
    ("create_object", {"type": "CUBE", "location": [0, 0, 1], "scale": [1, 1, 1]}),
    ("set_material", {"object_name": "Cube", "color": [0.2, 0.4, 0.6, 1.0]}),
    ("get_object_info", {"name": "Cube"}),
    ("get_viewport_screenshot", {"filepath": "/tmp/shot.png", "max_size": 800}),
    ("search_sketchfab_models", {"query": "  red   sports car "}),
    ("download_polyhaven_asset", {"asset_id": "rock_01", "asset_type": "textures"}),
    ("execute_code", {"code": "import bpy\nbpy.ops.mesh.primitive_cube_add(location=(0, 0, 1))"}),
]


def cfg(env, **kw):
    return bt.broker_config(env, backends=[bt.backend(env, read_only=["get_scene_info"])], **kw)


@case
def hostile_params_never_reach_backend(env):
    m = env.mockd()
    b = env.broker(cfg(env))
    with b.connect() as c:
        for i, (typ, params, code, msg) in enumerate(HOSTILE):
            r = c.call(i + 1, typ, params)
            assert_code(r, code, "%s %s" % (typ, short(params)))
            assert r["error"]["message"].startswith(msg) or msg in r["error"]["message"], \
                "%s: %r, expected %r" % (typ, r["error"]["message"], msg)
        for typ in set(h[0] for h in HOSTILE):
            assert m.calls(typ) == 0, "a refused %s reached the backend" % typ
        for i, (typ, params) in enumerate(GOOD):
            assert_success(c.call(100 + i, typ, params), "%s %s" % (typ, short(params)))
        for typ in set(g[0] for g in GOOD):
            assert m.calls(typ) >= 1, "a valid %s did not reach the backend" % typ


admin = bt.admin_answer


def reload_with(b, conf):
    with open(b.config_path, "w") as f:
        json.dump(conf, f)
    r = admin(b, "reload")
    assert r["status"] == "success", r


@case
def scripts_follow_the_policy(env):
    m = env.mockd()
    conf = cfg(env)
    b = env.broker(conf)
    evil = {"code": "import subprocess\nsubprocess.run(['rm', '-rf', '/'])"}
    fine = {"code": "import bpy\nfor o in bpy.data.objects:\n    print(o.name)"}
    with b.connect() as c:
        r = c.call(1, "execute_code", evil)
        assert_code(r, "forbidden")
        assert "deny_dangerous" in r["error"]["message"] and "rule" in r["error"]["message"], r
        assert_success(c.call(2, "execute_code", fine))
        assert m.calls("execute_code") == 1
        reload_with(b, dict(conf, scripts={"policy": "deny_all"}))
        r = c.call(3, "execute_code", fine)
        assert_code(r, "forbidden")
        assert "deny_all" in r["error"]["message"], r
        reload_with(b, dict(conf, scripts={"policy": "allow"}))
        assert_success(c.call(4, "execute_code", evil), "allow passes every script")
        assert m.calls("execute_code") == 2


@case
def paths_stay_inside_allowed_roots(env):
    m = env.mockd()
    b = env.broker(cfg(env, paths={"allowed_roots": ["/srv/renders"]}))
    with b.connect() as c:
        assert_success(c.call(1, "get_viewport_screenshot", {"filepath": "/srv/renders/a.png"}))
        for i, p in enumerate(["/srv/renders-x/a.png", "/etc/passwd", "renders/a.png",
                               "/srv/renders/../secrets"]):
            r = c.call(10 + i, "get_viewport_screenshot", {"filepath": p})
            assert_code(r, "invalid_params", p)
        assert m.calls("get_viewport_screenshot") == 1


@case
def hostile_flood_does_not_disturb(env):
    m = env.mockd()
    b = env.broker(cfg(env))
    n_bad, n_good = 2000, 200
    good_out = []

    def good_client():
        with b.connect(timeout=t(20)) as c:
            for i in range(n_good):
                c.send(request(i, "get_object_info", {"name": "Cube"}, cache=False))
            good_out.extend(c.recv(n_good, timeout=t(20)))

    th = threading.Thread(target=good_client)
    th.start()
    with b.connect(timeout=t(20)) as bad:
        payload = b"".join(
            bt.line(request(i, HOSTILE[i % len(HOSTILE)][0], HOSTILE[i % len(HOSTILE)][1]))
            for i in range(n_bad))
        bad.send(payload)
        answers = bad.recv(n_bad, timeout=t(30))
        bad.expect_silence(0.2)
    th.join()
    assert sorted(a["id"] for a in answers) == list(range(n_bad)), "one answer per line"
    assert all(a["status"] == "error" for a in answers)
    assert len(good_out) == n_good and all(a["status"] == "success" for a in good_out)
    for typ in set(h[0] for h in HOSTILE):
        if typ != "get_object_info":
            assert m.calls(typ) == 0, typ
    assert m.calls("get_object_info") == n_good


if __name__ == "__main__":
    sys.exit(bt.run_cases(CASES, "brokerd parameter validation and script screening (issue 10)"))
