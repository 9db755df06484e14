#!/usr/bin/env bash
# Rolls a new module out to the hotswap pods one at a time, through each pod's control socket,
# and stops at the first pod that refuses it or rolls it back. Run with --help for the details.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: deploy/kubernetes/rollout.sh NEW.wasm

Swaps NEW.wasm into the hotswap pods one at a time, in name order (hotswap-0, hotswap-1, ...):
for each pod, `kubectl cp` the module to a staging path in the pod (not the watched ConfigMap
directory), then `kubectl exec POD -- hotswap reload STAGING $RELOAD_ARGS --control SOCKET`,
which waits for the outcome: the trial, the swap, and the whole canary window. The next pod
starts only once this one has passed.

First, every pod must be Running, answer `hotswap status`, and have no deployment under way;
otherwise nothing is changed. Then it stops with exit status 1 and one line naming the pod at
the first refusal (the pod keeps the
version it ran), the first canary rollback (the pod rolled itself back), or the first kubectl
failure. Pods before it keep NEW.wasm; pods after it are not touched.

Once every pod runs NEW.wasm, the ConfigMap is updated to it (set CONFIGMAP= to skip), so that a
pod that restarts, and a new replica, start from NEW.wasm rather than the old module. The
kubelet then syncs the volume, and each pod's --watch finds the module it already runs and
leaves it (it logs "already running; nothing to do").

Environment:
  NAMESPACE      namespace of the pods (default: kubectl's current namespace)
  SELECTOR       label selector of the pods (default: app=hotswap)
  RELOAD_ARGS    what each reload must get through
                 (default: --trial 100 --canary 60s --max-errors 0)
  CONTAINER      container name (default: hotswap)
  CONTROL        control socket in the pod (default: /run/hotswap/control.sock)
  STAGING        where the module is copied in the pod (default: /staging/new.wasm)
  CONFIGMAP      ConfigMap updated after a full rollout, empty to skip (default: hotswap-module)
  CONFIGMAP_KEY  its key holding the module (default: app.wasm)
  KUBECTL        kubectl command (default: kubectl)

Exit status: 0 when every pod runs NEW.wasm, 1 on a refusal, rollback or failure, 2 on bad usage.
EOF
}

case "${1:-}" in
    -h | --help)
        usage
        exit 0
        ;;
esac
if [[ $# -ne 1 || $1 == -* ]]; then
    usage >&2
    exit 2
fi

module=$1
NAMESPACE=${NAMESPACE:-}
SELECTOR=${SELECTOR:-app=hotswap}
# Set but empty means a plain swap; unset means the default gate.
if [[ -z ${RELOAD_ARGS+set} ]]; then
    RELOAD_ARGS='--trial 100 --canary 60s --max-errors 0'
fi
CONTAINER=${CONTAINER:-hotswap}
CONTROL=${CONTROL:-/run/hotswap/control.sock}
STAGING=${STAGING:-/staging/new.wasm}
if [[ -z ${CONFIGMAP+set} ]]; then
    CONFIGMAP=hotswap-module
fi
CONFIGMAP_KEY=${CONFIGMAP_KEY:-app.wasm}
KUBECTL=${KUBECTL:-kubectl}

say() { printf 'rollout: %s\n' "$*"; }
fail() {
    printf 'rollout: FAILED: %s\n' "$*" >&2
    exit 1
}

if [[ ! -f $module || ! -r $module ]]; then
    printf 'rollout: %s is not a readable file\n' "$module" >&2
    exit 2
fi

read -r -a reload_args <<<"$RELOAD_ARGS"
kubectl_=("$KUBECTL")
if [[ -n $NAMESPACE ]]; then
    kubectl_+=(--namespace "$NAMESPACE")
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# kubectl cp reads a colon in a local path as POD:PATH: copy the module to a plain name.
cp -- "$module" "$work/new.wasm"
size=$(wc -c <"$work/new.wasm" | tr -d ' ')
sum=$(sha256sum "$work/new.wasm" | cut -c1-16)

listing=$("${kubectl_[@]}" get pods --selector "$SELECTOR" \
    -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.status.phase}{"\n"}{end}') ||
    fail "cannot list the pods (selector $SELECTOR${NAMESPACE:+, namespace $NAMESPACE})"
pods=()
not_running=()
while read -r name phase; do
    [[ -n $name ]] || continue
    pods+=("$name")
    if [[ $phase != Running ]]; then
        not_running+=("$name ($phase)")
    fi
done < <(printf '%s\n' "$listing" | sort -V)
if [[ ${#pods[@]} -eq 0 ]]; then
    fail "no pod matches $SELECTOR${NAMESPACE:+ in namespace $NAMESPACE}"
fi
if [[ ${#not_running[@]} -gt 0 ]]; then
    fail "not every pod is running: ${not_running[*]}; nothing was changed"
fi

# Every host must answer, and have no deployment under way (a reload would be refused): for
# instance the swap each pod's --watch makes a minute or so after the ConfigMap changed, whose
# canary then runs for the `run` line's window.
for pod in "${pods[@]}"; do
    if ! answer=$("${kubectl_[@]}" exec "$pod" --container "$CONTAINER" -- \
        hotswap status --control "$CONTROL" 2>&1); then
        fail "$pod: hotswap status failed: $(printf '%s\n' "$answer" | tail -n1); nothing was changed"
    fi
    if [[ $answer == *"; deploying "* ]]; then
        fail "$pod: a deployment is under way (${answer##*; deploying }): wait for it to end; nothing was changed"
    fi
done

say "$module ($size bytes, sha256 $sum...) to ${#pods[@]} pod(s): ${pods[*]}"
say "each reload: ${RELOAD_ARGS:-(a plain swap)}"
rollout_start=$SECONDS
done_pods=()
n=0
for pod in "${pods[@]}"; do
    n=$((n + 1))
    tag="[$n/${#pods[@]}] $pod"
    started=$SECONDS
    say "$tag: copying to $STAGING"
    if ! "${kubectl_[@]}" cp --container "$CONTAINER" "$work/new.wasm" "$pod:$STAGING" >"$work/cp.log" 2>&1; then
        sed 's/^/    /' "$work/cp.log" >&2
        fail "$pod: kubectl cp failed; pod(s) on the new version: ${done_pods[*]:-none}"
    fi
    copied=$SECONDS
    say "$tag: hotswap reload (waits for the outcome)"
    set +e
    "${kubectl_[@]}" exec "$pod" --container "$CONTAINER" -- \
        hotswap reload "$STAGING" "${reload_args[@]}" --control "$CONTROL" 2>&1 |
        tee "$work/reload.log" | sed "s/^/    $pod: /"
    status=${PIPESTATUS[0]}
    set -e
    "${kubectl_[@]}" exec "$pod" --container "$CONTAINER" -- rm -f "$STAGING" >/dev/null 2>&1 || true
    finished=$SECONDS
    if [[ $status -ne 0 ]]; then
        # `hotswap reload` prints `hotswap: error: <why>` and exits 1 when the host refused the
        # version or its canary rolled it back; anything else is kubectl's own failure.
        why=$(grep -m1 '^hotswap: error: ' "$work/reload.log" | sed 's/^hotswap: error: //') || true
        if [[ -z $why ]]; then
            line=$(grep -m1 -i 'error' "$work/reload.log" || tail -n1 "$work/reload.log")
            what="kubectl exec failed (exit $status): $line"
        elif [[ $why == *"the rollback failed"* ]]; then
            what="its canary tripped and THE ROLLBACK FAILED: $why"
        elif [[ $why == *"canary cut short"* ]]; then
            what="its canary was cut short: $why"
        elif [[ $why == *"canary:"*"rolled back to"* ]]; then
            what="rolled back by its canary: $why"
        else
            what="refused: $why"
        fi
        fail "$pod ($n/${#pods[@]}) after $((finished - started))s: $what; pod(s) on the new version: ${done_pods[*]:-none}"
    fi
    done_pods+=("$pod")
    say "$tag: ok in $((finished - started))s (copy $((copied - started))s, reload $((finished - copied))s)"
done

if [[ -n $CONFIGMAP ]]; then
    say "updating ConfigMap $CONFIGMAP (key $CONFIGMAP_KEY) so that restarts start from the new version"
    "${kubectl_[@]}" create configmap "$CONFIGMAP" --from-file="$CONFIGMAP_KEY=$work/new.wasm" \
        --dry-run=client -o yaml >"$work/configmap.yaml" ||
        fail "cannot write the ConfigMap; every pod runs the new version, but $CONFIGMAP still holds the old one"
    "${kubectl_[@]}" apply -f "$work/configmap.yaml" >/dev/null ||
        fail "cannot update ConfigMap $CONFIGMAP; every pod runs the new version, but a restart would start from the old one"
fi
say "done: ${#pods[@]} pod(s) run $module in $((SECONDS - rollout_start))s"
