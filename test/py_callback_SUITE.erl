%% Python calling Erlang: registered functions (py:register_function/2,3),
%% the Python `erlang' module (call, attribute and `from erlang import'
%% syntaxes, send, self, ErlangError), nesting Python -> Erlang -> Python on
%% one worker, callbacks from Python threads and async calls, timeouts while
%% Python waits for a callback, and the shared state (py:state_* and
%% erlang.state_*).
%%
%% The Python helpers are in py_callback_SUITE_data/cb_helpers.py; the data
%% directory is put on sys.path through the application env `python_path'.
-module(py_callback_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([call_syntaxes/1, mf_registration/1, binary_and_atom_names/1,
         unregister_and_unknown/1, dunder_attributes/1,
         nest_20_one_thread/1, nest_20_bound_namespace/1,
         nest_20_all_workers_bound/1, concurrent_nested_callers/1,
         code_runs_once/1, values_erlang_to_python/1,
         values_python_to_erlang/1, values_round_trip/1,
         erlang_error_caught/1, erlang_error_uncaught/1,
         send_and_self/1, pids_round_trip/1,
         python_threads/1, thread_pool_executor/1,
         state_both_sides/1, state_concurrent_counter/1,
         timeout_during_callback/1, call_async_callback/1]).
%% used through py:register_function/3
-export([mf_sum/1, mf_describe/1]).

-define(E, "__import__('erlang')").

all() ->
    [{group, registration}, {group, nesting}, {group, values},
     {group, errors}, {group, messages}, {group, threads},
     {group, state}, {group, timing}].

groups() ->
    [{registration, [], [call_syntaxes, mf_registration, binary_and_atom_names,
                         unregister_and_unknown, dunder_attributes]},
     {nesting, [], [nest_20_one_thread, nest_20_bound_namespace,
                    nest_20_all_workers_bound, concurrent_nested_callers,
                    code_runs_once]},
     {values, [], [values_erlang_to_python, values_python_to_erlang,
                   values_round_trip]},
     {errors, [], [erlang_error_caught, erlang_error_uncaught]},
     {messages, [], [send_and_self, pids_round_trip]},
     {threads, [], [python_threads, thread_pool_executor]},
     {state, [], [state_both_sides, state_concurrent_counter]},
     {timing, [], [timeout_during_callback, call_async_callback]}].

init_per_suite(Config) ->
    Config1 = py_test_lib:start_suite(Config, fun(DataDir) -> [{python_path, [DataDir]}] end),
    %% The helpers module is importable on the workers.
    {ok, <<"cb_helpers">>} = py:eval(<<"__import__('cb_helpers').__name__">>),
    Config1.

end_per_suite(Config) ->
    ok = py_test_lib:stop_suite(Config).

init_per_testcase(_Case, Config) ->
    ok = register_chain(),
    Config.

end_per_testcase(_Case, _Config) ->
    %% Every test leaves the pool idle and fully available.
    case catch py_test_lib:wait_pool_idle(4, 1000) of
        ok -> ok;
        NotIdle -> {fail, NotIdle}
    end.

%%====================================================================
%% Registration and call syntaxes
%%====================================================================

%% erlang.call('name', ...), erlang.name(...) and `from erlang import name'.
call_syntaxes(_Config) ->
    ok = py:register_function(cb_square, fun([X]) -> X * X end),
    ok = py:register_function(cb_args, fun(Args) -> Args end),
    ?assertEqual({ok, 49}, py:eval(<<?E ".call('cb_square', 7)">>)),
    ?assertEqual({ok, 64}, py:eval(<<?E ".cb_square(8)">>)),
    ?assertEqual({ok, 81}, exec_result(<<"from erlang import cb_square\n"
                                          "result = cb_square(9)\n">>)),
    ?assertEqual({ok, 100}, exec_result(<<"import erlang\n"
                                          "result = erlang.cb_square(10)\n">>)),
    %% The fun gets the list of the Python arguments, in order.
    ?assertEqual({ok, []}, py:eval(<<?E ".cb_args()">>)),
    ?assertEqual({ok, [1, <<"two">>, 3.0]}, py:eval(<<?E ".call('cb_args', 1, 'two', 3.0)">>)),
    ?assertEqual({ok, [[1, 2], #{<<"k">> => none}]},
                 py:eval(<<?E ".cb_args([1, 2], {'k': None})">>)),
    %% Locals reach the callback as arguments.
    ?assertEqual({ok, 1764}, py:eval(<<?E ".cb_square(x)">>, #{x => 42})),
    %% erlang.call needs a str name.
    ?assertMatch({error, {'TypeError', _}}, py:eval(<<?E ".call(42)">>)).

%% py:register_function(Name, Module, Function) calls Module:Function(Args).
mf_registration(_Config) ->
    ok = py:register_function(cb_mf_sum, ?MODULE, mf_sum),
    ok = py:register_function(<<"cb_mf_describe">>, ?MODULE, mf_describe),
    ?assertEqual({ok, 6}, py:eval(<<?E ".cb_mf_sum(1, 2, 3)">>)),
    ?assertEqual({ok, 0}, py:eval(<<?E ".call('cb_mf_sum')">>)),
    ?assertEqual({ok, 2 bsl 100}, py:eval(<<?E ".cb_mf_sum(2**100, 2**100)">>)),
    ?assertEqual({ok, {3, <<"abc">>}},
                 py:eval(<<?E ".cb_mf_describe('a', 'b', 'c')">>)),
    %% Re-registering a name replaces its handler.
    ok = py:register_function(cb_mf_sum, fun(Args) -> {replaced, length(Args)} end),
    ?assertEqual({ok, {<<"replaced">>, 2}}, py:eval(<<?E ".cb_mf_sum(1, 2)">>)).

mf_sum(Args) -> lists:sum(Args).

mf_describe(Args) -> {length(Args), iolist_to_binary(Args)}.

%% Names may be atoms or binaries; both name one function.
binary_and_atom_names(_Config) ->
    ok = py:register_function(<<"cb_bin_name">>, fun(_) -> from_binary end),
    ok = py:register_function(cb_atom_name, fun(_) -> from_atom end),
    ?assertEqual({ok, <<"from_binary">>}, py:eval(<<?E ".cb_bin_name()">>)),
    ?assertEqual({ok, <<"from_binary">>}, py:eval(<<?E ".call('cb_bin_name')">>)),
    ?assertEqual({ok, <<"from_atom">>}, py:eval(<<?E ".cb_atom_name()">>)),
    %% A non-ASCII name.
    ok = py:register_function(<<"cb_grüße"/utf8>>, fun([X]) -> X + 1 end),
    ?assertEqual({ok, 2}, py:eval(<<?E ".call('cb_grüße', 1)"/utf8>>)),
    %% The binary of an atom's name unregisters it, and vice versa.
    ok = py:unregister_function(<<"cb_atom_name">>),
    ok = py:unregister_function(cb_bin_name),
    ?assertMatch({error, {'NameError', _}}, py:eval(<<?E ".cb_atom_name()">>)),
    ?assertMatch({error, {'NameError', _}}, py:eval(<<?E ".cb_bin_name()">>)),
    ok = py:unregister_function(<<"cb_grüße"/utf8>>).

%% After unregister_function the name raises NameError in Python (caught
%% there, or at the caller as {error, {'NameError', _}}); unknown names too.
unregister_and_unknown(_Config) ->
    ok = py:register_function(cb_temp, fun(_) -> here end),
    ?assertEqual({ok, <<"here">>}, py:eval(<<?E ".cb_temp()">>)),
    ok = py:unregister_function(cb_temp),
    ?assertMatch({error, {'NameError', <<_/binary>>}}, py:eval(<<?E ".cb_temp()">>)),
    ?assertMatch({error, {'NameError', _}}, py:eval(<<?E ".call('cb_temp')">>)),
    ?assertMatch({error, {'NameError', _}},
                 exec_result(<<"from erlang import cb_temp\nresult = cb_temp()\n">>)),
    {error, {'NameError', Msg}} = py:eval(<<?E ".cb_never_registered_xyz(1)">>),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"cb_never_registered_xyz">>)),
    %% Catchable in Python as NameError.
    ?assertMatch({ok, [<<"NameError">>, _]},
                 py:call(cb_helpers, catch_call, [<<"cb_temp">>])),
    %% Unregistering an unknown name is fine, and the worker keeps serving.
    ok = py:unregister_function(cb_never_registered_xyz),
    ?assertEqual({ok, 3}, py:eval(<<"1 + 2">>)).

%% Introspection of the module does not turn dunder names into functions.
dunder_attributes(_Config) ->
    ?assertEqual({ok, false}, py:eval(<<"hasattr(" ?E ", '__wrapped__')">>)),
    ?assertEqual({ok, <<"dflt">>}, py:eval(<<"getattr(" ?E ", '__wrapped__', 'dflt')">>)),
    ?assertEqual({ok, <<"erlang">>}, py:eval(<<?E ".__name__">>)),
    ?assertMatch({error, {'AttributeError', _}}, py:eval(<<?E ".__wrapped__">>)),
    %% inspect.unwrap and doctest-style probing work on the module.
    ?assertEqual({ok, true},
                 py:eval(<<"__import__('inspect').unwrap(" ?E ") is " ?E>>)),
    ?assertEqual({ok, true}, py:eval(<<"callable(" ?E ".anything_at_all)">>)).

%%====================================================================
%% Nesting
%%====================================================================

%% Python -> Erlang -> Python ... 20 callbacks deep (21 Python levels), every
%% level on the one OS thread of the worker that runs the outer call.
nest_20_one_thread(_Config) ->
    {ok, Levels} = py:call(cb_helpers, chain, [20, 7], #{}, 20000),
    assert_chain(7, 20, Levels),
    %% Several times, on whatever worker comes.
    [begin
         {ok, L} = py:call(cb_helpers, chain, [20, I]),
         assert_chain(I, 20, L)
     end || I <- lists:seq(1, 8)].

%% From a bound process: a variable set in the bound namespace before the
%% chain is seen at level 20 (the nested calls are plain py:eval).
nest_20_bound_namespace(_Config) ->
    Self = self(),
    ok = py:register_function(cb_ns_down,
        fun([N]) when N + 1 < 20 ->
                ?assertNotEqual(Self, self()), % served in a fresh process
                {ok, L} = py:eval(<<"[[n, marker, __import__('threading').get_ident()]]"
                                    " + " ?E ".cb_ns_down(n)">>, #{n => N + 1}),
                L;
           ([19]) ->
                {ok, L} = py:eval(<<"[[20, marker, __import__('threading').get_ident()]]">>),
                L
        end),
    ok = py:bind(),
    try
        Marker = <<"marker-", (integer_to_binary(erlang:unique_integer([positive])))/binary>>,
        ok = py:exec(<<"import threading\nmarker = m\nbound_tid = threading.get_ident()\n">>,
                     #{m => Marker}),
        {ok, Tid} = py:eval(<<"bound_tid">>),
        {ok, Levels} = py:eval(<<"[[1, marker, __import__('threading').get_ident()]]"
                                 " + " ?E ".cb_ns_down(1)">>, #{}, 20000),
        ?assertEqual([[N, Marker, Tid] || N <- lists:seq(1, 20)], Levels),
        %% A variable assigned at level 20 by exec is seen back at level 1.
        ok = py:register_function(cb_ns_set,
            fun([N]) when N < 20 ->
                    {ok, V} = py:eval(<<?E ".cb_ns_set(n)">>, #{n => N + 1}), V;
               ([20]) ->
                    ok = py:exec(<<"deep_value = 'set at 20'">>), 20
            end),
        ?assertEqual(ok, py:exec(<<"deep_seen = (" ?E ".cb_ns_set(1), deep_value)">>)),
        ?assertEqual({ok, {20, <<"set at 20">>}}, py:eval(<<"deep_seen">>))
    after
        py:unbind()
    end.

%% Every worker bound to a context: nesting 20 deep from one of them still
%% works, so the nested calls never need a second worker.
nest_20_all_workers_bound(_Config) ->
    #{num_workers := N} = py_pool:get_stats(),
    Ctxs = [begin {ok, C} = py:bind(new), C end || _ <- lists:seq(1, N)],
    try
        ?assertMatch(#{available_workers := 0}, py_pool:get_stats()),
        ?assertEqual({error, no_workers_available}, py:bind(new)),
        [begin
             {ok, L} = py:ctx_call(C, cb_helpers, chain, [20, I], #{}, 20000),
             assert_chain(I, 20, L)
         end || {I, C} <- lists:zip(lists:seq(1, N), Ctxs)]
    after
        [py:unbind(C) || C <- Ctxs]
    end.

%% 2 * num_workers + 2 callers at once on the default pool, each nesting 5
%% deep (and pausing at the bottom, so that every worker waits on a callback
%% at once): every caller gets its own, correct answer; no deadlock.
concurrent_nested_callers(_Config) ->
    ?assertMatch(#{num_workers := 4, available_workers := 4}, py_pool:get_stats()),
    Callers = 2 * 4 + 2,
    Parent = self(),
    Pids = [spawn_link(fun() ->
                               R = py:call(cb_helpers, chain, [5, I, 0.05], #{}, 30000),
                               Parent ! {chain_done, I, R}
                       end) || I <- lists:seq(1, Callers)],
    Results = [receive {chain_done, I, R} -> {I, R}
               after 30000 -> {I, no_answer_deadlock}
               end || I <- lists:seq(1, Callers)],
    [?assertMatch({I, {ok, _}}, {I, R}) || {I, R} <- Results],
    Tids = [begin assert_chain(I, 5, L), thread_of(L) end || {I, {ok, L}} <- Results],
    %% Served by the pool's threads: at most num_workers distinct threads.
    ?assert(length(lists:usort(Tids)) =< 4),
    [unlink(P) || P <- Pids],
    ok.

%% Python code before, between and after two callbacks runs exactly once
%% (one of the callbacks itself runs Python that logs once).
code_runs_once(_Config) ->
    Self = self(),
    ok = py:register_function(cb_once_a, fun([X]) -> Self ! {cb, once_a, X}, X + 1 end),
    ok = py:register_function(cb_once_b,
        fun([X]) ->
                Self ! {cb, once_b, X},
                {ok, none} = py:eval(<<?E ".send(p, ('log', 'inner'))">>, #{p => Self}),
                X * 10
        end),
    Code = <<"import erlang\n"
             "p = erlang.self()\n"
             "erlang.send(p, ('log', 'before'))\n"
             "erlang.state_incr('once_before')\n"
             "a = erlang.cb_once_a(1)\n"
             "erlang.send(p, ('log', 'between'))\n"
             "erlang.state_incr('once_between')\n"
             "b = erlang.cb_once_b(a)\n"
             "erlang.send(p, ('log', 'after'))\n"
             "erlang.state_incr('once_after')\n"
             "erlang.send(p, ('result', a, b))\n">>,
    Reps = 5,
    [py:state_remove(K) || K <- [once_before, once_between, once_after]],
    [?assertEqual(ok, py:exec(Code)) || _ <- lists:seq(1, Reps)],
    Msgs = drain(300),
    Logs = [L || {<<"log">>, L} <- Msgs],
    Cbs = [C || {cb, _, _} = C <- Msgs],
    Res = [R || {<<"result">>, _, _} = R <- Msgs],
    OneRun = [<<"before">>, <<"between">>, <<"inner">>, <<"after">>],
    ?assertEqual(lists:append(lists:duplicate(Reps, OneRun)), Logs),
    ?assertEqual(lists:append(lists:duplicate(Reps, [{cb, once_a, 1}, {cb, once_b, 2}])), Cbs),
    ?assertEqual(lists:duplicate(Reps, {<<"result">>, 2, 20}), Res),
    ?assertEqual(length(Logs) + length(Cbs) + length(Res), length(Msgs)),
    ?assertEqual({ok, Reps}, py:state_fetch(once_before)),
    ?assertEqual({ok, Reps}, py:state_fetch(once_between)),
    ?assertEqual({ok, Reps}, py:state_fetch(once_after)).

%%====================================================================
%% Values through a callback
%%====================================================================

%% What a callback returns reaches Python exactly (no text round trip).
values_erlang_to_python(_Config) ->
    Big = 1 bsl 200,
    Self = self(),
    Term = #{empty => [],
             nested => #{a => #{b => [1, #{}], c => {}}, <<"d">> => #{}},
             big => Big, neg_big => -Big,
             pid => Self,
             bin => <<"h\xc3\xa9llo">>, raw => <<255, 0, 1>>,
             float => 0.1, tiny => 5.0e-324, huge => 1.7976931348623157e308,
             tuple => {1, <<"x">>, {2.5, []}}, empty_tuple => {},
             bools => [true, false, none]},
    ok = py:register_function(cb_give, fun([]) -> Term end),
    Checks = <<"[name for name, ok in [\n"
               " ('empty', type(v['empty']) is list and v['empty'] == []),\n"
               " ('nested', v['nested'] == {'a': {'b': [1, {}], 'c': ()}, 'd': {}}),\n"
               " ('nested_types', type(v['nested']['a']['c']) is tuple and"
               "   type(v['nested']['a']['b'][1]) is dict),\n"
               " ('big', type(v['big']) is int and v['big'] == 2**200),\n"
               " ('neg_big', v['neg_big'] == -2**200),\n"
               " ('pid', isinstance(v['pid'], erlang.Pid) and v['pid'] == erlang.self()),\n"
               " ('bin', v['bin'] == 'h\\u00e9llo'),\n"
               " ('raw', v['raw'] == b'\\xff\\x00\\x01'),\n"
               " ('float', type(v['float']) is float and v['float'] == 0.1),\n"
               " ('tiny', v['tiny'] == 5e-324),\n"
               " ('huge', v['huge'] == 1.7976931348623157e308),\n"
               " ('tuple', v['tuple'] == (1, 'x', (2.5, []))),\n"
               " ('empty_tuple', v['empty_tuple'] == ()),\n"
               " ('bools', v['bools'] == [True, False, None]),\n"
               " ('keys', sorted(v) == sorted(['empty', 'nested', 'big', 'neg_big', 'pid',"
               "   'bin', 'raw', 'float', 'tiny', 'huge', 'tuple', 'empty_tuple', 'bools'])),\n"
               "] if not ok]">>,
    ?assertEqual({ok, []},
                 exec_result(<<"v = erlang.cb_give()\nresult = ", Checks/binary, "\n">>)),
    %% The same through the attribute syntax from an unbound eval.
    ?assertEqual({ok, true}, py:eval(<<?E ".cb_give()['empty'] == []">>)),
    ?assertEqual({ok, Big + 1}, py:eval(<<?E ".cb_give()['big'] + 1">>)).

%% What Python passes to a callback reaches the Erlang fun exactly.
values_python_to_erlang(_Config) ->
    Self = self(),
    ok = py:register_function(cb_take, fun(Args) -> Self ! {took, Args}, length(Args) end),
    Code = <<"import erlang\n"
             "result = erlang.cb_take([], {'a': {'b': [1, {}]}, 'c': ()}, 2**200, -2**200,\n"
             "    erlang.self(), b'\\xff\\x00', 'h\\u00e9llo', 0.1, (1, 'x', ()),\n"
             "    True, False, None, 1e300, [[[]]], {})\n">>,
    ?assertEqual({ok, 15}, exec_result(Code)),
    Expected = [[], #{<<"a">> => #{<<"b">> => [1, #{}]}, <<"c">> => {}},
                1 bsl 200, -(1 bsl 200), Self, <<255, 0>>, <<"h\xc3\xa9llo">>, 0.1,
                {1, <<"x">>, {}}, true, false, none, 1.0e300, [[[]]], #{}],
    Got = receive {took, A} -> A after 5000 -> no_callback end,
    ?assertEqual(Expected, Got),
    %% Exactness, term by term (=:= distinguishes 1 from 1.0).
    [?assert(E =:= G) || {E, G} <- lists:zip(Expected, Got)].

%% Erlang -> Python -> Erlang callback (echo) -> Python -> Erlang: unchanged.
values_round_trip(_Config) ->
    ok = py:register_function(cb_echo, fun([X]) -> X end),
    Other = spawn(fun() -> receive stop -> ok end end),
    Terms = [[], #{}, {}, [[]], #{<<"k">> => [#{}, {}], <<"n">> => #{<<"m">> => [1, [2, [3]]]}},
             1 bsl 200, -(1 bsl 200), 0, self(), Other, <<1, 2, 255>>, <<"text">>,
             <<>>, 0.1, -2.5e-300, {1, {2, {3, {}}}}, [{<<"a">>, 1}, {<<"b">>, 2.0}],
             true, false, none],
    [?assertEqual({ok, T}, py:call(cb_helpers, echo_via_erlang, [T])) || T <- Terms],
    {ok, All} = py:call(cb_helpers, echo_via_erlang, [Terms]),
    ?assert(All =:= Terms),
    Other ! stop.

%%====================================================================
%% Erlang errors in a callback
%%====================================================================

%% error/exit/throw in the fun raise erlang.ErlangError (an Exception) in
%% Python, catchable, with the Erlang reason in the message.
erlang_error_caught(_Config) ->
    ok = py:register_function(cb_badarith, fun([X]) -> X / 0 end),
    ok = py:register_function(cb_error, fun(_) -> error(badarith) end),
    ok = py:register_function(cb_exit, fun(_) -> exit(cb_exit_reason) end),
    ok = py:register_function(cb_throw, fun(_) -> throw(cb_thrown_ball) end),
    ok = py:register_function(cb_badmatch, fun([X]) -> {ok, _} = X end),
    Caught = fun(Name) ->
                     {ok, R} = py:call(cb_helpers, catch_call, [Name, 1]),
                     R
             end,
    [<<"ErlangError">>, M1, true] = Caught(<<"cb_badarith">>),
    ?assertNotEqual(nomatch, binary:match(M1, <<"badarith">>)),
    [<<"ErlangError">>, M2, true] = Caught(<<"cb_error">>),
    ?assertNotEqual(nomatch, binary:match(M2, <<"badarith">>)),
    ?assertNotEqual(nomatch, binary:match(M2, <<"error">>)),
    [<<"ErlangError">>, M3, true] = Caught(<<"cb_exit">>),
    ?assertNotEqual(nomatch, binary:match(M3, <<"cb_exit_reason">>)),
    ?assertNotEqual(nomatch, binary:match(M3, <<"exit">>)),
    [<<"ErlangError">>, M4, true] = Caught(<<"cb_throw">>),
    ?assertNotEqual(nomatch, binary:match(M4, <<"cb_thrown_ball">>)),
    ?assertNotEqual(nomatch, binary:match(M4, <<"throw">>)),
    [<<"ErlangError">>, M5, true] = Caught(<<"cb_badmatch">>),
    ?assertNotEqual(nomatch, binary:match(M5, <<"badmatch">>)),
    %% `except erlang.ErlangError as e' in plain code; execution goes on.
    ?assertEqual({ok, [true, <<"after">>]},
                 exec_result(<<"try:\n"
                               "    erlang.cb_error()\n"
                               "    result = 'not raised'\n"
                               "except erlang.ErlangError as e:\n"
                               "    result = ['badarith' in str(e)]\n"
                               "result.append('after')\n">>)).

%% Uncaught, the error reaches the caller as {error, {'ErlangError', Msg}};
%% the workers keep serving.
erlang_error_uncaught(_Config) ->
    ok = py:register_function(cb_error, fun(_) -> error(badarith) end),
    ok = py:register_function(cb_exit, fun(_) -> exit(cb_exit_reason) end),
    ok = py:register_function(cb_throw, fun(_) -> throw(cb_thrown_ball) end),
    Uncaught = fun(Code, Needle) ->
                       {error, {'ErlangError', Msg}} = py:eval(Code),
                       ?assert(is_binary(Msg)),
                       ?assertNotEqual(nomatch, binary:match(Msg, Needle))
               end,
    [begin
         Uncaught(<<?E ".cb_error()">>, <<"badarith">>),
         Uncaught(<<?E ".cb_exit()">>, <<"cb_exit_reason">>),
         Uncaught(<<?E ".cb_throw()">>, <<"cb_thrown_ball">>)
     end || _ <- lists:seq(1, 4)],
    %% Through a module function, and from inside a nested chain: the error
    %% propagates out of every level.
    ?assertMatch({error, {'ErlangError', _}},
                 py:call(cb_helpers, call_name, [<<"cb_error">>])),
    ?assertMatch({error, {'ErlangError', _}},
                 py:eval(<<"(lambda: " ?E ".cb_error())()">>)),
    ok = py:register_function(cb_deep_fail,
        fun([0]) -> error(badarith);
           ([N]) -> {ok, V} = py:eval(<<?E ".cb_deep_fail(n)">>, #{n => N - 1}), V
        end),
    {error, {'ErlangError', Deep}} = py:eval(<<?E ".cb_deep_fail(5)">>),
    ?assertNotEqual(nomatch, binary:match(Deep, <<"badarith">>)),
    %% The traceback of the failed call is reachable.
    ?assert(is_binary(py:last_traceback())),
    %% All workers still serve, callbacks too.
    ok = py:register_function(cb_fine, fun([X]) -> X + 1 end),
    Parent = self(),
    [spawn_link(fun() -> Parent ! {fine, I, py:eval(<<?E ".cb_fine(i)">>, #{i => I})} end)
     || I <- lists:seq(1, 8)],
    [receive {fine, I, R} -> ?assertEqual({ok, I + 1}, R) after 10000 -> error(no_answer) end
     || I <- lists:seq(1, 8)],
    ?assertMatch(#{num_workers := 4, available_workers := 4}, py_pool:get_stats()).

%%====================================================================
%% erlang.send, erlang.self, pids
%%====================================================================

%% erlang.send(pid, term) delivers to a process; erlang.self() is the caller.
send_and_self(_Config) ->
    Self = self(),
    ?assertEqual({ok, none},
                 py:eval(<<?E ".send(p, ('hello', 42, [1.5, None], 2**70))">>, #{p => Self})),
    ?assertEqual({<<"hello">>, 42, [1.5, none], 1 bsl 70},
                 receive M -> M after 5000 -> no_message end),
    %% To another process.
    Fwd = spawn_link(fun() -> receive M -> Self ! {forwarded, M} end end),
    ?assertEqual({ok, none}, py:eval(<<?E ".send(p, {'k': [1, ()]})">>, #{p => Fwd})),
    ?assertEqual({forwarded, #{<<"k">> => [1, {}]}},
                 receive {forwarded, _} = F -> F after 5000 -> no_message end),
    %% erlang.self() is the calling process.
    ?assertEqual({ok, Self}, py:eval(<<?E ".self()">>)),
    ?assertEqual({ok, true}, py:eval(<<?E ".self() == p">>, #{p => Self})),
    ?assertEqual({ok, false}, py:eval(<<?E ".self() == p">>, #{p => Fwd})),
    %% A bad pid argument is a TypeError, not a crash.
    ?assertMatch({error, {'TypeError', _}}, py:eval(<<?E ".send('nopid', 1)">>)),
    ?assertEqual([], drain(100)).

%% Pids passed to Python and through a callback come back as the same pid.
pids_round_trip(_Config) ->
    Self = self(),
    Other = spawn_link(fun() -> receive stop -> ok end end),
    ok = py:register_function(cb_pid_back,
        fun([P]) -> Self ! {cb_got, P}, {P, is_pid(P)} end),
    ?assertEqual({ok, {Other, true}}, py:eval(<<?E ".cb_pid_back(p)">>, #{p => Other})),
    ?assertEqual({cb_got, Other}, receive {cb_got, _} = G -> G after 5000 -> none end),
    ?assertEqual({ok, [true, true]},
                 py:eval(<<"(lambda r: [r[0] == p, isinstance(r[0], " ?E ".Pid)])"
                           "(" ?E ".cb_pid_back(p))">>, #{p => Other})),
    ?assertEqual({cb_got, Other}, receive {cb_got, _} = G2 -> G2 after 5000 -> none end),
    %% A pid sent back by Python through erlang.send is usable.
    {ok, none} = py:eval(<<?E ".send(me, ('pid', p))">>, #{me => Self, p => Other}),
    {<<"pid">>, P2} = receive {<<"pid">>, _} = PM -> PM after 5000 -> error(no_pid) end,
    ?assertEqual(Other, P2),
    P2 ! stop,
    timer:sleep(50),
    ?assertNot(is_process_alive(Other)).

%%====================================================================
%% Callbacks from Python threads
%%====================================================================

%% 5 threading.Threads call an Erlang function at once; each gets its own
%% answer, and the callbacks really ran concurrently.
python_threads(_Config) ->
    Tab = ets:new(cb_threads, [public, set]),
    true = ets:insert(Tab, {inflight, 0}),
    Self = self(),
    ok = py:register_function(cb_thread_fn,
        fun([I]) ->
                N = ets:update_counter(Tab, inflight, 1),
                Self ! {inflight, N},
                timer:sleep(200),
                _ = ets:update_counter(Tab, inflight, -1),
                [I, I * I]
        end),
    ?assertEqual({ok, [[I, I * I] || I <- lists:seq(0, 4)]},
                 py:call(cb_helpers, threads_call, [5], #{}, 20000)),
    Seen = [N || {inflight, N} <- drain(100)],
    ?assertEqual(5, length(Seen)),
    ?assert(lists:max(Seen) >= 2),
    %% Again, from a bound process (its namespace stays reachable).
    ok = py:bind(),
    try
        ?assertEqual({ok, [[I, I * I] || I <- lists:seq(0, 4)]},
                     py:call(cb_helpers, threads_call, [5], #{}, 20000))
    after
        py:unbind()
    end,
    _ = drain(0),
    ets:delete(Tab).

%% A ThreadPoolExecutor maps an Erlang function over 20 inputs.
thread_pool_executor(_Config) ->
    ok = py:register_function(square, fun([X]) -> X * X end),
    ?assertEqual({ok, [I * I || I <- lists:seq(0, 19)]},
                 py:call(cb_helpers, pool_map, [20], #{}, 20000)),
    %% A callback from a thread may itself call Python (on some worker).
    ok = py:register_function(cb_thread_nested,
        fun([X]) -> {ok, V} = py:eval(<<"x * 3">>, #{x => X}), V end),
    ?assertEqual({ok, [I * 3 || I <- lists:seq(0, 19)]},
                 py:call(cb_helpers, pool_map, [20, 4, <<"cb_thread_nested">>], #{}, 20000)).

%%====================================================================
%% Shared state
%%====================================================================

state_both_sides(_Config) ->
    ok = py:state_clear(),
    ?assertEqual([], py:state_keys()),
    ?assertEqual({error, not_found}, py:state_fetch(sb_a)),
    %% Erlang stores, Python reads (atom key and str key are one key).
    ok = py:state_store(sb_a, #{x => [1, 2], y => 1 bsl 100}),
    ?assertEqual({ok, #{<<"x">> => [1, 2], <<"y">> => 1 bsl 100}},
                 py:eval(<<?E ".state_get('sb_a')">>)),
    ?assertEqual({ok, #{x => [1, 2], y => 1 bsl 100}}, py:state_fetch(sb_a)),
    ?assertEqual({ok, #{x => [1, 2], y => 1 bsl 100}}, py:state_fetch(<<"sb_a">>)),
    %% Python stores, Erlang reads.
    ?assertEqual({ok, none}, py:eval(<<?E ".state_set('sb_b', [1, (2, 'z'), {'k': None}])">>)),
    ?assertEqual({ok, [1, {2, <<"z">>}, #{<<"k">> => none}]}, py:state_fetch(sb_b)),
    %% Defaults and deletes.
    ?assertEqual({ok, none}, py:eval(<<?E ".state_get('sb_missing')">>)),
    ?assertEqual({ok, 17}, py:eval(<<?E ".state_get('sb_missing', 17)">>)),
    ok = py:state_store(sb_none, none),
    ?assertEqual({ok, none}, py:eval(<<?E ".state_get('sb_none', 5)">>)),
    ?assertEqual({ok, none}, py:eval(<<?E ".state_delete('sb_b')">>)),
    ?assertEqual({error, not_found}, py:state_fetch(sb_b)),
    ok = py:state_remove(sb_none),
    ?assertEqual({ok, 5}, py:eval(<<?E ".state_get('sb_none', 5)">>)),
    %% Keys, from both sides.
    ok = py:state_store(<<"sb_c">>, 3),
    ?assertEqual([<<"sb_a">>, <<"sb_c">>], lists:sort(py:state_keys())),
    ?assertEqual({ok, [<<"sb_a">>, <<"sb_c">>]}, py:eval(<<"sorted(" ?E ".state_keys())">>)),
    %% Counters from both sides.
    ?assertEqual(1, py:state_incr(sb_n)),
    ?assertEqual({ok, 11}, py:eval(<<?E ".state_incr('sb_n', 10)">>)),
    ?assertEqual({ok, 12}, py:eval(<<?E ".state_incr('sb_n')">>)),
    ?assertEqual(10, py:state_decr(sb_n, 2)),
    ?assertEqual({ok, 9}, py:eval(<<?E ".state_decr('sb_n')">>)),
    ?assertEqual({ok, 6}, py:eval(<<?E ".state_decr('sb_n', 3)">>)),
    ?assertEqual(5, py:state_decr(sb_n)),
    ?assertEqual({ok, 5}, py:state_fetch(<<"sb_n">>)),
    ?assertEqual(-1, py:state_decr(sb_fresh, 1)),
    %% Clear from Python, then from Erlang.
    ?assertEqual({ok, none}, py:eval(<<?E ".state_clear()">>)),
    ?assertEqual([], py:state_keys()),
    ok = py:state_store(sb_d, 1),
    ok = py:state_clear(),
    ?assertEqual({ok, []}, py:eval(<<?E ".state_keys()">>)).

%% 20 processes add 100 each to one counter, half through py:state_incr,
%% half through Python's erlang.state_incr: exactly 2000, and every value
%% from 1 to 2000 was handed out once.
state_concurrent_counter(_Config) ->
    ok = py:state_remove(sc_counter),
    Parent = self(),
    Procs = 20,
    Worker = fun() ->
                     Vals = lists:append(
                              [begin
                                   Es = [py:state_incr(sc_counter) || _ <- lists:seq(1, 5)],
                                   {ok, Ps} = py:eval(<<"[" ?E ".state_incr('sc_counter')"
                                                        " for _ in range(5)]">>),
                                   Es ++ Ps
                               end || _ <- lists:seq(1, 10)]),
                     Parent ! {incr_done, self(), Vals}
             end,
    Pids = [spawn_link(Worker) || _ <- lists:seq(1, Procs)],
    All = lists:append([receive {incr_done, P, V} -> V after 30000 -> error(no_answer) end
                        || P <- Pids]),
    ?assertEqual({ok, 2000}, py:state_fetch(sc_counter)),
    ?assertEqual({ok, 2000}, py:eval(<<?E ".state_get('sc_counter')">>)),
    ?assertEqual(lists:seq(1, 2000), lists:sort(All)),
    ok = py:state_remove(sc_counter).

%%====================================================================
%% Timeouts and async
%%====================================================================

%% The outer call times out (200 ms) while Python waits for a callback that
%% takes 2 s: {error, timeout} within 1.5 s, nothing lands in the caller's
%% mailbox afterwards, the pool is idle again and the next call works.
timeout_during_callback(_Config) ->
    ok = py:register_function(cb_slow, fun(_) -> timer:sleep(2000), slow_done end),
    ok = py:register_function(square_t, fun([X]) -> X * X end),
    Parent = self(),
    Caller = spawn_link(
               fun() ->
                       T0 = erlang:monotonic_time(millisecond),
                       R = py:eval(<<?E ".cb_slow()">>, #{}, 200),
                       T1 = erlang:monotonic_time(millisecond),
                       timer:sleep(2500),
                       %% (what is in transit, too: see py_stream_SUITE:queued/1)
                       receive '$py_test_matches_nothing' -> ok after 0 -> ok end,
                       {messages, Late} = process_info(self(), messages),
                       Stats = py_pool:get_stats(),
                       Next = py:eval(<<?E ".call('square_t', 12)">>),
                       Parent ! {timeout_report, T1 - T0,
                                 #{result => R,
                                   %% the elapsed time only when not within 1.5 s
                                   returned => within(T1 - T0, 1500),
                                   late_messages => Late,
                                   pending_requests => maps:get(pending_requests, Stats),
                                   available_workers => maps:get(available_workers, Stats),
                                   next_call => Next}}
               end),
    {Elapsed, Observed} = receive {timeout_report, E, Rep} -> {E, Rep}
                          after 15000 -> error(no_report)
                          end,
    unlink(Caller),
    ct:log("timeout_during_callback: returned after ~p ms", [Elapsed]),
    ?assertEqual(#{result => {error, timeout},
                   returned => within_1500_ms,
                   late_messages => [],
                   pending_requests => 0,
                   available_workers => 4,
                   next_call => {ok, 144}}, Observed).

%% call_async of a function that calls back into Erlang: the callback is
%% served by the runner (not the caller), nesting still works, await gets
%% the answer, and the caller's mailbox stays clean.
call_async_callback(_Config) ->
    Self = self(),
    ok = py:register_function(cb_who, fun([X]) -> [X, self()] end),
    ok = py:register_function(cb_echo, fun([X]) -> X end),
    Ref1 = py:call_async(cb_helpers, catch_call, [<<"cb_who">>, 5]),
    {ok, [<<"ok">>, [5, Server]]} = py:await(Ref1, 10000),
    ?assert(is_pid(Server)),
    ?assertNotEqual(Self, Server),
    Ref2 = py:call_async(cb_helpers, echo_via_erlang, [#{<<"a">> => [1 bsl 200, {}]}]),
    ?assertEqual({ok, #{<<"a">> => [1 bsl 200, {}]}}, py:await(Ref2, 10000)),
    %% Several at once, each nesting 5 deep through the runner.
    Refs = [{I, py:call_async(cb_helpers, chain, [5, I])} || I <- lists:seq(1, 6)],
    [begin
         {ok, L} = py:await(R, 20000),
         assert_chain(I, 5, L)
     end || {I, R} <- Refs],
    %% An Erlang error in an async callback reaches await as an error.
    ok = py:register_function(cb_async_fail, fun(_) -> error(badarith) end),
    {error, {'ErlangError', Msg}} =
        py:await(py:call_async(cb_helpers, call_name, [<<"cb_async_fail">>]), 10000),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"badarith">>)),
    ?assertEqual([], drain(100)).

%%====================================================================
%% Helpers
%%====================================================================

%% erlang.chain_down(n, tag, pause) -> cb_helpers.chain(n - 1, tag, pause)
register_chain() ->
    py:register_function(chain_down,
        fun([N, Tag | Pause]) ->
                {ok, L} = py:call(cb_helpers, chain, [N - 1, Tag | Pause], #{}, 20000),
                L
        end).

%% Levels from cb_helpers.chain(Depth, Tag): Depth..0 in order, one thread.
assert_chain(Tag, Depth, Levels) ->
    ?assertEqual(Depth + 1, length(Levels)),
    ?assertEqual([[Tag, N] || N <- lists:seq(Depth, 0, -1)],
                 [[T, N] || [T, N, _] <- Levels]),
    ?assertEqual(1, length(lists:usort([Tid || [_, _, Tid] <- Levels]))).

thread_of([[_, _, Tid] | _]) -> Tid.

within(Ms, Limit) when Ms < Limit -> list_to_atom("within_" ++ integer_to_list(Limit) ++ "_ms");
within(Ms, _Limit) -> {returned_after_ms, Ms}.

%% Runs statements (with `erlang' imported) on a fresh context and returns
%% the value they leave in `result'.
exec_result(Code) ->
    py:with_context(
      fun(Ctx) ->
              case py:ctx_exec(Ctx, [<<"import erlang\n">>, Code]) of
                  ok -> py:ctx_eval(Ctx, <<"result">>);
                  Error -> Error
              end
      end).

%% All messages arriving until none came for Quiet ms.
drain(Quiet) ->
    receive M -> [M | drain(Quiet)]
    after Quiet -> []
    end.
