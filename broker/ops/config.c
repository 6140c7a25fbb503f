/*
 * config.c - the configuration key table and what each row knows about its
 * own value: default, release, and the string checks rows point to.
 *
 * Principle: a key exists in exactly one place, its row in top_keys[] or
 * backend_keys[]. Each row carries the dotted name, type, default, range,
 * flags, the offset of its target field (type-checked at compile time by
 * FIELD(): a row whose field has another C type does not compile) and the
 * help line. Defaults, parsing, the reload check, the JSON dump, --help and
 * the Markdown reference are all loops over the rows, so adding a key is
 * adding a row (plus its struct field).
 *
 * The loops live next to what they produce: loading and the reload check
 * in config_load.c, the JSON dump in config_dump.c, --help and the Markdown
 * reference in config_doc.c; addresses are parsed in config_addr.c. They
 * reach the rows through config_priv.h (the two tables) or config.h
 * (config_key_at()).
 *
 * Known limits: sections are implicit, so a section has no help text of its
 * own.
 */
#include "config.h"
#include "config_priv.h"

#include "cache.h" /* the cache.* rows' ranges */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

_Static_assert(sizeof(enum config_framing) == sizeof(int), "enum rows store ints");
_Static_assert(sizeof(enum config_scripts_policy) == sizeof(int), "enum rows store ints");
_Static_assert(sizeof(enum log_level) == sizeof(int), "enum rows store ints");
_Static_assert(sizeof(enum log_format) == sizeof(int), "enum rows store ints");

/* --- small text helpers ------------------------------------------------ */

/* s as a short, printable, double-quoted token for messages (the config file
 * is trusted, but a message must not carry control bytes to a terminal). */
void config_quote_value(char *out, size_t cap, const char *s, size_t len)
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

void config_enum_names(const char *const *names, char *buf, size_t len)
{
    size_t o = 0;

    buf[0] = '\0';
    for (int i = 0; names[i] && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%s", i ? ", " : "", names[i]);
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

    config_quote_value(q, sizeof(q), s, len);
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
    config_quote_value(q, sizeof(q), s, len);
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
    config_quote_value(q, sizeof(q), s, len);
    return why(w, wl, "%s is neither a command name nor a prefix ending in '*' (\"get_*\")", q);
}

static bool check_root(const char *s, size_t len, char *w, size_t wl)
{
    char q[96];

    config_quote_value(q, sizeof(q), s, len);
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

const struct config_table config_top_table = {top_keys, NTOP, ""};
const struct config_table config_backend_table = {backend_keys, NBE, "backends[]."};

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

/* --- lists, defaults and destruction ----------------------------------- */

void config_strlist_free(struct config_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* Appends a copy of s (len bytes) to l. 0 or -ENOMEM (l unchanged). */
int config_strlist_push(struct config_strlist *l, const char *s, size_t len)
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
void config_key_release(const struct config_key *k, void *base)
{
    void *p = config_target(k, base);

    switch (k->type) {
    case CONFIG_T_STRING:
        free(*(char **)p);
        *(char **)p = NULL;
        break;
    case CONFIG_T_STR_LIST:
        config_strlist_free(p);
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

static void table_release(const struct config_table *t, void *base)
{
    for (size_t i = 0; i < t->n; i++)
        config_key_release(&t->keys[i], base);
}

static void backend_destroy(struct backend_config *b)
{
    table_release(&config_backend_table, b);
    memset(b, 0, sizeof(*b));
}

void config_destroy(struct broker_config *cfg)
{
    if (!cfg)
        return;
    table_release(&config_top_table, cfg);
    memset(cfg, 0, sizeof(*cfg));
}

int config_enum_index(const char *const *names, const char *s, size_t len)
{
    for (int i = 0; names[i]; i++)
        if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0)
            return i;
    return -1;
}

/* Store row k's default into base (which holds nothing for k yet). */
static int key_default(const struct config_key *k, void *base)
{
    void *p = config_target(k, base);
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
        *(int *)p = config_enum_index(k->enum_names, k->def_str, strlen(k->def_str));
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
            if (config_strlist_push(p, *d, strlen(*d)))
                return -ENOMEM;
        return 0;
    case CONFIG_T_BACKENDS: {
        struct broker_config *cfg = base;
        cfg->backends = calloc(1, sizeof(*cfg->backends));
        if (!cfg->backends)
            return -ENOMEM;
        cfg->nbackends = 1;
        return config_backend_defaults(&cfg->backends[0]);
    }
    }
    return 0;
}

static int table_defaults(const struct config_table *t, void *base)
{
    for (size_t i = 0; i < t->n; i++) {
        int rc = key_default(&t->keys[i], base);
        if (rc)
            return rc;
    }
    return 0;
}

int config_backend_defaults(struct backend_config *b)
{
    return table_defaults(&config_backend_table, b);
}

int config_init_defaults(struct broker_config *cfg)
{
    int rc;

    memset(cfg, 0, sizeof(*cfg));
    rc = table_defaults(&config_top_table, cfg);
    if (rc)
        config_destroy(cfg);
    return rc;
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

