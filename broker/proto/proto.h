/*
 * proto.h - client protocol: request parsing, response and backend-request
 * writing, backend-reply classification.
 *
 * Design: a request line is scanned once by the frame scanner with member
 * capture on the six known top-level keys; the request is then a set of
 * spans into the caller's line (no allocation, no copy, no tree). `params`
 * is forwarded to the backend as the client wrote it when it is ASCII-only,
 * else rewritten with \uXXXX escapes (the Blender add-on splits multi-byte
 * characters across its 8192-byte reads). Backend replies are classified
 * from the scanner that framed them, again without a second pass.
 *
 * Policy choices the SPEC leaves open:
 *   - Unknown top-level request keys are accepted and ignored (forward
 *     compatible); a duplicated known key is bad_request.
 *   - A top-level key written with a backslash escape is bad_request: it
 *     could spell a known key ("\u0074ype") that the raw-byte matcher would
 *     not see, and two readers would then disagree on the request.
 *   - `params: null` is refused (SPEC: optional object); omit it instead.
 *   - `type`, `backend` and string `id` are compared as raw bytes; escapes
 *     in `type`/`backend` therefore fail their checks.
 *   - max_json_depth counts the top-level object as depth 1.
 *
 * Writers append to a caller-owned struct proto_buf and grow it with
 * realloc; on -ENOMEM nothing is appended (buf->len is unchanged) and
 * nothing aborts. Everything here is reentrant; no globals.
 */
#ifndef BROKER_PROTO_H
#define BROKER_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "frame.h"

/* Error codes; names (proto_code_name) are part of the client protocol. */
enum proto_code {
    PROTO_BAD_REQUEST = 0,
    PROTO_INVALID_PARAMS,
    PROTO_TOO_LARGE,
    PROTO_RATE_LIMITED,
    PROTO_OVERLOADED,
    PROTO_UNAVAILABLE,
    PROTO_TIMEOUT,
    PROTO_BACKEND_ERROR,
    PROTO_BAD_BACKEND_RESPONSE,
    PROTO_FORBIDDEN,
    PROTO_UNKNOWN_BACKEND,
    PROTO_SHUTTING_DOWN,
    PROTO_INTERNAL,
    PROTO_CODE_COUNT
};
#define PROTO_CODE_COUNT (PROTO_INTERNAL + 1)

/* "bad_request", ...; "internal" for an out-of-range value. */
const char *proto_code_name(enum proto_code code);

#define PROTO_ID_MAX         128     /* string id: raw bytes between the quotes */
#define PROTO_TYPE_MAX       64      /* [a-z][a-z0-9_]{0,63} */
#define PROTO_BACKEND_MAX    64      /* backend name, raw bytes */
#define PROTO_TIMEOUT_MAX_MS 600000u /* timeout_ms upper bound */
#define PROTO_MESSAGE_MAX    500     /* error messages are cut to this many bytes */
#define PROTO_ERRMSG_MAX     192     /* room for a parse error message */

/* A run of bytes owned by someone else. ptr == NULL means "absent". */
struct proto_span {
    const char *ptr;
    size_t len;
};

struct proto_limits {
    size_t max_request_bytes; /* 0: default 1048576 */
    uint32_t max_json_depth;  /* 0: default 64 */
};

/* A parsed request: spans point into the caller's line, which must outlive
 * them (params may point at a static "{}"). */
struct proto_request {
    struct proto_span id;      /* raw JSON text: 42, -7 or "abc" (quotes included) */
    struct proto_span type;    /* between the quotes; matches [a-z][a-z0-9_]{0,63} */
    struct proto_span params;  /* raw JSON object text, or "{}" when absent */
    struct proto_span backend; /* between the quotes, 1..64 bytes; ptr NULL if absent */
    int64_t id_int;            /* the id's value when !id_is_string */
    uint32_t timeout_ms;       /* 0 = not given */
    bool id_is_string;
    bool params_ascii; /* params holds no byte >= 0x80: forward verbatim */
    bool cache;        /* default true */
};

/* Why a request was refused. id.ptr != NULL when a valid id was recovered
 * from a syntactically valid object, so the error response can echo it. */
struct proto_error {
    enum proto_code code;
    struct proto_span id;
    size_t msg_len;
    char msg[PROTO_ERRMSG_MAX]; /* NUL-terminated, plain text (not escaped) */
};

/*
 * Parse one request line (without its '\n'; one trailing '\r' is ignored).
 * lim may be NULL (defaults). Returns 0 and fills *out, or fills *err and
 * returns -E2BIG (too_large: len > max_request_bytes) or -EINVAL
 * (bad_request: not JSON, not an object, a field missing or wrong; the
 * message names the field). Never allocates.
 */
int proto_parse_request(const char *line, size_t len, const struct proto_limits *lim,
                        struct proto_request *out, struct proto_error *err);

/* Decode a JSON string token (quotes included, already checked by the
 * scanner) into UTF-8 bytes in out: escapes resolved, an unpaired surrogate
 * becomes U+FFFD. Returns the length, or SIZE_MAX when cap is too small. */
size_t proto_json_string_decode(const char *tok, size_t len, char *out, size_t cap);

/*
 * The same parse in two steps, for a caller that frames requests itself by
 * JSON completeness (the add-on protocol of the compat listener, front/
 * compat.c): proto_request_scanner_init prepares a scanner that watches the
 * request keys (max_json_depth from lim; frame_flags as frame_init); the
 * caller feeds it incrementally, and once it returned FRAME_DONE on
 * buf[0..len) (buf[0] is stream offset 0) proto_request_from_scanner checks
 * the fields from the captured spans without scanning again. A top-level
 * value other than an object is bad_request. flags: PROTO_REQ_NO_ID - the
 * protocol has no id: any "id" member is ignored and out->id is "0".
 * proto_request_syntax_error fills err for a scanner that failed with rc (a
 * FRAME_E_* code) and returns its message. Neither allocates.
 */
#define PROTO_REQ_NO_ID 0x1u
void proto_request_scanner_init(struct frame_scanner *sc, const struct proto_limits *lim,
                                uint32_t frame_flags);
int proto_request_from_scanner(const char *buf, size_t len, const struct frame_scanner *sc,
                               unsigned flags, struct proto_request *out, struct proto_error *err);
const char *proto_request_syntax_error(int rc, const struct frame_scanner *sc,
                                       struct proto_error *err);

/* --- output buffer ----------------------------------------------------- */

struct proto_buf {
    char *data;
    size_t len, cap;
};

static inline void proto_buf_init(struct proto_buf *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
}

/* Release the storage; b may be NULL. The buffer can be reused after. */
void proto_buf_free(struct proto_buf *b);

/* Make room for `extra` more bytes. 0 or -ENOMEM (buffer unchanged). */
int proto_buf_reserve_try(struct proto_buf *b, size_t extra);

/* Append bytes. 0 or -ENOMEM (nothing appended). */
int proto_buf_append_try(struct proto_buf *b, const void *data, size_t len);

/* --- writers (each appends one complete item or nothing) --------------- */

/*
 * {"id":<id>,"status":"success","result":<result>,"cached":<bool>}\n
 * id: raw JSON (a request's id span); NULL or ptr NULL writes null.
 * result: one valid JSON value (as framed by the scanner); raw CR/LF in it
 * can only be whitespace and are written as spaces so the response stays
 * one line. ptr NULL writes null. 0 or -ENOMEM.
 */
int proto_write_success(struct proto_buf *b, const struct proto_span *id,
                        const struct proto_span *result, bool cached);

/*
 * proto_write_success with flags: PROTO_ANSWER_CACHED writes "cached":true,
 * PROTO_ANSWER_STALE adds "stale":true (served from an expired entry while
 * the backend could not answer), PROTO_ANSWER_CLEAN says result holds no raw
 * CR/LF (it came from the cache, cleaned when stored): no scan. When
 * result_off is not NULL it receives the offset in b of the result as
 * written (the client-ready bytes the cache stores). 0 or -ENOMEM.
 */
#define PROTO_ANSWER_CACHED 0x1u
#define PROTO_ANSWER_STALE 0x2u
#define PROTO_ANSWER_CLEAN 0x4u
int proto_write_answer(struct proto_buf *b, const struct proto_span *id,
                       const struct proto_span *result, unsigned flags, size_t *result_off);

/* Every answer starts with {"id":<id>; this is that prefix's length for an
 * id span (what follows it is the same for every request that shares the
 * answer: coalesced followers). */
size_t proto_answer_id_prefix_len(const struct proto_span *id);

/* Where the params of a backend request written by
 * proto_write_backend_request for a type of type_len bytes sit in b. */
struct proto_span proto_backend_request_params(const struct proto_buf *b, size_t type_len,
                                               bool ndjson);

/* Flags for proto_write_json_string / proto_write_error_ex.
 * PROTO_STR_JSON: the input is the raw contents of a valid JSON string
 * (between the quotes); decode its escapes before sanitising. */
#define PROTO_STR_JSON 0x1u

/*
 * Write `s` as a quoted JSON string, sanitised: invalid UTF-8 becomes
 * U+FFFD; control characters (C0, DEL, C1), U+2028/2029 and bidi overrides
 * become spaces; '"' and '\' are escaped; the text (UTF-8, before escaping)
 * is cut on a character boundary to at most max_bytes, ending in "..." when
 * cut (max_bytes >= 3). Other non-ASCII text is kept as UTF-8. 0 or -ENOMEM.
 */
int proto_write_json_string(struct proto_buf *b, const char *s, size_t len, size_t max_bytes,
                            unsigned flags);

/*
 * {"id":<id|null>,"status":"error","error":{"code":"<code>","message":"...",
 *  "retry_after_ms":N}}\n
 * The message is untrusted plain bytes, sanitised and cut to
 * PROTO_MESSAGE_MAX bytes (proto_write_json_string); retry_after_ms is
 * written only when >= 0. 0 or -ENOMEM.
 */
int proto_write_error(struct proto_buf *b, const struct proto_span *id, enum proto_code code,
                      const char *msg, size_t msg_len, int64_t retry_after_ms);

/* proto_write_error with PROTO_STR_* flags for the message (PROTO_STR_JSON
 * for a backend's message span, see struct proto_reply). */
int proto_write_error_ex(struct proto_buf *b, const struct proto_span *id, enum proto_code code,
                         const char *msg, size_t msg_len, int64_t retry_after_ms, unsigned flags);

/*
 * {"type":"<type>","params":<params>} (no newline; append one for ndjson
 * backends). type must be ASCII (a validated request's type is). params is
 * copied verbatim when params_ascii, else every non-ASCII UTF-8 sequence is
 * written as \uXXXX (a surrogate pair above U+FFFF) - valid because in valid
 * JSON such bytes occur only inside strings. The output is pure ASCII.
 * 0, -ENOMEM, or -EINVAL if params holds invalid UTF-8 (nothing written).
 */
int proto_write_backend_request(struct proto_buf *b, const struct proto_span *type,
                                const struct proto_span *params, bool params_ascii);

/* --- backend replies --------------------------------------------------- */

enum proto_reply_kind {
    PROTO_REPLY_SUCCESS,
    PROTO_REPLY_ERROR,
    PROTO_REPLY_BAD, /* -> bad_backend_response */
};

struct proto_reply {
    enum proto_reply_kind kind;
    struct proto_span result;  /* SUCCESS: raw JSON value ("null" if absent) */
    struct proto_span message; /* ERROR: the message (see message_flags) */
    unsigned message_flags;    /* PROTO_STR_JSON: message is raw JSON string contents */
    const char *reason;        /* BAD: static English text, why */
};

/* Slots of the watched keys in a scanner set up by proto_reply_scanner_init. */
enum { PROTO_REPLY_SLOT_STATUS, PROTO_REPLY_SLOT_RESULT, PROTO_REPLY_SLOT_MESSAGE };

/* Prepare a scanner for framing backend replies: frame_init(max_depth,
 * flags) and watch "status", "result", "message" in the slots above. Reuse
 * it across replies with frame_reset(). */
void proto_reply_scanner_init(struct frame_scanner *s, uint32_t max_depth, uint32_t flags);

/*
 * Classify one complete backend reply. With a scanner (set up by
 * proto_reply_scanner_init, having returned FRAME_DONE on exactly these
 * bytes: buf[0] is stream offset 0) the captured offsets are used and
 * nothing is scanned again; with s == NULL the bytes are scanned here.
 * Object with "status":"success" -> SUCCESS (result span; "null" when
 * missing; a result like {"error":...} is passed on untouched); "status":
 * "error" -> ERROR (message span, or a fixed text when absent); anything
 * else (not an object, status missing, duplicated, not a string, empty or
 * unknown; a duplicated result/message) -> BAD with a reason.
 * Returns 0 for SUCCESS/ERROR, -EBADMSG for BAD. Never allocates.
 */
int proto_parse_backend_reply(const char *buf, size_t len, const struct frame_scanner *s,
                              struct proto_reply *out);

#endif /* BROKER_PROTO_H */
