/*
 * sdlisten.h - listening sockets handed over by systemd (socket activation),
 * without libsystemd (readiness notifications: sdnotify.h).
 *
 * Use at start, on the main thread, before any other thread exists (the
 * environment is read and changed):
 *
 *     struct sdlisten sl;
 *     sdlisten_collect(&sl, err, errlen);          // LISTEN_PID/FDS/FDNAMES
 *     fd = sdlisten_take(&sl, "client", addr, len, err, errlen);
 *     ...                                          // one take per listener
 *     sdlisten_finish(&sl, err, errlen);            // leftovers are an error
 *
 * A listener that finds no inherited socket binds its own, as without
 * systemd. Names (systemd's FileDescriptorName=) known to brokerd: "client"
 * (listen), "admin" (admin_listen), "metrics" (metrics_listen) and "compat"
 * (compat_listen, a Unix path or a TCP address).
 */
#ifndef BROKER_SDLISTEN_H
#define BROKER_SDLISTEN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define SDLISTEN_FD_START 3  /* SD_LISTEN_FDS_START */
#define SDLISTEN_MAX      16 /* more inherited sockets than brokerd can use: refused */
#define SDLISTEN_NAME_MAX 255 /* systemd's limit on FileDescriptorName= */

struct sdlisten_fd {
    int fd;       /* -1 once taken or closed */
    char name[SDLISTEN_NAME_MAX + 1]; /* "" when LISTEN_FDNAMES did not name it */
    struct sockaddr_storage addr;     /* getsockname */
    socklen_t addrlen;
};

struct sdlisten {
    struct sdlisten_fd fds[SDLISTEN_MAX];
    unsigned n;
};

/* Collect the sockets systemd passed: only when LISTEN_PID is our pid and
 * LISTEN_FDS > 0 (else sl->n == 0). Always unsets LISTEN_PID, LISTEN_FDS
 * and LISTEN_FDNAMES, so nothing started later inherits them; sets
 * FD_CLOEXEC on every inherited fd. Each must be a listening SOCK_STREAM
 * socket. 0, or -errno with a message naming the fd in err (every inherited
 * fd is then closed). */
int sdlisten_collect(struct sdlisten *sl, char *err, size_t errlen);

/* The inherited socket for one listener, matched by name (LISTEN_FDNAMES)
 * first, else by its bound address: for AF_UNIX the same path, or a path
 * naming the same socket inode (relative paths, symlinks); for AF_INET/6 the
 * same address and port. The fd's family must be addr's family.
 * Returns the fd (the caller owns it from now on: it closes it, and must not
 * unlink the socket file, which systemd created), -ENOENT when none matches
 * (the caller binds its own), or -errno with err set when the matched socket
 * cannot serve (wrong family). `key` names the configuration key in
 * messages. */
int sdlisten_take(struct sdlisten *sl, const char *name, const char *key,
                  const struct sockaddr *addr, socklen_t addrlen, char *err, size_t errlen);

/* After every take: an inherited socket nobody took is an error (clients
 * would queue on it forever), reported naming its fd, name and address;
 * all left are closed. 0 or -EINVAL. */
int sdlisten_finish(struct sdlisten *sl, char *err, size_t errlen);

/* Close every inherited socket not taken (error paths). Safe twice. */
void sdlisten_close(struct sdlisten *sl);

#endif /* BROKER_SDLISTEN_H */
