/*
 * ratelimit.c - token buckets and the per-worker table (see ratelimit.h).
 *
 * Principle: a bucket is refilled lazily, when it is used. With RL_ONE
 * units per token and `rate` tokens per second a unit is worth 1000/rate
 * ns, so `elapsed` ns bring elapsed * rate / 1000 units. The unsigned
 * arithmetic stays exact and in range for any input, even rate and burst
 * up to UINT32_MAX (cap = burst * RL_ONE < 4.3e15):
 *
 *   - elapsed is compared with the time that fills the bucket before it is
 *     multiplied: at or past it the bucket is simply full; below it,
 *     elapsed * rate < (cap - tokens) * 1000 < 4.3e18 < 2^64.
 *   - tokens only grow up to the cap (a burst lowered by a reload clamps
 *     it) and only shrink by RL_ONE after a comparison: never negative,
 *     never above burst * RL_ONE. Time spent full is not banked.
 *   - last_ns moves on by the time the credited whole units are worth,
 *     rounded up, not to now: the rest carries to the next refill, so a
 *     slow bucket asked every few hundred ns still fills at its rate. The
 *     rounding never gives more than the rate and loses under one unit (a
 *     millionth of a token) per refill.
 *   - A clock that goes back credits nothing and leaves last_ns alone, so
 *     no time is paid for twice when it comes forward again.
 *
 * The table: chained hash on a power-of-two array indexed by the top bits
 * of key * 2^64/phi (Fibonacci hashing: sequential uids spread evenly),
 * doubled when it would hold more buckets than slots. It holds at most max
 * buckets, so the array stops below 2 * max; a failed doubling only
 * lengthens the chains. Entries are malloc'd one by one on first use, so a
 * lookup of a known key allocates nothing. Only the owning worker's thread
 * touches it.
 */
#include "ratelimit.h"

#include <errno.h>
#include <stdlib.h>

#define NS_PER_MS   1000000ull
#define NS_PER_UNIT 1000ull               /* / rate: 1e9 ns per RL_ONE units */
#define FIB         0x9e3779b97f4a7c15ull /* 2^64 / golden ratio */
#define FIRST_SLOTS 16

struct rl_entry {
    struct rl_entry *next;
    uint64_t key;
    struct tbucket tb;
};

static uint64_t div_ceil(uint64_t a, uint64_t b)
{
    return a / b + (a % b != 0);
}

/* The time `units` take to accrue, rounded up. units <= cap: no overflow. */
static uint64_t units_ns(uint64_t units, uint32_t rate)
{
    return div_ceil(units * NS_PER_UNIT, rate);
}

static void refill(struct tbucket *tb, uint32_t rate, uint64_t cap, uint64_t now)
{
    if (tb->tokens >= cap) {
        tb->tokens = cap;
        if (now > tb->last_ns)
            tb->last_ns = now;
        return;
    }
    if (now <= tb->last_ns)
        return;
    uint64_t elapsed = now - tb->last_ns;
    if (elapsed >= units_ns(cap - tb->tokens, rate)) { /* before any multiply */
        tb->tokens = cap;
        tb->last_ns = now;
        return;
    }
    uint64_t add = elapsed * rate / NS_PER_UNIT; /* < cap - tokens */
    tb->tokens += add;
    tb->last_ns += units_ns(add, rate); /* <= elapsed */
}

void tbucket_init(struct tbucket *tb, uint32_t burst, uint64_t now)
{
    tb->tokens = (uint64_t)burst * RL_ONE;
    tb->last_ns = now;
}

bool tbucket_take(struct tbucket *tb, uint32_t rate, uint32_t burst, uint64_t now,
                  uint32_t *retry_after_ms)
{
    refill(tb, rate, (uint64_t)burst * RL_ONE, now);
    if (tb->tokens >= RL_ONE) {
        tb->tokens -= RL_ONE;
        return true;
    }
    /* The token is due units_ns(deficit) after last_ns. Counted from
     * last_ns rather than now: the carry since is shorter than a unit's
     * time, and a whole ms is worth whole units, so the carry can never
     * move the wait across a ms boundary; if the clock went back, nothing
     * accrues before last_ns anyway. */
    uint64_t ms = div_ceil(units_ns(RL_ONE - tb->tokens, rate), NS_PER_MS); /* >= 1 */
    if (retry_after_ms)
        *retry_after_ms = ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
    return false;
}

bool tbucket_full(const struct tbucket *tb, uint32_t rate, uint32_t burst, uint64_t now)
{
    struct tbucket t = *tb;
    uint64_t cap = (uint64_t)burst * RL_ONE;
    refill(&t, rate, cap, now);
    return t.tokens >= cap;
}

static size_t slot_of(uint64_t key, size_t nslots)
{
    /* The top bits of the product are the well-mixed ones. */
    return (size_t)((key * FIB) >> (64 - __builtin_ctzll((unsigned long long)nslots)));
}

/* Twice the slots, or nothing when they cannot be had. Called only when
 * n + 1 > nslots with n < max, so nslots stays below 2 * max. */
static void grow(struct ratelimit *rl)
{
    size_t nslots = rl->nslots * 2;
    struct rl_entry **slots = calloc(nslots, sizeof *slots);
    if (!slots)
        return;
    for (size_t i = 0; i < rl->nslots; i++) {
        struct rl_entry *e = rl->slots[i], *next;
        for (; e; e = next) {
            next = e->next;
            size_t j = slot_of(e->key, nslots);
            e->next = slots[j];
            slots[j] = e;
        }
    }
    free(rl->slots);
    rl->slots = slots;
    rl->nslots = nslots;
}

int ratelimit_init(struct ratelimit *rl, size_t max)
{
    *rl = (struct ratelimit){.max = max, .nslots = FIRST_SLOTS};
    rl->slots = calloc(rl->nslots, sizeof *rl->slots);
    if (!rl->slots) {
        rl->nslots = 0;
        return -ENOMEM;
    }
    return 0;
}

void ratelimit_destroy(struct ratelimit *rl)
{
    if (!rl)
        return;
    for (size_t i = 0; i < rl->nslots; i++) {
        struct rl_entry *e = rl->slots[i], *next;
        for (; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(rl->slots);
    *rl = (struct ratelimit){0};
}

enum rl_verdict ratelimit_take(struct ratelimit *rl, uint64_t key, uint32_t rate, uint32_t burst,
                               uint64_t now, uint32_t *retry_after_ms)
{
    size_t i = slot_of(key, rl->nslots);
    struct rl_entry *e = rl->slots[i];
    while (e && e->key != key)
        e = e->next;
    if (!e) {
        if (rl->n >= rl->max || !(e = malloc(sizeof *e)))
            return RL_NOMEM;
        e->key = key;
        tbucket_init(&e->tb, burst, now);
        if (rl->n + 1 > rl->nslots) {
            grow(rl);
            i = slot_of(key, rl->nslots);
        }
        e->next = rl->slots[i];
        rl->slots[i] = e;
        rl->n++;
    }
    return tbucket_take(&e->tb, rate, burst, now, retry_after_ms) ? RL_OK : RL_LIMITED;
}

size_t ratelimit_sweep(struct ratelimit *rl, uint32_t rate, uint32_t burst, uint64_t now)
{
    size_t freed = 0;
    for (size_t i = 0; i < rl->nslots; i++) {
        struct rl_entry **pp = &rl->slots[i];
        while (*pp) {
            struct rl_entry *e = *pp;
            if (tbucket_full(&e->tb, rate, burst, now)) {
                *pp = e->next;
                free(e);
                freed++;
            } else {
                pp = &e->next;
            }
        }
    }
    rl->n -= freed;
    rl->swept += freed;
    return freed;
}
