/*
 * cache_bench.c - our SIEVE cache against a plain LRU of the same capacity,
 * on the same Zipf(0.99) key trace, in the same run.
 *
 * Workload: KEYS distinct get_object_info keys, popularity Zipf(0.99) (the
 * skew web and object caches see; the SIEVE paper's traces), one fixed-seed
 * trace of TRACE requests, and a cache that holds CAPACITY entries (entries
 * bind; the byte bound is set well above). Values are 64..511 bytes.
 *
 * Per implementation and thread count, three kinds of timed pass over the
 * trace:
 *   1. cache-aside replay: get, and set on a miss -> hit_ratio, mixed_ops_per_s;
 *   2. gets only, on the warmed cache (4 times)   -> get_ops_per_s;
 *   3. sets only (replace or insert + evict)      -> set_ops_per_s.
 * Multi-threaded runs share one cache; each of N threads replays 1/N of the
 * trace from its own offset (so every run does the same total work), and
 * ops/s is total ops over the slowest thread's time.
 * Both implementations live side by side and the passes alternate between
 * them (see `schedule`); each configuration runs ROUNDS times from empty
 * caches, and the best throughput of each is reported (the machine is
 * shared; noise only ever slows a pass down) with the mean hit ratio.
 *
 * The LRU baseline is what a careful first version would be: one hash table,
 * one doubly-linked recency list, one mutex, a hit moves the entry to the
 * front, values copied out under the lock; it allocates before and frees
 * after the critical section, as ours does, and hashes like ours (XXH3 under
 * a secret), so the comparison is of policy and locking, not of plumbing.
 * One difference is deliberate and shows in set_ops_per_s: the LRU uses
 * malloc (jemalloc's default arena, with the thread cache), ours allocates
 * in its own arena without a thread cache so that its figures are exact.
 *
 * Allocator contention (the "cache_alloc" lines): sets from several workers
 * allocate and free in one arena without a thread cache. To see what that
 * costs apart from the cache's own work, each thread replays its part of the
 * trace as allocations alone - one block of the size the entry would have,
 * freeing the block allocated W steps earlier (a steady working set, as a
 * full cache evicts) - in four ways, interleaved in each round:
 *   shared:           the cache's way, one arena, MALLOCX_TCACHE_NONE;
 *   per_thread_arena: one arena per thread, no thread cache (exact figures
 *                     would need summing the arenas);
 *   shared_tcache:    one arena, an explicit thread cache per thread (the
 *                     arena's figure would count cached free blocks);
 *   malloc:           the default arena with jemalloc's automatic tcache (the
 *                     LRU's way).
 * The ratio threads=2 / threads=1 within a mode is its scaling; shared vs
 * per_thread_arena at 2 threads is the contention on the shared arena.
 *
 * Output: one JSON line per (impl, threads) and per (alloc mode, threads) on
 * stdout, nothing else.
 * Usage: cache_bench        (about 15-20 s on 2 shared vCPUs)
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "arena.h"
#include "cache.h"

#define KEYS      100000u
#define CAPACITY  10000u
#define TRACE     600000u
#define ROUNDS    2u
#define ZIPF_S    0.99
#define SEED      UINT64_C(0x5eed2024)
#define PARAMS_W  24 /* fixed-width params slot per key */
#define VALUE_MAX 512
#define TYPE      "get_object_info"

/* ---- workload ------------------------------------------------------------ */

static char g_params[KEYS][PARAMS_W];
static uint8_t g_params_len[KEYS];
static uint32_t *g_trace;
static char g_value[VALUE_MAX];
static unsigned char g_lru_secret[XXH3_SECRET_DEFAULT_SIZE];

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static size_t value_len(uint32_t key)
{
    return 64 + (size_t)((key * UINT32_C(2654435761)) >> 7) % (VALUE_MAX - 64);
}

static struct cache_key key_at(uint32_t key)
{
    struct cache_key k = {
        .backend = 0,
        .type = TYPE,
        .type_len = sizeof(TYPE) - 1,
        .params = g_params[key],
        .params_len = g_params_len[key],
    };
    return k;
}

/* Inverse-CDF sampling over a precomputed table: exact Zipf, fixed seed. */
static int workload_init(void)
{
    double *cdf = malloc(KEYS * sizeof(*cdf));
    g_trace = malloc(TRACE * sizeof(*g_trace));
    if (cdf == NULL || g_trace == NULL) {
        free(cdf);
        return -ENOMEM;
    }
    double sum = 0;
    for (uint32_t r = 0; r < KEYS; r++) {
        sum += 1.0 / pow((double)(r + 1), ZIPF_S);
        cdf[r] = sum;
    }
    uint64_t rng = SEED;
    for (uint32_t i = 0; i < TRACE; i++) {
        double u = (double)(splitmix(&rng) >> 11) * 0x1.0p-53 * sum;
        uint32_t lo = 0;
        uint32_t hi = KEYS - 1;
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (cdf[mid] < u)
                lo = mid + 1;
            else
                hi = mid;
        }
        g_trace[i] = lo;
    }
    free(cdf);
    for (uint32_t k = 0; k < KEYS; k++) {
        int n = snprintf(g_params[k], PARAMS_W, "{\"name\":\"obj_%06u\"}", k);
        g_params_len[k] = (uint8_t)n;
    }
    for (size_t i = 0; i < VALUE_MAX; i++)
        g_value[i] = (char)('a' + splitmix(&rng) % 26);
    for (size_t i = 0; i < sizeof(g_lru_secret); i++)
        g_lru_secret[i] = (unsigned char)splitmix(&rng);
    return 0;
}

/* ---- plain LRU baseline -------------------------------------------------- */

struct lru_entry {
    struct lru_entry *chain;
    struct lru_entry *prev; /* towards most recent */
    struct lru_entry *next; /* towards least recent */
    uint64_t hash;
    uint32_t backend;
    uint32_t type_len;
    uint32_t params_len;
    uint32_t value_len;
    char data[];
};

struct lru {
    pthread_mutex_t lock;
    struct lru_entry **buckets;
    uint64_t mask;
    struct lru_entry *mru;
    struct lru_entry *lru;
    uint64_t entries;
    uint64_t max_entries;
};

/*
 * The LRU's key hash costs what ours does: XXH3 under a secret over the same
 * [backend | type_len | type | params] bytes (ours draws its secret per cache;
 * the baseline's is fixed by the seed: the bench has no attacker).
 */

static uint64_t lru_hash(const struct cache_key *k)
{
    char buf[256];
    uint32_t tlen = (uint32_t)k->type_len;
    memcpy(buf, &k->backend, 4);
    memcpy(buf + 4, &tlen, 4);
    memcpy(buf + 8, k->type, k->type_len);
    memcpy(buf + 8 + k->type_len, k->params, k->params_len);
    return XXH3_64bits_withSecret(buf, 8 + k->type_len + k->params_len, g_lru_secret,
                                  sizeof(g_lru_secret));
}

static int lru_init(struct lru *l, uint64_t max_entries)
{
    uint64_t n = 1;
    while (n < max_entries)
        n <<= 1;
    memset(l, 0, sizeof(*l));
    l->buckets = calloc(n, sizeof(*l->buckets));
    if (l->buckets == NULL)
        return -ENOMEM;
    l->mask = n - 1;
    l->max_entries = max_entries;
    int rc = pthread_mutex_init(&l->lock, NULL);
    if (rc != 0) {
        free(l->buckets);
        return -rc;
    }
    return 0;
}

static void lru_destroy(struct lru *l)
{
    struct lru_entry *e = l->mru;
    while (e != NULL) {
        struct lru_entry *next = e->next;
        free(e);
        e = next;
    }
    free(l->buckets);
    pthread_mutex_destroy(&l->lock);
}

static struct lru_entry *lru_find(struct lru *l, uint64_t h, const struct cache_key *k)
{
    struct lru_entry *e = l->buckets[h & l->mask];
    while (e != NULL &&
           !(e->hash == h && e->backend == k->backend && e->type_len == k->type_len &&
             e->params_len == k->params_len && memcmp(e->data, k->type, k->type_len) == 0 &&
             memcmp(e->data + e->type_len, k->params, k->params_len) == 0))
        e = e->chain;
    return e;
}

static void lru_list_remove(struct lru *l, struct lru_entry *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        l->mru = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        l->lru = e->prev;
}

static void lru_list_push(struct lru *l, struct lru_entry *e)
{
    e->prev = NULL;
    e->next = l->mru;
    if (l->mru != NULL)
        l->mru->prev = e;
    l->mru = e;
    if (l->lru == NULL)
        l->lru = e;
}

static void lru_unlink(struct lru *l, struct lru_entry *e)
{
    struct lru_entry **pp = &l->buckets[e->hash & l->mask];
    while (*pp != e)
        pp = &(*pp)->chain;
    *pp = e->chain;
    lru_list_remove(l, e);
    l->entries--;
}

static int lru_get(struct lru *l, const struct cache_key *k, void *buf, size_t cap, size_t *len)
{
    uint64_t h = lru_hash(k);
    pthread_mutex_lock(&l->lock);
    struct lru_entry *e = lru_find(l, h, k);
    if (e == NULL) {
        pthread_mutex_unlock(&l->lock);
        return -ENOENT;
    }
    lru_list_remove(l, e); /* the write every LRU hit pays */
    lru_list_push(l, e);
    *len = e->value_len;
    int rc = e->value_len <= cap ? 0 : -ENOBUFS;
    if (rc == 0)
        memcpy(buf, e->data + e->type_len + e->params_len, e->value_len);
    pthread_mutex_unlock(&l->lock);
    return rc;
}

static int lru_set(struct lru *l, const struct cache_key *k, const void *v, size_t vlen)
{
    uint64_t h = lru_hash(k);
    struct lru_entry *n = malloc(sizeof(*n) + k->type_len + k->params_len + vlen);
    if (n == NULL)
        return -ENOMEM;
    n->hash = h;
    n->backend = k->backend;
    n->type_len = (uint32_t)k->type_len;
    n->params_len = (uint32_t)k->params_len;
    n->value_len = (uint32_t)vlen;
    memcpy(n->data, k->type, k->type_len);
    memcpy(n->data + k->type_len, k->params, k->params_len);
    memcpy(n->data + k->type_len + k->params_len, v, vlen);

    struct lru_entry *dead[2] = {NULL, NULL};
    pthread_mutex_lock(&l->lock);
    struct lru_entry *old = lru_find(l, h, k);
    if (old != NULL) {
        lru_unlink(l, old);
        dead[0] = old;
    } else if (l->entries >= l->max_entries) {
        dead[1] = l->lru;
        lru_unlink(l, l->lru);
    }
    struct lru_entry **b = &l->buckets[h & l->mask];
    n->chain = *b;
    *b = n;
    lru_list_push(l, n);
    l->entries++;
    pthread_mutex_unlock(&l->lock);
    free(dead[0]);
    free(dead[1]);
    return 0;
}

/* ---- the two implementations behind one interface ------------------------ */

enum impl { IMPL_OURS, IMPL_LRU };

struct target {
    enum impl impl;
    struct cache *cache;
    struct lru lru;
};

static int target_get(struct target *t, const struct cache_key *k, char *buf, size_t *len)
{
    if (t->impl == IMPL_OURS)
        return cache_get_copy(t->cache, k, 1000, buf, VALUE_MAX, len, NULL);
    return lru_get(&t->lru, k, buf, VALUE_MAX, len);
}

static int target_set(struct target *t, const struct cache_key *k, size_t vlen)
{
    if (t->impl == IMPL_OURS)
        return cache_set(t->cache, k, g_value, vlen, 0, 1000);
    return lru_set(&t->lru, k, g_value, vlen);
}

/* ---- runner -------------------------------------------------------------- */

enum pass { PASS_ASIDE, PASS_GET, PASS_SET, PASS_COUNT };

/*
 * Every worker runs the same schedule over both implementations, passes
 * separated by a barrier, so each pass of one is next in time to the same
 * pass of the other: a change in the machine's load hits both alike.
 */
static const struct step {
    enum impl impl;
    enum pass pass;
} schedule[] = {
    {IMPL_OURS, PASS_ASIDE}, {IMPL_LRU, PASS_ASIDE}, {IMPL_OURS, PASS_GET}, {IMPL_LRU, PASS_GET},
    {IMPL_LRU, PASS_GET},    {IMPL_OURS, PASS_GET},  {IMPL_OURS, PASS_GET}, {IMPL_LRU, PASS_GET},
    {IMPL_LRU, PASS_GET},    {IMPL_OURS, PASS_GET},  {IMPL_OURS, PASS_SET}, {IMPL_LRU, PASS_SET},
};
#define STEPS (sizeof(schedule) / sizeof(schedule[0]))

struct worker {
    pthread_t thread;
    struct target *t; /* [2], indexed by enum impl */
    pthread_barrier_t *barrier;
    uint32_t offset;
    uint32_t ops; /* requests this thread replays per pass */
    uint64_t hits[2];
    uint64_t gets[2];
    uint64_t errors;
    double seconds[STEPS];
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void run_step(struct worker *w, size_t step)
{
    struct target *t = &w->t[schedule[step].impl];
    enum pass p = schedule[step].pass;
    char buf[VALUE_MAX];
    size_t len = 0;
    pthread_barrier_wait(w->barrier);
    double t0 = now_s();
    for (uint32_t i = 0; i < w->ops; i++) {
        uint32_t key = g_trace[(w->offset + i) % TRACE];
        struct cache_key k = key_at(key);
        if (p != PASS_SET) {
            int rc = target_get(t, &k, buf, &len);
            if (p == PASS_ASIDE) {
                w->gets[t->impl]++;
                if (rc == 0)
                    w->hits[t->impl]++;
                else if (target_set(t, &k, value_len(key)) != 0)
                    w->errors++;
            }
        } else if (target_set(t, &k, value_len(key)) != 0) {
            w->errors++;
        }
    }
    w->seconds[step] = now_s() - t0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (size_t step = 0; step < STEPS; step++)
        run_step(w, step);
    return NULL;
}

static int target_open(struct target *t, enum impl impl, unsigned arena)
{
    t->impl = impl;
    t->cache = NULL;
    if (impl == IMPL_LRU)
        return lru_init(&t->lru, CAPACITY);
    struct cache_config cfg;
    cache_config_default(&cfg);
    cfg.max_entries = CAPACITY;
    cfg.max_bytes = (uint64_t)CAPACITY * 4096; /* entries bind, not bytes */
    cfg.max_object_bytes = 4096;
    cfg.memory_watermark_bytes = 0; /* one mallctl per 100 ms would not show */
    return cache_create(&cfg, arena, &t->cache);
}

static void target_close(struct target *t)
{
    if (t->impl == IMPL_LRU)
        lru_destroy(&t->lru);
    else
        cache_free(t->cache);
}

struct result {
    double hit_ratio;
    double get_ops_per_s;
    double set_ops_per_s;
    double mixed_ops_per_s;
};

static void result_keep(struct result *best, enum pass p, double ops_per_s)
{
    double *slot = p == PASS_GET   ? &best->get_ops_per_s
                   : p == PASS_SET ? &best->set_ops_per_s
                                   : &best->mixed_ops_per_s;
    if (ops_per_s > *slot)
        *slot = ops_per_s;
}

/* One round: fresh caches, nthreads workers through the whole schedule. */
static int run_round(unsigned nthreads, unsigned arena, struct result best[2])
{
    struct target t[2];
    struct worker w[2];
    pthread_barrier_t barrier;
    int rc = target_open(&t[IMPL_OURS], IMPL_OURS, arena);
    if (rc != 0)
        return rc;
    rc = target_open(&t[IMPL_LRU], IMPL_LRU, arena);
    if (rc != 0) {
        target_close(&t[IMPL_OURS]);
        return rc;
    }
    pthread_barrier_init(&barrier, NULL, nthreads);
    for (unsigned i = 0; i < nthreads; i++) {
        w[i] = (struct worker){
            .t = t,
            .barrier = &barrier,
            .offset = i * (TRACE / nthreads),
            .ops = TRACE / nthreads,
        };
        rc = pthread_create(&w[i].thread, NULL, worker_main, &w[i]);
        if (rc != 0) {
            fprintf(stderr, "cache_bench: pthread_create: %s\n", strerror(rc));
            exit(1);
        }
    }
    uint64_t errors = 0;
    double sec[STEPS] = {0};
    uint64_t hits[2] = {0, 0};
    uint64_t gets[2] = {0, 0};
    for (unsigned i = 0; i < nthreads; i++) {
        pthread_join(w[i].thread, NULL);
        errors += w[i].errors;
        for (int m = 0; m < 2; m++) {
            hits[m] += w[i].hits[m];
            gets[m] += w[i].gets[m];
        }
        for (size_t step = 0; step < STEPS; step++)
            if (w[i].seconds[step] > sec[step])
                sec[step] = w[i].seconds[step];
    }
    pthread_barrier_destroy(&barrier);
    target_close(&t[IMPL_OURS]);
    target_close(&t[IMPL_LRU]);
    if (errors != 0) {
        fprintf(stderr, "cache_bench: %lu errors\n", (unsigned long)errors);
        return -EIO;
    }
    double ops = (double)(TRACE / nthreads) * nthreads;
    for (size_t step = 0; step < STEPS; step++)
        result_keep(&best[schedule[step].impl], schedule[step].pass, ops / sec[step]);
    for (int m = 0; m < 2; m++)
        best[m].hit_ratio += (double)hits[m] / (double)gets[m] / ROUNDS;
    return 0;
}

static void print_result(enum impl impl, unsigned nthreads, const struct result *r)
{
    printf("{\"bench\":\"cache\",\"impl\":\"%s\",\"threads\":%u,\"keys\":%u,"
           "\"capacity\":%u,\"trace\":%u,\"zipf\":%.2f,\"rounds\":%u,\"hit_ratio\":%.4f,"
           "\"get_ops_per_s\":%.0f,\"set_ops_per_s\":%.0f,\"mixed_ops_per_s\":%.0f}\n",
           impl == IMPL_OURS ? "ours" : "lru", nthreads, KEYS, CAPACITY, TRACE, ZIPF_S, ROUNDS,
           r->hit_ratio, r->get_ops_per_s, r->set_ops_per_s, r->mixed_ops_per_s);
    fflush(stdout);
}

/* ---- allocator contention ------------------------------------------------ */

enum alloc_mode { AM_SHARED, AM_PER_THREAD_ARENA, AM_SHARED_TCACHE, AM_MALLOC, AM_COUNT };
static const char *const alloc_mode_name[AM_COUNT] = {"shared", "per_thread_arena", "shared_tcache",
                                                      "malloc"};
#define ALLOC_WINDOW 1024u /* blocks each thread keeps live */

struct alloc_worker {
    pthread_t thread;
    pthread_barrier_t *barrier;
    unsigned shared_arena;
    uint32_t offset;
    uint32_t ops;
    int error;
    double seconds[AM_COUNT];
};

/* The size of the entry a set of `key` allocates: header and node (~72
 * bytes), type, params and value. */
static size_t entry_size(uint32_t key)
{
    return 72 + sizeof(TYPE) - 1 + g_params_len[key] + value_len(key);
}

static int alloc_flags(struct alloc_worker *w, enum alloc_mode m, unsigned *own, unsigned *tc)
{
    size_t sz = sizeof(*tc);
    switch (m) {
    case AM_SHARED:
        return arena_flags(w->shared_arena);
    case AM_PER_THREAD_ARENA:
        if (arena_create(own) != 0)
            return -1;
        return arena_flags(*own);
    case AM_SHARED_TCACHE:
        if (mallctl("tcache.create", tc, &sz, NULL, 0) != 0)
            return -1;
        return MALLOCX_ARENA(w->shared_arena) | MALLOCX_TCACHE(*tc);
    default:
        return 0;
    }
}

static void alloc_pass(struct alloc_worker *w, enum alloc_mode m)
{
    static _Thread_local void *ring[ALLOC_WINDOW];
    static _Thread_local size_t sizes[ALLOC_WINDOW];
    unsigned own = 0, tc = 0;
    int flags = alloc_flags(w, m, &own, &tc);
    pthread_barrier_wait(w->barrier);
    if (flags < 0) {
        w->error = 1;
        return;
    }
    memset(ring, 0, sizeof(ring));
    double t0 = now_s();
    for (uint32_t i = 0; i < w->ops; i++) {
        uint32_t slot = i % ALLOC_WINDOW;
        if (ring[slot] != NULL)
            sdallocx(ring[slot], sizes[slot], flags);
        sizes[slot] = entry_size(g_trace[(w->offset + i) % TRACE]);
        ring[slot] = mallocx(sizes[slot], flags);
        if (ring[slot] == NULL)
            w->error = 1;
    }
    w->seconds[m] = now_s() - t0;
    for (uint32_t slot = 0; slot < ALLOC_WINDOW; slot++)
        if (ring[slot] != NULL)
            sdallocx(ring[slot], sizes[slot], flags);
    if (m == AM_PER_THREAD_ARENA)
        (void)arena_destroy(own);
    if (m == AM_SHARED_TCACHE)
        (void)mallctl("tcache.destroy", NULL, NULL, &tc, sizeof(tc));
}

static void *alloc_main(void *arg)
{
    struct alloc_worker *w = arg;
    for (int m = 0; m < AM_COUNT; m++)
        alloc_pass(w, (enum alloc_mode)m);
    return NULL;
}

/* One round of every mode with nthreads threads; keeps the best ops/s. */
static int alloc_round(unsigned nthreads, unsigned arena, double best[AM_COUNT])
{
    struct alloc_worker w[2];
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, nthreads);
    for (unsigned i = 0; i < nthreads; i++) {
        w[i] = (struct alloc_worker){
            .barrier = &barrier,
            .shared_arena = arena,
            .offset = i * (TRACE / nthreads),
            .ops = TRACE / nthreads,
        };
        if (pthread_create(&w[i].thread, NULL, alloc_main, &w[i]) != 0) {
            fprintf(stderr, "cache_bench: pthread_create failed\n");
            exit(1);
        }
    }
    double sec[AM_COUNT] = {0};
    int error = 0;
    for (unsigned i = 0; i < nthreads; i++) {
        pthread_join(w[i].thread, NULL);
        error |= w[i].error;
        for (int m = 0; m < AM_COUNT; m++)
            if (w[i].seconds[m] > sec[m])
                sec[m] = w[i].seconds[m];
    }
    pthread_barrier_destroy(&barrier);
    if (error)
        return -ENOMEM;
    double ops = (double)(TRACE / nthreads) * nthreads;
    for (int m = 0; m < AM_COUNT; m++)
        if (ops / sec[m] > best[m])
            best[m] = ops / sec[m];
    return 0;
}

static int alloc_bench(unsigned arena)
{
    static const unsigned threads[] = {1, 2};
    for (size_t i = 0; i < sizeof(threads) / sizeof(threads[0]); i++) {
        double best[AM_COUNT] = {0};
        for (unsigned round = 0; round < 2 * ROUNDS; round++) {
            int rc = alloc_round(threads[i], arena, best);
            if (rc != 0)
                return rc;
        }
        for (int m = 0; m < AM_COUNT; m++)
            printf("{\"bench\":\"cache_alloc\",\"mode\":\"%s\",\"threads\":%u,\"window\":%u,"
                   "\"trace\":%u,\"rounds\":%u,\"ops_per_s\":%.0f}\n",
                   alloc_mode_name[m], threads[i], ALLOC_WINDOW, TRACE, 2 * ROUNDS, best[m]);
        fflush(stdout);
    }
    return 0;
}

int main(void)
{
    unsigned arena = 0;
    int rc = workload_init();
    if (rc == 0)
        rc = arena_create(&arena);
    if (rc != 0) {
        fprintf(stderr, "cache_bench: setup: %s\n", strerror(-rc));
        return 1;
    }
    static const unsigned threads[] = {1, 2};
    int status = 0;
    for (size_t i = 0; i < sizeof(threads) / sizeof(threads[0]); i++) {
        struct result best[2];
        memset(best, 0, sizeof(best));
        for (unsigned round = 0; round < ROUNDS; round++) {
            rc = run_round(threads[i], arena, best);
            if (rc != 0) {
                fprintf(stderr, "cache_bench: run: %s\n", strerror(-rc));
                status = 1;
            }
        }
        print_result(IMPL_OURS, threads[i], &best[IMPL_OURS]);
        print_result(IMPL_LRU, threads[i], &best[IMPL_LRU]);
    }
    rc = alloc_bench(arena);
    if (rc != 0) {
        fprintf(stderr, "cache_bench: alloc: %s\n", strerror(-rc));
        status = 1;
    }
    arena_destroy(arena);
    free(g_trace);
    return status;
}
