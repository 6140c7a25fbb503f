/*
 * breaker.c - the circuit breaker (see breaker.h for the contract).
 *
 * Principle: `state` says closed, open or half-open; `until_ns` says until
 * when the current refusal lasts (the open period, or the probe's lease).
 * Every change of either is a compare-and-swap against a value read just
 * before, so of two threads making the same move exactly one wins, and a
 * thread that read long ago cannot overwrite a newer lease or period.
 *
 *   - The probe is a lease on until_ns: allow() takes it by swapping an
 *     expired until_ns for now + probe_lease. The same swap grants the
 *     first probe of an open period (then OPEN -> HALF_OPEN) and takes over
 *     a lapsed lease (the state stays HALF_OPEN): one probe per expiry.
 *   - Opening swaps until_ns first, then the state. A reader in between
 *     sees a future until_ns and refuses, as the state is about to say; it
 *     never sees OPEN with a stale expired until_ns (which would hand out a
 *     probe the instant the circuit opens).
 *   - Refusal is one rule for both states: while now < until_ns refuse
 *     with the time left. Half-open that is what is left of the probe's
 *     lease: by then the probe has closed the circuit, reopened it (the
 *     caller is refused again, with the new time) or lost its turn.
 *   - `fails` counts only while closed and is cleared when the circuit
 *     closes; it keeps its value while open (the stats show what opened
 *     it). A failure that brings it to `failures` or beyond tries to open:
 *     `>=`, not `==`, so a count that passed the threshold while the opener
 *     lost a race still opens at the next failure.
 *   - A trip while half-open opens for the period in force, not doubled:
 *     doubling is the answer to a failed probe only.
 *
 * Limit: outcomes carry no identity. A probe that lost its lease and
 * reports late is taken for the probe in force.
 */
#include "breaker.h"

#include <stddef.h>

#define NS_PER_MS 1000000ull
#define GOLDEN    0x9e3779b97f4a7c15ull /* splitmix64's increment */

/* All loads of state and until_ns are acquire and every swap acq_rel: a
 * thread that sees a new state (or until_ns) also sees the period, reason
 * and fails written before the swap that published it. */
#define LD(p) atomic_load_explicit((p), memory_order_acquire)
#define CAS(p, e, d)                                                                               \
    atomic_compare_exchange_strong_explicit((p), (e), (d), memory_order_acq_rel,                   \
                                            memory_order_acquire)
#define COUNT(p) atomic_fetch_add_explicit((p), 1, memory_order_relaxed)

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* ceil((until - now) / 1 ms), at least 1 since now < until. */
static uint32_t ms_left(uint64_t until, uint64_t now)
{
    uint64_t d = until - now;
    uint64_t ms = d / NS_PER_MS + (d % NS_PER_MS != 0);
    return ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
}

/* splitmix64 on a shared counter: fetch_add gives concurrent callers
 * distinct draws without a lock. */
static uint64_t draw(struct breaker *b)
{
    uint64_t z = atomic_fetch_add_explicit(&b->rng, GOLDEN, memory_order_relaxed) + GOLDEN;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t period_in_force(struct breaker *b, const struct breaker_cfg *cfg)
{
    uint64_t p = atomic_load_explicit(&b->period_ns, memory_order_relaxed);
    return p ? p : cfg->open_ns;
}

/* Move from `from` to OPEN for `period` plus jitter in [0, period/4], the
 * total kept <= max_open_ns. `u` is until_ns as read before the caller read
 * the state. False when another thread changed either meanwhile. */
static bool open_from(struct breaker *b, const struct breaker_cfg *cfg, uint64_t now, uint32_t from,
                      uint64_t u, uint64_t period, uint32_t reason)
{
    uint64_t room = cfg->max_open_ns > period ? cfg->max_open_ns - period : 0;
    uint64_t jitter = draw(b) % (period / 4 + 1);
    uint64_t until = sat_add(now, period + (jitter < room ? jitter : room));

    if (!CAS(&b->until_ns, &u, until))
        return false;
    atomic_store_explicit(&b->period_ns, period, memory_order_relaxed);
    atomic_store_explicit(&b->reason, reason, memory_order_relaxed);
    if (!CAS(&b->state, &from, BREAKER_OPEN)) /* publishes the two stores above */
        return false;
    COUNT(&b->n_opened);
    return true;
}

/* After a swap to CLOSED: a fresh count and period. Clearing until_ns
 * (against the value read before the swap) makes a failure that counted
 * before the close fail its own swap and re-read fails, now 0. */
static void closed_from(struct breaker *b, uint64_t u)
{
    atomic_store_explicit(&b->fails, 0, memory_order_relaxed);
    atomic_store_explicit(&b->period_ns, 0, memory_order_relaxed);
    CAS(&b->until_ns, &u, 0); /* release: pairs with the acquire of a failed swap */
    COUNT(&b->n_closed);
}

void breaker_init(struct breaker *b, uint64_t seed)
{
    atomic_init(&b->state, BREAKER_CLOSED);
    atomic_init(&b->fails, 0);
    atomic_init(&b->until_ns, 0);
    atomic_init(&b->period_ns, 0);
    atomic_init(&b->reason, 0);
    atomic_init(&b->rng, seed);
    atomic_init(&b->n_opened, 0);
    atomic_init(&b->n_probes, 0);
    atomic_init(&b->n_closed, 0);
    atomic_init(&b->n_refused, 0);
}

enum breaker_verdict breaker_allow(struct breaker *b, const struct breaker_cfg *cfg, uint64_t now,
                                   uint32_t *retry_after_ms, uint32_t *reason)
{
    for (;;) {
        uint32_t s = LD(&b->state);
        if (s == BREAKER_CLOSED)
            return BREAKER_PASS;
        uint64_t u = LD(&b->until_ns);
        if (now < u) {
            if (retry_after_ms)
                *retry_after_ms = ms_left(u, now);
            if (reason)
                *reason = atomic_load_explicit(&b->reason, memory_order_relaxed);
            COUNT(&b->n_refused);
            return BREAKER_REFUSE;
        }
        if (!CAS(&b->until_ns, &u, sat_add(now, cfg->probe_lease_ns)))
            continue; /* another caller took this expiry: look again */
        /* The lease is ours. A failed swap leaves HALF_OPEN (we took over a
         * lease) or CLOSED (reset meanwhile: no probe needed). */
        if (s == BREAKER_OPEN && !CAS(&b->state, &s, BREAKER_HALF_OPEN) && s == BREAKER_CLOSED)
            return BREAKER_PASS;
        COUNT(&b->n_probes);
        return BREAKER_PROBE;
    }
}

bool breaker_success(struct breaker *b, const struct breaker_cfg *cfg, bool probe)
{
    (void)cfg;
    if (probe) {
        uint64_t u = LD(&b->until_ns);
        uint32_t s = BREAKER_HALF_OPEN;
        if (CAS(&b->state, &s, BREAKER_CLOSED)) {
            closed_from(b, u);
            return true;
        }
    }
    /* The hot path: one load while nothing failed. */
    if (atomic_load_explicit(&b->fails, memory_order_relaxed) != 0 &&
        LD(&b->state) == BREAKER_CLOSED)
        atomic_store_explicit(&b->fails, 0, memory_order_relaxed);
    return false;
}

bool breaker_failure(struct breaker *b, const struct breaker_cfg *cfg, uint64_t now, bool probe,
                     uint32_t reason)
{
    uint64_t u;
    uint32_t s;
    while (probe) {
        u = LD(&b->until_ns);
        s = LD(&b->state);
        if (s == BREAKER_OPEN)
            return false; /* turn given back or tripped meanwhile */
        if (s == BREAKER_CLOSED)
            break; /* reset meanwhile: counts as any failure while closed */
        uint64_t p = period_in_force(b, cfg);
        p = p > cfg->max_open_ns / 2 ? cfg->max_open_ns : 2 * p;
        if (open_from(b, cfg, now, BREAKER_HALF_OPEN, u, p, reason))
            return true;
    }
    if (LD(&b->state) != BREAKER_CLOSED)
        return false; /* a late outcome of a request sent before it opened */
    if (atomic_fetch_add_explicit(&b->fails, 1, memory_order_relaxed) + 1 < cfg->failures)
        return false;
    for (;;) {
        u = LD(&b->until_ns);
        s = LD(&b->state);
        if (s != BREAKER_CLOSED ||
            atomic_load_explicit(&b->fails, memory_order_relaxed) < cfg->failures)
            return false; /* opened by another thread, or reset */
        if (open_from(b, cfg, now, BREAKER_CLOSED, u, cfg->open_ns, reason))
            return true;
    }
}

void breaker_probe_abandoned(struct breaker *b)
{
    uint64_t u = LD(&b->until_ns);
    uint32_t s = BREAKER_HALF_OPEN;
    if (CAS(&b->state, &s, BREAKER_OPEN))
        CAS(&b->until_ns, &u, 0); /* fails only if a new probe took it meanwhile */
}

bool breaker_trip(struct breaker *b, const struct breaker_cfg *cfg, uint64_t now, uint32_t reason)
{
    for (;;) {
        uint64_t u = LD(&b->until_ns);
        uint32_t s = LD(&b->state);
        if (s == BREAKER_OPEN)
            return false;
        uint64_t p = s == BREAKER_CLOSED ? cfg->open_ns : period_in_force(b, cfg);
        if (open_from(b, cfg, now, s, u, p, reason))
            return true;
    }
}

bool breaker_reset(struct breaker *b)
{
    uint64_t u = LD(&b->until_ns);
    uint32_t s = LD(&b->state);
    do {
        if (s == BREAKER_CLOSED)
            return false;
    } while (!CAS(&b->state, &s, BREAKER_CLOSED));
    closed_from(b, u);
    return true;
}

void breaker_stats_read(struct breaker *b, uint64_t now, struct breaker_stats *out)
{
    uint32_t s = LD(&b->state);
    uint64_t u = LD(&b->until_ns);
    out->state = (enum breaker_state)s;
    out->fails = atomic_load_explicit(&b->fails, memory_order_relaxed);
    out->reason = atomic_load_explicit(&b->reason, memory_order_relaxed);
    out->retry_after_ms = s == BREAKER_OPEN && now < u ? ms_left(u, now) : 0;
    out->opened = atomic_load_explicit(&b->n_opened, memory_order_relaxed);
    out->probes = atomic_load_explicit(&b->n_probes, memory_order_relaxed);
    out->closed = atomic_load_explicit(&b->n_closed, memory_order_relaxed);
    out->refused = atomic_load_explicit(&b->n_refused, memory_order_relaxed);
}

const char *breaker_state_name(enum breaker_state s)
{
    switch (s) {
    case BREAKER_CLOSED:
        return "closed";
    case BREAKER_OPEN:
        return "open";
    case BREAKER_HALF_OPEN:
        return "half_open";
    }
    return "unknown";
}
