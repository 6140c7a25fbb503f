/*
 * log.c - the process logger (see log.h for the contract).
 *
 * A line is built left to right in a stack buffer by a tiny writer (struct
 * lbuf) whose usable limit sits LB_RESERVE bytes below the real capacity.
 * The reserve guarantees that whatever happens the line can still be closed:
 * a string value cut by the end of the buffer gets `..."`, the record gets
 * `,"line_truncated":true}` (or ` line_truncated=true`) and the newline. Non
 * string fields are written all or nothing (rolled back to a mark).
 *
 * Escaping works on decoded UTF-8: a valid multi-byte sequence is copied as
 * is (JSON escapes U+2028/U+2029 too, for JavaScript readers); an invalid
 * byte becomes \ufffd in JSON (JSON text must be UTF-8) and \xNN in logfmt
 * (lossless there, since a literal backslash is written \\). Truncation cuts
 * the *source* at a sequence boundary, so a character is never split.
 *
 * errno is preserved across every logging call: callers log an error and
 * then act on errno.
 */
#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LB_RESERVE      40 /* >= strlen("...\"") + strlen(",\"line_truncated\":true}\n") */
#define VALUE_MAX_FLOOR 16
#define VALUE_MAX_CEIL  2048

/* --- process logger state (the one global; see log.h) ------------------ */

_Atomic int log_threshold = LOG_LEVEL_INFO;

static int64_t default_realtime_ns(void);
static int64_t default_monotonic_ns(void);

static struct {
    _Atomic int fd;
    _Atomic int format;
    _Atomic size_t value_max;
    _Atomic uint64_t dropped;
    int64_t (*_Atomic realtime)(void);
    int64_t (*_Atomic monotonic)(void);
    struct log_ratelimit *_Atomic rl_head; /* registry of sites that suppressed */
} lg = {
    .fd = 2,
    .format = LOG_FORMAT_JSON,
    .value_max = LOG_VALUE_MAX_DEFAULT,
    .realtime = default_realtime_ns,
    .monotonic = default_monotonic_ns,
};

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t default_realtime_ns(void)
{
    return clock_ns(CLOCK_REALTIME);
}

static int64_t default_monotonic_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

/* Settings are independent values: relaxed everywhere, nothing is published
 * through them. */
void log_set_level(enum log_level lvl)
{
    atomic_store_explicit(&log_threshold, (int)lvl, memory_order_relaxed);
}

enum log_level log_get_level(void)
{
    return (enum log_level)atomic_load_explicit(&log_threshold, memory_order_relaxed);
}

void log_set_format(enum log_format fmt)
{
    atomic_store_explicit(&lg.format, (int)fmt, memory_order_relaxed);
}

void log_set_fd(int fd)
{
    atomic_store_explicit(&lg.fd, fd, memory_order_relaxed);
}

void log_set_value_max(size_t n)
{
    if (n < VALUE_MAX_FLOOR)
        n = VALUE_MAX_FLOOR;
    if (n > VALUE_MAX_CEIL)
        n = VALUE_MAX_CEIL;
    atomic_store_explicit(&lg.value_max, n, memory_order_relaxed);
}

void log_set_clock(int64_t (*realtime_ns)(void), int64_t (*monotonic_ns)(void))
{
    atomic_store_explicit(&lg.realtime, realtime_ns ? realtime_ns : default_realtime_ns,
                          memory_order_relaxed);
    atomic_store_explicit(&lg.monotonic, monotonic_ns ? monotonic_ns : default_monotonic_ns,
                          memory_order_relaxed);
}

uint64_t log_dropped(void)
{
    return atomic_load_explicit(&lg.dropped, memory_order_relaxed);
}

const char *log_level_name(enum log_level lvl)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    return (unsigned)lvl < 4 ? names[lvl] : "unknown";
}

const char *log_format_name(enum log_format fmt)
{
    return fmt == LOG_FORMAT_TEXT ? "text" : "json";
}

/* --- line writer ------------------------------------------------------- */

struct lbuf {
    char *p;
    size_t len;
    size_t lim; /* content limit; [lim, cap) is the closing reserve */
    bool full;  /* something was left out: no further field is written */
};

static bool lb_room(struct lbuf *b, size_t n)
{
    if (!b->full && b->len + n <= b->lim)
        return true;
    b->full = true;
    return false;
}

static void lb_put(struct lbuf *b, const char *s, size_t n)
{
    if (lb_room(b, n)) {
        memcpy(b->p + b->len, s, n);
        b->len += n;
    }
}

static void lb_puts(struct lbuf *b, const char *s)
{
    lb_put(b, s, strlen(s));
}

/* Writes into the reserve; only for the closing sequences it was sized for. */
static void lb_force(struct lbuf *b, const char *s)
{
    size_t n = strlen(s);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* --- UTF-8 ------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when s[0] starts no
 * valid sequence (stray continuation, overlong, surrogate, > U+10FFFF,
 * cut short). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    unsigned char lo = 0x80, hi = 0xBF;
    size_t len;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4;
    else
        return 0;
    if (c == 0xE0)
        lo = 0xA0; /* overlong */
    else if (c == 0xED)
        hi = 0x9F; /* surrogates */
    else if (c == 0xF0)
        lo = 0x90; /* overlong */
    else if (c == 0xF4)
        hi = 0x8F; /* > U+10FFFF */
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return len;
}

/* Largest prefix of s (len bytes) of at most limit bytes that does not split
 * a valid UTF-8 sequence (an invalid byte counts as one character). */
static size_t utf8_cut(const char *s, size_t len, size_t limit)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;

    while (i < len) {
        size_t n = utf8_seq(u + i, len - i);
        if (n == 0)
            n = 1;
        if (i + n > limit)
            break;
        i += n;
    }
    return i;
}

/* --- escaping ---------------------------------------------------------- */

static size_t hex_escape(char *out, const char *pre, unsigned v, int digits)
{
    static const char hx[] = "0123456789abcdef";
    size_t n = strlen(pre);

    memcpy(out, pre, n);
    for (int d = digits - 1; d >= 0; d--)
        out[n++] = hx[(v >> (4 * d)) & 0xF];
    return n;
}

static size_t copy_out(char *out, const char *s, size_t n)
{
    memcpy(out, s, n);
    return n;
}

/* Escape the character at s (n >= 1 bytes available) into out (>= 8 bytes);
 * returns the bytes written and sets *adv to the source bytes consumed. */
static size_t esc_char(enum log_format fmt, const unsigned char *s, size_t n, char *out,
                       size_t *adv)
{
    bool json = fmt == LOG_FORMAT_JSON;
    unsigned char c = s[0];
    size_t seq;

    *adv = 1;
    switch (c) {
    case '"':
        return copy_out(out, "\\\"", 2);
    case '\\':
        return copy_out(out, "\\\\", 2);
    case '\n':
        return copy_out(out, "\\n", 2);
    case '\r':
        return copy_out(out, "\\r", 2);
    case '\t':
        return copy_out(out, "\\t", 2);
    default:
        break;
    }
    if (c < 0x20 || c == 0x7F)
        return json ? hex_escape(out, "\\u", c, 4) : hex_escape(out, "\\x", c, 2);
    if (c < 0x80)
        return copy_out(out, (const char *)s, 1);
    seq = utf8_seq(s, n);
    if (seq == 0) /* JSON text must be UTF-8; logfmt keeps the byte */
        return json ? copy_out(out, "\\ufffd", 6) : hex_escape(out, "\\x", c, 2);
    *adv = seq;
    if (json && seq == 3 && c == 0xE2 && s[1] == 0x80 && (s[2] == 0xA8 || s[2] == 0xA9))
        return hex_escape(out, "\\u", s[2] == 0xA8 ? 0x2028u : 0x2029u, 4);
    return copy_out(out, (const char *)s, seq);
}

/* logfmt leaves a value bare only when it is plain printable ASCII. */
static bool text_needs_quote(const char *s, size_t len)
{
    if (len == 0)
        return true;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c >= 0x7F || c == '"' || c == '=' || c == '\\')
            return true;
    }
    return false;
}

/* A string value: escaped, cut to vmax source bytes on a character boundary
 * with `...[N bytes]`, and cut again (`..."`) if the line buffer runs out.
 * Either the value is written well-formed, or (no room for any of it)
 * nothing is written; in both cases b->full tells the caller it ran out. */
static void put_str(struct lbuf *b, enum log_format fmt, const char *s, size_t len, size_t vmax,
                    bool force_quote)
{
    size_t cut = len > vmax ? utf8_cut(s, len, vmax) : len;
    bool quote = force_quote || fmt == LOG_FORMAT_JSON || cut < len || text_needs_quote(s, cut);
    const unsigned char *u = (const unsigned char *)s;
    size_t start = b->len, adv;
    char esc[48];

    lb_put(b, "\"", quote ? 1 : 0);
    for (size_t i = 0; i < cut && !b->full; i += adv) {
        size_t n = esc_char(fmt, u + i, cut - i, esc, &adv);
        lb_put(b, esc, n);
    }
    if (cut < len) {
        int t = snprintf(esc, sizeof(esc), "...[%zu bytes]", len);
        lb_put(b, esc, (size_t)t);
    }
    lb_put(b, "\"", quote ? 1 : 0);
    if (!b->full)
        return;
    if (b->len <= start + (quote ? 1 : 0)) {
        b->len = start; /* nothing of the value fitted */
        return;
    }
    lb_force(b, quote ? "...\"" : "...");
}

/* Keys are trusted literals; still never let one break the syntax. */
static void put_key(struct lbuf *b, enum log_format fmt, const char *key)
{
    if (fmt == LOG_FORMAT_JSON) {
        lb_put(b, ",", 1);
        put_str(b, fmt, key, strlen(key), VALUE_MAX_CEIL, true);
        lb_put(b, ":", 1);
        return;
    }
    lb_put(b, " ", 1);
    for (const char *k = key; *k; k++) {
        unsigned char c = (unsigned char)*k;
        char ch = (c <= ' ' || c >= 0x7F || c == '"' || c == '=' || c == '\\') ? '_' : (char)c;
        lb_put(b, &ch, 1);
    }
    lb_put(b, "=", 1);
}

static void put_num(struct lbuf *b, enum log_format fmt, const struct log_field *f)
{
    char num[64];
    int n = 0;

    switch (f->kind) {
    case LOG_F_INT:
        n = snprintf(num, sizeof(num), "%" PRId64, f->v.i);
        break;
    case LOG_F_UINT:
        n = snprintf(num, sizeof(num), "%" PRIu64, f->v.u);
        break;
    case LOG_F_BOOL:
        n = snprintf(num, sizeof(num), "%s", f->v.b ? "true" : "false");
        break;
    case LOG_F_DOUBLE:
        if (!isfinite(f->v.d)) /* JSON has no NaN/Infinity: say it as a string */
            n = snprintf(num, sizeof(num), fmt == LOG_FORMAT_JSON ? "\"%g\"" : "%g", f->v.d);
        else
            n = snprintf(num, sizeof(num), "%.17g", f->v.d);
        break;
    default:
        break;
    }
    lb_put(b, num, n > 0 ? (size_t)n : 0);
}

/* One `,"key":value` / ` key=value`: a field the buffer cannot take at all
 * (key, or any of its value) is dropped whole; a long string is cut. */
static void put_field(struct lbuf *b, enum log_format fmt, const struct log_field *f, size_t vmax)
{
    size_t mark = b->len, vstart;
    char ebuf[128];
    const char *s;

    put_key(b, fmt, f->key ? f->key : "_");
    if (b->full) {
        b->len = mark;
        return;
    }
    vstart = b->len;
    switch (f->kind) {
    case LOG_F_STR:
        put_str(b, fmt, f->v.s.p ? f->v.s.p : "", f->v.s.p ? f->v.s.len : 0, vmax, false);
        break;
    case LOG_F_CSTR:
        if (f->v.s.p)
            put_str(b, fmt, f->v.s.p, strlen(f->v.s.p), vmax, false);
        else
            lb_puts(b, "null");
        break;
    case LOG_F_ERRNO:
        s = strerror_r((int)(f->v.i < 0 ? -f->v.i : f->v.i), ebuf, sizeof(ebuf));
        put_str(b, fmt, s, strlen(s), vmax, false);
        break;
    default:
        put_num(b, fmt, f);
        break;
    }
    if (b->full && b->len == vstart)
        b->len = mark;
}

/* --- timestamps -------------------------------------------------------- */

/* Days since 1970-01-01 to a civil date (proleptic Gregorian); H. Hinnant's
 * algorithm, so no gmtime_r and its time-zone lock on the logging path. */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;

    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static size_t format_ts(char *out, size_t cap, int64_t ns)
{
    /* Before 1970 is not worth a correct answer: clamp to the epoch. */
    int64_t ms = ns < 0 ? 0 : ns / 1000000;
    int64_t secs = ms / 1000, sod = secs % 86400, y;
    unsigned mo, d;
    int n;

    civil_from_days(secs / 86400, &y, &mo, &d);
    n = snprintf(out, cap, "%04" PRId64 "-%02u-%02uT%02u:%02u:%02u.%03uZ", y, mo, d,
                 (unsigned)(sod / 3600), (unsigned)(sod / 60 % 60), (unsigned)(sod % 60),
                 (unsigned)(ms % 1000));
    return n < 0 ? 0 : (size_t)n;
}

/* --- rendering --------------------------------------------------------- */

size_t log_render(char *buf, size_t cap, enum log_format fmt, int64_t realtime_ns,
                  enum log_level lvl, const char *msg, const struct log_field *f, size_t n)
{
    struct lbuf b = {.p = buf};
    size_t vmax = atomic_load_explicit(&lg.value_max, memory_order_relaxed);
    bool json = fmt == LOG_FORMAT_JSON;
    char ts[64];
    size_t tn = format_ts(ts, sizeof(ts), realtime_ns);

    if (cap > LOG_LINE_MAX)
        cap = LOG_LINE_MAX;
    if (cap < 128)
        return 0;
    b.lim = cap - LB_RESERVE;
    lb_puts(&b, json ? "{\"ts\":\"" : "ts=");
    lb_put(&b, ts, tn);
    lb_puts(&b, json ? "\",\"level\":\"" : " level=");
    lb_puts(&b, log_level_name(lvl));
    lb_puts(&b, json ? "\",\"msg\":" : " msg=");
    /* msg is always quoted in logfmt, so a reader can find the fields. */
    put_str(&b, fmt, msg ? msg : "", msg ? strlen(msg) : 0, LOG_MSG_MAX, true);
    if (b.full && b.p[b.len - 1] != '"')
        lb_force(&b, "\"\""); /* not even the start of msg fitted */
    for (size_t i = 0; i < n && f[i].kind != LOG_F_END && !b.full; i++)
        put_field(&b, fmt, &f[i], vmax);
    if (b.full)
        lb_force(&b, json ? ",\"line_truncated\":true" : " line_truncated=true");
    lb_force(&b, json ? "}\n" : "\n");
    return b.len;
}

static void write_line(const char *p, size_t len)
{
    int fd = atomic_load_explicit(&lg.fd, memory_order_relaxed);

    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w >= 0) {
            p += w;
            len -= (size_t)w;
        } else if (errno != EINTR) {
            atomic_fetch_add_explicit(&lg.dropped, 1, memory_order_relaxed);
            return;
        }
    }
}

static void emit(enum log_level lvl, const char *msg, const struct log_field *f, size_t n)
{
    char line[LOG_LINE_MAX];
    int64_t (*now)(void) = atomic_load_explicit(&lg.realtime, memory_order_relaxed);
    enum log_format fmt = (enum log_format)atomic_load_explicit(&lg.format, memory_order_relaxed);
    size_t len = log_render(line, sizeof(line), fmt, now(), lvl, msg, f, n);

    write_line(line, len);
}

void log_fields(enum log_level lvl, const char *msg, const struct log_field *f, size_t n)
{
    int saved = errno;

    emit(lvl, msg, f, n);
    errno = saved;
}

void log_msgf(enum log_level lvl, const char *fmt, ...)
{
    char msg[LOG_MSG_MAX];
    int saved = errno;
    va_list ap;
    int n;

    if (!log_enabled(lvl))
        return;
    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof(msg)) /* cut: do not leave half a character */
        msg[utf8_cut(msg, sizeof(msg) - 1, sizeof(msg) - 1)] = '\0';
    emit(lvl, msg, NULL, 0);
    errno = saved;
}

/* --- rate limiting ----------------------------------------------------- */

static void write_summary(struct log_ratelimit *rl, enum log_level lvl, uint64_t k)
{
    char msg[64];
    struct log_field f[2] = {LOG_CSTR("key", rl->key), LOG_UINT("suppressed", k)};

    snprintf(msg, sizeof(msg), "suppressed %" PRIu64 " messages", k);
    emit(lvl, msg, f, 2);
}

/* Link a site into the registry once, for log_ratelimit_flush. The release
 * CAS publishes rl->next (and the site's constant fields); pairs with the
 * acquire load of rl_head in flush. */
static void register_site(struct log_ratelimit *rl)
{
    struct log_ratelimit *head;

    if (atomic_exchange_explicit(&rl->registered, 1, memory_order_relaxed))
        return;
    head = atomic_load_explicit(&lg.rl_head, memory_order_relaxed);
    do {
        atomic_store_explicit(&rl->next, head, memory_order_relaxed);
    } while (!atomic_compare_exchange_weak_explicit(&lg.rl_head, &head, rl, memory_order_release,
                                                    memory_order_relaxed));
}

bool log_ratelimit_allow(struct log_ratelimit *rl, enum log_level lvl)
{
    int64_t (*mono)(void) = atomic_load_explicit(&lg.monotonic, memory_order_relaxed);
    int64_t now = mono();
    /* tat is a self-contained counter: relaxed CAS is enough, nothing else
     * is published through it. */
    int64_t tat = atomic_load_explicit(&rl->tat, memory_order_relaxed);
    uint64_t k;

    for (;;) {
        int64_t base = tat > now ? tat : now;
        if (base - now > rl->tolerance_ns) {
            atomic_store_explicit(&rl->level, (int)lvl, memory_order_relaxed);
            atomic_fetch_add_explicit(&rl->suppressed, 1, memory_order_relaxed);
            register_site(rl);
            return false;
        }
        if (atomic_compare_exchange_weak_explicit(&rl->tat, &tat, base + rl->interval_ns,
                                                  memory_order_relaxed, memory_order_relaxed))
            break;
    }
    k = atomic_exchange_explicit(&rl->suppressed, 0, memory_order_relaxed);
    if (k > 0) {
        int saved = errno;
        write_summary(rl, lvl, k);
        errno = saved;
    }
    return true;
}

void log_ratelimit_flush(void)
{
    int saved = errno;

    for (struct log_ratelimit *rl = atomic_load_explicit(&lg.rl_head, memory_order_acquire); rl;
         rl = atomic_load_explicit(&rl->next, memory_order_relaxed)) {
        uint64_t k = atomic_exchange_explicit(&rl->suppressed, 0, memory_order_relaxed);
        enum log_level lvl = (enum log_level)atomic_load_explicit(&rl->level, memory_order_relaxed);
        if (k > 0 && log_enabled(lvl))
            write_summary(rl, lvl, k);
    }
    errno = saved;
}
