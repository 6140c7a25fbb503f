/*
 * health.h - active health checks of a backend, and the words for why a
 * backend failed.
 *
 * Each backend's checks belong to one worker (backend index modulo the
 * worker count) and run on that worker's ring: an interval timer, then a
 * check on a connection of its own (socket, connect, send health.command,
 * read one framed reply) bounded by one deadline timer, then the socket is
 * closed - on every path, success or not - and the next interval starts.
 * The figures are fresh each time: nothing of a check outlives it but its
 * result. A reply with "status": "error" is a failure, not a sign of life.
 * After `fall` consecutive failures the backend is down and its breaker
 * trips (requests then fail fast with the reason); after `rise` consecutive
 * successes it is up and the breaker closes. A failure is logged (rate-
 * limited) and counted, never fatal. At shutdown every timer is removed and
 * a check in progress is cut short; the worker does not finish before
 * health_idle says so.
 *
 * Thread safety: the check itself is the owning worker's alone; the
 * published figures (struct health's atomics) may be read by any thread.
 */
#ifndef BROKER_HEALTH_H
#define BROKER_HEALTH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "proto.h"

/* Why a backend failed, in words a user can act on (backend_why_text). */
enum backend_why {
    BE_WHY_NONE = 0,
    BE_WHY_REFUSED,         /* connection refused, or no socket file */
    BE_WHY_CONNECT_TIMEOUT, /* connect did not finish within connect_timeout_ms */
    BE_WHY_NO_ANSWER,       /* connected, but no (complete) answer in time */
    BE_WHY_CLOSED,          /* closed the connection without answering */
    BE_WHY_BAD_REPLY,       /* answered something that is not an add-on reply */
    BE_WHY_ERROR_REPLY,     /* answered the health command with "status": "error" */
    BE_WHY_IO,              /* another socket error */
};

struct backend;
struct worker;

struct health {
    /* the owning worker's */
    int fd;
    bool timer_armed;    /* interval timer in flight */
    bool checking;       /* a check holds fd or an operation */
    bool finished;       /* the current check has its result */
    bool deadline_armed; /* the check's deadline timer in flight */
    bool stopping;
    uint32_t io_ops; /* connect/send/recv in flight */
    enum backend_why result;
    int local_errno;           /* the check failed on our side (EMFILE, ENOMEM): not counted */
    uint32_t ok_run, fail_run; /* consecutive results */
    uint64_t started_ns;
    size_t sent;
    uint64_t op_kind[5]; /* completions point here (see health.c) */
    struct __kernel_timespec ts_interval, ts_deadline;
    struct frame_scanner scan;
    struct proto_buf req, in;
    /* published: any thread */
    _Atomic uint32_t up;       /* 1 until `fall` consecutive failures */
    _Atomic uint32_t last_why; /* backend_reason of the last check */
    _Atomic uint64_t checks, failures, last_latency_us, last_check_ns;
};

/* Ready the state of be's checks (no I/O yet). 0 or -ENOMEM. */
int health_init(struct backend *be);
void health_destroy(struct backend *be);

/* Worker side: arm the first interval of every backend this worker owns;
 * stop them all (shutdown); whether none has anything in flight. */
void health_start(struct worker *w);
/* One backend (reload: added, re-added or removed); only on its owner. */
void health_start_one(struct worker *w, struct backend *be);
void health_stop_one(struct worker *w, struct backend *be);
void health_stop(struct worker *w);
bool health_idle(struct worker *w);
/* A completion of a health operation (UD_BACKEND, op kind >= HEALTH_OP_BASE). */
void health_on_cqe(struct worker *w, uint64_t ud, int res);
#define HEALTH_OP_BASE 8u

/* A failure as the breaker keeps it: the why, and the time waited in ms
 * (BE_WHY_NO_ANSWER) in the upper 24 bits. */
static inline uint32_t backend_reason(enum backend_why why, uint64_t ms)
{
    return (uint32_t)why | (uint32_t)(ms > 0xffffffu ? 0xffffffu : ms) << 8;
}

/* "refuses connections (is Blender running with the add-on server
 * started?)", ... written into buf (a backend_reason), cut to cap. */
size_t backend_why_text(const struct backend *be, uint32_t reason, char *buf, size_t cap);

#endif /* BROKER_HEALTH_H */
