#!/usr/bin/env python3
"""Where a relay's CPU goes, by category (perf/profile.sh runs it).

usage: perf/profile_cats.py PERF.data [US_PER_REQ]

Reads `perf script` of a `perf record -g` and puts each sample in exactly one
category: the first row of CATS (in order) with a function anywhere in the
sample's call chain; a sample matching none is user space when its leaf is
not in the kernel, io_uring machinery when an io_uring frame is in its chain
(submission, poll arming, task work, waiting for completions), otherwise
other kernel (syscall entry and exit, softirq run outside a send). With
US_PER_REQ (the relay's CPU per request over the same window, from
/proc/PID/stat) each share is also given in microseconds per request.

The socket calls are counted whole: a TCP send on loopback includes the
delivery to the receiving socket (the softirq runs in the sender), which is
why it costs more than the receive. These four are what perf/floor times;
what a relay adds to them is the rest.
"""
import collections
import subprocess
import sys

CATS = [
    ("accept (incl. file alloc)", ("do_accept", "io_accept", "__sys_accept4")),
    ("close (fput)", ("__fput", "__x64_sys_close", "io_close")),
    ("TCP connect + socket (to the backend)", ("__sys_connect", "inet_stream_connect",
                                               "__sys_socket", "io_connect", "io_socket")),
    ("TCP send (incl. loopback delivery)", ("tcp_sendmsg",)),
    ("Unix send", ("unix_stream_sendmsg",)),
    ("TCP recv", ("tcp_recvmsg",)),
    ("Unix recv", ("unix_stream_recvmsg",)),
    ("sleep and wake-up", ("schedule", "__schedule", "finish_task_switch.isra.0")),
    ("peer credentials (getsockopt)", ("__sys_getsockopt", "__x64_sys_getsockopt")),
    ("epoll", ("do_epoll_wait", "ep_poll", "do_epoll_ctl", "__x64_sys_epoll_ctl")),
]
USER = "user space (relay, libc, allocator)"
URING = "io_uring machinery (submit, poll arm, task work, wait)"
OTHER = "other kernel (syscall entry, softirq, ...)"


def category(frames):
    syms = [f.split()[1] if len(f.split()) > 1 else "" for f in frames]
    for name, fns in CATS:
        if any(s in fns for s in syms):
            return name
    if "kernel" not in frames[0].rsplit("(", 1)[-1]:
        return USER
    if any(s.startswith(("io_", "__io_")) or "io_uring" in s for s in syms):
        return URING
    return OTHER


def main(argv):
    if len(argv) < 1 or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    usreq = float(argv[1]) if len(argv) > 1 else None
    out = subprocess.run(["perf", "script", "-i", argv[0], "-F", "ip,sym,dso"],
                         capture_output=True, text=True, check=True).stdout
    counts = collections.Counter()
    total = 0
    for block in out.split("\n\n"):
        frames = [line.strip() for line in block.strip().splitlines() if line.strip()]
        if not frames:
            continue
        total += 1
        counts[category(frames)] += 1
    if total == 0:
        print("profile_cats.py: no samples in %s" % argv[0], file=sys.stderr)
        return 1
    for cat, n in counts.most_common():
        share = 100.0 * n / total
        print("%-56s %5.1f %%%s" % (cat, share,
                                    "  %6.2f us/req" % (usreq * n / total) if usreq else ""))
    print("%-56s %5d samples%s" % ("total", total, ", %.2f us/req" % usreq if usreq else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
