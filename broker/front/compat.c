/*
 * compat.c - the Blender add-on's protocol for unmodified add-on clients
 * (an MCP server pointed at compat_listen instead of at Blender).
 *
 * The protocol: the client writes one JSON object {"type": T, "params": P}
 * with no delimiter and waits for the answer, one JSON object with no
 * delimiter either ({"status": "success", "result": ...} or {"status":
 * "error", "message": ...}); it has no id, so an answer is matched to its
 * request by order alone.
 *
 * Framing: one frame scanner per client (frame.h), watching the request
 * keys (proto_request_scanner_init), fed only the bytes that arrived since
 * the last feed: each byte is scanned once whatever the read boundaries,
 * and when it reports FRAME_DONE the fields are checked from its captures
 * (proto_request_from_scanner), not parsed again. The request then enters
 * request_line() like a native line, with an internal id ("0"), so it goes
 * the whole native way: admit, rate limit, cache, coalescing, breaker,
 * retries, pool, deadlines.
 *
 * One request at a time: the next request is taken only once the previous
 * one's answer is complete and has been handed to the send path (c->out is
 * empty again). Bytes that arrive early stay in c->in, unscanned, until
 * then. A client that writes requests without reading its answers is held
 * by that, and by the native back-pressure (max_client_output_bytes).
 *
 * Answers: every stage writes the native answer into c->out as for any
 * client, and only one can be there (the invariant above puts it at offset
 * 0). Once the request is done, compat_encode rewrites it in place: the
 * result's bytes are the backend's (cached ones too), moved once; an error
 * of ours becomes "<code>: <message>" (so "unavailable: backend blender ..."
 * tells a user what happened), a backend's own error its message alone.
 * Rewriting our own, fixed output needs no scan of the result: its head has
 * a known shape and its tail is one of three literals (test_compat.c checks
 * the writers and this reader together).
 *
 * Errors that lose the framing: bytes that are not JSON, a top-level value
 * that is not a container, or a request over max_request_bytes get one error
 * answer and the connection is closed once it is sent: with no delimiter
 * there is no point at which to resume. A complete JSON value that is not a
 * valid request (an array, no "type", a bad field) is answered bad_request
 * and the connection stays usable. A connection that ends inside a request
 * gets bad_request too (its writing side may be shut down only).
 *
 * Limits: the native optional keys (backend, timeout_ms, cache) are honoured
 * when present, an "id" is ignored; the error shape has no retry_after_ms
 * (the message says when, e.g. "try again in 812 ms").
 */
#include <errno.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "compat.h"
#include "log.h"
#include "worker.h"

struct compat {
    struct frame_scanner sc; /* the request at c->in[0], fed up to `fed` */
    size_t fed;              /* bytes of c->in fed to sc */
    bool waiting;            /* a request taken, its answer not complete yet */
    bool ending;             /* framing lost or the peer done: take no more */
};

int compat_attach(struct worker *w, struct client *c)
{
    struct compat *k = calloc(1, sizeof *k);
    if (!k)
        return -ENOMEM;
    /* Containers only: a bare number could never be known complete. */
    proto_request_scanner_init(&k->sc, &w->limits, FRAME_F_TOP_CONTAINER);
    c->compat = k;
    /* A TCP client waits for each answer: never hold one back (Nagle).
     * Fails harmlessly (EOPNOTSUPP) on a Unix socket. */
    int one = 1;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return 0;
}

void compat_detach(struct client *c)
{
    free(c->compat);
    c->compat = NULL;
}

int compat_parse(const struct client *c, const char *buf, size_t len, struct proto_request *rq,
                 struct proto_error *err)
{
    return proto_request_from_scanner(buf, len, &c->compat->sc, PROTO_REQ_NO_ID, rq, err);
}

static size_t msg_format(char *msg, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static size_t msg_format(char *msg, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t n = msg_vformat(msg, cap, fmt, ap);
    va_end(ap);
    return n;
}

/* Drop the first n bytes of c->in and start the scanner over. */
static void compat_consume(struct client *c, size_t n)
{
    struct compat *k = c->compat;
    if (n && n < c->in_len) /* c->in may be NULL while empty (client.c) */
        memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
    k->fed = 0;
    frame_reset(&k->sc);
}

/* Answer once more, then take nothing more from this client and close it
 * when the answer is out (c->eof: check_close closes an idle client). */
static void compat_end(struct worker *w, struct client *c, enum proto_code code, const char *msg,
                       size_t len)
{
    static struct log_ratelimit rl = LOG_RATELIMIT_INIT("compat_framing", 10, 20);
    LOG_RATELIMITED_BY(&rl, LOG_LEVEL_INFO, "compat client: closing after an unframable request",
                       LOG_STR("why", msg, len), LOG_INT("fd", c->fd));
    client_emit_error(w, c, NULL, code, msg, len, 0);
    c->out.len = compat_encode(c->out.data, c->out.len); /* alone in c->out (compat_process) */
    c->compat->ending = true;
    c->eof = true;
    c->in_len = 0;
}

/* Feed the scanner what arrived; take the request when it is complete.
 * true: a request was taken (answered or in flight). */
static bool compat_take(struct worker *w, struct client *c)
{
    struct compat *k = c->compat;
    size_t max = (size_t)bcfg(w->b)->max_request_bytes, used = 0;
    /* c->in is NULL while the client has nothing buffered (client.c) */
    int rc = frame_feed(&k->sc, c->in_len > k->fed ? c->in + k->fed : NULL, c->in_len - k->fed,
                        &used);
    k->fed += used;
    if (rc == FRAME_MORE && frame_top_kind(&k->sc) == FRAME_KIND_NONE) {
        compat_consume(c, k->fed); /* whitespace between requests: nothing kept */
        if (c->eof)
            k->ending = true;
        return false;
    }
    if (rc == FRAME_MORE) {
        char msg[PROTO_ERRMSG_MAX];
        if (k->fed > max)
            compat_end(w, c, PROTO_TOO_LARGE, msg,
                       msg_format(msg, sizeof msg,
                                  "request exceeds max_request_bytes (%zu bytes); closing the "
                                  "connection (the add-on protocol has no delimiter to resume at)",
                                  max));
        else if (c->eof)
            compat_end(w, c, PROTO_BAD_REQUEST, msg,
                       msg_format(msg, sizeof msg,
                                  "the connection ended inside a request (%zu bytes)", k->fed));
        return false;
    }
    if (rc < 0) {
        struct proto_error pe;
        proto_request_syntax_error(rc, &k->sc, &pe);
        compat_end(w, c, PROTO_BAD_REQUEST, pe.msg, pe.msg_len);
        return false;
    }
    size_t len = k->fed;
    request_line(w, c, c->in, len); /* req_parse comes back to compat_parse */
    compat_consume(c, len);
    return true;
}

void compat_process(struct worker *w, struct client *c)
{
    struct compat *k = c->compat;
    if (k->waiting) {
        if (c->inflight)
            return;
        k->waiting = false;
        c->out.len = compat_encode(c->out.data, c->out.len);
    }
    /* c->out empty: the previous answer went to the send path, so the next
     * one will be alone at offset 0. */
    while (!k->ending && !c->dead && c->out.len == 0 && !client_paused(w, c) &&
           compat_take(w, c)) {
        if (c->inflight) {
            k->waiting = true;
            return;
        }
        c->out.len = compat_encode(c->out.data, c->out.len);
    }
}

/* ---- answers --------------------------------------------------------- */

#define LIT(s) (s), (sizeof(s) - 1)

static bool starts(const char *p, const char *e, const char *lit, size_t n)
{
    return (size_t)(e - p) >= n && memcmp(p, lit, n) == 0;
}

static bool ends(const char *p, const char *e, const char *lit, size_t n)
{
    return (size_t)(e - p) >= n && memcmp(e - n, lit, n) == 0;
}

/* {"status":"success","result":R}: R moved once, never scanned. */
static size_t encode_success(char *p, const char *r, const char *e)
{
    static const char head[] = "{\"status\":\"success\",\"result\":";
    size_t tail;
    if (ends(r, e, LIT(",\"cached\":false}\n")))
        tail = sizeof ",\"cached\":false}\n" - 1;
    else if (ends(r, e, LIT(",\"cached\":true}\n")))
        tail = sizeof ",\"cached\":true}\n" - 1;
    else if (ends(r, e, LIT(",\"cached\":true,\"stale\":true}\n")))
        tail = sizeof ",\"cached\":true,\"stale\":true}\n" - 1;
    else
        return 0;
    size_t rlen = (size_t)(e - r) - tail;
    /* r is past the native head, which is longer than ours: no overlap. */
    memcpy(p, head, sizeof head - 1);
    memmove(p + sizeof head - 1, r, rlen);
    p[sizeof head - 1 + rlen] = '}';
    return sizeof head + rlen;
}

/* {"status":"error","message":"<code>: <message>"}; q is at the code. The
 * message is ours or sanitised (proto_write_json_string): only \" and \\
 * can precede a quote that is not its end. */
static size_t encode_error(char *p, const char *q, const char *e)
{
    static const char head[] = "{\"status\":\"error\",\"message\":\"";
    const char *code_end = memchr(q, '"', (size_t)(e - q));
    if (!code_end || !starts(code_end, e, LIT("\",\"message\":\"")))
        return 0;
    const char *m = code_end + sizeof "\",\"message\":\"" - 1, *me = m;
    while (me < e && *me != '"')
        me += *me == '\\' ? 2 : 1;
    if (me >= e)
        return 0;
    size_t clen = (size_t)(code_end - q), mlen = (size_t)(me - m), n = sizeof head - 1;
    bool own = clen == sizeof "backend_error" - 1 && memcmp(q, LIT("backend_error")) == 0;
    /* Every piece moves to a lower offset than it is read from (the native
     * head before each is longer), so each memmove reads intact bytes. */
    memcpy(p, head, n);
    if (!own) {
        memmove(p + n, q, clen);
        n += clen;
        memcpy(p + n, ": ", 2);
        n += 2;
    }
    memmove(p + n, m, mlen);
    n += mlen;
    memcpy(p + n, "\"}", 2);
    return n + 2;
}

size_t compat_encode(char *p, size_t len)
{
    static const char fallback[] = "{\"status\":\"error\",\"message\":\"internal\"}";
    const char *e = p + len, *s;
    size_t n = 0;
    /* {"id":<id>,"status":"...: the id is ours ("0") or null */
    if (len > 6 && memcmp(p, "{\"id\":", 6) == 0 &&
        (s = memmem(p + 6, len - 6 < 160 ? len - 6 : 160, LIT(",\"status\":\""))) != NULL) {
        s += sizeof ",\"status\":\"" - 1;
        if (starts(s, e, LIT("success\",\"result\":")))
            n = encode_success(p, s + sizeof "success\",\"result\":" - 1, e);
        else if (starts(s, e, LIT("error\",\"error\":{\"code\":\"")))
            n = encode_error(p, s + sizeof "error\",\"error\":{\"code\":\"" - 1, e);
    }
    if (n == 0 && len >= sizeof fallback - 1) {
        /* not an answer proto.c writes: cannot happen (test_compat.c) */
        memcpy(p, fallback, sizeof fallback - 1);
        n = sizeof fallback - 1;
    }
    return n ? n : len;
}
