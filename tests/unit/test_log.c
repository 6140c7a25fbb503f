/*
 * test_log.c - structured logging: both formats parse, untrusted text is
 * escaped and cut on a UTF-8 boundary, rate limiting (with an injected clock,
 * no sleeps) suppresses and then reports, and lines written by concurrent
 * threads never interleave.
 *
 * Output is captured through a pipe given to log_set_fd. Criterion runs each
 * test in its own process, so the process logger starts fresh every time.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* --- capture ----------------------------------------------------------- */

static int pfd[2];

static void capture_start(void)
{
    cr_assert_eq(pipe(pfd), 0);
    cr_assert_eq(fcntl(pfd[0], F_SETFL, O_NONBLOCK), 0);
    log_set_fd(pfd[1]);
}

/* Everything written so far (caller frees). */
static char *capture_take(size_t *lenp)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    ssize_t n;

    cr_assert_not_null(buf);
    while ((n = read(pfd[0], buf + len, cap - len)) > 0) {
        len += (size_t)n;
        if (len == cap) {
            char *bigger = realloc(buf, cap * 2 + 1);
            cr_assert_not_null(bigger);
            buf = bigger;
            cap *= 2;
        }
    }
    buf[len] = '\0';
    if (lenp)
        *lenp = len;
    return buf;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;

    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Line i (0-based) of s, as a new string without its '\n'. */
static char *line_at(const char *s, size_t i)
{
    for (; i > 0; i--) {
        s = strchr(s, '\n');
        cr_assert_not_null(s);
        s++;
    }
    return strndup(s, strcspn(s, "\n"));
}

static json_t *parse_json_line(const char *line)
{
    json_error_t je;
    json_t *v = json_loads(line, 0, &je);

    cr_assert_not_null(v, "not JSON (%s): %s", je.text, line);
    cr_assert(json_is_object(v));
    return v;
}

/* --- a strict logfmt reader -------------------------------------------- */

struct kv {
    char key[64];
    char val[4096];
    size_t vlen;
};

static size_t parse_logfmt(const char *s, struct kv *out, size_t max)
{
    size_t n = 0;

    while (*s && *s != '\n') {
        struct kv *kv = &out[n];
        size_t k = 0;
        cr_assert_lt(n, max);
        while (*s != '=') {
            cr_assert(*s > ' ' && *s != '"', "bad key char in %s", s);
            kv->key[k++] = *s++;
        }
        kv->key[k] = '\0';
        s++;
        kv->vlen = 0;
        if (*s == '"') {
            for (s++; *s != '"'; s++) {
                char c = *s;
                cr_assert(c != '\0' && c != '\n', "unterminated value");
                cr_assert((unsigned char)c >= 0x20 && c != 0x7F, "raw control byte");
                if (c == '\\') {
                    c = *++s;
                    if (c == 'n')
                        c = '\n';
                    else if (c == 'r')
                        c = '\r';
                    else if (c == 't')
                        c = '\t';
                    else if (c == 'x') {
                        char hex[3] = {s[1], s[2], 0};
                        c = (char)strtoul(hex, NULL, 16);
                        s += 2;
                    } else
                        cr_assert(c == '"' || c == '\\', "bad escape \\%c", c);
                }
                kv->val[kv->vlen++] = c;
            }
            s++;
        } else {
            while (*s && *s != ' ' && *s != '\n')
                kv->val[kv->vlen++] = *s++;
        }
        kv->val[kv->vlen] = '\0';
        n++;
        cr_assert(*s == ' ' || *s == '\n' || *s == '\0', "junk after value: %s", s);
        if (*s == ' ')
            s++;
    }
    return n;
}

static const struct kv *kv_get(const struct kv *kv, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(kv[i].key, key) == 0)
            return &kv[i];
    cr_assert_fail("no key %s", key);
    return NULL;
}

/* --- fixed clocks ------------------------------------------------------ */

static int64_t fixed_real_ns(void)
{
    return INT64_C(1795578000123000000); /* 2026-11-25T03:40:00.123Z */
}

static int64_t fake_mono;

static int64_t fake_mono_ns(void)
{
    return __atomic_load_n(&fake_mono, __ATOMIC_RELAXED);
}

/* --- formats ----------------------------------------------------------- */

Test(log, json_line_parses)
{
    char *out, *line;
    json_t *v;

    capture_start();
    log_set_clock(fixed_real_ns, NULL);
    log_write(LOG_LEVEL_INFO, "client connected", LOG_STR("peer", "abcdef", 3), LOG_INT("fd", -7),
              LOG_UINT("n", 42), LOG_BOOL("ok", true), LOG_DBL("ratio", 0.25),
              LOG_CSTR("nothing", NULL), LOG_CSTR("c", "str"), LOG_ERRNO(-ENOENT), LOG_END);
    out = capture_take(NULL);
    cr_assert_eq(count_lines(out), 1, "%s", out);
    line = line_at(out, 0);
    cr_expect(
        strncmp(line, "{\"ts\":\"2026-11-25T03:40:00.123Z\",\"level\":\"info\",\"msg\":", 54) == 0,
        "%s", line);
    v = parse_json_line(line);
    cr_expect_str_eq(json_string_value(json_object_get(v, "msg")), "client connected");
    cr_expect_str_eq(json_string_value(json_object_get(v, "peer")), "abc");
    cr_expect_eq(json_integer_value(json_object_get(v, "fd")), -7);
    cr_expect_eq(json_integer_value(json_object_get(v, "n")), 42);
    cr_expect(json_is_true(json_object_get(v, "ok")));
    cr_expect_eq(json_real_value(json_object_get(v, "ratio")), 0.25);
    cr_expect(json_is_null(json_object_get(v, "nothing")));
    cr_expect_str_eq(json_string_value(json_object_get(v, "c")), "str");
    cr_expect_str_eq(json_string_value(json_object_get(v, "error")), "No such file or directory");
    json_decref(v);
    free(line);
    free(out);
}

Test(log, text_line_parses)
{
    struct kv kv[16];
    char *out;
    size_t n;

    capture_start();
    log_set_format(LOG_FORMAT_TEXT);
    log_set_clock(fixed_real_ns, NULL);
    log_write(LOG_LEVEL_WARN, "bad request", LOG_STR("peer", "uid=1000 pid=7", 14),
              LOG_CSTR("plain", "abc"), LOG_INT("fd", 12), LOG_STR("empty", "", 0), LOG_END);
    out = capture_take(NULL);
    cr_expect(strncmp(out, "ts=2026-11-25T03:40:00.123Z level=warn msg=\"bad request\" ", 57) == 0,
              "%s", out);
    n = parse_logfmt(out, kv, 16);
    cr_assert_eq(n, 7);
    cr_expect_str_eq(kv_get(kv, n, "level")->val, "warn");
    cr_expect_str_eq(kv_get(kv, n, "msg")->val, "bad request");
    cr_expect_str_eq(kv_get(kv, n, "peer")->val, "uid=1000 pid=7");
    cr_expect(strstr(out, " plain=abc ") != NULL, "plain values stay bare: %s", out);
    cr_expect_str_eq(kv_get(kv, n, "fd")->val, "12");
    cr_expect(strstr(out, " empty=\"\"") != NULL, "%s", out);
    free(out);
}

Test(log, timestamps)
{
    char buf[256];
    size_t n = log_render(buf, sizeof(buf), LOG_FORMAT_TEXT, INT64_C(951868799999000000),
                          LOG_LEVEL_ERROR, "m", NULL, 0);

    cr_assert_gt(n, 0);
    buf[n] = '\0';
    cr_expect_str_eq(buf, "ts=2000-02-29T23:59:59.999Z level=error msg=\"m\"\n");
    n = log_render(buf, sizeof(buf), LOG_FORMAT_JSON, 0, LOG_LEVEL_DEBUG, "m", NULL, 0);
    buf[n] = '\0';
    cr_expect_str_eq(buf,
                     "{\"ts\":\"1970-01-01T00:00:00.000Z\",\"level\":\"debug\",\"msg\":\"m\"}\n");
}

/* --- escaping ---------------------------------------------------------- */

static const char nasty[] = "q\"b\\s\n\r\t\x01\x1b[31m\x7f "
                            "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 "    /* é € 😀 */
                            "\xe2\x80\xa8 "                            /* U+2028 */
                            "\xff \xe2\x82 \xc0\xaf \xed\xa0\x80 end"; /* invalid */

static void expect_no_raw_controls(const char *line, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++)
        cr_assert(((unsigned char)line[i] >= 0x20 && line[i] != 0x7F),
                  "raw byte 0x%02x at %zu in %s", (unsigned char)line[i], i, line);
    cr_assert_eq(line[len - 1], '\n');
}

Test(log, json_escaping)
{
    char buf[LOG_LINE_MAX];
    struct log_field f = LOG_STR("v", nasty, sizeof(nasty) - 1);
    size_t n = log_render(buf, sizeof(buf), LOG_FORMAT_JSON, 0, LOG_LEVEL_INFO, "m\n\"x\"", &f, 1);
    json_t *v;
    const char *want = "q\"b\\s\n\r\t\x01\x1b[31m\x7f "
                       "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 "
                       "\xe2\x80\xa8 "
                       "\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd "
                       "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd end";

    buf[n] = '\0';
    expect_no_raw_controls(buf, n);
    cr_expect(strstr(buf, "\\u2028") != NULL, "U+2028 escaped: %s", buf);
    cr_expect(strstr(buf, "\\u001b[31m") != NULL, "ESC escaped: %s", buf);
    v = parse_json_line(buf);
    cr_expect_str_eq(json_string_value(json_object_get(v, "msg")), "m\n\"x\"");
    cr_expect_str_eq(json_string_value(json_object_get(v, "v")), want);
    json_decref(v);
}

Test(log, text_escaping_is_lossless)
{
    char buf[LOG_LINE_MAX];
    struct log_field f[2] = {LOG_STR("v", nasty, sizeof(nasty) - 1), LOG_CSTR("k", "a=b")};
    size_t n = log_render(buf, sizeof(buf), LOG_FORMAT_TEXT, 0, LOG_LEVEL_INFO, "m", f, 2);
    struct kv kv[8];
    size_t nkv;

    buf[n] = '\0';
    expect_no_raw_controls(buf, n);
    cr_expect(strstr(buf, "\\xff") != NULL && strstr(buf, "\\x1b") != NULL, "%s", buf);
    cr_expect(strstr(buf, "\xc3\xa9\xe2\x82\xac") != NULL, "valid UTF-8 kept: %s", buf);
    nkv = parse_logfmt(buf, kv, 8);
    cr_assert_eq(nkv, 5);
    cr_assert_eq(kv_get(kv, nkv, "v")->vlen, sizeof(nasty) - 1);
    cr_expect(memcmp(kv_get(kv, nkv, "v")->val, nasty, sizeof(nasty) - 1) == 0);
    cr_expect_str_eq(kv_get(kv, nkv, "k")->val, "a=b");
}

/* --- truncation -------------------------------------------------------- */

/* Render one JSON field holding s; return its decoded value (caller frees). */
static char *render_value(const char *s, size_t len)
{
    char buf[LOG_LINE_MAX];
    struct log_field f = LOG_STR("v", s, len);
    size_t n = log_render(buf, sizeof(buf), LOG_FORMAT_JSON, 0, LOG_LEVEL_INFO, "m", &f, 1);
    json_t *v;
    char *out;

    buf[n] = '\0';
    v = parse_json_line(buf); /* jansson also rejects invalid UTF-8 */
    out = strdup(json_string_value(json_object_get(v, "v")));
    json_decref(v);
    return out;
}

static void expect_cut(const char *unit, size_t reps, const char *lead, size_t keep)
{
    char src[2048], want[2300];
    size_t ul = strlen(unit), ll = strlen(lead), len = ll;
    char *got;

    memcpy(src, lead, ll);
    for (size_t i = 0; i < reps; i++, len += ul)
        memcpy(src + len, unit, ul);
    snprintf(want, sizeof(want), "%.*s...[%zu bytes]", (int)keep, src, len);
    got = render_value(src, len);
    cr_expect_str_eq(got, want, "unit %s x %zu", unit, reps);
    free(got);
}

Test(log, truncation_on_utf8_boundary)
{
    /* default limit 256 bytes */
    expect_cut("\xc3\xa9", 200, "a", 255);          /* 1 + 127 x 2: the 128th would split */
    expect_cut("\xc3\xa9", 200, "", 256);           /* exactly 128 x 2 */
    expect_cut("\xe2\x82\xac", 100, "", 255);       /* 85 x 3 */
    expect_cut("\xf0\x9f\x98\x80", 100, "xy", 254); /* 2 + 63 x 4 */
    expect_cut("z", 300, "", 256);
    log_set_value_max(32);
    expect_cut("\xe2\x82\xac", 20, "", 30);

    /* at the limit: untouched */
    char exact[256];
    memset(exact, 'k', sizeof(exact));
    log_set_value_max(256);
    char *got = render_value(exact, sizeof(exact));
    cr_expect_eq(strlen(got), 256);
    free(got);
}

Test(log, overlong_line_is_cut_but_stays_valid)
{
    char big[2000], buf[LOG_LINE_MAX + 64];
    struct log_field f[6];
    struct kv kv[16];
    json_t *v;
    size_t n;

    memset(big, 'B', sizeof(big));
    log_set_value_max(2048);
    for (int i = 0; i < 6; i++)
        f[i] = LOG_STR(i % 2 ? "b" : "a", big, sizeof(big));
    n = log_render(buf, sizeof(buf), LOG_FORMAT_JSON, 0, LOG_LEVEL_INFO, "m", f, 6);
    cr_assert_leq(n, LOG_LINE_MAX);
    buf[n] = '\0';
    cr_expect_eq(count_lines(buf), 1);
    v = parse_json_line(buf);
    cr_expect(json_is_true(json_object_get(v, "line_truncated")), "%s", buf);
    cr_expect_eq(strlen(json_string_value(json_object_get(v, "a"))), 2000);
    json_decref(v);

    n = log_render(buf, sizeof(buf), LOG_FORMAT_TEXT, 0, LOG_LEVEL_INFO, "m", f, 6);
    cr_assert_leq(n, LOG_LINE_MAX);
    buf[n] = '\0';
    n = parse_logfmt(buf, kv, 16);
    cr_expect_str_eq(kv_get(kv, n, "line_truncated")->val, "true");

    /* a tiny buffer: msg itself is cut, the line still closes */
    char small[128];
    char msg[300];
    memset(msg, 'm', sizeof(msg) - 1);
    msg[sizeof(msg) - 1] = '\0';
    n = log_render(small, sizeof(small), LOG_FORMAT_JSON, 0, LOG_LEVEL_INFO, msg, f, 1);
    cr_assert_leq(n, sizeof(small));
    char *line = strndup(small, n);
    v = parse_json_line(line);
    cr_expect(json_is_true(json_object_get(v, "line_truncated")));
    json_decref(v);
    free(line);
}

/* --- levels, errno, printf --------------------------------------------- */

static int evaluated;

static int side_effect(void)
{
    return ++evaluated;
}

Test(log, levels_filter_and_errno_survives)
{
    char *out;

    capture_start();
    cr_expect_eq(log_get_level(), LOG_LEVEL_INFO);
    log_write(LOG_LEVEL_DEBUG, "hidden", LOG_INT("x", side_effect()));
    cr_expect_eq(evaluated, 0, "arguments of a disabled line are not evaluated");
    log_set_level(LOG_LEVEL_WARN);
    log_write(LOG_LEVEL_INFO, "hidden too", LOG_END);
    errno = EBADF;
    log_write(LOG_LEVEL_ERROR, "shown", LOG_ERRNO(errno));
    cr_expect_eq(errno, EBADF, "logging must not clobber errno");
    log_msgf(LOG_LEVEL_INFO, "hidden %d", 3);
    log_msgf(LOG_LEVEL_WARN, "shown %s=%d", "k\n", 4);
    cr_expect_eq(errno, EBADF);
    out = capture_take(NULL);
    cr_assert_eq(count_lines(out), 2, "%s", out);
    cr_expect(strstr(out, "hidden") == NULL);
    cr_expect(strstr(out, "\"msg\":\"shown k\\n=4\"") != NULL, "%s", out);
    cr_expect_eq(log_dropped(), 0);
    free(out);
}

Test(log, failed_write_is_counted)
{
    int p[2];

    cr_assert_eq(pipe(p), 0);
    close(p[0]);
    signal(SIGPIPE, SIG_IGN);
    log_set_fd(p[1]);
    log_write(LOG_LEVEL_ERROR, "into the void", LOG_END);
    cr_expect_eq(log_dropped(), 1);
    close(p[1]);
}

/* --- rate limiting ----------------------------------------------------- */

static void flood(int n)
{
    for (int i = 0; i < n; i++)
        LOG_RATELIMITED_RB("flood", 10, 5, LOG_LEVEL_WARN, "bad input", LOG_INT("i", i));
}

static void expect_summary(const char *out, size_t line, const char *count)
{
    char *l = line_at(out, line);
    json_t *v = parse_json_line(l);
    char want[64];

    snprintf(want, sizeof(want), "suppressed %s messages", count);
    cr_expect_str_eq(json_string_value(json_object_get(v, "msg")), want);
    cr_expect_str_eq(json_string_value(json_object_get(v, "key")), "flood");
    cr_expect_eq(json_integer_value(json_object_get(v, "suppressed")), atoi(count));
    cr_expect_str_eq(json_string_value(json_object_get(v, "level")), "warn");
    json_decref(v);
    free(l);
}

Test(log, rate_limit_burst_suppression_summary)
{
    char *out;

    capture_start();
    log_set_clock(NULL, fake_mono_ns);
    fake_mono = 0;
    flood(20); /* burst of 5 passes, 15 suppressed */
    out = capture_take(NULL);
    cr_expect_eq(count_lines(out), 5, "%s", out);
    free(out);

    fake_mono = 100 * 1000000LL; /* one token back */
    flood(1);
    out = capture_take(NULL);
    cr_assert_eq(count_lines(out), 2, "%s", out);
    expect_summary(out, 0, "15");
    cr_expect(strstr(out, "\"msg\":\"bad input\",\"i\":0") != NULL, "%s", out);
    free(out);

    flood(3); /* bucket empty again */
    out = capture_take(NULL);
    cr_expect_eq(count_lines(out), 0, "%s", out);
    free(out);

    log_ratelimit_flush(); /* the flood stopped: report it anyway */
    out = capture_take(NULL);
    cr_assert_eq(count_lines(out), 1, "%s", out);
    expect_summary(out, 0, "3");
    free(out);
    log_ratelimit_flush();
    out = capture_take(NULL);
    cr_expect_eq(count_lines(out), 0, "nothing left to report: %s", out);
    free(out);

    fake_mono = 10 * 1000000000LL; /* long quiet: full burst again, no summary */
    flood(5);
    out = capture_take(NULL);
    cr_expect_eq(count_lines(out), 5, "%s", out);
    cr_expect(strstr(out, "suppressed") == NULL, "%s", out);
    free(out);
}

Test(log, rate_limit_disabled_level_does_not_count)
{
    static struct log_ratelimit rl = LOG_RATELIMIT_INIT("quiet", 1, 1);
    char *out;

    capture_start();
    log_set_clock(NULL, fake_mono_ns);
    for (int i = 0; i < 10; i++)
        LOG_RATELIMITED_BY(&rl, LOG_LEVEL_DEBUG, "debug", LOG_END);
    cr_expect_eq(atomic_load(&rl.suppressed), 0);
    LOG_RATELIMITED_BY(&rl, LOG_LEVEL_INFO, "info", LOG_END);
    out = capture_take(NULL);
    cr_expect_eq(count_lines(out), 1, "%s", out);
    free(out);
}

/* --- threads ----------------------------------------------------------- */

#define NTHREADS   4
#define PER_THREAD 2000

struct reader {
    int fd;
    char *buf;
    size_t len, cap;
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    ssize_t n;

    for (;;) {
        if (r->cap - r->len < 65536) {
            size_t cap = r->cap ? r->cap * 2 : 1 << 20;
            char *bigger = realloc(r->buf, cap + 1);
            if (!bigger)
                break; /* the line count check then fails */
            r->buf = bigger;
            r->cap = cap;
        }
        n = read(r->fd, r->buf + r->len, r->cap - r->len);
        if (n <= 0)
            break;
        r->len += (size_t)n;
    }
    if (r->buf)
        r->buf[r->len] = '\0';
    return NULL;
}

static void *writer_main(void *arg)
{
    long id = (long)arg;
    char pad[700];

    memset(pad, 'a' + (int)id, sizeof(pad));
    for (int i = 0; i < PER_THREAD; i++)
        log_write(LOG_LEVEL_INFO, "concurrent", LOG_INT("thread", id), LOG_INT("seq", i),
                  LOG_STR("pad", pad, (size_t)(100 + (i * 37) % 600)));
    return NULL;
}

Test(log, concurrent_lines_never_interleave)
{
    pthread_t w[NTHREADS], rt;
    struct reader r = {0};
    int p[2], next[NTHREADS] = {0};
    size_t lines = 0;

    cr_assert_eq(pipe(p), 0);
    r.fd = p[0];
    log_set_fd(p[1]);
    log_set_value_max(1024);
    cr_assert_eq(pthread_create(&rt, NULL, reader_main, &r), 0);
    for (long i = 0; i < NTHREADS; i++)
        cr_assert_eq(pthread_create(&w[i], NULL, writer_main, (void *)i), 0);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(w[i], NULL);
    close(p[1]);
    pthread_join(rt, NULL);
    close(p[0]);
    cr_assert_not_null(r.buf);

    for (char *s = r.buf, *nl; (nl = strchr(s, '\n')); s = nl + 1, lines++) {
        *nl = '\0';
        json_error_t je;
        json_t *v = json_loads(s, 0, &je);
        cr_assert_not_null(v, "line %zu is not one JSON object: %.200s", lines, s);
        long id = (long)json_integer_value(json_object_get(v, "thread"));
        const char *pad = json_string_value(json_object_get(v, "pad"));
        cr_assert(id >= 0 && id < NTHREADS);
        cr_assert_eq(json_integer_value(json_object_get(v, "seq")), next[id],
                     "thread %ld out of order", id);
        next[id]++;
        for (const char *c = pad; *c; c++)
            cr_assert_eq(*c, 'a' + id, "bytes of another line inside line %zu", lines);
        json_decref(v);
    }
    cr_expect_eq(lines, NTHREADS * PER_THREAD);
    for (int i = 0; i < NTHREADS; i++)
        cr_expect_eq(next[i], PER_THREAD);
    free(r.buf);
}

static void *limited_main(void *arg)
{
    static struct log_ratelimit shared = LOG_RATELIMIT_INIT("shared", 1, 50);

    (void)arg;
    for (int i = 0; i < 1000; i++)
        LOG_RATELIMITED_BY(&shared, LOG_LEVEL_WARN, "limited", LOG_END);
    return NULL;
}

/* The bucket is exact under contention: 50 lines pass, the rest are counted. */
Test(log, rate_limit_is_exact_across_threads)
{
    pthread_t t[NTHREADS];
    char *out;
    size_t lines;

    capture_start();
    log_set_clock(NULL, fake_mono_ns);
    fake_mono = 5;
    for (long i = 0; i < NTHREADS; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, limited_main, (void *)i), 0);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    log_ratelimit_flush();
    out = capture_take(NULL);
    lines = count_lines(out);
    cr_assert_eq(lines, 51, "%s", out);
    char *last = line_at(out, 50);
    json_t *v = parse_json_line(last);
    cr_expect_eq(json_integer_value(json_object_get(v, "suppressed")), NTHREADS * 1000 - 50);
    json_decref(v);
    free(last);
    free(out);
}
