#!/usr/bin/env bash
# Builds the release (rebar3 release: _build/default/rel/erlang_python,
# with an ERTS) and starts it as a daemon: the application must come up
# with the NIF found in the release's own priv/ (no ERLANG_PYTHON_NIF), and
# answer a call, an eval and a logging record; then it is stopped.  Exits 1
# on any problem.
set -euo pipefail
cd "$(dirname "$0")/.."
unset ERLANG_PYTHON_NIF
rebar3 release >/dev/null
REL=_build/default/rel/erlang_python
BIN=$REL/bin/erlang_python
"$BIN" daemon
trap '"$BIN" stop >/dev/null 2>&1 || true' EXIT
for _ in $(seq 1 50); do "$BIN" ping >/dev/null 2>&1 && break; sleep 0.2; done
out=$("$BIN" eval '
  Priv = code:priv_dir(erlang_python),
  InRel = lists:prefix("'"$PWD/$REL"'", Priv)
          andalso filelib:is_file(filename:join(Priv, "py_nif.so"))
          andalso filelib:is_file(filename:join(Priv, "_erlang_python_codec.so")),
  Call = py:call(math, sqrt, [16]),
  Eval = py:eval(<<"sum(range(10))">>),
  case {InRel, Call, Eval} of
      {true, {ok, 4.0}, {ok, 45}} -> release_ok;
      Other -> {release_broken, Priv, Other}
  end.')
"$BIN" stop >/dev/null
trap - EXIT
for _ in $(seq 1 50); do "$BIN" ping >/dev/null 2>&1 || break; sleep 0.2; done
if [ "$out" = release_ok ]; then
  echo "release-check: $REL starts, loads priv/py_nif.so from the release (the isolated workers' codec beside it), answers; stopped"
else
  echo "release-check: FAILED: $out"; exit 1
fi
