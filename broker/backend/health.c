/*
 * health.c - active health checks; see health.h for the principle.
 *
 * One check, all on the owning worker's ring:
 *
 *   interval timer --ETIME--> socket + connect --> send --> recv ... reply
 *                     deadline timer (health.timeout_ms) ----^ cuts it short
 *
 * A check ends once (check_end): by its reply, a socket error, or its
 * deadline. Ending cuts the rest short - shutdown(2) completes pending socket
 * operations, the deadline timer is removed - and the check settles when
 * nothing of it is in flight any more: the socket is closed (every path goes
 * through health_settle), the result is counted, and the next interval is
 * armed. Completions find their check through op_kind[k] == HEALTH_OP_BASE
 * + k, the same trick bconn.c uses, under the UD_BACKEND tag.
 *
 * Up and down: `fall` consecutive failures mark an up backend down and trip
 * its breaker; `rise` consecutive successes mark a down backend up and close
 * the breaker. Every failure is counted; transitions are logged at once,
 * repeated failures rate-limited.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "worker.h"

enum hop { HOP_TIMER = 0, HOP_CONNECT, HOP_SEND, HOP_RECV, HOP_DEADLINE };

#define HEALTH_MAX_REPLY (1u << 20) /* a health reply larger than this is a bad reply */
#define HEALTH_RECV      4096u

static uint64_t hop_ud(struct health *h, enum hop k)
{
    return (uint64_t)(uintptr_t)&h->op_kind[k] | UD_BACKEND;
}

static struct backend *hop_decode(uint64_t ud, enum hop *k)
{
    uint64_t *p = UD_PTR(ud);
    *k = (enum hop)(*p - HEALTH_OP_BASE);
    struct health *h = (struct health *)(void *)((char *)(p - (*p - HEALTH_OP_BASE)) -
                                                 offsetof(struct health, op_kind));
    return (struct backend *)(void *)((char *)h - offsetof(struct backend, health));
}

static bool owns(const struct worker *w, const struct backend *be)
{
    return be->index % w->b->nworkers == w->id;
}

int health_init(struct backend *be)
{
    struct health *h = &be->health;
    h->fd = -1;
    for (uint64_t k = 0; k < 5; k++)
        h->op_kind[k] = HEALTH_OP_BASE + k;
    atomic_init(&h->up, 1);
    proto_buf_init(&h->req);
    proto_buf_init(&h->in);
    proto_reply_scanner_init(&h->scan, FRAME_MAX_DEPTH, FRAME_F_TOP_CONTAINER);
    return 0;
}

/* The check's request and deadline from the configuration in effect, so a
 * reload's health settings apply from the next check. */
static int check_prepare(struct backend *be)
{
    struct health *h = &be->health;
    const struct backend_config *c = becfg(be);
    const struct config_health *hc = &c->health;
    struct proto_span type = {hc->command, strlen(hc->command)}, params = {"{}", 2};
    h->req.len = 0;
    int rc = proto_write_backend_request(&h->req, &type, &params, true);
    if (rc == 0 && c->framing == CONFIG_FRAMING_NDJSON)
        rc = proto_buf_append_try(&h->req, "\n", 1);
    ns_to_ts((uint64_t)hc->timeout_ms * 1000000u, &h->ts_deadline);
    return rc;
}

void health_destroy(struct backend *be)
{
    struct health *h = &be->health;
    if (h->fd >= 0) /* only after a failed run: the worker settles every check */
        close(h->fd);
    h->fd = -1;
    proto_buf_free(&h->req);
    proto_buf_free(&h->in);
}

size_t backend_why_text(const struct backend *be, uint32_t reason, char *buf, size_t cap)
{
    const struct backend_config *c = becfg(be);
    unsigned ms = reason >> 8;
    int n;
    switch ((enum backend_why)(reason & 0xffu)) {
    case BE_WHY_REFUSED:
        n = snprintf(buf, cap,
                     "refuses connections (is Blender running with the add-on server "
                     "started?)");
        break;
    case BE_WHY_CONNECT_TIMEOUT:
        n = snprintf(buf, cap, "does not accept connections within %lld ms",
                     (long long)c->connect_timeout_ms);
        break;
    case BE_WHY_NO_ANSWER:
        n = snprintf(buf, cap,
                     "accepts connections but does not answer within %u ms (Blender's main "
                     "thread is busy or the add-on is not executing commands)",
                     ms);
        break;
    case BE_WHY_CLOSED:
        n = snprintf(buf, cap, "closes connections without answering");
        break;
    case BE_WHY_BAD_REPLY:
        n = snprintf(buf, cap, "answers with something that is not an add-on reply");
        break;
    case BE_WHY_ERROR_REPLY:
        n = snprintf(buf, cap, "answers the health command %s with an error", c->health.command);
        break;
    case BE_WHY_IO:
        n = snprintf(buf, cap, "fails on its connections");
        break;
    default:
        n = snprintf(buf, cap, "is failing");
        break;
    }
    return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}

static void arm_interval(struct worker *w, struct health *h)
{
    const struct backend *be =
        (const struct backend *)(const void *)((const char *)h - offsetof(struct backend, health));
    ns_to_ts((uint64_t)becfg(be)->health.interval_ms * 1000000u, &h->ts_interval);
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_timeout(sqe, &h->ts_interval, 0, 0);
    io_uring_sqe_set_data64(sqe, hop_ud(h, HOP_TIMER));
    h->timer_armed = true;
}

static void remove_timer(struct worker *w, struct health *h, enum hop k)
{
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_timeout_remove(sqe, hop_ud(h, k), 0);
    io_uring_sqe_set_data64(sqe, UD_IGNORE);
}

/* The check has its result (the first one counts): cut the rest short. */
static void check_end(struct worker *w, struct health *h, enum backend_why why)
{
    if (h->finished)
        return;
    h->finished = true;
    h->result = why;
    if (h->io_ops && h->fd >= 0)
        shutdown(h->fd, SHUT_RDWR);
    if (h->deadline_armed)
        remove_timer(w, h, HOP_DEADLINE);
}

static void apply_result(struct worker *w, struct backend *be)
{
    static struct log_ratelimit rl = LOG_RATELIMIT_INIT("health_failed", 1, 5);
    struct health *h = &be->health;
    const struct config_health *hc = &becfg(be)->health;
    uint64_t now = now_ns();
    if (h->local_errno) {
        /* Our own shortage says nothing about the backend: not counted. */
        static struct log_ratelimit rl_local = LOG_RATELIMIT_INIT("health_skipped", 1, 5);
        LOG_RATELIMITED_BY(&rl_local, LOG_LEVEL_WARN, "health check skipped",
                           LOG_CSTR("backend", becfg(be)->name), LOG_ERRNO(h->local_errno));
        return;
    }
    atomic_fetch_add_explicit(&h->checks, 1, memory_order_relaxed);
    uint32_t reason = backend_reason(h->result, (uint64_t)hc->timeout_ms);
    atomic_store_explicit(&h->last_why, reason, memory_order_relaxed);
    atomic_store_explicit(&h->last_latency_us, (now - h->started_ns) / 1000u, memory_order_relaxed);
    atomic_store_explicit(&h->last_check_ns, now, memory_order_relaxed);
    bool up = atomic_load_explicit(&h->up, memory_order_relaxed);
    char why[160];
    if (h->result == BE_WHY_NONE) {
        h->fail_run = 0;
        h->ok_run++;
        if (!up && h->ok_run >= hc->rise) {
            atomic_store_explicit(&h->up, 1, memory_order_relaxed);
            breaker_reset(&be->breaker);
            log_write(LOG_LEVEL_INFO, "backend is up again", LOG_CSTR("backend", becfg(be)->name),
                      LOG_UINT("checks_passed", h->ok_run));
        }
        return;
    }
    atomic_fetch_add_explicit(&h->failures, 1, memory_order_relaxed);
    h->ok_run = 0;
    h->fail_run++;
    size_t n = backend_why_text(be, reason, why, sizeof why);
    if (up && h->fail_run >= hc->fall) {
        atomic_store_explicit(&h->up, 0, memory_order_relaxed);
        breaker_trip(&be->breaker, &be_view(be)->bk, now, reason);
        log_write(LOG_LEVEL_WARN, "backend is down", LOG_CSTR("backend", becfg(be)->name),
                  LOG_STR("why", why, n), LOG_UINT("checks_failed", h->fail_run));
    } else {
        LOG_RATELIMITED_BY(&rl, LOG_LEVEL_INFO, "health check failed",
                           LOG_CSTR("backend", becfg(be)->name), LOG_STR("why", why, n),
                           LOG_UINT("in_a_row", h->fail_run));
    }
    (void)w;
}

/* Nothing of the check in flight: close its socket (the one place), count
 * the result, and wait for the next interval. */
static void health_settle(struct worker *w, struct backend *be)
{
    struct health *h = &be->health;
    if (!h->checking || !h->finished || h->io_ops || h->deadline_armed)
        return;
    if (h->fd >= 0) {
        close(h->fd);
        h->fd = -1;
    }
    h->checking = false;
    h->in.len = 0;
    if (h->in.cap > 64u * 1024u)
        proto_buf_free(&h->in);
    if (h->stopping)
        return; /* shutdown: the result would only be noise */
    apply_result(w, be);
    arm_interval(w, h);
}

static void check_begin(struct worker *w, struct backend *be)
{
    struct health *h = &be->health;
    h->checking = true;
    h->finished = false;
    h->local_errno = 0;
    h->sent = 0;
    h->in.len = 0;
    h->started_ns = now_ns();
    frame_reset(&h->scan);
    int prc = check_prepare(be);
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_timeout(sqe, &h->ts_deadline, 0, 0);
    io_uring_sqe_set_data64(sqe, hop_ud(h, HOP_DEADLINE));
    h->deadline_armed = true;
    if (prc < 0) {
        h->local_errno = -prc; /* ENOMEM: ours, not the backend's */
        check_end(w, h, BE_WHY_IO);
        return;
    }
    const struct backend_view *v = be_view(be);
    h->fd = socket(v->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (h->fd < 0) {
        h->local_errno = errno; /* ours (EMFILE...), not the backend's */
        check_end(w, h, BE_WHY_IO);
        return;
    }
    if (v->addr.ss_family != AF_UNIX) {
        int one = 1;
        setsockopt(h->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    sqe = worker_sqe(w);
    io_uring_prep_connect(sqe, h->fd, (const struct sockaddr *)&v->addr, v->addrlen);
    io_uring_sqe_set_data64(sqe, hop_ud(h, HOP_CONNECT));
    h->io_ops++;
}

static void arm_send(struct worker *w, struct health *h)
{
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_send(sqe, h->fd, h->req.data + h->sent, h->req.len - h->sent, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, hop_ud(h, HOP_SEND));
    h->io_ops++;
}

static void arm_recv(struct worker *w, struct health *h)
{
    if (proto_buf_reserve_try(&h->in, HEALTH_RECV) < 0) {
        h->local_errno = ENOMEM;
        check_end(w, h, BE_WHY_IO);
        return;
    }
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_recv(sqe, h->fd, h->in.data + h->in.len, h->in.cap - h->in.len, 0);
    io_uring_sqe_set_data64(sqe, hop_ud(h, HOP_RECV));
    h->io_ops++;
}

static void on_recv(struct worker *w, struct health *h, int res)
{
    if (res <= 0) {
        check_end(w, h,
                  res == 0 && h->in.len == 0 ? BE_WHY_CLOSED
                  : res == 0                 ? BE_WHY_BAD_REPLY
                                             : BE_WHY_IO);
        return;
    }
    size_t old = h->in.len, used = 0;
    h->in.len += (size_t)res;
    int fr = frame_feed(&h->scan, h->in.data + old, (size_t)res, &used);
    if (fr == FRAME_DONE) {
        struct proto_reply rep;
        if (proto_parse_backend_reply(h->in.data, old + used, &h->scan, &rep) < 0)
            check_end(w, h, BE_WHY_BAD_REPLY);
        else
            check_end(w, h, rep.kind == PROTO_REPLY_SUCCESS ? BE_WHY_NONE : BE_WHY_ERROR_REPLY);
    } else if (fr < 0 || h->in.len > HEALTH_MAX_REPLY) {
        check_end(w, h, BE_WHY_BAD_REPLY);
    } else {
        arm_recv(w, h);
    }
}

void health_on_cqe(struct worker *w, uint64_t ud, int res)
{
    enum hop k;
    struct backend *be = hop_decode(ud, &k);
    struct health *h = &be->health;
    switch (k) {
    case HOP_TIMER:
        h->timer_armed = false;
        if (!h->stopping)
            check_begin(w, be);
        break;
    case HOP_DEADLINE:
        h->deadline_armed = false;
        if (res == -ETIME) /* not removed: the check ran out of time */
            check_end(w, h, h->sent < h->req.len ? BE_WHY_CONNECT_TIMEOUT : BE_WHY_NO_ANSWER);
        break;
    case HOP_CONNECT:
        h->io_ops--;
        if (h->finished)
            break;
        if (res < 0)
            check_end(w, h, res == -ECONNREFUSED || res == -ENOENT ? BE_WHY_REFUSED : BE_WHY_IO);
        else
            arm_send(w, h);
        break;
    case HOP_SEND:
        h->io_ops--;
        if (h->finished)
            break;
        if (res <= 0) {
            check_end(w, h, BE_WHY_IO);
            break;
        }
        h->sent += (size_t)res;
        if (h->sent < h->req.len)
            arm_send(w, h);
        else
            arm_recv(w, h);
        break;
    case HOP_RECV:
        h->io_ops--;
        if (!h->finished)
            on_recv(w, h, res);
        break;
    }
    health_settle(w, be);
}

void health_start_one(struct worker *w, struct backend *be)
{
    struct health *h = &be->health;
    if (!owns(w, be) || w->draining)
        return;
    h->stopping = false;
    if (!h->timer_armed && !h->checking)
        arm_interval(w, h);
}

void health_stop_one(struct worker *w, struct backend *be)
{
    struct health *h = &be->health;
    if (!owns(w, be) || h->stopping)
        return;
    h->stopping = true;
    if (h->timer_armed)
        remove_timer(w, h, HOP_TIMER);
    if (h->checking)
        check_end(w, h, BE_WHY_NONE);
}

void health_start(struct worker *w)
{
    uint32_t n = broker_nbackends(w->b);
    for (uint32_t i = 0; i < n; i++)
        if (!atomic_load_explicit(&w->b->backends[i].removed, memory_order_relaxed))
            health_start_one(w, &w->b->backends[i]);
}

void health_stop(struct worker *w)
{
    uint32_t n = broker_nbackends(w->b);
    for (uint32_t i = 0; i < n; i++)
        health_stop_one(w, &w->b->backends[i]);
}

bool health_idle(struct worker *w)
{
    uint32_t n = broker_nbackends(w->b);
    for (uint32_t i = 0; i < n; i++) {
        struct health *h = &w->b->backends[i].health;
        if (owns(w, &w->b->backends[i]) && (h->timer_armed || h->checking))
            return false;
    }
    return true;
}
