#!/usr/bin/env bash
# Mutation check of the test suite, run by hand (not in CI).
#
# What it does: scripts/mutants.txt lists small, plausible bugs ("mutants") in
# the broker's source, each an exact snippet of a file and its replacement.
# This script copies the working tree (tracked and untracked, not ignored
# files: uncommitted edits included) into a temp dir once, builds that copy
# once (RelWithDebInfo, its own build dir), then for each mutant: puts the bug
# into the copy, rebuilds incrementally, runs the tests, and puts the pristine
# file back. A test that fails is run a second time (ctest --rerun-failed),
# so that a timing-sensitive test failing once on a loaded machine is not
# taken for a kill. It prints one line per mutant:
#   KILLED       a test failed twice in a row, or the run timed out (the
#                suite caught the bug); the failing tests and cases are named
#   SURVIVED     every test passed (a gap in the suite, or an equivalent mutant)
#   FLAKY        a test failed once, then passed on its rerun (not counted:
#                retry with --only ID)
#   BUILD-FAIL   the mutated tree does not compile (not applicable, not counted)
#   STALE        the find text does not occur exactly once in the file any
#                more, or tests: names a test that does not exist (the source
#                changed: update the entry; not counted)
#   SKIPPED      a TSan-only mutant without --tsan (not counted)
# and then "killed K of N (ratio)" over the KILLED and SURVIVED ones.
# The files under the repository are never modified; the temp dir is removed
# at the end unless --keep.
#
# Before the mutants it runs the same tests on the unmutated copy (the
# baseline): a suite that fails without any bug would make every mutant look
# killed, so it stops there (exit 1) unless --no-baseline; a baseline failure
# that passes on its rerun is reported as flaky and the run goes on.
#
# How long: the full build takes ~10 s, a mutant's rebuild 2-10 s, and the
# baseline and each mutant run every unit and integration test (~75 s on the
# 2-vCPU dev VM, plus the rerun of what failed; a mutant that
# hangs a test costs the whole --timeout), so the whole list takes about
# 1.5 min per mutant: ~90 min for the 52 mutants with --tsan. --only picks a
# few.
# With --tsan, the TSan-only mutants (tsan: yes) also run, against a second
# build of the copy (clang, -DBROKER_SANITIZE=thread, like scripts/sanitize.sh
# thread) with `ctest -L 'concurrency|integration'`: about 1 min more each.
#
# Adding a mutant: append an entry to scripts/mutants.txt (format described at
# its top): a line `---`, then
#   id: W99                      unique, used by --only
#   file: broker/core/worker.c   path from the repository root
#   why: one line: the bug and what it would break
#   tests: test_pool integ_test_defects   optional: only these ctest tests
#                                (exact names; default: every unit and
#                                integration test, or for tsan: yes, every
#                                concurrency and integration test)
#   tsan: yes                    optional: only meaningful under TSan
#   find:
#   <the exact original lines, indentation included>
#   replace:
#   <the replacement lines>
# then check it with `scripts/mutants.sh --list` (says STALE if the find text
# is not found exactly once) and `scripts/mutants.sh --only W99`.
#
# Usage: scripts/mutants.sh [--list] [--only ID[,ID...]] [--keep] [--tsan]
#                           [--timeout SECS] [--no-baseline] [--file PATH] [--rev REV]
#                           [--exclude TEST[,TEST...]]
#   --list          list the mutants (with STALE marks) and exit
#   --only IDS      run only these mutants (comma-separated ids)
#   --keep          keep the temp dir (copy, build dirs, per-mutant logs)
#   --tsan          also run the tsan: yes mutants in a TSan build
#   --timeout SECS  limit for one mutant's test run (default 300; TSan twice
#                   that); past it the mutant counts as KILLED (timeout)
#   --no-baseline   skip the unmutated test run
#   --file PATH     another mutant list (default scripts/mutants.txt)
#   --rev REV       mutate the tree of commit REV (git archive) instead of the
#                   working tree, e.g. HEAD while someone's edits do not build
#   --exclude TESTS never run these ctest tests (exact names), e.g. a timing
#                   test that fails on a loaded machine without any mutant
# Exit status: 0 whatever the mutants do; 2 on a usage error or a malformed
# list; 1 when the unmutated copy does not build or fails its tests.

# One brace group, ended by exit: bash reads all of it before running any of
# it, so editing this file during a run (it lasts most of an hour) is safe.
{
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
list_file=$root/scripts/mutants.txt
only=""
keep=0
tsan=0
limit=300
baseline=1
do_list=0
rev=""
exclude=""

usage() {
    sed -n '/^# Usage:/,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case $1 in
        --list) do_list=1 ;;
        --only) [ $# -ge 2 ] || usage; only=$2; shift ;;
        --only=*) only=${1#--only=} ;;
        --keep) keep=1 ;;
        --tsan) tsan=1 ;;
        --timeout) [ $# -ge 2 ] || usage; limit=$2; shift ;;
        --timeout=*) limit=${1#--timeout=} ;;
        --no-baseline) baseline=0 ;;
        --file) [ $# -ge 2 ] || usage; list_file=$2; shift ;;
        --file=*) list_file=${1#--file=} ;;
        --rev) [ $# -ge 2 ] || usage; rev=$2; shift ;;
        --rev=*) rev=${1#--rev=} ;;
        --exclude) [ $# -ge 2 ] || usage; exclude=$2; shift ;;
        --exclude=*) exclude=${1#--exclude=} ;;
        -h|--help) usage ;;
        *) echo "mutants.sh: unknown argument '$1'" >&2; usage ;;
    esac
    shift
done
case $limit in ''|*[!0-9]*) echo "mutants.sh: --timeout wants seconds" >&2; exit 2 ;; esac
[ -f "$list_file" ] || { echo "mutants.sh: no mutant list at $list_file" >&2; exit 2; }
command -v python3 >/dev/null || { echo "mutants.sh: needs python3" >&2; exit 2; }
if [ -n "$rev" ] && ! git -C "$root" rev-parse --verify -q "$rev^{commit}" >/dev/null; then
    echo "mutants.sh: --rev $rev is not a commit of $root" >&2
    exit 2
fi

# ---- the mutant list: parse, check, apply (Python 3 stdlib) ---------------
read -r -d '' MUT_PY <<'PY'
import os, re, sys

FIELDS = ("id", "file", "why", "tests", "tsan", "find", "replace")
BLOCKS = ("find", "replace")
FIELD_RE = re.compile(r"^(%s):(.*)$" % "|".join(FIELDS))


def die(msg):
    sys.stderr.write("mutants.txt: %s\n" % msg)
    sys.exit(2)


def parse(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    entries, cur, block, acc = [], None, None, None

    def close_block():
        nonlocal block, acc
        if block is not None:
            while acc and not acc[-1].strip():
                acc.pop()  # blank lines before the next field are layout
            cur[block] = "\n".join(acc)
            block, acc = None, None

    def close_entry():
        close_block()
        if cur is not None and len(cur) > 1:
            entries.append(cur)

    for n, line in enumerate(lines, 1):
        if line.rstrip() == "---":
            close_entry()
            cur = {"_line": n}
            continue
        if cur is None:
            continue  # the preamble before the first ---
        m = FIELD_RE.match(line)
        if m:
            close_block()
            key, rest = m.group(1), m.group(2)
            if key in cur:
                die("line %d: second '%s:' in one entry" % (n, key))
            if key in BLOCKS and not rest.strip():
                block, acc = key, []  # the lines up to the next field or ---
            elif key in BLOCKS:
                cur[key] = rest[1:] if rest.startswith(" ") else rest
            else:
                cur[key] = rest.strip()
            continue
        if block is not None:
            acc.append(line)
        elif line.strip() and not line.startswith("#"):
            die("line %d: expected a field (id:, file:, why:, tests:, tsan:, find:, replace:)" % n)
    close_entry()

    seen = set()
    for e in entries:
        where = "entry at line %d" % e["_line"]
        for k in ("id", "file", "why", "find", "replace"):
            if k not in e:
                die("%s: no '%s:'" % (where, k))
        if not re.match(r"^[A-Za-z0-9_.-]+$", e["id"]):
            die("%s: id '%s' must be letters, digits, '_', '-', '.'" % (where, e["id"]))
        if e["id"] in seen:
            die("%s: duplicate id %s" % (where, e["id"]))
        seen.add(e["id"])
        if not e["find"]:
            die("%s (%s): empty find text" % (where, e["id"]))
        if e["find"] == e["replace"]:
            die("%s (%s): replace equals find" % (where, e["id"]))
        tsan = e.get("tsan", "no").lower()
        if tsan not in ("yes", "no"):
            die("%s (%s): tsan: must be yes or no" % (where, e["id"]))
        e["tsan"] = tsan == "yes"
        tests = e.get("tests", "").replace(",", " ").split()
        for t in tests:
            if not re.match(r"^[A-Za-z0-9_.-]+$", t):
                die("%s (%s): bad test name '%s'" % (where, e["id"], t))
        e["tests"] = tests
        e["why"] = " ".join(e["why"].split())
    return entries


def status(root, e):
    path = os.path.join(root, e["file"])
    if not os.path.isfile(path):
        return "STALE: %s does not exist" % e["file"]
    with open(path, encoding="utf-8", newline="") as f:
        n = f.read().count(e["find"])
    if n != 1:
        return "STALE: find text occurs %d times in %s" % (n, e["file"])
    return "ok"


def moved_hint(root, e):
    """Where else the find text occurs exactly once (a file moved or split)."""
    hits = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if not x.startswith((".", "build"))]
        for name in files:
            if name.endswith((".c", ".h")):
                p = os.path.join(d, name)
                try:
                    with open(p, encoding="utf-8", newline="") as f:
                        if f.read().count(e["find"]) == 1:
                            hits.append(os.path.relpath(p, root))
                except (OSError, UnicodeDecodeError):
                    pass
    return "; found once in %s" % ", ".join(sorted(hits)) if hits else ""


def main():
    cmd, path = sys.argv[1], sys.argv[2]
    entries = parse(path)
    if cmd == "list":  # list FILE ROOT: id, file, tsan, tests, status, why (tab-separated)
        root = sys.argv[3]
        for e in entries:
            st = status(root, e)
            if st != "ok" and len(sys.argv) > 4:
                st += moved_hint(root, e)
            print("\t".join([e["id"], e["file"], "1" if e["tsan"] else "0",
                             " ".join(e["tests"]) or "-", st, e["why"]]))
    elif cmd == "apply":  # apply FILE ROOT ID: mutate ROOT/file in place
        root, mid = sys.argv[3], sys.argv[4]
        e = next((x for x in entries if x["id"] == mid), None)
        if e is None:
            die("no mutant %s" % mid)
        st = status(root, e)
        if st != "ok":
            print(st)
            sys.exit(3)
        p = os.path.join(root, e["file"])
        with open(p, encoding="utf-8", newline="") as f:
            text = f.read()
        with open(p, "w", encoding="utf-8", newline="") as f:
            f.write(text.replace(e["find"], e["replace"], 1))
    else:
        die("internal: unknown command %s" % cmd)


main()
PY

mut_py() { python3 -c "$MUT_PY" "$@"; }

if [ $do_list -eq 1 ]; then
    records=$(mut_py list "$list_file" "$root" hints) || exit 2
    printf '%-5s %-24s %-5s %-36s %s\n' ID FILE TSAN TESTS WHY
    while IFS=$'\t' read -r id file ts tests st why; do
        [ "$ts" = 1 ] && ts=yes || ts=no
        [ "$st" = ok ] && st="" || st=" [$st]"
        printf '%-5s %-24s %-5s %-36s %s%s\n' "$id" "$file" "$ts" "$tests" "$why" "$st"
    done <<<"$records"
    exit 0
fi
records=$(mut_py list "$list_file" "$root") || exit 2

if [ -n "$only" ]; then
    for id in ${only//,/ }; do
        cut -f1 <<<"$records" | grep -qxF -- "$id" \
            || { echo "mutants.sh: no mutant with id '$id' (see --list)" >&2; exit 2; }
    done
fi
selected() { [ -z "$only" ] && return 0; [[ ",$only," == *",$1,"* ]]; }

# ---- the throw-away copy ----------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/brokerd-mutants.XXXXXX") || exit 1
child=""
# Test processes that outlive their run: ctest starts each test in its own
# session, so a timeout that ends ctest can orphan a test (a Criterion runner,
# brokerd). Ours are the processes whose command line names our temp dir.
reap_leftovers() {
    local p cmd
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [ "$p" = "$$" ] && continue
        cmd=$({ tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null) || continue
        case $cmd in *"$work/"*) kill -KILL "$p" 2>/dev/null ;; esac
    done
}
cleanup() {
    if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; fi
    reap_leftovers
    if [ $keep -eq 1 ]; then
        echo "mutants.sh: kept $work (src/ copy, build dirs, logs/)" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'echo "mutants.sh: interrupted" >&2; exit 130' INT TERM

src=$work/src
logs=$work/logs
mkdir -p "$src" "$logs" "$work/pristine" "$work/tmp"
# The list as it is now: edits made to it during the run do not apply.
cp "$list_file" "$work/mutants.txt" && list_file=$work/mutants.txt
if [ -n "$rev" ]; then
    echo "mutants.sh: copying $rev ($(git -C "$root" rev-parse --short "$rev")) to $work/src" >&2
    git -C "$root" archive --format=tar "$rev" | tar -xf - -C "$src" \
        || { echo "mutants.sh: copy failed" >&2; exit 1; }
elif git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    echo "mutants.sh: copying the working tree of $root to $work/src" >&2
    # Tracked and untracked files, not ignored ones (build dirs, sockets);
    # files deleted in the working tree are left out.
    (cd "$root" && git ls-files -z -co --exclude-standard \
        | python3 -c 'import os,sys
sys.stdout.buffer.write(b"".join(p + b"\0" for p in sys.stdin.buffer.read().split(b"\0") if p and os.path.lexists(p)))' \
        | tar --null -T - -cf -) | tar -xf - -C "$src" || { echo "mutants.sh: copy failed" >&2; exit 1; }
else
    echo "mutants.sh: copying $root to $work/src" >&2
    (cd "$root" && tar --exclude='./build*' --exclude=./.git -cf - .) | tar -xf - -C "$src" \
        || { echo "mutants.sh: copy failed" >&2; exit 1; }
fi

# Run "$@" with a time limit, output to a log; returns its status (124 or 137
# on timeout). In the background so a signal reaches us during the wait;
# timeout(1) puts the command in its own process group and signals the whole
# group, so test children (brokerd, mockd, Criterion forks) go with it.
run_limited() {
    local secs=$1 log=$2 rc
    shift 2
    timeout -k 15 "$secs" "$@" >"$log" 2>&1 &
    child=$!
    wait "$child"
    rc=$?
    child=""
    reap_leftovers
    return $rc
}

jobs_n=$(nproc 2>/dev/null || echo 2)
build_dir=$src/build
tsan_dir=$src/build-tsan # "tsan" in the path: the integration tests scale their waits (SLOW=3)

configure_normal() {
    run_limited 600 "$logs/configure.log" \
        cmake -S "$src" -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo
}
build_normal() { run_limited 1800 "$1" cmake --build "$build_dir" -j"$jobs_n"; }
configure_tsan() {
    run_limited 600 "$logs/configure-tsan.log" \
        cmake -S "$src" -B "$tsan_dir" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
        -DBROKER_SANITIZE=thread
}
# Criterion cannot start under TSan (tests/CMakeLists.txt): no unit binaries.
build_tsan() {
    run_limited 1800 "$1" cmake --build "$tsan_dir" -j"$jobs_n" --target stress_all brokerd mockd loadgen
}

# run_tests KIND TESTS LOG: KIND normal|tsan; TESTS "-" (the default set),
# "rerun" (what failed in the last run of that build) or exact ctest names.
run_tests() {
    local kind=$1 tests=$2 log=$3 dir sel secs
    if [ "$kind" = tsan ]; then
        dir=$tsan_dir
        sel=(-L 'concurrency|integration')
        secs=$((2 * limit))
    else
        dir=$build_dir
        sel=(-L 'unit|integration')
        secs=$limit
    fi
    if [ "$tests" = rerun ]; then
        sel=(--rerun-failed)
    elif [ "$tests" != - ]; then
        local re
        re="^($(tr ' ' '|' <<<"$tests"))\$"
        sel=(-R "$re")
    fi
    if [ -n "$exclude" ] && [ "$tests" != rerun ]; then
        sel+=(-E "^($(tr ' ,' '||' <<<"$exclude" | sed 's/||*/|/g; s/^|//; s/|$//'))\$")
    fi
    rm -rf "$work/tmp" && mkdir -p "$work/tmp" # the tests' temp dirs, cleared per run
    TMPDIR=$work/tmp TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$root/tests/tsan.supp" \
        run_limited "$secs" "$log" ctest --test-dir "$dir" --output-on-failure "${sel[@]}"
}

# The tests a ctest log lists as failed, comma-separated.
failed_tests() {
    sed -n 's/^[[:space:]]*[0-9]* - \([^ ]*\) (.*$/\1/p' "$1" | paste -sd, - | sed 's/,/, /g'
}

# The first two failing cases in a ctest log: the Python runner's
# "FAIL case: ..." and Criterion's "[FAIL] suite::case: ...".
failed_cases() {
    sed -n 's/^FAIL \([A-Za-z0-9_]*\).*/\1/p; s/^\[FAIL\] \([A-Za-z0-9_:]*[A-Za-z0-9_]\).*/\1/p' "$1" \
        | awk '!seen[$0]++' | head -n 2 | paste -sd, - | sed 's/,/, /g'
}

# check_tests KIND TESTS LOGBASE: run, and rerun what failed. Sets outcome
# (pass, fail, timeout, flaky) and detail.
check_tests() {
    local kind=$1 tests=$2 base=$3 rc first
    run_tests "$kind" "$tests" "$base.log"
    rc=$?
    detail=""
    if [ $rc -eq 0 ]; then
        outcome=pass
        return
    fi
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        outcome=timeout
        detail="timeout: tests still running after $([ "$kind" = tsan ] && echo $((2 * limit)) || echo "$limit") s"
        return
    fi
    first=$(failed_tests "$base.log")
    if [ -z "$first" ]; then
        outcome=fail
        detail="ctest exit $rc, see $base.log"
        return
    fi
    run_tests "$kind" rerun "$base.rerun.log"
    rc=$?
    if [ $rc -eq 0 ]; then
        outcome=flaky
        detail="$first failed, then passed on a rerun"
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        outcome=timeout
        detail="$first failed, then timed out on the rerun"
    else
        outcome=fail
        detail=$(failed_tests "$base.rerun.log")
        local cases
        cases=$(failed_cases "$base.rerun.log")
        [ -n "$cases" ] && detail="$detail: $cases"
    fi
}

echo "mutants.sh: building the copy (RelWithDebInfo)" >&2
if ! configure_normal || ! build_normal "$logs/build.log"; then
    echo "mutants.sh: the unmutated copy does not build; see the log:" >&2
    tail -n 30 "$logs/configure.log" "$logs/build.log" >&2 2>/dev/null
    keep=1
    exit 1
fi
have_tsan=0
if [ $tsan -eq 1 ]; then
    echo "mutants.sh: building the TSan copy (clang, BROKER_SANITIZE=thread)" >&2
    if ! configure_tsan || ! build_tsan "$logs/build-tsan.log"; then
        echo "mutants.sh: the unmutated TSan copy does not build; see the log:" >&2
        tail -n 30 "$logs/configure-tsan.log" "$logs/build-tsan.log" >&2 2>/dev/null
        keep=1
        exit 1
    fi
    have_tsan=1
fi

# Every test the build knows, to check tests: fields against.
known_tests=" $(ctest --test-dir "$build_dir" -N 2>/dev/null | sed -n 's/^ *Test *#[0-9]*: //p' | tr '\n' ' ') "
[ $tsan -eq 1 ] && known_tests+="$(ctest --test-dir "$tsan_dir" -N 2>/dev/null | sed -n 's/^ *Test *#[0-9]*: //p' | tr '\n' ' ') "

baseline_check() { # KIND LABEL
    local t0=$SECONDS
    echo "mutants.sh: $2baseline: running the tests on the unmutated copy" >&2
    check_tests "$1" - "$logs/baseline$3"
    case $outcome in
        pass) echo "mutants.sh: $2baseline passed in $((SECONDS - t0)) s" >&2 ;;
        flaky) echo "mutants.sh: $2baseline passed in $((SECONDS - t0)) s, FLAKY: $detail;" \
                    "a mutant killed only by those tests may be a false kill" >&2 ;;
        *)
            echo "mutants.sh: the UNMUTATED ${2}copy fails its tests ($detail): nothing to" \
                 "measure. Fix the suite, or retry (--no-baseline skips this check). Log:" >&2
            tail -n 40 "$logs/baseline$3.log" >&2
            keep=1
            exit 1
            ;;
    esac
}
if [ $baseline -eq 1 ]; then
    baseline_check normal "" ""
    [ $have_tsan -eq 1 ] && baseline_check tsan "TSan " "-tsan"
fi

# ---- the mutants ------------------------------------------------------------
killed=0
survived=0
na=0
stale=0
skipped=0
flaky=0
survivors=()
printf '%-5s %-24s %-10s %5s  %s\n' ID FILE RESULT SECS WHY
while IFS=$'\t' read -r id file ts tests st why; do
    [ -n "$id" ] || continue
    selected "$id" || continue
    t0=$SECONDS
    detail=""
    kind=normal
    [ "$ts" = 1 ] && kind=tsan
    if [ $kind = tsan ] && [ $have_tsan -eq 0 ]; then
        result=SKIPPED
        detail="tsan: yes, needs --tsan"
        skipped=$((skipped + 1))
    else
        mkdir -p "$work/pristine/$(dirname "$file")"
        [ -e "$work/pristine/$file" ] || cp -p "$src/$file" "$work/pristine/$file" 2>/dev/null
        missing=""
        if [ "$tests" != - ]; then
            for t in $tests; do
                [[ "$known_tests" == *" $t "* ]] || missing+=" $t"
            done
        fi
        if [ -n "$missing" ]; then
            result=STALE
            detail="tests: no ctest test named$missing"
            stale=$((stale + 1))
        elif ! out=$(mut_py apply "$list_file" "$src" "$id"); then
            result=STALE
            detail=${out#STALE: }
            stale=$((stale + 1))
        else
            if [ $kind = tsan ]; then
                build_tsan "$logs/$id.build.log"
            else
                build_normal "$logs/$id.build.log"
            fi
            brc=$?
            if [ $brc -ne 0 ]; then
                result=BUILD-FAIL
                detail=$(grep -m1 -E 'error:|Error ' "$logs/$id.build.log" | sed "s|^ *||; s|$src/||" | cut -c1-160)
                [ $brc -ge 124 ] && detail="build timed out"
                na=$((na + 1))
            else
                check_tests "$kind" "$tests" "$logs/$id.test"
                case $outcome in
                    pass)
                        result=SURVIVED
                        survived=$((survived + 1))
                        survivors+=("$id")
                        ;;
                    flaky)
                        result=FLAKY
                        flaky=$((flaky + 1))
                        ;;
                    *)
                        result=KILLED
                        killed=$((killed + 1))
                        ;;
                esac
            fi
        fi
        # Pristine file back (a new mtime: the next build recompiles it).
        if [ -e "$work/pristine/$file" ]; then
            cp "$work/pristine/$file" "$src/$file"
        fi
    fi
    [ -n "$detail" ] && detail=" ($detail)"
    [ $kind = tsan ] && why="[tsan] $why"
    printf '%-5s %-24s %-10s %5d  %s%s\n' "$id" "$file" "$result" $((SECONDS - t0)) "$why" "$detail"
done <<<"$records"

n=$((killed + survived))
echo
if [ $n -gt 0 ]; then
    ratio=$(awk -v k=$killed -v n=$n 'BEGIN { printf "%.2f", k / n }')
    echo "killed $killed of $n ($ratio)"
else
    echo "killed 0 of 0 (no mutant ran)"
fi
echo "not counted: $flaky flaky, $na build-fail, $stale stale, $skipped skipped (tsan: yes without --tsan)"
[ ${#survivors[@]} -gt 0 ] && echo "survived: ${survivors[*]}"
exit 0
}
