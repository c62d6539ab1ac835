%% What operators see: per-worker counters (py_pool:call_stats/0), call
%% events through telemetry (py_events), and Python's logging, warnings
%% and stdout/stderr in OTP's logger (py_log).
%%
%% telemetry is not in Debian and hex.pm is out of reach: the suite
%% compiles a stand-in with telemetry's API (py_observe_SUITE_data) and
%% runs it as the application `telemetry', before erlang_python starts,
%% as a release that holds telemetry would.
-module(py_observe_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([worker_counters/1, latency_percentiles/1, queued_timeout/1, retired_counters/1,
         log_storm_bounded/1,
         events_of_each_kind/1, events_off/1,
         logging_levels_and_metadata/1, logging_exception_and_warning/1,
         logging_from_a_thread/1, logging_in_every_worker/1,
         stdio_to_logger/1, logging_off/1]).
%% logger handler callback
-export([log/2]).

-define(APP, erlang_python).
-define(WORKERS, 4).

all() ->
    [worker_counters, latency_percentiles, queued_timeout, retired_counters, log_storm_bounded,
     events_of_each_kind, events_off,
     logging_levels_and_metadata, logging_exception_and_warning,
     logging_from_a_thread, logging_in_every_worker, stdio_to_logger, logging_off].

init_per_suite(Config) ->
    DataDir = filename:absname(proplists:get_value(data_dir, Config)),
    Ebin = filename:join(proplists:get_value(priv_dir, Config), "telemetry_ebin"),
    ok = filelib:ensure_dir(filename:join(Ebin, "x")),
    {ok, telemetry} = compile:file(filename:join(DataDir, "telemetry.erl"), [{outdir, Ebin}]),
    {ok, _} = file:copy(filename:join(DataDir, "telemetry.app"), filename:join(Ebin, "telemetry.app")),
    true = code:add_patha(Ebin),
    _ = application:stop(?APP),
    {ok, _} = application:ensure_all_started(telemetry),
    Config1 = py_test_lib:start_suite(Config, fun(_) -> [{num_workers, ?WORKERS}] end),
    [{telemetry_ebin, Ebin} | Config1].

end_per_suite(Config) ->
    ok = py_test_lib:stop_suite(Config),
    %% Gone for good: a later suite's ensure_all_started(erlang_python)
    %% would start a loaded optional telemetry again.
    _ = application:stop(telemetry),
    ok = application:unload(telemetry),
    _ = code:purge(telemetry),
    true = code:delete(telemetry),
    true = code:del_path(proplists:get_value(telemetry_ebin, Config)),
    {ok, _} = application:ensure_all_started(?APP),
    false = py_events:enabled(),
    ok = application:stop(?APP).

init_per_testcase(_Case, Config) ->
    py_test_lib:ensure_pool_idle(?WORKERS, 5000),
    #{level := Primary} = logger:get_primary_config(),
    [{primary_level, Primary} | Config].

end_per_testcase(_Case, Config) ->
    _ = logger:remove_handler(py_observe_test),
    ok = logger:update_primary_config(#{level => proplists:get_value(primary_level, Config)}),
    py_test_lib:recover_pool(?WORKERS, 10000).

%%====================================================================
%% Counters
%%====================================================================

%% A context's requests are all run by its worker: its counters move by
%% exactly what was sent (ok, Python errors, a timeout), no other's does.
worker_counters(_Config) ->
    {ok, Ctx} = py:bind(new),
    Before = stats_by_id(),
    [{ok, _} = py:ctx_eval(Ctx, <<"x + 1">>, #{x => I}) || I <- lists:seq(1, 20)],
    [{error, {'ZeroDivisionError', _}} = py:ctx_eval(Ctx, <<"1 / 0">>) || _ <- lists:seq(1, 3)],
    ok = py:ctx_exec(Ctx, <<"import time">>),
    {error, timeout} = py:ctx_call(Ctx, time, sleep, [0.3], #{}, 50),
    %% The timed-out call ends (interrupted) before the next one runs.
    {ok, 2} = py:ctx_eval(Ctx, <<"1 + 1">>),
    After = stats_by_id(),
    py:unbind(Ctx),
    Moved = [{Id, delta(maps:get(Id, Before), A)}
             || {Id, A} <- maps:to_list(After), maps:is_key(Id, Before),
                delta(maps:get(Id, Before), A) =/= #{calls => 0, answered => 0, errors => 0,
                                                       timeouts => 0}],
    ?assertMatch([{_, #{calls := 26, answered := 25, errors := 3, timeouts := 1}}], Moved),
    [{Id, _}] = Moved,
    #{p50_us := P50, p99_us := P99} = maps:get(Id, After),
    ?assert(P50 > 0.0),
    ?assert(P99 >= P50).

%% A request that sleeps 20 ms takes at least that from submit to answer:
%% the median (within the histogram's 6 %) says so; an idle worker reads 0.
latency_percentiles(_Config) ->
    {ok, Ctx} = py:bind(new),
    ok = py:ctx_exec(Ctx, <<"import time">>),
    Id = ctx_worker(Ctx),
    Before = maps:get(answered, maps:get(Id, stats_by_id())),
    [{ok, none} = py:ctx_call(Ctx, time, sleep, [0.02]) || _ <- lists:seq(1, 2 * Before + 10)],
    py:unbind(Ctx),
    %% More sleeps than earlier requests: the median is a sleep.
    #{p50_us := P50, p99_us := P99} = maps:get(Id, stats_by_id()),
    ct:pal("worker ~p: p50 ~.1f us, p99 ~.1f us", [Id, P50, P99]),
    ?assert(P50 >= 20000 * 0.94),
    ?assert(P99 >= P50),
    %% Fresh counters read zero.
    Idle = [S || #{answered := 0} = S <- workers_stats()],
    [?assertMatch(#{p50_us := 0.0, p99_us := 0.0, errors := 0}, S) || S <- Idle].

%% A request given up while it waits for a busy worker counts in
%% call_stats' queued_timeouts, not in any worker's timeouts.
queued_timeout(_Config) ->
    {ok, Ctx} = py:bind(new),
    ok = py:ctx_exec(Ctx, <<"import time">>),
    Q0 = queued_timeouts(),
    Timeouts0 = lists:sum([T || #{timeouts := T} <- workers_stats()]),
    ok = py:ctx_exec(Ctx, <<"import erlang\n"
                            "def sleeper(pid):\n"
                            "    erlang.send(pid, 'started')\n"
                            "    time.sleep(0.4)\n">>),
    Self = self(),
    spawn(fun() -> Self ! {slept, py:ctx_call(Ctx, '__main__', sleeper, [Self])} end),
    receive <<"started">> -> ok after 5000 -> error(sleeper_not_started) end,
    ?assertEqual({error, timeout}, py:ctx_call(Ctx, time, sleep, [0], #{}, 50)),
    receive {slept, R} -> ?assertEqual({ok, none}, R) after 5000 -> error(no_sleep_answer) end,
    py:unbind(Ctx),
    ?assertEqual(Q0 + 1, queued_timeouts()),
    ?assertEqual(Timeouts0, lists:sum([T || #{timeouts := T} <- workers_stats()])).

%% A worker lost mid-call: its counters move to `retired' (the totals
%% never go back) and the call it ran counts as crashed.
retired_counters(_Config) ->
    Self = self(),
    ok = py:bind(),
    ok = py:exec(<<"import time">>),
    [{ok, _} = py:eval(<<"1">>) || _ <- lists:seq(1, 10)],
    [#{pid := G, id := Id}] = [W || W = #{bound := {process, P}} <- py_pool:workers(), P =:= Self],
    #{workers := Before, retired := R0} = py_pool:call_stats(),
    [#{calls := Calls}] = [W || W = #{id := I} <- Before, I =:= Id],
    ?assert(Calls >= 11),
    Total0 = total(Before, R0),
    spawn(fun() -> timer:sleep(200), exit(G, kill) end),
    ?assertEqual({error, worker_crashed}, py:call(time, sleep, [3])),
    ok = py_test_lib:wait_pool_idle(?WORKERS, 10000),
    #{workers := After, retired := R1} = py_pool:call_stats(),
    ?assertNot(lists:member(Id, [I || #{id := I} <- After])),
    ?assertEqual(maps:get(crashed, R0) + 1, maps:get(crashed, R1)),
    ?assert(maps:get(calls, R1) >= maps:get(calls, R0) + Calls),
    ?assert(total(After, R1) >= Total0),
    %% Its thread ends the interrupted sleep later: that call counts there.
    ok = py_test_lib:wait_until(fun() -> #{retired := R} = py_pool:call_stats(),
                                         {maps:get(calls, R) >= maps:get(calls, R0) + Calls + 1, R}
                                end, 10000, sleep_not_counted).

total(Workers, Retired) ->
    lists:sum([C || #{calls := C} <- Workers]) + maps:get(calls, Retired).

%% py_log is held up while Python logs 12000 records: past 10000 waiting
%% it drops them and says how many, instead of growing without end.
log_storm_bounded(_Config) ->
    add_handler(),
    Log = whereis(py_log),
    ok = sys:suspend(Log),
    try
        ok = py:exec(<<"import logging\nfor i in range(12000): logging.warning('storm %d', i)\n">>),
        ok = py_test_lib:wait_until(fun() -> {message_queue_len, N} = process_info(Log, message_queue_len),
                                             {N >= 12000, N}
                                    end, 10000, records_not_queued)
    after
        ok = sys:resume(Log)
    end,
    Dropped = receive_storm(0, none),
    ct:pal("storm: ~p", [Dropped]),
    ?assertMatch({Got, N} when Got < 12000 andalso N >= 12000 - 10001 andalso Got + N =:= 12000, Dropped),
    ?assertEqual(Log, whereis(py_log)).

%% {storm records received, the count the drop warning gave}.
receive_storm(Got, Dropped) ->
    receive
        {logged, warning, <<"storm ", _/binary>>, _} -> receive_storm(Got + 1, Dropped)
    after 0 ->
        case Dropped of
            none -> receive_storm(Got, dropped());
            _ -> {Got, Dropped}
        end
    end.

dropped() ->
    %% The warning is logger's own (no python_logger key): read it from
    %% logger's event through a second handler.
    receive {dropped, N} -> N after 5000 -> error(no_drop_warning) end.

%%====================================================================
%% Call events
%%====================================================================

events_of_each_kind(_Config) ->
    ?assert(py_events:enabled()),
    attach(),
    try
        {ok, 4.0} = py:call(math, sqrt, [16]),
        {ok, 2} = py:eval(<<"1 + 1">>),
        ok = py:exec(<<"y = 1">>),
        {ok, [0, 1, 2]} = py:stream(builtins, range, [3]),
        {error, {'ZeroDivisionError', _}} = py:eval(<<"1 / 0">>),
        {error, timeout} = py:call(time, sleep, [0.3], #{}, 30),
        {ok, Ctx} = py:bind(new),
        {ok, 1.0} = py:ctx_call(Ctx, math, cos, [0]),
        py:unbind(Ctx),
        Expect = [{stop, call, math, sqrt}, {stop, eval, undefined, undefined},
                  {stop, exec, undefined, undefined}, {stop, stream, builtins, range},
                  {exception, eval, undefined, undefined}, {exception, call, time, sleep},
                  {stop, call, math, cos}],
        Ids = py_test_lib:worker_ids(),
        {ok, Mode} = py_pool:chosen_mode(),
        lists:foreach(
          fun({End, Kind, M, F}) ->
                  {StartMeas, StartMeta} = event(start),
                  ?assertMatch(#{monotonic_time := T, system_time := _} when is_integer(T),
                               StartMeas),
                  ?assertMatch(#{kind := Kind, module := M, function := F, worker := undefined,
                                 mode := Mode}, StartMeta),
                  {Meas, Meta} = event(End),
                  ?assertMatch(#{duration := D} when is_integer(D) andalso D > 0, Meas),
                  ?assertMatch(#{kind := Kind, module := M, function := F, mode := Mode}, Meta),
                  ?assert(lists:member(maps:get(worker, Meta), Ids)),
                  case End of
                      exception -> ?assertMatch(#{reason := _}, Meta);
                      stop -> ?assertNot(maps:is_key(reason, Meta))
                  end
          end, Expect),
        %% Nothing more was emitted.
        ?assertEqual(nothing, receive {telemetry_event, _, _, _} = E -> E after 100 -> nothing end)
    after
        detach()
    end,
    ok.

%% Off: nothing is emitted, with telemetry running and handlers attached.
events_off(_Config) ->
    attach(),
    try
        ok = application:set_env(?APP, telemetry_events, false),
        ?assertNot(py_events:refresh()),
        {ok, 4.0} = py:call(math, sqrt, [16]),
        ?assertEqual(nothing, receive {telemetry_event, _, _, _} = E -> E after 100 -> nothing end),
        ok = application:unset_env(?APP, telemetry_events),
        ?assert(py_events:refresh()),
        {ok, 4.0} = py:call(math, sqrt, [16]),
        ?assertMatch({_, #{function := sqrt}}, event(start)),
        ?assertMatch({_, #{function := sqrt}}, event(stop)),
        %% telemetry not running: off.
        ok = application:stop(telemetry),
        ?assertNot(py_events:refresh()),
        ?assertEqual({ok, 4.0}, py:call(math, sqrt, [16]))
    after
        {ok, _} = application:ensure_all_started(telemetry),
        true = py_events:refresh(),
        detach()
    end.

attach() ->
    Self = self(),
    Fun = fun(Event, Meas, Meta, To) -> To ! {telemetry_event, Event, Meas, Meta} end,
    [ok = telemetry:attach({py_observe, E}, [erlang_python, call, E], Fun, Self)
     || E <- [start, stop, exception]],
    ok.

detach() ->
    [catch telemetry:detach({py_observe, E}) || E <- [start, stop, exception]],
    ok.

event(End) ->
    receive
        {telemetry_event, [erlang_python, call, End], Meas, Meta} -> {Meas, Meta}
    after 5000 -> error({no_event, End, erlang:process_info(self(), messages)})
    end.

%%====================================================================
%% Logging
%%====================================================================

logging_levels_and_metadata(_Config) ->
    add_handler(),
    ok = py:exec(<<"import logging\n"
                   "def f():\n"
                   "    logging.getLogger('app.db').warning('slow query %s', 42)\n"
                   "f()\n"
                   "logging.getLogger('app.db').info('below the default level')\n"
                   "logging.getLogger('app.db').error('failed')\n">>),
    {warning, <<"slow query 42">>, Meta} = logged(),
    ?assertMatch(#{python_logger := <<"app.db">>, python_level := 30, line := 3,
                   python_function := <<"f">>, file := "<string>"}, Meta),
    ?assert(lists:member(maps:get(worker, Meta), py_test_lib:worker_ids())),
    ?assert(abs(maps:get(time, Meta) - os:system_time(microsecond)) < 60000000),
    {error, <<"failed">>, #{python_level := 40}} = logged(),
    %% A lower level on a logger lets its records through.
    ok = py:exec(<<"import logging\nlg = logging.getLogger('app.verbose')\n"
                   "lg.setLevel(logging.DEBUG)\nlg.debug('details')\n"
                   "lg.log(25, 'custom')\nlg.critical('down')\n">>),
    {debug, <<"details">>, _} = logged(),
    {notice, <<"custom">>, #{python_level := 25}} = logged(),
    {critical, <<"down">>, _} = logged(),
    nothing = no_more_logged().

logging_exception_and_warning(_Config) ->
    add_handler(),
    ok = py:exec(<<"import logging\ntry:\n    1 / 0\nexcept ZeroDivisionError:\n"
                   "    logging.exception('it broke')\n">>),
    {error, Msg, _} = logged(),
    ?assertMatch(<<"it broke\nTraceback (most recent call last):", _/binary>>, Msg),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"ZeroDivisionError: division by zero">>)),
    ok = py:exec(<<"import warnings\nwarnings.warn('old api', DeprecationWarning)\n">>),
    {warning, W, #{python_logger := <<"py.warnings">>}} = logged(),
    ?assertNotEqual(nomatch, binary:match(W, <<"DeprecationWarning: old api">>)),
    nothing = no_more_logged().

%% A Python thread that is no worker logs too (worker undefined).
logging_from_a_thread(_Config) ->
    add_handler(),
    ok = py:exec(<<"import logging, threading\n"
                   "t = threading.Thread(target=lambda: logging.warning('from a thread'),"
                   " name='side')\nt.start()\nt.join()\n">>),
    {warning, <<"from a thread">>, Meta} = logged(),
    ?assertMatch(#{worker := undefined, python_thread := <<"side">>}, Meta).

%% Every worker's interpreter has the handler (with sub-interpreters each
%% worker is its own interpreter), a replaced worker's too.
logging_in_every_worker(_Config) ->
    add_handler(),
    ok = py_test_lib:exec_everywhere(?WORKERS, <<"import logging\nlogging.warning('hi %s', n)\n">>,
                                     #{n => 1}),
    Workers = [maps:get(worker, M) || {warning, <<"hi 1">>, M} <- [logged() || _ <- lists:seq(1, ?WORKERS)]],
    ?assertEqual(lists:sort(py_test_lib:worker_ids()), lists:sort(Workers)),
    [#{pid := G, id := Gone} | _] = py_pool:workers(),
    exit(G, kill),
    ok = py_test_lib:wait_until(fun() -> Ids = py_test_lib:worker_ids(),
                                         {not lists:member(Gone, Ids) andalso
                                              length(Ids) =:= ?WORKERS, Ids}
                                end, 10000, worker_not_replaced),
    ok = py_test_lib:wait_pool_idle(?WORKERS, 10000),
    ok = py_test_lib:exec_everywhere(?WORKERS, <<"import logging\nlogging.warning('again')\n">>, #{}),
    ?assertEqual(?WORKERS, length([M || {warning, <<"again">>, M} <- [logged() || _ <- lists:seq(1, ?WORKERS)]])).

stdio_to_logger(_Config) ->
    Saved = py_test_lib:start_app([{python_stdio, logger}, {num_workers, ?WORKERS}]),
    try
        add_handler(),
        ok = py:exec(<<"import sys\nprint('hello', 'out')\nsys.stdout.write('part')\n"
                       "sys.stdout.write('ial\\n')\nprint('oops', file=sys.stderr)\n"
                       "sys.stdout.write('no newline')\nsys.stdout.flush()\n">>),
        {notice, <<"hello out">>, #{python_logger := <<"stdout">>}} = logged(),
        {notice, <<"partial">>, _} = logged(),
        {warning, <<"oops">>, #{python_logger := <<"stderr">>}} = logged(),
        {notice, <<"no newline">>, _} = logged(),
        nothing = no_more_logged()
    after
        py_test_lib:stop_app(Saved),
        {ok, _} = application:ensure_all_started(?APP)
    end,
    flush_logged(),
    %% Back to the default: print goes to the node's stdout, not logger.
    ok = py:exec(<<"print('to stdout')">>),
    nothing = no_more_logged().

logging_off(_Config) ->
    Saved = py_test_lib:start_app([{python_log_level, none}, {num_workers, ?WORKERS}]),
    try
        add_handler(),
        ok = py:exec(<<"import logging\nlogging.error('nobody hears')\n">>),
        nothing = no_more_logged(),
        %% (Python's own last resort may have added a stderr handler.)
        ?assertEqual({ok, false}, py:eval(<<"any(type(h).__name__ == 'ErlangHandler' "
                                            "for h in __import__('logging').getLogger().handlers)">>))
    after
        _ = py:exec(<<"import logging\nlogging.getLogger().handlers.clear()\n">>),
        py_test_lib:stop_app(Saved),
        {ok, _} = application:ensure_all_started(?APP)
    end.

add_handler() ->
    ok = logger:add_handler(py_observe_test, ?MODULE, #{config => #{pid => self()}, level => all}),
    %% The primary level (notice by default) would drop debug and info.
    ok = logger:update_primary_config(#{level => all}).

%% logger handler callback: events from Python only.
log(#{level := Level, msg := Msg, meta := #{python_logger := _} = Meta}, #{config := #{pid := Pid}}) ->
    Text = case Msg of
               {Format, Args} when is_list(Format) -> iolist_to_binary(io_lib:format(Format, Args));
               {string, S} -> unicode:characters_to_binary(S)
           end,
    Pid ! {logged, Level, Text, Meta};
log(#{msg := {Format, [N]}}, #{config := #{pid := Pid}}) when is_list(Format), is_integer(N) ->
    case string:find(Format, "Python log records dropped") of
        nomatch -> ok;
        _ -> Pid ! {dropped, N}
    end;
log(_, _) ->
    ok.

logged() ->
    receive {logged, Level, Text, Meta} -> {Level, Text, Meta}
    after 5000 -> error(nothing_logged)
    end.

flush_logged() ->
    receive {logged, _, _, _} -> flush_logged() after 0 -> ok end.

no_more_logged() ->
    receive {logged, _, _, _} = L -> L after 200 -> nothing end.

%%====================================================================
%% Helpers
%%====================================================================

workers_stats() ->
    maps:get(workers, py_pool:call_stats()).

queued_timeouts() ->
    maps:get(queued_timeouts, py_pool:call_stats()).

stats_by_id() ->
    maps:from_list([{Id, S} || #{id := Id} = S <- workers_stats()]).

delta(B, A) ->
    maps:from_list([{K, maps:get(K, A) - maps:get(K, B)} || K <- [calls, answered, errors, timeouts]]).

%% The id of the worker a context holds: the one whose answered count moves.
ctx_worker(Ctx) ->
    Before = stats_by_id(),
    {ok, _} = py:ctx_eval(Ctx, <<"0">>),
    [Id] = [Id || {Id, #{answered := N}} <- maps:to_list(stats_by_id()),
                  N =/= maps:get(answered, maps:get(Id, Before, #{answered => N}))],
    Id.
