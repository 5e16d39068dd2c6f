#!/usr/bin/env bash
# Reliability under faults, in its short form (docs/reliability.md): the chaos run
# (three nodes on a private Redis and the test Postgres: SIGKILL a node, restart Redis,
# cut Postgres; every client gets every offset or is told `recovered: false`, every
# acknowledged publish is in the activity log once), and the churn soak in its short
# form (every churning socket joins and leaves, presence ends exact; its memory
# readings are printed, and judged only by the full soak, docs/reliability.md).
# Needs redis-server, psql, python3, curl; fails, never skips.
set -euo pipefail
cd "$(dirname "$0")/../.."

for tool in redis-server redis-cli psql python3 curl; do
  command -v "$tool" >/dev/null || { echo "FATAL: $tool is needed" >&2; exit 1; }
done
cargo build --quiet --locked -p teamhub -p teamhub-loadtest
export DATABASE_URL="${TEAMHUB_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
printf '\n--> chaos (short)\n'
loadtest/chaos.sh --short | grep -v '^  client '
printf '\n--> churn soak (short)\n'
loadtest/soak.sh --short
