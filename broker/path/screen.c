/*
 * screen.c - the execute_code script screener (see screen.h for the contract).
 *
 * Principle: close the doors, don't chase the strings. A piece of text in a
 * Python script can only become a name or code through a small set of
 * doors: eval/exec/compile, __import__ and importlib, getattr with a
 * computed name, globals()/vars()/__dict__, __builtins__ and the
 * introspection attributes that lead back to them (__globals__,
 * __subclasses__, f_globals, ...), deserialisers (pickle, marshal) and
 * Blender's own script runners (Text.as_module, run_script, drivers). With
 * the doors refused, `'o'+'s'`, `chr(111)`, `''.join(...)`, base64 and
 * codecs only ever make strings, which are harmless, and every name that
 * is used is a token in the source. So the screener reads the source as
 * Python tokens and refuses (1) the doors themselves and (2) the dangerous
 * names that can only be reached as tokens: `os.system`, `import
 * subprocess`, `open(p, 'w')`, ... String literals are not searched for
 * dangerous names (print("os.system") passes), except where a literal is
 * used as a name: a subscript key (`ns['exec']`), the name argument of
 * getattr/attrgetter/methodcaller, an open mode, a driver expression; and
 * a literal naming a door dunder (`'{0.__globals__}'.format(f)`) is refused
 * wherever it stands.
 *
 * Pipeline, one pass, no recursion, bounded state:
 *   1. json_decode: validate the JSON string token and decode it to UTF-8
 *      (on the stack up to SCREEN_STACK_BYTES, else one malloc).
 *   2. lex_next: Python tokens. Whitespace, comments, backslash line
 *      continuations and newlines inside brackets vanish, so `os . system`,
 *      `os .\<newline> system` and `os.# c<newline>system` (in brackets) all
 *      read as os . system. Strings are decoded (escapes, implicit
 *      concatenation `"sys" "tem"` is merged by pull()). f-strings (and
 *      3.14 t-strings) become one opaque string token followed by each
 *      replacement field as code wrapped in virtual parentheses, following
 *      Python 3.12's grammar (nested quotes, nested f-strings on a bounded
 *      context stack). Numbers are lexed exactly, so `1or__import__` splits
 *      as Python splits it. Identifiers are folded as Python folds them
 *      (NFKC, PEP 3131): `ｏｓ` is `os` (table in screen_fold.h); other
 *      non-ASCII identifier characters stay non-ASCII, so such a name can
 *      never equal an ASCII name and needs no screening. Identifiers are
 *      compared exactly: Python is case-sensitive (imports check case even
 *      on case-insensitive file systems unless PYTHONCASEOK is set), and
 *      `OS.SYSTEM` could only work after binding OS to os, which needs a
 *      refused alias (module-alias) or os as a value (module-value).
 *   3. step(): one token at a time with one token of lookahead and small
 *      state: the dotted chain being read (`os.path.join`), an import
 *      statement being read, a stack of inspected calls (getattr's name
 *      argument, open's mode, unlink's arguments) and the right-hand side
 *      of a driver expression.
 *
 * Names are tracked by name, not by flow: `os`, `sys`, `shutil`, `gc` and
 * `urllib` always mean those modules, they may only be used as `mod.attr`
 * (the attribute is screened), and importing them under another name is
 * refused. So no alias table is needed and the order of definitions does
 * not matter (a function may use a name imported further down).
 *
 * What is allowed, on purpose: `import os` with os.path, os.getcwd,
 * os.listdir, os.makedirs, os.environ (reading the environment is not
 * screened: keep secrets out of Blender's reach); open() for reading;
 * chr(), join, base64, codecs.decode (strings only); sys.path, sys.version;
 * bpy.app.handlers and bpy.app.timers (their functions are screened like
 * the rest of the script and they last only for the session); Blender's own
 * file output (save_as_mainfile, exports, renders: the add-on's purpose);
 * setattr/delattr with a computed name (they cannot read a value);
 * Path.rename/Path.replace (indistinguishable from ID.rename/str.replace).
 *
 * Known limits: this is pattern screening, not a sandbox (screen.h);
 * `gc`-free object graph walks, unknown third-party modules and bugs in
 * the approximation of Python's grammar can get past it. Invalid Python is
 * not our concern: Blender refuses to run it.
 */
#include "screen.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "screen_fold.h"

/* ---- rules ------------------------------------------------------------ */

enum rule {
    R_NONE,
    R_OS_EXEC,
    R_OS_KILL,
    R_SUBPROCESS,
    R_FILE_DELETE,
    R_FILE_WRITE,
    R_OPEN_WRITE,
    R_NETWORK,
    R_CTYPES,
    R_IMPORTLIB,
    R_SYS_MODULES,
    R_EVAL_EXEC,
    R_PICKLE,
    R_DUNDER_IMPORT,
    R_BUILTINS,
    R_NAMESPACE,
    R_INTROSPECTION,
    R_GETATTR,
    R_MODULE_VALUE,
    R_MODULE_ALIAS,
    R_MODULE_REEXPORT,
    R_STAR_IMPORT,
    R_QUIT_BLENDER,
    R_BLENDER_RUN,
    R_DRIVER_EXPR,
    R_TOO_COMPLEX,
    R_COUNT,
};

const char *const screen_rule_names[] = {
    [R_NONE] = "",
    [R_OS_EXEC] = "os-exec",
    [R_OS_KILL] = "os-kill",
    [R_SUBPROCESS] = "subprocess",
    [R_FILE_DELETE] = "file-delete",
    [R_FILE_WRITE] = "file-write",
    [R_OPEN_WRITE] = "open-write",
    [R_NETWORK] = "network",
    [R_CTYPES] = "ctypes",
    [R_IMPORTLIB] = "importlib",
    [R_SYS_MODULES] = "sys-modules",
    [R_EVAL_EXEC] = "eval-exec",
    [R_PICKLE] = "pickle",
    [R_DUNDER_IMPORT] = "dunder-import",
    [R_BUILTINS] = "builtins",
    [R_NAMESPACE] = "namespace",
    [R_INTROSPECTION] = "introspection",
    [R_GETATTR] = "getattr-computed",
    [R_MODULE_VALUE] = "module-value",
    [R_MODULE_ALIAS] = "module-alias",
    [R_MODULE_REEXPORT] = "module-reexport",
    [R_STAR_IMPORT] = "star-import",
    [R_QUIT_BLENDER] = "quit-blender",
    [R_BLENDER_RUN] = "blender-run-script",
    [R_DRIVER_EXPR] = "driver-expression",
    [R_TOO_COMPLEX] = "too-complex",
    [R_COUNT] = NULL,
};

/* ---- the name table ------------------------------------------------------
 * One row per special name. A name is looked at in one of four positions:
 *   any   - wherever it stands (door dunders, frame attributes);
 *   bare  - at the start of a dotted chain, not a def/class name, not the
 *           target of a plain `=` (assignment or keyword argument);
 *   attr  - after a dot, on any receiver;
 *   key   - as a string literal used as a name: ns['exec'], the name in
 *           getattr(x, 'system'), attrgetter('__globals__').
 * `call` marks names whose call is inspected, `mod` a module (struct module).
 */
enum call_kind { C_NONE, C_GETATTR, C_METHODCALLER, C_ATTRGETTER, C_OPEN, C_UNLINK, C_EXPR };

enum mod_kind {
    M_NONE,
    M_ALL,   /* any use refused: the module is the danger */
    M_ATTRS, /* only mod.attr allowed, attr screened (mod_attrs) */
};

struct word {
    const char *name;
    uint8_t len;
    uint8_t any, bare, attr, key;
    uint8_t call;     /* enum call_kind */
    uint8_t mod;      /* enum mod_kind */
    uint8_t mod_rule; /* M_ALL: the rule */
    bool mod_bare;    /* also screened outside import statements */
};

/* any: */
#define W_ANY(n, r)          {n, sizeof n - 1, r, 0, 0, r, C_NONE, M_NONE, 0, false}
/* a builtin door: bare use, and as a key */
#define W_DOOR(n, r)         {n, sizeof n - 1, 0, r, 0, r, C_NONE, M_NONE, 0, false}
/* an attribute on any receiver (and as a key) */
#define W_ATTR(n, r)         {n, sizeof n - 1, 0, 0, r, r, C_NONE, M_NONE, 0, false}
#define W_KEY(n, r)          {n, sizeof n - 1, 0, 0, 0, r, C_NONE, M_NONE, 0, false}
#define W_CALL(n, c, k)      {n, sizeof n - 1, 0, 0, 0, k, c, M_NONE, 0, false}
#define W_MOD(n, r, bare)    {n, sizeof n - 1, 0, 0, 0, 0, C_NONE, M_ALL, r, bare}
#define W_MOD_RX(n, r, bare) {n, sizeof n - 1, 0, 0, R_MODULE_REEXPORT, R_MODULE_REEXPORT, \
                              C_NONE, M_ALL, r, bare}
#define W_MODA(n, bare)      {n, sizeof n - 1, 0, 0, 0, 0, C_NONE, M_ATTRS, 0, bare}
#define W_MODA_RX(n)         {n, sizeof n - 1, 0, 0, R_MODULE_REEXPORT, R_MODULE_REEXPORT, \
                              C_NONE, M_ATTRS, 0, true}

static const struct word words[] = {
    /* the doors: dunders and frame attributes, wherever they stand */
    W_ANY("__import__", R_DUNDER_IMPORT),
    W_ANY("__builtins__", R_BUILTINS),
    W_ANY("__builtin__", R_BUILTINS),
    W_ANY("__dict__", R_INTROSPECTION),
    W_ANY("__globals__", R_INTROSPECTION),
    W_ANY("__code__", R_INTROSPECTION),
    W_ANY("__closure__", R_INTROSPECTION),
    W_ANY("__subclasses__", R_INTROSPECTION),
    W_ANY("__bases__", R_INTROSPECTION),
    W_ANY("__base__", R_INTROSPECTION),
    W_ANY("__mro__", R_INTROSPECTION),
    W_ANY("__self__", R_INTROSPECTION),
    W_ANY("__getattribute__", R_INTROSPECTION),
    W_ANY("__loader__", R_INTROSPECTION),
    W_ANY("__spec__", R_INTROSPECTION),
    W_ANY("__reduce__", R_INTROSPECTION),
    W_ANY("__reduce_ex__", R_INTROSPECTION),
    W_ANY("__objclass__", R_INTROSPECTION),
    W_ANY("f_globals", R_INTROSPECTION),
    W_ANY("f_builtins", R_INTROSPECTION),
    W_ANY("f_locals", R_INTROSPECTION),
    W_ANY("gi_frame", R_INTROSPECTION),
    W_ANY("cr_frame", R_INTROSPECTION),
    W_ANY("ag_frame", R_INTROSPECTION),
    W_ANY("tb_frame", R_INTROSPECTION),
    /* builtin doors */
    {"eval", 4, 0, R_EVAL_EXEC, R_EVAL_EXEC, R_EVAL_EXEC, C_NONE, M_NONE, 0, false},
    {"exec", 4, 0, R_EVAL_EXEC, R_EVAL_EXEC, R_EVAL_EXEC, C_NONE, M_NONE, 0, false},
    W_DOOR("compile", R_EVAL_EXEC), /* .compile is re.compile: bare only */
    {"execfile", 8, 0, R_EVAL_EXEC, R_BLENDER_RUN, R_EVAL_EXEC, C_NONE, M_NONE, 0, false},
    W_DOOR("globals", R_NAMESPACE),
    W_DOOR("locals", R_NAMESPACE),
    W_DOOR("vars", R_NAMESPACE),
    W_DOOR("exit", R_QUIT_BLENDER),
    W_DOOR("quit", R_QUIT_BLENDER),
    W_DOOR("SystemExit", R_QUIT_BLENDER),
    W_CALL("getattr", C_GETATTR, R_GETATTR),
    W_CALL("attrgetter", C_ATTRGETTER, R_GETATTR),
    W_CALL("methodcaller", C_METHODCALLER, R_GETATTR),
    W_CALL("open", C_OPEN, R_OPEN_WRITE),
    W_CALL("fdopen", C_OPEN, R_OPEN_WRITE),
    W_CALL("ZipFile", C_OPEN, R_OPEN_WRITE),
    W_CALL("unlink", C_UNLINK, R_FILE_DELETE),
    W_CALL("expression", C_EXPR, 0),
    /* attributes, on any receiver */
    W_ATTR("popen", R_OS_EXEC),
    W_ATTR("rmdir", R_FILE_DELETE),
    W_ATTR("write_text", R_FILE_WRITE),
    W_ATTR("write_bytes", R_FILE_WRITE),
    W_ATTR("extractall", R_FILE_WRITE),
    W_ATTR("run_script", R_BLENDER_RUN),
    W_ATTR("python_file_run", R_BLENDER_RUN),
    W_ATTR("execute_preset", R_BLENDER_RUN),
    W_ATTR("as_module", R_BLENDER_RUN),
    W_ATTR("addon_install", R_BLENDER_RUN),
    W_ATTR("modules_from_path", R_BLENDER_RUN),
    W_ATTR("use_scripts_auto_execute", R_BLENDER_RUN),
    W_ATTR("driver_namespace", R_BUILTINS),
    W_ATTR("quit_blender", R_QUIT_BLENDER),
    W_KEY("system", R_OS_EXEC),
    /* modules whose attributes are screened; also refused as attributes
     * of other modules (pathlib.os) */
    W_MODA_RX("os"),
    W_MODA_RX("sys"),
    W_MODA_RX("shutil"),
    W_MODA("urllib", true),
    W_MODA("gc", true),
    W_ATTR("_os", R_MODULE_REEXPORT),
    W_ATTR("_sys", R_MODULE_REEXPORT),
    W_ATTR("_shutil", R_MODULE_REEXPORT),
    /* modules refused outright */
    W_MOD_RX("subprocess", R_SUBPROCESS, true),
    W_MOD_RX("_subprocess", R_SUBPROCESS, true),
    W_MOD("_posixsubprocess", R_SUBPROCESS, true),
    W_MOD("multiprocessing", R_SUBPROCESS, true),
    W_MOD_RX("posix", R_OS_EXEC, true),
    W_MOD_RX("nt", R_OS_EXEC, false), /* nt = node_tree is common */
    W_MOD("pty", R_OS_EXEC, true),
    W_MOD("pydoc", R_OS_EXEC, false),
    W_MOD("pipes", R_OS_EXEC, false),
    W_MOD("distutils", R_OS_EXEC, false),
    W_MOD("ensurepip", R_OS_EXEC, false),
    W_MOD("pip", R_OS_EXEC, false),
    W_MOD("signal", R_OS_KILL, false),
    W_MOD("socket", R_NETWORK, true),
    W_MOD("ssl", R_NETWORK, false),
    W_MOD("socketserver", R_NETWORK, false),
    W_MOD("http", R_NETWORK, false),
    W_MOD("ftplib", R_NETWORK, false),
    W_MOD("smtplib", R_NETWORK, false),
    W_MOD("poplib", R_NETWORK, false),
    W_MOD("imaplib", R_NETWORK, false),
    W_MOD("nntplib", R_NETWORK, false),
    W_MOD("telnetlib", R_NETWORK, false),
    W_MOD("xmlrpc", R_NETWORK, false),
    W_MOD("requests", R_NETWORK, false),
    W_MOD("urllib3", R_NETWORK, false),
    W_MOD("asyncio", R_NETWORK, false),
    W_MOD("webbrowser", R_NETWORK, false),
    W_MOD_RX("ctypes", R_CTYPES, true),
    W_MOD("_ctypes", R_CTYPES, true),
    W_MOD("cffi", R_CTYPES, false),
    W_MOD_RX("importlib", R_IMPORTLIB, true),
    W_MOD("imp", R_IMPORTLIB, false),
    W_MOD("runpy", R_IMPORTLIB, true),
    W_MOD("zipimport", R_IMPORTLIB, true),
    W_MOD("pkgutil", R_IMPORTLIB, true),
    W_MOD("addon_utils", R_IMPORTLIB, true),
    W_MOD_RX("builtins", R_BUILTINS, true),
    W_MOD("inspect", R_INTROSPECTION, false),
    W_MOD("code", R_EVAL_EXEC, false),
    W_MOD("codeop", R_EVAL_EXEC, false),
    W_MOD("timeit", R_EVAL_EXEC, false),
    W_MOD("doctest", R_EVAL_EXEC, false),
    W_MOD("pdb", R_EVAL_EXEC, false),
    W_MOD("bdb", R_EVAL_EXEC, false),
    W_MOD("profile", R_EVAL_EXEC, false),
    W_MOD("cProfile", R_EVAL_EXEC, false),
    W_MOD("trace", R_EVAL_EXEC, false),
    W_MOD("marshal", R_PICKLE, true),
    W_MOD("pickle", R_PICKLE, true),
    W_MOD("_pickle", R_PICKLE, true),
    W_MOD("cPickle", R_PICKLE, true),
    W_MOD("shelve", R_PICKLE, false),
    W_MOD("dill", R_PICKLE, false),
    W_MOD("cloudpickle", R_PICKLE, false),
};

/* Attributes of the M_ATTRS modules. A trailing '*' matches a prefix. */
static const struct mod_attr {
    const char *mod, *attr;
    uint8_t rule;
} mod_attrs[] = {
    {"os", "system", R_OS_EXEC},         {"os", "popen", R_OS_EXEC},
    {"os", "exec*", R_OS_EXEC},          {"os", "spawn*", R_OS_EXEC},
    {"os", "posix_spawn*", R_OS_EXEC},   {"os", "fork", R_OS_EXEC},
    {"os", "forkpty", R_OS_EXEC},        {"os", "startfile", R_OS_EXEC},
    {"os", "plock", R_OS_EXEC},          {"os", "kill", R_OS_KILL},
    {"os", "killpg", R_OS_KILL},         {"os", "abort", R_OS_KILL},
    {"os", "_exit", R_OS_KILL},          {"os", "remove", R_FILE_DELETE},
    {"os", "unlink", R_FILE_DELETE},     {"os", "rmdir", R_FILE_DELETE},
    {"os", "removedirs", R_FILE_DELETE}, {"os", "rename", R_FILE_WRITE},
    {"os", "renames", R_FILE_WRITE},     {"os", "replace", R_FILE_WRITE},
    {"os", "truncate", R_FILE_WRITE},    {"os", "open", R_FILE_WRITE},
    {"os", "chmod", R_FILE_WRITE},       {"os", "chown", R_FILE_WRITE},
    {"os", "lchown", R_FILE_WRITE},      {"os", "link", R_FILE_WRITE},
    {"os", "symlink", R_FILE_WRITE},     {"os", "mkfifo", R_FILE_WRITE},
    {"os", "mknod", R_FILE_WRITE},       {"sys", "modules", R_SYS_MODULES},
    {"sys", "meta_path", R_SYS_MODULES}, {"sys", "path_hooks", R_SYS_MODULES},
    {"sys", "path_importer_cache", R_SYS_MODULES},
    {"sys", "exit", R_QUIT_BLENDER},     {"sys", "_getframe", R_INTROSPECTION},
    {"sys", "_current_frames", R_INTROSPECTION},
    {"sys", "settrace", R_INTROSPECTION}, {"sys", "setprofile", R_INTROSPECTION},
    {"shutil", "rmtree", R_FILE_DELETE}, {"shutil", "move", R_FILE_WRITE},
    {"shutil", "copy", R_FILE_WRITE},    {"shutil", "copy2", R_FILE_WRITE},
    {"shutil", "copyfile", R_FILE_WRITE}, {"shutil", "copytree", R_FILE_WRITE},
    {"shutil", "copymode", R_FILE_WRITE}, {"shutil", "copystat", R_FILE_WRITE},
    {"shutil", "chown", R_FILE_WRITE},   {"shutil", "make_archive", R_FILE_WRITE},
    {"shutil", "unpack_archive", R_FILE_WRITE},
    {"urllib", "request", R_NETWORK},    {"gc", "get_objects", R_INTROSPECTION},
    {"gc", "get_referrers", R_INTROSPECTION}, {"gc", "get_referents", R_INTROSPECTION},
};

/* Receivers whose .open(file, mode) takes the mode second, like open(). */
static const char *const strict_openers[] = {"io", "codecs", "gzip", "bz2", "lzma", "tarfile",
                                             "os", "zipfile"};

/* Open addressing, built once; read-only afterwards. */
#define WORD_SLOTS 512
static uint16_t word_slot[WORD_SLOTS]; /* index + 1, 0 = empty */
static uint64_t word_lens[128];        /* by first character: lengths present */
static pthread_once_t word_once = PTHREAD_ONCE_INIT;

static uint32_t name_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static void words_build(void)
{
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        word_lens[(unsigned char)words[i].name[0] & 0x7F] |= 1ull << words[i].len;
        uint32_t h = name_hash(words[i].name, words[i].len) & (WORD_SLOTS - 1);
        while (word_slot[h])
            h = (h + 1) & (WORD_SLOTS - 1);
        word_slot[h] = (uint16_t)(i + 1);
    }
}

static const struct word *word_find(const char *s, size_t n)
{
    if (n < 2 || n > 32 || !(word_lens[(unsigned char)s[0] & 0x7F] >> n & 1))
        return NULL;
    uint32_t h = name_hash(s, n) & (WORD_SLOTS - 1);
    for (; word_slot[h]; h = (h + 1) & (WORD_SLOTS - 1)) {
        const struct word *w = &words[word_slot[h] - 1];
        if (w->len == n && memcmp(w->name, s, n) == 0)
            return w;
    }
    return NULL;
}

static uint8_t mod_attr_rule(const char *mod, const char *attr, size_t alen)
{
    for (size_t i = 0; i < sizeof mod_attrs / sizeof mod_attrs[0]; i++) {
        const struct mod_attr *m = &mod_attrs[i];
        if (strcmp(m->mod, mod) != 0)
            continue;
        size_t l = strlen(m->attr);
        if (m->attr[l - 1] == '*') {
            if (alen >= l - 1 && memcmp(m->attr, attr, l - 1) == 0)
                return m->rule;
        } else if (l == alen && memcmp(m->attr, attr, l) == 0) {
            return m->rule;
        }
    }
    return R_NONE;
}

/* ---- 1. the JSON string ------------------------------------------------ */

static int hex4(const unsigned char *p, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c - '0' < 10u)
            d = c - '0';
        else if ((c | 0x20) - 'a' < 6u)
            d = (c | 0x20) - 'a' + 10;
        else
            return -1;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

static size_t utf8_put(unsigned char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | cp >> 6);
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | cp >> 12);
        o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | cp >> 18);
    o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence at p (< end), 0 if invalid: no
 * overlongs, no encoded surrogates, nothing above U+10FFFF (RFC 3629). */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    size_t n = end - p < 4 ? (size_t)(end - p) : 4;
    if (c >= 0xC2 && c <= 0xDF)
        return n >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] >= 0xA0))
            return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] >= 0x90))
            return 0;
        return 4;
    }
    return 0;
}

/*
 * Validate the token s[0..len) as one JSON string and, when out is not
 * NULL, write its UTF-8 value there (never longer than len: every escape
 * is at least as long as what it stands for). 0 with *outlen, or -EINVAL
 * with a message in why.
 */
static int json_decode(const unsigned char *s, size_t len, unsigned char *out, size_t *outlen,
                       char *why, size_t whylen)
{
    const char *err = NULL;
    size_t o = 0, i = 1;
    if (len < 2 || s[0] != '"') {
        err = "does not start with a quote";
        goto bad;
    }
    for (;;) {
        if (i >= len) {
            err = "has no closing quote";
            goto bad;
        }
        unsigned c = s[i];
        if (c == '"') {
            if (i + 1 != len) {
                err = "has bytes after its closing quote";
                goto bad;
            }
            break;
        }
        if (c < 0x20) {
            err = "holds a raw control character";
            goto bad;
        }
        if (c < 0x80 && c != '\\') { /* a run of plain bytes */
            size_t j = i + 1;
            while (j < len && s[j] >= 0x20 && s[j] < 0x80 && s[j] != '"' && s[j] != '\\')
                j++;
            if (out)
                memcpy(out + o, s + i, j - i);
            o += j - i;
            i = j;
            continue;
        }
        if (c >= 0x80) {
            size_t n = utf8_len(s + i, s + len);
            if (n == 0) {
                err = "holds invalid UTF-8";
                goto bad;
            }
            if (out)
                memcpy(out + o, s + i, n);
            o += n, i += n;
            continue;
        }
        /* an escape */
        if (i + 1 >= len) {
            err = "has no closing quote";
            goto bad;
        }
        unsigned e = s[i + 1];
        uint32_t cp;
        int simple = e == '"' || e == '\\' || e == '/' ? (int)e
                     : e == 'b'                          ? '\b'
                     : e == 'f'                          ? '\f'
                     : e == 'n'                          ? '\n'
                     : e == 'r'                          ? '\r'
                     : e == 't'                          ? '\t'
                                                         : -1;
        if (simple >= 0) {
            if (out)
                out[o] = (unsigned char)simple;
            o++, i += 2;
            continue;
        }
        if (e != 'u' || i + 6 > len || hex4(s + i + 2, &cp) != 0) {
            err = "has an invalid escape";
            goto bad;
        }
        i += 6;
        if (cp >= 0xDC00 && cp <= 0xDFFF) {
            err = "has a lone low surrogate";
            goto bad;
        }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            uint32_t lo;
            if (i + 6 > len || s[i] != '\\' || s[i + 1] != 'u' || hex4(s + i + 2, &lo) != 0 ||
                lo < 0xDC00 || lo > 0xDFFF) {
                err = "has a lone high surrogate";
                goto bad;
            }
            i += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (out)
            o += utf8_put(out + o, cp);
        else
            o += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    }
    *outlen = o;
    return 0;
bad:
    if (whylen)
        snprintf(why, whylen, "execute_code: params.code is not a valid JSON string: it %s",
                 err);
    return -EINVAL;
}

/* ---- 2. Python tokens -------------------------------------------------- */

#define TOK_NAME_MAX 64  /* longer names match nothing in the table */
#define TOK_STR_MAX  256 /* longer string values are opaque */
#define CTX_MAX      32  /* nested f-string contexts followed */
#define CALL_MAX     16  /* nested inspected calls followed */

enum tkind { T_END, T_NL, T_NAME, T_STR, T_NUM, T_OP };

enum {
    TF_OPAQUE = 1,   /* value not known: f-string part, \N{...} */
    TF_LONG = 2,     /* value (or name) longer than kept */
    TF_NONASCII = 4, /* name holds a character that does not fold to ASCII */
};

struct tok {
    uint8_t kind, flags;
    uint16_t len;
    uint32_t line;
    char text[TOK_STR_MAX + 4];
};

enum ctx_kind {
    X_FSTR,  /* the literal part of an f-string */
    X_FIELD, /* a replacement field: code, until its '}' or ':' */
    X_SPEC,  /* a format spec: literal, nested fields, until '}' */
};

struct ctx {
    uint8_t kind, quote;
    bool triple, raw;
    int depth; /* X_FIELD: bracket depth inside its virtual '(' */
};

struct lexer {
    const unsigned char *s;
    size_t n, i;
    uint32_t line;
    int depth; /* open brackets, virtual ones included */
    int nctx;
    struct ctx ctx[CTX_MAX];
    /* a door dunder seen inside a string literal (first one) */
    uint8_t found_rule;
    uint32_t found_line;
    const char *found_name;
    /* the identifier run being read inside a string */
    char run[24];
    uint8_t runlen;
    bool run_long;
};

static inline bool is_name_ascii(unsigned c)
{
    return (c | 0x20) - 'a' < 26u || c - '0' < 10u || c == '_';
}

static inline bool is_digit(unsigned c)
{
    return c - '0' < 10u;
}

static inline unsigned at(const struct lexer *lx, size_t i)
{
    return i < lx->n ? lx->s[i] : 0;
}

static uint32_t utf8_get(const unsigned char *p, size_t *n)
{
    /* input is valid UTF-8 (json_decode checked it, escapes were encoded) */
    if (p[0] < 0xE0) {
        *n = 2;
        return (uint32_t)(p[0] & 0x1F) << 6 | (p[1] & 0x3F);
    }
    if (p[0] < 0xF0) {
        *n = 3;
        return (uint32_t)(p[0] & 0x0F) << 12 | (uint32_t)(p[1] & 0x3F) << 6 | (p[2] & 0x3F);
    }
    *n = 4;
    return (uint32_t)(p[0] & 0x07) << 18 | (uint32_t)(p[1] & 0x3F) << 12 |
           (uint32_t)(p[2] & 0x3F) << 6 | (p[3] & 0x3F);
}

/* NFKC of one identifier character, when it is ASCII. */
static const char *fold(uint32_t cp, char *one)
{
    size_t lo = 0, hi = sizeof fold_runs / sizeof fold_runs[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < fold_runs[mid].lo)
            hi = mid;
        else if (cp > fold_runs[mid].hi)
            lo = mid + 1;
        else {
            one[0] = (char)(fold_runs[mid].first + (int)(cp - fold_runs[mid].lo));
            one[1] = '\0';
            return one;
        }
    }
    for (size_t i = 0; i < sizeof fold_multis / sizeof fold_multis[0]; i++)
        if (fold_multis[i].cp == cp)
            return fold_multis[i].to;
    return NULL;
}

/* The identifier-run scanner for string contents: a run like __globals__
 * inside a literal ('{0.__globals__}'.format(f)) is a door too. */
static void run_end(struct lexer *lx)
{
    if (!lx->run_long && lx->runlen >= 4 && lx->run[0] == '_' && lx->run[1] == '_' &&
        !lx->found_rule) {
        const struct word *w = word_find(lx->run, lx->runlen);
        /* __import__ in a string is only text: format() can walk
         * attributes but not call; keys and getattr names are checked
         * where they are used */
        if (w && w->any && w->any != R_DUNDER_IMPORT) {
            lx->found_rule = w->any;
            lx->found_line = lx->line;
            lx->found_name = w->name;
        }
    }
    lx->runlen = 0;
    lx->run_long = false;
}

static inline void run_feed(struct lexer *lx, uint32_t cp)
{
    if (cp < 0x80 && is_name_ascii(cp)) {
        if (lx->runlen < sizeof lx->run)
            lx->run[lx->runlen++] = (char)cp;
        else
            lx->run_long = true;
    } else if (lx->runlen || lx->run_long) {
        run_end(lx);
    }
}

static void tok_put(struct tok *t, uint32_t cp)
{
    unsigned char b[4];
    size_t n = utf8_put(b, cp);
    if (t->len + n > TOK_STR_MAX) {
        t->flags |= TF_LONG;
        return;
    }
    memcpy(t->text + t->len, b, n);
    t->len = (uint16_t)(t->len + n);
    t->text[t->len] = '\0';
}

/* Consume a newline at i (\n, \r\n or \r) if there is one. */
static bool eat_newline(struct lexer *lx)
{
    unsigned c = at(lx, lx->i);
    if (c != '\n' && c != '\r')
        return false;
    lx->i += (c == '\r' && at(lx, lx->i + 1) == '\n') ? 2 : 1;
    lx->line++;
    return true;
}

/* Skip spaces, comments and line continuations; newlines too when
 * `nl` (inside brackets). */
static void skip_space(struct lexer *lx, bool nl)
{
    for (;;) {
        unsigned c = at(lx, lx->i);
        if (lx->i >= lx->n)
            return;
        if (c == ' ' || c == '\t' || c == '\f' || c == '\v') {
            lx->i++;
        } else if (c == '\\' && (at(lx, lx->i + 1) == '\n' || at(lx, lx->i + 1) == '\r')) {
            lx->i++;
            eat_newline(lx);
        } else if (c == '#') {
            while (lx->i < lx->n && lx->s[lx->i] != '\n' && lx->s[lx->i] != '\r')
                lx->i++;
        } else if (nl && eat_newline(lx)) {
            continue;
        } else {
            return;
        }
    }
}

struct prefix {
    bool ok, f, r, b;
    size_t len;
};

/* A string prefix (r, b, u, f, t and pairs, any case) followed by a quote
 * at i, or a bare quote. */
static struct prefix string_prefix(const struct lexer *lx, size_t i)
{
    struct prefix p = {0};
    size_t k = 0;
    for (; k < 3; k++) {
        unsigned c = at(lx, i + k) | 0x20;
        if (at(lx, i + k) == '\'' || at(lx, i + k) == '"')
            break;
        if (k == 2 || (c != 'r' && c != 'b' && c != 'u' && c != 'f' && c != 't'))
            return p;
        p.f |= c == 'f' || c == 't';
        p.r |= c == 'r';
        p.b |= c == 'b';
    }
    p.ok = true;
    p.len = k;
    return p;
}

/* One backslash escape of a non-raw string at i (the backslash). */
static void string_escape(struct lexer *lx, struct tok *t, bool bytes)
{
    size_t i = lx->i + 1;
    unsigned e = at(lx, i);
    uint32_t cp = 0;
    size_t k;
    lx->i = i + 1;
    switch (e) {
    case '\n':
    case '\r':
        lx->i = i;
        eat_newline(lx);
        return;
    case 'a': cp = 7; break;
    case 'b': cp = 8; break;
    case 'f': cp = 12; break;
    case 'n': cp = 10; break;
    case 'r': cp = 13; break;
    case 't': cp = 9; break;
    case 'v': cp = 11; break;
    case 'x':
    case 'u':
    case 'U': {
        size_t nd = e == 'x' ? 2 : e == 'u' ? 4 : 8;
        if (bytes && e != 'x')
            goto literal;
        for (k = 0; k < nd; k++) {
            unsigned c = at(lx, i + 1 + k), d;
            if (is_digit(c))
                d = c - '0';
            else if ((c | 0x20) - 'a' < 6u)
                d = (c | 0x20) - 'a' + 10;
            else
                goto literal;
            cp = cp << 4 | d;
        }
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            cp = 0xFFFD;
        lx->i = i + 1 + nd;
        break;
    }
    case 'N':
        if (bytes || at(lx, i + 1) != '{')
            goto literal;
        while (lx->i < lx->n && lx->s[lx->i] != '}' && lx->s[lx->i] != '\n')
            lx->i++;
        if (at(lx, lx->i) == '}')
            lx->i++;
        t->flags |= TF_OPAQUE;
        run_feed(lx, '?');
        return;
    default:
        if (e >= '0' && e <= '7') {
            for (k = 0; k < 3 && at(lx, i + k) >= '0' && at(lx, i + k) <= '7'; k++)
                cp = cp << 3 | (at(lx, i + k) - '0');
            lx->i = i + k;
            break;
        }
        if (e == '\\' || e == '\'' || e == '"') {
            cp = e;
            break;
        }
    literal:
        lx->i = i; /* the backslash stands for itself */
        cp = '\\';
        break;
    }
    tok_put(t, cp);
    run_feed(lx, cp);
}

/* Copy one character of string content at i into t. */
static void string_char(struct lexer *lx, struct tok *t)
{
    unsigned c = lx->s[lx->i];
    if (c < 0x80) {
        lx->i++;
        if (c == '\n' || c == '\r') {
            lx->i--;
            eat_newline(lx);
        }
        tok_put(t, c);
        run_feed(lx, c);
        return;
    }
    size_t n;
    uint32_t cp = utf8_get(lx->s + lx->i, &n);
    lx->i += n;
    tok_put(t, cp);
    run_feed(lx, cp);
}

static bool at_close(const struct lexer *lx, unsigned q, bool triple)
{
    return at(lx, lx->i) == q &&
           (!triple || (at(lx, lx->i + 1) == q && at(lx, lx->i + 2) == q));
}

/* The body of a plain (not f-) string, from after its opening quote. */
static void string_body(struct lexer *lx, struct tok *t, unsigned q, bool triple, bool raw,
                        bool bytes)
{
    while (lx->i < lx->n) {
        unsigned c = lx->s[lx->i];
        if (at_close(lx, q, triple)) {
            lx->i += triple ? 3 : 1;
            break;
        }
        if ((c == '\n' || c == '\r') && !triple)
            break; /* unterminated: Python refuses the script */
        if (c == '\\' && !raw) {
            string_escape(lx, t, bytes);
        } else if (c == '\\') { /* raw: keeps the backslash, and the quote after it */
            string_char(lx, t);
            if (lx->i < lx->n && lx->s[lx->i] != '\n' && lx->s[lx->i] != '\r')
                string_char(lx, t);
        } else {
            string_char(lx, t);
        }
    }
    run_end(lx);
}

static bool ctx_push(struct lexer *lx, struct ctx c);

/* A string starting at i with prefix p. f-strings push a context and give
 * an opaque token; plain strings are read whole, and so is every plain
 * string that follows (implicit concatenation, "sys" "tem"). */
static void lex_string(struct lexer *lx, struct tok *t, struct prefix p)
{
    t->kind = T_STR;
    for (;;) {
        lx->i += p.len;
        unsigned q = lx->s[lx->i];
        bool triple = at(lx, lx->i + 1) == q && at(lx, lx->i + 2) == q;
        lx->i += triple ? 3 : 1;
        if (p.f) {
            t->flags |= TF_OPAQUE;
            ctx_push(lx, (struct ctx){X_FSTR, (uint8_t)q, triple, p.r, 0});
            return;
        }
        string_body(lx, t, q, triple, p.r, p.b);
        size_t save_i = lx->i;
        uint32_t save_line = lx->line;
        skip_space(lx, lx->depth > 0);
        p = string_prefix(lx, lx->i);
        if (!p.ok || p.f) { /* an f-string after: the whole is opaque anyway */
            if (p.ok)
                t->flags |= TF_OPAQUE;
            lx->i = save_i;
            lx->line = save_line;
            return;
        }
    }
}

static void lex_number(struct lexer *lx)
{
    size_t i = lx->i;
    unsigned c1 = at(lx, i + 1) | 0x20;
#define DIGITS(ok)                                                       \
    while ((ok(at(lx, i))) || (at(lx, i) == '_' && ok(at(lx, i + 1)))) \
    i++
#define IS_HEX(c) (is_digit(c) || ((c) | 0x20) - 'a' < 6u)
#define IS_OCT(c) ((c) - '0' < 8u)
#define IS_BIN(c) ((c) == '0' || (c) == '1')
    if (at(lx, i) == '0' && (c1 == 'x' || c1 == 'o' || c1 == 'b')) {
        i += 2;
        if (c1 == 'x')
            DIGITS(IS_HEX);
        else if (c1 == 'o')
            DIGITS(IS_OCT);
        else
            DIGITS(IS_BIN);
    } else {
        DIGITS(is_digit);
        if (at(lx, i) == '.') {
            i++;
            DIGITS(is_digit);
        }
        if ((at(lx, i) | 0x20) == 'e') {
            size_t k = i + 1;
            if (at(lx, k) == '+' || at(lx, k) == '-')
                k++;
            if (is_digit(at(lx, k))) {
                i = k;
                DIGITS(is_digit);
            }
        }
        if ((at(lx, i) | 0x20) == 'j')
            i++;
    }
#undef DIGITS
#undef IS_HEX
#undef IS_OCT
#undef IS_BIN
    lx->i = i;
}

/* A name, folded; returns whether it was all ASCII (a string prefix can
 * only be ASCII). */
static bool lex_name(struct lexer *lx, struct tok *t)
{
    bool ascii = true;
    t->kind = T_NAME;
    while (lx->i < lx->n) {
        unsigned c = lx->s[lx->i];
        char one[2];
        const char *add = one;
        if (c < 0x80) {
            if (!is_name_ascii(c))
                break;
            if (t->len < TOK_NAME_MAX)
                t->text[t->len++] = (char)c;
            else
                t->flags |= TF_LONG;
            lx->i++;
            continue;
        } else {
            size_t n;
            uint32_t cp = utf8_get(lx->s + lx->i, &n);
            lx->i += n;
            ascii = false;
            add = fold(cp, one);
            if (!add) {
                t->flags |= TF_NONASCII;
                one[0] = '\x80';
                one[1] = '\0';
                add = one;
            }
        }
        for (; *add; add++) {
            if (t->len < TOK_NAME_MAX)
                t->text[t->len++] = *add;
            else
                t->flags |= TF_LONG;
        }
    }
    t->text[t->len] = '\0';
    return ascii;
}

static void set_op(struct tok *t, const char *op, size_t n)
{
    t->kind = T_OP;
    memcpy(t->text, op, n);
    t->text[n] = '\0';
    t->len = (uint16_t)n;
}

static void lex_op(struct lexer *lx, struct tok *t)
{
    unsigned c = lx->s[lx->i], c1 = at(lx, lx->i + 1), c2 = at(lx, lx->i + 2);
    size_t n = 1;
    switch (c) {
    case '(':
    case '[':
    case '{':
        lx->depth++;
        break;
    case ')':
    case ']':
    case '}':
        if (lx->depth > 0)
            lx->depth--;
        break;
    case '.':
        n = c1 == '.' && c2 == '.' ? 3 : 1;
        break;
    case '*':
    case '/':
    case '<':
    case '>': /* ** // << >> and their augmented forms; <= >= */
        if (c1 == c)
            n = c2 == '=' ? 3 : 2;
        else if (c1 == '=')
            n = 2;
        break;
    case '-':
        n = c1 == '=' || c1 == '>' ? 2 : 1;
        break;
    case '=':
    case '!':
    case '+':
    case '%':
    case '&':
    case '|':
    case '^':
    case '@':
    case ':':
        n = c1 == '=' ? 2 : 1;
        break;
    default:
        break;
    }
    set_op(t, (const char *)lx->s + lx->i, n);
    lx->i += n;
}

static struct ctx *ctx_top(struct lexer *lx)
{
    return lx->nctx ? &lx->ctx[lx->nctx - 1] : NULL;
}

static bool ctx_push(struct lexer *lx, struct ctx c)
{
    if (lx->nctx == CTX_MAX) {
        if (!lx->found_rule) {
            lx->found_rule = R_TOO_COMPLEX;
            lx->found_line = lx->line;
            lx->found_name = "f-strings";
        }
        lx->i = lx->n;
        return false;
    }
    lx->ctx[lx->nctx++] = c;
    return true;
}

/* A replacement field opens: a virtual '(' so its commas stay inside. */
static void field_open(struct lexer *lx, struct tok *t, const struct ctx *parent)
{
    lx->i++;
    lx->depth++;
    set_op(t, "(", 1);
    ctx_push(lx, (struct ctx){X_FIELD, parent->quote, parent->triple, parent->raw, lx->depth});
}

/* The literal part of an f-string or a format spec. Returns true with a
 * token in t (a field's virtual '('), false once the context was popped
 * or the input ended. */
static bool lex_fliteral(struct lexer *lx, struct tok *t)
{
    struct ctx *c = ctx_top(lx);
    unsigned q = c->quote;
    while (lx->i < lx->n) {
        unsigned ch = lx->s[lx->i];
        if (at_close(lx, q, c->triple)) {
            if (c->kind == X_FSTR)
                lx->i += c->triple ? 3 : 1;
            lx->nctx--; /* a spec cut short by the quote: the f-string ends next */
            run_end(lx);
            return false;
        }
        if ((ch == '\n' || ch == '\r') && !c->triple) {
            lx->nctx--;
            run_end(lx);
            return false;
        }
        if (ch == '{') {
            if (c->kind == X_FSTR && at(lx, lx->i + 1) == '{') {
                lx->i += 2;
                continue;
            }
            run_end(lx);
            field_open(lx, t, c);
            return true;
        }
        if (ch == '}') {
            if (c->kind == X_SPEC) { /* the end of the replacement field */
                lx->i++;
                lx->nctx--;
                run_end(lx);
                return false;
            }
            lx->i += at(lx, lx->i + 1) == '}' ? 2 : 1;
            continue;
        }
        if (ch == '\\') {
            unsigned e = at(lx, lx->i + 1);
            if (c->raw) { /* only a quote or a backslash is protected */
                lx->i += (e == q || e == '\\') ? 2 : 1;
                continue;
            }
            if (e == '{' || e == '}') { /* not an escape: the brace stays live */
                lx->i++;
                continue;
            }
            struct tok scratch = {0};
            string_escape(lx, &scratch, false);
            continue;
        }
        string_char(lx, t); /* feeds the dunder scanner; the value is opaque */
        t->len = 0;
        t->flags = 0;
    }
    return false;
}

static void lex_next(struct lexer *lx, struct tok *t)
{
    t->kind = T_END;
    t->flags = 0;
    t->len = 0;
    t->text[0] = '\0';
    for (;;) {
        struct ctx *c = ctx_top(lx);
        if (c && c->kind != X_FIELD) {
            if (lx->i >= lx->n)
                return;
            t->line = lx->line;
            if (lex_fliteral(lx, t))
                return;
            t->len = 0;
            continue;
        }
        if (lx->i < lx->n && (lx->s[lx->i] <= ' ' || lx->s[lx->i] == '#' || lx->s[lx->i] == '\\'))
            skip_space(lx, false);
        t->line = lx->line;
        if (lx->i >= lx->n)
            return;
        unsigned ch = lx->s[lx->i];
        if (ch == '\n' || ch == '\r') {
            eat_newline(lx);
            if (lx->depth == 0 && lx->nctx == 0) {
                t->kind = T_NL;
                return;
            }
            continue;
        }
        if (c && lx->depth == c->depth && (ch == '}' || ch == ':')) {
            /* a field's expression ends: close its virtual '(' */
            lx->i++;
            lx->depth--;
            set_op(t, ")", 1);
            if (ch == '}')
                lx->nctx--;
            else
                c->kind = X_SPEC;
            return;
        }
        if (ch == '\'' || ch == '"') {
            lex_string(lx, t, string_prefix(lx, lx->i));
            return;
        }
        if (ch >= 0x80 || is_name_ascii(ch)) {
            if (is_digit(ch)) {
                lex_number(lx);
                t->kind = T_NUM;
                return;
            }
            struct prefix p = {0};
            unsigned lc = ch | 0x20;
            if (lc == 'r' || lc == 'b' || lc == 'u' || lc == 'f' || lc == 't')
                p = string_prefix(lx, lx->i);
            if (p.ok && p.len) {
                lex_string(lx, t, p);
                return;
            }
            lex_name(lx, t);
            return;
        }
        if (ch == '.' && is_digit(at(lx, lx->i + 1))) {
            lex_number(lx);
            t->kind = T_NUM;
            return;
        }
        lex_op(lx, t);
        return;
    }
}

/* ---- 3. the screen ----------------------------------------------------- */

enum import_state { IMP_NONE, IMP_PATH, IMP_AS, FROM_PATH, FROM_NAMES, FROM_AS };

/* A call whose arguments are inspected (getattr's name, open's mode, ...).
 * The current argument is summed up as it goes: its token count, and what
 * its first token would mean if it stays the only one. */
struct call {
    uint8_t kind; /* enum call_kind */
    bool strict;  /* C_OPEN: the second positional argument is the mode */
    int depth;    /* bracket depth just inside its '(' */
    uint32_t line;
    unsigned argn; /* positional arguments finished */
    unsigned ntok; /* tokens of the current argument (of its value, for a keyword) */
    bool kw, kw_mode, star, first_name_mode, first_is_name;
    bool lit;          /* the first token is a literal with a known value */
    bool lit_write;    /* ... holding w, a, x or + */
    bool lit_modelike; /* ... made of mode letters only */
    uint8_t lit_rule;  /* ... naming a screened name */
    const char *lit_name;
};

struct screen {
    struct lexer lx;
    struct tok tk[3];
    struct tok *prev, *cur, *next;
    int depth; /* brackets open before cur */
    bool stmt_start;
    /* the dotted chain cur belongs to */
    unsigned chain_len;
    const struct word *head; /* its first name, if special */
    /* an import statement */
    enum import_state imp;
    unsigned pathn;
    const struct word *path0, *imported;
    /* inspected calls */
    struct call calls[CALL_MAX];
    int ncalls;
    uint8_t pending_call;
    bool pending_strict;
    const char *pending_name;
    int expr; /* driver expression: 1 = '=' next, 2 = right-hand side */
    /* the verdict */
    uint8_t rule;
    uint32_t line;
    char what[112];
};

__attribute__((format(printf, 4, 5))) static void refuse(struct screen *sc, uint8_t rule,
                                                        uint32_t line, const char *fmt, ...)
{
    if (sc->rule)
        return;
    sc->rule = rule;
    sc->line = line;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sc->what, sizeof sc->what, fmt, ap);
    va_end(ap);
}

/* op and name are string literals: the compiler folds the length */
#define is_op(t, op)     tok_is((t), T_OP, (op), sizeof(op) - 1)
#define is_name(t, name) tok_is((t), T_NAME, (name), sizeof(name) - 1)

static inline bool tok_is(const struct tok *t, uint8_t kind, const char *s, size_t n)
{
    return t->kind == kind && t->len == n && memcmp(t->text, s, n) == 0;
}

static const struct word *tok_word(const struct tok *t)
{
    if (t->flags & (TF_LONG | TF_NONASCII))
        return NULL;
    return word_find(t->text, t->len);
}

/* A literal used as a name (subscript key, getattr's name): the rule of
 * the first screened dotted component, if any. */
static const struct word *key_word(const struct tok *t)
{
    if (t->flags & (TF_OPAQUE | TF_LONG))
        return NULL;
    const char *p = t->text, *end = t->text + t->len;
    while (p <= end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        const char *e = dot ? dot : end;
        const struct word *w = word_find(p, (size_t)(e - p));
        if (w && (w->key || w->any))
            return w;
        p = e + 1;
    }
    return NULL;
}

static void literal_arg(struct call *c, const struct tok *t)
{
    c->lit = !(t->flags & (TF_OPAQUE | TF_LONG));
    c->lit_write = false;
    c->lit_modelike = c->lit && t->len > 0 && t->len <= 8;
    for (size_t i = 0; c->lit && i < t->len; i++) {
        char ch = t->text[i];
        if (ch == 'w' || ch == 'a' || ch == 'x' || ch == '+')
            c->lit_write = true;
        else if (ch != 'r' && ch != 'b' && ch != 't' && ch != 'U')
            c->lit_modelike = false;
    }
    const struct word *w = key_word(t);
    c->lit_rule = w ? (w->key ? w->key : w->any) : R_NONE;
    c->lit_name = w ? w->name : NULL;
}

static void call_finish_arg(struct screen *sc, struct call *c)
{
    bool single = c->ntok == 1 && c->lit;
    if (c->ntok == 0 && !c->kw && !c->star)
        goto reset; /* nothing, or a trailing comma */
    if (c->kind == C_OPEN) {
        bool is_mode = c->kw ? c->kw_mode : (c->strict && c->argn == 1);
        if (c->star && c->strict)
            refuse(sc, R_OPEN_WRITE, c->line, "opens a file with unpacked arguments");
        else if (is_mode && !single)
            refuse(sc, R_OPEN_WRITE, c->line, "opens a file with a computed mode");
        else if (is_mode && c->lit_write)
            refuse(sc, R_OPEN_WRITE, c->line, "opens a file for writing");
        else if (!c->kw && single && c->lit_modelike && c->lit_write)
            refuse(sc, R_OPEN_WRITE, c->line, "opens a file for writing");
    } else if (c->kind == C_GETATTR || c->kind == C_ATTRGETTER || c->kind == C_METHODCALLER) {
        bool is_name_arg = !c->kw && (c->kind == C_ATTRGETTER ||
                                      c->argn == (c->kind == C_GETATTR ? 1u : 0u));
        if (c->star)
            refuse(sc, R_GETATTR, c->line, "calls %s with unpacked arguments", "getattr");
        else if (is_name_arg && !single)
            refuse(sc, R_GETATTR, c->line, "looks up an attribute by a computed name");
        else if (is_name_arg && c->lit_rule)
            refuse(sc, c->lit_rule, c->line, "looks up %s by a string name", c->lit_name);
    }
    if (!c->kw)
        c->argn++;
reset:
    c->ntok = 0;
    c->kw = c->kw_mode = c->star = c->first_is_name = c->first_name_mode = false;
    c->lit = c->lit_write = c->lit_modelike = false;
    c->lit_rule = R_NONE;
}

static void call_finish(struct screen *sc, struct call *c)
{
    call_finish_arg(sc, c);
    if (c->kind == C_UNLINK && c->argn == 0)
        refuse(sc, R_FILE_DELETE, c->line, "calls .unlink() without arguments (a path)");
}

static void call_token(struct call *c, const struct tok *t, bool direct)
{
    if (direct && c->ntok == 0) {
        if (is_op(t, "*") || is_op(t, "**"))
            c->star = true;
        c->first_is_name = t->kind == T_NAME;
        c->first_name_mode = is_name(t, "mode");
        if (t->kind == T_STR)
            literal_arg(c, t);
    } else if (direct && c->ntok == 1 && c->first_is_name && !c->kw && is_op(t, "=")) {
        c->kw = true;
        c->kw_mode = c->first_name_mode;
        c->ntok = 0;
        return;
    }
    c->ntok++;
}

/* Every token passes the inspected calls before anything else. */
static void calls_feed(struct screen *sc, const struct tok *t)
{
    bool closer = is_op(t, ")") || is_op(t, "]") || is_op(t, "}");
    for (int k = sc->ncalls - 1; k >= 0; k--) {
        struct call *c = &sc->calls[k];
        bool direct = sc->depth == c->depth;
        if (closer && direct) {
            call_finish(sc, c);
            sc->ncalls = k; /* k is the innermost: the stack is ordered by depth */
        } else if (direct && is_op(t, ",")) {
            call_finish_arg(sc, c);
        } else {
            call_token(c, t, direct);
        }
    }
}

static void call_open(struct screen *sc)
{
    if (sc->ncalls == CALL_MAX) {
        refuse(sc, R_TOO_COMPLEX, sc->cur->line,
               "nests screened calls deeper than the screener follows");
        return;
    }
    struct call *c = &sc->calls[sc->ncalls++];
    memset(c, 0, sizeof *c);
    c->kind = sc->pending_call;
    c->strict = sc->pending_strict;
    c->depth = sc->depth; /* called just after its '(' was counted */
    c->line = sc->cur->line;
}

static bool strict_opener(const struct screen *sc, const struct tok *t, bool attr)
{
    if (!attr)
        return true; /* open(), fdopen(), ZipFile() */
    if (strcmp(t->text, "ZipFile") == 0)
        return true;
    if (sc->chain_len != 2 || !sc->head)
        return false;
    for (size_t i = 0; i < sizeof strict_openers / sizeof strict_openers[0]; i++)
        if (strcmp(sc->head->name, strict_openers[i]) == 0)
            return true;
    return false;
}

/* A name with a call rule: note the call for inspection, or refuse a use
 * that escapes inspection (g = getattr). */
static void name_call(struct screen *sc, const struct tok *t, const struct word *w, bool attr)
{
    bool called = is_op(sc->next, "(");
    switch (w->call) {
    case C_GETATTR:
    case C_ATTRGETTER:
    case C_METHODCALLER:
        if (called)
            break;
        refuse(sc, R_GETATTR, t->line, "uses %s as a value", w->name);
        return;
    case C_OPEN:
        if (called)
            break;
        if (strict_opener(sc, t, attr) && strcmp(w->name, "fdopen") != 0)
            refuse(sc, R_OPEN_WRITE, t->line, "uses %s as a value (its mode is not seen)",
                   w->name);
        return;
    case C_UNLINK:
        if (!attr || !called)
            return;
        break;
    case C_EXPR:
        if (!attr)
            return;
        if (is_op(sc->next, "="))
            sc->expr = 1;
        else if (sc->next->kind == T_OP && sc->next->len == 2 && sc->next->text[1] == '=' &&
                 sc->next->text[0] != '=' && sc->next->text[0] != '!' &&
                 sc->next->text[0] != '<' && sc->next->text[0] != '>')
            refuse(sc, R_DRIVER_EXPR, t->line, "changes a driver expression in place");
        return;
    default:
        return;
    }
    sc->pending_call = w->call;
    sc->pending_strict = w->call == C_OPEN && strict_opener(sc, t, attr);
}

static void import_name(struct screen *sc, const struct tok *t, const struct word *w)
{
    if (w && w->any)
        refuse(sc, w->any, t->line, "imports %s", w->name);
    switch (sc->imp) {
    case FROM_PATH:
        if (is_name(t, "import")) {
            sc->imp = FROM_NAMES;
            return;
        }
        /* fall through */
    case IMP_PATH:
        if (is_name(t, "as") && sc->imp == IMP_PATH) {
            sc->imp = IMP_AS;
            return;
        }
        if (++sc->pathn == 1) {
            sc->path0 = w;
            if (w && w->mod == M_ALL)
                refuse(sc, w->mod_rule, t->line, "imports %s", w->name);
        } else if (sc->pathn == 2 && sc->path0 && sc->path0->mod == M_ATTRS) {
            uint8_t r = mod_attr_rule(sc->path0->name, t->text, t->len);
            if (r)
                refuse(sc, r, t->line, "imports %s.%s", sc->path0->name, t->text);
        }
        return;
    case IMP_AS:
        if (sc->pathn == 1 && sc->path0 && sc->path0->mod == M_ATTRS &&
            strcmp(t->text, sc->path0->name) != 0)
            refuse(sc, R_MODULE_ALIAS, t->line, "imports %s under another name",
                   sc->path0->name);
        return;
    case FROM_NAMES:
        if (is_name(t, "as")) {
            sc->imp = FROM_AS;
            return;
        }
        sc->imported = w;
        if (sc->pathn == 1 && sc->path0 && sc->path0->mod == M_ATTRS) {
            uint8_t r = mod_attr_rule(sc->path0->name, t->text, t->len);
            if (r)
                refuse(sc, r, t->line, "imports %s from %s", t->text, sc->path0->name);
        }
        if (w && w->mod == M_ALL)
            refuse(sc, w->mod_rule, t->line, "imports %s", w->name);
        return;
    case FROM_AS:
        if (sc->imported && (sc->imported->mod == M_ATTRS || sc->imported->call ||
                             sc->imported->bare) &&
            strcmp(t->text, sc->imported->name) != 0)
            refuse(sc, R_MODULE_ALIAS, t->line, "imports %s under another name",
                   sc->imported->name);
        sc->imp = FROM_NAMES;
        return;
    case IMP_NONE:
        return;
    }
}

static void step_name(struct screen *sc, const struct tok *t)
{
    const struct word *w = tok_word(t);
    bool attr = is_op(sc->prev, ".");
    if (sc->imp != IMP_NONE) {
        sc->chain_len = 0;
        import_name(sc, t, w);
        return;
    }
    if (is_name(t, "import")) {
        sc->imp = IMP_PATH;
        sc->pathn = 0;
        sc->path0 = NULL;
        return;
    }
    if (is_name(t, "from") && sc->stmt_start) {
        sc->imp = FROM_PATH;
        sc->pathn = 0;
        sc->path0 = NULL;
        return;
    }
    const struct word *head = sc->head;
    if (attr && sc->chain_len > 0) {
        sc->chain_len++;
    } else {
        sc->chain_len = 1;
        sc->head = w;
    }
    if (attr && sc->chain_len == 2 && head && head->mod == M_ATTRS &&
        !(t->flags & (TF_LONG | TF_NONASCII))) {
        uint8_t r = mod_attr_rule(head->name, t->text, t->len);
        if (r)
            refuse(sc, r, t->line, "uses %s.%s", head->name, t->text);
    }
    if (!w)
        return;
    if (w->any)
        refuse(sc, w->any, t->line, "uses %s", w->name);
    if (attr) {
        if (w->attr)
            refuse(sc, w->attr, t->line, "uses .%s", w->name);
        if (w->call)
            name_call(sc, t, w, true);
        return;
    }
    bool def = is_name(sc->prev, "def") || is_name(sc->prev, "class");
    bool assigned = is_op(sc->next, "=");
    if (def || assigned)
        return;
    if (w->bare)
        refuse(sc, w->bare, t->line, "uses %s", w->name);
    if (w->mod == M_ALL && w->mod_bare)
        refuse(sc, w->mod_rule, t->line, "uses module %s", w->name);
    if (w->mod == M_ATTRS && w->mod_bare && !is_op(sc->next, "."))
        refuse(sc, R_MODULE_VALUE, t->line, "uses module %s as a value (only %s.NAME is screened)",
               w->name, w->name);
    if (w->call)
        name_call(sc, t, w, false);
}

/* A driver expression's literal is code Blender may evaluate: refuse one
 * that names anything screened, or any _name. */
static void expr_literal(struct screen *sc, const struct tok *t)
{
    if (t->flags & (TF_OPAQUE | TF_LONG)) {
        refuse(sc, R_DRIVER_EXPR, t->line, "sets a driver expression that is not a plain literal");
        return;
    }
    const char *p = t->text, *end = t->text + t->len;
    while (p < end) {
        if (!is_name_ascii((unsigned char)*p) || is_digit((unsigned char)*p)) {
            p++;
            continue;
        }
        const char *q = p;
        while (q < end && is_name_ascii((unsigned char)*q))
            q++;
        const struct word *w = word_find(p, (size_t)(q - p));
        if (*p == '_' || (w && (w->any || w->bare || w->attr || w->key || w->mod)))
            refuse(sc, R_DRIVER_EXPR, t->line, "sets a driver expression that names %s",
                   w ? w->name : "a _name");
        p = q;
    }
}

static void step(struct screen *sc)
{
    const struct tok *t = sc->cur;
    calls_feed(sc, t);
    if (sc->expr == 1) {
        sc->expr = 2; /* t is the '=' */
    } else if (sc->expr == 2) {
        if (t->kind == T_NL || is_op(t, ";") || t->kind == T_END)
            sc->expr = 0;
        else if (t->kind == T_STR)
            expr_literal(sc, t);
        else
            refuse(sc, R_DRIVER_EXPR, t->line,
                   "sets a driver expression from a computed value");
    }
    switch (t->kind) {
    case T_NAME:
        step_name(sc, t);
        break;
    case T_STR:
        sc->chain_len = 0;
        if (is_op(sc->prev, "[") && is_op(sc->next, "]")) {
            const struct word *w = key_word(t);
            if (w)
                refuse(sc, w->key ? w->key : w->any, t->line, "looks up %s by a string key",
                       w->name);
        }
        break;
    case T_NL:
        sc->imp = IMP_NONE;
        sc->chain_len = 0;
        break;
    case T_OP:
        if (is_op(t, ";")) {
            sc->imp = IMP_NONE;
        } else if (is_op(t, "*") && sc->imp == FROM_NAMES && sc->pathn == 1 && sc->path0 &&
                   sc->path0->mod == M_ATTRS) {
            refuse(sc, R_STAR_IMPORT, t->line, "star-imports from %s", sc->path0->name);
        } else if (is_op(t, ",") && sc->imp == IMP_AS) {
            sc->imp = IMP_PATH;
            sc->pathn = 0;
        } else if (is_op(t, ",") && sc->imp == IMP_PATH) {
            sc->pathn = 0;
        } else if (sc->imp == FROM_PATH && !is_op(t, ".")) {
            sc->imp = IMP_NONE;
        }
        if (!is_op(t, "."))
            sc->chain_len = 0;
        break;
    default:
        sc->chain_len = 0;
        break;
    }
    sc->stmt_start = t->kind == T_NL || is_op(t, ";") || is_op(t, ":");
    if (t->kind == T_OP && t->len == 1) {
        char c = t->text[0];
        if (c == '(' || c == '[' || c == '{') {
            sc->depth++;
            if (sc->pending_call && c == '(')
                call_open(sc);
        } else if ((c == ')' || c == ']' || c == '}') && sc->depth > 0) {
            sc->depth--;
        }
    }
    if (t->kind != T_NAME) /* a call is noted on its name, opened on its '(' */
        sc->pending_call = C_NONE;
}

static void advance(struct screen *sc)
{
    struct tok *old = sc->prev;
    sc->prev = sc->cur;
    sc->cur = sc->next;
    sc->next = old;
    lex_next(&sc->lx, sc->next);
}

static void screen_source(struct screen *sc, const unsigned char *src, size_t n)
{
    memset(sc, 0, sizeof *sc);
    sc->lx.s = src;
    sc->lx.n = n;
    sc->lx.line = 1;
    sc->prev = &sc->tk[0];
    sc->cur = &sc->tk[1];
    sc->next = &sc->tk[2];
    sc->prev->kind = T_NL;
    sc->stmt_start = true;
    lex_next(&sc->lx, sc->cur);
    lex_next(&sc->lx, sc->next);
    while (!sc->rule) {
        if (sc->lx.found_rule == R_TOO_COMPLEX)
            refuse(sc, R_TOO_COMPLEX, sc->lx.found_line,
                   "nests f-strings deeper than the screener follows");
        else if (sc->lx.found_rule)
            refuse(sc, sc->lx.found_rule, sc->lx.found_line, "names %s in a string",
                   sc->lx.found_name);
        if (sc->cur->kind == T_END || sc->rule)
            break;
        step(sc);
        advance(sc);
    }
    /* calls left open at the end (unbalanced): judge what was seen */
    while (sc->ncalls > 0 && !sc->rule)
        call_finish(sc, &sc->calls[--sc->ncalls]);
}

/* ---- the entry point ---------------------------------------------------- */

static const char *policy_name(enum config_scripts_policy p)
{
    return p == CONFIG_SCRIPTS_ALLOW ? "allow" : p == CONFIG_SCRIPTS_DENY_ALL ? "deny_all"
                                                                              : "deny_dangerous";
}

int screen_script(const char *json_str, size_t len, enum config_scripts_policy policy,
                  char *why, size_t whylen)
{
    const unsigned char *s = (const unsigned char *)json_str;
    unsigned char small[SCREEN_STACK_BYTES];
    size_t n;
    if (whylen)
        why[0] = '\0';
    if (policy != CONFIG_SCRIPTS_DENY_DANGEROUS) {
        int rc = json_decode(s, len, NULL, &n, why, whylen);
        if (rc)
            return rc;
        if (policy == CONFIG_SCRIPTS_ALLOW)
            return 0;
        if (whylen)
            snprintf(why, whylen, "execute_code refused: scripts.policy is deny_all");
        return -EPERM;
    }
    unsigned char *buf = len > sizeof small ? malloc(len) : small;
    if (!buf) {
        if (whylen)
            snprintf(why, whylen, "execute_code: out of memory screening a %zu-byte script", len);
        return -ENOMEM;
    }
    int rc = json_decode(s, len, buf, &n, why, whylen);
    if (rc == 0) {
        struct screen sc;
        pthread_once(&word_once, words_build);
        screen_source(&sc, buf, n);
        if (sc.rule) {
            rc = -EPERM;
            if (whylen)
                snprintf(why, whylen,
                         "execute_code refused by scripts.policy %s: line %u: %s (rule \"%s\")",
                         policy_name(policy), (unsigned)sc.line, sc.what,
                         screen_rule_names[sc.rule]);
        }
    }
    if (buf != small)
        free(buf);
    return rc;
}
