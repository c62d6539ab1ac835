%% @doc Python on other nodes, through Erlang's distribution.
%%
%% Addressing: every function takes a node name, or the atom `cluster':
%% the least-loaded node of the cluster (the nodes running erlang_python
%% that this node is connected to, members of a `pg' group).  A remote call
%% runs `py:call/5', `py:eval/3' or `py:exec/3' on that node in a process
%% that `erpc' spawns there: arguments and result cross the wire once, in
%% the external term format.
%%
%% Results, errors and timeouts are those of the local calls, and:
%% <ul>
%% <li>`{error, {nodedown, Node}}' at once when the node is down or goes
%%     down during the call (erpc watches the connection; no late reply
%%     reaches the caller afterwards);</li>
%% <li>`{error, {not_running, Node}}' when erlang_python is not loaded
%%     there; `{error, not_running}' when it is loaded but not started.</li>
%% </ul>
%%
%% Placement for `cluster': the local node when it has a free worker and
%% nothing queued; else the member with the most free workers (then the
%% fewest queued requests per worker), as last published.  Every node
%% publishes its load to the others when it changes (checked every
%% 50 ms, and every 250 ms in any case); a node that picks another counts
%% one of that node's free workers as taken until the next publication, so
%% that a burst spreads.  Members come and go with their connections.
%%
%% Contexts: `bind(Node)' binds a worker on Node to the calling process and
%% returns a context that works from any node (`ctx_*' here, or
%% `py:ctx_*'): a holder process on Node keeps the binding and monitors its
%% owner, wherever it lives; the binding is released when the owner dies,
%% when the connection to the owner's node is lost, or on `unbind/1'.  A
%% call on a released context raises `error(context_not_bound)', as a local
%% one does; on a context whose node is down it returns
%% `{error, {nodedown, Node}}'.
-module(py_dist).
-behaviour(gen_server).

-export([call/4, call/5, call/6, eval/2, eval/3, eval/4, exec/2, exec/3, exec/4,
         bind/1, unbind/1, ctx_call/4, ctx_call/5, ctx_call/6, ctx_eval/2, ctx_eval/3,
         ctx_eval/4, ctx_exec/2, ctx_exec/3, ctx_exec/4, ctx_node/1, members/0, loads/0,
         pick/0, scope/0]).
%% Run on the node a request goes to (through erpc).
-export([local/2, hold/1, ctx_local/3, release/1]).
-export([start_link/0, init/1, handle_call/3, handle_cast/2, handle_info/2]).

-export_type([target/0, ctx/0, load/0]).

-define(SCOPE, erlang_python_dist).
-define(GROUP, erlang_python).
-define(LOADS, py_dist_loads).
-define(CONTEXTS, py_dist_contexts).
-define(TIMEOUT, 30000).
-define(TICK_MS, 50).
-define(HEARTBEAT_TICKS, 5).
%% What a remote call may take beyond its own timeout (the network, the
%% remote worker's own answer to the timeout) before erpc gives up.
-define(GRACE_MS, 2000).
%% A timeout py accepts (checked here: a bad one must not reach erpc).
-define(VALID_TIMEOUT(T), (T =:= infinity orelse (is_integer(T) andalso T >= 0))).

-type target() :: node() | cluster.
-type ctx() :: {py_rctx, node(), pid()}. % (matched by py's ctx_* functions)
-type load() :: #{free := non_neg_integer(), workers := non_neg_integer(),
                  pending := non_neg_integer()}.
-type request() :: {call, py:name(), py:name(), list(), map()}
                 | {eval | exec, py:code(), py:locals()}.
-type result() :: {ok, term()} | ok | {error, term()}.

%%====================================================================
%% Calls
%%====================================================================

%% @doc `py:call/3' on Node (or on the least-loaded node: `cluster').
-spec call(target(), py:name(), py:name(), list()) -> {ok, term()} | {error, term()}.
call(Node, Module, Func, Args) ->
    call(Node, Module, Func, Args, #{}, ?TIMEOUT).

%% @doc `py:call/4' on Node.
-spec call(target(), py:name(), py:name(), list(), map()) -> {ok, term()} | {error, term()}.
call(Node, Module, Func, Args, Kwargs) ->
    call(Node, Module, Func, Args, Kwargs, ?TIMEOUT).

%% @doc `py:call/5' on Node.
-spec call(target(), py:name(), py:name(), list(), map(), py:timeout_ms()) ->
          {ok, term()} | {error, term()}.
call(Node, Module, Func, Args, Kwargs, Timeout) ->
    run(Node, {call, Module, Func, Args, Kwargs}, Timeout).

%% @doc `py:eval/1' on Node.
-spec eval(target(), py:code()) -> {ok, term()} | {error, term()}.
eval(Node, Code) ->
    eval(Node, Code, #{}, ?TIMEOUT).

%% @doc `py:eval/2' on Node.
-spec eval(target(), py:code(), py:locals()) -> {ok, term()} | {error, term()}.
eval(Node, Code, Locals) ->
    eval(Node, Code, Locals, ?TIMEOUT).

%% @doc `py:eval/3' on Node.
-spec eval(target(), py:code(), py:locals(), py:timeout_ms()) -> {ok, term()} | {error, term()}.
eval(Node, Code, Locals, Timeout) ->
    run(Node, {eval, Code, Locals}, Timeout).

%% @doc `py:exec/1' on Node.
-spec exec(target(), py:code()) -> ok | {error, term()}.
exec(Node, Code) ->
    exec(Node, Code, #{}, ?TIMEOUT).

%% @doc `py:exec/2' on Node.
-spec exec(target(), py:code(), py:locals()) -> ok | {error, term()}.
exec(Node, Code, Locals) ->
    exec(Node, Code, Locals, ?TIMEOUT).

%% @doc `py:exec/3' on Node.
-spec exec(target(), py:code(), py:locals(), py:timeout_ms()) -> ok | {error, term()}.
exec(Node, Code, Locals, Timeout) ->
    run(Node, {exec, Code, Locals}, Timeout).

-spec run(target(), request(), py:timeout_ms()) -> result().
run(_Node, _Req, Timeout) when not ?VALID_TIMEOUT(Timeout) ->
    {error, {badarg, timeout}};
run(cluster, Req, Timeout) ->
    run(pick(), Req, Timeout);
run(Node, Req, Timeout) when Node =:= node() ->
    local(Req, Timeout);
run(Node, Req, Timeout) when is_atom(Node) ->
    remote(Node, local, [Req, Timeout], Timeout);
run(_Node, _Req, _Timeout) ->
    {error, {badarg, node}}.

%% @private
%% Runs a request here (erpc runs it in a process of its own).
-spec local(request(), py:timeout_ms()) -> result().
local({call, Module, Func, Args, Kwargs}, Timeout) ->
    py:call(Module, Func, Args, Kwargs, Timeout);
local({eval, Code, Locals}, Timeout) ->
    py:eval(Code, Locals, Timeout);
local({exec, Code, Locals}, Timeout) ->
    py:exec(Code, Locals, Timeout).

%% erpc:call of ?MODULE:F(A) on Node, its failures as error tuples.
remote(Node, F, A, Timeout) ->
    try
        erpc:call(Node, ?MODULE, F, A, erpc_timeout(Timeout))
    catch
        error:{erpc, noconnection} -> {error, {nodedown, Node}};
        error:{erpc, timeout} -> {error, timeout};
        error:{exception, undef, [{?MODULE, F, _, _} | _]} -> {error, {not_running, Node}};
        error:{exception, Reason, _Stack} -> {error, {remote_exception, Node, Reason}};
        exit:{exception, Reason} -> {error, {remote_exception, Node, Reason}};
        exit:{signal, Reason} -> {error, {remote_exception, Node, Reason}};
        Class:Reason -> {error, {remote_exception, Node, {Class, Reason}}}
    end.

erpc_timeout(infinity) -> infinity;
erpc_timeout(T) when is_integer(T), T >= 0, T + ?GRACE_MS =< 16#FFFFFFFF -> T + ?GRACE_MS;
erpc_timeout(_) -> infinity.

%%====================================================================
%% Contexts
%%====================================================================

%% @doc Binds a worker on Node (or on the least-loaded node: `cluster') to
%% the calling process: `{ok, Ctx}', a context usable from any node, or
%% `{error, no_workers_available | not_running | {nodedown, Node} | ...}'.
-spec bind(target()) -> {ok, ctx()} | {error, term()}.
bind(cluster) ->
    bind(pick());
bind(Node) when is_atom(Node) ->
    remote(Node, hold, [self()], ?TIMEOUT);
bind(_) ->
    {error, {badarg, node}}.

%% @doc Releases a context made by `bind/1' (`ok' also when it was
%% released already or its node is gone).
-spec unbind(ctx()) -> ok.
unbind({py_rctx, Node, Holder}) ->
    _ = remote(Node, release, [Holder], ?TIMEOUT),
    ok;
unbind(_) ->
    error(badarg).

%% @doc The node a context made by `bind/1' lives on.
-spec ctx_node(ctx()) -> node().
ctx_node({py_rctx, Node, _}) -> Node.

%% @doc `py:ctx_call/4' on a context made by `bind/1'.
-spec ctx_call(ctx(), py:name(), py:name(), list()) -> {ok, term()} | {error, term()}.
ctx_call(Ctx, Module, Func, Args) ->
    ctx_call(Ctx, Module, Func, Args, #{}, ?TIMEOUT).

%% @doc `py:ctx_call/5' on a context made by `bind/1'.
-spec ctx_call(ctx(), py:name(), py:name(), list(), map()) -> {ok, term()} | {error, term()}.
ctx_call(Ctx, Module, Func, Args, Kwargs) ->
    ctx_call(Ctx, Module, Func, Args, Kwargs, ?TIMEOUT).

%% @doc `py:ctx_call/6' on a context made by `bind/1'.
-spec ctx_call(ctx(), py:name(), py:name(), list(), map(), py:timeout_ms()) ->
          {ok, term()} | {error, term()}.
ctx_call(Ctx, Module, Func, Args, Kwargs, Timeout) ->
    ctx_run(Ctx, {call, Module, Func, Args, Kwargs}, Timeout).

%% @doc `py:ctx_eval/2' on a context made by `bind/1'.
-spec ctx_eval(ctx(), py:code()) -> {ok, term()} | {error, term()}.
ctx_eval(Ctx, Code) ->
    ctx_eval(Ctx, Code, #{}, ?TIMEOUT).

%% @doc `py:ctx_eval/3' on a context made by `bind/1'.
-spec ctx_eval(ctx(), py:code(), py:locals()) -> {ok, term()} | {error, term()}.
ctx_eval(Ctx, Code, Locals) ->
    ctx_eval(Ctx, Code, Locals, ?TIMEOUT).

%% @doc `py:ctx_eval/4' on a context made by `bind/1'.
-spec ctx_eval(ctx(), py:code(), py:locals(), py:timeout_ms()) -> {ok, term()} | {error, term()}.
ctx_eval(Ctx, Code, Locals, Timeout) ->
    ctx_run(Ctx, {eval, Code, Locals}, Timeout).

%% @doc `py:ctx_exec/2' on a context made by `bind/1'.
-spec ctx_exec(ctx(), py:code()) -> ok | {error, term()}.
ctx_exec(Ctx, Code) ->
    ctx_exec(Ctx, Code, #{}, ?TIMEOUT).

%% @doc `py:ctx_exec/3' on a context made by `bind/1'.
-spec ctx_exec(ctx(), py:code(), py:locals()) -> ok | {error, term()}.
ctx_exec(Ctx, Code, Locals) ->
    ctx_exec(Ctx, Code, Locals, ?TIMEOUT).

%% @doc `py:ctx_exec/3' with a timeout, on a context made by `bind/1'.
-spec ctx_exec(ctx(), py:code(), py:locals(), py:timeout_ms()) -> ok | {error, term()}.
ctx_exec(Ctx, Code, Locals, Timeout) ->
    ctx_run(Ctx, {exec, Code, Locals}, Timeout).

ctx_run({py_rctx, _, _}, _Req, Timeout) when not ?VALID_TIMEOUT(Timeout) ->
    {error, {badarg, timeout}};
ctx_run({py_rctx, Node, Holder}, Req, Timeout) ->
    Result = case Node =:= node() of
                 true -> ctx_local(Holder, Req, Timeout);
                 false -> remote(Node, ctx_local, [Holder, Req, Timeout], Timeout)
             end,
    case Result of
        context_not_bound -> error(context_not_bound);
        _ -> Result
    end;
ctx_run(_, _, _) ->
    error(badarg).

%% @private
%% Runs a context request here; `context_not_bound' when the context is
%% released (the caller raises it where it is).
-spec ctx_local(pid(), request(), py:timeout_ms()) -> result() | context_not_bound.
ctx_local(Holder, Req, Timeout) ->
    case catch ets:lookup(?CONTEXTS, Holder) of
        [{_, Ctx}] ->
            try ctx_request(Ctx, Req, Timeout)
            catch error:context_not_bound -> context_not_bound
            end;
        _ -> % [], or no table: erlang_python is not running here
            context_not_bound
    end.

ctx_request(Ctx, {call, Module, Func, Args, Kwargs}, Timeout) ->
    py:ctx_call(Ctx, Module, Func, Args, Kwargs, Timeout);
ctx_request(Ctx, {eval, Code, Locals}, Timeout) ->
    py:ctx_eval(Ctx, Code, Locals, Timeout);
ctx_request(Ctx, {exec, Code, Locals}, Timeout) ->
    py:ctx_exec(Ctx, Code, Locals, Timeout).

%% @private
%% On the context's node: starts a holder that binds a worker for Owner
%% (a process anywhere) and releases it when Owner goes.
-spec hold(pid()) -> {ok, ctx()} | {error, term()}.
hold(Owner) ->
    Caller = self(),
    Tag = make_ref(),
    {Holder, Mon} = spawn_monitor(fun() -> holder(Caller, Tag, Owner) end),
    receive
        {Tag, {ok, _} = Result} -> Holder ! {Tag, taken}, erlang:demonitor(Mon, [flush]), Result;
        {Tag, Result} -> erlang:demonitor(Mon, [flush]), Result;
        {'DOWN', Mon, process, Holder, Why} -> {error, {holder_failed, Why}}
    after ?TIMEOUT ->
        %% Its binding, if it got one, goes with it (the pool monitors it).
        exit(Holder, kill),
        catch ets:delete(?CONTEXTS, Holder),
        {error, timeout}
    end.

%% Binds, then waits for the erpc process to take the context: if it was
%% killed meanwhile (its caller gave up), nobody will ever use it.
holder(Caller, Tag, Owner) ->
    %% It ends with the application (py_dist's exit reaches it).
    _ = catch link(whereis(?MODULE)),
    OwnerMon = erlang:monitor(process, Owner),
    CallerMon = erlang:monitor(process, Caller),
    case py:bind(new) of
        {ok, Ctx} ->
            true = ets:insert(?CONTEXTS, {self(), Ctx}),
            Caller ! {Tag, {ok, {py_rctx, node(), self()}}},
            receive
                {Tag, taken} ->
                    erlang:demonitor(CallerMon, [flush]),
                    holding(OwnerMon, Ctx);
                {'DOWN', CallerMon, process, _, _} ->
                    let_go(Ctx)
            end;
        Error ->
            Caller ! {Tag, Error}
    end.

holding(OwnerMon, Ctx) ->
    receive
        {'DOWN', OwnerMon, process, _, _} -> % owner gone, or its node
            let_go(Ctx);
        {release, From, Tag} ->
            let_go(Ctx),
            From ! {Tag, ok};
        _ ->
            holding(OwnerMon, Ctx)
    end.

let_go(Ctx) ->
    catch ets:delete(?CONTEXTS, self()), % (gone if the application stopped)
    py:unbind(Ctx).

%% @private
%% On the context's node: releases the context Holder holds, if it still
%% does.
-spec release(pid()) -> ok.
release(Holder) ->
    case catch ets:member(?CONTEXTS, Holder) of
        true ->
            Mon = erlang:monitor(process, Holder),
            Tag = make_ref(),
            Holder ! {release, self(), Tag},
            receive
                {Tag, ok} -> erlang:demonitor(Mon, [flush]), ok;
                {'DOWN', Mon, process, Holder, _} -> ok
            after ?TIMEOUT -> ok
            end;
        _ ->
            ok % released already (or not a holder)
    end.

%%====================================================================
%% Cluster membership and placement
%%====================================================================

%% @doc The pg scope the nodes' py_dist processes meet in.
-spec scope() -> atom().
scope() -> ?SCOPE.

%% @doc The nodes running erlang_python that this node knows of (itself
%% included when it runs it).
-spec members() -> [node()].
members() ->
    try lists:usort([node(P) || P <- pg:get_members(?SCOPE, ?GROUP)])
    catch error:badarg -> [] % the scope is not running
    end.

%% @doc The last load each member published (this node's: now).
-spec loads() -> #{node() => load()}.
loads() ->
    Members = members(),
    Known = maps:from_list([{N, #{free => max(0, F), workers => W, pending => Q}}
                            || {N, F, W, Q} <- known_loads(), lists:member(N, Members)]),
    case lists:member(node(), Members) of
        true -> Known#{node() => own_load()};
        false -> Known
    end.

%% @doc The node a `cluster' request goes to now (see the module doc).
-spec pick() -> node().
pick() ->
    Own = own_load(),
    case Own of
        #{free := F, pending := 0} when F > 0 -> node();
        _ ->
            Members = members() -- [node()],
            Scored = [{-Free, Pending / max(1, Workers), N}
                      || {N, Free, Workers, Pending} <- known_loads(),
                         lists:member(N, Members), Workers > 0],
            OwnScore = {-maps:get(free, Own),
                        maps:get(pending, Own) / max(1, maps:get(workers, Own)), node()},
            {_, _, Best} = lists:min([OwnScore | Scored]),
            taken(Best),
            Best
    end.

%% The published loads ([] while py_dist is not running).
known_loads() ->
    try ets:tab2list(?LOADS)
    catch error:badarg -> []
    end.

%% One of Node's free workers counts as taken until Node publishes again.
taken(Node) when Node =:= node() ->
    ok;
taken(Node) ->
    try ets:update_counter(?LOADS, Node, {2, -1}) of _ -> ok
    catch error:badarg -> ok % it left meanwhile
    end.

%% Free: unbound workers running nothing.
own_load() ->
    {W, F, Q} = py_nif:load(),
    #{free => F, workers => W, pending => Q}.

%%====================================================================
%% gen_server: publishes this node's load to the other members
%%====================================================================

%% @private
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @private
-spec init([]) -> {ok, map()}.
init([]) ->
    process_flag(trap_exit, true), % holders are linked: a failing one is no reason to stop
    _ = ets:new(?LOADS, [named_table, public, set, {write_concurrency, true}]),
    ok = pg:join(?SCOPE, ?GROUP, self()),
    _ = net_kernel:monitor_nodes(true),
    erlang:send_after(?TICK_MS, self(), tick),
    {ok, #{last => none, ticks => 0}}.

%% @private
-spec handle_call(term(), gen_server:from(), map()) -> {reply, {error, unknown_call}, map()}.
handle_call(_Request, _From, State) ->
    {reply, {error, unknown_call}, State}.

%% @private
-spec handle_cast(term(), map()) -> {noreply, map()}.
handle_cast(_Msg, State) ->
    {noreply, State}.

%% @private
-spec handle_info(term(), map()) -> {noreply, map()}.
handle_info(tick, #{last := Last, ticks := Ticks} = State) ->
    erlang:send_after(?TICK_MS, self(), tick),
    Load = own_load(),
    case Load =/= Last orelse Ticks >= ?HEARTBEAT_TICKS of
        true -> publish(Load), {noreply, State#{last := Load, ticks := 0}};
        false -> {noreply, State#{ticks := Ticks + 1}}
    end;
handle_info({py_dist_load, Node, #{free := F, workers := W, pending := Q}}, State) ->
    true = ets:insert(?LOADS, {Node, F, W, Q}),
    {noreply, State};
handle_info({'EXIT', Holder, _}, State) ->
    %% A holder killed from outside leaves no row behind.
    ets:delete(?CONTEXTS, Holder),
    {noreply, State};
handle_info({nodeup, _Node}, State) ->
    %% A new member hears this node's load at once.
    {noreply, State#{last := none}};
handle_info({nodedown, Node}, State) ->
    ets:delete(?LOADS, Node),
    {noreply, State};
handle_info(_Other, State) ->
    {noreply, State}.

publish(Load) ->
    Msg = {py_dist_load, node(), Load},
    %% Never blocks on a busy connection nor reopens a closed one.
    lists:foreach(fun(P) -> erlang:send(P, Msg, [noconnect, nosuspend]) end,
                  [P || P <- pg:get_members(?SCOPE, ?GROUP), node(P) =/= node()]).
