%% Core API of erlang_python: call/eval/exec, async, streams, locals,
%% type conversion both ways, errors, timeouts, bad input, load,
%% extension modules and application restart.
%%
%% Python helpers live in py_core_SUITE_data/py_core_helpers.py; the data
%% dir is put on sys.path of every worker through the `python_path'
%% application env.
-module(py_core_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, suite/0,
         init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).

-export([call_basic/1,
         call_names/1,
         call_kwargs/1,
         call_timeout_arg/1,
         call_main_bound/1,
         eval_basic/1,
         exec_basic/1,
         async_call_await/1,
         async_errors/1,
         stream_generator/1,
         stream_eval/1,
         version/1,
         locals_do_not_leak/1,
         exec_namespace_shared/1,
         types_integers/1,
         types_floats/1,
         types_atoms/1,
         types_binaries/1,
         types_containers/1,
         types_pids/1,
         types_sets_bytes_fallback/1,
         errors_builtin_types/1,
         errors_custom_and_traceback/1,
         errors_system_exit_keyboard_interrupt/1,
         errors_exception_atom_cap/1,
         timeout_busy_loop/1,
         timeout_cpu_loop/1,
         timeout_call_and_await/1,
         bad_input_terms/1,
         bad_input_arguments/1,
         bad_input_code/1,
         bad_input_names/1,
         bad_input_timeouts/1,
         load_concurrent_callers/1,
         load_big_ints/1,
         load_big_list/1,
         load_big_map/1,
         load_big_binary/1,
         load_deep_nesting/1,
         extension_modules/1,
         app_restart/1]).

-define(HELPERS, py_core_helpers).
-define(NUM_WORKERS, 4).

suite() ->
    [{timetrap, {seconds, 60}}].

all() ->
    [{group, core}, {group, types}, {group, errors}, {group, timeouts},
     {group, bad_input}, {group, load}, extension_modules,
     app_restart].

groups() ->
    [{core, [], [call_basic, call_names, call_kwargs, call_timeout_arg,
                 call_main_bound, eval_basic, exec_basic, async_call_await,
                 async_errors, stream_generator, stream_eval, version,
                 locals_do_not_leak, exec_namespace_shared]},
     {types, [], [types_integers, types_floats, types_atoms, types_binaries,
                  types_containers, types_pids, types_sets_bytes_fallback]},
     {errors, [], [errors_builtin_types, errors_custom_and_traceback,
                   errors_system_exit_keyboard_interrupt, errors_exception_atom_cap]},
     {timeouts, [], [timeout_busy_loop, timeout_cpu_loop,
                     timeout_call_and_await]},
     {bad_input, [], [bad_input_terms, bad_input_arguments, bad_input_code,
                      bad_input_names, bad_input_timeouts]},
     {load, [], [load_concurrent_callers, load_big_ints, load_big_list, load_big_map,
                 load_big_binary, load_deep_nesting]}].

%% The application env here and in peer nodes.
env(DataDir) ->
    [{num_workers, ?NUM_WORKERS}, {python_path, [DataDir]}].

init_per_suite(Config) ->
    py_test_lib:start_suite(Config, fun env/1).

end_per_suite(Config) ->
    _ = py_test_lib:stop_suite(Config),
    ok.

init_per_testcase(_Case, Config) ->
    Config.

end_per_testcase(_Case, _Config) ->
    _ = catch py:unbind(),
    ok.

%%====================================================================
%% Helpers
%%====================================================================

%% Runs Fun bound to one worker, always unbinding afterwards.
bound(Fun) ->
    ok = py:bind(),
    ?assert(py:is_bound()),
    try Fun() after ok = py:unbind() end.

no_stray_messages() ->
    py_test_lib:no_stray_messages(200).

%% The workers in service; equal before and after means none was replaced.
worker_ids() ->
    [{Id, Pid} || #{id := Id, pid := Pid} <- py_pool:workers()].

%% The pool is idle and whole: every worker in service and available.
assert_pool_idle(Workers) ->
    ?assertEqual(Workers, worker_ids()),
    assert_pool_idle().

assert_pool_idle() ->
    py_test_lib:assert_pool_idle(?NUM_WORKERS).

%% Every worker answers: more concurrent requests than workers, each one
%% sleeping a little so that they spread over the whole pool.
assert_pool_serves() ->
    Self = self(),
    N = ?NUM_WORKERS * 3,
    Pids = [spawn_link(fun() ->
                               R = py:eval(<<"(__import__('time').sleep(0.02), i * 3)[1]">>,
                                           #{i => I}),
                               Self ! {served, I, R}
                       end) || I <- lists:seq(1, N)],
    Results = [receive {served, I, R} -> R after 10000 -> {no_answer, I} end
               || I <- lists:seq(1, N)],
    ?assertEqual([{ok, I * 3} || I <- lists:seq(1, N)], Results),
    ?assertEqual(N, length(Pids)),
    ok.

%% Runs Fun(Call) against a fresh peer VM with the application started;
%% Call(M, F, A) runs there.  A peer crash is returned as {peer_down, _}.
in_peer(Fun) ->
    DataDir = hd(application:get_env(erlang_python, python_path, [""])),
    py_test_lib:in_peer(env(DataDir), 30000, Fun).

nest(0, Acc) -> Acc;
nest(N, Acc) -> nest(N - 1, [Acc]).

%%====================================================================
%% Core calls
%%====================================================================

call_basic(_Config) ->
    ?assertEqual({ok, 4.0}, py:call(math, sqrt, [16])),
    ?assertEqual({ok, 1024.0}, py:call(math, pow, [2, 10])),
    ?assertEqual({ok, 3}, py:call(builtins, len, [[a, b, c]])),
    ?assertEqual({ok, 7}, py:call(?HELPERS, add, [3, 4])),
    ?assertEqual({ok, 3}, py:call(?HELPERS, add, [3])),
    ?assertEqual({ok, none}, py:call(builtins, print, [<<>>], #{<<"end">> => <<>>})),
    %% failure: a wrong number of arguments
    ?assertMatch({error, {'TypeError', <<_/binary>>}}, py:call(math, sqrt, [])),
    ?assertMatch({error, {'TypeError', <<_/binary>>}}, py:call(math, sqrt, [1, 2])).

call_names(_Config) ->
    %% atom and binary module / function names, mixed
    ?assertEqual({ok, 4.0}, py:call(<<"math">>, <<"sqrt">>, [16])),
    ?assertEqual({ok, 4.0}, py:call(math, <<"sqrt">>, [16])),
    ?assertEqual({ok, 4.0}, py:call(<<"math">>, sqrt, [16])),
    %% dotted modules
    ?assertEqual({ok, <<"a/b">>}, py:call('os.path', join, [<<"a">>, <<"b">>])),
    ?assertEqual({ok, <<"c.txt">>}, py:call(<<"os.path">>, <<"basename">>, [<<"/a/b/c.txt">>])),
    ?assertEqual({ok, <<"{\"a\": 1}">>}, py:call(json, dumps, [#{a => 1}])),
    ?assertEqual({ok, <<"{\"a\": 1}">>}, py:call('json', <<"dumps">>, [#{<<"a">> => 1}])),
    %% unknown module / function
    ?assertMatch({error, {'ModuleNotFoundError', <<_/binary>>}},
                 py:call(no_such_module_xyz, f, [])),
    ?assertMatch({error, {'ModuleNotFoundError', <<_/binary>>}},
                 py:call('os.no_such_submodule_xyz', f, [])),
    ?assertMatch({error, {'AttributeError', <<_/binary>>}},
                 py:call(math, no_such_function_xyz, [])),
    ?assertMatch({error, {'AttributeError', <<_/binary>>}},
                 py:call(<<"os.path">>, <<"no_such_function_xyz">>, [])).

call_kwargs(_Config) ->
    ?assertEqual({ok, [3, 2, 1]}, py:call(builtins, sorted, [[3, 1, 2]], #{reverse => true})),
    ?assertEqual({ok, [3, 2, 1]},
                 py:call(builtins, sorted, [[3, 1, 2]], #{<<"reverse">> => true})),
    ?assertEqual({ok, 20}, py:call(?HELPERS, add, [1], #{b => 4, <<"scale">> => 4})),
    ?assertEqual({ok, [[1, <<"x">>], #{<<"k">> => [1, 2], <<"j">> => none}]},
                 py:call(?HELPERS, echo, [1, x], #{k => [1, 2], <<"j">> => undefined})),
    %% empty kwargs
    ?assertEqual({ok, [[], #{}]}, py:call(?HELPERS, echo, [], #{})),
    %% failure: an unexpected keyword
    ?assertMatch({error, {'TypeError', <<_/binary>>}},
                 py:call(?HELPERS, add, [1], #{nope => 1})),
    %% failure: a keyword given twice
    ?assertMatch({error, {'TypeError', <<_/binary>>}},
                 py:call(?HELPERS, add, [1, 2], #{b => 1})).

call_timeout_arg(_Config) ->
    ?assertEqual({ok, 7}, py:call(?HELPERS, add, [3, 4], #{}, 5000)),
    ?assertEqual({ok, 7}, py:call(?HELPERS, add, [3, 4], #{}, infinity)),
    ?assertEqual({ok, 12}, py:call(?HELPERS, add, [3, 3], #{scale => 2}, 5000)),
    ?assertMatch({error, {'ZeroDivisionError', _}},
                 py:call(operator, truediv, [1, 0], #{}, 5000)).

call_main_bound(_Config) ->
    bound(fun() ->
        ok = py:exec(<<"def double(x):\n    return x * 2\n"
                       "def greet(name, punct='!'):\n    return 'hi ' + name + punct\n">>),
        ?assertEqual({ok, 42}, py:call('__main__', double, [21])),
        ?assertEqual({ok, 42}, py:call(<<"__main__">>, <<"double">>, [21])),
        ?assertEqual({ok, <<"hi bob?">>},
                     py:call('__main__', greet, [<<"bob">>], #{punct => <<"?">>})),
        ?assertEqual({ok, <<"hi bob!">>}, py:call('__main__', greet, [bob], #{}, 5000)),
        %% redefinition is seen
        ok = py:exec(<<"def double(x):\n    return x * 3\n">>),
        ?assertEqual({ok, 63}, py:call('__main__', double, [21])),
        %% failure: not defined in this namespace
        ?assertMatch({error, {'NameError', <<_/binary>>}},
                     py:call('__main__', not_defined_here_xyz, [])),
        %% failure: defined but not callable
        ok = py:exec(<<"not_callable = 5">>),
        ?assertMatch({error, {'TypeError', <<_/binary>>}},
                     py:call('__main__', not_callable, []))
    end).

eval_basic(_Config) ->
    ?assertEqual({ok, 2}, py:eval(<<"1 + 1">>)),
    ?assertEqual({ok, [0, 2, 4, 6]}, py:eval(<<"[x * 2 for x in range(4)]">>)),
    %% iodata code
    ?assertEqual({ok, 3}, py:eval([<<"1 ">>, "+", [<<" 2">>]])),
    ?assertEqual({ok, 3}, py:eval("1 + 2")),
    %% UTF-8 source
    ?assertEqual({ok, <<"héllo"/utf8>>}, py:eval(<<"'héllo'"/utf8>>)),
    ?assertEqual({ok, 5}, py:eval(<<"len('héllo')"/utf8>>)),
    %% eval/2 and eval/3
    ?assertEqual({ok, 30}, py:eval(<<"a * b">>, #{a => 5, b => 6})),
    ?assertEqual({ok, 30}, py:eval(<<"a * b">>, #{<<"a">> => 5, <<"b">> => 6})),
    ?assertEqual({ok, 11}, py:eval(<<"a + 1">>, #{a => 10}, 5000)),
    ?assertEqual({ok, 11}, py:eval(<<"a + 1">>, #{a => 10}, infinity)),
    %% failure: statements are not expressions
    ?assertMatch({error, {'SyntaxError', <<_/binary>>}}, py:eval(<<"x = 1">>)),
    ?assertMatch({error, {'NameError', <<_/binary>>}}, py:eval(<<"undefined_name_xyz">>)).

exec_basic(_Config) ->
    ?assertEqual(ok, py:exec(<<"import os">>)),
    ?assertEqual(ok, py:exec(<<"x = 1\ny = x + 1\n">>)),
    ?assertEqual(ok, py:exec([<<"a = 1">>, $\n, "b = a + 1"])),
    ?assertEqual(ok, py:exec(<<"assert v == 3">>, #{v => 3})),
    ?assertEqual(ok, py:exec(<<"assert v == 3">>, #{v => 3}, 5000)),
    %% failures
    ?assertMatch({error, {'AssertionError', _}}, py:exec(<<"assert v == 3">>, #{v => 4})),
    ?assertMatch({error, {'SyntaxError', _}}, py:exec(<<"def (:">>)),
    ?assertMatch({error, {'ZeroDivisionError', _}}, py:exec(<<"1/0">>, #{}, 5000)),
    %% exec state persists on a bound worker, and an exec that fails half
    %% way keeps what ran before the failure
    bound(fun() ->
        ok = py:exec(<<"counter = 1">>),
        ok = py:exec(<<"counter += 1">>),
        ?assertEqual({ok, 2}, py:eval(<<"counter">>)),
        ?assertMatch({error, {'RuntimeError', <<"stop">>}},
                     py:exec(<<"counter = 10\nraise RuntimeError('stop')\ncounter = 20">>)),
        ?assertEqual({ok, 10}, py:eval(<<"counter">>))
    end).

async_call_await(_Config) ->
    R1 = py:call_async(math, sqrt, [16]),
    R2 = py:call_async(?HELPERS, add, [1, 2], #{scale => 10}),
    R3 = py:call_async(<<"os.path">>, <<"join">>, [<<"x">>, <<"y">>]),
    %% collected out of order
    ?assertEqual({ok, <<"x/y">>}, py:await(R3)),
    ?assertEqual({ok, 30}, py:await(R2, 5000)),
    ?assertEqual({ok, 4.0}, py:await(R1, infinity)),
    %% many in flight at once, each gets its own answer
    Refs = [{I, py:call_async(?HELPERS, add, [I, I])} || I <- lists:seq(1, 50)],
    Collected = [{I, py:await(R)} || {I, R} <- lists:reverse(Refs)],
    ?assertEqual([{I, {ok, 2 * I}} || I <- lists:seq(50, 1, -1)], Collected),
    ?assertEqual(ok, no_stray_messages()).

async_errors(_Config) ->
    ?assertMatch({error, {'AttributeError', _}}, py:await(py:call_async(math, nope_xyz, []))),
    ?assertMatch({error, {'ZeroDivisionError', _}},
                 py:await(py:call_async(operator, truediv, [1, 0]))),
    ?assertMatch({error, {'TypeError', _}},
                 py:await(py:call_async(?HELPERS, add, [1], #{bogus => 2}))),
    %% bad arguments are reported by await
    ?assertEqual({error, {badarg, args}}, py:await(py:call_async(math, sqrt, 16))),
    ?assertEqual({error, {badarg, kwargs}}, py:await(py:call_async(math, sqrt, [16], [x]))),
    ?assertEqual({error, {badarg, module}}, py:await(py:call_async(42, sqrt, [16]))),
    ?assertMatch({error, {'TypeError', _}},
                 py:await(py:call_async(builtins, len, [fun() -> ok end]))),
    ?assertEqual(ok, no_stray_messages()).

stream_generator(_Config) ->
    ?assertEqual({ok, [0, 1, 4, 9, 16]}, py:stream(?HELPERS, squares, [5])),
    ?assertEqual({ok, [100, 101, 104]}, py:stream(?HELPERS, squares, [3], #{offset => 100})),
    ?assertEqual({ok, [10, 11]}, py:stream(?HELPERS, squares, [2], #{<<"offset">> => 10})),
    ?assertEqual({ok, []}, py:stream(?HELPERS, squares, [0])),
    %% any iterable, not just generators
    ?assertEqual({ok, [0, 1, 2]}, py:stream(builtins, range, [3])),
    ?assertEqual({ok, [<<"a">>, <<"b">>]}, py:stream(builtins, iter, [[a, b]])),
    ?assertEqual({ok, [<<"x">>, <<"y">>]}, py:stream(<<"builtins">>, <<"sorted">>, [[y, x]])),
    %% failures: an error in the middle, a non-iterable, unknown function
    ?assertMatch({error, {'ValueError', <<"stream broke">>}},
                 py:stream(?HELPERS, squares_then_fail, [3])),
    ?assertMatch({error, {'TypeError', _}}, py:stream(builtins, abs, [-3])),
    ?assertMatch({error, {'AttributeError', _}}, py:stream(?HELPERS, nope_xyz, [])),
    ?assertEqual({error, {badarg, args}}, py:stream(?HELPERS, squares, 3)).

stream_eval(_Config) ->
    ?assertEqual({ok, [0, 2, 4]}, py:stream_eval(<<"(x * 2 for x in range(3))">>)),
    ?assertEqual({ok, [1, 2, 3]}, py:stream_eval(<<"iter(xs)">>, #{xs => [1, 2, 3]})),
    ?assertEqual({ok, [<<"a">>, <<"b">>]}, py:stream_eval(<<"(k for k in sorted(d))">>,
                                                          #{d => #{b => 1, a => 2}})),
    ?assertEqual({ok, []}, py:stream_eval(<<"iter([])">>)),
    %% failures
    ?assertMatch({error, {'TypeError', _}}, py:stream_eval(<<"5">>)),
    ?assertMatch({error, {'ZeroDivisionError', _}},
                 py:stream_eval(<<"(1 // x for x in [1, 0])">>)),
    ?assertMatch({error, {'SyntaxError', _}}, py:stream_eval(<<"(x for">>)),
    ?assertEqual({error, {badarg, locals}}, py:stream_eval(<<"iter([])">>, [])).

version(_Config) ->
    {ok, V} = py:version(),
    ?assertMatch(<<"3.", _/binary>>, V),
    ?assertEqual({ok, V}, py:eval(<<"__import__('sys').version">>)),
    ?assertEqual({ok, true}, py:eval(<<"__import__('sys').version_info >= (3, 11)">>)).

locals_do_not_leak(_Config) ->
    bound(fun() ->
        %% exec with locals: the local is visible, but does not stay
        ?assertEqual(ok, py:exec(<<"y = x + 1">>, #{x => 5})),
        ?assertEqual({ok, 6}, py:eval(<<"y">>)),
        ?assertMatch({error, {'NameError', _}}, py:eval(<<"x">>)),
        %% eval with locals: same
        ?assertEqual({ok, 9}, py:eval(<<"q * q">>, #{q => 3})),
        ?assertMatch({error, {'NameError', _}}, py:eval(<<"q">>)),
        %% a local shadows a namespace name for one call only
        ok = py:exec(<<"z = 1">>),
        ?assertEqual({ok, 99}, py:eval(<<"z">>, #{z => 99})),
        ?assertEqual({ok, 1}, py:eval(<<"z">>)),
        %% the code assigns the name: it stays
        ?assertEqual(ok, py:exec(<<"w = w * 2">>, #{w => 21})),
        ?assertEqual({ok, 42}, py:eval(<<"w">>)),
        ?assertEqual(ok, py:exec(<<"z = z + 10">>, #{z => 5})),
        ?assertEqual({ok, 15}, py:eval(<<"z">>)),
        %% failing code does not leak its locals either
        ?assertMatch({error, {'ZeroDivisionError', _}}, py:exec(<<"1 / n">>, #{n => 0})),
        ?assertMatch({error, {'NameError', _}}, py:eval(<<"n">>)),
        %% locals of one call are not seen by the next call
        ?assertEqual({ok, 1}, py:eval(<<"only_once">>, #{only_once => 1})),
        ?assertMatch({error, {'NameError', _}}, py:eval(<<"only_once">>))
    end).

exec_namespace_shared(_Config) ->
    bound(fun() ->
        %% functions of one exec see each other and module-level names
        ok = py:exec(<<"import math\n"
                       "BASE = 10\n"
                       "def helper(x):\n    return x + BASE\n"
                       "def outer(x):\n    return helper(x) * 2\n"
                       "def uses_import():\n    return math.floor(2.5)\n"
                       "result = outer(1)\n">>),
        ?assertEqual({ok, 22}, py:eval(<<"result">>)),
        ?assertEqual({ok, 22}, py:call('__main__', outer, [1])),
        ?assertEqual({ok, 2}, py:call('__main__', uses_import, [])),
        %% a later exec sees names from earlier ones, and earlier functions
        %% see names defined later
        ok = py:exec(<<"def later(x):\n    return outer(x) + EXTRA\n">>),
        ok = py:exec(<<"EXTRA = 100">>),
        ?assertEqual({ok, 122}, py:call('__main__', later, [1])),
        ok = py:exec(<<"BASE = 0">>),
        ?assertEqual({ok, 2}, py:call('__main__', outer, [1])),
        %% comprehensions and lambdas inside exec see module names too
        ok = py:exec(<<"K = 3\nvals = [K * i for i in range(3)]\n"
                       "f = lambda: [K + i for i in range(2)]\n">>),
        ?assertEqual({ok, [0, 3, 6]}, py:eval(<<"vals">>)),
        ?assertEqual({ok, [3, 4]}, py:eval(<<"f()">>)),
        %% classes too
        ok = py:exec(<<"class C:\n    def m(self):\n        return helper(1)\n">>),
        ?assertEqual({ok, 1}, py:eval(<<"C().m()">>))
    end).

%%====================================================================
%% Types
%%====================================================================

types_integers(_Config) ->
    %% Python -> Erlang
    ?assertEqual({ok, 1 bsl 100}, py:eval(<<"2**100">>)),
    ?assertEqual({ok, -(1 bsl 100)}, py:eval(<<"-2**100">>)),
    ?assertEqual({ok, 1 bsl 64}, py:eval(<<"2**64">>)),
    ?assertEqual({ok, (1 bsl 64) - 1}, py:eval(<<"2**64 - 1">>)),
    ?assertEqual({ok, 1 bsl 63}, py:eval(<<"2**63">>)),
    ?assertEqual({ok, -(1 bsl 63)}, py:eval(<<"-2**63">>)),
    ?assertEqual({ok, -(1 bsl 63) - 1}, py:eval(<<"-2**63 - 1">>)),
    ?assertEqual({ok, 0}, py:eval(<<"0">>)),
    ?assertEqual({ok, -1}, py:eval(<<"-1">>)),
    %% Erlang -> Python, exact (checked on the Python side)
    Ints = [0, 1, -1, 255, 1 bsl 31, (1 bsl 63) - 1, 1 bsl 63, -(1 bsl 63), -(1 bsl 63) - 1,
            (1 bsl 64) - 1, 1 bsl 64, -(1 bsl 64), 1 bsl 100, -(1 bsl 100),
            12345678901234567890123456789012345678901234567890,
            -98765432109876543210987654321098765432109876543210],
    lists:foreach(
      fun(I) ->
              Txt = integer_to_binary(I),
              ?assertEqual({ok, true}, py:eval(<<"type(x) is int and x == int(s)">>,
                                                #{x => I, s => Txt})),
              ?assertEqual({ok, Txt}, py:eval(<<"str(x)">>, #{x => I})),
              ?assertEqual({ok, I}, py:eval(<<"x">>, #{x => I}))
      end, Ints),
    ?assertEqual({ok, true}, py:eval(<<"x == 2**100 and y == -2**100">>,
                                     #{x => 1 bsl 100, y => -(1 bsl 100)})),
    %% arithmetic on the Python side stays exact
    ?assertEqual({ok, (1 bsl 100) * 3 + 1}, py:eval(<<"x * 3 + 1">>, #{x => 1 bsl 100})),
    %% failure: bool is not int on the way back
    ?assertNotEqual({ok, 1}, py:eval(<<"True">>)).

types_floats(_Config) ->
    ?assertEqual({ok, 1.5}, py:eval(<<"1.5">>)),
    ?assertEqual({ok, -2.25}, py:eval(<<"x">>, #{x => -2.25})),
    ?assertEqual({ok, <<"float">>}, py:eval(<<"type(x).__name__">>, #{x => 1.0})),
    ?assertEqual({ok, 1.0e300}, py:eval(<<"x">>, #{x => 1.0e300})),
    ?assertEqual({ok, 5.0e-324}, py:eval(<<"5e-324">>)),
    ?assertEqual({ok, 0.1}, py:eval(<<"x">>, #{x => 0.1})),
    ?assertEqual({ok, true}, py:eval(<<"x == 0.1">>, #{x => 0.1})),
    ?assertEqual({ok, nan}, py:eval(<<"float('nan')">>)),
    ?assertEqual({ok, infinity}, py:eval(<<"float('inf')">>)),
    ?assertEqual({ok, neg_infinity}, py:eval(<<"float('-inf')">>)),
    ?assertEqual({ok, [nan, infinity, neg_infinity, 1.0]},
                 py:eval(<<"[float('nan'), 1e400, -1e400, 1.0]">>)),
    %% an int is not a float
    ?assertEqual({ok, 2}, py:eval(<<"2">>)),
    ?assertNotEqual({ok, 2}, py:eval(<<"2.0">>)).

types_atoms(_Config) ->
    ?assertEqual({ok, true}, py:eval(<<"True">>)),
    ?assertEqual({ok, false}, py:eval(<<"False">>)),
    ?assertEqual({ok, none}, py:eval(<<"None">>)),
    ?assertEqual({ok, [true, false]}, py:eval(<<"[x is True, y is True]">>,
                                              #{x => true, y => false})),
    ?assertEqual({ok, true}, py:eval(<<"x is False">>, #{x => false})),
    ?assertEqual({ok, [true, true, true]},
                 py:eval(<<"[a is None, b is None, c is None]">>,
                         #{a => none, b => nil, c => undefined})),
    %% other atoms -> str
    ?assertEqual({ok, <<"str:hello">>},
                 py:eval(<<"type(x).__name__ + ':' + x">>, #{x => hello})),
    ?assertEqual({ok, <<"Hello World">>}, py:eval(<<"x">>, #{x => 'Hello World'})),
    ?assertEqual({ok, <<"ok">>}, py:eval(<<"x">>, #{x => ok})),
    ?assertEqual({ok, <<"é"/utf8>>}, py:eval(<<"x">>, #{x => 'é'})),
    ?assertEqual({ok, 1}, py:eval(<<"len(x)">>, #{x => 'é'})),
    ?assertEqual({ok, <<"日本"/utf8>>}, py:eval(<<"x">>, #{x => '日本'})),
    ?assertEqual({ok, 2}, py:eval(<<"len(x)">>, #{x => '日本'})),
    ?assertEqual({ok, <<>>}, py:eval(<<"x">>, #{x => ''})),
    %% None comes back as none, not nil/undefined
    ?assertEqual({ok, [none, none, none]}, py:eval(<<"[a, b, c]">>,
                                                   #{a => none, b => nil, c => undefined})).

types_binaries(_Config) ->
    %% valid UTF-8 -> str
    ?assertEqual({ok, <<"str">>}, py:eval(<<"type(x).__name__">>, #{x => <<"abc">>})),
    ?assertEqual({ok, <<"str">>}, py:eval(<<"type(x).__name__">>, #{x => <<>>})),
    ?assertEqual({ok, 5}, py:eval(<<"len(x)">>, #{x => <<"héllo"/utf8>>})),
    ?assertEqual({ok, <<"HÉLLO"/utf8>>}, py:eval(<<"x.upper()">>, #{x => <<"héllo"/utf8>>})),
    %% invalid UTF-8 -> bytes
    ?assertEqual({ok, <<"bytes">>}, py:eval(<<"type(x).__name__">>, #{x => <<255>>})),
    ?assertEqual({ok, <<"bytes">>}, py:eval(<<"type(x).__name__">>, #{x => <<"abc", 192>>})),
    ?assertEqual({ok, [97, 255]}, py:eval(<<"list(x)">>, #{x => <<97, 255>>})),
    %% {bytes, B} -> bytes always
    ?assertEqual({ok, <<"bytes">>}, py:eval(<<"type(x).__name__">>, #{x => {bytes, <<"abc">>}})),
    ?assertEqual({ok, <<"bytes">>}, py:eval(<<"type(x).__name__">>, #{x => {bytes, <<>>}})),
    ?assertEqual({ok, true}, py:eval(<<"x == b'abc'">>, #{x => {bytes, <<"abc">>}})),
    ?assertEqual({ok, <<"bytes">>}, py:call(?HELPERS, type_names, [{bytes, <<"a">>}])),
    %% bytes and bytearray -> binary
    ?assertEqual({ok, <<0, 255, 1>>}, py:eval(<<"b'\\x00\\xff\\x01'">>)),
    ?assertEqual({ok, <<"abc">>}, py:eval(<<"bytearray(b'abc')">>)),
    ?assertEqual({ok, <<>>}, py:eval(<<"b''">>)),
    %% str -> UTF-8 binary
    ?assertEqual({ok, <<"日本語"/utf8>>}, py:eval(<<"'\\u65e5\\u672c\\u8a9e'">>)),
    ?assertEqual({ok, <<240, 159, 152, 128>>}, py:eval(<<"'\\U0001F600'">>)),
    %% round trips
    lists:foreach(fun(B) -> ?assertEqual({ok, B}, py:eval(<<"x">>, #{x => B})) end,
                  [<<>>, <<"plain">>, <<"ünïcödé ✓"/utf8>>, <<255, 0, 254>>, <<0>>]),
    ?assertEqual({ok, <<"abc">>}, py:eval(<<"x">>, #{x => {bytes, <<"abc">>}})),
    %% failure: a bitstring that is not a binary is refused
    ?assertMatch({error, {'TypeError', _}}, py:eval(<<"x">>, #{x => <<1:3>>})).

types_containers(_Config) ->
    Term = [1, {2, <<"a">>}, #{k => [1.5, {}]}, [], {[]}],
    ?assertEqual({ok, [1, {2, <<"a">>}, #{<<"k">> => [1.5, {}]}, [], {[]}]},
                 py:eval(<<"x">>, #{x => Term})),
    ?assertEqual({ok, [<<"int">>, <<"tuple">>, <<"dict">>, <<"list">>, <<"tuple">>]},
                 py:eval(<<"[type(e).__name__ for e in x]">>, #{x => Term})),
    ?assertEqual({ok, <<"list">>}, py:eval(<<"type(x).__name__">>, #{x => []})),
    ?assertEqual({ok, <<"tuple">>}, py:eval(<<"type(x).__name__">>, #{x => {}})),
    ?assertEqual({ok, <<"dict">>}, py:eval(<<"type(x).__name__">>, #{x => #{}})),
    %% atom keys -> str keys; other keys keep their type
    ?assertEqual({ok, [<<"str">>]}, py:eval(<<"[type(k).__name__ for k in x]">>,
                                            #{x => #{key => 1}})),
    ?assertEqual({ok, true}, py:eval(<<"x == {'a': 1, 2: 'b', (1, 2): [3]}">>,
                                     #{x => #{a => 1, 2 => b, {1, 2} => [3]}})),
    ?assertEqual({ok, #{<<"a">> => 1, 2 => <<"b">>, {1, 2} => [3]}},
                 py:eval(<<"x">>, #{x => #{a => 1, 2 => b, {1, 2} => [3]}})),
    %% Python -> Erlang, recursively
    ?assertEqual({ok, #{<<"a">> => [1, {2, 3}], 5 => #{<<"b">> => none}}},
                 py:eval(<<"{'a': [1, (2, 3)], 5: {'b': None}}">>)),
    ?assertEqual({ok, {}}, py:eval(<<"()">>)),
    ?assertEqual({ok, {1}}, py:eval(<<"(1,)">>)),
    ?assertEqual({ok, []}, py:eval(<<"[]">>)),
    ?assertEqual({ok, #{}}, py:eval(<<"{}">>)),
    %% a string is not a list of chars
    ?assertEqual({ok, <<"str">>}, py:eval(<<"type(x).__name__">>, #{x => <<"abc">>})),
    ?assertEqual({ok, [97, 98]}, py:eval(<<"x">>, #{x => "ab"})),
    %% failure: unhashable key (a list) is a TypeError
    ?assertMatch({error, {'TypeError', _}}, py:eval(<<"x">>, #{x => #{[1] => 2}})).

types_pids(_Config) ->
    Self = self(),
    ?assertEqual({ok, Self}, py:eval(<<"p">>, #{p => Self})),
    ?assertEqual({ok, true}, py:eval(<<"isinstance(p, __import__('erlang').Pid)">>,
                                     #{p => Self})),
    Other = spawn(fun() -> receive stop -> ok end end),
    ?assertEqual({ok, [Self, Other]}, py:eval(<<"[a, b]">>, #{a => Self, b => Other})),
    ?assertEqual({ok, [true, false]}, py:eval(<<"[a == c, a == b]">>,
                                              #{a => Self, b => Other, c => Self})),
    ?assertEqual({ok, #{<<"p">> => Other}}, py:eval(<<"{'p': b}">>, #{b => Other})),
    %% a pid is usable as a dict key / set member in Python
    ?assertEqual({ok, 1}, py:eval(<<"len({a, c})">>, #{a => Self, c => Self})),
    Other ! stop,
    ?assertEqual({ok, {Self, 1}}, py:call(builtins, tuple, [[Self, 1]])).

types_sets_bytes_fallback(_Config) ->
    {ok, S} = py:eval(<<"{1, 2, 3}">>),
    ?assert(is_list(S)),
    ?assertEqual([1, 2, 3], lists:sort(S)),
    {ok, FS} = py:eval(<<"frozenset(['a', 'b'])">>),
    ?assert(is_list(FS)),
    ?assertEqual([<<"a">>, <<"b">>], lists:sort(FS)),
    ?assertEqual({ok, []}, py:eval(<<"set()">>)),
    %% unknown objects: str(obj)
    ?assertEqual({ok, <<"(1+2j)">>}, py:eval(<<"1+2j">>)),
    ?assertEqual({ok, <<"1.5">>}, py:eval(<<"__import__('decimal').Decimal('1.5')">>)),
    ?assertEqual({ok, <<"custom-str">>},
                 py:eval(<<"type('X', (), {'__str__': lambda self: 'custom-str'})()">>)),
    %% containers holding unknown objects
    ?assertEqual({ok, [<<"(1+2j)">>, 3]}, py:eval(<<"[1+2j, 3]">>)),
    %% failure: str() that raises
    ?assertMatch({error, {'RuntimeError', <<"no str">>}},
                 py:eval(<<"type('Y', (), {'__str__': lambda self: "
                           "(_ for _ in ()).throw(RuntimeError('no str'))})()">>)).

%%====================================================================
%% Errors
%%====================================================================

errors_builtin_types(_Config) ->
    ?assertEqual({error, {'NameError', <<"name 'undefined_xyz' is not defined">>}},
                 py:eval(<<"undefined_xyz">>)),
    ?assertEqual({error, {'ZeroDivisionError', <<"division by zero">>}}, py:eval(<<"1 / 0">>)),
    ?assertMatch({error, {'SyntaxError', <<_/binary>>}}, py:eval(<<"1 +">>)),
    ?assertMatch({error, {'SyntaxError', <<_/binary>>}}, py:exec(<<"if True\n  pass">>)),
    ?assertMatch({error, {'IndentationError', <<_/binary>>}},
                 py:exec(<<"if True:\npass">>)),
    ?assertEqual({error, {'ModuleNotFoundError', <<"No module named 'no_such_mod_xyz'">>}},
                 py:call(no_such_mod_xyz, f, [])),
    ?assertEqual({error, {'ModuleNotFoundError', <<"No module named 'no_such_mod_xyz'">>}},
                 py:exec(<<"import no_such_mod_xyz">>)),
    ?assertMatch({error, {'AttributeError', <<_/binary>>}},
                 py:call(math, no_such_fn_xyz, [])),
    ?assertMatch({error, {'TypeError', <<_/binary>>}}, py:eval(<<"1 + 'a'">>)),
    ?assertEqual({error, {'KeyError', <<"'k'">>}}, py:eval(<<"{}['k']">>)),
    ?assertMatch({error, {'IndexError', <<_/binary>>}}, py:eval(<<"[][0]">>)),
    ?assertMatch({error, {'ValueError', <<"bad thing">>}}, py:call(?HELPERS, fail, [<<"bad thing">>])),
    ?assertEqual({error, {'RuntimeError', <<>>}}, py:exec(<<"raise RuntimeError">>)),
    ?assertEqual({error, {'OSError', <<"custom os">>}}, py:exec(<<"raise OSError('custom os')">>)),
    %% Unicode in the message stays UTF-8
    ?assertEqual({error, {'ValueError', <<"ünï ✓"/utf8>>}},
                 py:exec(<<"raise ValueError('ünï ✓')"/utf8>>)),
    %% errors do not break the next call
    ?assertEqual({ok, 2}, py:eval(<<"1 + 1">>)).

errors_custom_and_traceback(_Config) ->
    %% a user-defined exception class
    ?assertEqual({error, {'CustomError', <<"custom boom">>}},
                 py:call(?HELPERS, fail_custom, [<<"custom boom">>])),
    %% the traceback of a raise inside a function
    ?assertMatch({error, {'ValueError', <<"deep failure">>}},
                 py:call(?HELPERS, fail, [<<"deep failure">>])),
    TB = py:last_traceback(),
    ?assert(is_binary(TB)),
    ?assertNotEqual(nomatch, binary:match(TB, <<"Traceback">>)),
    ?assertNotEqual(nomatch, binary:match(TB, <<"_inner_fail">>)),
    ?assertNotEqual(nomatch, binary:match(TB, <<"py_core_helpers.py">>)),
    ?assertNotEqual(nomatch, binary:match(TB, <<"ValueError: deep failure">>)),
    %% exec'd function too
    ?assertMatch({error, {'ZeroDivisionError', _}},
                 py:exec(<<"def boom_fn():\n    return 1 / 0\nboom_fn()\n">>)),
    TB2 = py:last_traceback(),
    ?assert(is_binary(TB2)),
    ?assertNotEqual(nomatch, binary:match(TB2, <<"Traceback">>)),
    ?assertNotEqual(nomatch, binary:match(TB2, <<"boom_fn">>)),
    ?assertNotEqual(nomatch, binary:match(TB2, <<"ZeroDivisionError">>)),
    %% the traceback is per process
    Self = self(),
    spawn_link(fun() -> Self ! {other_tb, py:last_traceback()} end),
    OtherTB = receive {other_tb, T} -> T after 5000 -> timeout end,
    ?assertNotEqual(TB2, OtherTB).

errors_system_exit_keyboard_interrupt(_Config) ->
    Workers = worker_ids(),
    ?assertEqual({error, {'SystemExit', <<"3">>}}, py:exec(<<"import sys; sys.exit(3)">>)),
    ?assertMatch({error, {'SystemExit', _}}, py:exec(<<"raise SystemExit">>)),
    ?assertMatch({error, {'SystemExit', _}}, py:call(sys, exit, [0])),
    ?assertMatch({error, {'KeyboardInterrupt', _}}, py:exec(<<"raise KeyboardInterrupt">>)),
    ?assertMatch({error, {'KeyboardInterrupt', _}},
                 py:eval(<<"(_ for _ in ()).throw(KeyboardInterrupt)">>)),
    ?assertMatch({error, {'GeneratorExit', _}}, py:exec(<<"raise GeneratorExit">>)),
    %% repeated on every worker: still serving
    lists:foreach(fun(_) ->
                          ?assertEqual({error, {'SystemExit', <<"4">>}},
                                       py:exec(<<"raise SystemExit(4)">>)),
                          ?assertMatch({error, {'KeyboardInterrupt', _}},
                                       py:exec(<<"raise KeyboardInterrupt()">>))
                  end, lists:seq(1, 3 * ?NUM_WORKERS)),
    %% on a bound worker: it keeps its state
    bound(fun() ->
        ok = py:exec(<<"kept = 'yes'">>),
        ?assertMatch({error, {'SystemExit', _}}, py:exec(<<"import sys; sys.exit(1)">>)),
        ?assertMatch({error, {'KeyboardInterrupt', _}}, py:exec(<<"raise KeyboardInterrupt">>)),
        ?assertEqual({ok, <<"yes">>}, py:eval(<<"kept">>))
    end),
    assert_pool_serves(),
    assert_pool_idle(Workers),
    ?assertEqual(ok, no_stray_messages()).

%% Exception class names become atoms only up to a cap, then binaries.
%% Run in a peer node so that the cap is not used up for other suites.
errors_exception_atom_cap(_Config) ->
    N = 3000,
    Names = [<<"ZzCapError", (integer_to_binary(I))/binary>> || I <- lists:seq(1, N)],
    {Before, Results, After} =
        in_peer(fun(Call) ->
                        B = Call(erlang, system_info, [atom_count]),
                        Rs = [Call(py, exec, [<<"raise type(n, (Exception,), {})('m')">>,
                                              #{n => Name}])
                              || Name <- Names],
                        {B, Rs, Call(erlang, system_info, [atom_count])}
                end),
    NameOf = fun({error, {T, <<"m">>}}) when is_atom(T) -> atom_to_binary(T, utf8);
                ({error, {T, <<"m">>}}) when is_binary(T) -> T;
                (Other) -> {unexpected, Other}
             end,
    ?assertEqual(Names, [NameOf(R) || R <- Results]),
    ?assert(After - Before < N div 2),
    %% past the cap the name comes as a binary
    ?assertMatch({error, {<<"ZzCapError3000">>, <<"m">>}}, lists:last(Results)).

%%====================================================================
%% Timeouts
%%====================================================================

timed(Fun) ->
    T0 = erlang:monotonic_time(millisecond),
    R = Fun(),
    {R, erlang:monotonic_time(millisecond) - T0}.

timeout_busy_loop(_Config) ->
    Workers = worker_ids(),
    {R, Ms} = timed(fun() -> py:exec(<<"while True: pass">>, #{}, 100) end),
    ?assertEqual({error, timeout}, R),
    ?assert(Ms >= 90),
    ?assert(Ms < 2000),
    ?assertEqual(ok, no_stray_messages()),
    %% eval too
    ?assertEqual({error, timeout}, py:eval(<<"[0 for _ in iter(int, 1)]">>, #{}, 100)),
    ?assertEqual(ok, no_stray_messages()),
    %% on a bound worker: the same worker serves again, state intact
    bound(fun() ->
        ok = py:exec(<<"marker = 123">>),
        ?assertEqual({error, timeout}, py:exec(<<"while True: pass">>, #{}, 100)),
        ?assertEqual({ok, 123}, py:eval(<<"marker">>)),
        ?assertEqual({ok, 124}, py:eval(<<"marker + 1">>)),
        ?assertEqual(ok, no_stray_messages())
    end),
    ?assertEqual({ok, 3}, py:eval(<<"1 + 2">>)),
    assert_pool_serves(),
    assert_pool_idle(Workers),
    ?assertEqual(ok, no_stray_messages()).

timeout_cpu_loop(_Config) ->
    Workers = worker_ids(),
    {R, Ms} = timed(fun() -> py:eval(<<"sum(i*i for i in range(10**10))">>, #{}, 100) end),
    ?assertEqual({error, timeout}, R),
    ?assert(Ms < 2000),
    ?assertEqual(ok, no_stray_messages()),
    bound(fun() ->
        ok = py:exec(<<"marker = 'cpu'">>),
        ?assertEqual({error, timeout},
                     py:exec(<<"total = sum(i*i for i in range(10**10))">>, #{}, 100)),
        ?assertEqual({ok, <<"cpu">>}, py:eval(<<"marker">>)),
        ?assertMatch({error, {'NameError', _}}, py:eval(<<"total">>))
    end),
    %% several timeouts at once, one per worker
    Self = self(),
    [spawn_link(fun() ->
                        Self ! {cpu_timeout, I,
                                py:eval(<<"sum(i*i for i in range(10**10))">>, #{}, 100),
                                no_stray_messages()}
                end) || I <- lists:seq(1, ?NUM_WORKERS)],
    Res = [receive {cpu_timeout, I, R1, S1} -> {R1, S1} after 10000 -> no_answer end
           || I <- lists:seq(1, ?NUM_WORKERS)],
    ?assertEqual(lists:duplicate(?NUM_WORKERS, {{error, timeout}, ok}), Res),
    assert_pool_serves(),
    assert_pool_idle(Workers),
    ?assertEqual(ok, no_stray_messages()).

timeout_call_and_await(_Config) ->
    Workers = worker_ids(),
    {R, Ms} = timed(fun() -> py:call(?HELPERS, spin, [], #{}, 100) end),
    ?assertEqual({error, timeout}, R),
    ?assert(Ms < 2000),
    %% timeout 0
    ?assertEqual({error, timeout}, py:call(?HELPERS, spin, [], #{}, 0)),
    ?assertEqual(ok, no_stray_messages()),
    Ref = py:call_async(?HELPERS, spin, []),
    {R2, Ms2} = timed(fun() -> py:await(Ref, 100) end),
    ?assertEqual({error, timeout}, R2),
    ?assert(Ms2 < 2000),
    ?assertEqual(ok, no_stray_messages()),
    %% a timed-out await does not hurt the other requests in flight
    Ok = py:call_async(?HELPERS, add, [20, 22]),
    Spin = py:call_async(?HELPERS, spin, []),
    ?assertEqual({error, timeout}, py:await(Spin, 100)),
    ?assertEqual({ok, 42}, py:await(Ok, 5000)),
    assert_pool_serves(),
    assert_pool_idle(Workers),
    ?assertEqual(ok, no_stray_messages()).

%%====================================================================
%% Bad input
%%====================================================================

bad_input_terms(_Config) ->
    Workers = worker_ids(),
    Port = open_port({spawn, "cat"}, []),
    try
        Bad = [fun() -> ok end, fun lists:map/2, Port, make_ref(), [1 | 2]],
        lists:foreach(
          fun(T) ->
                  ?assertMatch({error, {'TypeError', <<_/binary>>}},
                               py:call(builtins, repr, [T])),
                  ?assertMatch({error, {'TypeError', <<_/binary>>}},
                               py:call(builtins, repr, [[1, {a, T}]])),
                  ?assertMatch({error, {'TypeError', <<_/binary>>}},
                               py:call(?HELPERS, echo, [], #{k => T})),
                  ?assertMatch({error, {'TypeError', <<_/binary>>}},
                               py:eval(<<"x">>, #{x => T})),
                  ?assertMatch({error, {'TypeError', <<_/binary>>}},
                               py:exec(<<"pass">>, #{x => #{y => T}})),
                  ?assertMatch({error, {'TypeError', <<_/binary>>}},
                               py:await(py:call_async(builtins, repr, [T])))
          end, Bad),
        %% an improper list as the Args list itself
        ?assertMatch({error, {'TypeError', _}}, py:call(builtins, max, [1 | 2])),
        %% non-text keys in kwargs / locals
        ?assertMatch({error, {'TypeError', _}}, py:call(?HELPERS, echo, [], #{1 => 2})),
        ?assertMatch({error, {'TypeError', _}}, py:eval(<<"1">>, #{1 => 2})),
        ?assertEqual(ok, no_stray_messages())
    after
        port_close(Port)
    end,
    assert_pool_serves(),
    assert_pool_idle(Workers).

bad_input_arguments(_Config) ->
    Workers = worker_ids(),
    ?assertEqual({error, {badarg, args}}, py:call(math, sqrt, 16)),
    ?assertEqual({error, {badarg, args}}, py:call(math, sqrt, {16})),
    ?assertEqual({error, {badarg, args}}, py:call(math, sqrt, #{}, #{})),
    ?assertEqual({error, {badarg, args}}, py:call(math, sqrt, <<"16">>, #{}, 1000)),
    ?assertEqual({error, {badarg, kwargs}}, py:call(math, sqrt, [16], [{a, 1}])),
    ?assertEqual({error, {badarg, kwargs}}, py:call(math, sqrt, [16], none)),
    ?assertEqual({error, {badarg, kwargs}}, py:call(math, sqrt, [16], [], 1000)),
    ?assertEqual({error, {badarg, kwargs}}, py:stream(?HELPERS, squares, [1], [])),
    ?assertEqual({error, {badarg, locals}}, py:eval(<<"1">>, [{x, 1}])),
    ?assertEqual({error, {badarg, locals}}, py:eval(<<"1">>, undefined, 1000)),
    ?assertEqual({error, {badarg, locals}}, py:exec(<<"pass">>, [])),
    ?assertEqual({error, {badarg, locals}}, py:exec(<<"pass">>, 42, 1000)),
    ?assertEqual({error, {badarg, locals}}, py:stream_eval(<<"[]">>, {})),
    ?assertEqual(ok, no_stray_messages()),
    assert_pool_serves(),
    assert_pool_idle(Workers).

bad_input_code(_Config) ->
    Workers = worker_ids(),
    ?assertEqual({error, {badarg, code}}, py:eval(42)),
    ?assertEqual({error, {badarg, code}}, py:exec(42)),
    ?assertEqual({error, {badarg, code}}, py:eval(foo, #{})),
    ?assertEqual({error, {badarg, code}}, py:exec(1.5, #{}, 1000)),
    ?assertEqual({error, {badarg, code}}, py:stream_eval(42)),
    ?assertEqual({error, {badarg, code}}, py:eval([<<"1">>, 1000])),
    ?assertEqual({error, {badarg, code}}, py:eval({<<"1">>})),
    ?assertMatch({error, {'ValueError', <<_/binary>>}}, py:eval(<<"1", 0, "+ 1">>)),
    ?assertMatch({error, {'ValueError', <<_/binary>>}}, py:exec(<<"x = 1", 0>>)),
    ?assertMatch({error, {'ValueError', <<_/binary>>}}, py:exec([<<"x = 1">>, 0])),
    ?assertMatch({error, {'ValueError', <<_/binary>>}}, py:stream_eval(<<0>>)),
    %% not UTF-8 source
    ?assertMatch({error, {'SyntaxError', _}}, py:eval(<<"'", 255, "'">>)),
    ?assertEqual(ok, no_stray_messages()),
    assert_pool_serves(),
    assert_pool_idle(Workers).

bad_input_names(_Config) ->
    Workers = worker_ids(),
    ?assertEqual({error, {badarg, module}}, py:call(42, sqrt, [16])),
    ?assertEqual({error, {badarg, module}}, py:call("math", sqrt, [16])),
    ?assertEqual({error, {badarg, module}}, py:call({math}, sqrt, [16], #{}, 1000)),
    ?assertEqual({error, {badarg, function}}, py:call(math, 42, [16])),
    ?assertEqual({error, {badarg, function}}, py:call(math, "sqrt", [16])),
    ?assertEqual({error, {badarg, module}}, py:stream(42, f, [])),
    ?assertEqual({error, {badarg, module}}, py:await(py:call_async(42, f, []))),
    ?assertMatch({error, {'ValueError', <<_/binary>>}}, py:call(<<>>, sqrt, [16])),
    ?assertMatch({error, {'ValueError', <<_/binary>>}}, py:call('', sqrt, [16])),
    ?assertMatch({error, {'ValueError', <<_/binary>>}}, py:call(math, <<>>, [16])),
    ?assertMatch({error, {'ValueError', <<_/binary>>}}, py:call(<<"ma", 0, "th">>, sqrt, [16])),
    %% a module name that is not UTF-8
    ?assertMatch({error, {_, <<_/binary>>}}, py:call(<<255, 254>>, f, [])),
    ?assertEqual(ok, no_stray_messages()),
    assert_pool_serves(),
    assert_pool_idle(Workers).

bad_input_timeouts(_Config) ->
    Workers = worker_ids(),
    ?assertEqual({error, {badarg, timeout}}, py:call(math, sqrt, [16], #{}, -1)),
    ?assertEqual({error, {badarg, timeout}}, py:call(math, sqrt, [16], #{}, foo)),
    ?assertEqual({error, {badarg, timeout}}, py:call(math, sqrt, [16], #{}, 1.5)),
    ?assertEqual({error, {badarg, timeout}}, py:eval(<<"1">>, #{}, -1)),
    ?assertEqual({error, {badarg, timeout}}, py:eval(<<"1">>, #{}, foo)),
    ?assertEqual({error, {badarg, timeout}}, py:exec(<<"pass">>, #{}, -1)),
    ?assertEqual({error, {badarg, timeout}}, py:exec(<<"pass">>, #{}, foo)),
    Ref = py:call_async(math, sqrt, [16]),
    ?assertEqual({error, {badarg, timeout}}, py:await(Ref, -1)),
    ?assertEqual({error, {badarg, timeout}}, py:await(Ref, foo)),
    %% the request itself is still collectable
    ?assertEqual({ok, 4.0}, py:await(Ref, 5000)),
    ?assertEqual(ok, no_stray_messages()),
    assert_pool_serves(),
    assert_pool_idle(Workers).

%%====================================================================
%% Load
%%====================================================================

load_concurrent_callers(_Config) ->
    N = 200,
    Self = self(),
    Pids = [spawn_monitor(
              fun() ->
                      R1 = py:call(?HELPERS, add, [I, 1000]),
                      R2 = py:eval(<<"[i, s * 2]">>, #{i => I, s => integer_to_binary(I)}),
                      R3 = py:exec(<<"assert i == j">>, #{i => I, j => I}),
                      R4 = py:await(py:call_async(?HELPERS, echo, [self()])),
                      Self ! {caller, I, self(), [R1, R2, R3, R4]}
              end) || I <- lists:seq(1, N)],
    Results = [receive
                   {caller, I, P, Rs} -> {I, P, Rs};
                   {'DOWN', _, process, _, Reason} when Reason =/= normal ->
                       {I, crashed, Reason}
               after 20000 -> {I, no_answer}
               end || I <- lists:seq(1, N)],
    Expected = [{I, P, [{ok, I + 1000},
                        {ok, [I, <<(integer_to_binary(I))/binary,
                                   (integer_to_binary(I))/binary>>]},
                        ok,
                        {ok, [[P], #{}]}]}
                || {I, {P, _MRef}} <- lists:zip(lists:seq(1, N), Pids)],
    ?assertEqual(Expected, Results),
    %% all monitors report normal exits
    lists:foreach(fun({P, MRef}) ->
                          receive {'DOWN', MRef, process, P, normal} -> ok
                          after 5000 -> ?assertEqual(normal, {no_down, P})
                          end
                  end, Pids),
    assert_pool_idle(),
    ?assertEqual(ok, no_stray_messages()).

%% A dict of more than 128 entries coming back to Erlang.  Run in a peer
%% node: this crashed the whole VM (segfault in enif_make_map_from_arrays
%% called from a worker thread), which must not take the suite down with it.
load_big_map(_Config) ->
    M129 = maps:from_list([{I, I} || I <- lists:seq(0, 128)]),
    M100k = maps:from_list([{I, I * 2} || I <- lists:seq(1, 100000)]),
    Strs = maps:from_list([{integer_to_binary(I), [I]} || I <- lists:seq(1, 1000)]),
    Exprs = [{<<"dict(zip(range(129), range(129)))">>, #{}},
             {<<"{str(i): [i] for i in range(1, 1001)}">>, #{}},
             {<<"x">>, #{x => M100k}},
             {<<"{i: i * 2 for i in range(1, 100001)}">>, #{}},
             {<<"[{i: i for i in range(129)}]">>, #{}}],
    Results = in_peer(fun(Call) ->
                              [Call(py, eval, [E, L]) || {E, L} <- Exprs] ++
                                  [Call(py, call, [?HELPERS, add, [3, 4]])]
                      end),
    ?assertEqual([{ok, M129}, {ok, Strs}, {ok, M100k}, {ok, M100k}, {ok, [M129]}, {ok, 7}],
                 Results).

load_big_ints(_Config) ->
    Big = 1 bsl 100000,
    ?assertEqual({ok, Big}, py:eval(<<"2**100000">>)),
    ?assertEqual({ok, -Big}, py:eval(<<"-2**100000">>)),
    ?assertEqual({ok, true}, py:eval(<<"x == 2**100000">>, #{x => Big})),
    ?assertEqual({ok, true}, py:eval(<<"x == -2**100000">>, #{x => -Big})),
    ?assertEqual({ok, 100001}, py:eval(<<"x.bit_length()">>, #{x => Big})),
    ?assertEqual({ok, Big + 1}, py:eval(<<"x + 1">>, #{x => Big})),
    ?assertEqual({ok, Big * 3 - 7}, py:eval(<<"x">>, #{x => Big * 3 - 7})),
    ?assertEqual({ok, -(Big * 3 - 7)}, py:eval(<<"x">>, #{x => -(Big * 3 - 7)})).

load_big_list(_Config) ->
    L = lists:seq(1, 100000),
    ?assertEqual({ok, L}, py:eval(<<"x">>, #{x => L})),
    ?assertEqual({ok, lists:sum(L)}, py:eval(<<"sum(x)">>, #{x => L})),
    ?assertEqual({ok, lists:seq(0, 99999)}, py:eval(<<"list(range(100000))">>)),
    Mixed = [{I, integer_to_binary(I)} || I <- lists:seq(1, 100000)],
    ?assertEqual({ok, Mixed}, py:eval(<<"x">>, #{x => Mixed})),
    %% (big maps: see load_big_map, run in a peer node)
    ?assertEqual({ok, lists:seq(0, 99999)}, py:stream_eval(<<"iter(range(100000))">>)).

load_big_binary(_Config) ->
    Size = 10 * 1024 * 1024,
    %% not valid UTF-8: bytes both ways
    Bytes = binary:copy(<<1, 2, 3, 255>>, Size div 4),
    ?assertEqual({ok, Bytes}, py:eval(<<"x">>, #{x => Bytes})),
    ?assertEqual({ok, [<<"bytes">>, Size]},
                 py:eval(<<"[type(x).__name__, len(x)]">>, #{x => Bytes})),
    ?assertEqual({ok, Bytes}, py:eval(<<"x">>, #{x => {bytes, Bytes}})),
    %% valid UTF-8: str both ways
    Text = binary:copy(<<"abcé"/utf8>>, Size div 5),
    ?assertEqual({ok, Text}, py:eval(<<"x">>, #{x => Text})),
    ?assertEqual({ok, [<<"str">>, 4 * (Size div 5)]},
                 py:eval(<<"[type(x).__name__, len(x)]">>, #{x => Text})),
    %% made in Python
    {ok, FromPy} = py:eval(<<"b'\\xab' * (10 * 1024 * 1024)">>),
    ?assertEqual(Size, byte_size(FromPy)),
    ?assertEqual(binary:copy(<<16#ab>>, Size), FromPy),
    {ok, FromPy2} = py:eval(<<"'x' * (10 * 1024 * 1024)">>),
    ?assertEqual(binary:copy(<<"x">>, Size), FromPy2).

load_deep_nesting(_Config) ->
    Workers = worker_ids(),
    Deep1000 = nest(1000, []),
    ?assertEqual({ok, Deep1000}, py:eval(<<"x">>, #{x => Deep1000})),
    ?assertEqual({ok, 1000}, py:call(?HELPERS, depth, [Deep1000])),
    ?assertEqual({ok, Deep1000}, py:call(?HELPERS, deep_list, [1000])),
    DeepT = lists:foldl(fun(_, A) -> {A} end, {}, lists:seq(1, 1000)),
    ?assertEqual({ok, DeepT}, py:eval(<<"x">>, #{x => DeepT})),
    DeepM = lists:foldl(fun(_, A) -> #{k => A} end, #{}, lists:seq(1, 1000)),
    ?assertEqual({ok, lists:foldl(fun(_, A) -> #{<<"k">> => A} end, #{}, lists:seq(1, 1000))},
                 py:eval(<<"x">>, #{x => DeepM})),
    %% very deep: a clear ValueError or a correct result, never a crash
    Deep100k = nest(100000, []),
    In = py:eval(<<"x">>, #{x => Deep100k}),
    ?assert(case In of
                {error, {'ValueError', <<_/binary>>}} -> true;
                {ok, Deep100k} -> true;
                _ -> false
            end),
    Out = py:call(?HELPERS, deep_list, [100000]),
    ?assert(case Out of
                {error, {'ValueError', <<_/binary>>}} -> true;
                {ok, Deep100k} -> true;
                _ -> false
            end),
    In2 = py:call(?HELPERS, depth, [Deep100k]),
    ?assert(case In2 of
                {error, {'ValueError', <<_/binary>>}} -> true;
                {ok, 100000} -> true;
                _ -> false
            end),
    assert_pool_serves(),
    assert_pool_idle(Workers).

%%====================================================================
%% Extension modules, restart
%%====================================================================

extension_modules(_Config) ->
    lists:foreach(fun(M) ->
                          ?assertEqual({M, ok}, {M, py:exec(<<"import ", M/binary>>)})
                  end, [<<"_json">>, <<"_ssl">>, <<"_ctypes">>, <<"_asyncio">>,
                        <<"sqlite3">>, <<"json">>, <<"ssl">>, <<"ctypes">>, <<"asyncio">>,
                        <<"_decimal">>, <<"_hashlib">>, <<"zlib">>]),
    ?assertEqual({ok, 2},
                 py:eval(<<"__import__('sqlite3').connect(':memory:')"
                           ".execute('select 1 + 1').fetchone()[0]">>)),
    ?assertEqual({ok, 5}, py:eval(<<"__import__('ctypes').c_int(5).value">>)),
    ?assertEqual({ok, <<"{\"a\": [1, 2]}">>}, py:call(json, dumps, [#{a => [1, 2]}])),
    ?assertEqual({ok, 3}, py:eval(<<"(lambda a: a.run(a.sleep(0, result=3)))"
                                    "(__import__('asyncio'))">>)),
    ?assertMatch({ok, <<"OpenSSL", _/binary>>}, py:eval(<<"__import__('ssl').OPENSSL_VERSION">>)),
    %% failure: not a module
    ?assertMatch({error, {'ModuleNotFoundError', _}}, py:exec(<<"import _no_such_ext_xyz">>)).

app_restart(Config) ->
    Dir = list_to_binary(?config(helpers_dir, Config)),
    ?assertEqual({ok, true}, py:eval(<<"__import__('sys').modules.get('erlang') is not None">>)),
    ?assertEqual(ok, application:stop(erlang_python)),
    %% while stopped: a clear error, no crash
    ?assertEqual({error, not_running}, py:eval(<<"1 + 1">>)),
    ?assertEqual({error, not_running}, py:call(math, sqrt, [4])),
    ?assertMatch({ok, _}, application:ensure_all_started(erlang_python)),
    ?assertEqual({ok, 4.0}, py:call(math, sqrt, [16])),
    ?assertEqual({ok, true}, py:eval(<<"__import__('sys').modules.get('erlang') is not None">>)),
    %% python_path still applies, and the helpers still work
    ?assertEqual({ok, 7}, py:call(?HELPERS, add, [3, 4])),
    ?assertEqual({ok, 1}, py:eval(<<"__import__('sys').path.count(p)">>, #{p => Dir})),
    %% a second restart
    ?assertEqual(ok, application:stop(erlang_python)),
    ?assertMatch({ok, _}, application:ensure_all_started(erlang_python)),
    ?assertEqual({ok, 2}, py:eval(<<"1 + 1">>)),
    assert_pool_serves(),
    assert_pool_idle(),
    ?assertEqual(ok, no_stray_messages()).
