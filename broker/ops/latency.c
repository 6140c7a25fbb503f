/*
 * latency.c - see latency.h.
 */
#include <string.h>

#include "latency.h"

const double lat_bounds_s[LAT_BUCKETS - 1] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                              0.1,    0.25,  0.5,    1,     2.5,  5,     10};

void lat_commands_init(struct lat_commands *t)
{
    pthread_mutex_init(&t->lock, NULL);
    atomic_init(&t->n, 0);
    strcpy(t->names[LAT_COMMANDS - 1], "other");
}

void lat_commands_destroy(struct lat_commands *t)
{
    pthread_mutex_destroy(&t->lock);
}

static int find(const struct lat_commands *t, uint32_t n, const char *type, size_t len)
{
    for (uint32_t i = 0; i < n; i++)
        if (strncmp(t->names[i], type, len) == 0 && t->names[i][len] == '\0')
            return (int)i;
    return -1;
}

uint32_t lat_command_slot(struct lat_commands *t, const char *type, size_t len)
{
    /* Acquire: the names below n were written before n was published. */
    uint32_t n = atomic_load_explicit(&t->n, memory_order_acquire);
    int i = find(t, n, type, len);
    if (i >= 0)
        return (uint32_t)i;
    if (n >= LAT_COMMANDS - 1 || len > CONFIG_COMMAND_MAX)
        return LAT_COMMANDS - 1;
    pthread_mutex_lock(&t->lock);
    n = atomic_load_explicit(&t->n, memory_order_relaxed);
    i = find(t, n, type, len);
    if (i < 0 && n < LAT_COMMANDS - 1) {
        memcpy(t->names[n], type, len);
        t->names[n][len] = '\0';
        atomic_store_explicit(&t->n, n + 1, memory_order_release);
        i = (int)n;
    }
    pthread_mutex_unlock(&t->lock);
    return i >= 0 ? (uint32_t)i : LAT_COMMANDS - 1;
}

const char *lat_command_name(const struct lat_commands *t, uint32_t i)
{
    return t->names[i];
}

uint32_t lat_commands_count(const struct lat_commands *t)
{
    return atomic_load_explicit(&t->n, memory_order_acquire);
}

void lat_record(struct lat_hist *h, uint32_t cmd, uint64_t ns)
{
    uint32_t b = 0;
    while (b < LAT_BUCKETS - 1 && (double)ns > lat_bounds_s[b] * 1e9)
        b++;
    _Atomic uint64_t *c = &h->buckets[cmd][b];
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_store_explicit(&h->sum_ns[cmd],
                          atomic_load_explicit(&h->sum_ns[cmd], memory_order_relaxed) + ns,
                          memory_order_relaxed);
}
