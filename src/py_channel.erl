%% @doc Channels: Erlang data fed into Python as it arrives.
%%
%% A channel is a queue that Erlang processes send terms into and Python
%% code receives from.  Pass it to Python as an argument (or in locals):
%% there it is an `erlang.Channel' with `receive(timeout=None)' (waits with
%% the GIL released), `try_receive()', `await ch.async_receive()', and sync
%% and async iteration that ends when the channel is closed.  A byte
%% channel (`new(#{type => bytes})') takes binaries and arrives as an
%% `erlang.ByteChannel', a readable binary file (`read(n)', `readline()',
%% iteration over lines, `text()' for a text file) that `json.load' or
%% `csv.reader(ch.text())' consume as Erlang sends the data.
%%
%% ```
%% {ok, Ch} = py_channel:new(),
%% spawn(fun() -> [py_channel:send(Ch, N) || N <- lists:seq(1, 3)], py_channel:close(Ch) end),
%% {ok, 6} = py:eval(<<"sum(ch)">>, #{ch => Ch}).
%% '''
%%
%% The channel closes with `close/1' (receivers get what is queued, then the
%% end) or when the process that made it exits (receivers then get
%% `erlang.ChannelClosed', never a clean end).  docs/channels.md.
-module(py_channel).

-export([new/0, new/1, send/2, close/1, info/1]).

-type channel() :: reference().
-type opts() :: #{max_size => pos_integer() | infinity, type => term | bytes, owner => pid()}.
-type info() :: #{size := non_neg_integer(), bytes := non_neg_integer(),
                  max_size := pos_integer() | infinity, closed := boolean(),
                  type := term | bytes, sent := non_neg_integer(),
                  received := non_neg_integer(), waiting := non_neg_integer()}.
-export_type([channel/0, opts/0, info/0]).

%% @doc A new unbounded term channel, owned by the caller.
-spec new() -> {ok, channel()}.
new() ->
    new(#{}).

%% @doc A new channel.  Options: `max_size' (the most messages queued, for a
%% byte channel the most bytes; `send/2' answers `{error, full}' beyond it;
%% default `infinity') and `type' (`term', the default, or `bytes': a
%% channel of binaries read in Python as a file) and `owner' (the local
%% process whose exit ends the channel with an error; default the caller).
-spec new(opts()) -> {ok, channel()} | {error, {badarg, atom()}}.
new(Opts) when is_map(Opts) ->
    Max = maps:get(max_size, Opts, infinity),
    Type = maps:get(type, Opts, term),
    Owner = maps:get(owner, Opts, self()),
    if not (Max =:= infinity orelse (is_integer(Max) andalso Max > 0)) ->
           {error, {badarg, max_size}};
       Type =/= term andalso Type =/= bytes ->
           {error, {badarg, type}};
       not is_pid(Owner) orelse node(Owner) =/= node() ->
           {error, {badarg, owner}};
       true ->
           {ok, py_nif:channel_new(Owner, case Max of infinity -> 0; _ -> Max end, Type)}
    end;
new(_) ->
    {error, {badarg, opts}}.

%% @doc Queues a term for Python; never blocks.  `{error, full}' when a
%% bounded channel is full (nothing is queued: send again later),
%% `{error, closed}' after `close/1' or the owner's exit, and for a byte
%% channel `{error, {badarg, data}}' when Data is not a binary.
-spec send(channel(), term()) -> ok | {error, full | closed | {badarg, data}}.
send(Ch, Term) ->
    case py_nif:channel_send(Ch, Term) of
        ok -> ok;
        full -> {error, full};
        closed -> {error, closed};
        not_binary -> {error, {badarg, data}}
    end.

%% @doc Closes the channel: no more sends; Python receives what is queued,
%% then the end (iteration stops, `read()' returns `b""', `receive()' raises
%% `erlang.ChannelClosed').  `ok' also when already closed.
-spec close(channel()) -> ok.
close(Ch) ->
    py_nif:channel_close(Ch).

%% @doc The channel's state: messages and bytes queued, its bound, whether
%% it is closed, its type, messages sent and received so far, and how many
%% Python receivers wait on it.
-spec info(channel()) -> info().
info(Ch) ->
    py_nif:channel_info(Ch).
