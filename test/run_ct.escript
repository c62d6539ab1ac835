#!/usr/bin/env escript
%% Runs the Common Test suites in test/ against the compiled application and
%% prints one closing line "ct: N passed, N failed, N skipped".
%% Usage: escript test/run_ct.escript [suite,suite...]
%% Exit status: 0 only when nothing failed and nothing was auto-skipped.
%%! -noshell +sbwt none

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
            io:format("~nct: ~b passed, ~b failed, ~b skipped~n",
                      [Ok, Failed, UserSkipped + AutoSkipped]),
            halt(case Failed + AutoSkipped of 0 -> 0; _ -> 1 end);
        Other ->
            io:format("~nct: run failed: ~p~n0 passed, 1 failed~n", [Other]),
            halt(2)
    end.

all_suites(Root) ->
    Files = filelib:wildcard(filename:join([Root, "test", "*_SUITE.erl"])),
    [list_to_atom(filename:basename(F, ".erl")) || F <- lists:sort(Files)].
