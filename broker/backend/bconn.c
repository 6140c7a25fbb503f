/*
 * bconn.c - a backend connection while a request holds its slot: connect,
 * send, receive, frame, classify, release.
 *
 * Whichever worker holds a slot drives its socket on its own ring. A
 * request and a slot meet in bconn_start: an idle connection that sat for
 * a while is probed first (a restarted Blender costs no request), an
 * unconnected one connects (with a linked timeout), then one send and one
 * recv go out together. Each received chunk is fed to the incremental
 * scanner once (frame.c), whatever the read boundaries; the reply's size is
 * checked against max_response_bytes whether it completed in this chunk or
 * not. A complete reply is classified (proto.c) and handed to request.c.
 *
 * Release: bconn_settle is the one place a slot goes back to the pool, and
 * only when no request uses it and no operation on it is in flight, so no
 * completion for it can land on this ring after another worker took it.
 * Inside a connection's own completion it runs last (bconn_on_cqe), since
 * from pool_release on another worker may hold the slot: nothing of it is
 * read or written after. A connection that saw a timeout, a framing error,
 * extra bytes or EOF is closed first, never reused: a late reply would be
 * read as the next request's answer.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "worker.h"

#define BCONN_IN_KEEP (256u * 1024u) /* shrink reply buffers above this on release */
#define RECV_CHUNK    (64u * 1024u)

enum bop { BOP_CONNECT = 0, BOP_SEND = 1, BOP_RECV = 2 };

static uint64_t bop_ud(struct bconn *bc, enum bop k)
{
    return (uint64_t)(uintptr_t)&bc->op_kind[k] | UD_BACKEND;
}

static struct bconn *bop_decode(uint64_t ud, enum bop *k)
{
    uint64_t *p = UD_PTR(ud);
    *k = (enum bop) * p;
    return (struct bconn *)(void *)((char *)(p - *p) - offsetof(struct bconn, op_kind));
}

void bconn_close_fd(struct bconn *bc)
{
    if (bc->slot->fd >= 0) {
        close(bc->slot->fd);
        bc->slot->fd = -1;
        atomic_fetch_sub_explicit(&bc->be->stats.open_conns, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&bc->be->stats.closed, 1, memory_order_relaxed);
    }
}

/* A reload moved the backend (address, framing), removed it or shrank its
 * pool below this slot: the connection is closed instead of kept. */
bool bconn_outdated(const struct bconn *bc)
{
    const struct backend *be = bc->be;
    return bc->slot->fd >= 0 &&
           (bc->conn_serial != be_view(be)->conn_serial || bc->slot->index >= pool_size(&be->pool) ||
            atomic_load_explicit(&be->removed, memory_order_relaxed));
}

/* The single release point: once no request uses the connection and no
 * operation on it is in flight, give the slot back - closed first when it is
 * doomed, so the pool hands out an unconnected slot, never a poisoned one. */
void bconn_settle(struct worker *w, struct bconn *bc)
{
    if (!bc->attached || bc->req || bc->ops)
        return;
    bc->attached = false;
    w->nattached--;
    if (bc->doomed || bconn_outdated(bc))
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
void bconn_doom(struct bconn *bc)
{
    bc->doomed = true;
    if (bc->slot->fd >= 0 && bc->ops)
        shutdown(bc->slot->fd, SHUT_RDWR);
}

static void bconn_arm_recv(struct worker *w, struct bconn *bc)
{
    if (proto_buf_reserve_try(&bc->in, RECV_CHUNK) < 0) {
        bconn_doom(bc);
        req_fail(w, bc->req, PROTO_INTERNAL, "out of memory reading the backend reply");
        return;
    }
    struct io_uring_sqe *sqe = worker_sqe(w);
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
    r->idle_ns = now_ns() + (uint64_t)becfg(bc->be)->idle_timeout_ms * 1000000u;
    deadline_rekey(w, r);
}

static void bconn_arm_send(struct worker *w, struct bconn *bc)
{
    struct req *r = bc->req;
    r->sent_any = true; /* from here its outcome may be "done" (cachepath_retire) */
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_send(sqe, bc->slot->fd, r->breq.data + r->sent, r->breq.len - r->sent,
                       MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, bop_ud(bc, BOP_SEND));
    bc->ops++;
}

static void backend_count_open(struct backend *be)
{
    uint32_t open = atomic_fetch_add_explicit(&be->stats.open_conns, 1, memory_order_relaxed) + 1;
    uint32_t peak = atomic_load_explicit(&be->stats.peak_conns, memory_order_relaxed);
    while (open > peak &&
           !atomic_compare_exchange_weak_explicit(&be->stats.peak_conns, &peak, open,
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
    atomic_fetch_add_explicit(&be->stats.connects, 1, memory_order_relaxed);
}

static void bconn_connect(struct worker *w, struct bconn *bc)
{
    struct backend *be = bc->be;
    const struct backend_view *v = be_view(be);
    int fd = socket(v->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        req_fail(w, bc->req, PROTO_UNAVAILABLE, "cannot create a socket for backend %s: %s",
                 becfg(be)->name, strerror(errno));
        return;
    }
    if (v->addr.ss_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    bc->slot->fd = fd;
    bc->conn_serial = v->conn_serial;
    bc->slot->requests = 0;
    backend_count_open(be);
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_connect(sqe, fd, (const struct sockaddr *)&v->addr, v->addrlen);
    io_uring_sqe_set_data64(sqe, bop_ud(bc, BOP_CONNECT));
    sqe->flags |= IOSQE_IO_LINK;
    ns_to_ts((uint64_t)v->cfg->connect_timeout_ms * 1000000u, &bc->ts_link);
    sqe = worker_sqe(w);
    io_uring_prep_link_timeout(sqe, &bc->ts_link, 0);
    io_uring_sqe_set_data64(sqe, UD_IGNORE);
    bc->ops++;
}

/* Request and slot meet: connect if needed, else write and read at once. */
void bconn_start(struct worker *w, struct req *r, struct pool_slot *slot)
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
    if (slot->fd >= 0 && bc->conn_serial != be_view(bc->be)->conn_serial)
        bconn_close_fd(bc); /* opened before a reload moved the backend */
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
    struct proto_reply rep;
    bc->got_reply = true;
    if (proto_parse_backend_reply(bc->in.data, total, &bc->scan, &rep) == 0) {
        req_answer_reply(w, r, &rep);
        return;
    }
    bc->doomed = true;
    req_backend_fail(w, r, BE_WHY_BAD_REPLY, 0, PROTO_BAD_BACKEND_RESPONSE,
                     "backend %s sent an unusable reply: %s", becfg(r->be)->name,
                     rep.reason ? rep.reason : "unknown");
}

static void on_backend_recv(struct worker *w, struct bconn *bc, int res)
{
    struct req *r = bc->req;
    const struct backend_config *cfg = becfg(bc->be);
    if (!r) {
        /* The request was answered already (deadline, shutdown): anything
         * arriving now would be taken for the next request's answer. */
        bc->doomed = true;
        return;
    }
    if (res <= 0) {
        bconn_doom(bc);
        if (res == 0 && bc->in.len == 0)
            req_backend_fail(w, r, BE_WHY_CLOSED, 0, PROTO_UNAVAILABLE,
                             "backend %s closed the connection without answering", cfg->name);
        else if (res == 0)
            req_backend_fail(w, r, BE_WHY_CLOSED, 0, PROTO_BAD_BACKEND_RESPONSE,
                             "backend %s closed the connection in the middle of its reply",
                             cfg->name);
        else
            req_backend_fail(w, r, BE_WHY_IO, 0, PROTO_UNAVAILABLE,
                             "reading from backend %s failed: %s", cfg->name, strerror(-res));
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
        req_backend_fail(w, r, BE_WHY_BAD_REPLY, 0, PROTO_BAD_BACKEND_RESPONSE,
                         "backend %s reply exceeds max_response_bytes (%llu)", cfg->name,
                         (unsigned long long)cfg->max_response_bytes);
    } else if (fr == FRAME_DONE) {
        size_t rest = (size_t)res - used;
        if (frame_ws_span(bc->in.data + old + used, rest) < rest)
            bc->doomed = true; /* extra bytes: answer this one, never reuse the connection */
        on_reply_complete(w, bc, old + used);
    } else if (fr < 0) {
        bconn_doom(bc);
        req_backend_fail(w, r, BE_WHY_BAD_REPLY, 0, PROTO_BAD_BACKEND_RESPONSE,
                         "backend %s sent invalid JSON: %s at byte %llu", cfg->name,
                         frame_strerror(fr), (unsigned long long)frame_error_offset(&bc->scan));
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
        req_backend_fail(w, r, BE_WHY_IO, 0, PROTO_UNAVAILABLE, "writing to backend %s failed: %s",
                         becfg(bc->be)->name, res == 0 ? "connection closed" : strerror(-res));
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
            req_backend_fail(w, r, BE_WHY_CONNECT_TIMEOUT, 0, PROTO_UNAVAILABLE,
                             "could not connect to backend %s within %lld ms", becfg(bc->be)->name,
                             (long long)becfg(bc->be)->connect_timeout_ms);
        else
            req_backend_fail(w, r,
                             res == -ECONNREFUSED || res == -ENOENT ? BE_WHY_REFUSED : BE_WHY_IO, 0,
                             PROTO_UNAVAILABLE, "could not connect to backend %s: %s",
                             becfg(bc->be)->name, strerror(-res));
        return;
    }
    bc->slot->requests++;
    bconn_arm_send(w, bc);
    bconn_arm_recv(w, bc);
}

void bconn_on_cqe(struct worker *w, uint64_t ud, int res)
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
