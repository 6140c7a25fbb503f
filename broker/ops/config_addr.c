/*
 * config_addr.c - backend and listener addresses: "host:port", "[v6]:port",
 * "unix:/path" (or a path starting with '/'), parsed with a reason naming
 * what is wrong, formatted back, compared.
 */
#include "config.h"
#include "config_priv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

static int parse_unix(struct config_address *out, const char *p, size_t len, char *w, size_t wl)
{
    if (len == 0)
        return config_bad(w, wl, "\"unix:\" needs a path");
    if (len > CONFIG_UNIX_PATH_MAX)
        return config_bad(w, wl, "socket path is %zu bytes, the maximum is %d", len, CONFIG_UNIX_PATH_MAX);
    out->kind = CONFIG_ADDR_UNIX;
    memcpy(out->path, p, len);
    out->path[len] = '\0';
    return 0;
}

static bool parse_port(const char *p, size_t len, uint16_t *port)
{
    unsigned v = 0;

    if (len == 0 || len > 5)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    if (v < 1 || v > 65535)
        return false;
    *port = (uint16_t)v;
    return true;
}

/* RFC 1123 host name: dot-separated labels [A-Za-z0-9-]{1,63}, no label
 * starting or ending with '-'. */
static bool valid_hostname(const char *h, size_t len)
{
    size_t label = 0;

    if (len == 0 || len > CONFIG_HOST_MAX)
        return false;
    for (size_t i = 0; i <= len; i++) {
        char c = i < len ? h[i] : '.';
        if (c == '.') {
            if (label == 0 || label > 63 || h[i - 1] == '-')
                return false;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   (c == '-' && label > 0)) {
            label++;
        } else {
            return false;
        }
    }
    return true;
}

static int parse_tcp(struct config_address *out, const char *s, size_t len, char *w, size_t wl)
{
    const char *host = s, *colon;
    size_t hlen;
    unsigned char bin[16];

    if (s[0] == '[') {
        const char *rb = memchr(s, ']', len);
        if (!rb || rb + 1 >= s + len || rb[1] != ':')
            return config_bad(w, wl, "expected [ipv6]:port");
        host = s + 1;
        hlen = (size_t)(rb - host);
        colon = rb + 1;
    } else {
        colon = memrchr(s, ':', len);
        if (!colon)
            return config_bad(w, wl, "missing \":port\" (expected host:port, [ipv6]:port or unix:/path)");
        hlen = (size_t)(colon - s);
        if (memchr(s, ':', hlen))
            return config_bad(w, wl, "an IPv6 address needs brackets, as in [::1]:9876");
    }
    if (hlen == 0)
        return config_bad(w, wl, "missing host before \":port\"");
    if (hlen > CONFIG_HOST_MAX)
        return config_bad(w, wl, "host is %zu bytes, the maximum is %d", hlen, CONFIG_HOST_MAX);
    if (!parse_port(colon + 1, (size_t)(s + len - colon - 1), &out->port))
        return config_bad(w, wl, "port must be a number in 1..65535");
    memcpy(out->host, host, hlen);
    out->host[hlen] = '\0';
    out->kind = CONFIG_ADDR_TCP;
    if (s[0] == '[') {
        out->family = AF_INET6;
        if (inet_pton(AF_INET6, out->host, bin) != 1)
            return config_bad(w, wl, "\"%s\" is not an IPv6 address", out->host);
    } else if (inet_pton(AF_INET, out->host, bin) == 1) {
        out->family = AF_INET;
    } else if (strspn(out->host, "0123456789.") == hlen) {
        return config_bad(w, wl, "\"%s\" is not an IPv4 address", out->host);
    } else if (valid_hostname(out->host, hlen)) {
        out->family = AF_UNSPEC;
    } else {
        return config_bad(w, wl, "host is neither an IP address nor a valid host name");
    }
    return 0;
}

int config_address_parse(struct config_address *out, const char *s, size_t len, char *w, size_t wl)
{
    int rc;

    memset(out, 0, sizeof(*out));
    if (len == 0)
        rc = config_bad(w, wl, "empty address");
    else if (memchr(s, '\0', len))
        rc = config_bad(w, wl, "contains a NUL byte");
    else if (len >= 5 && memcmp(s, "unix:", 5) == 0)
        rc = parse_unix(out, s + 5, len - 5, w, wl);
    else if (s[0] == '/' || s[0] == '.')
        rc = parse_unix(out, s, len, w, wl);
    else
        rc = parse_tcp(out, s, len, w, wl);
    if (rc)
        memset(out, 0, sizeof(*out));
    return rc;
}

int config_address_format(const struct config_address *a, char *buf, size_t len)
{
    switch (a->kind) {
    case CONFIG_ADDR_TCP:
        return snprintf(buf, len, a->family == AF_INET6 ? "[%s]:%u" : "%s:%u", a->host,
                        (unsigned)a->port);
    case CONFIG_ADDR_UNIX:
        return snprintf(buf, len, "unix:%s", a->path);
    default:
        return snprintf(buf, len, "%s", "");
    }
}

bool config_address_equal(const struct config_address *a, const struct config_address *b)
{
    return a->kind == b->kind && a->port == b->port && strcmp(a->host, b->host) == 0 &&
           strcmp(a->path, b->path) == 0;
}
