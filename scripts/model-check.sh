#!/usr/bin/env bash
# The cache protocol model-checked (docs/testing.md, "The model checker"):
# every interleaving of two finds, two writes and one key, in each scenario,
# with the finds deciding through the production code; then the real single
# flight under shuttle's scheduler.
#
#   scripts/model-check.sh                 exit 0 when every property holds
#   scripts/model-check.sh --broken NAME   a broken variant: exit 1 and its
#                                          counterexample as a trace
# An unknown NAME exits 2.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet -p users-api-model
status=0
target/debug/model-check "$@" || status=$?
if [ "$#" -gt 0 ] || [ "$status" -ne 0 ]; then
    exit "$status"
fi

# The real flight.rs under shuttle (docs/testing.md, "Single flight under
# shuttle"), in a target directory of its own: --cfg shuttle changes the
# library's build.
echo "single flight under shuttle:"
RUSTFLAGS="--cfg shuttle" CARGO_TARGET_DIR=target/shuttle \
    cargo test --quiet -p users-api --lib service::flight
