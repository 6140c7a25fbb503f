/*
 * pending.h - configuration keys this version accepts but does not act on.
 *
 * The key table (config.c) knows every key of the specification, so a
 * configuration written for the finished product loads. A key whose
 * feature is not built yet must not be ignored silently: brokerd warns at
 * start for each one set away from its default. Today every key of the
 * specification is in effect and the list (pending.c) is empty; the
 * mechanism stays for the next key that lands before its feature.
 */
#ifndef BROKER_PENDING_H
#define BROKER_PENDING_H

#include <stddef.h>

#include "config.h"

/* Calls fn(arg, key) for every pending key whose value differs from the
 * default (key like "backends[1].health.interval_ms"); returns how many, or
 * -ENOMEM. */
int pending_keys(const struct broker_config *cfg, void (*fn)(void *arg, const char *key),
                 void *arg);

#endif
