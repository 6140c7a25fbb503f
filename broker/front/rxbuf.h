/*
 * rxbuf.h - the worker's shared receive buffers for clients (rxbuf.c).
 */
#ifndef BROKER_RXBUF_H
#define BROKER_RXBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RXBUF_GROUP 0 /* io_uring buffer group id */
#define RXBUF_SIZE  (16u * 1024u)

struct io_uring;
struct io_uring_buf_ring;

struct rxbuf {
    struct io_uring_buf_ring *ring; /* NULL: not available (old kernel), recv into c->in */
    char *mem;                      /* count * RXBUF_SIZE */
    unsigned count;                 /* a power of two */
    size_t ring_bytes;
};

/* On the worker's thread, after the ring is enabled (SINGLE_ISSUER: only
 * its submitter may register). false: not available; clients then keep
 * their own buffer. */
bool rxbuf_setup(struct rxbuf *rx, struct io_uring *ring, unsigned count);
/* The bytes of buffer bid (from a completion's flags). */
static inline const char *rxbuf_data(const struct rxbuf *rx, unsigned bid)
{
    return rx->mem + (size_t)bid * RXBUF_SIZE;
}
/* Give buffer bid back to the kernel. */
void rxbuf_put(struct rxbuf *rx, unsigned bid);
/* After the ring is gone. */
void rxbuf_free(struct rxbuf *rx);

#endif /* BROKER_RXBUF_H */
