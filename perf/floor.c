/*
 * floor.c - the kernel floor of a relay: what the four socket operations a
 * relay makes per request cost on this machine, timed in a tight loop.
 *
 * A relay between a client on a Unix socket and a backend on TCP loopback
 * makes, per request: recv of the request from the client (Unix), send of it
 * to the backend (TCP), recv of the answer from the backend (TCP), send of the
 * answer to the client (Unix). brokerd, HAProxy and nginx all make at least
 * these four, whatever their event loop; anything above is their own cost
 * (user space, readiness polling, sleeping and waking).
 *
 * Design
 * - One thread owns both ends of a Unix socketpair and of a connected TCP
 *   loopback pair (TCP_NODELAY, as the relays set it). Each iteration plays
 *   the client and the backend too, so data is always there: nothing ever
 *   blocks or sleeps, and no wake-up or context switch is counted. That is
 *   what makes it a floor: a real relay adds its waits on top.
 * - Only the relay's four calls are timed, each between two CLOCK_MONOTONIC
 *   readings (vDSO on TSC); the peers' calls are not. The mean cost of one
 *   empty pair of readings is measured first and subtracted.
 * - Message sizes default to the benchmark's: a 48-byte request line and a
 *   300-byte answer (mockd's get_scene_info reply plus the broker's id).
 * - CPU, not wall time, is the headline, because the relays' figures are CPU
 *   (utime+stime from /proc) and on a shared VM wall time includes time the
 *   thread was preempted or the vCPU stolen. Per round: the thread's CPU time
 *   (getrusage RUSAGE_THREAD) over the round, times the relay calls' share of
 *   the round's wall time, per iteration. "us_per_req" is the median round;
 *   "wall_us_per_req" the lowest round of the timed wall sum (what the four
 *   calls take on an idle vCPU), with its per-call breakdown.
 *
 * Limits: plain syscalls, not io_uring (brokerd submits the same operations
 * through io_uring, which can batch the entry but not the socket work); the
 * share apportioning assumes preemption hits relay and peer calls alike.
 *
 * Output: one JSON line {"bench":"floor","us_per_req":...,...}.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FLOOR_MAX_ROUNDS 101

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void xsend(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, buf, n, MSG_NOSIGNAL);
        if (k <= 0)
            die("send");
        buf += k;
        n -= (size_t)k;
    }
}

static void xrecv(int fd, char *buf, size_t n)
{
    while (n > 0) {
        ssize_t k = recv(fd, buf, n, 0);
        if (k <= 0)
            die("recv");
        buf += k;
        n -= (size_t)k;
    }
}

/* A connected TCP loopback pair, TCP_NODELAY on both ends. */
static void tcp_pair(int fds[2])
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int one = 1;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(l, 1) < 0 ||
        getsockname(l, (struct sockaddr *)&sa, &len) < 0)
        die("tcp listen");
    fds[0] = socket(AF_INET, SOCK_STREAM, 0);
    if (fds[0] < 0 || connect(fds[0], (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die("tcp connect");
    fds[1] = accept(l, NULL, NULL);
    if (fds[1] < 0)
        die("accept");
    close(l);
    for (int i = 0; i < 2; i++)
        if (setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
            die("TCP_NODELAY");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double thread_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void usage(FILE *f)
{
    fputs("usage: floor [--iterations N] [--rounds R] [--req-bytes B] [--resp-bytes B]\n"
          "\n"
          "Times the four socket calls a relay makes per request (Unix recv, TCP send,\n"
          "TCP recv, Unix send) in a tight loop with no waiting; one JSON line.\n"
          "Defaults: 100000 iterations, 5 rounds, 48-byte request, 300-byte answer.\n",
          f);
}

int main(int argc, char **argv)
{
    long iters = 100000, rounds = 5, req = 48, resp = 300;
    for (int i = 1; i < argc; i++) {
        long *dst = NULL;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--iterations") == 0)
            dst = &iters;
        else if (strcmp(argv[i], "--rounds") == 0)
            dst = &rounds;
        else if (strcmp(argv[i], "--req-bytes") == 0)
            dst = &req;
        else if (strcmp(argv[i], "--resp-bytes") == 0)
            dst = &resp;
        char *end = NULL;
        if (!dst || i + 1 >= argc || (*dst = strtol(argv[++i], &end, 10), *end != '\0') ||
            *dst < 1) {
            fprintf(stderr, "floor: bad option: %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (rounds > FLOOR_MAX_ROUNDS || req > 65536 || resp > 65536) {
        fprintf(stderr, "floor: at most %d rounds and 65536-byte messages\n", FLOOR_MAX_ROUNDS);
        return 2;
    }
    char *qbuf = malloc((size_t)req), *abuf = malloc((size_t)resp), *rbuf = malloc(65536);
    if (!qbuf || !abuf || !rbuf)
        die("malloc");
    memset(qbuf, 'q', (size_t)req);
    memset(abuf, 'a', (size_t)resp);

    int un[2], tcp[2]; /* [0] client / relay's backend side, [1] relay / backend */
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, un) < 0)
        die("socketpair");
    tcp_pair(tcp);
    int client = un[0], relay_c = un[1], relay_b = tcp[0], backend = tcp[1];

    /* Cost of one pair of clock readings, subtracted from each timed call. */
    uint64_t c0 = now_ns();
    for (int i = 0; i < 1000000; i++) {
        volatile uint64_t a = now_ns(), b = now_ns();
        (void)a;
        (void)b;
    }
    double clock_ns = (double)(now_ns() - c0) / 1e6 / 2.0; /* one reading */

    double per_round[FLOOR_MAX_ROUNDS], cpu_round[FLOOR_MAX_ROUNDS];
    double best = 1e300, best_ops[4] = {0};
    double cpu0 = thread_cpu_s();
    for (long r = 0; r < rounds; r++) {
        uint64_t ops[4] = {0};
        double rc0 = thread_cpu_s();
        uint64_t rw0 = now_ns();
        for (long i = 0; i < iters; i++) {
            uint64_t t0, t1;
            xsend(client, qbuf, (size_t)req); /* client asks */
            t0 = now_ns();
            xrecv(relay_c, rbuf, (size_t)req); /* relay: Unix recv */
            t1 = now_ns();
            ops[0] += t1 - t0;
            t0 = now_ns();
            xsend(relay_b, qbuf, (size_t)req); /* relay: TCP send */
            t1 = now_ns();
            ops[1] += t1 - t0;
            xrecv(backend, rbuf, (size_t)req); /* backend reads, answers */
            xsend(backend, abuf, (size_t)resp);
            t0 = now_ns();
            xrecv(relay_b, rbuf, (size_t)resp); /* relay: TCP recv */
            t1 = now_ns();
            ops[2] += t1 - t0;
            t0 = now_ns();
            xsend(relay_c, abuf, (size_t)resp); /* relay: Unix send */
            t1 = now_ns();
            ops[3] += t1 - t0;
            xrecv(client, rbuf, (size_t)resp); /* client reads */
        }
        double rwall = (double)(now_ns() - rw0), rcpu = thread_cpu_s() - rc0;
        double total = 0, o[4];
        for (int k = 0; k < 4; k++) {
            o[k] = (double)ops[k] / (double)iters - clock_ns;
            total += o[k];
        }
        per_round[r] = total / 1000.0;
        /* CPU of the round x the relay calls' share of its wall time, per iteration */
        cpu_round[r] = rcpu * 1e6 * (total * (double)iters / rwall) / (double)iters;
        if (per_round[r] < best) {
            best = per_round[r];
            memcpy(best_ops, o, sizeof(o));
        }
    }
    double cpu = thread_cpu_s() - cpu0;
    qsort(per_round, (size_t)rounds, sizeof(double), cmp_double);
    qsort(cpu_round, (size_t)rounds, sizeof(double), cmp_double);
    printf("{\"bench\":\"floor\",\"us_per_req\":%.3f,\"min_us_per_req\":%.3f,"
           "\"wall_us_per_req\":%.3f,\"median_wall_us_per_req\":%.3f,"
           "\"unix_recv_wall_us\":%.3f,\"tcp_send_wall_us\":%.3f,\"tcp_recv_wall_us\":%.3f,"
           "\"unix_send_wall_us\":%.3f,\"cpu_us_per_iteration_all_8_calls\":%.3f,"
           "\"clock_read_ns\":%.1f,\"iterations\":%ld,\"rounds\":%ld,\"req_bytes\":%ld,"
           "\"resp_bytes\":%ld}\n",
           cpu_round[rounds / 2], cpu_round[0], best, per_round[rounds / 2], best_ops[0] / 1000.0, best_ops[1] / 1000.0, best_ops[2] / 1000.0,
           best_ops[3] / 1000.0, cpu * 1e6 / (double)(iters * rounds), clock_ns, iters, rounds,
           req, resp);
    close(client);
    close(relay_c);
    close(relay_b);
    close(backend);
    free(qbuf);
    free(abuf);
    free(rbuf);
    return 0;
}
