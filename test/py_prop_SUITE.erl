%% Property-based round trips of the term <-> Python converter, with PropEr.
%%
%% Generated nested terms: integers of any size (edges of the small-integer
%% and 64-bit fast paths, bignums), floats (edges included), binaries (UTF-8
%% and not), atoms (Latin-1 and Unicode, and the special true/false/none/
%% nil/undefined), {bytes, Bin}, pids, lists, tuples, and maps with binary
%% and integer keys.  Each property runs 300+ cases.
%%
%% Python helpers: py_prop_SUITE_data/prop_helpers.py.
-module(py_prop_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
%% The suite defines its own term/0 and utf8/1: no automatic imports.
-define(PROPER_NO_IMPORTS, true).
-include_lib("proper/include/proper.hrl").

-import(proper_types, [integer/0, largeint/0, float/0, binary/0, list/1, oneof/1,
                       elements/1, frequency/1, boolean/0, range/2, atom/0]).

-export([all/0, suite/0,
         init_per_suite/1, end_per_suite/1]).

-export([eval_round_trip/1,
         call_round_trip/1,
         kwargs_round_trip/1,
         python_sees_exact_types/1,
         python_literals_to_erlang/1,
         expected_mapping_examples/1]).

-define(H, prop_helpers).
-define(NUMTESTS, 300).

suite() ->
    [{timetrap, {seconds, 170}}].

all() ->
    [expected_mapping_examples,
     eval_round_trip,
     call_round_trip,
     kwargs_round_trip,
     python_sees_exact_types,
     python_literals_to_erlang].

init_per_suite(Config) ->
    py_test_lib:start_suite(Config, fun(DataDir) ->
                                            [{num_workers, 4}, {python_path, [DataDir]}]
                                    end).

end_per_suite(Config) ->
    _ = py_test_lib:stop_suite(Config),
    ok.

%% Runs a property, 300 cases; the case fails with the counterexample.
check(Prop) ->
    case proper:quickcheck(Prop, [{numtests, ?NUMTESTS}, {to_file, user}]) of
        true -> ok;
        Other -> error({property_failed, Other, proper:counterexample()})
    end,
    %% the pool is idle afterwards
    py_test_lib:assert_pool_idle(4),
    py_test_lib:assert_no_stray(100).

%%====================================================================
%% Generators
%%====================================================================

term() ->
    ?SIZED(S, term(S)).

term(S) when S =< 1 ->
    leaf();
term(S) ->
    Sub = S div 3,
    frequency([{4, leaf()},
               {1, ?LAZY(list(term(Sub)))},
               {1, ?LAZY(?LET(L, list(term(Sub)), list_to_tuple(L)))},
               {1, ?LAZY(?LET(Pairs, list({key(), term(Sub)}), maps:from_list(Pairs)))},
               {1, ?LAZY(?LET(B, any_binary(), {bytes, B}))}]).

leaf() ->
    frequency([{4, any_integer()},
               {2, any_float()},
               {3, any_binary()},
               {2, any_atom()},
               {1, elements([true, false, none, nil, undefined])},
               {1, ?LAZY(self())}]).

key() ->
    oneof([any_integer(), any_binary()]).

any_integer() ->
    frequency([{3, integer()},
               {2, largeint()},
               {2, ?LET({Bits, Low, Neg}, {range(60, 3000), largeint(), boolean()},
                        case Neg of
                            true -> -((1 bsl Bits) + Low);
                            false -> (1 bsl Bits) + Low
                        end)},
               {2, elements(int_edges())}]).

%% Around the converter's fast paths: one Python digit (2^30), Erlang small
%% integers (2^59), the 58-bit immediate check, 64-bit signed and unsigned.
int_edges() ->
    Points = [30, 31, 58, 59, 60, 63, 64, 65],
    lists:usort([0, 1, -1 | lists:append([[(1 bsl B) + D, -(1 bsl B) + D]
                                           || B <- Points, D <- [-1, 0, 1]])]).

any_float() ->
    frequency([{4, float()},
               {1, elements([0.0, 5.0e-324, -5.0e-324, 2.2250738585072014e-308,
                             1.7976931348623157e308, -1.7976931348623157e308, 0.1, -0.5,
                             9007199254740993.0, 1.0e16, 123456789.125])}]).

any_binary() ->
    frequency([{3, binary()},
               {3, proper_unicode:utf8()},
               {1, elements([<<>>, <<0>>, <<"\x00abc">>,
                             <<237, 160, 128>>,            % an encoded surrogate
                             <<192, 128>>,                 % overlong NUL
                             <<128>>, <<226, 130>>,        % stray / truncated
                             <<244, 144, 128, 128>>,       % beyond U+10FFFF
                             <<"é"/utf8>>, <<233>>,        % UTF-8 / Latin-1
                             <<"🐍 ok"/utf8>>])}]).

any_atom() ->
    frequency([{3, atom()},
               {2, ?LET(B, proper_unicode:utf8(),
                        binary_to_atom(trim_chars(B, 255), utf8))},
               {1, elements([bytes, '', ok, 'None', 'True', nan, infinity, '__main__',
                             'with space', 'ünïcödé', '🐍'])}]).

trim_chars(B, N) ->
    unicode:characters_to_binary(lists:sublist(unicode:characters_to_list(B), N)).

%%====================================================================
%% Expected values
%%====================================================================

%% What a term becomes after Erlang -> Python -> Erlang.
expected(I) when is_integer(I) -> I;
expected(F) when is_float(F) -> F;
expected(true) -> true;
expected(false) -> false;
expected(A) when A =:= none; A =:= nil; A =:= undefined -> none;
expected(A) when is_atom(A) -> atom_to_binary(A, utf8);
expected(B) when is_binary(B) -> B;
expected(P) when is_pid(P) -> P;
expected({bytes, B}) when is_binary(B) -> B;
expected(T) when is_tuple(T) -> list_to_tuple([expected(E) || E <- tuple_to_list(T)]);
expected(L) when is_list(L) -> [expected(E) || E <- L];
expected(M) when is_map(M) -> maps:from_list([{expected(K), expected(V)}
                                              || {K, V} <- maps:to_list(M)]).

%% What Python holds for a term, as prop_helpers.typed/1 describes it.
typed(I) when is_integer(I) -> [<<"int">>, hex(I)];
typed(F) when is_float(F) -> [<<"float">>, <<F:64/float>>];
typed(B) when is_boolean(B) -> [<<"bool">>, B];
typed(A) when A =:= none; A =:= nil; A =:= undefined -> [<<"none">>];
typed(A) when is_atom(A) -> [<<"str">>, atom_to_binary(A, utf8)];
typed(B) when is_binary(B) ->
    case utf8(B) of
        true -> [<<"str">>, B];
        false -> [<<"bytes">>, B]
    end;
typed(P) when is_pid(P) -> [<<"other">>, <<"Pid">>];
typed({bytes, B}) when is_binary(B) -> [<<"bytes">>, B];
typed(T) when is_tuple(T) -> [<<"tuple">>, [typed(E) || E <- tuple_to_list(T)]];
typed(L) when is_list(L) -> [<<"list">>, [typed(E) || E <- L]];
typed(M) when is_map(M) -> [<<"dict">>, lists:sort([[typed(K), typed(V)]
                                                     || {K, V} <- maps:to_list(M)])].

%% Sorts the pairs of every dict in a typed/1 description (Python keeps
%% insertion order, Erlang maps have their own).
sort_dicts([<<"dict">>, Pairs]) ->
    [<<"dict">>, lists:sort([[sort_dicts(K), sort_dicts(V)] || [K, V] <- Pairs])];
sort_dicts([Tag, Items]) when Tag =:= <<"list">>; Tag =:= <<"tuple">> ->
    [Tag, [sort_dicts(E) || E <- Items]];
sort_dicts(Other) ->
    Other.

hex(I) when I < 0 -> <<"-", (hex(-I))/binary>>;
hex(I) -> <<"0x", (string:lowercase(integer_to_binary(I, 16)))/binary>>.

utf8(B) ->
    case unicode:characters_to_binary(B, utf8, utf8) of
        B -> true;
        _ -> false
    end.

%% Python source for a term: an expression that builds the same value in
%% Python without going through the converter (pids come from local p).
py_source(I) when is_integer(I) -> ["(", hex(I), ")"];
py_source(F) when is_float(F) ->
    ["__import__('struct').unpack('>d', bytes.fromhex('", binary:encode_hex(<<F:64/float>>),
     "'))[0]"];
py_source(true) -> "True";
py_source(false) -> "False";
py_source(A) when A =:= none; A =:= nil; A =:= undefined -> "None";
py_source(A) when is_atom(A) -> py_source(atom_to_binary(A, utf8));
py_source(B) when is_binary(B) ->
    case utf8(B) of
        true -> ["bytes.fromhex('", binary:encode_hex(B), "').decode('utf-8')"];
        false -> ["bytes.fromhex('", binary:encode_hex(B), "')"]
    end;
py_source(P) when is_pid(P) -> "p";
py_source({bytes, B}) when is_binary(B) -> ["bytes.fromhex('", binary:encode_hex(B), "')"];
py_source({}) -> "()";
py_source(T) when is_tuple(T) -> ["(", [[py_source(E), ", "] || E <- tuple_to_list(T)], ")"];
py_source(L) when is_list(L) -> ["[", lists:join(", ", [py_source(E) || E <- L]), "]"];
py_source(M) when is_map(M) ->
    ["{", lists:join(", ", [[py_source(K), ": ", py_source(V)] || {K, V} <- maps:to_list(M)]),
     "}"].

%%====================================================================
%% Cases
%%====================================================================

%% The mapping the properties rely on, on fixed examples.
expected_mapping_examples(_Config) ->
    Examples = [{abc, <<"abc">>}, {'ünï', <<"ünï"/utf8>>}, {none, none}, {nil, none},
                {undefined, none}, {true, true}, {false, false},
                {{bytes, <<"abc">>}, <<"abc">>}, {{bytes, <<"abc">>, 1}, {<<"bytes">>, <<"abc">>, 1}},
                {{bytes, 1}, {<<"bytes">>, 1}},
                {#{1 => a, <<"k">> => [b, {c}]}, #{1 => <<"a">>, <<"k">> => [<<"b">>, {<<"c">>}]}},
                {<<255, 0>>, <<255, 0>>}, {1 bsl 200, 1 bsl 200}, {-0.5, -0.5}, {[], []}, {{}, {}},
                {#{}, #{}}, {"abc", "abc"}],
    lists:foreach(fun({T, E}) ->
                          ?assertEqual({T, E}, {T, expected(T)}),
                          ?assertEqual({T, {ok, E}}, {T, py:eval(<<"x">>, #{x => T})})
                  end, Examples),
    ?assertEqual({ok, [<<"str">>, <<"abc">>]}, py:call(?H, typed, [abc])),
    ?assertEqual({ok, [<<"bytes">>, <<255>>]}, py:call(?H, typed, [<<255>>])),
    ?assertEqual({ok, [<<"bytes">>, <<"abc">>]}, py:call(?H, typed, [{bytes, <<"abc">>}])),
    ?assertEqual({ok, [<<"int">>, <<"-0xff">>]}, py:call(?H, typed, [-255])),
    ?assertEqual([<<"int">>, <<"-0xff">>], typed(-255)),
    ?assertEqual({ok, [1, <<"a">>, {}]}, py:eval(iolist_to_binary(py_source([1, a, {}])))).

%% py:eval(<<"x">>, #{x => T}) gives back expected(T), exactly.
eval_round_trip(_Config) ->
    check(?FORALL(T, term(),
                  begin
                      R = py:eval(<<"x">>, #{x => T}),
                      ?WHENFAIL(io:format(user, "term ~p~ngot ~p~nwanted ~p~n",
                                          [T, R, {ok, expected(T)}]),
                                R =:= {ok, expected(T)})
                  end)).

%% As an argument (fast and general argument paths) and rebuilt from fresh
%% Python objects.
call_round_trip(_Config) ->
    check(?FORALL(T, term(),
                  begin
                      E = expected(T),
                      R1 = py:call(?H, identity, [T]),
                      R2 = py:call(?H, rebuild, [T]),
                      R3 = py:call(builtins, max, [[T], [T], [T], [T], [T], [T], [T], [T], [T]]),
                      ?WHENFAIL(io:format(user, "term ~p~ngot ~p~nwanted ~p~n",
                                          [T, {R1, R2, R3}, E]),
                                R1 =:= {ok, E} andalso R2 =:= {ok, E} andalso R3 =:= {ok, [E]})
                  end)).

%% As a keyword argument value.
kwargs_round_trip(_Config) ->
    check(?FORALL(T, term(),
                  begin
                      R = py:call(builtins, dict, [], #{<<"k">> => T, v => 1}),
                      Want = {ok, #{<<"k">> => expected(T), <<"v">> => 1}},
                      ?WHENFAIL(io:format(user, "term ~p~ngot ~p~nwanted ~p~n", [T, R, Want]),
                                R =:= Want)
                  end)).

%% The Erlang -> Python direction on its own: Python holds exactly the
%% types and values the mapping says (ints exact, floats bit for bit,
%% UTF-8 binaries as str, other binaries as bytes, atoms as str...).
python_sees_exact_types(_Config) ->
    check(?FORALL(T, term(),
                  begin
                      R = py:call(?H, typed, [T]),
                      Got = case R of
                                {ok, D} -> {ok, sort_dicts(D)};
                                _ -> R
                            end,
                      Want = {ok, typed(T)},
                      ?WHENFAIL(io:format(user, "term ~p~ngot ~p~nwanted ~p~n", [T, Got, Want]),
                                Got =:= Want)
                  end)).

%% The Python -> Erlang direction on its own: values built by Python code
%% (not by the converter) come back as the mapping says.
python_literals_to_erlang(_Config) ->
    check(?FORALL(T, term(),
                  begin
                      Src = iolist_to_binary(py_source(T)),
                      R = py:eval(Src, #{p => self()}),
                      ?WHENFAIL(io:format(user, "term ~p~nsource ~s~ngot ~p~nwanted ~p~n",
                                          [T, Src, R, {ok, expected(T)}]),
                                R =:= {ok, expected(T)})
                  end)).
