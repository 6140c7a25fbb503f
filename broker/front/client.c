/*
 * client.c - a client connection: read, split into lines, queue answers,
 * back-pressure, close.
 *
 * Reading: one recv at a time; complete lines go to request_line()
 * (request.c) in order. An idle client (nothing buffered, no request open)
 * holds no receive buffer: its recv picks one of the worker's shared
 * buffers when data comes (rxbuf.c) and the bytes are copied into c->in,
 * allocated to fit. A busy client reads straight into c->in (from
 * CLIENT_IN_INITIAL, doubling as lines need), as a pipelining client should:
 * no copy, no allocation per read. Answer buffers are dropped once
 * everything is sent and nothing is open. So a fresh connection costs its
 * struct client, and one that went quiet after a request one small buffer. A line longer than max_request_bytes
 * is answered too_large once and skipped up to its newline; the size check
 * applies only to a line still missing its newline, never to complete lines
 * waiting their turn. At EOF a last line without a newline is still a
 * request.
 *
 * Writing: answers are appended to c->out; at the end of a round the
 * client's output goes out in one send (c->out and c->wbuf swap, so the
 * kernel reads one buffer while the next fills).
 *
 * Compat clients (compat_listen, compat.c) differ only in framing and
 * answer encoding: client_process hands them to compat_process.
 *
 * Back-pressure: a client is not read while it has max_inflight_per_client
 * requests open or more than max_client_output_bytes waiting to be sent, so
 * a client that does not read cannot make the broker buffer without bound.
 *
 * Handled at the end of a round, never re-entrantly: everything that
 * touches a client marks it dirty, and client_flush_dirty() takes its lines,
 * sends, re-arms the recv or closes it. A client is freed only with no
 * operation in flight, no request open and not on the dirty list.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "compat.h"
#include "log.h"
#include "worker.h"

void client_mark_dirty(struct worker *w, struct client *c)
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
    struct io_uring_sqe *sqe = worker_sqe(w);
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
void client_emit_error(struct worker *w, struct client *c, const struct proto_span *id,
                       enum proto_code code, const char *msg, size_t msg_len, unsigned flags)
{
    client_emit_error_ex(w, c, id, code, msg, msg_len, -1, flags);
}

void client_emit_error_after(struct worker *w, struct client *c, const struct proto_span *id,
                             enum proto_code code, const char *msg, size_t msg_len,
                             uint32_t retry_after_ms)
{
    client_emit_error_ex(w, c, id, code, msg, msg_len, retry_after_ms, 0);
}

void client_emit_error_ex(struct worker *w, struct client *c, const struct proto_span *id,
                          enum proto_code code, const char *msg, size_t msg_len,
                          int64_t retry_after_ms, unsigned flags)
{
    wstat_inc(&w->errors[code]);
    if (c->dead)
        return;
    if (proto_write_error_ex(&c->out, id, code, msg, msg_len, retry_after_ms, flags) < 0) {
        log_write(LOG_LEVEL_ERROR, "out of memory buffering a response; closing client",
                  LOG_INT("fd", c->fd));
        c->dead = true;
        return;
    }
    client_mark_dirty(w, c);
}

void client_emit_errorf(struct worker *w, struct client *c, const struct proto_span *id,
                        enum proto_code code, const char *fmt, ...)
{
    char msg[PROTO_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    size_t len = msg_vformat(msg, sizeof msg, fmt, ap);
    va_end(ap);
    client_emit_error(w, c, id, code, msg, len, 0);
}

bool client_paused(const struct worker *w, const struct client *c)
{
    const struct broker_config *cfg = bcfg(w->b);
    return c->inflight >= cfg->rate_limit.max_inflight_per_client ||
           client_pending_out(c) >= cfg->max_client_output_bytes;
}

/* Parse every complete line we may take now. What stays in c->in is
 * either complete lines the client may not send yet (paused: they wait, and
 * are never mistaken for one over-long line) or the start of one line. */
static void client_process(struct worker *w, struct client *c)
{
    if (c->compat) {
        compat_process(w, c); /* framed by JSON completeness, one at a time */
        return;
    }
    uint64_t max = bcfg(w->b)->max_request_bytes;
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
            request_line(w, c, c->in + pos, len);
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
                           "request line exceeds max_request_bytes (%llu)",
                           (unsigned long long)max);
        c->skipping = true;
        c->in_len = 0;
    } else if (c->eof && !c->dead) {
        /* The client finished sending without a final newline: its last
         * line is still a request and gets its answer. */
        request_line(w, c, c->in, c->in_len);
        c->in_len = 0;
    }
}

static void client_arm_recv(struct worker *w, struct client *c)
{
    /* Draining too: a client waiting for answers may still send lines, and
     * each gets one (shutting_down); idle clients are closed instead. */
    if (c->recv_armed || c->eof || c->dead || c->closing || client_paused(w, c))
        return;
    if (c->in_len == 0 && c->inflight == 0 && w->rx.ring && !c->rx_direct) {
        free(c->in); /* idle: no buffer of its own while it waits */
        c->in = NULL;
        c->in_cap = 0;
        struct io_uring_sqe *sqe = worker_sqe(w);
        io_uring_prep_recv(sqe, c->fd, NULL, RXBUF_SIZE, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = RXBUF_GROUP;
        io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | UD_CLIENT_RECV);
        c->recv_armed = true;
        c->ops++;
        return;
    }
    c->rx_direct = false;
    if (!c->in) {
        c->in = malloc(CLIENT_IN_INITIAL);
        if (!c->in) {
            c->dead = true;
            return;
        }
        c->in_cap = CLIENT_IN_INITIAL;
    }
    /* Full: room for more of the line. The last read filled all the room it
     * had: a client sending in bulk gets bigger reads (up to RXBUF_SIZE). */
    if (c->in_len == c->in_cap || (c->rx_filled && c->in_cap < RXBUF_SIZE)) {
        /* Room for one byte past the limit, so an over-long line shows. */
        size_t limit = (size_t)bcfg(w->b)->max_request_bytes + 1;
        size_t cap = c->in_cap * 2 > limit ? limit : c->in_cap * 2;
        if (cap <= c->in_cap && c->in_len == c->in_cap)
            return; /* full of complete lines we may not take yet: wait */
        if (cap > c->in_cap) {
            char *in = realloc(c->in, cap);
            if (!in) {
                c->dead = true;
                return;
            }
            c->in = in;
            c->in_cap = cap;
        }
    }
    c->rx_filled = false;
    c->rx_offered = c->in_cap - c->in_len;
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_recv(sqe, c->fd, c->in + c->in_len, c->rx_offered, 0);
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | UD_CLIENT_RECV);
    c->recv_armed = true;
    c->ops++;
}

void client_free(struct worker *w, struct client *c)
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
    compat_detach(c);
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

/* End of a round: for every touched client, take what lines it may send
 * now, push its output out, read more, or close it. */
void client_flush_dirty(struct worker *w)
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

void client_new(struct worker *w, int fd, bool compat)
{
    struct client *c = calloc(1, sizeof *c);
    char *in = NULL; /* its receive buffer comes with its first bytes */
    if (!c) {
        close(fd);
        atomic_fetch_sub_explicit(&w->b->nclients, 1, memory_order_relaxed);
        log_write(LOG_LEVEL_ERROR, "out of memory accepting a client", LOG_INT("fd", fd));
        return;
    }
    c->w = w;
    c->fd = fd;
    c->in = in;
    c->in_cap = 0;
    if (compat && compat_attach(w, c) < 0) {
        free(c);
        free(in);
        close(fd);
        atomic_fetch_sub_explicit(&w->b->nclients, 1, memory_order_relaxed);
        log_write(LOG_LEVEL_ERROR, "out of memory accepting a client", LOG_INT("fd", fd));
        return;
    }
    admit_identify(w, c);
    proto_buf_init(&c->out);
    proto_buf_init(&c->wbuf);
    c->next = w->clients;
    if (w->clients)
        w->clients->prev = c;
    w->clients = c;
    w->nclients++;
    client_mark_dirty(w, c);
}

/* Bytes that came in a shared buffer: into c->in (empty: the recv was armed
 * only then), sized to them; the buffer goes straight back. */
static bool client_take_rxbuf(struct worker *w, struct client *c, unsigned bid, int res)
{
    bool ok = true;
    if (res > 0) {
        size_t n = (size_t)res, cap = n < CLIENT_IN_MIN ? CLIENT_IN_MIN : n;
        char *in = c->in_cap >= c->in_len + n ? c->in : realloc(c->in, c->in_len + cap);
        if (in) {
            if (in != c->in)
                c->in_cap = c->in_len + cap;
            c->in = in;
            memcpy(c->in + c->in_len, rxbuf_data(&w->rx, bid), n);
            c->in_len += n;
        } else {
            ok = false;
        }
    }
    rxbuf_put(&w->rx, bid);
    return ok;
}

void client_on_recv(struct worker *w, struct client *c, int res, unsigned cqe_flags)
{
    c->recv_armed = false;
    c->ops--;
    if (cqe_flags & IORING_CQE_F_BUFFER) {
        if (!client_take_rxbuf(w, c, cqe_flags >> IORING_CQE_BUFFER_SHIFT, res))
            c->dead = true;
        else if (res == 0)
            c->eof = true;
    } else if (res == -ENOBUFS) {
        c->rx_direct = true; /* every shared buffer in use: read into our own */
        wstat_inc(&w->rx_nobufs);
    } else if (res > 0) {
        c->in_len += (size_t)res;
        c->rx_filled = (size_t)res == c->rx_offered;
    }
    else if (res == 0)
        c->eof = true;
    else if (res != -EINTR && res != -EAGAIN)
        c->dead = true;
    client_mark_dirty(w, c);
}

void client_on_send(struct worker *w, struct client *c, int res)
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
    if (c->woff == c->wbuf.len && c->out.len == 0 && c->inflight == 0) {
        /* Everything sent and nothing open: an idle client keeps no answer
         * buffers (one with requests open keeps them for their answers). */
        proto_buf_free(&c->wbuf);
        proto_buf_free(&c->out);
        c->woff = 0;
    }
    client_mark_dirty(w, c);
}

void client_mark_all_dirty(struct worker *w)
{
    for (struct client *c = w->clients; c; c = c->next)
        client_mark_dirty(w, c);
}
