%% Context affinity: py:bind/unbind, explicit contexts, with_context, the
%% pool's bookkeeping (py_pool:get_stats/0, py_pool:workers/0), cleanup when
%% binders or workers die, namespace wiping, thread affinity, and a stress run.
%%
%% Every code block of the user guide (context-affinity.md, a copy of which is
%% in py_context_SUITE_data/) appears verbatim, at column 0, as the body of one
%% of the example_* functions at the end of this file; the doc_* test cases
%% run them and assert what they return and what they leave behind.  Where a
%% block's own last value is not what must be checked, its final `.' became
%% `,' followed by the value to check (example_database_connections,
%% example_incremental_processing, and example_process_death, whose `Pid'
%% would otherwise be an unused variable).  The case doc_blocks_verbatim
%% checks all of this against the guide.
-module(py_context_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, suite/0,
         init_per_suite/1, end_per_suite/1,
         init_per_group/2, end_per_group/2,
         init_per_testcase/2, end_per_testcase/2]).

%% guide examples
-export([doc_process_implicit_binding/1, doc_checking_binding_status/1,
         doc_explicit_contexts/1, doc_with_context_implicit/1,
         doc_with_context_explicit/1, doc_process_death/1, doc_worker_crash/1,
         doc_stateful_computation/1, doc_database_connections/1,
         doc_incremental_processing/1, doc_no_workers_available/1,
         doc_context_not_bound/1, doc_pool_statistics/1, doc_blocks_verbatim/1]).
%% behaviour
-export([stats_during_binding/1, exhaustion_from_many_processes/1,
         binder_killed_releases_workers/1, bound_worker_killed/1, bound_worker_killed_mid_call/1,
         namespace_wiped_between_holders/1, with_context_raising_fun/1,
         ctx_used_from_other_process/1, thread_affinity/1, bind_idempotent/1,
         unbind_when_not_bound/1, unbind_ctx_twice/1, is_bound_transitions/1,
         main_calls_on_bound_worker/1, stress_many_binders/1,
         binders_do_not_starve_queue/1, bound_calls_need_no_slot/1]).

-import(py_test_lib, [wait_until/2]).

-define(STATS_KEYS, [num_workers, available_workers, checked_out, pending_requests]).

suite() ->
    [{timetrap, {seconds, 60}}].

all() ->
    [{group, doc_examples}, {group, doc_examples_8_workers},
     {group, affinity}, {group, stress}].

groups() ->
    [{doc_examples, [],
      [doc_blocks_verbatim, doc_process_implicit_binding, doc_checking_binding_status,
       doc_explicit_contexts, doc_with_context_implicit, doc_with_context_explicit,
       doc_process_death, doc_worker_crash, doc_stateful_computation,
       doc_database_connections, doc_incremental_processing,
       doc_no_workers_available, doc_context_not_bound]},
     {doc_examples_8_workers, [], [doc_pool_statistics]},
     {affinity, [],
      [stats_during_binding, exhaustion_from_many_processes,
       binder_killed_releases_workers, bound_worker_killed, bound_worker_killed_mid_call,
       namespace_wiped_between_holders, with_context_raising_fun,
       ctx_used_from_other_process, thread_affinity, bind_idempotent,
       unbind_when_not_bound, unbind_ctx_twice, is_bound_transitions,
       main_calls_on_bound_worker]},
     {stress, [], [stress_many_binders, binders_do_not_starve_queue, bound_calls_need_no_slot]}].

init_per_suite(Config) ->
    Saved = py_test_lib:save_env([num_workers, python_path]),
    [{saved_env, Saved} | Config].

end_per_suite(Config) ->
    _ = py_test_lib:stop_app(?config(saved_env, Config)),
    ok.

%% Each group gets a freshly started application with its own pool size; the
%% data directory (ctx_support.py) is on sys.path.
init_per_group(Group, Config) ->
    N = case Group of
            doc_examples_8_workers -> 8;
            _ -> 4
        end,
    _ = py_test_lib:start_app([{num_workers, N},
                               {python_path, [?config(data_dir, Config)]}]),
    ?assertEqual(idle(N), stats()),
    [{num_workers, N} | Config].

end_per_group(_Group, _Config) ->
    ok = application:stop(erlang_python).

%% A case starts on an idle pool (bindings of an earlier case's process are
%% released asynchronously when that process ends).
init_per_testcase(_Case, Config) ->
    ok = py_test_lib:wait_pool_idle(?config(num_workers, Config), 5000),
    Config.

end_per_testcase(_Case, _Config) ->
    _ = py:unbind(),
    ok.

%%====================================================================
%% Guide examples
%%====================================================================

doc_blocks_verbatim(Config) ->
    Guide = read(filename:join(?config(data_dir, Config), "context-affinity.md")),
    Source = read(filename:join(?config(data_dir, Config), "../py_context_SUITE.erl")),
    Blocks = erlang_blocks(Guide),
    ?assertEqual(13, length(Blocks)),
    Missing = [B || B <- Blocks, not appears_verbatim(B, Source)],
    ?assertEqual([], Missing).

doc_process_implicit_binding(_Config) ->
    ?assertEqual(ok, example_process_implicit_binding()),
    ?assertNot(py:is_bound()),
    ?assertEqual(idle(4), stats()),
    %% the worker was wiped when released
    ?assertEqual(ok, py:bind()),
    ?assertMatch({error, {'NameError', _}}, py:eval(<<"counter">>)),
    ?assertEqual(ok, py:unbind()).

doc_checking_binding_status(_Config) ->
    ?assertEqual(false, example_checking_binding_status()),
    ?assertEqual(idle(4), stats()).

doc_explicit_contexts(_Config) ->
    ?assertEqual(ok, example_explicit_contexts()),
    ?assertNot(py:is_bound()),
    ?assertEqual(idle(4), stats()).

doc_with_context_implicit(_Config) ->
    ?assertEqual({ok, 45}, example_with_context_implicit()),
    ?assertNot(py:is_bound()),
    ?assertEqual(idle(4), stats()).

doc_with_context_explicit(_Config) ->
    ?assertEqual({ok, <<"{\"key\": \"value\"}">>}, example_with_context_explicit()),
    ?assertNot(py:is_bound()),
    ?assertEqual(idle(4), stats()).

%% The pool is held up while the example spawns its process, so that the
%% process is monitored before it can end: its exit reason `normal' proves
%% `ok = py:bind()' matched; then its worker must come back.
doc_process_death(_Config) ->
    ok = sys:suspend(py_pool),
    {Pid, MRef} = try
                      P = example_process_death(),
                      {P, erlang:monitor(process, P)}
                  after
                      ok = sys:resume(py_pool)
                  end,
    ?assert(is_pid(Pid)),
    ?assertEqual(normal, receive {'DOWN', MRef, process, Pid, R} -> R
                         after 10000 -> no_down
                         end),
    ?assertEqual(idle(4), wait_until(fun stats/0, fun(S) -> S =:= idle(4) end)),
    ?assertEqual([false, false, false, false], [B || #{bound := B} <- py_pool:workers()]).

doc_worker_crash(_Config) ->
    ?assertEqual(true, example_worker_crash()),
    Me = self(),
    [#{id := Id, pid := Guardian}] = [W || W = #{bound := {process, P}} <- py_pool:workers(),
                                           P =:= Me],
    ok = py:exec(<<"marker = 'old worker'">>),
    exit(Guardian, kill),
    %% the binding is cleaned up ...
    ?assertEqual(false, wait_until(fun py:is_bound/0, fun(B) -> not B end)),
    ?assertEqual(idle(4), wait_until(fun stats/0, fun(S) -> S =:= idle(4) end)),
    Ws = wait_until(fun py_pool:workers/0,
                    fun(L) -> length(L) =:= 4 andalso
                                  not lists:member(Id, [I || #{id := I} <- L]) end),
    ?assertEqual(4, length(Ws)),
    ?assertNot(lists:member(Id, [I || #{id := I} <- Ws])),
    %% ... and the next bind() gets a fresh worker
    ?assertEqual(ok, py:bind()),
    [#{id := NewId}] = [W || W = #{bound := {process, P}} <- py_pool:workers(), P =:= Me],
    ?assertNotEqual(Id, NewId),
    ?assertMatch({error, {'NameError', _}}, py:eval(<<"marker">>)),
    ?assertEqual({ok, 3}, py:eval(<<"1 + 2">>)),
    ?assertEqual(ok, py:unbind()),
    ?assertEqual(idle(4), stats()).

%% model.pkl holds a ctx_support.Model(10) (ctx_support.py is in the data
%% directory, on sys.path); the example runs with a temporary directory
%% holding it as the current directory.
doc_stateful_computation(Config) ->
    Dir = filename:join(?config(priv_dir, Config), "stateful_computation"),
    ok = filelib:ensure_path(Dir),
    Pkl = filename:join(Dir, "model.pkl"),
    ?assertEqual(ok, py:exec(<<"import pickle, ctx_support\n"
                               "with open(path, 'wb') as f:\n"
                               "    pickle.dump(ctx_support.Model(10), f)\n">>,
                             #{path => unicode:characters_to_binary(Pkl)})),
    ?assert(filelib:is_regular(Pkl)),
    {ok, Cwd} = file:get_cwd(),
    ok = file:set_cwd(Dir),
    Result = try example_stateful_computation()
             after ok = file:set_cwd(Cwd)
             end,
    ?assertEqual({[60], [150]}, Result),
    ?assertNot(py:is_bound()),
    ?assertEqual(idle(4), stats()).

doc_database_connections(_Config) ->
    ?assertEqual([{1, <<"Alice">>}, {2, <<"Bob">>}], example_database_connections()),
    ?assertNot(py:is_bound()),
    ?assertEqual(idle(4), stats()).

%% The example creates its context itself, so `process_item' cannot be put in
%% that context's namespace beforehand; it is made a builtin (visible from
%% every namespace) for the duration of the case.
doc_incremental_processing(_Config) ->
    %% builtins on every worker (with sub-interpreters, each has its own)
    ok = py_test_lib:exec_everywhere(4, <<"import builtins, ctx_support\n"
                                         "builtins.process_item = ctx_support.process_item\n">>, #{}),
    Results = try example_incremental_processing([1, 2, 3, 4, 5])
              after
                  ok = py_test_lib:exec_everywhere(4, <<"import builtins\n"
                                                      "builtins.__dict__.pop('process_item', None)\n">>, #{})
              end,
    ?assertEqual([{1, 1}, {2, 4}, {3, 9}, {4, 16}, {5, 25}], Results),
    ?assertEqual(idle(4), stats()).

%% Every worker is bound first, by several other processes.
doc_no_workers_available(_Config) ->
    Holders = [hold(fun() -> py:bind() end) || _ <- lists:seq(1, 4)],
    try
        ?assertEqual(exhausted(4), stats()),
        ?assertEqual({error, no_workers_available}, example_no_workers_available()),
        ?assertNot(py:is_bound()),
        ?assertEqual({error, no_workers_available}, py:bind(new)),
        ?assertEqual(exhausted(4), stats())
    after
        release(Holders)
    end,
    ?assertEqual(idle(4), wait_until(fun stats/0, fun(S) -> S =:= idle(4) end)),
    ?assertEqual(ok, py:bind()),
    ?assertEqual(ok, py:unbind()).

doc_context_not_bound(_Config) ->
    ?assertError(context_not_bound, example_context_not_bound()),
    ?assertEqual(idle(4), stats()).

%% num_workers 8, two of them bound (one by the process, one context).
doc_pool_statistics(_Config) ->
    ?assertEqual(idle(8), stats()),
    ok = py:bind(),
    {ok, Ctx} = py:bind(new),
    Stats = try example_pool_statistics()
            after
                ok = py:unbind(Ctx),
                ok = py:unbind()
            end,
    ?assertEqual(#{num_workers => 8, available_workers => 6, checked_out => 2,
                   pending_requests => 0}, maps:with(?STATS_KEYS, Stats)),
    ?assertEqual(idle(8), stats()).

%%====================================================================
%% Behaviour
%%====================================================================

stats_during_binding(_Config) ->
    ?assertEqual(idle(4), stats()),
    ok = py:bind(),
    ?assertEqual(st(4, 3, 1), stats()),
    {ok, C1} = py:bind(new),
    ?assertEqual(st(4, 2, 2), stats()),
    {ok, C2} = py:bind(new),
    ?assertEqual(st(4, 1, 3), stats()),
    ok = py:bind(),                       % idempotent: no second worker
    ?assertEqual(st(4, 1, 3), stats()),
    %% calls on bound workers leave nothing pending
    ?assertEqual({ok, 2}, py:ctx_eval(C1, <<"1 + 1">>)),
    ?assertEqual({ok, 2}, py:eval(<<"1 + 1">>)),
    ?assertEqual(st(4, 1, 3), stats()),
    ?assertEqual(3, length([B || #{bound := B} <- py_pool:workers(), B =/= false])),
    ok = py:unbind(C1),
    ?assertEqual(st(4, 2, 2), stats()),
    ok = py:unbind(),
    ?assertEqual(st(4, 3, 1), stats()),
    ok = py:unbind(),
    ?assertEqual(st(4, 3, 1), stats()),
    ok = py:unbind(C2),
    ?assertEqual(idle(4), stats()),
    ?assertEqual([false, false, false, false], [B || #{bound := B} <- py_pool:workers()]).

%% Two processes bind() and a third takes two contexts: every worker is held.
%% bind/0, bind/1, with_context and unbound calls must then answer
%% {error, no_workers_available} at once (each is given a bound: a call with
%% a 5 s timeout would say timeout; a hanging bind would not reply at all).
exhaustion_from_many_processes(_Config) ->
    H1 = hold(fun() -> py:bind() end),
    H2 = hold(fun() -> py:bind() end),
    H3 = hold(fun() -> {ok, _} = py:bind(new), py:bind(new) end),
    Holders = [H1, H2, H3],
    try
        ?assertEqual(exhausted(4), stats()),
        NoWorkers = {error, no_workers_available},
        ?assertEqual(NoWorkers, within(fun() -> py:bind() end)),
        ?assertEqual(NoWorkers, within(fun() -> py:bind(new) end)),
        ?assertEqual(NoWorkers, py:bind()),
        ?assertEqual(NoWorkers, py:bind(new)),
        ?assertNot(py:is_bound()),
        ?assertEqual(NoWorkers, within(fun() -> py:with_context(fun() -> ran end) end)),
        ?assertEqual(NoWorkers, within(fun() -> py:with_context(fun(_) -> ran end) end)),
        ?assertEqual(NoWorkers, py:eval(<<"1 + 1">>, #{}, 5000)),
        ?assertEqual(NoWorkers, py:exec(<<"x = 1">>, #{}, 5000)),
        ?assertEqual(NoWorkers, py:call(math, sqrt, [4], #{}, 5000)),
        ?assertEqual(NoWorkers, py:await(py:call_async(math, sqrt, [4]), 5000)),
        ?assertEqual(NoWorkers, within(fun() -> py:eval(<<"1 + 1">>, #{}, 5000) end)),
        ?assertEqual(exhausted(4), stats()),
        %% the holders' own workers still serve them
        ?assertEqual({ok, 4.0}, ask(H1, fun() -> py:call(math, sqrt, [16]) end)),
        %% one worker back: binding and unbound calls work again
        release([H1]),
        ?assertEqual(st(4, 1, 3), wait_until(fun stats/0, fun(S) -> S =:= st(4, 1, 3) end)),
        ?assertEqual({ok, 2}, py:eval(<<"1 + 1">>, #{}, 5000)),
        ?assertEqual(ok, within(fun() -> py:bind() end))
    after
        release(Holders)
    end,
    ?assertEqual(idle(4), wait_until(fun stats/0, fun(S) -> S =:= idle(4) end)).

binder_killed_releases_workers(_Config) ->
    Binder = hold(fun() ->
                          ok = py:bind(),
                          ok = py:exec(<<"left_behind = 'binder'">>),
                          {ok, C1} = py:bind(new),
                          ok = py:ctx_exec(C1, <<"left_behind = 'ctx1'">>),
                          {ok, C2} = py:bind(new),
                          py:ctx_exec(C2, <<"left_behind = 'ctx2'">>)
                  end),
    ?assertEqual(st(4, 1, 3), stats()),
    {BinderPid, _} = Binder,
    Owners = lists:sort([owner(B) || #{bound := B} <- py_pool:workers(), B =/= false]),
    ?assertEqual([BinderPid, BinderPid, BinderPid], Owners),
    exit(BinderPid, kill),
    ?assertEqual(idle(4), wait_until(fun stats/0, fun(S) -> S =:= idle(4) end)),
    ?assertEqual([false, false, false, false], [B || #{bound := B} <- py_pool:workers()]),
    %% every worker is usable again and holds nothing of the dead binder
    Ctxs = [begin {ok, C} = py:bind(new), C end || _ <- lists:seq(1, 4)],
    ?assertEqual(exhausted(4), stats()),
    ?assertEqual(lists:duplicate(4, false),
                 [element(2, py:ctx_eval(C, <<"'left_behind' in globals()">>)) || C <- Ctxs]),
    lists:foreach(fun py:unbind/1, Ctxs),
    ?assertEqual(idle(4), stats()).

%% A bound worker dies (its guardian is killed): the process binding and the
%% context on it are gone, the pool is back to num_workers usable workers,
%% and the next bind() gets a fresh worker.
%% The worker of a bound process dies while it runs the process's call:
%% that call is answered worker_crashed, and that is the only one (the
%% process is unbound from then on: its next call runs on the pool).
bound_worker_killed_mid_call(_Config) ->
    Me = self(),
    ok = py:bind(),
    ok = py:exec(<<"import time">>),
    [#{id := Id, pid := G}] = [W || W = #{bound := {process, P}} <- py_pool:workers(), P =:= Me],
    spawn(fun() -> timer:sleep(200), exit(G, kill) end),
    ?assertEqual({error, worker_crashed}, py:call(time, sleep, [5])),
    ?assertEqual({ok, 3}, py:eval(<<"1 + 2">>)),
    ?assertNot(py:is_bound()),
    Ws = wait_until(fun py_pool:workers/0,
                    fun(L) -> length(L) =:= 4 andalso not has_id(Id, L) end),
    ?assertNot(has_id(Id, Ws)),
    ?assertEqual(idle(4), wait_until(fun stats/0, fun(S) -> S =:= idle(4) end)).

bound_worker_killed(_Config) ->
    Me = self(),
    ok = py:bind(),
    {ok, Ctx} = py:bind(new),
    ok = py:exec(<<"mine = 1">>),
    ok = py:ctx_exec(Ctx, <<"mine = 2">>),
    Ws0 = py_pool:workers(),
    ?assertEqual(4, length(Ws0)),
    [#{id := ProcId, pid := ProcG}] = [W || W = #{bound := {process, P}} <- Ws0, P =:= Me],
    [#{id := CtxId, pid := CtxG}] = [W || W = #{bound := {context, P}} <- Ws0, P =:= Me],
    ?assert(is_pid(ProcG) andalso is_pid(CtxG)),
    %% the context's worker dies
    exit(CtxG, kill),
    _ = wait_until(fun py_pool:workers/0, fun(L) -> not has_id(CtxId, L) end),
    ?assertError(context_not_bound, py:ctx_eval(Ctx, <<"mine">>)),
    ?assertError(context_not_bound, py:ctx_exec(Ctx, <<"mine = 3">>)),
    ?assertError(context_not_bound, py:ctx_call(Ctx, math, sqrt, [4])),
    ?assertEqual(ok, py:unbind(Ctx)),
    ?assertEqual(st(4, 3, 1), wait_until(fun stats/0, fun(S) -> S =:= st(4, 3, 1) end)),
    %% the process binding is untouched
    ?assert(py:is_bound()),
    ?assertEqual({ok, 1}, py:eval(<<"mine">>)),
    %% now the process's worker dies
    exit(ProcG, kill),
    ?assertEqual(false, wait_until(fun py:is_bound/0, fun(B) -> not B end)),
    ?assertEqual(idle(4), wait_until(fun stats/0, fun(S) -> S =:= idle(4) end)),
    Ws1 = wait_until(fun py_pool:workers/0,
                     fun(L) -> length(L) =:= 4 andalso not has_id(ProcId, L) end),
    ?assertEqual(4, length(Ws1)),
    ?assertNot(has_id(ProcId, Ws1) orelse has_id(CtxId, Ws1)),
    %% unbound calls work
    ?assertEqual({ok, 3.0}, py:call(math, sqrt, [9], #{}, 5000)),
    %% all num_workers workers are there and usable
    Ctxs = [begin {ok, C} = py:bind(new), C end || _ <- lists:seq(1, 4)],
    ?assertEqual(lists:duplicate(4, {ok, 2}), [py:ctx_eval(C, <<"1 + 1">>) || C <- Ctxs]),
    Idents = [element(2, py:ctx_call(C, threading, get_ident, [])) || C <- Ctxs],
    ?assertEqual(4, length(lists:usort(Idents))),
    lists:foreach(fun py:unbind/1, Ctxs),
    %% next bind() gets a fresh worker with an empty namespace
    ?assertEqual(ok, py:bind()),
    [#{id := NewId}] = [W || W = #{bound := {process, P}} <- py_pool:workers(), P =:= Me],
    ?assertNot(lists:member(NewId, [ProcId, CtxId])),
    ?assertMatch({error, {'NameError', _}}, py:eval(<<"mine">>)),
    ?assertEqual(ok, py:unbind()),
    ?assertEqual(idle(4), stats()).

%% What a holder leaves in its namespace is gone before anyone else gets that
%% worker: checked on every worker, with all of them held at once.
namespace_wiped_between_holders(_Config) ->
    ok = py:bind(),
    ok = py:exec(<<"secret = 42">>),
    ?assertEqual({ok, 42}, py:eval(<<"secret">>)),
    ok = py:unbind(),
    assert_secret_gone_everywhere(),
    %% now a secret on every worker, from contexts
    Ctxs = [begin {ok, C} = py:bind(new), C end || _ <- lists:seq(1, 4)],
    lists:foreach(fun(C) ->
                          ok = py:ctx_exec(C, <<"secret = 42\nimport json\n"
                                                "def leak(): return secret\n">>),
                          ?assertEqual({ok, 42}, py:ctx_call(C, '__main__', leak, []))
                  end, Ctxs),
    lists:foreach(fun py:unbind/1, Ctxs),
    assert_secret_gone_everywhere(),
    %% unbound calls (any worker) do not see it either
    lists:foreach(fun(_) ->
                          ?assertMatch({error, {'NameError', _}}, py:eval(<<"secret">>))
                  end, lists:seq(1, 20)),
    ?assertEqual(idle(4), stats()).

assert_secret_gone_everywhere() ->
    ok = py:bind(),
    Ctxs = [begin {ok, C} = py:bind(new), C end || _ <- lists:seq(1, 3)],
    try
        ?assertEqual(exhausted(4), stats()),
        ?assertEqual(4, length([B || #{bound := B} <- py_pool:workers(), B =/= false])),
        ?assertMatch({error, {'NameError', _}}, py:eval(<<"secret">>)),
        ?assertMatch({error, {'NameError', _}}, py:eval(<<"json">>)),
        ?assertEqual({ok, false}, py:eval(<<"'secret' in globals()">>)),
        lists:foreach(fun(C) ->
                              ?assertMatch({error, {'NameError', _}},
                                           py:ctx_eval(C, <<"secret">>)),
                              ?assertMatch({error, {'NameError', _}},
                                           py:ctx_eval(C, <<"json">>)),
                              ?assertMatch({error, _}, py:ctx_call(C, '__main__', leak, []))
                      end, Ctxs)
    after
        lists:foreach(fun py:unbind/1, Ctxs),
        ok = py:unbind()
    end,
    ?assertEqual(idle(4), stats()).

with_context_raising_fun(_Config) ->
    ?assertError(boom, py:with_context(fun() ->
                                               ok = py:exec(<<"x = 1">>),
                                               true = py:is_bound(),
                                               error(boom)
                                       end)),
    ?assertNot(py:is_bound()),
    ?assertEqual(idle(4), stats()),
    Me = self(),
    ?assertThrow(oops, py:with_context(fun(Ctx) ->
                                               Me ! {ctx, Ctx},
                                               ok = py:ctx_exec(Ctx, <<"y = 1">>),
                                               throw(oops)
                                       end)),
    Ctx = receive {ctx, C} -> C after 0 -> no_ctx end,
    ?assertError(context_not_bound, py:ctx_eval(Ctx, <<"y">>)),
    ?assertEqual(idle(4), stats()),
    ?assertExit(bye, py:with_context(fun() -> exit(bye) end)),
    ?assertNot(py:is_bound()),
    ?assertEqual(idle(4), stats()),
    %% a Python error is a value, returned as is
    ?assertMatch({error, {'ZeroDivisionError', _}},
                 py:with_context(fun() -> py:eval(<<"1 / 0">>) end)),
    ?assertNot(py:is_bound()),
    ?assertEqual(idle(4), stats()),
    %% nothing of the raising holders survived
    ?assertEqual(ok, py:bind()),
    ?assertMatch({error, {'NameError', _}}, py:eval(<<"x">>)),
    ?assertEqual(ok, py:unbind()).

%% A context is a value: another process can use it while it is bound, on
%% the same worker (same namespace, same thread); that process is not bound
%% itself and its unbound calls do not reach the context's worker.
ctx_used_from_other_process(_Config) ->
    {ok, Ctx} = py:bind(new),
    ok = py:ctx_exec(Ctx, <<"import threading\nv = 7">>),
    {ok, Tid} = py:ctx_eval(Ctx, <<"threading.get_ident()">>),
    Other = fun() ->
                    [py:ctx_eval(Ctx, <<"v">>),
                     py:ctx_exec(Ctx, <<"v += 1">>),
                     py:ctx_eval(Ctx, <<"threading.get_ident()">>),
                     py:ctx_call(Ctx, operator, add, [1, 2]),
                     py:is_bound(),
                     py:eval(<<"v">>)]
            end,
    [R1, R2, R3, R4, Bound, Unbound] = within(Other),
    ?assertEqual({ok, 7}, R1),
    ?assertEqual(ok, R2),
    ?assertEqual({ok, Tid}, R3),
    ?assertEqual({ok, 3}, R4),
    ?assertEqual(false, Bound),
    ?assertMatch({error, {'NameError', _}}, Unbound),
    %% the change made by the other process is seen by the owner, and that
    %% process's end did not release the context
    ?assertEqual({ok, 8}, py:ctx_eval(Ctx, <<"v">>)),
    ?assertEqual(st(4, 3, 1), stats()),
    ok = py:unbind(Ctx),
    ?assertEqual({raised, context_not_bound},
                 within(fun() ->
                                try py:ctx_eval(Ctx, <<"v">>)
                                catch error:E -> {raised, E}
                                end
                        end)),
    ?assertEqual(idle(4), stats()).

%% All calls of a binding run on one OS thread: threading.get_ident() does
%% not change, and an sqlite3 connection (which refuses other threads) works
%% across calls.
thread_affinity(_Config) ->
    ok = py:bind(),
    Idents = [py:call(threading, get_ident, []) || _ <- lists:seq(1, 20)],
    ?assertMatch([{ok, I}] when is_integer(I), lists:usort(Idents)),
    [{ok, Ident}] = lists:usort(Idents),
    ok = py:exec(<<"import threading">>),
    ?assertEqual({ok, Ident}, py:eval(<<"threading.get_ident()">>)),
    ok = py:exec(<<"import sqlite3\n"
                   "conn = sqlite3.connect(':memory:')\n"
                   "conn.execute('CREATE TABLE t (v INTEGER)')\n">>),
    lists:foreach(fun(V) ->
                          ?assertEqual(ok, py:exec(<<"conn.execute('INSERT INTO t VALUES (?)', (v,))">>,
                                                   #{v => V}))
                  end, lists:seq(1, 10)),
    ?assertEqual({ok, [{55, 10}]},
                 py:eval(<<"conn.execute('SELECT sum(v), count(*) FROM t').fetchall()">>)),
    ?assertEqual(ok, py:exec(<<"conn.close()">>)),
    %% contexts: each its own thread, stable across calls
    {ok, C1} = py:bind(new),
    {ok, C2} = py:bind(new),
    T1 = lists:usort([py:ctx_call(C1, threading, get_ident, []) || _ <- lists:seq(1, 10)]),
    T2 = lists:usort([py:ctx_call(C2, threading, get_ident, []) || _ <- lists:seq(1, 10)]),
    ?assertMatch([{ok, _}], T1),
    ?assertMatch([{ok, _}], T2),
    ?assertEqual(3, length(lists:usort([{ok, Ident} | T1 ++ T2]))),
    ok = py:ctx_exec(C1, <<"import sqlite3\nconn = sqlite3.connect(':memory:')\n"
                           "conn.execute('CREATE TABLE t (v TEXT)')\n">>),
    ok = py:ctx_exec(C1, <<"conn.execute('INSERT INTO t VALUES (?)', ('a',))">>),
    ok = py:ctx_exec(C1, <<"conn.execute('INSERT INTO t VALUES (?)', ('b',))">>),
    ?assertEqual({ok, [{<<"a">>}, {<<"b">>}]},
                 py:ctx_eval(C1, <<"conn.execute('SELECT v FROM t ORDER BY v').fetchall()">>)),
    ok = py:unbind(C1),
    ok = py:unbind(C2),
    ok = py:unbind(),
    ?assertEqual(idle(4), stats()).

bind_idempotent(_Config) ->
    Me = self(),
    ?assertEqual(ok, py:bind()),
    ok = py:exec(<<"x = 1">>),
    [#{id := Id}] = [W || W = #{bound := {process, P}} <- py_pool:workers(), P =:= Me],
    ?assertEqual(ok, py:bind()),
    ?assertEqual(ok, py:bind()),
    ?assertEqual(st(4, 3, 1), stats()),
    ?assertMatch([#{id := Id}], [W || W = #{bound := {process, P}} <- py_pool:workers(), P =:= Me]),
    %% re-binding kept the worker and did not wipe it
    ?assertEqual({ok, 1}, py:eval(<<"x">>)),
    %% one unbind releases it
    ?assertEqual(ok, py:unbind()),
    ?assertNot(py:is_bound()),
    ?assertEqual(idle(4), stats()).

unbind_when_not_bound(_Config) ->
    ?assertNot(py:is_bound()),
    ?assertEqual(ok, py:unbind()),
    ?assertEqual(ok, py:unbind()),
    ?assertEqual(idle(4), stats()),
    %% unbind/0 does not release an explicit context of the process
    {ok, Ctx} = py:bind(new),
    ok = py:ctx_exec(Ctx, <<"kept = True">>),
    ?assertEqual(ok, py:unbind()),
    ?assertEqual(st(4, 3, 1), stats()),
    ?assertEqual({ok, true}, py:ctx_eval(Ctx, <<"kept">>)),
    ?assertEqual(ok, py:unbind(Ctx)),
    ?assertEqual(idle(4), stats()).

%% Releasing a context that is already released is ok (py:unbind/1's doc:
%% "ok also when already released") and touches nobody else's binding; the
%% same when a with_context/1 fun releases its own context.
unbind_ctx_twice(_Config) ->
    Bystander = hold(fun() -> ok = py:bind(), py:exec(<<"mine = 'bystander'">>) end),
    try
        {ok, Ctx} = py:bind(new),
        ?assertEqual(st(4, 2, 2), stats()),
        ?assertEqual(ok, py:unbind(Ctx)),
        ?assertEqual(st(4, 3, 1), stats()),
        ?assertEqual(ok, py:unbind(Ctx)),
        ?assertEqual(st(4, 3, 1), stats()),
        ?assertEqual(done, py:with_context(fun(C) -> ok = py:unbind(C), done end)),
        ?assertEqual(st(4, 3, 1), stats()),
        ?assertEqual({true, {ok, <<"bystander">>}},
                     ask(Bystander, fun() -> {py:is_bound(), py:eval(<<"mine">>)} end))
    after
        release([Bystander])
    end,
    ?assertEqual(idle(4), wait_until(fun stats/0, fun(S) -> S =:= idle(4) end)).

is_bound_transitions(_Config) ->
    ?assertEqual(false, py:is_bound()),
    {ok, Ctx} = py:bind(new),
    ?assertEqual(false, py:is_bound()),       % a context is not a process binding
    ok = py:bind(),
    ?assertEqual(true, py:is_bound()),
    ?assertEqual(false, within(fun py:is_bound/0)),
    ok = py:unbind(Ctx),
    ?assertEqual(true, py:is_bound()),
    ok = py:unbind(),
    ?assertEqual(false, py:is_bound()),
    ?assertEqual(true, py:with_context(fun() -> py:is_bound() end)),
    ?assertEqual(false, py:is_bound()),
    ?assertEqual(false, py:with_context(fun(_Ctx) -> py:is_bound() end)),
    ?assertEqual(false, py:is_bound()),
    ?assertEqual(idle(4), stats()).

%% '__main__' is the bound worker's namespace: functions defined by exec are
%% callable with py:call/ctx_call, and see names of earlier execs.
main_calls_on_bound_worker(_Config) ->
    ok = py:bind(),
    ok = py:exec(<<"offset = 100">>),
    ok = py:exec(<<"def f(a, b=1):\n    return a * b + offset\n">>),
    ?assertEqual({ok, 112}, py:call('__main__', f, [3, 4])),
    ?assertEqual({ok, 110}, py:call('__main__', f, [2], #{b => 5})),
    ?assertEqual({ok, 107}, py:call(<<"__main__">>, <<"f">>, [7])),
    ok = py:exec(<<"offset = 0">>),
    ?assertEqual({ok, 12}, py:call('__main__', f, [3, 4])),
    ?assertMatch({error, _}, py:call('__main__', undefined_function, [])),
    {ok, Ctx} = py:bind(new),
    ok = py:ctx_exec(Ctx, <<"def g(s):\n    return s.upper()\n">>),
    ?assertEqual({ok, <<"ABC">>}, py:ctx_call(Ctx, '__main__', g, [<<"abc">>])),
    %% each namespace has only its own functions
    ?assertMatch({error, _}, py:ctx_call(Ctx, '__main__', f, [1])),
    ?assertMatch({error, _}, py:call('__main__', g, [<<"abc">>])),
    ok = py:unbind(Ctx),
    ok = py:unbind(),
    %% released: no worker has f any more
    ?assertMatch({error, _}, py:call('__main__', f, [1, 2])),
    ?assertEqual(idle(4), stats()).

%% 100 processes on 4 workers, each binding three times (with_context/1
%% arity 0 and 1, bind/unbind), counting in its own namespace; a bind that
%% finds no worker is retried after a short sleep.
stress_many_binders(_Config) ->
    Parent = self(),
    Procs = [begin
                 {Pid, MRef} = spawn_monitor(fun() -> Parent ! {self(), stress_worker(I)} end),
                 {Pid, MRef, I}
             end || I <- lists:seq(1, 100)],
    Results = [receive
                   {Pid, Res} ->
                       receive {'DOWN', MRef, process, Pid, _} -> ok end,
                       {I, Res};
                   {'DOWN', MRef, process, Pid, Reason} ->
                       {I, {crashed, Reason}}
               after 50000 ->
                   {I, no_answer}
               end || {Pid, MRef, I} <- Procs],
    Wrong = [{I, R} || {I, R} <- Results, R =/= stress_expected(I)],
    ?assertEqual([], Wrong),
    ?assertEqual(idle(4), stats()),
    ?assertEqual([false, false, false, false], [B || #{bound := B} <- py_pool:workers()]).

%% A process that binds, calls and unbinds in a tight loop does not starve
%% unbound requests: a worker unbound while requests wait for any worker
%% serves them before it can be bound again.  Here two workers are held by
%% contexts and one sleeps on an unbound request, so the binder's worker
%% is the only one that can serve the test's calls, and its binder's
%% namespace takes long to wipe.
binders_do_not_starve_queue(_Config) ->
    Parent = self(),
    {ok, C1} = py:bind(new),
    {ok, C2} = py:bind(new),
    _Sleeper = spawn_link(fun() ->
                                 Parent ! {slept, py:eval(<<"__import__('time').sleep(4) or 1">>)}
                         end),
    timer:sleep(200), % the sleep has started
    Binder = fun Loop(N) ->
                     receive stop -> Parent ! {binder_done, self(), N}
                     after 0 ->
                             case py:bind() of
                                 ok ->
                                     %% its namespace takes 20 ms to wipe
                                     ok = py:exec(<<"import time\n"
                                                    "class Slow:\n"
                                                    "    def __del__(self, sleep=time.sleep): sleep(0.02)\n"
                                                    "slow = Slow()\n">>),
                                     {ok, 2} = py:eval(<<"1 + 1">>),
                                     ok = py:unbind(),
                                     Loop(N + 1);
                                 {error, no_workers_available} ->
                                     Loop(N)
                             end
                     end
             end,
    B = spawn_link(fun() -> Binder(0) end),
    timer:sleep(50),
    Results = [py:eval(<<"x * 3">>, #{x => I}, 500) || I <- lists:seq(1, 5)],
    B ! stop,
    Cycles = receive {binder_done, B, N} -> N after 10000 -> no_answer end,
    ct:pal("binder cycles meanwhile: ~p", [Cycles]),
    ?assertEqual([{ok, 3 * I} || I <- lists:seq(1, 5)], Results),
    ?assert(Cycles > 0),
    ?assertEqual({slept, {ok, 1}}, receive {slept, _} = S -> S after 10000 -> no_answer end),
    ok = py:unbind(C1),
    ok = py:unbind(C2).

%% A call to a bound worker does not wait for a max_concurrent slot: its
%% caller holds its worker already.  Here every slot is held by unbound
%% requests that wait for the one unbound worker (busy for 1 s each); the
%% contexts' calls answer at once all the same.
bound_calls_need_no_slot(_Config) ->
    Max = py_semaphore:max_concurrent(),
    Ctxs = [begin {ok, C} = py:bind(new), C end || _ <- lists:seq(1, 3)],
    ok = py_semaphore:set_max_concurrent(3),
    try
        Parent = self(),
        [spawn_link(fun() -> Parent ! {unbound, I, py:eval(<<"__import__('time').sleep(1) or x">>, #{x => I})} end)
         || I <- lists:seq(1, 3)],
        ?assertEqual(3, wait_until(fun py_semaphore:current/0, fun(N) -> N =:= 3 end)),
        ?assertEqual([{ok, 2 * I} || I <- lists:seq(1, 3)],
                     [py:ctx_eval(C, <<"x * 2">>, #{x => I}, 500)
                      || {I, C} <- lists:zip(lists:seq(1, 3), Ctxs)]),
        ?assertEqual(3, py_semaphore:current()),
        Unbound = [receive {unbound, I, R} -> {I, R} after 10000 -> {I, no_answer} end
                   || I <- lists:seq(1, 3)],
        ?assertEqual([{I, {ok, I}} || I <- lists:seq(1, 3)], Unbound)
    after
        ok = py_semaphore:set_max_concurrent(Max),
        [py:unbind(C) || C <- Ctxs]
    end.

stress_worker(I) ->
    rand:seed(exsss, {I, I * 7, I * 13}),
    [stress_round(Mode, N) || {Mode, N} <- stress_plan(I)].

stress_plan(I) ->
    Modes = [with_context_0, bind, with_context_1],
    Rot = I rem 3,
    Ordered = lists:nthtail(Rot, Modes) ++ lists:sublist(Modes, Rot),
    lists:zip(Ordered, [3 + (I + K) rem 8 || K <- [0, 1, 2]]).

stress_expected(I) ->
    [{{ok, false}, {ok, N}} || {_Mode, N} <- stress_plan(I)].

stress_round(Mode, N) ->
    case stress_try(Mode, N) of
        {error, no_workers_available} ->
            timer:sleep(rand:uniform(5)),
            stress_round(Mode, N);
        Other ->
            Other
    end.

stress_try(with_context_0, N) ->
    py:with_context(fun() -> count_to(fun py:exec/1, fun py:eval/1, N) end);
stress_try(with_context_1, N) ->
    py:with_context(fun(Ctx) ->
                            count_to(fun(C) -> py:ctx_exec(Ctx, C) end,
                                     fun(C) -> py:ctx_eval(Ctx, C) end, N)
                    end);
stress_try(bind, N) ->
    case py:bind() of
        ok ->
            try count_to(fun py:exec/1, fun py:eval/1, N)
            after ok = py:unbind()
            end;
        Error ->
            Error
    end.

%% {Was `counter' already there?, its value after N increments}
count_to(Exec, Eval, N) ->
    Fresh = Eval(<<"'counter' in globals()">>),
    ok = Exec(<<"counter = 0">>),
    lists:foreach(fun(_) -> ok = Exec(<<"counter += 1">>) end, lists:seq(1, N)),
    {Fresh, Eval(<<"counter">>)}.

%%====================================================================
%% Helpers
%%====================================================================

stats() ->
    py_test_lib:pool_stats().

st(N, Available, CheckedOut) ->
    #{num_workers => N, available_workers => Available, checked_out => CheckedOut,
      pending_requests => 0}.

idle(N) -> st(N, N, 0).

exhausted(N) -> st(N, 0, N).

%% Runs Fun in a new process and returns its result; a call that does not
%% return within 10 s fails the case instead of hanging it.
within(Fun) ->
    {Pid, MRef} = spawn_monitor(fun() -> exit({result, Fun()}) end),
    receive
        {'DOWN', MRef, process, Pid, {result, R}} -> R;
        {'DOWN', MRef, process, Pid, Reason} -> error({crashed, Reason})
    after 10000 ->
        exit(Pid, kill),
        error(no_reply_within_10s)
    end.

%% A process that runs Bind (which must return ok or {ok, _}), then waits,
%% serving ask/2, until released.
hold(Bind) ->
    Parent = self(),
    {Pid, MRef} = spawn_monitor(fun() ->
                                        Parent ! {self(), Bind()},
                                        holder_loop()
                                end),
    receive
        {Pid, ok} -> {Pid, MRef};
        {Pid, {ok, _}} -> {Pid, MRef};
        {Pid, Other} -> error({holder_bind_failed, Other});
        {'DOWN', MRef, process, Pid, Reason} -> error({holder_died, Reason})
    after 10000 -> error(holder_no_reply)
    end.

holder_loop() ->
    receive
        {ask, From, Fun} -> From ! {self(), answer, Fun()}, holder_loop();
        stop -> ok
    end.

ask({Pid, _}, Fun) ->
    Pid ! {ask, self(), Fun},
    receive {Pid, answer, R} -> R
    after 10000 -> error(holder_no_answer)
    end.

release(Holders) ->
    lists:foreach(fun({Pid, MRef}) ->
                          Pid ! stop,
                          receive {'DOWN', MRef, process, Pid, _} -> ok
                          after 10000 -> exit(Pid, kill)
                          end
                  end, Holders).

owner({process, P}) -> P;
owner({context, P}) -> P.

has_id(Id, Workers) ->
    lists:member(Id, [I || #{id := I} <- Workers]).

read(Path) ->
    {ok, Bin} = file:read_file(Path),
    Bin.

%% The ```erlang blocks of a markdown text.
erlang_blocks(Md) ->
    Lines = binary:split(Md, <<"\n">>, [global]),
    erlang_blocks(Lines, none, []).

erlang_blocks([], _, Acc) ->
    lists:reverse(Acc);
erlang_blocks([<<"```erlang">> | Rest], none, Acc) ->
    erlang_blocks(Rest, [], Acc);
erlang_blocks([<<"```">> | Rest], Block, Acc) when is_list(Block) ->
    Text = iolist_to_binary(lists:join(<<"\n">>, lists:reverse(Block))),
    erlang_blocks(Rest, none, [Text | Acc]);
erlang_blocks([Line | Rest], Block, Acc) when is_list(Block) ->
    erlang_blocks(Rest, [Line | Block], Acc);
erlang_blocks([_ | Rest], none, Acc) ->
    erlang_blocks(Rest, none, Acc).

%% The block as is, or with its final `.' turned into `,' (and then followed
%% by the value checked).
appears_verbatim(Block, Source) ->
    binary:match(Source, Block) =/= nomatch orelse
        (binary:last(Block) =:= $. andalso
         binary:match(Source, <<(binary:part(Block, 0, byte_size(Block) - 1))/binary, ",\n">>)
             =/= nomatch).

%%====================================================================
%% The guide's code blocks, verbatim (column 0 on purpose: the Python
%% source inside the binaries must keep its own indentation)
%%====================================================================

%% "Process-Implicit Binding"
example_process_implicit_binding() ->
%% Bind current process to a dedicated worker
ok = py:bind(),

%% Now all calls use the same worker - state persists!
ok = py:exec(<<"counter = 0">>),
ok = py:exec(<<"counter += 1">>),
{ok, 1} = py:eval(<<"counter">>),

ok = py:exec(<<"counter += 1">>),
{ok, 2} = py:eval(<<"counter">>),

%% Release the worker back to the pool
ok = py:unbind().

%% "Checking Binding Status"
example_checking_binding_status() ->
false = py:is_bound(),
ok = py:bind(),
true = py:is_bound(),
ok = py:unbind(),
false = py:is_bound().

%% "Explicit Contexts"
example_explicit_contexts() ->
%% Create two independent contexts
{ok, Ctx1} = py:bind(new),
{ok, Ctx2} = py:bind(new),

%% Each context has its own namespace
ok = py:ctx_exec(Ctx1, <<"x = 'context one'">>),
ok = py:ctx_exec(Ctx2, <<"x = 'context two'">>),

%% Values are isolated
{ok, <<"context one">>} = py:ctx_eval(Ctx1, <<"x">>),
{ok, <<"context two">>} = py:ctx_eval(Ctx2, <<"x">>),

%% Release both
ok = py:unbind(Ctx1),
ok = py:unbind(Ctx2).

%% "Implicit Binding (arity-0 function)"
example_with_context_implicit() ->
Result = py:with_context(fun() ->
    ok = py:exec(<<"total = 0">>),
    ok = py:exec(<<"for i in range(10): total += i">>),
    py:eval(<<"total">>)
end),
{ok, 45} = Result.
%% Process is automatically unbound here

%% "Explicit Context (arity-1 function)"
example_with_context_explicit() ->
Result = py:with_context(fun(Ctx) ->
    ok = py:ctx_exec(Ctx, <<"import json">>),
    ok = py:ctx_exec(Ctx, <<"data = {'key': 'value'}">>),
    py:ctx_eval(Ctx, <<"json.dumps(data)">>)
end),
{ok, <<"{\"key\": \"value\"}">>} = Result.

%% "Process Death"
example_process_death() ->
Pid = spawn(fun() ->
    ok = py:bind(),
    %% Do some work...
    exit(normal)  %% Worker automatically returned
end),
Pid.

%% "Worker Crash" (a fragment: the crash itself is in the test case)
example_worker_crash() ->
ok = py:bind(),
%% If the worker crashes, binding is cleaned up
%% Next bind() will get a fresh worker
py:is_bound().

%% "Stateful Computation"
example_stateful_computation() ->
py:with_context(fun() ->
    %% Load a model once
    py:exec(<<"
import pickle
with open('model.pkl', 'rb') as f:
    model = pickle.load(f)
">>),

    %% Use it multiple times
    {ok, Pred1} = py:eval(<<"model.predict([[1, 2, 3]])">>),
    {ok, Pred2} = py:eval(<<"model.predict([[4, 5, 6]])">>),
    {Pred1, Pred2}
end).

%% "Database Connections" (returns Users)
example_database_connections() ->
ok = py:bind(),

%% Establish connection once
py:exec(<<"
import sqlite3
conn = sqlite3.connect(':memory:')
cursor = conn.cursor()
cursor.execute('CREATE TABLE users (id INTEGER, name TEXT)')
">>),

%% Use the connection across multiple calls
py:exec(<<"cursor.execute('INSERT INTO users VALUES (1, \"Alice\")')">>),
py:exec(<<"cursor.execute('INSERT INTO users VALUES (2, \"Bob\")')">>),
{ok, Users} = py:eval(<<"cursor.execute('SELECT * FROM users').fetchall()">>),

%% Clean up
py:exec(<<"conn.close()">>),
py:unbind(),
Users.

%% "Incremental Processing" (returns Results)
example_incremental_processing(Items) ->
{ok, Ctx} = py:bind(new),

%% Initialize accumulator
py:ctx_exec(Ctx, <<"results = []">>),

%% Process items one at a time
lists:foreach(fun(Item) ->
    py:ctx_exec(Ctx, <<"results.append(process_item(item))">>,
                #{item => Item})
end, Items),

%% Get final results
{ok, Results} = py:ctx_eval(Ctx, <<"results">>),

py:unbind(Ctx),
Results.

%% "Pool Statistics"
example_pool_statistics() ->
Stats = py_pool:get_stats(),
#{
    num_workers := 8,
    available_workers := 6,  %% 2 workers are checked out
    checked_out := 2,
    pending_requests := 0
} = Stats.

%% "No Workers Available"
example_no_workers_available() ->
%% If all workers are bound
{error, no_workers_available} = py:bind().

%% "Context Not Bound"
example_context_not_bound() ->
%% Using a context after unbind raises an error
{ok, Ctx} = py:bind(new),
ok = py:unbind(Ctx),
%% This will crash with context_not_bound
py:ctx_eval(Ctx, <<"1 + 1">>).  %% error(context_not_bound)
