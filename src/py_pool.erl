%% @doc The worker pool: starts the worker threads, binds and releases them
%% (context affinity), watches binders and workers, replaces lost workers.
%%
%% It is never on the path of a call: callers find their binding in the
%% `py_bindings' ETS table and queue requests through the NIF themselves.
%% Each worker has a guardian process (see `workers/0'): killing it stands for
%% a worker crash, and the pool retires that worker and starts a new one.
-module(py_pool).
-behaviour(gen_server).

-export([start_link/0, get_stats/0, call_stats/0, workers/0, sync/1, chosen_mode/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(BINDINGS, py_bindings).

-record(worker, {id :: non_neg_integer(),
                 res :: reference(),
                 guardian :: pid(),
                 bound = none :: none | {process, pid()} | {context, pid(), pos_integer()}}).

-type stats() :: #{num_workers := non_neg_integer(),
                   available_workers := non_neg_integer(),
                   checked_out := non_neg_integer(),
                   pending_requests := non_neg_integer()}.
-type call_stats() :: #{workers := [worker_stats()],
                        queued_timeouts := non_neg_integer(),
                        retired := retired_stats()}.
%% The counters of call_stats/0, with one more key (id or crashed).
-type counters(Key, Value) :: #{Key := Value,
                                calls := non_neg_integer(),
                                answered := non_neg_integer(),
                                errors := non_neg_integer(),
                                timeouts := non_neg_integer(),
                                p50_us := float(),
                                p99_us := float()}.
-type worker_stats() :: counters(id, pos_integer()).
-type retired_stats() :: counters(crashed, non_neg_integer()).
-type worker_info() :: #{id := non_neg_integer(),
                         pid := pid(),
                         bound := false | {process, pid()} | {context, pid()}}.
-export_type([stats/0, call_stats/0, worker_stats/0, retired_stats/0, worker_info/0]).

%%====================================================================
%% API
%%====================================================================

%% @private
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Pool counters, read from the NIF (no gen_server round trip):
%% `num_workers' in service, `available_workers' not bound, `checked_out'
%% bound, `pending_requests' queued and not yet started.
-spec get_stats() -> stats().
get_stats() ->
    py_nif:stats().

%% @doc Call counters, no dependency, always on.  `workers': one map per
%% worker in service, counting since it started: `calls' requests it ran,
%% `answered' of those answered (the others were given up by their
%% caller), `errors' answered with an error, `timeouts' given up by their
%% caller (timeout) while it ran them, and `p50_us'/`p99_us' the median and
%% 99th percentile of the answered ones' latency in microseconds, from
%% submit to answer (queueing included), known to within 6 % (0.0 before
%% the first answer).  `queued_timeouts': requests given up (timeout)
%% before any worker took them.  `retired': the same counters summed over
%% the workers taken out of service (crashed, or abandoned stuck in C)
%% since the NIF loaded, and `crashed', the requests answered
%% `worker_crashed' (or `not_running' at shutdown) because their worker
%% was lost: with it the totals never go back.  For `async_call' and
%% `async_stream' a request is the start of the coroutine.  Read from the
%% NIF, no gen_server round trip.
-spec call_stats() -> call_stats().
call_stats() ->
    {Workers, Queued, Retired} = py_nif:worker_stats(),
    #{workers => Workers, queued_timeouts => Queued, retired => Retired}.

%% @doc The workers in service: id, guardian pid (kill it to simulate a
%% worker crash) and binding.
-spec workers() -> [worker_info()].
workers() ->
    gen_server:call(?MODULE, workers, infinity).

%% @doc With execution_mode subinterp, makes every worker's interpreter
%% follow a change one worker made: the active venv (`none' after
%% deactivation) or a reloaded module.  Nothing to do with a shared GIL.
-spec sync({venv, binary() | none} | {reload, binary()}) -> ok | {error, binary()}.
sync(What) ->
    gen_server:call(?MODULE, {sync, What}, infinity).

%%====================================================================
%% gen_server
%%====================================================================

%% @private
-spec init([]) -> {ok, map()} | {stop, term()}.
init([]) ->
    process_flag(trap_exit, true),
    N = application:get_env(erlang_python, num_workers, 4),
    Grace = application:get_env(erlang_python, cancel_grace_ms, 1000),
    _ = ets:new(?BINDINGS, [named_table, protected, set, {read_concurrency, true}]),
    %% A refused start deletes the table itself: the caller hears of the
    %% failure before this process has exited (and its tables with it), so
    %% a start that follows at once would find the name still taken.
    case init_pool(N, Grace) of
        {ok, _} = Ok -> Ok;
        {stop, _} = Stop -> ets:delete(?BINDINGS), Stop
    end.

init_pool(N, Grace) ->
    %% Default: every worker can be busy, with the original library's
    %% schedulers * 2 + 1 requests queued behind them.
    Max = application:get_env(erlang_python, max_concurrent,
                              N + erlang:system_info(schedulers) * 2 + 1),
    Runner = whereis(py_callback),
    ok = py_nif:sem_set_max(Max),
    RtDir = filename:join(code:priv_dir(erlang_python), "python"),
    Paths = [RtDir | application:get_env(erlang_python, python_path, [])],
    case chosen_mode() of
        {ok, Mode} ->
            MaxAbandoned = application:get_env(erlang_python, max_abandoned_workers, 16),
            case py_nif:pool_attach(self(), Runner, Grace, nif_mode(Mode, RtDir), MaxAbandoned) of
                ok -> start(N, Paths, Mode);
                {error, Why} -> {stop, {execution_mode, Mode, Why}}
            end;
        Error ->
            {stop, Error}
    end.

%% What the NIF is told: an isolated worker is the program in priv/python,
%% each process capped at max_memory_mb of address space (0: no cap).
nif_mode(isolated, RtDir) ->
    Script = filename:join(RtDir, "_erlang_python_worker.py"),
    {isolated, unicode:characters_to_binary(Script),
     application:get_env(erlang_python, max_memory_mb, 0)};
nif_mode(Mode, _RtDir) ->
    Mode.

start(N, Paths, Mode) ->
    State0 = #{workers => #{}, next_id => 1, owners => #{}, mode => Mode,
               paths => Paths, venv => undefined, size => N},
    %% Each sub-interpreter has its own sys.path: every worker runs the
    %% setup first.
    ok = case Mode of
             subinterp -> py_nif:setup(setup_source(State0), true);
             isolated -> py_nif:setup(setup_source(State0), true);
             shared_gil -> ok
         end,
    case start_workers(N, State0) of
        {ok, State} ->
            case add_python_path(Paths) of
                ok -> install_logging(Mode, State);
                Error -> {stop, Error}
            end;
        Error ->
            {stop, Error}
    end.

%% @doc The mode the application env `execution_mode' asks for:
%% `shared_gil' (alias `multi_executor'), `subinterp', `isolated' (each
%% worker an OS process: docs/isolation.md), or `auto' (the default):
%% subinterp on Python 3.13 and later (where the standard library loads in
%% sub-interpreters), else shared_gil.
-spec chosen_mode() -> {ok, shared_gil | subinterp | isolated} | {bad_execution_mode, term()}.
chosen_mode() ->
    execution_mode(application:get_env(erlang_python, execution_mode, auto)).

execution_mode(auto) ->
    {ok, case python_minor() >= 13 andalso element(2, py_nif:execution_info()) of
             true -> subinterp;
             false -> shared_gil
         end};
execution_mode(multi_executor) -> {ok, shared_gil};
execution_mode(shared_gil) -> {ok, shared_gil};
execution_mode(subinterp) -> {ok, subinterp};
execution_mode(isolated) -> {ok, isolated};
execution_mode(Other) -> {bad_execution_mode, Other}.

python_minor() ->
    case re:run(py_nif:version(), "^3\\.([0-9]+)", [{capture, all_but_first, list}]) of
        {match, [Minor]} -> list_to_integer(Minor);
        nomatch -> 0
    end.

%% Python source that puts the pool's paths on sys.path and makes the venv
%% active (or none), in the interpreter it runs in.
setup_source(#{paths := Paths, venv := Venv} = State) ->
    Lits = lists:join(", ", [py_str(P) || P <- Paths]),
    VenvLine = case Venv of
                   undefined -> [];
                   Dir -> ["import _erlang_python\n_erlang_python.sync_venv(", py_str(Dir), ")\n"]
               end,
    %% Python's logging goes to OTP's logger in process only (an isolated
    %% worker has no erlang._log yet).
    Log = case maps:get(mode, State, shared_gil) of
              isolated -> [];
              _ -> py_log:setup_source()
          end,
    iolist_to_binary(["import sys\n",
                      "sys.path[0:0] = [p for p in [", Lits, "] if p not in sys.path]\n",
                      VenvLine, Log]).

%% A Python str literal for any path, whatever its bytes.
py_str(Path) ->
    Bin = unicode:characters_to_binary(Path),
    ["bytes.fromhex('", binary:encode_hex(Bin), "').decode('utf-8', 'surrogateescape')"].

%% @private
-spec handle_call(term(), gen_server:from(), map()) -> {reply, term(), map()}.
handle_call({bind, Pid}, _From, State) ->
    case ets:lookup(?BINDINGS, Pid) of
        [{_, Res, Gen}] -> {reply, {ok, Res, Gen}, State};
        [] ->
            case checkout({process, Pid}, State) of
                {ok, W, Gen, State1} ->
                    true = ets:insert(?BINDINGS, {Pid, W#worker.res, Gen}),
                    {reply, {ok, W#worker.res, Gen}, State1};
                Error -> {reply, Error, State}
            end
    end;
handle_call({bind_ctx, Owner}, _From, State) ->
    case checkout({context, Owner}, State) of
        {ok, W, Gen, State1} -> {reply, {ok, W#worker.res, Gen}, State1};
        Error -> {reply, Error, State}
    end;
handle_call({unbind, Pid}, _From, State) ->
    case find(fun(#worker{bound = B}) -> B =:= {process, Pid} end, State) of
        {ok, W} -> {reply, ok, checkin(W, State)};
        error -> {reply, ok, State}
    end;
handle_call({unbind_ctx, Res, Gen}, _From, State) ->
    case find(fun(#worker{res = R, bound = {context, _, G}}) -> R =:= Res andalso G =:= Gen;
                 (#worker{}) -> false
              end, State) of
        {ok, W} -> {reply, ok, checkin(W, State)};
        error -> {reply, ok, State}
    end;
handle_call({sync, _}, _From, #{mode := shared_gil} = State) ->
    {reply, ok, State};
handle_call({sync, {venv, none}}, _From, State) ->
    Kept = State#{venv := undefined},
    ok = py_nif:setup(setup_source(Kept), true),
    {reply, py_nif:setup(<<"import _erlang_python\n_erlang_python.sync_venv(None)\n">>, false),
     Kept};
handle_call({sync, {venv, Dir}}, _From, State) ->
    %% Workers started later activate the venv first; those running now
    %% sync theirs (the one that ran py:activate_venv has it already).
    Kept = State#{venv := Dir},
    {reply, py_nif:setup(setup_source(Kept), true), Kept};
handle_call({sync, {reload, Module}}, _From, State) ->
    Src = iolist_to_binary(["import _erlang_python\n_erlang_python.reload(", py_str(Module), ")\n"]),
    {reply, py_nif:setup(Src, false), State};
handle_call(workers, _From, #{workers := Ws} = State) ->
    Info = [#{id => Id, pid => G, bound => public_binding(B)}
            || #worker{id = Id, guardian = G, bound = B} <- maps:values(Ws)],
    {reply, lists:sort(fun(#{id := A}, #{id := B}) -> A =< B end, Info), State};
handle_call(_Request, _From, State) ->
    {reply, {error, unknown_call}, State}.

%% @private
-spec handle_cast(term(), map()) -> {noreply, map()}.
handle_cast(_Msg, State) ->
    {noreply, State}.

%% @private
-spec handle_info(term(), map()) -> {noreply, map()}.
handle_info({'DOWN', _MRef, process, Pid, _Reason}, State) ->
    %% A binder died: release everything it held.
    Held = [W || W = #worker{bound = B} <- workers_of(State), owner(B) =:= Pid],
    State1 = lists:foldl(fun checkin/2, State, Held),
    {noreply, State1#{owners := maps:remove(Pid, maps:get(owners, State1))}};
handle_info({'EXIT', Pid, _Reason}, State) ->
    %% A guardian died: that worker is lost.
    case find(fun(#worker{guardian = G}) -> G =:= Pid end, State) of
        {ok, W} ->
            ok = py_nif:worker_retire(W#worker.res),
            {noreply, replace(W, State)};
        error ->
            {noreply, State}
    end;
handle_info({'$py_worker_lost', Id}, #{workers := Ws} = State) ->
    %% The NIF retired a worker stuck past the cancel grace period.
    case maps:find(Id, Ws) of
        {ok, W} ->
            unlink(W#worker.guardian),
            exit(W#worker.guardian, kill),
            {noreply, replace(W, State)};
        error ->
            {noreply, State}
    end;
handle_info(replenish, State) ->
    {noreply, replenish(maps:remove(retry, State))};
handle_info(_Msg, State) ->
    {noreply, State}.

%% @private
-spec terminate(term(), map()) -> ok.
terminate(_Reason, _State) ->
    py_nif:pool_shutdown().

%%====================================================================
%% Internals
%%====================================================================

start_workers(0, State) ->
    {ok, State};
start_workers(N, State) ->
    case start_worker(State) of
        {ok, State1} -> start_workers(N - 1, State1);
        Error -> Error
    end.

start_worker(#{workers := Ws, next_id := Id} = State) ->
    case py_nif:worker_start(Id) of
        {ok, Res} ->
            G = spawn_link(fun guardian/0),
            W = #worker{id = Id, res = Res, guardian = G},
            {ok, State#{workers := Ws#{Id => W}, next_id := Id + 1}};
        {error, Reason} ->
            {error, {worker_start_failed, Reason}}
    end.

guardian() ->
    receive stop -> ok end.

%% Takes a free worker for Binding.  The NIF refuses a worker that is still
%% running a request its caller gave up on (it may be replaced soon), and
%% one unbound while requests waited for any worker (they come first): the
%% next free one is tried.  A worker running nothing is taken first: the
%% holder's first call does not wait behind another caller's request.
checkout(Binding, State) ->
    Free = lists:keysort(#worker.id, [W || W = #worker{bound = none} <- workers_of(State)]),
    case checkout(Binding, Free, idle, State) of
        {error, no_workers_available} -> checkout(Binding, Free, true, State);
        Taken -> Taken
    end.

checkout(_Binding, [], _How, _State) ->
    {error, no_workers_available};
checkout(Binding, [W | Rest], How, State) ->
    case py_nif:worker_bind(W#worker.res, How) of
        error ->
            checkout(Binding, Rest, How, State);
        Gen ->
            Bound = case Binding of
                        {process, P} -> {process, P};
                        {context, O} -> {context, O, Gen}
                    end,
            W1 = W#worker{bound = Bound},
            {ok, W1, Gen, monitor_owner(owner(Bound), store(W1, State))}
    end.

%% Releases W's binding (its namespace is wiped by the NIF before reuse).
checkin(#worker{bound = none}, State) ->
    State;
checkin(#worker{res = Res, bound = B} = W, State) ->
    _ = py_nif:worker_bind(Res, false),
    forget_binding(B),
    store(W#worker{bound = none}, State).

%% W is lost: drop its bindings, start a replacement.
replace(#worker{id = Id, bound = B}, #{workers := Ws} = State) ->
    forget_binding(B),
    replenish(State#{workers := maps:remove(Id, Ws)}).

%% Starts workers until the pool has its size again.  When one cannot
%% start (too many abandoned workers still stuck in C: max_abandoned_workers),
%% the pool runs short, logs why once (`short'), and tries again every
%% second (`retry': one timer at a time).
replenish(#{workers := Ws, size := N} = State) when map_size(Ws) >= N ->
    maps:remove(short, State);
replenish(State) ->
    case start_worker(State) of
        {ok, State1} ->
            replenish(State1);
        {error, Reason} ->
            maps:is_key(short, State) orelse
                logger:error("erlang_python: cannot replace a worker: ~p", [Reason]),
            Retry = case State of
                        #{retry := T} -> T;
                        _ -> erlang:send_after(1000, self(), replenish)
                    end,
            State#{short => true, retry => Retry}
    end.

forget_binding({process, Pid}) -> ets:delete(?BINDINGS, Pid);
forget_binding(_) -> true.

monitor_owner(Pid, #{owners := Owners} = State) ->
    case maps:is_key(Pid, Owners) of
        true -> State;
        false -> State#{owners := Owners#{Pid => erlang:monitor(process, Pid)}}
    end.

owner({process, Pid}) -> Pid;
owner({context, Pid, _}) -> Pid;
owner(none) -> none.

public_binding(none) -> false;
public_binding({process, P}) -> {process, P};
public_binding({context, O, _}) -> {context, O}.

workers_of(#{workers := Ws}) -> maps:values(Ws).

store(#worker{id = Id} = W, #{workers := Ws} = State) ->
    State#{workers := Ws#{Id => W}}.

find(Pred, State) ->
    case lists:filter(Pred, workers_of(State)) of
        [W | _] -> {ok, W};
        [] -> error
    end.

%% With a shared GIL the one interpreter gets its log handler here (each
%% sub-interpreter got it in its setup).
install_logging(subinterp, State) ->
    {ok, State};
install_logging(isolated, State) ->
    {ok, State};
install_logging(shared_gil, State) ->
    case py:exec(py_log:setup_source()) of
        ok -> {ok, State};
        Error -> {stop, {python_logging, Error}}
    end.

add_python_path(Dirs) ->
    Paths = [unicode:characters_to_binary(D) || D <- Dirs],
    case py:exec(<<"import sys\n"
                   "sys.path[0:0] = [p for p in paths if p not in sys.path]\n">>,
                 #{paths => Paths}) of
        ok -> ok;
        Error -> {python_path, Error}
    end.
