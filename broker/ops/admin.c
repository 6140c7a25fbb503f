/*
 * admin.c - the admin socket: an operator's (or a script's) way into the
 * running broker.
 *
 * Protocol: NDJSON on a Unix socket of its own (admin_listen, mode 0600),
 * one request per line, {"id": ANY, "cmd": "stats"}, one answer per line,
 * in order: {"id": ..., "status": "success", "result": {...}} or
 * {"id": ..., "status": "error", "error": {"code": C, "message": M}} with C
 * bad_request (not JSON, no "cmd") or unknown_command. Commands: stats,
 * health, pool, cache, memory, config, metrics (Prometheus text in
 * result.text), drain (as SIGUSR1: stop accepting clients, serve the
 * connected ones), shutdown (as SIGTERM) and reload (reload.c: answers
 * once the new configuration is in effect, or with the reason it was
 * refused and the old one kept). SIGHUP reaches this thread through an
 * eventfd the listener writes, so every reload runs here, one at a time.
 *
 * Thread: one thread of its own, blocking in poll(2) on the listening
 * socket, its clients and an eventfd that admin_stop writes. Admin traffic
 * is rare and may be slow (jemalloc's epoch refresh, a config dump), so it
 * never runs on a worker, and a slow or stuck operator only ever holds this
 * thread: every client socket is non-blocking, and a client whose answers
 * pile up beyond ADMIN_OUT_MAX, or that sends a line over ADMIN_LINE_MAX, is
 * closed. At most ADMIN_CLIENTS at once; more are refused with one line.
 *
 * Figures come from stats.c (JSON) and metrics.c (Prometheus); both read
 * what the workers publish with relaxed atomic loads, and nothing here
 * writes anything a worker reads, except shutdown (a signal to ourselves,
 * handled by the listener like any SIGTERM).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin.h"
#include "log.h"
#include "metrics.h"
#include "peer.h"
#include "stats.h"

#define ADMIN_CLIENTS  16
#define ADMIN_LINE_MAX (64u * 1024u)
#define ADMIN_OUT_MAX  (16u * 1024u * 1024u)

struct admin_client {
    int fd;
    char *in;
    size_t in_len;
    char *out;
    size_t out_len, out_off, out_cap;
};

struct admin {
    struct broker *b;
    int listen_fd;
    int wake_fd; /* eventfd: admin_stop */
    int reload_fd; /* eventfd: SIGHUP, written by the listener */
    pthread_t thread;
    bool started;
    struct admin_client clients[ADMIN_CLIENTS];
};

static void client_drop(struct admin_client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->in);
    free(c->out);
    *c = (struct admin_client){.fd = -1};
}

static int out_append(struct admin_client *c, const char *s, size_t n)
{
    if (c->out_len - c->out_off + n > ADMIN_OUT_MAX)
        return -ENOBUFS;
    if (c->out_off && c->out_off == c->out_len)
        c->out_len = c->out_off = 0;
    if (c->out_len + n > c->out_cap) { /* doubling: appends stay linear */
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_len + n)
            cap *= 2;
        char *p = realloc(c->out, cap);
        if (!p)
            return -ENOMEM;
        c->out = p;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
    return 0;
}

static json_t *error_obj(const char *code, const char *msg)
{
    return json_pack("{s:s,s:{s:s,s:s}}", "status", "error", "error", "code", code, "message", msg);
}

/* A reload, logged either way. On failure msg says the old configuration
 * stays in effect and why. */
static int do_reload(struct broker *b, const char *by, char *msg, size_t msglen)
{
    char why[512];
    int rc = broker_reload(b, why, sizeof why);
    if (rc < 0) {
        snprintf(msg, msglen, "configuration not reloaded, the running one stays in effect: %s",
                 why);
        log_write(LOG_LEVEL_ERROR, "configuration not reloaded", LOG_CSTR("asked_by", by),
                  LOG_CSTR("reason", why));
    } else {
        snprintf(msg, msglen, "%s", why);
        log_write(LOG_LEVEL_INFO, "configuration reloaded", LOG_CSTR("asked_by", by),
                  LOG_CSTR("summary", why));
    }
    return rc;
}

/* The answer to one command: {"status":..., "result"|"error":...}. */
static json_t *run(struct admin *a, const char *cmd)
{
    struct broker *b = a->b;
    json_t *res = NULL;
    if (strcmp(cmd, "stats") == 0) {
        res = stats_json(b);
    } else if (strcmp(cmd, "health") == 0) {
        res = health_json(b);
    } else if (strcmp(cmd, "pool") == 0) {
        res = pool_json(b);
    } else if (strcmp(cmd, "cache") == 0) {
        res = cache_json(b);
    } else if (strcmp(cmd, "memory") == 0) {
        res = memory_json(b);
    } else if (strcmp(cmd, "config") == 0) {
        char *text = NULL;
        if (config_dump_json(bcfg(b), &text) == 0)
            res = json_loads(text, 0, NULL);
        free(text);
    } else if (strcmp(cmd, "metrics") == 0) {
        size_t len = 0;
        char *text = metrics_text(b, &len);
        if (text)
            res = json_pack("{s:s%}", "text", text, len);
        free(text);
    } else if (strcmp(cmd, "shutdown") == 0) {
        log_write(LOG_LEVEL_INFO, "shutdown asked on the admin socket");
        kill(getpid(), SIGTERM); /* the listener's signalfd takes it, as any SIGTERM */
        res = json_pack("{s:b}", "shutting_down", 1);
    } else if (strcmp(cmd, "drain") == 0) {
        log_write(LOG_LEVEL_INFO, "drain asked on the admin socket");
        kill(getpid(), SIGUSR1); /* the listener's signalfd takes it, as kill -USR1 */
        res = json_pack("{s:b}", "draining", 1);
    } else if (strcmp(cmd, "reload") == 0) {
        char msg[640];
        if (do_reload(b, "admin socket", msg, sizeof msg) < 0)
            return error_obj("reload_failed", msg);
        res = json_pack("{s:b,s:I,s:s}", "reloaded", 1, "generation",
                        (json_int_t)atomic_load(&b->cfg_gen), "message", msg);
    } else {
        return error_obj("unknown_command", "unknown command; try stats, health, pool, cache, "
                                            "memory, config, metrics, reload, drain or shutdown");
    }
    if (!res)
        return error_obj("internal", "out of memory building the answer");
    return json_pack("{s:s,s:o}", "status", "success", "result", res);
}

/* One request line: exactly one answer line. */
static void handle_line(struct admin *a, struct admin_client *c, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *req = json_loadb(line, len, 0, &jerr);
    json_t *id = req && json_is_object(req) ? json_object_get(req, "id") : NULL;
    json_t *cmd = req && json_is_object(req) ? json_object_get(req, "cmd") : NULL;
    json_t *ans;
    if (!req)
        ans = error_obj("bad_request", "the line is not JSON");
    else if (!json_is_string(cmd))
        ans = error_obj("bad_request", "a request is {\"id\": ..., \"cmd\": \"stats\"}");
    else
        ans = run(a, json_string_value(cmd));
    if (ans) {
        json_object_set_new(ans, "id", id ? json_incref(id) : json_null());
        char *text = json_dumps(ans, JSON_COMPACT | JSON_ENSURE_ASCII);
        if (!text || out_append(c, text, strlen(text)) < 0 || out_append(c, "\n", 1) < 0) {
            log_write(LOG_LEVEL_WARN, "admin client not reading its answers; closing it");
            close(c->fd);
            c->fd = -2; /* dropped after this round */
        }
        free(text);
        json_decref(ans);
    }
    json_decref(req);
}

static void on_readable(struct admin *a, struct admin_client *c)
{
    char buf[8192];
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        client_drop(c);
        return;
    }
    if (n < 0)
        return;
    char *p = realloc(c->in, c->in_len + (size_t)n);
    if (!p) {
        client_drop(c);
        return;
    }
    c->in = p;
    memcpy(c->in + c->in_len, buf, (size_t)n);
    c->in_len += (size_t)n;
    size_t pos = 0;
    char *nl;
    while (c->fd >= 0 && (nl = memchr(c->in + pos, '\n', c->in_len - pos))) {
        size_t len = (size_t)(nl - (c->in + pos));
        handle_line(a, c, c->in + pos, len);
        pos += len + 1;
    }
    if (c->fd < 0) {
        client_drop(c);
        return;
    }
    memmove(c->in, c->in + pos, c->in_len - pos);
    c->in_len -= pos;
    if (c->in_len > ADMIN_LINE_MAX) {
        static const char msg[] = "{\"id\":null,\"status\":\"error\",\"error\":{\"code\":"
                                  "\"too_large\",\"message\":\"admin line over 65536 bytes\"}}\n";
        (void)!send(c->fd, msg, sizeof msg - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        client_drop(c);
    }
}

static void on_writable(struct admin_client *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n =
            send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n <= 0) {
            client_drop(c);
            return;
        }
        c->out_off += (size_t)n;
    }
}

static void on_accept(struct admin *a)
{
    int fd = accept4(a->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0 || !peer_admit(a->b, fd, AF_UNSPEC, "admin_listen"))
        return;
    for (int i = 0; i < ADMIN_CLIENTS; i++)
        if (a->clients[i].fd == -1) {
            a->clients[i] = (struct admin_client){.fd = fd};
            return;
        }
    static const char msg[] = "{\"id\":null,\"status\":\"error\",\"error\":{\"code\":"
                              "\"overloaded\",\"message\":\"too many admin clients\"}}\n";
    (void)!send(fd, msg, sizeof msg - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    close(fd);
}

static void *admin_main(void *arg)
{
    struct admin *a = arg;
    pthread_setname_np(pthread_self(), "brokerd-admin");
    for (;;) {
        struct pollfd p[ADMIN_CLIENTS + 3];
        int map[ADMIN_CLIENTS + 3];
        nfds_t n = 0;
        p[n] = (struct pollfd){.fd = a->wake_fd, .events = POLLIN};
        map[n++] = -1;
        p[n] = (struct pollfd){.fd = a->listen_fd, .events = POLLIN};
        map[n++] = -2;
        p[n] = (struct pollfd){.fd = a->reload_fd, .events = POLLIN};
        map[n++] = -3;
        for (int i = 0; i < ADMIN_CLIENTS; i++) {
            struct admin_client *c = &a->clients[i];
            if (c->fd < 0)
                continue;
            short ev = POLLIN;
            if (c->out_off < c->out_len)
                ev |= POLLOUT;
            p[n] = (struct pollfd){.fd = c->fd, .events = ev};
            map[n++] = i;
        }
        if (poll(p, n, -1) < 0) {
            if (errno == EINTR)
                continue;
            log_write(LOG_LEVEL_ERROR, "admin socket poll failed; admin socket off",
                      LOG_ERRNO(errno));
            break;
        }
        if (p[0].revents)
            break; /* admin_stop */
        if (p[1].revents & POLLIN)
            on_accept(a);
        uint64_t hups;
        if ((p[2].revents & POLLIN) && read(a->reload_fd, &hups, sizeof hups) == sizeof hups) {
            char msg[640];
            do_reload(a->b, "SIGHUP", msg, sizeof msg); /* several SIGHUPs: one reload */
        }
        for (nfds_t k = 3; k < n; k++) {
            struct admin_client *c = &a->clients[map[k]];
            if (c->fd < 0)
                continue;
            if (p[k].revents & (POLLIN | POLLHUP | POLLERR))
                on_readable(a, c);
            if (c->fd >= 0 && (p[k].revents & POLLOUT || c->out_off < c->out_len))
                on_writable(c);
        }
    }
    return NULL;
}

int admin_start(struct broker *b, int listen_fd, struct admin **out)
{
    struct admin *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    a->b = b;
    a->listen_fd = listen_fd;
    for (int i = 0; i < ADMIN_CLIENTS; i++)
        a->clients[i].fd = -1;
    a->wake_fd = eventfd(0, EFD_CLOEXEC);
    a->reload_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (a->wake_fd < 0 || a->reload_fd < 0) {
        int rc = -errno;
        if (a->wake_fd >= 0)
            close(a->wake_fd);
        if (a->reload_fd >= 0)
            close(a->reload_fd);
        free(a);
        return rc;
    }
    int rc = pthread_create(&a->thread, NULL, admin_main, a);
    if (rc) {
        close(a->wake_fd);
        close(a->reload_fd);
        free(a);
        return -rc;
    }
    a->started = true;
    *out = a;
    return 0;
}

void admin_stop(struct admin *a)
{
    if (!a)
        return;
    if (a->started) {
        uint64_t one = 1;
        (void)!write(a->wake_fd, &one, sizeof one);
        pthread_join(a->thread, NULL);
    }
    for (int i = 0; i < ADMIN_CLIENTS; i++)
        if (a->clients[i].fd >= 0)
            client_drop(&a->clients[i]);
    close(a->wake_fd);
    close(a->reload_fd);
    free(a);
}

void admin_request_reload(struct admin *a)
{
    if (!a) {
        log_write(LOG_LEVEL_WARN, "SIGHUP ignored: the admin thread, which runs reloads, is not "
                                  "running");
        return;
    }
    uint64_t one = 1;
    (void)!write(a->reload_fd, &one, sizeof one);
}
