#!/usr/bin/env escript
%% Runs the Common Test suites in test/ against the compiled application and
%% prints one closing line "ct: N passed, N failed, N skipped".
%% Usage: escript test/run_ct.escript [suite,suite...]
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
    Opts = [{dir, filename:join(Root, "test")},
            {suite, Suites},
            {logdir, LogDir},
            {auto_compile, true},
            {include, [filename:join(Root, "include")]},
            {ct_hooks, []},
            {verbosity, [{default, 0}]}],
    Result = ct:run_test(Opts),
    case Result of
        {Ok, Failed, {UserSkipped, AutoSkipped}} ->
            print_failures(LogDir),
            io:format("~nct: ~b passed, ~b failed, ~b skipped~n",
                      [Ok, Failed, UserSkipped + AutoSkipped]),
            halt(case Failed + AutoSkipped of 0 -> 0; _ -> 1 end);
        Other ->
            io:format("~nct: run failed: ~p~n0 passed, 1 failed~n", [Other]),
            halt(2)
    end.

%% Every case of the newest run whose result is not ok or skipped, with
%% the first lines of its reason, so a CI log's tail names what failed.
print_failures(LogDir) ->
    case lists:sort(filelib:wildcard(filename:join(LogDir, "ct_run.*"))) of
        [] -> ok;
        Runs ->
            Logs = filelib:wildcard(filename:join([lists:last(Runs), "*", "run.*", "suite.log"])),
            lists:foreach(fun print_log_failures/1, lists:sort(Logs))
    end.

print_log_failures(Log) ->
    {ok, Bin} = file:read_file(Log),
    Lines = string:split(Bin, "\n", all),
    failures(Lines, undefined).

failures([], _Case) -> ok;
failures([<<"=case", Rest/binary>> | T], _Case) ->
    failures(T, string:trim(Rest));
failures([<<"=result", Rest/binary>> | T], Case) ->
    Result = string:trim(Rest),
    case Result of
        <<"ok", _/binary>> -> ok;
        <<"skipped", _/binary>> -> ok;
        _ ->
            More = lists:sublist(lists:takewhile(fun(L) -> not is_field(L) end, T), 12),
            io:format("~nFAILED ~ts: ~ts~n~ts~n",
                      [Case, Result, lists:join("\n", More)])
    end,
    failures(T, Case);
failures([_ | T], Case) ->
    failures(T, Case).

is_field(<<"=", _/binary>>) -> true;
is_field(_) -> false.

all_suites(Root) ->
    Files = filelib:wildcard(filename:join([Root, "test", "*_SUITE.erl"])),
    [list_to_atom(filename:basename(F, ".erl")) || F <- lists:sort(Files)].
