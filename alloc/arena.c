/*
 * arena.c - jemalloc arena lifetime and memory figures.
 *
 * Design: jemalloc keeps its statistics in per-arena counters and publishes a
 * merged snapshot only when someone writes the `epoch` mallctl (jemalloc(3),
 * "epoch": "If a value is passed in, refresh the data from which the mallctl*()
 * functions report values"). Every reader here writes the epoch first, so a
 * figure is never older than the call that returned it; there is no cached
 * copy to go stale (seed 000's health checks reported stale figures).
 *
 * An arena's allocated bytes are `stats.arenas.<i>.small.allocated` plus
 * `stats.arenas.<i>.large.allocated`: jemalloc counts size-class bytes, i.e.
 * exactly what sallocx() reports for each live block, which is what lets the
 * cache check its own accounting against the allocator.
 *
 * Readers take one process-wide mutex around the epoch write and the reads
 * that follow: another thread's epoch between them would mix two snapshots
 * (the admin thread and worker 0's pressure check both read), and the lock
 * gives the sanitizers the ordering of jemalloc's own lazily built stats
 * structures, which they cannot see inside the uninstrumented library (TSan
 * reported a race on a stats mutex jemalloc had just mapped on the other
 * thread). Readers are rare, so the lock never waits for long.
 *
 * Names are built with snprintf and looked up with mallctl on every call:
 * these are admin/soak/pressure-check paths (a few calls per second), not
 * request paths, so a MIB cache would be complexity without a reader.
 */
#include "arena.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* mallctl returns a positive errno value; this module returns -errno. */
static int ctl_read_size(const char *name, uint64_t *out)
{
    size_t v = 0;
    size_t len = sizeof(v);
    int rc = mallctl(name, &v, &len, NULL, 0);
    if (rc != 0)
        return -rc;
    *out = (uint64_t)v;
    return 0;
}

/* Refresh jemalloc's statistics snapshot; every read below depends on it. */
static int ctl_epoch(void)
{
    uint64_t epoch = 1;
    size_t len = sizeof(epoch);
    int rc = mallctl("epoch", &epoch, &len, &epoch, sizeof(epoch));
    return rc != 0 ? -rc : 0;
}

/* Arena figures, assuming the caller just refreshed the epoch. */
static int arena_allocated_nofresh(unsigned a, uint64_t *out)
{
    char name[64];
    uint64_t small = 0;
    uint64_t large = 0;
    int rc;

    snprintf(name, sizeof(name), "stats.arenas.%u.small.allocated", a);
    rc = ctl_read_size(name, &small);
    if (rc != 0)
        return rc;
    snprintf(name, sizeof(name), "stats.arenas.%u.large.allocated", a);
    rc = ctl_read_size(name, &large);
    if (rc != 0)
        return rc;
    *out = small + large;
    return 0;
}

int arena_create(unsigned *arena_out)
{
    bool stats = false;
    size_t len = sizeof(stats);
    int rc = mallctl("config.stats", &stats, &len, NULL, 0);
    if (rc != 0)
        return -rc;
    /* Without stats every figure would read 0 and the cache's accounting
     * could not be checked; refuse rather than report nonsense. */
    if (!stats)
        return -ENOTSUP;

    unsigned a = 0;
    len = sizeof(a);
    rc = mallctl("arenas.create", &a, &len, NULL, 0);
    if (rc != 0)
        return -rc;
    *arena_out = a;
    return 0;
}

int arena_destroy(unsigned a)
{
    char name[64];
    snprintf(name, sizeof(name), "arena.%u.destroy", a);
    int rc = mallctl(name, NULL, NULL, NULL, 0);
    return rc != 0 ? -rc : 0;
}

static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;

int arena_allocated(unsigned a, uint64_t *out)
{
    pthread_mutex_lock(&stats_lock);
    int rc = ctl_epoch();
    if (rc == 0)
        rc = arena_allocated_nofresh(a, out);
    pthread_mutex_unlock(&stats_lock);
    return rc;
}

int arena_process_allocated(uint64_t *out)
{
    pthread_mutex_lock(&stats_lock);
    int rc = ctl_epoch();
    if (rc == 0)
        rc = ctl_read_size("stats.allocated", out);
    pthread_mutex_unlock(&stats_lock);
    return rc;
}

int arena_rss(uint64_t *out)
{
    /* open/read into a stack buffer rather than stdio: no allocation, and
     * the fd is closed on every path. statm is "size resident shared ..." in
     * pages (proc(5)). */
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    int err = errno;
    close(fd);
    if (n < 0)
        return -err;
    buf[n] = '\0';

    char *p = buf;
    char *end = NULL;
    errno = 0;
    (void)strtoull(p, &end, 10); /* size: skipped */
    if (end == p || errno != 0)
        return -EIO;
    p = end;
    unsigned long long pages = strtoull(p, &end, 10);
    if (end == p || errno != 0)
        return -EIO;
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0)
        return -EIO;
    *out = (uint64_t)pages * (uint64_t)page;
    return 0;
}

int arena_stats_read(unsigned a, struct arena_stats *out)
{
    static const struct {
        const char *name;
        size_t offset;
    } figures[] = {
        {"stats.allocated", offsetof(struct arena_stats, allocated)},
        {"stats.active", offsetof(struct arena_stats, active)},
        {"stats.resident", offsetof(struct arena_stats, resident)},
        {"stats.mapped", offsetof(struct arena_stats, mapped)},
        {"stats.retained", offsetof(struct arena_stats, retained)},
    };

    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&stats_lock);
    int rc = ctl_epoch();
    for (size_t i = 0; rc == 0 && i < sizeof(figures) / sizeof(figures[0]); i++) {
        uint64_t *field = (uint64_t *)(void *)((char *)out + figures[i].offset);
        rc = ctl_read_size(figures[i].name, field);
    }
    if (rc == 0 && a != ARENA_NONE)
        rc = arena_allocated_nofresh(a, &out->arena_allocated);
    pthread_mutex_unlock(&stats_lock);
    if (rc != 0)
        return rc;
    return arena_rss(&out->rss);
}
