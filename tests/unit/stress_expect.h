/*
 * stress_expect.h - run one tests/stress case inside a Criterion test and
 * fail with the case's own message. Include after <criterion/criterion.h>.
 */
#ifndef BROKER_TESTS_STRESS_EXPECT_H
#define BROKER_TESTS_STRESS_EXPECT_H

#include "stress.h"

static inline void expect_stress(int (*fn)(char *, size_t))
{
    char err[512] = "";
    cr_assert_eq(fn(err, sizeof err), 0, "%s", err);
}

#endif
