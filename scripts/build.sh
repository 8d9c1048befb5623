#!/bin/sh
# Release build of bulkhead (and the benchmark harness), statically linked
# against musl:
# - a static binary starts ~0.3 ms faster than a dynamically linked one (no
#   loader, no relocations of libc), and every container start runs the
#   runtime three times (create, start, delete);
# - musl rather than static glibc: glibc's start-up probes the CPU with some
#   70 CPUID instructions (its cache-size and feature tables), and in a VM
#   every CPUID exits to the hypervisor (3.6 us each on these machines). The
#   musl build (with dlmalloc as its allocator, src/main.rs says why) starts
#   ~0.25 ms faster per command, and its max RSS is 0.6-0.8 MiB lower
#   (README, Benchmarks).
# Two link options keep the pages each command maps few (its RSS):
# - scripts/text-layout.ld groups container-only and VM-only code apart;
# - packed relative relocations (DT_RELR, musl >= 1.2.4): a static PIE
#   relocates itself at start, and reading 160 KiB of RELA entries mapped
#   three 64 KiB windows of the file in every command; RELR encodes the same
#   in 2 KiB.
# With --target, RUSTFLAGS reaches only the target artifacts, not the
# proc-macros the build itself runs.
set -eu
cd "$(dirname "$0")/.."
RUSTFLAGS="-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs -C link-arg=-Wl,-T,$PWD/scripts/text-layout.ld" \
    cargo build --release \
    --target x86_64-unknown-linux-musl -p bulkhead -p bench "$@"
echo "built target/x86_64-unknown-linux-musl/release/bulkhead" >&2
