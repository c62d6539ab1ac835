%% Fault tolerance of erlang_python: whatever a Python snippet or an Erlang
%% caller does, the VM stays up, every other caller gets its own answer, the
%% pool returns to full strength and no late message reaches a caller.
%%
%% Covered: callers killed while their requests are queued (shared queue and
%% a context's own queue) and while they run; many callers with some killed
%% mid-flight; busy loops timing out; calls stuck in C (time.sleep) timing
%% out while others are served; code that swallows its interruption; worker
%% guardians killed under load; the application stopped with calls in
%% flight, then started again.
%%
%% After each case the pool is checked whole: every worker in service and
%% available, nothing pending (polled with a bound, since a worker stuck in C
%% is replaced only after cancel_grace_ms), and every one of the 4 workers
%% answers (each is bound in turn as a context and evaluated on).
%%
%% Python helpers: py_fault_SUITE_data/fault_helpers.py (on sys.path through
%% the python_path application env).
-module(py_fault_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0,
         init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).

-export([killed_while_queued/1,
         killed_while_queued_on_context/1,
         killed_while_running/1,
         killed_while_running_endless/1,
         many_callers_some_killed/1,
         busy_loops_timeout/1,
         stuck_in_c_timeout/1,
         stuck_in_c_all_workers/1,
         abandoned_calls_do_not_starve/1,
         abandoned_cap/1,
         interrupt_swallowed/1,
         workers_killed_under_load/1,
         app_stop_in_flight/1,
         app_stop_while_binding/1]).

%% used inside a peer node
-export([peer_killed_endless/0, peer_abandoned_calls/0, peer_abandoned_cap/0]).

-import(py_test_lib, [now_ms/0, wait_until/3, wait_pool_idle/2, worker_ids/0,
                      all_workers_answer/1, flush_mailbox/0, no_stray_messages/1,
                      assert_no_stray/1]).

-define(H, fault_helpers).
-define(NUM_WORKERS, 4).
-define(GRACE_MS, 1000).
%% How long the pool may take to be whole again after a fault: a worker
%% stuck in C is replaced after the grace period, plus scheduling slack.
-define(RECOVER_MS, 8000).
-define(REPORT(Fmt, Args), ct:pal(100, Fmt, Args)).

suite() ->
    [{timetrap, {seconds, 120}}].

all() ->
    [killed_while_queued,
     killed_while_queued_on_context,
     killed_while_running,
     killed_while_running_endless,
     many_callers_some_killed,
     busy_loops_timeout,
     stuck_in_c_timeout,
     stuck_in_c_all_workers,
     abandoned_calls_do_not_starve,
     abandoned_cap,
     interrupt_swallowed,
     workers_killed_under_load,
     app_stop_in_flight,
     app_stop_while_binding].

%%====================================================================
%% Setup
%%====================================================================

%% The application env here and in peer nodes.
env(DataDir) ->
    [{num_workers, ?NUM_WORKERS}, {python_path, [DataDir]}, {cancel_grace_ms, ?GRACE_MS}].

init_per_suite(Config) ->
    py_test_lib:start_suite(Config, fun env/1).

end_per_suite(Config) ->
    _ = py_test_lib:stop_suite(Config),
    ok.

init_per_testcase(_Case, Config) ->
    ok = py_test_lib:ensure_pool_idle(?NUM_WORKERS, ?RECOVER_MS),
    {ok, none} = py:call(?H, reset, []),
    flush_mailbox(),
    Config.

%% A case that left the pool broken must not break the next ones: restart.
end_per_testcase(_Case, _Config) ->
    py_test_lib:recover_pool(?NUM_WORKERS, ?RECOVER_MS).

%%====================================================================
%% Helpers
%%====================================================================

%% The test process itself got nothing it did not ask for.
assert_no_stray() ->
    assert_no_stray(300).

%% Polls until every worker is in service, free, and nothing is pending.
wait_pool_full(BoundMs) ->
    wait_pool_idle(?NUM_WORKERS, BoundMs).

wait_pending(N, BoundMs) ->
    wait_until(fun() ->
                       #{pending_requests := P} = S = py_pool:get_stats(),
                       {P =:= N, S}
               end, BoundMs, {pending_not, N}).

%% The pool is whole again (within the bound) and every worker answers.  A
%% worker stuck in C past its caller's timeout still counts as available
%% until the grace period retires it, and a context bound to it then fails:
%% so the check is retried until it passes or the bound is over.
assert_recovered() ->
    ok = wait_pool_full(?RECOVER_MS),
    ok = wait_until(fun() ->
                            R = try all_workers_answer(?NUM_WORKERS)
                                catch C:Why -> {C, Why}
                                end,
                            {R =:= ok, R}
                    end, ?RECOVER_MS, workers_do_not_answer),
    ok = wait_pool_full(?RECOVER_MS).

%% A caller process: runs Fun, then checks its own mailbox stays empty, then
%% reports {caller_done, Tag, Result, StrayCheck}.
caller(Tag, Fun) ->
    Parent = self(),
    spawn(fun() ->
                  Res = try Fun()
                        catch C:R:St -> {crashed, C, R, St}
                        end,
                  Stray = no_stray_messages(300),
                  Parent ! {caller_done, Tag, Res, Stray}
          end).

%% Collects the reports of Tags; every caller must report within BoundMs
%% (nothing hangs) and must have found no stray message.
collect(Tags, BoundMs) ->
    Deadline = erlang:monotonic_time(millisecond) + BoundMs,
    [begin
         Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
         receive
             {caller_done, Tag, Res, Stray} ->
                 ?assertEqual({Tag, ok}, {Tag, Stray}),
                 Res
         after Left ->
                 error({caller_hung, Tag})
         end
     end || Tag <- Tags].

%% Waits for the {<<"started">>, Tag} notes sent by the Python helpers.
wait_started(Tags, BoundMs) ->
    Deadline = erlang:monotonic_time(millisecond) + BoundMs,
    lists:foreach(fun(Tag) ->
                          Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
                          receive {<<"started">>, Tag} -> ok
                          after Left -> error({not_started, Tag, py_pool:get_stats()})
                          end
                  end, Tags).

count(Name) ->
    {ok, N} = py:call(?H, count, [Name]),
    N.

%% Waits until the Python-side counter Name reaches N.
wait_count(Name, N, BoundMs) ->
    wait_until(fun() -> C = count(Name), {C =:= N, {Name, C}} end, BoundMs,
               {count_not_reached, N}).

%%====================================================================
%% Callers killed
%%====================================================================

%% All 4 workers sleep; 20 more callers queue on the shared queue and are
%% killed there: their requests are dropped (pending falls back to 0 and
%% none of them ever runs), the sleepers get their answers.
killed_while_queued(_Config) ->
    Self = self(),
    Workers = worker_ids(),
    Sleepers = [caller({sleeper, I}, fun() -> py:call(?H, sleep_marked, [Self, I, 0.5]) end)
                || I <- lists:seq(1, ?NUM_WORKERS)],
    wait_started(lists:seq(1, ?NUM_WORKERS), 5000),
    Queued = [spawn(fun() ->
                            R = py:call(?H, bump, [<<"queued_ran">>]),
                            Self ! {queued_returned, R}
                    end) || _ <- lists:seq(1, 20)],
    ok = wait_pending(20, 2000),
    [exit(P, kill) || P <- Queued],
    ok = wait_pending(0, 2000),
    ?assertEqual([{ok, I} || I <- lists:seq(1, ?NUM_WORKERS)],
                 collect([{sleeper, I} || I <- lists:seq(1, ?NUM_WORKERS)], 10000)),
    ?assertEqual(?NUM_WORKERS, length(Sleepers)),
    %% the dropped requests never ran
    ?assertEqual(0, count(<<"queued_ran">>)),
    ?assertEqual(?NUM_WORKERS, count(<<"sleep_done">>)),
    assert_recovered(),
    ?assertEqual(Workers, worker_ids()),
    ?assertEqual(0, count(<<"queued_ran">>)),
    assert_no_stray().

%% The same for a context's own queue: its holder sleeps on it, other
%% processes queue requests on the context and are killed.
killed_while_queued_on_context(_Config) ->
    Self = self(),
    {ok, Ctx} = py:bind(new),
    try
        Holder = caller(holder, fun() -> py:ctx_call(Ctx, ?H, sleep_marked, [Self, 100, 0.5]) end),
        wait_started([100], 5000),
        Queued = [spawn(fun() ->
                                R = py:ctx_call(Ctx, ?H, bump, [<<"ctx_queued_ran">>]),
                                Self ! {queued_returned, R}
                        end) || _ <- lists:seq(1, 10)],
        ok = wait_pending(10, 2000),
        [exit(P, kill) || P <- Queued],
        ok = wait_pending(0, 2000),
        ?assertEqual([{ok, 100}], collect([holder], 10000)),
        ?assert(is_pid(Holder)),
        %% the context still works, and the dropped requests never ran
        ?assertEqual({ok, 0}, py:ctx_call(Ctx, ?H, count, [<<"ctx_queued_ran">>])),
        ?assertEqual({ok, 42}, py:ctx_eval(Ctx, <<"21 * 2">>))
    after
        py:unbind(Ctx)
    end,
    assert_recovered(),
    ?assertEqual(0, count(<<"ctx_queued_ran">>)),
    assert_no_stray().

%% 4 callers run a Python loop (0.5 s) and 8 more are queued behind them;
%% all 12 are killed.  The queued work is dropped; the running work finishes
%% or is interrupted (exactly once each); no worker is replaced.
killed_while_running(_Config) ->
    Self = self(),
    Workers = worker_ids(),
    Running = [spawn(fun() ->
                             R = py:call(?H, spin_marked, [Self, I, 0.5]),
                             Self ! {running_returned, R}
                     end) || I <- lists:seq(1, ?NUM_WORKERS)],
    wait_started(lists:seq(1, ?NUM_WORKERS), 5000),
    Queued = [spawn(fun() ->
                            R = py:call(?H, bump, [<<"queued_ran">>]),
                            Self ! {queued_returned, R}
                    end) || _ <- lists:seq(1, 8)],
    ok = wait_pending(8, 2000),
    [exit(P, kill) || P <- Running ++ Queued],
    ok = wait_pending(0, 2000),
    assert_recovered(),
    ?assertEqual(Workers, worker_ids()),
    ?assertEqual(0, count(<<"queued_ran">>)),
    ?assertEqual(?NUM_WORKERS, count(<<"spin_done">>) + count(<<"spin_interrupted">>)),
    assert_no_stray().

%% Callers killed while their requests run code that would go on for 30 s:
%% nobody wants the answers any more, so the code must be interrupted (or
%% its workers replaced) and every worker must serve again within a bound.
%% Run in a peer node: a worker that stays busy would burn CPU for the rest
%% of the suite.
killed_while_running_endless(Config) ->
    Res = in_peer(Config, fun(Call) -> Call(?MODULE, peer_killed_endless, []) end),
    ?REPORT("killed_while_running_endless (in a peer): ~p", [Res]),
    ?assertMatch({ok, _ElapsedMs}, Res).

%% Runs in the peer.  The callers start on an idle pool (their requests
%% start at once), and are killed once their code runs.
peer_killed_endless() ->
    Self = self(),
    Callers = [spawn(fun() -> py:call(?H, spin_marked, [Self, I, 30.0]) end)
               || I <- lists:seq(1, ?NUM_WORKERS)],
    wait_started(lists:seq(1, ?NUM_WORKERS), 5000),
    [exit(P, kill) || P <- Callers],
    T0 = now_ms(),
    try assert_recovered() of
        ok -> {ok, now_ms() - T0}
    catch error:Reason ->
            {error, Reason, py_pool:get_stats(),
             py:call(?H, count, [<<"spin_interrupted">>])}
    end.

%% 300 processes x 100 calls each, every 7th process killed mid-flight:
%% every survivor gets exactly its own 100 answers, in order.
many_callers_some_killed(_Config) ->
    Self = self(),
    Workers = worker_ids(),
    NProcs = 300,
    NCalls = 100,
    Run = fun(I) ->
                  fun() ->
                          [begin
                               J =:= NCalls div 2 andalso (Self ! {halfway, I, self()}),
                               X = I * 1000000 + J,
                               {X, py:eval(<<"x * 2">>, #{x => X})}
                           end || J <- lists:seq(1, NCalls)]
                  end
          end,
    Pids = [{I, caller({proc, I}, Run(I))} || I <- lists:seq(1, NProcs)],
    Doomed = [I || {I, _} <- Pids, I rem 7 =:= 0],
    %% kill each doomed process as soon as it is half way through
    lists:foreach(fun(I) ->
                          receive {halfway, I, P} -> exit(P, kill)
                          after 60000 -> error({never_halfway, I})
                          end
                  end, Doomed),
    Survivors = [I || {I, _} <- Pids, I rem 7 =/= 0],
    Results = collect([{proc, I} || I <- Survivors], 90000),
    lists:foreach(
      fun({I, Rs}) ->
              Expected = [{X, {ok, 2 * X}} || J <- lists:seq(1, NCalls), X <- [I * 1000000 + J]],
              ?assertEqual({I, Expected}, {I, Rs})
      end, lists:zip(Survivors, Results)),
    ?assertEqual(NProcs - length(Doomed), length(Results)),
    %% halfway notes of the survivors: drop them
    [receive {halfway, I, _} -> ok after 1000 -> error({no_halfway, I}) end || I <- Survivors],
    assert_recovered(),
    ?assertEqual(Workers, worker_ids()),
    assert_no_stray().

%%====================================================================
%% Timeouts
%%====================================================================

%% 30 concurrent `while True: pass' with 50 ms timeouts: all time out, none
%% hangs; the loops are interrupted (no worker is replaced); callers with
%% ordinary requests meanwhile get their answers.
busy_loops_timeout(_Config) ->
    Workers = worker_ids(),
    Loops = [caller({loop, I}, fun() ->
                                       T0 = now_ms(),
                                       R = py:exec(<<"while True: pass">>, #{}, 50),
                                       {R, now_ms() - T0}
                               end) || I <- lists:seq(1, 30)],
    Others = [caller({other, I}, fun() ->
                                         [py:eval(<<"x * 2">>, #{x => I * 100 + J}, 20000)
                                          || J <- lists:seq(1, 5)]
                                 end) || I <- lists:seq(1, 10)],
    LoopResults = collect([{loop, I} || I <- lists:seq(1, 30)], 30000),
    OtherResults = collect([{other, I} || I <- lists:seq(1, 10)], 30000),
    ?assertEqual({30, 10}, {length(Loops), length(Others)}),
    lists:foreach(fun({R, Ms}) ->
                          %% Timed out running, or waiting for a slot of the
                          %% overload semaphore (max_concurrent is 5 here).
                          ?assert(R =:= {error, timeout} orelse
                                  element(1, element(2, R)) =:= overloaded),
                          %% loose sanity bound: the timeout is honoured
                          ?assert(Ms >= 50 andalso Ms < 10000)
                  end, LoopResults),
    ?assertEqual([[{ok, 2 * (I * 100 + J)} || J <- lists:seq(1, 5)] || I <- lists:seq(1, 10)],
                 OtherResults),
    assert_recovered(),
    ?assertEqual(Workers, worker_ids()),
    assert_no_stray().

%% Two calls stuck in C (time.sleep(3)) time out after 100 ms while other
%% callers keep being served by the remaining workers; the two stuck workers
%% are replaced after the grace period.
stuck_in_c_timeout(_Config) ->
    Self = self(),
    Workers = worker_ids(),
    Stuck = [caller({stuck, I}, fun() ->
                                        T0 = now_ms(),
                                        R = py:call(?H, sleep_marked, [Self, I, 3.0], #{}, 100),
                                        {R, now_ms() - T0}
                                end) || I <- [1, 2]],
    wait_started([1, 2], 5000),
    Others = [caller({other, I}, fun() ->
                                         [py:eval(<<"x * 2">>, #{x => I * 100 + J}, 2000)
                                          || J <- lists:seq(1, 5)]
                                 end) || I <- lists:seq(1, 40)],
    StuckResults = collect([{stuck, I} || I <- [1, 2]], 5000),
    lists:foreach(fun({R, Ms}) ->
                          %% Timed out running, or waiting for a slot of the
                          %% overload semaphore (max_concurrent is 5 here).
                          ?assert(R =:= {error, timeout} orelse
                                  element(1, element(2, R)) =:= overloaded),
                          ?assert(Ms >= 100 andalso Ms < 2000)
                  end, StuckResults),
    ?assertEqual([[{ok, 2 * (I * 100 + J)} || J <- lists:seq(1, 5)] || I <- lists:seq(1, 40)],
                 collect([{other, I} || I <- lists:seq(1, 40)], 10000)),
    ?assertEqual(42, length(Stuck) + length(Others)),
    assert_recovered(),
    %% exactly the two stuck workers were replaced
    ?assertEqual(2, length(Workers -- worker_ids())),
    %% their abandoned sleeps end by themselves (before the next case)
    ok = wait_count(<<"sleep_exit">>, 2, 6000),
    assert_no_stray().

%% Every worker stuck in C: requests queued meanwhile are served by the
%% replacements once the grace period is over.
stuck_in_c_all_workers(_Config) ->
    Self = self(),
    Workers = worker_ids(),
    _ = [caller({stuck, I}, fun() -> py:call(?H, sleep_marked, [Self, I, 3.0], #{}, 100) end)
         || I <- lists:seq(1, ?NUM_WORKERS)],
    wait_started(lists:seq(1, ?NUM_WORKERS), 5000),
    _ = [caller({other, I}, fun() -> py:eval(<<"x * 2">>, #{x => I}, 10000) end)
         || I <- lists:seq(1, 20)],
    ?assertEqual(lists:duplicate(?NUM_WORKERS, {error, timeout}),
                 collect([{stuck, I} || I <- lists:seq(1, ?NUM_WORKERS)], 5000)),
    ?assertEqual([{ok, 2 * I} || I <- lists:seq(1, 20)],
                 collect([{other, I} || I <- lists:seq(1, 20)], 15000)),
    assert_recovered(),
    %% all four were replaced
    ?assertEqual([], [Id || Id <- worker_ids(), lists:member(Id, Workers)]),
    ok = wait_count(<<"sleep_exit">>, ?NUM_WORKERS, 6000),
    assert_no_stray().

%% Calls stuck in C are abandoned twice over: two waves of 4 calls that
%% sleep 20 s time out (100 ms), and their workers are replaced each time.
%% The abandoned sleeps go on in retired threads, but the replaced pool
%% must serve as before: ordinary calls get their answers, every worker
%% answers.  (Nothing that belongs to the abandoned calls, such as a slot
%% of an overload limit, may keep the new workers from running.)  In a peer
%% node, so that the sleeping threads end with it.
abandoned_calls_do_not_starve(Config) ->
    Res = in_peer(Config, fun(Call) -> Call(?MODULE, peer_abandoned_calls, []) end),
    ?REPORT("abandoned_calls_do_not_starve (in a peer): ~p", [Res]),
    ?assertMatch(#{waves := [_, _], served := ok, workers_answer := ok}, Res),
    #{waves := [Wave1, Wave2]} = Res,
    ?assertEqual(lists:duplicate(?NUM_WORKERS, {error, timeout}), Wave1),
    ?assertEqual(lists:duplicate(?NUM_WORKERS, {error, timeout}), Wave2).

peer_abandoned_calls() ->
    Wave = fun(W) ->
                   Before = worker_ids(),
                   Tags = [{W, I} || I <- lists:seq(1, ?NUM_WORKERS)],
                   [caller(T, fun() -> py:exec(<<"import time; time.sleep(20)">>, #{}, 100) end)
                    || T <- Tags],
                   Rs = collect(Tags, 5000),
                   %% the stuck workers are replaced
                   _ = (catch wait_until(fun() ->
                                                 Now = worker_ids(),
                                                 {[] =:= [Id || Id <- Now, lists:member(Id, Before)],
                                                  Now}
                                         end, ?RECOVER_MS, not_replaced)),
                   Rs
           end,
    W1 = Wave(1),
    W2 = Wave(2),
    Others = [caller({other, I}, fun() -> py:eval(<<"x * 2">>, #{x => I}, 5000) end)
              || I <- lists:seq(1, 20)],
    OtherRs = collect([{other, I} || I <- lists:seq(1, 20)], 10000),
    Served = case OtherRs =:= [{ok, 2 * I} || I <- lists:seq(1, 20)] of
                 true -> ok;
                 false -> {not_served, lists:usort(OtherRs)}
             end,
    Answer = try assert_recovered() catch C:R -> {C, R} end,
    #{waves => [W1, W2], served => Served, workers_answer => Answer,
      others => length(Others), stats => py_pool:get_stats()}.

%% max_abandoned_workers bounds the abandoned workers that are replaced:
%% with a cap of 1, the first worker stuck in C is replaced, the second is
%% not while the first is still stuck (the pool runs one short and goes on
%% serving), and once the first one's C code returns the pool is whole
%% again (it retries every second).  In a peer with the cap set.
abandoned_cap(Config) ->
    Res = py_test_lib:in_peer([{max_abandoned_workers, 1} | env(?config(helpers_dir, Config))],
                              60000, fun(Call) -> Call(?MODULE, peer_abandoned_cap, []) end),
    ?REPORT("abandoned_cap (in a peer): ~p", [Res]),
    ?assertMatch(#{first := {error, timeout}, second := {error, timeout},
                   after_first := ?NUM_WORKERS, short := ok, served := ok,
                   whole_again := ok}, Res).

peer_abandoned_cap() ->
    Count = fun() -> length(worker_ids()) end,
    Stuck = fun(Secs) ->
                    Before = worker_ids(),
                    R = py:exec(<<"import time; time.sleep(s)">>, #{s => Secs}, 100),
                    %% its worker leaves the pool after the grace period
                    wait_until(fun() -> Now = worker_ids(),
                                        {[Id || Id <- Before, not lists:member(Id, Now)] =/= [], Now}
                               end, ?RECOVER_MS, not_abandoned),
                    R
            end,
    First = Stuck(6.0),
    %% one abandoned worker alive: within the cap, replaced
    wait_until(fun() -> {Count() =:= ?NUM_WORKERS, Count()} end, ?RECOVER_MS, not_replaced),
    AfterFirst = Count(),
    Second = Stuck(6.0),
    %% two alive, past the cap: no replacement, through several retries
    timer:sleep(2500),
    Short = case Count() of
                N when N =:= ?NUM_WORKERS - 1 -> ok;
                N -> {workers, N}
            end,
    Answers = [py:eval(<<"x * 2">>, #{x => I}, 5000) || I <- lists:seq(1, 20)],
    Served = case Answers =:= [{ok, 2 * I} || I <- lists:seq(1, 20)] of
                 true -> ok;
                 false -> {not_served, lists:usort(Answers)}
             end,
    %% the first sleep ends: one retry later the pool is whole
    Whole = try wait_until(fun() -> {Count() =:= ?NUM_WORKERS, Count()} end, 10000, not_whole),
                all_workers_answer(?NUM_WORKERS)
            catch C:R -> {C, R}
            end,
    #{first => First, second => Second, after_first => AfterFirst, short => Short,
      served => Served, whole_again => Whole, stats => py_pool:get_stats()}.

%% Code that catches its interruption (erlang.Interrupted is a
%% BaseException) and goes on: the caller still gets {error, timeout} on
%% time, and the worker is replaced after the grace period.
interrupt_swallowed(_Config) ->
    Self = self(),
    Workers = worker_ids(),
    _ = caller(stubborn, fun() ->
                                 T0 = now_ms(),
                                 R = py:call(?H, stubborn, [Self, 200, 4.0], #{}, 100),
                                 {R, now_ms() - T0}
                         end),
    wait_started([200], 5000),
    [{R, Ms}] = collect([stubborn], 5000),
    ?assertEqual({error, timeout}, R),
    ?assert(Ms >= 100 andalso Ms < 2000),
    assert_recovered(),
    ?assertEqual(1, length(Workers -- worker_ids())),
    %% the interruption did reach the code (which swallowed it)
    ?assert(count(<<"swallowed">>) >= 1),
    %% let the stubborn thread end before the next case
    ok = wait_count(<<"stubborn_exit">>, 1, 10000),
    assert_no_stray().

%%====================================================================
%% Workers killed, application stopped
%%====================================================================

%% 40 callers x 50 calls while the test kills a worker guardian every
%% 100 ms (6 kills): each kill fails at most the one request its worker was
%% running ({error, worker_crashed}); every other request gets its own
%% answer; the pool is whole again afterwards.
workers_killed_under_load(_Config) ->
    NCallers = 40,
    NCalls = 50,
    Kills = 6,
    Callers = [caller({c, I}, fun() ->
                                      [begin
                                           X = I * 1000 + J,
                                           {X, py:eval(<<"(__import__('time').sleep(0.002), x * 2)[1]">>,
                                                       #{x => X}, 20000)}
                                       end || J <- lists:seq(1, NCalls)]
                              end) || I <- lists:seq(1, NCallers)],
    Killed = [begin
                  timer:sleep(100),
                  [#{id := Id, pid := G} | _] = py_pool:workers(),
                  exit(G, kill),
                  Id
              end || _ <- lists:seq(1, Kills)],
    Results = lists:append(collect([{c, I} || I <- lists:seq(1, NCallers)], 60000)),
    ?assertEqual(NCallers, length(Callers)),
    Bad = [{X, R} || {X, R} <- Results, R =/= {ok, 2 * X}],
    ?REPORT("~b requests, ~b killed workers ~w, failed requests: ~p",
           [length(Results), Kills, Killed, Bad]),
    lists:foreach(fun({_X, R}) -> ?assertEqual({error, worker_crashed}, R) end, Bad),
    ?assert(length(Bad) =< Kills),
    ?assertEqual(NCallers * NCalls, length(Results)),
    assert_recovered(),
    ?assertEqual([], [Id || Id <- Killed, lists:member(Id, worker_ids())]),
    assert_no_stray().

%% The application is stopped while requests run (Python loops with no
%% timeout, a call stuck in C), wait in the queue, and while processes bind
%% and unbind.  Every caller returns within a bound with a result or an
%% error (not_running, worker_crashed), nothing raises; calls made while it
%% is stopped fail at once with not_running; started again, all works.
app_stop_in_flight(_Config) ->
    Self = self(),
    Endless = [caller({endless, I}, fun() ->
                                            py:call(?H, spin_marked, [Self, I, 3600.0], #{},
                                                    infinity)
                                    end) || I <- [1]],
    %% Long enough to be still in C when the application stops, even when
    %% starting the callers below is slow (sanitizer builds).
    InC = caller(in_c, fun() -> py:call(?H, sleep_marked, [Self, 3, 6.0], #{}, infinity) end),
    wait_started([1, 3], 5000),
    %% loopers tell when their first request went through
    Loop = fun Loop(N, Acc) ->
                   case py:eval(<<"(__import__('time').sleep(0.002), x * 2)[1]">>, #{x => N}) of
                       {ok, V} when V =:= 2 * N ->
                           Acc =:= 0 andalso (Self ! {looping, N div 100000}),
                           Loop(N + 1, Acc + 1);
                       Other -> {Acc, Other, py:eval(<<"1">>)}
                   end
           end,
    Loopers = [caller({looper, I}, fun() -> Loop(I * 100000, 0) end)
               || I <- lists:seq(1, 30)],
    BindLoop = fun BindLoop(N) ->
                       B = py:bind(),
                       E = py:eval(<<"1 + 1">>),
                       U = py:unbind(),
                       case {B, E, U} of
                           {ok, {ok, 2}, ok} -> BindLoop(N + 1);
                           {{error, no_workers_available}, {ok, 2}, ok} -> BindLoop(N + 1);
                           _ -> {N, B, E, U}
                       end
               end,
    Binders = [caller({binder, I}, fun() -> Self ! {looping, {b, I}}, BindLoop(0) end)
               || I <- [1, 2, 3]],
    [receive {looping, I} -> ok
     after 5000 -> error({not_looping, I, py_pool:get_stats(), py_semaphore:current()})
     end || I <- lists:seq(1, 30) ++ [{b, 1}, {b, 2}, {b, 3}]],
    timer:sleep(200),
    T0 = now_ms(),
    ?assertEqual(ok, application:stop(erlang_python)),
    StopMs = now_ms() - T0,
    %% while stopped: clear errors at once
    ?assertEqual({error, not_running}, py:eval(<<"1 + 1">>)),
    ?assertEqual({error, not_running}, py:call(math, sqrt, [4])),
    ?assertEqual({error, not_running}, py:exec(<<"pass">>)),
    ?assertEqual({error, not_running}, py:bind()),
    ?assertEqual({error, not_running}, py:bind(new)),
    %% every caller returns, within a bound
    Down = [{error, not_running}, {error, worker_crashed}],
    EndlessResults = collect([{endless, 1}, in_c], 5000),
    lists:foreach(fun(R) -> ?assert(lists:member(R, Down)) end, EndlessResults),
    LooperResults = collect([{looper, I} || I <- lists:seq(1, 30)], 5000),
    lists:foreach(fun({_N, R1, R2}) ->
                          ?assert(lists:member(R1, Down)),
                          ?assertEqual({error, not_running}, R2)
                  end, LooperResults),
    ?assert(lists:sum([N || {N, _, _} <- LooperResults]) > 0),
    BinderResults = collect([{binder, I} || I <- [1, 2, 3]], 5000),
    lists:foreach(fun({_N, B, E, U}) ->
                          ?assert(lists:member(B, [ok, {error, no_workers_available},
                                                   {error, not_running}])),
                          ?assert(lists:member(E, [{ok, 2} | Down])),
                          ?assertEqual(ok, U)
                  end, BinderResults),
    ?REPORT("stop took ~b ms; endless: ~p; loopers: ~p; binders: ~p",
           [StopMs, EndlessResults, LooperResults, BinderResults]),
    ?assertEqual(31, length(Endless) + length(Loopers)),
    ?assert(is_pid(InC) andalso length(Binders) =:= 3),
    %% started again: everything works
    {ok, _} = application:ensure_all_started(erlang_python),
    ?assertEqual({ok, 4.0}, py:call(math, sqrt, [16])),
    ?assertEqual({ok, 0}, py:call(?H, count, [<<"queued_ran">>])),
    assert_recovered(),
    Again = [caller({again, I}, fun() -> py:eval(<<"x * 2">>, #{x => I}) end)
             || I <- lists:seq(1, 20)],
    ?assertEqual([{ok, 2 * I} || I <- lists:seq(1, 20)],
                 collect([{again, I} || I <- lists:seq(1, 20)], 10000)),
    ?assertEqual(20, length(Again)),
    assert_no_stray().

%% Processes binding and unbinding (py:bind/0, py:unbind/0, py:bind(new),
%% py:unbind/1) while the application stops: each call returns (ok or
%% {error, _}), none raises in the caller.  Five rounds of stop and start.
app_stop_while_binding(_Config) ->
    Self = self(),
    Loop = fun L(N) ->
                   R = try
                           {py:bind(), py:unbind(),
                            case py:bind(new) of
                                {ok, Ctx} -> py:unbind(Ctx);
                                Other -> Other
                            end}
                       catch Class:Reason -> {raised, Class, Reason}
                       end,
                   case R of
                       {ok, ok, ok} -> L(N + 1);
                       {{error, no_workers_available}, ok, _} -> L(N + 1);
                       {ok, ok, {error, no_workers_available}} -> L(N + 1);
                       _ -> {N, R}
                   end
           end,
    Rounds =
        [begin
             {ok, _} = application:ensure_all_started(erlang_python),
             ok = wait_pool_full(?RECOVER_MS),
             Binders = [caller({binder, Round, I}, fun() -> Self ! {looping, I}, Loop(0) end)
                        || I <- lists:seq(1, 40)],
             [receive {looping, I} -> ok after 5000 -> error({not_looping, I}) end
              || I <- lists:seq(1, 40)],
             timer:sleep(100),
             ok = application:stop(erlang_python),
             Rs = collect([{binder, Round, I} || I <- lists:seq(1, 40)], 5000),
             ?assertEqual(40, length(Binders)),
             [R || {_N, R} <- Rs]
         end || Round <- lists:seq(1, 5)],
    Raised = [R || R <- lists:append(Rounds), element(1, R) =:= raised],
    ?REPORT("bind/unbind during stop, outcomes: ~p", [lists:usort(lists:append(Rounds))]),
    ?assertEqual([], Raised),
    lists:foreach(fun(R) ->
                          ?assert(lists:member(R, [{{error, not_running}, ok, {error, not_running}},
                                                   {ok, ok, {error, not_running}}]))
                  end, lists:append(Rounds)),
    {ok, _} = application:ensure_all_started(erlang_python),
    assert_recovered(),
    assert_no_stray().

%%====================================================================
%% Peer node
%%====================================================================

%% Runs Fun(Call) against a fresh peer VM with the application started
%% (same settings as here); Call(M, F, A) runs there.  A peer crash comes
%% back as {peer_down, _}.
in_peer(Config, Fun) ->
    py_test_lib:in_peer(env(?config(helpers_dir, Config)), 60000, Fun).
