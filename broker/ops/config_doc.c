/*
 * config_doc.c - the key table as text: `brokerd --help`, the Markdown of
 * docs/config-reference.md (`--print-config-reference`), and each key's
 * default and range in words. Loops over config_key_at(); nothing here
 * knows a key by name.
 */
#include "config.h"
#include "config_priv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const char *type_name(const struct config_key *k)
{
    switch (k->type) {
    case CONFIG_T_U32:
        return "integer";
    case CONFIG_T_SIZE:
        return "bytes";
    case CONFIG_T_MS:
        return "ms";
    case CONFIG_T_STRING:
        return "string";
    case CONFIG_T_ENUM:
        return "enum";
    case CONFIG_T_MODE:
        return "octal string";
    case CONFIG_T_ADDRESS:
        return "address";
    case CONFIG_T_ADDRESS_OPT:
        return "address or null";
    case CONFIG_T_ID_LIST:
        return "array of integers";
    case CONFIG_T_STR_LIST:
        return "array of strings";
    case CONFIG_T_BACKENDS:
        return "array of objects";
    }
    return "?";
}

/* " (64 MiB)", " (60 s)" for round sizes and durations, else "". */
static void human(const struct config_key *k, int64_t v, char *buf, size_t len)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};

    buf[0] = '\0';
    if (k->type == CONFIG_T_SIZE) {
        int u = -1;
        while (v >= 1024 && v % 1024 == 0 && u < 3) {
            v /= 1024;
            u++;
        }
        if (u >= 0)
            snprintf(buf, len, " (%" PRId64 " %s)", v, units[u]);
    } else if (k->type == CONFIG_T_MS && v >= 1000 && v % 1000 == 0) {
        if (v % MS_DAY == 0)
            snprintf(buf, len, " (%" PRId64 " d)", v / MS_DAY);
        else if (v % MS_HOUR == 0)
            snprintf(buf, len, " (%" PRId64 " h)", v / MS_HOUR);
        else
            snprintf(buf, len, " (%" PRId64 " s)", v / 1000);
    }
}

int config_key_default_str(const struct config_key *k, char *buf, size_t len)
{
    size_t o = 0;

    switch (k->type) {
    case CONFIG_T_U32:
    case CONFIG_T_SIZE:
    case CONFIG_T_MS:
        return snprintf(buf, len, "%" PRId64, k->def);
    case CONFIG_T_BACKENDS:
        return snprintf(buf, len, "%s", "[{\"name\": \"blender\", ...}]");
    case CONFIG_T_ID_LIST:
        return snprintf(buf, len, "%s", "[]");
    case CONFIG_T_STR_LIST:
        o = (size_t)snprintf(buf, len, "%s", "[");
        for (const char *const *d = k->def_list; d && *d; d++)
            if (o < len)
                o += (size_t)snprintf(buf + o, len - o, "%s\"%s\"", d == k->def_list ? "" : ", ",
                                      *d);
        return (int)o + (o < len ? snprintf(buf + o, len - o, "%s", "]") : 1);
    default:
        return k->def_str ? snprintf(buf, len, "\"%s\"", k->def_str)
                          : snprintf(buf, len, "%s", "null");
    }
}

/* Range or allowed values; "" when the help line says it all. */
static void range_str(const struct config_key *k, char *buf, size_t len)
{
    char list[128];

    buf[0] = '\0';
    switch (k->type) {
    case CONFIG_T_U32:
    case CONFIG_T_SIZE:
    case CONFIG_T_MS:
    case CONFIG_T_BACKENDS:
        snprintf(buf, len, "%" PRId64 "..%" PRId64 "%s", k->min, k->max,
                 k->type == CONFIG_T_BACKENDS ? " entries" : "");
        break;
    case CONFIG_T_ID_LIST:
        snprintf(buf, len, "each %" PRId64 "..%" PRId64 ", at most %d", k->min, k->max,
                 CONFIG_LIST_MAX);
        break;
    case CONFIG_T_ENUM:
        config_enum_names(k->enum_names, list, sizeof(list));
        snprintf(buf, len, "%s", list);
        break;
    case CONFIG_T_MODE:
        snprintf(buf, len, "%04o..%04o (%04o required)", (unsigned)k->min, (unsigned)k->max,
                 (unsigned)k->min);
        break;
    default:
        break;
    }
}

static void key_summary(const struct config_key *k, char *def, size_t dl, char *range, size_t rl)
{
    char h[32];

    config_key_default_str(k, def, dl);
    human(k, k->def, h, sizeof(h));
    if (h[0] && strlen(def) + strlen(h) < dl)
        memcpy(def + strlen(def), h, strlen(h) + 1);
    range_str(k, range, rl);
}

/* Print text word-wrapped to 80 columns, each line indented by `indent`. */
static void print_wrapped(FILE *out, const char *text, int indent)
{
    const int width = 80 - indent;

    while (*text) {
        int n = (int)strlen(text);
        if (n > width) {
            n = width;
            while (n > 0 && text[n] != ' ')
                n--;
            if (n == 0)
                n = (int)strcspn(text, " ");
        }
        fprintf(out, "%*s%.*s\n", indent, "", n, text);
        text += n;
        while (*text == ' ')
            text++;
    }
}

void config_print_help(FILE *out)
{
    char def[192], range[128];

    fprintf(out, "Configuration (JSON file given with --config FILE; every key is optional and\n"
                 "the broker runs with no file at all). Sizes are bytes, durations ms.\n"
                 "Reference: docs/config-reference.md.\n\n");
    for (size_t i = 0; i < config_key_count(); i++) {
        const struct config_key *k = config_key_at(i);
        key_summary(k, def, sizeof(def), range, sizeof(range));
        fprintf(out, "  %s  (%s; default %s%s%s%s%s)\n", k->name, type_name(k), def,
                range[0] ? "; " : "", range, (k->flags & CONFIG_F_RELOAD) ? "; reloadable" : "",
                (k->flags & CONFIG_F_EXTRA) ? "; extra" : "");
        print_wrapped(out, k->help, 6);
    }
}

/* Markdown table cell: '|' would end the cell. */
static void md_cell(FILE *out, const char *s, bool code)
{
    fputs(code ? " `" : " ", out);
    for (; *s; s++) {
        if (*s == '|')
            fputs("\\|", out);
        else
            fputc(*s, out);
    }
    fputs(code ? "` |" : " |", out);
}

int config_write_reference_md(FILE *out)
{
    char def[192], range[128];

    fputs("# brokerd configuration reference\n\n"
          "<!-- Generated from the key table in broker/ops/config.c by config_write_reference_md().\n"
          "     Do not edit. Regenerate: brokerd --print-config-reference > "
          "docs/config-reference.md\n"
          "     (or BROKER_UPDATE_DOCS=1 build/bin/test_config). -->\n\n"
          "The configuration is one JSON object, read from `brokerd --config FILE`. Every key\n"
          "is optional: with no file at all the broker listens on `broker.sock` and forwards to\n"
          "one backend `blender` at `127.0.0.1:9876`. Unknown keys, wrong types and values out\n"
          "of range are refused at start with a message naming the key, for example\n"
          "`backends[1].pool_size: 0 is below the minimum 1`.\n\n"
          "Dotted names are nested objects: `cache.ttl_ms` is `{\"cache\": {\"ttl_ms\": 5000}}`.\n"
          "`backends[].` keys belong to each object of the `backends` array; `name` and\n"
          "`address` are required in each. Sizes are in bytes, durations in milliseconds.\n"
          "Keys marked *reload* take effect on `SIGHUP` / admin `reload`; changing any other\n"
          "key makes the reload fail with a message naming it (restart to apply).\n"
          "Keys marked *extra* are not in the specification's key list; the implementation\n"
          "added them.\n\n"
          "Cross-field rules: `request_timeout_ms <= max_request_timeout_ms`,\n"
          "`breaker.open_ms <= breaker.max_open_ms`, `cache.ttl_ms <= cache.max_ttl_ms`,\n"
          "`rate_limit.max_inflight_per_client <= rate_limit.max_inflight`, backend names\n"
          "unique, `listen`, `admin_listen` and `compat_listen` distinct.\n\n"
          "| Key | Type | Default | Range / values | Reload | Description |\n"
          "| --- | --- | --- | --- | --- | --- |\n",
          out);
    for (size_t i = 0; i < config_key_count(); i++) {
        const struct config_key *k = config_key_at(i);
        key_summary(k, def, sizeof(def), range, sizeof(range));
        fputs("|", out);
        md_cell(out, k->name, true);
        md_cell(out, type_name(k), false);
        md_cell(out, def, true);
        md_cell(out, range, false);
        md_cell(out, (k->flags & CONFIG_F_RELOAD) ? "reload" : "restart", false);
        fprintf(out, " %s%s |\n", (k->flags & CONFIG_F_EXTRA) ? "*extra* " : "", k->help);
    }
    fputs("\nExample:\n\n```json\n"
          "{\n"
          "  \"listen\": \"/run/brokerd/broker.sock\",\n"
          "  \"backends\": [\n"
          "    {\"name\": \"blender\", \"address\": \"127.0.0.1:9876\", \"pool_size\": 4},\n"
          "    {\"name\": \"render\", \"address\": \"unix:/run/render.sock\", \"framing\": "
          "\"ndjson\"}\n"
          "  ],\n"
          "  \"cache\": {\"ttl_ms\": 10000},\n"
          "  \"log\": {\"level\": \"debug\", \"format\": \"text\"}\n"
          "}\n```\n",
          out);
    return ferror(out) ? -EIO : 0;
}
