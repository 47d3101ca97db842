#!/usr/bin/env bash
# Fuzzes request parsing (fuzz/fuzz_targets/request_parsing.rs) with cargo-fuzz
# and AddressSanitizer for SECONDS (default 60). Not part of CI: a local,
# time-boxed search for panics. The corpus (fuzz/corpus/request_parsing,
# git-ignored) is seeded from events/*.json and grows across runs; a crash
# leaves its input in fuzz/artifacts/request_parsing/, which replays with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run request_parsing <file>`.
#
#   scripts/fuzz.sh [SECONDS] [more libFuzzer flags, e.g. -jobs=2]
#   FUZZ_SANITIZER=none scripts/fuzz.sh   # plain stable, about twice as fast
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${1:-60}"
shift || true

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

corpus=fuzz/corpus/request_parsing
mkdir -p "$corpus"
cp events/*.json "$corpus/"

# cargo-fuzz asks rustc for the sanitizer with -Zsanitizer=address, a nightly
# flag; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept it (the sanitizer
# runtime ships with stable's rust-std). Without a sanitizer cargo-fuzz passes
# only stable flags and needs no bootstrap.
sanitizer="${FUZZ_SANITIZER:-address}"
if [ "$sanitizer" != none ]; then
    export RUSTC_BOOTSTRAP=1
fi

log "fuzzing request_parsing for ${duration}s (sanitizer: $sanitizer)"
exec cargo fuzz run --sanitizer "$sanitizer" request_parsing "$corpus" -- \
    -max_total_time="$duration" \
    -max_len=8192 \
    -dict=fuzz/request_parsing.dict \
    -print_final_stats=1 \
    "$@"
