%% @doc Top supervisor.  Owns the ETS tables that must outlive a restart of
%% their users (registered functions, shared state), then starts the
%% callback runner and the pool (rest_for_one: the pool registers the
%% runner's pid with the NIF, so a new runner means a new pool), then the
%% log relay (py_log) and the cluster membership (a pg scope, py_dist).
-module(erlang_python_sup).
-behaviour(supervisor).

-export([start_link/0, init/1]).

%% @private
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

%% @private
-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    _ = ets:new(py_functions, [named_table, public, set, {read_concurrency, true}]),
    _ = ets:new(py_state, [named_table, public, set, {write_concurrency, true},
                           {read_concurrency, true}]),
    %% Contexts held for other nodes' processes (py_dist).
    _ = ets:new(py_dist_contexts, [named_table, public, set, {read_concurrency, true}]),
    Flags = #{strategy => rest_for_one, intensity => 10, period => 10},
    Children = [#{id => py_callback, start => {py_callback, start_link, []}},
                #{id => py_pool, start => {py_pool, start_link, []}, shutdown => 10000},
                %% After the pool: their restarts leave it alone.  Records
                %% logged before py_log is up go to stderr.
                #{id => py_log, start => {py_log, start_link, []}},
                #{id => py_dist_pg, start => {pg, start_link, [py_dist:scope()]}},
                #{id => py_dist, start => {py_dist, start_link, []}}],
    {ok, {Flags, Children}}.
