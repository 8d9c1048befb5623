/*
 * The real-mode part of a bzImage, reduced to the setup header the Linux boot protocol
 * (Documentation/x86/boot.rst) defines. The VMM reads it exactly as it reads a Linux
 * bzImage's: "HdrS" at 0x202, protocol 2.15, LOADED_HIGH, XLF_KERNEL_64, code32_start.
 * setup_sects = 1, so the protected-mode code (guest.bin) starts at file offset 1024.
 */
	.code16
	.section .text
	.globl _start
_start:
	.org 0x1f1
setup_sects:		.byte 1
root_flags:		.word 0
syssize:		.long 0
ram_size:		.word 0
vid_mode:		.word 0xffff
root_dev:		.word 0
boot_flag:		.word 0xaa55
	.org 0x200
jump:			.byte 0xeb, 0x66
header:			.ascii "HdrS"
version:		.word 0x020f
realmode_swtch:		.long 0
start_sys_seg:		.word 0
kernel_version:		.word 0
type_of_loader:		.byte 0
loadflags:		.byte 0x01           /* LOADED_HIGH */
setup_move_size:	.word 0
code32_start:		.long 0x100000
ramdisk_image:		.long 0
ramdisk_size:		.long 0
bootsect_kludge:	.long 0
heap_end_ptr:		.word 0
ext_loader_ver:		.byte 0
ext_loader_type:	.byte 0
cmd_line_ptr:		.long 0
initrd_addr_max:	.long 0x7fffffff
kernel_alignment:	.long 0x200000
relocatable_kernel:	.byte 0
min_alignment:		.byte 21
xloadflags:		.word 0x0001         /* XLF_KERNEL_64 */
cmdline_size:		.long 2047
hardware_subarch:	.long 0
hardware_subarch_data:	.quad 0
payload_offset:		.long 0
payload_length:		.long 0
setup_data:		.quad 0
pref_address:		.quad 0x100000
init_size:		.long 0x200000
handover_offset:	.long 0
kernel_info_offset:	.long 0
	.org 0x400
