//! Opening /dev/kvm and creating the VM: memory slots, the in-kernel irqchip (PIC + IOAPIC +
//! LAPICs), the PIT if asked for, irqfds for device interrupts and ioeventfds for queue
//! notifications.

use std::path::Path;

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, Kvm, VmFd};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryRegion};

use crate::memory::GuestMemoryMmap;

use crate::error::{Error, Result};

/// KVM on Intel needs three pages for the real-mode TSS somewhere the guest never uses; the
/// top of the 32-bit space below the BIOS area is the customary place.
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;
/// Oldest API KVM has had since 2.6.22; anything else is not a KVM we know.
const KVM_API_VERSION: i32 = 12;

pub const KVM_PATH: &str = "/dev/kvm";

/// Opens /dev/kvm with an error that says what is missing.
pub fn open_kvm() -> Result<Kvm> {
    if !Path::new(KVM_PATH).exists() {
        return Err(Error::KvmUnavailable(
            "does not exist (no KVM on this host, or the kvm module is not loaded)".into(),
        ));
    }
    let kvm = Kvm::new().map_err(|e| Error::KvmUnavailable(format!("cannot open: {e}")))?;
    if kvm.get_api_version() != KVM_API_VERSION {
        return Err(Error::KvmUnavailable(format!(
            "unexpected KVM API version {}",
            kvm.get_api_version()
        )));
    }
    for (cap, name) in [
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::Irqfd, "KVM_CAP_IRQFD"),
        (Cap::Ioeventfd, "KVM_CAP_IOEVENTFD"),
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(Error::KvmUnavailable(format!("{name} is not supported")));
        }
    }
    Ok(kvm)
}

/// Creates the VM (and the real-mode TSS KVM on Intel needs).
pub fn create_vm(kvm: &Kvm) -> Result<VmFd> {
    let vm = kvm.create_vm().map_err(Error::kvm("KVM_CREATE_VM"))?;
    vm.set_tss_address(KVM_TSS_ADDRESS)
        .map_err(Error::kvm("KVM_SET_TSS_ADDR"))?;
    Ok(vm)
}

/// Creates the VM's in-kernel irqchip, and KVM's i8254 PIT if `pit`.
///
/// Call it after [`register_memory`], as Firecracker orders them too: a memory slot
/// registered after KVM_CREATE_IRQCHIP took 6-12 ms on this host (the memslot swap waits for
/// an SRCU grace period), registered before it 0.1-0.2 ms. The grace period then runs out in
/// the background; only a VM closed within ~15 ms of its creation waits for the rest of it.
///
/// The PIT is off unless asked for. A guest with kvmclock (any Linux built with
/// CONFIG_KVM_GUEST) takes its TSC and delay-loop calibration from it and its timer from the
/// LAPIC (TSC deadline), and skips the IO-APIC timer check: it never uses the PIT. Having one
/// costs every VM about 15 ms when it ends (closing the VM fd waits out SRCU grace periods as
/// the PIT's I/O ports are unregistered, and flushes its worker thread), and it is one more
/// device model in the host kernel for the guest to reach. Guests without kvmclock
/// calibrate against it and need it.
pub fn create_irqchip(kvm: &Kvm, vm: &VmFd, pit: bool) -> Result<()> {
    vm.create_irq_chip()
        .map_err(Error::kvm("KVM_CREATE_IRQCHIP"))?;
    if pit {
        if !kvm.check_extension(Cap::Pit2) {
            return Err(Error::KvmUnavailable(
                "KVM_CAP_PIT2 is not supported (needed by --pit)".into(),
            ));
        }
        // A dummy speaker port keeps guests that beep from exiting to us for port 0x61.
        let config = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(config)
            .map_err(Error::kvm("KVM_CREATE_PIT2"))?;
    }
    Ok(())
}

/// Gives KVM one memory slot per guest RAM region, logging the pages vCPUs write if
/// `track_dirty` (for diff snapshots: `crate::dirty`).
pub fn register_memory(
    kvm: &Kvm,
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    track_dirty: bool,
) -> Result<()> {
    let max_slots = kvm.get_nr_memslots();
    if mem.num_regions() > max_slots {
        return Err(Error::GuestMemory(format!(
            "{} regions but KVM has only {max_slots} memory slots",
            mem.num_regions()
        )));
    }
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|e| Error::GuestMemory(format!("host address of a region: {e}")))?;
        let region_desc = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host as u64,
            flags: if track_dirty {
                KVM_MEM_LOG_DIRTY_PAGES
            } else {
                0
            },
        };
        // SAFETY: the host range is a live mapping owned by `mem`, which the caller keeps
        // alive for as long as the VM exists (the VM struct holds both); KVM only accesses it
        // while vCPUs run, and the slots do not overlap because the regions do not.
        unsafe { vm.set_user_memory_region(region_desc) }
            .map_err(Error::kvm("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(())
}
