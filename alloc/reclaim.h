/*
 * reclaim.h - deferred freeing by grace periods, for read paths that take no
 * lock.
 *
 * The idea (RCU: McKenney and Slingwine, "Read-Copy Update", PDCS 1998; the
 * per-reader counter form follows Desnoyers, McKenney, Stern, Dagenais and
 * Walpole, "User-Level Implementations of Read-Copy Update", IEEE TPDS 23(2),
 * 2012; Fraser, "Practical lock-freedom", 2004, for epoch-based reclamation):
 * each reader thread owns a slot with a sequence number, odd while it is
 * inside a read section. A writer that unlinks an object cannot free it at
 * once, because a reader may be reading it; it retires it, takes a snapshot
 * of the readers that are inside a section at that moment, and frees the
 * object once each of them has left that section (its sequence moved on).
 * Readers that enter later cannot find the object, so they do not matter.
 *
 * Ordering: a reader's enter is a seq_cst store and its loads of shared
 * pointers are seq_cst; a writer's unlinking store and its snapshot loads are
 * seq_cst. In the single total order of seq_cst operations, a reader that
 * loaded a pointer before the unlink entered before it too, so the writer's
 * snapshot (after the unlink) sees it inside. On x86 the reader pays one
 * locked store on a line no other thread writes; nothing shared is written.
 *
 * Slots: a thread gets a slot the first time it reads through a domain and
 * keeps it for the domain's life (a thread-local one-entry cache makes the
 * lookup one compare). There are RECLAIM_MAX_READERS slots; a thread that
 * finds none gets NULL and must use its caller's locked fallback. A slot is
 * found again by a thread-local address, so a new thread that inherits an
 * exited thread's TLS block also inherits its (idle) slot.
 *
 * Rules: read sections must be short and must not block on anything a
 * writer holds while waiting for a grace period (reclaim_synchronize). A
 * nested reclaim_enter in the same thread is a no-op (it returns false; skip
 * the matching exit).
 *
 * Thread safety: reclaim_reader_get/enter/exit/stat_add from any thread
 * (each thread only ever touches its own slot); snapshot/passed/synchronize
 * from writers, serialised by the caller per snapshot object;
 * reclaim_domain_init/destroy with no other call running.
 */
#ifndef ALLOC_RECLAIM_H
#define ALLOC_RECLAIM_H

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define RECLAIM_MAX_READERS  256u
#define RECLAIM_READER_STATS 3u

/* One per reader thread, alone on its cache line(s). */
struct reclaim_reader {
    alignas(64) _Atomic uint64_t seq; /* odd while inside a read section */
    /* Statistics the owner bumps on the line it writes anyway, so a read
     * path can count without touching a shared line. */
    _Atomic uint64_t stat[RECLAIM_READER_STATS];
    const void *owner; /* thread token; guarded by the domain lock */
};

struct reclaim_domain {
    uint64_t id;          /* unique per init: keys the thread-local slot cache */
    pthread_mutex_t lock; /* slot registration only */
    _Atomic uint32_t nreaders;
    struct reclaim_reader *readers; /* [RECLAIM_MAX_READERS], caller's memory */
};

/* Readers found inside a section when the snapshot was taken. */
struct reclaim_snapshot {
    uint32_t n;
    uint32_t slot[RECLAIM_MAX_READERS];
    uint64_t seq[RECLAIM_MAX_READERS];
};

/* Per-thread cache of the last domain's slot; used by the inline fast path. */
struct reclaim_tls {
    uint64_t id;
    struct reclaim_reader *reader;
};
extern _Thread_local struct reclaim_tls reclaim_tls_cache;

/*
 * Initialise d over `readers` (RECLAIM_MAX_READERS zeroed, 64-byte aligned
 * records owned by the caller; cache.c puts them in its arena). Returns 0 or
 * -errno from pthread_mutex_init.
 */
int reclaim_domain_init(struct reclaim_domain *d, struct reclaim_reader *readers);
void reclaim_domain_destroy(struct reclaim_domain *d);

/* Slow path of reclaim_reader_get: find or claim this thread's slot. */
struct reclaim_reader *reclaim_reader_slow(struct reclaim_domain *d);

/* This thread's slot in d, or NULL when every slot is taken. */
static inline struct reclaim_reader *reclaim_reader_get(struct reclaim_domain *d)
{
    if (reclaim_tls_cache.id == d->id)
        return reclaim_tls_cache.reader;
    return reclaim_reader_slow(d);
}

/*
 * Enter a read section. Returns false (and does nothing) when this thread is
 * already inside one; then do not call reclaim_exit for this enter.
 */
static inline bool reclaim_enter(struct reclaim_reader *r)
{
    /* Relaxed: only this thread writes its seq. */
    uint64_t s = atomic_load_explicit(&r->seq, memory_order_relaxed);
    if (s & 1)
        return false;
    /* seq_cst: ordered before the section's seq_cst pointer loads in the
     * total order, against the writer's unlink + snapshot (see above). */
    atomic_store_explicit(&r->seq, s + 1, memory_order_seq_cst);
    return true;
}

static inline void reclaim_exit(struct reclaim_reader *r)
{
    uint64_t s = atomic_load_explicit(&r->seq, memory_order_relaxed); /* own slot */
    /* Release: every read in the section happens before a writer's acquire
     * load that sees this value - and so before it frees what we read. */
    atomic_store_explicit(&r->seq, s + 1, memory_order_release);
}

static inline void reclaim_stat_add(struct reclaim_reader *r, unsigned i)
{
    /* Single writer (the owner): load + store, no locked instruction.
     * Relaxed: statistics, summed by reclaim_stat_sum. */
    uint64_t v = atomic_load_explicit(&r->stat[i], memory_order_relaxed);
    atomic_store_explicit(&r->stat[i], v + 1, memory_order_relaxed);
}

/* Sum of stat[i] over every slot (relaxed reads: a statistics snapshot). */
uint64_t reclaim_stat_sum(struct reclaim_domain *d, unsigned i);

/*
 * Record which readers are inside a section now. Call after the objects to
 * be freed were unlinked (with seq_cst stores). Returns true when nobody is
 * inside: the grace period is already over.
 */
bool reclaim_snapshot_take(struct reclaim_domain *d, struct reclaim_snapshot *s);

/*
 * True once every reader recorded in s has left the section it was in;
 * forgets the ones that have. Never blocks.
 */
bool reclaim_snapshot_passed(struct reclaim_domain *d, struct reclaim_snapshot *s);

/* Take a snapshot into *s and wait (yielding) until it has passed. */
void reclaim_synchronize(struct reclaim_domain *d, struct reclaim_snapshot *s);

#endif /* ALLOC_RECLAIM_H */
