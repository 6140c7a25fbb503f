/*
 * broker.c - process-wide setup and teardown.
 *
 * broker_create builds, from the config, everything the listener
 * (listener.c) and the workers run on: each backend with its resolved
 * address, pool, per-slot connection state, breaker and health state; the
 * workers and their rings (not started yet); the response cache in its own
 * jemalloc arena and the coalescing table; and the bound client socket (and
 * the compat listener's, when configured: Unix or TCP, listen_tcp.c). It
 * unwinds through broker_free, which copes with a half-built broker, so a
 * failed start leaves no fd, thread or socket file behind.
 *
 * broker_free runs after broker_run has stopped and joined every worker (or
 * instead of it): it joins again (a no-op for joined workers), then frees
 * workers, backends (closing every connected slot), the client socket and
 * its file if still ours, the cache, its arena and the config. No thread,
 * timer or fd survives it.
 *
 * Stale socket files: bind() failing with EADDRINUSE is answered by probing
 * the path: if a broker answers there we refuse to start; if nothing does
 * (ECONNREFUSED), the file is a leftover and is replaced.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "arena.h"
#include "admin.h"
#include "broker.h"
#include "listen_tcp.h"
#include "log.h"
#include "metrics_http.h"
#include "sdlisten.h"

#define LISTEN_BACKLOG 4096

/* Pool slots allocated per backend: the largest pool_size, so a reload can
 * grow a pool without moving a slot another thread may hold. Untouched
 * capacity costs address space, not memory (calloc'd pages). */
#define POOL_CAP 1024u
/* Waiters a backend's queue is built for at least (max_queue may be raised
 * by a reload up to this, or up to its value at start when larger). */
#define QUEUE_ROOM 4096u

static int resolve_address(struct backend_view *v, const struct backend_config *cfg, uint32_t i,
                           char *err, size_t errlen)
{
    const struct config_address *a = &cfg->address;
    memset(&v->addr, 0, sizeof v->addr);
    if (a->kind == CONFIG_ADDR_UNIX) {
        struct sockaddr_un *un = (struct sockaddr_un *)&v->addr;
        un->sun_family = AF_UNIX;
        size_t n = strlen(a->path);
        memcpy(un->sun_path, a->path, n + 1); /* config checked n <= 107 */
        v->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
        return 0;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = a->family};
    struct addrinfo *res = NULL;
    char port[8];
    snprintf(port, sizeof port, "%u", a->port);
    int rc = getaddrinfo(a->host, port, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "backends[%u] (%s): cannot resolve \"%s\": %s", i, cfg->name,
                 a->host, gai_strerror(rc));
        return -EINVAL;
    }
    memcpy(&v->addr, res->ai_addr, res->ai_addrlen);
    v->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* A backend's view of a configuration: its entry, breaker settings in ns,
 * resolved address. i is its position in the file (for errors). */
int backend_view_fill(struct backend_view *v, const struct backend_config *cfg, uint32_t i,
                      char *err, size_t errlen)
{
    v->cfg = cfg;
    const struct config_breaker *kc = &cfg->breaker;
    v->bk = (struct breaker_cfg){
        .failures = kc->failures,
        .open_ns = (uint64_t)kc->open_ms * 1000000u,
        .max_open_ns = (uint64_t)kc->max_open_ms * 1000000u,
        /* the longest a probe can take before it reports */
        .probe_lease_ns = (uint64_t)(cfg->connect_timeout_ms + cfg->max_request_timeout_ms) *
                          1000000u,
    };
    return resolve_address(v, cfg, i, err, errlen);
}

int backend_init(struct broker *b, uint32_t i, const struct backend_view *v, char *err,
                 size_t errlen)
{
    struct backend *be = &b->backends[i];
    const struct backend_config *cfg = v->cfg;
    be->index = i;
    atomic_init(&be->view, v);
    atomic_init(&be->removed, false);
    be->applied_serial = v->conn_serial;
    if (cfg->pool_size > POOL_CAP) {
        snprintf(err, errlen, "backends[%u].pool_size: at most %u", i, POOL_CAP);
        return -EINVAL;
    }
    /* a reload may raise max_queue up to QUEUE_ROOM without a new ring */
    uint32_t room = cfg->max_queue > QUEUE_ROOM ? cfg->max_queue : QUEUE_ROOM;
    int rc = pool_init_room(&be->pool, POOL_CAP, cfg->pool_size, cfg->max_queue, room,
                            worker_pool_handoff, b);
    if (rc < 0) {
        snprintf(err, errlen, "backend %s: cannot create its pool: %s", cfg->name, strerror(-rc));
        return rc;
    }
    be->conns = calloc(POOL_CAP, sizeof *be->conns);
    if (!be->conns) {
        pool_destroy(&be->pool);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    for (uint32_t s = 0; s < POOL_CAP; s++) {
        struct bconn *bc = &be->conns[s];
        bc->be = be;
        bc->slot = &be->pool.slots[s];
        for (uint64_t k = 0; k < 3; k++)
            bc->op_kind[k] = k;
        proto_buf_init(&bc->in);
        proto_reply_scanner_init(&bc->scan, FRAME_MAX_DEPTH, FRAME_F_TOP_CONTAINER);
        be->pool.slots[s].ctx = bc;
    }
    lat_commands_init(&be->cmds);
    be->cmds_ok = true;
    breaker_init(&be->breaker, ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)be ^ i);
    if (health_init(be) < 0) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

void backend_destroy(struct backend *be)
{
    if (!be->conns)
        return;
    for (uint32_t s = 0; s < be->pool.cap; s++)
        proto_buf_free(&be->conns[s].in);
    health_destroy(be);
    if (be->cmds_ok)
        lat_commands_destroy(&be->cmds);
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
    const struct config_cache *cc = &bcfg(b)->cache;
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

/* Bind a Unix socket (the client's or the admin's: `key` names its
 * configuration key in errors) with its mode from the start (umask around
 * bind), replacing a stale file only when no broker answers on it. A socket
 * systemd passed for it (sdlisten.h: by `name` or by path) is taken instead;
 * *created then stays false, as its file is not ours to unlink. */
static int listen_unix(struct sdlisten *sl, const char *name, const char *key, const char *path,
                       mode_t mode, int *fd_out, bool *created, char *err, size_t errlen)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof un.sun_path) {
        snprintf(err, errlen, "%s: socket path \"%s\" is empty or longer than %zu bytes", key,
                 path, sizeof un.sun_path - 1);
        return -ENAMETOOLONG;
    }
    memcpy(un.sun_path, path, n + 1);
    *created = false;
    int fd = sdlisten_take(sl, name, key, (struct sockaddr *)&un, sizeof un, err, errlen);
    if (fd >= 0) {
        log_write(LOG_LEVEL_INFO, "using the socket systemd passed", LOG_CSTR("key", key),
                  LOG_CSTR("path", path), LOG_INT("fd", fd));
        *fd_out = fd;
        return 0;
    }
    if (fd != -ENOENT)
        return fd;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -errno;
    }
    for (int attempt = 0;; attempt++) {
        mode_t old = umask((mode_t)(0777 & ~mode));
        int rc = bind(fd, (struct sockaddr *)&un, sizeof un);
        int e = errno;
        umask(old);
        if (rc == 0)
            break;
        if (e != EADDRINUSE || attempt > 0) {
            snprintf(err, errlen, "%s: cannot bind %s: %s", key, path, strerror(e));
            close(fd);
            return -e;
        }
        /* Only a socket file may be replaced: never delete a regular file
         * (or anything else) that happens to sit at the configured path. */
        struct stat st;
        if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "%s: %s exists and is not a socket; refusing to replace it",
                     key, path);
            close(fd);
            return -EEXIST;
        }
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int live = probe >= 0 && connect(probe, (struct sockaddr *)&un, sizeof un) == 0;
        int pe = errno;
        if (probe >= 0)
            close(probe);
        if (live || (pe != ECONNREFUSED && pe != ENOENT)) {
            snprintf(err, errlen, "%s: %s is in use by a running process (another brokerd?)",
                     key, path);
            close(fd);
            return -EADDRINUSE;
        }
        log_write(LOG_LEVEL_WARN, "replacing stale socket file", LOG_CSTR("path", path));
        unlink(path);
    }
    if (chmod(path, mode) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s: %s", key, path, strerror(e));
        unlink(path);
        close(fd);
        return -e;
    }
    *fd_out = fd;
    *created = true;
    return 0;
}

/* compat_listen (off when null): a Unix path like the client socket (its
 * mode, stale files replaced the same way) or a TCP host:port; either may
 * come from systemd (a socket named "compat", or bound to the address). */
static int compat_bind(struct broker *b, struct sdlisten *sl, char *err, size_t errlen)
{
    const struct config_address *a = &bcfg(b)->compat_listen;
    char name[CONFIG_HOST_MAX + CONFIG_UNIX_PATH_MAX + 64];
    int rc = 0;
    if (a->kind == CONFIG_ADDR_UNIX) {
        rc = listen_unix(sl, "compat", "compat_listen", a->path, bcfg(b)->listen_mode,
                         &b->compat_fd, &b->compat_unlink, err, errlen);
        snprintf(name, sizeof name, "%s", a->path);
        snprintf(b->compat_path, sizeof b->compat_path, "%s", a->path);
    } else if (a->kind == CONFIG_ADDR_TCP) {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = a->family,
                                 .ai_flags = AI_PASSIVE};
        struct addrinfo *res = NULL;
        char port[8];
        snprintf(port, sizeof port, "%u", a->port);
        int fd = -ENOENT;
        if (getaddrinfo(a->host, port, &hints, &res) == 0 && res) {
            fd = sdlisten_take(sl, "compat", "compat_listen", res->ai_addr, res->ai_addrlen, err,
                               errlen);
            freeaddrinfo(res);
        }
        if (fd >= 0) {
            b->compat_fd = fd;
            snprintf(name, sizeof name, "%s:%u (from systemd)", a->host, a->port);
        } else if (fd != -ENOENT) {
            rc = fd;
        } else {
            rc = listen_tcp("compat_listen", a, LISTEN_BACKLOG, &b->compat_fd, name, sizeof name,
                            err, errlen);
        }
    }
    if (rc == 0 && b->compat_fd >= 0) {
        char msg[sizeof name + 32];
        snprintf(msg, sizeof msg, "compat listener on %s", name);
        log_write(LOG_LEVEL_INFO, msg, LOG_CSTR("address", name),
                  LOG_CSTR("protocol", "blender-addon"));
    }
    return rc;
}

/* The address family of a bound socket; AF_UNSPEC when unknown (then
 * peer_admit() asks again per client). */
static int sock_family(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        return AF_UNSPEC;
    return ss.ss_family;
}

int broker_create(struct broker **out, struct broker_config *cfg, char *err, size_t errlen)
{
    struct broker *b = calloc(1, sizeof *b);
    if (!b) {
        config_destroy(cfg);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    b->listen_fd = -1;
    b->admin_fd = -1;
    b->metrics_fd = -1;
    struct sdlisten sl = {.n = 0};
    b->compat_fd = -1;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    b->started_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    snprintf(b->listen_path, sizeof b->listen_path, "%s", cfg->listen);
    snprintf(b->admin_path, sizeof b->admin_path, "%s", cfg->admin_listen);
    int rc = -ENOMEM;
    if (pthread_rwlock_init(&b->cfg_lock, NULL) != 0) {
        config_destroy(cfg);
        goto err;
    }
    b->cfg_lock_ok = true;
    b->backends = calloc(CONFIG_BACKENDS_MAX, sizeof *b->backends);
    if (!b->backends) {
        config_destroy(cfg);
        goto err;
    }
    if ((rc = live_create(b, cfg, err, errlen)) < 0) /* takes cfg over */
        goto err;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    b->nworkers = bcfg(b)->workers ? bcfg(b)->workers : (uint32_t)(cpus > 0 ? cpus : 1);
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
    /* Sockets systemd passed (none without socket activation); each
     * listener below takes its own, and one nobody takes stops the start. */
    if ((rc = sdlisten_collect(&sl, err, errlen)) < 0)
        goto err;
    if ((rc = listen_unix(&sl, "client", "listen", b->listen_path, bcfg(b)->listen_mode,
                          &b->listen_fd, &b->listen_unlink, err, errlen)) < 0)
        goto err;
    atomic_init(&b->accepting, true);
    /* The admin socket: owner only, whatever listen_mode allows. */
    if ((rc = listen_unix(&sl, "admin", "admin_listen", b->admin_path, 0600, &b->admin_fd,
                          &b->admin_unlink, err, errlen)) < 0)
        goto err;
    if (bcfg(b)->metrics_listen.kind != CONFIG_ADDR_NONE &&
        (rc = metrics_http_listen(&bcfg(b)->metrics_listen, &sl, &b->metrics_fd, err, errlen)) < 0)
        goto err;
    if ((rc = compat_bind(b, &sl, err, errlen)) < 0)
        goto err;
    if ((rc = sdlisten_finish(&sl, err, errlen)) < 0)
        goto err;
    b->listen_family = sock_family(b->listen_fd);
    b->compat_family = sock_family(b->compat_fd);
    *out = b;
    return 0;
err:
    sdlisten_close(&sl);
    if (err[0] == '\0')
        snprintf(err, errlen, "%s", strerror(-rc));
    broker_free(b);
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
        unlink(b->listen_path);
    admin_stop(b->admin); /* normally stopped by broker_run already */
    if (b->admin_fd >= 0)
        close(b->admin_fd);
    if (b->admin_unlink)
        unlink(b->admin_path);
    metrics_http_stop(b->metrics); /* normally stopped by broker_run already */
    if (b->metrics_fd >= 0)
        close(b->metrics_fd);
    if (b->compat_fd >= 0)
        close(b->compat_fd);
    if (b->compat_unlink)
        unlink(b->compat_path);
    cache_free(b->cache);
    if (b->cache_arena_ok)
        arena_destroy(b->cache_arena);
    if (b->coalesce_ok)
        coalesce_destroy(&b->coalesce);
    live_destroy_all(b);
    if (b->cfg_lock_ok)
        pthread_rwlock_destroy(&b->cfg_lock);
    free(b);
}
