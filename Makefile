# erlang_python — thin wrapper around rebar3 and c_src/Makefile.
# `make demo` and `make test` install what is missing (Debian 12, as root).
REBAR ?= rebar3
EBIN := _build/default/lib/erlang_python/ebin
ERL_RUN := erl -noshell -pa $(EBIN)

.PHONY: all deps compile demo shell test test-subinterp test-isolated test-elixir ct asan valgrind lint dialyzer xref docs docs-check release-check bench clean

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
# First against Debian's Python 3.11 (execution_mode shared_gil), then, when
# pyenv has Python $(SUBINTERP_PY), against a build for it, where the
# workers are own-GIL sub-interpreters (execution_mode auto -> subinterp).
SUBINTERP_PY ?= 3.13
PYENV_ROOT ?= $(HOME)/.pyenv
test: compile
	@escript test/run_ct.escript $(SUITES)
	@$(MAKE) -s test-subinterp
	@$(MAKE) -s test-isolated
	@$(MAKE) -s test-elixir

# The suites that make sense for isolated workers (docs/isolation.md), run
# again on a pool of them (py_isolated_SUITE runs in every battery: its own
# nodes are isolated).  The cases of these suites that need what the mode
# lacks are listed with the reason in test/run_ct.escript.
ISOLATED_SUITES ?= py_core_SUITE,py_callback_SUITE,py_context_SUITE,py_smoke_SUITE,py_compat_SUITE,py_hostile_SUITE,py_prop_SUITE,py_runtime_SUITE,py_dist_SUITE
test-isolated: compile
	@CT_EXECUTION_MODE=isolated escript test/run_ct.escript $(or $(SUITES),$(ISOLATED_SUITES))

test-subinterp: compile
	@if ls -d $(PYENV_ROOT)/versions/$(SUBINTERP_PY).* >/dev/null 2>&1; then \
	   $(MAKE) -s -C c_src PY=$(SUBINTERP_PY) && \
	   ERLANG_PYTHON_NIF=$(CURDIR)/_build/py$(SUBINTERP_PY)/py_nif.so \
	   escript test/run_ct.escript $(SUITES); \
	 else \
	   echo "test: no pyenv Python $(SUBINTERP_PY) under $(PYENV_ROOT): sub-interpreter run not done"; \
	 fi

# ExUnit tests of the Elixir API (lib/, test/elixir/) through Mix (mix.exs),
# which builds src/, lib/ and the NIF to _build/test (rebar3's is
# _build/default).  No deps, so no Hex: HEX_OFFLINE keeps Mix off hex.pm.
MIX ?= mix
test-elixir: deps
	@MIX_ENV=test HEX_OFFLINE=1 $(MIX) test

ct: test

# The suites against an AddressSanitizer + UBSan build of the NIF
# (built to _build/asan/, beside the normal one).  A report fails the run.
# By default every suite but py_leak_SUITE, whose RSS checks cannot hold
# while ASan keeps freed memory in quarantine (it runs in `make test`).
ASAN_SUITES := $(shell ls test/*_SUITE.erl | xargs -n1 basename | sed 's/\.erl$$//' | grep -v '^py_leak_SUITE$$' | paste -sd, -)
asan: compile
	@$(MAKE) -s -C c_src SANITIZE=1
	@ERLANG_PYTHON_NIF=$(CURDIR)/_build/asan/py_nif.so \
	 LD_PRELOAD=$$(gcc -print-file-name=libasan.so):$$(gcc -print-file-name=libubsan.so) \
	 ASAN_OPTIONS=detect_leaks=0:handle_segv=0:allow_user_segv_handler=1:abort_on_error=1 \
	 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	 escript test/run_ct.escript $(or $(SUITES),$(ASAN_SUITES))

# The whole BEAM under valgrind memcheck, against the normal build, over a
# few suites (default in scripts/valgrind.sh; SUITES=name,name to pick).
# Fails on any report that scripts/valgrind.supp does not explain.  Slow.
valgrind: compile
	@scripts/ensure-deps.sh valgrind
	@scripts/valgrind.sh $(SUITES)

# Static checks: cppcheck, clang-tidy and gcc -fanalyzer over c_src/, then
# rebar3 xref and dialyzer.  Runs them all; fails if any of them complains.
lint: compile
	@scripts/ensure-deps.sh "cppcheck clang-tidy"
	@scripts/lint.sh

dialyzer: compile
	@$(REBAR) dialyzer

xref: compile
	@$(REBAR) xref

# Reference pages (edoc) in _build/edoc/, index.html first; fails if an
# export has no @doc.  docs/overview.edoc is the front page (links to the
# guides in docs/).
docs: compile
	@$(REBAR) edoc
	@escript scripts/check_docs.escript src
	@echo "docs: $(CURDIR)/_build/edoc/index.html"

# The reference pages opened in headless Chromium (installed if missing):
# each module's page and the overview render, every API function has its
# entry, the guide links resolve; screenshots in _build/edoc/screenshots/.
docs-check: docs
	@scripts/ensure-deps.sh chromium
	@scripts/check_docs_browser.sh

# A release (rebar3 release, _build/default/rel/erlang_python) built,
# started as a daemon, asked a call (NIF from the release's priv/), stopped.
release-check: compile
	@scripts/check_release.sh

bench: compile
	@escript bench/bench.escript
	@if ls -d $(PYENV_ROOT)/versions/$(SUBINTERP_PY).* >/dev/null 2>&1; then \
	   $(MAKE) -s -C c_src PY=$(SUBINTERP_PY) && \
	   escript bench/modes.escript $(CURDIR)/_build/py$(SUBINTERP_PY)/py_nif.so; \
	 fi

clean:
	@$(REBAR) clean
	@$(MAKE) -s -C c_src clean
	@rm -rf _build/ct_logs
