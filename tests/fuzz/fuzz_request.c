/*
 * fuzz_request.c - libFuzzer target: a client request line.
 *
 * Idea: the input is one line as client.c hands it over (cut at the first
 * '\n', which a line never holds). proto_parse_request must never crash,
 * read outside the line or allocate (ASan/UBSan), and whatever it returns
 * must keep proto.h's contract, checked here byte by byte:
 *   - success: every span lies inside the line (params may be the static
 *     "{}"); a string id keeps its quotes and is <= PROTO_ID_MAX bytes
 *     inside them, a number id is JSON integer text equal to id_int; type
 *     matches [a-z][a-z0-9_]{0,63}; params is one complete JSON object and
 *     params_ascii says truthfully whether it holds a byte >= 0x80; backend
 *     is 1..64 bytes without '\'; timeout_ms is 0 or 1..600000;
 *   - failure: -EINVAL (bad_request) or -E2BIG (too_large), a NUL-terminated
 *     message, and an id to echo only if it lies inside the line;
 *   - max_request_bytes: exactly the line's length changes nothing, one
 *     byte less is too_large;
 *   - jansson, a second reader: when it can read the line, it must see the
 *     same id, type, backend, timeout and cache (our scanner and jansson
 *     must not disagree on what a request asks for);
 *   - the writers that echo the pieces (error answer, success answer,
 *     backend request) produce one line of valid JSON; the backend request
 *     is pure ASCII and carries params verbatim when params_ascii.
 * Limits: default proto_limits (1 MiB, depth 64) as brokerd starts with;
 * libFuzzer's -max_len keeps inputs far smaller.
 */
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "fuzz_check.h"
#include "proto.h"
#include "validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * The validation stage (broker/path/validate.c, with screen.c for
 * execute_code) on every request that parsed, under each scripts.policy and
 * with a paths.allowed_roots list: it must never crash, an error message
 * must name a params path (or, for a script, say it was refused) and fit
 * its buffer, and a rewritten params text (a folded query) must itself be
 * one complete JSON object that validates again without a further rewrite.
 */
static void validation_hook(const struct proto_request *req)
{
    static char *roots_v[] = {"/srv/renders", "/tmp"};
    static const struct config_strlist roots = {roots_v, 2};
    static const enum config_scripts_policy pol[] = {
        CONFIG_SCRIPTS_DENY_DANGEROUS, CONFIG_SCRIPTS_ALLOW, CONFIG_SCRIPTS_DENY_ALL};
    struct proto_buf out;
    proto_buf_init(&out);
    for (size_t i = 0; i < sizeof pol / sizeof pol[0]; i++) {
        struct validate_ctx ctx = {pol[i], i == 0 ? &roots : NULL};
        char msg[VALIDATE_MSG_MAX];
        msg[0] = '\0';
        enum validate_result r = validate_params(req, &ctx, &out, msg, sizeof msg);
        FUZZ_CHECK(memchr(msg, '\0', sizeof msg) != NULL);
        if (r == VALIDATE_INVALID)
            FUZZ_CHECK(strncmp(msg, "params", 6) == 0);
        if (r == VALIDATE_FORBIDDEN)
            FUZZ_CHECK(strstr(msg, "execute_code") != NULL);
        if (r == VALIDATE_REWRITTEN) {
            struct frame_scanner sc;
            size_t used;
            frame_init(&sc, FRAME_MAX_DEPTH, FRAME_F_TOP_OBJECT);
            FUZZ_CHECK(frame_feed(&sc, out.data, out.len, &used) == FRAME_DONE);
            FUZZ_CHECK(used == out.len);
            struct proto_request again = *req;
            again.params = (struct proto_span){out.data, out.len};
            struct proto_buf out2;
            proto_buf_init(&out2);
            FUZZ_CHECK(validate_params(&again, &ctx, &out2, msg, sizeof msg) == VALIDATE_OK);
            proto_buf_free(&out2);
        }
    }
    proto_buf_free(&out);
}

/* JSON integer text (RFC 8259: -?(0|[1-9][0-9]*)) with its int64 value. */
static bool ref_int64(const char *p, size_t n, int64_t *out)
{
    bool neg = n > 0 && p[0] == '-';
    size_t i = neg;
    int64_t v = 0;

    if (i == n || (p[i] == '0' && n - i > 1))
        return false;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        if (__builtin_mul_overflow(v, 10, &v) || (neg ? __builtin_sub_overflow(v, p[i] - '0', &v)
                                                      : __builtin_add_overflow(v, p[i] - '0', &v)))
            return false;
    }
    *out = v;
    return true;
}

static bool is_type(const char *p, size_t n)
{
    if (n < 1 || n > 64 || p[0] < 'a' || p[0] > 'z')
        return false;
    for (size_t i = 1; i < n; i++)
        if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= '0' && p[i] <= '9') || p[i] == '_'))
            return false;
    return true;
}

static bool has_high_byte(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] >= 0x80)
            return true;
    return false;
}

/* A string span between quotes in the line. */
static void check_quoted(const struct proto_span *s, const char *line, size_t len)
{
    FUZZ_CHECK(s->ptr > line && fuzz_inside(s->ptr, s->len + 1, line, len));
    FUZZ_CHECK(s->ptr[-1] == '"' && s->ptr[s->len] == '"');
}

static void check_params(const struct proto_request *r, const char *line, size_t len)
{
    struct frame_scanner s;
    size_t used = 0;

    if (!fuzz_inside(r->params.ptr, r->params.len, line, len)) {
        FUZZ_CHECK(r->params.len == 2 && memcmp(r->params.ptr, "{}", 2) == 0);
        FUZZ_CHECK(r->params_ascii);
        return;
    }
    FUZZ_CHECK(r->params.len >= 2 && r->params.ptr[0] == '{');
    FUZZ_CHECK(r->params.ptr[r->params.len - 1] == '}');
    FUZZ_CHECK(r->params_ascii == !has_high_byte(r->params.ptr, r->params.len));
    frame_init(&s, FRAME_MAX_DEPTH, FRAME_F_TOP_OBJECT);
    FUZZ_CHECK(frame_feed(&s, r->params.ptr, r->params.len, &used) == FRAME_DONE);
    FUZZ_CHECK(used == r->params.len);
}

static void check_success(const struct proto_request *r, const char *line, size_t len)
{
    int64_t v;

    FUZZ_CHECK(fuzz_inside(r->id.ptr, r->id.len, line, len));
    if (r->id_is_string) {
        FUZZ_CHECK(r->id.len >= 2 && r->id.len - 2 <= PROTO_ID_MAX);
        FUZZ_CHECK(r->id.ptr[0] == '"' && r->id.ptr[r->id.len - 1] == '"');
    } else {
        FUZZ_CHECK(ref_int64(r->id.ptr, r->id.len, &v) && v == r->id_int);
    }
    check_quoted(&r->type, line, len);
    FUZZ_CHECK(is_type(r->type.ptr, r->type.len));
    check_params(r, line, len);
    if (r->backend.ptr) {
        check_quoted(&r->backend, line, len);
        FUZZ_CHECK(r->backend.len >= 1 && r->backend.len <= PROTO_BACKEND_MAX);
        FUZZ_CHECK(!memchr(r->backend.ptr, '\\', r->backend.len));
    } else {
        FUZZ_CHECK(r->backend.len == 0);
    }
    FUZZ_CHECK(r->timeout_ms <= PROTO_TIMEOUT_MAX_MS);
}

/* jansson's reading of the same line must agree where it can read it. */
static void check_with_jansson(const struct proto_request *r, const char *line, size_t len)
{
    json_t *root = json_loadb(line, len, JSON_ALLOW_NUL, NULL);
    json_t *v;

    if (!root)
        return; /* lone surrogates, huge numbers: jansson refuses, RFC 8259 does not */
    FUZZ_CHECK(json_is_object(root));
    v = json_object_get(root, "id");
    if (r->id_is_string) {
        FUZZ_CHECK(json_is_string(v));
        if (!memchr(r->id.ptr, '\\', r->id.len))
            FUZZ_CHECK(json_string_length(v) == r->id.len - 2 &&
                       memcmp(json_string_value(v), r->id.ptr + 1, r->id.len - 2) == 0);
    } else {
        FUZZ_CHECK(json_is_integer(v) && json_integer_value(v) == r->id_int);
    }
    v = json_object_get(root, "type");
    FUZZ_CHECK(json_is_string(v) && json_string_length(v) == r->type.len &&
               memcmp(json_string_value(v), r->type.ptr, r->type.len) == 0);
    v = json_object_get(root, "params");
    FUZZ_CHECK(v ? json_is_object(v) : r->params.ptr[0] == '{' && r->params.len == 2);
    v = json_object_get(root, "backend");
    FUZZ_CHECK(!v == !r->backend.ptr);
    if (v)
        FUZZ_CHECK(json_is_string(v) && json_string_length(v) == r->backend.len &&
                   memcmp(json_string_value(v), r->backend.ptr, r->backend.len) == 0);
    v = json_object_get(root, "timeout_ms");
    FUZZ_CHECK(v ? json_is_integer(v) && json_integer_value(v) == r->timeout_ms
                 : r->timeout_ms == 0);
    v = json_object_get(root, "cache");
    FUZZ_CHECK(v ? json_is_boolean(v) && json_is_true(v) == r->cache : r->cache);
    json_decref(root);
}

static void check_writers_ok(const struct proto_request *r)
{
    struct proto_buf b;
    struct proto_span p;

    proto_buf_init(&b);
    FUZZ_CHECK(proto_write_backend_request(&b, &r->type, &r->params, r->params_ascii) == 0);
    FUZZ_CHECK(!has_high_byte(b.data, b.len));
    p = proto_backend_request_params(&b, r->type.len, false);
    FUZZ_CHECK(fuzz_inside(p.ptr, p.len, b.data, b.len));
    if (r->params_ascii) { /* verbatim, but a raw CR (whitespace) becomes a space */
        FUZZ_CHECK(p.len == r->params.len);
        for (size_t k = 0; k < p.len; k++)
            FUZZ_CHECK(p.ptr[k] == r->params.ptr[k] || (r->params.ptr[k] == '\r' && p.ptr[k] == ' '));
    }
    /* One object on one line, for any line reader: no '\n' (the line had
     * none) and no '\r' (universal-newline readers split there). */
    FUZZ_CHECK(memchr(b.data, '\n', b.len) == NULL);
    FUZZ_CHECK(memchr(b.data, '\r', b.len) == NULL);
    FUZZ_CHECK(proto_buf_append_try(&b, "\n", 1) == 0);
    fuzz_check_response_line(b.data, b.len);

    b.len = 0; /* params stand in for a result: any valid JSON value */
    FUZZ_CHECK(proto_write_success(&b, &r->id, &r->params, false) == 0);
    fuzz_check_response_line(b.data, b.len);
    FUZZ_CHECK(proto_answer_id_prefix_len(&r->id) == 6 + r->id.len);
    FUZZ_CHECK(memcmp(b.data, "{\"id\":", 6) == 0 && memcmp(b.data + 6, r->id.ptr, r->id.len) == 0);
    proto_buf_free(&b);
}

static void check_failure(int rc, const struct proto_error *e, const char *line, size_t len)
{
    struct proto_buf b;

    FUZZ_CHECK(rc == -EINVAL || rc == -E2BIG);
    FUZZ_CHECK(e->code == (rc == -E2BIG ? PROTO_TOO_LARGE : PROTO_BAD_REQUEST));
    FUZZ_CHECK(e->msg_len < PROTO_ERRMSG_MAX && e->msg_len > 0);
    FUZZ_CHECK(e->msg[e->msg_len] == '\0' && strlen(e->msg) == e->msg_len);
    if (e->id.ptr)
        FUZZ_CHECK(fuzz_inside(e->id.ptr, e->id.len, line, len) && e->id.len > 0);
    proto_buf_init(&b);
    FUZZ_CHECK(proto_write_error(&b, &e->id, e->code, e->msg, e->msg_len, -1) == 0);
    fuzz_check_response_line(b.data, b.len);
    proto_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *line = (const char *)data;
    const char *nl = memchr(line, '\n', size);
    struct proto_request req, again;
    struct proto_error err, err2;
    struct proto_limits lim = {0, 0};
    size_t n;
    int rc;

    if (nl)
        size = (size_t)(nl - line); /* client.c cuts lines at '\n': a line has none */
    n = size > 0 && line[size - 1] == '\r' ? size - 1 : size;
    rc = proto_parse_request(line, size, NULL, &req, &err);

    if (rc == 0) {
        check_success(&req, line, n);
        check_with_jansson(&req, line, n);
        check_writers_ok(&req);
        validation_hook(&req);
    } else {
        check_failure(rc, &err, line, n);
    }

    /* max_request_bytes counts the line without its '\r'; 0 means default. */
    if (n >= 2 && n <= 1048576) {
        lim.max_request_bytes = n;
        FUZZ_CHECK(proto_parse_request(line, size, &lim, &again, &err2) == rc);
        lim.max_request_bytes = n - 1;
        FUZZ_CHECK(proto_parse_request(line, size, &lim, &again, &err2) == -E2BIG);
        FUZZ_CHECK(err2.code == PROTO_TOO_LARGE && err2.id.ptr == NULL);
    }
    return 0;
}
