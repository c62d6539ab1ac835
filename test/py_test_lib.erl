%% Scaffolding shared by the Common Test suites of erlang_python: starting
%% and stopping the application with its environment (and putting the
%% environment back afterwards), waiting with a bound until the pool is
%% idle, checking that every worker answers and that no stray message came,
%% starting peer nodes with the application, and reading the OS RSS.
%%
%% A plain module, not a suite: Common Test compiles it with the suites
%% (test/ is their directory), and peer nodes started here have test/ on
%% their code path, so code run there may call it too.
%%
%% Conventions: an environment is a list of {Key, Value} for the
%% erlang_python application, where the value `undefined' means "unset";
%% bounds are in milliseconds; N is the pool size the suite configured.
-module(py_test_lib).

-include_lib("stdlib/include/assert.hrl").

-export([
    %% application and environment
    start_suite/2,        % init_per_suite: start_app/1 with the env for the data dir; into Config
    stop_suite/1,         % end_per_suite: stop_app/1 with what start_suite/2 saved
    start_app/1,          % stop, load, save Env's keys, set Env, start; returns the saved env
    stop_app/1,           % stop, put the saved env back; returns what application:stop/1 gave
    save_env/1,           % load, and the current values of the keys, for stop_app/1
    %% waiting, pool state
    now_ms/0,             % monotonic clock, in milliseconds
    wait_until/2,         % polls Fun until Pred holds (at most ~5 s); returns the last value
    wait_until/3,         % polls Check ({Done, Info}) until done, else error({What, Info})
    pool_stats/0,         % py_pool:get_stats/0 reduced to the four counters
    idle_stats/1,         % those counters for an idle pool of N workers
    wait_pool_idle/2,     % polls until the pool of N is idle and whole, else error
    assert_pool_idle/1,   % asserts, at once, that the pool of N workers is idle
    ensure_pool_idle/2,   % for init_per_testcase: started, idle, mailbox empty
    recover_pool/2,       % for end_per_testcase: unbound, idle, or else restarted
    worker_ids/0,         % the ids of the workers in service
    all_workers_answer/1, % each of the N workers, bound as a context, evaluates
    exec_everywhere/3,    % exec(Code, Locals) on each of the N workers (each interpreter)
    %% Python build and mode
    python_minor/0,       % 11 for Python 3.11 ... (the NIF loaded by the tests)
    subinterp_mode/0,     % whether the workers run own-GIL sub-interpreters
    %% mailbox
    flush_mailbox/0,      % drops every message in the mailbox
    no_stray_messages/1,  % ok, or {stray, Msg} if a message comes within the bound
    assert_no_stray/1,    % error({stray, Msg}) if a message comes within the bound
    %% peer nodes
    start_peer/1,         % a peer VM with the application started with Env
    stop_peer/1,          % stops a peer, whatever its state
    in_peer/3,            % runs Fun(Call) against a fresh peer, then stops it
    %% memory
    rss/0                 % resident set size of this OS process, in bytes
]).

-define(APP, erlang_python).
-define(STATS_KEYS, [num_workers, available_workers, checked_out, pending_requests]).

%%====================================================================
%% Application and environment
%%====================================================================

%% For init_per_suite: starts the application (start_app/1) with
%% EnvOf(DataDir), DataDir being the suite's data directory as an absolute
%% path.  Returns Config with {saved_env, _} for stop_suite/1 and
%% {helpers_dir, DataDir}.
start_suite(Config, EnvOf) ->
    DataDir = filename:absname(proplists:get_value(data_dir, Config)),
    Saved = start_app(EnvOf(DataDir)),
    [{saved_env, Saved}, {helpers_dir, DataDir} | Config].

%% For end_per_suite: stop_app/1 with the env start_suite/2 saved.
stop_suite(Config) ->
    stop_app(proplists:get_value(saved_env, Config)).

%% Stops the application if it runs, loads it, remembers the values of
%% Env's keys, sets Env ({Key, undefined} unsets Key) and starts it.
%% Returns the remembered values, for stop_app/1.
start_app(Env) ->
    _ = application:stop(?APP),
    Saved = save_env([K || {K, _} <- Env]),
    apply_env(fun erlang:apply/3, Env),
    {ok, _} = application:ensure_all_started(?APP),
    Saved.

%% Stops the application and puts back the values save_env/1 or
%% start_app/1 remembered.  Returns what application:stop/1 returned, so
%% that a suite that expects the application to be running can match ok.
stop_app(Saved) ->
    Stopped = application:stop(?APP),
    lists:foreach(fun({K, {ok, V}}) -> application:set_env(?APP, K, V);
                     ({K, undefined}) -> application:unset_env(?APP, K)
                  end, Saved),
    Stopped.

%% Loads the application (already loaded is fine) and returns the current
%% value of each of Keys, as {Key, {ok, Value} | undefined}.
save_env(Keys) ->
    case application:load(?APP) of
        ok -> ok;
        {error, {already_loaded, ?APP}} -> ok
    end,
    [{K, application:get_env(?APP, K)} || K <- Keys].

%% Sets Env through Apply(M, F, A): erlang:apply/3 here, peer:call there.
apply_env(Apply, Env) ->
    lists:foreach(fun({K, undefined}) -> ok = Apply(application, unset_env, [?APP, K]);
                     ({K, V}) -> ok = Apply(application, set_env, [?APP, K, V])
                  end, Env).

%%====================================================================
%% Waiting, pool state
%%====================================================================

now_ms() ->
    erlang:monotonic_time(millisecond).

%% Polls Fun until Pred holds of its value, 500 times at most, 10 ms apart
%% (~5 s); returns the last value, for the caller to assert on.
wait_until(Fun, Pred) ->
    wait_until_n(Fun, Pred, 500).

wait_until_n(Fun, _Pred, 0) ->
    Fun();
wait_until_n(Fun, Pred, N) ->
    V = Fun(),
    case Pred(V) of
        true -> V;
        false -> timer:sleep(10), wait_until_n(Fun, Pred, N - 1)
    end.

%% Polls Check, which returns {Done, Info}, every 20 ms until Done is true
%% (then ok); past BoundMs it raises error({What, Info}) with the last Info.
wait_until(Check, BoundMs, What) ->
    Deadline = now_ms() + BoundMs,
    wait_until_deadline(Check, Deadline, What).

wait_until_deadline(Check, Deadline, What) ->
    {Done, Info} = Check(),
    case Done of
        true -> ok;
        false ->
            case now_ms() > Deadline of
                true -> error({What, Info});
                false -> timer:sleep(20), wait_until_deadline(Check, Deadline, What)
            end
    end.

%% The pool's counters only (get_stats/0 could grow other keys).
pool_stats() ->
    maps:with(?STATS_KEYS, py_pool:get_stats()).

idle_stats(N) ->
    #{num_workers => N, available_workers => N, checked_out => 0, pending_requests => 0}.

%% Polls until the pool of N workers is idle and whole: exactly these
%% counters, N workers in service and none of them bound.  Past BoundMs:
%% error({pool_not_idle, {Stats, Workers}}).  (Bindings of ended processes
%% are released asynchronously, and a worker stuck in C is replaced only
%% after cancel_grace_ms: hence polling.)
wait_pool_idle(N, BoundMs) ->
    wait_until(fun() -> pool_idle(N) end, BoundMs, pool_not_idle).

pool_idle(N) ->
    Stats = py_pool:get_stats(),
    Workers = py_pool:workers(),
    Idle = Stats =:= idle_stats(N)
        andalso length(Workers) =:= N
        andalso lists:all(fun(#{bound := B}) -> B =:= false end, Workers),
    {Idle, {Stats, Workers}}.

%% The pool of N workers is idle now (no polling).
assert_pool_idle(N) ->
    ?assertMatch(#{num_workers := N, available_workers := N, checked_out := 0,
                   pending_requests := 0}, py_pool:get_stats()).

%% For init_per_testcase: the application is running (a case may have
%% stopped it), the pool of N workers is idle within BoundMs, and the
%% mailbox of the calling process is empty.
ensure_pool_idle(N, BoundMs) ->
    {ok, _} = application:ensure_all_started(?APP),
    ok = wait_pool_idle(N, BoundMs),
    flush_mailbox().

%% For end_per_testcase: a case that left the pool broken must not break
%% the next ones.  Unbinds the calling process, waits up to BoundMs for the
%% pool of N workers to be idle, restarts the application if it is not,
%% and empties the mailbox.
recover_pool(N, BoundMs) ->
    _ = catch py:unbind(),
    case catch wait_pool_idle(N, BoundMs) of
        ok -> ok;
        _ ->
            ct:pal("pool not whole after the case: restarting the application"),
            _ = application:stop(?APP),
            {ok, _} = application:ensure_all_started(?APP)
    end,
    flush_mailbox().

%% The ids of the workers in service (a replaced worker has a new id).
worker_ids() ->
    [Id || #{id := Id} <- py_pool:workers()].

%% Every one of the N workers answers: each is bound as a context (all at
%% once, so each context holds a different worker, and one more bind is
%% refused), evaluated on from its own process within 3 s; their OS
%% threads differ.  Returns ok; the contexts are always released.
all_workers_answer(N) ->
    {Bound, Ctxs} = bind_new(N, []),
    try
        Bound =:= ok orelse error(Bound),
        case py:bind(new) of
            {error, no_workers_available} -> ok;
            Extra -> catch py:unbind(element(2, Extra)), error({extra_bind, Extra})
        end,
        Self = self(),
        Evals = [spawn(fun() ->
                               R = try py:ctx_eval(C, <<"(__import__('threading').get_ident(), "
                                                        "x * 2)">>, #{x => I}, 3000)
                                   catch Class:Why -> {Class, Why}
                                   end,
                               Self ! {ctx_answer, I, R}
                       end) || {I, C} <- lists:zip(lists:seq(1, N), Ctxs)],
        N = length(Evals),
        Rs = [receive {ctx_answer, I, R} -> R end || I <- lists:seq(1, N)],
        Tids = [case R of
                    {ok, {Tid, Double}} when Double =:= 2 * I -> Tid;
                    _ -> error({worker_does_not_answer, I, R})
                end || {I, R} <- lists:zip(lists:seq(1, N), Rs)],
        ?assertEqual(N, length(lists:usort(Tids)))
    after
        [py:unbind(C) || C <- Ctxs]
    end,
    ok.

%% Binds up to N contexts; on a refusal, returns what it got so far, so
%% that the caller can release them.
%% Runs Code with Locals on each of the N workers of an idle pool, bound
%% as contexts: in every interpreter (with sub-interpreters, sys.path and
%% sys.modules are per worker).  ok, or error.
exec_everywhere(N, Code, Locals) ->
    {Bound, Ctxs} = bind_new(N, []),
    try
        Bound =:= ok orelse error(Bound),
        lists:foreach(fun(C) -> ok = py:ctx_exec(C, Code, Locals) end, Ctxs)
    after
        [py:unbind(C) || C <- Ctxs]
    end.

bind_new(0, Acc) ->
    {ok, Acc};
bind_new(N, Acc) ->
    case py:bind(new) of
        {ok, C} -> bind_new(N - 1, [C | Acc]);
        Other -> {{bind_new, Other}, Acc}
    end.

%%====================================================================
%% Mailbox
%%====================================================================

flush_mailbox() ->
    receive _ -> flush_mailbox() after 0 -> ok end.

%% ok if no message arrives within Ms, else {stray, Msg} (for
%% ?assertEqual(ok, ...) or to report from another process).
no_stray_messages(Ms) ->
    receive M -> {stray, M} after Ms -> ok end.

%% The calling process got nothing it did not ask for within Ms.
assert_no_stray(Ms) ->
    case no_stray_messages(Ms) of
        ok -> ok;
        Stray -> error(Stray)
    end.

%%====================================================================
%% Peer nodes
%%====================================================================

%% Starts a peer VM (standard_io connection, unlinked) with the
%% application's and test/'s code paths, sets Env there and starts the
%% application.  Returns the peer; stop it with stop_peer/1.  A peer whose
%% set-up fails is stopped before the error goes on.
start_peer(Env) ->
    Ebin = filename:dirname(code:which(py)),
    TestEbin = filename:dirname(code:which(?MODULE)),
    Peer = case peer:start_link(#{connection => standard_io,
                                  args => ["-pa", Ebin, "-pa", TestEbin]}) of
               {ok, P} -> P;
               {ok, P, _Node} -> P
           end,
    unlink(Peer),
    try
        ok = peer:call(Peer, application, load, [?APP]),
        apply_env(fun(M, F, A) -> peer:call(Peer, M, F, A) end, Env),
        {ok, _} = peer:call(Peer, application, ensure_all_started, [?APP], 30000),
        Peer
    catch
        Class:Reason:Stack ->
            stop_peer(Peer),
            erlang:raise(Class, Reason, Stack)
    end.

stop_peer(Peer) ->
    catch peer:stop(Peer),
    ok.

%% Runs Fun(Call) against a fresh peer (start_peer(Env)) and returns its
%% result; Call(M, F, A) runs there with a timeout of CallMs, and a peer
%% crash or timeout comes back from it as {peer_down, {Class, Reason}}.
%% The peer is stopped afterwards.
in_peer(Env, CallMs, Fun) ->
    Peer = start_peer(Env),
    Call = fun(M, F, A) ->
                   try peer:call(Peer, M, F, A, CallMs)
                   catch Class:Reason -> {peer_down, {Class, Reason}}
                   end
           end,
    try
        Fun(Call)
    after
        stop_peer(Peer)
    end.

%%====================================================================
%% Memory
%%====================================================================

%% Resident set size of this OS process, in bytes (from /proc/self/status).
rss() ->
    {ok, Status} = file:read_file("/proc/self/status"),
    [Line] = [L || L <- binary:split(Status, <<"\n">>, [global]),
                   binary:match(L, <<"VmRSS:">>) =/= nomatch],
    [_, Kb, <<"kB">>] = binary:split(Line, [<<" ">>, <<"\t">>], [global, trim_all]),
    binary_to_integer(Kb) * 1024.

%%====================================================================
%% Python build and mode
%%====================================================================

python_minor() ->
    {match, [M]} = re:run(py_nif:version(), "^3\\.([0-9]+)", [{capture, all_but_first, list}]),
    list_to_integer(M).

subinterp_mode() ->
    py:execution_mode() =:= subinterp.
