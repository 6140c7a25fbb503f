/*
 * frame.c - the incremental JSON scanner (see frame.h for the contract).
 *
 * Principle: frame_feed() is one loop over the chunk with a switch on the
 * state, kept in a single function on purpose so the cursor, the state and
 * the depth live in registers; everything else sits in the struct and is
 * touched only on the rarer transitions. The common bytes have fast paths:
 * runs of plain string bytes are skipped 16 at a time (SSE2, one signed
 * compare catches both < 0x20 and >= 0x80), digits and whitespace in small
 * loops. A byte that ends a number is not consumed by the number; the loop
 * looks at it again in the next state, which is a one-byte lookahead, not a
 * re-scan.
 *
 * Invariants:
 *   - `depth` counts open containers; bit d of `stack` says whether the
 *     container at depth d+1 is an object (1) or an array (0).
 *   - `key_track` is set only while a depth-1 key is being read and it may
 *     still match a watched key: its first `key_pos` bytes are in `key_buf`
 *     (copied, since a key may straddle feeds), compared at the closing
 *     quote - length first, so most keys cost one compare.
 *   - `cap_cur` >= 0 only between a matched depth-1 key's closing quote and
 *     the end of its value; depth == 1 marks the value's start and end.
 *   - On error, `err_offset` is the stream offset of the offending byte (for
 *     "input ended", the end of input), so the same document split anywhere
 *     fails at the same offset.
 */
#include "frame.h"

#include <errno.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define LIKELY(x)   __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

enum frame_state {
    ST_TOP,       /* before the top-level value */
    ST_VALUE,     /* a value must come (after ':' or an array's ',') */
    ST_ARR_FIRST, /* after '[': a value or ']' */
    ST_OBJ_FIRST, /* after '{': a key or '}' */
    ST_KEY,       /* after an object's ',': a key */
    ST_COLON,     /* after a key: ':' */
    ST_AFTER,     /* after a value inside a container: ',' or the closer */
    ST_STR,       /* inside a string (key or value, see in_key) */
    ST_ESC,       /* after a backslash */
    ST_HEX,       /* inside \uXXXX, `aux` digits left */
    ST_UTF8,      /* inside a multi-byte UTF-8 sequence */
    ST_LIT,       /* inside true/false/null, `aux` = next position */
    ST_NUM_MINUS, /* after '-' */
    ST_NUM_ZERO,  /* a leading 0 (complete) */
    ST_NUM_INT,   /* integer digits (complete) */
    ST_NUM_DOT,   /* after '.' */
    ST_NUM_FRAC,  /* fraction digits (complete) */
    ST_NUM_E,     /* after 'e' */
    ST_NUM_ESIGN, /* after the exponent's sign */
    ST_NUM_EXP,   /* exponent digits (complete) */
    ST_DONE,      /* states from here on are final */
    ST_ERROR,
};

static const char *const lit_text[] = {
    [FRAME_KIND_TRUE] = "true",
    [FRAME_KIND_FALSE] = "false",
    [FRAME_KIND_NULL] = "null",
};

static inline bool is_ws(unsigned c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

static inline bool is_digit(unsigned c)
{
    return c - '0' < 10u;
}

static inline bool is_hex(unsigned c)
{
    return c - '0' < 10u || (c | 0x20u) - 'a' < 6u;
}

/* A string byte that needs no attention: printable ASCII but '"' and '\'. */
static inline bool is_plain(unsigned c)
{
    return c - 0x20u < 0x60u && c != '"' && c != '\\';
}

static inline const uint8_t *skip_ws(const uint8_t *p, const uint8_t *e)
{
    while (p < e && is_ws(*p))
        p++;
    return p;
}

static inline const uint8_t *skip_digits(const uint8_t *p, const uint8_t *e)
{
    while (p < e && is_digit(*p))
        p++;
    return p;
}

/* First byte in [p, e) that is not a plain string byte, or e. */
static inline const uint8_t *skip_plain(const uint8_t *p, const uint8_t *e)
{
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"');
    const __m128i bslash = _mm_set1_epi8('\\');
    const __m128i space = _mm_set1_epi8(0x20);
    while (e - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        /* signed compare: bytes >= 0x80 are negative, so "< 0x20" flags
         * control characters and every non-ASCII byte at once */
        __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                                 _mm_cmplt_epi8(v, space));
        unsigned mask = (unsigned)_mm_movemask_epi8(m);
        if (mask)
            return p + __builtin_ctz(mask);
        p += 16;
    }
#endif
    while (p < e && is_plain(*p))
        p++;
    return p;
}

static inline enum frame_kind value_kind(unsigned c)
{
    switch (c) {
    case '{':
        return FRAME_KIND_OBJECT;
    case '[':
        return FRAME_KIND_ARRAY;
    case '"':
        return FRAME_KIND_STRING;
    case 't':
        return FRAME_KIND_TRUE;
    case 'f':
        return FRAME_KIND_FALSE;
    case 'n':
        return FRAME_KIND_NULL;
    default:
        return (c == '-' || is_digit(c)) ? FRAME_KIND_NUMBER : FRAME_KIND_NONE;
    }
}

static inline bool top_is_object(const struct frame_scanner *s, uint32_t depth)
{
    uint32_t d = depth - 1;
    return (s->stack[d >> 6] >> (d & 63)) & 1u;
}

/* Set up the continuation checks for UTF-8 lead byte c (>= 0x80); false if
 * c cannot start a sequence. The tight first-continuation ranges exclude
 * overlongs (E0, F0), UTF-16 surrogates (ED) and code points > U+10FFFF (F4). */
static bool utf8_lead(struct frame_scanner *s, unsigned c)
{
    s->u8_lo = 0x80;
    s->u8_hi = 0xBF;
    if (c < 0xC2) {
        return false; /* continuation byte or overlong C0/C1 */
    } else if (c < 0xE0) {
        s->u8_need = 1;
    } else if (c < 0xF0) {
        s->u8_need = 2;
        if (c == 0xE0)
            s->u8_lo = 0xA0;
        else if (c == 0xED)
            s->u8_hi = 0x9F;
    } else if (c < 0xF5) {
        s->u8_need = 3;
        if (c == 0xF0)
            s->u8_lo = 0x90;
        else if (c == 0xF4)
            s->u8_hi = 0x8F;
    } else {
        return false;
    }
    return true;
}

static inline bool bytes_eq(const char *a, const char *b, size_t n)
{
    /* keys are a few bytes: a loop beats a call into memcmp */
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

/* Collect the depth-1 key being read; a key longer than any watched one
 * cannot match, so stop collecting. */
static void key_collect(struct frame_scanner *s, const uint8_t *run, size_t n)
{
    if (n > (size_t)(FRAME_KEY_MAX - s->key_pos)) {
        s->key_track = false;
        return;
    }
    for (size_t i = 0; i < n; i++)
        s->key_buf[s->key_pos + i] = (char)run[i];
    s->key_pos += (uint32_t)n;
}

/* A depth-1 key just closed: arm the capture of its value, or flag it. */
static void key_done(struct frame_scanner *s)
{
    s->cap_cur = -1;
    if (!s->key_track)
        return;
    s->key_track = false;
    for (unsigned k = 0; k < s->nkeys; k++) {
        if (s->key_len[k] != s->key_pos || !bytes_eq(s->key[k], s->key_buf, s->key_pos))
            continue;
        if (s->member[k].kind != FRAME_KIND_NONE)
            s->member[k].duplicate = true; /* keep the first span */
        else
            s->cap_cur = (int8_t)k;
        return;
    }
}

void frame_init(struct frame_scanner *s, uint32_t max_depth, uint32_t flags)
{
    /* key_buf and stack are always written before they are read */
    memset(s, 0, offsetof(struct frame_scanner, key_buf));
    s->max_depth = max_depth > FRAME_MAX_DEPTH ? FRAME_MAX_DEPTH : max_depth;
    s->flags = flags;
    s->state = ST_TOP;
    s->cap_cur = -1;
}

int frame_watch(struct frame_scanner *s, const char *key, size_t len)
{
    if (len == 0 || len > FRAME_KEY_MAX)
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c < 0x20 || c >= 0x7F || c == '"' || c == '\\')
            return -EINVAL; /* could never match a raw, unescaped key */
    }
    for (unsigned k = 0; k < s->nkeys; k++)
        if (s->key_len[k] == len && bytes_eq(s->key[k], key, len))
            return -EEXIST;
    if (s->nkeys >= FRAME_MAX_KEYS)
        return -ENOSPC;
    s->key[s->nkeys] = key;
    s->key_len[s->nkeys] = (uint8_t)len;
    return s->nkeys++;
}

void frame_reset(struct frame_scanner *s)
{
    s->offset = 0;
    s->err_offset = 0;
    s->depth = 0;
    s->key_pos = 0;
    s->result = 0;
    s->state = ST_TOP;
    s->aux = s->lit = s->u8_need = 0;
    s->top_kind = FRAME_KIND_NONE;
    s->in_key = s->non_ascii = s->key_escaped = false;
    s->key_track = false;
    s->cap_cur = -1;
    memset(s->member, 0, sizeof(s->member));
}

int frame_feed(struct frame_scanner *s, const char *buf, size_t len, size_t *consumed)
{
    const uint8_t *const b0 = (const uint8_t *)buf;
    const uint8_t *p = b0;
    const uint8_t *e;
    unsigned st = s->state;
    uint32_t depth = s->depth;
    enum frame_kind kind;
    unsigned c = 0;
    int rc;

    if (UNLIKELY(st >= ST_DONE || len == 0)) {
        *consumed = 0;
        return st >= ST_DONE ? s->result : FRAME_MORE;
    }
    e = b0 + len; /* buf may be NULL when len == 0: no arithmetic on it before here */
    while (p < e) {
        c = *p;
        switch (st) {
        case ST_STR: {
            const uint8_t *run = p;
            p = skip_plain(p, e);
            if (UNLIKELY(s->key_track))
                key_collect(s, run, (size_t)(p - run));
            if (p == e)
                continue;
            c = *p;
            if (c == '"') {
                p++;
                if (!s->in_key)
                    goto value_end;
                if (depth == 1)
                    key_done(s);
                s->in_key = false;
                st = ST_COLON;
            } else if (c == '\\') {
                if (s->in_key && depth == 1) {
                    s->key_escaped = true;
                    s->key_track = false;
                }
                p++;
                st = ST_ESC;
            } else if (c >= 0x80) {
                if (!utf8_lead(s, c))
                    goto fail_utf8;
                s->non_ascii = true;
                s->key_track = false; /* watched keys are ASCII */
                if (s->cap_cur >= 0)
                    s->member[s->cap_cur].non_ascii = true;
                p++;
                st = ST_UTF8;
            } else {
                goto fail_ctrl;
            }
            continue;
        }
        case ST_UTF8:
            if (c < s->u8_lo || c > s->u8_hi)
                goto fail_utf8;
            s->u8_lo = 0x80;
            s->u8_hi = 0xBF;
            p++;
            if (--s->u8_need == 0)
                st = ST_STR;
            continue;
        case ST_ESC:
            if (c == 'u') {
                s->aux = 4;
                st = ST_HEX;
            } else if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' ||
                       c == 'r' || c == 't') {
                st = ST_STR;
            } else {
                goto fail_escape;
            }
            p++;
            continue;
        case ST_HEX:
            if (!is_hex(c))
                goto fail_escape;
            p++;
            if (--s->aux == 0)
                st = ST_STR;
            continue;
        case ST_AFTER:
            if (is_ws(c)) {
                p = skip_ws(p + 1, e);
                continue;
            }
            if (c == ',') {
                p++;
                st = top_is_object(s, depth) ? ST_KEY : ST_VALUE;
                continue;
            }
            if ((c == '}' && top_is_object(s, depth)) || (c == ']' && !top_is_object(s, depth))) {
                p++;
                depth--;
                goto value_end;
            }
            goto fail_syntax;
        case ST_KEY:
            if (is_ws(c)) {
                p = skip_ws(p + 1, e);
                continue;
            }
            if (c != '"')
                goto fail_syntax;
            goto key_start;
        case ST_OBJ_FIRST:
            if (is_ws(c)) {
                p = skip_ws(p + 1, e);
                continue;
            }
            if (c == '}') {
                p++;
                depth--;
                goto value_end;
            }
            if (c != '"')
                goto fail_syntax;
        key_start:
            p++;
            s->in_key = true;
            st = ST_STR;
            if (depth == 1) {
                s->key_track = s->nkeys != 0;
                s->key_pos = 0;
            }
            continue;
        case ST_COLON:
            if (is_ws(c)) {
                p = skip_ws(p + 1, e);
                continue;
            }
            if (c != ':')
                goto fail_syntax;
            p++;
            st = ST_VALUE;
            continue;
        case ST_ARR_FIRST:
            if (is_ws(c)) {
                p = skip_ws(p + 1, e);
                continue;
            }
            if (c == ']') {
                p++;
                depth--;
                goto value_end;
            }
            goto value_start;
        case ST_VALUE:
            if (is_ws(c)) {
                p = skip_ws(p + 1, e);
                continue;
            }
            goto value_start;
        case ST_TOP:
            if (is_ws(c)) {
                p = skip_ws(p + 1, e);
                continue;
            }
            kind = value_kind(c);
            if (kind == FRAME_KIND_NONE)
                goto fail_syntax;
            if (((s->flags & FRAME_F_TOP_OBJECT) && kind != FRAME_KIND_OBJECT) ||
                ((s->flags & FRAME_F_TOP_CONTAINER) && kind != FRAME_KIND_OBJECT &&
                 kind != FRAME_KIND_ARRAY)) {
                rc = FRAME_E_TOP;
                goto fail;
            }
            s->top_kind = (uint8_t)kind;
            goto value_start;
        case ST_LIT:
            if (c != (unsigned char)lit_text[s->lit][s->aux])
                goto fail_syntax;
            p++;
            if (lit_text[s->lit][++s->aux] == '\0')
                goto value_end;
            continue;
        case ST_NUM_MINUS:
            if (!is_digit(c))
                goto fail_syntax;
            p++;
            st = c == '0' ? ST_NUM_ZERO : ST_NUM_INT;
            continue;
        case ST_NUM_ZERO:
            if (is_digit(c))
                goto fail_syntax; /* leading zero */
            goto num_tail;
        case ST_NUM_INT:
            p = skip_digits(p, e);
            if (p == e)
                continue;
            c = *p;
        num_tail:
            if (c == '.') {
                p++;
                st = ST_NUM_DOT;
                continue;
            }
            goto num_frac_tail;
        case ST_NUM_DOT:
            if (!is_digit(c))
                goto fail_syntax;
            p++;
            st = ST_NUM_FRAC;
            continue;
        case ST_NUM_FRAC:
            p = skip_digits(p, e);
            if (p == e)
                continue;
            c = *p;
        num_frac_tail:
            if (c == 'e' || c == 'E') {
                p++;
                st = ST_NUM_E;
                continue;
            }
            goto value_end; /* c ends the number; it is scanned next as ST_AFTER */
        case ST_NUM_E:
            if (c == '+' || c == '-') {
                p++;
                st = ST_NUM_ESIGN;
                continue;
            }
            /* fall through */
        case ST_NUM_ESIGN:
            if (!is_digit(c))
                goto fail_syntax;
            p++;
            st = ST_NUM_EXP;
            continue;
        case ST_NUM_EXP:
            p = skip_digits(p, e);
            if (p == e)
                continue;
            goto value_end;
        default:
            goto fail_syntax; /* unreachable: final states return early */
        }

    value_start:
        /* c == *p is the first byte of a value */
        kind = value_kind(c);
        if (kind == FRAME_KIND_NONE)
            goto fail_syntax;
        if (UNLIKELY(s->cap_cur >= 0) && depth == 1) {
            struct frame_member *m = &s->member[s->cap_cur];
            m->start = s->offset + (uint64_t)(p - b0);
            m->kind = (uint8_t)kind;
        }
        switch (kind) {
        case FRAME_KIND_OBJECT:
        case FRAME_KIND_ARRAY:
            if (depth >= s->max_depth) {
                rc = FRAME_E_DEPTH;
                goto fail;
            }
            if (kind == FRAME_KIND_OBJECT)
                s->stack[depth >> 6] |= UINT64_C(1) << (depth & 63);
            else
                s->stack[depth >> 6] &= ~(UINT64_C(1) << (depth & 63));
            depth++;
            st = kind == FRAME_KIND_OBJECT ? ST_OBJ_FIRST : ST_ARR_FIRST;
            break;
        case FRAME_KIND_STRING:
            st = ST_STR;
            break;
        case FRAME_KIND_NUMBER:
            st = c == '-' ? ST_NUM_MINUS : c == '0' ? ST_NUM_ZERO : ST_NUM_INT;
            break;
        default:
            s->lit = (uint8_t)kind;
            s->aux = 1;
            st = ST_LIT;
            break;
        }
        p++;
        continue;

    value_end:
        /* p is one past the value's last byte */
        if (depth == 0) {
            s->state = ST_DONE;
            s->result = FRAME_DONE;
            s->depth = 0;
            *consumed = (size_t)(p - b0);
            s->offset += *consumed;
            return FRAME_DONE;
        }
        if (UNLIKELY(s->cap_cur >= 0) && depth == 1) {
            s->member[s->cap_cur].end = s->offset + (uint64_t)(p - b0);
            s->cap_cur = -1;
        }
        st = ST_AFTER;
    }

    s->state = (uint8_t)st;
    s->depth = depth;
    s->offset += len;
    *consumed = len;
    return FRAME_MORE;

fail_syntax:
    rc = FRAME_E_SYNTAX;
    goto fail;
fail_escape:
    rc = FRAME_E_ESCAPE;
    goto fail;
fail_utf8:
    rc = FRAME_E_UTF8;
    goto fail;
fail_ctrl:
    rc = FRAME_E_CTRL;
fail:
    if (c == 0)
        rc = FRAME_E_NUL; /* one rule for NUL, wherever it shows up */
    *consumed = (size_t)(p - b0);
    s->err_offset = s->offset + *consumed;
    s->offset += *consumed;
    s->depth = depth;
    s->state = ST_ERROR;
    s->result = (int8_t)rc;
    return rc;
}

int frame_finish(struct frame_scanner *s)
{
    int rc;

    switch (s->state) {
    case ST_DONE:
    case ST_ERROR:
        return s->result;
    case ST_NUM_ZERO:
    case ST_NUM_INT:
    case ST_NUM_FRAC:
    case ST_NUM_EXP:
        if (s->depth == 0) {
            s->state = ST_DONE;
            s->result = FRAME_DONE;
            return FRAME_DONE;
        }
        rc = FRAME_E_TRUNC;
        break;
    case ST_TOP:
        rc = FRAME_E_EMPTY;
        break;
    default:
        rc = FRAME_E_TRUNC;
        break;
    }
    s->err_offset = s->offset;
    s->state = ST_ERROR;
    s->result = (int8_t)rc;
    return rc;
}

const char *frame_strerror(int rc)
{
    switch (rc) {
    case FRAME_MORE:
        return "incomplete JSON value";
    case FRAME_DONE:
        return "complete JSON value";
    case FRAME_E_SYNTAX:
        return "unexpected byte";
    case FRAME_E_DEPTH:
        return "nesting too deep";
    case FRAME_E_CTRL:
        return "raw control character in a string";
    case FRAME_E_NUL:
        return "NUL byte";
    case FRAME_E_UTF8:
        return "invalid UTF-8 in a string";
    case FRAME_E_ESCAPE:
        return "invalid escape sequence in a string";
    case FRAME_E_TOP:
        return "top-level value of the wrong kind";
    case FRAME_E_TRUNC:
        return "input ended inside the value";
    case FRAME_E_EMPTY:
        return "no JSON value";
    default:
        return "unknown frame error";
    }
}
