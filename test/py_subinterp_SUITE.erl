%% The two execution modes (docs/scalability.md).  Each case holds in both:
%% with a shared GIL (Python 3.11, the default build) it checks the shared
%% behaviour, with own-GIL sub-interpreters (Python 3.13, execution_mode
%% auto) the isolated one.
-module(py_subinterp_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([mode_reported/1, other_mode_refused/1, stuck_worker_isolated/1,
         extension_refused/1, state_isolated/1, parallel_interpreters/1]).
-export([peer_stuck/0, peer_other_mode/1]).

-define(H, subinterp_helpers).
-define(NUM_WORKERS, 4).
-define(GRACE_MS, 500).

suite() ->
    [{timetrap, {seconds, 120}}].

all() ->
    [mode_reported, other_mode_refused, stuck_worker_isolated, extension_refused,
     state_isolated, parallel_interpreters].

env(DataDir) ->
    [{num_workers, ?NUM_WORKERS}, {python_path, [DataDir]}, {cancel_grace_ms, ?GRACE_MS}].

init_per_suite(Config) ->
    py_test_lib:start_suite(Config, fun env/1).

end_per_suite(Config) ->
    _ = py_test_lib:stop_suite(Config),
    ok.

init_per_testcase(_Case, Config) ->
    ok = py_test_lib:ensure_pool_idle(?NUM_WORKERS, 10000),
    Config.

end_per_testcase(_Case, _Config) ->
    py_test_lib:recover_pool(?NUM_WORKERS, 10000).

sub() ->
    py_test_lib:subinterp_mode().

%%====================================================================

%% execution_mode auto picks sub-interpreters on 3.13+, and the three
%% functions tell the truth.
mode_reported(_Config) ->
    Minor = py_test_lib:python_minor(),
    ?assertEqual(Minor >= 12, py:subinterp_supported()),
    ?assertEqual(case Minor >= 13 of true -> subinterp; false -> multi_executor end,
                 py:execution_mode()),
    ?assertEqual(?NUM_WORKERS, py:num_executors()),
    {comment, io_lib:format("Python 3.~b: ~p", [Minor, py:execution_mode()])}.

%% Asking for the other mode: on 3.11, subinterp is a clear start-up error;
%% once Python runs in one mode, a restart in the other is refused (the
%% interpreter lives as long as the VM).  In a peer, which starts Python
%% in the mode this VM has, then asks for the other.
other_mode_refused(Config) ->
    Other = case sub() of true -> shared_gil; false -> subinterp end,
    R = py_test_lib:in_peer(env(?config(data_dir, Config)), 30000,
                            fun(Call) -> Call(?MODULE, peer_other_mode, [Other]) end),
    {{error, Err}, ok} = R,
    Text = unicode:characters_to_binary(io_lib:format("~p", [Err])),
    ct:pal("~p refused: ~s", [Other, Text]),
    ?assertMatch({_, _}, binary:match(Text, <<"{execution_mode,", (atom_to_binary(Other))/binary>>)),
    case {Other, py_test_lib:python_minor()} of
        {subinterp, 11} -> ?assertMatch({_, _}, binary:match(Text, <<"needs Python 3.12">>));
        _ -> ?assertMatch({_, _}, binary:match(Text, <<"cannot change">>))
    end.

%% Stops the application, starts it asking for Other (refused), then as
%% before: {StartResult, ok}.
peer_other_mode(Other) ->
    ok = application:stop(erlang_python),
    ok = application:set_env(erlang_python, execution_mode, Other),
    Refused = application:start(erlang_python),
    {Refused, started_again()}.

%% After the refusal, the mode it runs in still starts.
started_again() ->
    ok = application:unset_env(erlang_python, execution_mode),
    ok = application:start(erlang_python),
    {ok, 2} = py:eval(<<"1 + 1">>),
    ok.

%% sum(range(10**10)) runs ~100 s in C holding its GIL.  Its caller gets
%% {error, timeout} on time; 200 calls made meanwhile are all answered
%% (with a shared GIL they would all time out); the stuck worker is
%% abandoned after the grace period and replaced, so that every worker can
%% be bound again.  In a peer, whose end ends the loop.  (Sub-interpreters
%% only: with a shared GIL nothing else can answer meanwhile, the limit
%% docs/scalability.md states; test/run_ct.escript excludes it there.)
stuck_worker_isolated(Config) ->
    R = py_test_lib:in_peer(env(?config(data_dir, Config)), 60000,
                            fun(Call) -> Call(?MODULE, peer_stuck, []) end),
    ct:pal("stuck worker: ~p", [R]),
    #{stuck := {{error, timeout}, StuckMs}, others := Others, replaced := Replaced,
      all_bind := ok} = R,
    ?assert(StuckMs >= 100 andalso StuckMs < 2000, {stuck_ms, StuckMs}),
    ?assertEqual(lists:duplicate(200, ok), Others),
    ?assertEqual(1, Replaced),
    {comment, io_lib:format("others' median ~p us", [maps:get(median_us, R)])}.

peer_stuck() ->
    Self = self(),
    Workers = py_test_lib:worker_ids(),
    spawn(fun() ->
                  T0 = erlang:monotonic_time(millisecond),
                  R = py:eval(<<"sum(range(10**10))">>, #{}, 100),
                  Self ! {stuck, R, erlang:monotonic_time(millisecond) - T0}
          end),
    timer:sleep(20), % the loop has started
    Callers = [spawn_monitor(fun() ->
                                     exit({done, [call_timed(I * 100 + J) || J <- lists:seq(1, 50)]})
                             end) || I <- lists:seq(1, 4)],
    Timed = lists:append([receive {'DOWN', M, process, P, {done, L}} -> L end
                          || {P, M} <- Callers]),
    Stuck = receive {stuck, R, Ms} -> {R, Ms} after 10000 -> no_answer end,
    ok = py_test_lib:wait_until(fun() -> {length(Workers -- py_test_lib:worker_ids()) =:= 1,
                                          py_test_lib:worker_ids()}
                                end, 10000, not_replaced),
    ok = py_test_lib:wait_pool_idle(?NUM_WORKERS, 10000),
    Sorted = lists:sort([Us || {_, Us} <- Timed]),
    #{stuck => Stuck,
      others => [Res || {Res, _} <- Timed],
      median_us => lists:nth(length(Sorted) div 2, Sorted),
      replaced => length(Workers -- py_test_lib:worker_ids()),
      all_bind => py_test_lib:all_workers_answer(?NUM_WORKERS)}.

call_timed(X) ->
    T0 = erlang:monotonic_time(microsecond),
    R = py:eval(<<"x * 2">>, #{x => X}, 5000),
    {case R of {ok, V} when V =:= 2 * X -> ok; _ -> R end,
     erlang:monotonic_time(microsecond) - T0}.

%% A single-phase C extension, built here against the embedded Python:
%% refused in a sub-interpreter with an ImportError naming the module and
%% the mode (then everything still works), loaded with a shared GIL.
extension_refused(Config) ->
    Priv = ?config(priv_dir, Config),
    Src = filename:join(?config(data_dir, Config), "legacy_ext.c"),
    {ok, [Inc, Suffix]} = py:eval(<<"[__import__('sysconfig').get_paths()['include'], "
                                    "__import__('sysconfig').get_config_var('EXT_SUFFIX')]">>),
    So = filename:join(Priv, "legacy_ext" ++ binary_to_list(Suffix)),
    Out = os:cmd("gcc -shared -fPIC -I" ++ binary_to_list(Inc) ++ " -o " ++ So ++ " " ++ Src ++
                 " 2>&1"),
    ?assert(filelib:is_regular(So), {gcc, Out}),
    Load = <<"import importlib.util\n"
             "spec = importlib.util.spec_from_file_location('legacy_ext', path)\n"
             "mod = importlib.util.module_from_spec(spec)\n"
             "spec.loader.exec_module(mod)\n"
             "mod.__name__">>,
    R = py:eval(Load, #{path => unicode:characters_to_binary(So)}),
    ct:pal("~p", [R]),
    case sub() of
        true ->
            {error, {'ImportError', Msg}} = R,
            [?assertMatch({_, _}, binary:match(Msg, Part))
             || Part <- [<<"legacy_ext">>, <<"execution_mode subinterp">>, <<"shared_gil">>]],
            %% a builtin module that cannot load says the same
            {error, {'ImportError', Msg2}} = py:eval(<<"__import__('_tracemalloc')">>),
            ?assertMatch({_, _}, binary:match(Msg2, <<"execution_mode subinterp">>));
        false ->
            ?assertEqual({ok, <<"legacy_ext">>}, R)
    end,
    %% nothing broke
    ok = py_test_lib:all_workers_answer(?NUM_WORKERS).

%% What one interpreter's code does to a module is seen only in that
%% interpreter (sub-interpreters), or by every worker (shared GIL); a
%% binding's namespace is wiped for the next holder in both.
state_isolated(_Config) ->
    {ok, A} = py:bind(new),
    {ok, B} = py:bind(new),
    try
        ok = py:ctx_exec(A, <<"import json\njson.marked_by_a = 1\nsecret = 42\n">>),
        ?assertEqual({ok, not sub()},
                     py:ctx_eval(B, <<"hasattr(__import__('json'), 'marked_by_a')">>)),
        ?assertEqual({ok, false}, py:ctx_eval(B, <<"'secret' in globals()">>))
    after
        ok = py:unbind(B),
        ok = py:unbind(A)
    end,
    %% every worker, A's included, starts its next binding with a clean namespace
    Ctxs = [begin {ok, C} = py:bind(new), C end || _ <- lists:seq(1, ?NUM_WORKERS)],
    try
        ?assertEqual(lists:duplicate(?NUM_WORKERS, {ok, false}),
                     [py:ctx_eval(C, <<"'secret' in globals()">>) || C <- Ctxs])
    after
        [py:unbind(C) || C <- Ctxs]
    end,
    ok = py_test_lib:exec_everywhere(?NUM_WORKERS,
                                     <<"import json\njson.__dict__.pop('marked_by_a', None)\n">>, #{}).

%% py:parallel/1 runs its calls on separate interpreters (sub-interpreters)
%% or separate workers of one interpreter (shared GIL).
parallel_interpreters(_Config) ->
    {ok, Rs} = py:parallel([{?H, interp_token, [0.2]} || _ <- lists:seq(1, ?NUM_WORKERS)]),
    Tokens = lists:usort([T || {ok, T} <- Rs]),
    ?assertEqual(?NUM_WORKERS, length(Rs)),
    ?assertEqual(case sub() of true -> ?NUM_WORKERS; false -> 1 end, length(Tokens)).
