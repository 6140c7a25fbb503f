/*
 * pool.c - backend slot pool; see pool.h for the principle.
 *
 * Invariants:
 *   - every slot is in exactly one place: idle, spare, or held by one owner
 *     (a thread, or a token's owner after a handoff);
 *   - `waiting` counts tokens pushed and not yet popped, so it bounds the
 *     waiter ring; `waiting - stale` (live waiters) enforces max_queue;
 *   - after any release or acquire returns, either no token waits or no
 *     slot is free (no lost wake-up), thanks to the paired seq_cst fences.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

#include "pool.h"

int pool_init(struct pool *p, uint32_t cap, uint32_t size, uint32_t max_queue,
              pool_handoff_fn handoff, void *handoff_arg)
{
    return pool_init_room(p, cap, size, max_queue, max_queue, handoff, handoff_arg);
}

int pool_init_room(struct pool *p, uint32_t cap, uint32_t size, uint32_t max_queue,
                   uint32_t queue_room, pool_handoff_fn handoff, void *handoff_arg)
{
    if (size == 0 || cap < size || !handoff || queue_room < max_queue || queue_room > (1u << 30))
        return -EINVAL;
    *p = (struct pool){.cap = cap, .handoff = handoff, .handoff_arg = handoff_arg,
                       .queue_room = queue_room};
    atomic_init(&p->size, size);
    atomic_init(&p->max_queue, max_queue);
    int rc = -ENOMEM;
    p->slots = calloc(cap, sizeof *p->slots);
    if (!p->slots)
        goto err;
    if ((rc = ring_mpmc_init(&p->idle, cap)) < 0)
        goto err;
    if ((rc = ring_mpmc_init(&p->spare, cap)) < 0)
        goto err_idle;
    /* queue_room 0: nobody ever waits (the ring still needs one cell). Else
     * room for as many stale tokens as live ones, at least 64 (pool.h). */
    uint64_t ring = queue_room ? (uint64_t)queue_room + (queue_room > 64 ? queue_room : 64) : 1;
    if ((rc = ring_mpmc_init(&p->waiters, (uint32_t)ring)) < 0)
        goto err_spare;
    p->ring_cap = (uint32_t)ring;
    for (uint32_t i = 0; i < cap; i++) {
        p->slots[i].index = i;
        p->slots[i].fd = -1;
        atomic_init(&p->slots[i].held, 0);
        atomic_init(&p->slots[i].off, i >= size);
        if (i < size)
            ring_mpmc_try_push(&p->spare, &p->slots[i]); /* cannot fail: capacity >= cap */
    }
    return 0;
err_spare:
    ring_mpmc_destroy(&p->spare);
err_idle:
    ring_mpmc_destroy(&p->idle);
err:
    free(p->slots);
    p->slots = NULL;
    return rc;
}

uint32_t pool_queue_room(const struct pool *p)
{
    return p->queue_room;
}

int pool_set_max_queue(struct pool *p, uint32_t max_queue)
{
    if (max_queue > pool_queue_room(p))
        return -ERANGE;
    atomic_store_explicit(&p->max_queue, max_queue, memory_order_relaxed);
    return 0;
}

void pool_destroy(struct pool *p)
{
    if (!p || !p->slots)
        return;
    for (uint32_t i = 0; i < p->cap; i++)
        if (p->slots[i].fd >= 0) {
            close(p->slots[i].fd);
            p->slots[i].fd = -1;
        }
    ring_mpmc_destroy(&p->waiters);
    ring_mpmc_destroy(&p->spare);
    ring_mpmc_destroy(&p->idle);
    free(p->slots);
    p->slots = NULL;
}

static void mark_held(struct pool *p, struct pool_slot *s)
{
    /* acq_rel: the exchange orders this holder after the previous holder's
     * release store of 0 (pool_release). A previous value of 1 means two
     * holders at once: count it, tests assert it never happens. */
    if (atomic_exchange_explicit(&s->held, 1, memory_order_acq_rel) != 0)
        atomic_fetch_add_explicit(&p->n_double, 1, memory_order_relaxed);
}

/* A free slot at or above the size: set it off, unless a concurrent
 * grow wants it back (pool.h, Resizing). True when it is still to be used. */
static bool retire_or_keep(struct pool *p, struct pool_slot *s)
{
    if (s->index < atomic_load_explicit(&p->size, memory_order_seq_cst))
        return true;
    atomic_store_explicit(&s->off, 1, memory_order_seq_cst);
    uint32_t one = 1;
    return s->index < atomic_load_explicit(&p->size, memory_order_seq_cst) &&
           atomic_compare_exchange_strong_explicit(&s->off, &one, 0, memory_order_seq_cst,
                                                   memory_order_seq_cst);
}

/* An unconnected slot from spare that a shrink made surplus is retired
 * here; a connected idle one is still handed out (its holder closes it at
 * release: only the holder may close a connection). */
static bool pop_spare(struct pool *p, struct pool_slot **out)
{
    void *v;
    while (ring_mpmc_try_pop(&p->spare, &v)) {
        if (retire_or_keep(p, v)) {
            *out = v;
            return true;
        }
    }
    return false;
}

static struct pool_slot *take_free(struct pool *p)
{
    void *v;
    struct pool_slot *s;
    if (ring_mpmc_try_pop(&p->idle, &v))
        return v;
    if (pop_spare(p, &s))
        return s;
    return NULL;
}

static void put_free(struct pool *p, struct pool_slot *s)
{
    struct ring_mpmc *r = s->fd >= 0 ? &p->idle : &p->spare;
    unsigned spins = 0;
    /* Capacity equals the slot count, so the ring has room; a failure can
     * only be a preempted consumer still finishing its pop of this cell. */
    while (!ring_mpmc_try_push(r, s))
        if (++spins % 64 == 0)
            sched_yield();
}

/* Hand a free (unheld) slot to the oldest waiter, or put it back; repeat the
 * check after publishing so a token queued concurrently is not stranded. */
static void dispatch_free(struct pool *p, struct pool_slot *s)
{
    unsigned spins = 0;
    for (;;) {
        void *tok;
        if (ring_mpmc_try_pop(&p->waiters, &tok)) {
            /* Relaxed: `waiting` is a bound, ordered by the ring itself. */
            atomic_fetch_sub_explicit(&p->waiting, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&p->n_handoffs, 1, memory_order_relaxed);
            mark_held(p, s);
            p->handoff(p->handoff_arg, (uint64_t)(uintptr_t)tok, s);
            return;
        }
        put_free(p, s);
        /* Pairs with the fence in pool_acquire: either we see its token here,
         * or it sees our slot in its second take_free. */
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_load_explicit(&p->waiting, memory_order_relaxed) == 0)
            return;
        s = take_free(p);
        if (!s)
            return; /* its new holder will serve the waiter on release */
        if (++spins % 64 == 0)
            sched_yield(); /* a waiter is between claim and publish */
    }
}

enum pool_result pool_acquire(struct pool *p, uint64_t token, struct pool_slot **out)
{
    struct pool_slot *s = NULL;
    void *v;
    if (ring_mpmc_try_pop(&p->idle, &v)) {
        s = v;
        atomic_fetch_add_explicit(&p->n_idle, 1, memory_order_relaxed);
    } else if (pop_spare(p, &s)) {
        atomic_fetch_add_explicit(&p->n_spare, 1, memory_order_relaxed);
    }
    if (s) {
        mark_held(p, s);
        *out = s;
        return POOL_GOT;
    }
    /* Relaxed RMW: the counters only bound the queue; the ring orders data.
     * `stale` may briefly exceed `waiting` (a stale token popped, its owner
     * not told yet): live waiters are then counted as 0, which admits at
     * most one extra waiter per slot in flight. */
    uint32_t occ = atomic_fetch_add_explicit(&p->waiting, 1, memory_order_relaxed);
    uint32_t stale = atomic_load_explicit(&p->stale, memory_order_relaxed);
    uint32_t parked = atomic_load_explicit(&p->parked, memory_order_relaxed);
    uint32_t max_queue = atomic_load_explicit(&p->max_queue, memory_order_relaxed);
    if (max_queue == 0 || occ >= p->ring_cap ||
        (occ >= stale && occ - stale + (uint64_t)parked >= max_queue)) {
        atomic_fetch_sub_explicit(&p->waiting, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->n_overloaded, 1, memory_order_relaxed);
        return POOL_OVERLOADED;
    }
    unsigned spins = 0;
    while (!ring_mpmc_try_push(&p->waiters, (void *)(uintptr_t)token))
        if (++spins % 64 == 0)
            sched_yield(); /* only a preempted popper can make this fail */
    atomic_fetch_add_explicit(&p->n_queued, 1, memory_order_relaxed);
    /* Pairs with the fence in dispatch_free (see there). */
    atomic_thread_fence(memory_order_seq_cst);
    s = take_free(p);
    if (s)
        dispatch_free(p, s); /* serves the oldest waiter, which may be us */
    return POOL_QUEUED;
}

void pool_cancel_wait(struct pool *p)
{
    atomic_fetch_add_explicit(&p->stale, 1, memory_order_relaxed);
}

void pool_stale_returned(struct pool *p)
{
    atomic_fetch_sub_explicit(&p->stale, 1, memory_order_relaxed);
}

bool pool_park(struct pool *p)
{
    /* Relaxed, like `waiting`: a bound, not an ordering. */
    uint32_t parked = atomic_fetch_add_explicit(&p->parked, 1, memory_order_relaxed);
    uint32_t occ = atomic_load_explicit(&p->waiting, memory_order_relaxed);
    uint32_t stale = atomic_load_explicit(&p->stale, memory_order_relaxed);
    uint64_t live = (occ > stale ? occ - stale : 0) + (uint64_t)parked;
    if (live >= atomic_load_explicit(&p->max_queue, memory_order_relaxed)) {
        atomic_fetch_sub_explicit(&p->parked, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->n_overloaded, 1, memory_order_relaxed);
        return false;
    }
    return true;
}

void pool_unpark(struct pool *p)
{
    atomic_fetch_sub_explicit(&p->parked, 1, memory_order_relaxed);
}

void pool_release(struct pool *p, struct pool_slot *s)
{
    /* Release: the holder's use of the slot (fd, ctx) happens-before the
     * next holder's acquire exchange in mark_held. */
    atomic_store_explicit(&s->held, 0, memory_order_release);
    if (retire_or_keep(p, s))
        dispatch_free(p, s);
}

int pool_resize(struct pool *p, uint32_t size)
{
    if (size == 0 || size > p->cap)
        return -EINVAL;
    uint32_t old = atomic_exchange_explicit(&p->size, size, memory_order_seq_cst);
    /* Growing: revive the slots a shrink retired (those still held or in a
     * ring are not off, and stay in use by the new size). */
    for (uint32_t i = old; i < size; i++)
        if (atomic_exchange_explicit(&p->slots[i].off, 0, memory_order_seq_cst) == 1)
            dispatch_free(p, &p->slots[i]);
    return 0;
}

struct pool_slot *pool_take_idle(struct pool *p)
{
    void *v;
    if (!ring_mpmc_try_pop(&p->idle, &v))
        return NULL;
    mark_held(p, v);
    return v;
}

void pool_stats_read(struct pool *p, struct pool_stats *out)
{
    /* Relaxed: monitoring figures, each individually exact. */
    out->acquired_idle = atomic_load_explicit(&p->n_idle, memory_order_relaxed);
    out->acquired_spare = atomic_load_explicit(&p->n_spare, memory_order_relaxed);
    out->queued = atomic_load_explicit(&p->n_queued, memory_order_relaxed);
    out->handoffs = atomic_load_explicit(&p->n_handoffs, memory_order_relaxed);
    out->overloaded = atomic_load_explicit(&p->n_overloaded, memory_order_relaxed);
    out->double_holds = atomic_load_explicit(&p->n_double, memory_order_relaxed);
    uint32_t occ = atomic_load_explicit(&p->waiting, memory_order_relaxed);
    uint32_t stale = atomic_load_explicit(&p->stale, memory_order_relaxed);
    out->parked = atomic_load_explicit(&p->parked, memory_order_relaxed);
    out->waiting = (occ > stale ? occ - stale : 0) + out->parked;
    out->stale = stale;
    out->idle = ring_mpmc_size(&p->idle);
}
