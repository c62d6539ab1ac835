#!/usr/bin/env escript
%% Every exported function of src/*.erl has a `-spec' (the compiler's
%% warn_missing_spec sees to that) and an edoc `@doc' (or `@private') comment right above
%% its spec or first clause.  Prints each one that lacks it; exit 1 if any.
%% Usage: escript scripts/check_docs.escript [src-dir]
-mode(compile).

main(Args) ->
    Dir = case Args of [D] -> D; [] -> "src" end,
    Missing = lists:append([missing(F) || F <- lists:sort(filelib:wildcard(filename:join(Dir, "*.erl")))]),
    [io:format("no @doc: ~s:~b ~s/~b~n", [F, L, N, A]) || {F, L, N, A} <- Missing],
    case Missing of
        [] -> io:format("docs: every export has @doc~n");
        _ -> halt(1)
    end.

missing(File) ->
    {ok, Forms} = epp:parse_file(File, [{includes, ["include"]}]),
    Exports = lists:append([E || {attribute, _, export, E} <- Forms]),
    Callbacks = lists:append([callbacks(M) || {attribute, _, behaviour, M} <- Forms]),
    Specs = maps:from_list([{FA, line(Anno)} || {attribute, Anno, spec, {FA, _}} <- Forms]),
    Funs = maps:from_list([{{N, A}, line(Anno)} || {function, Anno, N, A, _} <- Forms]),
    %% lines that end a comment containing @doc, and every comment line
    Comments = erl_comment_scan:file(File),
    DocEnds = [L + length(Text) - 1 || {L, _, _, Text} <- Comments,
                                       lists:any(fun doc_tag/1, Text)],
    CommentLines = lists:append([lists:seq(L, L + length(Text) - 1) || {L, _, _, Text} <- Comments]),
    [{File, Head, N, A}
     || {N, A} = FA <- Exports,
        not lists:member(FA, Callbacks),
        Head <- [min(maps:get(FA, Specs, infinity), maps:get(FA, Funs))],
        not documented(Head, DocEnds, CommentLines)].

%% A @doc comment ends just above Head, or above the comment lines that
%% sit between it and Head.
documented(Head, DocEnds, CommentLines) ->
    Above = Head - 1,
    lists:member(Above, DocEnds) orelse
        (lists:member(Above, CommentLines) andalso documented(Above, DocEnds, CommentLines)).

%% @private and @hidden functions are documented as not part of the API.
doc_tag(T) ->
    lists:any(fun(Tag) -> string:find(T, Tag) =/= nomatch end, ["@doc", "@private", "@hidden"]).

%% OTP behaviour callbacks (init/1, handle_call/3...) need no @doc.
callbacks(M) ->
    try M:behaviour_info(callbacks) catch _:_ -> [] end.

line(Anno) -> erl_anno:line(Anno).
