/*
 * cache.h - bounded, sharded response cache with SIEVE eviction, living in
 * its own jemalloc arena.
 *
 * What it stores: key = (backend, command type, canonical params bytes),
 * value = the backend's response bytes. Each entry is ONE allocation in the
 * cache arena (header + key + value), so the cache's byte count is the sum
 * of the sizes jemalloc actually handed out: the arena's `allocated` figure
 * equals bytes + retired_bytes + overhead_bytes (struct cache_stats).
 *
 * Bounds, enforced on every insert: entries <= max_entries, entry bytes
 * (live + retired) <= max_bytes, key+value <= max_object_bytes. Live entries
 * get max_bytes less a 1/32 reserve for retired ones. The cache is split into
 * `shards` independent shards and each shard gets max_entries/shards entries
 * and max_bytes/shards bytes, so the global bounds hold without a global lock
 * (remainders of the division are not used).
 *
 * TTL: every set's TTL is clamped to [CACHE_TTL_MIN_MS, max_ttl_ms] and the
 * expiry is now + ttl, saturating instead of overflowing (seed 000 BUG-006).
 * An entry is served only while now_ms < expiry and while its backend's
 * generation is the one it was stored under.
 *
 * Invalidation: cache_invalidate_backend bumps that backend's generation, in
 * O(1); older entries become invisible at once and are reclaimed lazily (by
 * the get that finds them, by the eviction hand, or by a set of the same
 * key), each counted once under `invalidations`.
 *
 * Thread safety: unless said otherwise, functions may be called concurrently
 * from any number of threads. Gets take no lock (see cache.c): each thread
 * that calls cache_get gets one of RECLAIM_MAX_READERS (128) reader slots of
 * this cache for the cache's life; threads beyond that still work, through
 * a per-shard mutex. cache_create/cache_free must not race with anything
 * else on the same cache.
 *
 * Time is always passed in (now_ms, a monotonic millisecond clock chosen by
 * the caller), so tests control it.
 */
#ifndef ALLOC_CACHE_H
#define ALLOC_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Defaults (SPEC "cache" keys, plus the two alloc-specific ones). */
#define CACHE_DEFAULT_MAX_BYTES        UINT64_C(67108864)
#define CACHE_DEFAULT_MAX_ENTRIES      UINT64_C(100000)
#define CACHE_DEFAULT_MAX_OBJECT_BYTES UINT64_C(8388608)
#define CACHE_DEFAULT_TTL_MS           INT64_C(5000)
#define CACHE_DEFAULT_MAX_TTL_MS       INT64_C(86400000)
#define CACHE_DEFAULT_MEMORY_WATERMARK UINT64_C(1073741824)

/* Hard limits on the configuration (cache_create returns -EINVAL beyond). */
#define CACHE_TTL_MIN_MS        INT64_C(1000)
#define CACHE_MAX_SHARDS        256u
#define CACHE_MAX_OBJECT_LIMIT  (UINT64_C(1) << 31)
#define CACHE_MAX_ENTRIES_LIMIT (UINT64_C(1) << 28)

/*
 * Backends map onto this many generation counters (backend % slots). Two
 * backends that share a slot invalidate each other: over-invalidation costs
 * hits, never correctness. Brokers configure a handful of backends.
 */
#define CACHE_GEN_SLOTS 1024u

/* The process-allocated figure is re-read at most this often by sets. */
#define CACHE_PRESSURE_CHECK_MS UINT64_C(100)

struct cache;

/* Borrowed bytes: the cache copies what it keeps. */
struct cache_key {
    uint32_t backend; /* backend index */
    const char *type; /* command name, not NUL-terminated, <= 65535 bytes */
    size_t type_len;
    const char *params; /* canonical params bytes as sent to the backend */
    size_t params_len;
};

struct cache_config {
    uint64_t max_bytes;              /* bound on entry bytes (>= 1) */
    uint64_t max_entries;            /* bound on entries (1..CACHE_MAX_ENTRIES_LIMIT) */
    uint64_t max_object_bytes;       /* cap on key + value bytes (1..CACHE_MAX_OBJECT_LIMIT) */
    int64_t ttl_ms;                  /* TTL used by cache_set (clamped like any TTL) */
    int64_t max_ttl_ms;              /* upper TTL clamp (>= CACHE_TTL_MIN_MS) */
    uint64_t memory_watermark_bytes; /* process allocated bytes; 0 = off */
    uint32_t shards;                 /* power of two <= CACHE_MAX_SHARDS; 0 = auto */
};

struct cache_stats {
    uint64_t entries;        /* linked entries (live, or dead and not yet reclaimed) */
    uint64_t bytes;          /* sum of jemalloc sizes of those entries */
    uint64_t retired_bytes;  /* unlinked, freed once no get can be reading them */
    uint64_t overhead_bytes; /* fixed: cache struct, shards, buckets, reader slots */
    uint64_t arena_bytes;    /* arena's allocated figure, read fresh: equals
                                bytes + retired_bytes + overhead_bytes when no
                                set or reclaim is running */
    uint64_t hits;
    uint64_t misses;
    uint64_t evictions;          /* live entries evicted for room (incl. pressure) */
    uint64_t expirations;        /* expired entries reclaimed */
    uint64_t invalidations;      /* entries reclaimed after their backend's bump */
    uint64_t ttl_capped;         /* sets whose TTL was outside [min, max] */
    uint64_t pressure_evictions; /* evictions beyond the bounds, under pressure */
    uint64_t sets;               /* entries inserted */
    uint64_t stale_sets;         /* sets refused: generation moved (-ESTALE) */
    uint64_t too_big;            /* sets refused: over the object cap (-E2BIG) */
    uint64_t alloc_failures;     /* sets refused: mallocx failed (-ENOMEM) */
    uint64_t pressure_checks;    /* times the process figure was read */
    uint64_t process_allocated;  /* figure seen by the last pressure check */
    bool under_pressure;         /* last check found allocated > watermark */
    uint64_t max_entries;        /* effective bounds: per-shard bound * shards */
    uint64_t max_bytes;
    uint32_t shards;
};

/*
 * Called by cache_get with the value while it is protected from being freed:
 * copy the bytes out and return. It must not keep the pointer, must not
 * block, and must not call into the cache (a set or clear from inside a sink
 * can wait for the sink's own read section to end: a deadlock). A negative
 * return is passed through by cache_get.
 */
typedef int (*cache_sink_fn)(void *arg, const void *value, size_t len);

/* Fill *cfg with the defaults above (shards = 0: auto). Touches only *cfg. */
void cache_config_default(struct cache_config *cfg);

/*
 * Create a cache whose every byte (entries, tables, the cache struct) is
 * allocated in jemalloc arena `arena` (from arena_create; the caller keeps
 * owning the arena and destroys it after cache_free). With cfg->shards == 0
 * the shard count starts at 16 and halves while a shard would hold fewer
 * than 64 entries or fewer than 2 * max_object_bytes bytes (defaults: 4
 * shards of 16 MiB, so an 8 MiB object always fits).
 * Returns 0 and *out, -EINVAL for a configuration outside the limits, or
 * -ENOMEM. Thread-safe (creates independent state).
 */
int cache_create(const struct cache_config *cfg, unsigned arena, struct cache **out);

/* The jemalloc arena the cache allocates in (for arena_stats_read). Pure. */
unsigned cache_arena(const struct cache *c);

/*
 * Free every entry and the cache itself; the arena's allocated figure returns
 * to what it was before cache_create. Accepts NULL. Only when no other call
 * on this cache is running or can start.
 */
void cache_free(struct cache *c);

/*
 * The key's 64-bit hash: XXH3_64bits_withSeed over the bytes type || params
 * with seed (type_len << 32) ^ backend. Pure.
 */
uint64_t cache_key_hash(const struct cache_key *key);

/*
 * TTL clamp and expiry, exposed for tests and for callers that report them.
 * cache_ttl_clamp maps any int64 (0, negative, INT64_MAX, ...) into
 * [CACHE_TTL_MIN_MS, max_ttl_ms] and sets *capped when it had to move it.
 * cache_expiry_ms returns now_ms + ttl_ms, or UINT64_MAX when that would
 * overflow (ttl_ms must already be clamped, i.e. positive). Pure.
 */
int64_t cache_ttl_clamp(int64_t ttl_ms, int64_t max_ttl_ms, bool *capped);
uint64_t cache_expiry_ms(uint64_t now_ms, int64_t ttl_ms);

/*
 * Look `key` up. On a hit, calls sink(arg, value, len) (unless sink is NULL:
 * a probe) and returns 0, or sink's return if negative. Returns -ENOENT on a
 * miss (absent, expired or invalidated); an expired or invalidated entry
 * found this way is reclaimed (under the shard mutex) before returning.
 * A hit takes one hash, no lock and no allocation, and writes no line that
 * another thread writes on its hits. Thread-safe; lock-free except the
 * first call of a thread (slot registration) and reclaiming a dead entry.
 */
int cache_get(struct cache *c, const struct cache_key *key, uint64_t now_ms, cache_sink_fn sink,
              void *arg);

/*
 * cache_get that copies into buf[cap]. Returns 0 with *len_out = value length,
 * -ENOBUFS with *len_out = the length needed when cap is too small (the
 * lookup still counts as a hit), or -ENOENT. Thread-safe, as cache_get.
 */
int cache_get_copy(struct cache *c, const struct cache_key *key, uint64_t now_ms, void *buf,
                   size_t cap, size_t *len_out);

/*
 * The backend's current generation. Read it BEFORE sending the request whose
 * answer will be cached and pass it to cache_set: if a mutating command on
 * that backend succeeds in between, the answer may predate the mutation and
 * the set is refused instead of caching stale data. Thread-safe, lock-free.
 */
uint64_t cache_generation(const struct cache *c, uint32_t backend);

/*
 * Store (a copy of) value under key with the configured TTL; replaces an
 * existing entry for the key. Evicts (SIEVE) until both bounds hold; under
 * memory pressure evicts further (see cache.c). `gen` is the value
 * cache_generation returned before the request was sent.
 * Returns 0, -E2BIG (key + value over max_object_bytes, type over 65535
 * bytes, or the entry larger than a shard's live-byte budget), -ESTALE (gen
 * is no longer current), -ENOMEM (mallocx failed; never aborts) or -EINVAL
 * (NULL arguments). Thread-safe: takes the key's shard mutex (sets of other
 * shards and all gets proceed); may wait for a grace period when retired
 * entries would break the byte bound or under memory pressure.
 */
int cache_set(struct cache *c, const struct cache_key *key, const void *value, size_t value_len,
              uint64_t gen, uint64_t now_ms);

/* cache_set with an explicit TTL, clamped (and counted in ttl_capped if so).
 * Thread-safe, as cache_set. */
int cache_set_ttl(struct cache *c, const struct cache_key *key, const void *value, size_t value_len,
                  int64_t ttl_ms, uint64_t gen, uint64_t now_ms);

/*
 * Make every entry of `backend` (and of backends sharing its generation slot)
 * invisible, in O(1). Call after a mutating command on it succeeded.
 * Thread-safe, lock-free (one atomic increment).
 */
void cache_invalidate_backend(struct cache *c, uint32_t backend);

/*
 * Remove every entry and free it before returning (not counted as
 * evictions). Thread-safe: locks one shard at a time and waits for gets that
 * may be reading its entries; must not be called from a sink.
 */
void cache_clear(struct cache *c);

/*
 * Re-read the process's allocated bytes now and update the pressure state.
 * Sets do this themselves at most every CACHE_PRESSURE_CHECK_MS; a periodic
 * timer or a test may force it. Returns 1 under pressure, 0 not (or the
 * watermark is 0), or -errno from jemalloc. Thread-safe (one mallctl epoch
 * refresh: tens of microseconds; not for a request path).
 */
int cache_pressure_refresh(struct cache *c);

/*
 * Snapshot every counter (each shard's entries/bytes read under its mutex,
 * counters summed) and read the arena figure fresh. Returns 0, or -errno
 * from jemalloc with every other field still filled (arena_bytes then 0).
 * Thread-safe; the sums are not one atomic snapshot across shards.
 */
int cache_stats_read(struct cache *c, struct cache_stats *out);

#endif /* ALLOC_CACHE_H */
