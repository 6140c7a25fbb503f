/*
 * rxbuf.c - receive buffers shared by a worker's clients, so an idle client
 * holds none.
 *
 * A client waiting for its next request has a recv armed. With a buffer of
 * its own in that recv, 10,000 idle clients hold 10,000 buffers. Instead
 * the recv selects a buffer from an io_uring provided-buffer ring only when
 * data arrives (IOSQE_BUFFER_SELECT); the completion names the buffer, the
 * client copies the bytes into memory of its own sized to them, and the
 * buffer goes straight back to the ring. A client that stops mid-line (a
 * partial request) reads the rest directly into its own buffer, which it
 * drops again once empty (client.c). So an idle connection costs its
 * struct client and the kernel's socket, nothing more.
 *
 * client_rx_buffers (64) buffers are enough: each is returned in the
 * completion handler that received it, so at most one round's worth of
 * completions hold buffers at once (and the kernel hands a DEFER_TASKRUN
 * ring its completions in batches of a few dozen). When the ring runs dry
 * anyway the recv fails with -ENOBUFS and the client reads into its own
 * buffer that time.
 */
#include <liburing.h>
#include <string.h>
#include <sys/mman.h>

#include "rxbuf.h"

bool rxbuf_setup(struct rxbuf *rx, struct io_uring *ring, unsigned count)
{
    memset(rx, 0, sizeof *rx);
    unsigned n = 1;
    while (n < count && n < 32768)
        n <<= 1;
    rx->count = n;
    rx->ring_bytes = rx->count * sizeof(struct io_uring_buf);
    void *r = mmap(NULL, rx->ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1,
                   0);
    if (r == MAP_FAILED)
        return false;
    void *m = mmap(NULL, (size_t)rx->count * RXBUF_SIZE, PROT_READ | PROT_WRITE,
                   MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (m == MAP_FAILED) {
        munmap(r, rx->ring_bytes);
        return false;
    }
    struct io_uring_buf_reg reg = {
        .ring_addr = (unsigned long)r, .ring_entries = rx->count, .bgid = RXBUF_GROUP};
    if (io_uring_register_buf_ring(ring, &reg, 0) < 0) {
        munmap(m, (size_t)rx->count * RXBUF_SIZE);
        munmap(r, rx->ring_bytes);
        return false;
    }
    rx->ring = r;
    rx->mem = m;
    io_uring_buf_ring_init(rx->ring);
    for (unsigned i = 0; i < rx->count; i++)
        io_uring_buf_ring_add(rx->ring, rx->mem + (size_t)i * RXBUF_SIZE, RXBUF_SIZE,
                              (unsigned short)i, io_uring_buf_ring_mask(rx->count), (int)i);
    io_uring_buf_ring_advance(rx->ring, rx->count);
    return true;
}

void rxbuf_put(struct rxbuf *rx, unsigned bid)
{
    io_uring_buf_ring_add(rx->ring, rx->mem + (size_t)bid * RXBUF_SIZE, RXBUF_SIZE,
                          (unsigned short)bid, io_uring_buf_ring_mask(rx->count), 0);
    io_uring_buf_ring_advance(rx->ring, 1);
}

void rxbuf_free(struct rxbuf *rx)
{
    if (rx->mem)
        munmap(rx->mem, (size_t)rx->count * RXBUF_SIZE);
    if (rx->ring)
        munmap(rx->ring, rx->ring_bytes);
    memset(rx, 0, sizeof *rx);
}
