%% Starts the `hits` server (version 2) behind inets httpd on 127.0.0.1:Port and, when
%% SwapMs > 0, upgrades it every SwapMs ms, alternating versions 3 and 2, the way
%% release_handler does (suspend, load, change_code, resume) and as the anchor in
%% ../shared/anchors/erlang does. Each swap prints its pause (`pause US`) as it happens.
-module(hit_bench).
-export([main/1]).

main([PortS, Dir2, Dir3, SwapMsS]) ->
    Port = list_to_integer(PortS),
    SwapMs = list_to_integer(SwapMsS),
    Beams = [{V, beam(Dir)} || {V, Dir} <- [{2, Dir2}, {3, Dir3}]],
    {2, Beam2} = lists:keyfind(2, 1, Beams),
    {module, hits} = code:load_binary(hits, "hits.beam", Beam2),
    {ok, _} = hits:start_link(),
    ok = inets:start(),
    {ok, _} = inets:start(httpd, [{port, Port}, {bind_address, {127, 0, 0, 1}},
                                   {server_name, "hits"}, {server_root, "/tmp"},
                                   {document_root, "/tmp"}, {modules, [hit_httpd]},
                                   {keep_alive, true},
                                   {max_clients, 1000}]),
    io:format("serving HTTP on ~p~n", [Port]),
    case SwapMs of
        0 -> receive stop -> ok end;
        _ -> swap_loop(Beams, 3, SwapMs)
    end.

beam(Dir) ->
    {ok, Bin} = file:read_file(filename:join(Dir, "hits.beam")),
    Bin.

swap_loop(Beams, Next, SwapMs) ->
    timer:sleep(SwapMs),
    {Next, Beam} = lists:keyfind(Next, 1, Beams),
    T0 = erlang:monotonic_time(microsecond),
    ok = sys:suspend(hits),
    code:soft_purge(hits),
    {module, hits} = code:load_binary(hits, "hits.beam", Beam),
    ok = sys:change_code(hits, hits, 5 - Next, []),
    ok = sys:resume(hits),
    T1 = erlang:monotonic_time(microsecond),
    code:soft_purge(hits),
    io:format("pause ~p~n", [T1 - T0]),
    swap_loop(Beams, 5 - Next, SwapMs).
