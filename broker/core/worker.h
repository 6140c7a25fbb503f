/*
 * worker.h - what the files of one worker share: its state, a client, a
 * request, and the calls between the stages of a request's way.
 *
 * A request's way, one stage per file (all on the worker's own thread):
 *
 *   front/client.c      a client socket: read, split into lines, queue
 *                       answers, back-pressure, close
 *   path/request.c      parse -> route -> admit -> cache -> build ->
 *                       coalesce -> pool: every line becomes one request or
 *                       one error; and the answer: one function per outcome
 *                       writes it and retires the request
 *   path/cachepath.c    the cache in the way: hits answered at once, misses
 *                       coalesced (coalesce.c), fills, invalidation, stale
 *   backend/handoff.c   a request that waits for a backend slot gets it: from
 *                       this worker's own release, or from another worker
 *                       through MSG_RING
 *   backend/bconn.c     a backend connection while a request holds it:
 *                       connect, send, receive, frame, classify, release
 *   core/deadline.c     every request's deadline in one heap, one timer
 *   core/worker.c       the thread: the io_uring loop, completion dispatch,
 *                       new clients, shutdown
 *
 * Ownership: client and req memory is released only when no operation that
 * refers to it is in flight (client->ops, bconn->ops), so no completion can
 * ever carry a dangling pointer. Nothing here is touched by another thread,
 * except through the pool's rings and MSG_RING.
 */
#ifndef BROKER_WORKER_H
#define BROKER_WORKER_H

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "broker.h"
#include "ratelimit.h"
#include "rxbuf.h"

#define CLIENT_IN_INITIAL 1024u /* a busy client's own buffer to start with; doubles as needed */
#define CLIENT_IN_MIN     512u          /* smallest copy of shared-buffer bytes (rxbuf.c) */
#define REQ_CHUNK         256u
#define REQ_MAX_CHUNKS    4096u /* 1M requests per worker, far above max_inflight */
/* After shutdown_grace_ms, answers already written get this long to reach
 * clients that read them; then every client is closed. */
#define SHUTDOWN_FLUSH_NS (1000u * 1000000u)

/* NEW: admitted, not in a pool queue; QUEUED: its token waits in the pool
 * (leaving that state without the handoff calls pool_cancel_wait); PARKED:
 * waits behind its client's token for the same backend (fairq.c); ACTIVE:
 * holds a slot; FOLLOWING: waits for a coalescing leader's answer;
 * BACKOFF: waits in the deadline heap (idle_ns) to be tried again. */
enum req_state {
    REQ_FREE,
    REQ_NEW,
    REQ_QUEUED,
    REQ_PARKED,
    REQ_ACTIVE,
    REQ_FOLLOWING,
    REQ_BACKOFF
};

struct coalesce_ticket;

struct client;

struct req {
    uint32_t idx, gen;
    enum req_state state;
    struct client *c;
    struct backend *be;
    struct bconn *bc;
    struct proto_buf breq; /* backend request bytes */
    size_t sent;
    uint64_t deadline_ns; /* overall request deadline */
    uint64_t idle_ns;     /* backend idle deadline while reading, else UINT64_MAX */
    uint64_t key_ns;      /* heap key: min(deadline_ns, idle_ns) */
    uint32_t timeout_ms;
    uint32_t heap_idx; /* position in the deadline heap, UINT32_MAX if none */
    /* cache (cachepath.c) */
    bool cacheable;   /* a read_only command and the cache is on: filled on success */
    bool bypass;      /* "cache": false: no lookup, no coalescing */
    bool mutating;    /* not read_only: invalidates its backend's entries */
    bool sent_any;    /* a byte of it may have reached the backend */
    uint8_t cmd;      /* latency histogram slot of its command (latency.h) */
    uint64_t start_ns; /* when its line was taken */
    bool probe;       /* the breaker's half-open probe: its outcome is reported */
    uint8_t attempts; /* retries so far (retry.c) */
    uint64_t cache_gen;             /* generation read before the lookup (miss) */
    struct coalesce_ticket *ticket; /* leader: its followers' ticket, open */
    struct req *wq_prev, *wq_next;  /* the client's waiting requests (fairq.c) */
    bool in_wq;
    uint8_t id_len;
    char id[PROTO_ID_MAX + 24];
    struct req *next_free;
};

struct client {
    struct worker *w;
    int fd;
    uint32_t ops;      /* recv/send/close operations in flight */
    uint32_t inflight; /* requests not answered yet */
    char *in;
    size_t in_len, in_cap;
    bool skipping; /* discarding an over-long line up to its newline */
    bool rx_direct; /* the shared buffers ran dry: read into c->in this once (rxbuf.c) */
    bool rx_filled; /* the last read into c->in took all the room offered */
    size_t rx_offered;
    bool recv_armed, send_armed;
    bool eof;              /* peer finished sending */
    bool dead;             /* peer gone or fatal error: discard output */
    bool closing;          /* shutdown(2) issued, waiting for ops to drain */
    bool dirty;            /* on the worker's dirty list: handled at the end of the round */
    struct proto_buf out;  /* responses waiting to be sent */
    struct proto_buf wbuf; /* responses being sent */
    size_t woff;
    struct client *prev, *next; /* all clients of the worker */
    struct client *next_dirty;
    struct req *wq_head, *wq_tail; /* requests waiting for a backend slot (fairq.c) */
    uint64_t rl_key;               /* rate-limit identity (admit.c) */
    struct compat *compat;         /* NULL: NDJSON; else the add-on protocol (compat.c) */
};

/* Request counts of one worker for one backend. One writer (the worker),
 * read by the admin thread and summed over workers: plain loads and
 * stores, no shared cache line bounced between cores per request. */
struct wstats {
    _Atomic uint64_t ok;           /* success answers, cached ones included */
    _Atomic uint64_t errors;       /* error answers of requests that reached this backend's stage */
    _Atomic uint64_t timeouts;     /* of which timeout */
    _Atomic uint64_t cache_hits, cache_misses, stale_served, coalesced;
    _Atomic uint64_t retries;      /* reads sent again after a curable failure */
    _Atomic uint64_t abandoned;    /* queued requests dropped: their client was gone */
};

static inline void wstat_inc(_Atomic uint64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

struct handoff {
    uint64_t token;
    struct pool_slot *slot;
};

struct worker {
    struct broker *b;
    uint32_t id;
    pthread_t thread;
    bool started;
    struct io_uring ring;
    bool ring_ok;
    int ring_fd;
    struct ring_spsc inbox;
    /* requests (request.c) */
    struct req *chunks[REQ_MAX_CHUNKS];
    uint32_t nchunks;
    struct req *free_reqs;
    uint32_t live_reqs;
    /* deadline heap (deadline.c) */
    struct req **heap;
    uint32_t heap_len, heap_cap;
    uint64_t timer_armed_ns; /* 0: no timer armed */
    struct __kernel_timespec timer_ts;
    /* clients (client.c) */
    struct client *clients;
    uint32_t nclients;
    struct client *dirty;
    /* local handoffs: slots released to a waiter of this worker (handoff.c) */
    struct handoff *handoffs;
    uint32_t nhandoffs, handoffs_cap;
    /* rate limit (admit.c): buckets by client identity, swept lazily */
    struct ratelimit rl;
    uint64_t rl_sweep_ns;
    uint64_t conn_serial;
    /* counters (one writer: this worker; summed by the admin thread) */
    struct wstats *bstats;                    /* [nbackends] */
    struct lat_hist *lat;                     /* [nbackends] latency histograms */
    _Atomic uint64_t errors[PROTO_CODE_COUNT]; /* error answers by code */
    _Atomic uint64_t rx_nobufs; /* client recvs that found no shared buffer free (rxbuf.c) */
    /* retries (retry.c): milli-tokens per backend, and the jitter source */
    uint32_t *retry_budget;
    uint64_t rng;
    /* an answer that goes to several clients (coalescing leader) */
    struct proto_buf scratch;
    /* shared client receive buffers (rxbuf.c) */
    struct rxbuf rx;
    /* params a validation rewrote (a folded search query), for the line
     * being handled only (validate.c) */
    struct proto_buf vparams;
    uint64_t housekeeping_ns; /* worker 0: next cache pressure check; 0 = none */
    /* backend connections (bconn.c) */
    uint32_t nattached;   /* backend slots held (bconn attached) */
    struct bconn *cqe_bc; /* bconn whose completion is being handled */
    /* shutdown (worker.c) */
    _Atomic int ready;   /* 1: ring enabled by the thread, -1: failed */
    _Atomic bool exited; /* the loop ended: handoffs to it are stale */
    bool draining;
    uint64_t grace_deadline_ns;
    bool grace_expired;
    uint64_t flush_deadline_ns; /* after the grace: last chance to send answers */
    bool force_close;           /* past it: close every client, read or not */
    bool finished;              /* counted in b->nfinished */
    bool exit_now;              /* every worker finished */
    struct proto_limits limits;
    /* configuration generations (reload.c): the one this worker runs on,
     * and the same published for the reloader */
    uint64_t cfg_gen;
    _Atomic uint64_t cfg_seen;
};

/* The worker running on this thread (NULL on the listener thread). */
extern _Thread_local struct worker *worker_self;

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void ns_to_ts(uint64_t ns, struct __kernel_timespec *ts)
{
    ts->tv_sec = (long long)(ns / 1000000000u);
    ts->tv_nsec = (long long)(ns % 1000000000u);
}

static inline struct io_uring_sqe *worker_sqe(struct worker *w)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
    while (!sqe) {
        /* SQ full: push what we have to the kernel and try again. */
        io_uring_submit(&w->ring);
        sqe = io_uring_get_sqe(&w->ring);
    }
    return sqe;
}

/* Our own messages (trusted formats), cut to the protocol's message size. */
static inline size_t msg_vformat(char *msg, size_t cap, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static inline size_t msg_vformat(char *msg, size_t cap, const char *fmt, va_list ap)
{
    int n = vsnprintf(msg, cap, fmt, ap);
    return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}

static inline uint64_t xorshift_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static inline struct proto_span req_id(const struct req *r)
{
    return (struct proto_span){r->id, r->id_len};
}

/* client.c */
void client_new(struct worker *w, int fd, bool compat);
void client_free(struct worker *w, struct client *c);
void client_mark_dirty(struct worker *w, struct client *c);
void client_mark_all_dirty(struct worker *w);
void client_on_recv(struct worker *w, struct client *c, int res, unsigned cqe_flags);
void client_on_send(struct worker *w, struct client *c, int res);
/* Not read further now: too many requests open or too much output queued. */
bool client_paused(const struct worker *w, const struct client *c);
/* End of a round: every touched client takes the lines it may send now,
 * pushes its output, reads more, or closes. */
void client_flush_dirty(struct worker *w);
/* Write one error answer for a line (id NULL: "id": null). */
void client_emit_error(struct worker *w, struct client *c, const struct proto_span *id,
                       enum proto_code code, const char *msg, size_t msg_len, unsigned flags);
void client_emit_error_after(struct worker *w, struct client *c, const struct proto_span *id,
                             enum proto_code code, const char *msg, size_t msg_len,
                             uint32_t retry_after_ms);
void client_emit_error_ex(struct worker *w, struct client *c, const struct proto_span *id,
                          enum proto_code code, const char *msg, size_t msg_len,
                          int64_t retry_after_ms, unsigned flags);
void client_emit_errorf(struct worker *w, struct client *c, const struct proto_span *id,
                        enum proto_code code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* request.c */
/* One complete request line of client c (without its newline). */
void request_line(struct worker *w, struct client *c, const char *line, size_t len);
struct req *req_at(struct worker *w, uint32_t idx);
/* The backend answered (rep classified by proto_parse_backend_reply). */
void req_answer_reply(struct worker *w, struct req *r, const struct proto_reply *rep);
/* Where r's answer is written: the client's output, or the worker's
 * scratch buffer when others share it (a coalescing leader) or its client
 * is gone. Then req_answer_commit(rc of the writer) delivers it. */
struct proto_buf *req_answer_out(struct worker *w, struct req *r);
void req_answer_commit(struct worker *w, struct req *r, struct proto_buf *out, size_t start,
                       int rc);
/* Answer with an error and retire the request. */
void req_fail(struct worker *w, struct req *r, enum proto_code code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The same with "retry_after_ms" in the error (rate_limited, unavailable). */
void req_fail_after(struct worker *w, struct req *r, enum proto_code code, uint32_t retry_after_ms,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void req_vfail(struct worker *w, struct req *r, enum proto_code code, int64_t retry_after_ms,
               const char *fmt, va_list ap) __attribute__((format(printf, 5, 0)));
/* Take a backend slot now, or wait for one in the backend's queue. */
void req_to_pool(struct worker *w, struct req *r);
/* Retire a request whose answer was written (or dropped: client gone). */
void req_done(struct worker *w, struct req *r);
/* Fail every request whose deadline is at or before now. */
void request_expire(struct worker *w, uint64_t now);
void request_fail_all(struct worker *w, enum proto_code code, const char *msg);
void request_store_free(struct worker *w);

/* cachepath.c */
/* The read's answer from the cache, before a request is built (ASCII
 * params: the client's bytes are the forwarded bytes). true: answered.
 * Else *gen is the generation to fill with. */
bool cachepath_hit(struct worker *w, struct client *c, struct backend *be,
                   const struct proto_request *rq, uint64_t *gen);
/* The same for a built request (non-ASCII params: key on the forwarded
 * bytes). true: answered and retired. */
bool cachepath_hit_built(struct worker *w, struct req *r);
/* A cacheable miss: park as a follower, or become the leader - answered
 * from the cache after all if a fill landed meanwhile - (true: handled),
 * or go to the backend as the leader (false). */
bool cachepath_coalesce(struct worker *w, struct req *r);
/* The backend could not answer r: answer from an entry expired less than
 * cache.serve_stale_ms ago, marked stale (true), or not (false). */
bool cachepath_serve_stale(struct worker *w, struct req *r);
/* On the way out of every request (req_done): invalidate after a mutating
 * command that may have reached the backend. */
void cachepath_retire(struct worker *w, struct req *r);
/* A successful reply of a cacheable read, as written for the client. */
void cachepath_fill(struct worker *w, struct req *r, const char *value, size_t len);
/* The leader's answer ans[start..] is complete: give it to its followers. */
void cachepath_share(struct worker *w, struct req *r, const struct proto_buf *ans, size_t start);
/* A ticket sent by another worker (MSG_RING): answer our followers. */
void cachepath_on_ticket(struct worker *w, struct coalesce_ticket *t);
/* Pressure check of the cache (worker 0's timer); next due time. */
uint64_t cachepath_housekeeping(struct worker *w, uint64_t now);

/* admit.c */
int admit_init(struct worker *w);
void admit_destroy(struct worker *w);
/* Read the client's identity (SO_PEERCRED uid, else per connection). */
void admit_identify(struct worker *w, struct client *c);
/* The client's token bucket has a token (else rate_limited answered). */
bool admit_rate(struct worker *w, struct client *c, const struct proto_request *rq);
/* Under rate_limit.max_inflight (else overloaded answered); on true the
 * request counts in b->inflight until req_done. */
bool admit_inflight(struct worker *w, struct client *c, const struct proto_request *rq);

/* fairq.c */
/* r, a queued holder, got its slot (or is dropped): pass its client's turn. */
void fairq_took_turn(struct worker *w, struct req *r);
/* r ends while it waits (req_done). */
void fairq_leave(struct worker *w, struct req *r);

/* retry.c */
#define RETRY_BUDGET_MAX 10000u /* milli-tokens: at most 10 retries banked per worker and backend */
/* The breaker at the door: true when r may go to the backend (maybe as the
 * half-open probe), else it was answered (unavailable or stale). */
bool retry_admit(struct worker *w, struct req *r);
/* The backend replied (any reply). */
void retry_success(struct worker *w, struct req *r);
/* r ends without a verdict on its backend (req_done). */
void retry_abandon(struct req *r);
/* The backend failed r (why, and the ms waited for BE_WHY_NO_ANSWER): count
 * it against the breaker, then retry r later or fail it with code. */
void req_backend_fail(struct worker *w, struct req *r, enum backend_why why, uint64_t ms,
                      enum proto_code code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* r's backoff is over (request_expire). */
void retry_now(struct worker *w, struct req *r);

/* handoff.c */
uint64_t handoff_token(const struct worker *w, const struct req *r);
void handoff_receive(struct worker *w, uint64_t token, struct pool_slot *slot);
void handoff_run_local(struct worker *w);

/* bconn.c */
/* Request and slot meet: connect if needed, else write and read at once. */
void bconn_start(struct worker *w, struct req *r, struct pool_slot *slot);
void bconn_on_cqe(struct worker *w, uint64_t ud, int res);
/* Abort whatever is in flight; the connection is closed when it settles. */
void bconn_doom(struct bconn *bc);
/* Give the slot back once no request and no operation uses it. */
void bconn_settle(struct worker *w, struct bconn *bc);
/* reload.c: take up a new configuration generation, if there is one (top
 * of every round). */
void worker_config_sync(struct worker *w);
bool bconn_outdated(const struct bconn *bc);
void bconn_close_fd(struct bconn *bc);

/* deadline.c */
int deadline_push(struct worker *w, struct req *r);
void deadline_remove(struct worker *w, struct req *r);
void deadline_rekey(struct worker *w, struct req *r);
/* Keep one absolute timeout armed for the earliest deadline. */
void deadline_sync(struct worker *w);

#endif /* BROKER_WORKER_H */
