/*
 * test_ring.c - SPSC and MPMC rings: order, boundaries, wrap-around of the
 * free-running cursors, and multi-threaded exactly-once delivery.
 *
 * Items are encoded as (producer << 32 | sequence) + 1 so that NULL never
 * appears and each consumer can check per-producer order and count every
 * item exactly once.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "ring_mpmc.h"
#include "ring_spsc.h"

#define ITEM(p, s) ((void *)(uintptr_t)((((uint64_t)(p) << 32) | (uint64_t)(s)) + 1))
#define ITEM_PROD(v) ((uint32_t)((((uintptr_t)(v)) - 1) >> 32))
#define ITEM_SEQ(v) ((uint32_t)((((uintptr_t)(v)) - 1) & 0xffffffffu))

/* Cursor start points: zero, just below the 32-bit limit (catches code that
 * truncates cursors to 32 bits) and just below the 64-bit limit. */
static const uint64_t starts[] = {0, UINT32_MAX - 5, UINT64_MAX - 5};

Test(ring, pow2_rounding)
{
    cr_expect_eq(ring_pow2_ceil(0), 1);
    cr_expect_eq(ring_pow2_ceil(1), 1);
    cr_expect_eq(ring_pow2_ceil(3), 4);
    cr_expect_eq(ring_pow2_ceil(1024), 1024);
    cr_expect_eq(ring_pow2_ceil(1025), 2048);
    struct ring_mpmc m;
    cr_assert_eq(ring_mpmc_init(&m, 0), -EINVAL);
    cr_assert_eq(ring_mpmc_init(&m, 5), 0);
    cr_expect_eq(ring_mpmc_capacity(&m), 8);
    ring_mpmc_destroy(&m);
    struct ring_spsc s;
    cr_assert_eq(ring_spsc_init(&s, 0), -EINVAL);
}

/* Fill to capacity, check full, drain in FIFO order, check empty; several
 * laps so every cell is reused and the cursors cross the start offset. */
static void mpmc_fill_drain(uint32_t cap, uint64_t start)
{
    struct ring_mpmc r;
    cr_assert_eq(ring_mpmc_init_at(&r, cap, start), 0);
    void *out = NULL;
    cr_assert_not(ring_mpmc_try_pop(&r, &out), "empty ring popped");
    for (uint32_t lap = 0; lap < 5; lap++) {
        for (uint32_t i = 0; i < cap; i++)
            cr_assert(ring_mpmc_try_push(&r, ITEM(lap, i)), "push %u of %u failed", i, cap);
        cr_assert_not(ring_mpmc_try_push(&r, ITEM(9, 9)), "push into full ring succeeded");
        cr_assert_eq(ring_mpmc_size(&r), cap);
        for (uint32_t i = 0; i < cap; i++) {
            cr_assert(ring_mpmc_try_pop(&r, &out));
            cr_assert_eq(out, ITEM(lap, i), "FIFO order broken at %u (start %lu)", i,
                         (unsigned long)start);
        }
        cr_assert_not(ring_mpmc_try_pop(&r, &out));
        cr_assert_eq(ring_mpmc_size(&r), 0);
    }
    ring_mpmc_destroy(&r);
}

static void spsc_fill_drain(uint32_t cap, uint64_t start)
{
    struct ring_spsc r;
    cr_assert_eq(ring_spsc_init_at(&r, cap, start), 0);
    void *out = NULL;
    cr_assert_not(ring_spsc_try_pop(&r, &out));
    for (uint32_t lap = 0; lap < 5; lap++) {
        for (uint32_t i = 0; i < cap; i++)
            cr_assert(ring_spsc_try_push(&r, ITEM(lap, i)));
        cr_assert_not(ring_spsc_try_push(&r, ITEM(9, 9)));
        cr_assert_eq(ring_spsc_size(&r), cap);
        for (uint32_t i = 0; i < cap; i++) {
            cr_assert(ring_spsc_try_pop(&r, &out));
            cr_assert_eq(out, ITEM(lap, i));
        }
        cr_assert_not(ring_spsc_try_pop(&r, &out));
    }
    ring_spsc_destroy(&r);
}

Test(ring, fifo_full_empty_capacity_one_and_large)
{
    const uint32_t caps[] = {1, 2, 8, 4096};
    for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++)
        for (size_t s = 0; s < sizeof starts / sizeof starts[0]; s++) {
            mpmc_fill_drain(caps[c], starts[s]);
            spsc_fill_drain(caps[c], starts[s]);
        }
}

/* Interleaved push/pop keeps the ring partly full while the cursors wrap
 * through 2^64: nothing lost, nothing reordered. */
Test(ring, wraparound_interleaved)
{
    struct ring_mpmc m;
    struct ring_spsc s;
    cr_assert_eq(ring_mpmc_init_at(&m, 4, UINT64_MAX - 10), 0);
    cr_assert_eq(ring_spsc_init_at(&s, 4, UINT64_MAX - 10), 0);
    uint32_t next_in = 0, next_out = 0;
    void *v;
    for (int step = 0; step < 200; step++) {
        /* push 3, pop 2: fills up, then alternates between full and not */
        for (int k = 0; k < 3; k++) {
            bool a = ring_mpmc_try_push(&m, ITEM(0, next_in));
            bool b = ring_spsc_try_push(&s, ITEM(0, next_in));
            cr_assert_eq(a, b, "mpmc and spsc disagree on full at step %d", step);
            if (a)
                next_in++;
        }
        for (int k = 0; k < 2; k++) {
            void *w;
            bool a = ring_mpmc_try_pop(&m, &v);
            bool b = ring_spsc_try_pop(&s, &w);
            cr_assert_eq(a, b);
            if (a) {
                cr_assert_eq(v, ITEM(0, next_out));
                cr_assert_eq(w, ITEM(0, next_out));
                next_out++;
            }
        }
    }
    cr_assert_gt(next_out, 300);
    /* Cursors have crossed zero. */
    cr_assert_lt(atomic_load(&m.head), 1000);
    ring_mpmc_destroy(&m);
    ring_spsc_destroy(&s);
}

Test(ring, bulk_partial_and_order)
{
    struct ring_mpmc m;
    struct ring_spsc s;
    cr_assert_eq(ring_mpmc_init_at(&m, 8, UINT64_MAX - 3), 0);
    cr_assert_eq(ring_spsc_init_at(&s, 8, UINT64_MAX - 3), 0);
    void *in[12], *out[12];
    for (uint32_t i = 0; i < 12; i++)
        in[i] = ITEM(1, i);
    /* Only 8 fit: a prefix is pushed. */
    cr_assert_eq(ring_mpmc_try_push_bulk(&m, in, 12), 8);
    cr_assert_eq(ring_spsc_try_push_bulk(&s, in, 12), 8);
    cr_assert_eq(ring_mpmc_try_push_bulk(&m, in, 1), 0);
    cr_assert_eq(ring_mpmc_try_pop_bulk(&m, out, 5), 5);
    for (uint32_t i = 0; i < 5; i++)
        cr_assert_eq(out[i], in[i]);
    cr_assert_eq(ring_spsc_try_pop_bulk(&s, out, 12), 8);
    for (uint32_t i = 0; i < 8; i++)
        cr_assert_eq(out[i], in[i]);
    /* Room for 5 again; push 5 of the remaining, pop everything. */
    cr_assert_eq(ring_mpmc_try_push_bulk(&m, in + 8, 4), 4);
    cr_assert_eq(ring_mpmc_try_pop_bulk(&m, out, 12), 7);
    for (uint32_t i = 0; i < 7; i++)
        cr_assert_eq(out[i], in[5 + i]);
    cr_assert_eq(ring_mpmc_try_pop_bulk(&m, out, 12), 0);
    cr_assert_eq(ring_mpmc_try_push_bulk(&m, in, 0), 0);
    ring_mpmc_destroy(&m);
    ring_spsc_destroy(&s);
}

/* ---- threaded stress ---------------------------------------------------- */

#define STRESS_PER_PRODUCER 200000u
#define MAX_THREADS 8

struct stress {
    struct ring_mpmc mpmc;
    struct ring_spsc spsc;
    bool use_spsc;
    bool bulk;
    uint32_t producers, consumers;
    _Atomic uint32_t producers_done;
    /* seen[p][s]: how many times item (p, s) was consumed. */
    _Atomic uint8_t *seen[MAX_THREADS];
    _Atomic uint64_t consumed;
    _Atomic uint32_t order_violations;
};

struct stress_arg {
    struct stress *st;
    uint32_t id;
};

static void backoff(unsigned *spins)
{
    if (++*spins > 64) {
        sched_yield(); /* 2 cores, 4 threads: let a preempted peer finish */
        *spins = 0;
    }
}

static void *stress_producer(void *p)
{
    struct stress_arg *a = p;
    struct stress *st = a->st;
    unsigned spins = 0;
    uint32_t s = 0;
    while (s < STRESS_PER_PRODUCER) {
        if (st->bulk) {
            void *batch[16];
            uint32_t n = 0;
            while (n < 16 && s + n < STRESS_PER_PRODUCER) {
                batch[n] = ITEM(a->id, s + n);
                n++;
            }
            uint32_t k = st->use_spsc ? ring_spsc_try_push_bulk(&st->spsc, batch, n)
                                      : ring_mpmc_try_push_bulk(&st->mpmc, batch, n);
            s += k;
            if (!k)
                backoff(&spins);
        } else {
            bool ok = st->use_spsc ? ring_spsc_try_push(&st->spsc, ITEM(a->id, s))
                                   : ring_mpmc_try_push(&st->mpmc, ITEM(a->id, s));
            if (ok)
                s++;
            else
                backoff(&spins);
        }
    }
    atomic_fetch_add_explicit(&st->producers_done, 1, memory_order_release);
    return NULL;
}

static void consume_one(struct stress *st, void *v, uint32_t *last)
{
    uint32_t p = ITEM_PROD(v), s = ITEM_SEQ(v);
    if (p >= st->producers || s >= STRESS_PER_PRODUCER) {
        atomic_fetch_add(&st->order_violations, 1);
        return;
    }
    atomic_fetch_add_explicit(&st->seen[p][s], 1, memory_order_relaxed);
    /* Per-producer order as seen by one consumer must be increasing: a ring
     * is FIFO, so a single consumer never sees a producer's items reordered. */
    if (last[p] != UINT32_MAX && s <= last[p])
        atomic_fetch_add(&st->order_violations, 1);
    last[p] = s;
    atomic_fetch_add_explicit(&st->consumed, 1, memory_order_relaxed);
}

static void *stress_consumer(void *p)
{
    struct stress_arg *a = p;
    struct stress *st = a->st;
    uint32_t last[MAX_THREADS];
    for (int i = 0; i < MAX_THREADS; i++)
        last[i] = UINT32_MAX;
    unsigned spins = 0;
    uint64_t total = (uint64_t)st->producers * STRESS_PER_PRODUCER;
    while (atomic_load_explicit(&st->consumed, memory_order_relaxed) < total) {
        void *out[16];
        uint32_t k;
        if (st->bulk)
            k = st->use_spsc ? ring_spsc_try_pop_bulk(&st->spsc, out, 16)
                             : ring_mpmc_try_pop_bulk(&st->mpmc, out, 16);
        else
            k = (st->use_spsc ? ring_spsc_try_pop(&st->spsc, out)
                              : ring_mpmc_try_pop(&st->mpmc, out))
                    ? 1
                    : 0;
        for (uint32_t i = 0; i < k; i++)
            consume_one(st, out[i], last);
        if (!k)
            backoff(&spins);
    }
    return NULL;
}

static void run_stress(bool use_spsc, bool bulk, uint32_t producers, uint32_t consumers,
                       uint32_t cap, uint64_t start)
{
    struct stress st = {.use_spsc = use_spsc, .bulk = bulk, .producers = producers,
                        .consumers = consumers};
    if (use_spsc)
        cr_assert_eq(ring_spsc_init_at(&st.spsc, cap, start), 0);
    else
        cr_assert_eq(ring_mpmc_init_at(&st.mpmc, cap, start), 0);
    for (uint32_t p = 0; p < producers; p++) {
        st.seen[p] = calloc(STRESS_PER_PRODUCER, 1);
        cr_assert_not_null(st.seen[p]);
    }
    pthread_t th[2 * MAX_THREADS];
    struct stress_arg args[2 * MAX_THREADS];
    uint32_t n = 0;
    for (uint32_t c = 0; c < consumers; c++, n++) {
        args[n] = (struct stress_arg){&st, c};
        cr_assert_eq(pthread_create(&th[n], NULL, stress_consumer, &args[n]), 0);
    }
    for (uint32_t p = 0; p < producers; p++, n++) {
        args[n] = (struct stress_arg){&st, p};
        cr_assert_eq(pthread_create(&th[n], NULL, stress_producer, &args[n]), 0);
    }
    for (uint32_t i = 0; i < n; i++)
        pthread_join(th[i], NULL);

    cr_assert_eq(atomic_load(&st.order_violations), 0, "per-producer order violated");
    for (uint32_t p = 0; p < producers; p++) {
        for (uint32_t s = 0; s < STRESS_PER_PRODUCER; s++)
            cr_assert_eq(atomic_load(&st.seen[p][s]), 1,
                         "item (%u,%u) delivered %u times (expected exactly once)", p, s,
                         (unsigned)atomic_load(&st.seen[p][s]));
        free(st.seen[p]);
    }
    void *v;
    if (use_spsc) {
        cr_assert_not(ring_spsc_try_pop(&st.spsc, &v), "items left over");
        ring_spsc_destroy(&st.spsc);
    } else {
        cr_assert_not(ring_mpmc_try_pop(&st.mpmc, &v), "items left over");
        ring_mpmc_destroy(&st.mpmc);
    }
}

Test(ring_stress, spsc_exactly_once, .timeout = 120)
{
    run_stress(true, false, 1, 1, 64, UINT64_MAX - 1000);
    run_stress(true, true, 1, 1, 64, UINT32_MAX - 1000);
}

Test(ring_stress, mpmc_exactly_once_4p4c, .timeout = 120)
{
    run_stress(false, false, 4, 4, 64, UINT64_MAX - 1000);
}

Test(ring_stress, mpmc_bulk_exactly_once_3p2c, .timeout = 120)
{
    run_stress(false, true, 3, 2, 32, UINT64_MAX - 100);
}

Test(ring_stress, mpmc_tiny_ring_2p2c, .timeout = 120)
{
    /* Capacity 1 maximises claim/publish races on the same cell. */
    run_stress(false, false, 2, 2, 1, UINT64_MAX - 10);
}
