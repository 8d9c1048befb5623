#!/bin/sh
# One command on a fresh machine: install dependencies, build bulkhead, and
# run a container from a built-in busybox bundle.
set -eu
cd "$(dirname "$0")"
./scripts/deps.sh
cargo build --release
./scripts/demo.sh
