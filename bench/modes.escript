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
    Small = in_peer(Ebin, Nif, Mode, 4, {small_calls, []}),
    lists:foldl(fun(W, Acc) ->
                        Cpu = in_peer(Ebin, Nif, Mode, W, {cpu, [W, ?CALLERS]}),
                        maps:merge(Acc, Cpu)
                end, Small, ?WORKERS).

measure_stuck(Ebin, Nif) ->
    in_peer(Ebin, Nif, subinterp, 4, {stuck, []}).

in_peer(Ebin, Nif, Mode, Workers, {Fun, Args}) ->
    {ok, Peer, _Node} = peer:start_link(#{connection => standard_io,
                                         args => ["-pa", Ebin],
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
        {module, modes_peer} = peer:call(Peer, code, load_binary, [modes_peer, "modes_peer.erl", peer_code()]),
        peer:call(Peer, modes_peer, Fun, Args, 300000)
    after
        peer:stop(Peer)
    end.

%% The peer-side code (bench/modes_peer.erl), compiled here, loaded there.
peer_code() ->
    Src = filename:join(filename:dirname(filename:absname(escript:script_name())), "modes_peer.erl"),
    {ok, modes_peer, Bin} = compile:file(Src, [binary, report]),
    Bin.

median(L) -> lists:nth((length(L) + 1) div 2, lists:sort(L)).
