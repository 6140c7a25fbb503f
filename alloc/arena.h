/*
 * arena.h - a dedicated jemalloc arena for the cache, and the process's
 * memory figures read fresh from jemalloc and /proc.
 *
 * Why a dedicated arena: the cache is the one structure in the broker whose
 * size depends on what clients ask for, so its footprint must be measured by
 * the allocator rather than estimated (seed 003: a cache that "tracked" its
 * size and still grew). Everything the cache allocates goes through
 * mallocx(MALLOCX_ARENA(a) | MALLOCX_TCACHE_NONE): the arena holds nothing
 * else, and with the thread cache bypassed a freed block is returned to the
 * arena at once instead of sitting in a per-thread cache where it would still
 * count as allocated (or, worse, be handed to an unrelated malloc). So
 * `stats.arenas.<a>.{small,large}.allocated` equals the sum of sallocx() over
 * the live blocks, byte for byte.
 *
 * Sources: jemalloc(3) manual, "MALLCTL NAMESPACE" (epoch, arenas.create,
 * arena.<i>.destroy, stats.*); jemalloc 5.3 src/ctl.c for how the epoch write
 * merges the per-arena counters.
 *
 * Limits: figures are a snapshot taken after an `epoch` write; two calls are
 * two snapshots. Under ASan/TSan the sanitizer owns plain malloc, so the
 * process-wide figures then cover only what went through jemalloc's own entry
 * points (mallocx and jemalloc's metadata); the cache arena's figure stays
 * exact in every build.
 *
 * Thread safety: every function here may be called from any thread at any
 * time (mallctl serialises internally), except that arena_destroy must not
 * race with allocations in that arena.
 */
#ifndef ALLOC_ARENA_H
#define ALLOC_ARENA_H

#include <limits.h>
#include <stdint.h>

#include <jemalloc/jemalloc.h>

/* Pass as the arena to arena_stats_read when there is no cache arena (yet). */
#define ARENA_NONE UINT_MAX

/* Process and cache-arena memory figures, all in bytes. */
struct arena_stats {
    uint64_t allocated;       /* stats.allocated: bytes handed to the application */
    uint64_t active;          /* stats.active: bytes in active pages */
    uint64_t resident;        /* stats.resident: physically resident data pages */
    uint64_t mapped;          /* stats.mapped: bytes in active extents mapped */
    uint64_t retained;        /* stats.retained: virtual memory kept for reuse */
    uint64_t arena_allocated; /* the given arena's small + large allocated */
    uint64_t rss;             /* /proc/self/statm resident pages * page size */
};

/*
 * Flags for every allocation and deallocation in arena `a`. TCACHE_NONE on
 * the free side matters most: a block freed into the thread cache could be
 * reused by a plain malloc() and then be counted as cache memory.
 */
static inline int arena_flags(unsigned a)
{
    return MALLOCX_ARENA(a) | MALLOCX_TCACHE_NONE;
}

/*
 * Create a new, empty jemalloc arena and store its index in *arena_out.
 * Returns 0, -ENOTSUP when jemalloc was built without statistics (the figures
 * this module exists for would be zero), or -errno from mallctl.
 */
int arena_create(unsigned *arena_out);

/*
 * Destroy arena `a` (arena.<a>.destroy): every block still allocated there is
 * discarded and its memory returned to the system. The caller must have freed
 * or abandoned every pointer into the arena and must not allocate there again.
 * Returns 0 or -errno.
 */
int arena_destroy(unsigned a);

/*
 * Bytes currently allocated in arena `a` (small + large), after a fresh epoch.
 * Returns 0 or -errno.
 */
int arena_allocated(unsigned a, uint64_t *out);

/* Process-wide stats.allocated, after a fresh epoch. Returns 0 or -errno. */
int arena_process_allocated(uint64_t *out);

/* Resident set size from /proc/self/statm, in bytes. Returns 0 or -errno. */
int arena_rss(uint64_t *out);

/*
 * Every figure of struct arena_stats, fresh: one epoch write, then the
 * process figures, arena `a`'s allocated bytes and the RSS. This is what the
 * admin socket's `memory` command, the soak test and the tests read.
 * With a == ARENA_NONE, arena_allocated is 0. Returns 0 or -errno (out is then partly filled).
 */
int arena_stats_read(unsigned a, struct arena_stats *out);

#endif /* ALLOC_ARENA_H */
