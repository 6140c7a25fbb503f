/*
 * compat.h - the Blender add-on's own protocol on the compat listener: a
 * flavour of the client (front/client.c), not a second request path.
 *
 * A compat client is a struct client with c->compat set. Its bytes are
 * framed by JSON completeness instead of newlines, and its answers are
 * re-encoded from the native form once they are complete; everything in
 * between (parse checks, route, admit, rate limit, cache, coalescing,
 * breaker, retries, pool, deadlines) is the native request's way, unchanged.
 * See compat.c for the design note.
 *
 * Threading: a compat client belongs to its worker like any client; none
 * of these functions is thread-safe beyond that.
 */
#ifndef BROKER_COMPAT_H
#define BROKER_COMPAT_H

#include <stdbool.h>
#include <stddef.h>

#include "proto.h"

struct worker;
struct client;

/* Give client c the add-on protocol (right after client_new set it up).
 * 0 or -ENOMEM (c is then still a plain client the caller frees). */
int compat_attach(struct worker *w, struct client *c);
/* Release what compat_attach took; c->compat may be NULL. */
void compat_detach(struct client *c);

/* client_process for a compat client: re-encode an answer that became
 * complete, then take the next request when the previous answer has been
 * handed to the send path (one request at a time). */
void compat_process(struct worker *w, struct client *c);

/* req_parse for a compat client: the request c's scanner has just framed
 * (buf[0..len), buf[0] at the scanner's offset 0), checked from the
 * scanner's captures. As proto_parse_request: 0, or -EINVAL with *err. */
int compat_parse(const struct client *c, const char *buf, size_t len, struct proto_request *rq,
                 struct proto_error *err);

/* Re-encode, in place, one native answer (as proto_write_answer or
 * proto_write_error_ex wrote it, with its newline) occupying p[0..len) as
 * the add-on would answer: {"status":"success","result":R} or
 * {"status":"error","message":"<code>: <message>"} (a backend's own error:
 * its message alone). Returns the new length, never more than len. */
size_t compat_encode(char *p, size_t len);

#endif /* BROKER_COMPAT_H */
