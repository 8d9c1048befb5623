#!/bin/sh
# The whole test suite: unit tests, end-to-end tests (as root: they create
# real containers and VMs), formatting and lints.
set -eu
cd "$(dirname "$0")"
./scripts/deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
