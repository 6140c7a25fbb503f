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
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include "pjson.h"
#include "tool.h"

#define LG_SCRATCH       ((size_t)256 << 10)
#define LG_MAX_MESSAGE   ((size_t)512 << 20)
#define LG_EVENTS        256
#define LG_HIST_SUB_BITS 7u
#define LG_HIST_SUB      (1u << LG_HIST_SUB_BITS)
#define LG_HIST_MAX_NS   (60ull * 1000000000ull)
/* 60 s < 2^36 ns: octaves 8..35 need (36 - 7 + 1) groups of 128 buckets. */
#define LG_HIST_BUCKETS ((36u - LG_HIST_SUB_BITS + 1u) * LG_HIST_SUB)
#define LG_MAX_CODES    32
#define LG_CODE_LEN     48
#define LG_LOG_BUDGET   20

enum lg_mode { LG_MODE_BROKER, LG_MODE_DIRECT, LG_MODE_COMPAT };
enum lg_framing { LG_FRAMING_JSON, LG_FRAMING_NDJSON };

struct lg_opts {
    const char *unix_path, *tcp;
    enum lg_mode mode;
    bool mode_set, framing_set;
    enum lg_framing framing;
    unsigned conns, depth, threads;
    double duration, warmup, drain;
    const char *type, *params;
    double rate;            /* open loop: requests/s over all threads; 0 = closed loop */
    bool conn_per_request;  /* a new connection per request */
    unsigned keys;          /* 0: fixed params; else params {"key":N}, N < keys */
    double zipf;            /* key popularity exponent; 0 = uniform */
    double write_ratio;     /* share of requests sent as write_type */
    const char *write_type;
    uint64_t seed;
};

struct lg_hist {
    uint64_t count, max_ns;
    uint64_t b[LG_HIST_BUCKETS];
};

struct lg_code {
    char name[LG_CODE_LEN];
    uint64_t n;
};

struct lg_codes {
    struct lg_code c[LG_MAX_CODES];
    unsigned n;
    uint64_t other; /* codes beyond the table */
};


/* One request in flight: its send time and how many times the slot was used. */
struct lg_slot {
    uint64_t t0;
    uint64_t sent; /* generation of the request in flight is sent - 1 */
    bool busy, measured;
};

struct lg_thread;

struct lg_conn {
    int fd;
    unsigned idx; /* global connection number, part of every id */
    struct lg_thread *t;
    bool dead, want_out;
    struct lg_slot *slots;
    unsigned *free_slots;
    unsigned nfree, outstanding;
    char *pend; /* incomplete answer carried over to the next read */
    size_t pend_len, pend_cap;
    struct pjson_scan scan;
    char *out;
    size_t out_len, out_off, out_cap;
};

struct lg_run;

struct lg_thread {
    struct lg_run *run;
    pthread_t th;
    bool started;
    int epfd;
    struct lg_conn **conns;
    unsigned nconns, live_conns;
    char *scratch;
    uint64_t live_outstanding;
    struct lg_hist hist;
    uint64_t sent, ok, errors, window_done, duplicates, unknown, closed;
    struct lg_codes codes;
    /* open loop */
    uint64_t t_first;    /* intended time of this thread's request 0 */
    double interval_ns;  /* between two intended times of this thread */
    uint64_t k_next;     /* next index to send */
    uint64_t k_end;      /* indices below it are due before t_end */
    unsigned rr;         /* round-robin cursor over conns */
    uint64_t reconnects; /* --conn-per-request */
    uint64_t rng;
};

struct lg_run {
    struct lg_opts o;
    bool is_tcp;
    char *tail; /* broker: what follows the id; direct: the whole request */
    size_t tail_len;
    /* --keys: the request up to the key digits, for reads [0] and writes [1] */
    char *khead[2];
    size_t khead_len[2];
    double *zcdf; /* --zipf: cumulative popularity of keys 0..keys-1 */
    uint64_t t_measure, t_end, t_drain_end;
    struct lg_conn *conns;
    struct lg_thread *threads;
    _Atomic int log_budget;
};

/* ---------------------------------------------------------------- utilities */

static uint64_t lg_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void lg_sleep_until(uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u),
                          .tv_nsec = (long)(ns % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

__attribute__((format(printf, 2, 3))) static void lg_log(struct lg_run *run, const char *fmt, ...)
{
    /* A broken peer must not turn the run into a flood of stderr lines. */
    int left = atomic_fetch_sub_explicit(&run->log_budget, 1, memory_order_relaxed);
    if (left <= 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    flockfile(stderr);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(left == 1 ? " (further messages suppressed)\n" : "\n", stderr);
    funlockfile(stderr);
    va_end(ap);
}

static size_t lg_u64_digits(char *buf, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    return n;
}

/* ---------------------------------------------------------------- histogram */

static unsigned lg_hist_index(uint64_t v)
{
    if (v > LG_HIST_MAX_NS)
        v = LG_HIST_MAX_NS;
    if (v < 2 * LG_HIST_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - LG_HIST_SUB_BITS;
    return (shift + 1) * LG_HIST_SUB + (unsigned)((v >> shift) - LG_HIST_SUB);
}

/* The midpoint of a bucket: at most half a bucket width (0.4 %) off. */
static uint64_t lg_hist_value(unsigned idx)
{
    if (idx < 2 * LG_HIST_SUB)
        return idx;
    unsigned shift = idx / LG_HIST_SUB - 1;
    uint64_t sub = idx % LG_HIST_SUB + LG_HIST_SUB;
    return (sub << shift) + ((1ull << shift) >> 1);
}

static void lg_hist_add(struct lg_hist *h, uint64_t ns)
{
    h->b[lg_hist_index(ns)]++;
    h->count++;
    if (ns > h->max_ns)
        h->max_ns = ns;
}

static void lg_hist_merge(struct lg_hist *dst, const struct lg_hist *src)
{
    for (unsigned i = 0; i < LG_HIST_BUCKETS; i++)
        dst->b[i] += src->b[i];
    dst->count += src->count;
    if (src->max_ns > dst->max_ns)
        dst->max_ns = src->max_ns;
}

static uint64_t lg_hist_pct(const struct lg_hist *h, double p)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil(p * (double)h->count);
    uint64_t seen = 0;
    if (rank == 0)
        rank = 1;
    for (unsigned i = 0; i < LG_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = lg_hist_value(i);
            return v > h->max_ns ? h->max_ns : v;
        }
    }
    return h->max_ns;
}

/* ---------------------------------------------------------------- error codes */

static void lg_codes_add(struct lg_codes *t, const char *name, size_t len, uint64_t n)
{
    char clean[LG_CODE_LEN];
    if (len >= LG_CODE_LEN)
        len = LG_CODE_LEN - 1;
    /* Codes are snake_case; anything else is replaced so the output stays JSON. */
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        bool keep = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' || ch == '.';
        clean[i] = keep ? ch : '?';
    }
    clean[len] = '\0';
    for (unsigned i = 0; i < t->n; i++)
        if (strcmp(t->c[i].name, clean) == 0) {
            t->c[i].n += n;
            return;
        }
    if (t->n == LG_MAX_CODES) {
        t->other += n;
        return;
    }
    memcpy(t->c[t->n].name, clean, len + 1);
    t->c[t->n++].n = n;
}

/* ---------------------------------------------------------------- JSON */

static bool lg_span_str_eq(struct pjson_span v, const char *lit)
{
    size_t n = strlen(lit);
    return v.p && v.n == n + 2 && v.p[0] == '"' && memcmp(v.p + 1, lit, n) == 0;
}

static bool lg_span_u64(struct pjson_span v, uint64_t *out)
{
    uint64_t x = 0;
    if (!v.p || v.n == 0 || v.n > 19)
        return false;
    for (size_t i = 0; i < v.n; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return false;
        x = x * 10 + (uint64_t)(v.p[i] - '0');
    }
    *out = x;
    return true;
}

/* ---------------------------------------------------------------- connections */

static void lg_conn_fail(struct lg_conn *c, const char *why)
{
    struct lg_thread *t = c->t;
    if (c->dead)
        return;
    if (c->outstanding)
        lg_log(t->run, "connection %u: %s (%u requests in flight, counted as lost)", c->idx, why,
               c->outstanding);
    else
        lg_log(t->run, "connection %u: %s", c->idx, why);
    c->dead = true;
    close(c->fd);
    c->fd = -1;
    t->live_outstanding -= c->outstanding;
    t->live_conns--;
    t->closed++;
}

static void lg_conn_want_out(struct lg_conn *c, bool want)
{
    if (c->want_out == want || c->dead)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0u), .data.ptr = c};
    if (epoll_ctl(c->t->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->want_out = want;
    else
        lg_conn_fail(c, "epoll_ctl failed");
}

static void lg_conn_flush(struct lg_conn *c)
{
    while (!c->dead && c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            lg_conn_want_out(c, true);
            return;
        }
        lg_conn_fail(c, n < 0 ? strerror(errno) : "send returned 0");
        return;
    }
    c->out_len = c->out_off = 0;
    lg_conn_want_out(c, false);
}

static bool lg_out_reserve(struct lg_conn *c, size_t extra)
{
    if (c->out_off > 0 && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_cap - c->out_len >= extra)
        return true;
    size_t cap = c->out_cap ? c->out_cap : 4096;
    while (cap - c->out_len < extra)
        cap *= 2;
    char *p = realloc(c->out, cap);
    if (!p)
        return false;
    c->out = p;
    c->out_cap = cap;
    return true;
}

/* xorshift64*: per thread, deterministic for a given --seed. */
static uint64_t lg_rand(struct lg_thread *t)
{
    uint64_t x = t->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    t->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static double lg_rand01(struct lg_thread *t)
{
    return (double)(lg_rand(t) >> 11) * (1.0 / 9007199254740992.0);
}

/* --keys: a key (Zipf by binary search in the cumulative table, or uniform). */
static uint64_t lg_draw_key(struct lg_thread *t)
{
    struct lg_run *run = t->run;
    if (!run->zcdf)
        return lg_rand(t) % run->o.keys;
    double u = lg_rand01(t);
    size_t lo = 0, hi = run->o.keys - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (run->zcdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Append the request for slot s, generation slot->sent, to the out buffer. */
static bool lg_put_request(struct lg_conn *c, unsigned s)
{
    struct lg_run *run = c->t->run;
    bool keyed = run->o.keys > 0;
    int w = keyed && run->o.write_ratio > 0 && lg_rand01(c->t) < run->o.write_ratio;
    size_t body = keyed ? run->khead_len[w] + 24 : run->tail_len;
    if (!lg_out_reserve(c, body + 32))
        return false;
    if (run->o.mode == LG_MODE_BROKER) {
        uint64_t tag = c->slots[s].sent * run->o.depth + s;
        uint64_t id = tag * run->o.conns + c->idx;
        memcpy(c->out + c->out_len, "{\"id\":", 6);
        c->out_len += 6;
        c->out_len += lg_u64_digits(c->out + c->out_len, id);
    }
    if (!keyed) {
        memcpy(c->out + c->out_len, run->tail, run->tail_len);
        c->out_len += run->tail_len;
        return true;
    }
    memcpy(c->out + c->out_len, run->khead[w], run->khead_len[w]);
    c->out_len += run->khead_len[w];
    c->out_len += lg_u64_digits(c->out + c->out_len, lg_draw_key(c->t));
    memcpy(c->out + c->out_len, "}}", 2);
    c->out_len += 2;
    if (run->o.framing == LG_FRAMING_NDJSON)
        c->out[c->out_len++] = '\n';
    return true;
}

/* Put one request in a free slot of c, sent (intended) at t0. */
static bool lg_conn_put(struct lg_conn *c, uint64_t t0)
{
    struct lg_thread *t = c->t;
    struct lg_run *run = t->run;
    unsigned s = c->free_slots[c->nfree - 1];
    struct lg_slot *sl = &c->slots[s];
    if (!lg_put_request(c, s)) {
        lg_conn_fail(c, "out of memory");
        return false;
    }
    c->nfree--;
    sl->sent++;
    sl->busy = true;
    sl->t0 = t0;
    sl->measured = t0 >= run->t_measure && t0 < run->t_end;
    t->sent += sl->measured;
    c->outstanding++;
    t->live_outstanding++;
    return true;
}

/* Top the connection up to --depth requests in flight, in one write. */
static void lg_conn_fill(struct lg_conn *c, uint64_t now)
{
    struct lg_run *run = c->t->run;
    if (c->dead || now >= run->t_end || c->nfree == 0 || run->o.rate > 0)
        return;
    while (c->nfree > 0)
        if (!lg_conn_put(c, now))
            return;
    lg_conn_flush(c);
}

/* Open loop: intended time of this thread's request k. */
static uint64_t lg_intended(const struct lg_thread *t, uint64_t k)
{
    return t->t_first + (uint64_t)((double)k * t->interval_ns);
}

/* Open loop: requests due by now (and intended before t_end) not yet sent. */
static uint64_t lg_backlog(const struct lg_thread *t, uint64_t now)
{
    uint64_t due;
    if (now < t->t_first)
        return 0;
    due = (uint64_t)((double)(now - t->t_first) / t->interval_ns) + 1;
    if (due > t->k_end)
        due = t->k_end;
    return due > t->k_next ? due - t->k_next : 0;
}

/* Open loop: send every due request, one per connection with a free slot in
 * round-robin order, each stamped with its intended time. */
static void lg_dispatch(struct lg_thread *t, uint64_t now)
{
    uint64_t n = lg_backlog(t, now);
    unsigned idle = 0; /* connections visited in a row without a free slot */
    while (n > 0 && idle < t->nconns) {
        struct lg_conn *c = t->conns[t->rr];
        t->rr = (t->rr + 1) % t->nconns;
        if (c->dead || c->nfree == 0) {
            idle++;
            continue;
        }
        idle = 0;
        if (!lg_conn_put(c, lg_intended(t, t->k_next)))
            continue;
        t->k_next++;
        n--;
        lg_conn_flush(c);
    }
}

/* An answer matched its request; code is NULL for success. */
static void lg_complete(struct lg_conn *c, unsigned s, uint64_t now, const char *code,
                        size_t code_len)
{
    struct lg_thread *t = c->t;
    struct lg_run *run = t->run;
    struct lg_slot *sl = &c->slots[s];
    sl->busy = false;
    c->free_slots[c->nfree++] = s;
    c->outstanding--;
    t->live_outstanding--;
    if (now >= run->t_measure && now < run->t_end)
        t->window_done++;
    if (!sl->measured)
        return;
    lg_hist_add(&t->hist, now - sl->t0);
    if (!code) {
        t->ok++;
        return;
    }
    t->errors++;
    lg_codes_add(&t->codes, code, code_len, 1);
}

static void lg_unknown(struct lg_conn *c, const char *what, const char *m, size_t n)
{
    c->t->unknown++;
    lg_log(c->t->run, "connection %u: %s: %.*s", c->idx, what, (int)(n > 120 ? 120 : n), m);
}

static void lg_on_broker(struct lg_conn *c, const char *m, size_t n, uint64_t now)
{
    static const char *const keys[3] = {"id", "status", "error"};
    static const char *const code_key[1] = {"code"};
    struct lg_run *run = c->t->run;
    struct pjson_span f[3], code = {NULL, 0};
    uint64_t id;

    if (!pjson_json_members(m, n, keys, f, 3) || !lg_span_u64(f[0], &id)) {
        lg_unknown(c, "answer without an id this client sent", m, n);
        return;
    }
    uint64_t tag = id / run->o.conns;
    unsigned s = (unsigned)(tag % run->o.depth);
    uint64_t gen = tag / run->o.depth;
    struct lg_slot *sl = &c->slots[s];
    if (id % run->o.conns != c->idx) {
        lg_unknown(c, "answer for another connection's id", m, n);
        return;
    }
    if (!sl->busy || gen + 1 != sl->sent) {
        /* Older generations of this slot were all answered before it was reused. */
        if (gen < sl->sent) {
            c->t->duplicates++;
            lg_log(run, "connection %u: duplicate answer for id %" PRIu64, c->idx, id);
        } else {
            lg_unknown(c, "answer for an id never sent", m, n);
        }
        return;
    }
    if (lg_span_str_eq(f[1], "success")) {
        lg_complete(c, s, now, NULL, 0);
        return;
    }
    if (!lg_span_str_eq(f[1], "error")) {
        lg_complete(c, s, now, "no_status", 9);
        return;
    }
    if (f[2].p && pjson_json_members(f[2].p, f[2].n, code_key, &code, 1) && code.p && code.n >= 2 &&
        code.p[0] == '"')
        lg_complete(c, s, now, code.p + 1, code.n - 2);
    else
        lg_complete(c, s, now, "no_code", 7);
}

/* compat: the broker's code at the head of an error message, if any. */
static size_t lg_compat_code(struct pjson_span msg, const char **code)
{
    if (!msg.p || msg.n < 4 || msg.p[0] != '"')
        return 0;
    size_t i = 1;
    while (i < msg.n && i < LG_CODE_LEN && ((msg.p[i] >= 'a' && msg.p[i] <= 'z') || msg.p[i] == '_'))
        i++;
    if (i == 1 || i + 1 >= msg.n || msg.p[i] != ':' || msg.p[i + 1] != ' ')
        return 0;
    *code = msg.p + 1;
    return i - 1;
}

static void lg_on_direct(struct lg_conn *c, const char *m, size_t n, uint64_t now)
{
    static const char *const keys[2] = {"status", "message"};
    struct pjson_span st[2];
    if (!c->slots[0].busy) {
        /* Nothing was asked: the add-on's next answer would be misattributed. */
        lg_unknown(c, "bytes received with no request in flight", m, n);
        return;
    }
    bool parsed = pjson_json_members(m, n, keys, st, 2);
    const char *code = NULL;
    size_t code_len = 0;
    if (parsed && c->t->run->o.mode == LG_MODE_COMPAT)
        code_len = lg_compat_code(st[1], &code);
    if (parsed && lg_span_str_eq(st[0], "success"))
        lg_complete(c, 0, now, NULL, 0);
    else if (parsed && lg_span_str_eq(st[0], "error") && code_len)
        lg_complete(c, 0, now, code, code_len);
    else if (parsed && lg_span_str_eq(st[0], "error"))
        lg_complete(c, 0, now, "backend_error", 13);
    else /* not an object, no status, or an unknown status */
        lg_complete(c, 0, now, "bad_backend_response", 20);
}

/* Next message in buf[0, n): 1 with its end in *end, 0 if incomplete, -EPROTO. */
static int lg_frame(struct lg_conn *c, const char *buf, size_t n, size_t *end)
{
    if (c->t->run->o.framing == LG_FRAMING_NDJSON) {
        const char *nl = memchr(buf + c->scan.pos, '\n', n - c->scan.pos);
        if (!nl) {
            c->scan.pos = n;
            return 0;
        }
        *end = (size_t)(nl - buf) + 1;
        return 1;
    }
    ssize_t r = pjson_scan(&c->scan, buf, n);
    if (r <= 0)
        return (int)r;
    *end = (size_t)r;
    return 1;
}

/* Handle every complete message in buf[0, n); returns the bytes used. */
static size_t lg_consume(struct lg_conn *c, const char *buf, size_t n, uint64_t now)
{
    size_t cur = 0;
    while (cur < n && !c->dead) {
        size_t end = 0;
        int rc = lg_frame(c, buf + cur, n - cur, &end);
        if (rc == 0)
            break;
        if (rc < 0) {
            /* No delimiter to resynchronise on: this connection is done. An
             * answer to the request in flight is an error, not a lost one. */
            if (c->slots[0].busy)
                lg_complete(c, 0, now, "bad_backend_response", 20);
            else
                lg_unknown(c, "bytes received with no request in flight", buf + cur, n - cur);
            lg_conn_fail(c, "answer is not JSON, framing lost");
            return n;
        }
        const char *m = buf + cur;
        c->scan = (struct pjson_scan){0};
        cur += end;
        if (!pjson_has_data(m, end))
            continue;
        if (c->t->run->o.mode == LG_MODE_BROKER)
            lg_on_broker(c, m, end, now);
        else
            lg_on_direct(c, m, end, now);
    }
    return cur;
}

static bool lg_pend_append(struct lg_conn *c, const char *p, size_t n)
{
    if (c->pend_cap - c->pend_len < n) {
        size_t cap = c->pend_cap ? c->pend_cap : 4096;
        while (cap - c->pend_len < n)
            cap *= 2;
        if (cap > LG_MAX_MESSAGE)
            return false;
        char *q = realloc(c->pend, cap);
        if (!q)
            return false;
        c->pend = q;
        c->pend_cap = cap;
    }
    memcpy(c->pend + c->pend_len, p, n);
    c->pend_len += n;
    return true;
}

static void lg_conn_input(struct lg_conn *c, const char *buf, size_t n, uint64_t now)
{
    if (c->pend_len == 0) {
        size_t used = lg_consume(c, buf, n, now);
        /* The scanner's offsets are relative to the first unused byte, so the
         * tail keeps them when copied to the start of pend. */
        if (!c->dead && used < n && !lg_pend_append(c, buf + used, n - used))
            lg_conn_fail(c, "answer too large or out of memory");
        return;
    }
    if (!lg_pend_append(c, buf, n)) {
        lg_conn_fail(c, "answer too large or out of memory");
        return;
    }
    size_t used = lg_consume(c, c->pend, c->pend_len, now);
    if (c->dead)
        return;
    memmove(c->pend, c->pend + used, c->pend_len - used);
    c->pend_len -= used;
    if (c->pend_len == 0 && c->pend_cap > LG_SCRATCH) {
        free(c->pend);
        c->pend = NULL;
        c->pend_cap = 0;
    }
}

static int lg_connect_one(struct lg_run *run, char *err, size_t errlen);

/* A connection leaves the run without an error (--conn-per-request). */
static void lg_conn_retire(struct lg_conn *c)
{
    c->dead = true;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->t->live_conns--;
}

/* --conn-per-request: the answer is in; close the connection and, while the
 * run lasts, open the next one and send on it. The connect counts in the next
 * request's latency. */
static void lg_conn_cycle(struct lg_conn *c)
{
    struct lg_thread *t = c->t;
    struct lg_run *run = t->run;
    char err[256] = "";
    close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    c->want_out = false;
    c->pend_len = 0;
    c->scan = (struct pjson_scan){0};
    c->out_len = c->out_off = 0;
    uint64_t now = lg_now();
    if (now >= run->t_end) {
        lg_conn_retire(c);
        return;
    }
    int fd = lg_connect_one(run, err, sizeof(err));
    if (fd < 0) {
        lg_log(run, "connection %u: reconnect: %s", c->idx, err);
        lg_conn_retire(c);
        t->closed++;
        return;
    }
    c->fd = fd;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
        epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        lg_log(run, "connection %u: reconnect: %s", c->idx, strerror(errno));
        lg_conn_retire(c);
        t->closed++;
        return;
    }
    t->reconnects++;
    lg_conn_fill(c, now);
}

static void lg_conn_readable(struct lg_conn *c)
{
    struct lg_thread *t = c->t;
    ssize_t n = recv(c->fd, t->scratch, LG_SCRATCH, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        lg_conn_fail(c, n == 0 ? "closed by the peer" : strerror(errno));
        return;
    }
    uint64_t now = lg_now();
    lg_conn_input(c, t->scratch, (size_t)n, now);
    if (t->run->o.conn_per_request && !c->dead && c->outstanding == 0)
        lg_conn_cycle(c);
    else if (t->run->o.rate > 0)
        lg_dispatch(t, now);
    else
        lg_conn_fill(c, now);
}

static void *lg_thread_main(void *arg)
{
    struct lg_thread *t = arg;
    struct lg_run *run = t->run;
    struct epoll_event evs[LG_EVENTS];
    uint64_t now = lg_now();

    bool open_loop = run->o.rate > 0;
    if (open_loop)
        prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* wake at the intended times */
    for (unsigned i = 0; i < t->nconns && !open_loop; i++)
        lg_conn_fill(t->conns[i], now);
    for (;;) {
        now = lg_now();
        uint64_t backlog = 0;
        if (open_loop) {
            lg_dispatch(t, now);
            backlog = lg_backlog(t, now);
        }
        if (t->live_conns == 0)
            break;
        if (now >= run->t_end &&
            ((t->live_outstanding == 0 && (backlog == 0 || t->k_next >= t->k_end)) ||
             now >= run->t_drain_end))
            break;
        uint64_t next = now < run->t_end ? run->t_end : run->t_drain_end;
        /* Open loop with nothing waiting: wake for the next intended time. */
        if (open_loop && backlog == 0 && t->k_next < t->k_end) {
            uint64_t due = lg_intended(t, t->k_next);
            if (due < next)
                next = due;
        }
        uint64_t wait_ns = next > now ? next - now : 0;
        struct timespec ts = {.tv_sec = (time_t)(wait_ns / 1000000000u),
                              .tv_nsec = (long)(wait_ns % 1000000000u)};
        int n = epoll_pwait2(t->epfd, evs, LG_EVENTS, &ts, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            lg_log(run, "epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            struct lg_conn *c = evs[i].data.ptr;
            if (!c->dead && (evs[i].events & EPOLLOUT))
                lg_conn_flush(c);
            if (!c->dead && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                lg_conn_readable(c);
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------- setup */

static int lg_connect_one(struct lg_run *run, char *err, size_t errlen)
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

/* ---------------------------------------------------------------- output */

struct lg_out {
    char buf[8192];
    size_t len;
};

__attribute__((format(printf, 2, 3))) static void lg_put(struct lg_out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, sizeof(o->buf) - o->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n < sizeof(o->buf) - o->len ? (size_t)n : sizeof(o->buf) - 1 - o->len;
}

/* A JSON string literal of s: quotes, backslashes and control bytes escaped. */
static void lg_put_jstr(struct lg_out *o, const char *s)
{
    lg_put(o, "\"");
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            lg_put(o, "\\%c", ch);
        else if (ch < 0x20)
            lg_put(o, "\\u%04x", ch);
        else
            lg_put(o, "%c", ch);
    }
    lg_put(o, "\"");
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

struct lg_totals {
    struct lg_hist hist;
    uint64_t sent, ok, errors, window_done, duplicates, unknown, closed, lost, unsent,
        reconnects;
    struct lg_codes codes;
};

static void lg_merge(struct lg_run *run, struct lg_totals *tt)
{
    for (unsigned i = 0; i < run->o.threads; i++) {
        struct lg_thread *t = &run->threads[i];
        lg_hist_merge(&tt->hist, &t->hist);
        tt->sent += t->sent;
        tt->ok += t->ok;
        tt->errors += t->errors;
        tt->window_done += t->window_done;
        tt->duplicates += t->duplicates;
        tt->unknown += t->unknown;
        tt->closed += t->closed;
        tt->reconnects += t->reconnects;
        if (run->o.rate > 0 && t->k_end > t->k_next)
            tt->unsent += t->k_end - t->k_next;
        for (unsigned k = 0; k < t->codes.n; k++)
            lg_codes_add(&tt->codes, t->codes.c[k].name, strlen(t->codes.c[k].name),
                         t->codes.c[k].n);
        tt->codes.other += t->codes.other;
    }
    /* Lost: in flight at the end, on live connections or on closed ones. */
    for (unsigned i = 0; i < run->o.conns; i++)
        for (unsigned s = 0; s < run->o.depth; s++)
            tt->lost += run->conns[i].slots[s].busy;
}

static double lg_us(uint64_t ns)
{
    return (double)ns / 1000.0;
}

static void lg_report(struct lg_run *run, const struct lg_totals *tt, double cpu_s)
{
    struct lg_out o = {.len = 0};
    const struct lg_opts *op = &run->o;
    lg_put(&o, "{\"bench\":\"loadgen\",\"mode\":\"%s\",\"transport\":\"%s\",\"framing\":\"%s\",",
           op->mode == LG_MODE_BROKER   ? "broker"
           : op->mode == LG_MODE_COMPAT ? "compat"
                                        : "direct",
           run->is_tcp ? "tcp" : "unix",
           op->framing == LG_FRAMING_NDJSON ? "ndjson" : "json");
    lg_put(&o, "\"type\":");
    lg_put_jstr(&o, op->type);
    lg_put(&o,
           ",\"connections\":%u,\"depth\":%u,\"threads\":%u,\"duration_s\":%.3f,"
           "\"warmup_s\":%.3f,",
           op->conns, op->depth, op->threads, op->duration, op->warmup);
    lg_put(&o,
           "\"requests\":%" PRIu64 ",\"ok\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"lost\":%" PRIu64
           ",\"duplicates\":%" PRIu64 ",\"unknown_ids\":%" PRIu64 ",\"sent\":%" PRIu64
           ",\"closed_connections\":%" PRIu64 ",",
           tt->ok + tt->errors, tt->ok, tt->errors, tt->lost, tt->duplicates, tt->unknown, tt->sent,
           tt->closed);
    double rps = (double)tt->window_done / op->duration;
    lg_put(&o,
           "\"rps\":%.0f,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,"
           "\"max_us\":%.1f,",
           rps, lg_us(lg_hist_pct(&tt->hist, 0.50)), lg_us(lg_hist_pct(&tt->hist, 0.90)),
           lg_us(lg_hist_pct(&tt->hist, 0.99)), lg_us(lg_hist_pct(&tt->hist, 0.999)),
           lg_us(tt->hist.max_ns));
    lg_put(&o,
           "\"open_loop\":%s,\"offered_rps\":%.0f,\"unsent\":%" PRIu64
           ",\"conn_per_request\":%s,\"reconnects\":%" PRIu64 ",\"keys\":%u,",
           op->rate > 0 ? "true" : "false", op->rate, tt->unsent,
           op->conn_per_request ? "true" : "false", tt->reconnects, op->keys);
    lg_put(&o, "\"cpu_s\":%.3f,\"cpu_us_per_req\":%.2f,\"error_codes\":{", cpu_s,
           tt->window_done ? cpu_s * 1e6 / (double)tt->window_done : 0.0);
    for (unsigned k = 0; k < tt->codes.n; k++)
        lg_put(&o, "%s\"%s\":%" PRIu64, k ? "," : "", tt->codes.c[k].name, tt->codes.c[k].n);
    if (tt->codes.other)
        lg_put(&o, "%s\"other\":%" PRIu64, tt->codes.n ? "," : "", tt->codes.other);
    lg_put(&o, "}}\n");
    fwrite(o.buf, 1, o.len, stdout);
    fflush(stdout);
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
