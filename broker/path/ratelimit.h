/*
 * ratelimit.h - token buckets per client identity, one table per worker.
 *
 * A bucket holds up to `burst` tokens and gains `rate` per second; a request
 * takes one or is refused with the time until the next token. Tokens are
 * counted in fixed point (RL_ONE per token) as unsigned integers that only
 * ever saturate: taking is guarded by a comparison, refill is clamped at the
 * burst, so a count can never go negative or wrap (BUG-010 of seeds/000).
 *
 * The table maps a client identity (the peer uid from SO_PEERCRED, or a
 * per-connection key when there is none) to its bucket. It belongs to one
 * worker and is used only on that worker's thread, lookups, inserts and the
 * sweep alike, so a sweep can never race with a use: there is nothing to
 * lock. A bucket that has refilled to full carries no information (a new one
 * would be identical), so the sweep frees exactly those, and no client holds
 * a pointer to a bucket across calls.
 *
 * The limit holds per worker: a uid whose connections are spread over W
 * workers may get up to W x rate in all.
 */
#ifndef BROKER_RATELIMIT_H
#define BROKER_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RL_ONE 1000000ull /* fixed-point units per token */

struct tbucket {
    uint64_t tokens;  /* RL_ONE units, <= burst * RL_ONE */
    uint64_t last_ns; /* time of the last refill */
};

/* A full bucket at now. */
void tbucket_init(struct tbucket *tb, uint32_t burst, uint64_t now);

/* Refill to now, then take one token: true. Else false and *retry_after_ms
 * (>= 1) is the wait until one token is there. rate >= 1, burst >= 1; now may
 * go backwards (treated as no time passed). */
bool tbucket_take(struct tbucket *tb, uint32_t rate, uint32_t burst, uint64_t now,
                  uint32_t *retry_after_ms);

/* Whether the bucket would be full at now (the sweep's test). */
bool tbucket_full(const struct tbucket *tb, uint32_t rate, uint32_t burst, uint64_t now);

struct rl_entry;

struct ratelimit {
    struct rl_entry **slots; /* open hash, chained */
    size_t nslots;
    size_t n;       /* buckets in the table */
    size_t max;     /* refuse to grow past this many buckets */
    uint64_t swept; /* buckets freed by sweeps so far */
};

/* max: most buckets at once (>= 1). 0 or -ENOMEM. */
int ratelimit_init(struct ratelimit *rl, size_t max);
void ratelimit_destroy(struct ratelimit *rl);

enum rl_verdict { RL_OK = 0, RL_LIMITED = 1, RL_NOMEM = 2 };

/* Take one token from key's bucket (created full on first use). RL_LIMITED
 * sets *retry_after_ms. RL_NOMEM: no bucket could be made (table at max or
 * out of memory): the caller decides (brokerd lets the request through). */
enum rl_verdict ratelimit_take(struct ratelimit *rl, uint64_t key, uint32_t rate, uint32_t burst,
                               uint64_t now, uint32_t *retry_after_ms);

/* Free every bucket that is full at now; returns how many. */
size_t ratelimit_sweep(struct ratelimit *rl, uint32_t rate, uint32_t burst, uint64_t now);

#endif /* BROKER_RATELIMIT_H */
