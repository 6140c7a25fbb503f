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
 * bound, capped by the bytes (see shard_init in cache_ctl.c) and paid out of them.
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
 *
 * Files: this one holds the key hash, the generations, the get path and the
 * set path; cache_evict.c the writers' side of a shard (unlink, SIEVE
 * eviction, chain bound, grace-period collection, insert); cache_ctl.c
 * construction, reconfiguration, memory pressure, clear and statistics.
 * cache_priv.h is what they share.
 */
#include "cache.h"
#include "cache_priv.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#include "arena.h"
#include "reclaim.h"

/* Keys up to this many bytes (with the 8-byte header) are hashed in one call
 * from a stack copy; XXH3's short-input paths end at 240 bytes. */
#define KEY_HASH_STACK 240u
#define KEY_HASH_HDR   8u

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

/* ---- get ----------------------------------------------------------------- */

static inline void mark_visited(struct cache_entry *e)
{
    /* Test before set: a hot entry's line stays shared, not bounced between
     * cores. Relaxed: a hint for the hand (see shard_evict_one, cache_evict.c). */
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
        cache_shard_reclaim_dead(c, s, hash, key, now_ms);
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
    cache_shard_insert(c, s, e, now_ms, pressure);
    bool over = s->bytes + s->limbo_bytes + s->pending_bytes > s->max_bytes;
    cache_shard_collect(c, s, pressure || over, &to_free);
    pthread_mutex_unlock(&s->lock);
    ctr_add(&s->ctr.sets, 1);
    cache_free_list(c, to_free);
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
