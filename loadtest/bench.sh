#!/usr/bin/env bash
# Runs the benchmarks recorded in BENCHMARKS.md: each server started fresh, measured,
# and stopped (by the PID this script started). Results: loadtest/results/<name>.json
# and .svg. Needs release builds and the Socket.IO baseline installed:
#   cargo build --release -p teamhub-loadtest -p teamhub
#   (cd loadtest/baselines/socketio && npm ci)
# Usage: loadtest/bench.sh [idle|fanout|ramp|all|cluster|shards|quota] [RUN_TAG]
#   quota: the fanout on 1 node (in process, then Redis) with and without plan quotas.
#   cluster: the fanout and ramp, in one run, on: 1 node in-process; 1 and 2 nodes
#   sharing Redis at 127.0.0.1:6379 (a fresh key prefix per layout); 2 nodes on a local
#   3-primary Redis Cluster this script starts (ports 17001-17003); Socket.IO with its
#   Redis adapter on 2 nodes. Sockets round-robin over the nodes, so most messages cross
#   Redis to reach receivers on other nodes. Redis `INFO commandstats` (CPU per call of
#   each command) is written beside each result as <name>-<tag>.commandstats.
#   shards: 2 nodes on the 3-primary cluster, 300 teams; each primary's CPU time during
#   the fanout goes to loadtest/results/shards-<tag>.txt (balance across shards).
# Environment: RAMP_PROCESSES=K (default 1, one generator process as before) runs every
#   ramp (the `ramp`/`all` modes and each `cluster` layout's ramp) with --processes K:
#   each step's sockets are split over K child processes (whole teams each), so the
#   generator is not limited to one core. The file names stay the same; give such a run
#   its own RUN_TAG, e.g. RAMP_PROCESSES=2 loadtest/bench.sh cluster p2.
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-all}
TAG=${2:-run1}
BIN=target/release
OUT=loadtest/results
mkdir -p "$OUT"
SECRET=${SECRET:-loadtest-secret-0123456789abcdef}
RAMP_PROCESSES=${RAMP_PROCESSES:-1}
if ! [[ $RAMP_PROCESSES =~ ^[1-9][0-9]*$ ]]; then
  echo "RAMP_PROCESSES must be a positive integer (got '$RAMP_PROCESSES')" >&2; exit 2
fi
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

# A 3-primary Redis Cluster (no replicas: every core the replicas would take is the
# hub's), started once for the run and stopped on exit.
SHARD_PORTS=(17001 17002 17003)
SHARD_PIDS=()
shards_start() {
  [[ ${#SHARD_PIDS[@]} -gt 0 ]] && return 0
  local port
  for port in "${SHARD_PORTS[@]}"; do
    mkdir -p "$WORK/shard$port"
    (cd "$WORK/shard$port" && exec redis-server --port "$port" --bind 127.0.0.1 \
      --cluster-enabled yes --cluster-config-file nodes.conf --save "" --appendonly no \
      >"$WORK/shard$port.log" 2>&1) &
    SHARD_PIDS+=($!)
  done
  for port in "${SHARD_PORTS[@]}"; do
    for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${SHARD_PORTS[@]}") --cluster-yes >/dev/null
  for port in "${SHARD_PORTS[@]}"; do
    for _ in $(seq 1 100); do
      redis-cli -p "$port" cluster info | grep -q 'cluster_state:ok' && break; sleep 0.1
    done
  done
}
shards_stop() {
  local pid
  for pid in "${SHARD_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${SHARD_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  SHARD_PIDS=()
}
# Redis ports a layout uses, for commandstats and CPU.
redis_ports() { # redis_ports BACKEND
  case $1 in rediscluster) echo "${SHARD_PORTS[@]}" ;; redis|socketio) echo 6379 ;; esac
}
stats_reset() { local p; for p in $(redis_ports "$1"); do redis-cli -p "$p" config resetstat >/dev/null; done; }
stats_save() { # stats_save BACKEND FILE
  local p
  : >"$2"
  for p in $(redis_ports "$1"); do
    { echo "# port $p"; redis-cli -p "$p" info commandstats; redis-cli -p "$p" info cpu; } >>"$2"
  done
}

CLUSTER_PIDS=()
NODE_ARGS=()
cluster_start() { # cluster_start NODES memory|redis|rediscluster|socketio
  local nodes=$1 backend=$2 prefix="bench-$$-$RANDOM" i port
  URLS=() PIDS=() CLUSTER_PIDS=() KIND_ARGS=()
  for i in $(seq 1 "$nodes"); do
    port=$((18100 + i))
    if [[ $backend == socketio ]]; then
      PORT=$port REDIS_URL=redis://127.0.0.1:6379 node loadtest/baselines/socketio/server.js \
        >"$WORK/node$i.log" 2>&1 &
      KIND_ARGS=(--server-kind socketio)
      URLS+=(--url "ws://127.0.0.1:$port")
    else
      rm -f "$WORK/node$i.db"*
      local args=(serve --listen "127.0.0.1:$port" --jwt-secret "$SECRET" --rate-limit 0
        --database-url "sqlite://$WORK/node$i.db" --node-id "n$i" "${NODE_ARGS[@]}")
      case $backend in
        redis) args+=(--redis-url redis://127.0.0.1:6379 --redis-key-prefix "$prefix") ;;
        rediscluster)
          shards_start
          args+=(--redis-mode cluster --redis-key-prefix "$prefix"
            --redis-url "$(printf 'redis://127.0.0.1:%s,' "${SHARD_PORTS[@]}")") ;;
      esac
      "$BIN/teamhub" "${args[@]}" >"$WORK/node$i.log" 2>&1 &
      URLS+=(--url "ws://127.0.0.1:$port/ws")
    fi
    CLUSTER_PIDS+=($!)
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

if [[ $WHAT == quota ]]; then
  # The fan-out with plan quotas checked on every publish and join (limits far above
  # what the run uses, so nothing is refused) against the same fan-out without quotas,
  # in process and through Redis, alternating so both see the same machine.
  trap 'cluster_stop' EXIT
  printf '[plans.free]\nmessages_per_day = 1000000000\nmax_connections = 1000000\n' \
    >"$WORK/quota.toml"
  for round in 1 2; do
    for layout in memory redis; do
      for quota in off on; do
        NODE_ARGS=()
        [[ $quota == on ]] && NODE_ARGS=(--config "$WORK/quota.toml")
        name="hub-1node-$layout-quota-$quota-r$round"
        cluster_start 1 "$layout"
        stats_reset "$layout"
        $LT fanout "${URLS[@]}" "${PIDS[@]}" \
          --sockets 1000 --teams 10 --publishers 1 --rate 100 --duration 20s \
          --json "$OUT/fanout-$name-$TAG.json" || echo "fanout $name exited $?"
        [[ $layout == redis ]] && stats_save "$layout" "$OUT/fanout-$name-$TAG.commandstats"
        cluster_stop
      done
    done
  done
  exit 0
fi

if [[ $WHAT == cluster ]]; then
  trap 'cluster_stop; shards_stop' EXIT
  for layout in 1:memory 1:redis 2:redis 2:rediscluster 2:socketio; do
    nodes=${layout%%:*} backend=${layout#*:}
    name="hub-${nodes}node-$backend"
    [[ $backend == socketio ]] && name="socketio-${nodes}node-redis"
    cluster_start "$nodes" "$backend"
    stats_reset "$backend"
    $LT fanout "${KIND_ARGS[@]}" "${URLS[@]}" "${PIDS[@]}" \
      --sockets 1000 --teams 10 --publishers 1 --rate 100 --duration 20s \
      --json "$OUT/fanout-$name-$TAG.json" || echo "fanout $name exited $?"
    stats_save "$backend" "$OUT/fanout-$name-$TAG.commandstats"
    stats_reset "$backend"
    $LT ramp "${KIND_ARGS[@]}" "${URLS[@]}" "${PIDS[@]}" --processes "$RAMP_PROCESSES" \
      --sockets 1000 --teams 10 --publishers 1 --start-rate 100 --step-duration 5s \
      --json "$OUT/ramp-$name-$TAG.json" || echo "ramp $name exited $?"
    stats_save "$backend" "$OUT/ramp-$name-$TAG.commandstats"
    cluster_stop
  done
  exit 0
fi

if [[ $WHAT == shards ]]; then
  trap 'cluster_stop; shards_stop' EXIT
  cluster_start 2 rediscluster
  stats_reset rediscluster
  $LT fanout "${URLS[@]}" "${PIDS[@]}" \
    --sockets 3000 --teams 300 --publishers 1 --rate 1500 --duration 20s \
    --json "$OUT/fanout-shards-$TAG.json" || echo "fanout shards exited $?"
  stats_save rediscluster "$OUT/shards-$TAG.txt"
  cluster_stop
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
    $LT ramp --server-kind $KIND --url "$URL" --server-pid "$SERVER_PID" --processes "$RAMP_PROCESSES" \
      --sockets 1000 --teams 10 --publishers 1 --start-rate 100 --step-duration 5s \
      --json "$OUT/ramp-$KIND-$TAG.json" || echo "ramp $KIND exited $?"
    stop
  fi
done
