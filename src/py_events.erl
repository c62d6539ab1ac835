%% @doc Call events through telemetry: every request `py' runs and waits
%% for (call, eval, exec, stream, stream_eval, their `ctx_*' forms; for
%% async_call and async_stream, the start of the coroutine) emits
%%
%% <ul>
%% <li>`[erlang_python, call, start]' with measurements
%%     `#{monotonic_time, system_time}';</li>
%% <li>`[erlang_python, call, stop]' when it returns `{ok, _}' or `ok',
%%     with `#{duration, monotonic_time}';</li>
%% <li>`[erlang_python, call, exception]' when it returns
%%     `{error, Reason}' (or, rarely, raises: then `Reason' is
%%     `{Class, Why}'), with `#{duration, monotonic_time}' and
%%     `reason => Reason' added to the metadata.  Unlike telemetry:span/3's
%%     convention an error result is an exception here; there is no `kind'
%%     of error nor `stacktrace'.</li>
%% </ul>
%%
%% Durations are in `native' time units (`erlang:convert_time_unit/3'), as
%% telemetry's convention has it.  The metadata of every event:
%% `#{kind, module, function, worker, mode}': `kind' is `call', `eval',
%% `exec', `stream', `stream_eval', `async_call' or `async_stream';
%% `module' and `function' are the call's (`undefined' for eval and exec);
%% `worker' is the id of the worker that ran it (as in
%% `py_pool:call_stats/0'; `undefined' in start events and when no worker
%% took the request); `mode' is `shared_gil' or `subinterp'.
%%
%% `telemetry' is an optional runtime dependency, never a build one: the
%% events are on when the `telemetry' application is running as
%% erlang_python starts (it is an optional application of ours, so a
%% release that holds it starts it first), unless the application env
%% `telemetry_events' is `false'.  When they are off, a request pays one
%% `persistent_term' lookup.  `refresh/0' decides again (after starting
%% telemetry by hand, say).
-module(py_events).

-export([refresh/0, enabled/0, span/3]).

-define(EVENTS, {erlang_python, events}).

%% @doc Turns the events on when the `telemetry' application is running
%% and the application env `telemetry_events' is not `false', off
%% otherwise.  Returns whether they are on.
-spec refresh() -> boolean().
refresh() ->
    Wanted = application:get_env(erlang_python, telemetry_events, true) =/= false,
    Running = lists:keymember(telemetry, 1, application:which_applications()),
    case Wanted andalso Running andalso code:ensure_loaded(telemetry) =:= {module, telemetry} of
        true ->
            Mode = case py_pool:chosen_mode() of
                       {ok, M} -> M;
                       _ -> undefined
                   end,
            persistent_term:put(?EVENTS, {telemetry, Mode}),
            true;
        false ->
            _ = persistent_term:erase(?EVENTS),
            false
    end.

%% @doc Whether call events are emitted.
-spec enabled() -> boolean().
enabled() ->
    persistent_term:get(?EVENTS, false) =/= false.

%% @private
%% Runs Exchange (which returns {Result, Worker}) between a start and a
%% stop or exception event.
-spec span({module(), atom()}, tuple(), fun(() -> {term(), term()})) -> term().
span({Mod, Mode}, Req, Exchange) ->
    {Kind, Module, Function} = describe(Req),
    Meta = #{kind => Kind, module => Module, function => Function,
             worker => undefined, mode => Mode},
    %% One clock read per event (a read costs ~65 ns on a VM clock).
    T0 = erlang:monotonic_time(),
    Mod:execute([erlang_python, call, start],
                #{monotonic_time => T0, system_time => T0 + erlang:time_offset()}, Meta),
    {Result, Worker} = try Exchange()
                       catch Class:Why:Stack ->
                               T = erlang:monotonic_time(),
                               Mod:execute([erlang_python, call, exception],
                                           #{duration => T - T0, monotonic_time => T},
                                           Meta#{reason => {Class, Why}}),
                               erlang:raise(Class, Why, Stack)
                       end,
    T1 = erlang:monotonic_time(),
    Done = Meta#{worker := worker_id(Worker)},
    Measurements = #{duration => T1 - T0, monotonic_time => T1},
    case Result of
        {error, Reason} ->
            Mod:execute([erlang_python, call, exception], Measurements, Done#{reason => Reason});
        _ ->
            Mod:execute([erlang_python, call, stop], Measurements, Done)
    end,
    Result.

describe({Kind, Module, Function, _Args, _Kwargs}) -> {Kind, Module, Function};
describe({Kind, Module, Function, _Args, _Kwargs, _Reply}) -> {Kind, Module, Function};
describe({Kind, _Code, _Locals}) -> {Kind, undefined, undefined};
describe(Req) -> {element(1, Req), undefined, undefined}.

worker_id(W) when is_integer(W), W > 0 -> W;
worker_id(none) -> undefined;
worker_id(Job) ->
    case py_nif:job_worker(Job) of
        0 -> undefined;
        W -> W
    end.
