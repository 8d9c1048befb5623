#!/bin/bash
# Builds bulkhead's guest kernel from Debian's linux-source-6.1: `make tinyconfig`, the
# project's fragment (guest/kernel.config) merged over it, the patches in guest/patches/.
#
#   guest/build-kernel.sh               build unless cached; prints progress, then the path
#   guest/build-kernel.sh --print-path  print the cache directory for the current inputs
#                                       (exists only once built); builds nothing
#
# Output: $BULKHEAD_KERNEL_CACHE/<hash>/{vmlinux,bzImage,config} (default cache root
# /var/cache/bulkhead/kernel). <hash> covers everything that decides the result: the config
# fragment, the patches, the kernel source package's version and this script's commands
# (comments and blank lines excluded), so a changed input builds into a new directory and
# an unchanged one is never rebuilt. The source tree is kept beside it for incremental
# rebuilds after a config change. Concurrent runs serialise on a lock.
#
# Needs (scripts/deps.sh installs them): linux-source-6.1 build-essential flex bison bc
# libelf-dev cpio. About 10 minutes on 2 cores when cold.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tarball=/usr/src/linux-source-6.1.tar.xz
fragment=$here/kernel.config
patches=("$here"/patches/*.patch)
cache=${BULKHEAD_KERNEL_CACHE:-/var/cache/bulkhead/kernel}

step() { printf '[build-kernel %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { echo "build-kernel: $*" >&2; exit 1; }

srcver=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null) || srcver=""
[ -n "$srcver" ] && [ -f "$tarball" ] || die "$tarball not found: run scripts/deps.sh \
(apt-get install linux-source-6.1 build-essential flex bison bc libelf-dev cpio)"

key=$({
    echo "source $srcver"
    echo "config"; cat "$fragment"
    for p in "${patches[@]}"; do echo "patch $(basename "$p")"; cat "$p"; done
    echo "script"; sed -e '/^[[:space:]]*#/d' -e '/^[[:space:]]*$/d' "$0"
} | sha256sum | cut -c1-16)
out=$cache/$key

if [ "${1:-}" = "--print-path" ]; then
    echo "$out"
    exit 0
fi
[ $# -eq 0 ] || die "unknown argument $1 (usage: build-kernel.sh [--print-path])"

for tool in make gcc flex bison bc patch; do
    command -v "$tool" >/dev/null || die "$tool is missing: run scripts/deps.sh"
done

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ -f "$out/vmlinux" ]; then
    step "cached: $out"
    echo "$out"
    exit 0
fi
started=$(date +%s)

# The source tree depends only on the source version and the patches, so a config change
# rebuilds incrementally in the same tree.
srckey=$({ echo "$srcver"; cat "${patches[@]}"; } | sha256sum | cut -c1-16)
src=$cache/src-$srckey
if [ ! -f "$src/.bulkhead-prepared" ]; then
    rm -rf "$src"
    step "extracting $tarball ($srcver) into $src"
    mkdir -p "$src"
    tar -xf "$tarball" -C "$src" --strip-components=1
    for p in "${patches[@]}"; do
        step "applying $(basename "$p")"
        patch -s -p1 -d "$src" < "$p"
    done
    touch "$src/.bulkhead-prepared"
fi
# Trees of older inputs are dead weight (about 1.5 GiB each).
for old in "$cache"/src-*; do
    [ "$old" = "$src" ] || [ ! -d "$old" ] || { step "removing old tree $old"; rm -rf "$old"; }
done

step "configuring: tinyconfig + $(basename "$fragment")"
make -C "$src" -s tinyconfig >/dev/null
"$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "$fragment" >/dev/null 2>&1
make -C "$src" -s olddefconfig
# Every fragment line must survive olddefconfig: an option dropped for a missing dependency
# would otherwise show up much later as a guest that cannot find a device.
dropped=0
while IFS= read -r line; do
    case "$line" in
        CONFIG_*=n) name=${line%%=*}; grep -q "^$name=" "$src/.config" && bad=1 || bad=0 ;;
        CONFIG_*=*) grep -qxF "$line" "$src/.config" && bad=0 || bad=1 ;;
        *) continue ;;
    esac
    if [ "$bad" = 1 ]; then
        echo "build-kernel: $line did not survive olddefconfig" >&2
        dropped=$((dropped + 1))
    fi
done < "$fragment"
[ "$dropped" -eq 0 ] || die "$dropped fragment options were dropped: fix $fragment"

jobs=$(nproc)
log=$cache/build-$key.log
step "building vmlinux and bzImage with $jobs jobs (log: $log)"
n=0
make -C "$src" -j"$jobs" bzImage 2>&1 | tee "$log" | while IFS= read -r l; do
    case "$l" in
        *" CC "* | *" LD "* | *" AR "* | *" AS "*)
            n=$((n + 1))
            [ $((n % 250)) -ne 0 ] || step "$n objects"
            ;;
        *rror* | *arning:*) echo "$l" >&2 ;;
    esac
done || die "make failed; see $log"

tmp=$(mktemp -d "$cache/.tmp-$key.XXXXXX")
chmod 755 "$tmp"
cp "$src/vmlinux" "$tmp/vmlinux"
cp "$src/arch/x86/boot/bzImage" "$tmp/bzImage"
cp "$src/.config" "$tmp/config"
rm -rf "$out"
mv "$tmp" "$out"
rm -f "$log"
step "done in $(($(date +%s) - started)) s: $out/vmlinux ($(stat -c %s "$out/vmlinux") bytes), \
$out/bzImage ($(stat -c %s "$out/bzImage") bytes)"
echo "$out"
