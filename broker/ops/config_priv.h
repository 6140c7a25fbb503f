/*
 * config_priv.h - what the config files share: the key tables (config.c)
 * for loading and the reload check (config_load.c) and the JSON dump
 * (config_dump.c); the text helpers config_addr.c and config_doc.c use.
 * Not for the rest of the broker: use config.h.
 */
#ifndef BROKER_CONFIG_PRIV_H
#define BROKER_CONFIG_PRIV_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define MS_HOUR INT64_C(3600000)
#define MS_DAY  INT64_C(86400000)
#define MS_YEAR (365 * MS_DAY)
#define GiB     INT64_C(1073741824)

#define WHY_MAX          192 /* a reason from a check function */
#define PATH_MAX_DISPLAY 256

/* One table of rows: the top-level keys (prefix "") and the keys of each
 * backends[] entry (prefix "backends[]."). Read-only. */
struct config_table {
    const struct config_key *keys;
    size_t n;
    const char *prefix; /* of every row name in this table */
};

extern const struct config_table config_top_table;
extern const struct config_table config_backend_table;

/* Row k's field inside base (a broker_config or a backend_config). */
static inline void *config_target(const struct config_key *k, void *base)
{
    return (char *)base + k->offset;
}

static inline const void *config_ctarget(const struct config_key *k, const void *base)
{
    return (const char *)base + k->offset;
}

/* Format the reason into w (wl bytes) and return -EINVAL. */
int config_bad(char *w, size_t wl, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* "a, b, c" from a NULL-terminated name list, into buf (len bytes). */
void config_enum_names(const char *const *names, char *buf, size_t len);

/* s (len bytes) as a short, printable, double-quoted token for messages,
 * into out (cap bytes; "" when cap < 12). */
void config_quote_value(char *out, size_t cap, const char *s, size_t len);

/* The index of s (len bytes) in a NULL-terminated name list, or -1. */
int config_enum_index(const char *const *names, const char *s, size_t len);

/* Free l's strings and array and empty it. */
void config_strlist_free(struct config_strlist *l);

/* Appends a copy of s (len bytes) to l. 0 or -ENOMEM (l unchanged). */
int config_strlist_push(struct config_strlist *l, const char *s, size_t len);

/* Release what row k owns inside base (and zero it). */
void config_key_release(const struct config_key *k, void *base);

/* b (holding nothing yet) set to every backends[] row's default. 0 or
 * -ENOMEM (b may hold some defaults: release it). */
int config_backend_defaults(struct backend_config *b);

#endif /* BROKER_CONFIG_PRIV_H */
