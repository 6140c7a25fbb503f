/*
 * ring_bench.c - throughput of our rings against Concurrency Kit's ck_ring
 * and a mutex-protected ring, measured in the same run.
 *
 * Each measurement moves ITEMS pointers from P producer threads to C consumer
 * threads through a 1024-slot ring using single-item try_push/try_pop, with
 * the same retry policy for every implementation (pause, then sched_yield
 * after 64 failed attempts, so a preempted peer on a 2-core machine can run).
 * ops_per_s = items transferred / wall time; best of REPS repetitions.
 * 1p1c runs pin the producer and consumer to different CPUs when there are
 * at least two; 2p2c runs are unpinned (4 threads on however many cores).
 *
 * Output: one JSON line per measurement on stdout, e.g.
 *   {"bench":"ring","impl":"ours","mode":"spsc","producers":1,"consumers":1,
 *    "items":4000000,"reps":5,"ops_per_s":123456789}
 * Usage: ring_bench [--items N] [--reps R]
 */
#include <ck_ring.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ring_mpmc.h"
#include "ring_spsc.h"

#define BENCH_RING_SIZE 1024u

enum bench_impl { IMPL_OURS, IMPL_CK, IMPL_MUTEX };
static const char *const impl_names[] = {"ours", "ck", "mutex"};

/* A plain ring under one mutex: the baseline most hand-written pools use. */
struct mutex_ring {
    pthread_mutex_t lock;
    void **slots;
    uint32_t mask, head, tail;
};

struct bench {
    enum bench_impl impl;
    bool spsc;
    uint32_t producers, consumers;
    uint64_t items_per_producer;
    struct ring_spsc ours_spsc;
    struct ring_mpmc ours_mpmc;
    ck_ring_t ck;
    ck_ring_buffer_t *ck_buf;
    struct mutex_ring mx;
    _Atomic uint64_t consumed;
    _Atomic uint32_t ready;
    _Atomic bool go;
    uint64_t total;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static inline void backoff(unsigned *spins)
{
    if (++*spins >= 64) {
        sched_yield();
        *spins = 0;
    } else {
        cpu_relax();
    }
}

static bool mutex_push(struct mutex_ring *m, void *v)
{
    pthread_mutex_lock(&m->lock);
    bool ok = m->head - m->tail <= m->mask;
    if (ok)
        m->slots[m->head++ & m->mask] = v;
    pthread_mutex_unlock(&m->lock);
    return ok;
}

static bool mutex_pop(struct mutex_ring *m, void **v)
{
    pthread_mutex_lock(&m->lock);
    bool ok = m->head != m->tail;
    if (ok)
        *v = m->slots[m->tail++ & m->mask];
    pthread_mutex_unlock(&m->lock);
    return ok;
}

static inline bool bench_push(struct bench *b, void *v)
{
    switch (b->impl) {
    case IMPL_OURS:
        return b->spsc ? ring_spsc_try_push(&b->ours_spsc, v) : ring_mpmc_try_push(&b->ours_mpmc, v);
    case IMPL_CK:
        return b->spsc ? ck_ring_enqueue_spsc(&b->ck, b->ck_buf, v)
                       : ck_ring_enqueue_mpmc(&b->ck, b->ck_buf, v);
    default:
        return mutex_push(&b->mx, v);
    }
}

static inline bool bench_pop(struct bench *b, void **v)
{
    switch (b->impl) {
    case IMPL_OURS:
        return b->spsc ? ring_spsc_try_pop(&b->ours_spsc, v) : ring_mpmc_try_pop(&b->ours_mpmc, v);
    case IMPL_CK:
        return b->spsc ? ck_ring_dequeue_spsc(&b->ck, b->ck_buf, v)
                       : ck_ring_dequeue_mpmc(&b->ck, b->ck_buf, v);
    default:
        return mutex_pop(&b->mx, v);
    }
}

static void pin(int cpu)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpu < 0 || n < 2)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu % (int)n, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

struct thread_arg {
    struct bench *b;
    int cpu;
};

static void start_barrier(struct bench *b)
{
    atomic_fetch_add_explicit(&b->ready, 1, memory_order_acq_rel);
    while (!atomic_load_explicit(&b->go, memory_order_acquire))
        cpu_relax();
}

static void *producer(void *p)
{
    struct thread_arg *a = p;
    struct bench *b = a->b;
    pin(a->cpu);
    start_barrier(b);
    unsigned spins = 0;
    for (uint64_t i = 1; i <= b->items_per_producer;) {
        if (bench_push(b, (void *)(uintptr_t)i)) {
            i++;
            spins = 0;
        } else {
            backoff(&spins);
        }
    }
    return NULL;
}

static void *consumer(void *p)
{
    struct thread_arg *a = p;
    struct bench *b = a->b;
    pin(a->cpu);
    start_barrier(b);
    unsigned spins = 0;
    uint64_t mine = 0;
    void *v;
    while (atomic_load_explicit(&b->consumed, memory_order_relaxed) < b->total) {
        if (bench_pop(b, &v)) {
            /* Batch the shared counter update to keep it off the hot path. */
            if (++mine == 256) {
                atomic_fetch_add_explicit(&b->consumed, mine, memory_order_relaxed);
                mine = 0;
            }
            spins = 0;
        } else {
            if (mine) {
                atomic_fetch_add_explicit(&b->consumed, mine, memory_order_relaxed);
                mine = 0;
            }
            backoff(&spins);
        }
    }
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int bench_setup(struct bench *b)
{
    switch (b->impl) {
    case IMPL_OURS:
        return b->spsc ? ring_spsc_init(&b->ours_spsc, BENCH_RING_SIZE)
                       : ring_mpmc_init(&b->ours_mpmc, BENCH_RING_SIZE);
    case IMPL_CK:
        b->ck_buf = calloc(BENCH_RING_SIZE, sizeof *b->ck_buf);
        if (!b->ck_buf)
            return -1;
        ck_ring_init(&b->ck, BENCH_RING_SIZE);
        return 0;
    default:
        b->mx.slots = calloc(BENCH_RING_SIZE, sizeof(void *));
        b->mx.mask = BENCH_RING_SIZE - 1;
        b->mx.head = b->mx.tail = 0;
        pthread_mutex_init(&b->mx.lock, NULL);
        return b->mx.slots ? 0 : -1;
    }
}

static void bench_teardown(struct bench *b)
{
    ring_spsc_destroy(&b->ours_spsc);
    ring_mpmc_destroy(&b->ours_mpmc);
    free(b->ck_buf);
    if (b->impl == IMPL_MUTEX) {
        pthread_mutex_destroy(&b->mx.lock);
        free(b->mx.slots);
    }
}

/* One timed transfer; returns ops/s or a negative value on setup failure. */
static double run_once(enum bench_impl impl, bool spsc, uint32_t np, uint32_t nc, uint64_t items)
{
    struct bench *b = calloc(1, sizeof *b);
    if (!b)
        return -1;
    b->impl = impl;
    b->spsc = spsc;
    b->producers = np;
    b->consumers = nc;
    b->items_per_producer = items / np;
    b->total = b->items_per_producer * np;
    if (bench_setup(b) != 0) {
        bench_teardown(b);
        free(b);
        return -1;
    }
    pthread_t th[8];
    struct thread_arg args[8];
    uint32_t n = 0;
    bool pinned = (np == 1 && nc == 1);
    for (uint32_t i = 0; i < np; i++, n++) {
        args[n] = (struct thread_arg){b, pinned ? 0 : -1};
        pthread_create(&th[n], NULL, producer, &args[n]);
    }
    for (uint32_t i = 0; i < nc; i++, n++) {
        args[n] = (struct thread_arg){b, pinned ? 1 : -1};
        pthread_create(&th[n], NULL, consumer, &args[n]);
    }
    while (atomic_load_explicit(&b->ready, memory_order_acquire) < n)
        sched_yield();
    double t0 = now_s();
    atomic_store_explicit(&b->go, true, memory_order_release);
    for (uint32_t i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    double dt = now_s() - t0;
    double ops = (double)b->total / dt;
    bench_teardown(b);
    free(b);
    return ops;
}

int main(int argc, char **argv)
{
    uint64_t items = 4000000;
    int reps = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--items") && i + 1 < argc) {
            items = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: ring_bench [--items N (default 4000000)] [--reps R (default 5)]\n"
                   "Prints one JSON line per (impl, mode, producers, consumers).\n");
            return 0;
        } else {
            fprintf(stderr, "ring_bench: unknown argument '%s' (try --help)\n", argv[i]);
            return 2;
        }
    }
    if (items < 1000 || reps < 1) {
        fprintf(stderr, "ring_bench: --items must be >= 1000 and --reps >= 1\n");
        return 2;
    }
    struct {
        bool spsc;
        uint32_t np, nc;
    } modes[] = {{true, 1, 1}, {false, 1, 1}, {false, 2, 2}};
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        for (int impl = IMPL_OURS; impl <= IMPL_MUTEX; impl++) {
            double best = 0;
            for (int r = 0; r < reps; r++) {
                double ops = run_once((enum bench_impl)impl, modes[m].spsc, modes[m].np,
                                      modes[m].nc, items);
                if (ops < 0) {
                    fprintf(stderr, "ring_bench: out of memory\n");
                    return 1;
                }
                if (ops > best)
                    best = ops;
            }
            printf("{\"bench\":\"ring\",\"impl\":\"%s\",\"mode\":\"%s\",\"producers\":%u,"
                   "\"consumers\":%u,\"items\":%llu,\"reps\":%d,\"ops_per_s\":%.0f}\n",
                   impl_names[impl], modes[m].spsc ? "spsc" : "mpmc", modes[m].np, modes[m].nc,
                   (unsigned long long)items, reps, best);
            fflush(stdout);
        }
    }
    return 0;
}
