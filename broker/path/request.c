/*
 * request.c - a request's way through the worker, and its answer.
 *
 * The way, in request_line(): parse (proto.c) -> validate (validate.c: the
 * Blender parameter table, execute_code screening) -> route (backend) -> admit
 * (shutdown, rate_limit.max_inflight) -> build the backend request once,
 * pure ASCII, into req->breq -> deadline -> pool: take a backend slot
 * (bconn_start) or wait for one in the backend's FIFO queue (handoff.c).
 *
 * The answer: every request ends in exactly one of req_answer_reply (the
 * backend answered) or req_fail (an error of ours: timeout, unavailable,
 * overloaded, shutting_down, ...), and both end in req_done, which retires
 * it: off the deadline heap, out of the in-flight counts, its backend
 * connection doomed if an operation is still in flight (answered early:
 * never reused), its pool wait cancelled if it was still queued.
 *
 * Requests live in chunks of REQ_CHUNK allocated on demand and never freed
 * before the worker: a request is found again by index and generation
 * (handoff tokens are values, never pointers).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "compat.h"
#include "log.h"
#include "validate.h"
#include "worker.h"

struct req *req_at(struct worker *w, uint32_t idx)
{
    uint32_t chunk = idx / REQ_CHUNK;
    if (chunk >= w->nchunks)
        return NULL;
    return &w->chunks[chunk][idx % REQ_CHUNK];
}

static struct req *req_alloc(struct worker *w)
{
    if (!w->free_reqs) {
        if (w->nchunks == REQ_MAX_CHUNKS)
            return NULL;
        struct req *chunk = calloc(REQ_CHUNK, sizeof *chunk);
        if (!chunk)
            return NULL;
        for (uint32_t i = REQ_CHUNK; i-- > 0;) {
            chunk[i].idx = w->nchunks * REQ_CHUNK + i;
            chunk[i].gen = 1;
            chunk[i].heap_idx = UINT32_MAX;
            chunk[i].next_free = w->free_reqs;
            w->free_reqs = &chunk[i];
        }
        w->chunks[w->nchunks++] = chunk;
    }
    struct req *r = w->free_reqs;
    w->free_reqs = r->next_free;
    w->live_reqs++;
    return r;
}

static void req_release(struct worker *w, struct req *r)
{
    r->state = REQ_FREE;
    r->gen = (r->gen + 1) & 0xffffffu;
    if (r->gen == 0)
        r->gen = 1;
    r->c = NULL;
    r->bc = NULL;
    r->be = NULL;
    r->ticket = NULL;
    r->probe = false;
    r->attempts = 0;
    r->breq.len = 0;
    if (r->breq.cap > 64u * 1024u)
        proto_buf_free(&r->breq); /* keep small buffers for reuse only */
    r->next_free = w->free_reqs;
    w->free_reqs = r;
    w->live_reqs--;
}

/* The request is answered (the caller wrote the response): detach it. */
void req_done(struct worker *w, struct req *r)
{
    struct client *c = r->c;
    struct bconn *bc = r->bc;
    deadline_remove(w, r);
    lat_record(&w->lat[r->be->index], r->cmd, now_ns() - r->start_ns);
    atomic_fetch_sub_explicit(&w->b->inflight, 1, memory_order_relaxed);
    c->inflight--;
    if (bc) {
        if (bc->ops)
            bconn_doom(bc); /* answered early (deadline, shutdown): never reuse */
        bc->req = NULL;
        /* Inside that connection's own completion, bconn_on_cqe settles
         * it last: nothing of it may be read after the slot is given back. */
        if (bc != w->cqe_bc)
            bconn_settle(w, bc);
    }
    if (r->state == REQ_QUEUED)
        pool_cancel_wait(&r->be->pool); /* gave up waiting: not a live waiter now */
    fairq_leave(w, r); /* a holder passes its client's turn on */
    retry_abandon(r); /* a probe that ends without a verdict gives its turn back */
    if (r->ticket)
        cachepath_share(w, r, NULL, 0); /* no answer to share: followers time out */
    cachepath_retire(w, r);
    req_release(w, r);
    client_mark_dirty(w, c);
}

/* The scratch answer buffer (coalescing leaders, gone clients) is kept up to
 * this size between answers, like a backend connection's reply buffer. */
#define SCRATCH_KEEP (256u * 1024u)

struct proto_buf *req_answer_out(struct worker *w, struct req *r)
{
    if (r->ticket || r->c->dead) {
        w->scratch.len = 0;
        return &w->scratch;
    }
    return &r->c->out;
}

void req_answer_commit(struct worker *w, struct req *r, struct proto_buf *out, size_t start,
                       int rc)
{
    struct client *c = r->c;
    if (rc < 0) {
        out->len = start;
        if (!c->dead) {
            log_write(LOG_LEVEL_ERROR, "out of memory buffering a response; closing client",
                      LOG_INT("fd", c->fd));
            c->dead = true; /* cut off, loudly, rather than miss an answer */
        }
    } else if (out == &w->scratch && !c->dead &&
               proto_buf_append_try(&c->out, out->data + start, out->len - start) < 0) {
        c->dead = true;
    }
    if (r->ticket)
        cachepath_share(w, r, rc == 0 ? out : NULL, start); /* copies what it shares */
    if (out == &w->scratch && w->scratch.cap > SCRATCH_KEEP)
        proto_buf_free(&w->scratch); /* one huge answer must not stay a worker's forever */
    client_mark_dirty(w, c);
}

void req_vfail(struct worker *w, struct req *r, enum proto_code code, int64_t retry_after_ms,
               const char *fmt, va_list ap)
{
    /* The backend cannot answer: a recently expired entry may (serve-stale). */
    if (code == PROTO_UNAVAILABLE && cachepath_serve_stale(w, r))
        return;
    char msg[PROTO_MESSAGE_MAX];
    size_t len = msg_vformat(msg, sizeof msg, fmt, ap);
    wstat_inc(&w->errors[code]);
    struct proto_span id = req_id(r);
    struct proto_buf *out = req_answer_out(w, r);
    size_t start = out->len;
    int rc = proto_write_error_ex(out, &id, code, msg, len, retry_after_ms, 0);
    req_answer_commit(w, r, out, start, rc);
    if (code == PROTO_TIMEOUT)
        wstat_inc(&w->bstats[r->be->index].timeouts);
    wstat_inc(&w->bstats[r->be->index].errors);
    req_done(w, r);
}

void req_fail(struct worker *w, struct req *r, enum proto_code code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    req_vfail(w, r, code, -1, fmt, ap);
    va_end(ap);
}

void req_fail_after(struct worker *w, struct req *r, enum proto_code code, uint32_t retry_after_ms,
                    const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    req_vfail(w, r, code, retry_after_ms, fmt, ap);
    va_end(ap);
}

/* The backend's answer, classified: a success passes its result on
 * untouched (and fills the cache for a read); an error reply passes its
 * message on, sanitised. */
void req_answer_reply(struct worker *w, struct req *r, const struct proto_reply *rep)
{
    struct proto_span id = req_id(r);
    struct proto_buf *out = req_answer_out(w, r);
    size_t start = out->len, result_off = 0;
    int rc;
    retry_success(w, r); /* any reply, an error one too: the backend is alive */
    if (rep->kind == PROTO_REPLY_SUCCESS) {
        rc = proto_write_answer(out, &id, &rep->result, 0, &result_off);
        if (rc == 0 && rep->result.ptr)
            cachepath_fill(w, r, out->data + result_off, rep->result.len);
        wstat_inc(&w->bstats[r->be->index].ok);
    } else {
        wstat_inc(&w->errors[PROTO_BACKEND_ERROR]);
        rc = proto_write_error_ex(out, &id, PROTO_BACKEND_ERROR, rep->message.ptr,
                                  rep->message.len, -1, rep->message_flags);
        wstat_inc(&w->bstats[r->be->index].errors);
    }
    req_answer_commit(w, r, out, start, rc);
    req_done(w, r);
}

/* parse: one line, one proto_request, or one error answer. */
static bool req_parse(struct worker *w, struct client *c, const char *line, size_t len,
                      struct proto_request *rq)
{
    static struct log_ratelimit rl_bad = LOG_RATELIMIT_INIT("bad_request", 10, 20);
    struct proto_error pe;
    if ((c->compat ? compat_parse(c, line, len, rq, &pe)
                   : proto_parse_request(line, len, &w->limits, rq, &pe)) == 0)
        return true;
    LOG_RATELIMITED_BY(&rl_bad, LOG_LEVEL_INFO, "refused request line",
                       LOG_STR("code", proto_code_name(pe.code), strlen(proto_code_name(pe.code))),
                       LOG_STR("why", pe.msg, pe.msg_len), LOG_INT("fd", c->fd));
    client_emit_error(w, c, pe.id.ptr ? &pe.id : NULL, pe.code, pe.msg, pe.msg_len, 0);
    return false;
}

/* validate: the Blender parameter table and execute_code screening
 * (validate.c). A command without rules costs one table lookup. A rewritten
 * params text (a folded query) lives in w->vparams for this line only: the
 * request built from it copies it. */
static bool req_validate(struct worker *w, struct client *c, struct proto_request *rq)
{
    static struct log_ratelimit rl = LOG_RATELIMIT_INIT("invalid_params", 10, 20);
    if (!validate_has_rules(rq->type.ptr, rq->type.len))
        return true;
    const struct broker_config *cfg = bcfg(w->b);
    struct validate_ctx ctx = {cfg->scripts.policy, &cfg->paths.allowed_roots};
    char msg[VALIDATE_MSG_MAX];
    enum validate_result v = validate_params(rq, &ctx, &w->vparams, msg, sizeof msg);
    if (v == VALIDATE_OK)
        return true;
    if (v == VALIDATE_REWRITTEN) {
        rq->params = (struct proto_span){w->vparams.data, w->vparams.len};
        rq->params_ascii = true;
        for (size_t i = 0; i < w->vparams.len; i++)
            if ((unsigned char)w->vparams.data[i] >= 0x80)
                rq->params_ascii = false;
        return true;
    }
    enum proto_code code = v == VALIDATE_FORBIDDEN ? PROTO_FORBIDDEN
                           : v == VALIDATE_INVALID ? PROTO_INVALID_PARAMS
                                                   : PROTO_INTERNAL;
    LOG_RATELIMITED_BY(&rl, LOG_LEVEL_INFO, "request refused by validation",
                       LOG_STR("type", rq->type.ptr, rq->type.len),
                       LOG_CSTR("code", proto_code_name(code)), LOG_CSTR("why", msg),
                       LOG_INT("fd", c->fd));
    client_emit_error(w, c, &rq->id, code, msg, strlen(msg), 0);
    return false;
}

/* route: the named backend, or the first one. */
static struct backend *req_route(struct worker *w, struct client *c, const struct proto_request *rq)
{
    struct live_config *live = broker_live(w->b);
    if (!rq->backend.ptr)
        return live->be_of[0];
    const struct backend_config *bc =
        config_find_backend(&live->cfg, rq->backend.ptr, rq->backend.len);
    if (bc)
        return live->be_of[bc - live->cfg.backends];
    client_emit_errorf(w, c, &rq->id, PROTO_UNKNOWN_BACKEND, "no backend named \"%.*s\"",
                       (int)rq->backend.len, rq->backend.ptr);
    return NULL;
}

/* build: the request record, its backend bytes (written once, pure ASCII)
 * and its deadline. NULL when it was answered already (an error). */
static struct req *req_build(struct worker *w, struct client *c, struct backend *be,
                             const struct proto_request *rq, uint64_t cache_gen)
{
    struct req *r = req_alloc(w);
    if (!r) {
        atomic_fetch_sub_explicit(&w->b->inflight, 1, memory_order_relaxed);
        client_emit_errorf(w, c, &rq->id, PROTO_OVERLOADED, "out of request slots");
        return NULL;
    }
    r->state = REQ_NEW;
    r->c = c;
    r->be = be;
    r->bc = NULL;
    bool read = config_is_read_only(becfg(be), rq->type.ptr, rq->type.len);
    r->cacheable = read && w->b->cache;
    r->bypass = !rq->cache;
    r->mutating = !read;
    r->sent_any = false;
    r->cache_gen = cache_gen;
    r->ticket = NULL;
    memcpy(r->id, rq->id.ptr, rq->id.len); /* <= PROTO_ID_MAX + quotes, parser-checked */
    r->id_len = (uint8_t)rq->id.len;
    c->inflight++;
    const struct backend_config *bcfg = becfg(be);
    int rc = proto_write_backend_request(&r->breq, &rq->type, &rq->params, rq->params_ascii);
    if (rc == 0 && bcfg->framing == CONFIG_FRAMING_NDJSON)
        rc = proto_buf_append_try(&r->breq, "\n", 1);
    int64_t t = rq->timeout_ms ? (int64_t)rq->timeout_ms : bcfg->request_timeout_ms;
    if (t > bcfg->max_request_timeout_ms)
        t = bcfg->max_request_timeout_ms;
    r->timeout_ms = (uint32_t)t;
    r->start_ns = now_ns();
    r->cmd = (uint8_t)lat_command_slot(&be->cmds, rq->type.ptr, rq->type.len);
    r->deadline_ns = r->start_ns + (uint64_t)t * 1000000u;
    r->idle_ns = UINT64_MAX;
    r->key_ns = r->deadline_ns;
    if (rc == 0)
        rc = deadline_push(w, r);
    if (rc < 0) {
        req_fail(w, r, rc == -EINVAL ? PROTO_BAD_REQUEST : PROTO_INTERNAL,
                 rc == -EINVAL ? "params hold invalid UTF-8" : "out of memory");
        return NULL;
    }
    return r;
}


/* A request's way: parse -> validate -> route -> admit (shutdown) -> cache -> admit
 * (in flight) -> build -> coalesce -> pool. Each stage answers the line
 * itself when it stops it. */
void request_line(struct worker *w, struct client *c, const char *line, size_t len)
{
    struct proto_request rq;
    if (frame_ws_span(line, len) == len)
        return; /* blank line: not a request */
    if (!req_parse(w, c, line, len, &rq))
        return;
    if (!req_validate(w, c, &rq))
        return;
    struct backend *be = req_route(w, c, &rq);
    if (!be)
        return;
    if (w->draining) {
        client_emit_errorf(w, c, &rq.id, PROTO_SHUTTING_DOWN, "the broker is shutting down");
        return;
    }
    if (!admit_rate(w, c, &rq))
        return;
    uint64_t gen;
    if (cachepath_hit(w, c, be, &rq, &gen))
        return;
    if (!admit_inflight(w, c, &rq))
        return;
    struct req *r = req_build(w, c, be, &rq, gen);
    if (!r)
        return;
    if (!rq.params_ascii && cachepath_hit_built(w, r))
        return;
    if (!retry_admit(w, r))
        return;
    if (cachepath_coalesce(w, r))
        return;
    req_to_pool(w, r);
}

void request_fail_all(struct worker *w, enum proto_code code, const char *msg)
{
    while (w->heap_len) {
        struct req *r = w->heap[0];
        req_fail(w, r, code, "%s", msg);
    }
}

void request_expire(struct worker *w, uint64_t now)
{
    while (w->heap_len && w->heap[0]->key_ns <= now) {
        struct req *r = w->heap[0];
        const struct backend_config *bcfg = becfg(r->be);
        if (r->state == REQ_BACKOFF && r->deadline_ns > now)
            retry_now(w, r);
        else if (r->deadline_ns > now)
            req_backend_fail(w, r, BE_WHY_NO_ANSWER, (uint64_t)bcfg->idle_timeout_ms, PROTO_TIMEOUT,
                             "backend %s sent nothing for %lld ms", bcfg->name,
                             (long long)bcfg->idle_timeout_ms);
        else if (r->state == REQ_ACTIVE)
            req_backend_fail(w, r, BE_WHY_NO_ANSWER, r->timeout_ms, PROTO_TIMEOUT,
                             "backend %s did not answer within %u ms", bcfg->name, r->timeout_ms);
        else if (r->state == REQ_QUEUED || r->state == REQ_PARKED)
            req_fail(w, r, PROTO_TIMEOUT, "no connection to backend %s became free within %u ms",
                     bcfg->name, r->timeout_ms);
        else
            req_fail(w, r, PROTO_TIMEOUT, "backend %s did not answer within %u ms", bcfg->name,
                     r->timeout_ms);
    }
}

void request_store_free(struct worker *w)
{
    for (uint32_t i = 0; i < w->nchunks; i++) {
        for (uint32_t j = 0; j < REQ_CHUNK; j++)
            proto_buf_free(&w->chunks[i][j].breq);
        free(w->chunks[i]);
    }
    w->nchunks = 0;
    w->free_reqs = NULL;
}
