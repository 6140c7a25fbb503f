/*
 * test_frame.c - the incremental JSON scanner.
 *
 * The core property: feeding a document in one piece, split at every byte
 * boundary, split at every pair of boundaries and byte by byte gives the
 * same outcome - same result code, same end or error offset, same member
 * captures. Each corpus entry also states its expected outcome, so the
 * one-piece result is checked too. A differential test against jansson
 * (single-byte mutations of the corpus) checks that the scanner never
 * refuses what a real parser accepts, and never accepts what it refuses
 * except for the documented leniencies (lone \u surrogates, \u0000 and
 * numbers out of double/int range, which jansson refuses and RFC 8259 does
 * not). A raw NUL is refused everywhere, stricter than jansson.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "frame.h"

#define F_CONT FRAME_F_TOP_CONTAINER
#define F_OBJ  FRAME_F_TOP_OBJECT
#define DEPTH  64

static const char *const keys[FRAME_MAX_KEYS] = {"id", "type",   "params", "a",
                                                 "b",  "status", "result", "message"};
enum { K_ID, K_TYPE, K_PARAMS, K_A, K_B, K_STATUS, K_RESULT, K_MESSAGE };

struct outcome {
    int rc;
    uint64_t at; /* DONE: bytes consumed in total; error: error offset */
    uint8_t top_kind;
    bool non_ascii, key_escaped;
    struct frame_member m[FRAME_MAX_KEYS];
};

static void setup(struct frame_scanner *s, uint32_t depth, uint32_t flags)
{
    frame_init(s, depth, flags);
    for (int i = 0; i < FRAME_MAX_KEYS; i++)
        cr_assert_eq(frame_watch(s, keys[i], strlen(keys[i])), i);
}

/* Feed [0,cuts[0]), [cuts[0],cuts[1]), ..., [cuts[n-1],len), then finish. */
static struct outcome scan_cuts(const char *doc, size_t len, uint32_t depth, uint32_t flags,
                                const size_t *cuts, size_t ncuts)
{
    struct frame_scanner s;
    struct outcome o;
    size_t pos = 0, used;
    uint64_t total = 0;
    int rc = FRAME_MORE;

    memset(&o, 0, sizeof(o));
    setup(&s, depth, flags);
    for (size_t i = 0; i <= ncuts && rc == FRAME_MORE; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        rc = frame_feed(&s, doc + pos, end - pos, &used);
        if (rc == FRAME_MORE)
            cr_assert_eq(used, end - pos);
        total += used;
        pos = end;
    }
    if (rc == FRAME_MORE)
        rc = frame_finish(&s);
    cr_assert_eq(frame_offset(&s), total);
    o.rc = rc;
    o.at = rc == FRAME_DONE ? total : frame_error_offset(&s);
    o.top_kind = (uint8_t)frame_top_kind(&s);
    o.non_ascii = frame_non_ascii(&s);
    o.key_escaped = frame_key_escaped(&s);
    if (rc == FRAME_DONE)
        for (int i = 0; i < FRAME_MAX_KEYS; i++)
            o.m[i] = *frame_member_at(&s, (unsigned)i);
    return o;
}

static struct outcome scan_whole(const char *doc, size_t len, uint32_t depth, uint32_t flags)
{
    return scan_cuts(doc, len, depth, flags, NULL, 0);
}

static bool same(const struct outcome *a, const struct outcome *b)
{
    if (a->rc != b->rc || a->at != b->at || a->top_kind != b->top_kind)
        return false;
    if (a->rc != FRAME_DONE)
        return true;
    if (a->non_ascii != b->non_ascii || a->key_escaped != b->key_escaped)
        return false;
    for (int i = 0; i < FRAME_MAX_KEYS; i++) {
        const struct frame_member *x = &a->m[i], *y = &b->m[i];
        if (x->kind != y->kind || x->start != y->start || x->end != y->end ||
            x->non_ascii != y->non_ascii || x->duplicate != y->duplicate)
            return false;
    }
    return true;
}

/* Every single split, every pair of splits (short documents) and byte by
 * byte must match the one-piece outcome. */
static void check_splits(const char *doc, size_t len, uint32_t depth, uint32_t flags,
                         const char *label)
{
    struct outcome whole = scan_whole(doc, len, depth, flags), o;
    size_t cuts[2];

    for (size_t k = 0; k <= len; k++) {
        cuts[0] = k;
        o = scan_cuts(doc, len, depth, flags, cuts, 1);
        cr_assert(same(&whole, &o), "%s: split at %zu differs (rc %d/%d at %llu/%llu)", label, k,
                  whole.rc, o.rc, (unsigned long long)whole.at, (unsigned long long)o.at);
    }
    if (len <= 200) {
        for (size_t i = 0; i <= len; i++)
            for (size_t j = i; j <= len; j++) {
                cuts[0] = i;
                cuts[1] = j;
                o = scan_cuts(doc, len, depth, flags, cuts, 2);
                cr_assert(same(&whole, &o), "%s: splits at %zu,%zu differ", label, i, j);
            }
    }
    size_t *bytes = malloc((len + 1) * sizeof(*bytes));
    cr_assert_not_null(bytes);
    for (size_t k = 0; k < len; k++)
        bytes[k] = k + 1;
    o = scan_cuts(doc, len, depth, flags, bytes, len ? len - 1 : 0);
    free(bytes);
    cr_assert(same(&whole, &o), "%s: byte-by-byte differs", label);
}

struct doc {
    const char *text;
    size_t len;
    uint32_t flags;
    int rc;       /* expected result */
    long long at; /* expected end (DONE) or error offset; -1: the whole length */
};

/* clang-format off */
#define D(s, flags, rc, at) {s, sizeof(s) - 1, flags, rc, at}
/* clang-format on */

static const struct doc valid_docs[] = {
    D("{}", F_CONT, FRAME_DONE, -1),
    D("[]", F_CONT, FRAME_DONE, -1),
    D("{\"a\":1}", F_OBJ, FRAME_DONE, -1),
    D(" \t\r\n{\"a\" : \"x\\\"}{][,:\" , \"b\":[1,2,{\"c\":\"d\"}]}", F_CONT, FRAME_DONE, -1),
    D("{\"s\":\"\\\\\"}", F_CONT, FRAME_DONE, -1),
    D("{\"s\":\"a\\\\\\\"b\\\\\\\\\"}", F_CONT, FRAME_DONE, -1),
    D("[\"\\u00e9\\uD83D\\uDE00\\u0000\\uFFFF\\uabcd\\uD800\"]", F_CONT, FRAME_DONE, -1),
    D("[0,-0,1,-1,0.5,-0.5,1e5,1E5,1e+5,1e-5,1.5e10,-1.25E-3,123456789012345678901234567890]",
      F_CONT, FRAME_DONE, -1),
    D("[true,false,null]", F_CONT, FRAME_DONE, -1),
    D("{\"t\":true,\"f\":false,\"n\":null}", F_CONT, FRAME_DONE, -1),
    D("{\"é\":\"café\"}", F_CONT, FRAME_DONE, -1),
    D("[\"€ 日本語\"]", F_CONT, FRAME_DONE, -1),
    D("[\"😀𝄞\"]", F_CONT, FRAME_DONE, -1),
    D("[\"\xC2\x80\xDF\xBF\xE0\xA0\x80\xED\x9F\xBF\xEE\x80\x80\xEF\xBF\xBF\xF0\x90\x80\x80\xF4\x8F"
      "\xBF\xBF\"]",
      F_CONT, FRAME_DONE, -1),
    D(" \t\n\r{ \t\n\r\"a\" \n:\r [ 1 , 2 ]\t,\"b\":{ }\n}\n", F_CONT, FRAME_DONE, 37),
    D("{\"a\":{\"a\":{\"a\":{}}}}", F_CONT, FRAME_DONE, -1),
    D("[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"]", F_CONT, FRAME_DONE, -1),
    D("{\"\\u0069d\":1}", F_CONT, FRAME_DONE, -1),
    D("{\"id\":7,\"type\":\"get_scene_info\",\"params\":{\"name\":\"Cube\",\"location\":[0,0,1]}}",
      F_OBJ, FRAME_DONE, -1),
    D("{\"code\":\"def f():\\n    return {'a': [1]}\"}", F_CONT, FRAME_DONE, -1),
    D("{\"\":\"\"}", F_CONT, FRAME_DONE, -1),
    D("[{\"a\":[{\"b\":[{\"c\":null}]}]}]", F_CONT, FRAME_DONE, -1),
    D("\"hello\"", 0, FRAME_DONE, -1),
    D("42", 0, FRAME_DONE, -1),
    D("-1.5e3 ", 0, FRAME_DONE, 6),
    D("true", 0, FRAME_DONE, -1),
    D("null", 0, FRAME_DONE, -1),
    D("-0", 0, FRAME_DONE, -1),
    D("12,", 0, FRAME_DONE, 2),
    D("[1.0e-999999,1E+2,0e0,-0E-0,0.0]", F_CONT, FRAME_DONE, -1),
    D("{\"status\":\"success\",\"result\":{\"error\":\"x\"}}", F_CONT, FRAME_DONE, -1),
    D("{\"a\":1,\"a\":2}", F_CONT, FRAME_DONE, -1),
    D("{\"x\":{\"a\":1},\"a\":[2]}", F_CONT, FRAME_DONE, -1),
    D("{\"ab\":1,\"a\":2,\"aa\":3,\"\":4,\"b\\n\":5}", F_CONT, FRAME_DONE, -1),
    D("{\"a\":\"0123456789abcdef0123456789\\\"abcdef\\\\\\\\xyz0123456789abcdef\",\"b\":"
      "\"\xC3\xBC"
      "0123456789abcdef0123456789\"}",
      F_CONT, FRAME_DONE, -1),
    D("{\"a\":{\"k\":\"ü\"},\"b\":\"plain\"}", F_CONT, FRAME_DONE, -1),
    D("{\"a\":1}{\"b\":2}", F_CONT, FRAME_DONE, 7),
    D("{\n  \"status\": \"success\",\n  \"result\": {\n    \"name\": \"Cube\",\n    "
      "\"location\": [0.0, 0.0, 1.0]\n  }\n}\n",
      F_CONT, FRAME_DONE, 96),
    D("[1]]", F_CONT, FRAME_DONE, 3),
    D("[\"\x7f\"]", F_CONT, FRAME_DONE, -1),
    D("{\"a\":1}}", F_OBJ, FRAME_DONE, 7),
    D("{\"status\":\"error\",\"message\":\"Object \\\"Cube\\\" not found\",\"result\":null}",
      F_CONT, FRAME_DONE, -1),
    D("{\"a\":12}", F_CONT, FRAME_DONE, -1),
    D("{\"a\":-0.5e-7 }", F_CONT, FRAME_DONE, -1),
};

static const struct doc invalid_docs[] = {
    D("{\"a\":\"\\x\"}", F_CONT, FRAME_E_ESCAPE, 7),
    D("[\"\\u12G4\"]", F_CONT, FRAME_E_ESCAPE, 6),
    D("[\"\\u12\"]", F_CONT, FRAME_E_ESCAPE, 6),
    D("[\"\\'\"]", F_CONT, FRAME_E_ESCAPE, 3),
    D("[\"\\U0041\"]", F_CONT, FRAME_E_ESCAPE, 3),
    D("[\"\xC0\x80\"]", F_CONT, FRAME_E_UTF8, 2),
    D("[\"\xC1\xBF\"]", F_CONT, FRAME_E_UTF8, 2),
    D("[\"\xE0\x80\x80\"]", F_CONT, FRAME_E_UTF8, 3),
    D("[\"\xE0\x9F\xBF\"]", F_CONT, FRAME_E_UTF8, 3),
    D("[\"\xED\xA0\x80\"]", F_CONT, FRAME_E_UTF8, 3),
    D("[\"\xED\xBF\xBF\"]", F_CONT, FRAME_E_UTF8, 3),
    D("[\"\xF0\x8F\xBF\xBF\"]", F_CONT, FRAME_E_UTF8, 3),
    D("[\"\xF4\x90\x80\x80\"]", F_CONT, FRAME_E_UTF8, 3),
    D("[\"\xF5\x80\x80\x80\"]", F_CONT, FRAME_E_UTF8, 2),
    D("[\"\xFF\"]", F_CONT, FRAME_E_UTF8, 2),
    D("[\"\xC3\"]", F_CONT, FRAME_E_UTF8, 3),
    D("[\"\xF0\x9F\x98\"]", F_CONT, FRAME_E_UTF8, 5),
    D("[\"\xE2\x82\"]", F_CONT, FRAME_E_UTF8, 4),
    D("[\"\x80\"]", F_CONT, FRAME_E_UTF8, 2),
    D("[\"\xC3\xA9\xA9\"]", F_CONT, FRAME_E_UTF8, 4),
    D("[\xC3\xA9]", F_CONT, FRAME_E_SYNTAX, 1),
    D("[\"a\x01\"]", F_CONT, FRAME_E_CTRL, 3),
    D("[\"a\tb\"]", F_CONT, FRAME_E_CTRL, 3),
    D("[\"a\nb\"]", F_CONT, FRAME_E_CTRL, 3),
    D("[\"a\x1f\"]", F_CONT, FRAME_E_CTRL, 3),
    D("[\"a\0b\"]", F_CONT, FRAME_E_NUL, 3),
    D("[1,\0 2]", F_CONT, FRAME_E_NUL, 3),
    D("\0", F_CONT, FRAME_E_NUL, 0),
    D("[\"\\\0\"]", F_CONT, FRAME_E_NUL, 3),
    D("[1\0]", F_CONT, FRAME_E_NUL, 2),
    D("[1,]", F_CONT, FRAME_E_SYNTAX, 3),
    D("{\"a\":1,}", F_CONT, FRAME_E_SYNTAX, 7),
    D("[01]", F_CONT, FRAME_E_SYNTAX, 2),
    D("[-01]", F_CONT, FRAME_E_SYNTAX, 3),
    D("00", 0, FRAME_E_SYNTAX, 1),
    D("{\"a\" 1}", F_CONT, FRAME_E_SYNTAX, 5),
    D("hello", F_CONT, FRAME_E_SYNTAX, 0),
    D("[tru]", F_CONT, FRAME_E_SYNTAX, 4),
    D("[nul1]", F_CONT, FRAME_E_SYNTAX, 4),
    D("[TRUE]", F_CONT, FRAME_E_SYNTAX, 1),
    D("[1.]", F_CONT, FRAME_E_SYNTAX, 3),
    D("[1e]", F_CONT, FRAME_E_SYNTAX, 3),
    D("[1.5e]", F_CONT, FRAME_E_SYNTAX, 5),
    D("[.5]", F_CONT, FRAME_E_SYNTAX, 1),
    D("[+1]", F_CONT, FRAME_E_SYNTAX, 1),
    D("[-]", F_CONT, FRAME_E_SYNTAX, 2),
    D("[1e+]", F_CONT, FRAME_E_SYNTAX, 4),
    D("[}", F_CONT, FRAME_E_SYNTAX, 1),
    D("{]", F_CONT, FRAME_E_SYNTAX, 1),
    D("{\"a\":1]", F_CONT, FRAME_E_SYNTAX, 6),
    D("[{\"a\":1]}", F_CONT, FRAME_E_SYNTAX, 7),
    D("{a:1}", F_CONT, FRAME_E_SYNTAX, 1),
    D("{\"a\":1 \"b\":2}", F_CONT, FRAME_E_SYNTAX, 7),
    D("{\"a\":1,\"b\"}", F_CONT, FRAME_E_SYNTAX, 10),
    D("{\"a\":-}", F_CONT, FRAME_E_SYNTAX, 6),
    D("[1 2]", F_CONT, FRAME_E_SYNTAX, 3),
    D("[,1]", F_CONT, FRAME_E_SYNTAX, 1),
    D("{,}", F_CONT, FRAME_E_SYNTAX, 1),
    D("[1,,2]", F_CONT, FRAME_E_SYNTAX, 3),
    D("[\"a\":1]", F_CONT, FRAME_E_SYNTAX, 4),
    D("{\"a\"::1}", F_CONT, FRAME_E_SYNTAX, 5),
    D("[1]\x0b", F_CONT, FRAME_DONE, 3),
    D("\x0b[1]", F_CONT, FRAME_E_SYNTAX, 0),
    D("\xEF\xBB\xBF{}", F_CONT, FRAME_E_SYNTAX, 0),
    D("\"str\"", F_CONT, FRAME_E_TOP, 0),
    D("  42", F_CONT, FRAME_E_TOP, 2),
    D("true", F_CONT, FRAME_E_TOP, 0),
    D("[1]", F_OBJ, FRAME_E_TOP, 0),
    D("\n\"x\"", F_OBJ, FRAME_E_TOP, 1),
    D("{\"a\":", F_CONT, FRAME_E_TRUNC, 5),
    D("   ", F_CONT, FRAME_E_EMPTY, 3),
    D("", 0, FRAME_E_EMPTY, 0),
    D("[\"abc", F_CONT, FRAME_E_TRUNC, 5),
    D("[1,2", F_CONT, FRAME_E_TRUNC, 4),
    D("-", 0, FRAME_E_TRUNC, 1),
    D("1.", 0, FRAME_E_TRUNC, 2),
    D("tru", 0, FRAME_E_TRUNC, 3),
    D("[\"\\u00", F_CONT, FRAME_E_TRUNC, 6),
    D("[\"\xE2\x82", F_CONT, FRAME_E_TRUNC, 4),
};

static void check_doc(const struct doc *d, uint32_t depth, const char *label)
{
    struct outcome o = scan_whole(d->text, d->len, depth, d->flags);
    long long want = d->at < 0 ? (long long)d->len : d->at;

    cr_assert_eq(o.rc, d->rc, "%s: rc %d (%s), want %d", label, o.rc, frame_strerror(o.rc), d->rc);
    cr_assert_eq((long long)o.at, want, "%s: at %llu, want %lld", label, (unsigned long long)o.at,
                 want);
    check_splits(d->text, d->len, depth, d->flags, label);
}

Test(frame, corpus_valid_every_split)
{
    char label[64];
    cr_assert_geq(sizeof(valid_docs) / sizeof(valid_docs[0]), 30);
    for (size_t i = 0; i < sizeof(valid_docs) / sizeof(valid_docs[0]); i++) {
        snprintf(label, sizeof(label), "valid[%zu]", i);
        check_doc(&valid_docs[i], DEPTH, label);
    }
}

Test(frame, corpus_invalid_every_split)
{
    char label[64];
    for (size_t i = 0; i < sizeof(invalid_docs) / sizeof(invalid_docs[0]); i++) {
        snprintf(label, sizeof(label), "invalid[%zu]", i);
        check_doc(&invalid_docs[i], DEPTH, label);
    }
}

/* Depth: nesting `n` containers of one kind; the limit itself passes, one
 * more fails at the offending opener, for arrays, objects and a mix. */
static size_t nest(char *buf, size_t n, int style)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        bool obj = style == 1 || (style == 2 && i % 2);
        if (obj) {
            memcpy(buf + len, "{\"a\":", 5);
            len += 5;
        } else {
            buf[len++] = '[';
        }
    }
    buf[len++] = '1';
    for (size_t i = n; i-- > 0;)
        buf[len++] = (style == 1 || (style == 2 && i % 2)) ? '}' : ']';
    return len;
}

static size_t opener_offset(size_t k, int style)
{
    size_t off = 0;
    for (size_t i = 0; i < k; i++)
        off += (style == 1 || (style == 2 && i % 2)) ? 5 : 1;
    return off;
}

Test(frame, depth_limit)
{
    static char buf[8 * 1100];
    const uint32_t limits[] = {1, 2, 64, FRAME_MAX_DEPTH};
    for (size_t li = 0; li < sizeof(limits) / sizeof(limits[0]); li++) {
        uint32_t lim = limits[li];
        for (int style = 0; style < 3; style++) {
            size_t len = nest(buf, lim, style);
            struct outcome o = scan_whole(buf, len, lim, 0);
            cr_assert_eq(o.rc, FRAME_DONE, "limit %u style %d", lim, style);
            cr_assert_eq(o.at, len);
            if (lim <= 64)
                check_splits(buf, len, lim, 0, "depth-ok");
            len = nest(buf, lim + 1, style);
            o = scan_whole(buf, len, lim, 0);
            cr_assert_eq(o.rc, FRAME_E_DEPTH, "limit %u style %d: %d", lim, style, o.rc);
            cr_assert_eq(o.at, opener_offset(lim, style));
            if (lim <= 64)
                check_splits(buf, len, lim, 0, "depth+1");
        }
    }
    /* above the cap is clamped to FRAME_MAX_DEPTH; 0 allows scalars only */
    size_t len = nest(buf, FRAME_MAX_DEPTH + 1, 0);
    struct outcome o = scan_whole(buf, len, 100000, 0);
    cr_assert_eq(o.rc, FRAME_E_DEPTH);
    cr_assert_eq(scan_whole("[]", 2, 0, 0).rc, FRAME_E_DEPTH);
    cr_assert_eq(scan_whole("7", 1, 0, 0).rc, FRAME_DONE);
}

static void expect_slice(const char *doc, const struct frame_member *m, uint8_t kind,
                         const char *text, bool non_ascii, bool dup)
{
    cr_assert_eq(m->kind, kind, "kind %u want %u for %s", m->kind, kind, text);
    cr_assert_eq(m->end - m->start, strlen(text));
    cr_assert(memcmp(doc + m->start, text, strlen(text)) == 0, "slice want %s", text);
    cr_assert_eq(m->non_ascii, non_ascii, "non_ascii for %s", text);
    cr_assert_eq(m->duplicate, dup, "duplicate for %s", text);
}

Test(frame, member_capture_every_split)
{
    static const char doc[] =
        "  {\"id\":7,\"type\":\"x\\\"y\",\"params\":{\"a\":\"\xC3\xA9\",\"id\":1,\"type\":[]},"
        "\"id\":8,\"b\":[1,{\"c\":2}],\"ab\":3,\"a\":-1.5e3,\"status\":true,"
        "\"result\":null,\"message\":false,\"zz\":\"\xE2\x82\xAC\"}\n";
    size_t len = sizeof(doc) - 1;
    struct outcome o = scan_whole(doc, len, DEPTH, F_OBJ);

    cr_assert_eq(o.rc, FRAME_DONE);
    cr_assert_eq(o.at, len - 1);
    cr_assert_eq(o.top_kind, FRAME_KIND_OBJECT);
    cr_assert(o.non_ascii);
    cr_assert_not(o.key_escaped);
    expect_slice(doc, &o.m[K_ID], FRAME_KIND_NUMBER, "7", false, true);
    expect_slice(doc, &o.m[K_TYPE], FRAME_KIND_STRING, "\"x\\\"y\"", false, false);
    expect_slice(doc, &o.m[K_PARAMS], FRAME_KIND_OBJECT,
                 "{\"a\":\"\xC3\xA9\",\"id\":1,\"type\":[]}", true, false);
    expect_slice(doc, &o.m[K_B], FRAME_KIND_ARRAY, "[1,{\"c\":2}]", false, false);
    expect_slice(doc, &o.m[K_A], FRAME_KIND_NUMBER, "-1.5e3", false, false);
    expect_slice(doc, &o.m[K_STATUS], FRAME_KIND_TRUE, "true", false, false);
    expect_slice(doc, &o.m[K_RESULT], FRAME_KIND_NULL, "null", false, false);
    expect_slice(doc, &o.m[K_MESSAGE], FRAME_KIND_FALSE, "false", false, false);
    check_splits(doc, len, DEPTH, F_OBJ, "capture");
}

Test(frame, capture_only_top_level_and_raw_keys)
{
    static const char doc[] = "{\"x\":{\"a\":1,\"b\":2},\"\\u0061\":3,\"b\":\"q\"}";
    struct outcome o = scan_whole(doc, sizeof(doc) - 1, DEPTH, F_OBJ);
    cr_assert_eq(o.rc, FRAME_DONE);
    cr_assert_eq(o.m[K_A].kind, FRAME_KIND_NONE, "nested or escaped key must not match");
    cr_assert(o.key_escaped);
    expect_slice(doc, &o.m[K_B], FRAME_KIND_STRING, "\"q\"", false, false);

    /* arrays at the top capture nothing */
    static const char arr[] = "[{\"a\":1},\"a\",{\"id\":2}]";
    o = scan_whole(arr, sizeof(arr) - 1, DEPTH, 0);
    cr_assert_eq(o.rc, FRAME_DONE);
    for (int i = 0; i < FRAME_MAX_KEYS; i++)
        cr_assert_eq(o.m[i].kind, FRAME_KIND_NONE);
    cr_assert_eq(o.top_kind, FRAME_KIND_ARRAY);
}

Test(frame, watch_rules)
{
    struct frame_scanner s;
    frame_init(&s, 8, 0);
    cr_assert_eq(frame_watch(&s, "", 0), -EINVAL);
    cr_assert_eq(frame_watch(&s, "a\"b", 3), -EINVAL);
    cr_assert_eq(frame_watch(&s, "a\\b", 3), -EINVAL);
    cr_assert_eq(frame_watch(&s, "\xC3\xA9", 2), -EINVAL);
    char big[FRAME_KEY_MAX + 1];
    memset(big, 'k', sizeof(big));
    cr_assert_eq(frame_watch(&s, big, sizeof(big)), -EINVAL);
    cr_assert_eq(frame_watch(&s, big, FRAME_KEY_MAX), 0);
    cr_assert_eq(frame_watch(&s, big, FRAME_KEY_MAX), -EEXIST);
    static const char *const more[] = {"1", "2", "3", "4", "5", "6", "7", "8"};
    for (int i = 0; i < 7; i++)
        cr_assert_eq(frame_watch(&s, more[i], 1), i + 1);
    cr_assert_eq(frame_watch(&s, more[7], 1), -ENOSPC);
}

Test(frame, done_leaves_extra_bytes_and_reset_reuses)
{
    static const char stream[] = "{\"a\":1} [2]\n{\"status\":\"x\"}  \n";
    struct frame_scanner s;
    size_t used, pos = 0;
    setup(&s, DEPTH, F_CONT);

    cr_assert_eq(frame_feed(&s, stream, sizeof(stream) - 1, &used), FRAME_DONE);
    cr_assert_eq(used, 7);
    cr_assert_eq(frame_member_at(&s, K_A)->kind, FRAME_KIND_NUMBER);
    /* sticky until reset */
    cr_assert_eq(frame_feed(&s, stream + 7, 4, &used), FRAME_DONE);
    cr_assert_eq(used, 0);
    cr_assert_eq(frame_finish(&s), FRAME_DONE);
    pos = 7;
    frame_reset(&s);
    cr_assert_eq(frame_member_at(&s, K_A)->kind, FRAME_KIND_NONE);
    cr_assert_eq(frame_feed(&s, stream + pos, sizeof(stream) - 1 - pos, &used), FRAME_DONE);
    cr_assert_eq(used, 4); /* " [2]": leading whitespace belongs to the value */
    pos += used;
    frame_reset(&s);
    cr_assert_eq(frame_feed(&s, stream + pos, sizeof(stream) - 1 - pos, &used), FRAME_DONE);
    cr_assert_eq(used, 15);
    const struct frame_member *m = frame_member_at(&s, K_STATUS);
    cr_assert_eq(m->start, 11); /* offsets restart at 0 after reset */
    cr_assert_eq(m->end, 14);
    pos += used;
    cr_assert_eq(frame_ws_span(stream + pos, sizeof(stream) - 1 - pos), sizeof(stream) - 1 - pos);
    cr_assert_eq(frame_ws_span(" \t x", 4), 3);
    cr_assert_eq(frame_ws_span("", 0), 0);

    /* errors are sticky too */
    frame_reset(&s);
    cr_assert_eq(frame_feed(&s, "[1,]", 4, &used), FRAME_E_SYNTAX);
    cr_assert_eq(used, 3);
    cr_assert_eq(frame_feed(&s, "[]", 2, &used), FRAME_E_SYNTAX);
    cr_assert_eq(used, 0);
    cr_assert_eq(frame_finish(&s), FRAME_E_SYNTAX);
    cr_assert_eq(frame_error_offset(&s), 3);
}

Test(frame, empty_feeds_are_harmless)
{
    struct frame_scanner s;
    size_t used = 99;
    setup(&s, DEPTH, F_CONT);
    cr_assert_eq(frame_feed(&s, "", 0, &used), FRAME_MORE);
    cr_assert_eq(used, 0);
    cr_assert_eq(frame_feed(&s, "[\"\xC3", 3, &used), FRAME_MORE);
    cr_assert_eq(frame_feed(&s, NULL, 0, &used), FRAME_MORE);
    cr_assert_eq(frame_feed(&s, "\xA9\"]", 3, &used), FRAME_DONE);
    cr_assert_eq(used, 3);
    cr_assert(frame_is_done(&s));
}

Test(frame, strerror_covers_codes)
{
    for (int rc = FRAME_E_EMPTY; rc <= FRAME_DONE; rc++)
        cr_assert_str_neq(frame_strerror(rc), "unknown frame error", "rc %d", rc);
    cr_assert_str_eq(frame_strerror(-100), "unknown frame error");
}

/* ---- differential test against jansson --------------------------------- */

static bool scanner_accepts(const char *doc, size_t len)
{
    struct frame_scanner s;
    size_t used;
    frame_init(&s, FRAME_MAX_DEPTH, 0);
    int rc = frame_feed(&s, doc, len, &used);
    if (rc == FRAME_MORE) {
        rc = frame_finish(&s);
        used = len;
    }
    return rc == FRAME_DONE && frame_ws_span(doc + used, len - used) == len - used;
}

/* NULL if jansson accepts, else its error text (in *e). */
static const char *jansson_error(const char *doc, size_t len, json_error_t *e)
{
    json_t *j = json_loadb(doc, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, e);
    json_decref(j);
    return j ? NULL : e->text;
}

/* jansson's refusals that RFC 8259's grammar allows, and the scanner too. */
static bool documented_leniency(const char *why)
{
    return strstr(why, "invalid Unicode") || strstr(why, "real number overflow") ||
           strstr(why, "too big integer") || strstr(why, "too big negative integer");
}

Test(frame, differential_mutations_vs_jansson, .timeout = 120)
{
    static const char subst[] = "\"\\{}[],:0-e.+ \n\x01\x80\xC3\xED\xF4\xBF tufn";
    char buf[512];
    unsigned long n = 0, lenient = 0;

    for (size_t d = 0; d < sizeof(valid_docs) / sizeof(valid_docs[0]); d++) {
        const char *t = valid_docs[d].text;
        size_t len = valid_docs[d].len;
        if (len + 1 > sizeof(buf))
            continue;
        for (size_t i = 0; i < len; i++) {
            /* sizeof(subst) counts the terminating NUL: NUL is a mutation too */
            for (size_t v = 0; v < 2 * sizeof(subst) + 1; v++) {
                size_t ml;
                if (v < sizeof(subst)) { /* substitution */
                    memcpy(buf, t, len);
                    buf[i] = subst[v];
                    ml = len;
                } else if (v < 2 * sizeof(subst)) { /* insertion */
                    memcpy(buf, t, i);
                    buf[i] = subst[v - sizeof(subst)];
                    memcpy(buf + i + 1, t + i, len - i);
                    ml = len + 1;
                } else { /* deletion */
                    memcpy(buf, t, i);
                    memcpy(buf + i, t + i + 1, len - i - 1);
                    ml = len - 1;
                }
                json_error_t je;
                const char *why = jansson_error(buf, ml, &je);
                bool ours = scanner_accepts(buf, ml), theirs = why == NULL;
                n++;
                if (memchr(buf, 0, ml)) {
                    /* NUL is refused everywhere (jansson lets one through
                     * right after a number: "[1\0]") */
                    cr_assert_not(ours, "NUL accepted: doc %zu mut %zu@%zu", d, v, i);
                } else if (theirs)
                    cr_assert(ours, "jansson accepts, scanner refuses: doc %zu mut %zu@%zu: %.*s",
                              d, v, i, (int)ml, buf);
                else if (ours) {
                    cr_assert(documented_leniency(why), "scanner accepts, jansson: %s: %.*s", why,
                              (int)ml, buf);
                    lenient++;
                }
                if ((n & 15) == 0) {
                    struct outcome w = scan_whole(buf, ml, DEPTH, 0);
                    size_t cuts[512];
                    for (size_t k = 0; k + 1 < ml; k++)
                        cuts[k] = k + 1;
                    struct outcome b = scan_cuts(buf, ml, DEPTH, 0, cuts, ml ? ml - 1 : 0);
                    cr_assert(same(&w, &b), "mutant byte-by-byte differs: doc %zu", d);
                }
            }
        }
    }
    cr_log_info("differential: %lu mutants, %lu accepted by the scanner only (all leniencies)", n,
                lenient);
}

/* Every "scanner only" acceptance must be one of the documented leniencies. */
Test(frame, leniencies_are_the_documented_ones)
{
    static const char *const ok[] = {"[\"\\ud800\"]", "[\"\\udc00x\"]", "[1e999]",
                                     "[123456789012345678901234567890]"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        cr_assert(scanner_accepts(ok[i], strlen(ok[i])), "%s", ok[i]);
}

/* ---- throughput (informative; asserted only loosely) ------------------- */

Test(frame, throughput, .timeout = 120)
{
    const size_t target = 8u << 20;
    char *doc = malloc(target + 256);
    size_t len = 0;
    cr_assert_not_null(doc);
    doc[len++] = '[';
    for (unsigned i = 0; len < target; i++) {
        int n = snprintf(doc + len, target + 256 - len,
                         "%s{\"name\":\"Object_%u\",\"type\":\"MESH\",\"location\":[%u.25,-%u.5,"
                         "1e-3],\"visible\":true,\"material\":null,\"note\":\"a \\\"quoted\\\" "
                         "word and a path C:\\\\tmp\\\\x\"}",
                         i ? "," : "", i, i % 977, i % 13);
        len += (size_t)n;
    }
    doc[len++] = ']';

    struct frame_scanner s;
    size_t used;
    int reps = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        setup(&s, DEPTH, F_CONT);
        /* 8 KiB reads, like a socket */
        int rc = FRAME_MORE;
        for (size_t off = 0; off < len; off += 8192) {
            size_t n = len - off < 8192 ? len - off : 8192;
            rc = frame_feed(&s, doc + off, n, &used);
        }
        cr_assert_eq(rc, FRAME_DONE);
        reps++;
        clock_gettime(CLOCK_MONOTONIC, &t1);
    } while ((double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9 < 1.0);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    double mbs = (double)len * reps / secs / 1e6;
    fprintf(stderr, "{\"bench\":\"frame_scan\",\"bytes\":%zu,\"reps\":%d,\"mb_per_s\":%.0f}\n", len,
            reps, mbs);
    free(doc);
}
