#!/usr/bin/env bash
# Many environments under load (docs/sizing.md, BENCHMARKS.md): builds the
# release functions and the bench, then runs `users-api-bench load` against
# the local PostgreSQL (a database `users_api_load` of its own, a schema per
# run) and a redis-server of its own on a free loopback port, and prints the
# report, also saved to target/load/report.md. Extra arguments go to the
# driver, e.g.
#
#   scripts/load.sh                    # 32 find-user environments, 1000/s, 60 s
#   scripts/load.sh --smoke            # seconds, for CI
#   scripts/load.sh --saturate --duration 0 --costs 0   # find the knee
#   scripts/load.sh --slots 8 --find-envs 4             # LMI-style environments
#   scripts/load.sh --help
#
# Progress goes to stderr. The run stops by itself (and on Ctrl-C), and
# removes its schema and stops its Redis server when it ends.
#
#   LOAD_PROFILE   release (default) or dev; `--smoke` defaults to dev: it
#                  checks the driver and the guarantee, not speed, and a dev
#                  build takes seconds where the release build takes minutes
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

ensure_postgres
ensure_redis

export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:$PG_PORT/postgres}"

out=target/load
mkdir -p "$out"

profile="${LOAD_PROFILE:-}"
if [ -z "$profile" ]; then
    profile=release
    for arg in "$@"; do [ "$arg" = --smoke ] && profile=dev; done
fi
case "$profile" in
    release) build=(--release) bin=target/release ;;
    dev) build=() bin=target/debug ;;
    *) log "LOAD_PROFILE is release or dev, not $profile"; exit 2 ;;
esac

# The functions get a cargo invocation of their own, so that the bench
# crate's features (the library's test hooks among them) never reach them.
log "$profile build of the six functions"
cargo build "${build[@]}" -p create-user -p find-user -p list-users -p update-user -p delete-user -p invalidate-cache
log "$profile build of the load driver (users-api-bench)"
cargo build "${build[@]}" -p users-api-bench

{
    echo "| | |"
    echo "|---|---|"
    echo "| date (UTC) | $(date -u +%Y-%m-%dT%H:%MZ) |"
    echo "| CPU | $(lscpu | sed -n 's/^Model name: *//p' | head -1), nproc $(nproc) |"
    echo "| PostgreSQL / Redis | $(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atc 'SHOW server_version' 2>/dev/null || echo '?') / $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') |"
    echo "| load average before the run | $(cut -d' ' -f1-3 /proc/loadavg) |"
    echo "| code | $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- shared functions bench 2>/dev/null || echo ' + uncommitted changes'), $profile build |"
    echo
} >"$out/machine.md"

log "running the load (report: $out/report.md)"
"$bin/users-api-bench" load --bin-dir "$bin" --out "$out/report.md" "$@"
echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/machine.md"
cat "$out/machine.md" "$out/report.md"
