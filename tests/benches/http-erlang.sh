#!/usr/bin/env bash
# The Erlang/OTP peer of tests/benches/http.sh: the same wrk load (2 threads, 8 keep-alive
# connections, POST /hit) against inets httpd in front of a gen_server that counts hits, first
# at steady state, then while that server is upgraded every 100 ms (v2 <-> v3, state kept) by
# OTP's hot code upgrade. Needs Erlang with inets and wrk:
#   apt-get install erlang-base erlang-inets wrk
# Usage: bash tests/benches/http-erlang.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/erlang"
seconds="${1:-10}"
command -v erlc >/dev/null || { echo "needs Erlang: apt-get install erlang-base erlang-inets" >&2; exit 1; }
command -v wrk >/dev/null || { echo "needs wrk: apt-get install wrk" >&2; exit 1; }
work="$(mktemp -d)"
port=18932
mkdir -p "$work/v2" "$work/v3" "$work/bench"
erlc -DVSN=2 -o "$work/v2" hits.erl
erlc -DVSN=3 -o "$work/v3" hits.erl
erlc -o "$work/bench" hit_httpd.erl hit_bench.erl

. ../wrk.sh
hit_lua "$work/hit.lua"

node=""
trap '[ -n "$node" ] && kill $node 2>/dev/null; rm -rf "$work"' EXIT
run() { # SWAP_MS
    # nodelay on the listening socket (accepted sockets inherit it): without it, Nagle and
    # delayed ACKs hold each response about 40 ms. (OTP 25's httpd rejects it in socket_type.)
    ERL_CRASH_DUMP="$work/erl_crash.dump" erl -noshell -kernel inet_default_listen_options '[{nodelay,true}]' -pa "$work/bench" -run hit_bench main "$port" "$work/v2" "$work/v3" "$1" \
        >"$work/log" 2>&1 </dev/null &
    node=$!
    until grep -q "serving HTTP" "$work/log"; do
        kill -0 $node 2>/dev/null || { cat "$work/log" >&2; exit 1; }
        sleep 0.05
    done
    run_wrk "$port" "$seconds" "$work/hit.lua"
    kill $node; wait $node 2>/dev/null || true; node=""
}

echo "== Erlang/OTP $(erl -noshell -eval 'io:format("~s", [erlang:system_info(otp_release)]), halt().'), inets httpd, steady state, ${seconds} s"
run 0
echo "== with an upgrade every 100 ms, ${seconds} s"
run 100
grep "^pause" "$work/log" | awk '{ print $2 }' | summarize_pauses
