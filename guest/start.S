/*
 * Entry points of the bulkhead test guest.
 *
 *   0x100000  start32: PVH entry (32-bit protected mode, paging off, %ebx = hvm_start_info).
 *             Builds identity page tables, enables long mode, continues in 64-bit code.
 *   0x100200  start64: Linux 64-bit boot protocol entry (long mode, paging on, %rsi = zero
 *             page). This is the ELF e_entry, and for the bzImage build it is the documented
 *             "64-bit entry = load address + 0x200".
 *
 * Both end in guest_main(info, mode) on the guest's own stack. Only general-purpose
 * registers are used; no FPU/SSE state, no int3.
 */
#define BOOT_MODE_LINUX64 0
#define BOOT_MODE_PVH     1

	.section .note.Xen, "a", @note
	.balign 4
	.long 4                 /* namesz: "Xen\0" */
	.long 4                 /* descsz */
	.long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.long start32
	.balign 4

	.section .text.start32, "ax"
	.code32
	.globl start32
start32:
	cli
	movl %ebx, %esi                     /* keep hvm_start_info */
	movl $pvh_stack_top, %esp

	/* Zero .bss: the page tables and stack live there. %esi is preserved. */
	movl $__bss_start, %edi
	movl $__bss_end, %ecx
	subl %edi, %ecx
	xorl %eax, %eax
	rep stosb

	/* PML4[0] -> PDPT, PDPT[0..3] -> 4 PDs, PD entry i = i * 2 MiB | PS | RW | P:
	 * a 4 GiB identity map, so the MMIO hole (virtio-mmio) is reachable too. */
	movl $pvh_pdpt, %eax
	orl $3, %eax
	movl %eax, pvh_pml4
	xorl %ecx, %ecx
1:	movl %ecx, %eax
	shll $12, %eax
	addl $pvh_pd, %eax
	orl $3, %eax
	movl %eax, pvh_pdpt(,%ecx,8)
	incl %ecx
	cmpl $4, %ecx
	jne 1b
	xorl %ecx, %ecx
2:	movl %ecx, %eax
	shll $21, %eax
	orl $0x83, %eax
	movl %eax, pvh_pd(,%ecx,8)
	incl %ecx
	cmpl $2048, %ecx
	jne 2b

	movl %cr4, %eax
	orl $0x20, %eax                     /* PAE */
	movl %eax, %cr4
	movl $pvh_pml4, %eax
	movl %eax, %cr3
	movl $0xc0000080, %ecx              /* EFER */
	rdmsr
	orl $0x100, %eax                    /* LME */
	wrmsr
	movl %cr0, %eax
	orl $0x80000001, %eax               /* PG | PE */
	movl %eax, %cr0

	lgdt gdt64_ptr
	ljmp $0x08, $pvh_long_mode

	.code64
pvh_long_mode:
	movl $0x10, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	movl %eax, %fs
	movl %eax, %gs
	movl %esi, %edi                     /* info = hvm_start_info (zero-extended) */
	movl $BOOT_MODE_PVH, %esi
	jmp common64

	.section .text.start64, "ax"
	.code64
	.globl start64
start64:
	cli
	movq %rsi, %rdi                     /* info = boot_params */
	movl $BOOT_MODE_LINUX64, %esi
common64:
	movq $stack_top, %rsp
	xorl %ebp, %ebp
	call guest_main
3:	cli
	hlt
	jmp 3b

	.section .rodata
	.balign 8
gdt64:
	.quad 0
	.quad 0x00af9b000000ffff            /* 0x08: 64-bit code */
	.quad 0x00cf93000000ffff            /* 0x10: data */
gdt64_end:
gdt64_ptr:
	.word gdt64_end - gdt64 - 1
	.long gdt64

	.section .bss
	.balign 4096
pvh_pml4:	.skip 4096
pvh_pdpt:	.skip 4096
pvh_pd:		.skip 4 * 4096
	.balign 16
	.skip 4096
pvh_stack_top:
	.skip 65536
stack_top:
