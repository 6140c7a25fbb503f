/*
 * metrics.h - the broker's figures in the Prometheus text exposition format
 * (version 0.0.4), for the admin `metrics` command.
 */
#ifndef BROKER_METRICS_H
#define BROKER_METRICS_H

#include <stddef.h>

#include "broker.h"

/* A malloc'd NUL-terminated text (*len bytes), or NULL when out of memory. */
char *metrics_text(struct broker *b, size_t *len);

#endif /* BROKER_METRICS_H */
