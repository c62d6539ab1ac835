%% @doc The erlang_python application: starts the supervision tree.  The
%% interpreter itself starts when the NIF loads and lives as long as the VM
%% (it is never finalized), so stopping and starting the application again
%% reuses it.
-module(erlang_python_app).
-behaviour(application).

-export([start/2, stop/1]).

%% @private
-spec start(application:start_type(), term()) -> {ok, pid()} | {error, term()}.
start(_Type, _Args) ->
    case code:ensure_loaded(py_nif) of
        {module, py_nif} ->
            case erlang_python_sup:start_link() of
                {ok, Sup} ->
                    _ = py_events:refresh(),
                    {ok, Sup};
                Error ->
                    Error
            end;
        {error, Reason} -> {error, {nif_not_loaded, Reason}}
    end.

%% @private
-spec stop(term()) -> ok.
stop(_State) ->
    _ = persistent_term:erase({erlang_python, events}),
    ok.
