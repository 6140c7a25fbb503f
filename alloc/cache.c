/*
 * cache.c - sharded SIEVE cache with lock-free hits, in a dedicated jemalloc
 * arena.
 *
 * Eviction: SIEVE (Yazhuo Zhang, Juncheng Yang, Yao Yue, Ymir Vigfusson,
 * K. V. Rashmi, "SIEVE is Simpler than LRU: an Efficient Turn-Key Eviction
 * Algorithm for Web Caches", NSDI 2024). Each shard keeps its entries in one
 * FIFO queue (newest at the head) and a "hand" that walks from the oldest
 * entry towards the newest. A hit only sets the entry's `visited` bit; the
 * hand clears visited bits as it passes and evicts the first unvisited entry,
 * then rests there. New entries go to the head. On skewed (Zipf) traffic this
 * keeps popular objects without ever moving them, and the paper reports lower
 * miss ratios than LRU on most of its 1559 production traces. Chosen over
 * S3-FIFO because it needs one queue and no ghost table: the cache's memory
 * is exactly its entries plus fixed tables.
 *
 * Concurrency: because a SIEVE hit writes nothing but one atomic bit, a get
 * needs no lock at all. Gets walk the hash chains with atomic loads inside a
 * read section (reclaim.h: grace periods, RCU-style); sets, evictions,
 * reclaims and clears take the shard's mutex, unlink with atomic stores and
 * retire what they unlink; a retired entry is freed only after every get that
 * might still be reading it has left its section. The value is copied out
 * (through the caller's sink) inside the section, so no pointer into cache
 * memory ever escapes. A hit therefore writes only to the reader's own slot
 * line (section sequence and hit counter) and, the first time, the entry's
 * visited bit: workers never serialise on a hit, unlike LRU, where every hit
 * must lock the list to move the entry to the front. The 2^k shards (hash
 * bits 40..47) only split the writers.
 *
 * Hashing: XXH3 with a per-cache secret of XXH3_SECRET_DEFAULT_SIZE random
 * bytes (getrandom), so bucket and shard of a key cannot be predicted from
 * outside the process: a client that chooses keys cannot pile them into one
 * chain. Chains are bounded all the same (CACHE_CHAIN_MAX): a set into a full
 * chain first evicts one of its entries (dead first, then the oldest
 * unvisited, else the oldest), so a walk is bounded even with bad luck or a
 * leaked secret. Buckets are sized for a load factor <= 1 at the entry
 * bound, capped by the bytes (see shard_init) and paid out of them.
 *
 * Invariants (under the shard mutex):
 *   - every linked entry is in exactly one hash chain and in the queue; no
 *     chain holds more than CACHE_CHAIN_MAX entries;
 *   - s->bytes == sum of alloc_size over linked entries, s->entries == their
 *     number; retired entries are in limbo or pending, counted in
 *     limbo_bytes/pending_bytes until freed;
 *   - after a set returns: entries <= max_entries, bytes <= max_bytes -
 *     reserve, and bytes + limbo + pending <= max_bytes (a set that would
 *     break the last one waits for a grace period and frees); the shard's
 *     max_bytes is its share of the configured bound less its own tables;
 *   - an entry is inserted only if its generation is current while the mutex
 *     is held: a fill that raced an invalidation cannot replace a fresher fill
 *     of the same key (nor evict live entries for a dead one).
 * An entry's alloc_size is nallocx() of the request, which jemalloc documents
 * to be what sallocx() reports, i.e. exactly what the arena counts; so the
 * arena's allocated figure == bytes + retired bytes + overhead, to the byte.
 *
 * Dead entries (expired beyond the stale window, or stored under an older
 * backend generation) are never served. They are reclaimed by the get that
 * finds one, by a set of the same key, by a full chain, by the eviction hand,
 * which takes a dead entry whatever its visited bit, and by cache_clear; each
 * is counted once, as an expiration or an invalidation. An entry in its stale
 * window (expired less than stale_ms ago) is not served by cache_get and not
 * reclaimed by gets; the hand treats it like a live one, and whoever removes
 * it counts an expiration.
 *
 * Memory pressure: cache_pressure_refresh (a caller's timer) re-reads
 * jemalloc's process-wide allocated bytes; sets only read the flag it leaves.
 * While the figure is above the watermark, each set evicts at least twice its
 * own size beyond what the bounds require and frees what it retired before
 * returning, so the cache shrinks until the pressure ends.
 *
 * Limits: shard bounds are the global ones divided by the shard count, so a
 * shard may evict while another has room (small with a good hash). A hand
 * racing readers that keep re-marking every entry gives up after two laps and
 * evicts where it stands. Dead entries hold memory until reclaimed. Threads
 * beyond RECLAIM_MAX_READERS get no reader slot and read under the shard
 * mutex (correct, slower). A reader that keeps meeting concurrent unlinks in
 * its chain stops after 2 * CACHE_CHAIN_MAX steps and reports a miss. Sets
 * cost more than in a malloc-based LRU: every block goes to and from the
 * arena without a thread cache (that is what makes the figures exact), and
 * retired blocks are freed in batches.
 */
#include "cache.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <sys/random.h>

/* The library's own header-only build of XXH3: the same code as
 * libxxhash.so, inlined into the hot path instead of a PLT call. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "arena.h"
#include "reclaim.h"

#define CACHELINE 64

/* Keys up to this many bytes (with the 8-byte header) are hashed in one call
 * from a stack copy; XXH3's short-input paths end at 240 bytes. */
#define KEY_HASH_STACK 240u
#define KEY_HASH_HDR   8u

/* A reader's walk: the chain bound, plus entries unlinked under its feet. */
#define CHAIN_WALK_MAX (2u * CACHE_CHAIN_MAX)

/* Retired entries are handed to a grace period in batches of this many. */
#define RETIRE_BATCH 32u

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

void cache_config_default(struct cache_config *cfg)
{
    cfg->max_bytes = CACHE_DEFAULT_MAX_BYTES;
    cfg->max_entries = CACHE_DEFAULT_MAX_ENTRIES;
    cfg->max_object_bytes = CACHE_DEFAULT_MAX_OBJECT_BYTES;
    cfg->ttl_ms = CACHE_DEFAULT_TTL_MS;
    cfg->max_ttl_ms = CACHE_DEFAULT_MAX_TTL_MS;
    cfg->memory_watermark_bytes = CACHE_DEFAULT_MEMORY_WATERMARK;
    cfg->shards = 0;
    cfg->stale_ms = CACHE_DEFAULT_STALE_MS;
}

/* memcpy with a NULL pointer is undefined even for length 0. */
static inline void copy_bytes(char *dst, const char *src, size_t len)
{
    if (len > 0)
        memcpy(dst, src, len);
}

uint64_t cache_key_hash(const struct cache *c, const struct cache_key *key)
{
    /* One XXH3 over [backend | type_len | type | params] under the cache's
     * secret: the header keeps ("ab","c") and ("a","bc") and two backends
     * apart. Short keys (all of the broker's gets, in practice) are gathered
     * on the stack for a single one-shot call; longer ones go through the
     * streaming API, which yields the same value for the same bytes. */
    unsigned char hdr[KEY_HASH_HDR];
    uint32_t tlen = (uint32_t)key->type_len; /* longer types are never stored */
    memcpy(hdr, &key->backend, 4);
    memcpy(hdr + 4, &tlen, 4);
    size_t room = KEY_HASH_STACK - KEY_HASH_HDR;
    if (key->type_len <= room && key->params_len <= room - key->type_len) {
        char buf[KEY_HASH_STACK];
        memcpy(buf, hdr, KEY_HASH_HDR);
        copy_bytes(buf + KEY_HASH_HDR, key->type, key->type_len);
        copy_bytes(buf + KEY_HASH_HDR + key->type_len, key->params, key->params_len);
        return XXH3_64bits_withSecret(buf, KEY_HASH_HDR + key->type_len + key->params_len,
                                      c->secret, sizeof(c->secret));
    }
    /* Zeroed: reset leaves fields the digest reads only on other paths, and
     * GCC cannot see that. Long keys only, so 576 bytes of memset is cheap. */
    XXH3_state_t st;
    memset(&st, 0, sizeof(st));
    /* Cannot fail: the state is valid and the secret long enough. */
    (void)XXH3_64bits_reset_withSecret(&st, c->secret, sizeof(c->secret));
    (void)XXH3_64bits_update(&st, hdr, KEY_HASH_HDR);
    (void)XXH3_64bits_update(&st, key->type, key->type_len);
    (void)XXH3_64bits_update(&st, key->params, key->params_len);
    return XXH3_64bits_digest(&st);
}

int64_t cache_ttl_clamp(int64_t ttl_ms, int64_t max_ttl_ms, bool *capped)
{
    /* Comparisons only, no arithmetic: nothing here can overflow. */
    int64_t hi = max_ttl_ms < CACHE_TTL_MIN_MS ? CACHE_TTL_MIN_MS : max_ttl_ms;
    int64_t out = ttl_ms;
    if (ttl_ms < CACHE_TTL_MIN_MS)
        out = CACHE_TTL_MIN_MS;
    else if (ttl_ms > hi)
        out = hi;
    *capped = out != ttl_ms;
    return out;
}

uint64_t cache_expiry_ms(uint64_t now_ms, int64_t ttl_ms)
{
    uint64_t ttl = ttl_ms > 0 ? (uint64_t)ttl_ms : 0;
    /* Saturate: an entry stored at the end of time simply never expires. */
    return now_ms > UINT64_MAX - ttl ? UINT64_MAX : now_ms + ttl;
}

static inline struct cache_shard *shard_of(struct cache *c, uint64_t hash)
{
    /* Bits 40.. pick the shard, low bits the bucket: independent. */
    return &c->shards[(uint32_t)(hash >> 40) & c->shard_mask];
}

static inline _Atomic uint64_t *gen_slot(const struct cache *c, uint32_t backend)
{
    return (_Atomic uint64_t *)&c->gens[backend % CACHE_GEN_SLOTS];
}

uint64_t cache_generation(const struct cache *c, uint32_t backend)
{
    /* Pairs with the release increments in cache_invalidate_backend and
     * cache_clear. */
    return atomic_load_explicit(gen_slot(c, backend), memory_order_acquire);
}

void cache_invalidate_backend(struct cache *c, uint32_t backend)
{
    /* Release: a thread that sees the new generation also sees whatever the
     * mutating command's completion published before this call. */
    atomic_fetch_add_explicit(gen_slot(c, backend), 1, memory_order_release);
}

static inline bool key_valid(const struct cache_key *k)
{
    return k != NULL && (k->type != NULL || k->type_len == 0) &&
           (k->params != NULL || k->params_len == 0);
}

/* ---- lookup (lock-free, inside a read section or under the mutex) -------- */

static inline const char *entry_value(const struct cache_entry *e)
{
    return e->data + e->type_len + e->params_len;
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

static enum entry_state entry_state(const struct cache *c, const struct cache_entry *e,
                                    uint64_t now_ms)
{
    return state_at(c, e, cache_generation(c, e->backend), now_ms);
}

static inline bool state_dead(enum entry_state st)
{
    return st == ENTRY_EXPIRED || st == ENTRY_STALE;
}

/* ---- writers: unlink, retire, evict, collect (all under the mutex) ------- */

/* Count the removal of an entry that was not live (GRACE counts as expired). */
static void count_dead(struct cache_shard *s, enum entry_state st)
{
    ctr_add(st == ENTRY_STALE ? &s->ctr.invalidations : &s->ctr.expirations, 1);
}

/* Remove e from its chain and the queue and retire it to limbo. */
static void shard_unlink(struct cache_shard *s, struct cache_entry *e)
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
        count_dead(s, st);
    } else {
        ctr_add(&s->ctr.evictions, 1);
        if (pressure)
            ctr_add(&s->ctr.pressure_evictions, 1);
    }
    shard_unlink(s, e);
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
    s->hand = n; /* shard_unlink moves it on to n->newer */
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
static void list_move(struct cache_node *list, struct cache_node **to_free)
{
    while (list != NULL) {
        struct cache_node *next = list->older;
        list->older = *to_free;
        *to_free = list;
        list = next;
    }
}

static void free_list(struct cache *c, struct cache_node *list)
{
    while (list != NULL) {
        struct cache_node *next = list->older;
        sdallocx(list->entry, list->alloc_size, c->flags);
        list = next;
    }
}

static void pending_release(struct cache_shard *s, struct cache_node **to_free)
{
    list_move(s->pending, to_free);
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
static void shard_collect(struct cache *c, struct cache_shard *s, bool force,
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

static inline void shard_clock(struct cache_shard *s, uint64_t now_ms)
{
    if (now_ms > s->now_ms)
        s->now_ms = now_ms;
}

/* Reclaim a dead entry that a get found. */
static void shard_reclaim_dead(struct cache *c, struct cache_shard *s, uint64_t hash,
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
            count_dead(s, st);
            shard_unlink(s, e);
            shard_collect(c, s, false, &to_free);
        }
    }
    pthread_mutex_unlock(&s->lock);
    free_list(c, to_free);
}

/* ---- get ----------------------------------------------------------------- */

static inline void mark_visited(struct cache_entry *e)
{
    /* Test before set: a hot entry's line stays shared, not bounced between
     * cores. Relaxed: a hint for the hand (see shard_evict_one). */
    if (!atomic_load_explicit(&e->visited, memory_order_relaxed))
        atomic_store_explicit(&e->visited, 1, memory_order_relaxed);
}

enum lookup_kind { LOOKUP_FRESH, LOOKUP_STALE };

/* What one lookup did, for its counters. */
enum lookup_outcome { OUT_HIT, OUT_MISS, OUT_SINK_FAILED };

static void count_lookup(struct cache_shard *s, struct reclaim_reader *r, enum lookup_kind kind,
                         enum lookup_outcome out)
{
    if (out == OUT_SINK_FAILED || (kind == LOOKUP_STALE && out == OUT_MISS))
        return; /* a failed copy is retried and counted then; stale misses are not counted */
    if (r != NULL) {
        reclaim_stat_add(r, kind == LOOKUP_STALE ? RSTAT_STALE_HITS
                            : out == OUT_HIT     ? RSTAT_HITS
                                                 : RSTAT_MISSES);
        return;
    }
    ctr_add(kind == LOOKUP_STALE ? &s->ctr.stale_hits_locked
            : out == OUT_HIT     ? &s->ctr.hits_locked
                                 : &s->ctr.misses_locked,
            1);
}

/*
 * The one lookup behind cache_get and cache_get_stale. Inside a read
 * section, or - for a thread without a reader slot - under the shard mutex,
 * which keeps linked entries alive as for a writer.
 */
static int lookup(struct cache *c, const struct cache_key *key, uint64_t now_ms,
                  enum lookup_kind kind, cache_sink_fn sink, void *arg, uint64_t *gen_out,
                  uint64_t *age_out)
{
    uint64_t hash = cache_key_hash(c, key);
    struct cache_shard *s = shard_of(c, hash);
    uint64_t gen = cache_generation(c, key->backend);
    if (gen_out != NULL)
        *gen_out = gen;
    struct reclaim_reader *r = reclaim_reader_get(&c->rd);
    bool entered = false;
    if (r != NULL)
        entered = reclaim_enter(r);
    else
        pthread_mutex_lock(&s->lock);

    struct cache_entry *e = shard_find(s, hash, key);
    enum entry_state st = e != NULL ? state_at(c, e, gen, now_ms) : ENTRY_EXPIRED;
    bool servable = e != NULL && (st == ENTRY_LIVE || (kind == LOOKUP_STALE && st == ENTRY_GRACE));
    enum lookup_outcome out = OUT_MISS;
    int rc = -ENOENT;
    uint64_t expires = 0;
    if (servable) {
        expires = e->expires_ms;
        rc = sink != NULL ? sink(arg, entry_value(e), e->value_len) : 0;
        if (rc == -ENOENT)
            rc = -EIO; /* -ENOENT means a miss, and only that */
        else if (rc > 0)
            rc = 0;
        out = rc == 0 ? OUT_HIT : OUT_SINK_FAILED;
        if (rc == 0)
            mark_visited(e);
    }

    if (r == NULL)
        pthread_mutex_unlock(&s->lock);
    else if (entered)
        reclaim_exit(r);
    count_lookup(s, r, kind, out);
    /* e may be freed from here on: only the key is used to find it again. */
    if (e != NULL && state_dead(st))
        shard_reclaim_dead(c, s, hash, key, now_ms);
    if (rc == 0 && age_out != NULL)
        *age_out = now_ms > expires ? now_ms - expires : 0;
    return rc;
}

int cache_get(struct cache *c, const struct cache_key *key, uint64_t now_ms, cache_sink_fn sink,
              void *arg, uint64_t *gen_out)
{
    if (c == NULL || !key_valid(key)) {
        if (gen_out != NULL)
            *gen_out = 0;
        return -EINVAL;
    }
    return lookup(c, key, now_ms, LOOKUP_FRESH, sink, arg, gen_out, NULL);
}

int cache_get_stale(struct cache *c, const struct cache_key *key, uint64_t now_ms,
                    cache_sink_fn sink, void *arg, uint64_t *age_ms_out)
{
    if (c == NULL || !key_valid(key))
        return -EINVAL;
    return lookup(c, key, now_ms, LOOKUP_STALE, sink, arg, NULL, age_ms_out);
}

struct copy_sink {
    void *buf;
    size_t cap;
    size_t len;
};

static int copy_sink_fn(void *arg, const void *value, size_t len)
{
    struct copy_sink *cs = arg;
    cs->len = len;
    if (len > cs->cap)
        return -ENOBUFS;
    if (len > 0)
        memcpy(cs->buf, value, len);
    return 0;
}

int cache_get_copy(struct cache *c, const struct cache_key *key, uint64_t now_ms, void *buf,
                   size_t cap, size_t *len_out, uint64_t *gen_out)
{
    if (buf == NULL && cap > 0) {
        if (gen_out != NULL)
            *gen_out = 0;
        return -EINVAL;
    }
    struct copy_sink cs = {.buf = buf, .cap = cap, .len = 0};
    int rc = cache_get(c, key, now_ms, copy_sink_fn, &cs, gen_out);
    if ((rc == 0 || rc == -ENOBUFS) && len_out != NULL)
        *len_out = cs.len;
    return rc;
}

/* ---- memory pressure ----------------------------------------------------- */

int cache_pressure_refresh(struct cache *c)
{
    /* Relaxed (all of them): advisory figures; a set that reads a stale flag
     * evicts a little early or late, never incorrectly. */
    uint64_t watermark = atomic_load_explicit(&c->watermark, memory_order_relaxed);
    if (watermark == 0) {
        atomic_store_explicit(&c->under_pressure, false, memory_order_relaxed);
        return 0;
    }
    uint64_t allocated = 0;
    int rc = arena_process_allocated(&allocated);
    if (rc != 0)
        return rc;
    bool over = allocated > watermark;
    atomic_store_explicit(&c->process_allocated, allocated, memory_order_relaxed);
    atomic_store_explicit(&c->under_pressure, over, memory_order_relaxed);
    ctr_add(&c->pressure_checks, 1);
    return over ? 1 : 0;
}

/* ---- set ----------------------------------------------------------------- */

/* Build the entry outside any lock. Returns NULL when mallocx fails. */
static struct cache_entry *entry_build(struct cache *c, const struct cache_key *key,
                                       const void *value, size_t value_len, size_t request,
                                       size_t alloc_size, uint64_t hash, uint64_t gen,
                                       uint64_t expires_ms)
{
    struct cache_entry *e = mallocx(request, c->flags);
    if (e == NULL)
        return NULL;
    /* Not yet visible to any thread: atomic_init, no ordering needed. */
    atomic_init(&e->chain, NULL);
    atomic_init(&e->visited, 0);
    e->hash = hash;
    e->expires_ms = expires_ms;
    e->gen = gen;
    e->backend = key->backend;
    /* Lengths were checked by the caller: type <= UINT16_MAX, all three
     * <= max_object_bytes <= 2^31. */
    e->type_len = (uint16_t)key->type_len;
    e->params_len = (uint32_t)key->params_len;
    e->value_len = (uint32_t)value_len;
    copy_bytes(e->data, key->type, key->type_len);
    copy_bytes(e->data + key->type_len, key->params, key->params_len);
    copy_bytes(e->data + key->type_len + key->params_len, value, value_len);
    struct cache_node *n = entry_node(e);
    n->newer = n->older = NULL;
    n->entry = e;
    n->alloc_size = alloc_size;
    return e;
}

/*
 * Insert e (new, unlinked, of the current generation): retire the entry it
 * replaces, make room in its chain, evict until both bounds hold, further
 * under pressure, then publish e. Its alloc_size <= max_bytes - reserve was
 * checked, so the loops cannot empty the shard in vain.
 */
static void shard_insert(struct cache *c, struct cache_shard *s, struct cache_entry *e,
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
            count_dead(s, st);
        shard_unlink(s, old);
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

int cache_set_ttl(struct cache *c, const struct cache_key *key, const void *value, size_t value_len,
                  int64_t ttl_ms, uint64_t gen, uint64_t now_ms)
{
    if (c == NULL || !key_valid(key) || (value == NULL && value_len > 0))
        return -EINVAL;
    uint64_t hash = cache_key_hash(c, key);
    struct cache_shard *s = shard_of(c, hash);

    /* Each term is checked alone first so the sum cannot overflow. Relaxed:
     * a reloadable setting (cache_reconfigure). */
    uint64_t cap = atomic_load_explicit(&c->max_object_bytes, memory_order_relaxed);
    if (key->type_len > UINT16_MAX || key->params_len > cap || value_len > cap ||
        key->type_len + key->params_len + value_len > cap) {
        ctr_add(&s->ctr.too_big, 1);
        return -E2BIG;
    }
    size_t request =
        node_offset(key->type_len, key->params_len, value_len) + sizeof(struct cache_node);
    size_t alloc_size = nallocx(request, c->flags);
    if (alloc_size == 0 || alloc_size > s->max_bytes - s->reserve) {
        ctr_add(&s->ctr.too_big, 1);
        return -E2BIG;
    }
    /* Early refusal saves an allocation; the check that counts is the one
     * under the mutex below. */
    if (gen != cache_generation(c, key->backend)) {
        ctr_add(&s->ctr.stale_sets, 1);
        return -ESTALE;
    }
    bool capped = false;
    int64_t max_ttl = atomic_load_explicit(&c->max_ttl_ms, memory_order_relaxed); /* as cap */
    int64_t ttl = cache_ttl_clamp(ttl_ms, max_ttl, &capped);

    struct cache_entry *e = entry_build(c, key, value, value_len, request, alloc_size, hash, gen,
                                        cache_expiry_ms(now_ms, ttl));
    if (e == NULL) {
        ctr_add(&s->ctr.alloc_failures, 1);
        return -ENOMEM;
    }
    /* Relaxed: advisory (cache_pressure_refresh). */
    bool pressure = atomic_load_explicit(&c->under_pressure, memory_order_relaxed);

    struct cache_node *to_free = NULL;
    pthread_mutex_lock(&s->lock);
    /* Under the mutex: an invalidation between the early check and here,
     * followed by a fresh fill of this key (which took this mutex after the
     * invalidation), must not be overwritten by our older answer. Every
     * fill of the key is serialised here, so checking now suffices: a later
     * invalidation makes e dead, and the next fill replaces it. */
    if (gen != cache_generation(c, key->backend)) {
        pthread_mutex_unlock(&s->lock);
        sdallocx(e, alloc_size, c->flags);
        ctr_add(&s->ctr.stale_sets, 1);
        return -ESTALE;
    }
    if (capped)
        ctr_add(&s->ctr.ttl_capped, 1);
    shard_clock(s, now_ms);
    shard_insert(c, s, e, now_ms, pressure);
    bool over = s->bytes + s->limbo_bytes + s->pending_bytes > s->max_bytes;
    shard_collect(c, s, pressure || over, &to_free);
    pthread_mutex_unlock(&s->lock);
    ctr_add(&s->ctr.sets, 1);
    free_list(c, to_free);
    return 0;
}

int cache_set(struct cache *c, const struct cache_key *key, const void *value, size_t value_len,
              uint64_t gen, uint64_t now_ms)
{
    if (c == NULL)
        return -EINVAL;
    /* Relaxed: a reloadable setting (cache_reconfigure). */
    int64_t ttl = atomic_load_explicit(&c->ttl_ms, memory_order_relaxed);
    return cache_set_ttl(c, key, value, value_len, ttl, gen, now_ms);
}

/* ---- clear, stats -------------------------------------------------------- */

void cache_clear(struct cache *c)
{
    if (c == NULL)
        return;
    /* First the generations: a set holding a generation read before this
     * point now gets -ESTALE, even one already waiting for a shard mutex, so
     * nothing fetched before the clear is stored after it. Release, as in
     * cache_invalidate_backend. */
    for (uint32_t i = 0; i < CACHE_GEN_SLOTS; i++)
        atomic_fetch_add_explicit(&c->gens[i], 1, memory_order_release);
    for (uint32_t i = 0; i < c->nshards; i++) {
        struct cache_shard *s = &c->shards[i];
        struct cache_node *to_free = NULL;
        pthread_mutex_lock(&s->lock);
        while (s->oldest != NULL) {
            struct cache_entry *e = s->oldest->entry;
            /* Of the generation just before our bump, or stored since by a
             * set that read the bumped one, and unexpired by the shard's
             * clock: live, cleared, not counted. Otherwise it was dead
             * already: counted once, as such. */
            uint64_t cur = cache_generation(c, e->backend);
            enum entry_state st = e->gen + 1 == cur || e->gen == cur
                                      ? state_at(c, e, e->gen, s->now_ms)
                                      : ENTRY_STALE;
            if (st != ENTRY_LIVE)
                count_dead(s, st);
            shard_unlink(s, e);
        }
        s->hand = NULL;
        shard_collect(c, s, true, &to_free);
        pthread_mutex_unlock(&s->lock);
        free_list(c, to_free);
    }
}

static void stats_add_shard(struct cache_stats *out, struct cache_shard *s)
{
    pthread_mutex_lock(&s->lock);
    out->entries += s->entries;
    out->bytes += s->bytes;
    out->retired_bytes += s->limbo_bytes + s->pending_bytes;
    pthread_mutex_unlock(&s->lock);
    out->max_entries += s->max_entries;
    out->max_bytes += s->max_bytes;
    out->buckets += s->bucket_mask + 1;
    out->hits += ctr_get(&s->ctr.hits_locked);
    out->misses += ctr_get(&s->ctr.misses_locked);
    out->stale_hits += ctr_get(&s->ctr.stale_hits_locked);
    out->evictions += ctr_get(&s->ctr.evictions);
    out->expirations += ctr_get(&s->ctr.expirations);
    out->invalidations += ctr_get(&s->ctr.invalidations);
    out->ttl_capped += ctr_get(&s->ctr.ttl_capped);
    out->pressure_evictions += ctr_get(&s->ctr.pressure_evictions);
    out->chain_evictions += ctr_get(&s->ctr.chain_evictions);
    out->sets += ctr_get(&s->ctr.sets);
    out->stale_sets += ctr_get(&s->ctr.stale_sets);
    out->too_big += ctr_get(&s->ctr.too_big);
    out->alloc_failures += ctr_get(&s->ctr.alloc_failures);
}

int cache_stats_read(struct cache *c, struct cache_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (uint32_t i = 0; i < c->nshards; i++)
        stats_add_shard(out, &c->shards[i]);
    out->hits += reclaim_stat_sum(&c->rd, RSTAT_HITS);
    out->misses += reclaim_stat_sum(&c->rd, RSTAT_MISSES);
    out->stale_hits += reclaim_stat_sum(&c->rd, RSTAT_STALE_HITS);
    out->shards = c->nshards;
    out->overhead_bytes = c->overhead_bytes;
    out->pressure_checks = ctr_get(&c->pressure_checks);
    /* Relaxed: advisory figures (see cache_pressure_refresh). */
    out->process_allocated = atomic_load_explicit(&c->process_allocated, memory_order_relaxed);
    out->under_pressure = atomic_load_explicit(&c->under_pressure, memory_order_relaxed);
    return arena_allocated(c->arena, &out->arena_bytes);
}

/* ---- construction -------------------------------------------------------- */

static bool is_pow2(uint64_t v)
{
    return v != 0 && (v & (v - 1)) == 0;
}

static uint64_t pow2_ceil(uint64_t v)
{
    uint64_t p = 1;
    while (p < v)
        p <<= 1;
    return p;
}

static int config_check(const struct cache_config *cfg)
{
    if (cfg->max_bytes == 0 || cfg->max_entries == 0 ||
        cfg->max_entries > CACHE_MAX_ENTRIES_LIMIT || cfg->max_object_bytes == 0 ||
        cfg->max_object_bytes > CACHE_MAX_OBJECT_LIMIT || cfg->max_ttl_ms < CACHE_TTL_MIN_MS ||
        cfg->stale_ms < 0 || cfg->stale_ms > CACHE_MAX_STALE_MS)
        return -EINVAL;
    if (cfg->shards != 0) {
        if (!is_pow2(cfg->shards) || cfg->shards > CACHE_MAX_SHARDS ||
            cfg->max_entries < cfg->shards || cfg->max_bytes < cfg->shards)
            return -EINVAL;
    }
    return 0;
}

static void settings_store(struct cache *c, const struct cache_config *cfg)
{
    bool capped = false;
    /* Relaxed: independent settings, read relaxed by sets. */
    atomic_store_explicit(&c->max_object_bytes, cfg->max_object_bytes, memory_order_relaxed);
    atomic_store_explicit(&c->max_ttl_ms, cfg->max_ttl_ms, memory_order_relaxed);
    atomic_store_explicit(&c->ttl_ms, cache_ttl_clamp(cfg->ttl_ms, cfg->max_ttl_ms, &capped),
                          memory_order_relaxed);
    atomic_store_explicit(&c->watermark, cfg->memory_watermark_bytes, memory_order_relaxed);
    if (cfg->memory_watermark_bytes == 0)
        atomic_store_explicit(&c->under_pressure, false, memory_order_relaxed);
}

int cache_reconfigure(struct cache *c, const struct cache_config *cfg)
{
    if (c == NULL || cfg == NULL || config_check(cfg) != 0)
        return -EINVAL;
    const struct cache_config *was = &c->created;
    if (cfg->max_bytes != was->max_bytes || cfg->max_entries != was->max_entries ||
        cfg->shards != was->shards || cfg->stale_ms != was->stale_ms)
        return -EINVAL;
    settings_store(c, cfg);
    return 0;
}

static uint32_t shards_auto(const struct cache_config *cfg)
{
    /* 16 shards let a handful of workers set different keys without meeting
     * on one mutex (gets take none); fewer when a shard would hold fewer
     * than 64 entries, or when a maximal object would take more than half a
     * shard's bytes (so that it fits, with its header, the tables, the
     * retire reserve and jemalloc's rounding, without flushing the whole
     * shard). */
    uint32_t n = 16;
    while (n > 1 && (cfg->max_entries / n < 64 || cfg->max_bytes / n / 2 < cfg->max_object_bytes))
        n /= 2;
    return n;
}

/* Allocate in the cache arena and add the block's size to the overhead. */
static void *overhead_alloc(struct cache *c, size_t size, int extra_flags, uint64_t *size_out)
{
    void *p = mallocx(size, c->flags | extra_flags);
    if (p == NULL)
        return NULL;
    size_t got = sallocx(p, 0);
    c->overhead_bytes += got;
    if (size_out != NULL)
        *size_out = got;
    return p;
}

static int shard_init(struct cache *c, struct cache_shard *s, uint64_t max_entries,
                      uint64_t max_bytes)
{
    /* All-zero bytes are a valid zero for the _Atomic counters on every
     * platform we build for; no thread can see the shard yet. */
    memset(s, 0, sizeof(*s));
    s->max_entries = max_entries;
    /* One bucket per entry at the entry bound (load factor <= 1), but never
     * more than half the entries the bytes could hold if every entry had the
     * smallest possible size (an empty key and value), so that a huge
     * max_entries cannot buy a table larger than the bytes: the table then
     * takes at most ~10% of them, and the load factor stays <= 2 even in
     * that corner (real entries, with a type and a reply, are larger). */
    uint64_t min_entry = nallocx(node_offset(0, 0, 0) + sizeof(struct cache_node), c->flags);
    uint64_t reachable = max_bytes / (min_entry != 0 ? min_entry : 1) / 2;
    uint64_t nbuckets = pow2_ceil(reachable < max_entries ? reachable : max_entries);
    uint64_t table = 0, snap = 0;
    s->buckets = overhead_alloc(c, (size_t)nbuckets * sizeof(*s->buckets), MALLOCX_ZERO, &table);
    s->snap = overhead_alloc(c, sizeof(*s->snap), 0, &snap);
    int rc = -ENOMEM;
    if (s->buckets == NULL || s->snap == NULL)
        goto err;
    s->bucket_mask = nbuckets - 1;
    /* The tables are paid out of the shard's bytes (0 left: every set is
     * -E2BIG; a configuration that small is a test's). */
    s->max_bytes = max_bytes > table + snap ? max_bytes - table - snap : 0;
    /* Room for retired entries awaiting their grace period: 1/32 of the
     * shard's bytes is kept free of live entries for them. */
    s->reserve = s->max_bytes / 32;
    s->snap->n = 0;
    rc = -pthread_mutex_init(&s->lock, NULL);
    if (rc != 0)
        goto err;
    return 0;
err:
    if (s->buckets != NULL)
        dallocx(s->buckets, c->flags);
    if (s->snap != NULL)
        dallocx(s->snap, c->flags);
    return rc;
}

/* Only with no reader anywhere: frees linked and retired entries at once. */
static void shard_destroy(struct cache *c, struct cache_shard *s)
{
    struct cache_node *to_free = NULL;
    while (s->oldest != NULL)
        shard_unlink(s, s->oldest->entry);
    list_move(s->limbo, &to_free);
    list_move(s->pending, &to_free);
    free_list(c, to_free);
    pthread_mutex_destroy(&s->lock);
    dallocx(s->buckets, c->flags);
    dallocx(s->snap, c->flags);
}

/* The hash secret: random bytes from the kernel, never reused. */
static int secret_fill(unsigned char *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom(buf + got, len - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        got += (size_t)n;
    }
    return 0;
}

int cache_create(const struct cache_config *cfg, unsigned arena, struct cache **out)
{
    int rc = config_check(cfg);
    if (rc != 0)
        return rc;
    int flags = arena_flags(arena);
    struct cache *c = mallocx(sizeof(*c), flags | MALLOCX_ALIGN(CACHELINE) | MALLOCX_ZERO);
    if (c == NULL)
        return -ENOMEM;
    c->arena = arena;
    c->flags = flags;
    c->overhead_bytes = sallocx(c, 0);
    c->nshards = cfg->shards != 0 ? cfg->shards : shards_auto(cfg);
    c->shard_mask = c->nshards - 1;
    c->stale_ms = (uint64_t)cfg->stale_ms;
    c->created = *cfg;
    /* Not yet shared: generation 0 everywhere, no pressure until a refresh. */
    for (uint32_t i = 0; i < CACHE_GEN_SLOTS; i++)
        atomic_init(&c->gens[i], 0);
    atomic_init(&c->pressure_checks, 0);
    atomic_init(&c->process_allocated, 0);
    atomic_init(&c->under_pressure, false);
    settings_store(c, cfg);

    uint32_t ready = 0;
    bool rd_ready = false;
    struct reclaim_reader *readers = overhead_alloc(c, RECLAIM_MAX_READERS * sizeof(*readers),
                                                    MALLOCX_ALIGN(CACHELINE) | MALLOCX_ZERO, NULL);
    c->shards = overhead_alloc(c, c->nshards * sizeof(*c->shards), MALLOCX_ALIGN(CACHELINE), NULL);
    rc = -ENOMEM;
    if (readers == NULL || c->shards == NULL)
        goto err;
    rc = secret_fill(c->secret, sizeof(c->secret));
    if (rc != 0)
        goto err;
    rc = reclaim_domain_init(&c->rd, readers);
    if (rc != 0)
        goto err;
    rd_ready = true;
    for (; ready < c->nshards; ready++) {
        rc = shard_init(c, &c->shards[ready], cfg->max_entries / c->nshards,
                        cfg->max_bytes / c->nshards);
        if (rc != 0)
            goto err;
    }
    *out = c;
    return 0;
err:
    /* ready counts fully built shards; the failing one cleaned up itself. */
    for (uint32_t i = 0; i < ready; i++)
        shard_destroy(c, &c->shards[i]);
    if (rd_ready)
        reclaim_domain_destroy(&c->rd);
    if (c->shards != NULL)
        dallocx(c->shards, flags);
    if (readers != NULL)
        dallocx(readers, flags);
    dallocx(c, flags);
    return rc;
}

unsigned cache_arena(const struct cache *c)
{
    return c->arena;
}

void cache_free(struct cache *c)
{
    if (c == NULL)
        return;
    for (uint32_t i = 0; i < c->nshards; i++)
        shard_destroy(c, &c->shards[i]);
    int flags = c->flags;
    struct reclaim_reader *readers = c->rd.readers;
    reclaim_domain_destroy(&c->rd);
    dallocx(c->shards, flags);
    dallocx(readers, flags);
    dallocx(c, flags);
}
