/*
 * stats.c - the broker's figures, read from wherever they live, as JSON for
 * the admin socket (admin.c) and the Prometheus exposition (metrics.c).
 *
 * Where each figure lives: request counts per worker and backend (struct
 * wstats, one writer each: summed here), error answers by code per worker,
 * connection events and the pools' queues per backend (shared atomics and
 * pool_stats_read), breaker and health state per backend (atomics), the
 * cache's own counters (cache_stats_read), and the allocator's (jemalloc
 * mallctl, fresh epoch: arena_stats_read). Every read is a relaxed load: a
 * figure is exact on its own, the set is not a snapshot of one instant.
 *
 * Runs on the admin thread only, never on a worker; allocation is fine here.
 */
#include <time.h>

#include "arena.h"
#include "stats.h"
#include "worker.h"

static json_t *u64(uint64_t v)
{
    return json_integer((json_int_t)(v > (uint64_t)INT64_MAX ? (uint64_t)INT64_MAX : v));
}

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)

/* One backend's request counts, summed over the workers. */
static struct stats_counts counts_of(struct broker *b, uint32_t bi)
{
    struct stats_counts s = {0};
    for (uint32_t i = 0; i < b->nworkers; i++) {
        struct worker *w = b->workers[i];
        if (!w || !w->bstats)
            continue;
        const struct wstats *x = &w->bstats[bi];
        s.ok += LD(x->ok);
        s.errors += LD(x->errors);
        s.timeouts += LD(x->timeouts);
        s.cache_hits += LD(x->cache_hits);
        s.cache_misses += LD(x->cache_misses);
        s.stale_served += LD(x->stale_served);
        s.coalesced += LD(x->coalesced);
        s.retries += LD(x->retries);
        s.abandoned += LD(x->abandoned);
    }
    return s;
}

void stats_counts_read(struct broker *b, uint32_t backend, struct stats_counts *out)
{
    *out = counts_of(b, backend);
}

uint64_t stats_errors_by_code(struct broker *b, enum proto_code code)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < b->nworkers; i++)
        if (b->workers[i])
            n += LD(b->workers[i]->errors[code]);
    return n;
}

uint64_t stats_uptime_ms(const struct broker *b)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    return now - b->started_ms;
}

uint64_t stats_pool_busy(struct backend *be, const struct pool_stats *ps)
{
    /* Slots held: neither connected and idle nor unconnected and spare. */
    uint32_t unheld = ps->idle + ring_mpmc_size(&be->pool.spare);
    return pool_size(&be->pool) > unheld ? pool_size(&be->pool) - unheld : 0;
}

json_t *stats_json(struct broker *b)
{
    json_t *o = json_object(), *errors = json_object(), *backends = json_object();
    uint64_t ok = 0, err = 0;
    for (int c = 0; c < PROTO_CODE_COUNT; c++) {
        uint64_t n = stats_errors_by_code(b, (enum proto_code)c);
        err += n;
        json_object_set_new(errors, proto_code_name((enum proto_code)c), u64(n));
    }
    for (uint32_t i = 0; i < b->nbackends; i++) {
        struct backend *be = &b->backends[i];
        struct stats_counts s = counts_of(b, i);
        struct pool_stats ps;
        pool_stats_read(&be->pool, &ps);
        ok += s.ok;
        json_object_set_new(backends, becfg(be)->name,
                            json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "ok", u64(s.ok),
                                      "errors", u64(s.errors), "timeouts", u64(s.timeouts),
                                      "retries", u64(s.retries), "cache_hits", u64(s.cache_hits),
                                      "coalesced", u64(s.coalesced), "stale_served",
                                      u64(s.stale_served), "abandoned", u64(s.abandoned), "waiting",
                                      u64(ps.waiting), "overloaded", u64(ps.overloaded)));
    }
    json_object_set_new(o, "uptime_ms", u64(stats_uptime_ms(b)));
    json_object_set_new(o, "workers", u64(b->nworkers));
    json_object_set_new(o, "accepting", json_boolean(LD(b->accepting)));
    json_object_set_new(o, "clients", u64(LD(b->nclients)));
    json_object_set_new(o, "inflight", u64(LD(b->inflight)));
    json_object_set_new(o, "answers_ok", u64(ok));
    json_object_set_new(o, "answers_error", u64(err));
    json_object_set_new(o, "errors", errors);
    json_object_set_new(o, "rate_limited", u64(LD(b->rate_limited)));
    json_object_set_new(o, "peers_refused", u64(LD(b->peers_refused)));
    uint64_t nobufs = 0;
    for (uint32_t i = 0; i < b->nworkers; i++)
        nobufs += LD(b->workers[i]->rx_nobufs);
    json_object_set_new(o, "rx_buffer_shortages", u64(nobufs));
    json_object_set_new(o, "backends", backends);
    return o;
}

json_t *health_json(struct broker *b)
{
    json_t *arr = json_array();
    uint64_t now_ns_ = now_ns();
    for (uint32_t i = 0; i < b->nbackends; i++) {
        struct backend *be = &b->backends[i];
        struct health *h = &be->health;
        struct breaker_stats bs;
        breaker_stats_read(&be->breaker, now_ns_, &bs);
        char why[200] = "";
        uint32_t last = LD(h->last_why);
        if ((last & 0xffu) != BE_WHY_NONE)
            backend_why_text(be, last, why, sizeof why);
        uint64_t last_ns = LD(h->last_check_ns);
        char bwhy[200] = "";
        if (bs.state != BREAKER_CLOSED)
            backend_why_text(be, bs.reason, bwhy, sizeof bwhy);
        json_array_append_new(
            arr,
            json_pack("{s:s,s:s,s:o,s:o,s:o,s:o,s:s,s:{s:s,s:o,s:o,s:o,s:o,s:o,s:o,s:s}}", "name",
                      becfg(be)->name, "state", LD(h->up) ? "up" : "down", "checks",
                      u64(LD(h->checks)), "failures", u64(LD(h->failures)), "last_check_ms_ago",
                      last_ns ? u64((now_ns_ - last_ns) / 1000000u) : json_null(),
                      "last_latency_us", u64(LD(h->last_latency_us)), "last_failure", why,
                      "breaker", "state", breaker_state_name(bs.state), "failures_in_a_row",
                      u64(bs.fails), "retry_after_ms", u64(bs.retry_after_ms), "opened",
                      u64(bs.opened), "probes", u64(bs.probes), "closed", u64(bs.closed), "refused",
                      u64(bs.refused), "why", bwhy));
    }
    return json_pack("{s:o}", "backends", arr);
}

json_t *pool_json(struct broker *b)
{
    json_t *arr = json_array();
    for (uint32_t i = 0; i < b->nbackends; i++) {
        struct backend *be = &b->backends[i];
        struct pool_stats ps;
        pool_stats_read(&be->pool, &ps);
        uint32_t open = LD(be->stats.open_conns);
        uint64_t busy = stats_pool_busy(be, &ps);
        json_array_append_new(
            arr, json_pack("{s:s,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "name",
                           becfg(be)->name, "size", u64(pool_size(&be->pool)), "open", u64(open), "idle",
                           u64(ps.idle), "busy", u64(busy), "waiting", u64(ps.waiting), "parked",
                           u64(ps.parked), "stale_tokens", u64(ps.stale), "max_queue",
                           u64(becfg(be)->max_queue), "overloaded", u64(ps.overloaded), "handoffs",
                           u64(ps.handoffs), "connects", u64(LD(be->stats.connects)),
                           "connect_failures", u64(LD(be->stats.connect_failures)), "peak_open",
                           u64(LD(be->stats.peak_conns))));
        /* a backend a reload removed, still finishing what it had */
        json_object_set_new(json_array_get(arr, json_array_size(arr) - 1), "removed",
                            json_boolean(atomic_load(&be->removed)));
    }
    return json_pack("{s:o}", "backends", arr);
}

json_t *cache_json(struct broker *b)
{
    if (!b->cache)
        return json_pack("{s:b}", "enabled", 0);
    struct cache_stats cs;
    if (cache_stats_read(b->cache, &cs) < 0)
        return json_pack("{s:b,s:s}", "enabled", 1, "error", "cannot read the cache's figures");
    uint64_t looked = cs.hits + cs.misses;
    return json_pack(
        "{s:b,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:f,s:o,s:o,s:o,s:o,s:o,s:o,s:b}", "enabled", 1,
        "entries", u64(cs.entries), "bytes", u64(cs.bytes), "arena_bytes", u64(cs.arena_bytes),
        "max_entries", u64(cs.max_entries), "max_bytes", u64(cs.max_bytes), "hits", u64(cs.hits),
        "misses", u64(cs.misses), "hit_ratio", looked ? (double)cs.hits / (double)looked : 0.0,
        "stale_hits", u64(cs.stale_hits), "evictions", u64(cs.evictions), "expirations",
        u64(cs.expirations), "invalidations", u64(cs.invalidations), "sets", u64(cs.sets),
        "pressure_evictions", u64(cs.pressure_evictions), "under_pressure", cs.under_pressure);
}

json_t *memory_json(struct broker *b)
{
    struct arena_stats as = {0};
    int rc = arena_stats_read(b->cache_arena_ok ? b->cache_arena : ARENA_NONE, &as);
    json_t *o = json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "allocated", u64(as.allocated), "active",
                          u64(as.active), "resident", u64(as.resident), "mapped", u64(as.mapped),
                          "retained", u64(as.retained), "cache_arena_bytes",
                          u64(as.arena_allocated), "rss", u64(as.rss));
    if (rc < 0)
        json_object_set_new(o, "error", json_string("some allocator figures could not be read"));
    return o;
}
