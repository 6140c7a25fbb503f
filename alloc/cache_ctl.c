/*
 * cache_ctl.c - the cache's control side (the design is in cache.c):
 * construction and teardown, reconfiguration of the reloadable settings,
 * the memory-pressure refresh, cache_clear and the statistics.
 *
 * None of this is on a request path. The tables (buckets, snapshots, reader
 * slots, shards) are allocated in the cache's arena and counted as overhead,
 * so the arena's figure stays exact (see cache.c). cache_create and
 * cache_free must not race with anything; the rest is thread-safe as
 * cache.h says.
 */
#include "cache.h"
#include "cache_priv.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <sys/random.h>

#include "arena.h"
#include "reclaim.h"

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
                cache_count_dead(s, st);
            cache_shard_unlink(s, e);
        }
        s->hand = NULL;
        cache_shard_collect(c, s, true, &to_free);
        pthread_mutex_unlock(&s->lock);
        cache_free_list(c, to_free);
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
        cache_shard_unlink(s, s->oldest->entry);
    cache_list_move(s->limbo, &to_free);
    cache_list_move(s->pending, &to_free);
    cache_free_list(c, to_free);
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
