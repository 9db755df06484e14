#!/usr/bin/env bash
# The Hotswap demo, from a fresh machine: installs the wasm target, builds the host and the
# example guests, then runs counter v1 with --watch, feeds it input, swaps in v2 by writing the
# module file, shows that the count survived and that the new code runs, shows a broken file
# being refused, and swaps back. Then a key-value app that keeps its state in place takes a new
# version while it holds a million records.
set -euo pipefail
cd "$(dirname "$0")"
target="${CARGO_TARGET_DIR:-$PWD/target}"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Setting up: the wasm32-wasip1 target, the hotswap host, the example guests"
rustup target add wasm32-wasip1
# The same build as the test command's (`cargo test --release --workspace`), which then reuses
# it; the test crate's build script compiles the example guests into $target/guests.
cargo build --release --workspace --all-targets --target-dir "$target"
guests="$target/guests/wasm32-wasip1/release"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir "$work/app"
app="$work/app/app.wasm"
cp "$guests/counter_v1.wasm" "$app"
mkfifo "$work/stdin" "$work/stdin2"
log="$work/log"
: >"$log"

step "Running counter v1 (each 'inc' adds 5): hotswap run app.wasm --watch"
"$target/release/hotswap" run "$app" --watch <"$work/stdin" 2> >(tee "$log" >&2) &
host=$!
exec 3>"$work/stdin"

say() { printf '> %s\n' "$1"; printf '%s\n' "$1" >&3; sleep 0.3; }
# Waits until the host's log has N lines containing a word (a swap or a refusal).
await() { until [ "$(grep -c "$1" "$log" || true)" -ge "$2" ]; do sleep 0.05; done; sleep 0.1; }

await "watching" 1
say inc
say inc
say inc

step "Writing counter v2 (each 'inc' adds 1) over app.wasm while it runs"
cp "$guests/counter_v2.wasm" "$app"
await "swapped" 1
say get
say inc

step "Writing a broken file over app.wasm: refused, v2 keeps running with its state"
printf 'not a module' >"$app"
await "refused" 1
say inc

step "Renaming counter v1 into place (as a deploy script would): swapped back, from the cache"
cp "$guests/counter_v1.wasm" "$work/app/staged.wasm"
mv "$work/app/staged.wasm" "$app"
await "swapped" 2
say inc

exec 3>&-
wait "$host"

step "A large state kept in place: kv-v1's code built with \`export_app!(Store, in_place)\`, 1,000,000 records"
cp "$guests/kv_in_place.wasm" "$app"
log="$work/log2"
: >"$log"
"$target/release/hotswap" run "$app" --watch <"$work/stdin2" > >(tee -a "$log") 2> >(tee -a "$log" >&2) &
host=$!
exec 3>"$work/stdin2"
await "watching" 1
say "fill 1000000"
await "kv v1: 1000000" 1

step "Writing a new build with the same layout over app.wasm: the new code takes over the memory"
cp "$guests/kv_in_place_next.wasm" "$app"
await "swapped" 1
say "get 00000000042"
say count

exec 3>&-
wait "$host"
step "Done: the count carried through every swap, and each version's code ran as soon as it was in; the million records stayed where they were."
