#!/bin/sh
# Builds bulkhead's guest kernel from Debian's linux-source-6.1 with the project's config
# fragment (guest/kernel.config) merged over `make tinyconfig`.
#
#   guest/build-kernel.sh [OUTDIR]        (default: guest/out/linux)
#
# Produces OUTDIR/bzImage and OUTDIR/vmlinux (ELF with a PVH note). A kernel built from the
# same fragment is reused (the test suite's Linux boot test looks at guest/out/linux/bzImage).
# Needs: apt-get install linux-source-6.1 build-essential flex bison bc libelf-dev
# About 10 minutes on 2 cores.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/out/linux}
tarball=/usr/src/linux-source-6.1.tar.xz
fragment=$here/kernel.config
jobs=$(nproc)

step() { printf '[build-kernel %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if [ ! -f "$tarball" ]; then
    echo "build-kernel: $tarball not found." >&2
    echo "  apt-get install linux-source-6.1 build-essential flex bison bc libelf-dev" >&2
    exit 1
fi
for tool in make gcc flex bison bc; do
    command -v "$tool" >/dev/null || { echo "build-kernel: $tool is missing" >&2; exit 1; }
done

mkdir -p "$out"
stamp=$out/.fragment
if [ -f "$out/bzImage" ] && [ -f "$stamp" ] && cmp -s "$fragment" "$stamp"; then
    step "cached kernel $out/bzImage is up to date with $fragment"
    exit 0
fi

src=$out/src
if [ ! -f "$src/Makefile" ]; then
    step "extracting $tarball"
    mkdir -p "$src"
    tar -xf "$tarball" -C "$src" --strip-components=1
fi

step "configuring: tinyconfig + $fragment"
make -C "$src" -s tinyconfig
"$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "$fragment" >/dev/null
make -C "$src" -s olddefconfig
# Report fragment options the kernel dropped (missing dependencies), so a silent
# misconfiguration does not show up later as a guest that cannot find its devices.
missing=0
while IFS= read -r line; do
    case "$line" in CONFIG_*=y) ;; *) continue ;; esac
    if ! grep -qx "$line" "$src/.config"; then
        echo "build-kernel: warning: $line did not survive olddefconfig" >&2
        missing=$((missing + 1))
    fi
done < "$fragment"
step "configured ($missing fragment options dropped)"

step "building bzImage and vmlinux with $jobs jobs (progress below)"
rm -f "$src/arch/x86/boot/bzImage"
make -C "$src" -j"$jobs" bzImage vmlinux 2>&1 | while IFS= read -r l; do
    case "$l" in *" CC "*|*" LD "*|*" AR "*) n=$((${n:-0} + 1)); [ $((n % 200)) -eq 0 ] && step "$n objects";; esac
    case "$l" in *rror*|*arning:*) echo "$l";; esac
done
[ -f "$src/arch/x86/boot/bzImage" ] || { echo "build-kernel: build failed" >&2; exit 1; }

cp "$src/arch/x86/boot/bzImage" "$out/bzImage"
cp "$src/vmlinux" "$out/vmlinux"
cp "$fragment" "$stamp"
step "done: $out/bzImage ($(wc -c < "$out/bzImage") bytes), $out/vmlinux"
