/*
 * fairq.c - waiting for a backend slot, fairly: round-robin across client
 * connections.
 *
 * The pool's waiter ring (pool.h) is one FIFO of tokens for every worker.
 * If each waiting request put its own token there, a client that pipelines
 * a thousand requests would put a thousand tokens ahead of the next
 * client's single one. So a client puts in at most one token per backend -
 * its turn - held by its oldest waiting request (REQ_QUEUED, the holder);
 * its other waiting requests for that backend are parked beside it
 * (REQ_PARKED, no token; counted against max_queue by pool_park). When the
 * holder's token reaches the head of the ring and gets a slot, the next
 * parked request of the same client and backend takes the turn with a new
 * token - at the back of the ring, behind every other client's turn. A
 * client with a backlog therefore gets one slot per round of the ring, and
 * a client with one request waits behind at most one turn of each other
 * client: a few backend round trips, whatever the backlog.
 *
 * The client's waiting requests (holders and parked, every backend) are one
 * list, c->wq_head..wq_tail. For each (client, backend) at most one of its
 * requests there is the holder, and the parked ones are in arrival order;
 * when the turn is free (its holder got a slot or stopped waiting, and left
 * the list) the first parked request of that backend takes it.
 *
 * A holder that stops waiting (timeout, shutdown, its client gone) leaves a
 * stale token (pool_cancel_wait), and the next parked request takes the
 * turn at once. `queue_order: "fifo"` bypasses all of this: every request
 * queues its own token (arrival order), as the perf suite compares.
 *
 * Everything here is the worker's own (a client lives on one worker).
 */
#include "worker.h"

static void wq_unlink(struct client *c, struct req *r)
{
    if (r->wq_prev)
        r->wq_prev->wq_next = r->wq_next;
    else
        c->wq_head = r->wq_next;
    if (r->wq_next)
        r->wq_next->wq_prev = r->wq_prev;
    else
        c->wq_tail = r->wq_prev;
    r->wq_prev = r->wq_next = NULL;
    r->in_wq = false;
}

static void wq_append(struct client *c, struct req *r)
{
    r->wq_next = NULL;
    r->wq_prev = c->wq_tail;
    if (c->wq_tail)
        c->wq_tail->wq_next = r;
    else
        c->wq_head = r;
    c->wq_tail = r;
    r->in_wq = true;
}

/* Whether a request of c for be waits already (then it holds the turn). */
static bool has_turn(const struct client *c, const struct backend *be)
{
    for (const struct req *q = c->wq_tail; q; q = q->wq_prev)
        if (q->be == be)
            return true;
    return false;
}

static void overloaded(struct worker *w, struct req *r)
{
    const struct backend_config *bcfg = becfg(r->be);
    req_fail(w, r, PROTO_OVERLOADED,
             "backend %s: all %u connections busy and %u requests queued (max_queue)", bcfg->name,
             bcfg->pool_size, bcfg->max_queue);
}

/* r (state REQ_NEW, not in the list) asks for a slot with a token of its own:
 * started now, queued as the holder, or failed overloaded. */
static enum pool_result acquire(struct worker *w, struct req *r, bool fair)
{
    /* QUEUED before acquiring: the token may be popped inside pool_acquire. */
    r->state = REQ_QUEUED;
    struct pool_slot *slot;
    enum pool_result pr = pool_acquire(&r->be->pool, handoff_token(w, r), &slot);
    switch (pr) {
    case POOL_GOT:
        bconn_start(w, r, slot);
        break;
    case POOL_QUEUED:
        if (fair)
            wq_append(r->c, r);
        break;
    case POOL_OVERLOADED:
        r->state = REQ_NEW; /* never queued */
        overloaded(w, r);
        break;
    }
    return pr;
}

void req_to_pool(struct worker *w, struct req *r)
{
    bool fair = becfg(r->be)->queue_order == CONFIG_QUEUE_FAIR;
    if (fair && has_turn(r->c, r->be)) {
        if (!pool_park(&r->be->pool)) {
            overloaded(w, r);
            return;
        }
        r->state = REQ_PARKED;
        wq_append(r->c, r);
        return;
    }
    acquire(w, r, fair);
}

/* The turn of (c, be) is free: the first parked request of be takes it.
 * One that gets a slot at once passes the turn on. */
static void pass_turn(struct worker *w, struct client *c, struct backend *be)
{
    /* Past the shutdown grace every waiting request is being failed
     * (request_fail_all): none may start on its way out. */
    if (w->grace_expired)
        return;
    for (;;) {
        struct req *n = c->wq_head;
        while (n && n->be != be)
            n = n->wq_next;
        if (!n)
            return;
        wq_unlink(c, n);
        pool_unpark(&be->pool);
        n->state = REQ_NEW;
        if (c->dead && !n->ticket) {
            /* Nobody can read its answer: the backend must not run it. */
            wstat_inc(&w->bstats[be->index].abandoned);
            req_done(w, n);
            continue;
        }
        /* If it must wait it goes back in at the tail: only the holder
         * then, the parked ones keep their arrival order. */
        if (acquire(w, n, true) == POOL_QUEUED)
            return;
    }
}

void fairq_took_turn(struct worker *w, struct req *r)
{
    if (!r->in_wq)
        return;
    struct client *c = r->c;
    wq_unlink(c, r);
    pass_turn(w, c, r->be);
}

void fairq_leave(struct worker *w, struct req *r)
{
    if (!r->in_wq)
        return;
    struct client *c = r->c;
    bool holder = r->state == REQ_QUEUED;
    wq_unlink(c, r);
    if (r->state == REQ_PARKED)
        pool_unpark(&r->be->pool);
    if (holder)
        pass_turn(w, c, r->be);
}
