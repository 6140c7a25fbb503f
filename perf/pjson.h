/*
 * pjson.h - the small JSON framing and member lookup shared by mockd and
 * loadgen (header-only).
 *
 * Deliberately separate from the broker's validating scanner (broker/frame.c):
 * these tools judge the broker, so they must not share its code. This checks
 * structure only: it frames one object or array per message (depth, string
 * and escape state kept across reads) and finds top-level members' raw value
 * spans; it does not validate JSON.
 */
#ifndef PERF_PJSON_H
#define PERF_PJSON_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

/* Completeness scanner state, kept across reads. */
struct pjson_scan {
    size_t pos; /* bytes of the buffer already scanned */
    unsigned depth;
    bool started, in_str, esc;
};

/* A run of bytes inside someone else's buffer; {NULL, 0} = absent. */
struct pjson_span {
    const char *p;
    size_t n;
};

static inline bool pjson_is_ws(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* Whether a byte range holds anything but whitespace, i.e. part of a request. */
static inline bool pjson_has_data(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!pjson_is_ws(p[i]))
            return true;
    return false;
}

/* Index of the first '"' or '\\' in s[i, n), or n. Long strings (huge
 * answers, big params) are most of the bytes, so they are crossed with memchr;
 * *qcache keeps the next quote's index (SIZE_MAX: unknown) so a string full of
 * escapes is still crossed in linear time. */
static inline size_t pjson_str_special(const char *s, size_t n, size_t i, size_t *qcache)
{
    if (*qcache == SIZE_MAX || *qcache < i) {
        const char *q = memchr(s + i, '"', n - i);
        *qcache = q ? (size_t)(q - s) : n;
    }
    const char *b = memchr(s + i, '\\', *qcache - i);
    return b ? (size_t)(b - s) : *qcache;
}

/* Advance the completeness scan over buf[s->pos, len). Returns one past the
 * last byte of the first complete top-level value, 0 if more bytes are needed,
 * or -EPROTO if the bytes cannot start a JSON object or array (framing is lost
 * for good then: there is no delimiter to resynchronise on). */
static inline ssize_t pjson_scan(struct pjson_scan *s, const char *buf, size_t len)
{
    size_t qcache = SIZE_MAX;
    for (size_t i = s->pos; i < len; i++) {
        char ch = buf[i];
        if (s->in_str) {
            if (s->esc) {
                s->esc = false;
                continue;
            }
            i = pjson_str_special(buf, len, i, &qcache);
            if (i == len)
                break;
            if (buf[i] == '\\')
                s->esc = true;
            else
                s->in_str = false;
            continue;
        }
        if (!s->started) {
            if (pjson_is_ws(ch))
                continue;
            if (ch != '{' && ch != '[')
                return -EPROTO;
            s->started = true;
            s->depth = 1;
            continue;
        }
        if (ch == '"') {
            s->in_str = true;
        } else if (ch == '{' || ch == '[') {
            s->depth++;
        } else if (ch == '}' || ch == ']') {
            if (--s->depth == 0) {
                s->pos = i + 1;
                return (ssize_t)(i + 1);
            }
        }
    }
    s->pos = len;
    return 0;
}

static inline size_t pjson_json_ws(const char *s, size_t n, size_t i)
{
    while (i < n && pjson_is_ws(s[i]))
        i++;
    return i;
}

/* One past the string starting at s[i] == '"', or 0 if it is unterminated. */
static inline size_t pjson_json_skip_str(const char *s, size_t n, size_t i)
{
    size_t qcache = SIZE_MAX;
    for (i++; i < n;) {
        i = pjson_str_special(s, n, i, &qcache);
        if (i == n)
            return 0;
        if (s[i] == '"')
            return i + 1;
        i += 2; /* a backslash and the byte it escapes, whatever it is */
    }
    return 0;
}

/* One past the value starting at s[i], or 0 if malformed or truncated. Only
 * structure is checked: this frames values, it does not validate them. */
static inline size_t pjson_json_skip_value(const char *s, size_t n, size_t i)
{
    if (i >= n)
        return 0;
    if (s[i] == '"')
        return pjson_json_skip_str(s, n, i);
    if (s[i] == '{' || s[i] == '[') {
        unsigned depth = 0;
        while (i < n) {
            char ch = s[i];
            if (ch == '"') {
                i = pjson_json_skip_str(s, n, i);
                if (i == 0)
                    return 0;
                continue;
            }
            if (ch == '{' || ch == '[')
                depth++;
            else if ((ch == '}' || ch == ']') && --depth == 0)
                return i + 1;
            i++;
        }
        return 0;
    }
    size_t j = i;
    while (j < n && !pjson_is_ws(s[j]) && s[j] != ',' && s[j] != '}' && s[j] != ']')
        j++;
    return j > i ? j : 0;
}

/* Walk the members of the object in s[0, n) once and record the value spans
 * of `keys` (raw bytes, quotes included for strings; {NULL, 0} if absent).
 * Keys are compared byte for byte, escapes are not decoded. */
static inline bool pjson_json_members(const char *s, size_t n, const char *const *keys,
                              struct pjson_span *vals, size_t nkeys)
{
    for (size_t k = 0; k < nkeys; k++)
        vals[k] = (struct pjson_span){NULL, 0};
    size_t i = pjson_json_ws(s, n, 0);
    if (i >= n || s[i] != '{')
        return false;
    i = pjson_json_ws(s, n, i + 1);
    if (i < n && s[i] == '}')
        return true;
    for (;;) {
        if (i >= n || s[i] != '"')
            return false;
        size_t kend = pjson_json_skip_str(s, n, i);
        if (kend == 0)
            return false;
        size_t colon = pjson_json_ws(s, n, kend);
        if (colon >= n || s[colon] != ':')
            return false;
        size_t v = pjson_json_ws(s, n, colon + 1);
        size_t vend = pjson_json_skip_value(s, n, v);
        if (vend == 0)
            return false;
        size_t klen = kend - i - 2;
        for (size_t k = 0; k < nkeys; k++)
            if (!vals[k].p && strlen(keys[k]) == klen && memcmp(s + i + 1, keys[k], klen) == 0)
                vals[k] = (struct pjson_span){s + v, vend - v};
        i = pjson_json_ws(s, n, vend);
        if (i < n && s[i] == ',') {
            i = pjson_json_ws(s, n, i + 1);
            continue;
        }
        return i < n && s[i] == '}';
    }
}

#endif /* PERF_PJSON_H */
