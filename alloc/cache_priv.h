/*
 * cache_priv.h - what the cache's files share (cache.c, cache_evict.c,
 * cache_ctl.c): the entry, shard and cache structs, the lock-free chain walk
 * and the writers' entry points. Internal to alloc/: everyone else uses
 * cache.h, whose contract and locking rules hold here too.
 *
 * The inline helpers are the get path's (shard_find, state_at) and must stay
 * inline: a hit is one hash, one chain walk and one copy. The functions
 * declared at the end are the writers' (cache_evict.c) and run under the
 * shard mutex unless said otherwise.
 */
#ifndef ALLOC_CACHE_PRIV_H
#define ALLOC_CACHE_PRIV_H

#include "cache.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

/* The library's own header-only build of XXH3: the same code as
 * libxxhash.so, inlined into the hot path instead of a PLT call. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "arena.h"
#include "reclaim.h"

#define CACHELINE 64

/* A reader's walk: the chain bound, plus entries unlinked under its feet. */
#define CHAIN_WALK_MAX (2u * CACHE_CHAIN_MAX)

/* Per-reader statistics slots (reclaim_reader.stat). */
enum { RSTAT_HITS, RSTAT_MISSES, RSTAT_STALE_HITS };
_Static_assert(RSTAT_STALE_HITS < RECLAIM_READER_STATS, "one reader stat per counter");

/*
 * Entry layout, one block: [header | type | params | value | pad | node].
 * The header holds only what a get reads, and the writers' part (struct
 * cache_node: queue links, size) sits after the value, so a hit touches
 * header + key + value and nothing else. The queue links node to node, so
 * writers walking or splicing it do not read other entries' headers either.
 */
struct cache_entry {
    _Atomic(struct cache_entry *) chain; /* next in the hash bucket */
    uint64_t hash;
    uint64_t expires_ms;
    uint64_t gen;
    uint32_t backend;
    uint32_t value_len;
    uint32_t params_len;
    uint16_t type_len;
    _Atomic uint8_t visited; /* SIEVE bit: set by hits, cleared by the hand */
    char data[];             /* type, params, value, then struct cache_node */
};

/* Writers only, under the shard mutex. */
struct cache_node {
    struct cache_node *newer;  /* towards the queue head */
    struct cache_node *older;  /* towards the tail; once retired, the list link */
    struct cache_entry *entry; /* the block this node ends */
    size_t alloc_size;         /* nallocx() of the block: what the arena counts */
};

static inline size_t node_offset(size_t type_len, size_t params_len, size_t value_len)
{
    size_t end = offsetof(struct cache_entry, data) + type_len + params_len + value_len;
    size_t align = alignof(struct cache_node);
    return (end + align - 1) & ~(align - 1);
}

static inline struct cache_node *entry_node(struct cache_entry *e)
{
    size_t off = node_offset(e->type_len, e->params_len, e->value_len);
    return (struct cache_node *)(void *)((char *)e + off);
}

/* Counters bumped outside any read section or with the mutex: summed on read. */
struct cache_counters {
    _Atomic uint64_t hits_locked; /* lookups by threads without a reader slot */
    _Atomic uint64_t misses_locked;
    _Atomic uint64_t stale_hits_locked;
    _Atomic uint64_t evictions;
    _Atomic uint64_t expirations;
    _Atomic uint64_t invalidations;
    _Atomic uint64_t ttl_capped;
    _Atomic uint64_t pressure_evictions;
    _Atomic uint64_t chain_evictions;
    _Atomic uint64_t sets;
    _Atomic uint64_t stale_sets;
    _Atomic uint64_t too_big;
    _Atomic uint64_t alloc_failures;
};

struct cache_shard {
    /* Immutable after create; gets read them without the lock, so they sit
     * on a line that no set dirties. */
    alignas(CACHELINE) _Atomic(struct cache_entry *) *buckets;
    uint64_t bucket_mask;
    uint64_t max_bytes; /* share of the bound less this shard's tables */
    uint64_t max_entries;
    uint64_t reserve; /* bytes kept for retired entries awaiting a grace period */
    struct reclaim_snapshot *snap;
    /* Writers only, under the mutex: */
    alignas(CACHELINE) pthread_mutex_t lock;
    struct cache_node *newest;
    struct cache_node *oldest;
    struct cache_node *hand; /* next eviction candidate; NULL = start at oldest */
    uint64_t bytes;
    uint64_t entries;
    uint64_t now_ms;          /* latest time a set or reclaim brought in: cache_clear's clock */
    struct cache_node *limbo; /* retired, not yet in a grace period */
    uint64_t limbo_bytes;
    uint32_t limbo_count;
    struct cache_node *pending; /* retired, waiting for `snap` to pass */
    uint64_t pending_bytes;
    alignas(CACHELINE) struct cache_counters ctr;
};

struct cache {
    /* Read-only after create, read by every get. */
    unsigned arena;
    int flags; /* arena_flags(arena): every mallocx/dallocx here */
    uint32_t nshards;
    uint32_t shard_mask;
    uint64_t stale_ms;
    struct cache_shard *shards;
    struct reclaim_domain rd;
    alignas(CACHELINE) unsigned char secret[XXH3_SECRET_DEFAULT_SIZE];
    /* Reloadable (cache_reconfigure), read by sets: relaxed atomics. */
    alignas(CACHELINE) _Atomic uint64_t max_object_bytes;
    _Atomic int64_t ttl_ms;
    _Atomic int64_t max_ttl_ms;
    _Atomic uint64_t watermark;
    /* Fixed by cache_create; cache_reconfigure refuses other values. */
    struct cache_config created;
    uint64_t overhead_bytes;
    alignas(CACHELINE) _Atomic uint64_t pressure_checks;
    _Atomic uint64_t process_allocated;
    _Atomic bool under_pressure;
    alignas(CACHELINE) _Atomic uint64_t gens[CACHE_GEN_SLOTS];
};

/* Statistics counters carry no data dependency: relaxed everywhere. */
static inline void ctr_add(_Atomic uint64_t *ctr, uint64_t n)
{
    atomic_fetch_add_explicit(ctr, n, memory_order_relaxed); /* stats only */
}

static inline uint64_t ctr_get(_Atomic uint64_t *ctr)
{
    return atomic_load_explicit(ctr, memory_order_relaxed); /* stats only */
}

/* memcmp with a NULL pointer is undefined even for length 0. */
static inline bool bytes_equal(const char *a, const char *b, size_t len)
{
    return len == 0 || memcmp(a, b, len) == 0;
}

static inline bool entry_matches(const struct cache_entry *e, uint64_t hash,
                                 const struct cache_key *k)
{
    return e->hash == hash && e->backend == k->backend && e->type_len == k->type_len &&
           e->params_len == k->params_len && bytes_equal(e->data, k->type, k->type_len) &&
           bytes_equal(e->data + e->type_len, k->params, k->params_len);
}

static inline _Atomic(struct cache_entry *) *bucket_of(struct cache_shard *s, uint64_t hash)
{
    return &s->buckets[hash & s->bucket_mask];
}

/*
 * The entry for k, or NULL. At most CHAIN_WALK_MAX steps: under the mutex a
 * chain holds at most CACHE_CHAIN_MAX entries, so writers always find what is
 * there; a reader may also pass entries unlinked while it walks.
 */
static inline struct cache_entry *shard_find(struct cache_shard *s, uint64_t hash,
                                             const struct cache_key *k)
{
    /* seq_cst: these loads and the writers' unlinking stores must fall in
     * one total order with the reader's section entry (reclaim.h); on x86
     * a seq_cst load is a plain load. It is also an acquire, pairing with
     * the release that published the entry's contents. */
    struct cache_entry *e = atomic_load_explicit(bucket_of(s, hash), memory_order_seq_cst);
    for (uint32_t steps = 0; e != NULL && steps < CHAIN_WALK_MAX; steps++) {
        if (entry_matches(e, hash, k))
            return e;
        e = atomic_load_explicit(&e->chain, memory_order_seq_cst); /* as above */
    }
    return NULL;
}

/*
 * LIVE: servable. GRACE: expired less than stale_ms ago (only cache_get_stale
 * serves it; gets do not reclaim it). EXPIRED, STALE: dead.
 */
enum entry_state { ENTRY_LIVE, ENTRY_GRACE, ENTRY_EXPIRED, ENTRY_STALE };

static inline enum entry_state state_at(const struct cache *c, const struct cache_entry *e,
                                        uint64_t gen, uint64_t now_ms)
{
    if (e->gen != gen)
        return ENTRY_STALE;
    if (now_ms < e->expires_ms)
        return ENTRY_LIVE;
    /* now >= expiry: the difference cannot wrap. */
    return now_ms - e->expires_ms < c->stale_ms ? ENTRY_GRACE : ENTRY_EXPIRED;
}

static inline bool state_dead(enum entry_state st)
{
    return st == ENTRY_EXPIRED || st == ENTRY_STALE;
}

static inline void shard_clock(struct cache_shard *s, uint64_t now_ms)
{
    if (now_ms > s->now_ms)
        s->now_ms = now_ms;
}

/* ---- cache_evict.c: writers, under the shard mutex unless said --------- */

/* Count the removal of an entry that was not live (GRACE counts as expired). */
void cache_count_dead(struct cache_shard *s, enum entry_state st);

/* Remove e from its chain and the queue and retire it to limbo. */
void cache_shard_unlink(struct cache_shard *s, struct cache_entry *e);

/* Move a retired list (linked by `older`) onto *to_free. */
void cache_list_move(struct cache_node *list, struct cache_node **to_free);

/* Free a list from cache_shard_collect; no lock needed (nothing links it). */
void cache_free_list(struct cache *c, struct cache_node *list);

/*
 * Hand retired entries whose grace period is over to *to_free, for
 * cache_free_list after unlocking; with `force`, waits until everything
 * retired so far is released.
 */
void cache_shard_collect(struct cache *c, struct cache_shard *s, bool force,
                         struct cache_node **to_free);

/* Reclaim a dead entry that a get found. Takes the shard mutex itself. */
void cache_shard_reclaim_dead(struct cache *c, struct cache_shard *s, uint64_t hash,
                              const struct cache_key *k, uint64_t now_ms);

/*
 * Insert e (new, unlinked, of the current generation), evicting as the
 * bounds and the pressure flag require, then publish it to gets.
 */
void cache_shard_insert(struct cache *c, struct cache_shard *s, struct cache_entry *e,
                        uint64_t now_ms, bool pressure);

#endif /* ALLOC_CACHE_PRIV_H */
