#!/bin/sh
# Checks that the current version of this app can replace the previous one while it runs.
#
# Builds the previous version (the commit PREV_REV: by default HEAD when this directory has
# uncommitted changes, HEAD~1 when it has none; or takes the module file PREV), builds the
# working tree, and runs `hotswap test PREV.wasm NEW.wasm --events events.txt`, which replays the
# events on each version alone and with a swap at every event boundary. Exits non-zero on any
# finding.
#
#   ./check-reload.sh                    # against the last commit
#   PREV_REV=v1.2.0 ./check-reload.sh    # against a tag or any commit
#   PREV=old.wasm ./check-reload.sh      # against a module built elsewhere
#   HOTSWAP=path/to/hotswap ./check-reload.sh
set -eu
# Paths given relative to where the script was started, before it moves to its own directory.
case ${PREV:-} in ''|/*) ;; *) PREV=$PWD/$PREV ;; esac
case ${HOTSWAP:-} in */*) case $HOTSWAP in /*) ;; *) HOTSWAP=$PWD/$HOTSWAP ;; esac ;; esac
case ${CARGO_TARGET_DIR:-} in ''|/*) ;; *) CARGO_TARGET_DIR=$PWD/$CARGO_TARGET_DIR ;; esac
asked_rev=${PREV_REV:-}
cd "$(dirname "$0")"
hotswap=${HOTSWAP:-hotswap}
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$PWD/$target ;; esac
export CARGO_TARGET_DIR="$target"
built=$target/wasm32-wasip1/wasm/@LIB@.wasm
work=$target/check-reload
mkdir -p "$work"

build() {
    cargo build --quiet --profile wasm --target wasm32-wasip1
}

if [ -n "${PREV:-}" ]; then
    prev=$PREV
else
    if [ -z "${PREV_REV:-}" ]; then
        if git diff --quiet HEAD -- . 2>/dev/null; then PREV_REV=HEAD~1; else PREV_REV=HEAD; fi
    fi
    prev=$work/prev.wasm
    if git rev-parse --verify --quiet "$PREV_REV^{commit}" >/dev/null 2>&1; then
        echo "check-reload: building the previous version, $PREV_REV" >&2
        rm -rf "$work/src"
        mkdir -p "$work/src"
        git archive "$PREV_REV:$(git rev-parse --show-prefix)" | tar -x -C "$work/src"
        # A target directory of its own: in a shared one, the two builds would write the same
        # file name (a cdylib's has no hash), and the second could be left holding the first.
        (cd "$work/src" && CARGO_TARGET_DIR="$work/target" build)
        cp "$work/target/wasm32-wasip1/wasm/@LIB@.wasm" "$prev"
    elif [ -n "$asked_rev" ]; then
        echo "check-reload: PREV_REV=$asked_rev is not a commit in this clone (fetch its history: a shallow clone has none)" >&2
        exit 1
    else
        echo "check-reload: no previous version ($PREV_REV is not a commit): checking the current version against itself" >&2
        prev=
    fi
fi

echo "check-reload: building the current version" >&2
build
new=$work/new.wasm
cp "$built" "$new"
[ -n "$prev" ] || prev=$new

echo "check-reload: $hotswap test $prev $new --events events.txt" >&2
exec "$hotswap" test "$prev" "$new" --events events.txt
