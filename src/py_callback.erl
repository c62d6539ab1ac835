%% @doc Python calling Erlang: the registry of functions callable from
%% Python, and the runner process for callbacks that have no waiting caller.
%%
%% A callback made by a synchronous request is sent to the caller, which
%% serves it in a fresh process while it keeps waiting with its deadline
%% (`py:wait'); one made by an asynchronous request or by a Python thread
%% goes to this runner, which also serves it in a fresh process.  In both
%% cases a `py' call made while serving it runs on the worker that waits for
%% the callback (the `$py_nested' routing), so nesting never needs a second
%% worker.
-module(py_callback).
-behaviour(gen_server).

-export([start_link/0, register/2, unregister/1, serve/4]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(TABLE, py_functions).
-define(NESTED, '$py_nested').
-define(MAX_MESSAGE, 4000).

-type handler() :: {fn, fun((list()) -> term())} | {mf, module(), atom()}.
-type reply() :: {ok, term()} | {error, binary()} | {name_error, binary()}.

%% @doc Starts the runner (registered as `py_callback').
-spec start_link() -> {ok, pid()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Registers a handler under a name (atom or binary).
-spec register(py:name(), handler()) -> ok.
register(Name, Handler) ->
    true = ets:insert(?TABLE, {key(Name), Handler}),
    ok.

%% @doc Removes a name.
-spec unregister(py:name()) -> ok.
unregister(Name) ->
    true = ets:delete(?TABLE, key(Name)),
    ok.

%% @doc Serves one callback in the calling process and sends the reply to
%% the waiting Python code.  `Worker' is the worker waiting for it
%% (`undefined' for a Python thread).
-spec serve({reference(), non_neg_integer()}, reference() | undefined, binary(), list()) -> ok.
serve(ReplyTo, Worker, Name, Args) ->
    Prev = put(?NESTED, Worker),
    Reply = try execute(Name, Args)
            after restore(Prev)
            end,
    _ = py_nif:cb_reply(ReplyTo, Reply),
    ok.

restore(undefined) -> erase(?NESTED);
restore(Prev) -> put(?NESTED, Prev).

-spec execute(binary(), list()) -> reply().
execute(<<"_py_state_", Op/binary>>, Args) ->
    try {ok, py_state:from_python(Op, Args)}
    catch Class:Reason -> {error, describe(Class, Reason)}
    end;
execute(Name, Args) ->
    case ets:lookup(?TABLE, Name) of
        [{_, Handler}] ->
            try {ok, apply_handler(Handler, Args)}
            catch Class:Reason -> {error, describe(Class, Reason)}
            end;
        [] ->
            {name_error, <<"erlang function '", Name/binary, "' is not registered">>}
    end.

apply_handler({fn, Fun}, Args) -> Fun(Args);
apply_handler({mf, M, F}, Args) -> M:F(Args).

%% "Class: Reason".  Text binaries inside the reason (often the message of a
%% nested failure) are shown without re-escaping, so a chain of nested
%% failures grows linearly, not doubling at each level; past ?MAX_MESSAGE
%% bytes the middle is cut.
describe(Class, Reason) ->
    Text = unicode:characters_to_binary([atom_to_list(Class), ": ", render(Reason, 30)]),
    case byte_size(Text) > ?MAX_MESSAGE of
        true ->
            Half = ?MAX_MESSAGE div 2,
            <<(binary:part(Text, 0, Half))/binary, " ... ",
              (binary:part(Text, byte_size(Text) - Half, Half))/binary>>;
        false ->
            Text
    end.

render(_, 0) -> "...";
render(B, _) when is_binary(B) ->
    case unicode:characters_to_list(B) of
        L when is_list(L) -> ["<<\"", L, "\">>"];
        _ -> io_lib:format("~0tp", [B])
    end;
render(T, D) when is_tuple(T) ->
    ["{", lists:join(",", [render(E, D - 1) || E <- tuple_to_list(T)]), "}"];
render(L, D) when is_list(L) ->
    case io_lib:printable_unicode_list(L) of
        true -> io_lib:format("~0tp", [L]);
        false -> render_list(L, D)
    end;
render(T, _) ->
    io_lib:format("~0tp", [T]).

render_list(L, D) ->
    try ["[", lists:join(",", [render(E, D - 1) || E <- L]), "]"]
    catch error:_ -> io_lib:format("~0tp", [L]) % an improper list
    end.

key(Name) when is_atom(Name) -> atom_to_binary(Name, utf8);
key(Name) when is_binary(Name) -> Name.

%%--------------------------------------------------------------------
%% The runner
%%--------------------------------------------------------------------

%% @private
-spec init([]) -> {ok, #{}}.
init([]) ->
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
handle_info({'$py_cb', ReplyTo, Worker, Name, Args}, State) ->
    _ = spawn(fun() -> serve(ReplyTo, Worker, Name, Args) end),
    {noreply, State};
handle_info(_Msg, State) ->
    {noreply, State}.
