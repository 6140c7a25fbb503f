/*
 * log.h - structured, rate-limited, injection-safe logging.
 *
 * Design: a line is a fixed set of header fields (ts, level, msg) followed by
 * typed key/value fields, rendered either as one JSON object per line or as
 * logfmt (`ts=... level=info msg="..." k=v`). Values are never spliced into a
 * format string: callers pass typed fields (LOG_STR, LOG_INT, ...) and the
 * renderer escapes every string (JSON escaping, or logfmt quoting with \xNN
 * for control and invalid UTF-8 bytes). String values are untrusted by
 * default: they are cut to `value_max` bytes (default 256) on a UTF-8
 * boundary and marked `...[N bytes]` with their original length.
 *
 * The process logger - the one global: logging is called from every module,
 * including helpers that have no broker context, and its whole state is a
 * handful of atomics (threshold, format, fd, truncation limit, clocks) set at
 * start-up and on reload. Threading a `struct logger *` through every
 * signature would buy nothing but noise, so the logger is process-wide; every
 * field is atomic so a reload may change the level or format while workers
 * log. Option values still come from the config struct (main applies them).
 *
 * Invariants:
 *   - One line = one write(2) of at most LOG_LINE_MAX (= PIPE_BUF) bytes, so
 *     lines from concurrent threads never interleave on a pipe, a terminal or
 *     a regular file. A line that would be longer is cut and ends with
 *     `"line_truncated":true` (JSON stays valid).
 *   - No allocation on any path: lines are built in a stack buffer.
 *   - Rate limiting is a GCRA token bucket per call site (or per shared
 *     `struct log_ratelimit`): one CAS per admitted line, lock-free. When a
 *     suppressed site admits a line again, a summary line
 *     `suppressed K messages` (with key= and suppressed=) precedes it;
 *     log_ratelimit_flush() reports sites that went quiet.
 *
 * Known limits: a blocking stderr that nobody drains blocks the logging
 * thread (as any stderr logger); EAGAIN on a non-blocking fd drops the line
 * and counts it (log_dropped). Keys are trusted literals (escaped anyway).
 *
 * Thread safety: everything here is safe from any thread, including the
 * log_set_* setters (each setting is an independent atomic; a line rendered
 * during a change may use the old or the new value of each).
 */
#ifndef BROKER_LOG_H
#define BROKER_LOG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Level names "debug", "info", "warn", "error" (log_level_name). Ordered. */
enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };
/* Format names "json", "text" (log_format_name). */
enum log_format { LOG_FORMAT_JSON, LOG_FORMAT_TEXT };

#define LOG_LINE_MAX          4096 /* = PIPE_BUF: one atomic write per line */
#define LOG_VALUE_MAX_DEFAULT 256  /* bytes of an untrusted string value kept */
#define LOG_MSG_MAX           1024 /* bytes of a log_msgf message kept */
#define LOG_RL_RATE_DEFAULT   10   /* LOG_RATELIMITED: lines per second ... */
#define LOG_RL_BURST_DEFAULT  20   /* ... with this burst */

enum log_field_kind {
    LOG_F_END,  /* terminator (optional: the macros count the fields) */
    LOG_F_STR,  /* untrusted bytes (p, len): escaped and truncated */
    LOG_F_CSTR, /* untrusted NUL-terminated string (NULL renders as null) */
    LOG_F_INT,  /* int64_t */
    LOG_F_UINT, /* uint64_t */
    LOG_F_DOUBLE,
    LOG_F_BOOL,
    LOG_F_ERRNO, /* errno value (sign ignored), rendered as strerror text */
};

struct log_field {
    const char *key;
    enum log_field_kind kind;
    union {
        struct {
            const char *p;
            size_t len;
        } s;
        int64_t i;
        uint64_t u;
        double d;
        bool b;
    } v;
};

#define LOG_STR(k, p_, n_) ((struct log_field){.key = (k), .kind = LOG_F_STR, .v.s = {(p_), (n_)}})
#define LOG_CSTR(k, p_)    ((struct log_field){.key = (k), .kind = LOG_F_CSTR, .v.s = {(p_), 0}})
#define LOG_INT(k, x)      ((struct log_field){.key = (k), .kind = LOG_F_INT, .v.i = (int64_t)(x)})
#define LOG_UINT(k, x)     ((struct log_field){.key = (k), .kind = LOG_F_UINT, .v.u = (uint64_t)(x)})
#define LOG_DBL(k, x)      ((struct log_field){.key = (k), .kind = LOG_F_DOUBLE, .v.d = (double)(x)})
#define LOG_BOOL(k, x)     ((struct log_field){.key = (k), .kind = LOG_F_BOOL, .v.b = (x)})
#define LOG_ERRNO(e)       ((struct log_field){.key = "error", .kind = LOG_F_ERRNO, .v.i = (int64_t)(e)})
#define LOG_END            ((struct log_field){.key = NULL, .kind = LOG_F_END})

/* Lines below this level are discarded. Exposed only for log_enabled();
 * change it with log_set_level. */
extern _Atomic int log_threshold;

static inline bool log_enabled(enum log_level lvl)
{
    /* Relaxed: an independent setting, no data is published through it. */
    return (int)lvl >= atomic_load_explicit(&log_threshold, memory_order_relaxed);
}

/* --- configuration (any thread, any time) ------------------------------ */
void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
void log_set_format(enum log_format fmt);
/* Output fd (default 2). The logger never closes it. */
void log_set_fd(int fd);
/* Bytes kept of each untrusted string value; clamped to [16, 2048]. */
void log_set_value_max(size_t n);
/* Clocks in ns: realtime for `ts`, monotonic for rate limits. NULL restores
 * the system clock (CLOCK_REALTIME / CLOCK_MONOTONIC). For tests. */
void log_set_clock(int64_t (*realtime_ns)(void), int64_t (*monotonic_ns)(void));

const char *log_level_name(enum log_level lvl);
const char *log_format_name(enum log_format fmt);
/* Lines lost to a failed write(2) (EAGAIN, EPIPE, ...) since start. */
uint64_t log_dropped(void);

/* --- writing ----------------------------------------------------------- */

/* Render and write one line with n fields (stops early at a LOG_F_END).
 * Does not check the level; use the macros. */
void log_fields(enum log_level lvl, const char *msg, const struct log_field *f, size_t n);

/* log_write(LOG_LEVEL_WARN, "bad request", LOG_STR("peer", p, len), LOG_INT("fd", fd));
 * At least one field argument is required (pass LOG_END for none). The
 * arguments are not evaluated when the level is disabled. */
#define log_write(lvl, msg, ...)                                                                   \
    do {                                                                                           \
        enum log_level log_lvl_m_ = (lvl);                                                         \
        if (log_enabled(log_lvl_m_))                                                               \
            log_fields(log_lvl_m_, (msg), (const struct log_field[]){__VA_ARGS__},                 \
                       sizeof((const struct log_field[]){__VA_ARGS__}) /                           \
                           sizeof(struct log_field));                                              \
    } while (0)

/* printf-style message for TRUSTED format strings only (never a format that
 * came from outside). The result is cut to LOG_MSG_MAX bytes and escaped like
 * any string, so untrusted %s arguments cannot break the line, but they are
 * not truncated to value_max: prefer log_write + LOG_STR for those. */
void log_msgf(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Render one line into buf (cap >= 128, at most LOG_LINE_MAX used) without
 * writing it; returns its length including the final '\n'. For tests and for
 * callers that ship lines elsewhere. Thread-safe. */
size_t log_render(char *buf, size_t cap, enum log_format fmt, int64_t realtime_ns,
                  enum log_level lvl, const char *msg, const struct log_field *f, size_t n);

/* --- rate limiting ----------------------------------------------------- */

/* A token bucket in GCRA form: `tat` is the theoretical arrival time of the
 * next conforming line; a line at `now` conforms when max(tat, now) - now <=
 * tolerance, and then moves tat forward by one interval. Static storage only
 * (sites are linked into a registry that is never unlinked). */
struct log_ratelimit {
    const char *key;      /* named in the summary line */
    int64_t interval_ns;  /* 1 s / rate */
    int64_t tolerance_ns; /* interval * (burst - 1) */
    _Atomic int64_t tat;
    _Atomic uint64_t suppressed;
    _Atomic int level; /* level of the latest suppressed line */
    _Atomic int registered;
    struct log_ratelimit *_Atomic next;
};

/* rate >= 1 lines per second, burst >= 1; key a string literal. */
#define LOG_RATELIMIT_INIT(key_, rate_, burst_)                                                    \
    {                                                                                              \
        .key = (key_), .interval_ns = 1000000000LL / (rate_),                                      \
        .tolerance_ns = (1000000000LL / (rate_)) * ((burst_)-1)                                    \
    }

/* True when a line at lvl may be written now. When it may and lines were
 * suppressed since the last admitted one, writes the summary line first. */
bool log_ratelimit_allow(struct log_ratelimit *rl, enum log_level lvl);

/* Write a summary line for every site that suppressed lines since it last
 * wrote one (call it from a periodic timer so a flood that stopped is still
 * reported). */
void log_ratelimit_flush(void);

/* Rate-limited log_write with a bucket shared by every caller of `rl`. */
#define LOG_RATELIMITED_BY(rl, lvl, msg, ...)                                                      \
    do {                                                                                           \
        enum log_level log_lvl_m_ = (lvl);                                                         \
        if (log_enabled(log_lvl_m_) && log_ratelimit_allow((rl), log_lvl_m_))                      \
            log_fields(log_lvl_m_, (msg), (const struct log_field[]){__VA_ARGS__},                 \
                       sizeof((const struct log_field[]){__VA_ARGS__}) /                           \
                           sizeof(struct log_field));                                              \
    } while (0)

/* Rate-limited log_write with its own bucket at this call site. */
#define LOG_RATELIMITED_RB(key, rate, burst, lvl, msg, ...)                                        \
    do {                                                                                           \
        static struct log_ratelimit log_rl_m_ = LOG_RATELIMIT_INIT(key, rate, burst);              \
        LOG_RATELIMITED_BY(&log_rl_m_, lvl, msg, __VA_ARGS__);                                     \
    } while (0)

/* LOG_RATELIMITED("bad_request", LOG_LEVEL_WARN, "bad request", LOG_STR("line", p, n));
 * LOG_RL_RATE_DEFAULT lines/s with a burst of LOG_RL_BURST_DEFAULT. */
#define LOG_RATELIMITED(key, lvl, msg, ...)                                                        \
    LOG_RATELIMITED_RB(key, LOG_RL_RATE_DEFAULT, LOG_RL_BURST_DEFAULT, lvl, msg, __VA_ARGS__)

#endif /* BROKER_LOG_H */
