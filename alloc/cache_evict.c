/*
 * cache_evict.c - the writers' side of a cache shard (the design is in
 * cache.c): unlinking an entry and retiring it, the SIEVE hand, the chain
 * bound, handing retired entries to grace periods, and inserting a new entry.
 *
 * Everything here runs under the shard mutex, except cache_free_list (whose
 * list nothing links any more) and cache_shard_reclaim_dead (which takes the
 * mutex). Unlinks are seq_cst stores and a publish is a release store,
 * because gets walk the same chains with no lock (reclaim.h).
 */
#include "cache_priv.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "arena.h"
#include "reclaim.h"

/* Retired entries are handed to a grace period in batches of this many. */
#define RETIRE_BATCH 32u

static enum entry_state entry_state(const struct cache *c, const struct cache_entry *e,
                                    uint64_t now_ms)
{
    return state_at(c, e, cache_generation(c, e->backend), now_ms);
}

/* ---- writers: unlink, retire, evict, collect (all under the mutex) ------- */

/* Count the removal of an entry that was not live (GRACE counts as expired). */
void cache_count_dead(struct cache_shard *s, enum entry_state st)
{
    ctr_add(st == ENTRY_STALE ? &s->ctr.invalidations : &s->ctr.expirations, 1);
}

/* Remove e from its chain and the queue and retire it to limbo. */
void cache_shard_unlink(struct cache_shard *s, struct cache_entry *e)
{
    struct cache_node *n = entry_node(e);
    _Atomic(struct cache_entry *) *pp = bucket_of(s, e->hash);
    struct cache_entry *cur;
    /* Relaxed: chains change only under the mutex we hold. */
    while ((cur = atomic_load_explicit(pp, memory_order_relaxed)) != e)
        pp = &cur->chain;
    /* seq_cst: the unlink that a grace-period snapshot must follow in the
     * total order (reclaim.h). e->chain stays intact for readers on e. */
    atomic_store_explicit(pp, atomic_load_explicit(&e->chain, memory_order_relaxed),
                          memory_order_seq_cst);

    /* SIEVE: a hand resting on a removed entry moves on towards the head. */
    if (s->hand == n)
        s->hand = n->newer;
    if (n->newer != NULL)
        n->newer->older = n->older;
    else
        s->newest = n->older;
    if (n->older != NULL)
        n->older->newer = n->newer;
    else
        s->oldest = n->newer;
    s->bytes -= n->alloc_size;
    s->entries--;

    n->older = s->limbo;
    s->limbo = n;
    s->limbo_bytes += n->alloc_size;
    s->limbo_count++;
}

/* Unlink e, counting it as dead (if it was not live) or as a live eviction. */
static void shard_evict(struct cache_shard *s, struct cache_entry *e, enum entry_state st,
                        bool pressure)
{
    if (st != ENTRY_LIVE) {
        cache_count_dead(s, st);
    } else {
        ctr_add(&s->ctr.evictions, 1);
        if (pressure)
            ctr_add(&s->ctr.pressure_evictions, 1);
    }
    cache_shard_unlink(s, e);
}

/*
 * One SIEVE step: walk the hand from where it rests towards the head
 * (wrapping to the oldest), clearing visited bits, and evict the first entry
 * that is dead or unvisited. Readers may set bits behind the hand, so after
 * two laps it evicts where it stands. Returns the bytes retired. The shard
 * must not be empty.
 */
static uint64_t shard_evict_one(struct cache *c, struct cache_shard *s, uint64_t now_ms,
                                bool pressure)
{
    struct cache_node *n = s->hand != NULL ? s->hand : s->oldest;
    for (uint64_t steps = 2 * s->entries; steps > 0; steps--) {
        /* Relaxed: the bit is a hint; a hit racing the hand at worst keeps
         * or loses one entry a little early or late. */
        if (state_dead(entry_state(c, n->entry, now_ms)) ||
            !atomic_load_explicit(&n->entry->visited, memory_order_relaxed))
            break;
        atomic_store_explicit(&n->entry->visited, 0, memory_order_relaxed); /* as above */
        n = n->newer != NULL ? n->newer : s->oldest;
    }
    uint64_t size = n->alloc_size;
    s->hand = n; /* cache_shard_unlink moves it on to n->newer */
    shard_evict(s, n->entry, entry_state(c, n->entry, now_ms), pressure);
    return size;
}

/*
 * Keep e's chain under CACHE_CHAIN_MAX once e joins it: when full, evict a
 * dead entry of the chain, else the oldest unvisited one, else the oldest
 * (chains are in insertion order). Keys that collide, by chance or by
 * design, only ever push each other out.
 */
static void chain_make_room(struct cache *c, struct cache_shard *s, uint64_t hash, uint64_t now_ms)
{
    struct cache_entry *head = atomic_load_explicit(bucket_of(s, hash), memory_order_relaxed);
    struct cache_entry *dead = NULL, *unvisited = NULL;
    uint32_t n = 0;
    /* Relaxed: chains change only under the mutex we hold. */
    for (struct cache_entry *e = head; e != NULL;
         e = atomic_load_explicit(&e->chain, memory_order_relaxed)) {
        n++;
        if (dead == NULL && state_dead(entry_state(c, e, now_ms)))
            dead = e;
        if (unvisited == NULL && !atomic_load_explicit(&e->visited, memory_order_relaxed))
            unvisited = e;
    }
    if (n < CACHE_CHAIN_MAX)
        return;
    struct cache_entry *victim = dead != NULL ? dead : unvisited != NULL ? unvisited : head;
    enum entry_state st = entry_state(c, victim, now_ms);
    if (st == ENTRY_LIVE)
        ctr_add(&s->ctr.chain_evictions, 1);
    shard_evict(s, victim, st, false);
}

/* Move a retired list (linked by `older`) onto *to_free. */
void cache_list_move(struct cache_node *list, struct cache_node **to_free)
{
    while (list != NULL) {
        struct cache_node *next = list->older;
        list->older = *to_free;
        *to_free = list;
        list = next;
    }
}

void cache_free_list(struct cache *c, struct cache_node *list)
{
    while (list != NULL) {
        struct cache_node *next = list->older;
        sdallocx(list->entry, list->alloc_size, c->flags);
        list = next;
    }
}

static void pending_release(struct cache_shard *s, struct cache_node **to_free)
{
    cache_list_move(s->pending, to_free);
    s->pending = NULL;
    s->pending_bytes = 0;
}

static void wait_passed(struct cache *c, struct cache_shard *s)
{
    /* Readers never take the mutex inside a section, so waiting while
     * holding it cannot deadlock; sections are a lookup and a copy. */
    while (!reclaim_snapshot_passed(&c->rd, s->snap))
        sched_yield();
}

/*
 * Hand retired entries whose grace period is over to *to_free (freed by the
 * caller after unlocking). Without `force` this never waits: limbo becomes a
 * pending batch every RETIRE_BATCH entries or reserve/2 bytes, and a batch is
 * released once the readers inside at its snapshot have left - usually at
 * once, since a section lasts a lookup. With `force`, waits until everything
 * retired so far is released.
 */
void cache_shard_collect(struct cache *c, struct cache_shard *s, bool force,
                         struct cache_node **to_free)
{
    if (s->pending != NULL) {
        if (force)
            wait_passed(c, s);
        else if (!reclaim_snapshot_passed(&c->rd, s->snap))
            return;
        pending_release(s, to_free);
    }
    if (s->limbo == NULL ||
        (!force && s->limbo_count < RETIRE_BATCH && s->limbo_bytes < s->reserve / 2))
        return;
    s->pending = s->limbo;
    s->pending_bytes = s->limbo_bytes;
    s->limbo = NULL;
    s->limbo_bytes = 0;
    s->limbo_count = 0;
    if (!reclaim_snapshot_take(&c->rd, s->snap)) {
        if (!force)
            return;
        wait_passed(c, s);
    }
    pending_release(s, to_free);
}

/* Reclaim a dead entry that a get found. */
void cache_shard_reclaim_dead(struct cache *c, struct cache_shard *s, uint64_t hash,
                              const struct cache_key *k, uint64_t now_ms)
{
    struct cache_node *to_free = NULL;
    pthread_mutex_lock(&s->lock);
    shard_clock(s, now_ms);
    /* Re-check: another thread may have reclaimed or replaced it already. */
    struct cache_entry *e = shard_find(s, hash, k);
    if (e != NULL) {
        enum entry_state st = entry_state(c, e, now_ms);
        if (state_dead(st)) {
            cache_count_dead(s, st);
            cache_shard_unlink(s, e);
            cache_shard_collect(c, s, false, &to_free);
        }
    }
    pthread_mutex_unlock(&s->lock);
    cache_free_list(c, to_free);
}

/*
 * Insert e (new, unlinked, of the current generation): retire the entry it
 * replaces, make room in its chain, evict until both bounds hold, further
 * under pressure, then publish e. Its alloc_size <= max_bytes - reserve was
 * checked, so the loops cannot empty the shard in vain.
 */
void cache_shard_insert(struct cache *c, struct cache_shard *s, struct cache_entry *e,
                        uint64_t now_ms, bool pressure)
{
    struct cache_key k = {
        .backend = e->backend,
        .type = e->data,
        .type_len = e->type_len,
        .params = e->data + e->type_len,
        .params_len = e->params_len,
    };
    struct cache_node *n = entry_node(e);
    struct cache_entry *old = shard_find(s, e->hash, &k);
    if (old != NULL) {
        /* Replaced: not an eviction; but a dead one is counted, once. */
        enum entry_state st = entry_state(c, old, now_ms);
        if (st != ENTRY_LIVE)
            cache_count_dead(s, st);
        cache_shard_unlink(s, old);
    }
    chain_make_room(c, s, e->hash, now_ms);

    uint64_t budget = s->max_bytes - s->reserve;
    while (s->entries > 0 && (s->entries + 1 > s->max_entries || s->bytes + n->alloc_size > budget))
        (void)shard_evict_one(c, s, now_ms, false);
    if (pressure) {
        uint64_t freed = 0;
        while (s->entries > 0 && freed < 2 * n->alloc_size)
            freed += shard_evict_one(c, s, now_ms, true);
    }

    /* Append at the chain's tail (at most CACHE_CHAIN_MAX - 1 steps):
     * entries SIEVE keeps are the popular ones, and new entries piled in
     * front of them would lengthen every hit's walk. Relaxed loads: chains
     * change only under the mutex we hold. */
    _Atomic(struct cache_entry *) *pp = bucket_of(s, e->hash);
    struct cache_entry *cur;
    while ((cur = atomic_load_explicit(pp, memory_order_relaxed)) != NULL)
        pp = &cur->chain;
    /* Release: publishes e's contents (e->chain is NULL from entry_build) to
     * gets' seq_cst, hence acquire, loads. */
    atomic_store_explicit(pp, e, memory_order_release);
    n->older = s->newest;
    if (s->newest != NULL)
        s->newest->newer = n;
    s->newest = n;
    if (s->oldest == NULL)
        s->oldest = n;
    s->bytes += n->alloc_size;
    s->entries++;
}
