/*
 * mockd_answer.c - what a mockd request gets (the design is in mockd.c): the
 * counters (totals, per-type calls), the params lookups, the canned answers
 * of a healthy add-on, and the fault modes (--fault or a fault_<MODE> type)
 * that bend or withhold them.
 *
 * An answer is built whole in the connection's out buffer, then sent at
 * once, at a deadline (--delay-us, slow) or one byte per deadline (drip);
 * mock_request is the one switch over the fault modes.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "mockd.h"

const char *const mock_fault_names[MOCK_FAULT_COUNT] = {
    "none", "hang",  "close", "partial", "garbage", "drip",     "slow",
    "huge", "error", "array", "empty",   "extra",   "nonascii",
};

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
int mock_totals_json(struct mock_server *srv, char *buf, size_t size)
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

void mock_conn_opened(struct mock_server *srv)
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

bool mock_build_error(struct mock_conn *c, const char *msg)
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
void mock_answer(struct mock_conn *c, bool built, uint64_t delay_ns)
{
    mock_send(c, built && mock_out_newline(c), delay_ns);
}

void mock_drip(struct mock_conn *c)
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
void mock_request(struct mock_conn *c, const char *req, size_t len)
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
