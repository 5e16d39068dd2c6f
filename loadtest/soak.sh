#!/usr/bin/env bash
# Soak with connection churn (docs/reliability.md): one node takes CYCLES connects,
# joins and disconnects (half with a clean close, half by dropping the TCP connection)
# beside a little steady traffic. Every churning socket must join and leave and
# presence must end exactly right (the churn scenario checks both, after the warm-up
# and after each phase). The node's memory is read after the warm-up (its working set)
# and after each phase; the full run compares the last reading with the first against
# a bound of 10 % and exits non-zero above it.
#
# Memory is the anonymous part of the RSS (RssAnon: heap and stacks). VmRSS also counts
# the pages of the executable the process has touched so far, which grow as code runs
# for the first time (tens of MiB for a debug build) and say nothing about leaks; both
# are printed.
#
# Usage: loadtest/soak.sh [--short]
#   --short: the CI form, 2,000 + 5,000 cycles; it checks the churn and presence and
#   prints the memory readings, but a memory bound is a measurement, not a test: only
#   the full run (100,000 cycles) judges it.
# Binaries: $TEAMHUB_BIN and $LOADTEST_BIN (default target/debug/...).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BIN=${TEAMHUB_BIN:-$TARGET/debug/teamhub}
LOADTEST=${LOADTEST_BIN:-$TARGET/debug/teamhub-loadtest}
SHORT=false
if [ "${1:-}" = "--short" ]; then
  SHORT=true; CYCLES=${CYCLES:-5000}; WARMUP=${WARMUP:-2000}; PHASES=${PHASES:-1}
fi
CYCLES=${CYCLES:-100000}
RATE=${RATE:-500}            # connects per second
WARMUP=${WARMUP:-20000}     # the node reaches its working set in about this many
# History is a cache that fills with the steady traffic (5 messages/s per team) until it
# holds --history-size messages a team; at the default 1000 it would still be filling
# long after the warm-up. A smaller one is full before the first reading, so what is
# left to grow is what the churn itself leaves behind.
HISTORY=${HISTORY:-100}
SECRET=soak-secret-0123456789abcdef01234
WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
NODE=""
cleanup() { [ -n "$NODE" ] && kill "$NODE" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
log() { printf '%s soak: %s\n' "$(date +%T)" "$*"; }
rss_kib() { awk '/^RssAnon:/ {print $2}' "/proc/$NODE/status"; }
vmrss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$NODE/status"; }

# SOAK_DATABASE_URL: another database (a Postgres schema URL, say); SQLite by default.
TEAMHUB_JWT_SECRET=$SECRET RUST_LOG=${RUST_LOG:-warn} "$BIN" serve --listen "127.0.0.1:$PORT" \
  --database-url "${SOAK_DATABASE_URL:-sqlite://$WORK/hub.db}" --activity-spill-path "$WORK/activity.spill" \
  --rate-limit 0 --history-size "$HISTORY" >"$WORK/node.log" 2>&1 &
NODE=$!
for _ in $(seq 1 150); do curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

churn() { # churn CYCLES LABEL: exactly CYCLES churning connects, checked by the run
  local secs=$(( $1 / RATE )); [ "$secs" -lt 1 ] && secs=1
  "$LOADTEST" churn --url "ws://127.0.0.1:$PORT/ws" --jwt-secret "$SECRET" --quiet \
    --sockets 10 --teams 2 --rate 10 --duration "${secs}s" --drain 2s \
    --churn-rate "$RATE" --churn-count "$1" --churn-concurrency 64 --churn-lifetime 100ms --settle 10s \
    --source-addrs 127.0.0.1-127.0.0.8 --json "$WORK/$2.json" >"$WORK/$2.out" 2>&1 \
    || { cat "$WORK/$2.out"; echo "FATAL: the $2 churn run failed" >&2; exit 1; }
  python3 - "$WORK/$2.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for c in r["checks"]:
    if "churn" in c["name"] or "presence" in c["name"]:
        print(f"  check {c['name']}: {'ok' if c['ok'] else 'FAILED'} {c['detail']}")
PY
}

log "warm-up: $WARMUP cycles at up to $RATE/s"
churn "$WARMUP" warmup
BASE=$(rss_kib)
log "after the warm-up: RssAnon $BASE KiB (VmRSS $(vmrss_kib) KiB)"
# The soak in PHASES equal parts, the memory read after each: a leak grows with every
# phase, a working set that is still filling levels off.
PHASES=${PHASES:-5}
READINGS="$BASE"
for phase in $(seq 1 "$PHASES"); do
  churn $(( CYCLES / PHASES )) "soak-$phase"
  READINGS="$READINGS $(rss_kib)"
  log "after soak phase $phase/$PHASES ($(( phase * CYCLES / PHASES )) cycles): RssAnon $(rss_kib) KiB (VmRSS $(vmrss_kib) KiB)"
done
python3 - "$CYCLES" "$SHORT" $READINGS <<'PY'
import sys
cycles, short, readings = int(sys.argv[1]), sys.argv[2] == "true", [int(x) for x in sys.argv[3:]]
base, end = readings[0], readings[-1]
ratio = end / base
verdict = "not judged in the short form" if short else "bound 1.10x"
print(f"soak: {cycles} connects and disconnects, RssAnon KiB after warm-up and each phase: "
      f"{' '.join(map(str, readings))}; {base} -> {end} ({ratio:.3f}x; {verdict})")
sys.exit(0 if short or ratio <= 1.10 else 1)
PY
