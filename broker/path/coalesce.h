/*
 * coalesce.h - identical concurrent cache misses share one backend call.
 *
 * Principle: the first miss of a key becomes the leader and gets a ticket;
 * the same key missing again while the leader is in flight joins that
 * ticket as a follower (a 64-bit token, a value: worker | request | gen)
 * instead of going to the backend. When the leader's answer is written,
 * the ticket is closed - taken out of the table, so no one joins after -
 * and carries the answer's bytes after {"id":<id>, which every follower
 * gets with its own id in front. Followers on other workers are reached
 * with one MSG_RING per worker (coalesce_deliver in worker code).
 *
 * Key: backend index and the backend request bytes ({"type":..,"params":..}
 * as forwarded), so "identical" means the backend would see the same bytes.
 *
 * A follower that goes away (client gone, its own deadline) does not
 * cancel anything: its token goes stale and is skipped on delivery. A
 * leader whose client goes away still runs (handoff.c), for its followers.
 * A ticket ends on every path of its leader: answer, error, timeout,
 * shutdown - every one goes through the request's single answer function.
 *
 * Thread safety: join and close take the key's shard mutex (misses only;
 * hits never come here). A closed ticket is immutable; it is freed by its
 * last reference (the leader's worker, and each worker it was sent to).
 */
#ifndef BROKER_COALESCE_H
#define BROKER_COALESCE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define COALESCE_SHARDS 16u
#define COALESCE_BUCKETS 256u /* per shard; chains are short: one ticket per in-flight key */

struct coalesce_ticket {
    struct coalesce_ticket *next; /* shard chain, while open */
    uint64_t hash;
    uint32_t backend;
    size_t key_len;
    char *key;
    uint64_t *followers; /* tokens, in join order */
    uint32_t nfollowers, cap;
    _Atomic uint32_t refs;
    char *tail; /* after close: the answer after {"id":<id> */
    size_t tail_len;
};

struct coalesce_shard {
    pthread_mutex_t mu;
    struct coalesce_ticket *buckets[COALESCE_BUCKETS];
    uint32_t open; /* tickets in this shard */
};

struct coalesce {
    uint64_t seed; /* random per process: clients choose keys, so chains must not be
                      predictable (hash flooding) */
    struct coalesce_shard shards[COALESCE_SHARDS];
};

enum coalesce_role { COALESCE_LEADER = 0, COALESCE_FOLLOWER = 1 };

/* 0, or -errno (no random seed, no mutex). */
int coalesce_init(struct coalesce *co);
/* Frees tickets still open (a failed run); only when nothing else runs. */
void coalesce_destroy(struct coalesce *co);

/* COALESCE_LEADER: *t is a new open ticket holding one reference (the
 * caller's). COALESCE_FOLLOWER: token was added to the open ticket for this
 * key (*t set, no reference taken: do not touch it after). -ENOMEM: neither
 * (the caller goes to the backend alone). Thread-safe. */
int coalesce_join(struct coalesce *co, uint32_t backend, const char *key, size_t key_len,
                  uint64_t token, struct coalesce_ticket **t);

/* The leader's answer: take the ticket out of the table and store a copy
 * of tail (-ENOMEM: stored empty; followers then get no answer from it and
 * fail on their own deadline). After this the ticket is immutable; refs is
 * set to 1 + extra_refs with release order, for the workers it is sent to.
 * Thread-safe. */
int coalesce_close(struct coalesce *co, struct coalesce_ticket *t, const char *tail,
                   size_t tail_len);
void coalesce_set_refs(struct coalesce_ticket *t, uint32_t refs);

/* Acquire: pairs with the release in coalesce_set_refs, so a worker that
 * got the ticket through MSG_RING sees the answer and the follower list. */
void coalesce_acquire(struct coalesce_ticket *t);

/* Drop a reference; the last one frees the ticket. */
void coalesce_unref(struct coalesce_ticket *t);

/* Open tickets, for tests and stats (approximate across shards). */
uint32_t coalesce_open(struct coalesce *co);

#endif /* BROKER_COALESCE_H */
