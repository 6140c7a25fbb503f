/*
 * latency.h - request latency histograms per backend and command.
 *
 * Commands are named by the backend's command table: up to LAT_COMMANDS - 1
 * distinct command names per backend get a slot of their own, in the order
 * they are first seen; every later name shares the last slot, "other" (so a
 * client sending random command names cannot grow the metrics). Slots are
 * found lock-free (a scan of published names); a new name takes the
 * table's mutex once, for its whole life.
 *
 * Each worker keeps its own buckets (one writer: relaxed load + store) and
 * the admin thread sums them. Recorded: every request that went past the
 * cache (built, sent or failed), from its line being parsed to its answer
 * being written; cache hits, answered in microseconds, are counted
 * elsewhere (brokerd_cache_hits_total).
 */
#ifndef BROKER_LATENCY_H
#define BROKER_LATENCY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define LAT_COMMANDS 32 /* slots per backend; the last is "other" */
#define LAT_BUCKETS  15 /* upper bounds below, then +Inf */

extern const double lat_bounds_s[LAT_BUCKETS - 1];

struct lat_commands {
    pthread_mutex_t lock; /* taken only to add a name */
    _Atomic uint32_t n;   /* published names */
    char names[LAT_COMMANDS][CONFIG_COMMAND_MAX + 1];
};

/* One worker's figures for one backend. */
struct lat_hist {
    _Atomic uint64_t buckets[LAT_COMMANDS][LAT_BUCKETS]; /* not cumulative */
    _Atomic uint64_t sum_ns[LAT_COMMANDS];
};

void lat_commands_init(struct lat_commands *t);
void lat_commands_destroy(struct lat_commands *t);
/* The slot of a command name (type, len bytes): its own, or "other". */
uint32_t lat_command_slot(struct lat_commands *t, const char *type, size_t len);
/* The name of slot i (i < the published count, or the last: "other"). */
const char *lat_command_name(const struct lat_commands *t, uint32_t i);
uint32_t lat_commands_count(const struct lat_commands *t);

/* Record one request of slot cmd that took ns (the owning worker only). */
void lat_record(struct lat_hist *h, uint32_t cmd, uint64_t ns);

#endif /* BROKER_LATENCY_H */
