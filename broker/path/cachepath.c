/*
 * cachepath.c - the response cache in a request's way.
 *
 * Which requests: a command in its backend's read_only list is a read; the
 * cache (alloc/cache.h, its own jemalloc arena) answers it when it holds a
 * fresh entry, "cached": true. "cache": false skips the lookup and the
 * coalescing, and still refreshes the entry. Every other command mutates:
 * once any byte of it may have reached the backend, whatever its outcome
 * (success, error, timeout, a reset: an unknown outcome counts as done),
 * its backend's entries are invalidated in req_done, before its answer can
 * reach its client, so no client reads its own write stale.
 *
 * Key: backend index, command, and the params bytes as forwarded to the
 * backend (for ASCII params, which is nearly all, the client's own bytes:
 * the lookup happens before the request is even built).
 *
 * Hit path: one lock-free cache_get whose sink writes the stored result -
 * already in its client-ready form - straight into the client's output
 * (the only copy). No request record, no allocation: the output has
 * HIT_HEADROOM bytes reserved before the lookup; a larger value makes the
 * sink refuse (-ENOBUFS, not counted as a hit), the buffer grows outside
 * the read section, and the lookup runs once more.
 *
 * Generations: the miss returns the backend's generation read before the
 * lookup; it travels in the request to the fill, so an answer that may
 * predate a write is refused by the cache (-ESTALE), never served.
 *
 * Coalescing (coalesce.h): a cacheable miss joins the ticket of an identical
 * miss in flight, on any worker, and parks (REQ_FOLLOWING, its own deadline
 * still running); the leader's answer is shared when it is written.
 *
 * Serve-stale: when the backend cannot answer (cannot connect, or dropped
 * the connection without a reply) a read whose entry expired less than
 * cache.serve_stale_ms ago is answered from it, "stale": true.
 *
 * Limits (alloc/cache.h): each thread that reads the cache holds one of
 * 256 lock-free reader slots for the cache's life - one per worker, and
 * brokerd has at most 256 (a thread beyond that would read under the shard
 * mutex). Hits and misses are counted in shared per-backend atomics for now;
 * per-worker counters come with the admin socket's figures.
 */
#include <errno.h>
#include <string.h>

#include "log.h"
#include "worker.h"

#define HIT_HEADROOM (16u * 1024u)

static uint64_t now_ms(void)
{
    return now_ns() / 1000000u;
}

struct hit_sink {
    struct proto_buf *out;
    const struct proto_span *id;
    unsigned flags;
    size_t need; /* set on -ENOBUFS */
};

/* Runs inside the cache's read section: write the answer only into room
 * reserved before (never allocate here). */
static int hit_sink(void *arg, const void *value, size_t len)
{
    struct hit_sink *h = arg;
    size_t need = len + proto_answer_id_prefix_len(h->id) + 96;
    if (h->out->cap - h->out->len < need) {
        h->need = need;
        return -ENOBUFS;
    }
    struct proto_span result = {value, len};
    return proto_write_answer(h->out, h->id, &result, h->flags | PROTO_ANSWER_CLEAN, NULL);
}

/* Look key up and answer id into out. 0: answered; -ENOENT: miss (*gen set);
 * other: an error (treated as a miss). */
static int lookup_into(struct cache *cache, const struct cache_key *key, struct proto_buf *out,
                       const struct proto_span *id, uint64_t *gen)
{
    struct hit_sink h = {out, id, PROTO_ANSWER_CACHED, 0};
    if (proto_buf_reserve_try(out, HIT_HEADROOM) < 0)
        return -ENOMEM;
    int rc = cache_get(cache, key, now_ms(), hit_sink, &h, gen);
    if (rc == -ENOBUFS) {
        if (proto_buf_reserve_try(out, h.need) < 0)
            return -ENOMEM;
        rc = cache_get(cache, key, now_ms(), hit_sink, &h, gen);
    }
    return rc;
}

static bool is_read(const struct backend *be, const struct proto_span *type)
{
    return config_is_read_only(becfg(be), type->ptr, type->len);
}

static void count_hit(struct worker *w, struct client *c, struct backend *be)
{
    wstat_inc(&w->bstats[be->index].cache_hits);
    wstat_inc(&w->bstats[be->index].ok);
    client_mark_dirty(w, c);
}

bool cachepath_hit(struct worker *w, struct client *c, struct backend *be,
                   const struct proto_request *rq, uint64_t *gen)
{
    struct cache *cache = w->b->cache;
    *gen = 0;
    if (!cache || !rq->cache || !rq->params_ascii || !is_read(be, &rq->type) || c->dead)
        return false;
    struct cache_key key = {be->index, rq->type.ptr, rq->type.len, rq->params.ptr,
                            rq->params.len};
    if (lookup_into(cache, &key, &c->out, &rq->id, gen) != 0)
        return false;
    count_hit(w, c, be);
    return true;
}

static struct cache_key req_key(const struct req *r)
{
    /* {"type":"<type>","params":<params>}: the type starts at byte 9 */
    size_t type_len = (size_t)((const char *)memchr(r->breq.data + 9, '"', r->breq.len - 9) -
                               (r->breq.data + 9));
    struct proto_span params = proto_backend_request_params(
        &r->breq, type_len, becfg(r->be)->framing == CONFIG_FRAMING_NDJSON);
    return (struct cache_key){r->be->index, r->breq.data + 9, type_len, params.ptr, params.len};
}

bool cachepath_hit_built(struct worker *w, struct req *r)
{
    struct cache *cache = w->b->cache;
    if (!cache || !r->cacheable || r->bypass || r->c->dead)
        return false;
    struct cache_key key = req_key(r);
    struct proto_span id = req_id(r);
    if (lookup_into(cache, &key, &r->c->out, &id, &r->cache_gen) != 0)
        return false;
    count_hit(w, r->c, r->be);
    req_done(w, r);
    return true;
}

bool cachepath_coalesce(struct worker *w, struct req *r)
{
    struct broker *b = w->b;
    if (!r->cacheable || r->bypass || !b->coalesce_ok)
        return false;
    wstat_inc(&w->bstats[r->be->index].cache_misses);
    size_t key_len = r->breq.len;
    struct coalesce_ticket *t;
    int rc = coalesce_join(&b->coalesce, r->be->index, r->breq.data, key_len,
                           handoff_token(w, r), &t);
    if (rc == COALESCE_FOLLOWER) {
        r->state = REQ_FOLLOWING;
        wstat_inc(&w->bstats[r->be->index].coalesced);
        return true;
    }
    if (rc != COALESCE_LEADER)
        return false; /* out of memory: to the backend alone */
    r->ticket = t;
    /* Another worker's leader may have filled the entry between our miss and
     * our join (its ticket closed just before): look once more, so that
     * identical misses never make two calls. Followers that joined us
     * meanwhile get this answer. */
    struct cache_key key = req_key(r);
    struct proto_span id = req_id(r);
    struct proto_buf *out = req_answer_out(w, r);
    size_t start = out->len;
    if (lookup_into(b->cache, &key, out, &id, &r->cache_gen) != 0) {
        out->len = start;
        return false; /* the leader: to the backend */
    }
    wstat_inc(&w->bstats[r->be->index].cache_hits);
    wstat_inc(&w->bstats[r->be->index].ok);
    req_answer_commit(w, r, out, start, 0);
    req_done(w, r);
    return true;
}

void cachepath_fill(struct worker *w, struct req *r, const char *value, size_t len)
{
    struct cache *cache = w->b->cache;
    if (!cache || !r->cacheable)
        return;
    struct cache_key key = req_key(r);
    int rc = cache_set(cache, &key, value, len, r->cache_gen, now_ms());
    if (rc < 0 && rc != -ESTALE && rc != -E2BIG) {
        static struct log_ratelimit rl = LOG_RATELIMIT_INIT("cache_set", 1, 5);
        LOG_RATELIMITED_BY(&rl, LOG_LEVEL_WARN, "cannot cache a response", LOG_ERRNO(rc),
                           LOG_CSTR("backend", becfg(r->be)->name));
    }
}

void cachepath_retire(struct worker *w, struct req *r)
{
    if (r->mutating && r->sent_any && w->b->cache)
        cache_invalidate_backend(w->b->cache, r->be->index);
}

bool cachepath_serve_stale(struct worker *w, struct req *r)
{
    struct cache *cache = w->b->cache;
    if (!cache || !r->cacheable || bcfg(w->b)->cache.serve_stale_ms <= 0)
        return false;
    struct cache_key key = req_key(r);
    struct proto_span id = req_id(r);
    struct proto_buf *out = req_answer_out(w, r);
    size_t start = out->len;
    struct hit_sink h = {out, &id, PROTO_ANSWER_CACHED | PROTO_ANSWER_STALE, 0};
    if (proto_buf_reserve_try(out, HIT_HEADROOM) < 0)
        return false;
    int rc = cache_get_stale(cache, &key, now_ms(), hit_sink, &h, NULL);
    if (rc == -ENOBUFS && proto_buf_reserve_try(out, h.need) == 0)
        rc = cache_get_stale(cache, &key, now_ms(), hit_sink, &h, NULL);
    if (rc != 0) {
        out->len = start;
        return false;
    }
    wstat_inc(&w->bstats[r->be->index].stale_served);
    wstat_inc(&w->bstats[r->be->index].ok);
    req_answer_commit(w, r, out, start, 0);
    req_done(w, r);
    return true;
}

/* One follower's answer: its own id, then the leader's answer after its id. */
static void answer_follower(struct worker *w, uint64_t token, const struct coalesce_ticket *t)
{
    struct req *r = req_at(w, (uint32_t)(token >> 8) & 0xffffffu);
    if (!r || r->state != REQ_FOLLOWING || (r->gen & 0xffffffu) != (uint32_t)(token >> 32))
        return; /* it stopped waiting (its deadline, shutdown): stale token */
    struct client *c = r->c;
    struct proto_span id = req_id(r);
    if (!c->dead) {
        size_t mark = c->out.len;
        if (proto_buf_append_try(&c->out, "{\"id\":", 6) < 0 ||
            proto_buf_append_try(&c->out, id.ptr, id.len) < 0 ||
            proto_buf_append_try(&c->out, t->tail, t->tail_len) < 0) {
            c->out.len = mark;
            c->dead = true; /* cannot buffer the answer: cut the client off */
        }
    }
    wstat_inc(&w->bstats[r->be->index].ok);
    client_mark_dirty(w, c);
    req_done(w, r);
}

static void post_ticket(struct worker *w, struct worker *t, struct coalesce_ticket *tk)
{
    struct io_uring_sqe *sqe = worker_sqe(w);
    /* user pointers fit in the 56 payload bits (48-bit address space) */
    uint64_t data = ((uint64_t)(uintptr_t)tk << 8) | ((uint64_t)BROKER_MSG_COALESCED << 3) | UD_MSG;
    io_uring_prep_msg_ring(sqe, t->ring_fd, 0, data, 0);
    io_uring_sqe_set_data64(sqe, UD_IGNORE);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
}

void cachepath_share(struct worker *w, struct req *r, const struct proto_buf *ans, size_t start)
{
    struct coalesce_ticket *t = r->ticket;
    struct broker *b = w->b;
    if (!t)
        return;
    r->ticket = NULL;
    struct proto_span id = req_id(r);
    size_t skip = start + proto_answer_id_prefix_len(&id);
    bool ok = ans && ans->len > skip;
    coalesce_close(&b->coalesce, t, ok ? ans->data + skip : NULL, ok ? ans->len - skip : 0);
    /* Which other workers have followers: one message each. */
    bool to[256] = {false};
    uint32_t refs = 1;
    for (uint32_t i = 0; t->tail && i < t->nfollowers; i++) {
        uint32_t wid = (uint32_t)(t->followers[i] & 0xffu);
        if (wid != w->id && wid < b->nworkers && !to[wid]) {
            to[wid] = true;
            refs++;
        }
    }
    coalesce_set_refs(t, refs);
    for (uint32_t i = 0; i < b->nworkers; i++)
        if (to[i])
            post_ticket(w, b->workers[i], t);
    cachepath_on_ticket(w, t); /* our own followers; drops our reference */
}

void cachepath_on_ticket(struct worker *w, struct coalesce_ticket *t)
{
    coalesce_acquire(t);
    for (uint32_t i = 0; t->tail && i < t->nfollowers; i++)
        if ((uint32_t)(t->followers[i] & 0xffu) == w->id)
            answer_follower(w, t->followers[i], t);
    coalesce_unref(t);
}

uint64_t cachepath_housekeeping(struct worker *w, uint64_t now)
{
    struct cache *cache = w->b->cache;
    if (cache && bcfg(w->b)->cache.memory_watermark_bytes)
        cache_pressure_refresh(cache);
    return now + CACHE_PRESSURE_CHECK_MS * 1000000u;
}
