#!/bin/sh
# Build everything in release mode and run the side-by-side benchmarks.
# Extra arguments go to the harness: --rounds N --burst N --vm-rounds N --linux-rounds N
# --only LIST
set -eu
cd "$(dirname "$0")/.."
./scripts/deps.sh
./scripts/build.sh
exec ./target/x86_64-unknown-linux-musl/release/bench "$@"
