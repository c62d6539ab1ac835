%% Python on other nodes (py_dist): remote calls, the cluster pool,
%% contexts across nodes, and what happens when nodes die or split.
%%
%% The suite makes this node distributed (short names, epmd on this
%% machine) and starts real peer nodes with the peer module, each running
%% erlang_python with 2 workers.  Peers are controlled over standard_io, so
%% that cutting a distribution connection (the netsplit case) does not stop
%% them.  All traffic stays on this machine.
-module(py_dist_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([remote_calls/1, local_node_and_bad_targets/1, unknown_node/1,
         node_killed_mid_call/1, cluster_spreads_load/1, cluster_node_leaves_and_joins/1,
         context_used_from_a_third_node/1, binder_killed_on_another_node/1,
         netsplit_releases_context/1, context_node_gone/1, holder_ends_with_application/1]).

-define(APP, erlang_python).

suite() ->
    [{timetrap, {minutes, 3}}].

all() ->
    [remote_calls, local_node_and_bad_targets, unknown_node, node_killed_mid_call,
     cluster_spreads_load, cluster_node_leaves_and_joins, context_used_from_a_third_node,
     binder_killed_on_another_node, netsplit_releases_context, context_node_gone,
     holder_ends_with_application].

init_per_suite(Config) ->
    WasAlive = is_alive(),
    case WasAlive of
        true -> ok;
        false ->
            _ = os:cmd("epmd -daemon"),
            {ok, _} = net_kernel:start([list_to_atom("py_dist_ct_" ++ os:getpid()), shortnames])
    end,
    Saved = py_test_lib:start_app([{num_workers, 2}]),
    [{was_alive, WasAlive}, {saved_env, Saved} | Config].

end_per_suite(Config) ->
    ok = py_test_lib:stop_app(proplists:get_value(saved_env, Config)),
    case proplists:get_value(was_alive, Config) of
        true -> ok;
        false -> net_kernel:stop()
    end,
    ok.

init_per_testcase(_Case, Config) ->
    {ok, _} = application:ensure_all_started(?APP),
    py_test_lib:flush_mailbox(),
    Config.

%% Every peer a case started is stopped, also when the case failed (a
%% live peer would stay a member of the cluster for the next cases).
end_per_testcase(_Case, _Config) ->
    [stop(P) || P <- started_peers()],
    py_test_lib:flush_mailbox().

%%====================================================================
%% Cases
%%====================================================================

remote_calls(_Config) ->
    {P, N} = start_node(),
    try
        ?assertEqual({ok, 4.0}, py_dist:call(N, math, sqrt, [16])),
        ?assertEqual({ok, <<"{\"a\": 1}">>}, py_dist:call(N, json, dumps, [#{a => 1}], #{indent => none})),
        ?assertEqual({ok, 42}, py_dist:eval(N, <<"x * 2">>, #{x => 21})),
        ?assertEqual(ok, py_dist:exec(N, <<"import math">>)),
        ?assertMatch({error, {'ZeroDivisionError', _}}, py_dist:eval(N, <<"1 / 0">>)),
        ?assertEqual({error, timeout}, py_dist:exec(N, <<"while True: pass">>, #{}, 100)),
        ?assertEqual({error, {badarg, timeout}}, py_dist:eval(N, <<"1">>, #{}, -1)),
        %% It ran there: the Python process is the peer's.
        PeerPid = list_to_integer(peer:call(P, os, getpid, [])),
        ?assertEqual({ok, PeerPid}, py_dist:eval(N, <<"__import__('os').getpid()">>)),
        ?assertNotEqual({ok, PeerPid}, py:eval(<<"__import__('os').getpid()">>)),
        %% Large data: a 4 MiB binary there and back.
        Big = binary:copy(<<"0123456789abcdef">>, 1 bsl 18),
        ?assertEqual({ok, byte_size(Big)}, py_dist:call(N, builtins, len, [Big])),
        ?assertEqual({ok, Big}, py_dist:eval(N, <<"b">>, #{b => Big})),
        ?assertEqual(nothing, stray())
    after
        stop(P)
    end.

local_node_and_bad_targets(_Config) ->
    ?assertEqual({ok, 4.0}, py_dist:call(node(), math, sqrt, [16])),
    ?assertEqual({ok, 3}, py_dist:eval(node(), <<"1 + 2">>)),
    ?assertEqual({error, {badarg, node}}, py_dist:call("not a node", math, sqrt, [16])),
    ?assertEqual({error, {badarg, node}}, py_dist:bind(42)).

unknown_node(_Config) ->
    [_, Host] = string:split(atom_to_list(node()), "@"),
    Nobody = list_to_atom("nobody_here@" ++ Host),
    ?assertEqual({error, {nodedown, Nobody}}, py_dist:call(Nobody, math, sqrt, [16])),
    ?assertEqual({error, {nodedown, Nobody}}, py_dist:bind(Nobody)),
    ?assertEqual(nothing, stray()).

%% The node dies (SIGKILL) while it runs a call with no timeout: the caller
%% hears {nodedown, Node} at once (the case's timetrap is the "never"), and
%% nothing comes later.
node_killed_mid_call(_Config) ->
    {P, N} = start_node(),
    OsPid = peer:call(P, os, getpid, []),
    Self = self(),
    spawn(fun() ->
                  %% (By then the call runs there; if not, it never will.)
                  timer:sleep(500),
                  _ = os:cmd("kill -9 " ++ OsPid),
                  Self ! killed
          end),
    ?assertEqual({error, {nodedown, N}}, py_dist:call(N, time, sleep, [60], #{}, infinity)),
    receive killed -> ok after 5000 -> error(not_killed) end,
    stop(P),
    ?assertEqual(nothing, stray()).

%% 3 peers and this node, 2 workers each: 24 concurrent 300 ms calls sent
%% to `cluster' run on every node.
cluster_spreads_load(_Config) ->
    Peers = [start_node() || _ <- lists:seq(1, 3)],
    Nodes = [node() | [N || {_, N} <- Peers]],
    wait_members(Nodes),
    Pids = maps:from_list([{list_to_integer(erpc:call(N, os, getpid, [])), N} || N <- Nodes]),
    Self = self(),
    Code = <<"__import__('time').sleep(0.3) or __import__('os').getpid()">>,
    [spawn(fun() -> Self ! {ran, py_dist:eval(cluster, Code)} end) || _ <- lists:seq(1, 24)],
    Ran = [receive {ran, R} -> R after 30000 -> error(no_answer) end || _ <- lists:seq(1, 24)],
    Counts = lists:foldl(fun({ok, Pid}, Acc) ->
                                 maps:update_with(maps:get(Pid, Pids), fun(C) -> C + 1 end, 1, Acc)
                         end, #{}, Ran),
    ct:pal("24 cluster calls per node: ~p", [Counts]),
    ?assertEqual(lists:sort(Nodes), lists:sort(maps:keys(Counts))),
    ?assertEqual(24, lists:sum(maps:values(Counts))),
    [stop(P) || {P, _} <- Peers],
    {comment, lists:flatten(io_lib:format("calls per node: ~w", [maps:values(Counts)]))}.

%% Calls keep going while a member leaves and another joins.
cluster_node_leaves_and_joins(_Config) ->
    {P1, N1} = start_node(),
    {P2, N2} = start_node(),
    wait_members([node(), N1, N2]),
    ok = busy_cluster(12),
    stop(P1),
    wait_members([node(), N2]),
    ok = busy_cluster(12),
    {P3, N3} = start_node(),
    wait_members([node(), N2, N3]),
    ok = busy_cluster(12),
    [stop(P) || P <- [P2, P3]],
    wait_members([node()]),
    ok = busy_cluster(4).

%% A context bound on N1 by this node, used from N2 as from here.
context_used_from_a_third_node(_Config) ->
    {P1, N1} = start_node(),
    {P2, N2} = start_node(),
    {ok, Ctx} = py:bind(new, N1),
    ?assertEqual(N1, py_dist:ctx_node(Ctx)),
    ?assertEqual(#{available_workers => 1}, available(N1)),
    ?assertEqual(ok, py:ctx_exec(Ctx, <<"x = 41">>)),
    ?assertEqual({ok, 42}, erpc:call(N2, py, ctx_eval, [Ctx, <<"x + 1">>])),
    ?assertEqual(ok, erpc:call(N2, py, ctx_exec, [Ctx, <<"x = 1">>])),
    ?assertEqual({ok, 1}, py_dist:ctx_eval(Ctx, <<"x">>)),
    ?assertEqual({ok, 2.0}, py:ctx_call(Ctx, math, sqrt, [4])),
    ?assertMatch({error, {'NameError', _}}, py:ctx_eval(Ctx, <<"undefined_name">>)),
    ?assertEqual(ok, py:unbind(Ctx)),
    ?assertEqual(ok, py:unbind(Ctx)),
    ?assertError(context_not_bound, py:ctx_eval(Ctx, <<"x">>)),
    ?assertError({exception, context_not_bound, _}, erpc:call(N2, py, ctx_eval, [Ctx, <<"x">>])),
    wait_available(N1, 2),
    [stop(P) || P <- [P1, P2]].

%% A process on N2 binds on N1 and is killed: N1's worker comes back.
binder_killed_on_another_node(_Config) ->
    {P1, N1} = start_node(),
    {P2, N2} = start_node(),
    Self = self(),
    Binder = spawn(N2, fun() ->
                               Self ! {bound, py:bind(new, N1)},
                               receive never -> ok end
                       end),
    {ok, Ctx} = receive {bound, B} -> B after 10000 -> error(not_bound) end,
    ?assertEqual({ok, 3}, py:ctx_eval(Ctx, <<"1 + 2">>)),
    ?assertEqual(#{available_workers => 1}, available(N1)),
    exit(Binder, kill),
    wait_available(N1, 2),
    ?assertError(context_not_bound, py:ctx_eval(Ctx, <<"1">>)),
    [stop(P) || P <- [P1, P2]].

%% The connection between the owner's node and the context's node is cut:
%% the binding is released there; used after the nodes meet again, the
%% context raises context_not_bound.
netsplit_releases_context(_Config) ->
    {P1, N1} = start_node(),
    {ok, Ctx} = py:bind(new, N1),
    ?assertEqual(ok, py:ctx_exec(Ctx, <<"kept = 1">>)),
    ?assertEqual(#{available_workers => 1}, available(N1)),
    true = erlang:disconnect_node(N1),
    %% Seen from the peer itself (peer:call goes over standard_io).
    ok = py_test_lib:wait_until(
           fun() -> S = peer:call(P1, py_pool, get_stats, []),
                    {maps:get(available_workers, S) =:= 2, S}
           end, 10000, not_released),
    ?assertError(context_not_bound, py:ctx_eval(Ctx, <<"kept">>)),
    ?assertEqual({ok, 4.0}, py_dist:call(N1, math, sqrt, [16])),
    stop(P1).

%% A context whose node is gone: {error, {nodedown, Node}}.
context_node_gone(_Config) ->
    {P1, N1} = start_node(),
    {ok, Ctx} = py:bind(new, N1),
    stop(P1),
    ?assertEqual({error, {nodedown, N1}}, py:ctx_eval(Ctx, <<"1">>)),
    ?assertEqual({error, {nodedown, N1}}, py:ctx_call(Ctx, math, sqrt, [4])),
    ?assertEqual(ok, py:unbind(Ctx)),
    ?assertEqual(nothing, stray()).

%% erlang_python stops on the context's node: the holder goes with it, and
%% after a restart the context is released (context_not_bound).
holder_ends_with_application(_Config) ->
    {P1, N1} = start_node(),
    {ok, {py_rctx, N1, Holder} = Ctx} = py:bind(new, N1),
    ?assert(erpc:call(N1, erlang, is_process_alive, [Holder])),
    ok = peer:call(P1, application, stop, [?APP]),
    ?assertNot(erpc:call(N1, erlang, is_process_alive, [Holder])),
    {ok, _} = peer:call(P1, application, ensure_all_started, [?APP], 30000),
    ?assertError(context_not_bound, py:ctx_eval(Ctx, <<"1">>)),
    ?assertEqual({ok, 2}, py_dist:eval(N1, <<"1 + 1">>)),
    stop(P1).

%%====================================================================
%% Helpers
%%====================================================================

%% A distributed peer node running erlang_python with 2 workers: {Peer, Node}.
start_node() ->
    Ebin = filename:dirname(code:which(py)),
    TestEbin = filename:dirname(code:which(?MODULE)),
    {ok, P, N} = peer:start(#{name => peer:random_name(py_dist_peer),
                              connection => standard_io,
                              args => ["-pa", Ebin, "-pa", TestEbin,
                                       "-setcookie", atom_to_list(erlang:get_cookie())]}),
    ok = peer:call(P, application, load, [?APP]),
    ok = peer:call(P, application, set_env, [?APP, num_workers, 2]),
    remember_peer(P),
    {ok, _} = peer:call(P, application, ensure_all_started, [?APP], 30000),
    true = net_kernel:connect_node(N),
    {P, N}.

%% The peers of the running case, kept by a registered process (the case
%% and end_per_testcase may run in different processes).
remember_peer(P) ->
    case whereis(py_dist_suite_peers) of
        undefined ->
            Keeper = spawn(fun() -> keep_peers([]) end),
            try register(py_dist_suite_peers, Keeper)
            catch error:badarg -> exit(Keeper, kill)
            end;
        _ -> ok
    end,
    py_dist_suite_peers ! {add, P},
    ok.

started_peers() ->
    case whereis(py_dist_suite_peers) of
        undefined -> [];
        Keeper ->
            Keeper ! {take, self()},
            receive {peers, Ps} -> Ps after 5000 -> [] end
    end.

keep_peers(Ps) ->
    receive
        {add, P} -> keep_peers([P | Ps]);
        {take, From} -> From ! {peers, Ps}, keep_peers([])
    end.

stop(P) ->
    catch peer:stop(P),
    ok.

%% Polls until py_dist knows exactly Nodes as members, with loads.
wait_members(Nodes) ->
    Want = lists:sort(Nodes),
    py_test_lib:wait_until(fun() ->
                                   M = py_dist:members(),
                                   L = py_dist:loads(),
                                   {M =:= Want andalso lists:sort(maps:keys(L)) =:= Want, {M, L}}
                           end, 10000, members).

%% N concurrent cluster calls, each must answer.
busy_cluster(N) ->
    Self = self(),
    [spawn(fun() -> Self ! {ran, py_dist:eval(cluster, <<"__import__('time').sleep(0.05) or 7">>)} end)
     || _ <- lists:seq(1, N)],
    Rs = [receive {ran, R} -> R after 30000 -> timeout end || _ <- lists:seq(1, N)],
    ?assertEqual(lists:duplicate(N, {ok, 7}), Rs),
    ok.

available(Node) ->
    maps:with([available_workers], erpc:call(Node, py_pool, get_stats, [])).

wait_available(Node, A) ->
    ok = py_test_lib:wait_until(fun() -> S = available(Node),
                                         {S =:= #{available_workers => A}, S}
                                end, 10000, {not_available, Node, A}).

stray() ->
    receive M -> {stray, M} after 200 -> nothing end.
