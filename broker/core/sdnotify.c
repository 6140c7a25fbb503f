/*
 * sdnotify.c - tell systemd when brokerd is ready and when it stops
 * (sd_notify(3) without libsystemd).
 *
 * The protocol is one datagram of "KEY=VALUE" lines to the AF_UNIX socket
 * named by NOTIFY_SOCKET: an absolute path, or '@' and a name in the
 * abstract namespace (the '@' becomes a leading NUL, and the address length
 * counts exactly the name's bytes: abstract names are not NUL-terminated).
 * brokerd sends READY=1 once it accepts clients (so Type=notify units start
 * their dependents only then) and STOPPING=1 when it starts to shut down.
 *
 * A notification that cannot be sent is not fatal: the caller logs it, and
 * systemd reports the unit as failing to start if READY=1 never arrives.
 * Known limit: no credentials or fds are passed along (FDSTORE is unused).
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "sdnotify.h"

int sdnotify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !path[0])
        return 0;
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || n < 2 || n > sizeof un.sun_path)
        return -EINVAL;
    if (path[0] == '/' && n == sizeof un.sun_path)
        return -EINVAL; /* no room for the terminating NUL */
    memcpy(un.sun_path, path, n);
    if (path[0] == '@')
        un.sun_path[0] = '\0';
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (path[0] == '/'));
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    ssize_t sent = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&un, len);
    int rc = sent < 0 ? -errno : (size_t)sent == strlen(state) ? 0 : -EMSGSIZE;
    close(fd);
    return rc;
}
