#!/bin/sh
# Packs an uncompressed initramfs (newc cpio) for the Linux guest kernel:
#
#   guest/build-initramfs.sh OUT.cpio INIT
#
# It holds /bin/busybox (Debian's busybox-static, or $BUSYBOX), /init (the script INIT),
# empty /proc, /sys and /dev, and /dev/console (char 5:1): the kernel opens it for init's
# stdin/stdout before anything mounts devtmpfs, so without it init's output is lost.
# Uncompressed because the guest kernel accepts nothing else (decompression costs seconds
# on a software-emulating KVM). Needs root (mknod) and cpio.
set -eu
[ $# -eq 2 ] || { echo "usage: build-initramfs.sh OUT.cpio INIT" >&2; exit 1; }
out=$1
init=$2
busybox=${BUSYBOX:-/bin/busybox}
[ -f "$busybox" ] || { echo "build-initramfs: $busybox missing: install busybox-static" >&2; exit 1; }
[ -f "$init" ] || { echo "build-initramfs: init script $init not found" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/bin" "$tmp/dev" "$tmp/proc" "$tmp/sys"
cp "$busybox" "$tmp/bin/busybox"
cp "$init" "$tmp/init"
chmod 755 "$tmp/init" "$tmp/bin/busybox"
mknod -m 600 "$tmp/dev/console" c 5 1
(cd "$tmp" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$out"
