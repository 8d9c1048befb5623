#!/bin/sh
# One command on a fresh machine: install dependencies, build bulkhead and
# its VM guest image, and run the default job: a command in a sandbox (no
# bundle or image needed), then the same in a micro-VM.
set -eu
cd "$(dirname "$0")"
./scripts/deps.sh
./scripts/build.sh
# The guest kernel of VM mode (about 10 minutes on 2 cores the first time,
# then cached under /var/cache/bulkhead/kernel), and the guest image whose
# /init is the static bulkhead just built (cached under /var/cache/bulkhead/vm).
guest/build-kernel.sh
target/x86_64-unknown-linux-musl/release/bulkhead vm image build
./scripts/demo.sh
