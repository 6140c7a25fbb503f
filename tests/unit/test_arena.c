/*
 * test_arena.c - the dedicated jemalloc arena and the memory figures.
 *
 * What must hold: an arena's allocated figure equals the sum of sallocx()
 * over its live blocks exactly, and returns to zero when they are freed;
 * every read is fresh (a change made after one read shows in the next);
 * the process figures are mutually consistent and move with allocations.
 *
 * Process-wide figures: under ASan/TSan the sanitizer owns plain malloc, so
 * those checks use mallocx (always jemalloc) and check plain malloc only in
 * unsanitised builds, saying so when they leave it out.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"

#if defined(BROKER_SANITIZE_ADDRESS) || defined(BROKER_SANITIZE_THREAD)
#define SANITIZED 1
#else
#define SANITIZED 0
#endif

static uint64_t arena_now(unsigned a)
{
    uint64_t v = UINT64_MAX;
    cr_assert_eq(arena_allocated(a, &v), 0);
    return v;
}

Test(arena, create_is_empty_and_destroys)
{
    unsigned a = ARENA_NONE;
    cr_assert_eq(arena_create(&a), 0);
    cr_assert_neq(a, ARENA_NONE);
    cr_expect_eq(arena_now(a), 0, "a new arena holds nothing");
    unsigned b = ARENA_NONE;
    cr_assert_eq(arena_create(&b), 0);
    cr_expect_neq(a, b, "two arenas, two indices");
    cr_expect_eq(arena_destroy(b), 0);
    cr_expect_eq(arena_destroy(a), 0);
}

Test(arena, destroy_unknown_arena_fails)
{
    /* No process has four billion arenas: mallctl must refuse, not crash. */
    cr_expect_lt(arena_destroy(ARENA_NONE - 1), 0);
    uint64_t v = 0;
    cr_expect_lt(arena_allocated(ARENA_NONE - 1, &v), 0);
}

/* Sizes across small, large and huge classes, freed in a scrambled order. */
Test(arena, allocated_equals_sum_of_sallocx)
{
    enum { N = 600 };
    static void *p[N];
    unsigned a = 0;
    cr_assert_eq(arena_create(&a), 0);
    int flags = arena_flags(a);
    uint64_t sum = 0;
    for (size_t i = 0; i < N; i++) {
        size_t size = (i * i * 7919 + 13) % (i % 10 == 0 ? (size_t)3 << 20 : 4096) + 1;
        p[i] = mallocx(size, flags);
        cr_assert_not_null(p[i]);
        cr_assert_eq(sallocx(p[i], 0), nallocx(size, flags), "nallocx must predict sallocx");
        sum += sallocx(p[i], 0);
        if (i % 97 == 0)
            cr_expect_eq(arena_now(a), sum, "fresh figure after %zu blocks", i + 1);
    }
    cr_expect_eq(arena_now(a), sum);
    for (size_t i = 0; i < N; i++) {
        size_t j = (i * 337) % N; /* 337 is coprime with 600: a permutation */
        sum -= sallocx(p[j], 0);
        dallocx(p[j], MALLOCX_TCACHE_NONE);
    }
    cr_expect_eq(sum, 0);
    cr_expect_eq(arena_now(a), 0, "every byte returned: the arena is back to zero");
    cr_expect_eq(arena_destroy(a), 0);
}

Test(arena, plain_allocations_stay_out_of_the_arena)
{
    unsigned a = 0;
    cr_assert_eq(arena_create(&a), 0);
    void *m = malloc(1 << 20);
    void *x = mallocx(4096, 0);
    cr_assert_not_null(m);
    cr_assert_not_null(x);
    cr_expect_eq(arena_now(a), 0, "malloc/mallocx without the arena flag must not land there");
    free(m);
    dallocx(x, 0);
    cr_expect_eq(arena_destroy(a), 0);
}

Test(arena, stats_are_consistent_and_fresh)
{
    unsigned a = 0;
    cr_assert_eq(arena_create(&a), 0);
    struct arena_stats s1;
    cr_assert_eq(arena_stats_read(a, &s1), 0);
    cr_expect_gt(s1.allocated, 0);
    cr_expect_leq(s1.allocated, s1.active, "allocated %lu > active %lu",
                  (unsigned long)s1.allocated, (unsigned long)s1.active);
    cr_expect_leq(s1.active, s1.mapped);
    cr_expect_gt(s1.resident, 0);
    cr_expect_gt(s1.rss, 0);
    cr_expect_eq(s1.arena_allocated, 0);

    /* 32 MiB in the arena, touched: allocated, the arena figure and RSS move. */
    size_t big = (size_t)32 << 20;
    char *p = mallocx(big, arena_flags(a));
    cr_assert_not_null(p);
    memset(p, 0x5a, big);
    struct arena_stats s2;
    cr_assert_eq(arena_stats_read(a, &s2), 0);
    cr_expect_eq(s2.arena_allocated, sallocx(p, 0));
    cr_expect_geq(s2.allocated, s1.allocated + big, "process figure did not see 32 MiB");
    cr_expect_geq(s2.rss, s1.rss + big / 2, "RSS did not grow with 32 MiB touched");

    dallocx(p, MALLOCX_TCACHE_NONE);
    struct arena_stats s3;
    cr_assert_eq(arena_stats_read(a, &s3), 0);
    cr_expect_eq(s3.arena_allocated, 0);
    cr_expect_leq(s3.allocated + big, s2.allocated, "free not visible in the next read");
    cr_expect_eq(arena_destroy(a), 0);
}

Test(arena, stats_without_arena)
{
    struct arena_stats s;
    cr_assert_eq(arena_stats_read(ARENA_NONE, &s), 0);
    cr_expect_eq(s.arena_allocated, 0);
    cr_expect_gt(s.allocated, 0);
}

Test(arena, jemalloc_is_the_process_allocator)
{
    if (SANITIZED) {
        cr_skip_test("sanitizer build: plain malloc belongs to the sanitizer, not jemalloc");
        return;
    }
    uint64_t before = 0;
    uint64_t after = 0;
    size_t big = (size_t)16 << 20;
    cr_assert_eq(arena_process_allocated(&before), 0);
    char *p = malloc(big);
    cr_assert_not_null(p);
    p[0] = 1;
    cr_assert_eq(arena_process_allocated(&after), 0);
    cr_expect_geq(after, before + big, "plain malloc did not go through jemalloc");
    free(p);
}

Test(arena, rss_reads)
{
    uint64_t rss = 0;
    cr_assert_eq(arena_rss(&rss), 0);
    cr_expect_gt(rss, 0);
}
