#!/bin/sh
# Release build of bulkhead (and the benchmark harness), statically linked:
# a static binary starts ~0.3 ms faster than a dynamically linked one (no
# loader, no relocations of libc), and every container start runs the
# runtime three times (create, start, delete).
# Two link options keep the pages each command maps few (its RSS):
# - scripts/text-layout.ld groups container-only and VM-only code apart;
# - packed relative relocations (DT_RELR, glibc >= 2.36): a static PIE relocates
#   itself at start, and reading 160 KiB of RELA entries mapped three 64 KiB
#   windows of the file in every command; RELR encodes the same in 2 KiB.
# With --target, RUSTFLAGS reaches only the target artifacts, not the
# proc-macros the build itself runs.
set -eu
cd "$(dirname "$0")/.."
RUSTFLAGS="-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs -C link-arg=-Wl,-T,$PWD/scripts/text-layout.ld" \
    cargo build --release \
    --target x86_64-unknown-linux-gnu -p bulkhead -p bench "$@"
echo "built target/x86_64-unknown-linux-gnu/release/bulkhead" >&2
