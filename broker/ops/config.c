/*
 * config.c - the configuration key table and everything generated from it.
 *
 * Principle: a key exists in exactly one place, its row in top_keys[] or
 * backend_keys[]. Each row carries the dotted name, type, default, range,
 * flags, the offset of its target field (type-checked at compile time by
 * FIELD(): a row whose field has another C type does not compile) and the
 * help line. Defaults, parsing, the reload check, the JSON dump, --help and
 * the Markdown reference are all loops over the rows, so adding a key is
 * adding a row (plus its struct field).
 *
 * Parsing walks the JSON objects, not the table: for an object at lookup
 * prefix P (e.g. "backends[].health."), member k is either the row P+k, or a
 * section if some row starts with P+k+".", or an unknown key (with a
 * did-you-mean among P's members). Error paths use the display prefix with
 * real indexes ("backends[1].health."). A load parses into a scratch config
 * that starts from the defaults; only a fully valid scratch replaces the
 * caller's config, so a failed load (or reload) changes nothing.
 *
 * Addresses are parsed in config_addr.c; --help and the Markdown reference
 * are written by config_doc.c, from the same rows.
 *
 * Known limits: sections are implicit, so a section has no help text of its
 * own; numbers must be JSON integers (5000.0 is refused, not rounded); the
 * value of an unknown key is not inspected.
 */
#include "config.h"
#include "config_priv.h"

#include "cache.h" /* the cache.* rows' ranges */

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

_Static_assert(sizeof(enum config_framing) == sizeof(int), "enum rows store ints");
_Static_assert(sizeof(enum config_scripts_policy) == sizeof(int), "enum rows store ints");
_Static_assert(sizeof(enum log_level) == sizeof(int), "enum rows store ints");
_Static_assert(sizeof(enum log_format) == sizeof(int), "enum rows store ints");

#define WHY_MAX          192 /* a reason from a check function */
#define PATH_MAX_DISPLAY 256

/* --- small text helpers ------------------------------------------------ */

/* s as a short, printable, double-quoted token for messages (the config file
 * is trusted, but a message must not carry control bytes to a terminal). */
static void quote_value(char *out, size_t cap, const char *s, size_t len)
{
    bool cut = len > 64;
    size_t o = 0, i = 0;

    if (cap < 12) {
        if (cap)
            out[0] = '\0';
        return;
    }
    out[o++] = '"';
    for (; i < (cut ? 64 : len) && o + 6 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7F || c == '"' || c == '\\')
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
        else
            out[o++] = (char)c;
    }
    if (i < len && o + 5 < cap) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o++] = '"';
    out[o] = '\0';
}

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

static bool why(char *w, size_t wl, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool why(char *w, size_t wl, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(w, wl, fmt, ap);
    va_end(ap);
    return false;
}

int config_bad(char *w, size_t wl, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(w, wl, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* --- string checks (row .check) ---------------------------------------- */

static bool check_socket_path(const char *s, size_t len, char *w, size_t wl)
{
    if (len == 0)
        return why(w, wl, "must not be empty");
    if (len > CONFIG_UNIX_PATH_MAX)
        return why(w, wl, "is %zu bytes; a socket path may have at most %d", len,
                   CONFIG_UNIX_PATH_MAX);
    (void)s;
    return true;
}

static bool check_backend_name(const char *s, size_t len, char *w, size_t wl)
{
    char q[96];

    quote_value(q, sizeof(q), s, len);
    if (len == 0 || len > CONFIG_NAME_MAX)
        return why(w, wl, "%s must be 1..%d bytes long", q, CONFIG_NAME_MAX);
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return why(w, wl, "%s is not a valid backend name ([A-Za-z0-9_-]{1,64})", q);
    }
    return true;
}

static bool is_command_prefix(const char *s, size_t len)
{
    if (len == 0 || len > CONFIG_COMMAND_MAX || !(s[0] >= 'a' && s[0] <= 'z'))
        return false;
    for (size_t i = 1; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    return true;
}

static bool check_command(const char *s, size_t len, char *w, size_t wl)
{
    char q[96];

    if (is_command_prefix(s, len))
        return true;
    quote_value(q, sizeof(q), s, len);
    return why(w, wl, "%s is not a command name ([a-z][a-z0-9_]{0,63})", q);
}

static bool check_read_only_rule(const char *s, size_t len, char *w, size_t wl)
{
    char q[96];

    if (len == 1 && s[0] == '*')
        return why(w, wl,
                   "\"*\" would make every command read-only (cached and retried); "
                   "list names or prefixes such as \"get_*\"");
    if (len > 1 && s[len - 1] == '*' && is_command_prefix(s, len - 1))
        return true;
    if (is_command_prefix(s, len))
        return true;
    quote_value(q, sizeof(q), s, len);
    return why(w, wl, "%s is neither a command name nor a prefix ending in '*' (\"get_*\")", q);
}

static bool check_root(const char *s, size_t len, char *w, size_t wl)
{
    char q[96];

    quote_value(q, sizeof(q), s, len);
    if (len == 0 || s[0] != '/')
        return why(w, wl, "%s is not an absolute path", q);
    if (len > 4095)
        return why(w, wl, "is %zu bytes; a path may have at most 4095", len);
    for (size_t i = 0; i + 1 < len; i++)
        if (s[i] == '/' && s[i + 1] == '.' && i + 2 < len && s[i + 2] == '.' &&
            (i + 3 == len || s[i + 3] == '/'))
            return why(w, wl, "%s contains a \"..\" component", q);
    return true;
}

/* --- the table --------------------------------------------------------- */

/* offsetof(S, f), but only when S.f has C type T (compile-time check). */
#define FIELD(S, f, T) (offsetof(S, f) + 0 * sizeof(_Generic(((S *)0)->f, T : 1)))

#define R   CONFIG_F_RELOAD
#define TOP struct broker_config
#define BE  struct backend_config

#define K_NUM(S, n, fl, f, ty, cty, d, lo, hi, h)                                                  \
    {                                                                                              \
        .name = (n), .type = (ty), .flags = (fl), .offset = FIELD(S, f, cty), .def = (d),          \
        .min = (lo), .max = (hi), .help = (h)                                                      \
    }
#define K_U32(S, n, fl, f, d, lo, hi, h)  K_NUM(S, n, fl, f, CONFIG_T_U32, uint32_t, d, lo, hi, h)
#define K_SIZE(S, n, fl, f, d, lo, hi, h) K_NUM(S, n, fl, f, CONFIG_T_SIZE, uint64_t, d, lo, hi, h)
#define K_MS(S, n, fl, f, d, lo, hi, h)   K_NUM(S, n, fl, f, CONFIG_T_MS, int64_t, d, lo, hi, h)
#define K_STR(S, n, fl, f, d, chk, h)                                                              \
    {                                                                                              \
        .name = (n), .type = CONFIG_T_STRING, .flags = (fl), .offset = FIELD(S, f, char *),        \
        .def_str = (d), .check = (chk), .help = (h)                                                \
    }
#define K_ENUM(S, n, fl, f, ety, d, names, h)                                                      \
    {                                                                                              \
        .name = (n), .type = CONFIG_T_ENUM, .flags = (fl), .offset = FIELD(S, f, ety),             \
        .def_str = (d), .enum_names = (names), .help = (h)                                         \
    }
#define K_ADDR(S, n, ty, fl, f, d, h)                                                              \
    {                                                                                              \
        .name = (n), .type = (ty), .flags = (fl), .offset = FIELD(S, f, struct config_address),    \
        .def_str = (d), .help = (h)                                                                \
    }
#define K_STRS(S, n, fl, f, dl, chk, h)                                                            \
    {                                                                                              \
        .name = (n), .type = CONFIG_T_STR_LIST, .flags = (fl),                                     \
        .offset = FIELD(S, f, struct config_strlist), .def_list = (dl), .check = (chk),            \
        .help = (h)                                                                                \
    }
#define K_IDS(S, n, fl, f, h)                                                                      \
    {                                                                                              \
        .name = (n), .type = CONFIG_T_ID_LIST, .flags = (fl),                                      \
        .offset = FIELD(S, f, struct config_idlist), .min = 0, .max = UINT32_MAX - 1, .help = (h)  \
    }


static const char *const framing_names[] = {"json", "ndjson", NULL};
static const char *const queue_order_names[] = {"fair", "fifo", NULL};
static const char *const policy_names[] = {"deny_dangerous", "allow", "deny_all", NULL};
static const char *const level_names[] = {"debug", "info", "warn", "error", NULL};
static const char *const format_names[] = {"json", "text", NULL};
/* SPEC: get_scene_info, get_object_info "and the other get_* commands". */
static const char *const read_only_default[] = {"get_scene_info", "get_object_info", "get_*", NULL};

static const struct config_key backend_keys[] = {
    K_STR(BE, "backends[].name", CONFIG_F_REQUIRED, name, "blender", check_backend_name,
          "Backend name, unique, [A-Za-z0-9_-]{1,64}; requests pick it with \"backend\". "
          "The first backend is the default. Required in every entry of a file."),
    K_ADDR(BE, "backends[].address", CONFIG_T_ADDRESS, R | CONFIG_F_REQUIRED, address, "127.0.0.1:9876",
           "\"host:port\" (IPv4, [IPv6] or a hostname; port 1..65535) or \"unix:/path\" "
           "(at most 107 bytes). Required in every entry of a file."),
    K_ENUM(BE, "backends[].framing", R, framing, enum config_framing, "json", framing_names,
           "How a response ends: json = when the JSON value is complete (Blender add-on), "
           "ndjson = at a newline."),
    K_U32(BE, "backends[].pool_size", R, pool_size, 4, 1, 1024,
          "Persistent connections, opened on demand; one request in flight on each."),
    K_U32(BE, "backends[].max_queue", R, max_queue, 1024, 0, 1048576,
          "Requests waiting for a free connection; beyond it: overloaded."),
    K_ENUM(BE, "backends[].queue_order", R | CONFIG_F_EXTRA, queue_order, enum config_queue_order,
           "fair", queue_order_names,
           "Order in which waiting requests get a free connection: fair = round-robin across "
           "client connections (one client's backlog delays another's request by a few round "
           "trips at most), fifo = arrival order."),
    K_MS(BE, "backends[].connect_timeout_ms", R, connect_timeout_ms, 2000, 1, 600000,
         "Deadline for establishing a backend connection."),
    K_MS(BE, "backends[].request_timeout_ms", R, request_timeout_ms, 60000, 1, 600000,
         "Deadline of a request without timeout_ms. At most max_request_timeout_ms."),
    K_MS(BE, "backends[].max_request_timeout_ms", R, max_request_timeout_ms, 600000, 1, MS_HOUR,
         "Cap on a client's timeout_ms."),
    K_MS(BE, "backends[].idle_timeout_ms", R, idle_timeout_ms, 10000, 1, MS_HOUR,
         "Longest silence while reading a response; every received chunk resets it."),
    K_SIZE(BE, "backends[].max_response_bytes", R, max_response_bytes, 67108864, 64, 4 * GiB,
           "Largest response accepted; a larger one is bad_backend_response."),
    K_STR(BE, "backends[].health.command", R, health.command, "get_scene_info", check_command,
          "Command sent by health checks, on their own connection."),
    K_MS(BE, "backends[].health.interval_ms", R, health.interval_ms, 5000, 100, MS_DAY,
         "Time between health checks."),
    K_MS(BE, "backends[].health.timeout_ms", R, health.timeout_ms, 10000, 1, 600000,
         "Deadline of one health check."),
    K_U32(BE, "backends[].health.rise", R, health.rise, 2, 1, 100,
          "Consecutive successes that mark a down backend up."),
    K_U32(BE, "backends[].health.fall", R, health.fall, 3, 1, 100,
          "Consecutive failures that mark an up backend down."),
    K_U32(BE, "backends[].breaker.failures", R, breaker.failures, 5, 1, 100000,
          "Consecutive failures that open the circuit breaker."),
    K_MS(BE, "backends[].breaker.open_ms", R, breaker.open_ms, 1000, 1, MS_HOUR,
         "First open period; doubles (with jitter) while half-open probes fail."),
    K_MS(BE, "backends[].breaker.max_open_ms", R, breaker.max_open_ms, 30000, 1, MS_DAY,
         "Longest open period. At least open_ms."),
    K_U32(BE, "backends[].retry.max", R, retry.max, 2, 0, 10,
          "Retries of a read-only command (never of a mutating one once a byte was sent)."),
    K_MS(BE, "backends[].retry.backoff_ms", R, retry.backoff_ms, 20, 0, 60000,
         "Delay before the first retry; doubles each time."),
    K_STRS(BE, "backends[].read_only", R, read_only, read_only_default, check_read_only_rule,
           "Read-only commands (cached, retried): names, or prefixes ending in '*'. "
           "Every other command is mutating and invalidates the backend's cache."),
};

static const struct config_key top_keys[] = {
    K_STR(TOP, "listen", 0, listen, "broker.sock", check_socket_path,
          "Client socket path (NDJSON protocol); at most 107 bytes."),
    {.name = "listen_mode",
     .type = CONFIG_T_MODE,
     .offset = FIELD(TOP, listen_mode, mode_t),
     .def_str = "0600",
     .min = 0600,
     .max = 0770,
     .help = "Mode of the client socket file, an octal string: 0600 plus optional group bits "
             "(other users are never allowed)."},
    K_IDS(TOP, "allow_uids", R, allow_uids,
          "Peer uids (SO_PEERCRED, checked at accept on every listening socket) allowed "
          "besides root and the broker's own uid, which always are. A refused peer gets one "
          "forbidden line and is closed."),
    K_IDS(TOP, "allow_gids", R, allow_gids,
          "Peer (primary) gids allowed on every listening socket; a peer matching either "
          "list is allowed."),
    K_STR(TOP, "admin_listen", 0, admin_listen, "broker.admin.sock", check_socket_path,
          "Admin socket path (mode 0600, owner only); must differ from listen."),
    K_ADDR(TOP, "compat_listen", CONFIG_T_ADDRESS_OPT, 0, compat_listen, NULL,
           "Blender-compatible listener: null (off), \"host:port\" or a socket path "
           "(\"unix:PATH\" or starting with '/')."),
    K_ADDR(TOP, "metrics_listen", CONFIG_T_ADDRESS_OPT, CONFIG_F_EXTRA, metrics_listen, NULL,
           "HTTP endpoint for Prometheus (GET /metrics, the admin metrics text): null (off) or "
           "\"host:port\". No authentication and no TLS: bind it to loopback or a private "
           "network."),
    K_U32(TOP, "workers", 0, workers, 0, 0, 256,
          "Worker threads, one io_uring each; 0 = number of online CPUs."),
    K_U32(TOP, "max_clients", R, max_clients, 10000, 1, 1000000,
          "Client connections open at once; further ones are refused."),
    K_SIZE(TOP, "max_request_bytes", 0, max_request_bytes, 1048576, 256, GiB,
           "Longest request line; a longer one gets too_large and is skipped."),
    K_U32(TOP, "max_json_depth", R, max_json_depth, 64, 1, 1024,
          "Deepest nesting of arrays/objects in a request."),
    K_MS(TOP, "shutdown_grace_ms", R, shutdown_grace_ms, 10000, 0, 600000,
         "Time given to in-flight requests at shutdown before they get shutting_down."),
    K_SIZE(TOP, "max_client_output_bytes", R | CONFIG_F_EXTRA, max_client_output_bytes, 4194304,
           4096, GiB,
           "Responses queued for one client before the broker stops reading its requests."),
    K_U32(TOP, "client_rx_buffers", CONFIG_F_EXTRA, client_rx_buffers, 64, 1, 4096,
          "Receive buffers of 16 KiB each worker shares among its clients (io_uring provided "
          "buffers, rounded up to a power of two): an idle client holds none. When all are in "
          "use at once a client reads into a buffer of its own that time."),
    {.name = "backends",
     .type = CONFIG_T_BACKENDS,
     .offset = offsetof(TOP, backends),
     .sub = backend_keys,
     .nsub = sizeof(backend_keys) / sizeof(backend_keys[0]),
     .min = 1,
     .max = CONFIG_BACKENDS_MAX,
     .help = "Backends (1..64 objects with the backends[] keys below). Default: one backend "
             "\"blender\" at 127.0.0.1:9876 with every default."},
    /* cache.*: ranges are alloc/cache.h's (cache_create refuses nothing the
     * table accepts); the R keys are the ones cache_reconfigure applies. */
    K_SIZE(TOP, "cache.max_bytes", 0, cache.max_bytes, 67108864, 0, 1024 * GiB,
           "Bytes of cached responses and their hash tables (measured by the allocator); "
           "0 disables the cache."),
    K_U32(TOP, "cache.max_entries", 0, cache.max_entries, 100000, 0, 100000000,
          "Cached responses; 0 disables the cache."),
    K_MS(TOP, "cache.ttl_ms", R, cache.ttl_ms, 5000, CACHE_TTL_MIN_MS, MS_YEAR,
         "Lifetime of a cached response. At most max_ttl_ms."),
    K_MS(TOP, "cache.max_ttl_ms", R, cache.max_ttl_ms, MS_DAY, CACHE_TTL_MIN_MS, MS_YEAR,
         "Upper clamp of any TTL."),
    K_MS(TOP, "cache.serve_stale_ms", CONFIG_F_EXTRA, cache.serve_stale_ms, 0, 0,
         CACHE_MAX_STALE_MS,
         "How long past expiry a read may be served, marked stale, while its backend cannot "
         "answer; 0 = off."),
    K_SIZE(TOP, "cache.max_object_bytes", R | CONFIG_F_EXTRA, cache.max_object_bytes, 8388608, 1,
           (int64_t)CACHE_MAX_OBJECT_LIMIT, "Largest single response that is cached."),
    K_SIZE(TOP, "cache.memory_watermark_bytes", R | CONFIG_F_EXTRA, cache.memory_watermark_bytes,
           GiB, 0, 1024 * 1024 * GiB,
           "Process memory (jemalloc stats.allocated, sampled every 100 ms) above which the "
           "cache evicts early; 0 = off."),
    K_U32(TOP, "rate_limit.rate", R, rate_limit.rate, 1000, 1, 10000000,
          "Requests per second per client (token refill rate)."),
    K_U32(TOP, "rate_limit.burst", R, rate_limit.burst, 2000, 1, 100000000,
          "Token bucket size per client."),
    K_U32(TOP, "rate_limit.max_inflight_per_client", R, rate_limit.max_inflight_per_client, 256, 1,
          1048576, "Requests of one client in flight at once. At most max_inflight."),
    K_U32(TOP, "rate_limit.max_inflight", R, rate_limit.max_inflight, 65536, 1, 16777216,
          "Requests in flight in the whole broker."),
    K_ENUM(TOP, "scripts.policy", R, scripts.policy, enum config_scripts_policy, "deny_dangerous",
           policy_names,
           "execute_code: deny_dangerous screens scripts for dangerous patterns, allow passes "
           "them, deny_all refuses every script."),
    K_STRS(TOP, "paths.allowed_roots", R, paths.allowed_roots, NULL, check_root,
           "Absolute directories that file-path parameters must stay inside; [] = no root "
           "restriction (\"..\" and NUL are refused regardless)."),
    K_ENUM(TOP, "log.level", R, log.level, enum log_level, "info", level_names,
           "Lowest level written to stderr."),
    K_ENUM(TOP, "log.format", R, log.format, enum log_format, "json", format_names,
           "json = one JSON object per line, text = logfmt."),
};

#define NTOP (sizeof(top_keys) / sizeof(top_keys[0]))
#define NBE  (sizeof(backend_keys) / sizeof(backend_keys[0]))

struct table {
    const struct config_key *keys;
    size_t n;
    const char *prefix; /* of every row name in this table */
};

static const struct table top_table = {top_keys, NTOP, ""};
static const struct table backend_table = {backend_keys, NBE, "backends[]."};

size_t config_key_count(void)
{
    return NTOP + NBE;
}

const struct config_key *config_key_at(size_t i)
{
    for (size_t t = 0; t < NTOP; t++) {
        if (i == 0)
            return &top_keys[t];
        i--;
        if (top_keys[t].type == CONFIG_T_BACKENDS) {
            if (i < top_keys[t].nsub)
                return &top_keys[t].sub[i];
            i -= top_keys[t].nsub;
        }
    }
    return NULL;
}

const struct config_key *config_key_find(const char *name)
{
    for (size_t i = 0; i < config_key_count(); i++)
        if (strcmp(config_key_at(i)->name, name) == 0)
            return config_key_at(i);
    return NULL;
}

static void *target(const struct config_key *k, void *base)
{
    return (char *)base + k->offset;
}

static const void *ctarget(const struct config_key *k, const void *base)
{
    return (const char *)base + k->offset;
}

/* --- lists, defaults and destruction ----------------------------------- */

static void strlist_free(struct config_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* Appends a copy of s (len bytes) to l. 0 or -ENOMEM (l unchanged). */
static int strlist_push(struct config_strlist *l, const char *s, size_t len)
{
    char **v = realloc(l->v, (l->n + 1) * sizeof(*v));
    char *copy;

    if (!v)
        return -ENOMEM;
    l->v = v;
    copy = strndup(s, len);
    if (!copy)
        return -ENOMEM;
    l->v[l->n++] = copy;
    return 0;
}

static void backend_destroy(struct backend_config *b);

/* Release what row k owns inside base. */
static void key_release(const struct config_key *k, void *base)
{
    void *p = target(k, base);

    switch (k->type) {
    case CONFIG_T_STRING:
        free(*(char **)p);
        *(char **)p = NULL;
        break;
    case CONFIG_T_STR_LIST:
        strlist_free(p);
        break;
    case CONFIG_T_ID_LIST:
        free(((struct config_idlist *)p)->v);
        memset(p, 0, sizeof(struct config_idlist));
        break;
    case CONFIG_T_BACKENDS: {
        struct broker_config *cfg = base;
        for (size_t i = 0; i < cfg->nbackends; i++)
            backend_destroy(&cfg->backends[i]);
        free(cfg->backends);
        cfg->backends = NULL;
        cfg->nbackends = 0;
        break;
    }
    default:
        break;
    }
}

static void table_release(const struct table *t, void *base)
{
    for (size_t i = 0; i < t->n; i++)
        key_release(&t->keys[i], base);
}

static void backend_destroy(struct backend_config *b)
{
    table_release(&backend_table, b);
    memset(b, 0, sizeof(*b));
}

void config_destroy(struct broker_config *cfg)
{
    if (!cfg)
        return;
    table_release(&top_table, cfg);
    memset(cfg, 0, sizeof(*cfg));
}

static int enum_index(const char *const *names, const char *s, size_t len)
{
    for (int i = 0; names[i]; i++)
        if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0)
            return i;
    return -1;
}

static int backend_defaults(struct backend_config *b);

/* Store row k's default into base (which holds nothing for k yet). */
static int key_default(const struct config_key *k, void *base)
{
    void *p = target(k, base);
    char w[WHY_MAX];

    switch (k->type) {
    case CONFIG_T_U32:
        *(uint32_t *)p = (uint32_t)k->def;
        return 0;
    case CONFIG_T_SIZE:
        *(uint64_t *)p = (uint64_t)k->def;
        return 0;
    case CONFIG_T_MS:
        *(int64_t *)p = k->def;
        return 0;
    case CONFIG_T_ENUM:
        *(int *)p = enum_index(k->enum_names, k->def_str, strlen(k->def_str));
        return 0;
    case CONFIG_T_MODE:
        *(mode_t *)p = (mode_t)strtoul(k->def_str, NULL, 8);
        return 0;
    case CONFIG_T_STRING:
        *(char **)p = k->def_str ? strdup(k->def_str) : NULL;
        return k->def_str && !*(char **)p ? -ENOMEM : 0;
    case CONFIG_T_ADDRESS:
    case CONFIG_T_ADDRESS_OPT:
        if (!k->def_str) {
            memset(p, 0, sizeof(struct config_address));
            return 0;
        }
        return config_address_parse(p, k->def_str, strlen(k->def_str), w, sizeof(w));
    case CONFIG_T_ID_LIST:
        memset(p, 0, sizeof(struct config_idlist));
        return 0;
    case CONFIG_T_STR_LIST:
        for (const char *const *d = k->def_list; d && *d; d++)
            if (strlist_push(p, *d, strlen(*d)))
                return -ENOMEM;
        return 0;
    case CONFIG_T_BACKENDS: {
        struct broker_config *cfg = base;
        cfg->backends = calloc(1, sizeof(*cfg->backends));
        if (!cfg->backends)
            return -ENOMEM;
        cfg->nbackends = 1;
        return backend_defaults(&cfg->backends[0]);
    }
    }
    return 0;
}

static int table_defaults(const struct table *t, void *base)
{
    for (size_t i = 0; i < t->n; i++) {
        int rc = key_default(&t->keys[i], base);
        if (rc)
            return rc;
    }
    return 0;
}

static int backend_defaults(struct backend_config *b)
{
    return table_defaults(&backend_table, b);
}

int config_init_defaults(struct broker_config *cfg)
{
    int rc;

    memset(cfg, 0, sizeof(*cfg));
    rc = table_defaults(&top_table, cfg);
    if (rc)
        config_destroy(cfg);
    return rc;
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

void config_enum_names(const char *const *names, char *buf, size_t len)
{
    size_t o = 0;

    buf[0] = '\0';
    for (int i = 0; names[i] && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%s", i ? ", " : "", names[i]);
}

static int parse_enum(struct pctx *c, const struct config_key *k, const json_t *v, const char *path,
                      int *p)
{
    int i;

    if (!json_is_string(v))
        return fail(c, path, "expected a string, got %s", json_kind(v));
    i = enum_index(k->enum_names, json_string_value(v), json_string_length(v));
    if (i < 0) {
        char q[96], list[128];
        quote_value(q, sizeof(q), json_string_value(v), json_string_length(v));
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
    quote_value(q, sizeof(q), s, len);
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
        quote_value(q, sizeof(q), json_string_value(v), json_string_length(v));
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
        else if (strlist_push(&l, json_string_value(e), json_string_length(e)))
            rc = oom(c);
    }
    if (rc) {
        strlist_free(&l);
        return rc;
    }
    strlist_free(p);
    *p = l;
    return 0;
}

static int parse_backends(struct pctx *c, const struct config_key *k, const json_t *v,
                          struct broker_config *cfg);

static int parse_value(struct pctx *c, const struct config_key *k, const json_t *v,
                       const char *path, void *base)
{
    void *p = target(k, base);

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

static const struct config_key *table_row(const struct table *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->keys[i].name, name) == 0)
            return &t->keys[i];
    return NULL;
}

/* True when some row lives under section `name` (i.e. starts with name + "."). */
static bool table_section(const struct table *t, const char *name)
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
static bool suggest(const struct table *t, const char *lookup, const char *key, char *out,
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

static int parse_object(struct pctx *c, const struct table *t, const json_t *obj,
                        const char *lookup, const char *display, void *base);

static int parse_member(struct pctx *c, const struct table *t, const char *key, const json_t *v,
                        const char *lookup, const char *display, void *base)
{
    char lname[192], dname[PATH_MAX_DISPLAY], q[96], hint[CONFIG_COMMAND_MAX + 1];
    const struct config_key *k;
    size_t klen = strlen(key);

    quote_value(q, sizeof(q), key, klen);
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

static int parse_object(struct pctx *c, const struct table *t, const json_t *obj,
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

    for (size_t i = 0; i < NBE; i++) {
        const char *leaf = backend_keys[i].name + strlen(backend_table.prefix);
        if (!(backend_keys[i].flags & CONFIG_F_REQUIRED) || json_object_get(obj, leaf))
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
    if (backend_defaults(b))
        return oom(c);
    rc = backend_required(c, obj, display);
    if (rc == 0)
        rc = parse_object(c, &backend_table, obj, backend_table.prefix, display, b);
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
    key_release(k, cfg);
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
    rc = parse_object(c, &top_table, root, "", "", &next);
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
    const void *pa = ctarget(k, a), *pb = ctarget(k, b);

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

static int reload_diff(struct pctx *c, const struct table *t, const void *a, const void *b,
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
    int rc = reload_diff(&c, &top_table, cur, next, "");

    if (rc)
        return rc;
    /* Backends are matched by name: a new name is added, a missing one
     * removed (reload.c); one in both is checked key by key. */
    for (size_t i = 0; i < next->nbackends; i++) {
        for (size_t j = 0; j < cur->nbackends; j++) {
            if (strcmp(cur->backends[j].name, next->backends[i].name) != 0)
                continue;
            snprintf(display, sizeof(display), "backends[%zu].", i);
            rc = reload_diff(&c, &backend_table, &cur->backends[j], &next->backends[i], display);
            if (rc)
                return rc;
        }
    }
    return 0;
}

/* --- queries ----------------------------------------------------------- */

const struct backend_config *config_find_backend(const struct broker_config *cfg, const char *name,
                                                 size_t len)
{
    for (size_t i = 0; i < cfg->nbackends; i++) {
        const char *n = cfg->backends[i].name;
        if (strncmp(n, name, len) == 0 && n[len] == '\0')
            return &cfg->backends[i];
    }
    return NULL;
}

bool config_is_read_only(const struct backend_config *b, const char *type, size_t len)
{
    for (size_t i = 0; i < b->read_only.n; i++) {
        const char *r = b->read_only.v[i];
        size_t rl = strlen(r);
        if (rl > 0 && r[rl - 1] == '*') {
            if (len >= rl - 1 && memcmp(type, r, rl - 1) == 0)
                return true;
        } else if (rl == len && memcmp(type, r, len) == 0) {
            return true;
        }
    }
    return false;
}

/* --- the effective config as JSON -------------------------------------- */

static json_t *table_json(const struct table *t, const void *base);

static json_t *list_json(const struct config_key *k, const void *base)
{
    const void *p = ctarget(k, base);
    const struct broker_config *cfg = base;
    size_t n = k->type == CONFIG_T_ID_LIST    ? ((const struct config_idlist *)p)->n
               : k->type == CONFIG_T_STR_LIST ? ((const struct config_strlist *)p)->n
                                              : cfg->nbackends;
    json_t *arr = json_array();

    for (size_t i = 0; arr && i < n; i++) {
        json_t *e;
        if (k->type == CONFIG_T_ID_LIST)
            e = json_integer(((const struct config_idlist *)p)->v[i]);
        else if (k->type == CONFIG_T_STR_LIST)
            e = json_string(((const struct config_strlist *)p)->v[i]);
        else
            e = table_json(&backend_table, &cfg->backends[i]);
        if (json_array_append_new(arr, e)) {
            json_decref(arr);
            arr = NULL;
        }
    }
    return arr;
}

static json_t *value_json(const struct config_key *k, const void *base)
{
    const void *p = ctarget(k, base);
    char buf[CONFIG_HOST_MAX + 16];

    switch (k->type) {
    case CONFIG_T_U32:
        return json_integer(*(const uint32_t *)p);
    case CONFIG_T_SIZE:
        return json_integer((json_int_t) * (const uint64_t *)p);
    case CONFIG_T_MS:
        return json_integer(*(const int64_t *)p);
    case CONFIG_T_STRING: {
        const char *s = *(char *const *)p;
        return s ? json_string(s) : json_null();
    }
    case CONFIG_T_ENUM:
        return json_string(k->enum_names[*(const int *)p]);
    case CONFIG_T_MODE:
        snprintf(buf, sizeof(buf), "%04o", (unsigned)*(const mode_t *)p);
        return json_string(buf);
    case CONFIG_T_ADDRESS:
    case CONFIG_T_ADDRESS_OPT:
        if (((const struct config_address *)p)->kind == CONFIG_ADDR_NONE)
            return json_null();
        config_address_format(p, buf, sizeof(buf));
        return json_string(buf);
    case CONFIG_T_ID_LIST:
    case CONFIG_T_STR_LIST:
    case CONFIG_T_BACKENDS:
        return list_json(k, base);
    }
    return NULL;
}

/* Set obj[dotted] = v (stolen), creating the sections on the way. */
static int set_dotted(json_t *obj, const char *dotted, json_t *v)
{
    const char *dot;
    char seg[CONFIG_COMMAND_MAX + 1];

    while (obj && (dot = strchr(dotted, '.'))) {
        json_t *sub;
        snprintf(seg, sizeof(seg), "%.*s", (int)(dot - dotted), dotted);
        sub = json_object_get(obj, seg);
        if (!sub && json_object_set_new(obj, seg, sub = json_object()))
            sub = NULL;
        obj = sub;
        dotted = dot + 1;
    }
    if (!obj || !v) {
        json_decref(v);
        return -ENOMEM;
    }
    return json_object_set_new(obj, dotted, v) ? -ENOMEM : 0;
}

static json_t *table_json(const struct table *t, const void *base)
{
    json_t *obj = json_object();

    for (size_t i = 0; obj && i < t->n; i++) {
        const struct config_key *k = &t->keys[i];
        json_t *v = (k->flags & CONFIG_F_SECRET) ? json_string("<redacted>") : value_json(k, base);
        if (set_dotted(obj, k->name + strlen(t->prefix), v)) {
            json_decref(obj);
            obj = NULL;
        }
    }
    return obj;
}

int config_dump_json(const struct broker_config *cfg, char **out)
{
    json_t *root = table_json(&top_table, cfg);

    *out = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    return *out ? 0 : -ENOMEM;
}

/* --- --help and the Markdown reference --------------------------------- */
