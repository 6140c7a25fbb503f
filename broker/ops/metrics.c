/*
 * metrics.c - the Prometheus text exposition of the broker's figures.
 *
 * Format 0.0.4: for each metric family one "# HELP" and one "# TYPE" line,
 * then its samples; counters end in _total; label values are backend names
 * (config-checked to [A-Za-z0-9_-]), error codes and fixed words, so no
 * escaping is ever needed. The figures are the ones stats.c reads (summed
 * per-worker counters, pool and breaker atomics, the cache's and jemalloc's
 * own figures); memory is read with a fresh jemalloc epoch, so a scrape costs
 * tens of microseconds on the admin thread, never on a worker.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "arena.h"
#include "metrics.h"
#include "stats.h"
#include "worker.h"

struct out {
    FILE *f;
};

static void family(struct out *o, const char *name, const char *type, const char *help)
{
    fprintf(o->f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample(struct out *o, const char *name, const char *labels, double v)
{
    fprintf(o->f, "%s%s%s%s %.9g\n", name, labels ? "{" : "", labels ? labels : "",
            labels ? "}" : "", v);
}

static void sample_u(struct out *o, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* name{labels} value: fmt formats the labels and then the value (%llu). */
static void sample_u(struct out *o, const char *name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(name, o->f);
    vfprintf(o->f, fmt, ap);
    fputc('\n', o->f);
    va_end(ap);
}

typedef unsigned long long ull;

static void per_backend_counter(struct out *o, struct broker *b, const char *name, const char *help,
                                size_t off)
{
    family(o, name, "counter", help);
    for (uint32_t i = 0; i < b->nbackends; i++) {
        struct stats_counts s;
        stats_counts_read(b, i, &s);
        sample_u(o, name, "{backend=\"%s\"} %llu", becfg(&b->backends[i])->name,
                 (ull) * (const uint64_t *)(const void *)((const char *)&s + off));
    }
}

#define ATOM(x) ((ull)atomic_load_explicit(&(x), memory_order_relaxed))

/* The per-backend families with one series per backend, one getter each:
 * every family's samples form one group, as the format requires. */
struct be_metric {
    const char *name, *type, *help;
    uint64_t (*get)(struct backend *be);
};

static uint64_t pool_waiting(struct backend *be)
{
    struct pool_stats ps;
    pool_stats_read(&be->pool, &ps);
    return ps.waiting;
}

static uint64_t pool_overloaded(struct backend *be)
{
    struct pool_stats ps;
    pool_stats_read(&be->pool, &ps);
    return ps.overloaded;
}

#define BE_GETTER(fn, expr)                                                                        \
    static uint64_t fn(struct backend *be)                                                         \
    {                                                                                              \
        return (uint64_t)(expr);                                                                   \
    }
BE_GETTER(pool_slots, pool_size(&be->pool))
BE_GETTER(connects, atomic_load_explicit(&be->stats.connects, memory_order_relaxed))
BE_GETTER(connect_failures, atomic_load_explicit(&be->stats.connect_failures, memory_order_relaxed))
BE_GETTER(health_up, atomic_load_explicit(&be->health.up, memory_order_relaxed))
BE_GETTER(health_checks, atomic_load_explicit(&be->health.checks, memory_order_relaxed))
BE_GETTER(health_failures, atomic_load_explicit(&be->health.failures, memory_order_relaxed))
BE_GETTER(breaker_opened, atomic_load_explicit(&be->breaker.n_opened, memory_order_relaxed))

static const struct be_metric be_metrics[] = {
    {"brokerd_pool_size", "gauge", "Configured pool_size.", pool_slots},
    {"brokerd_queue_waiting", "gauge", "Requests waiting for a backend connection.", pool_waiting},
    {"brokerd_queue_overloaded_total", "counter",
     "Requests refused because max_queue requests were waiting.", pool_overloaded},
    {"brokerd_backend_connects_total", "counter", "Backend connections opened.", connects},
    {"brokerd_backend_connect_failures_total", "counter",
     "Backend connections that failed to open.", connect_failures},
    {"brokerd_backend_up", "gauge", "1 when the backend's health checks pass.", health_up},
    {"brokerd_health_checks_total", "counter", "Health checks run.", health_checks},
    {"brokerd_health_check_failures_total", "counter", "Health checks that failed.",
     health_failures},
    {"brokerd_breaker_opened_total", "counter", "Times the circuit opened.", breaker_opened},
};

/* brokerd_request_duration_seconds{backend,command}: the workers' buckets
 * summed, made cumulative; a command slot nobody used is left out. */
static void latency_histograms(struct out *o, struct broker *b)
{
    const char *name = "brokerd_request_duration_seconds";
    family(o, name, "histogram",
           "Time from a request line to its answer, for requests past the cache, by backend "
           "and command (at most 31 command names per backend, then \"other\").");
    for (uint32_t bi = 0; bi < b->nbackends; bi++) {
        struct backend *be = &b->backends[bi];
        uint32_t ncmd = lat_commands_count(&be->cmds);
        for (uint32_t k = 0; k < LAT_COMMANDS; k++) {
            if (k >= ncmd && k != LAT_COMMANDS - 1)
                continue;
            uint64_t bucket[LAT_BUCKETS] = {0}, sum_ns = 0, count = 0;
            for (uint32_t wi = 0; wi < b->nworkers; wi++) {
                struct worker *w = b->workers[wi];
                if (!w || !w->lat)
                    continue;
                for (uint32_t j = 0; j < LAT_BUCKETS; j++)
                    bucket[j] += ATOM(w->lat[bi].buckets[k][j]);
                sum_ns += ATOM(w->lat[bi].sum_ns[k]);
            }
            for (uint32_t j = 0; j < LAT_BUCKETS; j++)
                count += bucket[j];
            if (count == 0)
                continue;
            const char *cmd = lat_command_name(&be->cmds, k);
            uint64_t cum = 0;
            for (uint32_t j = 0; j < LAT_BUCKETS - 1; j++) {
                cum += bucket[j];
                fprintf(o->f, "%s_bucket{backend=\"%s\",command=\"%s\",le=\"%g\"} %llu\n", name,
                        becfg(be)->name, cmd, lat_bounds_s[j], (ull)cum);
            }
            fprintf(o->f, "%s_bucket{backend=\"%s\",command=\"%s\",le=\"+Inf\"} %llu\n", name,
                    becfg(be)->name, cmd, (ull)count);
            fprintf(o->f, "%s_sum{backend=\"%s\",command=\"%s\"} %.9g\n", name, becfg(be)->name, cmd,
                    (double)sum_ns / 1e9);
            fprintf(o->f, "%s_count{backend=\"%s\",command=\"%s\"} %llu\n", name, becfg(be)->name,
                    cmd, (ull)count);
        }
    }
}

char *metrics_text(struct broker *b, size_t *len)
{
    char *buf = NULL;
    size_t size = 0;
    struct out o = {open_memstream(&buf, &size)};
    if (!o.f)
        return NULL;
    family(&o, "brokerd_uptime_seconds", "gauge", "Seconds since the broker started.");
    sample(&o, "brokerd_uptime_seconds", NULL, (double)stats_uptime_ms(b) / 1000.0);
    family(&o, "brokerd_clients", "gauge", "Client connections open.");
    sample_u(&o, "brokerd_clients", " %llu", ATOM(b->nclients));
    family(&o, "brokerd_requests_in_flight", "gauge", "Requests admitted and not answered yet.");
    sample_u(&o, "brokerd_requests_in_flight", " %llu", ATOM(b->inflight));
    family(&o, "brokerd_error_answers_total", "counter", "Error answers, by error code.");
    for (int c = 0; c < PROTO_CODE_COUNT; c++)
        sample_u(&o, "brokerd_error_answers_total", "{code=\"%s\"} %llu",
                 proto_code_name((enum proto_code)c),
                 (ull)stats_errors_by_code(b, (enum proto_code)c));
    family(&o, "brokerd_rate_limited_total", "counter",
           "Request lines refused by their client's token bucket.");
    sample_u(&o, "brokerd_rate_limited_total", " %llu", ATOM(b->rate_limited));
    family(&o, "brokerd_peers_refused_total", "counter",
           "Connections refused at accept: peer not root, not the broker's uid, not in "
           "allow_uids/allow_gids.");
    sample_u(&o, "brokerd_peers_refused_total", " %llu", ATOM(b->peers_refused));

    per_backend_counter(&o, b, "brokerd_backend_ok_total",
                        "Success answers (cached, stale and coalesced ones included).",
                        offsetof(struct stats_counts, ok));
    per_backend_counter(&o, b, "brokerd_backend_errors_total",
                        "Error answers of requests routed to the backend.",
                        offsetof(struct stats_counts, errors));
    per_backend_counter(&o, b, "brokerd_backend_timeouts_total", "Requests answered timeout.",
                        offsetof(struct stats_counts, timeouts));
    per_backend_counter(&o, b, "brokerd_backend_retries_total",
                        "Reads sent again after a connection failure.",
                        offsetof(struct stats_counts, retries));
    per_backend_counter(&o, b, "brokerd_cache_hits_total", "Reads answered from the cache.",
                        offsetof(struct stats_counts, cache_hits));
    per_backend_counter(&o, b, "brokerd_cache_misses_total", "Cacheable reads not in the cache.",
                        offsetof(struct stats_counts, cache_misses));
    per_backend_counter(&o, b, "brokerd_coalesced_total",
                        "Reads that joined an identical read in flight.",
                        offsetof(struct stats_counts, coalesced));
    per_backend_counter(&o, b, "brokerd_stale_served_total",
                        "Reads answered from an expired entry while the backend was failing.",
                        offsetof(struct stats_counts, stale_served));

    latency_histograms(&o, b);

    family(&o, "brokerd_pool_connections", "gauge", "Backend connections by state.");
    for (uint32_t i = 0; i < b->nbackends; i++) {
        struct backend *be = &b->backends[i];
        struct pool_stats ps;
        pool_stats_read(&be->pool, &ps);
        sample_u(&o, "brokerd_pool_connections", "{backend=\"%s\",state=\"open\"} %llu",
                 becfg(be)->name, ATOM(be->stats.open_conns));
        sample_u(&o, "brokerd_pool_connections", "{backend=\"%s\",state=\"idle\"} %llu",
                 becfg(be)->name, (ull)ps.idle);
        sample_u(&o, "brokerd_pool_connections", "{backend=\"%s\",state=\"busy\"} %llu",
                 becfg(be)->name, (ull)stats_pool_busy(be, &ps));
    }
    for (size_t k = 0; k < sizeof be_metrics / sizeof be_metrics[0]; k++) {
        const struct be_metric *m = &be_metrics[k];
        family(&o, m->name, m->type, m->help);
        for (uint32_t bi = 0; bi < b->nbackends; bi++)
            sample_u(&o, m->name, "{backend=\"%s\"} %llu", becfg(&b->backends[bi])->name,
                     (ull)m->get(&b->backends[bi]));
    }
    family(&o, "brokerd_breaker_state", "gauge",
           "Circuit breaker state: 1 for the state it is in, 0 for the others.");
    for (uint32_t i = 0; i < b->nbackends; i++) {
        struct breaker_stats bs;
        breaker_stats_read(&b->backends[i].breaker, now_ns(), &bs);
        for (int s = BREAKER_CLOSED; s <= BREAKER_HALF_OPEN; s++)
            sample_u(&o, "brokerd_breaker_state", "{backend=\"%s\",state=\"%s\"} %d",
                     becfg(&b->backends[i])->name, breaker_state_name((enum breaker_state)s),
                     (int)bs.state == s);
    }

    if (b->cache) {
        struct cache_stats cs;
        if (cache_stats_read(b->cache, &cs) == 0) {
            uint64_t looked = cs.hits + cs.misses;
            family(&o, "brokerd_cache_entries", "gauge", "Entries in the response cache.");
            sample_u(&o, "brokerd_cache_entries", " %llu", (ull)cs.entries);
            family(&o, "brokerd_cache_bytes", "gauge",
                   "Bytes of cached entries (allocator sizes).");
            sample_u(&o, "brokerd_cache_bytes", " %llu", (ull)cs.bytes);
            family(&o, "brokerd_cache_evictions_total", "counter", "Entries evicted for room.");
            sample_u(&o, "brokerd_cache_evictions_total", " %llu", (ull)cs.evictions);
            family(&o, "brokerd_cache_hit_ratio", "gauge", "Hits over lookups since start.");
            sample(&o, "brokerd_cache_hit_ratio", NULL,
                   looked ? (double)cs.hits / (double)looked : 0.0);
        }
    }
    struct arena_stats as = {0};
    if (arena_stats_read(b->cache_arena_ok ? b->cache_arena : ARENA_NONE, &as) == 0) {
        family(&o, "brokerd_memory_bytes", "gauge",
               "jemalloc figures, the cache arena's bytes and the resident set size.");
        const struct {
            const char *kind;
            uint64_t v;
        } m[] = {{"allocated", as.allocated},
                 {"active", as.active},
                 {"resident", as.resident},
                 {"mapped", as.mapped},
                 {"retained", as.retained},
                 {"cache_arena", as.arena_allocated},
                 {"rss", as.rss}};
        for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
            sample_u(&o, "brokerd_memory_bytes", "{kind=\"%s\"} %llu", m[i].kind, (ull)m[i].v);
    }
    if (fclose(o.f) != 0) {
        free(buf);
        return NULL;
    }
    *len = size;
    return buf;
}
