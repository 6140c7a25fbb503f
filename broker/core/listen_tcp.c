/*
 * listen_tcp.c - bind and listen on a configured TCP host:port.
 *
 * The host is an IP literal (loopback is the sensible choice: the add-on
 * protocol has no authentication, exactly like Blender's own port) or a name
 * resolved once at start; every address the resolver returns is tried in
 * order and the first that binds is kept. SO_REUSEADDR lets a restarted
 * broker bind while connections of the previous one sit in TIME_WAIT; it
 * does not let two live listeners share the port (that is SO_REUSEPORT), so
 * a second brokerd on the same port still fails with EADDRINUSE.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "listen_tcp.h"

static int bind_one(const struct addrinfo *ai, int backlog, int *fd_out)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
        return -errno;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, backlog) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    *fd_out = fd;
    return 0;
}

static void addr_text(const struct addrinfo *ai, uint16_t port, char *name, size_t namelen)
{
    char host[INET6_ADDRSTRLEN] = "?";
    const void *src = ai->ai_family == AF_INET6
                          ? (const void *)&((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
                          : (const void *)&((const struct sockaddr_in *)ai->ai_addr)->sin_addr;
    inet_ntop(ai->ai_family, src, host, sizeof host);
    snprintf(name, namelen, ai->ai_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host, port);
}

int listen_tcp(const char *key, const struct config_address *a, int backlog, int *fd_out,
               char *name, size_t namelen, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = a->family,
                             .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    char port[8];
    snprintf(port, sizeof port, "%u", a->port);
    int rc = getaddrinfo(a->host, port, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "%s: cannot resolve \"%s\": %s", key, a->host, gai_strerror(rc));
        return -EINVAL;
    }
    rc = -EADDRNOTAVAIL;
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        rc = bind_one(ai, backlog, fd_out);
        if (rc == 0) {
            addr_text(ai, a->port, name, namelen);
            break;
        }
    }
    freeaddrinfo(res);
    if (rc < 0)
        snprintf(err, errlen, "%s: cannot listen on %s:%u: %s", key, a->host, a->port,
                 strerror(-rc));
    return rc;
}
