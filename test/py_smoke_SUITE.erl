%% Smoke test: the application starts, each kind of request answers.
-module(py_smoke_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-export([all/0, init_per_suite/1, end_per_suite/1]).
-export([call_eval_exec/1, error_and_timeout/1]).

all() -> [call_eval_exec, error_and_timeout].

init_per_suite(Config) ->
    py_test_lib:start_suite(Config, fun(_DataDir) -> [] end).

end_per_suite(Config) ->
    ok = py_test_lib:stop_suite(Config).

call_eval_exec(_Config) ->
    ?assertEqual({ok, 4.0}, py:call(math, sqrt, [16])),
    ?assertEqual({ok, 2}, py:eval(<<"1 + 1">>)),
    ?assertEqual(ok, py:exec(<<"import os">>)),
    ?assertMatch({ok, <<"3.", _/binary>>}, py:version()).

error_and_timeout(_Config) ->
    ?assertEqual({error, {'ZeroDivisionError', <<"division by zero">>}}, py:eval(<<"1/0">>)),
    ?assertEqual({error, timeout}, py:exec(<<"while True: pass">>, #{}, 100)),
    ?assertEqual({ok, 3}, py:eval(<<"1 + 2">>)).
