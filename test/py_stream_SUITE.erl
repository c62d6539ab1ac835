%% Incremental streams (py:stream_start/3,4, stream_ack, stream_cancel):
%% values as they are yielded, the window bounding the owner's mailbox,
%% cancel and owner death closing the generator, timeouts, contexts,
%% callbacks and the pool's counters while a stream runs.
-module(py_stream_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([values_in_order/1, values_as_they_come/1, async_generator/1, kwargs_and_names/1,
         errors/1, bad_arguments/1,
         window_bounds_mailbox/1, window_option/1, window_infinity/1, ack_many/1,
         cancel_while_waiting/1, cancel_while_running/1, cancel_async/1,
         never_ahead_of_window/1, cancel_async_awaiting/1, value_timeout_async/1,
         finally_calls_back/1, finally_callback_before_cancel/1,
         cancel_after_end/1, owner_death_cancels/1, owner_option/1,
         whole_timeout/1, value_timeout/1, value_timeout_excludes_credit/1,
         in_context/1, in_bound_process/1, callbacks/1, counts_in_stats/1]).

-define(H, stream_helpers).
-define(WORKERS, 4).

all() ->
    [values_in_order, values_as_they_come, async_generator, kwargs_and_names,
     errors, bad_arguments,
     window_bounds_mailbox, window_option, window_infinity, ack_many,
     cancel_while_waiting, cancel_while_running, cancel_async,
     never_ahead_of_window, cancel_async_awaiting, value_timeout_async,
     finally_calls_back, finally_callback_before_cancel,
     cancel_after_end, owner_death_cancels, owner_option,
     whole_timeout, value_timeout, value_timeout_excludes_credit,
     in_context, in_bound_process, callbacks, counts_in_stats].

init_per_suite(Config) ->
    py_test_lib:start_suite(Config, fun(DataDir) ->
                                            [{num_workers, ?WORKERS},
                                             {python_path, [DataDir]}]
                                    end).

end_per_suite(Config) ->
    ok = py_test_lib:stop_suite(Config).

init_per_testcase(_Case, Config) ->
    py_test_lib:ensure_pool_idle(?WORKERS, 5000),
    Config.

end_per_testcase(_Case, _Config) ->
    py_test_lib:recover_pool(?WORKERS, 5000).

%%--------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------

%% Receives the whole stream, acknowledging each value.
collect(Ref) ->
    collect(Ref, []).

collect(Ref, Acc) ->
    receive
        {py_stream, Ref, {data, V}} ->
            ok = py:stream_ack(Ref),
            collect(Ref, [V | Acc]);
        {py_stream, Ref, done} ->
            {ok, lists:reverse(Acc)};
        {py_stream, Ref, {error, Reason}} ->
            {error, Reason, lists:reverse(Acc)}
    after 10000 ->
        error({stream_hung, lists:reverse(Acc)})
    end.

next_value(Ref) ->
    receive {py_stream, Ref, {data, V}} -> V
    after 10000 -> error(no_value)
    end.

%% How many messages of stream Ref are in the mailbox (without taking them).
%% The receive that matches nothing first moves into the mailbox what is
%% still in transit: process_info(self(), messages) alone does not see
%% messages sent from a non-scheduler thread (the worker's enif_send) until
%% the process next receives, which made the counts lag by seconds on a
%% busy machine.
queued(Ref) ->
    receive {'$py_test_matches_nothing', Ref} -> ok after 0 -> ok end,
    {messages, Ms} = process_info(self(), messages),
    length([M || {py_stream, R, _} = M <- Ms, R =:= Ref]).

%% Waits until the mailbox holds N messages of Ref and no more arrive.
settle_at(Ref, N) ->
    ok = py_test_lib:wait_until(fun() -> {queued(Ref) =:= N, queued(Ref)} end, 15000,
                                {queued_not, N}),
    timer:sleep(100),
    ?assertEqual(N, queued(Ref)).

closed(Kind) ->
    receive {<<"closed">>, Kind} -> ok
    after 5000 -> error({not_closed, Kind})
    end.

available() ->
    maps:get(available_workers, py_pool:get_stats()).

%%--------------------------------------------------------------------
%% Cases
%%--------------------------------------------------------------------

%% The original's examples: iter(), range(), a generator of the module.
values_in_order(_Config) ->
    {ok, R1} = py:stream_start(builtins, iter, [[1, 2, 3, 4, 5]]),
    ?assert(is_reference(R1)),
    ?assertEqual({ok, [1, 2, 3, 4, 5]}, collect(R1)),
    {ok, R2} = py:stream_start(builtins, range, [5]),
    ?assertEqual({ok, [0, 1, 2, 3, 4]}, collect(R2)),
    {ok, R3} = py:stream_start(?H, numbers, [1000]),
    ?assertEqual({ok, lists:seq(0, 999)}, collect(R3)),
    {ok, R4} = py:stream_start(?H, numbers, [0]),
    ?assertEqual({ok, []}, collect(R4)),
    py_test_lib:assert_no_stray(50).

%% The first value arrives while the generator still runs: it waits on a
%% channel for the rest, which this process feeds only after the value.
values_as_they_come(_Config) ->
    {ok, Gate} = py_channel:new(),
    {ok, Ref} = py:stream_start(?H, gated, [<<"first">>, Gate]),
    ?assertEqual(<<"first">>, next_value(Ref)),
    ok = py:stream_ack(Ref),
    ?assertEqual(0, queued(Ref)), % nothing else: the generator waits on the gate
    ok = py_channel:send(Gate, <<"second">>),
    ?assertEqual(<<"second">>, next_value(Ref)),
    ok = py:stream_ack(Ref),
    ok = py_channel:close(Gate),
    ?assertEqual({ok, []}, collect(Ref)).

async_generator(_Config) ->
    {ok, Ref} = py:stream_start(?H, acount, [5]),
    ?assertEqual({ok, [0, 10, 20, 30, 40]}, collect(Ref)).

kwargs_and_names(_Config) ->
    {ok, R1} = py:stream_start(?H, words, [<<"a b c">>], #{kwargs => #{upper => true}}),
    ?assertEqual({ok, [<<"A">>, <<"B">>, <<"C">>]}, collect(R1)),
    {ok, R2} = py:stream_start(<<"stream_helpers">>, <<"numbers">>, [3]),
    ?assertEqual({ok, [0, 1, 2]}, collect(R2)).

%% Errors come as {error, Reason}, Reason as py:call gives it, after the
%% values yielded before.
errors(_Config) ->
    {ok, R1} = py:stream_start(?H, failing, [3]),
    ?assertEqual({error, {'ValueError', <<"boom after 3">>}, [0, 1, 2]}, collect(R1)),
    {ok, R2} = py:stream_start(?H, not_iterable, []),
    ?assertMatch({error, {'TypeError', _}, []}, collect(R2)),
    {ok, R3} = py:stream_start(no_such_module_xyz, f, []),
    ?assertMatch({error, {'ModuleNotFoundError', _}, []}, collect(R3)),
    {ok, R4} = py:stream_start(?H, no_such_function, []),
    ?assertMatch({error, {'AttributeError', _}, []}, collect(R4)),
    py_test_lib:assert_no_stray(50).

bad_arguments(_Config) ->
    ?assertEqual({error, {badarg, module}}, py:stream_start(1, f, [])),
    ?assertEqual({error, {badarg, function}}, py:stream_start(m, 1, [])),
    ?assertEqual({error, {badarg, args}}, py:stream_start(m, f, x)),
    ?assertEqual({error, {badarg, opts}}, py:stream_start(m, f, [], [])),
    ?assertEqual({error, {badarg, window}}, py:stream_start(m, f, [], #{window => 0})),
    ?assertEqual({error, {badarg, timeout}}, py:stream_start(m, f, [], #{timeout => -1})),
    ?assertEqual({error, {badarg, timeout}}, py:stream_start(m, f, [], #{value_timeout => x})),
    ?assertEqual({error, {badarg, kwargs}}, py:stream_start(m, f, [], #{kwargs => [a]})),
    ?assertEqual({error, {badarg, owner}}, py:stream_start(m, f, [], #{owner => self})),
    ?assertEqual({error, {badarg, ctx}}, py:stream_start(m, f, [], #{ctx => nope})),
    ?assertError(badarg, py:stream_ack(make_ref())),
    ?assertError(badarg, py:stream_cancel(make_ref())),
    py_test_lib:assert_no_stray(50).

%% An endless generator and an owner that does not read: exactly the
%% window (64) is delivered; each ack lets one more through.
window_bounds_mailbox(_Config) ->
    {ok, Ref} = py:stream_start(itertools, count, []),
    settle_at(Ref, 64),
    ok = py:stream_ack(Ref),
    settle_at(Ref, 65),
    ok = py:stream_cancel(Ref),
    timer:sleep(100),
    ?assertEqual(65, queued(Ref)),
    %% The values are the generator's, in order.
    ?assertEqual(lists:seq(0, 64), [next_value(Ref) || _ <- lists:seq(1, 65)]),
    ok = py_test_lib:wait_pool_idle(?WORKERS, 5000),
    py_test_lib:assert_no_stray(100).

window_option(_Config) ->
    {ok, Ref} = py:stream_start(itertools, count, [], #{window => 3}),
    settle_at(Ref, 3),
    ok = py:stream_cancel(Ref),
    ?assertEqual([0, 1, 2], [next_value(Ref) || _ <- lists:seq(1, 3)]),
    py_test_lib:assert_no_stray(100).

%% No flow control: a finite generator delivers everything unread.
window_infinity(_Config) ->
    {ok, Ref} = py:stream_start(?H, numbers, [500], #{window => infinity}),
    receive {py_stream, Ref, done} -> ok after 10000 -> error(no_done) end,
    ?assertEqual(500, queued(Ref)).

%% Acks may be given in batches; early acks give no credit in advance.
ack_many(_Config) ->
    {ok, Ref} = py:stream_start(itertools, count, [], #{window => 10}),
    settle_at(Ref, 10),
    ok = py:stream_ack(Ref, 5),
    settle_at(Ref, 15),
    ok = py:stream_ack(Ref, 1000), % more than sent: only what was sent counts
    settle_at(Ref, 25),
    ok = py:stream_cancel(Ref).

%% Cancelled while it waits for credit: its finally block runs, nothing
%% arrives after cancel returns, the worker is free.
cancel_while_waiting(_Config) ->
    {ok, Ref} = py:stream_start(?H, closing, [self()], #{window => 2}),
    settle_at(Ref, 2),
    ok = py:stream_cancel(Ref),
    closed(<<"sync">>),
    timer:sleep(100),
    ?assertEqual(2, queued(Ref)),
    ok = py_test_lib:wait_pool_idle(?WORKERS, 5000),
    Ids = py_test_lib:worker_ids(),
    ?assertEqual({ok, 4.0}, py:call(math, sqrt, [16])),
    ?assertEqual(Ids, py_test_lib:worker_ids()). % no worker was replaced

%% Cancelled while its Python code runs (sleeps between values): it is
%% interrupted, its finally block runs, the worker is free, not replaced.
cancel_while_running(_Config) ->
    Ids = py_test_lib:worker_ids(),
    {ok, Ref} = py:stream_start(?H, sleepy, [self(), 5.0]),
    ?assertEqual(0, next_value(Ref)),
    ok = py:stream_ack(Ref),
    timer:sleep(50),
    ok = py:stream_cancel(Ref),
    closed(<<"sleepy">>),
    ok = py_test_lib:wait_pool_idle(?WORKERS, 5000),
    ?assertEqual(Ids, py_test_lib:worker_ids()),
    py_test_lib:assert_no_stray(100).

cancel_async(_Config) ->
    {ok, Ref} = py:stream_start(?H, acount, [1000000, self()], #{window => 4}),
    settle_at(Ref, 4),
    ok = py:stream_cancel(Ref),
    closed(<<"async">>),
    ok = py_test_lib:wait_pool_idle(?WORKERS, 5000).

%% The generator is advanced only when the owner has room: with a window
%% of 3 and nothing acknowledged, 3 values were produced, not 4.
never_ahead_of_window(_Config) ->
    {ok, Ref} = py:stream_start(?H, announced, [self()], #{window => 3}),
    settle_at(Ref, 3),
    ?assertEqual(3, producing()),
    ok = py:stream_ack(Ref),
    settle_at(Ref, 4),
    ?assertEqual(4, producing()),
    ok = py:stream_cancel(Ref),
    ok = py_test_lib:wait_pool_idle(?WORKERS, 5000).

producing() ->
    {messages, Ms} = process_info(self(), messages),
    length([M || {<<"producing">>, _} = M <- Ms]).

%% An async generator that awaits (no Python code runs, the loop sleeps
%% in its selector) is still stopped at once: cancelled at its await, its
%% finally block runs, the worker is free and not replaced.
cancel_async_awaiting(_Config) ->
    Ids = py_test_lib:worker_ids(),
    {ok, Ref} = py:stream_start(?H, await_forever, [self()]),
    ?assertEqual(<<"first">>, next_value(Ref)),
    ok = py:stream_ack(Ref),
    timer:sleep(50),
    ok = py:stream_cancel(Ref),
    closed(<<"awaiting">>),
    ok = py_test_lib:wait_pool_idle(?WORKERS, 5000),
    ?assertEqual(Ids, py_test_lib:worker_ids()),
    py_test_lib:assert_no_stray(100).

value_timeout_async(_Config) ->
    Ids = py_test_lib:worker_ids(),
    {ok, Ref} = py:stream_start(?H, await_forever, [self()], #{value_timeout => 300}),
    ?assertEqual({error, timeout, [<<"first">>]}, collect(Ref)),
    closed(<<"awaiting">>),
    ok = py_test_lib:wait_pool_idle(?WORKERS, 5000),
    ?assertEqual(Ids, py_test_lib:worker_ids()).

%% A generator's finally block that calls back while it closes is served.
finally_calls_back(_Config) ->
    ok = py:register_function(stream_double, fun([X]) -> 2 * X end),
    try
        {ok, Ref} = py:stream_start(?H, calls_back_when_closed, [self()], #{window => 2}),
        settle_at(Ref, 2),
        ok = py:stream_cancel(Ref),
        closed(42),
        ok = py_test_lib:wait_pool_idle(?WORKERS, 5000)
    after
        py:unregister_function(stream_double)
    end.

%% The race behind finally_calls_back, made certain: the generator wakes
%% from the stop and its finally block's callback reaches the stream's
%% process before py:stream_cancel's message does (the test sends that
%% message itself, once the callback runs).  The callback is served to its
%% end (it was killed, and the generator interrupted in its finally block).
finally_callback_before_cancel(_Config) ->
    Self = self(),
    ok = py:register_function(stream_double, fun([X]) ->
                                                     Self ! {callback_running, self()},
                                                     timer:sleep(200),
                                                     2 * X
                                             end),
    try
        {ok, Ref} = py:stream_start(?H, calls_back_when_closed, [self()], #{window => 2}),
        settle_at(Ref, 2),
        {running, Pid} = py_nif:stream_stop(Ref),
        receive {callback_running, _} -> ok after 5000 -> error(no_callback) end,
        Pid ! {'$py_stream_cancel', Ref},
        closed(42),
        ok = py_test_lib:wait_pool_idle(?WORKERS, 5000)
    after
        py:unregister_function(stream_double)
    end.

%% Cancelling an ended stream is fine, and changes nothing.
cancel_after_end(_Config) ->
    {ok, Ref} = py:stream_start(?H, numbers, [2]),
    ?assertEqual({ok, [0, 1]}, collect(Ref)),
    ok = py:stream_cancel(Ref),
    ok = py:stream_cancel(Ref),
    py_test_lib:assert_no_stray(50).

%% The owner exits mid-stream: the generator is closed the same way.
owner_death_cancels(_Config) ->
    Self = self(),
    Owner = spawn(fun() ->
                          {ok, Ref} = py:stream_start(?H, closing, [Self], #{window => 4}),
                          Self ! {started, Ref},
                          receive stop -> ok end
                  end),
    receive {started, _} -> ok after 5000 -> error(not_started) end,
    ?assertEqual(?WORKERS - 1, py_test_lib:wait_until(fun available/0, fun(A) -> A =:= ?WORKERS - 1 end)),
    exit(Owner, kill),
    closed(<<"sync">>),
    ok = py_test_lib:wait_pool_idle(?WORKERS, 5000).

%% The messages go to the owner given, not to the caller.
owner_option(_Config) ->
    Self = self(),
    Owner = spawn(fun() ->
                          receive {go, Ref} -> Self ! {got, collect(Ref)} end
                  end),
    {ok, Ref} = py:stream_start(?H, numbers, [5], #{owner => Owner}),
    Owner ! {go, Ref},
    receive {got, Got} -> ?assertEqual({ok, [0, 1, 2, 3, 4]}, Got)
    after 10000 -> error(owner_got_nothing)
    end,
    ?assertEqual(0, queued(Ref)).

%% timeout: the whole stream.  Values come every 50 ms, forever: it ends
%% with {error, timeout} and the generator is closed.
whole_timeout(_Config) ->
    {ok, Ref} = py:stream_start(?H, every, [0.05, 1000000], #{timeout => 400}),
    {error, timeout, Values} = collect(Ref),
    ?assert(length(Values) >= 1),
    ok = py_test_lib:wait_pool_idle(?WORKERS, 5000),
    py_test_lib:assert_no_stray(100).

%% value_timeout: the second value takes too long.
value_timeout(_Config) ->
    {ok, Ref} = py:stream_start(?H, slow_second, [30], #{value_timeout => 300}),
    ?assertEqual({error, timeout, [<<"first">>]}, collect(Ref)),
    ok = py_test_lib:wait_pool_idle(?WORKERS, 5000).

%% Waiting for the owner's acks is not the generator's time.
value_timeout_excludes_credit(_Config) ->
    {ok, Ref} = py:stream_start(?H, numbers, [5], #{window => 2, value_timeout => 200}),
    settle_at(Ref, 2),
    timer:sleep(600), % three value timeouts, all spent waiting for credit
    ?assertEqual({ok, [0, 1, 2, 3, 4]}, collect(Ref)).

%% In a context, the stream sees that context's namespace.
in_context(_Config) ->
    {ok, Ctx} = py:bind(new),
    ok = py:ctx_exec(Ctx, <<"def mine(n):\n    for i in range(n):\n        yield ('ctx', i)\n">>),
    {ok, Ref} = py:stream_start('__main__', mine, [2], #{ctx => Ctx}),
    ?assertEqual({ok, [{<<"ctx">>, 0}, {<<"ctx">>, 1}]}, collect(Ref)),
    ok = py:unbind(Ctx).

in_bound_process(_Config) ->
    ok = py:bind(),
    ok = py:exec(<<"def bound_gen():\n    yield 'bound'\n">>),
    {ok, Ref} = py:stream_start('__main__', bound_gen, []),
    ?assertEqual({ok, [<<"bound">>]}, collect(Ref)),
    ok = py:unbind().

%% erlang.call from the generator is served.
callbacks(_Config) ->
    ok = py:register_function(stream_double, fun([X]) -> 2 * X end),
    {ok, Ref} = py:stream_start(?H, calls_back, [4]),
    ?assertEqual({ok, [0, 2, 4, 6]}, collect(Ref)),
    ok = py:unregister_function(stream_double).

%% A running stream holds a worker: checked out, not available to py:bind().
counts_in_stats(_Config) ->
    {ok, Ref} = py:stream_start(itertools, count, [], #{window => 1}),
    settle_at(Ref, 1),
    ?assertMatch(#{available_workers := 3, checked_out := 1, num_workers := 4},
                 py_pool:get_stats()),
    ok = py:stream_cancel(Ref),
    ok = py_test_lib:wait_pool_idle(?WORKERS, 5000).
