#!/usr/bin/env bash
# Webhook deliveries of a real `teamhub serve` verified with the reference library of
# the Standard Webhooks specification (`standardwebhooks` from PyPI, pinned, installed
# into a virtual environment under target/): scripts/checks/webhooks_check.py. Builds
# the debug binary when missing. Fails, never skips.
set -euo pipefail
cd "$(dirname "$0")/../.."

STANDARDWEBHOOKS_VERSION=1.1.0
VENV="${CARGO_TARGET_DIR:-$PWD/target}/webhooks-venv"
PY="$VENV/bin/python"

if ! "$PY" -c "import standardwebhooks" 2>/dev/null; then
  echo "installing standardwebhooks $STANDARDWEBHOOKS_VERSION into $VENV"
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV"; then
    # Debian's python3 needs python3-venv for ensurepip.
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    python3 -m venv "$VENV"
  fi
  "$PY" -m pip install --quiet --disable-pip-version-check "standardwebhooks==$STANDARDWEBHOOKS_VERSION"
fi

BIN="${TEAMHUB_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/teamhub}"
if [ ! -x "$BIN" ]; then
  cargo build --quiet --locked -p teamhub --bin teamhub
fi
"$PY" scripts/checks/webhooks_check.py "$BIN"
