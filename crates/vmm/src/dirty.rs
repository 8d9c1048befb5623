//! Dirty page tracking for diff snapshots: which guest pages changed since the last snapshot.
//!
//! Two writers change guest memory and each has its own record:
//! - the vCPUs: KVM's dirty log (memory slots registered with KVM_MEM_LOG_DIRTY_PAGES; read
//!   and cleared with KVM_GET_DIRTY_LOG);
//! - the VMM's devices (disk reads, network and vsock receive, rng, used rings): the bitmap
//!   each guest memory region carries (vm-memory's `AtomicBitmap`, marked by every write
//!   through its `Bytes`/`VolatileSlice` API, which is the only way the devices write guest
//!   memory).
//!
//! A page either one missed would be stale in a restored guest, so a diff takes the union.
//! Both records exist only for a VM started with tracking on: one that never takes diff
//! snapshots pays nothing.

use kvm_ioctls::VmFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::memory::GuestMemoryMmap;

/// One bitmap per memory region (= KVM slot, in order): bit `i % 64` of word `i / 64` is the
/// region's page `i`.
pub type DirtyPages = Vec<Vec<u64>>;

/// Reads and clears both records: the pages written since the previous call (or since the
/// memory slots were registered).
pub fn take(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<DirtyPages, String> {
    let mut all = Vec::with_capacity(mem.num_regions());
    for (slot, region) in mem.iter().enumerate() {
        let mut bits = vm
            .get_dirty_log(slot as u32, region.len() as usize)
            .map_err(|e| format!("KVM_GET_DIRTY_LOG (slot {slot}): {e}"))?;
        // The inherent `MmapRegion::bitmap` (the whole bitmap), not the trait's slice.
        let mapping: &vm_memory::MmapRegion<_> = region;
        let Some(devices) = mapping.bitmap() else {
            return Err("guest memory has no dirty bitmap (tracking is off)".into());
        };
        for (w, d) in bits.iter_mut().zip(devices.get_and_reset()) {
            *w |= d;
        }
        all.push(bits);
    }
    Ok(all)
}

/// Puts pages back into the devices' bitmaps (a diff that could not be written: the next one
/// must still hold them).
pub fn give_back(mem: &GuestMemoryMmap, pages: &DirtyPages) {
    for (region, bits) in mem.iter().zip(pages) {
        let mapping: &vm_memory::MmapRegion<_> = region;
        if let Some(b) = mapping.bitmap() {
            for (i, w) in bits.iter().enumerate() {
                for bit in 0..64 {
                    if w >> bit & 1 == 1 {
                        b.set_bit(i * 64 + bit);
                    }
                }
            }
        }
    }
}

/// The number of pages set.
pub fn count(pages: &DirtyPages) -> u64 {
    pages
        .iter()
        .flatten()
        .map(|w| u64::from(w.count_ones()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::PAGE_SIZE;
    use vm_memory::{Bytes, GuestAddress};

    /// Every way a device writes guest memory marks the page in the region's bitmap: this
    /// is what a diff snapshot relies on for the pages no vCPU wrote.
    #[test]
    fn device_writes_mark_the_bitmap() {
        let mem = crate::memory::create_guest_memory(16, true).unwrap();
        let dirty = |mem: &GuestMemoryMmap| -> Vec<usize> {
            let r = mem.iter().next().unwrap();
            let mapping: &vm_memory::MmapRegion<_> = r;
            let b = mapping.bitmap().as_ref().unwrap();
            (0..r.len() as usize / PAGE_SIZE)
                .filter(|p| b.is_bit_set(*p))
                .collect()
        };
        assert!(dirty(&mem).is_empty());
        // rng, used rings, vsock/net receive: write_slice / write_obj.
        mem.write_slice(b"rng", GuestAddress(3 * 4096 + 10))
            .unwrap();
        mem.write_obj(7u16, GuestAddress(5 * 4096)).unwrap();
        // virtio-blk reads: the disk's bytes land through read_exact_volatile_from, here
        // straddling a page boundary.
        let mut disk: &[u8] = &[0xab; 600];
        mem.read_exact_volatile_from(GuestAddress(9 * 4096 - 100), &mut disk, 600)
            .unwrap();
        // virtio-queue's atomic stores (used index).
        mem.store(
            1u16,
            GuestAddress(12 * 4096),
            std::sync::atomic::Ordering::Release,
        )
        .unwrap();
        assert_eq!(dirty(&mem), vec![3, 5, 8, 9, 12]);
        // Reading marks nothing.
        let mut buf = [0u8; 8];
        mem.read_slice(&mut buf, GuestAddress(20 * 4096)).unwrap();
        assert_eq!(dirty(&mem), vec![3, 5, 8, 9, 12]);
    }

    #[test]
    fn untracked_memory_has_no_bitmap() {
        let mem = crate::memory::create_guest_memory(16, false).unwrap();
        let r = mem.iter().next().unwrap();
        let mapping: &vm_memory::MmapRegion<_> = r;
        assert!(mapping.bitmap().is_none());
    }

    #[test]
    fn given_back_pages_are_taken_again() {
        let mem = crate::memory::create_guest_memory(16, true).unwrap();
        let mut pages: DirtyPages = vec![vec![0; 64]];
        pages[0][1] = 0b101;
        give_back(&mem, &pages);
        let r = mem.iter().next().unwrap();
        let mapping: &vm_memory::MmapRegion<_> = r;
        let b = mapping.bitmap().as_ref().unwrap();
        assert_eq!(b.get_and_reset()[1], 0b101);
        assert_eq!(count(&pages), 2);
    }
}
