/*
 * main.c - brokerd's command line: load the configuration (embedded
 * defaults, or --config FILE), set up logging, build the broker, run it
 * until SIGTERM/SIGINT, tear everything down, exit 0.
 *
 * Exit codes: 0 clean shutdown; 1 runtime failure; 2 bad command line or
 * configuration (the message names the key or the cause).
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "config.h"
#include "log.h"
#include "pending.h"

#define BROKERD_VERSION "0.1.0"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: brokerd [--config FILE] [--listen PATH] [--backend [NAME=]ADDRESS]...\n"
            "               [--workers N] [--log-level LEVEL] [--check-config]\n"
            "               [--print-config-reference] [--help] [--version]\n"
            "\n"
            "A socket broker: many local clients (NDJSON over a Unix socket) share a few\n"
            "persistent backend connections (for example Blender's MCP add-on socket).\n"
            "\n"
            "  --config FILE             JSON configuration; without it the embedded\n"
            "                            defaults apply (listen on ./broker.sock, one\n"
            "                            backend \"blender\" at 127.0.0.1:9876)\n"
            "  --listen PATH             the client socket (key listen)\n"
            "  --backend [NAME=]ADDRESS  replaces the configured backends with this one\n"
            "                            (repeat for more; names default to blender,\n"
            "                            backend2, ...; other keys keep their defaults)\n"
            "  --workers N               worker threads (key workers; 0 = CPUs)\n"
            "  --log-level LEVEL         debug, info, warn or error (key log.level)\n"
            "                            Flags apply on top of --config and are checked\n"
            "                            like the file: errors name the key.\n"
            "  --check-config            validate the configuration and exit\n"
            "  --print-config-reference  print every configuration key as Markdown\n"
            "  --help                    this text and the configuration keys\n"
            "  --version                 print the version\n"
            "\n"
            "Try it: printf '{\"id\":1,\"type\":\"get_scene_info\"}\\n' | socat - UNIX:broker.sock\n"
            "Signals: SIGTERM/SIGINT drain in-flight requests (shutdown_grace_ms), then exit 0;\n"
            "SIGHUP reloads the configuration (the file and these flags, read again; a bad\n"
            "one is refused and the running one kept); SIGUSR1 stops accepting clients.\n"
            "\n"
            "Configuration keys:\n");
    config_print_help(out);
}

/* Command-line settings, applied on top of the file. */
struct flags {
    const char *listen, *workers, *log_level;
    const char *backends[CONFIG_BACKENDS_MAX];
    size_t nbackends;
};

static bool flags_any(const struct flags *f)
{
    return f->listen || f->workers || f->log_level || f->nbackends;
}

/* Overlay the flags on cfg through the configuration's own JSON (dump, set,
 * load): they are validated by the same code as a file, and an error names
 * the key. 0, or -EINVAL with err set (cfg unchanged). */
static int apply_flags(struct broker_config *cfg, const struct flags *f, char *err, size_t errlen)
{
    char *text = NULL;
    if (config_dump_json(cfg, &text) < 0) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    json_t *doc = json_loads(text, 0, NULL);
    free(text);
    if (!doc) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    if (f->listen)
        json_object_set_new(doc, "listen", json_string(f->listen));
    if (f->workers) {
        char *end;
        errno = 0;
        long long n = strtoll(f->workers, &end, 10);
        if (errno || *end || end == f->workers) {
            snprintf(err, errlen, "--workers: \"%s\" is not a whole number", f->workers);
            json_decref(doc);
            return -EINVAL;
        }
        json_object_set_new(doc, "workers", json_integer(n));
    }
    if (f->log_level)
        json_object_set_new(json_object_get(doc, "log"), "level", json_string(f->log_level));
    if (f->nbackends) {
        json_t *arr = json_array();
        for (size_t i = 0; i < f->nbackends; i++) {
            const char *v = f->backends[i], *eq = strchr(v, '=');
            char name[CONFIG_NAME_MAX + 16];
            /* NAME=ADDRESS when a '=' comes before any ':' (addresses have one) */
            if (eq && eq != v && (size_t)(eq - v) < sizeof name &&
                !memchr(v, ':', (size_t)(eq - v))) {
                snprintf(name, sizeof name, "%.*s", (int)(eq - v), v);
                v = eq + 1;
            } else if (i == 0) {
                snprintf(name, sizeof name, "blender");
            } else {
                snprintf(name, sizeof name, "backend%zu", i + 1);
            }
            json_array_append_new(arr, json_pack("{s:s,s:s}", "name", name, "address", v));
        }
        json_object_set_new(doc, "backends", arr);
    }
    text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    int rc = text ? config_load_string(cfg, text, strlen(text), "command line", err, errlen)
                  : -ENOMEM;
    free(text);
    return rc;
}

/* Where the configuration comes from, for reloads (SIGHUP, admin reload):
 * the same file and the same flags, read again. */
struct source {
    const char *config_path;
    const struct flags *fl;
};

static int load_config(void *arg, struct broker_config *out, char *err, size_t errlen)
{
    const struct source *src = arg;
    struct broker_config cfg;
    if (config_init_defaults(&cfg) < 0) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int rc = 0;
    if (src->config_path && (rc = config_load_file(&cfg, src->config_path, err, errlen)) < 0) {
        config_destroy(&cfg);
        return rc;
    }
    if (flags_any(src->fl) && (rc = apply_flags(&cfg, src->fl, err, errlen)) < 0) {
        config_destroy(&cfg);
        return rc;
    }
    *out = cfg;
    return 0;
}

static void warn_pending(void *arg, const char *key)
{
    (void)arg;
    log_write(LOG_LEVEL_WARN, "configuration key is accepted but not in effect in this version",
              LOG_CSTR("key", key));
}

int main(int argc, char **argv)
{
    const char *config_path = NULL;
    bool check_only = false;
    struct flags fl = {0};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            config_path = argv[++i];
        } else if (!strncmp(argv[i], "--config=", 9)) {
            config_path = argv[i] + 9;
        } else if (!strcmp(argv[i], "--listen") && i + 1 < argc) {
            fl.listen = argv[++i];
        } else if (!strcmp(argv[i], "--workers") && i + 1 < argc) {
            fl.workers = argv[++i];
        } else if (!strcmp(argv[i], "--log-level") && i + 1 < argc) {
            fl.log_level = argv[++i];
        } else if (!strcmp(argv[i], "--backend") && i + 1 < argc) {
            if (fl.nbackends == CONFIG_BACKENDS_MAX) {
                fprintf(stderr, "brokerd: at most %d --backend\n", CONFIG_BACKENDS_MAX);
                return 2;
            }
            fl.backends[fl.nbackends++] = argv[++i];
        } else if (!strcmp(argv[i], "--check-config")) {
            check_only = true;
        } else if (!strcmp(argv[i], "--print-config-reference")) {
            return config_write_reference_md(stdout) == 0 ? 0 : 1;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--version")) {
            printf("brokerd %s\n", BROKERD_VERSION);
            return 0;
        } else {
            fprintf(stderr, "brokerd: unknown argument '%s' (try --help)\n", argv[i]);
            return 2;
        }
    }

    struct broker_config cfg;
    char err[512] = "";
    struct source src = {config_path, &fl};
    int lrc = load_config(&src, &cfg, err, sizeof err);
    if (lrc == -ENOMEM) {
        fprintf(stderr, "brokerd: out of memory\n");
        return 1;
    }
    if (lrc < 0) {
        fprintf(stderr, "brokerd: configuration refused: %s\n", err);
        return 2;
    }
    if (check_only) {
        printf("brokerd: configuration %s%s is valid\n", config_path ? config_path : "(defaults)",
               flags_any(&fl) ? " with the command-line flags" : "");
        config_destroy(&cfg);
        return 0;
    }
    log_set_level(cfg.log.level);
    log_set_format(cfg.log.format);
    pending_keys(&cfg, warn_pending, NULL);

    struct broker *b = NULL;
    int rc = broker_create(&b, &cfg, err, sizeof err); /* takes cfg over */
    if (rc < 0) {
        log_write(LOG_LEVEL_ERROR, "cannot start", LOG_CSTR("reason", err));
        fprintf(stderr, "brokerd: cannot start: %s\n", err);
        return rc == -EINVAL ? 2 : 1;
    }
    broker_set_loader(b, load_config, &src);
    rc = broker_run(b);
    broker_free(b);
    if (rc < 0) {
        fprintf(stderr, "brokerd: stopped on error: %s\n", strerror(-rc));
        return 1;
    }
    return 0;
}
