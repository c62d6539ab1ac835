%% @doc The NIF module: stubs replaced by c_src/nif.c when the library loads.
%% Internal to erlang_python; use `py' and `py_pool'.  Every function returns
%% at once: none of them runs Python on the calling scheduler.
-module(py_nif).

-export([async_reply/1, async_cancel/1, sem_info/0, sem_set_max/1, slot_acquire/1,
         slot_release/1, clear_caches/0, setup/2, execution_info/0]).
-export([submit/4, submit_dirty/4, job_age/1, job_worker/1, worker_stats/0, log_sink/1, load/0,
         cancel/1,
         pool_attach/5, pool_shutdown/0, worker_start/1,
         worker_retire/1, worker_bind/2, stats/0, path_counts/0, cb_reply/2, version/0]).

-export([stream_new/2, stream_set_proc/2, stream_ack/2, stream_stop/1, stream_end/2,
         stream_info/1, channel_new/3, channel_send/2, channel_close/1, channel_info/1]).

-on_load(init/0).

-type worker() :: reference().
-type job() :: reference().
-type where() :: shared | {nested, worker()} | {worker(), pos_integer()}.
-export_type([worker/0, job/0, where/0]).

%% Loads priv/py_nif.so, or the library named by the environment variable
%% ERLANG_PYTHON_NIF (a path without ".so"; `make asan' uses it).
-spec init() -> ok | {error, term()}.
init() ->
    Path = case os:getenv("ERLANG_PYTHON_NIF") of
               false ->
                   Dir = case code:priv_dir(erlang_python) of
                             {error, bad_name} ->
                                 filename:join(filename:dirname(
                                                 filename:dirname(code:which(?MODULE))), "priv");
                             D -> D
                         end,
                   filename:join(Dir, "py_nif");
               Override ->
                   filename:rootname(Override, ".so")
           end,
    erlang:load_nif(Path, 0).

%% @doc Queues a request; returns the job handle or an error atom, or
%% `dirty' when the request is too large to copy on a normal scheduler, or
%% `{'$py_done', Reply, WorkerId}' when a synchronous request was answered
%% while submitting (an idle polling worker ran it within a few
%% microseconds).
-spec submit(where(), reference(), tuple(), boolean()) ->
          job() | atom() | {'$py_done', term(), pos_integer()}.
submit(_Where, _Ref, _Req, _Sync) -> erlang:nif_error(not_loaded).

%% @doc `submit/4' on a dirty CPU scheduler, for large requests.
-spec submit_dirty(where(), reference(), tuple(), boolean()) -> job() | atom().
submit_dirty(_Where, _Ref, _Req, _Sync) -> erlang:nif_error(not_loaded).

%% @doc How often the fast paths were taken since the NIF was loaded:
%% requests answered by hand-over while submitting, requests read in place
%% on the caller's heap, and borrowed requests copied after all.
-spec path_counts() -> #{handed_over | borrowed | revoked => non_neg_integer()}.
path_counts() -> erlang:nif_error(not_loaded).

%% @doc The id of the worker that ran (or runs) the job, 0 if none has
%% taken it yet.
-spec job_worker(job()) -> non_neg_integer().
job_worker(_Job) -> erlang:nif_error(not_loaded).

%% @doc Milliseconds since the job was submitted.
-spec job_age(job()) -> non_neg_integer().
job_age(_Job) -> erlang:nif_error(not_loaded).

%% @doc The caller gives up on a job: `ok' (no reply will come), `sent', or
%% `{overloaded, Current, Max}' if it never got a semaphore slot.
-spec cancel(job()) -> ok | sent | {overloaded, non_neg_integer(), pos_integer()}.
cancel(_Job) -> erlang:nif_error(not_loaded).

%% @doc Starts Python in the given mode the first time (it is never
%% stopped: a later call must ask for the same mode), registers the pool and
%% callback-runner processes and retires old workers.  MaxAbandoned: how
%% many abandoned workers may still be stuck in C before no worker starts.
-spec pool_attach(pid(), pid(), non_neg_integer(),
                  shared_gil | subinterp | {isolated, binary(), non_neg_integer()},
                  non_neg_integer()) -> ok | {error, binary()}.
pool_attach(_Pool, _Runner, _GraceMs, _Mode, _MaxAbandoned) -> erlang:nif_error(not_loaded).

%% @doc Retires all workers and answers every queued request `not_running'.
-spec pool_shutdown() -> ok.
pool_shutdown() -> erlang:nif_error(not_loaded).

%% @doc Starts a worker thread.
-spec worker_start(non_neg_integer()) -> {ok, worker()} | {error, binary()}.
worker_start(_Id) -> erlang:nif_error(not_loaded).

%% @doc Takes a worker out of service; its requests get `worker_crashed'.
-spec worker_retire(worker()) -> ok.
worker_retire(_W) -> erlang:nif_error(not_loaded).

%% @doc Binds (`true'; `idle': only if it runs and holds no request) or
%% unbinds (`false') a worker; returns the new generation or `error'.
-spec worker_bind(worker(), boolean() | idle) -> pos_integer() | error.
worker_bind(_W, _Bind) -> erlang:nif_error(not_loaded).

%% @doc Pool counters.
-spec stats() -> #{atom() => non_neg_integer()}.
stats() -> erlang:nif_error(not_loaded).

%% @doc Where the records of Python's `logging' go (`py_log'), or nowhere.
-spec log_sink(pid() | undefined) -> ok.
log_sink(_Pid) -> erlang:nif_error(not_loaded).

%% @doc Workers in service, of which unbound and idle, and requests queued
%% (for placement across nodes).
-spec load() -> {non_neg_integer(), non_neg_integer(), non_neg_integer()}.
load() -> erlang:nif_error(not_loaded).

%% @doc Per-worker counters of the workers in service, the requests given
%% up before any worker took them, and the retired workers' counters.
-spec worker_stats() -> {[#{atom() => number()}], non_neg_integer(), #{atom() => number()}}.
worker_stats() -> erlang:nif_error(not_loaded).

%% @doc Delivers the reply of an Erlang callback to the waiting Python code.
-spec cb_reply({reference(), non_neg_integer()}, term()) -> ok | stale.
cb_reply(_To, _Reply) -> erlang:nif_error(not_loaded).

%% @doc The embedded interpreter's version string.
-spec version() -> binary().
version() -> erlang:nif_error(not_loaded).

%% @doc A handle where the outcome of a coroutine is sent as `{Ref, Reply}'.
-spec async_reply(reference()) -> reference().
async_reply(_Ref) -> erlang:nif_error(not_loaded).

%% @doc Gives up on a coroutine's outcome: `ok' (it will not come) or `sent'.
-spec async_cancel(reference()) -> ok | sent.
async_cancel(_Reply) -> erlang:nif_error(not_loaded).

%% @doc `{SlotsHeld, Max}' of the overload semaphore.
-spec sem_info() -> {non_neg_integer(), pos_integer()}.
sem_info() -> erlang:nif_error(not_loaded).

%% @doc Sets the number of slots (waiting requests are admitted at once).
-spec sem_set_max(pos_integer()) -> ok.
sem_set_max(_Max) -> erlang:nif_error(not_loaded).

%% @doc Asks for a slot held by the caller; `{Ref, ok}' comes when granted.
-spec slot_acquire(reference()) -> job() | atom().
slot_acquire(_Ref) -> erlang:nif_error(not_loaded).

%% @doc Gives back a slot from `slot_acquire/1'; whether it was held.
-spec slot_release(job()) -> boolean().
slot_release(_Job) -> erlang:nif_error(not_loaded).

%% @doc Every worker drops its module and callable caches.
-spec clear_caches() -> ok.
clear_caches() -> erlang:nif_error(not_loaded).

%% @doc Runs Python source on every worker (with `true', also first on
%% every worker started later, replacing the previous such source).  For
%% execution_mode subinterp, where each worker has its own interpreter.
-spec setup(binary(), boolean()) -> ok | {error, binary()}.
setup(_Source, _Keep) -> erlang:nif_error(not_loaded).

%% @doc `{Mode, SubinterpSupported}': the mode Python runs in (`none'
%% before the pool started it) and whether this build has own-GIL
%% sub-interpreters (3.12+).
-spec execution_info() -> {subinterp | multi_executor | isolated | none, boolean()}.
execution_info() -> erlang:nif_error(not_loaded).

%%--------------------------------------------------------------------
%% Incremental streams (c_src/py_stream.c): the sink is the stream's ref.
%%--------------------------------------------------------------------

%% @doc A stream's sink (its reference), delivering to Owner.
-spec stream_new(pid(), pos_integer()) -> reference().
stream_new(_Owner, _Window) -> erlang:nif_error(not_loaded).

%% @doc Names the stream's process (cancel reaches it).
-spec stream_set_proc(reference(), pid()) -> ok.
stream_set_proc(_Sink, _Pid) -> erlang:nif_error(not_loaded).

%% @doc Gives the generator N more values of credit.
-spec stream_ack(reference(), pos_integer()) -> ok.
stream_ack(_Sink, _N) -> erlang:nif_error(not_loaded).

%% @doc Stops the stream: nothing more reaches its owner once this returns.
-spec stream_stop(reference()) -> {running, pid()} | ended.
stream_stop(_Sink) -> erlang:nif_error(not_loaded).

%% @doc Sends the stream's last message ({py_stream, Sink, Msg}) unless stopped.
-spec stream_end(reference(), term()) -> ok | stopped.
stream_end(_Sink, _Msg) -> erlang:nif_error(not_loaded).

%% @doc {Waiting for credit, ms since the last value (or since the wait began),
%%  values sent, values acknowledged}.
-spec stream_info(reference()) ->
          {boolean(), non_neg_integer(), non_neg_integer(), non_neg_integer()}.
stream_info(_Sink) -> erlang:nif_error(not_loaded).

%%--------------------------------------------------------------------
%% Channels (c_src/py_channel.c)
%%--------------------------------------------------------------------

%% @doc A channel owned by Owner (MaxSize 0: unbounded).
-spec channel_new(pid(), non_neg_integer(), term | bytes) -> reference().
channel_new(_Owner, _MaxSize, _Type) -> erlang:nif_error(not_loaded).

%% @doc Queues a term (never blocks).
-spec channel_send(reference(), term()) -> ok | full | closed | not_binary.
channel_send(_Ch, _Term) -> erlang:nif_error(not_loaded).

%% @doc Closes the channel.
-spec channel_close(reference()) -> ok.
channel_close(_Ch) -> erlang:nif_error(not_loaded).

%% @doc The channel's counters.
-spec channel_info(reference()) -> map().
channel_info(_Ch) -> erlang:nif_error(not_loaded).
