#!/bin/sh
# The whole test suite: unit tests, end-to-end tests (as root: they create
# real containers and VMs), formatting and lints.
set -eu
cd "$(dirname "$0")"
./scripts/deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# The Linux guest kernel the VM tests boot: built once (about 10 minutes on 2 cores), then
# taken from its cache under /var/cache/bulkhead/kernel.
guest/build-kernel.sh >/dev/null
# The VM-backed container tests put a static bulkhead in the guest as its /init
# (tests/vm_containers.rs).
./scripts/build.sh
cargo test --workspace
# The tests above run the debug build (glibc, dynamic). The binary users install is the static
# musl one: the host-side container tests, engines included, run once more against it.
BULKHEAD_BIN="$PWD/target/x86_64-unknown-linux-musl/release/bulkhead" cargo test \
    --test bad_input --test cgroups --test cli --test conformance --test crash --test cycles \
    --test engines --test exec --test hooks --test inspect --test lifecycle --test namespaces \
    --test probe --test process --test rootfs --test rootless --test sandbox --test seccomp
