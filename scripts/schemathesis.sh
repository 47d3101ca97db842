#!/usr/bin/env bash
# Fuzzes the API with Schemathesis, a client nobody here wrote, from
# openapi.yaml: serves the API with the README's run command (cargo lambda
# watch and its router), sends bounded generated requests, checks every answer
# (no 5xx, documented status codes, content types, headers and response
# schemas), then stops the server. Not part of CI: it takes a few minutes.
#
# Credentials: there is no API Gateway (so no JWT authorizer) locally, so the
# functions run with AUTH_LOCAL_HEADERS=true (scripts/run.sh) and every request
# names its caller in headers: `x-local-sub` and `x-local-scopes` with all
# three scopes, from schemathesis.toml's `headers` for Schemathesis, from
# $AUTH below for the warm-up.
#
#   scripts/schemathesis.sh [max examples per operation, default 100]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

EXAMPLES="${1:-100}"
PORT="${PORT:-9010}"
command -v st >/dev/null 2>&1 || pip install --quiet schemathesis

# A database of its own, dropped at the end, so the fuzzing leaves nothing behind.
DB_NAME="users_api_schemathesis"
# --ignore-changes: an edit elsewhere in the tree must not restart the functions mid-run.
export DB_NAME PORT CACHE_KEY_PREFIX="users-api-schemathesis" WATCH_ARGS="--ignore-changes"
export AUTH_LOCAL_HEADERS=true
# The caller of the warm-up requests: the same as schemathesis.toml's `headers`.
AUTH=(-H "x-local-sub: schemathesis" -H "x-local-scopes: users/read users/write users/admin")
log "serving on port $PORT"
setsid scripts/run.sh >/tmp/users-api-schemathesis.log 2>&1 &
SERVER=$!
cleanup() {
    kill -- -"$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "DROP DATABASE IF EXISTS $DB_NAME" || true
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" --scan --pattern "$CACHE_KEY_PREFIX:*" |
        xargs -r redis-cli -h 127.0.0.1 -p "$REDIS_PORT" del >/dev/null || true
}
trap cleanup EXIT

# The first call to each function builds and starts it; wait for all five.
for attempt in $(seq 600); do
    if curl -fs -o /dev/null "${AUTH[@]}" "http://127.0.0.1:$PORT/users?limit=1"; then break; fi
    [ "$attempt" = 600 ] && { log "the API did not come up"; tail -20 /tmp/users-api-schemathesis.log; exit 1; }
    sleep 1
done
id=$(curl -fs "${AUTH[@]}" -X POST "http://127.0.0.1:$PORT/users" -H 'content-type: application/json' \
    -d '{"email":"warm-up@example.com","name":"Warm Up"}' | sed -E 's/.*"id":"([^"]+)".*/\1/')
curl -fs -o /dev/null "${AUTH[@]}" "http://127.0.0.1:$PORT/users/$id"
curl -fs -o /dev/null "${AUTH[@]}" -X PUT "http://127.0.0.1:$PORT/users/$id" -H 'content-type: application/json' \
    -d '{"email":"warm-up@example.com","name":"Warm"}'
curl -fs -o /dev/null "${AUTH[@]}" -X DELETE "http://127.0.0.1:$PORT/users/$id"

log "running schemathesis ($EXAMPLES examples per operation)"
# --exclude-checks unsupported_method: undeclared methods (TRACE /users) never
# reach a function; API Gateway answers them (404 on an HTTP API), as the
# local router does. That is the gateway's contract, not the functions'.
# --exclude-checks ignored_auth: the same for the token. API Gateway's JWT
# authorizer refuses a request without a valid one before any function runs;
# locally the caller comes from the x-local-* headers, which the schema does
# not declare (Schemathesis 4.32 does not probe oauth2 schemes; later versions
# might). The functions' own 401 and 403 are in the Rust tests.
export PYTHONPATH="$PWD/scripts" SCHEMATHESIS_HOOKS=schemathesis_hooks
timeout 900 st run openapi.yaml \
    --url "http://127.0.0.1:$PORT" \
    --checks all \
    --exclude-checks unsupported_method,ignored_auth \
    --max-examples "$EXAMPLES" \
    --request-timeout 10 \
    --seed 20261126 \
    --workers 1 \
    --generation-codec utf-8
