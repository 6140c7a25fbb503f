/*
 * ring_mpmc.h - bounded multi-producer multi-consumer ring of pointers.
 *
 * Design (Vyukov's bounded MPMC queue): every cell carries a sequence number
 * that says whose turn it is. For position p (a free-running 64-bit cursor),
 * cell p & mask is
 *   - free for the producer of p      when cell.seq == 2p,
 *   - full, for the consumer of p     when cell.seq == 2p + 1,
 *   - handed back for producer p+cap  when the consumer stores 2(p + cap).
 * A producer claims p by CAS on `head`, writes the item, then publishes it by
 * storing seq = 2p + 1 (release). A consumer claims p by CAS on `tail`, reads
 * the item, then frees the cell by storing seq = 2(p + cap) (release).
 * Vyukov's original uses p / p+1 / p+cap, which is ambiguous at capacity 1
 * ("full for consumer p" == "free for producer p+1"); doubling the sequence
 * space keeps every capacity, including 1, exact.
 *
 * Cursors are free-running uint64_t compared by signed difference, so they
 * may wrap (tests start them near UINT64_MAX). Capacity is a power of two;
 * head, tail and the cell array sit on separate cache lines.
 *
 * Progress, honestly: the ring is lock-free for claiming (a failed CAS means
 * another thread made progress) but NOT wait-free end to end. A producer that
 * is preempted between its claim and its publish makes the consumer of that
 * position see "empty" (try_pop returns false) even though later positions
 * may already be full; likewise a preempted consumer makes the producer that
 * wraps onto its cell see "full". Nothing blocks - try_* just fails - but an
 * item can be delayed by a descheduled peer. Bulk operations claim a run of
 * positions with one CAS only when the whole run is ready, else they take the
 * ready prefix.
 *
 * Memory: ring_mpmc_init allocates the cells once; push/pop never allocate.
 * Thread safety: push/pop/bulk/size are safe from any number of threads;
 * init/destroy only when no other operation is running.
 */
#ifndef RING_MPMC_H
#define RING_MPMC_H

#include <errno.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define RING_CACHELINE 64

/* Largest capacity: a power of two that ring_*_capacity() and ring_*_size()
 * can report in their uint32_t (2^32 would read as 0). */
#define RING_CAPACITY_MAX (UINT32_C(1) << 31)

struct ring_mpmc_cell {
    _Atomic uint64_t seq;
    void *item;
};

struct ring_mpmc {
    alignas(RING_CACHELINE) _Atomic uint64_t head; /* next position to produce */
    alignas(RING_CACHELINE) _Atomic uint64_t tail; /* next position to consume */
    alignas(RING_CACHELINE) uint64_t mask;         /* read-only after init */
    struct ring_mpmc_cell *cells;
};

/* Smallest power of two >= n (n >= 1), or 0 when it would not fit. */
static inline uint64_t ring_pow2_ceil(uint64_t n)
{
    if (n <= 1)
        return 1;
    if (n > (UINT64_C(1) << 62))
        return 0;
    return UINT64_C(1) << (64 - __builtin_clzll(n - 1));
}

/*
 * Initialise with room for `capacity` items (rounded up to a power of two)
 * and both cursors at `start` (0 in production; tests pass values near the
 * 64-bit limit to exercise wrap-around). Returns 0, -EINVAL (capacity 0 or
 * above RING_CAPACITY_MAX) or -ENOMEM.
 */
static inline int ring_mpmc_init_at(struct ring_mpmc *r, uint32_t capacity, uint64_t start)
{
    uint64_t cap = ring_pow2_ceil(capacity);
    if (capacity == 0 || cap == 0 || cap > RING_CAPACITY_MAX)
        return -EINVAL;
    size_t bytes = (size_t)cap * sizeof(struct ring_mpmc_cell);
    bytes = (bytes + RING_CACHELINE - 1) & ~(size_t)(RING_CACHELINE - 1);
    struct ring_mpmc_cell *cells = aligned_alloc(RING_CACHELINE, bytes);
    if (!cells)
        return -ENOMEM;
    for (uint64_t i = 0; i < cap; i++) {
        /* Cell for position p = start + i is free for producer p. */
        uint64_t p = start + i;
        atomic_init(&cells[p & (cap - 1)].seq, 2 * p);
        cells[p & (cap - 1)].item = NULL;
    }
    r->mask = cap - 1;
    r->cells = cells;
    atomic_init(&r->head, start);
    atomic_init(&r->tail, start);
    return 0;
}

static inline int ring_mpmc_init(struct ring_mpmc *r, uint32_t capacity)
{
    return ring_mpmc_init_at(r, capacity, 0);
}

/* Releases the cells. Items still inside are the caller's to drain first. */
static inline void ring_mpmc_destroy(struct ring_mpmc *r)
{
    if (!r)
        return;
    free(r->cells);
    r->cells = NULL;
}

static inline uint32_t ring_mpmc_capacity(const struct ring_mpmc *r)
{
    return (uint32_t)(r->mask + 1);
}

/*
 * Claim up to n consecutive positions starting at *cursor for which every
 * cell's seq equals 2(pos + i) + bias (bias 0: free for producers; bias 1: full
 * for consumers). Returns how many were claimed (0 = none ready) and leaves
 * the first claimed position in *first.
 */
static inline uint32_t ring_mpmc_claim_(struct ring_mpmc *r, _Atomic uint64_t *cursor,
                                        uint64_t bias, uint32_t n, uint64_t *first)
{
    /* Relaxed: the CAS below re-validates; the cell seq loads carry ordering. */
    uint64_t pos = atomic_load_explicit(cursor, memory_order_relaxed);
    for (;;) {
        uint32_t ready = 0;
        while (ready < n) {
            struct ring_mpmc_cell *c = &r->cells[(pos + ready) & r->mask];
            /* Acquire: pairs with the release store of seq by the other side,
             * so the item (or the cell's emptiness) is visible once we own it. */
            uint64_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
            int64_t dif = (int64_t)(seq - (2 * (pos + ready) + bias));
            if (dif == 0) {
                ready++;
                continue;
            }
            if (dif < 0 || ready > 0)
                break; /* not ready (full/empty), or end of the ready run */
            /* dif > 0: our cursor snapshot is stale; reload and retry. */
            ready = UINT32_MAX;
            break;
        }
        if (ready == UINT32_MAX) {
            pos = atomic_load_explicit(cursor, memory_order_relaxed);
            continue;
        }
        if (ready == 0)
            return 0;
        /* Relaxed CAS is enough: exclusivity of the claimed positions comes
         * from the CAS itself; data visibility from the seq acquire/release. */
        if (atomic_compare_exchange_weak_explicit(cursor, &pos, pos + ready,
                                                  memory_order_relaxed, memory_order_relaxed)) {
            *first = pos;
            return ready;
        }
        /* CAS failure reloaded pos; re-check cells from the new position. */
    }
}

/* Push one item. Returns false when the ring is full (or the next cell is
 * still held by a preempted consumer, see the note above). */
static inline bool ring_mpmc_try_push(struct ring_mpmc *r, void *item)
{
    uint64_t pos;
    if (!ring_mpmc_claim_(r, &r->head, 0, 1, &pos))
        return false;
    struct ring_mpmc_cell *c = &r->cells[pos & r->mask];
    c->item = item;
    /* Release: publish the item before the seq; pairs with the acquire load
     * in the consumer's claim. */
    atomic_store_explicit(&c->seq, 2 * pos + 1, memory_order_release);
    return true;
}

/* Pop one item into *out. Returns false when empty (or the next cell is
 * still being written by a preempted producer). */
static inline bool ring_mpmc_try_pop(struct ring_mpmc *r, void **out)
{
    uint64_t pos;
    if (!ring_mpmc_claim_(r, &r->tail, 1, 1, &pos))
        return false;
    struct ring_mpmc_cell *c = &r->cells[pos & r->mask];
    *out = c->item;
    /* Release: our read of item happens-before the producer p+cap overwrites
     * it; pairs with the acquire load in the producer's claim. */
    atomic_store_explicit(&c->seq, 2 * (pos + r->mask + 1), memory_order_release);
    return true;
}

/* Push up to n items with one CAS; returns how many were pushed (a prefix of
 * items[], in order). */
static inline uint32_t ring_mpmc_try_push_bulk(struct ring_mpmc *r, void *const *items,
                                               uint32_t n)
{
    uint64_t pos;
    if (n == 0)
        return 0;
    uint32_t got = ring_mpmc_claim_(r, &r->head, 0, n, &pos);
    for (uint32_t i = 0; i < got; i++) {
        struct ring_mpmc_cell *c = &r->cells[(pos + i) & r->mask];
        c->item = items[i];
        /* Release per cell; pairs with the consumer's acquire of that cell. */
        atomic_store_explicit(&c->seq, 2 * (pos + i) + 1, memory_order_release);
    }
    return got;
}

/* Pop up to n items with one CAS into out[]; returns how many. */
static inline uint32_t ring_mpmc_try_pop_bulk(struct ring_mpmc *r, void **out, uint32_t n)
{
    uint64_t pos;
    if (n == 0)
        return 0;
    uint32_t got = ring_mpmc_claim_(r, &r->tail, 1, n, &pos);
    for (uint32_t i = 0; i < got; i++) {
        struct ring_mpmc_cell *c = &r->cells[(pos + i) & r->mask];
        out[i] = c->item;
        /* Release per cell; pairs with the producer's acquire of that cell. */
        atomic_store_explicit(&c->seq, 2 * (pos + i + r->mask + 1), memory_order_release);
    }
    return got;
}

/* Approximate number of items (exact when no operation is in progress). */
static inline uint32_t ring_mpmc_size(struct ring_mpmc *r)
{
    /* Acquire on both so a quiescent ring reads exactly. */
    uint64_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
    uint64_t h = atomic_load_explicit(&r->head, memory_order_acquire);
    int64_t d = (int64_t)(h - t);
    if (d < 0)
        return 0;
    if ((uint64_t)d > r->mask + 1)
        return (uint32_t)(r->mask + 1);
    return (uint32_t)d;
}

#endif /* RING_MPMC_H */
