# erlang_python — thin wrapper around rebar3 and c_src/Makefile.
# `make demo` and `make test` install what is missing (Debian 12, as root).
REBAR ?= rebar3
EBIN := _build/default/lib/erlang_python/ebin
ERL_RUN := erl -noshell -pa $(EBIN)

.PHONY: all deps compile demo shell test ct asan valgrind lint dialyzer xref bench clean

all: compile

deps:
	@scripts/ensure-deps.sh

compile: deps
	@$(REBAR) compile

demo: compile
	@escript examples/demo.escript

shell: compile
	@erl -pa $(EBIN) -eval 'application:ensure_all_started(erlang_python)'

# Common Test suites (test/*_SUITE.erl); SUITES=name,name to pick some.
test: compile
	@escript test/run_ct.escript $(SUITES)

ct: test

# The suites against an AddressSanitizer + UBSan build of the NIF
# (built to _build/asan/, beside the normal one).  A report fails the run.
asan: compile
	@$(MAKE) -s -C c_src SANITIZE=1
	@ERLANG_PYTHON_NIF=$(CURDIR)/_build/asan/py_nif.so \
	 LD_PRELOAD=$$(gcc -print-file-name=libasan.so):$$(gcc -print-file-name=libubsan.so) \
	 ASAN_OPTIONS=detect_leaks=0:handle_segv=0:allow_user_segv_handler=1:abort_on_error=1 \
	 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	 escript test/run_ct.escript $(SUITES)

dialyzer: compile
	@$(REBAR) dialyzer

xref: compile
	@$(REBAR) xref

bench: compile
	@escript bench/bench.escript

clean:
	@$(REBAR) clean
	@$(MAKE) -s -C c_src clean
	@rm -rf _build/ct_logs
