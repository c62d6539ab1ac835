%% Hostile input for erlang_python: terms Python cannot hold, arguments of
%% the wrong shape, bad names, bad timeouts, bad code, objects that cannot
%% be printed, exceptions that cannot be printed, unbounded recursion, huge
%% and deep and self-referential data, and unbounded numbers of exception
%% class names.  Each must give a clear error or a correct result: never a
%% crash, never an exception in the caller, never a wedged or replaced
%% worker, never a stray message.  After each case all 4 workers answer.
%%
%% Python helpers: py_hostile_SUITE_data/hostile_helpers.py.
-module(py_hostile_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0,
         init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).

-export([terms_unconvertible/1,
         args_wrong_shape/1,
         names_not_text/1,
         names_empty_dotted_odd/1,
         timeouts_bad/1,
         timeouts_huge/1,
         code_bad/1,
         code_pathological/1,
         results_unprintable/1,
         results_mutating/1,
         exceptions_unprintable/1,
         exceptions_odd_names/1,
         exceptions_base/1,
         recursion_unbounded/1,
         c_recursion_raised_limit/1,
         locals_shadowing_builtins/1,
         million_maps_both_ways/1,
         binary_100mib_both_ways/1,
         bignums_both_ways/1,
         self_referential/1,
         deep_100k_both_ways/1,
         exception_atoms_bounded/1]).

%% used inside a peer node
-export([peer_exception_atoms/1]).

-import(py_test_lib, [wait_pool_idle/2, worker_ids/0, all_workers_answer/1,
                      assert_no_stray/1]).

-define(H, hostile_helpers).
-define(NUM_WORKERS, 4).
-define(REPORT(Fmt, Args), ct:pal(100, Fmt, Args)).

suite() ->
    [{timetrap, {seconds, 120}}].

all() ->
    [terms_unconvertible,
     args_wrong_shape,
     names_not_text,
     names_empty_dotted_odd,
     timeouts_bad,
     timeouts_huge,
     code_bad,
     code_pathological,
     results_unprintable,
     results_mutating,
     exceptions_unprintable,
     exceptions_odd_names,
     exceptions_base,
     recursion_unbounded,
     c_recursion_raised_limit,
     locals_shadowing_builtins,
     million_maps_both_ways,
     binary_100mib_both_ways,
     bignums_both_ways,
     self_referential,
     deep_100k_both_ways,
     exception_atoms_bounded].

%%====================================================================
%% Setup
%%====================================================================

%% The application env here and in peer nodes.
env(DataDir) ->
    [{num_workers, ?NUM_WORKERS}, {python_path, [DataDir]}, {cancel_grace_ms, 1000}].

init_per_suite(Config) ->
    py_test_lib:start_suite(Config, fun env/1).

end_per_suite(Config) ->
    _ = py_test_lib:stop_suite(Config),
    ok.

init_per_testcase(_Case, Config) ->
    ok = py_test_lib:ensure_pool_idle(?NUM_WORKERS, 10000),
    [{workers_before, worker_ids()} | Config].

%% A case that broke the pool must not break the next ones: restart.
end_per_testcase(_Case, _Config) ->
    py_test_lib:recover_pool(?NUM_WORKERS, 10000).

%%====================================================================
%% Helpers
%%====================================================================

%% After a hostile case: no stray message, the pool idle and whole, the
%% same workers as before (none was lost), each of them answering, and the
%% interpreter still at its normal recursion limit.
healthy(Config) ->
    ok = assert_no_stray(300),
    ok = wait_pool_idle(?NUM_WORKERS, 10000),
    ok = all_workers_answer(?NUM_WORKERS),
    ok = wait_pool_idle(?NUM_WORKERS, 10000),
    ?assertEqual(?config(workers_before, Config), worker_ids()),
    ?assertEqual({ok, 1000}, py:call(?H, recursion_limit, [])),
    ok.

%% {error, {Type, Message}} from Python, Type one of Types.
assert_py_error(Types, Result) ->
    case Result of
        {error, {T, Msg}} when is_binary(Msg) ->
            case lists:member(type_text(T), [atom_to_binary(X) || X <- Types]) of
                true -> ok;
                false -> error({unexpected_error_type, T, Msg, {expected_one_of, Types}})
            end;
        _ ->
            error({not_a_python_error, Result, {expected_one_of, Types}})
    end.

%% An exception type as text: an atom, or a binary once the atom cap for
%% non-builtin exception names is reached.
type_text(T) when is_atom(T) -> atom_to_binary(T, utf8);
type_text(T) when is_binary(T) -> T.

nest(0, Acc, _Wrap) -> Acc;
nest(N, Acc, Wrap) -> nest(N - 1, Wrap(Acc), Wrap).

%% A pid of a node that is not this one.
remote_pid() ->
    Bin = term_to_binary(self()),
    Node = atom_to_binary(node()),
    Ghost = <<"g@", (binary:copy(<<"h">>, byte_size(Node) - 2))/binary>>,
    P = binary_to_term(binary:replace(Bin, Node, Ghost)),
    ?assertNotEqual(node(), node(P)),
    P.

%% Runs every request shape on Term, from this process: the term as an
%% argument, nested in containers, as a keyword value, as a local, through
%% call_async, through a context.
every_shape(Term) ->
    {ok, Ctx} = py:bind(new),
    try
        [py:call(builtins, repr, [Term]),
         py:call(builtins, repr, [[1, {a, Term}]]),
         py:call(builtins, repr, [#{k => [Term]}]),
         py:call(builtins, dict, [], #{k => Term}),
         py:call(builtins, len, [[1, 2, 3, 4, 5, 6, 7, 8, 9, Term]]),
         py:eval(<<"x">>, #{x => Term}),
         py:eval(<<"1">>, #{x => #{y => Term}}),
         py:exec(<<"pass">>, #{x => [Term]}),
         py:stream_eval(<<"iter(x)">>, #{x => [Term]}),
         py:await(py:call_async(builtins, repr, [Term])),
         py:ctx_call(Ctx, builtins, repr, [{Term}]),
         py:ctx_eval(Ctx, <<"x">>, #{x => Term})]
    after
        py:unbind(Ctx)
    end.

%%====================================================================
%% Terms and arguments
%%====================================================================

%% Ports, references, funs, improper lists, remote pids, bitstrings, as
%% arguments, nested, keyword values, locals and map keys: TypeError.
terms_unconvertible(Config) ->
    Port = open_port({spawn, "cat"}, []),
    try
        Bad = [Port, make_ref(), fun() -> ok end, fun lists:map/2,
               [1 | 2], [a, b | c], remote_pid(), <<1:3>>, <<"abc", 5:4>>],
        lists:foreach(
          fun(T) ->
                  Rs = every_shape(T),
                  lists:foreach(fun(R) -> assert_py_error(['TypeError'], R) end, Rs),
                  %% as a map key
                  assert_py_error(['TypeError'], py:eval(<<"x">>, #{x => #{T => 1}})),
                  assert_py_error(['TypeError'], py:call(builtins, repr, [#{T => 1}]))
          end, Bad),
        %% an improper list as the argument list itself, short and long
        assert_py_error(['TypeError'], py:call(builtins, max, [1 | 2])),
        assert_py_error(['TypeError'], py:call(builtins, max, [1, 2, 3, 4, 5, 6, 7, 8, 9 | 10])),
        assert_py_error(['TypeError'], py:call(builtins, max, [1 | 2], #{key => none})),
        %% non-text keyword and local names
        assert_py_error(['TypeError'], py:call(builtins, dict, [], #{1 => 2})),
        assert_py_error(['TypeError'], py:call(builtins, dict, [], #{<<255>> => 2})),
        assert_py_error(['TypeError'], py:call(builtins, dict, [], #{{a} => 2})),
        assert_py_error(['TypeError'], py:eval(<<"1">>, #{1 => 2})),
        assert_py_error(['TypeError'], py:eval(<<"1">>, #{<<255>> => 2})),
        assert_py_error(['TypeError'], py:eval(<<"1">>, #{[] => 2})),
        %% unhashable map keys (a list becomes a list)
        assert_py_error(['TypeError'], py:eval(<<"x">>, #{x => #{[1] => 1}})),
        assert_py_error(['TypeError'], py:eval(<<"x">>, #{x => #{#{} => 1}}))
    after
        port_close(Port)
    end,
    healthy(Config).

%% Args that are not lists, kwargs and locals that are not maps: badarg,
%% on every entry point.
args_wrong_shape(Config) ->
    {ok, Ctx} = py:bind(new),
    try
        NotList = [16, {16}, #{}, <<"16">>, none, self(), 1.5],
        NotMap = [[], [{a, 1}], none, 42, {}, <<>>, "x"],
        lists:foreach(
          fun(A) ->
                  ?assertEqual({error, {badarg, args}}, py:call(math, sqrt, A)),
                  ?assertEqual({error, {badarg, args}}, py:call(math, sqrt, A, #{})),
                  ?assertEqual({error, {badarg, args}}, py:call(math, sqrt, A, #{}, 1000)),
                  ?assertEqual({error, {badarg, args}}, py:stream(builtins, range, A)),
                  ?assertEqual({error, {badarg, args}}, py:await(py:call_async(math, sqrt, A))),
                  ?assertEqual({error, {badarg, args}}, py:ctx_call(Ctx, math, sqrt, A))
          end, NotList),
        lists:foreach(
          fun(K) ->
                  ?assertEqual({error, {badarg, kwargs}}, py:call(math, sqrt, [4], K)),
                  ?assertEqual({error, {badarg, kwargs}}, py:call(math, sqrt, [4], K, 1000)),
                  ?assertEqual({error, {badarg, kwargs}}, py:stream(builtins, range, [2], K)),
                  ?assertEqual({error, {badarg, kwargs}},
                               py:await(py:call_async(math, sqrt, [4], K))),
                  ?assertEqual({error, {badarg, kwargs}}, py:ctx_call(Ctx, math, sqrt, [4], K)),
                  ?assertEqual({error, {badarg, locals}}, py:eval(<<"1">>, K)),
                  ?assertEqual({error, {badarg, locals}}, py:eval(<<"1">>, K, 1000)),
                  ?assertEqual({error, {badarg, locals}}, py:exec(<<"pass">>, K)),
                  ?assertEqual({error, {badarg, locals}}, py:exec(<<"pass">>, K, 1000)),
                  ?assertEqual({error, {badarg, locals}}, py:stream_eval(<<"[]">>, K)),
                  ?assertEqual({error, {badarg, locals}}, py:ctx_eval(Ctx, <<"1">>, K)),
                  ?assertEqual({error, {badarg, locals}}, py:ctx_exec(Ctx, <<"pass">>, K))
          end, NotMap),
        %% the context still works
        ?assertEqual({ok, 2.0}, py:ctx_call(Ctx, math, sqrt, [4]))
    after
        py:unbind(Ctx)
    end,
    healthy(Config).

%% Module and function names that are neither atoms nor binaries.
names_not_text(Config) ->
    Bad = [42, "math", {math}, [], self(), 1.5, make_ref(), #{}, <<1:3>>, [<<"math">>]],
    lists:foreach(
      fun(N) ->
              ?assertEqual({error, {badarg, module}}, py:call(N, sqrt, [4])),
              ?assertEqual({error, {badarg, module}}, py:call(N, sqrt, [4], #{}, 1000)),
              ?assertEqual({error, {badarg, module}}, py:stream(N, range, [2])),
              ?assertEqual({error, {badarg, module}}, py:await(py:call_async(N, sqrt, [4]))),
              ?assertEqual({error, {badarg, function}}, py:call(math, N, [4])),
              ?assertEqual({error, {badarg, function}}, py:call(math, N, [4], #{}, 1000)),
              ?assertEqual({error, {badarg, function}}, py:await(py:call_async(math, N, [4])))
      end, Bad),
    healthy(Config).

%% Empty, dotted-empty, NUL-holding, non-UTF-8, huge and unicode names:
%% Python's own errors.
names_empty_dotted_odd(Config) ->
    Long = binary:copy(<<"a">>, 100000),
    Mods = [<<>>, '', <<".">>, '.', <<"..">>, <<"a..b">>, 'a..b', <<".os">>, <<"os.">>,
            <<"os..path">>, <<"ma", 0, "th">>, <<255, 254>>, Long, <<"modulé"/utf8>>,
            'ünïcödé_mödülé', <<" ">>, <<"math ">>],
    ModErrors = ['ValueError', 'ModuleNotFoundError', 'ImportError', 'TypeError',
                 'UnicodeDecodeError'],
    lists:foreach(fun(M) ->
                          assert_py_error(ModErrors, py:call(M, f, [])),
                          assert_py_error(ModErrors, py:call(M, <<".">>, []))
                  end, Mods),
    Funs = [<<>>, '', <<".">>, <<"..">>, <<"a..b">>, <<"sqrt.">>, <<".sqrt">>,
            <<"sq", 0, "rt">>, <<255>>, Long, <<"fünc"/utf8>>, 'fünc'],
    FunErrors = ['ValueError', 'AttributeError', 'NameError', 'UnicodeDecodeError'],
    lists:foreach(fun(F) ->
                          assert_py_error(FunErrors, py:call(math, F, [])),
                          assert_py_error(FunErrors, py:call(<<"os.path">>, F, [])),
                          assert_py_error(FunErrors, py:call('__main__', F, []))
                  end, Funs),
    %% specific, well-known answers
    ?assertMatch({error, {'ValueError', _}}, py:call(<<>>, sqrt, [4])),
    ?assertMatch({error, {'ValueError', _}}, py:call(math, '', [4])),
    ?assertMatch({error, {'ModuleNotFoundError', _}}, py:call(<<".">>, f, [])),
    ?assertMatch({error, {'ModuleNotFoundError', _}}, py:call(<<"a..b">>, f, [])),
    ?assertMatch({error, {'AttributeError', _}}, py:call(math, <<".">>, [])),
    ?assertMatch({error, {'AttributeError', _}}, py:call(math, <<"a..b">>, [])),
    ?assertMatch({error, {'NameError', _}}, py:call('__main__', <<".">>, [])),
    %% ordinary names still work
    ?assertEqual({ok, 2.0}, py:call(math, sqrt, [4])),
    ?assertEqual({ok, <<"a/b">>}, py:call(<<"os.path">>, join, [a, b])),
    healthy(Config).

%% Negative, non-integer and otherwise invalid timeouts: badarg everywhere.
timeouts_bad(Config) ->
    {ok, Ctx} = py:bind(new),
    try
        Bad = [-1, -1000, -(1 bsl 70), 1.5, 0.0, foo, "100", <<"100">>, {100}, [], none],
        lists:foreach(
          fun(T) ->
                  E = {error, {badarg, timeout}},
                  ?assertEqual(E, py:call(math, sqrt, [4], #{}, T)),
                  ?assertEqual(E, py:eval(<<"1">>, #{}, T)),
                  ?assertEqual(E, py:exec(<<"pass">>, #{}, T)),
                  ?assertEqual(E, py:ctx_call(Ctx, math, sqrt, [4], #{}, T)),
                  ?assertEqual(E, py:ctx_eval(Ctx, <<"1">>, #{}, T)),
                  Ref = py:call_async(math, sqrt, [4]),
                  ?assertEqual(E, py:await(Ref, T)),
                  %% the request itself is still there to collect
                  ?assertEqual({ok, 2.0}, py:await(Ref, 5000))
          end, Bad),
        %% 0 is a valid timeout: an answer or a timeout, nothing else
        lists:foreach(fun(_) ->
                              R = py:eval(<<"1">>, #{}, 0),
                              ?assert(R =:= {ok, 1} orelse R =:= {error, timeout})
                      end, lists:seq(1, 50)),
        ?assertEqual({ok, 2.0}, py:ctx_call(Ctx, math, sqrt, [4], #{}, infinity))
    after
        py:unbind(Ctx)
    end,
    healthy(Config).

%% A timeout is "a non-negative integer in ms or infinity": one beyond what
%% `receive ... after' accepts (2^32 - 1) must still give an answer (or a
%% badarg), not raise in the caller, and must leave no late reply behind.
timeouts_huge(Config) ->
    Huge = [1 bsl 32, 1 bsl 40, 1 bsl 70],
    Ok = fun(Expected, R) -> R =:= Expected orelse R =:= {error, {badarg, timeout}} end,
    Results = [{T,
                catch py:eval(<<"1">>, #{}, T),
                catch py:call(math, sqrt, [4], #{}, T),
                catch py:exec(<<"pass">>, #{}, T),
                catch py:await(py:call_async(math, sqrt, [4]), T)}
               || T <- Huge],
    ?REPORT("huge timeouts: ~P", [Results, 9]),
    lists:foreach(fun({_T, E, C, X, A}) ->
                          ?assert(Ok({ok, 1}, E)),
                          ?assert(Ok({ok, 2.0}, C)),
                          ?assert(Ok(ok, X)),
                          ?assert(Ok({ok, 2.0}, A))
                  end, Results),
    healthy(Config).

%% Code that is not text, not UTF-8, holds NUL bytes, or is not iodata.
code_bad(Config) ->
    NotText = [42, foo, 1.5, {<<"1">>}, self(), #{}, [<<"1">>, 1000], [<<"1">> | 2],
               [-1], <<1:3>>, [<<"1">>, <<1:3>>]],
    lists:foreach(fun(C) ->
                          ?assertEqual({error, {badarg, code}}, py:eval(C)),
                          ?assertEqual({error, {badarg, code}}, py:exec(C)),
                          ?assertEqual({error, {badarg, code}}, py:stream_eval(C)),
                          ?assertEqual({error, {badarg, code}}, py:eval(C, #{}, 1000))
                  end, NotText),
    %% not UTF-8
    NotUtf8 = [<<255, 254>>, <<"'", 200, "'">>, <<"x = '", 192, 128, "'">>,
               <<"'\xed\xa0\x80'">>],
    lists:foreach(fun(C) ->
                          assert_py_error(['SyntaxError'], py:eval(C)),
                          assert_py_error(['SyntaxError'], py:exec(C))
                  end, NotUtf8),
    %% a bad byte in a comment: CPython may skip it unread
    Comment = py:eval(<<"# ", 255, "\n1">>),
    ?assert(Comment =:= {ok, 1} orelse element(1, element(2, Comment)) =:= 'SyntaxError'),
    %% NUL bytes
    WithNul = [<<0>>, <<"1", 0, "+ 1">>, <<"x = 1", 0>>, [<<"x = 1">>, 0], <<"'", 0, "'">>],
    lists:foreach(fun(C) ->
                          assert_py_error(['ValueError', 'SyntaxError'], py:eval(C)),
                          assert_py_error(['ValueError', 'SyntaxError'], py:exec(C))
                  end, WithNul),
    %% empty code, a BOM, CRLF line ends: ordinary results or clear errors
    assert_py_error(['SyntaxError'], py:eval(<<>>)),
    ?assertEqual(ok, py:exec(<<>>)),
    ?assertEqual(ok, py:exec(<<"x = 1\r\ny = 2\r\n">>)),
    Bom = py:eval(<<239, 187, 191, "1 + 1">>),
    ?assert(Bom =:= {ok, 2} orelse element(1, element(2, Bom)) =:= 'SyntaxError'),
    healthy(Config).

%% Code the compiler chokes on: nesting and length beyond its limits.
code_pathological(Config) ->
    Dup = fun(N, S) -> lists:duplicate(N, S) end,
    Cases = [{iolist_to_binary([Dup(100000, "1+"), "1"]), 100001},
             {iolist_to_binary([Dup(100000, "("), "1", Dup(100000, ")")]), 1},
             {iolist_to_binary([Dup(10000, "["), Dup(10000, "]")]), nest(9999, [], fun(A) -> [A] end)},
             {iolist_to_binary([Dup(100000, "not "), "1"]), true},
             {iolist_to_binary([Dup(100000, "-"), "1"]), 1},
             {iolist_to_binary(["[", Dup(200000, "1,"), "]"]), lists:duplicate(200000, 1)}],
    lists:foreach(
      fun({Code, Value}) ->
              R = py:eval(Code),
              case R of
                  {ok, V} -> ?assertEqual(Value, V);
                  _ -> assert_py_error(['SyntaxError', 'RecursionError', 'MemoryError',
                                        'ValueError', 'OverflowError'], R)
              end
      end, Cases),
    healthy(Config).

%%====================================================================
%% Results and exceptions that fight back
%%====================================================================

%% Objects whose str()/repr() raise, return non-text, __index__/tolist that
%% raise or recurse: the result is an error (not a crash, not a garbled
%% value); ordinary odd objects convert.
results_unprintable(Config) ->
    assert_py_error(['RuntimeError'], py:call(?H, unprintable, [])),
    assert_py_error(['RuntimeError'], py:call(?H, unprintable_nested, [])),
    assert_py_error(['RuntimeError'], py:eval(<<"__import__('hostile_helpers').Unprintable()">>)),
    assert_py_error(['RuntimeError'],
                    py:stream_eval(<<"iter([1, __import__('hostile_helpers').Unprintable()])">>)),
    assert_py_error(['RuntimeError'],
                    py:eval(<<"{__import__('hostile_helpers').Unprintable()}">>)),
    assert_py_error(['RuntimeError'],
                    py:await(py:call_async(?H, unprintable, []))),
    assert_py_error(['TypeError'], py:eval(<<"__import__('hostile_helpers').StrNotText()">>)),
    assert_py_error(['ValueError'], py:eval(<<"__import__('hostile_helpers').BadIndex()">>)),
    assert_py_error(['ValueError'], py:eval(<<"__import__('hostile_helpers').BadToList()">>)),
    assert_py_error(['ValueError'], py:eval(<<"__import__('hostile_helpers').SelfToList()">>)),
    %% the same object as an exception argument is fine: the message is
    %% made by str() of the exception, which falls back
    ?assertMatch({error, {'ValueError', <<_/binary>>}},
                 py:exec(<<"raise ValueError(__import__('hostile_helpers').Unprintable())">>)),
    %% lone surrogates come back as their (surrogatepass) UTF-8 bytes
    ?assertEqual({ok, <<237, 160, 128>>}, py:eval(<<"'\\ud800'">>)),
    %% str subclasses and objects with a failing __getattr__ convert
    ?assertEqual({ok, <<"sub">>},
                 py:eval(<<"type('T', (), {'__str__': lambda s: type('S', (str,), {})('sub')})()">>)),
    ?assertEqual({ok, <<"fine">>},
                 py:eval(<<"type('T', (), {'__getattr__': lambda s, n: 1 / 0, "
                           "'__str__': lambda s: 'fine'})()">>)),
    healthy(Config).

%% Containers mutated by the str() of their own items while they convert.
results_mutating(Config) ->
    Mutators = [<<"(lambda l: (l.extend([type('M', (), {'__str__': "
                  "lambda s: (l.clear(), 'x')[1]})(), 1, 2, 3]), l)[1])([])">>,
                <<"(lambda l: (l.extend([type('M', (), {'__str__': "
                  "lambda s: (l.extend(range(100000)), 'x')[1]})(), 1]), l)[1])([])">>,
                <<"(lambda d: (d.update({0: type('M', (), {'__str__': "
                  "lambda s: (d.update({i: i for i in range(1, 1000)}), 'x')[1]})()}), d)[1])({})">>,
                <<"(lambda d: (d.update({i: i for i in range(100)}), d.update({0: type('M', (), "
                  "{'__str__': lambda s: (d.clear(), 'x')[1]})()}), d)[2])({})">>,
                <<"(lambda d: (d.update({i: i for i in range(100)}), d.update({0: type('M', (), "
                  "{'__str__': lambda s: ([d.pop(k) for k in list(d)[50:]], d.update({-i: i for i "
                  "in range(50)}), 'x')[2]})()}), d)[2])({})">>],
    lists:foreach(
      fun(Code) ->
              R = py:eval(Code),
              case R of
                  {ok, V} -> ?assert(is_list(V) orelse is_map(V));
                  _ -> assert_py_error(['RuntimeError'], R)
              end
      end, Mutators),
    healthy(Config).

%% Exceptions whose str() raises or is not text: the type is right, the
%% message says str() failed, the traceback is reachable.
exceptions_unprintable(Config) ->
    {error, {T1, M1}} = py:call(?H, raise_unprintable, []),
    ?assertEqual({<<"UnprintableError">>, <<"<exception str() failed>">>}, {type_text(T1), M1}),
    ?assertMatch(<<"Traceback", _/binary>>, py:last_traceback()),
    {error, {T2, M2}} = py:call(?H, raise_not_text, []),
    ?assertEqual({<<"NotTextError">>, <<"<exception str() failed>">>}, {type_text(T2), M2}),
    ?assertMatch(<<_/binary>>, py:last_traceback()),
    %% exception chains that loop, huge messages
    ?assertEqual({error, {'ValueError', <<"c">>}},
                 py:exec(<<"e = ValueError('c')\ne.__context__ = e\ne.__cause__ = e\nraise e">>)),
    {error, {'ValueError', Big}} = py:exec(<<"raise ValueError('x' * (10 << 20))">>),
    ?assertEqual(10 bsl 20, byte_size(Big)),
    healthy(Config).

%% Exception class names that are not plain ASCII or are very long: the
%% type is the class name, as an atom or (past limits) a binary, never a
%% garbled atom.
exceptions_odd_names(Config) ->
    Names = [<<"Ünïcödé"/utf8>>, <<"Érreur"/utf8>>, <<"Ошибка"/utf8>>, <<"错误"/utf8>>,
             binary:copy(<<"E">>, 255), binary:copy(<<"E">>, 300),
             <<"E", (binary:copy(<<"é"/utf8>>, 200))/binary>>],
    Results = [{N, py:exec(<<"raise type(n, (Exception,), {})('m')">>, #{n => N})}
               || N <- Names],
    ?REPORT("odd exception names: ~p", [Results]),
    lists:foreach(
      fun({N, R}) ->
              ?assertMatch({N, {error, {_, <<"m">>}}}, {N, R}),
              {error, {T, _}} = R,
              ?assertEqual(N, type_text(T))
      end, Results),
    healthy(Config).

%% BaseExceptions that are not Exceptions: ordinary errors.
exceptions_base(Config) ->
    ?assertMatch({error, {'SystemExit', _}}, py:exec(<<"raise SystemExit(3)">>)),
    ?assertMatch({error, {'SystemExit', _}}, py:exec(<<"import sys; sys.exit('bye')">>)),
    ?assertMatch({error, {'KeyboardInterrupt', _}}, py:exec(<<"raise KeyboardInterrupt">>)),
    ?assertMatch({error, {'GeneratorExit', _}}, py:exec(<<"raise GeneratorExit">>)),
    %% the library's own interruption, raised by hand
    ?assertMatch({error, {'Interrupted', <<"x">>}},
                 py:exec(<<"import erlang\nraise erlang.Interrupted('x')">>)),
    ?assertMatch({error, {'Interrupted', _}},
                 py:exec(<<"import erlang\nraise erlang.Interrupted">>)),
    healthy(Config).

%% Unbounded recursion with the recursion limit raised to a million: a
%% RecursionError (Python 3.11 frames live on the heap), the worker survives.
recursion_unbounded(Config) ->
    %% (slow: the traceback of a million frames is walked to format it)
    assert_py_error(['RecursionError', 'MemoryError'],
                    py:call(?H, unbounded_recursion, [], #{}, 100000)),
    assert_py_error(['RecursionError'],
                    py:exec(<<"def g(n): return g(n + 1)\ng(0)">>)),
    healthy(Config).

%% The same limit raised, but the recursion runs in C (comparing two lists
%% nested a million deep): the worker's C stack must not overflow, which
%% would take the whole VM down.  A RecursionError (or MemoryError) or the
%% right answer, and the VM still serving.  In a peer node, since a
%% failure here is a crash.
c_recursion_raised_limit(Config) ->
    Code = <<"import sys\n"
             "old = sys.getrecursionlimit()\n"
             "sys.setrecursionlimit(10 ** 6)\n"
             "try:\n"
             "    a, b = [], []\n"
             "    for _ in range(10 ** 6):\n"
             "        a, b = [a], [b]\n"
             "    same = a == b\n"
             "finally:\n"
             "    sys.setrecursionlimit(old)\n">>,
    Res = in_peer(Config, fun(Call) ->
                                  R = Call(py, exec, [Code, #{}, 60000]),
                                  {R, Call(py, eval, [<<"1 + 1">>])}
                          end),
    ?REPORT("== on 10^6-deep lists with the recursion limit at 10^6 (in a peer): ~P",
            [Res, 12]),
    {R1, R2} = Res,
    ?assert(R1 =:= ok orelse
            lists:member(element(1, element(2, R1)), ['RecursionError', 'MemoryError'])),
    ?assertEqual({ok, 2}, R2),
    healthy(Config).

%% Locals named like the namespace's own dunders: visible for that call
%% only; the namespace is whole afterwards on every worker.
locals_shadowing_builtins(Config) ->
    R1 = py:eval(<<"len([1])">>, #{'__builtins__' => 1}),
    ?assert(R1 =:= {ok, 1} orelse element(1, element(2, R1)) =:= 'TypeError'),
    R2 = py:eval(<<"__name__">>, #{'__name__' => <<"other">>}),
    ?assertEqual({ok, <<"other">>}, R2),
    Self = self(),
    _ = [spawn(fun() ->
                       Self ! {after_shadow, I,
                               py:eval(<<"(__import__('time').sleep(0.01), len([1, 2]), __name__)">>)}
               end) || I <- lists:seq(1, 12)],
    [receive {after_shadow, I, R} -> ?assertEqual({ok, {none, 2, <<"__main__">>}}, R) end
     || I <- lists:seq(1, 12)],
    healthy(Config).

%%====================================================================
%% Big, deep, self-referential
%%====================================================================

million_maps_both_ways(Config) ->
    L = [#{a => I, b => integer_to_binary(I)} || I <- lists:seq(0, 999999)],
    Expected = [#{<<"a">> => I, <<"b">> => integer_to_binary(I)} || I <- lists:seq(0, 999999)],
    ?assertEqual({ok, true}, py:call(?H, check_million_maps, [L])),
    {ok, Out} = py:call(?H, million_maps, []),
    ?assert(Out =:= Expected),
    {ok, Back} = py:eval(<<"x">>, #{x => L}),
    ?assert(Back =:= Expected),
    healthy(Config).

binary_100mib_both_ways(Config) ->
    Size = 100 bsl 20,
    Bytes = binary:copy(<<1, 2, 3, 255>>, Size div 4),
    ?assertEqual({ok, [<<"bytes">>, Size]},
                 py:eval(<<"[type(x).__name__, len(x)]">>, #{x => Bytes})),
    {ok, B1} = py:eval(<<"x">>, #{x => Bytes}),
    ?assert(B1 =:= Bytes),
    Text = binary:copy(<<"abcd">>, Size div 4),
    ?assertEqual({ok, [<<"str">>, Size]},
                 py:eval(<<"[type(x).__name__, len(x)]">>, #{x => Text})),
    {ok, T1} = py:eval(<<"x">>, #{x => Text}),
    ?assert(T1 =:= Text),
    {ok, B2} = py:eval(<<"b'\\xab' * (100 << 20)">>),
    ?assert(B2 =:= binary:copy(<<16#ab>>, Size)),
    {ok, B3} = py:eval(<<"bytearray(100 << 20)">>),
    ?assert(B3 =:= <<0:(Size * 8)>>),
    healthy(Config).

bignums_both_ways(Config) ->
    Big = 1 bsl 100000,
    ?assertEqual({ok, Big}, py:eval(<<"2**100000">>)),
    ?assertEqual({ok, -Big}, py:eval(<<"-2**100000">>)),
    ?assertEqual({ok, true}, py:eval(<<"x == 2**100000 and y == -2**100000">>,
                                     #{x => Big, y => -Big})),
    ?assertEqual({ok, Big * 3 + 1}, py:eval(<<"x">>, #{x => Big * 3 + 1})),
    %% the biggest integers Erlang can hold pass both ways ...
    Huge = (1 bsl ((1 bsl 24) - 64)) - 1,
    {ok, H} = py:eval(<<"x">>, #{x => Huge}),
    ?assert(H =:= Huge),
    ?assertEqual({ok, (1 bsl 24) - 64}, py:eval(<<"x.bit_length()">>, #{x => Huge})),
    %% ... and one too big for Erlang is a clear error
    ?assertMatch({error, {'OverflowError', <<_/binary>>}}, py:eval(<<"2**(2**27)">>)),
    healthy(Config).

self_referential(Config) ->
    lists:foreach(fun(F) -> assert_py_error(['ValueError'], py:call(?H, F, [])) end,
                  [self_list, self_dict, mutual]),
    assert_py_error(['ValueError'], py:eval(<<"(lambda l: (l.append(l), l)[1])([])">>)),
    assert_py_error(['ValueError'], py:eval(<<"(lambda d: (d.update(me=d), d)[1])({})">>)),
    %% inside a stream too
    assert_py_error(['ValueError'], py:stream_eval(<<"iter([(lambda l: (l.append(l), l)[1])([])])">>)),
    healthy(Config).

%% 100000-deep lists, tuples and maps both ways: a ValueError (the depth
%% limit is 10000); 5000-deep ones pass both ways exactly.
deep_100k_both_ways(Config) ->
    DeepL = nest(100000, [], fun(A) -> [A] end),
    DeepT = nest(100000, {}, fun(A) -> {A} end),
    DeepM = nest(100000, #{}, fun(A) -> #{k => A} end),
    lists:foreach(fun(D) ->
                          assert_py_error(['ValueError'], py:eval(<<"x">>, #{x => D})),
                          assert_py_error(['ValueError'], py:call(builtins, id, [D])),
                          assert_py_error(['ValueError'], py:exec(<<"pass">>, #{x => D}))
                  end, [DeepL, DeepT, DeepM]),
    lists:foreach(fun(K) ->
                          assert_py_error(['ValueError'], py:call(?H, deep, [K, 100000]))
                  end, [list, tuple, dict]),
    Ok = [{list, nest(5000, [], fun(A) -> [A] end)},
          {tuple, nest(5000, {}, fun(A) -> {A} end)},
          {dict, nest(5000, #{}, fun(A) -> #{<<"k">> => A} end)}],
    lists:foreach(fun({K, D}) ->
                          ?assertEqual({ok, D}, py:eval(<<"x">>, #{x => D})),
                          ?assertEqual({ok, 5000}, py:call(?H, depth, [D])),
                          ?assertEqual({ok, D}, py:call(?H, deep, [K, 5000]))
                  end, Ok),
    healthy(Config).

%%====================================================================
%% Atoms
%%====================================================================

%% 20000 distinct dynamically created exception classes: the atom table
%% grows by a bounded amount (the cap of 1000 new names, plus a little).
%% In a peer node, so that the atoms do not stay in this one.
exception_atoms_bounded(Config) ->
    N = 20000,
    Res = in_peer(Config, fun(Call) -> Call(?MODULE, peer_exception_atoms, [N]) end),
    ?assertMatch(#{}, Res),
    #{growth := Growth, atoms := NAtoms, binaries := NBins, wrong := Wrong,
      builtin_after := Builtin, existing_after := Existing} = Res,
    ?REPORT("~b exception classes: atom_count grew by ~b (~b names as atoms, ~b as binaries)",
            [N, Growth, NAtoms, NBins]),
    ?assertEqual([], Wrong),
    ?assertEqual(N, NAtoms + NBins),
    ?assert(Growth < 1200),
    %% (names that were atoms already come back as atoms too)
    ?assert(NAtoms =< 1100),
    ?assertMatch({error, {'ZeroDivisionError', _}}, Builtin),
    ?assertMatch({error, {'E1', <<"m">>}}, Existing),
    healthy(Config),
    {comment, lists:flatten(io_lib:format("atom growth ~b for ~b classes", [Growth, N]))}.

peer_exception_atoms(N) ->
    %% warm up: modules, traceback formatting, the error path
    {error, {'ZeroDivisionError', _}} = py:eval(<<"1 / 0">>),
    {error, {'ValueError', _}} = py:exec(<<"raise ValueError('w')">>),
    Code = <<"raise type('E' + str(i), (Exception,), {})('m')">>,
    Before = erlang:system_info(atom_count),
    Results = [{I, py:exec(Code, #{i => I})} || I <- lists:seq(1, N)],
    After = erlang:system_info(atom_count),
    Name = fun(I) -> <<"E", (integer_to_binary(I))/binary>> end,
    Wrong = [{I, R} || {I, R} <- Results,
                       case R of
                           {error, {T, <<"m">>}} when is_atom(T) -> atom_to_binary(T) =/= Name(I);
                           {error, {T, <<"m">>}} when is_binary(T) -> T =/= Name(I);
                           _ -> true
                       end],
    NAtoms = length([x || {_, {error, {T, _}}} <- Results, is_atom(T)]),
    NBins = length([x || {_, {error, {T, _}}} <- Results, is_binary(T)]),
    #{growth => After - Before, atoms => NAtoms, binaries => NBins,
      wrong => lists:sublist(Wrong, 5),
      builtin_after => py:eval(<<"1 / 0">>),
      existing_after => py:exec(Code, #{i => 1})}.

%% Runs Fun(Call) against a fresh peer VM with the application started;
%% Call(M, F, A) runs there.
in_peer(Config, Fun) ->
    py_test_lib:in_peer(env(?config(helpers_dir, Config)), 90000, Fun).
