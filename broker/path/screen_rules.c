/*
 * screen_rules.c - what the execute_code screener refuses: the rule names,
 * the table of special names (which position of a name is screened, under
 * which rule) and the attributes of the modules that may only be used as
 * mod.attr. screen.c applies them to tokens; the reasons for each entry
 * are in screen.c's design note.
 *
 * Lookup: one open-addressing index over words[], built once by
 * screen_words_init() and read-only afterwards, with a per-first-character
 * bitmap of the lengths present so most names are refused by one load
 * before any hashing. mod_attrs[] is short and searched linearly; it is
 * only reached for the few M_ATTRS modules.
 */
#include "screen.h"
#include "screen_rules.h"

#include <pthread.h>
#include <string.h>

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

const struct word *screen_word_find(const char *s, size_t n)
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

uint8_t screen_mod_attr_rule(const char *mod, const char *attr, size_t alen)
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

bool screen_strict_opener(const char *mod)
{
    for (size_t i = 0; i < sizeof strict_openers / sizeof strict_openers[0]; i++)
        if (strcmp(mod, strict_openers[i]) == 0)
            return true;
    return false;
}

void screen_words_init(void)
{
    pthread_once(&word_once, words_build);
}
