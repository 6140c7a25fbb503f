/*
 * config_load.c - a JSON document into a validated config, and the check
 * that a freshly loaded config may replace the running one (reload).
 *
 * Parsing walks the JSON objects, not the table: for an object at lookup
 * prefix P (e.g. "backends[].health."), member k is either the row P+k, or a
 * section if some row starts with P+k+".", or an unknown key (with a
 * did-you-mean among P's members). Error paths use the display prefix with
 * real indexes ("backends[1].health."). A load parses into a scratch config
 * that starts from the defaults; only a fully valid scratch replaces the
 * caller's config, so a failed load (or reload) changes nothing. Each value
 * is parsed by its row's type; the rows themselves are in config.c.
 *
 * The reload check compares two loaded configs row by row and names the
 * first changed key that is not reloadable, in the same "path: reason"
 * form as a load error.
 *
 * Known limits: numbers must be JSON integers (5000.0 is refused, not
 * rounded); the value of an unknown key is not inspected.
 */
#include "config.h"
#include "config_priv.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>


/* s with its control bytes written as \xNN, so a message stays one
 * printable line: for texts that echo input but are not ours to quote
 * (jansson's "invalid escape near '"a\<LF>'", an address parser's reason). */
static void printable(char *out, size_t cap, const char *s)
{
    size_t o = 0;

    for (; *s && o + 5 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch < 0x20 || ch == 0x7F)
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", ch);
        else
            out[o++] = (char)ch;
    }
    out[o] = '\0';
}

/* --- parsing ----------------------------------------------------------- */

struct pctx {
    char *err;
    size_t errlen;
};

static int fail(struct pctx *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct pctx *c, const char *path, const char *fmt, ...)
{
    int n;

    if (!c->err || c->errlen == 0)
        return -EINVAL;
    n = snprintf(c->err, c->errlen, "%s: ", path);
    if (n >= 0 && (size_t)n < c->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

static int oom(struct pctx *c)
{
    if (c->err && c->errlen)
        snprintf(c->err, c->errlen, "%s", "out of memory while loading the configuration");
    return -ENOMEM;
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number with a fraction or exponent";
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    case JSON_NULL:
        return "null";
    }
    return "something else";
}

static int parse_int(struct pctx *c, const struct config_key *k, const json_t *v, const char *path,
                     int64_t *out)
{
    int64_t x = 0;

    if (!json_is_integer(v))
        return fail(c, path, "expected an integer, got %s", json_kind(v));
    x = (int64_t)json_integer_value(v);
    if (x < k->min)
        return fail(c, path, "%" PRId64 " is below the minimum %" PRId64, x, k->min);
    if (x > k->max)
        return fail(c, path, "%" PRId64 " is above the maximum %" PRId64, x, k->max);
    *out = x;
    return 0;
}

static int parse_number(struct pctx *c, const struct config_key *k, const json_t *v,
                        const char *path, void *p)
{
    int64_t x = 0;
    int rc = parse_int(c, k, v, path, &x);

    if (rc)
        return rc;
    if (k->type == CONFIG_T_U32)
        *(uint32_t *)p = (uint32_t)x;
    else if (k->type == CONFIG_T_SIZE)
        *(uint64_t *)p = (uint64_t)x;
    else
        *(int64_t *)p = x;
    return 0;
}

static int parse_string(struct pctx *c, const struct config_key *k, const json_t *v,
                        const char *path, char **p)
{
    const char *s;
    size_t len;
    char w[WHY_MAX], *copy;

    if (!json_is_string(v))
        return fail(c, path, "expected a string, got %s", json_kind(v));
    s = json_string_value(v);
    len = json_string_length(v);
    if (k->check && !k->check(s, len, w, sizeof(w)))
        return fail(c, path, "%s", w);
    copy = strndup(s, len);
    if (!copy)
        return oom(c);
    free(*p);
    *p = copy;
    return 0;
}

static int parse_enum(struct pctx *c, const struct config_key *k, const json_t *v, const char *path,
                      int *p)
{
    int i;

    if (!json_is_string(v))
        return fail(c, path, "expected a string, got %s", json_kind(v));
    i = config_enum_index(k->enum_names, json_string_value(v), json_string_length(v));
    if (i < 0) {
        char q[96], list[128];
        config_quote_value(q, sizeof(q), json_string_value(v), json_string_length(v));
        config_enum_names(k->enum_names, list, sizeof(list));
        return fail(c, path, "%s is not one of %s", q, list);
    }
    *p = i;
    return 0;
}

/* min = bits that must be set, max = bits that may be set. */
static int parse_mode(struct pctx *c, const struct config_key *k, const json_t *v, const char *path,
                      mode_t *p)
{
    const char *s;
    size_t len;
    unsigned m = 0;
    char q[96];

    if (!json_is_string(v))
        return fail(c, path, "expected an octal string such as \"0600\", got %s", json_kind(v));
    s = json_string_value(v);
    len = json_string_length(v);
    config_quote_value(q, sizeof(q), s, len);
    if (len == 0 || len > 4 || strspn(s, "01234567") != len)
        return fail(c, path, "%s is not an octal mode such as \"0600\"", q);
    for (size_t i = 0; i < len; i++)
        m = m * 8 + (unsigned)(s[i] - '0');
    if (m & ~(unsigned)k->max)
        return fail(c, path, "%s allows more than %04o: other users may never connect", q,
                    (unsigned)k->max);
    if ((m & (unsigned)k->min) != (unsigned)k->min)
        return fail(c, path, "%s must include %04o (owner read and write)", q, (unsigned)k->min);
    *p = (mode_t)m;
    return 0;
}

static int parse_address(struct pctx *c, const struct config_key *k, const json_t *v,
                         const char *path, struct config_address *p)
{
    char w[WHY_MAX];
    struct config_address a;

    if (json_is_null(v) && k->type == CONFIG_T_ADDRESS_OPT) {
        memset(p, 0, sizeof(*p));
        return 0;
    }
    if (!json_is_string(v))
        return fail(c, path, "expected a string%s, got %s",
                    k->type == CONFIG_T_ADDRESS_OPT ? " or null" : "", json_kind(v));
    if (config_address_parse(&a, json_string_value(v), json_string_length(v), w, sizeof(w))) {
        char q[96], reason[WHY_MAX * 4];
        config_quote_value(q, sizeof(q), json_string_value(v), json_string_length(v));
        printable(reason, sizeof(reason), w); /* it may quote the host: "[::<LF>1]" */
        return fail(c, path, "invalid address %s: %s", q, reason);
    }
    *p = a;
    return 0;
}

static int check_array(struct pctx *c, const json_t *v, const char *path)
{
    if (!json_is_array(v))
        return fail(c, path, "expected an array, got %s", json_kind(v));
    if (json_array_size(v) > CONFIG_LIST_MAX)
        return fail(c, path, "%zu entries; at most %d are allowed", json_array_size(v),
                    CONFIG_LIST_MAX);
    return 0;
}

static int parse_ids(struct pctx *c, const struct config_key *k, const json_t *v, const char *path,
                     struct config_idlist *p)
{
    size_t n = json_array_size(v);
    uint32_t *ids;
    char epath[PATH_MAX_DISPLAY + 24];
    int rc = check_array(c, v, path);

    if (rc)
        return rc;
    ids = n ? calloc(n, sizeof(*ids)) : NULL;
    if (n && !ids)
        return oom(c);
    for (size_t i = 0; i < n; i++) {
        int64_t x = 0;
        snprintf(epath, sizeof(epath), "%s[%zu]", path, i);
        rc = parse_int(c, k, json_array_get(v, i), epath, &x);
        if (rc) {
            free(ids);
            return rc;
        }
        ids[i] = (uint32_t)x;
    }
    free(p->v);
    p->v = ids;
    p->n = n;
    return 0;
}

static int parse_strs(struct pctx *c, const struct config_key *k, const json_t *v, const char *path,
                      struct config_strlist *p)
{
    struct config_strlist l = {NULL, 0};
    char epath[PATH_MAX_DISPLAY + 24], w[WHY_MAX];
    int rc = check_array(c, v, path);

    for (size_t i = 0; rc == 0 && i < json_array_size(v); i++) {
        const json_t *e = json_array_get(v, i);
        snprintf(epath, sizeof(epath), "%s[%zu]", path, i);
        if (!json_is_string(e))
            rc = fail(c, epath, "expected a string, got %s", json_kind(e));
        else if (k->check && !k->check(json_string_value(e), json_string_length(e), w, sizeof(w)))
            rc = fail(c, epath, "%s", w);
        else if (config_strlist_push(&l, json_string_value(e), json_string_length(e)))
            rc = oom(c);
    }
    if (rc) {
        config_strlist_free(&l);
        return rc;
    }
    config_strlist_free(p);
    *p = l;
    return 0;
}

static int parse_backends(struct pctx *c, const struct config_key *k, const json_t *v,
                          struct broker_config *cfg);

static int parse_value(struct pctx *c, const struct config_key *k, const json_t *v,
                       const char *path, void *base)
{
    void *p = config_target(k, base);

    switch (k->type) {
    case CONFIG_T_U32:
    case CONFIG_T_SIZE:
    case CONFIG_T_MS:
        return parse_number(c, k, v, path, p);
    case CONFIG_T_STRING:
        return parse_string(c, k, v, path, p);
    case CONFIG_T_ENUM:
        return parse_enum(c, k, v, path, p);
    case CONFIG_T_MODE:
        return parse_mode(c, k, v, path, p);
    case CONFIG_T_ADDRESS:
    case CONFIG_T_ADDRESS_OPT:
        return parse_address(c, k, v, path, p);
    case CONFIG_T_ID_LIST:
        return parse_ids(c, k, v, path, p);
    case CONFIG_T_STR_LIST:
        return parse_strs(c, k, v, path, p);
    case CONFIG_T_BACKENDS:
        return parse_backends(c, k, v, base);
    }
    return fail(c, path, "internal error: unknown key type");
}

/* --- walking objects --------------------------------------------------- */

static const struct config_key *table_row(const struct config_table *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->keys[i].name, name) == 0)
            return &t->keys[i];
    return NULL;
}

/* True when some row lives under section `name` (i.e. starts with name + "."). */
static bool table_section(const struct config_table *t, const char *name)
{
    size_t n = strlen(name);

    for (size_t i = 0; i < t->n; i++)
        if (strncmp(t->keys[i].name, name, n) == 0 && t->keys[i].name[n] == '.')
            return true;
    return false;
}

static size_t edit_distance(const char *a, size_t la, const char *b, size_t lb)
{
    size_t row[CONFIG_COMMAND_MAX + 2];

    if (lb > CONFIG_COMMAND_MAX || la > CONFIG_COMMAND_MAX)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* Closest member name of section `lookup` to key, within 2 edits. */
static bool suggest(const struct config_table *t, const char *lookup, const char *key, char *out,
                    size_t outlen)
{
    size_t lp = strlen(lookup), best = 3;

    for (size_t i = 0; i < t->n; i++) {
        const char *name = t->keys[i].name;
        if (strncmp(name, lookup, lp) != 0)
            continue;
        size_t seg = strcspn(name + lp, ".");
        size_t d = edit_distance(key, strlen(key), name + lp, seg);
        if (d < best && d < strlen(key)) {
            best = d;
            snprintf(out, outlen, "%.*s", (int)seg, name + lp);
        }
    }
    return best < 3;
}

static int parse_object(struct pctx *c, const struct config_table *t, const json_t *obj,
                        const char *lookup, const char *display, void *base);

static int parse_member(struct pctx *c, const struct config_table *t, const char *key,
                        const json_t *v, const char *lookup, const char *display, void *base)
{
    char lname[192], dname[PATH_MAX_DISPLAY], q[96], hint[CONFIG_COMMAND_MAX + 1];
    const struct config_key *k;
    size_t klen = strlen(key);

    config_quote_value(q, sizeof(q), key, klen);
    /* The path shows the key without its quotes, unless it is empty. */
    snprintf(dname, sizeof(dname), "%s%.*s", display, klen ? (int)(strlen(q) - 2) : 2,
             klen ? q + 1 : q);
    /* '.' and '[' only ever come from the table's own names: a literal
     * "cache.ttl_ms" member is not the row cache.ttl_ms. */
    if (klen > 64 || strpbrk(key, ".[]") ||
        (size_t)snprintf(lname, sizeof(lname), "%s%s", lookup, key) >= sizeof(lname))
        return fail(c, dname, "unknown key");
    k = table_row(t, lname);
    if (k)
        return parse_value(c, k, v, dname, base);
    if (table_section(t, lname)) {
        char lsub[200], dsub[PATH_MAX_DISPLAY + 2];
        if (!json_is_object(v))
            return fail(c, dname, "expected an object, got %s", json_kind(v));
        snprintf(lsub, sizeof(lsub), "%s.", lname);
        snprintf(dsub, sizeof(dsub), "%s.", dname);
        return parse_object(c, t, v, lsub, dsub, base);
    }
    if (suggest(t, lookup, key, hint, sizeof(hint)))
        return fail(c, dname, "unknown key (did you mean \"%s\"?)", hint);
    return fail(c, dname, "unknown key");
}

static int parse_object(struct pctx *c, const struct config_table *t, const json_t *obj,
                        const char *lookup, const char *display, void *base)
{
    const char *key;
    json_t *v;

    json_object_foreach((json_t *)obj, key, v)
    {
        int rc = parse_member(c, t, key, v, lookup, display, base);
        if (rc)
            return rc;
    }
    return 0;
}

/* --- backends ---------------------------------------------------------- */

static int backend_required(struct pctx *c, const json_t *obj, const char *display)
{
    char path[PATH_MAX_DISPLAY];

    const struct config_table *t = &config_backend_table;

    for (size_t i = 0; i < t->n; i++) {
        const char *leaf = t->keys[i].name + strlen(t->prefix);
        if (!(t->keys[i].flags & CONFIG_F_REQUIRED) || json_object_get(obj, leaf))
            continue;
        snprintf(path, sizeof(path), "%s%s", display, leaf);
        return fail(c, path, "required key missing");
    }
    return 0;
}

static int parse_backend(struct pctx *c, const json_t *obj, size_t idx, struct backend_config *b)
{
    char display[48], path[48];
    int rc;

    snprintf(path, sizeof(path), "backends[%zu]", idx);
    snprintf(display, sizeof(display), "backends[%zu].", idx);
    if (!json_is_object(obj))
        return fail(c, path, "expected an object, got %s", json_kind(obj));
    if (config_backend_defaults(b))
        return oom(c);
    rc = backend_required(c, obj, display);
    if (rc == 0)
        rc = parse_object(c, &config_backend_table, obj, config_backend_table.prefix, display, b);
    return rc;
}

static int parse_backends(struct pctx *c, const struct config_key *k, const json_t *v,
                          struct broker_config *cfg)
{
    size_t n;

    if (!json_is_array(v))
        return fail(c, k->name, "expected an array of objects, got %s", json_kind(v));
    n = json_array_size(v);
    if (n < (size_t)k->min)
        return fail(c, k->name, "at least one backend is required");
    if (n > (size_t)k->max)
        return fail(c, k->name, "%zu backends; at most %" PRId64 " are allowed", n, k->max);
    /* Replace the default backend; a zeroed array is safe to destroy at any
     * point of the loop below. */
    config_key_release(k, cfg);
    cfg->backends = calloc(n, sizeof(*cfg->backends));
    if (!cfg->backends)
        return oom(c);
    cfg->nbackends = n;
    for (size_t i = 0; i < n; i++) {
        int rc = parse_backend(c, json_array_get(v, i), i, &cfg->backends[i]);
        if (rc)
            return rc;
    }
    for (size_t i = 1; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->backends[i].name, cfg->backends[j].name) == 0) {
                char path[48];
                snprintf(path, sizeof(path), "backends[%zu].name", i);
                return fail(c, path, "duplicate backend name \"%s\" (also backends[%zu])",
                            cfg->backends[i].name, j);
            }
    return 0;
}

/* --- cross-field checks ------------------------------------------------ */

static int check_backend_cross(struct pctx *c, const struct backend_config *b, size_t i)
{
    char path[96];

    if (b->request_timeout_ms > b->max_request_timeout_ms) {
        snprintf(path, sizeof(path), "backends[%zu].request_timeout_ms", i);
        return fail(c, path, "%" PRId64 " exceeds max_request_timeout_ms (%" PRId64 ")",
                    b->request_timeout_ms, b->max_request_timeout_ms);
    }
    if (b->breaker.open_ms > b->breaker.max_open_ms) {
        snprintf(path, sizeof(path), "backends[%zu].breaker.open_ms", i);
        return fail(c, path, "%" PRId64 " exceeds breaker.max_open_ms (%" PRId64 ")",
                    b->breaker.open_ms, b->breaker.max_open_ms);
    }
    return 0;
}

static int check_cross(struct pctx *c, const struct broker_config *cfg)
{
    for (size_t i = 0; i < cfg->nbackends; i++) {
        int rc = check_backend_cross(c, &cfg->backends[i], i);
        if (rc)
            return rc;
    }
    if (cfg->cache.ttl_ms > cfg->cache.max_ttl_ms)
        return fail(c, "cache.ttl_ms", "%" PRId64 " exceeds cache.max_ttl_ms (%" PRId64 ")",
                    cfg->cache.ttl_ms, cfg->cache.max_ttl_ms);
    if (cfg->rate_limit.max_inflight_per_client > cfg->rate_limit.max_inflight)
        return fail(c, "rate_limit.max_inflight_per_client",
                    "%" PRIu32 " exceeds rate_limit.max_inflight (%" PRIu32 ")",
                    cfg->rate_limit.max_inflight_per_client, cfg->rate_limit.max_inflight);
    if (strcmp(cfg->listen, cfg->admin_listen) == 0)
        return fail(c, "admin_listen", "\"%s\" is also the client socket (listen)",
                    cfg->admin_listen);
    if (cfg->compat_listen.kind == CONFIG_ADDR_UNIX &&
        (strcmp(cfg->compat_listen.path, cfg->listen) == 0 ||
         strcmp(cfg->compat_listen.path, cfg->admin_listen) == 0))
        return fail(c, "compat_listen", "\"%s\" is already the client or admin socket",
                    cfg->compat_listen.path);
    if (cfg->metrics_listen.kind == CONFIG_ADDR_UNIX)
        return fail(c, "metrics_listen", "must be \"host:port\" (HTTP over TCP), not a socket "
                    "path");
    return 0;
}

/* --- loading ----------------------------------------------------------- */

/* Parse root into a scratch config; replace *cfg only if all is well. */
static int load_root(struct broker_config *cfg, const json_t *root, struct pctx *c)
{
    struct broker_config next;
    int rc;

    if (!json_is_object(root))
        return fail(c, "(top level)", "expected an object, got %s", json_kind(root));
    if (config_init_defaults(&next))
        return oom(c);
    rc = parse_object(c, &config_top_table, root, "", "", &next);
    if (rc == 0)
        rc = check_cross(c, &next);
    if (rc) {
        config_destroy(&next);
        return rc;
    }
    config_destroy(cfg);
    *cfg = next;
    return 0;
}

static int syntax_error(struct pctx *c, const char *origin, const json_error_t *je)
{
    char text[JSON_ERROR_TEXT_LENGTH * 4];

    printable(text, sizeof(text), je->text);
    if (c->err && c->errlen)
        snprintf(c->err, c->errlen, "%s: line %d column %d: %s", origin, je->line, je->column,
                 text);
    return -EINVAL;
}

int config_load_string(struct broker_config *cfg, const char *text, size_t len, const char *origin,
                       char *err, size_t errlen)
{
    struct pctx c = {err, errlen};
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    int rc;

    if (!root)
        return syntax_error(&c, origin ? origin : "<string>", &je);
    rc = load_root(cfg, root, &c);
    json_decref(root);
    return rc;
}

int config_load_file(struct broker_config *cfg, const char *path, char *err, size_t errlen)
{
    struct pctx c = {err, errlen};
    json_error_t je;
    struct stat st;
    json_t *root;
    FILE *fp = fopen(path, "re");
    int rc;

    if (!fp) {
        rc = -errno;
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", path, strerror(-rc));
        return rc;
    }
    if (fstat(fileno(fp), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(fp);
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", path, strerror(EISDIR));
        return -EISDIR;
    }
    root = json_loadf(fp, JSON_REJECT_DUPLICATES, &je);
    fclose(fp);
    if (!root)
        return syntax_error(&c, path, &je);
    rc = load_root(cfg, root, &c);
    json_decref(root);
    return rc;
}

/* --- reload ------------------------------------------------------------ */

static size_t scalar_size(enum config_type t)
{
    switch (t) {
    case CONFIG_T_U32:
        return sizeof(uint32_t);
    case CONFIG_T_SIZE:
        return sizeof(uint64_t);
    case CONFIG_T_MS:
        return sizeof(int64_t);
    case CONFIG_T_ENUM:
        return sizeof(int);
    case CONFIG_T_MODE:
        return sizeof(mode_t);
    default:
        return 0;
    }
}

static bool strlist_equal(const struct config_strlist *a, const struct config_strlist *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], b->v[i]) != 0)
            return false;
    return true;
}

static bool value_equal(const struct config_key *k, const void *a, const void *b)
{
    const void *pa = config_ctarget(k, a), *pb = config_ctarget(k, b);

    switch (k->type) {
    case CONFIG_T_STRING: {
        const char *sa = *(char *const *)pa, *sb = *(char *const *)pb;
        return sa == sb || (sa && sb && strcmp(sa, sb) == 0);
    }
    case CONFIG_T_ADDRESS:
    case CONFIG_T_ADDRESS_OPT:
        return config_address_equal(pa, pb);
    case CONFIG_T_ID_LIST: {
        const struct config_idlist *la = pa, *lb = pb;
        return la->n == lb->n && (la->n == 0 || memcmp(la->v, lb->v, la->n * sizeof(*la->v)) == 0);
    }
    case CONFIG_T_STR_LIST:
        return strlist_equal(pa, pb);
    case CONFIG_T_BACKENDS:
        return true; /* compared by config_check_reload */
    default:
        return memcmp(pa, pb, scalar_size(k->type)) == 0;
    }
}

static int reload_diff(struct pctx *c, const struct config_table *t, const void *a, const void *b,
                       const char *display)
{
    char path[PATH_MAX_DISPLAY];

    for (size_t i = 0; i < t->n; i++) {
        const struct config_key *k = &t->keys[i];
        if ((k->flags & CONFIG_F_RELOAD) || value_equal(k, a, b))
            continue;
        snprintf(path, sizeof(path), "%s%s", display, k->name + strlen(t->prefix));
        return fail(c, path, "changed, but it cannot be reloaded (restart brokerd to apply it)");
    }
    return 0;
}

int config_check_reload(const struct broker_config *cur, const struct broker_config *next,
                        char *err, size_t errlen)
{
    struct pctx c = {err, errlen};
    char display[48];
    int rc = reload_diff(&c, &config_top_table, cur, next, "");

    if (rc)
        return rc;
    /* Backends are matched by name: a new name is added, a missing one
     * removed (reload.c); one in both is checked key by key. */
    for (size_t i = 0; i < next->nbackends; i++) {
        for (size_t j = 0; j < cur->nbackends; j++) {
            if (strcmp(cur->backends[j].name, next->backends[i].name) != 0)
                continue;
            snprintf(display, sizeof(display), "backends[%zu].", i);
            rc = reload_diff(&c, &config_backend_table, &cur->backends[j], &next->backends[i],
                             display);
            if (rc)
                return rc;
        }
    }
    return 0;
}

