#!/usr/bin/env bash
# Chaos under load (docs/reliability.md): three nodes on a private Redis and on the
# test Postgres (a schema of its own, reached through a proxy this script can cut)
# carry steady traffic from `teamhub-loadtest chaos` while this script
#   1. SIGKILLs node 2 and starts it again,
#   2. restarts Redis (without persistence: history and presence are gone),
#   3. cuts Postgres (every connection reset, new ones refused) and restores it.
# The generator reports per client whether it got every offset or was told
# `recovered: false`, and counts the activity rows of every acknowledged publish.
# Exit code: the generator's (0 ok, 3 a check failed).
#
# Usage: loadtest/chaos.sh [--short]   (--short: the CI form, ~45 s)
# Binaries: $TEAMHUB_BIN and $LOADTEST_BIN (default target/debug/...). Needs
# redis-server, python3, psql and Postgres at $DATABASE_URL (default the test one).
# Everything it starts it stops; all traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BIN=${TEAMHUB_BIN:-$TARGET/debug/teamhub}
LOADTEST=${LOADTEST_BIN:-$TARGET/debug/teamhub-loadtest}
BASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
if [ "${1:-}" = "--short" ]; then
  SOCKETS=${SOCKETS:-60} RATE=${RATE:-30} DURATION=${DURATION:-32}
else
  SOCKETS=${SOCKETS:-600} RATE=${RATE:-300} DURATION=${DURATION:-60}
fi
# When each fault starts, in seconds after the generator's traffic starts.
KILL_AT=$((DURATION * 15 / 100)) RESTART_AT=$((DURATION * 25 / 100))
REDIS_AT=$((DURATION * 40 / 100)) PG_CUT_AT=$((DURATION * 60 / 100)) PG_BACK_AT=$((DURATION * 80 / 100))
SECRET=chaos-secret-0123456789abcdef0123
WORK=$(mktemp -d)
SCHEMA="chaos_$(date +%s)_$$"
PIDS=()

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REDIS_PORT=$(free_port) PROXY_PORT=$(free_port)
NODE_PORTS=($(free_port) $(free_port) $(free_port))
log() { printf '%s chaos: %s\n' "$(date +%T)" "$*"; }

cleanup() {
  for p in "${PIDS[@]}" "${NODE_PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  psql -q "$BASE_URL" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

start_redis() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize yes --logfile "$WORK/redis.log" --dir "$WORK"
  for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "FATAL: Redis did not start" >&2; exit 1
}

SEARCH_PATH="options=-c%20search_path%3D$SCHEMA"
NODE_DB="postgres://postgres@127.0.0.1:$PROXY_PORT/test?$SEARCH_PATH"
DIRECT_DB="$BASE_URL?$SEARCH_PATH"
NODE_PIDS=("" "" "")
start_node() { # start_node INDEX
  local i=$1 port=${NODE_PORTS[$1]}
  TEAMHUB_JWT_SECRET=$SECRET RUST_LOG=${RUST_LOG:-warn} "$BIN" serve --listen "127.0.0.1:$port" \
    --node-id "chaos-$i" --redis-url "redis://127.0.0.1:$REDIS_PORT" --redis-key-prefix "$SCHEMA" \
    --database-url "$NODE_DB" --activity-spill-path "$WORK/spill-$i" --rate-limit 0 \
    --presence-ttl 3 >>"$WORK/node-$i.log" 2>&1 &
  NODE_PIDS[$i]=$!
  for _ in $(seq 1 150); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "FATAL: node $i did not become ready:" >&2; cat "$WORK/node-$i.log" >&2; exit 1
}

log "Redis on $REDIS_PORT, Postgres schema $SCHEMA through a proxy on $PROXY_PORT"
start_redis
psql -q "$BASE_URL" -c "CREATE SCHEMA $SCHEMA"
python3 loadtest/tcp_proxy.py "$PROXY_PORT" 127.0.0.1 5432 >"$WORK/proxy.out" 2>&1 &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
for _ in $(seq 1 50); do grep -q ready "$WORK/proxy.out" 2>/dev/null && break; sleep 0.1; done
for i in 0 1 2; do start_node "$i"; done
log "nodes on ${NODE_PORTS[*]}"

URLS=()
for p in "${NODE_PORTS[@]}"; do URLS+=(--url "ws://127.0.0.1:$p/ws"); done
"$LOADTEST" chaos "${URLS[@]}" --jwt-secret "$SECRET" --quiet \
  --sockets "$SOCKETS" --teams 3 --rate "$RATE" --duration "${DURATION}s" --drain 8s \
  --activity-database-url "$DIRECT_DB" --json "$WORK/chaos.json" >"$WORK/chaos.out" 2>&1 &
GEN=$!
# The generator connects everyone first; the timeline starts with its traffic.
for _ in $(seq 1 600); do
  grep -q 'chaos: publishing started' "$WORK/chaos.out" 2>/dev/null && break
  kill -0 "$GEN" 2>/dev/null || break
  sleep 0.1
done
T0=$(date +%s)
at() { local wait=$(( T0 + $1 - $(date +%s) )); [ "$wait" -gt 0 ] && sleep "$wait"; return 0; }

at "$KILL_AT";    log "SIGKILL node 1 (pid ${NODE_PIDS[1]})"; kill -KILL "${NODE_PIDS[1]}"
at "$RESTART_AT"; log "starting node 1 again"; start_node 1
at "$REDIS_AT";   log "restarting Redis (its data is lost)"
redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 || break; sleep 0.1; done
start_redis
at "$PG_CUT_AT";  log "cutting Postgres"; kill -USR1 "$PROXY_PID"
at "$PG_BACK_AT"; log "restoring Postgres"; kill -USR2 "$PROXY_PID"

set +e
wait "$GEN"
CODE=$?
set -e
cat "$WORK/chaos.out"
if [ -n "${CHAOS_JSON:-}" ]; then cp "$WORK/chaos.json" "$CHAOS_JSON"; fi
log "generator exit code $CODE"
exit "$CODE"
