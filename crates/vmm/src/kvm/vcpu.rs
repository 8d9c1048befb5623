//! A vCPU: its boot state (CPUID, MSRs, LAPIC LINT pins, FPU, registers for the entry mode)
//! and the thread that runs it, dispatching port I/O and MMIO exits to the device buses.
//!
//! Every exit reason is handled: I/O goes to the buses (unclaimed reads return all ones, as a
//! floating ISA bus does), guest-initiated ends (i8042 reset, triple fault, system event,
//! halt) end the VM with status 0, failures (entry failure, internal/emulation error,
//! unexpected exception) end it with an error naming the exit and the registers, and anything
//! else is logged once per kind and the vCPU continues. A pause (`pause::Gate`) parks the
//! thread after an EINTR from KVM_RUN. An emulation failure on an instruction `emulation`
//! knows how to complete (software-emulating KVM hosts) continues.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, CpuId, Msrs};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use crate::boot::gdt::{segment_from_entry, CODE_INDEX, DATA_INDEX, TSS_INDEX};
use crate::boot::loader::EntryMode;
use crate::devices::Bus;
use crate::error::{Error, Result};
use crate::kvm::emulation::{self, Fallbacks};
use crate::kvm::pause::Gate;
use crate::logger::{ms, since_process_start};
use crate::memory::{BOOT_STACK_POINTER, GDT_START, IDT_START, PVH_INFO_START, ZERO_PAGE_START};
use crate::shutdown::{ShutdownReason, ShutdownSignal};

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_NE: u64 = 1 << 5;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_IA32_MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRs enabled with write-back as the default memory type, as firmware would leave them:
/// with MTRRs disabled the architectural default type is uncached, which a KVM that honours
/// guest MTRRs would apply to all of guest RAM.
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MTRR_ENABLE: u64 = 1 << 11;
const MTRR_MEM_TYPE_WB: u64 = 0x6;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// What the boot vCPU starts with.
#[derive(Clone, Copy, Debug)]
pub struct BootEntry {
    pub entry: u64,
    pub mode: EntryMode,
    pub cr3: u64,
    /// The boot GDT as written at [`GDT_START`].
    pub gdt: [u64; 5],
}

/// What every vCPU thread of a VM shares: the buses its exits reach, how the VM ends, the
/// pause gate and the emulation fallbacks' counters.
#[derive(Clone)]
pub struct VcpuShared {
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub shutdown: Arc<ShutdownSignal>,
    pub stop: Arc<AtomicBool>,
    pub gate: Arc<Gate>,
    pub fallbacks: Arc<Fallbacks>,
}

pub struct Vcpu {
    pub id: u8,
    fd: VcpuFd,
    shared: VcpuShared,
}

impl Vcpu {
    pub fn new(vm: &VmFd, id: u8, shared: VcpuShared) -> Result<Self> {
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(Error::kvm("KVM_CREATE_VCPU"))?;
        Ok(Vcpu { id, fd, shared })
    }

    /// The KVM vCPU, for restoring a snapshot's state before it first runs.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// Sets CPUID, MSRs, FPU and LAPIC for every vCPU, and registers for the boot vCPU.
    /// Application processors stay in KVM's wait-for-SIPI state until the guest starts them.
    pub fn configure(&self, cpuid: &CpuId, boot: Option<&BootEntry>) -> Result<()> {
        self.fd
            .set_cpuid2(cpuid)
            .map_err(Error::kvm("KVM_SET_CPUID2"))?;
        self.setup_msrs()?;
        let fpu = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        self.fd.set_fpu(&fpu).map_err(Error::kvm("KVM_SET_FPU"))?;
        self.setup_lint()?;
        if let Some(b) = boot {
            self.setup_boot_registers(b)?;
        }
        Ok(())
    }

    fn setup_msrs(&self) -> Result<()> {
        let entry = |index, data| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        };
        let entries = [
            entry(MSR_IA32_SYSENTER_CS, 0),
            entry(MSR_IA32_SYSENTER_ESP, 0),
            entry(MSR_IA32_SYSENTER_EIP, 0),
            entry(MSR_STAR, 0),
            entry(MSR_CSTAR, 0),
            entry(MSR_KERNEL_GS_BASE, 0),
            entry(MSR_SYSCALL_MASK, 0),
            entry(MSR_LSTAR, 0),
            entry(MSR_IA32_TSC, 0),
            entry(MSR_IA32_MISC_ENABLE, MSR_IA32_MISC_ENABLE_FAST_STRING),
            entry(MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_MEM_TYPE_WB),
        ];
        let msrs =
            Msrs::from_entries(&entries).map_err(|e| Error::Boot(format!("MSR list: {e:?}")))?;
        let set = self
            .fd
            .set_msrs(&msrs)
            .map_err(Error::kvm("KVM_SET_MSRS"))?;
        if set != entries.len() {
            return Err(Error::Boot(format!(
                "KVM_SET_MSRS set {set} of {} MSRs (MSR {:#x} refused)",
                entries.len(),
                entries[set].index
            )));
        }
        Ok(())
    }

    /// LINT0 receives the legacy PIC's interrupts (ExtINT), LINT1 the NMI, as a BIOS would
    /// leave them and as the MP table says.
    fn setup_lint(&self) -> Result<()> {
        let mut lapic = self.fd.get_lapic().map_err(Error::kvm("KVM_GET_LAPIC"))?;
        for (reg, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
            let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[reg + i] as u8);
            let val = u32::from_le_bytes(bytes);
            let val = (val & !0x700) | (mode << 8);
            for (i, b) in val.to_le_bytes().iter().enumerate() {
                lapic.regs[reg + i] = *b as _;
            }
        }
        self.fd
            .set_lapic(&lapic)
            .map_err(Error::kvm("KVM_SET_LAPIC"))
    }

    fn setup_boot_registers(&self, b: &BootEntry) -> Result<()> {
        let mut sregs = self.fd.get_sregs().map_err(Error::kvm("KVM_GET_SREGS"))?;
        let code = segment_from_entry(b.gdt[CODE_INDEX as usize], CODE_INDEX);
        let data = segment_from_entry(b.gdt[DATA_INDEX as usize], DATA_INDEX);
        let tss = segment_from_entry(b.gdt[TSS_INDEX as usize], TSS_INDEX);
        sregs.gdt.base = GDT_START;
        sregs.gdt.limit = (std::mem::size_of_val(&b.gdt) - 1) as u16;
        sregs.idt.base = IDT_START;
        sregs.idt.limit = 7;
        sregs.cs = code;
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.tr = tss;
        let mut regs = kvm_regs {
            rflags: 0x2, // bit 1 is reserved and always set
            rip: b.entry,
            ..Default::default()
        };
        match b.mode {
            EntryMode::Linux64 => {
                // Caches on (CD/NW clear), protected mode with paging, long mode active.
                sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_NE | X86_CR0_PG;
                sregs.cr3 = b.cr3;
                sregs.cr4 = X86_CR4_PAE;
                sregs.efer = EFER_LME | EFER_LMA;
                regs.rsp = BOOT_STACK_POINTER;
                regs.rbp = BOOT_STACK_POINTER;
                regs.rsi = ZERO_PAGE_START;
            }
            EntryMode::Pvh => {
                // PVH: 32-bit protected mode, paging off, ebx = hvm_start_info.
                sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
                sregs.cr4 = 0;
                sregs.efer = 0;
                regs.rbx = PVH_INFO_START;
            }
        }
        self.fd
            .set_sregs(&sregs)
            .map_err(Error::kvm("KVM_SET_SREGS"))?;
        self.fd.set_regs(&regs).map_err(Error::kvm("KVM_SET_REGS"))
    }

    /// The register dump an error message carries.
    fn registers(&self) -> String {
        let regs = match self.fd.get_regs() {
            Ok(r) => format!(
                "rip={:#x} rsp={:#x} rflags={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} \
                 rsi={:#x} rdi={:#x} rbp={:#x}",
                r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp
            ),
            Err(e) => format!("(KVM_GET_REGS failed: {e})"),
        };
        let sregs = match self.fd.get_sregs() {
            Ok(s) => format!(
                "cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} cs={:#x} cs.l={}",
                s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.cs.selector, s.cs.l
            ),
            Err(e) => format!("(KVM_GET_SREGS failed: {e})"),
        };
        format!("registers: {regs} {sregs}")
    }

    fn fail(&self, reason: String) {
        let registers = self.registers();
        self.shared.shutdown.signal(Err(Error::VcpuExit {
            vcpu: u64::from(self.id),
            reason,
            registers,
        }));
    }

    /// The vCPU thread's body: runs until the guest ends the VM, an error occurs, or the VMM
    /// asks it to stop (stop flag + a kick signal that interrupts KVM_RUN).
    pub fn run(mut self) {
        let mut reported: HashSet<String> = HashSet::new();
        let mut first = true;
        while !self.shared.stop.load(Ordering::Acquire) {
            if first {
                first = false;
                tracing::debug!(
                    "vcpu{}: first KVM_RUN at {} after VMM process start",
                    self.id,
                    ms(since_process_start())
                );
            }
            // A requested pause: this KVM_RUN only completes the last exit and returns EINTR.
            if self.shared.gate.pause_requested() {
                self.fd.set_kvm_immediate_exit(1);
            }
            let exit = self.fd.run();
            self.shared.gate.exited(self.id);
            match exit {
                Ok(VcpuExit::IoIn(port, data)) => {
                    if !self.shared.pio.read(u64::from(port), data) {
                        data.fill(0xff);
                        tracing::trace!("vcpu{}: read from unclaimed port {port:#x}", self.id);
                    }
                }
                Ok(VcpuExit::IoOut(port, data)) => {
                    if !self.shared.pio.write(u64::from(port), data) {
                        tracing::trace!("vcpu{}: write to unclaimed port {port:#x}", self.id);
                    }
                }
                Ok(VcpuExit::MmioRead(addr, data)) => {
                    if !self.shared.mmio.read(addr, data) {
                        data.fill(0xff);
                        tracing::debug!("vcpu{}: read from unclaimed MMIO {addr:#x}", self.id);
                    }
                }
                Ok(VcpuExit::MmioWrite(addr, data)) => {
                    if !self.shared.mmio.write(addr, data) {
                        tracing::debug!("vcpu{}: write to unclaimed MMIO {addr:#x}", self.id);
                    }
                }
                Ok(VcpuExit::Hlt) => {
                    self.shared.shutdown.signal(Ok(ShutdownReason::Halt));
                    break;
                }
                Ok(VcpuExit::Shutdown) => {
                    tracing::info!("vcpu{}: guest triple fault / shutdown", self.id);
                    self.shared.shutdown.signal(Ok(ShutdownReason::TripleFault));
                    break;
                }
                Ok(VcpuExit::SystemEvent(kind, _)) => {
                    self.shared
                        .shutdown
                        .signal(Ok(ShutdownReason::SystemEvent(kind)));
                    break;
                }
                Ok(VcpuExit::FailEntry(reason, cpu)) => {
                    self.fail(format!(
                        "KVM_EXIT_FAIL_ENTRY (hardware entry failure reason {reason:#x} on host \
                         cpu {cpu})"
                    ));
                    break;
                }
                Ok(VcpuExit::InternalError) => {
                    // Instructions a software-emulating KVM rejects are completed here where
                    // the CPU's behaviour is known; anything else ends the VM.
                    if let Err(reason) = emulation::recover(&mut self.fd, &self.shared.fallbacks) {
                        self.fail(reason);
                        break;
                    }
                }
                Ok(VcpuExit::Exception) => {
                    self.fail("KVM_EXIT_EXCEPTION".into());
                    break;
                }
                Ok(VcpuExit::Unknown) => {
                    self.fail("KVM_EXIT_UNKNOWN".into());
                    break;
                }
                Ok(VcpuExit::Intr) => {}
                Ok(other) => {
                    let name = format!("{other:?}");
                    let kind = name.split(['(', ' ', '{']).next().unwrap_or("").to_string();
                    if reported.insert(kind) {
                        tracing::warn!("vcpu{}: unhandled exit {name}, continuing", self.id);
                    }
                }
                Err(e) => match e.errno() {
                    // Interrupted by the kick signal, or asked to retry: re-check the flag.
                    libc::EINTR | libc::EAGAIN => {
                        self.fd.set_kvm_immediate_exit(0);
                        self.shared.gate.park_if_requested(self.id, &self.fd);
                    }
                    _ => {
                        self.fail(format!("KVM_RUN failed: {e}"));
                        break;
                    }
                },
            }
        }
    }
}
