%% The Erlang peer of Hotswap's HTTP benchmark: a gen_server that counts hits, as todo v2/v3's
%% POST /hit does. Compiled twice, with -DVSN=2 and -DVSN=3, so that the two versions can be
%% swapped into each other by OTP's hot code upgrade. The state (the count) is kept as is.
-module(hits).
-behaviour(gen_server).
-vsn(?VSN).
-export([start_link/0, hit/0]).
-export([init/1, handle_call/3, handle_cast/2, code_change/3]).

start_link() -> gen_server:start_link({local, ?MODULE}, ?MODULE, 0, []).

%% Returns {Count, Version}.
hit() -> gen_server:call(?MODULE, hit, infinity).

init(Count) -> {ok, Count}.

handle_call(hit, _From, Count) -> {reply, {Count + 1, ?VSN}, Count + 1}.

handle_cast(_, Count) -> {noreply, Count}.

code_change(_OldVsn, Count, _Extra) -> {ok, Count}.
