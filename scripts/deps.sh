#!/bin/sh
# Install what bulkhead's build, tests and benchmarks need (Debian 12).
# Idempotent: packages already present are not reinstalled.
set -eu
PKGS="busybox-static gcc libc6-dev binutils iproute2 util-linux libseccomp-dev crun runc podman containerd qemu-system-x86 strace"
# The guest kernel (guest/build-kernel.sh): Debian's kernel source and what building it needs.
PKGS="$PKGS linux-source-6.1 build-essential flex bison bc libelf-dev cpio patch xz-utils"
# VM-backed containers: mkfs.ext4 -d makes their disks (cpio, above, their guest images).
PKGS="$PKGS e2fsprogs"
# Rootless tests (tests/rootless.rs, rootless podman in tests/engines.rs) make a user
# (passwd: useradd) whose multi-id maps go through newuidmap/newgidmap (uidmap); rootless
# podman also wants slirp4netns, fuse-overlayfs and catatonit; bench/ compares the
# unprivileged sandbox with bubblewrap.
PKGS="$PKGS passwd uidmap slirp4netns fuse-overlayfs catatonit bubblewrap"
missing=""
for p in $PKGS; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup)" >&2; exit 1; }
# The release binary links musl statically (scripts/build.sh says why): Rust's musl target
# brings its own libc, so no Debian package is needed, only the target's standard library.
if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    echo "installing the Rust target x86_64-unknown-linux-musl" >&2
    rustup target add x86_64-unknown-linux-musl
fi
