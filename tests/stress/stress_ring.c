/*
 * stress_ring.c - exactly-once, per-producer-FIFO delivery through the SPSC
 * and MPMC rings with real threads.
 *
 * Items are encoded as (producer << 32 | sequence) + 1 so NULL never appears;
 * consumers count every item in seen[producer][sequence] and check that the
 * sequence numbers of one producer arrive increasing (a ring is FIFO, so one
 * consumer never sees one producer's items reordered). At the end every
 * counter must be exactly 1 and the ring empty. Cursors start near the 32-
 * and 64-bit limits so the runs cross the wrap-around.
 *
 * Each case names the API it drives: the bulk calls (n = 1 or 16), or the
 * single-item ring_mpmc_try_push/try_pop, which have their own publish and
 * free stores and so need their own run. The single-item case sends pointers
 * to records instead of encoded values: the producer fills the record with
 * plain stores just before the push and the consumer reads it with plain
 * loads after the pop, so only the cell's seq release/acquire orders them. A
 * record that reads back inconsistent (producer, seq, checksum, or its own
 * address) is a torn or stale value; under TSan a weakened publish store is
 * reported as a data race on the item or the record.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "ring_mpmc.h"
#include "ring_spsc.h"
#include "stress.h"

#define ITEM(p, s) ((void *)(uintptr_t)((((uint64_t)(p) << 32) | (uint64_t)(s)) + 1))
#define ITEM_PROD(v) ((uint32_t)((((uintptr_t)(v)) - 1) >> 32))
#define ITEM_SEQ(v) ((uint32_t)((((uintptr_t)(v)) - 1) & 0xffffffffu))

#ifdef BROKER_SANITIZE_THREAD
#define PER_PRODUCER 20000u /* TSan is ~10x slower; still thousands of wraps */
#else
#define PER_PRODUCER 200000u
#endif
#define MAX_THREADS 8

/* Which calls a run drives. */
enum ring_api {
    BULK_OF_1,  /* try_push_bulk / try_pop_bulk with n = 1 */
    BULK_OF_16, /* the same with n = 16 */
    SINGLE,     /* ring_mpmc_try_push / ring_mpmc_try_pop, items are records */
};

/* What a SINGLE item points to; see the top of the file. */
struct rec {
    uint32_t producer, seq;
    uint64_t check;
};

static uint64_t rec_check(uint32_t p, uint32_t s)
{
    /* Never 0 (a zeroed, never-written record fails), differs per item. */
    return ((((uint64_t)p << 32) | s) * UINT64_C(0x9E3779B97F4A7C15)) ^ UINT64_C(0xA5A5A5A5A5A5A5A5);
}

struct stress {
    struct ring_mpmc mpmc;
    struct ring_spsc spsc;
    bool use_spsc;
    enum ring_api api;
    uint32_t producers, consumers;
    _Atomic uint8_t *seen[MAX_THREADS];
    struct rec *recs[MAX_THREADS]; /* SINGLE only: PER_PRODUCER each */
    _Atomic uint64_t consumed;
    _Atomic uint32_t order_violations, torn;
};

struct stress_arg {
    struct stress *st;
    uint32_t id;
};

static void backoff(unsigned *spins)
{
    if (++*spins > 64) {
        sched_yield(); /* 2 cores, 8 threads: let a preempted peer finish */
        *spins = 0;
    }
}

static uint32_t push_some(struct stress *st, uint32_t id, uint32_t s)
{
    if (st->api == SINGLE) {
        /* Rewritten on every attempt: unpublished until a push succeeds. */
        struct rec *r = &st->recs[id][s];
        r->producer = id;
        r->seq = s;
        r->check = rec_check(id, s);
        return ring_mpmc_try_push(&st->mpmc, r) ? 1 : 0;
    }
    void *batch[16];
    uint32_t n = 0, want = st->api == BULK_OF_16 ? 16 : 1;
    while (n < want && s + n < PER_PRODUCER) {
        batch[n] = ITEM(id, s + n);
        n++;
    }
    return st->use_spsc ? ring_spsc_try_push_bulk(&st->spsc, batch, n)
                        : ring_mpmc_try_push_bulk(&st->mpmc, batch, n);
}

static void *producer(void *p)
{
    struct stress_arg *a = p;
    unsigned spins = 0;
    uint32_t s = 0;
    while (s < PER_PRODUCER) {
        uint32_t k = push_some(a->st, a->id, s);
        s += k;
        if (!k)
            backoff(&spins);
    }
    return NULL;
}

/* The (producer, seq) of a SINGLE record, or false when v is not the
 * address of a record or the record's fields disagree with it. */
static bool rec_decode(struct stress *st, void *v, uint32_t *p, uint32_t *s)
{
    uintptr_t a = (uintptr_t)v;
    for (uint32_t i = 0; i < st->producers; i++) {
        uintptr_t base = (uintptr_t)st->recs[i];
        if (a < base || a >= base + (uintptr_t)PER_PRODUCER * sizeof(struct rec))
            continue;
        if ((a - base) % sizeof(struct rec))
            return false;
        const struct rec *r = v;
        uint32_t idx = (uint32_t)((a - base) / sizeof(struct rec));
        if (r->producer != i || r->seq != idx || r->check != rec_check(i, idx))
            return false;
        *p = i;
        *s = idx;
        return true;
    }
    return false;
}

static void consume_one(struct stress *st, void *v, uint32_t *last)
{
    uint32_t p, s;
    /* A bad value still counts as consumed, so the run ends and fails on
     * the item it stood for instead of waiting for it for ever. */
    if (st->api == SINGLE) {
        if (!rec_decode(st, v, &p, &s)) {
            atomic_fetch_add_explicit(&st->torn, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&st->consumed, 1, memory_order_relaxed);
            return;
        }
    } else {
        p = ITEM_PROD(v);
        s = ITEM_SEQ(v);
    }
    if (p >= st->producers || s >= PER_PRODUCER) {
        atomic_fetch_add_explicit(&st->order_violations, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&st->consumed, 1, memory_order_relaxed);
        return;
    }
    atomic_fetch_add_explicit(&st->seen[p][s], 1, memory_order_relaxed);
    if (last[p] != UINT32_MAX && s <= last[p])
        atomic_fetch_add_explicit(&st->order_violations, 1, memory_order_relaxed);
    last[p] = s;
    atomic_fetch_add_explicit(&st->consumed, 1, memory_order_relaxed);
}

static void *consumer(void *p)
{
    struct stress_arg *a = p;
    struct stress *st = a->st;
    uint32_t last[MAX_THREADS];
    for (int i = 0; i < MAX_THREADS; i++)
        last[i] = UINT32_MAX;
    unsigned spins = 0;
    uint64_t total = (uint64_t)st->producers * PER_PRODUCER;
    while (atomic_load_explicit(&st->consumed, memory_order_relaxed) < total) {
        void *out[16];
        uint32_t want = st->api == BULK_OF_16 ? 16 : 1, k;
        if (st->api == SINGLE)
            k = ring_mpmc_try_pop(&st->mpmc, &out[0]) ? 1 : 0;
        else
            k = st->use_spsc ? ring_spsc_try_pop_bulk(&st->spsc, out, want)
                             : ring_mpmc_try_pop_bulk(&st->mpmc, out, want);
        for (uint32_t i = 0; i < k; i++)
            consume_one(st, out[i], last);
        if (!k)
            backoff(&spins);
    }
    return NULL;
}

static int fail(char *err, size_t errlen, const char *what, uint32_t a, uint32_t b)
{
    snprintf(err, errlen, "%s (%u, %u)", what, a, b);
    return -1;
}

static int check_and_free(struct stress *st, char *err, size_t errlen)
{
    int rc = 0;
    if (atomic_load(&st->torn))
        rc = fail(err, errlen, "popped records torn or not the pushed ones, count/0",
                  atomic_load(&st->torn), 0);
    else if (atomic_load(&st->order_violations))
        rc = fail(err, errlen, "per-producer FIFO order violated, count/0",
                  atomic_load(&st->order_violations), 0);
    for (uint32_t p = 0; p < st->producers; p++) {
        for (uint32_t s = 0; rc == 0 && s < PER_PRODUCER; s++)
            if (atomic_load(&st->seen[p][s]) != 1)
                rc = fail(err, errlen, "item not delivered exactly once: (producer, seq)", p, s);
        free((void *)st->seen[p]);
        free(st->recs[p]);
    }
    void *v;
    bool left = st->use_spsc ? ring_spsc_try_pop(&st->spsc, &v) : ring_mpmc_try_pop(&st->mpmc, &v);
    if (rc == 0 && left)
        rc = fail(err, errlen, "items left in the ring after all were consumed", 0, 0);
    ring_spsc_destroy(&st->spsc);
    ring_mpmc_destroy(&st->mpmc);
    return rc;
}

static int run(bool use_spsc, enum ring_api api, uint32_t np, uint32_t nc, uint32_t cap,
               uint64_t start, char *err, size_t errlen)
{
    struct stress st = {.use_spsc = use_spsc, .api = api, .producers = np, .consumers = nc};
    int rc = use_spsc ? ring_spsc_init_at(&st.spsc, cap, start)
                      : ring_mpmc_init_at(&st.mpmc, cap, start);
    if (rc)
        return fail(err, errlen, "ring init failed", (uint32_t)-rc, 0);
    for (uint32_t p = 0; p < np; p++) {
        st.seen[p] = calloc(PER_PRODUCER, 1);
        /* Zeroed: a record popped before it was written fails rec_decode. */
        st.recs[p] = api == SINGLE ? calloc(PER_PRODUCER, sizeof(struct rec)) : NULL;
        if (!st.seen[p] || (api == SINGLE && !st.recs[p]))
            return fail(err, errlen, "out of memory", p, 0);
    }
    pthread_t th[2 * MAX_THREADS];
    struct stress_arg args[2 * MAX_THREADS];
    uint32_t n = 0;
    for (uint32_t c = 0; c < nc; c++, n++) {
        args[n] = (struct stress_arg){&st, c};
        if (pthread_create(&th[n], NULL, consumer, &args[n]))
            abort(); /* test harness: no way to unwind running threads */
    }
    for (uint32_t p = 0; p < np; p++, n++) {
        args[n] = (struct stress_arg){&st, p};
        if (pthread_create(&th[n], NULL, producer, &args[n]))
            abort();
    }
    for (uint32_t i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    return check_and_free(&st, err, errlen);
}

int stress_ring_spsc(char *err, size_t errlen)
{
    if (run(true, BULK_OF_1, 1, 1, 64, UINT64_MAX - 1000, err, errlen))
        return -1;
    return run(true, BULK_OF_16, 1, 1, 64, UINT32_MAX - 1000, err, errlen);
}

int stress_ring_mpmc_4p4c(char *err, size_t errlen)
{
    return run(false, BULK_OF_1, 4, 4, 64, UINT64_MAX - 1000, err, errlen);
}

int stress_ring_mpmc_bulk(char *err, size_t errlen)
{
    return run(false, BULK_OF_16, 3, 2, 32, UINT64_MAX - 100, err, errlen);
}

/* Capacity 1 maximises claim/publish races on one cell. */
int stress_ring_mpmc_tiny(char *err, size_t errlen)
{
    return run(false, BULK_OF_1, 2, 2, 1, UINT64_MAX - 10, err, errlen);
}

/*
 * The single-item calls, records behind the items (see the top of the
 * file): 4+4 threads on 8 cells across the 64-bit wrap, then 2+2 on one cell
 * across the 32-bit boundary, where every push waits for the previous pop's
 * free store and every pop for the previous push's publish store.
 */
int stress_ring_mpmc_single(char *err, size_t errlen)
{
    if (run(false, SINGLE, 4, 4, 8, UINT64_MAX - 1000, err, errlen))
        return -1;
    return run(false, SINGLE, 2, 2, 1, UINT32_MAX - 10, err, errlen);
}
