/*
 * sdlisten.c - socket activation: take the listening sockets systemd opened
 * instead of binding them (see sdlisten.h for the API).
 *
 * The protocol (sd_listen_fds(3)) is three environment variables: LISTEN_PID
 * (the process they are meant for: a child that inherited the environment
 * but not the fds must not act on them), LISTEN_FDS (how many, from fd 3 on)
 * and LISTEN_FDNAMES (colon-separated FileDescriptorName= values). Parsing
 * them is a dozen lines, so brokerd does not link libsystemd for it.
 *
 * Matching: a socket named "client", "admin", "metrics" or "compat" goes to
 * that listener whatever its address (the name is the operator's explicit
 * word). An unnamed socket, or one with another name (systemd names every
 * socket of a unit after the unit unless told otherwise), goes to the
 * listener whose configured address it is bound to. Every inherited socket
 * must find its listener: one left over would be held open by systemd with
 * nobody accepting, and its clients would wait forever, so that stops the
 * start with a message naming the fd.
 *
 * Invariants: an fd in fds[] is either still ours to close (fd >= 0) or was
 * handed to a caller (fd == -1); the environment is cleared on every path,
 * so nothing brokerd might start later inherits the variables; every
 * inherited fd is close-on-exec. A socket taken from systemd is never
 * unlinked: its file belongs to the socket unit, which reuses it for the
 * next start.
 *
 * Known limits: at most SDLISTEN_MAX sockets; matching by address compares
 * exact addresses (a wildcard 0.0.0.0 socket does not match a configured
 * 127.0.0.1; name it instead).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "sdlisten.h"

/* The names brokerd gives a meaning to; see the note above. */
static const char *const known_names[] = {"client", "admin", "metrics", "compat"};

static bool is_known_name(const char *name)
{
    for (size_t i = 0; i < sizeof known_names / sizeof known_names[0]; i++)
        if (strcmp(name, known_names[i]) == 0)
            return true;
    return false;
}

/* A whole decimal number in 1..max; false for anything else. */
static bool parse_count(const char *s, unsigned long max, unsigned long *out)
{
    if (!s || *s < '0' || *s > '9')
        return false;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v == 0 || v > max)
        return false;
    *out = v;
    return true;
}

/* "unix:/path", "unix:@abstract", "1.2.3.4:80", "[::1]:80" for messages. */
static void describe(const struct sdlisten_fd *f, char *out, size_t len)
{
    const struct sockaddr *sa = (const struct sockaddr *)&f->addr;
    char host[INET6_ADDRSTRLEN] = "?";
    if (f->addrlen < sizeof(sa_family_t)) {
        snprintf(out, len, "an unknown address");
    } else if (sa->sa_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
        size_t n = f->addrlen - offsetof(struct sockaddr_un, sun_path);
        if (n == 0)
            snprintf(out, len, "an unnamed Unix socket");
        else if (un->sun_path[0] == '\0')
            snprintf(out, len, "unix:@%.*s", (int)(n - 1), un->sun_path + 1);
        else
            snprintf(out, len, "unix:%.*s", (int)strnlen(un->sun_path, n), un->sun_path);
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(out, len, "TCP %s:%u", host, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(out, len, "TCP [%s]:%u", host, ntohs(in6->sin6_port));
    } else {
        snprintf(out, len, "a socket of address family %d", sa->sa_family);
    }
}

/* "fd 3 (named "client", unix:/run/brokerd/broker.sock)" */
static void fd_label(const struct sdlisten_fd *f, int fd, char *out, size_t len)
{
    char where[160];
    describe(f, where, sizeof where);
    if (f->name[0])
        snprintf(out, len, "fd %d (named \"%.64s\", %s)", fd, f->name, where);
    else
        snprintf(out, len, "fd %d (%s)", fd, where);
}

/* Check one inherited fd and record its address. */
static int inspect(struct sdlisten_fd *f, char *err, size_t errlen)
{
    int fd = f->fd, type = 0, acc = 0;
    socklen_t ol = sizeof type;
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
        int e = errno;
        snprintf(err, errlen, "socket activation: fd %d (LISTEN_FDS) is not open: %s", fd,
                 strerror(e));
        return -EINVAL; /* a setup error, as a bad configuration (exit 2) */
    }
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &ol) < 0) {
        int e = errno;
        snprintf(err, errlen, "socket activation: fd %d%s%s%s is not a socket (%s); brokerd "
                 "takes listening stream sockets (ListenStream=)", fd, f->name[0] ? " (named \"" : "",
                 f->name[0] ? f->name : "", f->name[0] ? "\")" : "", strerror(e));
        return -EINVAL;
    }
    f->addrlen = sizeof f->addr;
    if (getsockname(fd, (struct sockaddr *)&f->addr, &f->addrlen) < 0)
        f->addrlen = 0;
    char label[256];
    fd_label(f, fd, label, sizeof label);
    if (type != SOCK_STREAM) {
        snprintf(err, errlen, "socket activation: %s is not a stream socket (SO_TYPE %d); "
                 "brokerd takes listening stream sockets (ListenStream=)", label, type);
        return -EINVAL;
    }
    ol = sizeof acc;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &ol) < 0 || !acc) {
        snprintf(err, errlen, "socket activation: %s is not listening; brokerd takes listening "
                 "sockets (ListenStream= with Accept=no)", label);
        return -EINVAL;
    }
    return 0;
}

static void clear_env(void)
{
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
}

int sdlisten_collect(struct sdlisten *sl, char *err, size_t errlen)
{
    memset(sl, 0, sizeof *sl);
    unsigned long pid = 0, n = 0;
    const char *spid = getenv("LISTEN_PID"), *sfds = getenv("LISTEN_FDS");
    if (!parse_count(spid, (unsigned long)-1, &pid) || pid != (unsigned long)getpid() ||
        !sfds || strcmp(sfds, "0") == 0) {
        clear_env(); /* not meant for us, or nothing passed */
        return 0;
    }
    if (!parse_count(sfds, 1u << 20, &n)) {
        snprintf(err, errlen, "socket activation: LISTEN_FDS=\"%.32s\" is not a count", sfds);
        clear_env();
        return -EINVAL;
    }
    if (n > SDLISTEN_MAX) {
        snprintf(err, errlen, "socket activation: %lu sockets passed (LISTEN_FDS); brokerd takes "
                 "at most %d", n, SDLISTEN_MAX);
        clear_env();
        return -EINVAL;
    }
    const char *names = getenv("LISTEN_FDNAMES");
    for (unsigned i = 0; i < n; i++) {
        struct sdlisten_fd *f = &sl->fds[i];
        f->fd = SDLISTEN_FD_START + (int)i;
        if (names) { /* the i-th colon-separated field, "" past the last */
            size_t len = strcspn(names, ":");
            snprintf(f->name, sizeof f->name, "%.*s", (int)len, names);
            names = names[len] ? names + len + 1 : NULL;
        }
    }
    sl->n = (unsigned)n;
    clear_env();
    for (unsigned i = 0; i < sl->n; i++) {
        int rc = inspect(&sl->fds[i], err, errlen);
        if (rc < 0) {
            sdlisten_close(sl);
            return rc;
        }
    }
    return 0;
}

/* Does the inherited address name the configured one? */
static bool same_address(const struct sdlisten_fd *f, const struct sockaddr *a, socklen_t alen)
{
    const struct sockaddr *sa = (const struct sockaddr *)&f->addr;
    if (f->addrlen < sizeof(sa_family_t) || sa->sa_family != a->sa_family)
        return false;
    if (a->sa_family == AF_UNIX) {
        const struct sockaddr_un *x = (const struct sockaddr_un *)sa, *y = (const void *)a;
        size_t xn = f->addrlen - offsetof(struct sockaddr_un, sun_path);
        size_t yn = alen - offsetof(struct sockaddr_un, sun_path);
        if (xn == 0 || yn == 0 || x->sun_path[0] == '\0' || y->sun_path[0] == '\0')
            return false; /* unnamed or abstract: brokerd configures paths only */
        char xp[sizeof x->sun_path + 1], yp[sizeof y->sun_path + 1];
        snprintf(xp, sizeof xp, "%.*s", (int)strnlen(x->sun_path, xn), x->sun_path);
        snprintf(yp, sizeof yp, "%.*s", (int)strnlen(y->sun_path, yn), y->sun_path);
        if (strcmp(xp, yp) == 0)
            return true;
        /* The same socket file by another name (a relative listen path, a
         * symlinked directory): the same inode. */
        struct stat sx, sy;
        return stat(xp, &sx) == 0 && stat(yp, &sy) == 0 && S_ISSOCK(sx.st_mode) &&
               sx.st_dev == sy.st_dev && sx.st_ino == sy.st_ino;
    }
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)sa, *y = (const void *)a;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)sa, *y = (const void *)a;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
    }
    return false;
}

static const char *family_words(int family)
{
    return family == AF_UNIX ? "a Unix socket" : family == AF_INET6 ? "a TCP (IPv6) socket"
                                                 : family == AF_INET ? "a TCP (IPv4) socket"
                                                                      : "another kind of socket";
}

int sdlisten_take(struct sdlisten *sl, const char *name, const char *key,
                  const struct sockaddr *addr, socklen_t addrlen, char *err, size_t errlen)
{
    struct sdlisten_fd *hit = NULL;
    for (unsigned i = 0; i < sl->n && !hit; i++)
        if (sl->fds[i].fd >= 0 && strcmp(sl->fds[i].name, name) == 0)
            hit = &sl->fds[i];
    for (unsigned i = 0; i < sl->n && !hit; i++)
        if (sl->fds[i].fd >= 0 && !is_known_name(sl->fds[i].name) &&
            same_address(&sl->fds[i], addr, addrlen))
            hit = &sl->fds[i];
    if (!hit)
        return -ENOENT;
    const struct sockaddr *sa = (const struct sockaddr *)&hit->addr;
    if (hit->addrlen < sizeof(sa_family_t) || sa->sa_family != addr->sa_family) {
        char label[256];
        fd_label(hit, hit->fd, label, sizeof label);
        snprintf(err, errlen, "%s: the socket systemd passed as %s is %s; %s needs %s", key, label,
                 family_words(hit->addrlen ? sa->sa_family : -1), key,
                 family_words(addr->sa_family));
        return -EINVAL;
    }
    int fd = hit->fd;
    hit->fd = -1;
    return fd;
}

int sdlisten_finish(struct sdlisten *sl, char *err, size_t errlen)
{
    for (unsigned i = 0; i < sl->n; i++) {
        struct sdlisten_fd *f = &sl->fds[i];
        if (f->fd < 0)
            continue;
        char label[256];
        fd_label(f, f->fd, label, sizeof label);
        snprintf(err, errlen, "socket activation: no listener takes the socket systemd passed as "
                 "%s: name it client, admin or metrics (FileDescriptorName=), or bind it to the "
                 "address of listen, admin_listen or metrics_listen", label);
        sdlisten_close(sl);
        return -EINVAL;
    }
    return 0;
}

void sdlisten_close(struct sdlisten *sl)
{
    for (unsigned i = 0; i < sl->n; i++)
        if (sl->fds[i].fd >= 0) {
            close(sl->fds[i].fd);
            sl->fds[i].fd = -1;
        }
}
