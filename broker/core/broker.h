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
struct metrics_http;

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
    uint32_t conn_serial;     /* the backend view's conn_serial when it connected */
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

/* One backend's settings in one live configuration (struct live_config):
 * its config entry, the breaker settings in ns and its resolved address.
 * conn_serial changes when the address or the framing does: connections
 * opened under an older serial are closed instead of reused. */
struct backend_view {
    const struct backend_config *cfg;
    struct breaker_cfg bk;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint32_t conn_serial;
};

struct backend {
    uint32_t index;
    /* Its settings (reload.c swaps them): read them with be_view/becfg. */
    _Atomic(const struct backend_view *) view;
    _Atomic bool removed;      /* gone from the configuration: drains, gets no new request */
    uint32_t applied_serial;   /* owner worker: conn_serial its idle connections were swept at */
    bool removed_swept;        /* owner worker: idle connections closed after removal */
    struct pool pool;
    struct bconn *conns; /* pool.cap entries, slot i's ctx = &conns[i] */
    struct backend_stats stats;
    struct breaker breaker;    /* any worker: lock-free (breaker.h) */
    struct health health;      /* checks run by worker index % nworkers (health.h) */
    struct lat_commands cmds;  /* command names of the latency histograms (latency.h) */
    bool cmds_ok;
};

/* The configuration in effect and what is derived from it, replaced whole
 * by a reload (reload.c) and read without locks: a worker reads it through
 * b->live during a round and acknowledges each new generation at the top of
 * its loop; a replaced one is freed once every worker has acknowledged its
 * successor and no backend's view points into it. */
struct live_config {
    struct broker_config cfg;
    struct backend_view views[CONFIG_BACKENDS_MAX]; /* [j]: cfg.backends[j] */
    struct backend *be_of[CONFIG_BACKENDS_MAX];     /* [j]: its struct backend */
    uint64_t gen;
    struct live_config *retired_next;
};

/* Loader for reloads: builds a fresh config (file + command-line flags)
 * into out (zeroed by the caller). 0 or -errno with err set. */
typedef int (*broker_config_loader)(void *arg, struct broker_config *out, char *err,
                                    size_t errlen);

struct broker {
    _Atomic(struct live_config *) live; /* see struct live_config; bcfg(b) */
    _Atomic uint64_t cfg_gen;           /* live->gen */
    struct live_config *retired;        /* replaced, not freed yet (reload.c) */
    broker_config_loader loader;        /* reload.c: how to read the configuration again */
    void *loader_arg;
    pthread_rwlock_t cfg_lock;          /* listener: read around a round; reload: write to free */
    bool cfg_lock_ok;
    char listen_path[CONFIG_UNIX_PATH_MAX + 1]; /* not reloadable: copies for teardown */
    char admin_path[CONFIG_UNIX_PATH_MAX + 1];
    struct backend *backends;           /* CONFIG_BACKENDS_MAX entries, nbackends in use */
    _Atomic uint32_t nbackends;         /* grows when a reload adds a backend */
    struct worker **workers;
    uint32_t nworkers;
    int listen_fd;
    bool listen_unlink;       /* we created the socket file */
    _Atomic uint32_t nclients; /* connected clients, for max_clients */
    _Atomic uint32_t inflight; /* requests in flight, for rate_limit.max_inflight */
    _Atomic uint64_t rate_limited; /* request lines refused by a client's token bucket */
    _Atomic uint64_t peers_refused; /* connections refused by allow_uids / allow_gids (peer.c) */
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
    int metrics_fd;       /* metrics_listen, listening; -1 when off */
    struct metrics_http *metrics; /* its thread (metrics_http.c) while it runs */
    int compat_fd;        /* compat_listen (the add-on protocol), listening; -1: off */
    bool compat_unlink;   /* we created its file (a Unix path) */
    /* the address families of listen_fd and compat_fd, read once at bind
     * (socket activation can hand over either kind): an accepted socket has
     * its listener's, so peer_admit() need not ask the kernel per client */
    int listen_family, compat_family;
    char compat_path[CONFIG_UNIX_PATH_MAX + 1]; /* that path (not reloadable: a copy) */
};

/* Message kinds posted to a worker's ring with IORING_OP_MSG_RING. */
enum broker_msg {
    BROKER_MSG_NEWCONN = 1,
    BROKER_MSG_SHUTDOWN = 2,
    BROKER_MSG_HANDOFF = 3,
    BROKER_MSG_EXIT = 4, /* every worker is finished: leave the loop */
    BROKER_MSG_COALESCED = 5, /* payload: a closed coalesce_ticket with our followers */
    BROKER_MSG_RELOAD = 6,    /* a new configuration generation: acknowledge it */
};

static inline struct live_config *broker_live(const struct broker *b)
{
    return atomic_load_explicit((_Atomic(struct live_config *) *)&b->live, memory_order_acquire);
}
/* The configuration in effect (see struct live_config for how long a
 * pointer into it stays valid). */
static inline const struct broker_config *bcfg(const struct broker *b)
{
    return &broker_live(b)->cfg;
}
static inline const struct backend_view *be_view(const struct backend *be)
{
    return atomic_load_explicit((_Atomic(const struct backend_view *) *)&be->view,
                                memory_order_acquire);
}
static inline const struct backend_config *becfg(const struct backend *be)
{
    return be_view(be)->cfg;
}
static inline uint32_t broker_nbackends(const struct broker *b)
{
    return atomic_load_explicit((_Atomic uint32_t *)&b->nbackends, memory_order_acquire);
}

/* reload.c: build the live configuration at start (cfg taken over). */
int live_create(struct broker *b, struct broker_config *cfg, char *err, size_t errlen);
/* Re-read the configuration and apply it (any one non-worker thread at a
 * time: the admin thread). 0 with a summary in msg, or -errno with the
 * reason in msg (the old configuration stays in effect). */
int broker_reload(struct broker *b, char *msg, size_t msglen);
void broker_set_loader(struct broker *b, broker_config_loader fn, void *arg);
/* Free every live configuration (broker_free, after every thread). */
void live_destroy_all(struct broker *b);
/* backend setup shared by broker.c and reload.c */
int backend_init(struct broker *b, uint32_t i, const struct backend_view *v, char *err,
                 size_t errlen);
void backend_destroy(struct backend *be);
int backend_view_fill(struct backend_view *v, const struct backend_config *cfg, uint32_t i,
                      char *err, size_t errlen);

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
