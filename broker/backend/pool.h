/*
 * pool.h - process-wide backend connection slots for one backend.
 *
 * Principle: a backend connection may carry one request at a time (the
 * Blender add-on hangs for good on two back-to-back requests), so the only
 * way to use one is to hold its slot, and the only way to hold a slot is to
 * take it out of a lock-free ring. Acquire and release are single ring
 * operations: there is no "in use" flag that two threads could both see as
 * false (the RACE_CONDITION_001 of the Node.js pool in seeds/001).
 *
 *   idle   MPMC ring of connected, idle slots   (preferred: reuse)
 *   spare  MPMC ring of unconnected slots       (taken only when idle is
 *          empty: connections are created on demand up to pool_size)
 *   waiters MPMC ring of opaque 64-bit tokens   (bounded FIFO, max_queue)
 *
 * When all slots are held, pool_acquire queues the caller's token and
 * returns POOL_QUEUED; the next pool_release pops the oldest token and hands
 * the slot directly to it through the handoff callback (FIFO, no thundering
 * herd). The race "releaser sees no waiter / acquirer sees no idle slot" is
 * closed Dekker-style: the acquirer publishes its token, then a seq_cst
 * fence, then looks for a slot again; the releaser publishes the slot, then a
 * seq_cst fence, then looks for waiters again. One of the two must see the
 * other. Tokens are values, never pointers, so a stale token (its request
 * already timed out) is harmless: its owner gets the slot and releases it.
 *
 * Stale tokens and max_queue: a token cannot be taken out of the middle of
 * the ring, so a waiter that gives up (timeout, shutdown) leaves its token
 * behind until a release pops it. Such tokens must not count against
 * max_queue, or a few timeouts behind a busy backend would refuse requests
 * while nothing waits. The owner says so: pool_cancel_wait() when it stops
 * waiting, pool_stale_returned() when the stale token's slot reaches it
 * (which it then releases). Live waiters = tokens in the ring - stale ones;
 * max_queue bounds the live ones, and the ring has room for as many stale
 * tokens again (at least 64) before it refuses: stale tokens drain at the
 * rate slots are released, so only a pool whose every slot hangs for many
 * waiter timeouts can fill that room.
 *
 * Each slot also carries a `held` flag set with an atomic exchange on every
 * acquisition: it is a tripwire, not a lock. A non-zero previous value is
 * counted in stats.double_holds, which tests assert stays 0.
 *
 * Resizing (a configuration reload): slots are allocated once for `cap`,
 * and `size` of them are in use. Growing revives the slots in [old, new);
 * shrinking lets the slots at or above the new size retire as they come
 * free: a released one, or an unconnected one popped from spare, is set
 * `off` instead of being put back (a connected idle one is handed out once
 * more and closed by its holder at release; pool_take_idle lets the owner
 * sweep them). Retire and revive meet Dekker-style: the retirer sets `off`
 * then reads `size`, the resizer stores `size` then exchanges `off`, and
 * whichever side takes the flag (one atomic exchange or CAS) puts the slot
 * back to work - never both, never neither.
 *
 * Thread safety: pool_acquire, pool_release and pool_stats_read may be
 * called from any thread concurrently; pool_resize and pool_set_max_queue
 * from a worker (a revived slot may be handed to a waiter); init/destroy
 * only when nothing else runs. The slot's fd and ctx belong to whoever
 * holds the slot.
 */
#ifndef BROKER_POOL_H
#define BROKER_POOL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ring_mpmc.h"

struct pool_slot {
    uint32_t index;
    int fd;                  /* -1: not connected; owned by the holder */
    _Atomic uint32_t held;   /* tripwire, see above */
    _Atomic uint32_t off;    /* retired by a shrink: in no ring, held by nobody */
    uint64_t requests;       /* requests served on the current connection */
    void *ctx;               /* the broker's per-connection state */
};

/* Called on the releasing thread: the slot now belongs to `token`'s owner. */
typedef void (*pool_handoff_fn)(void *arg, uint64_t token, struct pool_slot *slot);

struct pool_stats {
    uint64_t acquired_idle;  /* acquisitions that reused a connected slot */
    uint64_t acquired_spare; /* acquisitions that must connect first */
    uint64_t queued;         /* tokens ever queued */
    uint64_t handoffs;       /* slots handed directly to a waiter */
    uint64_t overloaded;     /* refused: queue full */
    uint64_t double_holds;   /* must stay 0 */
    uint32_t waiting;        /* live waiters now: tokens (stale ones not counted) + parked */
    uint32_t parked;         /* of which wait without a token (pool_park) */
    uint32_t stale;          /* tokens in the ring whose owner stopped waiting */
    uint32_t idle;           /* connected idle slots now */
};

struct pool {
    struct pool_slot *slots;
    uint32_t cap;                /* slots allocated */
    _Atomic uint32_t size;       /* slots in use: pool_size() */
    _Atomic uint32_t max_queue;
    struct ring_mpmc idle;
    struct ring_mpmc spare;
    struct ring_mpmc waiters;
    pool_handoff_fn handoff;
    void *handoff_arg;
    uint32_t ring_cap;       /* waiter ring capacity: queue_room + stale room */
    uint32_t queue_room;     /* largest max_queue the ring was built for */
    alignas(RING_CACHELINE) _Atomic uint32_t waiting; /* tokens in the ring */
    _Atomic uint32_t stale;  /* of which their owners stopped waiting */
    _Atomic uint32_t parked; /* waiters without a token of their own (pool_park) */
    _Atomic uint64_t n_idle, n_spare, n_queued, n_handoffs, n_overloaded, n_double;
};

enum pool_result { POOL_GOT = 0, POOL_QUEUED = 1, POOL_OVERLOADED = 2 };

/* size >= 1 slots (all unconnected), at most max_queue waiters (0: when all
 * slots are held, acquire answers POOL_OVERLOADED at once). The slots
 * array has room for cap >= size (pool_resize).
 * Returns 0, -EINVAL or -ENOMEM. */
int pool_init(struct pool *p, uint32_t cap, uint32_t size, uint32_t max_queue,
              pool_handoff_fn handoff, void *handoff_arg);
/* The same with a waiter ring built for max_queue up to queue_room
 * (>= max_queue, <= 2^30), so pool_set_max_queue can raise it that far. */
int pool_init_room(struct pool *p, uint32_t cap, uint32_t size, uint32_t max_queue,
                   uint32_t queue_room, pool_handoff_fn handoff, void *handoff_arg);

static inline uint32_t pool_size(const struct pool *p)
{
    return atomic_load_explicit((_Atomic uint32_t *)&p->size, memory_order_relaxed);
}

/* The largest max_queue the waiter ring was built for. */
uint32_t pool_queue_room(const struct pool *p);
/* New bound on live waiters (at most pool_queue_room); -ERANGE otherwise. */
int pool_set_max_queue(struct pool *p, uint32_t max_queue);

/* Use `size` slots (1..cap): growing may hand revived slots to waiters
 * through the handoff callback, so call it on a worker. -EINVAL out of range. */
int pool_resize(struct pool *p, uint32_t size);

/* Take one connected idle slot (held; NULL if none), to close it and give it
 * back with pool_release: sweeping connections a reload made surplus. */
struct pool_slot *pool_take_idle(struct pool *p);

/* Closes every connected slot's fd and frees the rings. The caller must hold
 * or have released every slot and must free each slot's ctx first. */
void pool_destroy(struct pool *p);

/* POOL_GOT: *out is yours (connect first if (*out)->fd < 0).
 * POOL_QUEUED: token queued; handoff(token, slot) will be called, possibly
 *              before this returns and possibly on another thread.
 * POOL_OVERLOADED: max_queue live waiters, parked ones included (or the
 *                  ring is full of stale tokens); nothing was queued.
 * token must be non-zero. */
enum pool_result pool_acquire(struct pool *p, uint64_t token, struct pool_slot **out);

/* The owner of a queued token stopped waiting before its slot came (its
 * request timed out or was failed): the token no longer counts against
 * max_queue. Call at most once per POOL_QUEUED, never after the handoff. */
void pool_cancel_wait(struct pool *p);

/* A slot reached a token its owner had cancelled with pool_cancel_wait: call
 * once for it (then release the slot). */
void pool_stale_returned(struct pool *p);

/* Fair queueing (fairq.c) keeps one token per client in the ring and the
 * client's other waiting requests parked beside it. Parked requests count
 * against max_queue with the live tokens: pool_park takes a place (false:
 * the queue is full, nothing taken), pool_unpark gives it back. A parked
 * request that takes its client's turn unparks, then acquires. */
bool pool_park(struct pool *p);
void pool_unpark(struct pool *p);

/* Give a held slot back (fd >= 0: connected, reusable; fd < 0: closed). If a
 * token waits, the slot goes straight to it through handoff. */
void pool_release(struct pool *p, struct pool_slot *s);

void pool_stats_read(struct pool *p, struct pool_stats *out);

#endif /* BROKER_POOL_H */
