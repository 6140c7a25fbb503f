/*
 * proto.c - client protocol (see proto.h for the contract and the policy).
 *
 * Parsing: one frame scanner pass over the line captures the six known
 * top-level members; each is then checked from its span, in a fixed order
 * (escaped keys, id, duplicates, type, params, backend, timeout_ms, cache)
 * so a request with several faults always gets the same message. The id is
 * checked first because every later error wants to echo it.
 *
 * Writing: each writer computes an upper bound, reserves once, then copies;
 * on failure it rewinds buf->len to where it started, so a response is
 * either fully appended or not at all. Untrusted text (backend messages) is
 * written by proto_write_json_string (proto_string.c).
 */
#include "proto.h"
#include "proto_priv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_REQUEST_BYTES 1048576u
#define DEFAULT_MAX_JSON_DEPTH    64u

static const char *const code_names[PROTO_CODE_COUNT] = {
    [PROTO_BAD_REQUEST] = "bad_request",
    [PROTO_INVALID_PARAMS] = "invalid_params",
    [PROTO_TOO_LARGE] = "too_large",
    [PROTO_RATE_LIMITED] = "rate_limited",
    [PROTO_OVERLOADED] = "overloaded",
    [PROTO_UNAVAILABLE] = "unavailable",
    [PROTO_TIMEOUT] = "timeout",
    [PROTO_BACKEND_ERROR] = "backend_error",
    [PROTO_BAD_BACKEND_RESPONSE] = "bad_backend_response",
    [PROTO_FORBIDDEN] = "forbidden",
    [PROTO_UNKNOWN_BACKEND] = "unknown_backend",
    [PROTO_SHUTTING_DOWN] = "shutting_down",
    [PROTO_INTERNAL] = "internal",
};

const char *proto_code_name(enum proto_code code)
{
    if ((unsigned)code >= PROTO_CODE_COUNT)
        return code_names[PROTO_INTERNAL];
    return code_names[code];
}

/* ---- request parsing -------------------------------------------------- */

/* Watch slots, in frame_watch() order. */
enum { K_ID, K_TYPE, K_PARAMS, K_BACKEND, K_TIMEOUT, K_CACHE, K_COUNT };

/* clang-format off */
static const struct {
    const char *name;
    size_t len;
} req_keys[K_COUNT] = {
    [K_ID]      = {"id", 2},
    [K_TYPE]    = {"type", 4},
    [K_PARAMS]  = {"params", 6},
    [K_BACKEND] = {"backend", 7},
    [K_TIMEOUT] = {"timeout_ms", 10},
    [K_CACHE]   = {"cache", 5},
};
/* clang-format on */

__attribute__((format(printf, 4, 5))) static int
req_fail(struct proto_error *err, enum proto_code code, int rc, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    err->code = code;
    err->msg_len = (size_t)n < sizeof(err->msg) ? (size_t)n : sizeof(err->msg) - 1;
    return rc;
}

static int syntax_fail(struct proto_error *err, int rc, const struct frame_scanner *sc,
                       uint32_t max_depth)
{
    unsigned long long at = (unsigned long long)frame_error_offset(sc);

    switch (rc) {
    case FRAME_E_TOP:
        return req_fail(err, PROTO_BAD_REQUEST, -EINVAL, "request must be a JSON object");
    case FRAME_E_DEPTH:
        return req_fail(err, PROTO_BAD_REQUEST, -EINVAL,
                        "request nesting exceeds max_json_depth (%u)", max_depth);
    case FRAME_E_EMPTY:
        return req_fail(err, PROTO_BAD_REQUEST, -EINVAL, "empty request");
    default:
        return req_fail(err, PROTO_BAD_REQUEST, -EINVAL,
                        "request is not valid JSON: %s at offset %llu", frame_strerror(rc), at);
    }
}

/* An integer id: JSON number text without fraction or exponent, in int64. */
static bool parse_int64(const char *p, size_t n, int64_t *out)
{
    bool neg = n > 0 && p[0] == '-';
    uint64_t v = 0;
    size_t i = neg;

    if (i == n || n - i > 19)
        return false; /* 19 digits cannot overflow the uint64_t accumulator */
    for (; i < n; i++) {
        unsigned d = (unsigned char)p[i] - '0';
        if (d > 9)
            return false; /* '.', 'e', 'E': not an integer */
        v = v * 10 + d;
    }
    if (v > (uint64_t)INT64_MAX + neg)
        return false;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

static bool valid_type(const char *p, size_t n)
{
    if (n == 0 || n > PROTO_TYPE_MAX || p[0] < 'a' || p[0] > 'z')
        return false;
    for (size_t i = 1; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

/* Bytes between a string member's quotes. */
static struct proto_span str_contents(const char *line, const struct frame_member *m)
{
    return (struct proto_span){line + m->start + 1, (size_t)(m->end - m->start - 2)};
}

static struct proto_span raw_span(const char *line, const struct frame_member *m)
{
    return (struct proto_span){line + m->start, (size_t)(m->end - m->start)};
}

static int check_id(const char *line, const struct frame_member *m, struct proto_request *out,
                    struct proto_error *err)
{
    if (m->duplicate)
        return req_fail(err, PROTO_BAD_REQUEST, -EINVAL, "duplicate key \"id\"");
    if (m->kind == FRAME_KIND_NONE)
        return req_fail(err, PROTO_BAD_REQUEST, -EINVAL, "\"id\" is required");
    out->id = raw_span(line, m);
    if (m->kind == FRAME_KIND_STRING && out->id.len - 2 <= PROTO_ID_MAX) {
        out->id_is_string = true;
        return 0;
    }
    if (m->kind == FRAME_KIND_NUMBER && parse_int64(out->id.ptr, out->id.len, &out->id_int))
        return 0;
    return req_fail(err, PROTO_BAD_REQUEST, -EINVAL,
                    "\"id\" must be a 64-bit integer or a string of at most %d bytes",
                    PROTO_ID_MAX);
}

/* The fields after id; err->id is already set so failures echo it. */
static int check_fields(const char *line, const struct frame_scanner *sc, struct proto_request *out,
                        struct proto_error *err)
{
    const struct frame_member *m = frame_member_at(sc, 0); /* slots K_* are consecutive */
    struct proto_span v;
    int64_t t;

    for (unsigned k = K_TYPE; k < K_COUNT; k++)
        if (m[k].duplicate)
            return req_fail(err, PROTO_BAD_REQUEST, -EINVAL, "duplicate key \"%s\"",
                            req_keys[k].name);

    if (m[K_TYPE].kind == FRAME_KIND_NONE)
        return req_fail(err, PROTO_BAD_REQUEST, -EINVAL, "\"type\" is required");
    if (m[K_TYPE].kind == FRAME_KIND_STRING)
        out->type = str_contents(line, &m[K_TYPE]);
    if (!out->type.ptr || !valid_type(out->type.ptr, out->type.len))
        return req_fail(err, PROTO_BAD_REQUEST, -EINVAL,
                        "\"type\" must be a string matching [a-z][a-z0-9_]{0,63}");

    if (m[K_PARAMS].kind != FRAME_KIND_NONE) {
        if (m[K_PARAMS].kind != FRAME_KIND_OBJECT)
            return req_fail(err, PROTO_BAD_REQUEST, -EINVAL, "\"params\" must be an object");
        out->params = raw_span(line, &m[K_PARAMS]);
        out->params_ascii = !m[K_PARAMS].non_ascii;
    }

    if (m[K_BACKEND].kind != FRAME_KIND_NONE) {
        if (m[K_BACKEND].kind == FRAME_KIND_STRING)
            v = str_contents(line, &m[K_BACKEND]);
        else
            v = (struct proto_span){NULL, 0};
        if (v.len == 0 || v.len > PROTO_BACKEND_MAX || memchr(v.ptr, '\\', v.len))
            return req_fail(err, PROTO_BAD_REQUEST, -EINVAL,
                            "\"backend\" must be a string of 1 to %d bytes without escapes",
                            PROTO_BACKEND_MAX);
        out->backend = v;
    }

    if (m[K_TIMEOUT].kind != FRAME_KIND_NONE) {
        v = raw_span(line, &m[K_TIMEOUT]);
        if (m[K_TIMEOUT].kind != FRAME_KIND_NUMBER || !parse_int64(v.ptr, v.len, &t) || t < 1 ||
            t > (int64_t)PROTO_TIMEOUT_MAX_MS)
            return req_fail(err, PROTO_BAD_REQUEST, -EINVAL,
                            "\"timeout_ms\" must be an integer from 1 to %u", PROTO_TIMEOUT_MAX_MS);
        out->timeout_ms = (uint32_t)t;
    }

    if (m[K_CACHE].kind != FRAME_KIND_NONE) {
        if (m[K_CACHE].kind != FRAME_KIND_TRUE && m[K_CACHE].kind != FRAME_KIND_FALSE)
            return req_fail(err, PROTO_BAD_REQUEST, -EINVAL, "\"cache\" must be true or false");
        out->cache = m[K_CACHE].kind == FRAME_KIND_TRUE;
    }
    return 0;
}

void proto_request_scanner_init(struct frame_scanner *sc, const struct proto_limits *lim,
                                uint32_t frame_flags)
{
    uint32_t max_depth = lim && lim->max_json_depth ? lim->max_json_depth : DEFAULT_MAX_JSON_DEPTH;

    frame_init(sc, max_depth, frame_flags);
    for (unsigned k = 0; k < K_COUNT; k++)
        frame_watch(sc, req_keys[k].name, req_keys[k].len); /* static keys: cannot fail */
}

static void request_defaults(struct proto_request *out, struct proto_error *err)
{
    memset(out, 0, sizeof(*out));
    out->params = (struct proto_span){"{}", 2};
    out->params_ascii = true;
    out->cache = true;
    err->id = (struct proto_span){NULL, 0};
}

/* The checks after the scan: escaped keys, id (or the fixed one), fields. */
static int request_check(const char *buf, const struct frame_scanner *sc, unsigned flags,
                         struct proto_request *out, struct proto_error *err)
{
    int rc;

    if (frame_key_escaped(sc))
        return req_fail(err, PROTO_BAD_REQUEST, -EINVAL,
                        "top-level keys must be written without escape sequences");
    if (flags & PROTO_REQ_NO_ID) {
        out->id = (struct proto_span){"0", 1}; /* the protocol has none: ours */
    } else {
        rc = check_id(buf, frame_member_at(sc, K_ID), out, err);
        if (rc < 0)
            return rc;
        err->id = out->id;
    }
    return check_fields(buf, sc, out, err);
}

int proto_request_from_scanner(const char *buf, size_t len, const struct frame_scanner *sc,
                               unsigned flags, struct proto_request *out, struct proto_error *err)
{
    (void)len;
    request_defaults(out, err);
    if (frame_top_kind(sc) != FRAME_KIND_OBJECT)
        return req_fail(err, PROTO_BAD_REQUEST, -EINVAL, "request must be a JSON object");
    return request_check(buf, sc, flags, out, err);
}

/* A request refused for its nesting is still an object whose members up to
 * the deep part were scanned: a complete, valid id among them is echoed. */
static void echo_id_seen(const char *line, const struct frame_scanner *sc, struct proto_error *err)
{
    const struct frame_member *m = frame_member_at(sc, K_ID);
    struct proto_request tmp;
    struct proto_error ignored;
    if (m->kind != FRAME_KIND_NONE && m->end > m->start && !m->duplicate &&
        check_id(line, m, &tmp, &ignored) == 0)
        err->id = tmp.id;
}

int proto_parse_request(const char *line, size_t len, const struct proto_limits *lim,
                        struct proto_request *out, struct proto_error *err)
{
    size_t max_bytes =
        lim && lim->max_request_bytes ? lim->max_request_bytes : DEFAULT_MAX_REQUEST_BYTES;
    uint32_t max_depth = lim && lim->max_json_depth ? lim->max_json_depth : DEFAULT_MAX_JSON_DEPTH;
    struct frame_scanner sc;
    size_t used, rest;
    int rc;

    request_defaults(out, err);
    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (len > max_bytes)
        return req_fail(err, PROTO_TOO_LARGE, -E2BIG,
                        "request exceeds max_request_bytes (%zu bytes)", max_bytes);

    proto_request_scanner_init(&sc, lim, FRAME_F_TOP_OBJECT);
    rc = frame_feed(&sc, line, len, &used);
    if (rc == FRAME_MORE)
        rc = frame_finish(&sc);
    if (rc < 0) {
        int fail = syntax_fail(err, rc, &sc, max_depth);
        if (rc == FRAME_E_DEPTH) /* well-formed up to the deep part: echo an id seen before it */
            echo_id_seen(line, &sc, err);
        return fail;
    }
    rest = len - used;
    if (frame_ws_span(line + used, rest) != rest)
        return req_fail(err, PROTO_BAD_REQUEST, -EINVAL,
                        "extra data after the JSON object at offset %zu",
                        used + frame_ws_span(line + used, rest));
    return request_check(line, &sc, 0, out, err);
}

const char *proto_request_syntax_error(int rc, const struct frame_scanner *sc,
                                       struct proto_error *err)
{
    syntax_fail(err, rc, sc, sc->max_depth);
    err->id = (struct proto_span){NULL, 0};
    return err->msg;
}

/* ---- output buffer ---------------------------------------------------- */

void proto_buf_free(struct proto_buf *b)
{
    if (!b)
        return;
    free(b->data);
    proto_buf_init(b);
}

int proto_buf_reserve_try(struct proto_buf *b, size_t extra)
{
    size_t need, cap;
    char *d;

    if (extra <= b->cap - b->len)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len)
        return -ENOMEM;
    need = b->len + extra;
    cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    d = realloc(b->data, cap);
    if (!d)
        return -ENOMEM;
    b->data = d;
    b->cap = cap;
    return 0;
}

int proto_buf_append_try(struct proto_buf *b, const void *data, size_t len)
{
    if (proto_buf_reserve_try(b, len) < 0)
        return -ENOMEM;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

static inline size_t id_len(const struct proto_span *id)
{
    return id && id->ptr ? id->len : 4;
}

static inline void put_id(struct proto_buf *b, const struct proto_span *id)
{
    if (id && id->ptr)
        put(b, id->ptr, id->len);
    else
        PUT_LIT(b, "null");
}

/* ---- response writers -------------------------------------------------- */

int proto_write_answer(struct proto_buf *b, const struct proto_span *id,
                       const struct proto_span *result, unsigned flags, size_t *result_off)
{
    static const char head[] = "{\"id\":";
    static const char mid[] = ",\"status\":\"success\",\"result\":";
    static const char tail[] = ",\"cached\":false,\"stale\":true}\n";
    size_t rlen = result && result->ptr ? result->len : 4;
    char *r;

    if (proto_buf_reserve_try(b, sizeof(head) + id_len(id) + sizeof(mid) + rlen + sizeof(tail)) < 0)
        return -ENOMEM;
    PUT_LIT(b, head);
    put_id(b, id);
    PUT_LIT(b, mid);
    if (result_off)
        *result_off = b->len;
    r = b->data + b->len;
    if (result && result->ptr) {
        put(b, result->ptr, rlen);
        /* a pretty-printing backend may send newlines; in valid JSON they
         * are whitespace, and a raw one would split the response line */
        for (char *q = r; !(flags & PROTO_ANSWER_CLEAN) &&
                          (q = memchr(q, '\n', (size_t)(b->data + b->len - q))) != NULL;)
            *q++ = ' ';
        for (char *q = r; !(flags & PROTO_ANSWER_CLEAN) &&
                          (q = memchr(q, '\r', (size_t)(b->data + b->len - q))) != NULL;)
            *q++ = ' ';
    } else {
        PUT_LIT(b, "null");
    }
    if (flags & PROTO_ANSWER_STALE)
        PUT_LIT(b, ",\"cached\":true,\"stale\":true}\n");
    else if (flags & PROTO_ANSWER_CACHED)
        PUT_LIT(b, ",\"cached\":true}\n");
    else
        PUT_LIT(b, ",\"cached\":false}\n");
    return 0;
}

int proto_write_success(struct proto_buf *b, const struct proto_span *id,
                        const struct proto_span *result, bool cached)
{
    return proto_write_answer(b, id, result, cached ? PROTO_ANSWER_CACHED : 0, NULL);
}

size_t proto_answer_id_prefix_len(const struct proto_span *id)
{
    return 6 + id_len(id); /* {"id": + the id as put_id writes it */
}

struct proto_span proto_backend_request_params(const struct proto_buf *b, size_t type_len,
                                               bool ndjson)
{
    /* {"type":"<type>","params":<params>}[\n] (proto_write_backend_request) */
    size_t start = 9 + type_len + 11, end = b->len - 1 - (ndjson ? 1 : 0);
    return (struct proto_span){b->data + start, end - start};
}

/* Decimal digits of v into buf (>= 20 bytes), returns the length. */
static size_t fmt_u64(char *buf, uint64_t v)
{
    char tmp[20];
    size_t n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    return n;
}

int proto_write_error_ex(struct proto_buf *b, const struct proto_span *id, enum proto_code code,
                         const char *msg, size_t msg_len, int64_t retry_after_ms, unsigned flags)
{
    static const char head[] = "{\"id\":";
    static const char mid[] = ",\"status\":\"error\",\"error\":{\"code\":\"";
    static const char msgkey[] = "\",\"message\":";
    static const char retry[] = ",\"retry_after_ms\":";
    const char *name = proto_code_name(code);
    size_t name_len = strlen(name), mark = b->len;
    char num[20];
    size_t num_len = 0;

    if (retry_after_ms >= 0)
        num_len = fmt_u64(num, (uint64_t)retry_after_ms);
    if (proto_buf_reserve_try(b, sizeof(head) + id_len(id) + sizeof(mid) + name_len +
                                     sizeof(msgkey)) < 0)
        return -ENOMEM;
    PUT_LIT(b, head);
    put_id(b, id);
    PUT_LIT(b, mid);
    put(b, name, name_len);
    PUT_LIT(b, msgkey);
    if (proto_write_json_string(b, msg ? msg : "", msg ? msg_len : 0, PROTO_MESSAGE_MAX, flags) <
            0 ||
        proto_buf_reserve_try(b, sizeof(retry) + num_len + 3) < 0) {
        b->len = mark;
        return -ENOMEM;
    }
    if (retry_after_ms >= 0) {
        PUT_LIT(b, retry);
        put(b, num, num_len);
    }
    PUT_LIT(b, "}}\n");
    return 0;
}

int proto_write_error(struct proto_buf *b, const struct proto_span *id, enum proto_code code,
                      const char *msg, size_t msg_len, int64_t retry_after_ms)
{
    return proto_write_error_ex(b, id, code, msg, msg_len, retry_after_ms, 0);
}

/* \uXXXX for one UTF-16 unit. */
static inline void put_u16_escape(struct proto_buf *b, uint32_t u)
{
    static const char hex[] = "0123456789abcdef";
    char *o = b->data + b->len;

    o[0] = '\\';
    o[1] = 'u';
    o[2] = hex[u >> 12 & 0xF];
    o[3] = hex[u >> 8 & 0xF];
    o[4] = hex[u >> 4 & 0xF];
    o[5] = hex[u & 0xF];
    b->len += 6;
}

/* Copy params with every non-ASCII sequence as \uXXXX. Room: a sequence of
 * n bytes becomes 6 (n = 2, 3) or 12 (n = 4) bytes, so 3 * len suffices. */
static int put_params_ascii(struct proto_buf *b, const uint8_t *p, const uint8_t *e)
{
    while (p < e) {
        const uint8_t *run = p;
        while (p < e && *p < 0x80)
            p++;
        put(b, (const char *)run, (size_t)(p - run));
        if (p == e)
            break;
        int32_t cp = proto_utf8_decode(&p, e);
        if (cp < 0)
            return -EINVAL;
        if (cp >= 0x10000) {
            uint32_t v = (uint32_t)cp - 0x10000;
            put_u16_escape(b, 0xD800 | v >> 10);
            put_u16_escape(b, 0xDC00 | (v & 0x3FF));
        } else {
            put_u16_escape(b, (uint32_t)cp);
        }
    }
    return 0;
}

int proto_write_backend_request(struct proto_buf *b, const struct proto_span *type,
                                const struct proto_span *params, bool params_ascii)
{
    static const char head[] = "{\"type\":\"";
    static const char mid[] = "\",\"params\":";
    size_t mark = b->len, room;

    if (params->len > (SIZE_MAX - 64 - type->len) / 3)
        return -ENOMEM;
    room = params_ascii ? params->len : 3 * params->len;
    if (proto_buf_reserve_try(b, sizeof(head) + type->len + sizeof(mid) + room + 1) < 0)
        return -ENOMEM;
    PUT_LIT(b, head);
    put(b, type->ptr, type->len);
    PUT_LIT(b, mid);
    size_t at = b->len;
    if (params_ascii) {
        put(b, params->ptr, params->len);
    } else if (put_params_ascii(b, (const uint8_t *)params->ptr,
                                (const uint8_t *)params->ptr + params->len) < 0) {
        b->len = mark;
        return -EINVAL;
    }
    /* A raw CR can only be whitespace here (the scanner refuses control
     * characters inside strings), yet a backend reading lines with
     * universal newlines would split the request at it: make it a space.
     * memchr: the common case costs one vectorised scan. */
    char *end = b->data + b->len;
    for (char *cr = memchr(b->data + at, '\r', b->len - at); cr;
         cr = memchr(cr + 1, '\r', (size_t)(end - cr - 1)))
        *cr = ' ';
    PUT_LIT(b, "}");
    return 0;
}

/* ---- backend replies -------------------------------------------------- */

void proto_reply_scanner_init(struct frame_scanner *s, uint32_t max_depth, uint32_t flags)
{
    frame_init(s, max_depth, flags);
    /* slot order = PROTO_REPLY_SLOT_* */
    frame_watch(s, "status", 6);
    frame_watch(s, "result", 6);
    frame_watch(s, "message", 7);
}

static int reply_bad(struct proto_reply *out, const char *reason)
{
    out->kind = PROTO_REPLY_BAD;
    out->reason = reason;
    return -EBADMSG;
}

static bool span_is(const char *p, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(p, lit, n) == 0;
}

static int classify_reply(const char *buf, size_t len, const struct frame_scanner *s,
                          struct proto_reply *out)
{
    const struct frame_member *st = frame_member_at(s, PROTO_REPLY_SLOT_STATUS);
    const struct frame_member *res = frame_member_at(s, PROTO_REPLY_SLOT_RESULT);
    const struct frame_member *msg = frame_member_at(s, PROTO_REPLY_SLOT_MESSAGE);

    if (frame_top_kind(s) != FRAME_KIND_OBJECT)
        return reply_bad(out, "backend response is not a JSON object");
    if (frame_offset(s) > len)
        return reply_bad(out, "backend response buffer is shorter than the scanned value");
    if (st->kind == FRAME_KIND_NONE)
        return reply_bad(out, "backend response has no \"status\"");
    if (st->duplicate)
        return reply_bad(out, "backend response has a duplicate \"status\"");
    if (st->kind != FRAME_KIND_STRING)
        return reply_bad(out, "backend response \"status\" is not a string");
    struct proto_span v = str_contents(buf, st);
    if (v.len == 0)
        return reply_bad(out, "backend response \"status\" is empty");

    if (span_is(v.ptr, v.len, "success")) {
        if (res->duplicate)
            return reply_bad(out, "backend response has a duplicate \"result\"");
        out->kind = PROTO_REPLY_SUCCESS;
        out->result =
            res->kind == FRAME_KIND_NONE ? (struct proto_span){"null", 4} : raw_span(buf, res);
        return 0;
    }
    if (span_is(v.ptr, v.len, "error")) {
        if (msg->duplicate)
            return reply_bad(out, "backend response has a duplicate \"message\"");
        out->kind = PROTO_REPLY_ERROR;
        if (msg->kind == FRAME_KIND_NONE) {
            static const char none[] = "backend reported an error without a message";
            out->message = (struct proto_span){none, sizeof(none) - 1};
        } else if (msg->kind == FRAME_KIND_STRING) {
            out->message = str_contents(buf, msg);
            out->message_flags = PROTO_STR_JSON;
        } else {
            out->message = raw_span(buf, msg); /* shown as JSON text */
        }
        return 0;
    }
    return reply_bad(out, "backend response \"status\" is neither \"success\" nor \"error\"");
}

int proto_parse_backend_reply(const char *buf, size_t len, const struct frame_scanner *s,
                              struct proto_reply *out)
{
    struct frame_scanner local;
    size_t used;
    int rc;

    memset(out, 0, sizeof(*out));
    if (!s) {
        proto_reply_scanner_init(&local, FRAME_MAX_DEPTH, 0);
        rc = frame_feed(&local, buf, len, &used);
        if (rc == FRAME_MORE)
            rc = frame_finish(&local);
        if (rc != FRAME_DONE)
            return reply_bad(out, "backend response is not valid JSON");
        if (frame_ws_span(buf + used, len - used) != len - used)
            return reply_bad(out, "extra data after the backend response");
        s = &local;
    } else if (!frame_is_done(s)) {
        return reply_bad(out, "backend response is not a complete JSON value");
    }
    return classify_reply(buf, len, s, out);
}
