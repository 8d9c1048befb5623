//! Guest physical memory: the address map, RAM allocation and the e820 view of it.
//!
//! ```text
//! 0x0000_0500  GDT                     0x0009_fc00  MP table (start of the EBDA)
//! 0x0000_0520  IDT (empty)             0x000a_0000..0x0010_0000  legacy hole (e820 reserved)
//! 0x0000_6000  PVH hvm_start_info      0x0010_0000  kernel (bzImage code32_start / ELF p_paddr)
//! 0x0000_7000  zero page (boot_params) ...          initrd at the top of low RAM
//! 0x0000_8ff0  boot stack top          0xc000_0000..0x1_0000_0000  MMIO hole (no RAM)
//! 0x0000_9000  PML4, PDPT, PDs         0xd000_0000  boot-timer page, virtio-mmio devices after
//! 0x0002_0000  kernel command line     0xfec0_0000  IOAPIC, 0xfee0_0000 LAPIC
//!                                      0x1_0000_0000  RAM above 3 GiB continues here
//! ```
//! The low addresses match what Firecracker and the Linux boot protocol expect, so a Linux
//! guest finds everything where it looks first.

use std::num::NonZeroUsize;

use vm_memory::bitmap::AtomicBitmap;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::GuestAddress;

use crate::error::{Error, Result};

/// Guest RAM as the VMM holds it. Each region may carry a bitmap of the pages the VMM itself
/// wrote through vm-memory's API (devices: disk reads, network and vsock receive, rng): KVM's
/// dirty log sees only what the vCPUs write, and a diff snapshot needs both. `None` (dirty
/// tracking off, the default) costs one branch per access.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<Option<AtomicBitmap>>;
pub type GuestRegionMmap = vm_memory::GuestRegionMmap<Option<AtomicBitmap>>;
/// The memory slice bitmaps and KVM's dirty log count in pages of this size.
pub const PAGE_SIZE: usize = 4096;

/// A bitmap for a region of `len` bytes when tracking, none otherwise.
pub fn region_bitmap(len: usize, track_dirty: bool) -> Option<AtomicBitmap> {
    let page = NonZeroUsize::new(PAGE_SIZE).expect("the page size is not zero");
    track_dirty.then(|| AtomicBitmap::new(len, page))
}

/// Anonymous guest memory with the given ranges (MAP_NORESERVE: untouched guest pages cost
/// the host nothing), with a dirty bitmap per region if `track_dirty`.
pub fn guest_memory(
    ranges: &[(GuestAddress, usize)],
    track_dirty: bool,
) -> std::result::Result<GuestMemoryMmap, String> {
    let mut regions = Vec::new();
    for &(addr, len) in ranges {
        let mapping = MmapRegionBuilder::new_with_bitmap(len, region_bitmap(len, track_dirty))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_NORESERVE)
            .build()
            .map_err(|e| e.to_string())?;
        regions.push(
            GuestRegionMmap::new(mapping, addr)
                .ok_or_else(|| format!("region at {:#x} overflows", addr.0))?,
        );
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| e.to_string())
}

pub const GDT_START: u64 = 0x500;
pub const IDT_START: u64 = 0x520;
pub const PVH_INFO_START: u64 = 0x6000;
/// The PVH memory map follows `hvm_start_info` in the same page.
pub const PVH_MEMMAP_START: u64 = 0x6040;
pub const ZERO_PAGE_START: u64 = 0x7000;
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
pub const CMDLINE_START: u64 = 0x20000;
/// Room reserved for the command line; the kernel's own limit (header `cmdline_size`) is
/// checked too.
pub const CMDLINE_MAX_SIZE: usize = 4096;
/// MP floating pointer + table live at the start of the EBDA, where Linux scans.
pub const MPTABLE_START: u64 = 0x9fc00;
/// End of conventional memory; 0xa0000..1 MiB is the legacy VGA/BIOS hole.
pub const EBDA_START: u64 = 0x9fc00;
pub const HIGH_MEMORY_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO hole: RAM stops here and continues at 4 GiB.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// First MMIO page: the boot-timer device.
pub const BOOT_TIMER_MMIO_START: u64 = 0xd000_0000;
/// virtio-mmio device `i` is at `VIRTIO_MMIO_START + i * VIRTIO_MMIO_SIZE`.
pub const VIRTIO_MMIO_START: u64 = 0xd000_1000;
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
pub const IOAPIC_START: u64 = 0xfec0_0000;
pub const LAPIC_START: u64 = 0xfee0_0000;
/// Smallest guest: room for the boot structures, a kernel and a stack.
pub const MIN_MEMORY_MIB: u64 = 16;

/// The guest RAM ranges for `size` bytes of memory: one range below the MMIO hole and, when
/// needed, the rest above 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, usize)> {
    if size <= MMIO_HOLE_START {
        vec![(GuestAddress(0), size as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_HOLE_START as usize),
            (
                GuestAddress(MMIO_HOLE_END),
                (size - MMIO_HOLE_START) as usize,
            ),
        ]
    }
}

/// Allocates guest RAM (see [`guest_memory`]).
pub fn create_guest_memory(size_mib: u64, track_dirty: bool) -> Result<GuestMemoryMmap> {
    let size = size_mib
        .checked_mul(1 << 20)
        .ok_or_else(|| Error::config("memory", "size overflows"))?;
    guest_memory(&ram_ranges(size), track_dirty)
        .map_err(|e| Error::GuestMemory(format!("mmap {size_mib} MiB: {e}")))
}

/// One e820 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// The e820 map the guest sees: conventional memory below the EBDA, the legacy hole as
/// reserved, RAM from 1 MiB, and RAM above 4 GiB if the guest is that large.
pub fn e820_map(size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: EBDA_START,
            size: HIGH_MEMORY_START - EBDA_START,
            kind: E820_RESERVED,
        },
    ];
    let low_end = size.min(MMIO_HOLE_START);
    map.push(E820Entry {
        addr: HIGH_MEMORY_START,
        size: low_end - HIGH_MEMORY_START,
        kind: E820_RAM,
    });
    if size > MMIO_HOLE_START {
        map.push(E820Entry {
            addr: MMIO_HOLE_END,
            size: size - MMIO_HOLE_START,
            kind: E820_RAM,
        });
    }
    map
}

/// End (exclusive) of the RAM below the MMIO hole: the ceiling for the initrd.
pub fn low_ram_end(size: u64) -> u64 {
    size.min(MMIO_HOLE_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_has_one_range_and_no_high_e820() {
        let size = 128 << 20;
        assert_eq!(ram_ranges(size), vec![(GuestAddress(0), size as usize)]);
        let map = e820_map(size);
        assert_eq!(map.len(), 3);
        let ram: u64 = map
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        assert_eq!(ram, size - (HIGH_MEMORY_START - EBDA_START));
    }

    #[test]
    fn large_guest_skips_the_mmio_hole() {
        let size = 4u64 << 30;
        let r = ram_ranges(size);
        assert_eq!(r[1].0, GuestAddress(MMIO_HOLE_END));
        assert_eq!(r[0].1 as u64 + r[1].1 as u64, size);
        let map = e820_map(size);
        assert_eq!(map.last().unwrap().addr, MMIO_HOLE_END);
        assert!(map
            .iter()
            .all(|e| e.addr + e.size <= MMIO_HOLE_START || e.addr >= MMIO_HOLE_END));
    }
}
