//! The KVM state of a VM and of each vCPU, read for a snapshot and written back on restore.
//!
//! Ordering rules (from the KVM API documentation and what Firecracker learned):
//! - save: KVM_GET_MP_STATE first (it may make the LAPIC accept pending INIT/SIPI, changing
//!   state read afterwards), KVM_GET_VCPU_EVENTS last (pending exceptions and NMIs as of the
//!   end); the vCPU must be out of KVM_RUN with any port/MMIO exit completed (the pause gate
//!   re-enters KVM_RUN once with `immediate_exit` before parking, see `pause`).
//! - restore: CPUID before anything that depends on it (MSRs, XSAVE features), special
//!   registers before the LAPIC (its base MSR and mode), MSRs after the LAPIC (the TSC deadline
//!   timer needs it), events last; the VM's irqchip, PIT (if it has one) and clock before any
//!   vCPU runs.
//!
//! Every structure is KVM's own (kvm-bindings with its `serde` feature), so the file holds
//! exactly what the kernel returned: nothing is interpreted, nothing is lost.

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid_entry2, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
    kvm_msr_entry, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
    CpuId, Msrs, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// MSRs saved besides KVM's index list (KVM_GET_MSR_INDEX_LIST): the MTRRs the boot code
/// enables (default type, fixed and variable ranges), which KVM does not list but keeps.
const EXTRA_MSRS: &[u32] = &[
    0x2ff, // MTRRdefType
    0x250, 0x258, 0x259, // fixed-range MTRRs
    0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f, 0x200, 0x201, 0x202, 0x203, 0x204,
    0x205, 0x206, 0x207, // variable ranges 0-3
    0x208, 0x209, 0x20a, 0x20b, 0x20c, 0x20d, 0x20e, 0x20f, // variable ranges 4-7
];

/// Capabilities a snapshot or a restore needs beyond what booting needs.
const NEEDED: &[(Cap, &str)] = &[
    (Cap::Xsave, "KVM_CAP_XSAVE"),
    (Cap::Xcrs, "KVM_CAP_XCRS"),
    (Cap::Debugregs, "KVM_CAP_DEBUGREGS"),
    (Cap::VcpuEvents, "KVM_CAP_VCPU_EVENTS"),
    (Cap::AdjustClock, "KVM_CAP_ADJUST_CLOCK"),
    (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
];

/// Checks that this KVM can save and restore every piece of state; the error names the first
/// missing capability (KVM_CAP_PIT_STATE2 only for a VM with a PIT). XSAVE areas larger than
/// the 4 KiB `kvm_xsave` (AMX) are refused too: their dynamic state needs KVM_GET_XSAVE2, which
/// this VMM does not use.
pub fn check_support(kvm: &Kvm, pit: bool) -> std::result::Result<(), String> {
    let pit_cap = pit.then_some((Cap::PitState2, "KVM_CAP_PIT_STATE2"));
    for (cap, name) in NEEDED.iter().copied().chain(pit_cap) {
        if !kvm.check_extension(cap) {
            return Err(format!("this KVM lacks {name}"));
        }
    }
    let xsave2 = kvm.check_extension_int(Cap::Xsave2);
    if xsave2 > std::mem::size_of::<kvm_xsave>() as i32 {
        return Err(format!(
            "this KVM's XSAVE area is {xsave2} bytes (AMX); only the 4 KiB layout is saved"
        ));
    }
    Ok(())
}

/// The MSRs to save on this host: KVM's list plus the MTRRs it does not list.
pub fn msrs_to_save(kvm: &Kvm) -> Result<Vec<u32>> {
    let list = kvm
        .get_msr_index_list()
        .map_err(Error::kvm("KVM_GET_MSR_INDEX_LIST"))?;
    let mut all: Vec<u32> = list.as_slice().to_vec();
    for m in EXTRA_MSRS {
        if !all.contains(m) {
            all.push(*m);
        }
    }
    Ok(all)
}

/// One vCPU.
#[derive(Debug, Serialize, Deserialize)]
pub struct VcpuState {
    pub cpuid: Vec<kvm_cpuid_entry2>,
    pub mp_state: kvm_mp_state,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub xsave: kvm_xsave,
    pub xcrs: kvm_xcrs,
    pub debugregs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    /// Every MSR of the list this KVM could read (those it refuses are left out).
    pub msrs: Vec<kvm_msr_entry>,
    pub events: kvm_vcpu_events,
}

/// The VM-wide in-kernel devices and clock.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VmKvmState {
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
    /// Absent when the VM has no PIT.
    #[serde(default)]
    pub pit: Option<kvm_pit_state2>,
    pub clock: kvm_clock_data,
}

/// Reads the MSRs in `list`: KVM_GET_MSRS stops at the first MSR it cannot read, so the read
/// resumes after it.
fn get_msrs(fd: &VcpuFd, list: &[u32]) -> Result<Vec<kvm_msr_entry>> {
    let mut out = Vec::with_capacity(list.len());
    let mut rest = list;
    while !rest.is_empty() {
        let entries: Vec<kvm_msr_entry> = rest
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries)
            .map_err(|e| Error::Snapshot(format!("MSR list: {e:?}")))?;
        let n = fd.get_msrs(&mut msrs).map_err(Error::kvm("KVM_GET_MSRS"))?;
        out.extend_from_slice(&msrs.as_slice()[..n]);
        rest = &rest[(n + 1).min(rest.len())..];
    }
    Ok(out)
}

impl VcpuState {
    /// Saves a vCPU that is out of KVM_RUN. `cpuid` is the table the VMM gave it.
    pub fn save(fd: &VcpuFd, cpuid: &CpuId, msr_list: &[u32]) -> Result<VcpuState> {
        let mp_state = fd.get_mp_state().map_err(Error::kvm("KVM_GET_MP_STATE"))?;
        let regs = fd.get_regs().map_err(Error::kvm("KVM_GET_REGS"))?;
        let sregs = fd.get_sregs().map_err(Error::kvm("KVM_GET_SREGS"))?;
        let xsave = fd.get_xsave().map_err(Error::kvm("KVM_GET_XSAVE"))?;
        let xcrs = fd.get_xcrs().map_err(Error::kvm("KVM_GET_XCRS"))?;
        let debugregs = fd
            .get_debug_regs()
            .map_err(Error::kvm("KVM_GET_DEBUGREGS"))?;
        let lapic = fd.get_lapic().map_err(Error::kvm("KVM_GET_LAPIC"))?;
        let msrs = get_msrs(fd, msr_list)?;
        let events = fd
            .get_vcpu_events()
            .map_err(Error::kvm("KVM_GET_VCPU_EVENTS"))?;
        Ok(VcpuState {
            cpuid: cpuid.as_slice().to_vec(),
            mp_state,
            regs,
            sregs,
            xsave,
            xcrs,
            debugregs,
            lapic,
            msrs,
            events,
        })
    }

    /// Writes the state into a fresh vCPU (before its first KVM_RUN).
    pub fn restore(&self, fd: &VcpuFd) -> Result<()> {
        let cpuid = CpuId::from_entries(&self.cpuid)
            .map_err(|e| Error::Snapshot(format!("CPUID table: {e:?}")))?;
        fd.set_cpuid2(&cpuid)
            .map_err(Error::kvm("KVM_SET_CPUID2"))?;
        fd.set_mp_state(self.mp_state)
            .map_err(Error::kvm("KVM_SET_MP_STATE"))?;
        fd.set_sregs(&self.sregs)
            .map_err(Error::kvm("KVM_SET_SREGS"))?;
        fd.set_regs(&self.regs)
            .map_err(Error::kvm("KVM_SET_REGS"))?;
        // SAFETY: `check_support` refused KVMs whose XSAVE area is larger than kvm_xsave, so
        // KVM reads no more than the structure holds.
        unsafe { fd.set_xsave(&self.xsave) }.map_err(Error::kvm("KVM_SET_XSAVE"))?;
        fd.set_xcrs(&self.xcrs)
            .map_err(Error::kvm("KVM_SET_XCRS"))?;
        fd.set_debug_regs(&self.debugregs)
            .map_err(Error::kvm("KVM_SET_DEBUGREGS"))?;
        fd.set_lapic(&self.lapic)
            .map_err(Error::kvm("KVM_SET_LAPIC"))?;
        let msrs = Msrs::from_entries(&self.msrs)
            .map_err(|e| Error::Snapshot(format!("MSR list: {e:?}")))?;
        let set = fd.set_msrs(&msrs).map_err(Error::kvm("KVM_SET_MSRS"))?;
        if set != self.msrs.len() {
            return Err(Error::Snapshot(format!(
                "KVM_SET_MSRS refused MSR {:#x} ({set} of {} set)",
                self.msrs[set].index,
                self.msrs.len()
            )));
        }
        fd.set_vcpu_events(&self.events)
            .map_err(Error::kvm("KVM_SET_VCPU_EVENTS"))
    }
}

fn irqchip(vm: &VmFd, chip_id: u32) -> Result<kvm_irqchip> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip)
        .map_err(Error::kvm("KVM_GET_IRQCHIP"))?;
    Ok(chip)
}

impl VmKvmState {
    /// Saves the PICs, IOAPIC, PIT (if `pit`: the VM has one) and KVM clock (the vCPUs must
    /// be paused).
    pub fn save(vm: &VmFd, pit: bool) -> Result<VmKvmState> {
        Ok(VmKvmState {
            pic_master: irqchip(vm, KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: irqchip(vm, KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: irqchip(vm, KVM_IRQCHIP_IOAPIC)?,
            pit: if pit {
                Some(vm.get_pit2().map_err(Error::kvm("KVM_GET_PIT2"))?)
            } else {
                None
            },
            clock: vm.get_clock().map_err(Error::kvm("KVM_GET_CLOCK"))?,
        })
    }

    /// Writes them into a fresh VM (irqchip created, and the PIT if the state holds one).
    pub fn restore(&self, vm: &VmFd) -> Result<()> {
        for chip in [&self.pic_master, &self.pic_slave, &self.ioapic] {
            vm.set_irqchip(chip)
                .map_err(Error::kvm("KVM_SET_IRQCHIP"))?;
        }
        if let Some(pit) = &self.pit {
            vm.set_pit2(pit).map_err(Error::kvm("KVM_SET_PIT2"))?;
        }
        // KVM_SET_CLOCK takes only KVM_CLOCK_REALTIME among the flags GET returns; without it
        // the guest's clock resumes at the saved value (no jump over the time it was saved).
        let clock = kvm_clock_data {
            clock: self.clock.clock,
            ..Default::default()
        };
        vm.set_clock(&clock).map_err(Error::kvm("KVM_SET_CLOCK"))
    }
}
