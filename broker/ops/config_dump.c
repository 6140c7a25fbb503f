/*
 * config_dump.c - the effective config as JSON (config_dump_json): one loop
 * over the rows, each value written by its type, sections rebuilt from the
 * dotted names, secret values redacted. The output loads back to an equal
 * config (the config fuzzer checks dump -> load -> dump).
 */
#include "config.h"
#include "config_priv.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

/* --- the effective config as JSON -------------------------------------- */

static json_t *table_json(const struct config_table *t, const void *base);

static json_t *list_json(const struct config_key *k, const void *base)
{
    const void *p = config_ctarget(k, base);
    const struct broker_config *cfg = base;
    size_t n = k->type == CONFIG_T_ID_LIST    ? ((const struct config_idlist *)p)->n
               : k->type == CONFIG_T_STR_LIST ? ((const struct config_strlist *)p)->n
                                              : cfg->nbackends;
    json_t *arr = json_array();

    for (size_t i = 0; arr && i < n; i++) {
        json_t *e;
        if (k->type == CONFIG_T_ID_LIST)
            e = json_integer(((const struct config_idlist *)p)->v[i]);
        else if (k->type == CONFIG_T_STR_LIST)
            e = json_string(((const struct config_strlist *)p)->v[i]);
        else
            e = table_json(&config_backend_table, &cfg->backends[i]);
        if (json_array_append_new(arr, e)) {
            json_decref(arr);
            arr = NULL;
        }
    }
    return arr;
}

static json_t *value_json(const struct config_key *k, const void *base)
{
    const void *p = config_ctarget(k, base);
    char buf[CONFIG_HOST_MAX + 16];

    switch (k->type) {
    case CONFIG_T_U32:
        return json_integer(*(const uint32_t *)p);
    case CONFIG_T_SIZE:
        return json_integer((json_int_t) * (const uint64_t *)p);
    case CONFIG_T_MS:
        return json_integer(*(const int64_t *)p);
    case CONFIG_T_STRING: {
        const char *s = *(char *const *)p;
        return s ? json_string(s) : json_null();
    }
    case CONFIG_T_ENUM:
        return json_string(k->enum_names[*(const int *)p]);
    case CONFIG_T_MODE:
        snprintf(buf, sizeof(buf), "%04o", (unsigned)*(const mode_t *)p);
        return json_string(buf);
    case CONFIG_T_ADDRESS:
    case CONFIG_T_ADDRESS_OPT:
        if (((const struct config_address *)p)->kind == CONFIG_ADDR_NONE)
            return json_null();
        config_address_format(p, buf, sizeof(buf));
        return json_string(buf);
    case CONFIG_T_ID_LIST:
    case CONFIG_T_STR_LIST:
    case CONFIG_T_BACKENDS:
        return list_json(k, base);
    }
    return NULL;
}

/* Set obj[dotted] = v (stolen), creating the sections on the way. */
static int set_dotted(json_t *obj, const char *dotted, json_t *v)
{
    const char *dot;
    char seg[CONFIG_COMMAND_MAX + 1];

    while (obj && (dot = strchr(dotted, '.'))) {
        json_t *sub;
        snprintf(seg, sizeof(seg), "%.*s", (int)(dot - dotted), dotted);
        sub = json_object_get(obj, seg);
        if (!sub && json_object_set_new(obj, seg, sub = json_object()))
            sub = NULL;
        obj = sub;
        dotted = dot + 1;
    }
    if (!obj || !v) {
        json_decref(v);
        return -ENOMEM;
    }
    return json_object_set_new(obj, dotted, v) ? -ENOMEM : 0;
}

static json_t *table_json(const struct config_table *t, const void *base)
{
    json_t *obj = json_object();

    for (size_t i = 0; obj && i < t->n; i++) {
        const struct config_key *k = &t->keys[i];
        json_t *v = (k->flags & CONFIG_F_SECRET) ? json_string("<redacted>") : value_json(k, base);
        if (set_dotted(obj, k->name + strlen(t->prefix), v)) {
            json_decref(obj);
            obj = NULL;
        }
    }
    return obj;
}

int config_dump_json(const struct broker_config *cfg, char **out)
{
    json_t *root = table_json(&config_top_table, cfg);

    *out = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    return *out ? 0 : -ENOMEM;
}
