#!/usr/bin/env bash
# Static checks for erlang_python; `make lint` calls it after compiling.
#   C (c_src/*.c, c_src/worker/*.c): cppcheck, clang-tidy (curated checks), gcc -fanalyzer,
#                  layers (scripts/layers.py: dependencies between units
#                  run one way, no cycles)
#   Erlang:        rebar3 xref, rebar3 dialyzer, edoc (scripts/check_docs.escript:
#                  every export has @doc; -spec is the compiler's warn_missing_spec)
# Every tool runs even when an earlier one complained; the exit status is 1
# if any of them reported something, and the last line says which.
# LINT_TOOLS="cppcheck clang-tidy" (a subset of: cppcheck clang-tidy
# fanalyzer layers xref dialyzer edoc) runs only those; LINT_VERBOSE=1 shows clang-tidy's
# full analyzer paths (by default one line per finding).
set -uo pipefail
cd "$(dirname "$0")/.."

TOOLS="${LINT_TOOLS:-cppcheck clang-tidy fanalyzer layers xref dialyzer edoc}"
ERL="${ERL:-erl}"
REBAR="${REBAR:-rebar3}"
PYTHON_INCLUDE="${PYTHON_INCLUDE:-$(/usr/bin/python3 -c 'import sysconfig; print(sysconfig.get_path("include"))')}"
ERTS_INCLUDE="$("$ERL" -noshell -eval \
    'io:format("~ts/erts-~ts/include", [code:root_dir(), erlang:system_info(version)]), halt().')"
ARCH="$(gcc -dumpmachine)"                      # x86_64-linux-gnu
PYCONFIG="/usr/include/$ARCH/$(basename "$PYTHON_INCLUDE")/pyconfig.h"
case "$ARCH" in                                 # what Debian's pyconfig.h dispatches on
    x86_64-*)  CPU_DEFS=(-D__x86_64__ -D__LP64__) ;;
    aarch64-*) CPU_DEFS=(-D__aarch64__ -D__LP64__) ;;
    *)         CPU_DEFS=() ;;
esac
SRCS=(c_src/*.c c_src/worker/*.c)
DEFS=(-DPYN_LIBPYTHON='"libpython3.11.so.1.0"' -DPYN_PROGRAM='"/usr/bin/python3"')
failed=()

run() { # name, command...: runs it, records a failure
    local name=$1; shift
    echo "==> $name"
    if "$@" 2>&1; then echo "    $name: clean"; else failed+=("$name"); fi
}

has() { [[ " $TOOLS " == *" $1 "* ]]; }

# cppcheck cannot run the system headers through its preprocessor, so it
# gets the project's headers, erts's and Python's; Debian's pyconfig.h only
# dispatches on __x86_64__/__linux__ to the multiarch one, which is included
# up front; UCHAR_MAX is the one <limits.h> value pyport.h insists on.
cppcheck_run() {
    cppcheck --quiet --error-exitcode=1 --inline-suppr \
        --enable=warning,performance,portability \
        --std=c11 --library=posix,gnu,python \
        --suppress=missingIncludeSystem \
        -I c_src -I "$ERTS_INCLUDE" -I "$PYTHON_INCLUDE" \
        --include="$PYCONFIG" \
        -D__linux__ "${CPU_DEFS[@]}" -DUCHAR_MAX=255 "${DEFS[@]}" \
        "${SRCS[@]}"
}

# clang-tidy: the static analyzer plus bug-prone patterns, minus checks
# that only restate our deliberate choices:
#   bugprone-easily-swappable-parameters  every (env, term, term) NIF helper
#   bugprone-reserved-identifier          _GNU_SOURCE, PY_SSIZE_T_CLEAN
#   bugprone-not-null-terminated-result   memcpy into Erlang binaries, which
#                                         are not C strings
#   clang-analyzer-security.insecureAPI.DeprecatedOrUnsafeBufferHandling
#                                         memcpy/snprintf "use _s variants"
#   misc-no-recursion                     the depth-limited term converters
# concurrency-mt-unsafe flags libc calls that glibc documents as not
# thread-safe (the NIF runs on many threads).
TIDY_CHECKS='-*,clang-analyzer-*,-clang-analyzer-security.insecureAPI.DeprecatedOrUnsafeBufferHandling,bugprone-*,-bugprone-easily-swappable-parameters,-bugprone-reserved-identifier,-bugprone-not-null-terminated-result,concurrency-*,performance-*,portability-*,cert-err34-c,cert-flp30-c,cert-msc30-c,cert-msc50-c'
clang_tidy_run() {
    local out rc=0
    out=$(clang-tidy --quiet --checks="$TIDY_CHECKS" --warnings-as-errors='*' \
              --config="{CheckOptions: [{key: concurrency-mt-unsafe.FunctionSet, value: glibc}]}" \
              "${SRCS[@]}" -- -std=gnu11 -I c_src -I "$ERTS_INCLUDE" -I "$PYTHON_INCLUDE" \
              "${DEFS[@]}" 2>&1) || rc=1
    if [ -n "${LINT_VERBOSE:-}" ]; then
        grep -v -E '^[0-9]+ warnings? (and [0-9]+ errors? )?generated\.$' <<<"$out" || true
    else
        grep -E ': (error|warning): ' <<<"$out" | sed "s|^$PWD/||" || true
    fi
    return $rc
}

# gcc's static analyzer (leaks, double free, use after free, NULL
# dereference along paths), at -O0 so that nothing is optimised away.
fanalyzer_run() {
    local rc=0 f
    for f in "${SRCS[@]}"; do
        gcc -fanalyzer -Werror -std=gnu11 -O0 -Wall -Wextra -I c_src -I "$ERTS_INCLUDE" \
            -I "$PYTHON_INCLUDE" "${DEFS[@]}" -c "$f" -o /dev/null || rc=1
    done
    return $rc
}

has cppcheck   && run cppcheck cppcheck_run
has clang-tidy && run clang-tidy clang_tidy_run
has fanalyzer  && run "gcc -fanalyzer" fanalyzer_run
has layers     && run "layers (one-way dependencies)" python3 scripts/layers.py
has xref       && run "rebar3 xref" "$REBAR" xref
has dialyzer   && run "rebar3 dialyzer" "$REBAR" dialyzer
has edoc       && run "edoc (@doc on every export)" escript scripts/check_docs.escript src

if [ ${#failed[@]} -gt 0 ]; then
    echo "lint: FAILED: ${failed[*]}"
    exit 1
fi
echo "lint: all clean ($TOOLS)"
