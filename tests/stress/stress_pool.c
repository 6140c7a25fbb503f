/*
 * stress_pool.c - RACE_CONDITION_001 (seeds/001): many threads hammer a pool
 * of 1 or 2 slots; no slot may ever be held by two threads, no queued waiter
 * may be stranded (lost wake-up), and every slot is back at the end.
 *
 * Each thread loops: acquire with its own token; on POOL_QUEUED it waits for
 * the handoff callback to drop the slot into its mailbox. While holding a
 * slot it claims owner[slot] with a CAS from -1 (an independent check of the
 * pool's own tripwire), touches the slot, and releases. A waiter that is not
 * served within 10 s counts as a lost wake-up. The last two cases drive the
 * waiter ring itself round and round, with and without stale tokens (see
 * "Waiter-ring wrap-around" below).
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pool.h"
#include "stress.h"

#ifdef BROKER_SANITIZE_THREAD
#define ROUNDS 3000
#else
#define ROUNDS 50000
#endif
#define THREADS 8

struct pool_stress {
    struct pool pool;
    _Atomic(struct pool_slot *) mailbox[THREADS + 1];
    _Atomic int owner[4];
    _Atomic uint64_t violations, lost, served;
};

static void handoff(void *arg, uint64_t token, struct pool_slot *s)
{
    struct pool_stress *ps = arg;
    /* Release: the slot's state is visible to the waiter's acquire load. */
    atomic_store_explicit(&ps->mailbox[token], s, memory_order_release);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct worker_arg {
    struct pool_stress *ps;
    int id; /* token = id + 1 */
};

static struct pool_slot *wait_mailbox(struct pool_stress *ps, int tok)
{
    double deadline = now_s() + 10.0;
    unsigned spins = 0;
    struct pool_slot *s;
    while (!(s = atomic_exchange_explicit(&ps->mailbox[tok], NULL, memory_order_acquire))) {
        if (++spins % 32 == 0) {
            sched_yield();
            if (now_s() > deadline) {
                atomic_fetch_add(&ps->lost, 1);
                return NULL;
            }
        }
    }
    return s;
}

static void *hammer(void *p)
{
    struct worker_arg *a = p;
    struct pool_stress *ps = a->ps;
    int tok = a->id + 1;
    for (int r = 0; r < ROUNDS; r++) {
        struct pool_slot *s = NULL;
        enum pool_result res = pool_acquire(&ps->pool, (uint64_t)tok, &s);
        if (res == POOL_OVERLOADED) {
            sched_yield();
            continue;
        }
        if (res == POOL_QUEUED && !(s = wait_mailbox(ps, tok)))
            return NULL;
        int expect = -1;
        if (!atomic_compare_exchange_strong(&ps->owner[s->index], &expect, a->id))
            atomic_fetch_add(&ps->violations, 1);
        s->requests++; /* plain write: TSan flags it if two threads hold s */
        if (r % 4 == 0)
            sched_yield(); /* hold across a reschedule: others must queue */
        if (r % 7 == 0)
            s->fd = s->fd < 0 ? 1000 + (int)s->index : -1; /* "connect"/"close" */
        atomic_store(&ps->owner[s->index], -1);
        atomic_fetch_add(&ps->served, 1);
        pool_release(&ps->pool, s);
    }
    return NULL;
}

/* A reload resizing the pool while it is hammered (pool.h, Resizing):
 * sizes cycle through 1..slots; retire and revive must never lose a slot
 * nor hand one out twice. */
static _Atomic bool resizer_stop;

static void *resizer(void *p)
{
    struct pool_stress *ps = p;
    for (uint32_t i = 0; !atomic_load(&resizer_stop); i++) {
        pool_resize(&ps->pool, 1 + i % ps->pool.cap);
        sched_yield();
    }
    return NULL;
}

static int run(uint32_t slots, uint32_t max_queue, bool resize, char *err, size_t errlen)
{
    static struct pool_stress ps; /* large-ish; one run at a time */
    ps = (struct pool_stress){0};
    for (int i = 0; i < 4; i++)
        atomic_init(&ps.owner[i], -1);
    if (pool_init(&ps.pool, slots, slots, max_queue, handoff, &ps)) {
        snprintf(err, errlen, "pool_init failed");
        return -1;
    }
    pthread_t th[THREADS], rs;
    struct worker_arg args[THREADS];
    atomic_store(&resizer_stop, false);
    if (resize)
        pthread_create(&rs, NULL, resizer, &ps);
    for (int i = 0; i < THREADS; i++) {
        args[i] = (struct worker_arg){&ps, i};
        pthread_create(&th[i], NULL, hammer, &args[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    if (resize) {
        atomic_store(&resizer_stop, true);
        pthread_join(rs, NULL);
        pool_resize(&ps.pool, slots); /* every retired slot back */
    }
    struct pool_stats st;
    pool_stats_read(&ps.pool, &st);
    int rc = 0;
    uint32_t free_slots = ring_mpmc_size(&ps.pool.idle) + ring_mpmc_size(&ps.pool.spare);
    if (atomic_load(&ps.violations) || st.double_holds)
        snprintf(err, errlen, "slot held twice: %lu owner violations, %lu tripwire hits",
                 (unsigned long)atomic_load(&ps.violations), (unsigned long)st.double_holds), rc = -1;
    else if (atomic_load(&ps.lost))
        snprintf(err, errlen, "%lu queued waiters never served (lost wake-up)",
                 (unsigned long)atomic_load(&ps.lost)), rc = -1;
    else if (free_slots != slots || st.waiting != 0)
        snprintf(err, errlen, "after the run %u of %u slots are free and %u tokens wait",
                 free_slots, slots, st.waiting), rc = -1;
    else if (st.queued == 0 || st.handoffs == 0)
        snprintf(err, errlen, "the queue path was never exercised"), rc = -1;
    for (uint32_t i = 0; i < slots; i++)
        ps.pool.slots[i].fd = -1; /* fake fds: nothing to close */
    pool_destroy(&ps.pool);
    return rc;
}

int stress_pool_resizing(char *err, size_t errlen)
{
    return run(4, THREADS, true, err, errlen);
}

int stress_pool_one_slot(char *err, size_t errlen)
{
    return run(1, 64, false, err, errlen);
}

int stress_pool_two_slots(char *err, size_t errlen)
{
    return run(2, 64, false, err, errlen);
}

/*
 * Lock-step rounds on one slot: two threads acquire at the same instant; the
 * winner releases at once; the loser must then obtain the slot (directly or
 * by handoff) within 5 s although nobody acquires again. A release that
 * misses a just-queued token (lost wake-up) strands the loser here, where
 * the busy stress above would hide it behind later traffic.
 */
struct pingpong {
    struct pool_stress *ps;
    _Atomic int arrive;
    _Atomic int round;
    _Atomic int got;
};

static void *pingpong_thread(void *p)
{
    struct worker_arg *a = p;
    struct pingpong *pp = (struct pingpong *)(void *)a->ps;
    struct pool_stress *ps = pp->ps;
    for (int r = 0; r < ROUNDS; r++) {
        /* Barrier: both arrive, then go together. */
        atomic_fetch_add(&pp->arrive, 1);
        while (atomic_load(&pp->arrive) < 2 * (r + 1))
            ;
        struct pool_slot *s = NULL;
        enum pool_result res = pool_acquire(&ps->pool, (uint64_t)(a->id + 1), &s);
        if (res == POOL_QUEUED) {
            double deadline = now_s() + 5.0;
            while (!(s = atomic_exchange(&ps->mailbox[a->id + 1], NULL)))
                if (now_s() > deadline) {
                    atomic_fetch_add(&ps->lost, 1);
                    return NULL;
                }
        } else if (res != POOL_GOT) {
            atomic_fetch_add(&ps->violations, 1);
            return NULL;
        }
        pool_release(&ps->pool, s);
        atomic_fetch_add(&pp->got, 1);
        while (atomic_load(&pp->got) < 2 * (r + 1))
            if (atomic_load(&ps->lost))
                return NULL;
    }
    return NULL;
}

int stress_pool_pingpong(char *err, size_t errlen)
{
    static struct pool_stress ps;
    static struct pingpong pp;
    ps = (struct pool_stress){0};
    pp = (struct pingpong){.ps = &ps};
    if (pool_init(&ps.pool, 1, 1, 4, handoff, &ps)) {
        snprintf(err, errlen, "pool_init failed");
        return -1;
    }
    pthread_t th[2];
    struct worker_arg args[2];
    for (int i = 0; i < 2; i++) {
        args[i] = (struct worker_arg){(struct pool_stress *)(void *)&pp, i};
        pthread_create(&th[i], NULL, pingpong_thread, &args[i]);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    int rc = 0;
    if (atomic_load(&ps.lost))
        snprintf(err, errlen, "a queued waiter was never served (lost wake-up)"), rc = -1;
    else if (atomic_load(&ps.violations))
        snprintf(err, errlen, "unexpected acquire result"), rc = -1;
    pool_destroy(&ps.pool);
    return rc;
}

/*
 * Waiter-ring wrap-around: 2 slots, max_queue 2, 4 threads that each hold a
 * slot across a sched_yield, so nearly every acquisition queues and the
 * waiter ring wraps thousands of times (checked). With two slots two
 * releasers pop waiters at once, so a pushing acquirer can meet the cell of
 * position p - capacity still claimed by a popper preempted before it freed
 * it: the token count is below the limit (the other popper finished), yet
 * the push fails. Only pool_acquire's retry loop gets that token into the
 * ring; a token pushed once and dropped on failure is never handed a slot,
 * and the count stays up for good.
 *
 * How often a run meets that cell depends on the ring's slack: the cells
 * beyond the most tokens the pool admits. With none (a waiter ring of
 * exactly max_queue cells) any popper preempted mid-pop will do, and many
 * runs see it. The pool now admits max_queue + max(max_queue, 64) tokens
 * into a power-of-two ring (pool.h: room for stale tokens), 66 into 128
 * cells here, so the popper must stay off the CPU while 62 more tokens
 * pass: these runs rarely produce that, and nothing outside pool.c can
 * force it. The cases check what they can on every run regardless.
 *
 * Two cases:
 *   pool_waiter_wrap        every thread waits for its slot (live tokens);
 *   pool_waiter_wrap_stale  odd threads give up on every token they queue
 *                           (pool_cancel_wait); the slot that later reaches
 *                           such a token goes back through
 *                           pool_stale_returned and pool_release, by
 *                           whichever thread finds it. Stale tokens must not
 *                           count against max_queue: the ring must at some
 *                           point hold far more than max_queue tokens.
 *
 * Tokens are unique, seq << 3 | (thread + 1), so each is checked on its own:
 * handed a slot exactly once (seen[][] bitmap), live ones to their waiting
 * owner, abandoned ones back to the pool; slots obtained == GOT + live
 * handoffs; the pool's counters agree; no double hold (own owner[] CAS and
 * the pool's tripwire); at the end both slots free, no token waiting, none
 * stale, every mailbox empty.
 *
 * Watchdog: a dropped token can leave a releaser spinning for ever inside
 * dispatch_free (a token counted, none in the ring, and the slot it puts
 * back is the one it takes again), where no check in the thread itself can
 * run. So a waiter gives up after 10 s and sets `stop`, and the main thread,
 * not pthread_join, decides: threads that have not left 2 s after `stop` are
 * detached and the run is reported as hung, its memory leaked on purpose
 * since they may still touch it. (Under stress_all the stuck thread spins
 * until exit; under Criterion the test's own process ends.)
 */
#define WRAP_THREADS 4 /* at most 7: the thread is 3 bits of a token */
#define WRAP_SLOTS 2
#define WRAP_MAX_QUEUE 2
#ifdef BROKER_SANITIZE_THREAD
#define WRAP_ROUNDS 20000 /* acquisitions (GOT or queued) per thread; TSan ~10x slower */
#else
#define WRAP_ROUNDS 200000
#endif
#define WRAP_MIN_LAPS 100  /* the waiter ring must wrap at least this often */
/* Stale mode: the ring must once hold this many tokens. The pool admits
 * max_queue + 64 here (66); counting stale tokens against max_queue caps it
 * at 2, read as up to ~8 (ring_mpmc_size over-reads while pushes and pops
 * race). */
#define WRAP_PEAK_MIN 24
#define WRAP_WAIT_S 10.0   /* longest wait for one handoff */
#define WRAP_TOTAL_S 90.0  /* longest whole run (normally a few s) */

struct wrap_run;

struct wrap_thread {
    struct wrap_run *w;
    int id;
    bool abandons; /* gives up on every token it queues */
    /* Written by the thread only, read by main after the thread finished
     * (ordered by the release/acquire on `finished`). */
    uint64_t seq;        /* tokens queued so far; the next token's seq (< WRAP_ROUNDS) */
    uint64_t got, overloaded, holds, served, abandoned, raced;
};

struct wrap_run {
    struct pool pool;
    bool abandon;                 /* pool_waiter_wrap_stale */
    struct ring_mpmc stale_slots; /* slots handed to abandoned tokens */
    struct wrap_thread t[WRAP_THREADS];
    pthread_t th[WRAP_THREADS];
    _Atomic uint64_t waiting_for[WRAP_THREADS]; /* the live token, 0: none */
    _Atomic(struct pool_slot *) mailbox[WRAP_THREADS];
    _Atomic uint8_t *seen[WRAP_THREADS];        /* handoffs per token seq */
    _Atomic uint64_t live_handed[WRAP_THREADS], stale_handed[WRAP_THREADS];
    _Atomic int owner[WRAP_SLOTS];
    _Atomic uint64_t violations, double_handoffs, bad_tokens, lost;
    _Atomic uint32_t peak_queued; /* most tokens seen in the waiter ring */
    _Atomic bool stop, timed_out;
    _Atomic unsigned finished;
};

static uint64_t wrap_token(int id, uint64_t seq)
{
    return seq << 3 | (uint64_t)(id + 1);
}

static void wrap_handoff(void *arg, uint64_t token, struct pool_slot *s)
{
    struct wrap_run *w = arg;
    uint64_t id = (token & 7) - 1, seq = token >> 3;
    if ((token & 7) == 0 || id >= WRAP_THREADS || seq >= WRAP_ROUNDS) {
        atomic_fetch_add(&w->bad_tokens, 1);
        return; /* the slot is lost: the end-of-run checks report it */
    }
    if (atomic_fetch_add_explicit(&w->seen[id][seq], 1, memory_order_relaxed) != 0)
        atomic_fetch_add(&w->double_handoffs, 1);
    uint64_t live = token;
    /* The owner takes its token back from waiting_for (CAS to 0) when it
     * gives up; whoever of the two swaps it first decides live or stale. */
    if (atomic_compare_exchange_strong(&w->waiting_for[id], &live, 0)) {
        atomic_fetch_add_explicit(&w->live_handed[id], 1, memory_order_relaxed);
        struct pool_slot *prev = NULL;
        /* Release: the slot's state is visible to the owner's acquire. */
        if (!atomic_compare_exchange_strong_explicit(&w->mailbox[id], &prev, s,
                                                     memory_order_release, memory_order_relaxed))
            atomic_fetch_add(&w->double_handoffs, 1);
        return;
    }
    atomic_fetch_add_explicit(&w->stale_handed[id], 1, memory_order_relaxed);
    unsigned spins = 0;
    /* Room for every slot; only a preempted popper makes this fail. Not
     * released from here: that would recurse through dispatch_free once
     * per stale token in the ring. */
    while (!ring_mpmc_try_push(&w->stale_slots, s))
        if (++spins % 64 == 0)
            sched_yield();
}

/* Give back one slot that reached an abandoned token; false if none. */
static bool wrap_return_stale(struct wrap_run *w)
{
    void *v;
    if (!ring_mpmc_try_pop(&w->stale_slots, &v))
        return false;
    pool_stale_returned(&w->pool);
    pool_release(&w->pool, v);
    return true;
}

static struct pool_slot *wrap_wait(struct wrap_run *w, int id)
{
    double deadline = now_s() + WRAP_WAIT_S;
    unsigned spins = 0;
    struct pool_slot *s;
    while (!(s = atomic_exchange_explicit(&w->mailbox[id], NULL, memory_order_acquire))) {
        /* Every waiter returns stale slots too, or all could sit there. */
        if (wrap_return_stale(w))
            continue;
        if (++spins % 32 == 0) {
            sched_yield();
            if (atomic_load(&w->stop))
                return NULL;
            if (now_s() > deadline) {
                atomic_fetch_add(&w->lost, 1);
                atomic_store(&w->stop, true);
                return NULL;
            }
        }
    }
    return s;
}

/* A queued token its owner stops waiting for. Cancelled before the owner
 * takes the token back, so a slot the handoff then finds stale always
 * follows the cancel; if the handoff won, the slot is in the mailbox and
 * goes back as stale (the cancel is already counted). */
static void wrap_abandon(struct wrap_run *w, struct wrap_thread *t, uint64_t token)
{
    pool_cancel_wait(&w->pool);
    uint32_t n = ring_mpmc_size(&w->pool.waiters), peak = atomic_load(&w->peak_queued);
    while (n > peak && !atomic_compare_exchange_weak(&w->peak_queued, &peak, n))
        ;
    uint64_t expect = token;
    if (atomic_compare_exchange_strong(&w->waiting_for[t->id], &expect, 0)) {
        t->abandoned++;
        return;
    }
    struct pool_slot *s;
    unsigned spins = 0;
    while (!(s = atomic_exchange_explicit(&w->mailbox[t->id], NULL, memory_order_acquire)))
        if (++spins % 64 == 0)
            sched_yield(); /* the handoff is between its CAS and its store */
    t->raced++;
    pool_stale_returned(&w->pool);
    pool_release(&w->pool, s);
}

static void *wrap_thread_main(void *p)
{
    struct wrap_thread *t = p;
    struct wrap_run *w = t->w;
    /* Counted in acquisitions, not queued tokens: a thread left alone at
     * the end always gets GOT. */
    while (t->seq + t->got < WRAP_ROUNDS && !atomic_load_explicit(&w->stop, memory_order_relaxed)) {
        while (wrap_return_stale(w))
            ;
        uint64_t token = wrap_token(t->id, t->seq);
        struct pool_slot *s = NULL;
        /* Published before the acquire: the handoff can come before it returns. */
        atomic_store(&w->waiting_for[t->id], token);
        enum pool_result res = pool_acquire(&w->pool, token, &s);
        if (res != POOL_QUEUED)
            atomic_store(&w->waiting_for[t->id], 0); /* never queued: no handoff */
        if (res == POOL_OVERLOADED) {
            t->overloaded++;
            sched_yield();
            continue;
        }
        if (res == POOL_QUEUED) {
            t->seq++;
            if (t->abandons) {
                wrap_abandon(w, t, token);
                continue;
            }
            if (!(s = wrap_wait(w, t->id)))
                break;
            t->served++;
        } else {
            t->got++;
        }
        int expect = -1;
        if (s->index >= WRAP_SLOTS ||
            !atomic_compare_exchange_strong(&w->owner[s->index], &expect, t->id)) {
            atomic_fetch_add(&w->violations, 1);
            atomic_store(&w->stop, true);
            break;
        }
        s->requests++; /* plain write: TSan flags it if two threads hold s */
        sched_yield(); /* hold across a reschedule: the others must queue */
        atomic_store(&w->owner[s->index], -1);
        t->holds++;
        pool_release(&w->pool, s);
    }
    atomic_fetch_add_explicit(&w->finished, 1, memory_order_release);
    return NULL;
}

/* Waits for every thread to finish; false when some are stuck (see above). */
static bool wrap_wait_threads(struct wrap_run *w)
{
    double give_up = now_s() + WRAP_TOTAL_S, stopped_at = 0;
    while (atomic_load_explicit(&w->finished, memory_order_acquire) < WRAP_THREADS) {
        struct timespec nap = {0, 10 * 1000 * 1000};
        nanosleep(&nap, NULL);
        double now = now_s();
        if (now > give_up && !atomic_load(&w->timed_out)) {
            atomic_store(&w->timed_out, true);
            atomic_store(&w->stop, true);
        }
        if (!atomic_load(&w->stop))
            continue;
        if (stopped_at == 0)
            stopped_at = now;
        else if (now - stopped_at > 2.0)
            return false;
    }
    return true;
}

static int wrap_check(struct wrap_run *w, char *err, size_t errlen)
{
    struct pool_stats st;
    pool_stats_read(&w->pool, &st);
    uint64_t got = 0, queued = 0, overloaded = 0, holds = 0, served = 0, handed = 0;
    for (int i = 0; i < WRAP_THREADS; i++) {
        const struct wrap_thread *t = &w->t[i];
        got += t->got, queued += t->seq, overloaded += t->overloaded, holds += t->holds;
        served += t->served;
        handed += atomic_load(&w->live_handed[i]) + atomic_load(&w->stale_handed[i]);
    }
    uint64_t laps = queued / ring_mpmc_capacity(&w->pool.waiters);
    if (atomic_load(&w->violations) || st.double_holds) {
        snprintf(err, errlen, "slot held twice: %lu owner violations, %lu tripwire hits",
                 (unsigned long)atomic_load(&w->violations), (unsigned long)st.double_holds);
        return -1;
    }
    if (atomic_load(&w->double_handoffs) || atomic_load(&w->bad_tokens)) {
        snprintf(err, errlen, "%lu tokens handed a slot twice, %lu unknown tokens handed one",
                 (unsigned long)atomic_load(&w->double_handoffs),
                 (unsigned long)atomic_load(&w->bad_tokens));
        return -1;
    }
    if (atomic_load(&w->lost)) {
        snprintf(err, errlen, "%lu queued waiters never served within %.0f s (lost token)",
                 (unsigned long)atomic_load(&w->lost), WRAP_WAIT_S);
        return -1;
    }
    if (atomic_load(&w->timed_out)) {
        snprintf(err, errlen, "too slow: %lu of %lu acquisitions within %.0f s",
                 (unsigned long)(queued + got), (unsigned long)WRAP_THREADS * WRAP_ROUNDS,
                 WRAP_TOTAL_S);
        return -1;
    }
    for (int i = 0; i < WRAP_THREADS; i++) {
        const struct wrap_thread *t = &w->t[i];
        for (uint64_t q = 0; q < t->seq; q++)
            if (atomic_load_explicit(&w->seen[i][q], memory_order_relaxed) != 1) {
                snprintf(err, errlen, "token %lu of thread %d was handed a slot %u times, not once",
                         (unsigned long)q, i, atomic_load(&w->seen[i][q]));
                return -1;
            }
        uint64_t live = atomic_load(&w->live_handed[i]), stale = atomic_load(&w->stale_handed[i]);
        if (live != t->served + t->raced || stale != t->abandoned) {
            snprintf(err, errlen, "thread %d: %lu live handoffs for %lu waits (+%lu raced with "
                     "the cancel), %lu stale ones for %lu abandoned tokens", i,
                     (unsigned long)live, (unsigned long)t->served, (unsigned long)t->raced,
                     (unsigned long)stale, (unsigned long)t->abandoned);
            return -1;
        }
        if (atomic_load(&w->mailbox[i])) {
            snprintf(err, errlen, "thread %d has a slot in its mailbox after the run", i);
            return -1;
        }
    }
    uint32_t free_slots = ring_mpmc_size(&w->pool.idle) + ring_mpmc_size(&w->pool.spare);
    if (holds != got + served)
        snprintf(err, errlen, "%lu slots held: %lu GOT + %lu live handoffs", (unsigned long)holds,
                 (unsigned long)got, (unsigned long)served);
    else if (st.acquired_idle + st.acquired_spare != got || st.handoffs != handed ||
             st.queued != queued || st.overloaded != overloaded)
        snprintf(err, errlen, "pool counters (got %lu, handoffs %lu, queued %lu, overloaded %lu) "
                 "disagree with the threads' (%lu, %lu, %lu, %lu)",
                 (unsigned long)(st.acquired_idle + st.acquired_spare), (unsigned long)st.handoffs,
                 (unsigned long)st.queued, (unsigned long)st.overloaded, (unsigned long)got,
                 (unsigned long)handed, (unsigned long)queued, (unsigned long)overloaded);
    else if (free_slots != WRAP_SLOTS || st.waiting != 0 || st.stale != 0)
        snprintf(err, errlen, "after the run %u of %u slots are free, %u tokens wait, %u stale",
                 free_slots, WRAP_SLOTS, st.waiting, st.stale);
    else if (w->abandon && atomic_load(&w->peak_queued) < WRAP_PEAK_MIN)
        snprintf(err, errlen, "at most %u tokens were ever queued: stale tokens count against "
                 "max_queue %u", atomic_load(&w->peak_queued), WRAP_MAX_QUEUE);
    else if (laps < WRAP_MIN_LAPS)
        snprintf(err, errlen, "%lu tokens queued: the %u-cell waiter ring wrapped only %lu times",
                 (unsigned long)queued, ring_mpmc_capacity(&w->pool.waiters),
                 (unsigned long)laps);
    else
        return 0;
    return -1;
}

static void wrap_free(struct wrap_run *w)
{
    for (int i = 0; i < WRAP_THREADS; i++)
        free((void *)w->seen[i]);
    ring_mpmc_destroy(&w->stale_slots);
    for (uint32_t i = 0; i < WRAP_SLOTS; i++)
        w->pool.slots[i].fd = -1; /* never "connected": nothing to close */
    pool_destroy(&w->pool);
    free(w);
}

static int wrap_run(bool abandon, char *err, size_t errlen)
{
    /* Heap, not static: leaked when threads are stuck inside the pool. */
    size_t bytes = (sizeof(struct wrap_run) + RING_CACHELINE - 1) & ~(size_t)(RING_CACHELINE - 1);
    struct wrap_run *w = aligned_alloc(RING_CACHELINE, bytes);
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memset(w, 0, bytes);
    w->abandon = abandon;
    for (int i = 0; i < WRAP_SLOTS; i++)
        atomic_init(&w->owner[i], -1);
    bool ok = pool_init(&w->pool, WRAP_SLOTS, WRAP_SLOTS, WRAP_MAX_QUEUE, wrap_handoff, w) == 0;
    ok = ok && ring_mpmc_init(&w->stale_slots, WRAP_SLOTS) == 0;
    for (int i = 0; ok && i < WRAP_THREADS; i++)
        ok = (w->seen[i] = calloc(WRAP_ROUNDS, 1)) != NULL;
    if (!ok) {
        wrap_free(w);
        snprintf(err, errlen, "pool_init or an allocation failed");
        return -1;
    }
    for (int i = 0; i < WRAP_THREADS; i++) {
        w->t[i] = (struct wrap_thread){.w = w, .id = i, .abandons = abandon && i % 2};
        if (pthread_create(&w->th[i], NULL, wrap_thread_main, &w->t[i]))
            abort(); /* test harness: no way to unwind running threads */
    }
    if (!wrap_wait_threads(w)) {
        for (int i = 0; i < WRAP_THREADS; i++)
            pthread_detach(w->th[i]);
        snprintf(err, errlen,
                 "hung: %u of %d threads never left pool_acquire/pool_release "
                 "(%lu waiters unserved for %.0f s: a lost token?)",
                 WRAP_THREADS - atomic_load(&w->finished), WRAP_THREADS,
                 (unsigned long)atomic_load(&w->lost), WRAP_WAIT_S);
        return -1;
    }
    for (int i = 0; i < WRAP_THREADS; i++)
        pthread_join(w->th[i], NULL);
    /* Abandoned tokens may still be queued: each returned slot pops the next
     * one, whose slot comes back here, until the ring is empty. */
    while (wrap_return_stale(w))
        ;
    int rc = wrap_check(w, err, errlen);
    wrap_free(w);
    return rc;
}

int stress_pool_waiter_wrap(char *err, size_t errlen)
{
    return wrap_run(false, err, errlen);
}

int stress_pool_waiter_wrap_stale(char *err, size_t errlen)
{
    return wrap_run(true, err, errlen);
}
