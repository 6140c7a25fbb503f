/*
 * broker.c - process-wide setup, the listener loop and orderly shutdown.
 *
 * The main thread runs the listener: one io_uring with a multishot accept on
 * the client socket and a read on a signalfd (SIGTERM, SIGINT, SIGHUP are
 * blocked in every thread and only ever read there, so no handler runs at
 * an arbitrary point). Accepted fds go round-robin to the workers' SPSC
 * inboxes, and one MSG_RING per woken worker per batch wakes them.
 *
 * Shutdown: stop accepting, remove the socket file, tell every worker to
 * drain (they answer or fail every request within shutdown_grace_ms and
 * close their clients), join every worker, then free everything. No thread,
 * timer or fd survives broker_free.
 *
 * Stale socket files: bind() failing with EADDRINUSE is answered by probing
 * the path: if a broker answers there we refuse to start; if nothing does
 * (ECONNREFUSED), the file is a leftover and is replaced.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "arena.h"
#include "broker.h"
#include "log.h"

#define LISTEN_BACKLOG 4096
#define UDL_ACCEPT 1
#define UDL_SIGNAL 2
#define UDL_BACKOFF 3
/* Out of descriptors: accepting again at once would spin (the multishot
 * accept ends on every EMFILE). Wait, doubling from the first to the last
 * figure, and start over once an accept succeeds. */
#define ACCEPT_BACKOFF_MIN_MS 10
#define ACCEPT_BACKOFF_MAX_MS 1000

static int resolve_backend(struct backend *be, char *err, size_t errlen)
{
    const struct config_address *a = &be->cfg->address;
    memset(&be->addr, 0, sizeof be->addr);
    if (a->kind == CONFIG_ADDR_UNIX) {
        struct sockaddr_un *un = (struct sockaddr_un *)&be->addr;
        un->sun_family = AF_UNIX;
        size_t n = strlen(a->path);
        memcpy(un->sun_path, a->path, n + 1); /* config checked n <= 107 */
        be->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
        return 0;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = a->family};
    struct addrinfo *res = NULL;
    char port[8];
    snprintf(port, sizeof port, "%u", a->port);
    int rc = getaddrinfo(a->host, port, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "backends[%u] (%s): cannot resolve \"%s\": %s", be->index,
                 be->cfg->name, a->host, gai_strerror(rc));
        return -EINVAL;
    }
    memcpy(&be->addr, res->ai_addr, res->ai_addrlen);
    be->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int backend_init(struct broker *b, uint32_t i, char *err, size_t errlen)
{
    struct backend *be = &b->backends[i];
    be->index = i;
    be->cfg = &b->cfg.backends[i];
    int rc = resolve_backend(be, err, errlen);
    if (rc < 0)
        return rc;
    if (be->cfg->pool_size > 65535) {
        snprintf(err, errlen, "backends[%u].pool_size: at most 65535", i);
        return -EINVAL;
    }
    rc = pool_init(&be->pool, be->cfg->pool_size, be->cfg->max_queue, worker_pool_handoff, b);
    if (rc < 0) {
        snprintf(err, errlen, "backend %s: cannot create its pool: %s", be->cfg->name,
                 strerror(-rc));
        return rc;
    }
    be->conns = calloc(be->cfg->pool_size, sizeof *be->conns);
    if (!be->conns) {
        pool_destroy(&be->pool);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    for (uint32_t s = 0; s < be->cfg->pool_size; s++) {
        struct bconn *bc = &be->conns[s];
        bc->be = be;
        bc->slot = &be->pool.slots[s];
        for (uint64_t k = 0; k < 3; k++)
            bc->op_kind[k] = k;
        proto_buf_init(&bc->in);
        proto_reply_scanner_init(&bc->scan, FRAME_MAX_DEPTH, FRAME_F_TOP_CONTAINER);
        be->pool.slots[s].ctx = bc;
    }
    return 0;
}

static void backend_destroy(struct backend *be)
{
    if (!be->conns)
        return;
    for (uint32_t s = 0; s < be->pool.size; s++)
        proto_buf_free(&be->conns[s].in);
    pool_destroy(&be->pool); /* closes every connected slot, wherever it is */
    free(be->conns);
    be->conns = NULL;
}

/* The response cache in its own jemalloc arena (off when cache.max_bytes or
 * cache.max_entries is 0), and the coalescing table. */
static int cache_setup(struct broker *b, char *err, size_t errlen)
{
    int rc = coalesce_init(&b->coalesce);
    if (rc < 0) {
        snprintf(err, errlen, "cannot create the coalescing table: %s", strerror(-rc));
        return rc;
    }
    b->coalesce_ok = true;
    const struct config_cache *cc = &b->cfg.cache;
    if (cc->max_bytes == 0 || cc->max_entries == 0)
        return 0;
    struct cache_config cfg;
    cache_config_default(&cfg);
    cfg.max_bytes = cc->max_bytes;
    cfg.max_entries = cc->max_entries;
    cfg.max_object_bytes = cc->max_object_bytes;
    cfg.ttl_ms = cc->ttl_ms;
    cfg.max_ttl_ms = cc->max_ttl_ms;
    cfg.memory_watermark_bytes = cc->memory_watermark_bytes;
    cfg.stale_ms = cc->serve_stale_ms;
    if ((rc = arena_create(&b->cache_arena)) < 0) {
        snprintf(err, errlen, "cache: cannot create its jemalloc arena: %s", strerror(-rc));
        return rc;
    }
    b->cache_arena_ok = true;
    if ((rc = cache_create(&cfg, b->cache_arena, &b->cache)) < 0) {
        snprintf(err, errlen, "cache: cannot create it (max_bytes %llu, max_entries %u): %s",
                 (unsigned long long)cc->max_bytes, cc->max_entries, strerror(-rc));
        return rc;
    }
    return 0;
}

/* Bind the client socket with the configured mode from the start (umask
 * around bind), replacing a stale file only when no broker answers on it. */
static int listen_unix(struct broker *b, char *err, size_t errlen)
{
    const char *path = b->cfg.listen;
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof un.sun_path) {
        snprintf(err, errlen, "listen: socket path \"%s\" is empty or longer than %zu bytes",
                 path, sizeof un.sun_path - 1);
        return -ENAMETOOLONG;
    }
    memcpy(un.sun_path, path, n + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -errno;
    }
    for (int attempt = 0;; attempt++) {
        mode_t old = umask((mode_t)(0777 & ~b->cfg.listen_mode));
        int rc = bind(fd, (struct sockaddr *)&un, sizeof un);
        int e = errno;
        umask(old);
        if (rc == 0)
            break;
        if (e != EADDRINUSE || attempt > 0) {
            snprintf(err, errlen, "listen: cannot bind %s: %s", path, strerror(e));
            close(fd);
            return -e;
        }
        /* Only a socket file may be replaced: never delete a regular file
         * (or anything else) that happens to sit at the configured path. */
        struct stat st;
        if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "listen: %s exists and is not a socket; refusing to replace it",
                     path);
            close(fd);
            return -EEXIST;
        }
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int live = probe >= 0 && connect(probe, (struct sockaddr *)&un, sizeof un) == 0;
        int pe = errno;
        if (probe >= 0)
            close(probe);
        if (live || (pe != ECONNREFUSED && pe != ENOENT)) {
            snprintf(err, errlen, "listen: %s is in use by a running process (another brokerd?)",
                     path);
            close(fd);
            return -EADDRINUSE;
        }
        log_write(LOG_LEVEL_WARN, "replacing stale socket file", LOG_CSTR("path", path));
        unlink(path);
    }
    if (chmod(path, b->cfg.listen_mode) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        int e = errno;
        snprintf(err, errlen, "listen: %s: %s", path, strerror(e));
        unlink(path);
        close(fd);
        return -e;
    }
    b->listen_fd = fd;
    b->listen_unlink = true;
    return 0;
}

int broker_create(struct broker **out, struct broker_config *cfg, char *err, size_t errlen)
{
    struct broker *b = calloc(1, sizeof *b);
    if (!b) {
        config_destroy(cfg);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    b->cfg = *cfg; /* taken over */
    memset(cfg, 0, sizeof *cfg);
    b->listen_fd = -1;
    int rc = -ENOMEM;
    b->nbackends = (uint32_t)b->cfg.nbackends;
    b->backends = calloc(b->nbackends, sizeof *b->backends);
    if (!b->backends)
        goto err;
    for (uint32_t i = 0; i < b->nbackends; i++)
        if ((rc = backend_init(b, i, err, errlen)) < 0)
            goto err;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    b->nworkers = b->cfg.workers ? b->cfg.workers : (uint32_t)(cpus > 0 ? cpus : 1);
    if (b->nworkers > 256) {
        snprintf(err, errlen, "workers: at most 256 (got %u)", b->nworkers);
        rc = -EINVAL;
        goto err;
    }
    b->workers = calloc(b->nworkers, sizeof *b->workers);
    if (!b->workers)
        goto err;
    for (uint32_t i = 0; i < b->nworkers; i++)
        if ((rc = worker_create(b, i, &b->workers[i])) < 0) {
            snprintf(err, errlen, "cannot create worker %u's io_uring: %s", i, strerror(-rc));
            goto err;
        }
    if ((rc = cache_setup(b, err, errlen)) < 0)
        goto err;
    if ((rc = listen_unix(b, err, errlen)) < 0)
        goto err;
    *out = b;
    return 0;
err:
    if (err[0] == '\0')
        snprintf(err, errlen, "%s", strerror(-rc));
    broker_free(b);
    return rc;
}

static void post_msg(struct io_uring *ring, struct worker *w, enum broker_msg kind)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) {
        io_uring_submit(ring);
        sqe = io_uring_get_sqe(ring);
    }
    io_uring_prep_msg_ring(sqe, worker_ring_fd(w), 0, ((uint64_t)kind << 3) | UD_MSG, 0);
    io_uring_sqe_set_data64(sqe, 0);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
}

static void arm_accept(struct io_uring *ring, int fd)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    io_uring_prep_multishot_accept(sqe, fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, UDL_ACCEPT);
}

static void arm_signal(struct io_uring *ring, int sfd, struct signalfd_siginfo *si)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    io_uring_prep_read(sqe, sfd, si, sizeof *si, 0);
    io_uring_sqe_set_data64(sqe, UDL_SIGNAL);
}

/* Refuse a client with one clear line (a trusted message), then close. */
static void refuse_client(int fd, const char *why)
{
    char line[256];
    int n = snprintf(line, sizeof line,
                     "{\"id\":null,\"status\":\"error\",\"error\":{\"code\":\"overloaded\","
                     "\"message\":\"%s\"}}\n",
                     why);
    if (n > 0 && write(fd, line, (size_t)n) < 0) {
        /* the client is gone already: nothing else to do */
    }
    close(fd);
}

static void refuse_max_clients(int fd, uint32_t max)
{
    char why[96];
    snprintf(why, sizeof why, "too many clients (max_clients %u)", max);
    refuse_client(fd, why);
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
                       LOG_ERRNO(err), LOG_UINT("max_clients", b->cfg.max_clients));
    if (r->fd < 0)
        return;
    close(r->fd);
    r->fd = -1;
    /* Only this thread accepts, and its accept has ended: a client seen
     * waiting by poll is still there for accept4, which cannot block. */
    struct pollfd pfd = {.fd = b->listen_fd, .events = POLLIN};
    int fd = poll(&pfd, 1, 0) == 1 ? accept4(b->listen_fd, NULL, NULL, SOCK_CLOEXEC) : -1;
    if (fd >= 0)
        refuse_client(fd, "the broker is out of file descriptors; try again later");
    reserve_take(r);
}

static void on_accept(struct broker *b, int fd, uint32_t *next, bool *wake)
{
    static struct log_ratelimit rl = LOG_RATELIMIT_INIT("accept", 5, 10);
    uint32_t n = atomic_fetch_add_explicit(&b->nclients, 1, memory_order_relaxed);
    if (n >= b->cfg.max_clients) {
        atomic_fetch_sub_explicit(&b->nclients, 1, memory_order_relaxed);
        LOG_RATELIMITED_BY(&rl, LOG_LEVEL_WARN, "refusing client: max_clients reached",
                           LOG_UINT("max_clients", b->cfg.max_clients));
        refuse_max_clients(fd, b->cfg.max_clients);
        return;
    }
    for (uint32_t tries = 0; tries < b->nworkers; tries++) {
        uint32_t i = (*next)++ % b->nworkers;
        if (worker_inbox_push(b->workers[i], fd)) {
            wake[i] = true;
            return;
        }
    }
    atomic_fetch_sub_explicit(&b->nclients, 1, memory_order_relaxed);
    refuse_client(fd, "every worker's queue of new clients is full");
}

static void arm_backoff(struct io_uring *ring, struct __kernel_timespec *ts, uint32_t ms)
{
    ts->tv_sec = ms / 1000;
    ts->tv_nsec = (long long)(ms % 1000) * 1000000;
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    io_uring_prep_timeout(sqe, ts, 0, 0);
    io_uring_sqe_set_data64(sqe, UDL_BACKOFF);
}

static int listener_loop(struct broker *b, struct io_uring *ring, int sfd)
{
    struct signalfd_siginfo si;
    bool wake[256] = {0};
    uint32_t next = 0;
    struct fd_reserve reserve = {-1};
    struct __kernel_timespec backoff_ts;
    uint32_t backoff_ms = 0; /* 0: accepting; else the wait before re-arming */
    reserve_take(&reserve);
    arm_accept(ring, b->listen_fd);
    arm_signal(ring, sfd, &si);
    while (!atomic_load_explicit(&b->stopping, memory_order_relaxed)) {
        int rc = io_uring_submit_and_wait(ring, 1);
        if (rc < 0 && rc != -EINTR) {
            log_write(LOG_LEVEL_ERROR, "listener io_uring failed", LOG_ERRNO(rc));
            return rc;
        }
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(ring, head, cqe)
        {
            seen++;
            uint64_t ud = io_uring_cqe_get_data64(cqe);
            if (ud == UDL_ACCEPT) {
                int res = cqe->res;
                bool out_of_fds = res == -EMFILE || res == -ENFILE || res == -ENOBUFS ||
                                  res == -ENOMEM;
                if (res >= 0) {
                    on_accept(b, res, &next, wake);
                    backoff_ms = 0;
                    reserve_take(&reserve); /* given up earlier: take it back */
                } else if (out_of_fds) {
                    on_out_of_fds(b, &reserve, -res);
                } else if (res != -EINTR && res != -EAGAIN && res != -ECONNABORTED) {
                    static struct log_ratelimit rl = LOG_RATELIMIT_INIT("accept_failed", 1, 5);
                    LOG_RATELIMITED_BY(&rl, LOG_LEVEL_WARN, "accept failed", LOG_ERRNO(-res));
                }
                if (cqe->flags & IORING_CQE_F_MORE) {
                    /* still armed */
                } else if (out_of_fds) {
                    backoff_ms = backoff_ms ? backoff_ms * 2 : ACCEPT_BACKOFF_MIN_MS;
                    if (backoff_ms > ACCEPT_BACKOFF_MAX_MS)
                        backoff_ms = ACCEPT_BACKOFF_MAX_MS;
                    arm_backoff(ring, &backoff_ts, backoff_ms);
                } else {
                    arm_accept(ring, b->listen_fd);
                }
            } else if (ud == UDL_BACKOFF) {
                reserve_take(&reserve);
                arm_accept(ring, b->listen_fd);
            } else if (ud == UDL_SIGNAL) {
                if (cqe->res == (int)sizeof si &&
                    (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)) {
                    log_write(LOG_LEVEL_INFO, "shutting down",
                              LOG_CSTR("signal", si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT"));
                    atomic_store_explicit(&b->stopping, true, memory_order_relaxed);
                } else {
                    if (cqe->res == (int)sizeof si && si.ssi_signo == SIGHUP)
                        log_write(LOG_LEVEL_WARN,
                                  "SIGHUP: configuration reload is not implemented yet; "
                                  "restart brokerd to apply changes",
                                  LOG_END);
                    arm_signal(ring, sfd, &si);
                }
            }
        }
        io_uring_cq_advance(ring, seen);
        for (uint32_t i = 0; i < b->nworkers; i++)
            if (wake[i]) {
                post_msg(ring, b->workers[i], BROKER_MSG_NEWCONN);
                wake[i] = false;
            }
    }
    if (reserve.fd >= 0)
        close(reserve.fd);
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

int broker_run(struct broker *b)
{
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
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
    if (started == b->nworkers) {
        log_write(LOG_LEVEL_INFO, "brokerd ready", LOG_CSTR("listen", b->cfg.listen),
                  LOG_UINT("workers", b->nworkers), LOG_UINT("backends", b->nbackends),
                  LOG_CSTR("backend", b->cfg.backends[0].name));
        rc = listener_loop(b, &ring, sfd);
    }
    /* Stop accepting first: the accept is cancelled with the ring, the
     * socket file removed, so new clients fail fast instead of queueing. */
    atomic_store_explicit(&b->stopping, true, memory_order_relaxed);
    close(b->listen_fd);
    b->listen_fd = -1;
    if (b->listen_unlink) {
        unlink(b->cfg.listen);
        b->listen_unlink = false;
    }
    /* Before the messages: a worker reads it once it has drained. */
    atomic_store_explicit(&b->nstarted, started, memory_order_release);
    for (uint32_t i = 0; i < started; i++)
        post_msg(&ring, b->workers[i], BROKER_MSG_SHUTDOWN);
    io_uring_submit(&ring);
    for (uint32_t i = 0; i < started; i++)
        worker_join(b->workers[i]);
    io_uring_queue_exit(&ring);
    close(sfd);
    log_cache_figures(b);
    log_write(LOG_LEVEL_INFO, "brokerd stopped", LOG_END);
    return rc;
}

void broker_free(struct broker *b)
{
    if (!b)
        return;
    if (b->workers) {
        for (uint32_t i = 0; i < b->nworkers; i++)
            worker_join(b->workers[i]);
        for (uint32_t i = 0; i < b->nworkers; i++)
            worker_free(b->workers[i]);
        free(b->workers);
    }
    if (b->backends) {
        for (uint32_t i = 0; i < b->nbackends; i++)
            backend_destroy(&b->backends[i]);
        free(b->backends);
    }
    if (b->listen_fd >= 0)
        close(b->listen_fd);
    if (b->listen_unlink)
        unlink(b->cfg.listen);
    cache_free(b->cache);
    if (b->cache_arena_ok)
        arena_destroy(b->cache_arena);
    if (b->coalesce_ok)
        coalesce_destroy(&b->coalesce);
    config_destroy(&b->cfg);
    free(b);
}
