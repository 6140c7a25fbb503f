/*
 * test_validate.c - the Blender parameter table: a table of hostile (and
 * fine) requests with the expected outcome and message, one row per rule
 * and form; the query fold rewrite; paths under allowed_roots; commands
 * without rules untouched; execute_code under each scripts.policy.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "validate.h"

struct row {
    const char *line;    /* a request line */
    int want;            /* enum validate_result */
    const char *message; /* expected prefix of the message (NULL: not checked) */
};

static const struct row rows[] = {
    /* vectors: exactly three finite numbers */
    {"{\"id\":1,\"type\":\"create_object\",\"params\":{\"location\":[1,2,3]}}", VALIDATE_OK, NULL},
    {"{\"id\":1,\"type\":\"create_object\",\"params\":{\"location\":[1, 2.5e2 ,-3]}}", VALIDATE_OK, NULL},
    {"{\"id\":1,\"type\":\"create_object\",\"params\":{\"location\":[1,2]}}", VALIDATE_INVALID,
     "params.location: 2 numbers, expected 3"},
    {"{\"id\":1,\"type\":\"create_object\",\"params\":{\"location\":[1,2,3,4]}}", VALIDATE_INVALID,
     "params.location: more than 3 numbers, expected 3"},
    {"{\"id\":1,\"type\":\"create_object\",\"params\":{\"location\":[1,2,1e999]}}", VALIDATE_INVALID,
     "params.location[2]: not a finite number"},
    {"{\"id\":1,\"type\":\"modify_object\",\"params\":{\"name\":\"Cube\",\"rotation\":[1,\"2\",3]}}",
     VALIDATE_INVALID, "params.rotation[1]: not a number"},
    {"{\"id\":1,\"type\":\"modify_object\",\"params\":{\"name\":\"Cube\",\"scale\":\"big\"}}",
     VALIDATE_INVALID, "params.scale: a string, expected an array"},
    {"{\"id\":1,\"type\":\"modify_object\",\"params\":{\"name\":\"Cube\",\"scale\":[]}}",
     VALIDATE_INVALID, "params.scale: 0 numbers, expected 3"},
    {"{\"id\":1,\"type\":\"modify_object\",\"params\":{\"name\":\"Cube\",\"scale\":[[1],2,3]}}",
     VALIDATE_INVALID, "params.scale[0]: not a number"},
    {"{\"id\":1,\"type\":\"modify_object\",\"params\":{\"name\":\"Cube\",\"location\":null}}",
     VALIDATE_OK, NULL},
    /* colours: 3 or 4 numbers in [0, 1] */
    {"{\"id\":1,\"type\":\"set_material\",\"params\":{\"object_name\":\"Cube\",\"color\":[0,0.5,1]}}",
     VALIDATE_OK, NULL},
    {"{\"id\":1,\"type\":\"set_material\",\"params\":{\"object_name\":\"Cube\",\"color\":[0,0.5,1,1]}}",
     VALIDATE_OK, NULL},
    {"{\"id\":1,\"type\":\"set_material\",\"params\":{\"object_name\":\"Cube\",\"color\":[1.5,0,0]}}",
     VALIDATE_INVALID, "params.color[0]: 1.5 is outside [0, 1]"},
    {"{\"id\":1,\"type\":\"set_material\",\"params\":{\"object_name\":\"Cube\",\"color\":[0,-0.1,0]}}",
     VALIDATE_INVALID, "params.color[1]: -0.1 is outside [0, 1]"},
    {"{\"id\":1,\"type\":\"set_material\",\"params\":{\"object_name\":\"Cube\",\"color\":[1,1]}}",
     VALIDATE_INVALID, "params.color: 2 numbers, expected 3 to 4"},
    /* names: 1..63 bytes, no control characters */
    {"{\"id\":1,\"type\":\"get_object_info\",\"params\":{\"name\":\"Cube.001\"}}", VALIDATE_OK, NULL},
    {"{\"id\":1,\"type\":\"get_object_info\",\"params\":{\"name\":\"W\\u00fcrfel \\u7acb\\u65b9\"}}",
     VALIDATE_OK, NULL},
    {"{\"id\":1,\"type\":\"get_object_info\",\"params\":{}}", VALIDATE_INVALID,
     "params.name: missing (get_object_info needs it)"},
    {"{\"id\":1,\"type\":\"get_object_info\",\"params\":{\"name\":\"\"}}", VALIDATE_INVALID,
     "params.name: empty"},
    {"{\"id\":1,\"type\":\"get_object_info\",\"params\":{\"name\":\"\\u001b[2J\\u001b[31mCube\"}}",
     VALIDATE_INVALID, "params.name: control character at byte 0"},
    {"{\"id\":1,\"type\":\"get_object_info\",\"params\":{\"name\":\"Cu\\u009b31mbe\"}}",
     VALIDATE_INVALID, "params.name: control character at byte 2"},
    {"{\"id\":1,\"type\":\"get_object_info\",\"params\":{\"name\":\"a\\u007f\"}}", VALIDATE_INVALID,
     "params.name: control character at byte 1"},
    {"{\"id\":1,\"type\":\"get_object_info\",\"params\":{\"name\":\"a\\nb\"}}", VALIDATE_INVALID,
     "params.name: control character at byte 1"},
    {"{\"id\":1,\"type\":\"get_object_info\",\"params\":{\"name\":"
     "\"0123456789012345678901234567890123456789012345678901234567890123\"}}",
     VALIDATE_INVALID, "params.name: longer than 63 bytes"},
    {"{\"id\":1,\"type\":\"get_object_info\",\"params\":{\"name\":42}}", VALIDATE_INVALID,
     "params.name: a number, expected a string"},
    {"{\"id\":1,\"type\":\"get_object_info\",\"params\":{\"name\":\"A\",\"name\":\"B\"}}",
     VALIDATE_INVALID, "params.name: given more than once"},
    {"{\"id\":1,\"type\":\"delete_object\",\"params\":{\"name\":null}}", VALIDATE_INVALID,
     "params.name: null, expected a string"},
    {"{\"id\":1,\"type\":\"set_texture\",\"params\":{\"object_name\":\"Cube\",\"texture_id\":\"../x\"}}",
     VALIDATE_INVALID, "params.texture_id: only letters"},
    /* search queries */
    {"{\"id\":1,\"type\":\"search_sketchfab_models\",\"params\":{\"query\":\"red car\"}}", VALIDATE_OK,
     NULL},
    {"{\"id\":1,\"type\":\"search_sketchfab_models\",\"params\":{\"query\":\"car; rm -rf /\"}}",
     VALIDATE_INVALID, "params.query: ';' is not allowed in a search"},
    {"{\"id\":1,\"type\":\"search_sketchfab_models\",\"params\":{\"query\":\"<script>\"}}",
     VALIDATE_INVALID, "params.query: '<' is not allowed in a search"},
    {"{\"id\":1,\"type\":\"search_sketchfab_models\",\"params\":{\"query\":\"a\\u202eb\"}}",
     VALIDATE_INVALID, "params.query: character U+202E is not allowed"},
    {"{\"id\":1,\"type\":\"search_sketchfab_models\",\"params\":{\"query\":\"   \"}}",
     VALIDATE_INVALID, "params.query: empty"},
    {"{\"id\":1,\"type\":\"search_sketchfab_models\",\"params\":{\"count\":5}}", VALIDATE_INVALID,
     "params.query: missing"},
    {"{\"id\":1,\"type\":\"search_sketchfab_models\",\"params\":{\"query\":\"car\",\"count\":500}}",
     VALIDATE_INVALID, "params.count: 500 is outside [1, 100]"},
    {"{\"id\":1,\"type\":\"search_sketchfab_models\",\"params\":{\"query\":\"car\",\"count\":2.5}}",
     VALIDATE_INVALID, "params.count: 2.5 is not a whole number"},
    {"{\"id\":1,\"type\":\"search_sketchfab_models\",\"params\":{\"query\":\"car\","
     "\"downloadable\":\"yes\"}}",
     VALIDATE_INVALID, "params.downloadable: a string, expected a boolean"},
    /* paths (no allowed_roots here) */
    {"{\"id\":1,\"type\":\"get_viewport_screenshot\",\"params\":{\"filepath\":\"/tmp/shot.png\"}}",
     VALIDATE_OK, NULL},
    {"{\"id\":1,\"type\":\"get_viewport_screenshot\",\"params\":{\"filepath\":\"/tmp/../etc/passwd\"}}",
     VALIDATE_INVALID, "params.filepath: a \"..\" segment is not allowed"},
    {"{\"id\":1,\"type\":\"get_viewport_screenshot\",\"params\":{\"filepath\":\"..\"}}",
     VALIDATE_INVALID, "params.filepath: a \"..\" segment"},
    {"{\"id\":1,\"type\":\"get_viewport_screenshot\",\"params\":{\"filepath\":\"/tmp/a.png\\u0000.txt\"}}",
     VALIDATE_INVALID, "params.filepath: contains a NUL byte"},
    {"{\"id\":1,\"type\":\"get_viewport_screenshot\",\"params\":{\"filepath\":\"/tmp/\\u002e\\u002e/x\"}}",
     VALIDATE_INVALID, "params.filepath: a \"..\" segment"},
    {"{\"id\":1,\"type\":\"get_viewport_screenshot\",\"params\":{\"format\":\"gif\"}}",
     VALIDATE_INVALID, "params.format: must be one of png, jpg, jpeg"},
    {"{\"id\":1,\"type\":\"get_viewport_screenshot\",\"params\":{\"max_size\":0}}", VALIDATE_INVALID,
     "params.max_size: 0 is outside [1, 16384]"},
    /* ids, enums, urls */
    {"{\"id\":1,\"type\":\"download_polyhaven_asset\",\"params\":{\"asset_id\":\"rock_01\","
     "\"asset_type\":\"textures\",\"resolution\":\"2k\"}}",
     VALIDATE_OK, NULL},
    {"{\"id\":1,\"type\":\"download_polyhaven_asset\",\"params\":{\"asset_id\":\"rock_01\","
     "\"asset_type\":\"scripts\"}}",
     VALIDATE_INVALID, "params.asset_type: must be one of hdris, textures, models, all"},
    {"{\"id\":1,\"type\":\"download_polyhaven_asset\",\"params\":{\"asset_id\":\"a/b\","
     "\"asset_type\":\"hdris\"}}",
     VALIDATE_INVALID, "params.asset_id: only letters"},
    {"{\"id\":1,\"type\":\"download_sketchfab_model\",\"params\":{\"uid\":\"..\"}}", VALIDATE_INVALID,
     "params.uid: \".\" and \"..\" are not ids"},
    {"{\"id\":1,\"type\":\"import_generated_asset_hunyuan\",\"params\":{\"name\":\"Gen\","
     "\"zip_file_url\":\"file:///etc/passwd\"}}",
     VALIDATE_INVALID, "params.zip_file_url: must be an http:// or https:// URL"},
    {"{\"id\":1,\"type\":\"import_generated_asset_hunyuan\",\"params\":{\"name\":\"Gen\","
     "\"zip_file_url\":\"https://example.com/a.zip\"}}",
     VALIDATE_OK, NULL},
    /* commands without rules pass untouched, whatever their params */
    {"{\"id\":1,\"type\":\"get_scene_info\",\"params\":{\"location\":[1]}}", VALIDATE_OK, NULL},
    {"{\"id\":1,\"type\":\"some_future_command\",\"params\":{\"name\":\"\\u001b\"}}", VALIDATE_OK, NULL},
};

static enum validate_result check(const char *line, const struct validate_ctx *ctx,
                                  struct proto_buf *out, char *msg, size_t msglen)
{
    struct proto_request rq;
    struct proto_error pe;
    cr_assert_eq(proto_parse_request(line, strlen(line), NULL, &rq, &pe), 0, "%s: %s", line,
                 pe.msg);
    msg[0] = '\0';
    return validate_params(&rq, ctx, out, msg, msglen);
}

Test(validate, table)
{
    struct validate_ctx ctx = {.scripts = CONFIG_SCRIPTS_ALLOW};
    struct proto_buf out;
    proto_buf_init(&out);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char msg[VALIDATE_MSG_MAX];
        enum validate_result r = check(rows[i].line, &ctx, &out, msg, sizeof msg);
        cr_expect_eq((int)r, rows[i].want, "row %zu %s: got %d (%s)", i, rows[i].line, (int)r, msg);
        if (rows[i].message)
            cr_expect(strncmp(msg, rows[i].message, strlen(rows[i].message)) == 0,
                      "row %zu: message \"%s\", expected \"%s...\"", i, msg, rows[i].message);
    }
    proto_buf_free(&out);
}

Test(validate, query_whitespace_folded_into_new_params)
{
    struct validate_ctx ctx = {.scripts = CONFIG_SCRIPTS_ALLOW};
    struct proto_buf out;
    proto_buf_init(&out);
    char msg[VALIDATE_MSG_MAX];
    const char *line = "{\"id\":1,\"type\":\"search_sketchfab_models\",\"params\":{\"count\":3,"
                       "\"query\":\"  red \\t\\n  sports   car \",\"downloadable\":true}}";
    cr_assert_eq(check(line, &ctx, &out, msg, sizeof msg), VALIDATE_REWRITTEN, "%s", msg);
    const char *want = "{\"count\":3,\"query\":\"red sports car\",\"downloadable\":true}";
    cr_assert_eq(out.len, strlen(want));
    cr_assert(memcmp(out.data, want, out.len) == 0, "%.*s", (int)out.len, out.data);
    /* already folded: nothing rewritten */
    line = "{\"id\":1,\"type\":\"search_sketchfab_models\",\"params\":{\"query\":\"red car\"}}";
    cr_assert_eq(check(line, &ctx, &out, msg, sizeof msg), VALIDATE_OK, "%s", msg);
    /* over 200 characters once folded */
    char big[600];
    int n = snprintf(big, sizeof big,
                     "{\"id\":1,\"type\":\"search_sketchfab_models\",\"params\":{\"query\":\"");
    for (int i = 0; i < 201; i++)
        big[n++] = 'a';
    snprintf(big + n, sizeof big - (size_t)n, "\"}}");
    cr_assert_eq(check(big, &ctx, &out, msg, sizeof msg), VALIDATE_INVALID);
    cr_assert(strstr(msg, "201 characters, at most 200"), "%s", msg);
    proto_buf_free(&out);
}

Test(validate, paths_inside_allowed_roots)
{
    char *roots_v[] = {"/srv/renders", "/tmp/shots/"};
    struct config_strlist roots = {roots_v, 2};
    struct validate_ctx ctx = {.scripts = CONFIG_SCRIPTS_ALLOW, .allowed_roots = &roots};
    struct proto_buf out;
    proto_buf_init(&out);
    char msg[VALIDATE_MSG_MAX], line[256];
    static const struct {
        const char *path;
        int want;
    } cases[] = {
        {"/srv/renders/a.png", VALIDATE_OK},
        {"/srv/renders//x/./b.png", VALIDATE_OK},
        {"/srv/renders", VALIDATE_OK},
        {"/tmp/shots/c.png", VALIDATE_OK},
        {"/srv/renders-evil/a.png", VALIDATE_INVALID},
        {"/srv/render/a.png", VALIDATE_INVALID},
        {"/etc/passwd", VALIDATE_INVALID},
        {"renders/a.png", VALIDATE_INVALID},
        {"/srv/renders/../../etc/passwd", VALIDATE_INVALID},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(line, sizeof line,
                 "{\"id\":1,\"type\":\"get_viewport_screenshot\",\"params\":{\"filepath\":\"%s\"}}",
                 cases[i].path);
        cr_expect_eq((int)check(line, &ctx, &out, msg, sizeof msg), cases[i].want, "%s: %s",
                     cases[i].path, msg);
    }
    proto_buf_free(&out);
}

Test(validate, execute_code_follows_the_policy)
{
    struct proto_buf out;
    proto_buf_init(&out);
    char msg[VALIDATE_MSG_MAX];
    const char *ok = "{\"id\":1,\"type\":\"execute_code\",\"params\":{\"code\":"
                     "\"import bpy\\nbpy.ops.mesh.primitive_cube_add()\"}}";
    const char *bad = "{\"id\":1,\"type\":\"execute_code\",\"params\":{\"code\":"
                      "\"import os\\nos . system('rm -rf ~')\"}}";
    struct validate_ctx ctx = {.scripts = CONFIG_SCRIPTS_DENY_DANGEROUS};
    cr_expect_eq(check(ok, &ctx, &out, msg, sizeof msg), VALIDATE_OK, "%s", msg);
    cr_expect_eq(check(bad, &ctx, &out, msg, sizeof msg), VALIDATE_FORBIDDEN);
    cr_expect(strstr(msg, "deny_dangerous") != NULL, "%s", msg);
    ctx.scripts = CONFIG_SCRIPTS_ALLOW;
    cr_expect_eq(check(bad, &ctx, &out, msg, sizeof msg), VALIDATE_OK, "%s", msg);
    ctx.scripts = CONFIG_SCRIPTS_DENY_ALL;
    cr_expect_eq(check(ok, &ctx, &out, msg, sizeof msg), VALIDATE_FORBIDDEN);
    cr_expect(strstr(msg, "deny_all") != NULL, "%s", msg);
    const char *missing = "{\"id\":1,\"type\":\"execute_code\",\"params\":{}}";
    cr_expect_eq(check(missing, &ctx, &out, msg, sizeof msg), VALIDATE_INVALID);
    proto_buf_free(&out);
}

Test(validate, has_rules)
{
    cr_assert(validate_has_rules("get_object_info", 15));
    cr_assert(validate_has_rules("execute_code", 12));
    cr_assert_not(validate_has_rules("get_scene_info", 14));
    cr_assert_not(validate_has_rules("get_object_inf", 14));
}
