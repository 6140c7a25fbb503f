/*
 * validate.c - what a request may ask Blender to do: one table, command ->
 * parameter -> rule, checked before the request goes anywhere.
 *
 * The earlier systems passed whatever a client sent straight to Blender: a
 * location with two numbers, a colour of 1.5, an object name carrying
 * terminal escapes, a screenshot path with "..", any script (seeds/000
 * BUG-008, BUG-012, EDGE-002, EDGE-003). Here each of those gets one
 * invalid_params (or forbidden) answer naming the JSON path, and never
 * reaches the backend.
 *
 * The table covers the commands of the public blender-mcp add-on as it is
 * today (scene and object info, screenshots, execute_code, Poly Haven,
 * Sketchfab, Hyper3D Rodin, Hunyuan3D) and the object commands of its
 * earlier versions that clients still send (create_object, modify_object,
 * delete_object, set_material). It is the one place to read and extend:
 * add a row to `commands`. A command not in it passes with the checks every
 * request gets (proto.c: size, depth, UTF-8, no NaN, no raw control
 * characters).
 *
 * Cost: a command without rules costs one lookup in the table. A command
 * with rules has its params (already checked JSON text) scanned once more
 * by the incremental scanner (frame.c) watching just its parameter names,
 * and only those values are looked at: no JSON tree is built, nothing is
 * allocated unless a search query is rewritten.
 *
 * Rewriting: a search query has its whitespace folded ("a \t b" -> "a b");
 * the params text is then rebuilt into `out` with that one value replaced.
 * Everything else is checked, never changed.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "screen.h"
#include "validate.h"

enum pkind {
    P_VEC3,  /* exactly three finite numbers */
    P_COLOR, /* three or four finite numbers in [0, 1] */
    P_NAME,  /* a Blender datablock name: 1..63 bytes, no control characters */
    P_QUERY, /* a search: at most 200 characters from a safe set, whitespace folded */
    P_PATH,  /* a file path: no NUL, no ".." segment, inside paths.allowed_roots */
    P_ID,    /* an asset or job id: 1..128 of [A-Za-z0-9_.-] */
    P_ENUM,  /* one of a list of strings */
    P_INT,   /* an integer in [lo, hi] */
    P_NUM,   /* a finite number in [lo, hi] */
    P_BOOL,
    P_TEXT, /* a string of at most hi bytes without NUL */
    P_URL,  /* http(s)://, at most 2048 bytes, no spaces or control characters */
    P_CODE, /* a Python script: scripts.policy (screen.c) */
};

struct prule {
    const char *name;
    enum pkind kind;
    bool required;
    double lo, hi;
    const char *const *choices; /* P_ENUM, NULL-terminated */
};

struct command {
    const char *type;
    struct prule params[FRAME_MAX_KEYS];
};

#define NAME_MAX_BYTES  63
#define QUERY_MAX_CHARS 200
#define ID_MAX          128
#define URL_MAX         2048
#define PATH_MAX_BYTES  4096

static const char *const image_formats[] = {"png", "jpg", "jpeg", NULL};
static const char *const ph_types[] = {"hdris", "textures", "models", "all", NULL};
static const char *const ph_res[] = {"1k", "2k", "4k", "8k", "16k", NULL};
static const char *const ph_formats[] = {"hdr", "exr", "jpg", "png", "gltf", "fbx", "blend", NULL};
static const char *const object_types[] = {"CUBE", "SPHERE", "CYLINDER", "PLANE", "CONE", "TORUS",
                                           "EMPTY", "CAMERA", "LIGHT", "MONKEY", NULL};

#define REQ(n, k)          {n, k, true, 0, 0, NULL}
#define OPT(n, k)          {n, k, false, 0, 0, NULL}
#define ENUM_(n, req, l)   {n, P_ENUM, req, 0, 0, l}
#define RANGE(n, k, l, h)  {n, k, false, l, h, NULL}

static const struct command commands[] = {
    /* the add-on today */
    {"get_object_info", {REQ("name", P_NAME)}},
    {"get_viewport_screenshot",
     {RANGE("max_size", P_INT, 1, 16384), OPT("filepath", P_PATH),
      ENUM_("format", false, image_formats)}},
    {"execute_code", {REQ("code", P_CODE)}},
    {"get_polyhaven_categories", {ENUM_("asset_type", true, ph_types)}},
    {"search_polyhaven_assets",
     {ENUM_("asset_type", false, ph_types), RANGE("categories", P_TEXT, 0, 1000)}},
    {"download_polyhaven_asset",
     {REQ("asset_id", P_ID), ENUM_("asset_type", true, ph_types), ENUM_("resolution", false, ph_res),
      ENUM_("file_format", false, ph_formats)}},
    {"set_texture", {REQ("object_name", P_NAME), REQ("texture_id", P_ID)}},
    {"search_sketchfab_models",
     {REQ("query", P_QUERY), RANGE("categories", P_TEXT, 0, 1000), RANGE("count", P_INT, 1, 100),
      OPT("downloadable", P_BOOL)}},
    {"get_sketchfab_model_preview", {REQ("uid", P_ID)}},
    {"download_sketchfab_model",
     {REQ("uid", P_ID), OPT("normalize_size", P_BOOL), RANGE("target_size", P_NUM, 1e-6, 1e6)}},
    {"create_rodin_job", {RANGE("text_prompt", P_TEXT, 0, 4000)}},
    {"poll_rodin_job_status", {OPT("subscription_key", P_ID), OPT("request_id", P_ID)}},
    {"import_generated_asset",
     {REQ("name", P_NAME), OPT("task_uuid", P_ID), OPT("request_id", P_ID)}},
    {"create_hunyuan_job", {RANGE("text_prompt", P_TEXT, 0, 4000)}},
    {"poll_hunyuan_job_status", {OPT("job_id", P_ID)}},
    {"import_generated_asset_hunyuan", {REQ("name", P_NAME), OPT("zip_file_url", P_URL)}},
    /* earlier versions of the add-on, still sent by existing clients */
    {"create_object",
     {ENUM_("type", false, object_types), OPT("name", P_NAME), OPT("location", P_VEC3),
      OPT("rotation", P_VEC3), OPT("scale", P_VEC3)}},
    {"modify_object",
     {REQ("name", P_NAME), OPT("location", P_VEC3), OPT("rotation", P_VEC3), OPT("scale", P_VEC3),
      OPT("visible", P_BOOL)}},
    {"delete_object", {REQ("name", P_NAME)}},
    {"set_material",
     {REQ("object_name", P_NAME), OPT("material_name", P_NAME), OPT("create_if_missing", P_BOOL),
      OPT("color", P_COLOR)}},
};

static const struct command *find_command(const char *type, size_t len)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (commands[i].type[0] == type[0] && strncmp(commands[i].type, type, len) == 0 &&
            commands[i].type[len] == '\0')
            return &commands[i];
    return NULL;
}

bool validate_has_rules(const char *type, size_t len)
{
    return find_command(type, len) != NULL;
}

/* --- one value --------------------------------------------------------- */

struct vctx {
    const struct validate_ctx *ctx;
    const struct prule *rule;
    char *msg;
    size_t msglen;
    /* a rewritten value (P_QUERY), as a JSON string token */
    char *new_tok;
    size_t new_len;
};

__attribute__((format(printf, 2, 3))) static enum validate_result bad(struct vctx *v,
                                                                       const char *fmt, ...)
{
    int n = snprintf(v->msg, v->msglen, "params.%s", v->rule->name);
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < v->msglen)
        vsnprintf(v->msg + n, v->msglen - (size_t)n, fmt, ap);
    va_end(ap);
    return VALIDATE_INVALID;
}

static const char *kind_word(uint8_t k)
{
    switch (k) {
    case FRAME_KIND_OBJECT:
        return "an object";
    case FRAME_KIND_ARRAY:
        return "an array";
    case FRAME_KIND_STRING:
        return "a string";
    case FRAME_KIND_NUMBER:
        return "a number";
    case FRAME_KIND_TRUE:
    case FRAME_KIND_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

static const char *skip_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* A JSON number token at p (the scanner checked the grammar): its value,
 * and where it ends. false when p is not a number. */
static bool number_at(const char *p, const char *e, double *out, const char **end)
{
    char buf[64];
    size_t n = 0;
    while (p + n < e && n < sizeof buf - 1 && strchr("+-0123456789.eE", p[n]) && p[n])
        n++;
    if (n == 0 || (p[0] != '-' && (p[0] < '0' || p[0] > '9')))
        return false;
    memcpy(buf, p, n);
    buf[n] = '\0';
    *out = strtod(buf, NULL);
    *end = p + n;
    return true;
}

/* [n, n, n] or [r, g, b(, a)]: counts and ranges. */
static enum validate_result check_numbers(struct vctx *v, const char *p, const char *e,
                                          unsigned min, unsigned max, bool unit)
{
    p = skip_ws(p, e) + 1; /* '[' */
    unsigned i = 0;
    for (;;) {
        p = skip_ws(p, e);
        if (p < e && *p == ']')
            break;
        double d;
        const char *end;
        if (!number_at(p, e, &d, &end))
            return bad(v, "[%u]: not a number", i);
        if (!isfinite(d))
            return bad(v, "[%u]: not a finite number", i);
        if (unit && (d < 0.0 || d > 1.0))
            return bad(v, "[%u]: %g is outside [0, 1]", i, d);
        if (++i > max)
            break;
        p = skip_ws(end, e);
        if (p < e && *p == ',')
            p++;
    }
    if (i < min || i > max) {
        if (min == max)
            return bad(v, ": %s%u numbers, expected %u", i > max ? "more than " : "",
                       i > max ? max : i, min);
        return bad(v, ": %s%u numbers, expected %u to %u", i > max ? "more than " : "",
                   i > max ? max : i, min, max);
    }
    return VALIDATE_OK;
}

/* Decode a string token into buf (cap bytes); SIZE_MAX when longer. */
static size_t decode(const char *tok, size_t len, char *buf, size_t cap)
{
    return proto_json_string_decode(tok, len, buf, cap);
}

/* The first control character (C0, DEL, C1) in UTF-8 text, or -1. */
static long control_at(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return (long)i;
        if (c == 0xC2 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 &&
            (unsigned char)s[i + 1] <= 0x9F)
            return (long)i; /* U+0080..U+009F: C1 controls (CSI and friends) */
    }
    return -1;
}

static enum validate_result check_name(struct vctx *v, const char *tok, size_t len)
{
    char buf[NAME_MAX_BYTES + 8];
    size_t n = decode(tok, len, buf, NAME_MAX_BYTES);
    if (n == SIZE_MAX)
        return bad(v, ": longer than %d bytes", NAME_MAX_BYTES);
    if (n == 0)
        return bad(v, ": empty");
    long at = control_at(buf, n);
    if (at >= 0)
        return bad(v, ": control character at byte %ld", at);
    return VALIDATE_OK;
}

/* Next code point of valid UTF-8 (decode() produced it). */
static uint32_t next_cp(const unsigned char **pp, const unsigned char *e)
{
    const unsigned char *p = *pp;
    uint32_t c = *p++;
    int more = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    c &= more == 3 ? 0x07u : more == 2 ? 0x0Fu : more == 1 ? 0x1Fu : 0x7Fu;
    while (more-- && p < e)
        c = (c << 6) | (*p++ & 0x3Fu);
    *pp = p;
    return c;
}

static bool query_char_ok(uint32_t c)
{
    if (c < 0x80)
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               (c != 0 && strchr(" -_.,'&+()/:#", (int)c) != NULL);
    /* letters of other scripts, but no C1 controls, line separators or
     * bidi overrides (which reorder what a person reads) */
    return c >= 0xA0 && !(c >= 0x2028 && c <= 0x202E) && !(c >= 0x2066 && c <= 0x2069) &&
           c != 0xFEFF;
}

static enum validate_result check_query(struct vctx *v, const char *tok, size_t len)
{
    char buf[QUERY_MAX_CHARS * 4 + 64], folded[QUERY_MAX_CHARS * 4 + 64];
    size_t n = decode(tok, len, buf, sizeof buf);
    if (n == SIZE_MAX)
        return bad(v, ": longer than %d characters", QUERY_MAX_CHARS);
    /* fold: runs of whitespace become one space, none at either end */
    size_t f = 0;
    bool space = false;
    for (size_t i = 0; i < n; i++) {
        char c = buf[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
            space = f > 0;
            continue;
        }
        if (space)
            folded[f++] = ' ';
        space = false;
        folded[f++] = c;
    }
    if (f == 0)
        return bad(v, ": empty");
    const unsigned char *p = (const unsigned char *)folded, *e = p + f;
    unsigned chars = 0;
    while (p < e) {
        uint32_t c = next_cp(&p, e);
        if (!query_char_ok(c)) {
            if (c >= 0x20 && c < 0x7f)
                return bad(v, ": '%c' is not allowed in a search", (int)c);
            return bad(v, ": character U+%04X is not allowed in a search", (unsigned)c);
        }
        chars++;
    }
    if (chars > QUERY_MAX_CHARS)
        return bad(v, ": %u characters, at most %d", chars, QUERY_MAX_CHARS);
    if (f + 2 == len && memcmp(folded, tok + 1, f) == 0)
        return VALIDATE_OK; /* unchanged (and had no escapes) */
    /* the safe set has no '"', '\\' or control: quoting is enough */
    v->new_tok = malloc(f + 2);
    if (!v->new_tok)
        return VALIDATE_NOMEM;
    v->new_tok[0] = '"';
    memcpy(v->new_tok + 1, folded, f);
    v->new_tok[f + 1] = '"';
    v->new_len = f + 2;
    return VALIDATE_REWRITTEN;
}

/* Normalise a path in place: "//" and "/./" collapse, a trailing "/" goes.
 * Returns false when a ".." segment is left (it is never resolved: the
 * broker does not know Blender's working directory or its symlinks). */
static bool path_normalise(char *p, size_t *len)
{
    size_t n = *len, o = 0, i = 0;
    bool abs = n > 0 && p[0] == '/';
    if (abs)
        o = i = 1;
    while (i < n) {
        size_t j = i;
        while (j < n && p[j] != '/')
            j++;
        size_t seg = j - i;
        if (seg == 2 && p[i] == '.' && p[i + 1] == '.')
            return false;
        if (seg > 0 && !(seg == 1 && p[i] == '.')) {
            if (o > (abs ? 1u : 0u))
                p[o++] = '/';
            memmove(p + o, p + i, seg);
            o += seg;
        }
        i = j + 1;
    }
    *len = o;
    return true;
}

static bool under_root(const char *p, size_t n, const char *root)
{
    char r[PATH_MAX_BYTES + 1];
    size_t rl = strlen(root);
    if (rl > PATH_MAX_BYTES)
        return false;
    memcpy(r, root, rl);
    if (!path_normalise(r, &rl))
        return false;
    if (rl == 1) /* "/" */
        return n >= 1 && p[0] == '/';
    return n >= rl && memcmp(p, r, rl) == 0 && (n == rl || p[rl] == '/');
}

static enum validate_result check_path(struct vctx *v, const char *tok, size_t len)
{
    char buf[PATH_MAX_BYTES + 1];
    size_t n = decode(tok, len, buf, PATH_MAX_BYTES);
    if (n == SIZE_MAX)
        return bad(v, ": longer than %d bytes", PATH_MAX_BYTES);
    if (n == 0)
        return bad(v, ": empty");
    if (memchr(buf, '\0', n))
        return bad(v, ": contains a NUL byte");
    long at = control_at(buf, n);
    if (at >= 0)
        return bad(v, ": control character at byte %ld", at);
    if (!path_normalise(buf, &n))
        return bad(v, ": a \"..\" segment is not allowed");
    const struct config_strlist *roots = v->ctx->allowed_roots;
    if (!roots || roots->n == 0)
        return VALIDATE_OK;
    if (buf[0] != '/')
        return bad(v, ": must be an absolute path inside paths.allowed_roots");
    for (size_t i = 0; i < roots->n; i++)
        if (under_root(buf, n, roots->v[i]))
            return VALIDATE_OK;
    return bad(v, ": \"%.*s\" is outside paths.allowed_roots", (int)(n > 120 ? 120 : n), buf);
}

static enum validate_result check_id(struct vctx *v, const char *tok, size_t len)
{
    char buf[ID_MAX + 8];
    size_t n = decode(tok, len, buf, ID_MAX);
    if (n == SIZE_MAX)
        return bad(v, ": longer than %d bytes", ID_MAX);
    if (n == 0)
        return bad(v, ": empty");
    for (size_t i = 0; i < n; i++) {
        char c = buf[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return bad(v, ": only letters, digits, '_', '-' and '.' are allowed");
    }
    if (strcmp(buf + 0, "") == 0 || (n <= 2 && buf[0] == '.' && (n == 1 || buf[1] == '.')))
        return bad(v, ": \".\" and \"..\" are not ids");
    return VALIDATE_OK;
}

static enum validate_result check_enum(struct vctx *v, const char *tok, size_t len)
{
    char buf[64];
    size_t n = decode(tok, len, buf, sizeof buf - 1);
    if (n != SIZE_MAX) {
        buf[n] = '\0';
        for (const char *const *c = v->rule->choices; *c; c++)
            if (strcmp(buf, *c) == 0)
                return VALIDATE_OK;
    }
    char list[160];
    size_t o = 0;
    for (const char *const *c = v->rule->choices; *c && o < sizeof list - 1; c++) {
        int k = snprintf(list + o, sizeof list - o, "%s%s", o ? ", " : "", *c);
        o += k > 0 ? (size_t)k : 0;
    }
    return bad(v, ": must be one of %s", list);
}

static enum validate_result check_text(struct vctx *v, const char *tok, size_t len, size_t max,
                                       bool url)
{
    char *buf = malloc(max + 8);
    if (!buf)
        return VALIDATE_NOMEM;
    size_t n = decode(tok, len, buf, max);
    enum validate_result r = VALIDATE_OK;
    if (n == SIZE_MAX)
        r = bad(v, ": longer than %zu bytes", max);
    else if (memchr(buf, '\0', n))
        r = bad(v, ": contains a NUL byte");
    else if (url && !((n > 8 && memcmp(buf, "https://", 8) == 0) ||
                      (n > 7 && memcmp(buf, "http://", 7) == 0)))
        r = bad(v, ": must be an http:// or https:// URL");
    else if (url) {
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)buf[i] <= 0x20 || buf[i] == 0x7f) {
                r = bad(v, ": spaces and control characters are not allowed in a URL");
                break;
            }
    }
    free(buf);
    return r;
}

static enum validate_result check_value(struct vctx *v, const char *val, size_t len, uint8_t kind)
{
    const struct prule *rule = v->rule;
    if (kind == FRAME_KIND_NULL && !rule->required)
        return VALIDATE_OK; /* an optional parameter given as null: its default */
    uint8_t want;
    switch (rule->kind) {
    case P_VEC3:
    case P_COLOR:
        want = FRAME_KIND_ARRAY;
        break;
    case P_INT:
    case P_NUM:
        want = FRAME_KIND_NUMBER;
        break;
    case P_BOOL:
        if (kind == FRAME_KIND_TRUE || kind == FRAME_KIND_FALSE)
            return VALIDATE_OK;
        return bad(v, ": %s, expected a boolean", kind_word(kind));
    default:
        want = FRAME_KIND_STRING;
    }
    if (kind != want)
        return bad(v, ": %s, expected %s", kind_word(kind), kind_word(want));
    switch (rule->kind) {
    case P_VEC3:
        return check_numbers(v, val, val + len, 3, 3, false);
    case P_COLOR:
        return check_numbers(v, val, val + len, 3, 4, true);
    case P_NAME:
        return check_name(v, val, len);
    case P_QUERY:
        return check_query(v, val, len);
    case P_PATH:
        return check_path(v, val, len);
    case P_ID:
        return check_id(v, val, len);
    case P_ENUM:
        return check_enum(v, val, len);
    case P_INT:
    case P_NUM: {
        double d;
        const char *end;
        if (!number_at(val, val + len, &d, &end) || !isfinite(d))
            return bad(v, ": not a finite number");
        if (rule->kind == P_INT && (memchr(val, '.', len) || d != floor(d)))
            return bad(v, ": %g is not a whole number", d);
        if (d < rule->lo || d > rule->hi)
            return bad(v, ": %g is outside [%g, %g]", d, rule->lo, rule->hi);
        return VALIDATE_OK;
    }
    case P_TEXT:
        return check_text(v, val, len, (size_t)rule->hi, false);
    case P_URL:
        return check_text(v, val, len, URL_MAX, true);
    case P_CODE: {
        char why[VALIDATE_MSG_MAX];
        int rc = screen_script(val, len, v->ctx->scripts, why, sizeof why);
        if (rc == 0)
            return VALIDATE_OK;
        if (rc == -EPERM) {
            snprintf(v->msg, v->msglen, "%s", why);
            return VALIDATE_FORBIDDEN;
        }
        return rc == -ENOMEM ? VALIDATE_NOMEM : bad(v, ": %s", why);
    }
    default:
        return VALIDATE_OK;
    }
}

/* --- one request ------------------------------------------------------- */

enum validate_result validate_params(const struct proto_request *rq, const struct validate_ctx *ctx,
                                     struct proto_buf *out, char *msg, size_t msglen)
{
    const struct command *cmd = find_command(rq->type.ptr, rq->type.len);
    if (!cmd)
        return VALIDATE_OK;
    struct frame_scanner sc;
    frame_init(&sc, FRAME_MAX_DEPTH, FRAME_F_TOP_OBJECT);
    unsigned nrules = 0;
    while (nrules < FRAME_MAX_KEYS && cmd->params[nrules].name) {
        frame_watch(&sc, cmd->params[nrules].name, strlen(cmd->params[nrules].name));
        nrules++;
    }
    size_t used;
    int rc = frame_feed(&sc, rq->params.ptr, rq->params.len, &used);
    if (rc == FRAME_MORE)
        rc = frame_finish(&sc);
    if (rc != FRAME_DONE) { /* proto.c checked it: not reachable */
        snprintf(msg, msglen, "params: %s", frame_strerror(rc));
        return VALIDATE_INVALID;
    }
    struct vctx v = {.ctx = ctx, .msg = msg, .msglen = msglen};
    enum validate_result res = VALIDATE_OK;
    const struct frame_member *rewrite = NULL;
    char *new_tok = NULL;
    size_t new_len = 0;
    for (unsigned i = 0; i < nrules; i++) {
        const struct frame_member *m = frame_member_at(&sc, i);
        v.rule = &cmd->params[i];
        if (m->kind == FRAME_KIND_NONE) {
            if (v.rule->required) {
                res = bad(&v, ": missing (%.*s needs it)", (int)rq->type.len, rq->type.ptr);
                break;
            }
            continue;
        }
        if (m->duplicate) {
            res = bad(&v, ": given more than once");
            break;
        }
        res = check_value(&v, rq->params.ptr + m->start, (size_t)(m->end - m->start), m->kind);
        if (res == VALIDATE_REWRITTEN) {
            free(new_tok); /* at most one rewritable parameter per command */
            new_tok = v.new_tok;
            new_len = v.new_len;
            v.new_tok = NULL;
            rewrite = m;
            res = VALIDATE_OK;
        }
        if (res != VALIDATE_OK)
            break;
    }
    if (res == VALIDATE_OK && rewrite) {
        out->len = 0;
        const char *p = rq->params.ptr;
        if (proto_buf_append_try(out, p, (size_t)rewrite->start) < 0 ||
            proto_buf_append_try(out, new_tok, new_len) < 0 ||
            proto_buf_append_try(out, p + rewrite->end, rq->params.len - (size_t)rewrite->end) < 0)
            res = VALIDATE_NOMEM;
        else
            res = VALIDATE_REWRITTEN;
    }
    free(new_tok);
    if (res == VALIDATE_NOMEM)
        snprintf(msg, msglen, "out of memory validating params");
    return res;
}
