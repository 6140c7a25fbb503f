/*
 * admit.c - whether a request line may go on: the client's rate, and the
 * broker's in-flight cap.
 *
 * Rate (admit_rate, before the cache: a client that floods is refused even
 * when its reads are cached): a token bucket per client identity
 * (ratelimit.h) - the peer's uid, read with SO_PEERCRED when the client
 * connects, so a uid's connections on this worker share one bucket; a
 * connection whose credentials cannot be read gets a bucket of its own. A
 * refused line gets `rate_limited` with `retry_after_ms`, the time until
 * its next token. The table is this worker's alone: lookups and the sweep
 * run on its thread, so a sweep cannot race with a use. The sweep runs at
 * most once per RL_SWEEP_NS, from here (no timer: a table nobody uses does
 * not grow either), and frees buckets that have refilled to full.
 *
 * In flight (admit_inflight, after a cache miss): rate_limit.max_inflight
 * for the whole broker; the per-client cap is back-pressure in client.c
 * (the client is not read while it has max_inflight_per_client open).
 */
#include <sys/socket.h>

#include "log.h"
#include "worker.h"

#define RL_SWEEP_NS    (1000u * 1000000u)
#define RL_MAX_BUCKETS 65536u
#define RL_KEY_CONN    (1ull << 63) /* per-connection keys, apart from uids */

int admit_init(struct worker *w)
{
    return ratelimit_init(&w->rl, RL_MAX_BUCKETS);
}

void admit_destroy(struct worker *w)
{
    ratelimit_destroy(&w->rl);
}

void admit_identify(struct worker *w, struct client *c)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && len == sizeof cred)
        c->rl_key = (uint64_t)cred.uid;
    else
        c->rl_key = RL_KEY_CONN | ((uint64_t)w->id << 40) | w->conn_serial++;
}

bool admit_rate(struct worker *w, struct client *c, const struct proto_request *rq)
{
    static struct log_ratelimit rl_log = LOG_RATELIMIT_INIT("rate_limited", 1, 5);
    const struct config_rate_limit *cfg = &bcfg(w->b)->rate_limit;
    uint64_t now = now_ns();
    if (now >= w->rl_sweep_ns) {
        ratelimit_sweep(&w->rl, cfg->rate, cfg->burst, now);
        w->rl_sweep_ns = now + RL_SWEEP_NS;
    }
    uint32_t after_ms = 0;
    /* RL_NOMEM (table full or no memory): let it through rather than refuse
     * a client for our own shortage; the in-flight caps still hold. */
    if (ratelimit_take(&w->rl, c->rl_key, cfg->rate, cfg->burst, now, &after_ms) != RL_LIMITED)
        return true;
    atomic_fetch_add_explicit(&w->b->rate_limited, 1, memory_order_relaxed);
    LOG_RATELIMITED_BY(&rl_log, LOG_LEVEL_INFO, "client over its rate", LOG_UINT("key", c->rl_key),
                       LOG_UINT("rate", cfg->rate), LOG_UINT("burst", cfg->burst));
    char msg[PROTO_MESSAGE_MAX];
    int n = snprintf(msg, sizeof msg,
                     "over the rate limit of %u requests per second (burst %u); try again in %u ms",
                     cfg->rate, cfg->burst, after_ms);
    client_emit_error_after(w, c, &rq->id, PROTO_RATE_LIMITED, msg,
                            n < 0                     ? 0
                            : (size_t)n >= sizeof msg ? sizeof msg - 1
                                                      : (size_t)n,
                            after_ms);
    return false;
}

bool admit_inflight(struct worker *w, struct client *c, const struct proto_request *rq)
{
    uint32_t cap = bcfg(w->b)->rate_limit.max_inflight;
    if (atomic_fetch_add_explicit(&w->b->inflight, 1, memory_order_relaxed) >= cap) {
        atomic_fetch_sub_explicit(&w->b->inflight, 1, memory_order_relaxed);
        client_emit_errorf(w, c, &rq->id, PROTO_OVERLOADED,
                           "the broker has %u requests in flight (rate_limit.max_inflight)", cap);
        return false;
    }
    return true;
}
