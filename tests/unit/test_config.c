/*
 * test_config.c - the configuration table, loader and generated outputs.
 *
 * Every error test loads into a config that already holds the defaults and
 * checks two things: the message names the full key path and the cause, and
 * the config is left exactly as it was (a failed load or reload changes
 * nothing). Run under ASan, every test also proves config_destroy frees all.
 *
 * docs/config-reference.md is checked against config_write_reference_md();
 * regenerate it with
 *   BROKER_UPDATE_DOCS=1 build/bin/test_config --filter 'config/reference_md_is_current'
 * (or brokerd --print-config-reference > docs/config-reference.md).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arena.h"
#include "cache.h"
#include "config.h"

static char err[512];

/* Load text over a fresh default config; return the rc, keep the config. */
static int load_text(struct broker_config *cfg, const char *text)
{
    err[0] = '\0';
    return config_load_string(cfg, text, strlen(text), "test.json", err, sizeof(err));
}

/* text must be refused with a message containing every fragment given. */
static void expect_error(const char *text, const char *frag1, const char *frag2)
{
    struct broker_config cfg;
    char *before, *after;

    cr_assert_eq(config_init_defaults(&cfg), 0);
    cr_assert_eq(config_dump_json(&cfg, &before), 0);
    cr_assert_eq(load_text(&cfg, text), -EINVAL, "accepted: %s", text);
    cr_expect(strstr(err, frag1) != NULL, "input %s\n  message \"%s\"\n  lacks \"%s\"", text, err,
              frag1);
    if (frag2)
        cr_expect(strstr(err, frag2) != NULL, "input %s\n  message \"%s\"\n  lacks \"%s\"", text,
                  err, frag2);
    cr_assert_eq(config_dump_json(&cfg, &after), 0);
    cr_expect_str_eq(after, before, "a failed load changed the config");
    free(before);
    free(after);
    config_destroy(&cfg);
}

static char *write_temp(const char *text)
{
    char *path = strdup("/tmp/test_config_XXXXXX");
    int fd = mkstemp(path);

    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

/* --- defaults ---------------------------------------------------------- */

Test(config, defaults_match_spec)
{
    struct broker_config cfg;
    const struct backend_config *b;

    cr_assert_eq(config_init_defaults(&cfg), 0);
    cr_expect_str_eq(cfg.listen, "broker.sock");
    cr_expect_eq(cfg.listen_mode, 0600);
    cr_expect_eq(cfg.allow_uids.n, 0);
    cr_expect_eq(cfg.allow_gids.n, 0);
    cr_expect_str_eq(cfg.admin_listen, "broker.admin.sock");
    cr_expect_eq(cfg.compat_listen.kind, CONFIG_ADDR_NONE);
    cr_expect_eq(cfg.workers, 0);
    cr_expect_eq(cfg.max_clients, 10000);
    cr_expect_eq(cfg.max_request_bytes, 1048576);
    cr_expect_eq(cfg.max_json_depth, 64);
    cr_expect_eq(cfg.shutdown_grace_ms, 10000);
    cr_expect_eq(cfg.max_client_output_bytes, 4194304);
    cr_assert_eq(cfg.nbackends, 1);
    b = &cfg.backends[0];
    cr_expect_str_eq(b->name, "blender");
    cr_expect_eq(b->address.kind, CONFIG_ADDR_TCP);
    cr_expect_eq(b->address.family, AF_INET);
    cr_expect_str_eq(b->address.host, "127.0.0.1");
    cr_expect_eq(b->address.port, 9876);
    cr_expect_eq(b->framing, CONFIG_FRAMING_JSON);
    cr_expect_eq(b->pool_size, 4);
    cr_expect_eq(b->max_queue, 1024);
    cr_expect_eq(b->connect_timeout_ms, 2000);
    cr_expect_eq(b->request_timeout_ms, 60000);
    cr_expect_eq(b->max_request_timeout_ms, 600000);
    cr_expect_eq(b->idle_timeout_ms, 10000);
    cr_expect_eq(b->max_response_bytes, 67108864);
    cr_expect_str_eq(b->health.command, "get_scene_info");
    cr_expect_eq(b->health.interval_ms, 5000);
    cr_expect_eq(b->health.timeout_ms, 10000);
    cr_expect_eq(b->health.rise, 2);
    cr_expect_eq(b->health.fall, 3);
    cr_expect_eq(b->breaker.failures, 5);
    cr_expect_eq(b->breaker.open_ms, 1000);
    cr_expect_eq(b->breaker.max_open_ms, 30000);
    cr_expect_eq(b->retry.max, 2);
    cr_expect_eq(b->retry.backoff_ms, 20);
    cr_expect_eq(cfg.cache.max_bytes, 67108864);
    cr_expect_eq(cfg.cache.max_entries, 100000);
    cr_expect_eq(cfg.cache.ttl_ms, 5000);
    cr_expect_eq(cfg.cache.max_ttl_ms, 86400000);
    cr_expect_eq(cfg.cache.serve_stale_ms, 0);
    cr_expect_eq(cfg.cache.max_object_bytes, 8388608);
    cr_expect_eq(cfg.cache.memory_watermark_bytes, 1073741824);
    cr_expect_eq(cfg.rate_limit.rate, 1000);
    cr_expect_eq(cfg.rate_limit.burst, 2000);
    cr_expect_eq(cfg.rate_limit.max_inflight_per_client, 256);
    cr_expect_eq(cfg.rate_limit.max_inflight, 65536);
    cr_expect_eq(cfg.scripts.policy, CONFIG_SCRIPTS_DENY_DANGEROUS);
    cr_expect_eq(cfg.paths.allowed_roots.n, 0);
    cr_expect_eq(cfg.log.level, LOG_LEVEL_INFO);
    cr_expect_eq(cfg.log.format, LOG_FORMAT_JSON);
    config_destroy(&cfg);
}

/* The table itself says SPEC's defaults (what --help and the docs show). */
Test(config, table_defaults_match_spec)
{
    static const char *const want[][2] = {
        {"listen", "\"broker.sock\""},
        {"listen_mode", "\"0600\""},
        {"allow_uids", "[]"},
        {"admin_listen", "\"broker.admin.sock\""},
        {"compat_listen", "null"},
        {"workers", "0"},
        {"max_clients", "10000"},
        {"max_request_bytes", "1048576"},
        {"max_json_depth", "64"},
        {"shutdown_grace_ms", "10000"},
        {"backends[].address", "\"127.0.0.1:9876\""},
        {"backends[].framing", "\"json\""},
        {"backends[].pool_size", "4"},
        {"backends[].max_queue", "1024"},
        {"backends[].connect_timeout_ms", "2000"},
        {"backends[].request_timeout_ms", "60000"},
        {"backends[].max_request_timeout_ms", "600000"},
        {"backends[].idle_timeout_ms", "10000"},
        {"backends[].max_response_bytes", "67108864"},
        {"backends[].health.command", "\"get_scene_info\""},
        {"backends[].health.interval_ms", "5000"},
        {"backends[].health.timeout_ms", "10000"},
        {"backends[].health.rise", "2"},
        {"backends[].health.fall", "3"},
        {"backends[].breaker.failures", "5"},
        {"backends[].breaker.open_ms", "1000"},
        {"backends[].breaker.max_open_ms", "30000"},
        {"backends[].retry.max", "2"},
        {"backends[].retry.backoff_ms", "20"},
        {"backends[].read_only", "[\"get_scene_info\", \"get_object_info\", \"get_*\"]"},
        {"cache.max_bytes", "67108864"},
        {"cache.max_entries", "100000"},
        {"cache.ttl_ms", "5000"},
        {"cache.max_ttl_ms", "86400000"},
        {"cache.serve_stale_ms", "0"},
        {"rate_limit.rate", "1000"},
        {"rate_limit.burst", "2000"},
        {"rate_limit.max_inflight_per_client", "256"},
        {"rate_limit.max_inflight", "65536"},
        {"scripts.policy", "\"deny_dangerous\""},
        {"paths.allowed_roots", "[]"},
        {"log.level", "\"info\""},
        {"log.format", "\"json\""},
    };
    char buf[256];

    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const struct config_key *k = config_key_find(want[i][0]);
        cr_assert_not_null(k, "no key %s", want[i][0]);
        config_key_default_str(k, buf, sizeof(buf));
        cr_expect_str_eq(buf, want[i][1], "%s", want[i][0]);
    }
    cr_expect_null(config_key_find("cache"));
    cr_expect_null(config_key_find("backends[].nope"));
}

Test(config, table_is_well_formed)
{
    size_t extras = 0;

    cr_assert_gt(config_key_count(), 40);
    cr_assert_null(config_key_at(config_key_count()));
    for (size_t i = 0; i < config_key_count(); i++) {
        const struct config_key *k = config_key_at(i);
        cr_assert_not_null(k);
        cr_expect(k->help && strlen(k->help) > 10, "%s has no help", k->name);
        cr_expect(k->min <= k->max, "%s: min > max", k->name);
        cr_expect_eq(config_key_find(k->name), k, "%s is not unique", k->name);
        if (k->type == CONFIG_T_U32 || k->type == CONFIG_T_SIZE || k->type == CONFIG_T_MS)
            cr_expect(k->def >= k->min && k->def <= k->max, "%s: default out of range", k->name);
        if (k->flags & CONFIG_F_EXTRA)
            extras++;
    }
    /* max_client_output_bytes, cache.max_object_bytes, cache.memory_watermark_bytes,
     * cache.serve_stale_ms, backends[].queue_order, metrics_listen, client_rx_buffers */
    cr_expect_eq(extras, 7);
}

/* --- loading ----------------------------------------------------------- */

static const char full_config[] =
    "{\n"
    "  \"listen\": \"/run/b/broker.sock\", \"listen_mode\": \"0660\",\n"
    "  \"allow_uids\": [1000, 1001], \"allow_gids\": [50],\n"
    "  \"admin_listen\": \"/run/b/admin.sock\", \"compat_listen\": \"127.0.0.1:9877\",\n"
    "  \"workers\": 3, \"max_clients\": 500, \"max_request_bytes\": 65536,\n"
    "  \"max_json_depth\": 32, \"shutdown_grace_ms\": 2500, \"max_client_output_bytes\": 8192,\n"
    "  \"backends\": [\n"
    "    {\"name\": \"blender\", \"address\": \"[::1]:9876\", \"framing\": \"json\",\n"
    "     \"pool_size\": 8, \"max_queue\": 16, \"connect_timeout_ms\": 100,\n"
    "     \"request_timeout_ms\": 1000, \"max_request_timeout_ms\": 2000,\n"
    "     \"idle_timeout_ms\": 300, \"max_response_bytes\": 1048576,\n"
    "     \"health\": {\"command\": \"ping\", \"interval_ms\": 1000, \"timeout_ms\": 500,\n"
    "                \"rise\": 1, \"fall\": 4},\n"
    "     \"breaker\": {\"failures\": 9, \"open_ms\": 50, \"max_open_ms\": 5000},\n"
    "     \"retry\": {\"max\": 0, \"backoff_ms\": 5},\n"
    "     \"read_only\": [\"ping\", \"get_scene_*\"]},\n"
    "    {\"name\": \"render-2\", \"address\": \"unix:/run/render.sock\", \"framing\": "
    "\"ndjson\"},\n"
    "    {\"name\": \"far\", \"address\": \"blender.example.com:80\"}\n"
    "  ],\n"
    "  \"cache\": {\"max_bytes\": 1024, \"max_entries\": 10, \"ttl_ms\": 2000,\n"
    "            \"max_ttl_ms\": 3000, \"max_object_bytes\": 512,\n"
    "            \"memory_watermark_bytes\": 0},\n"
    "  \"rate_limit\": {\"rate\": 5, \"burst\": 6, \"max_inflight_per_client\": 7,\n"
    "                 \"max_inflight\": 8},\n"
    "  \"scripts\": {\"policy\": \"deny_all\"},\n"
    "  \"paths\": {\"allowed_roots\": [\"/tmp\", \"/srv/assets\"]},\n"
    "  \"log\": {\"level\": \"debug\", \"format\": \"text\"}\n"
    "}\n";

Test(config, full_file_loads_and_round_trips)
{
    struct broker_config cfg, again;
    char *path = write_temp(full_config), *dump1, *dump2;
    const struct backend_config *b;

    cr_assert_eq(config_init_defaults(&cfg), 0);
    cr_assert_eq(config_load_file(&cfg, path, err, sizeof(err)), 0, "%s", err);
    cr_expect_str_eq(cfg.listen, "/run/b/broker.sock");
    cr_expect_eq(cfg.listen_mode, 0660);
    cr_assert_eq(cfg.allow_uids.n, 2);
    cr_expect_eq(cfg.allow_uids.v[1], 1001);
    cr_expect_eq(cfg.allow_gids.v[0], 50);
    cr_expect_eq(cfg.compat_listen.kind, CONFIG_ADDR_TCP);
    cr_expect_eq(cfg.compat_listen.port, 9877);
    cr_expect_eq(cfg.workers, 3);
    cr_expect_eq(cfg.max_client_output_bytes, 8192);
    cr_assert_eq(cfg.nbackends, 3);
    b = &cfg.backends[0];
    cr_expect_eq(b->address.family, AF_INET6);
    cr_expect_str_eq(b->address.host, "::1");
    cr_expect_eq(b->pool_size, 8);
    cr_expect_str_eq(b->health.command, "ping");
    cr_expect_eq(b->health.fall, 4);
    cr_expect_eq(b->breaker.max_open_ms, 5000);
    cr_expect_eq(b->retry.max, 0);
    cr_expect_eq(b->read_only.n, 2);
    b = &cfg.backends[1];
    cr_expect_str_eq(b->name, "render-2");
    cr_expect_eq(b->address.kind, CONFIG_ADDR_UNIX);
    cr_expect_str_eq(b->address.path, "/run/render.sock");
    cr_expect_eq(b->framing, CONFIG_FRAMING_NDJSON);
    cr_expect_eq(b->pool_size, 4, "unset backend keys take their defaults");
    cr_expect_eq(b->read_only.n, 3);
    cr_expect_eq(cfg.backends[2].address.family, AF_UNSPEC);
    cr_expect_str_eq(cfg.backends[2].address.host, "blender.example.com");
    cr_expect_eq(cfg.cache.memory_watermark_bytes, 0);
    cr_expect_eq(cfg.rate_limit.max_inflight, 8);
    cr_expect_eq(cfg.scripts.policy, CONFIG_SCRIPTS_DENY_ALL);
    cr_expect_str_eq(cfg.paths.allowed_roots.v[1], "/srv/assets");
    cr_expect_eq(cfg.log.level, LOG_LEVEL_DEBUG);
    cr_expect_eq(cfg.log.format, LOG_FORMAT_TEXT);

    /* dump -> load -> dump is a fixed point */
    cr_assert_eq(config_dump_json(&cfg, &dump1), 0);
    memset(&again, 0, sizeof(again));
    cr_assert_eq(config_load_string(&again, dump1, strlen(dump1), "dump", err, sizeof(err)), 0,
                 "%s\n%s", err, dump1);
    cr_assert_eq(config_dump_json(&again, &dump2), 0);
    cr_expect_str_eq(dump2, dump1);
    cr_expect_eq(config_check_reload(&cfg, &again, err, sizeof(err)), 0, "%s", err);
    free(dump1);
    free(dump2);
    config_destroy(&again);
    config_destroy(&cfg);
    unlink(path);
    free(path);
}

Test(config, defaults_dump_round_trips_and_empty_file_is_defaults)
{
    struct broker_config a, b;
    char *da, *db;
    json_t *root;

    cr_assert_eq(config_init_defaults(&a), 0);
    cr_assert_eq(config_dump_json(&a, &da), 0);
    root = json_loads(da, 0, NULL);
    cr_assert_not_null(root, "dump is not JSON: %s", da);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(root, "cache"), "ttl_ms")),
                 5000);
    cr_expect_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(root, "backends"), 0), "name")),
                     "blender");
    cr_expect(json_is_null(json_object_get(root, "compat_listen")));
    json_decref(root);
    cr_expect(strstr(da, "<redacted>") == NULL, "no key is secret yet");

    memset(&b, 0, sizeof(b));
    cr_assert_eq(load_text(&b, "{}"), 0, "%s", err);
    cr_assert_eq(config_dump_json(&b, &db), 0);
    cr_expect_str_eq(db, da, "an empty file means the defaults");
    free(da);
    free(db);
    config_destroy(&a);
    config_destroy(&b);
}

/* --- errors name the key ----------------------------------------------- */

#define BE0 "{\"name\": \"a\", \"address\": \"127.0.0.1:1\""

Test(config, unknown_keys)
{
    expect_error("{\"listn\": \"x\"}", "listn: unknown key", "did you mean \"listen\"");
    expect_error("{\"zzzzzzzz\": 1}", "zzzzzzzz: unknown key", NULL);
    expect_error("{\"backends\": [" BE0 ", \"pool_sise\": 3}]}",
                 "backends[0].pool_sise: unknown key", "did you mean \"pool_size\"");
    expect_error("{\"backends\": [" BE0 ", \"health\": {\"intervl_ms\": 3}}]}",
                 "backends[0].health.intervl_ms: unknown key", "\"interval_ms\"");
    expect_error("{\"cache\": {\"ttl_msx\": 1}}", "cache.ttl_msx: unknown key",
                 "did you mean \"ttl_ms\"?");
    expect_error("{\"cache\": {\"ttl_ms\": {\"x\": 1}}}", "cache.ttl_ms: expected an integer",
                 NULL);
    expect_error("{\"log\": {\"level\": \"info\", \"colour\": true}}", "log.colour: unknown key",
                 NULL);
    expect_error("{\"cache.ttl_ms\": 2000}", "cache.ttl_ms: unknown key", NULL);
    expect_error("{\"backends[].pool_size\": 2}", "backends[].pool_size: unknown key", NULL);
    expect_error("{\"backends\": [" BE0 ", \"helth\": {}}]}", "backends[0].helth: unknown key",
                 "did you mean \"health\"");
    expect_error("{\"cache\": {\"\": 1}}", "cache.\"\": unknown key", NULL);
    /* a control character in a key is not echoed raw */
    expect_error("{\"a\\nb\": 1}", "a\\x0ab: unknown key", NULL);
}

Test(config, wrong_types)
{
    expect_error("{\"workers\": \"4\"}", "workers: expected an integer, got a string", NULL);
    expect_error("{\"max_clients\": 5.5}", "max_clients: expected an integer", NULL);
    expect_error("{\"listen\": 5}", "listen: expected a string, got an integer", NULL);
    expect_error("{\"cache\": 5}", "cache: expected an object, got an integer", NULL);
    expect_error("{\"backends\": {}}", "backends: expected an array", NULL);
    expect_error("{\"backends\": [5]}", "backends[0]: expected an object", NULL);
    expect_error("{\"allow_uids\": [1, \"x\"]}", "allow_uids[1]: expected an integer", NULL);
    expect_error("{\"allow_uids\": 1}", "allow_uids: expected an array", NULL);
    expect_error("{\"paths\": {\"allowed_roots\": [\"/ok\", 3]}}",
                 "paths.allowed_roots[1]: expected a string", NULL);
    expect_error("{\"log\": {\"level\": \"verbose\"}}",
                 "log.level: \"verbose\" is not one of debug, info, warn, error", NULL);
    expect_error("{\"backends\": [" BE0 ", \"framing\": \"xml\"}]}",
                 "backends[0].framing: \"xml\" is not one of json, ndjson", NULL);
    expect_error("{\"scripts\": {\"policy\": null}}", "scripts.policy: expected a string", NULL);
    expect_error("{\"backends\": [{\"name\": \"a\", \"address\": null}]}",
                 "backends[0].address: expected a string, got null", NULL);
    expect_error("[1, 2]", "(top level): expected an object", NULL);
}

Test(config, out_of_range)
{
    expect_error("{\"backends\": [" BE0 "}, {\"name\": \"b\", \"address\": \"unix:/x\", "
                 "\"pool_size\": 0}]}",
                 "backends[1].pool_size: 0 is below the minimum 1", NULL);
    expect_error("{\"max_json_depth\": 5000}", "max_json_depth: 5000 is above the maximum 1024",
                 NULL);
    expect_error("{\"cache\": {\"max_bytes\": -1}}", "cache.max_bytes: -1 is below the minimum 0",
                 NULL);
    expect_error("{\"cache\": {\"ttl_ms\": 10}}", "cache.ttl_ms: 10 is below the minimum 1000",
                 NULL);
    expect_error("{\"allow_gids\": [4294967295]}", "allow_gids[0]: 4294967295 is above", NULL);
    expect_error("{\"backends\": [" BE0 ", \"retry\": {\"max\": 11}}]}",
                 "backends[0].retry.max: 11 is above the maximum 10", NULL);
    expect_error("{\"workers\": 99999999999999999999}", "test.json: line 1 column",
                 "too big integer");
}

/* Found by fuzz_config (tests/fuzz/config/regress-syntax-error-newline):
 * jansson quotes the bad token raw, and the message must stay one line. */
Test(config, syntax_error_is_one_printable_line)
{
    expect_error("{\"a\\\n\": 1}", "invalid escape", "\\x0a");
    cr_expect(strchr(err, '\n') == NULL, "message spans lines: %s", err);
    /* regress-address-reason-newline: the address parser's reason quotes the host */
    expect_error("{\"compat_listen\": \"[::\\n1]:9876\"}", "is not an IPv6 address", "\\x0a");
    cr_expect(strchr(err, '\n') == NULL, "message spans lines: %s", err);
}

/*
 * Issue 15, 4: the cache.* rows are the cache's own limits. Every value the
 * table accepts, cache_create accepts (max_object_bytes used to go to 4 GiB,
 * where cache_create refuses above 2 GiB); the keys marked reloadable are
 * exactly those cache_reconfigure applies; the watermark's help says which
 * figure is compared (stats.allocated, not resident).
 */
Test(config, cache_rows_match_the_cache)
{
    const struct config_key *obj = config_key_find("cache.max_object_bytes");
    cr_assert_not_null(obj);
    cr_expect_eq(obj->max, (int64_t)CACHE_MAX_OBJECT_LIMIT);
    expect_error("{\"cache\": {\"max_object_bytes\": 2147483649}}",
                 "cache.max_object_bytes: 2147483649 is above the maximum 2147483648", NULL);
    cr_expect_leq(config_key_find("cache.max_entries")->max, (int64_t)CACHE_MAX_ENTRIES_LIMIT);
    cr_expect_eq(config_key_find("cache.ttl_ms")->min, CACHE_TTL_MIN_MS);
    cr_expect_eq(config_key_find("cache.max_ttl_ms")->min, CACHE_TTL_MIN_MS);

    /* The extremes of every row make a cache (max_bytes kept small: the
     * tables are sized from it). */
    struct broker_config cfg;
    cr_assert_eq(config_init_defaults(&cfg), 0);
    cr_assert_eq(load_text(&cfg, "{\"cache\": {\"max_bytes\": 16777216, "
                                 "\"max_entries\": 100000000, \"ttl_ms\": 31536000000, "
                                 "\"max_ttl_ms\": 31536000000, \"serve_stale_ms\": 86400000, "
                                 "\"max_object_bytes\": 2147483648, "
                                 "\"memory_watermark_bytes\": 1125899906842624}}"),
                 0, "%s", err);
    struct cache_config cc;
    cache_config_default(&cc);
    cc.max_bytes = cfg.cache.max_bytes;
    cc.max_entries = cfg.cache.max_entries;
    cc.ttl_ms = cfg.cache.ttl_ms;
    cc.max_ttl_ms = cfg.cache.max_ttl_ms;
    cc.stale_ms = cfg.cache.serve_stale_ms;
    cc.max_object_bytes = cfg.cache.max_object_bytes;
    cc.memory_watermark_bytes = cfg.cache.memory_watermark_bytes;
    unsigned arena = 0;
    struct cache *c = NULL;
    cr_assert_eq(arena_create(&arena), 0);
    cr_expect_eq(cache_create(&cc, arena, &c), 0, "the table's maxima refused by the cache");
    cc.max_entries = 1;
    cc.ttl_ms = CACHE_TTL_MIN_MS;
    cc.max_ttl_ms = CACHE_TTL_MIN_MS;
    cc.max_object_bytes = 1;
    cc.memory_watermark_bytes = 0;
    cr_expect_eq(cache_reconfigure(c, &cc), -EINVAL, "max_entries is not reloadable");
    cc.max_entries = cfg.cache.max_entries;
    cr_expect_eq(cache_reconfigure(c, &cc), 0, "the table's minima refused by the cache");
    cache_free(c);
    arena_destroy(arena);
    config_destroy(&cfg);

    static const char *const reloadable[] = {"cache.ttl_ms", "cache.max_ttl_ms",
                                             "cache.max_object_bytes",
                                             "cache.memory_watermark_bytes"};
    size_t n = 0;
    for (size_t i = 0; i < config_key_count(); i++) {
        const struct config_key *k = config_key_at(i);
        if (strncmp(k->name, "cache.", 6) != 0 || !(k->flags & CONFIG_F_RELOAD))
            continue;
        bool known = false;
        for (size_t j = 0; j < sizeof(reloadable) / sizeof(reloadable[0]); j++)
            known |= strcmp(k->name, reloadable[j]) == 0;
        cr_expect(known, "%s is marked reloadable but cache_reconfigure cannot apply it", k->name);
        n++;
    }
    cr_expect_eq(n, sizeof(reloadable) / sizeof(reloadable[0]));
    const struct config_key *stale = config_key_find("cache.serve_stale_ms");
    cr_assert_not_null(stale);
    cr_expect_eq(stale->flags & CONFIG_F_RELOAD, 0);
    cr_expect_eq(stale->max, CACHE_MAX_STALE_MS);
    const char *help = config_key_find("cache.memory_watermark_bytes")->help;
    cr_expect(strstr(help, "stats.allocated") != NULL && strstr(help, "resident") == NULL, "%s",
              help);
}

Test(config, serve_stale_ms)
{
    struct broker_config cfg;
    cr_assert_eq(config_init_defaults(&cfg), 0);
    cr_assert_eq(load_text(&cfg, "{\"cache\": {\"serve_stale_ms\": 30000}}"), 0, "%s", err);
    cr_expect_eq(cfg.cache.serve_stale_ms, 30000);
    config_destroy(&cfg);
    expect_error("{\"cache\": {\"serve_stale_ms\": -1}}",
                 "cache.serve_stale_ms: -1 is below the minimum 0", NULL);
    expect_error("{\"cache\": {\"serve_stale_ms\": 86400001}}",
                 "cache.serve_stale_ms: 86400001 is above the maximum 86400000", NULL);

    struct broker_config cur, next;
    cr_assert_eq(config_init_defaults(&cur), 0);
    cr_assert_eq(config_init_defaults(&next), 0);
    cr_assert_eq(load_text(&next, "{\"cache\": {\"serve_stale_ms\": 5000}}"), 0, "%s", err);
    cr_expect_eq(config_check_reload(&cur, &next, err, sizeof(err)), -EINVAL);
    cr_expect(strstr(err, "cache.serve_stale_ms: changed") == err, "%s", err);
    config_destroy(&cur);
    config_destroy(&next);
}

Test(config, cross_field_rules)
{
    expect_error("{\"backends\": [" BE0 ", \"request_timeout_ms\": 9000, "
                 "\"max_request_timeout_ms\": 8000}]}",
                 "backends[0].request_timeout_ms: 9000 exceeds max_request_timeout_ms", NULL);
    expect_error("{\"backends\": [" BE0 ", \"breaker\": {\"open_ms\": 900, "
                 "\"max_open_ms\": 800}}]}",
                 "backends[0].breaker.open_ms", "exceeds");
    expect_error("{\"cache\": {\"ttl_ms\": 7000, \"max_ttl_ms\": 6000}}",
                 "cache.ttl_ms: 7000 exceeds cache.max_ttl_ms", NULL);
    expect_error("{\"rate_limit\": {\"max_inflight_per_client\": 10, \"max_inflight\": 5}}",
                 "rate_limit.max_inflight_per_client", "exceeds");
    expect_error("{\"admin_listen\": \"broker.sock\"}", "admin_listen", "client socket");
    expect_error("{\"compat_listen\": \"unix:broker.sock\"}", "compat_listen", NULL);
}

Test(config, socket_modes)
{
    expect_error("{\"listen_mode\": \"0666\"}", "listen_mode: \"0666\" allows more than 0770",
                 NULL);
    expect_error("{\"listen_mode\": \"0400\"}", "listen_mode: \"0400\" must include 0600", NULL);
    expect_error("{\"listen_mode\": \"rw\"}", "listen_mode: \"rw\" is not an octal mode", NULL);
    expect_error("{\"listen_mode\": 600}", "listen_mode: expected an octal string", NULL);
    expect_error("{\"listen\": \"\"}", "listen: must not be empty", NULL);
    char text[200] = "{\"listen\": \"";
    size_t o = strlen(text);
    memset(text + o, 'p', 108); /* one byte too many for sun_path */
    memcpy(text + o + 108, "\"}", 3);
    expect_error(text, "listen: is 108 bytes; a socket path may have at most 107", NULL);
}

static void expect_bad_address(const char *addr, const char *frag)
{
    char text[512];

    snprintf(text, sizeof(text), "{\"backends\": [{\"name\": \"a\", \"address\": \"%s\"}]}", addr);
    expect_error(text, "backends[0].address: invalid address", frag);
}

Test(config, bad_addresses)
{
    char longpath[160];

    expect_bad_address("localhost", "missing \":port\" (expected host:port");
    expect_bad_address("", "empty address");
    expect_bad_address("127.0.0.1:0", "port must be a number in 1..65535");
    expect_bad_address("127.0.0.1:65536", "port must be");
    expect_bad_address("127.0.0.1:http", "port must be");
    expect_bad_address("127.0.0.1:", "port must be");
    expect_bad_address(":9876", "missing host");
    expect_bad_address("::1:9876", "needs brackets");
    expect_bad_address("[::1]9876", "expected [ipv6]:port");
    expect_bad_address("[zz::q]:1", "is not an IPv6 address");
    expect_bad_address("256.1.1.1:80", "is not an IPv4 address");
    expect_bad_address("bad_host!:80", "neither an IP address nor a valid host name");
    expect_bad_address("-lead.example:80", "valid host name");
    expect_bad_address("unix:", "needs a path");
    memset(longpath, 'p', sizeof(longpath));
    memcpy(longpath, "unix:/", 6);
    longpath[5 + 108] = '\0'; /* path of 108 bytes */
    expect_bad_address(longpath, "socket path is 108 bytes, the maximum is 107");
    expect_error("{\"backends\": [{\"name\": \"a\", \"address\": 9876}]}",
                 "backends[0].address: expected a string, got an integer", NULL);
    expect_error("{\"compat_listen\": \"nope\"}", "compat_listen: invalid address", NULL);
}

Test(config, good_addresses)
{
    static const char *const ok[][2] = {
        {"127.0.0.1:9876", "127.0.0.1:9876"},   {"[::1]:1", "[::1]:1"},
        {"[fe80::1]:65535", "[fe80::1]:65535"}, {"blender.local:9876", "blender.local:9876"},
        {"localhost:1", "localhost:1"},         {"unix:/run/b.sock", "unix:/run/b.sock"},
        {"unix:rel.sock", "unix:rel.sock"},     {"/abs/b.sock", "unix:/abs/b.sock"},
        {"./rel.sock", "unix:./rel.sock"},
    };
    struct config_address a;
    char why[128], out[300];

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        cr_assert_eq(config_address_parse(&a, ok[i][0], strlen(ok[i][0]), why, sizeof(why)), 0,
                     "%s: %s", ok[i][0], why);
        config_address_format(&a, out, sizeof(out));
        cr_expect_str_eq(out, ok[i][1]);
    }
    /* exactly 107 bytes is fine */
    char p[120];
    memset(p, 'x', sizeof(p));
    memcpy(p, "unix:/", 6);
    cr_expect_eq(config_address_parse(&a, p, 5 + 107, why, sizeof(why)), 0, "%s", why);
    cr_expect_eq(strlen(a.path), 107);
}

Test(config, backend_names)
{
    expect_error("{\"backends\": [" BE0 "}, {\"name\": \"a\", \"address\": \"unix:/x\"}]}",
                 "backends[1].name: duplicate backend name \"a\"", "backends[0]");
    expect_error("{\"backends\": [{\"name\": \"bad name\", \"address\": \"unix:/x\"}]}",
                 "backends[0].name: \"bad name\" is not a valid backend name", NULL);
    expect_error("{\"backends\": [{\"name\": \"\", \"address\": \"unix:/x\"}]}", "backends[0].name",
                 "1..64");
    expect_error("{\"backends\": [{\"name\": \"x0123456789012345678901234567890123456789012345"
                 "678901234567890123\", \"address\": \"unix:/x\"}]}",
                 "backends[0].name", "1..64");
    expect_error("{\"backends\": [{\"address\": \"unix:/x\"}]}",
                 "backends[0].name: required key missing", NULL);
    expect_error("{\"backends\": [{\"name\": \"a\"}]}", "backends[0].address: required key missing",
                 NULL);
    expect_error("{\"backends\": []}", "backends: at least one backend is required", NULL);
    expect_error("{\"backends\": [" BE0 ", \"health\": {\"command\": \"Get Info\"}}]}",
                 "backends[0].health.command: \"Get Info\" is not a command name", NULL);
}

Test(config, read_only_entries_are_validated)
{
    expect_error("{\"backends\": [" BE0 ", \"read_only\": [\"*\"]}]}", "backends[0].read_only[0]",
                 "every command");
    expect_error("{\"backends\": [" BE0 ", \"read_only\": [\"ok\", \"Get_x\"]}]}",
                 "backends[0].read_only[1]: \"Get_x\" is neither", NULL);
    expect_error("{\"backends\": [" BE0 ", \"read_only\": [\"g*t\"]}]}", "backends[0].read_only[0]",
                 NULL);
    expect_error("{\"paths\": {\"allowed_roots\": [\"rel/dir\"]}}",
                 "paths.allowed_roots[0]: \"rel/dir\" is not an absolute path", NULL);
    expect_error("{\"paths\": {\"allowed_roots\": [\"/a/../etc\"]}}", "paths.allowed_roots[0]",
                 "\"..\" component");
}

Test(config, malformed_json_names_line_and_column)
{
    struct broker_config cfg;
    char *path = write_temp("{\n  \"listen\": \"x\",\n  \"workers\": ,\n}\n");
    char want[128];

    cr_assert_eq(config_init_defaults(&cfg), 0);
    cr_assert_eq(config_load_file(&cfg, path, err, sizeof(err)), -EINVAL);
    snprintf(want, sizeof(want), "%s: line 3 column 14: unexpected token", path);
    cr_expect(strstr(err, want) == err, "message \"%s\", want \"%s...\"", err, want);
    cr_expect_str_eq(cfg.listen, "broker.sock");
    unlink(path);
    free(path);
    expect_error("{\"workers\": 1, \"workers\": 2}", "test.json: line 1", "duplicate object key");
    expect_error("", "test.json: line 1 column 0", NULL);
    expect_error("{} {}", "test.json: line 1", "end of file expected");
    config_destroy(&cfg);
}

Test(config, missing_file_and_directory)
{
    struct broker_config cfg = {0};

    cr_expect_eq(config_load_file(&cfg, "/nonexistent/brokerd.json", err, sizeof(err)), -ENOENT);
    cr_expect_str_eq(err, "/nonexistent/brokerd.json: No such file or directory");
    cr_expect_eq(config_load_file(&cfg, "/tmp", err, sizeof(err)), -EISDIR);
    cr_expect_str_eq(err, "/tmp: Is a directory");
    cr_expect_null(cfg.listen, "a zeroed config stays zeroed on failure");
    config_destroy(&cfg);
}

Test(config, failed_load_keeps_previous_config)
{
    struct broker_config cfg;

    cr_assert_eq(config_init_defaults(&cfg), 0);
    cr_assert_eq(load_text(&cfg, "{\"workers\": 2, \"backends\": [" BE0 "}]}"), 0, "%s", err);
    /* fails late: after backends and workers were parsed into the scratch */
    cr_assert_eq(load_text(&cfg, "{\"workers\": 5, \"backends\": [{\"name\": \"z\", \"address\": "
                                 "\"unix:/z\"}], \"log\": {\"level\": \"loud\"}}"),
                 -EINVAL);
    cr_expect_eq(cfg.workers, 2);
    cr_assert_eq(cfg.nbackends, 1);
    cr_expect_str_eq(cfg.backends[0].name, "a");
    config_destroy(&cfg);
}

/* --- queries ----------------------------------------------------------- */

Test(config, read_only_rules)
{
    struct broker_config cfg;
    const struct backend_config *b;
    const char *longer = "get_scene_info_and_more";

    cr_assert_eq(config_init_defaults(&cfg), 0);
    b = &cfg.backends[0];
    cr_expect(config_is_read_only(b, "get_scene_info", 14));
    cr_expect(config_is_read_only(b, "get_object_info", 15));
    cr_expect(config_is_read_only(b, "get_viewport_screenshot", 23));
    cr_expect(config_is_read_only(b, "get_polyhaven_status", 20));
    cr_expect(!config_is_read_only(b, "execute_code", 12));
    cr_expect(!config_is_read_only(b, "create_object", 13));
    cr_expect(!config_is_read_only(b, "ge", 2));
    cr_expect(!config_is_read_only(b, "", 0));
    cr_expect(config_is_read_only(b, longer, 14), "length-bounded, not NUL-bounded");

    cr_assert_eq(load_text(&cfg, "{\"backends\": [" BE0 ", \"read_only\": [\"ping\", "
                                 "\"get_scene_*\"]}, {\"name\": \"b\", \"address\": \"unix:/b\", "
                                 "\"read_only\": []}]}"),
                 0, "%s", err);
    b = &cfg.backends[0];
    cr_expect(config_is_read_only(b, "ping", 4));
    cr_expect(!config_is_read_only(b, "pingx", 5));
    cr_expect(!config_is_read_only(b, "pin", 3));
    cr_expect(config_is_read_only(b, "get_scene_info", 14));
    cr_expect(!config_is_read_only(b, "get_object_info", 15));
    cr_expect(!config_is_read_only(&cfg.backends[1], "get_scene_info", 14));
    config_destroy(&cfg);
}

Test(config, find_backend)
{
    struct broker_config cfg;

    cr_assert_eq(config_init_defaults(&cfg), 0);
    cr_assert_eq(load_text(&cfg, "{\"backends\": [" BE0 "}, {\"name\": \"ab\", \"address\": "
                                 "\"unix:/b\"}]}"),
                 0, "%s", err);
    cr_expect_eq(config_find_backend(&cfg, "a", 1), &cfg.backends[0]);
    cr_expect_eq(config_find_backend(&cfg, "abc", 2), &cfg.backends[1]);
    cr_expect_null(config_find_backend(&cfg, "abc", 3));
    cr_expect_null(config_find_backend(&cfg, "", 0));
    config_destroy(&cfg);
}

Test(config, reload_check)
{
    struct broker_config cur, next;

    cr_assert_eq(config_init_defaults(&cur), 0);
    cr_assert_eq(config_init_defaults(&next), 0);
    cr_assert_eq(load_text(&next, "{\"log\": {\"level\": \"debug\"}, \"cache\": {\"ttl_ms\": "
                                  "2000}, \"backends\": [{\"name\": \"blender\", \"address\": "
                                  "\"127.0.0.1:9876\", \"request_timeout_ms\": 5}]}"),
                 0, "%s", err);
    cr_expect_eq(config_check_reload(&cur, &next, err, sizeof(err)), 0, "%s", err);

    cr_assert_eq(load_text(&next, "{\"listen\": \"other.sock\"}"), 0, "%s", err);
    cr_expect_eq(config_check_reload(&cur, &next, err, sizeof(err)), -EINVAL);
    cr_expect(strstr(err, "listen: changed, but it cannot be reloaded") == err, "%s", err);

    cr_assert_eq(load_text(&next, "{\"workers\": 3}"), 0, "%s", err);
    cr_expect_eq(config_check_reload(&cur, &next, err, sizeof(err)), -EINVAL);
    cr_expect(strstr(err, "workers: changed, but it cannot be reloaded") == err, "%s", err);

    /* A pool resize, a new address and a different list of backends are a
     * reload's business (reload.c), not a restart's. */
    cr_assert_eq(load_text(&next, "{\"backends\": [{\"name\": \"blender\", \"address\": "
                                  "\"127.0.0.2:9876\", \"pool_size\": 9}]}"),
                 0, "%s", err);
    cr_expect_eq(config_check_reload(&cur, &next, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(load_text(&next, "{\"backends\": [{\"name\": \"other\", \"address\": "
                                  "\"127.0.0.1:9876\"}]}"),
                 0, "%s", err);
    cr_expect_eq(config_check_reload(&cur, &next, err, sizeof(err)), 0, "%s", err);
    config_destroy(&cur);
    config_destroy(&next);
}

Test(config, destroy_is_safe_everywhere)
{
    struct broker_config cfg = {0};

    config_destroy(&cfg); /* zeroed */
    config_destroy(NULL);
    cr_assert_eq(config_init_defaults(&cfg), 0);
    config_destroy(&cfg);
    config_destroy(&cfg); /* twice */
    cr_expect_null(cfg.backends);
    cr_assert_eq(load_text(&cfg, "{\"backends\": [{\"name\": \"x\"}]}"), -EINVAL);
    config_destroy(&cfg); /* after a failed load into a zeroed config */
    cr_assert_eq(load_text(&cfg, full_config), 0, "%s", err);
    config_destroy(&cfg);
}

/* --- generated outputs ------------------------------------------------- */

static char *capture(int (*fn)(FILE *), void (*vfn)(FILE *))
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    cr_assert_not_null(f);
    if (fn)
        cr_assert_eq(fn(f), 0);
    else
        vfn(f);
    fclose(f);
    return buf;
}

Test(config, help_and_markdown_mention_every_key)
{
    char *help = capture(NULL, config_print_help);
    char *md = capture(config_write_reference_md, NULL);
    char want[160];

    for (size_t i = 0; i < config_key_count(); i++) {
        const struct config_key *k = config_key_at(i);
        snprintf(want, sizeof(want), "  %s  (", k->name);
        cr_expect(strstr(help, want) != NULL, "--help lacks %s", k->name);
        snprintf(want, sizeof(want), "| `%s` |", k->name);
        cr_expect(strstr(md, want) != NULL, "reference lacks %s", k->name);
    }
    cr_expect(strstr(help, "backends[].pool_size  (integer; default 4; 1..1024; reloadable)") != NULL, "%s",
              help);
    cr_expect(strstr(md, "*extra*") != NULL);
    free(help);
    free(md);
}

/* docs/config-reference.md must be the generator's current output. */
Test(config, reference_md_is_current)
{
    char path[4096], *want = capture(config_write_reference_md, NULL), *have = NULL;
    const char *src = __FILE__, *cut = strstr(src, "/tests/unit/");
    size_t cap = 0;
    FILE *f;

    if (src[0] != '/' || !cut)
        cr_skip_test("__FILE__ (%s) does not locate the source tree", src);
    snprintf(path, sizeof(path), "%.*s/docs/config-reference.md", (int)(cut - src), src);
    if (getenv("BROKER_UPDATE_DOCS")) {
        f = fopen(path, "w");
        cr_assert_not_null(f, "%s: %s", path, strerror(errno));
        cr_assert_eq(config_write_reference_md(f), 0);
        cr_assert_eq(fclose(f), 0);
    }
    f = fopen(path, "r");
    cr_assert_not_null(f, "%s missing; run BROKER_UPDATE_DOCS=1 test_config", path);
    cr_assert(getdelim(&have, &cap, '\0', f) >= 0);
    fclose(f);
    cr_expect_str_eq(have, want,
                     "%s is stale; regenerate it with BROKER_UPDATE_DOCS=1 "
                     "test_config --filter 'config/reference_md_is_current'",
                     path);
    free(have);
    free(want);
}

Test(config, metrics_listen)
{
    struct broker_config cur, next;

    cr_assert_eq(config_init_defaults(&cur), 0);
    cr_expect_eq(cur.metrics_listen.kind, CONFIG_ADDR_NONE, "off by default");
    cr_assert_eq(config_init_defaults(&next), 0);
    cr_assert_eq(load_text(&next, "{\"metrics_listen\": \"127.0.0.1:9464\"}"), 0, "%s", err);
    cr_expect_eq(next.metrics_listen.kind, CONFIG_ADDR_TCP);
    cr_expect_eq(next.metrics_listen.port, 9464);
    cr_expect_eq(config_check_reload(&cur, &next, err, sizeof(err)), -EINVAL);
    cr_expect(strstr(err, "metrics_listen: changed") == err, "%s", err);
    cr_assert_eq(load_text(&next, "{\"metrics_listen\": \"[::1]:9464\"}"), 0, "%s", err);
    config_destroy(&cur);
    config_destroy(&next);
    expect_error("{\"metrics_listen\": \"unix:/run/m.sock\"}", "metrics_listen", "host:port");
    expect_error("{\"metrics_listen\": \"127.0.0.1\"}", "metrics_listen", "port");
}
