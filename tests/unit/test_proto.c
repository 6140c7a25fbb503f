/*
 * test_proto.c - client request parsing, response writers, backend request
 * writing and backend reply classification.
 *
 * Every writer's output is parsed back with jansson: the protocol promise is
 * "one valid JSON line per request", whatever the (untrusted) input was.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

static bool span_eq(struct proto_span s, const char *text)
{
    return s.ptr && s.len == strlen(text) && memcmp(s.ptr, text, s.len) == 0;
}

static int parse(const char *line, struct proto_request *r, struct proto_error *e)
{
    return proto_parse_request(line, strlen(line), NULL, r, e);
}

/* ---- valid requests ---------------------------------------------------- */

Test(proto_request, minimal)
{
    struct proto_request r;
    struct proto_error e;
    cr_assert_eq(parse("{\"id\": 7, \"type\": \"get_scene_info\", \"params\": {}}", &r, &e), 0);
    cr_assert(span_eq(r.id, "7"));
    cr_assert_not(r.id_is_string);
    cr_assert_eq(r.id_int, 7);
    cr_assert(span_eq(r.type, "get_scene_info"));
    cr_assert(span_eq(r.params, "{}"));
    cr_assert(r.params_ascii);
    cr_assert_null(r.backend.ptr);
    cr_assert_eq(r.timeout_ms, 0);
    cr_assert(r.cache);

    cr_assert_eq(parse("{\"id\":1,\"type\":\"ping\"}", &r, &e), 0);
    cr_assert(span_eq(r.params, "{}"), "params default to {}");
    cr_assert(r.params_ascii);
}

Test(proto_request, every_field)
{
    static const char line[] =
        "{\"id\": \"a1\", \"type\": \"create_object\", \"params\": {\"type\": \"CUBE\", "
        "\"location\": [0, 0, 1]}, \"backend\": \"blender\", \"timeout_ms\": 5000, "
        "\"cache\": false}";
    struct proto_request r;
    struct proto_error e;
    cr_assert_eq(parse(line, &r, &e), 0);
    cr_assert(span_eq(r.id, "\"a1\""));
    cr_assert(r.id_is_string);
    cr_assert(span_eq(r.type, "create_object"));
    cr_assert(span_eq(r.params, "{\"type\": \"CUBE\", \"location\": [0, 0, 1]}"));
    cr_assert(r.params.ptr > line && r.params.ptr < line + sizeof(line), "span into the line");
    cr_assert(span_eq(r.backend, "blender"));
    cr_assert_eq(r.timeout_ms, 5000);
    cr_assert_not(r.cache);
}

Test(proto_request, shapes)
{
    struct proto_request r;
    struct proto_error e;

    /* trailing CR, surrounding whitespace, any key order, unknown keys */
    cr_assert_eq(parse("  {\"type\":\"ping\",\"future\":{\"x\":[1]},\"id\":-3} \r", &r, &e), 0);
    cr_assert_eq(r.id_int, -3);
    cr_assert_eq(parse("{\"id\":9223372036854775807,\"type\":\"a\"}", &r, &e), 0);
    cr_assert_eq(r.id_int, INT64_MAX);
    cr_assert_eq(parse("{\"id\":-9223372036854775808,\"type\":\"a\"}", &r, &e), 0);
    cr_assert_eq(r.id_int, INT64_MIN);
    cr_assert_eq(parse("{\"id\":0,\"type\":\"a\",\"cache\":true,\"timeout_ms\":1}", &r, &e), 0);
    cr_assert(r.cache);
    cr_assert_eq(r.timeout_ms, 1);
    cr_assert_eq(parse("{\"id\":1,\"type\":\"a\",\"timeout_ms\":600000}", &r, &e), 0);
    cr_assert_eq(r.timeout_ms, 600000);

    /* string ids are echoed raw, escapes and all; 128 bytes is the limit */
    cr_assert_eq(parse("{\"id\":\"q\\\"uote\\u00e9\",\"type\":\"a\"}", &r, &e), 0);
    cr_assert(span_eq(r.id, "\"q\\\"uote\\u00e9\""));
    cr_assert_eq(parse("{\"id\":\"\",\"type\":\"a\"}", &r, &e), 0);
    char line[512];
    char id[PROTO_ID_MAX + 1];
    memset(id, 'x', sizeof(id));
    snprintf(line, sizeof(line), "{\"id\":\"%.*s\",\"type\":\"a\"}", PROTO_ID_MAX, id);
    cr_assert_eq(parse(line, &r, &e), 0);
    cr_assert_eq(r.id.len, PROTO_ID_MAX + 2);

    /* type at its longest */
    char type[PROTO_TYPE_MAX + 1];
    memset(type, 'z', sizeof(type));
    type[0] = 'a';
    type[1] = '_';
    type[2] = '9';
    snprintf(line, sizeof(line), "{\"id\":1,\"type\":\"%.*s\"}", PROTO_TYPE_MAX, type);
    cr_assert_eq(parse(line, &r, &e), 0);
    cr_assert_eq(r.type.len, PROTO_TYPE_MAX);

    /* non-ASCII params are flagged for rewriting; ASCII ones are not */
    cr_assert_eq(parse("{\"id\":1,\"type\":\"a\",\"params\":{\"name\":\"Würfel\"}}", &r, &e), 0);
    cr_assert_not(r.params_ascii);
    cr_assert_eq(parse("{\"id\":\"é\",\"type\":\"a\",\"params\":{\"n\":\"\\u00fc\"}}", &r, &e), 0);
    cr_assert(r.params_ascii, "a non-ASCII id does not taint params");

    /* the line need not be NUL-terminated: parse a prefix of a buffer */
    static const char two[] = "{\"id\":1,\"type\":\"a\"}{\"id\":2,\"type\":\"b\"}";
    cr_assert_eq(proto_parse_request(two, 19, NULL, &r, &e), 0);
    cr_assert(span_eq(r.type, "a"));
}

/* ---- invalid requests -------------------------------------------------- */

struct bad {
    const char *line;
    const char *msg;    /* substring the message must contain */
    const char *echoed; /* id the error must echo, NULL for null */
};

static const struct bad bad_requests[] = {
    {"", "empty request", NULL},
    {"   \r", "empty request", NULL},
    {"hello", "not valid JSON", NULL},
    {"{\"id\":1,\"type\":\"a\"", "not valid JSON", NULL},
    {"{\"id\":1,\"type\":\"a\",}", "not valid JSON", NULL},
    {"{\"id\":1,\"type\":\"a\\x\"}", "invalid escape", NULL},
    {"{\"id\":1,\"type\":\"a\",\"params\":{\"s\":\"a\tb\"}}", "control character", NULL},
    {"{\"id\":1,\"type\":\"\xC0\xAF\"}", "UTF-8", NULL},
    {"[1]", "must be a JSON object", NULL},
    {"5", "must be a JSON object", NULL},
    {"\"x\"", "must be a JSON object", NULL},
    {"{\"id\":1,\"type\":\"a\"} x", "extra data", NULL},
    {"{\"id\":1,\"type\":\"a\"}{}", "extra data", NULL},
    {"{\"\\u0069d\":1,\"type\":\"a\"}", "escape", NULL},
    {"{\"type\":\"a\"}", "\"id\" is required", NULL},
    {"{\"id\":null,\"type\":\"a\"}", "\"id\" must be", NULL},
    {"{\"id\":1.5,\"type\":\"a\"}", "\"id\" must be", NULL},
    {"{\"id\":1e3,\"type\":\"a\"}", "\"id\" must be", NULL},
    {"{\"id\":1.0,\"type\":\"a\"}", "\"id\" must be", NULL},
    {"{\"id\":true,\"type\":\"a\"}", "\"id\" must be", NULL},
    {"{\"id\":{},\"type\":\"a\"}", "\"id\" must be", NULL},
    {"{\"id\":[1],\"type\":\"a\"}", "\"id\" must be", NULL},
    {"{\"id\":9223372036854775808,\"type\":\"a\"}", "\"id\" must be", NULL},
    {"{\"id\":-9223372036854775809,\"type\":\"a\"}", "\"id\" must be", NULL},
    {"{\"id\":99999999999999999999,\"type\":\"a\"}", "\"id\" must be", NULL},
    {"{\"id\":1,\"id\":2,\"type\":\"a\"}", "duplicate key \"id\"", NULL},
    {"{\"id\":1}", "\"type\" is required", "1"},
    {"{\"id\":1,\"type\":\"Get\"}", "\"type\" must be a string matching [a-z][a-z0-9_]{0,63}", "1"},
    /* valid_type checks the first byte and the rest in separate code, so
     * uppercase needs cases after the first byte too (middle and last). */
    {"{\"id\":1,\"type\":\"getScene\"}", "\"type\" must be", "1"},
    {"{\"id\":1,\"type\":\"aB\"}", "\"type\" must be", "1"},
    {"{\"id\":1,\"type\":\"a_B\"}", "\"type\" must be", "1"},
    {"{\"id\":1,\"type\":\"get_scene_infO\"}", "\"type\" must be", "1"},
    /* After the first byte: the ASCII neighbours of a-z, 0-9 and '_'. */
    {"{\"id\":1,\"type\":\"a`\"}", "\"type\" must be", "1"},
    {"{\"id\":1,\"type\":\"a{\"}", "\"type\" must be", "1"},
    {"{\"id\":1,\"type\":\"a/\"}", "\"type\" must be", "1"},
    {"{\"id\":1,\"type\":\"a:\"}", "\"type\" must be", "1"},
    {"{\"id\":1,\"type\":\"a^\"}", "\"type\" must be", "1"},
    {"{\"id\":1,\"type\":\"9a\"}", "\"type\" must be", "1"},
    {"{\"id\":1,\"type\":\"_a\"}", "\"type\" must be", "1"},
    {"{\"id\":1,\"type\":\"\"}", "\"type\" must be", "1"},
    {"{\"id\":1,\"type\":\"a-b\"}", "\"type\" must be", "1"},
    {"{\"id\":1,\"type\":\"a b\"}", "\"type\" must be", "1"},
    {"{\"id\":1,\"type\":\"\\u0061\"}", "\"type\" must be", "1"},
    {"{\"id\":1,\"type\":\"é\"}", "\"type\" must be", "1"},
    {"{\"id\":1,\"type\":7}", "\"type\" must be", "1"},
    {"{\"id\":1,\"type\":null}", "\"type\" must be", "1"},
    {"{\"id\":\"r\",\"type\":\"a\",\"type\":\"b\"}", "duplicate key \"type\"", "\"r\""},
    {"{\"id\":1,\"type\":\"a\",\"params\":[]}", "\"params\" must be an object", "1"},
    {"{\"id\":1,\"type\":\"a\",\"params\":null}", "\"params\" must be an object", "1"},
    {"{\"id\":1,\"type\":\"a\",\"params\":\"{}\"}", "\"params\" must be an object", "1"},
    {"{\"id\":1,\"type\":\"a\",\"params\":{},\"params\":{}}", "duplicate key \"params\"", "1"},
    {"{\"id\":1,\"type\":\"a\",\"backend\":\"\"}", "\"backend\" must be a string of 1 to 64", "1"},
    {"{\"id\":1,\"type\":\"a\",\"backend\":3}", "\"backend\" must be", "1"},
    {"{\"id\":1,\"type\":\"a\",\"backend\":\"b\\u006c\"}", "\"backend\" must be", "1"},
    {"{\"id\":1,\"type\":\"a\",\"backend\":"
     "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}",
     "\"backend\" must be", "1"},
    {"{\"id\":1,\"type\":\"a\",\"timeout_ms\":0}",
     "\"timeout_ms\" must be an integer from 1 to 600000", "1"},
    {"{\"id\":1,\"type\":\"a\",\"timeout_ms\":600001}", "\"timeout_ms\" must be", "1"},
    {"{\"id\":1,\"type\":\"a\",\"timeout_ms\":-5}", "\"timeout_ms\" must be", "1"},
    {"{\"id\":1,\"type\":\"a\",\"timeout_ms\":1.5}", "\"timeout_ms\" must be", "1"},
    {"{\"id\":1,\"type\":\"a\",\"timeout_ms\":1e3}", "\"timeout_ms\" must be", "1"},
    {"{\"id\":1,\"type\":\"a\",\"timeout_ms\":\"5000\"}", "\"timeout_ms\" must be", "1"},
    {"{\"id\":1,\"type\":\"a\",\"timeout_ms\":99999999999999999999999}", "\"timeout_ms\" must be",
     "1"},
    {"{\"id\":1,\"type\":\"a\",\"cache\":\"yes\"}", "\"cache\" must be true or false", "1"},
    {"{\"id\":1,\"type\":\"a\",\"cache\":0}", "\"cache\" must be true or false", "1"},
    {"{\"id\":1,\"type\":\"a\",\"cache\":null}", "\"cache\" must be true or false", "1"},
    {"{\"id\":1,\"type\":\"a\",\"cache\":true,\"cache\":false}", "duplicate key \"cache\"", "1"},
    {"{\"id\":\"abc\",\"type\":\"A\"}", "\"type\" must be", "\"abc\""},
};

Test(proto_request, each_invalid_field)
{
    for (size_t i = 0; i < sizeof(bad_requests) / sizeof(bad_requests[0]); i++) {
        const struct bad *b = &bad_requests[i];
        struct proto_request r;
        struct proto_error e;
        int rc = parse(b->line, &r, &e);
        cr_assert_eq(rc, -EINVAL, "[%zu] %s: rc %d", i, b->line, rc);
        cr_assert_eq(e.code, PROTO_BAD_REQUEST, "[%zu]", i);
        cr_assert_eq(strlen(e.msg), e.msg_len, "[%zu]", i);
        cr_assert(strstr(e.msg, b->msg), "[%zu] %s: message '%s' lacks '%s'", i, b->line, e.msg,
                  b->msg);
        if (b->echoed)
            cr_assert(span_eq(e.id, b->echoed), "[%zu] %s: id not recovered", i, b->line);
        else
            cr_assert_null(e.id.ptr, "[%zu] %s: id must be null", i, b->line);
    }
}

Test(proto_request, nul_and_offsets)
{
    static const char line[] = "{\"id\":1,\"type\":\"a\0\"}";
    struct proto_request r;
    struct proto_error e;
    cr_assert_eq(proto_parse_request(line, sizeof(line) - 1, NULL, &r, &e), -EINVAL);
    cr_assert(strstr(e.msg, "NUL byte at offset 17"), "%s", e.msg);
    cr_assert_null(e.id.ptr);
}

Test(proto_request, limits)
{
    struct proto_limits lim = {.max_request_bytes = 32, .max_json_depth = 3};
    struct proto_request r;
    struct proto_error e;
    const char *ok = "{\"id\":1,\"type\":\"a\",\"params\":{ }}"; /* 32 bytes */
    cr_assert_eq(strlen(ok), 32);
    cr_assert_eq(proto_parse_request(ok, strlen(ok), &lim, &r, &e), 0);
    const char *cr = "{\"id\":1,\"type\":\"a\",\"params\":{ }}\r"; /* CR not counted */
    cr_assert_eq(proto_parse_request(cr, strlen(cr), &lim, &r, &e), 0);
    const char *bigger = "{\"id\":1,\"type\":\"a\",\"params\":{  }}";
    cr_assert_eq(proto_parse_request(bigger, strlen(bigger), &lim, &r, &e), -E2BIG);
    cr_assert_eq(e.code, PROTO_TOO_LARGE);
    cr_assert(strstr(e.msg, "max_request_bytes"));
    cr_assert_null(e.id.ptr);

    /* depth: top-level object is 1; {"params":{"a":[...]}} is 3 */
    lim.max_request_bytes = 0; /* default */
    const char *d3 = "{\"id\":1,\"type\":\"a\",\"params\":{\"a\":[]}}";
    cr_assert_eq(proto_parse_request(d3, strlen(d3), &lim, &r, &e), 0);
    const char *d4 = "{\"id\":1,\"type\":\"a\",\"params\":{\"a\":[[]]}}";
    cr_assert_eq(proto_parse_request(d4, strlen(d4), &lim, &r, &e), -EINVAL);
    cr_assert(strstr(e.msg, "max_json_depth (3)"), "%s", e.msg);
    /* the id came before the deep part: echoed, so a client can match it */
    cr_assert_not_null(e.id.ptr);
    cr_assert_eq(e.id.len, 1);
    cr_assert_eq(e.id.ptr[0], '1');
    const char *late = "{\"type\":\"a\",\"params\":{\"a\":[[]]},\"id\":2}";
    cr_assert_eq(proto_parse_request(late, strlen(late), &lim, &r, &e), -EINVAL);
    cr_assert_null(e.id.ptr, "an id after the deep part was never reached");

    /* default depth 64 */
    char deep[256];
    size_t n = 0;
    n += (size_t)snprintf(deep, sizeof(deep), "{\"id\":1,\"type\":\"a\",\"params\":");
    /* params {...} is depth 2, then 63 arrays: the last opener is depth 65 */
    deep[n++] = '{';
    memcpy(deep + n, "\"k\":", 4);
    n += 4;
    for (int i = 0; i < 63; i++)
        deep[n++] = '[';
    cr_assert_eq(proto_parse_request(deep, n, NULL, &r, &e), -EINVAL);
    cr_assert(strstr(e.msg, "max_json_depth (64)"), "%s", e.msg);
}

/* ---- writers ----------------------------------------------------------- */

static json_t *load_line(const struct proto_buf *b)
{
    json_error_t je;
    cr_assert_gt(b->len, 0);
    cr_assert_eq(b->data[b->len - 1], '\n', "a response is one line");
    cr_assert_null(memchr(b->data, '\n', b->len - 1), "no newline inside the response");
    json_t *j = json_loadb(b->data, b->len, 0, &je);
    cr_assert_not_null(j, "invalid JSON (%s): %.*s", je.text, (int)b->len, b->data);
    return j;
}

Test(proto_write, success)
{
    struct proto_buf b;
    proto_buf_init(&b);
    struct proto_span id = {"\"a1\"", 4};
    static const char rtext[] = "{\"name\": \"Cube\",\n \"loc\": [0,\r\n1]}";
    struct proto_span res = {rtext, sizeof(rtext) - 1};
    cr_assert_eq(proto_write_success(&b, &id, &res, false), 0);
    json_t *j = load_line(&b);
    cr_assert_str_eq(json_string_value(json_object_get(j, "id")), "a1");
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "success");
    cr_assert(json_is_false(json_object_get(j, "cached")));
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "result"), "name")),
                     "Cube");
    json_decref(j);

    b.len = 0;
    cr_assert_eq(proto_write_success(&b, NULL, NULL, true), 0);
    static const char want[] =
        "{\"id\":null,\"status\":\"success\",\"result\":null,\"cached\":true}\n";
    cr_assert_eq(b.len, sizeof(want) - 1);
    cr_assert(memcmp(b.data, want, b.len) == 0, "%.*s", (int)b.len, b.data);

    /* appending: two responses in one buffer */
    struct proto_span id7 = {"7", 1}, r2 = {"[1,2]", 5};
    cr_assert_eq(proto_write_success(&b, &id7, &r2, false), 0);
    cr_assert(memcmp(b.data + sizeof(want) - 1,
                     "{\"id\":7,\"status\":\"success\",\"result\":[1,2],\"cached\":false}\n",
                     b.len - (sizeof(want) - 1)) == 0);
    proto_buf_free(&b);
    proto_buf_free(&b);
    proto_buf_free(NULL);
}

static json_t *error_obj(struct proto_buf *b, json_t **root)
{
    *root = load_line(b);
    cr_assert_str_eq(json_string_value(json_object_get(*root, "status")), "error");
    json_t *err = json_object_get(*root, "error");
    cr_assert(json_is_object(err));
    return err;
}

Test(proto_write, error_basic)
{
    struct proto_buf b;
    json_t *root, *err;
    proto_buf_init(&b);
    cr_assert_eq(
        proto_write_error(&b, NULL, PROTO_TIMEOUT, "backend blender did not answer", 30, -1), 0);
    static const char want[] = "{\"id\":null,\"status\":\"error\",\"error\":{\"code\":\"timeout\","
                               "\"message\":\"backend blender did not answer\"}}\n";
    cr_assert_eq(b.len, sizeof(want) - 1);
    cr_assert(memcmp(b.data, want, b.len) == 0, "%.*s", (int)b.len, b.data);

    b.len = 0;
    struct proto_span id = {"42", 2};
    cr_assert_eq(proto_write_error(&b, &id, PROTO_RATE_LIMITED, "slow down", 9, 250), 0);
    err = error_obj(&b, &root);
    cr_assert_eq(json_integer_value(json_object_get(root, "id")), 42);
    cr_assert_str_eq(json_string_value(json_object_get(err, "code")), "rate_limited");
    cr_assert_eq(json_integer_value(json_object_get(err, "retry_after_ms")), 250);
    json_decref(root);

    b.len = 0;
    cr_assert_eq(proto_write_error(&b, &id, PROTO_INTERNAL, NULL, 0, 0), 0);
    err = error_obj(&b, &root);
    cr_assert_str_eq(json_string_value(json_object_get(err, "message")), "");
    cr_assert_eq(json_integer_value(json_object_get(err, "retry_after_ms")), 0);
    json_decref(root);
    proto_buf_free(&b);
}

static const char *message_of(struct proto_buf *b, json_t **root)
{
    json_t *err = error_obj(b, root);
    const char *m = json_string_value(json_object_get(err, "message"));
    cr_assert_not_null(m);
    return m;
}

Test(proto_write, nasty_messages)
{
    struct proto_buf b;
    json_t *root;
    const char *m;
    proto_buf_init(&b);

    static const char quotes[] = "say \"hi\" \\ back\\slash \"}]";
    cr_assert_eq(proto_write_error(&b, NULL, PROTO_BACKEND_ERROR, quotes, sizeof(quotes) - 1, -1),
                 0);
    m = message_of(&b, &root);
    cr_assert_str_eq(m, quotes);
    json_decref(root);

    /* control characters, DEL, C1, line separators and bidi overrides */
    static const char ctrl[] = "a\nb\r\tc\x1b[31md\x7f"
                               "e\xC2\x85"
                               "f\xE2\x80\xA8g\xE2\x80\xAEh\0i";
    b.len = 0;
    cr_assert_eq(proto_write_error(&b, NULL, PROTO_BACKEND_ERROR, ctrl, sizeof(ctrl) - 1, -1), 0);
    m = message_of(&b, &root);
    cr_assert_str_eq(m, "a b  c [31md e f g h i");
    json_decref(root);

    /* invalid UTF-8: overlong, surrogate, truncated, stray continuation */
    static const char bad[] = "x\xC0\xAFy\xED\xA0\x80z\xE2\x82"
                              "w\x80v\xF8";
    b.len = 0;
    cr_assert_eq(proto_write_error(&b, NULL, PROTO_BACKEND_ERROR, bad, sizeof(bad) - 1, -1), 0);
    m = message_of(&b, &root); /* jansson validated the UTF-8 */
    cr_assert_str_eq(m, "x\xEF\xBF\xBD\xEF\xBF\xBDy\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDz"
                        "\xEF\xBF\xBD\xEF\xBF\xBDw\xEF\xBF\xBDv\xEF\xBF\xBD");
    json_decref(root);

    /* valid multi-byte text is kept */
    static const char intl[] = "Objekt »Würfel« nicht gefunden 😀";
    b.len = 0;
    cr_assert_eq(proto_write_error(&b, NULL, PROTO_BACKEND_ERROR, intl, sizeof(intl) - 1, -1), 0);
    m = message_of(&b, &root);
    cr_assert_str_eq(m, intl);
    json_decref(root);
    proto_buf_free(&b);
}

Test(proto_write, message_cut_at_500_on_char_boundary)
{
    struct proto_buf b;
    json_t *root;
    const char *m;
    proto_buf_init(&b);

    /* 10 KB of characters of every width, cut where none fits anymore */
    static const char *const chars[] = {"a", "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80", "\""};
    for (size_t c = 0; c < 5; c++) {
        for (size_t shift = 0; shift < 4; shift++) {
            char msg[10240];
            size_t n = 0;
            while (n < shift)
                msg[n++] = 'x';
            size_t w = strlen(chars[c]);
            while (n + w <= sizeof(msg)) {
                memcpy(msg + n, chars[c], w);
                n += w;
            }
            b.len = 0;
            cr_assert_eq(proto_write_error(&b, NULL, PROTO_BACKEND_ERROR, msg, n, -1), 0);
            m = message_of(&b, &root);
            size_t ml = strlen(m);
            cr_assert_leq(ml, PROTO_MESSAGE_MAX, "char %zu shift %zu: %zu bytes", c, shift, ml);
            cr_assert_gt(ml, PROTO_MESSAGE_MAX - 3 - 4, "cut too short: %zu", ml);
            cr_assert_str_eq(m + ml - 3, "...");
            /* the kept prefix is whole characters of the original */
            cr_assert(memcmp(m, msg, ml - 3) == 0);
            cr_assert_eq((ml - 3 - shift) % w, 0, "cut inside a character");
            json_decref(root);
        }
    }

    /* exactly 500 bytes: not cut; 501: cut to 497 + "..." */
    char msg[501];
    memset(msg, 'm', sizeof(msg));
    b.len = 0;
    cr_assert_eq(proto_write_error(&b, NULL, PROTO_BACKEND_ERROR, msg, 500, -1), 0);
    m = message_of(&b, &root);
    cr_assert_eq(strlen(m), 500);
    cr_assert_neq(m[499], '.');
    json_decref(root);
    b.len = 0;
    cr_assert_eq(proto_write_error(&b, NULL, PROTO_BACKEND_ERROR, msg, 501, -1), 0);
    m = message_of(&b, &root);
    cr_assert_eq(strlen(m), 500);
    cr_assert_str_eq(m + 497, "...");
    json_decref(root);

    /* small limits through the string writer */
    b.len = 0;
    cr_assert_eq(proto_write_json_string(&b, "abcdef", 6, 4, 0), 0);
    cr_assert(b.len == 6 && memcmp(b.data, "\"a...\"", 6) == 0, "%.*s", (int)b.len, b.data);
    b.len = 0;
    cr_assert_eq(proto_write_json_string(&b, "abcdef", 6, 2, 0), 0);
    cr_assert(b.len == 4 && memcmp(b.data, "\"ab\"", 4) == 0);
    b.len = 0;
    cr_assert_eq(proto_write_json_string(&b, "\xE2\x82\xAC\xE2\x82\xAC", 6, 5, 0), 0);
    cr_assert(b.len == 2 + 3 && memcmp(b.data, "\"...\"", 5) == 0, "%.*s", (int)b.len, b.data);
    proto_buf_free(&b);
}

Test(proto_write, backend_message_escapes_decoded)
{
    struct proto_buf b;
    json_t *root;
    proto_buf_init(&b);
    /* raw contents of a JSON string, as proto_parse_backend_reply hands it */
    static const char raw[] = "Object \\\"Cube\\\" not found\\nline2 \\u00e9\\ud83d\\ude00 "
                              "lone\\ud800 \\u0000 tab\\t slash\\/ bs\\\\";
    cr_assert_eq(proto_write_error_ex(&b, NULL, PROTO_BACKEND_ERROR, raw, sizeof(raw) - 1, -1,
                                      PROTO_STR_JSON),
                 0);
    const char *m = message_of(&b, &root);
    cr_assert_str_eq(m, "Object \"Cube\" not found line2 é😀 lone\xEF\xBF\xBD   tab  slash/ bs\\");
    json_decref(root);
    proto_buf_free(&b);
}

Test(proto_write, code_names)
{
    static const char *const want[] = {
        "bad_request",     "invalid_params", "too_large",     "rate_limited",         "overloaded",
        "unavailable",     "timeout",        "backend_error", "bad_backend_response", "forbidden",
        "unknown_backend", "shutting_down",  "internal"};
    cr_assert_eq(sizeof(want) / sizeof(want[0]), PROTO_CODE_COUNT);
    for (int c = 0; c < PROTO_CODE_COUNT; c++) {
        cr_assert_str_eq(proto_code_name((enum proto_code)c), want[c]);
        struct proto_buf b;
        json_t *root;
        proto_buf_init(&b);
        cr_assert_eq(proto_write_error(&b, NULL, (enum proto_code)c, "m", 1, -1), 0);
        json_t *err = error_obj(&b, &root);
        cr_assert_str_eq(json_string_value(json_object_get(err, "code")), want[c]);
        json_decref(root);
        proto_buf_free(&b);
    }
    cr_assert_str_eq(proto_code_name((enum proto_code)99), "internal");
    cr_assert_str_eq(proto_code_name((enum proto_code) - 1), "internal");
}

Test(proto_write, buffer_growth_and_overflow)
{
    struct proto_buf b;
    proto_buf_init(&b);
    for (int i = 0; i < 10000; i++)
        cr_assert_eq(proto_buf_append_try(&b, "0123456789", 10), 0);
    cr_assert_eq(b.len, 100000);
    cr_assert_geq(b.cap, b.len);
    size_t len = b.len;
    cr_assert_eq(proto_buf_reserve_try(&b, SIZE_MAX), -ENOMEM);
    cr_assert_eq(proto_buf_reserve_try(&b, SIZE_MAX / 2), -ENOMEM);
    cr_assert_eq(b.len, len, "a failed reserve leaves the buffer alone");
    cr_assert_eq(proto_buf_append_try(&b, NULL, 0), 0);
    proto_buf_free(&b);
    cr_assert_null(b.data);
}

/* ---- backend requests -------------------------------------------------- */

static void check_backend_request(const char *params, bool expect_ascii_input)
{
    struct proto_request r;
    struct proto_error e;
    struct proto_buf b;
    char line[1024];
    snprintf(line, sizeof(line), "{\"id\":1,\"type\":\"create_object\",\"params\":%s}", params);
    cr_assert_eq(parse(line, &r, &e), 0, "%s: %s", params, e.msg);
    cr_assert_eq(r.params_ascii, expect_ascii_input, "%s", params);

    proto_buf_init(&b);
    cr_assert_eq(proto_write_backend_request(&b, &r.type, &r.params, r.params_ascii), 0);
    for (size_t i = 0; i < b.len; i++)
        cr_assert_lt((unsigned char)b.data[i], 0x80, "non-ASCII byte at %zu: %.*s", i, (int)b.len,
                     b.data);
    json_error_t je;
    json_t *got = json_loadb(b.data, b.len, 0, &je);
    cr_assert_not_null(got, "%s: %.*s", je.text, (int)b.len, b.data);
    char want_text[1024];
    snprintf(want_text, sizeof(want_text), "{\"type\":\"create_object\",\"params\":%s}", params);
    json_t *want = json_loads(want_text, 0, &je);
    cr_assert_not_null(want);
    cr_assert(json_equal(got, want), "round trip differs: %.*s", (int)b.len, b.data);
    cr_assert_eq(json_object_size(got), 2);
    json_decref(got);
    json_decref(want);
    if (expect_ascii_input)
        cr_assert(b.len == strlen(want_text) && memcmp(b.data, want_text, b.len) == 0,
                  "ASCII params must be copied verbatim");
    proto_buf_free(&b);
}

Test(proto_backend, request_ascii_escaping)
{
    check_backend_request("{}", true);
    check_backend_request("{\"type\": \"CUBE\", \"location\": [0, 0, 1], \"s\": \"\\u00e9\\\"\"}",
                          true);
    check_backend_request("{\"name\":\"W\xC3\xBC"
                          "rfel\"}",
                          false);
    check_backend_request(
        "{\"n\":\"\xE2\x82\xAC 日本語\",\"k\":[\"\xC2\x80\xDF\xBF\xEF\xBF\xBF\"]}", false);
    check_backend_request("{\"emoji\":\"😀 \xF0\x90\x80\x80 \xF4\x8F\xBF\xBF\",\"\xC3\xA9\":1}",
                          false);
    /* a multi-byte character that would straddle an 8192-byte read */
    char big[1000];
    size_t n = (size_t)snprintf(big, sizeof(big), "{\"code\":\"");
    while (n < 900)
        big[n++] = 'x';
    memcpy(big + n, "\xF0\x9F\x98\x80\"}", 7);
    check_backend_request(big, false);

    /* exact surrogate pair for U+1F600 and lower-case hex */
    struct proto_buf b;
    proto_buf_init(&b);
    struct proto_span type = {"t", 1}, params = {"{\"e\":\"\xF0\x9F\x98\x80\xC3\xA9\"}", 14};
    cr_assert_eq(proto_write_backend_request(&b, &type, &params, false), 0);
    static const char want[] = "{\"type\":\"t\",\"params\":{\"e\":\"\\ud83d\\ude00\\u00e9\"}}";
    cr_assert(b.len == sizeof(want) - 1 && memcmp(b.data, want, b.len) == 0, "%.*s", (int)b.len,
              b.data);

    /* a raw CR between tokens (JSON whitespace, allowed in a client line)
     * must not reach a line-reading backend: it becomes a space, both ways */
    static const char *const crs[] = {"{\"x\":1,\r\"y\":2}", "{\"x\":\"\xC3\xA9\",\r\r\"y\":2}"};
    for (int i = 0; i < 2; i++) {
        b.len = 0;
        struct proto_span cp = {crs[i], strlen(crs[i])};
        cr_assert_eq(proto_write_backend_request(&b, &type, &cp, i == 0), 0);
        cr_assert_null(memchr(b.data, '\r', b.len), "%.*s", (int)b.len, b.data);
    }
    b.len = 0;
    cr_assert_eq(proto_write_backend_request(&b, &type, &params, false), 0);

    /* invalid UTF-8 (caller skipped validation): refused, nothing written */
    size_t before = b.len;
    struct proto_span badp = {"{\"e\":\"\xC0\xAF\"}", 10};
    cr_assert_eq(proto_write_backend_request(&b, &type, &badp, false), -EINVAL);
    cr_assert_eq(b.len, before);
    proto_buf_free(&b);
}

/* ---- backend replies --------------------------------------------------- */

/* Classify `text` both ways: rescanning (s == NULL) and from the scanner
 * that framed it byte by byte; both must agree. */
static int classify(const char *text, struct proto_reply *out)
{
    size_t len = strlen(text);
    struct proto_reply viascan;
    struct frame_scanner s;
    size_t used;
    int rc1 = proto_parse_backend_reply(text, len, NULL, out);

    proto_reply_scanner_init(&s, 64, FRAME_F_TOP_CONTAINER);
    int frc = FRAME_MORE;
    size_t i;
    for (i = 0; i < len && frc == FRAME_MORE; i++)
        frc = frame_feed(&s, text + i, 1, &used);
    /* the scanner path leaves extra bytes to the caller: compare only when
     * the text is exactly one value */
    if (frc == FRAME_DONE && frame_ws_span(text + i, len - i) == len - i) {
        int rc2 = proto_parse_backend_reply(text, len, &s, &viascan);
        cr_assert_eq(rc1, rc2, "%s", text);
        cr_assert_eq(out->kind, viascan.kind, "%s", text);
        cr_assert_eq(out->result.len, viascan.result.len, "%s", text);
        cr_assert_eq(out->message.len, viascan.message.len, "%s", text);
        cr_assert_eq(out->message_flags, viascan.message_flags, "%s", text);
    }
    return rc1;
}

Test(proto_backend, reply_classification)
{
    struct proto_reply r;

    cr_assert_eq(classify("{\"status\":\"success\",\"result\":{\"name\":\"Cube\"}}", &r), 0);
    cr_assert_eq(r.kind, PROTO_REPLY_SUCCESS);
    cr_assert(span_eq(r.result, "{\"name\":\"Cube\"}"));

    cr_assert_eq(classify(" {\"result\": [1, 2], \"status\": \"success\"} ", &r), 0);
    cr_assert(span_eq(r.result, "[1, 2]"));

    cr_assert_eq(classify("{\"status\":\"success\"}", &r), 0);
    cr_assert_eq(r.kind, PROTO_REPLY_SUCCESS);
    cr_assert(span_eq(r.result, "null"), "missing result is null");

    /* a handler's failure inside a success reply is passed on untouched */
    cr_assert_eq(classify("{\"status\":\"success\",\"result\":{\"error\":\"no such object\"}}", &r),
                 0);
    cr_assert_eq(r.kind, PROTO_REPLY_SUCCESS);
    cr_assert(span_eq(r.result, "{\"error\":\"no such object\"}"));

    cr_assert_eq(classify("{\"status\":\"error\",\"message\":\"Object \\\"X\\\" not found\"}", &r),
                 0);
    cr_assert_eq(r.kind, PROTO_REPLY_ERROR);
    cr_assert(span_eq(r.message, "Object \\\"X\\\" not found"));
    cr_assert_eq(r.message_flags, PROTO_STR_JSON);

    cr_assert_eq(classify("{\"status\":\"error\"}", &r), 0);
    cr_assert_eq(r.kind, PROTO_REPLY_ERROR);
    cr_assert_gt(r.message.len, 0);
    cr_assert_eq(r.message_flags, 0);

    cr_assert_eq(classify("{\"status\":\"error\",\"message\":{\"k\":1}}", &r), 0);
    cr_assert(span_eq(r.message, "{\"k\":1}"));
    cr_assert_eq(r.message_flags, 0);

    static const char *const bad[] = {
        "[]",
        "[{\"status\":\"success\"}]",
        "{}",
        "{\"status\":1}",
        "{\"status\":null}",
        "{\"status\":\"\"}",
        "{\"status\":\"ok\"}",
        "{\"status\":\"Success\"}",
        "{\"status\":\"success\",\"status\":\"error\"}",
        "{\"status\":\"success\",\"result\":1,\"result\":2}",
        "{\"status\":\"error\",\"message\":\"a\",\"message\":\"b\"}",
        "{\"nested\":{\"status\":\"success\"}}",
        "\"success\"",
        "null",
        "",
        "{\"status\":\"success\"",
        "{\"status\":\"success\"} {}",
        "not json",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&r, 0xAA, sizeof(r));
        cr_assert_eq(classify(bad[i], &r), -EBADMSG, "%s", bad[i]);
        cr_assert_eq(r.kind, PROTO_REPLY_BAD, "%s", bad[i]);
        cr_assert_not_null(r.reason);
        cr_assert_gt(strlen(r.reason), 10);
    }
}

Test(proto_backend, reply_with_unfinished_scanner)
{
    struct frame_scanner s;
    struct proto_reply r;
    size_t used;
    proto_reply_scanner_init(&s, 64, FRAME_F_TOP_CONTAINER);
    cr_assert_eq(frame_feed(&s, "{\"status\":", 10, &used), FRAME_MORE);
    cr_assert_eq(proto_parse_backend_reply("{\"status\":", 10, &s, &r), -EBADMSG);
    cr_assert_eq(r.kind, PROTO_REPLY_BAD);
}

/* The whole path: request line -> backend request; backend reply -> client
 * response line, with a non-ASCII error message from the backend. */
Test(proto_backend, end_to_end)
{
    struct proto_request req;
    struct proto_error e;
    struct proto_buf out;
    struct proto_reply rep;
    json_t *root;
    proto_buf_init(&out);

    cr_assert_eq(
        parse("{\"id\":\"r1\",\"type\":\"get_object_info\",\"params\":{\"name\":\"Würfel\"}}", &req,
              &e),
        0);
    cr_assert_eq(proto_write_backend_request(&out, &req.type, &req.params, req.params_ascii), 0);
    cr_assert_null(memchr(out.data, 0xC3, out.len));
    out.len = 0;

    static const char reply[] =
        "{\"status\": \"error\", \"message\": \"Object not found: W\\u00fcrfel "
        "\\\"x\\\"\"}";
    cr_assert_eq(proto_parse_backend_reply(reply, sizeof(reply) - 1, NULL, &rep), 0);
    cr_assert_eq(rep.kind, PROTO_REPLY_ERROR);
    cr_assert_eq(proto_write_error_ex(&out, &req.id, PROTO_BACKEND_ERROR, rep.message.ptr,
                                      rep.message.len, -1, rep.message_flags),
                 0);
    const char *m = message_of(&out, &root);
    cr_assert_str_eq(m, "Object not found: Würfel \"x\"");
    cr_assert_str_eq(json_string_value(json_object_get(root, "id")), "r1");
    json_decref(root);
    proto_buf_free(&out);
}
