/*
 * fuzz_config.c - libFuzzer target: the configuration loader.
 *
 * Idea: config_load_string is what `brokerd --config`, SIGHUP and admin
 * `reload` run on an operator's file; whatever the bytes, it must not crash,
 * leak or leave a half-built config. Checked here:
 *   - failure: -EINVAL, a NUL-terminated one-line message that fits the
 *     buffer (also a tiny one), and cfg exactly as it was: its dump equals
 *     the defaults' dump taken at start;
 *   - success: config_dump_json's text loads back (it is documented to),
 *     the reloaded config dumps to the same text (round trip), and
 *     config_check_reload sees no change between the two; each backend is
 *     found by its name;
 *   - config_destroy frees everything: LeakSanitizer runs at exit and
 *     libFuzzer's -detect_leaks (on by default) checks after inputs that
 *     grew the heap.
 * Limits: no secret keys exist yet; once one does, its "<redacted>" dump
 * cannot load back equal and the round trip must skip it.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzz_check.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *defaults_dump;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct broker_config cfg;

    (void)argc;
    (void)argv;
    FUZZ_CHECK(config_init_defaults(&cfg) == 0);
    FUZZ_CHECK(config_dump_json(&cfg, &defaults_dump) == 0);
    config_destroy(&cfg);
    return 0;
}

static void check_message(const char *err, size_t cap)
{
    size_t n = strnlen(err, cap);

    FUZZ_CHECK(n < cap);
    FUZZ_CHECK(cap == 1 || n > 0);
    FUZZ_CHECK(memchr(err, '\n', n) == NULL);
}

static void check_failure(const char *text, size_t len, int rc, const struct broker_config *cfg,
                          const char *err)
{
    struct broker_config tiny_cfg;
    char tiny[12];
    char *dump = NULL;

    FUZZ_CHECK(rc == -EINVAL);
    check_message(err, 256);
    FUZZ_CHECK(config_dump_json(cfg, &dump) == 0);
    FUZZ_CHECK(strcmp(dump, defaults_dump) == 0); /* left exactly as it was */
    free(dump);

    /* A short buffer: cut, still terminated, nothing written past it. */
    memset(&tiny_cfg, 0, sizeof(tiny_cfg));
    size_t cap = 1 + len % sizeof(tiny);
    FUZZ_CHECK(config_load_string(&tiny_cfg, text, len, "fuzz", tiny, cap) == rc);
    check_message(tiny, cap);
    config_destroy(&tiny_cfg);
}

static void check_round_trip(const struct broker_config *cfg)
{
    struct broker_config again;
    char err[256] = "";
    char *dump1 = NULL, *dump2 = NULL;
    int rc;

    FUZZ_CHECK(config_dump_json(cfg, &dump1) == 0);
    memset(&again, 0, sizeof(again));
    rc = config_load_string(&again, dump1, strlen(dump1), "dump", err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "dump does not load back: %s\n%s\n", err, dump1);
    FUZZ_CHECK(rc == 0);
    FUZZ_CHECK(config_dump_json(&again, &dump2) == 0);
    if (strcmp(dump1, dump2) != 0)
        fprintf(stderr, "round trip differs:\n%s\n---\n%s\n", dump1, dump2);
    FUZZ_CHECK(strcmp(dump1, dump2) == 0);
    FUZZ_CHECK(config_check_reload(cfg, &again, err, sizeof(err)) == 0);
    FUZZ_CHECK(again.nbackends == cfg->nbackends && cfg->nbackends >= 1);
    for (size_t i = 0; i < cfg->nbackends; i++) {
        const char *name = cfg->backends[i].name;
        FUZZ_CHECK(config_find_backend(cfg, name, strlen(name)) == &cfg->backends[i]);
    }
    config_destroy(&again);
    config_destroy(&again); /* documented safe twice */
    free(dump1);
    free(dump2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    struct broker_config cfg;
    char err[256];
    int rc;

    FUZZ_CHECK(config_init_defaults(&cfg) == 0);
    memset(err, 0x55, sizeof(err));
    rc = config_load_string(&cfg, text, size, "fuzz", err, sizeof(err));
    if (rc == 0)
        check_round_trip(&cfg);
    else
        check_failure(text, size, rc, &cfg, err);
    config_destroy(&cfg);
    return 0;
}
