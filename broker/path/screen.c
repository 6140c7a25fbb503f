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
 *   1. screen_json_decode: validate the JSON string token and decode it to UTF-8
 *      (on the stack up to SCREEN_STACK_BYTES, else one malloc).
 *   2. screen_lex_next: Python tokens. Whitespace, comments, backslash line
 *      continuations and newlines inside brackets vanish, so `os . system`,
 *      `os .\<newline> system` and `os.# c<newline>system` (in brackets) all
 *      read as os . system. Strings are decoded (escapes, implicit
 *      concatenation `"sys" "tem"` is merged by the lexer, screen_lex.c). f-strings (and
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
 *   Stages 1 and 2 are screen_lex.c; stage 3 and the entry point are this
 *   file; the rule names and the table of special names, screen_rules.c.
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
#include "screen.h"
#include "screen_lex.h"
#include "screen_rules.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CALL_MAX 16 /* nested inspected calls followed */

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
    return screen_word_find(t->text, t->len);
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
        const struct word *w = screen_word_find(p, (size_t)(e - p));
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
    return screen_strict_opener(sc->head->name);
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
            uint8_t r = screen_mod_attr_rule(sc->path0->name, t->text, t->len);
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
            uint8_t r = screen_mod_attr_rule(sc->path0->name, t->text, t->len);
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
        uint8_t r = screen_mod_attr_rule(head->name, t->text, t->len);
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
        const struct word *w = screen_word_find(p, (size_t)(q - p));
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
    screen_lex_next(&sc->lx, sc->next);
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
    screen_lex_next(&sc->lx, sc->cur);
    screen_lex_next(&sc->lx, sc->next);
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
        int rc = screen_json_decode(s, len, NULL, &n, why, whylen);
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
    int rc = screen_json_decode(s, len, buf, &n, why, whylen);
    if (rc == 0) {
        struct screen sc;
        screen_words_init();
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
