#!/usr/bin/env bash
# Tests rollout.sh against a fake kubectl (no cluster): the pod order, the commands it sends,
# and how it stops on a refusal, a canary rollback, a kubectl failure or a pod not running.
# The fake answers with the lines `hotswap reload` prints; it does not run hotswap.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat >"$work/kubectl" <<'FAKE'
#!/usr/bin/env bash
# A fake kubectl: logs each call, answers from FAKE_* variables.
printf '%s\n' "$*" >>"$FAKE_LOG"
args=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --namespace | --container | --selector | -o) shift 2 ;;
        --dry-run=client | --) shift ;;
        *) args+=("$1"); shift ;;
    esac
done
case ${args[0]} in
    get) printf '%b' "$FAKE_PODS" ;;
    cp) [[ -f ${args[1]} ]] || { echo "error: ${args[1]} does not exist" >&2; exit 1; } ;;
    exec)
        pod=${args[1]}
        if [[ ${args[2]} == hotswap && ${args[3]} == status ]]; then
            case $pod in
                "${FAKE_BUSY:-}") echo "running app.wasm@406484e1 from /etc/hotswap/module/app.wasm (state v2), up 42 s; deploying app.wasm@406484e1: canary 0 events, 0 failures of at most 0, 48.8 s left" ;;
                "${FAKE_DOWN:-}") echo "hotswap: error: cannot reach a running hotswap on /run/hotswap/control.sock (is \`hotswap run\` running, with this --control?)" >&2; exit 1 ;;
                *) echo "running app.wasm@795b8ab1 from /etc/hotswap/module/app.wasm (state v1), up 42 s" ;;
            esac
            exit 0
        fi
        [[ ${args[2]} == hotswap && ${args[3]} == reload ]] || exit 0
        echo "hotswap: deploying ${args[4]} with a trial of the last 100 journaled events; waiting for the outcome" >&2
        case $pod in
            "${FAKE_REFUSE:-}")
                echo "hotswap: error: swap to new.wasm@2f5a5fcd refused: trial: event 17 (http POST /items) trapped: unreachable; still running app.wasm@795b8ab1 (state v1)" >&2
                exit 1 ;;
            "${FAKE_ROLLBACK:-}")
                echo "hotswap: error: swapped app.wasm@795b8ab1 → new.wasm@2f5a5fcd: state v1 → v2; canary: new.wasm@2f5a5fcd failed 1 time within 2104.37 ms of its commit (last: http GET /items: 500): rolled back to app.wasm@795b8ab1" >&2
                exit 1 ;;
            "${FAKE_CUT:-}")
                echo "hotswap: error: swapped app.wasm@795b8ab1 → new.wasm@2f5a5fcd: state v1 → v2; canary cut short after 3 events (0 failures): the host is stopping" >&2
                exit 1 ;;
            "${FAKE_GONE:-}")
                echo "error: unable to upgrade connection: container not found (\"hotswap\")" >&2
                exit 1 ;;
        esac
        echo "swapped app.wasm@795b8ab1 → new.wasm@2f5a5fcd: state v1 → v2; canary passed: 12 events, 0 failures (at most 0 allowed) in 60002.18 ms" ;;
    create) echo "apiVersion: v1" ;;
    apply) ;;
    *) echo "fake kubectl: unexpected: $*" >&2; exit 1 ;;
esac
FAKE
chmod +x "$work/kubectl"
printf '\0asm\1\0\0\0' >"$work/new.wasm"

passed=0
failed=0
check() { # check NAME CONDITION...: one result line
    local name=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
        echo "ok   $name"
    else
        failed=$((failed + 1))
        echo "FAIL $name" >&2
        sed 's/^/     out: /' "$work/out" >&2
        sed 's/^/     kubectl /' "$work/raw" >&2
    fi
}
# run [VAR=VALUE...]: runs rollout.sh on new.wasm; sets $status, fills out, raw (each kubectl
# call) and log (the same without the leading `--namespace prod`).
run() {
    : >"$work/raw"
    status=0
    env KUBECTL="$work/kubectl" FAKE_LOG="$work/raw" \
        FAKE_PODS='hotswap-10 Running\nhotswap-1 Running\nhotswap-0 Running\n' NAMESPACE=prod \
        "$@" bash "$here/rollout.sh" "$work/new.wasm" >"$work/out" 2>&1 || status=$?
    sed 's/^--namespace prod //' "$work/raw" >"$work/log"
}
reloads() { grep -o '^exec hotswap-[0-9]* .*hotswap reload' "$work/log" | cut -d' ' -f2 | paste -sd' ' -; }
every_call_in_namespace() { ! grep -qv '^--namespace prod ' "$work/raw"; }
has() { grep -qF -- "$1" "$work/$2"; }
lacks() { ! grep -qF -- "$1" "$work/$2"; }
last_line_has() { tail -n1 "$work/out" | grep -qF -- "$1"; }

run
check "all pods: exit 0" test "$status" -eq 0
check "all pods: name order 0, 1, 10" test "$(reloads)" = "hotswap-0 hotswap-1 hotswap-10"
check "all pods: reload with the default gate and socket" \
    has "exec hotswap-1 --container hotswap -- hotswap reload /staging/new.wasm --trial 100 --canary 60s --max-errors 0 --control /run/hotswap/control.sock" log
check "all pods: every call in the namespace" every_call_in_namespace
check "all pods: copied to the staging path" grep -qE '^cp --container hotswap /.*/new\.wasm hotswap-0:/staging/new\.wasm$' "$work/log"
check "all pods: ConfigMap updated last" test "$(tail -n2 "$work/log" | cut -d' ' -f1 | paste -sd' ' -)" = "create apply"
check "all pods: per-pod timing" has "[3/3] hotswap-10: ok in " out

run FAKE_REFUSE=hotswap-1
check "refusal: exit 1" test "$status" -eq 1
check "refusal: one line naming the pod" last_line_has "rollout: FAILED: hotswap-1 (2/3) after "
check "refusal: says refused, and why" last_line_has "refused: swap to new.wasm@2f5a5fcd refused: trial: event 17"
check "refusal: names the pods already done" last_line_has "pod(s) on the new version: hotswap-0"
check "refusal: stops there" test "$(reloads)" = "hotswap-0 hotswap-1"
check "refusal: ConfigMap untouched" lacks "create configmap" log

run FAKE_ROLLBACK=hotswap-0
check "canary rollback: exit 1" test "$status" -eq 1
check "canary rollback: says so" last_line_has "FAILED: hotswap-0 (1/3) after "
check "canary rollback: the reason" last_line_has "rolled back by its canary: swapped"
check "canary rollback: stops there" test "$(reloads)" = "hotswap-0"

run FAKE_CUT=hotswap-1
check "canary cut short: exit 1" test "$status" -eq 1
check "canary cut short: says so" last_line_has "hotswap-1 (2/3) after "
check "canary cut short: the reason" last_line_has "its canary was cut short: swapped"

run FAKE_GONE=hotswap-10
check "kubectl failure: exit 1" test "$status" -eq 1
check "kubectl failure: says so" last_line_has "hotswap-10 (3/3) after "
check "kubectl failure: the kubectl error" last_line_has "kubectl exec failed (exit 1): error: unable to upgrade connection"
check "kubectl failure: ConfigMap untouched" lacks "create configmap" log

run FAKE_PODS='hotswap-0 Running\nhotswap-1 Pending\n'
check "pod not running: exit 1" test "$status" -eq 1
check "pod not running: named" last_line_has "not every pod is running: hotswap-1 (Pending); nothing was changed"
check "pod not running: nothing copied" lacks "cp " log

run FAKE_BUSY=hotswap-1
check "deployment under way: exit 1" test "$status" -eq 1
check "deployment under way: named, nothing changed" last_line_has "hotswap-1: a deployment is under way (app.wasm@406484e1: canary 0 events, 0 failures of at most 0, 48.8 s left): wait for it to end; nothing was changed"
check "deployment under way: nothing copied" lacks "cp " log

run FAKE_DOWN=hotswap-0
check "host not answering: exit 1" test "$status" -eq 1
check "host not answering: named, nothing changed" last_line_has "hotswap-0: hotswap status failed: hotswap: error: cannot reach a running hotswap"
check "host not answering: nothing copied" lacks "cp " log

run FAKE_PODS=''
check "no pods: exit 1" test "$status" -eq 1
check "no pods: says so" last_line_has "no pod matches app=hotswap in namespace prod"

run RELOAD_ARGS='' CONFIGMAP='' SELECTOR=tier=canary
check "plain swap: exit 0" test "$status" -eq 0
check "plain swap: no gate arguments" has "-- hotswap reload /staging/new.wasm --control /run/hotswap/control.sock" log
check "plain swap: the selector" has "get pods --selector tier=canary" log
check "no ConfigMap: not updated" lacks "create configmap" log

status=0
bash "$here/rollout.sh" --help >"$work/out" 2>&1 || status=$?
check "--help: exit 0" test "$status" -eq 0
check "--help: usage" has "Usage: deploy/kubernetes/rollout.sh NEW.wasm" out
status=0
bash "$here/rollout.sh" >"$work/out" 2>&1 || status=$?
check "no argument: exit 2" test "$status" -eq 2
status=0
bash "$here/rollout.sh" "$work/missing.wasm" >"$work/out" 2>&1 || status=$?
check "missing module: exit 2" test "$status" -eq 2

echo "rollout.sh: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
