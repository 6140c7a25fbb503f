/*
 * reclaim.c - reader slots and grace-period detection (see reclaim.h for
 * the idea and its sources).
 *
 * Invariants: slots [0, nreaders) are initialised and each is owned by at
 * most one live thread; nreaders only grows (slots are never given back, so
 * a writer's snapshot can index them without a lock); a slot's seq is
 * written only by its owner.
 *
 * Known limits: a thread that reads through more than one domain in
 * alternation takes the slow path (one mutex, a scan of the slots) at each
 * switch, because the thread-local cache holds one domain. A domain serves
 * at most RECLAIM_MAX_READERS distinct threads over its life, minus those
 * whose TLS address a later thread reuses.
 */
#include "reclaim.h"

#include <sched.h>

_Thread_local struct reclaim_tls reclaim_tls_cache;

/* Its address identifies the thread while it lives. */
static _Thread_local char thread_token;

/* Domain ids start at 1: 0 is the empty thread-local cache. */
static _Atomic uint64_t next_domain_id = 1;

int reclaim_domain_init(struct reclaim_domain *d, struct reclaim_reader *readers)
{
    int rc = pthread_mutex_init(&d->lock, NULL);
    if (rc != 0)
        return -rc;
    /* Relaxed: uniqueness is all that is needed. */
    d->id = atomic_fetch_add_explicit(&next_domain_id, 1, memory_order_relaxed);
    d->readers = readers;
    atomic_init(&d->nreaders, 0);
    return 0;
}

void reclaim_domain_destroy(struct reclaim_domain *d)
{
    pthread_mutex_destroy(&d->lock);
}

struct reclaim_reader *reclaim_reader_slow(struct reclaim_domain *d)
{
    struct reclaim_reader *r = NULL;
    pthread_mutex_lock(&d->lock);
    /* Relaxed: nreaders only changes under the lock we hold. */
    uint32_t n = atomic_load_explicit(&d->nreaders, memory_order_relaxed);
    for (uint32_t i = 0; i < n && r == NULL; i++)
        if (d->readers[i].owner == &thread_token)
            r = &d->readers[i];
    if (r == NULL && n < RECLAIM_MAX_READERS) {
        r = &d->readers[n];
        r->owner = &thread_token;
        /* seq_cst: the slot must be visible to any snapshot ordered after
         * this thread's first enter (a seq_cst store sequenced after this). */
        atomic_store_explicit(&d->nreaders, n + 1, memory_order_seq_cst);
    }
    pthread_mutex_unlock(&d->lock);
    /* Cached even when NULL: slots are never given back, so a thread that
     * found none will not find one later, and should not rescan per read. */
    reclaim_tls_cache.id = d->id;
    reclaim_tls_cache.reader = r;
    return r;
}

uint64_t reclaim_stat_sum(struct reclaim_domain *d, unsigned i)
{
    uint64_t sum = 0;
    /* Acquire: pairs with the seq_cst store that published each slot. */
    uint32_t n = atomic_load_explicit(&d->nreaders, memory_order_acquire);
    for (uint32_t k = 0; k < n; k++)
        sum += atomic_load_explicit(&d->readers[k].stat[i], memory_order_relaxed); /* stats */
    return sum;
}

bool reclaim_snapshot_take(struct reclaim_domain *d, struct reclaim_snapshot *s)
{
    s->n = 0;
    /* seq_cst (both loads): after the caller's seq_cst unlink in the total
     * order, so every reader that could have seen the object is counted and
     * seen inside (reclaim.h, "Ordering"). */
    uint32_t n = atomic_load_explicit(&d->nreaders, memory_order_seq_cst);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t seq = atomic_load_explicit(&d->readers[i].seq, memory_order_seq_cst);
        if (seq & 1) {
            s->slot[s->n] = i;
            s->seq[s->n] = seq;
            s->n++;
        }
    }
    return s->n == 0;
}

bool reclaim_snapshot_passed(struct reclaim_domain *d, struct reclaim_snapshot *s)
{
    uint32_t keep = 0;
    for (uint32_t k = 0; k < s->n; k++) {
        /* Acquire: pairs with the reader's release exit (or its next
         * seq_cst enter), so its reads happen before our caller's free. */
        uint64_t now = atomic_load_explicit(&d->readers[s->slot[k]].seq, memory_order_acquire);
        if (now == s->seq[k]) {
            s->slot[keep] = s->slot[k];
            s->seq[keep] = s->seq[k];
            keep++;
        }
    }
    s->n = keep;
    return keep == 0;
}

void reclaim_synchronize(struct reclaim_domain *d, struct reclaim_snapshot *s)
{
    if (reclaim_snapshot_take(d, s))
        return;
    /* Read sections are a lookup and a copy: a reader still inside was
     * preempted; yield so it can run (there may be one core). */
    while (!reclaim_snapshot_passed(d, s))
        sched_yield();
}
