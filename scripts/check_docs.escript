#!/usr/bin/env escript
%% Every exported function of src/*.erl has a `-spec' (the compiler's
%% warn_missing_spec sees to that) and an edoc `@doc' (or `@private') comment right above
%% its spec or first clause.  Prints each one that lacks it; exit 1 if any.
%% Usage: escript scripts/check_docs.escript [src-dir]
%%        escript scripts/check_docs.escript --public [src-dir]
%%          prints `Module Function-Arity' for each export the reference
%%          pages show (not @private, @hidden nor a behaviour callback)
-mode(compile).

main(["--public" | Args]) ->
    Dir = case Args of [D] -> D; [] -> "src" end,
    [io:format("~s ~s-~b~n", [filename:basename(F, ".erl"), N, A])
     || F <- lists:sort(filelib:wildcard(filename:join(Dir, "*.erl"))), {N, A} <- public(F)];
main(Args) ->
    Dir = case Args of [D] -> D; [] -> "src" end,
    Missing = lists:append([missing(F) || F <- lists:sort(filelib:wildcard(filename:join(Dir, "*.erl")))]),
    [io:format("no @doc: ~s:~b ~s/~b~n", [F, L, N, A]) || {F, L, N, A} <- Missing],
    case Missing of
        [] -> io:format("docs: every export has @doc~n");
        _ -> halt(1)
    end.

missing(File) ->
    [{File, Head, N, A} || {N, A, Head, undocumented} <- exports(File)].

public(File) ->
    [{N, A} || {N, A, _, public} <- exports(File)].

%% {Name, Arity, Line, public | private | undocumented} of each export
%% that is not a behaviour callback.
exports(File) ->
    {ok, Forms} = epp:parse_file(File, [{includes, ["include"]}]),
    Exports = lists:append([E || {attribute, _, export, E} <- Forms]),
    Callbacks = lists:append([callbacks(M) || {attribute, _, behaviour, M} <- Forms]),
    Specs = maps:from_list([{FA, line(Anno)} || {attribute, Anno, spec, {FA, _}} <- Forms]),
    Funs = maps:from_list([{{N, A}, line(Anno)} || {function, Anno, N, A, _} <- Forms]),
    %% lines that end a comment containing @doc, and every comment line
    Comments = erl_comment_scan:file(File),
    DocEnds = [L + length(Text) - 1 || {L, _, _, Text} <- Comments,
                                       lists:any(fun doc_tag/1, Text)],
    PrivateEnds = [L + length(Text) - 1 || {L, _, _, Text} <- Comments,
                                           lists:any(fun private_tag/1, Text)],
    CommentLines = lists:append([lists:seq(L, L + length(Text) - 1) || {L, _, _, Text} <- Comments]),
    [{N, A, Head, case documented(Head, DocEnds, CommentLines) of
                      false -> undocumented;
                      true ->
                          case documented(Head, PrivateEnds, CommentLines) of
                              true -> private;
                              false -> public
                          end
                  end}
     || {N, A} = FA <- Exports,
        not lists:member(FA, Callbacks),
        Head <- [min(maps:get(FA, Specs, infinity), maps:get(FA, Funs))]].

%% A @doc comment ends just above Head, or above the comment lines that
%% sit between it and Head.
documented(Head, DocEnds, CommentLines) ->
    Above = Head - 1,
    lists:member(Above, DocEnds) orelse
        (lists:member(Above, CommentLines) andalso documented(Above, DocEnds, CommentLines)).

%% @private and @hidden functions are documented as not part of the API.
doc_tag(T) ->
    lists:any(fun(Tag) -> string:find(T, Tag) =/= nomatch end, ["@doc", "@private", "@hidden"]).

private_tag(T) ->
    lists:any(fun(Tag) -> string:find(T, Tag) =/= nomatch end, ["@private", "@hidden"]).

%% OTP behaviour callbacks (init/1, handle_call/3...) need no @doc.
callbacks(M) ->
    try M:behaviour_info(callbacks) catch _:_ -> [] end.

line(Anno) -> erl_anno:line(Anno).
