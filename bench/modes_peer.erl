%% Peer-side half of bench/modes.escript: runs in a VM started with one
%% execution mode; returns figures.
-module(modes_peer).
-export([cpu/2, small_calls/0, stuck/0]).


%% ?WORK with n = ?WORK_N takes about 20 ms on this machine (3.13, ~50 ns per turn).
-define(WORK_N, 400000).
-define(WORK, <<"sum([i * i for i in range(n)])">>).

cpu(W, Callers) ->
    N = ?WORK_N,
    %% warm-up: a fresh worker's first call is slower (code compiled,
    %% caches filled); the first measured figure must not pay for it
    _ = throughput(2 * W, N),
    maps:from_list([{{cpu, W, C}, throughput(C, N)} || C <- Callers]).

%% 32 calls in all, shared by the callers (about 0.64 s on one worker).
throughput(Callers, N) ->
    PerCaller = max(1, 32 div Callers),
    {Us, _} = timer:tc(fun() ->
                               Ps = [spawn_monitor(fun() ->
                                                           [{ok, _} = py:eval(?WORK, #{n => N}, 60000)
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
