/*
 * loadgen.c - closed-loop load generator for the broker's client protocol and
 * for backends that speak the Blender add-on protocol directly (mockd, Blender).
 *
 * Modes
 * - broker: NDJSON lines {"id":N,"type":T,"params":P}, up to --depth requests
 *   in flight per connection, answers matched by id in any order. Every id must
 *   be answered exactly once: an answer to an id already answered is a
 *   duplicate, one to an id never sent (or sent on another connection) is
 *   unknown, and a request still unanswered after the drain is lost. All three
 *   are hard errors: the broker promises one answer per request line.
 * - direct: one JSON object per request, no delimiter (or --framing ndjson),
 *   framed by JSON completeness, exactly one request in flight per connection
 *   because the add-on cannot take two ("Extra data"). Bytes that arrive with
 *   nothing in flight are counted as unknown.
 * - compat: the direct mode's wire (the add-on protocol) against the broker's
 *   compat_listen; an error answer counts under the broker's code, the
 *   message's prefix up to ": " ("timeout: ..."), or backend_error. The same
 *   program and loop as broker mode, so the two protocols compare fairly.
 *
 * Design
 * - The connections are opened (blocking) before the clock starts, then spread
 *   round-robin over T threads; each thread owns its connections, its epoll,
 *   its histogram and its counters, so nothing is shared while the load runs
 *   and the main thread merges at the end.
 * - Ids carry their own routing: id = (generation * depth + slot) * connections
 *   + connection. The slot finds the send time in O(1) whatever the answer
 *   order, the generation tells a duplicate (an older generation of that slot)
 *   from an unknown id (a newer one), and the connection part catches answers
 *   delivered to the wrong client.
 * - A connection is refilled to --depth with one write after each read, so
 *   pipelined requests leave in batches; reads take up to 256 KiB at once into
 *   a per-thread buffer, and only an incomplete tail is copied to the
 *   connection. The framing scanner keeps its state across reads: each byte is
 *   scanned once.
 * - Latency is from the write of a request to the read that completes its
 *   answer (one clock reading per batch), recorded in a log-linear histogram:
 *   exact below 256 ns, then 128 linear buckets per power of two (width under
 *   0.8 %, reported at the bucket midpoint), clamped at 60 s; fixed 30 KiB.
 *
 * Phases: warm-up (answers not recorded), measurement (requests sent in it are
 * recorded until answered; rps counts answers received in it), drain (no new
 * requests; waits up to --drain seconds for the last answers).
 *
 * Open loop (--rate R): request k of a thread is due at a fixed intended time
 * (thread start + k / (R / threads), threads interleaved), whatever happened
 * to earlier ones. A due request goes out on the next connection with a free
 * slot (round robin); when none is free it waits in the thread's backlog,
 * which is just the count of due-but-unsent indices, since the intended time
 * of index k is computed, not stored. Latency runs from the intended time, so
 * time spent waiting for a connection or behind a stalled server is counted
 * (no coordinated omission). Requests due before the end of the measurement
 * are still sent during the drain; what is left then is reported as unsent.
 * Timer slack is set to 1 ns so wake-ups are not batched by the kernel.
 *
 * Connection per request (--conn-per-request): each request opens its own
 * connection (counted in its latency) and closes it once answered, as a
 * script that connects, asks once and exits; depth is 1.
 *
 * Key mix (--keys K): params become {"key":N}, N drawn per request from K keys
 * (uniform, or Zipf with --zipf S); --write-ratio F sends that fraction as
 * --write-type instead (the broker caches reads and a write invalidates).
 *
 * Limits: a connection the peer closes is not reopened (outside
 * --conn-per-request) and its requests in flight count as lost; --rate with
 * --conn-per-request is not supported.
 *
 * Files: this one holds the process (options, connecting, setting up the
 * threads and the request bytes, main); loadgen_engine.c the load threads
 * (sending, framing and matching answers, open loop, reconnects);
 * loadgen_report.c the latency histogram, the error codes and the JSON
 * output. loadgen.h is what they share.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "loadgen.h"
#include "tool.h"

/* ---------------------------------------------------------------- utilities */

static void lg_sleep_until(uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u),
                          .tv_nsec = (long)(ns % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* ---------------------------------------------------------------- setup */

int lg_connect_one(struct lg_run *run, char *err, size_t errlen)
{
    if (run->o.unix_path) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        size_t len = strlen(run->o.unix_path);
        if (len >= sizeof(sa.sun_path)) {
            snprintf(err, errlen, "socket path too long");
            return -ENAMETOOLONG;
        }
        memcpy(sa.sun_path, run->o.unix_path, len + 1);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            return fd;
        int e = errno;
        snprintf(err, errlen, "%s", strerror(e));
        if (fd >= 0)
            close(fd);
        return -e;
    }
    struct addrinfo *res;
    if (tool_resolve(run->o.tcp, false, &res, err, errlen) < 0)
        return -EINVAL;
    int e = ECONNREFUSED;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            int one = 1;
            /* Request/answer traffic: Nagle would only add delay. */
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            freeaddrinfo(res);
            return fd;
        }
        e = errno;
        if (fd >= 0)
            close(fd);
    }
    freeaddrinfo(res);
    snprintf(err, errlen, "%s", strerror(e));
    return -e;
}

static int lg_conn_init(struct lg_run *run, struct lg_conn *c, unsigned idx, char *err,
                        size_t errlen)
{
    c->fd = -1;
    c->idx = idx;
    c->slots = calloc(run->o.depth, sizeof(*c->slots));
    c->free_slots = calloc(run->o.depth, sizeof(*c->free_slots));
    if (!c->slots || !c->free_slots) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    /* Pushed in reverse so slot 0 is used first. */
    for (unsigned s = 0; s < run->o.depth; s++)
        c->free_slots[s] = run->o.depth - 1 - s;
    c->nfree = run->o.depth;
    int fd = lg_connect_one(run, err, errlen);
    if (fd < 0)
        return fd;
    c->fd = fd;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        snprintf(err, errlen, "fcntl: %s", strerror(errno));
        return -errno;
    }
    return 0;
}

static int lg_thread_init(struct lg_run *run, struct lg_thread *t, unsigned id)
{
    t->run = run;
    t->epfd = epoll_create1(EPOLL_CLOEXEC);
    t->scratch = malloc(LG_SCRATCH);
    t->conns = calloc(run->o.conns / run->o.threads + 1, sizeof(*t->conns));
    if (t->epfd < 0 || !t->scratch || !t->conns)
        return -ENOMEM;
    for (unsigned i = id; i < run->o.conns; i += run->o.threads) {
        struct lg_conn *c = &run->conns[i];
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        c->t = t;
        t->conns[t->nconns++] = c;
        if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
            return -errno;
    }
    t->live_conns = t->nconns;
    return 0;
}

static void lg_free(struct lg_run *run)
{
    for (unsigned i = 0; run->conns && i < run->o.conns; i++) {
        struct lg_conn *c = &run->conns[i];
        if (c->fd >= 0)
            close(c->fd);
        free(c->slots);
        free(c->free_slots);
        free(c->pend);
        free(c->out);
    }
    for (unsigned i = 0; run->threads && i < run->o.threads; i++) {
        struct lg_thread *t = &run->threads[i];
        if (t->epfd >= 0)
            close(t->epfd);
        free(t->scratch);
        free(t->conns);
    }
    free(run->conns);
    free(run->threads);
    free(run->tail);
    free(run->khead[0]);
    free(run->khead[1]);
    free(run->zcdf);
}

/* ---------------------------------------------------------------- options */

static void lg_usage(FILE *f)
{
    fputs("usage: loadgen (--unix PATH | --tcp HOST:PORT) [options]\n"
          "\n"
          "Closed-loop load against the broker (client protocol) or straight against a\n"
          "backend speaking the Blender add-on protocol (mockd, Blender).\n"
          "\n"
          "  --mode broker|direct  broker: NDJSON {\"id\",\"type\",\"params\"} lines, answers\n"
          "                        matched by id (default with --unix); direct: add-on\n"
          "                        protocol, 1 request in flight per connection\n"
          "                        (default with --tcp)\n"
          "  --mode compat         the add-on protocol against brokerd's compat_listen\n"
          "                        (as direct; errors counted by the broker's code)\n"
          "  --connections K       connections (default 8)\n"
          "  --depth D             requests in flight per connection, broker mode (default 1)\n"
          "  --duration S          measured seconds (default 5)\n"
          "  --warmup S            seconds of load before measuring (default 0)\n"
          "  --drain S             seconds to wait for the last answers (default 5)\n"
          "  --threads T           threads, each with its own epoll (default 2)\n"
          "  --type T              command type (default get_scene_info)\n"
          "  --params JSON         params object (default {})\n"
          "  --framing json|ndjson direct mode framing (default json, by JSON completeness)\n"
          "  --rate R              open loop: R requests/s in all, each at a fixed intended\n"
          "                        time; latency from that time (no coordinated omission)\n"
          "  --conn-per-request    open a connection per request, close it when answered\n"
          "                        (connect time counts; depth 1; not with --rate)\n"
          "  --keys K              params {\"key\":N}, N among K keys (default 0: --params)\n"
          "  --zipf S              key popularity Zipf(S) (default 0: uniform)\n"
          "  --write-ratio F       share of requests sent as --write-type (default 0)\n"
          "  --write-type T        write command type (default set_value)\n"
          "  --seed N              random seed for keys and writes (default 1)\n"
          "  --help                this text\n"
          "\n"
          "Prints one JSON line. Exit 0; 1 if any request was lost, answered twice or\n"
          "answered with an unknown id; 2 on bad usage or when it cannot connect.\n",
          f);
}

static bool lg_parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
    char *end;
    if (!s || *s < '0' || *s > '9')
        return false;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return false;
    *out = (unsigned)v;
    return true;
}

static bool lg_parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    if (!s || !*s)
        return false;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static bool lg_parse_secs(const char *s, double lo, double *out)
{
    return lg_parse_double(s, lo, 86400.0, out);
}

static int lg_parse_value(struct lg_opts *o, const char *a, const char *v)
{
    bool ok = true;
    if (strcmp(a, "--mode") == 0) {
        ok = strcmp(v, "broker") == 0 || strcmp(v, "direct") == 0 || strcmp(v, "compat") == 0;
        o->mode = strcmp(v, "direct") == 0   ? LG_MODE_DIRECT
                  : strcmp(v, "compat") == 0 ? LG_MODE_COMPAT
                                             : LG_MODE_BROKER;
        o->mode_set = true;
    } else if (strcmp(a, "--framing") == 0) {
        ok = strcmp(v, "json") == 0 || strcmp(v, "ndjson") == 0;
        o->framing = strcmp(v, "ndjson") == 0 ? LG_FRAMING_NDJSON : LG_FRAMING_JSON;
        o->framing_set = true;
    } else if (strcmp(a, "--unix") == 0)
        o->unix_path = v;
    else if (strcmp(a, "--tcp") == 0)
        o->tcp = v;
    else if (strcmp(a, "--connections") == 0)
        ok = lg_parse_uint(v, 1, 1000000, &o->conns);
    else if (strcmp(a, "--depth") == 0)
        ok = lg_parse_uint(v, 1, 65536, &o->depth);
    else if (strcmp(a, "--threads") == 0)
        ok = lg_parse_uint(v, 1, 1024, &o->threads);
    else if (strcmp(a, "--duration") == 0)
        ok = lg_parse_secs(v, 0.001, &o->duration);
    else if (strcmp(a, "--warmup") == 0)
        ok = lg_parse_secs(v, 0.0, &o->warmup);
    else if (strcmp(a, "--drain") == 0)
        ok = lg_parse_secs(v, 0.0, &o->drain);
    else if (strcmp(a, "--type") == 0)
        ok = (o->type = v)[0] != '\0' && strlen(v) <= 1024;
    else if (strcmp(a, "--params") == 0)
        o->params = v;
    else if (strcmp(a, "--rate") == 0)
        ok = lg_parse_double(v, 1.0, 1e9, &o->rate);
    else if (strcmp(a, "--keys") == 0)
        ok = lg_parse_uint(v, 1, 10000000, &o->keys);
    else if (strcmp(a, "--zipf") == 0)
        ok = lg_parse_double(v, 0.0, 10.0, &o->zipf);
    else if (strcmp(a, "--write-ratio") == 0)
        ok = lg_parse_double(v, 0.0, 1.0, &o->write_ratio);
    else if (strcmp(a, "--write-type") == 0)
        ok = (o->write_type = v)[0] != '\0' && strlen(v) <= 1024;
    else if (strcmp(a, "--seed") == 0) {
        char *end;
        errno = 0;
        o->seed = strtoull(v, &end, 10);
        ok = !errno && *end == '\0' && *v >= '0' && *v <= '9';
    } else
        ok = false;
    if (!ok)
        fprintf(stderr, "loadgen: bad option or value: %s %s (see --help)\n", a, v);
    return ok ? 0 : 2;
}

/* params must frame as one object or array and fit on one NDJSON line. */
static bool lg_params_ok(const char *p)
{
    struct pjson_scan s = {0};
    size_t n = strlen(p);
    ssize_t end = pjson_scan(&s, p, n);
    return end > 0 && !pjson_has_data(p + end, n - (size_t)end) && !memchr(p, '\n', n) &&
           !memchr(p, '\r', n);
}

static int lg_parse_args(int argc, char **argv, struct lg_opts *o)
{
    *o = (struct lg_opts){.conns = 8,
                          .depth = 1,
                          .threads = 2,
                          .duration = 5.0,
                          .drain = 5.0,
                          .type = "get_scene_info",
                          .params = "{}",
                          .write_type = "set_value",
                          .seed = 1};
    for (int i = 1; i < argc; i += 2) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            lg_usage(stdout);
            exit(0);
        }
        if (strcmp(argv[i], "--conn-per-request") == 0) {
            o->conn_per_request = true;
            i--; /* a flag: no value */
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "loadgen: unknown option or missing value: %s (see --help)\n", argv[i]);
            return 2;
        }
        if (lg_parse_value(o, argv[i], argv[i + 1]) != 0)
            return 2;
    }
    if (!o->unix_path == !o->tcp) {
        fprintf(stderr, "loadgen: give exactly one of --unix PATH or --tcp HOST:PORT\n");
        return 2;
    }
    if (!o->mode_set)
        o->mode = o->unix_path ? LG_MODE_BROKER : LG_MODE_DIRECT;
    if (!lg_params_ok(o->params)) {
        fprintf(stderr, "loadgen: --params must be one JSON object or array on one line\n");
        return 2;
    }
    if (o->mode == LG_MODE_BROKER) {
        if (o->framing_set && o->framing != LG_FRAMING_NDJSON)
            fprintf(stderr, "loadgen: broker mode always uses NDJSON; --framing ignored\n");
        o->framing = LG_FRAMING_NDJSON;
    } else if (o->depth > 1) {
        fprintf(stderr,
                "loadgen: %s mode keeps exactly 1 request in flight per "
                "connection (the add-on protocol cannot take two); --depth %u ignored\n",
                o->mode == LG_MODE_COMPAT ? "compat" : "direct", o->depth);
        o->depth = 1;
    }
    if (o->conn_per_request && o->rate > 0) {
        fprintf(stderr, "loadgen: --conn-per-request with --rate is not supported\n");
        return 2;
    }
    if (o->conn_per_request && o->depth > 1) {
        fprintf(stderr, "loadgen: --conn-per-request sends 1 request per connection; "
                        "--depth %u ignored\n", o->depth);
        o->depth = 1;
    }
    if (o->threads > o->conns)
        o->threads = o->conns;
    return 0;
}

/* Build the request bytes that do not change between requests. */
static int lg_build_tail(struct lg_run *run)
{
    struct lg_out o = {.len = 0};
    if (run->o.mode == LG_MODE_BROKER)
        lg_put(&o, ",\"type\":");
    else
        lg_put(&o, "{\"type\":");
    lg_put_jstr(&o, run->o.type);
    size_t head = o.len, plen = strlen(run->o.params);
    bool nl = run->o.framing == LG_FRAMING_NDJSON;
    run->tail = malloc(head + plen + 16);
    if (!run->tail)
        return -ENOMEM;
    size_t n = 0;
    memcpy(run->tail, o.buf, head);
    n += head;
    memcpy(run->tail + n, ",\"params\":", 10);
    n += 10;
    memcpy(run->tail + n, run->o.params, plen);
    n += plen;
    run->tail[n++] = '}';
    if (nl)
        run->tail[n++] = '\n';
    run->tail_len = n;
    if (run->o.keys == 0)
        return 0;
    /* --keys: everything up to the key's digits, for a read and for a write. */
    for (int w = 0; w < 2; w++) {
        struct lg_out k = {.len = 0};
        lg_put(&k, run->o.mode == LG_MODE_BROKER ? ",\"type\":" : "{\"type\":");
        lg_put_jstr(&k, w ? run->o.write_type : run->o.type);
        lg_put(&k, ",\"params\":{\"key\":");
        if (!(run->khead[w] = malloc(k.len)))
            return -ENOMEM;
        memcpy(run->khead[w], k.buf, k.len);
        run->khead_len[w] = k.len;
    }
    if (run->o.zipf > 0) {
        double sum = 0;
        if (!(run->zcdf = malloc(run->o.keys * sizeof(*run->zcdf))))
            return -ENOMEM;
        for (unsigned i = 0; i < run->o.keys; i++)
            run->zcdf[i] = (sum += 1.0 / pow((double)i + 1.0, run->o.zipf));
        for (unsigned i = 0; i < run->o.keys; i++)
            run->zcdf[i] /= sum;
    }
    return 0;
}

/* ---------------------------------------------------------------- main */

static double lg_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int lg_setup(struct lg_run *run)
{
    char err[256] = "";
    run->conns = calloc(run->o.conns, sizeof(*run->conns));
    run->threads = calloc(run->o.threads, sizeof(*run->threads));
    /* -1 before anything can fail: lg_free closes what is not -1. */
    for (unsigned i = 0; run->conns && i < run->o.conns; i++)
        run->conns[i].fd = -1;
    for (unsigned i = 0; run->threads && i < run->o.threads; i++)
        run->threads[i].epfd = -1;
    if (!run->conns || !run->threads || lg_build_tail(run) < 0) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 2;
    }
    for (unsigned i = 0; i < run->o.conns; i++) {
        if (lg_conn_init(run, &run->conns[i], i, err, sizeof(err)) < 0) {
            fprintf(stderr, "loadgen: cannot connect to %s%s (connection %u of %u): %s\n",
                    run->is_tcp ? "" : "unix:", run->is_tcp ? run->o.tcp : run->o.unix_path, i + 1,
                    run->o.conns, err);
            return 2;
        }
    }
    for (unsigned i = 0; i < run->o.threads; i++) {
        int rc = lg_thread_init(run, &run->threads[i], i);
        if (rc < 0) {
            fprintf(stderr, "loadgen: thread setup: %s\n", strerror(-rc));
            return 2;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct lg_run run = {0};
    struct lg_totals tt;
    int rc = lg_parse_args(argc, argv, &run.o);
    if (rc != 0)
        return rc;
    run.is_tcp = run.o.tcp != NULL;
    atomic_init(&run.log_budget, LG_LOG_BUDGET);
    signal(SIGPIPE, SIG_IGN);
    tool_raise_nofile();
    if ((rc = lg_setup(&run)) != 0) {
        lg_free(&run);
        return rc;
    }
    uint64_t start = lg_now();
    run.t_measure = start + (uint64_t)(run.o.warmup * 1e9);
    run.t_end = run.t_measure + (uint64_t)(run.o.duration * 1e9);
    run.t_drain_end = run.t_end + (uint64_t)(run.o.drain * 1e9);
    for (unsigned i = 0; i < run.o.threads; i++) {
        struct lg_thread *t = &run.threads[i];
        t->rng = (run.o.seed + 1) * 0x9E3779B97F4A7C15ull + i + 1;
        if (run.o.rate > 0) {
            /* Thread i sends every threads-th slot of one schedule of rate R. */
            t->interval_ns = 1e9 * (double)run.o.threads / run.o.rate;
            t->t_first = start + (uint64_t)(1e9 * (double)i / run.o.rate);
            t->k_end = t->t_first < run.t_end
                           ? (uint64_t)ceil((double)(run.t_end - t->t_first) / t->interval_ns)
                           : 0;
        }
    }
    for (unsigned i = 0; i < run.o.threads; i++) {
        struct lg_thread *t = &run.threads[i];
        if (pthread_create(&t->th, NULL, lg_thread_main, t) != 0) {
            fprintf(stderr, "loadgen: cannot start thread %u\n", i);
            rc = 2; /* the started ones still stop at the end of the drain */
            break;
        }
        t->started = true;
    }
    lg_sleep_until(run.t_measure);
    double cpu0 = lg_cpu_s();
    lg_sleep_until(run.t_end);
    double cpu1 = lg_cpu_s();
    for (unsigned i = 0; i < run.o.threads; i++)
        if (run.threads[i].started)
            pthread_join(run.threads[i].th, NULL);
    if (rc == 0) {
        memset(&tt, 0, sizeof(tt));
        lg_merge(&run, &tt);
        lg_report(&run, &tt, cpu1 - cpu0);
        rc = tt.lost || tt.duplicates || tt.unknown ? 1 : 0;
    }
    lg_free(&run);
    return rc;
}
