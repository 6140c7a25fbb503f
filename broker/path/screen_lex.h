/*
 * screen_lex.h - the screener's input stages (screen_lex.c): the JSON string
 * token of params.code decoded to UTF-8, then read as Python tokens. Internal
 * to the screener: the rest of the broker uses screen.h.
 *
 * A lexer is a plain struct the caller zeroes and points at the source
 * (s, n, line = 1); it holds no allocation. Reentrant: no shared state but
 * the read-only name table (screen_words_init() must have run).
 */
#ifndef BROKER_SCREEN_LEX_H
#define BROKER_SCREEN_LEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOK_NAME_MAX 64  /* longer names match nothing in the table */
#define TOK_STR_MAX  256 /* longer string values are opaque */
#define CTX_MAX      32  /* nested f-string contexts followed */

enum tkind { T_END, T_NL, T_NAME, T_STR, T_NUM, T_OP };

enum {
    TF_OPAQUE = 1,   /* value not known: f-string part, \N{...} */
    TF_LONG = 2,     /* value (or name) longer than kept */
    TF_NONASCII = 4, /* name holds a character that does not fold to ASCII */
};

struct tok {
    uint8_t kind, flags;
    uint16_t len;
    uint32_t line;
    char text[TOK_STR_MAX + 4];
};

enum ctx_kind {
    X_FSTR,  /* the literal part of an f-string */
    X_FIELD, /* a replacement field: code, until its '}' or ':' */
    X_SPEC,  /* a format spec: literal, nested fields, until '}' */
};

struct ctx {
    uint8_t kind, quote;
    bool triple, raw;
    int depth; /* X_FIELD: bracket depth inside its virtual '(' */
};

struct lexer {
    const unsigned char *s;
    size_t n, i;
    uint32_t line;
    int depth; /* open brackets, virtual ones included */
    int nctx;
    struct ctx ctx[CTX_MAX];
    /* a door dunder seen inside a string literal (first one) */
    uint8_t found_rule;
    uint32_t found_line;
    const char *found_name;
    /* the identifier run being read inside a string */
    char run[24];
    uint8_t runlen;
    bool run_long;
};

static inline bool is_name_ascii(unsigned c)
{
    return (c | 0x20) - 'a' < 26u || c - '0' < 10u || c == '_';
}

static inline bool is_digit(unsigned c)
{
    return c - '0' < 10u;
}

/*
 * Validate the token s[0..len) as one JSON string and, when out is not
 * NULL, write its UTF-8 value there (never longer than len: every escape
 * is at least as long as what it stands for). 0 with *outlen, or -EINVAL
 * with a message in why.
 */
int screen_json_decode(const unsigned char *s, size_t len, unsigned char *out, size_t *outlen,
                       char *why, size_t whylen);

/* The next token of lx into t (T_END at the end of the source, and from
 * then on). A door dunder met inside a string literal, or f-strings nested
 * deeper than CTX_MAX, is reported in lx->found_rule (the first one). */
void screen_lex_next(struct lexer *lx, struct tok *t);

#endif
