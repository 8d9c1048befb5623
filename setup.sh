#!/bin/sh
# One command on a fresh machine: install dependencies, build bulkhead, and
# run a command in a sandbox (no bundle or image needed).
set -eu
cd "$(dirname "$0")"
./scripts/deps.sh
./scripts/build.sh
./scripts/demo.sh
