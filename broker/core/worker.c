/*
 * worker.c - one thread, one io_uring: the loop that drives a worker.
 *
 * A worker owns its clients, their requests and, while it holds them,
 * backend slots; worker.h maps the files of a request's way. Everything
 * runs on the worker's own thread; the only inputs from other threads are
 * the SPSC inbox (new client fds) and IORING_OP_MSG_RING completions
 * (new clients, shutdown, slot handoffs, exit).
 *
 * A round: submit and wait; dispatch every completion to its stage (one
 * switch on the user_data tag, res < 0 handled by each handler first); then
 * run local handoffs and dirty clients until neither has work; then arm the
 * one deadline timer. Nothing is handled re-entrantly from inside another
 * handler: touched clients are marked dirty and handled at the end.
 *
 * Shutdown: SHUTDOWN starts the drain (clients still read, each new line
 * answered shutting_down, idle clients closed); at shutdown_grace_ms every
 * open request is failed; SHUTDOWN_FLUSH_NS later every client is closed,
 * read or not. A worker with no client, request or held slot left is
 * finished, but stays in its loop (giving stray slots back) until every
 * worker is finished: the last one wakes the others (BROKER_MSG_EXIT). So
 * every path out of a worker is bounded by the grace period plus the flush
 * bound, and no slot is stranded with a worker that has gone.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "worker.h"

_Thread_local struct worker *worker_self;

/* The deadline timer fired: fail what is due; at shutdown, the grace and
 * then the flush bound end the drain. */
static void on_timer(struct worker *w)
{
    w->timer_armed_ns = 0;
    uint64_t now = now_ns();
    request_expire(w, now);
    if (w->housekeeping_ns && now >= w->housekeeping_ns)
        w->housekeeping_ns = cachepath_housekeeping(w, now);
    if (w->draining && !w->grace_expired && now >= w->grace_deadline_ns) {
        w->grace_expired = true;
        w->flush_deadline_ns = now + SHUTDOWN_FLUSH_NS;
        request_fail_all(w, PROTO_SHUTTING_DOWN,
                         "the broker is shutting down and the request did not finish in time");
    }
    if (w->grace_expired && !w->force_close && now >= w->flush_deadline_ns) {
        w->force_close = true; /* client.c closes every client now */
        client_mark_all_dirty(w);
    }
}

static void drain_inbox(struct worker *w)
{
    void *v;
    while (ring_spsc_try_pop(&w->inbox, &v))
        client_new(w, (int)((uintptr_t)v & INBOX_FD_MASK) - 1, ((uintptr_t)v & INBOX_COMPAT) != 0);
}

static void on_msg(struct worker *w, uint64_t ud, int res)
{
    unsigned kind = (unsigned)(ud >> 3) & 31u;
    uint64_t payload = ud >> 8;
    if (kind == BROKER_MSG_NEWCONN) {
        drain_inbox(w);
    } else if (kind == BROKER_MSG_SHUTDOWN) {
        if (!w->draining) {
            w->draining = true;
            w->grace_deadline_ns = now_ns() + (uint64_t)bcfg(w->b)->shutdown_grace_ms * 1000000u;
            drain_inbox(w);
            health_stop(w);
            client_mark_all_dirty(w); /* idle ones close now */
        }
    } else if (kind == BROKER_MSG_COALESCED) {
        cachepath_on_ticket(w, (struct coalesce_ticket *)(uintptr_t)payload);
    } else if (kind == BROKER_MSG_RELOAD) {
        /* nothing: waking up was the point (worker_config_sync) */
    } else if (kind == BROKER_MSG_EXIT) {
        w->exit_now = true;
    } else if (kind == BROKER_MSG_HANDOFF) {
        uint32_t bi = (uint32_t)res >> 16, si = (uint32_t)res & 0xffffu;
        if (bi < broker_nbackends(w->b) && si < w->b->backends[bi].pool.cap) {
            struct pool_slot *slot = &w->b->backends[bi].pool.slots[si];
            /* The kernel's MSG_RING orders the sender's writes before this
             * completion, but the C memory model (and TSan) only know
             * atomics: this acquire load reads the value the releaser's
             * acq_rel exchange in mark_held (pool.c) wrote, so everything
             * the slot's previous holder did happens-before our use. */
            (void)atomic_load_explicit(&slot->held, memory_order_acquire);
            handoff_receive(w, payload, slot);
        }
    }
}

static void dispatch(struct worker *w, struct io_uring_cqe *cqe)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    switch (UD_TAG(ud)) {
    case UD_CLIENT_RECV:
        client_on_recv(w, UD_PTR(ud), cqe->res, cqe->flags);
        break;
    case UD_CLIENT_SEND:
        client_on_send(w, UD_PTR(ud), cqe->res);
        break;
    case UD_BACKEND:
        if (*(const uint64_t *)UD_PTR(ud) >= HEALTH_OP_BASE)
            health_on_cqe(w, ud, cqe->res);
        else
            bconn_on_cqe(w, ud, cqe->res);
        break;
    case UD_TIMER:
        on_timer(w);
        break;
    case UD_MSG:
        on_msg(w, ud, cqe->res);
        break;
    case UD_MSG_FAIL: {
        /* Our handoff could not be delivered (the target ring is gone):
         * the slot comes back to the pool for the next waiter. */
        struct bconn *bc = UD_PTR(ud);
        pool_release(&bc->be->pool, bc->slot);
        break;
    }
    default:
        break;
    }
}

/* Nothing of ours left: no client, no request, no backend slot held (a
 * doomed connection's last completion may still be on its way), no health
 * check or timer in flight. */
static bool worker_finished(struct worker *w)
{
    return w->draining && w->nclients == 0 && w->live_reqs == 0 && w->nattached == 0 &&
           ring_spsc_size(&w->inbox) == 0 && health_idle(w);
}

static void post_exit(struct worker *w, struct worker *t)
{
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_msg_ring(sqe, t->ring_fd, 0, ((uint64_t)BROKER_MSG_EXIT << 3) | UD_MSG, 0);
    io_uring_sqe_set_data64(sqe, UD_IGNORE);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
}

/* The shutdown barrier (broker.h): a finished worker keeps serving stray
 * handoffs (giving the slots back) until all are finished; the last one to
 * finish wakes the others. */
static void worker_mark_finished(struct worker *w)
{
    struct broker *b = w->b;
    if (w->finished)
        return;
    w->finished = true;
    /* Our messages to others (handoffs, coalesced answers) go out before we
     * count: whoever sees the count complete has them queued already. */
    io_uring_submit(&w->ring);
    uint32_t n = atomic_fetch_add_explicit(&b->nfinished, 1, memory_order_acq_rel) + 1;
    if (n == atomic_load_explicit(&b->nstarted, memory_order_acquire)) {
        for (uint32_t i = 0; i < n; i++)
            if (b->workers[i] != w)
                post_exit(w, b->workers[i]);
        w->exit_now = true;
    }
}

/* IORING_REGISTER_ENABLE_RINGS through the raw syscall: liburing 2.3 (what
 * Debian ships) has no helper for it. */
static int ring_enable(struct io_uring *ring)
{
    long rc = syscall(__NR_io_uring_register, ring->ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
    return rc < 0 ? -errno : 0;
}

/* Leaving: send what is queued, then take the messages already sent to us
 * (every sender submitted before it counted itself finished): a coalesced
 * ticket is dropped (its followers are gone), a slot goes back to the
 * pool. Nothing can be sent to us after every worker has finished. */
static void worker_drain_messages(struct worker *w)
{
    io_uring_submit_and_get_events(&w->ring);
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&w->ring, head, cqe)
    {
        uint64_t ud = io_uring_cqe_get_data64(cqe);
        unsigned kind = (unsigned)(ud >> 3) & 31u;
        if (UD_TAG(ud) == UD_MSG && (kind == BROKER_MSG_COALESCED || kind == BROKER_MSG_HANDOFF))
            on_msg(w, ud, cqe->res);
        n++;
    }
    io_uring_cq_advance(&w->ring, n);
    handoff_run_local(w); /* a stale slot passed on to another of our stale tokens */
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    worker_self = w;
    char name[16]; /* the kernel keeps 15 bytes: "brokerd-w255" fits */
    snprintf(name, sizeof name, "brokerd-w%u", w->id);
    pthread_setname_np(pthread_self(), name); /* for top -H, perf, gdb */
    /* SINGLE_ISSUER: this thread becomes the ring's only submitter. */
    int rc = ring_enable(&w->ring);
    /* Worker 0 keeps the cache's memory-pressure figure fresh, off every
     * request path (a mallctl epoch refresh costs tens of microseconds). */
    if (w->id == 0 && w->b->cache && bcfg(w->b)->cache.memory_watermark_bytes)
        w->housekeeping_ns = now_ns() + CACHE_PRESSURE_CHECK_MS * 1000000u;
    atomic_store_explicit(&w->ready, rc == 0 ? 1 : -1, memory_order_release);
    if (rc < 0) {
        log_write(LOG_LEVEL_ERROR, "cannot enable worker ring", LOG_ERRNO(rc),
                  LOG_UINT("worker", w->id));
        return NULL;
    }
    if (!rxbuf_setup(&w->rx, &w->ring, bcfg(w->b)->client_rx_buffers))
        log_write(LOG_LEVEL_INFO,
                  "io_uring provided buffers unavailable: each client keeps a receive buffer",
                  LOG_UINT("worker", w->id));
    health_start(w);
    for (;;) {
        if (worker_finished(w))
            worker_mark_finished(w);
        if (w->exit_now)
            break;
        rc = io_uring_submit_and_wait(&w->ring, 1);
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
            log_write(LOG_LEVEL_ERROR, "io_uring_submit_and_wait failed", LOG_ERRNO(rc));
            break;
        }
        /* Everything of the last round is submitted: nothing of ours still
         * points into an older configuration (reload.c). */
        worker_config_sync(w);
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&w->ring, head, cqe)
        {
            dispatch(w, cqe);
            n++;
        }
        io_uring_cq_advance(&w->ring, n);
        /* Until neither has work: parsing a client's lines (client_flush_dirty) can
         * win a slot for one of our own queued requests (a local handoff),
         * and a handoff can answer a client. Blocking with either pending
         * would leave it to the next unrelated completion or a timer. */
        do {
            handoff_run_local(w);
            client_flush_dirty(w);
        } while (w->nhandoffs || w->dirty);
        deadline_sync(w);
    }
    worker_mark_finished(w); /* after a ring failure too: never hold the others */
    atomic_store_explicit(&w->exited, true, memory_order_release);
    worker_drain_messages(w);
    return NULL;
}

int worker_create(struct broker *b, uint32_t id, struct worker **out)
{
    struct worker *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->b = b;
    w->id = id;
    w->limits.max_request_bytes = bcfg(b)->max_request_bytes;
    w->limits.max_json_depth = bcfg(b)->max_json_depth;
    w->cfg_gen = atomic_load_explicit(&b->cfg_gen, memory_order_acquire);
    atomic_init(&w->cfg_seen, w->cfg_gen);
    w->rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)id + 1) * 0xbf58476d1ce4e5b9ull ^ (uint64_t)(uintptr_t)w;
    /* Per-backend arrays have room for every backend a reload may add. */
    w->retry_budget = calloc(CONFIG_BACKENDS_MAX, sizeof *w->retry_budget);
    if (!w->retry_budget) {
        free(w);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < CONFIG_BACKENDS_MAX; i++)
        w->retry_budget[i] = RETRY_BUDGET_MAX; /* full: the first failures may retry */
    w->bstats = calloc(CONFIG_BACKENDS_MAX, sizeof *w->bstats);
    w->lat = calloc(CONFIG_BACKENDS_MAX, sizeof *w->lat);
    if (!w->bstats || !w->lat) {
        free(w->lat);
        free(w->bstats);
        free(w->retry_budget);
        free(w);
        return -ENOMEM;
    }
    int rc = admit_init(w);
    if (rc < 0)
        goto err;
    rc = ring_spsc_init(&w->inbox, 4096);
    if (rc < 0)
        goto err_rl;
    struct io_uring_params p = {0};
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED |
              IORING_SETUP_CQSIZE;
    p.cq_entries = 16384;
    rc = io_uring_queue_init_params(4096, &w->ring, &p);
    if (rc < 0)
        goto err_inbox;
    w->ring_ok = true;
    w->ring_fd = w->ring.ring_fd;
    *out = w;
    return 0;
err_inbox:
    ring_spsc_destroy(&w->inbox);
err_rl:
    admit_destroy(w);
err:
    free(w->retry_budget);
    free(w->bstats);
    free(w->lat);
    free(w);
    return rc;
}

int worker_start(struct worker *w)
{
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc)
        return -rc;
    w->started = true;
    /* Wait until the thread owns its ring, so MSG_RING to it can land. */
    int ready;
    while ((ready = atomic_load_explicit(&w->ready, memory_order_acquire)) == 0)
        sched_yield();
    return ready > 0 ? 0 : -EIO;
}

void worker_join(struct worker *w)
{
    if (w && w->started) {
        pthread_join(w->thread, NULL);
        w->started = false;
    }
}

int worker_ring_fd(const struct worker *w)
{
    return w->ring_fd;
}

bool worker_inbox_push(struct worker *w, int fd, bool compat)
{
    uintptr_t v = (uintptr_t)(fd + 1) | (compat ? INBOX_COMPAT : 0);
    return ring_spsc_try_push(&w->inbox, (void *)v);
}

bool worker_exited(const struct worker *w)
{
    return atomic_load_explicit(&w->exited, memory_order_acquire);
}

void worker_free(struct worker *w)
{
    if (!w)
        return;
    /* Only after every worker has been joined: clients left (a failed run)
     * are closed here. */
    while (w->clients) {
        struct client *c = w->clients;
        c->inflight = 0;
        client_free(w, c);
    }
    void *v;
    while (ring_spsc_try_pop(&w->inbox, &v))
        close((int)((uintptr_t)v & INBOX_FD_MASK) - 1);
    if (w->ring_ok)
        io_uring_queue_exit(&w->ring);
    rxbuf_free(&w->rx); /* after the ring: the kernel no longer refers to it */
    ring_spsc_destroy(&w->inbox);
    request_store_free(w);
    free(w->heap);
    free(w->handoffs);
    free(w->retry_budget);
    free(w->bstats);
    free(w->lat);
    admit_destroy(w);
    proto_buf_free(&w->scratch);
    proto_buf_free(&w->vparams);
    free(w);
}
