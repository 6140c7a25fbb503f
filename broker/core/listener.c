/*
 * listener.c - the listener thread: accepts, the descriptor budget, signals
 * and the shutdown sequence it drives (broker_run).
 *
 * The main thread runs the listener: one io_uring with a few single-shot
 * accepts on the client socket and a read on a signalfd (SIGTERM, SIGINT,
 * SIGHUP are blocked in every thread and only ever read there, so no handler
 * runs at an arbitrary point). Accepted fds go round-robin to the workers'
 * SPSC inboxes, and one MSG_RING per woken worker per batch wakes them.
 *
 * Descriptor budget: clients get what RLIMIT_NOFILE leaves after the
 * descriptors the broker needs for everything else (every pool slot
 * connected, the listeners, the rings; see fd_kept), the way HAProxy derives
 * maxconn from ulimit -n, so a flood of clients cannot take the socket a
 * connected client's request needs to reach its backend. The limit is re-read
 * once per round of accepted clients (those that complete together; one
 * syscall a round, not a client) and again before one is refused:
 * `prlimit --pid` on the running process takes effect from the next client. Clients over the cap are accepted, told why in
 * one line and closed. Accepts are single-shot, at most ACCEPT_BATCH in
 * flight and no more than the descriptors left for clients (one when none
 * are left, to refuse the next client): a multishot accept takes every
 * waiting client at once, up to the whole limit, and a worker opening a
 * backend socket at that instant would get EMFILE.
 *
 * compat_listen (when configured) is accepted the same way, under the same
 * budget and max_clients, and its clients go round-robin with the others,
 * flagged in the inbox so the worker gives them the add-on protocol.
 *
 * Shutdown: stop accepting, remove the socket file, tell every worker to
 * drain (they answer or fail every request within shutdown_grace_ms and
 * close their clients), join every worker. broker_free (broker.c) then
 * frees everything; no thread, timer or fd survives it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "admin.h"
#include "broker.h"
#include "log.h"
#include "peer.h"
#include "metrics_http.h"
#include "sdnotify.h"

#define UDL_ACCEPT  1
#define UDL_SIGNAL  2
#define UDL_BACKOFF 3
#define UDL_CANCEL  4
#define UDL_ACCEPT_COMPAT 5 /* an accept on compat_listen (front/compat.c) */
/* Out of descriptors: accepting again at once would spin (an accept fails
 * at once on EMFILE). Wait, doubling from the first to the last figure, and
 * start over once an accept succeeds. */
#define ACCEPT_BACKOFF_MIN_MS 10
#define ACCEPT_BACKOFF_MAX_MS 1000
/* Single-shot accepts in flight at most. Each installs one descriptor at
 * most, so no more clients than that are accepted before the listener
 * counts them, and a burst still costs one wake-up per ACCEPT_BATCH clients.
 * An accept in flight keeps the limit of the time it was armed (io_uring
 * reads RLIMIT_NOFILE when it prepares one): after the limit is lowered,
 * these few may still take a descriptor above it. */
#define ACCEPT_BATCH 8
/* Descriptors open for an instant or counted nowhere else: the client being
 * refused, the accepts in flight when the limit was lowered (ACCEPT_BATCH),
 * /proc/self/statm read for the cache's memory watermark, files the
 * allocator or libc open, admin connections once the admin socket exists. A
 * round figure with room to spare, not a measurement. */
#define FD_MARGIN 16

/* An SQE, submitting what is queued when the ring is full (up to 256
 * wake-ups may be queued in one round). */
static struct io_uring_sqe *listener_sqe(struct io_uring *ring)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) {
        io_uring_submit(ring);
        sqe = io_uring_get_sqe(ring);
    }
    return sqe;
}

static void post_msg(struct io_uring *ring, struct worker *w, enum broker_msg kind)
{
    struct io_uring_sqe *sqe = listener_sqe(ring);
    io_uring_prep_msg_ring(sqe, worker_ring_fd(w), 0, ((uint64_t)kind << 3) | UD_MSG, 0);
    io_uring_sqe_set_data64(sqe, 0);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
}

static void arm_accept(struct io_uring *ring, int fd, uint64_t ud)
{
    struct io_uring_sqe *sqe = listener_sqe(ring);
    io_uring_prep_accept(sqe, fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, ud);
}

static void arm_signal(struct io_uring *ring, int sfd, struct signalfd_siginfo *si)
{
    struct io_uring_sqe *sqe = listener_sqe(ring);
    io_uring_prep_read(sqe, sfd, si, sizeof *si, 0);
    io_uring_sqe_set_data64(sqe, UDL_SIGNAL);
}

/* Refuse a client with one clear answer (a trusted message), then close;
 * in the add-on's shape for a compat client. */
static void refuse_client(int fd, const char *why, bool compat)
{
    char line[320];
    int n = compat ? snprintf(line, sizeof line,
                              "{\"status\":\"error\",\"message\":\"overloaded: %s\"}", why)
                   : snprintf(line, sizeof line,
                              "{\"id\":null,\"status\":\"error\",\"error\":{\"code\":"
                              "\"overloaded\",\"message\":\"%s\"}}\n",
                              why);
    if (n > 0 && (size_t)n < sizeof line && write(fd, line, (size_t)n) < 0) {
        /* the client is gone already: nothing else to do */
    }
    close(fd);
}

/* Descriptor budget (see the note at the top). fd_kept is what the broker
 * keeps for everything but clients:
 *
 *   sum of pool_size     every pool slot may be connected at once
 *   + nbackends          one health-check connection each
 *   + 3                  stdin, stdout, stderr (the log)
 *   + 1 + 1              the client listening socket, the signalfd
 *   + 1 + nworkers       the listener's and every worker's io_uring
 *   + 1                  struct fd_reserve below
 *   + 2                  the admin and compat listeners
 *   + 1 + its clients    metrics_listen, when on (metrics_http.h)
 *   + FD_MARGIN          what is open only for an instant
 *
 * Clients get room = limit - kept, at most max_clients. A limit that leaves
 * no room at all still admits one client: kept counts two listeners that do
 * not exist yet and the margin, so one client does fit, and a broker that
 * refuses everyone serves nobody. That is logged as a warning (at start and
 * whenever the limit changes into it) so the operator raises the limit.
 * kept is counted once at start: no pool can grow without a restart. */
struct fd_budget {
    uint64_t kept;  /* descriptors kept for everything but clients */
    uint64_t limit; /* RLIMIT_NOFILE soft limit when last read (0: never) */
    uint64_t room;  /* clients the limit leaves room for, at least 1 */
    uint64_t gen;   /* configuration generation `kept` was counted for */
    bool fresh;     /* read in this listener round already (see on_accept) */
};

static uint64_t fd_kept(const struct broker *b)
{
    uint64_t n = 3 + 1 + 1 + 1 + (uint64_t)b->nworkers + 1 + 2 + FD_MARGIN;
    if (b->metrics_fd >= 0)
        n += 1 + METRICS_HTTP_CLIENTS;
    uint32_t nb = broker_nbackends(b); /* removed ones too: they may still hold connections */
    for (uint32_t i = 0; i < nb; i++)
        n += (uint64_t)pool_size(&b->backends[i].pool) + 1;
    return n;
}

static uint32_t fd_cap(const struct broker *b, const struct fd_budget *fb)
{
    return fb->room < bcfg(b)->max_clients ? (uint32_t)fb->room : bcfg(b)->max_clients;
}

static void fd_budget_log(const struct broker *b, const struct fd_budget *fb, bool at_start)
{
    if (fb->limit <= fb->kept)
        log_write(LOG_LEVEL_WARN,
                  "the descriptor limit leaves no room for clients besides the descriptors kept "
                  "for backend connections: admitting one client at a time "
                  "(raise LimitNOFILE / ulimit -n)",
                  LOG_UINT("nofile", fb->limit), LOG_UINT("fds_kept", fb->kept),
                  LOG_UINT("client_cap", fd_cap(b, fb)));
    else if (!at_start || fb->room < bcfg(b)->max_clients)
        log_write(LOG_LEVEL_INFO,
                  at_start ? "clients capped below max_clients by the descriptor limit"
                           : "descriptor limit changed",
                  LOG_UINT("client_cap", fd_cap(b, fb)),
                  LOG_UINT("max_clients", bcfg(b)->max_clients), LOG_UINT("nofile", fb->limit),
                  LOG_UINT("fds_kept", fb->kept));
}

/* Read the soft limit again (prlimit --pid may have changed it; one cheap
 * syscall). Returns true when it changed. */
static bool fd_budget_read(const struct broker *b, struct fd_budget *fb)
{
    struct rlimit rl;
    uint64_t gen = atomic_load_explicit(&b->cfg_gen, memory_order_acquire);
    bool regen = gen != fb->gen; /* a reload may have resized pools */
    if (regen) {
        fb->gen = gen;
        fb->kept = fd_kept(b);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || ((uint64_t)rl.rlim_cur == fb->limit && !regen))
        return false;
    fb->limit = (uint64_t)rl.rlim_cur; /* RLIM_INFINITY reads as a huge limit */
    fb->room = fb->limit > fb->kept ? fb->limit - fb->kept : 1;
    return true;
}

static void fd_budget_init(const struct broker *b, struct fd_budget *fb)
{
    /* The soft limit is only a default (1024 under systemd and most
     * shells): take what the hard limit allows, as HAProxy does, so
     * max_clients is not silently cut to a thousand. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rlim_t soft = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
            log_write(LOG_LEVEL_DEBUG, "raised the descriptor limit to the hard limit",
                      LOG_UINT("from", soft), LOG_UINT("to", rl.rlim_max));
    }
    *fb = (struct fd_budget){.kept = fd_kept(b), .room = bcfg(b)->max_clients};
    fb->gen = atomic_load_explicit(&b->cfg_gen, memory_order_acquire);
    if (fd_budget_read(b, fb))
        fd_budget_log(b, fb, true);
}

/* Accepts to keep in flight: no more than the descriptors left for clients,
 * so every client accepted before the listener counts it is within the
 * budget; one when none are left, to tell the next client why. */
static uint32_t fd_accepts_wanted(const struct broker *b, const struct fd_budget *fb)
{
    uint64_t used = fb->kept + atomic_load_explicit(&b->nclients, memory_order_relaxed);
    uint64_t left = fb->limit > used ? fb->limit - used : 0;
    return left >= ACCEPT_BATCH ? ACCEPT_BATCH : left > 0 ? (uint32_t)left : 1;
}

static void refuse_over_cap(const struct broker *b, const struct fd_budget *fb, int fd,
                            bool compat)
{
    static struct log_ratelimit rl = LOG_RATELIMIT_INIT("accept", 5, 10);
    static struct log_ratelimit rl_fds = LOG_RATELIMIT_INIT("accept_fd_cap", 1, 5);
    char why[192];
    if (fb->room >= bcfg(b)->max_clients) {
        LOG_RATELIMITED_BY(&rl, LOG_LEVEL_WARN, "refusing client: max_clients reached",
                           LOG_UINT("max_clients", bcfg(b)->max_clients));
        snprintf(why, sizeof why, "too many clients (max_clients %u)", bcfg(b)->max_clients);
    } else {
        LOG_RATELIMITED_BY(&rl_fds, LOG_LEVEL_WARN,
                           "refusing client: out of file descriptors for new clients, the rest "
                           "are kept for backend connections (raise LimitNOFILE / ulimit -n)",
                           LOG_UINT("client_cap", fb->room), LOG_UINT("nofile", fb->limit),
                           LOG_UINT("fds_kept", fb->kept));
        snprintf(why, sizeof why,
                 "out of file descriptors for new clients: %llu of the limit %llu are kept for "
                 "backend connections (raise LimitNOFILE / ulimit -n)",
                 (unsigned long long)fb->kept, (unsigned long long)fb->limit);
    }
    refuse_client(fd, why, compat);
}

/* Descriptor reserve: one fd held open so that, when the process runs out,
 * it can be given up to accept the oldest waiting client and tell it why,
 * instead of leaving every client hanging in the backlog. */
struct fd_reserve {
    int fd;
};

static void reserve_take(struct fd_reserve *r)
{
    if (r->fd < 0)
        r->fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void on_out_of_fds(struct broker *b, struct fd_reserve *r, int err)
{
    static struct log_ratelimit rl = LOG_RATELIMIT_INIT("accept_emfile", 1, 2);
    LOG_RATELIMITED_BY(&rl, LOG_LEVEL_ERROR,
                       "out of file descriptors: refusing clients until some are free "
                       "(raise the limit with ulimit -n / LimitNOFILE, or lower max_clients)",
                       LOG_ERRNO(err), LOG_UINT("max_clients", bcfg(b)->max_clients));
    if (r->fd < 0)
        return;
    close(r->fd);
    r->fd = -1;
    /* The accepts in flight on the ring take a client only when a new one
     * arrives (each is woken by an arrival), so a client seen waiting by poll
     * is still there for accept4, which cannot block. */
    struct pollfd pfd = {.fd = b->listen_fd, .events = POLLIN};
    int fd = poll(&pfd, 1, 0) == 1 ? accept4(b->listen_fd, NULL, NULL, SOCK_CLOEXEC) : -1;
    if (fd >= 0)
        refuse_client(fd, "the broker is out of file descriptors; try again later", false);
    reserve_take(r);
}

/* The listener's state, in broker_run's frame: it outlives the ring, so
 * the signalfd read pending at shutdown still writes into live memory. */
struct listener {
    struct broker *b;
    struct io_uring *ring;
    int sfd;
    struct signalfd_siginfo si; /* the pending signalfd read's buffer */
    struct fd_budget fds;
    struct fd_reserve reserve;
    uint32_t accepts;    /* single-shot accepts in flight on the client socket */
    uint32_t caccepts;   /* the same on compat_listen */
    uint32_t backoff_ms; /* 0: accepting; else the last wait after EMFILE */
    bool backoff_armed;  /* the wait is running: arm no accept until it ends */
    struct __kernel_timespec backoff_ts;
    uint32_t next;  /* round-robin cursor over the workers */
    bool wake[256]; /* workers given a client this round */
    bool drain_asked; /* SIGUSR1 seen: stop accepting after this round */
};

static void on_accept(struct listener *l, int fd, bool compat)
{
    struct broker *b = l->b;
    if (!peer_admit(b, fd, compat ? b->compat_family : b->listen_family,
                    compat ? "compat_listen" : "listen"))
        return;
    /* Once per round, not per client (one syscall saved per connection):
     * the accepts of one round complete together. A refusal reads it again. */
    if (!l->fds.fresh && fd_budget_read(b, &l->fds))
        fd_budget_log(b, &l->fds, false);
    l->fds.fresh = true;
    uint32_t n = atomic_fetch_add_explicit(&b->nclients, 1, memory_order_relaxed);
    /* Before refusing, read the limit again: it may have been raised after
     * this round read it (a round takes the completions that arrive while
     * it runs, too). */
    if (n >= fd_cap(b, &l->fds) && fd_budget_read(b, &l->fds))
        fd_budget_log(b, &l->fds, false);
    if (n >= fd_cap(b, &l->fds)) {
        atomic_fetch_sub_explicit(&b->nclients, 1, memory_order_relaxed);
        refuse_over_cap(b, &l->fds, fd, compat);
        return;
    }
    for (uint32_t tries = 0; tries < b->nworkers; tries++) {
        uint32_t i = l->next++ % b->nworkers;
        if (worker_inbox_push(b->workers[i], fd, compat)) {
            l->wake[i] = true;
            return;
        }
    }
    atomic_fetch_sub_explicit(&b->nclients, 1, memory_order_relaxed);
    refuse_client(fd, "every worker's queue of new clients is full", compat);
}

static void arm_backoff(struct listener *l)
{
    l->backoff_ms = l->backoff_ms ? l->backoff_ms * 2 : ACCEPT_BACKOFF_MIN_MS;
    if (l->backoff_ms > ACCEPT_BACKOFF_MAX_MS)
        l->backoff_ms = ACCEPT_BACKOFF_MAX_MS;
    l->backoff_ts.tv_sec = l->backoff_ms / 1000;
    l->backoff_ts.tv_nsec = (long long)(l->backoff_ms % 1000) * 1000000;
    struct io_uring_sqe *sqe = listener_sqe(l->ring);
    io_uring_prep_timeout(sqe, &l->backoff_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, UDL_BACKOFF);
    l->backoff_armed = true;
}

static void on_accept_cqe(struct listener *l, int res, bool compat)
{
    if (compat)
        l->caccepts--;
    else
        l->accepts--;
    if (res >= 0) {
        on_accept(l, res, compat);
        l->backoff_ms = 0;
        reserve_take(&l->reserve); /* given up earlier: take it back */
    } else if (res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM) {
        on_out_of_fds(l->b, &l->reserve, -res);
        if (!l->backoff_armed)
            arm_backoff(l);
    } else if (res != -EINTR && res != -EAGAIN && res != -ECONNABORTED) {
        static struct log_ratelimit rl = LOG_RATELIMIT_INIT("accept_failed", 1, 5);
        LOG_RATELIMITED_BY(&rl, LOG_LEVEL_WARN, "accept failed", LOG_ERRNO(-res));
    }
}

/* Top the accepts in flight up to what the budget allows (none while
 * backing off after EMFILE). An accept waits for a client in the kernel, so
 * an idle listener sleeps however many are armed. */
static void accept_refill(struct listener *l)
{
    if (l->backoff_armed || l->b->listen_fd < 0)
        return;
    uint32_t want = fd_accepts_wanted(l->b, &l->fds);
    /* With compat_listen the two sockets share the batch (one each at
     * least: so up to one accept more than the budget, within FD_MARGIN). */
    uint32_t cwant = l->b->compat_fd < 0 ? 0 : want > 1 ? want / 2 : 1;
    want = want > cwant ? want - cwant : 1;
    while (l->accepts < want) {
        arm_accept(l->ring, l->b->listen_fd, UDL_ACCEPT);
        l->accepts++;
    }
    while (l->caccepts < cwant) {
        arm_accept(l->ring, l->b->compat_fd, UDL_ACCEPT_COMPAT);
        l->caccepts++;
    }
}

static void on_signal(struct listener *l, int res)
{
    uint32_t signo = res == (int)sizeof l->si ? l->si.ssi_signo : 0;
    if (signo == SIGTERM || signo == SIGINT) {
        log_write(LOG_LEVEL_INFO, "shutting down",
                  LOG_CSTR("signal", signo == SIGTERM ? "SIGTERM" : "SIGINT"));
        atomic_store_explicit(&l->b->stopping, true, memory_order_relaxed);
        return;
    }
    if (signo == SIGUSR1)
        l->drain_asked = true; /* handled after this round's completions */
    if (signo == SIGHUP) /* reloads run on the admin thread (reload.c) */
        admin_request_reload(l->b->admin);
    arm_signal(l->ring, l->sfd, &l->si);
}

/* Stopping: cancel the accepts in flight and close whatever they took
 * meanwhile, so no accepted descriptor is left in a completion nobody reads.
 * Bounded: it gives up after a second without a completion. */
static void accept_cancel_all(struct listener *l)
{
    if (l->accepts + l->caccepts == 0)
        return;
    struct io_uring_sqe *sqe = listener_sqe(l->ring);
    io_uring_prep_cancel64(sqe, UDL_ACCEPT, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, UDL_CANCEL);
    sqe = listener_sqe(l->ring);
    io_uring_prep_cancel64(sqe, UDL_ACCEPT_COMPAT, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, UDL_CANCEL);
    io_uring_submit(l->ring);
    while (l->accepts + l->caccepts > 0) {
        struct __kernel_timespec ts = {.tv_sec = 1};
        struct io_uring_cqe *cqe;
        int rc = io_uring_wait_cqe_timeout(l->ring, &cqe, &ts);
        if (rc == -EINTR)
            continue;
        if (rc < 0)
            return;
        uint64_t ud = io_uring_cqe_get_data64(cqe);
        if (ud == UDL_ACCEPT || ud == UDL_ACCEPT_COMPAT) {
            if (ud == UDL_ACCEPT)
                l->accepts--;
            else
                l->caccepts--;
            if (cqe->res >= 0)
                close(cqe->res);
        }
        io_uring_cqe_seen(l->ring, cqe);
    }
}

/* Drain (SIGUSR1, admin drain) and shutdown: cancel the accepts, close the
 * client socket and remove its file, so new clients fail at once (ENOENT)
 * instead of queueing in a backlog nobody reads. Connected clients are not
 * touched. */
static void stop_accepting(struct listener *l, const char *why)
{
    struct broker *b = l->b;
    accept_cancel_all(l);
    if (b->listen_fd >= 0)
        close(b->listen_fd);
    b->listen_fd = -1;
    if (b->listen_unlink) {
        unlink(b->listen_path);
        b->listen_unlink = false;
    }
    if (b->compat_fd >= 0)
        close(b->compat_fd);
    b->compat_fd = -1;
    if (b->compat_unlink) {
        unlink(b->compat_path);
        b->compat_unlink = false;
    }
    atomic_store_explicit(&b->accepting, false, memory_order_relaxed);
    if (why)
        log_write(LOG_LEVEL_INFO, why, LOG_CSTR("listen", b->listen_path));
}

static int listener_loop(struct listener *l)
{
    struct broker *b = l->b;
    reserve_take(&l->reserve);
    arm_signal(l->ring, l->sfd, &l->si);
    /* The configuration is read under cfg_lock during a round, never while
     * waiting: a reload frees a replaced one only between rounds (reload.c). */
    while (!atomic_load_explicit(&b->stopping, memory_order_relaxed)) {
        pthread_rwlock_rdlock(&b->cfg_lock);
        accept_refill(l);
        pthread_rwlock_unlock(&b->cfg_lock);
        int rc = io_uring_submit_and_wait(l->ring, 1);
        if (rc < 0 && rc != -EINTR) {
            log_write(LOG_LEVEL_ERROR, "listener io_uring failed", LOG_ERRNO(rc));
            return rc;
        }
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        l->fds.fresh = false;
        pthread_rwlock_rdlock(&b->cfg_lock);
        io_uring_for_each_cqe(l->ring, head, cqe)
        {
            seen++;
            uint64_t ud = io_uring_cqe_get_data64(cqe);
            if (ud == UDL_ACCEPT || ud == UDL_ACCEPT_COMPAT) {
                on_accept_cqe(l, cqe->res, ud == UDL_ACCEPT_COMPAT);
            } else if (ud == UDL_BACKOFF) {
                l->backoff_armed = false;
                reserve_take(&l->reserve);
            } else if (ud == UDL_SIGNAL) {
                on_signal(l, cqe->res);
            }
        }
        io_uring_cq_advance(l->ring, seen);
        if (l->drain_asked && b->listen_fd >= 0)
            stop_accepting(l, "draining: no new clients; the connected ones are served "
                              "until SIGTERM");
        for (uint32_t i = 0; i < b->nworkers; i++)
            if (l->wake[i]) {
                post_msg(l->ring, b->workers[i], BROKER_MSG_NEWCONN);
                l->wake[i] = false;
            }
        pthread_rwlock_unlock(&b->cfg_lock);
    }
    return 0;
}

/* The cache's figures, measured by the allocator, once at exit (until the
 * admin socket reports them live). */
static void log_cache_figures(struct broker *b)
{
    struct cache_stats st;
    if (!b->cache || cache_stats_read(b->cache, &st) < 0)
        return;
    log_write(LOG_LEVEL_INFO, "cache at exit", LOG_UINT("entries", st.entries),
              LOG_UINT("bytes", st.bytes), LOG_UINT("arena_bytes", st.arena_bytes),
              LOG_UINT("overhead_bytes", st.overhead_bytes), LOG_UINT("hits", st.hits),
              LOG_UINT("misses", st.misses), LOG_UINT("stale_hits", st.stale_hits),
              LOG_UINT("evictions", st.evictions), LOG_UINT("expirations", st.expirations),
              LOG_UINT("invalidations", st.invalidations), LOG_UINT("sets", st.sets),
              LOG_UINT("stale_sets", st.stale_sets), LOG_UINT("max_bytes", st.max_bytes));
}

/* systemd's Type=notify (sdnotify.h); a failure is logged, not fatal. */
static void notify(const char *state)
{
    int rc = sdnotify(state);
    if (rc < 0)
        log_write(LOG_LEVEL_WARN, "cannot notify systemd (NOTIFY_SOCKET)", LOG_CSTR("state", state),
                  LOG_ERRNO(-rc));
}

int broker_run(struct broker *b)
{
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGUSR1); /* drain, as HAProxy's soft stop */
    /* Blocked before any thread exists, so every thread inherits it and the
     * signals are only ever consumed through the signalfd. */
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (sfd < 0)
        return -errno;
    struct io_uring ring;
    int rc = io_uring_queue_init(256, &ring, 0);
    if (rc < 0) {
        close(sfd);
        return rc;
    }
    uint32_t started = 0;
    for (; started < b->nworkers; started++)
        if ((rc = worker_start(b->workers[started])) < 0) {
            log_write(LOG_LEVEL_ERROR, "cannot start worker", LOG_ERRNO(rc),
                      LOG_UINT("worker", started));
            break;
        }
    struct listener l = {.b = b, .ring = &ring, .sfd = sfd, .reserve = {-1}};
    if (started == b->nworkers && (rc = admin_start(b, b->admin_fd, &b->admin)) < 0)
        log_write(LOG_LEVEL_ERROR, "cannot start the admin socket's thread", LOG_ERRNO(rc));
    if (started == b->nworkers && rc == 0 && b->metrics_fd >= 0 &&
        (rc = metrics_http_start(b, b->metrics_fd, &b->metrics)) < 0)
        log_write(LOG_LEVEL_ERROR, "cannot start the metrics endpoint's thread", LOG_ERRNO(rc));
    if (started == b->nworkers && rc == 0) {
        pthread_rwlock_rdlock(&b->cfg_lock);
        fd_budget_init(b, &l.fds);
        log_write(LOG_LEVEL_INFO, "brokerd ready", LOG_CSTR("listen", b->listen_path),
                  LOG_UINT("workers", b->nworkers), LOG_UINT("backends", b->nbackends),
                  LOG_CSTR("backend", bcfg(b)->backends[0].name),
                  LOG_UINT("client_cap", fd_cap(b, &l.fds)), LOG_UINT("nofile", l.fds.limit),
                  LOG_UINT("fds_kept", l.fds.kept));
        pthread_rwlock_unlock(&b->cfg_lock);
        notify("READY=1");
        rc = listener_loop(&l);
        if (l.reserve.fd >= 0)
            close(l.reserve.fd);
    }
    /* Stop accepting first: the accepts are cancelled and the socket file
     * is removed, so new clients fail fast instead of queueing. */
    atomic_store_explicit(&b->stopping, true, memory_order_relaxed);
    notify("STOPPING=1");
    stop_accepting(&l, NULL);
    /* Before the messages: a worker reads it once it has drained. */
    atomic_store_explicit(&b->nstarted, started, memory_order_release);
    for (uint32_t i = 0; i < started; i++)
        post_msg(&ring, b->workers[i], BROKER_MSG_SHUTDOWN);
    io_uring_submit(&ring);
    for (uint32_t i = 0; i < started; i++)
        worker_join(b->workers[i]);
    /* The admin socket answers until here (stats of a draining broker). */
    admin_stop(b->admin);
    b->admin = NULL;
    metrics_http_stop(b->metrics);
    b->metrics = NULL;
    if (b->admin_unlink) {
        unlink(b->admin_path);
        b->admin_unlink = false;
    }
    io_uring_queue_exit(&ring);
    close(sfd);
    log_cache_figures(b);
    log_write(LOG_LEVEL_INFO, "brokerd stopped", LOG_END);
    return rc;
}
