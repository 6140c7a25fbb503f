/*
 * metrics_http.c - the Prometheus scrape endpoint: a minimal HTTP/1.1
 * server on metrics_listen that answers GET /metrics with metrics_text(),
 * the same text as the admin `metrics` command.
 *
 * Protocol subset: one request per connection, answered with
 * "Connection: close" and a Content-Length, then closed. GET and HEAD of
 * /metrics (a query string is ignored) get 200, text/plain; version=0.0.4;
 * another path 404, another method 405 (with Allow), a request line or
 * header that does not parse 400, a head over METRICS_HTTP_REQ_MAX bytes
 * 431, a client that has not sent its whole head within
 * METRICS_HTTP_TIMEOUT_MS 408. A request body is never read: nothing here
 * takes one. No TLS, no authentication: bind it to loopback or a private
 * network, or put it behind something that has them.
 *
 * Thread: one of its own, in poll(2) on the listening socket, its
 * connections and an eventfd for metrics_http_stop, with the nearest
 * connection deadline as the timeout. Not the admin thread: a scrape costs
 * a jemalloc epoch and tens of kilobytes of formatting, and the two
 * endpoints have different clients (a scraper every few seconds, an
 * operator now and then), so neither waits for the other; and admin.c's
 * loop stays as it is. Never a worker: nothing here touches the request
 * path. Every socket is non-blocking and every connection has a deadline,
 * so a slow or silent client holds one of METRICS_HTTP_CLIENTS slots for at
 * most two timeouts, and the others are served meanwhile.
 *
 * Known limits: no keep-alive (a scraper reconnects every scrape, which
 * costs nothing next to the scrape); no chunked or pipelined requests.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "metrics_http.h"

struct mh_conn {
    int fd; /* -1: free */
    bool writing;
    uint64_t deadline_ms; /* CLOCK_MONOTONIC */
    size_t in_len;
    char in[METRICS_HTTP_REQ_MAX];
    char *out;
    size_t out_len, out_off;
};

struct metrics_http {
    struct broker *b;
    int listen_fd;
    int wake_fd; /* eventfd: metrics_http_stop */
    pthread_t thread;
    struct mh_conn conns[METRICS_HTTP_CLIENTS];
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* --- parsing (pure) ----------------------------------------------------- */

/* RFC 9110 tchar: what a method or a header name is made of. */
static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* The next line of [p, end): its length without CR LF (or LF); *next after
 * it. false when no LF is left. */
static bool next_line(const char *p, const char *end, size_t *len, const char **next)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl)
        return false;
    *len = (size_t)(nl - p) - (nl > p && nl[-1] == '\r');
    *next = nl + 1;
    return true;
}

int metrics_http_parse(const char *req, size_t len, bool *head)
{
    const char *p = req, *end = req + len, *next;
    size_t n;
    *head = false;
    if (!next_line(p, end, &n, &next))
        return 400;
    /* METHOD SP target SP HTTP/1.x, nothing else */
    const char *sp1 = memchr(p, ' ', n);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', n - (size_t)(sp1 + 1 - p)) : NULL;
    if (!sp1 || !sp2 || sp1 == p || sp2 == sp1 + 1 || sp1 - p > 16)
        return 400;
    for (const char *c = p; c < sp1; c++)
        if (!is_tchar((unsigned char)*c))
            return 400;
    const char *target = sp1 + 1;
    size_t tlen = (size_t)(sp2 - target);
    if (target[0] != '/')
        return 400;
    for (size_t i = 0; i < tlen; i++)
        if ((unsigned char)target[i] <= 0x20 || (unsigned char)target[i] >= 0x7f)
            return 400;
    size_t vlen = n - (size_t)(sp2 + 1 - p);
    if (vlen != 8 || (memcmp(sp2 + 1, "HTTP/1.1", 8) && memcmp(sp2 + 1, "HTTP/1.0", 8)))
        return 400;
    /* Headers: name ":" value, until the empty line. */
    for (p = next;; p = next) {
        if (!next_line(p, end, &n, &next))
            return 400; /* no empty line: the caller passes the whole head */
        if (n == 0)
            break;
        const char *colon = memchr(p, ':', n);
        if (!colon || colon == p)
            return 400; /* also obsolete line folding (a line starting with a blank) */
        for (const char *c = p; c < colon; c++)
            if (!is_tchar((unsigned char)*c))
                return 400;
        for (const char *c = colon + 1; c < p + n; c++)
            if (((unsigned char)*c < 0x20 && *c != '\t') || *c == 0x7f)
                return 400;
    }
    size_t mlen = (size_t)(sp1 - req);
    bool get = mlen == 3 && memcmp(req, "GET", 3) == 0;
    *head = mlen == 4 && memcmp(req, "HEAD", 4) == 0;
    if (!get && !*head)
        return 405;
    const char *q = memchr(target, '?', tlen);
    size_t plen = q ? (size_t)(q - target) : tlen;
    if (plen != 8 || memcmp(target, "/metrics", 8) != 0)
        return 404;
    return 200;
}

/* --- connections -------------------------------------------------------- */

static void conn_close(struct mh_conn *c)
{
    if (c->fd >= 0) {
        /* Read what is left (a body nobody reads), so close sends FIN, not
         * a reset that could destroy the answer in flight. Bounded. */
        char sink[1024];
        for (int i = 0; i < 8 && recv(c->fd, sink, sizeof sink, MSG_DONTWAIT) > 0; i++)
            ;
        close(c->fd);
    }
    free(c->out);
    c->fd = -1;
    c->out = NULL;
    c->writing = false;
    c->in_len = c->out_len = c->out_off = 0;
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return "Internal Server Error";
    }
}

/* The whole answer in one buffer: head, then body unless HEAD. */
static char *build_answer(struct broker *b, int status, bool head, size_t *len)
{
    size_t blen = 0;
    char *body = NULL;
    const char *type = "text/plain; charset=utf-8";
    if (status == 200) {
        /* backend names come from the configuration in effect: read it
         * under the lock a reload frees replaced ones behind (reload.c) */
        pthread_rwlock_rdlock(&b->cfg_lock);
        body = metrics_text(b, &blen);
        pthread_rwlock_unlock(&b->cfg_lock);
        if (!body)
            status = 500;
        else
            type = "text/plain; version=0.0.4; charset=utf-8";
    }
    if (!body) {
        char msg[64];
        blen = (size_t)snprintf(msg, sizeof msg, "%d %s\n", status, reason(status));
        body = strdup(msg);
        if (!body)
            return NULL;
    }
    char hdr[320];
    int hn = snprintf(hdr, sizeof hdr,
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                      "Connection: close\r\n\r\n",
                      status, reason(status), type, blen,
                      status == 405 ? "Allow: GET, HEAD\r\n" : "");
    size_t total = (size_t)hn + (head ? 0 : blen);
    char *out = malloc(total);
    if (out) {
        memcpy(out, hdr, (size_t)hn);
        if (!head)
            memcpy(out + hn, body, blen);
        *len = total;
    }
    free(body);
    return out;
}

static void conn_answer(struct metrics_http *m, struct mh_conn *c, int status, bool head)
{
    c->out = build_answer(m->b, status, head, &c->out_len);
    if (!c->out) {
        conn_close(c);
        return;
    }
    c->out_off = 0;
    c->writing = true;
    c->deadline_ms = now_ms() + METRICS_HTTP_TIMEOUT_MS; /* now to read it */
}

/* The end of the head (after its empty line) in [0, len), or 0. */
static size_t head_end(const char *s, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++)
        if (s[i] == '\n' && (s[i + 1] == '\n' || (s[i + 1] == '\r' && i + 2 < len &&
                                                   s[i + 2] == '\n')))
            return i + (s[i + 1] == '\n' ? 2 : 3);
    return 0;
}

static void on_readable(struct metrics_http *m, struct mh_conn *c)
{
    ssize_t n = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) { /* gone, or shut down its side before a whole request */
        if (n == 0 && c->in_len > 0)
            conn_answer(m, c, 400, false);
        else
            conn_close(c);
        return;
    }
    size_t scan_from = c->in_len > 2 ? c->in_len - 2 : 0;
    c->in_len += (size_t)n;
    size_t end = head_end(c->in + scan_from, c->in_len - scan_from);
    if (end) {
        bool head;
        int status = metrics_http_parse(c->in, scan_from + end, &head);
        conn_answer(m, c, status, head);
    } else if (c->in_len == sizeof c->in) {
        conn_answer(m, c, 431, false);
    }
}

static void on_writable(struct mh_conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n <= 0)
            break;
        c->out_off += (size_t)n;
    }
    shutdown(c->fd, SHUT_WR);
    conn_close(c);
}

static void on_accept(struct metrics_http *m)
{
    for (int k = 0; k < 64; k++) { /* the listening socket is non-blocking */
        int fd = accept4(m->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct mh_conn *c = NULL;
        for (int i = 0; i < METRICS_HTTP_CLIENTS && !c; i++)
            if (m->conns[i].fd < 0)
                c = &m->conns[i];
        if (!c) {
            static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                       "Connection: close\r\n\r\n";
            (void)!send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            close(fd);
            continue;
        }
        c->fd = fd;
        c->in_len = 0;
        c->writing = false;
        c->deadline_ms = now_ms() + METRICS_HTTP_TIMEOUT_MS;
    }
}

/* Deadlines: a reader that has not sent its head gets 408, a writer that
 * does not read its answer is closed. Returns poll's timeout. */
static int expire(struct metrics_http *m)
{
    uint64_t now = now_ms(), next = UINT64_MAX;
    for (int i = 0; i < METRICS_HTTP_CLIENTS; i++) {
        struct mh_conn *c = &m->conns[i];
        if (c->fd < 0)
            continue;
        if (c->deadline_ms <= now) {
            if (c->writing) {
                conn_close(c);
                continue;
            }
            conn_answer(m, c, 408, false);
            if (c->fd >= 0)
                on_writable(c); /* one try; then the write deadline */
            if (c->fd < 0)
                continue;
        }
        if (c->deadline_ms < next)
            next = c->deadline_ms;
    }
    return next == UINT64_MAX ? -1 : (int)(next - now) + 1;
}

static void *mh_main(void *arg)
{
    struct metrics_http *m = arg;
    pthread_setname_np(pthread_self(), "brokerd-metrics");
    for (;;) {
        struct pollfd p[METRICS_HTTP_CLIENTS + 2];
        int map[METRICS_HTTP_CLIENTS + 2];
        nfds_t n = 0;
        int timeout = expire(m);
        p[n] = (struct pollfd){.fd = m->wake_fd, .events = POLLIN};
        map[n++] = -1;
        p[n] = (struct pollfd){.fd = m->listen_fd, .events = POLLIN};
        map[n++] = -2;
        for (int i = 0; i < METRICS_HTTP_CLIENTS; i++)
            if (m->conns[i].fd >= 0) {
                p[n] = (struct pollfd){.fd = m->conns[i].fd,
                                       .events = m->conns[i].writing ? POLLOUT : POLLIN};
                map[n++] = i;
            }
        if (poll(p, n, timeout) < 0) {
            if (errno == EINTR)
                continue;
            log_write(LOG_LEVEL_ERROR, "metrics endpoint poll failed; metrics endpoint off",
                      LOG_ERRNO(errno));
            break;
        }
        if (p[0].revents)
            break; /* metrics_http_stop */
        for (nfds_t k = 2; k < n; k++) {
            struct mh_conn *c = &m->conns[map[k]];
            if (c->fd < 0 || !p[k].revents)
                continue;
            if (c->writing)
                on_writable(c);
            else
                on_readable(m, c);
            if (c->fd >= 0 && c->writing)
                on_writable(c); /* most answers fit the socket buffer at once */
        }
        if (p[1].revents & POLLIN)
            on_accept(m);
    }
    return NULL;
}

int metrics_http_listen(const struct config_address *a, struct sdlisten *sl, int *fd_out,
                        char *err, size_t errlen)
{
    char port[8], where[CONFIG_HOST_MAX + 16];
    snprintf(port, sizeof port, "%u", a->port);
    config_address_format(a, where, sizeof where);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = a->family};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(a->host, port, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "metrics_listen: cannot resolve \"%s\": %s", a->host,
                 gai_strerror(rc));
        return -EINVAL;
    }
    int fd = sdlisten_take(sl, "metrics", "metrics_listen", res->ai_addr, res->ai_addrlen, err,
                           errlen);
    if (fd >= 0) {
        log_write(LOG_LEVEL_INFO, "using the socket systemd passed",
                  LOG_CSTR("key", "metrics_listen"), LOG_INT("fd", fd));
        freeaddrinfo(res);
        if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
            int e = errno;
            snprintf(err, errlen, "metrics_listen: fd %d: %s", fd, strerror(e));
            close(fd);
            return -e;
        }
        *fd_out = fd;
        return 0;
    }
    if (fd != -ENOENT) {
        freeaddrinfo(res);
        return fd;
    }
    int one = 1, e = 0;
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 64) < 0)
        e = errno;
    freeaddrinfo(res);
    if (e) {
        snprintf(err, errlen, "metrics_listen: cannot listen on %s: %s", where, strerror(e));
        if (fd >= 0)
            close(fd);
        return -e;
    }
    log_write(LOG_LEVEL_INFO, "metrics endpoint (HTTP, no authentication) listening",
              LOG_CSTR("metrics_listen", where));
    *fd_out = fd;
    return 0;
}

int metrics_http_start(struct broker *b, int listen_fd, struct metrics_http **out)
{
    struct metrics_http *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->b = b;
    m->listen_fd = listen_fd;
    for (int i = 0; i < METRICS_HTTP_CLIENTS; i++)
        m->conns[i].fd = -1;
    m->wake_fd = eventfd(0, EFD_CLOEXEC);
    if (m->wake_fd < 0) {
        int rc = -errno;
        free(m);
        return rc;
    }
    int rc = pthread_create(&m->thread, NULL, mh_main, m);
    if (rc) {
        close(m->wake_fd);
        free(m);
        return -rc;
    }
    *out = m;
    return 0;
}

void metrics_http_stop(struct metrics_http *m)
{
    if (!m)
        return;
    uint64_t one = 1;
    (void)!write(m->wake_fd, &one, sizeof one);
    pthread_join(m->thread, NULL);
    for (int i = 0; i < METRICS_HTTP_CLIENTS; i++)
        if (m->conns[i].fd >= 0)
            conn_close(&m->conns[i]);
    close(m->wake_fd);
    free(m);
}
