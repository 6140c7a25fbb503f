/*
 * test_cache.c - the bounded SIEVE cache.
 *
 * Each test runs in its own process (Criterion forks), on a fresh jemalloc
 * arena; the fixture checks on the way out that cache_free returned the
 * arena to zero bytes (no leak, whatever the test did).
 *
 * The property test replays random operations against a model that knows,
 * for every key, the last value stored, its expiry and the generation it was
 * stored under. The cache may have evicted anything, but whatever it serves
 * must be exactly that last value, unexpired (or, for cache_get_stale, within
 * the stale window) and of the current generation; and after every operation
 * the bounds hold and the byte count is exact.
 *
 * Issue 15's defects each have a test below that fails on the code before the
 * fix (named in the test's comment).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <xxhash.h>

#include "arena.h"
#include "cache.h"
#include "reclaim.h"
#include "stress_expect.h"

static unsigned g_arena;
static struct cache *g_cache;

static void arena_setup(void)
{
    cr_assert_eq(arena_create(&g_arena), 0);
}

static uint64_t arena_bytes(void)
{
    uint64_t v = 0;
    cr_assert_eq(arena_allocated(g_arena, &v), 0);
    return v;
}

static void arena_teardown(void)
{
    cache_free(g_cache);
    g_cache = NULL;
    cr_expect_eq(arena_bytes(), 0, "cache_free left bytes in the arena");
    cr_expect_eq(arena_destroy(g_arena), 0);
}

static struct cache_config small_config(uint64_t max_entries, uint64_t max_bytes, uint32_t shards)
{
    struct cache_config cfg;
    cache_config_default(&cfg);
    cfg.max_entries = max_entries;
    cfg.max_bytes = max_bytes;
    cfg.max_object_bytes = 1 << 16;
    cfg.shards = shards;
    cfg.memory_watermark_bytes = 0;
    return cfg;
}

static struct cache *make_cfg(const struct cache_config *cfg)
{
    cr_assert_eq(cache_create(cfg, g_arena, &g_cache), 0);
    return g_cache;
}

static struct cache *make(uint64_t max_entries, uint64_t max_bytes, uint32_t shards)
{
    struct cache_config cfg = small_config(max_entries, max_bytes, shards);
    return make_cfg(&cfg);
}

static struct cache_key key_of(uint32_t backend, const char *type, const char *params)
{
    struct cache_key k = {
        .backend = backend,
        .type = type,
        .type_len = strlen(type),
        .params = params,
        .params_len = strlen(params),
    };
    return k;
}

static int put(struct cache *c, uint32_t backend, const char *params, const char *value,
               int64_t ttl_ms, uint64_t now)
{
    struct cache_key k = key_of(backend, "get_object_info", params);
    return cache_set_ttl(c, &k, value, strlen(value), ttl_ms, cache_generation(c, backend), now);
}

/* Returns 1 and checks the value on a hit, 0 on a miss. */
static int hit(struct cache *c, uint32_t backend, const char *params, const char *want,
               uint64_t now)
{
    struct cache_key k = key_of(backend, "get_object_info", params);
    char buf[256];
    size_t len = 0;
    int rc = cache_get_copy(c, &k, now, buf, sizeof(buf), &len, NULL);
    if (rc == -ENOENT)
        return 0;
    cr_assert_eq(rc, 0, "get failed: %d", rc);
    if (want != NULL) {
        cr_assert_eq(len, strlen(want));
        cr_assert(memcmp(buf, want, len) == 0, "wrong value for %s", params);
    }
    return 1;
}

static struct cache_stats stats(struct cache *c)
{
    struct cache_stats s;
    cr_assert_eq(cache_stats_read(c, &s), 0);
    return s;
}

/* The cache's figure and the allocator's must agree to the byte. */
static void expect_exact(struct cache *c)
{
    struct cache_stats s = stats(c);
    cr_expect_eq(s.arena_bytes, s.bytes + s.retired_bytes + s.overhead_bytes,
                 "arena %lu != entries %lu + retired %lu + overhead %lu",
                 (unsigned long)s.arena_bytes, (unsigned long)s.bytes,
                 (unsigned long)s.retired_bytes, (unsigned long)s.overhead_bytes);
}

TestSuite(cache, .init = arena_setup, .fini = arena_teardown);
TestSuite(reclaim);

Test(cache, config_defaults_and_limits)
{
    struct cache_config cfg;
    cache_config_default(&cfg);
    cr_expect_eq(cfg.max_bytes, 67108864);
    cr_expect_eq(cfg.max_entries, 100000);
    cr_expect_eq(cfg.ttl_ms, 5000);
    cr_expect_eq(cfg.max_ttl_ms, 86400000);
    cr_expect_eq(cfg.max_object_bytes, 8388608);
    cr_expect_eq(cfg.memory_watermark_bytes, 1073741824);
    cr_expect_eq(cfg.stale_ms, 0, "serve-stale is off by default");

    struct cache_config bad = cfg;
    struct cache *c = NULL;
    bad.max_entries = 0;
    cr_expect_eq(cache_create(&bad, g_arena, &c), -EINVAL);
    bad = cfg;
    bad.max_bytes = 0;
    cr_expect_eq(cache_create(&bad, g_arena, &c), -EINVAL);
    bad = cfg;
    bad.max_ttl_ms = 999;
    cr_expect_eq(cache_create(&bad, g_arena, &c), -EINVAL);
    bad = cfg;
    bad.shards = 3;
    cr_expect_eq(cache_create(&bad, g_arena, &c), -EINVAL);
    bad = cfg;
    bad.max_object_bytes = CACHE_MAX_OBJECT_LIMIT + 1;
    cr_expect_eq(cache_create(&bad, g_arena, &c), -EINVAL);
    bad = cfg;
    bad.stale_ms = -1;
    cr_expect_eq(cache_create(&bad, g_arena, &c), -EINVAL);
    bad.stale_ms = CACHE_MAX_STALE_MS + 1;
    cr_expect_eq(cache_create(&bad, g_arena, &c), -EINVAL);
    cr_expect_eq(arena_bytes(), 0, "a refused create must not leave memory behind");

    /* Defaults: 64 MiB, 8 MiB objects -> 4 shards of 16 MiB. */
    cr_assert_eq(cache_create(&cfg, g_arena, &g_cache), 0);
    struct cache_stats s = stats(g_cache);
    cr_expect_eq(s.shards, 4);
    cr_expect_leq(s.max_entries, 100000);
    cr_expect_leq(s.max_bytes, 67108864);
    cr_expect_eq(s.overhead_bytes, s.arena_bytes, "all overhead is in the arena");
    cr_expect_eq(cache_arena(g_cache), g_arena);

    /* A maximal object (key + value == max_object_bytes) is accepted; one
     * byte more is not. */
    static char big[8388608];
    struct cache_key k = key_of(0, "get_viewport_screenshot", "{}");
    size_t vlen = sizeof(big) - k.type_len - k.params_len;
    cr_expect_eq(cache_set(g_cache, &k, big, vlen, 0, 0), 0);
    cr_expect_eq(cache_get(g_cache, &k, 1, NULL, NULL, NULL), 0);
    cr_expect_eq(cache_set(g_cache, &k, big, vlen + 1, 0, 0), -E2BIG);
    expect_exact(g_cache);
}

Test(cache, set_get_replace_miss)
{
    struct cache *c = make(100, 1 << 20, 1);
    cr_expect_eq(hit(c, 0, "{\"name\":\"Cube\"}", NULL, 0), 0);
    cr_assert_eq(put(c, 0, "{\"name\":\"Cube\"}", "cube-v1", 5000, 0), 0);
    cr_expect_eq(hit(c, 0, "{\"name\":\"Cube\"}", "cube-v1", 10), 1);
    cr_assert_eq(put(c, 0, "{\"name\":\"Cube\"}", "cube-v2", 5000, 10), 0);
    cr_expect_eq(hit(c, 0, "{\"name\":\"Cube\"}", "cube-v2", 20), 1);
    /* Same params, other backend or other type: different keys. */
    cr_expect_eq(hit(c, 1, "{\"name\":\"Cube\"}", NULL, 20), 0);
    struct cache_key k = key_of(0, "get_scene_info", "{\"name\":\"Cube\"}");
    cr_expect_eq(cache_get(c, &k, 20, NULL, NULL, NULL), -ENOENT);
    /* The type/params boundary is part of the key. */
    struct cache_key a = key_of(0, "ab", "c");
    struct cache_key b = key_of(0, "a", "bc");
    cr_assert_eq(cache_set(c, &a, "A", 1, 0, 0), 0);
    cr_expect_eq(cache_get(c, &b, 0, NULL, NULL, NULL), -ENOENT);

    struct cache_stats s = stats(c);
    cr_expect_eq(s.entries, 2, "a replaced entry is not kept");
    cr_expect_eq(s.hits, 2);
    cr_expect_eq(s.misses, 4);
    cr_expect_eq(s.evictions, 0);
    expect_exact(c);
}

Test(cache, empty_params_and_value)
{
    struct cache *c = make(10, 1 << 20, 1);
    struct cache_key k = {
        .backend = 3, .type = "ping", .type_len = 4, .params = NULL, .params_len = 0};
    cr_assert_eq(cache_set(c, &k, NULL, 0, cache_generation(c, 3), 0), 0);
    char buf[4];
    size_t len = 99;
    cr_expect_eq(cache_get_copy(c, &k, 1, buf, sizeof(buf), &len, NULL), 0);
    cr_expect_eq(len, 0);
}

/* A hash computed in a child process, by a cache created there. */
static uint64_t hash_in_child(const struct cache_key *k)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        struct cache_config cfg = small_config(100, 1 << 20, 1);
        struct cache *c = NULL;
        uint64_t h = 0;
        if (cache_create(&cfg, g_arena, &c) == 0)
            h = cache_key_hash(c, k);
        _exit(write(fds[1], &h, sizeof(h)) == (ssize_t)sizeof(h) ? 0 : 1);
    }
    uint64_t h = 0;
    cr_assert_eq(read(fds[0], &h, sizeof(h)), (ssize_t)sizeof(h));
    int status = 0;
    waitpid(pid, &status, 0);
    close(fds[0]);
    close(fds[1]);
    return h;
}

/*
 * Issue 15, 1 (hash flooding): the key hash is keyed by a secret that each
 * cache draws when created, so two caches - in one process or in two - place
 * the same key differently, and the bucket of a key cannot be computed
 * offline. Within one cache it is stable, and the backend and the type/params
 * boundary are part of the key, for short (one-shot) and long (streamed) keys.
 * Before the fix: one public seed, the same hash in every process.
 */
Test(cache, key_hash_is_keyed_per_cache)
{
    struct cache *c = make(100, 1 << 20, 1);
    struct cache_config cfg = small_config(100, 1 << 20, 1);
    struct cache *other = NULL;
    cr_assert_eq(cache_create(&cfg, g_arena, &other), 0);
    static char cat[700];
    int n = 0, differ = 0;
    for (size_t len = 0; len < 600; len += 37) {
        memcpy(cat, "get_scene_info", 14);
        for (size_t i = 0; i < len; i++)
            cat[14 + i] = (char)('a' + (i * 7 + len) % 26);
        struct cache_key k = {
            .backend = 9, .type = cat, .type_len = 14, .params = cat + 14, .params_len = len};
        uint64_t h = cache_key_hash(c, &k);
        cr_expect_eq(cache_key_hash(c, &k), h, "stable within a cache (%zu bytes)", len);
        differ += cache_key_hash(other, &k) != h;
        n++;
        struct cache_key moved = k; /* same bytes, boundary one to the left */
        moved.type_len = 13;
        moved.params = cat + 13;
        moved.params_len = len + 1;
        cr_expect_neq(cache_key_hash(c, &moved), h, "boundary ignored (%zu bytes)", len);
        struct cache_key backend = k;
        backend.backend = 10;
        cr_expect_neq(cache_key_hash(c, &backend), h, "backend ignored (%zu bytes)", len);
    }
    cr_expect_eq(differ, n, "two caches hash %d of %d keys alike", n - differ, n);
    struct cache_key cube = key_of(0, "get_object_info", "{\"name\":\"Cube\"}");
    uint64_t here = cache_key_hash(c, &cube);
    uint64_t there = hash_in_child(&cube);
    cr_expect_neq(there, 0, "the child could not hash");
    cr_expect_neq(here, there, "another process computes the same hash");
    cache_free(other);
}

/*
 * Issue 15, 1 (chain walks): keys that share a bucket - whitespace variants
 * of one request, found here with the hash itself, as an attacker who knew
 * the secret could - cannot build a chain longer than CACHE_CHAIN_MAX, so no
 * get or set walks more than that. A full chain evicts its own oldest entry:
 * the newest CACHE_CHAIN_MAX keys are served. Before the fix: every variant
 * joined the one chain (4 * CACHE_CHAIN_MAX entries, walked by every get of
 * the last one).
 */
Test(cache, colliding_keys_keep_chains_bounded)
{
    enum { N = 4 * CACHE_CHAIN_MAX };
    struct cache *c = make(64, 1 << 20, 1);
    uint64_t mask = stats(c).buckets - 1; /* one shard: its bucket mask */
    static char params[N][64];
    uint64_t bucket = 0;
    uint32_t found = 0;
    for (uint32_t v = 0; found < N && v < (1u << 15); v++) {
        /* {"name":"Cube"} with 0..7 spaces at each of its 5 gaps. */
        char *p = params[found];
        int o = 0;
        const char *parts[] = {"{", "\"name\"", ":", "\"Cube\"", "}"};
        for (int g = 0; g < 5; g++)
            o +=
                snprintf(p + o, (size_t)(64 - o), "%s%*s", parts[g], (int)((v >> (3 * g)) & 7), "");
        struct cache_key k = key_of(0, "get_object_info", p);
        uint64_t b = cache_key_hash(c, &k) & mask;
        if (found == 0)
            bucket = b;
        if (b == bucket)
            found++;
    }
    cr_assert_eq(found, N, "only %u variants share a bucket", found);
    for (uint32_t i = 0; i < N; i++)
        cr_assert_eq(put(c, 0, params[i], params[i], 5000, i), 0);
    struct cache_stats s = stats(c);
    cr_expect_eq(s.entries, CACHE_CHAIN_MAX, "a chain of %lu entries", (unsigned long)s.entries);
    cr_expect_eq(s.chain_evictions, N - CACHE_CHAIN_MAX);
    cr_expect_eq(s.evictions, N - CACHE_CHAIN_MAX, "chain evictions are evictions");
    for (uint32_t i = 0; i < N; i++)
        cr_expect_eq(hit(c, 0, params[i], params[i], N), i >= N - CACHE_CHAIN_MAX, "variant %u", i);
    /* Replacing a key of the full chain does not push another one out. */
    cr_assert_eq(put(c, 0, params[N - 1], "v2", 5000, N), 0);
    cr_expect_eq(stats(c).chain_evictions, N - CACHE_CHAIN_MAX);
    cr_expect_eq(hit(c, 0, params[N - 1], "v2", N), 1);
    cr_expect_eq(hit(c, 0, params[N - CACHE_CHAIN_MAX], params[N - CACHE_CHAIN_MAX], N), 1);
    expect_exact(c);
}

Test(cache, copy_buffer_too_small)
{
    struct cache *c = make(10, 1 << 20, 1);
    cr_assert_eq(put(c, 0, "{}", "0123456789", 5000, 0), 0);
    struct cache_key k = key_of(0, "get_object_info", "{}");
    char buf[4];
    size_t len = 0;
    cr_expect_eq(cache_get_copy(c, &k, 0, buf, sizeof(buf), &len, NULL), -ENOBUFS);
    cr_expect_eq(len, 10, "the needed length is reported");
    struct cache_stats s = stats(c);
    cr_expect_eq(s.hits, 0, "a copy that did not fit is not a hit");
    cr_expect_eq(s.misses, 0, "nor a miss");
}

/* BUG-006: any int64 TTL lands in [1 s, max_ttl_ms]; no arithmetic wraps. */
Test(cache, ttl_clamp_edges)
{
    const int64_t max = 86400000;
    static const struct {
        int64_t in, out;
        bool capped;
    } cases[] = {
        {0, 1000, true},
        {-1, 1000, true},
        {INT64_MIN, 1000, true},
        {999, 1000, true},
        {1000, 1000, false},
        {5000, 5000, false},
        {86400000, 86400000, false},
        {86400001, 86400000, true},
        {INT64_MAX, 86400000, true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool capped = !cases[i].capped;
        cr_expect_eq(cache_ttl_clamp(cases[i].in, max, &capped), cases[i].out, "ttl %ld",
                     (long)cases[i].in);
        cr_expect_eq(capped, cases[i].capped, "capped flag for ttl %ld", (long)cases[i].in);
    }
    /* A max below the minimum still yields the minimum, never less. */
    bool capped = false;
    cr_expect_eq(cache_ttl_clamp(INT64_MAX, 5, &capped), 1000);
    cr_expect_eq(cache_expiry_ms(0, 1000), 1000);
    cr_expect_eq(cache_expiry_ms(UINT64_MAX - 10, 1000), UINT64_MAX, "saturates");
    cr_expect_eq(cache_expiry_ms(UINT64_MAX, INT64_MAX), UINT64_MAX);
    cr_expect_eq(cache_expiry_ms(5, -7), 5, "an unclamped negative never moves expiry back");
}

Test(cache, ttl_behaviour)
{
    struct cache_config cfg;
    cache_config_default(&cfg);
    cfg.max_ttl_ms = 60000;
    cfg.memory_watermark_bytes = 0;
    cr_assert_eq(cache_create(&cfg, g_arena, &g_cache), 0);
    struct cache *c = g_cache;
    const uint64_t t0 = 1000000;

    /* 0 and negative: kept one second exactly. */
    cr_assert_eq(put(c, 0, "zero", "z", 0, t0), 0);
    cr_assert_eq(put(c, 0, "neg", "n", INT64_MIN, t0), 0);
    cr_expect_eq(hit(c, 0, "zero", "z", t0 + 999), 1);
    cr_expect_eq(hit(c, 0, "neg", "n", t0 + 999), 1);
    cr_expect_eq(hit(c, 0, "zero", NULL, t0 + 1000), 0, "served at its expiry");
    cr_expect_eq(hit(c, 0, "neg", NULL, t0 + 5000), 0);

    /* INT64_MAX: capped at max_ttl_ms, not "forever" and not wrapped into the past. */
    cr_assert_eq(put(c, 0, "max", "m", INT64_MAX, t0), 0);
    cr_expect_eq(hit(c, 0, "max", "m", t0 + 59999), 1);
    cr_expect_eq(hit(c, 0, "max", NULL, t0 + 60000), 0);

    /* At the end of the clock: saturates, stays servable, does not wrap. */
    cr_assert_eq(put(c, 0, "late", "l", INT64_MAX, UINT64_MAX - 5), 0);
    cr_expect_eq(hit(c, 0, "late", "l", UINT64_MAX - 1), 1);

    /* Default TTL from the config (5 s). */
    struct cache_key k = key_of(0, "get_scene_info", "{}");
    cr_assert_eq(cache_set(c, &k, "s", 1, 0, t0), 0);
    cr_expect_eq(cache_get(c, &k, t0 + 4999, NULL, NULL, NULL), 0);
    cr_expect_eq(cache_get(c, &k, t0 + 5000, NULL, NULL, NULL), -ENOENT);

    struct cache_stats s = stats(c);
    cr_expect_eq(s.ttl_capped, 4, "0, INT64_MIN and both INT64_MAX were capped");
    cr_expect_eq(s.expirations, 4, "each expired entry reclaimed once");
    cr_expect_eq(s.entries, 1);
    expect_exact(c);
}

Test(cache, invalidation_by_generation)
{
    struct cache *c = make(100, 1 << 20, 2);
    cr_assert_eq(put(c, 1, "a", "1a", 5000, 0), 0);
    cr_assert_eq(put(c, 1, "b", "1b", 5000, 0), 0);
    cr_assert_eq(put(c, 2, "a", "2a", 5000, 0), 0);
    uint64_t g1 = cache_generation(c, 1);

    cache_invalidate_backend(c, 1);
    cr_expect_neq(cache_generation(c, 1), g1);
    cr_expect_eq(hit(c, 1, "a", NULL, 1), 0, "invalidated entry served");
    cr_expect_eq(hit(c, 1, "b", NULL, 1), 0, "invalidated entry served");
    cr_expect_eq(hit(c, 2, "a", "2a", 1), 1, "other backend must keep its entries");

    /* An answer fetched before the invalidation must not be cached after it. */
    struct cache_key k = key_of(1, "get_object_info", "a");
    cr_expect_eq(cache_set(c, &k, "old", 3, g1, 2), -ESTALE);
    cr_expect_eq(hit(c, 1, "a", NULL, 2), 0);
    cr_assert_eq(put(c, 1, "a", "1a-new", 5000, 2), 0);
    cr_expect_eq(hit(c, 1, "a", "1a-new", 3), 1);

    /* Aliased slot: over-invalidation only, never a stale hit. */
    cr_assert_eq(put(c, 1 + CACHE_GEN_SLOTS, "x", "x", 5000, 3), 0);
    cache_invalidate_backend(c, 1);
    cr_expect_eq(hit(c, 1 + CACHE_GEN_SLOTS, "x", NULL, 4), 0);

    struct cache_stats s = stats(c);
    cr_expect_eq(s.invalidations, 3, "1a, 1b and the aliased x reclaimed");
    cr_expect_eq(s.stale_sets, 1);
    cr_expect_eq(s.entries, 2, "2a and the stale 1a-new (not yet reclaimed)");
    expect_exact(c);
}

Test(cache, eviction_hand_reclaims_dead_first)
{
    struct cache *c = make(4, 1 << 20, 1);
    cr_assert_eq(put(c, 7, "d0", "v", 5000, 0), 0);
    cr_assert_eq(put(c, 0, "l1", "v", 5000, 0), 0);
    cr_assert_eq(put(c, 0, "l2", "v", 5000, 0), 0);
    cr_assert_eq(put(c, 0, "l3", "v", 5000, 0), 0);
    cache_invalidate_backend(c, 7);
    cr_assert_eq(put(c, 0, "l4", "v", 5000, 1), 0);
    struct cache_stats s = stats(c);
    cr_expect_eq(s.invalidations, 1);
    cr_expect_eq(s.evictions, 0, "a dead entry was available: no live eviction");
    cr_expect_eq(s.entries, 4);
}

/* SIEVE: a visited entry survives the hand; the first unvisited one goes. */
Test(cache, sieve_keeps_visited)
{
    struct cache *c = make(4, 1 << 20, 1);
    const char *keys[] = {"a", "b", "c", "d"};
    for (int i = 0; i < 4; i++)
        cr_assert_eq(put(c, 0, keys[i], keys[i], 5000, 0), 0);
    cr_expect_eq(hit(c, 0, "a", "a", 1), 1);
    cr_expect_eq(hit(c, 0, "c", "c", 1), 1);
    cr_assert_eq(put(c, 0, "e", "e", 5000, 2), 0); /* hand: a (clear), b evicted */
    cr_expect_eq(hit(c, 0, "b", NULL, 3), 0);
    cr_expect_eq(hit(c, 0, "a", "a", 3), 1);
    cr_assert_eq(put(c, 0, "f", "f", 5000, 4), 0); /* hand: c (clear), d evicted */
    cr_expect_eq(hit(c, 0, "d", NULL, 5), 0);
    cr_expect_eq(hit(c, 0, "c", "c", 5), 1);
    cr_expect_eq(hit(c, 0, "e", "e", 5), 1);
    cr_expect_eq(hit(c, 0, "f", "f", 5), 1);
    cr_expect_eq(stats(c).evictions, 2);
}

Test(cache, bounds_entries_bytes_and_object_cap)
{
    struct cache *c = make(1000, 8192, 1);
    char value[600];
    memset(value, 'v', sizeof(value) - 1);
    value[sizeof(value) - 1] = '\0';
    char params[32];
    for (int i = 0; i < 200; i++) {
        snprintf(params, sizeof(params), "{\"i\":%d}", i);
        cr_assert_eq(put(c, 0, params, value, 5000, 0), 0);
        struct cache_stats s = stats(c);
        cr_assert_leq(s.bytes + s.retired_bytes, 8192, "byte bound exceeded after insert %d", i);
    }
    struct cache_stats s = stats(c);
    cr_expect_gt(s.evictions, 0);
    expect_exact(c);

    /* key + value over max_object_bytes (64 KiB here). */
    static char huge[(1 << 16) + 1];
    memset(huge, 'h', sizeof(huge) - 1);
    cr_expect_eq(put(c, 0, "huge", huge, 5000, 0), -E2BIG);
    /* A type longer than 65535 bytes does not fit the entry header. */
    struct cache_key longtype = {
        .backend = 0, .type = huge, .type_len = 65536, .params = "", .params_len = 0};
    cr_expect_eq(cache_set(c, &longtype, "v", 1, 0, 0), -E2BIG);
    /* Under the object cap but larger than the shard's byte budget. */
    huge[9000] = '\0';
    cr_expect_eq(put(c, 0, "big", huge, 5000, 0), -E2BIG);
    cr_expect_eq(stats(c).too_big, 3);

    cache_free(c);
    g_cache = NULL;
    c = make(10, 1 << 20, 1);
    for (int i = 0; i < 100; i++) {
        snprintf(params, sizeof(params), "{\"i\":%d}", i);
        cr_assert_eq(put(c, 0, params, "x", 5000, 0), 0);
        cr_assert_leq(stats(c).entries, 10);
    }
    cr_expect_eq(stats(c).evictions, 90);
}

/* Insert N, compare with the allocator; clear; back to the baseline exactly. */
Test(cache, accounting_matches_arena)
{
    struct cache *c = make(5000, 64 << 20, 4);
    uint64_t baseline = arena_bytes();
    cr_expect_eq(stats(c).overhead_bytes, baseline);
    static char value[40000];
    memset(value, 'q', sizeof(value));
    char params[32];
    for (int i = 0; i < 3000; i++) {
        snprintf(params, sizeof(params), "{\"n\":%d}", i);
        /* Sizes spread over small and large size classes. */
        size_t len = (size_t)(i * 7919) % (i % 50 == 0 ? sizeof(value) : 700);
        struct cache_key k = key_of(0, "get_object_info", params);
        cr_assert_eq(cache_set(c, &k, value, len, 0, 0), 0);
    }
    struct cache_stats s = stats(c);
    cr_expect_eq(s.entries, 3000);
    cr_expect_eq(s.retired_bytes, 0, "nothing was unlinked");
    cr_expect_eq(s.arena_bytes - baseline, s.bytes, "cache says %lu, arena says %lu",
                 (unsigned long)s.bytes, (unsigned long)(s.arena_bytes - baseline));
    cache_clear(c);
    s = stats(c);
    cr_expect_eq(s.entries, 0);
    cr_expect_eq(s.bytes, 0);
    cr_expect_eq(s.retired_bytes, 0, "clear waits for readers and frees everything");
    cr_expect_eq(s.arena_bytes, baseline, "clear left %ld bytes", (long)(s.arena_bytes - baseline));
    cr_expect_eq(s.evictions, 0, "clear is not eviction");
}

Test(cache, memory_pressure_evicts_early)
{
    struct cache_config cfg;
    cache_config_default(&cfg);
    cfg.max_entries = 1000;
    cfg.max_bytes = 1 << 20;
    cfg.shards = 1;
    cfg.memory_watermark_bytes = UINT64_MAX; /* never reached */
    cr_assert_eq(cache_create(&cfg, g_arena, &g_cache), 0);
    struct cache *c = g_cache;
    char params[32];
    cr_expect_eq(cache_pressure_refresh(c), 0);
    for (int i = 0; i < 100; i++) {
        snprintf(params, sizeof(params), "%d", i);
        cr_assert_eq(put(c, 0, params, "value", 5000, 0), 0);
    }
    struct cache_stats s = stats(c);
    cr_expect_eq(s.entries, 100);
    cr_expect_eq(s.pressure_evictions, 0);
    cr_expect_not(s.under_pressure);
    cr_expect_eq(s.pressure_checks, 1, "only the refresh reads the figure");
    cache_free(c);
    g_cache = NULL;

    /* A watermark of one byte: the process is always above it. */
    cfg.memory_watermark_bytes = 1;
    cr_assert_eq(cache_create(&cfg, g_arena, &g_cache), 0);
    c = g_cache;
    cr_expect_eq(cache_pressure_refresh(c), 1);
    for (int i = 0; i < 100; i++) {
        snprintf(params, sizeof(params), "%d", i);
        cr_assert_eq(put(c, 0, params, "value", 5000, 0), 0);
    }
    s = stats(c);
    cr_expect(s.under_pressure);
    cr_expect_gt(s.process_allocated, 1);
    cr_expect_gt(s.pressure_evictions, 0, "no early eviction under pressure");
    cr_expect_leq(s.entries, 2, "under pressure every set must shrink the cache");
    cr_expect_eq(s.evictions, s.pressure_evictions, "bounds were never reached");
    expect_exact(c);

    /* A reload to watermark 0 ends the pressure at once. */
    cfg.memory_watermark_bytes = 0;
    cr_assert_eq(cache_reconfigure(c, &cfg), 0);
    cr_expect_not(stats(c).under_pressure);
    cr_expect_eq(cache_pressure_refresh(c), 0);
}

/*
 * Issue 15, 6: the set path never refreshes jemalloc's statistics (an epoch
 * write costs 12-290 us); it reads the state the last cache_pressure_refresh
 * left, and nothing before the first refresh. Before the fix: the first set,
 * then one set every 100 ms, did the refresh itself.
 */
Test(cache, sets_never_read_process_memory)
{
    struct cache_config cfg = small_config(1000, 1 << 20, 1);
    cfg.memory_watermark_bytes = 1; /* always above */
    struct cache *c = make_cfg(&cfg);
    char params[32];
    for (int i = 0; i < 50; i++) {
        snprintf(params, sizeof(params), "%d", i);
        cr_assert_eq(put(c, 0, params, "value", 5000, (uint64_t)i), 0);
    }
    struct cache_stats s = stats(c);
    cr_expect_eq(s.pressure_checks, 0, "a set read the process figure");
    cr_expect_not(s.under_pressure);
    cr_expect_eq(s.pressure_evictions, 0);
    cr_expect_eq(s.entries, 50);
    cr_expect_eq(cache_pressure_refresh(c), 1);
    cr_assert_eq(put(c, 0, "next", "value", 5000, 100), 0);
    s = stats(c);
    cr_expect_eq(s.pressure_checks, 1);
    cr_expect_gt(s.pressure_evictions, 0, "the set used the refreshed state");
}

/* ---- issue 15: the request path's contract --------------------------------- */

/* A sink that copies into a fixed buffer, or fails with a chosen code. */
struct test_sink {
    char buf[64];
    size_t len;
    int fail; /* returned instead of copying, when non-zero */
};

static int test_sink_fn(void *arg, const void *value, size_t len)
{
    struct test_sink *t = arg;
    t->len = len;
    if (t->fail != 0)
        return t->fail;
    if (len > sizeof(t->buf))
        return -ENOBUFS;
    memcpy(t->buf, value, len);
    return 0;
}

/* The generation token comes back from every lookup, read before it. */
Test(cache, get_returns_generation_token)
{
    struct cache *c = make(100, 1 << 20, 1);
    struct cache_key k = key_of(2, "get_object_info", "{}");
    uint64_t gen = 99;
    cache_invalidate_backend(c, 2);
    cr_expect_eq(cache_get(c, &k, 0, NULL, NULL, &gen), -ENOENT);
    cr_expect_eq(gen, cache_generation(c, 2), "a miss returns the generation");
    cr_assert_eq(cache_set(c, &k, "v", 1, gen, 0), 0);
    gen = 99;
    cr_expect_eq(cache_get(c, &k, 1, NULL, NULL, &gen), 0);
    cr_expect_eq(gen, cache_generation(c, 2), "so does a hit");
    size_t len = 0;
    gen = 99;
    char buf[4];
    cr_expect_eq(cache_get_copy(c, &k, 1, buf, sizeof(buf), &len, &gen), 0);
    cr_expect_eq(gen, cache_generation(c, 2));
    /* The token outlives a mutation: the late answer is refused. */
    uint64_t token = 0;
    struct cache_key miss = key_of(2, "get_object_info", "{\"a\":1}");
    cr_expect_eq(cache_get(c, &miss, 2, NULL, NULL, &token), -ENOENT);
    cache_invalidate_backend(c, 2);
    cr_expect_eq(cache_set(c, &miss, "late", 4, token, 3), -ESTALE);
    cr_expect_eq(cache_get(c, &miss, 4, NULL, NULL, NULL), -ENOENT);
}

/*
 * Issue 15, 2 (the contract, from one thread): A misses and keeps the token;
 * a mutation invalidates; B misses, fetches and fills; A's older answer
 * arrives last and must be refused, B's value still served, and nothing
 * evicted for A. This order passes on the code before the fix too (its early
 * check sees the moved generation); the race where A passed that check before
 * the invalidation is stress_cache_fill_race (tests/stress/stress_cache.c).
 */
Test(cache, late_fill_after_invalidation_keeps_fresh_value)
{
    struct cache *c = make(100, 1 << 20, 1);
    const char *cube = "{\"name\":\"Cube\"}";
    struct cache_key k = key_of(0, "get_object_info", cube);
    uint64_t g_a = 0, g_b = 0;
    cr_expect_eq(cache_get(c, &k, 0, NULL, NULL, &g_a), -ENOENT);
    cache_invalidate_backend(c, 0);
    cr_expect_eq(cache_get(c, &k, 1, NULL, NULL, &g_b), -ENOENT);
    cr_expect_neq(g_a, g_b);
    cr_assert_eq(cache_set(c, &k, "fresh", 5, g_b, 2), 0);
    cr_expect_eq(cache_set(c, &k, "stale", 5, g_a, 3), -ESTALE);
    cr_expect_eq(hit(c, 0, cube, "fresh", 4), 1);
    struct cache_stats s = stats(c);
    cr_expect_eq(s.stale_sets, 1);
    cr_expect_eq(s.sets, 1);
    cr_expect_eq(s.evictions + s.invalidations, 0);
}

/*
 * Issue 15, 3: cache_clear stops fills in flight. A request whose token was
 * read before an admin flush must not store its answer after it. Before the
 * fix: clear bumped no generation, the set returned 0 and was served.
 */
Test(cache, clear_refuses_fills_from_before)
{
    struct cache *c = make(100, 1 << 20, 2);
    struct cache_key k = key_of(1, "get_object_info", "{}");
    uint64_t before = 0, after = 0;
    cr_assert_eq(put(c, 1, "other", "o", 5000, 0), 0);
    cr_expect_eq(cache_get(c, &k, 0, NULL, NULL, &before), -ENOENT);
    cache_clear(c);
    cr_expect_eq(stats(c).entries, 0);
    cr_expect_eq(cache_set(c, &k, "old", 3, before, 1), -ESTALE, "fetched before the clear");
    cr_expect_eq(cache_get(c, &k, 2, NULL, NULL, &after), -ENOENT);
    cr_expect_neq(after, before);
    cr_expect_eq(cache_set(c, &k, "new", 3, after, 3), 0);
    cr_expect_eq(hit(c, 1, "{}", "new", 4), 1);
    /* Every backend's slot moved, not just the ones with entries. */
    struct cache_key k7 = key_of(7, "get_object_info", "{}");
    cr_expect_eq(cache_set(c, &k7, "x", 1, before, 5), -ESTALE);
    cache_clear(NULL);
}

/*
 * Issue 15, 4: bucket arrays are sized from the bytes and paid out of
 * max_bytes. cache.max_entries at its configured maximum (100,000,000) with
 * 64 MiB used to allocate 1 GiB of buckets outside the bound, leaving the
 * process above the default 1 GiB watermark for good. Now the tables and
 * the entry budget together stay within max_bytes (plus the fixed ~20 KiB of
 * cache struct and reader slots), and the default watermark is not reached.
 */
Test(cache, tables_count_against_max_bytes)
{
    struct cache_config cfg;
    cache_config_default(&cfg);
    cfg.max_entries = 100000000;
    struct cache *c = make_cfg(&cfg);
    struct cache_stats s = stats(c);
    cr_expect_leq(s.overhead_bytes + s.max_bytes, cfg.max_bytes + (64 << 10),
                  "tables %lu + entry budget %lu exceed max_bytes", (unsigned long)s.overhead_bytes,
                  (unsigned long)s.max_bytes);
    /* Load factor <= 2 even if every entry had the smallest size (80 bytes). */
    cr_expect_geq(s.buckets * 160, s.max_bytes, "too few buckets for the bytes");
    cr_expect_eq(cache_pressure_refresh(c), 0, "the cache's own tables pass the watermark");
    /* Still a working cache of about max_bytes. */
    cr_expect_gt(s.max_bytes, cfg.max_bytes / 2);
    cr_assert_eq(put(c, 0, "a", "value", 5000, 0), 0);
    cr_expect_eq(hit(c, 0, "a", "value", 1), 1);
    expect_exact(c);
}

/*
 * Issue 15, 4: the settings marked reloadable (ttl_ms, max_ttl_ms,
 * max_object_bytes, memory_watermark_bytes) have a setter; the ones that size
 * the cache are refused. Before the fix: no setter at all.
 */
Test(cache, reconfigure_applies_reloadable_settings)
{
    struct cache_config cfg = small_config(100, 1 << 20, 1);
    struct cache *c = make_cfg(&cfg);
    struct cache_key k = key_of(0, "get_object_info", "{}");
    cr_assert_eq(cache_set(c, &k, "v", 1, 0, 0), 0);
    cr_expect_eq(cache_get(c, &k, 4999, NULL, NULL, NULL), 0, "default TTL 5 s");

    struct cache_config next = cfg;
    next.ttl_ms = 2000;
    next.max_ttl_ms = 3000;
    next.max_object_bytes = 100;
    next.memory_watermark_bytes = 1;
    cr_assert_eq(cache_reconfigure(c, &next), 0);
    cr_assert_eq(cache_set(c, &k, "v", 1, 0, 10000), 0);
    cr_expect_eq(cache_get(c, &k, 11999, NULL, NULL, NULL), 0);
    cr_expect_eq(cache_get(c, &k, 12000, NULL, NULL, NULL), -ENOENT, "new ttl_ms");
    cr_expect_eq(put(c, 0, "{}", "v", 60000, 20000), 0);
    cr_expect_eq(cache_get(c, &k, 22999, NULL, NULL, NULL), 0);
    cr_expect_eq(cache_get(c, &k, 23000, NULL, NULL, NULL), -ENOENT, "new max_ttl_ms");
    static char big[200];
    memset(big, 'b', sizeof(big));
    cr_expect_eq(cache_set(c, &k, big, sizeof(big), 0, 30000), -E2BIG, "new max_object_bytes");
    cr_expect_eq(cache_pressure_refresh(c), 1, "new watermark");

    struct cache_config fixed = next;
    fixed.max_bytes = 2 << 20;
    cr_expect_eq(cache_reconfigure(c, &fixed), -EINVAL);
    fixed = next;
    fixed.stale_ms = 1000;
    cr_expect_eq(cache_reconfigure(c, &fixed), -EINVAL);
    fixed = next;
    fixed.max_ttl_ms = 10; /* outside the limits */
    fixed.ttl_ms = 100000;
    cr_expect_eq(cache_reconfigure(c, &fixed), -EINVAL);
    cr_assert_eq(cache_set(c, &k, "v", 1, 0, 40000), 0);
    cr_expect_eq(cache_get(c, &k, 41999, NULL, NULL, NULL), 0, "a refused reload changed the TTL");
    cr_expect_eq(cache_get(c, &k, 42000, NULL, NULL, NULL), -ENOENT);
}

/*
 * Issue 15, 5: every dead entry is counted once, whoever removes it: a set of
 * the same key, and cache_clear (expired by the shard's latest clock, or
 * invalidated). Live entries that are replaced or cleared are not counted.
 * Before the fix: both paths removed dead entries without counting them.
 */
Test(cache, dead_entries_replaced_or_cleared_are_counted)
{
    struct cache *c = make(100, 1 << 20, 1);
    cr_assert_eq(put(c, 0, "exp", "1", 1000, 0), 0);
    cr_assert_eq(put(c, 1, "inv", "1", 5000, 0), 0);
    cr_assert_eq(put(c, 0, "live", "1", 5000, 0), 0);
    cache_invalidate_backend(c, 1);
    cr_assert_eq(put(c, 0, "exp", "2", 5000, 2000), 0);  /* replaces an expired entry */
    cr_assert_eq(put(c, 1, "inv", "2", 5000, 2000), 0);  /* replaces an invalidated one */
    cr_assert_eq(put(c, 0, "live", "2", 5000, 2000), 0); /* replaces a live one */
    struct cache_stats s = stats(c);
    cr_expect_eq(s.expirations, 1);
    cr_expect_eq(s.invalidations, 1);
    cr_expect_eq(s.evictions, 0);

    cr_assert_eq(put(c, 0, "exp2", "1", 1000, 2000), 0);
    cr_assert_eq(put(c, 2, "inv2", "1", 9000, 2000), 0);
    cache_invalidate_backend(c, 2);
    cr_assert_eq(put(c, 0, "clock", "1", 9000, 4000), 0); /* shard clock: 4000 */
    cache_clear(c);
    s = stats(c);
    cr_expect_eq(s.expirations, 2, "exp2 expired at 3000, cleared at 4000");
    cr_expect_eq(s.invalidations, 2, "inv2 was invalidated before the clear");
    cr_expect_eq(s.evictions, 0, "live entries cleared are not evictions");
    cr_expect_eq(s.entries, 0);
}

/*
 * Issue 15, 5 and the contract's one-copy rule: a sink that runs out of room
 * learns the length, returns -ENOBUFS, and the lookup is not counted; the
 * retry is the one hit. Before the fix: two hits.
 */
Test(cache, sink_failure_is_not_a_hit)
{
    struct cache *c = make(10, 1 << 20, 1);
    cr_assert_eq(put(c, 0, "{}", "0123456789", 5000, 0), 0);
    struct cache_key k = key_of(0, "get_object_info", "{}");
    char small[4], big[16];
    size_t len = 0;
    cr_expect_eq(cache_get_copy(c, &k, 1, small, sizeof(small), &len, NULL), -ENOBUFS);
    cr_expect_eq(len, 10);
    cr_expect_eq(cache_get_copy(c, &k, 1, big, len, &len, NULL), 0);
    struct cache_stats s = stats(c);
    cr_expect_eq(s.hits, 1, "a retry after -ENOBUFS counted %lu hits", (unsigned long)s.hits);
    cr_expect_eq(s.misses, 0);
}

/*
 * Issue 15, 6: a sink's own -ENOENT is not mistaken for a miss (it becomes
 * -EIO), and counts nothing. Before the fix: -ENOENT came back as a miss.
 */
Test(cache, sink_enoent_is_not_a_miss)
{
    struct cache *c = make(10, 1 << 20, 1);
    cr_assert_eq(put(c, 0, "{}", "v", 5000, 0), 0);
    struct cache_key k = key_of(0, "get_object_info", "{}");
    struct test_sink t = {.fail = -ENOENT};
    cr_expect_eq(cache_get(c, &k, 1, test_sink_fn, &t, NULL), -EIO);
    t.fail = -EPIPE;
    cr_expect_eq(cache_get(c, &k, 1, test_sink_fn, &t, NULL), -EPIPE, "others pass through");
    t.fail = 0;
    cr_expect_eq(cache_get(c, &k, 1, test_sink_fn, &t, NULL), 0);
    cr_expect_eq(t.len, 1);
    struct cache_stats s = stats(c);
    cr_expect_eq(s.hits, 1);
    cr_expect_eq(s.misses, 0);
}

/*
 * Issue 15, 6: cache_get validates its key as cache_set does. Before the
 * fix: a NULL type with a length crashed in the hash.
 */
Test(cache, get_validates_key)
{
    struct cache *c = make(10, 1 << 20, 1);
    struct cache_key bad_type = {
        .backend = 0, .type = NULL, .type_len = 5, .params = "{}", .params_len = 2};
    struct cache_key bad_params = {
        .backend = 0, .type = "get", .type_len = 3, .params = NULL, .params_len = 2};
    struct cache_key ok = key_of(0, "get", "{}");
    uint64_t gen = 7;
    char buf[8];
    size_t len = 0;
    cr_expect_eq(cache_get(c, &bad_type, 0, NULL, NULL, &gen), -EINVAL);
    cr_expect_eq(gen, 0);
    cr_expect_eq(cache_get(c, &bad_params, 0, NULL, NULL, NULL), -EINVAL);
    cr_expect_eq(cache_get(c, NULL, 0, NULL, NULL, NULL), -EINVAL);
    cr_expect_eq(cache_get(NULL, &ok, 0, NULL, NULL, NULL), -EINVAL);
    cr_expect_eq(cache_get_copy(c, &bad_type, 0, buf, sizeof(buf), &len, NULL), -EINVAL);
    cr_expect_eq(cache_get_copy(c, &ok, 0, NULL, 8, &len, NULL), -EINVAL);
    cr_expect_eq(cache_get_stale(c, &bad_type, 0, NULL, NULL, NULL), -EINVAL);
    cr_expect_eq(cache_set(c, &bad_type, "v", 1, 0, 0), -EINVAL);
    struct cache_stats s = stats(c);
    cr_expect_eq(s.hits + s.misses, 0, "refused lookups are not counted");
}

/*
 * Serve-stale: with stale_ms, an expired entry is kept (gets neither serve
 * nor reclaim it) until expiry + stale_ms, and cache_get_stale serves it with
 * its age, counted apart. Invalidated entries are never served.
 */
Test(cache, serve_stale_window)
{
    struct cache_config cfg = small_config(100, 1 << 20, 1);
    cfg.stale_ms = 3000;
    struct cache *c = make_cfg(&cfg);
    struct cache_key k = key_of(0, "get_object_info", "{}");
    struct test_sink t = {.fail = 0};
    uint64_t age = 99;
    cr_assert_eq(put(c, 0, "{}", "old", 1000, 0), 0);
    cr_expect_eq(cache_get_stale(c, &k, 500, test_sink_fn, &t, &age), 0, "fresh");
    cr_expect_eq(age, 0);
    cr_expect_eq(cache_get(c, &k, 1500, NULL, NULL, NULL), -ENOENT, "expired for cache_get");
    cr_expect_eq(stats(c).entries, 1, "kept for the stale window");
    cr_expect_eq(cache_get_stale(c, &k, 1500, test_sink_fn, &t, &age), 0);
    cr_expect_eq(age, 500);
    cr_expect(t.len == 3 && memcmp(t.buf, "old", 3) == 0);
    cr_expect_eq(cache_get_stale(c, &k, 3999, NULL, NULL, &age), 0);
    cr_expect_eq(age, 2999);
    cr_expect_eq(cache_get_stale(c, &k, 4000, NULL, NULL, &age), -ENOENT, "window over");
    struct cache_stats s = stats(c);
    cr_expect_eq(s.stale_hits, 3);
    cr_expect_eq(s.hits, 0);
    cr_expect_eq(s.misses, 1);
    cr_expect_eq(s.entries, 0, "reclaimed past the window");
    cr_expect_eq(s.expirations, 1);

    /* A set over an entry in its window counts it expired; an invalidated
     * one is served by neither lookup. */
    cr_assert_eq(put(c, 0, "{}", "a", 1000, 10000), 0);
    cr_assert_eq(put(c, 0, "{}", "b", 1000, 11500), 0);
    cr_expect_eq(stats(c).expirations, 2);
    cache_invalidate_backend(c, 0);
    cr_expect_eq(cache_get_stale(c, &k, 11600, NULL, NULL, NULL), -ENOENT);
    cr_expect_eq(stats(c).invalidations, 1);
    cr_expect_eq(stats(c).stale_hits, 3, "stale misses are not counted");
}

Test(cache, serve_stale_off)
{
    struct cache *c = make(100, 1 << 20, 1);
    struct cache_key k = key_of(0, "get_object_info", "{}");
    cr_assert_eq(put(c, 0, "{}", "v", 1000, 0), 0);
    cr_expect_eq(cache_get_stale(c, &k, 999, NULL, NULL, NULL), 0, "fresh is served");
    cr_expect_eq(cache_get_stale(c, &k, 1000, NULL, NULL, NULL), -ENOENT);
    cr_expect_eq(stats(c).expirations, 1);
}

/* ---- property test -------------------------------------------------------- */

#define P_KEYS     300
#define P_BACKENDS 3

struct copy_arg {
    char *buf;
    size_t cap;
    size_t len;
};

static int copy_fn(void *arg, const void *value, size_t len)
{
    struct copy_arg *a = arg;
    a->len = len;
    if (len > a->cap)
        return -ENOBUFS;
    memcpy(a->buf, value, len);
    return 0;
}

struct model_entry {
    bool stored;
    uint32_t version;
    size_t len;
    uint64_t expires;
    uint64_t gen;
};

static uint64_t rng_next(uint64_t *s)
{
    /* splitmix64: fixed seeds make every failure reproducible. */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void fill_value(char *buf, size_t len, uint32_t key, uint32_t version)
{
    uint64_t s = ((uint64_t)key << 32) | version;
    for (size_t i = 0; i < len; i++)
        buf[i] = (char)(rng_next(&s) & 0xff);
}

static void property_run(uint64_t seed, uint32_t shards, uint64_t max_entries, uint64_t max_bytes,
                         int64_t stale_ms)
{
    struct cache_config cfg = small_config(max_entries, max_bytes, shards);
    cfg.stale_ms = stale_ms;
    struct cache *c = make_cfg(&cfg);
    struct cache_stats s0 = stats(c);
    static struct model_entry model[P_KEYS];
    static char value[3000];
    static char got[3000];
    memset(model, 0, sizeof(model));
    uint64_t rng = seed;
    uint64_t now = 1000;
    char params[32];
    uint64_t hits = 0;

    for (int op = 0; op < 20000; op++) {
        uint32_t kid = (uint32_t)(rng_next(&rng) % P_KEYS);
        uint32_t backend = kid % P_BACKENDS;
        snprintf(params, sizeof(params), "{\"k\":%u}", kid);
        struct cache_key k = key_of(backend, "get_object_info", params);
        struct model_entry *m = &model[kid];
        uint64_t r = rng_next(&rng) % 100;
        if (r < 45) {
            size_t len = 0;
            uint64_t age = 0;
            bool stale = stale_ms > 0 && r < 10;
            int rc;
            if (stale) {
                struct copy_arg ca = {got, sizeof(got), 0};
                rc = cache_get_stale(c, &k, now, copy_fn, &ca, &age);
                len = ca.len;
            } else {
                rc = cache_get_copy(c, &k, now, got, sizeof(got), &len, NULL);
            }
            if (rc == 0) {
                hits++;
                cr_assert(m->stored, "served a key never stored (op %d)", op);
                if (stale) {
                    cr_assert_lt(now, m->expires + (uint64_t)stale_ms,
                                 "served past the stale window (op %d)", op);
                    cr_assert_eq(age, now > m->expires ? now - m->expires : 0);
                } else {
                    cr_assert_lt(now, m->expires, "served expired data (op %d)", op);
                }
                cr_assert_eq(m->gen, cache_generation(c, backend),
                             "served invalidated data (op %d)", op);
                fill_value(value, m->len, kid, m->version);
                cr_assert_eq(len, m->len);
                cr_assert(memcmp(got, value, len) == 0, "wrong bytes (op %d)", op);
            } else {
                cr_assert_eq(rc, -ENOENT);
            }
        } else if (r < 85) {
            /* The token, as a request path gets it: from its lookup. */
            uint64_t gen = cache_generation(c, backend);
            if (r % 2 == 0) {
                uint64_t probe = ~gen;
                (void)cache_get(c, &k, now, NULL, NULL, &probe);
                cr_assert_eq(probe, gen);
            }
            /* Sometimes the answer raced a mutation: the set must be refused. */
            bool racing = rng_next(&rng) % 20 == 0;
            if (racing)
                cache_invalidate_backend(c, backend);
            size_t len = rng_next(&rng) % (rng_next(&rng) % 8 == 0 ? sizeof(value) : 200);
            int64_t ttl = (int64_t)(rng_next(&rng) % 8000) - 1000;
            uint32_t version = m->version + 1;
            fill_value(value, len, kid, version);
            int rc = cache_set_ttl(c, &k, value, len, ttl, gen, now);
            if (racing) {
                cr_assert_eq(rc, -ESTALE);
            } else {
                cr_assert_eq(rc, 0, "set failed: %d", rc);
                bool capped;
                *m = (struct model_entry){
                    .stored = true,
                    .version = version,
                    .len = len,
                    .expires = cache_expiry_ms(now, cache_ttl_clamp(ttl, 86400000, &capped)),
                    .gen = gen,
                };
            }
        } else if (r < 88) {
            cache_invalidate_backend(c, (uint32_t)(rng_next(&rng) % P_BACKENDS));
        } else if (r < 99) {
            now += rng_next(&rng) % 700;
        } else if (rng_next(&rng) % 10 == 0) {
            cache_clear(c);
        }
        struct cache_stats s = stats(c);
        cr_assert_leq(s.entries, max_entries, "entry bound exceeded (op %d)", op);
        cr_assert_leq(s.bytes + s.retired_bytes, max_bytes, "byte bound exceeded (op %d)", op);
        cr_assert_eq(s.arena_bytes, s.bytes + s.retired_bytes + s0.overhead_bytes,
                     "accounting drifted at op %d: arena %lu, cache %lu + %lu + %lu", op,
                     (unsigned long)s.arena_bytes, (unsigned long)s.bytes,
                     (unsigned long)s.retired_bytes, (unsigned long)s0.overhead_bytes);
    }
    cr_expect_gt(hits, 100, "the workload should produce hits (got %lu)", (unsigned long)hits);
}

Test(cache, property_single_shard)
{
    property_run(1, 1, 64, 16384, 0);
}

Test(cache, property_sharded)
{
    property_run(42, 4, 128, 65536, 0);
}

Test(cache, property_roomy)
{
    property_run(7, 2, 1000, 1 << 20, 0);
}

Test(cache, property_serve_stale)
{
    property_run(99, 2, 256, 1 << 18, 2000);
}

/* ---- concurrency (tests/stress/stress_cache.c; TSan runs it via stress_all) */

Test(cache_stress, storm_sharded, .timeout = 120)
{
    expect_stress(stress_cache_storm_sharded);
}

Test(cache_stress, storm_one_shard, .timeout = 120)
{
    expect_stress(stress_cache_storm_one_shard);
}

Test(cache_stress, storm_under_pressure, .timeout = 120)
{
    expect_stress(stress_cache_storm_pressure);
}

/* Issue 15, 2: a late fill never replaces a fresher one (see stress_cache.c;
 * declared here because stress.h is not part of this change). */

Test(cache_stress, late_fill_races_fresh_fill, .timeout = 120)
{
    expect_stress(stress_cache_fill_race);
}

/* More threads than reader slots: the rest fall back to the shard mutex. */
Test(cache_stress, more_threads_than_reader_slots, .timeout = 120)
{
    expect_stress(stress_cache_many_threads);
}

/* No leak after destroy, whatever is inside (the fixture checks zero). */
Test(cache, free_returns_arena_to_zero)
{
    struct cache *c = make(1000, 1 << 20, 0);
    char params[32];
    for (int i = 0; i < 500; i++) {
        snprintf(params, sizeof(params), "%d", i);
        cr_assert_eq(put(c, (uint32_t)i % 3, params, "some value bytes", 5000, 0), 0);
    }
    cache_invalidate_backend(c, 1);
    cr_expect_gt(arena_bytes(), 0);
    cache_free(NULL);
}

/* ---- reader slots and grace periods --------------------------------------- */

struct section_arg {
    struct reclaim_domain *d;
    atomic_int phase; /* 0 start, 1 inside, 2 may leave, 3 left */
};

static void *section_thread(void *p)
{
    struct section_arg *a = p;
    struct reclaim_reader *r = reclaim_reader_get(a->d);
    cr_assert_not_null(r);
    cr_assert(reclaim_enter(r));
    cr_assert_not(reclaim_enter(r), "a nested enter must be a no-op");
    atomic_store(&a->phase, 1);
    while (atomic_load(&a->phase) != 2)
        sched_yield();
    reclaim_exit(r);
    atomic_store(&a->phase, 3);
    return NULL;
}

/* A snapshot waits for exactly the readers inside when it was taken. */
Test(reclaim, snapshot_waits_for_readers_inside)
{
    static struct reclaim_reader readers[RECLAIM_MAX_READERS];
    static struct reclaim_snapshot snap;
    struct reclaim_domain d;
    cr_assert_eq(reclaim_domain_init(&d, readers), 0);
    cr_expect(reclaim_snapshot_take(&d, &snap), "no reader: already passed");

    struct section_arg a = {.d = &d};
    atomic_init(&a.phase, 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, section_thread, &a), 0);
    while (atomic_load(&a.phase) != 1)
        sched_yield();
    cr_expect_not(reclaim_snapshot_take(&d, &snap), "a reader is inside");
    cr_expect_not(reclaim_snapshot_passed(&d, &snap));
    atomic_store(&a.phase, 2);
    while (atomic_load(&a.phase) != 3)
        sched_yield();
    cr_expect(reclaim_snapshot_passed(&d, &snap), "the reader left");
    pthread_join(th, NULL);

    /* This thread registers too; a second lookup finds the same slot. */
    struct reclaim_reader *r = reclaim_reader_get(&d);
    cr_assert_not_null(r);
    cr_expect_eq(reclaim_reader_slow(&d), r);
    cr_expect_eq(atomic_load(&d.nreaders), 2);
    reclaim_stat_add(r, 0);
    reclaim_stat_add(r, 0);
    cr_expect_eq(reclaim_stat_sum(&d, 0), 2);
    reclaim_synchronize(&d, &snap);
    reclaim_domain_destroy(&d);
}
