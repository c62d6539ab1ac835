%% Drop-in behaviour for users of the original library (docs/compatibility.md):
%% the `erlang' module without an import in every namespace, eval of
%% statements ending with an expression, the default overload limit, and
%% pool statistics that count what a caller can get.
-module(py_compat_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_group/2, end_per_group/2]).
-export([erlang_module_everywhere/1, erlang_module_after_wipe/1,
         erlang_module_after_reload/1, eval_statements_then_expression/1,
         default_max_concurrent/1, sixteen_workers_all_busy/1,
         stats_count_given_up_worker/1]).

-import(py_test_lib, [wait_until/2]).

suite() ->
    [{timetrap, {seconds, 60}}].

all() ->
    [{group, four_workers}, {group, sixteen_workers}].

groups() ->
    [{four_workers, [], [erlang_module_everywhere, erlang_module_after_wipe,
                         erlang_module_after_reload, eval_statements_then_expression,
                         default_max_concurrent, stats_count_given_up_worker]},
     {sixteen_workers, [], [sixteen_workers_all_busy]}].

init_per_suite(Config) ->
    [{saved_env, py_test_lib:save_env([num_workers, max_concurrent, cancel_grace_ms])} | Config].

end_per_suite(Config) ->
    _ = py_test_lib:stop_app(?config(saved_env, Config)),
    ok.

init_per_group(Group, Config) ->
    N = case Group of four_workers -> 4; sixteen_workers -> 16 end,
    _ = py_test_lib:start_app([{num_workers, N}, {max_concurrent, undefined},
                               {cancel_grace_ms, 500}]),
    ok = py:register_function(my_func, fun([X, Y]) -> X + Y end),
    [{num_workers, N} | Config].

end_per_group(_Group, _Config) ->
    ok = application:stop(erlang_python).

%%====================================================================

%% The original README's two spellings, unbound, bound, on contexts and in
%% exec/ctx_exec, with and without locals.
erlang_module_everywhere(_Config) ->
    ?assertEqual({ok, 30}, py:eval(<<"erlang.call('my_func', 10, 20)">>)),
    ?assertEqual({ok, 30}, py:eval(<<"erlang.my_func(10, 20)">>)),
    ?assertEqual({ok, 7}, py:eval(<<"erlang.my_func(x, 2)">>, #{x => 5})),
    ?assertEqual(ok, py:exec(<<"assert erlang.my_func(1, 2) == 3">>)),
    %% every worker's namespace has it
    Res = concurrently(8, fun() -> py:eval(<<"erlang.my_func(2, 2)">>) end),
    ?assertEqual(lists:duplicate(8, {ok, 4}), Res),
    ok = py:bind(),
    ?assertEqual({ok, 3}, py:eval(<<"erlang.my_func(1, 2)">>)),
    ok = py:unbind(),
    {ok, C} = py:bind(new),
    ?assertEqual({ok, 5}, py:ctx_eval(C, <<"erlang.call('my_func', 2, 3)">>)),
    ?assertEqual(ok, py:ctx_exec(C, <<"v = erlang.my_func(3, 3)">>)),
    ?assertEqual({ok, 6}, py:ctx_eval(C, <<"v">>)),
    ok = py:unbind(C),
    %% it is the real module, the one `import erlang' gives
    ?assertEqual({ok, true}, py:eval(<<"erlang is __import__('erlang')">>)).

%% What a holder leaves is wiped, `erlang' comes back; a holder that deletes
%% or rebinds the name does not take it from the next holder.
erlang_module_after_wipe(Config) ->
    N = ?config(num_workers, Config),
    Ctxs = [begin {ok, C} = py:bind(new), C end || _ <- lists:seq(1, N)],
    [?assertEqual(ok, py:ctx_exec(C, <<"del erlang">>)) || C <- Ctxs],
    [?assertMatch({error, {'NameError', _}}, py:ctx_eval(C, <<"erlang">>)) || C <- Ctxs],
    [ok = py:unbind(C) || C <- Ctxs],
    ok = py_test_lib:wait_pool_idle(N, 5000),
    Ctxs2 = [begin {ok, C} = py:bind(new), C end || _ <- lists:seq(1, N)],
    [?assertEqual({ok, 30}, py:ctx_eval(C, <<"erlang.my_func(10, 20)">>)) || C <- Ctxs2],
    [ok = py:unbind(C) || C <- Ctxs2],
    ok = py_test_lib:wait_pool_idle(N, 5000).

erlang_module_after_reload(_Config) ->
    ?assertEqual(ok, py:reload(json)),
    ?assertEqual(ok, py:reload("json")),
    ?assertEqual(ok, py:reload(<<"json">>)),
    ?assertEqual({ok, 30}, py:eval(<<"erlang.my_func(10, 20)">>)),
    {ok, C} = py:bind(new),
    ?assertEqual(ok, py:reload(json)),
    ?assertEqual({ok, 30}, py:ctx_eval(C, <<"erlang.my_func(10, 20)">>)),
    ok = py:unbind(C).

%% The original's guides evaluate "import ...; expression": the statements
%% run, then the expression is the result.  Anything else stays a
%% SyntaxError.
eval_statements_then_expression(_Config) ->
    ?assertEqual({ok, <<"2024-01-15T10:30:00">>},
                 py:eval(<<"from datetime import datetime; datetime(2024,1,15,10,30).isoformat()">>)),
    ?assertEqual({ok, <<"[1, 2]">>}, py:eval(<<"import json\njson.dumps(v)">>, #{v => [1, 2]})),
    ?assertEqual({ok, 3}, py:eval(<<"a = 1; b = 2; a + b">>)),
    %% cached: the same source again
    ?assertEqual({ok, 3}, py:eval(<<"a = 1; b = 2; a + b">>)),
    ?assertMatch({error, {'SyntaxError', _}}, py:eval(<<"x = 1">>)),
    ?assertMatch({error, {'SyntaxError', _}}, py:eval(<<"1 +">>)),
    ?assertMatch({error, {'SyntaxError', _}}, py:eval(<<"import json; def (:">>)),
    ?assertMatch({error, {'ZeroDivisionError', _}}, py:eval(<<"import math; 1 / 0">>)),
    %% the statements' exception, not the expression's
    ?assertMatch({error, {'ModuleNotFoundError', _}}, py:eval(<<"import no_such_mod_q; 1">>)).

%% Default: num_workers + schedulers * 2 + 1; still adjustable.
default_max_concurrent(Config) ->
    N = ?config(num_workers, Config),
    Default = N + erlang:system_info(schedulers) * 2 + 1,
    ?assertEqual(Default, py_semaphore:max_concurrent()),
    ok = py_semaphore:set_max_concurrent(2),
    ?assertEqual(2, py_semaphore:max_concurrent()),
    ok = py_semaphore:set_max_concurrent(Default),
    ?assertEqual(Default, py_semaphore:max_concurrent()).

%% 16 workers, default limit: 32 callers of a 0.3 s sleep keep all 16
%% workers busy at once (the old default, 5, let 5 run): each call reports
%% when it ran, and 16 of those intervals overlap.
sixteen_workers_all_busy(_Config) ->
    ?assertEqual(16 + erlang:system_info(schedulers) * 2 + 1, py_semaphore:max_concurrent()),
    Code = <<"(__import__('time').monotonic(), __import__('time').sleep(0.3),"
             " __import__('time').monotonic(), __import__('threading').get_ident())">>,
    Results = concurrently(32, fun() -> py:eval(Code, #{}, 20000) end),
    Runs = [{Start, End, T} || {ok, {Start, none, End, T}} <- Results],
    ?assertEqual(32, length(Runs)),
    ?assertEqual(16, length(lists:usort([T || {_, _, T} <- Runs]))),
    ?assertEqual(16, max_overlap(Runs)),
    ok = py_test_lib:wait_pool_idle(16, 5000).

%% The largest number of intervals running at one instant.
max_overlap(Runs) ->
    Events = lists:sort([{S, 1} || {S, _, _} <- Runs] ++ [{E, -1} || {_, E, _} <- Runs]),
    {_, Max} = lists:foldl(fun({_, D}, {Cur, M}) -> {Cur + D, max(M, Cur + D)} end,
                           {0, 0}, Events),
    Max.

%% A bound worker whose caller gave up on a 20 s sleep is not available:
%% stats say so at once, and within cancel_grace_ms (500 ms here) a
%% replacement makes every worker bindable again, long before the sleep ends.
stats_count_given_up_worker(Config) ->
    N = ?config(num_workers, Config),
    {ok, C} = py:bind(new),
    ?assertEqual({error, timeout},
                 py:ctx_eval(C, <<"__import__('time').sleep(20)">>, #{}, 200)),
    ok = py:unbind(C),
    #{available_workers := Avail} = py_pool:get_stats(),
    Ctxs = bind_all(Avail, []),
    %% as many bindings as stats promised, no fewer
    ?assertEqual(Avail, length(Ctxs)),
    [ok = py:unbind(X) || X <- Ctxs],
    T0 = erlang:monotonic_time(millisecond),
    ok = py_test_lib:wait_pool_idle(N, 5000),
    All = bind_all(N, []),
    Waited = erlang:monotonic_time(millisecond) - T0,
    ?assertEqual(N, length(All)),
    [ok = py:unbind(X) || X <- All],
    ct:pal("all ~p workers bindable again after ~p ms", [N, Waited]),
    ok = py_test_lib:wait_pool_idle(N, 5000).

concurrently(K, Fun) ->
    Self = self(),
    Pids = [spawn_link(fun() -> Self ! {self(), Fun()} end) || _ <- lists:seq(1, K)],
    [receive {P, R} -> R after 10000 -> timeout end || P <- Pids].

bind_all(0, Acc) -> Acc;
bind_all(K, Acc) ->
    case py:bind(new) of
        {ok, C} -> bind_all(K - 1, [C | Acc]);
        {error, _} -> Acc
    end.
