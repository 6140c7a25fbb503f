/*
 * mockd.c - a fast stand-in for the Blender add-on's socket server, with fault
 * injection, so the broker can be tested and benchmarked without Blender.
 *
 * Protocol (blender-mcp addon.py): the client writes one JSON object
 * {"type": T, "params": {...}} with no delimiter and reads one JSON object back,
 * {"status": "success", "result": ...} or {"status": "error", "message": ...};
 * one request at a time per connection, answered in order. With
 * --framing ndjson requests and answers both end with '\n' instead.
 *
 * Design
 * - N worker threads, each with its own epoll, timerfd and eventfd. Worker 0
 *   owns the listener and hands accepted connections out round-robin through a
 *   per-worker inbox (mutex + eventfd wake-up). Accepts are rare next to
 *   requests; round-robin keeps a handful of benchmark connections evenly
 *   spread, where SO_REUSEPORT hashing would not, and a single listener makes
 *   "address in use" a plain bind error. After the hand-off a connection is
 *   touched only by its worker.
 * - Framing by JSON completeness: one scanner pass per byte, with depth,
 *   in-string and escape state kept in the connection across reads (never a
 *   re-parse of the buffer per chunk). A framed request is then walked once at
 *   its top level to find "type" and "params"; values are skipped, not parsed,
 *   and params are looked into only by the answers that need a field.
 * - Every wait (--delay-us, slow, drip) is a deadline in a per-worker binary
 *   heap behind one timerfd: no thread ever sleeps, so one slow connection
 *   never stalls another.
 * - Request counters are per-worker single-writer atomics (no shared cache line
 *   on the request path), summed on demand by mock_stats and at exit.
 *   Connection counts are process-wide atomics: accepts are rare.
 *
 * Invariants
 * - At most one request per connection is being handled. Bytes of another
 *   request that are present while one is being handled (from the moment it is
 *   framed until its answer is completely written) count one overlap for it:
 *   the real add-on would fail on them with "Extra data" and hang. mockd
 *   itself stays lenient and answers them afterwards, in order, so a load run
 *   still ends; behind a correct broker the counter stays 0.
 * - A closed connection is only marked dead and freed after the current epoll
 *   batch, so events already returned for it are skipped safely.
 *
 * Limits: a request over 64 MiB is refused; the top-level value must start
 * with '{' or '['; --delay-us runs concurrently on every connection, whereas
 * Blender runs all commands one at a time on its main thread; accept() failing
 * with EMFILE is logged and retried on the next wake-up, not throttled.
 *
 * Files: this one holds the process (options, listener, workers, signals);
 * mockd_conn.c a worker's connections (deadline heap, framing, reads and
 * writes); mockd_answer.c the counters, the answers and the fault modes.
 * mockd.h is what they share.
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include "mockd.h"
#include "tool.h"

/* ---------------------------------------------------------------- utilities */

__attribute__((format(printf, 2, 3))) void mock_log(struct mock_server *srv, const char *fmt, ...)
{
    /* A misbehaving client must not be able to flood stderr. */
    if (srv->opts.quiet)
        return;
    int left = atomic_fetch_sub_explicit(&srv->log_budget, 1, memory_order_relaxed);
    if (left <= 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    flockfile(stderr); /* one line even when several workers log at once */
    fputs("mockd: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(left == 1 ? " (further messages suppressed)\n" : "\n", stderr);
    funlockfile(stderr);
    va_end(ap);
}

static bool mock_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    if (!s || *s < '0' || *s > '9')
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return false;
    *out = v;
    return true;
}

/* ---------------------------------------------------------------- workers */

static void mock_worker_adopt(struct mock_worker *w, struct mock_conn *c)
{
    c->w = w;
    c->prev = NULL;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &c->h};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->h.fd, &ev) < 0) {
        mock_log(w->srv, "epoll_ctl: %s", strerror(errno));
        mock_conn_close(c);
    }
}

static void mock_inbox_push(struct mock_worker *dst, struct mock_conn *c)
{
    uint64_t one = 1;
    pthread_mutex_lock(&dst->inbox_lock);
    c->next = dst->inbox;
    dst->inbox = c;
    pthread_mutex_unlock(&dst->inbox_lock);
    /* The eventfd write orders the hand-off: the worker reads the inbox only
     * under the same lock after being woken. */
    if (write(dst->wake.fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        mock_log(dst->srv, "eventfd write: %s", strerror(errno));
}

static void mock_inbox_drain(struct mock_worker *w)
{
    uint64_t v;
    if (read(w->wake.fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        mock_log(w->srv, "eventfd read: %s", strerror(errno));
    pthread_mutex_lock(&w->inbox_lock);
    struct mock_conn *list = w->inbox;
    w->inbox = NULL;
    pthread_mutex_unlock(&w->inbox_lock);
    while (list) {
        struct mock_conn *c = list;
        list = c->next;
        mock_worker_adopt(w, c);
    }
}

static void mock_accept(struct mock_worker *w)
{
    struct mock_server *srv = w->srv;
    for (int k = 0; k < MOCK_ACCEPT_BATCH; k++) {
        int fd = accept4(srv->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                mock_log(srv, "accept: %s", strerror(errno));
            return;
        }
        if (srv->is_tcp) {
            /* Small answers and single dripped bytes must leave at once. */
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        struct mock_conn *c = calloc(1, sizeof(*c));
        if (!c) {
            mock_log(srv, "out of memory for a connection");
            close(fd);
            continue;
        }
        c->h.kind = MOCK_KIND_CONN;
        c->h.fd = fd;
        c->heap_idx = SIZE_MAX;
        c->serial = atomic_fetch_add_explicit(&srv->conn_serial, 1, memory_order_relaxed) + 1;
        mock_conn_opened(srv);
        struct mock_worker *dst = &srv->workers[w->next_worker++ % srv->opts.threads];
        if (dst == w) {
            mock_worker_adopt(w, c);
        } else {
            c->w = dst;
            mock_inbox_push(dst, c);
        }
    }
}

static void mock_worker_dispatch(struct mock_worker *w, struct epoll_event *ev)
{
    struct mock_handle *h = ev->data.ptr;
    switch (h->kind) {
    case MOCK_KIND_LISTEN:
        mock_accept(w);
        break;
    case MOCK_KIND_WAKE:
        mock_inbox_drain(w);
        break;
    case MOCK_KIND_TIMER:
        mock_timers_run(w);
        break;
    case MOCK_KIND_CONN:
        mock_conn_event((struct mock_conn *)h, ev->events);
        break;
    }
}

static void *mock_worker_main(void *arg)
{
    struct mock_worker *w = arg;
    struct mock_server *srv = w->srv;
    struct epoll_event evs[MOCK_EVENTS];

    /* Deadlines of a few microseconds (--delay-us) should not get the default
     * 50 us of timer slack. */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
    while (!atomic_load_explicit(&srv->stop, memory_order_acquire)) {
        int n = epoll_wait(w->epfd, evs, MOCK_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "mockd: epoll_wait: %s\n", strerror(errno));
            atomic_store_explicit(&srv->failed, true, memory_order_relaxed);
            kill(getpid(), SIGTERM);
            break;
        }
        for (int i = 0; i < n; i++)
            mock_worker_dispatch(w, &evs[i]);
        mock_graveyard_free(w);
    }
    return NULL;
}

/* Close and free everything the worker owns; its thread has been joined. */
static void mock_worker_destroy(struct mock_worker *w)
{
    while (w->conns)
        mock_conn_close(w->conns);
    mock_graveyard_free(w);
    while (w->inbox) {
        struct mock_conn *c = w->inbox;
        w->inbox = c->next;
        close(c->h.fd);
        atomic_fetch_sub_explicit(&w->srv->conns_open, 1, memory_order_relaxed);
        mock_conn_free(c);
    }
    free(w->heap);
    if (w->wake.fd >= 0)
        close(w->wake.fd);
    if (w->timer.fd >= 0)
        close(w->timer.fd);
    if (w->epfd >= 0)
        close(w->epfd);
    pthread_mutex_destroy(&w->inbox_lock);
}

static int mock_epoll_add(int epfd, struct mock_handle *h)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = h};
    return epoll_ctl(epfd, EPOLL_CTL_ADD, h->fd, &ev) < 0 ? -errno : 0;
}

/* Enough state for mock_worker_destroy, whatever mock_worker_init did after. */
static void mock_worker_preinit(struct mock_worker *w, struct mock_server *srv, unsigned id)
{
    w->srv = srv;
    w->id = id;
    w->epfd = -1;
    w->wake = (struct mock_handle){MOCK_KIND_WAKE, -1};
    w->timer = (struct mock_handle){MOCK_KIND_TIMER, -1};
    w->listen = (struct mock_handle){MOCK_KIND_LISTEN, srv->lfd};
    pthread_mutex_init(&w->inbox_lock, NULL);
}

static int mock_worker_init(struct mock_worker *w, unsigned id)
{
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (w->epfd < 0)
        return -errno;
    w->wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->wake.fd < 0)
        return -errno;
    w->timer.fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (w->timer.fd < 0)
        return -errno;
    int rc = mock_epoll_add(w->epfd, &w->wake);
    if (rc == 0)
        rc = mock_epoll_add(w->epfd, &w->timer);
    if (rc == 0 && id == 0)
        rc = mock_epoll_add(w->epfd, &w->listen);
    return rc;
}

/* ---------------------------------------------------------------- listener */

static int mock_listen_unix(struct mock_server *srv, const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat st;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "socket path longer than %zu bytes", sizeof(sa.sun_path) - 1);
        return -ENAMETOOLONG;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto err_errno;
    if (lstat(path, &st) == 0) {
        /* Replace a stale socket file only when nobody answers on it. */
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "%s exists and is not a socket", path);
            close(fd);
            return -EEXIST;
        }
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        if (probe >= 0)
            close(probe);
        if (live) {
            snprintf(err, errlen, "address in use: a live server answers on %s", path);
            close(fd);
            return -EADDRINUSE;
        }
        unlink(path);
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, SOMAXCONN) < 0)
        goto err_errno;
    if (stat(path, &st) == 0) {
        srv->unix_dev = st.st_dev;
        srv->unix_ino = st.st_ino;
    }
    memcpy(srv->unix_path, path, strlen(path) + 1);
    srv->unix_bound = true;
    srv->lfd = fd;
    snprintf(srv->addr_text, sizeof(srv->addr_text), "unix:%s", path);
    return 0;
err_errno:;
    int e = errno;
    snprintf(err, errlen, "%s", strerror(e));
    if (fd >= 0)
        close(fd);
    return -e;
}

static void mock_addr_text(struct mock_server *srv, int fd)
{
    struct sockaddr_storage ss = {0};
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN + 1], port[16];
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0 ||
        getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(srv->addr_text, sizeof(srv->addr_text), "%s", srv->opts.listen);
        return;
    }
    snprintf(srv->addr_text, sizeof(srv->addr_text), ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s",
             host, port);
}

static int mock_listen_tcp(struct mock_server *srv, const char *hostport, char *err, size_t errlen)
{
    struct addrinfo *res;
    if (!strchr(hostport, ':')) {
        snprintf(err, errlen, "expected HOST:PORT or unix:/path");
        return -EINVAL;
    }
    if (tool_resolve(hostport, true, &res, err, errlen) < 0)
        return -EINVAL;
    int e = EADDRNOTAVAIL;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        if (fd < 0) {
            e = errno;
            continue;
        }
        /* SO_REUSEADDR lets a restarted mock bind over TIME_WAIT; without
         * SO_REUSEPORT a second live listener still gets EADDRINUSE. */
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0) {
            freeaddrinfo(res);
            srv->lfd = fd;
            srv->is_tcp = true;
            mock_addr_text(srv, fd);
            return 0;
        }
        e = errno;
        close(fd);
    }
    freeaddrinfo(res);
    snprintf(err, errlen, "%s", e == EADDRINUSE ? "address already in use" : strerror(e));
    return -e;
}

static int mock_listen(struct mock_server *srv, char *err, size_t errlen)
{
    const char *a = srv->opts.listen;
    if (strncmp(a, "unix:", 5) == 0)
        return mock_listen_unix(srv, a + 5, err, errlen);
    if (a[0] == '/' || a[0] == '.')
        return mock_listen_unix(srv, a, err, errlen);
    return mock_listen_tcp(srv, a, err, errlen);
}

/* Remove the socket file only if it is still the one we bound. */
static void mock_unlink(struct mock_server *srv)
{
    struct stat st;
    if (!srv->unix_bound)
        return;
    if (lstat(srv->unix_path, &st) == 0 && st.st_dev == srv->unix_dev && st.st_ino == srv->unix_ino)
        unlink(srv->unix_path);
}

/* ---------------------------------------------------------------- main */

static void mock_usage(FILE *f)
{
    fputs("usage: mockd --listen HOST:PORT | --listen unix:/path [options]\n"
          "\n"
          "A Blender add-on protocol backend (one JSON object per request, no\n"
          "delimiter) with fault injection, for testing and benchmarking the broker.\n"
          "\n"
          "  --listen ADDR       HOST:PORT (port 0 picks a free one) or unix:/path\n"
          "  --framing MODE      json (default: framed by JSON completeness) or ndjson\n"
          "  --threads N         worker threads, each with its own epoll (default 1)\n"
          "  --fault MODE        apply a fault to every request except mock_stats:\n"
          "                      hang close partial garbage drip slow huge error array\n"
          "                      empty extra nonascii (default none)\n"
          "  --delay-us N        wait N microseconds before every answer (timer based)\n"
          "  --work-us N         spend N microseconds of CPU on every request, on the\n"
          "                      serving thread (as Blender's main thread does)\n"
          "  --stats-fd FD       where the exit stats line goes (default 1, stdout)\n"
          "  --quiet             no diagnostics on stderr except the ready line and errors\n"
          "  --help              this text\n"
          "\n"
          "Commands: get_scene_info, ping, echo (result: params, conn, seq),\n"
          "get_object_info (params.name: Cube, Camera, Light), mock_stats (counters;\n"
          "params.type: T adds \"calls\", the requests of type T so far),\n"
          "fault_<MODE> (params: interval_ms for drip, ms for slow, bytes for huge,\n"
          "message for error); any other type answers {\"type\":T,\"executed\":true}.\n"
          "Ready: one line on stderr, \"mockd: listening on ADDR (...)\".\n"
          "SIGTERM/SIGINT: one JSON stats line, socket file removed, exit 0.\n",
          f);
}

/* Returns 0, or 2 for a usage error (message printed). */
static int mock_parse_args(int argc, char **argv, struct mock_opts *o)
{
    *o = (struct mock_opts){.framing = MOCK_FRAMING_JSON, .threads = 1, .stats_fd = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t u;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            mock_usage(stdout);
            exit(0);
        } else if (strcmp(a, "--quiet") == 0) {
            o->quiet = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "mockd: unknown option or missing value: %s (see --help)\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--listen") == 0) {
            o->listen = v;
        } else if (strcmp(a, "--framing") == 0 && strcmp(v, "json") == 0) {
            o->framing = MOCK_FRAMING_JSON;
        } else if (strcmp(a, "--framing") == 0 && strcmp(v, "ndjson") == 0) {
            o->framing = MOCK_FRAMING_NDJSON;
        } else if (strcmp(a, "--threads") == 0 && mock_parse_u64(v, 256, &u) && u > 0) {
            o->threads = (unsigned)u;
        } else if (strcmp(a, "--delay-us") == 0 && mock_parse_u64(v, 3600000000ULL, &u)) {
            o->delay_ns = u * 1000u;
        } else if (strcmp(a, "--work-us") == 0 && mock_parse_u64(v, 10000000ULL, &u)) {
            o->work_ns = u * 1000u;
        } else if (strcmp(a, "--stats-fd") == 0 && mock_parse_u64(v, INT32_MAX, &u)) {
            o->stats_fd = (int)u;
        } else if (strcmp(a, "--fault") == 0) {
            int f = MOCK_FAULT_COUNT;
            for (int k = 0; k < MOCK_FAULT_COUNT; k++)
                if (strcmp(v, mock_fault_names[k]) == 0)
                    f = k;
            if (f == MOCK_FAULT_COUNT) {
                fprintf(stderr, "mockd: unknown fault mode '%s' (see --help)\n", v);
                return 2;
            }
            o->fault = (enum mock_fault)f;
        } else {
            fprintf(stderr, "mockd: bad option or value: %s %s (see --help)\n", a, v);
            return 2;
        }
    }
    if (!o->listen) {
        fprintf(stderr, "mockd: --listen is required (see --help)\n");
        return 2;
    }
    return 0;
}

static int mock_start_workers(struct mock_server *srv)
{
    size_t bytes = srv->opts.threads * sizeof(struct mock_worker);
    /* aligned_alloc: the counters sit on their own cache line (alignas(64)). */
    srv->workers = aligned_alloc(alignof(struct mock_worker), bytes);
    if (!srv->workers)
        return -ENOMEM;
    memset(srv->workers, 0, bytes);
    for (unsigned i = 0; i < srv->opts.threads; i++)
        mock_worker_preinit(&srv->workers[i], srv, i);
    for (unsigned i = 0; i < srv->opts.threads; i++) {
        int rc = mock_worker_init(&srv->workers[i], i);
        if (rc < 0)
            return rc;
    }
    for (unsigned i = 0; i < srv->opts.threads; i++) {
        struct mock_worker *w = &srv->workers[i];
        int rc = pthread_create(&w->thread, NULL, mock_worker_main, w);
        if (rc != 0)
            return -rc;
        w->started = true;
    }
    return 0;
}

static void mock_stop_workers(struct mock_server *srv)
{
    uint64_t one = 1;
    if (!srv->workers)
        return;
    atomic_store_explicit(&srv->stop, true, memory_order_release);
    for (unsigned i = 0; i < srv->opts.threads; i++) {
        struct mock_worker *w = &srv->workers[i];
        if (w->started && write(w->wake.fd, &one, sizeof(one)) < 0)
            fprintf(stderr, "mockd: cannot wake worker %u: %s\n", i, strerror(errno));
    }
    for (unsigned i = 0; i < srv->opts.threads; i++)
        if (srv->workers[i].started)
            pthread_join(srv->workers[i].thread, NULL);
}

static void mock_print_stats(struct mock_server *srv)
{
    char buf[512];
    int n = mock_totals_json(srv, buf, sizeof(buf));
    if (n > 0 && (size_t)n < sizeof(buf))
        dprintf(srv->opts.stats_fd, "{\"mockd\":\"stats\",%s}\n", buf);
}

int main(int argc, char **argv)
{
    struct mock_server srv = {.lfd = -1};
    char err[256] = "";
    sigset_t sigs;
    int sig = 0, rc;

    if ((rc = mock_parse_args(argc, argv, &srv.opts)) != 0)
        return rc;
    atomic_init(&srv.log_budget, MOCK_LOG_BUDGET);
    tool_raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    /* Blocked before any thread starts, so only sigwait below receives them. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    srv.start_ns = mock_now_ns();

    if (mock_listen(&srv, err, sizeof(err)) < 0) {
        fprintf(stderr, "mockd: cannot listen on %s: %s\n", srv.opts.listen, err);
        return 1;
    }
    if ((rc = mock_start_workers(&srv)) < 0) {
        fprintf(stderr, "mockd: cannot start workers: %s\n", strerror(-rc));
        atomic_store_explicit(&srv.failed, true, memory_order_relaxed);
    } else {
        fprintf(stderr,
                "mockd: listening on %s (threads %u, framing %s, fault %s, delay_us %" PRIu64
                ", work_us %" PRIu64 ")\n",
                srv.addr_text, srv.opts.threads,
                srv.opts.framing == MOCK_FRAMING_JSON ? "json" : "ndjson",
                mock_fault_names[srv.opts.fault], srv.opts.delay_ns / 1000u,
                srv.opts.work_ns / 1000u);
        fflush(stderr);
        while (sigwait(&sigs, &sig) != 0)
            ;
    }
    mock_stop_workers(&srv);
    mock_print_stats(&srv);
    for (unsigned i = 0; srv.workers && i < srv.opts.threads; i++)
        mock_worker_destroy(&srv.workers[i]);
    free(srv.workers);
    close(srv.lfd);
    mock_unlink(&srv);
    return atomic_load_explicit(&srv.failed, memory_order_relaxed) ? 1 : 0;
}
