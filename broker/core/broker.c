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

#define LISTEN_BACKLOG 4096

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
    const struct config_breaker *kc = &be->cfg->breaker;
    be->bkcfg = (struct breaker_cfg){
        .failures = kc->failures,
        .open_ns = (uint64_t)kc->open_ms * 1000000u,
        .max_open_ns = (uint64_t)kc->max_open_ms * 1000000u,
        /* the longest a probe can take before it reports */
        .probe_lease_ns = (uint64_t)(be->cfg->connect_timeout_ms + be->cfg->max_request_timeout_ms) *
                          1000000u,
    };
    lat_commands_init(&be->cmds);
    be->cmds_ok = true;
    breaker_init(&be->breaker, ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)be ^ i);
    if (health_init(be) < 0) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

static void backend_destroy(struct backend *be)
{
    if (!be->conns)
        return;
    for (uint32_t s = 0; s < be->pool.size; s++)
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

/* Bind a Unix socket (the client's or the admin's: `key` names its
 * configuration key in errors) with its mode from the start (umask around
 * bind), replacing a stale file only when no broker answers on it. */
static int listen_unix(const char *key, const char *path, mode_t mode, int *fd_out,
                       char *err, size_t errlen)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof un.sun_path) {
        snprintf(err, errlen, "%s: socket path \"%s\" is empty or longer than %zu bytes", key,
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
    return 0;
}

/* compat_listen (off when null): a Unix path like the client socket (its
 * mode, stale files replaced the same way) or a TCP host:port. */
static int compat_bind(struct broker *b, char *err, size_t errlen)
{
    const struct config_address *a = &b->cfg.compat_listen;
    char name[CONFIG_UNIX_PATH_MAX + 64];
    int rc = 0;
    if (a->kind == CONFIG_ADDR_UNIX) {
        rc = listen_unix("compat_listen", a->path, b->cfg.listen_mode, &b->compat_fd, err,
                         errlen);
        b->compat_unlink = rc == 0;
        snprintf(name, sizeof name, "%s", a->path);
    } else if (a->kind == CONFIG_ADDR_TCP) {
        rc = listen_tcp("compat_listen", a, LISTEN_BACKLOG, &b->compat_fd, name, sizeof name, err,
                        errlen);
    }
    if (rc == 0 && b->compat_fd >= 0) {
        char msg[sizeof name + 32];
        snprintf(msg, sizeof msg, "compat listener on %s", name);
        log_write(LOG_LEVEL_INFO, msg, LOG_CSTR("address", name),
                  LOG_CSTR("protocol", "blender-addon"));
    }
    return rc;
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
    b->admin_fd = -1;
    b->compat_fd = -1;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    b->started_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
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
    if ((rc = listen_unix("listen", b->cfg.listen, b->cfg.listen_mode, &b->listen_fd, err,
                          errlen)) < 0)
        goto err;
    b->listen_unlink = true;
    atomic_init(&b->accepting, true);
    /* The admin socket: owner only, whatever listen_mode allows. */
    if ((rc = listen_unix("admin_listen", b->cfg.admin_listen, 0600, &b->admin_fd, err,
                          errlen)) < 0)
        goto err;
    b->admin_unlink = true;
    if ((rc = compat_bind(b, err, errlen)) < 0)
        goto err;
    *out = b;
    return 0;
err:
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
        unlink(b->cfg.listen);
    admin_stop(b->admin); /* normally stopped by broker_run already */
    if (b->admin_fd >= 0)
        close(b->admin_fd);
    if (b->admin_unlink)
        unlink(b->cfg.admin_listen);
    if (b->compat_fd >= 0)
        close(b->compat_fd);
    if (b->compat_unlink)
        unlink(b->cfg.compat_listen.path);
    cache_free(b->cache);
    if (b->cache_arena_ok)
        arena_destroy(b->cache_arena);
    if (b->coalesce_ok)
        coalesce_destroy(&b->coalesce);
    config_destroy(&b->cfg);
    free(b);
}
