#!/usr/bin/env escript
%% The erlang_python demo: starts the application and walks through the core
%% calls, printing each call and what it returned.  Run with `make demo'.
%%! -noshell

main(_) ->
    Root = filename:dirname(filename:dirname(filename:absname(escript:script_name()))),
    true = code:add_patha(filename:join(Root, "_build/default/lib/erlang_python/ebin")),
    ok = logger:set_primary_config(level, warning),
    {ok, _} = application:ensure_all_started(erlang_python),
    {ok, Version} = py:version(),
    io:format("erlang_python demo - embedded Python ~s~n~n", [hd(binary:split(Version, <<" ">>))]),

    section("Call a function: py:call(Module, Func, Args)"),
    show("py:call(math, sqrt, [16])", py:call(math, sqrt, [16])),
    show("py:call('os.path', join, [<<\"/usr\">>, <<\"lib\">>])",
         py:call('os.path', join, [<<"/usr">>, <<"lib">>])),

    section("Keyword arguments: py:call(M, F, Args, Kwargs)"),
    show("py:call(json, dumps, [#{b => 1, a => [1, 2.5, none]}], #{sort_keys => true})",
         py:call(json, dumps, [#{b => 1, a => [1, 2.5, none]}], #{sort_keys => true})),

    section("Evaluate an expression, with locals"),
    show("py:eval(<<\"2 ** 100\">>)", py:eval(<<"2 ** 100">>)),
    show("py:eval(<<\"[x * y for y in range(4)]\">>, #{x => 10})",
         py:eval(<<"[x * y for y in range(4)]">>, #{x => 10})),

    section("Run statements, then call what they defined (one bound worker)"),
    ok = py:bind(),
    show("py:exec(<<\"def greet(name): return 'hello ' + name\">>)",
         py:exec(<<"def greet(name):\n    return 'hello ' + name\n">>)),
    show("py:call('__main__', greet, [<<\"erlang\">>])",
         py:call('__main__', greet, [<<"erlang">>])),
    ok = py:unbind(),

    section("Context affinity: bind/unbind keeps Python state across calls"),
    show("py:bind()", py:bind()),
    show("py:exec(<<\"counter = 0\">>)", py:exec(<<"counter = 0">>)),
    show("py:exec(<<\"counter += 1\">>)", py:exec(<<"counter += 1">>)),
    show("py:eval(<<\"counter\">>)", py:eval(<<"counter">>)),
    show("py:unbind()", py:unbind()),

    section("Explicit contexts: py:bind(new), two isolated namespaces"),
    {ok, Ctx1} = py:bind(new),
    {ok, Ctx2} = py:bind(new),
    show("py:ctx_exec(Ctx1, <<\"x = 'one'\">>)", py:ctx_exec(Ctx1, <<"x = 'one'">>)),
    show("py:ctx_exec(Ctx2, <<\"x = 'two'\">>)", py:ctx_exec(Ctx2, <<"x = 'two'">>)),
    show("py:ctx_eval(Ctx1, <<\"x\">>)", py:ctx_eval(Ctx1, <<"x">>)),
    show("py:ctx_eval(Ctx2, <<\"x\">>)", py:ctx_eval(Ctx2, <<"x">>)),
    show("py:unbind(Ctx1)", py:unbind(Ctx1)),
    show("py:unbind(Ctx2)", py:unbind(Ctx2)),

    section("Scoped: py:with_context(Fun) binds for the fun only"),
    show("py:with_context(fun() -> ok = py:exec(<<\"y = 21\">>), py:eval(<<\"y * 2\">>) end)",
         py:with_context(fun() -> ok = py:exec(<<"y = 21">>), py:eval(<<"y * 2">>) end)),
    show("py:is_bound()", py:is_bound()),

    section("Python errors come back as {error, {Type, Message}}"),
    show("py:eval(<<\"1 / 0\">>)", py:eval(<<"1 / 0">>)),
    show("py:call(no_such_module, f, [])", py:call(no_such_module, f, [])),
    io:format("  traceback of the last error:~n~s~n", [indent(py:last_traceback())]),

    section("A timeout interrupts the running Python code"),
    T0 = erlang:monotonic_time(millisecond),
    show("py:exec(<<\"while True: pass\">>, #{}, 200)", py:exec(<<"while True: pass">>, #{}, 200)),
    io:format("  returned after ~b ms; the worker is free again:~n",
              [erlang:monotonic_time(millisecond) - T0]),
    show("py:eval(<<\"1 + 1\">>)", py:eval(<<"1 + 1">>)),

    section("Python calls back into Erlang"),
    ok = py:register_function(erlang_sum, fun(Args) -> lists:sum(Args) end),
    show("py:eval(<<\"erlang.erlang_sum(1, 2, 3)\">>)",
         py:eval(<<"erlang.erlang_sum(1, 2, 3)">>)),

    section("A stream: each value as the generator yields it (py:stream_start)"),
    {ok, SRef} = py:stream_start(itertools, accumulate, [[1, 2, 3, 4]]),
    StreamLoop = fun Loop() ->
                         receive
                             {py_stream, SRef, {data, V}} ->
                                 io:format("  {py_stream, Ref, {data, ~tp}}~n", [V]),
                                 ok = py:stream_ack(SRef),
                                 Loop();
                             {py_stream, SRef, End} ->
                                 io:format("  {py_stream, Ref, ~tp}~n", [End])
                         after 5000 -> io:format("  (no message)~n")
                         end
                 end,
    StreamLoop(),

    section("A channel: Erlang data fed into running Python (py_channel)"),
    {ok, Ch} = py_channel:new(#{type => bytes}),
    spawn(fun() -> [py_channel:send(Ch, C) || C <- [<<"{\"items\": [1, ">>, <<"2, 3]}">>]],
                   py_channel:close(Ch) end),
    show("py:eval(<<\"__import__('json').load(body)\">>, #{body => Ch})",
         py:eval(<<"__import__('json').load(body)">>, #{body => Ch})),

    section("A large binary without a copy: {buffer, Bin}"),
    Big = binary:copy(<<"0123456789abcdef">>, 4 bsl 20),
    show("py:call(builtins, len, [{buffer, Big}])   % 64 MiB, not copied", py:call(builtins, len, [{buffer, Big}])),

    section("Pool statistics: py_pool:get_stats()"),
    io:format("  ~p~n", [py_pool:get_stats()]),
    ok = application:stop(erlang_python),
    io:format("~ndone.~n").

section(Title) ->
    io:format("~n== ~s~n", [Title]).

show(Call, Result) ->
    io:format("  ~s~n    -> ~tp~n", [Call, Result]).

indent(undefined) -> "    (none)";
indent(Text) ->
    [["    ", L, "\n"] || L <- string:split(string:trim(Text), "\n", all)].
