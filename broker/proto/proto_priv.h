/*
 * proto_priv.h - what proto.c (requests, answers, backend replies) shares
 * with proto_string.c (JSON string text). Not for the rest of the broker:
 * use proto.h.
 */
#ifndef BROKER_PROTO_PRIV_H
#define BROKER_PROTO_PRIV_H

#include <stdint.h>
#include <string.h>

#include "proto.h"

/* Unchecked append: the caller reserved room. */
static inline void put(struct proto_buf *b, const char *s, size_t n)
{
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

#define PUT_LIT(b, lit) put((b), (lit), sizeof(lit) - 1)

/* Strictly decode one UTF-8 sequence at *pp (< e); -1 if invalid, and then
 * *pp is left alone. Same rules as the scanner. */
int32_t proto_utf8_decode(const uint8_t **pp, const uint8_t *e);

#endif /* BROKER_PROTO_PRIV_H */
