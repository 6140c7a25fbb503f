/*
 * ring_spsc.h - bounded single-producer single-consumer ring of pointers.
 *
 * Design (Lamport's ring with cached cursors): the producer owns `head`, the
 * consumer owns `tail`; each side reads the other's cursor only when its
 * cached copy says the ring looks full (producer) or empty (consumer), so in
 * steady state a push or pop touches no cache line written by the other side
 * except the slot itself.
 *
 * Cursors are free-running uint64_t compared by unsigned difference (they may
 * wrap; tests start them near UINT64_MAX). Capacity is a power of two. The
 * producer's and consumer's lines are separate (alignas(64)).
 *
 * Progress: wait-free for both sides (no loops, no CAS). Exactly one thread
 * may push and exactly one thread may pop at any time; anything else is
 * undefined. init/destroy only when neither side is running.
 * Memory: cells are allocated once by init; push/pop never allocate.
 */
#ifndef RING_SPSC_H
#define RING_SPSC_H

#include "ring_mpmc.h" /* ring_pow2_ceil, RING_CACHELINE */

struct ring_spsc {
    /* Producer's line: its cursor and its cached view of the consumer. */
    alignas(RING_CACHELINE) _Atomic uint64_t head;
    uint64_t tail_cache;
    /* Consumer's line: its cursor and its cached view of the producer. */
    alignas(RING_CACHELINE) _Atomic uint64_t tail;
    uint64_t head_cache;
    /* Read-only after init. */
    alignas(RING_CACHELINE) uint64_t mask;
    void **slots;
};

/* Room for `capacity` items (rounded up to a power of two), cursors at
 * `start`. Returns 0, -EINVAL (capacity 0 or above RING_CAPACITY_MAX) or
 * -ENOMEM. */
static inline int ring_spsc_init_at(struct ring_spsc *r, uint32_t capacity, uint64_t start)
{
    uint64_t cap = ring_pow2_ceil(capacity);
    if (capacity == 0 || cap == 0 || cap > RING_CAPACITY_MAX)
        return -EINVAL;
    size_t bytes = (size_t)cap * sizeof(void *);
    bytes = (bytes + RING_CACHELINE - 1) & ~(size_t)(RING_CACHELINE - 1);
    void **slots = aligned_alloc(RING_CACHELINE, bytes);
    if (!slots)
        return -ENOMEM;
    memset(slots, 0, bytes);
    r->mask = cap - 1;
    r->slots = slots;
    atomic_init(&r->head, start);
    atomic_init(&r->tail, start);
    r->tail_cache = start;
    r->head_cache = start;
    return 0;
}

static inline int ring_spsc_init(struct ring_spsc *r, uint32_t capacity)
{
    return ring_spsc_init_at(r, capacity, 0);
}

static inline void ring_spsc_destroy(struct ring_spsc *r)
{
    if (!r)
        return;
    free(r->slots);
    r->slots = NULL;
}

static inline uint32_t ring_spsc_capacity(const struct ring_spsc *r)
{
    return (uint32_t)(r->mask + 1);
}

/* Producer only. Push up to n items; returns how many (a prefix, in order). */
static inline uint32_t ring_spsc_try_push_bulk(struct ring_spsc *r, void *const *items,
                                               uint32_t n)
{
    /* Relaxed: only this thread writes head. */
    uint64_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
    uint64_t cap = r->mask + 1;
    uint64_t free_slots = cap - (h - r->tail_cache);
    if (free_slots < n) {
        /* Acquire: pairs with the consumer's release store of tail, so the
         * consumer's reads of the slots we are about to reuse are done. */
        r->tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);
        free_slots = cap - (h - r->tail_cache);
    }
    uint32_t k = free_slots < n ? (uint32_t)free_slots : n;
    for (uint32_t i = 0; i < k; i++)
        r->slots[(h + i) & r->mask] = items[i];
    if (k)
        /* Release: the slot writes above become visible before the new head;
         * pairs with the consumer's acquire load of head. */
        atomic_store_explicit(&r->head, h + k, memory_order_release);
    return k;
}

/* Producer only. Returns false when full. */
static inline bool ring_spsc_try_push(struct ring_spsc *r, void *item)
{
    return ring_spsc_try_push_bulk(r, &item, 1) == 1;
}

/* Consumer only. Pop up to n items into out[]; returns how many. */
static inline uint32_t ring_spsc_try_pop_bulk(struct ring_spsc *r, void **out, uint32_t n)
{
    /* Relaxed: only this thread writes tail. */
    uint64_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint64_t avail = r->head_cache - t;
    if (avail < n) {
        /* Acquire: pairs with the producer's release store of head, so the
         * slots up to the new head are visible. */
        r->head_cache = atomic_load_explicit(&r->head, memory_order_acquire);
        avail = r->head_cache - t;
    }
    uint32_t k = avail < n ? (uint32_t)avail : n;
    for (uint32_t i = 0; i < k; i++)
        out[i] = r->slots[(t + i) & r->mask];
    if (k)
        /* Release: our slot reads complete before the producer may reuse
         * them; pairs with the producer's acquire load of tail. */
        atomic_store_explicit(&r->tail, t + k, memory_order_release);
    return k;
}

/* Consumer only. Returns false when empty. */
static inline bool ring_spsc_try_pop(struct ring_spsc *r, void **out)
{
    return ring_spsc_try_pop_bulk(r, out, 1) == 1;
}

/* Approximate size from any thread; exact when both sides are idle. */
static inline uint32_t ring_spsc_size(struct ring_spsc *r)
{
    uint64_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
    uint64_t h = atomic_load_explicit(&r->head, memory_order_acquire);
    uint64_t d = h - t;
    return d > r->mask + 1 ? (uint32_t)(r->mask + 1) : (uint32_t)d;
}

#endif /* RING_SPSC_H */
