/*
 * test_coalesce.c - the coalescing table: one leader per key, followers
 * join until the ticket is closed, the closed ticket carries the answer,
 * references free it, and threads joining the same key get exactly one
 * leader.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "coalesce.h"

#define KEY "{\"type\":\"get_object_info\",\"params\":{\"name\":\"Cube\"}}"

Test(coalesce, one_leader_then_followers_until_closed)
{
    struct coalesce co;
    cr_assert_eq(coalesce_init(&co), 0);
    struct coalesce_ticket *lead, *t;
    cr_assert_eq(coalesce_join(&co, 0, KEY, strlen(KEY), 100, &lead), COALESCE_LEADER);
    cr_assert_eq(coalesce_join(&co, 0, KEY, strlen(KEY), 101, &t), COALESCE_FOLLOWER);
    cr_assert_eq(t, lead);
    cr_assert_eq(coalesce_join(&co, 0, KEY, strlen(KEY), 102, &t), COALESCE_FOLLOWER);
    /* Another backend, or other bytes, is another key. */
    struct coalesce_ticket *other, *other2;
    cr_assert_eq(coalesce_join(&co, 1, KEY, strlen(KEY), 200, &other), COALESCE_LEADER);
    cr_assert_eq(coalesce_join(&co, 0, KEY, strlen(KEY) - 1, 300, &other2), COALESCE_LEADER);
    cr_assert_eq(coalesce_open(&co), 3);

    const char tail[] = ",\"status\":\"success\",\"result\":{},\"cached\":false}\n";
    cr_assert_eq(coalesce_close(&co, lead, tail, sizeof tail - 1), 0);
    cr_assert_eq(lead->nfollowers, 2);
    cr_assert_eq(lead->followers[0], 101, "join order is kept");
    cr_assert_eq(lead->followers[1], 102);
    cr_assert_eq(lead->tail_len, sizeof tail - 1);
    cr_assert_eq(memcmp(lead->tail, tail, sizeof tail - 1), 0);
    cr_assert_eq(coalesce_open(&co), 2);
    /* Closed: the same key now makes a new leader. */
    struct coalesce_ticket *next;
    cr_assert_eq(coalesce_join(&co, 0, KEY, strlen(KEY), 103, &next), COALESCE_LEADER);
    cr_assert_neq(next, lead);

    coalesce_set_refs(lead, 2); /* the leader's worker and one other */
    coalesce_unref(lead);
    coalesce_acquire(lead);
    cr_assert_eq(lead->nfollowers, 2, "still alive for the second holder");
    coalesce_unref(lead); /* freed: ASan would report a leak otherwise */
    for (struct coalesce_ticket **p = (struct coalesce_ticket *[]){next, other, other2, NULL};
         *p; p++) {
        cr_assert_eq(coalesce_close(&co, *p, NULL, 0), 0, "no followers: nothing to store");
        coalesce_unref(*p);
    }
    cr_assert_eq(coalesce_open(&co), 0);
    coalesce_destroy(&co);
}

Test(coalesce, close_without_answer_leaves_followers_to_their_deadlines)
{
    struct coalesce co;
    cr_assert_eq(coalesce_init(&co), 0);
    struct coalesce_ticket *lead, *t;
    cr_assert_eq(coalesce_join(&co, 0, "k", 1, 1, &lead), COALESCE_LEADER);
    cr_assert_eq(coalesce_join(&co, 0, "k", 1, 2, &t), COALESCE_FOLLOWER);
    cr_assert_eq(coalesce_close(&co, lead, NULL, 0), -ENOMEM);
    cr_assert_null(lead->tail, "followers must see there is no answer");
    coalesce_unref(lead);
    coalesce_destroy(&co);
}

Test(coalesce, destroy_frees_open_tickets)
{
    struct coalesce co;
    cr_assert_eq(coalesce_init(&co), 0);
    struct coalesce_ticket *t;
    for (uint64_t i = 0; i < 1000; i++) {
        char key[32];
        int n = snprintf(key, sizeof key, "key-%llu", (unsigned long long)(i % 300));
        int rc = coalesce_join(&co, 0, key, (size_t)n, i + 1, &t);
        cr_assert(rc == COALESCE_LEADER || rc == COALESCE_FOLLOWER);
    }
    cr_assert_eq(coalesce_open(&co), 300);
    coalesce_destroy(&co); /* LeakSanitizer checks every ticket went */
}

struct racer {
    struct coalesce *co;
    uint64_t token;
    int role;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    struct coalesce_ticket *t;
    r->role = coalesce_join(r->co, 7, KEY, strlen(KEY), r->token, &t);
    return NULL;
}

Test(coalesce, concurrent_joins_make_one_leader)
{
    for (int round = 0; round < 200; round++) {
        struct coalesce co;
        cr_assert_eq(coalesce_init(&co), 0);
        pthread_t th[8];
        struct racer rs[8];
        for (int i = 0; i < 8; i++) {
            rs[i] = (struct racer){&co, (uint64_t)i + 1, -1};
            pthread_create(&th[i], NULL, race, &rs[i]);
        }
        int leaders = 0, followers = 0;
        for (int i = 0; i < 8; i++) {
            pthread_join(th[i], NULL);
            leaders += rs[i].role == COALESCE_LEADER;
            followers += rs[i].role == COALESCE_FOLLOWER;
        }
        cr_assert_eq(leaders, 1, "round %d: %d leaders", round, leaders);
        cr_assert_eq(followers, 7);
        coalesce_destroy(&co);
    }
}
