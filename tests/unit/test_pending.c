/*
 * test_pending.c - keys accepted but not in effect yet are reported when set
 * away from their defaults, and only then (so brokerd can warn about them).
 */
#include <criterion/criterion.h>
#include <string.h>

#include "pending.h"

struct seen {
    char keys[8][96];
    int n;
};

static void collect(void *arg, const char *key)
{
    struct seen *s = arg;
    if (s->n < 8)
        snprintf(s->keys[s->n++], sizeof s->keys[0], "%s", key);
}

Test(pending, defaults_report_nothing)
{
    struct broker_config cfg;
    cr_assert_eq(config_init_defaults(&cfg), 0);
    struct seen s = {0};
    cr_assert_eq(pending_keys(&cfg, collect, &s), 0);
    config_destroy(&cfg);
}

Test(pending, changed_pending_keys_are_named)
{
    const char *doc = "{\"backends\":[{\"name\":\"a\",\"address\":\"unix:/x\",\"pool_size\":2},"
                      "{\"name\":\"b\",\"address\":\"unix:/y\",\"health\":{\"interval_ms\":700}}],"
                      "\"cache\":{\"ttl_ms\":9000},\"rate_limit\":{\"max_inflight\":999},"
                      "\"scripts\":{\"policy\":\"allow\"},\"compat_listen\":\"127.0.0.1:9\"}";
    struct broker_config cfg = {0};
    char err[256];
    cr_assert_eq(config_load_string(&cfg, doc, strlen(doc), NULL, err, sizeof err), 0, "%s", err);
    struct seen s = {0};
    cr_assert_eq(pending_keys(&cfg, collect, &s), 0,
                 "every key is in effect now, compat_listen and scripts included");
    config_destroy(&cfg);
}

/* The README documents every configuration key (in effect, or accepted and
 * pending): a key added to the table without a README line fails here. */
Test(pending, readme_names_every_key)
{
    FILE *f = fopen(BROKER_SOURCE_DIR "/README.md", "r");
    cr_assert_not_null(f, "cannot open README.md");
    static char text[1 << 17];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    size_t keys = config_key_count();
    cr_assert_gt(keys, 40);
    for (size_t i = 0; i < keys; i++) {
        const struct config_key *k = config_key_at(i);
        char quoted[128];
        snprintf(quoted, sizeof quoted, "`%s`", k->name);
        cr_expect_not_null(strstr(text, quoted), "README.md does not mention %s", quoted);
    }
}
