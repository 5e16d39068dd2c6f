#!/usr/bin/env bash
# Browser checks: the client library's unit tests (node, no browser), then the demo
# page end to end in headless Chromium (Debian's package, driven by playwright-core)
# against a freshly built `teamhub` (and, for the cluster test, Redis). Installs what is missing; fails, never skips.
# Screenshots land in target/e2e-artifacts/.
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { printf '\n==> %s\n' "$*"; }

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  log "installing node and npm"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi
if ! command -v openssl >/dev/null; then
  log "installing openssl (the HTTPS test makes its certificates with it)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl
fi
if [ ! -x /usr/bin/chromium ]; then
  log "installing chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi

# The cluster-mode test runs two nodes on a Redis (its own key prefix).
export TEAMHUB_TEST_REDIS_URL="${TEAMHUB_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
if ! redis-cli -u "$TEAMHUB_TEST_REDIS_URL" ping >/dev/null 2>&1; then
  if ! command -v redis-server >/dev/null; then
    log "installing redis"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
  fi
  log "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no
  for _ in $(seq 1 100); do
    redis-cli -u "$TEAMHUB_TEST_REDIS_URL" ping >/dev/null 2>&1 && break
    sleep 0.2
  done
  redis-cli -u "$TEAMHUB_TEST_REDIS_URL" ping >/dev/null || { echo "FATAL: Redis is not reachable" >&2; exit 1; }
fi

log "npm ci (clients/browser)"
(cd clients/browser && npm ci --no-audit --no-fund)

log "building teamhub"
cargo build -p teamhub --locked

# Where cargo put it: a shared CARGO_TARGET_DIR (e.g. of another worktree) is honoured.
export TEAMHUB_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/teamhub"
export TEAMHUB_E2E_ARTIFACTS="$PWD/target/e2e-artifacts"
rm -rf "$TEAMHUB_E2E_ARTIFACTS"

log "browser library unit tests"
(cd clients/browser && node --test --test-timeout=60000 test/)

log "end-to-end tests in headless chromium"
(cd clients/browser && node --test --test-concurrency=1 --test-timeout=120000 e2e/)
echo "screenshots: $TEAMHUB_E2E_ARTIFACTS"
