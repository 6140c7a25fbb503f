/*
 * stress.h - multi-threaded stress cases shared by the Criterion unit tests
 * and the plain `stress_all` runner.
 *
 * Why two runners: Criterion cannot start under ThreadSanitizer (its boxfort
 * arena fails: Snaipe/Criterion issue #274), so the same functions are run by
 * tests/stress/stress_main.c in the TSan CI stage.
 *
 * Contract: each case returns 0 on success, or -1 with a message naming the
 * violated property written to err (NUL-terminated, at most errlen bytes).
 * Cases are independent and may run in any order.
 */
#ifndef BROKER_TESTS_STRESS_H
#define BROKER_TESTS_STRESS_H

#include <stddef.h>

int stress_ring_spsc(char *err, size_t errlen);
int stress_ring_mpmc_4p4c(char *err, size_t errlen);
int stress_ring_mpmc_bulk(char *err, size_t errlen);
int stress_ring_mpmc_tiny(char *err, size_t errlen);
int stress_ring_mpmc_single(char *err, size_t errlen);

int stress_pool_one_slot(char *err, size_t errlen);
int stress_pool_resizing(char *err, size_t errlen);
int stress_pool_two_slots(char *err, size_t errlen);
int stress_pool_pingpong(char *err, size_t errlen);
int stress_pool_waiter_wrap(char *err, size_t errlen);
int stress_pool_waiter_wrap_stale(char *err, size_t errlen);
int stress_log_lines(char *err, size_t errlen);
int stress_cache_storm_sharded(char *err, size_t errlen);
int stress_cache_storm_one_shard(char *err, size_t errlen);
int stress_cache_storm_pressure(char *err, size_t errlen);
int stress_cache_many_threads(char *err, size_t errlen);
int stress_cache_fill_race(char *err, size_t errlen);

#endif
