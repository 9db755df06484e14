# Shared by http.sh and http-erlang.sh (sourced): the same load and the same report for both.

# wrk's Lua script: POST /hit, and one line of latency percentiles and errors at the end.
hit_lua() { # FILE
    cat >"$1" <<'LUA'
wrk.method = "POST"
wrk.path = "/hit"
done = function(summary, latency, requests)
  io.write(string.format("p50 %.0f us, p99 %.0f us, p99.9 %.0f us, max %.0f us, %d requests, %d errors (non-2xx %d)\n",
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max,
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
LUA
}

# 2 threads, 8 keep-alive connections for SECONDS against 127.0.0.1:PORT.
run_wrk() { # PORT SECONDS LUA_FILE
    wrk -t2 -c8 -d"$2s" -s "$3" "http://127.0.0.1:$1" | grep -E "Requests/sec|p50"
}

# Reads one pause in µs per line and prints the median and the max.
summarize_pauses() {
    sort -n | awk '{ a[NR] = $1 } END { if (NR) printf "swap pause: median %.0f us, max %.0f us over %d swaps\n", a[int((NR + 1) / 2)], a[NR], NR }'
}
