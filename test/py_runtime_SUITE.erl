%% The runtime side of erlang_python: asyncio coroutines on the event loop
%% (async_call/await/gather/stream), memory and garbage collection,
%% virtual environments, module reload, the execution model and
%% py:parallel, the overload semaphore (py_semaphore), and numpy.
%%
%% Python helpers live in py_runtime_SUITE_data/rt_helpers.py; the data dir
%% is put on sys.path of every worker through the `python_path' application
%% env.  The venv cases change sys.path of the whole interpreter, which lives
%% as long as the VM, so they run in a peer node of their own; the modules
%% the reload case writes go to the case's priv_dir.
-module(py_runtime_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, suite/0,
         init_per_suite/1, end_per_suite/1,
         init_per_group/2, end_per_group/2,
         init_per_testcase/2, end_per_testcase/2]).

%% asyncio
-export([async_concurrent_sleeps/1, async_error_isolated/1, async_not_coroutine/1,
         async_gather_order/1, async_gather_first_error/1, async_stream_agen/1,
         async_await_timeout_no_late_message/1, async_erlang_callback/1]).
%% memory
-export([memory_stats_keys/1, gc_generations/1, gc_cyclic_garbage/1,
         tracemalloc_cycle/1]).
%% reload
-export([reload_every_worker/1, reload_errors/1]).
%% execution model
-export([execution_model/1, parallel_sleeps/1, parallel_errors/1,
         parallel_from_bound_process/1, parallel_while_busy/1]).
%% overload
-export([overload_many_callers/1, overload_counters/1, acquire_release/1,
         waiting_request_admitted/1, no_leak_killed_waiting/1,
         no_leak_killed_running/1, no_leak_timeouts/1, no_leak_python_exceptions/1,
         acquire_holder_dies/1, overload_callbacks/1, overload_mixed_stress/1]).
%% numpy
-export([numpy_arrays/1, numpy_scalars/1, numpy_every_worker/1,
         numpy_bound_contexts/1]).
%% venv (the cases run their *_body in a peer node)
-export([venv_activate/1, venv_deactivate/1, venv_not_a_venv/1, venv_replace/1]).
-export([venv_activate_body/1, venv_deactivate_body/1, venv_not_a_venv_body/1,
         venv_replace_body/1, venv_clean_state/0]).

-import(py_test_lib, [now_ms/0, wait_until/2, no_stray_messages/1]).

-define(H, rt_helpers).
-define(NUM_WORKERS, 4).
-define(NP, "__import__('numpy')").

suite() ->
    [{timetrap, {seconds, 60}}].

all() ->
    [{group, asyncio}, {group, memory}, {group, reload}, {group, execution},
     {group, overload}, {group, numpy}, {group, venv}].

groups() ->
    [{asyncio, [], [async_concurrent_sleeps, async_error_isolated, async_not_coroutine,
                    async_gather_order, async_gather_first_error, async_stream_agen,
                    async_await_timeout_no_late_message, async_erlang_callback]},
     {memory, [], [memory_stats_keys, gc_generations, gc_cyclic_garbage,
                   tracemalloc_cycle]},
     {reload, [], [reload_every_worker, reload_errors]},
     {execution, [], [execution_model, parallel_sleeps, parallel_errors,
                      parallel_from_bound_process, parallel_while_busy]},
     {overload, [], [overload_many_callers, overload_counters, acquire_release,
                     waiting_request_admitted, no_leak_killed_waiting,
                     no_leak_killed_running, no_leak_timeouts,
                     no_leak_python_exceptions, acquire_holder_dies,
                     overload_callbacks, overload_mixed_stress]},
     {numpy, [], [numpy_arrays, numpy_scalars, numpy_every_worker, numpy_bound_contexts]},
     {venv, [], [venv_activate, venv_deactivate, venv_not_a_venv, venv_replace]}].

%%====================================================================
%% Setup
%%====================================================================

%% The application env here (with max_concurrent unset) and in the venv peer.
env(DataDir) ->
    [{num_workers, ?NUM_WORKERS}, {python_path, [DataDir]}].

init_per_suite(Config) ->
    Config1 = py_test_lib:start_suite(Config, fun(DataDir) ->
                                                      env(DataDir) ++ [{max_concurrent, undefined}]
                                              end),
    ?assertEqual(py_test_lib:idle_stats(?NUM_WORKERS), py_test_lib:pool_stats()),
    Config1.

end_per_suite(Config) ->
    _ = py_test_lib:stop_suite(Config),
    ok.

init_per_group(overload, Config) ->
    Saved = py_semaphore:max_concurrent(),
    ok = py_semaphore:set_max_concurrent(3),
    [{saved_max, Saved} | Config];
init_per_group(venv, Config) ->
    Priv = ?config(priv_dir, Config),
    VenvA = make_venv(filename:join(Priv, "venv_a"),
                      [{"venvmod.py", venvmod_source(42)},
                       {"venv_a_only.py", "VALUE = 'a'\n"}]),
    VenvB = make_venv(filename:join(Priv, "venv_b"),
                      [{"venvmod.py", venvmod_source(43)},
                       {"venv_b_only.py", "VALUE = 'b'\n"}]),
    %% a directory laid out like a venv, but without pyvenv.cfg: accepted
    NotVenv = filename:join(Priv, "bare_venv"),
    ok = filelib:ensure_path(filename:join([NotVenv, "lib", pyver(), "site-packages"])),
    ok = file:write_file(filename:join([NotVenv, "lib", pyver(), "site-packages",
                                        "venvmod.py"]), venvmod_source(99)),
    %% pyvenv.cfg, but nothing else
    Broken = filename:join(Priv, "broken_venv"),
    ok = filelib:ensure_path(Broken),
    ok = file:write_file(filename:join(Broken, "pyvenv.cfg"), "home = /usr/bin\n"),
    %% neither pyvenv.cfg nor lib/python*/site-packages
    Empty = filename:join(Priv, "empty_dir"),
    ok = filelib:ensure_path(filename:join(Empty, "lib")),
    %% site-packages of another Python only, no pyvenv.cfg
    Other = filename:join(Priv, "other_python_venv"),
    ok = filelib:ensure_path(filename:join([Other, "lib", "python2.7", "site-packages"])),
    Peer = py_test_lib:start_peer(env(?config(helpers_dir, Config))),
    [{peer, Peer},
     {venvs, #{a => VenvA, b => VenvB, not_venv => NotVenv, broken => Broken,
                empty => Empty, other => Other}} | Config];
init_per_group(_Group, Config) ->
    Config.

end_per_group(overload, Config) ->
    ok = py_semaphore:set_max_concurrent(?config(saved_max, Config));
end_per_group(venv, Config) ->
    py_test_lib:stop_peer(?config(peer, Config));
end_per_group(_Group, _Config) ->
    ok.

%% Every case starts on an idle pool with no slot of the semaphore held.
init_per_testcase(_Case, Config) ->
    assert_idle(),
    case ?config(peer, Config) of
        undefined -> ok;
        _ -> ?assertEqual(ok, in_peer(Config, venv_clean_state, []))
    end,
    Config.

end_per_testcase(_Case, Config) ->
    _ = catch py:unbind(),
    _ = py:call(?H, gc_enable, []),
    _ = py:tracemalloc_stop(),
    case ?config(peer, Config) of
        undefined -> ok;
        _ -> _ = catch in_peer(Config, py, deactivate_venv, [])
    end,
    ok.

%%====================================================================
%% asyncio
%%====================================================================

%% 20 coroutines sleeping 0.3 s each, started together, share one event
%% loop: all are done well under 1 s, each with its own result.
async_concurrent_sleeps(_Config) ->
    T0 = now_ms(),
    Handles = [{I, py:async_call(?H, sleep_square, [I, 0.3])} || I <- lists:seq(1, 20)],
    Results = [{I, py:async_await(H, 5000)} || {I, H} <- Handles],
    Elapsed = now_ms() - T0,
    ?assertEqual([{I, {ok, [I, I * I]}} || I <- lists:seq(1, 20)], Results),
    ?assert(Elapsed < 900, {elapsed_ms, Elapsed}),
    %% keyword arguments, atom and binary keys
    ?assertEqual({ok, 30}, py:async_await(py:async_call(?H, with_kwargs, [1],
                                                        #{b => 2, <<"scale">> => 10}))),
    ?assertEqual({ok, 1}, py:async_await(py:async_call(<<"rt_helpers">>, <<"with_kwargs">>, [1]))),
    ?assertEqual(ok, no_stray_messages(100)),
    assert_idle().

%% A failing coroutine's error goes to its own caller; coroutines started
%% alongside it, by other processes and by the same one, succeed.
async_error_isolated(_Config) ->
    Funs = [fun() ->
                    H = case I of
                            3 -> py:async_call(?H, sleep_then_fail, [0.1, <<"boom 3">>]);
                            _ -> py:async_call(?H, sleep_square, [I, 0.15])
                        end,
                    R = py:async_await(H, 5000),
                    timer:sleep(200),
                    {R, erlang:process_info(self(), messages)}
            end || I <- lists:seq(1, 6)],
    Results = concurrently(Funs),
    ?assertEqual([case I of
                      3 -> {{error, {'ValueError', <<"boom 3">>}}, {messages, []}};
                      _ -> {{ok, [I, I * I]}, {messages, []}}
                  end || I <- lists:seq(1, 6)], Results),
    %% in one process: the failing one awaited first, then the others
    Bad = py:async_call(?H, sleep_then_fail, [0.05, <<"mine">>]),
    Good1 = py:async_call(?H, sleep_square, [5, 0.1]),
    Bad2 = py:async_call(?H, sleep_then_key_error, [0.02]),
    Good2 = py:async_call(?H, tagged, [<<"two">>, 0.1]),
    ?assertEqual({error, {'ValueError', <<"mine">>}}, py:async_await(Bad, 5000)),
    ?assertMatch({error, {'KeyError', _}}, py:async_await(Bad2, 5000)),
    ?assertEqual({ok, [5, 25]}, py:async_await(Good1, 5000)),
    ?assertEqual({ok, <<"two">>}, py:async_await(Good2, 5000)),
    ?assertEqual(ok, no_stray_messages(100)),
    assert_idle().

%% What is not a coroutine function, or cannot be called, fails at once
%% with the Python error; the event loop is fine afterwards.
async_not_coroutine(_Config) ->
    ?assertMatch({error, {'TypeError', <<_/binary>>}},
                 py:async_await(py:async_call(?H, not_a_coroutine, [1]), 5000)),
    ?assertMatch({error, {'TypeError', _}},
                 py:async_await(py:async_call(math, sqrt, [4]), 5000)),
    %% a generator function is not a coroutine function either
    ?assertMatch({error, {'TypeError', _}},
                 py:async_await(py:async_call(?H, sync_generator, [3]), 5000)),
    %% wrong arguments for a coroutine function
    ?assertMatch({error, {'TypeError', _}},
                 py:async_await(py:async_call(?H, sleep_square, []), 5000)),
    ?assertMatch({error, {'AttributeError', _}},
                 py:async_await(py:async_call(?H, no_such_coroutine, []), 5000)),
    ?assertMatch({error, {'ModuleNotFoundError', _}},
                 py:async_await(py:async_call(rt_no_such_module_xyz, f, []), 5000)),
    %% bad Erlang input
    ?assertEqual({error, {badarg, module}}, py:async_await(py:async_call(42, f, []))),
    ?assertEqual({error, {badarg, args}}, py:async_await(py:async_call(?H, tagged, not_a_list))),
    ?assertEqual({error, {badarg, kwargs}},
                 py:async_await(py:async_call(?H, with_kwargs, [1], [not_a_map]))),
    H = py:async_call(?H, tagged, [1, 0]),
    ?assertEqual({error, {badarg, timeout}}, py:async_await(H, -1)),
    ?assertEqual({ok, 1}, py:async_await(H, 5000)),
    %% a reference, as documented; awaited to the end, it is spent
    ?assert(is_reference(H)),
    ?assertEqual({error, {badarg, ref}}, py:async_await(H, 100)),
    ?assertEqual({error, {badarg, ref}}, py:async_await(make_ref(), 100)),
    ?assertEqual({error, {badarg, ref}}, py:async_await(not_a_ref, 100)),
    %% the loop still runs coroutines
    ?assertEqual({ok, [2, 4]}, py:async_await(py:async_call(?H, sleep_square, [2, 0.01]), 5000)),
    ?assertEqual(ok, no_stray_messages(100)),
    assert_idle().

%% Results come back in list order whatever the order of completion.
async_gather_order(_Config) ->
    Calls = [{?H, tagged, [I, 0.05 * (6 - I)]} || I <- lists:seq(1, 5)],
    ?assertEqual({ok, [1, 2, 3, 4, 5]}, py:async_gather(Calls)),
    ?assertEqual({ok, []}, py:async_gather([])),
    Mixed = [{?H, sleep_square, [3, 0.1]}, {?H, tagged, [<<"x">>, 0]},
             {?H, with_kwargs, [4, 5]}],
    ?assertEqual({ok, [[3, 9], <<"x">>, 9]}, py:async_gather(Mixed)),
    ?assertEqual({ok, [[I, I * I] || I <- lists:seq(1, 10)]},
                 py:async_gather([{?H, sleep_square, [I, 0.1]} || I <- lists:seq(1, 10)])),
    ?assertEqual(ok, no_stray_messages(100)),
    assert_idle().

%% The first error in list order is returned (here it happens after a
%% later entry's error); the outcomes given up never reach the mailbox.
async_gather_first_error(_Config) ->
    Calls = [{?H, tagged, [1, 0.01]},
             {?H, sleep_then_fail, [0.2, <<"second entry">>]},
             {?H, sleep_then_key_error, [0.05]},
             {?H, tagged, [4, 0.4]}],
    ?assertEqual({error, {'ValueError', <<"second entry">>}}, py:async_gather(Calls)),
    %% a single failing entry
    ?assertMatch({error, {'KeyError', _}},
                 py:async_gather([{?H, sleep_then_key_error, [0.01]}])),
    %% an entry that cannot be started at all
    ?assertMatch({error, {'TypeError', _}},
                 py:async_gather([{?H, tagged, [1, 0.01]}, {?H, not_a_coroutine, [1]}])),
    ?assertMatch({error, {'ModuleNotFoundError', _}},
                 py:async_gather([{rt_no_such_module_xyz, f, []}, {?H, tagged, [1, 0.01]}])),
    %% the 0.4 s coroutine of the first gather finishes meanwhile: nothing arrives
    ?assertEqual(ok, no_stray_messages(500)),
    ?assertEqual({ok, [1]}, py:async_gather([{?H, tagged, [1, 0]}])),
    assert_idle().

%% async_stream drains an async generator; its errors, and what is not an
%% async generator, are returned as errors.
async_stream_agen(_Config) ->
    ?assertEqual({ok, [0, 1, 2, 3, 4]}, py:async_stream(?H, count_up, [5])),
    ?assertEqual({ok, [10, 11, 12]}, py:async_stream(?H, count_up, [3], #{start => 10})),
    ?assertEqual({ok, []}, py:async_stream(?H, empty_agen, [])),
    ?assertEqual({error, {'RuntimeError', <<"generator failed after 2">>}},
                 py:async_stream(?H, fail_after, [2])),
    ?assertMatch({error, {'TypeError', _}}, py:async_stream(?H, sync_generator, [3])),
    ?assertMatch({error, {'TypeError', _}}, py:async_stream(?H, not_a_coroutine, [3])),
    ?assertMatch({error, {'AttributeError', _}}, py:async_stream(?H, no_such_agen, [])),
    ?assertEqual({error, {badarg, args}}, py:async_stream(?H, count_up, 5)),
    %% several streams at once, from several processes
    Results = concurrently([fun() -> py:async_stream(?H, count_up, [20, 0.005], #{start => I})
                            end || I <- lists:seq(1, 5)]),
    ?assertEqual([{ok, lists:seq(I, I + 19)} || I <- lists:seq(1, 5)], Results),
    ?assertEqual(ok, no_stray_messages(100)),
    assert_idle().

%% After an await timed out, the coroutine's outcome never reaches the
%% mailbox, not even after the coroutine finished.
async_await_timeout_no_late_message(_Config) ->
    Run = fun(Body) ->
                  hd(concurrently([fun() ->
                                           R = Body(),
                                           timer:sleep(700),
                                           {R, erlang:process_info(self(), messages)}
                                   end]))
          end,
    ?assertEqual({{error, timeout}, {messages, []}},
                 Run(fun() -> py:async_await(py:async_call(?H, tagged, [7, 0.4]), 100) end)),
    %% timeout 0 on a coroutine that is still running
    ?assertEqual({{error, timeout}, {messages, []}},
                 Run(fun() -> py:async_await(py:async_call(?H, tagged, [7, 0.3]), 0) end)),
    %% a failing coroutine whose await timed out: its error is dropped too
    ?assertEqual({{error, timeout}, {messages, []}},
                 Run(fun() ->
                             py:async_await(py:async_call(?H, sleep_then_fail, [0.3, <<"x">>]),
                                            50)
                     end)),
    %% an async_stream still works afterwards, and so does the loop
    ?assertEqual({ok, [0, 1]}, py:async_stream(?H, count_up, [2])),
    ?assertEqual({ok, 8}, py:async_await(py:async_call(?H, tagged, [8, 0.01]), 5000)),
    ?assertEqual(ok, no_stray_messages(100)),
    assert_idle().

%% A coroutine calls back into Erlang (erlang.call on the loop thread):
%% plain functions, a function that calls Python again, a failing one.
async_erlang_callback(_Config) ->
    ok = py:register_function(rt_twice, fun([X]) -> X * 2 end),
    ok = py:register_function(rt_sqrt, fun([X]) -> {ok, V} = py:call(math, sqrt, [X]), V end),
    ok = py:register_function(rt_fail, fun([_]) -> error(deliberate) end),
    try
        WorkerThreads = worker_threads(),
        {ok, [42, LoopThread]} = py:async_await(py:async_call(?H, call_erlang,
                                                              [<<"rt_twice">>, 21]), 5000),
        %% the callback was made by the event loop's thread, not a worker
        ?assert(is_integer(LoopThread)),
        ?assertNot(lists:member(LoopThread, WorkerThreads)),
        %% one loop thread (shared GIL), or one per worker's interpreter
        %% (sub-interpreters): Loop(T) holds for the threads that may answer
        Loop = case py_test_lib:subinterp_mode() of
                   false -> fun(T) -> T =:= LoopThread end;
                   true -> fun(T) -> is_integer(T) andalso not lists:member(T, WorkerThreads) end
               end,
        {ok, [4.0, T2]} = py:async_await(py:async_call(?H, call_erlang, [<<"rt_sqrt">>, 16]), 5000),
        ?assert(Loop(T2)),
        %% several at once
        Hs = [{I, py:async_call(?H, call_erlang, [<<"rt_twice">>, I])} || I <- lists:seq(1, 8)],
        Rs = [{I, py:async_await(H, 5000)} || {I, H} <- Hs],
        ?assertEqual([{I, 2 * I} || I <- lists:seq(1, 8)], [{I, V} || {I, {ok, [V, _]}} <- Rs]),
        ?assertEqual([], [R || {_, {ok, [_, T]}} = R <- Rs, not Loop(T)]),
        %% failing callbacks: uncaught, and caught inside the coroutine
        ?assertMatch({error, {'ErlangError', _}},
                     py:async_await(py:async_call(?H, call_erlang, [<<"rt_fail">>, 1]), 5000)),
        ?assertEqual({ok, [<<"caught">>, <<"ErlangError">>]},
                     py:async_await(py:async_call(?H, call_erlang_catching,
                                                  [<<"rt_fail">>, 1]), 5000)),
        ?assertMatch({error, {'NameError', _}},
                     py:async_await(py:async_call(?H, call_erlang,
                                                  [<<"rt_never_registered">>, 1]), 5000)),
        {ok, [6, T3]} = py:async_await(py:async_call(?H, call_erlang, [<<"rt_twice">>, 3]), 5000),
        ?assert(Loop(T3))
    after
        py:unregister_function(rt_twice),
        py:unregister_function(rt_sqrt),
        py:unregister_function(rt_fail)
    end,
    ?assertEqual(ok, no_stray_messages(100)),
    assert_idle().

%%====================================================================
%% Memory
%%====================================================================

memory_stats_keys(_Config) ->
    {ok, S} = py:memory_stats(),
    ?assertMatch(#{gc_stats := _, gc_count := _, gc_threshold := _, gc_enabled := _,
                   tracemalloc := _}, S),
    #{gc_stats := GcStats, gc_count := Count, gc_threshold := Threshold,
      gc_enabled := Enabled, tracemalloc := Tracing} = S,
    ?assertEqual(3, length(GcStats)),
    lists:foreach(fun(G) ->
                          ?assertMatch(#{collected := C, collections := N, uncollectable := U}
                                         when is_integer(C) andalso C >= 0 andalso
                                              is_integer(N) andalso N >= 0 andalso
                                              is_integer(U) andalso U >= 0, G)
                  end, GcStats),
    ?assertMatch({A, B, C} when is_integer(A) andalso is_integer(B) andalso is_integer(C)
                                andalso A >= 0 andalso B >= 0 andalso C >= 0, Count),
    ?assertMatch({A, B, C} when is_integer(A) andalso A > 0 andalso is_integer(B)
                                andalso is_integer(C), Threshold),
    ?assertEqual(true, Enabled),
    ?assertEqual(false, Tracing),
    ?assertNot(maps:is_key(traced_memory_current, S)),
    ?assertNot(maps:is_key(traced_memory_peak, S)),
    %% the same from a bound process (runs on its worker)
    ok = py:bind(),
    ?assertMatch({ok, #{gc_enabled := true, tracemalloc := false}}, py:memory_stats()),
    ok = py:unbind(),
    assert_idle().

gc_generations(_Config) ->
    %% bound: the counters read are those of the interpreter collected
    %% (with sub-interpreters each worker has its own)
    bound(fun gc_generations/0).

%% Runs Fun from this process bound to a worker, then checks the pool idle.
bound(Fun) ->
    ok = py:bind(),
    try Fun()
    after ok = py:unbind()
    end,
    assert_idle().

gc_generations() ->
    lists:foreach(fun(Gen) ->
                          {ok, Before} = py:memory_stats(),
                          R = py:gc(Gen),
                          ?assertMatch({ok, N} when is_integer(N) andalso N >= 0, R),
                          {ok, After} = py:memory_stats(),
                          %% generation Gen was collected at least once more
                          ?assert(collections(Gen, After) > collections(Gen, Before),
                                  {generation, Gen})
                  end, [0, 1, 2]),
    {ok, Before} = py:memory_stats(),
    ?assertMatch({ok, N} when is_integer(N) andalso N >= 0, py:gc()),
    {ok, After} = py:memory_stats(),
    ?assert(collections(2, After) > collections(2, Before)),
    %% out of range
    ?assertError(function_clause, py:gc(3)),
    ?assertError(function_clause, py:gc(-1)),
    ?assertError(function_clause, py:gc(full)).

%% Unreachable reference cycles (automatic collection off) are freed only
%% by an explicit collection, which counts them.
gc_cyclic_garbage(_Config) ->
    %% bound: with one interpreter per worker (execution_mode subinterp) the
    %% cycles and the collection must be in the same one
    bound(fun gc_cyclic_garbage/0).

gc_cyclic_garbage() ->
    ?assertEqual({ok, 50}, py:call(?H, make_cycles, [50])),
    ?assertMatch({ok, #{gc_enabled := false}}, py:memory_stats()),
    {ok, N0} = py:gc(0),
    ?assert(N0 >= 100, {collected, N0}),
    ?assertEqual({ok, 50}, py:call(?H, make_cycles, [50])),
    {ok, N2} = py:gc(),
    ?assert(N2 >= 100, {collected, N2}),
    ?assertEqual({ok, 1}, py:call(?H, make_cycles, [1])),
    {ok, N1} = py:gc(1),
    ?assert(N1 >= 2, {collected, N1}),
    ?assertEqual({ok, true}, py:call(?H, gc_enable, [])),
    ?assertMatch({ok, #{gc_enabled := true}}, py:memory_stats()).

tracemalloc_cycle(_Config) ->
    {ok, S0} = py:memory_stats(),
    ?assertMatch(#{tracemalloc := false}, S0),
    ?assertNot(maps:is_key(traced_memory_current, S0)),
    ?assertEqual(ok, py:tracemalloc_start()),
    {ok, S1} = py:memory_stats(),
    ?assertMatch(#{tracemalloc := true, traced_memory_current := C, traced_memory_peak := P}
                   when is_integer(C) andalso is_integer(P) andalso P >= C andalso C >= 0, S1),
    #{traced_memory_current := Cur1, traced_memory_peak := Peak1} = S1,
    %% about 3 MB kept alive
    ?assertEqual({ok, 1}, py:call(?H, hold_memory, [20000])),
    {ok, #{traced_memory_current := Cur2, traced_memory_peak := Peak2}} = py:memory_stats(),
    ?assert(Cur2 >= Cur1 + 1000000, {Cur1, Cur2}),
    ?assert(Peak2 >= Cur2),
    ?assert(Peak2 >= Peak1),
    %% freed: current drops, the peak stays
    ?assertEqual({ok, 0}, py:call(?H, drop_memory, [])),
    {ok, #{traced_memory_current := Cur3, traced_memory_peak := Peak3}} = py:memory_stats(),
    ?assert(Cur3 < Cur2, {Cur2, Cur3}),
    ?assert(Peak3 >= Cur2),
    ?assertEqual(ok, py:tracemalloc_stop()),
    {ok, S4} = py:memory_stats(),
    ?assertMatch(#{tracemalloc := false}, S4),
    ?assertNot(maps:is_key(traced_memory_current, S4)),
    ?assertNot(maps:is_key(traced_memory_peak, S4)),
    %% with frames; starting twice and stopping twice are fine
    ?assertEqual(ok, py:tracemalloc_start(5)),
    ?assertEqual(ok, py:tracemalloc_start(5)),
    ?assertMatch({ok, #{tracemalloc := true, traced_memory_current := _}}, py:memory_stats()),
    ?assertEqual(ok, py:tracemalloc_stop()),
    ?assertEqual(ok, py:tracemalloc_stop()),
    ?assertMatch({ok, #{tracemalloc := false}}, py:memory_stats()),
    ?assertError(function_clause, py:tracemalloc_start(0)),
    assert_idle().

collections(Gen, #{gc_stats := GcStats}) ->
    maps:get(collections, lists:nth(Gen + 1, GcStats)).

%%====================================================================
%% Reload
%%====================================================================

%% A module imported on every worker (two bound contexts, two unbound
%% workers, a context namespace holding the module) is rewritten and
%% reloaded: every worker runs the new code.
reload_every_worker(Config) ->
    Dir = filename:join(?config(priv_dir, Config), "reload_every_worker"),
    File = filename:join(Dir, "rt_reload_mod.py"),
    ok = filelib:ensure_path(Dir),
    ok = write_reload_module(File, 1),
    with_sys_path(Dir, [rt_reload_mod], fun() ->
        {ok, C1} = py:bind(new),
        {ok, C2} = py:bind(new),
        try
            [ok = py:ctx_exec(C, <<"import rt_reload_mod">>) || C <- [C1, C2]],
            Threads1 = assert_version_everywhere(1, C1, C2),
            ok = write_reload_module(File, 2),
            %% not reloaded yet: the old code still runs
            ?assertMatch({ok, [1, _]}, py:ctx_call(C1, rt_reload_mod, version, [0])),
            ?assertEqual(ok, py:reload(rt_reload_mod)),
            Threads2 = assert_version_everywhere(2, C1, C2),
            ?assertEqual(lists:sort(Threads1), lists:sort(Threads2)),
            %% the binary name works too
            ok = write_reload_module(File, 3),
            ?assertEqual(ok, py:reload(<<"rt_reload_mod">>)),
            _ = assert_version_everywhere(3, C1, C2)
        after
            py:unbind(C1),
            py:unbind(C2)
        end
    end),
    assert_idle().

%% A module that does not exist; a rewrite with a syntax error (the error
%% is returned and the old code stays); a module not imported before.
reload_errors(Config) ->
    Dir = filename:join(?config(priv_dir, Config), "reload_errors"),
    File = filename:join(Dir, "rt_reload_bad.py"),
    ok = filelib:ensure_path(Dir),
    ok = write_reload_module(File, 1),
    ok = file:write_file(filename:join(Dir, "rt_reload_fresh.py"), "def value():\n    return 'fresh'\n"),
    with_sys_path(Dir, [rt_reload_bad, rt_reload_fresh], fun() ->
        ?assertMatch({error, {'ModuleNotFoundError', _}}, py:reload(rt_no_such_module_xyz)),
        ?assertMatch({ok, [1, _]}, py:call(rt_reload_bad, version, [0])),
        %% imported everywhere (each sub-interpreter imports on its own):
        %% the old code stays where it was imported
        ok = py_test_lib:exec_everywhere(?NUM_WORKERS, <<"import rt_reload_bad">>, #{}),
        ok = file:write_file(File, "def version(delay=0):\n    return (\n"),
        ?assertMatch({error, {'SyntaxError', _}}, py:reload(rt_reload_bad)),
        {ok, C} = py:bind(new),
        try
            ?assertMatch({ok, [1, _]}, py:ctx_call(C, rt_reload_bad, version, [0])),
            ?assertMatch({ok, [1, _]}, py:call(rt_reload_bad, version, [0])),
            ok = write_reload_module(File, 2),
            ?assertEqual(ok, py:reload(rt_reload_bad)),
            ?assertMatch({ok, [2, _]}, py:ctx_call(C, rt_reload_bad, version, [0])),
            ?assertMatch({ok, [2, _]}, py:call(rt_reload_bad, version, [0]))
        after
            py:unbind(C)
        end,
        %% never imported before: reload imports it
        ?assertEqual(ok, py:reload(rt_reload_fresh)),
        ?assertEqual({ok, <<"fresh">>}, py:call(rt_reload_fresh, value, []))
    end),
    %% a string names the module too (as the original library takes it)
    ?assertEqual(ok, py:reload("json")),
    ?assertEqual({ok, <<"[1]">>}, py:call(json, dumps, [[1]])),
    ?assertEqual({error, {badarg, module}}, py:reload([16#110000])),
    ?assertError(function_clause, py:reload(42)),
    assert_idle().

%% The module returns [Version, thread ident]; each version has a different
%% length, so a cached .pyc of the same second is never taken for it.
write_reload_module(File, Version) ->
    Pad = lists:duplicate(Version, $#),
    file:write_file(File, ["import threading\nimport time\n\n\n"
                           "def version(delay=0):\n"
                           "    time.sleep(delay)\n"
                           "    return [", integer_to_list(Version),
                           ", threading.get_ident()]  ", Pad, "\n"]).

%% Version V from the two contexts (call and namespace), and from the two
%% unbound workers (concurrent calls, each sleeping, until both were seen);
%% the four threads differ.  Returns them.
assert_version_everywhere(V, C1, C2) ->
    Ctx = [begin
               {ok, [V1, T]} = py:ctx_call(C, rt_reload_mod, version, [0]),
               ?assertEqual(V, V1),
               ?assertEqual({ok, V}, py:ctx_eval(C, <<"rt_reload_mod.version()[0]">>)),
               ?assertEqual({ok, V}, py:ctx_eval(C, <<"__import__('rt_reload_mod').version()[0]">>)),
               T
           end || C <- [C1, C2]],
    Unbound = threads_of(2, fun() -> py:call(rt_reload_mod, version, [0.3]) end, V),
    ?assertEqual(2, length(Unbound)),
    Threads = Ctx ++ Unbound,
    ?assertEqual(4, length(lists:usort(Threads))),
    Threads.

with_sys_path(Dir, Modules, Fun) ->
    Locals = #{d => unicode:characters_to_binary(Dir),
               mods => [atom_to_binary(M, utf8) || M <- Modules]},
    %% on every worker: with sub-interpreters each has its own sys.path
    ok = py_test_lib:exec_everywhere(?NUM_WORKERS,
                                     <<"import sys\nif d not in sys.path: sys.path.insert(0, d)\n">>,
                                     Locals),
    try Fun()
    after
        ok = py_test_lib:exec_everywhere(?NUM_WORKERS,
                                         <<"import sys\n"
                                           "sys.path[:] = [p for p in sys.path if p != d]\n"
                                           "for m in mods: sys.modules.pop(m, None)\n">>, Locals)
    end.

%%====================================================================
%% Execution model
%%====================================================================

execution_model(_Config) ->
    %% execution_mode auto: sub-interpreters on 3.13+, else a shared GIL
    Minor = py_test_lib:python_minor(),
    ?assertEqual(case Minor >= 13 of true -> subinterp; false -> multi_executor end,
                 py:execution_mode()),
    ?assertEqual(?NUM_WORKERS, py:num_executors()),
    ?assertEqual(Minor >= 12, py:subinterp_supported()),
    ?assertEqual(length(py_pool:workers()), py:num_executors()),
    %% binding does not change the number of executors
    ok = py:bind(),
    ?assertEqual(?NUM_WORKERS, py:num_executors()),
    ok = py:unbind(),
    ?assertEqual({ok, ?NUM_WORKERS}, py:eval(<<"len(set(ts))">>, #{ts => worker_threads()})),
    assert_idle().

%% Four 0.3 s sleeps on four workers run at once; results come in order.
parallel_sleeps(_Config) ->
    T0 = now_ms(),
    R = py:parallel([{time, sleep, [0.3]} || _ <- lists:seq(1, 4)]),
    Elapsed = now_ms() - T0,
    ?assertEqual({ok, [{ok, none}, {ok, none}, {ok, none}, {ok, none}]}, R),
    ?assert(Elapsed < 900, {elapsed_ms, Elapsed}),
    %% in order, although they finish in the reverse order, on 4 workers
    {ok, Tagged} = py:parallel([{?H, sleep_tag, [0.05 * (5 - I), I]} || I <- lists:seq(1, 4)]),
    ?assertEqual([1, 2, 3, 4], [Tag || {ok, [Tag, _]} <- Tagged]),
    ?assertEqual(4, length(lists:usort([T || {ok, [_, T]} <- Tagged]))),
    ?assertEqual({ok, []}, py:parallel([])),
    ?assertEqual({ok, [{ok, 4.0}, {ok, 3}, {ok, <<"b">>}]},
                 py:parallel([{math, sqrt, [16]}, {builtins, len, [[1, 2, 3]]},
                              {<<"builtins">>, <<"str">>, [<<"b">>]}])),
    %% more calls than workers
    {ok, Many} = py:parallel([{?H, sleep_tag, [0.01, I]} || I <- lists:seq(1, 12)]),
    ?assertEqual(lists:seq(1, 12), [Tag || {ok, [Tag, _]} <- Many]),
    ?assertEqual(ok, no_stray_messages(100)),
    assert_idle().

%% Each call has its own outcome, in list order: one failing call hides
%% no other (the original library's shape).
parallel_errors(_Config) ->
    {ok, [R1, R2, R3, R4]} =
        py:parallel([{?H, sleep_tag, [0.1, 1]}, {?H, fail, [<<"p2">>]},
                     {?H, sleep_tag, [0.1, 3]}, {?H, sleep_tag, [0.1, 4]}]),
    ?assertMatch({ok, [1, _]}, R1),
    ?assertEqual({error, {'ValueError', <<"p2">>}}, R2),
    ?assertMatch({ok, [3, _]}, R3),
    ?assertMatch({ok, [4, _]}, R4),
    ?assertEqual({ok, [{error, {'ValueError', <<"first">>}},
                       {error, {'ValueError', <<"second">>}}]},
                 py:parallel([{?H, sleep_then_fail_sync, [0.2, <<"first">>]},
                              {?H, fail, [<<"second">>]}])),
    ?assertMatch({ok, [{error, {'ModuleNotFoundError', _}}, {ok, none}]},
                 py:parallel([{rt_no_such_module_xyz, f, []}, {time, sleep, [0.01]}])),
    ?assertMatch({ok, [{error, {'TypeError', _}}]}, py:parallel([{math, sqrt, [<<"x">>]}])),
    ?assertEqual({ok, [{error, {badarg, args}}, {ok, 3.0}]},
                 py:parallel([{math, sqrt, 16}, {math, sqrt, [9]}])),
    ?assertEqual({error, {badarg, calls}}, py:parallel([{math, sqrt}])),
    ?assertEqual(ok, no_stray_messages(300)),
    %% all fine afterwards
    ?assertEqual({ok, [{ok, 2.0}, {ok, 3.0}]}, py:parallel([{math, sqrt, [4]}, {math, sqrt, [9]}])),
    assert_idle().

%% From a bound process, parallel never uses the caller's own worker.
parallel_from_bound_process(_Config) ->
    ok = py:bind(),
    {ok, Mine} = py:call(?H, thread_id, []),
    {ok, Tagged} = py:parallel([{?H, sleep_tag, [0.2, I]} || I <- lists:seq(1, 3)]),
    Threads = [T || {ok, [_, T]} <- Tagged],
    ?assertEqual([1, 2, 3], [Tag || {ok, [Tag, _]} <- Tagged]),
    ?assertEqual(3, length(lists:usort(Threads))),
    ?assertNot(lists:member(Mine, Threads)),
    ?assertEqual({ok, Mine}, py:call(?H, thread_id, [])),
    ok = py:unbind(),
    assert_idle().

%% py:parallel while another process keeps the pool busy with quick calls
%% (each holds one worker for microseconds): the three sleeping calls of
%% every round still run at once, on three different workers of the four.
parallel_while_busy(_Config) ->
    Hammer = spawn_link(fun Loop() -> {ok, 2} = py:eval(<<"1 + 1">>), Loop() end),
    Rounds = try
                 [begin
                      {ok, R} = py:parallel([{?H, sleep_tag, [0.1, I]} || I <- [1, 2, 3]]),
                      ?assertEqual([1, 2, 3], [Tag || {ok, [Tag, _]} <- R]),
                      length(lists:usort([T || {ok, [_, T]} <- R]))
                  end || _ <- lists:seq(1, 60)]
             after
                 unlink(Hammer),
                 exit(Hammer, kill)
             end,
    %% {rounds whose calls shared a thread (ran one after another), rounds}
    ?assertEqual({0, 60}, {length([N || N <- Rounds, N < 3]), length(Rounds)}),
    assert_idle().

%%====================================================================
%% Overload (max_concurrent = 3 in this group)
%%====================================================================

%% 100 concurrent callers through 3 slots: all succeed, and no more than 3
%% slots are ever held.
overload_many_callers(_Config) ->
    ?assertEqual(3, py_semaphore:max_concurrent()),
    ?assertEqual(0, py_semaphore:current()),
    Sampler = start_sampler(),
    Results = concurrently([fun() -> py:call(time, sleep, [0.01], #{}, 5000) end
                            || _ <- lists:seq(1, 100)]),
    Samples = stop_sampler(Sampler),
    ?assertEqual(lists:duplicate(100, {ok, none}), Results),
    ?assert(lists:max(Samples) =< 3, {max_current, lists:max(Samples)}),
    ?assert(lists:max(Samples) >= 1),
    %% more parallel calls and coroutines than slots: they wait their turn
    ?assertEqual({ok, lists:duplicate(10, {ok, none})},
                 py:parallel([{time, sleep, [0.01]} || _ <- lists:seq(1, 10)])),
    ?assertEqual({ok, lists:seq(1, 10)},
                 py:async_gather([{?H, tagged, [I, 0.01]} || I <- lists:seq(1, 10)])),
    assert_idle().

overload_counters(_Config) ->
    ?assertEqual(3, py_semaphore:max_concurrent()),
    ?assertEqual(0, py_semaphore:current()),
    Callers = [spawn_caller(fun() -> py:call(time, sleep, [0.5], #{}, 5000) end)
               || _ <- [1, 2]],
    ?assertEqual(2, wait_until(fun py_semaphore:current/0, fun(C) -> C =:= 2 end)),
    ?assertEqual([{ok, none}, {ok, none}], [caller_result(C) || C <- Callers]),
    ?assertEqual(0, wait_until(fun py_semaphore:current/0, fun(C) -> C =:= 0 end)),
    ok = py_semaphore:set_max_concurrent(7),
    ?assertEqual(7, py_semaphore:max_concurrent()),
    ok = py_semaphore:set_max_concurrent(3),
    ?assertEqual(3, py_semaphore:max_concurrent()),
    ?assertError(function_clause, py_semaphore:set_max_concurrent(0)),
    ?assertError(function_clause, py_semaphore:acquire(-1)),
    ?assertEqual(3, py_semaphore:max_concurrent()),
    assert_idle().

%% The test process takes all three slots: calls and acquires give up with
%% {overloaded, 3, 3}; each release lets work through again.
acquire_release(_Config) ->
    ?assertEqual(ok, py_semaphore:acquire(1000)),
    ?assertEqual(1, py_semaphore:current()),
    ?assertEqual(ok, py_semaphore:acquire(1000)),
    ?assertEqual(ok, py_semaphore:acquire(infinity)),
    ?assertEqual(3, py_semaphore:current()),
    ?assertEqual({error, {overloaded, 3, 3}}, py:call(time, sleep, [0], #{}, 100)),
    ?assertEqual({error, {overloaded, 3, 3}}, py:eval(<<"1 + 1">>, #{}, 100)),
    ?assertEqual({error, {overloaded, 3, 3}}, py:exec(<<"x = 1">>, #{}, 100)),
    ?assertEqual({error, max_concurrent}, py_semaphore:acquire(100)),
    ?assertEqual({error, max_concurrent}, py_semaphore:acquire(0)),
    ?assertEqual(3, py_semaphore:current()),
    ?assertEqual(ok, py_semaphore:release()),
    ?assertEqual(2, py_semaphore:current()),
    ?assertEqual({ok, none}, py:call(time, sleep, [0], #{}, 1000)),
    ?assertEqual({ok, 2}, py:eval(<<"1 + 1">>, #{}, 1000)),
    ?assertEqual(2, py_semaphore:current()),
    ?assertEqual(ok, py_semaphore:release()),
    ?assertEqual(ok, py_semaphore:release()),
    ?assertEqual(0, py_semaphore:current()),
    %% releasing more than was taken is harmless
    ?assertEqual(ok, py_semaphore:release()),
    ?assertEqual(0, py_semaphore:current()),
    %% a bound process takes no slot: it holds its worker already
    ok = py:bind(),
    [ok = py_semaphore:acquire(1000) || _ <- [1, 2, 3]],
    ?assertEqual({ok, 2}, py:eval(<<"2">>, #{}, 100)),
    ?assertEqual(3, py_semaphore:current()),
    [ok = py_semaphore:release() || _ <- [1, 2, 3]],
    ok = py:unbind(),
    %% nor does an explicit context
    {ok, Ctx} = py:bind(new),
    [ok = py_semaphore:acquire(1000) || _ <- [1, 2, 3]],
    ?assertEqual({ok, 2.0}, py:ctx_call(Ctx, math, sqrt, [4], #{}, 100)),
    ?assertEqual({ok, 2}, py:ctx_eval(Ctx, <<"2">>, #{}, 100)),
    ?assertEqual({error, {overloaded, 3, 3}}, py:eval(<<"2">>, #{}, 100)),
    [ok = py_semaphore:release() || _ <- [1, 2, 3]],
    ok = py:unbind(Ctx),
    assert_idle().

%% A request waiting for a slot is admitted when one is released, and when
%% the number of slots is raised.
waiting_request_admitted(_Config) ->
    Holder = slot_holder(3),
    Caller = spawn_caller(fun() -> py:call(time, sleep, [0], #{}, 5000) end),
    ?assertEqual(waiting, wait_until(fun() -> caller_status(Caller) end,
                                     fun(S) -> S =:= waiting end)),
    timer:sleep(100),
    ?assertEqual(3, py_semaphore:current()),
    ?assertEqual(no_result, caller_result(Caller, 0)),
    ?assertEqual(ok, holder_release(Holder)),
    ?assertEqual({ok, none}, caller_result(Caller)),
    %% raising the maximum admits a waiting request at once
    ?assertEqual(ok, py_semaphore:acquire(1000)),
    ?assertEqual(3, py_semaphore:current()),
    Caller2 = spawn_caller(fun() -> py:call(time, sleep, [0], #{}, 5000) end),
    timer:sleep(100),
    ?assertEqual(no_result, caller_result(Caller2, 0)),
    ok = py_semaphore:set_max_concurrent(4),
    try
        ?assertEqual({ok, none}, caller_result(Caller2))
    after
        ok = py_semaphore:set_max_concurrent(3)
    end,
    ok = py_semaphore:release(),
    stop_holder(Holder),
    assert_idle().

%% Callers killed while waiting for a slot leave nothing held.
no_leak_killed_waiting(_Config) ->
    Holder = slot_holder(3),
    Callers = [spawn_caller(fun() -> py:call(time, sleep, [0.01], #{}, 10000) end)
               || _ <- lists:seq(1, 10)],
    [?assertEqual(waiting, wait_until(fun() -> caller_status(C) end,
                                      fun(S) -> S =:= waiting end)) || C <- Callers],
    timer:sleep(50),
    ?assertEqual(3, py_semaphore:current()),
    [kill_caller(C) || C <- Callers],
    ?assertEqual(3, py_semaphore:current()),
    %% the slots given back are not handed to the dead callers for good
    ?assertEqual(ok, holder_release(Holder)),
    ?assertEqual(2, wait_until(fun py_semaphore:current/0, fun(C) -> C =:= 2 end)),
    stop_holder(Holder),
    assert_idle(),
    ?assertEqual(lists:duplicate(10, {ok, none}),
                 concurrently([fun() -> py:call(time, sleep, [0.01], #{}, 5000) end
                               || _ <- lists:seq(1, 10)])),
    assert_idle().

%% Callers killed while their request runs (and others while waiting
%% behind them): every slot comes back once the Python code is over.
no_leak_killed_running(_Config) ->
    Running = [spawn_caller(fun() -> py:call(time, sleep, [0.3], #{}, 10000) end)
               || _ <- [1, 2, 3]],
    ?assertEqual(3, wait_until(fun py_semaphore:current/0, fun(C) -> C =:= 3 end)),
    Waiting = [spawn_caller(fun() -> py:call(time, sleep, [0.3], #{}, 10000) end)
               || _ <- lists:seq(1, 5)],
    [?assertEqual(waiting, wait_until(fun() -> caller_status(C) end,
                                      fun(S) -> S =:= waiting end)) || C <- Waiting],
    [kill_caller(C) || C <- Running ++ Waiting],
    assert_idle(),
    %% running ones killed without anyone waiting behind them
    Running2 = [spawn_caller(fun() -> py:eval(<<"__import__('time').sleep(0.2)">>,
                                              #{}, 10000) end)
                || _ <- [1, 2]],
    ?assertEqual(2, wait_until(fun py_semaphore:current/0, fun(C) -> C =:= 2 end)),
    [kill_caller(C) || C <- Running2],
    assert_idle(),
    ?assertEqual({ok, none}, py:call(time, sleep, [0], #{}, 5000)),
    assert_idle().

%% Timeouts while waiting for a slot ({overloaded, 3, 3}) and while running
%% ({error, timeout}) give every slot back.
no_leak_timeouts(_Config) ->
    Holder = slot_holder(3),
    Waiting = concurrently([fun() -> py:call(time, sleep, [0.01], #{}, 100) end
                            || _ <- lists:seq(1, 10)]),
    ?assertEqual(lists:duplicate(10, {error, {overloaded, 3, 3}}), Waiting),
    ?assertEqual(3, py_semaphore:current()),
    stop_holder(Holder),
    assert_idle(),
    %% timeouts while running
    Running = concurrently([fun() -> py:call(time, sleep, [0.5], #{}, 100) end
                            || _ <- [1, 2, 3]]),
    ?assertEqual(lists:duplicate(3, {error, timeout}), Running),
    assert_idle(),
    %% both at once: 3 run and time out, the others time out waiting
    Mixed = concurrently([fun() -> py:call(time, sleep, [0.5], #{}, 150) end
                          || _ <- lists:seq(1, 8)]),
    ?assertEqual([], [R || R <- Mixed, R =/= {error, timeout}, not is_overloaded(R)]),
    ?assert(length([R || R <- Mixed, R =:= {error, timeout}]) >= 3, Mixed),
    assert_idle(),
    ?assertEqual({ok, none}, py:call(time, sleep, [0], #{}, 5000)),
    assert_idle().

%% Python exceptions give their slots back.
no_leak_python_exceptions(_Config) ->
    Results = concurrently(
                [fun() ->
                         case I rem 3 of
                             0 -> py:call(?H, fail, [<<"x">>], #{}, 5000);
                             1 -> py:eval(<<"1 / 0">>, #{}, 5000);
                             2 -> py:exec(<<"def (:">>, #{}, 5000)
                         end
                 end || I <- lists:seq(1, 30)]),
    lists:foreach(fun({I, R}) ->
                          case I rem 3 of
                              0 -> ?assertEqual({error, {'ValueError', <<"x">>}}, R);
                              1 -> ?assertMatch({error, {'ZeroDivisionError', _}}, R);
                              2 -> ?assertMatch({error, {'SyntaxError', _}}, R)
                          end
                  end, lists:zip(lists:seq(1, 30), Results)),
    ?assertMatch({error, {'ValueError', _}},
                 py:async_await(py:async_call(?H, sleep_then_fail, [0, <<"y">>]), 5000)),
    ?assertMatch({error, {'TypeError', _}}, py:async_await(py:async_call(?H, not_a_coroutine, [1]))),
    ?assertMatch({error, {'RuntimeError', _}}, py:async_stream(?H, fail_after, [1])),
    ?assertMatch({ok, [{error, {'ValueError', _}}]}, py:parallel([{?H, fail, [<<"z">>]}])),
    assert_idle().

%% Slots taken with acquire/1 come back when their holder ends, normally or
%% killed, and so does the place of a process killed while waiting in
%% acquire/1.
acquire_holder_dies(_Config) ->
    {P1, M1} = spawn_monitor(fun() -> [ok = py_semaphore:acquire(1000) || _ <- [1, 2, 3]] end),
    ?assertEqual(normal, down_reason(P1, M1)),
    assert_idle(),
    Holder = slot_holder(2),
    ?assertEqual(2, py_semaphore:current()),
    kill_holder(Holder),
    assert_idle(),
    %% killed while waiting in acquire
    Holder2 = slot_holder(3),
    Waiter = spawn_caller(fun() -> py_semaphore:acquire(infinity) end),
    ?assertEqual(waiting, wait_until(fun() -> caller_status(Waiter) end,
                                     fun(S) -> S =:= waiting end)),
    kill_caller(Waiter),
    stop_holder(Holder2),
    assert_idle(),
    %% a holder whose acquire timed out holds nothing
    Holder3 = slot_holder(3),
    TimedOut = spawn_caller(fun() -> R = py_semaphore:acquire(50), timer:sleep(300), R end),
    ?assertEqual({error, max_concurrent}, caller_result(TimedOut)),
    stop_holder(Holder3),
    assert_idle(),
    ?assertEqual({ok, none}, py:call(time, sleep, [0], #{}, 5000)).

%% Python code holding every slot calls back into Erlang, which calls
%% Python again: those nested requests never wait for a slot, so nothing
%% deadlocks or is refused.
overload_callbacks(_Config) ->
    ok = py:register_function(rt_nested_sqrt,
                              fun([X]) -> {ok, V} = py:call(math, sqrt, [X], #{}, 2000), V end),
    try
        Results = concurrently([fun() -> py:call(?H, call_erlang_sync,
                                                 [<<"rt_nested_sqrt">>, I * I, 0.05],
                                                 #{}, 5000)
                                end || I <- lists:seq(1, 6)]),
        ?assertEqual([{ok, float(I)} || I <- lists:seq(1, 6)], Results)
    after
        py:unregister_function(rt_nested_sqrt)
    end,
    assert_idle().

%% 100 concurrent callers: plain calls, Python errors, short timeouts,
%% callers killed at random moments, acquire/release holders some of which
%% die holding.  The plain calls all succeed and nothing leaks.
overload_mixed_stress(_Config) ->
    rand:seed(exsss, {1, 2, 3}),
    Plan = [{I, I rem 5} || I <- lists:seq(1, 100)],
    Callers = [{I, Kind, spawn_caller(stress_fun(Kind))} || {I, Kind} <- Plan],
    %% kill the callers of kind 3 at random moments
    lists:foreach(fun({_, 3, C}) -> timer:sleep(rand:uniform(5)), kill_caller(C);
                     (_) -> ok
                  end, Callers),
    Results = [{Kind, caller_result(C)} || {_, Kind, C} <- Callers, Kind =/= 3],
    lists:foreach(fun({0, R}) -> ?assertEqual({ok, none}, R);
                     ({1, R}) -> ?assertEqual({error, {'ValueError', <<"stress">>}}, R);
                     ({2, R}) -> ?assert(R =:= {error, timeout} orelse
                                             is_overloaded(R), R);
                     ({4, R}) -> ?assert(R =:= ok orelse R =:= held_and_died
                                         orelse is_overloaded(R), R)
                  end, Results),
    ?assertEqual(20, length([R || {0, R} <- Results])),
    assert_idle(),
    ?assertEqual(lists:duplicate(100, {ok, none}),
                 concurrently([fun() -> py:call(time, sleep, [0.005], #{}, 5000) end
                               || _ <- lists:seq(1, 100)])),
    assert_idle().

stress_fun(0) -> fun() -> py:call(time, sleep, [0.01], #{}, 5000) end;
stress_fun(1) -> fun() -> py:call(?H, fail, [<<"stress">>], #{}, 5000) end;
stress_fun(2) -> fun() -> py:call(time, sleep, [0.05], #{}, 20) end;
stress_fun(3) -> fun() -> py:call(time, sleep, [0.05], #{}, 5000) end;
stress_fun(4) ->
    fun() ->
            case py_semaphore:acquire(5000) of
                ok ->
                    timer:sleep(5),
                    case rand:uniform(2) of
                        1 -> py_semaphore:release();
                        2 -> held_and_died %% ends holding the slot
                    end;
                Error ->
                    Error
            end
    end.

is_overloaded({error, {overloaded, C, 3}}) when is_integer(C), C >= 0 -> true;
is_overloaded(_) -> false.

%%====================================================================
%% numpy
%%====================================================================

numpy_arrays(_Config) ->
    E = fun(Code) -> py:eval(iolist_to_binary(Code)) end,
    ?assertEqual({ok, [[0, 1, 2], [3, 4, 5]]}, E([?NP, ".arange(6).reshape(2, 3)"])),
    ?assertEqual({ok, [0.0, 0.25, 0.5, 0.75, 1.0]}, E([?NP, ".linspace(0, 1, 5)"])),
    ?assertEqual({ok, [[[0, 0], [0, 0]], [[0, 0], [0, 0]]]}, E([?NP, ".zeros((2, 2, 2), dtype=int)"])),
    ?assertEqual({ok, [[1.0, 0.0], [0.0, 1.0]]}, E([?NP, ".eye(2)"])),
    ?assertEqual({ok, [0.5, -1.5]}, E([?NP, ".array([0.5, -1.5], dtype='float32')"])),
    ?assertEqual({ok, [true, false, true]}, E([?NP, ".array([1, 0, 2]) > 0"])),
    ?assertEqual({ok, [0, 255]}, E([?NP, ".array([0, 255], dtype='uint8')"])),
    ?assertEqual({ok, [-128, 127]}, E([?NP, ".array([-128, 127], dtype='int8')"])),
    ?assertEqual({ok, [4611686018427387904]}, E([?NP, ".array([2 ** 62], dtype='int64')"])),
    ?assertEqual({ok, []}, E([?NP, ".array([])"])),
    ?assertEqual({ok, 5}, E([?NP, ".array(5)"])),
    %% Erlang lists in, numpy results out
    ?assertEqual({ok, 6}, py:call(numpy, sum, [[1, 2, 3]])),
    ?assertEqual({ok, [1, 3, 6]}, py:call(numpy, cumsum, [[1, 2, 3]])),
    ?assertEqual({ok, [[19, 22], [43, 50]]},
                 py:call(numpy, dot, [[[1, 2], [3, 4]], [[5, 6], [7, 8]]])),
    ?assertEqual({ok, [[1, 3], [2, 4]]}, py:call(numpy, transpose, [[[1, 2], [3, 4]]])),
    ?assertEqual({ok, [1.0, 2.0]}, py:call(numpy, sqrt, [[1, 4]])),
    %% errors
    ?assertMatch({error, {'ValueError', _}},
                 E([?NP, ".zeros((2, 2)) @ ", ?NP, ".zeros((3, 3))"])),
    ?assertMatch({error, {'ValueError', _}}, py:call(numpy, reshape, [[1, 2, 3], [2, 2]])),
    ?assertMatch({error, {'AttributeError', _}}, py:call(numpy, no_such_function_xyz, [])),
    assert_idle().

numpy_scalars(_Config) ->
    ?assertEqual({ok, #{<<"int64">> => 7, <<"int32">> => -3, <<"uint8">> => 255,
                        <<"int64_big">> => 4611686018427387904,
                        <<"float32">> => 1.5, <<"float64">> => 2.25,
                        <<"bool_true">> => true, <<"bool_false">> => false,
                        <<"sum">> => 10, <<"mean">> => 3.0}},
                 py:call(?H, np_scalars, [])),
    ?assertEqual({ok, 7}, py:eval(<<?NP ".int64(7)">>)),
    ?assertEqual({ok, 1.5}, py:eval(<<?NP ".float32(1.5)">>)),
    ?assertEqual({ok, true}, py:eval(<<?NP ".bool_(True)">>)),
    ?assertEqual({ok, false}, py:eval(<<?NP ".bool_(0)">>)),
    {ok, F} = py:eval(<<?NP ".float32(0.1)">>),
    ?assert(is_float(F)),
    ?assert(abs(F - 0.1) < 1.0e-6),
    {ok, Max} = py:eval(<<?NP ".array([3, 9, 4]).max()">>),
    ?assertEqual(9, Max),
    ?assertEqual({ok, [1, 2.5, true]},
                 py:eval(<<"[" ?NP ".int16(1), " ?NP ".float64(2.5), " ?NP ".bool_(1)]">>)),
    assert_idle().

%% numpy from each of the four workers (four calls at once, each sleeping).
numpy_every_worker(_Config) ->
    Expected = lists:sum([I * I || I <- lists:seq(0, 999)]),
    Threads = threads_of(?NUM_WORKERS, fun() -> py:call(?H, np_work, [1000, 0.3]) end, Expected),
    ?assertEqual(lists:sort(worker_threads()), Threads),
    assert_idle().

%% Four bound contexts (every worker) each keep their own array between
%% calls, on their own thread.
numpy_bound_contexts(_Config) ->
    Ctxs = [begin {ok, C} = py:bind(new), {I, C} end || I <- lists:seq(1, ?NUM_WORKERS)],
    try
        ?assertEqual(0, maps:get(available_workers, py_pool:get_stats())),
        Threads = [begin
                       ok = py:ctx_exec(C, iolist_to_binary(["import numpy as np\n"
                                                             "arr = np.arange(10) * ",
                                                             integer_to_list(I), "\n"])),
                       {ok, T} = py:ctx_call(C, ?H, thread_id, []),
                       T
                   end || {I, C} <- Ctxs],
        ?assertEqual(?NUM_WORKERS, length(lists:usort(Threads))),
        lists:foreach(
          fun({{I, C}, T}) ->
                  ?assertEqual({ok, [K * I || K <- lists:seq(0, 9)]}, py:ctx_eval(C, <<"arr">>)),
                  ?assertEqual({ok, 45 * I}, py:ctx_eval(C, <<"arr.sum()">>)),
                  ok = py:ctx_exec(C, <<"arr += 1">>),
                  ?assertEqual({ok, [K * I + 1 || K <- lists:seq(0, 9)]},
                               py:ctx_eval(C, <<"arr.tolist()">>)),
                  ?assertEqual({ok, [<<"int64">>, 10]},
                               py:ctx_eval(C, <<"[str(arr.dtype), len(arr)]">>)),
                  ?assertEqual({ok, T}, py:ctx_call(C, ?H, thread_id, []))
          end, lists:zip(Ctxs, Threads)),
        %% still there on a second round, each on its own thread
        lists:foreach(
          fun({{I, C}, T}) ->
                  ?assertEqual({ok, 45 * I + 10}, py:ctx_eval(C, <<"int(arr.sum())">>)),
                  ?assertEqual({ok, T}, py:ctx_eval(C, <<"__import__('threading').get_ident()">>))
          end, lists:zip(Ctxs, Threads))
    after
        [py:unbind(C) || {_, C} <- Ctxs]
    end,
    %% a process binding of its own
    ok = py:bind(),
    ok = py:exec(<<"import numpy as np\nm = np.ones((2, 2))">>),
    ok = py:exec(<<"m = m * 3">>),
    ?assertEqual({ok, [[3.0, 3.0], [3.0, 3.0]]}, py:eval(<<"m">>)),
    ok = py:unbind(),
    assert_idle().

%%====================================================================
%% Virtual environments (in a peer node)
%%====================================================================

venv_activate(Config) ->
    ?assertEqual(ok, in_peer(Config, venv_activate_body, [?config(venvs, Config)])).

venv_deactivate(Config) ->
    ?assertEqual(ok, in_peer(Config, venv_deactivate_body, [?config(venvs, Config)])).

venv_not_a_venv(Config) ->
    ?assertEqual(ok, in_peer(Config, venv_not_a_venv_body, [?config(venvs, Config)])).

venv_replace(Config) ->
    ?assertEqual(ok, in_peer(Config, venv_replace_body, [?config(venvs, Config)])).

%% Runs in the peer: no venv, the pool idle.
venv_clean_state() ->
    ?assertEqual({ok, #{<<"active">> => false}}, py:venv_info()),
    assert_idle(),
    ok.

%% Contexts bound before activation that failed to import venvmod import it
%% afterwards, and so does a context bound after, and every unbound worker.
venv_activate_body(#{a := VenvA}) ->
    Bin = unicode:characters_to_binary(VenvA),
    SitePackages = site_packages(VenvA),
    Ctxs = [begin {ok, C} = py:bind(new), C end || _ <- [1, 2, 3]],
    try
        [?assertMatch({error, {'ModuleNotFoundError', _}}, py:ctx_call(C, venvmod, value, [0]))
         || C <- Ctxs],
        [?assertMatch({error, {'ModuleNotFoundError', _}},
                      py:ctx_eval(C, <<"__import__('venvmod').VALUE">>)) || C <- Ctxs],
        ?assertMatch({error, {'ModuleNotFoundError', _}}, py:call(venvmod, value, [0])),
        ?assertEqual(ok, py:activate_venv(VenvA)),
        ?assertEqual({ok, #{<<"active">> => true, <<"path">> => Bin,
                            <<"site_packages">> => SitePackages,
                            <<"python_version">> => list_to_binary(lists:nthtail(length("python"), pyver()))}},
                     py:venv_info()),
        {ok, C4} = py:bind(new),
        All = Ctxs ++ [C4],
        Threads = [begin
                       {ok, [42, T]} = py:ctx_call(C, venvmod, value, [0]),
                       ?assertEqual({ok, 42}, py:ctx_eval(C, <<"__import__('venvmod').VALUE">>)),
                       ?assertEqual(ok, py:ctx_exec(C, <<"import venvmod, venv_a_only">>)),
                       ?assertEqual({ok, [42, <<"a">>]},
                                    py:ctx_eval(C, <<"[venvmod.VALUE, venv_a_only.VALUE]">>)),
                       {ok, File} = py:ctx_eval(C, <<"venvmod.__file__">>),
                       ?assertEqual(SitePackages, filename:dirname(File)),
                       T
                   end || C <- All],
        ?assertEqual(4, length(lists:usort(Threads))),
        [py:unbind(C) || C <- All],
        assert_idle(),
        %% every unbound worker: four calls at once, each sleeping
        assert_on_all_workers(42, fun() -> py:call(venvmod, value, [0.3]) end),
        assert_on_all_workers(42, fun() -> py:call(rt_helpers, try_import,
                                                   [<<"venvmod">>, 0.3]) end)
    after
        [py:unbind(C) || C <- Ctxs]
    end,
    ok = py:deactivate_venv(),
    assert_idle(),
    ok.

%% After deactivation the venv's modules are gone on every worker: contexts
%% that imported them (and keep them in their namespace), unbound workers.
venv_deactivate_body(#{a := VenvA}) ->
    ?assertEqual(ok, py:deactivate_venv()), %% none active: ok
    ok = py:activate_venv(VenvA),
    Ctxs = [begin {ok, C} = py:bind(new), C end || _ <- [1, 2, 3]],
    try
        [begin
             ?assertMatch({ok, [42, _]}, py:ctx_call(C, venvmod, value, [0])),
             ok = py:ctx_exec(C, <<"import venvmod">>)
         end || C <- Ctxs],
        ?assertMatch({ok, [42, _]}, py:call(venvmod, value, [0])),
        ?assertEqual(ok, py:deactivate_venv()),
        ?assertEqual({ok, #{<<"active">> => false}}, py:venv_info()),
        {ok, C4} = py:bind(new),
        All = Ctxs ++ [C4],
        [begin
             ?assertMatch({error, {'ModuleNotFoundError', _}}, py:ctx_call(C, venvmod, value, [0])),
             ?assertMatch({error, {'ModuleNotFoundError', _}},
                          py:ctx_eval(C, <<"__import__('venvmod')">>)),
             ?assertMatch({error, {'ModuleNotFoundError', _}},
                          py:ctx_exec(C, <<"import venvmod">>)),
             ?assertMatch({error, {'ModuleNotFoundError', _}},
                          py:ctx_exec(C, <<"import venv_a_only">>))
         end || C <- All],
        ?assertEqual(4, length(lists:usort([T || C <- All,
                                                 {ok, T} <- [py:ctx_call(C, rt_helpers,
                                                                         thread_id, [])]]))),
        [py:unbind(C) || C <- All],
        assert_idle(),
        ?assertMatch({error, {'ModuleNotFoundError', _}}, py:call(venvmod, value, [0])),
        assert_on_all_workers(<<"ModuleNotFoundError">>,
                              fun() -> py:call(rt_helpers, try_import, [<<"venvmod">>, 0.3]) end),
        ?assertEqual(ok, py:deactivate_venv()),
        ?assertEqual({ok, #{<<"active">> => false}}, py:venv_info())
    after
        [py:unbind(C) || C <- Ctxs]
    end,
    assert_idle(),
    ok.

%% What is not a venv is refused with {not_a_venv, Path}, and the active
%% venv (if any) stays as it was.
venv_not_a_venv_body(#{a := VenvA, not_venv := Bare, broken := Broken, empty := Empty,
                        other := Other}) ->
    EmptyBin = unicode:characters_to_binary(Empty),
    ?assertEqual({error, {not_a_venv, EmptyBin}}, py:activate_venv(Empty)),
    ?assertEqual({error, {not_a_venv, EmptyBin}}, py:activate_venv(EmptyBin)),
    Missing = Empty ++ "_does_not_exist",
    ?assertEqual({error, {not_a_venv, unicode:characters_to_binary(Missing)}},
                 py:activate_venv(Missing)),
    ?assertEqual({ok, #{<<"active">> => false}}, py:venv_info()),
    ?assertMatch({error, {'ModuleNotFoundError', _}}, py:call(venvmod, value, [0])),
    %% pyvenv.cfg but no site-packages: an error, nothing activated
    ?assertMatch({error, {'ValueError', _}}, py:activate_venv(Broken)),
    ?assertEqual({ok, #{<<"active">> => false}}, py:venv_info()),
    %% another Python's site-packages only: an error naming what is needed
    {error, {'ValueError', Msg}} = py:activate_venv(Other),
    ?assertMatch({_, _}, binary:match(Msg, <<"python2.7">>)),
    ?assertEqual({ok, #{<<"active">> => false}}, py:venv_info()),
    %% lib/pythonX.Y/site-packages without pyvenv.cfg: a venv (as the
    %% original library takes it)
    ?assertEqual(ok, py:activate_venv(Bare)),
    ?assertMatch({ok, [99, _]}, py:call(venvmod, value, [0])),
    ?assertEqual(ok, py:deactivate_venv()),
    %% with a venv active
    ok = py:activate_venv(VenvA),
    ?assertEqual({error, {not_a_venv, EmptyBin}}, py:activate_venv(Empty)),
    ?assertMatch({error, _}, py:activate_venv(Broken)),
    ?assertMatch({ok, #{<<"active">> := true, <<"path">> := _}}, py:venv_info()),
    {ok, #{<<"path">> := Path}} = py:venv_info(),
    ?assertEqual(unicode:characters_to_binary(VenvA), Path),
    ?assertMatch({ok, [42, _]}, py:call(venvmod, value, [0])),
    ok = py:deactivate_venv(),
    assert_idle(),
    ok.

%% Activating venv B while A is active: B's modules everywhere, A's gone.
venv_replace_body(#{a := VenvA, b := VenvB}) ->
    ok = py:activate_venv(VenvA),
    Ctxs = [begin {ok, C} = py:bind(new), C end || _ <- [1, 2, 3]],
    try
        [begin
             ?assertMatch({ok, [42, _]}, py:ctx_call(C, venvmod, value, [0])),
             ok = py:ctx_exec(C, <<"import venv_a_only">>)
         end || C <- Ctxs],
        ?assertMatch({ok, [42, _]}, py:call(venvmod, value, [0])),
        ?assertEqual(ok, py:activate_venv(VenvB)),
        BinB = unicode:characters_to_binary(VenvB),
        SpA = site_packages(VenvA),
        SpB = site_packages(VenvB),
        ?assertMatch({ok, #{<<"active">> := true, <<"path">> := BinB,
                            <<"site_packages">> := SpB}}, py:venv_info()),
        {ok, C4} = py:bind(new),
        All = Ctxs ++ [C4],
        [begin
             ?assertMatch({ok, [43, _]}, py:ctx_call(C, venvmod, value, [0])),
             ?assertEqual({ok, 43}, py:ctx_eval(C, <<"__import__('venvmod').VALUE">>)),
             ?assertEqual({ok, <<"b">>}, py:ctx_eval(C, <<"__import__('venv_b_only').VALUE">>)),
             ?assertMatch({error, {'ModuleNotFoundError', _}},
                          py:ctx_exec(C, <<"import venv_a_only">>)),
             ?assertEqual({ok, [false, true]},
                          py:ctx_eval(C, <<"[a in __import__('sys').path, "
                                           "b in __import__('sys').path]">>,
                                      #{a => SpA, b => SpB}))
         end || C <- All],
        [py:unbind(C) || C <- All],
        assert_idle(),
        assert_on_all_workers(43, fun() -> py:call(venvmod, value, [0.3]) end),
        assert_on_all_workers(<<"ModuleNotFoundError">>,
                              fun() -> py:call(rt_helpers, try_import, [<<"venv_a_only">>, 0.3]) end),
        ?assertEqual(ok, py:deactivate_venv()),
        ?assertEqual({ok, #{<<"active">> => false}}, py:venv_info()),
        ?assertMatch({error, {'ModuleNotFoundError', _}}, py:call(venvmod, value, [0])),
        ?assertMatch({error, {'ModuleNotFoundError', _}}, py:call(venv_b_only, value, []))
    after
        [py:unbind(C) || C <- Ctxs]
    end,
    assert_idle(),
    ok.

%% Fun (giving {ok, [Value, Thread]}) answers Value on each of the four
%% workers.
assert_on_all_workers(Value, Fun) ->
    ?assertEqual(?NUM_WORKERS, length(threads_of(?NUM_WORKERS, Fun, Value))),
    ok.

venvmod_source(Value) ->
    ["import threading\nimport time\n\nVALUE = ", integer_to_list(Value), "\n\n\n"
     "def value(delay=0):\n"
     "    time.sleep(delay)\n"
     "    return [VALUE, threading.get_ident()]\n"].

make_venv(Dir, Files) ->
    _ = os:cmd("rm -rf '" ++ Dir ++ "'"),
    %% with the Python the NIF embeds (Debian's 3.11, or a pyenv build)
    {ok, Exe} = py:eval(<<"__import__('sys').executable">>),
    Out = os:cmd(binary_to_list(Exe) ++ " -m venv --without-pip '" ++ Dir ++ "' 2>&1"),
    ?assert(filelib:is_regular(filename:join(Dir, "pyvenv.cfg")), {venv_failed, Out}),
    Sp = filename:join([Dir, "lib", pyver(), "site-packages"]),
    ?assert(filelib:is_dir(Sp), {no_site_packages, Sp}),
    [ok = file:write_file(filename:join(Sp, Name), Src) || {Name, Src} <- Files],
    Dir.

%% "python3.X" of the embedded Python, as in lib/python3.X/site-packages.
pyver() ->
    "python3." ++ integer_to_list(py_test_lib:python_minor()).

site_packages(Venv) ->
    unicode:characters_to_binary(filename:join([Venv, "lib", pyver(), "site-packages"])).

in_peer(Config, F, A) ->
    in_peer(Config, ?MODULE, F, A).

in_peer(Config, M, F, A) ->
    peer:call(?config(peer, Config), M, F, A, 50000).

%%====================================================================
%% Helpers
%%====================================================================

%% The pool is whole and idle and no slot of the semaphore is held (both
%% polled: bindings and slots of ended processes come back asynchronously).
assert_idle() ->
    ok = py_test_lib:wait_pool_idle(?NUM_WORKERS, 5000),
    ?assertEqual(0, wait_until(fun py_semaphore:current/0, fun(C) -> C =:= 0 end)).

%% Runs each fun in a process of its own, all at once; their results in
%% order ({crashed, Reason} for a crash, no_reply after 30 s).
concurrently(Funs) ->
    Ms = [spawn_monitor(fun() -> exit({result, F()}) end) || F <- Funs],
    [down_result(Pid, MRef, 30000) || {Pid, MRef} <- Ms].

down_result(Pid, MRef, Timeout) ->
    receive
        {'DOWN', MRef, process, Pid, {result, R}} -> R;
        {'DOWN', MRef, process, Pid, Other} -> {crashed, Other}
    after Timeout ->
        exit(Pid, kill),
        receive {'DOWN', MRef, process, Pid, _} -> ok end,
        no_reply
    end.

down_reason(Pid, MRef) ->
    receive {'DOWN', MRef, process, Pid, R} -> R
    after 10000 -> no_down
    end.

%% A caller: a monitored process running Fun; caller_result/1 collects.
spawn_caller(Fun) ->
    spawn_monitor(fun() -> exit({result, Fun()}) end).

caller_result({Pid, MRef}) ->
    down_result(Pid, MRef, 30000).

caller_result({Pid, MRef}, Timeout) ->
    receive
        {'DOWN', MRef, process, Pid, {result, R}} -> R;
        {'DOWN', MRef, process, Pid, Other} -> {crashed, Other}
    after Timeout -> no_result
    end.

caller_status({Pid, _}) ->
    case erlang:process_info(Pid, status) of
        {status, S} -> S;
        undefined -> dead
    end.

kill_caller({Pid, MRef}) ->
    exit(Pid, kill),
    receive {'DOWN', MRef, process, Pid, _} -> ok
    after 10000 -> error({not_killed, Pid})
    end.

%% A process holding N slots taken with acquire/1, until stopped.
slot_holder(N) ->
    Parent = self(),
    {Pid, MRef} = spawn_monitor(fun() ->
                                        Rs = [py_semaphore:acquire(5000) || _ <- lists:seq(1, N)],
                                        Parent ! {self(), acquired, Rs},
                                        holder_loop()
                                end),
    receive
        {Pid, acquired, Rs} -> ?assertEqual(lists:duplicate(N, ok), Rs);
        {'DOWN', MRef, process, Pid, Reason} -> error({holder_died, Reason})
    after 10000 -> error(holder_no_reply)
    end,
    ?assertEqual(N, py_semaphore:current()),
    {Pid, MRef}.

holder_loop() ->
    receive
        {release, From} -> From ! {self(), released, py_semaphore:release()}, holder_loop();
        stop -> ok
    end.

holder_release({Pid, _}) ->
    Pid ! {release, self()},
    receive {Pid, released, R} -> R after 10000 -> error(holder_no_answer) end.

stop_holder({Pid, MRef}) ->
    Pid ! stop,
    ?assertEqual(normal, down_reason(Pid, MRef)).

kill_holder(Holder) ->
    kill_caller(Holder).

%% Samples py_semaphore:current() every millisecond until stopped.
start_sampler() ->
    spawn_monitor(fun() -> sampler([]) end).

sampler(Acc) ->
    receive
        {stop, From} -> From ! {self(), samples, Acc}
    after 1 -> sampler([py_semaphore:current() | Acc])
    end.

stop_sampler({Pid, MRef}) ->
    Pid ! {stop, self()},
    receive {Pid, samples, S} -> down_reason(Pid, MRef), [0 | S]
    after 10000 -> error(sampler_no_answer)
    end.

%% The thread idents of the four workers (the pool must be idle).
worker_threads() ->
    Threads = threads_of(?NUM_WORKERS, fun() -> py:call(?H, sleep_tag, [0.2, 0]) end, 0),
    ?assertEqual(?NUM_WORKERS, length(Threads)),
    Threads.

%% Runs N calls of Fun at once, each giving {ok, [Expected, Thread]} (each
%% sleeps, so that they spread over N free workers), in up to five rounds
%% until N distinct threads answered; returns the sorted threads seen.
%% (Rounds, because of the lost-wakeup bug that parallel_while_busy shows:
%% these cases are about coverage, not scheduling.)
threads_of(N, Fun, Expected) ->
    threads_of(N, Fun, Expected, 5, []).

threads_of(N, Fun, Expected, Rounds, Seen) ->
    Results = concurrently(lists:duplicate(N, Fun)),
    lists:foreach(fun(R) -> ?assertMatch({ok, [Expected, _]}, R) end, Results),
    Seen1 = lists:usort(Seen ++ [T || {ok, [_, T]} <- Results]),
    case length(Seen1) >= N orelse Rounds =< 1 of
        true -> Seen1;
        false -> threads_of(N, Fun, Expected, Rounds - 1, Seen1)
    end.
