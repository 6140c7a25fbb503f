/*
 * screen_lex.c - the screener's input: the JSON string token of params.code
 * validated and decoded to UTF-8 (stage 1), then read as Python tokens
 * (stage 2; the pipeline is described in screen.c).
 *
 * The tokenizer keeps only what the rules look at: whitespace, comments,
 * line continuations and newlines inside brackets vanish; strings are
 * decoded (escapes, implicit concatenation) up to TOK_STR_MAX bytes;
 * f-strings (and t-strings) become an opaque string token followed by each
 * replacement field as code in virtual parentheses, on a bounded context
 * stack (CTX_MAX, beyond it the script is refused as too complex); numbers
 * are lexed exactly so `1or__import__` splits as Python splits it; and
 * identifiers are folded to ASCII where NFKC does (screen_fold.h). While a
 * string literal is read, identifier runs in it are matched against the
 * door dunders, so '{0.__globals__}'.format(f) is caught here.
 *
 * The source is valid UTF-8 by construction (screen_json_decode checked it
 * and encodes every escape), so the tokenizer decodes without checking.
 */
#include "screen_lex.h"
#include "screen_rules.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "screen_fold.h"

/* ---- 1. the JSON string ------------------------------------------------ */

static int hex4(const unsigned char *p, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c - '0' < 10u)
            d = c - '0';
        else if ((c | 0x20) - 'a' < 6u)
            d = (c | 0x20) - 'a' + 10;
        else
            return -1;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

static size_t utf8_put(unsigned char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | cp >> 6);
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | cp >> 12);
        o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | cp >> 18);
    o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence at p (< end), 0 if invalid: no
 * overlongs, no encoded surrogates, nothing above U+10FFFF (RFC 3629). */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    size_t n = end - p < 4 ? (size_t)(end - p) : 4;
    if (c >= 0xC2 && c <= 0xDF)
        return n >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] >= 0xA0))
            return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] >= 0x90))
            return 0;
        return 4;
    }
    return 0;
}

int screen_json_decode(const unsigned char *s, size_t len, unsigned char *out, size_t *outlen,
                       char *why, size_t whylen)
{
    const char *err = NULL;
    size_t o = 0, i = 1;
    if (len < 2 || s[0] != '"') {
        err = "does not start with a quote";
        goto bad;
    }
    for (;;) {
        if (i >= len) {
            err = "has no closing quote";
            goto bad;
        }
        unsigned c = s[i];
        if (c == '"') {
            if (i + 1 != len) {
                err = "has bytes after its closing quote";
                goto bad;
            }
            break;
        }
        if (c < 0x20) {
            err = "holds a raw control character";
            goto bad;
        }
        if (c < 0x80 && c != '\\') { /* a run of plain bytes */
            size_t j = i + 1;
            while (j < len && s[j] >= 0x20 && s[j] < 0x80 && s[j] != '"' && s[j] != '\\')
                j++;
            if (out)
                memcpy(out + o, s + i, j - i);
            o += j - i;
            i = j;
            continue;
        }
        if (c >= 0x80) {
            size_t n = utf8_len(s + i, s + len);
            if (n == 0) {
                err = "holds invalid UTF-8";
                goto bad;
            }
            if (out)
                memcpy(out + o, s + i, n);
            o += n, i += n;
            continue;
        }
        /* an escape */
        if (i + 1 >= len) {
            err = "has no closing quote";
            goto bad;
        }
        unsigned e = s[i + 1];
        uint32_t cp;
        int simple = e == '"' || e == '\\' || e == '/' ? (int)e
                     : e == 'b'                          ? '\b'
                     : e == 'f'                          ? '\f'
                     : e == 'n'                          ? '\n'
                     : e == 'r'                          ? '\r'
                     : e == 't'                          ? '\t'
                                                         : -1;
        if (simple >= 0) {
            if (out)
                out[o] = (unsigned char)simple;
            o++, i += 2;
            continue;
        }
        if (e != 'u' || i + 6 > len || hex4(s + i + 2, &cp) != 0) {
            err = "has an invalid escape";
            goto bad;
        }
        i += 6;
        if (cp >= 0xDC00 && cp <= 0xDFFF) {
            err = "has a lone low surrogate";
            goto bad;
        }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            uint32_t lo;
            if (i + 6 > len || s[i] != '\\' || s[i + 1] != 'u' || hex4(s + i + 2, &lo) != 0 ||
                lo < 0xDC00 || lo > 0xDFFF) {
                err = "has a lone high surrogate";
                goto bad;
            }
            i += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (out)
            o += utf8_put(out + o, cp);
        else
            o += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    }
    *outlen = o;
    return 0;
bad:
    if (whylen)
        snprintf(why, whylen, "execute_code: params.code is not a valid JSON string: it %s",
                 err);
    return -EINVAL;
}

/* ---- 2. Python tokens -------------------------------------------------- */

static inline unsigned at(const struct lexer *lx, size_t i)
{
    return i < lx->n ? lx->s[i] : 0;
}

static uint32_t utf8_get(const unsigned char *p, size_t *n)
{
    /* input is valid UTF-8 (screen_json_decode checked it, escapes were encoded) */
    if (p[0] < 0xE0) {
        *n = 2;
        return (uint32_t)(p[0] & 0x1F) << 6 | (p[1] & 0x3F);
    }
    if (p[0] < 0xF0) {
        *n = 3;
        return (uint32_t)(p[0] & 0x0F) << 12 | (uint32_t)(p[1] & 0x3F) << 6 | (p[2] & 0x3F);
    }
    *n = 4;
    return (uint32_t)(p[0] & 0x07) << 18 | (uint32_t)(p[1] & 0x3F) << 12 |
           (uint32_t)(p[2] & 0x3F) << 6 | (p[3] & 0x3F);
}

/* NFKC of one identifier character, when it is ASCII. */
static const char *fold(uint32_t cp, char *one)
{
    size_t lo = 0, hi = sizeof fold_runs / sizeof fold_runs[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < fold_runs[mid].lo)
            hi = mid;
        else if (cp > fold_runs[mid].hi)
            lo = mid + 1;
        else {
            one[0] = (char)(fold_runs[mid].first + (int)(cp - fold_runs[mid].lo));
            one[1] = '\0';
            return one;
        }
    }
    for (size_t i = 0; i < sizeof fold_multis / sizeof fold_multis[0]; i++)
        if (fold_multis[i].cp == cp)
            return fold_multis[i].to;
    return NULL;
}

/* The identifier-run scanner for string contents: a run like __globals__
 * inside a literal ('{0.__globals__}'.format(f)) is a door too. */
static void run_end(struct lexer *lx)
{
    if (!lx->run_long && lx->runlen >= 4 && lx->run[0] == '_' && lx->run[1] == '_' &&
        !lx->found_rule) {
        const struct word *w = screen_word_find(lx->run, lx->runlen);
        /* __import__ in a string is only text: format() can walk
         * attributes but not call; keys and getattr names are checked
         * where they are used */
        if (w && w->any && w->any != R_DUNDER_IMPORT) {
            lx->found_rule = w->any;
            lx->found_line = lx->line;
            lx->found_name = w->name;
        }
    }
    lx->runlen = 0;
    lx->run_long = false;
}

static inline void run_feed(struct lexer *lx, uint32_t cp)
{
    if (cp < 0x80 && is_name_ascii(cp)) {
        if (lx->runlen < sizeof lx->run)
            lx->run[lx->runlen++] = (char)cp;
        else
            lx->run_long = true;
    } else if (lx->runlen || lx->run_long) {
        run_end(lx);
    }
}

static void tok_put(struct tok *t, uint32_t cp)
{
    unsigned char b[4];
    size_t n = utf8_put(b, cp);
    if (t->len + n > TOK_STR_MAX) {
        t->flags |= TF_LONG;
        return;
    }
    memcpy(t->text + t->len, b, n);
    t->len = (uint16_t)(t->len + n);
    t->text[t->len] = '\0';
}

/* Consume a newline at i (\n, \r\n or \r) if there is one. */
static bool eat_newline(struct lexer *lx)
{
    unsigned c = at(lx, lx->i);
    if (c != '\n' && c != '\r')
        return false;
    lx->i += (c == '\r' && at(lx, lx->i + 1) == '\n') ? 2 : 1;
    lx->line++;
    return true;
}

/* Skip spaces, comments and line continuations; newlines too when
 * `nl` (inside brackets). */
static void skip_space(struct lexer *lx, bool nl)
{
    for (;;) {
        unsigned c = at(lx, lx->i);
        if (lx->i >= lx->n)
            return;
        if (c == ' ' || c == '\t' || c == '\f' || c == '\v') {
            lx->i++;
        } else if (c == '\\' && (at(lx, lx->i + 1) == '\n' || at(lx, lx->i + 1) == '\r')) {
            lx->i++;
            eat_newline(lx);
        } else if (c == '#') {
            while (lx->i < lx->n && lx->s[lx->i] != '\n' && lx->s[lx->i] != '\r')
                lx->i++;
        } else if (nl && eat_newline(lx)) {
            continue;
        } else {
            return;
        }
    }
}

struct prefix {
    bool ok, f, r, b;
    size_t len;
};

/* A string prefix (r, b, u, f, t and pairs, any case) followed by a quote
 * at i, or a bare quote. */
static struct prefix string_prefix(const struct lexer *lx, size_t i)
{
    struct prefix p = {0};
    size_t k = 0;
    for (; k < 3; k++) {
        unsigned c = at(lx, i + k) | 0x20;
        if (at(lx, i + k) == '\'' || at(lx, i + k) == '"')
            break;
        if (k == 2 || (c != 'r' && c != 'b' && c != 'u' && c != 'f' && c != 't'))
            return p;
        p.f |= c == 'f' || c == 't';
        p.r |= c == 'r';
        p.b |= c == 'b';
    }
    p.ok = true;
    p.len = k;
    return p;
}

/* One backslash escape of a non-raw string at i (the backslash). */
static void string_escape(struct lexer *lx, struct tok *t, bool bytes)
{
    size_t i = lx->i + 1;
    unsigned e = at(lx, i);
    uint32_t cp = 0;
    size_t k;
    lx->i = i + 1;
    switch (e) {
    case '\n':
    case '\r':
        lx->i = i;
        eat_newline(lx);
        return;
    case 'a': cp = 7; break;
    case 'b': cp = 8; break;
    case 'f': cp = 12; break;
    case 'n': cp = 10; break;
    case 'r': cp = 13; break;
    case 't': cp = 9; break;
    case 'v': cp = 11; break;
    case 'x':
    case 'u':
    case 'U': {
        size_t nd = e == 'x' ? 2 : e == 'u' ? 4 : 8;
        if (bytes && e != 'x')
            goto literal;
        for (k = 0; k < nd; k++) {
            unsigned c = at(lx, i + 1 + k), d;
            if (is_digit(c))
                d = c - '0';
            else if ((c | 0x20) - 'a' < 6u)
                d = (c | 0x20) - 'a' + 10;
            else
                goto literal;
            cp = cp << 4 | d;
        }
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            cp = 0xFFFD;
        lx->i = i + 1 + nd;
        break;
    }
    case 'N':
        if (bytes || at(lx, i + 1) != '{')
            goto literal;
        while (lx->i < lx->n && lx->s[lx->i] != '}' && lx->s[lx->i] != '\n')
            lx->i++;
        if (at(lx, lx->i) == '}')
            lx->i++;
        t->flags |= TF_OPAQUE;
        run_feed(lx, '?');
        return;
    default:
        if (e >= '0' && e <= '7') {
            for (k = 0; k < 3 && at(lx, i + k) >= '0' && at(lx, i + k) <= '7'; k++)
                cp = cp << 3 | (at(lx, i + k) - '0');
            lx->i = i + k;
            break;
        }
        if (e == '\\' || e == '\'' || e == '"') {
            cp = e;
            break;
        }
    literal:
        lx->i = i; /* the backslash stands for itself */
        cp = '\\';
        break;
    }
    tok_put(t, cp);
    run_feed(lx, cp);
}

/* Copy one character of string content at i into t. */
static void string_char(struct lexer *lx, struct tok *t)
{
    unsigned c = lx->s[lx->i];
    if (c < 0x80) {
        lx->i++;
        if (c == '\n' || c == '\r') {
            lx->i--;
            eat_newline(lx);
        }
        tok_put(t, c);
        run_feed(lx, c);
        return;
    }
    size_t n;
    uint32_t cp = utf8_get(lx->s + lx->i, &n);
    lx->i += n;
    tok_put(t, cp);
    run_feed(lx, cp);
}

static bool at_close(const struct lexer *lx, unsigned q, bool triple)
{
    return at(lx, lx->i) == q &&
           (!triple || (at(lx, lx->i + 1) == q && at(lx, lx->i + 2) == q));
}

/* The body of a plain (not f-) string, from after its opening quote. */
static void string_body(struct lexer *lx, struct tok *t, unsigned q, bool triple, bool raw,
                        bool bytes)
{
    while (lx->i < lx->n) {
        unsigned c = lx->s[lx->i];
        if (at_close(lx, q, triple)) {
            lx->i += triple ? 3 : 1;
            break;
        }
        if ((c == '\n' || c == '\r') && !triple)
            break; /* unterminated: Python refuses the script */
        if (c == '\\' && !raw) {
            string_escape(lx, t, bytes);
        } else if (c == '\\') { /* raw: keeps the backslash, and the quote after it */
            string_char(lx, t);
            if (lx->i < lx->n && lx->s[lx->i] != '\n' && lx->s[lx->i] != '\r')
                string_char(lx, t);
        } else {
            string_char(lx, t);
        }
    }
    run_end(lx);
}

static bool ctx_push(struct lexer *lx, struct ctx c);

/* A string starting at i with prefix p. f-strings push a context and give
 * an opaque token; plain strings are read whole, and so is every plain
 * string that follows (implicit concatenation, "sys" "tem"). */
static void lex_string(struct lexer *lx, struct tok *t, struct prefix p)
{
    t->kind = T_STR;
    for (;;) {
        lx->i += p.len;
        unsigned q = lx->s[lx->i];
        bool triple = at(lx, lx->i + 1) == q && at(lx, lx->i + 2) == q;
        lx->i += triple ? 3 : 1;
        if (p.f) {
            t->flags |= TF_OPAQUE;
            ctx_push(lx, (struct ctx){X_FSTR, (uint8_t)q, triple, p.r, 0});
            return;
        }
        string_body(lx, t, q, triple, p.r, p.b);
        size_t save_i = lx->i;
        uint32_t save_line = lx->line;
        skip_space(lx, lx->depth > 0);
        p = string_prefix(lx, lx->i);
        if (!p.ok || p.f) { /* an f-string after: the whole is opaque anyway */
            if (p.ok)
                t->flags |= TF_OPAQUE;
            lx->i = save_i;
            lx->line = save_line;
            return;
        }
    }
}

static void lex_number(struct lexer *lx)
{
    size_t i = lx->i;
    unsigned c1 = at(lx, i + 1) | 0x20;
#define DIGITS(ok)                                                       \
    while ((ok(at(lx, i))) || (at(lx, i) == '_' && ok(at(lx, i + 1)))) \
    i++
#define IS_HEX(c) (is_digit(c) || ((c) | 0x20) - 'a' < 6u)
#define IS_OCT(c) ((c) - '0' < 8u)
#define IS_BIN(c) ((c) == '0' || (c) == '1')
    if (at(lx, i) == '0' && (c1 == 'x' || c1 == 'o' || c1 == 'b')) {
        i += 2;
        if (c1 == 'x')
            DIGITS(IS_HEX);
        else if (c1 == 'o')
            DIGITS(IS_OCT);
        else
            DIGITS(IS_BIN);
    } else {
        DIGITS(is_digit);
        if (at(lx, i) == '.') {
            i++;
            DIGITS(is_digit);
        }
        if ((at(lx, i) | 0x20) == 'e') {
            size_t k = i + 1;
            if (at(lx, k) == '+' || at(lx, k) == '-')
                k++;
            if (is_digit(at(lx, k))) {
                i = k;
                DIGITS(is_digit);
            }
        }
        if ((at(lx, i) | 0x20) == 'j')
            i++;
    }
#undef DIGITS
#undef IS_HEX
#undef IS_OCT
#undef IS_BIN
    lx->i = i;
}

/* A name, folded; returns whether it was all ASCII (a string prefix can
 * only be ASCII). */
static bool lex_name(struct lexer *lx, struct tok *t)
{
    bool ascii = true;
    t->kind = T_NAME;
    while (lx->i < lx->n) {
        unsigned c = lx->s[lx->i];
        char one[2];
        const char *add = one;
        if (c < 0x80) {
            if (!is_name_ascii(c))
                break;
            if (t->len < TOK_NAME_MAX)
                t->text[t->len++] = (char)c;
            else
                t->flags |= TF_LONG;
            lx->i++;
            continue;
        } else {
            size_t n;
            uint32_t cp = utf8_get(lx->s + lx->i, &n);
            lx->i += n;
            ascii = false;
            add = fold(cp, one);
            if (!add) {
                t->flags |= TF_NONASCII;
                one[0] = '\x80';
                one[1] = '\0';
                add = one;
            }
        }
        for (; *add; add++) {
            if (t->len < TOK_NAME_MAX)
                t->text[t->len++] = *add;
            else
                t->flags |= TF_LONG;
        }
    }
    t->text[t->len] = '\0';
    return ascii;
}

static void set_op(struct tok *t, const char *op, size_t n)
{
    t->kind = T_OP;
    memcpy(t->text, op, n);
    t->text[n] = '\0';
    t->len = (uint16_t)n;
}

static void lex_op(struct lexer *lx, struct tok *t)
{
    unsigned c = lx->s[lx->i], c1 = at(lx, lx->i + 1), c2 = at(lx, lx->i + 2);
    size_t n = 1;
    switch (c) {
    case '(':
    case '[':
    case '{':
        lx->depth++;
        break;
    case ')':
    case ']':
    case '}':
        if (lx->depth > 0)
            lx->depth--;
        break;
    case '.':
        n = c1 == '.' && c2 == '.' ? 3 : 1;
        break;
    case '*':
    case '/':
    case '<':
    case '>': /* ** // << >> and their augmented forms; <= >= */
        if (c1 == c)
            n = c2 == '=' ? 3 : 2;
        else if (c1 == '=')
            n = 2;
        break;
    case '-':
        n = c1 == '=' || c1 == '>' ? 2 : 1;
        break;
    case '=':
    case '!':
    case '+':
    case '%':
    case '&':
    case '|':
    case '^':
    case '@':
    case ':':
        n = c1 == '=' ? 2 : 1;
        break;
    default:
        break;
    }
    set_op(t, (const char *)lx->s + lx->i, n);
    lx->i += n;
}

static struct ctx *ctx_top(struct lexer *lx)
{
    return lx->nctx ? &lx->ctx[lx->nctx - 1] : NULL;
}

static bool ctx_push(struct lexer *lx, struct ctx c)
{
    if (lx->nctx == CTX_MAX) {
        if (!lx->found_rule) {
            lx->found_rule = R_TOO_COMPLEX;
            lx->found_line = lx->line;
            lx->found_name = "f-strings";
        }
        lx->i = lx->n;
        return false;
    }
    lx->ctx[lx->nctx++] = c;
    return true;
}

/* A replacement field opens: a virtual '(' so its commas stay inside. */
static void field_open(struct lexer *lx, struct tok *t, const struct ctx *parent)
{
    lx->i++;
    lx->depth++;
    set_op(t, "(", 1);
    ctx_push(lx, (struct ctx){X_FIELD, parent->quote, parent->triple, parent->raw, lx->depth});
}

/* The literal part of an f-string or a format spec. Returns true with a
 * token in t (a field's virtual '('), false once the context was popped
 * or the input ended. */
static bool lex_fliteral(struct lexer *lx, struct tok *t)
{
    struct ctx *c = ctx_top(lx);
    unsigned q = c->quote;
    while (lx->i < lx->n) {
        unsigned ch = lx->s[lx->i];
        if (at_close(lx, q, c->triple)) {
            if (c->kind == X_FSTR)
                lx->i += c->triple ? 3 : 1;
            lx->nctx--; /* a spec cut short by the quote: the f-string ends next */
            run_end(lx);
            return false;
        }
        if ((ch == '\n' || ch == '\r') && !c->triple) {
            lx->nctx--;
            run_end(lx);
            return false;
        }
        if (ch == '{') {
            if (c->kind == X_FSTR && at(lx, lx->i + 1) == '{') {
                lx->i += 2;
                continue;
            }
            run_end(lx);
            field_open(lx, t, c);
            return true;
        }
        if (ch == '}') {
            if (c->kind == X_SPEC) { /* the end of the replacement field */
                lx->i++;
                lx->nctx--;
                run_end(lx);
                return false;
            }
            lx->i += at(lx, lx->i + 1) == '}' ? 2 : 1;
            continue;
        }
        if (ch == '\\') {
            unsigned e = at(lx, lx->i + 1);
            if (c->raw) { /* only a quote or a backslash is protected */
                lx->i += (e == q || e == '\\') ? 2 : 1;
                continue;
            }
            if (e == '{' || e == '}') { /* not an escape: the brace stays live */
                lx->i++;
                continue;
            }
            struct tok scratch = {0};
            string_escape(lx, &scratch, false);
            continue;
        }
        string_char(lx, t); /* feeds the dunder scanner; the value is opaque */
        t->len = 0;
        t->flags = 0;
    }
    return false;
}

void screen_lex_next(struct lexer *lx, struct tok *t)
{
    t->kind = T_END;
    t->flags = 0;
    t->len = 0;
    t->text[0] = '\0';
    for (;;) {
        struct ctx *c = ctx_top(lx);
        if (c && c->kind != X_FIELD) {
            if (lx->i >= lx->n)
                return;
            t->line = lx->line;
            if (lex_fliteral(lx, t))
                return;
            t->len = 0;
            continue;
        }
        if (lx->i < lx->n && (lx->s[lx->i] <= ' ' || lx->s[lx->i] == '#' || lx->s[lx->i] == '\\'))
            skip_space(lx, false);
        t->line = lx->line;
        if (lx->i >= lx->n)
            return;
        unsigned ch = lx->s[lx->i];
        if (ch == '\n' || ch == '\r') {
            eat_newline(lx);
            if (lx->depth == 0 && lx->nctx == 0) {
                t->kind = T_NL;
                return;
            }
            continue;
        }
        if (c && lx->depth == c->depth && (ch == '}' || ch == ':')) {
            /* a field's expression ends: close its virtual '(' */
            lx->i++;
            lx->depth--;
            set_op(t, ")", 1);
            if (ch == '}')
                lx->nctx--;
            else
                c->kind = X_SPEC;
            return;
        }
        if (ch == '\'' || ch == '"') {
            lex_string(lx, t, string_prefix(lx, lx->i));
            return;
        }
        if (ch >= 0x80 || is_name_ascii(ch)) {
            if (is_digit(ch)) {
                lex_number(lx);
                t->kind = T_NUM;
                return;
            }
            struct prefix p = {0};
            unsigned lc = ch | 0x20;
            if (lc == 'r' || lc == 'b' || lc == 'u' || lc == 'f' || lc == 't')
                p = string_prefix(lx, lx->i);
            if (p.ok && p.len) {
                lex_string(lx, t, p);
                return;
            }
            lex_name(lx, t);
            return;
        }
        if (ch == '.' && is_digit(at(lx, lx->i + 1))) {
            lex_number(lx);
            t->kind = T_NUM;
            return;
        }
        lex_op(lx, t);
        return;
    }
}
