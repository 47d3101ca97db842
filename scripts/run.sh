#!/usr/bin/env bash
# Serves the API locally on http://localhost:9000 with `cargo lambda watch`:
# installs and starts what is missing (PostgreSQL, Redis, cargo-lambda), creates
# the database `users_api`, applies the migrations, then watches and rebuilds,
# with the invalidate-cache consumer running beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

ensure_postgres
ensure_redis
if ! cargo lambda --version >/dev/null 2>&1; then
    log "installing cargo-lambda from PyPI"
    pip install --quiet cargo-lambda
fi

DB_NAME="${DB_NAME:-users_api}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:$PG_PORT/$DB_NAME}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:$REDIS_PORT}"

if ! psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1; then
    log "creating database $DB_NAME"
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE $DB_NAME"
fi
log "applying migrations"
cargo run --quiet -p users-api --bin migrate

port="${PORT:-9000}"

# The consumer of the change records (docs/cache.md, "Writers outside the
# API"), so that a change made in psql reaches the cache as it would deployed:
# there a schedule starts it every minute; here a loop invokes it through the
# watcher again whenever a run ends. The watcher gives no real deadline, so
# each run lasts 10 s (shared/src/runtime/scheduled.rs); an invocation lost
# when the watcher restarts the function after an edit is given up after 30 s.
consume() {
    for _ in $(seq 1200); do
        curl -s -o /dev/null "http://127.0.0.1:$port/" && break
        sleep 0.5
    done
    while :; do
        timeout 30 cargo lambda invoke invalidate-cache --invoke-address 127.0.0.1 \
            --invoke-port "$port" --data-file events/invalidate-cache.schedule.json \
            >/dev/null 2>&1 || sleep 1
    done
}
consume &
consumer=$!
trap 'pkill -P "$consumer" 2>/dev/null; kill "$consumer" 2>/dev/null' EXIT

log "serving on http://localhost:$port (Ctrl-C to stop)"
# No API Gateway here, so no authorizer: AUTH_LOCAL_HEADERS=true lets a request
# name its caller in `x-local-sub` and `x-local-scopes` headers (the README's
# curl lines do; each function logs a warning at init). Local only: the
# template never sets it (docs/access-control.md). AUTH_LOCAL_HEADERS=false
# scripts/run.sh serves as deployed: every request is then 401.
cargo lambda watch --invoke-port "$port" \
    --env-var "DATABASE_URL=$DATABASE_URL" \
    --env-var "REDIS_URL=$REDIS_URL" \
    --env-var "CACHE_KEY_PREFIX=${CACHE_KEY_PREFIX:-users-api-local}" \
    --env-var "AUTH_LOCAL_HEADERS=${AUTH_LOCAL_HEADERS:-true}" \
    ${WATCH_ARGS:-}
