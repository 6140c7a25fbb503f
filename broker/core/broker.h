/*
 * broker.h - the daemon's process-wide state and its threads.
 *
 * Shape:
 *   setup and teardown (broker.c): broker_create builds everything below
 *     from the config and binds the client socket; broker_free undoes it.
 *   main thread (listener.c): one io_uring with a few single-shot accepts on
 *     the client socket (as many as the descriptor budget allows) and a
 *     read on a signalfd. Each accepted client fd goes
 *     to a worker round-robin through that worker's SPSC inbox ring, plus an
 *     IORING_OP_MSG_RING wake-up posted straight into the worker's ring.
 *   workers (worker.c): one thread and one io_uring (SINGLE_ISSUER |
 *     DEFER_TASKRUN) each. A client is served to completion on its worker:
 *     reading lines, parsing, acquiring a backend slot, writing the request,
 *     framing the reply, answering - no cross-core hop on the request path
 *     unless it had to wait for a slot another worker releases.
 *   backends: process-wide pools (pool.h), breakers (breaker.h) and
 *     health state (health.h; each backend's checks run on one worker).
 *     Whichever worker holds a slot drives that socket on its own ring until
 *     it releases the slot, and releases it only when no operation on it is
 *     in flight.
 *
 * Ownership: struct broker owns the config, the backends (pools, per-slot
 * connection state) and the workers; broker_free releases all of it after
 * every thread has been joined.
 */
#ifndef BROKER_BROKER_H
#define BROKER_BROKER_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "breaker.h"
#include "cache.h"
#include "coalesce.h"
#include "config.h"
#include "frame.h"
#include "health.h"
#include "latency.h"
#include "pool.h"
#include "proto.h"
#include "ring_spsc.h"

struct worker;

/* Per-slot backend connection state (pool_slot.ctx). Owned by the slot's
 * holder; `ops` counts the send/recv/connect operations in flight, and the
 * slot is released only at ops == 0 so no completion for it can land on a
 * ring after another worker took it. */
struct bconn {
    struct backend *be;
    struct pool_slot *slot;
    struct req *req;          /* request being served, NULL when idle */
    struct frame_scanner scan;
    struct proto_buf in;      /* reply bytes of the current request */
    uint32_t ops;             /* operations in flight */
    uint64_t op_kind[3];      /* completions point here: op_kind[k] == k (connect/send/recv) */
    bool attached;            /* held by a worker (between acquire and release) */
    bool doomed;              /* close instead of reuse (timeout, framing, extra bytes, EOF) */
    bool sent;                /* request fully written */
    bool got_reply;           /* reply framed */
    uint64_t idle_since_ns;   /* when the connection last went idle */
    struct __kernel_timespec ts_link; /* link timeout (connect / idle) */
};

/* Per-backend connection events (rare next to requests: shared atomics).
 * Per-request counts are per worker (struct wstats in worker.h). */
struct backend_stats {
    _Atomic uint64_t connects, connect_failures, closed;
    _Atomic uint64_t stale_closed; /* idle connections found dead before reuse */
    _Atomic uint32_t open_conns, peak_conns;
};

struct backend {
    uint32_t index;
    const struct backend_config *cfg;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    struct pool pool;
    struct bconn *conns; /* pool.size entries, slot i's ctx = &conns[i] */
    struct backend_stats stats;
    struct breaker breaker;    /* any worker: lock-free (breaker.h) */
    struct breaker_cfg bkcfg;  /* from cfg->breaker, in ns */
    struct health health;      /* checks run by worker index % nworkers (health.h) */
    struct lat_commands cmds;  /* command names of the latency histograms (latency.h) */
    bool cmds_ok;
};

struct broker {
    struct broker_config cfg;
    struct backend *backends;
    uint32_t nbackends;
    struct worker **workers;
    uint32_t nworkers;
    int listen_fd;
    bool listen_unlink;       /* we created the socket file */
    _Atomic uint32_t nclients; /* connected clients, for max_clients */
    _Atomic uint32_t inflight; /* requests in flight, for rate_limit.max_inflight */
    _Atomic uint64_t rate_limited; /* request lines refused by a client's token bucket */
    _Atomic bool stopping;
    _Atomic bool accepting; /* false once draining (SIGUSR1, admin drain) or stopping */
    /* The response cache (NULL: off) in its own jemalloc arena, and the
     * table of in-flight misses that identical ones join. */
    struct cache *cache;
    unsigned cache_arena;
    bool cache_arena_ok;
    struct coalesce coalesce;
    bool coalesce_ok;
    /* Shutdown barrier: a worker that has nothing left stays in its loop
     * (returning stray slots to the pool) until every started worker has
     * nothing left, so no slot is stranded in a ring nobody reads. */
    _Atomic uint32_t nstarted, nfinished;
    uint64_t started_ms;  /* CLOCK_MONOTONIC at broker_create, for uptime */
    struct admin *admin;  /* the admin socket's thread (admin.c) while it runs */
    int admin_fd;         /* the admin socket (admin_listen), listening */
    bool admin_unlink;    /* we created its file */
    int compat_fd;        /* compat_listen (the add-on protocol), listening; -1: off */
    bool compat_unlink;   /* we created its file (a Unix path) */
};

/* Message kinds posted to a worker's ring with IORING_OP_MSG_RING. */
enum broker_msg {
    BROKER_MSG_NEWCONN = 1,
    BROKER_MSG_SHUTDOWN = 2,
    BROKER_MSG_HANDOFF = 3,
    BROKER_MSG_EXIT = 4, /* every worker is finished: leave the loop */
    BROKER_MSG_COALESCED = 5, /* payload: a closed coalesce_ticket with our followers */
};

/* Build everything from cfg (taken over: the broker destroys it). Binds the
 * client socket. Returns 0 or -errno with a message in err. */
int broker_create(struct broker **out, struct broker_config *cfg, char *err, size_t errlen);
/* Run until SIGTERM/SIGINT and a clean drain. Returns 0 or -errno. */
int broker_run(struct broker *b);
void broker_free(struct broker *b);

/* worker.c */
int worker_create(struct broker *b, uint32_t id, struct worker **out);
int worker_start(struct worker *w);
void worker_join(struct worker *w);
void worker_free(struct worker *w);
int worker_ring_fd(const struct worker *w);
bool worker_exited(const struct worker *w);
/* Listener side: queue a client fd for this worker (false: inbox full);
 * compat: it came from compat_listen (the add-on protocol, compat.c). */
bool worker_inbox_push(struct worker *w, int fd, bool compat);
/* Inbox values: fd + 1 (never NULL), and the compat flag above any fd. */
#define INBOX_FD_MASK ((uintptr_t)0xffffffffu)
#define INBOX_COMPAT  ((uintptr_t)1 << 32)
_Static_assert(sizeof(uintptr_t) >= 8, "the inbox flag needs 64-bit pointers");
/* pool handoff callback (pool.h), arg = struct broker * */
void worker_pool_handoff(void *arg, uint64_t token, struct pool_slot *slot);

/* user_data tags in the low 3 bits; pointers are at least 8-byte aligned. */
enum ud_tag {
    UD_IGNORE = 0,  /* completions that need no handling (link timeouts, updates) */
    UD_CLIENT_RECV = 1,
    UD_CLIENT_SEND = 2,
    UD_BACKEND = 3, /* connect/send/recv on a bconn */
    UD_TIMER = 4,
    UD_MSG = 5,     /* MSG_RING from another thread: kind << 3, payload << 8 */
    UD_MSG_FAIL = 6, /* our MSG_RING handoff failed: payload is the bconn */
    UD_CLIENT_CLOSE = 7,
};
#define UD_TAG(u) ((unsigned)((u)&7u))
#define UD_PTR(u) ((void *)(uintptr_t)((u) & ~(uint64_t)7))

#endif /* BROKER_BROKER_H */
