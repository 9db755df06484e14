#!/usr/bin/env bash
# Validates everything under deploy/ offline, one line per check:
#   - each Kubernetes manifest against the Kubernetes $KUBERNETES_VERSION OpenAPI schemas, strict
#     (unknown fields rejected), with kubernetes-validate (PyPI; it bundles the schemas);
#   - kustomization.yaml rendered by `kubectl kustomize` (with a stand-in app.wasm), and the
#     result validated the same way;
#   - the pieces agree with each other and with the real CLI (checks.py);
#   - the scripts: bash -n, shellcheck (when installed), and rollout.sh's tests against a fake
#     kubectl (test-rollout.sh);
#   - the systemd unit with systemd-analyze verify (when installed); the Nomad job parsed as HCL
#     and its shape checked (checks.py; not `nomad job validate`).
# No cluster is needed or contacted. Exits 1 if anything fails.
#
# The tools live in a venv under ${XDG_CACHE_HOME:-$HOME/.cache}/hotswap-kubevalidate, made on
# the first run (with $PYTHON, default python3, and pip from PyPI) and reused after.
# KUBERNETES_VERSION (default 1.33.0) picks the schemas: 1.25.0 to 1.37.0 are bundled.
set -euo pipefail
started=$SECONDS
kube=$(cd "$(dirname "$0")" && pwd)
deploy=$(dirname "$kube")
repo=$(dirname "$deploy")
KUBERNETES_VERSION=${KUBERNETES_VERSION:-1.33.0}
PYTHON=${PYTHON:-python3}
venv=${XDG_CACHE_HOME:-$HOME/.cache}/hotswap-kubevalidate
requirements=(kubernetes-validate==1.37.0 python-hcl2==8.1.4)

failures=0
ok() {
    printf 'ok    %s\n' "$*"
}
bad() {
    failures=$((failures + 1))
    printf 'FAIL  %s\n' "$*"
}
skip() { printf 'skip  %s\n' "$*"; }
# indent FILE: a tool's output under the line that reports it.
indent() { sed 's/^/      /' "$1"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The venv: rebuilt when missing, half-made, or made for other requirements.
if [[ ! -x $venv/bin/kubernetes-validate || "$(cat "$venv/.requirements" 2>/dev/null)" != "${requirements[*]}" ]]; then
    echo "setting up $venv (${requirements[*]})"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}"
    printf '%s\n' "${requirements[*]}" >"$venv/.requirements"
fi
py=$venv/bin/python

# kube_validate FILE: kubernetes-validate, strict; any warning (an unknown kind or apiVersion
# only warns) is a failure too. Prints the resources found, or the tool's complaints.
kube_validate() {
    local file=$1 out=$work/kv.out status=0
    "$venv/bin/kubernetes-validate" --strict -k "$KUBERNETES_VERSION" "$file" >"$out" 2>&1 || status=$?
    if [[ $status -ne 0 ]] || grep -qv '^INFO ' "$out" || ! grep -q '^INFO ' "$out"; then
        [[ -s $out ]] || echo "no resource in the file" >"$out"
        return 1
    fi
    sed -n 's/^INFO .* passed for resource \([^ ]*\) against .*/\1/p' "$out" | paste -sd' ' -
}

echo "== Kubernetes manifests (schemas of Kubernetes $KUBERNETES_VERSION, strict)"
for file in "$kube"/*.yaml; do
    name=kubernetes/$(basename "$file")
    case $(basename "$file") in
        kustomization.yaml | servicemonitor.yaml) continue ;; # below, and in checks.py
    esac
    if resources=$(kube_validate "$file"); then
        ok "$name: $resources"
    else
        bad "$name"
        indent "$work/kv.out"
    fi
done

if command -v kubectl >/dev/null 2>&1; then
    cp -r "$kube" "$work/kustomize"
    # A stand-in module with bytes that are not UTF-8, as a real module has: kustomize must put
    # it in binaryData.
    printf '\0asm\1\0\0\0\377\376' >"$work/kustomize/app.wasm"
    if ! kubectl kustomize "$work/kustomize" >"$work/rendered.yaml" 2>"$work/kustomize.err"; then
        bad "kubernetes/kustomization.yaml: kubectl kustomize failed"
        indent "$work/kustomize.err"
    elif ! "$py" -c '
import sys, yaml
cms = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "ConfigMap"]
sys.exit(0 if any("app.wasm" in c.get("binaryData", {}) for c in cms) else 1)' "$work/rendered.yaml"; then
        bad "kubernetes/kustomization.yaml: the rendered ConfigMap has no binaryData app.wasm"
    elif resources=$(kube_validate "$work/rendered.yaml"); then
        ok "kubernetes/kustomization.yaml: renders $resources (module in binaryData), all valid"
    else
        bad "kubernetes/kustomization.yaml: the rendered output"
        indent "$work/kv.out"
    fi
else
    skip "kubernetes/kustomization.yaml: kubectl is not installed, not rendered"
fi

echo "== consistency, and the flags against host/src"
status=0
"$py" "$kube/checks.py" "$repo" || status=$?
failures=$((failures + status))

echo "== scripts"
for script in "$kube"/*.sh; do
    name=kubernetes/$(basename "$script")
    if bash -n "$script" 2>"$work/bash.err"; then
        ok "$name: bash -n"
    else
        bad "$name: bash -n"
        indent "$work/bash.err"
    fi
done
if command -v shellcheck >/dev/null 2>&1; then
    if shellcheck "$kube"/*.sh >"$work/shellcheck.out" 2>&1; then
        ok "shellcheck $(shellcheck --version | sed -n 's/^version: //p'): $(cd "$kube" && echo ./*.sh | sed 's#\./##g')"
    else
        bad "shellcheck"
        indent "$work/shellcheck.out"
    fi
else
    skip "shellcheck: not installed (apt-get install shellcheck)"
fi
if bash "$kube/test-rollout.sh" >"$work/test.out" 2>&1; then
    ok "kubernetes/test-rollout.sh (rollout.sh against a fake kubectl): $(tail -n1 "$work/test.out")"
else
    bad "kubernetes/test-rollout.sh: $(tail -n1 "$work/test.out")"
    indent "$work/test.out"
fi

echo "== systemd"
if command -v systemd-analyze >/dev/null 2>&1; then
    # verify wants ExecStart's binary to exist: check a copy whose hotswap is a stand-in.
    mkdir -p "$work/systemd"
    printf '#!/bin/sh\n' >"$work/systemd/hotswap-stand-in"
    chmod +x "$work/systemd/hotswap-stand-in"
    sed "s#/usr/local/bin/hotswap#$work/systemd/hotswap-stand-in#g" \
        "$deploy/systemd/hotswap.service" >"$work/systemd/hotswap.service"
    # It reports unknown keys and bad values as warnings with exit 0: any output fails.
    status=0
    systemd-analyze verify "$work/systemd/hotswap.service" >"$work/verify.out" 2>&1 || status=$?
    if [[ $status -eq 0 && ! -s $work/verify.out ]]; then
        ok "systemd/hotswap.service: systemd-analyze verify ($(systemd-analyze --version | head -n1)), no warning"
    else
        bad "systemd/hotswap.service: systemd-analyze verify"
        sed "s#$work/systemd/hotswap-stand-in#/usr/local/bin/hotswap#g" "$work/verify.out" >"$work/verify.msg"
        indent "$work/verify.msg"
    fi
else
    skip "systemd/hotswap.service: systemd-analyze is not installed, not verified"
fi

if [[ $failures -gt 0 ]]; then
    echo "validate.sh: FAILED ($failures failure(s)) in $((SECONDS - started))s"
    exit 1
fi
echo "validate.sh: all passed in $((SECONDS - started))s"
