#!/usr/bin/env bash
# Fuzzes the REST API against its own OpenAPI document: builds the hub, starts a node on
# a loopback port with a known secret and a fresh SQLite database, mints an owner token
# for the documented example team, and runs schemathesis (pinned, installed into a venv
# under ~/.cache) against /api/v1/openapi.json with a bounded number of examples per
# operation, with every check but positive_data_acceptance (a schema-valid team id the
# token has no role in is rightly a 403). Fails on any 5xx, undocumented status, content
# type or header, a response that does not match its schema, invalid input accepted,
# or a request without the token answered. Installs what it needs; fails when it cannot.
set -euo pipefail
cd "$(dirname "$0")/../.."

SCHEMATHESIS_VERSION=4.32.5
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/teamhub-checks/schemathesis-venv-$SCHEMATHESIS_VERSION"
EXAMPLES="${OPENAPI_FUZZ_EXAMPLES:-100}"
SEED="${OPENAPI_FUZZ_SEED:-20261201}"

if [ ! -x "$VENV/bin/st" ]; then
  echo "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build --quiet --locked -p teamhub --bin teamhub
BIN="$PWD/target/debug/teamhub"

WORK="$(mktemp -d)"
NODE_PID=""
cleanup() {
  if [ -n "$NODE_PID" ]; then kill "$NODE_PID" 2>/dev/null || true; wait "$NODE_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

SECRET="openapi-fuzz-secret-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
# A free loopback port, chosen by the kernel.
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"

"$BIN" serve --listen "127.0.0.1:$PORT" --jwt-secret "$SECRET" \
  --database-url "sqlite://$WORK/hub.db" --activity-spill-path "$WORK/hub.spill" \
  --rate-limit 0 --api-rate-limit 0 --log-format text >"$WORK/node.log" 2>&1 &
NODE_PID=$!
for _ in $(seq 1 100); do
  if curl -fsS "$BASE/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$NODE_PID" 2>/dev/null; then cat "$WORK/node.log" >&2; echo "FATAL: the node exited" >&2; exit 1; fi
  sleep 0.1
done
curl -fsS "$BASE/readyz" >/dev/null || { cat "$WORK/node.log" >&2; echo "FATAL: node not ready" >&2; exit 1; }

# The documented example team is "design"; the token is its owner (every operation allowed).
TOKEN="$(TEAMHUB_JWT_SECRET="$SECRET" "$BIN" token --user fuzzer --team design=owner --ttl 1h)"
# Some rows for the activity pages and exports.
for i in 1 2 3; do
  curl -fsS -X POST "$BASE/api/v1/teams/design/messages" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' \
    -d "{\"type\":\"doc.edit\",\"data\":{\"resource_type\":\"doc\",\"resource_id\":\"d$i\"}}" >/dev/null
done

status=0
# From the temporary directory, so schemathesis' own cache stays out of the tree.
(cd "$WORK" && "$VENV/bin/st" run "$BASE/api/v1/openapi.json" \
  --header "Authorization: Bearer $TOKEN" \
  --checks all --exclude-checks positive_data_acceptance \
  --phases examples,coverage,fuzzing \
  --max-examples "$EXAMPLES" --seed "$SEED" --workers 1 --request-timeout 10 \
  --no-color) || status=$?

if grep -q 'panicked' "$WORK/node.log"; then
  echo "FATAL: the node panicked during the run:" >&2
  grep -n -A5 'panicked' "$WORK/node.log" >&2
  status=1
fi
exit "$status"
