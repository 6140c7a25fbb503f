/*
 * coalesce.c - the table of open coalescing tickets; see coalesce.h.
 *
 * Sharded by the key's hash (seeded at random per process: clients choose
 * the keys), each shard a fixed array of bucket chains under one mutex. Only misses of cacheable reads come here, at most one
 * open ticket per distinct key in flight, so chains stay short and the
 * mutex is held for a hash compare and a pointer or two.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <xxhash.h>

#include "coalesce.h"

int coalesce_init(struct coalesce *co)
{
    memset(co, 0, sizeof *co);
    if (getrandom(&co->seed, sizeof co->seed, 0) != (ssize_t)sizeof co->seed)
        return errno ? -errno : -EIO;
    for (uint32_t i = 0; i < COALESCE_SHARDS; i++) {
        int rc = pthread_mutex_init(&co->shards[i].mu, NULL);
        if (rc) {
            while (i-- > 0)
                pthread_mutex_destroy(&co->shards[i].mu);
            return -rc;
        }
    }
    return 0;
}

static void ticket_free(struct coalesce_ticket *t)
{
    free(t->key);
    free(t->followers);
    free(t->tail);
    free(t);
}

void coalesce_destroy(struct coalesce *co)
{
    for (uint32_t i = 0; i < COALESCE_SHARDS; i++) {
        struct coalesce_shard *s = &co->shards[i];
        for (uint32_t b = 0; b < COALESCE_BUCKETS; b++)
            while (s->buckets[b]) {
                struct coalesce_ticket *t = s->buckets[b];
                s->buckets[b] = t->next;
                ticket_free(t);
            }
        pthread_mutex_destroy(&s->mu);
    }
}

static uint64_t key_hash(const struct coalesce *co, uint32_t backend, const char *key,
                         size_t len)
{
    return XXH3_64bits_withSeed(key, len, co->seed ^ backend);
}

static struct coalesce_shard *shard_of(struct coalesce *co, uint64_t h)
{
    return &co->shards[h % COALESCE_SHARDS];
}

static struct coalesce_ticket **bucket_of(struct coalesce_shard *s, uint64_t h)
{
    return &s->buckets[(h / COALESCE_SHARDS) % COALESCE_BUCKETS];
}

static int add_follower(struct coalesce_ticket *t, uint64_t token)
{
    if (t->nfollowers == t->cap) {
        uint32_t cap = t->cap ? t->cap * 2 : 8;
        uint64_t *f = realloc(t->followers, cap * sizeof *f);
        if (!f)
            return -ENOMEM;
        t->followers = f;
        t->cap = cap;
    }
    t->followers[t->nfollowers++] = token;
    return 0;
}

int coalesce_join(struct coalesce *co, uint32_t backend, const char *key, size_t key_len,
                  uint64_t token, struct coalesce_ticket **out)
{
    uint64_t h = key_hash(co, backend, key, key_len);
    struct coalesce_shard *s = shard_of(co, h);
    pthread_mutex_lock(&s->mu);
    struct coalesce_ticket **b = bucket_of(s, h);
    for (struct coalesce_ticket *t = *b; t; t = t->next)
        if (t->hash == h && t->backend == backend && t->key_len == key_len &&
            memcmp(t->key, key, key_len) == 0) {
            int rc = add_follower(t, token);
            pthread_mutex_unlock(&s->mu);
            if (rc < 0)
                return rc;
            *out = t;
            return COALESCE_FOLLOWER;
        }
    struct coalesce_ticket *t = calloc(1, sizeof *t);
    char *k = malloc(key_len ? key_len : 1);
    if (!t || !k) {
        pthread_mutex_unlock(&s->mu);
        free(t);
        free(k);
        return -ENOMEM;
    }
    memcpy(k, key, key_len);
    t->hash = h;
    t->backend = backend;
    t->key = k;
    t->key_len = key_len;
    atomic_init(&t->refs, 1);
    t->next = *b;
    *b = t;
    s->open++;
    pthread_mutex_unlock(&s->mu);
    *out = t;
    return COALESCE_LEADER;
}

int coalesce_close(struct coalesce *co, struct coalesce_ticket *t, const char *tail,
                   size_t tail_len)
{
    struct coalesce_shard *s = shard_of(co, t->hash);
    pthread_mutex_lock(&s->mu);
    for (struct coalesce_ticket **p = bucket_of(s, t->hash); *p; p = &(*p)->next)
        if (*p == t) {
            *p = t->next;
            s->open--;
            break;
        }
    t->next = NULL;
    pthread_mutex_unlock(&s->mu);
    /* Closed: no one can join any more, the follower list is final. */
    if (!t->nfollowers)
        return 0;
    t->tail = tail_len ? malloc(tail_len) : NULL;
    if (!t->tail)
        return -ENOMEM; /* no answer to share: followers end on their own deadlines */
    memcpy(t->tail, tail, tail_len);
    t->tail_len = tail_len;
    return 0;
}

void coalesce_set_refs(struct coalesce_ticket *t, uint32_t refs)
{
    /* Release: the tail and the follower list are complete before any
     * worker that is sent the ticket reads them (coalesce_acquire). */
    atomic_store_explicit(&t->refs, refs, memory_order_release);
}

void coalesce_acquire(struct coalesce_ticket *t)
{
    (void)atomic_load_explicit(&t->refs, memory_order_acquire);
}

void coalesce_unref(struct coalesce_ticket *t)
{
    /* acq_rel: the last holder frees after every other holder is done. */
    if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1)
        ticket_free(t);
}

uint32_t coalesce_open(struct coalesce *co)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < COALESCE_SHARDS; i++) {
        pthread_mutex_lock(&co->shards[i].mu);
        n += co->shards[i].open;
        pthread_mutex_unlock(&co->shards[i].mu);
    }
    return n;
}
