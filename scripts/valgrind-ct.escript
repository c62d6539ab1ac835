#!/usr/bin/env escript
%% Runs Common Test suites that scripts/valgrind.sh compiled beforehand into
%% _build/valgrind/test (auto_compile off: the compiler itself crashes in the
%% garbage collector when the JIT runs under valgrind).  Started by
%% scripts/valgrind.sh through `-run escript start`, so the BEAM is the one
%% valgrind watches; like test/run_ct.escript it prints one closing line
%% "ct: N passed, N failed, N skipped" and exits 0 only when nothing failed
%% and nothing was auto-skipped.
%% Usage (from scripts/valgrind.sh): ... -extra scripts/valgrind-ct.escript Suite,Suite

main([List]) ->
    Root = filename:dirname(filename:dirname(filename:absname(escript:script_name()))),
    ok = file:set_cwd(Root),
    true = code:add_patha(filename:join(Root, "_build/default/lib/erlang_python/ebin")),
    LogDir = filename:join(Root, "_build/valgrind/ct_logs"),
    ok = filelib:ensure_path(LogDir),
    Suites = [list_to_atom(S) || S <- string:tokens(List, ",")],
    Opts = [{dir, filename:join(Root, "_build/valgrind/test")},
            {suite, Suites},
            {logdir, LogDir},
            {auto_compile, false},
            {ct_hooks, []},
            {verbosity, [{default, 0}]}],
    case ct:run_test(Opts) of
        {Ok, Failed, {UserSkipped, AutoSkipped}} ->
            io:format("~nct: ~b passed, ~b failed, ~b skipped~n",
                      [Ok, Failed, UserSkipped + AutoSkipped]),
            halt(case Failed + AutoSkipped of 0 -> 0; _ -> 1 end);
        Other ->
            io:format("~nct: run failed: ~p~n0 passed, 1 failed~n", [Other]),
            halt(2)
    end;
main(_) ->
    io:format(standard_error, "usage: valgrind-ct.escript Suite[,Suite...]~n", []),
    halt(2).
