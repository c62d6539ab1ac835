%% @doc Overload protection: a counting semaphore over Python operations.
%%
%% Every request (call, eval, exec, stream, ctx_*, async submissions) holds
%% one slot from the moment it is queued until it ends; a request that finds
%% no free slot waits, in order, and gives up with
%% `{error, {overloaded, Current, Max}}' when its timeout passes first.  The
%% slots live in the NIF and are tied to the request's life, so none leaks
%% when a caller is killed or times out.  Requests made by the Erlang side of
%% a Python callback never wait for a slot (that could deadlock).  Default
%% size: application env `max_concurrent', else `num_workers' + schedulers * 2
%% + 1 (every worker busy, and the original library's schedulers * 2 + 1
%% requests queued behind them).
-module(py_semaphore).

-export([max_concurrent/0, current/0, set_max_concurrent/1, acquire/1, release/0]).

-define(HELD, '$py_semaphore_held').

%% @doc The number of slots.
-spec max_concurrent() -> pos_integer().
max_concurrent() ->
    element(2, py_nif:sem_info()).

%% @doc Slots held now (by requests and by `acquire/1').
-spec current() -> non_neg_integer().
current() ->
    element(1, py_nif:sem_info()).

%% @doc Changes the number of slots; waiting requests are admitted at once.
-spec set_max_concurrent(pos_integer()) -> ok.
set_max_concurrent(N) when is_integer(N), N >= 1 ->
    py_nif:sem_set_max(N).

%% @doc Takes a slot for the calling process (held until `release/0' or the
%% process exits), waiting at most `Timeout' ms; `{error, max_concurrent}'
%% when none came in time (as the original library; a request that cannot get
%% a slot returns `{error, {overloaded, Current, Max}}' instead).
-spec acquire(non_neg_integer() | infinity) -> ok | {error, max_concurrent}.
acquire(Timeout) when Timeout =:= infinity; is_integer(Timeout), Timeout >= 0,
                                              Timeout =< 16#FFFFFFFF ->
    Ref = make_ref(),
    Job = py_nif:slot_acquire(Ref),
    receive
        {Ref, ok} -> hold(Job)
    after Timeout ->
        %% A slot granted just as we gave up is given back by the cancel;
        %% its message is dropped.
        _ = py_nif:cancel(Job),
        receive {Ref, _} -> ok after 0 -> ok end,
        {error, max_concurrent}
    end.

%% @doc Gives back the slot most recently taken by `acquire/1' in this
%% process (ok also when none is held).
-spec release() -> ok.
release() ->
    case get(?HELD) of
        [Job | Rest] ->
            put(?HELD, Rest),
            _ = py_nif:slot_release(Job),
            ok;
        _ ->
            ok
    end.

hold(Job) ->
    put(?HELD, [Job | case get(?HELD) of undefined -> []; L -> L end]),
    ok.
