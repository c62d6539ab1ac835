%% @doc Python's `logging' into OTP's `logger'.
%%
%% Every interpreter gets a handler on its root logger (installed by the
%% pool as workers start) that sends each record here; this process calls
%% `logger:log/3' with the record's level and metadata.  `warnings.warn'
%% goes the same way (`logging.captureWarnings', logger name
%% `py.warnings').  Optionally, lines written to `sys.stdout' and
%% `sys.stderr' do too.
%%
%% Levels: Python's DEBUG, INFO, WARNING, ERROR and CRITICAL become
%% `debug', `info', `warning', `error' and `critical'; other numbers the
%% nearest level at or below them (25: `notice', above 50: `alert').
%% Lines of `sys.stdout' are `notice', of `sys.stderr' `warning'.
%%
%% Metadata of each event (no `domain': OTP's default handler shows only
%% events without one, or of OTP's own): `python_logger' (the logger's name, a binary; `<<"stdout">>' or
%% `<<"stderr">>' for captured lines), `python_level' (the level number),
%% `worker' (the id of the worker whose thread logged, `undefined' for
%% other Python threads), `file' and `line' (where the record was made),
%% `python_function', `python_thread', and `time' (when Python made it).
%%
%% Configuration (application env, read as the pool starts):
%% `python_log_level' is the root logger's level: `debug', `info',
%% `warning' (the default, Python's own), `error', `critical', or `none'
%% (no handler: Python's logging is left alone); `python_stdio' is
%% `inherit' (the default: output goes to the node's stdout/stderr, as
%% before) or `logger'.
-module(py_log).
-behaviour(gen_server).

-export([start_link/0, setup_source/0, level/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(MAX_QUEUE, 10000).

%% @private
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc The Python source that installs (or removes) the handler in the
%% interpreter it runs in, from the application env.
-spec setup_source() -> binary().
setup_source() ->
    Level = case application:get_env(erlang_python, python_log_level, warning) of
                none -> <<"None">>;
                false -> <<"None">>;
                L -> integer_to_binary(python_level(L))
            end,
    Stdio = case application:get_env(erlang_python, python_stdio, inherit) of
                logger -> <<"True">>;
                _ -> <<"False">>
            end,
    <<"import _erlang_python_log\n_erlang_python_log.install(", Level/binary, ", ",
      Stdio/binary, ")\n">>.

python_level(debug) -> 10;
python_level(info) -> 20;
python_level(notice) -> 25;
python_level(warning) -> 30;
python_level(error) -> 40;
python_level(critical) -> 50;
python_level(N) when is_integer(N), N >= 0 -> N;
python_level(Other) -> error({bad_python_log_level, Other}).

%% @doc The logger level of a Python level number.
-spec level(integer()) -> logger:level().
level(N) when N < 20 -> debug;
level(N) when N < 25 -> info;
level(N) when N < 30 -> notice;
level(N) when N < 40 -> warning;
level(N) when N < 50 -> error;
level(50) -> critical;
level(_) -> alert.

%%====================================================================
%% gen_server
%%====================================================================

%% @private
-spec init([]) -> {ok, #{}}.
init([]) ->
    process_flag(trap_exit, true),
    process_flag(message_queue_data, off_heap),
    ok = py_nif:log_sink(self()),
    {ok, #{}}.

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
handle_info({py_log, Worker, {LevelNo, Name, Msg, File, Line, Func, Created, Thread}}, State)
  when is_integer(LevelNo) ->
    %% Whatever a record holds, this process goes on.
    try log(Worker, LevelNo, Name, Msg, File, Line, Func, Created, Thread)
    catch _:_ -> ok
    end,
    shed_load(),
    {noreply, State};
handle_info(_Other, State) ->
    {noreply, State}.

%% Python never waits for logger: a loop that logs faster than logger
%% writes would grow this mailbox without end.  Past ?MAX_QUEUE waiting
%% records, those waiting are dropped, and one warning says how many.
shed_load() ->
    case process_info(self(), message_queue_len) of
        {message_queue_len, N} when N > ?MAX_QUEUE ->
            Dropped = drop_records(0),
            logger:warning("erlang_python: ~b Python log records dropped (logging faster "
                           "than logger writes)", [Dropped]);
        _ ->
            ok
    end.

drop_records(N) ->
    receive {py_log, _, _} -> drop_records(N + 1)
    after 0 -> N
    end.

log(Worker, LevelNo, Name, Msg, File, Line, Func, Created, Thread) ->
    Meta0 = #{python_logger => Name,
              python_level => LevelNo, worker => Worker, python_function => Func,
              python_thread => Thread},
    Meta1 = case File of
                <<>> -> Meta0;
                _ when is_binary(File) -> Meta0#{file => unicode:characters_to_list(File), line => Line};
                _ -> Meta0
            end,
    Meta = case is_number(Created) of
               true -> Meta1#{time => round(Created * 1000000)};
               false -> Meta1
           end,
    logger:log(level(LevelNo), "~ts", [Msg], Meta).

%% @private
-spec terminate(term(), map()) -> ok.
terminate(_Reason, _State) ->
    py_nif:log_sink(undefined).
