/*
 * mockd_conn.c - a mockd worker's connections (the design is in mockd.c):
 * the per-worker deadline heap behind one timerfd, closing and freeing,
 * framing requests out of the input buffer, and the reads and writes.
 *
 * A connection handles one request at a time: mock_conn_process frames the
 * next one only while the connection is idle, hands it to mock_request
 * (mockd_answer.c) and drops its bytes once it is answered. Everything here
 * runs on the connection's worker thread.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "mockd.h"

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

/* Schedule the connection's next step; on allocation failure the connection
 * is closed, since it could never be answered. */
void mock_timer_add(struct mock_conn *c, uint64_t deadline_ns)
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
void mock_conn_close(struct mock_conn *c)
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

void mock_conn_free(struct mock_conn *c)
{
    free(c->in);
    free(c->out);
    free(c);
}

void mock_graveyard_free(struct mock_worker *w)
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
void mock_conn_flush(struct mock_conn *c)
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

void mock_conn_event(struct mock_conn *c, uint32_t events)
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

void mock_timers_run(struct mock_worker *w)
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
