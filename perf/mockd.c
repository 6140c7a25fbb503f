/*
 * mockd.c - a fast stand-in for the Blender add-on's socket server, with fault
 * injection, so the broker can be tested and benchmarked without Blender.
 *
 * Protocol (blender-mcp addon.py): the client writes one JSON object
 * {"type": T, "params": {...}} with no delimiter and reads one JSON object back,
 * {"status": "success", "result": ...} or {"status": "error", "message": ...};
 * one request at a time per connection, answered in order. With
 * --framing ndjson requests and answers both end with '\n' instead.
 *
 * Design
 * - N worker threads, each with its own epoll, timerfd and eventfd. Worker 0
 *   owns the listener and hands accepted connections out round-robin through a
 *   per-worker inbox (mutex + eventfd wake-up). Accepts are rare next to
 *   requests; round-robin keeps a handful of benchmark connections evenly
 *   spread, where SO_REUSEPORT hashing would not, and a single listener makes
 *   "address in use" a plain bind error. After the hand-off a connection is
 *   touched only by its worker.
 * - Framing by JSON completeness: one scanner pass per byte, with depth,
 *   in-string and escape state kept in the connection across reads (never a
 *   re-parse of the buffer per chunk). A framed request is then walked once at
 *   its top level to find "type" and "params"; values are skipped, not parsed,
 *   and params are looked into only by the answers that need a field.
 * - Every wait (--delay-us, slow, drip) is a deadline in a per-worker binary
 *   heap behind one timerfd: no thread ever sleeps, so one slow connection
 *   never stalls another.
 * - Request counters are per-worker single-writer atomics (no shared cache line
 *   on the request path), summed on demand by mock_stats and at exit.
 *   Connection counts are process-wide atomics: accepts are rare.
 *
 * Invariants
 * - At most one request per connection is being handled. Bytes of another
 *   request that are present while one is being handled (from the moment it is
 *   framed until its answer is completely written) count one overlap for it:
 *   the real add-on would fail on them with "Extra data" and hang. mockd
 *   itself stays lenient and answers them afterwards, in order, so a load run
 *   still ends; behind a correct broker the counter stays 0.
 * - A closed connection is only marked dead and freed after the current epoll
 *   batch, so events already returned for it are skipped safely.
 *
 * Limits: a request over 64 MiB is refused; the top-level value must start
 * with '{' or '['; --delay-us runs concurrently on every connection, whereas
 * Blender runs all commands one at a time on its main thread; accept() failing
 * with EMFILE is logged and retried on the next wake-up, not throttled.
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "pjson.h"
#include "tool.h"

#define MOCK_MAX_REQUEST  ((size_t)64 << 20)
#define MOCK_READ_MIN     ((size_t)4096)
#define MOCK_KEEP_BUF     ((size_t)64 << 10) /* larger buffers are freed when idle */
#define MOCK_EVENTS       256
#define MOCK_ACCEPT_BATCH 64
#define MOCK_HUGE_DEFAULT ((uint64_t)1 << 20)
#define MOCK_HUGE_MAX     ((uint64_t)256 << 20)
#define MOCK_LOG_BUDGET   20

enum mock_framing { MOCK_FRAMING_JSON, MOCK_FRAMING_NDJSON };

enum mock_fault {
    MOCK_FAULT_NONE,
    MOCK_FAULT_HANG,
    MOCK_FAULT_CLOSE,
    MOCK_FAULT_PARTIAL,
    MOCK_FAULT_GARBAGE,
    MOCK_FAULT_DRIP,
    MOCK_FAULT_SLOW,
    MOCK_FAULT_HUGE,
    MOCK_FAULT_ERROR,
    MOCK_FAULT_ARRAY,
    MOCK_FAULT_EMPTY,
    MOCK_FAULT_EXTRA,
    MOCK_FAULT_NONASCII,
    MOCK_FAULT_COUNT
};

static const char *const mock_fault_names[MOCK_FAULT_COUNT] = {
    "none", "hang",  "close", "partial", "garbage", "drip",     "slow",
    "huge", "error", "array", "empty",   "extra",   "nonascii",
};

struct mock_opts {
    const char *listen;
    enum mock_framing framing;
    unsigned threads;
    enum mock_fault fault;
    uint64_t delay_ns;
    uint64_t work_ns;
    int stats_fd;
    bool quiet;
};

/* Every fd in an epoll set starts with this, so one switch dispatches. */
enum mock_kind { MOCK_KIND_LISTEN, MOCK_KIND_WAKE, MOCK_KIND_TIMER, MOCK_KIND_CONN };

struct mock_handle {
    enum mock_kind kind;
    int fd;
};

enum mock_state {
    MOCK_IDLE,    /* reading; no request being handled */
    MOCK_WAIT,    /* answer built, waiting for its deadline (--delay-us, slow) */
    MOCK_WRITING, /* answer being written */
    MOCK_DRIP,    /* answer written one byte per deadline */
    MOCK_HUNG,    /* never answers again (hang, garbage); input is discarded */
};


struct mock_server;
struct mock_worker;

struct mock_conn {
    struct mock_handle h; /* first: epoll data.ptr points here */
    struct mock_worker *w;
    struct mock_conn *prev, *next; /* worker's list; inbox and graveyard use next */
    uint64_t serial, seq;
    char *in;
    size_t in_len, in_cap;
    struct pjson_scan scan;
    char *out;
    size_t out_len, out_off, out_cap;
    enum mock_state state;
    bool close_after, hang_after, overlap_seen, want_out, dead;
    uint64_t deadline_ns, drip_ns;
    size_t heap_idx; /* SIZE_MAX when no deadline is pending */
};

/* Requests per command type, so a test can tell how many calls of one
 * command reached the backend (coalescing, caching). One table per worker,
 * written only by it: a cell is claimed by writing the name, then
 * publishing its length (release); readers acquire the length first. */
#define MOCK_TYPES 64
#define MOCK_TYPE_MAX 64
struct mock_type_count {
    _Atomic uint32_t len; /* 0: free cell */
    char name[MOCK_TYPE_MAX];
    _Atomic uint64_t n;
};

struct mock_worker {
    struct mock_server *srv;
    unsigned id;
    int epfd;
    struct mock_handle wake, timer, listen;
    pthread_t thread;
    bool started;
    uint64_t armed_ns; /* deadline the timerfd is set to; 0 = not armed */
    struct mock_conn **heap;
    size_t heap_len, heap_cap;
    struct mock_conn *conns, *graveyard;
    unsigned next_worker; /* round-robin cursor, worker 0 only */
    pthread_mutex_t inbox_lock;
    struct mock_conn *inbox; /* guarded by inbox_lock */
    /* Written only by this worker, read by any (mock_stats, exit line). */
    alignas(64) _Atomic uint64_t requests;
    _Atomic uint64_t overlaps;
    _Atomic uint64_t bytes_in;
    _Atomic uint64_t bytes_out;
    struct mock_type_count types[MOCK_TYPES];
};

struct mock_server {
    struct mock_opts opts;
    int lfd;
    bool is_tcp;
    bool unix_bound;
    char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    dev_t unix_dev;
    ino_t unix_ino;
    char addr_text[160];
    struct mock_worker *workers;
    uint64_t start_ns;
    _Atomic uint64_t conn_serial;
    _Atomic uint64_t conns_total;
    _Atomic uint64_t conns_open;
    _Atomic uint64_t conns_peak;
    _Atomic int log_budget;
    _Atomic bool stop;
    _Atomic bool failed;
};


struct mock_totals {
    uint64_t conns_total, conns_open, conns_peak, requests, overlaps, bytes_in, bytes_out;
};

static void mock_conn_process(struct mock_conn *c);
static void mock_conn_flush(struct mock_conn *c);

/* ---------------------------------------------------------------- utilities */

static uint64_t mock_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Single-writer counter: a relaxed load and store, no locked instruction. The
 * relaxed loads in mock_totals_get only need an untorn value. */
static void mock_count(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

__attribute__((format(printf, 2, 3))) static void mock_log(struct mock_server *srv, const char *fmt,
                                                           ...)
{
    /* A misbehaving client must not be able to flood stderr. */
    if (srv->opts.quiet)
        return;
    int left = atomic_fetch_sub_explicit(&srv->log_budget, 1, memory_order_relaxed);
    if (left <= 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    flockfile(stderr); /* one line even when several workers log at once */
    fputs("mockd: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(left == 1 ? " (further messages suppressed)\n" : "\n", stderr);
    funlockfile(stderr);
    va_end(ap);
}

static bool mock_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    if (!s || *s < '0' || *s > '9')
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return false;
    *out = v;
    return true;
}

/* ------------------------------------------------------------ JSON scanning */

static bool mock_span_is_str(struct pjson_span v)
{
    return v.p && v.n >= 2 && v.p[0] == '"';
}

/* The contents of a string span, without its quotes. */
static struct pjson_span mock_span_inner(struct pjson_span v)
{
    return (struct pjson_span){v.p + 1, v.n - 2};
}

static bool mock_span_eq(struct pjson_span v, const char *lit)
{
    size_t n = strlen(lit);
    return v.n == n && memcmp(v.p, lit, n) == 0;
}

/* A member of the params object, or {NULL, 0}. */
static struct pjson_span mock_param(struct pjson_span params, const char *key)
{
    const char *keys[1] = {key};
    struct pjson_span v = {NULL, 0};
    if (params.p && !pjson_json_members(params.p, params.n, keys, &v, 1))
        v = (struct pjson_span){NULL, 0};
    return v;
}

/* A non-negative number member of params (fraction dropped), clamped to max;
 * `dflt` when absent or not a number. */
static uint64_t mock_param_u64(struct pjson_span params, const char *key, uint64_t dflt,
                               uint64_t max)
{
    struct pjson_span v = mock_param(params, key);
    char tmp[32];
    if (!v.p || v.n >= sizeof(tmp) || v.p[0] < '0' || v.p[0] > '9')
        return dflt;
    memcpy(tmp, v.p, v.n);
    tmp[v.n] = '\0';
    double d = strtod(tmp, NULL);
    return d >= (double)max ? max : (uint64_t)d;
}

/* ---------------------------------------------------------------- counters */

static void mock_totals_get(struct mock_server *srv, struct mock_totals *t)
{
    memset(t, 0, sizeof(*t));
    t->conns_total = atomic_load_explicit(&srv->conns_total, memory_order_relaxed);
    t->conns_open = atomic_load_explicit(&srv->conns_open, memory_order_relaxed);
    t->conns_peak = atomic_load_explicit(&srv->conns_peak, memory_order_relaxed);
    for (unsigned i = 0; i < srv->opts.threads; i++) {
        struct mock_worker *w = &srv->workers[i];
        t->requests += atomic_load_explicit(&w->requests, memory_order_relaxed);
        t->overlaps += atomic_load_explicit(&w->overlaps, memory_order_relaxed);
        t->bytes_in += atomic_load_explicit(&w->bytes_in, memory_order_relaxed);
        t->bytes_out += atomic_load_explicit(&w->bytes_out, memory_order_relaxed);
    }
}

/* The counters as JSON object members, without braces. Returns snprintf's. */
static int mock_totals_json(struct mock_server *srv, char *buf, size_t size)
{
    struct mock_totals t;
    mock_totals_get(srv, &t);
    return snprintf(buf, size,
                    "\"connections_total\":%" PRIu64 ",\"connections_open\":%" PRIu64
                    ",\"max_connections_open\":%" PRIu64 ",\"requests\":%" PRIu64
                    ",\"overlaps\":%" PRIu64 ",\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64
                    ",\"threads\":%u,\"uptime_ms\":%" PRIu64,
                    t.conns_total, t.conns_open, t.conns_peak, t.requests, t.overlaps, t.bytes_in,
                    t.bytes_out, srv->opts.threads, (mock_now_ns() - srv->start_ns) / 1000000u);
}

static uint32_t mock_type_hash(const char *p, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}

/* Count one request of this type on this worker (types longer than
 * MOCK_TYPE_MAX, or beyond MOCK_TYPES distinct ones, are not counted). */
static void mock_type_count(struct mock_worker *w, const char *p, size_t n)
{
    if (n == 0 || n > MOCK_TYPE_MAX)
        return;
    uint32_t h = mock_type_hash(p, n);
    for (uint32_t i = 0; i < MOCK_TYPES; i++) {
        struct mock_type_count *t = &w->types[(h + i) % MOCK_TYPES];
        uint32_t len = atomic_load_explicit(&t->len, memory_order_relaxed); /* ours */
        if (len == 0) {
            memcpy(t->name, p, n);
            atomic_store_explicit(&t->n, 1, memory_order_relaxed);
            /* Publish the name; pairs with the acquire in mock_type_calls. */
            atomic_store_explicit(&t->len, (uint32_t)n, memory_order_release);
            return;
        }
        if (len == n && memcmp(t->name, p, n) == 0) {
            mock_count(&t->n, 1);
            return;
        }
    }
}

/* Requests of this type so far, over every worker. */
static uint64_t mock_type_calls(struct mock_server *srv, const char *p, size_t n)
{
    uint64_t sum = 0;
    if (n == 0 || n > MOCK_TYPE_MAX)
        return 0;
    uint32_t h = mock_type_hash(p, n);
    for (unsigned k = 0; k < srv->opts.threads; k++)
        for (uint32_t i = 0; i < MOCK_TYPES; i++) {
            struct mock_type_count *t = &srv->workers[k].types[(h + i) % MOCK_TYPES];
            uint32_t len = atomic_load_explicit(&t->len, memory_order_acquire);
            if (len == 0)
                break;
            if (len == n && memcmp(t->name, p, n) == 0) {
                sum += atomic_load_explicit(&t->n, memory_order_relaxed);
                break;
            }
        }
    return sum;
}

static void mock_conn_opened(struct mock_server *srv)
{
    atomic_fetch_add_explicit(&srv->conns_total, 1, memory_order_relaxed);
    uint64_t open = atomic_fetch_add_explicit(&srv->conns_open, 1, memory_order_relaxed) + 1;
    uint64_t peak = atomic_load_explicit(&srv->conns_peak, memory_order_relaxed);
    /* Peak of a counter changed by several threads: CAS until ours is not higher. */
    while (open > peak &&
           !atomic_compare_exchange_weak_explicit(&srv->conns_peak, &peak, open,
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

/* ---------------------------------------------------------------- timers */

static void mock_timer_arm(struct mock_worker *w, uint64_t deadline_ns)
{
    struct itimerspec its = {0};
    its.it_value.tv_sec = (time_t)(deadline_ns / 1000000000u);
    its.it_value.tv_nsec = (long)(deadline_ns % 1000000000u);
    if (timerfd_settime(w->timer.fd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
        w->armed_ns = deadline_ns;
    else
        mock_log(w->srv, "timerfd_settime: %s", strerror(errno));
}

static void mock_heap_set(struct mock_worker *w, size_t i, struct mock_conn *c)
{
    w->heap[i] = c;
    c->heap_idx = i;
}

static void mock_heap_up(struct mock_worker *w, size_t i)
{
    struct mock_conn *c = w->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (w->heap[parent]->deadline_ns <= c->deadline_ns)
            break;
        mock_heap_set(w, i, w->heap[parent]);
        i = parent;
    }
    mock_heap_set(w, i, c);
}

static void mock_heap_down(struct mock_worker *w, size_t i)
{
    struct mock_conn *c = w->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= w->heap_len)
            break;
        if (child + 1 < w->heap_len &&
            w->heap[child + 1]->deadline_ns < w->heap[child]->deadline_ns)
            child++;
        if (c->deadline_ns <= w->heap[child]->deadline_ns)
            break;
        mock_heap_set(w, i, w->heap[child]);
        i = child;
    }
    mock_heap_set(w, i, c);
}

static void mock_timer_del(struct mock_conn *c)
{
    struct mock_worker *w = c->w;
    size_t i = c->heap_idx;
    if (i == SIZE_MAX)
        return;
    c->heap_idx = SIZE_MAX;
    struct mock_conn *last = w->heap[--w->heap_len];
    if (i == w->heap_len)
        return;
    mock_heap_set(w, i, last);
    mock_heap_up(w, i);
    mock_heap_down(w, last->heap_idx);
    /* The timerfd stays armed: an early expiry finds nothing due and re-arms. */
}

static void mock_conn_close(struct mock_conn *c);

/* Schedule the connection's next step; on allocation failure the connection
 * is closed, since it could never be answered. */
static void mock_timer_add(struct mock_conn *c, uint64_t deadline_ns)
{
    struct mock_worker *w = c->w;
    mock_timer_del(c);
    if (w->heap_len == w->heap_cap) {
        size_t cap = w->heap_cap ? 2 * w->heap_cap : 64;
        struct mock_conn **heap = realloc(w->heap, cap * sizeof(*heap));
        if (!heap) {
            mock_log(w->srv, "out of memory for a timer: closing connection %" PRIu64, c->serial);
            mock_conn_close(c);
            return;
        }
        w->heap = heap;
        w->heap_cap = cap;
    }
    c->deadline_ns = deadline_ns;
    mock_heap_set(w, w->heap_len++, c);
    mock_heap_up(w, w->heap_len - 1);
    if (w->armed_ns == 0 || deadline_ns < w->armed_ns)
        mock_timer_arm(w, deadline_ns);
}

/* ---------------------------------------------------------------- connections */

static void mock_conn_want_out(struct mock_conn *c, bool want)
{
    if (c->want_out == want || c->dead)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0u), .data.ptr = &c->h};
    if (epoll_ctl(c->w->epfd, EPOLL_CTL_MOD, c->h.fd, &ev) == 0)
        c->want_out = want;
    else
        mock_conn_close(c);
}

/* Closing only marks the connection dead: events for it may still sit in the
 * current epoll batch, so the memory is freed after the batch. */
static void mock_conn_close(struct mock_conn *c)
{
    struct mock_worker *w = c->w;
    if (c->dead)
        return;
    c->dead = true;
    close(c->h.fd);
    c->h.fd = -1;
    mock_timer_del(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = NULL;
    c->next = w->graveyard;
    w->graveyard = c;
    atomic_fetch_sub_explicit(&w->srv->conns_open, 1, memory_order_relaxed);
}

static void mock_conn_free(struct mock_conn *c)
{
    free(c->in);
    free(c->out);
    free(c);
}

static void mock_graveyard_free(struct mock_worker *w)
{
    while (w->graveyard) {
        struct mock_conn *c = w->graveyard;
        w->graveyard = c->next;
        mock_conn_free(c);
    }
}

/* `seq` is the request being handled, for the log line. */
static void mock_overlap(struct mock_conn *c, uint64_t seq)
{
    if (c->overlap_seen)
        return;
    c->overlap_seen = true;
    mock_count(&c->w->overlaps, 1);
    mock_log(c->w->srv,
             "overlap on connection %" PRIu64 ": another request arrived while request %" PRIu64
             " was being handled (the real add-on would hang)",
             c->serial, seq);
}

/* ---------------------------------------------------------------- answers */

static bool mock_out_reserve(struct mock_conn *c, size_t extra)
{
    if (c->out_cap - c->out_len >= extra)
        return true;
    size_t cap = c->out_cap ? c->out_cap : 512;
    while (cap - c->out_len < extra) {
        if (cap > SIZE_MAX / 2)
            return false;
        cap *= 2;
    }
    char *p = realloc(c->out, cap);
    if (!p)
        return false;
    c->out = p;
    c->out_cap = cap;
    return true;
}

static bool mock_out_put(struct mock_conn *c, const void *p, size_t n)
{
    if (!mock_out_reserve(c, n))
        return false;
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
    return true;
}

static bool mock_out_str(struct mock_conn *c, const char *s)
{
    return mock_out_put(c, s, strlen(s));
}

static bool mock_out_span(struct mock_conn *c, struct pjson_span v)
{
    return mock_out_put(c, v.p, v.n);
}

static bool mock_out_u64(struct mock_conn *c, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%" PRIu64, v);
    return mock_out_put(c, tmp, (size_t)n);
}

#define MOCK_OK "{\"status\":\"success\",\"result\":"

/* Shaped like the add-on's get_scene_info reply, small enough for benchmarks. */
static const char mock_scene[] =
    MOCK_OK "{\"name\":\"Scene\",\"object_count\":3,\"objects\":["
            "{\"name\":\"Cube\",\"type\":\"MESH\",\"location\":[0.0,0.0,0.0]},"
            "{\"name\":\"Camera\",\"type\":\"CAMERA\",\"location\":[7.36,-6.93,4.96]},"
            "{\"name\":\"Light\",\"type\":\"LIGHT\",\"location\":[4.08,1.01,5.9]}],"
            "\"materials_count\":1}}";

static const struct {
    const char *name;
    const char *json;
} mock_objects[] = {
    {"Cube", "{\"name\":\"Cube\",\"type\":\"MESH\",\"location\":[0.0,0.0,0.0],"
             "\"rotation\":[0.0,0.0,0.0],\"scale\":[1.0,1.0,1.0],\"visible\":true,"
             "\"materials\":[\"Material\"],\"mesh\":{\"vertices\":8,\"edges\":12,"
             "\"polygons\":6}}"},
    {"Camera", "{\"name\":\"Camera\",\"type\":\"CAMERA\",\"location\":[7.36,-6.93,4.96],"
               "\"rotation\":[1.11,0.0,0.81],\"scale\":[1.0,1.0,1.0],\"visible\":true,"
               "\"materials\":[]}"},
    {"Light", "{\"name\":\"Light\",\"type\":\"LIGHT\",\"location\":[4.08,1.01,5.9],"
              "\"rotation\":[0.65,0.06,1.87],\"scale\":[1.0,1.0,1.0],\"visible\":true,"
              "\"materials\":[]}"},
};

static bool mock_build_error(struct mock_conn *c, const char *msg)
{
    return mock_out_str(c, "{\"status\":\"error\",\"message\":\"") && mock_out_str(c, msg) &&
           mock_out_str(c, "\"}");
}

static bool mock_build_object(struct mock_conn *c, struct pjson_span params)
{
    struct pjson_span name = mock_param(params, "name");
    if (!mock_span_is_str(name))
        return mock_build_error(c, "Object not found: None");
    struct pjson_span inner = mock_span_inner(name);
    for (size_t i = 0; i < sizeof(mock_objects) / sizeof(mock_objects[0]); i++)
        if (mock_span_eq(inner, mock_objects[i].name))
            return mock_out_str(c, MOCK_OK) && mock_out_str(c, mock_objects[i].json) &&
                   mock_out_str(c, "}");
    /* The raw string contents are valid inside another JSON string. */
    return mock_out_str(c, "{\"status\":\"error\",\"message\":\"Object not found: ") &&
           mock_out_span(c, inner) && mock_out_str(c, "\"}");
}

/* params {"type": T} adds "calls": requests of type T so far. */
static bool mock_build_stats(struct mock_conn *c, struct pjson_span params)
{
    char buf[512];
    int n = mock_totals_json(c->w->srv, buf, sizeof(buf));
    if (n < 0 || (size_t)n >= sizeof(buf))
        return mock_build_error(c, "mockd: stats do not fit");
    if (!mock_out_str(c, MOCK_OK "{") || !mock_out_put(c, buf, (size_t)n))
        return false;
    struct pjson_span type = mock_param(params, "type");
    if (mock_span_is_str(type)) {
        struct pjson_span t = mock_span_inner(type);
        if (!mock_out_str(c, ",\"calls\":") ||
            !mock_out_u64(c, mock_type_calls(c->w->srv, t.p, t.n)))
            return false;
    }
    return mock_out_str(c, "}}");
}

/* The answer a healthy add-on would give to this type. */
static bool mock_build_normal(struct mock_conn *c, struct pjson_span type, struct pjson_span params)
{
    if (mock_span_eq(type, "get_scene_info"))
        return mock_out_put(c, mock_scene, sizeof(mock_scene) - 1);
    if (mock_span_eq(type, "ping"))
        return mock_out_str(c, MOCK_OK "{\"pong\":true}}");
    if (mock_span_eq(type, "echo")) {
        /* conn and seq let a test tie each answer to its request. */
        return mock_out_str(c, MOCK_OK "{\"params\":") &&
               (params.p ? mock_out_span(c, params) : mock_out_str(c, "{}")) &&
               mock_out_str(c, ",\"conn\":") && mock_out_u64(c, c->serial) &&
               mock_out_str(c, ",\"seq\":") && mock_out_u64(c, c->seq) && mock_out_str(c, "}}");
    }
    if (mock_span_eq(type, "get_object_info"))
        return mock_build_object(c, params);
    if (mock_span_eq(type, "mock_stats"))
        return mock_build_stats(c, params);
    return mock_out_str(c, MOCK_OK "{\"type\":\"") && mock_out_span(c, type) &&
           mock_out_str(c, "\",\"executed\":true}}");
}

static bool mock_build_huge(struct mock_conn *c, struct pjson_span params)
{
    static const char pattern[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    uint64_t n = mock_param_u64(params, "bytes", MOCK_HUGE_DEFAULT, MOCK_HUGE_MAX);
    size_t start, have = sizeof(pattern) - 1;
    if (!mock_out_str(c, MOCK_OK "\"") || !mock_out_reserve(c, (size_t)n + have + 3))
        return false;
    start = c->out_len;
    memcpy(c->out + start, pattern, have);
    /* Doubling copies of a multiple of the period keep the pattern intact. */
    while (have < n) {
        size_t k = have < n - have ? have : (size_t)n - have;
        memcpy(c->out + start + have, c->out + start, k);
        have += k;
    }
    c->out_len = start + (size_t)n;
    return mock_out_str(c, "\"}");
}

static bool mock_build_fault_error(struct mock_conn *c, struct pjson_span params)
{
    struct pjson_span msg = mock_param(params, "message");
    if (!mock_span_is_str(msg))
        return mock_build_error(c, "mock error");
    /* A string token is copied verbatim, already valid JSON. */
    return mock_out_str(c, "{\"status\":\"error\",\"message\":") && mock_out_span(c, msg) &&
           mock_out_str(c, "}");
}

static bool mock_all_ascii(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] >= 0x80)
            return false;
    return true;
}

/* c->out holds exactly the bytes to send: write them now or at a deadline. */
static void mock_send(struct mock_conn *c, bool built, uint64_t delay_ns)
{
    if (!built) {
        mock_log(c->w->srv, "out of memory for an answer: closing connection %" PRIu64, c->serial);
        mock_conn_close(c);
        return;
    }
    if (delay_ns == 0) {
        c->state = MOCK_WRITING;
        mock_conn_flush(c);
        return;
    }
    c->state = MOCK_WAIT;
    mock_timer_add(c, mock_now_ns() + delay_ns);
}

static bool mock_out_newline(struct mock_conn *c)
{
    return c->w->srv->opts.framing != MOCK_FRAMING_NDJSON || mock_out_put(c, "\n", 1);
}

/* The answer is complete in c->out: frame it and send it. */
static void mock_answer(struct mock_conn *c, bool built, uint64_t delay_ns)
{
    mock_send(c, built && mock_out_newline(c), delay_ns);
}

static void mock_drip(struct mock_conn *c)
{
    ssize_t n = send(c->h.fd, c->out + c->out_off, 1, MSG_NOSIGNAL);
    if (n == 1) {
        c->out_off++;
        mock_count(&c->w->bytes_out, 1);
    } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        mock_conn_close(c);
        return;
    }
    if (c->out_off == c->out_len) {
        c->state = MOCK_WRITING;
        mock_conn_flush(c); /* nothing left: completes the answer */
        return;
    }
    mock_timer_add(c, mock_now_ns() + c->drip_ns);
}

static enum mock_fault mock_fault_of(struct mock_server *srv, struct pjson_span type, bool *unknown)
{
    static const char prefix[] = "fault_";
    *unknown = false;
    if (type.n > sizeof(prefix) - 1 && memcmp(type.p, prefix, sizeof(prefix) - 1) == 0) {
        struct pjson_span mode = {type.p + sizeof(prefix) - 1, type.n - (sizeof(prefix) - 1)};
        for (int f = 1; f < MOCK_FAULT_COUNT; f++)
            if (mock_span_eq(mode, mock_fault_names[f]))
                return (enum mock_fault)f;
        *unknown = true;
        return MOCK_FAULT_NONE;
    }
    /* Stats stay reachable whatever --fault says, so a test can always look. */
    if (mock_span_eq(type, "mock_stats"))
        return MOCK_FAULT_NONE;
    return srv->opts.fault;
}

/* --work-us: keep this thread busy, as Blender's main thread is while it
 * executes a command (unlike --delay-us, which leaves the CPU free). */
static void mock_burn(uint64_t ns)
{
    uint64_t end = mock_now_ns() + ns;
    while (mock_now_ns() < end) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
}

/* Handle one framed request: req[0, len) holds exactly one JSON value. */
static void mock_request(struct mock_conn *c, const char *req, size_t len)
{
    static const char *const keys[2] = {"type", "params"};
    struct mock_server *srv = c->w->srv;
    struct pjson_span f[2];
    uint64_t delay = srv->opts.delay_ns;
    bool unknown, ok;

    c->seq++;
    mock_count(&c->w->requests, 1);
    if (srv->opts.work_ns)
        mock_burn(srv->opts.work_ns);
    if (!pjson_json_members(req, len, keys, f, 2) || !mock_span_is_str(f[0])) {
        mock_answer(c,
                    mock_build_error(c, "mockd: a request is a JSON object with a "
                                        "\\\"type\\\" string"),
                    0);
        return;
    }
    struct pjson_span type = mock_span_inner(f[0]), params = f[1];
    mock_type_count(c->w, type.p, type.n);
    enum mock_fault fault = mock_fault_of(srv, type, &unknown);
    if (unknown) {
        mock_answer(c, mock_build_error(c, "mockd: unknown fault mode"), 0);
        return;
    }
    if (mock_span_eq(type, "mock_stats"))
        delay = 0;
    switch (fault) {
    case MOCK_FAULT_NONE:
        mock_answer(c, mock_build_normal(c, type, params), delay);
        return;
    case MOCK_FAULT_HANG:
        c->state = MOCK_HUNG;
        c->in_len = 0;
        return;
    case MOCK_FAULT_CLOSE:
        mock_conn_close(c);
        return;
    case MOCK_FAULT_PARTIAL:
        /* Cut before the ndjson newline too: the peer must see an incomplete value. */
        ok = mock_build_normal(c, type, params) && mock_out_newline(c);
        c->out_len = c->out_len > 1 ? c->out_len / 2 : c->out_len;
        c->close_after = true;
        mock_send(c, ok, delay);
        return;
    case MOCK_FAULT_GARBAGE:
        c->hang_after = true;
        mock_answer(c, mock_out_str(c, "@@not json@@"), delay);
        return;
    case MOCK_FAULT_DRIP:
        ok = mock_build_normal(c, type, params) && mock_out_newline(c);
        if (!ok) {
            mock_conn_close(c);
            return;
        }
        c->drip_ns = mock_param_u64(params, "interval_ms", 50, 60000) * 1000000u;
        c->state = MOCK_DRIP;
        mock_drip(c);
        return;
    case MOCK_FAULT_SLOW:
        delay = mock_param_u64(params, "ms", 200, 3600000) * 1000000u;
        mock_answer(c, mock_build_normal(c, type, params), delay ? delay : 1);
        return;
    case MOCK_FAULT_HUGE:
        mock_answer(c, mock_build_huge(c, params), delay);
        return;
    case MOCK_FAULT_ERROR:
        mock_answer(c, mock_build_fault_error(c, params), delay);
        return;
    case MOCK_FAULT_ARRAY:
        mock_answer(c, mock_out_str(c, "[1,2,3]"), delay);
        return;
    case MOCK_FAULT_EMPTY:
        mock_answer(c, mock_out_str(c, "{}"), delay);
        return;
    case MOCK_FAULT_EXTRA:
        /* Both values in one write, as a confused backend sends them: a broker
         * must see the bytes after the answer and close the connection, or
         * they become the next request's answer. */
        ok = mock_build_normal(c, type, params) && mock_out_newline(c);
        mock_answer(c, ok && mock_out_str(c, "{\"status\":\"success\",\"result\":{}}"), delay);
        return;
    case MOCK_FAULT_NONASCII:
        if (mock_all_ascii(req, len))
            ok = mock_out_str(c, MOCK_OK "{\"ok\":true}}");
        else
            ok = mock_build_error(c, "non-ascii byte received");
        mock_answer(c, ok, delay);
        return;
    case MOCK_FAULT_COUNT:
        break;
    }
    mock_answer(c, mock_build_error(c, "mockd: internal error"), 0);
}

/* Drop the first n bytes of the input buffer and restart the scanner. */
static void mock_in_consume(struct mock_conn *c, size_t n)
{
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
    c->scan = (struct pjson_scan){0};
    if (c->in_len == 0 && c->in_cap > MOCK_KEEP_BUF) {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
}

/* Find the next request: 1 with its end in *end, 0 if incomplete, -EPROTO. */
static int mock_frame(struct mock_conn *c, size_t *end)
{
    if (c->w->srv->opts.framing == MOCK_FRAMING_NDJSON) {
        char *nl = memchr(c->in + c->scan.pos, '\n', c->in_len - c->scan.pos);
        if (!nl) {
            c->scan.pos = c->in_len;
            return 0;
        }
        *end = (size_t)(nl - c->in) + 1;
        return 1;
    }
    ssize_t r = pjson_scan(&c->scan, c->in, c->in_len);
    if (r < 0)
        return (int)r;
    if (r == 0)
        return 0;
    *end = (size_t)r;
    return 1;
}

/* Answer buffered requests one at a time, in order, while nothing is pending. */
static void mock_conn_process(struct mock_conn *c)
{
    while (!c->dead && c->state == MOCK_IDLE && c->in_len > 0) {
        size_t end = 0;
        int rc = mock_frame(c, &end);
        if (rc == 0) {
            /* Leading whitespace is not a request: do not let it pile up. */
            if (!pjson_has_data(c->in, c->in_len))
                mock_in_consume(c, c->in_len);
            return;
        }
        if (rc < 0) {
            mock_log(c->w->srv, "connection %" PRIu64 ": request is not JSON (byte 0x%02x)",
                     c->serial, (unsigned char)c->in[pjson_json_ws(c->in, c->in_len, 0)]);
            c->close_after = true;
            c->in_len = 0;
            mock_answer(c, mock_build_error(c, "mockd: request is not a JSON object"), 0);
            return;
        }
        if (!pjson_has_data(c->in, end)) { /* a blank ndjson line */
            mock_in_consume(c, end);
            continue;
        }
        c->overlap_seen = false;
        if (pjson_has_data(c->in + end, c->in_len - end))
            mock_overlap(c, c->seq + 1);
        mock_request(c, c->in, end);
        if (c->dead)
            return;
        if (c->state == MOCK_HUNG)
            c->in_len = 0;
        else
            mock_in_consume(c, end);
    }
}

/* Write what is pending; once the whole answer is out the request is done. */
static void mock_conn_flush(struct mock_conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->h.fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            mock_count(&c->w->bytes_out, (uint64_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            mock_conn_want_out(c, true);
            return;
        }
        mock_conn_close(c);
        return;
    }
    mock_conn_want_out(c, false);
    c->out_len = c->out_off = 0;
    if (c->out_cap > MOCK_KEEP_BUF) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    if (c->close_after) {
        mock_conn_close(c);
        return;
    }
    c->state = c->hang_after ? MOCK_HUNG : MOCK_IDLE;
    if (c->state == MOCK_HUNG)
        c->in_len = 0;
}

static bool mock_in_reserve(struct mock_conn *c)
{
    if (c->in_cap - c->in_len >= MOCK_READ_MIN)
        return true;
    size_t cap = c->in_cap ? 2 * c->in_cap : 2 * MOCK_READ_MIN;
    if (cap > MOCK_MAX_REQUEST + MOCK_READ_MIN)
        cap = MOCK_MAX_REQUEST + MOCK_READ_MIN;
    if (cap - c->in_len < MOCK_READ_MIN)
        return false;
    char *p = realloc(c->in, cap);
    if (!p)
        return false;
    c->in = p;
    c->in_cap = cap;
    return true;
}

static void mock_conn_readable(struct mock_conn *c)
{
    if (!mock_in_reserve(c)) {
        mock_log(c->w->srv,
                 "connection %" PRIu64 ": request over %zu bytes or out of memory, "
                 "closing",
                 c->serial, MOCK_MAX_REQUEST);
        mock_conn_close(c);
        return;
    }
    ssize_t n = recv(c->h.fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        /* Like the add-on: EOF ends the connection, pending answer or not. */
        mock_conn_close(c);
        return;
    }
    mock_count(&c->w->bytes_in, (uint64_t)n);
    if (c->state != MOCK_IDLE && pjson_has_data(c->in + c->in_len, (size_t)n))
        mock_overlap(c, c->seq);
    if (c->state == MOCK_HUNG)
        return; /* never answered: keep reading so the peer is not blocked */
    c->in_len += (size_t)n;
    if (c->state == MOCK_IDLE)
        mock_conn_process(c);
}

static void mock_conn_timer(struct mock_conn *c)
{
    if (c->state == MOCK_WAIT) {
        c->state = MOCK_WRITING;
        mock_conn_flush(c);
    } else if (c->state == MOCK_DRIP) {
        mock_drip(c);
    }
    mock_conn_process(c);
}

static void mock_conn_event(struct mock_conn *c, uint32_t events)
{
    if (c->dead)
        return;
    if (events & EPOLLOUT) {
        if (c->state == MOCK_WRITING)
            mock_conn_flush(c);
        else
            mock_conn_want_out(c, false);
        mock_conn_process(c);
    }
    if (!c->dead && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        mock_conn_readable(c);
}

/* ---------------------------------------------------------------- workers */

static void mock_worker_adopt(struct mock_worker *w, struct mock_conn *c)
{
    c->w = w;
    c->prev = NULL;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &c->h};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->h.fd, &ev) < 0) {
        mock_log(w->srv, "epoll_ctl: %s", strerror(errno));
        mock_conn_close(c);
    }
}

static void mock_inbox_push(struct mock_worker *dst, struct mock_conn *c)
{
    uint64_t one = 1;
    pthread_mutex_lock(&dst->inbox_lock);
    c->next = dst->inbox;
    dst->inbox = c;
    pthread_mutex_unlock(&dst->inbox_lock);
    /* The eventfd write orders the hand-off: the worker reads the inbox only
     * under the same lock after being woken. */
    if (write(dst->wake.fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        mock_log(dst->srv, "eventfd write: %s", strerror(errno));
}

static void mock_inbox_drain(struct mock_worker *w)
{
    uint64_t v;
    if (read(w->wake.fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        mock_log(w->srv, "eventfd read: %s", strerror(errno));
    pthread_mutex_lock(&w->inbox_lock);
    struct mock_conn *list = w->inbox;
    w->inbox = NULL;
    pthread_mutex_unlock(&w->inbox_lock);
    while (list) {
        struct mock_conn *c = list;
        list = c->next;
        mock_worker_adopt(w, c);
    }
}

static void mock_accept(struct mock_worker *w)
{
    struct mock_server *srv = w->srv;
    for (int k = 0; k < MOCK_ACCEPT_BATCH; k++) {
        int fd = accept4(srv->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                mock_log(srv, "accept: %s", strerror(errno));
            return;
        }
        if (srv->is_tcp) {
            /* Small answers and single dripped bytes must leave at once. */
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        struct mock_conn *c = calloc(1, sizeof(*c));
        if (!c) {
            mock_log(srv, "out of memory for a connection");
            close(fd);
            continue;
        }
        c->h.kind = MOCK_KIND_CONN;
        c->h.fd = fd;
        c->heap_idx = SIZE_MAX;
        c->serial = atomic_fetch_add_explicit(&srv->conn_serial, 1, memory_order_relaxed) + 1;
        mock_conn_opened(srv);
        struct mock_worker *dst = &srv->workers[w->next_worker++ % srv->opts.threads];
        if (dst == w) {
            mock_worker_adopt(w, c);
        } else {
            c->w = dst;
            mock_inbox_push(dst, c);
        }
    }
}

static void mock_timers_run(struct mock_worker *w)
{
    uint64_t expirations;
    if (read(w->timer.fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
        mock_log(w->srv, "timerfd read: %s", strerror(errno));
    w->armed_ns = 0;
    uint64_t now = mock_now_ns();
    while (w->heap_len > 0 && w->heap[0]->deadline_ns <= now) {
        struct mock_conn *c = w->heap[0];
        mock_timer_del(c);
        mock_conn_timer(c);
    }
    if (w->heap_len > 0 && (w->armed_ns == 0 || w->heap[0]->deadline_ns < w->armed_ns))
        mock_timer_arm(w, w->heap[0]->deadline_ns);
}

static void mock_worker_dispatch(struct mock_worker *w, struct epoll_event *ev)
{
    struct mock_handle *h = ev->data.ptr;
    switch (h->kind) {
    case MOCK_KIND_LISTEN:
        mock_accept(w);
        break;
    case MOCK_KIND_WAKE:
        mock_inbox_drain(w);
        break;
    case MOCK_KIND_TIMER:
        mock_timers_run(w);
        break;
    case MOCK_KIND_CONN:
        mock_conn_event((struct mock_conn *)h, ev->events);
        break;
    }
}

static void *mock_worker_main(void *arg)
{
    struct mock_worker *w = arg;
    struct mock_server *srv = w->srv;
    struct epoll_event evs[MOCK_EVENTS];

    /* Deadlines of a few microseconds (--delay-us) should not get the default
     * 50 us of timer slack. */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
    while (!atomic_load_explicit(&srv->stop, memory_order_acquire)) {
        int n = epoll_wait(w->epfd, evs, MOCK_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "mockd: epoll_wait: %s\n", strerror(errno));
            atomic_store_explicit(&srv->failed, true, memory_order_relaxed);
            kill(getpid(), SIGTERM);
            break;
        }
        for (int i = 0; i < n; i++)
            mock_worker_dispatch(w, &evs[i]);
        mock_graveyard_free(w);
    }
    return NULL;
}

/* Close and free everything the worker owns; its thread has been joined. */
static void mock_worker_destroy(struct mock_worker *w)
{
    while (w->conns)
        mock_conn_close(w->conns);
    mock_graveyard_free(w);
    while (w->inbox) {
        struct mock_conn *c = w->inbox;
        w->inbox = c->next;
        close(c->h.fd);
        atomic_fetch_sub_explicit(&w->srv->conns_open, 1, memory_order_relaxed);
        mock_conn_free(c);
    }
    free(w->heap);
    if (w->wake.fd >= 0)
        close(w->wake.fd);
    if (w->timer.fd >= 0)
        close(w->timer.fd);
    if (w->epfd >= 0)
        close(w->epfd);
    pthread_mutex_destroy(&w->inbox_lock);
}

static int mock_epoll_add(int epfd, struct mock_handle *h)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = h};
    return epoll_ctl(epfd, EPOLL_CTL_ADD, h->fd, &ev) < 0 ? -errno : 0;
}

/* Enough state for mock_worker_destroy, whatever mock_worker_init did after. */
static void mock_worker_preinit(struct mock_worker *w, struct mock_server *srv, unsigned id)
{
    w->srv = srv;
    w->id = id;
    w->epfd = -1;
    w->wake = (struct mock_handle){MOCK_KIND_WAKE, -1};
    w->timer = (struct mock_handle){MOCK_KIND_TIMER, -1};
    w->listen = (struct mock_handle){MOCK_KIND_LISTEN, srv->lfd};
    pthread_mutex_init(&w->inbox_lock, NULL);
}

static int mock_worker_init(struct mock_worker *w, unsigned id)
{
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (w->epfd < 0)
        return -errno;
    w->wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->wake.fd < 0)
        return -errno;
    w->timer.fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (w->timer.fd < 0)
        return -errno;
    int rc = mock_epoll_add(w->epfd, &w->wake);
    if (rc == 0)
        rc = mock_epoll_add(w->epfd, &w->timer);
    if (rc == 0 && id == 0)
        rc = mock_epoll_add(w->epfd, &w->listen);
    return rc;
}

/* ---------------------------------------------------------------- listener */

static int mock_listen_unix(struct mock_server *srv, const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat st;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "socket path longer than %zu bytes", sizeof(sa.sun_path) - 1);
        return -ENAMETOOLONG;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto err_errno;
    if (lstat(path, &st) == 0) {
        /* Replace a stale socket file only when nobody answers on it. */
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "%s exists and is not a socket", path);
            close(fd);
            return -EEXIST;
        }
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        if (probe >= 0)
            close(probe);
        if (live) {
            snprintf(err, errlen, "address in use: a live server answers on %s", path);
            close(fd);
            return -EADDRINUSE;
        }
        unlink(path);
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, SOMAXCONN) < 0)
        goto err_errno;
    if (stat(path, &st) == 0) {
        srv->unix_dev = st.st_dev;
        srv->unix_ino = st.st_ino;
    }
    memcpy(srv->unix_path, path, strlen(path) + 1);
    srv->unix_bound = true;
    srv->lfd = fd;
    snprintf(srv->addr_text, sizeof(srv->addr_text), "unix:%s", path);
    return 0;
err_errno:;
    int e = errno;
    snprintf(err, errlen, "%s", strerror(e));
    if (fd >= 0)
        close(fd);
    return -e;
}

static void mock_addr_text(struct mock_server *srv, int fd)
{
    struct sockaddr_storage ss = {0};
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN + 1], port[16];
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0 ||
        getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(srv->addr_text, sizeof(srv->addr_text), "%s", srv->opts.listen);
        return;
    }
    snprintf(srv->addr_text, sizeof(srv->addr_text), ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s",
             host, port);
}

static int mock_listen_tcp(struct mock_server *srv, const char *hostport, char *err, size_t errlen)
{
    struct addrinfo *res;
    if (!strchr(hostport, ':')) {
        snprintf(err, errlen, "expected HOST:PORT or unix:/path");
        return -EINVAL;
    }
    if (tool_resolve(hostport, true, &res, err, errlen) < 0)
        return -EINVAL;
    int e = EADDRNOTAVAIL;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        if (fd < 0) {
            e = errno;
            continue;
        }
        /* SO_REUSEADDR lets a restarted mock bind over TIME_WAIT; without
         * SO_REUSEPORT a second live listener still gets EADDRINUSE. */
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0) {
            freeaddrinfo(res);
            srv->lfd = fd;
            srv->is_tcp = true;
            mock_addr_text(srv, fd);
            return 0;
        }
        e = errno;
        close(fd);
    }
    freeaddrinfo(res);
    snprintf(err, errlen, "%s", e == EADDRINUSE ? "address already in use" : strerror(e));
    return -e;
}

static int mock_listen(struct mock_server *srv, char *err, size_t errlen)
{
    const char *a = srv->opts.listen;
    if (strncmp(a, "unix:", 5) == 0)
        return mock_listen_unix(srv, a + 5, err, errlen);
    if (a[0] == '/' || a[0] == '.')
        return mock_listen_unix(srv, a, err, errlen);
    return mock_listen_tcp(srv, a, err, errlen);
}

/* Remove the socket file only if it is still the one we bound. */
static void mock_unlink(struct mock_server *srv)
{
    struct stat st;
    if (!srv->unix_bound)
        return;
    if (lstat(srv->unix_path, &st) == 0 && st.st_dev == srv->unix_dev && st.st_ino == srv->unix_ino)
        unlink(srv->unix_path);
}

/* ---------------------------------------------------------------- main */

static void mock_usage(FILE *f)
{
    fputs("usage: mockd --listen HOST:PORT | --listen unix:/path [options]\n"
          "\n"
          "A Blender add-on protocol backend (one JSON object per request, no\n"
          "delimiter) with fault injection, for testing and benchmarking the broker.\n"
          "\n"
          "  --listen ADDR       HOST:PORT (port 0 picks a free one) or unix:/path\n"
          "  --framing MODE      json (default: framed by JSON completeness) or ndjson\n"
          "  --threads N         worker threads, each with its own epoll (default 1)\n"
          "  --fault MODE        apply a fault to every request except mock_stats:\n"
          "                      hang close partial garbage drip slow huge error array\n"
          "                      empty extra nonascii (default none)\n"
          "  --delay-us N        wait N microseconds before every answer (timer based)\n"
          "  --work-us N         spend N microseconds of CPU on every request, on the\n"
          "                      serving thread (as Blender's main thread does)\n"
          "  --stats-fd FD       where the exit stats line goes (default 1, stdout)\n"
          "  --quiet             no diagnostics on stderr except the ready line and errors\n"
          "  --help              this text\n"
          "\n"
          "Commands: get_scene_info, ping, echo (result: params, conn, seq),\n"
          "get_object_info (params.name: Cube, Camera, Light), mock_stats (counters;\n"
          "params.type: T adds \"calls\", the requests of type T so far),\n"
          "fault_<MODE> (params: interval_ms for drip, ms for slow, bytes for huge,\n"
          "message for error); any other type answers {\"type\":T,\"executed\":true}.\n"
          "Ready: one line on stderr, \"mockd: listening on ADDR (...)\".\n"
          "SIGTERM/SIGINT: one JSON stats line, socket file removed, exit 0.\n",
          f);
}

/* Returns 0, or 2 for a usage error (message printed). */
static int mock_parse_args(int argc, char **argv, struct mock_opts *o)
{
    *o = (struct mock_opts){.framing = MOCK_FRAMING_JSON, .threads = 1, .stats_fd = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t u;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            mock_usage(stdout);
            exit(0);
        } else if (strcmp(a, "--quiet") == 0) {
            o->quiet = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "mockd: unknown option or missing value: %s (see --help)\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--listen") == 0) {
            o->listen = v;
        } else if (strcmp(a, "--framing") == 0 && strcmp(v, "json") == 0) {
            o->framing = MOCK_FRAMING_JSON;
        } else if (strcmp(a, "--framing") == 0 && strcmp(v, "ndjson") == 0) {
            o->framing = MOCK_FRAMING_NDJSON;
        } else if (strcmp(a, "--threads") == 0 && mock_parse_u64(v, 256, &u) && u > 0) {
            o->threads = (unsigned)u;
        } else if (strcmp(a, "--delay-us") == 0 && mock_parse_u64(v, 3600000000ULL, &u)) {
            o->delay_ns = u * 1000u;
        } else if (strcmp(a, "--work-us") == 0 && mock_parse_u64(v, 10000000ULL, &u)) {
            o->work_ns = u * 1000u;
        } else if (strcmp(a, "--stats-fd") == 0 && mock_parse_u64(v, INT32_MAX, &u)) {
            o->stats_fd = (int)u;
        } else if (strcmp(a, "--fault") == 0) {
            int f = MOCK_FAULT_COUNT;
            for (int k = 0; k < MOCK_FAULT_COUNT; k++)
                if (strcmp(v, mock_fault_names[k]) == 0)
                    f = k;
            if (f == MOCK_FAULT_COUNT) {
                fprintf(stderr, "mockd: unknown fault mode '%s' (see --help)\n", v);
                return 2;
            }
            o->fault = (enum mock_fault)f;
        } else {
            fprintf(stderr, "mockd: bad option or value: %s %s (see --help)\n", a, v);
            return 2;
        }
    }
    if (!o->listen) {
        fprintf(stderr, "mockd: --listen is required (see --help)\n");
        return 2;
    }
    return 0;
}

static int mock_start_workers(struct mock_server *srv)
{
    size_t bytes = srv->opts.threads * sizeof(struct mock_worker);
    /* aligned_alloc: the counters sit on their own cache line (alignas(64)). */
    srv->workers = aligned_alloc(alignof(struct mock_worker), bytes);
    if (!srv->workers)
        return -ENOMEM;
    memset(srv->workers, 0, bytes);
    for (unsigned i = 0; i < srv->opts.threads; i++)
        mock_worker_preinit(&srv->workers[i], srv, i);
    for (unsigned i = 0; i < srv->opts.threads; i++) {
        int rc = mock_worker_init(&srv->workers[i], i);
        if (rc < 0)
            return rc;
    }
    for (unsigned i = 0; i < srv->opts.threads; i++) {
        struct mock_worker *w = &srv->workers[i];
        int rc = pthread_create(&w->thread, NULL, mock_worker_main, w);
        if (rc != 0)
            return -rc;
        w->started = true;
    }
    return 0;
}

static void mock_stop_workers(struct mock_server *srv)
{
    uint64_t one = 1;
    if (!srv->workers)
        return;
    atomic_store_explicit(&srv->stop, true, memory_order_release);
    for (unsigned i = 0; i < srv->opts.threads; i++) {
        struct mock_worker *w = &srv->workers[i];
        if (w->started && write(w->wake.fd, &one, sizeof(one)) < 0)
            fprintf(stderr, "mockd: cannot wake worker %u: %s\n", i, strerror(errno));
    }
    for (unsigned i = 0; i < srv->opts.threads; i++)
        if (srv->workers[i].started)
            pthread_join(srv->workers[i].thread, NULL);
}

static void mock_print_stats(struct mock_server *srv)
{
    char buf[512];
    int n = mock_totals_json(srv, buf, sizeof(buf));
    if (n > 0 && (size_t)n < sizeof(buf))
        dprintf(srv->opts.stats_fd, "{\"mockd\":\"stats\",%s}\n", buf);
}

int main(int argc, char **argv)
{
    struct mock_server srv = {.lfd = -1};
    char err[256] = "";
    sigset_t sigs;
    int sig = 0, rc;

    if ((rc = mock_parse_args(argc, argv, &srv.opts)) != 0)
        return rc;
    atomic_init(&srv.log_budget, MOCK_LOG_BUDGET);
    tool_raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    /* Blocked before any thread starts, so only sigwait below receives them. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    srv.start_ns = mock_now_ns();

    if (mock_listen(&srv, err, sizeof(err)) < 0) {
        fprintf(stderr, "mockd: cannot listen on %s: %s\n", srv.opts.listen, err);
        return 1;
    }
    if ((rc = mock_start_workers(&srv)) < 0) {
        fprintf(stderr, "mockd: cannot start workers: %s\n", strerror(-rc));
        atomic_store_explicit(&srv.failed, true, memory_order_relaxed);
    } else {
        fprintf(stderr,
                "mockd: listening on %s (threads %u, framing %s, fault %s, delay_us %" PRIu64
                ", work_us %" PRIu64 ")\n",
                srv.addr_text, srv.opts.threads,
                srv.opts.framing == MOCK_FRAMING_JSON ? "json" : "ndjson",
                mock_fault_names[srv.opts.fault], srv.opts.delay_ns / 1000u,
                srv.opts.work_ns / 1000u);
        fflush(stderr);
        while (sigwait(&sigs, &sig) != 0)
            ;
    }
    mock_stop_workers(&srv);
    mock_print_stats(&srv);
    for (unsigned i = 0; srv.workers && i < srv.opts.threads; i++)
        mock_worker_destroy(&srv.workers[i]);
    free(srv.workers);
    close(srv.lfd);
    mock_unlink(&srv);
    return atomic_load_explicit(&srv.failed, memory_order_relaxed) ? 1 : 0;
}
