#!/usr/bin/env escript
%% erlang_python benchmarks: prints each figure as the median of several
%% rounds, next to an Erlang baseline measured in the same run, and the
%% ratio.  Run with `make bench'.  Figures, not assertions: nothing here fails
%% because of a number.
%%! -noshell

-mode(compile).
-define(ROUNDS, 9).

main(Args) ->
    Root = filename:dirname(filename:dirname(filename:absname(escript:script_name()))),
    true = code:add_patha(filename:join(Root, "_build/default/lib/erlang_python/ebin")),
    ok = logger:set_primary_config(level, warning),
    ok = application:load(erlang_python),
    ok = application:set_env(erlang_python, num_workers, 4),
    {ok, _} = application:ensure_all_started(erlang_python),
    {ok, V} = py:version(),
    io:format("erlang_python benchmarks~n"),
    io:format("machine: ~b cores (~s), OTP ~s, Python ~s~n", [erlang:system_info(logical_processors_available),
        erlang:system_info(system_architecture), erlang:system_info(otp_release),
        hd(binary:split(V, <<" ">>))]),
    io:format("each figure: median of ~b rounds~n~n", [?ROUNDS]),
    case Args of
        ["sleep" | _] ->   % escript bench/bench.escript sleep: that section only
            sleep_scaling();
        ["callbacks" | _] ->
            callbacks(start_echo());
        ["events" | _] ->
            events(Root);
        ["dist" | _] ->
            dist();
        ["motion" | _] ->
            motion();
        ["isolated" | _] ->
            isolated();
        _ ->
            Echo = start_echo(),
            latency(Echo),
            events(Root),
            dist(),
            throughput(Echo),
            data(),
            motion(),
            isolated(),
            callbacks(Echo),
            idle_cpu(),
            memory_per_worker(),
            sleep_scaling()
    end,
    ok.

%%--------------------------------------------------------------------
%% sequential latency
%%--------------------------------------------------------------------

latency(Echo) ->
    header("Sequential latency (us per call, one caller)"),
    N = 20000,
    ok = py:exec(<<"import math">>),
    Baseline = fun() -> x = gen_server:call(Echo, x) end,
    Calls = [fun() -> {ok, 4.0} = py:call(math, sqrt, [16]) end,
             fun() -> {ok, 2} = py:eval(<<"1 + 1">>) end,
             fun() -> ok = py:exec(<<"x = 1">>) end],
    C0 = py_nif:path_counts(),
    [GS | Unbound] = interleaved([Baseline | Calls], N),
    C1 = py_nif:path_counts(),
    ok = py:bind(),
    [GS2 | Bound] = interleaved([Baseline | Calls], N),
    ok = py:unbind(),
    C2 = py_nif:path_counts(),
    row("gen_server:call round trip (baseline)", GS, none),
    Names = ["py:call(math, sqrt, [16])", "py:eval(<<\"1 + 1\">>)     ", "py:exec(<<\"x = 1\">>)     "],
    [row(Name ++ "  unbound", V, GS) || {Name, V} <- lists:zip(Names, Unbound)],
    row("gen_server:call round trip (baseline, again)", GS2, none),
    [row(Name ++ "  bound", V, GS2) || {Name, V} <- lists:zip(Names, Bound)],
    Calls1 = length(Calls) * (N * ?ROUNDS + 1), % the rounds and one warm-up call each
    io:format("  answered while submitting (hand-over): ~.1f% unbound, ~.1f% bound~n~n",
              [100 * (maps:get(handed_over, C1) - maps:get(handed_over, C0)) / Calls1,
               100 * (maps:get(handed_over, C2) - maps:get(handed_over, C1)) / Calls1]).

%%--------------------------------------------------------------------
%% call events (py_events): what they cost a small call
%%--------------------------------------------------------------------

%% telemetry is not in Debian: the test suite's stand-in (same API, a
%% handler lookup in ETS per event, as telemetry's) plays it.
events(Root) ->
    header("Call events: us per py:call(math, sqrt, [16]), one caller"),
    Src = filename:join(Root, "test/py_observe_SUITE_data"),
    Ebin = filename:join(filename:basedir(user_cache, "erlang_python_bench"), "telemetry"),
    ok = filelib:ensure_dir(filename:join(Ebin, "x")),
    {ok, telemetry} = compile:file(filename:join(Src, "telemetry.erl"), [{outdir, Ebin}]),
    {ok, _} = file:copy(filename:join(Src, "telemetry.app"), filename:join(Ebin, "telemetry.app")),
    true = code:add_patha(Ebin),
    ok = py:exec(<<"import math">>),
    Call = fun() -> {ok, 4.0} = py:call(math, sqrt, [16]) end,
    Noop = fun(_, _, _, _) -> ok end,
    Off = fun() -> _ = application:stop(telemetry), false = py_events:refresh() end,
    On = fun() -> {ok, _} = application:ensure_all_started(telemetry), true = py_events:refresh() end,
    Handled = fun() ->
                      On(),
                      [ok = telemetry:attach({bench, E}, [erlang_python, call, E], Noop, [])
                       || E <- [start, stop, exception]]
              end,
    Setups = [Off, On, Handled],
    N = 20000,
    Rounds = [[begin Setup(), repeat(Call, 200), time_calls(Call, N) end || Setup <- Setups]
              || _ <- lists:seq(1, ?ROUNDS)],
    [Base, NoHandler, OneHandler] = [median([lists:nth(I, R) || R <- Rounds]) || I <- [1, 2, 3]],
    Off(),
    row("events off (telemetry not running: the default)", Base, none),
    row("events on, no handler attached", NoHandler, Base),
    row("events on, a no-op handler on start/stop/exception", OneHandler, Base),
    io:format("~n").

%%--------------------------------------------------------------------
%% distribution (py_dist): a call on another node of this machine
%%--------------------------------------------------------------------

dist() ->
    header("Remote calls (py_dist) to a peer node on this machine: us per call, one caller"),
    case is_alive() of
        true -> ok;
        false ->
            _ = os:cmd("epmd -daemon"),
            {ok, _} = net_kernel:start([list_to_atom("py_bench_" ++ os:getpid()), shortnames])
    end,
    Ebin = filename:dirname(code:which(py)),
    {ok, Peer, Node} = peer:start(#{name => peer:random_name(py_bench_peer),
                                    connection => standard_io,
                                    args => ["-pa", Ebin, "-setcookie",
                                             atom_to_list(erlang:get_cookie())]}),
    {ok, _} = peer:call(Peer, application, ensure_all_started, [erlang_python], 30000),
    true = net_kernel:connect_node(Node),
    Big = binary:copy(<<"0123456789abcdef">>, 1 bsl 16), % 1 MiB
    N = 2000,
    [Erpc, Remote] =
        interleaved([fun() -> Node = erpc:call(Node, erlang, node, []) end,
                     fun() -> {ok, 4.0} = py_dist:call(Node, math, sqrt, [16]) end], N),
    [ErpcBig, RemoteBig] =
        interleaved([fun() -> Big = erpc:call(Node, erlang, hd, [[Big]]) end,
                     fun() -> {ok, Big} = py_dist:eval(Node, <<"b">>, #{b => Big}) end], N div 10),
    row("erpc:call(Node, erlang, node, []) (baseline)", Erpc, none),
    row("py_dist:call(Node, math, sqrt, [16])", Remote, Erpc),
    row("erpc:call of a 1 MiB binary there and back (baseline)", ErpcBig, none),
    row("py_dist:eval(Node, <<\"b\">>, #{b => 1 MiB}) there and back", RemoteBig, ErpcBig),
    peer:stop(Peer),
    io:format("~n").

%%--------------------------------------------------------------------
%% execution_mode isolated: a peer node whose workers are OS processes
%%--------------------------------------------------------------------

%% Timed inside the peer by a module compiled there (peer:call per call
%% would add its own round trip); the in-process and ETF figures beside
%% them are timed the same way, in this node.
-define(ISO_BENCH, "
-module(py_bench_iso).
-export([per_call/2, crash_to_next/0]).
per_call({call, M, Fn, A, Want}, N) ->
    per_fun(fun() -> Want = py:call(M, Fn, A) end, N);
per_call({eval, Code, Locals, Want}, N) ->
    per_fun(fun() -> Want = py:eval(Code, Locals) end, N).
per_fun(F, N) ->
    F(),
    T0 = erlang:monotonic_time(nanosecond),
    loop(F, N),
    (erlang:monotonic_time(nanosecond) - T0) / N / 1000.
loop(_, 0) -> ok;
loop(F, N) -> F(), loop(F, N - 1).
%% ms from a segfault's answer to the next answered call (a new process)
crash_to_next() ->
    {error, {worker_exited, _}} = py:eval(<<\"__import__('ctypes').string_at(0)\">>),
    T0 = erlang:monotonic_time(microsecond),
    wait(T0).
wait(T0) ->
    case py_pool:get_stats() of
        #{available_workers := 4} ->
            {ok, 4.0} = py:call(math, sqrt, [16]),
            (erlang:monotonic_time(microsecond) - T0) / 1000;
        _ -> timer:sleep(1), wait(T0)
    end.
").

isolated() ->
    header("execution_mode isolated (workers in OS processes): us per call, one caller"),
    Ebin = filename:dirname(code:which(py)),
    {ok, Peer, _} = peer:start(#{connection => standard_io, args => ["-pa", Ebin]}),
    ok = peer:call(Peer, application, load, [erlang_python]),
    ok = peer:call(Peer, application, set_env, [erlang_python, execution_mode, isolated]),
    ok = peer:call(Peer, application, set_env, [erlang_python, num_workers, 4]),
    {ok, _} = peer:call(Peer, application, ensure_all_started, [erlang_python], 30000),
    Mod = load_bench_module(Peer),
    Big = binary:copy(<<"0123456789abcdef">>, 1 bsl 16), % 1 MiB
    Map = maps:from_list([{integer_to_binary(I), I} || I <- lists:seq(1, 1000)]),
    Local = fun(F, N) -> peer_free_per_call(F, N) end,
    Remote = fun(F, N) -> peer:call(Peer, Mod, per_call, [F, N], 600000) end,
    Cases = [{"py:call(math, sqrt, [16])", {call, math, sqrt, [16], {ok, 4.0}}, none, 5000},
             {"1 MiB binary there and back (py:eval <<\"b\">>)",
              {eval, <<"b">>, #{b => Big}, {ok, Big}},
              fun() -> Big = binary_to_term(term_to_binary(Big)) end, 200},
             {"1000-key map there and back (py:eval <<\"m\">>)",
              {eval, <<"m">>, #{m => Map}, {ok, Map}},
              fun() -> Map = binary_to_term(term_to_binary(Map)) end, 200}],
    lists:foreach(
      fun({Name, Call, Etf, N}) ->
              Rounds = [{Local(local_fun(Call), N), Remote(Call, N),
                         case Etf of none -> 1.0; _ -> Local(Etf, N) end}
                        || _ <- lists:seq(1, 5)],
              [In, Iso, E] = [median([element(I, R) || R <- Rounds]) || I <- [1, 2, 3]],
              row(Name ++ "  in process", In, none),
              row(Name ++ "  isolated", Iso, In),
              case Name of
                  "py:call" ++ _ -> ok;
                  _ -> row("    term_to_binary + binary_to_term of it (ETF baseline)", E, none),
                       io:format("    isolated / ETF round trip: ~.2fx~n", [Iso / E])
              end
      end, Cases),
    Crash = [peer:call(Peer, Mod, crash_to_next, [], 60000) || _ <- lists:seq(1, 9)],
    row("segfault to the next answered call on a new process (ms)", median(Crash), none),
    peer:stop(Peer),
    io:format("~n").

local_fun({call, M, F, A, Want}) -> fun() -> Want = py:call(M, F, A) end;
local_fun({eval, Code, Locals, Want}) -> fun() -> Want = py:eval(Code, Locals) end.

peer_free_per_call(F, N) ->
    F(),
    T0 = erlang:monotonic_time(nanosecond),
    repeat(F, N),
    (erlang:monotonic_time(nanosecond) - T0) / N / 1000.

load_bench_module(Peer) ->
    {ok, Toks, _} = erl_scan:string(?ISO_BENCH),
    Forms = [begin {ok, F} = erl_parse:parse_form(T), F end || T <- split_forms(Toks, [])],
    {ok, Mod, Bin} = compile:forms(Forms, [binary]),
    {module, Mod} = peer:call(Peer, code, load_binary, [Mod, "py_bench_iso.erl", Bin]),
    Mod.

split_forms([], []) -> [];
split_forms([{dot, _} = D | Rest], Acc) -> [lists:reverse([D | Acc]) | split_forms(Rest, [])];
split_forms([T | Rest], Acc) -> split_forms(Rest, [T | Acc]).

%%--------------------------------------------------------------------
%% throughput
%%--------------------------------------------------------------------

throughput(Echo) ->
    header("Throughput: C concurrent callers (us per call = wall time / calls)"),
    lists:foreach(
      fun(C) ->
              Total = 40000,
              PerCaller = Total div C,
              %% Rounds alternate between the two, so that both see the
              %% same moments of the machine.
              Pairs = [{concurrent(C, PerCaller, fun() -> x = gen_server:call(Echo, x) end),
                        concurrent(C, PerCaller, fun() -> {ok, 4.0} = py:call(math, sqrt, [16]) end)}
                       || _ <- lists:seq(1, ?ROUNDS)],
              GS = median([G || {G, _} <- Pairs]),
              Py = median([P || {_, P} <- Pairs]),
              row(io_lib:format("~2b callers: gen_server:call (baseline)", [C]), GS, none),
              row(io_lib:format("~2b callers: py:call(math, sqrt, [16])", [C]), Py, GS),
              io:format("   -> ~b py calls/s~n", [round(1.0e6 / Py)])
      end, [1, 8, 64]),
    io:format("~n").

concurrent(C, PerCaller, Fun) ->
    Parent = self(),
    T0 = erlang:monotonic_time(nanosecond),
    Pids = [spawn_link(fun() -> repeat(Fun, PerCaller), Parent ! {done, self()} end)
            || _ <- lists:seq(1, C)],
    [receive {done, P} -> ok end || P <- Pids],
    (erlang:monotonic_time(nanosecond) - T0) / (C * PerCaller) / 1000.

%%--------------------------------------------------------------------
%% data round trips
%%--------------------------------------------------------------------

data() ->
    header("Data round trips through copy.copy vs binary_to_term(term_to_binary(X)) (us)"),
    ok = py:exec(<<"import copy">>),
    Docs = [{"100k-integer list", lists:seq(1, 100000)},
            {"1000-entry map, binary keys",
             maps:from_list([{integer_to_binary(I), I} || I <- lists:seq(1, 1000)])},
            {"1 MiB binary", binary:copy(<<"x">>, 1 bsl 20)},
            {"nested document", doc(4)}],
    lists:foreach(
      fun({Name, Term}) ->
              [Base, Py] = interleaved([fun() -> Term = binary_to_term(term_to_binary(Term)) end,
                                        fun() -> {ok, _} = py:call(copy, copy, [Term]) end], 20),
              row("ext. term format: " ++ Name, Base, none),
              row("py:call(copy, copy): " ++ Name, Py, Base)
      end, Docs),
    io:format("~n").

doc(0) -> #{<<"id">> => 42, <<"name">> => <<"leaf">>, <<"score">> => 0.5, <<"tags">> => [<<"a">>, <<"b">>]};
doc(D) -> #{<<"level">> => D, <<"children">> => [doc(D - 1) || _ <- lists:seq(1, 4)],
            <<"meta">> => #{<<"ok">> => true, <<"n">> => D * 1000}}.

%%--------------------------------------------------------------------
%% data in motion: streams, channels, large binaries
%%--------------------------------------------------------------------

motion() ->
    stream_first_value(),
    stream_rate(),
    channel_rate(),
    large_binaries().

%% A generator that sleeps 100 ms before each of 5 values: when the first
%% value reaches Erlang through py:stream_start, and when py:stream (which
%% collects the whole list) returns.
stream_first_value() ->
    header("Stream of 5 values, one every 100 ms: time to the first value (ms)"),
    {ok, Ctx} = py:bind(new),
    ok = py:ctx_exec(Ctx, <<"import time\n"
                            "def every(interval, n):\n"
                            "    for i in range(n):\n"
                            "        time.sleep(interval)\n"
                            "        yield i\n">>),
    First = fun() ->
                    T0 = erlang:monotonic_time(microsecond),
                    {ok, Ref} = py:stream_start('__main__', every, [0.1, 5], #{ctx => Ctx}),
                    receive {py_stream, Ref, {data, 0}} -> ok end,
                    T1 = erlang:monotonic_time(microsecond),
                    ok = py:stream_cancel(Ref),
                    {ok, 1} = py:ctx_eval(Ctx, <<"1">>), % the worker is done with it
                    flush_stream(Ref),
                    (T1 - T0) / 1000
            end,
    Whole = fun() ->
                    T0 = erlang:monotonic_time(microsecond),
                    {ok, [0, 1, 2, 3, 4]} = py:ctx_eval(Ctx, <<"list(every(0.1, 5))">>),
                    (erlang:monotonic_time(microsecond) - T0) / 1000
            end,
    {ok, _} = py:ctx_eval(Ctx, <<"list(every(0, 1))">>),
    Firsts = [First() || _ <- lists:seq(1, 5)],
    Wholes = [Whole() || _ <- lists:seq(1, 3)],
    ok = py:unbind(Ctx),
    row("py:stream_start: first value (median of 5 starts)", median(Firsts), none),
    row("  of which the generator's own delay", 100, none),
    row("list(every(0.1, 5)) in one call (median of 3)", median(Wholes), none),
    io:format("~n").

flush_stream(Ref) ->
    receive {py_stream, Ref, _} -> flush_stream(Ref) after 0 -> ok end.

%% Values per second through a stream (range(N), window 64, one ack per
%% value), against Erlang messages between two processes.
stream_rate() ->
    header("Stream throughput (values per second; default window 64, one ack each)"),
    N = 100000,
    Stream = fun() ->
                     T0 = erlang:monotonic_time(microsecond),
                     {ok, Ref} = py:stream_start(builtins, range, [N]),
                     N = drain_stream(Ref, 0),
                     N / ((erlang:monotonic_time(microsecond) - T0) / 1.0e6)
             end,
    Erl = fun() ->
                  Self = self(),
                  T0 = erlang:monotonic_time(microsecond),
                  spawn(fun() -> [Self ! {v, I} || I <- lists:seq(1, N)] end),
                  N = drain_plain(N),
                  N / ((erlang:monotonic_time(microsecond) - T0) / 1.0e6)
          end,
    Rounds = [{Erl(), Stream()} || _ <- lists:seq(1, 5)],
    E = median([A || {A, _} <- Rounds]),
    S = median([B || {_, B} <- Rounds]),
    io:format("  ~-52s ~10b~n", ["Erlang process to process (baseline)", round(E)]),
    io:format("  ~-52s ~10b   (~.2fx of the baseline)~n~n",
              ["py:stream_start(builtins, range, [100000])", round(S), S / E]).

drain_stream(Ref, N) ->
    receive
        {py_stream, Ref, {data, _}} -> ok = py:stream_ack(Ref), drain_stream(Ref, N + 1);
        {py_stream, Ref, done} -> N
    end.

drain_plain(0) -> 0;
drain_plain(N) -> receive {v, _} -> 1 + drain_plain(N - 1) end.

%% 100k small messages through a channel, consumed by one Python call
%% (a loop of ch.receive() until the close): queued first, then sent while
%% the consumer runs.
channel_rate() ->
    header("Channel throughput: 100k small messages to one Python consumer (messages/s)"),
    N = 100000,
    Consume = <<"sum(1 for _ in ch)">>,
    Prefilled = fun() ->
                        {ok, Ch} = py_channel:new(),
                        [ok = py_channel:send(Ch, I) || I <- lists:seq(1, N)],
                        ok = py_channel:close(Ch),
                        T0 = erlang:monotonic_time(microsecond),
                        {ok, N} = py:eval(Consume, #{ch => Ch}),
                        N / ((erlang:monotonic_time(microsecond) - T0) / 1.0e6)
                end,
    Live = fun() ->
                   {ok, Ch} = py_channel:new(),
                   T0 = erlang:monotonic_time(microsecond),
                   spawn_link(fun() ->
                                      [ok = py_channel:send(Ch, I) || I <- lists:seq(1, N)],
                                      ok = py_channel:close(Ch)
                              end),
                   {ok, N} = py:eval(Consume, #{ch => Ch}),
                   N / ((erlang:monotonic_time(microsecond) - T0) / 1.0e6)
           end,
    Send = fun() ->
                   {ok, Ch} = py_channel:new(),
                   T0 = erlang:monotonic_time(microsecond),
                   [ok = py_channel:send(Ch, I) || I <- lists:seq(1, N)],
                   R = N / ((erlang:monotonic_time(microsecond) - T0) / 1.0e6),
                   ok = py_channel:close(Ch),
                   R
           end,
    Rounds = [{Send(), Prefilled(), Live()} || _ <- lists:seq(1, 5)],
    [S, P, L] = [median([element(I, R) || R <- Rounds]) || I <- [1, 2, 3]],
    io:format("  ~-52s ~10b~n", ["py_channel:send/2 alone (Erlang side)", round(S)]),
    io:format("  ~-52s ~10b~n", ["consumer over a filled channel", round(P)]),
    io:format("  ~-52s ~10b~n~n", ["consumer while a process sends (end to end)", round(L)]).

%% 64 MiB each way: {buffer, Bin} and large bytes (shared) against the
%% copying paths and one copy of 64 MiB (binary:copy/1: an allocation and
%% a memcpy) in the same run.
large_binaries() ->
    header("64 MiB binaries (ms; ratio to one binary:copy/1 of 64 MiB)"),
    Size = 64 bsl 20,
    Bin = crypto:strong_rand_bytes(Size), % not UTF-8: the default path gives bytes
    ok = py:bind(),
    ok = py:exec(<<"big = b'y' * (64 << 20)\narr = bytearray(big)">>),
    %% Each timed alone: the garbage of the one before (64 MiB binaries and
    %% bytes objects) is freed first, outside the timing.
    Ms = fun(F) -> fun() -> erlang:garbage_collect(), timer:sleep(5),
                            T0 = erlang:monotonic_time(microsecond), F(),
                            (erlang:monotonic_time(microsecond) - T0) / 1000 end end,
    Cases = [{"binary:copy/1 (baseline: one copy)", fun() -> _ = binary:copy(Bin) end},
             {"in:  py:call(len, [Bin]) default (copied)",
              fun() -> {ok, Size} = py:call(builtins, len, [Bin]) end},
             {"in:  py:call(len, [{buffer, Bin}])",
              fun() -> {ok, Size} = py:call(builtins, len, [{buffer, Bin}]) end},
             {"out: bytearray result (copied once)",
              fun() -> {ok, B} = py:eval(<<"arr">>), Size = byte_size(B) end},
             {"out: bytes result (shared)",
              fun() -> {ok, B} = py:eval(<<"big">>), Size = byte_size(B) end},
             {"round trip: copy.copy(Bin) (copied in, shared out)",
              fun() -> {ok, B} = py:call(copy, copy, [Bin]), Size = byte_size(B) end},
             {"round trip: bytearray(Bin) (copied in and out)",
              fun() -> {ok, B} = py:call(builtins, bytearray, [Bin]), Size = byte_size(B) end},
             {"round trip: {buffer, Bin} returned as it is",
              fun() -> {ok, B} = py:eval(<<"b">>, #{b => {buffer, Bin}}), Size = byte_size(B) end}],
    Funs = [Ms(F) || {_, F} <- Cases],
    [F() || F <- Funs],
    Rounds = [begin R = [F() || F <- Funs], erlang:garbage_collect(), R end
              || _ <- lists:seq(1, ?ROUNDS)],
    [Base | Rest] = [median([lists:nth(I, R) || R <- Rounds]) || I <- lists:seq(1, length(Funs))],
    [{BaseName, _} | RestCases] = Cases,
    row(BaseName, Base, none),
    [row(Name, V, Base) || {{Name, _}, V} <- lists:zip(RestCases, Rest)],
    ok = py:exec(<<"del big, arr">>),
    ok = py:unbind(),
    io:format("~n").

%%--------------------------------------------------------------------
%% callbacks
%%--------------------------------------------------------------------

%% Each round: 5000 callbacks timed inside Python, then 5000 round trips of
%% the baseline; medians of both.
callbacks(Echo) ->
    header("Python -> Erlang callback round trip (us, measured inside Python)"),
    ok = py:register_function(bench_noop, fun(_) -> ok end),
    Code = <<"(lambda e, t: (lambda t0: ([e.bench_noop() for _ in range(5000)],"
             " (t.perf_counter() - t0) / 5000 * 1e6)[1])(t.perf_counter()))"
             "(__import__('erlang'), __import__('time'))">>,
    Rounds = [begin
                  {ok, X} = py:eval(Code),
                  {X, time_calls(fun() -> x = gen_server:call(Echo, x) end, 5000)}
              end || _ <- lists:seq(1, ?ROUNDS)],
    GS = median([G || {_, G} <- Rounds]),
    row("gen_server:call round trip (baseline)", GS, none),
    row("erlang.bench_noop() from a synchronous py:eval", median([X || {X, _} <- Rounds]), GS),
    io:format("~n").

%%--------------------------------------------------------------------
%% idle CPU and memory
%%--------------------------------------------------------------------

idle_cpu() ->
    header("CPU used by the whole VM while the pool is idle"),
    timer:sleep(200),
    T0 = cpu_ticks(),
    timer:sleep(2000),
    T1 = cpu_ticks(),
    io:format("  ~.1f% of one core over 2 s (4 workers idle)~n~n", [(T1 - T0) / 2.0]).

cpu_ticks() ->
    %% utime + stime of this OS process, in 1/100 s.
    {ok, Stat} = file:read_file("/proc/self/stat"),
    [_, Rest] = binary:split(Stat, <<") ">>),
    Fields = binary:split(Rest, <<" ">>, [global]),
    binary_to_integer(lists:nth(12, Fields)) + binary_to_integer(lists:nth(13, Fields)).

memory_per_worker() ->
    header("Memory per worker (RSS growth when the pool grows 4 -> 68 workers)"),
    ok = py_semaphore:set_max_concurrent(128),
    Touch = fun() -> {ok, _} = py:parallel([{time, sleep, [0.05]} || _ <- lists:seq(1, 68)]) end,
    Touch(),
    R0 = rss_kb(),
    restart_with(68),
    ok = py_semaphore:set_max_concurrent(128),
    Touch(),
    R1 = rss_kb(),
    io:format("  ~b KiB resident per worker (thread stacks are reserved, not resident)~n~n",
              [round((R1 - R0) / 64)]),
    restart_with(4).

rss_kb() ->
    {ok, S} = file:read_file("/proc/self/status"),
    {match, [Kb]} = re:run(S, "VmRSS:\\s+(\\d+)", [{capture, all_but_first, binary}]),
    binary_to_integer(Kb).

%%--------------------------------------------------------------------
%% GIL-releasing calls scale across workers
%%--------------------------------------------------------------------

sleep_scaling() ->
    header("time.sleep(0.001): 32 callers on 16 workers, default max_concurrent "
           "vs the old default (us per call; rounds alternate)"),
    restart_with(16),
    Default = py_semaphore:max_concurrent(),
    Old = erlang:system_info(schedulers) * 2 + 1,
    Ideal = 1000 / 16,   % 16 parallel 1 ms sleeps: 62.5 us per call
    Run = fun(Max) ->
                  ok = py_semaphore:set_max_concurrent(Max),
                  concurrent(32, 10, fun() -> {ok, none} = py:call(time, sleep, [0.001]) end)
          end,
    Pairs = [{Run(Old), Run(Default)} || _ <- lists:seq(1, ?ROUNDS)],
    ok = py_semaphore:set_max_concurrent(Default),
    row("ideal (16 in parallel, 1 ms each)", Ideal, none),
    row(io_lib:format("old default, max_concurrent ~b", [Old]),
        median([A || {A, _} <- Pairs]), Ideal),
    row(io_lib:format("new default, max_concurrent ~b",
                      [Default]),
        median([B || {_, B} <- Pairs]), Ideal),
    restart_with(4),
    io:format("~n").

restart_with(N) ->
    ok = application:stop(erlang_python),
    ok = application:set_env(erlang_python, num_workers, N),
    {ok, _} = application:ensure_all_started(erlang_python).

%%--------------------------------------------------------------------
%% helpers
%%--------------------------------------------------------------------

start_echo() ->
    spawn_link(fun Loop() ->
                       receive {'$gen_call', From, Msg} -> gen_server:reply(From, Msg), Loop() end
               end).

%% Microseconds per call of each of Funs: N calls per round, the funs taking
%% turns within each round (so that a slow moment of the machine falls on
%% all of them), the median over ?ROUNDS rounds for each.
interleaved(Funs, N) ->
    [F() || F <- Funs],
    Rounds = [[time_calls(F, N) || F <- Funs] || _ <- lists:seq(1, ?ROUNDS)],
    [median([lists:nth(I, R) || R <- Rounds]) || I <- lists:seq(1, length(Funs))].

time_calls(Fun, N) ->
    T0 = erlang:monotonic_time(nanosecond),
    repeat(Fun, N),
    (erlang:monotonic_time(nanosecond) - T0) / N / 1000.

repeat(_, 0) -> ok;
repeat(F, N) -> F(), repeat(F, N - 1).

median(L) -> lists:nth((length(L) + 1) div 2, lists:sort(L)).

header(T) -> io:format("== ~s~n", [T]).

row(Name, Value, none) ->
    io:format("  ~-52s ~10.2f~n", [Name, float(Value)]);
row(Name, Value, Base) ->
    io:format("  ~-52s ~10.2f   (~.2fx)~n", [Name, float(Value), Value / Base]).
