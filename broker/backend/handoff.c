/*
 * handoff.c - a request that waits for a backend slot gets it.
 *
 * When every slot of a backend is held, a request queues a token in the
 * pool (pool.h): worker id | request index | generation, a value, never a
 * pointer. The worker that releases a slot pops the oldest token and hands
 * the slot over: to a request of its own through w->handoffs, run at the end
 * of the round (never from inside another request's completion), or to
 * another worker through IORING_OP_MSG_RING, whose completion carries the
 * token and the slot. A token whose request stopped waiting (timeout,
 * shutdown) is stale: its owner gives the slot straight back.
 *
 * The loop (worker.c) runs local handoffs and dirty clients to a fixpoint
 * before it blocks: parsing a client's lines can win a slot for one of our
 * own queued requests, and nothing else would wake us for it.
 */
#include <stdlib.h>

#include "worker.h"

/* A waiter token: worker id (8 bits) | request index (24 bits) | generation
 * (24 bits). A value, never a pointer: stale tokens are harmless. */
uint64_t handoff_token(const struct worker *w, const struct req *r)
{
    return ((uint64_t)(r->gen & 0xffffffu) << 32) | ((uint64_t)r->idx << 8) | w->id;
}

/* A slot arrived for `token` (ours). Start the request if it still waits;
 * a stale token (the request timed out meanwhile) gives the slot back. */
void handoff_receive(struct worker *w, uint64_t token, struct pool_slot *slot)
{
    struct req *r = req_at(w, (uint32_t)(token >> 8) & 0xffffffu);
    struct bconn *bc = slot->ctx;
    if (r && r->state == REQ_QUEUED && (r->gen & 0xffffffu) == (uint32_t)(token >> 32)) {
        /* A coalescing leader runs for its followers even when its own
         * client is gone (it is a read: running it changes nothing). */
        /* Its turn ends here: the client's next waiting request takes it
         * (fairq.c), before this one can end (bconn_start may fail it). */
        fairq_took_turn(w, r);
        if (!r->c->dead || r->ticket) {
            bconn_start(w, r, slot);
            return;
        }
        /* Its client is gone (reset, or a write to it failed): nobody can
         * read the answer, so the backend must not run the command (it may
         * change the scene) nor spend the connection on it. */
        wstat_inc(&w->bstats[r->be->index].abandoned);
        r->state = REQ_NEW; /* its wait ended with this handoff, not a cancel */
        req_done(w, r);
    } else {
        /* Its request stopped waiting (pool_cancel_wait) before the slot came. */
        pool_stale_returned(&bc->be->pool);
    }
    pool_release(&bc->be->pool, slot);
}

/* pool.h handoff callback: runs on the releasing thread (always a worker). */
void worker_pool_handoff(void *arg, uint64_t token, struct pool_slot *slot)
{
    struct broker *b = arg;
    struct worker *me = worker_self;
    uint32_t target = (uint32_t)(token & 0xffu);
    struct bconn *bc = slot->ctx;
    struct worker *t = target < b->nworkers ? b->workers[target] : NULL;
    if (me && target == me->id) {
        /* Same worker: no syscall, processed after this round's completions
         * (not here: we may be deep inside another request's completion). */
        if (me->nhandoffs == me->handoffs_cap) {
            uint32_t cap = me->handoffs_cap ? me->handoffs_cap * 2 : 64;
            struct handoff *h = realloc(me->handoffs, cap * sizeof *h);
            if (!h)
                goto post; /* out of memory: through our own ring instead */
            me->handoffs = h;
            me->handoffs_cap = cap;
        }
        me->handoffs[me->nhandoffs++] = (struct handoff){token, slot};
        return;
    }
    if (!me || !t || worker_exited(t)) {
        /* Not a worker thread, or the token's worker finished: stale. */
        pool_release(&bc->be->pool, slot);
        return;
    }
post:;
    struct io_uring_sqe *sqe = worker_sqe(me);
    /* MSG_RING: the target's CQE carries kind and token in user_data and the
     * slot (backend << 16 | index) in res. Only a failure posts a CQE here. */
    uint64_t data = (token << 8) | ((uint64_t)BROKER_MSG_HANDOFF << 3) | UD_MSG;
    io_uring_prep_msg_ring(sqe, t->ring_fd, (bc->be->index << 16) | slot->index, data, 0);
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)bc | UD_MSG_FAIL);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
}

void handoff_run_local(struct worker *w)
{
    /* Handoffs may queue more handoffs (a stale token releases the slot to
     * the next waiter): index loop, array may grow meanwhile. */
    for (uint32_t i = 0; i < w->nhandoffs; i++)
        handoff_receive(w, w->handoffs[i].token, w->handoffs[i].slot);
    w->nhandoffs = 0;
}
