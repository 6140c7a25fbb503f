/*
 * fuzz_frame.c - libFuzzer target: the incremental JSON scanner (frame.c)
 * and the backend-reply path built on it.
 *
 * Idea: a differential test against itself. frame.h promises that a value
 * split at any byte boundary across any number of frame_feed() calls scans
 * exactly as if it came in one piece. So the same bytes are scanned twice,
 * once whole and once cut where the input says, and everything a caller can
 * observe must be equal: each value's result (DONE or the error kind), where
 * it ended or failed (stream offset), its top-level kind, the non-ASCII and
 * escaped-key flags and every watched member's capture record.
 *
 * Input layout (so mutations move the cuts as well as the bytes):
 *   byte 0  mode: bits 0-1 top-level flags (FRAME_F_TOP_CONTAINER,
 *           FRAME_F_TOP_OBJECT), bit 2 ndjson stream, bit 3 watch the
 *           request keys instead of the reply keys, bits 4-7 max_depth
 *           (0-7: FRAME_MAX_DEPTH, 8-15: 0..7)
 *   byte 1  number of cuts (low 5 bits), then that many bytes: each a chunk
 *           length (0 feeds an empty chunk with buf NULL); the last chunk
 *           takes what is left
 *   rest    the stream
 * Stream: "json" mode is one value then only whitespace (bconn.c: extra
 * bytes doom the connection); "ndjson" mode is values separated by a '\n'
 * with only whitespace before it, the scanner reused with frame_reset()
 * between them, as a backend connection reuses its scanner.
 *
 * Also checked on each complete value (split run): member spans slice the
 * right bytes; proto_parse_backend_reply classifies the same with the
 * scanner's captures as with a fresh scan (s == NULL); the answers built
 * from a reply (success, cached replay, backend_error) are one line of
 * valid JSON with the message cut and sanitised. And once per input,
 * against a second reader: whatever jansson accepts as one JSON text, the
 * scanner accepts too (unless deeper than FRAME_MAX_DEPTH).
 */
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "fuzz_check.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_CUTS   31
#define MAX_VALUES 32
#define REC_EXTRA  100 /* not a FRAME_* code: non-whitespace where none may be */

struct rec {
    int rc;
    uint64_t at;     /* DONE: value end (relative); error: error offset; EXTRA: absolute */
    uint64_t base;   /* absolute offset of the scanner's stream offset 0 */
    uint64_t offset; /* frame_offset() when recorded */
    uint8_t top_kind;
    bool non_ascii, key_escaped;
    struct frame_member m[FRAME_MAX_KEYS];
};

struct plan {
    uint8_t flags;
    bool ndjson;
    bool request_keys;
    uint32_t max_depth;
    size_t ncuts;
    uint8_t cut[MAX_CUTS];
};

enum phase { PH_SCAN, PH_SEEK_NL, PH_TAIL, PH_STOP };

struct run {
    const char *data; /* the whole stream */
    const struct plan *pl;
    bool split; /* the split run does the per-value checks */
    struct frame_scanner s;
    enum phase ph;
    uint64_t base;
    struct rec rec[MAX_VALUES + 1];
    size_t nrec;
};

static const char *const req_keys[] = {"id", "type", "params", "backend", "timeout_ms", "cache"};

static void scanner_init(struct run *r)
{
    if (r->pl->request_keys) {
        frame_init(&r->s, r->pl->max_depth, r->pl->flags);
        for (size_t k = 0; k < sizeof(req_keys) / sizeof(req_keys[0]); k++)
            FUZZ_CHECK(frame_watch(&r->s, req_keys[k], strlen(req_keys[k])) == (int)k);
    } else {
        proto_reply_scanner_init(&r->s, r->pl->max_depth, r->pl->flags);
    }
}

static struct rec *record(struct run *r, int rc, uint64_t at)
{
    struct rec *x = &r->rec[r->nrec++];

    memset(x, 0, sizeof(*x));
    x->rc = rc;
    x->at = at;
    x->base = r->base;
    x->offset = frame_offset(&r->s);
    x->top_kind = (uint8_t)frame_top_kind(&r->s);
    x->non_ascii = frame_non_ascii(&r->s);
    x->key_escaped = frame_key_escaped(&r->s);
    for (unsigned k = 0; k < FRAME_MAX_KEYS; k++)
        x->m[k] = *frame_member_at(&r->s, k);
    if (r->nrec == MAX_VALUES)
        r->ph = PH_STOP;
    return x;
}

static bool has_high(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] >= 0x80)
            return true;
    return false;
}

/* A member's span slices bytes of its kind. */
static void check_member(const struct frame_member *m, const char *v, size_t vlen)
{
    static const char *const lit[] = {
        [FRAME_KIND_TRUE] = "true", [FRAME_KIND_FALSE] = "false", [FRAME_KIND_NULL] = "null"};
    size_t n;
    char a, z;

    if (m->kind == FRAME_KIND_NONE) {
        FUZZ_CHECK(!m->duplicate && m->start == 0 && m->end == 0);
        return;
    }
    FUZZ_CHECK(m->start < m->end && m->end <= vlen);
    n = (size_t)(m->end - m->start);
    a = v[m->start];
    z = v[m->end - 1];
    FUZZ_CHECK(m->non_ascii == has_high(v + m->start, n));
    switch (m->kind) {
    case FRAME_KIND_OBJECT:
        FUZZ_CHECK(a == '{' && z == '}' && n >= 2);
        break;
    case FRAME_KIND_ARRAY:
        FUZZ_CHECK(a == '[' && z == ']' && n >= 2);
        break;
    case FRAME_KIND_STRING:
        FUZZ_CHECK(a == '"' && z == '"' && n >= 2);
        break;
    case FRAME_KIND_NUMBER:
        FUZZ_CHECK((a == '-' || (a >= '0' && a <= '9')) && z >= '0' && z <= '9');
        break;
    case FRAME_KIND_TRUE:
    case FRAME_KIND_FALSE:
    case FRAME_KIND_NULL:
        FUZZ_CHECK(n == strlen(lit[m->kind]) && memcmp(v + m->start, lit[m->kind], n) == 0);
        break;
    default:
        FUZZ_CHECK(!"unknown member kind");
    }
}

static void check_success_answer(const struct proto_reply *rep)
{
    static const struct proto_span id = {"\"a1\"", 4};
    struct proto_buf b, c;
    size_t off = 0, off2 = 0;

    proto_buf_init(&b);
    proto_buf_init(&c);
    FUZZ_CHECK(proto_write_answer(&b, &id, &rep->result, 0, &off) == 0);
    fuzz_check_response_line(b.data, b.len);
    FUZZ_CHECK(off <= b.len && rep->result.len <= b.len - off);
    for (size_t i = 0; i < rep->result.len; i++) {
        char want = rep->result.ptr[i];
        FUZZ_CHECK(b.data[off + i] == (want == '\r' || want == '\n' ? ' ' : want));
    }
    /* The cache stores those client-ready bytes and replays them as CLEAN. */
    struct proto_span stored = {b.data + off, rep->result.len};
    FUZZ_CHECK(proto_write_answer(&c, &id, &stored,
                                  PROTO_ANSWER_CACHED | PROTO_ANSWER_STALE | PROTO_ANSWER_CLEAN,
                                  &off2) == 0);
    fuzz_check_response_line(c.data, c.len);
    FUZZ_CHECK(off2 == off && memcmp(c.data + off2, stored.ptr, stored.len) == 0);
    proto_buf_free(&b);
    proto_buf_free(&c);
}

static void check_error_answer(const struct proto_reply *rep)
{
    static const struct proto_span id = {"7", 1};
    struct proto_buf b;
    json_t *root, *msg;

    proto_buf_init(&b);
    FUZZ_CHECK(proto_write_error_ex(&b, &id, PROTO_BACKEND_ERROR, rep->message.ptr,
                                    rep->message.len, 5, rep->message_flags) == 0);
    fuzz_check_response_line(b.data, b.len);
    root = json_loadb(b.data, b.len, 0, NULL);
    FUZZ_CHECK(root != NULL); /* valid UTF-8, no lone surrogate escapes */
    msg = json_object_get(json_object_get(root, "error"), "message");
    FUZZ_CHECK(json_is_string(msg) && json_string_length(msg) <= PROTO_MESSAGE_MAX);
    for (const unsigned char *p = (const unsigned char *)json_string_value(msg); *p; p++)
        FUZZ_CHECK(*p >= 0x20 && *p != 0x7f);
    json_decref(root);
    proto_buf_free(&b);
}

/* The scanner just returned DONE on v[0..vlen): check what callers use. */
static void check_value(const struct run *r, const char *v, size_t vlen)
{
    struct proto_reply with, fresh;
    size_t i = frame_ws_span(v, vlen);
    uint8_t top = (uint8_t)frame_top_kind(&r->s);
    int rc1, rc2;

    FUZZ_CHECK(i < vlen && frame_offset(&r->s) == vlen);
    FUZZ_CHECK(top == (v[i] == '{'   ? FRAME_KIND_OBJECT
                       : v[i] == '[' ? FRAME_KIND_ARRAY
                       : v[i] == '"' ? FRAME_KIND_STRING
                       : v[i] == 't' ? FRAME_KIND_TRUE
                       : v[i] == 'f' ? FRAME_KIND_FALSE
                       : v[i] == 'n' ? FRAME_KIND_NULL
                                     : FRAME_KIND_NUMBER));
    if (r->pl->flags & FRAME_F_TOP_OBJECT)
        FUZZ_CHECK(top == FRAME_KIND_OBJECT);
    if (r->pl->flags & FRAME_F_TOP_CONTAINER)
        FUZZ_CHECK(top == FRAME_KIND_OBJECT || top == FRAME_KIND_ARRAY);
    FUZZ_CHECK(frame_non_ascii(&r->s) == has_high(v, vlen));
    for (unsigned k = 0; k < FRAME_MAX_KEYS; k++)
        check_member(frame_member_at(&r->s, k), v, vlen);
    if (r->pl->request_keys)
        return;

    rc1 = proto_parse_backend_reply(v, vlen, &r->s, &with);
    rc2 = proto_parse_backend_reply(v, vlen, NULL, &fresh);
    FUZZ_CHECK(rc1 == rc2 && with.kind == fresh.kind);
    FUZZ_CHECK(with.result.ptr == fresh.result.ptr && with.result.len == fresh.result.len);
    FUZZ_CHECK(with.message.ptr == fresh.message.ptr && with.message.len == fresh.message.len);
    FUZZ_CHECK(with.message_flags == fresh.message_flags);
    FUZZ_CHECK(!with.reason == !fresh.reason &&
               (!with.reason || !strcmp(with.reason, fresh.reason)));
    if (with.kind == PROTO_REPLY_SUCCESS)
        check_success_answer(&with);
    else if (with.kind == PROTO_REPLY_ERROR)
        check_error_answer(&with);
    else
        FUZZ_CHECK(rc1 == -EBADMSG && with.reason != NULL);
}

static void on_done(struct run *r, uint64_t abs_next)
{
    uint64_t vlen = abs_next - r->base;

    record(r, FRAME_DONE, vlen);
    if (r->split)
        check_value(r, r->data + r->base, (size_t)vlen);
    if (r->ph != PH_STOP)
        r->ph = r->pl->ndjson ? PH_SEEK_NL : PH_TAIL;
}

/* One chunk [abs, abs + len) of the stream. */
static void feed_chunk(struct run *r, uint64_t abs, size_t len)
{
    const char *p = r->data + abs;
    size_t pos = 0, used;
    int rc;

    do {
        if (r->ph == PH_SEEK_NL || r->ph == PH_TAIL) {
            for (; pos < len && r->ph != PH_SCAN; pos++) {
                char c = p[pos];
                if (c == '\n' && r->ph == PH_SEEK_NL) {
                    frame_reset(&r->s);
                    r->base = abs + pos + 1;
                    r->ph = PH_SCAN;
                } else if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
                    record(r, REC_EXTRA, abs + pos);
                    r->ph = PH_STOP;
                    return;
                }
            }
        }
        if (r->ph != PH_SCAN)
            return;
        used = SIZE_MAX;
        rc = frame_feed(&r->s, len ? p + pos : NULL, len - pos, &used);
        if (rc == FRAME_MORE) {
            FUZZ_CHECK(used == len - pos);
            return;
        }
        if (rc < 0) {
            record(r, rc, frame_error_offset(&r->s));
            FUZZ_CHECK(frame_feed(&r->s, p, 0, &used) == rc && used == 0); /* sticky */
            r->ph = PH_STOP;
            return;
        }
        FUZZ_CHECK(rc == FRAME_DONE && used <= len - pos);
        pos += used;
        on_done(r, abs + pos);
        if (r->split) { /* sticky: the rest of the chunk is not taken */
            FUZZ_CHECK(frame_feed(&r->s, p + pos, len - pos, &used) == FRAME_DONE && used == 0);
        }
    } while (pos < len && r->ph != PH_STOP);
}

static void finish(struct run *r, uint64_t n)
{
    int rc;

    if (r->ph != PH_SCAN)
        return;
    rc = frame_finish(&r->s);
    if (rc == FRAME_DONE)
        on_done(r, n); /* a top-level number ended by the end of input */
    else
        record(r, rc, rc == FRAME_E_EMPTY ? 0 : frame_error_offset(&r->s));
    if (rc == FRAME_E_TRUNC)
        FUZZ_CHECK(frame_error_offset(&r->s) == n - r->base);
}

static void scan(struct run *r, size_t n)
{
    uint64_t abs = 0;

    scanner_init(r);
    r->ph = PH_SCAN;
    r->base = 0;
    r->nrec = 0;
    if (r->split)
        for (size_t i = 0; i < r->pl->ncuts && r->ph != PH_STOP; i++) {
            size_t len = r->pl->cut[i] < n - abs ? r->pl->cut[i] : (size_t)(n - abs);
            feed_chunk(r, abs, len);
            abs += len;
        }
    if (r->ph != PH_STOP)
        feed_chunk(r, abs, (size_t)(n - abs));
    finish(r, n);
}

static void same_records(const struct run *a, const struct run *b)
{
    FUZZ_CHECK(a->nrec == b->nrec);
    for (size_t i = 0; i < a->nrec; i++) {
        const struct rec *x = &a->rec[i], *y = &b->rec[i];
        FUZZ_CHECK(x->rc == y->rc && x->at == y->at && x->base == y->base);
        FUZZ_CHECK(x->offset == y->offset && x->top_kind == y->top_kind);
        FUZZ_CHECK(x->non_ascii == y->non_ascii && x->key_escaped == y->key_escaped);
        for (unsigned k = 0; k < FRAME_MAX_KEYS; k++) {
            const struct frame_member *m = &x->m[k], *o = &y->m[k];
            FUZZ_CHECK(m->start == o->start && m->end == o->end && m->kind == o->kind);
            FUZZ_CHECK(m->non_ascii == o->non_ascii && m->duplicate == o->duplicate);
        }
    }
}

/* What jansson reads as one JSON text, the scanner reads too. */
static void check_jansson_accepts(const char *p, size_t n)
{
    struct frame_scanner s;
    json_t *root = json_loadb(p, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    size_t used = 0;
    int rc;

    if (!root)
        return;
    json_decref(root);
    if (memchr(p, '\0', n))
        return; /* json_loadb stops reading at a NUL byte; the scanner refuses it */
    frame_init(&s, FRAME_MAX_DEPTH, 0);
    rc = frame_feed(&s, p, n, &used);
    if (rc == FRAME_MORE)
        rc = frame_finish(&s);
    if (rc == FRAME_E_DEPTH)
        return; /* jansson nests to 2048 */
    FUZZ_CHECK(rc == FRAME_DONE);
    FUZZ_CHECK(frame_ws_span(p + used, n - used) == n - used);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct run whole, split; /* 3 KiB of records each: off the stack */
    struct plan pl;
    size_t hdr = 2;

    if (size < 2)
        return 0;
    memset(&pl, 0, sizeof(pl));
    pl.flags = data[0] & 3u;
    pl.ndjson = data[0] & 4u;
    pl.request_keys = data[0] & 8u;
    pl.max_depth = (data[0] >> 4) < 8 ? FRAME_MAX_DEPTH : (uint32_t)(data[0] >> 4) - 8;
    pl.ncuts = data[1] & MAX_CUTS;
    if (pl.ncuts > size - hdr)
        pl.ncuts = size - hdr;
    memcpy(pl.cut, data + hdr, pl.ncuts);
    hdr += pl.ncuts;

    whole = (struct run){.data = (const char *)data + hdr, .pl = &pl, .split = false};
    split = (struct run){.data = (const char *)data + hdr, .pl = &pl, .split = true};
    scan(&whole, size - hdr);
    scan(&split, size - hdr);
    same_records(&whole, &split);
    check_jansson_accepts((const char *)data + hdr, size - hdr);
    return 0;
}
