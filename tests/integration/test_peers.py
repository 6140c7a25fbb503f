#!/usr/bin/env python3
"""Peer credentials (issue 10): allow_uids / allow_gids checked with
SO_PEERCRED at accept, on every listening socket, against a client that
really runs as another user (setpriv --reuid).

  foreign_uid_refused          a uid that is not root, not ours, not listed: one forbidden
                               line, closed, counted, logged; the backend saw nothing
  allow_lists_admit            allow_uids admits the uid, allow_gids its group; and a reload
                               that lists it admits the next connection
  socket_modes                 listen_mode on the client socket, 0600 on the admin socket,
                               whatever listen_mode says

Needs root (to switch uid); skipped with a message otherwise.

Usage: test_peers.py --bin BUILD/bin [-k NAME] [--keep] [-v]
"""
import json
import os
import socket
import stat
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokertest as bt  # noqa: E402
from brokertest import t, short, assert_success  # noqa: E402,F401

CASES, case = bt.case_list()
NOBODY = 65534

# Runs as the other user: connect, send one request, print every line the
# broker sends until it closes or the answer came, as JSON.
CLIENT = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(float(sys.argv[2]))
try:
    s.connect(sys.argv[1])
except OSError as e:
    print(json.dumps({"connect_error": e.errno})); sys.exit(0)
try:
    s.sendall(b'{"id":1,"type":"get_scene_info"}\n')
except OSError:
    pass
buf = b""
closed = False
while True:
    try:
        c = s.recv(65536)
    except socket.timeout:
        break
    except OSError:  # reset: closed with our request unread
        closed = True
        break
    if not c:
        closed = True
        break
    buf += c
    if b'"id":1' in buf:
        break
print(json.dumps({"lines": [json.loads(x) for x in buf.splitlines() if x.strip()],
                  "closed": closed}))
"""


def as_nobody(path, groups="0"):
    """Connect to path as uid/gid 65534 with the supplementary groups given
    (group 0 lets it through a 0660 socket owned by root's group)."""
    r = subprocess.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
                        "--groups=" + groups, sys.executable, "-c", CLIENT, path, str(t(5))],
                       capture_output=True, text=True, timeout=t(20))
    assert r.returncode == 0, "client as nobody failed: %s" % r.stderr[-1000:]
    return json.loads(r.stdout)


admin = bt.admin_answer


def start(env, **kw):
    os.chmod(env.tmp, 0o755)  # the other user must reach the socket files
    m = env.mockd()
    b = env.broker(bt.broker_config(env, listen_mode="0660", **kw))
    return m, b


def need_root():
    if os.geteuid() != 0:
        print("SKIP: test_peers needs root to run a client as another uid (setpriv)")
        sys.exit(0)


@case
def foreign_uid_refused(env):
    m, b = start(env)
    out = as_nobody(b.path)
    assert out.get("closed") and len(out["lines"]) == 1, out
    r = out["lines"][0]
    assert r["status"] == "error" and r["error"]["code"] == "forbidden" and r["id"] is None, r
    assert "uid %d" % NOBODY in r["error"]["message"], r
    assert "allow_uids" in r["error"]["message"], r
    assert m.calls("get_scene_info") == 0, "a refused peer's request reached the backend"
    assert admin(b, "stats")["result"]["peers_refused"] == 1
    assert any(ln.get("msg") == "connection refused: peer not allowed" and ln.get("uid") == NOBODY
               for ln in b.log_lines()), b.stderr()[-1500:]
    # root (this test) is still served
    with b.connect() as c:
        assert_success(c.call(1, "get_scene_info"))


@case
def allow_lists_admit(env):
    m, b = start(env, allow_uids=[NOBODY])
    out = as_nobody(b.path)
    assert out["lines"] and out["lines"][0].get("status") == "success", out
    b.stop()
    m.stop()
    env2_cfg = bt.broker_config(env, listen_mode="0660", allow_gids=[NOBODY])
    m = env.mockd()
    b = env.broker(env2_cfg)
    out = as_nobody(b.path)
    assert out["lines"] and out["lines"][0].get("status") == "success", out
    # a reload that drops the group refuses the next connection
    cfg = dict(env2_cfg, allow_gids=[])
    with open(b.config_path, "w") as f:
        json.dump(cfg, f)
    r = admin(b, "reload")
    assert r["status"] == "success", r
    out = as_nobody(b.path)
    assert out["lines"][0]["error"]["code"] == "forbidden", out
    # and one that lists the uid admits it again
    with open(b.config_path, "w") as f:
        json.dump(dict(cfg, allow_uids=[NOBODY]), f)
    assert admin(b, "reload")["status"] == "success"
    out = as_nobody(b.path)
    assert out["lines"][0].get("status") == "success", out


@case
def socket_modes(env):
    m, b = start(env, allow_uids=[NOBODY])
    assert stat.S_IMODE(os.stat(b.path).st_mode) == 0o660
    assert stat.S_IMODE(os.stat(b.cfg["admin_listen"]).st_mode) == 0o600
    # the group may reach the client socket, not the admin one
    out = as_nobody(b.cfg["admin_listen"])
    assert out.get("connect_error") == 13, out  # EACCES: the mode keeps it out
    out = as_nobody(b.path, groups=str(NOBODY))  # not in the socket's group
    assert out.get("connect_error") == 13, out


if __name__ == "__main__":
    need_root()
    sys.exit(bt.run_cases(CASES, "brokerd peer credentials (issue 10)"))
