/*
 * screen_rules.h - the screener's rules and name table, shared by screen.c
 * (the matching engine) and screen_lex.c (door dunders inside string
 * literals). Internal to the screener: the rest of the broker uses screen.h.
 *
 * Thread safety: screen_words_init() builds the lookup index once
 * (pthread_once) and must have returned before screen_word_find() is
 * called; after that everything here is read-only and reentrant.
 */
#ifndef BROKER_SCREEN_RULES_H
#define BROKER_SCREEN_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The index of each rule in screen_rule_names[] (screen.h). */
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

/* ---- the name table ------------------------------------------------------
 * One row per special name. A name is looked at in one of four positions:
 *   any   - wherever it stands (door dunders, frame attributes);
 *   bare  - at the start of a dotted chain, not a def/class name, not the
 *           target of a plain `=` (assignment or keyword argument);
 *   attr  - after a dot, on any receiver;
 *   key   - as a string literal used as a name: ns['exec'], the name in
 *           getattr(x, 'system'), attrgetter('__globals__').
 * `call` marks names whose call is inspected, `mod` a module (enum mod_kind).
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

/* Build the lookup index (once; any thread, any number of times). */
void screen_words_init(void);

/* The row of the name s[0..n), or NULL when it is not special. */
const struct word *screen_word_find(const char *s, size_t n);

/* The rule refusing mod.attr (attr is alen bytes) for an M_ATTRS module
 * mod, or R_NONE. */
uint8_t screen_mod_attr_rule(const char *mod, const char *attr, size_t alen);

/* True when mod.open(file, mode) takes the mode second, like open(). */
bool screen_strict_opener(const char *mod);

#endif
