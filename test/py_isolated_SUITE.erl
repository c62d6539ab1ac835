%% execution_mode isolated: each worker's Python is an OS process of its own
%% (c_src/exec_isolated.c, priv/python/_erlang_python_worker.py).
%%
%% The mode is chosen once per VM, so every case runs in a peer node started
%% with execution_mode isolated and 3 workers; the functions named peer_*
%% run there (through peer:call over standard_io).
%%
%% Covered: calls, eval, exec, types, errors and tracebacks, erlang.send,
%% erlang.call (nested py calls back on the same process, a caller giving
%% up in the wait), erlang.state_*, contexts, timeouts (interrupted; a C loop that holds the GIL is killed
%% after the grace period); and the faults: a segfault, os.abort(),
%% os._exit(3), a worker killed from outside with SIGKILL, a process over
%% max_memory_mb.  After each fault: the caller's error at once, other
%% callers answered, a replacement started, contexts on the dead worker
%% raise context_not_bound, no process left over, the stats whole.  Also 100
%% crashes in a row, and shutdown (application stop, node killed) leaving no
%% worker process.
-module(py_isolated_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_testcase/2, end_per_testcase/2]).
-export([basics/1, types_round_trip/1, errors_and_tracebacks/1, send_from_python/1,
         contexts/1, timeout_interrupts/1, gil_holding_loop_killed/1,
         segfault/1, abort/1, exit_code/1, killed_from_outside/1, memory_cap/1,
         others_unaffected/1, hundred_crashes/1, app_stop_leaves_nothing/1,
         node_killed_leaves_nothing/1, not_yet_supported/1, stray_signal_ignored/1,
         forked_child_holds_nothing/1, c_codec_matches_python/1, deep_nesting/1,
         callbacks/1, nested_call_back/1, callback_timeout/1, shared_state/1]).
-export([peer_register/0,
         peer_fault/1, peer_contexts/0, peer_others_unaffected/0, peer_hundred_crashes/0]).

-define(APP, erlang_python).
-define(WORKERS, 3).
-define(GRACE_MS, 500).
-define(MEM_MB, 300).

suite() ->
    [{timetrap, {seconds, 120}}].

all() ->
    [basics, types_round_trip, errors_and_tracebacks, send_from_python, contexts,
     timeout_interrupts, gil_holding_loop_killed,
     segfault, abort, exit_code, killed_from_outside, memory_cap,
     others_unaffected, hundred_crashes, app_stop_leaves_nothing,
     node_killed_leaves_nothing, not_yet_supported, stray_signal_ignored,
     forked_child_holds_nothing, c_codec_matches_python, deep_nesting,
     callbacks, nested_call_back, callback_timeout, shared_state].

init_per_testcase(_Case, Config) ->
    {Peer, OsPid} = start_peer(),
    [{peer, Peer}, {peer_os_pid, OsPid} | Config].

end_per_testcase(_Case, Config) ->
    _ = catch peer:stop(?config(peer, Config)),
    ok.

%%--------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------

start_peer() ->
    Ebin = filename:dirname(code:which(py)),
    TestEbin = filename:dirname(code:which(?MODULE)),
    {ok, P, _} = peer:start(#{connection => standard_io,
                              args => ["-pa", Ebin, "-pa", TestEbin]}),
    ok = peer:call(P, application, load, [?APP]),
    [ok = peer:call(P, application, set_env, [?APP, K, V])
     || {K, V} <- [{execution_mode, isolated}, {num_workers, ?WORKERS},
                   {cancel_grace_ms, ?GRACE_MS}, {max_memory_mb, ?MEM_MB}]],
    {ok, _} = peer:call(P, application, ensure_all_started, [?APP], 30000),
    {P, list_to_integer(peer:call(P, os, getpid, []))}.

call(Config, M, F, A) ->
    peer:call(?config(peer, Config), M, F, A, 60000).

%% The OS pids of the peer's Python workers (children of their shells).
worker_pids(Config) ->
    lists:sort([P || {P, Cmd} <- descendants(?config(peer_os_pid, Config)),
                     string:find(Cmd, "_erlang_python_worker.py") =/= nomatch,
                     string:prefix(Cmd, "/bin/sh") =:= nomatch]).

%% {Pid, Command} of every process below OsPid, read from /proc (ps is not
%% used: under make asan's LD_PRELOAD it hangs).
descendants(OsPid) ->
    {ok, Names} = file:list_dir("/proc"),
    Rows = [R || N <- Names, lists:all(fun(C) -> C >= $0 andalso C =< $9 end, N),
                 R <- [proc_row(list_to_integer(N))], R =/= none],
    below([OsPid], Rows, []).

%% {Pid, PPid, Command}, or none for a process gone meanwhile.
proc_row(Pid) ->
    case {proc_stat(Pid), file:read_file("/proc/" ++ integer_to_list(Pid) ++ "/cmdline")} of
        {{_State, PPid}, {ok, Cmd}} ->
            {Pid, PPid, binary_to_list(binary:replace(Cmd, <<0>>, <<" ">>, [global]))};
        _ ->
            none
    end.

%% {State letter, PPid} from /proc/Pid/stat (after the command in parentheses).
proc_stat(Pid) ->
    case file:read_file("/proc/" ++ integer_to_list(Pid) ++ "/stat") of
        {ok, Stat} ->
            {At, _} = lists:last(binary:matches(Stat, <<") ">>)),
            After = binary:part(Stat, At + 2, byte_size(Stat) - At - 2),
            [State, PPid | _] = binary:split(After, <<" ">>, [global]),
            {binary_to_list(State), binary_to_integer(PPid)};
        {error, _} ->
            none
    end.

below([], _Rows, Acc) ->
    Acc;
below([Parent | More], Rows, Acc) ->
    Kids = [{P, Cmd} || {P, PP, Cmd} <- Rows, PP =:= Parent],
    below([P || {P, _} <- Kids] ++ More, Rows, Kids ++ Acc).

%% No process left at all of the given pids (no zombie either: a zombie
%% keeps its /proc entry).
gone(Pids) ->
    [P || P <- Pids, proc_stat(P) =/= none] =:= [].

%% The pool is whole: every worker in service, available, nothing pending,
%% and as many Python processes as workers (the lost ones replaced, none
%% left over).
assert_whole(Config) ->
    ok = py_test_lib:wait_until(
           fun() ->
                   S = call(Config, py_pool, get_stats, []),
                   Pids = worker_pids(Config),
                   {S =:= #{num_workers => ?WORKERS, available_workers => ?WORKERS,
                            checked_out => 0, pending_requests => 0}
                    andalso length(Pids) =:= ?WORKERS,
                    {S, Pids}}
           end, 15000, pool_not_whole),
    ?assertEqual({ok, 4.0}, call(Config, py, call, [math, sqrt, [16]])).

%%--------------------------------------------------------------------
%% Behaviour
%%--------------------------------------------------------------------

basics(Config) ->
    ?assertEqual(isolated, call(Config, py, execution_mode, [])),
    ?assertEqual({ok, 4.0}, call(Config, py, call, [math, sqrt, [16]])),
    ?assertEqual({ok, 42}, call(Config, py, eval, [<<"x + 1">>, #{x => 41}])),
    ?assertEqual({ok, <<"a-b">>}, call(Config, py, call, [<<"__main__">>, <<"str.join">>,
                                                         [<<"-">>, [<<"a">>, <<"b">>]]])),
    ?assertEqual({ok, 6}, call(Config, py, eval, [<<"import math; math.factorial(3)">>])),
    ?assertEqual({ok, <<"{\"a\": 1}">>},
                 call(Config, py, call, [json, dumps, [#{a => 1}], #{sort_keys => true}])),
    %% Each worker is an OS process of its own, not the node.
    {ok, Py} = call(Config, py, call, [os, getpid, []]),
    ?assertNotEqual(?config(peer_os_pid, Config), Py),
    ?assert(lists:member(Py, worker_pids(Config))),
    ?assertEqual(?WORKERS, length(worker_pids(Config))).

types_round_trip(Config) ->
    Peer = ?config(peer, Config),
    Self = peer:call(Peer, erlang, list_to_pid, ["<0.5.0>"]),
    Terms = [1, -7, 1 bsl 100, -(1 bsl 70), 2.5, true, false, none, <<"héllo"/utf8>>,
             <<255, 0>>, [1, [2]], {1, {}}, #{<<"k">> => [1.5]}, Self, []],
    ?assertEqual({ok, Terms}, call(Config, py, eval, [<<"x">>, #{x => Terms}])),
    ?assertEqual({ok, [<<"int">>, <<"NoneType">>, <<"str">>, <<"bytes">>, <<"bytes">>,
                       <<"list">>, <<"Pid">>]},
                 call(Config, py, eval, [<<"[type(v).__name__ for v in x]">>,
                                         #{x => [1, nil, hello, <<255>>, {bytes, <<"a">>},
                                                 "ab", Self]}])),
    ?assertEqual({ok, [nan, infinity, neg_infinity]},
                 call(Config, py, eval, [<<"[float('nan'), float('inf'), -float('inf')]">>])),
    ?assertEqual({ok, [1, 2, 3]}, call(Config, py, eval, [<<"sorted({3, 1, 2})">>])),
    ?assertEqual({ok, <<"(1+2j)">>}, call(Config, py, eval, [<<"1+2j">>])),
    ?assertMatch({error, {'TypeError', _}},
                 call(Config, py, eval, [<<"x">>, #{x => make_ref()}])),
    Big = binary:copy(<<"x">>, 1 bsl 20),
    ?assertEqual({ok, Big}, call(Config, py, eval, [<<"x">>, #{x => {bytes, Big}}])).

errors_and_tracebacks(Config) ->
    ?assertEqual({error, {'ZeroDivisionError', <<"division by zero">>}},
                 call(Config, py, eval, [<<"1/0">>])),
    ?assertMatch({error, {'AttributeError', _}}, call(Config, py, call, [math, nope, []])),
    ?assertMatch({error, {'ModuleNotFoundError', _}}, call(Config, py, call, [no_such, f, []])),
    ?assertMatch({error, {'SyntaxError', _}}, call(Config, py, exec, [<<"def (">>])),
    %% A class defined by the code: an atom (made once, under the budget).
    ?assertEqual({error, {'IsolatedOops', <<"bad">>}},
                 call(Config, py, exec, [<<"class IsolatedOops(Exception): pass\n"
                                           "raise IsolatedOops('bad')">>])),
    Tb = peer:call(?config(peer, Config), ?MODULE, peer_fault, [traceback]),
    ?assertNotEqual(nomatch, binary:match(Tb, <<"ZeroDivisionError">>)),
    ?assertNotEqual(nomatch, binary:match(Tb, <<"Traceback">>)).

%% erlang.send from a worker reaches the process; `erlang' is there
%% without an import, as in process.
send_from_python(Config) ->
    Got = peer:call(?config(peer, Config), ?MODULE, peer_fault, [send]),
    ?assertEqual({ok, {<<"hello">>, [1, 2]}}, Got).

%% A context holds one process: its state survives between calls, and is
%% wiped once released.  (Contexts belong to the process that bound them:
%% all of it runs in one peer:call.)
contexts(Config) ->
    ?assertEqual(ok, peer:call(?config(peer, Config), ?MODULE, peer_contexts, [], 30000)).

peer_contexts() ->
    {ok, Ctx} = py:bind(new),
    ok = py:ctx_exec(Ctx, <<"z = 5">>),
    {ok, 5} = py:ctx_eval(Ctx, <<"z">>),
    {ok, P1} = py:ctx_call(Ctx, os, getpid, []),
    {ok, P1} = py:ctx_call(Ctx, os, getpid, []),
    ok = py:unbind(Ctx),
    Bound = [begin {ok, C} = py:bind(new), C end || _ <- lists:seq(1, ?WORKERS)],
    Seen = [py:ctx_eval(C, <<"'z' in globals()">>) || C <- Bound],
    Seen = lists:duplicate(?WORKERS, {ok, false}),
    [ok = py:unbind(C) || C <- Bound],
    ok.

%% time.sleep is interrupted (SIGUSR1 raises erlang.Interrupted there): the
%% worker answers the next call and is not replaced.
timeout_interrupts(Config) ->
    Before = worker_pids(Config),
    ?assertEqual({error, timeout},
                 call(Config, py, eval, [<<"__import__('time').sleep(30)">>, #{}, 200])),
    assert_whole(Config),
    ?assertEqual(Before, worker_pids(Config)).

%% A C loop holding the GIL cannot be interrupted: after cancel_grace_ms its
%% process is killed and another started.
gil_holding_loop_killed(Config) ->
    Before = worker_pids(Config),
    T0 = erlang:monotonic_time(millisecond),
    ?assertEqual({error, timeout},
                 call(Config, py, eval, [<<"sum(range(10**12))">>, #{}, 300])),
    ?assert(erlang:monotonic_time(millisecond) - T0 < 5000),
    assert_whole(Config),
    ?assertEqual(1, length(Before -- worker_pids(Config))).

%%--------------------------------------------------------------------
%% Faults: the caller's error, the replacement, the context, no leftover
%%--------------------------------------------------------------------

segfault(Config) ->
    fault(Config, <<"__import__('ctypes').string_at(0)">>, {signal, 11}).

abort(Config) ->
    fault(Config, <<"__import__('os').abort()">>, {signal, 6}).

exit_code(Config) ->
    fault(Config, <<"__import__('os')._exit(3)">>, {exit_status, 3}).

killed_from_outside(Config) ->
    {Reply, Ctx} = peer:call(?config(peer, Config), ?MODULE, peer_fault, [sigkill], 30000),
    ?assertEqual({error, {worker_exited, {signal, 9}}}, Reply),
    after_fault(Config, Ctx).

%% Over max_memory_mb the allocation fails in Python: a MemoryError, and
%% the worker lives on.
memory_cap(Config) ->
    Before = worker_pids(Config),
    ?assertMatch({error, {'MemoryError', _}},
                 call(Config, py, eval, [<<"bytearray(2 * ", (integer_to_binary(?MEM_MB))/binary,
                                           " * 1024 * 1024)">>])),
    ?assertEqual({ok, 10}, call(Config, py, eval, [<<"len(bytearray(10))">>])),
    assert_whole(Config),
    ?assertEqual(Before, worker_pids(Config)).

%% The crash runs in a context (so that its worker is known): the caller
%% gets {error, {worker_exited, Reason}}, the context is gone.
fault(Config, Code, Reason) ->
    {Reply, Ctx} = peer:call(?config(peer, Config), ?MODULE, peer_fault, [{code, Code}], 30000),
    ?assertEqual({error, {worker_exited, Reason}}, Reply),
    after_fault(Config, Ctx).

after_fault(Config, Ctx) ->
    ?assertError(context_not_bound, call(Config, py, ctx_eval, [Ctx, <<"1">>])),
    assert_whole(Config).

peer_fault({code, Code}) ->
    {ok, Ctx} = py:bind(new),
    {py:ctx_eval(Ctx, Code), Ctx};
peer_fault(sigkill) ->
    {ok, Ctx} = py:bind(new),
    {ok, Pid} = py:ctx_call(Ctx, os, getpid, []),
    Self = self(),
    spawn(fun() -> timer:sleep(200), os:cmd("kill -9 " ++ integer_to_list(Pid)), Self ! killed end),
    Reply = py:ctx_eval(Ctx, <<"__import__('time').sleep(20)">>),
    receive killed -> ok end,
    {Reply, Ctx};
peer_fault(forked) ->
    {ok, Ctx} = py:bind(new),
    {ok, Child} = py:ctx_eval(Ctx, <<"(lambda os, time: os.fork() or (time.sleep(60), os._exit(0)))"
                                           "(__import__('os'), __import__('time'))">>),
    Child =:= 0 andalso error(fork_failed),
    Reply = py:ctx_eval(Ctx, <<"__import__('ctypes').string_at(0)">>, #{}, 20000),
    {Reply, Ctx, Child};
peer_fault(traceback) ->
    {error, _} = py:eval(<<"1/0">>),
    py:last_traceback();
peer_fault(send) ->
    {ok, none} = py:eval(<<"erlang.send(p, ('hello', [1, 2]))">>, #{p => self()}),
    receive M -> {ok, M} after 5000 -> timeout end.

%% A worker crashing while others run: their callers get their answers.
others_unaffected(Config) ->
    ?assertEqual(ok, peer:call(?config(peer, Config), ?MODULE, peer_others_unaffected, [], 60000)),
    assert_whole(Config).

peer_others_unaffected() ->
    Self = self(),
    Callers = [spawn_link(fun() -> Self ! {self(), [py:eval(<<"__import__('time').sleep(0.3) or n">>,
                                                            #{n => N}) || _ <- lists:seq(1, 3)]}
                          end) || N <- lists:seq(1, 2)],
    timer:sleep(50),
    {error, {worker_exited, _}} = py:eval(<<"__import__('os').abort()">>),
    Results = [receive {C, R} -> R after 20000 -> timeout end || C <- Callers],
    [[{ok, 1}, {ok, 1}, {ok, 1}], [{ok, 2}, {ok, 2}, {ok, 2}]] = Results,
    ok.

%% 100 segfaults in a row: each caller gets its error, the pool is whole
%% after, the node's memory flat and no process left over.
hundred_crashes(Config) ->
    {Errors, M0, M1} = peer:call(?config(peer, Config), ?MODULE, peer_hundred_crashes, [], 110000),
    ?assertEqual(lists:duplicate(100, {error, {worker_exited, {signal, 11}}}), Errors),
    ct:pal("100 crashes: erlang:memory(total) ~.1f -> ~.1f MiB", [M0 / 1048576, M1 / 1048576]),
    ?assert(M1 - M0 < 8 * 1048576),
    assert_whole(Config).

peer_hundred_crashes() ->
    Crash = fun() -> py:eval(<<"__import__('ctypes').string_at(0)">>) end,
    _ = Crash(),
    ok = wait_available(),
    erlang:garbage_collect(),
    M0 = erlang:memory(total),
    Errors = [begin R = Crash(), ok = wait_available(), R end || _ <- lists:seq(1, 100)],
    [erlang:garbage_collect(P) || P <- processes()],
    {Errors, M0, erlang:memory(total)}.

wait_available() ->
    py_test_lib:wait_until(fun() ->
                                   S = py_pool:get_stats(),
                                   {maps:get(available_workers, S) =:= ?WORKERS, S}
                           end, 15000, not_replaced).

%%--------------------------------------------------------------------
%% Shutdown
%%--------------------------------------------------------------------

app_stop_leaves_nothing(Config) ->
    Pids = worker_pids(Config),
    ?assertEqual(?WORKERS, length(Pids)),
    ok = call(Config, application, stop, [?APP]),
    ok = py_test_lib:wait_until(fun() -> {gone(Pids), Pids} end, 10000, workers_left),
    ?assertEqual([], descendants(?config(peer_os_pid, Config)) -- erl_child_setup(Config)).

erl_child_setup(Config) ->
    [D || {_, Cmd} = D <- descendants(?config(peer_os_pid, Config)),
          string:find(Cmd, "erl_child_setup") =/= nomatch].

%% The node killed with SIGKILL (nothing of it runs any more): its workers
%% follow it, even one busy in a C loop that never reads its socket.
node_killed_leaves_nothing(Config) ->
    Peer = ?config(peer, Config),
    spawn(fun() -> catch peer:call(Peer, py, eval, [<<"sum(range(10**12))">>], 60000) end),
    ok = py_test_lib:wait_until(fun() ->
                                        States = [proc_state(P) || P <- worker_pids(Config)],
                                        {lists:member("R", States), States}
                                end, 5000, loop_not_started),
    Pids = worker_pids(Config),
    ?assertEqual(?WORKERS, length(Pids)),
    os:cmd("kill -9 " ++ integer_to_list(?config(peer_os_pid, Config))),
    ok = py_test_lib:wait_until(fun() -> {gone(Pids), Pids} end, 10000, workers_left).

%% A process's state letter (R: running).
proc_state(Pid) ->
    case proc_stat(Pid) of
        {State, _} -> State;
        none -> "gone"
    end.

%% A SIGUSR1 that is no interrupt of the pool's (here the code's own) does
%% not raise erlang.Interrupted: the worker raises only for the request the
%% shared page names (so an interrupt sent as one request ends never fires
%% in the next one).
stray_signal_ignored(Config) ->
    Code = <<"(lambda os, time: os.kill(os.getpid(), 10) or time.sleep(0.05) or 7)"
             "(__import__('os'), __import__('time'))">>,
    ?assertEqual({ok, 7}, call(Config, py, eval, [Code])),
    %% An interrupt of the pool's still lands.
    ?assertEqual({error, timeout},
                 call(Config, py, eval, [<<"__import__('time').sleep(30)">>, #{}, 200])),
    assert_whole(Config).

%% A process forked by the worker keeps neither its socket nor its page
%% (closed at fork): when the worker dies the caller learns it at once,
%% though the child lives on (here it is the test that ends it).
forked_child_holds_nothing(Config) ->
    {Reply, Ctx, Child} = peer:call(?config(peer, Config), ?MODULE, peer_fault, [forked], 60000),
    try
        ?assertEqual({error, {worker_exited, {signal, 11}}}, Reply),
        ?assertNotEqual(none, proc_stat(Child)),
        after_fault(Config, Ctx)
    after
        os:cmd("kill -9 " ++ integer_to_list(Child))
    end,
    %% (Dead: gone, or a zombie of whatever adopted it; not ours to reap.)
    ok = py_test_lib:wait_until(fun() -> S = proc_stat(Child),
                                         {S =:= none orelse element(1, S) =:= "Z", S}
                                end, 5000, child_alive).

%% The worker converts with its C codec (c_src/worker/), which gives, byte
%% for byte and object for object, what the worker program's Python codec
%% gives (data/codec_check.py runs both in a worker on values of every
%% kind, and the terms and errors the node can send).
c_codec_matches_python(Config) ->
    ?assertEqual({ok, <<"c">>}, call(Config, py, eval, [<<"erlang.codec">>])),
    {ok, Src} = file:read_file(filename:join(?config(data_dir, Config), "codec_check.py")),
    ?assertEqual({ok, []}, peer:call(?config(peer, Config), py, eval,
                                     [<<"exec(src, globals()) or diffs">>, #{src => Src}], 60000)).

%% 5000 levels of nesting each way (as in process: the limit is 10000).
deep_nesting(Config) ->
    Deep = lists:foldl(fun(_, A) -> [A] end, [], lists:seq(1, 5000)),
    ?assertEqual({ok, Deep}, call(Config, py, eval, [<<"x">>, #{x => Deep}])),
    ?assertEqual({ok, Deep}, call(Config, py, eval, [<<"(lambda v: [v.__setitem__(0, [v[0]]) "
                                                       "for _ in range(5000)] and v[0])([[]])">>])),
    ?assertMatch({error, {'ValueError', _}},
                 call(Config, py, eval, [<<"x">>, #{x => lists:foldl(fun(_, A) -> [A] end, [],
                                                                      lists:seq(1, 10005))}])).

%% What isolated workers do not do yet answers a clear error.
not_yet_supported(Config) ->
    ?assertMatch({error, {'NotImplementedError', _}},
                 call(Config, py, stream, [builtins, range, [3]])),
    ?assertMatch({error, {'ErlangError', _}},
                 call(Config, py, eval, [<<"__import__('concurrent.futures').futures"
                                           ".ThreadPoolExecutor(1).submit(erlang.call, "
                                           "'iso_add', 1, 2).result()">>])),
    assert_whole(Config).

%% In the peer: the Erlang functions the callback cases call.
peer_register() ->
    ok = py:register_function(iso_add, fun([A, B]) -> A + B end),
    ok = py:register_function(iso_fail, fun([]) -> error(on_purpose) end),
    ok = py:register_function(iso_sqrt_back, fun([X]) -> {ok, V} = py:call(math, sqrt, [X]), V end),
    ok = py:register_function(iso_pid_back,
                              fun([]) -> {ok, P} = py:eval(<<"__import__('os').getpid()">>), P end),
    ok = py:register_function(iso_deep, fun([N]) ->
                                                {ok, V} = py:eval(<<"erlang.iso_deep(n - 1) + 1 "
                                                                    "if n else 0">>, #{n => N}),
                                                V
                                        end),
    ok = py:register_function(iso_slow, fun([]) -> timer:sleep(1500), 1 end).

%% erlang.call and erlang.<name> reach the registered Erlang functions;
%% their failures raise erlang.ErlangError, unknown names NameError.
callbacks(Config) ->
    ok = peer:call(?config(peer, Config), ?MODULE, peer_register, []),
    ?assertEqual({ok, 5}, call(Config, py, eval, [<<"erlang.call('iso_add', 2, 3)">>])),
    ?assertEqual({ok, 7}, call(Config, py, eval, [<<"erlang.iso_add(3, 4)">>])),
    ?assertEqual({ok, [3, 5, 7]},
                 call(Config, py, eval, [<<"[erlang.iso_add(i, i + 1) for i in range(1, 4)]">>])),
    ?assertMatch({error, {'ErlangError', _}}, call(Config, py, eval, [<<"erlang.iso_fail()">>])),
    ok = call(Config, py, exec, [<<"def f():\n"
                                   "    try:\n"
                                   "        erlang.iso_fail()\n"
                                   "    except erlang.ErlangError as e:\n"
                                   "        return 'caught'\n">>]),
    ?assertEqual({ok, <<"caught">>}, call(Config, py, eval, [<<"f()">>])),
    ?assertMatch({error, {'NameError', _}}, call(Config, py, eval, [<<"erlang.iso_nothing()">>])),
    ?assertMatch({error, {'TypeError', _}}, call(Config, py, eval, [<<"erlang.call(42)">>])),
    assert_whole(Config).

%% A py call made by the Erlang function runs on the same worker process,
%% nested in the waiting erlang.call, as deep as Python's stack allows.
nested_call_back(Config) ->
    ok = peer:call(?config(peer, Config), ?MODULE, peer_register, []),
    ?assertEqual({ok, 4.0}, call(Config, py, eval, [<<"erlang.iso_sqrt_back(16)">>])),
    ?assertEqual({ok, true},
                 call(Config, py, eval, [<<"erlang.iso_pid_back() == __import__('os').getpid()">>])),
    ?assertEqual({ok, 10}, call(Config, py, eval, [<<"erlang.iso_deep(10)">>])),
    %% Too deep: the innermost level fails with RecursionError, which the
    %% Erlang function above it does not match: ErlangError naming it.
    {error, {'ErlangError', Msg}} = call(Config, py, eval, [<<"erlang.iso_deep(1000)">>]),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"RecursionError">>)),
    assert_whole(Config).

%% A caller that gives up while its erlang.call waits gets {error, timeout};
%% the worker is interrupted in the wait, not lost, and serves on.
callback_timeout(Config) ->
    ok = peer:call(?config(peer, Config), ?MODULE, peer_register, []),
    Before = worker_pids(Config),
    ?assertEqual({error, timeout}, call(Config, py, eval, [<<"erlang.iso_slow()">>, #{}, 300])),
    timer:sleep(1700), % the Erlang function has ended
    assert_whole(Config),
    ?assertEqual(Before, worker_pids(Config)),
    [?assertEqual({ok, 9}, call(Config, py, eval, [<<"erlang.iso_add(4, 5)">>]))
     || _ <- lists:seq(1, 2 * ?WORKERS)].

%% erlang.state_* in a worker process: the node's shared state.
shared_state(Config) ->
    ?assertEqual(ok, call(Config, py, exec, [<<"erlang.state_set('iso_k', 40)">>])),
    ?assertEqual({ok, 42}, call(Config, py, eval, [<<"erlang.state_incr('iso_k', 2)">>])),
    ?assertEqual({ok, 42}, call(Config, py, eval, [<<"erlang.state_get('iso_k')">>])),
    ?assertEqual({ok, 42}, call(Config, py, state_fetch, [<<"iso_k">>])),
    ?assertEqual({ok, <<"dflt">>},
                 call(Config, py, eval, [<<"erlang.state_get('iso_none', 'dflt')">>])),
    assert_whole(Config).
