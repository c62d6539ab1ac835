#!/usr/bin/env bash
# Runs Common Test suites with the whole BEAM under valgrind memcheck, against
# the normal build of the NIF (priv/py_nif.so).  `make valgrind` calls it;
# SUITES=a_SUITE,b_SUITE picks the suites (default below: about 1-3 minutes);
# VALGRIND_EXTRA adds valgrind options (e.g. --gen-suppressions=all);
# ERLANG_PYTHON_NIF, if set, loads another (non-ASan) build of the NIF.
# py_callback_SUITE comes first: its init_per_suite fails once another suite
# has loaded the application (application:load -> already_loaded).
#
# Exit status: 0 when the suites pass and memcheck reports nothing that
# scripts/valgrind.supp does not explain; 42 when memcheck reports an error
# (the report is printed, the full log is in _build/valgrind/); else the
# status of the test run.
#
# Why it looks the way it does (OTP 25's JIT under memcheck):
#  * beam.smp is started directly, with the arguments erlexec would give it
#    (`erlexec -emu_args_exit`), so valgrind watches the emulator and not
#    the erl shell script; forked helpers (erl_child_setup) run natively.
#  * --smc-check=all: JIT code lives in a memfd double mapping, which the
#    default (anonymous mappings only) does not watch for code patching;
#    without it the emulator crashes on stale translations.
#  * ERLANG_PYTHON_COPY_REQUESTS=1: requests are always copied, never read
#    in place on the caller's heap (borrowed, see c_src/reply.c).  That heap
#    is where the JIT keeps the caller's Erlang stack, so memcheck marks its
#    live words unaddressable (below) and a worker reading them is reported.
#    `make asan` checks the borrowed path.
#  * The suites are compiled natively first and run with auto_compile off:
#    the Erlang compiler run under valgrind crashes (GC) with this JIT.
#  * The JIT runs Erlang code on the process stack, inside the Erlang heap
#    block, and moves the machine stack pointer between that and the C stack.
#    Memcheck's stack-pointer tracking then marks live Erlang heap memory
#    "undefined"/"unaddressable".  Three settings keep that noise away from
#    the threads that matter (our Python workers):
#      +Mea min                 erts takes all memory from malloc, so a block
#                               re-used for a job's environment is fresh to
#                               memcheck instead of carrying stale marks;
#      --max-stackframe=65536   a jump of the stack pointer by more than
#                               64 KiB is a stack switch, not a huge frame
#                               whose range (other threads' objects) would
#                               be repainted;
#      --undef-value-errors=no  definedness cannot be trusted for data that
#                               came from an Erlang heap (binaries copied
#                               into requests), so only addressability is
#                               checked: overflows, use after free, double
#                               free, leaks.
#    What remains on scheduler threads is suppressed in scripts/valgrind.supp
#    (every stack that runs through JIT code): memcheck cannot check our NIF
#    entry points there; `make asan` does.
#  * PYTHONMALLOC=malloc: every Python object is its own malloc block, so
#    memcheck sees a use after free or an over-decref'd object in our C code
#    (pymalloc would hide them inside its arenas).
set -euo pipefail
cd "$(dirname "$0")/.."

SUITES="${1:-${SUITES:-py_callback_SUITE,py_core_SUITE,py_smoke_SUITE}}"
OUT=_build/valgrind
LOG="$OUT/memcheck.log"
ERL="${ERL:-erl}"

command -v valgrind >/dev/null || { echo "valgrind: not installed (scripts/ensure-deps.sh valgrind)"; exit 1; }
[ -f priv/py_nif.so ] || { echo "valgrind: priv/py_nif.so missing: run make compile first"; exit 1; }

read -r ROOTDIR VSN < <("$ERL" -noshell -eval \
    'io:format("~ts ~ts~n", [code:root_dir(), erlang:system_info(version)]), halt().')
BINDIR="$ROOTDIR/erts-$VSN/bin"
export ROOTDIR BINDIR EMU=beam PROGNAME=erl

# Compile the chosen suites natively, beside symlinks to their data dirs
# (test/ itself is left alone: others may be running the suites).
rm -rf "$OUT/test" "$OUT/ct_logs"
mkdir -p "$OUT/test" "$OUT/ct_logs"
# The helpers every suite calls (test/py_test_lib.erl) go beside them.
erlc +debug_info -I include -o "$OUT/test" test/py_test_lib.erl
for s in ${SUITES//,/ }; do
    [ -f "test/$s.erl" ] || { echo "valgrind: no such suite: test/$s.erl"; exit 1; }
    erlc +debug_info -I include -o "$OUT/test" "test/$s.erl"
    if [ -d "test/${s}_data" ]; then ln -s "$PWD/test/${s}_data" "$OUT/test/${s}_data"; fi
done

# The emulator's own argument vector, as erl would build it.
mapfile -t ARGS < <("$BINDIR/erlexec" -emu_args_exit \
    +B +sbwt none +sbwtdcpu none +sbwtdio none +Mea min \
    -boot no_dot_erlang -noshell \
    -run escript start -extra scripts/valgrind-ct.escript "$SUITES")

echo "valgrind: memcheck over $SUITES (log: $LOG)"
start=$(date +%s)
set +e
ERLANG_PYTHON_COPY_REQUESTS=1 PYTHONMALLOC=malloc valgrind \
    --tool=memcheck \
    --error-exitcode=42 \
    --suppressions=scripts/valgrind.supp \
    --track-origins=no \
    --undef-value-errors=no \
    --smc-check=all \
    --max-stackframe=65536 \
    --fair-sched=yes \
    --num-callers=64 \
    --child-silent-after-fork=yes \
    --leak-check=full \
    --show-leak-kinds=definite \
    --errors-for-leak-kinds=definite \
    --log-file="$LOG" \
    ${VALGRIND_EXTRA:-} \
    "$BINDIR/beam.smp" "${ARGS[@]}"
rc=$?
set -e
echo "valgrind: $(grep -h 'ERROR SUMMARY' "$LOG" | sed 's/^==[0-9]*== //') [$(( $(date +%s) - start ))s]"
if [ "$rc" = 42 ]; then
    # Print the unsuppressed reports (not the leak summary or the banner).
    awk '/^==[0-9]+== (Invalid|Mismatched|Source and destination|Syscall param|Jump to|Argument|Process terminating)|are definitely lost/ {p=1}
         p {print} /^==[0-9]+== $/ {p=0}' "$LOG" | head -400
    echo "valgrind: memcheck found errors in our code (see above and $LOG)"
elif [ "$rc" != 0 ]; then
    grep -h -A12 'Process terminating' "$LOG" || true
    echo "valgrind: the test run failed (exit $rc); CT logs in $OUT/ct_logs"
fi
exit "$rc"
