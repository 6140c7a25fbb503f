/*
 * loadgen.h - what loadgen's files share: the options, the run, thread and
 * connection structs, and the calls between the process (loadgen.c), the
 * request engine (loadgen_engine.c) and the statistics and report
 * (loadgen_report.c). Internal to loadgen; its interface is its --help.
 *
 * Threads: a thread's struct and its connections are touched only by that
 * thread while the load runs; the main thread reads them after the joins.
 */
#ifndef PERF_LOADGEN_H
#define PERF_LOADGEN_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "pjson.h"

#define LG_SCRATCH       ((size_t)256 << 10)
#define LG_MAX_MESSAGE   ((size_t)512 << 20)
#define LG_EVENTS        256
#define LG_HIST_SUB_BITS 7u
#define LG_HIST_SUB      (1u << LG_HIST_SUB_BITS)
#define LG_HIST_MAX_NS   (60ull * 1000000000ull)
/* 60 s < 2^36 ns: octaves 8..35 need (36 - 7 + 1) groups of 128 buckets. */
#define LG_HIST_BUCKETS ((36u - LG_HIST_SUB_BITS + 1u) * LG_HIST_SUB)
#define LG_MAX_CODES    32
#define LG_CODE_LEN     48
#define LG_LOG_BUDGET   20

enum lg_mode { LG_MODE_BROKER, LG_MODE_DIRECT, LG_MODE_COMPAT };
enum lg_framing { LG_FRAMING_JSON, LG_FRAMING_NDJSON };

struct lg_opts {
    const char *unix_path, *tcp;
    enum lg_mode mode;
    bool mode_set, framing_set;
    enum lg_framing framing;
    unsigned conns, depth, threads;
    double duration, warmup, drain;
    const char *type, *params;
    double rate;            /* open loop: requests/s over all threads; 0 = closed loop */
    bool conn_per_request;  /* a new connection per request */
    unsigned keys;          /* 0: fixed params; else params {"key":N}, N < keys */
    double zipf;            /* key popularity exponent; 0 = uniform */
    double write_ratio;     /* share of requests sent as write_type */
    const char *write_type;
    uint64_t seed;
};

struct lg_hist {
    uint64_t count, max_ns;
    uint64_t b[LG_HIST_BUCKETS];
};

struct lg_code {
    char name[LG_CODE_LEN];
    uint64_t n;
};

struct lg_codes {
    struct lg_code c[LG_MAX_CODES];
    unsigned n;
    uint64_t other; /* codes beyond the table */
};


/* One request in flight: its send time and how many times the slot was used. */
struct lg_slot {
    uint64_t t0;
    uint64_t sent; /* generation of the request in flight is sent - 1 */
    bool busy, measured;
};

struct lg_thread;

struct lg_conn {
    int fd;
    unsigned idx; /* global connection number, part of every id */
    struct lg_thread *t;
    bool dead, want_out;
    struct lg_slot *slots;
    unsigned *free_slots;
    unsigned nfree, outstanding;
    char *pend; /* incomplete answer carried over to the next read */
    size_t pend_len, pend_cap;
    struct pjson_scan scan;
    char *out;
    size_t out_len, out_off, out_cap;
};

struct lg_run;

struct lg_thread {
    struct lg_run *run;
    pthread_t th;
    bool started;
    int epfd;
    struct lg_conn **conns;
    unsigned nconns, live_conns;
    char *scratch;
    uint64_t live_outstanding;
    struct lg_hist hist;
    uint64_t sent, ok, errors, window_done, duplicates, unknown, closed;
    struct lg_codes codes;
    /* open loop */
    uint64_t t_first;    /* intended time of this thread's request 0 */
    double interval_ns;  /* between two intended times of this thread */
    uint64_t k_next;     /* next index to send */
    uint64_t k_end;      /* indices below it are due before t_end */
    unsigned rr;         /* round-robin cursor over conns */
    uint64_t reconnects; /* --conn-per-request */
    uint64_t rng;
};

struct lg_run {
    struct lg_opts o;
    bool is_tcp;
    char *tail; /* broker: what follows the id; direct: the whole request */
    size_t tail_len;
    /* --keys: the request up to the key digits, for reads [0] and writes [1] */
    char *khead[2];
    size_t khead_len[2];
    double *zcdf; /* --zipf: cumulative popularity of keys 0..keys-1 */
    uint64_t t_measure, t_end, t_drain_end;
    struct lg_conn *conns;
    struct lg_thread *threads;
    _Atomic int log_budget;
};

struct lg_out {
    char buf[8192];
    size_t len;
};

struct lg_totals {
    struct lg_hist hist;
    uint64_t sent, ok, errors, window_done, duplicates, unknown, closed, lost, unsent,
        reconnects;
    struct lg_codes codes;
};

static inline uint64_t lg_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Recording is on every answer's path: inline, as when it was one file. */
static inline unsigned lg_hist_index(uint64_t v)
{
    if (v > LG_HIST_MAX_NS)
        v = LG_HIST_MAX_NS;
    if (v < 2 * LG_HIST_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - LG_HIST_SUB_BITS;
    return (shift + 1) * LG_HIST_SUB + (unsigned)((v >> shift) - LG_HIST_SUB);
}

static inline void lg_hist_add(struct lg_hist *h, uint64_t ns)
{
    h->b[lg_hist_index(ns)]++;
    h->count++;
    if (ns > h->max_ns)
        h->max_ns = ns;
}

/* ---- loadgen.c */

/* A blocking connection to the target, or -errno with the reason in err. */
int lg_connect_one(struct lg_run *run, char *err, size_t errlen);

/* ---- loadgen_engine.c */

/* One line on stderr, within the run's log budget. */
__attribute__((format(printf, 2, 3))) void lg_log(struct lg_run *run, const char *fmt, ...);
/* A load thread: sends and reads until the drain ends (pthread entry). */
void *lg_thread_main(void *arg);

/* ---- loadgen_report.c */

/* Count n answers under the error code name[0, len) (sanitised). */
void lg_codes_add(struct lg_codes *t, const char *name, size_t len, uint64_t n);
__attribute__((format(printf, 2, 3))) void lg_put(struct lg_out *o, const char *fmt, ...);
/* A JSON string literal of s: quotes, backslashes and control bytes escaped. */
void lg_put_jstr(struct lg_out *o, const char *s);
/* Sum the threads' counters, histograms and codes; count what is lost. */
void lg_merge(struct lg_run *run, struct lg_totals *tt);
/* Print the run's JSON line on stdout. */
void lg_report(struct lg_run *run, const struct lg_totals *tt, double cpu_s);

#endif /* PERF_LOADGEN_H */
