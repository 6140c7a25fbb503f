/*
 * stress_pool.c - RACE_CONDITION_001 (seeds/001): many threads hammer a pool
 * of 1 or 2 slots; no slot may ever be held by two threads, no queued waiter
 * may be stranded (lost wake-up), and every slot is back at the end.
 *
 * Each thread loops: acquire with its own token; on POOL_QUEUED it waits for
 * the handoff callback to drop the slot into its mailbox. While holding a
 * slot it claims owner[slot] with a CAS from -1 (an independent check of the
 * pool's own tripwire), touches the slot, and releases. A waiter that is not
 * served within 10 s counts as a lost wake-up.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
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

static int run(uint32_t slots, uint32_t max_queue, char *err, size_t errlen)
{
    static struct pool_stress ps; /* large-ish; one run at a time */
    ps = (struct pool_stress){0};
    for (int i = 0; i < 4; i++)
        atomic_init(&ps.owner[i], -1);
    if (pool_init(&ps.pool, slots, max_queue, handoff, &ps)) {
        snprintf(err, errlen, "pool_init failed");
        return -1;
    }
    pthread_t th[THREADS];
    struct worker_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (struct worker_arg){&ps, i};
        pthread_create(&th[i], NULL, hammer, &args[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
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

int stress_pool_one_slot(char *err, size_t errlen)
{
    return run(1, 64, err, errlen);
}

int stress_pool_two_slots(char *err, size_t errlen)
{
    return run(2, 64, err, errlen);
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
    if (pool_init(&ps.pool, 1, 4, handoff, &ps)) {
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
