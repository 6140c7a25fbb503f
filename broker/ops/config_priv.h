/*
 * config_priv.h - what config.c shares with config_addr.c and config_doc.c
 * (the key table's addresses and its --help / Markdown output). Not for the
 * rest of the broker: use config.h.
 */
#ifndef BROKER_CONFIG_PRIV_H
#define BROKER_CONFIG_PRIV_H

#include <stddef.h>
#include <stdint.h>

#define MS_HOUR INT64_C(3600000)
#define MS_DAY  INT64_C(86400000)
#define MS_YEAR (365 * MS_DAY)
#define GiB     INT64_C(1073741824)

/* Format the reason into w (wl bytes) and return -EINVAL. */
int config_bad(char *w, size_t wl, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* "a, b, c" from a NULL-terminated name list, into buf (len bytes). */
void config_enum_names(const char *const *names, char *buf, size_t len);

#endif /* BROKER_CONFIG_PRIV_H */
