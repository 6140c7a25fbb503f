/*
 * test_pool.c - backend slot pool: on-demand connections, reuse of idle
 * connections first, bounded FIFO waiter queue, direct handoff, overload,
 * and the multi-threaded no-double-hold stress (RACE_CONDITION_001).
 */
#include <criterion/criterion.h>
#include <errno.h>

#include "pool.h"
#include "stress_expect.h"

struct handoff_log {
    uint64_t tokens[16];
    struct pool_slot *slots[16];
    int n;
};

static void record(void *arg, uint64_t token, struct pool_slot *s)
{
    struct handoff_log *log = arg;
    log->tokens[log->n] = token;
    log->slots[log->n] = s;
    log->n++;
}

Test(pool, reuses_idle_before_opening_new)
{
    struct handoff_log log = {0};
    struct pool p;
    cr_assert_eq(pool_init(&p, 3, 3, 4, record, &log), 0);
    struct pool_slot *a, *b;
    cr_assert_eq(pool_acquire(&p, 1, &a), POOL_GOT);
    cr_assert_eq(a->fd, -1, "a fresh slot is unconnected: the caller connects on demand");
    a->fd = 1000; /* pretend it connected */
    pool_release(&p, a);
    cr_assert_eq(pool_acquire(&p, 1, &b), POOL_GOT);
    cr_assert_eq(b, a, "an idle connected slot must be reused before a new connection");
    struct pool_stats st;
    pool_stats_read(&p, &st);
    cr_assert_eq(st.acquired_spare, 1);
    cr_assert_eq(st.acquired_idle, 1);
    b->fd = -1;
    pool_release(&p, b);
    pool_destroy(&p);
}

Test(pool, fifo_handoff_and_overload)
{
    struct handoff_log log = {0};
    struct pool p;
    cr_assert_eq(pool_init(&p, 1, 1, 2, record, &log), 0);
    struct pool_slot *s, *unused;
    cr_assert_eq(pool_acquire(&p, 7, &s), POOL_GOT);
    cr_assert_eq(pool_acquire(&p, 8, &unused), POOL_QUEUED);
    cr_assert_eq(pool_acquire(&p, 9, &unused), POOL_QUEUED);
    cr_assert_eq(pool_acquire(&p, 10, &unused), POOL_OVERLOADED, "queue bound max_queue=2");
    cr_assert_eq(log.n, 0);
    pool_release(&p, s);
    cr_assert_eq(log.n, 1);
    cr_assert_eq(log.tokens[0], 8, "oldest waiter first");
    cr_assert_eq(log.slots[0], s);
    pool_release(&p, log.slots[0]);
    cr_assert_eq(log.n, 2);
    cr_assert_eq(log.tokens[1], 9);
    pool_release(&p, log.slots[1]);
    cr_assert_eq(log.n, 2, "no waiter left: slot goes back to the pool");
    struct pool_stats st;
    pool_stats_read(&p, &st);
    cr_assert_eq(st.overloaded, 1);
    cr_assert_eq(st.handoffs, 2);
    cr_assert_eq(st.waiting, 0);
    cr_assert_eq(st.double_holds, 0);
    pool_destroy(&p);
}

Test(pool, rejects_bad_arguments)
{
    struct pool p;
    cr_assert_eq(pool_init(&p, 0, 0, 1, record, NULL), -EINVAL);
    cr_assert_eq(pool_init(&p, 1, 1, 1, NULL, NULL), -EINVAL);
    pool_destroy(NULL);
}

Test(pool, max_queue_zero_never_queues)
{
    struct handoff_log log = {0};
    struct pool p;
    cr_assert_eq(pool_init(&p, 1, 1, 0, record, &log), 0);
    struct pool_slot *s, *t;
    cr_assert_eq(pool_acquire(&p, 1, &s), POOL_GOT);
    cr_assert_eq(pool_acquire(&p, 2, &t), POOL_OVERLOADED);
    pool_release(&p, s);
    cr_assert_eq(log.n, 0);
    cr_assert_eq(pool_acquire(&p, 2, &t), POOL_GOT);
    pool_release(&p, t);
    pool_destroy(&p);
}

Test(pool_stress, one_slot_8_threads, .timeout = 120)
{
    expect_stress(stress_pool_one_slot);
}

Test(pool_stress, two_slots_8_threads, .timeout = 120)
{
    expect_stress(stress_pool_two_slots);
}

Test(pool_stress, resizing_8_threads, .timeout = 120)
{
    expect_stress(stress_pool_resizing);
}

Test(pool_stress, pingpong_no_lost_wakeup, .timeout = 120)
{
    expect_stress(stress_pool_pingpong);
}

Test(pool_stress, waiter_ring_wraparound_no_lost_token, .timeout = 120)
{
    expect_stress(stress_pool_waiter_wrap);
}

Test(pool_stress, waiter_ring_full_of_stale_tokens_no_lost_token, .timeout = 120)
{
    expect_stress(stress_pool_waiter_wrap_stale);
}

/* Reload (pool.h, Resizing): growing hands a revived slot to a waiter. */
Test(pool, grow_serves_a_waiter)
{
    struct handoff_log log = {0};
    struct pool p;
    cr_assert_eq(pool_init(&p, 4, 1, 4, record, &log), 0);
    struct pool_slot *a, *unused;
    cr_assert_eq(pool_acquire(&p, 1, &a), POOL_GOT);
    cr_assert_eq(pool_acquire(&p, 7, &unused), POOL_QUEUED);
    cr_assert_eq(pool_resize(&p, 2), 0);
    cr_assert_eq(log.n, 1, "the waiter gets the slot the resize added");
    cr_assert_eq(log.tokens[0], 7);
    cr_assert_eq(log.slots[0]->index, 1);
    cr_assert_eq(pool_size(&p), 2);
    cr_assert_eq(pool_resize(&p, 5), -EINVAL, "above the capacity");
    cr_assert_eq(pool_resize(&p, 0), -EINVAL);
    pool_release(&p, log.slots[0]);
    pool_release(&p, a);
    pool_destroy(&p);
}

/* Shrinking: a released slot above the size retires instead of going back,
 * an unconnected spare one retires when popped; growing again revives them. */
Test(pool, shrink_retires_then_grow_revives)
{
    struct handoff_log log = {0};
    struct pool p;
    cr_assert_eq(pool_init(&p, 3, 3, 4, record, &log), 0);
    struct pool_slot *a, *b, *unused;
    cr_assert_eq(pool_acquire(&p, 1, &a), POOL_GOT);
    cr_assert_eq(pool_acquire(&p, 1, &b), POOL_GOT);
    cr_assert_eq(a->index, 0);
    cr_assert_eq(b->index, 1);
    cr_assert_eq(pool_resize(&p, 1), 0);
    pool_release(&p, b); /* index 1 >= size 1: retired */
    cr_assert_eq(pool_acquire(&p, 9, &unused), POOL_QUEUED,
                 "neither the released slot 1 nor the spare slot 2 may be used at size 1");
    cr_assert_eq(log.n, 0);
    pool_release(&p, a); /* slot 0 is within the size: to the waiter */
    cr_assert_eq(log.n, 1);
    cr_assert_eq(log.slots[0], a);
    cr_assert_eq(pool_acquire(&p, 10, &unused), POOL_QUEUED);
    cr_assert_eq(pool_resize(&p, 3), 0);
    cr_assert_eq(log.n, 2, "a revived slot serves the waiter at once");
    cr_assert(log.slots[1]->index == 1 || log.slots[1]->index == 2);
    struct pool_slot *c;
    cr_assert_eq(pool_acquire(&p, 11, &c), POOL_GOT, "the other revived slot is free");
    cr_assert_neq(c, log.slots[1]);
    cr_assert_neq(c, a);
    pool_release(&p, c);
    pool_release(&p, log.slots[1]);
    pool_release(&p, a);
    struct pool_stats st;
    pool_stats_read(&p, &st);
    cr_assert_eq(st.double_holds, 0);
    pool_destroy(&p);
}

Test(pool, take_idle_and_max_queue)
{
    struct handoff_log log = {0};
    struct pool p;
    cr_assert_eq(pool_init_room(&p, 2, 2, 1, 8, record, &log), 0);
    struct pool_slot *a, *b, *unused;
    cr_assert_eq(pool_acquire(&p, 1, &a), POOL_GOT);
    a->fd = 1000;
    pool_release(&p, a);
    cr_assert_eq(pool_take_idle(&p), a, "the connected idle slot");
    cr_assert_null(pool_take_idle(&p), "only connected ones are idle");
    a->fd = -1;
    pool_release(&p, a);
    cr_assert_eq(pool_set_max_queue(&p, 9), -ERANGE, "above the room the ring was built for");
    cr_assert_eq(pool_set_max_queue(&p, 2), 0);
    cr_assert_eq(pool_acquire(&p, 1, &a), POOL_GOT);
    cr_assert_eq(pool_acquire(&p, 1, &b), POOL_GOT);
    cr_assert_eq(pool_acquire(&p, 2, &unused), POOL_QUEUED);
    cr_assert_eq(pool_acquire(&p, 3, &unused), POOL_QUEUED, "max_queue raised to 2");
    cr_assert_eq(pool_acquire(&p, 4, &unused), POOL_OVERLOADED);
    pool_release(&p, a);
    pool_release(&p, b);
    cr_assert_eq(log.n, 2);
    pool_release(&p, log.slots[0]);
    pool_release(&p, log.slots[1]);
    pool_destroy(&p);
}
