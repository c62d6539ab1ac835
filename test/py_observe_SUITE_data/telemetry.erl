%% A stand-in for the telemetry library (not in Debian, and hex.pm is out
%% of reach), with its API's shape: attach/4, detach/1, execute/3.  The
%% suite compiles it and starts it as the application `telemetry', so
%% that erlang_python finds telemetry running as it would in a release.
%% Handlers live in a public ETS table owned by the application's process;
%% execute/3 looks its event up and calls each handler, as the real one.
-module(telemetry).
-behaviour(application).
-export([start/2, stop/1, attach/4, detach/1, execute/3]).

-define(TABLE, telemetry_stand_in_handlers).

start(_Type, _Args) ->
    Parent = self(),
    Pid = spawn(fun() ->
                        _ = ets:new(?TABLE, [named_table, public, bag, {read_concurrency, true}]),
                        Parent ! ready,
                        receive stop -> ok end
                end),
    receive ready -> ok end,
    {ok, Pid}.

stop(_State) ->
    ok.

attach(Id, Event, Fun, Config) when is_function(Fun, 4) ->
    true = ets:insert(?TABLE, {Event, Id, Fun, Config}),
    ok.

detach(Id) ->
    true = ets:match_delete(?TABLE, {'_', Id, '_', '_'}),
    ok.

execute(Event, Measurements, Metadata) ->
    lists:foreach(fun({_, _Id, Fun, Config}) -> Fun(Event, Measurements, Metadata, Config) end,
                  ets:lookup(?TABLE, Event)).
