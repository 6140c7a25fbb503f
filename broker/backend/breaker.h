/*
 * breaker.h - the circuit breaker of one backend: closed, open, half-open.
 *
 * Principle: a backend that keeps failing is not asked again on every
 * request. After `failures` consecutive failures (connect errors, timeouts,
 * framing errors, a health check that falls) the circuit opens: requests get
 * `unavailable` at once, with the time left in `retry_after_ms`. When the
 * open period ends, exactly one request passes as the half-open probe; its
 * success closes the circuit, its failure opens it again for twice as long
 * (plus up to a quarter of jitter, so many brokers do not probe in step), up
 * to max_open. A probe that ends without an outcome (its client left, it
 * timed out in the queue) gives its turn back (breaker_probe_abandoned); a
 * probe that is never reported at all loses its lease after probe_lease and
 * another request probes.
 *
 * Outcomes of requests that were not the probe count only while closed: a
 * late failure of a request sent before the circuit opened neither extends
 * the open period nor fails the probe.
 *
 * Thread safety: every function may be called from any thread at once; the
 * state is a few atomics changed by compare-and-swap, no lock. The hot path
 * (closed, success) is one load when nothing failed, plus a store otherwise.
 * Time is passed in (monotonic ns) so the unit tests drive a fake clock.
 */
#ifndef BROKER_BREAKER_H
#define BROKER_BREAKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum breaker_state { BREAKER_CLOSED = 0, BREAKER_OPEN = 1, BREAKER_HALF_OPEN = 2 };

enum breaker_verdict {
    BREAKER_PASS = 0,   /* closed: go ahead */
    BREAKER_PROBE = 1,  /* you are the half-open probe: report your outcome with probe = true */
    BREAKER_REFUSE = 2, /* open (or a probe is in flight): fail fast, retry after *retry_after_ms */
};

struct breaker_cfg {
    uint32_t failures;       /* consecutive failures that open the circuit (>= 1) */
    uint64_t open_ns;        /* first open period */
    uint64_t max_open_ns;    /* longest open period (>= open_ns) */
    uint64_t probe_lease_ns; /* a probe not reported within this gives its turn away */
};

struct breaker {
    _Atomic uint32_t state;    /* enum breaker_state */
    _Atomic uint32_t fails;    /* consecutive failures while closed */
    _Atomic uint64_t until_ns; /* open: end of the open period; half-open: end of the probe lease */
    _Atomic uint64_t period_ns; /* open period in force (before jitter); 0 = open_ns */
    _Atomic uint32_t reason;    /* caller's code of the failure that opened it last */
    _Atomic uint64_t rng;       /* jitter state */
    _Atomic uint64_t n_opened, n_probes, n_closed, n_refused; /* counters */
};

struct breaker_stats {
    enum breaker_state state;
    uint32_t fails;
    uint32_t reason;
    uint64_t retry_after_ms; /* open: time left; else 0 */
    uint64_t opened, probes, closed, refused;
};

/* Closed, no failures; seed feeds the jitter. */
void breaker_init(struct breaker *b, uint64_t seed);

/* May a request go to the backend at `now`? On BREAKER_REFUSE
 * *retry_after_ms (>= 1) says when to try again and *reason is the code
 * given with the failure that opened the circuit. */
enum breaker_verdict breaker_allow(struct breaker *b, const struct breaker_cfg *cfg, uint64_t now,
                                   uint32_t *retry_after_ms, uint32_t *reason);

/* The backend answered (any reply, error replies included: it is alive).
 * Returns true when this closed the circuit (the caller logs it). */
bool breaker_success(struct breaker *b, const struct breaker_cfg *cfg, bool probe);

/* The backend failed a request. Returns true when this opened the circuit
 * (the caller logs it); reason is the caller's code for why. */
bool breaker_failure(struct breaker *b, const struct breaker_cfg *cfg, uint64_t now, bool probe,
                     uint32_t reason);

/* The probe ended without an outcome: the next request may probe at once. */
void breaker_probe_abandoned(struct breaker *b);

/* Health checks: trip opens the circuit now whatever the count (true if it
 * was not open); reset closes it (true if it was not closed). */
bool breaker_trip(struct breaker *b, const struct breaker_cfg *cfg, uint64_t now, uint32_t reason);
bool breaker_reset(struct breaker *b);

void breaker_stats_read(struct breaker *b, uint64_t now, struct breaker_stats *out);

const char *breaker_state_name(enum breaker_state s);

#endif /* BROKER_BREAKER_H */
