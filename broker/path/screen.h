/*
 * screen.h - the execute_code script screener (scripts.policy).
 *
 * One call decides whether the Python source a client sends as
 * params.code may be forwarded to Blender: screen_script() takes the JSON
 * string token exactly as it stands in the request line (quotes and escapes
 * included), checks it is a valid JSON string, and applies the policy:
 * allow passes it, deny_all refuses it, deny_dangerous reads it as Python
 * and refuses it if it uses one of the rules listed in screen.c (running
 * programs, deleting or writing files, the network, ctypes, dynamic import,
 * eval/exec and the introspection that reaches them, quitting Blender...).
 *
 * This is defence in depth, not a sandbox: arbitrary Python inside Blender
 * can do anything the Blender process may do, and a determined author can
 * find a way past any pattern screen. The boundary that holds is running
 * Blender as an unprivileged user with no secrets in reach (README,
 * "Script screening").
 *
 * Cost: one pass over the script, no recursion; a script of more than
 * SCREEN_STACK_BYTES is decoded into one heap buffer freed before return,
 * shorter ones on the stack. Thread safety: reentrant; the only shared
 * state is a read-only name table built once (pthread_once).
 */
#ifndef BROKER_SCREEN_H
#define BROKER_SCREEN_H

#include <stddef.h>

#include "config.h"

#define SCREEN_STACK_BYTES 4096 /* scripts up to this long need no malloc */

/*
 * json_str, len: the raw JSON string token of params.code, from its opening
 * to its closing quote, escapes not yet decoded. why, whylen: room for one
 * line saying why (always NUL-terminated when whylen > 0; may be NULL/0).
 *
 * Returns
 *   0        the script may be forwarded (why is set to "");
 *   -EPERM   refused by the policy; why names the rule, e.g.
 *            execute_code refused by scripts.policy deny_dangerous: line 2:
 *            uses os.system (rule "os-exec")
 *   -EINVAL  not one valid JSON string (bad escape, lone or reversed
 *            surrogate pair, raw control character, invalid UTF-8, missing
 *            quotes or bytes after the closing quote); checked first, under
 *            every policy;
 *   -ENOMEM  no memory to decode a long script (deny_dangerous only).
 */
int screen_script(const char *json_str, size_t len, enum config_scripts_policy policy,
                  char *why, size_t whylen);

/* The stable name of every rule deny_dangerous applies, NULL-terminated
 * (for documentation and tests). */
extern const char *const screen_rule_names[];

#endif
