/*
 * peer.h - who may talk to the broker: the peer credentials of a connected
 * Unix socket (SO_PEERCRED) against allow_uids / allow_gids.
 */
#ifndef BROKER_PEER_H
#define BROKER_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "config.h"

struct peer_verdict {
    bool allowed;
    bool known;   /* credentials could be read (false: not a Unix socket, or an error) */
    uid_t uid;
    gid_t gid;
    pid_t pid;
};

/* Read fd's peer credentials and judge them by cfg: allowed when the peer
 * is root, runs as the broker's own uid, or its uid is in allow_uids or its
 * (primary) gid in allow_gids. A peer whose credentials cannot be read is
 * refused on a Unix socket; on a TCP socket (the compat listener) there are
 * none to read, and tcp_ok says what to do then. family: fd's address
 * family when the caller knows it (its listener's), else AF_UNSPEC and it
 * is read from fd (one getsockname). */
void peer_judge(int fd, int family, const struct broker_config *cfg, bool tcp_ok,
                struct peer_verdict *out);

/* One error line for a refused peer (JSON, newline-terminated) in buf;
 * returns its length (0 if it did not fit). */
size_t peer_refusal_line(const struct peer_verdict *v, char *buf, size_t cap);

struct broker;

/* The door of a listener (which: "listen", "admin_listen", ...; family: the
 * listening socket's, AF_UNSPEC to look it up on fd): judge fd
 * by the configuration in effect; a refused peer gets its line, is closed,
 * counted (b->peers_refused) and logged (rate-limited). True: let it in. */
bool peer_admit(struct broker *b, int fd, int family, const char *which);

#endif /* BROKER_PEER_H */
