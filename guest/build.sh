#!/bin/sh
# Builds the bulkhead test guest into OUTDIR (default: guest/out):
#   guest.elf      ELF with a 64-bit e_entry and a PVH note (boots in bulkhead with either
#                  protocol, and under qemu-system-x86_64 -M microvm -kernel guest.elf)
#   guest.bzImage  the same code behind a Linux boot-protocol setup header
# Needs only the machine's gcc and binutils.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/out}
mkdir -p "$out"
CC=${CC:-gcc}
CFLAGS="-O2 -ffreestanding -nostdlib -nostdinc -fno-pic -fno-pie -no-pie -mno-red-zone \
 -mgeneral-regs-only -mcmodel=small -fno-stack-protector -fno-asynchronous-unwind-tables \
 -fno-builtin -fcf-protection=none -Wall -Wextra -Werror -static"
$CC $CFLAGS -c "$here/start.S" -o "$out/start.o"
$CC $CFLAGS -c "$here/guest.c" -o "$out/guest.o"
$CC $CFLAGS -Wl,-T,"$here/guest.ld" -Wl,--build-id=none -Wl,-z,noexecstack -Wl,--no-warn-rwx-segments \
    -o "$out/guest.elf" "$out/start.o" "$out/guest.o"
objcopy -O binary "$out/guest.elf" "$out/guest.bin"
$CC -c "$here/bzimage-header.S" -o "$out/bzimage-header.o"
objcopy -O binary -j .text "$out/bzimage-header.o" "$out/bzimage-header.bin"
cat "$out/bzimage-header.bin" "$out/guest.bin" > "$out/guest.bzImage"
echo "built $out/guest.elf and $out/guest.bzImage"
