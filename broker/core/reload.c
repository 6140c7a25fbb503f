/*
 * reload.c - the configuration in effect, and replacing it while clients
 * stay connected (SIGHUP, admin reload).
 *
 * Shape: the configuration lives in a struct live_config (broker.h), which
 * also holds each backend's view of it (its entry, breaker settings,
 * resolved address). Readers never lock: a worker loads b->live (and a
 * backend's view) during a round of its loop, and at the top of the next
 * round acknowledges the generation it has seen (worker_config_sync). A
 * reload builds and checks a complete new live_config, publishes it with
 * one release store, wakes every worker (MSG_RING), and frees a replaced
 * one once every worker has acknowledged a newer generation, no backend's
 * view points into it, and the listener (which reads it under a read lock
 * during a round) is out of it: quiescent-state reclamation, as RCU does.
 *
 * What a reload may change (config.c marks the keys): limits, timeouts,
 * breaker, retry, health, rate limit, cache TTLs, logging, and the list of
 * backends: a new name is a new backend (pool, breaker, health state, its
 * own health checks); a missing name is removed: it takes no new request,
 * finishes the ones it has, and its connections close as they come free; a
 * name that comes back takes its old slot again. pool_size grows or shrinks
 * a pool in place (pool.h, Resizing); a new address or framing closes the
 * old connections as they come free, so none is used across the change.
 * The rest (sockets, workers, cache size) needs a restart, and a reload
 * that changes them is refused naming the key, with the old configuration
 * kept whole: nothing is applied before everything is checked.
 *
 * Thread: every reload runs on the admin thread (SIGHUP is forwarded there
 * by the listener), so there is one writer; the admin thread's own reads
 * need no protection.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "worker.h"

/* How long a reload waits for the workers to acknowledge it before it
 * leaves the old configuration to a later reload (or to exit) to free. */
#define RELOAD_ACK_WAIT_MS 2000

static void live_free(struct live_config *l)
{
    if (!l)
        return;
    config_destroy(&l->cfg);
    free(l);
}

int live_create(struct broker *b, struct broker_config *cfg, char *err, size_t errlen)
{
    struct live_config *l = calloc(1, sizeof *l);
    if (!l) {
        config_destroy(cfg);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    l->cfg = *cfg; /* taken over */
    memset(cfg, 0, sizeof *cfg);
    l->gen = 1;
    for (uint32_t j = 0; j < l->cfg.nbackends; j++) {
        int rc = backend_view_fill(&l->views[j], &l->cfg.backends[j], j, err, errlen);
        if (rc < 0) {
            live_free(l);
            return rc;
        }
    }
    atomic_store_explicit(&b->live, l, memory_order_release);
    atomic_store_explicit(&b->cfg_gen, l->gen, memory_order_release);
    for (uint32_t j = 0; j < l->cfg.nbackends; j++) {
        /* counted first: broker_free destroys a half-built backend too */
        atomic_store_explicit(&b->nbackends, j + 1, memory_order_release);
        int rc = backend_init(b, j, &l->views[j], err, errlen);
        if (rc < 0)
            return rc;
        l->be_of[j] = &b->backends[j];
    }
    return 0;
}

void broker_set_loader(struct broker *b, broker_config_loader fn, void *arg)
{
    b->loader = fn;
    b->loader_arg = arg;
}

void live_destroy_all(struct broker *b)
{
    live_free(atomic_load_explicit(&b->live, memory_order_relaxed));
    atomic_store_explicit(&b->live, NULL, memory_order_relaxed);
    while (b->retired) {
        struct live_config *n = b->retired->retired_next;
        live_free(b->retired);
        b->retired = n;
    }
}

/* --- the worker's side ------------------------------------------------- */

/* Sweep the idle connections of a backend this worker owns: those a
 * reload made outdated (moved, removed, above the pool's new size) are
 * closed; the others go back. Held ones are closed by their holder at
 * release (bconn_outdated). */
static void sweep_idle(struct backend *be)
{
    struct pool_slot *taken[1024];
    uint32_t n = 0;
    struct pool_slot *s;
    while (n < be->pool.cap && n < sizeof taken / sizeof taken[0] &&
           (s = pool_take_idle(&be->pool)))
        taken[n++] = s;
    for (uint32_t i = 0; i < n; i++) {
        struct bconn *bc = taken[i]->ctx;
        if (bconn_outdated(bc))
            bconn_close_fd(bc);
        pool_release(&be->pool, taken[i]);
    }
}

void worker_config_sync(struct worker *w)
{
    struct broker *b = w->b;
    uint64_t gen = atomic_load_explicit(&b->cfg_gen, memory_order_acquire);
    if (gen == w->cfg_gen)
        return;
    w->cfg_gen = gen;
    const struct broker_config *cfg = bcfg(b);
    w->limits.max_json_depth = cfg->max_json_depth;
    uint32_t n = broker_nbackends(b);
    for (uint32_t i = 0; i < n; i++) {
        struct backend *be = &b->backends[i];
        if (i % b->nworkers != w->id)
            continue;
        const struct backend_view *v = be_view(be);
        if (atomic_load_explicit(&be->removed, memory_order_acquire)) {
            health_stop_one(w, be);
        } else {
            pool_set_max_queue(&be->pool, v->cfg->max_queue); /* checked by the reload */
            pool_resize(&be->pool, v->cfg->pool_size);
            health_start_one(w, be);
        }
        sweep_idle(be);
    }
    atomic_store_explicit(&w->cfg_seen, gen, memory_order_release);
}

/* --- the reload -------------------------------------------------------- */

static bool view_in(const struct live_config *l, const struct backend_view *v)
{
    return v >= &l->views[0] && v < &l->views[CONFIG_BACKENDS_MAX];
}

/* Free the replaced configurations nobody can read any more. */
static void reclaim(struct broker *b)
{
    uint64_t seen = UINT64_MAX;
    for (uint32_t i = 0; i < b->nworkers; i++) {
        struct worker *w = b->workers[i];
        if (worker_exited(w))
            continue;
        uint64_t s = atomic_load_explicit(&w->cfg_seen, memory_order_acquire);
        if (s < seen)
            seen = s;
    }
    uint32_t nb = broker_nbackends(b);
    pthread_rwlock_wrlock(&b->cfg_lock); /* the listener is between rounds */
    struct live_config **pp = &b->retired;
    while (*pp) {
        struct live_config *l = *pp;
        bool pinned = false;
        for (uint32_t i = 0; i < nb && !pinned; i++)
            pinned = view_in(l, be_view(&b->backends[i]));
        /* l was replaced by generation l->gen + 1 */
        if (!pinned && seen > l->gen) {
            *pp = l->retired_next;
            live_free(l);
        } else {
            pp = &l->retired_next;
        }
    }
    pthread_rwlock_unlock(&b->cfg_lock);
}

/* Wake every worker so it acknowledges the new generation now rather than
 * at its next completion; then wait (bounded) until they have. */
static void wake_and_wait(struct broker *b, uint64_t gen)
{
    struct io_uring ring;
    if (io_uring_queue_init(8, &ring, 0) == 0) {
        for (uint32_t i = 0; i < b->nworkers; i++) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
            if (!sqe) {
                io_uring_submit(&ring);
                sqe = io_uring_get_sqe(&ring);
            }
            if (!sqe)
                break;
            io_uring_prep_msg_ring(sqe, worker_ring_fd(b->workers[i]), 0,
                                   ((uint64_t)BROKER_MSG_RELOAD << 3) | UD_MSG, 0);
            io_uring_sqe_set_data64(sqe, 0);
        }
        io_uring_submit_and_wait(&ring, 0);
        io_uring_queue_exit(&ring);
    }
    for (int ms = 0; ms < RELOAD_ACK_WAIT_MS; ms++) {
        bool all = true;
        for (uint32_t i = 0; i < b->nworkers && all; i++) {
            struct worker *w = b->workers[i];
            all = worker_exited(w) || atomic_load_explicit(&w->cfg_seen, memory_order_acquire) >= gen;
        }
        if (all)
            return;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

static bool address_equal(const struct backend_config *a, const struct backend_config *c)
{
    return config_address_equal(&a->address, &c->address) && a->framing == c->framing;
}

struct plan {
    uint32_t fresh[CONFIG_BACKENDS_MAX]; /* config positions of backends to create */
    uint32_t nfresh;
    uint32_t added, removed, revived, resized, moved;
};

/* Check and prepare everything that can fail, touching nothing live. */
static int plan_backends(struct broker *b, struct live_config *cur, struct live_config *l,
                         struct plan *p, char *err, size_t errlen)
{
    uint32_t nb = broker_nbackends(b);
    uint32_t next_index = nb;
    for (uint32_t j = 0; j < l->cfg.nbackends; j++) {
        const struct backend_config *bc = &l->cfg.backends[j];
        struct backend *be = NULL;
        for (uint32_t i = 0; i < nb && !be; i++)
            if (strcmp(becfg(&b->backends[i])->name, bc->name) == 0)
                be = &b->backends[i];
        int rc = backend_view_fill(&l->views[j], bc, j, err, errlen);
        if (rc < 0)
            return rc;
        if (!be) {
            if (next_index >= CONFIG_BACKENDS_MAX) {
                snprintf(err, errlen,
                         "backends[%u] (%s): this broker has had %d backends already, its "
                         "most; restart brokerd to add another",
                         j, bc->name, CONFIG_BACKENDS_MAX);
                return -EINVAL;
            }
            l->be_of[j] = &b->backends[next_index++];
            p->fresh[p->nfresh++] = j;
            p->added++;
            continue;
        }
        const struct backend_view *ov = be_view(be);
        l->be_of[j] = be;
        l->views[j].conn_serial = ov->conn_serial + (address_equal(ov->cfg, bc) ? 0u : 1u);
        if (bc->max_queue > pool_queue_room(&be->pool)) {
            snprintf(err, errlen,
                     "backends[%u].max_queue: %u is more than this backend's queue was built "
                     "for (%u); restart brokerd to apply it",
                     j, bc->max_queue, pool_queue_room(&be->pool));
            return -EINVAL;
        }
        p->revived += atomic_load_explicit(&be->removed, memory_order_relaxed);
        p->resized += bc->pool_size != pool_size(&be->pool);
        p->moved += !address_equal(ov->cfg, bc);
    }
    for (uint32_t i = 0; i < nb; i++) {
        bool kept = false;
        for (uint32_t j = 0; j < l->cfg.nbackends && !kept; j++)
            kept = l->be_of[j] == &b->backends[i];
        p->removed += !kept && !atomic_load_explicit(&b->backends[i].removed, memory_order_relaxed);
    }
    (void)cur;
    return 0;
}

static void cache_settings(const struct config_cache *cc, struct cache_config *out)
{
    cache_config_default(out);
    out->max_bytes = cc->max_bytes;
    out->max_entries = cc->max_entries;
    out->max_object_bytes = cc->max_object_bytes;
    out->ttl_ms = cc->ttl_ms;
    out->max_ttl_ms = cc->max_ttl_ms;
    out->memory_watermark_bytes = cc->memory_watermark_bytes;
    out->stale_ms = cc->serve_stale_ms;
}

int broker_reload(struct broker *b, char *msg, size_t msglen)
{
    char err[512] = "";
    if (!b->loader) {
        snprintf(msg, msglen, "this broker has no configuration source to read again");
        return -ENOTSUP;
    }
    struct live_config *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(msg, msglen, "out of memory");
        return -ENOMEM;
    }
    int rc = b->loader(b->loader_arg, &l->cfg, err, sizeof err);
    struct live_config *cur = broker_live(b);
    if (rc == 0)
        rc = config_check_reload(&cur->cfg, &l->cfg, err, sizeof err);
    struct plan p = {0};
    if (rc == 0)
        rc = plan_backends(b, cur, l, &p, err, sizeof err);
    struct cache_config cc_new, cc_old;
    cache_settings(&l->cfg.cache, &cc_new);
    cache_settings(&cur->cfg.cache, &cc_old);
    bool cache_changed = false;
    if (rc == 0 && b->cache) {
        if ((rc = cache_reconfigure(b->cache, &cc_new)) < 0)
            snprintf(err, sizeof err, "cache: the new settings were refused: %s", strerror(-rc));
        cache_changed = rc == 0;
    }
    /* New backends: built aside, published with the configuration. */
    uint32_t nb = broker_nbackends(b), built = 0;
    while (rc == 0 && built < p.nfresh) {
        rc = backend_init(b, nb + built, &l->views[p.fresh[built]], err, sizeof err);
        built++; /* a half-built one is destroyed below too */
    }
    if (rc < 0) {
        for (uint32_t k = 0; k < built; k++)
            backend_destroy(&b->backends[nb + k]);
        memset(&b->backends[nb], 0, built * sizeof *b->backends);
        if (cache_changed)
            cache_reconfigure(b->cache, &cc_old);
        snprintf(msg, msglen, "%s", err);
        live_free(l);
        return rc;
    }
    /* Publish: the backends first (a worker that sees the new generation
     * finds them ready), then the configuration and its generation. */
    atomic_store_explicit(&b->nbackends, nb + p.nfresh, memory_order_release);
    for (uint32_t j = 0; j < l->cfg.nbackends; j++) {
        struct backend *be = l->be_of[j];
        atomic_store_explicit(&be->view, &l->views[j], memory_order_release);
        atomic_store_explicit(&be->removed, false, memory_order_release);
    }
    for (uint32_t i = 0; i < nb; i++) {
        bool kept = false;
        for (uint32_t j = 0; j < l->cfg.nbackends && !kept; j++)
            kept = l->be_of[j] == &b->backends[i];
        if (!kept)
            atomic_store_explicit(&b->backends[i].removed, true, memory_order_release);
    }
    l->gen = cur->gen + 1;
    pthread_rwlock_wrlock(&b->cfg_lock); /* the listener's round sees one or the other */
    atomic_store_explicit(&b->live, l, memory_order_release);
    cur->retired_next = b->retired;
    b->retired = cur;
    pthread_rwlock_unlock(&b->cfg_lock);
    atomic_store_explicit(&b->cfg_gen, l->gen, memory_order_release);
    log_set_level(l->cfg.log.level);
    log_set_format(l->cfg.log.format);
    wake_and_wait(b, l->gen);
    reclaim(b);
    snprintf(msg, msglen,
             "configuration reloaded (generation %llu): %zu backends; %u added, %u removed, "
             "%u back, %u resized, %u moved",
             (unsigned long long)l->gen, l->cfg.nbackends, p.added, p.removed, p.revived,
             p.resized, p.moved);
    return 0;
}
