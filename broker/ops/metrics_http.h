/*
 * metrics_http.h - GET /metrics over HTTP/1.1 (metrics_listen), for
 * Prometheus to scrape; see metrics_http.c for the protocol subset.
 */
#ifndef BROKER_METRICS_HTTP_H
#define BROKER_METRICS_HTTP_H

#include <stddef.h>

#include "broker.h"
#include "sdlisten.h"

#define METRICS_HTTP_CLIENTS    16          /* connections at once; more get 503 */
#define METRICS_HTTP_REQ_MAX    8192        /* request line + headers; more get 431 */
#define METRICS_HTTP_TIMEOUT_MS 5000        /* to send the request, and to read the answer */

struct metrics_http;

/* The listening socket for a (TCP, from metrics_listen): the one systemd
 * passed (named "metrics", or bound to that address), else bound here.
 * Non-blocking, close-on-exec. 0 with *fd set, or -errno with err naming
 * the key. Start-up only (main thread). */
int metrics_http_listen(const struct config_address *a, struct sdlisten *sl, int *fd, char *err,
                        size_t errlen);

/* Serve GET /metrics on listen_fd (the caller keeps owning it) from a
 * thread of its own. 0 or -errno. */
int metrics_http_start(struct broker *b, int listen_fd, struct metrics_http **out);
/* Stop the thread, close its connections, free m. Safe with NULL. */
void metrics_http_stop(struct metrics_http *m);

/* Parse one request head (request line and headers, up to and including
 * the empty line; len bytes) and say how to answer: an HTTP status (200,
 * 400, 404, 405), and *head when the method is HEAD. Pure: for tests. */
int metrics_http_parse(const char *req, size_t len, bool *head);

#endif /* BROKER_METRICS_HTTP_H */
