/*
 * test_compat.c - the add-on protocol's two pure pieces: the answer
 * re-encoding (compat_encode reads what proto.c's writers write, so every
 * writer form goes through it here) and the two-step request parse the
 * compat framing uses (fed in pieces, checked from the scanner's captures).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <jansson.h>
#include <string.h>

#include "compat.h"
#include "frame.h"
#include "proto.h"

/* Encode what a writer appended to b and return it as a C string. */
static const char *encoded(struct proto_buf *b)
{
    cr_assert(b->len > 0 && b->data[b->len - 1] == '\n');
    size_t n = compat_encode(b->data, b->len);
    cr_assert(n <= b->len);
    cr_assert(proto_buf_reserve_try(b, 1) == 0);
    b->data[n] = '\0';
    b->len = n;
    return b->data;
}

static const struct proto_span ID0 = {"0", 1};

Test(compat_encode, success_all_flags)
{
    static const char *const results[] = {"{\"a\":[1,2,{\"b\":\"x\\\"}\"}]}", "null", "[]",
                                          "\"s\"", "{\"cached\":false}"};
    static const unsigned flags[] = {0, PROTO_ANSWER_CACHED,
                                     PROTO_ANSWER_CACHED | PROTO_ANSWER_STALE};
    for (size_t i = 0; i < sizeof results / sizeof *results; i++)
        for (size_t f = 0; f < 3; f++) {
            struct proto_buf b;
            proto_buf_init(&b);
            struct proto_span r = {results[i], strlen(results[i])};
            cr_assert(proto_write_answer(&b, &ID0, &r, flags[f], NULL) == 0);
            char want[256];
            snprintf(want, sizeof want, "{\"status\":\"success\",\"result\":%s}", results[i]);
            cr_expect_str_eq(encoded(&b), want);
            proto_buf_free(&b);
        }
}

Test(compat_encode, broker_errors_carry_the_code)
{
    struct proto_buf b;
    proto_buf_init(&b);
    const char *m = "backend blender: circuit open; try again in 812 ms";
    cr_assert(proto_write_error(&b, &ID0, PROTO_UNAVAILABLE, m, strlen(m), 812) == 0);
    cr_expect_str_eq(encoded(&b), "{\"status\":\"error\",\"message\":\"unavailable: backend "
                                  "blender: circuit open; try again in 812 ms\"}");
    b.len = 0;
    /* id null (a request refused before parsing), quotes and backslashes */
    m = "say \"hi\" \\ bye";
    cr_assert(proto_write_error(&b, NULL, PROTO_BAD_BACKEND_RESPONSE, m, strlen(m), -1) == 0);
    json_t *j = json_loads(encoded(&b), 0, NULL);
    cr_assert(j);
    cr_expect_str_eq(json_string_value(json_object_get(j, "message")),
                     "bad_backend_response: say \"hi\" \\ bye");
    cr_expect_eq(json_object_size(j), 2);
    json_decref(j);
    proto_buf_free(&b);
}

Test(compat_encode, backend_error_is_its_message)
{
    struct proto_buf b;
    proto_buf_init(&b);
    const char *m = "Object not found: \\u00e9";
    cr_assert(proto_write_error_ex(&b, &ID0, PROTO_BACKEND_ERROR, m, strlen(m), -1,
                                   PROTO_STR_JSON) == 0);
    json_t *j = json_loads(encoded(&b), 0, NULL);
    cr_assert(j);
    cr_expect_str_eq(json_string_value(json_object_get(j, "status")), "error");
    cr_expect_str_eq(json_string_value(json_object_get(j, "message")), "Object not found: \xc3\xa9");
    json_decref(j);
    proto_buf_free(&b);
}

Test(compat_encode, unknown_form_becomes_internal)
{
    char p[] = "{\"something\":\"else entirely, long enough\"}\n";
    size_t n = compat_encode(p, sizeof p - 1);
    cr_expect(n < sizeof p - 1);
    cr_expect(strncmp(p, "{\"status\":\"error\",\"message\":\"internal\"}", n) == 0);
}

/* The compat framing's parse: fed one byte at a time, checked without a
 * second scan, with no id. */
Test(compat_parse, fed_bytewise_no_id)
{
    const char *req = "  {\"id\": [1], \"type\": \"get_object_info\", \"params\": {\"name\": \"Cube\"}}";
    struct frame_scanner sc;
    proto_request_scanner_init(&sc, NULL, FRAME_F_TOP_CONTAINER);
    size_t n = strlen(req), used = 0;
    int rc = FRAME_MORE;
    for (size_t i = 0; i < n && rc == FRAME_MORE; i++)
        rc = frame_feed(&sc, req + i, 1, &used);
    cr_assert_eq(rc, FRAME_DONE);
    struct proto_request rq;
    struct proto_error pe;
    cr_assert_eq(proto_request_from_scanner(req, n, &sc, PROTO_REQ_NO_ID, &rq, &pe), 0, "%s",
                 pe.msg);
    cr_expect(rq.type.len == 15 && memcmp(rq.type.ptr, "get_object_info", 15) == 0);
    cr_expect(rq.params.len == 16 && memcmp(rq.params.ptr, "{\"name\": \"Cube\"}", 16) == 0);
    cr_expect(rq.id.len == 1 && rq.id.ptr[0] == '0');
    /* an array frames, and is refused as a request */
    frame_reset(&sc);
    cr_assert_eq(frame_feed(&sc, "[1]", 3, &used), FRAME_DONE);
    cr_expect_eq(proto_request_from_scanner("[1]", 3, &sc, PROTO_REQ_NO_ID, &rq, &pe), -EINVAL);
    cr_expect(strstr(pe.msg, "must be a JSON object"));
}
