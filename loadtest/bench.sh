#!/usr/bin/env bash
# Runs the benchmarks recorded in BENCHMARKS.md: each server started fresh, measured,
# and stopped (by the PID this script started). Results: loadtest/results/<name>.json
# and .svg. Needs release builds and the Socket.IO baseline installed:
#   cargo build --release -p teamhub-loadtest -p teamhub
#   (cd loadtest/baselines/socketio && npm ci)
# Usage: loadtest/bench.sh [idle|fanout|ramp|all|cluster] [RUN_TAG]
#   cluster: the fanout and ramp on 1 node in-process, then 1, 2 and 3 nodes sharing
#   Redis at 127.0.0.1:6379 (a fresh key prefix per layout); sockets round-robin over
#   the nodes, so most messages cross Redis to reach receivers on other nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-all}
TAG=${2:-run1}
BIN=target/release
OUT=loadtest/results
mkdir -p "$OUT"
SECRET=${SECRET:-loadtest-secret-0123456789abcdef}
HUB_PORT=18080 RELAY_PORT=18090 SIO_PORT=13000
LT="$BIN/teamhub-loadtest --quiet --jwt-secret $SECRET"
WORK=$(mktemp -d)
SERVER_PID=

start() { # start KIND
  case $1 in
    teamhub)
      rm -f "$WORK"/hub.db*
      "$BIN/teamhub" serve --listen 127.0.0.1:$HUB_PORT --jwt-secret "$SECRET" --rate-limit 0 \
        --database-url "sqlite://$WORK/hub.db" >"$WORK/hub.log" 2>&1 &
      URL=ws://127.0.0.1:$HUB_PORT/ws ;;
    relay)
      "$BIN/teamhub-relay" --listen 127.0.0.1:$RELAY_PORT >"$WORK/relay.log" 2>&1 &
      URL=ws://127.0.0.1:$RELAY_PORT/ws ;;
    socketio)
      PORT=$SIO_PORT node loadtest/baselines/socketio/server.js >"$WORK/sio.log" 2>&1 &
      URL=ws://127.0.0.1:$SIO_PORT ;;
  esac
  SERVER_PID=$!
  local host=${URL#ws://}; host=${host%%/*}
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/${host%:*}/${host#*:}") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "server $1 did not start" >&2; return 1
}

stop() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}
trap stop EXIT

CLUSTER_PIDS=()
cluster_start() { # cluster_start NODES memory|redis
  local nodes=$1 backend=$2 prefix="bench-$$-$RANDOM" i port
  URLS=() PIDS=() CLUSTER_PIDS=()
  for i in $(seq 1 "$nodes"); do
    port=$((18100 + i))
    rm -f "$WORK/node$i.db"*
    local args=(serve --listen "127.0.0.1:$port" --jwt-secret "$SECRET" --rate-limit 0
      --database-url "sqlite://$WORK/node$i.db" --node-id "n$i")
    if [[ $backend == redis ]]; then
      args+=(--redis-url redis://127.0.0.1:6379 --redis-key-prefix "$prefix")
    fi
    "$BIN/teamhub" "${args[@]}" >"$WORK/node$i.log" 2>&1 &
    CLUSTER_PIDS+=($!)
    URLS+=(--url "ws://127.0.0.1:$port/ws")
    PIDS+=(--server-pid $!)
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
      sleep 0.1
    done
  done
}

cluster_stop() {
  local pid
  for pid in "${CLUSTER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${CLUSTER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  CLUSTER_PIDS=()
}

if [[ $WHAT == cluster ]]; then
  trap cluster_stop EXIT
  for layout in 1:memory 1:redis 2:redis 3:redis; do
    nodes=${layout%%:*} backend=${layout#*:}
    name="hub-${nodes}node-$backend"
    cluster_start "$nodes" "$backend"
    $LT fanout "${URLS[@]}" "${PIDS[@]}" \
      --sockets 1000 --teams 10 --publishers 1 --rate 100 --duration 20s \
      --json "$OUT/fanout-$name-$TAG.json" || echo "fanout $name exited $?"
    $LT ramp "${URLS[@]}" "${PIDS[@]}" \
      --sockets 1000 --teams 10 --publishers 1 --start-rate 100 --step-duration 5s \
      --json "$OUT/ramp-$name-$TAG.json" || echo "ramp $name exited $?"
    cluster_stop
  done
  exit 0
fi

for KIND in teamhub relay socketio; do
  if [[ $WHAT == all || $WHAT == idle ]]; then
    start $KIND
    $LT idle --server-kind $KIND --url "$URL" --server-pid "$SERVER_PID" \
      --sockets 15000 --teams 150 --duration 20s --processes 3 \
      --source-addrs 127.0.0.1-127.0.0.6 --connect-timeout 60s \
      --json "$OUT/idle-$KIND-$TAG.json" || echo "idle $KIND exited $?"
    stop
  fi
  if [[ $WHAT == all || $WHAT == fanout ]]; then
    start $KIND
    $LT fanout --server-kind $KIND --url "$URL" --server-pid "$SERVER_PID" \
      --sockets 1000 --teams 10 --publishers 1 --rate 100 --duration 20s \
      --json "$OUT/fanout-$KIND-$TAG.json" || echo "fanout $KIND exited $?"
    stop
  fi
  if [[ $WHAT == all || $WHAT == ramp ]]; then
    start $KIND
    $LT ramp --server-kind $KIND --url "$URL" --server-pid "$SERVER_PID" \
      --sockets 1000 --teams 10 --publishers 1 --start-rate 100 --step-duration 5s \
      --json "$OUT/ramp-$KIND-$TAG.json" || echo "ramp $KIND exited $?"
    stop
  fi
done
