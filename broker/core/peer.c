/*
 * peer.c - the door check of every listening socket: is this peer one of
 * the users the operator allowed?
 *
 * The client socket's file mode (listen_mode, 0600 plus optional group
 * bits) is the first gate: the kernel refuses a connect(2) from anyone the
 * mode excludes. The second is here, at accept: SO_PEERCRED gives the
 * uid, gid and pid the peer had when it connected (the kernel records them;
 * the peer cannot lie), and a peer is let in when it is root, runs as the
 * broker's own uid, or is named in allow_uids / allow_gids. So a group-
 * readable socket (listen_mode 0660) still only admits the users listed,
 * not the whole group. A refused peer gets one `forbidden` line naming its
 * uid and the keys to change, and is closed; the caller counts and logs it.
 *
 * The lists are read from the configuration in effect at each accept, so a
 * reload that changes them applies to the next connection (connected
 * clients stay: they were checked when they came).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker.h"
#include "log.h"
#include "peer.h"

static bool in_list(const struct config_idlist *l, uint32_t id)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i] == id)
            return true;
    return false;
}

void peer_judge(int fd, int family, const struct broker_config *cfg, bool tcp_ok,
                struct peer_verdict *out)
{
    *out = (struct peer_verdict){0};
    if (family == AF_UNSPEC) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
            family = ss.ss_family;
    }
    if (family != AF_UNSPEC && family != AF_UNIX) {
        out->allowed = tcp_ok; /* TCP has no credentials to read */
        return;
    }
    struct ucred uc;
    socklen_t ul = sizeof uc;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &ul) < 0 || ul != sizeof uc)
        return; /* unknown peer on a Unix socket: refused */
    out->known = true;
    out->uid = uc.uid;
    out->gid = uc.gid;
    out->pid = uc.pid;
    out->allowed = uc.uid == 0 || uc.uid == geteuid() || in_list(&cfg->allow_uids, uc.uid) ||
                   in_list(&cfg->allow_gids, uc.gid);
}

size_t peer_refusal_line(const struct peer_verdict *v, char *buf, size_t cap)
{
    int n;
    if (v->known)
        n = snprintf(buf, cap,
                     "{\"id\":null,\"status\":\"error\",\"error\":{\"code\":\"forbidden\","
                     "\"message\":\"uid %u (gid %u) may not use this broker: add it to "
                     "allow_uids or its group to allow_gids\"}}\n",
                     (unsigned)v->uid, (unsigned)v->gid);
    else
        n = snprintf(buf, cap,
                     "{\"id\":null,\"status\":\"error\",\"error\":{\"code\":\"forbidden\","
                     "\"message\":\"the peer's credentials cannot be read\"}}\n");
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

bool peer_admit(struct broker *b, int fd, int family, const char *which)
{
    struct peer_verdict v;
    peer_judge(fd, family, bcfg(b), true, &v);
    if (v.allowed)
        return true;
    atomic_fetch_add_explicit(&b->peers_refused, 1, memory_order_relaxed);
    static struct log_ratelimit rl = LOG_RATELIMIT_INIT("peer_refused", 5, 10);
    LOG_RATELIMITED_BY(&rl, LOG_LEVEL_WARN, "connection refused: peer not allowed",
                       LOG_CSTR("listener", which), LOG_INT("uid", v.known ? (int64_t)v.uid : -1),
                       LOG_INT("gid", v.known ? (int64_t)v.gid : -1),
                       LOG_INT("pid", v.known ? (int64_t)v.pid : -1));
    char line[320];
    size_t n = peer_refusal_line(&v, line, sizeof line);
    if (n && write(fd, line, n) < 0) {
        /* the peer is gone already */
    }
    close(fd);
    return false;
}
