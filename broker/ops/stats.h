/*
 * stats.h - the broker's figures as JSON (admin socket) and as counts
 * (metrics.c). Admin thread only; see stats.c for where each figure lives.
 */
#ifndef BROKER_STATS_H
#define BROKER_STATS_H

#include <jansson.h>
#include <stdint.h>

#include "broker.h"

/* One backend's request counts, summed over the workers. */
struct stats_counts {
    uint64_t ok, errors, timeouts, cache_hits, cache_misses, stale_served, coalesced, retries,
        abandoned;
};

void stats_counts_read(struct broker *b, uint32_t backend, struct stats_counts *out);
uint64_t stats_errors_by_code(struct broker *b, enum proto_code code);
uint64_t stats_uptime_ms(const struct broker *b);
/* Slots held right now (ps read from be's pool just before). */
uint64_t stats_pool_busy(struct backend *be, const struct pool_stats *ps);

/* New references (NULL only when out of memory). */
json_t *stats_json(struct broker *b);  /* requests, errors by code, clients, queues */
json_t *health_json(struct broker *b); /* per backend: health and breaker */
json_t *pool_json(struct broker *b);   /* per backend: connections and waiters */
json_t *cache_json(struct broker *b);  /* entries, bytes, hits, misses, evictions, ratio */
json_t *memory_json(struct broker *b); /* jemalloc figures, the cache arena, RSS */

#endif /* BROKER_STATS_H */
