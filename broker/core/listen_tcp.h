/*
 * listen_tcp.h - a listening TCP socket for a configured host:port (the
 * compat listener's TCP form; the client and admin sockets are Unix only).
 */
#ifndef BROKER_LISTEN_TCP_H
#define BROKER_LISTEN_TCP_H

#include <stddef.h>

#include "config.h"

/* Resolve a (CONFIG_ADDR_TCP), bind the first address that takes it with
 * SO_REUSEADDR, and listen with `backlog`. `key` names the configuration key
 * in errors. 0 and *fd_out, or -errno with a message in err. Text for logs
 * ("127.0.0.1:9876", "[::1]:9876") goes to name (at least 64 bytes). */
int listen_tcp(const char *key, const struct config_address *a, int backlog, int *fd_out,
               char *name, size_t namelen, char *err, size_t errlen);

#endif /* BROKER_LISTEN_TCP_H */
