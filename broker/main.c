/*
 * main.c - brokerd's command line: load the configuration (embedded
 * defaults, or --config FILE), set up logging, build the broker, run it
 * until SIGTERM/SIGINT, tear everything down, exit 0.
 *
 * Exit codes: 0 clean shutdown; 1 runtime failure; 2 bad command line or
 * configuration (the message names the key or the cause).
 */
#include <errno.h>
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
            "usage: brokerd [--config FILE] [--check-config] [--print-config-reference]\n"
            "               [--help] [--version]\n"
            "\n"
            "A socket broker: many local clients (NDJSON over a Unix socket) share a few\n"
            "persistent backend connections (for example Blender's MCP add-on socket).\n"
            "\n"
            "  --config FILE             JSON configuration; without it the embedded\n"
            "                            defaults apply (listen on ./broker.sock, one\n"
            "                            backend \"blender\" at 127.0.0.1:9876)\n"
            "  --check-config            validate the configuration and exit\n"
            "  --print-config-reference  print every configuration key as Markdown\n"
            "  --help                    this text and the configuration keys\n"
            "  --version                 print the version\n"
            "\n"
            "Try it: printf '{\"id\":1,\"type\":\"get_scene_info\"}\\n' | socat - UNIX:broker.sock\n"
            "Signals: SIGTERM/SIGINT drain in-flight requests (shutdown_grace_ms), then exit 0.\n"
            "\n"
            "Configuration keys:\n");
    config_print_help(out);
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
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            config_path = argv[++i];
        } else if (!strncmp(argv[i], "--config=", 9)) {
            config_path = argv[i] + 9;
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
    if (config_init_defaults(&cfg) < 0) {
        fprintf(stderr, "brokerd: out of memory\n");
        return 1;
    }
    if (config_path && config_load_file(&cfg, config_path, err, sizeof err) < 0) {
        fprintf(stderr, "brokerd: configuration refused: %s\n", err);
        config_destroy(&cfg);
        return 2;
    }
    if (check_only) {
        printf("brokerd: configuration %s is valid\n", config_path ? config_path : "(defaults)");
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
    rc = broker_run(b);
    broker_free(b);
    if (rc < 0) {
        fprintf(stderr, "brokerd: stopped on error: %s\n", strerror(-rc));
        return 1;
    }
    return 0;
}
