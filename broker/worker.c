/*
 * worker.c - one io_uring event loop per worker thread.
 *
 * A worker owns its clients, their requests and, while it holds them,
 * backend slots. Everything here runs on the worker's own thread; the only
 * inputs from other threads are the SPSC inbox (new client fds) and
 * IORING_OP_MSG_RING completions (wake-up, shutdown, slot handoffs).
 *
 * Request life: a client line is parsed (proto.c), the backend request is
 * written once into req->breq (pure ASCII), the request takes a backend
 * slot (pool.c) or waits in that backend's FIFO queue, then one send and a
 * recv linked to an idle timeout go out together. Each received chunk is fed
 * to the incremental scanner once (frame.c); a complete reply is classified
 * and answered, and the slot goes back - closed instead when the connection
 * saw a timeout, a framing error, extra bytes or EOF (never reused: a late
 * reply would be read as the next request's answer).
 *
 * Deadlines: each request sits in a per-worker binary heap keyed by the
 * earlier of its overall deadline and, while its reply is being read, its
 * idle deadline, which restarts with every recv, i.e. with every received
 * chunk (BUG-009: a dripping backend is not cut off, a silent one is). One
 * absolute IORING_OP_TIMEOUT is armed for the earliest key. Keeping the idle
 * deadline there, not in a linked timeout per recv, saves an SQE, a CQE and
 * a kernel timer arm/cancel per request. Connects carry a linked timeout.
 *
 * Back-pressure: a client is not read while it has max_inflight_per_client
 * requests open or more than max_client_output_bytes waiting to be sent, so
 * a client that does not read cannot make the broker buffer without bound.
 *
 * Ownership: client and req memory is released only when no operation that
 * refers to it is in flight (client->ops, bconn->ops), so no completion can
 * ever carry a dangling pointer.
 */
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"
#include "log.h"

#define CLIENT_IN_INITIAL (16u * 1024u)
#define REQ_CHUNK 256u
#define REQ_MAX_CHUNKS 4096u /* 1M requests per worker, far above max_inflight */
#define BCONN_IN_KEEP (256u * 1024u) /* shrink reply buffers above this on release */
#define RECV_CHUNK (64u * 1024u)
/* After shutdown_grace_ms, answers already written get this long to reach
 * clients that read them; then every client is closed. */
#define SHUTDOWN_FLUSH_NS (1000u * 1000000u)

/* NEW: admitted, not in a pool queue; QUEUED: its token waits in the pool
 * (leaving that state without the handoff calls pool_cancel_wait); ACTIVE:
 * holds a slot. */
enum req_state { REQ_FREE, REQ_NEW, REQ_QUEUED, REQ_ACTIVE };

struct client;

struct req {
    uint32_t idx, gen;
    enum req_state state;
    struct client *c;
    struct backend *be;
    struct bconn *bc;
    struct proto_buf breq; /* backend request bytes */
    size_t sent;
    uint64_t deadline_ns; /* overall request deadline */
    uint64_t idle_ns;     /* backend idle deadline while reading, else UINT64_MAX */
    uint64_t key_ns;      /* heap key: min(deadline_ns, idle_ns) */
    uint32_t timeout_ms;
    uint32_t heap_idx; /* position in the deadline heap, UINT32_MAX if none */
    uint8_t id_len;
    char id[PROTO_ID_MAX + 24];
    struct req *next_free;
};

struct client {
    struct worker *w;
    int fd;
    uint32_t ops;           /* recv/send/close operations in flight */
    uint32_t inflight;      /* requests not answered yet */
    char *in;
    size_t in_len, in_cap;
    bool skipping;          /* discarding an over-long line up to its newline */
    bool recv_armed, send_armed;
    bool eof;               /* peer finished sending */
    bool dead;              /* peer gone or fatal error: discard output */
    bool closing;           /* shutdown(2) issued, waiting for ops to drain */
    bool dirty;             /* has output to flush at the end of this round */
    struct proto_buf out;   /* responses waiting to be sent */
    struct proto_buf wbuf;  /* responses being sent */
    size_t woff;
    struct client *prev, *next;   /* all clients of the worker */
    struct client *next_dirty;
};

struct handoff {
    uint64_t token;
    struct pool_slot *slot;
};

struct worker {
    struct broker *b;
    uint32_t id;
    pthread_t thread;
    bool started;
    struct io_uring ring;
    bool ring_ok;
    int ring_fd;
    struct ring_spsc inbox;
    /* requests */
    struct req *chunks[REQ_MAX_CHUNKS];
    uint32_t nchunks;
    struct req *free_reqs;
    uint32_t live_reqs;
    /* deadline heap */
    struct req **heap;
    uint32_t heap_len, heap_cap;
    uint64_t timer_armed_ns; /* 0: no timer armed */
    struct __kernel_timespec timer_ts;
    /* clients */
    struct client *clients;
    uint32_t nclients;
    struct client *dirty;
    /* local handoffs (slot released to a waiter of this worker) */
    struct handoff *handoffs;
    uint32_t nhandoffs, handoffs_cap;
    /* shutdown */
    _Atomic int ready;   /* 1: ring enabled by the thread, -1: failed */
    _Atomic bool exited; /* the loop ended: handoffs to it are stale */
    bool draining;
    uint64_t grace_deadline_ns;
    bool grace_expired;
    uint64_t flush_deadline_ns; /* after the grace: last chance to send answers */
    bool force_close;           /* past it: close every client, read or not */
    bool finished;              /* counted in b->nfinished */
    bool exit_now;              /* every worker finished */
    uint32_t nattached;         /* backend slots held (bconn attached) */
    struct bconn *cqe_bc;       /* bconn whose completion is being handled */
    struct proto_limits limits;
};

static _Thread_local struct worker *tl_worker;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct io_uring_sqe *get_sqe(struct worker *w)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
    while (!sqe) {
        /* SQ full: push what we have to the kernel and try again. */
        io_uring_submit(&w->ring);
        sqe = io_uring_get_sqe(&w->ring);
    }
    return sqe;
}

/* ---- tokens ------------------------------------------------------------ */

/* A waiter token: worker id (8 bits) | request index (24 bits) | generation
 * (24 bits). A value, never a pointer: stale tokens are harmless. */
static uint64_t token_make(const struct worker *w, const struct req *r)
{
    return ((uint64_t)(r->gen & 0xffffffu) << 32) | ((uint64_t)r->idx << 8) | w->id;
}

static struct req *req_at(struct worker *w, uint32_t idx)
{
    uint32_t chunk = idx / REQ_CHUNK;
    if (chunk >= w->nchunks)
        return NULL;
    return &w->chunks[chunk][idx % REQ_CHUNK];
}

/* ---- requests ---------------------------------------------------------- */

static struct req *req_alloc(struct worker *w)
{
    if (!w->free_reqs) {
        if (w->nchunks == REQ_MAX_CHUNKS)
            return NULL;
        struct req *chunk = calloc(REQ_CHUNK, sizeof *chunk);
        if (!chunk)
            return NULL;
        for (uint32_t i = REQ_CHUNK; i-- > 0;) {
            chunk[i].idx = w->nchunks * REQ_CHUNK + i;
            chunk[i].gen = 1;
            chunk[i].heap_idx = UINT32_MAX;
            chunk[i].next_free = w->free_reqs;
            w->free_reqs = &chunk[i];
        }
        w->chunks[w->nchunks++] = chunk;
    }
    struct req *r = w->free_reqs;
    w->free_reqs = r->next_free;
    w->live_reqs++;
    return r;
}

static void req_release(struct worker *w, struct req *r)
{
    r->state = REQ_FREE;
    r->gen = (r->gen + 1) & 0xffffffu;
    if (r->gen == 0)
        r->gen = 1;
    r->c = NULL;
    r->bc = NULL;
    r->be = NULL;
    r->breq.len = 0;
    if (r->breq.cap > 64u * 1024u)
        proto_buf_free(&r->breq); /* keep small buffers for reuse only */
    r->next_free = w->free_reqs;
    w->free_reqs = r;
    w->live_reqs--;
}

/* ---- deadline heap ----------------------------------------------------- */

static void heap_swap(struct worker *w, uint32_t a, uint32_t b)
{
    struct req *t = w->heap[a];
    w->heap[a] = w->heap[b];
    w->heap[b] = t;
    w->heap[a]->heap_idx = a;
    w->heap[b]->heap_idx = b;
}

static void heap_up(struct worker *w, uint32_t i)
{
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (w->heap[p]->key_ns <= w->heap[i]->key_ns)
            break;
        heap_swap(w, i, p);
        i = p;
    }
}

static void heap_down(struct worker *w, uint32_t i)
{
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < w->heap_len && w->heap[l]->key_ns < w->heap[m]->key_ns)
            m = l;
        if (r < w->heap_len && w->heap[r]->key_ns < w->heap[m]->key_ns)
            m = r;
        if (m == i)
            return;
        heap_swap(w, i, m);
        i = m;
    }
}

static int heap_push(struct worker *w, struct req *r)
{
    if (w->heap_len == w->heap_cap) {
        uint32_t cap = w->heap_cap ? w->heap_cap * 2 : 256;
        struct req **h = realloc(w->heap, cap * sizeof *h);
        if (!h)
            return -ENOMEM;
        w->heap = h;
        w->heap_cap = cap;
    }
    r->heap_idx = w->heap_len;
    w->heap[w->heap_len++] = r;
    heap_up(w, r->heap_idx);
    return 0;
}

static void heap_remove(struct worker *w, struct req *r)
{
    uint32_t i = r->heap_idx;
    if (i == UINT32_MAX)
        return;
    r->heap_idx = UINT32_MAX;
    w->heap_len--;
    if (i == w->heap_len)
        return;
    w->heap[i] = w->heap[w->heap_len];
    w->heap[i]->heap_idx = i;
    heap_up(w, i);
    heap_down(w, w->heap[i]->heap_idx);
}

/* The request's deadlines changed: restore the heap order. */
static void heap_rekey(struct worker *w, struct req *r)
{
    uint64_t key = r->idle_ns < r->deadline_ns ? r->idle_ns : r->deadline_ns;
    if (key == r->key_ns || r->heap_idx == UINT32_MAX)
        return;
    r->key_ns = key;
    heap_up(w, r->heap_idx);
    heap_down(w, r->heap_idx);
}

static void ns_to_ts(uint64_t ns, struct __kernel_timespec *ts)
{
    ts->tv_sec = (long long)(ns / 1000000000u);
    ts->tv_nsec = (long long)(ns % 1000000000u);
}

/* Keep one absolute timeout armed for the earliest deadline we care about
 * (the heap top, or the shutdown grace deadline). */
static void timer_sync(struct worker *w)
{
    uint64_t want = w->heap_len ? w->heap[0]->key_ns : 0;
    if (w->draining && !w->grace_expired && (!want || w->grace_deadline_ns < want))
        want = w->grace_deadline_ns;
    if (w->grace_expired && !w->force_close && (!want || w->flush_deadline_ns < want))
        want = w->flush_deadline_ns;
    if (!want || (w->timer_armed_ns && w->timer_armed_ns <= want))
        return; /* nothing to wait for, or an earlier timer already fires */
    ns_to_ts(want, &w->timer_ts);
    struct io_uring_sqe *sqe = get_sqe(w);
    if (w->timer_armed_ns) {
        io_uring_prep_timeout_update(sqe, &w->timer_ts, UD_TIMER, IORING_TIMEOUT_ABS);
        io_uring_sqe_set_data64(sqe, UD_IGNORE);
    } else {
        io_uring_prep_timeout(sqe, &w->timer_ts, 0, IORING_TIMEOUT_ABS);
        io_uring_sqe_set_data64(sqe, UD_TIMER);
    }
    w->timer_armed_ns = want;
}

/* ---- client output ----------------------------------------------------- */

static void client_mark_dirty(struct worker *w, struct client *c)
{
    if (!c->dirty) {
        c->dirty = true;
        c->next_dirty = w->dirty;
        w->dirty = c;
    }
}

static void client_send(struct worker *w, struct client *c)
{
    if (c->send_armed || c->dead || c->closing)
        return;
    if (c->woff == c->wbuf.len) {
        if (!c->out.len)
            return;
        /* Swap: what accumulated goes out in one send. */
        struct proto_buf t = c->wbuf;
        c->wbuf = c->out;
        c->out = t;
        c->out.len = 0;
        c->woff = 0;
    }
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_send(sqe, c->fd, c->wbuf.data + c->woff, c->wbuf.len - c->woff, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | UD_CLIENT_SEND);
    c->send_armed = true;
    c->ops++;
}

static size_t client_pending_out(const struct client *c)
{
    return c->out.len + (c->wbuf.len - c->woff);
}

/* Answer one request line on client c. Output that cannot be buffered (out
 * of memory) is a fatal condition for that client only: it is cut off
 * rather than silently missing an answer. */
static void client_emit_error(struct worker *w, struct client *c, const struct proto_span *id,
                              enum proto_code code, const char *msg, size_t msg_len,
                              unsigned flags)
{
    if (c->dead)
        return;
    if (proto_write_error_ex(&c->out, id, code, msg, msg_len, -1, flags) < 0) {
        log_write(LOG_LEVEL_ERROR, "out of memory buffering a response; closing client",
                  LOG_INT("fd", c->fd));
        c->dead = true;
        return;
    }
    client_mark_dirty(w, c);
}

static void client_emit_errorf(struct worker *w, struct client *c, const struct proto_span *id,
                               enum proto_code code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Our own messages (trusted formats); cut to the protocol's message size. */
static size_t format_msg(char *msg, size_t cap, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

static size_t format_msg(char *msg, size_t cap, const char *fmt, va_list ap)
{
    int n = vsnprintf(msg, cap, fmt, ap);
    return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}

static void client_emit_errorf(struct worker *w, struct client *c, const struct proto_span *id,
                               enum proto_code code, const char *fmt, ...)
{
    char msg[PROTO_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    size_t len = format_msg(msg, sizeof msg, fmt, ap);
    va_end(ap);
    client_emit_error(w, c, id, code, msg, len, 0);
}

/* ---- request completion ------------------------------------------------ */

static void client_maybe_resume(struct worker *w, struct client *c);
static struct proto_span req_id(const struct req *r)
{
    return (struct proto_span){r->id, r->id_len};
}

/* ---- backend connections ------------------------------------------------ */

enum bop { BOP_CONNECT = 0, BOP_SEND = 1, BOP_RECV = 2 };

static uint64_t bop_ud(struct bconn *bc, enum bop k)
{
    return (uint64_t)(uintptr_t)&bc->op_kind[k] | UD_BACKEND;
}

static struct bconn *bop_decode(uint64_t ud, enum bop *k)
{
    uint64_t *p = UD_PTR(ud);
    *k = (enum bop)*p;
    return (struct bconn *)(void *)((char *)(p - *p) - offsetof(struct bconn, op_kind));
}

static void bconn_close_fd(struct bconn *bc)
{
    if (bc->slot->fd >= 0) {
        close(bc->slot->fd);
        bc->slot->fd = -1;
        atomic_fetch_sub_explicit(&bc->be->stats.open_conns, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&bc->be->stats.closed, 1, memory_order_relaxed);
    }
}

/* The single release point: once no request uses the connection and no
 * operation on it is in flight, give the slot back - closed first when it is
 * doomed, so the pool hands out an unconnected slot, never a poisoned one. */
static void bconn_settle(struct worker *w, struct bconn *bc)
{
    if (!bc->attached || bc->req || bc->ops)
        return;
    bc->attached = false;
    w->nattached--;
    if (bc->doomed)
        bconn_close_fd(bc);
    bc->doomed = false;
    bc->in.len = 0;
    if (bc->in.cap > BCONN_IN_KEEP)
        proto_buf_free(&bc->in);
    bc->idle_since_ns = now_ns();
    /* Last touch: from here another worker may hold the slot and bc. */
    pool_release(&bc->be->pool, bc->slot);
}

/* A connection that sat idle may have died meanwhile (Blender restarted):
 * writing a request into it would fail the request for nothing, or worse,
 * half-deliver it. So before reusing a connection idle for more than
 * IDLE_PROBE_NS, peek at it without blocking: EOF, an error or unsolicited
 * bytes mean it is closed and replaced. Under load connections never idle
 * that long, so the hot path pays only a clock read. */
#define IDLE_PROBE_NS (20u * 1000000u)
static bool bconn_idle_dead(struct bconn *bc)
{
    if (now_ns() - bc->idle_since_ns < IDLE_PROBE_NS)
        return false;
    char byte;
    ssize_t n = recv(bc->slot->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return !(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
}

/* Abort whatever is in flight: shutdown(2) completes pending socket
 * operations at once; the fd is closed when the slot settles. */
static void bconn_doom(struct bconn *bc)
{
    bc->doomed = true;
    if (bc->slot->fd >= 0 && bc->ops)
        shutdown(bc->slot->fd, SHUT_RDWR);
}

static void bconn_arm_recv(struct worker *w, struct bconn *bc);

/* The request is answered (the caller wrote the response): detach it. */
static void req_done(struct worker *w, struct req *r)
{
    struct client *c = r->c;
    struct bconn *bc = r->bc;
    heap_remove(w, r);
    atomic_fetch_sub_explicit(&w->b->inflight, 1, memory_order_relaxed);
    c->inflight--;
    if (bc) {
        if (bc->ops)
            bconn_doom(bc); /* answered early (deadline, shutdown): never reuse */
        bc->req = NULL;
        /* Inside that connection's own completion, on_backend_cqe settles
         * it last: nothing of it may be read after the slot is given back. */
        if (bc != w->cqe_bc)
            bconn_settle(w, bc);
    }
    if (r->state == REQ_QUEUED)
        pool_cancel_wait(&r->be->pool); /* gave up waiting: not a live waiter now */
    req_release(w, r);
    client_maybe_resume(w, c);
}

static void req_fail(struct worker *w, struct req *r, enum proto_code code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void req_fail(struct worker *w, struct req *r, enum proto_code code, const char *fmt, ...)
{
    char msg[PROTO_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    size_t len = format_msg(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct proto_span id = req_id(r);
    client_emit_error(w, r->c, &id, code, msg, len, 0);
    if (code == PROTO_TIMEOUT)
        atomic_fetch_add_explicit(&r->be->stats.timeouts, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->be->stats.errors, 1, memory_order_relaxed);
    req_done(w, r);
}

static void bconn_arm_recv(struct worker *w, struct bconn *bc)
{
    if (proto_buf_reserve_try(&bc->in, RECV_CHUNK) < 0) {
        bconn_doom(bc);
        req_fail(w, bc->req, PROTO_INTERNAL, "out of memory reading the backend reply");
        return;
    }
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_recv(sqe, bc->slot->fd, bc->in.data + bc->in.len, bc->in.cap - bc->in.len, 0);
    io_uring_sqe_set_data64(sqe, bop_ud(bc, BOP_RECV));
    /* The reply cannot be there yet (the request goes out in the same
     * submission): arm the poll at once instead of a doomed first try. */
    sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    bc->ops++;
    /* The idle deadline restarts with every recv, i.e. with every received
     * chunk (BUG-009). It lives in the worker's deadline heap rather than in
     * a linked timeout: no extra SQE, CQE and kernel timer per request. */
    struct req *r = bc->req;
    r->idle_ns = now_ns() + (uint64_t)bc->be->cfg->idle_timeout_ms * 1000000u;
    heap_rekey(w, r);
}

static void bconn_arm_send(struct worker *w, struct bconn *bc)
{
    struct req *r = bc->req;
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_send(sqe, bc->slot->fd, r->breq.data + r->sent, r->breq.len - r->sent,
                       MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, bop_ud(bc, BOP_SEND));
    bc->ops++;
}

static void backend_count_open(struct backend *be)
{
    uint32_t open = atomic_fetch_add_explicit(&be->stats.open_conns, 1, memory_order_relaxed) + 1;
    uint32_t peak = atomic_load_explicit(&be->stats.peak_conns, memory_order_relaxed);
    while (open > peak && !atomic_compare_exchange_weak_explicit(&be->stats.peak_conns, &peak,
                                                                 open, memory_order_relaxed,
                                                                 memory_order_relaxed))
        ;
    atomic_fetch_add_explicit(&be->stats.connects, 1, memory_order_relaxed);
}

static void bconn_connect(struct worker *w, struct bconn *bc)
{
    struct backend *be = bc->be;
    int fd = socket(be->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        req_fail(w, bc->req, PROTO_UNAVAILABLE, "cannot create a socket for backend %s: %s",
                 be->cfg->name, strerror(errno));
        return;
    }
    if (be->addr.ss_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    bc->slot->fd = fd;
    bc->slot->requests = 0;
    backend_count_open(be);
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_connect(sqe, fd, (const struct sockaddr *)&be->addr, be->addrlen);
    io_uring_sqe_set_data64(sqe, bop_ud(bc, BOP_CONNECT));
    sqe->flags |= IOSQE_IO_LINK;
    ns_to_ts((uint64_t)be->cfg->connect_timeout_ms * 1000000u, &bc->ts_link);
    sqe = get_sqe(w);
    io_uring_prep_link_timeout(sqe, &bc->ts_link, 0);
    io_uring_sqe_set_data64(sqe, UD_IGNORE);
    bc->ops++;
}

/* Request and slot meet: connect if needed, else write and read at once. */
static void req_start(struct worker *w, struct req *r, struct pool_slot *slot)
{
    struct bconn *bc = slot->ctx;
    r->state = REQ_ACTIVE;
    r->bc = bc;
    r->sent = 0;
    bc->req = r;
    bc->attached = true;
    w->nattached++;
    bc->doomed = false;
    bc->sent = false;
    bc->got_reply = false;
    bc->in.len = 0;
    frame_reset(&bc->scan);
    if (slot->fd >= 0 && bconn_idle_dead(bc)) {
        atomic_fetch_add_explicit(&bc->be->stats.stale_closed, 1, memory_order_relaxed);
        bconn_close_fd(bc);
    }
    if (slot->fd < 0) {
        bconn_connect(w, bc);
        return;
    }
    slot->requests++;
    bconn_arm_send(w, bc);
    bconn_arm_recv(w, bc);
}

static void on_reply_complete(struct worker *w, struct bconn *bc, size_t total)
{
    struct req *r = bc->req;
    struct client *c = r->c;
    struct proto_reply rep;
    struct proto_span id = req_id(r);
    bc->got_reply = true;
    int rc = proto_parse_backend_reply(bc->in.data, total, &bc->scan, &rep);
    if (rc == 0 && rep.kind == PROTO_REPLY_SUCCESS) {
        if (!c->dead && proto_write_success(&c->out, &id, &rep.result, false) < 0)
            c->dead = true; /* cannot buffer the answer: cut the client off, loudly */
        client_mark_dirty(w, c);
        atomic_fetch_add_explicit(&r->be->stats.ok, 1, memory_order_relaxed);
        req_done(w, r);
    } else if (rc == 0) {
        client_emit_error(w, c, &id, PROTO_BACKEND_ERROR, rep.message.ptr, rep.message.len,
                          rep.message_flags);
        atomic_fetch_add_explicit(&r->be->stats.errors, 1, memory_order_relaxed);
        req_done(w, r);
    } else {
        bc->doomed = true;
        req_fail(w, r, PROTO_BAD_BACKEND_RESPONSE, "backend %s sent an unusable reply: %s",
                 r->be->cfg->name, rep.reason ? rep.reason : "unknown");
    }
}

static void on_backend_recv(struct worker *w, struct bconn *bc, int res)
{
    struct req *r = bc->req;
    const struct backend_config *cfg = bc->be->cfg;
    if (!r) {
        /* The request was answered already (deadline, shutdown): anything
         * arriving now would be taken for the next request's answer. */
        bc->doomed = true;
        return;
    }
    if (res <= 0) {
        bconn_doom(bc);
        if (res == 0 && bc->in.len == 0)
            req_fail(w, r, PROTO_UNAVAILABLE, "backend %s closed the connection without answering",
                     cfg->name);
        else if (res == 0)
            req_fail(w, r, PROTO_BAD_BACKEND_RESPONSE,
                     "backend %s closed the connection in the middle of its reply", cfg->name);
        else
            req_fail(w, r, PROTO_UNAVAILABLE, "reading from backend %s failed: %s", cfg->name,
                     strerror(-res));
        return;
    }
    size_t old = bc->in.len;
    bc->in.len += (size_t)res;
    size_t used = 0;
    int fr = frame_feed(&bc->scan, bc->in.data + old, (size_t)res, &used);
    /* The reply's own size, whether it completed in this chunk or not. */
    size_t reply_len = fr == FRAME_DONE ? old + used : bc->in.len;
    if (fr >= 0 && reply_len > cfg->max_response_bytes) {
        bconn_doom(bc);
        req_fail(w, r, PROTO_BAD_BACKEND_RESPONSE,
                 "backend %s reply exceeds max_response_bytes (%llu)", cfg->name,
                 (unsigned long long)cfg->max_response_bytes);
    } else if (fr == FRAME_DONE) {
        size_t rest = (size_t)res - used;
        if (frame_ws_span(bc->in.data + old + used, rest) < rest)
            bc->doomed = true; /* extra bytes: answer this one, never reuse the connection */
        on_reply_complete(w, bc, old + used);
    } else if (fr < 0) {
        bconn_doom(bc);
        req_fail(w, r, PROTO_BAD_BACKEND_RESPONSE, "backend %s sent invalid JSON: %s at byte %llu",
                 cfg->name, frame_strerror(fr), (unsigned long long)frame_error_offset(&bc->scan));
    } else {
        bconn_arm_recv(w, bc);
    }
}

static void on_backend_send(struct worker *w, struct bconn *bc, int res)
{
    struct req *r = bc->req;
    if (!r)
        return;
    if (res <= 0) {
        bconn_doom(bc);
        req_fail(w, r, PROTO_UNAVAILABLE, "writing to backend %s failed: %s", bc->be->cfg->name,
                 res == 0 ? "connection closed" : strerror(-res));
        return;
    }
    r->sent += (size_t)res;
    if (r->sent < r->breq.len)
        bconn_arm_send(w, bc); /* short write: the rest, still one request */
    else
        bc->sent = true;
}

static void on_backend_connect(struct worker *w, struct bconn *bc, int res)
{
    struct req *r = bc->req;
    if (!r)
        return;
    if (res < 0) {
        bconn_doom(bc);
        atomic_fetch_add_explicit(&bc->be->stats.connect_failures, 1, memory_order_relaxed);
        if (res == -ECANCELED)
            req_fail(w, r, PROTO_UNAVAILABLE, "could not connect to backend %s within %lld ms",
                     bc->be->cfg->name, (long long)bc->be->cfg->connect_timeout_ms);
        else
            req_fail(w, r, PROTO_UNAVAILABLE, "could not connect to backend %s: %s",
                     bc->be->cfg->name, strerror(-res));
        return;
    }
    bc->slot->requests++;
    bconn_arm_send(w, bc);
    bconn_arm_recv(w, bc);
}

static void on_backend_cqe(struct worker *w, uint64_t ud, int res)
{
    enum bop k;
    struct bconn *bc = bop_decode(ud, &k);
    bc->ops--;
    w->cqe_bc = bc;
    if (k == BOP_CONNECT)
        on_backend_connect(w, bc, res);
    else if (k == BOP_SEND)
        on_backend_send(w, bc, res);
    else
        on_backend_recv(w, bc, res);
    w->cqe_bc = NULL;
    bconn_settle(w, bc); /* the one release point of a completion */
}

/* ---- slot handoffs ----------------------------------------------------- */

/* A slot arrived for `token` (ours). Start the request if it still waits;
 * a stale token (the request timed out meanwhile) gives the slot back. */
static void handoff_receive(struct worker *w, uint64_t token, struct pool_slot *slot)
{
    struct req *r = req_at(w, (uint32_t)(token >> 8) & 0xffffffu);
    struct bconn *bc = slot->ctx;
    if (r && r->state == REQ_QUEUED && (r->gen & 0xffffffu) == (uint32_t)(token >> 32)) {
        if (!r->c->dead) {
            req_start(w, r, slot);
            return;
        }
        /* Its client is gone (reset, or a write to it failed): nobody can
         * read the answer, so the backend must not run the command (it may
         * change the scene) nor spend the connection on it. */
        atomic_fetch_add_explicit(&r->be->stats.abandoned, 1, memory_order_relaxed);
        r->state = REQ_NEW; /* its wait ended with this handoff, not a cancel */
        req_done(w, r);
    } else {
        /* Its request stopped waiting (pool_cancel_wait) before the slot came. */
        pool_stale_returned(&bc->be->pool);
    }
    pool_release(&bc->be->pool, slot);
}

/* pool.h handoff callback: runs on the releasing thread (always a worker). */
void worker_pool_handoff(void *arg, uint64_t token, struct pool_slot *slot)
{
    struct broker *b = arg;
    struct worker *me = tl_worker;
    uint32_t target = (uint32_t)(token & 0xffu);
    struct bconn *bc = slot->ctx;
    struct worker *t = target < b->nworkers ? b->workers[target] : NULL;
    if (me && target == me->id) {
        /* Same worker: no syscall, processed after this round's completions
         * (not here: we may be deep inside another request's completion). */
        if (me->nhandoffs == me->handoffs_cap) {
            uint32_t cap = me->handoffs_cap ? me->handoffs_cap * 2 : 64;
            struct handoff *h = realloc(me->handoffs, cap * sizeof *h);
            if (!h)
                goto post; /* out of memory: through our own ring instead */
            me->handoffs = h;
            me->handoffs_cap = cap;
        }
        me->handoffs[me->nhandoffs++] = (struct handoff){token, slot};
        return;
    }
    if (!me || !t || worker_exited(t)) {
        /* Not a worker thread, or the token's worker finished: stale. */
        pool_release(&bc->be->pool, slot);
        return;
    }
post:;
    struct io_uring_sqe *sqe = get_sqe(me);
    /* MSG_RING: the target's CQE carries kind and token in user_data and the
     * slot (backend << 16 | index) in res. Only a failure posts a CQE here. */
    uint64_t data = (token << 8) | ((uint64_t)BROKER_MSG_HANDOFF << 3) | UD_MSG;
    io_uring_prep_msg_ring(sqe, t->ring_fd, (bc->be->index << 16) | slot->index, data, 0);
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)bc | UD_MSG_FAIL);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
}

static void handoffs_run(struct worker *w)
{
    /* Handoffs may queue more handoffs (a stale token releases the slot to
     * the next waiter): index loop, array may grow meanwhile. */
    for (uint32_t i = 0; i < w->nhandoffs; i++)
        handoff_receive(w, w->handoffs[i].token, w->handoffs[i].slot);
    w->nhandoffs = 0;
}

/* ---- client input ------------------------------------------------------ */

static bool client_paused(const struct worker *w, const struct client *c)
{
    const struct broker_config *cfg = &w->b->cfg;
    return c->inflight >= cfg->rate_limit.max_inflight_per_client ||
           client_pending_out(c) >= cfg->max_client_output_bytes;
}

static struct backend *backend_lookup(struct worker *w, const struct proto_span *name)
{
    struct broker *b = w->b;
    if (!name->ptr)
        return &b->backends[0];
    const struct backend_config *bc = config_find_backend(&b->cfg, name->ptr, name->len);
    return bc ? &b->backends[bc - b->cfg.backends] : NULL;
}

static void handle_line(struct worker *w, struct client *c, const char *line, size_t len)
{
    static struct log_ratelimit rl_bad = LOG_RATELIMIT_INIT("bad_request", 10, 20);
    struct proto_request rq;
    struct proto_error pe;
    if (frame_ws_span(line, len) == len)
        return; /* blank line: not a request */
    if (proto_parse_request(line, len, &w->limits, &rq, &pe) < 0) {
        LOG_RATELIMITED_BY(&rl_bad, LOG_LEVEL_INFO, "refused request line",
                           LOG_STR("code", proto_code_name(pe.code), strlen(proto_code_name(pe.code))),
                           LOG_STR("why", pe.msg, pe.msg_len), LOG_INT("fd", c->fd));
        client_emit_error(w, c, pe.id.ptr ? &pe.id : NULL, pe.code, pe.msg, pe.msg_len, 0);
        return;
    }
    struct backend *be = backend_lookup(w, &rq.backend);
    if (!be) {
        client_emit_errorf(w, c, &rq.id, PROTO_UNKNOWN_BACKEND, "no backend named \"%.*s\"",
                           (int)rq.backend.len, rq.backend.ptr);
        return;
    }
    if (w->draining) {
        client_emit_errorf(w, c, &rq.id, PROTO_SHUTTING_DOWN, "the broker is shutting down");
        return;
    }
    uint32_t cap = w->b->cfg.rate_limit.max_inflight;
    if (atomic_fetch_add_explicit(&w->b->inflight, 1, memory_order_relaxed) >= cap) {
        atomic_fetch_sub_explicit(&w->b->inflight, 1, memory_order_relaxed);
        client_emit_errorf(w, c, &rq.id, PROTO_OVERLOADED,
                           "the broker has %u requests in flight (rate_limit.max_inflight)", cap);
        return;
    }
    struct req *r = req_alloc(w);
    if (!r) {
        atomic_fetch_sub_explicit(&w->b->inflight, 1, memory_order_relaxed);
        client_emit_errorf(w, c, &rq.id, PROTO_OVERLOADED, "out of request slots");
        return;
    }
    r->state = REQ_NEW;
    r->c = c;
    r->be = be;
    r->bc = NULL;
    memcpy(r->id, rq.id.ptr, rq.id.len); /* <= PROTO_ID_MAX + quotes, parser-checked */
    r->id_len = (uint8_t)rq.id.len;
    c->inflight++;
    const struct backend_config *bcfg = be->cfg;
    int rc = proto_write_backend_request(&r->breq, &rq.type, &rq.params, rq.params_ascii);
    if (rc == 0 && bcfg->framing == CONFIG_FRAMING_NDJSON)
        rc = proto_buf_append_try(&r->breq, "\n", 1);
    int64_t t = rq.timeout_ms ? (int64_t)rq.timeout_ms : bcfg->request_timeout_ms;
    if (t > bcfg->max_request_timeout_ms)
        t = bcfg->max_request_timeout_ms;
    r->timeout_ms = (uint32_t)t;
    r->deadline_ns = now_ns() + (uint64_t)t * 1000000u;
    r->idle_ns = UINT64_MAX;
    r->key_ns = r->deadline_ns;
    if (rc == 0)
        rc = heap_push(w, r);
    if (rc < 0) {
        req_fail(w, r, rc == -EINVAL ? PROTO_BAD_REQUEST : PROTO_INTERNAL,
                 rc == -EINVAL ? "params hold invalid UTF-8" : "out of memory");
        return;
    }
    /* QUEUED before acquiring: the handoff may run inside pool_acquire. */
    r->state = REQ_QUEUED;
    struct pool_slot *slot;
    switch (pool_acquire(&be->pool, token_make(w, r), &slot)) {
    case POOL_GOT:
        req_start(w, r, slot);
        break;
    case POOL_QUEUED:
        break;
    case POOL_OVERLOADED:
        r->state = REQ_NEW; /* never queued */
        req_fail(w, r, PROTO_OVERLOADED, "backend %s: all %u connections busy and %u requests queued (max_queue)",
                 bcfg->name, bcfg->pool_size, bcfg->max_queue);
        break;
    }
}

/* Parse every complete line we may take now. What stays in c->in is
 * either complete lines the client may not send yet (paused: they wait, and
 * are never mistaken for one over-long line) or the start of one line. */
static void client_process(struct worker *w, struct client *c)
{
    uint64_t max = w->b->cfg.max_request_bytes;
    size_t pos = 0;
    bool partial = false; /* stopped at a line without its newline */
    while (pos < c->in_len && !c->dead) {
        if (client_paused(w, c))
            break;
        char *nl = memchr(c->in + pos, '\n', c->in_len - pos);
        if (!nl) {
            partial = true;
            break;
        }
        size_t len = (size_t)(nl - (c->in + pos));
        if (c->skipping)
            c->skipping = false; /* the tail of an over-long line ends here */
        else
            handle_line(w, c, c->in + pos, len);
        pos += len + 1;
    }
    if (pos) {
        memmove(c->in, c->in + pos, c->in_len - pos);
        c->in_len -= pos;
    }
    if (!partial)
        return;
    if (c->skipping) {
        c->in_len = 0; /* still inside the over-long line: drop it */
    } else if (c->in_len > max) {
        client_emit_errorf(w, c, NULL, PROTO_TOO_LARGE,
                           "request line exceeds max_request_bytes (%llu)", (unsigned long long)max);
        c->skipping = true;
        c->in_len = 0;
    } else if (c->eof && !c->dead) {
        /* The client finished sending without a final newline: its last
         * line is still a request and gets its answer. */
        handle_line(w, c, c->in, c->in_len);
        c->in_len = 0;
    }
}

static void client_arm_recv(struct worker *w, struct client *c)
{
    /* Draining too: a client waiting for answers may still send lines, and
     * each gets one (shutting_down); idle clients are closed instead. */
    if (c->recv_armed || c->eof || c->dead || c->closing || client_paused(w, c))
        return;
    if (c->in_len == c->in_cap) {
        /* Room for one byte past the limit, so an over-long line shows. */
        size_t limit = (size_t)w->b->cfg.max_request_bytes + 1;
        size_t cap = c->in_cap * 2 > limit ? limit : c->in_cap * 2;
        if (cap <= c->in_cap)
            return; /* full of complete lines we may not take yet: wait */
        char *in = realloc(c->in, cap);
        if (!in) {
            c->dead = true;
            return;
        }
        c->in = in;
        c->in_cap = cap;
    }
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_recv(sqe, c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | UD_CLIENT_RECV);
    c->recv_armed = true;
    c->ops++;
}

static void client_free(struct worker *w, struct client *c)
{
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nclients--;
    atomic_fetch_sub_explicit(&w->b->nclients, 1, memory_order_relaxed);
    free(c->in);
    proto_buf_free(&c->out);
    proto_buf_free(&c->wbuf);
    free(c);
}

/* Decide whether the client is finished; close it when nothing refers to
 * it any more. Returns true when c was freed. */
static bool client_check_close(struct worker *w, struct client *c)
{
    bool idle = c->inflight == 0 && client_pending_out(c) == 0;
    /* force_close: the grace and the flush bound are over; a client that
     * does not read its answers cannot hold the shutdown any longer. */
    if (!c->closing && (c->dead || w->force_close || (idle && (c->eof || w->draining)))) {
        c->closing = true;
        /* Completes a pending recv/send at once (they return 0 or an error). */
        if (c->ops)
            shutdown(c->fd, SHUT_RDWR);
    }
    /* Not while it sits on the dirty list (re-queued while being handled):
     * it is freed when that entry comes up, never from under the list. */
    if (c->closing && c->ops == 0 && c->inflight == 0 && !c->dirty) {
        client_free(w, c);
        return true;
    }
    return false;
}

static void client_maybe_resume(struct worker *w, struct client *c)
{
    client_mark_dirty(w, c); /* handled at the end of the round, never re-entrantly */
}

/* End of a round: for every touched client, take what lines it may send
 * now, push its output out, read more, or close it. */
static void flush_dirty(struct worker *w)
{
    while (w->dirty) {
        struct client *list = w->dirty;
        w->dirty = NULL;
        while (list) {
            struct client *c = list;
            list = c->next_dirty;
            c->dirty = false;
            c->next_dirty = NULL;
            if (!c->closing && !c->dead)
                client_process(w, c);
            if (client_check_close(w, c))
                continue;
            client_send(w, c);
            client_arm_recv(w, c);
        }
    }
}

static void client_new(struct worker *w, int fd)
{
    struct client *c = calloc(1, sizeof *c);
    char *in = malloc(CLIENT_IN_INITIAL);
    if (!c || !in) {
        free(c);
        free(in);
        close(fd);
        atomic_fetch_sub_explicit(&w->b->nclients, 1, memory_order_relaxed);
        log_write(LOG_LEVEL_ERROR, "out of memory accepting a client", LOG_INT("fd", fd));
        return;
    }
    c->w = w;
    c->fd = fd;
    c->in = in;
    c->in_cap = CLIENT_IN_INITIAL;
    proto_buf_init(&c->out);
    proto_buf_init(&c->wbuf);
    c->next = w->clients;
    if (w->clients)
        w->clients->prev = c;
    w->clients = c;
    w->nclients++;
    client_mark_dirty(w, c);
}

static void on_client_recv(struct worker *w, struct client *c, int res)
{
    c->recv_armed = false;
    c->ops--;
    if (res > 0)
        c->in_len += (size_t)res;
    else if (res == 0)
        c->eof = true;
    else if (res != -EINTR && res != -EAGAIN)
        c->dead = true;
    client_mark_dirty(w, c);
}

static void on_client_send(struct worker *w, struct client *c, int res)
{
    c->send_armed = false;
    c->ops--;
    if (res < 0) {
        if (res != -EINTR && res != -EAGAIN)
            c->dead = true; /* EPIPE, ECONNRESET: the client is gone */
    } else {
        c->woff += (size_t)res;
    }
    if (c->dead) {
        c->out.len = 0;
        c->wbuf.len = c->woff = 0;
    }
    client_mark_dirty(w, c);
}

/* ---- deadlines and shutdown ------------------------------------------- */

static void fail_all(struct worker *w, enum proto_code code, const char *msg)
{
    while (w->heap_len) {
        struct req *r = w->heap[0];
        req_fail(w, r, code, "%s", msg);
    }
}

static void on_timer(struct worker *w)
{
    w->timer_armed_ns = 0;
    uint64_t now = now_ns();
    while (w->heap_len && w->heap[0]->key_ns <= now) {
        struct req *r = w->heap[0];
        if (r->deadline_ns > now)
            req_fail(w, r, PROTO_TIMEOUT, "backend %s sent nothing for %lld ms", r->be->cfg->name,
                     (long long)r->be->cfg->idle_timeout_ms);
        else if (r->state == REQ_QUEUED)
            req_fail(w, r, PROTO_TIMEOUT,
                     "no connection to backend %s became free within %u ms", r->be->cfg->name,
                     r->timeout_ms);
        else
            req_fail(w, r, PROTO_TIMEOUT, "backend %s did not answer within %u ms",
                     r->be->cfg->name, r->timeout_ms);
    }
    if (w->draining && !w->grace_expired && now >= w->grace_deadline_ns) {
        w->grace_expired = true;
        w->flush_deadline_ns = now + SHUTDOWN_FLUSH_NS;
        fail_all(w, PROTO_SHUTTING_DOWN,
                 "the broker is shutting down and the request did not finish in time");
    }
    if (w->grace_expired && !w->force_close && now >= w->flush_deadline_ns) {
        w->force_close = true;
        for (struct client *c = w->clients; c; c = c->next)
            client_mark_dirty(w, c);
    }
}

static void drain_inbox(struct worker *w)
{
    void *v;
    while (ring_spsc_try_pop(&w->inbox, &v))
        client_new(w, (int)(intptr_t)v - 1);
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
            w->grace_deadline_ns = now_ns() + (uint64_t)w->b->cfg.shutdown_grace_ms * 1000000u;
            drain_inbox(w);
            for (struct client *c = w->clients; c; c = c->next)
                client_mark_dirty(w, c); /* idle ones close now */
        }
    } else if (kind == BROKER_MSG_EXIT) {
        w->exit_now = true;
    } else if (kind == BROKER_MSG_HANDOFF) {
        uint32_t bi = (uint32_t)res >> 16, si = (uint32_t)res & 0xffffu;
        if (bi < w->b->nbackends && si < w->b->backends[bi].pool.size) {
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
        on_client_recv(w, UD_PTR(ud), cqe->res);
        break;
    case UD_CLIENT_SEND:
        on_client_send(w, UD_PTR(ud), cqe->res);
        break;
    case UD_BACKEND:
        on_backend_cqe(w, ud, cqe->res);
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
 * doomed connection's last completion may still be on its way). */
static bool worker_finished(struct worker *w)
{
    return w->draining && w->nclients == 0 && w->live_reqs == 0 && w->nattached == 0 &&
           ring_spsc_size(&w->inbox) == 0;
}

static void post_exit(struct worker *w, struct worker *t)
{
    struct io_uring_sqe *sqe = get_sqe(w);
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

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    tl_worker = w;
    char name[16]; /* the kernel keeps 15 bytes: "brokerd-w255" fits */
    snprintf(name, sizeof name, "brokerd-w%u", w->id);
    pthread_setname_np(pthread_self(), name); /* for top -H, perf, gdb */
    /* SINGLE_ISSUER: this thread becomes the ring's only submitter. */
    int rc = ring_enable(&w->ring);
    atomic_store_explicit(&w->ready, rc == 0 ? 1 : -1, memory_order_release);
    if (rc < 0) {
        log_write(LOG_LEVEL_ERROR, "cannot enable worker ring", LOG_ERRNO(rc), LOG_UINT("worker", w->id));
        return NULL;
    }
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
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&w->ring, head, cqe)
        {
            dispatch(w, cqe);
            n++;
        }
        io_uring_cq_advance(&w->ring, n);
        /* Until neither has work: parsing a client's lines (flush_dirty) can
         * win a slot for one of our own queued requests (a local handoff),
         * and a handoff can answer a client. Blocking with either pending
         * would leave it to the next unrelated completion or a timer. */
        do {
            handoffs_run(w);
            flush_dirty(w);
        } while (w->nhandoffs || w->dirty);
        timer_sync(w);
    }
    worker_mark_finished(w); /* after a ring failure too: never hold the others */
    atomic_store_explicit(&w->exited, true, memory_order_release);
    io_uring_submit(&w->ring); /* pending handoff and exit messages, if any */
    return NULL;
}

/* ---- lifecycle --------------------------------------------------------- */

int worker_create(struct broker *b, uint32_t id, struct worker **out)
{
    struct worker *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->b = b;
    w->id = id;
    w->limits.max_request_bytes = b->cfg.max_request_bytes;
    w->limits.max_json_depth = b->cfg.max_json_depth;
    int rc = ring_spsc_init(&w->inbox, 4096);
    if (rc < 0)
        goto err;
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
err:
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

bool worker_inbox_push(struct worker *w, int fd)
{
    return ring_spsc_try_push(&w->inbox, (void *)(intptr_t)(fd + 1));
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
        close((int)(intptr_t)v - 1);
    if (w->ring_ok)
        io_uring_queue_exit(&w->ring);
    ring_spsc_destroy(&w->inbox);
    for (uint32_t i = 0; i < w->nchunks; i++) {
        for (uint32_t j = 0; j < REQ_CHUNK; j++)
            proto_buf_free(&w->chunks[i][j].breq);
        free(w->chunks[i]);
    }
    free(w->heap);
    free(w->handoffs);
    free(w);
}
