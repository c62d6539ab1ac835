%% @doc Shared state: an ETS table seen by Erlang (`py:state_*') and by
%% Python (`erlang.state_*').  Atom keys are stored as binaries, so that
%% Erlang's `counter', `<<"counter">>' and Python's 'counter' are one key.
%% Counters use `ets:update_counter/4': increments are atomic.
-module(py_state).

-export([store/2, fetch/1, remove/1, keys/0, clear/0, incr/2, from_python/2]).

-define(TABLE, py_state).

%% @doc Stores a value.
-spec store(term(), term()) -> ok.
store(Key, Value) ->
    true = ets:insert(?TABLE, {key(Key), Value}),
    ok.

%% @doc Fetches a value.
-spec fetch(term()) -> {ok, term()} | {error, not_found}.
fetch(Key) ->
    case ets:lookup(?TABLE, key(Key)) of
        [{_, Value}] -> {ok, Value};
        [] -> {error, not_found}
    end.

%% @doc Removes a key.
-spec remove(term()) -> ok.
remove(Key) ->
    true = ets:delete(?TABLE, key(Key)),
    ok.

%% @doc All keys.
-spec keys() -> [term()].
keys() ->
    [K || {K, _} <- ets:tab2list(?TABLE)].

%% @doc Removes everything.
-spec clear() -> ok.
clear() ->
    true = ets:delete_all_objects(?TABLE),
    ok.

%% @doc Atomically adds N (a missing key counts as 0); returns the new value.
-spec incr(term(), integer()) -> integer().
incr(Key, N) when is_integer(N) ->
    ets:update_counter(?TABLE, key(Key), N, {key(Key), 0}).

%% @doc The operations behind Python's `erlang.state_*'.
-spec from_python(binary(), list()) -> term().
from_python(<<"fetch">>, [Key]) ->
    case fetch(Key) of
        {ok, V} -> [true, V];
        {error, not_found} -> [false, none]
    end;
from_python(<<"store">>, [Key, Value]) -> store(Key, Value);
from_python(<<"remove">>, [Key]) -> remove(Key);
from_python(<<"keys">>, []) -> keys();
from_python(<<"clear">>, []) -> clear();
from_python(<<"incr">>, [Key, N]) -> incr(Key, N);
from_python(<<"decr">>, [Key, N]) -> incr(Key, -N).

key(K) when is_atom(K), K =/= true, K =/= false, K =/= none, K =/= nil, K =/= undefined ->
    atom_to_binary(K, utf8);
key(K) -> K.
