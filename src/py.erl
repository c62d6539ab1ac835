%% @doc The public API of erlang_python: call Python functions, evaluate
%% expressions and run statements on the embedded interpreter.
%%
%% A call travels like this: the caller routes the request (its nested
%% callback worker, its binding in ETS, or the shared queue), `py_nif:submit/4'
%% copies it onto a queue and returns at once, a worker thread runs it and
%% sends `{Ref, Reply}' back, and the caller waits in `receive' with its
%% timeout.  Python's callbacks into Erlang (`erlang.call') made by that
%% request are served meanwhile, each in a fresh process.  No gen_server is on
%% the path of a call.
-module(py).

%% core calls
-export([call/3, call/4, call/5,
         eval/1, eval/2, eval/3,
         exec/1, exec/2, exec/3,
         call_async/3, call_async/4,
         await/1, await/2,
         stream/3, stream/4,
         stream_eval/1, stream_eval/2,
         stream_start/3, stream_start/4, stream_ack/1, stream_ack/2, stream_cancel/1,
         version/0,
         last_traceback/0]).
%% context affinity
-export([bind/0, bind/1, bind/2, unbind/0, unbind/1, is_bound/0,
         ctx_call/4, ctx_call/5, ctx_call/6,
         ctx_eval/2, ctx_eval/3, ctx_eval/4,
         ctx_exec/2, ctx_exec/3, ctx_exec/4,
         with_context/1]).
%% Python calling Erlang
-export([register_function/2, register_function/3, unregister_function/1]).
%% runtime utilities
-export([async_call/3, async_call/4, async_await/1, async_await/2, async_gather/1,
         async_stream/3, async_stream/4,
         memory_stats/0, gc/0, gc/1, tracemalloc_start/0, tracemalloc_start/1,
         tracemalloc_stop/0,
         activate_venv/1, deactivate_venv/0, venv_info/0,
         reload/1,
         execution_mode/0, num_executors/0, subinterp_supported/0, parallel/1]).
%% internal (py_stream)
-export([internal_submit/3, internal_result/1, internal_where/1]).
%% shared state
-export([state_store/2, state_fetch/1, state_remove/1, state_keys/0, state_clear/0,
         state_incr/1, state_incr/2, state_decr/1, state_decr/2]).

-export_type([name/0, code/0, locals/0, timeout_ms/0, error_reason/0, ctx/0,
              async_ref/0]).

-define(TIMEOUT, 30000).
-define(NESTED, '$py_nested').
-define(TRACEBACK, '$py_last_traceback').
-define(BINDING, '$py_binding').
-define(CORO, '$py_coro').
-define(EVENTS, {erlang_python, events}).

-type name() :: atom() | binary().
-type code() :: iodata().
-type locals() :: #{atom() | binary() => term()}.
-type timeout_ms() :: non_neg_integer() | infinity.
-type error_reason() :: {atom() | binary(), binary()}  % a Python exception
                      | timeout | no_workers_available | worker_crashed
                      | not_running | {badarg, atom()}
                      | {overloaded, non_neg_integer(), pos_integer()}
                        %% requests to other nodes (py_dist)
                      | {nodedown, node()} | {not_running, node()}
                      | {remote_exception, node(), term()} | {holder_failed, term()}.
-opaque ctx() :: {py_ctx, reference(), pos_integer()} | py_dist:ctx().
-opaque async_ref() :: {py_async, reference(), reference() | {error, error_reason()}}.
-type coro_handle() :: {py_coro, reference(), reference() | {error, error_reason()}}.

-define(RT, '_erlang_python').

%%====================================================================
%% Core calls
%%====================================================================

%% @doc Calls `Module.Func(*Args)' with the default timeout (30 s).
-spec call(name(), name(), list()) -> {ok, term()} | {error, error_reason()}.
call(Module, Func, Args) ->
    call(Module, Func, Args, #{}, ?TIMEOUT).

%% @doc Calls `Module.Func(*Args, **Kwargs)'.
-spec call(name(), name(), list(), map()) -> {ok, term()} | {error, error_reason()}.
call(Module, Func, Args, Kwargs) ->
    call(Module, Func, Args, Kwargs, ?TIMEOUT).

%% @doc Calls `Module.Func(*Args, **Kwargs)' with a timeout in milliseconds.
%% `Module' may be dotted (`` 'os.path' ''); `` '__main__' '' names the
%% namespace of the worker that runs the call.
-spec call(name(), name(), list(), map(), timeout_ms()) ->
          {ok, term()} | {error, error_reason()}.
call(Module, Func, Args, Kwargs, Timeout) ->
    case check_call(Module, Func, Args, Kwargs, Timeout) of
        ok -> run(route(), {call, Module, Func, Args, Kwargs}, Timeout);
        Error -> Error
    end.

%% @doc Evaluates one Python expression.
-spec eval(code()) -> {ok, term()} | {error, error_reason()}.
eval(Code) ->
    eval(Code, #{}, ?TIMEOUT).

%% @doc Evaluates an expression with `Locals' visible to it for this call.
-spec eval(code(), locals()) -> {ok, term()} | {error, error_reason()}.
eval(Code, Locals) ->
    eval(Code, Locals, ?TIMEOUT).

%% @doc Evaluates an expression with locals and a timeout.
-spec eval(code(), locals(), timeout_ms()) -> {ok, term()} | {error, error_reason()}.
eval(Code, Locals, Timeout) ->
    code_request(route(), eval, Code, Locals, Timeout).

%% @doc Runs Python statements in the worker's namespace.
-spec exec(code()) -> ok | {error, error_reason()}.
exec(Code) ->
    exec(Code, #{}, ?TIMEOUT).

%% @doc Runs statements with `Locals' visible to them for this call.
-spec exec(code(), locals()) -> ok | {error, error_reason()}.
exec(Code, Locals) ->
    exec(Code, Locals, ?TIMEOUT).

%% @doc Runs statements with locals and a timeout.
-spec exec(code(), locals(), timeout_ms()) -> ok | {error, error_reason()}.
exec(Code, Locals, Timeout) ->
    code_request(route(), exec, Code, Locals, Timeout).

%% @doc Starts a call and returns at once; collect it with `await/1,2'.
-spec call_async(name(), name(), list()) -> async_ref().
call_async(Module, Func, Args) ->
    call_async(Module, Func, Args, #{}).

%% @doc Starts a call with keyword arguments.
-spec call_async(name(), name(), list(), map()) -> async_ref().
call_async(Module, Func, Args, Kwargs) ->
    Ref = make_ref(),
    Job = case check_call(Module, Func, Args, Kwargs, infinity) of
              ok -> submit(route(), Ref, {call, Module, Func, Args, Kwargs}, false);
              Error -> Error
          end,
    {py_async, Ref, Job}.

%% @doc Waits (default 30 s) for the result of `call_async/3,4'.
-spec await(async_ref()) -> {ok, term()} | {error, error_reason()}.
await(AsyncRef) ->
    await(AsyncRef, ?TIMEOUT).

%% @doc Waits for the result of `call_async/3,4' at most `Timeout' ms.
-spec await(async_ref(), timeout_ms()) -> {ok, term()} | {error, error_reason()}.
await({py_async, _Ref, {error, _} = Error}, _Timeout) ->
    Error;
await({py_async, Ref, Job}, Timeout) ->
    case valid_timeout(Timeout) of
        true -> wait(Ref, Job, Timeout); % no callbacks come to an await
        false -> {error, {badarg, timeout}} % the handle stays usable
    end.

%% @doc Calls a generator function and drains it into a list.
-spec stream(name(), name(), list()) -> {ok, list()} | {error, error_reason()}.
stream(Module, Func, Args) ->
    stream(Module, Func, Args, #{}).

%% @doc Calls a generator function with keyword arguments, drained to a list.
-spec stream(name(), name(), list(), map()) -> {ok, list()} | {error, error_reason()}.
stream(Module, Func, Args, Kwargs) ->
    case check_call(Module, Func, Args, Kwargs, ?TIMEOUT) of
        ok -> run(route(), {stream, Module, Func, Args, Kwargs}, ?TIMEOUT);
        Error -> Error
    end.

%% @doc Evaluates an expression giving an iterable and drains it to a list.
-spec stream_eval(code()) -> {ok, list()} | {error, error_reason()}.
stream_eval(Code) ->
    stream_eval(Code, #{}).

%% @doc Starts an incremental stream: runs `Module.Func(*Args)', a
%% generator, async generator or any iterable, on a worker, and sends the
%% caller `{py_stream, Ref, {data, Value}}' for each value as it is
%% produced, then `{py_stream, Ref, done}' or `{py_stream, Ref, {error,
%% Reason}}'.  At most 64 values sit unacknowledged in the caller's mailbox
%% (see `stream_start/4' and `stream_ack/1').  docs/streaming.md.
-spec stream_start(name(), name(), list()) -> {ok, reference()} | {error, error_reason()}.
stream_start(Module, Func, Args) ->
    py_stream:start(Module, Func, Args, #{}).

%% @doc `stream_start/3' with options: `owner' (the pid the messages go to;
%% default the caller), `kwargs' (a map), `window' (how many values may be
%% sent and not yet acknowledged: default 64; `infinity' for none),
%% `timeout' (ms for the whole stream, default infinity), `value_timeout'
%% (ms the generator may take to produce one value, time spent waiting for
%% the owner's acknowledgement not counted; default infinity) and `ctx' (a
%% context from `bind(new)': the stream runs in its namespace; by default a
%% bound caller's stream runs on its worker).  Either timeout ends the
%% stream with `{error, timeout}' and closes the generator.
-spec stream_start(name(), name(), list(), py_stream:opts()) ->
          {ok, reference()} | {error, error_reason()}.
stream_start(Module, Func, Args, Opts) ->
    py_stream:start(Module, Func, Args, Opts).

%% @doc Acknowledges one value of a stream: the generator may produce one
%% more.  Call it once per `{data, _}' message handled.
-spec stream_ack(reference()) -> ok.
stream_ack(Ref) ->
    py_stream:ack(Ref, 1).

%% @doc Acknowledges `N' values at once.
-spec stream_ack(reference(), pos_integer()) -> ok.
stream_ack(Ref, N) ->
    py_stream:ack(Ref, N).

%% @doc Stops a stream: no message of it arrives after this returns, the
%% generator is closed (its `finally' blocks run) and its worker is free
%% within milliseconds.  `ok' also for a stream that has ended.
-spec stream_cancel(reference()) -> ok.
stream_cancel(Ref) ->
    py_stream:cancel(Ref).

%% @doc `stream_eval/1' with locals.
-spec stream_eval(code(), locals()) -> {ok, list()} | {error, error_reason()}.
stream_eval(Code, Locals) ->
    code_request(route(), stream_eval, Code, Locals, ?TIMEOUT).

%% @doc The embedded Python's version, as `sys.version'.
-spec version() -> {ok, binary()}.
version() ->
    {ok, py_nif:version()}.

%% @doc The formatted traceback of the last Python exception returned to
%% this process, or `undefined'.
-spec last_traceback() -> binary() | undefined.
last_traceback() ->
    get(?TRACEBACK).

%%====================================================================
%% Context affinity
%%====================================================================

%% @doc Binds the calling process to a worker of its own (idempotent).
%% Its later calls all run on that worker, in its namespace, on its thread.
-spec bind() -> ok | {error, no_workers_available | not_running}.
bind() ->
    case pool_call({bind, self()}) of
        {ok, W, Gen} ->
            put(?BINDING, {W, Gen}),
            ok;
        Error ->
            Error
    end.

%% @doc `bind(new)' makes an explicit context holding a worker of its own.
-spec bind(new) -> {ok, ctx()} | {error, no_workers_available | not_running}.
bind(new) ->
    case pool_call({bind_ctx, self()}) of
        {ok, W, Gen} -> {ok, {py_ctx, W, Gen}};
        Error -> Error
    end.

%% @doc `bind(new, Node)' makes a context holding a worker on Node (or on
%% the least-loaded node of the cluster: `cluster'), usable from any node;
%% see `py_dist:bind/1'.
-spec bind(new, py_dist:target()) -> {ok, ctx()} | {error, term()}.
bind(new, Node) ->
    py_dist:bind(Node).

%% @doc Releases the calling process's worker (ok also when not bound).
-spec unbind() -> ok.
unbind() ->
    erase(?BINDING),
    _ = pool_call({unbind, self()}),
    ok.

%% @doc Releases an explicit context (ok also when already released).
-spec unbind(ctx()) -> ok.
unbind({py_ctx, W, Gen}) ->
    _ = pool_call({unbind_ctx, W, Gen}),
    ok;
unbind({py_rctx, _, _} = Ctx) ->
    py_dist:unbind(Ctx).

%% @doc Whether the calling process is bound to a worker.
-spec is_bound() -> boolean().
is_bound() ->
    Bound = try ets:member(py_bindings, self())
            catch error:badarg -> false
            end,
    Bound orelse erase(?BINDING),
    Bound.

%% @doc `call/3' on a context.
-spec ctx_call(ctx(), name(), name(), list()) -> {ok, term()} | {error, error_reason()}.
ctx_call(Ctx, Module, Func, Args) ->
    ctx_call(Ctx, Module, Func, Args, #{}, ?TIMEOUT).

%% @doc `call/4' on a context.
-spec ctx_call(ctx(), name(), name(), list(), map()) ->
          {ok, term()} | {error, error_reason()}.
ctx_call(Ctx, Module, Func, Args, Kwargs) ->
    ctx_call(Ctx, Module, Func, Args, Kwargs, ?TIMEOUT).

%% @doc `call/5' on a context.  Raises `error(context_not_bound)' once the
%% context was released (or its worker lost).
-spec ctx_call(ctx(), name(), name(), list(), map(), timeout_ms()) ->
          {ok, term()} | {error, error_reason()}.
ctx_call({py_rctx, _, _} = Ctx, Module, Func, Args, Kwargs, Timeout) ->
    py_dist:ctx_call(Ctx, Module, Func, Args, Kwargs, Timeout);
ctx_call(Ctx, Module, Func, Args, Kwargs, Timeout) ->
    case check_call(Module, Func, Args, Kwargs, Timeout) of
        ok -> ctx_result(run(ctx_route(Ctx), {call, Module, Func, Args, Kwargs}, Timeout));
        Error -> Error
    end.

%% @doc `eval/1' on a context.
-spec ctx_eval(ctx(), code()) -> {ok, term()} | {error, error_reason()}.
ctx_eval(Ctx, Code) ->
    ctx_eval(Ctx, Code, #{}, ?TIMEOUT).

%% @doc `eval/2' on a context.
-spec ctx_eval(ctx(), code(), locals()) -> {ok, term()} | {error, error_reason()}.
ctx_eval(Ctx, Code, Locals) ->
    ctx_eval(Ctx, Code, Locals, ?TIMEOUT).

%% @doc `eval/3' on a context.
-spec ctx_eval(ctx(), code(), locals(), timeout_ms()) -> {ok, term()} | {error, error_reason()}.
ctx_eval({py_rctx, _, _} = Ctx, Code, Locals, Timeout) ->
    py_dist:ctx_eval(Ctx, Code, Locals, Timeout);
ctx_eval(Ctx, Code, Locals, Timeout) ->
    ctx_result(code_request(ctx_route(Ctx), eval, Code, Locals, Timeout)).

%% @doc `exec/1' on a context.
-spec ctx_exec(ctx(), code()) -> ok | {error, error_reason()}.
ctx_exec(Ctx, Code) ->
    ctx_exec(Ctx, Code, #{}).

%% @doc `exec/2' on a context.
-spec ctx_exec(ctx(), code(), locals()) -> ok | {error, error_reason()}.
ctx_exec(Ctx, Code, Locals) ->
    ctx_exec(Ctx, Code, Locals, ?TIMEOUT).

%% @doc `exec/3' on a context.
-spec ctx_exec(ctx(), code(), locals(), timeout_ms()) -> ok | {error, error_reason()}.
ctx_exec({py_rctx, _, _} = Ctx, Code, Locals, Timeout) ->
    py_dist:ctx_exec(Ctx, Code, Locals, Timeout);
ctx_exec(Ctx, Code, Locals, Timeout) ->
    ctx_result(code_request(ctx_route(Ctx), exec, Code, Locals, Timeout)).

%% @doc Runs `Fun' with a binding released afterwards, also when it raises.
%% Arity 0: binds the calling process (if it was bound already, the binding
%% is kept).  Arity 1: passes a fresh context.  Returns what `Fun' returns,
%% or `{error, no_workers_available}' when no worker can be bound.
-spec with_context(fun(() -> R) | fun((ctx()) -> R)) -> R | {error, no_workers_available | not_running}.
with_context(Fun) when is_function(Fun, 0) ->
    case is_bound() of
        true ->
            Fun();
        false ->
            case bind() of
                ok -> try Fun() after unbind() end;
                Error -> Error
            end
    end;
with_context(Fun) when is_function(Fun, 1) ->
    case bind(new) of
        {ok, Ctx} -> try Fun(Ctx) after unbind(Ctx) end;
        Error -> Error
    end.

%%====================================================================
%% Python calling Erlang
%%====================================================================

%% @doc Makes `Fun(Args)' callable from Python as `erlang.Name(*Args)'.
-spec register_function(name(), fun((list()) -> term())) -> ok.
register_function(Name, Fun) when is_function(Fun, 1) ->
    py_callback:register(Name, {fn, Fun}).

%% @doc Makes `Module:Function(Args)' callable from Python as `erlang.Name'.
-spec register_function(name(), module(), atom()) -> ok.
register_function(Name, Module, Function) when is_atom(Module), is_atom(Function) ->
    py_callback:register(Name, {mf, Module, Function}).

%% @doc Removes a registered function (ok also when unknown).
-spec unregister_function(name()) -> ok.
unregister_function(Name) ->
    py_callback:unregister(Name).

%%====================================================================
%% asyncio: coroutines run on one event loop with a thread of its own
%%====================================================================

%% @doc Starts coroutine function `Module.Func(*Args)' on the event loop and
%% returns a reference at once; collect the outcome with `async_await/1,2'
%% in the same process (the outcome is a message to it).
-spec async_call(name(), name(), list()) -> reference().
async_call(Module, Func, Args) ->
    async_call(Module, Func, Args, #{}).

%% @doc `async_call/3' with keyword arguments.
-spec async_call(name(), name(), list(), map()) -> reference().
async_call(Module, Func, Args, Kwargs) ->
    {py_coro, Ref, _} = Handle = start_coroutine(async_call, Module, Func, Args, Kwargs),
    put({?CORO, Ref}, Handle),
    Ref.

%% @doc Waits (default 30 s) for a coroutine started by `async_call/3,4'.
-spec async_await(reference()) -> {ok, term()} | {error, error_reason()}.
async_await(Ref) ->
    async_await(Ref, ?TIMEOUT).

%% @doc Waits at most `Timeout' ms.  After a timeout the coroutine's late
%% outcome is dropped, never delivered to the mailbox.  A reference this
%% process did not get from `async_call/3,4' (or already awaited to the end)
%% gives `{error, {badarg, ref}}'.
-spec async_await(reference(), timeout_ms()) -> {ok, term()} | {error, error_reason()}.
async_await(Ref, Timeout) when is_reference(Ref) ->
    case get({?CORO, Ref}) of
        undefined ->
            {error, {badarg, ref}};
        Handle ->
            case await_coro(Handle, Timeout) of
                {error, {badarg, timeout}} = E -> E; % the reference stays usable
                Outcome -> erase({?CORO, Ref}), Outcome
            end
    end;
async_await(_Ref, _Timeout) ->
    {error, {badarg, ref}}.

-spec await_coro(coro_handle(), timeout_ms()) -> {ok, term()} | {error, error_reason()}.
await_coro({py_coro, _Ref, {error, _} = Error}, _Timeout) ->
    Error;
await_coro({py_coro, Ref, Reply}, Timeout) ->
    case valid_timeout(Timeout) of
        false ->
            {error, {badarg, timeout}};
        true ->
            receive {Ref, R} -> result(R)
            after remaining(deadline(Timeout)) ->
                case py_nif:async_cancel(Reply) of
                    ok -> {error, timeout};
                    sent -> receive {Ref, R} -> result(R) after 0 -> {error, timeout} end
                end
            end
    end.

%% @doc Runs coroutine functions concurrently on the event loop; `{ok,
%% Results}' in order, or the first error (in list order).
-spec async_gather([{name(), name(), list()}]) -> {ok, list()} | {error, error_reason()}.
async_gather(Calls) when is_list(Calls) ->
    case valid_calls(Calls) of
        true ->
            Refs = [async_call(M, F, A) || {M, F, A} <- Calls],
            collect(fun async_await/2, Refs, deadline(?TIMEOUT), []);
        false ->
            {error, {badarg, calls}}
    end.

%% Each entry must be {Module, Func, Args}; the parts are checked per call.
valid_calls(Calls) ->
    lists:all(fun({_, _, _}) -> true; (_) -> false end, Calls).

%% @doc Drains async generator `Module.Func(*Args)' into a list.
-spec async_stream(name(), name(), list()) -> {ok, list()} | {error, error_reason()}.
async_stream(Module, Func, Args) ->
    async_stream(Module, Func, Args, #{}).

%% @doc `async_stream/3' with keyword arguments.
-spec async_stream(name(), name(), list(), map()) -> {ok, list()} | {error, error_reason()}.
async_stream(Module, Func, Args, Kwargs) ->
    await_coro(start_coroutine(async_stream, Module, Func, Args, Kwargs), ?TIMEOUT).

start_coroutine(Kind, Module, Func, Args, Kwargs) ->
    Ref = make_ref(),
    case check_call(Module, Func, Args, Kwargs, ?TIMEOUT) of
        ok ->
            Reply = py_nif:async_reply(Ref),
            case run(route(), {Kind, Module, Func, Args, Kwargs, Reply}, ?TIMEOUT) of
                ok -> {py_coro, Ref, Reply};
                {error, _} = Error -> {py_coro, Ref, Error}
            end;
        Error ->
            {py_coro, Ref, Error}
    end.

%% Awaits handles in order against one deadline; on the first error the
%% others are given up (their late outcomes are dropped).
collect(_Await, [], _Deadline, Acc) ->
    {ok, lists:reverse(Acc)};
collect(Await, [H | T], Deadline, Acc) ->
    case Await(H, remaining(Deadline)) of
        {ok, V} -> collect(Await, T, Deadline, [V | Acc]);
        Error ->
            _ = [Await(X, 0) || X <- T],
            Error
    end.

%%====================================================================
%% Memory and garbage collection (run on a worker, never a scheduler)
%%====================================================================

%% @doc Interpreter memory figures: `gc_stats', `gc_count', `gc_threshold',
%% `gc_enabled', `tracemalloc', and while tracing `traced_memory_current'
%% and `traced_memory_peak' (bytes).
-spec memory_stats() -> {ok, #{atom() => term()}} | {error, error_reason()}.
memory_stats() ->
    case call(?RT, memory_stats, []) of
        {ok, Map} ->
            Stats = maps:from_list([{binary_to_atom(K, utf8), V} || {K, V} <- maps:to_list(Map)]),
            GcStats = [maps:from_list([{binary_to_atom(K, utf8), V} || {K, V} <- maps:to_list(G)])
                       || G <- maps:get(gc_stats, Stats)],
            {ok, Stats#{gc_stats := GcStats}};
        Error ->
            Error
    end.

%% @doc Full garbage collection; the number of objects collected.
-spec gc() -> {ok, non_neg_integer()} | {error, error_reason()}.
gc() ->
    gc(2).

%% @doc Garbage collection of generations 0..Gen.
-spec gc(0..2) -> {ok, non_neg_integer()} | {error, error_reason()}.
gc(Gen) when is_integer(Gen), Gen >= 0, Gen =< 2 ->
    call(?RT, collect, [Gen]).

%% @doc Starts tracing Python allocations (1 frame per trace).
-spec tracemalloc_start() -> ok | {error, error_reason()}.
tracemalloc_start() ->
    tracemalloc_start(1).

%% @doc Starts tracing, keeping `Frames' frames per allocation.
-spec tracemalloc_start(pos_integer()) -> ok | {error, error_reason()}.
tracemalloc_start(Frames) when is_integer(Frames), Frames >= 1 ->
    ok_result(call(?RT, tracemalloc_start, [Frames])).

%% @doc Stops tracing.
-spec tracemalloc_stop() -> ok | {error, error_reason()}.
tracemalloc_stop() ->
    ok_result(call(?RT, tracemalloc_stop, [])).

%%====================================================================
%% Virtual environments
%%====================================================================

%% @doc Makes a virtualenv's site-packages importable in every worker (ahead
%% of the system's), until `deactivate_venv/0'.
-spec activate_venv(file:filename_all()) -> ok | {error, {not_a_venv, binary()} | error_reason()}.
activate_venv(Path) ->
    case catch unicode:characters_to_binary(Path) of
        Bin when is_binary(Bin) ->
            case looks_like_venv(Bin) of
                false -> {error, {not_a_venv, Bin}};
                true -> everywhere(forget_modules(call(?RT, activate_venv, [Bin])), {venv, Bin})
            end;
        _ ->
            {error, {badarg, path}}
    end.

%% A venv made by `python -m venv' has pyvenv.cfg; one made by other tools
%% (virtualenv of old, a copied tree) may have only lib/pythonX.Y/site-packages.
%% Which Python version it is for is checked on the Python side.
looks_like_venv(Dir) ->
    filelib:is_regular(filename:join(Dir, <<"pyvenv.cfg">>)) orelse
        filelib:wildcard(binary_to_list(filename:join([Dir, <<"lib">>, <<"python*">>,
                                                       <<"site-packages">>]))) =/= [].

%% @doc Undoes `activate_venv/1' (ok also when none is active).
-spec deactivate_venv() -> ok | {error, error_reason()}.
deactivate_venv() ->
    everywhere(forget_modules(call(?RT, deactivate_venv, [])), {venv, none}).

%% @doc `{ok, #{<<"active">> => false}}', or the active venv's `path',
%% `site_packages' and `python_version'.
-spec venv_info() -> {ok, #{binary() => term()}} | {error, error_reason()}.
venv_info() ->
    call(?RT, venv_info, []).

%% @doc Reloads a Python module; every worker, bound or not, sees the new
%% code afterwards.
-spec reload(name()) -> ok | {error, error_reason()}.
reload(Module) when is_atom(Module) ->
    reload(atom_to_binary(Module, utf8));
reload(Module) when is_list(Module) ->
    case catch unicode:characters_to_binary(Module) of
        Bin when is_binary(Bin) -> reload(Bin);
        _ -> {error, {badarg, module}}
    end;
reload(Module) when is_binary(Module) ->
    everywhere(forget_modules(call(?RT, reload, [Module])), {reload, Module}).

%% Workers cache modules and callables: after sys.modules changed, each
%% worker drops its caches before its next request.
forget_modules({ok, _}) ->
    py_nif:clear_caches();
forget_modules(Error) ->
    Error.

%% A change one worker made, made in every worker's interpreter too
%% (execution_mode subinterp: each has its own sys.path and sys.modules).
everywhere(ok, What) ->
    py_pool:sync(What);
everywhere(Error, _What) ->
    Error.

ok_result({ok, _}) -> ok;
ok_result(Error) -> Error.

%%====================================================================
%% Execution model
%%====================================================================

%% @doc How the workers run Python: `multi_executor' (worker threads
%% sharing one interpreter and its GIL: application env `execution_mode'
%% `shared_gil') or `subinterp' (each worker its own sub-interpreter with
%% its own GIL, Python 3.12+) or `isolated' (each worker an OS process of
%% its own: docs/isolation.md).  Before the pool starts Python, the mode it
%% will choose.  (`free_threaded', a Python without a GIL, is not built.)
-spec execution_mode() -> free_threaded | subinterp | multi_executor | isolated.
execution_mode() ->
    case py_nif:execution_info() of
        {none, _} ->
            case py_pool:chosen_mode() of
                {ok, subinterp} -> subinterp;
                {ok, isolated} -> isolated;
                _ -> multi_executor
            end;
        {Mode, _} ->
            Mode
    end.

%% @doc The number of threads running Python requests (workers in service).
-spec num_executors() -> non_neg_integer().
num_executors() ->
    maps:get(num_workers, py_nif:stats()).

%% @doc Whether this Python build can run sub-interpreters with their own
%% GIL (built against Python 3.12+): whether execution_mode subinterp can
%% be asked for.
-spec subinterp_supported() -> boolean().
subinterp_supported() ->
    element(2, py_nif:execution_info()).

%% @doc Runs the calls concurrently, each on any free worker (never on the
%% caller's bound worker): `{ok, [{ok, Value} | {error, Reason}]}', one
%% outcome per call in order, so that one failing call hides no other.
%% All calls share one 30 s deadline.
-spec parallel([{name(), name(), list()}]) ->
          {ok, [{ok, term()} | {error, error_reason()}]} | {error, {badarg, calls}}.
parallel(Calls) when is_list(Calls) ->
    case valid_calls(Calls) of
        true -> parallel_run(Calls);
        false -> {error, {badarg, calls}}
    end.

parallel_run(Calls) ->
    Handles = [begin
                   Ref = make_ref(),
                   Job = case check_call(M, F, A, #{}, ?TIMEOUT) of
                             ok -> submit(shared, Ref, {call, M, F, A, #{}}, false);
                             Error -> Error
                         end,
                   {py_async, Ref, Job}
               end || {M, F, A} <- Calls],
    Deadline = deadline(?TIMEOUT),
    {ok, [await(H, remaining(Deadline)) || H <- Handles]}.

%%====================================================================
%% Shared state (ETS; keys: atoms are stored as binaries, so Erlang's
%% `counter', `<<"counter">>' and Python's 'counter' are one key)
%%====================================================================

%% @doc Stores a value under a key.
-spec state_store(term(), term()) -> ok.
state_store(Key, Value) -> py_state:store(Key, Value).

%% @doc Fetches a value.
-spec state_fetch(term()) -> {ok, term()} | {error, not_found}.
state_fetch(Key) -> py_state:fetch(Key).

%% @doc Removes a key (ok also when absent).
-spec state_remove(term()) -> ok.
state_remove(Key) -> py_state:remove(Key).

%% @doc All keys.
-spec state_keys() -> [term()].
state_keys() -> py_state:keys().

%% @doc Removes every key.
-spec state_clear() -> ok.
state_clear() -> py_state:clear().

%% @doc Atomically adds 1; returns the new value (a missing key counts as 0).
-spec state_incr(term()) -> integer().
state_incr(Key) -> py_state:incr(Key, 1).

%% @doc Atomically adds `N'; returns the new value.
-spec state_incr(term(), integer()) -> integer().
state_incr(Key, N) -> py_state:incr(Key, N).

%% @doc Atomically subtracts 1; returns the new value.
-spec state_decr(term()) -> integer().
state_decr(Key) -> py_state:incr(Key, -1).

%% @doc Atomically subtracts `N'; returns the new value.
-spec state_decr(term(), integer()) -> integer().
state_decr(Key, N) -> py_state:incr(Key, -N).

%%====================================================================
%% Internals: routing, submitting, waiting
%%====================================================================

%% Where a request of this process goes: to the worker waiting on a callback
%% this process is serving, else to its bound worker, else the shared queue.
%% The binding is cached in the process dictionary by bind/0 (the pool's
%% ETS table stays the authority: a binding the pool revoked because its
%% worker was lost is refused by the NIF, and forgotten here).
route() ->
    case get(?NESTED) of
        undefined ->
            case get(?BINDING) of
                undefined -> shared;
                Binding -> Binding
            end;
        W -> {nested, W}
    end.

ctx_route({py_ctx, W, Gen}) ->
    case get(?NESTED) of
        W -> {nested, W};
        _ -> {W, Gen}
    end;
ctx_route(_) ->
    error(badarg).

ctx_result({error, context_not_bound}) -> error(context_not_bound);
ctx_result({error, worker_crashed}) -> error(context_not_bound);
ctx_result(Result) -> Result.

code_request(Where, Kind, Code, Locals, Timeout) ->
    case to_code(Code) of
        {ok, Bin} when is_map(Locals) ->
            case valid_timeout(Timeout) of
                true -> run(Where, {Kind, Bin, Locals}, Timeout);
                false -> {error, {badarg, timeout}}
            end;
        {ok, _} -> {error, {badarg, locals}};
        Error -> Error
    end.

to_code(Code) when is_binary(Code) -> {ok, Code};
to_code(Code) when is_list(Code) ->
    try {ok, iolist_to_binary(Code)}
    catch error:badarg -> {error, {badarg, code}}
    end;
to_code(_) -> {error, {badarg, code}}.

check_call(M, F, A, K, T) ->
    if not (is_atom(M) orelse is_binary(M)) -> {error, {badarg, module}};
       not (is_atom(F) orelse is_binary(F)) -> {error, {badarg, function}};
       not is_list(A) -> {error, {badarg, args}};
       not is_map(K) -> {error, {badarg, kwargs}};
       true ->
           case valid_timeout(T) of
               true -> ok;
               false -> {error, {badarg, timeout}}
           end
    end.

valid_timeout(infinity) -> true;
valid_timeout(T) -> is_integer(T) andalso T >= 0.

%% Runs a request and waits for its answer.  With call events on (see
%% py_events) the exchange is wrapped in start and stop/exception events.
run(Where, Req, Timeout) ->
    case persistent_term:get(?EVENTS, false) of
        false -> element(1, exchange(Where, Req, Timeout));
        Events -> py_events:span(Events, Req, fun() -> exchange(Where, Req, Timeout) end)
    end.

%% {Result, Worker}: Worker the id of the worker that answered, the job
%% (whose worker py_events asks for only when it needs it), or none.
exchange(Where, Req, Timeout) ->
    Ref = make_ref(),
    case submit(Where, Ref, Req, true) of
        {error, context_not_bound} when Where =/= shared ->
            case erase(?BINDING) of
                Where ->
                    %% A process binding that is no longer ours (a process
                    %% dictionary copied from another process): not bound.
                    exchange(shared, Req, Timeout);
                Other ->
                    restore_binding(Other),
                    {{error, context_not_bound}, none} % an explicit context
            end;
        {error, _} = Error -> {Error, none};
        {'$py_done', Reply, W} -> {result(Reply), W}; % answered while submitting
        Job -> {answered(Where, wait(Ref, Job, Timeout)), Job}
    end.

%% A bound process whose worker was lost while it ran the call hears
%% worker_crashed once: it is unbound from then on, as after a refused
%% submit.
answered(Where, {error, worker_crashed} = Lost) ->
    forget_lost_binding(Where, worker_crashed),
    Lost;
answered(_Where, Result) ->
    Result.

submit(Where, Ref, Req, Sync) ->
    try py_nif:submit(Where, Ref, Req, Sync) of
        dirty ->
            %% Too large to copy on a normal scheduler without blocking it.
            submit_result(Where, py_nif:submit_dirty(Where, Ref, Req, Sync));
        Result ->
            submit_result(Where, Result)
    catch error:badarg -> {error, {badarg, request}}
    end.

submit_result(Where, Result) ->
    case Result of
        Err when is_atom(Err) ->
            forget_lost_binding(Where, Err),
            {error, Err};
        Job ->
            Job
    end.

restore_binding(undefined) -> ok;
restore_binding(B) -> put(?BINDING, B), ok.

%% The process's worker was lost (the pool has dropped the binding).
forget_lost_binding(Where, Err) when Err =:= worker_crashed; Err =:= context_not_bound ->
    case get(?BINDING) of
        Where -> erase(?BINDING);
        _ -> ok
    end;
forget_lost_binding(_, _) ->
    ok.

%% Erlang's receive waits at most 2^32 - 1 ms: longer is forever here.
after_ms(infinity) -> infinity;
after_ms(Timeout) when Timeout > 16#FFFFFFFF -> infinity;
after_ms(Timeout) -> Timeout.

deadline(infinity) -> infinity;
deadline(Timeout) when Timeout > 16#FFFFFFFF -> infinity;
deadline(Timeout) -> erlang:monotonic_time(millisecond) + Timeout.

remaining({timeout, Timeout}) -> after_ms(Timeout);
remaining(infinity) -> infinity;
remaining(Deadline) -> max(0, Deadline - erlang:monotonic_time(millisecond)).

%% Waits for {Ref, Reply}, at most Timeout ms after the submit.  A callback
%% of this request (Python calling erlang.call) is served in a fresh
%% process, so the deadline keeps running; that process routes its own py
%% calls to the waiting worker.  The clock is read only once a callback
%% comes (reading it costs as much as a small call's receive): until then
%% the limit is {timeout, Timeout}, afterwards a deadline.
wait(Ref, Job, Timeout) ->
    wait(Ref, Job, {timeout, Timeout}, none).

wait(Ref, Job, Limit, Serving) ->
    receive
        {Ref, {'$py_cb', ReplyTo, Name, Args}} ->
            wait(Ref, Job, deadline(Limit, Job), serve(ReplyTo, Name, Args));
        {Ref, Reply} ->
            result(Reply)
    after remaining(Limit) ->
        timed_out(Ref, Job, Serving)
    end.

%% The deadline of a wait limit, for a job submitted job_age ms ago.
deadline({timeout, Timeout}, Job) ->
    case after_ms(Timeout) of
        infinity -> infinity;
        T -> erlang:monotonic_time(millisecond) + T - py_nif:job_age(Job)
    end;
deadline(Deadline, _Job) ->
    Deadline.

serve(ReplyTo, Name, Args) ->
    spawn(py_callback, serve, [ReplyTo, element(1, ReplyTo), Name, Args]).

timed_out(Ref, Job, Serving) ->
    case py_nif:cancel(Job) of
        ok ->
            stop_serving(Serving),
            flush(Ref),
            {error, timeout};
        sent ->
            %% Answered as we gave up: the reply is in the mailbox,
            %% unless it was collected before (a second await).
            receive {Ref, Reply} -> result(Reply) after 0 -> {error, timeout} end;
        {overloaded, _, _} = Overloaded ->
            %% It never got a slot of the overload semaphore.
            flush(Ref),
            {error, Overloaded}
    end.

stop_serving(none) -> ok;
stop_serving(Pid) -> exit(Pid, kill).

%% After a cancel returned ok nothing more is sent for Ref; drop what came.
flush(Ref) ->
    receive {Ref, _} -> flush(Ref)
    after 0 -> ok
    end.

result({'$py_error', Error, Traceback}) ->
    put(?TRACEBACK, Traceback),
    {error, Error};
result({'$py_etf_safe', Bin}) ->
    %% An isolated worker's answer (c_src/exec_isolated.c), decoded here: it
    %% makes no atom a node does not have.
    try binary_to_term(Bin, [safe])
    catch error:badarg -> {error, {'TypeError', <<"this node cannot decode the isolated "
                                                 "worker's answer (an atom it does not "
                                                 "know)">>}}
    end;
result({'$py_etf', Bin}) ->
    %% A result holding large dicts, encoded by the worker (c_src/py_etf.c).
    binary_to_term(Bin);
result(Reply) ->
    Reply.

%% @private Submits a request as run/3 does, for py_stream's process:
%% a job, an answer at once, or an error.
-spec internal_submit(py_nif:where(), reference(), tuple()) -> term().
internal_submit(Where, Ref, Req) ->
    submit(Where, Ref, Req, true).

%% @private Where the requests of a local context go.
-spec internal_where(ctx()) -> py_nif:where() | {error, {badarg, ctx}}.
internal_where({py_ctx, W, Gen}) -> {W, Gen};
internal_where(_) -> {error, {badarg, ctx}}.

%% @private A worker's reply as the caller sees it.
-spec internal_result(term()) -> term().
internal_result(Reply) ->
    result(Reply).

%% The pool may be gone or going (application stopping): that is
%% {error, not_running} for the caller, never an exit.
pool_call(Request) ->
    try gen_server:call(py_pool, Request, infinity)
    catch exit:{Reason, {gen_server, call, _}}
            when Reason =:= noproc; Reason =:= normal; Reason =:= shutdown;
                 Reason =:= killed; element(1, Reason) =:= shutdown ->
        {error, not_running}
    end.
