/*
 * fuzz_check.h - what the fuzz targets share: the invariant macro and the
 * "is this one response line" check.
 *
 * Design: an invariant that fails calls __builtin_trap(), which libFuzzer
 * reports as a crash (SIGILL) with the input saved, the same as a sanitizer
 * report. FUZZ_CHECK names the condition on stderr first, so a reproducer's
 * log says which contract broke without a debugger. Every helper is static
 * inline: each target is one translation unit plus fuzzcore.
 */
#ifndef BROKER_FUZZ_CHECK_H
#define BROKER_FUZZ_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "frame.h"

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

/* p[0..n) lies inside base[0..len). */
static inline bool fuzz_inside(const char *p, size_t n, const char *base, size_t len)
{
    return p >= base && n <= len && (size_t)(p - base) <= len - n;
}

/* Everything a client reads is one line holding one JSON object: n bytes
 * ending in the only '\n', the rest scanned DONE as an object to the end. */
static inline void fuzz_check_response_line(const char *p, size_t n)
{
    struct frame_scanner s;
    size_t used = 0;

    FUZZ_CHECK(n >= 2 && p[n - 1] == '\n');
    FUZZ_CHECK(memchr(p, '\n', n - 1) == NULL);
    frame_init(&s, FRAME_MAX_DEPTH, FRAME_F_TOP_OBJECT);
    FUZZ_CHECK(frame_feed(&s, p, n - 1, &used) == FRAME_DONE);
    FUZZ_CHECK(used == n - 1);
}

#endif /* BROKER_FUZZ_CHECK_H */
