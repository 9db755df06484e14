%% An inets httpd module: POST /hit calls the `hits` server and answers with the count and
%% the version that answered (in `x-app-version`, as Hotswap's todo guests do).
-module(hit_httpd).
-export([do/1]).
-include_lib("inets/include/httpd.hrl").

do(#mod{method = "POST", request_uri = "/hit"}) ->
    {Count, Vsn} = hits:hit(),
    Body = integer_to_list(Count),
    Head = [{code, 200}, {content_type, "text/plain"},
            {content_length, integer_to_list(length(Body))},
            {"x-app-version", integer_to_list(Vsn)}],
    {proceed, [{response, {response, Head, Body}}]};
do(_) ->
    {proceed, [{response, {404, "not found"}}]}.
