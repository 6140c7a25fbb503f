/*
 * validate.h - the Blender parameter table and the check of one request's
 * params against it (see validate.c).
 */
#ifndef BROKER_VALIDATE_H
#define BROKER_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "proto.h"

#define VALIDATE_MSG_MAX 256

/* What validation needs from the configuration in effect. */
struct validate_ctx {
    enum config_scripts_policy scripts;
    const struct config_strlist *allowed_roots; /* paths.allowed_roots */
};

enum validate_result {
    VALIDATE_OK = 0,
    VALIDATE_REWRITTEN = 1, /* ok, with params rewritten into `out` (a query folded) */
    VALIDATE_INVALID = -1,  /* invalid_params: msg names the JSON path */
    VALIDATE_FORBIDDEN = -2, /* forbidden: a script refused by scripts.policy */
    VALIDATE_NOMEM = -3,
};

/* Check rq's params by the table (commands without rules cost one table
 * lookup). On VALIDATE_REWRITTEN, out holds the new params text (rq's own
 * spans untouched; the caller points rq->params at out). msg is
 * NUL-terminated and at most VALIDATE_MSG_MAX bytes. */
enum validate_result validate_params(const struct proto_request *rq, const struct validate_ctx *ctx,
                                     struct proto_buf *out, char *msg, size_t msglen);

/* True when the table has rules for this command (type, len bytes). */
bool validate_has_rules(const char *type, size_t len);

#endif /* BROKER_VALIDATE_H */
