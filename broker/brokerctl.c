/*
 * brokerctl.c - the operator's command line for a running brokerd.
 *
 *   brokerctl [--socket PATH] [--json] CMD       admin socket: stats, health,
 *                                                pool, cache, memory, config,
 *                                                metrics, shutdown, ...
 *   brokerctl [--listen PATH] [--json] call TYPE [PARAMS_JSON]
 *                                                one request on the client socket
 *
 * Output: by default a human view - a table with one row per backend for
 * answers that hold a "backends" list, aligned "key  value" lines (nested
 * objects flattened with dots) otherwise, the text itself for `metrics`;
 * with --json the answer's result (or the whole answer for `call`) as one
 * line of JSON, for scripts.
 *
 * Exit codes: 0 success; 1 the broker answered an error (printed on
 * stderr); 2 bad usage; 3 the broker cannot be reached (not running, wrong
 * path, permission) or closed the connection without an answer.
 */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define EXIT_ANSWER_ERROR 1
#define EXIT_USAGE        2
#define EXIT_UNREACHABLE  3

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: brokerctl [--socket PATH] [--json] CMD\n"
        "       brokerctl [--listen PATH] [--json] call TYPE [PARAMS_JSON]\n"
        "\n"
        "Talk to a running brokerd.\n"
        "  --socket PATH  the admin socket (default broker.admin.sock, the default\n"
        "                 admin_listen)\n"
        "  --listen PATH  the client socket, for `call` (default broker.sock)\n"
        "  --json         print the answer as JSON (for scripts)\n"
        "\n"
        "Commands: stats, health, pool, cache, memory, config, metrics, reload, drain,\n"
        "          shutdown\n"
        "          call TYPE [PARAMS_JSON]   send one request, e.g.\n"
        "                                    brokerctl call get_object_info '{\"name\":\"Cube\"}'\n"
        "Exit: 0 success, 1 the broker answered an error, 2 usage, 3 broker unreachable.\n");
}

/* Send one line on a fresh connection to path, read one line back. */
static int exchange(const char *path, const char *line, char **answer)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "brokerctl: socket path too long: %s\n", path);
        return EXIT_USAGE;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        fprintf(stderr, "brokerctl: cannot reach brokerd at %s: %s%s\n", path, strerror(errno),
                errno == ENOENT || errno == ECONNREFUSED ? " (is brokerd running? --socket PATH)"
                                                         : "");
        if (fd >= 0)
            close(fd);
        return EXIT_UNREACHABLE;
    }
    size_t len = strlen(line), off = 0;
    while (off < len) {
        ssize_t n = send(fd, line + off, len - off, MSG_NOSIGNAL);
        if (n <= 0) {
            fprintf(stderr, "brokerctl: writing to %s failed: %s\n", path, strerror(errno));
            close(fd);
            return EXIT_UNREACHABLE;
        }
        off += (size_t)n;
    }
    size_t cap = 65536, got = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (got == cap) {
            char *p = realloc(buf, cap * 2);
            if (!p)
                break;
            buf = p;
            cap *= 2;
        }
        ssize_t n = recv(fd, buf + got, cap - got, 0);
        if (n <= 0)
            break;
        char *nl = memchr(buf + got, '\n', (size_t)n);
        got += (size_t)n;
        if (nl) {
            *nl = '\0';
            close(fd);
            *answer = buf;
            return 0;
        }
    }
    free(buf);
    close(fd);
    fprintf(stderr, "brokerctl: %s closed the connection without an answer\n", path);
    return EXIT_UNREACHABLE;
}

/* Numbers for people: 15 significant digits (4.08, not the 17-digit
 * round-trip form 4.0800000000000001). --json output keeps every digit. */
#define HUMAN_REALS JSON_REAL_PRECISION(15)

/* A scalar as text (strings unquoted). */
static char *scalar_text(const json_t *v)
{
    if (json_is_string(v))
        return strdup(json_string_value(v));
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | HUMAN_REALS);
}

/* Flatten obj into parallel arrays of "a.b" keys and values. */
static void flatten(const json_t *obj, const char *prefix, json_t *keys, json_t *vals)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        char name[256];
        snprintf(name, sizeof name, "%s%s%s", prefix, *prefix ? "." : "", k);
        if (json_is_object(v) && json_object_size(v)) {
            flatten(v, name, keys, vals);
        } else {
            char *t = scalar_text(v);
            json_array_append_new(keys, json_string(name));
            json_array_append_new(vals, json_string(t ? t : "?"));
            free(t);
        }
    }
}

static void print_pairs(const json_t *obj)
{
    json_t *keys = json_array(), *vals = json_array();
    flatten(obj, "", keys, vals);
    size_t w = 0;
    for (size_t i = 0; i < json_array_size(keys); i++) {
        size_t l = strlen(json_string_value(json_array_get(keys, i)));
        w = l > w ? l : w;
    }
    for (size_t i = 0; i < json_array_size(keys); i++)
        printf("%-*s  %s\n", (int)w, json_string_value(json_array_get(keys, i)),
               json_string_value(json_array_get(vals, i)));
    json_decref(keys);
    json_decref(vals);
}

/* One row per element of rows (objects), one column per flattened key of
 * the first row. */
static void print_table(const json_t *rows)
{
    size_t nr = json_array_size(rows);
    if (nr == 0)
        return;
    json_t *head = json_array(), *cells = json_array();
    json_t *tmp = json_array();
    flatten(json_array_get(rows, 0), "", head, tmp);
    json_decref(tmp);
    size_t nc = json_array_size(head);
    size_t *w = calloc(nc ? nc : 1, sizeof *w);
    if (!w)
        goto out;
    for (size_t c = 0; c < nc; c++)
        w[c] = strlen(json_string_value(json_array_get(head, c)));
    for (size_t r = 0; r < nr; r++) {
        json_t *k = json_array(), *v = json_array();
        flatten(json_array_get(rows, r), "", k, v);
        json_array_append_new(cells, v);
        for (size_t c = 0; c < nc && c < json_array_size(v); c++) {
            size_t l = strlen(json_string_value(json_array_get(v, c)));
            w[c] = l > w[c] ? l : w[c];
        }
        json_decref(k);
    }
    for (size_t c = 0; c < nc; c++)
        printf("%-*s%s", (int)w[c], json_string_value(json_array_get(head, c)),
               c + 1 < nc ? "  " : "\n");
    for (size_t r = 0; r < nr; r++) {
        json_t *v = json_array_get(cells, r);
        for (size_t c = 0; c < nc; c++) {
            const char *s = c < json_array_size(v) ? json_string_value(json_array_get(v, c)) : "";
            printf("%-*s%s", (int)w[c], s, c + 1 < nc ? "  " : "\n");
        }
    }
out:
    free(w);
    json_decref(head);
    json_decref(cells);
}

static int print_result(const char *cmd, const json_t *res, bool as_json)
{
    if (as_json) {
        char *t = json_dumps(res, JSON_COMPACT | JSON_ENCODE_ANY);
        puts(t ? t : "null");
        free(t);
        return 0;
    }
    if (!json_is_object(res)) {
        char *t = json_dumps(res, JSON_INDENT(2) | JSON_ENCODE_ANY | HUMAN_REALS);
        puts(t ? t : "null");
        free(t);
        return 0;
    }
    const json_t *text = json_object_get(res, "text");
    if (strcmp(cmd, "metrics") == 0 && json_is_string(text)) {
        fputs(json_string_value(text), stdout);
        return 0;
    }
    if (strcmp(cmd, "config") == 0) {
        char *t = json_dumps(res, JSON_INDENT(2));
        puts(t ? t : "{}");
        free(t);
        return 0;
    }
    const json_t *rows = json_object_get(res, "backends");
    if (json_is_array(rows)) {
        print_table(rows);
        return 0;
    }
    if (json_is_object(rows)) { /* stats: backends by name */
        json_t *copy = json_deep_copy(res);
        json_object_del(copy, "backends");
        print_pairs(copy);
        json_decref(copy);
        json_t *arr = json_array();
        const char *name;
        json_t *v;
        json_object_foreach((json_t *)rows, name, v)
        {
            json_t *row = json_pack("{s:s}", "backend", name);
            json_object_update(row, v);
            json_array_append_new(arr, row);
        }
        putchar('\n');
        print_table(arr);
        json_decref(arr);
        return 0;
    }
    print_pairs(res);
    return 0;
}

int main(int argc, char **argv)
{
    const char *admin = "broker.admin.sock", *listen = "broker.sock";
    bool as_json = false;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--socket") && i + 1 < argc)
            admin = argv[++i];
        else if (!strcmp(argv[i], "--listen") && i + 1 < argc)
            listen = argv[++i];
        else if (!strcmp(argv[i], "--json"))
            as_json = true;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "brokerctl: unknown option '%s' (try --help)\n", argv[i]);
            return EXIT_USAGE;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[i++];
    json_t *req;
    const char *raw_params = NULL; /* call: PARAMS_JSON as given */
    const char *path = admin;
    if (!strcmp(cmd, "call")) {
        if (i >= argc || i + 2 < argc) {
            fprintf(stderr, "brokerctl: usage: call TYPE [PARAMS_JSON]\n");
            return EXIT_USAGE;
        }
        json_t *params = NULL;
        if (i + 1 < argc) {
            json_error_t e;
            params = json_loads(argv[i + 1], 0, &e);
            if (!json_is_object(params)) {
                fprintf(stderr, "brokerctl: PARAMS_JSON must be a JSON object: %s\n",
                        params ? "not an object" : e.text);
                json_decref(params);
                return EXIT_USAGE;
            }
        }
        json_decref(params); /* checked; sent as the user wrote it (below) */
        raw_params = i + 1 < argc ? argv[i + 1] : NULL;
        req = json_pack("{s:i,s:s}", "id", 1, "type", argv[i]);
        path = listen;
    } else {
        if (i < argc) {
            fprintf(stderr, "brokerctl: %s takes no argument (try --help)\n", cmd);
            return EXIT_USAGE;
        }
        req = json_pack("{s:i,s:s}", "id", 1, "cmd", cmd);
    }
    char *line = json_dumps(req, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(req);
    if (line && raw_params) {
        /* The params exactly as given (a re-serialised 4.08 would travel as
         * 4.0800000000000001), on one line: a newline outside a string is
         * whitespace, and inside one it is not valid JSON anyway. */
        size_t ll0 = strlen(line), pl = strlen(raw_params);
        char *with = malloc(ll0 + pl + 16);
        if (with) {
            memcpy(with, line, ll0 - 1); /* without the closing brace */
            size_t o = ll0 - 1;
            memcpy(with + o, ",\"params\":", 10);
            o += 10;
            for (size_t k = 0; k < pl; k++)
                with[o++] = raw_params[k] == '\n' || raw_params[k] == '\r' ? ' ' : raw_params[k];
            with[o++] = '}';
            with[o] = '\0';
        }
        free(line);
        line = with;
    }
    size_t ll = line ? strlen(line) : 0;
    char *full = line ? malloc(ll + 2) : NULL;
    if (!full) {
        free(line);
        fprintf(stderr, "brokerctl: out of memory\n");
        return EXIT_ANSWER_ERROR;
    }
    memcpy(full, line, ll);
    memcpy(full + ll, "\n", 2);
    free(line);
    char *answer = NULL;
    int rc = exchange(path, full, &answer);
    free(full);
    if (rc)
        return rc;
    json_error_t e;
    json_t *ans = json_loads(answer, 0, &e);
    /* call --json prints the broker's own bytes: re-serialising would
     * rewrite numbers (4.08 as 4.0800000000000001) and escapes. */
    bool raw = as_json && !strcmp(cmd, "call") && json_is_object(ans);
    if (raw)
        puts(answer);
    free(answer);
    if (!json_is_object(ans)) {
        fprintf(stderr, "brokerctl: the answer is not a JSON object\n");
        json_decref(ans);
        return EXIT_UNREACHABLE;
    }
    const char *status = json_string_value(json_object_get(ans, "status"));
    if (!status || strcmp(status, "success") != 0) {
        json_t *err = json_object_get(ans, "error");
        if (raw) {
            /* printed above */
        } else {
            fprintf(stderr, "brokerctl: %s: %s\n",
                    json_string_value(json_object_get(err, "code")) ?: "error",
                    json_string_value(json_object_get(err, "message")) ?: "(no message)");
        }
        json_decref(ans);
        return EXIT_ANSWER_ERROR;
    }
    if (raw)
        rc = 0;
    else if (!strcmp(cmd, "call"))
        rc = print_result(cmd, json_object_get(ans, "result"), false);
    else
        rc = print_result(cmd, json_object_get(ans, "result"), as_json);
    json_decref(ans);
    return rc;
}
