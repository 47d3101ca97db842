#!/usr/bin/env bash
# The whole test suite: unit tests, and the event fixtures through the real
# handlers against real Postgres and Redis (started here when not running).
# Extra arguments go to the test runner, e.g. `scripts/test.sh api`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

ensure_postgres
ensure_redis
# tests/it/template.rs lints template.yaml with cfn-lint (required when CI is set).
ensure_cfn_lint

export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:$PG_PORT/postgres}"
export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:$REDIS_PORT}"

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast -- "$@"
fi
