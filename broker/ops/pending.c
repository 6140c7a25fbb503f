/*
 * pending.c - find configured keys whose feature is not built yet.
 *
 * Both the effective configuration and the embedded defaults are dumped to
 * JSON by config.c (the one place that knows every key) and compared at the
 * pending paths, so this file holds only the list of what is pending.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pending.h"

/* Top-level (or section) paths not in effect yet. */
static const char *const pending_top[] = {
    NULL, /* every key is in effect: the list ends here */
};

static json_t *dump(const struct broker_config *cfg)
{
    char *text = NULL;
    if (config_dump_json(cfg, &text) < 0)
        return NULL;
    json_t *j = json_loads(text, 0, NULL);
    free(text);
    return j;
}

/* "a.b" inside object o. */
static json_t *at(json_t *o, const char *path)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ".", &save); tok && o; tok = strtok_r(NULL, ".", &save))
        o = json_object_get(o, tok);
    return o;
}

int pending_keys(const struct broker_config *cfg, void (*fn)(void *arg, const char *key),
                 void *arg)
{
    struct broker_config def;
    if (config_init_defaults(&def) < 0)
        return -ENOMEM;
    json_t *cur = dump(cfg), *dflt = dump(&def);
    config_destroy(&def);
    int n = -ENOMEM;
    if (!cur || !dflt)
        goto out;
    n = 0;
    for (size_t i = 0; pending_top[i]; i++)
        if (!json_equal(at(cur, pending_top[i]), at(dflt, pending_top[i]))) {
            fn(arg, pending_top[i]);
            n++;
        }
out:
    json_decref(cur);
    json_decref(dflt);
    return n;
}
