/*
 * mockd.h - what mockd's files share: the options, the connection, worker
 * and server structs, and the calls between the process (mockd.c), the
 * connection engine (mockd_conn.c) and the answers (mockd_answer.c).
 * Internal to mockd; the program's interface is its --help.
 *
 * Threads: a connection and everything reached from it is touched only by
 * its worker's thread; the server's counters are atomics (see mockd.c).
 */
#ifndef PERF_MOCKD_H
#define PERF_MOCKD_H

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#include "pjson.h"

#define MOCK_MAX_REQUEST  ((size_t)64 << 20)
#define MOCK_READ_MIN     ((size_t)4096)
#define MOCK_KEEP_BUF     ((size_t)64 << 10) /* larger buffers are freed when idle */
#define MOCK_EVENTS       256
#define MOCK_ACCEPT_BATCH 64
#define MOCK_HUGE_DEFAULT ((uint64_t)1 << 20)
#define MOCK_HUGE_MAX     ((uint64_t)256 << 20)
#define MOCK_LOG_BUDGET   20

enum mock_framing { MOCK_FRAMING_JSON, MOCK_FRAMING_NDJSON };

enum mock_fault {
    MOCK_FAULT_NONE,
    MOCK_FAULT_HANG,
    MOCK_FAULT_CLOSE,
    MOCK_FAULT_PARTIAL,
    MOCK_FAULT_GARBAGE,
    MOCK_FAULT_DRIP,
    MOCK_FAULT_SLOW,
    MOCK_FAULT_HUGE,
    MOCK_FAULT_ERROR,
    MOCK_FAULT_ARRAY,
    MOCK_FAULT_EMPTY,
    MOCK_FAULT_EXTRA,
    MOCK_FAULT_NONASCII,
    MOCK_FAULT_COUNT
};

/* Indexed by enum mock_fault (mockd_answer.c). */
extern const char *const mock_fault_names[MOCK_FAULT_COUNT];

struct mock_opts {
    const char *listen;
    enum mock_framing framing;
    unsigned threads;
    enum mock_fault fault;
    uint64_t delay_ns;
    uint64_t work_ns;
    int stats_fd;
    bool quiet;
};

/* Every fd in an epoll set starts with this, so one switch dispatches. */
enum mock_kind { MOCK_KIND_LISTEN, MOCK_KIND_WAKE, MOCK_KIND_TIMER, MOCK_KIND_CONN };

struct mock_handle {
    enum mock_kind kind;
    int fd;
};

enum mock_state {
    MOCK_IDLE,    /* reading; no request being handled */
    MOCK_WAIT,    /* answer built, waiting for its deadline (--delay-us, slow) */
    MOCK_WRITING, /* answer being written */
    MOCK_DRIP,    /* answer written one byte per deadline */
    MOCK_HUNG,    /* never answers again (hang, garbage); input is discarded */
};

struct mock_server;
struct mock_worker;

struct mock_conn {
    struct mock_handle h; /* first: epoll data.ptr points here */
    struct mock_worker *w;
    struct mock_conn *prev, *next; /* worker's list; inbox and graveyard use next */
    uint64_t serial, seq;
    char *in;
    size_t in_len, in_cap;
    struct pjson_scan scan;
    char *out;
    size_t out_len, out_off, out_cap;
    enum mock_state state;
    bool close_after, hang_after, overlap_seen, want_out, dead;
    uint64_t deadline_ns, drip_ns;
    size_t heap_idx; /* SIZE_MAX when no deadline is pending */
};

/* Requests per command type, so a test can tell how many calls of one
 * command reached the backend (coalescing, caching). One table per worker,
 * written only by it: a cell is claimed by writing the name, then
 * publishing its length (release); readers acquire the length first. */
#define MOCK_TYPES 64
#define MOCK_TYPE_MAX 64
struct mock_type_count {
    _Atomic uint32_t len; /* 0: free cell */
    char name[MOCK_TYPE_MAX];
    _Atomic uint64_t n;
};

struct mock_worker {
    struct mock_server *srv;
    unsigned id;
    int epfd;
    struct mock_handle wake, timer, listen;
    pthread_t thread;
    bool started;
    uint64_t armed_ns; /* deadline the timerfd is set to; 0 = not armed */
    struct mock_conn **heap;
    size_t heap_len, heap_cap;
    struct mock_conn *conns, *graveyard;
    unsigned next_worker; /* round-robin cursor, worker 0 only */
    pthread_mutex_t inbox_lock;
    struct mock_conn *inbox; /* guarded by inbox_lock */
    /* Written only by this worker, read by any (mock_stats, exit line). */
    alignas(64) _Atomic uint64_t requests;
    _Atomic uint64_t overlaps;
    _Atomic uint64_t bytes_in;
    _Atomic uint64_t bytes_out;
    struct mock_type_count types[MOCK_TYPES];
};

struct mock_server {
    struct mock_opts opts;
    int lfd;
    bool is_tcp;
    bool unix_bound;
    char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    dev_t unix_dev;
    ino_t unix_ino;
    char addr_text[160];
    struct mock_worker *workers;
    uint64_t start_ns;
    _Atomic uint64_t conn_serial;
    _Atomic uint64_t conns_total;
    _Atomic uint64_t conns_open;
    _Atomic uint64_t conns_peak;
    _Atomic int log_budget;
    _Atomic bool stop;
    _Atomic bool failed;
};

struct mock_totals {
    uint64_t conns_total, conns_open, conns_peak, requests, overlaps, bytes_in, bytes_out;
};

static inline uint64_t mock_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Single-writer counter: a relaxed load and store, no locked instruction. The
 * relaxed loads in mock_totals_get only need an untorn value. */
static inline void mock_count(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* ---- mockd.c */

/* One line on stderr, within the server's log budget (none with --quiet). */
__attribute__((format(printf, 2, 3))) void mock_log(struct mock_server *srv, const char *fmt, ...);

/* ---- mockd_conn.c: one worker's connections */

/* Mark the connection dead (freed by mock_graveyard_free after the batch). */
void mock_conn_close(struct mock_conn *c);
void mock_conn_free(struct mock_conn *c);
void mock_graveyard_free(struct mock_worker *w);
/* Write what is pending; once the whole answer is out the request is done. */
void mock_conn_flush(struct mock_conn *c);
/* Schedule the connection's next step (closes it on allocation failure). */
void mock_timer_add(struct mock_conn *c, uint64_t deadline_ns);
/* The worker's timerfd fired: run every connection whose deadline is due. */
void mock_timers_run(struct mock_worker *w);
void mock_conn_event(struct mock_conn *c, uint32_t events);

/* ---- mockd_answer.c: counters, answers and faults */

/* The counters as JSON object members, without braces. Returns snprintf's. */
int mock_totals_json(struct mock_server *srv, char *buf, size_t size);
void mock_conn_opened(struct mock_server *srv);
/* Handle one framed request: req[0, len) holds exactly one JSON value. */
void mock_request(struct mock_conn *c, const char *req, size_t len);
bool mock_build_error(struct mock_conn *c, const char *msg);
/* The answer is complete in c->out: frame it and send it. */
void mock_answer(struct mock_conn *c, bool built, uint64_t delay_ns);
/* Send the next byte of a dripped answer and schedule the one after. */
void mock_drip(struct mock_conn *c);

#endif /* PERF_MOCKD_H */
