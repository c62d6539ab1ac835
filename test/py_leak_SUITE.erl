%% Memory does not creep: many mixed calls, many bind/unbind cycles of
%% contexts holding 1 MiB each, and Python-side object and reference counts
%% across thousands of calls.
%%
%% Figures (Erlang memory, OS RSS from /proc/self/status, Python object
%% counts) are printed with ct:pal and given as each case's comment.
%%
%% Python helpers: py_leak_SUITE_data/leak_helpers.py.
-module(py_leak_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0,
         init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).

-export([probe_sees_growth/1,
         mixed_calls_flat/1,
         big_payloads_flat/1,
         shared_binaries_flat/1,
         cancelled_calls_flat/1,
         bind_unbind_cycles_flat/1,
         namespaces_really_freed/1,
         python_objects_flat/1,
         python_refcounts_stable/1]).

-import(py_test_lib, [rss/0]).

-define(H, leak_helpers).
-define(NUM_WORKERS, 4).
-define(MIB, (1024 * 1024)).
-define(REPORT(Fmt, Args), ct:pal(100, Fmt, Args)).

suite() ->
    [{timetrap, {seconds, 170}}].

all() ->
    [probe_sees_growth,
     mixed_calls_flat,
     big_payloads_flat,
     shared_binaries_flat,
     cancelled_calls_flat,
     bind_unbind_cycles_flat,
     namespaces_really_freed,
     python_objects_flat,
     python_refcounts_stable].

%%====================================================================
%% Setup
%%====================================================================

init_per_suite(Config) ->
    py_test_lib:start_suite(Config, fun(DataDir) ->
                                            [{num_workers, ?NUM_WORKERS},
                                             {python_path, [DataDir]},
                                             {cancel_grace_ms, 1000}]
                                    end).

end_per_suite(Config) ->
    _ = py_test_lib:stop_suite(Config),
    ok.

init_per_testcase(_Case, Config) ->
    ok = py_test_lib:ensure_pool_idle(?NUM_WORKERS, 10000),
    Config.

end_per_testcase(_Case, _Config) ->
    _ = catch py:unbind(),
    ok.

%%====================================================================
%% Helpers
%%====================================================================

%% Polls (up to BoundMs) until the pool is idle and whole.
wait_pool_idle(BoundMs) ->
    py_test_lib:wait_pool_idle(?NUM_WORKERS, BoundMs).

%% Both figures, after collecting garbage everywhere we can.
measure() ->
    [erlang:garbage_collect(P) || P <- processes()],
    {ok, _} = py:call(?H, census, []),
    {ok, _} = py:call(?H, malloc_trim, []),
    timer:sleep(200),
    [erlang:garbage_collect(P) || P <- processes()],
    {erlang:memory(total), rss()}.

%% measure/0 once the RSS holds still (two readings within 1 MiB, at most
%% Tries readings): memory the suites before this one let go of is given
%% back to the system late (a worker abandoned in C ending, say), and
%% would hide the probe's growth.
settled(Tries) ->
    settled(measure(), Tries - 1).

settled(Last, 0) ->
    Last;
settled({_, R} = Last, Tries) ->
    {_, R1} = Now = measure(),
    case abs(R1 - R) < ?MIB of
        true -> Now;
        false -> settled(Now, Tries - 1)
    end.

mib(Bytes) ->
    Bytes / ?MIB.

%% A signed difference in MiB, as text.
dmib(Bytes) when Bytes >= 0 -> io_lib:format("+~.2f", [mib(Bytes)]);
dmib(Bytes) -> io_lib:format("~.2f", [mib(Bytes)]).

%% Runs N requests in batches of Batch, each batch spread over Procs
%% processes; each request is checked.  Kind I decides which request.
run_batches(N, Batch, Procs, From) ->
    run_batches(N, Batch, Procs, From, 0).

run_batches(N, _Batch, _Procs, _From, Done) when Done >= N ->
    ok;
run_batches(N, Batch, Procs, From, Done) ->
    Self = self(),
    Count = min(Batch, N - Done),
    PerProc = Count div Procs,
    Pids = [spawn_link(fun() ->
                               Base = From + Done + P * PerProc,
                               [one_request(Base + I) || I <- lists:seq(1, PerProc)],
                               Self ! {batch_done, self()}
                       end) || P <- lists:seq(0, Procs - 1)],
    [receive {batch_done, Pid} -> ok after 60000 -> error({batch_hung, Pid}) end || Pid <- Pids],
    run_batches(N, Batch, Procs, From, Done + PerProc * Procs).

%% One request of a mix of every kind: calls, evals, execs, errors (with
%% tracebacks), async calls, streams, and now and then a timeout.
one_request(I) ->
    Bin = integer_to_binary(I),
    case I rem 12 of
        0 -> {ok, F} = py:call(math, sqrt, [I * I]), true = (F == I);
        1 -> ?assertEqual({ok, [[I, Bin], #{<<"k">> => [I, 1.5]}]},
                          py:call(?H, echo, [I, Bin], #{k => [I, 1.5]}));
        2 -> ?assertEqual({ok, [I, <<Bin/binary, Bin/binary>>, #{<<"i">> => I}]},
                          py:eval(<<"[i, s * 2, {'i': i}]">>, #{i => I, s => Bin}));
        3 -> ?assertEqual(ok, py:exec(<<"assert i + 1 == j">>, #{i => I, j => I + 1}));
        4 -> ?assertMatch({error, {'ZeroDivisionError', _}}, py:eval(<<"i / 0">>, #{i => I}));
        5 -> ?assertMatch({error, {'NameError', _}}, py:eval(<<"undefined_name_xyz">>));
        6 -> ?assertMatch({error, {'ValueError', _}}, py:call(builtins, int, [<<"x", Bin/binary>>]));
        7 -> ?assertEqual({ok, I * 2}, py:await(py:call_async(operator, mul, [I, 2])));
        8 -> ?assertEqual({ok, [0, 1, 4]}, py:stream(?H, squares, [3]));
        9 -> ?assertEqual({ok, (1 bsl 100) + I}, py:eval(<<"x + i">>, #{x => 1 bsl 100, i => I}));
        10 -> ?assertEqual({ok, binary:copy(Bin, 100)},
                           py:eval(<<"b * 100">>, #{b => {bytes, Bin}}));
        11 when I rem 600 =:= 11 ->
            ?assertEqual({error, timeout},
                         py:exec(<<"import time\nfor _ in range(200): time.sleep(0.001)">>,
                                 #{}, 5));
        11 -> ?assertMatch({error, {'TypeError', _}}, py:call(builtins, len, [I]))
    end.

%%====================================================================
%% Cases
%%====================================================================

%% The instrument itself: 32 MiB kept alive on the Python side show up in
%% the RSS figure (and go away again), so the flat figures below mean
%% something.  Free memory the allocators keep for reuse (up to 4 MiB at
%% the top of each glibc heap, the holes below it) may absorb part of the
%% growth: at least half of it must show.
probe_sees_growth(_Config) ->
    {M0, R0} = settled(10),
    ok = py:exec(<<"import leak_helpers\n"
                   "leak_helpers.kept = [bytearray(b'x' * (1 << 20)) for _ in range(32)]">>),
    {M1, R1} = measure(),
    ok = py:exec(<<"import leak_helpers\ndel leak_helpers.kept">>),
    {_, R2} = measure(),
    Text = io_lib:format("probe: 32 MiB kept in Python: RSS ~s MiB (then ~s MiB once freed), "
                         "erlang:memory(total) ~s MiB",
                         [dmib(R1 - R0), dmib(R2 - R0), dmib(M1 - M0)]),
    ?REPORT("~s", [Text]),
    ?assert(R1 - R0 > 16 * ?MIB),
    ?assert(R2 - R0 < 8 * ?MIB),
    {comment, lists:flatten(Text)}.

%% 60000 mixed requests: after a warm-up of 10000, the next 50000 leave
%% erlang:memory(total) and the OS RSS within 8 MiB of where they were.
mixed_calls_flat(_Config) ->
    ok = run_batches(10000, 2000, 8, 0),
    ok = wait_pool_idle(10000),
    {M0, R0} = measure(),
    ok = run_batches(50000, 2000, 8, 10000),
    ok = wait_pool_idle(10000),
    {M1, R1} = measure(),
    Text = io_lib:format("60000 mixed calls: erlang:memory(total) ~.1f -> ~.1f MiB "
                         "(~s MiB), RSS ~.1f -> ~.1f MiB (~s MiB) after a "
                         "10000-call warm-up",
                         [mib(M0), mib(M1), dmib(M1 - M0), mib(R0), mib(R1), dmib(R1 - R0)]),
    ?REPORT("~s", [Text]),
    ?assert(M1 - M0 < 8 * ?MIB),
    ?assert(R1 - R0 < 8 * ?MIB),
    {comment, lists:flatten(Text)}.

%% 10000 round trips of 1 MiB without copies: half {buffer, Bin} returned
%% as it is, half a new 1 MiB bytes made in Python (bytes(b)) and shared
%% with Erlang, from 4 processes.  After a warm-up of 1000, both figures
%% stay within 8 MiB: each shared bytes object is released (dropped at
%% its interpreter's next request) and each buffer's binary freed.  One
%% leak per request would be 5 GiB.
shared_binaries_flat(_Config) ->
    Bin = binary:copy(<<"0123456789abcdef">>, 65536),
    One = fun(I) ->
                  case I rem 2 of
                      0 -> {ok, Bin} = py:eval(<<"b">>, #{b => {buffer, Bin}});
                      1 -> {ok, Bin} = py:eval(<<"bytes(b)">>, #{b => {buffer, Bin}})
                  end
          end,
    Run = fun(N) ->
                  Self = self(),
                  Pids = [spawn_link(fun() -> [One(I) || I <- lists:seq(P, N, 4)],
                                              Self ! {shared_done, self()}
                                     end) || P <- lists:seq(1, 4)],
                  [receive {shared_done, P} -> ok after 120000 -> error({hung, P}) end
                   || P <- Pids]
          end,
    %% A released bytes object is dropped at its interpreter's next
    %% request: one request on each worker before measuring.
    Drain = fun() -> ok = wait_pool_idle(10000),
                     [erlang:garbage_collect(P) || P <- processes()],
                     ok = py_test_lib:exec_everywhere(?NUM_WORKERS, <<"pass">>, #{})
            end,
    Run(1000),
    Drain(),
    {M0, R0} = measure(),
    Run(10000),
    Drain(),
    {M1, R1} = measure(),
    Text = io_lib:format("10000 shared 1 MiB round trips: erlang:memory(total) ~.1f -> ~.1f MiB "
                         "(~s MiB), RSS ~.1f -> ~.1f MiB (~s MiB) after a 1000-request warm-up",
                         [mib(M0), mib(M1), dmib(M1 - M0), mib(R0), mib(R1), dmib(R1 - R0)]),
    ?REPORT("~s", [Text]),
    ?assert(M1 - M0 < 8 * ?MIB),
    ?assert(R1 - R0 < 8 * ?MIB),
    {comment, lists:flatten(Text)}.

%% Large payloads both ways (100 KiB binaries, 10000-element lists, maps
%% of 1000 keys, 20000-bit integers): 3000 requests after a warm-up of 500
%% leave both figures within 8 MiB.  A leak of one payload per request would
%% be hundreds of MiB.
big_payloads_flat(_Config) ->
    Bin = binary:copy(<<1, 2, 3, 255>>, 25600),
    Text = binary:copy(<<"abcé"/utf8>>, 20480),
    List = lists:seq(1, 10000),
    Map = maps:from_list([{integer_to_binary(I), I} || I <- lists:seq(1, 1000)]),
    Big = (1 bsl 20000) + 12345,
    One = fun(I) ->
                  case I rem 5 of
                      0 -> {ok, Bin} = py:eval(<<"x">>, #{x => Bin});
                      1 -> {ok, Text} = py:eval(<<"x">>, #{x => Text});
                      2 -> {ok, List} = py:eval(<<"x">>, #{x => List});
                      3 -> {ok, Map} = py:eval(<<"x">>, #{x => Map});
                      4 -> {ok, Big} = py:eval(<<"x">>, #{x => Big})
                  end
          end,
    Run = fun(N) ->
                  Self = self(),
                  Pids = [spawn_link(fun() -> [One(I) || I <- lists:seq(P, N, 4)],
                                              Self ! {payloads_done, self()}
                                     end) || P <- lists:seq(1, 4)],
                  [receive {payloads_done, P} -> ok after 120000 -> error({hung, P}) end
                   || P <- Pids]
          end,
    Run(500),
    ok = wait_pool_idle(10000),
    {M0, R0} = measure(),
    Run(3000),
    ok = wait_pool_idle(10000),
    {M1, R1} = measure(),
    Text1 = io_lib:format("3000 large payloads both ways: erlang:memory(total) ~.1f -> ~.1f MiB "
                          "(~s MiB), RSS ~.1f -> ~.1f MiB (~s MiB) after a 500-request warm-up",
                          [mib(M0), mib(M1), dmib(M1 - M0), mib(R0), mib(R1), dmib(R1 - R0)]),
    ?REPORT("~s", [Text1]),
    ?assert(M1 - M0 < 8 * ?MIB),
    ?assert(R1 - R0 < 8 * ?MIB),
    {comment, lists:flatten(Text1)}.

%% A request with a 1-2 ms deadline: it timed out, or (where an overload
%% limit is configured) never got a slot in time; on a loaded machine its
%% answer may also have come before its caller looked at the clock.
given_up({error, timeout}) -> ok;
given_up({error, {overloaded, _, _}}) -> ok;
given_up(ok) -> ok;
given_up({ok, [_, none]}) -> ok;
given_up(Other) -> error({not_given_up, Other}).

%% Requests given up on: queued ones dropped, running ones interrupted,
%% callers killed while waiting.  1200 of them after a warm-up of 200: both
%% figures within 8 MiB.
cancelled_calls_flat(_Config) ->
    Payload = binary:copy(<<7>>, 16384),
    One = fun(I) ->
                  case I rem 3 of
                      0 ->
                          %% times out while running (interrupted) or queued
                          given_up(py:exec(<<"import time\nfor _ in range(100): time.sleep(0.001)">>,
                                           #{p => Payload}, 2));
                      1 ->
                          given_up(py:eval(<<"[p, __import__('time').sleep(0.05)]">>,
                                           #{p => Payload}, 1));
                      2 ->
                          {Pid, MRef} =
                              spawn_monitor(fun() ->
                                                    py:eval(<<"(__import__('time').sleep(0.01), p)">>,
                                                            #{p => Payload})
                                            end),
                          timer:sleep(1),
                          exit(Pid, kill),
                          receive {'DOWN', MRef, process, Pid, _} -> ok end
                  end
          end,
    Run = fun(N) ->
                  Self = self(),
                  Pids = [spawn_link(fun() -> [One(I) || I <- lists:seq(P, N, 8)],
                                              Self ! {cancel_done, self()}
                                     end) || P <- lists:seq(1, 8)],
                  [receive {cancel_done, P} -> ok after 120000 -> error({hung, P}) end
                   || P <- Pids]
          end,
    Run(200),
    ok = wait_pool_idle(10000),
    timer:sleep(500),
    {M0, R0} = measure(),
    Run(1200),
    ok = wait_pool_idle(10000),
    timer:sleep(500),
    {M1, R1} = measure(),
    Text = io_lib:format("1200 cancelled requests: erlang:memory(total) ~.1f -> ~.1f MiB "
                         "(~s MiB), RSS ~.1f -> ~.1f MiB (~s MiB) after a 200-request warm-up",
                         [mib(M0), mib(M1), dmib(M1 - M0), mib(R0), mib(R1), dmib(R1 - R0)]),
    ?REPORT("~s", [Text]),
    ?assert(M1 - M0 < 8 * ?MIB),
    ?assert(R1 - R0 < 8 * ?MIB),
    {comment, lists:flatten(Text)}.

%% 1000 contexts, one after the other, each holding a 1 MiB bytearray in
%% its namespace: the namespaces are freed (RSS stays within 16 MiB).
bind_unbind_cycles_flat(_Config) ->
    Cycle = fun(_) ->
                    {ok, Ctx} = py:bind(new),
                    ok = py:ctx_exec(Ctx, <<"blob = bytearray(1 << 20)">>),
                    {ok, 1048576} = py:ctx_eval(Ctx, <<"len(blob)">>),
                    ok = py:unbind(Ctx)
            end,
    lists:foreach(Cycle, lists:seq(1, 50)),
    ok = wait_pool_idle(10000),
    {M0, R0} = measure(),
    lists:foreach(Cycle, lists:seq(1, 1000)),
    ok = wait_pool_idle(10000),
    {M1, R1} = measure(),
    Text = io_lib:format("1000 bind/unbind cycles of 1 MiB each: erlang:memory(total) "
                         "~.1f -> ~.1f MiB (~s MiB), RSS ~.1f -> ~.1f MiB (~s MiB)",
                         [mib(M0), mib(M1), dmib(M1 - M0), mib(R0), mib(R1), dmib(R1 - R0)]),
    ?REPORT("~s", [Text]),
    ?assert(R1 - R0 < 16 * ?MIB),
    ?assert(M1 - M0 < 16 * ?MIB),
    {comment, lists:flatten(Text)}.

%% What a context's namespace held is really released once it is unbound,
%% also objects in reference cycles; a process binding gets the same.
%% The watched objects still alive in the interpreters of Ctxs: one
%% interpreter with a shared GIL (asked once), one per context with
%% sub-interpreters.
alive_in(Ctxs) ->
    case py_test_lib:subinterp_mode() of
        true -> lists:sum([begin {ok, N} = py:ctx_call(C, ?H, alive, []), N end || C <- Ctxs]);
        false -> {ok, N} = py:ctx_call(hd(Ctxs), ?H, alive, []), N
    end.

%% Binds every worker as a context, sums Fun(Ctx) over them, unbinds.
on_each_worker(Fun) ->
    lists:sum(each_worker(Fun)).

%% Fun(Ctx) on a context of each worker (all bound at once, so all
%% different); the list of its results.
each_worker(Fun) ->
    Ctxs = [begin {ok, C} = py:bind(new), C end || _ <- lists:seq(1, ?NUM_WORKERS)],
    try [Fun(C) || C <- Ctxs]
    after [py:unbind(C) || C <- Ctxs]
    end.

namespaces_really_freed(_Config) ->
    %% the watch list is a module global: one per interpreter with
    %% sub-interpreters, so every worker is asked
    _ = on_each_worker(fun(C) -> {ok, none} = py:ctx_call(C, ?H, unwatch_all, []), 0 end),
    Hold = <<"import leak_helpers\n"
             "held = leak_helpers.Blob(1 << 16)\n"
             "leak_helpers.watch(held)\n"
             "cycle = [leak_helpers.Blob()]\n"
             "cycle.append(cycle)\n"
             "leak_helpers.watch(cycle[0])\n"
             "def closure():\n    return held\n">>,
    Ctxs = [begin {ok, C} = py:bind(new), C end || _ <- lists:seq(1, ?NUM_WORKERS)],
    [ok = py:ctx_exec(C, Hold) || C <- Ctxs],
    %% (every worker is held: ask through the contexts)
    ?assertEqual(2 * ?NUM_WORKERS, alive_in(Ctxs)),
    [ok = py:unbind(C) || C <- Ctxs],
    %% process bindings, 100 times
    Self = self(),
    [begin
         spawn_link(fun() ->
                            ok = py:bind(),
                            ok = py:exec(Hold),
                            ok = py:unbind(),
                            Self ! bound_done
                    end),
         receive bound_done -> ok after 10000 -> error(bound_hung) end
     end || _ <- lists:seq(1, 100)],
    %% and binders that die still holding their binding
    [begin
         {Pid, MRef} = spawn_monitor(fun() -> ok = py:bind(), ok = py:exec(Hold) end),
         receive {'DOWN', MRef, process, Pid, normal} -> ok after 10000 -> error(binder_hung) end
     end || _ <- lists:seq(1, 20)],
    ok = wait_pool_idle(10000),
    %% the wipe runs on each worker before its next job: bind each worker
    %% once more, which queues behind it
    Again = [begin {ok, C} = py:bind(new), C end || _ <- lists:seq(1, ?NUM_WORKERS)],
    [{ok, 1} = py:ctx_eval(C, <<"1">>) || C <- Again],
    [ok = py:unbind(C) || C <- Again],
    Alive = on_each_worker(fun(C) -> alive_in([C]) end),
    ?REPORT("namespaces: ~b objects watched, alive after unbinding: ~p",
            [2 * (?NUM_WORKERS + 120), Alive]),
    ?assertEqual(0, Alive),
    {comment, lists:flatten(io_lib:format("~b watched objects, ~p alive after unbind",
                                          [2 * (?NUM_WORKERS + 120), Alive]))}.

%% Tracked objects and allocated blocks, summed over the interpreters: one
%% in execution_mode shared_gil, one per worker in subinterp (where a
%% single call's answer depends on which worker took it).
census() ->
    case py:execution_mode() of
        subinterp ->
            Counts = each_worker(fun(C) -> {ok, N} = py:ctx_call(C, ?H, census, []), N end),
            [lists:sum([O || [O, _] <- Counts]), lists:sum([B || [_, B] <- Counts])];
        multi_executor ->
            {ok, Counts} = py:call(?H, census, []),
            Counts
    end.

%% The number of objects the Python garbage collector tracks, and the
%% number of allocated blocks, stay flat across 5000 calls (a leaked
%% reference anywhere in conversion keeps objects alive: they would pile up).
python_objects_flat(_Config) ->
    Calls = fun(From) -> run_batches(5000, 1000, 4, From) end,
    ok = Calls(0),
    ok = wait_pool_idle(10000),
    [Objs0, Blocks0] = census(),
    ok = Calls(5000),
    ok = wait_pool_idle(10000),
    [Objs1, Blocks1] = census(),
    ok = Calls(10000),
    ok = wait_pool_idle(10000),
    [Objs2, Blocks2] = census(),
    Text = io_lib:format("gc-tracked objects ~b -> ~b -> ~b, allocated blocks ~b -> ~b -> ~b "
                         "(5000 calls between readings)",
                         [Objs0, Objs1, Objs2, Blocks0, Blocks1, Blocks2]),
    ?REPORT("~s", [Text]),
    %% 5000 calls: a leak of one object per call would be thousands
    ?assert(Objs1 - Objs0 < 200),
    ?assert(Objs2 - Objs1 < 200),
    %% blocks: summed over the interpreters (one per worker in subinterp
    %% mode, where ~600 more per 5000 calls are seen, not yet explained:
    %% docs/memory.md); a leak of one block per call would be 5000
    BlockBound = case py:execution_mode() of subinterp -> 4000; _ -> 1000 end,
    ?assert(Blocks1 - Blocks0 < BlockBound),
    ?assert(Blocks2 - Blocks1 < BlockBound),
    {comment, lists:flatten(Text)}.

%% Objects passed out through results and raised as exceptions keep their
%% reference counts: 5000 round trips of each later, exactly the same.
python_refcounts_stable(_Config) ->
    Warm = fun() ->
                   [{ok, <<"sentinel">>} = py:call(?H, sentinel, []) || _ <- lists:seq(1, 100)],
                   [{error, {'ValueError', <<"stored">>}} = py:call(?H, raise_stored, [])
                    || _ <- lists:seq(1, 100)]
           end,
    Warm(),
    {ok, Before} = py:call(?H, refcounts, []),
    Self = self(),
    Pids = [spawn_link(fun() ->
                               [begin
                                    {ok, <<"sentinel">>} = py:call(?H, sentinel, []),
                                    {ok, [I, <<"sentinel">>, #{<<"s">> := <<"sentinel">>}]} =
                                        py:call(?H, sentinel_in, [I]),
                                    {error, {'ValueError', <<"stored">>}} =
                                        py:call(?H, raise_stored, [])
                                end || I <- lists:seq(1, 1250)],
                               Self ! {refs_done, self()}
                       end) || _ <- lists:seq(1, 4)],
    [receive {refs_done, P} -> ok after 60000 -> error({hung, P}) end || P <- Pids],
    ok = wait_pool_idle(10000),
    {ok, After} = py:call(?H, refcounts, []),
    ?REPORT("refcounts of a returned object and a raised exception: ~w -> ~w "
            "(5000 round trips each)", [Before, After]),
    ?assertEqual(Before, After),
    {comment, lists:flatten(io_lib:format("refcounts ~w -> ~w", [Before, After]))}.
