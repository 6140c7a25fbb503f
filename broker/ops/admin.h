/*
 * admin.h - the admin socket's thread (see admin.c for the protocol).
 */
#ifndef BROKER_ADMIN_H
#define BROKER_ADMIN_H

#include "broker.h"

struct admin;

/* Serve the admin protocol on listen_fd (bound and listening; the caller
 * keeps owning it) from a thread of its own. 0 or -errno. */
int admin_start(struct broker *b, int listen_fd, struct admin **out);
/* Stop the thread, close every admin client, free a. Safe with NULL. */
void admin_stop(struct admin *a);
/* SIGHUP (listener thread): have the admin thread reload the configuration. */
void admin_request_reload(struct admin *a);

#endif /* BROKER_ADMIN_H */
