/*
 * test_breaker.c - the circuit breaker on a fake clock: opens after exactly
 * `failures` consecutive failures, refuses with the exact time left, lets
 * exactly one probe through per expiry (also with threads racing at the
 * instant the period ends), closes on the probe's success, doubles the
 * period with bounded jitter up to max_open on its failure, hands the turn
 * on after an expired lease or an abandoned probe, ignores late outcomes
 * while not closed, and obeys trip and reset. Two races of four threads:
 * asking at the instant the period ends gives exactly one PROBE; failing
 * together past the threshold opens it exactly once.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>

#include "breaker.h"

#define MS 1000000ull

/* No room for jitter (max_open == open): every time is exact. */
static const struct breaker_cfg exact = {
    .failures = 3, .open_ns = 100 * MS, .max_open_ns = 100 * MS, .probe_lease_ns = 50 * MS};
/* Room for doubling and jitter. */
static const struct breaker_cfg grow = {
    .failures = 3, .open_ns = 100 * MS, .max_open_ns = 1000 * MS, .probe_lease_ns = 50 * MS};

static struct breaker_stats stats(struct breaker *b, uint64_t now)
{
    struct breaker_stats st;
    breaker_stats_read(b, now, &st);
    return st;
}

/* Fails `cfg->failures` times at now; asserts only the last one opened. */
static void open_it(struct breaker *b, const struct breaker_cfg *cfg, uint64_t now, uint32_t why)
{
    for (uint32_t i = 1; i < cfg->failures; i++)
        cr_assert_not(breaker_failure(b, cfg, now, false, why), "failure %u of %u opened", i,
                      cfg->failures);
    cr_assert(breaker_failure(b, cfg, now, false, why), "failure %u did not open", cfg->failures);
}

/* The retry_after_ms a plain caller gets at now (asserting REFUSE). */
static uint32_t refused_for(struct breaker *b, const struct breaker_cfg *cfg, uint64_t now)
{
    uint32_t after = 0, why = 0;
    cr_assert_eq(breaker_allow(b, cfg, now, &after, &why), BREAKER_REFUSE, "at %llu",
                 (unsigned long long)now);
    cr_assert_geq(after, 1);
    return after;
}

/* How long the circuit is open for from now: until_ns (documented in
 * breaker.h as the end of the open period), checked against what callers
 * see: refused 1 ns before, with retry_after_ms its ceiling in ms. */
static uint64_t open_for(struct breaker *b, const struct breaker_cfg *cfg, uint64_t now)
{
    cr_assert_eq(stats(b, now).state, BREAKER_OPEN);
    uint64_t until = atomic_load(&b->until_ns);
    cr_assert_gt(until, now);
    uint64_t d = until - now;
    cr_assert_eq(refused_for(b, cfg, now), (d + MS - 1) / MS);
    cr_assert_eq(refused_for(b, cfg, until - 1), 1);
    return d;
}

Test(breaker, opens_after_exactly_n_failures_not_n_minus_1)
{
    struct breaker b;
    breaker_init(&b, 1);
    uint64_t now = 5 * MS;
    cr_assert_eq(breaker_allow(&b, &exact, now, NULL, NULL), BREAKER_PASS);
    cr_assert_not(breaker_failure(&b, &exact, now, false, 7));
    cr_assert_not(breaker_failure(&b, &exact, now, false, 7));
    cr_assert_eq(stats(&b, now).fails, 2);
    cr_assert_eq(breaker_allow(&b, &exact, now, NULL, NULL), BREAKER_PASS, "2 of 3: still closed");
    cr_assert(breaker_failure(&b, &exact, now, false, 9), "the 3rd failure opens");
    struct breaker_stats st = stats(&b, now);
    cr_assert_eq(st.state, BREAKER_OPEN);
    cr_assert_eq(st.opened, 1);
    cr_assert_eq(st.reason, 9, "the reason of the failure that opened it");
    uint32_t after = 0, why = 0;
    cr_assert_eq(breaker_allow(&b, &exact, now, &after, &why), BREAKER_REFUSE);
    cr_assert_eq(why, 9);
    cr_assert_not(breaker_failure(&b, &exact, now, false, 1), "already open: no second opening");
    cr_assert_eq(stats(&b, now).opened, 1);

    struct breaker one;
    breaker_init(&one, 1);
    struct breaker_cfg c1 = exact;
    c1.failures = 1;
    cr_assert(breaker_failure(&one, &c1, now, false, 3), "failures = 1: the first one opens");
}

Test(breaker, success_in_between_resets_the_count)
{
    struct breaker b;
    breaker_init(&b, 1);
    for (int round = 0; round < 3; round++) {
        cr_assert_not(breaker_failure(&b, &exact, 0, false, 1));
        cr_assert_not(breaker_failure(&b, &exact, 0, false, 1));
        cr_assert_not(breaker_success(&b, &exact, false), "a plain success closes nothing");
        cr_assert_eq(stats(&b, 0).fails, 0);
    }
    cr_assert_eq(stats(&b, 0).state, BREAKER_CLOSED, "never 3 in a row");
    open_it(&b, &exact, 0, 1);
}

Test(breaker, refuses_while_open_with_time_left_rounded_up)
{
    struct breaker b;
    breaker_init(&b, 1);
    uint64_t t0 = 1000 * MS;
    open_it(&b, &exact, t0, 4);
    cr_assert_eq(refused_for(&b, &exact, t0), 100);
    cr_assert_eq(refused_for(&b, &exact, t0 + 1), 100, "99.999999 ms left rounds up");
    cr_assert_eq(refused_for(&b, &exact, t0 + MS), 99);
    cr_assert_eq(refused_for(&b, &exact, t0 + 98 * MS + 1), 2);
    cr_assert_eq(refused_for(&b, &exact, t0 + 99 * MS), 1);
    cr_assert_eq(refused_for(&b, &exact, t0 + 100 * MS - 1), 1, "1 ns left: at least 1 ms");
    struct breaker_stats st = stats(&b, t0 + 40 * MS);
    cr_assert_eq(st.retry_after_ms, 60);
    cr_assert_eq(st.refused, 6);
    cr_assert_eq(st.probes, 0);
    cr_assert_eq(st.state, BREAKER_OPEN, "refusing does not move the state");
}

Test(breaker, one_probe_per_expiry_second_caller_refused)
{
    struct breaker b;
    breaker_init(&b, 1);
    open_it(&b, &exact, 0, 4);
    uint64_t end = 100 * MS;
    uint32_t after = 0, why = 0;
    cr_assert_eq(breaker_allow(&b, &exact, end, &after, &why), BREAKER_PROBE);
    cr_assert_eq(stats(&b, end).state, BREAKER_HALF_OPEN);
    cr_assert_eq(stats(&b, end).retry_after_ms, 0, "stats: time left only while open");
    cr_assert_eq(breaker_allow(&b, &exact, end, &after, &why), BREAKER_REFUSE);
    cr_assert_eq(after, 50, "half-open: the probe's lease is what is left");
    cr_assert_eq(why, 4);
    cr_assert_eq(refused_for(&b, &exact, end + 30 * MS), 20);
    cr_assert_eq(stats(&b, end).probes, 1);
}

Test(breaker, probe_success_closes_and_restores_the_first_period)
{
    struct breaker b;
    breaker_init(&b, 1);
    open_it(&b, &grow, 0, 4);
    uint64_t now = open_for(&b, &grow, 0);
    cr_assert_eq(breaker_allow(&b, &grow, now, NULL, NULL), BREAKER_PROBE);
    cr_assert(breaker_failure(&b, &grow, now, true, 5), "failed probe reopens");
    now += open_for(&b, &grow, now);
    cr_assert_eq(breaker_allow(&b, &grow, now, NULL, NULL), BREAKER_PROBE);
    cr_assert(breaker_success(&b, &grow, true), "the probe's success closes");
    cr_assert_not(breaker_success(&b, &grow, true), "already closed");
    struct breaker_stats st = stats(&b, now);
    cr_assert_eq(st.state, BREAKER_CLOSED);
    cr_assert_eq(st.fails, 0);
    cr_assert_eq(st.closed, 1);
    cr_assert_eq(breaker_allow(&b, &grow, now, NULL, NULL), BREAKER_PASS);
    /* A full count again, and the first period again, not the doubled one. */
    open_it(&b, &grow, now, 6);
    uint64_t d = open_for(&b, &grow, now);
    cr_assert(d >= 100 * MS && d <= 125 * MS, "reopened for %llu ns", (unsigned long long)d);
}

Test(breaker, probe_failure_doubles_with_bounded_jitter_up_to_max)
{
    uint64_t first_min = UINT64_MAX, first_max = 0;
    for (uint64_t seed = 0; seed < 40; seed++) {
        struct breaker b;
        breaker_init(&b, seed * 0x1234567ull);
        uint64_t now = 77;
        open_it(&b, &grow, now, 1);
        uint64_t d = open_for(&b, &grow, now);
        cr_assert(d >= 100 * MS && d <= 125 * MS, "first: %llu", (unsigned long long)d);
        first_min = d < first_min ? d : first_min;
        first_max = d > first_max ? d : first_max;
        /* period 200, 400, 800 (+ up to a quarter, total <= 1000), then 1000 flat */
        const uint64_t lo[] = {200, 400, 800, 1000, 1000}, hi[] = {250, 500, 1000, 1000, 1000};
        for (int i = 0; i < 5; i++) {
            now += d;
            cr_assert_eq(breaker_allow(&b, &grow, now, NULL, NULL), BREAKER_PROBE);
            cr_assert(breaker_failure(&b, &grow, now, true, 2), "the failed probe reopens");
            d = open_for(&b, &grow, now);
            cr_assert(d >= lo[i] * MS && d <= hi[i] * MS,
                      "seed %llu step %d: %llu ns not in [%llu, %llu] ms", (unsigned long long)seed,
                      i, (unsigned long long)d, (unsigned long long)lo[i],
                      (unsigned long long)hi[i]);
        }
        cr_assert_eq(stats(&b, now).opened, 6);
    }
    cr_assert_gt(first_max - first_min, 5 * MS, "jitter spreads brokers: [%llu, %llu]",
                 (unsigned long long)first_min, (unsigned long long)first_max);
}

Test(breaker, expired_lease_gives_the_probe_to_the_next_caller)
{
    struct breaker b;
    breaker_init(&b, 1);
    open_it(&b, &exact, 0, 4);
    uint64_t t = 100 * MS;
    cr_assert_eq(breaker_allow(&b, &exact, t, NULL, NULL), BREAKER_PROBE);
    cr_assert_eq(refused_for(&b, &exact, t + 50 * MS - 1), 1);
    cr_assert_eq(breaker_allow(&b, &exact, t + 50 * MS, NULL, NULL), BREAKER_PROBE,
                 "the first probe never reported: its lease is over");
    cr_assert_eq(refused_for(&b, &exact, t + 50 * MS), 50, "a fresh lease");
    struct breaker_stats st = stats(&b, t + 50 * MS);
    cr_assert_eq(st.state, BREAKER_HALF_OPEN);
    cr_assert_eq(st.probes, 2);
    cr_assert(breaker_success(&b, &exact, true));
}

Test(breaker, abandoned_probe_lets_the_next_caller_probe_at_once)
{
    struct breaker b;
    breaker_init(&b, 1);
    open_it(&b, &exact, 0, 4);
    uint64_t t = 100 * MS;
    cr_assert_eq(breaker_allow(&b, &exact, t, NULL, NULL), BREAKER_PROBE);
    breaker_probe_abandoned(&b);
    cr_assert_eq(stats(&b, t).state, BREAKER_OPEN);
    cr_assert_eq(breaker_allow(&b, &exact, t, NULL, NULL), BREAKER_PROBE, "no wait for the lease");
    cr_assert_eq(breaker_allow(&b, &exact, t, NULL, NULL), BREAKER_REFUSE, "still one at a time");
    breaker_probe_abandoned(&b);
    breaker_probe_abandoned(&b); /* twice, or while not half-open: no effect */
    cr_assert_eq(breaker_allow(&b, &exact, t + 1, NULL, NULL), BREAKER_PROBE);
    cr_assert_eq(stats(&b, t).probes, 3);
    cr_assert_eq(stats(&b, t).opened, 1, "giving the turn back is not a new opening");

    struct breaker c;
    breaker_init(&c, 1);
    breaker_probe_abandoned(&c);
    cr_assert_eq(stats(&c, 0).state, BREAKER_CLOSED, "closed: abandon changes nothing");
}

Test(breaker, late_plain_outcomes_change_nothing_unless_closed)
{
    struct breaker b;
    breaker_init(&b, 1);
    open_it(&b, &grow, 0, 4);
    uint32_t before = refused_for(&b, &grow, 10 * MS);
    /* Requests sent before it opened answer late. */
    cr_assert_not(breaker_failure(&b, &grow, 10 * MS, false, 8));
    cr_assert_not(breaker_success(&b, &grow, false));
    cr_assert_eq(refused_for(&b, &grow, 10 * MS), before, "open period neither extended nor cut");
    struct breaker_stats st = stats(&b, 10 * MS);
    cr_assert_eq(st.state, BREAKER_OPEN);
    cr_assert_eq(st.reason, 4, "a late failure does not replace the reason");
    cr_assert_eq(st.fails, 3, "the count that opened it stays for the stats");
    cr_assert_eq(st.opened, 1);

    uint64_t t = open_for(&b, &grow, 0);
    cr_assert_eq(breaker_allow(&b, &grow, t, NULL, NULL), BREAKER_PROBE);
    cr_assert_not(breaker_failure(&b, &grow, t, false, 8), "not the probe: fails nothing");
    cr_assert_not(breaker_success(&b, &grow, false), "not the probe: closes nothing");
    st = stats(&b, t);
    cr_assert_eq(st.state, BREAKER_HALF_OPEN);
    cr_assert_eq(st.opened, 1);
    cr_assert_eq(refused_for(&b, &grow, t), 50, "the probe's lease is untouched");
    cr_assert(breaker_success(&b, &grow, true));
}

Test(breaker, trip_and_reset)
{
    struct breaker b;
    breaker_init(&b, 1);
    cr_assert_not(breaker_reset(&b), "already closed");
    cr_assert_not(breaker_failure(&b, &exact, 0, false, 1));
    cr_assert(breaker_trip(&b, &exact, 0, 42), "one failure of 3, tripped anyway");
    cr_assert_not(breaker_trip(&b, &exact, 50 * MS, 43), "already open");
    cr_assert_eq(refused_for(&b, &exact, 50 * MS), 50, "a second trip does not extend");
    struct breaker_stats st = stats(&b, 0);
    cr_assert_eq(st.state, BREAKER_OPEN);
    cr_assert_eq(st.reason, 42);
    cr_assert(breaker_reset(&b));
    cr_assert_not(breaker_reset(&b));
    st = stats(&b, 0);
    cr_assert_eq(st.state, BREAKER_CLOSED);
    cr_assert_eq(st.fails, 0);
    cr_assert_eq(st.opened, 1);
    cr_assert_eq(st.closed, 1);
    cr_assert_eq(breaker_allow(&b, &exact, 1, NULL, NULL), BREAKER_PASS);
    cr_assert_not(breaker_failure(&b, &exact, 1, false, 1), "reset cleared the count");
    cr_assert_not(breaker_failure(&b, &exact, 1, false, 1));

    /* Half-open: trip opens again, reset closes. */
    cr_assert(breaker_trip(&b, &exact, 200 * MS, 44));
    cr_assert_eq(breaker_allow(&b, &exact, 300 * MS, NULL, NULL), BREAKER_PROBE);
    cr_assert(breaker_trip(&b, &exact, 300 * MS, 45), "half-open is not open");
    cr_assert_eq(stats(&b, 300 * MS).state, BREAKER_OPEN);
    cr_assert_eq(refused_for(&b, &exact, 300 * MS), 100);
    cr_assert_not(breaker_success(&b, &exact, true),
                  "the tripped probe's late success: open stays");
    cr_assert_eq(stats(&b, 300 * MS).state, BREAKER_OPEN);
    cr_assert_eq(breaker_allow(&b, &exact, 400 * MS, NULL, NULL), BREAKER_PROBE);
    cr_assert(breaker_reset(&b));
    cr_assert_eq(breaker_allow(&b, &exact, 400 * MS, NULL, NULL), BREAKER_PASS);
    cr_assert_eq(stats(&b, 0).closed, 2);
}

Test(breaker, state_names)
{
    cr_assert_str_eq(breaker_state_name(BREAKER_CLOSED), "closed");
    cr_assert_str_eq(breaker_state_name(BREAKER_OPEN), "open");
    cr_assert_str_eq(breaker_state_name(BREAKER_HALF_OPEN), "half_open");
}

/* Racing threads, kept alive across rounds. Each round: a barrier, thread
 * 0 sets the breaker up, a second barrier releases all four at once (a
 * spinning barrier: the last to arrive frees the spinners within
 * nanoseconds, where a sleeping one wakes them microseconds apart and
 * hides races), then each makes its one call at the same fake instant.
 * Thread 0 tallies the previous round; the test thread checks after. */
#define NTHREADS 4
#define ROUNDS   20000

struct spin_barrier {
    _Atomic int count, gen;
};

/* True for the thread that arrived last and released the others. */
static bool spin_barrier_wait(struct spin_barrier *sb)
{
    int gen = atomic_load_explicit(&sb->gen, memory_order_acquire);
    if (atomic_fetch_add_explicit(&sb->count, 1, memory_order_acq_rel) == NTHREADS - 1) {
        atomic_store_explicit(&sb->count, 0, memory_order_relaxed);
        /* release: pairs with the acquire loads below; publishes the setup */
        atomic_store_explicit(&sb->gen, gen + 1, memory_order_release);
        return true;
    }
    for (unsigned spins = 0; atomic_load_explicit(&sb->gen, memory_order_acquire) == gen; spins++)
        if (spins > 2000)
            sched_yield(); /* more threads than CPUs on small CI machines */
    return false;
}

struct race {
    struct breaker b;
    bool failing; /* fail at 10 ns instead of asking at 100 ms */
    struct spin_barrier bar;
    _Atomic int winners; /* PROBE verdicts, or failures that opened it */
    _Atomic int refused;
    int bad_round, bad_winners, bad_refused; /* the first round that went wrong */
    struct breaker_stats bad_stats;
};

struct racer {
    struct race *r;
    int id;
};

/* Thread 0, between rounds (no cr_assert off the test's thread). */
static void tally(struct race *r, int round)
{
    int winners = atomic_load(&r->winners), refused = atomic_load(&r->refused);
    struct breaker_stats st;
    breaker_stats_read(&r->b, 10, &st);
    bool ok = winners == 1 &&
              (r->failing ? st.opened == 1 && st.state == BREAKER_OPEN && st.retry_after_ms == 100
                          : refused == NTHREADS - 1 && st.probes == 1);
    if (!ok && !r->bad_round) {
        r->bad_round = round;
        r->bad_winners = winners;
        r->bad_refused = refused;
        r->bad_stats = st;
    }
}

static void *racer_main(void *arg)
{
    struct racer *me = arg;
    struct race *r = me->r;
    for (int round = 1; round <= ROUNDS + 1; round++) {
        spin_barrier_wait(&r->bar); /* everyone is done with the last round */
        if (me->id == 0) {
            if (round > 1)
                tally(r, round - 1);
            breaker_init(&r->b, (uint64_t)round);
            if (r->failing)
                for (int i = 0; i < 2; i++) /* 2 of 3: each of the 4 reaches it */
                    breaker_failure(&r->b, &exact, 0, false, 1);
            else
                breaker_trip(&r->b, &exact, 0, 1); /* open until exactly 100 ms */
            atomic_store(&r->winners, 0);
            atomic_store(&r->refused, 0);
        }
        if (round > ROUNDS)
            break;
        bool last = spin_barrier_wait(&r->bar); /* the start */
        if (last) /* it is a cache miss ahead: let the others catch up, by varied amounts */
            for (volatile unsigned k = (unsigned)round * 7u % 512u; k; k--)
                ;
        bool won;
        if (r->failing) {
            won = breaker_failure(&r->b, &exact, 10, false, 1);
        } else {
            enum breaker_verdict v = breaker_allow(&r->b, &exact, 100 * MS, NULL, NULL);
            won = v == BREAKER_PROBE;
            atomic_fetch_add(&r->refused, v == BREAKER_REFUSE);
        }
        atomic_fetch_add(&r->winners, won);
    }
    return NULL;
}

static void run_race(bool failing)
{
    struct race r = {.failing = failing};
    pthread_t th[NTHREADS];
    struct racer rs[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        rs[i] = (struct racer){&r, i};
        cr_assert_eq(pthread_create(&th[i], NULL, racer_main, &rs[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(r.bad_round, 0, "round %d: %d winners, %d refused, %llu opened, %llu probes",
                 r.bad_round, r.bad_winners, r.bad_refused, (unsigned long long)r.bad_stats.opened,
                 (unsigned long long)r.bad_stats.probes);
}

Test(breaker, threads_at_the_end_of_the_period_get_exactly_one_probe)
{
    run_race(false);
}

Test(breaker, threads_failing_together_open_it_once)
{
    run_race(true);
}
