%% Channels from Erlang into Python (py_channel) and large binaries without
%% copies ({buffer, Bin} in, large bytes out).
-module(py_channel_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([iterate_until_close/1, receive_waits_for_data/1, receive_timeout/1, try_receive/1,
         closed_channel/1, bounded/1, info/1, channel_object/1, bad_arguments/1,
         async_iteration/1, async_waits_for_data/1, async_two_readers/1, async_timeout/1,
         bytes_json/1, bytes_csv/1, bytes_lines_and_reads/1,
         owner_exit_while_waiting/1, owner_option/1, sender_killed_while_waiting/1,
         caller_timeout_while_waiting/1, consumer_raises/1,
         buffer_in/1, buffer_read_only/1, buffer_round_trip/1, buffer_numpy/1,
         buffer_views_and_large_results/1,
         bytes_out_shared/1, bytes_out_small_copied/1, mutable_copied/1,
         bytes_out_in_messages/1]).

-define(H, channel_helpers).
-define(WORKERS, 4).
-define(MIB, (1024 * 1024)).

all() ->
    [iterate_until_close, receive_waits_for_data, receive_timeout, try_receive,
     closed_channel, bounded, info, channel_object, bad_arguments,
     async_iteration, async_waits_for_data, async_two_readers, async_timeout,
     bytes_json, bytes_csv, bytes_lines_and_reads,
     owner_exit_while_waiting, owner_option, sender_killed_while_waiting,
     caller_timeout_while_waiting, consumer_raises,
     buffer_in, buffer_read_only, buffer_round_trip, buffer_numpy,
     buffer_views_and_large_results,
     bytes_out_shared, bytes_out_small_copied, mutable_copied, bytes_out_in_messages].

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

%% Sends each term after Delay ms, then closes (unless Close is false).
feed(Ch, Terms, Delay, Close) ->
    spawn_link(fun() ->
                       timer:sleep(Delay),
                       [ok = py_channel:send(Ch, T) || T <- Terms],
                       case Close of
                           true -> ok = py_channel:close(Ch);
                           false -> ok
                       end
               end).

%%--------------------------------------------------------------------
%% Term channels
%%--------------------------------------------------------------------

%% The example of py_channel's @doc, and iteration that ends at close.
iterate_until_close(_Config) ->
    {ok, Ch} = py_channel:new(),
    spawn(fun() -> [py_channel:send(Ch, N) || N <- lists:seq(1, 3)], py_channel:close(Ch) end),
    {ok, 6} = py:eval(<<"sum(ch)">>, #{ch => Ch}),
    {ok, C2} = py_channel:new(),
    Terms = [1, <<"two">>, {three, 3}, #{four => 4}, [5], 6.0],
    [ok = py_channel:send(C2, T) || T <- Terms],
    ok = py_channel:close(C2),
    ?assertEqual({ok, [1, <<"two">>, {<<"three">>, 3}, #{<<"four">> => 4}, [5], 6.0]},
                 py:call(?H, collect, [C2])).

%% receive() waits (GIL released: other calls run meanwhile) for data that
%% Erlang sends after the call started.
receive_waits_for_data(_Config) ->
    {ok, Ch} = py_channel:new(),
    Self = self(),
    spawn_link(fun() -> Self ! {got, py:call(?H, take, [Ch, 2])} end),
    ok = py_test_lib:wait_until(fun() -> {maps:get(waiting, py_channel:info(Ch)) =:= 1, x} end,
                                5000, receiver_not_waiting),
    ?assertEqual({ok, 4.0}, py:call(math, sqrt, [16])), % the wait holds no GIL
    ok = py_channel:send(Ch, a),
    ok = py_channel:send(Ch, b),
    receive {got, Got} -> ?assertEqual({ok, [<<"a">>, <<"b">>]}, Got)
    after 5000 -> error(receiver_hung)
    end.

receive_timeout(_Config) ->
    {ok, Ch} = py_channel:new(),
    ?assertMatch({error, {'TimeoutError', _}}, py:call(?H, wait_one, [Ch, 0.1])),
    feed(Ch, [late], 100, false),
    ?assertEqual({ok, <<"late">>}, py:call(?H, wait_one, [Ch, 5.0])),
    %% A timeout too large for milliseconds (or inf) is no deadline; NaN is
    %% refused.
    feed(Ch, [later, latest], 100, false),
    ?assertEqual({ok, <<"later">>}, py:call(?H, wait_one, [Ch, 1.0e300])),
    ?assertEqual({ok, <<"latest">>}, py:eval(<<"ch.receive(float('inf'))">>, #{ch => Ch})),
    ?assertMatch({error, {'ValueError', _}}, py:eval(<<"ch.receive(float('nan'))">>, #{ch => Ch})).

try_receive(_Config) ->
    {ok, Ch} = py_channel:new(),
    ?assertEqual({ok, none}, py:call(?H, poll, [Ch])),
    ok = py_channel:send(Ch, 7),
    ?assertEqual({ok, 7}, py:call(?H, poll, [Ch])),
    ?assertEqual({ok, none}, py:call(?H, poll, [Ch])).

%% After close: queued messages are still received, then ChannelClosed;
%% sends are refused.
closed_channel(_Config) ->
    {ok, Ch} = py_channel:new(),
    ok = py_channel:send(Ch, 1),
    ok = py_channel:close(Ch),
    ok = py_channel:close(Ch),
    ?assertEqual({error, closed}, py_channel:send(Ch, 2)),
    ?assertEqual({ok, {[1], <<"ChannelClosed">>, <<"the channel is closed">>}},
                 py:call(?H, receive_after_close, [Ch])),
    ?assertMatch({error, {'ChannelClosed', _}}, py:call(?H, poll, [Ch])).

bounded(_Config) ->
    {ok, Ch} = py_channel:new(#{max_size => 2}),
    ok = py_channel:send(Ch, 1),
    ok = py_channel:send(Ch, 2),
    ?assertEqual({error, full}, py_channel:send(Ch, 3)),
    ?assertEqual({ok, 1}, py:call(?H, poll, [Ch])),
    ok = py_channel:send(Ch, 3),
    ?assertEqual({ok, [2, 3]}, py:call(?H, take, [Ch, 2])),
    %% A byte channel is bounded in bytes.
    {ok, B} = py_channel:new(#{max_size => 10, type => bytes}),
    ok = py_channel:send(B, <<"123456">>),
    ?assertEqual({error, full}, py_channel:send(B, <<"123456">>)),
    ok = py_channel:send(B, <<"1234">>).

info(_Config) ->
    {ok, Ch} = py_channel:new(#{max_size => 5}),
    ok = py_channel:send(Ch, x),
    ok = py_channel:send(Ch, y),
    {ok, _} = py:call(?H, poll, [Ch]),
    ?assertEqual(#{size => 1, bytes => 0, max_size => 5, closed => false, type => term,
                   sent => 2, received => 1, waiting => 0}, py_channel:info(Ch)),
    {ok, B} = py_channel:new(#{type => bytes}),
    ok = py_channel:send(B, <<"abc">>),
    ok = py_channel:close(B),
    ?assertMatch(#{size := 1, bytes := 3, max_size := infinity, closed := true, type := bytes},
                 py_channel:info(B)).

%% A Channel is an erlang.Channel in Python (erlang.Channel(ch) is ch, as
%% the original's constructor); returned, it is the same term.
channel_object(_Config) ->
    {ok, Ch} = py_channel:new(),
    ok = py_channel:send(Ch, 1),
    ?assert(is_reference(Ch)),
    ?assertEqual({ok, {true, true, 1, false, false}}, py:call(?H, is_channel, [Ch])),
    {ok, Back} = py:call(?H, echo, [Ch]),
    ?assertEqual(Ch, Back),
    ?assertEqual({ok, 1}, py:call(?H, poll, [Back])).

bad_arguments(_Config) ->
    ?assertEqual({error, {badarg, max_size}}, py_channel:new(#{max_size => 0})),
    ?assertEqual({error, {badarg, type}}, py_channel:new(#{type => text})),
    ?assertEqual({error, {badarg, opts}}, py_channel:new([])),
    ?assertEqual({error, {badarg, owner}}, py_channel:new(#{owner => nobody})),
    {ok, B} = py_channel:new(#{type => bytes}),
    ?assertEqual({error, {badarg, data}}, py_channel:send(B, "a list")),
    ?assertError(badarg, py_channel:send(make_ref(), 1)),
    ?assertError(badarg, py_channel:info(self())).

%%--------------------------------------------------------------------
%% asyncio
%%--------------------------------------------------------------------

async_iteration(_Config) ->
    {ok, Ch} = py_channel:new(),
    feed(Ch, lists:seq(1, 100), 0, true),
    ?assertEqual({ok, 5050}, py:call(?H, async_total, [Ch])).

async_waits_for_data(_Config) ->
    {ok, Ch} = py_channel:new(),
    feed(Ch, [a, b, c], 200, false),
    ?assertEqual({ok, [<<"a">>, <<"b">>, <<"c">>]}, py:call(?H, async_take, [Ch, 3])).

async_two_readers(_Config) ->
    {ok, Ch} = py_channel:new(),
    feed(Ch, lists:seq(1, 200), 50, true),
    ?assertEqual({ok, lists:seq(1, 200)}, py:call(?H, async_two_readers, [Ch, 200])).

async_timeout(_Config) ->
    {ok, Ch} = py_channel:new(),
    ?assertMatch({error, {'TimeoutError', _}}, py:call(?H, async_take, [Ch, 1, 0.1])).

%%--------------------------------------------------------------------
%% Byte channels: files that fill as Erlang sends
%%--------------------------------------------------------------------

%% The request-body example: json.load reads the document as it arrives.
bytes_json(_Config) ->
    {ok, Ch} = py_channel:new(#{type => bytes}),
    feed(Ch, [<<"{\"items\": [1, ">>, <<"2, 3], \"name\": \"caf">>, <<"\xc3">>, <<"\xa9\"}">>],
         50, true),
    ?assertEqual({ok, #{<<"items">> => [1, 2, 3], <<"name">> => <<"café"/utf8>>}},
                 py:call(?H, json_load, [Ch])).

bytes_csv(_Config) ->
    {ok, Ch} = py_channel:new(#{type => bytes}),
    feed(Ch, [<<"a,b\n1,">>, <<"2\n3,4">>, <<"\n">>], 20, true),
    ?assertEqual({ok, [[<<"a">>, <<"b">>], [<<"1">>, <<"2">>], [<<"3">>, <<"4">>]]},
                 py:call(?H, csv_rows, [Ch])).

bytes_lines_and_reads(_Config) ->
    {ok, Ch} = py_channel:new(#{type => bytes}),
    feed(Ch, [<<"one\ntw">>, <<"o\nthree">>], 0, true),
    ?assertEqual({ok, [<<"one\n">>, <<"two\n">>, <<"three">>]}, py:call(?H, lines, [Ch])),
    {ok, C2} = py_channel:new(#{type => bytes}),
    feed(C2, [<<"abcdef\n">>, <<"rest">>, <<" of it">>], 0, true),
    ?assertEqual({ok, {<<"abc">>, <<"def\n">>, <<"rest of it">>}},
                 py:call(?H, read_parts, [C2])).

%%--------------------------------------------------------------------
%% Faults
%%--------------------------------------------------------------------

%% The channel's owner exits while Python waits: Python gets
%% ChannelClosed at once (not a clean end), the worker is fine.
owner_exit_while_waiting(_Config) ->
    Self = self(),
    Owner = spawn(fun() ->
                          {ok, Ch} = py_channel:new(),
                          Self ! {channel, Ch},
                          receive stop -> ok end
                  end),
    Ch = receive {channel, C} -> C after 5000 -> error(no_channel) end,
    spawn_link(fun() -> Self ! {got, py:call(?H, consume_forever, [Ch])} end),
    ok = py_test_lib:wait_until(fun() -> {maps:get(waiting, py_channel:info(Ch)) =:= 1, x} end,
                                5000, receiver_not_waiting),
    exit(Owner, kill),
    receive
        {got, Got} ->
            ?assertMatch({error, {'ChannelClosed', <<"the channel's owner exited", _/binary>>}},
                         Got)
    after 5000 -> error(receiver_hung)
    end,
    ?assertEqual({error, closed}, py_channel:send(Ch, 1)),
    ok = py_test_lib:wait_pool_idle(?WORKERS, 5000).

%% The owner option: the channel ends with that process, not the caller.
owner_option(_Config) ->
    Owner = spawn(fun() -> receive stop -> ok end end),
    {ok, Ch} = py_channel:new(#{owner => Owner}),
    ok = py_channel:send(Ch, 1),
    Owner ! stop,
    ok = py_test_lib:wait_until(fun() -> {maps:get(closed, py_channel:info(Ch)), x} end,
                                5000, not_closed),
    ?assertEqual({ok, {true, true}}, py:eval(<<"(ch.try_receive() == 1, ch.aborted)">>, #{ch => Ch})).

%% A sender (not the owner) killed while Python waits changes nothing:
%% Python keeps waiting and gets what others send, then the close.
sender_killed_while_waiting(_Config) ->
    {ok, Ch} = py_channel:new(),
    Self = self(),
    spawn_link(fun() -> Self ! {got, py:call(?H, collect, [Ch])} end),
    Sender = spawn(fun() -> ok = py_channel:send(Ch, 1), receive never -> ok end end),
    ok = py_test_lib:wait_until(fun() -> {maps:get(sent, py_channel:info(Ch)) =:= 1, x} end,
                                5000, not_sent),
    exit(Sender, kill),
    timer:sleep(50),
    ok = py_channel:send(Ch, 2),
    ok = py_channel:close(Ch),
    receive {got, Got} -> ?assertEqual({ok, [1, 2]}, Got)
    after 5000 -> error(receiver_hung)
    end.

%% The caller of a call waiting on a channel gives up: {error, timeout} at
%% its timeout, and the worker is free at once, not replaced.
caller_timeout_while_waiting(_Config) ->
    Ids = py_test_lib:worker_ids(),
    {ok, Ch} = py_channel:new(),
    ?assertEqual({error, timeout}, py:call(?H, consume_forever, [Ch], #{}, 200)),
    ok = py_test_lib:wait_pool_idle(?WORKERS, 2000),
    ?assertEqual(0, maps:get(waiting, py_channel:info(Ch))),
    ?assertEqual(Ids, py_test_lib:worker_ids()),
    %% The channel still works for the next consumer.
    ok = py_channel:send(Ch, 9),
    ?assertEqual({ok, 9}, py:call(?H, poll, [Ch])).

%% A consumer raising leaves the rest queued for the next one.
consumer_raises(_Config) ->
    {ok, Ch} = py_channel:new(),
    [ok = py_channel:send(Ch, N) || N <- lists:seq(1, 5)],
    ok = py_channel:close(Ch),
    ?assertEqual({error, {'RuntimeError', <<"consumer failed after 2">>}},
                 py:call(?H, fail_after, [Ch, 2])),
    ?assertEqual({ok, [3, 4, 5]}, py:call(?H, collect, [Ch])).

%%--------------------------------------------------------------------
%% {buffer, Bin} and shared bytes
%%--------------------------------------------------------------------

buffer_in(_Config) ->
    Bin = binary:copy(<<1, 2, 3, 4>>, 256 * 1024),
    ?assertEqual({ok, {<<"Buffer">>, 1048576, true, 1048576, {bytes_of, <<1, 2, 3, 4>>}, true}},
                 tag_fifth(py:call(?H, buffer_facts, [{buffer, Bin}]))),
    %% A small binary works the same (it is copied into Python's buffer
    %% object's own environment: 64 bytes at most).
    ?assertMatch({ok, {<<"Buffer">>, 3, true, 3, _, true}},
                 tag_fifth(py:call(?H, buffer_facts, [{buffer, <<"abc">>}]))),
    %% Without the tag: the type table as before.
    ?assertEqual({ok, <<"abc">>}, py:eval(<<"x">>, #{x => <<"abc">>})).

tag_fifth({ok, {A, B, C, D, E, F}}) -> {ok, {A, B, C, D, {bytes_of, E}, F}};
tag_fifth(Other) -> Other.

buffer_read_only(_Config) ->
    ?assertMatch({error, {'TypeError', _}},
                 py:call(?H, buffer_write, [{buffer, binary:copy(<<0>>, 100)}])).

%% Returned as it is, a buffer comes back as the same binary: 64 MiB in
%% and out leave the node's binary memory where it was.
buffer_round_trip(_Config) ->
    Bin = binary:copy(<<7>>, 64 * ?MIB),
    erlang:garbage_collect(),
    Before = binary_memory(),
    {ok, Back} = py:eval(<<"b">>, #{b => {buffer, Bin}}),
    After = binary_memory(),
    ?assertEqual(Bin, Back),
    ?assert(After - Before < 8 * ?MIB),
    {ok, [Back2]} = py:eval(<<"[b]">>, #{b => {buffer, Back}}),
    ?assertEqual(byte_size(Bin), byte_size(Back2)).

%% The node's binary memory, or (allocator statistics off, as under
%% valgrind's +Mea min) the OS RSS: a 64 MiB copy shows in either.
binary_memory() ->
    try erlang:memory(binary)
    catch error:notsup -> py_test_lib:rss()
    end.

buffer_numpy(_Config) ->
    case py:eval(<<"__import__('importlib.util').util.find_spec('numpy') is not None">>) of
        {ok, true} ->
            Bin = binary:copy(<<1>>, ?MIB),
            ?assertEqual({ok, ?MIB}, py:call(?H, numpy_sum, [{buffer, Bin}])),
            ?assertEqual({ok, true}, py:call(?H, same_memory, [{buffer, Bin}, {buffer, Bin}]));
        {ok, false} ->
            {comment, "numpy is not installed for this Python"}
    end.

%% A byte view of a buffer comes back as that part of the binary; buffers
%% and channels inside a result with large dicts (which the worker encodes
%% in the external format) come back as themselves.
buffer_views_and_large_results(_Config) ->
    Bin = binary:copy(<<"0123456789">>, 10000),
    ?assertEqual({ok, <<"2345">>}, py:eval(<<"memoryview(b)[2:6]">>, #{b => {buffer, Bin}})),
    {ok, Whole} = py:eval(<<"memoryview(b)">>, #{b => {buffer, Bin}}),
    ?assertEqual(Bin, Whole),
    %% a strided view is not one piece of the binary: a list, as before
    ?assertEqual({ok, [$0, $2, $4]}, py:eval(<<"memoryview(b)[0:6:2]">>, #{b => {buffer, Bin}})),
    %% A released view no longer points at the binary: an error, as for
    %% any released memoryview (the Buffer it viewed may be gone).
    ?assertMatch({error, {'ValueError', <<"operation forbidden on released", _/binary>>}},
                 py:call(?H, released_view, [{buffer, Bin}])),
    {ok, Ch} = py_channel:new(),
    {ok, M} = py:eval(<<"{str(i): (b, ch) for i in range(40)}">>, #{b => {buffer, Bin}, ch => Ch}),
    ?assertEqual(40, map_size(M)),
    ?assertEqual({Bin, Ch}, maps:get(<<"7">>, M)).

%% A large bytes result is shared: Python's object has one more reference
%% while Erlang holds the binary, and loses it once Erlang drops it (at
%% the interpreter's next request: a context, so the same interpreter).
bytes_out_shared(_Config) ->
    {ok, Ctx} = py:bind(new),
    Size = 4 * ?MIB,
    {ok, R0} = py:ctx_call(Ctx, ?H, keep_bytes, [big, Size]),
    Self = self(),
    Holder = spawn_link(fun() ->
                                {ok, Y} = py:ctx_call(Ctx, ?H, kept, [big]),
                                Self ! {held, byte_size(Y), binary:first(Y)},
                                receive drop -> ok end
                        end),
    receive {held, Size, $k} -> ok after 5000 -> error(not_held) end,
    %% (Polled: the worker may still hold the call's result for a moment
    %% after its reply, as a request's objects are dropped after it.)
    ?assertEqual({ok, R0 + 1}, py_test_lib:wait_until(
                                 fun() -> py:ctx_call(Ctx, ?H, kept_refcount, [big]) end,
                                 fun(R) -> R =:= {ok, R0 + 1} end)),
    unlink(Holder),
    Holder ! drop,
    ok = py_test_lib:wait_until(fun() -> {not is_process_alive(Holder), x} end, 5000, holder),
    erlang:garbage_collect(),
    ?assertEqual({ok, R0}, py_test_lib:wait_until(
                             fun() -> py:ctx_call(Ctx, ?H, kept_refcount, [big]) end,
                             fun(R) -> R =:= {ok, R0} end)),
    ok = py:unbind(Ctx).

%% Below the threshold (4 KiB) the bytes are copied: no reference kept.
bytes_out_small_copied(_Config) ->
    {ok, Ctx} = py:bind(new),
    {ok, R0} = py:ctx_call(Ctx, ?H, keep_bytes, [small, 1000]),
    {ok, Y} = py:ctx_call(Ctx, ?H, kept, [small]),
    %% While Y is held: the count comes back to R0 (polled: the worker may
    %% hold the call's result a moment after its reply).
    ?assertEqual({ok, R0}, py_test_lib:wait_until(
                             fun() -> py:ctx_call(Ctx, ?H, kept_refcount, [small]) end,
                             fun(R) -> R =:= {ok, R0} end)),
    ?assertEqual(1000, byte_size(Y)),
    ok = py:unbind(Ctx).

%% A bytearray is copied once: changing it in Python afterwards does not
%% change the binary.
mutable_copied(_Config) ->
    {ok, Ctx} = py:bind(new),
    {ok, A} = py:ctx_call(Ctx, ?H, make_bytearray, [?MIB]),
    ?assertEqual({ok, <<"Z">>}, py:ctx_call(Ctx, ?H, mutate_bytearray, [])),
    ?assertEqual($a, binary:first(A)),
    ok = py:unbind(Ctx).

%% Shared bytes travel in messages too (erlang.send, stream values).
bytes_out_in_messages(_Config) ->
    {ok, Ref} = py:stream_start(builtins, iter, [[]]),
    receive {py_stream, Ref, done} -> ok after 5000 -> error(no_done) end,
    {ok, none} = py:eval(<<"erlang.send(p, b'm' * (1 << 20))">>, #{p => self()}),
    receive M when is_binary(M) -> ?assertEqual(?MIB, byte_size(M))
    after 5000 -> error(no_message)
    end.
