/*
 * stress_log.c - the process logger under concurrency (for stress_all/TSan):
 * 4 writers + a thread flipping level/format/value_max + a thread calling
 * log_ratelimit_flush, all against one pipe drained by a reader. Checks that
 * every line is whole (starts with a header, ends with '\n') and that a
 * shared rate limit admits exactly its burst at a frozen clock.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "stress.h"

#define NW 4
#define PER 3000

static atomic_int stop_flag;
static struct log_ratelimit shared_rl = LOG_RATELIMIT_INIT("stress", 1, 50);
static atomic_long admitted;

static int64_t frozen_ns(void)
{
    return 42;
}

struct rd {
    int fd;
    char *buf;
    size_t len, cap;
};

static void *reader(void *arg)
{
    struct rd *r = arg;
    for (;;) {
        if (r->cap - r->len < 65536) {
            r->cap = r->cap ? r->cap * 2 : 1 << 20;
            r->buf = realloc(r->buf, r->cap + 1);
        }
        ssize_t n = read(r->fd, r->buf + r->len, r->cap - r->len);
        if (n <= 0)
            break;
        r->len += (size_t)n;
    }
    r->buf[r->len] = '\0';
    return NULL;
}

static void *writer(void *arg)
{
    long id = (long)arg;
    char pad[600];
    memset(pad, 'a' + (int)id, sizeof pad);
    for (int i = 0; i < PER; i++) {
        log_write(LOG_LEVEL_ERROR, "w", LOG_INT("t", id), LOG_INT("i", i),
                  LOG_STR("pad", pad, (size_t)(i % 600)));
        if (log_enabled(LOG_LEVEL_ERROR) && log_ratelimit_allow(&shared_rl, LOG_LEVEL_ERROR))
            atomic_fetch_add(&admitted, 1);
    }
    return NULL;
}

static void *flipper(void *arg)
{
    (void)arg;
    for (unsigned i = 0; !atomic_load(&stop_flag); i++) {
        log_set_format(i & 1 ? LOG_FORMAT_TEXT : LOG_FORMAT_JSON);
        log_set_level(i & 2 ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO);
        log_set_value_max(16 + i % 500);
        log_ratelimit_flush();
    }
    return NULL;
}

int stress_log_lines(char *err, size_t errlen)
{
    pthread_t w[NW], f, rt;
    struct rd r = {0};
    int p[2];
    size_t lines = 0;

    if (pipe(p))
        return snprintf(err, errlen, "pipe failed"), -1;
    r.fd = p[0];
    log_set_fd(p[1]);
    log_set_clock(NULL, frozen_ns);
    pthread_create(&rt, NULL, reader, &r);
    pthread_create(&f, NULL, flipper, NULL);
    for (long i = 0; i < NW; i++)
        pthread_create(&w[i], NULL, writer, (void *)i);
    for (int i = 0; i < NW; i++)
        pthread_join(w[i], NULL);
    atomic_store(&stop_flag, 1);
    pthread_join(f, NULL);
    log_set_fd(2);
    close(p[1]);
    pthread_join(rt, NULL);
    close(p[0]);
    log_set_clock(NULL, NULL);

    for (char *s = r.buf, *nl; (nl = strchr(s, '\n')); s = nl + 1, lines++) {
        if (strncmp(s, "{\"ts\":\"", 7) != 0 && strncmp(s, "ts=", 3) != 0) {
            snprintf(err, errlen, "line %zu does not start with a header: %.80s", lines, s);
            free(r.buf);
            return -1;
        }
    }
    free(r.buf);
    if (atomic_load(&admitted) != 50)
        return snprintf(err, errlen, "rate limit admitted %ld, want 50", atomic_load(&admitted)),
               -1;
    if (lines < NW * PER)
        return snprintf(err, errlen, "%zu lines, want >= %d", lines, NW * PER), -1;
    return 0;
}

#ifdef STRESS_LOG_MAIN
int main(void)
{
    char err[256] = "";
    int rc = stress_log_lines(err, sizeof err);
    printf("%s stress_log_lines %s\n", rc ? "FAIL" : "PASS", err);
    return rc ? 1 : 0;
}
#endif
