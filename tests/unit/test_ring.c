/*
 * test_ring.c - SPSC and MPMC rings: order, boundaries, wrap-around of the
 * free-running cursors, and multi-threaded exactly-once delivery.
 *
 * Items are encoded as (producer << 32 | sequence) + 1 so that NULL never
 * appears and each consumer can check per-producer order and count every
 * item exactly once.
 */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "ring_mpmc.h"
#include "ring_spsc.h"

#define ITEM(p, s) ((void *)(uintptr_t)((((uint64_t)(p) << 32) | (uint64_t)(s)) + 1))

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

/*
 * capacity() and size() answer in a uint32_t: a request above 2^31 rounds up
 * to 2^32, which they would report as 0 (and a ring that says it holds 0
 * items while full). Such a ring is refused before anything is allocated.
 */
Test(ring, capacity_above_2_31_refused)
{
    const uint32_t too_big[] = {(UINT32_C(1) << 31) + 1, UINT32_MAX};
    for (size_t i = 0; i < sizeof too_big / sizeof too_big[0]; i++) {
        struct ring_mpmc m;
        struct ring_spsc s;
        cr_expect_eq(ring_mpmc_init(&m, too_big[i]), -EINVAL, "mpmc capacity %u", too_big[i]);
        cr_expect_eq(ring_spsc_init(&s, too_big[i]), -EINVAL, "spsc capacity %u", too_big[i]);
    }
    /* The largest ring reports its capacity; not allocated here (32 GiB of
     * cells), so the mask of a real init is set by hand. */
    struct ring_mpmc m = {.mask = RING_CAPACITY_MAX - 1};
    struct ring_spsc s = {.mask = RING_CAPACITY_MAX - 1};
    cr_expect_eq(ring_mpmc_capacity(&m), RING_CAPACITY_MAX);
    cr_expect_eq(ring_spsc_capacity(&s), RING_CAPACITY_MAX);
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

/* ---- threaded stress (tests/stress/stress_ring.c; TSan runs it via stress_all) */

#include "stress_expect.h"

Test(ring_stress, spsc_exactly_once, .timeout = 120)
{
    expect_stress(stress_ring_spsc);
}

Test(ring_stress, mpmc_exactly_once_4p4c, .timeout = 120)
{
    expect_stress(stress_ring_mpmc_4p4c);
}

Test(ring_stress, mpmc_bulk_exactly_once_3p2c, .timeout = 120)
{
    expect_stress(stress_ring_mpmc_bulk);
}

Test(ring_stress, mpmc_tiny_ring_2p2c, .timeout = 120)
{
    expect_stress(stress_ring_mpmc_tiny);
}

Test(ring_stress, mpmc_single_item_api_4p4c_and_2p2c, .timeout = 120)
{
    expect_stress(stress_ring_mpmc_single);
}
