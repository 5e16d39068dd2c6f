#!/usr/bin/env bash
# Soak with connection churn (docs/reliability.md): one node takes CYCLES connects,
# joins and disconnects (half with a clean close, half by dropping the TCP connection)
# beside a little steady traffic; its memory once the churn is over must be back within
# 10 % of what it was after a warm-up of the same churn (the allocator's working set),
# and presence must end exactly right (the churn scenario checks that).
#
# Memory is the anonymous part of the RSS (RssAnon: heap and stacks). VmRSS also counts
# the pages of the executable the process has touched so far, which grow as code runs
# for the first time (tens of MiB for a debug build) and say nothing about leaks; both
# are printed.
#
# Usage: loadtest/soak.sh [--short]   (--short: the CI form, 10,000 cycles)
# Binaries: $TEAMHUB_BIN and $LOADTEST_BIN (default target/debug/...).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BIN=${TEAMHUB_BIN:-$TARGET/debug/teamhub}
LOADTEST=${LOADTEST_BIN:-$TARGET/debug/teamhub-loadtest}
if [ "${1:-}" = "--short" ]; then CYCLES=${CYCLES:-10000}; else CYCLES=${CYCLES:-100000}; fi
RATE=${RATE:-500}            # connects per second
WARMUP=${WARMUP:-10000}     # the allocator reaches its working set in about this many
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
  --rate-limit 0 >"$WORK/node.log" 2>&1 &
NODE=$!
for _ in $(seq 1 150); do curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

churn() { # churn CYCLES LABEL
  local secs=$(( $1 / RATE )); [ "$secs" -lt 1 ] && secs=1
  "$LOADTEST" churn --url "ws://127.0.0.1:$PORT/ws" --jwt-secret "$SECRET" --quiet \
    --sockets 10 --teams 2 --rate 10 --duration "${secs}s" --drain 2s \
    --churn-rate "$RATE" --churn-lifetime 100ms --settle 10s \
    --source-addrs 127.0.0.1-127.0.0.8 --json "$WORK/$2.json" >"$WORK/$2.out" 2>&1 \
    || { cat "$WORK/$2.out"; echo "FATAL: the $2 churn run failed" >&2; exit 1; }
  python3 - "$WORK/$2.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
churn = [c for c in r["checks"] if "churn" in c["name"] or "presence" in c["name"]]
for c in churn:
    print(f"  check {c['name']}: {'ok' if c['ok'] else 'FAILED'} {c['detail']}")
PY
}

log "warm-up: $WARMUP cycles at $RATE/s"
churn "$WARMUP" warmup
BASE=$(rss_kib)
log "after the warm-up: RssAnon $BASE KiB (VmRSS $(vmrss_kib) KiB)"
log "soak: $CYCLES cycles at $RATE/s"
churn "$CYCLES" soak
END=$(rss_kib)
log "after the soak: RssAnon $END KiB (VmRSS $(vmrss_kib) KiB)"
python3 - "$BASE" "$END" "$CYCLES" <<'PY'
import sys
base, end, cycles = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ratio = end / base
print(f"soak: {cycles} connects and disconnects planned, RssAnon {base} KiB -> {end} KiB ({ratio:.3f}x; bound 1.10x)")
sys.exit(0 if ratio <= 1.10 else 1)
PY
