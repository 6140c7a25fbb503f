/*
 * proto_string.c - JSON string text: a string token decoded to UTF-8
 * (proto_json_string_decode) and untrusted text written as a safe JSON
 * string (proto_write_json_string); see proto.h for the contracts.
 *
 * Untrusted text (backend messages) is decoded to code points, sanitised
 * and re-encoded, which is the only way to guarantee valid UTF-8 and a cut
 * on a character boundary: invalid bytes become U+FFFD one for one, and
 * controls, line separators and bidi overrides become spaces, so a message
 * cannot forge log lines or reorder text on the client's side. The writer
 * measures first and then copies, so it reserves once and the "..." of a
 * cut always fits.
 */
#include "proto.h"
#include "proto_priv.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

/* Strictly decode one UTF-8 sequence at *pp (< e); -1 if invalid, and then
 * *pp is left alone. Same rules as the scanner. */
int32_t proto_utf8_decode(const uint8_t **pp, const uint8_t *e)
{
    const uint8_t *p = *pp;
    unsigned c = p[0], need, lo = 0x80, hi = 0xBF;
    uint32_t cp;

    if (c < 0x80) {
        *pp = p + 1;
        return (int32_t)c;
    }
    if (c < 0xC2) {
        return -1;
    } else if (c < 0xE0) {
        need = 1;
        cp = c & 0x1F;
    } else if (c < 0xF0) {
        need = 2;
        cp = c & 0x0F;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c < 0xF5) {
        need = 3;
        cp = c & 0x07;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
        return -1;
    }
    if ((size_t)(e - p) <= need)
        return -1;
    for (unsigned i = 1; i <= need; i++) {
        unsigned d = p[i];
        if (d < lo || d > hi)
            return -1;
        cp = cp << 6 | (d & 0x3F);
        lo = 0x80;
        hi = 0xBF;
    }
    *pp = p + need + 1;
    return (int32_t)cp;
}

static bool hex4(const uint8_t *p, const uint8_t *e, uint32_t *out)
{
    uint32_t v = 0;

    if (e - p < 4)
        return false;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c - '0' < 10u)
            d = c - '0';
        else if ((c | 0x20u) - 'a' < 6u)
            d = (c | 0x20u) - 'a' + 10;
        else
            return false;
        v = v << 4 | d;
    }
    *out = v;
    return true;
}

/* Decode one escape of a JSON string's raw contents at *pp (== '\'). A
 * malformed escape (not possible after the scanner, handled anyway) yields
 * the backslash itself; an unpaired surrogate yields U+FFFD. */
static uint32_t json_unescape(const uint8_t **pp, const uint8_t *e)
{
    const uint8_t *p = *pp;
    uint32_t u, lo;

    *pp = p + 2;
    if (e - p < 2)
        goto literal;
    switch (p[1]) {
    case '"':
    case '\\':
    case '/':
        return p[1];
    case 'b':
        return '\b';
    case 'f':
        return '\f';
    case 'n':
        return '\n';
    case 'r':
        return '\r';
    case 't':
        return '\t';
    case 'u':
        if (!hex4(p + 2, e, &u))
            goto literal;
        *pp = p + 6;
        if (u >= 0xD800 && u <= 0xDBFF && e - p >= 12 && p[6] == '\\' && p[7] == 'u' &&
            hex4(p + 8, e, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
            *pp = p + 12;
            return 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
        }
        return (u >= 0xD800 && u <= 0xDFFF) ? 0xFFFD : u;
    default:
        break;
    }
literal:
    *pp = p + 1;
    return '\\';
}

/* Next code point of untrusted text, already made safe to show. */
static uint32_t next_safe_cp(const uint8_t **pp, const uint8_t *e, unsigned flags)
{
    uint32_t cp;
    int32_t d;

    if ((flags & PROTO_STR_JSON) && **pp == '\\') {
        cp = json_unescape(pp, e);
    } else {
        d = proto_utf8_decode(pp, e);
        if (d < 0) {
            (*pp)++;
            return 0xFFFD; /* one replacement per bad byte */
        }
        cp = (uint32_t)d;
    }
    /* Controls could forge log lines or terminal escapes on the client's
     * side; line separators break JavaScript; bidi overrides reorder text. */
    if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || (cp >= 0x2028 && cp <= 0x202E) ||
        (cp >= 0x2066 && cp <= 0x2069))
        return ' ';
    return cp;
}

static inline size_t utf8_len(uint32_t cp)
{
    return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

static inline void put_cp_escaped(struct proto_buf *b, uint32_t cp)
{
    char *o = b->data + b->len;

    if (cp == '"' || cp == '\\') {
        o[0] = '\\';
        o[1] = (char)cp;
        b->len += 2;
    } else if (cp < 0x80) {
        o[0] = (char)cp;
        b->len += 1;
    } else if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        b->len += 2;
    } else if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        b->len += 3;
    } else {
        o[0] = (char)(0xF0 | cp >> 18);
        o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
        o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[3] = (char)(0x80 | (cp & 0x3F));
        b->len += 4;
    }
}

size_t proto_json_string_decode(const char *tok, size_t len, char *out, size_t cap)
{
    const uint8_t *p = (const uint8_t *)tok + 1, *e = (const uint8_t *)tok + len - 1;
    size_t n = 0;
    if (len < 2)
        return 0;
    while (p < e) {
        uint32_t cp;
        if (*p == '\\') {
            cp = json_unescape(&p, e);
        } else {
            const uint8_t *at = p;
            int32_t c = proto_utf8_decode(&p, e);
            if (c < 0)
                p = at + 1; /* not possible after the scanner; one byte, replaced */
            cp = c < 0 ? 0xFFFD : (uint32_t)c;
        }
        size_t k = utf8_len(cp);
        if (n + k > cap)
            return SIZE_MAX;
        if (k == 1) {
            out[n] = (char)cp;
        } else if (k == 2) {
            out[n] = (char)(0xC0 | cp >> 6);
            out[n + 1] = (char)(0x80 | (cp & 0x3F));
        } else if (k == 3) {
            out[n] = (char)(0xE0 | cp >> 12);
            out[n + 1] = (char)(0x80 | (cp >> 6 & 0x3F));
            out[n + 2] = (char)(0x80 | (cp & 0x3F));
        } else {
            out[n] = (char)(0xF0 | cp >> 18);
            out[n + 1] = (char)(0x80 | (cp >> 12 & 0x3F));
            out[n + 2] = (char)(0x80 | (cp >> 6 & 0x3F));
            out[n + 3] = (char)(0x80 | (cp & 0x3F));
        }
        n += k;
    }
    return n;
}

int proto_write_json_string(struct proto_buf *b, const char *s, size_t len, size_t max_bytes,
                            unsigned flags)
{
    const uint8_t *const e = (const uint8_t *)s + len;
    const uint8_t *p = (const uint8_t *)s;
    size_t total = 0, budget, ellipsis = 0, out = 0;
    bool cut = false;

    /* Pass 1 (stops at the limit): does the sanitised text fit? Knowing it
     * up front lets the cut leave room for "..." on a character boundary. */
    while (p < e) {
        total += utf8_len(next_safe_cp(&p, e, flags));
        if (total > max_bytes) {
            cut = true;
            break;
        }
    }
    if (cut && max_bytes >= 3)
        ellipsis = 3;
    budget = cut ? max_bytes - ellipsis : total;
    /* escaping at most doubles the text ('"' and '\' only) */
    if (proto_buf_reserve_try(b, 2 * budget + ellipsis + 2) < 0)
        return -ENOMEM;

    PUT_LIT(b, "\"");
    for (p = (const uint8_t *)s; p < e;) {
        uint32_t cp = next_safe_cp(&p, e, flags);
        size_t n = utf8_len(cp);
        if (out + n > budget)
            break;
        put_cp_escaped(b, cp);
        out += n;
    }
    if (ellipsis)
        PUT_LIT(b, "...");
    PUT_LIT(b, "\"");
    return 0;
}

