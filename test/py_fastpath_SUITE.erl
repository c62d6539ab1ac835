%% The fast paths of a request (docs/performance.md, "How a small call is
%% answered"): a request that an idle polling worker takes at once is
%% answered while its caller is still in the submit NIF (hand-over), and
%% is read on the caller's heap instead of being copied (borrowed).  A
%% borrowed request whose worker cannot start at once is copied after all
%% (revoked).  These cases check that each path is taken and that every
%% answer is exact on it, with the GIL held elsewhere, on a dirty
%% scheduler, under concurrency, with callbacks and with timeouts.
%%
%% py_nif:path_counts/0 counts how often each path was taken.
-module(py_fastpath_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0,
         init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).

-export([handover_sequential/1,
         handover_bound/1,
         handover_exact_types/1,
         revoked_while_gil_held/1,
         borrowed_large_on_dirty_scheduler/1,
         gc_setting_kept/1,
         shared_key_objects/1,
         shared_key_around_nested_conversion/1,
         callback_from_handed_over_call/1,
         timeout_shorter_than_poll/1,
         concurrent_callers_exact/1,
         errors_on_fast_path/1,
         not_stranded_behind_finalizer/1]).

-define(HELPERS, py_fastpath_helpers).
-define(NUM_WORKERS, 4).

suite() ->
    [{timetrap, {seconds, 60}}].

all() ->
    [handover_sequential, handover_bound, handover_exact_types,
     revoked_while_gil_held, borrowed_large_on_dirty_scheduler,
     gc_setting_kept, shared_key_objects, shared_key_around_nested_conversion,
     callback_from_handed_over_call, timeout_shorter_than_poll,
     concurrent_callers_exact, errors_on_fast_path, not_stranded_behind_finalizer].

init_per_suite(Config) ->
    Config1 = py_test_lib:start_suite(Config, fun(Dir) -> [{num_workers, ?NUM_WORKERS},
                                                           {python_path, [Dir]}] end),
    %% Every worker has run its setup (with sub-interpreters each imports
    %% the logging handler first): a worker still busy with it leaves no
    %% worker polling, and no call could be handed over meanwhile.
    ok = py_test_lib:exec_everywhere(?NUM_WORKERS, <<"pass">>, #{}),
    Config1.

end_per_suite(Config) ->
    _ = py_test_lib:stop_suite(Config),
    ok.

init_per_testcase(_Case, Config) ->
    py_test_lib:ensure_pool_idle(?NUM_WORKERS, 5000),
    Config.

end_per_testcase(_Case, _Config) ->
    py_test_lib:recover_pool(?NUM_WORKERS, 5000),
    ok.

%%====================================================================
%% Helpers
%%====================================================================

%% Path counters gained while Fun ran, and Fun's value.
counted(Fun) ->
    C0 = py_nif:path_counts(),
    V = Fun(),
    C1 = py_nif:path_counts(),
    {maps:map(fun(K, N) -> N - maps:get(K, C0) end, C1), V}.

%%====================================================================
%% Cases
%%====================================================================

%% Back-to-back small calls from one process on an idle pool: most are
%% answered by hand-over, read in place, each answer exact.  A busy host
%% may deschedule the polling worker for a while (a CI host with other
%% jobs does, for seconds): the counts add up over up to ten batches.
handover_sequential(_Config) ->
    Batch = fun() ->
                    counted(fun() ->
                                    lists:foreach(
                                      fun(I) -> ?assertEqual({ok, I + 1}, py:call(operator, add, [I, 1])) end,
                                      lists:seq(1, 300))
                            end)
            end,
    Gained = until_mostly(Batch, 10, handed_over, 30),
    ct:pal("path counts gained: ~p", [Gained]),
    ?assert(maps:get(handed_over, Gained) >= 30),
    ?assert(maps:get(borrowed, Gained) >= 30),
    py_test_lib:assert_no_stray(100).

%% Runs Batch (returning {Gained, _}) until counter Key gained at least
%% Min in all, at most N times; the gains of all runs added up.
until_mostly(Batch, N, Key, Min) ->
    until_mostly(Batch, N, Key, Min, #{}).

until_mostly(Batch, N, Key, Min, Sum0) ->
    {Gained, _} = Batch(),
    Sum = maps:fold(fun(K, V, Acc) -> Acc#{K => V + maps:get(K, Acc, 0)} end, Sum0, Gained),
    case maps:get(Key, Sum) >= Min orelse N =< 1 of
        true -> Sum;
        false -> until_mostly(Batch, N - 1, Key, Min, Sum)
    end.

%% The same through a bound worker (its own queue), with eval and exec.
handover_bound(_Config) ->
    ok = py:bind(),
    try
        Batch = fun() ->
                        counted(
                          fun() ->
                                  lists:foreach(
                                    fun(I) ->
                                            ok = py:exec(<<"fp_last = n">>, #{n => I}),
                                            ?assertEqual({ok, I}, py:eval(<<"fp_last">>))
                                    end, lists:seq(1, 200))
                          end)
                end,
        Gained = until_mostly(Batch, 10, handed_over, 20),
        ct:pal("path counts gained: ~p", [Gained]),
        ?assert(maps:get(handed_over, Gained) >= 20)
    after
        ok = py:unbind()
    end,
    py_test_lib:assert_no_stray(100).

%% Every type of the table comes back exact when handed over: the reply is
%% copied from the job's environment into the caller's.
handover_exact_types(_Config) ->
    Values = [0, -1, 1 bsl 62, -(1 bsl 70), 1.5, -0.0, true, false, none,
              <<"text">>, <<"é€😀"/utf8>>, [], [1, [2, [3]]], {1, <<"a">>, 2.0},
              #{<<"a">> => 1, <<"b">> => [#{<<"c">> => <<"d">>}]},
              maps:from_list([{integer_to_binary(I), I} || I <- lists:seq(1, 40)]),
              self()],
    lists:foreach(
      fun(V) ->
              ?assertEqual({ok, V}, py:call(copy, copy, [V])),
              ?assertEqual({ok, V}, py:eval(<<"v">>, #{v => V}))
      end, Values),
    {ok, Bytes} = py:eval(<<"b'\\x00\\xff'">>),
    ?assertEqual(<<0, 255>>, Bytes).

%% Another Python thread holds the GIL (in C, using no CPU): the polling
%% worker takes the request but cannot start it, so the caller revokes the
%% borrow, copies the request and waits for the reply as a message.  Small
%% calls run back to back until one meets the held GIL.  Answers are exact.
revoked_while_gil_held(_Config) ->
    Doc = #{<<"xs">> => lists:seq(1, 2000), <<"name">> => <<"naïve"/utf8>>,
            <<"tags">> => #{<<"a">> => 1, <<"b">> => 2}},
    Expected = [2001000, 2000, <<"naïve"/utf8>>, [{<<"a">>, 1}, {<<"b">>, 2}]],
    #{revoked := R0} = py_nif:path_counts(),
    Attempts = hold_and_call(Doc, Expected, R0, 20),
    #{revoked := R1} = py_nif:path_counts(),
    ?assert(R1 > R0),
    py_test_lib:assert_no_stray(100),
    {comment, lists:flatten(io_lib:format("~b attempts, ~b revoked", [Attempts, R1 - R0]))}.

%% One attempt: the GIL is held from 20 ms to 70 ms from now while calls
%% run one after the other for 120 ms.  The call that meets the held GIL is the
%% one revoked, if its request was borrowed (the worker was polling).
hold_and_call(Doc, Expected, R0, N) ->
    {ok, true} = py:call(?HELPERS, hold_gil_later, [0.02, 0.05]),
    calls_until(Doc, Expected, py_test_lib:now_ms() + 120),
    {ok, true} = py:call(?HELPERS, stop_gil_hog, []),
    case py_nif:path_counts() of
        #{revoked := R} when R > R0 -> 1;
        _ when N =< 1 -> 1;
        _ -> 1 + hold_and_call(Doc, Expected, R0, N - 1)
    end.

%% Between two calls, 40 us of busy waiting: the worker has then freed the
%% previous request and stands polling, so the next request is borrowed.
calls_until(Doc, Expected, Until) ->
    ?assertEqual({ok, Expected}, py:call(?HELPERS, digest, [Doc])),
    busy_wait_us(40),
    case py_test_lib:now_ms() < Until of
        true -> calls_until(Doc, Expected, Until);
        false -> ok
    end.

busy_wait_us(Us) ->
    busy_until(erlang:monotonic_time(microsecond) + Us).

busy_until(T) ->
    case erlang:monotonic_time(microsecond) < T of
        true -> busy_until(T);
        false -> ok
    end.

%% Requests too large for a normal scheduler go through the dirty one; on
%% an idle pool they are borrowed there too.
borrowed_large_on_dirty_scheduler(_Config) ->
    List = lists:seq(1, 100000),
    Map = maps:from_list([{integer_to_binary(I), I} || I <- lists:seq(1, 30000)]),
    lists:foreach(
      fun(_) ->
              ?assertEqual({ok, 5000050000}, py:call(builtins, sum, [List])),
              ?assertEqual({ok, 450015000}, py:eval(<<"sum(m.values())">>, #{m => Map})),
              ?assertEqual({ok, Map}, py:call(copy, copy, [Map]))
      end, lists:seq(1, 3)).

%% Python's cyclic garbage collector is held off while a borrowed request
%% is read; the user's setting is what remains afterwards.
gc_setting_kept(_Config) ->
    Arg = [#{<<"k">> => [I, <<"v">>]} || I <- lists:seq(1, 500)],
    ok = py:bind(),
    try
        {ok, true} = py:eval(<<"__import__('gc').isenabled()">>),
        [{ok, 500} = py:call(builtins, len, [Arg]) || _ <- lists:seq(1, 20)],
        ?assertEqual({ok, true}, py:eval(<<"__import__('gc').isenabled()">>)),
        ok = py:exec(<<"__import__('gc').disable()">>),
        [{ok, 500} = py:call(builtins, len, [Arg]) || _ <- lists:seq(1, 20)],
        ?assertEqual({ok, false}, py:eval(<<"__import__('gc').isenabled()">>))
    after
        ok = py:exec(<<"__import__('gc').enable()">>),
        ok = py:unbind()
    end.

%% Dicts sharing key objects: one binary per key, every value exact.
shared_key_objects(_Config) ->
    {ok, Records} = py:call(?HELPERS, records, [300]),
    ?assertEqual([#{<<"alpha">> => I, <<"beta">> => integer_to_binary(I),
                    <<"gamma">> => [I, float(I)]} || I <- lists:seq(0, 299)],
                 Records).

%% While a result is converted, str() of one of its objects converts
%% another term (for erlang.send) holding the same key object.  Both come
%% out right: a key's binary is only reused in the term it was made for.
shared_key_around_nested_conversion(_Config) ->
    ?assertEqual({ok, [#{<<"k">> => 1}, <<"sent">>, #{<<"k">> => 2},
                       #{<<"k">> => 3, <<"x">> => <<"k">>}]},
                 py:call(?HELPERS, shared_key_around_nested_conversion, [self()])),
    receive
        Msg -> ?assertEqual(#{<<"k">> => 99, <<"other">> => [<<"k">>]}, Msg)
    after 5000 -> ct:fail(no_message)
    end.

%% A handed-over request that calls back into Erlang: the caller stops
%% polling and serves the callback.
callback_from_handed_over_call(_Config) ->
    ok = py:register_function(fp_twice, fun([X]) -> 2 * X end),
    try
        [?assertEqual({ok, 2 * I + 1},
                      py:eval(<<"__import__('erlang').call('fp_twice', n) + 1">>, #{n => I}))
         || I <- lists:seq(1, 50)]
    after
        py:unregister_function(fp_twice)
    end.

%% A timeout shorter than the polling: the request is given up as usual
%% and nothing arrives later.
timeout_shorter_than_poll(_Config) ->
    ?assertEqual({error, timeout}, py:call(time, sleep, [0.2], #{}, 0)),
    ?assertEqual({error, timeout}, py:eval(<<"__import__('time').sleep(0.2)">>, #{}, 0)),
    py_test_lib:wait_pool_idle(?NUM_WORKERS, 5000),
    py_test_lib:assert_no_stray(300),
    ?assertEqual({ok, 3}, py:call(operator, add, [1, 2])).

%% Many callers at once, each checking its own answers: no reply reaches
%% the wrong caller whichever path each request took.
concurrent_callers_exact(_Config) ->
    Parent = self(),
    Pids = [spawn_link(
              fun() ->
                      lists:foreach(
                        fun(I) ->
                                Arg = #{<<"who">> => C, <<"i">> => I, <<"pad">> => lists:seq(1, I rem 50)},
                                {ok, R} = py:call(copy, copy, [Arg]),
                                Arg = R
                        end, lists:seq(1, 400)),
                      Parent ! {done, self()}
              end) || C <- lists:seq(1, 12)],
    [receive {done, P} -> ok after 30000 -> ct:fail({timeout, P}) end || P <- Pids],
    py_test_lib:wait_pool_idle(?NUM_WORKERS, 5000).

%% Errors raised while reading a borrowed request (conversion) and after
%% it (resolution, the call itself) are reported as usual.
errors_on_fast_path(_Config) ->
    ?assertMatch({error, {'ModuleNotFoundError', _}}, py:call(fp_no_such_module, f, [1])),
    ?assertMatch({error, {'AttributeError', _}}, py:call(math, fp_no_such_fun, [1])),
    ?assertMatch({error, {'TypeError', _}}, py:call(builtins, len, [fun() -> ok end])),
    ?assertMatch({error, {'ZeroDivisionError', _}}, py:call(operator, truediv, [1, 0])),
    ?assertMatch({error, {'NameError', _}}, py:eval(<<"fp_undefined_name">>)),
    ?assertMatch({error, {'TypeError', _}}, py:eval(<<"x">>, #{x => make_ref()})),
    ?assertEqual({ok, 4.0}, py:call(math, sqrt, [16])).

%% The worker that answered a call then frees its result, whose finalizer
%% sleeps for a second.  The next request must not wait for that worker: it
%% is answered (by another one) while the finalizer still sleeps.
not_stranded_behind_finalizer(_Config) ->
    lists:foreach(
      fun(_) ->
              ?assertEqual({ok, <<"slow">>}, py:call(?HELPERS, slow_to_free, [])),
              ?assertEqual({ok, false}, py:call(?HELPERS, was_finalized, [])),
              py_test_lib:wait_until(fun() -> py:call(?HELPERS, was_finalized, []) end,
                                     fun(R) -> R =:= {ok, true} end)
      end, lists:seq(1, 3)).
