%% @doc Incremental streams: a Python generator's values sent to an Erlang
%% process one message per value, as they are yielded, with flow control.
%% Use it through `py:stream_start/3,4', `py:stream_ack/1,2' and
%% `py:stream_cancel/1' (docs/streaming.md).
%%
%% Messages to the owner (`Ref' is what `stream_start' returned):
%% ```
%% {py_stream, Ref, {data, Value}}     one per value
%% {py_stream, Ref, done}              the generator ended
%% {py_stream, Ref, {error, Reason}}   it raised (Reason as for py:call), timed out...
%% '''
%% Flow control: at most `window' values (default 64) sent and not yet
%% acknowledged with `py:stream_ack(Ref)' sit in the owner's mailbox; the
%% generator is not advanced until the owner acknowledges.  A window of
%% `infinity' turns flow control off (the owner must keep up).
%%
%% Each stream has a process of its own (here, `run/6'): it submits the
%% job, serves the generator's `erlang.call' callbacks, watches the owner
%% and the timeouts, and sends the last message.  The values themselves go
%% from the worker straight to the owner (c_src/py_stream.c).
-module(py_stream).

-export([start/4, ack/2, cancel/1]).
-export([run/6]).

-define(DEFAULT_WINDOW, 64).
%% How long a generator that saw the stop may take to close itself before
%% it is interrupted.
-define(CLOSE_WAIT, 5000).
%% "infinity": a window no generator fills
-define(UNBOUNDED, 16#FFFFFFFF).

-type opts() :: #{owner => pid(), kwargs => map(), timeout => py:timeout_ms(),
                  value_timeout => py:timeout_ms(), window => pos_integer() | infinity,
                  ctx => py:ctx()}.
-export_type([opts/0]).

%% @doc Starts a stream (see `py:stream_start/4').
-spec start(py:name(), py:name(), list(), opts()) -> {ok, reference()} | {error, term()}.
start(Module, Func, Args, Opts) when is_map(Opts) ->
    case check(Module, Func, Args, Opts) of
        {ok, Owner, Window, Where} ->
            Kwargs = maps:get(kwargs, Opts, #{}),
            Sink = py_nif:stream_new(Owner, Window),
            Req = {stream_start, Module, Func, Args, Kwargs, Sink},
            Limits = {maps:get(timeout, Opts, infinity), maps:get(value_timeout, Opts, infinity)},
            Pid = spawn(?MODULE, run, [Owner, Sink, Where, Req, Limits, self()]),
            ok = py_nif:stream_set_proc(Sink, Pid),
            Pid ! {go, Sink},
            {ok, Sink};
        Error ->
            Error
    end;
start(_Module, _Func, _Args, _Opts) ->
    {error, {badarg, opts}}.

check(M, F, A, Opts) ->
    Owner = maps:get(owner, Opts, self()),
    Window = maps:get(window, Opts, ?DEFAULT_WINDOW),
    Timeouts = [maps:get(K, Opts, infinity) || K <- [timeout, value_timeout]],
    if not (is_atom(M) orelse is_binary(M)) -> {error, {badarg, module}};
       not (is_atom(F) orelse is_binary(F)) -> {error, {badarg, function}};
       not is_list(A) -> {error, {badarg, args}};
       not is_pid(Owner) orelse node(Owner) =/= node() -> {error, {badarg, owner}};
       not (Window =:= infinity orelse
            (is_integer(Window) andalso Window > 0 andalso Window < ?UNBOUNDED)) ->
           {error, {badarg, window}};
       true ->
           case lists:all(fun valid_timeout/1, Timeouts) of
               false -> {error, {badarg, timeout}};
               true ->
                   case is_map(maps:get(kwargs, Opts, #{})) of
                       false -> {error, {badarg, kwargs}};
                       true -> where(Opts, Owner, window(Window))
                   end
           end
    end.

window(infinity) -> ?UNBOUNDED;
window(N) -> N.

valid_timeout(infinity) -> true;
valid_timeout(T) -> is_integer(T) andalso T > 0.

%% The stream runs in the given context, else on the caller's bound worker
%% (its namespace), else on any worker.
where(#{ctx := Ctx}, Owner, Window) ->
    case py:internal_where(Ctx) of
        {error, _} = Error -> Error;
        Where -> {ok, Owner, Window, Where}
    end;
where(_Opts, Owner, Window) ->
    case get('$py_binding') of
        undefined -> {ok, Owner, Window, shared};
        Binding -> {ok, Owner, Window, Binding}
    end.

%% @doc Acknowledges `N' values: the generator may run ahead by that many.
-spec ack(reference(), pos_integer()) -> ok.
ack(Ref, N) when is_integer(N), N > 0 ->
    try py_nif:stream_ack(Ref, N)
    catch error:badarg -> error(badarg, [Ref, N])
    end.

%% @doc Stops a stream (see `py:stream_cancel/1').
-spec cancel(reference()) -> ok.
cancel(Ref) ->
    try py_nif:stream_stop(Ref) of
        {running, Pid} ->
            Pid ! {'$py_stream_cancel', Ref},
            ok;
        ended ->
            ok
    catch error:badarg -> error(badarg, [Ref])
    end.

%%--------------------------------------------------------------------
%% The stream's process
%%--------------------------------------------------------------------

%% @private
-spec run(pid(), reference(), py_nif:where(), tuple(),
          {py:timeout_ms(), py:timeout_ms()}, pid()) -> ok.
run(Owner, Sink, Where0, Req, {Timeout, ValueTimeout}, Starter) ->
    StarterMon = monitor(process, Starter),
    receive
        {go, Sink} ->
            demonitor(StarterMon, [flush]),
            OwnerMon = monitor(process, Owner),
            JobRef = make_ref(),
            Deadline = deadline(Timeout),
            {Where, Held} = hold_worker(Where0),
            try run(Sink, Where, Req, JobRef, OwnerMon, Deadline, ValueTimeout)
            catch Class:Reason:Stack ->
                %% A fault of this process: the owner hears of it (its stream
                %% ends), the generator stops at its next value.
                _ = py_nif:stream_end(Sink, {error, {stream_failed, {Class, Reason}}}),
                erlang:raise(Class, Reason, Stack)
            after release_worker(Held)
            end;
        {'DOWN', StarterMon, process, _, _} ->
            %% Killed between spawning this process and handing it the
            %% stream: nobody was given the reference.
            _ = py_nif:stream_stop(Sink),
            ok
    end.

%% A stream of an unbound caller holds a worker of its own for its whole
%% life, as a context does: it counts as checked out in py_pool:get_stats()
%% and is never handed to py:bind() meanwhile (a process bound to it would
%% wait behind an endless stream).  When every worker is bound it runs on
%% the shared queue, as a call would.
hold_worker(shared) ->
    case py:bind(new) of
        {ok, Ctx} -> {py:internal_where(Ctx), Ctx};
        {error, _} -> {shared, none}
    end;
hold_worker(Where) ->
    {Where, none}.

release_worker(none) -> ok;
release_worker(Ctx) -> _ = py:unbind(Ctx), ok.

run(Sink, Where, Req, JobRef, OwnerMon, Deadline, ValueTimeout) ->
    case py:internal_submit(Where, JobRef, Req) of
        {error, _} = Error ->
            finish(Sink, Error);
        {'$py_done', Reply, _W} ->
            finish(Sink, py:internal_result(Reply));
        Job ->
            loop(#{sink => Sink, job => Job, ref => JobRef, owner_mon => OwnerMon,
                   deadline => Deadline, value_timeout => ValueTimeout, serving => none})
    end,
    ok.

loop(#{ref := Ref, sink := Sink, owner_mon := OwnerMon} = S) ->
    {Wait, _Why} = next_limit(S),
    receive
        {Ref, {'$py_cb', ReplyTo, Name, Args}} ->
            Pid = spawn(py_callback, serve, [ReplyTo, element(1, ReplyTo), Name, Args]),
            loop(S#{serving := Pid});
        {Ref, Reply} ->
            finish(Sink, py:internal_result(Reply));
        {'$py_stream_cancel', Sink} ->
            stop_job(S);
        {'DOWN', OwnerMon, process, _, _} ->
            _ = py_nif:stream_stop(Sink),
            stop_job(S)
    after Wait ->
        %% Looked at again: the generator may have begun to wait for
        %% credit, or produced a value, since the limit was computed.
        case next_limit(S) of
            {0, timeout} ->
                %% The owner hears {error, timeout} first; then the job stops.
                _ = py_nif:stream_end(Sink, {error, timeout}),
                stop_job(S);
            _ ->
                loop(S)
        end
    end.

%% How long to wait, and why: the whole stream's deadline, or the time the
%% current value may still take (the wait for the owner's credit does not
%% count: the owner is slow, not the generator).
next_limit(#{deadline := Deadline, value_timeout := VT, sink := Sink}) ->
    Whole = remaining(Deadline),
    Value = case VT of
                infinity -> infinity;
                _ ->
                    case py_nif:stream_info(Sink) of
                        {true, _, _, _} -> {recheck, VT};
                        {false, Since, _, _} -> {timeout, max(0, VT - Since)}
                    end
            end,
    case {Whole, Value} of
        {infinity, infinity} -> {infinity, timeout};
        {infinity, {Why, V}} -> {V, Why};
        {W, infinity} -> {W, timeout};
        {W, {_, V}} when W =< V -> {W, timeout};
        {_, {Why, V}} -> {V, Why}
    end.

deadline(infinity) -> infinity;
deadline(T) -> erlang:monotonic_time(millisecond) + T.

remaining(infinity) -> infinity;
remaining(D) -> max(0, D - erlang:monotonic_time(millisecond)).

%% The generator is closed (the sink is stopped already).  If it waits for
%% credit it sees the stop at once and closes itself: this process waits
%% for that (so that no interrupt cuts its finally blocks short), serving
%% their callbacks.  A callback being served then is left to finish: it may
%% be the finally block's own, which can reach this process before the
%% cancel does.  If the generator is running Python code it is interrupted
%% there (its finally blocks run), and a callback it waits for is stopped,
%% as for a call whose caller gave up.  Either way the worker is free within
%% milliseconds.
stop_job(#{job := Job, ref := Ref, serving := Serving, sink := Sink}) ->
    _ = case py_nif:stream_info(Sink) of
            {true, _, _, _} ->
                close_wait(Ref, Job, deadline(?CLOSE_WAIT), Serving);
            _ ->
                stop_serving(Serving),
                py_nif:cancel(Job)
        end,
    ok.

close_wait(Ref, Job, Deadline, Serving) ->
    receive
        {Ref, {'$py_cb', ReplyTo, Name, Args}} ->
            Pid = spawn(py_callback, serve, [ReplyTo, element(1, ReplyTo), Name, Args]),
            close_wait(Ref, Job, Deadline, Pid);
        {Ref, _} ->
            ok
    after remaining(Deadline) ->
        stop_serving(Serving),
        py_nif:cancel(Job)
    end.

stop_serving(none) -> ok;
stop_serving(Pid) -> exit(Pid, kill).

finish(Sink, ok) ->
    _ = py_nif:stream_end(Sink, done),
    ok;
finish(Sink, {error, Reason}) ->
    _ = py_nif:stream_end(Sink, {error, Reason}),
    ok.
