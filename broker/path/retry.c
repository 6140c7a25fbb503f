/*
 * retry.c - what a failing backend does to a request: the circuit breaker
 * at the door, failures counted against it, and retries of reads.
 *
 * At the door (retry_admit, after the request is built and before it joins
 * a coalescing group or the pool): the backend's breaker (breaker.h) lets
 * it pass, makes it the half-open probe, or refuses it at once with
 * `unavailable`, the reason the circuit opened and `retry_after_ms` - or
 * with a stale cache entry when serve-stale allows (req_fail does that).
 *
 * On the way back: every reply, error replies included, is a sign of life
 * (retry_success); a connect error, a dead connection, a framing error or
 * a timeout is a failure (req_backend_fail, called by bconn.c and the
 * deadline). A failed read_only command is tried again when
 *   - its failure is one a retry can cure (the connection failed, not the
 *     reply: refused, connect timeout, closed, socket error),
 *   - it has tries left (retry.max) and time left before its deadline,
 *   - and the worker's retry budget for that backend has a token.
 * A command not in read_only is never sent twice, whatever happened.
 *
 * Backoff: retry.backoff_ms doubled for each further try, with up to half
 * again of jitter; the request waits in the worker's deadline heap (state
 * REQ_BACKOFF, its idle_ns is the retry time), so no timer of its own.
 *
 * Budget: a retry costs one token, every request that reaches the door adds
 * RETRY_BUDGET_RATIO of one, up to RETRY_BUDGET_MAX. So retries stay a
 * fifth of recent traffic on each worker: during an outage they cannot
 * multiply the load on the backend (the breaker stops the rest).
 */
#include <string.h>

#include "log.h"
#include "worker.h"

#define RETRY_TOKEN        1000u /* one retry, in milli-tokens */
#define RETRY_BUDGET_RATIO 200u  /* each request adds 0.2 retries */

bool retry_admit(struct worker *w, struct req *r)
{
    struct backend *be = r->be;
    uint32_t *bank = &w->retry_budget[be->index];
    if (r->attempts == 0 && *bank < RETRY_BUDGET_MAX)
        *bank += RETRY_BUDGET_RATIO;
    uint32_t after_ms = 0, reason = 0;
    switch (breaker_allow(&be->breaker, &be_view(be)->bk, now_ns(), &after_ms, &reason)) {
    case BREAKER_PASS:
        return true;
    case BREAKER_PROBE:
        r->probe = true;
        return true;
    case BREAKER_REFUSE:
        break;
    }
    char why[200];
    backend_why_text(be, reason, why, sizeof why);
    /* Half-open, the time left is the probe's lease (as long as a request
     * may take): the probe's verdict comes far sooner, so suggest a retry
     * after one base open period instead. */
    bool testing =
        atomic_load_explicit(&be->breaker.state, memory_order_relaxed) == BREAKER_HALF_OPEN;
    uint32_t open_ms = (uint32_t)becfg(be)->breaker.open_ms;
    if (testing && after_ms > open_ms)
        after_ms = open_ms;
    req_fail_after(w, r, PROTO_UNAVAILABLE, after_ms,
                   "backend %s: circuit %s, it %s; try again in %u ms", becfg(be)->name,
                   testing ? "half-open (one request is testing it)" : "open", why, after_ms);
    return false;
}

void retry_success(struct worker *w, struct req *r)
{
    struct backend *be = r->be;
    bool probe = r->probe;
    r->probe = false;
    if (breaker_success(&be->breaker, &be_view(be)->bk, probe))
        log_write(LOG_LEVEL_INFO, "backend answers again: circuit closed",
                  LOG_CSTR("backend", becfg(be)->name));
    (void)w;
}

/* The request was the probe and ends without a verdict on the backend. */
void retry_abandon(struct req *r)
{
    if (r->probe) {
        r->probe = false;
        breaker_probe_abandoned(&r->be->breaker);
    }
}

static bool curable(enum backend_why why)
{
    return why == BE_WHY_REFUSED || why == BE_WHY_CONNECT_TIMEOUT || why == BE_WHY_CLOSED ||
           why == BE_WHY_IO;
}

/* Let go of the failed connection (bconn.c settles it, closed) and wait in
 * the heap until the retry time. */
static void retry_later(struct worker *w, struct req *r, uint64_t at)
{
    struct bconn *bc = r->bc;
    if (bc) {
        bconn_doom(bc);
        bc->req = NULL;
        r->bc = NULL;
        if (bc != w->cqe_bc)
            bconn_settle(w, bc);
    }
    r->state = REQ_BACKOFF;
    r->attempts++;
    r->idle_ns = at;
    deadline_rekey(w, r);
    wstat_inc(&w->bstats[r->be->index].retries);
}

void req_backend_fail(struct worker *w, struct req *r, enum backend_why why, uint64_t ms,
                      enum proto_code code, const char *fmt, ...)
{
    static struct log_ratelimit rl = LOG_RATELIMIT_INIT("circuit_open", 1, 5);
    struct backend *be = r->be;
    uint64_t now = now_ns();
    bool probe = r->probe;
    r->probe = false;
    if (breaker_failure(&be->breaker, &be_view(be)->bk, now, probe, backend_reason(why, ms))) {
        char text[200];
        size_t n = backend_why_text(be, backend_reason(why, ms), text, sizeof text);
        LOG_RATELIMITED_BY(&rl, LOG_LEVEL_WARN, "backend failing: circuit open",
                           LOG_CSTR("backend", becfg(be)->name), LOG_STR("why", text, n));
    }
    const struct config_retry *rc = &becfg(be)->retry;
    uint32_t *bank = &w->retry_budget[be->index];
    if (!r->mutating && curable(why) && r->attempts < rc->max && *bank >= RETRY_TOKEN &&
        !w->draining && !(r->c->dead && !r->ticket)) {
        uint64_t back = (uint64_t)rc->backoff_ms * 1000000u << r->attempts;
        back += back ? xorshift_next(&w->rng) % (back / 2 + 1) : 0;
        if (now + back < r->deadline_ns) {
            *bank -= RETRY_TOKEN;
            retry_later(w, r, now + back);
            return;
        }
    }
    va_list ap;
    va_start(ap, fmt);
    req_vfail(w, r, code, -1, fmt, ap);
    va_end(ap);
}

void retry_now(struct worker *w, struct req *r)
{
    r->idle_ns = UINT64_MAX;
    deadline_rekey(w, r);
    r->state = REQ_NEW;
    if (retry_admit(w, r))
        req_to_pool(w, r);
}
