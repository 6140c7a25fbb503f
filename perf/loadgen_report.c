/*
 * loadgen_report.c - loadgen's figures (the design is in loadgen.c): the
 * log-linear latency histogram each thread records into, the table of error
 * codes, the bounded JSON writer (also used to pre-build the request bytes),
 * and the merge of the threads' figures into the one JSON line printed at
 * the end.
 *
 * Recording runs on a load thread on its own figures (lg_hist_add is inline
 * in loadgen.h: it is on every answer's path; lg_codes_add only on errors);
 * merging and printing run on the main thread after the joins.
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "loadgen.h"

/* ---------------------------------------------------------------- histogram */

/* The midpoint of a bucket: at most half a bucket width (0.4 %) off. */
static uint64_t lg_hist_value(unsigned idx)
{
    if (idx < 2 * LG_HIST_SUB)
        return idx;
    unsigned shift = idx / LG_HIST_SUB - 1;
    uint64_t sub = idx % LG_HIST_SUB + LG_HIST_SUB;
    return (sub << shift) + ((1ull << shift) >> 1);
}

static void lg_hist_merge(struct lg_hist *dst, const struct lg_hist *src)
{
    for (unsigned i = 0; i < LG_HIST_BUCKETS; i++)
        dst->b[i] += src->b[i];
    dst->count += src->count;
    if (src->max_ns > dst->max_ns)
        dst->max_ns = src->max_ns;
}

static uint64_t lg_hist_pct(const struct lg_hist *h, double p)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil(p * (double)h->count);
    uint64_t seen = 0;
    if (rank == 0)
        rank = 1;
    for (unsigned i = 0; i < LG_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = lg_hist_value(i);
            return v > h->max_ns ? h->max_ns : v;
        }
    }
    return h->max_ns;
}

/* ---------------------------------------------------------------- error codes */

void lg_codes_add(struct lg_codes *t, const char *name, size_t len, uint64_t n)
{
    char clean[LG_CODE_LEN];
    if (len >= LG_CODE_LEN)
        len = LG_CODE_LEN - 1;
    /* Codes are snake_case; anything else is replaced so the output stays JSON. */
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        bool keep = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' || ch == '.';
        clean[i] = keep ? ch : '?';
    }
    clean[len] = '\0';
    for (unsigned i = 0; i < t->n; i++)
        if (strcmp(t->c[i].name, clean) == 0) {
            t->c[i].n += n;
            return;
        }
    if (t->n == LG_MAX_CODES) {
        t->other += n;
        return;
    }
    memcpy(t->c[t->n].name, clean, len + 1);
    t->c[t->n++].n = n;
}

/* ---------------------------------------------------------------- output */

__attribute__((format(printf, 2, 3))) void lg_put(struct lg_out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, sizeof(o->buf) - o->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n < sizeof(o->buf) - o->len ? (size_t)n : sizeof(o->buf) - 1 - o->len;
}

/* A JSON string literal of s: quotes, backslashes and control bytes escaped. */
void lg_put_jstr(struct lg_out *o, const char *s)
{
    lg_put(o, "\"");
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            lg_put(o, "\\%c", ch);
        else if (ch < 0x20)
            lg_put(o, "\\u%04x", ch);
        else
            lg_put(o, "%c", ch);
    }
    lg_put(o, "\"");
}

void lg_merge(struct lg_run *run, struct lg_totals *tt)
{
    for (unsigned i = 0; i < run->o.threads; i++) {
        struct lg_thread *t = &run->threads[i];
        lg_hist_merge(&tt->hist, &t->hist);
        tt->sent += t->sent;
        tt->ok += t->ok;
        tt->errors += t->errors;
        tt->window_done += t->window_done;
        tt->duplicates += t->duplicates;
        tt->unknown += t->unknown;
        tt->closed += t->closed;
        tt->reconnects += t->reconnects;
        if (run->o.rate > 0 && t->k_end > t->k_next)
            tt->unsent += t->k_end - t->k_next;
        for (unsigned k = 0; k < t->codes.n; k++)
            lg_codes_add(&tt->codes, t->codes.c[k].name, strlen(t->codes.c[k].name),
                         t->codes.c[k].n);
        tt->codes.other += t->codes.other;
    }
    /* Lost: in flight at the end, on live connections or on closed ones. */
    for (unsigned i = 0; i < run->o.conns; i++)
        for (unsigned s = 0; s < run->o.depth; s++)
            tt->lost += run->conns[i].slots[s].busy;
}

static double lg_us(uint64_t ns)
{
    return (double)ns / 1000.0;
}

void lg_report(struct lg_run *run, const struct lg_totals *tt, double cpu_s)
{
    struct lg_out o = {.len = 0};
    const struct lg_opts *op = &run->o;
    lg_put(&o, "{\"bench\":\"loadgen\",\"mode\":\"%s\",\"transport\":\"%s\",\"framing\":\"%s\",",
           op->mode == LG_MODE_BROKER   ? "broker"
           : op->mode == LG_MODE_COMPAT ? "compat"
                                        : "direct",
           run->is_tcp ? "tcp" : "unix",
           op->framing == LG_FRAMING_NDJSON ? "ndjson" : "json");
    lg_put(&o, "\"type\":");
    lg_put_jstr(&o, op->type);
    lg_put(&o,
           ",\"connections\":%u,\"depth\":%u,\"threads\":%u,\"duration_s\":%.3f,"
           "\"warmup_s\":%.3f,",
           op->conns, op->depth, op->threads, op->duration, op->warmup);
    lg_put(&o,
           "\"requests\":%" PRIu64 ",\"ok\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"lost\":%" PRIu64
           ",\"duplicates\":%" PRIu64 ",\"unknown_ids\":%" PRIu64 ",\"sent\":%" PRIu64
           ",\"closed_connections\":%" PRIu64 ",",
           tt->ok + tt->errors, tt->ok, tt->errors, tt->lost, tt->duplicates, tt->unknown, tt->sent,
           tt->closed);
    double rps = (double)tt->window_done / op->duration;
    lg_put(&o,
           "\"rps\":%.0f,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,"
           "\"max_us\":%.1f,",
           rps, lg_us(lg_hist_pct(&tt->hist, 0.50)), lg_us(lg_hist_pct(&tt->hist, 0.90)),
           lg_us(lg_hist_pct(&tt->hist, 0.99)), lg_us(lg_hist_pct(&tt->hist, 0.999)),
           lg_us(tt->hist.max_ns));
    lg_put(&o,
           "\"open_loop\":%s,\"offered_rps\":%.0f,\"unsent\":%" PRIu64
           ",\"conn_per_request\":%s,\"reconnects\":%" PRIu64 ",\"keys\":%u,",
           op->rate > 0 ? "true" : "false", op->rate, tt->unsent,
           op->conn_per_request ? "true" : "false", tt->reconnects, op->keys);
    lg_put(&o, "\"cpu_s\":%.3f,\"cpu_us_per_req\":%.2f,\"error_codes\":{", cpu_s,
           tt->window_done ? cpu_s * 1e6 / (double)tt->window_done : 0.0);
    for (unsigned k = 0; k < tt->codes.n; k++)
        lg_put(&o, "%s\"%s\":%" PRIu64, k ? "," : "", tt->codes.c[k].name, tt->codes.c[k].n);
    if (tt->codes.other)
        lg_put(&o, "%s\"other\":%" PRIu64, tt->codes.n ? "," : "", tt->codes.other);
    lg_put(&o, "}}\n");
    fwrite(o.buf, 1, o.len, stdout);
    fflush(stdout);
}
