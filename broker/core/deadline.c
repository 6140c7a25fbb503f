/*
 * deadline.c - every request's deadline in one heap per worker, and one
 * kernel timer for the earliest.
 *
 * A request sits in a binary heap keyed by the earlier of its overall
 * deadline and, while its reply is being read, its idle deadline, which
 * restarts with every recv, i.e. with every received chunk (BUG-009: a
 * dripping backend is not cut off, a silent one is). One absolute
 * IORING_OP_TIMEOUT is armed for the earliest key (or the shutdown grace
 * and flush deadlines). Keeping the idle deadline here, not in a linked
 * timeout per recv, saves an SQE, a CQE and a kernel timer arm/cancel per
 * request. Push, remove and rekey are O(log n); the timer is re-armed only
 * when the earliest deadline moves earlier (a late timer firing early costs
 * one empty pass, an early one never misses).
 */
#include <errno.h>
#include <stdlib.h>

#include "worker.h"

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

int deadline_push(struct worker *w, struct req *r)
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

void deadline_remove(struct worker *w, struct req *r)
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
void deadline_rekey(struct worker *w, struct req *r)
{
    uint64_t key = r->idle_ns < r->deadline_ns ? r->idle_ns : r->deadline_ns;
    if (key == r->key_ns || r->heap_idx == UINT32_MAX)
        return;
    r->key_ns = key;
    heap_up(w, r->heap_idx);
    heap_down(w, r->heap_idx);
}

/* Keep one absolute timeout armed for the earliest deadline we care about
 * (the heap top, or the shutdown grace deadline). */
void deadline_sync(struct worker *w)
{
    uint64_t want = w->heap_len ? w->heap[0]->key_ns : 0;
    if (w->draining && !w->grace_expired && (!want || w->grace_deadline_ns < want))
        want = w->grace_deadline_ns;
    if (w->grace_expired && !w->force_close && (!want || w->flush_deadline_ns < want))
        want = w->flush_deadline_ns;
    if (w->housekeeping_ns && (!want || w->housekeeping_ns < want))
        want = w->housekeeping_ns;
    if (!want || (w->timer_armed_ns && w->timer_armed_ns <= want))
        return; /* nothing to wait for, or an earlier timer already fires */
    ns_to_ts(want, &w->timer_ts);
    struct io_uring_sqe *sqe = worker_sqe(w);
    if (w->timer_armed_ns) {
        io_uring_prep_timeout_update(sqe, &w->timer_ts, UD_TIMER, IORING_TIMEOUT_ABS);
        io_uring_sqe_set_data64(sqe, UD_IGNORE);
    } else {
        io_uring_prep_timeout(sqe, &w->timer_ts, 0, IORING_TIMEOUT_ABS);
        io_uring_sqe_set_data64(sqe, UD_TIMER);
    }
    w->timer_armed_ns = want;
}
