#!/usr/bin/env bash
# Measures what one teamhub node asks of Redis per operation (BENCHMARKS.md, "Redis work
# per operation"): a private redis-server (so no other client's commands are counted),
# one node in cluster mode, then `INFO commandstats` deltas around
#   join:    JOINERS `teamhub listen` processes joining one team,
#   publish: PUBLISHES REST publishes to that team,
#   idle:    IDLE_S seconds of nothing (presence refresh and sweep rounds),
#   leave:   the listeners stopping.
# Everything it starts it stops by PID (and the Redis by SHUTDOWN on its own port).
# Usage: loadtest/redis-ops.sh [TEAMHUB_BINARY]   (default target/release/teamhub)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/teamhub}
JOINERS=${JOINERS:-20}
PUBLISHES=${PUBLISHES:-500}
IDLE_S=${IDLE_S:-15}
REDIS_PORT=${REDIS_PORT:-16399}
HUB_PORT=${HUB_PORT:-18180}
SECRET=redis-ops-secret-0123456789abcdef
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
R() { redis-cli -p "$REDIS_PORT" "$@"; }

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --daemonize yes --logfile "$WORK/redis.log"
for _ in $(seq 1 50); do R ping >/dev/null 2>&1 && break; sleep 0.1; done

TEAMHUB_JWT_SECRET=$SECRET "$BIN" serve --listen 127.0.0.1:$HUB_PORT \
  --redis-url "redis://127.0.0.1:$REDIS_PORT" --rate-limit 0 \
  --database-url "sqlite://$WORK/hub.db" --activity-spill-path "$WORK/a.spill" \
  >"$WORK/hub.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$HUB_PORT/readyz" >/dev/null 2>&1 && break; sleep 0.1
done

# Totals of calls and microseconds per command, "name calls usec", and a last line
# "~cpu 0 USEC" with the Redis process's CPU time (user + system) so far.
stats() {
  R info commandstats | tr -d '\r' | sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\),usec=\([0-9]*\),.*/\1 \2 \3/p' | sort
  R info cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ { t += $2 } END { printf "~cpu 0 %d\n", t * 1e6 }'
}
# Prints the per-command delta between two stats snapshots, divided by N operations.
delta() { # delta BEFORE AFTER N LABEL
  echo "== $4 (per operation, N=$3)"
  # Commands a script runs are counted too, and the script's usec include theirs: the
  # process CPU line, not a sum of usec, is what an operation costs Redis.
  join -a2 -e0 -o 0,1.2,1.3,2.2,2.3 "$1" "$2" | awk -v n="$3" '
    $1 == "~cpu" { cpu = $5 - $3; next }
    { calls = $4 - $2; usec = $5 - $3
      if (calls > 0) printf "  %-14s %8.2f calls %8.2f usec\n", $1, calls / n, usec / n }
    END { printf "  Redis process CPU: %.1f usec per operation\n", cpu / n }'
}

R config resetstat >/dev/null
stats >"$WORK/s0"
for i in $(seq 1 "$JOINERS"); do
  token=$(TEAMHUB_JWT_SECRET=$SECRET "$BIN" token --user "u$i" --team t=viewer)
  "$BIN" listen --url "ws://127.0.0.1:$HUB_PORT" --token "$token" --team t >"$WORK/listen-$i.out" 2>&1 &
  PIDS+=($!)
done
# Joined when each listener printed its join reply (bounded wait).
for _ in $(seq 1 200); do
  n=$(grep -l '"op":"reply"' "$WORK"/listen-*.out 2>/dev/null | wc -l)
  [ "$n" -ge "$JOINERS" ] && break; sleep 0.1
done
[ "$n" -ge "$JOINERS" ] || { echo "only $n of $JOINERS listeners joined" >&2; exit 1; }
stats >"$WORK/s1"

token=$(TEAMHUB_JWT_SECRET=$SECRET "$BIN" token --user pub --team t=editor)
for i in $(seq 1 "$PUBLISHES"); do
  curl -fs -H "Authorization: Bearer $token" -H 'content-type: application/json' \
    -d "{\"type\":\"bench.tick\",\"data\":{\"i\":$i}}" \
    "http://127.0.0.1:$HUB_PORT/api/v1/teams/t/messages" >/dev/null
done
stats >"$WORK/s2"
sleep "$IDLE_S" # the measured interval itself, not synchronisation
stats >"$WORK/s3"
for p in "${PIDS[@]:1}"; do kill "$p"; done
for _ in $(seq 1 100); do
  [ "$(curl -fs -H "Authorization: Bearer $token" "http://127.0.0.1:$HUB_PORT/api/v1/teams/t/presence" | grep -o '"user"' | wc -l)" -eq 0 ] && break
  sleep 0.1
done
stats >"$WORK/s4"

delta "$WORK/s0" "$WORK/s1" "$JOINERS" "join (one connection joining one team)"
delta "$WORK/s1" "$WORK/s2" "$PUBLISHES" "publish (REST, one team with $JOINERS members on this node)"
delta "$WORK/s2" "$WORK/s3" "$IDLE_S" "idle second (one node hosting one team of $JOINERS connections)"
delta "$WORK/s3" "$WORK/s4" "$JOINERS" "leave (one connection closing)"
echo "Redis: $(redis-server --version | cut -d' ' -f3), teamhub: $BIN"
