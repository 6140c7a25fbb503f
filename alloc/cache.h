/*
 * cache.h - bounded, sharded response cache with SIEVE eviction, living in
 * its own jemalloc arena.
 *
 * What it stores: key = (backend, command type, params bytes), value = the
 * backend's response bytes. Each entry is ONE allocation in the cache arena
 * (header + key + value), so the cache's byte count is the sum of the sizes
 * jemalloc actually handed out: the arena's `allocated` figure equals
 * bytes + retired_bytes + overhead_bytes (struct cache_stats).
 *
 * Bounds, enforced on every insert: entries <= max_entries, entry bytes
 * (live + retired) plus the hash tables <= max_bytes, key+value <=
 * max_object_bytes. The cache is split into `shards` independent shards;
 * each gets max_entries/shards entries and max_bytes/shards bytes, out of
 * which it pays its own bucket array (sized from its byte budget, so a huge
 * max_entries does not allocate a huge table) and keeps 1/32 for retired
 * entries; so the global bounds hold without a global lock (remainders of
 * the division are not used). Not counted against max_bytes: the cache
 * struct (with the generation counters), the shard array and the reader
 * slots, about 28 KiB in all. Defaults: 4 shards, 131072 buckets (1 MiB).
 *
 * Hash flooding: keys are hashed with XXH3 under a 192-byte secret drawn
 * from getrandom() by each cache_create, so nobody outside the process can
 * compute which keys share a bucket or a shard. Should keys collide anyway,
 * no hash chain grows beyond CACHE_CHAIN_MAX: an insert into a full chain
 * evicts one of that chain's entries (counted in chain_evictions), so every
 * get and set walks at most that many entries.
 *
 * TTL: every set's TTL is clamped to [CACHE_TTL_MIN_MS, max_ttl_ms] and the
 * expiry is now + ttl, saturating instead of overflowing (seed 000 BUG-006).
 * An entry is served by cache_get only while now_ms < expiry and while its
 * backend's generation is the one it was stored under. With stale_ms > 0 an
 * expired entry is kept until expiry + stale_ms for cache_get_stale (see
 * there); cache_get never serves it.
 *
 * Invalidation: cache_invalidate_backend bumps that backend's generation, in
 * O(1); older entries become invisible at once and are reclaimed lazily (by
 * the get that finds them, by the eviction hand, by a set of the same key, by
 * a full chain or by cache_clear), each counted exactly once, under
 * `invalidations` (generation moved) or `expirations` (expired).
 *
 * The contract with a request path (the broker's, or any caller's):
 *   1. The generation is a token that travels with the request. A lookup
 *      returns it (cache_get's gen_out, read BEFORE the lookup, on a miss as
 *      on a hit); keep it with the request while it goes to the backend and
 *      pass that same value to cache_set when the answer comes back. Reading
 *      cache_generation() at completion time instead would accept an answer
 *      that predates a mutation that completed meanwhile.
 *   2. Invalidate (cache_invalidate_backend) whenever a mutating command may
 *      have reached the backend, whatever came back: success, an error
 *      answer, or no answer at all (timeout, connection reset or closed after
 *      any byte was sent - the outcome is unknown, so assume it took
 *      effect). Only a command never sent leaves the cache alone. Do it
 *      before the command's answer (or error) is delivered to the client, so
 *      that a client never reads, after seeing its write answered, a value
 *      cached before it.
 *   3. Never pass a reply that must not be cached to cache_set: the cache
 *      has no "do not store" TTL (0, negative and tiny TTLs are clamped to
 *      CACHE_TTL_MIN_MS, so a TTL of 0 still caches for a second).
 *   4. A hit costs one copy: the sink writes the stored bytes straight into
 *      their final place (e.g. the client's output buffer), in the form they
 *      were stored (store the client-ready form). The sink runs inside a
 *      read section: it must not allocate or block. It sees the length before
 *      it copies, so when its room is short it records the length in its
 *      `arg` and returns -ENOBUFS; the caller grows its buffer outside the
 *      section and looks up again. A lookup whose sink fails is not counted,
 *      so that retry counts one hit. (Growing the buffer ahead of time to a
 *      usual size avoids most second lookups.)
 *   5. Memory pressure is read only by cache_pressure_refresh, which is slow
 *      (a jemalloc epoch refresh, 10-300 us): call it from a timer, about
 *      every CACHE_PRESSURE_CHECK_MS, on one thread; sets only read the state
 *      it left.
 *   6. Keys are compared byte for byte: params written two ways (whitespace,
 *      key order) are two entries. Harmless for correctness, but a client
 *      can multiply entries that way; key on a canonical form if it matters.
 *
 * Thread safety: unless said otherwise, functions may be called concurrently
 * from any number of threads. Gets take no lock (see cache.c). Limits:
 *   - reader slots: each distinct thread that ever looks up in a cache takes
 *     one of RECLAIM_MAX_READERS (256) slots for the cache's lifetime (a
 *     thread that exits leaves its slot to a later thread only if that one
 *     reuses its TLS block). Threads beyond that still work, correctly, but
 *     read under the shard mutex (hits then serialise per shard). Long-lived
 *     worker threads, up to 256 of them, are the intended readers.
 *   - one cache per thread is fast: a thread remembers its slot for the last
 *     cache it read; a thread that alternates lookups between two caches
 *     takes a mutex and scans the slots at each switch.
 * cache_create/cache_free must not race with anything else on the same cache.
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
#define CACHE_DEFAULT_STALE_MS         INT64_C(0)

/* Hard limits on the configuration (cache_create returns -EINVAL beyond). */
#define CACHE_TTL_MIN_MS        INT64_C(1000)
#define CACHE_MAX_SHARDS        256u
#define CACHE_MAX_OBJECT_LIMIT  (UINT64_C(1) << 31)
#define CACHE_MAX_ENTRIES_LIMIT (UINT64_C(1) << 28)
#define CACHE_MAX_STALE_MS      INT64_C(86400000)

/* Longest hash chain: an insert into a full chain evicts from it. */
#define CACHE_CHAIN_MAX 8u

/*
 * Backends map onto this many generation counters (backend % slots). Two
 * backends that share a slot invalidate each other: over-invalidation costs
 * hits, never correctness. Brokers configure a handful of backends.
 */
#define CACHE_GEN_SLOTS 1024u

/* How often a timer should call cache_pressure_refresh (sets never do). */
#define CACHE_PRESSURE_CHECK_MS UINT64_C(100)

struct cache;

/* Borrowed bytes: the cache copies what it keeps. */
struct cache_key {
    uint32_t backend; /* backend index */
    const char *type; /* command name, not NUL-terminated; stored if <= 65535 bytes */
    size_t type_len;
    const char *params; /* params bytes as sent to the backend (NULL iff params_len 0) */
    size_t params_len;
};

struct cache_config {
    uint64_t max_bytes;              /* bound on entry bytes + tables (>= 1) */
    uint64_t max_entries;            /* bound on entries (1..CACHE_MAX_ENTRIES_LIMIT) */
    uint64_t max_object_bytes;       /* cap on key + value bytes (1..CACHE_MAX_OBJECT_LIMIT) */
    int64_t ttl_ms;                  /* TTL used by cache_set (clamped like any TTL) */
    int64_t max_ttl_ms;              /* upper TTL clamp (>= CACHE_TTL_MIN_MS) */
    uint64_t memory_watermark_bytes; /* jemalloc stats.allocated of the process; 0 = off */
    uint32_t shards;                 /* power of two <= CACHE_MAX_SHARDS; 0 = auto */
    int64_t stale_ms;                /* serve-stale window past expiry (0..CACHE_MAX_STALE_MS);
                                        0 = off */
};

struct cache_stats {
    uint64_t entries;            /* linked entries (live, or dead and not yet reclaimed) */
    uint64_t bytes;              /* sum of jemalloc sizes of those entries */
    uint64_t retired_bytes;      /* unlinked, freed once no get can be reading them */
    uint64_t overhead_bytes;     /* fixed: cache struct, shards, buckets, reader slots */
    uint64_t arena_bytes;        /* arena's allocated figure, read fresh: equals
                                    bytes + retired_bytes + overhead_bytes when no
                                    set or reclaim is running */
    uint64_t hits;               /* cache_get served (sink returned >= 0) */
    uint64_t misses;             /* cache_get found nothing servable */
    uint64_t stale_hits;         /* cache_get_stale served */
    uint64_t evictions;          /* live entries evicted for room (incl. pressure, chains) */
    uint64_t expirations;        /* expired entries reclaimed */
    uint64_t invalidations;      /* entries reclaimed after their backend's bump */
    uint64_t ttl_capped;         /* sets whose TTL was outside [min, max] */
    uint64_t pressure_evictions; /* evictions beyond the bounds, under pressure */
    uint64_t chain_evictions;    /* evictions because a hash chain was full */
    uint64_t sets;               /* entries inserted */
    uint64_t stale_sets;         /* sets refused: generation moved (-ESTALE) */
    uint64_t too_big;            /* sets refused: over the object cap (-E2BIG) */
    uint64_t alloc_failures;     /* sets refused: mallocx failed (-ENOMEM) */
    uint64_t pressure_checks;    /* times cache_pressure_refresh read the process figure */
    uint64_t process_allocated;  /* figure seen by the last pressure check */
    bool under_pressure;         /* last check found allocated > watermark */
    uint64_t max_entries;        /* effective bounds: per-shard bound * shards */
    uint64_t max_bytes;          /* bytes for entries: max_bytes less the tables */
    uint64_t buckets;            /* hash buckets, all shards */
    uint32_t shards;
};

/*
 * Called by cache_get/cache_get_stale with the value while it is protected
 * from being freed: copy the bytes out and return 0 (or any value >= 0). It
 * must not keep the pointer, must not block or allocate, and must not call
 * into the cache (a set or clear from inside a sink can wait for the sink's
 * own read section to end: a deadlock). A negative return is passed through
 * by the lookup (except -ENOENT, which becomes -EIO so that -ENOENT always
 * means a miss), and the lookup is then not counted.
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
 * shards of 16 MiB, so an 8 MiB object always fits). Draws a fresh hash
 * secret from getrandom().
 * Returns 0 and *out, -EINVAL for a configuration outside the limits,
 * -ENOMEM, or -errno from getrandom. Thread-safe (creates independent state).
 */
int cache_create(const struct cache_config *cfg, unsigned arena, struct cache **out);

/*
 * Apply the reloadable settings of cfg to a running cache: ttl_ms,
 * max_ttl_ms, max_object_bytes and memory_watermark_bytes. The others
 * (max_bytes, max_entries, shards, stale_ms) size the cache and must equal
 * what cache_create was given. Entries already stored keep their expiry; an
 * object cap raised past what a shard can hold still gets -E2BIG there.
 * Returns 0, or -EINVAL (cfg outside the limits, or a fixed field changed;
 * nothing is applied then). Thread-safe: concurrent sets see each new value
 * independently (a set may combine the old ttl_ms with the new max_ttl_ms).
 */
int cache_reconfigure(struct cache *c, const struct cache_config *cfg);

/* The jemalloc arena the cache allocates in (for arena_stats_read). Pure. */
unsigned cache_arena(const struct cache *c);

/*
 * Free every entry and the cache itself; the arena's allocated figure returns
 * to what it was before cache_create. Accepts NULL. Only when no other call
 * on this cache is running or can start.
 */
void cache_free(struct cache *c);

/*
 * The key's 64-bit hash in cache c: XXH3 under c's secret over backend,
 * type length, type and params. Equal keys hash equally within one cache;
 * two caches (two processes, two cache_create calls) disagree. Usable by a
 * caller that indexes the same keys (e.g. to coalesce misses) and must not
 * be floodable either. Pure; key must be valid (see cache_get).
 */
uint64_t cache_key_hash(const struct cache *c, const struct cache_key *key);

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
 * Look `key` up. First, *gen_out (unless gen_out is NULL) is set to the
 * backend's generation, read before the lookup, on every return (0 with
 * -EINVAL). On a miss, keep it with the request and give it to cache_set
 * when the backend's answer arrives (see "The contract" above).
 * On a hit, calls sink(arg, value, len) (unless sink is NULL: a probe) and
 * returns 0, or the sink's negative return (not counted as a hit: a retry
 * after -ENOBUFS counts once; a sink's -ENOENT is returned as -EIO).
 * Returns -ENOENT on a miss (absent, expired or invalidated); an expired
 * (beyond the stale window) or invalidated entry found this way is
 * reclaimed (under the shard mutex) before returning. -EINVAL when c or key
 * is NULL, or type/params is NULL with a non-zero length.
 * A hit takes one hash, walks at most CACHE_CHAIN_MAX entries, takes no lock
 * and allocates nothing, and writes no line that another thread writes on
 * its hits. Thread-safe; lock-free except the first call of a thread (slot
 * registration) and reclaiming a dead entry.
 */
int cache_get(struct cache *c, const struct cache_key *key, uint64_t now_ms, cache_sink_fn sink,
              void *arg, uint64_t *gen_out);

/*
 * cache_get that copies into buf[cap]. Returns 0 with *len_out = value
 * length, -ENOBUFS with *len_out = the length needed when cap is too small
 * (not counted as a hit), -ENOENT or -EINVAL (also for buf NULL with cap >
 * 0). len_out and gen_out may be NULL. Thread-safe, as cache_get.
 */
int cache_get_copy(struct cache *c, const struct cache_key *key, uint64_t now_ms, void *buf,
                   size_t cap, size_t *len_out, uint64_t *gen_out);

/*
 * Serve-stale lookup, for when the backend cannot answer (timeout, down):
 * a hit for an entry stored under the backend's current generation with
 * now_ms < expiry + stale_ms, i.e. fresh or expired less than stale_ms ago;
 * *age_ms_out (may be NULL) = how long past its expiry it is (0 if fresh).
 * Counted in stale_hits, not in hits or misses. -ENOENT otherwise (and
 * always with stale_ms 0 for an expired entry); same sink rules and errors
 * as cache_get. Invalidated entries are never served: a mutation makes its
 * backend's entries unservable, stale or not. Thread-safe, as cache_get.
 */
int cache_get_stale(struct cache *c, const struct cache_key *key, uint64_t now_ms,
                    cache_sink_fn sink, void *arg, uint64_t *age_ms_out);

/*
 * The backend's current generation. A request path gets it from cache_get
 * (gen_out) instead; this is for callers that skip the lookup. Read it
 * BEFORE sending the request whose answer will be cached and pass it to
 * cache_set: if a mutating command on that backend completes in between,
 * the answer may predate the mutation and the set is refused instead of
 * caching stale data. Thread-safe, lock-free.
 */
uint64_t cache_generation(const struct cache *c, uint32_t backend);

/*
 * Store (a copy of) value under key with the configured TTL; replaces an
 * existing entry for the key. Evicts (SIEVE) until both bounds hold; under
 * memory pressure evicts further (see cache.c). `gen` is the generation
 * read before the request was sent (cache_get's gen_out).
 * Returns 0, -E2BIG (key + value over max_object_bytes, type over 65535
 * bytes, or the entry larger than a shard's live-byte budget), -ESTALE (gen
 * is no longer current; checked again under the shard mutex, so a set that
 * raced an invalidation never replaces a newer fill), -ENOMEM (mallocx
 * failed; never aborts) or -EINVAL (NULL arguments).
 * Thread-safe: takes the key's shard mutex (sets of other shards and all gets
 * proceed); may wait for a grace period when retired entries would break the
 * byte bound or under memory pressure.
 */
int cache_set(struct cache *c, const struct cache_key *key, const void *value, size_t value_len,
              uint64_t gen, uint64_t now_ms);

/* cache_set with an explicit TTL, clamped (and counted in ttl_capped if so).
 * Thread-safe, as cache_set. */
int cache_set_ttl(struct cache *c, const struct cache_key *key, const void *value, size_t value_len,
                  int64_t ttl_ms, uint64_t gen, uint64_t now_ms);

/*
 * Make every entry of `backend` (and of backends sharing its generation slot)
 * invisible, in O(1), and refuse every set holding an older generation.
 * Call when a mutating command on it may have taken effect (contract, 2).
 * Thread-safe, lock-free (one atomic increment).
 */
void cache_invalidate_backend(struct cache *c, uint32_t backend);

/*
 * Drop everything: first bump every generation slot, so that fills in flight
 * (holding a generation read before this call) get -ESTALE and nothing
 * fetched before the clear is served after it; then remove every entry and
 * free it before returning. Live entries removed are not counted (not
 * evictions); entries that were already dead count as expirations (expired
 * by the shard's latest time seen by a set or a reclaim) or invalidations.
 * Accepts NULL. Thread-safe: locks one shard at a time and waits for gets
 * that may be reading its entries; must not be called from a sink.
 */
void cache_clear(struct cache *c);

/*
 * Re-read the process's allocated bytes (jemalloc stats.allocated, after an
 * epoch refresh) and update the pressure state that sets read. The only place
 * that reads the figure: call it from a timer about every
 * CACHE_PRESSURE_CHECK_MS (until the first call a cache is not under
 * pressure). Returns 1 under pressure, 0 not (or the watermark is 0: no
 * read), or -errno from jemalloc (state unchanged). Thread-safe (tens to
 * hundreds of microseconds: not for a request path).
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
