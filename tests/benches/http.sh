#!/usr/bin/env bash
# HTTP benchmark: wrk against `hotswap run todo_v2.wasm --http`, first at steady state, then
# with a swap (todo v2 <-> v3, same state) every 100 ms through the control socket.
# Needs wrk (Debian: apt-get install wrk). Loopback only; 2 threads, 8 keep-alive connections.
# Usage: bash tests/benches/http.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-10}"
target="${CARGO_TARGET_DIR:-$PWD/target}"
command -v wrk >/dev/null || { echo "needs wrk: apt-get install wrk" >&2; exit 1; }
cargo build -q --release --workspace --all-targets --target-dir "$target"
guests="$target/guests/wasm32-wasip1/release"
work="$(mktemp -d)"
port=18931

"$target/release/hotswap" run "$guests/todo_v2.wasm" --http "127.0.0.1:$port" --control "$work/control.sock" \
    </dev/null 2>"$work/log" &
host=$!
trap 'kill $host 2>/dev/null; rm -rf "$work"' EXIT
until grep -q "serving HTTP" "$work/log"; do sleep 0.05; done

. tests/benches/wrk.sh
hit_lua "$work/hit.lua"

echo "== steady state, ${seconds} s"
run_wrk "$port" "$seconds" "$work/hit.lua"

echo "== with a swap every 100 ms, ${seconds} s"
(
    i=0
    while kill -0 $host 2>/dev/null; do
        if [ $((i % 2)) -eq 0 ]; then next=todo_v3; else next=todo_v2; fi
        "$target/release/hotswap" reload --control "$work/control.sock" "$guests/$next.wasm" >/dev/null || exit 1
        i=$((i + 1))
        sleep 0.1
    done
) &
swapper=$!
run_wrk "$port" "$seconds" "$work/hit.lua"
kill $swapper 2>/dev/null || true
wait $swapper 2>/dev/null || true
echo "swaps during the run: $(grep -c "swapped" "$work/log")"
grep "swapped" "$work/log" | sed -E 's/.*pause ([0-9.]+) (µs|ms).*/\1 \2/' | awk '{ v = ($2 == "ms") ? $1 * 1000 : $1; print v }' | summarize_pauses
