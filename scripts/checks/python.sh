#!/usr/bin/env bash
# The Python client package (clients/python/): installed with pip into a virtual
# environment under target/ (the versions in clients/python/constraints.txt), checked
# with ruff and `mypy --strict`, and tested with pytest against real `teamhub serve`
# processes (the debug binary, built when missing) and, for the cluster tests, the
# Redis at TEAMHUB_TEST_REDIS_URL (default redis://127.0.0.1:6379); the TLS tests make
# their certificates with the openssl command line (installed when missing). Fails,
# never skips.
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { printf '\n==> %s\n' "$*"; }

VENV="$PWD/target/python-venv"
PY="$VENV/bin/python"

if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  log "creating $VENV"
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV"; then
    # Debian's python3 needs python3-venv for ensurepip.
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    python3 -m venv "$VENV"
  fi
fi

if ! command -v openssl >/dev/null; then
  log "installing openssl (the TLS tests make certificates with it)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl
fi

log "pip install ./clients/python[test]"
# Not editable: the tests run against the package as pip builds and installs it.
"$PY" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./clients/python
"$PY" -m pip install --quiet --disable-pip-version-check \
  -c clients/python/constraints.txt "./clients/python[test]"

# Where cargo puts the binary: a shared CARGO_TARGET_DIR (of another worktree) is honoured.
export TEAMHUB_BIN="${TEAMHUB_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/teamhub}"
if [ ! -x "$TEAMHUB_BIN" ]; then
  log "building teamhub"
  cargo build --locked -p teamhub
fi

export TEAMHUB_TEST_REDIS_URL="${TEAMHUB_TEST_REDIS_URL:-redis://127.0.0.1:6379}"

cd clients/python
log "ruff"
"$VENV/bin/ruff" check src tests examples
"$VENV/bin/ruff" format --check src tests examples
log "mypy --strict"
"$PY" -m mypy --strict src examples
log "pytest"
# src/ is not on the path: `import teamhub` is the installed package.
"$PY" -m pytest -p no:cacheprovider tests
