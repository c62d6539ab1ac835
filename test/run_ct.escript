#!/usr/bin/env escript
%% Runs the Common Test suites in test/ against the compiled application and
%% prints one closing line "ct: N passed, N failed, N skipped".
%% Usage: escript test/run_ct.escript [suite,suite...]
%% CT_EXECUTION_MODE=isolated (or another mode) runs the suites on a pool of
%% that mode (the application's execution_mode, set before any suite starts).
%% Exit status: 0 only when nothing failed and nothing was auto-skipped.
-mode(compile).

main(Args) ->
    Root = filename:dirname(filename:dirname(filename:absname(escript:script_name()))),
    ok = file:set_cwd(Root),
    true = code:add_patha(filename:join(Root, "_build/default/lib/erlang_python/ebin")),
    LogDir = filename:join(Root, "_build/ct_logs"),
    ok = filelib:ensure_path(LogDir),
    Suites = case Args of
                 [] -> all_suites(Root);
                 [List | _] -> [list_to_atom(S) || S <- string:tokens(List, ",")]
             end,
    TestDir = filename:join(Root, "test"),
    {Python, Minor, Mode} = python(),
    Excluded = [X || {Suite, _, _} = X <- excluded(Python, Minor, Mode),
                     lists:member(Suite, Suites)],
    Spec = [{logdir, LogDir},
            {auto_compile, true},
            {include, [filename:join(Root, "include")]},
            {ct_hooks, []},
            {verbosity, [{default, 0}]},
            {suites, TestDir, Suites}] ++
           [{skip_cases, TestDir, Suite, [Case], Why} || {Suite, Case, Why} <- Excluded],
    Result = ct:run_testspec(Spec),
    case Result of
        {Ok, Failed, {UserSkipped, AutoSkipped}} ->
            FailedCases = print_failures(LogDir),
            io:format("~nct: Python ~s, execution_mode ~s~n", [Python, Mode]),
            [io:format("ct: excluded ~s:~s: ~s~n", [S, C, W]) || {S, C, W} <- Excluded],
            %% Last, one line each: a CI log cut in the middle keeps its tail.
            [io:format("ct: FAILED ~ts~n", [C]) || C <- FailedCases],
            io:format("~nct: ~b passed, ~b failed, ~b skipped~n",
                      [Ok, Failed, UserSkipped + AutoSkipped]),
            halt(case Failed + AutoSkipped of 0 -> 0; _ -> 1 end);
        Other ->
            io:format("~nct: run failed: ~p~n0 passed, 1 failed~n", [Other]),
            halt(2)
    end.

%% The Python the NIF embeds (ERLANG_PYTHON_NIF picks a build) and the mode
%% the application will choose for it (execution_mode auto).
python() ->
    ok = case application:load(erlang_python) of
             ok -> ok;
             {error, {already_loaded, _}} -> ok
         end,
    case os:getenv("CT_EXECUTION_MODE") of
        false -> ok;
        "" -> ok;
        M -> ok = application:set_env(erlang_python, execution_mode, list_to_atom(M))
    end,
    Version = py_nif:version(),
    {match, [Minor]} = re:run(Version, "^3\\.([0-9]+)", [{capture, all_but_first, list}]),
    {ok, Mode} = py_pool:chosen_mode(),
    {hd(string:split(binary_to_list(Version), " ")), list_to_integer(Minor), Mode}.

%% Cases that cannot hold for a Python build or mode, each with the reason
%% (printed at the end of the run).
excluded(Python, Minor, Mode) ->
    Cpython3130 = "CPython 3.13.0 bug: an exception raised between bytecodes at a loop's "
                  "backward jump (a signal handler's, an asynchronous one, our interrupt) "
                  "skips the except and finally clauses of that function, so interrupted "
                  "code cannot count or swallow its interruption (3.11 and 3.12 are fine)",
    NoNumpy = "Debian's python3-numpy is built for Python 3.11 only, and this "
              "machine has no other numpy (no PyPI)",
    [{py_fault_SUITE, C, Cpython3130} || Python =:= "3.13.0",
                                        C <- [killed_while_running, interrupt_swallowed]] ++
    [{py_runtime_SUITE, C, NoNumpy} || Minor =/= 11,
                                        C <- [numpy_arrays, numpy_scalars, numpy_every_worker,
                                              numpy_bound_contexts]] ++
    [{py_runtime_SUITE, tracemalloc_cycle,
      "tracemalloc's C part cannot load in a sub-interpreter (an ImportError, checked by "
      "py_subinterp_SUITE)"} || Mode =:= subinterp] ++
    [{py_fastpath_SUITE, revoked_while_gil_held,
      "holds the one GIL all workers share from a Python thread; each sub-interpreter has "
      "its own, so no worker's next request meets it"} || Mode =:= subinterp] ++
    isolated_excluded(Mode) ++
    [{py_subinterp_SUITE, stuck_worker_isolated,
      "with one shared GIL a worker stuck in C holds every worker: the limit that "
      "execution_mode subinterp lifts (docs/scalability.md)"} || Mode =/= subinterp].

%% Every case of the newest run whose result is not ok or skipped, with
%% the first lines of its reason; returns the names of those cases.
print_failures(LogDir) ->
    case lists:sort(filelib:wildcard(filename:join(LogDir, "ct_run.*"))) of
        [] -> [];
        Runs ->
            Logs = filelib:wildcard(filename:join([lists:last(Runs), "*", "run.*", "suite.log"])),
            lists:append([print_log_failures(L) || L <- lists:sort(Logs)])
    end.

print_log_failures(Log) ->
    {ok, Bin} = file:read_file(Log),
    Lines = string:split(Bin, "\n", all),
    failures(Lines, undefined, []).

failures([], _Case, Acc) -> lists:reverse(Acc);
failures([<<"=case", Rest/binary>> | T], _Case, Acc) ->
    failures(T, string:trim(Rest), Acc);
failures([<<"=result", Rest/binary>> | T], Case, Acc) ->
    Result = string:trim(Rest),
    case Result of
        <<"ok", _/binary>> -> failures(T, Case, Acc);
        <<"skipped", _/binary>> -> failures(T, Case, Acc);
        _ ->
            More = lists:sublist(lists:takewhile(fun(L) -> not is_field(L) end, T), 12),
            io:format("~nFAILED ~ts: ~ts~n~ts~n",
                      [Case, Result, lists:join("\n", More)]),
            failures(T, Case, [Case | Acc])
    end;
failures([_ | T], Case, Acc) ->
    failures(T, Case, Acc).

is_field(<<"=", _/binary>>) -> true;
is_field(_) -> false.

all_suites(Root) ->
    Files = filelib:wildcard(filename:join([Root, "test", "*_SUITE.erl"])),
    [list_to_atom(filename:basename(F, ".erl")) || F <- lists:sort(Files)].

%% What isolated workers (Python in OS processes, docs/isolation.md) do not
%% do yet, or do differently by design.
isolated_excluded(isolated) ->
    Streams = "streams (py:stream, py:stream_eval) are not built for isolated workers yet",
    Async = "asyncio (py:async_call and the rest) is not built for isolated workers yet",
    Threads = "erlang.call from a Python thread other than the request's is not built for "
              "isolated workers yet",
    [{py_core_SUITE, C, Streams} || C <- [stream_generator, stream_eval, bad_input_code,
                                           load_big_list]] ++
    [{py_hostile_SUITE, C, Streams} || C <- [terms_unconvertible, results_unprintable,
                                              self_referential]] ++
    [{py_callback_SUITE, C, Threads} || C <- [python_threads, thread_pool_executor]] ++
    [{py_runtime_SUITE, C, Async} || C <- [async_concurrent_sleeps, async_error_isolated,
                                            async_not_coroutine, async_gather_order,
                                            async_gather_first_error, async_stream_agen,
                                            async_await_timeout_no_late_message,
                                            async_erlang_callback, overload_many_callers,
                                            no_leak_python_exceptions]] ++
    [{py_runtime_SUITE, execution_model,
      "asserts the in-process mode's name (py:execution_mode() is isolated here)"},
     {py_context_SUITE, doc_stateful_computation,
      "the example moves the node's working directory (file:set_cwd); a worker process "
      "keeps its own"},
     {py_dist_SUITE, cluster_spreads_load,
      "tells the nodes apart by os.getpid() in Python, the worker process's pid here"}];
isolated_excluded(_) ->
    [].
