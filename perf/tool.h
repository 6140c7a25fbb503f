/*
 * tool.h - process set-up shared by the test and benchmark programs
 * (mockd, loadgen), header-only: file limits and address resolution. JSON
 * framing lives in pjson.h.
 */
#ifndef PERF_TOOL_H
#define PERF_TOOL_H

#include <errno.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

/* Load tests open thousands of connections: take what the hard limit allows. */
static inline void tool_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Resolve "HOST:PORT" or "[V6]:PORT" for a stream socket (passive: to bind).
 * 0 and *res (freeaddrinfo it), or -EINVAL with the reason in err. */
static inline int tool_resolve(const char *hostport, bool passive, struct addrinfo **res,
                               char *err, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    size_t hlen = colon ? (size_t)(colon - hostport) : 0;
    if (!colon || hlen == 0 || hlen >= sizeof(host) || colon[1] == '\0') {
        snprintf(err, errlen, "expected HOST:PORT");
        return -EINVAL;
    }
    memcpy(host, hostport, hlen);
    host[hlen] = '\0';
    if (host[0] == '[' && hlen > 2 && host[hlen - 1] == ']') { /* [::1]:port */
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = passive ? AI_PASSIVE | AI_NUMERICSERV : 0};
    *res = NULL;
    int gai = getaddrinfo(host, colon + 1, &hints, res);
    if (gai != 0) {
        snprintf(err, errlen, "%s", gai_strerror(gai));
        return -EINVAL;
    }
    return 0;
}

#endif /* PERF_TOOL_H */
