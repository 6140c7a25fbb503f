/*
 * loadgen_engine.c - loadgen's load threads (the design is in loadgen.c):
 * filling connections with requests (closed loop, or at intended times with
 * --rate), framing and matching answers by id, counting errors, duplicates
 * and unknown ids, and reconnecting with --conn-per-request.
 *
 * Each thread runs lg_thread_main over its own epoll and connections; nothing
 * here is shared between threads but the log budget (an atomic) and the
 * run's read-only settings.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "loadgen.h"

/* ---------------------------------------------------------------- utilities */

__attribute__((format(printf, 2, 3))) void lg_log(struct lg_run *run, const char *fmt, ...)
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

void *lg_thread_main(void *arg)
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
