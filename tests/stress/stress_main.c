/*
 * stress_main.c - runs every stress case without Criterion, so the cases can
 * run under ThreadSanitizer (see stress.h). Prints one line per case and a
 * closing "N passed, M failed" line; exits non-zero if any case failed.
 * Usage: stress_all [substring]   (run only cases whose name contains it)
 */
#include <stdio.h>
#include <string.h>

#include "stress.h"

#ifdef BROKER_SANITIZE_THREAD
/*
 * jemalloc is not built with TSan, so the happens-before edges made by its
 * own atomics are invisible: a thread lazily creating an automatic arena and
 * a stats read (mallctl "epoch") locking that arena's mutexes are reported
 * as a race. Only stacks through libjemalloc are suppressed; races on our
 * own data still show.
 */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void)
{
    return "race:libjemalloc.so\n";
}
#endif

struct stress_entry {
    const char *name;
    int (*fn)(char *, size_t);
};

static const struct stress_entry cases[] = {
    {"ring_spsc", stress_ring_spsc},
    {"ring_mpmc_4p4c", stress_ring_mpmc_4p4c},
    {"ring_mpmc_bulk", stress_ring_mpmc_bulk},
    {"ring_mpmc_tiny", stress_ring_mpmc_tiny},
    {"ring_mpmc_single", stress_ring_mpmc_single},
    {"pool_one_slot", stress_pool_one_slot},
    {"pool_resizing", stress_pool_resizing},
    {"pool_two_slots", stress_pool_two_slots},
    {"pool_pingpong", stress_pool_pingpong},
    {"pool_waiter_wrap", stress_pool_waiter_wrap},
    {"pool_waiter_wrap_stale", stress_pool_waiter_wrap_stale},
    {"log_lines", stress_log_lines},
    {"cache_storm_sharded", stress_cache_storm_sharded},
    {"cache_storm_one_shard", stress_cache_storm_one_shard},
    {"cache_storm_pressure", stress_cache_storm_pressure},
    {"cache_many_threads", stress_cache_many_threads},
    {"cache_fill_race", stress_cache_fill_race},
};

int main(int argc, char **argv)
{
    const char *filter = argc > 1 ? argv[1] : NULL;
    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (filter && !strstr(cases[i].name, filter))
            continue;
        char err[512] = "";
        int rc = cases[i].fn(err, sizeof err);
        printf("%s %s%s%s\n", rc == 0 ? "PASS" : "FAIL", cases[i].name, rc ? ": " : "", err);
        fflush(stdout);
        if (rc == 0)
            passed++;
        else
            failed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
