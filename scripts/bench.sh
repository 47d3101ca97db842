#!/usr/bin/env bash
# The benchmark suite of BENCHMARKS.md: builds the release binaries, runs the
# bench crate against the local PostgreSQL and Redis (started, or installed,
# when missing) and prints the machine and the results as markdown tables,
# also saved to target/bench/results.md. Extra arguments go to the bench
# program, e.g. `scripts/bench.sh --quick` for a tenth of the iterations, or
# `scripts/bench.sh --only concurrency` for one section (latency, offload,
# cold-start, memory, footprint, concurrency, hot-key, invalidation,
# guard-replicas, audit, traces).
#
#   BENCH_ARM64=0    skip `cargo lambda build --release --arm64` (the arm64 zips;
#                    skipped as well when `--only` names a section other than
#                    footprint or traces)
#
# The bench uses its own schema and key prefix, removed when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

ensure_postgres
ensure_redis
command -v zip >/dev/null || apt_install zip

export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:$PG_PORT/postgres}"
export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:$REDIS_PORT}"

out=target/bench
mkdir -p "$out"
functions=(-p create-user -p find-user -p list-users -p update-user -p delete-user)

# The functions get a cargo invocation of their own, so that the bench
# crate's extra features (hyper's server, tokio's process) never reach them.
log "release build of the five functions"
cargo build --release "${functions[@]}"
log "release build of the bench and its baseline binary"
cargo build --release -p users-api-bench

# Only the footprint and traces sections read the arm64 zips.
only=""
args=("$@")
for ((i = 0; i + 1 < ${#args[@]}; i++)); do
    [ "${args[i]}" = --only ] && only="${args[i + 1]}"
done
arm64=0
if [ "${BENCH_ARM64:-1}" != 0 ] && { [ -z "$only" ] || [ "$only" = footprint ] || [ "$only" = traces ]; }; then
    arm64=1
    if ! cargo lambda --version >/dev/null 2>&1; then
        log "installing cargo-lambda and zig (its arm64 linker) from PyPI"
        pip install --quiet cargo-lambda ziglang
    fi
fi

# The traces section compares find-user with the build without its `traces`
# feature: built here, then the default build is put back (cargo keeps both,
# so that is a copy, not a rebuild).
if [ -z "$only" ] || [ "$only" = traces ]; then
    without="$out/without-traces"
    mkdir -p "$without"
    log "release build of find-user without the traces feature"
    cargo build --release -p find-user --no-default-features
    cp target/release/find-user "$without/find-user"
    if [ "$arm64" = 1 ]; then
        rm -f target/lambda/find-user/bootstrap.zip "$without/bootstrap.zip"
        timeout 1800 cargo lambda build --release --arm64 --output-format zip -p find-user \
            --no-default-features </dev/null >"$out/arm64-without-traces.log" 2>&1 &&
            cp target/lambda/find-user/bootstrap.zip "$without/bootstrap.zip" ||
            log "the arm64 build without traces failed (log: $out/arm64-without-traces.log)"
    fi
    cargo build --release "${functions[@]}"
fi

bench_args=()
if [ "$arm64" = 1 ]; then
    log "cargo lambda build --release --arm64 --output-format zip (log: $out/arm64.log)"
    rm -f target/lambda/*/bootstrap.zip
    if timeout 1800 cargo lambda build --release --arm64 --output-format zip "${functions[@]}" \
        </dev/null >"$out/arm64.log" 2>&1; then
        bench_args+=(--arm64-dir target/lambda
            --arm64-note "zips built by \`cargo lambda build --release --arm64 --output-format zip\` ($(cargo lambda --version | head -1))")
    else
        reason="$(grep -m1 -E '^(error|Error)' "$out/arm64.log" || tail -1 "$out/arm64.log")"
        bench_args+=(--arm64-note "\`cargo lambda build --release --arm64\` failed here (${reason}); sizes are x86_64 only")
    fi
fi

{
    echo "### Machine"
    echo
    echo "| | |"
    echo "|---|---|"
    echo "| date (UTC) | $(date -u +%Y-%m-%dT%H:%MZ) |"
    echo "| CPU | $(lscpu | sed -n 's/^Model name: *//p' | head -1), nproc $(nproc) |"
    echo "| memory | $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) |"
    echo "| OS | $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r) |"
    echo "| toolchain | $(rustc -V), $(cargo lambda --version | head -1) |"
    echo "| load average before the run | $(cut -d' ' -f1-3 /proc/loadavg) |"
    echo "| code | $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- shared functions || echo ' + uncommitted changes in shared/ or functions/') |"
    echo "| command | \`scripts/bench.sh${*:+ $*}\` |"
    echo
} | tee "$out/results.md"

# The in-process handlers write their EMF metric lines to stdout, as they do
# on Lambda; they go to a file, and the report to a file of its own.
log "running the suite (handlers' stdout: $out/stdout.log)"
target/release/users-api-bench --out "$out/report.md" "${bench_args[@]}" "$@" >"$out/stdout.log"
tee -a "$out/results.md" <"$out/report.md"
