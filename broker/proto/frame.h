/*
 * frame.h - incremental, validating JSON scanner used for framing.
 *
 * Design: a pushdown automaton over bytes. Everything the scanner knows lives
 * in struct frame_scanner (state, a bit stack of open containers, UTF-8 and
 * escape progress), so a value split at any byte boundary across any number
 * of frame_feed() calls scans exactly as if it came in one piece, and every
 * byte is looked at once: nothing is ever re-scanned from the start. Callers
 * use it to (1) frame a backend reply that has no delimiter (the Blender
 * add-on) by JSON completeness, and (2) validate a client request line.
 *
 * What is validated: the full RFC 8259 grammar (objects, arrays, strings and
 * their escapes incl. the four hex digits of \uXXXX, numbers, the three
 * literals, whitespace), UTF-8 inside strings (no overlongs, no encoded
 * surrogates, nothing above U+10FFFF, sequences may straddle feeds), no raw
 * byte < 0x20 inside strings, no NUL byte anywhere, and a nesting limit.
 * Not checked, on purpose: a \uD800-style escape need not be paired (RFC
 * 8259 allows it and Python's json emits lone surrogates for undecodable
 * file names), numbers are not range-checked, duplicate keys are only
 * reported for the watched top-level keys (see below).
 *
 * Member capture: up to FRAME_MAX_KEYS keys can be watched. For the
 * top-level object only (depth 1) the scanner records where each watched
 * key's value starts and ends (stream offsets, cumulative across feeds, so
 * the caller that keeps the bytes can slice them without parsing again),
 * its JSON kind, whether it holds any byte >= 0x80, and whether the key came
 * more than once (the first occurrence's span is kept). Keys are matched as
 * raw bytes: a key written with an escape ("\u0069d") never matches "id";
 * instead `key_escaped` is set so a strict caller can refuse the ambiguity.
 *
 * Extra bytes: FRAME_DONE reports in *consumed how many bytes of the chunk
 * belong to the value (up to and including its last byte). Whatever follows
 * in the chunk is the caller's concern: frame_ws_span() tells how much of it
 * is whitespace; anything else is "extra data" (for a backend: close the
 * connection, a late or second reply would be read as the next answer).
 *
 * ndjson framing: scan the same way (the value ends where the grammar says,
 * not at a newline); after FRAME_DONE the bytes up to the '\n' must be
 * whitespace, which frame_ws_span() checks. A newline inside the value is
 * just whitespace (or, raw inside a string, FRAME_E_CTRL).
 *
 * Top-level scalars: with FRAME_F_TOP_CONTAINER (backend framing in "json"
 * mode) a top-level value must start with '{' or '['; a bare number could
 * never be known complete. Without the flag a top-level number ends at the
 * first byte that cannot continue it (not consumed), or at frame_finish().
 *
 * Thread safety: a scanner is plain data; one thread at a time.
 */
#ifndef BROKER_FRAME_H
#define BROKER_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FRAME_MAX_DEPTH 1024 /* hard cap on max_depth (bit stack size) */
#define FRAME_MAX_KEYS  8    /* watched top-level keys */
#define FRAME_KEY_MAX   64   /* longest watched key, bytes */

/* frame_feed() / frame_finish() results. Errors are negative and sticky. */
enum {
    FRAME_MORE = 0,      /* chunk consumed, value not complete yet */
    FRAME_DONE = 1,      /* value complete; see *consumed */
    FRAME_E_SYNTAX = -1, /* byte not allowed by the grammar here */
    FRAME_E_DEPTH = -2,  /* container nesting deeper than max_depth */
    FRAME_E_CTRL = -3,   /* raw control character (< 0x20) inside a string */
    FRAME_E_NUL = -4,    /* NUL byte (anywhere) */
    FRAME_E_UTF8 = -5,   /* invalid UTF-8 inside a string */
    FRAME_E_ESCAPE = -6, /* bad escape sequence inside a string */
    FRAME_E_TOP = -7,    /* top-level value of a kind the flags refuse */
    FRAME_E_TRUNC = -8,  /* frame_finish(): input ended inside the value */
    FRAME_E_EMPTY = -9,  /* frame_finish(): input held no value at all */
};

/* frame_init() flags. */
#define FRAME_F_TOP_CONTAINER 0x1u /* top-level must be an object or an array */
#define FRAME_F_TOP_OBJECT    0x2u /* top-level must be an object */

enum frame_kind {
    FRAME_KIND_NONE = 0, /* not seen */
    FRAME_KIND_OBJECT,
    FRAME_KIND_ARRAY,
    FRAME_KIND_STRING,
    FRAME_KIND_NUMBER,
    FRAME_KIND_TRUE,
    FRAME_KIND_FALSE,
    FRAME_KIND_NULL,
};

/* Where a watched top-level key's value lies. Offsets count from the first
 * byte fed after frame_init()/frame_reset(). A string's span includes its
 * quotes. Valid once the value is complete (end > start). */
struct frame_member {
    uint64_t start; /* offset of the value's first byte */
    uint64_t end;   /* offset one past its last byte */
    uint8_t kind;   /* enum frame_kind; FRAME_KIND_NONE = key absent */
    bool non_ascii; /* the value holds a byte >= 0x80 */
    bool duplicate; /* the key appeared more than once */
};

/* All fields are private to frame.c; use the functions below. */
struct frame_scanner {
    uint64_t offset;     /* stream offset of the next byte to be fed */
    uint64_t err_offset; /* offset of the offending byte, after an error */
    uint32_t depth;      /* open containers */
    uint32_t max_depth;
    uint32_t flags;
    uint32_t key_pos; /* bytes of the current depth-1 key in key_buf */
    int8_t result;    /* sticky FRAME_DONE or error once finished */
    uint8_t state;
    uint8_t aux;          /* hex digits left, or literal position */
    uint8_t lit;          /* which literal (true/false/null) */
    uint8_t u8_need;      /* UTF-8 continuation bytes still expected */
    uint8_t u8_lo, u8_hi; /* allowed range of the next continuation byte */
    uint8_t top_kind;     /* enum frame_kind of the top-level value */
    bool in_key;          /* the open string is an object key */
    bool non_ascii;       /* some string held a byte >= 0x80 */
    bool key_escaped;     /* some top-level key contained a backslash escape */
    uint8_t nkeys;
    bool key_track; /* collecting a depth-1 key that may still match */
    int8_t cap_cur; /* watched key whose value is being scanned, or -1 */
    uint8_t key_len[FRAME_MAX_KEYS];
    const char *key[FRAME_MAX_KEYS];
    struct frame_member member[FRAME_MAX_KEYS];
    char key_buf[FRAME_KEY_MAX];          /* the depth-1 key being read (scratch) */
    uint64_t stack[FRAME_MAX_DEPTH / 64]; /* bit d: container at depth d+1 is an object */
};

/*
 * Prepare `s` for a new stream. max_depth is the deepest container nesting
 * allowed (the top-level object is depth 1; 0 allows scalars only); values
 * above FRAME_MAX_DEPTH are clamped to it. flags: FRAME_F_*. No watched keys.
 */
void frame_init(struct frame_scanner *s, uint32_t max_depth, uint32_t flags);

/*
 * Watch a top-level key (before the first feed). `key` is compared as raw
 * bytes with the key text between the quotes; it must stay valid while the
 * scanner is used (string literals are typical) and be 1..FRAME_KEY_MAX
 * printable ASCII bytes without '"' or '\'. Returns the slot index (0, 1, ...
 * in call order, used with frame_member_at()) or -EINVAL / -ENOSPC.
 */
int frame_watch(struct frame_scanner *s, const char *key, size_t len);

/* Start over on a new value, keeping max_depth, flags and watched keys. */
void frame_reset(struct frame_scanner *s);

/*
 * Scan the next `len` bytes of the stream. Returns FRAME_MORE (all consumed,
 * *consumed = len), FRAME_DONE (*consumed = bytes of this chunk up to and
 * including the value's last byte; leading whitespace counts) or a negative
 * FRAME_E_* (frame_error_offset() names the byte). Once DONE or an error was
 * returned, further feeds return the same result with *consumed = 0 until
 * frame_reset()/frame_init(). len 0 is allowed (buf may then be NULL).
 */
int frame_feed(struct frame_scanner *s, const char *buf, size_t len, size_t *consumed);

/*
 * End of input. Completes a top-level number (line-based use) and returns
 * FRAME_DONE; returns FRAME_DONE if already done, the sticky error after an
 * error, FRAME_E_EMPTY if no value started, else FRAME_E_TRUNC (error offset
 * = end of input).
 */
int frame_finish(struct frame_scanner *s);

/* Short English description of a FRAME_* result, for messages and logs. */
const char *frame_strerror(int rc);

/* Stream offset of the byte that caused the error (valid after an error). */
static inline uint64_t frame_error_offset(const struct frame_scanner *s)
{
    return s->err_offset;
}

/* Total bytes consumed so far (the stream offset of the next byte). */
static inline uint64_t frame_offset(const struct frame_scanner *s)
{
    return s->offset;
}

/* True once frame_feed()/frame_finish() returned FRAME_DONE. */
static inline bool frame_is_done(const struct frame_scanner *s)
{
    return s->result == FRAME_DONE;
}

/* Kind of the top-level value (FRAME_KIND_NONE before it starts). */
static inline enum frame_kind frame_top_kind(const struct frame_scanner *s)
{
    return (enum frame_kind)s->top_kind;
}

/* Capture record of watched slot `i` (from frame_watch). */
static inline const struct frame_member *frame_member_at(const struct frame_scanner *s, unsigned i)
{
    return &s->member[i];
}

/* True when any string in the value held a byte >= 0x80. */
static inline bool frame_non_ascii(const struct frame_scanner *s)
{
    return s->non_ascii;
}

/* True when some top-level key was written with a backslash escape, so it
 * was not compared with the watched keys. */
static inline bool frame_key_escaped(const struct frame_scanner *s)
{
    return s->key_escaped;
}

/* Number of leading JSON whitespace bytes (space, tab, LF, CR) in buf: after
 * FRAME_DONE, buf + consumed has extra data iff this is < the rest's length. */
static inline size_t frame_ws_span(const char *buf, size_t len)
{
    size_t i = 0;
    while (i < len && (buf[i] == ' ' || buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\t'))
        i++;
    return i;
}

#endif /* BROKER_FRAME_H */
