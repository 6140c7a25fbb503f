/*
 * config.h - brokerd configuration: typed fields, filled from one key table.
 *
 * Design: every configuration key is one row of a table (struct config_key):
 * dotted name, type, default, range, flags (reloadable, secret, required,
 * extra), the offset of its target field and a help line. The same rows
 * drive the embedded defaults, JSON parsing and validation, the `--help`
 * text, the effective-config dump (`config` admin command) and the Markdown
 * reference (docs/config-reference.md); reload checks use the reloadable
 * flag. Keys of each backend entry live in a sub-table reached through the
 * `backends` row (names shown as `backends[].pool_size`), parsed by the same
 * code. A section (`cache`, `backends[].health`) is not a row: it exists
 * because some row's name has it as a prefix.
 *
 * Ownership: struct broker_config owns every string and array it points to;
 * config_destroy frees them. A loaded config is immutable: readers on any
 * thread may use it freely while nobody destroys it. Reload = load a new
 * struct, config_check_reload(old, new), then swap pointers.
 *
 * Errors: functions return 0 or -errno (-EINVAL for a bad configuration,
 * -ENOMEM, or the open(2)/read(2) error of the file) and write a one-line
 * message naming the full key path and the cause into err, e.g.
 *   backends[1].pool_size: 0 is below the minimum 1
 *   cache.ttl_msx: unknown key (did you mean "ttl_ms"?)
 *   /etc/brokerd.json: line 3 column 5: ...       (JSON syntax)
 *   /etc/brokerd.json: No such file or directory   (I/O)
 * Key errors are not prefixed by the file name; the caller adds it if wanted.
 */
#ifndef BROKER_CONFIG_H
#define BROKER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "log.h"

#define CONFIG_NAME_MAX      64  /* backend name: [A-Za-z0-9_-]{1,64} */
#define CONFIG_COMMAND_MAX   64  /* command name: [a-z][a-z0-9_]{0,63} */
#define CONFIG_HOST_MAX      253 /* DNS name or address literal, no brackets */
#define CONFIG_UNIX_PATH_MAX 107 /* sizeof(sun_path) - 1 */
#define CONFIG_BACKENDS_MAX  64
#define CONFIG_LIST_MAX      1024 /* entries of any list key */

enum config_framing { CONFIG_FRAMING_JSON, CONFIG_FRAMING_NDJSON };
enum config_queue_order { CONFIG_QUEUE_FAIR, CONFIG_QUEUE_FIFO };
enum config_scripts_policy {
    CONFIG_SCRIPTS_DENY_DANGEROUS,
    CONFIG_SCRIPTS_ALLOW,
    CONFIG_SCRIPTS_DENY_ALL,
};

enum config_addr_kind { CONFIG_ADDR_NONE, CONFIG_ADDR_TCP, CONFIG_ADDR_UNIX };

/* A parsed address. TCP: host is an IPv4/IPv6 literal (family AF_INET /
 * AF_INET6, brackets removed) or a hostname to resolve (AF_UNSPEC). UNIX:
 * path (relative paths are relative to the broker's working directory).
 * NONE: not configured (compat_listen null). */
struct config_address {
    enum config_addr_kind kind;
    int family;
    uint16_t port;
    char host[CONFIG_HOST_MAX + 1];
    char path[CONFIG_UNIX_PATH_MAX + 1];
};

struct config_strlist {
    char **v; /* each owned, NUL-terminated */
    size_t n;
};

struct config_idlist {
    uint32_t *v; /* uids or gids */
    size_t n;
};

struct config_health {
    char *command;
    int64_t interval_ms;
    int64_t timeout_ms;
    uint32_t rise;
    uint32_t fall;
};

struct config_breaker {
    uint32_t failures;
    int64_t open_ms;
    int64_t max_open_ms;
};

struct config_retry {
    uint32_t max;
    int64_t backoff_ms;
};

struct backend_config {
    char *name;
    struct config_address address;
    enum config_framing framing;
    uint32_t pool_size;
    uint32_t max_queue;
    enum config_queue_order queue_order;
    int64_t connect_timeout_ms;
    int64_t request_timeout_ms;
    int64_t max_request_timeout_ms;
    int64_t idle_timeout_ms;
    uint64_t max_response_bytes;
    struct config_health health;
    struct config_breaker breaker;
    struct config_retry retry;
    /* Command names, or prefixes ending in '*': see config_is_read_only. */
    struct config_strlist read_only;
};

struct config_cache {
    uint64_t max_bytes;
    uint32_t max_entries;
    int64_t ttl_ms;
    int64_t max_ttl_ms;
    int64_t serve_stale_ms;          /* 0 = off */
    uint64_t max_object_bytes;       /* extra key */
    uint64_t memory_watermark_bytes; /* extra key; 0 = off */
};

struct config_rate_limit {
    uint32_t rate; /* requests per second per client */
    uint32_t burst;
    uint32_t max_inflight_per_client;
    uint32_t max_inflight;
};

struct config_scripts {
    enum config_scripts_policy policy;
};

struct config_paths {
    struct config_strlist allowed_roots;
};

struct config_log {
    enum log_level level;
    enum log_format format;
};

struct broker_config {
    char *listen;
    mode_t listen_mode;
    struct config_idlist allow_uids;
    struct config_idlist allow_gids;
    char *admin_listen;
    struct config_address compat_listen; /* kind NONE when null */
    struct config_address metrics_listen; /* extra key; TCP, kind NONE when null */
    uint32_t workers;                    /* 0 = online CPUs */
    uint32_t max_clients;
    uint64_t max_request_bytes;
    uint32_t max_json_depth;
    int64_t shutdown_grace_ms;
    uint64_t max_client_output_bytes; /* extra key */
    uint32_t client_rx_buffers;       /* extra key: shared receive buffers per worker */
    struct backend_config *backends;  /* nbackends >= 1 entries; [0] is the default */
    size_t nbackends;
    struct config_cache cache;
    struct config_rate_limit rate_limit;
    struct config_scripts scripts;
    struct config_paths paths;
    struct config_log log;
};

/* --- lifecycle --------------------------------------------------------- */

/* Fill cfg with the embedded defaults: the broker runs with no file at all
 * (one backend "blender" at 127.0.0.1:9876). cfg's previous contents are
 * ignored, not freed. 0 or -ENOMEM (cfg then reset, as by config_destroy). */
int config_init_defaults(struct broker_config *cfg);

/* Load defaults + the JSON file at path. cfg must be zeroed or hold a config
 * (from config_init_defaults or an earlier load). On success (0) its old
 * contents are destroyed and replaced by the new, fully validated config. On
 * failure (-errno) cfg is left exactly as it was and err holds a message. */
int config_load_file(struct broker_config *cfg, const char *path, char *err, size_t errlen);

/* Same as config_load_file for an in-memory document; origin names it in
 * JSON syntax errors ("<string>" when NULL). Also the fuzzing entry point. */
int config_load_string(struct broker_config *cfg, const char *text, size_t len, const char *origin,
                       char *err, size_t errlen);

/* Free everything cfg owns and zero it. Safe on a zeroed struct, on a
 * defaults-only config and twice. */
void config_destroy(struct broker_config *cfg);

/* 0 when next may replace cur without a restart; else -EINVAL and err names
 * the first key without the reloadable flag whose value changed. Backends
 * are matched by name (added and removed ones are the reload's business);
 * the keys of a backend in both are compared. */
int config_check_reload(const struct broker_config *cur, const struct broker_config *next,
                        char *err, size_t errlen);

/* --- queries (any thread; hot path safe, no allocation) --------------- */

/* The backend named name (len bytes, need not be NUL-terminated), or NULL. */
const struct backend_config *config_find_backend(const struct broker_config *cfg, const char *name,
                                                 size_t len);

/* True when command `type` (len bytes) is read-only on backend b: it equals
 * an entry of b->read_only or starts with the part of an entry before its
 * trailing '*'. Read-only commands may be cached and retried. */
bool config_is_read_only(const struct backend_config *b, const char *type, size_t len);

/* --- output ------------------------------------------------------------ */

/* The effective config as a JSON object (keys in table order; values of
 * secret keys replaced by "<redacted>"), in *out (free with free()). The
 * result loads back to an equal config. 0 or -ENOMEM. */
int config_dump_json(const struct broker_config *cfg, char **out);

/* --help text: every key with type, default, range, reloadability, help. */
void config_print_help(FILE *out);

/* The Markdown reference (docs/config-reference.md is this output; brokerd
 * --print-config-reference prints it). 0, or -EIO when writing failed. */
int config_write_reference_md(FILE *out);

/* Parse an address: "host:port", "[v6]:port", "unix:PATH" or a path that
 * starts with '/' or '.'. 0, or -EINVAL with the reason in why. */
int config_address_parse(struct config_address *out, const char *s, size_t len, char *why,
                         size_t whylen);
/* Render as config_address_parse accepts it ("" for NONE); snprintf-like. */
int config_address_format(const struct config_address *a, char *buf, size_t len);

/* Same kind, host text, port and path: the reload check's "unchanged". */
bool config_address_equal(const struct config_address *a, const struct config_address *b);

/* --- the key table ----------------------------------------------------- */

enum config_type {
    CONFIG_T_U32,         /* uint32_t, JSON integer */
    CONFIG_T_SIZE,        /* uint64_t bytes, JSON integer */
    CONFIG_T_MS,          /* int64_t milliseconds, JSON integer */
    CONFIG_T_STRING,      /* char * (owned), JSON string */
    CONFIG_T_ENUM,        /* int-sized enum, JSON string from enum_names */
    CONFIG_T_MODE,        /* mode_t, JSON string of octal digits ("0600") */
    CONFIG_T_ADDRESS,     /* struct config_address, JSON string */
    CONFIG_T_ADDRESS_OPT, /* struct config_address, JSON string or null */
    CONFIG_T_ID_LIST,     /* struct config_idlist, JSON array of integers */
    CONFIG_T_STR_LIST,    /* struct config_strlist, JSON array of strings */
    CONFIG_T_BACKENDS,    /* backends/nbackends, JSON array of objects (sub-table) */
};

#define CONFIG_F_RELOAD   0x1u /* may change on SIGHUP/reload without a restart */
#define CONFIG_F_SECRET   0x2u /* redacted in dumps, never logged */
#define CONFIG_F_REQUIRED 0x4u /* must appear in every backends[] entry of a file */
#define CONFIG_F_EXTRA    0x8u /* not in SPEC's key list (added by the implementation) */

struct config_key {
    const char *name; /* full dotted name: "cache.ttl_ms", "backends[].health.rise" */
    enum config_type type;
    unsigned flags;
    size_t offset;                 /* of the target in broker_config or backend_config */
    int64_t def;                   /* numeric default */
    const char *def_str;           /* string/enum/mode/address default; NULL = null */
    const char *const *def_list;   /* list default, NULL-terminated; NULL = [] */
    int64_t min, max;              /* numbers; list elements for ID_LIST; MODE bits */
    const char *const *enum_names; /* ENUM: NULL-terminated, index = value */
    const struct config_key *sub;  /* BACKENDS: the per-backend table */
    size_t nsub;
    /* Extra check of a string (or of each list element): false + reason. */
    bool (*check)(const char *s, size_t len, char *why, size_t whylen);
    const char *help;
};

/* Every key: the top-level rows in table order, each backends[] row right
 * after the `backends` row. i < config_key_count(). */
size_t config_key_count(void);
const struct config_key *config_key_at(size_t i);
/* Lookup by full name ("listen", "backends[].retry.max"); NULL if none. */
const struct config_key *config_key_find(const char *name);
/* The default as shown in --help and the reference ("4", "\"0600\"",
 * "[\"get_*\"]", "null"); snprintf-like return. */
int config_key_default_str(const struct config_key *k, char *buf, size_t len);

#endif /* BROKER_CONFIG_H */
