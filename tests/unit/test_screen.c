/*
 * test_screen.c - the execute_code screener: a table of evasions written as
 * the JSON string token a client sends (escapes, \u letters, surrogate
 * pairs, fullwidth and mathematical letters, CRLF, tabs, continuations,
 * comments between tokens), each refused under its rule; a corpus of
 * ordinary bpy scripts (tests/fuzz/screen_pass/, plain Python, also seeds
 * for a fuzzer) that must pass, JSON-encoded here twice (UTF-8 as is, and
 * all-ASCII with \u escapes as the broker forwards it); the allow and
 * deny_all policies; invalid JSON strings; a 1 MiB script (time logged,
 * not asserted); the bounds (nesting) and the why line.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "screen.h"

#define DENY  CONFIG_SCRIPTS_DENY_DANGEROUS
#define ALLOW CONFIG_SCRIPTS_ALLOW
#define DALL  CONFIG_SCRIPTS_DENY_ALL

/* ---- helpers ---------------------------------------------------------- */

struct buf {
    char *p;
    size_t n, cap;
};

static void put(struct buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        cr_assert_not_null(b->p);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

/* Python source -> JSON string token. ascii: every non-ASCII character as
 * \uXXXX (surrogate pairs above U+FFFF), as the broker writes to backends. */
static struct buf json_encode(const char *src, size_t n, bool ascii)
{
    struct buf b = {0};
    put(&b, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)src[i];
        char esc[16];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            put(&b, esc, 2);
            i++;
        } else if (c == '\n' || c == '\t' || c == '\r') {
            esc[0] = '\\';
            esc[1] = c == '\n' ? 'n' : c == '\t' ? 't' : 'r';
            put(&b, esc, 2);
            i++;
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            put(&b, esc, 6);
            i++;
        } else if (c < 0x80 || !ascii) {
            put(&b, (const char *)&src[i], 1);
            i++;
        } else {
            unsigned cp, len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
            cp = c & (0x7F >> len);
            for (unsigned k = 1; k < len; k++)
                cp = cp << 6 | ((unsigned char)src[i + k] & 0x3F);
            if (cp >= 0x10000) {
                cp -= 0x10000;
                snprintf(esc, sizeof esc, "\\u%04x\\u%04x", 0xD800 + (cp >> 10),
                         0xDC00 + (cp & 0x3FF));
                put(&b, esc, 12);
            } else {
                snprintf(esc, sizeof esc, "\\u%04x", cp);
                put(&b, esc, 6);
            }
            i += len;
        }
    }
    put(&b, "\"", 1);
    return b;
}

/* The JSON token "<inner>" */
static int screen_inner(const char *inner, enum config_scripts_policy pol, char *why, size_t wl)
{
    struct buf b = {0};
    put(&b, "\"", 1);
    put(&b, inner, strlen(inner));
    put(&b, "\"", 1);
    int rc = screen_script(b.p, b.n, pol, why, wl);
    free(b.p);
    return rc;
}

static const char *rule_of(const char *why)
{
    static char rule[64];
    const char *p = strstr(why, "(rule \"");
    if (!p)
        return "";
    p += 7;
    size_t n = strcspn(p, "\"");
    snprintf(rule, sizeof rule, "%.*s", (int)n, p);
    return rule;
}

/* ---- evasions that must be refused ------------------------------------ */

/* Each row: the JSON string token's inside (C-escaped: "\\n" is the JSON
 * escape \n), and the rule that must refuse it. */
static const struct refusal {
    const char *json, *rule;
} refusals[] = {
    /* os.system and its spellings */
    {"import os\\nos.system('id')", "os-exec"},
    {"import os;os.system('id')", "os-exec"},
    {"import os\\nos . system ('id')", "os-exec"},
    {"import os\\r\\nos\\t.\\tsystem('id')", "os-exec"},
    {"import os\\nos.\\\\\\nsystem('id')", "os-exec"},        /* os.\<newline>system */
    {"import os\\n(os # comment\\n .system)('id')", "os-exec"}, /* comment between tokens */
    {"import os\\n\\u006fs.sys\\u0074em('id')", "os-exec"},    /* \u escapes of letters */
    {"import os\\n\\uff4f\\uff53.\\uff53\\uff59\\uff53\\uff54\\uff45\\uff4d('id')", "os-exec"},
    {"import os\\nｏｓ.ｓｙｓｔｅｍ('id')", "os-exec"}, /* fullwidth, raw UTF-8 */
    {"import os\\nos.popen('id').read()", "os-exec"},
    {"import os\\nos.execv('/bin/sh', ['sh'])", "os-exec"},
    {"import os\\nos.spawnlp(os.P_WAIT, 'ls', 'ls')", "os-exec"},
    {"import os\\nos.posix_spawn('/bin/sh', [], {})", "os-exec"},
    {"import os\\nos.fork()", "os-exec"},
    {"import posix\\nposix.system('id')", "os-exec"},
    {"print(f\\\"{os.system('id')}\\\")", "os-exec"}, /* inside an f-string field */
    {"import os\\nos.kill(1, 9)", "os-kill"},
    {"import signal", "os-kill"},
    {"import os\\nos.remove('/etc/passwd')", "file-delete"},
    {"import os\\nos.unlink(p)", "file-delete"},
    {"import os\\nos.rmdir(p)", "file-delete"},
    {"import shutil\\nshutil.rmtree('/')", "file-delete"},
    {"from pathlib import Path\\nPath(p).unlink()", "file-delete"},
    {"from pathlib import Path\\nPath(p).unlink(missing_ok=True)", "file-delete"},
    {"Path(p).rmdir()", "file-delete"},
    {"import os\\nos.rename(a, b)", "file-write"},
    {"from shutil import move\\nmove(a, b)", "file-write"},
    {"import shutil\\nshutil.copy(a, '/root/.bashrc')", "file-write"},
    {"Path(p).write_text('x')", "file-write"},
    {"import tarfile\\ntarfile.open(p).extractall('/')", "file-write"},
    /* subprocess and friends */
    {"import subprocess\\nsubprocess.run(['ls'])", "subprocess"},
    {"from subprocess import *", "subprocess"},
    {"from subprocess import Popen as P", "subprocess"},
    {"import multiprocessing", "subprocess"},
    {"import socket", "network"},
    {"import requests\\nrequests.get(u)", "network"},
    {"import urllib.request", "network"},
    {"from urllib.request import urlopen", "network"},
    {"from urllib import request", "network"},
    {"import ctypes\\nctypes.CDLL(None)", "ctypes"},
    {"import importlib\\nimportlib.import_module('os')", "importlib"},
    {"from importlib import import_module as im", "importlib"},
    {"import sys\\nsys.modules['os'].system('id')", "sys-modules"},
    /* eval, exec, compile, and strings decoded into them */
    {"eval('1+1')", "eval-exec"},
    {"exec('import os')", "eval-exec"},
    {"compile('x', 'f', 'exec')", "eval-exec"},
    {"e = eval\\ne('1')", "eval-exec"},
    {"import base64\\nexec(base64.b64decode('aW1wb3J0IG9z'))", "eval-exec"},
    {"exec(bytes.fromhex('6f73').decode())", "eval-exec"},
    {"exec(''.join([chr(111), chr(115)]))", "eval-exec"},
    {"x = 1if True else eval('2')", "eval-exec"}, /* number lexed as Python does */
    {"ｅｖａｌ('1')", "eval-exec"},
    {"\\ud835\\udc1e\\ud835\\udc2f\\ud835\\udc1a\\ud835\\udc25('1')", "eval-exec"}, /* bold */
    {"print(f\\\"\\\\{eval('1')}\\\")", "eval-exec"}, /* \{ does not escape the brace */
    {"print(f\\\"{f'{eval(1)}'}\\\")", "eval-exec"}, /* nested f-strings */
    {"print(f'{x!r:>{eval(\\\"9\\\")}}')", "eval-exec"}, /* a field in a format spec */
    {"import code", "eval-exec"},
    {"import timeit\\ntimeit.timeit(s)", "eval-exec"},
    {"ns['exec']('x')", "eval-exec"},
    {"import pickle\\npickle.loads(b)", "pickle"},
    {"import marshal", "pickle"},
    /* the machinery */
    {"__import__('os').system('id')", "dunder-import"},
    {"__import__('o'+'s')", "dunder-import"},
    {"getattr(__import__('o'+'s'), 'system')('id')", "dunder-import"},
    {"\\u005f\\u005fimport\\u005f\\u005f('os')", "dunder-import"},
    {"__ｉｍｐｏｒｔ__('os')", "dunder-import"},
    {"print(f'{__import__(\\\"os\\\")}')", "dunder-import"},
    {"__builtins__['exec']('x')", "builtins"},
    {"__builtins__.__dict__['ev'+'al']('x')", "builtins"},
    {"import builtins\\nbuiltins.exec('x')", "builtins"},
    {"bpy.app.driver_namespace['__builtins__']", "builtins"},
    {"globals()['__builtins__']", "namespace"},
    {"vars(bpy)", "namespace"},
    {"locals()", "namespace"},
    {"().__class__.__base__.__subclasses__()", "introspection"},
    {"f.__globals__['os']", "introspection"},
    {"(lambda: 0).__code__", "introspection"},
    {"1.0.__class__.__subclasses__()", "introspection"}, /* a number then .name */
    {"print.__self__", "introspection"},
    {"'{0.__init__.__globals__}'.format(x)", "introspection"},
    {"import sys\\nsys._getframe(0)", "introspection"},
    {"import gc\\ngc.get_objects()", "introspection"},
    {"import inspect", "introspection"},
    {"getattr(x, \\\"__glob\\\" \\\"als__\\\")", "introspection"}, /* implicit concat */
    {"getattr(bpy, name)", "getattr-computed"},
    {"getattr(bpy, 'sys' + 'tem')", "getattr-computed"},
    {"getattr(x, f'{a}')", "getattr-computed"},
    {"g = getattr\\ng(x, 'y')", "getattr-computed"},
    {"import operator\\noperator.attrgetter(n)(x)", "getattr-computed"},
    {"getattr(x, *names)", "getattr-computed"},
    {"getattr(pathlib, 'system')", "os-exec"},
    /* open for writing */
    {"open('/tmp/x', 'w')", "open-write"},
    {"open('/tmp/x', 'a')", "open-write"},
    {"open('/tmp/x', 'r+')", "open-write"},
    {"open('/tmp/x', \\\"w\\\" \\\"b\\\")", "open-write"},
    {"open('/tmp/x', mode='x')", "open-write"},
    {"open(p, m)", "open-write"},
    {"open(p, 'w' if a else 'r')", "open-write"},
    {"open(p, *args)", "open-write"},
    {"f = open\\nf(p, 'w')", "open-write"},
    {"import io\\nio.open(p, 'wb')", "open-write"},
    {"import codecs\\ncodecs.open(p, 'w', 'utf-8')", "open-write"},
    {"import zipfile\\nzipfile.ZipFile(p, 'w')", "open-write"},
    {"Path(p).open('a')", "open-write"},
    {"Path(p).open(mode=m)", "open-write"},
    {"open(\\tp,\\r\\n 'w')", "open-write"},
    /* names kept visible */
    {"import os as o\\no.system('id')", "module-alias"},
    {"if True: import sys as s", "module-alias"},
    {"from pathlib import os as o", "module-alias"},
    {"from operator import attrgetter as ag", "module-alias"},
    {"import os\\nx = os\\nx.system('id')", "module-value"},
    {"import os\\nf(os)", "module-value"},
    {"from os import system as s\\ns('id')", "os-exec"},
    {"from os import *\\nsystem('id')", "star-import"},
    {"from os import (path, system)", "os-exec"},
    {"import pathlib\\npathlib.os.system('id')", "module-reexport"},
    {"import pathlib\\npathlib.Path.__init__.__globals__", "introspection"},
    {"tempfile._os.system('id')", "module-reexport"},
    /* Blender */
    {"bpy.ops.wm.quit_blender()", "quit-blender"},
    {"import sys\\nsys.exit(0)", "quit-blender"},
    {"exit()", "quit-blender"},
    {"raise SystemExit", "quit-blender"},
    {"t = bpy.data.texts.new('t')\\nt.write(code)\\nt.as_module()", "blender-run-script"},
    {"bpy.ops.text.run_script()", "blender-run-script"},
    {"bpy.ops.script.python_file_run(filepath=p)", "blender-run-script"},
    {"bpy.utils.execfile(p)", "blender-run-script"},
    {"bpy.ops.preferences.addon_install(filepath=p)", "blender-run-script"},
    {"bpy.context.preferences.filepaths.use_scripts_auto_execute = True", "blender-run-script"},
    {"d.driver.expression = 'ev' + \\\"al(1)\\\"", "driver-expression"},
    {"d.driver.expression = \\\"exec('1')\\\"", "driver-expression"},
    {"d.driver.expression = e", "driver-expression"},
    {"d.driver.expression += 'x'", "driver-expression"},
    {"d.driver.expression = f'{v}'", "driver-expression"},
};

Test(screen, evasions_are_refused_under_their_rule)
{
    size_t n = sizeof refusals / sizeof refusals[0];
    cr_assert_geq(n, 40);
    for (size_t i = 0; i < n; i++) {
        char why[256];
        int rc = screen_inner(refusals[i].json, DENY, why, sizeof why);
        cr_expect_eq(rc, -EPERM, "row %zu passed: %s", i, refusals[i].json);
        cr_expect_str_eq(rule_of(why), refusals[i].rule, "row %zu: %s\n  why: %s", i,
                         refusals[i].json, why);
        cr_expect(strncmp(why, "execute_code refused by scripts.policy deny_dangerous: line ",
                          60) == 0,
                  "row %zu: %s", i, why);
    }
}

Test(screen, every_rule_has_a_refusal_row)
{
    for (size_t r = 1; screen_rule_names[r]; r++) {
        bool seen = strcmp(screen_rule_names[r], "too-complex") == 0; /* own test */
        for (size_t i = 0; !seen && i < sizeof refusals / sizeof refusals[0]; i++)
            seen = strcmp(refusals[i].rule, screen_rule_names[r]) == 0;
        cr_expect(seen, "no row exercises rule %s", screen_rule_names[r]);
    }
}

/* ---- ordinary scripts that must pass ----------------------------------- */

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    struct buf b = {0};
    char chunk[4096];
    size_t k;
    while ((k = fread(chunk, 1, sizeof chunk, f)) > 0)
        put(&b, chunk, k);
    fclose(f);
    *n = b.n;
    return b.p;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

Test(screen, ordinary_bpy_scripts_pass)
{
    const char *dir = BROKER_SOURCE_DIR "/tests/fuzz/screen_pass";
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "%s: %s", dir, strerror(errno));
    char *names[256];
    size_t count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && count < 256)
        if (strstr(e->d_name, ".py"))
            names[count++] = strdup(e->d_name);
    closedir(d);
    qsort(names, count, sizeof names[0], name_cmp);
    cr_assert_geq(count, 30, "pass corpus has %zu scripts", count);
    for (size_t i = 0; i < count; i++) {
        char path[512], why[256];
        size_t n;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        char *src = slurp(path, &n);
        for (int ascii = 0; ascii < 2; ascii++) {
            struct buf j = json_encode(src, n, ascii);
            int rc = screen_script(j.p, j.n, DENY, why, sizeof why);
            cr_expect_eq(rc, 0, "%s (%s) refused: %s", names[i], ascii ? "ascii" : "utf-8",
                         why);
            cr_expect_str_eq(why, "");
            cr_expect_eq(screen_script(j.p, j.n, ALLOW, why, sizeof why), 0);
            cr_expect_eq(screen_script(j.p, j.n, DALL, why, sizeof why), -EPERM);
            free(j.p);
        }
        free(src);
        free(names[i]);
    }
}

/* Lines that look close to a rule and must not trip it. */
Test(screen, near_misses_pass)
{
    static const char *const ok[] = {
        "print(\\\"os.system\\\")",
        "# os.system('id')\\nx = 1",
        "obj.location.x = 1",
        "bpy.ops.object.delete()",
        "bpy.data.objects.remove(obj)",
        "coll.objects.unlink(obj)",
        "bpy.context.preferences.system.memory_cache_limit",
        "import re\\nre.compile('a')",
        "import platform\\nplatform.system()",
        "def compile(x):\\n    return x",
        "f(exec=True)",
        "open(p)",
        "open(p, 'rb')",
        "open(file=p, mode='r', encoding='utf-8')",
        "Path(p).open()",
        "img.open(name)",
        "zipfile.ZipFile(p)",
        "x = {'system': 1}",
        "setattr(obj, prop, value)",
        "getattr(obj, 'location')",
        "getattr(obj, 'name', None)",
        "import os.path as osp\\nosp.join('a', 'b')",
        "from os import path, sep, getcwd",
        "from os.path import join as j",
        "import os as os",
        "nt = mat.node_tree\\nnt.nodes.new('ShaderNodeTexImage')",
        "requests = []\\nrequests.append(1)",
        "code = 'print(1)'\\nprint(code)",
        "d.driver.expression = 'var * 2 + sin(frame)'",
        "print(d.driver.expression)",
        "raise ValueError('x') from err",
        "größe = 1\\nprint(größe)",
        "x = 0x1f\\ny = 1_000.5e-3j",
        "s = r'\\\\d+\\\\.'",
        "print(\\\"exec\\\" in text)",
        "print('{}'.format(obj.name))",
        "print(f'{obj.__class__.__name__}')",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char why[256];
        cr_expect_eq(screen_inner(ok[i], DENY, why, sizeof why), 0, "row %zu: %s\n  why: %s",
                     i, ok[i], why);
    }
}

/* ---- policies and invalid input ----------------------------------------- */

Test(screen, allow_passes_and_deny_all_refuses_everything)
{
    char why[256];
    cr_assert_eq(screen_inner("import os\\nos.system('id')", ALLOW, why, sizeof why), 0);
    cr_assert_str_eq(why, "");
    cr_assert_eq(screen_inner("print(1)", DALL, why, sizeof why), -EPERM);
    cr_assert_str_eq(why, "execute_code refused: scripts.policy is deny_all");
    cr_assert_eq(screen_inner("", DALL, why, sizeof why), -EPERM);
    cr_assert_eq(screen_inner("", DENY, why, sizeof why), 0, "the empty script");
    cr_assert_eq(screen_inner("", ALLOW, why, sizeof why), 0);
}

Test(screen, invalid_json_strings_are_einval_under_every_policy)
{
    static const struct {
        const char *token;
        size_t len; /* 0: strlen */
    } bad[] = {
        {"\"\\x41\"", 0},          /* not a JSON escape */
        {"\"\\u12\"", 0},          /* short \u */
        {"\"\\uZZZZ\"", 0},        /* not hex */
        {"\"\\'\"", 0},            /* \' is Python, not JSON */
        {"\"\\ud800\"", 0},        /* lone high surrogate */
        {"\"\\udc00\"", 0},        /* lone low surrogate */
        {"\"\\ud800\\u0041\"", 0}, /* high then not low */
        {"\"\\udc00\\ud800\"", 0}, /* reversed pair */
        {"\"a\tb\"", 0},           /* raw tab */
        {"\"a\nb\"", 0},           /* raw newline */
        {"\"a\rb\"", 0},           /* raw CR */
        {"\"\x01\"", 0},           /* raw control */
        {"\"a\0b\"", 5},           /* raw NUL */
        {"\"abc", 0},              /* no closing quote */
        {"\"abc\\\"", 0},          /* the last quote is escaped */
        {"\"a\"b\"", 0},           /* a bare quote inside */
        {"\"a\" ", 0},             /* bytes after the closing quote */
        {"abc\"", 0},              /* no opening quote */
        {"\"", 0},                 /* one quote */
        {"", 0},                   /* nothing */
        {"\"\xc0\xaf\"", 0},       /* overlong UTF-8 */
        {"\"\xed\xa0\x80\"", 0},   /* an encoded surrogate */
        {"\"\xf4\x90\x80\x80\"", 0}, /* above U+10FFFF */
        {"\"\xe2\x82\"", 0},       /* truncated sequence */
        {"\"\x80\"", 0},           /* a lone continuation byte */
        {"\"\\", 0},               /* ends in an escape */
    };
    static const enum config_scripts_policy pols[] = {DENY, ALLOW, DALL};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        for (size_t p = 0; p < 3; p++) {
            char why[256];
            size_t len = bad[i].len ? bad[i].len : strlen(bad[i].token);
            int rc = screen_script(bad[i].token, len, pols[p], why, sizeof why);
            cr_expect_eq(rc, -EINVAL, "row %zu policy %zu: rc %d", i, p, rc);
            cr_expect(strstr(why, "is not a valid JSON string") != NULL, "row %zu: %s", i, why);
        }
}

Test(screen, valid_escapes_decode)
{
    char why[256];
    /* \/ \b \f, a surrogate pair, U+0000: valid JSON; passes screening */
    cr_assert_eq(screen_inner("x = '\\/\\b\\f' + '\\ud83d\\ude00'", DENY, why, sizeof why), 0,
                 "%s", why);
    cr_assert_eq(screen_inner("x = 1\\u0000", DENY, why, sizeof why), 0, "%s", why);
    cr_assert_eq(screen_inner("\\u0065\\u0076\\u0061\\u006C(1)", DENY, why, sizeof why), -EPERM);
}

/* ---- the why line ----------------------------------------------------- */

Test(screen, why_names_line_and_rule_and_is_bounded)
{
    char why[256];
    int rc = screen_inner("import bpy\\r\\nx = 1\\r\\n\\r\\nimport os\\nos.system('id')", DENY,
                          why, sizeof why);
    cr_assert_eq(rc, -EPERM);
    cr_assert_str_eq(why, "execute_code refused by scripts.policy deny_dangerous: line 5: uses "
                          "os.system (rule \"os-exec\")");
    char tiny[16];
    memset(tiny, 'X', sizeof tiny);
    rc = screen_inner("eval(1)", DENY, tiny, sizeof tiny);
    cr_assert_eq(rc, -EPERM);
    cr_assert_eq(tiny[15], '\0', "cut and terminated");
    cr_assert_eq(screen_inner("eval(1)", DENY, NULL, 0), -EPERM, "no room for why is fine");
    /* a script's own text never reaches why: only names from the table */
    rc = screen_inner("getattr(x, '\\u001b[31m' + y)", DENY, why, sizeof why);
    cr_assert_eq(rc, -EPERM);
    for (const char *p = why; *p; p++)
        cr_assert(*p >= 0x20 && *p < 0x7f, "why holds byte 0x%02x", (unsigned char)*p);
}

/* ---- bounds -------------------------------------------------------------- */

Test(screen, nesting_beyond_the_bounds_is_too_complex)
{
    struct buf b = {0};
    char why[256];
    for (int i = 0; i < 40; i++) /* f"{f"{f"... nested 40 deep (3.12 grammar) */
        put(&b, "f\\\"{", 4);
    put(&b, "1", 1);
    for (int i = 0; i < 40; i++)
        put(&b, "}\\\"", 3);
    cr_assert_eq(screen_inner(b.p, DENY, why, sizeof why), -EPERM);
    cr_assert_str_eq(rule_of(why), "too-complex", "%s", why);
    b.n = 0;
    for (int i = 0; i < 20; i++)
        put(&b, "getattr(", 8);
    cr_assert_eq(screen_inner(b.p, DENY, why, sizeof why), -EPERM);
    cr_assert_str_eq(rule_of(why), "too-complex", "%s", why);
    b.n = 0;
    for (int i = 0; i < 10; i++) /* deep, but within the bounds */
        put(&b, "f'{", 3);
    put(&b, "x", 1);
    for (int i = 0; i < 10; i++)
        put(&b, "}'", 2);
    cr_assert_eq(screen_inner(b.p, DENY, why, sizeof why), 0, "%s", why);
    free(b.p);
}

Test(screen, unbalanced_and_truncated_sources_do_not_crash)
{
    static const char *const odd[] = {
        "f'{", "f'{x", "f'{x:", "f'{x:{", "'''abc", "\\\"abc", "(((((", ")))))", "]]}}", "x.",
        "import", "from", "from os", "from os import", "getattr(", "open(p, ", "\\\\",
        "f'\\\\N{", "b'\\\\x'", "'\\\\777'", "x = 0x", "1e", "1e+", "@", "$?`", "...",
    };
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        char why[256];
        int rc = screen_inner(odd[i], DENY, why, sizeof why);
        cr_expect(rc == 0 || rc == -EPERM, "row %zu: rc %d", i, rc);
    }
}

/* ---- a script at the request size limit ----------------------------------- */

static struct buf big_script(size_t target, const char *tail)
{
    static const char *const lines =
        "for i in range(10):\n"
        "    bpy.ops.mesh.primitive_cube_add(location=(i, 0, 0))  # a cube\n"
        "    obj = bpy.context.object; obj.name = f\"Cube_{i:03d}\"\n"
        "    obj.scale = (1.0, 2.0, 0.5); mats = [m.name for m in bpy.data.materials]\n"
        "print('system', \"exec\", '''open(p, 'w')''')\n";
    struct buf src = {0};
    put(&src, "import bpy\n", 11);
    while (src.n + strlen(lines) + strlen(tail) < target)
        put(&src, lines, strlen(lines));
    put(&src, tail, strlen(tail));
    struct buf j = json_encode(src.p, src.n, false);
    free(src.p);
    return j;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

Test(screen, one_mib_script)
{
    struct buf j = big_script(1u << 20, "x = 1\n");
    char why[256];
    cr_assert_gt(j.n, 1000000);
    cr_assert_leq(j.n, 1100000);
    double best = 1e9;
    for (int k = 0; k < 5; k++) {
        double t0 = now_ms();
        int rc = screen_script(j.p, j.n, DENY, why, sizeof why);
        double dt = now_ms() - t0;
        cr_assert_eq(rc, 0, "%s", why);
        best = dt < best ? dt : best;
    }
    cr_log_info("screening a %zu-byte script: %.2f ms (best of 5)", j.n, best);
    fprintf(stderr, "screen: %zu-byte script in %.2f ms (best of 5)\n", j.n, best);
    free(j.p);

    j = big_script(1u << 20, "import os\nos.system('id')\n");
    cr_assert_eq(screen_script(j.p, j.n, DENY, why, sizeof why), -EPERM);
    cr_assert_str_eq(rule_of(why), "os-exec", "%s", why);
    unsigned line = 0;
    const char *l = strstr(why, ": line ");
    cr_assert(l && sscanf(l, ": line %u:", &line) == 1, "%s", why);
    cr_assert_gt(line, 10000, "the line is the last one: %s", why);
    free(j.p);
}
