/*
 * test_ratelimit.c - token buckets on a fake clock: the burst then
 * refusal with the exact wait, refill at the exact rate (also in many small
 * steps), no overflow at the largest rate and burst with any elapsed time,
 * a clock that goes back, the count bounded by [0, burst]; and the table:
 * a bucket per key, growth, the sweep of full buckets only, RL_NOMEM at max.
 */
#include <criterion/criterion.h>
#include <stdint.h>

#include "ratelimit.h"

#define MS  1000000ull
#define SEC 1000000000ull

#define MAX_RATE  10000000u /* config maxima (docs/config-reference.md) */
#define MAX_BURST 100000000u

static uint32_t refused_for(struct tbucket *tb, uint32_t rate, uint32_t burst, uint64_t now)
{
    uint32_t after = 0;
    cr_assert_not(tbucket_take(tb, rate, burst, now, &after), "took a token at %llu",
                  (unsigned long long)now);
    cr_assert_geq(after, 1);
    return after;
}

static void drain(struct tbucket *tb, uint32_t rate, uint32_t burst, uint64_t now)
{
    while (tb->tokens >= RL_ONE)
        cr_assert(tbucket_take(tb, rate, burst, now, NULL));
}

Test(tbucket, burst_then_refusal)
{
    struct tbucket tb;
    tbucket_init(&tb, 5, 1000);
    cr_assert_eq(tb.tokens, 5 * RL_ONE, "created full");
    for (int i = 0; i < 5; i++)
        cr_assert(tbucket_take(&tb, 10, 5, 1000, NULL), "take %d of the burst", i);
    cr_assert_eq(tb.tokens, 0);
    cr_assert_eq(refused_for(&tb, 10, 5, 1000), 100, "10/s: the next token in 100 ms");
    cr_assert_eq(tb.tokens, 0, "a refusal takes nothing");
}

Test(tbucket, retry_after_is_the_exact_wait_rounded_up)
{
    const struct {
        uint32_t rate;
        uint64_t waited;
        uint32_t ms;
    } cases[] = {
        {1, 0, 1000},         {3, 0, 334}, /* 333.33 ms */
        {7, 0, 143},          {1000, 0, 1},          {1001, 0, 1},
        {MAX_RATE, 0, 1},     {10, 30 * MS, 70},     {10, 30 * MS + MS / 2, 70},
        {10, 99 * MS, 1},     {10, 100 * MS - 1, 1}, {1, 1, 1000},
        {2, 499 * MS + 1, 1}, {2, 498 * MS + 1, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct tbucket tb;
        tbucket_init(&tb, 1, 0);
        cr_assert(tbucket_take(&tb, cases[i].rate, 1, 0, NULL));
        cr_assert_eq(refused_for(&tb, cases[i].rate, 1, cases[i].waited), cases[i].ms,
                     "case %zu: rate %u after %llu ns", i, cases[i].rate,
                     (unsigned long long)cases[i].waited);
    }
}

Test(tbucket, refills_at_the_rate)
{
    struct tbucket tb;
    tbucket_init(&tb, 5, 0);
    drain(&tb, 10, 5, 0);
    cr_assert_eq(refused_for(&tb, 10, 5, 100 * MS - 1), 1);
    cr_assert(tbucket_take(&tb, 10, 5, 100 * MS, NULL), "one token after exactly 100 ms");
    cr_assert_eq(refused_for(&tb, 10, 5, 100 * MS), 100);
    /* 250 ms more: 2.5 tokens; the half carries over. */
    cr_assert(tbucket_take(&tb, 10, 5, 350 * MS, NULL));
    cr_assert(tbucket_take(&tb, 10, 5, 350 * MS, NULL));
    cr_assert_eq(refused_for(&tb, 10, 5, 350 * MS), 50, "half a token already there");
    cr_assert(tbucket_take(&tb, 10, 5, 400 * MS, NULL));
    /* Long idle: full, not more. */
    for (int i = 0; i < 5; i++)
        cr_assert(tbucket_take(&tb, 10, 5, 100 * SEC, NULL));
    cr_assert_eq(refused_for(&tb, 10, 5, 100 * SEC), 100);
}

Test(tbucket, slow_rate_polled_often_still_refills)
{
    /* 1 token/s asked every 500 ns: each refill is worth half a unit, so
     * the fraction must carry or the bucket never refills. */
    struct tbucket tb;
    tbucket_init(&tb, 1, 0);
    cr_assert(tbucket_take(&tb, 1, 1, 0, NULL));
    uint64_t t;
    for (t = 500; t < SEC; t += 500)
        cr_assert_not(tbucket_take(&tb, 1, 1, t, NULL), "early token at %llu",
                      (unsigned long long)t);
    cr_assert(tbucket_take(&tb, 1, 1, SEC, NULL), "the token is due at exactly 1 s");
}

Test(tbucket, count_over_time_matches_the_rate)
{
    /* Random steps of 1 ns..50 ms, a request at each: the bucket is kept
     * nearly empty, so the successes are burst + rate * T, less at most one
     * (the fraction still accruing at the end). */
    const uint32_t rate = 7, burst = 3;
    struct tbucket tb;
    tbucket_init(&tb, burst, 0);
    uint64_t now = 0, first = 0, ok = 0, x = 88172645463325252ull;
    while (now < 100 * SEC) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
        now += 1 + x % (50 * MS);
        first = first ? first : now; /* full until then: that time is not banked */
        ok += tbucket_take(&tb, rate, burst, now, NULL);
        cr_assert_leq(tb.tokens, (uint64_t)burst * RL_ONE);
    }
    uint64_t due = burst + (uint64_t)rate * (now - first) / SEC;
    cr_assert(ok == due || ok + 1 == due, "%llu taken, %llu due", (unsigned long long)ok,
              (unsigned long long)due);
}

Test(tbucket, never_more_than_the_rate_even_polled_every_ns)
{
    /* Rates whose unit is not a whole number of ns, asked every ns, from
     * empty and with room (the cap never binds): each refill credits a few
     * units and must charge their time in full. The rounding may lose under
     * one unit per refill, here at most 2e6 units = 2 tokens. */
    const struct {
        uint32_t rate;
        uint64_t span;
    } cases[] = {{999999, 2 * MS}, {3333333, MS}, {MAX_RATE - 9, MS}, {1001, 3 * SEC}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint32_t rate = cases[i].rate;
        uint64_t step = rate < 100000 ? 1499 : 1; /* the slow one: 2e6 asks */
        struct tbucket tb = {.tokens = 0, .last_ns = 0};
        uint64_t ok = 0;
        for (uint64_t t = step; t <= cases[i].span; t += step)
            ok += tbucket_take(&tb, rate, MAX_BURST, t, NULL);
        uint64_t due = (uint64_t)rate * cases[i].span / SEC;
        cr_assert(ok <= due && ok + 3 >= due, "rate %u over %llu ns: %llu taken, %llu due", rate,
                  (unsigned long long)cases[i].span, (unsigned long long)ok,
                  (unsigned long long)due);
    }
}

Test(tbucket, no_overflow_at_max_rate_and_burst_with_any_elapsed_time)
{
    const uint64_t cap = (uint64_t)MAX_BURST * RL_ONE;
    const uint64_t times[] = {
        SEC,
        10 * SEC - 1,
        10 * SEC,
        1000 * SEC,
        UINT64_MAX / MAX_RATE,
        UINT64_MAX / 1000,
        UINT64_MAX / 2,
        UINT64_MAX - 1,
        UINT64_MAX,
    };
    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
        struct tbucket tb = {.tokens = 0, .last_ns = 0};
        cr_assert(tbucket_take(&tb, MAX_RATE, MAX_BURST, times[i], NULL));
        /* 1e7 tokens/s = 1e4 units/ns; full (1e14 units) after 10 s; 1 ns
         * short of that is the largest product computed, 1e17 */
        uint64_t want = times[i] >= 10 * SEC ? cap - RL_ONE : times[i] * 10000 - RL_ONE;
        cr_assert_eq(tb.tokens, want, "after %llu ns: %llu units", (unsigned long long)times[i],
                     (unsigned long long)tb.tokens);
        cr_assert(tbucket_full(&(struct tbucket){0, 0}, MAX_RATE, MAX_BURST, times[i]) ==
                      (times[i] >= 10 * SEC),
                  "full after %llu ns", (unsigned long long)times[i]);
    }
    struct tbucket one = {.tokens = 0, .last_ns = 0};
    cr_assert_eq(refused_for(&one, MAX_RATE, MAX_BURST, 1), 1);
    cr_assert_eq(one.tokens, 10000, "1 ns at the top rate: 10000 units");
    /* Beyond the config limits, the types' own limits. */
    struct tbucket huge = {.tokens = 0, .last_ns = 0};
    cr_assert(tbucket_take(&huge, UINT32_MAX, UINT32_MAX, UINT64_MAX, NULL));
    cr_assert_eq(huge.tokens, (uint64_t)UINT32_MAX * RL_ONE - RL_ONE);
    /* Filling takes exactly 1 s there; 1 ns short is the largest product
     * computed: (1e9 - 1) * (2^32 - 1) = 4.3e18, still exact. */
    huge = (struct tbucket){.tokens = 0, .last_ns = 0};
    cr_assert(tbucket_take(&huge, UINT32_MAX, UINT32_MAX, SEC - 1, NULL));
    cr_assert_eq(huge.tokens, (uint64_t)UINT32_MAX * RL_ONE - 4294968 - RL_ONE);
}

Test(tbucket, clock_going_back_gives_nothing_and_pays_nothing_twice)
{
    struct tbucket tb;
    tbucket_init(&tb, 2, 10 * SEC);
    drain(&tb, 10, 2, 10 * SEC);
    cr_assert_eq(refused_for(&tb, 10, 2, 5 * SEC), 100, "back 5 s: still 100 ms from 10 s");
    cr_assert_eq(tb.last_ns, 10 * SEC, "last refill time kept");
    cr_assert_eq(tb.tokens, 0);
    cr_assert_eq(refused_for(&tb, 10, 2, 10 * SEC + 50 * MS), 50);
    cr_assert(tbucket_take(&tb, 10, 2, 10 * SEC + 100 * MS, NULL));
    cr_assert_not(tbucket_take(&tb, 10, 2, 10 * SEC + 100 * MS, NULL));
    cr_assert_not(tbucket_full(&tb, 10, 2, 0), "back to 0: not full");
    cr_assert(tbucket_full(&tb, 10, 2, 10 * SEC + 300 * MS));
}

Test(tbucket, count_stays_within_zero_and_burst)
{
    uint64_t x = 0x2545F4914F6CDD1Dull, now = SEC;
    struct tbucket tb;
    tbucket_init(&tb, 4, now);
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        /* mostly forward, sometimes back, sometimes far */
        uint64_t step = x % (400 * MS);
        if (x >> 60 == 0)
            now -= now > step ? step : 0;
        else if (x >> 58 == 1)
            now += 1000 * SEC;
        else
            now += step;
        bool got = tbucket_take(&tb, 3, 4, now, NULL);
        cr_assert_leq(tb.tokens, 4 * RL_ONE, "step %d: %llu units", i,
                      (unsigned long long)tb.tokens);
        if (got)
            cr_assert_leq(tb.tokens + RL_ONE, 4 * RL_ONE);
        else
            cr_assert_lt(tb.tokens, RL_ONE, "refused with a whole token there");
    }
}

Test(tbucket, lowered_burst_clamps_the_count)
{
    struct tbucket tb;
    tbucket_init(&tb, 10, 0);
    cr_assert(tbucket_take(&tb, 10, 2, 0, NULL), "a reload lowered the burst to 2");
    cr_assert_eq(tb.tokens, RL_ONE);
    cr_assert(tbucket_take(&tb, 10, 2, 0, NULL));
    cr_assert_not(tbucket_take(&tb, 10, 2, 0, NULL));
    struct tbucket back = {.tokens = 10 * RL_ONE, .last_ns = 50};
    cr_assert(tbucket_take(&back, 10, 1, 0, NULL));
    cr_assert_eq(back.tokens, 0, "clamped to 1 token even when the clock went back");
    cr_assert_eq(back.last_ns, 50);
}

Test(tbucket, full_exactly_when_refilled)
{
    struct tbucket tb;
    tbucket_init(&tb, 3, 0);
    cr_assert(tbucket_full(&tb, 10, 3, 0));
    cr_assert(tbucket_take(&tb, 10, 3, 0, NULL));
    cr_assert(tbucket_take(&tb, 10, 3, 0, NULL));
    cr_assert_not(tbucket_full(&tb, 10, 3, 200 * MS - 1));
    cr_assert(tbucket_full(&tb, 10, 3, 200 * MS), "two tokens in 200 ms");
    cr_assert_eq(tb.tokens, RL_ONE, "the test reads, never refills");
}

Test(ratelimit, a_bucket_per_key_and_growth)
{
    struct ratelimit rl;
    cr_assert_eq(ratelimit_init(&rl, 1000000), 0);
    size_t first = rl.nslots;
    const size_t nkeys = 20000;
    for (size_t i = 0; i < nkeys; i++) {
        /* sequential uids and keys that differ only in their high bits */
        uint64_t key = i % 2 ? i : (uint64_t)i << 40;
        cr_assert_eq(ratelimit_take(&rl, key, 10, 2, 0, NULL), RL_OK);
        cr_assert_leq(rl.n, rl.nslots, "load <= 1 after %zu keys", i + 1);
    }
    cr_assert_eq(rl.n, nkeys);
    cr_assert_gt(rl.nslots, first, "grew");
    cr_assert_eq(rl.nslots & (rl.nslots - 1), 0, "a power of two");
    for (size_t i = 0; i < nkeys; i++) {
        uint64_t key = i % 2 ? i : (uint64_t)i << 40;
        uint32_t after = 0;
        cr_assert_eq(ratelimit_take(&rl, key, 10, 2, 0, NULL), RL_OK, "key %zu: its own bucket", i);
        cr_assert_eq(ratelimit_take(&rl, key, 10, 2, 0, &after), RL_LIMITED);
        cr_assert_eq(after, 100);
    }
    cr_assert_eq(rl.n, nkeys, "no bucket made for a known key");
    ratelimit_destroy(&rl); /* LeakSanitizer checks every bucket went */
    cr_assert_null(rl.slots);
    ratelimit_destroy(&rl);
    ratelimit_destroy(NULL);
}

Test(ratelimit, nomem_at_max_for_new_keys_only)
{
    struct ratelimit rl;
    cr_assert_eq(ratelimit_init(&rl, 100), 0);
    for (uint64_t k = 0; k < 100; k++)
        cr_assert_eq(ratelimit_take(&rl, k, 1, 5, 0, NULL), RL_OK);
    cr_assert_leq(rl.nslots, 128, "no more slots than max needs");
    cr_assert_eq(ratelimit_take(&rl, 100, 1, 5, 0, NULL), RL_NOMEM);
    cr_assert_eq(ratelimit_take(&rl, UINT64_MAX, 1, 5, 0, NULL), RL_NOMEM);
    cr_assert_eq(rl.n, 100);
    cr_assert_eq(ratelimit_take(&rl, 42, 1, 5, 0, NULL), RL_OK, "a known key needs nothing new");
    /* 1.5 s later every bucket but 42 (two tokens short, 2 s) is full again. */
    cr_assert_eq(ratelimit_sweep(&rl, 1, 5, 1500 * MS), 99);
    cr_assert_eq(rl.n, 1);
    cr_assert_eq(ratelimit_take(&rl, 100, 1, 5, 1500 * MS, NULL), RL_OK, "room again");
    ratelimit_destroy(&rl);

    cr_assert_eq(ratelimit_init(&rl, 1), 0);
    cr_assert_eq(ratelimit_take(&rl, 7, 1, 1, 0, NULL), RL_OK);
    cr_assert_eq(ratelimit_take(&rl, 8, 1, 1, 0, NULL), RL_NOMEM);
    ratelimit_destroy(&rl);
}

Test(ratelimit, sweep_frees_full_buckets_only)
{
    struct ratelimit rl;
    cr_assert_eq(ratelimit_init(&rl, 1000), 0);
    /* rate 10, burst 5: a takes 1 (full again 100 ms later), b takes 5 (500 ms). */
    cr_assert_eq(ratelimit_take(&rl, 'a', 10, 5, 0, NULL), RL_OK);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(ratelimit_take(&rl, 'b', 10, 5, 0, NULL), RL_OK);
    uint32_t after = 0;
    cr_assert_eq(ratelimit_take(&rl, 'b', 10, 5, 0, &after), RL_LIMITED);
    cr_assert_eq(after, 100);
    cr_assert_eq(ratelimit_sweep(&rl, 10, 5, 100 * MS - 1), 0, "a is 1 ns short");
    cr_assert_eq(ratelimit_sweep(&rl, 10, 5, 100 * MS), 1);
    cr_assert_eq(rl.n, 1);
    cr_assert_eq(rl.swept, 1);
    /* b kept its state: one token at 100 ms, then limited. */
    cr_assert_eq(ratelimit_take(&rl, 'b', 10, 5, 100 * MS, NULL), RL_OK);
    cr_assert_eq(ratelimit_take(&rl, 'b', 10, 5, 100 * MS, &after), RL_LIMITED);
    cr_assert_eq(after, 100);
    /* a comes back as new: full. */
    for (int i = 0; i < 5; i++)
        cr_assert_eq(ratelimit_take(&rl, 'a', 10, 5, 100 * MS, NULL), RL_OK, "take %d", i);
    cr_assert_eq(ratelimit_take(&rl, 'a', 10, 5, 100 * MS, NULL), RL_LIMITED);
    cr_assert_eq(rl.n, 2);
    cr_assert_eq(ratelimit_sweep(&rl, 10, 5, 700 * MS), 2, "both full by 600 ms");
    cr_assert_eq(rl.n, 0);
    cr_assert_eq(rl.swept, 3);
    ratelimit_destroy(&rl);
}

Test(ratelimit, sweep_in_a_grown_table_keeps_the_chains)
{
    struct ratelimit rl;
    cr_assert_eq(ratelimit_init(&rl, 100000), 0);
    /* Even keys drained (not full), odd keys took one (full 1 s later). */
    for (uint64_t k = 0; k < 5000; k++) {
        cr_assert_eq(ratelimit_take(&rl, k * 0x10001, 1, 2, 0, NULL), RL_OK);
        if (k % 2 == 0)
            cr_assert_eq(ratelimit_take(&rl, k * 0x10001, 1, 2, 0, NULL), RL_OK);
    }
    cr_assert_eq(ratelimit_sweep(&rl, 1, 2, SEC), 2500);
    cr_assert_eq(rl.n, 2500);
    for (uint64_t k = 0; k < 5000; k++) {
        uint32_t after = 0;
        enum rl_verdict v = ratelimit_take(&rl, k * 0x10001, 1, 2, SEC, &after);
        cr_assert_eq(v, RL_OK, "key %llu", (unsigned long long)k);
        if (k % 2 == 0) {
            cr_assert_eq(ratelimit_take(&rl, k * 0x10001, 1, 2, SEC, &after), RL_LIMITED,
                         "kept key %llu lost its state", (unsigned long long)k);
            cr_assert_eq(after, 1000);
        } else {
            cr_assert_eq(ratelimit_take(&rl, k * 0x10001, 1, 2, SEC, &after), RL_OK,
                         "swept key %llu came back full", (unsigned long long)k);
        }
    }
    cr_assert_eq(rl.n, 5000);
    ratelimit_destroy(&rl);
}
