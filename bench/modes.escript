#!/usr/bin/env escript
%% The two execution modes side by side on one Python build (3.12+):
%% shared_gil (worker threads sharing one GIL) and subinterp (a sub-
%% interpreter with its own GIL per worker).  The mode is fixed for the
%% life of a VM, so each measurement runs in a fresh peer VM, the modes
%% taking turns round after round (a slow moment of the machine falls on
%% both); each figure is the median over the rounds.  Figures, not
%% assertions.  Usage (make bench runs it when pyenv has 3.13):
%%   escript bench/modes.escript [path/to/py_nif.so]
-mode(compile).
-define(ROUNDS, 5).
-define(WORKERS, [1, 2, 4]).
-define(CALLERS, [2, 4, 8]).

main(Args) ->
    Root = filename:dirname(filename:dirname(filename:absname(escript:script_name()))),
    Ebin = filename:join(Root, "_build/default/lib/erlang_python/ebin"),
    Nif = case Args of
              [P | _] -> filename:absname(P);
              [] -> filename:join(Root, "_build/py3.13/py_nif.so")
          end,
    true = filelib:is_regular(Nif) orelse halt_with("no NIF build at " ++ Nif),
    io:format("erlang_python: execution modes side by side (~s)~n", [Nif]),
    io:format("machine: ~b cores; each figure: median of ~b rounds, modes alternating~n~n",
              [erlang:system_info(logical_processors_available), ?ROUNDS]),
    Modes = [shared_gil, subinterp],
    Rounds = [[{Mode, measure(Ebin, Nif, Mode)} || Mode <- Modes] || _ <- lists:seq(1, ?ROUNDS)],
    Get = fun(Mode, Key) -> median([maps:get(Key, M) || R <- Rounds, {Md, M} <- R, Md =:= Mode]) end,
    #{python := Py} = element(2, hd(hd(Rounds))),
    io:format("Python ~s~n~n", [Py]),
    io:format("== CPU-bound: a pure-Python call of ~~20 ms (calls per second; x = relative to 1 worker)~n"),
    io:format("  ~-12s ~-8s ~s~n", ["mode", "callers", string:join([io_lib:format("~10s", [io_lib:format("~b worker~s", [W, plural(W)])]) || W <- ?WORKERS], "")]),
    [begin
         Base = Get(Mode, {cpu, 1, C}),
         Cells = [begin V = Get(Mode, {cpu, W, C}),
                        io_lib:format("~6.1f ~.2fx", [V, V / Base]) end || W <- ?WORKERS],
         io:format("  ~-12s ~-8b ~s~n", [Mode, C, string:join(Cells, "  ")])
     end || Mode <- Modes, C <- ?CALLERS],
    io:format("~n== Small calls, one caller (us per call)~n"),
    [begin
         GS = Get(Mode, gen_server),
         io:format("  ~-12s gen_server:call ~6.2f   py:eval(1 + 1) ~6.2f (~.2fx)   py:call(math, sqrt) ~6.2f (~.2fx)~n",
                   [Mode, GS, Get(Mode, eval), Get(Mode, eval) / GS, Get(Mode, call), Get(Mode, call) / GS])
     end || Mode <- Modes],
    io:format("  subinterp / shared_gil, py:eval: ~.2fx, py:call: ~.2fx~n",
              [Get(subinterp, eval) / Get(shared_gil, eval), Get(subinterp, call) / Get(shared_gil, call)]),
    io:format("~n== One worker stuck in C (sum(range(10**10)), timeout 100 ms), 200 calls to the others~n"),
    #{stuck := Stuck, stuck_ok := Ok} = measure_stuck(Ebin, Nif),
    io:format("  subinterp: median ~.1f us per call, ~b of 200 answered~n", [Stuck, Ok]),
    ok.

plural(1) -> "";
plural(_) -> "s".

halt_with(Msg) ->
    io:format("~s~n", [Msg]),
    halt(1).

%% One peer VM per mode and worker count; returns the figures of a round.
measure(Ebin, Nif, Mode) ->
    Small = in_peer(Ebin, Nif, Mode, 4, fun small_calls/0),
    lists:foldl(fun(W, Acc) ->
                        Cpu = in_peer(Ebin, Nif, Mode, W, fun() -> cpu(W) end),
                        maps:merge(Acc, Cpu)
                end, Small, ?WORKERS).

measure_stuck(Ebin, Nif) ->
    in_peer(Ebin, Nif, subinterp, 4, fun stuck/0).

in_peer(Ebin, Nif, Mode, Workers, Fun) ->
    {ok, Peer} = peer:start_link(#{connection => standard_io,
                                   args => ["-pa", Ebin, "-pa", filename:dirname(code:which(?MODULE))],
                                   env => [{"ERLANG_PYTHON_NIF", Nif}]}),
    try
        ok = peer:call(Peer, application, load, [erlang_python]),
        [ok = peer:call(Peer, application, set_env, [erlang_python, K, V])
         || {K, V} <- [{num_workers, Workers}, {execution_mode, Mode}, {cancel_grace_ms, 500}]],
        {ok, _} = peer:call(Peer, application, ensure_all_started, [erlang_python], 30000),
        Mode = case peer:call(Peer, py, execution_mode, []) of
                   multi_executor -> shared_gil;
                   M -> M
               end,
        peer:call(Peer, erlang, apply, [Fun, []], 300000)
    after
        peer:stop(Peer)
    end.

%% ---- in the peer ----------------------------------------------------------

%% work(?WORK_N) takes about 20 ms on this machine (3.13, ~50 ns per turn).
-define(WORK_N, 400000).
-define(WORK, <<"def work(n):\n    s = 0\n    for i in range(n):\n        s += i * i\n    return s\n">>).

cpu(W) ->
    %% every worker gets the function (each has its own namespace)
    Ctxs = [begin {ok, C} = py:bind(new), C end || _ <- lists:seq(1, W)],
    [ok = py:ctx_exec(C, ?WORK) || C <- Ctxs],
    [py:unbind(C) || C <- Ctxs],
    N = ?WORK_N,
    maps:from_list([{{cpu, W, C}, throughput(C, N)} || C <- ?CALLERS]).

throughput(Callers, N) ->
    PerCaller = 4,
    {Us, _} = timer:tc(fun() ->
                               Ps = [spawn_monitor(fun() ->
                                                           [{ok, _} = py:call('__main__', work, [N])
                                                            || _ <- lists:seq(1, PerCaller)],
                                                           exit(done)
                                                   end) || _ <- lists:seq(1, Callers)],
                               [receive {'DOWN', M, process, P, done} -> ok end || {P, M} <- Ps]
                       end),
    Callers * PerCaller / (Us / 1.0e6).

small_calls() ->
    {ok, V} = py:version(),
    Echo = spawn_link(fun Loop() ->
                              receive {'$gen_call', From, Msg} -> gen_server:reply(From, Msg), Loop() end
                      end),
    N = 20000,
    T = fun(F) -> T0 = erlang:monotonic_time(nanosecond), rep(F, N),
                  (erlang:monotonic_time(nanosecond) - T0) / N / 1000 end,
    G = fun() -> x = gen_server:call(Echo, x) end,
    E = fun() -> {ok, 2} = py:eval(<<"1 + 1">>) end,
    C = fun() -> {ok, 4.0} = py:call(math, sqrt, [16]) end,
    [F() || F <- [G, E, C]],
    Rs = [{T(G), T(E), T(C)} || _ <- lists:seq(1, 3)],
    #{python => hd(binary:split(V, <<" ">>)),
      gen_server => median([A || {A, _, _} <- Rs]),
      eval => median([B || {_, B, _} <- Rs]),
      call => median([X || {_, _, X} <- Rs])}.

stuck() ->
    Self = self(),
    spawn(fun() -> Self ! {stuck, py:eval(<<"sum(range(10**10))">>, #{}, 100)} end),
    timer:sleep(20),
    Ts = [begin T0 = erlang:monotonic_time(nanosecond),
                R = py:eval(<<"x * 2">>, #{x => I}, 5000),
                {R, (erlang:monotonic_time(nanosecond) - T0) / 1000}
          end || I <- lists:seq(1, 200)],
    receive {stuck, _} -> ok after 5000 -> ok end,
    #{stuck => median([U || {_, U} <- Ts]), stuck_ok => length([x || {{ok, _}, _} <- Ts])}.

rep(_, 0) -> ok;
rep(F, N) -> F(), rep(F, N - 1).

median(L) -> lists:nth((length(L) + 1) div 2, lists:sort(L)).
