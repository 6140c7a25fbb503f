#!/usr/bin/env python3
"""The arithmetic behind perf/bench.sh and perf/soak.sh (they run the
processes; this turns their raw figures into rows, tables, charts, verdicts).

Design: the shell scripts own every process (start, trap, stop) and read
/proc themselves; each step here is a short, stateless subcommand reading
files and printing to stdout, so a run can be re-analysed from its output
directory (`benchlib.py table results.jsonl OUTDIR`) without running anything.
Only the standard library; charts are gnuplot scripts run with gnuplot (PNG,
pngcairo or png terminal, whichever this gnuplot has).

Subcommands
  row FILE key=value...   a loadgen JSON line (FILE) + the row's fields and
                          the CPU ticks measured around it -> one e2e row
  mockstats HOST:PORT     mockd's mock_stats answer, one JSON line
  table RESULTS OUTDIR    the readable table with ratios, targets, charts
  soak-header             the CSV header of the sampler's lines
  soak-sampler CTL SOCK PID SECS CSV   a CSV line a second from brokerctl --json
                          memory/stats/cache/pool and /proc/PID (RSS, fds, threads)
  soak-report CSV OUTDIR  growth fit, PASS/FAIL lines, memory chart
"""
import json, math, os, shutil, socket, statistics, subprocess, sys

PATHS = ("direct", "broker", "haproxy", "nginx")


# ------------------------------------------------------------------ bench rows

def cmd_row(argv):
    """loadgen's line + key=value fields -> the e2e row (one JSON line)."""
    with open(argv[0]) as f:
        text = f.read().strip()
    kv = dict(a.split("=", 1) for a in argv[1:])
    tck = float(kv.pop("clk_tck", "100"))
    wall = float(kv.pop("wall_s"))
    relay_ticks = kv.pop("relay_ticks", "")
    mockd_ticks = float(kv.pop("mockd_ticks"))
    loadgen_rc = int(kv.pop("loadgen_rc", "0"))
    row = {"bench": "e2e"}
    for k in ("path", "scenario", "group"):
        row[k] = kv.pop(k)
    for k in ("clients", "depth", "backend_conns", "round"):
        row[k] = int(kv.pop(k))
    for k, v in kv.items():  # anything else: numbers where they parse
        try:
            row[k] = json.loads(v)
        except ValueError:
            row[k] = v
    try:
        lg = json.loads(text.splitlines()[-1]) if text else None
    except ValueError:
        lg = None
    if lg is None:
        row.update(error="loadgen printed no result (exit %d)" % loadgen_rc, req_per_s=0)
        print(json.dumps(row, separators=(",", ":")))
        return 0
    rps = float(lg["rps"])
    per_req = (lambda ticks: round(ticks / tck / wall * 1e6 / rps, 2)) if rps > 0 else \
        (lambda ticks: None)
    row.update(req_per_s=round(rps), p50_us=lg["p50_us"], p99_us=lg["p99_us"],
               p999_us=lg["p999_us"], max_us=lg["max_us"],
               relay_cpu_us_per_req=per_req(float(relay_ticks)) if relay_ticks else None,
               mockd_cpu_us_per_req=per_req(mockd_ticks),
               loadgen_cpu_us_per_req=lg.get("cpu_us_per_req"),
               relay_cores=round(float(relay_ticks) / tck / wall, 3) if relay_ticks else None,
               mockd_cores=round(mockd_ticks / tck / wall, 3),
               ok=lg["ok"], errors=lg["errors"], lost=lg["lost"],
               duplicates=lg["duplicates"], unknown_ids=lg["unknown_ids"],
               closed_connections=lg["closed_connections"], error_codes=lg["error_codes"],
               offered_rps=lg.get("offered_rps", 0), unsent=lg.get("unsent", 0),
               loadgen_rc=loadgen_rc)
    print(json.dumps(row, separators=(",", ":")))
    return 0


def cmd_mockstats(argv):
    host, port = argv[0].rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=2)
    s.sendall(b'{"type":"mock_stats","params":{}}')
    buf, dec = b"", json.JSONDecoder()
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
        try:
            v, _ = dec.raw_decode(buf.decode())
            break
        except ValueError:
            continue
    s.close()
    print(json.dumps(v.get("result", v)))
    return 0


# ------------------------------------------------------------------ bench table

def load_jsonl(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
    return rows


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(v, nd=0, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float) and nd == 0:
        v = round(v)
    s = "{:,.{}f}".format(v, nd) if isinstance(v, (int, float)) else str(v)
    return s + unit


def ratio(a, b, nd=2):
    if a is None or b is None or b == 0:
        return None
    return round(a / b, nd)


def merge_rounds(rows):
    """Medians over rounds of rows with the same identity."""
    by = {}
    for r in rows:
        if r.get("bench") != "e2e":
            continue
        key = (r["group"], r["path"], r["clients"], r["depth"], r["backend_conns"])
        by.setdefault(key, []).append(r)
    out = []
    for key, rs in by.items():
        m = dict(rs[0])
        for k in ("req_per_s", "p50_us", "p99_us", "p999_us", "relay_cpu_us_per_req",
                  "mockd_cpu_us_per_req", "loadgen_cpu_us_per_req"):
            m[k] = med(x.get(k) for x in rs)
        m["rounds"] = len(rs)
        m["lost"] = sum(x.get("lost", 0) or 0 for x in rs)
        m["errors"] = sum(x.get("errors", 0) or 0 for x in rs)
        out.append(m)
    return out


def group_order(rows):
    seen = []
    for r in rows:
        if r["group"] not in seen:
            seen.append(r["group"])
    return seen


def cmd_table(argv):
    results, outdir = argv[0], argv[1]
    allrows = load_jsonl(results)
    floor = med(r["us_per_req"] for r in allrows if r.get("bench") == "floor")
    env = next((r for r in allrows if r.get("bench") == "env"), {})
    rows = merge_rounds(allrows)
    groups = group_order(rows)
    lines = []
    p = lines.append
    p("Machine: %s; %s; load average before the runs: %s" % (
        env.get("machine", "?"), env.get("date", "?"), env.get("load_before", "?")))
    if env.get("load_after"):
        p("Load average after the runs: %s" % env["load_after"])
    p("Kernel floor of a relay's 4 socket calls per request (perf/floor, CPU): %s us" %
      fmt(floor, 2))
    p("Relay CPU = utime+stime of the relay process (all threads; nginx: master + workers)"
      " over the measured window, per answered request.")
    p("")
    hdr = ("group", "path", "cli", "dep", "bconn", "req/s", "p50us", "p99us", "p999us",
           "relayCPU", "xdirect", "xhaproxy", "CPU/floor", "CPU/hapCPU", "err/lost")
    table = [hdr]
    for g in groups:
        gr = [r for r in rows if r["group"] == g]
        direct = next((r for r in gr if r["path"] == "direct"), None)
        hap = next((r for r in gr if r["path"] == "haproxy"), None)
        for r in sorted(gr, key=lambda r: (PATHS.index(r["path"]) if r["path"] in PATHS else 9,
                                           r["clients"], r["depth"])):
            cpu = r.get("relay_cpu_us_per_req")
            table.append((
                g, r["path"], str(r["clients"]), str(r["depth"]), str(r["backend_conns"]),
                fmt(r["req_per_s"]), fmt(r["p50_us"]), fmt(r["p99_us"]), fmt(r["p999_us"]),
                fmt(cpu, 1),
                fmt(ratio(r["req_per_s"], direct["req_per_s"]), 2) if direct and
                r is not direct else "",
                fmt(ratio(r["req_per_s"], hap["req_per_s"]), 2) if hap and
                r["path"] == "broker" else "",
                fmt(ratio(cpu, floor), 2) if cpu is not None and r["path"] != "direct" else "",
                fmt(ratio(cpu, hap.get("relay_cpu_us_per_req")), 2) if hap and
                r["path"] == "broker" else "",
                "%d/%d" % (r.get("errors", 0), r.get("lost", 0))))
    widths = [max(len(row[i]) for row in table) for i in range(len(hdr))]
    for i, row in enumerate(table):
        p("  ".join(c.rjust(widths[j]) if j >= 2 else c.ljust(widths[j])
                    for j, c in enumerate(row)))
        if i == 0:
            p("  ".join("-" * w for w in widths))
    p("")
    p("Targets (issue 12), from this run:")
    for line in targets(rows, floor):
        p("  " + line)
    text = "\n".join(lines) + "\n"
    with open(os.path.join(outdir, "table.txt"), "w") as f:
        f.write(text)
    sys.stdout.write(text)
    charts(rows, groups, outdir)
    return 0


def find(rows, group, path):
    return next((r for r in rows if r["group"] == group and r["path"] == path), None)


def targets(rows, floor):
    out = []

    def both(group):
        return find(rows, group, "broker"), find(rows, group, "haproxy")
    eq = [g for g in group_order(rows) if g.startswith("eq-d1/")]
    for g in eq:
        b, h = both(g)
        if b and h and b.get("req_per_s") and h.get("req_per_s"):
            out.append("%s: broker/HAProxy throughput %s (target >= 2), broker CPU/HAProxy CPU "
                       "per request %s (target <= 0.5), broker CPU/floor %s" % (
                           g, fmt(ratio(b["req_per_s"], h["req_per_s"]), 2),
                           fmt(ratio(b["relay_cpu_us_per_req"], h["relay_cpu_us_per_req"]), 2),
                           fmt(ratio(b["relay_cpu_us_per_req"], floor), 2)))
    for g in [g for g in group_order(rows) if g.startswith("cpr/")]:
        b, h = both(g)
        if b and h and b.get("req_per_s") and h.get("req_per_s"):
            out.append("%s (connection per request): broker/HAProxy throughput %s (target >= 3)"
                       % (g, fmt(ratio(b["req_per_s"], h["req_per_s"]), 2)))
    for g, goal in (("blender", 0.9), ("blender-cache", 5), ("cache", None)):
        d, b = find(rows, g, "direct"), find(rows, g, "broker")
        if d and b and d.get("req_per_s") and b.get("req_per_s"):
            out.append("%s: broker/direct throughput %s%s" % (
                g, fmt(ratio(b["req_per_s"], d["req_per_s"]), 2),
                " (target >= %s)" % goal if goal else ""))
    for g in [g for g in group_order(rows) if "open" in g]:
        d = find(rows, g, "direct")
        for path in ("broker", "haproxy", "nginx"):
            r = find(rows, g, path)
            if d and r and r.get("p50_us") is not None and d.get("p50_us") is not None:
                out.append("%s at %s req/s offered: %s adds p50 %s us, p99 %s us over direct"
                           " (target p50 <= 50, p99 <= 150)" % (
                    g, fmt(r.get("offered_rps")), path, fmt(r["p50_us"] - d["p50_us"]),
                    fmt(r["p99_us"] - d["p99_us"])))
    if not out:
        out.append("(no broker/HAProxy pair in this run)")
    return out


def gnuplot_term():
    try:
        t = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True,
                           text=True).stderr
    except OSError:
        return None
    return "pngcairo" if "pngcairo" in t else "png"


def charts(rows, groups, outdir):
    """Per scenario: throughput by clients (bars per path) and p50/p99/p99.9 per row."""
    if not shutil.which("gnuplot"):
        print("(gnuplot not installed: no charts)")
        return
    term = gnuplot_term()
    scen = []
    for r in rows:
        if r["scenario"] not in scen:
            scen.append(r["scenario"])
    gp = []
    for s in scen:
        rs = [r for r in rows if r["scenario"] == s]
        xs = sorted({(r["clients"], r["depth"]) for r in rs})
        # the direct reference of the same group (pool-d1/pool-d16 share "pool")
        groups_s = {r["group"] for r in rs}
        rs += [r for r in rows if r["scenario"] != s and r["path"] == "direct" and
               r["group"] in groups_s and not any(x["path"] == "direct" for x in rs)]
        paths = [p for p in PATHS if any(r["path"] == p for r in rs)]
        dat = os.path.join(outdir, "tput_%s.dat" % s)
        with open(dat, "w") as f:
            f.write("x " + " ".join(paths) + "\n")
            for c, d in xs:
                vals = []
                for pth in paths:
                    r = next((r for r in rs if r["path"] == pth and r["clients"] == c and
                              r["depth"] == d), None)
                    if r is None and pth == "direct":  # the group's one reference row
                        r = next((r for r in rs if r["path"] == "direct"), None)
                    vals.append(str(r["req_per_s"]) if r else "NaN")
                f.write("%s %s\n" % ("%dc_d%d" % (c, d), " ".join(vals)))
        gp.append("set terminal %s noenhanced size 900,500\nset output '%s'\n" % (
            term, os.path.join(outdir, "throughput_%s.png" % s)))
        gp.append("set title 'throughput: %s'\nset ylabel 'requests/s'\nset style data "
                  "histograms\nset style histogram clustered gap 1\nset style fill solid 0.8 "
                  "border -1\nset key top left\nset yrange [0:*]\nunset logscale y\n"
                  "set xtics rotate by 0\n" % s)
        gp.append("plot " + ", ".join("'%s' using %d:xtic(1) title columnheader" % (dat, i + 2)
                                      for i in range(len(paths))) + "\n")
        dat2 = os.path.join(outdir, "lat_%s.dat" % s)
        with open(dat2, "w") as f:
            f.write("row p50 p99 p99.9\n")
            for r in sorted(rs, key=lambda r: (r["clients"], r["depth"],
                                               PATHS.index(r["path"]))):
                f.write("%s_%dc_d%d %s %s %s\n" % (r["path"], r["clients"], r["depth"],
                                                   max(r["p50_us"] or 1, 1),
                                                   max(r["p99_us"] or 1, 1),
                                                   max(r["p999_us"] or 1, 1)))
        gp.append("set terminal %s noenhanced size 1000,500\nset output '%s'\n" % (
            term, os.path.join(outdir, "latency_%s.png" % s)))
        gp.append("set title 'latency percentiles: %s'\nset ylabel 'microseconds (log)'\n"
                  "set logscale y\nset yrange [*:*]\nset xtics rotate by -30\n" % s)
        gp.append("plot '%s' using 2:xtic(1) title 'p50', '' using 3 title 'p99', "
                  "'' using 4 title 'p99.9'\nunset logscale y\n" % dat2)
    script = os.path.join(outdir, "charts.gp")
    with open(script, "w") as f:
        f.write("".join(gp))
    r = subprocess.run(["gnuplot", script], capture_output=True, text=True)
    if r.returncode != 0:
        print("(gnuplot failed: %s)" % r.stderr.strip()[-300:])
    else:
        pngs = sorted(f for f in os.listdir(outdir) if f.endswith(".png"))
        print("Charts: %s" % ", ".join(os.path.join(outdir, f) for f in pngs))


# ------------------------------------------------------------------ soak

SOAK_COLS = ("t_s", "allocated", "active", "resident", "mapped", "retained",
             "cache_arena_bytes", "rss", "proc_rss", "fds", "threads", "clients", "inflight",
             "answers_ok", "answers_error", "cache_entries", "cache_bytes", "cache_evictions",
             "pool_open", "cache_sets", "cache_hits", "cache_invalidations")


def cmd_soak_header(argv):
    print(",".join(SOAK_COLS))
    return 0


def soak_line(t, mem, st, ca, po, prss, fds, thr):
    """One CSV line from the admin answers (dicts) and /proc figures."""
    pool_open = None
    bk = po.get("backends") if isinstance(po, dict) else None
    if isinstance(bk, list):
        pool_open = sum(b.get("open", 0) for b in bk if isinstance(b, dict))
    vals = [t, mem.get("allocated"), mem.get("active"), mem.get("resident"), mem.get("mapped"),
            mem.get("retained"), mem.get("cache_arena_bytes"), mem.get("rss"), prss, fds, thr,
            st.get("clients"), st.get("inflight"), st.get("answers_ok"),
            st.get("answers_error"), ca.get("entries"), ca.get("bytes"), ca.get("evictions"),
            pool_open, ca.get("sets"), ca.get("hits"), ca.get("invalidations")]
    return ",".join("" if v is None else str(v) for v in vals)


def proc_figures(pid):
    rss = thr = fds = None
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Threads:"):
                    thr = int(line.split()[1])
        fds = len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        pass
    return rss, fds, thr


def cmd_soak_sampler(argv):
    """soak-sampler BROKERCTL ADMIN_SOCK PID SECONDS CSV: a line a second, on a
    fixed schedule, until SECONDS have passed or the process is gone."""
    import time
    ctl, sock, pid, secs, csv = argv[0], argv[1], int(argv[2]), float(argv[3]), argv[4]

    def ask(cmd):
        try:
            r = subprocess.run([ctl, "--socket", sock, "--json", cmd], capture_output=True,
                               text=True, timeout=5)
            return json.loads(r.stdout) if r.stdout.strip() else {}
        except (subprocess.TimeoutExpired, ValueError, OSError):
            return {}
    t0 = time.monotonic()
    k = 0
    with open(csv, "a") as f:
        while time.monotonic() - t0 < secs:
            if not os.path.exists("/proc/%d" % pid):
                print("soak: brokerd (pid %d) is gone" % pid, file=sys.stderr)
                return 1
            t = round(time.monotonic() - t0, 2)
            mem, st, ca, po = ask("memory"), ask("stats"), ask("cache"), ask("pool")
            rss, fds, thr = proc_figures(pid)
            f.write(soak_line(t, mem, st, ca, po, rss, fds, thr) + "\n")
            f.flush()
            k += 1
            time.sleep(max(0.0, t0 + k - time.monotonic()))
    return 0


def window_fit(pts, w):
    """Least-squares line through the median (t, v) of each of w equal time
    windows of pts: (slope, intercept), or (None, None)."""
    if len(pts) < 3:
        return None, None
    t_lo, t_hi = pts[0][0], pts[-1][0]
    span = (t_hi - t_lo) / w or 1.0
    wins = {}
    for t, v in pts:
        wins.setdefault(min(w - 1, int((t - t_lo) / span)), []).append((t, v))
    if len(wins) < 2:
        return None, None
    mx = [statistics.median(t for t, _ in ps) for ps in wins.values()]
    my = [statistics.median(v for _, v in ps) for ps in wins.values()]
    return theil_sen(mx, my)


def theil_sen(xs, ys):
    """Median of the pairwise slopes (Theil-Sen): a step or a bump in a few
    windows (a 2 MB fault answer, a backend restart) does not tilt it, while
    a leak, which lifts every later window, does. (slope, intercept)"""
    slopes = [(ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(len(xs))
              for j in range(i + 1, len(xs)) if xs[j] != xs[i]]
    if not slopes:
        return 0.0, statistics.median(ys)
    slope = statistics.median(slopes)
    return slope, statistics.median(y - slope * x for x, y in zip(xs, ys))


def linfit(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0, my
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return slope, my - slope * mx


def cmd_soak_report(argv):
    """soak-report CSV OUTDIR WARMUP_S LSAN_VERDICT LOST DUP CACHE_MAX: fit, verdicts, chart."""
    csv, outdir, warm = argv[0], argv[1], float(argv[2])
    lsan = argv[3] if len(argv) > 3 else ""
    lost = int(argv[4]) if len(argv) > 4 else 0
    dup = int(argv[5]) if len(argv) > 5 else 0
    cache_max = int(argv[6]) if len(argv) > 6 else 0
    rows = []
    with open(csv) as f:
        head = f.readline().strip().split(",")
        for line in f:
            parts = line.strip().split(",")
            if len(parts) != len(head):
                continue
            r = {}
            for k, v in zip(head, parts):
                try:
                    r[k] = float(v) if v != "" else None
                except ValueError:
                    r[k] = None
            rows.append(r)
    ok_rows = [r for r in rows if r.get("allocated") is not None]
    verdicts = []
    if len(ok_rows) < 3:
        print("FAIL samples: only %d memory samples" % len(ok_rows))
        return 1
    end_t = ok_rows[-1]["t_s"]
    # after the warm-up, and before the last 3 s, when the load loops stop
    after = [r for r in ok_rows if warm <= r["t_s"] <= end_t - 3] or ok_rows[-3:]
    xs = [r["t_s"] for r in after]

    def value(r, col):
        if col == "outside_cache":
            if r.get("allocated") is None or r.get("cache_arena_bytes") is None:
                return None
            return r["allocated"] - r["cache_arena_bytes"]
        return r.get(col)

    def growth(col):
        """Growth over the run after warm-up, in % of the fitted start: a
        Theil-Sen line through the median sample of each of W windows. Request buffers,
        connections and jemalloc's thread caches come and go between samples;
        the median of a window is the level memory sits at, and a leak lifts
        every window's."""
        pts = [(r["t_s"], value(r, col)) for r in after if value(r, col) is not None]
        if len(pts) < 3:
            return None, None, None
        w = max(3, min(20, len(pts) // 5))
        t_lo, t_hi = pts[0][0], pts[-1][0]
        span = (t_hi - t_lo) / w or 1.0
        slope, icpt = window_fit(pts, w)
        if slope is None:
            return None, None, None
        start = icpt + slope * t_lo
        return (slope * (t_hi - t_lo) / start * 100 if start else None), slope, start

    g_alloc, slope_alloc, base_alloc = growth("allocated")
    g_out, slope_out, base_out = growth("outside_cache")
    g_res, _, _ = growth("resident")
    g_rss, _, _ = growth("proc_rss")
    arena_max = max((r.get("cache_arena_bytes") or 0) for r in after)
    # fds flat: open fds less client and backend connections (what is left is
    # listeners, io_uring, eventfds, timers: constant unless something leaks).
    # Clients come and go between the readings, so single samples jitter; the
    # fitted trend after warm-up must move less than 1 fd over the run.
    fdr = [r for r in after if r.get("fds") is not None]
    fds = [int(r["fds"]) for r in fdr]
    resid = [r["fds"] - (r.get("clients") or 0) - (r.get("pool_open") or 0) for r in fdr]
    fd_slope, _ = window_fit([(r["t_s"], v) for r, v in zip(fdr, resid)],
                             max(3, min(20, len(fdr) // 5)))
    fd_drift = (fd_slope or 0.0) * (fdr[-1]["t_s"] - fdr[0]["t_s"]) if len(fdr) >= 3 else 0.0
    req_total = (ok_rows[-1].get("answers_ok") or 0) + (ok_rows[-1].get("answers_error") or 0)
    evict = ok_rows[-1].get("cache_evictions") or 0
    sets = ok_rows[-1].get("cache_sets") or 0
    inval = ok_rows[-1].get("cache_invalidations") or 0
    summary = {
        "bench": "soak", "duration_s": end_t, "warmup_s": warm, "samples": len(rows),
        "memory_samples": len(ok_rows), "requests": req_total,
        "answers_error": ok_rows[-1].get("answers_error"), "cache_evictions": evict,
        "cache_sets": sets, "cache_invalidations": inval,
        "allocated_growth_pct": None if g_alloc is None else round(g_alloc, 4),
        "allocated_outside_cache_growth_pct": None if g_out is None else round(g_out, 4),
        "allocated_outside_cache_slope_bytes_per_h": None if slope_out is None else
        round(slope_out * 3600),
        "cache_arena_max_bytes": arena_max, "cache_max_bytes": cache_max,
        "allocated_slope_bytes_per_h": None if slope_alloc is None else round(slope_alloc *
                                                                               3600),
        "allocated_after_warmup": base_alloc,
        "resident_growth_pct": None if g_res is None else round(g_res, 3),
        "rss_growth_pct": None if g_rss is None else round(g_rss, 3),
        "fds_min": min(fds) if fds else None, "fds_max": max(fds) if fds else None,
        "fds_less_connections_trend": round(fd_drift, 2),
        "fds_less_connections_range": [min(resid), max(resid)] if resid else None,
    }
    verdicts.append(("allocated growth outside the cache arena %s %% from %g s to the end "
                     "(limit 0.1 %%; all of allocated, cache included: %s %%)" % (
                         "?" if g_out is None else "%.4f" % g_out, warm,
                         "?" if g_alloc is None else "%.4f" % g_alloc),
                     g_out is not None and g_out <= 0.1))
    if cache_max:
        verdicts.append(("cache arena within its bound: at most %d bytes after warm-up, "
                         "cache.max_bytes %d (+5 %%)" % (arena_max, cache_max),
                         arena_max <= cache_max * 1.05))
    verdicts.append(("fds flat: fds less client and backend connections trend %+.2f over the "
                     "run after warm-up (fds %s..%s)" % (
                         fd_drift, summary["fds_min"], summary["fds_max"]), abs(fd_drift) < 1.0))
    verdicts.append(("requests served: %d; cache sets %d, evictions %d, invalidations %d" % (
        req_total, sets, evict, inval), req_total > 0))
    verdicts.append(("exactly-once: %d requests lost, %d answered twice or with an unknown id "
                     "(errors are answers)" % (lost, dup), lost == 0 and dup == 0))
    summary.update(lost=lost, duplicates_or_unknown=dup)
    if lsan:
        verdicts.append(("leaks (LeakSanitizer at brokerd exit): %s" % lsan,
                         lsan.startswith("none")))
    else:
        verdicts.append(("leaks: not checked (run with --lsan BUILD_DIR)", True))
    summary["pass"] = all(ok for _, ok in verdicts)
    with open(os.path.join(outdir, "soak_summary.json"), "w") as f:
        json.dump(summary, f)
        f.write("\n")
    print(json.dumps(summary))
    for text, ok in verdicts:
        print("%s %s" % ("PASS" if ok else "FAIL", text))
    print("SOAK %s" % ("PASS" if summary["pass"] else "FAIL"))
    soak_chart(csv, outdir, warm)
    return 0 if summary["pass"] else 1


def soak_chart(csv, outdir, warm):
    if not shutil.which("gnuplot"):
        print("(gnuplot not installed: no chart)")
        return
    term = gnuplot_term()
    png = os.path.join(outdir, "soak_memory.png")
    gp = """set terminal %s noenhanced size 1000,600
set output '%s'
set datafile separator ','
set key autotitle columnhead top left
set title 'brokerd memory over the soak (warm-up ends at %g s)'
set xlabel 'seconds'
set ylabel 'MiB'
set y2label 'fds, clients'
set ytics nomirror
set y2tics
set arrow from %g, graph 0 to %g, graph 1 nohead dt 2
plot '%s' using 1:($2/1048576) with lines lw 2 title 'jemalloc allocated', \\
     '' using 1:($4/1048576) with lines title 'jemalloc resident', \\
     '' using 1:($7/1048576) with lines title 'cache arena', \\
     '' using 1:($9/1048576) with lines title 'RSS (/proc)', \\
     '' using 1:10 axes x1y2 with lines dt 3 title 'fds', \\
     '' using 1:12 axes x1y2 with lines dt 4 title 'clients'
""" % (term, png, warm, warm, warm, csv)
    script = os.path.join(outdir, "soak.gp")
    with open(script, "w") as f:
        f.write(gp)
    r = subprocess.run(["gnuplot", script], capture_output=True, text=True)
    print("Chart: %s" % png if r.returncode == 0 else "(gnuplot failed: %s)" % r.stderr[-300:])


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    cmd, argv = sys.argv[1], sys.argv[2:]
    fn = {"row": cmd_row, "mockstats": cmd_mockstats, "table": cmd_table,
          "soak-header": cmd_soak_header, "soak-sampler": cmd_soak_sampler,
          "soak-report": cmd_soak_report}.get(cmd)
    if not fn:
        print(__doc__)
        return 2
    return fn(argv)


if __name__ == "__main__":
    sys.exit(main())
