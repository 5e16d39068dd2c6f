#!/usr/bin/env bash
# Lints the Dockerfile with dockerfile-utils (from npm, pinned): unknown instructions,
# bad arguments, invalid ports, and so on. No Docker engine is needed or used.
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION=0.16.3
PREFIX="${XDG_CACHE_HOME:-$HOME/.cache}/teamhub-checks/dockerfile-utils-$VERSION"
BIN="$PREFIX/node_modules/.bin/dockerfile-utils"

if ! command -v npm >/dev/null; then
  echo "FATAL: npm is required to install dockerfile-utils" >&2
  exit 1
fi
if [ ! -x "$BIN" ]; then
  echo "installing dockerfile-utils $VERSION into $PREFIX"
  npm install --silent --no-audit --no-fund --prefix "$PREFIX" "dockerfile-utils@$VERSION"
fi
"$BIN" lint Dockerfile
# The linter must be able to fail: a broken file is rejected.
broken=$(mktemp)
trap 'rm -f "$broken"' EXIT
printf 'FROM debian:bookworm-slim\nEXPOSE not-a-port\n' >"$broken"
if "$BIN" lint "$broken" >/dev/null; then
  echo "FATAL: dockerfile-utils accepted an invalid Dockerfile" >&2
  exit 1
fi
echo "Dockerfile lint passed"
