#!/usr/bin/env bash
# Offline checks of the Kubernetes manifests (k8s/): every overlay renders, validates
# strictly against the Kubernetes schemas (custom resources against k8s/schemas/), and
# agrees with `teamhub serve --help` (environment, ports, probe paths), which is run for
# real; the Grafana dashboard and docs/operations.md match the metric names in the code.
# Details in scripts/checks/k8s_check.py. Installs what it needs; fails when it cannot.
set -euo pipefail
cd "$(dirname "$0")/../.."

KUBERNETES_VALIDATE_VERSION=1.37.0
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/teamhub-checks/k8s-venv-$KUBERNETES_VALIDATE_VERSION"

if ! command -v kubectl >/dev/null; then
  echo "FATAL: kubectl is required (kubectl kustomize renders the overlays)" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import kubernetes_validate' 2>/dev/null; then
  echo "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

cargo build --quiet --locked -p teamhub --bin teamhub
exec "$VENV/bin/python" scripts/checks/k8s_check.py target/debug/teamhub --self-test
